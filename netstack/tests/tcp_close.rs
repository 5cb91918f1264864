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
