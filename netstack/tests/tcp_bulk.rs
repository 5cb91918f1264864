//! Bulk TCP transfers between two stacks, clean and impaired, checked by SHA-256.
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use netstack::{Congestion, TcpOptions, TcpStream};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn big() -> TcpOptions {
    TcpOptions {
        recv_buffer: 4 << 20,
        send_buffer: 4 << 20,
        ..TcpOptions::default()
    }
}

/// Write `len` pseudo-random bytes (from `seed`), then FIN; return their SHA-256.
async fn send(s: &TcpStream, len: u64, seed: u64) -> Vec<u8> {
    let mut w = s;
    let mut h = Sha256::new();
    let mut x = seed | 1;
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        for c in buf[..n].chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
        }
        h.update(&buf[..n]);
        w.write_all(&buf[..n]).await.unwrap();
        left -= n as u64;
    }
    w.shutdown().await.unwrap();
    h.finalize().to_vec()
}

/// Bytes received by all `recv` calls, for progress reports.
static RECEIVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Read to EOF; return (bytes, SHA-256).
async fn recv(s: &TcpStream) -> (u64, Vec<u8>) {
    let mut r = s;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
        RECEIVED.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }
    (total, h.finalize().to_vec())
}

/// Move `len` bytes each way at once over one connection within `limit`; check hashes;
/// return seconds. On a stall, panic with both stacks' state.
async fn both_ways_on(
    (a, b, taps): (netstack::Stack, netstack::Stack, Taps),
    len: u64,
    limit: Duration,
) -> f64 {
    let (da, db) = (a.clone(), b.clone());
    let before = RECEIVED.load(std::sync::atomic::Ordering::Relaxed);
    match tokio::time::timeout(limit, both_ways_inner(a, b, len)).await {
        Ok(secs) => secs,
        Err(_) => panic!(
            "{len} bytes each way not moved within {limit:?} ({} bytes received by this binary's transfers meanwhile, of {} here); \
             stack A: {}stack B: {}{}",
            RECEIVED.load(std::sync::atomic::Ordering::Relaxed) - before,
            2 * len,
            da.describe(),
            db.describe(),
            taps.dump()
        ),
    }
}

async fn both_ways_inner(a: netstack::Stack, b: netstack::Stack, len: u64) -> f64 {
    let l = b
        .tcp_listen(SocketAddr::new(B4.into(), 9000), 8, false)
        .unwrap();
    l.set_accept_options(big());
    let start = Instant::now();
    let server = tokio::spawn(async move {
        let s = l.accept().await.unwrap();
        let (sent, got) = tokio::join!(send(&s, len, 2), recv(&s));
        (sent, got)
    });
    let c = a
        .tcp_connect(None, SocketAddr::new(B4.into(), 9000), big())
        .await
        .unwrap();
    let (sent, got) = tokio::join!(send(&c, len, 1), recv(&c));
    let (s_sent, s_got) = server.await.unwrap();
    assert_eq!(got.0, len, "A received everything B sent");
    assert_eq!(s_got.0, len, "B received everything A sent");
    assert_eq!(sent, s_got.1, "A->B data intact");
    assert_eq!(s_sent, got.1, "B->A data intact");
    start.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_each_way_clean() {
    let len = 1u64 << 30;
    let pair = pair_tapped(LinkParams::clean(), LinkParams::clean());
    let secs = both_ways_on(pair, len, Duration::from_secs(120)).await;
    eprintln!(
        "1 GiB each way, clean link: {secs:.1} s ({:.0} Mbit/s per direction)",
        len as f64 * 8.0 / secs / 1e6
    );
}

/// The overlay driver hands received frames to the stack with `FrameLink::receive`, which
/// runs the receive path in the caller's task; the stack must behave exactly as when its
/// own driver task takes them from the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_received_inline_carry_bulk_data_each_way() {
    let len = 64u64 << 20;
    let secs = both_ways_on(pair_inline(), len, Duration::from_secs(60)).await;
    eprintln!(
        "64 MiB each way, received inline: {secs:.1} s ({:.0} Mbit/s per direction)",
        len as f64 * 8.0 / secs / 1e6
    );
}

/// Move `len` bytes from A to B, then from B to A, each on its own connection.
async fn each_way_in_turn(
    ab: LinkParams,
    ba: LinkParams,
    len: u64,
    opts: TcpOptions,
) -> (f64, f64) {
    let (a, b) = pair(ab, ba);
    let mut secs = [0.0; 2];
    for (i, (from, to, to_ip)) in [(&a, &b, B4), (&b, &a, A4)].into_iter().enumerate() {
        let port = 9100 + i as u16;
        let l = to
            .tcp_listen(SocketAddr::new(to_ip.into(), port), 8, false)
            .unwrap();
        l.set_accept_options(opts.clone());
        let start = Instant::now();
        let server = tokio::spawn(async move {
            let s = l.accept().await.unwrap();
            recv(&s).await
        });
        let c = from
            .tcp_connect(None, SocketAddr::new(to_ip.into(), port), opts.clone())
            .await
            .unwrap();
        let mon = {
            let c = c.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    if std::env::var("NETSTACK_TRACE").is_ok() {
                        let got = RECEIVED.load(std::sync::atomic::Ordering::Relaxed);
                        eprintln!("received {got} {:?}", c.tcp_info());
                    }
                }
            })
        };
        let sent = send(&c, len, 3 + i as u64).await;
        mon.abort();
        let (n, got) = server.await.unwrap();
        assert_eq!(n, len, "all bytes arrived");
        assert_eq!(sent, got, "data intact");
        secs[i] = start.elapsed().as_secs_f64();
    }
    (secs[0], secs[1])
}

/// 2% loss and 2% reordering in both directions (data and ACKs), one direction at a
/// time. Congestion control is off: random loss is not congestion, and smoltcp has no
/// SACK-based recovery, so a loss-based controller spends most of its time in timeouts
/// (docs/NETSTACK.md has the numbers). Default 64 MiB each way to keep CI quick;
/// NETSTACK_LOSSY_BYTES=1073741824 runs the full GiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_reordering_link_each_way() {
    let len: u64 = std::env::var("NETSTACK_LOSSY_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64 << 20);
    let (ab, ba) = tokio::time::timeout(
        Duration::from_secs(if len > 100 << 20 { 600 } else { 120 }),
        each_way_in_turn(
            LinkParams::lossy(0.02, 0.02, 7),
            LinkParams::lossy(0.02, 0.02, 8),
            len,
            TcpOptions {
                recv_buffer: 256 << 10,
                send_buffer: 256 << 10,
                congestion: Congestion::None,
                ..TcpOptions::default()
            },
        ),
    )
    .await
    .expect("lossy transfer in time");
    let mbit = |s: f64| len as f64 * 8.0 / s / 1e6;
    eprintln!("{len} bytes each way, 2% loss + 2% reordering: A->B {ab:.1} s ({:.0} Mbit/s), B->A {ba:.1} s ({:.0} Mbit/s)", mbit(ab), mbit(ba));
}
