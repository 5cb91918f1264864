//! Body of a fragment: a piece of a whole VL1 packet (header included) that is larger than
//! the UDP path MTU.
//!
//! ```text
//! packet id (4) | index (1) | count (1) | chunk (1 or more bytes)
//! ```
//!
//! `count` is 2..=[`MAX_FRAGMENTS`] and `index < count`. The receiver reassembles
//! fragments with the same source address and packet id, then processes the whole packet
//! (which must not itself be a fragment). Fragments are not authenticated; the
//! reassembled packet is.

use super::{read_u32, Result, WireError};

/// Most fragments a packet may be cut into.
pub const MAX_FRAGMENTS: u8 = 16;
/// Fixed part before the chunk.
pub const FRAGMENT_PREFIX_LEN: usize = 6;

/// A view of a fragment body.
#[derive(Debug, Clone)]
pub struct FragmentPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> FragmentPacket<T> {
    /// Wraps and checks a body.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < FRAGMENT_PREFIX_LEN + 1 {
            return Err(WireError::Truncated {
                what: "fragment",
                len: b.len(),
            });
        }
        let (index, count) = (b[4], b[5]);
        if !(2..=MAX_FRAGMENTS).contains(&count) || index >= count {
            return Err(WireError::Malformed {
                what: "fragment index/count",
            });
        }
        Ok(FragmentPacket { buffer })
    }
    /// The id shared by all fragments of one packet.
    pub fn packet_id(&self) -> u32 {
        read_u32(self.buffer.as_ref())
    }
    /// This fragment's position.
    pub fn index(&self) -> u8 {
        self.buffer.as_ref()[4]
    }
    /// How many fragments make the packet.
    pub fn count(&self) -> u8 {
        self.buffer.as_ref()[5]
    }
    /// The piece of the packet.
    pub fn chunk(&self) -> &[u8] {
        &self.buffer.as_ref()[FRAGMENT_PREFIX_LEN..]
    }
}

/// A parsed fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentRepr<'a> {
    /// The id shared by all fragments of one packet.
    pub packet_id: u32,
    /// This fragment's position.
    pub index: u8,
    /// How many fragments make the packet.
    pub count: u8,
    /// The piece of the packet.
    pub chunk: &'a [u8],
}

impl<'a> FragmentRepr<'a> {
    /// Parses a checked body.
    pub fn parse(p: &FragmentPacket<&'a [u8]>) -> Result<Self> {
        let b: &'a [u8] = p.buffer;
        Ok(FragmentRepr {
            packet_id: read_u32(b),
            index: b[4],
            count: b[5],
            chunk: &b[FRAGMENT_PREFIX_LEN..],
        })
    }
    /// Body length.
    pub fn buffer_len(&self) -> usize {
        FRAGMENT_PREFIX_LEN + self.chunk.len()
    }
    /// Appends the body to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.packet_id.to_be_bytes());
        out.push(self.index);
        out.push(self.count);
        out.extend_from_slice(self.chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_invalid_counts() {
        let bytes = [0, 0, 0, 42, 1, 3, 0xaa, 0xbb];
        let p = FragmentPacket::new_checked(&bytes[..]).unwrap();
        let r = FragmentRepr::parse(&p).unwrap();
        assert_eq!(
            (r.packet_id, r.index, r.count, r.chunk),
            (42, 1, 3, &[0xaa, 0xbb][..])
        );
        let mut out = Vec::new();
        r.emit(&mut out);
        assert_eq!(out, bytes);
        for (i, c) in [(3u8, 3u8), (0, 1), (0, 17), (0, 0)] {
            let b = [0, 0, 0, 1, i, c, 0];
            assert!(FragmentPacket::new_checked(&b[..]).is_err(), "{i}/{c}");
        }
        assert!(FragmentPacket::new_checked(&bytes[..6]).is_err());
    }
}
