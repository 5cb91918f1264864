//! Closing a connection over a link that loses the FIN and duplicates data: the peer
//! must still see end-of-file.
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use netstack::{FrameLink, Stack, TcpOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Offsets in an Ethernet frame holding IPv4 (no options, as netstack sends) and TCP.
const IP: usize = 14;
const TCP: usize = IP + 20;

/// A TCP segment's (flags, payload length), for IPv4 frames.
fn tcp(frame: &[u8]) -> Option<(u8, usize)> {
    if frame.len() < TCP + 20 || frame[12..14] != [0x08, 0x00] || frame[IP + 9] != 6 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([frame[IP + 2], frame[IP + 3]]));
    let doff = usize::from(frame[TCP + 12] >> 4) * 4;
    Some((frame[TCP + 13], total.checked_sub(20 + doff)?))
}

/// Carry A's frames to B, dropping A's first FIN and sending each data segment six
/// times: B answers every duplicate with the same ACK, so A sees a run of duplicate ACKs
/// that acknowledge all its data but not its FIN.
async fn lose_fin_and_duplicate(from: Arc<FrameLink>, to: Arc<FrameLink>) {
    let mut batch = Vec::new();
    let mut fin_dropped = false;
    while from.recv_many(&mut batch, 64).await > 0 {
        for f in batch.drain(..) {
            match tcp(&f) {
                Some((flags, _)) if flags & 0x01 != 0 && !fin_dropped => fin_dropped = true,
                Some((_, len)) if len > 0 => {
                    for _ in 0..5 {
                        to.send(f.clone()).await;
                    }
                    to.send(f).await;
                }
                _ => to.send(f).await,
            }
        }
    }
}

async fn carry_clean(from: Arc<FrameLink>, to: Arc<FrameLink>) {
    let mut batch = Vec::new();
    while from.recv_many(&mut batch, 64).await > 0 {
        for f in batch.drain(..) {
            to.send(f).await;
        }
    }
}

#[tokio::test]
async fn lost_fin_after_duplicate_acks_is_retransmitted() {
    let (a, la) = Stack::new(config(1));
    let (b, lb) = Stack::new(config(2));
    let (la, lb) = (Arc::new(la), Arc::new(lb));
    tokio::spawn(lose_fin_and_duplicate(la.clone(), lb.clone()));
    tokio::spawn(carry_clean(lb, la));

    let l = b
        .tcp_listen(SocketAddr::new(B4.into(), 7300), 4, false)
        .unwrap();
    let mut c = a
        .tcp_connect(
            None,
            SocketAddr::new(B4.into(), 7300),
            TcpOptions::default(),
        )
        .await
        .unwrap();
    let mut s = l.accept().await.unwrap();
    // One segment of data, then a FIN on its own.
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    c.write_all(&data).await.unwrap();
    c.shutdown().await.unwrap();
    // B reads only later, so its ACKs to the duplicates all carry the same window.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
        .await
        .expect("end-of-file within 10 s although the first FIN was lost")
        .unwrap();
    assert_eq!(got, data);
}

// ---- a hand-driven peer -------------------------------------------------------------------

const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const STACK_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
const PEER_PORT: u16 = 40000;

/// A TCP segment the stack sent.
#[derive(Debug)]
struct Seg {
    flags: u8,
    seq: u32,
    len: usize,
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// An IPv4 TCP segment from the peer (A4:PEER_PORT) to the stack (B4:`port`); checksums
/// are left zero (the stack does not verify received checksums).
fn segment(port: u16, flags: u8, seq: u32, ack: u32, win: u16, payload: &[u8]) -> Vec<u8> {
    let opts: &[u8] = if flags & SYN != 0 {
        &[2, 4, 0x05, 0x78]
    } else {
        &[]
    };
    let tcp_len = 20 + opts.len() + payload.len();
    let mut f = Vec::with_capacity(TCP + tcp_len);
    f.extend_from_slice(&STACK_MAC);
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&A4.octets());
    f.extend_from_slice(&B4.octets());
    f.extend_from_slice(&PEER_PORT.to_be_bytes());
    f.extend_from_slice(&port.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&ack.to_be_bytes());
    f.push(((20 + opts.len()) as u8 / 4) << 4);
    f.push(flags);
    f.extend_from_slice(&win.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(opts);
    f.extend_from_slice(payload);
    f
}

/// The next TCP segment the stack sends, answering its ARP requests for the peer on the
/// way; `None` after `limit` without one.
async fn next_segment(link: &FrameLink, limit: Duration) -> Option<Seg> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut batch = Vec::new();
    loop {
        if batch.is_empty() {
            tokio::time::timeout_at(deadline, link.recv_many(&mut batch, 1))
                .await
                .ok()?;
        }
        let f = batch.remove(0);
        if f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 1] {
            let mut r = Vec::with_capacity(42);
            r.extend_from_slice(&STACK_MAC);
            r.extend_from_slice(&PEER_MAC);
            r.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2]);
            r.extend_from_slice(&PEER_MAC);
            r.extend_from_slice(&A4.octets());
            r.extend_from_slice(&STACK_MAC);
            r.extend_from_slice(&B4.octets());
            link.send(r).await;
            continue;
        }
        if let Some((flags, len)) = tcp(&f) {
            let seq = u32::from_be_bytes([f[TCP + 4], f[TCP + 5], f[TCP + 6], f[TCP + 7]]);
            return Some(Seg { flags, seq, len });
        }
    }
}

/// The next segment carrying data or a FIN (pure ACKs skipped).
async fn next_data(link: &FrameLink, limit: Duration) -> Option<Seg> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let s = next_segment(link, left).await?;
        if s.len > 0 || s.flags & FIN != 0 {
            return Some(s);
        }
    }
}

/// A peer closes its side first, then stops reading until its window is zero; the
/// stack's program writes more than that window and closes. When the peer reopens its
/// window with a pure window update, the queued data must flow at once. (smoltcp in
/// LAST-ACK discards such updates: without the deferred close, the stack answered with a
/// one-byte zero-window probe much later, or, after a retransmission timeout, never.)
#[tokio::test]
async fn window_update_reaches_a_connection_whose_peer_closed_first() {
    const PORT: u16 = 7400;
    const WINDOW: u16 = 4000;
    const TOTAL: usize = 20_000;
    let (b, link) = Stack::new(config(2));
    let l = b
        .tcp_listen(SocketAddr::new(B4.into(), PORT), 4, false)
        .unwrap();
    let step = Duration::from_secs(5);

    // Handshake, then the peer's FIN.
    link.send(segment(PORT, SYN, 1000, 0, WINDOW, &[])).await;
    let syn_ack = next_segment(&link, step).await.expect("SYN-ACK");
    assert_eq!(syn_ack.flags & (SYN | ACK), SYN | ACK, "{syn_ack:?}");
    let base = syn_ack.seq.wrapping_add(1);
    link.send(segment(PORT, ACK, 1001, base, WINDOW, &[])).await;
    link.send(segment(PORT, ACK | FIN, 1001, base, WINDOW, &[]))
        .await;
    let mut s = tokio::time::timeout(step, l.accept())
        .await
        .expect("accepted")
        .unwrap();
    let mut eof = [0u8; 1];
    let n = tokio::time::timeout(step, s.read(&mut eof))
        .await
        .expect("end of file")
        .unwrap();
    assert_eq!(n, 0, "the peer's FIN reads as end of file");

    // The program writes more than the peer's window and closes.
    let data: Vec<u8> = (0..TOTAL).map(|i| (i % 253) as u8).collect();
    s.write_all(&data).await.unwrap();
    s.shutdown().await.unwrap();

    // The window's worth arrives; the peer acknowledges each segment without reading, so
    // its window shrinks to zero...
    let mut got = 0usize;
    while got < usize::from(WINDOW) {
        let seg = next_data(&link, step).await.expect("data up to the window");
        if seg.seq != base.wrapping_add(got as u32) {
            continue; // a retransmission
        }
        got += seg.len;
        let left = usize::from(WINDOW).saturating_sub(got) as u16;
        let ack = base.wrapping_add(got as u32);
        link.send(segment(PORT, ACK, 1002, ack, left, &[])).await;
    }
    assert_eq!(got, usize::from(WINDOW), "no more than the window");
    let acked = base.wrapping_add(got as u32);
    // ...then reopens it with a pure window update (acknowledging nothing new).
    link.send(segment(PORT, ACK, 1002, acked, WINDOW, &[]))
        .await;
    let mut seg = next_data(&link, step)
        .await
        .expect("data after the window update");
    while seg.seq != acked && seg.len > 0 {
        // A retransmission sent before the acknowledgement arrived.
        seg = next_data(&link, step)
            .await
            .expect("data after the window update");
    }
    assert!(
        seg.len > 1,
        "the window update was taken: a full segment follows, not a one-byte \
         zero-window probe ({seg:?})"
    );

    // The rest, then the FIN right after the last byte.
    let mut next = base.wrapping_add(got as u32);
    assert_eq!(seg.seq, next);
    got += seg.len;
    next = next.wrapping_add(seg.len as u32);
    link.send(segment(PORT, ACK, 1002, next, WINDOW, &[])).await;
    loop {
        let seg = next_data(&link, step).await.expect("the rest, then FIN");
        if seg.seq != next {
            continue; // a retransmission of what was already counted
        }
        got += seg.len;
        next = next.wrapping_add(seg.len as u32);
        if seg.flags & FIN != 0 {
            break;
        }
        link.send(segment(PORT, ACK, 1002, next, WINDOW, &[])).await;
    }
    assert_eq!(got, TOTAL, "every byte before the FIN");
}

/// A peer that accepts and at once resets (a server refusing work with `SO_LINGER` zero),
/// its RST in before the connecting task looks again: the connect succeeds, as Linux's
/// does once the SYN-ACK is in, and the read tells the reset. (It failed with
/// `ECONNREFUSED`, as if nothing listened, whenever the task was slow to run.)
#[tokio::test]
async fn a_reset_right_after_the_handshake_is_a_connection_that_was_reset() {
    const PORT: u16 = 7500;
    const RST: u8 = 0x04;
    let (b, link) = Stack::new(config(2));
    let step = Duration::from_secs(5);
    let connecting = b.tcp_connect(
        Some(SocketAddr::new(B4.into(), PORT)),
        SocketAddr::new(A4.into(), PEER_PORT),
        TcpOptions::default(),
    );
    let mut connecting = std::pin::pin!(connecting);
    // Polled once (it sends the SYN), then not again until the RST is in.
    let first = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::future::Future::poll(connecting.as_mut(), cx))
    });
    assert!(first.await.is_pending(), "connecting");
    let syn = next_segment(&link, step).await.expect("SYN");
    assert_eq!(syn.flags, SYN, "{syn:?}");
    let ours = syn.seq.wrapping_add(1);
    link.send(segment(PORT, SYN | ACK, 5000, ours, 64000, &[]))
        .await;
    let ack = next_segment(&link, step)
        .await
        .expect("the handshake's ACK");
    assert_eq!(ack.flags & (SYN | ACK | RST), ACK, "{ack:?}");
    link.send(segment(PORT, RST | ACK, 5001, ours, 0, &[]))
        .await;
    // Let the stack's driver take the RST.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut s = tokio::time::timeout(step, connecting)
        .await
        .expect("the connect ends")
        .expect("the connection was made");
    let mut buf = [0u8; 8];
    let err = s.read(&mut buf).await.expect_err("reset, not end of file");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
}

/// Data and then an RST in one batch from the peer (a server that answers and closes
/// with a request unread): the data is read first, then the reset, as with a kernel
/// socket (Linux keeps a reset connection's received data readable).
#[tokio::test]
async fn data_just_before_a_reset_is_read_before_the_reset() {
    const PORT: u16 = 7600;
    const RST: u8 = 0x04;
    let (b, link) = Stack::new(config(2));
    let l = b
        .tcp_listen(SocketAddr::new(B4.into(), PORT), 4, false)
        .unwrap();
    let step = Duration::from_secs(5);
    link.send(segment(PORT, SYN, 1000, 0, 64000, &[])).await;
    let syn_ack = next_segment(&link, step).await.expect("SYN-ACK");
    let base = syn_ack.seq.wrapping_add(1);
    link.send(segment(PORT, ACK, 1001, base, 64000, &[])).await;
    let mut s = tokio::time::timeout(step, l.accept())
        .await
        .expect("accepted")
        .unwrap();
    // The answer and the reset arrive together, before the owner reads.
    let mut batch = vec![
        segment(PORT, ACK | 0x08, 1001, base, 64000, b"413 too large"),
        segment(PORT, RST | ACK, 1014, base, 0, &[]),
    ];
    link.receive(&mut batch);
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    let err = loop {
        match tokio::time::timeout(step, s.read(&mut buf))
            .await
            .expect("in time")
        {
            Ok(0) => panic!("end of file instead of a reset after {got:?}"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break e,
        }
    };
    assert_eq!(got, b"413 too large", "the data before the reset");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
}
