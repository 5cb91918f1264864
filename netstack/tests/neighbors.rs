//! Neighbor resolution (ARP) when requests get lost or nobody answers.
mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use netstack::{FrameLink, Stack};

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
