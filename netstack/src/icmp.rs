//! ICMP echo sockets: what unprivileged `ping` uses (`socket(AF_INET, SOCK_DGRAM,
//! IPPROTO_ICMP)`, Linux `net/ipv4/ping.c`).
//!
//! As on Linux, the socket has an identifier (its "port"); every echo request sent
//! through it gets that identifier (and a fresh checksum), and echo replies carrying it are
//! delivered to it. The stack itself answers echo requests addressed to it.

use std::future::poll_fn;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::config::unmap;
use crate::core::{IcmpState, Shared};
use crate::wire::{self, Icmp, ETH_HEADER};
use crate::Error;

/// Bytes of replies a socket queues before dropping.
pub(crate) const RX_CAP: usize = 212_992;

/// Address family of an ICMP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpFamily {
    /// ICMP over IPv4.
    V4,
    /// ICMPv6.
    V6,
}

/// An ICMP echo socket.
#[derive(Debug)]
pub struct IcmpSocket {
    shared: Arc<Shared>,
    id: u64,
    family: IpFamily,
    ident: u16,
}

pub(crate) fn bind(
    shared: &Arc<Shared>,
    family: IpFamily,
    ident: Option<u16>,
) -> Result<IcmpSocket, Error> {
    let v6 = family == IpFamily::V6;
    let mut core = shared.lock();
    let ident = match ident {
        Some(i) if i != 0 => {
            if !core.icmp_ident_free(v6, i) {
                let addr = crate::core::unspecified(v6);
                return Err(Error::AddrInUse {
                    addr: std::net::SocketAddr::new(addr, i),
                });
            }
            i
        }
        _ => {
            let start = core.random_u16();
            (0..=u16::MAX)
                .map(|k| start.wrapping_add(k))
                .find(|i| *i != 0 && core.icmp_ident_free(v6, *i))
                .ok_or(Error::AddrNotAvailable {
                    addr: crate::core::unspecified(v6),
                })?
        }
    };
    let id = core.add_icmp(IcmpState {
        v6,
        ident,
        rx: Default::default(),
        rx_bytes: 0,
        waker: None,
    });
    Ok(IcmpSocket {
        shared: shared.clone(),
        id,
        family,
        ident,
    })
}

impl IcmpSocket {
    /// The identifier stamped on outgoing echo requests (`getsockname`'s port).
    pub fn ident(&self) -> u16 {
        self.ident
    }

    /// The socket's family.
    pub fn family(&self) -> IpFamily {
        self.family
    }

    /// Send an echo request. `msg` is the ICMP message as the program wrote it (8-byte
    /// header, then data); its identifier and checksum are rewritten. Anything other than
    /// an echo request with code 0 is refused with `EINVAL`, as Linux does.
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
        let want = if v6 {
            wire::ICMPV6_ECHO_REQUEST
        } else {
            wire::ICMPV4_ECHO_REQUEST
        };
        match Icmp::parse(msg) {
            Some(h) if h.ty == want && h.code == 0 => {}
            _ => {
                return Poll::Ready(Err(Error::InvalidInput {
                    what: "not an ICMP echo request",
                }))
            }
        }
        let net = &self.shared.net;
        if !net.is_local(dst) && net.next_hop(dst).is_none() {
            return Poll::Ready(Err(Error::NetworkUnreachable { addr: dst }));
        }
        let Some(src) = net.source_for(dst) else {
            return Poll::Ready(Err(Error::NetworkUnreachable { addr: dst }));
        };
        let hl = wire::ip_header_len(src);
        let max = net.mtu - hl;
        if msg.len() > max {
            return Poll::Ready(Err(Error::MessageTooLong {
                len: msg.len(),
                max,
            }));
        }
        if !self.shared.outbound.has_room() {
            self.shared.outbound.wait_room(cx);
            return Poll::Pending;
        }
        let mut core = self.shared.lock();
        let mut f = core.egress.buffer(ETH_HEADER + hl + msg.len());
        let proto = if v6 {
            wire::PROTO_ICMPV6
        } else {
            wire::PROTO_ICMP
        };
        wire::emit_ip(&mut f[ETH_HEADER..], src, dst, proto, 64, msg.len());
        let m = &mut f[ETH_HEADER + hl..];
        m.copy_from_slice(msg);
        Icmp::set_ident(m, self.ident);
        Icmp::fix_checksum(m, src, dst);
        core.egress.send_ip(f);
        core.egress.flush();
        self.shared.after_inline(&mut core);
        Poll::Ready(Ok(msg.len()))
    }

    /// Send an echo request (see [`IcmpSocket::poll_send_to`]).
    pub async fn send_to(&self, msg: &[u8], dst: IpAddr) -> Result<usize, Error> {
        poll_fn(|cx| self.poll_send_to(cx, msg, dst)).await
    }

    /// Receive an echo reply: the ICMP message (header and data, no IP header) and its
    /// sender. Returns (bytes copied, full length, sender).
    pub fn poll_recv_from(
        &self,
        cx: Option<&mut Context<'_>>,
        buf: &mut [u8],
    ) -> Poll<Result<(usize, usize, IpAddr), Error>> {
        let mut core = self.shared.lock();
        let Some(s) = core.icmp.get_mut(&self.id) else {
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

    /// Receive an echo reply: (bytes copied, sender).
    pub async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, IpAddr), Error> {
        poll_fn(|cx| self.poll_recv_from(Some(cx), buf))
            .await
            .map(|(n, _, a)| (n, a))
    }
}

impl Drop for IcmpSocket {
    fn drop(&mut self) {
        self.shared.lock().remove_icmp(self.id);
    }
}
