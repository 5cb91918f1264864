//! Raw sockets for programs that hold `CAP_NET_RAW`, and UDP-Lite.
//!
//! **Raw sockets.** Linux gives `socket(AF_INET, SOCK_RAW, p)` to a caller with
//! `CAP_NET_RAW` in the user namespace owning its network namespace (`inet_create`), and
//! `EPERM` to everyone else. The supervisor checks the *calling thread's* capability
//! (`permit.rs`) and emulates the raw sockets that ping, traceroute and monitoring agents
//! use, on the virtual network (`netstack::RawSocket`, driven through the same datagram
//! path as UDP, `udp.rs`):
//!
//! - IPv4 `IPPROTO_ICMP`: a received packet includes its IP header; a send takes the ICMP
//!   message (the program's checksum) and the stack builds the header.
//! - IPv6 `IPPROTO_ICMPV6`: no IP header; the checksum of a sent message is computed.
//! - IPv4 `IPPROTO_RAW`: send only, the program builds the whole packet (`IP_HDRINCL`).
//!
//! `ICMP_FILTER` (IPv4) and `ICMP6_FILTER` (IPv6) are applied to what the socket
//! receives, as `icmp_filter` and `icmpv6_filter` do. Other raw protocols get
//! `EPROTONOSUPPORT` even with the capability. Loopback destinations are served, as for
//! every other socket, by a kernel raw socket confined to `lo` (`SO_BINDTODEVICE`), which
//! the supervisor can make only if it holds `CAP_NET_RAW` itself; else such a send fails
//! with `EPERM`. A socket whose header the program writes (`IPPROTO_RAW`, `IP_HDRINCL`,
//! `IPV6_HDRINCL`) can name any destination in that header, whatever address the call
//! was routed by, so it never gets a kernel socket (`EPERM`), and the header option is
//! fixed by the protocol (`ENOPROTOOPT` when a program tries to change it): nothing it
//! writes can leave loopback or the virtual network.
//!
//! **UDP-Lite** (RFC 3828, `IPPROTO_UDPLITE`): `socket()` succeeds as on Linux, and
//! loopback is served by a kernel UDP-Lite socket confined to `lo`. The user-space stack
//! does not carry UDP-Lite, so the virtual network answers as an unreachable one would
//! (`ENETUNREACH` at `connect` or send; a bind to a virtual address `EADDRNOTAVAIL`; a
//! wildcard bind takes loopback only).
use std::net::{IpAddr, SocketAddr};

use nix::errno::Errno;

use crate::backend::Backend;
use crate::emulate::{Kind, Supervisor, VSocket};
use crate::kernel::Kernel;
use crate::permit::CAP_NET_RAW;
use crate::wire::Family;

/// `ICMP_FILTER` (linux/icmp.h), at level `SOL_RAW`.
const ICMP_FILTER: i32 = 1;
/// `ICMP6_FILTER` (netinet/icmp6.h), at level `IPPROTO_ICMPV6`.
const ICMP6_FILTER: i32 = 1;

/// Is a raw socket of `protocol` in `family` emulated?
fn emulated(family: Family, protocol: i32) -> bool {
    match family {
        Family::V4 => matches!(protocol, libc::IPPROTO_ICMP | libc::IPPROTO_RAW),
        Family::V6 => protocol == libc::IPPROTO_ICMPV6,
    }
}

/// Does the program write the IP header of what `vs` sends?
pub(crate) fn header_included(vs: &VSocket<impl Backend>) -> bool {
    vs.kind == Kind::Raw && vs.protocol == libc::IPPROTO_RAW
}

/// Is `vs` a socket the virtual network does not carry (UDP-Lite)?
pub(crate) fn not_on_virtual_network(vs: &VSocket<impl Backend>) -> bool {
    vs.kind == Kind::Dgram && vs.protocol == libc::IPPROTO_UDPLITE
}

/// The answer to `setsockopt(level, name, value)` on raw socket `vs` when it must be
/// refused: the header-included mode is fixed by the protocol (see the module
/// documentation). `None`: go on.
pub(crate) fn refused_option(
    vs: &VSocket<impl Backend>,
    level: i32,
    name: i32,
    value: &[u8],
) -> Option<Errno> {
    if vs.kind != Kind::Raw {
        return None;
    }
    let header = matches!(
        (level, name),
        (libc::IPPROTO_IP, libc::IP_HDRINCL) | (libc::IPPROTO_IPV6, libc::IPV6_HDRINCL)
    );
    if !header {
        return None;
    }
    let on = value.iter().any(|b| *b != 0);
    (on != header_included(vs)).then_some(Errno::ENOPROTOOPT)
}

/// Does raw socket `vs` take a packet of `data` (IPv4: with its IP header; IPv6: the
/// ICMPv6 message) from `from`, sent to `to`? Its connected peer and bound address must
/// match (`raw_v4_match`, `raw_v6_match`), and its ICMP type filter must let it through.
pub(crate) fn accepts(
    vs: &VSocket<impl Backend>,
    local: SocketAddr,
    peer: Option<SocketAddr>,
    data: &[u8],
    from: SocketAddr,
    to: Option<IpAddr>,
) -> bool {
    let canonical = crate::backend::canonical;
    if peer.is_some_and(|p| canonical(p.ip()) != canonical(from.ip())) {
        return false;
    }
    let bound = canonical(local.ip());
    if !bound.is_unspecified() && to.is_some_and(|t| canonical(t) != bound) {
        return false;
    }
    match vs.family {
        Family::V4 => {
            let hl = data.first().map_or(0, |b| usize::from(b & 0x0f) * 4);
            let Some(&ty) = data.get(hl) else {
                return true;
            };
            let mask = vs
                .option_int(libc::SOL_RAW, ICMP_FILTER)
                .map_or(0, |m| m as u32);
            ty >= 32 || mask & (1 << ty) == 0
        }
        Family::V6 => {
            let Some(&ty) = data.first() else {
                return true;
            };
            let Some(filter) = vs.option_bytes(libc::IPPROTO_ICMPV6, ICMP6_FILTER) else {
                return true;
            };
            let word = usize::from(ty >> 5) * 4;
            let Some(w) = filter.get(word..word + 4) else {
                return true;
            };
            let w = u32::from_ne_bytes([w[0], w[1], w[2], w[3]]);
            w & (1 << (ty & 31)) == 0
        }
    }
}

impl<K: Kernel, B: Backend> Supervisor<K, B> {
    /// May thread `pid` have a raw socket of `protocol` (not 0) in `family`? `EPERM`
    /// without `CAP_NET_RAW`, as `inet_create` answers; `EPROTONOSUPPORT` for a protocol
    /// the supervisor does not emulate.
    pub(crate) fn raw_socket_allowed(
        &self,
        pid: u32,
        family: Family,
        protocol: i32,
    ) -> Result<(), Errno> {
        if !self.capable(pid, CAP_NET_RAW) {
            return Err(Errno::EPERM);
        }
        if !emulated(family, protocol) {
            return Err(Errno::EPROTONOSUPPORT);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulated_raw_protocols() {
        assert!(emulated(Family::V4, libc::IPPROTO_ICMP));
        assert!(emulated(Family::V4, libc::IPPROTO_RAW));
        assert!(emulated(Family::V6, libc::IPPROTO_ICMPV6));
        assert!(!emulated(Family::V6, libc::IPPROTO_ICMP));
        assert!(!emulated(Family::V6, libc::IPPROTO_RAW));
        assert!(!emulated(Family::V4, libc::IPPROTO_UDP));
    }
}
