//! DNS names of the members of the joined networks, as the supervisor's resolver
//! ([`supervisor::dns`]) answers them inside the wrapped program.
//!
//! - `<node>.<nwid>.zt`: member `<node>` (10 hex digits) of network `<nwid>` (16 hex
//!   digits), which this program must have joined.
//! - `<node>.zt`: the same on the first joined network where the name has an address.
//!
//! The addresses are the ones every member can compute from a node address, without
//! asking anyone: on an ad-hoc network its IPv4 and RFC 4193 addresses ([`netconf`]); on
//! a controller network its RFC 4193 and 6plane addresses when the network assigns them
//! (seen from this node's own configuration). Addresses a controller assigns from an IPv4
//! pool cannot be computed, so controller networks answer IPv6 only (docs/SUPERVISOR.md).
use std::net::IpAddr;

use supervisor::dns::{Directory, Lookup};
use zt_core::controller::{rfc4193_address, sixplane_address};
use zt_core::{Address, NetworkId};

use crate::netconf;

/// How one joined network names its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkNames {
    /// The network.
    pub nwid: NetworkId,
    /// An ad-hoc network (addresses from [`netconf`]).
    pub adhoc: bool,
    /// Members have RFC 4193 addresses (controller networks).
    pub rfc4193: bool,
    /// Members have 6plane addresses (controller networks).
    pub sixplane: bool,
}

impl NetworkNames {
    /// How `nwid` names its members, judged from the addresses `me` was given on it.
    pub fn new(nwid: NetworkId, me: Address, addresses: &[IpAddr]) -> Self {
        let has = |ip: std::net::Ipv6Addr| addresses.contains(&IpAddr::V6(ip));
        Self {
            nwid,
            adhoc: nwid.is_adhoc(),
            rfc4193: has(rfc4193_address(nwid, me)),
            sixplane: has(sixplane_address(nwid, me)),
        }
    }

    /// The addresses of `node` on this network.
    pub fn addresses(&self, node: Address) -> Vec<IpAddr> {
        if self.adhoc {
            return vec![
                netconf::adhoc_v4(self.nwid, node).into(),
                netconf::rfc4193(self.nwid, node).into(),
            ];
        }
        let mut out = Vec::new();
        if self.rfc4193 {
            out.push(rfc4193_address(self.nwid, node).into());
        }
        if self.sixplane {
            out.push(sixplane_address(self.nwid, node).into());
        }
        out
    }
}

/// The names of every joined network's members.
#[derive(Debug, Clone, Default)]
pub struct MemberNames {
    networks: Vec<NetworkNames>,
}

impl MemberNames {
    /// Names on `networks`, in the order they were joined.
    pub fn new(networks: Vec<NetworkNames>) -> Self {
        Self { networks }
    }
}

impl Directory for MemberNames {
    fn lookup(&self, name: &str) -> Lookup {
        let Some(rest) = name.strip_suffix(".zt") else {
            return Lookup::Unknown;
        };
        let (node, nwid) = match rest.split_once('.') {
            Some((node, nwid)) => (node, Some(nwid)),
            None => (rest, None),
        };
        // Exactly 10 hex digits: `Address` parsing alone would accept other forms.
        if node.len() != 10 || !node.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Lookup::Unknown;
        }
        let Ok(node) = node.parse::<Address>() else {
            return Lookup::Unknown;
        };
        let found = match nwid {
            Some(nwid) => {
                if nwid.len() != 16 || !nwid.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Lookup::Unknown;
                }
                let Ok(nwid) = nwid.parse::<NetworkId>() else {
                    return Lookup::Unknown;
                };
                self.networks
                    .iter()
                    .find(|n| n.nwid == nwid)
                    .map(|n| n.addresses(node))
            }
            None => self
                .networks
                .iter()
                .map(|n| n.addresses(node))
                .find(|a| !a.is_empty()),
        };
        match found {
            Some(a) if !a.is_empty() => Lookup::Found(a),
            _ => Lookup::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adhoc() -> NetworkNames {
        let nwid: NetworkId = "ff00000000001234".parse().unwrap();
        let me = Address::new(0x11_2233_4455).unwrap();
        NetworkNames::new(nwid, me, &[])
    }

    #[test]
    fn adhoc_members_resolve_to_their_computed_addresses() {
        let n = adhoc();
        let names = MemberNames::new(vec![n]);
        let node = Address::new(0x89_e92c_eba1).unwrap();
        let want = vec![
            IpAddr::from(netconf::adhoc_v4(n.nwid, node)),
            IpAddr::from(netconf::rfc4193(n.nwid, node)),
        ];
        assert_eq!(
            names.lookup("89e92ceba1.ff00000000001234.zt"),
            Lookup::Found(want.clone())
        );
        assert_eq!(names.lookup("89e92ceba1.zt"), Lookup::Found(want));
    }

    #[test]
    fn names_outside_the_joined_networks_do_not_exist() {
        let names = MemberNames::new(vec![adhoc()]);
        for name in [
            "89e92ceba1.ff00000000009999.zt", // not joined
            "89e92ceba1.ff0000000000123.zt",  // short network ID
            "89e92ceb.zt",                    // short node address
            "zz9e92ceba1.zt",
            "www.zt",
            "zt",
        ] {
            assert_eq!(names.lookup(name), Lookup::Unknown, "{name}");
        }
    }

    #[test]
    fn controller_networks_answer_the_ipv6_modes_they_assign() {
        let nwid: NetworkId = "89e92ceba1000001".parse().unwrap();
        let me = Address::new(0x11_2233_4455).unwrap();
        let node = Address::new(0x22_3344_5566).unwrap();
        let pool_only = NetworkNames::new(nwid, me, &[IpAddr::from([10, 1, 0, 5])]);
        let names = MemberNames::new(vec![pool_only]);
        assert_eq!(
            names.lookup("2233445566.89e92ceba1000001.zt"),
            Lookup::Unknown
        );
        let v6 = NetworkNames::new(
            nwid,
            me,
            &[
                rfc4193_address(nwid, me).into(),
                sixplane_address(nwid, me).into(),
            ],
        );
        let names = MemberNames::new(vec![v6]);
        assert_eq!(
            names.lookup("2233445566.89e92ceba1000001.zt"),
            Lookup::Found(vec![
                rfc4193_address(nwid, node).into(),
                sixplane_address(nwid, node).into()
            ])
        );
    }
}
