//! The plaintext records carried inside encrypted transport packets.
//!
//! Every record starts with a one-byte kind; fixed-size fields are big-endian:
//!
//! | kind | name            | fields                                              |
//! |------|-----------------|-----------------------------------------------------|
//! | 0x00 | KEEPALIVE       | —                                                   |
//! | 0x01 | PING            | id u64                                              |
//! | 0x02 | PONG            | id u64                                              |
//! | 0x10 | HELLO           | —                                                   |
//! | 0x11 | HELLO_OK        | observed endpoint                                   |
//! | 0x12 | WHOIS           | address (5)                                         |
//! | 0x13 | WHOIS_OK        | identity (133, see `Identity::to_bytes`)            |
//! | 0x14 | WHOIS_NOT_FOUND | address (5)                                         |
//! | 0x15 | RENDEZVOUS      | address (5), endpoint                               |
//! | 0x16 | LIKE            | network id u64                                      |
//! | 0x17 | UNLIKE          | network id u64                                      |
//! | 0x18 | MEMBERS         | network id u64, count u16, count × address (5)      |
//! | 0x20 | FRAME           | network id u64, Ethernet frame (rest of the record) |
//! | 0x30 | CONFIG_REQUEST  | network id u64                                      |
//! | 0x31 | CONFIG          | signed network configuration (rest of the record)   |
//! | 0x32 | CONFIG_ERROR    | network id u64, code u8 (1 not found, 2 denied)     |
//! | 0x33 | CREDENTIALS     | membership certificate (93)                         |
//! | 0x34 | REVOKE          | revocation (85)                                     |
//!
//! The signed objects are described in [`super::credential`].
//! An endpoint is `family u8 (4 or 6) | IP address (4 or 16) | port u16`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::credential::{Certificate, Revocation, SignedConfig, CERTIFICATE_LEN, REVOCATION_LEN};
use super::{Result, WireError};
use crate::identity::{Address, Identity, IDENTITY_LEN};
use crate::vl2::NetworkId;

/// Largest Ethernet frame a FRAME record may carry (14-byte header + the largest MTU + 4
/// for a VLAN tag).
pub const MAX_FRAME_LEN: usize = 14 + crate::vl2::MAX_MTU + 4;
/// Smallest Ethernet frame (a bare header).
pub const MIN_FRAME_LEN: usize = 14;
/// Most addresses in one MEMBERS record.
pub const MAX_MEMBERS: usize = 256;

/// Reads records field by field and rejects truncation and trailing bytes.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    /// Takes `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        if self.buf.len() - self.pos < n {
            return Err(WireError::Truncated {
                what,
                len: self.buf.len(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    /// Takes one byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    /// Takes a big-endian u16.
    pub fn u16(&mut self, what: &'static str) -> Result<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    /// Takes a big-endian u64.
    pub fn u64(&mut self, what: &'static str) -> Result<u64> {
        Ok(super::read_u64(self.take(8, what)?))
    }
    /// Takes a node address.
    pub fn address(&mut self) -> Result<Address> {
        let b = self.take(5, "address")?;
        let mut a = [0u8; 5];
        a.copy_from_slice(b);
        Address::from_bytes(a).map_err(|_| WireError::Malformed { what: "address" })
    }
    /// Takes an endpoint.
    pub fn endpoint(&mut self) -> Result<SocketAddr> {
        let ip = match self.u8("endpoint family")? {
            4 => {
                let b = self.take(4, "IPv4 endpoint")?;
                IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            6 => {
                let b = self.take(16, "IPv6 endpoint")?;
                let mut a = [0u8; 16];
                a.copy_from_slice(b);
                IpAddr::V6(Ipv6Addr::from(a))
            }
            _ => {
                return Err(WireError::Malformed {
                    what: "endpoint family",
                })
            }
        };
        let port = self.u16("endpoint port")?;
        Ok(SocketAddr::new(ip, port))
    }
    /// Takes everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
    /// Fails if bytes remain.
    pub fn finish(&self, what: &'static str) -> Result<()> {
        let count = self.buf.len() - self.pos;
        if count == 0 {
            Ok(())
        } else {
            Err(WireError::Trailing { what, count })
        }
    }
}

fn put_endpoint(out: &mut Vec<u8>, ep: &SocketAddr) {
    match ep.ip() {
        IpAddr::V4(a) => {
            out.push(4);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out.push(6);
            out.extend_from_slice(&a.octets());
        }
    }
    out.extend_from_slice(&ep.port().to_be_bytes());
}

/// One plaintext record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// Keeps a path and NAT mapping alive; also confirms a new session.
    Keepalive,
    /// Asks for a [`Message::Pong`] on the same path (path probing, latency).
    Ping {
        /// Echoed in the answer.
        id: u64,
    },
    /// Answer to a ping.
    Pong {
        /// The ping's id.
        id: u64,
    },
    /// A node registers with a root.
    Hello,
    /// The root's answer: where it sees the node.
    HelloOk {
        /// The node's external endpoint as the root sees it.
        observed: SocketAddr,
    },
    /// Asks a root for the identity of an address.
    Whois {
        /// The address looked up.
        address: Address,
    },
    /// The identity asked for (the asker verifies it).
    WhoisOk {
        /// The identity.
        identity: Identity,
    },
    /// The root knows no such node.
    WhoisNotFound {
        /// The address looked up.
        address: Address,
    },
    /// From a root: a peer can be reached at this endpoint; send to it now (hole punch).
    Rendezvous {
        /// The peer.
        address: Address,
        /// The peer's external endpoint as the root sees it.
        endpoint: SocketAddr,
    },
    /// A node joins a network (tells the root so it can list members).
    Like {
        /// The network.
        nwid: NetworkId,
    },
    /// A node leaves a network.
    Unlike {
        /// The network.
        nwid: NetworkId,
    },
    /// From a root: the current members of a network.
    Members {
        /// The network.
        nwid: NetworkId,
        /// Its members.
        members: Vec<Address>,
    },
    /// An Ethernet frame on a virtual network.
    Frame {
        /// The network.
        nwid: NetworkId,
        /// The frame: destination MAC, source MAC, EtherType, payload.
        frame: &'a [u8],
    },
    /// A member asks the network's controller for its configuration.
    ConfigRequest {
        /// The network.
        nwid: NetworkId,
    },
    /// The controller's answer.
    Config {
        /// The signed configuration.
        config: Box<SignedConfig>,
    },
    /// The controller refuses.
    ConfigError {
        /// The network.
        nwid: NetworkId,
        /// 1: no such network, 2: access denied.
        code: u8,
    },
    /// A member shows its certificate to a peer before sending it frames.
    Credentials {
        /// The certificate.
        certificate: Certificate,
    },
    /// The controller revokes a member's certificates.
    Revoke {
        /// The revocation.
        revocation: Revocation,
    },
}

impl<'a> Message<'a> {
    /// Parses one record; trailing bytes are an error.
    pub fn parse(buf: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(buf);
        let m = match r.u8("message kind")? {
            0x00 => Message::Keepalive,
            0x01 => Message::Ping { id: r.u64("ping")? },
            0x02 => Message::Pong { id: r.u64("pong")? },
            0x10 => Message::Hello,
            0x11 => Message::HelloOk {
                observed: r.endpoint()?,
            },
            0x12 => Message::Whois {
                address: r.address()?,
            },
            0x13 => Message::WhoisOk {
                identity: Identity::from_bytes(r.take(IDENTITY_LEN, "identity")?)
                    .map_err(|_| WireError::Malformed { what: "identity" })?,
            },
            0x14 => Message::WhoisNotFound {
                address: r.address()?,
            },
            0x15 => Message::Rendezvous {
                address: r.address()?,
                endpoint: r.endpoint()?,
            },
            0x16 => Message::Like {
                nwid: NetworkId(r.u64("network id")?),
            },
            0x17 => Message::Unlike {
                nwid: NetworkId(r.u64("network id")?),
            },
            0x18 => {
                let nwid = NetworkId(r.u64("network id")?);
                let count = usize::from(r.u16("member count")?);
                if count > MAX_MEMBERS {
                    return Err(WireError::Malformed {
                        what: "member count",
                    });
                }
                let mut members = Vec::with_capacity(count);
                for _ in 0..count {
                    members.push(r.address()?);
                }
                Message::Members { nwid, members }
            }
            0x20 => {
                let nwid = NetworkId(r.u64("network id")?);
                let frame = r.rest();
                if !(MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&frame.len()) {
                    return Err(WireError::Malformed {
                        what: "frame length",
                    });
                }
                Message::Frame { nwid, frame }
            }
            0x30 => Message::ConfigRequest {
                nwid: NetworkId(r.u64("network id")?),
            },
            0x31 => Message::Config {
                config: Box::new(SignedConfig::parse(r.rest())?),
            },
            0x32 => Message::ConfigError {
                nwid: NetworkId(r.u64("network id")?),
                code: r.u8("error code")?,
            },
            0x33 => Message::Credentials {
                certificate: Certificate::parse(r.take(CERTIFICATE_LEN, "certificate")?)?,
            },
            0x34 => Message::Revoke {
                revocation: Revocation::parse(r.take(REVOCATION_LEN, "revocation")?)?,
            },
            _ => {
                return Err(WireError::Malformed {
                    what: "message kind",
                })
            }
        };
        r.finish("message")?;
        Ok(m)
    }

    /// Appends the record to `out`.
    ///
    /// # Panics
    /// If a MEMBERS record holds more than [`MAX_MEMBERS`] addresses (a caller bug).
    pub fn emit(&self, out: &mut Vec<u8>) {
        match self {
            Message::Keepalive => out.push(0x00),
            Message::Ping { id } => {
                out.push(0x01);
                out.extend_from_slice(&id.to_be_bytes());
            }
            Message::Pong { id } => {
                out.push(0x02);
                out.extend_from_slice(&id.to_be_bytes());
            }
            Message::Hello => out.push(0x10),
            Message::HelloOk { observed } => {
                out.push(0x11);
                put_endpoint(out, observed);
            }
            Message::Whois { address } => {
                out.push(0x12);
                out.extend_from_slice(&address.to_bytes());
            }
            Message::WhoisOk { identity } => {
                out.push(0x13);
                out.extend_from_slice(&identity.to_bytes());
            }
            Message::WhoisNotFound { address } => {
                out.push(0x14);
                out.extend_from_slice(&address.to_bytes());
            }
            Message::Rendezvous { address, endpoint } => {
                out.push(0x15);
                out.extend_from_slice(&address.to_bytes());
                put_endpoint(out, endpoint);
            }
            Message::Like { nwid } => {
                out.push(0x16);
                out.extend_from_slice(&nwid.0.to_be_bytes());
            }
            Message::Unlike { nwid } => {
                out.push(0x17);
                out.extend_from_slice(&nwid.0.to_be_bytes());
            }
            Message::Members { nwid, members } => {
                assert!(
                    members.len() <= MAX_MEMBERS,
                    "too many members in one record"
                );
                out.push(0x18);
                out.extend_from_slice(&nwid.0.to_be_bytes());
                out.extend_from_slice(&(members.len() as u16).to_be_bytes());
                for m in members {
                    out.extend_from_slice(&m.to_bytes());
                }
            }
            Message::Frame { nwid, frame } => {
                out.push(0x20);
                out.extend_from_slice(&nwid.0.to_be_bytes());
                out.extend_from_slice(frame);
            }
            Message::ConfigRequest { nwid } => {
                out.push(0x30);
                out.extend_from_slice(&nwid.0.to_be_bytes());
            }
            Message::Config { config } => {
                out.push(0x31);
                out.extend_from_slice(&config.to_vec());
            }
            Message::ConfigError { nwid, code } => {
                out.push(0x32);
                out.extend_from_slice(&nwid.0.to_be_bytes());
                out.push(*code);
            }
            Message::Credentials { certificate } => {
                out.push(0x33);
                certificate.emit(out);
            }
            Message::Revoke { revocation } => {
                out.push(0x34);
                revocation.emit(out);
            }
        }
    }

    /// The record as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.emit(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(v: u64) -> Address {
        Address::new(v).unwrap()
    }

    #[test]
    fn byte_literals_round_trip() {
        let frame = [0xffu8; 14];
        let cases: Vec<(Vec<u8>, Message<'_>)> = vec![
            (vec![0x00], Message::Keepalive),
            (vec![0x01, 0, 0, 0, 0, 0, 0, 0, 7], Message::Ping { id: 7 }),
            (
                vec![0x02, 0, 0, 0, 0, 0, 0, 1, 0],
                Message::Pong { id: 256 },
            ),
            (vec![0x10], Message::Hello),
            (
                vec![0x11, 4, 192, 0, 2, 1, 0x26, 0x94],
                Message::HelloOk {
                    observed: "192.0.2.1:9876".parse().unwrap(),
                },
            ),
            (
                vec![0x12, 0x89, 0xe9, 0x2c, 0xee, 0xe5],
                Message::Whois {
                    address: addr(0x89e92ceee5),
                },
            ),
            (
                vec![
                    0x15, 0x89, 0xe9, 0x2c, 0xee, 0xe5, 6, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0,
                    0, 0, 0, 0, 0, 0, 1, 0x26, 0x94,
                ],
                Message::Rendezvous {
                    address: addr(0x89e92ceee5),
                    endpoint: "[2001:db8::1]:9876".parse().unwrap(),
                },
            ),
            (
                vec![0x32, 0x80, 0x56, 0xc2, 0xe2, 0x1c, 0, 0, 1, 2],
                Message::ConfigError {
                    nwid: NetworkId(0x8056_c2e2_1c00_0001),
                    code: 2,
                },
            ),
            (
                vec![0x30, 0x80, 0x56, 0xc2, 0xe2, 0x1c, 0, 0, 1],
                Message::ConfigRequest {
                    nwid: NetworkId(0x8056_c2e2_1c00_0001),
                },
            ),
            (
                vec![0x16, 0xff, 0, 0, 0, 0, 0, 0, 1],
                Message::Like {
                    nwid: NetworkId(0xff00_0000_0000_0001),
                },
            ),
            (
                vec![
                    0x18, 0, 0, 0, 0, 0, 0, 0, 9, 0, 2, 0x11, 0, 0, 0, 1, 0x22, 0, 0, 0, 2,
                ],
                Message::Members {
                    nwid: NetworkId(9),
                    members: vec![addr(0x1100000001), addr(0x2200000002)],
                },
            ),
            (
                [&[0x20, 0, 0, 0, 0, 0, 0, 0, 9][..], &frame[..]].concat(),
                Message::Frame {
                    nwid: NetworkId(9),
                    frame: &frame,
                },
            ),
        ];
        for (bytes, msg) in &cases {
            assert_eq!(&Message::parse(bytes).unwrap(), msg, "{bytes:02x?}");
            assert_eq!(&msg.to_vec(), bytes);
        }
    }

    #[test]
    fn rejects_truncation_trailing_bytes_and_bad_values() {
        assert!(matches!(
            Message::parse(&[0x01, 0, 0]),
            Err(WireError::Truncated { .. })
        ));
        assert!(matches!(
            Message::parse(&[0x00, 1]),
            Err(WireError::Trailing { .. })
        ));
        assert!(Message::parse(&[]).is_err());
        assert!(Message::parse(&[0x99]).is_err());
        assert!(Message::parse(&[0x11, 5, 1, 2, 3, 4, 0, 1]).is_err());
        assert!(Message::parse(&[0x12, 0, 0, 0, 0, 1]).is_err()); // reserved address
        assert!(Message::parse(&[0x20, 0, 0, 0, 0, 0, 0, 0, 9, 1, 2]).is_err()); // short frame
        let mut many = vec![0x18, 0, 0, 0, 0, 0, 0, 0, 9, 0x01, 0x01];
        many.extend(std::iter::repeat_n(0x11, 5 * 257));
        assert!(Message::parse(&many).is_err());
    }
}
