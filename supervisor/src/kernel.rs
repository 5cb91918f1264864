//! The seam between syscall emulation and the kernel.
//!
//! Everything the emulation needs from the kernel about the *traced* program goes through
//! [`Kernel`]: answering notifications, checking they are still alive, reading and writing
//! the program's memory, installing fds into it, and resolving its fd numbers to socket
//! inodes. [`LinuxKernel`] is the real thing; the unit tests use a recording fake
//! (`kernel::fake`). Operations on the supervisor's *own* fds (socketpairs, kernel sockets
//! created on the program's behalf) are ordinary syscalls and need no seam.
use std::fs;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use std::os::unix::fs::FileExt as _;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::sys::uio::{process_vm_readv, process_vm_writev, RemoteIoVec};
use nix::unistd::Pid;

use crate::sys;

/// The errno of a failed `open` of `/proc/PID/mem`: `ESRCH` when the thread is gone,
/// `EFAULT` otherwise (as the `process_vm_*` calls answer an unreadable address).
fn proc_mem_errno(e: std::io::Error) -> Errno {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ESRCH) => Errno::ESRCH,
        _ => Errno::EFAULT,
    }
}

/// One trapped system call, as `SECCOMP_IOCTL_NOTIF_RECV` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notification {
    /// Cookie for the answer.
    pub id: u64,
    /// Thread id of the caller, in the supervisor's pid namespace.
    pub pid: u32,
    /// System call number.
    pub nr: i64,
    /// `AUDIT_ARCH_*` of the call.
    pub arch: u32,
    /// Raw arguments.
    pub args: [u64; 6],
}

/// How the trapped call finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// Return this non-negative value.
    Value(i64),
    /// Fail with this errno.
    Errno(Errno),
    /// Let the kernel run the call as the program made it
    /// (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`). Only for calls whose memory arguments were
    /// never inspected.
    Continue,
    /// A signal the program handles interrupted the call: answered with the kernel's
    /// `-ERESTARTSYS`, which the return to user space turns into a restart of the call
    /// when the handler has `SA_RESTART`, or `EINTR` (signal(7)). Only while a handled
    /// signal is pending for the calling thread (it is then delivered on that return).
    Interrupted,
}

/// How [`Kernel::add_fd`] places a file into the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Lowest free fd number, and answer the call with it (`SECCOMP_ADDFD_FLAG_SEND`).
    AnswerWithNew {
        /// `O_CLOEXEC` on the new fd.
        cloexec: bool,
    },
    /// Replace fd `target` atomically (`SECCOMP_ADDFD_FLAG_SETFD`); the call stays pending.
    Replace {
        /// The program's fd number.
        target: i32,
        /// `O_CLOEXEC` on the fd.
        cloexec: bool,
    },
}

/// What a program fd number refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdTarget {
    /// A socket with this inode number.
    Socket(u64),
    /// Open, but not a socket.
    Other,
}

/// What a permission check needs of the calling thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    /// Effective capabilities (`CapEff` of `/proc/<tid>/status`).
    pub effective: u64,
    /// The thread's user namespace (inode of `/proc/<tid>/ns/user`); `None` in fakes,
    /// meaning the supervisor's own.
    pub user_ns: Option<u64>,
}

impl Credentials {
    /// Whether `cap` (`CAP_*` number) is effective.
    pub fn has(&self, cap: u32) -> bool {
        cap < 64 && self.effective & (1 << cap) != 0
    }
}

/// The notification is gone: the program was interrupted or killed (`ENOENT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("notification {id} no longer exists (caller interrupted or gone)")]
pub struct Vanished {
    /// The notification cookie.
    pub id: u64,
}

/// The kernel operations the emulation uses. See the module documentation.
pub trait Kernel: Send + Sync + 'static {
    /// Answer notification `id`.
    fn respond(&self, id: u64, response: Response) -> Result<(), Vanished>;
    /// `SECCOMP_IOCTL_NOTIF_ID_VALID`: is `id` still waiting?
    fn id_valid(&self, id: u64) -> bool;
    /// Copy `buf.len()` bytes from the program at `addr`. A short or failed copy is
    /// `EFAULT` (or `ESRCH` when the thread is gone).
    fn read_memory(&self, pid: u32, addr: u64, buf: &mut [u8]) -> Result<(), Errno>;
    /// Copy `data` into the program at `addr`; a short copy is `EFAULT`.
    fn write_memory(&self, pid: u32, addr: u64, data: &[u8]) -> Result<(), Errno>;
    /// Copy each `(addr, data)` part into the program, in order, stopping at the first
    /// that fails (`EFAULT`): what `recvmsg` stores (data, name, lengths, flags) in as
    /// few system calls as the kernel allows.
    fn write_memory_parts(&self, pid: u32, parts: &[(u64, &[u8])]) -> Result<(), Errno> {
        write_each(self, pid, parts)
    }
    /// Gather `(addr, len)` regions of the program, in order, into one buffer: what
    /// `sendmsg` sends (its iovecs). A short or failed copy is `EFAULT`.
    fn read_memory_parts(&self, pid: u32, parts: &[(u64, usize)]) -> Result<Vec<u8>, Errno> {
        let mut out = vec![0u8; parts.iter().map(|p| p.1).sum()];
        read_each(self, pid, parts, &mut out)?;
        Ok(out)
    }
    /// Install `fd` into the program as described by `how`; returns the fd number.
    /// `ENOENT` means the notification vanished and nothing was installed.
    fn add_fd(&self, id: u64, fd: BorrowedFd<'_>, how: Placement) -> Result<i32, Errno>;
    /// Resolve program fd `fd` of thread `pid` (`EBADF` if not open).
    fn fd_target(&self, pid: u32, fd: i32) -> Result<FdTarget, Errno>;
    /// The open file's status flags and close-on-exec bit, read live from
    /// `/proc/<tid>/fdinfo/<fd>` (`O_NONBLOCK`, `O_CLOEXEC`, ...).
    fn fd_flags(&self, pid: u32, fd: i32) -> Result<i32, Errno>;
    /// Does thread `pid`'s fd table hold socket inode `ino`? `None`: the thread is gone.
    fn holds(&self, pid: u32, ino: u64) -> Option<bool>;
    /// Every socket inode thread `pid`'s fd table holds, in one pass (`None`: the thread
    /// is gone, or the kernel cannot list them: ask [`Kernel::holds`] per inode).
    fn held_sockets(&self, _pid: u32) -> Option<std::collections::HashSet<u64>> {
        None
    }
    /// The network namespace of thread `pid` (inode of `/proc/<tid>/ns/net`). Reading it
    /// needs the access `ptrace` would: a program that made itself non-dumpable answers
    /// `EACCES`. Default: `ENOSYS` (the fakes: the supervisor's own).
    fn net_namespace(&self, _pid: u32) -> Result<u64, Errno> {
        Err(Errno::ENOSYS)
    }
    /// The credentials of thread `pid`, for permission checks made on its behalf.
    /// Default: every capability, in the supervisor's user namespace.
    fn credentials(&self, _pid: u32) -> Result<Credentials, Errno> {
        Ok(Credentials {
            effective: u64::MAX,
            user_ns: None,
        })
    }
    /// Is a signal that the program handles pending for thread `pid`, and not blocked
    /// there (thread-directed, or process-directed in a single-threaded process)? Such a
    /// signal interrupts a blocked call on Linux. Default: no.
    fn handled_signal_pending(&self, _pid: u32) -> bool {
        false
    }
    /// A duplicate of the open file behind socket inode `ino` in thread `pid`'s fd table
    /// (`pidfd_getfd`), checked to be that very inode. An optimization, never a need:
    /// Docker's default profile denies `pidfd_getfd` (`EPERM`); `ENOENT` when the thread
    /// does not hold it. Default: `ENOSYS`.
    fn grab(&self, _pid: u32, _ino: u64) -> Result<OwnedFd, Errno> {
        Err(Errno::ENOSYS)
    }
    /// [`Kernel::grab`] of descriptor `fd`, which should be socket inode `ino` (the
    /// descriptor argument of a call in progress): no search of the fd table.
    /// Default: `ENOSYS`.
    fn grab_at(&self, _pid: u32, _fd: i32, _ino: u64) -> Result<OwnedFd, Errno> {
        Err(Errno::ENOSYS)
    }
}

/// The real kernel behind a seccomp listener fd.
///
/// The program's memory is read and written with `process_vm_readv(2)` and
/// `process_vm_writev(2)`. Docker's default seccomp profile denies both to a container
/// without `CAP_SYS_PTRACE` (`EPERM`), while `/proc/PID/mem` (proc(5)), guarded by the
/// same ptrace access check, stays open; after the first refusal every access goes
/// through it (one `open` and `pread`/`pwrite` per access instead of one call).
#[derive(Debug)]
pub struct LinuxKernel {
    listener: OwnedFd,
    vm_calls_denied: AtomicBool,
    /// Process descriptors ([`Kernel::grab_at`]): a duplicate of the program's end is
    /// taken on many calls (an `accept`, a non-blocking `connect`, each `recvmsg` of a
    /// datagram), and opening and closing a pidfd each time were two of its four system
    /// calls.
    pidfds: KeptByThread,
    /// `/proc/<tid>` directories ([`LinuxKernel::at_proc`]): which socket a descriptor is,
    /// asked on every trapped call on one, walked `/proc` and the thread's directory each
    /// time.
    proc_dirs: KeptByThread,
}

/// Descriptors kept by the thread id that last needed one, [`KEPT`] at most (the oldest
/// goes first).
#[derive(Debug, Default)]
struct KeptByThread(std::sync::Mutex<Vec<(u32, OwnedFd)>>);

impl KeptByThread {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u32, OwnedFd)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `f` asked through the descriptor kept for `pid`, or through a fresh one from
    /// `open` (kept if `f` succeeds through it). A kept descriptor can be stale (its
    /// thread gone, the id reused by another): a failure through it forgets it and asks
    /// once more through a fresh one, whose answer stands.
    fn through<T>(
        &self,
        pid: u32,
        open: impl FnOnce() -> Result<OwnedFd, Errno>,
        mut f: impl FnMut(BorrowedFd<'_>) -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        let mut kept = self.lock();
        if let Some(i) = kept.iter().position(|(p, _)| *p == pid) {
            match f(kept[i].1.as_fd()) {
                Ok(v) => return Ok(v),
                Err(_) => drop(kept.swap_remove(i)),
            }
        }
        drop(kept);
        let fresh = open()?;
        let answer = f(fresh.as_fd())?;
        let mut kept = self.lock();
        if kept.len() >= KEPT {
            kept.remove(0);
        }
        kept.push((pid, fresh));
        Ok(answer)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Regions one `process_vm_readv`/`writev` takes at most (`UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

/// Process descriptors, and `/proc/<tid>` directories, kept at most.
const KEPT: usize = 16;

impl LinuxKernel {
    /// Wrap the listener returned by the launch sequence.
    pub fn new(listener: OwnedFd) -> Self {
        Self {
            listener,
            vm_calls_denied: AtomicBool::new(false),
            pidfds: KeptByThread::default(),
            proc_dirs: KeptByThread::default(),
        }
    }

    /// `f` asked of thread `pid`'s `/proc/<pid>` directory, the one kept for `pid` if
    /// there is one (a name looked up relative to it instead of a whole path).
    fn at_proc<T>(
        &self,
        pid: u32,
        f: impl FnMut(BorrowedFd<'_>) -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        let open = || {
            nix::fcntl::open(
                format!("/proc/{pid}").as_str(),
                nix::fcntl::OFlag::O_PATH
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
        };
        self.proc_dirs.through(pid, open, f)
    }

    /// A duplicate of descriptor `fd` of thread `pid`, checked to be socket `ino`,
    /// through the process descriptor kept for `pid` if there is one. Taking the socket
    /// from the wrong process (a stale kept descriptor) is harmless: the inode check
    /// guarantees it is the very socket (one open file per socket, shared by every
    /// process holding it).
    fn grab_through_kept(&self, pid: u32, fd: i32, ino: u64) -> Result<OwnedFd, Errno> {
        // pidfd_open wants the process, not one of its threads: without PIDFD_THREAD
        // (Linux 6.9) a thread's id is refused, with EINVAL or, on newer kernels, ENOENT.
        let open = || match sys::pidfd_open(pid) {
            Err(Errno::EINVAL | Errno::ENOENT) => sys::pidfd_open(tgid(pid).ok_or(Errno::ESRCH)?),
            r => r,
        };
        self.pidfds
            .through(pid, open, |pidfd| dup_checked(pidfd, fd, ino))
    }

    /// Whether `process_vm_readv`/`writev` were refused and `/proc/PID/mem` is used.
    pub fn uses_proc_mem(&self) -> bool {
        self.vm_calls_denied.load(Ordering::Relaxed)
    }

    /// Note that the `process_vm_*` calls are refused here (said once, in the log).
    fn deny_vm_calls(&self, errno: Errno) {
        if !self.vm_calls_denied.swap(true, Ordering::Relaxed) {
            tracing::info!(
                "process_vm_readv/writev refused ({errno}, e.g. Docker's default seccomp \
                 profile): reading the program's memory through /proc/PID/mem"
            );
        }
    }

    /// `len` bytes at `addr` of `pid`'s memory through `/proc/PID/mem`.
    fn proc_mem_read(pid: u32, addr: u64, buf: &mut [u8]) -> Result<(), Errno> {
        let file = fs::File::open(format!("/proc/{pid}/mem")).map_err(proc_mem_errno)?;
        file.read_exact_at(buf, addr).map_err(|_| Errno::EFAULT)
    }

    /// `data` into `pid`'s memory at `addr` through `/proc/PID/mem`.
    fn proc_mem_write(pid: u32, addr: u64, data: &[u8]) -> Result<(), Errno> {
        let file = fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .map_err(proc_mem_errno)?;
        file.write_all_at(data, addr).map_err(|_| Errno::EFAULT)
    }

    /// The listener, for readiness polling.
    pub fn listener(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// Ask for synchronous wake-ups between the program and the supervisor
    /// ([`sys::notif_sync_wake_up`]); `EINVAL` on kernels before 6.6.
    pub fn sync_wake_up(&self) -> Result<(), Errno> {
        sys::notif_sync_wake_up(self.listener.as_fd())
    }

    /// `SECCOMP_IOCTL_NOTIF_RECV`. Blocks if nothing is pending: call when readable.
    pub fn receive(&self) -> Result<Notification, Errno> {
        sys::notif_recv(self.listener.as_fd())
    }
}

impl Kernel for LinuxKernel {
    fn respond(&self, id: u64, response: Response) -> Result<(), Vanished> {
        let (val, error, flags) = match response {
            Response::Value(v) => (v, 0, 0),
            Response::Errno(e) => (0, -(e as i32), 0),
            Response::Continue => (0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
            Response::Interrupted => (0, -ERESTARTSYS, 0),
        };
        sys::notif_send(self.listener.as_fd(), id, val, error, flags).map_err(|_| Vanished { id })
    }

    fn id_valid(&self, id: u64) -> bool {
        sys::notif_id_valid(self.listener.as_fd(), id)
    }

    fn read_memory(&self, pid: u32, addr: u64, buf: &mut [u8]) -> Result<(), Errno> {
        if buf.is_empty() {
            return Ok(());
        }
        if self.uses_proc_mem() {
            return Self::proc_mem_read(pid, addr, buf);
        }
        let len = buf.len();
        let remote = [RemoteIoVec {
            base: addr as usize,
            len,
        }];
        match process_vm_readv(
            Pid::from_raw(pid as i32),
            &mut [IoSliceMut::new(buf)],
            &remote,
        ) {
            Ok(n) if n == len => Ok(()),
            Ok(_) => Err(Errno::EFAULT),
            Err(Errno::ESRCH) => Err(Errno::ESRCH),
            Err(e @ (Errno::EPERM | Errno::ENOSYS)) => {
                self.deny_vm_calls(e);
                Self::proc_mem_read(pid, addr, buf)
            }
            Err(_) => Err(Errno::EFAULT),
        }
    }

    fn write_memory(&self, pid: u32, addr: u64, data: &[u8]) -> Result<(), Errno> {
        if data.is_empty() {
            return Ok(());
        }
        if self.uses_proc_mem() {
            return Self::proc_mem_write(pid, addr, data);
        }
        let remote = [RemoteIoVec {
            base: addr as usize,
            len: data.len(),
        }];
        match process_vm_writev(Pid::from_raw(pid as i32), &[IoSlice::new(data)], &remote) {
            Ok(n) if n == data.len() => Ok(()),
            Ok(_) => Err(Errno::EFAULT),
            Err(Errno::ESRCH) => Err(Errno::ESRCH),
            Err(e @ (Errno::EPERM | Errno::ENOSYS)) => {
                self.deny_vm_calls(e);
                Self::proc_mem_write(pid, addr, data)
            }
            Err(_) => Err(Errno::EFAULT),
        }
    }

    fn write_memory_parts(&self, pid: u32, parts: &[(u64, &[u8])]) -> Result<(), Errno> {
        if self.uses_proc_mem() {
            return write_each(self, pid, parts);
        }
        // One process_vm_writev per IOV_MAX parts: the kernel fills the remote regions
        // in order from the local buffers in order, and stops at the first it cannot.
        let parts: Vec<(u64, &[u8])> = parts.iter().copied().filter(|p| !p.1.is_empty()).collect();
        for chunk in parts.chunks(IOV_MAX) {
            let local: Vec<IoSlice<'_>> = chunk.iter().map(|p| IoSlice::new(p.1)).collect();
            let remote: Vec<RemoteIoVec> = chunk
                .iter()
                .map(|p| RemoteIoVec {
                    base: p.0 as usize,
                    len: p.1.len(),
                })
                .collect();
            let total: usize = chunk.iter().map(|p| p.1.len()).sum();
            match process_vm_writev(Pid::from_raw(pid as i32), &local, &remote) {
                Ok(n) if n == total => {}
                Ok(_) => return Err(Errno::EFAULT),
                Err(Errno::ESRCH) => return Err(Errno::ESRCH),
                Err(e @ (Errno::EPERM | Errno::ENOSYS)) => {
                    // From now on each part goes through /proc/PID/mem.
                    self.deny_vm_calls(e);
                    return write_each(self, pid, chunk);
                }
                Err(_) => return Err(Errno::EFAULT),
            }
        }
        Ok(())
    }

    fn read_memory_parts(&self, pid: u32, parts: &[(u64, usize)]) -> Result<Vec<u8>, Errno> {
        let mut out = vec![0u8; parts.iter().map(|p| p.1).sum()];
        if self.uses_proc_mem() {
            read_each(self, pid, parts, &mut out)?;
            return Ok(out);
        }
        let parts: Vec<(u64, usize)> = parts.iter().copied().filter(|p| p.1 > 0).collect();
        let mut at = 0;
        for chunk in parts.chunks(IOV_MAX) {
            let total: usize = chunk.iter().map(|p| p.1).sum();
            let remote: Vec<RemoteIoVec> = chunk
                .iter()
                .map(|p| RemoteIoVec {
                    base: p.0 as usize,
                    len: p.1,
                })
                .collect();
            let buf = &mut out[at..at + total];
            match process_vm_readv(
                Pid::from_raw(pid as i32),
                &mut [IoSliceMut::new(buf)],
                &remote,
            ) {
                Ok(n) if n == total => {}
                Ok(_) => return Err(Errno::EFAULT),
                Err(Errno::ESRCH) => return Err(Errno::ESRCH),
                Err(e @ (Errno::EPERM | Errno::ENOSYS)) => {
                    // From now on each part goes through /proc/PID/mem.
                    self.deny_vm_calls(e);
                    read_each(self, pid, chunk, buf)?;
                }
                Err(_) => return Err(Errno::EFAULT),
            }
            at += total;
        }
        Ok(out)
    }

    fn add_fd(&self, id: u64, fd: BorrowedFd<'_>, how: Placement) -> Result<i32, Errno> {
        let l = self.listener.as_fd();
        match how {
            Placement::AnswerWithNew { cloexec } => {
                sys::notif_addfd(l, id, fd, None, cloexec, true)
            }
            Placement::Replace { target, cloexec } => {
                sys::notif_addfd(l, id, fd, Some(target), cloexec, false)
            }
        }
    }

    fn fd_target(&self, pid: u32, fd: i32) -> Result<FdTarget, Errno> {
        if fd < 0 {
            return Err(Errno::EBADF);
        }
        let name = std::ffi::CString::new(format!("fd/{fd}")).map_err(|_| Errno::EINVAL)?;
        let mut buf = [0u8; 64];
        self.at_proc(pid, |dir| {
            sys::readlinkat(dir, &name, &mut buf).map(|n| parse_fd_link(&buf[..n]))
        })
        .map_err(|e| if e == Errno::ENOENT { Errno::EBADF } else { e })
    }

    fn fd_flags(&self, pid: u32, fd: i32) -> Result<i32, Errno> {
        // "flags:" is the second line, well within one read: an open, a read and a
        // close (reading to the end took three more calls, on every connect).
        let mut buf = [0u8; 256];
        let name = format!("fdinfo/{fd}");
        let n = self
            .at_proc(pid, |dir| {
                let file = nix::fcntl::openat(
                    dir,
                    name.as_str(),
                    nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )?;
                nix::unistd::read(&file, &mut buf)
            })
            .map_err(|e| match e {
                Errno::ENOENT | Errno::UnknownErrno => Errno::EBADF,
                e => e,
            })?;
        let text = String::from_utf8_lossy(&buf[..n]);
        parse_fdinfo_flags(&text).ok_or(Errno::EBADF)
    }

    fn holds(&self, pid: u32, ino: u64) -> Option<bool> {
        fd_of(pid, ino).map(|fd| fd.is_some())
    }

    fn held_sockets(&self, pid: u32) -> Option<std::collections::HashSet<u64>> {
        let dir = fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
        Some(
            dir.flatten()
                .filter_map(|e| {
                    match parse_fd_link(
                        fs::read_link(e.path()).ok()?.as_os_str().as_encoded_bytes(),
                    ) {
                        FdTarget::Socket(ino) => Some(ino),
                        FdTarget::Other => None,
                    }
                })
                .collect(),
        )
    }

    fn net_namespace(&self, pid: u32) -> Result<u64, Errno> {
        let mut buf = [0u8; 64];
        let n = self.at_proc(pid, |dir| sys::readlinkat(dir, c"ns/net", &mut buf))?;
        parse_ns_link(&buf[..n])
    }

    fn handled_signal_pending(&self, pid: u32) -> bool {
        fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| SignalState::parse(&s))
            .is_some_and(|s| s.interrupts())
    }

    fn credentials(&self, pid: u32) -> Result<Credentials, Errno> {
        let status = fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::ESRCH)))?;
        let effective = parse_cap_eff(&status).ok_or(Errno::EINVAL)?;
        Ok(Credentials {
            effective,
            user_ns: Some(ns_inode(&format!("/proc/{pid}/ns/user"))?),
        })
    }

    fn grab(&self, pid: u32, ino: u64) -> Result<OwnedFd, Errno> {
        let fd = fd_of(pid, ino).ok_or(Errno::ESRCH)?.ok_or(Errno::ENOENT)?;
        self.grab_at(pid, fd, ino)
    }

    fn grab_at(&self, pid: u32, fd: i32, ino: u64) -> Result<OwnedFd, Errno> {
        self.grab_through_kept(pid, fd, ino)
    }
}

/// [`Kernel::write_memory_parts`] one [`Kernel::write_memory`] per part.
fn write_each<K: Kernel + ?Sized>(k: &K, pid: u32, parts: &[(u64, &[u8])]) -> Result<(), Errno> {
    parts
        .iter()
        .try_for_each(|&(addr, data)| k.write_memory(pid, addr, data))
}

/// [`Kernel::read_memory_parts`] one [`Kernel::read_memory`] per part, into `out` (as
/// long as the parts together).
fn read_each<K: Kernel + ?Sized>(
    k: &K,
    pid: u32,
    parts: &[(u64, usize)],
    out: &mut [u8],
) -> Result<(), Errno> {
    let mut at = 0;
    for &(addr, len) in parts {
        k.read_memory(pid, addr, &mut out[at..at + len])?;
        at += len;
    }
    Ok(())
}

/// A duplicate of descriptor `fd` of the process behind `pidfd`, if it is socket `ino`.
fn dup_checked(pidfd: BorrowedFd<'_>, fd: i32, ino: u64) -> Result<OwnedFd, Errno> {
    let dup = sys::pidfd_getfd(pidfd, fd)?;
    // The program may have closed that number and opened another file since.
    if nix::sys::stat::fstat(&dup).map(|st| st.st_ino) != Ok(ino) {
        return Err(Errno::ENOENT);
    }
    Ok(dup)
}

/// A descriptor of thread `pid` that refers to socket inode `ino` (from
/// `/proc/<pid>/fd`): `None` when the thread is gone, `Some(None)` when it holds none.
fn fd_of(pid: u32, ino: u64) -> Option<Option<i32>> {
    let dir = fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let want = FdTarget::Socket(ino);
    Some(
        dir.flatten()
            .find(|e| {
                fs::read_link(e.path())
                    .is_ok_and(|l| parse_fd_link(l.as_os_str().as_encoded_bytes()) == want)
            })
            .and_then(|e| e.file_name().to_str()?.parse().ok()),
    )
}

/// The process (thread group) of thread `tid`, from `/proc/<tid>/status`.
fn tgid(tid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The inode of a namespace link such as `/proc/self/ns/net` (`net:[4026531840]`).
pub(crate) fn ns_inode(path: &str) -> Result<u64, Errno> {
    let link = fs::read_link(path)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EACCES)))?;
    parse_ns_link(link.as_os_str().as_encoded_bytes())
}

/// The inode in a namespace link's target (`net:[4026531840]`).
fn parse_ns_link(link: &[u8]) -> Result<u64, Errno> {
    let text = std::str::from_utf8(link).map_err(|_| Errno::EINVAL)?;
    text.split_once(":[")
        .and_then(|(_, rest)| rest.strip_suffix(']'))
        .and_then(|digits| digits.parse().ok())
        .ok_or(Errno::EINVAL)
}

/// `ERESTARTSYS` (kernel-internal, `include/linux/errno.h`).
const ERESTARTSYS: i32 = 512;

/// The signal lines of `/proc/<tid>/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SignalState {
    threads: u64,
    pending: u64,
    shared_pending: u64,
    blocked: u64,
    caught: u64,
}

impl SignalState {
    pub(crate) fn parse(status: &str) -> Option<Self> {
        let field = |name: &str, radix: u32| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| u64::from_str_radix(v.trim(), radix).ok())
        };
        Some(Self {
            threads: field("Threads:", 10)?,
            pending: field("SigPnd:", 16)?,
            shared_pending: field("ShdPnd:", 16)?,
            blocked: field("SigBlk:", 16)?,
            caught: field("SigCgt:", 16)?,
        })
    }

    /// Would a handler run on this thread's return to user space?
    pub(crate) fn interrupts(&self) -> bool {
        let mine = if self.threads == 1 {
            self.pending | self.shared_pending
        } else {
            self.pending
        };
        mine & !self.blocked & self.caught != 0
    }
}

/// The hexadecimal `CapEff:` line of `/proc/<pid>/status`.
pub(crate) fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// `socket:[12345]` → `Socket(12345)`; anything else is `Other`.
pub(crate) fn parse_fd_link(link: &[u8]) -> FdTarget {
    link.strip_prefix(b"socket:[")
        .and_then(|rest| rest.strip_suffix(b"]"))
        .and_then(|digits| std::str::from_utf8(digits).ok())
        .and_then(|digits| digits.parse().ok())
        .map_or(FdTarget::Other, FdTarget::Socket)
}

/// The octal `flags:` line of `/proc/<pid>/fdinfo/<fd>`.
pub(crate) fn parse_fdinfo_flags(text: &str) -> Option<i32> {
    text.lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|v| i32::from_str_radix(v.trim(), 8).ok())
}

#[cfg(test)]
pub(crate) mod fake {
    //! A recording fake kernel: a flat memory per thread, an fd table, and a log of
    //! answers.
    use super::*;
    use std::collections::HashMap;
    use std::os::fd::AsRawFd;
    use std::sync::Mutex;

    /// One installed fd in the fake program.
    #[derive(Debug)]
    pub(crate) struct FakeFd {
        pub(crate) file: OwnedFd,
        pub(crate) cloexec: bool,
    }

    #[derive(Debug, Default)]
    pub(crate) struct State {
        /// (pid, addr) → bytes mapped at addr.
        pub(crate) memory: Vec<(u32, u64, Vec<u8>)>,
        pub(crate) fds: HashMap<i32, FakeFd>,
        pub(crate) answers: Vec<(u64, Response)>,
        pub(crate) vanished: Vec<u64>,
    }

    #[derive(Debug, Default)]
    pub(crate) struct FakeKernel {
        pub(crate) state: Mutex<State>,
    }

    impl FakeKernel {
        /// Map `bytes` at `addr` in thread `pid`.
        pub(crate) fn map(&self, pid: u32, addr: u64, bytes: &[u8]) {
            self.state
                .lock()
                .unwrap()
                .memory
                .push((pid, addr, bytes.to_vec()));
        }
        /// Read back `len` bytes the emulation wrote.
        pub(crate) fn peek(&self, pid: u32, addr: u64, len: usize) -> Vec<u8> {
            let mut buf = vec![0; len];
            self.read_memory(pid, addr, &mut buf).unwrap();
            buf
        }
        pub(crate) fn answers(&self) -> Vec<(u64, Response)> {
            self.state.lock().unwrap().answers.clone()
        }
        /// Mark a notification as abandoned by the program.
        pub(crate) fn vanish(&self, id: u64) {
            self.state.lock().unwrap().vanished.push(id);
        }
        /// Put one of our own fds into the fake program at `fd`.
        pub(crate) fn install(&self, fd: i32, file: OwnedFd) {
            self.state.lock().unwrap().fds.insert(
                fd,
                FakeFd {
                    file,
                    cloexec: false,
                },
            );
        }
        pub(crate) fn close(&self, fd: i32) -> Option<FakeFd> {
            self.state.lock().unwrap().fds.remove(&fd)
        }
        pub(crate) fn with_fd<R>(&self, fd: i32, f: impl FnOnce(&FakeFd) -> R) -> Option<R> {
            self.state.lock().unwrap().fds.get(&fd).map(f)
        }
    }

    fn locate(
        mem: &mut [(u32, u64, Vec<u8>)],
        pid: u32,
        addr: u64,
        len: usize,
    ) -> Option<&mut [u8]> {
        mem.iter_mut().find_map(|(p, base, bytes)| {
            let off = addr.checked_sub(*base)? as usize;
            (*p == pid && off.checked_add(len)? <= bytes.len()).then(|| &mut bytes[off..off + len])
        })
    }

    impl Kernel for FakeKernel {
        fn respond(&self, id: u64, response: Response) -> Result<(), Vanished> {
            let mut s = self.state.lock().unwrap();
            if s.vanished.contains(&id) {
                return Err(Vanished { id });
            }
            s.answers.push((id, response));
            Ok(())
        }
        fn id_valid(&self, id: u64) -> bool {
            !self.state.lock().unwrap().vanished.contains(&id)
        }
        fn read_memory(&self, pid: u32, addr: u64, buf: &mut [u8]) -> Result<(), Errno> {
            let mut s = self.state.lock().unwrap();
            let src = locate(&mut s.memory, pid, addr, buf.len()).ok_or(Errno::EFAULT)?;
            buf.copy_from_slice(src);
            Ok(())
        }
        fn write_memory(&self, pid: u32, addr: u64, data: &[u8]) -> Result<(), Errno> {
            let mut s = self.state.lock().unwrap();
            let dst = locate(&mut s.memory, pid, addr, data.len()).ok_or(Errno::EFAULT)?;
            dst.copy_from_slice(data);
            Ok(())
        }
        fn add_fd(&self, id: u64, fd: BorrowedFd<'_>, how: Placement) -> Result<i32, Errno> {
            let mut s = self.state.lock().unwrap();
            if s.vanished.contains(&id) {
                return Err(Errno::ENOENT);
            }
            let file = fd.try_clone_to_owned().map_err(|_| Errno::EMFILE)?;
            let (n, cloexec) = match how {
                Placement::AnswerWithNew { cloexec } => {
                    let n = (3..).find(|n| !s.fds.contains_key(n)).unwrap_or(3);
                    s.answers.push((id, Response::Value(i64::from(n))));
                    (n, cloexec)
                }
                Placement::Replace { target, cloexec } => (target, cloexec),
            };
            s.fds.insert(n, FakeFd { file, cloexec });
            Ok(n)
        }
        fn fd_target(&self, _pid: u32, fd: i32) -> Result<FdTarget, Errno> {
            let s = self.state.lock().unwrap();
            let f = s.fds.get(&fd).ok_or(Errno::EBADF)?;
            let st = nix::sys::stat::fstat(f.file.as_fd()).map_err(|_| Errno::EBADF)?;
            if st.st_mode & libc::S_IFMT == libc::S_IFSOCK {
                Ok(FdTarget::Socket(st.st_ino))
            } else {
                Ok(FdTarget::Other)
            }
        }
        fn fd_flags(&self, _pid: u32, fd: i32) -> Result<i32, Errno> {
            let s = self.state.lock().unwrap();
            let f = s.fds.get(&fd).ok_or(Errno::EBADF)?;
            let fl = nix::fcntl::fcntl(f.file.as_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
            let _ = f.file.as_raw_fd();
            Ok(fl | if f.cloexec { libc::O_CLOEXEC } else { 0 })
        }
        fn holds(&self, _pid: u32, ino: u64) -> Option<bool> {
            let s = self.state.lock().unwrap();
            Some(
                s.fds.values().any(|f| {
                    nix::sys::stat::fstat(f.file.as_fd()).is_ok_and(|st| st.st_ino == ino)
                }),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_link_parses_socket_inodes_only() {
        assert_eq!(parse_fd_link(b"socket:[4026]"), FdTarget::Socket(4026));
        assert_eq!(parse_fd_link(b"pipe:[12]"), FdTarget::Other);
        assert_eq!(parse_fd_link(b"/dev/null"), FdTarget::Other);
        assert_eq!(parse_fd_link(b"socket:[x]"), FdTarget::Other);
    }

    #[test]
    fn capabilities_and_namespaces_of_a_thread() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t0000000000000400\n";
        let effective = parse_cap_eff(status).unwrap();
        let c = Credentials {
            effective,
            user_ns: None,
        };
        assert!(c.has(10), "CAP_NET_BIND_SERVICE");
        assert!(!c.has(12) && !c.has(13) && !c.has(64));
        assert!(ns_inode("/proc/self/ns/net").unwrap() > 0);
        assert_eq!(ns_inode("/proc/self/ns/nothing"), Err(Errno::ENOENT));
    }

    #[test]
    fn a_pending_handled_unblocked_signal_interrupts() {
        let status = |threads: u32, pnd: &str, shd: &str, blk: &str, cgt: &str| {
            format!(
                "Threads:\t{threads}\nSigQ:\t0/1\nSigPnd:\t{pnd}\nShdPnd:\t{shd}\n\
                 SigBlk:\t{blk}\nSigIgn:\t0\nSigCgt:\t{cgt}\n"
            )
        };
        let s = |t, p, d, b, c| SignalState::parse(&status(t, p, d, b, c)).unwrap();
        // SIGCHLD (bit 16) caught and pending for the thread.
        assert!(s(1, "10000", "0", "0", "10000").interrupts());
        // Blocked, or not caught (default or ignored): no handler runs.
        assert!(!s(1, "10000", "0", "10000", "10000").interrupts());
        assert!(!s(1, "10000", "0", "0", "0").interrupts());
        // Process-directed: ours only when we are the only thread.
        assert!(s(1, "0", "10000", "0", "10000").interrupts());
        assert!(!s(4, "0", "10000", "0", "10000").interrupts());
    }

    #[test]
    fn fdinfo_flags_are_octal() {
        let text = "pos:\t0\nflags:\t02004002\nmnt_id:\t15\n";
        let flags = parse_fdinfo_flags(text).unwrap();
        assert_ne!(flags & libc::O_NONBLOCK, 0);
        assert_ne!(flags & libc::O_CLOEXEC, 0);
        assert_eq!(flags & libc::O_ACCMODE, libc::O_RDWR);
    }

    #[test]
    fn real_fdinfo_of_our_own_socket() {
        let (a, _b) = unix_pair(nix::sys::socket::SockFlag::SOCK_NONBLOCK);
        use std::os::fd::AsRawFd;
        let text = fs::read_to_string(format!(
            "/proc/{}/fdinfo/{}",
            std::process::id(),
            a.as_raw_fd()
        ))
        .unwrap();
        assert_ne!(parse_fdinfo_flags(&text).unwrap() & libc::O_NONBLOCK, 0);
    }

    /// A connected pair of unix stream sockets of this process.
    fn unix_pair(flags: nix::sys::socket::SockFlag) -> (OwnedFd, OwnedFd) {
        nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Stream,
            None,
            flags,
        )
        .unwrap()
    }

    /// A kernel over a listener that these tests never use.
    fn own_kernel() -> LinuxKernel {
        LinuxKernel::new(fs::File::open("/dev/null").unwrap().into())
    }

    #[test]
    fn descriptors_are_looked_up_through_a_kept_proc_directory() {
        use std::os::fd::AsRawFd as _;
        let k = own_kernel();
        let pid = std::process::id();
        let (a, _b) = unix_pair(nix::sys::socket::SockFlag::SOCK_NONBLOCK);
        let ino = nix::sys::stat::fstat(&a).unwrap().st_ino;
        let kept = |k: &LinuxKernel| k.proc_dirs.len();
        assert_eq!(k.fd_target(pid, a.as_raw_fd()), Ok(FdTarget::Socket(ino)));
        assert_eq!(kept(&k), 1);
        assert_eq!(k.fd_target(pid, a.as_raw_fd()), Ok(FdTarget::Socket(ino)));
        assert_eq!(kept(&k), 1, "the kept directory served the second lookup");
        let flags = k.fd_flags(pid, a.as_raw_fd()).unwrap();
        assert_ne!(flags & libc::O_NONBLOCK, 0);
        let own_ns = ns_inode("/proc/self/ns/net").unwrap();
        assert_eq!(k.net_namespace(pid), Ok(own_ns));
        // A descriptor that is not open: EBADF, answered by a fresh directory.
        assert_eq!(k.fd_target(pid, 999_999), Err(Errno::EBADF));
        assert_eq!(kept(&k), 0, "a directory that failed is not kept");
        assert_eq!(k.fd_target(pid, a.as_raw_fd()), Ok(FdTarget::Socket(ino)));
        // A thread that does not exist.
        assert_eq!(k.fd_target(u32::MAX / 2, 0), Err(Errno::EBADF));
    }

    #[test]
    fn memory_parts_are_copied_in_order_and_stop_at_a_fault() {
        let k = own_kernel();
        let pid = std::process::id();
        let (mut a, mut b, mut c) = ([0u8; 3], [0u8; 5], [0u8; 2]);
        let at = |x: &mut [u8]| x.as_mut_ptr() as u64;
        let (pa, pb, pc) = (at(&mut a), at(&mut b), at(&mut c));
        k.write_memory_parts(pid, &[(pa, b"abc"), (pb, b""), (pc, b"yz")])
            .unwrap();
        // An empty part is skipped, whatever its address.
        k.write_memory_parts(pid, &[(pb, b"hello"), (0, b"")])
            .unwrap();
        assert_eq!((&a, &b, &c), (b"abc", b"hello", b"yz"));
        let got = k
            .read_memory_parts(pid, &[(pc, 2), (pa, 3), (pb, 0), (pb, 5)])
            .unwrap();
        assert_eq!(got, b"yzabchello");
        // A region that is not mapped: EFAULT, the parts before it written, none after.
        let r = k.write_memory_parts(pid, &[(pa, b"ABC"), (8, b"x"), (pc, b"YZ")]);
        assert_eq!(r, Err(Errno::EFAULT));
        assert_eq!((&a, &c), (b"ABC", b"yz"));
        assert_eq!(
            k.read_memory_parts(pid, &[(pa, 3), (8, 1)]),
            Err(Errno::EFAULT)
        );
    }

    #[test]
    fn a_kept_process_descriptor_serves_later_grabs_and_a_failed_one_is_dropped() {
        use std::os::fd::AsRawFd;
        let k = own_kernel();
        let pid = std::process::id();
        let (a, _b) = unix_pair(nix::sys::socket::SockFlag::empty());
        let ino = nix::sys::stat::fstat(&a).unwrap().st_ino;
        let kept = |k: &LinuxKernel| k.pidfds.len();
        let dup = k.grab_at(pid, a.as_raw_fd(), ino).unwrap();
        assert_eq!(nix::sys::stat::fstat(&dup).unwrap().st_ino, ino);
        assert_eq!(kept(&k), 1);
        k.grab_at(pid, a.as_raw_fd(), ino).unwrap();
        assert_eq!(kept(&k), 1, "the kept descriptor served the second grab");
        // Not that socket: refused, and the descriptor that gave it is not kept.
        assert_eq!(
            k.grab_at(pid, a.as_raw_fd(), ino + 1).err(),
            Some(Errno::ENOENT)
        );
        assert_eq!(kept(&k), 0);
        k.grab_at(pid, a.as_raw_fd(), ino).unwrap();
        assert_eq!(kept(&k), 1);
    }
}
