//! Entry points for fuzzing every decoder of bytes that come from the network or from
//! files. Each function parses its input and, when parsing succeeds, emits the result
//! again and checks that the bytes round-trip; a panic is a bug.
//!
//! The `fuzz/` crate (cargo-fuzz, libFuzzer) has one target per function here, and the
//! crate's own tests feed them random and mutated inputs, so they run on stable Rust too.

use super::cookie::{CookieInitPacket, CookieInitRepr, CookieReplyPacket, CookieReplyRepr};
use super::credential::{Certificate, Revocation, SignedConfig};
use super::data::{DataPacket, DataRepr};
use super::fragment::{FragmentPacket, FragmentRepr};
use super::handshake::{InitPacket, InitRepr, ResponsePacket, ResponseRepr};
use super::header::{self, HEADER_LEN};
use super::message::Message;
use crate::identity::{Identity, SecretIdentity};
use crate::vl2::{Mac, NetworkId};

/// The VL1 header.
pub fn header(data: &[u8]) {
    if let Ok(p) = header::Packet::new_checked(data) {
        let _ = (p.hops(), p.flags(), p.body().len());
        if let Ok(r) = header::Repr::parse(&p) {
            let mut out = Vec::new();
            r.emit_vec(&mut out);
            // Every byte, the flags too, is kept.
            assert_eq!(out, data[..HEADER_LEN], "header does not round-trip");
        }
    }
}

/// A handshake initiation body.
pub fn handshake_init(data: &[u8]) {
    if let Ok(p) = InitPacket::new_checked(data) {
        let r = InitRepr::parse(&p).expect("checked init parses");
        let mut out = Vec::new();
        r.emit(&mut out);
        assert_eq!(out, data, "init does not round-trip");
    }
}

/// A handshake response body.
pub fn handshake_response(data: &[u8]) {
    if let Ok(p) = ResponsePacket::new_checked(data) {
        let r = ResponseRepr::parse(&p).expect("checked response parses");
        let mut out = Vec::new();
        r.emit(&mut out);
        assert_eq!(out, data, "response does not round-trip");
    }
}

/// The bodies of the cookie exchange: the same bytes as a COOKIE_REPLY and as a
/// HANDSHAKE_INIT_COOKIE.
pub fn cookie(data: &[u8]) {
    if let Ok(p) = CookieReplyPacket::new_checked(data) {
        let r = CookieReplyRepr::parse(&p).expect("checked cookie reply parses");
        let mut out = Vec::new();
        r.emit(&mut out);
        assert_eq!(out, data, "cookie reply does not round-trip");
    }
    if let Ok(p) = CookieInitPacket::new_checked(data) {
        let r = CookieInitRepr::parse(&p).expect("checked init with cookie parses");
        let mut out = Vec::new();
        r.emit(&mut out);
        assert_eq!(out, data, "init with cookie does not round-trip");
    }
}

/// A transport body.
pub fn data(data: &[u8]) {
    if let Ok(p) = DataPacket::new_checked(data) {
        let r = DataRepr::parse(&p).expect("checked data parses");
        let mut out = Vec::new();
        r.emit(&mut out);
        assert_eq!(out, data, "data does not round-trip");
    }
}

/// A fragment body.
pub fn fragment(data: &[u8]) {
    if let Ok(p) = FragmentPacket::new_checked(data) {
        let r = FragmentRepr::parse(&p).expect("checked fragment parses");
        let mut out = Vec::new();
        r.emit(&mut out);
        assert_eq!(out, data, "fragment does not round-trip");
    }
}

/// A plaintext record.
pub fn message(data: &[u8]) {
    if let Ok(m) = Message::parse(data) {
        assert_eq!(m.to_vec(), data, "message does not round-trip");
    }
}

/// The binary identity (as carried in WHOIS_OK and handshake payloads).
pub fn identity_bytes(data: &[u8]) {
    if let Ok(id) = Identity::from_bytes(data) {
        assert_eq!(&id.to_bytes()[..], data, "identity does not round-trip");
    }
}

/// The text forms read from files and command lines: identities, network IDs, MACs.
pub fn text(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = s.parse::<Identity>() {
        assert_eq!(id.to_string().parse::<Identity>().ok(), Some(id));
    }
    if let Ok(id) = s.parse::<SecretIdentity>() {
        let again: SecretIdentity = id.to_secret_string().parse().expect("round-trip");
        assert_eq!(again.public(), id.public());
    }
    if let Ok(n) = s.parse::<NetworkId>() {
        assert_eq!(n.to_string().parse::<NetworkId>().ok(), Some(n));
    }
    if let Ok(m) = s.parse::<Mac>() {
        assert_eq!(m.to_string().parse::<Mac>().ok(), Some(m));
    }
}

/// A signed network configuration.
pub fn config(data: &[u8]) {
    if let Ok(c) = SignedConfig::parse(data) {
        assert_eq!(c.to_vec(), data, "config does not round-trip");
    }
}

/// A membership certificate and a revocation.
pub fn certificate(data: &[u8]) {
    if let Ok(c) = Certificate::parse(data) {
        let mut out = Vec::new();
        c.emit(&mut out);
        assert_eq!(out, data, "certificate does not round-trip");
    }
    if let Ok(r) = Revocation::parse(data) {
        let mut out = Vec::new();
        r.emit(&mut out);
        assert_eq!(out, data, "revocation does not round-trip");
    }
}

/// The whole receive path of a node and of a root: one datagram from an arbitrary sender,
/// then a timer tick. Half of the inputs get a valid header addressed to the victim so the
/// body decoders, fragment reassembly and session lookup behind it are reached.
pub fn node_datagram(data: &[u8]) {
    use std::sync::{Mutex, OnceLock};
    use std::time::{Duration, Instant};

    use crate::node::{Node, NodeConfig, Root, RootSpec, Timing};

    struct Victims {
        node: Node,
        root: Root,
        node_addr: crate::Address,
        root_addr: crate::Address,
        now: Instant,
    }
    static VICTIMS: OnceLock<Mutex<Victims>> = OnceLock::new();
    let victims = VICTIMS.get_or_init(|| {
        let root_id = SecretIdentity::generate_from_seed([1; 32]);
        let node_id = SecretIdentity::generate_from_seed([2; 32]);
        let now = Instant::now();
        let spec = RootSpec {
            identity: root_id.public().clone(),
            endpoints: vec!["192.0.2.1:9993".parse().expect("literal")],
        };
        Mutex::new(Victims {
            node_addr: node_id.address(),
            root_addr: root_id.address(),
            node: Node::new(NodeConfig::new(node_id, vec![spec], [3; 32]), now),
            root: Root::new(root_id, [4; 32], Timing::default(), now),
            now,
        })
    });
    let mut v = victims.lock().unwrap_or_else(|e| e.into_inner());
    let mut input = data.to_vec();
    if input.first().is_some_and(|b| b & 1 == 1) && input.len() >= HEADER_LEN {
        let (dst, src) = if input[1] & 1 == 1 {
            (v.node_addr, v.root_addr)
        } else {
            (v.root_addr, v.node_addr)
        };
        input[0] = super::PROTOCOL_VERSION;
        input[1] = 1 + input[1] % 7;
        input[4..9].copy_from_slice(&dst.to_bytes());
        input[9..14].copy_from_slice(&src.to_bytes());
    }
    let from = "192.0.2.2:9993".parse().expect("literal");
    v.now += Duration::from_millis(10);
    let now = v.now;
    v.node.handle_datagram(now, from, &input);
    v.root.handle_datagram(now, from, &input);
    v.node.handle_timeout(now);
    v.root.handle_timeout(now);
    while v.node.poll_transmit().is_some() {}
    while v.root.poll_transmit().is_some() {}
    while v.node.poll_event().is_some() {}
}

/// A stored controller record (a network's settings, a member): what a controller reads
/// back from its database ([`crate::controller::record`]). A record that decodes encodes
/// to one that decodes to the same value.
pub fn controller_record(data: &[u8]) {
    use crate::controller::record;
    if let Ok(s) = record::decode_network(data) {
        let again = record::decode_network(record::encode_network(&s).as_bytes());
        assert_eq!(again.as_ref(), Ok(&s), "network record does not round-trip");
    }
    if let Ok(m) = record::decode_member(data) {
        let again = record::decode_member(record::encode_member(&m).as_bytes());
        assert_eq!(again.as_ref(), Ok(&m), "member record does not round-trip");
    }
}
