//! DNS names of the members of the joined networks, as the supervisor's resolver
//! ([`supervisor::dns`]) answers them inside the wrapped program.
//!
//! - `<node>.<nwid>.zt`: member `<node>` (10 hex digits) of network `<nwid>` (16 hex
//!   digits), which this program must have joined.
//! - `<name>.<nwid>.zt`: the member an administrator named `<name>` on the controller
//!   (`zt member name`).
//! - `<node>.zt`, `<name>.zt`: the same on the first joined network where the name has an
//!   address.
//!
//! On an ad-hoc network every member's addresses are computable from its node address
//! ([`netconf`]). On a controller network the RFC 4193 and 6plane addresses are computable
//! when the network assigns them (seen from this node's own configuration); the pool IPv4
//! addresses and the names come from the member directory in the signed configuration,
//! which the controller pushes when it changes ([`NetworkNames::update`]).
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use supervisor::dns::{Directory, Lookup};
use zt_core::controller::{rfc4193_address, sixplane_address};
use zt_core::wire::credential::DirectoryEntry;
use zt_core::{Address, NetworkId};

use crate::netconf;

/// How one joined network names its members.
#[derive(Debug, Clone)]
pub struct NetworkNames {
    /// The network.
    pub nwid: NetworkId,
    /// An ad-hoc network (addresses from [`netconf`]).
    pub adhoc: bool,
    /// Members have RFC 4193 addresses (controller networks).
    pub rfc4193: bool,
    /// Members have 6plane addresses (controller networks).
    pub sixplane: bool,
    /// The controller's member directory (the latest configuration's), shared with the
    /// task that follows configuration updates.
    directory: Arc<RwLock<Vec<DirectoryEntry>>>,
}

impl NetworkNames {
    /// How `nwid` names its members, judged from the addresses `me` was given on it, with
    /// the member directory of its configuration (empty on ad-hoc networks).
    pub fn new(
        nwid: NetworkId,
        me: Address,
        addresses: &[IpAddr],
        directory: Vec<DirectoryEntry>,
    ) -> Self {
        let has = |ip: std::net::Ipv6Addr| addresses.contains(&IpAddr::V6(ip));
        Self {
            nwid,
            adhoc: nwid.is_adhoc(),
            rfc4193: has(rfc4193_address(nwid, me)),
            sixplane: has(sixplane_address(nwid, me)),
            directory: Arc::new(RwLock::new(directory)),
        }
    }

    /// Replace the member directory (a new configuration arrived).
    pub fn update(&self, directory: Vec<DirectoryEntry>) {
        *self.directory.write().unwrap_or_else(|e| e.into_inner()) = directory;
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
        let dir = self.directory.read().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = dir.iter().find(|e| e.member == node).and_then(|e| e.ipv4) {
            out.push(a.into());
        }
        if self.rfc4193 {
            out.push(rfc4193_address(self.nwid, node).into());
        }
        if self.sixplane {
            out.push(sixplane_address(self.nwid, node).into());
        }
        out
    }

    /// The member named `name` on this network.
    pub fn named(&self, name: &str) -> Option<Address> {
        let dir = self.directory.read().unwrap_or_else(|e| e.into_inner());
        dir.iter().find(|e| e.name == name).map(|e| e.member)
    }

    /// The name the controller gave `node` on this network, if any.
    pub fn name_of(&self, node: Address) -> Option<String> {
        let dir = self.directory.read().unwrap_or_else(|e| e.into_inner());
        dir.iter()
            .find(|e| e.member == node && !e.name.is_empty())
            .map(|e| e.name.clone())
    }

    /// The addresses of `label` (a node address or a member name) on this network.
    fn resolve(&self, label: &str) -> Vec<IpAddr> {
        match node_address(label) {
            Some(node) => self.addresses(node),
            None => self
                .named(label)
                .map(|node| self.addresses(node))
                .unwrap_or_default(),
        }
    }
}

/// `label` as a node address when it is exactly 10 hex digits (`Address` parsing alone
/// would accept other forms).
fn node_address(label: &str) -> Option<Address> {
    if label.len() != 10 || !label.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    label.parse().ok()
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
        let (label, nwid) = match rest.split_once('.') {
            Some((label, nwid)) => (label, Some(nwid)),
            None => (rest, None),
        };
        if label.is_empty() {
            return Lookup::Unknown;
        }
        // DNS names are case-insensitive; member names are stored in lowercase.
        let label = label.to_ascii_lowercase();
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
                    .map(|n| n.resolve(&label))
            }
            None => self
                .networks
                .iter()
                .map(|n| n.resolve(&label))
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
        NetworkNames::new(nwid, me, &[], Vec::new())
    }

    #[test]
    fn adhoc_members_resolve_to_their_computed_addresses() {
        let n = adhoc();
        let names = MemberNames::new(vec![n.clone()]);
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
        let pool_only = NetworkNames::new(nwid, me, &[IpAddr::from([10, 1, 0, 5])], Vec::new());
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
            Vec::new(),
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

    #[test]
    fn controller_directory_names_members_and_gives_their_pool_addresses() {
        let nwid: NetworkId = "89e92ceba1000001".parse().unwrap();
        let me = Address::new(0x11_2233_4455).unwrap();
        let db = Address::new(0x22_3344_5566).unwrap();
        let v4: std::net::Ipv4Addr = "10.1.0.7".parse().unwrap();
        let n = NetworkNames::new(
            nwid,
            me,
            &[
                IpAddr::from([10, 1, 0, 5]),
                rfc4193_address(nwid, me).into(),
            ],
            vec![DirectoryEntry {
                member: db,
                ipv4: Some(v4),
                name: "db".into(),
            }],
        );
        let names = MemberNames::new(vec![n.clone()]);
        let want = Lookup::Found(vec![v4.into(), rfc4193_address(nwid, db).into()]);
        for name in [
            "db.89e92ceba1000001.zt",
            "DB.89e92ceba1000001.zt",
            "db.zt",
            "2233445566.89e92ceba1000001.zt",
            "2233445566.zt",
        ] {
            assert_eq!(names.lookup(name), want, "{name}");
        }
        assert_eq!(names.lookup("web.zt"), Lookup::Unknown);
        // A new configuration renames the member and moves its address.
        let v4b: std::net::Ipv4Addr = "10.1.0.8".parse().unwrap();
        n.update(vec![DirectoryEntry {
            member: db,
            ipv4: Some(v4b),
            name: "web".into(),
        }]);
        assert_eq!(names.lookup("db.zt"), Lookup::Unknown);
        assert_eq!(
            names.lookup("web.zt"),
            Lookup::Found(vec![v4b.into(), rfc4193_address(nwid, db).into()])
        );
    }
}
