//! The only module allowed to use `unsafe`: thin wrappers over the seccomp ioctls, raw
//! socket options, `clone`/`execve` for the launch sequence, and the pidfd calls.
//!
//! Every block carries a `// SAFETY:` line. Callers above this module see safe functions
//! with `nix::errno::Errno` errors.
#![allow(unsafe_code)]

use std::ffi::{c_int, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nix::errno::Errno;

use crate::kernel::Notification;

/// `AUDIT_ARCH_X86_64` from `<linux/audit.h>`.
pub(crate) const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// `AUDIT_ARCH_I386` from `<linux/audit.h>`.
#[cfg(test)]
pub(crate) const AUDIT_ARCH_I386: u32 = 0x4000_0003;

fn cvt(ret: libc::c_long) -> Result<libc::c_long, Errno> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// `SECCOMP_IOCTL_NOTIF_RECV`: take the next notification off the listener.
pub(crate) fn notif_recv(listener: BorrowedFd<'_>) -> Result<Notification, Errno> {
    // SAFETY: seccomp_notif is plain old data; all-zero is the required input state.
    let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: the ioctl writes at most size_of::<seccomp_notif>() bytes into `req`, which
    // lives for the whole call; the fd is borrowed so it stays open.
    let ret = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV,
            &mut req as *mut libc::seccomp_notif,
        )
    };
    cvt(ret as libc::c_long)?;
    Ok(Notification {
        id: req.id,
        pid: req.pid,
        nr: i64::from(req.data.nr),
        arch: req.data.arch,
        args: req.data.args,
    })
}

/// `SECCOMP_IOCTL_NOTIF_SEND`.
pub(crate) fn notif_send(
    listener: BorrowedFd<'_>,
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
) -> Result<(), Errno> {
    let mut resp = libc::seccomp_notif_resp {
        id,
        val,
        error,
        flags,
    };
    // SAFETY: `resp` is a valid, initialised seccomp_notif_resp living across the call.
    let ret = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &mut resp as *mut libc::seccomp_notif_resp,
        )
    };
    cvt(ret as libc::c_long).map(drop)
}

/// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (Linux 6.6): not in the libc crate yet.
const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;

/// `SECCOMP_IOCTL_NOTIF_SET_FLAGS` with `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`: the program
/// and the supervisor hand the CPU to each other on a notification and its answer (the
/// woken side runs on the waker's CPU, as for a synchronous call) instead of waking across
/// CPUs. `EINVAL` before Linux 6.6.
pub(crate) fn notif_sync_wake_up(listener: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: this ioctl takes its flags by value in the argument; no memory is passed.
    let ret = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS,
            SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
        )
    };
    cvt(ret as libc::c_long).map(drop)
}

/// `SECCOMP_IOCTL_NOTIF_ID_VALID`: is the notification still waiting for our answer?
pub(crate) fn notif_id_valid(listener: BorrowedFd<'_>, id: u64) -> bool {
    let mut id = id;
    // SAFETY: the ioctl reads one u64 from the pointer, which points at a live local.
    let ret = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &mut id as *mut u64,
        )
    };
    ret == 0
}

/// `SECCOMP_IOCTL_NOTIF_ADDFD`: install `src` in the notifying process.
///
/// `target` set means `SECCOMP_ADDFD_FLAG_SETFD` (replace that fd number atomically);
/// `send` means `SECCOMP_ADDFD_FLAG_SEND` (also answer the call with the new fd number).
pub(crate) fn notif_addfd(
    listener: BorrowedFd<'_>,
    id: u64,
    src: BorrowedFd<'_>,
    target: Option<i32>,
    cloexec: bool,
    send: bool,
) -> Result<i32, Errno> {
    let mut flags = 0u32;
    if target.is_some() {
        flags |= libc::SECCOMP_ADDFD_FLAG_SETFD as u32;
    }
    if send {
        flags |= libc::SECCOMP_ADDFD_FLAG_SEND as u32;
    }
    let mut addfd = libc::seccomp_notif_addfd {
        id,
        flags,
        srcfd: src.as_raw_fd() as u32,
        newfd: target.unwrap_or(0) as u32,
        newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
    };
    // SAFETY: `addfd` is initialised and outlives the call; `src` is a borrowed open fd.
    let ret = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ADDFD,
            &mut addfd as *mut libc::seccomp_notif_addfd,
        )
    };
    cvt(ret as libc::c_long).map(|fd| fd as i32)
}

/// `struct linger { l_onoff: 1, l_linger: 0 }`: a close then resets the connection.
pub(crate) const LINGER_ZERO: [u8; 8] = {
    let on = 1i32.to_ne_bytes();
    [on[0], on[1], on[2], on[3], 0, 0, 0, 0]
};

/// `socket(2)` for any protocol number (nix names only some: UDP-Lite and `IPPROTO_RAW`
/// raw sockets are not among them), non-blocking and close-on-exec.
pub(crate) fn socket(domain: i32, ty: i32, protocol: i32) -> Result<OwnedFd, Errno> {
    let ty = ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: plain system call without pointers.
    let fd = unsafe { libc::socket(domain, ty, protocol) };
    let fd = cvt(fd as libc::c_long)? as i32;
    // SAFETY: the kernel just returned this descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `setsockopt` with the option value as raw bytes (replaying what the program set).
pub(crate) fn setsockopt_bytes(
    fd: BorrowedFd<'_>,
    level: i32,
    name: i32,
    value: &[u8],
) -> Result<(), Errno> {
    // SAFETY: the pointer and length describe `value`, which outlives the call.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    };
    cvt(ret as libc::c_long).map(drop)
}

/// `getsockopt` into `buf`; returns the length the kernel reported.
pub(crate) fn getsockopt_bytes(
    fd: BorrowedFd<'_>,
    level: i32,
    name: i32,
    buf: &mut [u8],
) -> Result<usize, Errno> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `buf` and updates `len`.
    let ret = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    cvt(ret as libc::c_long)?;
    Ok(len as usize)
}

/// Which end of the name to ask for in [`socket_name`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum NameSide {
    Local,
    Peer,
}

/// `getsockname`/`getpeername` as raw sockaddr bytes.
pub(crate) fn socket_name(fd: BorrowedFd<'_>, side: NameSide) -> Result<Vec<u8>, Errno> {
    let mut buf = [0u8; 128];
    let mut len = buf.len() as libc::socklen_t;
    let ptr = buf.as_mut_ptr().cast::<libc::sockaddr>();
    // SAFETY: the kernel writes at most `len` (128) bytes into `buf` and updates `len`.
    let ret = unsafe {
        match side {
            NameSide::Local => libc::getsockname(fd.as_raw_fd(), ptr, &mut len),
            NameSide::Peer => libc::getpeername(fd.as_raw_fd(), ptr, &mut len),
        }
    };
    cvt(ret as libc::c_long)?;
    Ok(buf[..(len as usize).min(buf.len())].to_vec())
}

/// `connect` or `bind` with a raw sockaddr byte string (already validated by `wire`).
pub(crate) fn connect_bytes(fd: BorrowedFd<'_>, addr: &[u8], bind: bool) -> Result<(), Errno> {
    // sockaddr_storage keeps the alignment the kernel ABI expects.
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = addr
        .len()
        .min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: we copy `len` bytes, bounded by both buffers' sizes, between non-overlapping
    // buffers.
    unsafe {
        std::ptr::copy_nonoverlapping(
            addr.as_ptr(),
            (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
            len,
        );
    }
    let ptr = (&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr>();
    // SAFETY: `ptr` points at `len` initialised bytes of a live sockaddr_storage.
    let ret = unsafe {
        if bind {
            libc::bind(fd.as_raw_fd(), ptr, len as libc::socklen_t)
        } else {
            libc::connect(fd.as_raw_fd(), ptr, len as libc::socklen_t)
        }
    };
    cvt(ret as libc::c_long).map(drop)
}

/// `sendto` with a raw sockaddr byte string.
pub(crate) fn sendto_bytes(
    fd: BorrowedFd<'_>,
    data: &[u8],
    flags: i32,
    addr: &[u8],
) -> Result<usize, Errno> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = addr
        .len()
        .min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: bounded copy between non-overlapping buffers.
    unsafe {
        std::ptr::copy_nonoverlapping(
            addr.as_ptr(),
            (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
            len,
        );
    }
    // SAFETY: data pointer/length describe a live slice; the address points at `len`
    // initialised bytes.
    let ret = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            flags,
            (&storage as *const libc::sockaddr_storage).cast(),
            len as libc::socklen_t,
        )
    };
    cvt(ret as libc::c_long).map(|n| n as usize)
}

/// `pidfd_send_signal(2)`.
pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: i32) -> Result<(), Errno> {
    // SAFETY: plain syscall with a borrowed fd and no pointers (info = NULL).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    cvt(ret).map(drop)
}

/// `pidfd_open(2)` of process `pid`.
pub(crate) fn pidfd_open(pid: u32) -> Result<OwnedFd, Errno> {
    // SAFETY: plain syscall with integer arguments; a non-negative result is a new fd
    // that nothing else owns.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: `ret` is a fresh descriptor returned by the kernel (checked by cvt).
    cvt(ret).map(|fd| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_getfd(2)`: a duplicate (close-on-exec) of descriptor `fd` of the process.
pub(crate) fn pidfd_getfd(pidfd: BorrowedFd<'_>, fd: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: plain syscall with a borrowed fd and integers; a non-negative result is a
    // new fd that nothing else owns.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    // SAFETY: `ret` is a fresh descriptor returned by the kernel (checked by cvt).
    cvt(ret).map(|fd| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The target of symbolic link `path` relative to directory `dir` (`readlinkat(2)`),
/// into `buf`; returns its length. One call, no `fstatat` to size the buffer first (as
/// `nix::fcntl::readlinkat` makes): the links read here (`/proc` descriptors and
/// namespaces) are short, and a target that fills `buf` is `ENAMETOOLONG`.
pub(crate) fn readlinkat(
    dir: BorrowedFd<'_>,
    path: &std::ffi::CStr,
    buf: &mut [u8],
) -> Result<usize, Errno> {
    // SAFETY: `path` is NUL-terminated and `buf` is writable for `buf.len()` bytes for
    // the whole call; the kernel writes at most that many and no terminator.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            path.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = cvt(n as libc::c_long)? as usize;
    if n >= buf.len() {
        return Err(Errno::ENAMETOOLONG);
    }
    Ok(n)
}

/// `NS_GET_USERNS` from `<linux/nsfs.h>`: `_IO(0xb7, 0x1)`.
const NS_GET_USERNS: libc::c_ulong = 0xb701;

/// The inode of the user namespace that owns the network namespace `ns` (an open
/// `/proc/.../ns/net`): the namespace in which `CAP_NET_*` must be held to act there.
pub(crate) fn ns_owner(ns: BorrowedFd<'_>) -> Result<u64, Errno> {
    // SAFETY: NS_GET_USERNS takes no argument and returns a new fd or -1.
    let fd = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_USERNS) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the ioctl returned a fresh fd that nothing else owns.
    let owner = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(nix::sys::stat::fstat(&owner)?.st_ino)
}

/// Bytes waiting in a socket's receive queue (`FIONREAD`).
pub(crate) fn unread(fd: BorrowedFd<'_>) -> Result<usize, Errno> {
    let mut n: c_int = 0;
    // SAFETY: FIONREAD writes one int into `n`, which outlives the call; the fd is
    // borrowed so it stays open.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n as *mut c_int) };
    cvt(ret as libc::c_long).map(|_| n.max(0) as usize)
}

/// Size of `struct ifreq` on x86_64.
pub(crate) const IFREQ_LEN: usize = 40;

/// An interface ioctl (`SIOCGIF*`) that reads and writes one `struct ifreq`.
pub(crate) fn ifreq_ioctl(
    fd: BorrowedFd<'_>,
    request: u32,
    ifr: &mut [u8; IFREQ_LEN],
) -> Result<(), Errno> {
    // SAFETY: the SIOCGIF* requests read and write at most one struct ifreq, which `ifr`
    // holds for the duration of the call; the fd is borrowed so it stays open.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request as libc::Ioctl, ifr.as_mut_ptr()) };
    cvt(ret as libc::c_long).map(drop)
}

/// `SIOCGIFCONF`: the host's `struct ifreq` entries (one per IPv4 address), as bytes.
pub(crate) fn ifconf(fd: BorrowedFd<'_>) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; 256 * IFREQ_LEN];
    // struct ifconf: int ifc_len, 4 bytes of padding, then the buffer pointer.
    #[repr(C)]
    struct IfConf {
        len: libc::c_int,
        buf: *mut u8,
    }
    let mut ifc = IfConf {
        len: buf.len() as libc::c_int,
        buf: buf.as_mut_ptr(),
    };
    // SAFETY: SIOCGIFCONF writes at most `len` bytes at `buf`, which `buf` holds for the
    // call, and updates `ifc.len`; both live on this stack frame.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFCONF as libc::Ioctl, &mut ifc) };
    cvt(ret as libc::c_long)?;
    buf.truncate(usize::try_from(ifc.len).unwrap_or(0).min(buf.len()));
    Ok(buf)
}

/// Everything the child needs, prepared in the parent so the child allocates nothing.
#[derive(Debug)]
pub(crate) struct ChildPlan {
    pub(crate) path: CString,
    pub(crate) argv: Vec<CString>,
    pub(crate) envp: Vec<CString>,
    pub(crate) filter: Vec<libc::sock_filter>,
    /// `(uid, gid)` to switch to before `no_new_privs` (needs privilege to succeed).
    pub(crate) ids: Option<(u32, u32)>,
    /// `RLIMIT_NOFILE` (soft, hard) to set before `execve`.
    pub(crate) nofile: Option<(u64, u64)>,
    /// A process to name with `PR_SET_PTRACER` (a supervisor that is not an ancestor).
    pub(crate) ptracer: Option<i32>,
}

/// The parent's view of a started child.
#[derive(Debug)]
pub(crate) struct Started {
    pub(crate) pid: i32,
    pub(crate) pidfd: OwnedFd,
    pub(crate) listener: OwnedFd,
    pub(crate) killable_recv: bool,
    /// The reaper process (the program's parent), as a pidfd.
    pub(crate) reaper: OwnedFd,
    /// Its reports ([`read_report`]); [`MSG_EXIT`] carries the program's wait status.
    pub(crate) reports: OwnedFd,
}

/// A failure inside the child, reported through the status pipe.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChildFailure {
    pub(crate) step: ChildStep,
    pub(crate) errno: Errno,
}

/// The numbered steps of the child's half of the launch sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildStep {
    /// Creating the child.
    Clone,
    /// Switching uid/gid.
    SetIds,
    /// `PR_SET_PDEATHSIG`, or the supervisor died before it took effect.
    DeathSignal,
    /// `setrlimit(RLIMIT_NOFILE)`.
    FileLimit,
    /// `PR_SET_NO_NEW_PRIVS`.
    NoNewPrivs,
    /// `seccomp(SECCOMP_SET_MODE_FILTER)`.
    InstallFilter,
    /// `execve`.
    Exec,
    /// Setting up the reaper (the program's parent, see `launch`).
    Reaper,
    /// `PR_SET_DUMPABLE` 0 on the supervisor.
    NonDumpable,
}

impl ChildStep {
    fn code(self) -> u32 {
        match self {
            Self::Clone => 0,
            Self::SetIds => 1,
            Self::NoNewPrivs => 2,
            Self::InstallFilter => 3,
            Self::Exec => 4,
            Self::DeathSignal => 5,
            Self::FileLimit => 6,
            Self::Reaper => 7,
            Self::NonDumpable => 8,
        }
    }
    fn from_code(code: u32) -> Self {
        match code {
            1 => Self::SetIds,
            2 => Self::NoNewPrivs,
            3 => Self::InstallFilter,
            4 => Self::Exec,
            5 => Self::DeathSignal,
            6 => Self::FileLimit,
            7 => Self::Reaper,
            8 => Self::NonDumpable,
            _ => Self::Clone,
        }
    }
}

/// `prctl(PR_SET_DUMPABLE, 0)` on this process (launch step 1).
pub(crate) fn set_non_dumpable() -> Result<(), Errno> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// The signal dispositions and mask this process was started with (bit `n - 1` for
/// signal `n`), recorded by [`record_start_signals`] before Rust's runtime ignores
/// `SIGPIPE`: the program must start with exactly what we were given (a program started
/// with `SIGPIPE` ignored writes "Broken pipe" where it should have died quietly).
static STARTED_IGNORED: AtomicU64 = AtomicU64::new(0);
static STARTED_MASK: AtomicU64 = AtomicU64::new(0);
static STARTED_RECORDED: AtomicBool = AtomicBool::new(false);

/// Run by the C runtime before `main` (and before Rust's runtime changes `SIGPIPE`).
#[used]
#[unsafe(link_section = ".init_array")]
static RECORD_START_SIGNALS: extern "C" fn() = record_start_signals;

/// The kernel's `struct sigaction` (x86_64), for `rt_sigaction` without glibc, which
/// refuses the signals it reserves (32 and 33) though a program may inherit them ignored.
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// Query signal `sig`'s handler, first setting it to `set` if given (`SIG_DFL` or
/// `SIG_IGN`, which need no restorer). Async-signal-safe.
fn raw_sigaction(sig: c_int, set: Option<usize>) -> Option<usize> {
    let new = set.map(|handler| KernelSigaction {
        handler,
        flags: 0,
        restorer: 0,
        mask: 0,
    });
    let mut old = KernelSigaction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    let new_ptr = new
        .as_ref()
        .map_or(std::ptr::null(), |n| n as *const KernelSigaction);
    // SAFETY: rt_sigaction reads `new` (or nothing) and writes `old`, both live locals of
    // the kernel's layout, with the kernel's sigset size (8).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            new_ptr,
            &mut old as *mut KernelSigaction,
            8usize,
        )
    };
    (ret == 0).then_some(old.handler)
}

extern "C" fn record_start_signals() {
    let mut ignored = 0u64;
    for sig in 1..=64 {
        if raw_sigaction(sig, None) == Some(libc::SIG_IGN) {
            ignored |= 1 << (sig - 1);
        }
    }
    let mut mask = 0u64;
    // SAFETY: queries the calling (main) thread's mask into a zeroed local sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        if libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut set) == 0 {
            for sig in 1..=64 {
                if libc::sigismember(&set, sig) == 1 {
                    mask |= 1 << (sig - 1);
                }
            }
        }
    }
    STARTED_IGNORED.store(ignored, Ordering::Relaxed);
    STARTED_MASK.store(mask, Ordering::Relaxed);
    STARTED_RECORDED.store(true, Ordering::Release);
}

/// The dispositions (ignored set) and mask to give the program: those we started with,
/// or, if they were not recorded, nothing ignored and the caller's mask.
fn program_signals(fallback_mask: &libc::sigset_t) -> (u64, libc::sigset_t) {
    if !STARTED_RECORDED.load(Ordering::Acquire) {
        return (0, *fallback_mask);
    }
    let bits = STARTED_MASK.load(Ordering::Relaxed);
    // SAFETY: builds a local sigset_t from the recorded bits.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in 1..=64 {
            if bits & (1 << (sig - 1)) != 0 {
                libc::sigaddset(&mut set, sig);
            }
        }
        set
    };
    (STARTED_IGNORED.load(Ordering::Relaxed), set)
}

const MSG_LISTENER: u32 = 1;
const MSG_KILLABLE: u32 = 2;
const MSG_FAILED: u32 = 3;
const MSG_PID: u32 = 4;
const MSG_PIDFD: u32 = 5;
const MSG_READY: u32 = 6;
/// The program's raw wait status, from the reaper.
pub(crate) const MSG_EXIT: u32 = 7;

/// The launch sequence (see `launch.rs` for the commented steps). The parent blocks all
/// signals around `clone`, so no handler of ours runs in the reaper or the child before
/// they reset them.
pub(crate) fn clone_filter_exec(plan: &ChildPlan) -> Result<Started, ChildFailure> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let fail = |errno| ChildFailure {
        step: ChildStep::Clone,
        errno,
    };
    // The reaper's reports, with descriptors attached (SCM_RIGHTS): a datagram each.
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(fail)?;
    // The child's reports to the reaper (close-on-exec: a successful exec closes its copy).
    // Non-blocking: the reaper reads what is there once the child has exec'd, never
    // waiting for end of file, which a reaper forked meanwhile by a concurrent launch
    // would hold off (its copy of our table holds this write end until it closes it).
    let (child_rd, child_wr) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(fail)?;
    // The reaper watches us through this: when it becomes readable we are gone.
    let me = pidfd_open(std::process::id()).map_err(fail)?;

    let mut argv: Vec<*const libc::c_char> = plan.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = plan.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let prog = libc::sock_fprog {
        len: plan.filter.len() as u16,
        filter: plan.filter.as_ptr() as *mut libc::sock_filter,
    };

    // SAFETY: sigset_t is plain data; sigfillset/pthread_sigmask only touch these locals.
    let mut old_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old_mask);
    }
    let (ignored, program_mask) = program_signals(&old_mask);
    let launch = Launch {
        plan,
        prog: &prog,
        argv: &argv,
        envp: &envp,
        child_rd: child_rd.as_raw_fd(),
        child_wr: child_wr.as_raw_fd(),
        to_supervisor: theirs.as_raw_fd(),
        supervisor: me.as_raw_fd(),
        signals: (ignored, &program_mask),
    };

    let mut reaper_pidfd: c_int = -1;
    let flags = libc::CLONE_PIDFD | libc::SIGCHLD;
    // SAFETY: raw clone without CLONE_VM is fork: the reaper gets a copy-on-write copy of
    // our memory, of this thread's stack (newsp = 0) and of our fd table, and only ever
    // makes async-signal-safe calls on data prepared above. The kernel writes its pidfd
    // into `reaper_pidfd` (parent_tid argument) in our address space.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags as libc::c_ulong,
            0usize,
            &mut reaper_pidfd as *mut c_int,
            0usize,
            0usize,
        )
    };
    if ret == 0 {
        // SAFETY: we are the reaper (see `reaper_main`).
        unsafe { reaper_main(&launch) }
    }
    let clone_errno = Errno::last();
    // SAFETY: restores the mask saved above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut());
    }
    if ret < 0 {
        return Err(fail(clone_errno));
    }
    // SAFETY: CLONE_PIDFD stored a fresh fd that nothing else owns.
    let reaper = unsafe { OwnedFd::from_raw_fd(reaper_pidfd) };
    // The reaper has its own copies: once it is gone, `ours` reads end of file.
    drop((theirs, child_rd, child_wr, me));

    let mut listener: Option<OwnedFd> = None;
    let mut pidfd: Option<OwnedFd> = None;
    let mut pid = 0;
    let mut killable = false;
    let mut failure = None;
    let mut ready = false;
    while !ready {
        let Some((tag, val, fd)) = read_report(ours.as_fd()) else {
            break;
        };
        match tag {
            MSG_LISTENER => listener = fd,
            MSG_KILLABLE => killable = val != 0,
            MSG_PID => pid = val as i32,
            MSG_PIDFD => pidfd = fd,
            MSG_READY => ready = true,
            MSG_FAILED => {
                failure = Some(ChildFailure {
                    step: ChildStep::from_code(val >> 16),
                    errno: Errno::from_raw((val & 0xffff) as i32),
                })
            }
            _ => {}
        }
    }
    let failure = failure.or(match (&listener, &pidfd, ready) {
        (Some(_), Some(_), true) => None,
        _ => Some(ChildFailure {
            step: ChildStep::InstallFilter,
            errno: Errno::EIO,
        }),
    });
    match (failure, listener, pidfd) {
        (None, Some(listener), Some(pidfd)) => Ok(Started {
            pid,
            pidfd,
            listener,
            killable_recv: killable,
            reaper,
            reports: ours,
        }),
        (failure, ..) => {
            // The reaper ends once it has reaped the child.
            let _ = nix::sys::wait::waitid(
                nix::sys::wait::Id::PIDFd(reaper.as_fd()),
                nix::sys::wait::WaitPidFlag::WEXITED,
            );
            Err(failure.unwrap_or(ChildFailure {
                step: ChildStep::InstallFilter,
                errno: Errno::EIO,
            }))
        }
    }
}

/// One report from the reaper: tag, value and the descriptor it carries, if any.
/// `None` at end of file (the reaper is gone).
pub(crate) fn read_report(sock: BorrowedFd<'_>) -> Option<(u32, u32, Option<OwnedFd>)> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = [0u8; 8];
    loop {
        // A reaper that says nothing for 30 s is stuck: the launch fails rather than hang.
        let mut fds = [PollFd::new(sock, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(30_000u16)) {
            Ok(0) => return None,
            Err(Errno::EINTR) => continue,
            Err(_) => return None,
            Ok(_) => {}
        }
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(Errno::EINTR) => continue,
            Err(_) => return None,
            Ok(m) => m,
        };
        if msg.bytes != 8 {
            return None;
        }
        let mut fd = None;
        for c in msg.cmsgs().ok()? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for raw in fds {
                    // SAFETY: SCM_RIGHTS installed this fd for us alone.
                    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                    fd.get_or_insert(owned);
                }
            }
        }
        let (tag, val) = parse_report(&buf);
        return Some((tag, val, fd));
    }
}

/// A report without waiting: `EAGAIN` when none is there, `Ok(None)` at end of file.
pub(crate) fn try_read_report(sock: BorrowedFd<'_>) -> Result<Option<(u32, u32)>, Errno> {
    let mut buf = [0u8; 8];
    match nix::sys::socket::recv(
        sock.as_raw_fd(),
        &mut buf,
        nix::sys::socket::MsgFlags::MSG_DONTWAIT,
    )? {
        8 => Ok(Some(parse_report(&buf))),
        _ => Ok(None),
    }
}

/// A report's tag and value.
fn parse_report(buf: &[u8; 8]) -> (u32, u32) {
    (
        u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]),
        u32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]),
    )
}

/// Everything the reaper and the child need, prepared before `clone`.
struct Launch<'a> {
    plan: &'a ChildPlan,
    prog: &'a libc::sock_fprog,
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    /// The child's reports to the reaper (a pipe).
    child_rd: RawFd,
    child_wr: RawFd,
    /// The reaper's reports to the supervisor (a seqpacket socket).
    to_supervisor: RawFd,
    /// The supervisor's pidfd.
    supervisor: RawFd,
    signals: (u64, &'a libc::sigset_t),
}

/// Send an 8-byte report, with `fd` attached when it is not negative
/// (async-signal-safe: no allocation).
fn report(sock: RawFd, tag: u32, val: u32, fd: RawFd) {
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&tag.to_ne_bytes());
    msg[4..].copy_from_slice(&val.to_ne_bytes());
    // Room for one cmsghdr carrying one int, 8-byte aligned.
    let mut control = [0u64; 4];
    // SAFETY: the iovec and control buffer are live locals; CMSG_* compute offsets
    // inside `control`, which is large enough for CMSG_SPACE(sizeof(int)).
    unsafe {
        let mut iov = libc::iovec {
            iov_base: msg.as_mut_ptr().cast(),
            iov_len: msg.len(),
        };
        let mut hdr: libc::msghdr = std::mem::zeroed();
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        if fd >= 0 {
            hdr.msg_control = control.as_mut_ptr().cast();
            hdr.msg_controllen = libc::CMSG_SPACE(4) as usize;
            let c = libc::CMSG_FIRSTHDR(&hdr);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<c_int>(), fd);
        }
        libc::sendmsg(sock, &hdr, libc::MSG_NOSIGNAL);
    }
}

/// The reaper: the program's parent, a child subreaper (so every process the program
/// leaves behind becomes its child), watching the supervisor through a pidfd. When the
/// supervisor is gone, killed with SIGKILL included, it kills the whole tree; when the
/// program and everything it left behind are gone, it ends.
///
/// 1. `PR_SET_CHILD_SUBREAPER`.
/// 2. Clone the child (`CLONE_VFORK | CLONE_FILES | CLONE_PIDFD`): it runs `child_main`
///    and execs, leaving its listener in our table and its reports in our pipe.
/// 3. Pass the child's pid, pidfd, listener and reports on to the supervisor (the
///    descriptors with `SCM_RIGHTS`), then close every descriptor but the report socket
///    and the supervisor's pidfd: the reaper holds none of the supervisor's sockets, nor
///    the program's terminal. (No `unshare(CLONE_FILES)`: Docker's default profile
///    denies `unshare`.)
/// 4. Report ready; wait on the supervisor's pidfd and a signalfd for `SIGCHLD`: reap
///    every child, report the program's wait status.
///
/// # Safety
/// Only in the child of `clone_filter_exec`'s clone (a private copy-on-write copy of the
/// supervisor's memory, this thread only); only async-signal-safe calls are made.
unsafe fn reaper_main(launch: &Launch<'_>) -> ! {
    let out = launch.to_supervisor;
    let die = |step: ChildStep| -> ! {
        let errno = Errno::last_raw() as u32 & 0xffff;
        report(out, MSG_FAILED, (step.code() << 16) | errno, -1);
        // SAFETY: _exit is async-signal-safe and never returns.
        unsafe { libc::_exit(127) }
    };
    // 1.
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        die(ChildStep::Reaper);
    }
    // 2.
    // SAFETY: getpid takes no arguments.
    let me = unsafe { libc::getpid() };
    let mut pidfd: c_int = -1;
    let flags = libc::CLONE_VFORK | libc::CLONE_FILES | libc::CLONE_PIDFD | libc::SIGCHLD;
    // SAFETY: as in `clone_filter_exec`; CLONE_VFORK suspends us until the child execs or
    // exits, so everything `launch` points to stays valid.
    let child = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags as libc::c_ulong,
            0usize,
            &mut pidfd as *mut c_int,
            0usize,
            0usize,
        )
    };
    if child == 0 {
        // SAFETY: we are the child; child_main only makes async-signal-safe calls on data
        // prepared before the first clone and never returns.
        unsafe {
            child_main(
                launch.plan,
                launch.prog,
                launch.argv,
                launch.envp,
                launch.child_wr,
                launch.signals,
                me,
            )
        }
    }
    if child < 0 {
        die(ChildStep::Clone);
    }
    // 3. The child has exec'd or exited: its reports are all in the pipe.
    // SAFETY: closes our write end (the child's copy went with its exec or exit).
    unsafe { libc::close(launch.child_wr) };
    report(out, MSG_PID, child as u32, -1);
    report(out, MSG_PIDFD, 0, pidfd);
    let mut buf = [0u8; 8];
    // SAFETY: reads the 8-byte reports already written (the pipe is non-blocking) into a
    // live local buffer.
    while unsafe { libc::read(launch.child_rd, buf.as_mut_ptr().cast(), 8) } == 8 {
        let (tag, val) = parse_report(&buf);
        let fd = if tag == MSG_LISTENER {
            val as RawFd
        } else {
            -1
        };
        report(out, tag, val, fd);
    }
    let (lo, hi) = (
        out.min(launch.supervisor) as u32,
        out.max(launch.supervisor) as u32,
    );
    let mut gaps = [(1u32, 0u32); 3];
    if lo > 0 {
        gaps[0] = (0, lo - 1);
    }
    if hi > lo + 1 {
        gaps[1] = (lo + 1, hi - 1);
    }
    gaps[2] = (hi + 1, u32::MAX);
    for (first, last) in gaps {
        if first <= last {
            // SAFETY: close_range on our own table (a copy), with integer arguments.
            let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
            if r != 0 {
                // Before Linux 5.9, or denied: one by one, up to the file limit.
                // SAFETY: getrlimit writes a live local; close takes integers.
                unsafe {
                    let mut lim: libc::rlimit = std::mem::zeroed();
                    libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
                    let top = (lim.rlim_cur.min(1 << 20) as u32).min(last);
                    for fd in first..=top {
                        libc::close(fd as c_int);
                    }
                }
            }
        }
    }
    // 4.
    // SAFETY: sigset_t is plain data; SIGCHLD stays blocked (all are, since the clone).
    let sfd = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK)
    };
    if sfd < 0 {
        die(ChildStep::Reaper);
    }
    report(out, MSG_READY, 0, -1);
    let mut program_done = false;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: launch.supervisor,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sfd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: polls two live local pollfd structs.
        unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if fds[0].revents != 0 {
            // The supervisor is gone: nothing may run on without it.
            // SAFETY: async-signal-safe calls only.
            unsafe { kill_children() };
            // SAFETY: _exit never returns.
            unsafe { libc::_exit(0) }
        }
        let mut info = [0u8; 128];
        // SAFETY: drains the signalfd into a local buffer of a siginfo's size.
        while unsafe { libc::read(sfd, info.as_mut_ptr().cast(), info.len()) } > 0 {}
        loop {
            let mut status: c_int = 0;
            // SAFETY: waitpid writes the status into a live local.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid == child as libc::pid_t {
                report(out, MSG_EXIT, status as u32, -1);
                program_done = true;
            } else if pid > 0 {
                continue;
            } else if pid < 0 && program_done {
                // ECHILD: the program and everything it left behind are gone.
                // SAFETY: _exit never returns.
                unsafe { libc::_exit(0) }
            } else {
                break;
            }
        }
    }
}

/// SIGKILL every child of this process until none is left; as a subreaper, the children
/// of each killed one become ours and are killed in the next round.
///
/// # Safety
/// Async-signal-safe calls only, on local buffers.
unsafe fn kill_children() {
    const PATH: &[u8] = b"/proc/thread-self/children\0";
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: opens a NUL-terminated constant path.
        let fd = unsafe { libc::open(PATH.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
        let mut len = 0usize;
        if fd >= 0 {
            // SAFETY: reads into a live local buffer, then closes the fd we opened.
            unsafe {
                let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                len = n.max(0) as usize;
                libc::close(fd);
            }
        }
        let mut any = false;
        for pid in buf[..len]
            .split(|b| *b == b' ' || *b == b'\n')
            .filter_map(parse_pid)
        {
            any = true;
            // SAFETY: signals a child of ours (it cannot be reused before we reap it).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // Reap what has ended; stop when no child is left at all.
        loop {
            let mut status: c_int = 0;
            // SAFETY: waitpid writes into a live local.
            let pid =
                unsafe { libc::waitpid(-1, &mut status, if any { 0 } else { libc::WNOHANG }) };
            if pid < 0 {
                if Errno::last() == Errno::ECHILD {
                    return;
                }
                break;
            }
            if pid == 0 {
                break;
            }
            any = false;
        }
    }
}

/// A decimal pid (no allocation).
fn parse_pid(digits: &[u8]) -> Option<libc::pid_t> {
    if digits.is_empty() || digits.len() > 9 {
        return None;
    }
    digits.iter().try_fold(0 as libc::pid_t, |acc, d| {
        d.is_ascii_digit()
            .then(|| acc * 10 + libc::pid_t::from(d - b'0'))
    })
}

/// The child's side: steps 4–8 of the launch sequence.
///
/// # Safety
/// Must only be called in the child of the reaper's clone, which owns a private copy of
/// the supervisor's memory; only async-signal-safe functions are used.
unsafe fn child_main(
    plan: &ChildPlan,
    prog: &libc::sock_fprog,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    out: RawFd,
    (ignored, mask): (u64, &libc::sigset_t),
    parent: libc::pid_t,
) -> ! {
    let send = |tag: u32, val: u32| {
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&tag.to_ne_bytes());
        msg[4..].copy_from_slice(&val.to_ne_bytes());
        // SAFETY: writes 8 bytes from a live local buffer to the reaper's pipe.
        unsafe { libc::write(out, msg.as_ptr().cast(), 8) };
    };
    let die = |step: ChildStep| -> ! {
        let errno = Errno::last_raw() as u32 & 0xffff;
        send(MSG_FAILED, (step.code() << 16) | errno);
        // SAFETY: _exit is async-signal-safe and never returns.
        unsafe { libc::_exit(127) }
    };

    // 4a. Handlers inherited from the parent must not run here, and the program starts
    //     with the dispositions and mask we were started with: every signal ignored
    //     then is ignored, every other one default (Rust's SIGPIPE ignore undone).
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let want = if ignored & (1 << (sig - 1)) != 0 {
            libc::SIG_IGN
        } else {
            libc::SIG_DFL
        };
        if raw_sigaction(sig, None).is_some_and(|h| h != want) {
            raw_sigaction(sig, Some(want));
        }
    }
    // SAFETY: sets this thread's mask from a live sigset_t.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, mask, std::ptr::null_mut()) };

    // 4b. Optional identity change, with raw syscalls (glibc's set*id wrappers would try
    //     to signal the parent's other threads, which this process does not have).
    if let Some((uid, gid)) = plan.ids {
        // SAFETY: raw syscalls with integer arguments (setgroups with an empty list).
        let ok = unsafe {
            libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) == 0
                && libc::syscall(libc::SYS_setresgid, gid, gid, gid) == 0
                && libc::syscall(libc::SYS_setresuid, uid, uid, uid) == 0
        };
        if !ok {
            die(ChildStep::SetIds);
        }
    }

    // 4c. The program must not outlive the supervisor (a SIGKILLed ztrun would leave it
    //     running with every trapped call failing): SIGKILL when the thread that cloned
    //     us exits. Set after the identity change, which clears it; if the supervisor is
    //     already gone (getppid changed), stop here.
    // SAFETY: prctl with integer arguments.
    let set = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // SAFETY: getppid takes no arguments and cannot fail.
    if set != 0 || unsafe { libc::getppid() } != parent {
        die(ChildStep::DeathSignal);
    }

    // 4d. The file limit the program would have had without the supervisor.
    if let Some((soft, hard)) = plan.nofile {
        let lim = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads a live local struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            die(ChildStep::FileLimit);
        }
    }

    // 4e. A supervisor that is not our ancestor (a shared node) may read our memory
    //     under Yama's ptrace_scope 1 once named. Without Yama the call fails (EINVAL)
    //     and nothing needs it.
    if let Some(pid) = plan.ptracer {
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_PTRACER, pid as libc::c_ulong, 0, 0, 0) };
    }

    // 5. no_new_privs: required to install a filter without CAP_SYS_ADMIN.
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        die(ChildStep::NoNewPrivs);
    }

    // 6. Install the filter and get its listener. WAIT_KILLABLE_RECV (Linux 5.19) first.
    let base = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
    let mut killable = 1u32;
    // SAFETY: `prog` points at a filter program that stays alive (our COW copy).
    let mut fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            base | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
            prog as *const libc::sock_fprog,
        )
    };
    if fd < 0 && Errno::last() == Errno::EINVAL {
        killable = 0;
        // SAFETY: as above, without the newer flag.
        fd = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                base,
                prog as *const libc::sock_fprog,
            )
        };
    }
    if fd < 0 {
        die(ChildStep::InstallFilter);
    }
    // 7. Hand-off: the listener (close-on-exec) sits in the fd table we share with the
    //    parent; report its number through the pipe. `write` is never trapped.
    send(MSG_LISTENER, fd as u32);
    send(MSG_KILLABLE, killable);

    // 8. exec: unshares the fd table and closes the listener and the pipe on our side.
    // SAFETY: NUL-terminated argv/envp arrays of pointers into live CStrings.
    unsafe { libc::execve(plan.path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    die(ChildStep::Exec)
}

/// Register an owned fd with the tokio reactor.
pub(crate) fn async_fd(
    fd: OwnedFd,
    interest: tokio::io::Interest,
) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd stays open and returns the same number from as_raw_fd for as long
    // as the AsyncFd owns it, which is what register_with_interest requires.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, interest) }.map_err(Into::into)
}

/// Register our end of a virtual socket with the runtime without duplicating it: `vs`
/// owns the descriptor, and the returned `AsyncFd` keeps `vs` alive.
///
/// For reading only. Every read the program makes of what we wrote frees space on our
/// end, and the kernel then signals it writable (`unix_write_space`): registered for
/// writing, each delivered message would wake the runtime once more for nothing. A writer
/// that finds the end full registers a duplicate for writing until the program catches up
/// (virt.rs, `OurEnd`).
pub(crate) fn async_end<B: crate::backend::Backend>(
    vs: std::sync::Arc<crate::emulate::VSocket<B>>,
) -> std::io::Result<tokio::io::unix::AsyncFd<EndFd<B>>> {
    let interest = tokio::io::Interest::READABLE;
    // SAFETY: `EndFd` holds the `VSocket`, whose `ours` descriptor is an OwnedFd that is
    // never replaced or closed while the VSocket lives, so the number stays open and the
    // same for as long as the AsyncFd exists, as register_with_interest requires.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(EndFd(vs), interest) }
        .map_err(Into::into)
}

/// A virtual socket seen as its own end's descriptor (see [`async_end`]).
pub(crate) struct EndFd<B: crate::backend::Backend>(
    pub(crate) std::sync::Arc<crate::emulate::VSocket<B>>,
);

impl<B: crate::backend::Backend> std::os::fd::AsRawFd for EndFd<B> {
    fn as_raw_fd(&self) -> RawFd {
        self.0.ours.as_raw_fd()
    }
}

/// Take ownership of a descriptor `accept4` just returned.
pub(crate) fn own_accepted(fd: RawFd) -> OwnedFd {
    // SAFETY: accept4 returned a fresh descriptor that nothing else owns or will close.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Size of the buffer [`getsockopt_as`] needs: larger than any value a `getsockopt`
/// handler copies out (the largest, `struct tcp_info` and the IPv6 packet options, are a
/// few hundred bytes), whatever length it was asked for.
pub(crate) const OPTION_BUF: usize = 65_536;

/// A pointer argument of the program's, as passed on to the kernel by
/// [`setsockopt_as`]/[`getsockopt_as`]: its NULL stays NULL (some levels treat NULL
/// apart, `do_ipv6_setsockopt` reads it as 0), a pointer the supervisor could not read
/// becomes one that faults here too, so the kernel returns `EFAULT` at the point of its
/// own checks.
#[derive(Debug)]
pub(crate) enum UserArg<T> {
    Null,
    Unreadable,
    Given(T),
}

/// An address every copy from or to user memory refuses (above the user address space).
const FAULTING: usize = usize::MAX & !0xfff;

/// `setsockopt` as the program called it (options.rs): `len` is the program's length,
/// cut to a given value.
pub(crate) fn setsockopt_as(
    fd: BorrowedFd<'_>,
    level: i32,
    name: i32,
    value: UserArg<&[u8]>,
    len: u32,
) -> Result<(), Errno> {
    let (ptr, len) = match value {
        UserArg::Given(v) => (v.as_ptr(), len.min(v.len() as u32)),
        UserArg::Null => (std::ptr::null(), len),
        UserArg::Unreadable => (FAULTING as *const u8, len),
    };
    // SAFETY: the kernel reads at most `len` bytes at `ptr`: within `value` when it is
    // given; NULL and FAULTING are never mapped, so reading them fails with EFAULT.
    let ret = unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, ptr.cast(), len) };
    cvt(ret as libc::c_long).map(drop)
}

/// `getsockopt` as the program called it (options.rs): `buf` `None` for a NULL value
/// pointer, `len` the program's `*optlen` (or its NULL or unreadable pointer). Returns
/// the length the kernel wrote back.
///
/// # Panics
///
/// If `buf` is shorter than [`OPTION_BUF`].
pub(crate) fn getsockopt_as(
    fd: BorrowedFd<'_>,
    level: i32,
    name: i32,
    buf: Option<&mut [u8]>,
    len: UserArg<u32>,
) -> Result<u32, Errno> {
    let ptr = match buf {
        Some(b) => {
            assert!(
                b.len() >= OPTION_BUF,
                "getsockopt_as needs OPTION_BUF bytes"
            );
            b.as_mut_ptr()
        }
        None => std::ptr::null_mut(),
    };
    // A length the program gave above the buffer asks for no more than a handler copies.
    let mut given = match len {
        UserArg::Given(l) if (l as i32) >= 0 => l.min(OPTION_BUF as u32),
        UserArg::Given(l) => l,
        _ => 0,
    };
    let len_ptr = match len {
        UserArg::Given(_) => &mut given as *mut u32,
        UserArg::Null => std::ptr::null_mut(),
        UserArg::Unreadable => FAULTING as *mut u32,
    };
    // SAFETY: the kernel writes into `ptr` at most the length it is given, and for a
    // negative one either refuses it (EINVAL) or clamps it, as unsigned, to the size of
    // the value (`min_t(unsigned int, len, ...)` in tcp.c, udp.c), always below
    // OPTION_BUF, which `buf` holds; `len_ptr` is `given` or never mapped (EFAULT).
    let ret = unsafe { libc::getsockopt(fd.as_raw_fd(), level, name, ptr.cast(), len_ptr) };
    cvt(ret as libc::c_long)?;
    Ok(given)
}
