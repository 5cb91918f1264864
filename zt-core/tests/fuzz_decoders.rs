//! Every decoder gets random and mutated inputs for a bounded number of iterations (the
//! same entry points as the libFuzzer targets in `fuzz/`), plus the whole receive path of
//! a node and a root. Nothing may panic.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng as _, SeedableRng as _};
use zt_core::node::{NodeConfig, RootSpec, Timing};
use zt_core::wire::fuzzing;
use zt_core::{Node, Root, SecretIdentity};

const ITERATIONS: usize = 50_000;

type Target = (&'static str, fn(&[u8]));

/// Valid samples to mutate: one per format.
fn seeds() -> Vec<Vec<u8>> {
    let mut init = vec![0, 0, 0, 1];
    init.extend_from_slice(&[7; 96]);
    let mut resp = vec![0, 0, 0, 1, 0, 0, 0, 2];
    resp.extend_from_slice(&[9; 48]);
    let mut data = vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5];
    data.extend_from_slice(&[1; 40]);
    let reply = [&[0, 0, 0, 1][..], &[0x5a; 16][..]].concat();
    let cookie_init = [&[0x5a; 16][..], &init[..]].concat();
    vec![
        reply,
        cookie_init,
        vec![
            1, 3, 0, 0, 0x89, 0xe9, 0x2c, 0xee, 0xe5, 0x12, 0x34, 0x56, 0x78, 0x9a,
        ],
        init,
        resp,
        data,
        vec![0, 0, 0, 42, 1, 3, 0xaa, 0xbb],
        vec![0x11, 4, 192, 0, 2, 1, 0x26, 0x94],
        vec![0x18, 0, 0, 0, 0, 0, 0, 0, 9, 0, 1, 0x11, 0, 0, 0, 1],
        [&[0x20, 0xff, 0, 0, 0, 0, 0, 0, 1][..], &[0xff; 20][..]].concat(),
        b"89e92ceee5".to_vec(),
        b"ff00000000000001".to_vec(),
        b"82:6b:f5:2c:ee:e4".to_vec(),
        config_sample(),
        config_sample()[config_sample().len() - 157..config_sample().len() - 64].to_vec(),
        NETWORK_RECORD.to_vec(),
        MEMBER_RECORD.to_vec(),
    ]
}

/// Controller records as the store keeps them.
const NETWORK_RECORD: &[u8] = br#"{"ipv4_pool":["10.1.0.1","10.1.0.9",24],"mtu":2800,"name":"lab","private":true,"rfc4193":true,"routes":[{"prefix":24,"target":"10.1.0.0","via":null}],"sixplane":false}"#;
const MEMBER_RECORD: &[u8] =
    br#"{"authorized":true,"ipv4":"10.1.0.1","last_request":17,"name":"db"}"#;

/// A signed configuration as a controller emits it (the signature is not checked here).
fn config_sample() -> Vec<u8> {
    let mut v = vec![
        0x80, 0x56, 0xc2, 0xe2, 0x1c, 0, 0, 1, 0x89, 0xe9, 0x2c, 0xee, 0xe5,
    ];
    v.extend_from_slice(&1234u64.to_be_bytes());
    v.extend_from_slice(&[1, 0x0a, 0xf0, 3, b'l', b'a', b'b']);
    v.extend_from_slice(&[1, 4, 10, 147, 17, 5, 24]);
    v.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 1, 10, 147, 17, 1]);
    // Directory: one member with an IPv4 address and the name "web".
    v.extend_from_slice(&[0, 1, 0x89, 0xe9, 0x2c, 0xee, 0xe5, 1, 10, 147, 17, 5, 3]);
    v.extend_from_slice(b"web");
    v.extend_from_slice(&[
        0x80, 0x56, 0xc2, 0xe2, 0x1c, 0, 0, 1, 0x89, 0xe9, 0x2c, 0xee, 0xe5,
    ]);
    v.extend_from_slice(&1234u64.to_be_bytes());
    v.extend_from_slice(&120_000u64.to_be_bytes());
    v.extend_from_slice(&[7; 64]);
    v.extend_from_slice(&[9; 64]);
    v
}

fn mutate(rng: &mut ChaCha8Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=(rng.next_u32() % 4) {
        match rng.next_u32() % 5 {
            0 if !v.is_empty() => {
                let i = rng.next_u32() as usize % v.len();
                v[i] ^= 1 << (rng.next_u32() % 8);
            }
            1 if !v.is_empty() => {
                let i = rng.next_u32() as usize % v.len();
                v[i] = rng.next_u32() as u8;
            }
            2 => {
                let n = rng.next_u32() as usize % (v.len() + 1);
                v.truncate(n);
            }
            3 => {
                let extra = rng.next_u32() as usize % 16;
                v.extend((0..extra).map(|_| rng.next_u32() as u8));
            }
            _ => {
                let i = rng.next_u32() as usize % (v.len() + 1);
                v.insert(i, rng.next_u32() as u8);
            }
        }
    }
    v
}

fn inputs(seed: u64) -> impl Iterator<Item = Vec<u8>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let seeds = seeds();
    (0..ITERATIONS).map(move |i| {
        if i % 2 == 0 {
            let len = rng.next_u32() as usize % 300;
            (0..len).map(|_| rng.next_u32() as u8).collect()
        } else {
            let s = &seeds[rng.next_u32() as usize % seeds.len()];
            mutate(&mut rng, s)
        }
    })
}

#[test]
fn decoders_survive_random_and_mutated_input() {
    let targets: [Target; 12] = [
        ("header", fuzzing::header),
        ("handshake_init", fuzzing::handshake_init),
        ("handshake_response", fuzzing::handshake_response),
        ("cookie", fuzzing::cookie),
        ("data", fuzzing::data),
        ("fragment", fuzzing::fragment),
        ("message", fuzzing::message),
        ("identity_bytes", fuzzing::identity_bytes),
        ("text", fuzzing::text),
        ("config", fuzzing::config),
        ("certificate", fuzzing::certificate),
        ("controller_record", fuzzing::controller_record),
    ];
    for (i, (name, f)) in targets.iter().enumerate() {
        for input in inputs(i as u64) {
            let r = std::panic::catch_unwind(|| f(&input));
            assert!(r.is_ok(), "{name} panicked on {input:02x?}");
        }
    }
}

#[test]
fn node_datagram_entry_point_survives_random_input() {
    for input in inputs(2000).take(5_000) {
        fuzzing::node_datagram(&input);
    }
}

#[test]
fn node_and_root_survive_garbage_datagrams() {
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let root_id = SecretIdentity::generate(&mut rng);
    let node_id = SecretIdentity::generate(&mut rng);
    let root_ep: SocketAddr = "192.0.2.1:9993".parse().unwrap();
    let mut root = Root::new(
        root_id.clone(),
        [1; 32],
        Timing::default(),
        std::time::Instant::now(),
    );
    let cfg = NodeConfig::new(
        node_id.clone(),
        vec![RootSpec {
            identity: root_id.public().clone(),
            endpoints: vec![root_ep],
        }],
        [2; 32],
    );
    let mut now = Instant::now();
    let mut node = Node::new(cfg, now);
    let from: SocketAddr = "192.0.2.2:9993".parse().unwrap();
    for (i, mut input) in inputs(1000).enumerate() {
        // Half of the inputs get a valid header addressed to the victim, so the body
        // decoders behind it are reached.
        if i % 2 == 0 && input.len() >= 14 {
            input[0] = 1;
            input[1] = 1 + (input[1] % 5);
            let (dst, src) = if i % 4 == 0 {
                (node_id.address(), root_id.address())
            } else {
                (root_id.address(), node_id.address())
            };
            input[4..9].copy_from_slice(&dst.to_bytes());
            input[9..14].copy_from_slice(&src.to_bytes());
        }
        node.handle_datagram(now, from, &input);
        root.handle_datagram(now, from, &input);
        now += Duration::from_millis(1);
        node.handle_timeout(now);
        root.handle_timeout(now);
        while node.poll_transmit().is_some() {}
        while root.poll_transmit().is_some() {}
        while node.poll_event().is_some() {}
    }
}
