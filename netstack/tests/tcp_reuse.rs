//! Many short connections where the server closes first (as a web server does): the
//! server keeps each closed connection in TIME-WAIT, and new connections must not stall
//! on them.
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use netstack::TcpOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serve `n` connections: read 4 bytes, answer them, close first.
fn serve(l: netstack::TcpListener, n: usize) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for _ in 0..n {
            let mut s = l.accept().await.unwrap();
            let mut b = [0u8; 4];
            s.read_exact(&mut b).await.unwrap();
            s.write_all(&b).await.unwrap();
            drop(s);
        }
    })
}

/// Connect, ask, read the answer and the server's close.
async fn ask(
    a: &netstack::Stack,
    local: Option<SocketAddr>,
    server: SocketAddr,
) -> netstack::TcpStream {
    let mut c = a
        .tcp_connect(local, server, TcpOptions::default())
        .await
        .unwrap();
    c.write_all(b"ping").await.unwrap();
    let mut b = Vec::new();
    c.read_to_end(&mut b).await.unwrap();
    assert_eq!(b, b"ping");
    c
}

#[tokio::test]
async fn thousand_short_connections_do_not_stall_on_time_wait() {
    let (a, b) = pair(LinkParams::clean(), LinkParams::clean());
    let server = SocketAddr::new(B4.into(), 7400);
    let n = 1000;
    let done = serve(b.tcp_listen(server, 64, false).unwrap(), n);
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..n {
        let t = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), ask(&a, None, server))
            .await
            .expect("connection within 10 s");
        slowest = slowest.max(t.elapsed());
    }
    done.await.unwrap();
    assert!(
        slowest < Duration::from_millis(500),
        "slowest of {n} connections took {slowest:?} (a SYN dropped on a TIME-WAIT 4-tuple?), all took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn same_four_tuple_again_while_the_server_is_in_time_wait() {
    let (a, b) = pair(LinkParams::clean(), LinkParams::clean());
    let server = SocketAddr::new(B4.into(), 7401);
    let done = serve(b.tcp_listen(server, 8, false).unwrap(), 2);
    let local = SocketAddr::new(A4.into(), 40_001);
    drop(ask(&a, Some(local), server).await);
    // The client saw the server's FIN first, so its side is gone once closed; the server's
    // side waits in TIME-WAIT. The same 4-tuple must connect again at once.
    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match a
                .tcp_connect(Some(local), server, TcpOptions::default())
                .await
            {
                Ok(mut c) => {
                    c.write_all(b"pong").await.unwrap();
                    let mut b = Vec::new();
                    c.read_to_end(&mut b).await.unwrap();
                    assert_eq!(b, b"pong");
                    return;
                }
                // Our own side may still be closing for a moment (EADDRINUSE).
                Err(netstack::Error::AddrInUse { .. }) => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                Err(e) => panic!("second connection: {e}"),
            }
        }
    })
    .await
    .expect("second connection within 5 s");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "second connection took {:?}",
        t.elapsed()
    );
    done.await.unwrap();
}
