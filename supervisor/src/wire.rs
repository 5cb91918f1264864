//! Socket address and `msghdr` bytes as the x86-64 Linux ABI lays them out. Nothing else
//! in the crate interprets raw tracee bytes.
//!
//! `sockaddr_in` (16 bytes): family u16 (native), port u16 (big endian), address [u8; 4],
//! 8 zero bytes. `sockaddr_in6` (28 bytes): family, port, flowinfo u32 (big endian),
//! address [u8; 16], scope id u32 (native). See ip(7), ipv6(7).
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use nix::errno::Errno;

/// Size of `sockaddr_in`.
pub(crate) const SOCKADDR_IN_LEN: usize = 16;
/// Size of `sockaddr_in6`.
pub(crate) const SOCKADDR_IN6_LEN: usize = 28;
/// Largest address length the kernel accepts (`sizeof(struct sockaddr_storage)`).
pub(crate) const SOCKADDR_MAX: usize = 128;

/// The address family of an emulated socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `AF_INET`.
    V4,
    /// `AF_INET6`.
    V6,
}

impl Family {
    /// The `AF_*` value.
    pub fn raw(self) -> i32 {
        match self {
            Self::V4 => libc::AF_INET,
            Self::V6 => libc::AF_INET6,
        }
    }
    /// `AF_INET`/`AF_INET6` → family.
    pub fn from_raw(raw: i32) -> Option<Self> {
        match raw {
            libc::AF_INET => Some(Self::V4),
            libc::AF_INET6 => Some(Self::V6),
            _ => None,
        }
    }
    /// The unspecified address of this family, port 0.
    pub fn unspecified(self) -> SocketAddr {
        match self {
            Self::V4 => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            Self::V6 => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
        }
    }
    /// The loopback address of this family with `port`.
    pub fn loopback(self, port: u16) -> SocketAddr {
        match self {
            Self::V4 => SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            Self::V6 => SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
        }
    }
}

/// A parsed address argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SockAddr {
    /// `AF_UNSPEC` (connect: dissolve the association).
    Unspec,
    /// An IPv4 or IPv6 address.
    Inet(SocketAddr),
}

/// Parse an address given to a socket of `family`, with the errno Linux uses for each
/// malformed case (`inet_stream_connect`, `inet6_bind`...).
pub(crate) fn parse_sockaddr(family: Family, bytes: &[u8]) -> Result<SockAddr, Errno> {
    if bytes.len() < 2 {
        return Err(Errno::EINVAL);
    }
    let fam = i32::from(u16::from_ne_bytes([bytes[0], bytes[1]]));
    match fam {
        libc::AF_UNSPEC => Ok(SockAddr::Unspec),
        libc::AF_INET => {
            if bytes.len() < SOCKADDR_IN_LEN {
                return Err(Errno::EINVAL);
            }
            if family == Family::V6 {
                // An IPv6 socket only takes IPv4 addresses in v4-mapped form.
                return Err(Errno::EAFNOSUPPORT);
            }
            let port = u16::from_be_bytes([bytes[2], bytes[3]]);
            let ip = Ipv4Addr::new(bytes[4], bytes[5], bytes[6], bytes[7]);
            Ok(SockAddr::Inet(SocketAddr::V4(SocketAddrV4::new(ip, port))))
        }
        libc::AF_INET6 => {
            if family == Family::V4 {
                return Err(Errno::EAFNOSUPPORT);
            }
            // SIN6_LEN_RFC2133: 24 bytes without the scope id are accepted.
            if bytes.len() < 24 {
                return Err(Errno::EINVAL);
            }
            let port = u16::from_be_bytes([bytes[2], bytes[3]]);
            let flow = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&bytes[8..24]);
            let scope = if bytes.len() >= SOCKADDR_IN6_LEN {
                u32::from_ne_bytes([bytes[24], bytes[25], bytes[26], bytes[27]])
            } else {
                0
            };
            Ok(SockAddr::Inet(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                flow,
                scope,
            ))))
        }
        _ => Err(Errno::EAFNOSUPPORT),
    }
}

/// Emit `addr` as `sockaddr_in`/`sockaddr_in6` bytes.
pub(crate) fn emit_sockaddr(addr: SocketAddr) -> Vec<u8> {
    match addr {
        SocketAddr::V4(a) => {
            let mut b = vec![0u8; SOCKADDR_IN_LEN];
            b[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b[2..4].copy_from_slice(&a.port().to_be_bytes());
            b[4..8].copy_from_slice(&a.ip().octets());
            b
        }
        SocketAddr::V6(a) => {
            let mut b = vec![0u8; SOCKADDR_IN6_LEN];
            b[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            b[2..4].copy_from_slice(&a.port().to_be_bytes());
            b[4..8].copy_from_slice(&a.flowinfo().to_be_bytes());
            b[8..24].copy_from_slice(&a.ip().octets());
            b[24..28].copy_from_slice(&a.scope_id().to_ne_bytes());
            b
        }
    }
}

/// `struct msghdr` (56 bytes on x86-64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MsgHdr {
    pub(crate) name: u64,
    pub(crate) namelen: u32,
    pub(crate) iov: u64,
    pub(crate) iovlen: u64,
    pub(crate) control: u64,
    pub(crate) controllen: u64,
    pub(crate) flags: i32,
}

/// Size of `struct msghdr`.
pub(crate) const MSGHDR_LEN: usize = 56;

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[off..off + 8]);
    u64::from_ne_bytes(w)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[off..off + 4]);
    u32::from_ne_bytes(w)
}

impl MsgHdr {
    /// Parse the 56 bytes of a `struct msghdr`.
    pub(crate) fn parse(b: &[u8; MSGHDR_LEN]) -> Self {
        Self {
            name: u64_at(b, 0),
            namelen: u32_at(b, 8),
            iov: u64_at(b, 16),
            iovlen: u64_at(b, 24),
            control: u64_at(b, 32),
            controllen: u64_at(b, 40),
            flags: u32_at(b, 48) as i32,
        }
    }
}

/// `struct timeval` (16 bytes: seconds, microseconds) as given to `SO_RCVTIMEO`.
pub(crate) fn parse_timeval(b: &[u8]) -> Option<std::time::Duration> {
    if b.len() < 16 {
        return None;
    }
    let secs = i64::from_ne_bytes(b[0..8].try_into().ok()?);
    let usecs = i64::from_ne_bytes(b[8..16].try_into().ok()?);
    if secs < 0 || !(0..1_000_000).contains(&usecs) {
        return None;
    }
    Some(
        std::time::Duration::from_secs(secs as u64)
            + std::time::Duration::from_micros(usecs as u64),
    )
}

/// Size of `struct cmsghdr` (len u64, level i32, type i32); data follows, and each
/// message takes `CMSG_SPACE(len)` bytes: header plus data rounded up to 8 (cmsg(3)).
const CMSGHDR_LEN: usize = 16;

fn cmsg_align(len: usize) -> usize {
    (len + 7) & !7
}

/// One control message: (level, type, data).
pub(crate) type Cmsg = (i32, i32, Vec<u8>);
/// One control message read from a buffer: (level, type, data).
pub(crate) type CmsgRef<'a> = (i32, i32, &'a [u8]);

/// Lay out control messages for a `msg_control` buffer of `cap` bytes. Returns the bytes
/// (what `msg_controllen` reports is their length) and whether some did not fit
/// (`MSG_CTRUNC`); a message that does not fit whole is left out.
pub(crate) fn emit_cmsgs(msgs: &[Cmsg], cap: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut truncated = false;
    for (level, ty, data) in msgs {
        let len = CMSGHDR_LEN + data.len();
        // The last message needs only its length, not its padding (put_cmsg).
        if out.len() + len > cap {
            truncated = true;
            continue;
        }
        out.resize(cmsg_align(out.len()), 0);
        out.extend_from_slice(&(len as u64).to_ne_bytes());
        out.extend_from_slice(&level.to_ne_bytes());
        out.extend_from_slice(&ty.to_ne_bytes());
        out.extend_from_slice(data);
    }
    (out, truncated)
}

/// Split a `msg_control` buffer into its messages. `EINVAL` for a malformed one, as
/// `sendmsg(2)` answers.
pub(crate) fn parse_cmsgs(b: &[u8]) -> Result<Vec<CmsgRef<'_>>, Errno> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + CMSGHDR_LEN <= b.len() {
        let len = u64_at(b, at);
        let level = u32_at(b, at + 8) as i32;
        let ty = u32_at(b, at + 12) as i32;
        if len < CMSGHDR_LEN as u64 || len > (b.len() - at) as u64 {
            return Err(Errno::EINVAL);
        }
        out.push((level, ty, &b[at + CMSGHDR_LEN..at + len as usize]));
        at += cmsg_align(len as usize);
    }
    Ok(out)
}

/// `struct in_pktinfo` (12 bytes): interface index, local address, header destination.
pub(crate) fn emit_in_pktinfo(ifindex: i32, spec_dst: Ipv4Addr, addr: Ipv4Addr) -> Vec<u8> {
    let mut v = Vec::with_capacity(12);
    v.extend_from_slice(&ifindex.to_ne_bytes());
    v.extend_from_slice(&spec_dst.octets());
    v.extend_from_slice(&addr.octets());
    v
}

/// The source address a sender asks for in `struct in_pktinfo` (`ipi_spec_dst`).
pub(crate) fn parse_in_pktinfo(b: &[u8]) -> Option<Ipv4Addr> {
    let a: [u8; 4] = b.get(4..8)?.try_into().ok()?;
    (b.len() >= 12).then_some(Ipv4Addr::from(a))
}

/// `struct in6_pktinfo` (20 bytes): address, interface index.
pub(crate) fn emit_in6_pktinfo(addr: Ipv6Addr, ifindex: i32) -> Vec<u8> {
    let mut v = Vec::with_capacity(20);
    v.extend_from_slice(&addr.octets());
    v.extend_from_slice(&ifindex.to_ne_bytes());
    v
}

/// The source address a sender asks for in `struct in6_pktinfo` (`ipi6_addr`).
pub(crate) fn parse_in6_pktinfo(b: &[u8]) -> Option<Ipv6Addr> {
    let a: [u8; 16] = b.get(0..16)?.try_into().ok()?;
    (b.len() >= 20).then_some(Ipv6Addr::from(a))
}

/// `struct timeval` (`SO_TIMESTAMP`) or, with `nanos`, `struct timespec`
/// (`SO_TIMESTAMPNS`) of a time since the epoch.
pub(crate) fn emit_timestamp(t: std::time::Duration, nanos: bool) -> Vec<u8> {
    let frac = if nanos {
        i64::from(t.subsec_nanos())
    } else {
        i64::from(t.subsec_micros())
    };
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&(t.as_secs() as i64).to_ne_bytes());
    v.extend_from_slice(&frac.to_ne_bytes());
    v
}

/// `struct sockaddr_nl` (12 bytes): family u16, pad u16, port id u32, groups u32
/// (netlink(7)).
pub(crate) const SOCKADDR_NL_LEN: usize = 12;

/// A `sockaddr_nl` naming port `pid` (0: the kernel).
pub(crate) fn emit_sockaddr_nl(pid: u32, groups: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(SOCKADDR_NL_LEN);
    v.extend_from_slice(&(libc::AF_NETLINK as u16).to_ne_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(&pid.to_ne_bytes());
    v.extend_from_slice(&groups.to_ne_bytes());
    v
}

/// Size of `struct nlmsghdr`: length u32, type u16, flags u16, sequence u32, port id u32.
const NLMSGHDR_LEN: usize = 16;
/// `NLMSG_DONE`, the end of a dump.
pub(crate) const NLMSG_DONE: u16 = 3;
/// `RTM_NEWADDR`, `RTM_GETADDR` (rtnetlink(7)).
pub(crate) const RTM_NEWADDR: u16 = 20;
pub(crate) const RTM_GETADDR: u16 = 22;
/// `NLM_F_MULTI`, `NLM_F_DUMP`.
const NLM_F_MULTI: u16 = 2;
pub(crate) const NLM_F_DUMP: u16 = 0x300;

/// The header of one netlink message and where it sits in its datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NlMsg {
    pub(crate) start: usize,
    /// Bytes taken in the datagram, padding included.
    pub(crate) span: usize,
    pub(crate) ty: u16,
    pub(crate) flags: u16,
    pub(crate) seq: u32,
    pub(crate) pid: u32,
    /// The first payload byte (the family of `rtgenmsg`/`ifaddrmsg`), if any.
    pub(crate) family: Option<u8>,
}

/// The messages of one netlink datagram; stops at the first malformed header.
pub(crate) fn parse_nlmsgs(b: &[u8]) -> Vec<NlMsg> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + NLMSGHDR_LEN <= b.len() {
        let len = u32_at(b, at) as usize;
        if len < NLMSGHDR_LEN || len > b.len() - at {
            break;
        }
        let span = ((len + 3) & !3).min(b.len() - at);
        out.push(NlMsg {
            start: at,
            span,
            ty: u16::from_ne_bytes([b[at + 4], b[at + 5]]),
            flags: u16::from_ne_bytes([b[at + 6], b[at + 7]]),
            seq: u32_at(b, at + 8),
            pid: u32_at(b, at + 12),
            family: (len > NLMSGHDR_LEN).then(|| b[at + NLMSGHDR_LEN]),
        });
        at += span;
    }
    out
}

fn rtattr(out: &mut Vec<u8>, ty: u16, data: &[u8]) {
    out.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(data);
    out.resize((out.len() + 3) & !3, 0);
}

/// An `RTM_NEWADDR` dump entry (`struct ifaddrmsg` and its attributes, rtnetlink(7))
/// for `ip/prefix` on interface `index` named `label`, part of dump `seq` to port `pid`.
pub(crate) fn emit_newaddr(
    ip: std::net::IpAddr,
    prefix: u8,
    index: u32,
    label: &str,
    seq: u32,
    pid: u32,
) -> Vec<u8> {
    const IFA_ADDRESS: u16 = 1;
    const IFA_LOCAL: u16 = 2;
    const IFA_LABEL: u16 = 3;
    const IFA_FLAGS: u16 = 8;
    const IFA_F_NODAD: u32 = 0x02;
    const IFA_F_PERMANENT: u32 = 0x80;
    let mut m = vec![0u8; NLMSGHDR_LEN];
    let (family, octets) = match ip {
        std::net::IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        std::net::IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    };
    let flags = IFA_F_PERMANENT | if ip.is_ipv6() { IFA_F_NODAD } else { 0 };
    // ifaddrmsg: family, prefix length, flags (low 8 bits), scope (universe), index.
    m.extend_from_slice(&[family, prefix, flags as u8, 0]);
    m.extend_from_slice(&index.to_ne_bytes());
    rtattr(&mut m, IFA_ADDRESS, &octets);
    if ip.is_ipv4() {
        rtattr(&mut m, IFA_LOCAL, &octets);
        let mut name = label.as_bytes().to_vec();
        name.push(0);
        rtattr(&mut m, IFA_LABEL, &name);
    }
    rtattr(&mut m, IFA_FLAGS, &flags.to_ne_bytes());
    let len = m.len() as u32;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m[4..6].copy_from_slice(&RTM_NEWADDR.to_ne_bytes());
    m[6..8].copy_from_slice(&NLM_F_MULTI.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    m[12..16].copy_from_slice(&pid.to_ne_bytes());
    m
}

/// One `struct iovec` (16 bytes): base, len.
pub(crate) fn parse_iovecs(b: &[u8]) -> Vec<(u64, u64)> {
    b.chunks_exact(16)
        .map(|c| (u64_at(c, 0), u64_at(c, 8)))
        .collect()
}

/// Fuzz entry point: any bytes as each thing the supervisor reads out of the wrapped
/// program's memory (a sockaddr of either family, a `msghdr`, a `timeval`, control
/// messages and the packet-info payloads, netlink requests, an iovec array, an
/// `AF_UNIX` address). Decoding must give a value or an error, never panic.
#[doc(hidden)]
pub fn fuzz_program_bytes(data: &[u8]) {
    for family in [Family::V4, Family::V6] {
        if let Ok(SockAddr::Inet(a)) = parse_sockaddr(family, data) {
            // What we decoded we can write back, and an IPv4 address reads the same.
            let again = parse_sockaddr(family, &emit_sockaddr(a));
            if family == Family::V4 {
                assert!(
                    matches!(again, Ok(SockAddr::Inet(b)) if b == a),
                    "{a} then {again:?}"
                );
            }
        }
    }
    if let Some(head) = data.first_chunk::<MSGHDR_LEN>() {
        let _ = MsgHdr::parse(head);
    }
    let _ = parse_timeval(data);
    if let Ok(cmsgs) = parse_cmsgs(data) {
        for (_, _, payload) in cmsgs {
            let _ = parse_in_pktinfo(payload);
            let _ = parse_in6_pktinfo(payload);
        }
    }
    let _ = parse_nlmsgs(data);
    let _ = parse_iovecs(data);
    let _ = is_resolved_varlink(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fuzz_entry_takes_real_and_junk_bytes() {
        fuzz_program_bytes(&emit_sockaddr("10.1.2.3:80".parse().unwrap()));
        fuzz_program_bytes(&emit_sockaddr("[fd00::1]:80".parse().unwrap()));
        for n in 0..80 {
            fuzz_program_bytes(&vec![0xff; n]);
            fuzz_program_bytes(&vec![2; n]);
        }
    }

    #[test]
    fn netlink_messages_parse_and_an_address_entry_is_well_formed() {
        let v4 = emit_newaddr("10.7.0.1".parse().unwrap(), 24, 1, "lo", 9, 4242);
        // header 16 + ifaddrmsg 8 + ADDRESS 8 + LOCAL 8 + LABEL "lo\0" 8 + FLAGS 8.
        assert_eq!(v4.len(), 56);
        assert_eq!(&v4[16..24], &[2, 24, 0x80, 0, 1, 0, 0, 0]);
        let v6 = emit_newaddr("fd7a::1".parse().unwrap(), 64, 1, "lo", 9, 4242);
        let mut dgram = v4.clone();
        dgram.extend_from_slice(&v6);
        let msgs = parse_nlmsgs(&dgram);
        assert_eq!(msgs.len(), 2);
        assert_eq!(
            msgs[1],
            NlMsg {
                start: 56,
                span: v6.len(),
                ty: RTM_NEWADDR,
                flags: 2,
                seq: 9,
                pid: 4242,
                family: Some(10)
            }
        );
        // A header claiming more than the datagram holds ends the parse.
        let mut bad = v4.clone();
        bad[0] = 200;
        assert!(parse_nlmsgs(&bad).is_empty());
        assert_eq!(
            emit_sockaddr_nl(7, 0),
            [16, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn control_messages_round_trip_with_cmsg_alignment() {
        let pkt = emit_in_pktinfo(1, Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(pkt, [1, 0, 0, 0, 10, 0, 0, 2, 10, 0, 0, 2]);
        let msgs = vec![(0, 8, pkt.clone()), (1, 29, vec![7; 16])];
        let (bytes, truncated) = emit_cmsgs(&msgs, 1024);
        assert!(!truncated);
        // CMSG_SPACE(12) = 32, then CMSG_LEN(16) = 32.
        assert_eq!(bytes.len(), 32 + 32);
        assert_eq!(&bytes[0..8], &28u64.to_ne_bytes());
        assert_eq!(&bytes[28..32], &[0, 0, 0, 0], "padding");
        let parsed = parse_cmsgs(&bytes).unwrap();
        assert_eq!(parsed, vec![(0, 8, &pkt[..]), (1, 29, &[7u8; 16][..])]);
        assert_eq!(
            parse_in_pktinfo(parsed[0].2),
            Some(Ipv4Addr::new(10, 0, 0, 2))
        );
        // Only what fits whole is written, and the caller learns it was cut.
        let (short, truncated) = emit_cmsgs(&msgs, 40);
        assert!(truncated);
        assert_eq!(short.len(), 28);
        // A length running past the buffer is refused.
        let mut bad = bytes.clone();
        bad[0] = 200;
        assert_eq!(parse_cmsgs(&bad), Err(Errno::EINVAL));
        let six = emit_in6_pktinfo(Ipv6Addr::LOCALHOST, 1);
        assert_eq!(parse_in6_pktinfo(&six), Some(Ipv6Addr::LOCALHOST));
        let ts = emit_timestamp(std::time::Duration::new(5, 1_500_000), false);
        assert_eq!(&ts[8..16], &1500i64.to_ne_bytes());
    }

    #[test]
    fn sockaddr_in_round_trips() {
        let bytes = [2, 0, 0x1f, 0x90, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        let a = parse_sockaddr(Family::V4, &bytes).unwrap();
        assert_eq!(a, SockAddr::Inet("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(emit_sockaddr("127.0.0.1:8080".parse().unwrap()), bytes);
    }

    #[test]
    fn sockaddr_in6_round_trips() {
        let addr: SocketAddr = "[fd00::5]:443".parse().unwrap();
        let bytes = emit_sockaddr(addr);
        assert_eq!(bytes.len(), 28);
        assert_eq!(&bytes[0..4], &[10, 0, 0x01, 0xbb]);
        assert_eq!(
            parse_sockaddr(Family::V6, &bytes).unwrap(),
            SockAddr::Inet(addr)
        );
        // The 24-byte RFC 2133 form is accepted.
        assert_eq!(
            parse_sockaddr(Family::V6, &bytes[..24]).unwrap(),
            SockAddr::Inet(addr)
        );
    }

    #[test]
    fn malformed_addresses_get_linux_errnos() {
        assert_eq!(parse_sockaddr(Family::V4, &[2, 0, 0]), Err(Errno::EINVAL));
        assert_eq!(parse_sockaddr(Family::V4, &[]), Err(Errno::EINVAL));
        let v6 = emit_sockaddr("[::1]:1".parse().unwrap());
        assert_eq!(parse_sockaddr(Family::V4, &v6), Err(Errno::EAFNOSUPPORT));
        let v4 = emit_sockaddr("1.2.3.4:1".parse().unwrap());
        assert_eq!(parse_sockaddr(Family::V6, &v4), Err(Errno::EAFNOSUPPORT));
        assert_eq!(
            parse_sockaddr(Family::V4, &[1, 0, 0, 0]),
            Err(Errno::EAFNOSUPPORT)
        );
        assert_eq!(parse_sockaddr(Family::V4, &[0, 0]), Ok(SockAddr::Unspec));
    }

    #[test]
    fn timeval_parses() {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&2i64.to_ne_bytes());
        b[8..16].copy_from_slice(&500_000i64.to_ne_bytes());
        assert_eq!(
            parse_timeval(&b),
            Some(std::time::Duration::from_millis(2500))
        );
        assert_eq!(parse_timeval(&b[..8]), None);
        b[8..16].copy_from_slice(&2_000_000i64.to_ne_bytes());
        assert_eq!(parse_timeval(&b), None);
    }

    #[test]
    fn msghdr_parses() {
        let mut b = [0u8; MSGHDR_LEN];
        b[0..8].copy_from_slice(&0x1000u64.to_ne_bytes());
        b[8..12].copy_from_slice(&16u32.to_ne_bytes());
        b[16..24].copy_from_slice(&0x2000u64.to_ne_bytes());
        b[24..32].copy_from_slice(&2u64.to_ne_bytes());
        let m = MsgHdr::parse(&b);
        assert_eq!(
            (m.name, m.namelen, m.iov, m.iovlen),
            (0x1000, 16, 0x2000, 2)
        );
        let iov = parse_iovecs(&[1, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(iov, vec![(1, 5)]);
    }
}

/// The `AF_UNIX` path of systemd-resolved's Varlink interface, which glibc's `nss-resolve`
/// connects to.
pub(crate) const RESOLVED_VARLINK: &[u8] = b"/run/systemd/resolve/io.systemd.Resolve";

/// Whether `addr` (a `sockaddr` as the program passed it) is `AF_UNIX` at
/// [`RESOLVED_VARLINK`] (the path may or may not be NUL-terminated within the length).
pub(crate) fn is_resolved_varlink(addr: &[u8]) -> bool {
    if addr.len() < 2 || u16::from_ne_bytes([addr[0], addr[1]]) != libc::AF_UNIX as u16 {
        return false;
    }
    let path = &addr[2..];
    let path = path.split(|&b| b == 0).next().unwrap_or_default();
    path == RESOLVED_VARLINK
}

#[cfg(test)]
mod resolved_tests {
    use super::*;

    fn unix(path: &[u8]) -> Vec<u8> {
        let mut v = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(path);
        v
    }

    #[test]
    fn only_resolveds_varlink_socket_matches() {
        assert!(is_resolved_varlink(&unix(RESOLVED_VARLINK)));
        assert!(is_resolved_varlink(&unix(
            b"/run/systemd/resolve/io.systemd.Resolve\0junk"
        )));
        assert!(!is_resolved_varlink(&unix(
            b"/run/systemd/resolve/io.systemd.Resolv"
        )));
        assert!(!is_resolved_varlink(&unix(b"/run/dbus/system_bus_socket")));
        assert!(!is_resolved_varlink(&unix(
            b"\0/run/systemd/resolve/io.systemd.Resolve"
        )));
        let mut inet = unix(RESOLVED_VARLINK);
        inet[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        assert!(!is_resolved_varlink(&inet));
        assert!(!is_resolved_varlink(&[1]));
    }
}
