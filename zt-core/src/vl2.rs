//! VL2, the virtual Ethernet layer: network IDs and MAC addresses.
//!
//! A network ID is 64 bits, written as 16 hex digits: the controller's 40-bit address
//! followed by a 24-bit network number, as in ZeroTier (`8056c2e21c000001` is network 1
//! of controller `8056c2e21c`). IDs whose first byte is `ff` are **ad-hoc** networks: they
//! have no controller, every node that knows the ID may join, and membership is announced
//! to the roots with LIKE records. They exist so that a quick start needs nothing but
//! nodes and a root. (ZeroTier reads the remaining digits of an ad-hoc ID as a port range;
//! this implementation gives them no meaning other than telling networks apart.)
//!
//! A member's MAC address on a network is derived from its node address and the network
//! ID, and can be turned back into the node address:
//!
//! - first octet: the network ID's top byte with the two low bits forced to `10`
//!   (locally administered, unicast); `0x52` becomes `0x32` so the result never starts
//!   like QEMU/KVM's `52:54:…`;
//! - last five octets: the node address XOR the low 40 bits of the network ID.
//!
//! The XOR with a per-network constant is a bijection, so two members of one network never
//! share a MAC, and the same node has unrelated-looking MACs on different networks.

use std::fmt;
use std::str::FromStr;

use crate::identity::Address;

/// Default MTU of a virtual network (bytes of Ethernet payload): a jumbo frame, so that
/// one frame fills most of a UDP GSO send of fragments (DECISIONS.md D20).
pub const DEFAULT_MTU: usize = 9000;

/// Smallest MTU a network may have (IPv6's minimum).
pub const MIN_MTU: usize = 1280;

/// Largest MTU a network may have (ZeroTier's limit too).
pub const MAX_MTU: usize = 10000;

/// A 64-bit virtual network ID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetworkId(pub u64);

/// Errors parsing network IDs and MACs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Vl2Error {
    /// Not 16 hex digits.
    #[error("invalid network ID {text:?}: expected 16 hex digits")]
    NetworkIdSyntax {
        /// The rejected text.
        text: String,
    },
    /// Not six colon-separated hex octets.
    #[error("invalid MAC address {text:?}")]
    MacSyntax {
        /// The rejected text.
        text: String,
    },
}

impl NetworkId {
    /// True for ad-hoc networks (first byte `ff`), which have no controller.
    pub fn is_adhoc(self) -> bool {
        self.0 >> 56 == 0xff
    }

    /// The controller's address, or `None` for ad-hoc networks.
    pub fn controller(self) -> Option<Address> {
        if self.is_adhoc() {
            None
        } else {
            Address::new(self.0 >> 24).ok()
        }
    }

    /// The 24-bit network number.
    pub fn network_number(self) -> u32 {
        (self.0 & 0xff_ffff) as u32
    }

    fn mac_mask(self) -> u64 {
        self.0 & 0xff_ffff_ffff
    }

    fn mac_first_octet(self) -> u8 {
        let first = (((self.0 >> 56) as u8) & 0xfc) | 0x02;
        if first == 0x52 {
            0x32
        } else {
            first
        }
    }
}

impl fmt::Display for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NetworkId({:016x})", self.0)
    }
}

impl FromStr for NetworkId {
    type Err = Vl2Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Vl2Error::NetworkIdSyntax { text: s.into() });
        }
        u64::from_str_radix(s, 16)
            .map(NetworkId)
            .map_err(|_| Vl2Error::NetworkIdSyntax { text: s.into() })
    }
}

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The broadcast address.
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    /// The MAC of node `address` on network `nwid`.
    pub fn for_member(nwid: NetworkId, address: Address) -> Mac {
        let low = address.to_u64() ^ nwid.mac_mask();
        let b = low.to_be_bytes();
        Mac([nwid.mac_first_octet(), b[3], b[4], b[5], b[6], b[7]])
    }

    /// The node whose MAC this is on `nwid`, if it is a MAC this scheme produces.
    pub fn to_member(self, nwid: NetworkId) -> Option<Address> {
        if self.0[0] != nwid.mac_first_octet() {
            return None;
        }
        let mut low = 0u64;
        for b in &self.0[1..] {
            low = (low << 8) | u64::from(*b);
        }
        Address::new(low ^ nwid.mac_mask()).ok()
    }

    /// True for group (multicast and broadcast) addresses.
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 == 1
    }

    /// The destination MAC of an Ethernet frame, if it has a full header.
    pub fn frame_dst(frame: &[u8]) -> Option<Mac> {
        frame
            .get(..6)
            .map(|b| Mac([b[0], b[1], b[2], b[3], b[4], b[5]]))
    }

    /// The source MAC of an Ethernet frame, if it has a full header.
    pub fn frame_src(frame: &[u8]) -> Option<Mac> {
        frame
            .get(6..12)
            .map(|b| Mac([b[0], b[1], b[2], b[3], b[4], b[5]]))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({self})")
    }
}

impl FromStr for Mac {
    type Err = Vl2Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || Vl2Error::MacSyntax { text: s.into() };
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(err());
        }
        let mut m = [0u8; 6];
        for (o, p) in m.iter_mut().zip(parts) {
            if p.len() != 2 {
                return Err(err());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        Ok(Mac(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_id_parts() {
        let n: NetworkId = "8056c2e21c000001".parse().unwrap();
        assert_eq!(n.controller(), Some("8056c2e21c".parse().unwrap()));
        assert_eq!(n.network_number(), 1);
        assert!(!n.is_adhoc());
        assert_eq!(n.to_string(), "8056c2e21c000001");
        let a: NetworkId = "ff00000000000001".parse().unwrap();
        assert!(a.is_adhoc());
        assert_eq!(a.controller(), None);
        assert!("8056c2e21c00000".parse::<NetworkId>().is_err());
        assert!("8056c2e21c00000g".parse::<NetworkId>().is_err());
    }

    #[test]
    fn mac_is_local_unicast_and_reversible() {
        let n: NetworkId = "8056c2e21c000001".parse().unwrap();
        let a: Address = "89e92ceee5".parse().unwrap();
        let m = Mac::for_member(n, a);
        // 0x80 & 0xfc | 0x02 = 0x82; low 40 bits = 0x89e92ceee5 ^ 0xe21c000001.
        assert_eq!(m.to_string(), "82:6b:f5:2c:ee:e4");
        assert_eq!(m.0[0] & 0x03, 0x02);
        assert!(!m.is_multicast());
        assert_eq!(m.to_member(n), Some(a));
        let other: NetworkId = "8056c2e21c000002".parse().unwrap();
        assert_ne!(Mac::for_member(other, a), m);
        assert_eq!(Mac::for_member(other, a).to_member(other), Some(a));
        // A network whose MACs would start with 0x52 uses 0x32 instead.
        let kvm = NetworkId(0x5300_0000_0000_0001);
        assert_eq!(Mac::for_member(kvm, a).0[0], 0x32);
        assert_eq!(Mac::for_member(kvm, a).to_member(kvm), Some(a));
        assert_eq!("82:6b:f5:2c:ee:e4".parse::<Mac>().unwrap(), m);
        assert!(Mac::BROADCAST.is_multicast());
        assert_eq!(Mac::BROADCAST.to_member(n), None);
    }
}
