//! Process-wide settings of `ztrun` that need a direct libc call.
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
