//! The supervisor: receives seccomp user notifications for the socket system calls of a
//! wrapped program, emulates each call against the user-space stack, and injects file
//! descriptors into the program with `SECCOMP_IOCTL_NOTIF_ADDFD`.
#![deny(unsafe_code)]
