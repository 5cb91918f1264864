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

/// Sockets on a fresh loopback port.
async fn loopback_sockets() -> Sockets {
    Sockets::bind_addrs(&["127.0.0.1:0".parse().unwrap()])
        .await
        .unwrap()
}

/// A root with identity `identity(seed)` on a loopback port, its task, and the spec
/// nodes use to reach it.
async fn loopback_root(
    seed: u64,
) -> (
    zt_core::driver::RootHandle,
    tokio::task::JoinHandle<()>,
    RootSpec,
) {
    let root_id = identity(seed);
    let sockets = loopback_sockets().await;
    let spec = RootSpec {
        identity: root_id.public().clone(),
        endpoints: vec![sockets.local_addrs()[0]],
    };
    let root = Root::new(
        root_id,
        [1; 32],
        Timing::default(),
        std::time::Instant::now(),
    );
    let (handle, task) = spawn_root(root, sockets);
    (handle, task, spec)
}

#[tokio::test]
async fn two_nodes_exchange_frames_over_loopback_through_a_root() {
    let (root, _root_task, spec) = loopback_root(100).await;
    let nwid = NetworkId(0xff00_0000_0000_00aa);
    let mut nodes = Vec::new();
    for i in 0..2u8 {
        let cfg = NodeConfig::new(
            identity(101 + u64::from(i)),
            vec![spec.clone()],
            [i + 2; 32],
        );
        let node = Node::new(cfg, std::time::Instant::now());
        let sockets = loopback_sockets().await;
        let (h, _task) = spawn_node(node, sockets);
        let port = h.join(nwid).await.unwrap();
        nodes.push((h, port));
    }
    let (mut a, mut b) = (nodes.remove(0), nodes.remove(0));
    let (ma, mb) = (a.1.config.mac, b.1.config.mac);
    assert_eq!(a.1.config.mtu, zt_core::vl2::DEFAULT_MTU);
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

#[tokio::test]
async fn controller_network_over_loopback_join_waits_for_authorization() {
    use zt_core::controller::{Controller, NetworkSettings};
    use zt_core::node::NetworkState;

    let (_root, _root_task, spec) = loopback_root(200).await;
    // The controller node.
    let ctl_id = identity(201);
    let mut ctl_node = Node::new(
        NodeConfig::new(ctl_id.clone(), vec![spec.clone()], [2; 32]),
        std::time::Instant::now(),
    );
    ctl_node.attach_controller(Controller::new(
        ctl_id,
        1_700_000_000_000,
        std::time::Instant::now(),
    ));
    let (ctl, _ctl_task) = spawn_node(ctl_node, loopback_sockets().await);
    let nwid = ctl
        .with_controller(|c| {
            c.create_network(
                1,
                NetworkSettings {
                    ipv4_pool: Some((
                        "10.147.17.10".parse().unwrap(),
                        "10.147.17.20".parse().unwrap(),
                        24,
                    )),
                    ..NetworkSettings::default()
                },
            )
        })
        .await
        .unwrap()
        .unwrap();
    // A member joins; it is not authorized, so join waits and status says why.
    let member_id = identity(202);
    let member_addr = member_id.address();
    let member = Node::new(
        NodeConfig::new(member_id, vec![spec], [3; 32]),
        std::time::Instant::now(),
    );
    let (m, _m_task) = spawn_node(member, loopback_sockets().await);
    let m2 = m.clone();
    let join = tokio::spawn(async move { m2.join(nwid).await });
    let denied = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let st = m.status().await.unwrap();
            if st
                .networks
                .iter()
                .any(|n| matches!(n.state, NetworkState::Denied(_)))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(denied.is_ok(), "the member never saw 'access denied'");
    assert!(!join.is_finished());
    // Authorized: join completes with an address from the pool within 5 s.
    ctl.set_member_authorized(nwid, member_addr, true)
        .await
        .unwrap();
    let port = tokio::time::timeout(Duration::from_secs(5), join)
        .await
        .expect("join did not complete after authorization")
        .unwrap()
        .unwrap();
    assert!(port
        .config
        .addresses
        .iter()
        .any(|(ip, p)| ip.to_string() == "10.147.17.10" && *p == 24));
    let members = ctl
        .with_controller(move |c| c.members(nwid))
        .await
        .unwrap()
        .unwrap();
    assert!(members
        .iter()
        .any(|(a, m)| *a == member_addr && m.authorized));
}

/// A node process restarts with the same identity on a new UDP port (what a `ztrun`
/// restarted with the same `--home` does) while the other node still holds a session and
/// a direct path to the old port. The restarted node speaks first, as a client does; the
/// answer must reach it at once, not after the old path times out (45 s).
#[tokio::test]
async fn restarted_node_with_the_same_identity_is_answered_at_once() {
    let (_root, _root_task, spec) = loopback_root(300).await;
    let nwid = NetworkId(0xff00_0000_0000_00bb);
    let start = |id: SecretIdentity, seed: u8| {
        let spec = spec.clone();
        async move {
            let node = Node::new(
                NodeConfig::new(id, vec![spec], [seed; 32]),
                std::time::Instant::now(),
            );
            let sockets = loopback_sockets().await;
            let (h, task) = spawn_node(node, sockets);
            let port = h.join(nwid).await.unwrap();
            (h, task, port)
        }
    };
    let (ha, _ta, mut a) = start(identity(301), 2).await;
    let (hb, tb, mut b) = start(identity(302), 3).await;
    let (ma, mb) = (a.config.mac, b.config.mac);
    // B speaks, A answers: a session and direct paths on both sides.
    assert!(round_trip(&mut b, &mut a, ma, mb, b"first run")
        .await
        .ends_with(b"first run"));
    // Hole punching (after the root's RENDEZVOUS) makes the path direct.
    let direct = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let status = ha.status().await.unwrap();
            let path = status.peers.iter().find(|p| !p.is_root).map(|p| p.path);
            if let Some(zt_core::node::PathKind::Direct(ep)) = path {
                return ep;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("no direct path between A and B");
    // B's process ends (its socket closes) and starts again on a new port.
    drop(hb);
    drop(b);
    tokio::time::timeout(Duration::from_secs(2), tb)
        .await
        .expect("B's driver did not stop")
        .unwrap();
    let (_hb2, _tb2, mut b2) = start(identity(302), 4).await;
    let t0 = std::time::Instant::now();
    let back = round_trip(&mut b2, &mut a, ma, mb, b"second run").await;
    assert!(back.ends_with(b"second run"));
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    let status = ha.status().await.unwrap();
    let path = status.peers.iter().find(|p| !p.is_root).map(|p| p.path);
    assert_ne!(path, Some(zt_core::node::PathKind::Direct(direct)));
}

/// B sends `what` to A, A answers with it; returns what B received.
async fn round_trip(
    b: &mut zt_core::driver::NetworkPort,
    a: &mut zt_core::driver::NetworkPort,
    ma: Mac,
    mb: Mac,
    what: &[u8],
) -> Vec<u8> {
    b.tx.send(eth(ma, mb, what)).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(3), a.rx.recv())
        .await
        .expect("A did not hear B")
        .unwrap();
    assert!(got.ends_with(what));
    a.tx.send(eth(mb, ma, what)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), b.rx.recv())
        .await
        .expect("B did not hear A's answer")
        .unwrap()
}

/// A test device: frames to send are pushed into `out`, frames delivered land in `got`.
#[derive(Default)]
struct TestDevice {
    out: std::collections::VecDeque<Vec<u8>>,
    waker: Option<std::task::Waker>,
    got: Vec<Vec<u8>>,
    recycled: usize,
    closed: bool,
}

type Shared = std::sync::Arc<std::sync::Mutex<TestDevice>>;

struct Dev(Shared);

impl zt_core::driver::FrameDevice for Dev {
    fn deliver(&mut self, frames: &mut Vec<Vec<u8>>) {
        self.0.lock().unwrap().got.append(frames);
    }

    fn poll_outgoing(
        &mut self,
        cx: &mut std::task::Context<'_>,
        out: &mut Vec<Vec<u8>>,
        max: usize,
    ) -> std::task::Poll<usize> {
        let mut d = self.0.lock().unwrap();
        if d.out.is_empty() {
            if d.closed {
                return std::task::Poll::Ready(0);
            }
            d.waker = Some(cx.waker().clone());
            return std::task::Poll::Pending;
        }
        let n = d.out.len().min(max);
        out.extend(d.out.drain(..n));
        std::task::Poll::Ready(n)
    }

    fn recycle(&mut self, spent: &mut Vec<Vec<u8>>) {
        self.0.lock().unwrap().recycled += spent.len();
        spent.clear();
    }
}

fn push(dev: &Shared, frame: Vec<u8>) {
    let mut d = dev.lock().unwrap();
    d.out.push_back(frame);
    if let Some(w) = d.waker.take() {
        w.wake();
    }
}

#[tokio::test]
async fn attached_devices_exchange_frames_inside_the_driver() {
    let (_root, _root_task, spec) = loopback_root(400).await;
    let nwid = NetworkId(0xff00_0000_0000_00bb);
    let mut nodes = Vec::new();
    for i in 0..2u8 {
        let cfg = NodeConfig::new(
            identity(401 + u64::from(i)),
            vec![spec.clone()],
            [i + 7; 32],
        );
        let sockets = loopback_sockets().await;
        let (h, _task) = spawn_node(Node::new(cfg, std::time::Instant::now()), sockets);
        // Attaching before joining is refused with a reason.
        let err = h.attach(nwid, Dev(Shared::default())).await.unwrap_err();
        assert!(err.to_string().contains("not joined"), "{err}");
        let port = h.join(nwid).await.unwrap();
        let dev = Shared::default();
        h.attach(nwid, Dev(dev.clone())).await.unwrap();
        nodes.push((h, port.config.mac, dev));
    }
    let (ma, a) = (nodes[0].1, nodes[0].2.clone());
    let (mb, b) = (nodes[1].1, nodes[1].2.clone());
    // A broadcast from A's device reaches B's device (retried until the member list
    // has arrived).
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            push(&a, eth(Mac::BROADCAST, ma, b"hello"));
            tokio::time::sleep(Duration::from_millis(100)).await;
            if !b.lock().unwrap().got.is_empty() {
                return;
            }
        }
    })
    .await
    .expect("broadcast never reached B's device");
    assert!(b.lock().unwrap().got[0].ends_with(b"hello"));
    // A burst of full-MTU unicast frames from B's device arrives intact and in order at
    // A's device.
    let big: Vec<u8> = (0..2800u32).map(|i| i as u8).collect();
    for i in 0..50u8 {
        let mut payload = big.clone();
        payload[0] = i;
        push(&b, eth(ma, mb, &payload));
    }
    tokio::time::timeout(Duration::from_secs(5), async {
        while a.lock().unwrap().got.len() < 50 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("burst frames missing at A's device");
    let got = std::mem::take(&mut a.lock().unwrap().got);
    for (i, f) in got.iter().enumerate() {
        assert_eq!(f[14] as usize, i, "frames out of order");
        assert_eq!(&f[15..], &big[1..]);
    }
    // Sent frames' buffers went back to the device.
    assert_eq!(b.lock().unwrap().recycled, 50);
    // A device that shuts down is detached; the driver keeps running.
    b.lock().unwrap().closed = true;
    push(&b, eth(ma, mb, b"last"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(nodes[1].0.status().await.is_ok());
}
