//! Throughput and scaling of two netstacks joined by an in-memory Ethernet link.
//!
//! `cargo run --release -p netstack --example bench` prints: bulk TCP throughput, the
//! request/response rate on one connection, and one flow's throughput with 0 and with
//! 10,000 idle connections open (and their ratio), beside kernel loopback TCP measured in
//! the same run. Runs in well under a minute.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netstack::{FrameLink, Stack, StackConfig, TcpOptions, TcpStream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const B: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);

fn config(n: u8) -> StackConfig {
    let mut c = StackConfig::new([2, 0, 0, 0, 0, n]);
    c.ipv4.push((Ipv4Addr::new(10, 9, 0, n), 16));
    c
}

async fn carry(from: Arc<FrameLink>, to: Arc<FrameLink>) {
    let mut batch = Vec::with_capacity(256);
    loop {
        if from.recv_many(&mut batch, 256).await == 0 {
            return;
        }
        for f in batch.drain(..) {
            to.send(f).await;
        }
    }
}

fn pair() -> (Stack, Stack) {
    // NETSTACK_PER_SHARD overrides the shard size, for measuring the trade-off.
    let per_shard = std::env::var("NETSTACK_PER_SHARD")
        .ok()
        .and_then(|v| v.parse().ok());
    pair_sharded(per_shard.unwrap_or(StackConfig::new([0; 6]).sockets_per_shard))
}

fn pair_sharded(per_shard: usize) -> (Stack, Stack) {
    let (mut ca, mut cb) = (config(1), config(2));
    ca.sockets_per_shard = per_shard;
    cb.sockets_per_shard = per_shard;
    let (a, la) = Stack::new(ca);
    let (b, lb) = Stack::new(cb);
    let (la, lb) = (Arc::new(la), Arc::new(lb));
    tokio::spawn(carry(la.clone(), lb.clone()));
    tokio::spawn(carry(lb, la));
    (a, b)
}

fn big() -> TcpOptions {
    TcpOptions {
        recv_buffer: 4 << 20,
        send_buffer: 4 << 20,
        ..TcpOptions::default()
    }
}

/// Push bytes from `w` to `r` for `dur`; return bits per second seen by the reader.
async fn blast<W, R>(mut w: W, mut r: R, dur: Duration) -> f64
where
    W: AsyncWrite + Unpin + Send + 'static,
    R: AsyncRead + Unpin + Send + 'static,
{
    let writer = tokio::spawn(async move {
        let buf = vec![0x5a_u8; 256 << 10];
        let end = Instant::now() + dur;
        while Instant::now() < end {
            if w.write_all(&buf).await.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
    });
    let start = Instant::now();
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n as u64,
        }
    }
    let _ = writer.await;
    total as f64 * 8.0 / start.elapsed().as_secs_f64()
}

async fn netstack_flow(a: &Stack, b: &Stack, port: u16, dur: Duration) -> f64 {
    let l = b
        .tcp_listen(SocketAddr::new(B.into(), port), 16, false)
        .unwrap();
    l.set_accept_options(big());
    let c = a
        .tcp_connect(None, SocketAddr::new(B.into(), port), big())
        .await
        .unwrap();
    let s = l.accept().await.unwrap();
    blast(c, s, dur).await
}

async fn kernel_flow(dur: Duration) -> f64 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (s, _) = l.accept().await.unwrap();
    blast(c, s, dur).await
}

async fn request_response(a: &Stack, b: &Stack, dur: Duration) -> (f64, Duration) {
    let l = b
        .tcp_listen(SocketAddr::new(B.into(), 7100), 4, false)
        .unwrap();
    let opts = TcpOptions {
        nodelay: true,
        ..TcpOptions::default()
    };
    l.set_accept_options(opts.clone());
    let mut c = a
        .tcp_connect(None, SocketAddr::new(B.into(), 7100), opts)
        .await
        .unwrap();
    let mut s = l.accept().await.unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        while s.read_exact(&mut buf).await.is_ok() {
            if s.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let mut buf = [7u8; 64];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < dur {
        c.write_all(&buf).await.unwrap();
        c.read_exact(&mut buf).await.unwrap();
        n += 1;
    }
    let el = start.elapsed();
    (n as f64 / el.as_secs_f64(), el / n.max(1) as u32)
}

async fn kernel_request_response(dur: Duration) -> f64 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.set_nodelay(true).unwrap();
    let (mut s, _) = l.accept().await.unwrap();
    s.set_nodelay(true).unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        while s.read_exact(&mut buf).await.is_ok() {
            if s.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let mut buf = [7u8; 64];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < dur {
        c.write_all(&buf).await.unwrap();
        c.read_exact(&mut buf).await.unwrap();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Open `n` idle connections from `a` to `b` (small buffers), returning both ends.
async fn idle_connections(a: &Stack, b: &Stack, n: usize) -> (Vec<TcpStream>, Vec<TcpStream>) {
    let small = TcpOptions {
        recv_buffer: 4096,
        send_buffer: 4096,
        ..TcpOptions::default()
    };
    let l = b
        .tcp_listen(SocketAddr::new(B.into(), 7200), 4096, false)
        .unwrap();
    l.set_accept_options(small.clone());
    let mut clients = Vec::with_capacity(n);
    let mut servers = Vec::with_capacity(n);
    for chunk in 0..n.div_ceil(1000) {
        let k = 1000.min(n - chunk * 1000);
        let tasks: Vec<_> = (0..k)
            .map(|_| {
                let a = a.clone();
                let o = small.clone();
                tokio::spawn(async move {
                    a.tcp_connect(None, SocketAddr::new(B.into(), 7200), o)
                        .await
                })
            })
            .collect();
        for _ in 0..k {
            servers.push(l.accept().await.unwrap());
        }
        for t in tasks {
            clients.push(t.await.unwrap().unwrap());
        }
    }
    (clients, servers)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Resident memory of this process, from /proc.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn gbit(bps: f64) -> String {
    format!("{:.2} Gbit/s", bps / 1e9)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dur = Duration::from_secs(3);
    let t0 = Instant::now();
    let (a, b) = pair();

    let kernel = kernel_flow(dur).await;
    let bulk = netstack_flow(&a, &b, 7000, dur).await;
    let (rr, rtt) = request_response(&a, &b, Duration::from_secs(2)).await;
    let krr = kernel_request_response(Duration::from_secs(2)).await;

    // The machine is shared and its load drifts: compare a pair with no idle connections
    // and a pair with 10,000, alternating short flows, and take medians.
    let (ia, ib) = pair();
    let rss0 = rss_kib();
    let setup = Instant::now();
    let (_c, _s) = idle_connections(&ia, &ib, 10_000).await;
    let setup = setup.elapsed();
    let rss10k = rss_kib();
    let short = Duration::from_millis(1000);
    let (mut f0, mut f10k) = (Vec::new(), Vec::new());
    for i in 0..5 {
        f0.push(netstack_flow(&a, &b, 7001 + i, short).await);
        f10k.push(netstack_flow(&ia, &ib, 7011 + i, short).await);
    }
    let (flow0, flow10k) = (median(f0), median(f10k));
    let (sa, sb) = (ia.stats(), ib.stats());

    // The same with one smoltcp interface for all sockets (plain smoltcp), to show why
    // the stack shards.
    let (ua, ub) = pair_sharded(usize::MAX);
    let u0 = netstack_flow(&ua, &ub, 7001, short).await;
    let (_uc, _us) = idle_connections(&ua, &ub, 10_000).await;
    let u10k = netstack_flow(&ua, &ub, 7011, short).await;

    println!(
        "netstack bench (two stacks, in-memory Ethernet link, MTU {})",
        a.mtu()
    );
    println!(
        "{:<48} {:>16} {:>16} {:>8}",
        "measure", "netstack", "kernel loopback", "ratio"
    );
    println!(
        "{:<48} {:>16} {:>16} {:>8.2}",
        "bulk TCP, one flow",
        gbit(bulk),
        gbit(kernel),
        bulk / kernel
    );
    println!(
        "{:<48} {:>16} {:>16} {:>8.2}",
        "request/response, 64 B, one connection (per s)",
        format!("{rr:.0}"),
        format!("{krr:.0}"),
        rr / krr
    );
    println!(
        "{:<48} {:>16}",
        "  mean round trip",
        format!("{:.1} us", rtt.as_secs_f64() * 1e6)
    );
    println!(
        "{:<48} {:>16}",
        "one flow, 0 idle connections (median of 5)",
        gbit(flow0)
    );
    println!(
        "{:<48} {:>16}",
        "one flow, 10,000 idle connections (median of 5)",
        gbit(flow10k)
    );
    println!(
        "{:<48} {:>16.2}   (target >= 0.8)",
        "  ratio 10,000 idle / 0 idle",
        flow10k / flow0
    );
    println!(
        "{:<48} {:>16}",
        "unsharded (one interface): flow, 0 idle",
        gbit(u0)
    );
    println!(
        "{:<48} {:>16}",
        "unsharded (one interface): flow, 10,000 idle",
        gbit(u10k)
    );
    println!("{:<48} {:>16.2}", "  unsharded ratio", u10k / u0);
    println!(
        "{:<48} {:>16}",
        "  10,000 connects + accepts took",
        format!("{:.2} s", setup.as_secs_f64())
    );
    println!(
        "{:<48} {:>16}",
        "  shards (smoltcp interfaces) per stack",
        format!("{} / {}", sa.shards, sb.shards)
    );
    println!(
        "{:<48} {:>16}",
        "  memory for 20,000 idle sockets (both ends)",
        format!(
            "{:.0} MiB RSS",
            (rss10k.saturating_sub(rss0)) as f64 / 1024.0
        )
    );
    println!("total time {:.1} s", t0.elapsed().as_secs_f64());
}
