//! The tokio driver on real loopback UDP sockets: a root and two nodes exchange frames.
#![cfg(feature = "tokio")]

use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng as _;
use zt_core::driver::{spawn_node, spawn_root, Sockets};
use zt_core::node::{NodeConfig, RootSpec, Timing};
use zt_core::{Mac, NetworkId, Node, Root, SecretIdentity};

fn identity(seed: u64) -> SecretIdentity {
    SecretIdentity::generate(&mut ChaCha8Rng::seed_from_u64(seed))
}

fn eth(dst: Mac, src: Mac, payload: &[u8]) -> Vec<u8> {
    [&dst.0[..], &src.0[..], &[0x08, 0x00][..], payload].concat()
}

#[tokio::test]
async fn two_nodes_exchange_frames_over_loopback_through_a_root() {
    let loopback = ["127.0.0.1:0".parse().unwrap()];
    let root_id = identity(100);
    let root_sockets = Sockets::bind_addrs(&loopback).await.unwrap();
    let root_ep = root_sockets.local_addrs()[0];
    let (root, _root_task) = spawn_root(
        Root::new(
            root_id.clone(),
            [1; 32],
            Timing::default(),
            std::time::Instant::now(),
        ),
        root_sockets,
    );
    let spec = RootSpec {
        identity: root_id.public().clone(),
        endpoints: vec![root_ep],
    };
    let nwid = NetworkId(0xff00_0000_0000_00aa);
    let mut nodes = Vec::new();
    for i in 0..2u8 {
        let cfg = NodeConfig::new(
            identity(101 + u64::from(i)),
            vec![spec.clone()],
            [i + 2; 32],
        );
        let node = Node::new(cfg, std::time::Instant::now());
        let sockets = Sockets::bind_addrs(&loopback).await.unwrap();
        let (h, _task) = spawn_node(node, sockets);
        let port = h.join(nwid).await.unwrap();
        nodes.push((h, port));
    }
    let (mut a, mut b) = (nodes.remove(0), nodes.remove(0));
    let (ma, mb) = (a.1.config.mac, b.1.config.mac);
    assert_eq!(a.1.config.mtu, 2800);
    // Broadcast until B hears it (the members list takes a round trip to arrive).
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            a.1.tx
                .send(eth(Mac::BROADCAST, ma, b"hello"))
                .await
                .unwrap();
            if let Ok(Some(f)) =
                tokio::time::timeout(Duration::from_millis(200), b.1.rx.recv()).await
            {
                return f;
            }
        }
    })
    .await
    .expect("broadcast never arrived");
    assert_eq!(&got[12..], &[&[0x08, 0x00][..], b"hello"].concat()[..]);
    // A full-MTU unicast frame back (fragmented on the wire).
    let big: Vec<u8> = (0..2800u32).map(|i| i as u8).collect();
    b.1.tx.send(eth(ma, mb, &big)).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(5), a.1.rx.recv())
        .await
        .expect("unicast timed out")
        .unwrap();
    assert_eq!(&back[14..], &big[..]);
    // A burst of full-MTU frames: batched sends (GSO) and receives (recvmmsg/GRO) must
    // keep every datagram intact.
    for i in 0..20u8 {
        let mut payload = big.clone();
        payload[0] = i;
        b.1.tx.send(eth(ma, mb, &payload)).await.unwrap();
    }
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 20 {
        let f = tokio::time::timeout(Duration::from_secs(5), a.1.rx.recv())
            .await
            .expect("burst frames missing")
            .unwrap();
        assert_eq!(&f[15..], &big[1..]);
        seen.insert(f[14]);
    }
    let status = a.0.status().await.unwrap();
    assert!(status.peers.iter().any(|p| p.is_root && p.up));
    assert!(status.peers.iter().any(|p| !p.is_root && p.up));
    let (stats, registered) = root.stats().await.unwrap();
    assert_eq!(registered.len(), 2);
    // The first handshake between the nodes went through the root's relay.
    assert!(stats.handshake_packets >= 1, "{stats:?}");
    b.0.leave(nwid).await.unwrap();
}
