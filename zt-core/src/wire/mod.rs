//! Byte formats of the overlay. Nothing outside this module reads or writes packet bytes.
//!
//! Each packet kind has a zero-copy view `Packet<T: AsRef<[u8]>>` (construct it with
//! `new_checked`; after that no accessor can panic) and a small validated `Repr` with
//! `parse` and `emit`, in the manner of smoltcp's `wire` module. The encrypted inner
//! messages, which are variable-length records, are read with a [`message::Reader`] that
//! rejects truncated and trailing bytes. The formats are documented in `docs/PROTOCOL.md`.
//!
//! Layers:
//! - [`header`]: the 14-byte VL1 header every datagram starts with (version, type, hop
//!   count, destination and source addresses).
//! - [`handshake`]: Noise IK handshake initiation and response bodies.
//! - [`cookie`]: the cookie reply of a responder under load, and the initiation that
//!   echoes its cookie.
//! - [`data`]: transport bodies (receiver session index, counter, AEAD ciphertext).
//! - [`fragment`]: pieces of a VL1 packet larger than the UDP path MTU.
//! - [`message`]: the plaintext inside a transport packet (keepalive, ping, HELLO, WHOIS,
//!   rendezvous, network membership, Ethernet frames).

pub mod cookie;
pub mod credential;
pub mod data;
pub mod fragment;
pub mod fuzzing;
pub mod handshake;
pub mod header;
pub mod message;

/// The only protocol version this crate speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer is shorter than the fixed part of the format.
    #[error("truncated {what}: {len} bytes")]
    Truncated {
        /// Which structure.
        what: &'static str,
        /// The length seen.
        len: usize,
    },
    /// The peer speaks another protocol version (the peer is incompatible, not hostile).
    #[error("unsupported protocol version {version} (this node speaks {PROTOCOL_VERSION})")]
    Version {
        /// The version in the packet.
        version: u8,
    },
    /// A field holds a value the format does not allow (the peer misbehaved).
    #[error("malformed {what}")]
    Malformed {
        /// Which field.
        what: &'static str,
    },
    /// Bytes remain after the end of a message.
    #[error("{count} trailing bytes after {what}")]
    Trailing {
        /// Which structure.
        what: &'static str,
        /// How many bytes remained.
        count: usize,
    },
}

/// Shorthand for results of this module.
pub type Result<T> = core::result::Result<T, WireError>;

pub(crate) fn read_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

pub(crate) fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}
