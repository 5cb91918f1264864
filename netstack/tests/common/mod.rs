//! Two stacks joined by an in-memory Ethernet link with seeded loss, reordering and delay.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use netstack::{FrameLink, Stack, StackConfig};

/// Impairments of one direction of the link.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinkParams {
    /// Probability a frame is dropped.
    pub(crate) loss: f64,
    /// Probability a frame is held back and delivered after the next one.
    pub(crate) reorder: f64,
    /// One-way delay.
    pub(crate) delay: Duration,
    pub(crate) seed: u64,
}

impl LinkParams {
    pub(crate) fn clean() -> Self {
        LinkParams {
            loss: 0.0,
            reorder: 0.0,
            delay: Duration::ZERO,
            seed: 1,
        }
    }
    pub(crate) fn lossy(loss: f64, reorder: f64, seed: u64) -> Self {
        LinkParams {
            loss,
            reorder,
            delay: Duration::ZERO,
            seed,
        }
    }
}

pub(crate) const A4: Ipv4Addr = Ipv4Addr::new(10, 7, 0, 1);
pub(crate) const B4: Ipv4Addr = Ipv4Addr::new(10, 7, 0, 2);
pub(crate) fn a6() -> Ipv6Addr {
    "fd7a::1".parse().unwrap()
}
pub(crate) fn b6() -> Ipv6Addr {
    "fd7a::2".parse().unwrap()
}

pub(crate) fn config(n: u8) -> StackConfig {
    let mut c = StackConfig::new([0x02, 0, 0, 0, 0, n]);
    c.ipv4.push((Ipv4Addr::new(10, 7, 0, n), 24));
    c.ipv6.push((format!("fd7a::{n}").parse().unwrap(), 64));
    c
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The last TCP segments that crossed one direction of a link, for a test that stalls to
/// print (`TAP_LEN` of them, oldest first). Headers are copied, formatted only on dump.
#[derive(Debug, Default)]
pub(crate) struct Tap(std::sync::Mutex<VecDeque<(u128, [u8; 20], usize)>>);

const TAP_LEN: usize = 48;

impl Tap {
    fn record(&self, frames: &[Vec<u8>], start: std::time::Instant) {
        let at = start.elapsed().as_micros();
        let mut q = self.0.lock().unwrap();
        for f in frames {
            let Some((header, len)) = tcp_header(f) else {
                continue;
            };
            if q.len() == TAP_LEN {
                q.pop_front();
            }
            q.push_back((at, header, len));
        }
    }

    pub(crate) fn dump(&self) -> String {
        let q = self.0.lock().unwrap();
        q.iter()
            .map(|(at, t, len)| {
                let be32 = |i: usize| u32::from_be_bytes([t[i], t[i + 1], t[i + 2], t[i + 3]]);
                let flags: String = [
                    (0x02, 'S'),
                    (0x01, 'F'),
                    (0x04, 'R'),
                    (0x08, 'P'),
                    (0x10, '.'),
                ]
                .iter()
                .filter(|(b, _)| t[13] & b != 0)
                .map(|&(_, c)| c)
                .collect();
                format!(
                    "    {at:>10} us {}>{} [{flags}] seq {} ack {} win {} len {len}\n",
                    u16::from_be_bytes([t[0], t[1]]),
                    u16::from_be_bytes([t[2], t[3]]),
                    be32(4),
                    be32(8),
                    u16::from_be_bytes([t[14], t[15]]),
                )
            })
            .collect()
    }
}

/// The fixed TCP header and payload length of an IPv4 TCP segment in an Ethernet frame.
fn tcp_header(f: &[u8]) -> Option<([u8; 20], usize)> {
    if f.len() < 14 + 20 || f[12..14] != [0x08, 0x00] || f[14 + 9] != 6 {
        return None;
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let t = f.get(14 + ihl..14 + total)?;
    let header: [u8; 20] = t.get(..20)?.try_into().ok()?;
    let off = usize::from(t[12] >> 4) * 4;
    Some((header, t.len().saturating_sub(off)))
}

/// Both directions' taps of a pair.
#[derive(Debug, Default, Clone)]
pub(crate) struct Taps {
    pub(crate) ab: Arc<Tap>,
    pub(crate) ba: Arc<Tap>,
}

impl Taps {
    pub(crate) fn dump(&self) -> String {
        format!(
            "  last segments A->B:\n{}  last segments B->A:\n{}",
            self.ab.dump(),
            self.ba.dump()
        )
    }
}

/// Carry frames from `from` to `to` until `from` closes.
async fn carry(from: Arc<FrameLink>, to: Arc<FrameLink>, p: LinkParams) {
    carry_tapped(from, to, p, None).await
}

async fn carry_tapped(
    from: Arc<FrameLink>,
    to: Arc<FrameLink>,
    p: LinkParams,
    tap: Option<Arc<Tap>>,
) {
    let start = std::time::Instant::now();
    let mut rng = Rng(p.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut batch = Vec::with_capacity(256);
    let mut held: Option<Vec<u8>> = None;
    let mut delayed: VecDeque<(tokio::time::Instant, Vec<u8>)> = VecDeque::new();
    loop {
        let mut n = from.try_recv_many(&mut batch, 256);
        if n == 0 {
            // Idle: release what is held back before waiting.
            if let Some(h) = held.take() {
                deliver(&to, &mut delayed, p.delay, h).await;
                continue;
            }
            if let Some((t, _)) = delayed.front() {
                let t = *t;
                tokio::select! {
                    k = from.recv_many(&mut batch, 256) => n = k,
                    _ = tokio::time::sleep_until(t) => {}
                }
            } else {
                n = from.recv_many(&mut batch, 256).await;
                if n == 0 {
                    return;
                }
            }
        }
        if let Some(tap) = &tap {
            tap.record(&batch, start);
        }
        let now = tokio::time::Instant::now();
        while delayed.front().is_some_and(|(t, _)| *t <= now) {
            let (_, f) = delayed.pop_front().unwrap();
            to.send(f).await;
        }
        for f in batch.drain(..) {
            if rng.next() < p.loss {
                continue;
            }
            if held.is_none() && rng.next() < p.reorder {
                held = Some(f);
                continue;
            }
            deliver(&to, &mut delayed, p.delay, f).await;
            if let Some(h) = held.take() {
                deliver(&to, &mut delayed, p.delay, h).await;
            }
        }
    }
}

async fn deliver(
    to: &FrameLink,
    delayed: &mut VecDeque<(tokio::time::Instant, Vec<u8>)>,
    delay: Duration,
    f: Vec<u8>,
) {
    if delay.is_zero() {
        to.send(f).await;
    } else {
        delayed.push_back((tokio::time::Instant::now() + delay, f));
    }
}

/// Stack A (10.7.0.1, fd7a::1) and stack B (10.7.0.2, fd7a::2) on one link.
pub(crate) fn pair(ab: LinkParams, ba: LinkParams) -> (Stack, Stack) {
    pair_with(config(1), config(2), ab, ba)
}

pub(crate) fn pair_with(
    ca: StackConfig,
    cb: StackConfig,
    ab: LinkParams,
    ba: LinkParams,
) -> (Stack, Stack) {
    let (a, la) = Stack::new(ca);
    let (b, lb) = Stack::new(cb);
    let (la, lb) = (Arc::new(la), Arc::new(lb));
    tokio::spawn(carry(la.clone(), lb.clone(), ab));
    tokio::spawn(carry(lb, la, ba));
    (a, b)
}

/// Carry frames from `from` into `to` through [`FrameLink::receive`] (the receive path
/// runs in this task, as the overlay driver runs it), until `from` closes.
async fn carry_inline(from: Arc<FrameLink>, to: Arc<FrameLink>, tap: Arc<Tap>) {
    let start = std::time::Instant::now();
    let mut batch = Vec::with_capacity(64);
    while from.recv_many(&mut batch, 64).await > 0 {
        tap.record(&batch, start);
        to.receive(&mut batch);
        assert!(batch.is_empty(), "receive must take every frame");
    }
}

/// [`pair`] on a clean link whose frames are received inline; the taps record the last
/// segments each way.
pub(crate) fn pair_inline() -> (Stack, Stack, Taps) {
    let (a, la) = Stack::new(config(1));
    let (b, lb) = Stack::new(config(2));
    let (la, lb) = (Arc::new(la), Arc::new(lb));
    let taps = Taps::default();
    tokio::spawn(carry_inline(la.clone(), lb.clone(), taps.ab.clone()));
    tokio::spawn(carry_inline(lb, la, taps.ba.clone()));
    (a, b, taps)
}

/// [`pair`] with taps recording the last segments each way.
pub(crate) fn pair_tapped(ab: LinkParams, ba: LinkParams) -> (Stack, Stack, Taps) {
    let (a, la) = Stack::new(config(1));
    let (b, lb) = Stack::new(config(2));
    let (la, lb) = (Arc::new(la), Arc::new(lb));
    let taps = Taps::default();
    tokio::spawn(carry_tapped(
        la.clone(),
        lb.clone(),
        ab,
        Some(taps.ab.clone()),
    ));
    tokio::spawn(carry_tapped(lb, la, ba, Some(taps.ba.clone())));
    (a, b, taps)
}
