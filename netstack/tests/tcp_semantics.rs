//! TCP behaviour a program can observe: half-close, resets, refusals, accept backlogs,
//! dual-stack listeners.
mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use netstack::{Error, TcpOptions, TcpStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

#[tokio::test]
async fn half_close_delivers_eof_and_keeps_other_direction() {
    let (a, b) = pair(LinkParams::clean(), LinkParams::clean());
    let l = b.tcp_listen(sa(B4, 7001), 4, false).unwrap();
    let server = tokio::spawn(async move {
        let mut s = l.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap(); // ends at the client's FIN
        assert_eq!(got, b"ping");
        s.write_all(b"pong").await.unwrap();
        // dropped: graceful FIN
    });
    let mut c = timeout(T, a.tcp_connect(None, sa(B4, 7001), TcpOptions::default()))
        .await
        .unwrap()
        .unwrap();
    c.write_all(b"ping").await.unwrap();
    c.shutdown().await.unwrap();
    assert_eq!(
        c.write(b"more").await.unwrap_err().raw_os_error(),
        Some(libc::EPIPE)
    );
    let mut back = Vec::new();
    timeout(T, c.read_to_end(&mut back)).await.unwrap().unwrap();
    assert_eq!(back, b"pong");
    server.await.unwrap();
}

#[tokio::test]
async fn peer_reset_reads_as_econnreset() {
    let (a, b) = pair(LinkParams::clean(), LinkParams::clean());
    let l = b.tcp_listen(sa(B4, 7002), 4, false).unwrap();
    let c = timeout(T, a.tcp_connect(None, sa(B4, 7002), TcpOptions::default()))
        .await
        .unwrap()
        .unwrap();
    let s = timeout(T, l.accept()).await.unwrap().unwrap();
    s.abort();
    let mut buf = [0u8; 16];
    let mut r = &c;
    let err = timeout(T, r.read(&mut buf)).await.unwrap().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ECONNRESET), "{err}");
    let mut w = &c;
    let err = w.write(b"x").await.unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ECONNRESET), "{err}");
    let mut sr = &s;
    assert_eq!(
        sr.read(&mut buf).await.unwrap_err().raw_os_error(),
        Some(libc::ECONNABORTED)
    );
}

#[tokio::test]
async fn connect_to_closed_port_is_refused_and_outside_network_unreachable() {
    let (a, b) = pair(LinkParams::clean(), LinkParams::clean());
    let e = timeout(T, a.tcp_connect(None, sa(B4, 7003), TcpOptions::default()))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, Error::ConnectionRefused { .. }), "{e}");
    assert_eq!(e.errno(), libc::ECONNREFUSED);
    let e6 = timeout(
        T,
        a.tcp_connect(None, sa(b6(), 7003), TcpOptions::default()),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(e6.errno(), libc::ECONNREFUSED);
    let far: IpAddr = "192.168.99.1".parse().unwrap();
    let e = a
        .tcp_connect(None, sa(far, 80), TcpOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.errno(), libc::ENETUNREACH);
    assert!(!a.is_virtual(far) && a.is_virtual("10.7.0.200".parse().unwrap()));
    // After a listener is dropped, SYNs get RST again.
    let l = b.tcp_listen(sa(B4, 7004), 4, false).unwrap();
    drop(l);
    let e = timeout(T, a.tcp_connect(None, sa(B4, 7004), TcpOptions::default()))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.errno(), libc::ECONNREFUSED);
}

#[tokio::test]
async fn connect_without_answer_times_out() {
    let dead = LinkParams {
        loss: 1.0,
        ..LinkParams::clean()
    };
    let (a, _b) = pair(dead, dead);
    let opts = TcpOptions {
        connect_timeout: Duration::from_millis(600),
        ..TcpOptions::default()
    };
    let start = Instant::now();
    let e = timeout(T, a.tcp_connect(None, sa(B4, 7005), opts))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.errno(), libc::ETIMEDOUT, "{e}");
    assert!(start.elapsed() >= Duration::from_millis(500));
}

#[tokio::test]
async fn listen_conflicts_and_ephemeral_port() {
    let (_a, b) = pair(LinkParams::clean(), LinkParams::clean());
    let l = b.tcp_listen(sa(B4, 7006), 4, false).unwrap();
    assert_eq!(
        b.tcp_listen(sa(B4, 7006), 4, false).unwrap_err().errno(),
        libc::EADDRINUSE
    );
    assert_eq!(
        b.tcp_listen(sa([0, 0, 0, 0], 7006), 4, false)
            .unwrap_err()
            .errno(),
        libc::EADDRINUSE
    );
    assert_eq!(
        b.tcp_listen(sa(A4, 7007), 4, false).unwrap_err().errno(),
        libc::EADDRNOTAVAIL
    );
    let e = b.tcp_listen(sa([0, 0, 0, 0], 0), 4, false).unwrap();
    assert_ne!(e.local_addr().port(), 0);
    drop(l);
    b.tcp_listen(sa(B4, 7006), 4, false).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_simultaneous_connects_all_accepted() {
    let (a, b) = pair(LinkParams::clean(), LinkParams::clean());
    let l = b.tcp_listen(sa(B4, 7010), 1024, false).unwrap();
    let small = TcpOptions {
        recv_buffer: 16 << 10,
        send_buffer: 16 << 10,
        ..TcpOptions::default()
    };
    l.set_accept_options(small.clone());
    let start = Instant::now();
    let clients: Vec<_> = (0..1000)
        .map(|_| {
            let a = a.clone();
            let o = small.clone();
            tokio::spawn(async move { a.tcp_connect(None, sa(B4, 7010), o).await })
        })
        .collect();
    let mut accepted = std::collections::HashSet::new();
    while accepted.len() < 1000 {
        let s = timeout(Duration::from_secs(30), l.accept())
            .await
            .expect("accepts keep coming")
            .unwrap();
        assert!(
            accepted.insert(s.peer_addr()),
            "each connection accepted once"
        );
    }
    let mut connected = Vec::new();
    for c in clients {
        connected.push(c.await.unwrap().expect("every connect succeeds"));
    }
    assert_eq!(l.pending(), 0);
    eprintln!("1000 connects accepted in {:?}", start.elapsed());
    let mut locals: Vec<_> = connected.iter().map(|c| c.local_addr()).collect();
    locals.sort();
    locals.dedup();
    assert_eq!(locals.len(), 1000);
    assert!(locals.iter().all(|l| accepted.contains(l)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_full_leaves_syns_unanswered_until_room() {
    let (a, b) = pair(LinkParams::clean(), LinkParams::clean());
    let l = b.tcp_listen(sa(B4, 7011), 8, false).unwrap();
    let n = 40;
    let start = Instant::now();
    let clients: Vec<_> = (0..n)
        .map(|i| {
            let a = a.clone();
            tokio::spawn(async move {
                let mut c = a
                    .tcp_connect(None, sa(B4, 7011), TcpOptions::default())
                    .await?;
                c.write_all(&[i as u8])
                    .await
                    .map_err(|_| Error::BrokenPipe)?;
                let mut b = [0u8; 1];
                c.read_exact(&mut b).await.map_err(|_| Error::BrokenPipe)?;
                assert_eq!(b[0], i as u8);
                Ok::<_, Error>(())
            })
        })
        .collect();
    // Nobody accepts yet: exactly `backlog` connections complete; the rest wait, unanswered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(l.pending(), 8, "accept queue holds the backlog");
    assert!(
        clients.iter().all(|c| !c.is_finished()),
        "no client was refused or failed"
    );
    let mut pending = l.pending_watch();
    assert_eq!(*pending.borrow_and_update(), 8);
    // Slow accepts: each frees a slot; retried SYNs fill it.
    let mut served = 0;
    while served < n {
        let s = timeout(Duration::from_secs(20), l.accept())
            .await
            .expect("no hang")
            .unwrap();
        assert!(l.pending() <= 8);
        tokio::spawn(async move {
            let mut s = s;
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
            s.write_all(&b).await.unwrap();
        });
        served += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for c in clients {
        timeout(Duration::from_secs(10), c)
            .await
            .unwrap()
            .unwrap()
            .expect("every client served");
    }
    eprintln!(
        "{n} clients through a backlog of 8 in {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn dual_stack_listener_honours_v6only() {
    let (a, b) = pair(LinkParams::clean(), LinkParams::clean());
    let any6 = sa(std::net::Ipv6Addr::UNSPECIFIED, 7020);
    let l = b.tcp_listen(any6, 4, false).unwrap();
    let c4 = timeout(T, a.tcp_connect(None, sa(B4, 7020), TcpOptions::default()))
        .await
        .unwrap()
        .unwrap();
    let s4 = l.accept().await.unwrap();
    assert_eq!(s4.peer_addr(), c4.local_addr());
    assert_eq!(s4.peer_addr().ip(), IpAddr::from(A4));
    let c6 = timeout(
        T,
        a.tcp_connect(None, sa(b6(), 7020), TcpOptions::default()),
    )
    .await
    .unwrap()
    .unwrap();
    let s6 = l.accept().await.unwrap();
    assert_eq!(s6.peer_addr(), c6.local_addr());
    // A v4-mapped destination is plain IPv4.
    let mapped = sa(B4.to_ipv6_mapped(), 7020);
    let _cm = timeout(T, a.tcp_connect(None, mapped, TcpOptions::default()))
        .await
        .unwrap()
        .unwrap();
    l.accept().await.unwrap();
    // The dual-stack listener holds the IPv4 port too.
    assert_eq!(
        b.tcp_listen(sa([0, 0, 0, 0], 7020), 4, false)
            .unwrap_err()
            .errno(),
        libc::EADDRINUSE
    );
    drop(l);

    let l6 = b.tcp_listen(any6, 4, true).unwrap();
    let e = timeout(T, a.tcp_connect(None, sa(B4, 7020), TcpOptions::default()))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        e.errno(),
        libc::ECONNREFUSED,
        "v6only listener ignores IPv4"
    );
    let l4 = b
        .tcp_listen(sa([0, 0, 0, 0], 7020), 4, false)
        .expect("v4 listener coexists with a v6only one");
    timeout(T, a.tcp_connect(None, sa(B4, 7020), TcpOptions::default()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        l4.accept().await.unwrap().peer_addr().ip(),
        IpAddr::from(A4)
    );
    timeout(
        T,
        a.tcp_connect(None, sa(b6(), 7020), TcpOptions::default()),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(l6.accept().await.unwrap().peer_addr().is_ipv6());
}

#[tokio::test]
async fn options_and_info_reflect_the_connection() {
    let (a, b) = pair(LinkParams::clean(), LinkParams::clean());
    let l = b.tcp_listen(sa(B4, 7030), 4, false).unwrap();
    let opts = TcpOptions {
        nodelay: true,
        recv_buffer: 300_000,
        send_buffer: 200_000,
        ..TcpOptions::default()
    };
    let c = timeout(T, a.tcp_connect(None, sa(B4, 7030), opts))
        .await
        .unwrap()
        .unwrap();
    let _s = l.accept().await.unwrap();
    let i = c.tcp_info();
    assert_eq!(i.state, netstack::TcpState::Established);
    assert_eq!(i.state.linux_code(), 1);
    assert!(i.nodelay && c.nodelay());
    assert_eq!((i.recv_buffer, i.send_buffer), (300_000, 200_000));
    assert!(i.rtt.is_some());
    c.set_nodelay(false);
    c.set_keepalive(Some(Duration::from_secs(30)));
    let i = c.tcp_info();
    assert!(!i.nodelay);
    assert_eq!(i.keepalive, Some(Duration::from_secs(30)));
}

#[tokio::test]
async fn the_segment_size_is_the_smaller_of_both_ends() {
    // Both ends' segment sizes once connected to `to` (port 7031) from `a`.
    async fn sizes(a: &netstack::Stack, b: &netstack::Stack, to: IpAddr) -> [Option<u16>; 2] {
        let l = b.tcp_listen(sa(to, 7031), 4, false).unwrap();
        let c = timeout(T, a.tcp_connect(None, sa(to, 7031), TcpOptions::default()))
            .await
            .unwrap()
            .unwrap();
        let s = l.accept().await.unwrap();
        [c.tcp_info().mss, s.tcp_info().mss]
    }
    // A at the default MTU (9000), B at 1500: each sends segments B can take, as two
    // Linux hosts would after the SYNs' MSS options, and reports that size. IPv6 headers
    // are 20 bytes longer.
    let mut cb = config(2);
    cb.mtu = 1500;
    let (a, b) = pair_with(config(1), cb, LinkParams::clean(), LinkParams::clean());
    let b6: IpAddr = "fd7a::2".parse().unwrap();
    assert_eq!(sizes(&a, &b, B4.into()).await, [Some(1460); 2]);
    assert_eq!(sizes(&a, &b, b6).await, [Some(1440); 2]);
    // Both ends at 9000.
    let (a, b) = pair(LinkParams::clean(), LinkParams::clean());
    assert_eq!(sizes(&a, &b, B4.into()).await, [Some(8960); 2]);
}

/// Two stacks on a clean link and a connection from A to B's `port`: (A, B, A's end,
/// B's end).
async fn connected_pair(port: u16) -> (netstack::Stack, netstack::Stack, TcpStream, TcpStream) {
    let (a, b) = pair(LinkParams::clean(), LinkParams::clean());
    let l = b.tcp_listen(sa(B4, port), 4, false).unwrap();
    let c = timeout(T, a.tcp_connect(None, sa(B4, port), TcpOptions::default()))
        .await
        .unwrap()
        .unwrap();
    let s = l.accept().await.unwrap();
    (a, b, c, s)
}

#[tokio::test]
async fn an_idle_connection_gives_its_buffers_back_and_goes_on_intact() {
    let (a, b, mut c, mut s) = connected_pair(7034).await;
    let pattern = |n: usize, k: u8| -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(k))
            .collect()
    };
    // One request and its answer, then nothing.
    c.write_all(&pattern(64, 1)).await.unwrap();
    let mut got = vec![0u8; 64];
    s.read_exact(&mut got).await.unwrap();
    s.write_all(&pattern(64, 2)).await.unwrap();
    c.read_exact(&mut got).await.unwrap();
    assert_eq!(got, pattern(64, 2));
    assert_eq!(
        (a.stats().buffers_released, b.stats().buffers_released),
        (0, 0)
    );
    // Idle for one to two trim periods (2 s each): both ends release.
    let start = Instant::now();
    while a.stats().buffers_released == 0 || b.stats().buffers_released == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "buffers not released after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The pages read as zeros now; the ring positions are past the first request. More
    // data both ways, across the whole buffers, arrives intact.
    let big = pattern(3 << 20, 3);
    let send = big.clone();
    let writer = tokio::spawn(async move {
        c.write_all(&send).await.unwrap();
        let mut back = vec![0u8; 3 << 20];
        c.read_exact(&mut back).await.unwrap();
        back
    });
    let mut got = vec![0u8; 3 << 20];
    timeout(T, s.read_exact(&mut got)).await.unwrap().unwrap();
    assert!(got == big, "client to server");
    timeout(T, s.write_all(&big)).await.unwrap().unwrap();
    let back = timeout(T, writer).await.unwrap().unwrap();
    assert!(back == big, "server to client");
}

#[tokio::test]
async fn a_connection_in_time_wait_gives_its_buffers_back() {
    let (a, b, mut c, mut s) = connected_pair(7035).await;
    // A request and its answer, then the server closes first (as a server that answers
    // once does): its end waits in TIME-WAIT with nobody to read or write it.
    c.write_all(b"request").await.unwrap();
    let mut got = [0u8; 7];
    s.read_exact(&mut got).await.unwrap();
    s.write_all(b"answer!").await.unwrap();
    drop(s);
    c.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"answer!");
    assert_eq!(c.read(&mut got).await.unwrap(), 0, "end of stream");
    drop(c);
    let start = Instant::now();
    while b.stats().buffers_released == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "buffers not released after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(b.stats().tcp_connections, 1, "released while in TIME-WAIT");
    assert_eq!(
        a.stats().buffers_released,
        0,
        "the side that closed last has no TIME-WAIT"
    );
}
