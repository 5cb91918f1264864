//! A client stack that vanishes without a word (its process was killed) leaves its
//! connections established at the server. A new client with the same address that happens
//! to reuse one of those 4-tuples must still connect, as on Linux (where the server answers
//! with a challenge ACK, RFC 5961 §4, the client's RST clears the stale connection, and the
//! next SYN opens a fresh one). smoltcp answered the SYN with a RST instead, refusing the
//! new connection and keeping the stale one for good; netstack's demultiplexer now resets
//! the stale connection on a bare SYN (its owner reads ECONNRESET) and the client's
//! retransmitted SYN connects (docs/NETSTACK.md).
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use netstack::{FrameLink, Stack, TcpOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// Frames from `from` to `to` until `from` closes.
fn wire(from: Arc<FrameLink>, to: Arc<FrameLink>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(64);
        loop {
            if from.recv_many(&mut batch, 64).await == 0 {
                return;
            }
            for f in batch.drain(..) {
                to.send(f).await;
            }
        }
    })
}

#[tokio::test]
async fn a_reused_four_tuple_of_a_vanished_client_connects_at_once() {
    let (b, lb) = Stack::new(config(2));
    let lb = Arc::new(lb);
    let server = SocketAddr::new(B4.into(), 7500);
    let listener = b.tcp_listen(server, 8, false).unwrap();
    let local = SocketAddr::new(A4.into(), 41_000);

    // The first client: connects, talks, and vanishes (its link is cut, then it is gone).
    let (a1, la1) = Stack::new(config(1));
    let la1 = Arc::new(la1);
    let up = wire(la1.clone(), lb.clone());
    let down = wire(lb.clone(), la1.clone());
    let mut c1 = a1
        .tcp_connect(Some(local), server, TcpOptions::default())
        .await
        .unwrap();
    let mut stale = listener.accept().await.unwrap();
    c1.write_all(b"one").await.unwrap();
    let mut buf = [0u8; 3];
    stale.read_exact(&mut buf).await.unwrap();
    up.abort();
    down.abort();
    let _ = (up.await, down.await);
    std::mem::forget(c1); // never closed: a crash sends nothing
    std::mem::forget(a1);

    // The second client: same address, same port.
    let (a2, la2) = Stack::new(config(1));
    let la2 = Arc::new(la2);
    let _up = wire(la2.clone(), lb.clone());
    let _down = wire(lb.clone(), la2.clone());
    let start = Instant::now();
    let connecting = tokio::spawn(async move {
        a2.tcp_connect(Some(local), server, TcpOptions::default())
            .await
            .map(|c| (a2, c))
    });
    // The server's stale connection is reset by the new SYN; the server closes it, as a
    // program does on ECONNRESET.
    let ended = tokio::time::timeout(Duration::from_secs(2), stale.read(&mut buf))
        .await
        .expect("the stale connection ends");
    assert!(
        matches!(&ended, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "stale connection: {ended:?}"
    );
    drop(stale);
    let (_a2, mut c2) = tokio::time::timeout(Duration::from_secs(4), connecting)
        .await
        .expect("connected within 4 s (SYN retransmissions)")
        .unwrap()
        .expect("connected, not refused");
    let took = start.elapsed();
    let mut fresh = tokio::time::timeout(Duration::from_secs(3), listener.accept())
        .await
        .expect("the server accepts the new connection")
        .unwrap();
    c2.write_all(b"two").await.unwrap();
    fresh.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"two");
    eprintln!("reconnected in {took:?}");
}
