//! Addresses of a node on an ad-hoc network (no controller assigns them).
//!
//! - IPv6: the RFC 4193 address ZeroTier uses, `fd` + network ID (8 bytes) + `99:93` +
//!   node address (5 bytes), on a /88. It is unique per node by construction.
//! - IPv4: an address in 100.64.0.0/10 (RFC 6598 shared space, which ordinary LANs do
//!   not use), its 22 host bits a hash of the network ID and node address. Two members
//!   collide with probability about n²/2²³ for n members; the quick start is meant for a
//!   handful of nodes, and networks with a controller get pool-assigned addresses.

use std::net::{Ipv4Addr, Ipv6Addr};

use zt_core::{Address, NetworkId};

/// Prefix length of the ad-hoc IPv4 subnet.
pub const ADHOC_V4_PREFIX: u8 = 10;
/// Prefix length of the RFC 4193 subnet.
pub const RFC4193_PREFIX: u8 = 88;

/// The RFC 4193 address of `node` on `nwid`.
pub fn rfc4193(nwid: NetworkId, node: Address) -> Ipv6Addr {
    let mut b = [0u8; 16];
    b[0] = 0xfd;
    b[1..9].copy_from_slice(&nwid.0.to_be_bytes());
    b[9] = 0x99;
    b[10] = 0x93;
    b[11..16].copy_from_slice(&node.to_bytes());
    Ipv6Addr::from(b)
}

/// The ad-hoc IPv4 address of `node` on `nwid`, never the subnet's first or last.
pub fn adhoc_v4(nwid: NetworkId, node: Address) -> Ipv4Addr {
    let h = splitmix64(nwid.0 ^ splitmix64(node.to_u64()));
    let span = 1u32 << (32 - ADHOC_V4_PREFIX); // 2^22 addresses
    let host = 1 + (h % u64::from(span - 2)) as u32;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + host)
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4193_layout() {
        let nwid: NetworkId = "ff00000000001234".parse().unwrap();
        let node = Address::new(0x0089_e92c_eba1).unwrap();
        assert_eq!(
            rfc4193(nwid, node),
            "fdff:0:0:12:3499:9389:e92c:eba1"
                .parse::<Ipv6Addr>()
                .unwrap()
        );
    }

    #[test]
    fn v4_stays_inside_the_subnet_and_differs_per_node_and_network() {
        let n1: NetworkId = "ff00000000000001".parse().unwrap();
        let n2: NetworkId = "ff00000000000002".parse().unwrap();
        let mut seen = std::collections::HashSet::new();
        for i in 1..2000u64 {
            let a = Address::new(0x0010_0000_0000 + i).unwrap();
            let ip = adhoc_v4(n1, a);
            let o = ip.octets();
            assert_eq!(o[0], 100);
            assert_eq!(o[1] & 0xc0, 64);
            assert_ne!(ip, Ipv4Addr::new(100, 64, 0, 0));
            assert_ne!(ip, Ipv4Addr::new(100, 127, 255, 255));
            seen.insert(ip);
            assert_ne!(adhoc_v4(n1, a), adhoc_v4(n2, a));
        }
        // 2000 nodes in 2^22 addresses: collisions are possible but must be rare.
        assert!(seen.len() >= 1990, "{} distinct", seen.len());
    }
}
