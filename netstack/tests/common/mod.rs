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

/// Carry frames from `from` to `to` until `from` closes.
async fn carry(from: Arc<FrameLink>, to: Arc<FrameLink>, p: LinkParams) {
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
async fn carry_inline(from: Arc<FrameLink>, to: Arc<FrameLink>) {
    let mut batch = Vec::with_capacity(64);
    while from.recv_many(&mut batch, 64).await > 0 {
        to.receive(&mut batch);
        assert!(batch.is_empty(), "receive must take every frame");
    }
}

/// [`pair`] on a clean link whose frames are received inline.
pub(crate) fn pair_inline() -> (Stack, Stack) {
    let (a, la) = Stack::new(config(1));
    let (b, lb) = Stack::new(config(2));
    let (la, lb) = (Arc::new(la), Arc::new(lb));
    tokio::spawn(carry_inline(la.clone(), lb.clone()));
    tokio::spawn(carry_inline(lb, la));
    (a, b)
}
