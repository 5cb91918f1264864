//! Signed controller objects: membership certificates, revocations and network
//! configurations. Each is a body followed by the controller's Ed25519 signature over
//! `context ‖ body`, where the context string names the kind and version (so a signature
//! for one kind never verifies as another). This module only encodes and decodes;
//! signing and checking live in [`crate::controller`].
//!
//! ```text
//! certificate:  nwid u64 | member (5) | timestamp u64 | max delta u64 | signature (64)
//! revocation:   nwid u64 | member (5) | threshold u64 | signature (64)
//! config:       nwid u64 | issued to (5) | timestamp u64 | flags u8 (bit 0: private)
//!               | mtu u16 | name length u8 | name (UTF-8)
//!               | count u8 | count × (family u8, address 4|16, prefix u8)     assigned IPs
//!               | count u8 | count × (family u8, target 4|16, prefix u8,
//!                                     has via u8, via 4|16 if has via)      routes
//!               | count u16 | count × (member (5), flags u8 (bit 0: has IPv4),
//!                                      IPv4 (4) if bit 0, name length u8, name)
//!                                                                           member directory
//!               | certificate (93) | signature (64)
//! ```
//!
//! The member directory lists the network's members as the controller knows them (their
//! pool IPv4 address and the DNS name an administrator gave them), so each member can
//! resolve the others by name; IPv6 addresses are computable from node addresses and are
//! not repeated. Names are DNS labels: 1 to 63 of `a-z 0-9 -`, no `-` at either end
//! ([`valid_member_name`]); an empty name means unnamed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::message::Reader;
use super::{Result, WireError};
use crate::identity::Address;
use crate::vl2::NetworkId;

/// Signature context of certificates.
pub const CERTIFICATE_CONTEXT: &[u8] = b"ztrun membership certificate v1";
/// Signature context of revocations.
pub const REVOCATION_CONTEXT: &[u8] = b"ztrun revocation v1";
/// Signature context of network configurations.
pub const CONFIG_CONTEXT: &[u8] = b"ztrun network config v2";
/// Length of an encoded certificate.
pub const CERTIFICATE_LEN: usize = 8 + 5 + 8 + 8 + 64;
/// Length of an encoded revocation.
pub const REVOCATION_LEN: usize = 8 + 5 + 8 + 64;
/// Most assigned addresses or routes in one configuration.
pub const MAX_LIST: usize = 32;
/// Most member directory entries in one configuration (at most 74 bytes each, so a
/// configuration stays well inside one 64 KiB packet).
pub const MAX_DIRECTORY: usize = 512;

/// Whether `name` may name a member in DNS: a lowercase DNS label (1 to 63 of `a-z`,
/// `0-9`, `-`, not starting or ending with `-`) that is not 10 hex digits (those are node
/// addresses).
pub fn valid_member_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !(b.len() == 10 && b.iter().all(u8::is_ascii_hexdigit))
}

/// One member in a configuration's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryEntry {
    /// Its node address.
    pub member: Address,
    /// Its IPv4 address from the network's pool, if it has one.
    pub ipv4: Option<Ipv4Addr>,
    /// Its DNS name on the network (see [`valid_member_name`]); empty when unnamed.
    pub name: String,
}

/// Proof from a controller that `member` belongs to `nwid` as of `timestamp`
/// (milliseconds on the controller's clock). Two certificates agree when their timestamps
/// differ by at most `max_delta`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// The network.
    pub nwid: NetworkId,
    /// The member.
    pub member: Address,
    /// Issue time (controller clock, ms).
    pub timestamp: u64,
    /// Largest timestamp difference with which two certificates agree.
    pub max_delta: u64,
    /// The controller's signature.
    pub signature: [u8; 64],
}

impl Certificate {
    /// The signed part.
    pub fn body(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(CERTIFICATE_LEN - 64);
        v.extend_from_slice(&self.nwid.0.to_be_bytes());
        v.extend_from_slice(&self.member.to_bytes());
        v.extend_from_slice(&self.timestamp.to_be_bytes());
        v.extend_from_slice(&self.max_delta.to_be_bytes());
        v
    }

    /// Appends the encoding.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.body());
        out.extend_from_slice(&self.signature);
    }

    /// Reads one certificate.
    pub fn read(r: &mut Reader<'_>) -> Result<Self> {
        let nwid = NetworkId(r.u64("certificate network")?);
        let member = r.address()?;
        let timestamp = r.u64("certificate timestamp")?;
        let max_delta = r.u64("certificate delta")?;
        let mut signature = [0u8; 64];
        signature.copy_from_slice(r.take(64, "certificate signature")?);
        Ok(Certificate {
            nwid,
            member,
            timestamp,
            max_delta,
            signature,
        })
    }

    /// Parses exactly one certificate.
    pub fn parse(buf: &[u8]) -> Result<Self> {
        let mut r = Reader::new(buf);
        let c = Self::read(&mut r)?;
        r.finish("certificate")?;
        Ok(c)
    }
}

/// A controller's statement that certificates of `member` on `nwid` with a timestamp up
/// to `threshold` are no longer valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The network.
    pub nwid: NetworkId,
    /// The revoked member.
    pub member: Address,
    /// Certificates with timestamps up to this are void.
    pub threshold: u64,
    /// The controller's signature.
    pub signature: [u8; 64],
}

impl Revocation {
    /// The signed part.
    pub fn body(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(REVOCATION_LEN - 64);
        v.extend_from_slice(&self.nwid.0.to_be_bytes());
        v.extend_from_slice(&self.member.to_bytes());
        v.extend_from_slice(&self.threshold.to_be_bytes());
        v
    }

    /// Appends the encoding.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.body());
        out.extend_from_slice(&self.signature);
    }

    /// Parses exactly one revocation.
    pub fn parse(buf: &[u8]) -> Result<Self> {
        let mut r = Reader::new(buf);
        let nwid = NetworkId(r.u64("revocation network")?);
        let member = r.address()?;
        let threshold = r.u64("revocation threshold")?;
        let mut signature = [0u8; 64];
        signature.copy_from_slice(r.take(64, "revocation signature")?);
        r.finish("revocation")?;
        Ok(Revocation {
            nwid,
            member,
            threshold,
            signature,
        })
    }
}

/// A route pushed by the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Destination network address.
    pub target: IpAddr,
    /// Prefix length.
    pub prefix: u8,
    /// Gateway on the virtual network, or `None` for an on-link route.
    pub via: Option<IpAddr>,
}

/// A member's configuration of one network, signed by the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedConfig {
    /// The network.
    pub nwid: NetworkId,
    /// The member it is for.
    pub issued_to: Address,
    /// Issue time (controller clock, ms); newer configurations replace older ones.
    pub timestamp: u64,
    /// Whether members need certificates (private network).
    pub private: bool,
    /// MTU of the virtual Ethernet.
    pub mtu: u16,
    /// Human-readable name.
    pub name: String,
    /// Addresses assigned to the member, with prefix lengths.
    pub addresses: Vec<(IpAddr, u8)>,
    /// Routes.
    pub routes: Vec<Route>,
    /// The network's members, for naming them ([`DirectoryEntry`]).
    pub directory: Vec<DirectoryEntry>,
    /// The member's certificate.
    pub certificate: Certificate,
    /// The controller's signature over everything before it.
    pub signature: [u8; 64],
}

fn put_ip(out: &mut Vec<u8>, ip: &IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            out.push(4);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out.push(6);
            out.extend_from_slice(&a.octets());
        }
    }
}

fn read_ip_of(r: &mut Reader<'_>, family: u8) -> Result<IpAddr> {
    Ok(match family {
        4 => {
            let b = r.take(4, "IPv4 address")?;
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        }
        6 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(r.take(16, "IPv6 address")?);
            IpAddr::V6(Ipv6Addr::from(a))
        }
        _ => {
            return Err(WireError::Malformed {
                what: "address family",
            })
        }
    })
}

fn read_prefix(r: &mut Reader<'_>, ip: &IpAddr) -> Result<u8> {
    let p = r.u8("prefix length")?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if p > max {
        return Err(WireError::Malformed {
            what: "prefix length",
        });
    }
    Ok(p)
}

impl SignedConfig {
    /// The signed part.
    ///
    /// # Panics
    /// If the name is longer than 255 bytes, a list longer than [`MAX_LIST`], the directory
    /// longer than [`MAX_DIRECTORY`] or a member name invalid (caller bug).
    pub fn body(&self) -> Vec<u8> {
        assert!(self.name.len() <= 255, "network name too long");
        assert!(self.addresses.len() <= MAX_LIST && self.routes.len() <= MAX_LIST);
        assert!(self.directory.len() <= MAX_DIRECTORY, "directory too long");
        let mut v = Vec::new();
        v.extend_from_slice(&self.nwid.0.to_be_bytes());
        v.extend_from_slice(&self.issued_to.to_bytes());
        v.extend_from_slice(&self.timestamp.to_be_bytes());
        v.push(u8::from(self.private));
        v.extend_from_slice(&self.mtu.to_be_bytes());
        v.push(self.name.len() as u8);
        v.extend_from_slice(self.name.as_bytes());
        v.push(self.addresses.len() as u8);
        for (ip, p) in &self.addresses {
            put_ip(&mut v, ip);
            v.push(*p);
        }
        v.push(self.routes.len() as u8);
        for r in &self.routes {
            put_ip(&mut v, &r.target);
            v.push(r.prefix);
            match &r.via {
                Some(via) => {
                    v.push(1);
                    match via {
                        IpAddr::V4(a) => v.extend_from_slice(&a.octets()),
                        IpAddr::V6(a) => v.extend_from_slice(&a.octets()),
                    }
                }
                None => v.push(0),
            }
        }
        v.extend_from_slice(&(self.directory.len() as u16).to_be_bytes());
        for e in &self.directory {
            assert!(
                e.name.is_empty() || valid_member_name(&e.name),
                "bad member name"
            );
            v.extend_from_slice(&e.member.to_bytes());
            match e.ipv4 {
                Some(a) => {
                    v.push(1);
                    v.extend_from_slice(&a.octets());
                }
                None => v.push(0),
            }
            v.push(e.name.len() as u8);
            v.extend_from_slice(e.name.as_bytes());
        }
        self.certificate.emit(&mut v);
        v
    }

    /// The full encoding.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = self.body();
        v.extend_from_slice(&self.signature);
        v
    }

    /// Parses a configuration; trailing bytes are an error. Does not check signatures.
    pub fn parse(buf: &[u8]) -> Result<Self> {
        let mut r = Reader::new(buf);
        let nwid = NetworkId(r.u64("config network")?);
        let issued_to = r.address()?;
        let timestamp = r.u64("config timestamp")?;
        let flags = r.u8("config flags")?;
        if flags > 1 {
            return Err(WireError::Malformed {
                what: "config flags",
            });
        }
        let mtu = r.u16("config mtu")?;
        let name_len = usize::from(r.u8("name length")?);
        let name = std::str::from_utf8(r.take(name_len, "name")?)
            .map_err(|_| WireError::Malformed { what: "name" })?
            .to_string();
        let n = usize::from(r.u8("address count")?);
        if n > MAX_LIST {
            return Err(WireError::Malformed {
                what: "address count",
            });
        }
        let mut addresses = Vec::with_capacity(n);
        for _ in 0..n {
            let fam = r.u8("address family")?;
            let ip = read_ip_of(&mut r, fam)?;
            let p = read_prefix(&mut r, &ip)?;
            addresses.push((ip, p));
        }
        let n = usize::from(r.u8("route count")?);
        if n > MAX_LIST {
            return Err(WireError::Malformed {
                what: "route count",
            });
        }
        let mut routes = Vec::with_capacity(n);
        for _ in 0..n {
            let fam = r.u8("route family")?;
            let target = read_ip_of(&mut r, fam)?;
            let prefix = read_prefix(&mut r, &target)?;
            let via = match r.u8("route via flag")? {
                0 => None,
                1 => Some(read_ip_of(&mut r, fam)?),
                _ => {
                    return Err(WireError::Malformed {
                        what: "route via flag",
                    })
                }
            };
            routes.push(Route {
                target,
                prefix,
                via,
            });
        }
        let n = usize::from(r.u16("directory count")?);
        if n > MAX_DIRECTORY {
            return Err(WireError::Malformed {
                what: "directory count",
            });
        }
        let mut directory = Vec::with_capacity(n);
        for _ in 0..n {
            let member = r.address()?;
            let ipv4 = match r.u8("directory flags")? {
                0 => None,
                1 => {
                    let b = r.take(4, "directory IPv4")?;
                    Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
                }
                _ => {
                    return Err(WireError::Malformed {
                        what: "directory flags",
                    })
                }
            };
            let len = usize::from(r.u8("member name length")?);
            let name = std::str::from_utf8(r.take(len, "member name")?)
                .ok()
                .filter(|n| n.is_empty() || valid_member_name(n))
                .ok_or(WireError::Malformed {
                    what: "member name",
                })?
                .to_string();
            directory.push(DirectoryEntry { member, ipv4, name });
        }
        let certificate = Certificate::read(&mut r)?;
        let mut signature = [0u8; 64];
        signature.copy_from_slice(r.take(64, "config signature")?);
        r.finish("config")?;
        Ok(SignedConfig {
            nwid,
            issued_to,
            timestamp,
            private: flags == 1,
            mtu,
            name,
            addresses,
            routes,
            directory,
            certificate,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert() -> Certificate {
        Certificate {
            nwid: NetworkId(0x8056_c2e2_1c00_0001),
            member: Address::new(0x89e92ceee5).unwrap(),
            timestamp: 1000,
            max_delta: 30_000,
            signature: [7; 64],
        }
    }

    #[test]
    fn certificate_and_revocation_byte_layout() {
        let mut bytes = vec![
            0x80, 0x56, 0xc2, 0xe2, 0x1c, 0, 0, 1, 0x89, 0xe9, 0x2c, 0xee, 0xe5,
        ];
        bytes.extend_from_slice(&1000u64.to_be_bytes());
        bytes.extend_from_slice(&30_000u64.to_be_bytes());
        bytes.extend_from_slice(&[7; 64]);
        assert_eq!(bytes.len(), CERTIFICATE_LEN);
        assert_eq!(Certificate::parse(&bytes).unwrap(), cert());
        let mut out = Vec::new();
        cert().emit(&mut out);
        assert_eq!(out, bytes);
        assert!(Certificate::parse(&bytes[..92]).is_err());
        let rev = Revocation {
            nwid: cert().nwid,
            member: cert().member,
            threshold: 5,
            signature: [1; 64],
        };
        let mut out = Vec::new();
        rev.emit(&mut out);
        assert_eq!(out.len(), REVOCATION_LEN);
        assert_eq!(Revocation::parse(&out).unwrap(), rev);
    }

    #[test]
    fn config_round_trip_and_rejections() {
        let c = SignedConfig {
            nwid: cert().nwid,
            issued_to: cert().member,
            timestamp: 1234,
            private: true,
            mtu: 2800,
            name: "lab".into(),
            addresses: vec![
                ("10.147.17.5".parse().unwrap(), 24),
                ("fd80:56c2:e21c:1:199:9389:e92c:eee5".parse().unwrap(), 88),
            ],
            routes: vec![
                Route {
                    target: "10.147.17.0".parse().unwrap(),
                    prefix: 24,
                    via: None,
                },
                Route {
                    target: "0.0.0.0".parse().unwrap(),
                    prefix: 0,
                    via: Some("10.147.17.1".parse().unwrap()),
                },
            ],
            directory: vec![
                DirectoryEntry {
                    member: cert().member,
                    ipv4: Some("10.147.17.5".parse().unwrap()),
                    name: "web-1".into(),
                },
                DirectoryEntry {
                    member: Address::new(0x0102030405).unwrap(),
                    ipv4: None,
                    name: String::new(),
                },
            ],
            certificate: cert(),
            signature: [9; 64],
        };
        let bytes = c.to_vec();
        assert_eq!(&bytes[..8], &[0x80, 0x56, 0xc2, 0xe2, 0x1c, 0, 0, 1]);
        assert_eq!(SignedConfig::parse(&bytes).unwrap(), c);
        assert!(SignedConfig::parse(&bytes[..bytes.len() - 1]).is_err());
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(SignedConfig::parse(&trailing).is_err());
        let mut bad_prefix = bytes.clone();
        // Name ends at 28; count at 28, family at 29, IPv4 at 30..34, prefix at 34.
        bad_prefix[34] = 33;
        assert!(SignedConfig::parse(&bad_prefix).is_err());
        // The first directory name ("web-1") sits 5 + 1 + 4 + 1 bytes into the directory,
        // which ends 93 + 64 + (5 + 1 + 1) bytes before the end.
        let name_at = bytes.len() - (93 + 64) - (5 + 1 + 1) - 5;
        assert_eq!(&bytes[name_at..name_at + 5], b"web-1");
        for bad in [b'W', b'.', b' ', 0xff] {
            let mut b = bytes.clone();
            b[name_at + 1] = bad;
            assert!(
                SignedConfig::parse(&b).is_err(),
                "name byte {bad:#x} refused"
            );
        }
        let mut bad_flags = bytes.clone();
        bad_flags[name_at - 6] = 2;
        assert!(SignedConfig::parse(&bad_flags).is_err());
    }

    #[test]
    fn member_names_are_dns_labels_that_do_not_look_like_node_addresses() {
        for ok in ["web", "db-2", "a", "0day", &"x".repeat(63)] {
            assert!(valid_member_name(ok), "{ok}");
        }
        for bad in [
            "",
            "-web",
            "web-",
            "Web",
            "web.lab",
            "we b",
            "ünï",
            "89e92ceee5",
            &"x".repeat(64),
        ] {
            assert!(!valid_member_name(bad), "{bad}");
        }
    }
}
