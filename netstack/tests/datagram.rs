//! UDP and ICMP echo over IPv4 and IPv6.
mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;
use netstack::IpFamily;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

#[tokio::test]
async fn udp_round_trip_v4_and_v6() {
    let (a, b) = pair(LinkParams::clean(), LinkParams::clean());
    for (server_ip, any) in [
        (IpAddr::from(B4), IpAddr::from([0u8; 4])),
        (b6().into(), std::net::Ipv6Addr::UNSPECIFIED.into()),
    ] {
        let srv = b.udp_bind(sa(server_ip, 5353), true).unwrap();
        let cli = a.udp_bind(sa(any, 0), true).unwrap();
        assert_ne!(cli.local_addr().port(), 0);
        cli.send_to(b"question", sa(server_ip, 5353)).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = timeout(T, srv.recv_from(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf[..n], b"question");
        assert_eq!(from.port(), cli.local_addr().port());
        assert_eq!(from.ip().is_ipv4(), server_ip.is_ipv4());
        srv.send_to(b"answer", from).await.unwrap();
        let (n, from2) = timeout(T, cli.recv_from(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf[..n], b"answer");
        assert_eq!(from2, sa(server_ip, 5353));
    }
}

/// SO_REUSEADDR as iperf3's UDP server uses it: one socket bound to the port is
/// connected to the first client, a second one bound to the same port takes the others.
#[tokio::test]
async fn udp_reuse_addr_shares_a_port_and_the_connected_socket_gets_its_peer() {
    let (a, b) = pair(LinkParams::clean(), LinkParams::clean());
    let any = IpAddr::from([0u8; 4]);
    let first = b.udp_bind_reuse(sa(any, 5201), false).unwrap();
    assert!(
        b.udp_bind(sa(any, 5201), false).is_err(),
        "without SO_REUSEADDR the port is taken"
    );
    let c1 = a.udp_bind(sa(A4, 0), false).unwrap();
    let c2 = a.udp_bind(sa(A4, 0), false).unwrap();
    first.connect(c1.local_addr()).unwrap();
    let second = b.udp_bind_reuse(sa(any, 5201), false).unwrap();
    let mut buf = [0u8; 64];
    for round in 0..3 {
        c2.send_to(b"from c2", sa(B4, 5201)).await.unwrap();
        c1.send_to(b"from c1", sa(B4, 5201)).await.unwrap();
        let (n, from) = timeout(T, first.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (&buf[..n], from),
            (&b"from c1"[..], c1.local_addr()),
            "round {round}: the connected socket gets its peer's datagrams"
        );
        let (n, from) = timeout(T, second.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (&buf[..n], from),
            (&b"from c2"[..], c2.local_addr()),
            "round {round}: the unconnected one gets the others"
        );
    }
}

#[tokio::test]
async fn udp_connect_filters_and_size_limits() {
    let (a, b) = pair(LinkParams::clean(), LinkParams::clean());
    let srv = b.udp_bind(sa(B4, 6000), false).unwrap();
    let good = a.udp_bind(sa(A4, 0), false).unwrap();
    let other = a.udp_bind(sa(A4, 0), false).unwrap();
    srv.connect(good.local_addr()).unwrap();
    assert_eq!(srv.peer_addr().unwrap(), good.local_addr());
    other.send_to(b"intruder", sa(B4, 6000)).await.unwrap();
    good.send_to(b"friend", sa(B4, 6000)).await.unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = timeout(T, srv.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(
        (&buf[..n], from),
        (&b"friend"[..], good.local_addr()),
        "only the connected peer gets through"
    );
    srv.send(b"reply").await.unwrap();
    let (n, _) = timeout(T, good.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], b"reply");

    let max = good.max_payload();
    assert_eq!(max, netstack::DEFAULT_MTU - 20 - 8);
    let big = vec![1u8; max + 1];
    assert_eq!(
        good.send_to(&big, sa(B4, 6000)).await.unwrap_err().errno(),
        libc::EMSGSIZE
    );
    srv.connect(sa([0, 0, 0, 0], 0)).unwrap();
    good.send_to(&big[..max], sa(B4, 6000)).await.unwrap();
    let mut large = vec![0u8; netstack::DEFAULT_MTU];
    let (n, _) = timeout(T, srv.recv_from(&mut large))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, max, "a full-MTU datagram arrives whole");
    // Truncation reports the full length, as MSG_TRUNC does.
    good.send_to(b"0123456789", sa(B4, 6000)).await.unwrap();
    let mut small = [0u8; 4];
    let r = timeout(
        T,
        std::future::poll_fn(|cx| srv.poll_recv_from(Some(cx), &mut small, false)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((r.0, r.1), (4, 10));
    assert_eq!(&small, b"0123");

    assert_eq!(
        a.udp_bind(sa(A4, good.local_addr().port()), false)
            .unwrap_err()
            .errno(),
        libc::EADDRINUSE
    );
    let far = a.udp_bind(sa([0, 0, 0, 0], 0), false).unwrap();
    assert_eq!(
        far.send_to(b"x", sa([192, 168, 99, 1], 9))
            .await
            .unwrap_err()
            .errno(),
        libc::ENETUNREACH
    );
}

#[tokio::test]
async fn udp_dual_stack_socket_receives_ipv4() {
    let (a, b) = pair(LinkParams::clean(), LinkParams::clean());
    let srv = b
        .udp_bind(sa(std::net::Ipv6Addr::UNSPECIFIED, 6100), false)
        .unwrap();
    let cli = a.udp_bind(sa([0, 0, 0, 0], 0), false).unwrap();
    cli.send_to(b"v4", sa(B4, 6100)).await.unwrap();
    let mut buf = [0u8; 8];
    let (n, from) = timeout(T, srv.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], b"v4");
    assert_eq!(from.ip(), IpAddr::from(A4));
    srv.send_to(b"ok", from).await.unwrap();
    assert_eq!(
        timeout(T, cli.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap()
            .0,
        2
    );
    let only6 = b
        .udp_bind(sa(std::net::Ipv6Addr::UNSPECIFIED, 6101), true)
        .unwrap();
    assert_eq!(
        only6.send_to(b"x", sa(A4, 9)).await.unwrap_err().errno(),
        libc::ENETUNREACH
    );
}

fn echo_request(v6: bool, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut m = vec![if v6 { 128 } else { 8 }, 0, 0, 0, 0x12, 0x34];
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(data);
    m
}

#[tokio::test]
async fn icmp_echo_round_trip_v4_and_v6() {
    let (a, _b) = pair(LinkParams::clean(), LinkParams::clean());
    for (family, dst) in [
        (IpFamily::V4, IpAddr::from(B4)),
        (IpFamily::V6, b6().into()),
    ] {
        let v6 = family == IpFamily::V6;
        let s = a.icmp_bind(family, None).unwrap();
        for seq in 1..=3u16 {
            s.send_to(&echo_request(v6, seq, b"ping data"), dst)
                .await
                .unwrap();
            let mut buf = [0u8; 64];
            let (n, from) = timeout(T, s.recv_from(&mut buf)).await.unwrap().unwrap();
            assert_eq!(from, dst);
            assert_eq!(buf[0], if v6 { 129 } else { 0 }, "an echo reply");
            assert_eq!(
                u16::from_be_bytes([buf[4], buf[5]]),
                s.ident(),
                "identifier rewritten to the socket's"
            );
            assert_eq!(u16::from_be_bytes([buf[6], buf[7]]), seq);
            assert_eq!(&buf[8..n], b"ping data");
        }
        let mut bogus = echo_request(v6, 1, b"");
        bogus[0] = 13;
        assert_eq!(
            s.send_to(&bogus, dst).await.unwrap_err().errno(),
            libc::EINVAL
        );
    }
    let s = a.icmp_bind(IpFamily::V4, Some(777)).unwrap();
    assert_eq!(s.ident(), 777);
    assert_eq!(
        a.icmp_bind(IpFamily::V4, Some(777)).unwrap_err().errno(),
        libc::EADDRINUSE
    );
    a.icmp_bind(IpFamily::V6, Some(777))
        .expect("identifiers are per family");
}

/// Raw ICMP sockets (raw(7)): an IPv4 one receives replies with their IP header and sends
/// the message as built (checksum included); an ICMPv6 one gets no header and has its
/// checksum computed; an `IPPROTO_RAW` one sends a whole IPv4 packet. The peer's stack
/// answers each echo request itself.
#[tokio::test]
async fn raw_icmp_round_trips_v4_v6_and_header_included() {
    let (a, _b) = pair(LinkParams::clean(), LinkParams::clean());
    let mut buf = [0u8; 256];

    let v4 = a.raw_bind(IpFamily::V4, 1).unwrap();
    let mut req = echo_request(false, 7, b"raw four");
    let c = checksum(&req);
    req[2..4].copy_from_slice(&c.to_be_bytes());
    v4.send_to(&req, B4.into()).await.unwrap();
    let (n, from) = timeout(T, v4.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(from, IpAddr::from(B4));
    assert_eq!(buf[0] >> 4, 4, "IPv4 header first");
    let hl = usize::from(buf[0] & 0x0f) * 4;
    assert_eq!(&buf[12..16], &B4.octets(), "header source");
    assert_eq!(buf[9], 1, "protocol ICMP");
    assert_eq!(buf[hl], 0, "an echo reply");
    assert_eq!(
        &buf[hl + 4..hl + 6],
        &[0x12, 0x34],
        "identifier kept as sent"
    );
    assert_eq!(&buf[hl + 8..n], b"raw four");

    // IPPROTO_RAW: the program's own header (source, length, checksum, id left at 0).
    let hdrincl = a.raw_bind(IpFamily::V4, netstack::PROTO_RAW).unwrap();
    let mut pkt = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 1, 0, 0, 0, 0, 0, 0];
    pkt.extend_from_slice(&B4.octets());
    let mut req = echo_request(false, 8, b"hdrincl");
    let c = checksum(&req);
    req[2..4].copy_from_slice(&c.to_be_bytes());
    pkt.extend_from_slice(&req);
    assert_eq!(hdrincl.send_to(&pkt, B4.into()).await.unwrap(), pkt.len());
    let (n, _) = timeout(T, v4.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(
        &buf[hl + 8..n],
        b"hdrincl",
        "the reply to the hand-built packet"
    );
    assert_eq!(
        hdrincl
            .send_to(&[0x45, 0], B4.into())
            .await
            .unwrap_err()
            .errno(),
        libc::EINVAL
    );

    let v6 = a.raw_bind(IpFamily::V6, 58).unwrap();
    v6.send_to(&echo_request(true, 9, b"raw six"), b6().into())
        .await
        .unwrap();
    loop {
        let (n, from) = timeout(T, v6.recv_from(&mut buf)).await.unwrap().unwrap();
        if buf[0] != 129 {
            continue; // neighbor discovery reaches ICMPv6 raw sockets too
        }
        assert_eq!(from, IpAddr::from(b6()));
        assert_eq!(&buf[8..n], b"raw six");
        break;
    }
    assert_eq!(
        a.raw_bind(IpFamily::V6, 17).unwrap_err().errno(),
        libc::EPROTONOSUPPORT
    );
}

/// A connected UDP socket whose datagram met a closed port learns it from the peer's ICMP
/// port unreachable: its next receive fails with `ECONNREFUSED`, once.
#[tokio::test]
async fn a_closed_port_refuses_a_connected_udp_socket_once() {
    let (a, _b) = pair(LinkParams::clean(), LinkParams::clean());
    for (dst, any) in [
        (IpAddr::from(B4), IpAddr::from([0u8; 4])),
        (b6().into(), std::net::Ipv6Addr::UNSPECIFIED.into()),
    ] {
        let s = a.udp_bind(sa(any, 0), true).unwrap();
        s.connect(sa(dst, 7109)).unwrap();
        s.send(b"anyone?").await.unwrap();
        let mut buf = [0u8; 16];
        let e = timeout(T, s.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(e.errno(), libc::ECONNREFUSED);
        assert_eq!(s.try_recv_from(&mut buf).unwrap_err().errno(), libc::EAGAIN);
        // Unconnected sockets are not told (no IP_RECVERR).
        let u = a.udp_bind(sa(any, 0), true).unwrap();
        u.send_to(b"anyone?", sa(dst, 7109)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(u.try_recv_from(&mut buf).unwrap_err().errno(), libc::EAGAIN);
    }
}

fn checksum(m: &[u8]) -> u16 {
    let mut acc = 0u32;
    for c in m.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}
