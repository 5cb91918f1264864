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
//!               | certificate (93) | signature (64)
//! ```

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
pub const CONFIG_CONTEXT: &[u8] = b"ztrun network config v1";
/// Length of an encoded certificate.
pub const CERTIFICATE_LEN: usize = 8 + 5 + 8 + 8 + 64;
/// Length of an encoded revocation.
pub const REVOCATION_LEN: usize = 8 + 5 + 8 + 64;
/// Most assigned addresses or routes in one configuration.
pub const MAX_LIST: usize = 32;

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
    /// If the name is longer than 255 bytes or a list longer than [`MAX_LIST`] (caller bug).
    pub fn body(&self) -> Vec<u8> {
        assert!(self.name.len() <= 255, "network name too long");
        assert!(self.addresses.len() <= MAX_LIST && self.routes.len() <= MAX_LIST);
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
    }
}
