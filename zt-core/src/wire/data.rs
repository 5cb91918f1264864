//! Body of an encrypted transport packet.
//!
//! ```text
//! receiver index (4) | counter (8) | ChaCha20-Poly1305 ciphertext with 16-byte tag
//! ```
//!
//! The counter is the AEAD nonce (Noise stateless transport with an explicit nonce), so
//! packets may be lost or reordered; the receiver's replay window rejects duplicates.

use super::{read_u32, read_u64, Result, WireError};

/// Fixed part before the ciphertext.
pub const DATA_PREFIX_LEN: usize = 12;
/// Length of the AEAD tag.
pub const TAG_LEN: usize = 16;

/// A view of a transport body.
#[derive(Debug, Clone)]
pub struct DataPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> DataPacket<T> {
    /// Wraps and checks a body (it must hold at least an AEAD tag).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let len = buffer.as_ref().len();
        if len < DATA_PREFIX_LEN + TAG_LEN {
            return Err(WireError::Truncated {
                what: "transport packet",
                len,
            });
        }
        Ok(DataPacket { buffer })
    }
    /// The receiver's session index.
    pub fn receiver_index(&self) -> u32 {
        read_u32(self.buffer.as_ref())
    }
    /// The packet counter (nonce).
    pub fn counter(&self) -> u64 {
        read_u64(&self.buffer.as_ref()[4..])
    }
    /// The ciphertext and tag.
    pub fn ciphertext(&self) -> &[u8] {
        &self.buffer.as_ref()[DATA_PREFIX_LEN..]
    }
}

/// A parsed transport body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRepr<'a> {
    /// The receiver's session index.
    pub receiver_index: u32,
    /// The packet counter (nonce).
    pub counter: u64,
    /// The ciphertext and tag.
    pub ciphertext: &'a [u8],
}

impl<'a> DataRepr<'a> {
    /// Parses a checked body.
    pub fn parse(p: &DataPacket<&'a [u8]>) -> Result<Self> {
        let b: &'a [u8] = p.buffer;
        Ok(DataRepr {
            receiver_index: read_u32(b),
            counter: read_u64(&b[4..]),
            ciphertext: &b[DATA_PREFIX_LEN..],
        })
    }
    /// Body length.
    pub fn buffer_len(&self) -> usize {
        DATA_PREFIX_LEN + self.ciphertext.len()
    }
    /// Appends the body to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.receiver_index.to_be_bytes());
        out.extend_from_slice(&self.counter.to_be_bytes());
        out.extend_from_slice(self.ciphertext);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_short_buffer() {
        let mut bytes = vec![0, 0, 0x10, 0x01, 0, 0, 0, 0, 0, 0, 1, 0];
        bytes.extend_from_slice(&[0x55; 20]);
        let p = DataPacket::new_checked(&bytes[..]).unwrap();
        let r = DataRepr::parse(&p).unwrap();
        assert_eq!(r.receiver_index, 0x1001);
        assert_eq!(r.counter, 256);
        assert_eq!(r.ciphertext.len(), 20);
        let mut out = Vec::new();
        r.emit(&mut out);
        assert_eq!(out, bytes);
        assert!(DataPacket::new_checked(&bytes[..27]).is_err());
    }
}
