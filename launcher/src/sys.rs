//! Process-wide settings of `ztrun` and `zt` that need a direct libc call.
#![allow(unsafe_code)]

/// Allocations at or above this size get their own mapping, returned to the system when
/// freed.
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Keep the allocator from holding on to memory that connections freed.
///
/// Every TCP connection of a user-space stack has a 1 MiB receive and a 1 MiB send
/// buffer. glibc raises its mmap threshold dynamically once such a block is freed, after
/// which later buffers come from the heap: calloc then zeroes them (every page resident)
/// and the heap fragments instead of shrinking, so `ztrun` grew by about 1 MB per
/// connection and never gave it back (BENCHMARKS.md). Setting the threshold turns that
/// adjustment off: each buffer is its own zero-filled mapping, untouched pages cost
/// nothing, and a closed connection's buffers go back to the system.
pub fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; called once at start-up, before
    // any thread is spawned.
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
    if ok != 1 {
        tracing::debug!("mallopt(M_MMAP_THRESHOLD) not applied");
    }
}

/// Raise this process's soft `RLIMIT_NOFILE` to its hard limit and return the limit it
/// had (soft, hard), for the wrapped program.
///
/// The supervisor holds descriptors for the program's virtual sockets (and the stacks
/// for their connections), so a server with thousands of connections needs more than
/// the usual soft limit of 1024 in `ztrun`; the program itself gets its own limit back
/// (`launch::Command::nofile_limit`), as Go's runtime does for the processes it starts.
pub fn raise_nofile_limit() -> Option<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a live local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    let original = (lim.rlim_cur, lim.rlim_max);
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads a live local struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            tracing::debug!("cannot raise RLIMIT_NOFILE");
        }
    }
    Some(original)
}

/// This process's soft `RLIMIT_NOFILE`, if it can be read.
pub fn nofile_soft_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a live local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    Some(lim.rlim_cur)
}

/// Restore the default action of SIGPIPE (end the process), which Rust's runtime sets to
/// ignored: a command whose output goes to a reader that stopped early (`zt id show |
/// head -1`) then ends as a Unix filter does, rather than panicking on the failed write.
/// For commands that only print; not for `ztrun`, whose program inherits dispositions.
pub fn default_sigpipe() {
    // SAFETY: signal(2) with SIG_DFL installs no handler; called at start-up, before any
    // thread is spawned.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// `prctl(PR_SET_DUMPABLE, 0)`: the programs a node serves run with its uid, and must
/// not reach its memory or descriptors (as `launch` does for `ztrun` itself).
pub fn set_non_dumpable() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Send one packet on a `SOCK_SEQPACKET` socket, with `fd` attached (`SCM_RIGHTS`).
pub fn send_packet(
    sock: std::os::fd::BorrowedFd<'_>,
    bytes: &[u8],
    fd: Option<std::os::fd::BorrowedFd<'_>>,
) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::os::fd::AsRawFd;
    let iov = [std::io::IoSlice::new(bytes)];
    let fds = fd.map(|f| [f.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage<'_>> = fds
        .as_ref()
        .map(|f| ControlMessage::ScmRights(f))
        .into_iter()
        .collect();
    sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &cmsgs,
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        None,
    )?;
    Ok(())
}

/// Receive one packet of at most `max` bytes from a `SOCK_SEQPACKET` socket, with the
/// descriptor it carries, if any (others are closed). `None`: end of stream.
pub fn recv_packet(
    sock: std::os::fd::BorrowedFd<'_>,
    max: usize,
) -> std::io::Result<Option<(Vec<u8>, Option<std::os::fd::OwnedFd>)>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    let mut buf = vec![0u8; max];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )?;
    let len = msg.bytes;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: SCM_RIGHTS descriptors are new in this process and owned by no one
            // else; each is wrapped exactly once.
            fds.extend(raw.into_iter().map(|r| unsafe { OwnedFd::from_raw_fd(r) }));
        }
    }
    if len == 0 && fds.is_empty() {
        return Ok(None);
    }
    buf.truncate(len);
    Ok(Some((buf, fds.into_iter().next())))
}

/// Take ownership of a descriptor a system call just returned (`accept4`).
pub fn own_fd(fd: std::os::fd::RawFd) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: the caller passes a descriptor just returned to it, owned by nothing else.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}

/// Start `cmd` in a session of its own (`setsid` before `execve`): a terminal's Ctrl-C
/// and hang-up do not reach it, as they must not reach a node that other programs use.
/// Descriptors above stderr that `ztrun` inherited without close-on-exec (a build
/// tool's jobserver pipe, a caller's stray pipe) are closed at `execve`: a node outlives
/// its first `ztrun` and must not hold a pipe its caller waits on.
pub fn own_session(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid and close_range are async-signal-safe system calls on integers and
    // touch no memory of the parent; std's own pipe is close-on-exec already.
    unsafe {
        cmd.pre_exec(|| {
            // CLOSE_RANGE_CLOEXEC (Linux 5.11): marked, not closed, so std's exec-error
            // pipe still works; older kernels refuse it and nothing changes.
            const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC);
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
}

/// Register `fd` with the tokio reactor.
pub fn async_fd(
    fd: std::os::fd::OwnedFd,
    interest: tokio::io::Interest,
) -> std::io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: an OwnedFd stays open and returns the same number from as_raw_fd for as long
    // as the AsyncFd owns it, which is what register_with_interest requires.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, interest) }.map_err(Into::into)
}

/// Poll `fd` (an epoll instance) until it is readable or `window` has passed since
/// `start`, yielding the CPU on every turn ([`crate::spin`]). Returns whether it became
/// readable.
pub fn spin_until_readable(
    fd: std::os::fd::RawFd,
    start: std::time::Instant,
    window: std::time::Duration,
) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one pollfd on our stack, a zero timeout; an invalid fd only sets POLLNVAL.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        if n != 0 {
            return n > 0 && p.revents & libc::POLLIN != 0;
        }
        if start.elapsed() >= window {
            return false;
        }
        // SAFETY: no arguments; lets another runnable task of this CPU go first.
        unsafe { libc::sched_yield() };
    }
}

/// The inode of descriptor `fd` of this process, if it is open.
pub fn fd_inode(fd: std::os::fd::RawFd) -> Option<u64> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a stat into our buffer or fails; an fd closed meanwhile fails
    // with EBADF.
    let r = unsafe { libc::fstat(fd, st.as_mut_ptr()) };
    // SAFETY: fstat returned 0, so it filled the buffer.
    (r == 0).then(|| unsafe { st.assume_init() }.st_ino)
}
