//! The notification loop: one reader of the seccomp listener on tokio, one task per
//! notification.
use std::future::Future as _;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tokio::io::Interest;
use tracing::{debug, warn};

use crate::backend::{Backend, Policy};
use crate::emulate::Supervisor;
use crate::kernel::LinuxKernel;

/// Errors that stop the notification loop.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// The listener could not be registered with the tokio reactor.
    #[error("cannot register the seccomp listener with tokio")]
    Register(#[source] std::io::Error),
    /// Receiving a notification failed for a reason other than a vanished caller.
    #[error("SECCOMP_IOCTL_NOTIF_RECV failed")]
    Receive(#[source] Errno),
}

/// Notifications received by every supervisor of this process (trapped calls; a
/// diagnostic for the benchmark, see [`trapped_calls`]).
static TRAPPED_CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many trapped calls the supervisors of this process have received so far.
pub fn trapped_calls() -> u64 {
    TRAPPED_CALLS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Serve the program behind `listener` until no traced task is left (the listener
/// reports a hang-up), emulating socket calls against `backend` under `policy`.
///
/// Must run inside a tokio runtime with I/O and time enabled.
pub async fn supervise<B: Backend>(
    listener: OwnedFd,
    policy: Policy,
    backend: Arc<B>,
) -> Result<(), SuperviseError> {
    let poll_fd = listener.try_clone().map_err(SuperviseError::Register)?;
    let kernel = Arc::new(LinuxKernel::new(listener));
    if let Err(e) = kernel.sync_wake_up() {
        debug!(%e, "synchronous seccomp wake-ups not available (Linux < 6.6)");
    }
    let sup = Arc::new(Supervisor::new(kernel.clone(), backend, policy));
    let afd =
        crate::sys::async_fd(poll_fd, Interest::READABLE).map_err(SuperviseError::Register)?;
    loop {
        let mut guard = afd.readable().await.map_err(SuperviseError::Register)?;
        // Drain every pending notification: readiness is edge-triggered.
        loop {
            let mut fds = [PollFd::new(afd.get_ref().as_fd(), PollFlags::POLLIN)];
            let ready = match poll(&mut fds, PollTimeout::ZERO) {
                Ok(_) => fds[0].revents().unwrap_or(PollFlags::empty()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(SuperviseError::Receive(e)),
            };
            if ready.contains(PollFlags::POLLIN) {
                match kernel.receive() {
                    Ok(n) => {
                        TRAPPED_CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        handle_inline_first(sup.clone(), n)
                    }
                    // The caller was interrupted before we read it, or a signal hit us.
                    Err(Errno::ENOENT | Errno::EINTR) => {}
                    Err(e) => {
                        warn!(%e, "receiving a seccomp notification failed");
                        return Err(SuperviseError::Receive(e));
                    }
                }
                continue;
            }
            if ready.contains(PollFlags::POLLHUP) {
                // The program is gone; what it sent may still be on its way.
                sup.linger(crate::virt::LINGER).await;
                debug!("no traced task left: supervisor done");
                return Ok(());
            }
            break;
        }
        guard.clear_ready();
    }
}

/// Answer `n` here, in the reader's own turn, when its emulation completes without
/// waiting (most calls: `socket`, `bind`, `setsockopt`, names, options, a loopback
/// `connect`); only a call that has to wait (a blocking `accept`, a virtual `connect`, a
/// receive with nothing queued) becomes a task of its own. The program is blocked in the
/// call meanwhile, so answering at once saves a hand-over to another runtime thread and
/// its wake-up (tens of µs on a VM) on every trapped call.
fn handle_inline_first<K, B>(sup: Arc<Supervisor<K, B>>, n: crate::kernel::Notification)
where
    K: crate::kernel::Kernel,
    B: Backend,
{
    let mut fut = Box::pin(async move { sup.handle(n).await });
    // A waker that does nothing: a future that is not ready is spawned at once, and
    // the runtime's first poll registers the real one with whatever it waits on.
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    if fut.as_mut().poll(&mut cx).is_pending() {
        tokio::spawn(fut);
    }
}
