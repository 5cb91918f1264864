//! Socket errors, each mapping onto exactly one errno value.

use std::net::{IpAddr, SocketAddr};

/// An error from a netstack socket operation.
///
/// Every variant maps onto one errno value ([`Error::errno`]) so the supervisor can hand it
/// to the wrapped program unchanged; two variants never share an errno.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The peer answered our SYN with RST (`ECONNREFUSED`).
    #[error("connection to {remote} refused")]
    ConnectionRefused {
        /// The address we tried to reach.
        remote: SocketAddr,
    },
    /// No answer in time: a connect that got no SYN-ACK, or an established connection whose
    /// data or keepalives went unacknowledged (`ETIMEDOUT`).
    #[error("connection timed out")]
    TimedOut,
    /// The peer reset an established connection (`ECONNRESET`).
    #[error("connection reset by peer")]
    ConnectionReset,
    /// The connection was aborted locally with [`crate::TcpStream::abort`], or a pending
    /// connection was dropped before it was accepted (`ECONNABORTED`).
    #[error("connection aborted")]
    ConnectionAborted,
    /// The local address and port are already taken (`EADDRINUSE`).
    #[error("address {addr} already in use")]
    AddrInUse {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The local address is not one of this network's addresses, or no ephemeral port is
    /// free (`EADDRNOTAVAIL`).
    #[error("address {addr} not available on this network")]
    AddrNotAvailable {
        /// The address asked for.
        addr: IpAddr,
    },
    /// The destination is outside every subnet and route of this network (`ENETUNREACH`).
    #[error("network unreachable for {addr}")]
    NetworkUnreachable {
        /// The destination asked for.
        addr: IpAddr,
    },
    /// The destination is on this network but nobody answered for it: its neighbor
    /// (ARP/NDP) resolution gave up, and the connects waiting for it fail
    /// (`EHOSTUNREACH`).
    #[error("no route to host {addr}")]
    HostUnreachable {
        /// The destination asked for.
        addr: IpAddr,
    },
    /// A datagram does not fit in one IP packet of this network's MTU (`EMSGSIZE`).
    #[error("message of {len} bytes exceeds the maximum of {max}")]
    MessageTooLong {
        /// Length of the datagram's payload.
        len: usize,
        /// Largest payload that fits.
        max: usize,
    },
    /// Writing after the local side shut down sending, or after the connection closed
    /// (`EPIPE`).
    #[error("broken pipe")]
    BrokenPipe,
    /// The socket is not connected (`ENOTCONN`).
    #[error("socket is not connected")]
    NotConnected,
    /// The address family of an address does not match the socket (`EAFNOSUPPORT`).
    #[error("address family not supported: {addr}")]
    AddressFamily {
        /// The offending address.
        addr: IpAddr,
    },
    /// An argument is invalid, e.g. an ICMP message that is not an echo request (`EINVAL`).
    #[error("invalid argument: {what}")]
    InvalidInput {
        /// What was wrong.
        what: &'static str,
    },
    /// A non-blocking operation could not complete now (`EAGAIN`).
    #[error("operation would block")]
    WouldBlock,
    /// The stack was shut down: its driver stopped or the frame link was dropped
    /// (`ENETDOWN`).
    #[error("network is down")]
    NetworkDown,
    /// A raw socket of a protocol the stack does not carry (`EPROTONOSUPPORT`).
    #[error("protocol {protocol} not supported")]
    ProtocolNotSupported {
        /// The IP protocol number asked for.
        protocol: u8,
    },
    /// An ICMP error reported a datagram's destination as unreachable for a reason that
    /// the variants above do not name (`icmp_err_convert`, `icmpv6_err_convert` in
    /// Linux); each reason is its own errno value.
    #[error("destination unreachable: {reason:?}")]
    Unreachable {
        /// Why.
        reason: Unreachable,
    },
}

/// Reasons an ICMP error gives for a datagram that did not arrive, beyond "port", "network"
/// and "host" unreachable (which are [`Error::ConnectionRefused`],
/// [`Error::NetworkUnreachable`] and [`Error::HostUnreachable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    /// Protocol unreachable (`ENOPROTOOPT`).
    Protocol,
    /// Communication administratively prohibited (IPv6 codes 1, 5, 6: `EACCES`).
    Prohibited,
    /// Destination host unknown (`EHOSTDOWN`).
    HostDown,
    /// Source host isolated (`ENONET`).
    Isolated,
    /// Parameter problem (`EPROTO`).
    ParameterProblem,
}

impl Error {
    /// The errno value a Linux socket would report for this error.
    pub fn errno(&self) -> i32 {
        match self {
            Error::ConnectionRefused { .. } => libc::ECONNREFUSED,
            Error::TimedOut => libc::ETIMEDOUT,
            Error::ConnectionReset => libc::ECONNRESET,
            Error::ConnectionAborted => libc::ECONNABORTED,
            Error::AddrInUse { .. } => libc::EADDRINUSE,
            Error::AddrNotAvailable { .. } => libc::EADDRNOTAVAIL,
            Error::NetworkUnreachable { .. } => libc::ENETUNREACH,
            Error::HostUnreachable { .. } => libc::EHOSTUNREACH,
            Error::MessageTooLong { .. } => libc::EMSGSIZE,
            Error::BrokenPipe => libc::EPIPE,
            Error::NotConnected => libc::ENOTCONN,
            Error::AddressFamily { .. } => libc::EAFNOSUPPORT,
            Error::InvalidInput { .. } => libc::EINVAL,
            Error::WouldBlock => libc::EAGAIN,
            Error::NetworkDown => libc::ENETDOWN,
            Error::ProtocolNotSupported { .. } => libc::EPROTONOSUPPORT,
            Error::Unreachable { reason } => match reason {
                Unreachable::Protocol => libc::ENOPROTOOPT,
                Unreachable::Prohibited => libc::EACCES,
                Unreachable::HostDown => libc::EHOSTDOWN,
                Unreachable::Isolated => libc::ENONET,
                Unreachable::ParameterProblem => libc::EPROTO,
            },
        }
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::from_raw_os_error(e.errno())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn errno_is_one_to_one() {
        let sa = SocketAddr::from(([10, 0, 0, 1], 80));
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let all = [
            Error::ConnectionRefused { remote: sa },
            Error::TimedOut,
            Error::ConnectionReset,
            Error::ConnectionAborted,
            Error::AddrInUse { addr: sa },
            Error::AddrNotAvailable { addr: ip },
            Error::NetworkUnreachable { addr: ip },
            Error::HostUnreachable { addr: ip },
            Error::MessageTooLong { len: 1, max: 0 },
            Error::BrokenPipe,
            Error::NotConnected,
            Error::AddressFamily { addr: ip },
            Error::InvalidInput { what: "x" },
            Error::WouldBlock,
            Error::NetworkDown,
            Error::ProtocolNotSupported { protocol: 99 },
            Error::Unreachable {
                reason: Unreachable::Protocol,
            },
            Error::Unreachable {
                reason: Unreachable::Prohibited,
            },
            Error::Unreachable {
                reason: Unreachable::HostDown,
            },
            Error::Unreachable {
                reason: Unreachable::Isolated,
            },
            Error::Unreachable {
                reason: Unreachable::ParameterProblem,
            },
        ];
        let mut seen = std::collections::HashSet::new();
        for e in &all {
            assert!(seen.insert(e.errno()), "errno {} used twice", e.errno());
        }
        assert_eq!(
            std::io::Error::from(Error::ConnectionReset).kind(),
            std::io::ErrorKind::ConnectionReset
        );
    }
}
