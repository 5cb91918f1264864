//! The only module allowed to use `unsafe`: thin wrappers over the seccomp ioctls, raw
//! socket options, `clone`/`execve` for the launch sequence, and the pidfd calls.
//!
//! Every block carries a `// SAFETY:` line. Callers above this module see safe functions
//! with `nix::errno::Errno` errors.
#![allow(unsafe_code)]

use std::ffi::{c_int, CString};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

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

/// Bytes waiting in a socket's receive queue (`FIONREAD`).
pub(crate) fn unread(fd: BorrowedFd<'_>) -> Result<usize, Errno> {
    let mut n: c_int = 0;
    // SAFETY: FIONREAD writes one int into `n`, which outlives the call; the fd is
    // borrowed so it stays open.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n as *mut c_int) };
    cvt(ret as libc::c_long).map(|_| n.max(0) as usize)
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
}

/// The parent's view of a started child.
#[derive(Debug)]
pub(crate) struct Started {
    pub(crate) pid: i32,
    pub(crate) pidfd: OwnedFd,
    pub(crate) listener: OwnedFd,
    pub(crate) killable_recv: bool,
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
            _ => Self::Clone,
        }
    }
}

const MSG_LISTENER: u32 = 1;
const MSG_KILLABLE: u32 = 2;
const MSG_FAILED: u32 = 3;

/// The launch sequence (see `launch.rs` for the commented steps). The parent blocks all
/// signals around `clone`, so no handler of ours runs in the child before it resets them.
pub(crate) fn clone_filter_exec(plan: &ChildPlan) -> Result<Started, ChildFailure> {
    let fail = |errno| ChildFailure {
        step: ChildStep::Clone,
        errno,
    };
    // Status pipe: close-on-exec, so a successful exec leaves only our copy open.
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
        .map_err(fail)?;

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

    let parent = nix::unistd::getpid().as_raw();
    let mut pidfd: c_int = -1;
    let flags = libc::CLONE_VFORK | libc::CLONE_FILES | libc::CLONE_PIDFD | libc::SIGCHLD;
    // SAFETY: raw clone without CLONE_VM is fork-like: the child gets a copy-on-write copy
    // of our memory and stack (newsp = 0). CLONE_VFORK suspends this thread until the child
    // execs or exits, so `prog`, `argv`, `envp` stay valid. The kernel writes the pidfd into
    // `pidfd` (parent_tid argument) in our address space.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags as libc::c_ulong,
            0usize,
            &mut pidfd as *mut c_int,
            0usize,
            0usize,
        )
    };
    if ret == 0 {
        // SAFETY: we are the child; child_main only makes async-signal-safe calls on data
        // prepared above and never returns.
        unsafe { child_main(plan, &prog, &argv, &envp, wr.as_raw_fd(), &old_mask, parent) }
    }
    let clone_errno = Errno::last();
    // SAFETY: restores the mask saved above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut());
    }
    if ret < 0 {
        return Err(fail(clone_errno));
    }
    let pid = ret as i32;
    // SAFETY: CLONE_PIDFD stored a fresh fd that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    drop(wr);

    // The child has exec'd or exited (vfork semantics): read its reports.
    let mut listener: Option<OwnedFd> = None;
    let mut killable = false;
    let mut failure = None;
    let mut buf = [0u8; 8];
    while let Ok(8) = nix::unistd::read(&rd, &mut buf) {
        let tag = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let val = u32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
        match tag {
            // SAFETY: the child created this fd in the table we share (CLONE_FILES) and
            // reported its number; nothing else in this process knows it.
            MSG_LISTENER => listener = Some(unsafe { OwnedFd::from_raw_fd(val as RawFd) }),
            MSG_KILLABLE => killable = val != 0,
            MSG_FAILED => {
                let step = ChildStep::from_code(val >> 16);
                failure = Some(ChildFailure {
                    step,
                    errno: Errno::from_raw((val & 0xffff) as i32),
                })
            }
            _ => {}
        }
    }
    if let Some(failure) = failure {
        drop(listener);
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        return Err(failure);
    }
    match listener {
        Some(listener) => Ok(Started {
            pid,
            pidfd,
            listener,
            killable_recv: killable,
        }),
        None => {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            Err(ChildFailure {
                step: ChildStep::InstallFilter,
                errno: Errno::EIO,
            })
        }
    }
}

/// The child's side: steps 4–8 of the launch sequence.
///
/// # Safety
/// Must only be called in the child of `clone_filter_exec`, which owns a private copy of
/// the parent's memory; only async-signal-safe functions are used.
unsafe fn child_main(
    plan: &ChildPlan,
    prog: &libc::sock_fprog,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    report: RawFd,
    old_mask: &libc::sigset_t,
    parent: libc::pid_t,
) -> ! {
    let send = |tag: u32, val: u32| {
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&tag.to_ne_bytes());
        msg[4..].copy_from_slice(&val.to_ne_bytes());
        // SAFETY: writes 8 bytes from a live local buffer to the status pipe.
        unsafe { libc::write(report, msg.as_ptr().cast(), 8) };
    };
    let die = |step: ChildStep| -> ! {
        let errno = Errno::last_raw() as u32 & 0xffff;
        send(MSG_FAILED, (step.code() << 16) | errno);
        // SAFETY: _exit is async-signal-safe and never returns.
        unsafe { libc::_exit(127) }
    };

    // 4a. Handlers inherited from the parent must not run here: reset every caught signal
    //     to its default, then restore the parent's original mask for the program.
    for sig in 1..libc::SIGRTMAX() {
        // SAFETY: sigaction on a zeroed struct only queries/sets this process's handler.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction != libc::SIG_DFL
                && old.sa_sigaction != libc::SIG_IGN
            {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
    }
    // SAFETY: sets this thread's mask from a live sigset_t.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old_mask, std::ptr::null_mut()) };

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
pub(crate) fn async_end<B: crate::backend::Backend>(
    vs: std::sync::Arc<crate::emulate::VSocket<B>>,
) -> std::io::Result<tokio::io::unix::AsyncFd<EndFd<B>>> {
    let interest = tokio::io::Interest::READABLE | tokio::io::Interest::WRITABLE;
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
