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
