//! Giving back the buffer pages of idle connections ([`Rings`]).
//!
//! A connection that moved data is listed; the driver looks at the list every [`PERIOD`].
//! One that moved nothing since the last look, with both buffers empty, has their pages
//! released and leaves the list; one that moved is looked at again next time. So an idle
//! connection holds its touched pages for one to two periods, a busy one keeps them (no
//! system call or page fault per request), and nothing is scanned while nothing moves.
//!
//! The receive buffer is released only when no out-of-order data can sit beyond its
//! queue (smoltcp keeps its reassembly state private): every byte up to the highest
//! sequence number received has been read by the owner.
//!
//! A connection whose owner let go releases both at once when it enters TIME-WAIT
//! ([`Trim::finished`], from the shard's watch): with many short connections those wait
//! out their 2 s in numbers (the side that closes first holds one per connection).

use std::time::Duration;

use crate::core::{Core, Key, Role};
use crate::ring::Rings;

/// How long the driver waits between looks at the connections that moved data.
pub(crate) const PERIOD: Duration = Duration::from_secs(2);

/// A connection's buffers and what the trim pass needs to know to release them.
#[derive(Debug, Default)]
pub(crate) struct Trim {
    /// `None` when the buffers are ordinary allocations (the mapping was refused).
    rings: Option<Rings>,
    /// The peer's initial sequence number, once its SYN was seen.
    irs: Option<u32>,
    /// Just past the highest sequence number of data received.
    rcv_hi: u32,
    /// Bytes the owner has read (modulo 2^32, as sequence numbers are).
    delivered: u32,
    /// Bumped whenever data is queued or arrives.
    moves: u32,
    /// `moves` at the last look.
    seen: u32,
    /// On the trim list.
    listed: bool,
    /// Released for good: the connection waits in TIME-WAIT with no owner.
    finished: bool,
}

impl Trim {
    pub(crate) fn new(rings: Option<Rings>) -> Self {
        Trim {
            rings,
            ..Trim::default()
        }
    }

    /// The peer's SYN, with sequence number `seq`.
    pub(crate) fn syn(&mut self, seq: u32) {
        if self.irs.is_none() {
            self.irs = Some(seq);
            self.rcv_hi = seq.wrapping_add(1);
        }
    }

    /// A segment whose data ends just before `end` arrived. Returns whether the
    /// connection must now be listed ([`Core::list_for_trim`]).
    #[must_use]
    pub(crate) fn received(&mut self, end: u32) -> bool {
        if self.irs.is_some() && (end.wrapping_sub(self.rcv_hi) as i32) > 0 {
            self.rcv_hi = end;
        }
        self.moved()
    }

    /// The owner read `n` bytes.
    pub(crate) fn read(&mut self, n: usize) {
        self.delivered = self.delivered.wrapping_add(n as u32);
    }

    /// Data was queued to send or arrived. Returns whether the connection must now be
    /// listed.
    #[must_use]
    pub(crate) fn moved(&mut self) -> bool {
        self.moves = self.moves.wrapping_add(1);
        if self.rings.is_none() || self.listed {
            return false;
        }
        self.listed = true;
        true
    }

    /// The connection waits in TIME-WAIT and its owner is gone: it will neither send nor
    /// read again, so both buffers go now (once) rather than with the connection, 2 s
    /// later (smoltcp's 10 s on the stack's clock). Returns whether pages were released.
    pub(crate) fn finished(&mut self) -> bool {
        if self.finished {
            return false;
        }
        self.finished = true;
        self.rings.as_ref().map(Rings::release_all).is_some()
    }

    /// Nothing received waits in the receive buffer, in order or not.
    fn rx_drained(&self, queued: usize) -> bool {
        queued == 0
            && self
                .irs
                .is_some_and(|irs| irs.wrapping_add(1).wrapping_add(self.delivered) == self.rcv_hi)
    }
}

impl Core {
    /// Put `key` on the trim list (it just moved data and was not on it).
    pub(crate) fn list_for_trim(&mut self, key: Key) {
        self.trim_list.push(key);
        if self.trim_at.is_none() {
            self.trim_at = Some(self.now() + crate::core::to_smol(PERIOD));
        }
    }

    /// The trim pass: release the buffers of listed connections idle since the last.
    pub(crate) fn trim_idle(&mut self) {
        let list = std::mem::take(&mut self.trim_list);
        let mut keep = Vec::new();
        for key in list {
            let Some(c) = self.tcp.get(&key) else {
                continue;
            };
            let (shard, handle) = (c.shard, c.handle);
            let (s, c) = self.socket_and_conn(shard, handle, &key);
            let (send_queue, recv_queue) = (s.send_queue(), s.recv_queue());
            let t = &mut c.trim;
            if t.moves != t.seen {
                t.seen = t.moves;
                keep.push(key);
                continue;
            }
            if c.role == Role::Orphan {
                // Closing: its buffers go when it enters TIME-WAIT (`Trim::finished`), or
                // with it.
                t.listed = false;
                continue;
            }
            if send_queue != 0 || recv_queue != 0 {
                // Unacknowledged or unread data: look again later.
                keep.push(key);
                continue;
            }
            t.listed = false;
            if let Some(rings) = &t.rings {
                rings.release_tx();
                if t.rx_drained(recv_queue) {
                    rings.release_rx();
                }
                self.buffers_released += 1;
            }
        }
        self.trim_list = keep;
        self.trim_at = if self.trim_list.is_empty() {
            None
        } else {
            Some(self.now() + crate::core::to_smol(PERIOD))
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped() -> Trim {
        Trim::new(Rings::map(4096, 4096).map(|(r, _, _)| r))
    }

    #[test]
    fn the_receive_buffer_is_drained_only_when_everything_received_was_read() {
        let mut t = mapped();
        assert!(!t.rx_drained(0), "before the SYN nothing is known");
        let irs = u32::MAX - 50; // the sequence numbers wrap below
        let at = |n: u32| irs.wrapping_add(1).wrapping_add(n);
        t.syn(irs);
        assert!(t.rx_drained(0));
        assert!(t.received(at(100)), "first data lists it");
        assert!(!t.rx_drained(0), "100 bytes not read yet");
        t.read(100);
        assert!(t.rx_drained(0));
        // A segment beyond a gap: out of order, held by smoltcp past an empty queue.
        assert!(!t.received(at(300)), "listed once");
        assert!(!t.rx_drained(0));
        // The gap fills and everything is read.
        assert!(!t.received(at(200)));
        t.read(200);
        assert!(t.rx_drained(0));
        // A retransmission of old data changes nothing.
        assert!(!t.received(at(100)));
        assert!(t.rx_drained(0));
        assert!(!t.rx_drained(1), "queued data");
    }

    #[test]
    fn without_a_mapping_nothing_is_listed() {
        let mut t = Trim::new(None);
        t.syn(7);
        assert!(!t.received(100));
        assert!(!t.moved());
    }
}
