//! Bodies of the two Noise IK handshake packets.
//!
//! ```text
//! init:      sender index (4) | Noise message 1 (e, es, s, ss + encrypted identity)
//! response:  sender index (4) | receiver index (4) | Noise message 2 (e, ee, se)
//! ```
//!
//! Session indices are random 32-bit numbers chosen by each side; transport packets carry
//! the receiver's index so the receiver finds the session without trial decryption.

use super::{read_u32, Result, WireError};

/// Smallest and largest Noise payload accepted in a handshake packet.
pub const NOISE_MIN: usize = 48;
/// See [`NOISE_MIN`].
pub const NOISE_MAX: usize = 1024;

/// A view of a handshake initiation body.
#[derive(Debug, Clone)]
pub struct InitPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> InitPacket<T> {
    /// Wraps and checks a body.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let len = buffer.as_ref().len();
        if len < 4 + NOISE_MIN {
            return Err(WireError::Truncated {
                what: "handshake init",
                len,
            });
        }
        if len > 4 + NOISE_MAX {
            return Err(WireError::Malformed {
                what: "handshake init length",
            });
        }
        Ok(InitPacket { buffer })
    }
    /// The initiator's session index.
    pub fn sender_index(&self) -> u32 {
        read_u32(self.buffer.as_ref())
    }
    /// The Noise message.
    pub fn noise(&self) -> &[u8] {
        &self.buffer.as_ref()[4..]
    }
}

/// A parsed handshake initiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitRepr<'a> {
    /// The initiator's session index.
    pub sender_index: u32,
    /// The Noise message 1.
    pub noise: &'a [u8],
}

impl<'a> InitRepr<'a> {
    /// Parses a checked body.
    pub fn parse(p: &InitPacket<&'a [u8]>) -> Result<Self> {
        let b: &'a [u8] = p.buffer;
        Ok(InitRepr {
            sender_index: read_u32(b),
            noise: &b[4..],
        })
    }
    /// Body length.
    pub fn buffer_len(&self) -> usize {
        4 + self.noise.len()
    }
    /// Appends the body to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.sender_index.to_be_bytes());
        out.extend_from_slice(self.noise);
    }
}

/// A view of a handshake response body.
#[derive(Debug, Clone)]
pub struct ResponsePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ResponsePacket<T> {
    /// Wraps and checks a body.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let len = buffer.as_ref().len();
        if len < 8 + NOISE_MIN {
            return Err(WireError::Truncated {
                what: "handshake response",
                len,
            });
        }
        if len > 8 + NOISE_MAX {
            return Err(WireError::Malformed {
                what: "handshake response length",
            });
        }
        Ok(ResponsePacket { buffer })
    }
    /// The responder's session index.
    pub fn sender_index(&self) -> u32 {
        read_u32(self.buffer.as_ref())
    }
    /// The initiator's session index.
    pub fn receiver_index(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[4..])
    }
    /// The Noise message.
    pub fn noise(&self) -> &[u8] {
        &self.buffer.as_ref()[8..]
    }
}

/// A parsed handshake response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseRepr<'a> {
    /// The responder's session index.
    pub sender_index: u32,
    /// The initiator's session index, copied from the initiation.
    pub receiver_index: u32,
    /// The Noise message 2.
    pub noise: &'a [u8],
}

impl<'a> ResponseRepr<'a> {
    /// Parses a checked body.
    pub fn parse(p: &ResponsePacket<&'a [u8]>) -> Result<Self> {
        let b: &'a [u8] = p.buffer;
        Ok(ResponseRepr {
            sender_index: read_u32(b),
            receiver_index: read_u32(&b[4..]),
            noise: &b[8..],
        })
    }
    /// Body length.
    pub fn buffer_len(&self) -> usize {
        8 + self.noise.len()
    }
    /// Appends the body to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.sender_index.to_be_bytes());
        out.extend_from_slice(&self.receiver_index.to_be_bytes());
        out.extend_from_slice(self.noise);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_round_trip_and_bounds() {
        let mut bytes = vec![0xde, 0xad, 0xbe, 0xef];
        bytes.extend_from_slice(&[7u8; 48]);
        let p = InitPacket::new_checked(&bytes[..]).unwrap();
        let r = InitRepr::parse(&p).unwrap();
        assert_eq!(r.sender_index, 0xdeadbeef);
        assert_eq!(r.noise, &[7u8; 48][..]);
        let mut out = Vec::new();
        r.emit(&mut out);
        assert_eq!(out, bytes);
        assert!(InitPacket::new_checked(&bytes[..51]).is_err());
        assert!(InitPacket::new_checked(&vec![0u8; 4 + NOISE_MAX + 1][..]).is_err());
    }

    #[test]
    fn response_round_trip_and_bounds() {
        let mut bytes = vec![0, 0, 0, 1, 0, 0, 0, 2];
        bytes.extend_from_slice(&[9u8; 48]);
        let p = ResponsePacket::new_checked(&bytes[..]).unwrap();
        let r = ResponseRepr::parse(&p).unwrap();
        assert_eq!((r.sender_index, r.receiver_index), (1, 2));
        let mut out = Vec::new();
        r.emit(&mut out);
        assert_eq!(out, bytes);
        assert!(ResponsePacket::new_checked(&bytes[..55]).is_err());
    }
}
