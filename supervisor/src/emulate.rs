//! Per-syscall emulation.
//!
//! Every trapped call starts the same way: resolve the fd argument through
//! `/proc/<tid>/fd` to a socket inode and look the inode up in the table of sockets this
//! supervisor created (DESIGN trap 3). A fd that is not ours is answered with `CONTINUE`,
//! and we never read its memory arguments first (trap 8). For ours, the address and data
//! arguments are copied out once, `SECCOMP_IOCTL_NOTIF_ID_VALID` is checked, and every
//! decision and action uses that copy (traps 7, 8).
//!
//! A socket created by `socket()` is the program's end of an `AF_UNIX` socketpair
//! (stream for TCP, seqpacket for UDP and ICMP, keeping datagram boundaries and giving
//! EOF on close). The supervisor keeps only its own end (trap 4); the program's last
//! close shows up as a hang-up there, which drops the table entry.
//!
//! Leaving the virtual network (trap 9): a destination on loopback (or on the host
//! network with fall-through on) is served by a real kernel socket that the supervisor
//! creates, binds or connects on the program's behalf (with the options the program set
//! so far replayed on it) and swaps into the same fd number with
//! `SECCOMP_ADDFD_FLAG_SETFD`, keeping `O_NONBLOCK` and `FD_CLOEXEC`. A TCP socket is
//! swapped only once it is connected or listening, so no later call on it can reach a
//! new destination; until then a bound kernel socket is held by the supervisor.
//!
//! The virtual network (see `virt.rs`): a connected stream is pumped between the
//! supervisor's end and a backend stream; the program's reads and writes never trap.
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{self as sock, AddressFamily, SockFlag, SockType};
use tokio::io::Interest;
use tracing::{debug, trace};

use crate::backend::{route, Backend, Policy, Route, StreamTuning};
use crate::kernel::{FdTarget, Kernel, Notification, Placement, Response};
use crate::options::{self, GetCall, Role, SetCall};
use crate::sys::{self, NameSide};
use crate::tracee::{self, MAX_COPY};
use crate::udp::Dgram;
use crate::virt::Listening;
use crate::wire::{self, Family, MsgHdr, SockAddr, MSGHDR_LEN};

/// How often a blocked emulated call checks whether the program abandoned it.
const ABANDON_POLL: Duration = Duration::from_millis(50);

/// The transport of an emulated socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// TCP (`SOCK_STREAM`).
    Stream,
    /// UDP (`SOCK_DGRAM`).
    Dgram,
    /// ICMP echo (`SOCK_DGRAM` with `IPPROTO_ICMP`/`IPPROTO_ICMPV6`).
    Icmp,
    /// A raw socket (`SOCK_RAW`), for callers with `CAP_NET_RAW` (raw.rs).
    Raw,
}

impl Kind {
    fn sock_type(self) -> i32 {
        match self {
            Kind::Stream => libc::SOCK_STREAM,
            Kind::Dgram | Kind::Icmp => libc::SOCK_DGRAM,
            Kind::Raw => libc::SOCK_RAW,
        }
    }
}

/// Where a socket is in its life.
pub(crate) enum Phase<B: Backend> {
    /// Created, nothing decided yet.
    Fresh,
    /// TCP bound to a host address through a kernel socket we hold until `listen` or
    /// `connect` swaps it in.
    KernelBound(Arc<OwnedFd>),
    /// Bound to an address of the virtual network (the port is taken at `listen`).
    VirtualBound(SocketAddr),
    /// A virtual handshake is under way.
    Connecting,
    /// A virtual stream is established and pumped. `confirmed`: a `connect` has
    /// reported success (after a non-blocking connect Linux answers the next `connect`
    /// with 0, later ones with `EISCONN`).
    Connected {
        local: SocketAddr,
        peer: SocketAddr,
        confirmed: bool,
    },
    /// A virtual listener.
    Listening(Arc<Listening<B>>),
    /// A non-blocking connect failed; `SO_ERROR` reports it once.
    Failed(Errno),
    /// A UDP socket on the virtual network.
    Datagram(Arc<Dgram<B>>),
    /// A kernel UDP/ICMP socket (loopback or host) swapped into the program; keyed by
    /// the kernel socket's inode (see `kdgram.rs`).
    KernelDgram(Arc<OwnedFd>),
}

impl<B: Backend> Phase<B> {
    /// Phases in which nobody else reads the supervisor's end.
    pub(crate) fn idle(&self) -> bool {
        matches!(
            self,
            Phase::Fresh | Phase::KernelBound(_) | Phase::VirtualBound(_) | Phase::Failed(_)
        )
    }
    fn name(&self) -> &'static str {
        match self {
            Phase::Fresh => "fresh",
            Phase::KernelBound(_) => "kernel-bound",
            Phase::VirtualBound(_) => "virtual-bound",
            Phase::Connecting => "connecting",
            Phase::Connected { .. } => "connected",
            Phase::Listening(_) => "listening",
            Phase::Failed(_) => "failed",
            Phase::Datagram(_) => "datagram",
            Phase::KernelDgram(_) => "kernel-datagram",
        }
    }
}

/// The options a program set on a socket, `(level, name, value)`, latest last. Inline
/// for the two a client sets on most connections (`TCP_NODELAY` and a timeout), so a held
/// connection spends no allocations on them.
pub(crate) type Options = smallvec::SmallVec<[(i32, i32, OptionValue); 2]>;
/// An option's value: ints, timevals and lingers inline.
pub(crate) type OptionValue = smallvec::SmallVec<[u8; 16]>;

/// One socket the program holds, identified by the inode of the program's end.
pub(crate) struct VSocket<B: Backend> {
    pub(crate) family: Family,
    pub(crate) kind: Kind,
    pub(crate) protocol: i32,
    /// The supervisor's end of the socketpair.
    pub(crate) ours: OwnedFd,
    pub(crate) phase: Mutex<Phase<B>>,
    /// `(level, name, value)` set so far, replayed on a kernel socket.
    pub(crate) options: Mutex<Options>,
    /// A duplicate of the program's end, held by a fresh TCP socket until a `connect`
    /// decides its fate: a non-blocking virtual connect then makes that very end
    /// unwritable until the handshake ends (virt.rs), so an epoll registration the
    /// program made before `connect` (nginx does) keeps working. While it is held the
    /// program's close shows up only through the sweep (see [`Supervisor::watch`]).
    pub(crate) program_end: Mutex<Option<OwnedFd>>,
    /// The backend stream a pump moves this socket's bytes to, for options the program
    /// sets on the connected socket ([`VSocket::tuning`]).
    stream: Mutex<Option<Weak<Mutex<B::Stream>>>>,
    /// Woken at every [`VSocket::set_phase`] (a blocking `connect` waits on it).
    changed: tokio::sync::Notify,
    /// A hang-up of our end may not be the program's close: both directions of the
    /// pair can be shut down while the program still holds its end, and we shut ours
    /// (the program's own `shutdown`, trapped, or ours at a reset that cannot be
    /// delivered as one). Until then a hang-up is the last close of the program's end.
    hang_up_ambiguous: std::sync::atomic::AtomicBool,
}

impl<B: Backend> fmt::Debug for VSocket<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VSocket")
            .field("family", &self.family)
            .field("kind", &self.kind)
            .field("phase", &self.phase().name())
            .finish()
    }
}

impl<B: Backend> VSocket<B> {
    pub(crate) fn new(
        family: Family,
        kind: Kind,
        protocol: i32,
        ours: OwnedFd,
        phase: Phase<B>,
    ) -> Self {
        Self {
            family,
            kind,
            protocol,
            ours,
            phase: Mutex::new(phase),
            options: Mutex::new(Options::new()),
            program_end: Mutex::new(None),
            stream: Mutex::new(None),
            changed: tokio::sync::Notify::new(),
            hang_up_ambiguous: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Note that a hang-up of our end no longer proves the program's close
    /// ([`VSocket::hang_up_is_close`]).
    pub(crate) fn shut_down_while_held(&self) {
        self.hang_up_ambiguous
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Does a hang-up of our end mean that the program's end is closed (by every
    /// process holding it)? Only the last close and a shutdown of both directions hang
    /// it up, and no shutdown happened: the program's are trapped, ours are noted.
    pub(crate) fn hang_up_is_close(&self) -> bool {
        !self
            .hang_up_ambiguous
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The pumped backend stream of a connected socket, while it lasts.
    pub(crate) fn set_stream(&self, stream: Weak<Mutex<B::Stream>>) {
        *self.stream.lock().unwrap_or_else(|e| e.into_inner()) = Some(stream);
    }

    /// The connection was pumped and is over (both directions ended, or reset): the
    /// kernel's socket would be in TCP_CLOSE.
    fn stream_over(&self) -> bool {
        self.stream
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|w| w.strong_count() == 0)
    }

    fn live_stream(&self) -> Option<Arc<Mutex<B::Stream>>> {
        self.stream
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(Weak::upgrade)
    }

    /// The connection options the program set on this socket (or, for an accepted one,
    /// on its listener).
    pub(crate) fn tuning(&self) -> StreamTuning {
        let on = |level, name| self.option_int(level, name).is_some_and(|v| v != 0);
        let secs = |name| {
            self.option_int(libc::IPPROTO_TCP, name)
                .filter(|v| *v > 0)
                .map(|v| Duration::from_secs(v as u64))
        };
        StreamTuning {
            nodelay: on(libc::IPPROTO_TCP, libc::TCP_NODELAY),
            keepalive: on(libc::SOL_SOCKET, libc::SO_KEEPALIVE)
                .then(|| secs(libc::TCP_KEEPIDLE).unwrap_or(Duration::from_secs(7200))),
            user_timeout: self
                .option_int(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT)
                .filter(|v| *v > 0)
                .map(|ms| Duration::from_millis(ms as u64)),
        }
    }
    /// Take the duplicate of the program's end, if this socket still holds one.
    pub(crate) fn take_program_end(&self) -> Option<OwnedFd> {
        self.program_end
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
    pub(crate) fn holds_program_end(&self) -> bool {
        self.program_end
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
    /// Does the supervisor hold a duplicate of the program's end of this socket (which
    /// hides the program's close from our end)?
    pub(crate) fn holds_program_dup(&self) -> bool {
        self.holds_program_end()
            || match &*self.phase() {
                Phase::Listening(l) => l.holds_program_end(),
                Phase::Datagram(d) => d.holds_program_end(),
                _ => false,
            }
    }
    /// A sibling for a new socketpair that replaces this one in the program.
    pub(crate) fn successor(&self, ours: OwnedFd, phase: Phase<B>) -> Self {
        let s = Self::new(self.family, self.kind, self.protocol, ours, phase);
        *s.options.lock().unwrap_or_else(|e| e.into_inner()) = self.options().clone();
        s
    }
    pub(crate) fn phase(&self) -> MutexGuard<'_, Phase<B>> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn options(&self) -> MutexGuard<'_, Options> {
        self.options.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// `IPV6_V6ONLY` set by the program on an IPv6 socket.
    pub(crate) fn v6only(&self) -> bool {
        self.family == Family::V6
            && self
                .option_int(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)
                .is_some_and(|v| v != 0)
    }
    /// True once the program bound this socket to a device (`SO_BINDTODEVICE` with a
    /// name, `SO_BINDTOIFINDEX` with an index).
    pub(crate) fn device_bound(&self) -> bool {
        self.options().iter().rev().any(|(l, o, v)| {
            *l == libc::SOL_SOCKET
                && match *o {
                    libc::SO_BINDTODEVICE => v.first().is_some_and(|b| *b != 0),
                    libc::SO_BINDTOIFINDEX => v.iter().take(4).any(|b| *b != 0),
                    _ => false,
                }
        })
    }
    /// An int option as set by the program.
    pub(crate) fn option_int(&self, level: i32, name: i32) -> Option<i32> {
        let opts = self.options();
        let (_, _, v) = opts
            .iter()
            .rev()
            .find(|(l, o, _)| (*l, *o) == (level, name))?;
        Some(i32::from_ne_bytes(v.get(..4)?.try_into().ok()?))
    }

    /// The raw value of an option the program set (the latest), if any.
    pub(crate) fn option_bytes(&self, level: i32, name: i32) -> Option<Vec<u8>> {
        let opts = self.options();
        opts.iter()
            .rev()
            .find(|(l, o, _)| (*l, *o) == (level, name))
            .map(|(_, _, v)| v.to_vec())
    }

    /// Give a new program end of this socket the `SO_RCVTIMEO`/`SO_SNDTIMEO` the program
    /// set: its reads and writes on that end are not trapped, so the kernel must apply
    /// them there (an accepted socket inherits them from its listener, as on Linux).
    pub(crate) fn apply_timeouts(&self, end: BorrowedFd<'_>) {
        for name in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
            if let Some(v) = self.option_bytes(libc::SOL_SOCKET, name) {
                if let Err(e) = sys::setsockopt_bytes(end, libc::SOL_SOCKET, name, &v) {
                    debug!(name, %e, "timeout not carried to the program's new end");
                }
            }
        }
    }

    /// A destination address of a `connect` or a send, as this socket takes it: an IPv6
    /// datagram socket also takes an IPv4 `sockaddr_in` and sends to its v4-mapped
    /// address (`udpv6_sendmsg`, `ip6_datagram_connect`), unless `IPV6_V6ONLY`.
    pub(crate) fn parse_destination(&self, bytes: &[u8]) -> Result<SockAddr, Errno> {
        let inet4 = bytes.get(..2) == Some(&(libc::AF_INET as u16).to_ne_bytes()[..]);
        if self.family != Family::V6 || self.kind == Kind::Stream || !inet4 {
            return wire::parse_sockaddr(self.family, bytes);
        }
        if self
            .option_int(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)
            .is_some_and(|v| v != 0)
        {
            return Err(Errno::EAFNOSUPPORT);
        }
        Ok(match wire::parse_sockaddr(Family::V4, bytes)? {
            SockAddr::Inet(SocketAddr::V4(a)) => {
                SockAddr::Inet(SocketAddr::from((a.ip().to_ipv6_mapped(), a.port())))
            }
            other => other,
        })
    }

    /// `SO_RCVTIMEO`/`SO_SNDTIMEO` as set by the program (`None`: wait forever).
    pub(crate) fn timeout(&self, name: i32) -> Option<Duration> {
        let opts = self.options();
        let (_, _, v) = opts
            .iter()
            .rev()
            .find(|(l, o, _)| (*l, *o) == (libc::SOL_SOCKET, name))?;
        let tv = wire::parse_timeval(v)?;
        (!tv.is_zero()).then_some(tv)
    }

    fn kernel_bound(&self) -> Option<Arc<OwnedFd>> {
        match &*self.phase() {
            Phase::KernelBound(r) => Some(r.clone()),
            _ => None,
        }
    }
    pub(crate) fn set_phase(&self, p: Phase<B>) {
        *self.phase() = p;
        self.changed.notify_waiters();
    }

    /// Wait (at most until `deadline`) for the connect in progress to end; returns
    /// whether it has.
    pub(crate) async fn connect_settled(&self, deadline: Option<tokio::time::Instant>) -> bool {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if !matches!(*self.phase(), Phase::Connecting) {
                return true;
            }
            match deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d, changed).await.is_err() {
                        return !matches!(*self.phase(), Phase::Connecting);
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// A pumped backend stream, as the exit linger sees it.
pub(crate) type Pumped<B> = std::sync::Weak<Mutex<<B as Backend>::Stream>>;

/// A socket of ours found by inode.
type Found<B> = (u64, Arc<VSocket<B>>);

/// What a handler decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    Answer(Response),
    /// Already answered (`ADDFD` with `SEND`), or abandoned: nothing more to send.
    Done,
}

pub(crate) fn errno(e: Errno) -> Reply {
    Reply::Answer(Response::Errno(e))
}
pub(crate) fn value(v: i64) -> Reply {
    Reply::Answer(Response::Value(v))
}
pub(crate) const CONTINUE: Reply = Reply::Answer(Response::Continue);

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return crate::emulate::errno(e),
        }
    };
}
pub(crate) use tri;

/// The emulation state shared by all notification tasks.
pub struct Supervisor<K: Kernel, B: Backend> {
    pub(crate) kernel: Arc<K>,
    pub(crate) backend: Arc<B>,
    policy: Policy,
    sockets: Mutex<HashMap<u64, Arc<VSocket<B>>>>,
    /// Threads that made trapped calls (for the listener sweep).
    seen: Mutex<HashSet<u32>>,
    /// The socket inodes the program held at the last listing, and when (virt.rs
    /// `still_held`): one listing serves every socket's close check in a sweep.
    pub(crate) held: Mutex<Option<(std::time::Instant, Option<HashSet<u64>>)>>,
    /// Whether any kernel datagram socket was ever adopted (skips a lookup otherwise).
    pub(crate) kernel_dgrams: std::sync::atomic::AtomicBool,
    /// Proxied route netlink sockets by the inode of the program's end (netlink.rs).
    netlinks: Mutex<HashMap<u64, Arc<crate::netlink::NlSocket>>>,
    /// Whether any netlink socket was ever proxied (skips a lookup otherwise).
    pub(crate) netlink_seen: std::sync::atomic::AtomicBool,
    /// Streams being pumped, for [`Supervisor::linger`].
    pumped: Mutex<Vec<Pumped<B>>>,
    /// Sockets nobody else watches, for noticing the program's close (idle.rs).
    pub(crate) idle: std::sync::OnceLock<Option<Arc<crate::idle::IdleSet<B>>>>,
    /// The network namespace the supervisor serves, for permission checks (permit.rs).
    host: crate::permit::HostNet,
    /// Virtual listeners that set SO_REUSEPORT, by address (virt.rs).
    port_groups: Mutex<HashMap<SocketAddr, Weak<crate::virt::PortGroup<B>>>>,
    /// Whether the "cannot inspect the program" warning was given.
    warned_uninspectable: std::sync::atomic::AtomicBool,
    /// Whether `pidfd_getfd` works on the program (0 not known yet, 1 yes, 2 no): see
    /// [`Supervisor::may_grab`].
    grabs: std::sync::atomic::AtomicU8,
    /// Asks the kernel whether a program's end still exists (diag.rs).
    pub(crate) diag: crate::diag::UnixDiag,
}

impl<K: Kernel, B: Backend> fmt::Debug for Supervisor<K, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("policy", &self.policy)
            .field("sockets", &self.socket_count())
            .finish()
    }
}

impl<K: Kernel, B: Backend> Supervisor<K, B> {
    /// New supervisor over `kernel`, routing to `backend` under `policy`.
    pub fn new(kernel: Arc<K>, backend: Arc<B>, policy: Policy) -> Self {
        Self {
            kernel,
            backend,
            policy,
            sockets: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashSet::new()),
            held: Mutex::new(None),
            kernel_dgrams: std::sync::atomic::AtomicBool::new(false),
            netlinks: Mutex::new(HashMap::new()),
            netlink_seen: std::sync::atomic::AtomicBool::new(false),
            pumped: Mutex::new(Vec::new()),
            idle: std::sync::OnceLock::new(),
            host: crate::permit::HostNet::read(),
            port_groups: Mutex::new(HashMap::new()),
            warned_uninspectable: std::sync::atomic::AtomicBool::new(false),
            grabs: std::sync::atomic::AtomicU8::new(0),
            diag: crate::diag::UnixDiag::default(),
        }
    }

    /// Can the supervisor take a duplicate of the program's descriptors when it needs
    /// one (`pidfd_getfd`)? Then it holds none of the program's ends between calls: a
    /// listener's or a UDP socket's close shows as a hang-up of our end, at once and
    /// without listing the program's descriptors (idle.rs), and costs one descriptor
    /// less. Docker's default profile denies the call; there the duplicate is held and
    /// a sweep finds the close. Found out once, on the descriptor `fd` (socket `ino`) of
    /// the call `n` in progress.
    pub(crate) fn may_grab(&self, n: &Notification, fd: i32, ino: u64) -> bool {
        use std::sync::atomic::Ordering;
        match self.grabs.load(Ordering::Relaxed) {
            1 => return true,
            2 => return false,
            _ => {}
        }
        match self.kernel.grab_at(n.pid, fd, ino) {
            Ok(_) => {
                self.grabs.store(1, Ordering::Relaxed);
                true
            }
            // Gone meanwhile: try again at the next socket.
            Err(Errno::ENOENT | Errno::ESRCH | Errno::EBADF) => false,
            Err(e) => {
                debug!(%e, "pidfd_getfd refused: program ends are held, closes found by a sweep");
                self.grabs.store(2, Ordering::Relaxed);
                false
            }
        }
    }

    pub(crate) fn port_groups(
        &self,
    ) -> MutexGuard<'_, HashMap<SocketAddr, Weak<crate::virt::PortGroup<B>>>> {
        self.port_groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn host_net(&self) -> &crate::permit::HostNet {
        &self.host
    }

    /// The answer to a call on a descriptor the supervisor may not inspect: a program
    /// that made itself non-dumpable (`PR_SET_DUMPABLE` 0) hides its fd table and memory
    /// from a supervisor without `CAP_SYS_PTRACE`. Letting such a call through would
    /// hand it to the `AF_UNIX` socket behind a virtual one (a datagram "sent" and
    /// silently dropped), so it fails closed with `EPERM`, said once.
    fn uninspectable(&self, n: &Notification, e: Errno) -> Reply {
        match e {
            Errno::EACCES | Errno::EPERM => {
                if !self
                    .warned_uninspectable
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::warn!(
                        pid = n.pid,
                        "the program made itself non-dumpable: its socket calls cannot be \
                         inspected and fail with EPERM"
                    );
                }
                errno(Errno::EPERM)
            }
            // Not open (the kernel says EBADF) or the thread is gone.
            _ => CONTINUE,
        }
    }

    pub(crate) fn pumped(&self) -> MutexGuard<'_, Vec<Pumped<B>>> {
        self.pumped.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn netlinks(&self) -> MutexGuard<'_, HashMap<u64, Arc<crate::netlink::NlSocket>>> {
        self.netlinks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of sockets the program currently holds that are still emulated.
    pub fn socket_count(&self) -> usize {
        self.table().len()
    }

    pub(crate) fn table(&self) -> MutexGuard<'_, HashMap<u64, Arc<VSocket<B>>>> {
        self.sockets.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn seen(&self) -> MutexGuard<'_, HashSet<u32>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A duplicate of the program's end of socket `ino`, the descriptor argument of the
    /// call `n` in progress (`pidfd_getfd`, see [`Supervisor::may_grab`]), for that call.
    pub(crate) fn program_end_of(&self, n: &Notification, ino: u64) -> Result<OwnedFd, Errno> {
        self.kernel.grab_at(n.pid, n.args[0] as u32 as i32, ino)
    }

    /// Does `ino` still map to `vs`?
    pub(crate) fn holds_socket(&self, ino: u64, vs: &Arc<VSocket<B>>) -> bool {
        self.table()
            .get(&ino)
            .is_some_and(|cur| Arc::ptr_eq(cur, vs))
    }

    /// Remove `ino` if it still maps to `vs`.
    pub(crate) fn forget(&self, ino: u64, vs: &Arc<VSocket<B>>) {
        let mut t = self.table();
        if t.get(&ino).is_some_and(|cur| Arc::ptr_eq(cur, vs)) {
            t.remove(&ino);
            debug!(ino, "socket closed by the program");
        }
    }

    /// Emulate one notification and answer it. Never fails: problems become errno values
    /// for the program, and a vanished notification is simply dropped.
    pub async fn handle(self: &Arc<Self>, n: Notification) {
        self.seen().insert(n.pid);
        let reply = self.dispatch(&n).await;
        trace!(nr = n.nr, pid = n.pid, ?reply, "answered");
        if let Reply::Answer(r) = reply {
            if self.kernel.respond(n.id, r).is_err() {
                debug!(
                    id = n.id,
                    nr = n.nr,
                    "notification vanished before the answer"
                );
            }
        }
    }

    pub(crate) fn policy(&self) -> Policy {
        self.policy
    }

    pub(crate) async fn dispatch(self: &Arc<Self>, n: &Notification) -> Reply {
        if n.nr != libc::SYS_socket && self.netlink_seen.load(std::sync::atomic::Ordering::Relaxed)
        {
            if let Some(nl) = self.netlink_lookup(n) {
                return self.netlink_call(n, nl).await;
            }
        }
        if n.nr != libc::SYS_socket
            && self
                .kernel_dgrams
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            if let Ok(Some((_, vs))) = self.lookup(n) {
                let kernel = match &*vs.phase() {
                    Phase::KernelDgram(r) => Some(r.clone()),
                    _ => None,
                };
                if let Some(r) = kernel {
                    return self.kernel_dgram_call(n, &vs, r).await;
                }
            }
        }
        match n.nr {
            libc::SYS_socket => self.socket(n),
            libc::SYS_connect => self.connect(n).await,
            libc::SYS_bind => self.bind(n),
            libc::SYS_listen => self.listen(n).await,
            libc::SYS_accept | libc::SYS_accept4 => self.accept(n).await,
            libc::SYS_getsockname => self.name(n, NameSide::Local),
            libc::SYS_getpeername => self.name(n, NameSide::Peer),
            libc::SYS_setsockopt => self.setsockopt(n),
            libc::SYS_getsockopt => self.getsockopt(n),
            libc::SYS_shutdown => self.shutdown(n),
            libc::SYS_ioctl => self.ioctl(n),
            libc::SYS_sendto
            | libc::SYS_sendmsg
            | libc::SYS_sendmmsg
            | libc::SYS_recvfrom
            | libc::SYS_recvmsg
            | libc::SYS_recvmmsg => self.data(n).await,
            // Not in the filter: let the kernel decide.
            _ => CONTINUE,
        }
    }

    /// Resolve fd argument 0 to one of our sockets. `Ok(None)`: not ours; `Err`: the
    /// answer when it cannot be resolved ([`Supervisor::uninspectable`]).
    fn lookup(&self, n: &Notification) -> Result<Option<Found<B>>, Reply> {
        let fd = n.args[0] as u32 as i32;
        match self.kernel.fd_target(n.pid, fd) {
            Ok(FdTarget::Socket(ino)) => Ok(self.table().get(&ino).map(|s| (ino, s.clone()))),
            Ok(FdTarget::Other) => Ok(None),
            Err(e) => Err(self.uninspectable(n, e)),
        }
    }

    // ---- socket(2) ----------------------------------------------------------------

    fn socket(self: &Arc<Self>, n: &Notification) -> Reply {
        if self.left_our_netns(n.pid) {
            // A namespace of its own (permit.rs): the kernel's socket, with its rights.
            return CONTINUE;
        }
        if n.args[0] as u32 as i32 == libc::AF_NETLINK {
            return self.netlink_socket(n);
        }
        let Some(family) = Family::from_raw(n.args[0] as u32 as i32) else {
            return CONTINUE;
        };
        let raw_type = n.args[1] as u32 as i32;
        let protocol = n.args[2] as u32 as i32;
        let flags = raw_type & (libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
        let ty = raw_type & !flags;
        // `SOCK_MAX` (include/linux/net.h): types at or above it are EINVAL in
        // __sock_create, before the family sees them.
        const SOCK_MAX: i32 = 11;
        if !(0..libc::IPPROTO_MAX).contains(&protocol) && (0..SOCK_MAX).contains(&ty) {
            // inet_create checks the protocol number before it looks the type up.
            return errno(Errno::EINVAL);
        }
        let kind = match (ty, protocol, family) {
            (libc::SOCK_STREAM, 0 | libc::IPPROTO_TCP, _) => Kind::Stream,
            (libc::SOCK_DGRAM, 0 | libc::IPPROTO_UDP | libc::IPPROTO_UDPLITE, _) => Kind::Dgram,
            (libc::SOCK_DGRAM, libc::IPPROTO_ICMP, Family::V4)
            | (libc::SOCK_DGRAM, libc::IPPROTO_ICMPV6, Family::V6) => Kind::Icmp,
            (libc::SOCK_STREAM | libc::SOCK_DGRAM, _, _) => return errno(Errno::EPROTONOSUPPORT),
            // inet_create: a raw socket names its protocol; then it needs CAP_NET_RAW,
            // the caller's own (raw.rs).
            (libc::SOCK_RAW, 0, _) => return errno(Errno::EPROTONOSUPPORT),
            (libc::SOCK_RAW, p, _) => {
                tri!(self.raw_socket_allowed(n.pid, family, p));
                Kind::Raw
            }
            // No inet protocol of the other types (inetsw[type] is empty): SCTP
            // (SOCK_SEQPACKET) and DCCP are not emulated, and are modules most hosts
            // never load.
            (t, _, _) if (0..SOCK_MAX).contains(&t) => return errno(Errno::ESOCKTNOSUPPORT),
            _ => return errno(Errno::EINVAL),
        };
        let protocol = match (kind, protocol) {
            (Kind::Stream, _) => libc::IPPROTO_TCP,
            (Kind::Dgram, libc::IPPROTO_UDPLITE) => libc::IPPROTO_UDPLITE,
            (Kind::Dgram, _) => libc::IPPROTO_UDP,
            (Kind::Icmp | Kind::Raw, p) => p,
        };
        let (theirs, ours) = tri!(socketpair(kind, flags & libc::SOCK_NONBLOCK != 0));
        let ino = tri!(inode(theirs.as_fd()));
        let vs = Arc::new(VSocket::new(family, kind, protocol, ours, Phase::Fresh));
        let grabs = self.grabs.load(std::sync::atomic::Ordering::Relaxed);
        if kind == Kind::Stream && grabs != 1 {
            // A non-blocking connect needs the program's end (virt.rs); where it cannot
            // be taken then, it is held from now on (without it a non-blocking connect
            // falls back to replacing the program's end).
            *vs.program_end.lock().unwrap_or_else(|e| e.into_inner()) = theirs.try_clone().ok();
        }
        self.table().insert(ino, vs.clone());
        let how = Placement::AnswerWithNew {
            cloexec: flags & libc::SOCK_CLOEXEC != 0,
        };
        match self.kernel.add_fd(n.id, theirs.as_fd(), how) {
            Ok(fd) => {
                debug!(pid = n.pid, fd, ino, ?family, ?kind, "socket");
                if grabs == 0 {
                    self.may_grab(n, fd, ino);
                }
                self.watch(ino, vs);
                Reply::Done
            }
            Err(e) => {
                // Vanished (ENOENT) or fd table full: leave nothing behind.
                self.table().remove(&ino);
                if e == Errno::ENOENT {
                    Reply::Done
                } else {
                    errno(e)
                }
            }
        }
    }

    // ---- kernel sockets -------------------------------------------------------------

    /// A real kernel socket like `vs`, non-blocking, with the program's options replayed.
    /// `confine`: it serves loopback, so it is bound to the loopback device
    /// (`SO_BINDTODEVICE`, allowed to anyone on an unbound socket since Linux 5.7 and
    /// never undone without `CAP_NET_RAW`, which the filter's `setsockopt` check refuses):
    /// whatever the program later does with it (`connect(AF_UNSPEC)` and a new
    /// `connect`, `sendto` with `MSG_FASTOPEN`), it can reach nothing beyond loopback.
    pub(crate) fn kernel_socket(&self, vs: &VSocket<B>, confine: bool) -> Result<OwnedFd, Errno> {
        if confine && crate::raw::header_included(vs) {
            // Its header could name any destination (raw.rs).
            return Err(Errno::EPERM);
        }
        let r = sys::socket(vs.family.raw(), vs.kind.sock_type(), vs.protocol)?;
        for (level, name, val) in vs.options().iter() {
            // The program's device binding is its own and is answered from the record;
            // a socket that serves loopback is bound to `lo` instead (below).
            let device = *level == libc::SOL_SOCKET
                && matches!(*name, libc::SO_BINDTODEVICE | libc::SO_BINDTOIFINDEX);
            if device && confine {
                continue;
            }
            if let Err(e) = sys::setsockopt_bytes(r.as_fd(), *level, *name, val) {
                debug!(level, name, %e, "option not replayed on kernel socket");
            }
        }
        if confine {
            confine_to_loopback(r.as_fd())?;
        }
        Ok(r)
    }

    /// Replace the program's fd (still our socketpair end `ino`, the socket `old`) with
    /// `r`, keeping the program's `O_NONBLOCK` and close-on-exec.
    ///
    /// The program's copy of the old end goes with the swap, so a duplicate of it that
    /// `old` holds is let go at once: our end of the old pair then hangs up, and the
    /// socket leaves the table at that event instead of at a sweep (a loop of loopback
    /// connects otherwise piles up two descriptors per connect until the sweep).
    pub(crate) fn swap_in(
        &self,
        n: &Notification,
        (ino, old): (u64, &VSocket<B>),
        r: BorrowedFd<'_>,
    ) -> Result<(), Errno> {
        let fd = n.args[0] as u32 as i32;
        if self.kernel.fd_target(n.pid, fd)? != FdTarget::Socket(ino) {
            return Err(Errno::EBADF);
        }
        let flags = self.kernel.fd_flags(n.pid, fd)?;
        set_nonblocking(r, flags & libc::O_NONBLOCK != 0)?;
        let how = Placement::Replace {
            target: fd,
            cloexec: flags & libc::O_CLOEXEC != 0,
        };
        self.kernel.add_fd(n.id, r, how)?;
        drop(old.take_program_end());
        Ok(())
    }

    /// The live `O_NONBLOCK` of the program's fd argument 0.
    pub(crate) fn program_nonblocking(&self, n: &Notification) -> Result<bool, Errno> {
        let fd = n.args[0] as u32 as i32;
        Ok(self.kernel.fd_flags(n.pid, fd)? & libc::O_NONBLOCK != 0)
    }

    /// Resolves when the program gives up the call of notification `n`: it vanished
    /// (the caller was killed), or a signal the program handles is pending for the
    /// calling thread, which on Linux interrupts a blocked socket call. Answer with
    /// [`Supervisor::give_up_reply`].
    pub(crate) async fn given_up(&self, n: &Notification) {
        loop {
            tokio::time::sleep(ABANDON_POLL).await;
            if !self.kernel.id_valid(n.id) || self.kernel.handled_signal_pending(n.pid) {
                return;
            }
        }
    }

    /// The answer to a call [`Supervisor::given_up`] on: nothing when it vanished;
    /// otherwise interrupted, which Linux restarts under `SA_RESTART` unless the call
    /// was bounded by `SO_RCVTIMEO`/`SO_SNDTIMEO` (`timed`): those give `EINTR` whatever
    /// the handler's flags (`sock_intr_errno`, signal(7)).
    pub(crate) fn give_up_reply(&self, n: &Notification, timed: bool) -> Reply {
        if !self.kernel.id_valid(n.id) {
            Reply::Done
        } else if timed {
            errno(Errno::EINTR)
        } else {
            Reply::Answer(Response::Interrupted)
        }
    }

    // ---- connect(2) -----------------------------------------------------------------

    async fn connect(self: &Arc<Self>, n: &Notification) -> Reply {
        let (ino, vs) = match self.lookup(n) {
            Ok(Some(x)) => x,
            Ok(None) => return self.connect_foreign(n),
            Err(r) => return r,
        };
        let bytes = tri!(tracee::read_sockaddr(
            &*self.kernel,
            n.pid,
            n.args[1],
            n.args[2]
        ));
        if !self.kernel.id_valid(n.id) {
            return Reply::Done;
        }
        let connecting = matches!(*vs.phase(), Phase::Connecting);
        if connecting && !tri!(self.program_nonblocking(n)) {
            // A blocking connect while one is in progress (after SO_SNDTIMEO expired, or
            // after a non-blocking one) waits for it, bounded by SO_SNDTIMEO, as Linux's
            // does: 0 when it connected, its error when it failed, EALREADY on timeout.
            let deadline = vs
                .timeout(libc::SO_SNDTIMEO)
                .map(|t| tokio::time::Instant::now() + t);
            tokio::select! {
                _ = vs.connect_settled(deadline) => {}
                _ = self.given_up(n) => return self.give_up_reply(n, deadline.is_some()),
            }
            let mut phase = vs.phase();
            if let Phase::Failed(e) = &*phase {
                // Reported here, so SO_ERROR no longer reports it.
                let e = *e;
                *phase = Phase::Fresh;
                return errno(e);
            }
        }
        match &mut *vs.phase() {
            Phase::Connecting => return errno(Errno::EALREADY),
            Phase::Connected { confirmed, .. } if !*confirmed => {
                *confirmed = true;
                return value(0);
            }
            Phase::Connected { .. } | Phase::Listening(_) => return errno(Errno::EISCONN),
            _ => {}
        }
        let parsed = tri!(vs.parse_destination(&bytes));
        // tcp_v6_connect, ip6_datagram_connect: no IPv4 route for an IPv6-only socket.
        if matches!(parsed, SockAddr::Inet(a) if is_v4_mapped(a)) && vs.v6only() {
            return errno(Errno::ENETUNREACH);
        }
        let datagram = match &*vs.phase() {
            Phase::Datagram(d) => Some(d.clone()),
            _ => None,
        };
        let dest = match (parsed, datagram) {
            (SockAddr::Unspec, Some(d)) => {
                tri!(self.udp_set_peer(&d, None));
                return value(0);
            }
            // Dissolving an association that does not exist succeeds.
            (SockAddr::Unspec, None) => return value(0),
            (SockAddr::Inet(a), Some(d)) => {
                let a = crate::backend::canonical_addr(a);
                if !self.backend.is_virtual_dgram(a) {
                    return errno(Errno::ENETUNREACH);
                }
                tri!(self.udp_set_peer(&d, Some(a)));
                return value(0);
            }
            (SockAddr::Inet(a), None) => a,
        };
        match route(&*self.backend, self.policy, dest, vs.kind != Kind::Stream) {
            Route::Unreachable => errno(Errno::ENETUNREACH),
            Route::Virtual if vs.kind == Kind::Stream => {
                self.connect_virtual(n, ino, &vs, dest).await
            }
            Route::Virtual => self.udp_connect(n, ino, &vs, crate::backend::canonical_addr(dest)),
            Route::Loopback | Route::Host => self.connect_kernel(n, ino, &vs, dest).await,
        }
    }

    /// `connect(2)` on a socket that is not ours (`AF_UNIX` and the like): the kernel's
    /// business, except for systemd-resolved's Varlink socket, through which glibc's
    /// `nss-resolve` module looks names up without sending a DNS packet we could answer.
    /// It is refused with `ECONNREFUSED`, as if resolved were not running: `nss-resolve`
    /// then reports `UNAVAIL`, and the usual `resolve [!UNAVAIL=return] dns` line of
    /// `nsswitch.conf` falls back to DNS, whose packets the supervisor answers (`.zt`
    /// names) or forwards (fall-through). Refusing is decided on our copy of the address;
    /// a program that rewrites it afterwards only reaches resolved the way it could anyway.
    fn connect_foreign(&self, n: &Notification) -> Reply {
        let Ok(bytes) = tracee::read_sockaddr(&*self.kernel, n.pid, n.args[1], n.args[2]) else {
            return CONTINUE;
        };
        if wire::is_resolved_varlink(&bytes) && self.kernel.id_valid(n.id) {
            tracing::debug!(
                pid = n.pid,
                "nss-resolve's connect refused: names go by DNS"
            );
            return errno(Errno::ECONNREFUSED);
        }
        // An internet address on a socket that is not ours: a kernel socket swapped in
        // for loopback (or the host, with fall-through), re-aimed after `AF_UNSPEC`.
        // Refused where the route does not allow it; where it does, the kernel connects
        // it, and a loopback socket's device binding keeps it there whatever the program
        // writes into the address meanwhile. A socket of the program's own namespace is
        // the kernel's alone.
        let dest = match bytes
            .get(..2)
            .map(|f| i32::from(u16::from_ne_bytes([f[0], f[1]])))
        {
            Some(libc::AF_INET) => wire::parse_sockaddr(Family::V4, &bytes),
            Some(libc::AF_INET6) => wire::parse_sockaddr(Family::V6, &bytes),
            _ => return CONTINUE,
        };
        if let Ok(SockAddr::Inet(dest)) = dest {
            // Not a socket at all: the kernel's ENOTSOCK comes first.
            let socket = matches!(
                self.kernel.fd_target(n.pid, n.args[0] as u32 as i32),
                Ok(FdTarget::Socket(_))
            );
            if socket && !self.kernel_dest(dest) && !self.left_our_netns(n.pid) {
                return errno(Errno::ENETUNREACH);
            }
        }
        CONTINUE
    }

    async fn connect_kernel(
        self: &Arc<Self>,
        n: &Notification,
        ino: u64,
        vs: &VSocket<B>,
        dest: SocketAddr,
    ) -> Reply {
        let loopback =
            route(&*self.backend, self.policy, dest, vs.kind != Kind::Stream) == Route::Loopback;
        let r = match vs.kernel_bound() {
            Some(r) => r,
            None => Arc::new(tri!(self.kernel_socket(vs, loopback))),
        };
        if vs.kind != Kind::Stream {
            tri!(sys::connect_bytes(
                r.as_fd(),
                &wire::emit_sockaddr(dest),
                false
            ));
            tri!(self.swap_in(n, (ino, vs), r.as_fd()));
            self.adopt_kernel_dgram(vs, r);
            return value(0);
        }
        let nonblocking = tri!(self.program_nonblocking(n));
        let addr = wire::emit_sockaddr(dest);
        match sys::connect_bytes(r.as_fd(), &addr, false) {
            Ok(()) => {}
            Err(Errno::EINPROGRESS) if nonblocking => {
                // The kernel socket gives the program its own writable edge.
                tri!(self.swap_in(n, (ino, vs), r.as_fd()));
                vs.set_phase(Phase::Fresh);
                return errno(Errno::EINPROGRESS);
            }
            Err(Errno::EINPROGRESS) => {
                let Ok(dup) = r.try_clone() else {
                    return errno(Errno::ENOBUFS);
                };
                let Ok(afd) = sys::async_fd(dup, Interest::WRITABLE) else {
                    return errno(Errno::ENOBUFS);
                };
                tokio::select! {
                    _ = afd.writable() => {}
                    _ = self.given_up(n) => {
                        // The kernel goes on connecting: the program's socket is now
                        // that one (a restarted connect waits on it, a later one gets
                        // EALREADY, as on Linux).
                        if self.swap_in(n, (ino, vs), r.as_fd()).is_ok() {
                            vs.set_phase(Phase::Fresh);
                        }
                        return self.give_up_reply(n, vs.timeout(libc::SO_SNDTIMEO).is_some());
                    }
                }
                let mut err = [0u8; 4];
                tri!(sys::getsockopt_bytes(
                    r.as_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    &mut err
                ));
                let err = i32::from_ne_bytes(err);
                if err != 0 {
                    return errno(Errno::from_raw(err));
                }
                // Completes the connect in the socket's own state (SS_CONNECTED), so the
                // program's next connect on it answers EISCONN, as after a blocking
                // connect on Linux, rather than 0.
                let _ = sys::connect_bytes(r.as_fd(), &addr, false);
            }
            Err(e) => return errno(e),
        }
        tri!(self.swap_in(n, (ino, vs), r.as_fd()));
        vs.set_phase(Phase::Fresh);
        value(0)
    }

    // ---- bind(2), listen(2) ---------------------------------------------------------

    fn bind(self: &Arc<Self>, n: &Notification) -> Reply {
        let (ino, vs) = match self.lookup(n) {
            Ok(Some(x)) => x,
            Ok(None) => return CONTINUE,
            Err(r) => return r,
        };
        let bytes = tri!(tracee::read_sockaddr(
            &*self.kernel,
            n.pid,
            n.args[1],
            n.args[2]
        ));
        if !self.kernel.id_valid(n.id) {
            return Reply::Done;
        }
        if !matches!(&*vs.phase(), Phase::Fresh | Phase::Failed(_)) {
            return errno(Errno::EINVAL);
        }
        let local = match tri!(wire::parse_sockaddr(vs.family, &bytes)) {
            // inet_bind's compatibility game: AF_UNSPEC is taken as AF_INET when the
            // address is INADDR_ANY (IPv6 sockets refuse it).
            SockAddr::Unspec
                if vs.family == Family::V4 && bytes.len() >= 16 && bytes[4..8] == [0, 0, 0, 0] =>
            {
                SocketAddr::from(([0, 0, 0, 0], u16::from_be_bytes([bytes[2], bytes[3]])))
            }
            SockAddr::Unspec => return errno(Errno::EAFNOSUPPORT),
            SockAddr::Inet(a) => a,
        };
        // inet6_bind: a v4-mapped address on an IPV6_V6ONLY socket.
        if vs.v6only() && is_v4_mapped(local) {
            return errno(Errno::EINVAL);
        }
        // Checked here for every place the socket may bind (the virtual network, or a
        // kernel socket made with the supervisor's rights): permit.rs.
        if !self.may_bind_port(n.pid, local.port()) {
            return errno(Errno::EACCES);
        }
        let ip = crate::backend::canonical(local.ip());
        if self.backend.enabled()
            && vs.kind != Kind::Stream
            && !crate::raw::not_on_virtual_network(&vs)
            && (ip.is_unspecified() || self.backend.is_local(ip))
        {
            tri!(self.udp_enter(n, ino, &vs, local));
            return value(0);
        }
        let virtual_net = self.backend.enabled() && vs.kind == Kind::Stream;
        if virtual_net && (ip.is_unspecified() || self.backend.is_local(ip)) {
            // The port is taken when the program listens; an ephemeral one is chosen now
            // so getsockname() after bind() shows it, as on Linux.
            let mut local = local;
            if local.port() == 0 {
                local.set_port(ephemeral_port());
                // A wildcard listener also listens on loopback: pick a port that is free
                // there too (a host socket may hold the one drawn).
                for _ in 0..16 {
                    let free = |f| loopback_port_free(f, local.port());
                    if !ip.is_unspecified() || free(vs.family) && free(Family::V4) {
                        break;
                    }
                    local.set_port(ephemeral_port());
                }
            } else if self.virtual_port_taken(&vs, local)
                && (!self.close_stale_listeners(local.port())
                    || self.virtual_port_taken(&vs, local))
            {
                // Reported at bind, as Linux's inet_csk_get_port does (a listener the
                // program closed a moment ago, not yet noticed, does not count).
                return errno(Errno::EADDRINUSE);
            }
            vs.set_phase(Phase::VirtualBound(local));
            return value(0);
        }
        // Wildcard without a virtual network: the only place to listen is loopback. The
        // kernel socket keeps the wildcard address (so an IPv6 one without IPV6_V6ONLY
        // also takes IPv4 clients, and getsockname shows what was bound), confined to
        // the loopback device.
        let confine = ip.is_unspecified() || ip.is_loopback();
        let host = self.policy.fallthrough && !self.backend.is_virtual(ip);
        if !confine && !host {
            return errno(Errno::EADDRNOTAVAIL);
        }
        let r = tri!(self.kernel_socket(&vs, confine));
        tri!(sys::connect_bytes(
            r.as_fd(),
            &wire::emit_sockaddr(local),
            true
        ));
        match vs.kind {
            Kind::Stream => {
                vs.set_phase(Phase::KernelBound(Arc::new(r)));
                value(0)
            }
            Kind::Dgram | Kind::Icmp | Kind::Raw => {
                tri!(self.swap_in(n, (ino, &vs), r.as_fd()));
                self.adopt_kernel_dgram(&vs, Arc::new(r));
                value(0)
            }
        }
    }

    async fn listen(self: &Arc<Self>, n: &Notification) -> Reply {
        let (ino, vs) = match self.lookup(n) {
            Ok(Some(x)) => x,
            Ok(None) => return CONTINUE,
            Err(r) => return r,
        };
        if vs.kind != Kind::Stream {
            return errno(Errno::EOPNOTSUPP);
        }
        let backlog = (n.args[1] as u32 as i32).clamp(1, 4096);
        let bound = match &*vs.phase() {
            Phase::VirtualBound(a) => Some(*a),
            Phase::Fresh | Phase::Failed(_) if self.backend.enabled() => {
                Some(vs.family.unspecified())
            }
            Phase::Listening(_) => return value(0),
            Phase::Connecting | Phase::Connected { .. } => return errno(Errno::EINVAL),
            _ => None,
        };
        if let Some(local) = bound {
            return self
                .listen_virtual(n, ino, &vs, local, backlog as usize)
                .await;
        }
        let r = match vs.kernel_bound() {
            Some(r) => r,
            None => {
                // listen() on an unbound socket binds an ephemeral port first.
                let r = tri!(self.kernel_socket(&vs, true));
                let any = wire::emit_sockaddr(vs.family.loopback(0));
                tri!(sys::connect_bytes(r.as_fd(), &any, true));
                Arc::new(r)
            }
        };
        let backlog = sock::Backlog::new(backlog).unwrap_or(sock::Backlog::MAXCONN);
        tri!(sock::listen(&r.as_fd(), backlog));
        tri!(self.swap_in(n, (ino, &vs), r.as_fd()));
        vs.set_phase(Phase::Fresh);
        value(0)
    }

    async fn accept(self: &Arc<Self>, n: &Notification) -> Reply {
        let (ino, vs) = match self.lookup(n) {
            Ok(Some(x)) => x,
            Ok(None) => return CONTINUE,
            Err(r) => return r,
        };
        if vs.kind != Kind::Stream {
            // sock_no_accept: datagram sockets do not accept.
            return errno(Errno::EOPNOTSUPP);
        }
        let listening = match &*vs.phase() {
            Phase::Listening(l) => l.clone(),
            _ => return errno(Errno::EINVAL),
        };
        self.accept_virtual(n, (ino, &vs), listening).await
    }

    fn shutdown(&self, n: &Notification) -> Reply {
        let (_, vs) = match self.lookup(n) {
            Ok(Some(x)) => x,
            Ok(None) => return CONTINUE,
            Err(r) => return r,
        };
        let how = n.args[1] as u32 as i32;
        if !(libc::SHUT_RD..=libc::SHUT_RDWR).contains(&how) {
            return errno(Errno::EINVAL);
        }
        let over = vs.stream_over()
            || vs.live_stream().is_some_and(|s| {
                self.backend
                    .stream_closed(&s.lock().unwrap_or_else(|e| e.into_inner()))
            });
        let mut phase = vs.phase();
        match &*phase {
            // inet_shutdown: a connection that is over (TCP_CLOSE) is not connected.
            Phase::Connected { .. } if over => errno(Errno::ENOTCONN),
            // The kernel shuts the program's end; the pump sees EOF and sends a FIN.
            Phase::Connected { .. } => {
                vs.shut_down_while_held();
                CONTINUE
            }
            // inet_shutdown on a listener: shutting its receive side stops listening
            // (queued connections are reset, accept then fails with EINVAL, listen may
            // be called again); its send side alone changes nothing.
            Phase::Listening(_) => {
                if how != libc::SHUT_WR {
                    *phase = Phase::Fresh;
                }
                value(0)
            }
            // The kernel shuts the program's end: its sends then fail with EPIPE and
            // its receives see end of file, as udp's shutdown makes them.
            Phase::Datagram(d) if d.peer().is_some() => CONTINUE,
            _ => errno(Errno::ENOTCONN),
        }
    }

    // ---- ioctl(2) -------------------------------------------------------------------

    /// The socket ioctls the filter traps (`filter::TRAPPED_IOCTLS`) on our sockets; on
    /// any other descriptor they are the kernel's.
    fn ioctl(&self, n: &Notification) -> Reply {
        let (_, vs) = match self.lookup(n) {
            Ok(Some(x)) => x,
            Ok(None) => return CONTINUE,
            Err(r) => return r,
        };
        let request = n.args[1] as u32;
        if (0x8910..=0x8933).contains(&request) {
            return self.interface_ioctl(n, vs.family, request);
        }
        match (request, vs.kind) {
            // tcp_ioctl: no urgent data is carried, so never at the mark.
            (0x8905, Kind::Stream) => {
                tri!(self
                    .kernel
                    .write_memory(n.pid, n.args[2], &0i32.to_ne_bytes()));
                value(0)
            }
            // udp_ioctl and ping sockets have no SIOCATMARK.
            (0x8905, _) => errno(Errno::ENOTTY),
            // sock_get_timestamp: the last datagram's arrival, if one was received.
            (0x8906 | 0x8907, _) => {
                let at = match &*vs.phase() {
                    Phase::Datagram(d) => d.last_arrival(),
                    _ => None,
                };
                let Some(at) = at else {
                    return errno(Errno::ENOENT);
                };
                let stamp = wire::emit_timestamp(at, request == 0x8907);
                tri!(self.kernel.write_memory(n.pid, n.args[2], &stamp));
                value(0)
            }
            _ => errno(Errno::ENOENT),
        }
    }

    /// `SIOCGIF*` on one of our sockets: the `struct ifreq` is copied in, the request made
    /// on a kernel socket of the same family, and the result copied back, so the program
    /// gets what an internet socket answers (the `AF_UNIX` socket behind a virtual one
    /// answered `ENOTTY`). The interfaces are the host's: the virtual networks' are not
    /// listed here yet (their addresses are, through the netlink proxy).
    /// `SIOCGIFCONF`: the host's list, with the virtual networks' IPv4 addresses on `lo`
    /// (where the netlink proxy shows them too; netlink.rs). As `dev_ifconf`: a NULL
    /// buffer asks for the length; a short one takes the entries that fit whole.
    fn interface_list(&self, n: &Notification, family: Family) -> Reply {
        let mut ifc = [0u8; 16];
        tri!(self.kernel.read_memory(n.pid, n.args[2], &mut ifc));
        let len = i32::from_ne_bytes(ifc[..4].try_into().unwrap_or_default());
        let buf = u64::from_ne_bytes(ifc[8..].try_into().unwrap_or_default());
        let af = match family {
            Family::V4 => AddressFamily::Inet,
            Family::V6 => AddressFamily::Inet6,
        };
        let model = tri!(sock::socket(
            af,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None
        ));
        let mut list = tri!(sys::ifconf(model.as_fd()));
        for (i, (ip, _)) in self.virtual_v4().into_iter().enumerate() {
            let mut entry = [0u8; sys::IFREQ_LEN];
            let name = format!("{VIRTUAL_LABEL}{i}");
            entry[..name.len()].copy_from_slice(name.as_bytes());
            entry[16..32].copy_from_slice(&wire::emit_sockaddr(SocketAddr::from((ip, 0))));
            list.extend_from_slice(&entry);
        }
        let written = if buf == 0 {
            list.len()
        } else {
            let room = usize::try_from(len).unwrap_or(0) / sys::IFREQ_LEN * sys::IFREQ_LEN;
            let fit = room.min(list.len());
            tri!(self.kernel.write_memory(n.pid, buf, &list[..fit]));
            fit
        };
        tri!(self
            .kernel
            .write_memory(n.pid, n.args[2], &(written as i32).to_ne_bytes()));
        value(0)
    }

    /// The virtual networks' IPv4 addresses with their prefix lengths.
    fn virtual_v4(&self) -> Vec<(std::net::Ipv4Addr, u8)> {
        self.backend
            .local_addresses()
            .into_iter()
            .filter_map(|(ip, len)| match ip {
                std::net::IpAddr::V4(a) => Some((a, len)),
                std::net::IpAddr::V6(_) => None,
            })
            .collect()
    }

    /// `SIOCGIF*` on `lo:ztN`, the label of the Nth virtual IPv4 address, answered from
    /// it as Linux answers for an address label of `lo` (index 1, as netlink and
    /// `IP_PKTINFO` report); `None` for any other name.
    fn virtual_interface(
        &self,
        request: u32,
        ifr: &mut [u8; sys::IFREQ_LEN],
    ) -> Option<Result<(), Errno>> {
        let name = ifr[..16].split(|b| *b == 0).next()?;
        let index: usize = std::str::from_utf8(name.strip_prefix(VIRTUAL_LABEL.as_bytes())?)
            .ok()?
            .parse()
            .ok()?;
        let Some(&(ip, len)) = self.virtual_v4().get(index) else {
            return Some(Err(Errno::ENODEV));
        };
        let mask = std::net::Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0),
        );
        let broadcast = std::net::Ipv4Addr::from(u32::from(ip) | !u32::from(mask));
        let link = self.backend.link_of(ip.into());
        let sockaddr = |a: std::net::Ipv4Addr| wire::emit_sockaddr(SocketAddr::from((a, 0)));
        let data = &mut ifr[16..];
        data.fill(0);
        match request {
            0x8915 => data[..16].copy_from_slice(&sockaddr(ip)),
            0x891b => data[..16].copy_from_slice(&sockaddr(mask)),
            0x8919 => data[..16].copy_from_slice(&sockaddr(broadcast)),
            // IFF_UP | IFF_BROADCAST | IFF_RUNNING | IFF_MULTICAST
            0x8913 => data[..2].copy_from_slice(&0x1043u16.to_ne_bytes()),
            0x8921 => {
                let mtu = link
                    .and_then(|l| i32::try_from(l.mtu).ok())
                    .unwrap_or(options::VIRTUAL_PATH_MTU);
                data[..4].copy_from_slice(&mtu.to_ne_bytes());
            }
            0x8933 => data[..4].copy_from_slice(&1i32.to_ne_bytes()),
            // ARPHRD_ETHER and the MAC (sa_family, then sa_data).
            0x8927 => {
                data[..2].copy_from_slice(&1u16.to_ne_bytes());
                data[2..8].copy_from_slice(&link.map(|l| l.mac).unwrap_or_default());
            }
            _ => return Some(Err(Errno::EINVAL)),
        }
        Some(Ok(()))
    }

    fn interface_ioctl(&self, n: &Notification, family: Family, request: u32) -> Reply {
        if request == 0x8912 {
            return self.interface_list(n, family);
        }
        let mut ifr = [0u8; sys::IFREQ_LEN];
        tri!(self.kernel.read_memory(n.pid, n.args[2], &mut ifr));
        if !self.kernel.id_valid(n.id) {
            return Reply::Done;
        }
        if let Some(r) = self.virtual_interface(request, &mut ifr) {
            tri!(r);
            tri!(self.kernel.write_memory(n.pid, n.args[2], &ifr));
            return value(0);
        }
        let af = match family {
            Family::V4 => AddressFamily::Inet,
            Family::V6 => AddressFamily::Inet6,
        };
        let model = tri!(sock::socket(
            af,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None
        ));
        tri!(sys::ifreq_ioctl(model.as_fd(), request, &mut ifr));
        tri!(self.kernel.write_memory(n.pid, n.args[2], &ifr));
        value(0)
    }

    // ---- names and options ----------------------------------------------------------

    fn name(&self, n: &Notification, side: NameSide) -> Reply {
        let (_, vs) = match self.lookup(n) {
            Ok(Some(x)) => x,
            Ok(None) => return CONTINUE,
            Err(r) => return r,
        };
        let kernel = vs.kernel_bound();
        let addr = {
            let phase = vs.phase();
            match (&*phase, side) {
                (Phase::Connected { peer, .. }, NameSide::Peer) => Some(*peer),
                (Phase::Datagram(d), NameSide::Peer) => match d.peer() {
                    Some(p) => Some(p),
                    None => return errno(Errno::ENOTCONN),
                },
                // ip4_datagram_connect/ip6_datagram_connect: connecting an unbound
                // (wildcard) socket gives it the source address of the route.
                (Phase::Datagram(d), NameSide::Local) => Some(match d.peer() {
                    Some(p) if d.local.ip().is_unspecified() => {
                        let src = self.source_address(p.ip()).unwrap_or(d.local.ip());
                        SocketAddr::new(src, d.local.port())
                    }
                    _ => d.local,
                }),
                (_, NameSide::Peer) => return errno(Errno::ENOTCONN),
                (Phase::Connected { local, .. }, NameSide::Local) => Some(*local),
                (Phase::VirtualBound(a), NameSide::Local) => Some(*a),
                (Phase::Listening(l), NameSide::Local) => Some(l.local),
                (Phase::KernelBound(_), NameSide::Local) => None,
                (_, NameSide::Local) => Some(vs.family.unspecified()),
            }
        };
        let bytes = match (addr, kernel) {
            (Some(a), _) => wire::emit_sockaddr(self.presented(&vs, a)),
            (None, Some(r)) => tri!(sys::socket_name(r.as_fd(), NameSide::Local)),
            (None, None) => wire::emit_sockaddr(vs.family.unspecified()),
        };
        tri!(tracee::write_with_len(
            &*self.kernel,
            n.pid,
            n.args[1],
            n.args[2],
            &bytes,
            true
        ));
        value(0)
    }

    /// The virtual address a datagram to `peer` leaves from: ours on the peer's subnet,
    /// else our first of its family.
    fn source_address(&self, peer: std::net::IpAddr) -> Option<std::net::IpAddr> {
        let peer = crate::backend::canonical(peer);
        let ours = self.backend.local_addresses();
        let same_family = |a: &std::net::IpAddr| a.is_ipv4() == peer.is_ipv4();
        let on_subnet =
            |(a, len): &(std::net::IpAddr, u8)| netstack::prefix_contains(*a, *len, peer);
        ours.iter()
            .find(|x| on_subnet(x))
            .or_else(|| ours.iter().find(|(a, _)| same_family(a)))
            .map(|(a, _)| *a)
    }

    /// Is `local` (a virtual TCP address with a port) taken by another of the program's
    /// bound or listening virtual TCP sockets, as `inet_csk_bind_conflict` sees it? The
    /// addresses overlap when equal or when either is a wildcard (an IPv6 wildcard only
    /// covers IPv4 without `IPV6_V6ONLY`); both sockets with `SO_REUSEPORT` share, and so
    /// do two with `SO_REUSEADDR` while neither listens.
    fn virtual_port_taken(&self, vs: &Arc<VSocket<B>>, local: SocketAddr) -> bool {
        let flag =
            |s: &VSocket<B>, name| s.option_int(libc::SOL_SOCKET, name).is_some_and(|v| v != 0);
        let covers = |s: &VSocket<B>, a: std::net::IpAddr, other: std::net::IpAddr| {
            let a = crate::backend::canonical(a);
            let other = crate::backend::canonical(other);
            if !a.is_unspecified() {
                return a == other;
            }
            let v6only = s
                .option_int(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)
                .is_some_and(|v| v != 0);
            s.family == Family::V4 && other.is_ipv4()
                || s.family == Family::V6 && (other.is_ipv6() || !v6only)
        };
        let table: Vec<Arc<VSocket<B>>> = self.table().values().cloned().collect();
        table.iter().any(|other| {
            if Arc::ptr_eq(other, vs) || other.kind != Kind::Stream {
                return false;
            }
            let (theirs, listening) = match &*other.phase() {
                Phase::VirtualBound(a) => (*a, false),
                Phase::Listening(l) => (l.local, true),
                _ => return false,
            };
            if theirs.port() != local.port()
                || !(covers(vs, local.ip(), theirs.ip()) || covers(other, theirs.ip(), local.ip()))
            {
                return false;
            }
            let share = flag(vs, libc::SO_REUSEPORT) && flag(other, libc::SO_REUSEPORT)
                || !listening && flag(vs, libc::SO_REUSEADDR) && flag(other, libc::SO_REUSEADDR);
            !share
        })
    }

    /// An address as the program's socket family shows it (v4-mapped on IPv6 sockets).
    pub(crate) fn presented(&self, vs: &VSocket<B>, a: SocketAddr) -> SocketAddr {
        match (vs.family, a) {
            (Family::V6, SocketAddr::V4(v4)) => {
                SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port()))
            }
            _ => a,
        }
    }

    /// `setsockopt(2)`: arguments read and checked once (options.rs, [`SetCall`]), the
    /// capability checked before anything acts, then the kernel decides: the real
    /// socket once there is one, else the model ([`Supervisor::option_model`]). What the
    /// model accepts is recorded and, per the options table, acted on.
    fn setsockopt(&self, n: &Notification) -> Reply {
        let (level, name) = (n.args[1] as u32 as i32, n.args[2] as u32 as i32);
        let (_, vs) = match self.lookup(n) {
            Ok(Some(x)) => x,
            // Binding a socket that is not ours to a device could undo a loopback
            // socket's confinement (needs CAP_NET_RAW; refused as to a program without
            // it). Decided on the registers alone, nothing read.
            Ok(None)
                if level == libc::SOL_SOCKET
                    && matches!(name, libc::SO_BINDTODEVICE | libc::SO_BINDTOIFINDEX)
                    && !self.left_our_netns(n.pid) =>
            {
                return errno(Errno::EPERM)
            }
            Ok(None) => return CONTINUE,
            Err(r) => return r,
        };
        let call = tri!(SetCall::read(&*self.kernel, n.pid, &n.args));
        if !self.kernel.id_valid(n.id) {
            return Reply::Done;
        }
        debug_assert_eq!((call.level, call.name), (level, name));
        let role = options::role(level, name);
        if let Some(o) = options::lookup(level, name).filter(|o| o.role == Role::Dropped) {
            debug!(
                option = o.text,
                "option dropped: it carries the program's pointers"
            );
            return value(0);
        }
        if let Some(e) = crate::raw::refused_option(&vs, level, name, call.bytes()) {
            return errno(e);
        }
        let device = level == libc::SOL_SOCKET
            && matches!(name, libc::SO_BINDTODEVICE | libc::SO_BINDTOIFINDEX);
        if device && vs.kernel_bound().is_some() {
            // A kernel socket of ours is confined to loopback by a device binding
            // (`confine_to_loopback`), which no program may undo.
            return errno(Errno::EPERM);
        }
        // sock_bindtoindex_locked: a first device binding is anyone's (Linux 5.7), a
        // change of it needs CAP_NET_RAW.
        let first_binding = device && !vs.device_bound();
        if let Some(cap) =
            Self::option_capability(level, name, call.bytes()).filter(|_| !first_binding)
        {
            if !self.capable(n.pid, cap) {
                return errno(options::refusal(level, name));
            }
        }
        let bound = vs.kernel_bound();
        let quick = bound
            .is_none()
            .then(|| options::set_without_model(vs.kind == Kind::Stream, &call))
            .flatten();
        if let Some(answer) = quick {
            tri!(answer);
        } else {
            let model = match bound {
                Some(r) => Ok(r),
                None => self.option_model(&vs),
            };
            match &model {
                Ok(fd) => tri!(sys::setsockopt_as(
                    fd.as_fd(),
                    level,
                    name,
                    call.arg(),
                    call.len
                )),
                // No model to ask: an unreadable value faults.
                Err(e) => {
                    debug!(%e, "no model socket for setsockopt");
                    if call.value.is_none() {
                        return errno(Errno::EFAULT);
                    }
                }
            }
        }
        let val = call.value.unwrap_or_default();
        let mut opts = vs.options();
        opts.retain(|(l, o, _)| (*l, *o) != (level, name));
        opts.push((level, name, OptionValue::from_slice(&val)));
        drop(opts);
        match role {
            Some(Role::Tune) => {
                if let Some(stream) = vs.live_stream() {
                    let stream = stream.lock().unwrap_or_else(|e| e.into_inner());
                    self.backend.stream_tune(&stream, vs.tuning());
                }
                value(0)
            }
            // The program may change the value in between; it only sets its own
            // timeouts.
            Some(Role::ProgramEnd) => CONTINUE,
            _ => value(0),
        }
    }

    /// The model an emulated socket's options are put to (options.rs): a fresh kernel
    /// socket like it, never bound, with the options set so far replayed.
    fn option_model(&self, vs: &VSocket<B>) -> Result<Arc<OwnedFd>, Errno> {
        self.kernel_socket(vs, false).map(Arc::new)
    }

    /// `getsockopt(2)`: the kernel answers (the real socket, else the model), with the
    /// program's own lengths and pointers, so its checks come in its order; then the
    /// options the table says depend on the virtual socket's state are answered from it.
    fn getsockopt(&self, n: &Notification) -> Reply {
        let (ino, vs) = match self.lookup(n) {
            Ok(Some(x)) => x,
            Ok(None) => return CONTINUE,
            Err(r) => return r,
        };
        let mut call = GetCall::read(&*self.kernel, n.pid, &n.args);
        let (level, name) = (call.level, call.name);
        if options::role(level, name) == Some(Role::NotModelled) {
            return errno(Errno::EOPNOTSUPP);
        }
        let bound = vs.kernel_bound();
        let quick = if bound.is_none() {
            options::get_without_model(&mut call)
        } else {
            None
        };
        let asked = match quick {
            Some(answer) => answer,
            None => {
                let model = match bound {
                    Some(r) => Ok(r),
                    None => self.option_model(&vs),
                };
                match &model {
                    Ok(fd) => {
                        let len = call.len_arg();
                        sys::getsockopt_as(fd.as_fd(), level, name, call.buf.as_deref_mut(), len)
                    }
                    Err(e) => {
                        debug!(%e, "no model socket for getsockopt");
                        self.option_fallback(&vs, &mut call)
                    }
                }
            }
        };
        let state = match options::role(level, name) {
            Some(Role::State(st)) => Some(st),
            _ => None,
        };
        let (val, reported) = match (asked, state) {
            (Ok(len), None) => {
                let b = call.buf.as_deref().unwrap_or(&[]);
                (b[..(len as usize).min(b.len())].to_vec(), len)
            }
            (Err(e), None) => return errno(e),
            (asked, Some(st)) => tri!(self.state_option(ino, &vs, st, asked, &call)),
        };
        tri!(call.write_back(&*self.kernel, n.pid, &val, reported));
        value(0)
    }

    /// Without a model: the value the program set, or the Linux default of a common
    /// option, into `call`'s buffer.
    fn option_fallback(&self, vs: &VSocket<B>, call: &mut GetCall) -> Result<u32, Errno> {
        let fixed = match (call.level, call.name) {
            (libc::SOL_SOCKET, libc::SO_TYPE) => Some(vs.kind.sock_type()),
            (libc::SOL_SOCKET, libc::SO_DOMAIN) => Some(vs.family.raw()),
            (libc::SOL_SOCKET, libc::SO_PROTOCOL) => Some(vs.protocol),
            _ => None,
        };
        let v = match (fixed, vs.option_bytes(call.level, call.name)) {
            (Some(v), _) => v.to_ne_bytes().to_vec(),
            (None, Some(v)) => v,
            (None, None) => {
                options::fallback_default(vs.kind == Kind::Stream, call.level, call.name)
                    .ok_or(Errno::ENOPROTOOPT)?
                    .to_ne_bytes()
                    .to_vec()
            }
        };
        let len = call.len.ok_or(Errno::EFAULT)?;
        if (len as i32) < 0 {
            return Err(Errno::EINVAL);
        }
        let n = v.len().min(len as usize);
        let buf = call.buf.as_mut().ok_or(Errno::EFAULT)?;
        buf[..n].copy_from_slice(&v[..n]);
        Ok(n as u32)
    }

    /// What `ask` learns from the backend about the connection `vs` is pumped to, while
    /// there is one (under one lock of it).
    fn ask_stream<R>(&self, vs: &VSocket<B>, ask: impl FnOnce(&B, &B::Stream) -> R) -> Option<R> {
        let stream = vs.live_stream()?;
        let stream = stream.lock().unwrap_or_else(|e| e.into_inner());
        Some(ask(&self.backend, &stream))
    }

    /// A [`Role::State`] option: the kernel's answer `asked` (its length checks, its
    /// value layout) with the virtual socket's state put in.
    fn state_option(
        &self,
        ino: u64,
        vs: &VSocket<B>,
        st: options::State,
        asked: Result<u32, Errno>,
        call: &GetCall,
    ) -> Result<(Vec<u8>, u32), Errno> {
        let patch = |v: &[u8]| -> Result<(Vec<u8>, u32), Errno> {
            let len = asked?;
            let mut b = call.buf.as_deref().unwrap_or(&[]).to_vec();
            b.truncate(len as usize);
            let n = b.len().min(v.len());
            b[..n].copy_from_slice(&v[..n]);
            Ok((b, len))
        };
        match st {
            options::State::Listening => {
                let on = matches!(&*vs.phase(), Phase::Listening(_));
                patch(&i32::from(on).to_ne_bytes())
            }
            options::State::Error => {
                // Reading SO_ERROR clears it, once the arguments are good.
                let mut phase = vs.phase();
                let e = match &*phase {
                    Phase::Failed(e) => *e as i32,
                    // A datagram socket's error from the network (udp.rs).
                    Phase::Datagram(d) => match d.error() {
                        Some(e) => {
                            let r = patch(&(e as i32).to_ne_bytes())?;
                            d.take_error();
                            return Ok(r);
                        }
                        None => 0,
                    },
                    _ => 0,
                };
                if e == 0 {
                    // Nothing of ours pending: the kernel socket's own (the model's 0).
                    return patch(&[]);
                }
                let r = patch(&e.to_ne_bytes())?;
                *phase = Phase::Fresh;
                Ok(r)
            }
            options::State::Tcpi => {
                // struct tcp_info: tcpi_state first (TCP_ESTABLISHED = 1, SYN_SENT = 2,
                // CLOSE = 7, LISTEN = 10); a kernel-bound socket's own is right.
                let state: u8 = match &*vs.phase() {
                    Phase::Listening(_) => 10,
                    Phase::Connected { .. } => 1,
                    Phase::Connecting => 2,
                    _ => 7,
                };
                let (mut b, len) = patch(&[state])?;
                let (mss, rtt, pmtu) = self
                    .ask_stream(vs, |b, s| {
                        (b.stream_mss(s), b.stream_rtt(s), b.stream_path_mtu(s))
                    })
                    .unwrap_or_default();
                // tcpi_pmtu (offset 60): the path MTU, what IP_MTU says.
                if let Some(pmtu) = pmtu {
                    if let Some(at) = b.get_mut(60..64) {
                        at.copy_from_slice(&pmtu.to_ne_bytes());
                    }
                }
                // tcpi_snd_mss (offset 16): what TCP_MAXSEG says, once connected.
                if let Some(mss) = mss {
                    if let Some(at) = b.get_mut(16..20) {
                        at.copy_from_slice(&u32::from(mss).to_ne_bytes());
                    }
                }
                // tcpi_rtt and tcpi_rttvar (offsets 68 and 72, µs): after its first
                // sample m Linux's estimator holds srtt m and mdev m/2 (tcp_rtt_estimator),
                // and the handshake is the sample a fresh connection has.
                if let Some(rtt) = rtt {
                    let us = u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX).max(1);
                    if let Some(at) = b.get_mut(68..72) {
                        at.copy_from_slice(&us.to_ne_bytes());
                    }
                    if let Some(at) = b.get_mut(72..76) {
                        at.copy_from_slice(&(us / 2).max(1).to_ne_bytes());
                    }
                }
                Ok((b, len))
            }
            options::State::MaxSeg => match self.ask_stream(vs, |b, s| b.stream_mss(s)).flatten() {
                Some(mss) => {
                    let set = vs
                        .option_int(libc::IPPROTO_TCP, libc::TCP_MAXSEG)
                        .filter(|v| *v > 0);
                    let v = set.map_or(i32::from(mss), |set| set.min(i32::from(mss)));
                    patch(&v.to_ne_bytes())
                }
                None => patch(&[]),
            },
            options::State::Cookie => patch(&ino.to_ne_bytes()),
            options::State::V6Only => {
                let bound = match &*vs.phase() {
                    Phase::VirtualBound(a) => Some(*a),
                    Phase::Listening(l) => Some(l.local),
                    _ => None,
                };
                let specific = |a: SocketAddr| match a {
                    SocketAddr::V6(a) => {
                        !a.ip().is_unspecified() && a.ip().to_ipv4_mapped().is_none()
                    }
                    SocketAddr::V4(_) => false,
                };
                match bound {
                    Some(a) if specific(a) => patch(&1i32.to_ne_bytes()),
                    _ => patch(&[]),
                }
            }
            options::State::PathMtu => {
                let (connected, peer) = match &*vs.phase() {
                    Phase::Connected { .. } => (true, None),
                    Phase::Datagram(d) => (d.peer().is_some(), d.peer()),
                    _ => (false, None),
                };
                match asked {
                    Err(Errno::ENOTCONN) if connected => {
                        // A connection knows its network's MTU; a connected datagram
                        // socket has its peer's network's (Linux: the route's).
                        let mtu = self
                            .ask_stream(vs, |b, s| b.stream_path_mtu(s))
                            .flatten()
                            .or_else(|| Some(self.backend.link_of(peer?.ip())?.mtu))
                            .and_then(|m| i32::try_from(m).ok())
                            .unwrap_or(options::VIRTUAL_PATH_MTU);
                        options::int_answer(call.len, mtu)
                    }
                    asked => asked.map(|len| {
                        let b = call.buf.as_deref().unwrap_or(&[]);
                        (b[..(len as usize).min(b.len())].to_vec(), len)
                    }),
                }
            }
        }
    }

    // ---- data calls -------------------------------------------------------------------

    /// For a stream socket: `Some(reply)` without touching memory.
    fn stream_data(&self, vs: &VSocket<B>, sending: bool) -> Option<Reply> {
        if vs.kind != Kind::Stream {
            return None;
        }
        Some(match &*vs.phase() {
            // The data path of a connected stream is the socketpair itself.
            Phase::Connected { .. } => CONTINUE,
            _ if sending => errno(Errno::EPIPE),
            _ => errno(Errno::ENOTCONN),
        })
    }

    async fn data(self: &Arc<Self>, n: &Notification) -> Reply {
        let (ino, vs) = match self.lookup(n) {
            Ok(Some(x)) => x,
            Ok(None) => return CONTINUE,
            Err(r) => return r,
        };
        let datagram = match &*vs.phase() {
            Phase::Datagram(d) => Some(d.clone()),
            _ => None,
        };
        if let Some(d) = datagram {
            return self.udp_call(n, &vs, d).await;
        }
        match n.nr {
            libc::SYS_sendto => self.sendto(n, ino, &vs).await,
            libc::SYS_sendmsg => self.sendmsg(n, ino, &vs, false).await,
            libc::SYS_sendmmsg => self.sendmsg(n, ino, &vs, true).await,
            _ => self.recv(n, &vs).await,
        }
    }

    /// `sendto`/`sendmsg` naming an address on a connected stream: tcp_sendmsg ignores
    /// the address, but the program's end, an AF_UNIX stream socket, would answer
    /// EISCONN. The data is written through a duplicate of that end (`Kernel::grab`),
    /// in order with what the program wrote before; where no duplicate can be had
    /// (`pidfd_getfd` denied), the call continues and the program sees EISCONN.
    async fn stream_send_named(
        &self,
        n: &Notification,
        ino: u64,
        vs: &VSocket<B>,
        data: &[u8],
        flags: i32,
    ) -> Reply {
        let Ok(end) = self.kernel.grab(n.pid, ino) else {
            return CONTINUE;
        };
        let blocking = flags & libc::MSG_DONTWAIT == 0 && !tri!(self.program_nonblocking(n));
        let flags = (flags & libc::MSG_MORE) | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        let timeout = vs.timeout(libc::SO_SNDTIMEO);
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            match sys::sendto_bytes(end.as_fd(), data, flags, &[]) {
                Err(Errno::EAGAIN) if blocking => {
                    let dup = tri!(end.try_clone().map_err(|_| Errno::ENOBUFS));
                    let afd =
                        tri!(sys::async_fd(dup, Interest::WRITABLE).map_err(|_| Errno::ENOBUFS));
                    let expiry = async {
                        match deadline {
                            Some(d) => tokio::time::sleep_until(d).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        r = afd.writable() => drop(r),
                        () = expiry => return errno(Errno::EAGAIN),
                        () = self.given_up(n) => return self.give_up_reply(n, timeout.is_some()),
                    }
                }
                Ok(sent) => return value(sent as i64),
                Err(e) => return errno(e),
            }
        }
    }

    async fn sendto(self: &Arc<Self>, n: &Notification, ino: u64, vs: &Arc<VSocket<B>>) -> Reply {
        if vs.kind == Kind::Stream
            && n.args[4] != 0
            && matches!(&*vs.phase(), Phase::Connected { .. })
        {
            let len = (n.args[2] as usize).min(MAX_COPY);
            let data = tri!(tracee::read_bytes(&*self.kernel, n.pid, n.args[1], len));
            if !self.kernel.id_valid(n.id) {
                return Reply::Done;
            }
            return self
                .stream_send_named(n, ino, vs, &data, n.args[3] as u32 as i32)
                .await;
        }
        if let Some(r) = self.stream_data(vs, true) {
            return r;
        }
        let (dest, data) = tri!(self.read_sendto(n));
        if !self.kernel.id_valid(n.id) {
            return Reply::Done;
        }
        let flags = n.args[3] as u32 as i32;
        let Some(dest) = dest else {
            // No address, on a socket with no peer (udp_sendmsg checks MSG_OOB first).
            let oob = flags & libc::MSG_OOB != 0;
            if oob && crate::udp::refuses_oob(vs.kind, vs.family.unspecified()) {
                return errno(Errno::EOPNOTSUPP);
            }
            return errno(Errno::EDESTADDRREQ);
        };
        self.send_datagram(n, ino, vs, &dest, &data, flags).await
    }

    /// First datagram of an unconnected UDP/ICMP socket: pick the route from `dest` (our
    /// copy), send it from a kernel socket and swap that in.
    async fn send_datagram(
        self: &Arc<Self>,
        n: &Notification,
        ino: u64,
        vs: &Arc<VSocket<B>>,
        dest: &[u8],
        data: &[u8],
        flags: i32,
    ) -> Reply {
        let dest = match tri!(vs.parse_destination(dest)) {
            SockAddr::Unspec => return errno(Errno::EAFNOSUPPORT),
            SockAddr::Inet(a) => a,
        };
        if flags & libc::MSG_OOB != 0 && crate::udp::refuses_oob(vs.kind, dest) {
            return errno(Errno::EOPNOTSUPP);
        }
        match route(&*self.backend, self.policy, dest, true) {
            Route::Virtual => {
                let dest = crate::backend::canonical_addr(dest);
                self.udp_send(n, ino, vs, data, dest).await
            }
            Route::Unreachable => errno(Errno::ENETUNREACH),
            route @ (Route::Loopback | Route::Host) => {
                let r = tri!(self.kernel_socket(vs, route == Route::Loopback));
                let flags = flags & (libc::MSG_DONTROUTE | libc::MSG_CONFIRM | libc::MSG_MORE);
                let sent = tri!(sys::sendto_bytes(
                    r.as_fd(),
                    data,
                    flags | libc::MSG_NOSIGNAL,
                    &wire::emit_sockaddr(dest)
                ));
                tri!(self.swap_in(n, (ino, vs), r.as_fd()));
                self.adopt_kernel_dgram(vs, Arc::new(r));
                value(sent as i64)
            }
        }
    }

    async fn sendmsg(
        self: &Arc<Self>,
        n: &Notification,
        ino: u64,
        vs: &Arc<VSocket<B>>,
        many: bool,
    ) -> Reply {
        let flags = n.args[if many { 3 } else { 2 }] as u32 as i32;
        if !many && vs.kind == Kind::Stream && matches!(&*vs.phase(), Phase::Connected { .. }) {
            // The header alone tells whether the call names an address (rare: then
            // the data is read and sent here); without one it is the kernel's.
            let mut raw = [0u8; MSGHDR_LEN];
            tri!(self.kernel.read_memory(n.pid, n.args[1], &mut raw));
            if MsgHdr::parse(&raw).name == 0 {
                return CONTINUE;
            }
            let (_, data) = tri!(self.read_msghdr_data(n.pid, n.args[1]));
            if !self.kernel.id_valid(n.id) {
                return Reply::Done;
            }
            return self.stream_send_named(n, ino, vs, &data, flags).await;
        }
        if let Some(r) = self.stream_data(vs, true) {
            return r;
        }
        if many && n.args[2] as u32 == 0 {
            return value(0);
        }
        let (_, dest, data) = tri!(self.read_send_msghdr(n.pid, n.args[1]));
        let Some(dest) = dest else {
            return errno(Errno::EDESTADDRREQ);
        };
        if !self.kernel.id_valid(n.id) {
            return Reply::Done;
        }
        let reply = self.send_datagram(n, ino, vs, &dest, &data, flags).await;
        match (many, reply) {
            (true, Reply::Answer(Response::Value(sent))) => {
                // sendmmsg: the first message is sent (and decided what the socket is);
                // report its length in msg_len, then send the rest as that socket.
                let at = n.args[1] + MSGHDR_LEN as u64;
                tri!(self
                    .kernel
                    .write_memory(n.pid, at, &(sent as u32).to_ne_bytes()));
                let vlen = (n.args[2] as u32).min(1024);
                if vlen > 1 {
                    let mut rest = *n;
                    rest.args[1] += crate::udp::MMSGHDR_LEN;
                    rest.args[2] = u64::from(vlen - 1);
                    if let Reply::Answer(Response::Value(more)) =
                        Box::pin(self.dispatch(&rest)).await
                    {
                        return value(1 + more);
                    }
                }
                value(1)
            }
            (_, r) => r,
        }
    }

    async fn recv(self: &Arc<Self>, n: &Notification, vs: &VSocket<B>) -> Reply {
        if let Some(r) = self.stream_data(vs, false) {
            return r;
        }
        // An unbound UDP socket never receives anything: honour non-blocking modes, or
        // wait until the program gives up (signal, exit).
        let flags = match n.nr {
            libc::SYS_recvfrom => n.args[3],
            libc::SYS_recvmsg => n.args[2],
            _ => n.args[3],
        } as u32 as i32;
        if flags & libc::MSG_DONTWAIT != 0 || tri!(self.program_nonblocking(n)) {
            return errno(Errno::EAGAIN);
        }
        self.given_up(n).await;
        self.give_up_reply(n, false)
    }
}

/// The interface name `SIOCGIFCONF` gives the virtual IPv4 addresses: address labels
/// of `lo` (`lo:zt0`, `lo:zt1`, ...), where the netlink proxy shows them too (netlink.rs);
/// `SIOCGIF*` on such a name answers from the address.
const VIRTUAL_LABEL: &str = "lo:zt";

/// Is `a` an IPv4 address written as IPv6 (`::ffff:a.b.c.d`)?
fn is_v4_mapped(a: SocketAddr) -> bool {
    matches!(a, SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_some())
}

/// A socketpair for a socket of `kind`: (program's end, supervisor's end). Both are
/// close-on-exec here (the program's flag is set at injection); ours is non-blocking.
pub(crate) fn socketpair(kind: Kind, nonblocking: bool) -> Result<(OwnedFd, OwnedFd), Errno> {
    let ty = match kind {
        Kind::Stream => SockType::Stream,
        Kind::Dgram | Kind::Icmp | Kind::Raw => SockType::SeqPacket,
    };
    // Both ends start non-blocking (ours always is) and close-on-exec: one system call,
    // and one more only for a blocking program end. A new socket's status flags are
    // O_RDWR and O_NONBLOCK alone, so clearing them clears only O_NONBLOCK.
    let (theirs, ours) = sock::socketpair(
        AddressFamily::Unix,
        ty,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )?;
    if !nonblocking {
        fcntl(theirs.as_fd(), FcntlArg::F_SETFL(OFlag::empty()))?;
    }
    Ok((theirs, ours))
}

/// A port from the Linux default ephemeral range (32768–60999), rotating from a
/// start derived from the clock.
fn ephemeral_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let mut n = NEXT.fetch_add(1, Ordering::Relaxed);
    if n == 0 {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        NEXT.store(seed % 28_232 + 2, Ordering::Relaxed);
        n = seed % 28_232 + 1;
    }
    32_768 + (n % 28_232) as u16
}

/// Inode number of one of our fds.
/// Is TCP `port` free on the loopback address of `family` (a probe bind succeeds)?
fn loopback_port_free(family: Family, port: u16) -> bool {
    let af = match family {
        Family::V4 => AddressFamily::Inet,
        Family::V6 => AddressFamily::Inet6,
    };
    let Ok(probe) = sock::socket(af, SockType::Stream, SockFlag::SOCK_CLOEXEC, None) else {
        return true;
    };
    let one = 1i32.to_ne_bytes();
    let _ = sys::setsockopt_bytes(probe.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, &one);
    sys::connect_bytes(
        probe.as_fd(),
        &wire::emit_sockaddr(family.loopback(port)),
        true,
    ) != Err(Errno::EADDRINUSE)
}

/// Bind kernel socket `fd` to the loopback device (see [`Supervisor::kernel_socket`]).
pub(crate) fn confine_to_loopback(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    sys::setsockopt_bytes(fd, libc::SOL_SOCKET, libc::SO_BINDTODEVICE, b"lo\0")
}

pub(crate) fn inode(fd: BorrowedFd<'_>) -> Result<u64, Errno> {
    Ok(nix::sys::stat::fstat(fd)?.st_ino)
}

pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> Result<(), Errno> {
    let fl = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    let new = if on {
        fl | OFlag::O_NONBLOCK
    } else {
        fl - OFlag::O_NONBLOCK
    };
    if new != fl {
        fcntl(fd, FcntlArg::F_SETFL(new))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::NoNetwork;
    use crate::kernel::fake::FakeKernel;

    const PID: u32 = 100;
    const MEM: u64 = 0x10_000;

    fn sup(policy: Policy) -> (Arc<FakeKernel>, Arc<Supervisor<FakeKernel, NoNetwork>>) {
        let k = Arc::new(FakeKernel::default());
        k.map(PID, MEM, &[0u8; 4096]);
        let s = Arc::new(Supervisor::new(k.clone(), Arc::new(NoNetwork), policy));
        (k, s)
    }

    fn note(id: u64, nr: i64, args: [u64; 6]) -> Notification {
        Notification {
            id,
            pid: PID,
            nr,
            arch: crate::sys::AUDIT_ARCH_X86_64,
            args,
        }
    }

    async fn new_socket(
        k: &FakeKernel,
        s: &Arc<Supervisor<FakeKernel, NoNetwork>>,
        ty: i32,
    ) -> i32 {
        let n = note(
            1,
            libc::SYS_socket,
            [libc::AF_INET as u64, ty as u64, 0, 0, 0, 0],
        );
        assert_eq!(s.dispatch(&n).await, Reply::Done);
        match k.answers().last() {
            Some((1, Response::Value(fd))) => *fd as i32,
            other => panic!("socket() answered {other:?}"),
        }
    }

    #[tokio::test]
    async fn socket_injects_a_socketpair_end_with_the_callers_flags() {
        let (k, s) = sup(Policy::default());
        let fd = new_socket(
            &k,
            &s,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
        .await;
        assert_eq!(s.socket_count(), 1);
        let flags = k.fd_flags(PID, fd).unwrap();
        assert_ne!(flags & libc::O_NONBLOCK, 0);
        assert_ne!(flags & libc::O_CLOEXEC, 0);
        // It is a Unix stream socket underneath.
        let dom = k
            .with_fd(fd, |f| {
                let mut b = [0u8; 4];
                sys::getsockopt_bytes(f.file.as_fd(), libc::SOL_SOCKET, libc::SO_DOMAIN, &mut b)
                    .unwrap();
                i32::from_ne_bytes(b)
            })
            .unwrap();
        assert_eq!(dom, libc::AF_UNIX);
    }

    #[tokio::test]
    async fn a_socket_call_abandoned_before_injection_leaves_nothing() {
        let (k, s) = sup(Policy::default());
        k.vanish(9);
        let n = note(
            9,
            libc::SYS_socket,
            [libc::AF_INET as u64, libc::SOCK_DGRAM as u64, 0, 0, 0, 0],
        );
        assert_eq!(s.dispatch(&n).await, Reply::Done);
        assert_eq!(s.socket_count(), 0);
        assert!(k.answers().is_empty());
    }

    #[tokio::test]
    async fn closing_the_programs_end_drops_the_entry() {
        let (k, s) = sup(Policy::default());
        // A datagram socket: seen as a hang-up on our end, at once.
        let fd = new_socket(&k, &s, libc::SOCK_DGRAM).await;
        assert_eq!(s.socket_count(), 1);
        drop(k.close(fd));
        for _ in 0..100 {
            if s.socket_count() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(s.socket_count(), 0);
        // A fresh TCP socket: we hold a duplicate of the program's end until connect, so
        // the sweep sees it gone (within a second or two).
        let fd = new_socket(&k, &s, libc::SOCK_STREAM).await;
        assert_eq!(s.socket_count(), 1);
        drop(k.close(fd));
        for _ in 0..600 {
            if s.socket_count() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(s.socket_count(), 0);
    }

    #[tokio::test]
    async fn connect_outside_the_network_is_unreachable_and_decided_on_our_copy() {
        let (k, s) = sup(Policy::default());
        let fd = new_socket(&k, &s, libc::SOCK_STREAM).await;
        let addr = wire::emit_sockaddr("192.0.2.7:80".parse().unwrap());
        k.write_memory(PID, MEM, &addr).unwrap();
        let n = note(2, libc::SYS_connect, [fd as u64, MEM, 16, 0, 0, 0]);
        assert_eq!(s.dispatch(&n).await, errno(Errno::ENETUNREACH));
    }

    #[tokio::test]
    async fn bad_pointers_and_lengths() {
        let (k, s) = sup(Policy::default());
        let fd = new_socket(&k, &s, libc::SOCK_STREAM).await;
        let n = note(2, libc::SYS_connect, [fd as u64, 8, 16, 0, 0, 0]);
        assert_eq!(s.dispatch(&n).await, errno(Errno::EFAULT));
        let n = note(
            3,
            libc::SYS_connect,
            [fd as u64, MEM, u64::from(u32::MAX), 0, 0, 0],
        );
        assert_eq!(s.dispatch(&n).await, errno(Errno::EINVAL));
        let n = note(4, libc::SYS_connect, [fd as u64, MEM, 4, 0, 0, 0]);
        k.write_memory(PID, MEM, &[2, 0, 0, 0]).unwrap();
        assert_eq!(s.dispatch(&n).await, errno(Errno::EINVAL));
    }

    #[tokio::test]
    async fn a_vanished_connect_is_not_answered() {
        let (k, s) = sup(Policy::default());
        let fd = new_socket(&k, &s, libc::SOCK_STREAM).await;
        k.write_memory(
            PID,
            MEM,
            &wire::emit_sockaddr("192.0.2.7:80".parse().unwrap()),
        )
        .unwrap();
        k.vanish(5);
        let n = note(5, libc::SYS_connect, [fd as u64, MEM, 16, 0, 0, 0]);
        assert_eq!(s.dispatch(&n).await, Reply::Done);
    }

    #[tokio::test]
    async fn fds_that_are_not_ours_continue_without_reading_memory() {
        let (k, s) = sup(Policy::default());
        let (a, _b) = sock::socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::empty(),
        )
        .unwrap();
        k.install(7, a);
        // The address pointer is bad: had we read it, the answer would be EFAULT.
        for nr in [
            libc::SYS_connect,
            libc::SYS_bind,
            libc::SYS_sendto,
            libc::SYS_getsockopt,
        ] {
            let n = note(6, nr, [7, 8, 16, 0, 8, 16]);
            assert_eq!(s.dispatch(&n).await, CONTINUE, "syscall {nr}");
        }
        // Not a socket at all, or not open: the kernel gives ENOTSOCK/EBADF.
        let n = note(6, libc::SYS_connect, [55, MEM, 16, 0, 0, 0]);
        assert_eq!(s.dispatch(&n).await, CONTINUE);
    }

    #[tokio::test]
    async fn getsockopt_answers_as_an_inet_socket() {
        let (k, s) = sup(Policy::default());
        let fd = new_socket(&k, &s, libc::SOCK_DGRAM).await;
        let (val, len) = (MEM + 64, MEM + 128);
        for (name, want) in [
            (libc::SO_TYPE, libc::SOCK_DGRAM),
            (libc::SO_DOMAIN, libc::AF_INET),
            (libc::SO_PROTOCOL, libc::IPPROTO_UDP),
            (libc::SO_ERROR, 0),
        ] {
            k.write_memory(PID, len, &4u32.to_ne_bytes()).unwrap();
            let n = note(
                7,
                libc::SYS_getsockopt,
                [fd as u64, libc::SOL_SOCKET as u64, name as u64, val, len, 0],
            );
            assert_eq!(s.dispatch(&n).await, value(0));
            assert_eq!(k.peek(PID, val, 4), want.to_ne_bytes());
            assert_eq!(k.peek(PID, len, 4), 4u32.to_ne_bytes());
        }
    }

    /// The option call layer (options.rs) through the fake kernel: read-only and
    /// foreign options refused as Linux refuses them, the kernel's transformation of a
    /// value, and the argument checks in the kernel's order.
    #[tokio::test]
    async fn socket_options_follow_the_kernel() {
        let (k, s) = sup(Policy::default());
        let fd = new_socket(&k, &s, libc::SOCK_STREAM).await as u64;
        let (val, len) = (MEM + 64, MEM + 128);
        let set = |level: i32, name: i32, v: i32, optval: u64, optlen: u64| {
            k.write_memory(PID, val, &v.to_ne_bytes()).unwrap();
            note(
                9,
                libc::SYS_setsockopt,
                [fd, level as u64, name as u64, optval, optlen, 0],
            )
        };
        let get = |level: i32, name: i32, cap: u32| {
            k.write_memory(PID, len, &cap.to_ne_bytes()).unwrap();
            note(
                9,
                libc::SYS_getsockopt,
                [fd, level as u64, name as u64, val, len, 0],
            )
        };
        let refused = |e: Errno| errno(e);
        // Read-only, another protocol's, unknown level: refused, nothing recorded.
        let n = set(libc::SOL_SOCKET, libc::SO_TYPE, 1, val, 4);
        assert_eq!(s.dispatch(&n).await, refused(Errno::ENOPROTOOPT));
        let n = set(libc::IPPROTO_UDP, libc::UDP_CORK, 1, val, 4);
        assert_eq!(s.dispatch(&n).await, refused(Errno::ENOPROTOOPT));
        let n = get(libc::IPPROTO_UDP, libc::UDP_CORK, 4);
        assert_eq!(s.dispatch(&n).await, refused(Errno::EOPNOTSUPP));
        let n = set(500, 1, 1, val, 4);
        assert!(s.dispatch(&n).await != value(0));
        // A negative length first; an unreadable value of an unknown IP option is
        // ENOPROTOOPT (the option is looked at first), of SO_REUSEADDR EFAULT.
        let n = set(
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            1,
            val,
            u32::MAX as u64,
        );
        assert_eq!(s.dispatch(&n).await, refused(Errno::EINVAL));
        let n = set(libc::IPPROTO_IP, 9999, 1, 8, 4);
        assert_eq!(s.dispatch(&n).await, refused(Errno::ENOPROTOOPT));
        let n = set(libc::SOL_SOCKET, libc::SO_REUSEADDR, 1, 8, 4);
        assert_eq!(s.dispatch(&n).await, refused(Errno::EFAULT));
        // getsockopt: a NULL optlen faults before an unknown option is looked at, a
        // length of -1 is EINVAL.
        let n = note(
            9,
            libc::SYS_getsockopt,
            [fd, libc::SOL_SOCKET as u64, 9999, val, 0, 0],
        );
        assert_eq!(s.dispatch(&n).await, refused(Errno::EFAULT));
        let n = get(libc::SOL_SOCKET, 9999, u32::MAX);
        assert_eq!(s.dispatch(&n).await, refused(Errno::EINVAL));
        // The kernel doubles SO_RCVBUF; the value set is recorded for kernel sockets.
        let n = set(libc::SOL_SOCKET, libc::SO_RCVBUF, 65_536, val, 4);
        assert_eq!(s.dispatch(&n).await, value(0));
        let n = get(libc::SOL_SOCKET, libc::SO_RCVBUF, 4);
        assert_eq!(s.dispatch(&n).await, value(0));
        assert_eq!(k.peek(PID, val, 4), 131_072i32.to_ne_bytes());
        assert_eq!(k.peek(PID, len, 4), 4u32.to_ne_bytes());
        // A short length gets the first bytes, as the kernel gives them.
        let n = get(libc::IPPROTO_IP, libc::IP_TTL, 1);
        assert_eq!(s.dispatch(&n).await, value(0));
        assert_eq!(k.peek(PID, len, 4), 1u32.to_ne_bytes());
    }

    #[tokio::test]
    async fn bind_to_loopback_then_listen_swaps_in_a_kernel_listener() {
        let (k, s) = sup(Policy::default());
        let fd = new_socket(&k, &s, libc::SOCK_STREAM | libc::SOCK_CLOEXEC).await;
        k.write_memory(
            PID,
            MEM,
            &wire::emit_sockaddr("127.0.0.1:0".parse().unwrap()),
        )
        .unwrap();
        let n = note(2, libc::SYS_bind, [fd as u64, MEM, 16, 0, 0, 0]);
        assert_eq!(s.dispatch(&n).await, value(0));
        let n = note(3, libc::SYS_listen, [fd as u64, 8, 0, 0, 0, 0]);
        assert_eq!(s.dispatch(&n).await, value(0));
        // The program's fd is now a listening TCP socket on loopback, still close-on-exec.
        let (domain, listening) = k
            .with_fd(fd, |f| {
                let mut d = [0u8; 4];
                let mut l = [0u8; 4];
                sys::getsockopt_bytes(f.file.as_fd(), libc::SOL_SOCKET, libc::SO_DOMAIN, &mut d)
                    .unwrap();
                sys::getsockopt_bytes(
                    f.file.as_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_ACCEPTCONN,
                    &mut l,
                )
                .unwrap();
                (i32::from_ne_bytes(d), i32::from_ne_bytes(l))
            })
            .unwrap();
        assert_eq!((domain, listening), (libc::AF_INET, 1));
        assert_ne!(k.fd_flags(PID, fd).unwrap() & libc::O_CLOEXEC, 0);
        // Calls on it are no longer ours.
        let n = note(4, libc::SYS_accept, [fd as u64, 0, 0, 0, 0, 0]);
        assert_eq!(s.dispatch(&n).await, CONTINUE);
    }
}

#[cfg(test)]
mod virtual_tests {
    use super::*;
    use crate::backend::Connection;
    use crate::kernel::fake::FakeKernel;
    use std::net::IpAddr;
    use tokio::io::DuplexStream;
    use tokio::sync::mpsc;

    /// A virtual network whose only listener hands out connections the test pushes.
    struct ChanNet {
        conns: Mutex<Option<mpsc::UnboundedReceiver<Connection<DuplexStream>>>>,
    }

    impl Backend for ChanNet {
        type Stream = DuplexStream;
        type Listener = tokio::sync::Mutex<mpsc::UnboundedReceiver<Connection<DuplexStream>>>;
        fn is_virtual(&self, ip: IpAddr) -> bool {
            matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 10)
        }
        fn is_local(&self, ip: IpAddr) -> bool {
            ip == IpAddr::from([10, 0, 0, 1])
        }
        async fn tcp_connect(
            &self,
            _l: Option<SocketAddr>,
            _r: SocketAddr,
        ) -> Result<Connection<DuplexStream>, Errno> {
            Err(Errno::ECONNREFUSED)
        }
        fn tcp_listen(
            &self,
            local: SocketAddr,
            _b: usize,
            _v6: bool,
        ) -> Result<(Self::Listener, SocketAddr), Errno> {
            let rx = self.conns.lock().unwrap().take().ok_or(Errno::EADDRINUSE)?;
            Ok((tokio::sync::Mutex::new(rx), local))
        }
        async fn tcp_accept(&self, l: &Self::Listener) -> Result<Connection<DuplexStream>, Errno> {
            l.lock().await.recv().await.ok_or(Errno::EINVAL)
        }
        type Udp = ();
        fn udp_bind(&self, _l: SocketAddr, _v6: bool) -> Result<((), SocketAddr), Errno> {
            Err(Errno::EADDRNOTAVAIL)
        }
        async fn udp_send_to(&self, _s: &(), _d: &[u8], _t: SocketAddr) -> Result<usize, Errno> {
            Err(Errno::ENETUNREACH)
        }
        async fn udp_recv_from(
            &self,
            _s: &(),
        ) -> Result<(Vec<u8>, SocketAddr, Option<std::net::IpAddr>), Errno> {
            std::future::pending().await
        }
    }

    const PID: u32 = 7;
    const MEM: u64 = 0x20_000;

    fn note(id: u64, nr: i64, args: [u64; 6]) -> Notification {
        Notification {
            id,
            pid: PID,
            nr,
            arch: crate::sys::AUDIT_ARCH_X86_64,
            args,
        }
    }

    fn readable(k: &FakeKernel, fd: i32) -> bool {
        k.with_fd(fd, |f| {
            let mut fds = [nix::poll::PollFd::new(
                f.file.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap() == 1
        })
        .unwrap()
    }

    #[tokio::test]
    async fn an_abandoned_accept_puts_the_connection_back() {
        let k = Arc::new(FakeKernel::default());
        k.map(PID, MEM, &[0u8; 256]);
        let (tx, rx) = mpsc::unbounded_channel();
        let net = Arc::new(ChanNet {
            conns: Mutex::new(Some(rx)),
        });
        let s = Arc::new(Supervisor::new(k.clone(), net, Policy::default()));
        let n = note(
            1,
            libc::SYS_socket,
            [libc::AF_INET as u64, libc::SOCK_STREAM as u64, 0, 0, 0, 0],
        );
        assert_eq!(s.dispatch(&n).await, Reply::Done);
        let fd = 3;
        k.write_memory(
            PID,
            MEM,
            &wire::emit_sockaddr("10.0.0.1:80".parse().unwrap()),
        )
        .unwrap();
        let n = note(2, libc::SYS_bind, [fd, MEM, 16, 0, 0, 0]);
        assert_eq!(s.dispatch(&n).await, value(0));
        let n = note(3, libc::SYS_listen, [fd, 16, 0, 0, 0, 0]);
        assert_eq!(s.dispatch(&n).await, value(0));
        assert!(!readable(&k, fd as i32), "no connection yet");

        let (ours, _theirs) = tokio::io::duplex(1024);
        tx.send(Connection {
            stream: ours,
            local: "10.0.0.1:80".parse().unwrap(),
            peer: "10.0.0.9:5555".parse().unwrap(),
        })
        .unwrap();
        for _ in 0..200 {
            if readable(&k, fd as i32) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            readable(&k, fd as i32),
            "a waiting connection makes the listener readable"
        );

        // The program is interrupted: the injection fails with ENOENT.
        k.vanish(4);
        let n = note(4, libc::SYS_accept4, [fd, MEM + 64, MEM + 128, 0, 0, 0]);
        k.write_memory(PID, MEM + 128, &16u32.to_ne_bytes())
            .unwrap();
        assert_eq!(s.dispatch(&n).await, Reply::Done);
        assert!(
            readable(&k, fd as i32),
            "the connection and its token are back"
        );

        let n = note(
            5,
            libc::SYS_accept4,
            [fd, MEM + 64, MEM + 128, libc::SOCK_NONBLOCK as u64, 0, 0],
        );
        assert_eq!(s.dispatch(&n).await, Reply::Done);
        let new_fd = match k.answers().last() {
            Some((5, Response::Value(v))) => *v as i32,
            other => panic!("accept answered {other:?}"),
        };
        assert_ne!(k.fd_flags(PID, new_fd).unwrap() & libc::O_NONBLOCK, 0);
        assert_eq!(
            k.peek(PID, MEM + 64, 16),
            wire::emit_sockaddr("10.0.0.9:5555".parse().unwrap())
        );
        assert!(!readable(&k, fd as i32), "the token was consumed");
        let n = note(
            6,
            libc::SYS_getsockname,
            [new_fd as u64, MEM + 64, MEM + 128, 0, 0, 0],
        );
        k.write_memory(PID, MEM + 128, &16u32.to_ne_bytes())
            .unwrap();
        assert_eq!(s.dispatch(&n).await, value(0));
        assert_eq!(
            k.peek(PID, MEM + 64, 16),
            wire::emit_sockaddr("10.0.0.1:80".parse().unwrap())
        );
    }
}
