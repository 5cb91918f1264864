//! Names of the virtual network's members, answered inside the wrapped program.
//!
//! A program resolves names by sending DNS queries to the nameservers of
//! `/etc/resolv.conf` (glibc, musl and Go's own resolver all do). Datagrams to one of
//! those addresses on port 53 are not sent anywhere: the [`Resolver`] answers them.
//!
//! - Names under `.zt` belong to the virtual networks: the [`Directory`] (given by whoever
//!   knows the networks' addressing, `ztrun`) answers them, authoritatively; a name it
//!   does not know is `NXDOMAIN`.
//! - Any other name goes to the host's nameserver when fall-through is on (the query is
//!   forwarded unchanged and the answer passed back); without fall-through the program
//!   has no host network, and the answer is `NXDOMAIN` at once rather than a timeout.
//!
//! The query comes from the program, so it is untrusted: [`Resolver::answer`] never
//! panics on any input (it has a fuzz target), answers what it cannot parse with
//! `FORMERR` when it has a header to answer, and drops the rest.
use std::net::{IpAddr, SocketAddr};

use simple_dns::rdata::{RData, A, AAAA};
use simple_dns::{Packet, PacketFlag, ResourceRecord, CLASS, OPCODE, QCLASS, QTYPE, RCODE, TYPE};

/// The zone answered locally.
pub const ZONE: &str = "zt";

/// Time to live of the records we answer, in seconds: addresses on the virtual network
/// are stable while a member exists.
const TTL: u32 = 60;

/// Size of a DNS header.
const HEADER: usize = 12;

/// What the virtual networks know about a name under [`ZONE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The name exists, with these addresses (either family may be missing).
    Found(Vec<IpAddr>),
    /// No such name.
    Unknown,
}

/// The names of the virtual networks' members.
pub trait Directory: Send + Sync + 'static {
    /// Look `name` up: lower case, without the trailing dot, ending in `.zt`.
    fn lookup(&self, name: &str) -> Lookup;
}

/// What to do with a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Send this datagram back to the program.
    Reply(Vec<u8>),
    /// Not ours: the host's nameserver should answer it (when fall-through is on).
    Forward,
    /// Not a query we can answer at all (too short for a header, or a response): drop it.
    Drop,
}

/// The resolver behind the nameserver addresses.
pub struct Resolver {
    nameservers: Vec<SocketAddr>,
    directory: Box<dyn Directory>,
    forward: bool,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("nameservers", &self.nameservers)
            .field("forward", &self.forward)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// Answer queries sent to `nameservers` from `directory`; forward other names to the
    /// nameserver they were sent to when `forward` (fall-through) is on.
    pub fn new(nameservers: Vec<SocketAddr>, directory: impl Directory, forward: bool) -> Self {
        Self {
            nameservers,
            directory: Box::new(directory),
            forward,
        }
    }

    /// The addresses whose port-53 datagrams are ours.
    pub fn nameservers(&self) -> &[SocketAddr] {
        &self.nameservers
    }

    /// Does a datagram to `dest` reach this resolver?
    pub fn serves(&self, dest: SocketAddr) -> bool {
        let dest = SocketAddr::new(crate::backend::canonical(dest.ip()), dest.port());
        self.nameservers.contains(&dest)
    }

    /// Are names outside [`ZONE`] forwarded to the host's nameserver?
    pub fn forwards(&self) -> bool {
        self.forward
    }

    /// Answer one query datagram.
    pub fn answer(&self, query: &[u8]) -> Answer {
        if query.len() < HEADER || query[2] & 0x80 != 0 {
            return Answer::Drop;
        }
        let id = u16::from_be_bytes([query[0], query[1]]);
        let Ok(packet) = Packet::parse(query) else {
            return if self.forward {
                Answer::Forward
            } else {
                error_reply(query, RCODE::FormatError)
            };
        };
        if packet.opcode() != OPCODE::StandardQuery {
            return error_reply(query, RCODE::NotImplemented);
        }
        let [question] = packet.questions.as_slice() else {
            return error_reply(query, RCODE::FormatError);
        };
        let name = question.qname.to_string().to_ascii_lowercase();
        let name = name.trim_end_matches('.');
        let ours = name == ZONE || name.ends_with(&format!(".{ZONE}"));
        if !ours {
            return if self.forward {
                Answer::Forward
            } else {
                error_reply(query, RCODE::NameError)
            };
        }
        let mut reply = Packet::new_reply(id);
        reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
        if packet.has_flags(PacketFlag::RECURSION_DESIRED) {
            reply.set_flags(PacketFlag::RECURSION_DESIRED | PacketFlag::RECURSION_AVAILABLE);
        }
        reply.questions.push(question.clone());
        let class_in = matches!(question.qclass, QCLASS::CLASS(CLASS::IN) | QCLASS::ANY);
        match self.directory.lookup(name) {
            Lookup::Unknown => *reply.rcode_mut() = RCODE::NameError,
            Lookup::Found(_) if !class_in => {}
            Lookup::Found(ips) => {
                let (want_a, want_aaaa) = match question.qtype {
                    QTYPE::TYPE(TYPE::A) => (true, false),
                    QTYPE::TYPE(TYPE::AAAA) => (false, true),
                    QTYPE::ANY => (true, true),
                    _ => (false, false),
                };
                for ip in ips {
                    let rdata = match ip {
                        IpAddr::V4(a) if want_a => RData::A(A {
                            address: u32::from(a),
                        }),
                        IpAddr::V6(a) if want_aaaa => RData::AAAA(AAAA {
                            address: u128::from(a),
                        }),
                        _ => continue,
                    };
                    reply.answers.push(ResourceRecord::new(
                        question.qname.clone(),
                        CLASS::IN,
                        TTL,
                        rdata,
                    ));
                }
            }
        }
        match reply.build_bytes_vec_compressed() {
            Ok(bytes) => Answer::Reply(bytes),
            Err(_) => error_reply(query, RCODE::ServerFailure),
        }
    }
}

/// A reply with `rcode` and no records, echoing the query's header and, when it has one,
/// its question (resolvers match answers to questions).
fn error_reply(query: &[u8], rcode: RCODE) -> Answer {
    let mut out = query[..HEADER].to_vec();
    // QR, the opcode kept, AA for our zone's answers, RD echoed, RA.
    out[2] = 0x80 | (query[2] & 0x79) | 0x04;
    out[3] = 0x80 | (rcode as u8 & 0x0f);
    let qdcount = u16::from_be_bytes([query[4], query[5]]);
    let question = (qdcount == 1).then(|| question_end(query)).flatten();
    out[4..12].copy_from_slice(&[0, u8::from(question.is_some()), 0, 0, 0, 0, 0, 0]);
    if let Some(end) = question {
        out.extend_from_slice(&query[HEADER..end]);
    }
    Answer::Reply(out)
}

/// Where the first question (an uncompressed name, type and class) ends, if it is whole.
fn question_end(query: &[u8]) -> Option<usize> {
    let mut at = HEADER;
    loop {
        let len = usize::from(*query.get(at)?);
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        at += 1 + len;
    }
    let end = at + 1 + 4;
    (end <= query.len()).then_some(end)
}

/// The nameservers a resolver library would use, from resolv.conf text: every
/// `nameserver` line (an IPv4 or IPv6 address, a zone index dropped), port 53; when there
/// is none, glibc's default, the local host.
pub fn nameservers_from(resolv_conf: &str) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let addr = words.next()?;
            let addr = addr.split('%').next()?;
            addr.parse::<IpAddr>().ok()
        })
        .map(|ip| SocketAddr::new(crate::backend::canonical(ip), 53))
        .collect();
    if out.is_empty() {
        out.push(SocketAddr::from(([127, 0, 0, 1], 53)));
    }
    out.dedup();
    out
}

/// [`nameservers_from`] applied to the system's `/etc/resolv.conf` (missing or unreadable:
/// the default).
pub fn system_nameservers() -> Vec<SocketAddr> {
    nameservers_from(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
}

/// Fuzz entry point: any bytes as a query to a resolver with and without forwarding.
#[doc(hidden)]
pub fn fuzz_answer(data: &[u8]) {
    struct Everything;
    impl Directory for Everything {
        fn lookup(&self, name: &str) -> Lookup {
            if name.len() % 2 == 0 {
                Lookup::Found(vec![
                    IpAddr::from([10, 0, 0, 1]),
                    IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, 1]),
                ])
            } else {
                Lookup::Unknown
            }
        }
    }
    for forward in [false, true] {
        let r = Resolver::new(Vec::new(), Everything, forward);
        if let Answer::Reply(bytes) = r.answer(data) {
            assert!(bytes.len() >= HEADER, "a reply has a header");
            assert_eq!(bytes[..2], data[..2], "a reply keeps the query's id");
            assert!(bytes[2] & 0x80 != 0, "a reply is a response");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::Question;
    use std::net::{Ipv4Addr, Ipv6Addr};

    struct Members;
    impl Directory for Members {
        fn lookup(&self, name: &str) -> Lookup {
            match name {
                "89e92ceba1.ff00000000001234.zt" => Lookup::Found(vec![
                    Ipv4Addr::new(100, 64, 1, 2).into(),
                    "fdff::1".parse::<Ipv6Addr>().unwrap().into(),
                ]),
                "v6only.zt" => Lookup::Found(vec!["fdff::2".parse::<Ipv6Addr>().unwrap().into()]),
                _ => Lookup::Unknown,
            }
        }
    }

    fn query(id: u16, name: &str, qtype: TYPE) -> Vec<u8> {
        let mut p = Packet::new_query(id);
        p.set_flags(PacketFlag::RECURSION_DESIRED);
        p.questions.push(Question::new(
            simple_dns::Name::new_unchecked(name),
            qtype.into(),
            CLASS::IN.into(),
            false,
        ));
        p.build_bytes_vec().unwrap()
    }

    fn reply(r: &Resolver, q: &[u8]) -> Vec<u8> {
        match r.answer(q) {
            Answer::Reply(b) => b,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn addresses(p: &Packet<'_>) -> Vec<IpAddr> {
        p.answers
            .iter()
            .map(|rr| match &rr.rdata {
                RData::A(a) => Ipv4Addr::from(a.address).into(),
                RData::AAAA(a) => Ipv6Addr::from(a.address).into(),
                other => panic!("unexpected record {other:?}"),
            })
            .collect()
    }

    #[test]
    fn member_names_get_their_addresses_per_family() {
        let r = Resolver::new(Vec::new(), Members, false);
        let a_bytes = reply(&r, &query(7, "89E92CEBA1.ff00000000001234.zt", TYPE::A));
        let a = Packet::parse(&a_bytes).unwrap();
        assert_eq!(a.id(), 7);
        assert_eq!(a.rcode(), RCODE::NoError);
        assert!(a.has_flags(PacketFlag::AUTHORITATIVE_ANSWER | PacketFlag::RESPONSE));
        assert_eq!(a.questions.len(), 1, "the question is echoed");
        assert_eq!(addresses(&a), vec![IpAddr::from([100, 64, 1, 2])]);
        let aaaa_bytes = reply(&r, &query(8, "89e92ceba1.ff00000000001234.zt.", TYPE::AAAA));
        let aaaa = Packet::parse(&aaaa_bytes).unwrap();
        assert_eq!(addresses(&aaaa), vec!["fdff::1".parse::<IpAddr>().unwrap()]);
        // A name with only IPv6: an A query is NODATA (no error, no records).
        let none_bytes = reply(&r, &query(9, "v6only.zt", TYPE::A));
        let none = Packet::parse(&none_bytes).unwrap();
        assert_eq!(none.rcode(), RCODE::NoError);
        assert!(none.answers.is_empty());
        let mx_bytes = reply(&r, &query(10, "v6only.zt", TYPE::MX));
        let mx = Packet::parse(&mx_bytes).unwrap();
        assert_eq!(mx.rcode(), RCODE::NoError);
        assert!(mx.answers.is_empty());
    }

    #[test]
    fn unknown_names_in_the_zone_do_not_exist() {
        let r = Resolver::new(Vec::new(), Members, true);
        let p_bytes = reply(&r, &query(3, "nobody.ff00000000001234.zt", TYPE::A));
        let p = Packet::parse(&p_bytes).unwrap();
        assert_eq!(p.rcode(), RCODE::NameError);
        assert!(p.answers.is_empty());
    }

    #[test]
    fn other_names_are_forwarded_only_with_fallthrough() {
        let q = query(4, "example.com", TYPE::A);
        let open = Resolver::new(Vec::new(), Members, true);
        assert_eq!(open.answer(&q), Answer::Forward);
        let closed = Resolver::new(Vec::new(), Members, false);
        let p_bytes = reply(&closed, &q);
        let p = Packet::parse(&p_bytes).unwrap();
        assert_eq!(p.rcode(), RCODE::NameError);
        assert_eq!(p.id(), 4);
        assert_eq!(p.questions[0].qname.to_string(), "example.com");
    }

    #[test]
    fn garbage_is_dropped_or_a_format_error() {
        let r = Resolver::new(Vec::new(), Members, false);
        assert_eq!(r.answer(b"short"), Answer::Drop);
        // A response is never answered (no loops between resolvers).
        let mut resp = query(5, "a.zt", TYPE::A);
        resp[2] |= 0x80;
        assert_eq!(r.answer(&resp), Answer::Drop);
        // A header announcing a question that is not there.
        let mut bad = query(6, "a.zt", TYPE::A);
        bad.truncate(HEADER + 3);
        let Answer::Reply(b) = r.answer(&bad) else {
            panic!("expected FORMERR")
        };
        assert_eq!(&b[..2], &6u16.to_be_bytes());
        assert_eq!(b[3] & 0x0f, RCODE::FormatError as u8);
        assert_eq!(b.len(), HEADER, "no partial question is echoed");
    }

    #[test]
    fn fuzz_entry_point_survives_mutations() {
        let base = query(1, "89e92ceba1.ff00000000001234.zt", TYPE::AAAA);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut q = base.clone();
            let flips = (x % 4) as usize + 1;
            for k in 0..flips {
                let at = ((x >> (8 * k)) as usize) % q.len();
                q[at] ^= (x >> (16 + k)) as u8;
            }
            q.truncate((x >> 40) as usize % (q.len() + 1));
            fuzz_answer(&q);
        }
    }

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# comment\nsearch example.com\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\n\
                    nameserver ::ffff:192.0.2.1\nnameserver bogus\noptions edns0\n";
        assert_eq!(
            nameservers_from(text),
            vec![
                "10.0.0.2:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap(),
                "192.0.2.1:53".parse().unwrap(),
            ]
        );
        assert_eq!(
            nameservers_from("search x\n"),
            vec!["127.0.0.1:53".parse().unwrap()]
        );
    }
}
