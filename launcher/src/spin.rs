//! Spinning before a runtime worker sleeps: busy polling, adaptive.
//!
//! A request that crosses a wrapped program's socket wakes `ztrun` several times: for the
//! program's trapped call, for its data, for the peer's datagram. On a VM each of those
//! wake-ups of a sleeping thread costs 15-20 µs (an idle virtual CPU halts, and waking it
//! is an interrupt through the hypervisor), more than the work it wakes us for. So a
//! worker about to sleep first polls the runtime's epoll instance for a short while
//! (yielding the CPU to anything else that wants it on every turn): when the next event
//! comes within that window, the worker's `epoll_wait` then returns at once, no one
//! sleeps and no one is woken. This is the kernel's `busy_poll` idea, for a process whose
//! events come from a seccomp listener, socketpairs and UDP sockets.
//!
//! Adaptive, so that it costs little where it cannot help: a worker spins only while its
//! previous idle gap (from deciding to sleep to running again) was at most 20 windows,
//! and 8 spins in a row that find nothing rest it for 20 ms. A steady exchange of requests or connections keeps it on; an idle
//! `ztrun`, a program that computes, or timers further apart than 2 ms never spin, and
//! events that keep coming just after the window cost at most 4 % of a core.
//!
//! `ZTRUN_SPIN_US` sets the window in microseconds (0 turns spinning off).
use std::cell::Cell;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The default window. A round trip through both `ztrun`s of a pair on one host takes
/// 35-60 µs while both spin, and a new connection's steps come tens of µs apart: on the
/// local pair (3 runs each) a window of 50 µs gave 13,500-16,800 requests/s and
/// 4,900-5,300 connections/s, 100 µs 15,000-17,600 and 5,100-5,500, 200 µs
/// 16,800-21,600 and 5,200-5,800; without spinning 8,300-8,800 and 2,700-3,000.
pub const DEFAULT_WINDOW: Duration = Duration::from_micros(100);

/// The environment variable that sets the window, in microseconds.
pub const WINDOW_VAR: &str = "ZTRUN_SPIN_US";

/// Traffic is flowing while a worker's idle gaps are at most this many windows (2 ms at
/// the default window); a longer gap stops spinning.
const ACTIVE_GAPS: u32 = 20;

/// Spins in a row that end without an event before spinning rests.
const MISSES_TO_REST: u8 = 8;

/// How long spinning rests after [`MISSES_TO_REST`] misses in a row: events that keep
/// coming just too late for the window cost at most 8 windows of CPU per rest (4 % of a
/// core at the default window).
const REST: Duration = Duration::from_millis(20);

/// One worker's spinning state.
#[derive(Clone, Copy, Debug, Default)]
struct State {
    /// Spin at the next park.
    spin: bool,
    /// Spins in a row that ended without an event.
    misses: u8,
    /// When the worker last decided to park.
    parked_at: Option<Instant>,
    /// No spinning before this.
    resting_until: Option<Instant>,
}

impl State {
    /// After a spin: `hit` when an event ended it.
    fn spun(&mut self, hit: bool, now: Instant) {
        if hit {
            self.misses = 0;
            return;
        }
        self.misses += 1;
        if self.misses >= MISSES_TO_REST {
            self.spin = false;
            self.misses = 0;
            self.resting_until = Some(now + REST);
        }
    }

    /// Running again after an idle gap from `parked_at` to `now`.
    fn unparked(&mut self, now: Instant, window: Duration) {
        let Some(parked) = self.parked_at.take() else {
            return;
        };
        let active = now.saturating_duration_since(parked) <= window * ACTIVE_GAPS;
        let rested = self.resting_until.is_none_or(|t| now >= t);
        if active && rested {
            self.resting_until = None;
            self.spin = true;
        } else if !active {
            self.spin = false;
            self.misses = 0;
        }
    }
}

thread_local! {
    static STATE: Cell<State> = const {
        Cell::new(State { spin: false, misses: 0, parked_at: None, resting_until: None })
    };
}

/// The window from the environment ([`WINDOW_VAR`]), else [`DEFAULT_WINDOW`].
pub fn window_from_env() -> Duration {
    std::env::var(WINDOW_VAR)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_WINDOW, Duration::from_micros)
}

/// A multi-threaded runtime of `workers` workers (I/O and time enabled) whose workers
/// spin for up to `window` before they sleep, and whether they do: without a window, or
/// where the runtime's epoll instance cannot be told apart (another thread made one
/// meanwhile), a plain runtime. Build it before the process starts other threads.
pub fn runtime(
    workers: usize,
    window: Duration,
) -> std::io::Result<(tokio::runtime::Runtime, bool)> {
    let before = eventpolls();
    let epoll = Arc::new(std::sync::OnceLock::<RawFd>::new());
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(workers).enable_all();
    if !window.is_zero() {
        let at_park = epoll.clone();
        builder
            .on_thread_park(move || {
                if let Some(&fd) = at_park.get() {
                    before_park(fd, window);
                }
            })
            .on_thread_unpark(move || after_unpark(window));
    }
    let rt = builder.build()?;
    if window.is_zero() {
        return Ok((rt, false));
    }
    let spins = match runtime_epoll(&before) {
        Some(fd) => epoll.set(fd).is_ok(),
        None => {
            tracing::debug!("the runtime's epoll instance not found: no spinning");
            false
        }
    };
    Ok((rt, spins))
}

fn before_park(epoll: RawFd, window: Duration) {
    let mut st = STATE.get();
    let start = Instant::now();
    if st.spin {
        let hit = crate::sys::spin_until_readable(epoll, start, window);
        st.spun(hit, Instant::now());
    }
    st.parked_at = Some(start);
    STATE.set(st);
}

fn after_unpark(window: Duration) {
    let mut st = STATE.get();
    st.unparked(Instant::now(), window);
    STATE.set(st);
}

/// The one epoll instance that building the runtime added to the descriptors `before`
/// (tokio's driver; its registry holds a duplicate of it).
fn runtime_epoll(before: &[(RawFd, u64)]) -> Option<RawFd> {
    let new: Vec<(RawFd, u64)> = eventpolls()
        .into_iter()
        .filter(|(fd, _)| !before.iter().any(|(b, _)| b == fd))
        .collect();
    let (fd, ino) = *new.first()?;
    new.iter().all(|&(_, i)| i == ino).then_some(fd)
}

/// This process's epoll descriptors and the inode of each (duplicates share it).
fn eventpolls() -> Vec<(RawFd, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<RawFd>().ok()) else {
            continue;
        };
        let is_epoll =
            std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:[eventpoll]");
        if !is_epoll {
            continue;
        }
        if let Some(ino) = crate::sys::fd_inode(fd) {
            out.push((fd, ino));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd as _;

    #[test]
    fn a_spin_ends_at_an_event_or_at_the_window() {
        use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
        let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        ep.add(&b, EpollEvent::new(EpollFlags::EPOLLIN, 1)).unwrap();
        let window = Duration::from_millis(20);
        let start = Instant::now();
        assert!(!crate::sys::spin_until_readable(
            ep.0.as_raw_fd(),
            start,
            window
        ));
        assert!(start.elapsed() >= window);
        std::io::Write::write_all(&mut &a, b"x").unwrap();
        let start = Instant::now();
        let long = Duration::from_secs(10);
        assert!(crate::sys::spin_until_readable(
            ep.0.as_raw_fd(),
            start,
            long
        ));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn spinning_follows_the_traffic_and_rests_after_misses() {
        let w = Duration::from_micros(50);
        let t0 = Instant::now();
        let mut st = State::default();
        assert!(!st.spin, "a fresh worker does not spin");
        // A short idle gap: traffic, spin.
        st.parked_at = Some(t0);
        st.unparked(t0 + Duration::from_micros(200), w);
        assert!(st.spin);
        // Hits keep it on; misses in a row below the limit too.
        for _ in 0..MISSES_TO_REST - 1 {
            st.spun(false, t0);
        }
        st.spun(true, t0);
        for _ in 0..MISSES_TO_REST - 1 {
            st.spun(false, t0);
        }
        assert!(st.spin);
        // One more miss in a row: rest, even through short gaps, until the rest is over.
        st.spun(false, t0);
        assert!(!st.spin);
        st.parked_at = Some(t0);
        st.unparked(t0 + REST / 2, w);
        assert!(!st.spin, "resting");
        st.parked_at = Some(t0 + REST);
        st.unparked(t0 + REST + Duration::from_micros(100), w);
        assert!(st.spin, "rested, and traffic is flowing");
        // A long gap: the traffic stopped.
        st.parked_at = Some(t0 + REST);
        st.unparked(t0 + REST + w * ACTIVE_GAPS * 2, w);
        assert!(!st.spin);
    }
}
