//! Programs of the benchmark's scale rows (the hidden `compat-tests hold-sockets` and
//! `connect-loop` subcommands): idle sockets by the thousand, and a loop of loopback
//! connections, each bounded in count and time.

use std::io::BufRead as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

/// The kind of idle socket `hold-sockets` opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SocketKind {
    /// TCP listeners on the wildcard address, each on its own port.
    Listeners,
    /// UDP sockets bound to the wildcard address.
    Udp,
}

/// `hold-sockets`: print `base`, wait for a line on stdin, open `count` sockets of
/// `kind`, print `ready N`, and hold them until stdin closes (at most `seconds`).
pub(crate) fn hold(kind: SocketKind, count: usize, seconds: f64) -> anyhow::Result<()> {
    super::rr::raise_nofile()?;
    println!("base");
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    stdin.read_line(&mut line).context("reading stdin")?;
    let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    let mut listeners = Vec::new();
    let mut udps = Vec::new();
    for i in 0..count {
        match kind {
            SocketKind::Listeners => {
                listeners.push(TcpListener::bind(any).with_context(|| format!("listener {i}"))?)
            }
            SocketKind::Udp => {
                udps.push(UdpSocket::bind(any).with_context(|| format!("UDP socket {i}"))?)
            }
        }
    }
    println!("ready {count}");
    // Until stdin closes, bounded.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut rest = String::new();
        while std::io::stdin().lock().read_line(&mut rest).unwrap_or(0) > 0 {}
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(Duration::from_secs_f64(seconds));
    drop((listeners, udps));
    Ok(())
}

/// `connect-loop`: `count` connect/close cycles to a loopback listener of its own, as
/// fast as they go (at most `seconds`); prints one line of JSON.
pub(crate) fn connect_loop(count: u64, seconds: f64) -> anyhow::Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("listening")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    let started = Instant::now();
    let limit = Duration::from_secs_f64(seconds);
    let mut done = 0u64;
    let mut error = None;
    while done < count && started.elapsed() < limit {
        match TcpStream::connect(addr) {
            Ok(s) => drop(s),
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
        done += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "mode": "connect-loop",
            "cycles": done,
            "wanted": count,
            "seconds": secs,
            "rate": done as f64 / secs.max(1e-9),
            "error": error,
        })
    );
    Ok(())
}
