//! UDP sockets, implemented directly on the demultiplexer (no smoltcp socket scan).

use std::future::poll_fn;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::config::unmap;
use crate::core::{Core, Shared, UdpState};
use crate::wire::{self, Udp, ETH_HEADER};
use crate::Error;

/// Default receive buffer of a UDP socket (Linux `rmem_default`).
const RX_CAP: usize = 212_992;

/// A UDP socket bound to a local address and port.
///
/// Datagrams are never fragmented: a payload larger than [`UdpSocket::max_payload`] (MTU
/// minus IP and UDP headers) fails with `EMSGSIZE`, as a Linux socket with
/// `IP_PMTUDISC_DO` does; received IPv4 fragments are dropped. Received datagrams beyond the
/// receive buffer are dropped, as the kernel does. Dropping the socket unbinds it.
#[derive(Debug)]
pub struct UdpSocket {
    shared: Arc<Shared>,
    id: u64,
    local: SocketAddr,
}

pub(crate) fn bind(
    shared: &Arc<Shared>,
    local: SocketAddr,
    v6only: bool,
    reuse: bool,
) -> Result<UdpSocket, Error> {
    let ip = unmap(local.ip());
    if !ip.is_unspecified() && !shared.net.is_local(ip) {
        return Err(Error::AddrNotAvailable { addr: ip });
    }
    let v6only = v6only && ip.is_ipv6();
    let mut core = shared.lock();
    let port = match local.port() {
        0 => core
            .ephemeral_port(true)
            .ok_or(Error::AddrNotAvailable { addr: ip })?,
        p => p,
    };
    let local = SocketAddr::new(ip, port);
    if core.udp_conflict(local, v6only, reuse) {
        return Err(Error::AddrInUse { addr: local });
    }
    let id = core.add_udp(UdpState {
        local,
        v6only,
        reuse,
        peer: None,
        rx: Default::default(),
        rx_bytes: 0,
        rx_cap: RX_CAP,
        error: None,
        waker: None,
    });
    Ok(UdpSocket {
        shared: shared.clone(),
        id,
        local,
    })
}

/// Pick the source address for sending from `bound` to `dst`, checking families.
pub(crate) fn source(
    core: &Core,
    net: &crate::config::Net,
    bound: IpAddr,
    v6only: bool,
    dst: IpAddr,
) -> Result<IpAddr, Error> {
    let _ = core;
    if bound.is_ipv4() && dst.is_ipv6() {
        return Err(Error::AddressFamily { addr: dst });
    }
    if bound.is_ipv6() && dst.is_ipv4() && (v6only || !bound.is_unspecified()) {
        return Err(Error::NetworkUnreachable { addr: dst });
    }
    if !net.is_local(dst) && net.next_hop(dst).is_none() {
        return Err(Error::NetworkUnreachable { addr: dst });
    }
    if bound.is_unspecified() {
        net.source_for(dst)
            .ok_or(Error::NetworkUnreachable { addr: dst })
    } else {
        Ok(bound)
    }
}

impl UdpSocket {
    /// The bound address (with the chosen port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Largest payload one datagram can carry from this socket to an address of the same
    /// family as the socket.
    pub fn max_payload(&self) -> usize {
        self.shared.net.mtu - wire::ip_header_len(self.local.ip()) - wire::UDP_HEADER
    }

    /// Set the default destination and receive only from it (`connect(2)`); an
    /// unspecified address (`AF_UNSPEC`) removes the association.
    pub fn connect(&self, remote: SocketAddr) -> Result<(), Error> {
        let r = SocketAddr::new(unmap(remote.ip()), remote.port());
        let mut core = self.shared.lock();
        if r.ip().is_unspecified() {
            if let Some(s) = core.udp.get_mut(&self.id) {
                s.peer = None;
            }
            return Ok(());
        }
        let v6only = core.udp.get(&self.id).is_some_and(|s| s.v6only);
        source(&core, &self.shared.net, self.local.ip(), v6only, r.ip())?;
        if let Some(s) = core.udp.get_mut(&self.id) {
            s.peer = Some(r);
        }
        Ok(())
    }

    /// The connected peer, or [`Error::NotConnected`].
    pub fn peer_addr(&self) -> Result<SocketAddr, Error> {
        let core = self.shared.lock();
        core.udp
            .get(&self.id)
            .and_then(|s| s.peer)
            .ok_or(Error::NotConnected)
    }

    /// Send one datagram to `target` (or to the connected peer when `None`), waiting
    /// while the frame queue towards the network is full. Returns the payload length.
    pub fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        target: Option<SocketAddr>,
    ) -> Poll<Result<usize, Error>> {
        let mut core = self.shared.lock();
        let Some(st) = core.udp.get(&self.id) else {
            return Poll::Ready(Err(Error::NetworkDown));
        };
        let dst = match target.or(st.peer) {
            Some(t) => SocketAddr::new(unmap(t.ip()), t.port()),
            None => return Poll::Ready(Err(Error::NotConnected)),
        };
        if dst.port() == 0 {
            return Poll::Ready(Err(Error::InvalidInput {
                what: "destination port 0",
            }));
        }
        let src = match source(
            &core,
            &self.shared.net,
            self.local.ip(),
            st.v6only,
            dst.ip(),
        ) {
            Ok(s) => s,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let hl = wire::ip_header_len(src);
        let max = self.shared.net.mtu - hl - wire::UDP_HEADER;
        if buf.len() > max {
            return Poll::Ready(Err(Error::MessageTooLong {
                len: buf.len(),
                max,
            }));
        }
        if !self.shared.outbound.has_room() {
            self.shared.outbound.wait_room(cx);
            return Poll::Pending;
        }
        let len = wire::UDP_HEADER + buf.len();
        let mut f = core.egress.buffer(ETH_HEADER + hl + len);
        wire::emit_ip(
            &mut f[ETH_HEADER..],
            src,
            dst.ip(),
            wire::PROTO_UDP,
            64,
            len,
        );
        let seg = &mut f[ETH_HEADER + hl..];
        seg[wire::UDP_HEADER..].copy_from_slice(buf);
        Udp::emit(
            seg,
            (src, self.local.port()),
            (dst.ip(), dst.port()),
            buf.len(),
        );
        core.egress.send_ip(f);
        core.egress.flush();
        self.shared.after_inline(&mut core);
        Poll::Ready(Ok(buf.len()))
    }

    /// Send one datagram to `target`.
    pub async fn send_to(&self, buf: &[u8], target: SocketAddr) -> Result<usize, Error> {
        poll_fn(|cx| self.poll_send_to(cx, buf, Some(target))).await
    }

    /// Send one datagram to the connected peer.
    pub async fn send(&self, buf: &[u8]) -> Result<usize, Error> {
        poll_fn(|cx| self.poll_send_to(cx, buf, None)).await
    }

    /// Receive one datagram into `buf`: returns (bytes copied, full datagram length —
    /// larger when truncated, for `MSG_TRUNC`, sender). A sender reached through a
    /// dual-stack socket is reported as a plain IPv4 address. With `peek`, the datagram
    /// stays queued (`MSG_PEEK`).
    ///
    /// A connected socket whose datagram drew a hard ICMP error (port unreachable:
    /// `ECONNREFUSED`, and the others Linux reports, see [`Error::Unreachable`]) gets that
    /// error from its next receive, once, before any queued datagram, as `recv(2)` on
    /// Linux reports `sk_err`.
    pub fn poll_recv_from(
        &self,
        cx: Option<&mut Context<'_>>,
        buf: &mut [u8],
        peek: bool,
    ) -> Poll<Result<(usize, usize, SocketAddr), Error>> {
        let mut core = self.shared.lock();
        let Some(s) = core.udp.get_mut(&self.id) else {
            return Poll::Ready(Err(Error::NetworkDown));
        };
        // An error an ICMP message reported comes first, once (`__skb_recv_udp`).
        if let Some(e) = s.error.take() {
            return Poll::Ready(Err(e));
        }
        let Some((from, d)) = s.rx.front() else {
            if let Some(cx) = cx {
                s.waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        };
        let (from, full) = (*from, d.len());
        let n = full.min(buf.len());
        buf[..n].copy_from_slice(&d[..n]);
        if !peek {
            s.rx_bytes -= full;
            s.rx.pop_front();
        }
        Poll::Ready(Ok((n, full, from)))
    }

    /// Receive one datagram: (bytes copied, sender). Excess bytes of a datagram larger than
    /// `buf` are discarded, as with `recvfrom(2)`.
    pub async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr), Error> {
        poll_fn(|cx| self.poll_recv_from(Some(cx), buf, false))
            .await
            .map(|(n, _, a)| (n, a))
    }

    /// Receive without waiting, or [`Error::WouldBlock`].
    pub fn try_recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr), Error> {
        match self.poll_recv_from(None, buf, false) {
            Poll::Ready(r) => r.map(|(n, _, a)| (n, a)),
            Poll::Pending => Err(Error::WouldBlock),
        }
    }

    /// Size of the next queued datagram, if any (`FIONREAD`).
    pub fn next_datagram_len(&self) -> Option<usize> {
        let core = self.shared.lock();
        core.udp
            .get(&self.id)
            .and_then(|s| s.rx.front().map(|(_, d)| d.len()))
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        self.shared.lock().remove_udp(self.id);
    }
}
