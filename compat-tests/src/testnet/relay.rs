//! A user-space netem for kernels without `sch_netem`: a thread of the test process that
//! carries one host's link frame by frame, with loss, delay, jitter and reordering.
//!
//! Normally a host's veth pair ends on a bridge port (`lNhM`) in the switch namespace. To
//! impair it in user space, the harness takes that port off the bridge and adds a second
//! veth pair in the switch, `rNhM` ↔ `bNhM`, whose `bNhM` end joins the bridge instead:
//!
//! ```text
//!   host iface ══ lNhM  [relay thread]  rNhM ══ bNhM ── bridge brN
//! ```
//!
//! The relay holds a raw packet socket on `lNhM` and one on `rNhM`, and copies every frame
//! that arrives on one out of the other, after a delay drawn for its direction. Each
//! direction follows netem's rules (tc-netem(8)): a frame is lost with probability
//! `loss_pct`; otherwise it waits `delay_ms` plus a uniform draw in `±jitter_ms`, except
//! that with probability `reorder_pct` it goes at once, ahead of the delayed ones. Frames
//! leave in order of their release time, so jitter reorders as it does in netem. Like
//! netem's default `limit 1000`, at most 1000 frames wait; more are dropped.
//!
//! The packet sockets use virtio-net headers (see [`sys::packet_socket`]), so large
//! segmentation-offloaded TCP segments and partially checksummed frames pass intact.
//! Removing the impairment stops the thread and puts `lNhM` back on the bridge.
//!
//! The randomness is a xorshift generator seeded from std's per-process random hash keys:
//! enough to spread losses, and not meant for anything else.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::hash_map::RandomState;
use std::collections::BinaryHeap;
use std::hash::BuildHasher;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, MsgFlags};

use super::error::{Result, TestNetError};
use super::impair::Netem;
use super::sys;

/// Frames waiting at most, as netem's default `limit`.
const LIMIT: usize = 1000;
/// Longest sleep between checks of the stop flag.
const TICK: Duration = Duration::from_millis(20);
/// A virtio-net header, then the largest frame a segmentation-offloaded skb can make.
const BUFFER: usize = 16 + 65_536 + 64;

/// A running relay; dropping it stops the thread (within one tick) and waits for it.
pub(crate) struct Relay {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// Start relaying between `host_port` (the host's peer, off the bridge) and
    /// `bridge_side` (the veth end whose peer is on the bridge), both in the namespace
    /// `switch_ns`. `from_host` impairs frames from the host, `to_host` frames toward it;
    /// `None` passes them at once.
    pub(crate) fn start(
        switch_ns: &str,
        host_port: &str,
        bridge_side: &str,
        from_host: Option<Netem>,
        to_host: Option<Netem>,
    ) -> Result<Relay> {
        let (host_port, bridge_side) = (host_port.to_owned(), bridge_side.to_owned());
        let sockets = super::in_netns(switch_ns, move || -> io::Result<[OwnedFd; 2]> {
            let open = |name: &str| -> io::Result<OwnedFd> {
                let index = nix::net::if_::if_nametoindex(name)?;
                sys::packet_socket(index)
            };
            Ok([open(&host_port)?, open(&bridge_side)?])
        })?
        .map_err(|e| {
            TestNetError::io(
                format!("opening the relay's packet sockets in {switch_ns}"),
                e,
            )
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let lines = [from_host.map(Line::new), to_host.map(Line::new)];
        let thread = thread::Builder::new()
            .name(format!("netem relay {switch_ns}"))
            .spawn(move || relay(&sockets, lines, &stopping))
            .map_err(|e| TestNetError::io("starting the relay thread", e))?;
        Ok(Relay {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One direction's impairment and its random stream.
struct Line {
    netem: Netem,
    rng: u64,
}

impl Line {
    fn new(netem: Netem) -> Self {
        // Never zero: xorshift would stay at zero.
        let seed = RandomState::new().hash_one(0x5eed_u64) | 1;
        Line { netem, rng: seed }
    }

    /// A uniform draw in [0, 1) (xorshift64*).
    fn uniform(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `None` to lose the frame, else how long it waits.
    fn fate(&mut self) -> Option<Duration> {
        let n = self.netem;
        if n.loss_pct > 0.0 && self.uniform() * 100.0 < n.loss_pct {
            return None;
        }
        if n.reorder_pct > 0.0 && self.uniform() * 100.0 < n.reorder_pct {
            return Some(Duration::ZERO);
        }
        let jitter = f64::from(n.jitter_ms) * (2.0 * self.uniform() - 1.0);
        let ms = (f64::from(n.delay_ms) + jitter).max(0.0);
        Some(Duration::from_secs_f64(ms / 1000.0))
    }
}

/// A frame waiting for its release time; `seq` keeps frames with equal times in order.
struct Waiting {
    at: Instant,
    seq: u64,
    out: usize,
    frame: Vec<u8>,
}

impl PartialEq for Waiting {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Waiting {}

impl PartialOrd for Waiting {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Waiting {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Whether an error means the interface or its namespace is gone, so the relay should end.
fn gone(e: Errno) -> bool {
    matches!(
        e,
        Errno::ENODEV | Errno::ENXIO | Errno::ENETDOWN | Errno::EBADF
    )
}

/// The relay loop: socket 0 is the host's side, socket 1 the bridge's; a frame read from
/// socket `i` is impaired by `lines[i]` and written to socket `1 - i`.
fn relay(sockets: &[OwnedFd; 2], mut lines: [Option<Line>; 2], stop: &AtomicBool) {
    let mut waiting: BinaryHeap<Reverse<Waiting>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut buf = vec![0u8; BUFFER];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while waiting.peek().is_some_and(|Reverse(w)| w.at <= now) {
            let Some(Reverse(w)) = waiting.pop() else {
                break;
            };
            match send(sockets[w.out].as_raw_fd(), &w.frame, MsgFlags::MSG_DONTWAIT) {
                Err(e) if gone(e) => return,
                // A full queue or a refused frame is a lost frame, as on a real link.
                _ => {}
            }
        }
        let wait = waiting
            .peek()
            .map(|Reverse(w)| w.at.saturating_duration_since(now))
            .unwrap_or(TICK)
            .min(TICK);
        // Round up, so a frame due in 0.3 ms does not make the loop spin.
        let ms = wait.as_micros().div_ceil(1000);
        let timeout = PollTimeout::try_from(ms as u64).unwrap_or(PollTimeout::MAX);
        let mut fds = [
            PollFd::new(sockets[0].as_fd(), PollFlags::POLLIN),
            PollFd::new(sockets[1].as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return,
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        let now = Instant::now();
        for (from, is_ready) in ready.into_iter().enumerate() {
            if !is_ready {
                continue;
            }
            loop {
                let n = match recv(sockets[from].as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                    Ok(n) => n,
                    Err(Errno::EAGAIN | Errno::EINTR) => break,
                    Err(e) if gone(e) => return,
                    Err(_) => break,
                };
                let delay = match lines[from].as_mut() {
                    Some(line) => match line.fate() {
                        Some(delay) => delay,
                        None => continue,
                    },
                    None => Duration::ZERO,
                };
                if waiting.len() >= LIMIT {
                    continue;
                }
                seq += 1;
                waiting.push(Reverse(Waiting {
                    at: now + delay,
                    seq,
                    out: 1 - from,
                    frame: buf[..n].to_vec(),
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fates_follow_the_numbers() {
        let mut lossy = Line::new(Netem::loss(30.0));
        let lost = (0..10_000).filter(|_| lossy.fate().is_none()).count();
        assert!(
            (2_500..3_500).contains(&lost),
            "lost {lost} of 10000 at 30%"
        );

        let mut jittery = Line::new(Netem {
            delay_ms: 20,
            jitter_ms: 5,
            ..Netem::default()
        });
        for _ in 0..1000 {
            let d = jittery.fate().unwrap();
            assert!(
                d >= Duration::from_millis(15) && d <= Duration::from_millis(25),
                "{d:?}"
            );
        }

        let mut reordering = Line::new(Netem {
            delay_ms: 20,
            reorder_pct: 50.0,
            ..Netem::default()
        });
        let at_once = (0..10_000)
            .filter(|_| reordering.fate() == Some(Duration::ZERO))
            .count();
        assert!(
            (4_500..5_500).contains(&at_once),
            "{at_once} of 10000 at 50%"
        );
    }

    #[test]
    fn waiting_frames_leave_by_time_then_arrival() {
        let t = Instant::now();
        let mut heap = BinaryHeap::new();
        for (ms, seq) in [(5, 1), (1, 2), (5, 3), (0, 4)] {
            heap.push(Reverse(Waiting {
                at: t + Duration::from_millis(ms),
                seq,
                out: 0,
                frame: Vec::new(),
            }));
        }
        let order: Vec<u64> = std::iter::from_fn(|| heap.pop().map(|Reverse(w)| w.seq)).collect();
        assert_eq!(order, [4, 2, 1, 3]);
    }
}
