//! The VL1 header that starts every UDP datagram of the overlay.
//!
//! ```text
//!  0        1        2        3        4 ........ 8  9 ....... 13  14 ...
//! +--------+--------+--------+--------+------------+-------------+--------
//! |version |  type  |  hops  | flags  | dst addr   | src addr    | body
//! +--------+--------+--------+--------+------------+-------------+--------
//! ```
//!
//! The addresses are 40-bit node addresses. `hops` counts relays (a root increments it
//! when it forwards a packet); `flags` is zero but for [`FLAG_AES_GCM`] on a handshake
//! initiation, and a receiver ignores the bits it does not know. The header is
//! not authenticated: a relay must be able to rewrite `hops`, and receivers check the
//! addresses against the session the body decrypts under.

use super::{Result, WireError, PROTOCOL_VERSION};
use crate::identity::Address;

mod field {
    use core::ops::Range;
    pub(super) const VERSION: usize = 0;
    pub(super) const TYPE: usize = 1;
    pub(super) const HOPS: usize = 2;
    pub(super) const FLAGS: usize = 3;
    pub(super) const DST: Range<usize> = 4..9;
    pub(super) const SRC: Range<usize> = 9..14;
    pub(super) const BODY: usize = 14;
}

/// Length of the header.
pub const HEADER_LEN: usize = field::BODY;

/// On HANDSHAKE_INIT and HANDSHAKE_INIT_COOKIE: the initiator can use AES-256-GCM for the
/// session's transport (`docs/PROTOCOL.md`, section 3). Not authenticated: changing it can
/// only choose between the two ciphers, and the responder's choice is authenticated.
pub const FLAG_AES_GCM: u8 = 0x01;
/// Packets that have been relayed more often than this are dropped.
pub const MAX_HOPS: u8 = 2;

/// The kind of body that follows the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    /// Noise IK message 1 (see [`super::handshake`]).
    HandshakeInit,
    /// Noise IK message 2.
    HandshakeResponse,
    /// An encrypted transport packet (see [`super::data`]).
    Data,
    /// A fragment of a larger packet (see [`super::fragment`]).
    Fragment,
    /// An empty, unauthenticated packet sent only to open NAT mappings.
    HolePunch,
    /// A responder under load asks the initiator to prove it receives at its source
    /// address (see [`super::cookie`]).
    CookieReply,
    /// Noise IK message 1 preceded by the cookie of a [`PacketType::CookieReply`].
    HandshakeInitCookie,
}

impl PacketType {
    /// The wire value.
    pub fn to_u8(self) -> u8 {
        match self {
            PacketType::HandshakeInit => 1,
            PacketType::HandshakeResponse => 2,
            PacketType::Data => 3,
            PacketType::Fragment => 4,
            PacketType::HolePunch => 5,
            PacketType::CookieReply => 6,
            PacketType::HandshakeInitCookie => 7,
        }
    }

    /// Decodes the wire value.
    pub fn from_u8(v: u8) -> Result<Self> {
        Ok(match v {
            1 => PacketType::HandshakeInit,
            2 => PacketType::HandshakeResponse,
            3 => PacketType::Data,
            4 => PacketType::Fragment,
            5 => PacketType::HolePunch,
            6 => PacketType::CookieReply,
            7 => PacketType::HandshakeInitCookie,
            _ => {
                return Err(WireError::Malformed {
                    what: "packet type",
                })
            }
        })
    }
}

/// A view of a VL1 datagram.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short buffer.
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer after checking its length and version.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Packet { buffer };
        p.check_len()?;
        if p.version() != PROTOCOL_VERSION {
            return Err(WireError::Version {
                version: p.version(),
            });
        }
        Ok(p)
    }

    /// Checks that the fixed header fits.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            Err(WireError::Truncated {
                what: "header",
                len,
            })
        } else {
            Ok(())
        }
    }

    /// The version byte.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }

    /// The raw type byte.
    pub fn packet_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// The relay hop count.
    pub fn hops(&self) -> u8 {
        self.buffer.as_ref()[field::HOPS]
    }

    /// The reserved flags byte.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The raw destination address bytes.
    pub fn dst(&self) -> [u8; 5] {
        let mut a = [0u8; 5];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        a
    }

    /// The raw source address bytes.
    pub fn src(&self) -> [u8; 5] {
        let mut a = [0u8; 5];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        a
    }

    /// The body after the header.
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[field::BODY..]
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version byte.
    pub fn set_version(&mut self, v: u8) {
        self.buffer.as_mut()[field::VERSION] = v;
    }
    /// Sets the type byte.
    pub fn set_packet_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::TYPE] = v;
    }
    /// Sets the hop count.
    pub fn set_hops(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOPS] = v;
    }
    /// Sets the flags byte.
    pub fn set_flags(&mut self, v: u8) {
        self.buffer.as_mut()[field::FLAGS] = v;
    }
    /// Sets the destination address.
    pub fn set_dst(&mut self, a: Address) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.to_bytes());
    }
    /// Sets the source address.
    pub fn set_src(&mut self, a: Address) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.to_bytes());
    }
    /// The mutable body.
    pub fn body_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::BODY..]
    }
}

/// A parsed, validated header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// The body kind.
    pub packet_type: PacketType,
    /// Relays passed so far.
    pub hops: u8,
    /// Flag bits ([`FLAG_AES_GCM`]).
    pub flags: u8,
    /// Destination node.
    pub dst: Address,
    /// Source node.
    pub src: Address,
}

impl Repr {
    /// Parses a checked packet.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Self> {
        p.check_len()?;
        if p.version() != PROTOCOL_VERSION {
            return Err(WireError::Version {
                version: p.version(),
            });
        }
        let malformed = |what| move |_| WireError::Malformed { what };
        Ok(Repr {
            packet_type: PacketType::from_u8(p.packet_type())?,
            hops: p.hops(),
            flags: p.flags(),
            dst: Address::from_bytes(p.dst()).map_err(malformed("destination address"))?,
            src: Address::from_bytes(p.src()).map_err(malformed("source address"))?,
        })
    }

    /// The header length.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes.
    ///
    /// # Panics
    /// If the buffer is shorter than [`HEADER_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_version(PROTOCOL_VERSION);
        p.set_packet_type(self.packet_type.to_u8());
        p.set_hops(self.hops);
        p.set_flags(self.flags);
        p.set_dst(self.dst);
        p.set_src(self.src);
    }

    /// Appends the header to `out`.
    pub fn emit_vec(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + HEADER_LEN, 0);
        self.emit(&mut Packet::new_unchecked(&mut out[start..]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static BYTES: [u8; 16] = [
        0x01, 0x03, 0x01, 0x00, 0x89, 0xe9, 0x2c, 0xee, 0xe5, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xaa,
        0xbb,
    ];

    fn repr() -> Repr {
        Repr {
            packet_type: PacketType::Data,
            hops: 1,
            flags: 0,
            dst: Address::new(0x89e92ceee5).unwrap(),
            src: Address::new(0x123456789a).unwrap(),
        }
    }

    #[test]
    fn parse_and_emit_round_trip() {
        let p = Packet::new_checked(&BYTES[..]).unwrap();
        assert_eq!(Repr::parse(&p).unwrap(), repr());
        assert_eq!(p.body(), &[0xaa, 0xbb]);
        let mut out = vec![0u8; 16];
        repr().emit(&mut Packet::new_unchecked(&mut out[..]));
        out[14..].copy_from_slice(&[0xaa, 0xbb]);
        assert_eq!(out, BYTES);
    }

    #[test]
    fn rejects_short_other_version_bad_type_and_reserved_address() {
        assert!(matches!(
            Packet::new_checked(&BYTES[..13]),
            Err(WireError::Truncated { .. })
        ));
        let mut b = BYTES;
        b[0] = 2;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            WireError::Version { version: 2 }
        );
        let mut b = BYTES;
        b[1] = 9;
        assert!(Repr::parse(&Packet::new_checked(&b[..]).unwrap()).is_err());
        let mut b = BYTES;
        b[4] = 0xff;
        assert!(Repr::parse(&Packet::new_checked(&b[..]).unwrap()).is_err());
    }
}
