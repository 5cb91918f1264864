//! Neighbor resolution (ARP, NDP) when requests get lost or nobody answers.
mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use netstack::{FrameLink, Stack, TcpOptions};

fn is_arp_request(f: &[u8]) -> bool {
    f.len() >= 22 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 1]
}

/// Carry frames, dropping the first `drop_arp` ARP requests and counting all of them.
async fn carry(from: Arc<FrameLink>, to: Arc<FrameLink>, drop_arp: usize, seen: Arc<AtomicUsize>) {
    let mut batch = Vec::new();
    while from.recv_many(&mut batch, 64).await > 0 {
        for f in batch.drain(..) {
            if is_arp_request(&f) && seen.fetch_add(1, Ordering::Relaxed) < drop_arp {
                continue;
            }
            to.send(f).await;
        }
    }
}

fn linked(drop_arp: usize) -> (Stack, Stack, Arc<AtomicUsize>) {
    let (a, la) = Stack::new(config(1));
    let (b, lb) = Stack::new(config(2));
    let (la, lb) = (Arc::new(la), Arc::new(lb));
    let seen = Arc::new(AtomicUsize::new(0));
    tokio::spawn(carry(la.clone(), lb.clone(), drop_arp, seen.clone()));
    tokio::spawn(carry(lb, la, 0, Arc::new(AtomicUsize::new(0))));
    (a, b, seen)
}

#[tokio::test]
async fn lost_arp_request_is_repeated_without_a_new_packet() {
    let (a, b, seen) = linked(1);
    let rx = b.udp_bind(SocketAddr::new(B4.into(), 5300), false).unwrap();
    let tx = a.udp_bind(SocketAddr::new(A4.into(), 0), false).unwrap();
    tx.send_to(b"once", rx.local_addr()).await.unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = tokio::time::timeout(Duration::from_secs(3), rx.recv_from(&mut buf))
        .await
        .expect("the one datagram arrives although the first ARP request was lost")
        .unwrap();
    assert_eq!((&buf[..n], from), (&b"once"[..], tx.local_addr()));
    assert_eq!(seen.load(Ordering::Relaxed), 2, "asked exactly twice");
}

#[tokio::test]
async fn unanswered_neighbor_is_asked_a_bounded_number_of_times() {
    let (a, _b, seen) = linked(0);
    let tx = a.udp_bind(SocketAddr::new(A4.into(), 0), false).unwrap();
    let nobody = SocketAddr::new(Ipv4Addr::new(10, 7, 0, 99).into(), 9);
    tx.send_to(b"lost", nobody).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        seen.load(Ordering::Relaxed),
        6,
        "six requests, then it gives up"
    );
    // A new packet starts a new round.
    tx.send_to(b"again", nobody).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(seen.load(Ordering::Relaxed), 7);
}

/// Connect from `a` to `to`; the outcome and how long it took.
async fn timed_connect(a: Stack, to: SocketAddr) -> (Result<(), i32>, Duration) {
    let t = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(6),
        a.tcp_connect(None, to, TcpOptions::default()),
    )
    .await;
    let r = match r {
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(e)) => Err(e.errno()),
        Err(_) => Err(0), // still waiting after 6 s
    };
    (r, t.elapsed())
}

/// Linux gives up on a neighbor after 3 unanswered probes 1 s apart and fails the connects
/// waiting for it with `EHOSTUNREACH`; connects to other neighbors never wait behind it.
/// Before the fix a connect to an absent neighbor waited for the whole SYN timeout (127 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_to_an_absent_neighbor_fails_with_ehostunreach_and_delays_no_other() {
    let (a, b) = pair(LinkParams::clean(), LinkParams::clean());
    let l4 = b
        .tcp_listen(SocketAddr::new(B4.into(), 80), 64, false)
        .unwrap();
    let l6 = b
        .tcp_listen(SocketAddr::new(b6().into(), 80), 64, true)
        .unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            tokio::select! {
                Ok(s) = l4.accept() => held.push(s),
                Ok(s) = l6.accept() => held.push(s),
                else => break,
            }
        }
    });
    let absent: [IpAddr; 2] = [
        Ipv4Addr::new(10, 7, 0, 99).into(),
        "fd7a::99".parse::<std::net::Ipv6Addr>().unwrap().into(),
    ];
    let live: [IpAddr; 2] = [B4.into(), b6().into()];
    let started = Instant::now();
    let absent_tries: Vec<_> = absent
        .iter()
        .map(|ip| tokio::spawn(timed_connect(a.clone(), SocketAddr::new(*ip, 80))))
        .collect();
    // Live connects alongside: at once, and while the absent neighbors are being asked.
    let mut live_times = Vec::new();
    for at in [0, 500, 1500, 2500] {
        tokio::time::sleep_until((started + Duration::from_millis(at)).into()).await;
        for ip in live {
            let (r, took) = timed_connect(a.clone(), SocketAddr::new(ip, 80)).await;
            assert_eq!(r, Ok(()), "connect to live {ip} at {at} ms");
            live_times.push((ip, at, took));
        }
    }
    for (ip, at, took) in &live_times {
        assert!(
            *took < Duration::from_millis(100),
            "connect to live {ip} at {at} ms took {took:?} while {absent:?} were asked for"
        );
    }
    for (ip, t) in absent.iter().zip(absent_tries) {
        let (r, took) = t.await.unwrap();
        eprintln!("absent {ip}: {r:?} after {took:?}; live connects: {live_times:?}");
        assert_eq!(
            r,
            Err(libc_ehostunreach()),
            "connect to absent {ip}: after {took:?} (0 = still waiting)"
        );
        assert!(
            (Duration::from_millis(2500)..Duration::from_secs(4)).contains(&took),
            "connect to absent {ip} failed after {took:?}, not after ~3 s"
        );
    }
}

fn libc_ehostunreach() -> i32 {
    113 // EHOSTUNREACH on Linux
}
