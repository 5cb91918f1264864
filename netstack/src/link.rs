//! Frame queues between the stack and whoever carries its Ethernet frames (the launcher
//! joins them to the overlay; tests join two stacks directly).
//!
//! Both directions are bounded, so a slow side pushes back instead of growing memory:
//! when the queue towards the link is full, smoltcp is told the device is busy and keeps its
//! segments; when the queue into the stack is full, [`FrameLink::send`] waits. Frames are
//! plain `Vec<u8>` buffers; [`FrameLink::recycle`] hands spent buffers back so the stack
//! reuses them instead of allocating per packet. Every push wakes the other side directly
//! (a waker or the driver's `Notify`), never a timer.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

use crate::core::Shared;

/// Spent buffers kept for reuse, per queue (and in the stack's own pool). A pool only
/// saves the allocator a little work per frame, so it is kept small: every buffer in it
/// is resident memory (9 KiB a frame at the default MTU, so 40 hold 360 KiB), and a
/// receiver's pools used to fill up with the received frames of a bulk flow (4,096 +
/// 1,024 buffers, 14 MiB) and never give them back.
pub(crate) const POOL_MAX: usize = 40;

#[derive(Debug, Default)]
struct QueueState {
    frames: VecDeque<Vec<u8>>,
    /// The consumer waiting for a frame (the launcher for outbound frames).
    consumer: Option<Waker>,
    /// Producers waiting for room.
    producers: Vec<Waker>,
    /// Spent buffers, ready for reuse.
    pool: Vec<Vec<u8>>,
    closed: bool,
}

/// A bounded multi-producer frame queue with buffer reuse.
#[derive(Debug)]
pub(crate) struct FrameQueue {
    state: Mutex<QueueState>,
    cap: usize,
    /// Notified when a frame is pushed (inbound queue: wakes the stack's driver) or when
    /// room appears (outbound queue: wakes the driver to resume blocked shards).
    driver: Arc<Notify>,
}

impl FrameQueue {
    pub(crate) fn new(cap: usize, driver: Arc<Notify>) -> Self {
        FrameQueue {
            state: Mutex::new(QueueState::default()),
            cap: cap.max(16),
            driver,
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Room for at least one more frame.
    pub(crate) fn has_room(&self) -> bool {
        self.lock().frames.len() < self.cap
    }

    /// How many more frames fit.
    pub(crate) fn room(&self) -> usize {
        self.cap.saturating_sub(self.lock().frames.len())
    }

    /// Frames waiting, the bound, and whether a consumer / producers wait (diagnostics).
    pub(crate) fn describe(&self) -> String {
        let s = self.lock();
        format!(
            "{}/{} frames, consumer waiting: {}, producers waiting: {}, closed: {}",
            s.frames.len(),
            self.cap,
            s.consumer.is_some(),
            s.producers.len(),
            s.closed
        )
    }

    /// Frames are waiting.
    pub(crate) fn has_pending(&self) -> bool {
        !self.lock().frames.is_empty()
    }

    /// Push many frames (bound not checked: callers check [`Self::has_room`] first);
    /// wakes the consumer once.
    pub(crate) fn push_all(&self, frames: &mut Vec<Vec<u8>>) {
        if frames.is_empty() {
            return;
        }
        let waker = {
            let mut s = self.lock();
            if s.closed {
                frames.clear();
                return;
            }
            s.frames.extend(frames.drain(..));
            s.consumer.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Take up to `max` frames into `out`; registers `cx` when empty. `Ready(0)` means
    /// closed and drained. Wakes waiting producers / the driver when room appears.
    pub(crate) fn poll_pop_many(
        &self,
        cx: Option<&mut Context<'_>>,
        out: &mut Vec<Vec<u8>>,
        max: usize,
    ) -> Poll<usize> {
        let (n, producers, was_full) = {
            let mut s = self.lock();
            if s.frames.is_empty() {
                if s.closed {
                    return Poll::Ready(0);
                }
                if let Some(cx) = cx {
                    s.consumer = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            let was_full = s.frames.len() >= self.cap / 2;
            let n = s.frames.len().min(max);
            out.extend(s.frames.drain(..n));
            (n, std::mem::take(&mut s.producers), was_full)
        };
        for w in producers {
            w.wake();
        }
        if was_full {
            self.driver.notify_one();
        }
        Poll::Ready(n)
    }

    /// Push one frame if there is room; else register `cx` (if any) and give it back.
    pub(crate) fn poll_push(
        &self,
        cx: Option<&mut Context<'_>>,
        frame: Vec<u8>,
    ) -> Result<(), Vec<u8>> {
        {
            let mut s = self.lock();
            if s.closed {
                return Ok(());
            }
            if s.frames.len() >= self.cap {
                if let Some(cx) = cx {
                    s.producers.push(cx.waker().clone());
                }
                return Err(frame);
            }
            s.frames.push_back(frame);
        }
        self.driver.notify_one();
        Ok(())
    }

    /// Register a producer waiting for room.
    pub(crate) fn wait_room(&self, cx: &mut Context<'_>) {
        let mut s = self.lock();
        if s.frames.len() >= self.cap {
            s.producers.push(cx.waker().clone());
        } else {
            drop(s);
            cx.waker().wake_by_ref();
        }
    }

    /// Return spent buffers for reuse.
    pub(crate) fn recycle(&self, bufs: impl IntoIterator<Item = Vec<u8>>) {
        let mut s = self.lock();
        for b in bufs {
            if s.pool.len() >= POOL_MAX {
                break;
            }
            s.pool.push(b);
        }
    }

    /// Take up to `n` spent buffers.
    pub(crate) fn take_spent(&self, into: &mut Vec<Vec<u8>>, n: usize) {
        let mut s = self.lock();
        let k = s.pool.len().min(n);
        let at = s.pool.len() - k;
        into.extend(s.pool.drain(at..));
    }

    /// Close: consumers drain what is left, then see end of stream; producers fail.
    pub(crate) fn close(&self) {
        let (c, p) = {
            let mut s = self.lock();
            s.closed = true;
            (s.consumer.take(), std::mem::take(&mut s.producers))
        };
        c.into_iter().chain(p).for_each(Waker::wake);
        self.driver.notify_one();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

/// The launcher's end of a stack: Ethernet frames the stack sends, and a way to hand it
/// frames received from the network.
///
/// Dropping the `FrameLink` disconnects the stack from the network (sockets stay usable
/// but nothing arrives); dropping the last [`crate::Stack`] handle and socket stops the
/// driver, after which [`FrameLink::recv_many`] returns 0.
#[derive(Debug)]
pub struct FrameLink {
    pub(crate) outbound: Arc<FrameQueue>,
    pub(crate) inbound: Arc<FrameQueue>,
    pub(crate) shared: Weak<Shared>,
}

impl FrameLink {
    /// Wait for frames the stack wants sent, and move up to `max` of them into `out`
    /// (appended; each a complete Ethernet frame without FCS). Returns how many were moved;
    /// 0 only when the stack has shut down. Give the buffers back with
    /// [`FrameLink::recycle`] once sent.
    pub async fn recv_many(&self, out: &mut Vec<Vec<u8>>, max: usize) -> usize {
        poll_fn(|cx| self.poll_recv_many(cx, out, max)).await
    }

    /// Poll form of [`FrameLink::recv_many`].
    pub fn poll_recv_many(
        &self,
        cx: &mut Context<'_>,
        out: &mut Vec<Vec<u8>>,
        max: usize,
    ) -> Poll<usize> {
        self.outbound.poll_pop_many(Some(cx), out, max.max(1))
    }

    /// Take frames waiting to be sent without waiting (0 when none).
    pub fn try_recv_many(&self, out: &mut Vec<Vec<u8>>, max: usize) -> usize {
        match self.outbound.poll_pop_many(None, out, max.max(1)) {
            Poll::Ready(n) => n,
            Poll::Pending => 0,
        }
    }

    /// Hand buffers (e.g. sent frames) back to the stack for reuse.
    pub fn recycle(&self, bufs: impl IntoIterator<Item = Vec<u8>>) {
        self.outbound.recycle(bufs);
    }

    /// A buffer to receive a frame into (reused when available); fill it and pass it to
    /// [`FrameLink::send`].
    pub fn buffer(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(1);
        self.outbound.take_spent(&mut v, 1);
        let mut b = v.pop().unwrap_or_default();
        b.clear();
        b
    }

    /// Give the stack one Ethernet frame from the network, waiting while its inbound
    /// queue is full (backpressure). Frames are silently dropped once the stack shut down.
    pub async fn send(&self, frame: Vec<u8>) {
        let mut frame = Some(frame);
        poll_fn(|cx| match frame.take() {
            Some(f) => match self.inbound.poll_push(Some(cx), f) {
                Ok(()) => Poll::Ready(()),
                Err(f) => {
                    frame = Some(f);
                    Poll::Pending
                }
            },
            None => Poll::Ready(()),
        })
        .await
    }

    /// Process frames from the network now, in the caller's task: they are demultiplexed,
    /// the connections they belong to run, and whatever they answer (ACKs, data) is queued
    /// for [`FrameLink::recv_many`] before this returns. `frames` is drained. This saves
    /// the hand-off to the stack's driver task that [`FrameLink::send`] costs; frames are
    /// dropped once the stack has shut down.
    pub fn receive(&self, frames: &mut Vec<Vec<u8>>) {
        let Some(shared) = self.shared.upgrade() else {
            frames.clear();
            return;
        };
        let mut core = shared.lock();
        core.receive_batch(frames);
        shared.after_inline(&mut core);
    }

    /// Give the stack one frame without waiting; returns it when the inbound queue is full
    /// (the caller may drop it, as a NIC drops on a full ring, or retry).
    pub fn try_send(&self, frame: Vec<u8>) -> Result<(), Vec<u8>> {
        self.inbound.poll_push(None, frame)
    }

    /// True once the stack has shut down.
    pub fn is_closed(&self) -> bool {
        self.outbound.is_closed()
    }
}

impl Drop for FrameLink {
    fn drop(&mut self) {
        self.inbound.close();
    }
}
