//! Link impairments: loss, delay, jitter and reordering on one host's link to a LAN.
//!
//! The first choice is the kernel's network emulator qdisc, `tc qdisc replace dev IF root
//! netem ...` (tc-netem(8)). A qdisc shapes what an interface *sends*, so the direction
//! "from the host" is a netem qdisc on the host's end of the veth pair, and "to the host" is
//! one on the switch's end (the bridge port), which sends toward the host.
//!
//! Some kernels are built without `sch_netem` (CONFIG_NET_SCH_NETEM unset; `tc` then says
//! "Specified qdisc kind is unknown"). There:
//!
//! * loss alone is made with nftables in the host's namespace: a `netdev` table with an
//!   `egress` and/or `ingress` chain bound to the interface drops IPv4 and IPv6 packets with
//!   `numgen random mod 10000 < N` (N in hundredths of a percent), which is what netem's
//!   independent loss does. Unlike netem it spares ARP, so address resolution is not part
//!   of what is lost.
//! * delay, jitter and reordering need a queue that holds packets back, which nftables does
//!   not have; the harness then reroutes the link through a user-space relay thread that
//!   applies netem's rules itself (see the `relay` module). It is slower than the kernel
//!   (every frame crosses into the test process), which suits functional tests, not
//!   throughput benchmarks.

use super::error::TestNetError;

/// What to do to packets on one host's link to a LAN. All zero means "no impairment".
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Netem {
    /// Percentage of packets dropped at random, 0 to 100.
    pub loss_pct: f64,
    /// Added one-way delay in milliseconds.
    pub delay_ms: u32,
    /// Random variation of the delay in milliseconds (needs `delay_ms`).
    pub jitter_ms: u32,
    /// Percentage of packets sent at once, ahead of the delayed ones (needs `delay_ms`).
    pub reorder_pct: f64,
    /// Which way the impairment applies.
    pub direction: Direction,
}

/// Which packets of a link an impairment applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// Packets the host sends onto the LAN.
    #[default]
    FromHost,
    /// Packets the LAN delivers to the host.
    ToHost,
    /// Both ways (each direction gets the full impairment).
    Both,
}

impl Direction {
    pub(crate) fn includes_from_host(self) -> bool {
        matches!(self, Direction::FromHost | Direction::Both)
    }

    pub(crate) fn includes_to_host(self) -> bool {
        matches!(self, Direction::ToHost | Direction::Both)
    }
}

/// How an impairment was put in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Impairment {
    /// With the kernel's `netem` qdisc.
    Netem,
    /// Loss only, with nftables, because this kernel has no `netem` qdisc.
    NftablesLoss,
    /// With a user-space relay thread of the test process, because this kernel has no
    /// `netem` qdisc and a queue was needed (delay, jitter or reordering).
    Relay,
    /// Every impairment was removed (an all-zero [`Netem`]).
    Cleared,
}

impl Netem {
    /// Loss of `pct` percent from the host, nothing else.
    pub fn loss(pct: f64) -> Self {
        Netem {
            loss_pct: pct,
            ..Netem::default()
        }
    }

    /// Whether this asks for nothing at all.
    pub fn is_none(&self) -> bool {
        self.loss_pct == 0.0 && self.delay_ms == 0 && self.jitter_ms == 0 && self.reorder_pct == 0.0
    }

    /// Whether this needs a queue (delay, jitter, reordering), which only netem has.
    pub fn needs_queue(&self) -> bool {
        self.delay_ms != 0 || self.jitter_ms != 0 || self.reorder_pct != 0.0
    }

    pub(crate) fn validate(&self) -> Result<(), TestNetError> {
        let bad = |reason: &str| TestNetError::InvalidImpairment {
            netem: format!("{self:?}"),
            reason: reason.to_owned(),
        };
        if !(0.0..=100.0).contains(&self.loss_pct) || !(0.0..=100.0).contains(&self.reorder_pct) {
            return Err(bad("percentages must be between 0 and 100"));
        }
        if (self.jitter_ms != 0 || self.reorder_pct != 0.0) && self.delay_ms == 0 {
            return Err(bad(
                "jitter and reordering need a delay (netem holds packets back to reorder them)",
            ));
        }
        Ok(())
    }

    /// The arguments after `netem` for tc-netem(8).
    pub(crate) fn netem_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.delay_ms != 0 {
            args.extend(["delay".to_owned(), format!("{}ms", self.delay_ms)]);
            if self.jitter_ms != 0 {
                args.push(format!("{}ms", self.jitter_ms));
            }
        }
        if self.loss_pct != 0.0 {
            args.extend(["loss".to_owned(), format!("{}%", self.loss_pct)]);
        }
        if self.reorder_pct != 0.0 {
            args.extend(["reorder".to_owned(), format!("{}%", self.reorder_pct)]);
        }
        args
    }
}

/// The name of the nftables table that carries the loss fallback for interface `ifname`.
pub(crate) fn nft_table(ifname: &str) -> String {
    format!("impair_{}", ifname.replace('-', "_"))
}

/// An nftables script that replaces the loss fallback of `ifname` (an all-zero `netem`
/// just removes it).
pub(crate) fn nft_loss_script(ifname: &str, netem: &Netem) -> String {
    let table = nft_table(ifname);
    let mut s = format!("add table netdev {table}\ndelete table netdev {table}\n");
    if netem.loss_pct == 0.0 {
        return s;
    }
    // Hundredths of a percent: 10% is "< 1000" out of 10000.
    let threshold = (netem.loss_pct * 100.0).round() as u32;
    // numgen yields 0..=9999, so "< 10000" does not parse: 100% is an unconditional drop.
    let chance = if threshold >= 10_000 {
        String::new()
    } else {
        format!("numgen random mod 10000 < {threshold} ")
    };
    s.push_str(&format!("table netdev {table} {{\n"));
    for (hook, wanted) in [
        ("egress", netem.direction.includes_from_host()),
        ("ingress", netem.direction.includes_to_host()),
    ] {
        if wanted {
            s.push_str(&format!(
                "  chain {hook} {{\n    type filter hook {hook} device \"{ifname}\" priority filter; policy accept;\n    \
                 meta protocol {{ ip, ip6 }} {chance}drop\n  }}\n"
            ));
        }
    }
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netem_arguments() {
        let n = Netem {
            loss_pct: 2.5,
            delay_ms: 20,
            jitter_ms: 5,
            reorder_pct: 10.0,
            direction: Direction::Both,
        };
        n.validate().unwrap();
        assert_eq!(
            n.netem_args(),
            ["delay", "20ms", "5ms", "loss", "2.5%", "reorder", "10%"]
        );
        assert!(Netem::default().is_none());
        assert!(!Netem::loss(1.0).needs_queue());
    }

    #[test]
    fn refuses_nonsense() {
        assert!(Netem::loss(101.0).validate().is_err());
        assert!(Netem::loss(-1.0).validate().is_err());
        let jitter_without_delay = Netem {
            jitter_ms: 3,
            ..Netem::default()
        };
        assert!(jitter_without_delay.validate().is_err());
    }

    #[test]
    fn nft_fallback_per_direction() {
        let s = nft_loss_script("nat-a-in", &Netem::loss(10.0));
        assert!(s.contains("table netdev impair_nat_a_in {"));
        assert!(s.contains("hook egress device \"nat-a-in\""));
        assert!(!s.contains("hook ingress"));
        assert!(s.contains("numgen random mod 10000 < 1000 drop"));
        let both = Netem {
            direction: Direction::Both,
            ..Netem::loss(0.5)
        };
        let s = nft_loss_script("public", &both);
        assert!(s.contains("hook ingress") && s.contains("hook egress"));
        assert!(s.contains("< 50 drop"));
        let all = nft_loss_script("public", &Netem::loss(100.0));
        assert!(all.contains("meta protocol { ip, ip6 } drop"));
        let cleared = nft_loss_script("public", &Netem::default());
        assert!(!cleared.contains('{'));
    }
}
