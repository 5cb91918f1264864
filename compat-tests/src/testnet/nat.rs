//! The three NAT behaviours a router can have, and the nftables ruleset that makes each.
//!
//! The vocabulary is RFC 4787 ("NAT Behavioral Requirements for Unicast UDP"): a NAT has a
//! *mapping* behaviour (does one inside socket keep one external port whatever it talks to?)
//! and a *filtering* behaviour (who may send to that external port?). The classic names used
//! by STUN (RFC 3489) and by hole-punching code map onto them as follows:
//!
//! | [`NatKind`]            | mapping (RFC 4787 §4.1)   | filtering (RFC 4787 §5)          |
//! |------------------------|---------------------------|----------------------------------|
//! | `FullCone`             | endpoint-independent      | endpoint-independent             |
//! | `PortRestrictedCone`   | endpoint-independent      | address-and-port-dependent       |
//! | `Symmetric`            | address-and-port-dependent| address-and-port-dependent       |
//!
//! All three are built on Linux connection tracking inside the router's namespace, in one
//! nftables table `ip testnet_nat` (nft(8)). Common to all:
//!
//! * a `forward` chain with policy `drop` that lets through packets of tracked connections
//!   (`ct state established,related`: replies, and ICMP errors about them) and anything
//!   leaving from the inside LAN to the upstream LAN. A new flow from upstream toward the
//!   inside is dropped unless the kind says otherwise, so the inside LAN is unreachable even
//!   from a public host that adds a route to it by hand.
//! * a `postrouting` chain of type `nat` at `srcnat` priority that rewrites the source of
//!   packets leaving through the upstream interface to the router's upstream address
//!   (`masquerade`). Conntrack keeps the binding for the life of the connection, and its
//!   reply tuple is what brings answers back in.
//!
//! What differs:
//!
//! * **PortRestrictedCone**: plain `masquerade`. Linux NAT keeps the inside source port when
//!   the resulting tuple (router address, port, destination) is still free, and because the
//!   destination is part of the tuple it stays free for every new destination: the same
//!   inside socket gets the same external port toward everyone (endpoint-independent
//!   mapping). Inbound packets are let in only when they match a conntrack entry, that is
//!   when they come from exactly the address and port the inside socket sent to
//!   (address-and-port-dependent filtering); anything else is addressed to the router
//!   itself, whose `input` chain drops new TCP/UDP flows from upstream. That drop matters:
//!   a packet delivered locally (even to no socket) leaves a confirmed conntrack entry
//!   (peer → router:port), and when the inside socket later sends to that peer from that
//!   port, masquerade finds the tuple taken and picks another external port, so a
//!   hole-punching probe that arrived first would make the mapping endpoint-dependent
//!   (test `an_unsolicited_packet_does_not_move_the_mapping`). Known limit, shared by every
//!   Linux masquerade: if two inside hosts use the same source port toward the same
//!   destination, the second is moved to another port for that destination only.
//! * **Symmetric**: `masquerade fully-random` (NF_NAT_RANGE_PROTO_RANDOM_FULLY): every new
//!   connection, and so every new destination address or port, draws its external port at
//!   random, so a peer learns nothing about the port used toward anyone else. Two
//!   destinations get equal ports only by chance (about 1 in 64 000). Filtering is by
//!   conntrack, as above.
//! * **FullCone**: masquerade keeps the port as for port-restricted, and two more chains
//!   remember and honour the mapping:
//!   - `record_mapping` (filter, postrouting, priority `srcnat + 10`, so after the NAT has
//!     rewritten the packet): for every TCP/UDP packet leaving upstream in the *original*
//!     direction of its connection (so started from inside), store in the dynamic map
//!     `fullcone` the key (protocol, external port) → (inside address, inside port), taken
//!     from `th sport` and the conntrack original tuple. Entries expire 5 minutes after the
//!     last packet, like a real NAT's mapping timer.
//!   - `prerouting` (nat, `dstnat` priority): a *new* flow arriving from upstream to the
//!     router's address is destination-NATed through that map to the inside socket, from any
//!     remote address and port (endpoint-independent filtering); `forward` accepts it with
//!     `ct status dnat`. Replies return through the same conntrack entry. Flows started from
//!     outside are not recorded (their packets leave in the reply direction), so they
//!     cannot overwrite a mapping.
//!
//! Only IPv4 is translated. A NAT router does not forward IPv6 at all (forwarding stays off
//! in its namespace), so hosts behind it have IPv6 on their own LAN only.

use std::net::Ipv4Addr;

/// How a NAT router maps and filters; see the module documentation for the exact rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatKind {
    /// Endpoint-independent mapping and filtering: once an inside socket has sent anything
    /// out, anyone may send to its external address and port.
    FullCone,
    /// Endpoint-independent mapping, address-and-port-dependent filtering: one external
    /// port per inside socket, open only to the endpoints it has sent to.
    PortRestrictedCone,
    /// A new random external port for every destination address and port, open only to
    /// that destination.
    Symmetric,
}

/// The nftables script (for `nft -f -`) that makes a router of kind `kind` between the
/// interface `upstream` (whose address is `public`) and the interface `inside`.
pub(crate) fn ruleset(kind: NatKind, upstream: &str, inside: &str, public: Ipv4Addr) -> String {
    let masquerade = match kind {
        NatKind::Symmetric => "masquerade fully-random",
        NatKind::PortRestrictedCone | NatKind::FullCone => "masquerade",
    };
    let mut s = String::new();
    // `add` then `delete` makes the script idempotent: the table is replaced as a whole.
    s.push_str("add table ip testnet_nat\ndelete table ip testnet_nat\n");
    s.push_str("table ip testnet_nat {\n");
    s.push_str("  chain forward {\n");
    s.push_str("    type filter hook forward priority filter; policy drop;\n");
    s.push_str("    ct state established,related accept\n");
    s.push_str(&format!(
        "    iifname \"{inside}\" oifname \"{upstream}\" accept\n"
    ));
    if kind == NatKind::FullCone {
        s.push_str(&format!(
            "    iifname \"{upstream}\" oifname \"{inside}\" ct status dnat accept\n"
        ));
    }
    s.push_str("  }\n");
    // Unsolicited TCP/UDP from upstream to the router itself is dropped before conntrack
    // confirms it, as home routers' WAN firewalls do. Without this a peer's hole-punching
    // probe that arrives first leaves an entry whose tuple then collides with the inside
    // socket's own packet to that peer, and masquerade moves that packet to another port:
    // the mapping would turn endpoint-dependent (see the module documentation).
    s.push_str("  chain input {\n");
    s.push_str("    type filter hook input priority filter; policy accept;\n");
    s.push_str(&format!(
        "    iifname \"{upstream}\" meta l4proto {{ tcp, udp }} ct state new drop\n"
    ));
    s.push_str("  }\n");
    s.push_str("  chain postrouting {\n");
    s.push_str("    type nat hook postrouting priority srcnat; policy accept;\n");
    s.push_str(&format!("    oifname \"{upstream}\" {masquerade}\n"));
    s.push_str("  }\n");
    if kind == NatKind::FullCone {
        s.push_str("  map fullcone {\n");
        s.push_str("    type inet_proto . inet_service : ipv4_addr . inet_service\n");
        s.push_str("    flags dynamic,timeout\n");
        s.push_str("    timeout 5m\n");
        s.push_str("  }\n");
        s.push_str("  chain record_mapping {\n");
        s.push_str("    type filter hook postrouting priority srcnat + 10; policy accept;\n");
        s.push_str(&format!(
            "    oifname \"{upstream}\" ct direction original meta l4proto {{ tcp, udp }} \
             update @fullcone {{ meta l4proto . th sport : ct original ip saddr . ct original proto-src }}\n"
        ));
        s.push_str("  }\n");
        s.push_str("  chain prerouting {\n");
        s.push_str("    type nat hook prerouting priority dstnat; policy accept;\n");
        s.push_str(&format!(
            "    iifname \"{upstream}\" ip daddr {public} meta l4proto {{ tcp, udp }} \
             dnat ip to meta l4proto . th dport map @fullcone\n"
        ));
        s.push_str("  }\n");
    }
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    #[test]
    fn port_restricted_is_plain_masquerade_without_inbound_rules() {
        let s = ruleset(NatKind::PortRestrictedCone, "public", "nat-in", PUBLIC);
        assert!(s.contains("oifname \"public\" masquerade\n"));
        assert!(!s.contains("fully-random"));
        assert!(!s.contains("dnat"));
        assert!(s.contains("policy drop;"));
        assert!(s.contains("iifname \"public\" meta l4proto { tcp, udp } ct state new drop"));
    }

    #[test]
    fn symmetric_randomizes_ports() {
        let s = ruleset(NatKind::Symmetric, "public", "nat-in", PUBLIC);
        assert!(s.contains("oifname \"public\" masquerade fully-random\n"));
        assert!(!s.contains("dnat"));
    }

    #[test]
    fn full_cone_records_and_honours_mappings() {
        let s = ruleset(NatKind::FullCone, "public", "nat-in", PUBLIC);
        assert!(s.contains("update @fullcone"));
        assert!(s.contains("ct direction original"));
        assert!(s.contains("ip daddr 198.18.0.2"));
        assert!(s.contains("iifname \"public\" oifname \"nat-in\" ct status dnat accept"));
    }
}
