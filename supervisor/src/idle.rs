//! Noticing that the program closed a socket.
//!
//! A socket that is neither pumped nor listening (fresh, bound, or after a failed
//! connect) must leave the table when the program's last reference to its end goes.
//! One epoll set per supervisor holds our ends of all such sockets (edge-triggered, so
//! a socket taken over by a pump is dropped from it at its next event), and one task
//! waits on it. The same set watches listeners and virtual UDP sockets for the hang-up
//! of our end alone (`watch_held`): their end has other readers, and they live until the
//! program closes them. A periodic sweep covers what raises no event: sockets whose
//! program end we hold a duplicate of (fresh TCP sockets, listeners and UDP sockets
//! where `pidfd_getfd` is denied, see `Supervisor::may_grab`), found closed from one
//! listing of the program's descriptors per sweep, and sockets that stopped being idle
//! without an event. The set also reports a wildcard listener's loopback halves ready to
//! accept (`watch_half`): their connections are taken in the set's own task.
//! Registering costs a socket one `epoll_ctl`; a task per socket cost
//! a task, a timer, a duplicate descriptor and, from the thread that reads
//! notifications, a wake-up of a runtime worker.
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
    /// Listeners and UDP sockets, watched for the hang-up of our end alone for as long
    /// as they live (their end is read by others); swept instead while they hold a
    /// duplicate of the program's end.
    held: Mutex<HashMap<u64, Weak<VSocket<B>>>>,
    /// Loopback halves of wildcard listeners, by inode of the kernel listener.
    halves: Mutex<HashMap<u64, Weak<crate::virt::Listening<B>>>>,
}

impl<B: Backend> IdleSet<B> {
    fn watched(&self) -> MutexGuard<'_, HashMap<u64, Weak<VSocket<B>>>> {
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn held(&self) -> MutexGuard<'_, HashMap<u64, Weak<VSocket<B>>>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn halves(&self) -> MutexGuard<'_, HashMap<u64, Weak<crate::virt::Listening<B>>>> {
        self.halves.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn unhold(&self, ino: u64, vs: &VSocket<B>) {
        self.held().remove(&ino);
        let _ = self.epoll.delete(vs.ours.as_fd());
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

    /// Forget the listener or UDP socket `vs` (inode `ino`) when the program has closed
    /// it: at the hang-up of our end, or, while it holds a duplicate of the program's
    /// end, when a sweep finds no traced process holding it.
    pub(crate) fn watch_held(self: &Arc<Self>, ino: u64, vs: &Arc<VSocket<B>>) {
        let Some(set) = self.idle_set() else { return };
        set.held().insert(ino, Arc::downgrade(vs));
        // No EPOLLIN: what the program sends is for the socket's own reader. A hang-up
        // is reported whatever the mask says.
        let flags = EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
        if let Err(e) = set.epoll.add(vs.ours.as_fd(), EpollEvent::new(flags, ino)) {
            debug!(ino, %e, "cannot watch a socket for its close: left to the sweep");
        }
    }

    /// Accept into `listening` the connections of its loopback half `half` when the
    /// kernel has some (the half belongs to `listening`, and closes with it: the set then
    /// forgets it at its next event or sweep).
    pub(crate) fn watch_half(
        self: &Arc<Self>,
        listening: &Arc<crate::virt::Listening<B>>,
        half: std::os::fd::BorrowedFd<'_>,
    ) {
        let Some(set) = self.idle_set() else {
            tracing::warn!("no epoll set: a wildcard listener serves the virtual network only");
            return;
        };
        let Ok(key) = crate::emulate::inode(half) else {
            return;
        };
        set.halves().insert(key, Arc::downgrade(listening));
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLET;
        if let Err(e) = set.epoll.add(half, EpollEvent::new(flags, key)) {
            tracing::warn!(%e, "a wildcard listener serves the virtual network only: its loopback half cannot be watched");
            set.halves().remove(&key);
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
                    held: Mutex::new(HashMap::new()),
                    halves: Mutex::new(HashMap::new()),
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
    // The first sweep one period from now: a socket just registered is not swept at
    // once (its program may not have been seen making a call yet).
    let mut sweep = tokio::time::interval_at(
        tokio::time::Instant::now() + crate::virt::SWEEP,
        crate::virt::SWEEP,
    );
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
    let half = set.halves().get(&ino).map(|w| w.upgrade());
    match half {
        Some(Some(listening)) => return listening.accept_halves(),
        Some(None) => {
            set.halves().remove(&ino);
            return;
        }
        None => {}
    }
    let found = set.watched().get(&ino).and_then(Weak::upgrade);
    let Some(vs) = found else {
        set.watched().remove(&ino);
        let held = set.held().get(&ino).and_then(Weak::upgrade);
        match held {
            Some(vs) if events.intersects(EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP) => {
                // Every copy of the program's end is closed (we hold none).
                set.unhold(ino, &vs);
                me.forget(ino, &vs);
            }
            Some(_) => {}
            None => {
                set.held().remove(&ino);
            }
        }
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
    set.halves().retain(|_, l| l.strong_count() > 0);
    let held: Vec<(u64, Weak<VSocket<B>>)> =
        set.held().iter().map(|(i, w)| (*i, w.clone())).collect();
    for (ino, weak) in held {
        let Some(vs) = weak.upgrade() else {
            set.held().remove(&ino);
            continue;
        };
        if !me.holds_socket(ino, &vs) {
            // Replaced or forgotten by other means (a listener closed at a re-bind).
            set.unhold(ino, &vs);
        } else if vs.holds_program_dup() && !me.still_held(ino) {
            set.unhold(ino, &vs);
            me.forget(ino, &vs);
        }
    }
}
