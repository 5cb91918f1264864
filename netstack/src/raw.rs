//! Raw IP sockets, for programs that hold `CAP_NET_RAW` (the supervisor checks that; this
//! stack does not know about processes): `ping -e`, `traceroute -I`, monitoring agents.
//!
//! Three kinds, with Linux's semantics (raw(7), ipv6(7) "raw sockets", RFC 3542 3.1):
//!
//! - IPv4 `IPPROTO_ICMP`: receives a copy of every ICMP packet addressed to the stack,
//!   **IP header included**; sends take the ICMP message as the program built it
//!   (checksum included) and the stack puts the IP header in front.
//! - IPv6 `IPPROTO_ICMPV6`: receives every ICMPv6 message (no IP header); sends take the
//!   message and the stack computes its checksum, as the kernel always does for ICMPv6.
//! - IPv4 `IPPROTO_RAW`: send only, the program builds the IP header (`IP_HDRINCL`); the
//!   stack fills in the total length, the checksum, and a zero source or identification.
//!
//! The stack still answers echo requests itself, as Linux does beside its raw sockets.
//! Nothing here filters by ICMP type (`ICMP_FILTER`, `ICMP6_FILTER`): that is the socket
//! option's owner's business.

use std::future::poll_fn;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::config::unmap;
use crate::core::{RawState, Shared};
use crate::icmp::IpFamily;
use crate::wire::{self, ETH_HEADER};
use crate::Error;

/// IP protocol number of `IPPROTO_RAW`.
pub const PROTO_RAW: u8 = 255;

/// A raw IP socket (see the module documentation).
#[derive(Debug)]
pub struct RawSocket {
    shared: Arc<Shared>,
    id: u64,
    family: IpFamily,
    protocol: u8,
}

pub(crate) fn bind(
    shared: &Arc<Shared>,
    family: IpFamily,
    protocol: u8,
) -> Result<RawSocket, Error> {
    let v6 = family == IpFamily::V6;
    let supported = match family {
        IpFamily::V4 => protocol == wire::PROTO_ICMP || protocol == PROTO_RAW,
        IpFamily::V6 => protocol == wire::PROTO_ICMPV6,
    };
    if !supported {
        return Err(Error::ProtocolNotSupported { protocol });
    }
    let id = shared.lock().add_raw(RawState {
        v6,
        protocol,
        rx: Default::default(),
        rx_bytes: 0,
        waker: None,
    });
    Ok(RawSocket {
        shared: shared.clone(),
        id,
        family,
        protocol,
    })
}

impl RawSocket {
    /// The socket's family.
    pub fn family(&self) -> IpFamily {
        self.family
    }

    /// The IP protocol number the socket was opened with.
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// Send one packet to `dst`: for `IPPROTO_RAW` the whole IPv4 packet (its header's
    /// destination is where it goes), else the ICMP/ICMPv6 message. Errors:
    /// `ENETUNREACH` outside the network, `EMSGSIZE` beyond the MTU, `EAFNOSUPPORT` for
    /// an address of the other family, `EINVAL` for a malformed IPv4 header or an ICMPv6
    /// message shorter than its checksum.
    pub fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        msg: &[u8],
        dst: IpAddr,
    ) -> Poll<Result<usize, Error>> {
        let dst = unmap(dst);
        let v6 = self.family == IpFamily::V6;
        if dst.is_ipv6() != v6 {
            return Poll::Ready(Err(Error::AddressFamily { addr: dst }));
        }
        let net = &self.shared.net;
        if !net.is_local(dst) && net.next_hop(dst).is_none() {
            return Poll::Ready(Err(Error::NetworkUnreachable { addr: dst }));
        }
        let Some(src) = net.source_for(dst) else {
            return Poll::Ready(Err(Error::NetworkUnreachable { addr: dst }));
        };
        let hl = if self.protocol == PROTO_RAW {
            0
        } else {
            wire::ip_header_len(src)
        };
        if hl + msg.len() > net.mtu {
            return Poll::Ready(Err(Error::MessageTooLong {
                len: msg.len(),
                max: net.mtu - hl,
            }));
        }
        if v6 && msg.len() < 4 {
            return Poll::Ready(Err(Error::InvalidInput {
                what: "ICMPv6 message shorter than its checksum",
            }));
        }
        if !self.shared.outbound.has_room() {
            self.shared.outbound.wait_room(cx);
            return Poll::Pending;
        }
        let mut core = self.shared.lock();
        let mut f = core.egress.buffer(ETH_HEADER + hl + msg.len());
        if self.protocol == PROTO_RAW {
            let id = core.random_u16();
            f[ETH_HEADER..].copy_from_slice(msg);
            let source = |to: std::net::Ipv4Addr| match net.source_for(to.into()) {
                Some(IpAddr::V4(a)) => Some(a),
                _ => None,
            };
            if let Err(e) = wire::complete_ipv4_header(&mut f[ETH_HEADER..], source, id) {
                return Poll::Ready(Err(e));
            }
        } else {
            wire::emit_ip(&mut f[ETH_HEADER..], src, dst, self.protocol, 64, msg.len());
            let m = &mut f[ETH_HEADER + hl..];
            m.copy_from_slice(msg);
            if v6 {
                wire::Icmp::fix_checksum(m, src, dst);
            }
        }
        core.egress.send_ip(f);
        core.egress.flush();
        self.shared.after_inline(&mut core);
        Poll::Ready(Ok(msg.len()))
    }

    /// Send one packet (see [`RawSocket::poll_send_to`]).
    pub async fn send_to(&self, msg: &[u8], dst: IpAddr) -> Result<usize, Error> {
        poll_fn(|cx| self.poll_send_to(cx, msg, dst)).await
    }

    /// Receive one packet (IPv4: with its IP header; IPv6: the ICMPv6 message) and its
    /// sender. Returns (bytes copied, full length, sender). An `IPPROTO_RAW` socket never
    /// receives anything.
    pub fn poll_recv_from(
        &self,
        cx: Option<&mut Context<'_>>,
        buf: &mut [u8],
    ) -> Poll<Result<(usize, usize, IpAddr), Error>> {
        let mut core = self.shared.lock();
        let Some(s) = core.raw.get_mut(&self.id) else {
            return Poll::Ready(Err(Error::NetworkDown));
        };
        let Some((from, m)) = s.rx.pop_front() else {
            if let Some(cx) = cx {
                s.waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        };
        s.rx_bytes -= m.len();
        let n = m.len().min(buf.len());
        buf[..n].copy_from_slice(&m[..n]);
        Poll::Ready(Ok((n, m.len(), from)))
    }

    /// Receive one packet: (bytes copied, sender).
    pub async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, IpAddr), Error> {
        poll_fn(|cx| self.poll_recv_from(Some(cx), buf))
            .await
            .map(|(n, _, a)| (n, a))
    }
}

impl Drop for RawSocket {
    fn drop(&mut self) {
        self.shared.lock().raw.remove(&self.id);
    }
}
