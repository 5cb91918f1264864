mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use netstack::TcpOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn tcp_echo_v4() {
    let (a, b) = pair(LinkParams::clean(), LinkParams::clean());
    let l = b
        .tcp_listen(SocketAddr::new(B4.into(), 7000), 16, false)
        .unwrap();
    let server = tokio::spawn(async move {
        let mut s = l.accept().await.unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(&buf).await.unwrap();
    });
    let mut c = tokio::time::timeout(
        Duration::from_secs(5),
        a.tcp_connect(
            None,
            SocketAddr::new(B4.into(), 7000),
            TcpOptions::default(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    c.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    c.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");
    server.await.unwrap();
}
