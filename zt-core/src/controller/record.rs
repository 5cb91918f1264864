//! The stored form of one controller record: a network's settings or one member, each a
//! small JSON object that a store keeps under its own key (network ID; network ID and
//! member address).
//!
//! Decoding is strict: every field must be present with its type (`null` where optional),
//! and unknown fields are refused, so a flipped byte in a stored record is reported as a
//! damaged record rather than read as a default. Records never panic on any input
//! ([`crate::wire::fuzzing::controller_record`]).

use std::net::{IpAddr, Ipv4Addr};

use serde_json::{json, Map, Value};

use super::{Member, NetworkSettings};
use crate::wire::credential::{valid_member_name, Route};

/// Why a stored record cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct RecordError {
    /// Which record ("network record", "member record").
    pub what: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

const NETWORK_FIELDS: &[&str] = &[
    "name",
    "private",
    "mtu",
    "ipv4_pool",
    "rfc4193",
    "sixplane",
    "routes",
];
const MEMBER_FIELDS: &[&str] = &["authorized", "ipv4", "last_request", "name"];

/// A JSON object with exactly `fields`.
fn object<'a>(
    what: &'static str,
    bytes: &'a [u8],
    fields: &[&str],
    value: &'a mut Value,
) -> Result<&'a Map<String, Value>, RecordError> {
    let bad = |reason: String| RecordError { what, reason };
    *value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let obj = value
        .as_object()
        .ok_or_else(|| bad("not a JSON object".into()))?;
    if let Some(k) = obj.keys().find(|k| !fields.contains(&k.as_str())) {
        return Err(bad(format!("unknown field {k:?}")));
    }
    if let Some(k) = fields.iter().find(|k| !obj.contains_key(**k)) {
        return Err(bad(format!("missing field {k:?}")));
    }
    Ok(obj)
}

fn ip(v: &Value) -> Option<IpAddr> {
    v.as_str().and_then(|s| s.parse().ok())
}

fn u8_of(v: &Value) -> Option<u8> {
    v.as_u64().and_then(|n| u8::try_from(n).ok())
}

/// A network's settings as stored.
pub fn encode_network(s: &NetworkSettings) -> String {
    json!({
        "name": s.name,
        "private": s.private,
        "mtu": s.mtu,
        "ipv4_pool": s.ipv4_pool.map(|(a, b, p)| json!([a.to_string(), b.to_string(), p])),
        "rfc4193": s.rfc4193,
        "sixplane": s.sixplane,
        "routes": s.routes.iter().map(|r| json!({
            "target": r.target.to_string(),
            "prefix": r.prefix,
            "via": r.via.map(|v| v.to_string()),
        })).collect::<Vec<_>>(),
    })
    .to_string()
}

/// Reads a network record; the settings must also pass [`NetworkSettings::validate`].
pub fn decode_network(bytes: &[u8]) -> Result<NetworkSettings, RecordError> {
    const WHAT: &str = "network record";
    let bad = |reason: &str| RecordError {
        what: WHAT,
        reason: reason.to_string(),
    };
    let mut v = Value::Null;
    let o = object(WHAT, bytes, NETWORK_FIELDS, &mut v)?;
    let ipv4_pool = match &o["ipv4_pool"] {
        Value::Null => None,
        Value::Array(a) if a.len() == 3 => match (ip(&a[0]), ip(&a[1]), u8_of(&a[2])) {
            (Some(IpAddr::V4(x)), Some(IpAddr::V4(y)), Some(p)) => Some((x, y, p)),
            _ => return Err(bad("bad ipv4_pool")),
        },
        _ => return Err(bad("bad ipv4_pool")),
    };
    let mut routes = Vec::new();
    for r in o["routes"].as_array().ok_or_else(|| bad("bad routes"))? {
        let r = r.as_object().ok_or_else(|| bad("bad route"))?;
        if r.len() != 3 {
            return Err(bad("bad route"));
        }
        let via = match r.get("via") {
            Some(Value::Null) => None,
            Some(v) => Some(ip(v).ok_or_else(|| bad("bad route gateway"))?),
            None => return Err(bad("bad route")),
        };
        routes.push(Route {
            target: r
                .get("target")
                .and_then(ip)
                .ok_or_else(|| bad("bad route"))?,
            prefix: r
                .get("prefix")
                .and_then(u8_of)
                .ok_or_else(|| bad("bad route"))?,
            via,
        });
    }
    let settings = NetworkSettings {
        name: o["name"]
            .as_str()
            .ok_or_else(|| bad("bad name"))?
            .to_string(),
        private: o["private"].as_bool().ok_or_else(|| bad("bad private"))?,
        mtu: o["mtu"]
            .as_u64()
            .and_then(|m| u16::try_from(m).ok())
            .ok_or_else(|| bad("bad mtu"))?,
        ipv4_pool,
        rfc4193: o["rfc4193"].as_bool().ok_or_else(|| bad("bad rfc4193"))?,
        sixplane: o["sixplane"].as_bool().ok_or_else(|| bad("bad sixplane"))?,
        routes,
    };
    settings.validate().map_err(|e| RecordError {
        what: WHAT,
        reason: e.to_string(),
    })?;
    Ok(settings)
}

/// A member as stored.
pub fn encode_member(m: &Member) -> String {
    json!({
        "authorized": m.authorized,
        "ipv4": m.ipv4.map(|x| x.to_string()),
        "last_request": m.last_request,
        "name": m.name,
    })
    .to_string()
}

/// Reads a member record.
pub fn decode_member(bytes: &[u8]) -> Result<Member, RecordError> {
    const WHAT: &str = "member record";
    let bad = |reason: &str| RecordError {
        what: WHAT,
        reason: reason.to_string(),
    };
    let mut v = Value::Null;
    let o = object(WHAT, bytes, MEMBER_FIELDS, &mut v)?;
    let ipv4 = match &o["ipv4"] {
        Value::Null => None,
        v => Some(
            v.as_str()
                .and_then(|s| s.parse::<Ipv4Addr>().ok())
                .ok_or_else(|| bad("bad ipv4"))?,
        ),
    };
    let last_request = match &o["last_request"] {
        Value::Null => None,
        v => Some(v.as_u64().ok_or_else(|| bad("bad last_request"))?),
    };
    let name = match &o["name"] {
        Value::Null => None,
        v => Some(
            v.as_str()
                .filter(|n| valid_member_name(n))
                .ok_or_else(|| bad("bad name"))?
                .to_string(),
        ),
    };
    Ok(Member {
        authorized: o["authorized"]
            .as_bool()
            .ok_or_else(|| bad("bad authorized"))?,
        ipv4,
        last_request,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NETWORK: &[u8] = br#"{"name":"lab","private":true,"mtu":2800,"ipv4_pool":["10.1.0.1","10.1.0.9",24],"rfc4193":true,"sixplane":false,"routes":[{"target":"10.1.0.0","prefix":24,"via":null}]}"#;
    const MEMBER: &[u8] = br#"{"authorized":true,"ipv4":"10.1.0.1","last_request":17,"name":"db"}"#;

    #[test]
    fn records_round_trip() {
        let s = decode_network(NETWORK).unwrap();
        assert_eq!(s.name, "lab");
        assert_eq!(s.routes.len(), 1);
        assert_eq!(decode_network(encode_network(&s).as_bytes()).unwrap(), s);
        let m = decode_member(MEMBER).unwrap();
        assert_eq!(m.name.as_deref(), Some("db"));
        assert_eq!(decode_member(encode_member(&m).as_bytes()).unwrap(), m);
        assert_eq!(
            decode_member(encode_member(&Member::default()).as_bytes()).unwrap(),
            Member::default()
        );
    }

    #[test]
    fn damaged_records_are_refused() {
        for bad in [
            &br#"{"authorized":true,"ipv4":"10.1.0.1","last_request":17}"#[..],
            br#"{"authorized":1,"ipv4":null,"last_request":null,"name":null}"#,
            br#"{"authorized":true,"ipv4":"10.1.0.1","last_request":17,"name":"db","x":1}"#,
            br#"{"authorized":true,"ipv4":"10.1.0.1","last_request":17,"name":"DB"}"#,
            br#"{"authorized":true,"ipv4":"::1","last_request":17,"name":null}"#,
            br#"{"authorized":trie,"ipv4":null,"last_request":null,"name":null}"#,
            b"[]",
            b"",
        ] {
            assert!(
                decode_member(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // One digit added: an MTU out of range.
        let flipped = String::from_utf8_lossy(NETWORK).replace("2800", "28000");
        let e = decode_network(flipped.as_bytes()).unwrap_err();
        assert!(e.to_string().starts_with("network record"), "{e}");
        assert!(decode_network(&NETWORK[..NETWORK.len() - 1]).is_err());
    }
}
