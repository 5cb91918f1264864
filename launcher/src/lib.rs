//! Shared code of the `ztrun` and `zt` commands: configuration, identity files, and the
//! fork/filter/exec sequence that hands a program to the supervisor.
#![deny(unsafe_code)]
