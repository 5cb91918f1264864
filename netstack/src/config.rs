//! Addressing of one virtual network: the stack's addresses, subnets and routes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Default IP MTU of a virtual network (a jumbo frame; DECISIONS.md D20).
pub const DEFAULT_MTU: usize = 9000;

/// A route pushed by the network's controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix.
    pub dest: IpAddr,
    /// Prefix length of `dest`.
    pub prefix_len: u8,
    /// Next hop, which must lie inside one of the stack's subnets; `None` means the prefix
    /// is on-link (neighbors are resolved directly).
    pub via: Option<IpAddr>,
}

/// Configuration of one stack (one joined network).
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Our Ethernet address on this network.
    pub mac: [u8; 6],
    /// IP MTU in bytes (the Ethernet payload size, without the 14-byte header). Default
    /// [`DEFAULT_MTU`]. TCP's MSS derives from it.
    pub mtu: usize,
    /// Our IPv4 addresses with the prefix length of their on-link subnet.
    pub ipv4: Vec<(Ipv4Addr, u8)>,
    /// Our IPv6 addresses with the prefix length of their on-link subnet.
    pub ipv6: Vec<(Ipv6Addr, u8)>,
    /// Extra routes (destinations beyond the on-link subnets).
    pub routes: Vec<Route>,
    /// Depth of each frame queue (to and from the link), in frames. Default 256: a full
    /// queue of 9 KiB frames is resident memory, and a deeper one moved no more data
    /// (docs/NETSTACK.md, "Frame queues").
    pub queue_frames: usize,
    /// Most TCP sockets one shard (one smoltcp interface) holds. smoltcp scans all sockets
    /// of an interface per packet and per poll, so small shards keep that work constant;
    /// default 8 (docs/NETSTACK.md has the measurements). At least 1.
    pub sockets_per_shard: usize,
}

impl StackConfig {
    /// A configuration with `mac`, the default MTU, no addresses and no routes.
    pub fn new(mac: [u8; 6]) -> Self {
        StackConfig {
            mac,
            mtu: DEFAULT_MTU,
            ipv4: Vec::new(),
            ipv6: Vec::new(),
            routes: Vec::new(),
            queue_frames: 256,
            sockets_per_shard: 8,
        }
    }
}

/// Does `prefix/len` contain `addr`? Families must match.
pub fn prefix_contains(prefix: IpAddr, len: u8, addr: IpAddr) -> bool {
    match (prefix, addr) {
        (IpAddr::V4(p), IpAddr::V4(a)) => {
            let len = u32::from(len.min(32));
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(p) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(p), IpAddr::V6(a)) => {
            let len = u32::from(len.min(128));
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(p) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// Immutable addressing derived from a [`StackConfig`].
#[derive(Debug, Clone)]
pub(crate) struct Net {
    pub(crate) mac: [u8; 6],
    pub(crate) mtu: usize,
    /// Our addresses with their on-link prefix lengths.
    pub(crate) addrs: Vec<(IpAddr, u8)>,
    pub(crate) routes: Vec<Route>,
    pub(crate) per_shard: usize,
}

impl Net {
    pub(crate) fn new(c: &StackConfig) -> Self {
        let mut addrs: Vec<(IpAddr, u8)> =
            c.ipv4.iter().map(|(a, l)| (IpAddr::V4(*a), *l)).collect();
        addrs.extend(c.ipv6.iter().map(|(a, l)| (IpAddr::V6(*a), *l)));
        Net {
            mac: c.mac,
            mtu: c.mtu.clamp(1280, 65535),
            addrs,
            routes: c.routes.clone(),
            per_shard: c.sockets_per_shard.max(1),
        }
    }

    pub(crate) fn is_local(&self, ip: IpAddr) -> bool {
        self.addrs.iter().any(|(a, _)| *a == ip)
    }

    /// Inside an on-link subnet or a route of this network.
    pub(crate) fn is_virtual(&self, ip: IpAddr) -> bool {
        self.addrs.iter().any(|(a, l)| prefix_contains(*a, *l, ip))
            || self
                .routes
                .iter()
                .any(|r| prefix_contains(r.dest, r.prefix_len, ip))
    }

    /// The neighbor to hand a packet for `dst` to: `dst` itself when on-link, the
    /// gateway of the longest matching route otherwise, `None` when unreachable.
    pub(crate) fn next_hop(&self, dst: IpAddr) -> Option<IpAddr> {
        if self.addrs.iter().any(|(a, l)| prefix_contains(*a, *l, dst)) {
            return Some(dst);
        }
        self.routes
            .iter()
            .filter(|r| prefix_contains(r.dest, r.prefix_len, dst))
            .max_by_key(|r| r.prefix_len)
            .map(|r| r.via.unwrap_or(dst))
    }

    /// Source address for talking to `dst`: an address whose subnet holds `dst` (or the
    /// next hop), else the first address of the family.
    pub(crate) fn source_for(&self, dst: IpAddr) -> Option<IpAddr> {
        let hop = self.next_hop(dst).unwrap_or(dst);
        self.addrs
            .iter()
            .find(|(a, l)| prefix_contains(*a, *l, hop))
            .or_else(|| {
                self.addrs
                    .iter()
                    .find(|(a, _)| a.is_ipv4() == dst.is_ipv4())
            })
            .map(|(a, _)| *a)
    }
}

/// `::ffff:a.b.c.d` becomes `a.b.c.d`; other addresses are returned as they are.
pub(crate) fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v) => match v.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_hop_prefers_on_link_then_longest_route() {
        let mut c = StackConfig::new([2, 0, 0, 0, 0, 1]);
        c.ipv4.push((Ipv4Addr::new(10, 1, 0, 5), 16));
        c.routes.push(Route {
            dest: "192.168.0.0".parse().unwrap(),
            prefix_len: 16,
            via: Some("10.1.0.1".parse().unwrap()),
        });
        c.routes.push(Route {
            dest: "192.168.7.0".parse().unwrap(),
            prefix_len: 24,
            via: Some("10.1.0.2".parse().unwrap()),
        });
        let n = Net::new(&c);
        assert_eq!(
            n.next_hop("10.1.200.1".parse().unwrap()),
            Some("10.1.200.1".parse().unwrap())
        );
        assert_eq!(
            n.next_hop("192.168.7.9".parse().unwrap()),
            Some("10.1.0.2".parse().unwrap())
        );
        assert_eq!(
            n.next_hop("192.168.8.9".parse().unwrap()),
            Some("10.1.0.1".parse().unwrap())
        );
        assert_eq!(n.next_hop("8.8.8.8".parse().unwrap()), None);
        assert!(n.is_virtual("192.168.8.9".parse().unwrap()));
        assert!(!n.is_virtual("8.8.8.8".parse().unwrap()));
        assert_eq!(
            n.source_for("192.168.8.9".parse().unwrap()),
            Some("10.1.0.5".parse().unwrap())
        );
        assert_eq!(
            unmap("::ffff:10.1.0.5".parse().unwrap()),
            "10.1.0.5".parse::<IpAddr>().unwrap()
        );
    }
}
