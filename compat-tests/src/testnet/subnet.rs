//! IPv4 subnets of the test address space, and the IPv6 ULA twin of each LAN.
//!
//! Every address the harness hands out lies in 198.18.0.0/15, the block RFC 2544 (and
//! RFC 5735 section 4) sets aside for benchmarking network devices: it is never routed on
//! the Internet and never used by real private networks, so a test can never reach or
//! shadow a real host. IPv6 addresses come from the ULA block fd00::/8 (RFC 4193).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::error::TestNetError;

/// An IPv4 subnet such as `198.18.0.0/24`: a network address with its host bits zero and a
/// prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

impl Subnet {
    /// 198.18.0.0/15, the RFC 2544 benchmark block every test address comes from.
    pub const BENCHMARK: Subnet = Subnet {
        network: Ipv4Addr::new(198, 18, 0, 0),
        prefix: 15,
    };

    /// The subnet `network/prefix`; refuses a prefix over 32 and set host bits.
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Self, TestNetError> {
        let text = format!("{network}/{prefix}");
        if prefix > 32 {
            return Err(TestNetError::InvalidAddress {
                text,
                reason: "the prefix length is over 32".into(),
            });
        }
        let subnet = Subnet { network, prefix };
        if network.to_bits() & !subnet.mask() != 0 {
            return Err(TestNetError::InvalidAddress {
                text,
                reason: format!(
                    "host bits are set; the network is {}",
                    Ipv4Addr::from_bits(network.to_bits() & subnet.mask())
                ),
            });
        }
        Ok(subnet)
    }

    /// The network address (host bits zero).
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// Number of addresses in the subnet, network and broadcast included.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// Whether `addr` is inside the subnet.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        addr.to_bits() & self.mask() == self.network.to_bits()
    }

    /// Whether every address of `other` is inside this subnet.
    pub fn contains_subnet(&self, other: &Subnet) -> bool {
        other.prefix >= self.prefix && self.contains(other.network)
    }

    /// Whether the two subnets share an address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.contains_subnet(other) || other.contains_subnet(self)
    }

    /// The `n`th usable host address (1 is the first after the network address); `None`
    /// for 0, the broadcast address and beyond.
    pub fn host(&self, n: u32) -> Option<Ipv4Addr> {
        if n == 0 || u64::from(n) >= self.size().saturating_sub(1) {
            return None;
        }
        Some(Ipv4Addr::from_bits(self.network.to_bits() + n))
    }

    /// The offset of `addr` from the network address, if `addr` is a usable host address.
    pub fn host_index(&self, addr: Ipv4Addr) -> Option<u32> {
        if !self.contains(addr) {
            return None;
        }
        let n = addr.to_bits() - self.network.to_bits();
        self.host(n).map(|_| n)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = TestNetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| TestNetError::InvalidAddress {
            text: text.to_owned(),
            reason: reason.to_owned(),
        };
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| bad("expected ADDRESS/PREFIX, e.g. 198.18.0.0/24"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| bad("the prefix length is not a number"))?;
        Subnet::new(addr, prefix)
    }
}

/// The IPv6 address that pairs with IPv4 host number `host` on the LAN with index
/// `lan_index`: `fd00:0:0:<lan_index + 1>::<host>`, in the LAN's /64.
pub(crate) fn ula_address(lan_index: usize, host: u32) -> Ipv6Addr {
    let lan = u16::try_from(lan_index + 1).unwrap_or(u16::MAX);
    let [hi, lo] = [(host >> 16) as u16, host as u16];
    Ipv6Addr::new(0xfd00, 0, 0, lan, 0, 0, hi, lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let s: Subnet = "198.18.4.0/24".parse().unwrap();
        assert_eq!(s.network(), Ipv4Addr::new(198, 18, 4, 0));
        assert_eq!(s.prefix(), 24);
        assert_eq!(s.to_string(), "198.18.4.0/24");
        assert_eq!(s.size(), 256);
    }

    #[test]
    fn refuses_host_bits_and_garbage() {
        assert!("198.18.4.1/24".parse::<Subnet>().is_err());
        assert!("198.18.4.0/33".parse::<Subnet>().is_err());
        assert!("198.18.4.0".parse::<Subnet>().is_err());
        assert!("x/24".parse::<Subnet>().is_err());
    }

    #[test]
    fn hosts_skip_network_and_broadcast() {
        let s: Subnet = "198.18.0.0/30".parse().unwrap();
        assert_eq!(s.host(0), None);
        assert_eq!(s.host(1), Some(Ipv4Addr::new(198, 18, 0, 1)));
        assert_eq!(s.host(2), Some(Ipv4Addr::new(198, 18, 0, 2)));
        assert_eq!(s.host(3), None);
        assert_eq!(s.host_index(Ipv4Addr::new(198, 18, 0, 2)), Some(2));
        assert_eq!(s.host_index(Ipv4Addr::new(198, 18, 0, 3)), None);
    }

    #[test]
    fn containment_and_overlap() {
        let a: Subnet = "198.18.0.0/24".parse().unwrap();
        let b: Subnet = "198.18.0.128/25".parse().unwrap();
        let c: Subnet = "198.18.1.0/24".parse().unwrap();
        assert!(Subnet::BENCHMARK.contains_subnet(&a));
        assert!(Subnet::BENCHMARK.contains_subnet(&"198.19.255.0/24".parse().unwrap()));
        assert!(!Subnet::BENCHMARK.contains_subnet(&"198.20.0.0/24".parse().unwrap()));
        assert!(!Subnet::BENCHMARK.contains_subnet(&"198.16.0.0/14".parse().unwrap()));
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
    }

    #[test]
    fn ula_twin() {
        assert_eq!(
            ula_address(0, 5),
            "fd00:0:0:1::5".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            ula_address(2, 0x1_0002),
            "fd00:0:0:3::1:2".parse::<Ipv6Addr>().unwrap()
        );
    }
}
