//! A user-space TCP/IP stack per virtual network, on smoltcp, fed with Ethernet frames.
//!
//! It knows nothing of seccomp, processes, file descriptors or the overlay: frames come in
//! and go out through queues, and the caller joins those queues to a network.
#![forbid(unsafe_code)]
