//! Registering a UDP socket with the tokio reactor for chosen readiness only (the one
//! unsafe call of this crate: tokio's safe constructors are deprecated as unsound for
//! types that may not own their descriptor).
#![allow(unsafe_code)]

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// `sock`, owned by the returned `AsyncFd`, registered for `interest`.
pub(crate) fn register(
    sock: std::net::UdpSocket,
    interest: Interest,
) -> std::io::Result<AsyncFd<std::net::UdpSocket>> {
    // SAFETY: the AsyncFd owns the socket, so its descriptor stays open and keeps its
    // number for as long as the registration exists, which is what tokio requires.
    unsafe { AsyncFd::register_with_interest(sock, interest) }.map_err(Into::into)
}
