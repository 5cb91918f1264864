//! Idle sockets: noticing that the program closed a socket nobody else watches.
//!
//! A socket that is neither pumped nor listening (fresh, bound, or after a failed
//! connect) must leave the table when the program's last reference to its end goes.
//! One epoll set per supervisor holds our ends of all such sockets (edge-triggered, so
//! a socket taken over by a pump is dropped from it at its next event), and one task
//! waits on it; a periodic sweep covers what raises no event: fresh TCP sockets, whose
//! program end we hold a duplicate of (see `VSocket::program_end`), and sockets that
//! stopped being idle without an event. Registering costs `socket()` one `epoll_ctl`;
//! a task per socket cost a task, a timer, a duplicate descriptor and, from the thread
//! that reads notifications, a wake-up of a runtime worker.
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use tokio::io::Interest;
use tracing::debug;

use crate::backend::Backend;
use crate::emulate::{Supervisor, VSocket};
use crate::kernel::Kernel;

/// The idle sockets of one supervisor, by inode of the program's end.
pub(crate) struct IdleSet<B: Backend> {
    epoll: Epoll,
    watched: Mutex<HashMap<u64, Weak<VSocket<B>>>>,
}

impl<B: Backend> IdleSet<B> {
    fn watched(&self) -> MutexGuard<'_, HashMap<u64, Weak<VSocket<B>>>> {
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stop watching `ino` (whose socket `vs` is alive, so its descriptor is too).
    fn unwatch(&self, ino: u64, vs: &VSocket<B>) {
        self.watched().remove(&ino);
        let _ = self.epoll.delete(vs.ours.as_fd());
    }
}

impl<K: Kernel, B: Backend> Supervisor<K, B> {
    /// Watch `vs` (the socket of inode `ino`) while it is idle, and forget it when the
    /// program has closed it. Stops when a pump or listener takes over our end.
    pub(crate) fn watch(self: &Arc<Self>, ino: u64, vs: Arc<VSocket<B>>) {
        let Some(set) = self.idle_set() else { return };
        set.watched().insert(ino, Arc::downgrade(&vs));
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
        if let Err(e) = set.epoll.add(vs.ours.as_fd(), EpollEvent::new(flags, ino)) {
            debug!(ino, %e, "cannot watch an idle socket: it stays until the program exits");
            set.watched().remove(&ino);
        }
    }

    /// The set, created with its task on first use (`None`: no runtime, or no epoll).
    fn idle_set(self: &Arc<Self>) -> Option<&Arc<IdleSet<B>>> {
        self.idle
            .get_or_init(|| {
                let handle = tokio::runtime::Handle::try_current().ok()?;
                let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
                    .inspect_err(|e| debug!(%e, "no epoll set for idle sockets"))
                    .ok()?;
                let ready = epoll.0.try_clone().ok()?;
                let ready = crate::sys::async_fd(ready, Interest::READABLE).ok()?;
                let set = Arc::new(IdleSet {
                    epoll,
                    watched: Mutex::new(HashMap::new()),
                });
                drop(handle.spawn(run(Arc::downgrade(self), set.clone(), ready)));
                Some(set)
            })
            .as_ref()
    }
}

/// Wait for events on the set and sweep it every [`crate::virt::SWEEP`], until the
/// supervisor is gone.
async fn run<K: Kernel, B: Backend>(
    me: Weak<Supervisor<K, B>>,
    set: Arc<IdleSet<B>>,
    ready: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
) {
    let mut sweep = tokio::time::interval(crate::virt::SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut events = vec![EpollEvent::empty(); 64];
    loop {
        tokio::select! {
            r = ready.readable() => {
                let Ok(mut guard) = r else { return };
                let Some(me) = me.upgrade() else { return };
                loop {
                    let n = match set.epoll.wait(&mut events, EpollTimeout::ZERO) {
                        Ok(n) => n,
                        Err(Errno::EINTR) => continue,
                        Err(_) => return,
                    };
                    for ev in &events[..n] {
                        on_event(&me, &set, ev.data(), ev.events());
                    }
                    if n < events.len() {
                        break;
                    }
                }
                guard.clear_ready();
            }
            _ = sweep.tick() => {
                let Some(me) = me.upgrade() else { return };
                sweep_set(&me, &set);
            }
        }
    }
}

/// Our end of `ino` became readable or hung up.
fn on_event<K: Kernel, B: Backend>(
    me: &Arc<Supervisor<K, B>>,
    set: &IdleSet<B>,
    ino: u64,
    events: EpollFlags,
) {
    let found = set.watched().get(&ino).and_then(Weak::upgrade);
    let Some(vs) = found else {
        set.watched().remove(&ino);
        return;
    };
    // Held while reading, so that no connect or listen takes over our end meanwhile.
    let phase = vs.phase();
    if !phase.idle() {
        drop(phase);
        set.unwatch(ino, &vs);
        return;
    }
    let mut closed = events.intersects(EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP);
    let mut buf = [0u8; 4096];
    while !closed {
        // Data written to an unconnected socket: Linux would have refused it.
        match nix::unistd::read(vs.ours.as_fd(), &mut buf) {
            Ok(0) => closed = true,
            Ok(_) => {}
            Err(Errno::EAGAIN) => break,
            Err(Errno::EINTR) => {}
            Err(_) => closed = true,
        }
    }
    drop(phase);
    if closed {
        set.unwatch(ino, &vs);
        me.forget(ino, &vs);
    }
}

/// Drop sockets that are gone or no longer idle, and forget fresh TCP sockets that no
/// traced process holds any more.
///
/// The program's descriptors are listed once per sweep, not once per socket
/// (`Supervisor::still_held`): with thousands of fresh sockets a per-socket scan of
/// `/proc/PID/fd` cost most of a core.
fn sweep_set<K: Kernel, B: Backend>(me: &Arc<Supervisor<K, B>>, set: &IdleSet<B>) {
    let entries: Vec<(u64, Weak<VSocket<B>>)> =
        set.watched().iter().map(|(i, w)| (*i, w.clone())).collect();

    for (ino, weak) in entries {
        let Some(vs) = weak.upgrade() else {
            set.watched().remove(&ino);
            continue;
        };
        if !vs.phase().idle() {
            set.unwatch(ino, &vs);
        } else if vs.holds_program_end() && !me.still_held(ino) {
            set.unwatch(ino, &vs);
            me.forget(ino, &vs);
        }
    }
}
