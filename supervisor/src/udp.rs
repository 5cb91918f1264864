//! UDP on the virtual network.
//!
//! The program's socket is the end of a seqpacket socketpair (datagram boundaries kept).
//! Once it touches the virtual network (bind to a virtual or wildcard address, connect
//! to or send to a virtual address) it is replaced (`SETFD`) by the end of a fresh pair,
//! and bound in the backend:
//!
//! - every datagram from the backend is written into our end (so `read`/`recv`/epoll
//!   work natively) and its source pushed on a FIFO; a connected socket drops datagrams
//!   from anyone but its peer;
//! - `recvfrom`/`recvmsg`/`recvmmsg` (trapped) are emulated by reading the next datagram
//!   through a duplicate of the program's end taken for the call (`pidfd_getfd`) and
//!   popping its source from the FIFO;
//! - datagrams the program sends natively (`send`/`write` on a connected socket) are read
//!   from our end and sent to the peer; `sendto`/`sendmsg` with an address are emulated.
//!
//! The program's close shows as a hang-up of our end (idle.rs). Where `pidfd_getfd` is
//! denied (Docker's default profile) the socket keeps a duplicate of the program's end
//! instead, which hides the close, so (as for listeners) a sweep closes the backend
//! socket once no traced thread holds the inode. Reads that bypass the trap (`read`,
//! `recv` without address) on an unconnected socket leave the FIFO behind; servers use
//! `recvfrom`/`recvmsg`, so this is accepted and documented.
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::socket::{recv, send, MsgFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::task::AbortHandle;
use tracing::{debug, trace};

use crate::backend::Backend;
use crate::emulate::{
    errno, inode, socketpair, tri, value, Kind, Phase, Reply, Supervisor, VSocket, CONTINUE,
};
use crate::kernel::{Kernel, Notification};
use crate::tracee::{self, MAX_COPY};
use crate::wire::{self, MsgHdr, MSGHDR_LEN};

/// Size of `struct mmsghdr`.
pub(crate) const MMSGHDR_LEN: u64 = 64;

/// Does a datagram send with `MSG_OOB` to `to` fail? `udp_sendmsg` (IPv4, also an IPv6
/// socket's IPv4 or v4-mapped destination) and the ping sockets refuse it
/// (`EOPNOTSUPP`); `udpv6_sendmsg` ignores the flag for IPv6 destinations.
pub(crate) fn refuses_oob(kind: Kind, to: SocketAddr) -> bool {
    // raw_sendmsg and rawv6_sendmsg refuse it too.
    matches!(kind, Kind::Icmp | Kind::Raw) || crate::backend::canonical(to.ip()).is_ipv4()
}

/// Is `e`, from a receive on the network, an error an ICMP message reported for the
/// socket (netstack's hard ICMP errors: Linux's `sk_err`) rather than a failure to
/// receive?
fn reported_by_network(e: Errno) -> bool {
    matches!(
        e,
        Errno::ECONNREFUSED
            | Errno::ENETUNREACH
            | Errno::EHOSTUNREACH
            | Errno::ENOPROTOOPT
            | Errno::EACCES
            | Errno::EHOSTDOWN
            | Errno::ENONET
            | Errno::EPROTO
    )
}

/// A send's `msghdr`, its destination address bytes (if it names one) and its data.
pub(crate) type SendMsg = (MsgHdr, Option<Vec<u8>>, Vec<u8>);

/// The `flags` argument of a send call (`sendto`, `sendmsg`, `sendmmsg`).
pub(crate) fn send_flags(n: &Notification) -> i32 {
    let at = if n.nr == libc::SYS_sendmsg { 2 } else { 3 };
    n.args[at] as u32 as i32
}

/// A UDP socket on the virtual network.
pub(crate) struct Dgram<B: Backend> {
    sock: Arc<B::Udp>,
    pub(crate) local: SocketAddr,
    peer: Mutex<Option<SocketAddr>>,
    /// What we know of the datagrams queued towards the program, in order.
    sources: Mutex<VecDeque<Arrival>>,
    /// Arrival time of the last datagram handed to the program's end (`SIOCGSTAMP`: the
    /// program may read it without a trapped call, so this is the newest one delivered).
    last_arrival: Mutex<Option<std::time::Duration>>,
    /// The inode of the program's end.
    ino: u64,
    /// Duplicate of the program's end, registered for readiness, where the supervisor
    /// cannot take one for each receive (`Supervisor::may_grab`).
    theirs: Option<AsyncFd<OwnedFd>>,
    /// Woken when a datagram is written towards the program (a receive waits on it
    /// when it holds no duplicate of the program's end).
    arrived: tokio::sync::Notify,
    tasks: Mutex<Vec<AbortHandle>>,
    /// The error the network reported for this socket and no call has reported yet
    /// (Linux `sk_err`: an ICMP port unreachable for a connected socket, say).
    error: Mutex<Option<Errno>>,
    /// Wakes a receive waiting for a datagram when [`Dgram::error`] is set.
    errored: tokio::sync::Notify,
}

impl<B: Backend> Drop for Dgram<B> {
    fn drop(&mut self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<B: Backend> Dgram<B> {
    pub(crate) fn peer(&self) -> Option<SocketAddr> {
        *lock(&self.peer)
    }
    pub(crate) fn set_peer(&self, peer: Option<SocketAddr>) {
        *lock(&self.peer) = peer;
    }
    /// The pending error, left pending.
    pub(crate) fn error(&self) -> Option<Errno> {
        *lock(&self.error)
    }
    /// The pending error, cleared: the call that reports it consumes it, as
    /// `sock_error` does.
    pub(crate) fn take_error(&self) -> Option<Errno> {
        lock(&self.error).take()
    }
    fn set_error(&self, e: Errno) {
        *lock(&self.error) = Some(e);
        self.errored.notify_one();
    }
    /// Hand a datagram from `from` (sent to `to`) to the program: into our end `ours`, its
    /// arrival queued for the receive calls. A full queue drops it, as UDP does.
    fn deliver(&self, ours: &impl AsRawFd, buf: &[u8], from: SocketAddr, to: Option<IpAddr>) {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        lock(&self.sources).push_back(Arrival { from, to, at });
        if let Err(e) = send(ours.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
            lock(&self.sources).pop_back();
            trace!(%e, len = buf.len(), "datagram dropped: the program's queue is full");
        } else {
            *lock(&self.last_arrival) = Some(at);
            self.arrived.notify_waiters();
        }
    }
    /// Does the socket hold a duplicate of the program's end?
    pub(crate) fn holds_program_end(&self) -> bool {
        self.theirs.is_some()
    }
    /// When the last datagram handed to the program arrived (since the Unix epoch).
    pub(crate) fn last_arrival(&self) -> Option<std::time::Duration> {
        *lock(&self.last_arrival)
    }
}

/// A datagram queued towards the program: where it came from, the local address it was
/// sent to (for `IP_PKTINFO`), and when it arrived (for `SO_TIMESTAMP`).
#[derive(Debug, Clone, Copy)]
struct Arrival {
    from: SocketAddr,
    to: Option<IpAddr>,
    at: std::time::Duration,
}

thread_local! {
    /// Where a datagram is received, in either direction, before it is copied out at
    /// its own size: a socket waiting for one holds no buffer.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; MAX_COPY]);
}

/// Run `f` on this thread's datagram scratch buffer (`MAX_COPY` bytes). `f` must not
/// call it again.
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with_borrow_mut(|scratch| f(scratch))
}

/// The interface index reported in `IP_PKTINFO`/`IPV6_PKTINFO` for the virtual network.
/// Decision: the virtual network has no kernel interface, and programs resolve the index
/// with `SIOCGIFNAME`/`if_indextoname` (dnsmasq drops a query whose index does not
/// resolve), so we report 1, the loopback interface, the one index that exists in every
/// network namespace. See docs/SUPERVISOR.md.
pub(crate) const VIRTUAL_IFINDEX: i32 = 1;

/// One datagram taken from the program's queue.
struct Taken {
    data: Vec<u8>,
    full_len: usize,
    from: SocketAddr,
    to: Option<IpAddr>,
    at: std::time::Duration,
}

impl<K: Kernel, B: Backend> Supervisor<K, B> {
    /// Put socket `vs` (inode `ino`, fd argument 0 of `n`) on the virtual network.
    pub(crate) fn udp_enter(
        self: &Arc<Self>,
        n: &Notification,
        ino: u64,
        vs: &Arc<VSocket<B>>,
        local: SocketAddr,
    ) -> Result<Arc<Dgram<B>>, Errno> {
        let v6only = vs
            .option_int(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)
            .unwrap_or(0)
            != 0;
        if crate::raw::not_on_virtual_network(vs) {
            return Err(Errno::ENETUNREACH);
        }
        let (sock, actual) = match vs.kind {
            // getsockname of a raw socket shows its protocol as the port (inet_create).
            Kind::Raw => (
                self.backend.raw_bind(vs.family, vs.protocol)?,
                SocketAddr::new(local.ip(), vs.protocol as u16),
            ),
            Kind::Icmp => {
                let ident = (local.port() != 0).then_some(local.port());
                self.backend.icmp_bind(vs.family, ident)?
            }
            // SO_REUSEADDR (or SO_REUSEPORT) lets UDP sockets share a port (socket(7)).
            _ if vs
                .option_int(libc::SOL_SOCKET, libc::SO_REUSEADDR)
                .or(vs.option_int(libc::SOL_SOCKET, libc::SO_REUSEPORT))
                .unwrap_or(0)
                != 0 =>
            {
                self.backend.udp_bind_reuse(local, v6only)?
            }
            _ => self.backend.udp_bind(local, v6only)?,
        };
        let sock = Arc::new(sock);
        let (theirs, ours) = socketpair(Kind::Dgram, false)?;
        let new_ino = inode(theirs.as_fd())?;
        let registered = if self.may_grab(n, n.args[0] as u32 as i32, ino) {
            None
        } else {
            let dup = theirs.try_clone().map_err(|_| Errno::EMFILE)?;
            Some(crate::sys::async_fd(dup, Interest::READABLE).map_err(|_| Errno::ENOBUFS)?)
        };
        let dgram = Arc::new(Dgram::<B> {
            ino: new_ino,
            arrived: tokio::sync::Notify::new(),
            sock: sock.clone(),
            local: actual,
            peer: Mutex::new(None),
            sources: Mutex::new(VecDeque::new()),
            last_arrival: Mutex::new(None),
            theirs: registered,
            tasks: Mutex::new(Vec::new()),
            error: Mutex::new(None),
            errored: tokio::sync::Notify::new(),
        });
        // Our end for the two pumps below: datagrams are written into it from the
        // network, and read from it (registered for readiness) towards the network.
        let end = ours.try_clone().map_err(|_| Errno::EMFILE)?;
        let end = crate::sys::async_fd(end, Interest::READABLE).map_err(|_| Errno::ENOBUFS)?;
        let next = Arc::new(vs.successor(ours, Phase::Datagram(dgram.clone())));
        self.table().insert(new_ino, next.clone());
        vs.apply_timeouts(theirs.as_fd());
        if let Err(e) = self.swap_in(n, (ino, vs), theirs.as_fd()) {
            self.table().remove(&new_ino);
            return Err(e);
        }
        drop(theirs);
        debug!(%actual, "virtual UDP socket");

        // One task moves datagrams both ways: backend → program (every datagram for the
        // socket), and program → backend (native sends on a connected socket). Both
        // waits are cancel-safe (a datagram is taken only when it is returned).
        let backend = self.backend.clone();
        let weak = Arc::downgrade(&dgram);
        let weak_vs = Arc::downgrade(&next);
        let raw = vs.kind == Kind::Raw;
        let pumps = tokio::spawn(async move {
            loop {
                tokio::select! {
                    got = backend.udp_recv_from(&sock) => {
                        let Some(d) = weak.upgrade() else { return };
                        let (buf, from, to) = match got {
                            Ok(x) => x,
                            Err(e) if reported_by_network(e) => {
                                debug!(%e, "the network reported an error for a virtual UDP socket");
                                d.set_error(e);
                                continue;
                            }
                            Err(e) => {
                                debug!(%e, "virtual UDP receive failed");
                                drop(d);
                                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                                continue;
                            }
                        };
                        if raw {
                            let Some(vs) = weak_vs.upgrade() else { return };
                            if !crate::raw::accepts(&vs, d.local, d.peer(), &buf, from, to) {
                                continue;
                            }
                        } else if d.peer().is_some_and(|p| p != from) {
                            continue;
                        }
                        d.deliver(end.get_ref(), &buf, from, to);
                    }
                    ready = end.readable() => {
                        let Ok(mut guard) = ready else { return };
                        // Received in this thread's scratch buffer and copied out at its
                        // own size before the send waits: a quiet socket holds no buffer.
                        let got = with_scratch(|scratch| {
                            recv(end.get_ref().as_raw_fd(), scratch, MsgFlags::MSG_DONTWAIT)
                                .map(|len| scratch[..len].to_vec())
                        });
                        let buf = match got {
                            Ok(buf) => buf,
                            Err(Errno::EAGAIN) => {
                                guard.clear_ready();
                                continue;
                            }
                            Err(_) => return,
                        };
                        if buf.is_empty() && guard.ready().is_read_closed() {
                            // The program closed its end: the socket goes at the hang-up.
                            return;
                        }
                        drop(guard);
                        let Some(d) = weak.upgrade() else { return };
                        let Some(peer) = d.peer() else { continue };
                        if let Some(e) = d.take_error() {
                            // On Linux this send would have failed with the pending
                            // error and sent nothing; it was not trapped, so the program
                            // saw it succeed, but it is not sent either and the error
                            // is consumed (docs/SUPERVISOR.md).
                            debug!(%e, "a native send on a virtual UDP socket met its pending error");
                            continue;
                        }
                        let sock = d.sock.clone();
                        drop(d);
                        if let Err(e) = backend.udp_send_to(&sock, &buf, peer).await {
                            debug!(%e, "virtual UDP send failed");
                        }
                    }
                }
            }
        });
        // Close detection (idle.rs).
        self.watch_held(new_ino, &next);
        lock(&dgram.tasks).push(pumps.abort_handle());
        Ok(dgram)
    }

    /// The socket's datagram state, entering the virtual network with an ephemeral
    /// binding if needed.
    fn udp_state(
        self: &Arc<Self>,
        n: &Notification,
        ino: u64,
        vs: &Arc<VSocket<B>>,
    ) -> Result<Arc<Dgram<B>>, Errno> {
        if let Phase::Datagram(d) = &*vs.phase() {
            return Ok(d.clone());
        }
        self.udp_enter(n, ino, vs, vs.family.unspecified())
    }

    /// `connect` of a UDP socket to a virtual address.
    pub(crate) fn udp_connect(
        self: &Arc<Self>,
        n: &Notification,
        ino: u64,
        vs: &Arc<VSocket<B>>,
        dest: SocketAddr,
    ) -> Reply {
        let d = tri!(self.udp_state(n, ino, vs));
        tri!(self.udp_set_peer(&d, Some(dest)));
        value(0)
    }

    /// Connect (or, with `None`, dissolve) a virtual UDP socket, in the network too.
    pub(crate) fn udp_set_peer(&self, d: &Dgram<B>, peer: Option<SocketAddr>) -> Result<(), Errno> {
        self.backend.udp_connect(&d.sock, peer)?;
        d.set_peer(peer);
        Ok(())
    }

    /// `sendto`/`sendmsg` with a virtual destination.
    pub(crate) async fn udp_send(
        self: &Arc<Self>,
        n: &Notification,
        ino: u64,
        vs: &Arc<VSocket<B>>,
        data: &[u8],
        dest: SocketAddr,
    ) -> Reply {
        let d = tri!(self.udp_state(n, ino, vs));
        let sent = tri!(self.backend.udp_send_to(&d.sock, data, dest).await);
        value(sent as i64)
    }

    /// Data calls on a socket already on the virtual network.
    pub(crate) async fn udp_call(
        self: &Arc<Self>,
        n: &Notification,
        vs: &Arc<VSocket<B>>,
        d: Arc<Dgram<B>>,
    ) -> Reply {
        match n.nr {
            libc::SYS_recvfrom => self.udp_recvfrom(n, vs, &d).await,
            libc::SYS_recvmsg => self.udp_recvmsg(n, vs, &d).await,
            libc::SYS_recvmmsg => self.udp_recvmmsg(n, vs, &d).await,
            libc::SYS_sendto | libc::SYS_sendmsg | libc::SYS_sendmmsg => {
                self.udp_sendcall(n, vs, &d).await
            }
            _ => CONTINUE,
        }
    }

    async fn udp_sendcall(
        self: &Arc<Self>,
        n: &Notification,
        vs: &Arc<VSocket<B>>,
        d: &Arc<Dgram<B>>,
    ) -> Reply {
        match n.nr {
            libc::SYS_sendto => {
                let (dest, data) = tri!(self.read_sendto(n));
                match self.udp_deliver(n, vs, d, dest, &data).await {
                    Ok(sent) => value(sent as i64),
                    Err(e) => self.send_failed(n, e),
                }
            }
            libc::SYS_sendmsg => match self.udp_send_msghdr(n, vs, d, n.args[1]).await {
                Ok(sent) => value(sent as i64),
                Err(e) => self.send_failed(n, e),
            },
            _ => {
                // sendmmsg(2): each message in turn; an error after the first one ends
                // the call with the count sent so far.
                let vlen = (n.args[2] as u32).min(1024) as u64;
                let mut count = 0u64;
                while count < vlen {
                    let at = n.args[1] + count * MMSGHDR_LEN;
                    match self.udp_send_msghdr(n, vs, d, at).await {
                        Ok(sent) => {
                            tri!(self.kernel.write_memory(
                                n.pid,
                                at + MSGHDR_LEN as u64,
                                &(sent as u32).to_ne_bytes()
                            ));
                            count += 1;
                        }
                        Err(e) if count == 0 => return self.send_failed(n, e),
                        Err(_) => break,
                    }
                }
                value(count as i64)
            }
        }
    }

    /// The answer to a send that failed with `e`: nothing if the call vanished while we
    /// read it (its memory may belong to another process by now).
    fn send_failed(&self, n: &Notification, e: Errno) -> Reply {
        if self.kernel.id_valid(n.id) {
            errno(e)
        } else {
            Reply::Done
        }
    }

    /// One message of `sendmsg`/`sendmmsg`, its `msghdr` at `at`.
    async fn udp_send_msghdr(
        self: &Arc<Self>,
        n: &Notification,
        vs: &Arc<VSocket<B>>,
        d: &Arc<Dgram<B>>,
        at: u64,
    ) -> Result<usize, Errno> {
        let (hdr, dest, data) = self.read_send_msghdr(n.pid, at)?;
        self.check_send_control(n.pid, &hdr, |ip| self.backend.is_local(ip))?;
        self.udp_deliver(n, vs, d, dest, &data).await
    }

    /// Send `data` to `dest` (the program's address bytes) or the connected peer, once
    /// the notification is known to be alive (`ESRCH` if it is not).
    async fn udp_deliver(
        self: &Arc<Self>,
        n: &Notification,
        vs: &Arc<VSocket<B>>,
        d: &Arc<Dgram<B>>,
        dest: Option<Vec<u8>>,
        data: &[u8],
    ) -> Result<usize, Errno> {
        if !self.kernel.id_valid(n.id) {
            return Err(Errno::ESRCH);
        }
        let to = match dest {
            Some(bytes) => match vs.parse_destination(&bytes)? {
                wire::SockAddr::Inet(a) => a,
                wire::SockAddr::Unspec => return Err(Errno::EAFNOSUPPORT),
            },
            None => d.peer().ok_or(Errno::EDESTADDRREQ)?,
        };
        if send_flags(n) & libc::MSG_OOB != 0 && refuses_oob(vs.kind, to) {
            return Err(Errno::EOPNOTSUPP);
        }
        let mut to = crate::backend::canonical_addr(to);
        if vs.kind == Kind::Raw {
            to.set_port(0);
        }
        let reachable = if vs.kind == Kind::Raw {
            // A raw socket has no ports: a nameserver's address is not a DNS query.
            self.backend.is_virtual(to.ip())
        } else {
            self.backend.is_virtual_dgram(to)
        };
        if !reachable {
            return Err(Errno::ENETUNREACH);
        }
        // The network's pending error fails this send, which sends nothing
        // (sock_alloc_send_pskb's sock_error).
        if let Some(e) = d.take_error() {
            return Err(e);
        }
        self.backend.udp_send_to(&d.sock, data, to).await
    }

    /// Check the control messages of a `sendmsg` as Linux would (ip(7), ipv6(7)):
    /// `IP_PKTINFO`/`IPV6_PKTINFO` may choose a source address, which must be one of ours
    /// (the stack sends from its address of the family anyway, so a local one is what
    /// the datagram carries); `IP_TTL`, `IP_TOS`, `IPV6_HOPLIMIT`, `IPV6_TCLASS` and
    /// `IPV6_DONTFRAG` are accepted and not applied; anything else is `EINVAL`.
    /// `local`: is this address one the socket could send from.
    pub(crate) fn check_send_control(
        &self,
        pid: u32,
        hdr: &MsgHdr,
        local: impl Fn(IpAddr) -> bool,
    ) -> Result<(), Errno> {
        if hdr.control == 0 || hdr.controllen == 0 {
            return Ok(());
        }
        // Linux: larger than net.core.optmem_max (20 KiB by default) is ENOBUFS.
        if hdr.controllen > 20480 {
            return Err(Errno::ENOBUFS);
        }
        let bytes = tracee::read_bytes(&*self.kernel, pid, hdr.control, hdr.controllen as usize)?;
        for (level, ty, data) in wire::parse_cmsgs(&bytes)? {
            let source: Option<IpAddr> = match (level, ty) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    Some(wire::parse_in_pktinfo(data).ok_or(Errno::EINVAL)?.into())
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    Some(wire::parse_in6_pktinfo(data).ok_or(Errno::EINVAL)?.into())
                }
                (libc::IPPROTO_IP, libc::IP_TTL | libc::IP_TOS)
                | (
                    libc::IPPROTO_IPV6,
                    libc::IPV6_HOPLIMIT | libc::IPV6_TCLASS | libc::IPV6_DONTFRAG,
                ) => None,
                _ => return Err(Errno::EINVAL),
            };
            if let Some(ip) = source.map(crate::backend::canonical) {
                if !ip.is_unspecified() && !local(ip) {
                    return Err(Errno::EINVAL);
                }
            }
        }
        Ok(())
    }

    /// The destination and data of a `sendto` (bounded by `MAX_COPY`).
    /// `None` for a NULL address (trapped for `MSG_OOB`, see filter.rs).
    pub(crate) fn read_sendto(
        &self,
        n: &Notification,
    ) -> Result<(Option<Vec<u8>>, Vec<u8>), Errno> {
        let len = n.args[2] as usize;
        if len > MAX_COPY {
            return Err(Errno::EMSGSIZE);
        }
        if n.args[4] == 0 {
            let data = tracee::read_bytes(&*self.kernel, n.pid, n.args[1], len)?;
            return Ok((None, data));
        }
        // The address and the data in one copy.
        let addr_len = tracee::sockaddr_len(n.args[5])?;
        let mut both = tracee::read_parts(
            &*self.kernel,
            n.pid,
            &[(n.args[4], addr_len), (n.args[1], len)],
        )?;
        let data = both.split_off(addr_len);
        Ok((Some(both), data))
    }

    /// A send's `msghdr` at `at`: the header, its destination (if it names one) and its
    /// gathered data.
    pub(crate) fn read_send_msghdr(&self, pid: u32, at: u64) -> Result<SendMsg, Errno> {
        let (hdr, data) = self.read_msghdr_data(pid, at)?;
        let dest = if hdr.name == 0 {
            None
        } else {
            Some(tracee::read_sockaddr(
                &*self.kernel,
                pid,
                hdr.name,
                u64::from(hdr.namelen),
            )?)
        };
        Ok((hdr, dest, data))
    }

    /// Read a msghdr and gather its iovecs (bounded by `MAX_COPY`).
    pub(crate) fn read_msghdr_data(&self, pid: u32, at: u64) -> Result<(MsgHdr, Vec<u8>), Errno> {
        let mut raw = [0u8; MSGHDR_LEN];
        self.kernel.read_memory(pid, at, &mut raw)?;
        let hdr = MsgHdr::parse(&raw);
        if hdr.iovlen > 1024 {
            return Err(Errno::EMSGSIZE);
        }
        let iov = tracee::read_bytes(&*self.kernel, pid, hdr.iov, hdr.iovlen as usize * 16)?;
        let mut parts = Vec::new();
        let mut total = 0u64;
        for (base, len) in wire::parse_iovecs(&iov) {
            total += len;
            if total > MAX_COPY as u64 {
                return Err(Errno::EMSGSIZE);
            }
            parts.push((base, len as usize));
        }
        let data = tracee::read_parts(&*self.kernel, pid, &parts)?;
        Ok((hdr, data))
    }

    /// Take the next datagram, waiting if the socket blocks. `Ok(None)`: given up
    /// (answer with [`Supervisor::give_up_reply`], timed when `SO_RCVTIMEO` is set).
    async fn take(
        &self,
        n: &Notification,
        vs: &VSocket<B>,
        d: &Dgram<B>,
        flags: i32,
        may_block: bool,
    ) -> Result<Option<Taken>, Errno> {
        let peek = flags & libc::MSG_PEEK != 0;
        let nonblocking =
            flags & libc::MSG_DONTWAIT != 0 || !may_block || self.program_nonblocking(n)?;
        let deadline = vs
            .timeout(libc::SO_RCVTIMEO)
            .map(|t| tokio::time::Instant::now() + t);
        // The program's end: our duplicate, or one taken for this call.
        let taken;
        let theirs = match &d.theirs {
            Some(held) => held.get_ref().as_raw_fd(),
            None => {
                // ENOENT: the number no longer names this socket (closed by another
                // thread meanwhile), which Linux reports as a bad descriptor.
                taken = self.program_end_of(n, d.ino).map_err(|e| {
                    if e == Errno::ENOENT {
                        Errno::EBADF
                    } else {
                        e
                    }
                })?;
                taken.as_raw_fd()
            }
        };
        loop {
            // The network's pending error comes before any datagram (__skb_recv_udp).
            if let Some(e) = d.take_error() {
                return Err(e);
            }
            let mut f = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC;
            if peek {
                f |= MsgFlags::MSG_PEEK;
            }
            // Registered before the attempt, so that a datagram written between a failed
            // attempt and the wait still wakes it.
            let arrived = d.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let got = with_scratch(|buf| {
                recv(theirs, buf, f)
                    .map(|full_len| (full_len, buf[..full_len.min(buf.len())].to_vec()))
            });
            match got {
                Ok((full_len, data)) => {
                    let arrival = if peek {
                        lock(&d.sources).front().copied()
                    } else {
                        lock(&d.sources).pop_front()
                    };
                    let from = arrival
                        .map(|a| a.from)
                        .or(d.peer())
                        .unwrap_or(vs.family.unspecified());
                    return Ok(Some(Taken {
                        data,
                        full_len,
                        from,
                        to: arrival.and_then(|a| a.to),
                        at: arrival.map(|a| a.at).unwrap_or_default(),
                    }));
                }
                Err(Errno::EAGAIN) if nonblocking => return Err(Errno::EAGAIN),
                Err(Errno::EAGAIN) => {
                    let expiry = async {
                        match deadline {
                            Some(t) => tokio::time::sleep_until(t).await,
                            None => std::future::pending().await,
                        }
                    };
                    let readable = async {
                        match &d.theirs {
                            Some(held) => {
                                if let Ok(mut g) = held.readable().await {
                                    g.clear_ready();
                                }
                            }
                            None => arrived.await,
                        }
                    };
                    tokio::select! {
                        _ = readable => {}
                        _ = d.errored.notified() => {}
                        _ = self.given_up(n) => return Ok(None),
                        _ = expiry => return Err(Errno::EAGAIN),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn udp_recvfrom(&self, n: &Notification, vs: &VSocket<B>, d: &Dgram<B>) -> Reply {
        let flags = n.args[3] as u32 as i32;
        let Some(t) = tri!(self.take(n, vs, d, flags, true).await) else {
            return self.give_up_reply(n, vs.timeout(libc::SO_RCVTIMEO).is_some());
        };
        let len = (n.args[2] as usize).min(t.data.len());
        if n.args[4] == 0 {
            tri!(self.kernel.write_memory(n.pid, n.args[1], &t.data[..len]));
        } else {
            // The data, the sender's name (as much as fits) and its full length, in one
            // go, as `write_with_len` would store the last two.
            let cap = tri!(tracee::len_capacity(&*self.kernel, n.pid, n.args[5]));
            let from = wire::emit_sockaddr(self.presented(vs, t.from));
            let fit = from.len().min(cap);
            let from_len = (from.len() as u32).to_ne_bytes();
            tri!(tracee::write_parts(
                &*self.kernel,
                n.pid,
                &[
                    (n.args[1], &t.data[..len]),
                    (n.args[4], &from[..fit]),
                    (n.args[5], &from_len),
                ]
            ));
        }
        value(if flags & libc::MSG_TRUNC != 0 {
            t.full_len
        } else {
            len
        } as i64)
    }

    /// Store one datagram through the msghdr at `at` (with its header and iovec array
    /// when they were read already); returns the byte count to report.
    fn store_msg(
        &self,
        n: &Notification,
        vs: &VSocket<B>,
        (at, header): (u64, Option<(MsgHdr, Vec<u8>)>),
        t: &Taken,
        flags: i32,
    ) -> Result<usize, Errno> {
        let (hdr, iov) = match header {
            Some(h) => h,
            None => self.read_recv_msghdr(n.pid, at)?,
        };
        // Everything to store, in the order Linux stores it, written in one go unless
        // control messages go with it: the data, the control messages, the sender's
        // name and its length, the control messages' length, the flags.
        let mut parts: Vec<(u64, &[u8])> = Vec::new();
        let mut done = 0usize;
        for (base, len) in wire::parse_iovecs(&iov) {
            if done >= t.data.len() {
                break;
            }
            let chunk = (len as usize).min(t.data.len() - done);
            parts.push((base, &t.data[done..done + chunk]));
            done += chunk;
        }
        // Control messages the program asked for; MSG_TRUNC when the datagram did not
        // fit, MSG_CTRUNC when a control message did not. No buffer is no room
        // (put_cmsg: MSG_CTRUNC, not EFAULT).
        let room = if hdr.control == 0 {
            0
        } else {
            usize::try_from(hdr.controllen).unwrap_or(usize::MAX)
        };
        let (control, ctrunc) = wire::emit_cmsgs(&self.control_messages(vs, t), room);
        let mut stored_control = control.len();
        if !control.is_empty() {
            // Linux copies the data, then each control message, and a control message
            // it cannot store is left out without an error (put_cmsg's EFAULT is not
            // the call's): the datagram arrives, and msg_controllen says 0.
            tracee::write_parts(&*self.kernel, n.pid, &parts)?;
            parts.clear();
            if tracee::write_parts(&*self.kernel, n.pid, &[(hdr.control, &control)]).is_err() {
                stored_control = 0;
            }
        }
        let from = wire::emit_sockaddr(self.presented(vs, t.from));
        let from_len = (from.len() as u32).to_ne_bytes();
        if hdr.name != 0 {
            let cap = (hdr.namelen as usize).min(from.len());
            parts.push((hdr.name, &from[..cap]));
            parts.push((at + 8, &from_len));
        }
        let control_len = (stored_control as u64).to_ne_bytes();
        parts.push((at + 40, &control_len));
        let mut out_flags = if done < t.full_len {
            libc::MSG_TRUNC
        } else {
            0
        };
        if ctrunc {
            out_flags |= libc::MSG_CTRUNC;
        }
        let out_flags = out_flags.to_ne_bytes();
        parts.push((at + 48, &out_flags));
        tracee::write_parts(&*self.kernel, n.pid, &parts)?;
        Ok(if flags & libc::MSG_TRUNC != 0 {
            t.full_len
        } else {
            done
        })
    }

    /// The control messages a received datagram carries, as the socket's options ask
    /// (ip(7), ipv6(7), socket(7)): `IP_PKTINFO`, `IPV6_PKTINFO` (`IPV6_RECVPKTINFO`),
    /// `SO_TIMESTAMP`, `SO_TIMESTAMPNS`. Others (`IP_RECVTTL`, `IP_RECVTOS`, ...) are not
    /// produced: the network does not tell us those values.
    fn control_messages(&self, vs: &VSocket<B>, t: &Taken) -> Vec<wire::Cmsg> {
        let on = |level, name| vs.option_int(level, name).unwrap_or(0) != 0;
        let mut out = Vec::new();
        let from = crate::backend::canonical(t.from.ip());
        if let Some(to) = t.to.map(crate::backend::canonical) {
            match (to, from) {
                (IpAddr::V4(to), IpAddr::V4(_)) if on(libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    out.push((
                        libc::IPPROTO_IP,
                        libc::IP_PKTINFO,
                        wire::emit_in_pktinfo(VIRTUAL_IFINDEX, to, to),
                    ));
                }
                _ => {}
            }
            if vs.family == crate::Family::V6 && on(libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO) {
                let to6 = match to {
                    IpAddr::V4(a) => a.to_ipv6_mapped(),
                    IpAddr::V6(a) => a,
                };
                out.push((
                    libc::IPPROTO_IPV6,
                    libc::IPV6_PKTINFO,
                    wire::emit_in6_pktinfo(to6, VIRTUAL_IFINDEX),
                ));
            }
        }
        if on(libc::SOL_SOCKET, libc::SO_TIMESTAMPNS) {
            out.push((
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                wire::emit_timestamp(t.at, true),
            ));
        } else if on(libc::SOL_SOCKET, libc::SO_TIMESTAMP) {
            out.push((
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMP,
                wire::emit_timestamp(t.at, false),
            ));
        }
        out
    }

    /// ___sys_recvmsg copies the header and its iovec array in before the socket is
    /// asked: a bad one faults with nothing taken from the queue. Returns both, which
    /// is what the datagram is then stored through (as on Linux, whatever the program
    /// writes there meanwhile).
    fn read_recv_msghdr(&self, pid: u32, at: u64) -> Result<(MsgHdr, Vec<u8>), Errno> {
        let mut raw = [0u8; MSGHDR_LEN];
        self.kernel.read_memory(pid, at, &mut raw)?;
        let hdr = MsgHdr::parse(&raw);
        if hdr.iovlen > 1024 {
            return Err(Errno::EMSGSIZE);
        }
        let iov = tracee::read_bytes(&*self.kernel, pid, hdr.iov, hdr.iovlen as usize * 16)?;
        Ok((hdr, iov))
    }

    async fn udp_recvmsg(&self, n: &Notification, vs: &VSocket<B>, d: &Dgram<B>) -> Reply {
        let flags = n.args[2] as u32 as i32;
        let header = tri!(self.read_recv_msghdr(n.pid, n.args[1]));
        let Some(t) = tri!(self.take(n, vs, d, flags, true).await) else {
            return self.give_up_reply(n, vs.timeout(libc::SO_RCVTIMEO).is_some());
        };
        value(tri!(self.store_msg(n, vs, (n.args[1], Some(header)), &t, flags)) as i64)
    }

    async fn udp_recvmmsg(&self, n: &Notification, vs: &VSocket<B>, d: &Dgram<B>) -> Reply {
        let vlen = (n.args[2] as u32).min(1024) as u64;
        let flags = n.args[3] as u32 as i32;
        // __sys_recvmmsg: the timeout is read and checked first; it is looked at after
        // each datagram (a wait for one is not cut short by it, as on Linux).
        let mut deadline = None;
        if n.args[4] != 0 {
            let mut ts = [0u8; 16];
            tri!(self.kernel.read_memory(n.pid, n.args[4], &mut ts));
            let sec = i64::from_ne_bytes(ts[..8].try_into().unwrap_or_default());
            let nsec = i64::from_ne_bytes(ts[8..].try_into().unwrap_or_default());
            if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
                return errno(Errno::EINVAL);
            }
            let span = std::time::Duration::new(sec as u64, nsec as u32);
            deadline = Some(tokio::time::Instant::now() + span);
        }
        // The first header is checked before anything is taken, and stored through.
        let mut first = if vlen > 0 {
            Some(tri!(self.read_recv_msghdr(n.pid, n.args[1])))
        } else {
            None
        };
        let mut count = 0u64;
        while count < vlen {
            // recvmmsg(2): every datagram may wait, except after the first one with
            // MSG_WAITFORONE.
            let may_block = count == 0 || flags & libc::MSG_WAITFORONE == 0;
            let t = match self
                .take(n, vs, d, flags & !libc::MSG_WAITFORONE, may_block)
                .await
            {
                Ok(Some(t)) => t,
                // recvmmsg(2): interrupted after a datagram, it returns what it has.
                Ok(None) if count > 0 => break,
                Ok(None) => return self.give_up_reply(n, vs.timeout(libc::SO_RCVTIMEO).is_some()),
                Err(e) if count == 0 => return errno(e),
                // do_recvmmsg: an error after some datagrams is kept for the next call.
                Err(e) => {
                    if reported_by_network(e) {
                        d.set_error(e);
                    }
                    break;
                }
            };
            let at = n.args[1] + count * MMSGHDR_LEN;
            let len = tri!(self.store_msg(n, vs, (at, first.take()), &t, flags));
            tri!(self.kernel.write_memory(
                n.pid,
                at + MSGHDR_LEN as u64,
                &(len as u32).to_ne_bytes()
            ));
            count += 1;
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                break;
            }
        }
        value(count as i64)
    }
}
