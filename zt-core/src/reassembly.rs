//! Reassembly of fragmented VL1 packets (`docs/PROTOCOL.md`, section 6).
//!
//! Each packet being reassembled keeps its chunks in one buffer, in arrival order, with the
//! position and length of every index. Chunks are copied once, as slices, into a buffer
//! sized for the whole packet when the first fragment arrives. When the fragments arrived
//! in order (the usual case on one path) that buffer already is the packet and is handed
//! out as it is; otherwise the chunks are joined into one new buffer of the exact size.
//! Nothing is allocated per fragment.
//!
//! Fragments are not authenticated, so everything here is bounded: at most
//! `max_packets` packets at once (fragments of further packets are dropped until some
//! complete or expire), at most [`MAX_PACKET_LEN`] bytes per packet, and every packet is
//! forgotten at its deadline.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::identity::Address;
use crate::wire::fragment::{FragmentRepr, MAX_FRAGMENTS};

/// Largest reassembled packet. The largest packet this protocol sends (a full-size VL2
/// frame, or a network configuration) is a few KiB; a UDP datagram is at most 64 KiB.
pub(crate) const MAX_PACKET_LEN: usize = 65_535;
/// The buffer reserved for a packet when its first fragment arrives is at most this large
/// (it grows if the packet turns out bigger), so a fragment claiming a large count does not
/// make the receiver reserve much.
const MAX_RESERVE: usize = 16 * 1024;

/// Where one chunk sits in [`Partial::data`].
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u32,
    len: u32,
}

#[derive(Debug)]
struct Partial {
    count: u8,
    /// Bit `i` set: fragment `i` has arrived.
    received: u16,
    /// Fragments so far arrived as 0, 1, 2, ... (so `data` is the packet's prefix).
    in_order: bool,
    spans: [Span; MAX_FRAGMENTS as usize],
    data: Vec<u8>,
    expires: Instant,
}

impl Partial {
    fn complete(&self) -> bool {
        u32::from(self.received).count_ones() == u32::from(self.count)
    }

    /// The whole packet: `data` itself when the chunks arrived in order, else the chunks
    /// joined in index order.
    fn into_packet(self) -> Vec<u8> {
        if self.in_order {
            return self.data;
        }
        let mut whole = Vec::with_capacity(self.data.len());
        for span in &self.spans[..usize::from(self.count)] {
            let start = span.start as usize;
            whole.extend_from_slice(&self.data[start..start + span.len as usize]);
        }
        whole
    }
}

/// Packets being reassembled, keyed by source address and packet id.
#[derive(Debug)]
pub(crate) struct Reassembler {
    partials: BTreeMap<(Address, u32), Partial>,
    max_packets: usize,
}

impl Reassembler {
    /// At most `max_packets` packets are reassembled at once.
    pub(crate) fn new(max_packets: usize) -> Self {
        Reassembler {
            partials: BTreeMap::new(),
            max_packets,
        }
    }

    /// Adds a fragment from `src`; returns the whole packet when this fragment completed
    /// it. A packet started now is dropped at `expires` if incomplete. Fragments that
    /// disagree with the first one of their packet about the count, repeated indices, and
    /// packets over [`MAX_PACKET_LEN`] are dropped.
    pub(crate) fn insert(
        &mut self,
        src: Address,
        f: &FragmentRepr<'_>,
        expires: Instant,
    ) -> Option<Vec<u8>> {
        let key = (src, f.packet_id);
        let index = usize::from(f.index);
        if f.count > MAX_FRAGMENTS || index >= usize::from(f.count) || f.chunk.is_empty() {
            return None; // FragmentPacket::new_checked already refuses these
        }
        if !self.partials.contains_key(&key) && self.partials.len() >= self.max_packets {
            return None;
        }
        let partial = self.partials.entry(key).or_insert_with(|| Partial {
            count: f.count,
            received: 0,
            in_order: true,
            spans: [Span::default(); MAX_FRAGMENTS as usize],
            data: Vec::with_capacity((usize::from(f.count) * f.chunk.len()).min(MAX_RESERVE)),
            expires,
        });
        if partial.count != f.count || partial.received & (1 << index) != 0 {
            return None;
        }
        if partial.data.len() + f.chunk.len() > MAX_PACKET_LEN {
            self.partials.remove(&key);
            return None;
        }
        let arrived = u32::from(partial.received).count_ones() as usize;
        partial.in_order &= index == arrived;
        partial.spans[index] = Span {
            start: partial.data.len() as u32,
            len: f.chunk.len() as u32,
        };
        partial.data.extend_from_slice(f.chunk);
        partial.received |= 1 << index;
        if !partial.complete() {
            return None;
        }
        self.partials.remove(&key).map(Partial::into_packet)
    }

    /// Forgets the packets whose deadline has come.
    pub(crate) fn expire(&mut self, now: Instant) {
        self.partials.retain(|_, p| p.expires > now);
    }

    /// The earliest deadline of an incomplete packet.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.partials.values().map(|p| p.expires).min()
    }

    /// Packets being reassembled.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.partials.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn addr(n: u8) -> Address {
        Address::from_bytes([1, 2, 3, 4, n]).unwrap()
    }

    fn frag(packet_id: u32, index: u8, count: u8, chunk: &[u8]) -> FragmentRepr<'_> {
        FragmentRepr {
            packet_id,
            index,
            count,
            chunk,
        }
    }

    /// `packet` cut into `count` chunks the way the sender cuts it.
    fn cut(packet: &[u8], count: usize) -> Vec<&[u8]> {
        packet.chunks(packet.len().div_ceil(count)).collect()
    }

    #[test]
    fn in_order_and_out_of_order_fragments_give_the_packet_back() {
        let t = Instant::now() + Duration::from_secs(5);
        let packet: Vec<u8> = (0..2900u32).map(|i| (i % 251) as u8).collect();
        for count in [2usize, 3, 16] {
            let chunks = cut(&packet, count);
            assert_eq!(chunks.len(), count);
            let orders: Vec<Vec<usize>> = vec![
                (0..count).collect(),
                (0..count).rev().collect(),
                (0..count).map(|i| (i * 7 + 3) % count).collect(),
            ];
            for (n, order) in orders.into_iter().enumerate() {
                let mut r = Reassembler::new(4);
                let id = n as u32;
                let mut whole = None;
                for (k, &i) in order.iter().enumerate() {
                    let got = r.insert(addr(1), &frag(id, i as u8, count as u8, chunks[i]), t);
                    if k + 1 < count {
                        assert!(got.is_none(), "complete after {} of {count}", k + 1);
                    } else {
                        whole = got;
                    }
                }
                assert_eq!(
                    whole.as_deref(),
                    Some(&packet[..]),
                    "count {count} order {n}"
                );
                assert_eq!(r.len(), 0);
            }
        }
    }

    #[test]
    fn duplicates_mismatched_counts_and_sources_are_kept_apart() {
        let t = Instant::now() + Duration::from_secs(5);
        let mut r = Reassembler::new(4);
        assert!(r.insert(addr(1), &frag(7, 0, 2, b"ab"), t).is_none());
        // The same index again, or a different count, changes nothing.
        assert!(r.insert(addr(1), &frag(7, 0, 2, b"XX"), t).is_none());
        assert!(r.insert(addr(1), &frag(7, 1, 3, b"YY"), t).is_none());
        // The same packet id from another source is another packet.
        assert!(r.insert(addr(2), &frag(7, 1, 2, b"zz"), t).is_none());
        assert_eq!(r.len(), 2);
        assert_eq!(
            r.insert(addr(1), &frag(7, 1, 2, b"cd"), t).as_deref(),
            Some(&b"abcd"[..])
        );
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn bounded_in_packets_size_and_time() {
        let now = Instant::now();
        let t = now + Duration::from_secs(5);
        let mut r = Reassembler::new(2);
        assert!(r.insert(addr(1), &frag(1, 0, 2, b"a"), t).is_none());
        assert!(r
            .insert(addr(1), &frag(2, 0, 2, b"a"), t + Duration::from_secs(1))
            .is_none());
        // Full: a third packet is not started, the first two still complete.
        assert!(r.insert(addr(1), &frag(3, 0, 2, b"a"), t).is_none());
        assert_eq!(r.len(), 2);
        assert_eq!(r.next_expiry(), Some(t));
        r.expire(t);
        assert_eq!(r.len(), 1);
        assert_eq!(
            r.insert(addr(1), &frag(2, 1, 2, b"b"), t).as_deref(),
            Some(&b"ab"[..])
        );
        assert_eq!(r.next_expiry(), None);
        // A packet over the size limit is dropped as soon as it exceeds it.
        let big = vec![0u8; MAX_PACKET_LEN / 2 + 1];
        assert!(r.insert(addr(1), &frag(4, 0, 3, &big), t).is_none());
        assert!(r.insert(addr(1), &frag(4, 1, 3, &big), t).is_none());
        assert_eq!(r.len(), 0);
        assert!(r.insert(addr(1), &frag(4, 2, 3, b"x"), t).is_none());
    }
}
