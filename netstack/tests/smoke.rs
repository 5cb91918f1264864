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

#[tokio::test]
async fn link_ends_when_stack_is_gone_and_arp_is_answered() {
    let (stack, link) = netstack::Stack::new(config(1));
    // An ARP request for our address from 10.7.0.9 gets a reply.
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[2, 0, 0, 0, 0, 9]);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[2, 0, 0, 0, 0, 9, 10, 7, 0, 9]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[10, 7, 0, 1]);
    link.send(f).await;
    let mut out = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), link.recv_many(&mut out, 16))
        .await
        .unwrap();
    assert_eq!(n, 1);
    let r = &out[0];
    assert_eq!(&r[0..6], &[2, 0, 0, 0, 0, 9], "unicast to the asker");
    assert_eq!(&r[12..14], &[0x08, 0x06]);
    assert_eq!(&r[20..22], &[0, 2], "an ARP reply");
    assert_eq!(&r[22..28], &[2, 0, 0, 0, 0, 1], "with our MAC");
    assert_eq!(&r[28..32], &[10, 7, 0, 1]);
    link.recycle(out.drain(..));
    drop(stack);
    let n = tokio::time::timeout(Duration::from_secs(5), link.recv_many(&mut out, 16))
        .await
        .unwrap();
    assert_eq!(n, 0, "end of stream once the stack is gone");
    assert!(link.is_closed());
}

#[tokio::test]
async fn connections_to_our_own_address_loop_back() {
    let (a, _b) = pair(LinkParams::clean(), LinkParams::clean());
    let l = a
        .tcp_listen(SocketAddr::new(A4.into(), 7100), 4, false)
        .unwrap();
    let mut c = tokio::time::timeout(
        Duration::from_secs(5),
        a.tcp_connect(
            None,
            SocketAddr::new(A4.into(), 7100),
            TcpOptions::default(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let mut s = l.accept().await.unwrap();
    assert_eq!(s.peer_addr(), c.local_addr());
    c.write_all(b"self").await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"self");
    let u = a.udp_bind(SocketAddr::new(a6().into(), 0), true).unwrap();
    u.send_to(b"me", u.local_addr()).await.unwrap();
    let mut d = [0u8; 4];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), u.recv_from(&mut d))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((&d[..n], from), (&b"me"[..], u.local_addr()));
}
