//! TCP on the virtual network: connect, listen, accept, and the pump between the
//! supervisor's socketpair end and a backend stream.
//!
//! Readiness the program's edge-triggered epoll can trust (DESIGN trap 5):
//!
//! - **Non-blocking connect.** The program's socket is replaced (`SETFD`, same fd number
//!   and flags) by the end of a fresh socketpair whose send path we first fill with junk
//!   from our own handle until `EAGAIN`, counting the bytes; then we drop that handle and
//!   answer `EINPROGRESS`. The program's end is not writable. When the handshake ends we
//!   record the outcome (so `SO_ERROR` and `getpeername` tell the truth) and only then
//!   discard exactly that many junk bytes from our end: the program's end becomes
//!   writable, a fresh `EPOLLOUT` edge.
//! - **Listeners.** At `listen()` the program's socket is replaced by the end of a fresh
//!   socketpair. One token byte is written into our end per waiting connection, so the
//!   program's end is readable exactly when a connection waits; the emulated `accept`
//!   consumes one token through a duplicate of the program's end taken for that call
//!   (`pidfd_getfd`). A connection taken by an `accept` whose notification then
//!   vanished goes back to the head of the queue with its token.
//!
//! Holding nothing of the program's end between calls, we see its close as a hang-up of
//! our end (idle.rs, `Supervisor::watch_held`), at once and without looking at the
//! program's descriptors. Where `pidfd_getfd` is denied (Docker's default profile) a
//! listener keeps a duplicate of the program's end from `listen()` on, which hides the
//! close; then a sweep every [`SWEEP`] checks whether any traced process still holds
//! the listener's inode (see `kernel::Kernel::holds`) and closes the virtual listener
//! when none does.
use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{recv, send, MsgFlags};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tracing::debug;

use crate::backend::{Backend, Connection, StreamTuning};
use crate::emulate::{
    errno, inode, socketpair, tri, value, Kind, Phase, Reply, Supervisor, VSocket,
};
use crate::kernel::{Kernel, Notification, Placement};
use crate::sys;
use crate::tracee;
use crate::wire;

/// How often sockets whose close raises no event are checked (idle.rs).
pub(crate) const SWEEP: Duration = Duration::from_secs(1);
/// How many times (2 ms apart) `listen` retries a port held by a listener it just closed.
const RELISTEN_TRIES: u32 = 100;
/// The first retries of such a `listen` only let the runtime run other tasks (a closed
/// listener's acceptor winding down) instead of sleeping 2 ms: every SYN for the port
/// meanwhile is refused, where Linux frees the port at the close.
const RELISTEN_YIELDS: u32 = 3;

/// A connection waiting for `accept`.
pub(crate) enum Pending<S> {
    /// From the virtual network: pumped through a socketpair.
    Virtual(Connection<S>),
    /// From the loopback half of a wildcard listener: a real kernel socket, handed to
    /// the program as is.
    Kernel { fd: OwnedFd, peer: SocketAddr },
}

/// The program's listeners on one address that share one backend listener: one, or
/// several that all set `SO_REUSEPORT` (socket(7)): incoming connections are spread over
/// them, and the port stays open while any of them does (a graceful reload opens the new
/// server's listener before closing the old one). Dropped with its last member, which
/// stops its acceptor and so frees the port.
pub(crate) struct PortGroup<B: Backend> {
    members: Mutex<Vec<std::sync::Weak<Listening<B>>>>,
    next: std::sync::atomic::AtomicUsize,
    /// Whether more listeners may join (the first one set SO_REUSEPORT).
    reuseport: bool,
    /// The address the backend listener is bound to.
    actual: SocketAddr,
    acceptor: Mutex<Option<AbortHandle>>,
}

impl<B: Backend> Drop for PortGroup<B> {
    fn drop(&mut self) {
        if let Some(a) = self
            .acceptor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            a.abort();
        }
    }
}

impl<B: Backend> PortGroup<B> {
    fn members(&self) -> std::sync::MutexGuard<'_, Vec<std::sync::Weak<Listening<B>>>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a live member has fewer than `room` connections waiting.
    fn has_room(&self, room: usize) -> bool {
        self.members()
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .any(|l| l.pending() < room)
    }

    /// The next live member (round robin) with fewer than `room` connections waiting.
    fn pick(&self, room: usize) -> Option<Arc<Listening<B>>> {
        let mut members = self.members();
        members.retain(|m| m.strong_count() > 0);
        let n = members.len();
        let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (0..n)
            .filter_map(|i| members[(start + i) % n].upgrade())
            .find(|l| l.pending() < room)
    }
}

/// A virtual listener's accept queue.
pub(crate) struct Listening<B: Backend> {
    pub(crate) local: SocketAddr,
    queue: Mutex<VecDeque<Pending<B::Stream>>>,
    arrived: Notify,
    /// Duplicate of the program's end, which consumes tokens, where the supervisor
    /// cannot take one at each accept (`Supervisor::may_grab`).
    tokens: Option<OwnedFd>,
    /// The listening socket, whose end (ours) writes tokens.
    owner: std::sync::OnceLock<std::sync::Weak<VSocket<B>>>,
    /// A wildcard listener's kernel listeners on loopback ("halves"), accepted from
    /// when the idle set reports them readable (idle.rs) and when `accept` makes room:
    /// no task of their own.
    halves: Mutex<Vec<OwnedFd>>,
    /// The program's backlog: connections queued beyond it wait in the kernel's queue
    /// of a half (or go unanswered on the network), as on Linux.
    backlog: usize,
    /// Resets the connections still queued when the listener goes.
    backend: Arc<B>,
    /// The listeners sharing its port (itself included): each member keeps the group,
    /// and so the backend listener, alive.
    _group: Arc<PortGroup<B>>,
}

impl<B: Backend> Drop for Listening<B> {
    /// The program closed the listener: connections it never accepted go to another
    /// listener on the port (SO_REUSEPORT) if there is one, or are reset, as Linux
    /// resets those in a closed listener's queue (dropping them would end them with a
    /// FIN, which their clients would read as a reply of zero bytes).
    fn drop(&mut self) {
        let queued: Vec<_> = self.queue().drain(..).collect();
        // Listeners sharing the port (SO_REUSEPORT) take over what this one never
        // accepted: it was routed here before its close was noticed.
        let mut queued = queued.into_iter();
        if let Some(heir) = self._group.pick(usize::MAX) {
            for p in queued.by_ref() {
                heir.queue().push_back(p);
                heir.add_token();
            }
            heir.arrived.notify_waiters();
        }
        for p in queued {
            match p {
                Pending::Virtual(c) => self.backend.stream_abort(&c.stream),
                Pending::Kernel { fd, .. } => {
                    // SO_LINGER zero: the kernel's close sends a RST.
                    let _ = sys::setsockopt_bytes(
                        fd.as_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        &sys::LINGER_ZERO,
                    );
                }
            }
        }
    }
}

impl<B: Backend> Listening<B> {
    /// One more connection waits: the program's end becomes (or stays) readable.
    fn add_token(&self) {
        if let Some(owner) = self.owner.get().and_then(std::sync::Weak::upgrade) {
            let _ = send(owner.ours.as_raw_fd(), &[0], MsgFlags::MSG_DONTWAIT);
        }
    }

    /// Does the listener hold a duplicate of the program's end?
    pub(crate) fn holds_program_end(&self) -> bool {
        self.tokens.is_some()
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Pending<B::Stream>>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Number of connections waiting for `accept`.
    pub(crate) fn pending(&self) -> usize {
        self.queue().len()
    }

    fn halves(&self) -> std::sync::MutexGuard<'_, Vec<OwnedFd>> {
        self.halves.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take the connections waiting on the loopback halves into the queue, up to the
    /// backlog.
    pub(crate) fn accept_halves(&self) {
        let mut took = false;
        for half in self.halves().iter() {
            while self.pending() < self.backlog {
                let flags = nix::sys::socket::SockFlag::SOCK_CLOEXEC;
                let fd = match nix::sys::socket::accept4(half.as_raw_fd(), flags) {
                    Ok(raw) => sys::own_accepted(raw),
                    Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
                    Err(Errno::EAGAIN) => break,
                    Err(e) => {
                        debug!(%e, "loopback accept failed");
                        break;
                    }
                };
                let peer = sys::socket_name(fd.as_fd(), sys::NameSide::Peer)
                    .ok()
                    .and_then(|b| peer_of(&b));
                if let Some(peer) = peer {
                    self.queue().push_back(Pending::Kernel { fd, peer });
                    self.add_token();
                    took = true;
                }
            }
        }
        if took {
            self.arrived.notify_waiters();
        }
    }
}

impl<K: Kernel, B: Backend> Supervisor<K, B> {
    /// A blocking connect the program stopped waiting for (`SO_SNDTIMEO` expired, or a
    /// signal interrupted it) goes on in the background, as on Linux: a later connect
    /// gets `EALREADY`, then the result (`EISCONN` or the error), and `SO_ERROR` tells a
    /// failure.
    fn finish_in_background(
        self: &Arc<Self>,
        ino: u64,
        vs: &Arc<VSocket<B>>,
        dest: SocketAddr,
        attempt: tokio::task::JoinHandle<Result<crate::backend::Connection<B::Stream>, Errno>>,
    ) {
        let me = self.clone();
        let vs = vs.clone();
        tokio::spawn(async move {
            match attempt.await.unwrap_or(Err(Errno::ECONNABORTED)) {
                Ok(conn) => {
                    vs.set_phase(Phase::Connected {
                        local: conn.local,
                        peer: conn.peer,
                        confirmed: false,
                    });
                    me.pump(ino, vs, conn.stream);
                }
                Err(e) => {
                    debug!(%dest, %e, "virtual connect failed in the background");
                    vs.set_phase(Phase::Failed(e));
                    me.watch(ino, vs);
                }
            }
        });
    }

    pub(crate) async fn connect_virtual(
        self: &Arc<Self>,
        n: &Notification,
        ino: u64,
        vs: &Arc<VSocket<B>>,
        dest: SocketAddr,
    ) -> Reply {
        let nonblocking = tri!(self.program_nonblocking(n));
        // A socket the program bound first connects from that address and port.
        let local = match &*vs.phase() {
            Phase::VirtualBound(a) => Some(*a),
            _ => None,
        };
        if !nonblocking {
            vs.set_phase(Phase::Connecting);
            let me = self.clone();
            let mut attempt =
                tokio::spawn(async move { me.backend.tcp_connect(local, dest).await });
            let limit = vs.timeout(libc::SO_SNDTIMEO);
            let expired = async move {
                match limit {
                    Some(t) => tokio::time::sleep(t).await,
                    None => std::future::pending().await,
                }
            };
            let result = tokio::select! {
                r = &mut attempt => r.unwrap_or(Err(Errno::ECONNABORTED)),
                _ = self.given_up(n) => {
                    if !self.kernel.id_valid(n.id) {
                        attempt.abort();
                        vs.set_phase(Phase::Fresh);
                        return Reply::Done;
                    }
                    // Interrupted by a signal: Linux goes on connecting in the background
                    // (a restarted connect waits for it, a later one gets EALREADY).
                    self.finish_in_background(ino, vs, dest, attempt);
                    return self.give_up_reply(n, limit.is_some());
                }
                // SO_SNDTIMEO bounds a blocking connect: Linux then answers EINPROGRESS
                // and goes on connecting in the background (socket(7)); a later connect
                // gets EALREADY, then EISCONN, and SO_ERROR tells a failure.
                () = expired => {
                    self.finish_in_background(ino, vs, dest, attempt);
                    return errno(Errno::EINPROGRESS);
                }
            };
            return match result {
                Ok(conn) => {
                    vs.set_phase(Phase::Connected {
                        local: conn.local,
                        peer: conn.peer,
                        confirmed: true,
                    });
                    self.pump(ino, vs.clone(), conn.stream);
                    value(0)
                }
                Err(e) => {
                    vs.set_phase(Phase::Fresh);
                    errno(e)
                }
            };
        }

        // Non-blocking, with the program's end still at hand (held since socket()): make
        // that very end unwritable until the handshake ends, so an epoll registration
        // made before connect keeps working.
        let theirs = vs.take_program_end().or_else(|| {
            self.program_end_of(n, ino)
                .inspect_err(|e| debug!(%e, "the program's end cannot be taken: replaced"))
                .ok()
        });
        if let Some(theirs) = theirs {
            return self.connect_in_place(ino, vs, theirs, (local, dest));
        }
        // Otherwise a fresh pair whose program end is not writable until the handshake
        // ends replaces the program's socket.
        let (theirs, ours) = tri!(socketpair(Kind::Stream, true));
        // A minimal send buffer while connecting keeps the junk small (a few KiB rather
        // than ~200 KiB per connection); the default comes back before the edge.
        let mut sndbuf = [0u8; 4];
        tri!(sys::getsockopt_bytes(
            theirs.as_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            &mut sndbuf
        ));
        tri!(sys::setsockopt_bytes(
            theirs.as_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            &1i32.to_ne_bytes()
        ));
        let junk = tri!(fill(&theirs));
        let new_ino = tri!(inode(theirs.as_fd()));
        let next = Arc::new(vs.successor(ours, Phase::Connecting));
        self.table().insert(new_ino, next.clone());
        vs.apply_timeouts(theirs.as_fd());
        if let Err(e) = self.swap_in(n, (ino, vs), theirs.as_fd()) {
            self.table().remove(&new_ino);
            return if e == Errno::ENOENT {
                Reply::Done
            } else {
                errno(e)
            };
        }
        let me = self.clone();
        tokio::spawn(async move {
            let result = me.backend.tcp_connect(local, dest).await;
            let stream = match result {
                Ok(conn) => {
                    next.set_phase(Phase::Connected {
                        local: conn.local,
                        peer: conn.peer,
                        confirmed: false,
                    });
                    Some(conn.stream)
                }
                Err(e) => {
                    debug!(%dest, %e, "virtual connect failed");
                    next.set_phase(Phase::Failed(e));
                    None
                }
            };
            // The truth is recorded: restore the buffer (the kernel doubles what we set)
            // and give the program its writable edge.
            let half = i32::from_ne_bytes(sndbuf) / 2;
            let _ = sys::setsockopt_bytes(
                theirs.as_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                &half.to_ne_bytes(),
            );
            drop(theirs);
            drain(&next.ours, junk).await;
            match stream {
                Some(s) => me.pump(new_ino, next, s),
                None => me.watch(new_ino, next),
            }
        });
        errno(Errno::EINPROGRESS)
    }

    /// Non-blocking connect on the program's own end `theirs` (a duplicate we held since
    /// `socket()`): junk fills its send path (after shrinking its send buffer), we
    /// answer `EINPROGRESS`, and when the handshake ends we record the outcome, restore
    /// the buffer, drop `theirs` and discard exactly the junk: a fresh `EPOLLOUT` edge.
    fn connect_in_place(
        self: &Arc<Self>,
        ino: u64,
        vs: &Arc<VSocket<B>>,
        theirs: OwnedFd,
        (local, dest): (Option<SocketAddr>, SocketAddr),
    ) -> Reply {
        let mut sndbuf = [0u8; 4];
        tri!(sys::getsockopt_bytes(
            theirs.as_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            &mut sndbuf
        ));
        // Connecting first: the idle watcher must not take the junk for program data.
        vs.set_phase(Phase::Connecting);
        let junk = match sys::setsockopt_bytes(
            theirs.as_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            &1i32.to_ne_bytes(),
        )
        .and_then(|()| fill(&theirs))
        {
            Ok(junk) => junk,
            Err(e) => {
                vs.set_phase(Phase::Fresh);
                return errno(e);
            }
        };
        let me = self.clone();
        let vs = vs.clone();
        tokio::spawn(async move {
            let stream = match me.backend.tcp_connect(local, dest).await {
                Ok(conn) => {
                    vs.set_phase(Phase::Connected {
                        local: conn.local,
                        peer: conn.peer,
                        confirmed: false,
                    });
                    Some(conn.stream)
                }
                Err(e) => {
                    debug!(%dest, %e, "virtual connect failed");
                    vs.set_phase(Phase::Failed(e));
                    None
                }
            };
            let half = i32::from_ne_bytes(sndbuf) / 2;
            let _ = sys::setsockopt_bytes(
                theirs.as_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                &half.to_ne_bytes(),
            );
            drop(theirs);
            drain(&vs.ours, junk).await;
            match stream {
                Some(s) => me.pump(ino, vs, s),
                None => me.watch(ino, vs),
            }
        });
        errno(Errno::EINPROGRESS)
    }

    pub(crate) async fn listen_virtual(
        self: &Arc<Self>,
        n: &Notification,
        ino: u64,
        vs: &Arc<VSocket<B>>,
        local: SocketAddr,
        backlog: usize,
    ) -> Reply {
        let v6only = vs
            .option_int(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)
            .unwrap_or(0)
            != 0;
        let reuseport = vs
            .option_int(libc::SOL_SOCKET, libc::SO_REUSEPORT)
            .is_some_and(|v| v != 0);
        // SO_REUSEPORT on both: join the listeners already on this address.
        let joined = if reuseport && local.port() != 0 {
            self.port_groups()
                .get(&local)
                .and_then(std::sync::Weak::upgrade)
                .filter(|g| g.reuseport)
        } else {
            None
        };
        if let Some(group) = joined {
            let actual = group.actual;
            return self.listen_in_group(n, ino, vs, (local, actual), backlog, group);
        }
        // A listener the program closed a moment ago still holds its port until the
        // sweep notices (we hold a duplicate of its end). Linux frees the port at close,
        // and servers that re-listen at once rely on it (iperf3 after every test): on
        // EADDRINUSE, close our listeners on that port that no process holds any more and
        // try again while their tasks wind down.
        let mut tries = 0;
        let (listener, actual) = loop {
            match self.backend.tcp_listen(local, backlog, v6only) {
                Ok(x) => break x,
                // The holder may be a listener closed at `bind` (close_stale_listeners)
                // whose tasks are still winding down: wait for them, briefly.
                Err(Errno::EADDRINUSE) if local.port() != 0 && tries < RELISTEN_TRIES => {
                    self.close_stale_listeners(local.port());
                    tries += 1;
                    if tries <= RELISTEN_YIELDS {
                        // An acceptor aborted a moment ago frees the port when the
                        // runtime next runs it: usually before this task runs again.
                        tokio::task::yield_now().await;
                    } else {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
                Err(e) => return errno(e),
            }
        };
        let group = Arc::new(PortGroup::<B> {
            members: Mutex::new(Vec::new()),
            next: std::sync::atomic::AtomicUsize::new(0),
            reuseport,
            actual,
            acceptor: Mutex::new(None),
        });
        // Accept from the backend while a member's queue has room; one token per
        // connection. The group owns this task: it ends with the group's last member.
        let weak = Arc::downgrade(&group);
        let backend = self.backend.clone();
        let acceptor = tokio::spawn(async move {
            loop {
                let Some(g) = weak.upgrade() else { return };
                if !g.has_room(backlog) {
                    drop(g);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                drop(g);
                let conn = backend.tcp_accept(&listener).await;
                let Some(l) = weak.upgrade().and_then(|g| g.pick(usize::MAX)) else {
                    return;
                };
                match conn {
                    Ok(c) => {
                        l.queue().push_back(Pending::Virtual(c));
                        l.add_token();
                        l.arrived.notify_waiters();
                    }
                    Err(e) => {
                        debug!(%e, "virtual accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
        *group.acceptor.lock().unwrap_or_else(|e| e.into_inner()) = Some(acceptor.abort_handle());
        if reuseport {
            let mut groups = self.port_groups();
            groups.retain(|_, g| g.strong_count() > 0);
            groups.insert(
                SocketAddr::new(local.ip(), actual.port()),
                Arc::downgrade(&group),
            );
        }
        self.listen_in_group(n, ino, vs, (local, actual), backlog, group)
    }

    /// Give the program a listener served by `group`'s backend listener: `local` as asked
    /// for, `actual` as the backend bound it.
    fn listen_in_group(
        self: &Arc<Self>,
        n: &Notification,
        ino: u64,
        vs: &Arc<VSocket<B>>,
        (local, actual): (SocketAddr, SocketAddr),
        backlog: usize,
        group: Arc<PortGroup<B>>,
    ) -> Reply {
        let (theirs, ours) = tri!(socketpair(Kind::Stream, false));
        let tokens = if self.may_grab(n, n.args[0] as u32 as i32, ino) {
            None
        } else {
            Some(tri!(theirs.try_clone().map_err(|_| Errno::EMFILE)))
        };
        let new_ino = tri!(inode(theirs.as_fd()));
        let listening = Arc::new(Listening::<B> {
            local: actual,
            queue: Mutex::new(VecDeque::new()),
            arrived: Notify::new(),
            tokens,
            owner: std::sync::OnceLock::new(),
            halves: Mutex::new(Vec::new()),
            backlog,
            backend: self.backend.clone(),
            _group: group.clone(),
        });
        group.members().push(Arc::downgrade(&listening));
        drop(group);
        let next = Arc::new(vs.successor(ours, Phase::Listening(listening.clone())));
        let _ = listening.owner.set(Arc::downgrade(&next));
        self.table().insert(new_ino, next.clone());
        vs.apply_timeouts(theirs.as_fd());
        if let Err(e) = self.swap_in(n, (ino, vs), theirs.as_fd()) {
            self.table().remove(&new_ino);
            return if e == Errno::ENOENT {
                Reply::Done
            } else {
                errno(e)
            };
        }
        drop(theirs);
        // The replaced socket holds no address any more (its end closes with the swap).
        vs.set_phase(Phase::Fresh);
        debug!(%actual, "virtual listener");
        // A wildcard listener also listens on loopback, like a kernel socket would.
        if crate::backend::canonical(local.ip()).is_unspecified() {
            for fd in self.loopback_half(vs, actual.port(), backlog) {
                self.watch_half(&listening, fd.as_fd());
                listening.halves().push(fd);
            }
        }
        // Close detection: see the module documentation.
        self.watch_held(new_ino, &next);
        value(0)
    }

    /// Close our virtual listeners on `port` that no traced process holds any more;
    /// returns whether there was any. Their loopback halves are closed at once; the
    /// virtual port is free once the group's acceptor task, which owns the backend
    /// listener, winds down.
    pub(crate) fn close_stale_listeners(&self, port: u16) -> bool {
        type Candidate<B> = (u64, Arc<VSocket<B>>, Arc<Listening<B>>);
        let candidates: Vec<Candidate<B>> = self
            .table()
            .iter()
            .filter_map(|(ino, vs)| match &*vs.phase() {
                Phase::Listening(l) if l.local.port() == port => {
                    Some((*ino, vs.clone(), l.clone()))
                }
                _ => None,
            })
            .collect();
        let mut closed = false;
        for (ino, vs, l) in candidates {
            if !self.held_by_program(ino) {
                self.forget(ino, &vs);
                // The loopback port is free at once (the backend listener goes with
                // the last member of its group).
                l.halves().clear();
                closed = true;
            }
        }
        closed
    }

    /// The kernel listener on loopback for the wildcard `port`. A failure (port taken)
    /// leaves only the virtual half, said once in the log.
    fn loopback_half(&self, vs: &VSocket<B>, port: u16, backlog: usize) -> Vec<OwnedFd> {
        use nix::sys::socket::{self as sock, AddressFamily, SockFlag, SockType};
        // Kernel sockets of the program's family on loopback, confined to the loopback
        // device: 127.0.0.1 for IPv4; ::1 for IPv6, and for a dual-stack one also
        // ::ffff:127.0.0.1, so IPv4 clients get connections with v4-mapped names, as a
        // native `::` listener gives them. (Specific addresses, not the wildcard: they
        // leave the rest of the port to other loopback services, as before.)
        let v6only = vs
            .option_int(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)
            .unwrap_or(0)
            != 0;
        let mapped = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped(), port));
        let places = match vs.family {
            crate::Family::V4 => vec![(AddressFamily::Inet, vs.family.loopback(port), false)],
            crate::Family::V6 if v6only => {
                vec![(AddressFamily::Inet6, vs.family.loopback(port), true)]
            }
            crate::Family::V6 => vec![
                (AddressFamily::Inet6, vs.family.loopback(port), true),
                (AddressFamily::Inet6, mapped, false),
            ],
        };
        let mut out = Vec::new();
        for (family, addr, v6only) in places {
            let made = sock::socket(
                family,
                SockType::Stream,
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                None,
            )
            .and_then(|fd| {
                let one = 1i32.to_ne_bytes();
                crate::sys::setsockopt_bytes(
                    fd.as_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_REUSEADDR,
                    &one,
                )?;
                if family == AddressFamily::Inet6 {
                    crate::sys::setsockopt_bytes(
                        fd.as_fd(),
                        libc::IPPROTO_IPV6,
                        libc::IPV6_V6ONLY,
                        &i32::from(v6only).to_ne_bytes(),
                    )?;
                }
                crate::emulate::confine_to_loopback(fd.as_fd())?;
                if vs
                    .option_int(libc::SOL_SOCKET, libc::SO_REUSEPORT)
                    .is_some_and(|v| v != 0)
                {
                    crate::sys::setsockopt_bytes(
                        fd.as_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_REUSEPORT,
                        &one,
                    )?;
                }
                crate::sys::connect_bytes(fd.as_fd(), &wire::emit_sockaddr(addr), true)?;
                let backlog =
                    sock::Backlog::new(backlog.min(4096) as i32).unwrap_or(sock::Backlog::MAXCONN);
                sock::listen(&fd, backlog)?;
                Ok(fd)
            });
            match made {
                Ok(fd) => out.push(fd),
                // No ::1 at all (IPv6 off, as in Docker's default networks): nothing
                // could have reached it natively either.
                Err(Errno::EADDRNOTAVAIL) => {
                    tracing::debug!(%addr, "no loopback half: the address does not exist here")
                }
                Err(e) => {
                    tracing::warn!(%addr, %e, "wildcard listener serves the virtual network only: loopback half unavailable")
                }
            }
        }
        out
    }

    /// Does any process we have seen still hold socket inode `ino`?
    /// Every socket inode the traced processes hold (`None`: the kernel cannot list
    /// them). Threads that are gone leave the set of those seen.
    pub(crate) fn held_sockets(&self) -> Option<HashSet<u64>> {
        let pids: Vec<u32> = self.seen().iter().copied().collect();
        let mut gone = HashSet::new();
        let mut all = HashSet::new();
        // Threads of one process share a table: one listing per process would do, but
        // a thread id is what notifications carry, and a gone one lists nothing.
        for pid in pids {
            match self.kernel.held_sockets(pid) {
                Some(s) => all.extend(s),
                None if self.kernel.holds(pid, 0).is_none() => {
                    gone.insert(pid);
                }
                None => return None,
            }
        }
        self.seen().retain(|p| !gone.contains(p));
        Some(all)
    }

    /// Does the program still hold `ino`? For the periodic close checks of sockets
    /// that raise no event: answered from one listing of the program's descriptors
    /// shared by all checks within half a sweep, and confirmed by a scan of its own
    /// before a socket is called closed (a socket made after the listing is not in it).
    pub(crate) fn still_held(&self, ino: u64) -> bool {
        let listed = {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            let fresh = held
                .as_ref()
                .is_some_and(|(at, _)| at.elapsed() < SWEEP / 2);
            if !fresh {
                *held = Some((std::time::Instant::now(), self.held_sockets()));
            }
            held.as_ref()
                .and_then(|(_, set)| set.as_ref())
                .map(|set| set.contains(&ino))
        };
        listed == Some(true) || self.held_by_program(ino)
    }

    /// Does the program's end of `ino` still exist, held by any process? For a socket
    /// whose end we hold no copy of: one question to the kernel (diag.rs) where it can
    /// answer, else a listing of the traced processes' descriptors.
    pub(crate) fn end_exists(&self, ino: u64) -> bool {
        self.diag
            .exists(ino)
            .unwrap_or_else(|| self.held_by_program(ino))
    }

    pub(crate) fn held_by_program(&self, ino: u64) -> bool {
        let pids: Vec<u32> = self.seen().iter().copied().collect();
        let mut gone = HashSet::new();
        let mut held = false;
        for pid in pids {
            match self.kernel.holds(pid, ino) {
                Some(true) => held = true,
                Some(false) => {}
                None => {
                    gone.insert(pid);
                }
            }
        }
        self.seen().retain(|p| !gone.contains(p));
        held
    }

    pub(crate) async fn accept_virtual(
        self: &Arc<Self>,
        n: &Notification,
        (ino, vs): (u64, &Arc<VSocket<B>>),
        l: Arc<Listening<B>>,
    ) -> Reply {
        let flags = if n.nr == libc::SYS_accept4 {
            n.args[3] as u32 as i32
        } else {
            0
        };
        if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 {
            return errno(Errno::EINVAL);
        }
        // accept(2) honours SO_RCVTIMEO: EAGAIN when it expires.
        let deadline = vs
            .timeout(libc::SO_RCVTIMEO)
            .map(|t| tokio::time::Instant::now() + t);
        loop {
            let arrived = l.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let (next, was_full) = {
                let mut q = l.queue();
                let full = q.len() >= l.backlog;
                (q.pop_front(), full)
            };
            if was_full {
                // Room again: connections waiting on a loopback half come in.
                l.accept_halves();
            }
            if let Some(conn) = next {
                let mut one = [0u8; 1];
                match &l.tokens {
                    Some(tokens) => {
                        let _ = recv(tokens.as_raw_fd(), &mut one, MsgFlags::MSG_DONTWAIT);
                    }
                    None => match self.program_end_of(n, ino) {
                        Ok(theirs) => {
                            let _ = recv(theirs.as_raw_fd(), &mut one, MsgFlags::MSG_DONTWAIT);
                        }
                        // Closed by another thread meanwhile: its tokens went with it.
                        Err(e) => debug!(%e, "no token taken at accept"),
                    },
                }
                return self.deliver(n, vs, &l, conn, flags);
            }
            if tri!(self.program_nonblocking(n)) {
                return errno(Errno::EAGAIN);
            }
            let expiry = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = arrived => {}
                _ = self.given_up(n) => return self.give_up_reply(n, deadline.is_some()),
                _ = expiry => return errno(Errno::EAGAIN),
            }
        }
    }

    /// Hand one accepted connection to the program, or put it back.
    fn deliver(
        self: &Arc<Self>,
        n: &Notification,
        vs: &Arc<VSocket<B>>,
        l: &Arc<Listening<B>>,
        pending: Pending<B::Stream>,
        flags: i32,
    ) -> Reply {
        let put_back = |p| {
            l.queue().push_front(p);
            l.add_token();
            l.arrived.notify_waiters();
        };
        let conn = match pending {
            Pending::Virtual(c) => c,
            Pending::Kernel { fd, peer } => {
                if let Err(e) =
                    crate::emulate::set_nonblocking(fd.as_fd(), flags & libc::SOCK_NONBLOCK != 0)
                {
                    return errno(e);
                }
                vs.apply_timeouts(fd.as_fd());
                if n.args[1] != 0 {
                    let bytes = wire::emit_sockaddr(self.presented(vs, peer));
                    if let Err(e) = tracee::write_with_len(
                        &*self.kernel,
                        n.pid,
                        n.args[1],
                        n.args[2],
                        &bytes,
                        true,
                    ) {
                        put_back(Pending::Kernel { fd, peer });
                        return errno(e);
                    }
                }
                let how = Placement::AnswerWithNew {
                    cloexec: flags & libc::SOCK_CLOEXEC != 0,
                };
                return match self.kernel.add_fd(n.id, fd.as_fd(), how) {
                    Ok(_) => Reply::Done,
                    Err(e) => {
                        put_back(Pending::Kernel { fd, peer });
                        if e == Errno::ENOENT {
                            Reply::Done
                        } else {
                            errno(e)
                        }
                    }
                };
            }
        };
        let made = socketpair(Kind::Stream, flags & libc::SOCK_NONBLOCK != 0)
            .and_then(|(t, o)| Ok((inode(t.as_fd())?, t, o)));
        let (ino, theirs, ours) = match made {
            Ok(x) => x,
            Err(e) => {
                put_back(Pending::Virtual(conn));
                return errno(e);
            }
        };
        if n.args[1] != 0 {
            let peer = wire::emit_sockaddr(self.presented(vs, conn.peer));
            if let Err(e) =
                tracee::write_with_len(&*self.kernel, n.pid, n.args[1], n.args[2], &peer, true)
            {
                put_back(Pending::Virtual(conn));
                return errno(e);
            }
        }
        let accepted = Arc::new(vs.successor(
            ours,
            Phase::Connected {
                local: conn.local,
                peer: conn.peer,
                confirmed: true,
            },
        ));
        accepted.apply_timeouts(theirs.as_fd());
        self.table().insert(ino, accepted.clone());
        let how = Placement::AnswerWithNew {
            cloexec: flags & libc::SOCK_CLOEXEC != 0,
        };
        match self.kernel.add_fd(n.id, theirs.as_fd(), how) {
            Ok(_) => {
                self.pump(ino, accepted, conn.stream);
                Reply::Done
            }
            Err(e) => {
                self.table().remove(&ino);
                put_back(Pending::Virtual(conn));
                if e == Errno::ENOENT {
                    Reply::Done
                } else {
                    errno(e)
                }
            }
        }
    }

    /// Move bytes both ways between our end of `vs` and `stream` until both directions
    /// are closed, then wait for the program to close its end and forget the socket.
    pub(crate) fn pump(self: &Arc<Self>, ino: u64, vs: Arc<VSocket<B>>, stream: B::Stream) {
        // The program's close must reach our end as a hang-up from now on.
        drop(vs.take_program_end());
        // Our end itself, not a duplicate: one descriptor per connection.
        let Ok(end) = sys::async_end(vs.clone()) else {
            return;
        };
        let me = Arc::downgrade(self);
        let shared = Arc::new(Mutex::new(stream));
        {
            let mut pumped = self.pumped();
            pumped.retain(|w| w.strong_count() > 0);
            pumped.push(Arc::downgrade(&shared));
        }
        // Options set before the connection was made (or on the listener) apply now;
        // later ones through the socket's link to the stream.
        vs.set_stream(Arc::downgrade(&shared));
        let tuning = vs.tuning();
        if tuning != StreamTuning::default() {
            self.backend.stream_tune(&lock_stream(&shared), tuning);
        }
        let backend = self.backend.clone();
        tokio::spawn(async move {
            let mut stream = Shared {
                stream: shared.clone(),
                failed: false,
                closed: B::poll_stream_closed,
            };
            let mut ours = OurEnd { end, writer: None };
            let reset = match crate::copy::bidirectional(&mut ours, &mut stream).await {
                Ok((up, down)) => {
                    debug!(ino, up, down, "stream finished");
                    false
                }
                Err(e) if stream.failed => {
                    // Reset (or timed out) on the network. Linux gives the program what
                    // arrived, then ECONNRESET: an AF_UNIX end reads that once its peer
                    // is closed with data unread, so we close ours with data unread.
                    debug!(ino, %e, "connection failed on the network");
                    if let Some(sup) = me.upgrade().filter(|s| s.unread_for_reset(ino, &vs)) {
                        drop(ours);
                        sup.forget(ino, &vs);
                        // Our end closes when `vs` goes, with this task.
                        return;
                    }
                    // Without a way to do so (pidfd_getfd denied): end of file.
                    vs.shut_down_while_held();
                    let _ = nix::sys::socket::shutdown(
                        vs.ours.as_raw_fd(),
                        nix::sys::socket::Shutdown::Both,
                    );
                    true
                }
                Err(e) => {
                    // The program closed its socket with data unread (our end reads
                    // ECONNRESET) or data arrived after its close (EPIPE): Linux answers
                    // both with a RST. Errors from the network side (a reset, a timeout)
                    // have closed the stream already, and resetting it again is a no-op.
                    debug!(ino, %e, "stream failed");
                    let _ = nix::sys::socket::shutdown(
                        vs.ours.as_raw_fd(),
                        nix::sys::socket::Shutdown::Both,
                    );
                    true
                }
            };
            drop(ours);
            if reset {
                backend.stream_abort(&lock_stream(&shared));
            } else {
                let _ = stream.shutdown().await;
            }
            // Let the network deliver the tail before the stream goes (bounded), as the
            // kernel keeps sending after close.
            let until = tokio::time::Instant::now() + LINGER;
            while !backend.stream_settled(&lock_stream(&shared))
                && tokio::time::Instant::now() < until
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            drop(stream);
            drop(shared);
            // Keep answering for the socket until the program closes its end. Our end
            // also hangs up when both directions are merely shut down (the program's
            // SHUT_WR and ours): the program may still ask for its names, options or
            // shut it down again, so after a shutdown a hang-up is checked against the
            // kernel's table of sockets (we hold no copy of the program's end now).
            // Without one it is the close: the check cost a walk of the host's whole
            // table of unix sockets per connection.
            loop {
                if hung_up(&vs.ours)
                    && (vs.hang_up_is_close() || me.upgrade().is_none_or(|s| !s.end_exists(ino)))
                {
                    break;
                }
                tokio::time::sleep(SWEEP).await;
            }
            if let Some(me) = me.upgrade() {
                me.forget(ino, &vs);
            }
        });
    }
}

impl<K: Kernel, B: Backend> Supervisor<K, B> {
    /// Make sure our end of `vs` (inode `ino`) holds unread data, so that closing it
    /// makes the program's end read `ECONNRESET` once the data before it is read. When
    /// it holds none, one byte is written into it from a duplicate of the program's end
    /// (`pidfd_getfd`, checked to be that socket). Returns false when that is not
    /// possible (denied, or the program no longer holds the socket).
    fn unread_for_reset(&self, ino: u64, vs: &VSocket<B>) -> bool {
        if sys::unread(vs.ours.as_fd()).unwrap_or(0) > 0 {
            return true;
        }
        let pids: Vec<u32> = self.seen().iter().copied().collect();
        for pid in pids {
            match self.kernel.grab(pid, ino) {
                Ok(theirs) => {
                    let sent = send(
                        theirs.as_raw_fd(),
                        &[0],
                        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                    );
                    return sent == Ok(1);
                }
                Err(Errno::ENOENT | Errno::ESRCH) => {}
                Err(e) => {
                    debug!(%e, "a reset from the network reaches the program as end of file");
                    return false;
                }
            }
        }
        false
    }
}

/// Did the program set `SO_LINGER` on with a zero timeout (`struct linger {1, 0}`)?
fn linger_zero<B: Backend>(vs: &VSocket<B>) -> bool {
    vs.option_bytes(libc::SOL_SOCKET, libc::SO_LINGER)
        .is_some_and(|v| v.len() >= 8 && v[..4] != [0; 4] && v[4..8] == [0; 4])
}

/// Our end of a pumped TCP socket as a byte stream, driven through the socket's own
/// descriptor, registered for reading only; for writing, a duplicate is registered only
/// while the program lets the end fill up (`writer`, see [`sys::async_end`]).
struct OurEnd<B: Backend> {
    end: tokio::io::unix::AsyncFd<sys::EndFd<B>>,
    /// A duplicate of our end registered for writability, made when a write found the
    /// end full, with the writes since it was last found full; dropped after
    /// [`WRITES_TO_DROP_WRITER`] of them.
    writer: Option<(tokio::io::unix::AsyncFd<OwnedFd>, u32)>,
}

/// Writes in a row that found room after which the writability registration goes (a
/// bulk transfer to a slow reader keeps it; a burst that filled the end once does not
/// keep waking the runtime at every read of the program).
const WRITES_TO_DROP_WRITER: u32 = 16;

impl<B: Backend> tokio::io::AsyncRead for OurEnd<B> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        loop {
            let mut guard = std::task::ready!(self.end.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let wanted = unfilled.len();
            let got = guard.try_io(|fd| {
                recv(fd.as_raw_fd(), unfilled, MsgFlags::MSG_DONTWAIT).map_err(Into::into)
            });
            // Less than asked for: the program's end had nothing more queued (a stream
            // read stops early only at an empty queue; our end never asks for the
            // writers' credentials, which would also split it), so the next read would
            // answer EAGAIN. New data signals the edge-triggered registration anew; an
            // end of file stays signalled.
            if matches!(got, Ok(Ok(n)) if n > 0 && n < wanted) {
                guard.clear_ready();
            }
            match got {
                // The program closed (not just shut down) a socket with SO_LINGER zero:
                // a reset, not an orderly end.
                Ok(Ok(0))
                    if linger_zero(&self.end.get_ref().0)
                        && hung_up(&self.end.get_ref().0.ours) =>
                {
                    return std::task::Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()));
                }
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return std::task::Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return std::task::Poll::Ready(Err(e)),
                Err(_would_block) => {}
            }
        }
    }
}

impl<B: Backend> tokio::io::AsyncWrite for OurEnd<B> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let fd = self.end.as_raw_fd();
        let write =
            || send(fd, data, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL).map_err(Into::into);
        loop {
            let this = &mut *self;
            if let Some((writer, clear)) = &mut this.writer {
                let mut guard = std::task::ready!(writer.poll_write_ready(cx))?;
                match guard.try_io(|_| write()) {
                    Ok(result) => {
                        *clear += 1;
                        if *clear >= WRITES_TO_DROP_WRITER {
                            this.writer = None;
                        }
                        return std::task::Poll::Ready(result);
                    }
                    Err(_would_block) => {
                        *clear = 0;
                        continue;
                    }
                }
            }
            match write() {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // Full: wait for the program to read, registered for that now (the
                    // registration reports an end that became writable meanwhile).
                    let dup = this.end.get_ref().0.ours.try_clone()?;
                    this.writer = Some((sys::async_fd(dup, tokio::io::Interest::WRITABLE)?, 0));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                result => return std::task::Poll::Ready(result),
            }
        }
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let r = nix::sys::socket::shutdown(self.end.as_raw_fd(), nix::sys::socket::Shutdown::Write);
        std::task::Poll::Ready(r.map_err(Into::into))
    }
}

/// How long, at most, the supervisor keeps a finished stream (and, when the program is
/// gone, itself) alive so the network can deliver what the program sent last.
pub(crate) const LINGER: Duration = Duration::from_secs(3);

fn lock_stream<S>(m: &Mutex<S>) -> std::sync::MutexGuard<'_, S> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A pumped backend stream shared with [`Supervisor::linger`], which asks the network
/// whether it has delivered everything; each poll locks it briefly. Remembers whether the
/// stream itself failed (a reset or timeout on the network), as opposed to our end.
struct Shared<S> {
    stream: Arc<Mutex<S>>,
    failed: bool,
    /// [`Backend::poll_stream_closed`] for `S`.
    closed: fn(&S, &mut std::task::Context<'_>) -> Poll<()>,
}

impl<S> crate::copy::SendClosed for Shared<S> {
    fn poll_send_closed(&mut self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let r = (self.closed)(&lock_stream(&self.stream), cx);
        if r.is_ready() {
            self.failed = true;
        }
        r
    }
}

impl<S> Shared<S> {
    fn note<T>(&mut self, r: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if let Poll::Ready(Err(_)) = &r {
            self.failed = true;
        }
        r
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Shared<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        let r = std::pin::Pin::new(&mut *lock_stream(&me.stream)).poll_read(cx, buf);
        me.note(r)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Shared<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        let r = std::pin::Pin::new(&mut *lock_stream(&me.stream)).poll_write(cx, buf);
        me.note(r)
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        let r = std::pin::Pin::new(&mut *lock_stream(&me.stream)).poll_flush(cx);
        me.note(r)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        let r = std::pin::Pin::new(&mut *lock_stream(&me.stream)).poll_shutdown(cx);
        me.note(r)
    }
}

impl<K: Kernel, B: Backend> Supervisor<K, B> {
    /// When the program is gone: wait (at most `max`) until every pumped stream has
    /// delivered what the program wrote, so that leaving does not cut its last bytes.
    pub(crate) async fn linger(&self, max: Duration) {
        let until = tokio::time::Instant::now() + max;
        loop {
            let streams: Vec<_> = self.pumped().iter().filter_map(|w| w.upgrade()).collect();
            let pending = streams
                .iter()
                .any(|s| !self.backend.stream_settled(&lock_stream(s)));
            drop(streams);
            if !pending {
                return;
            }
            if tokio::time::Instant::now() >= until {
                debug!("leaving with streams not yet delivered");
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A kernel-reported peer address.
fn peer_of(bytes: &[u8]) -> Option<SocketAddr> {
    let fam = i32::from(u16::from_ne_bytes([*bytes.first()?, *bytes.get(1)?]));
    match wire::parse_sockaddr(crate::Family::from_raw(fam)?, bytes).ok()? {
        wire::SockAddr::Inet(a) => Some(a),
        wire::SockAddr::Unspec => None,
    }
}

/// Has the other end of `s` been closed by every holder?
fn hung_up(s: &impl AsFd) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(s.as_fd(), PollFlags::empty())];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1))
        && fds[0].revents().is_some_and(|r| {
            r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL)
        })
}

/// Write junk into `end` until its send path is full; returns how many bytes.
fn fill(end: &OwnedFd) -> Result<usize, Errno> {
    let junk = [0u8; 65536];
    let mut total = 0;
    loop {
        match send(
            end.as_raw_fd(),
            &junk,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(n) => total += n,
            Err(Errno::EAGAIN) => return Ok(total),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Read and discard exactly `count` bytes from our end.
async fn drain(ours: &OwnedFd, mut count: usize) {
    let mut buf = [0u8; 65536];
    while count > 0 {
        let want = count.min(buf.len());
        match recv(ours.as_raw_fd(), &mut buf[..want], MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return,
            Ok(n) => count -= n,
            Err(Errno::EAGAIN) => tokio::time::sleep(Duration::from_millis(1)).await,
            Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}
