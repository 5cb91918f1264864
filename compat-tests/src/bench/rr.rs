//! The request/response server and client the benchmark runs on test hosts, natively and
//! under `ztrun` (the hidden `compat-tests rr-server` and `rr-client` subcommands).
//!
//! The protocol is an echo with one rule: a message is `size` equal bytes, and the server
//! sends back every byte it reads. When the bytes of a chunk it read are [`CLOSE`], it
//! closes the connection after echoing them, so that in the new-connection test the server
//! is the side that closes first and holds the TIME-WAIT state, as a web server does.
//!
//! Every client mode is bounded in count and time and prints one line of JSON on stdout
//! (the benchmark parses it); `hold` prints a second line once its connections are up.

use std::io::{BufRead as _, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The byte of a ping-pong message: echo and keep the connection.
pub(crate) const PING: u8 = b'P';
/// The byte of a one-shot request: echo, then close.
pub(crate) const CLOSE: u8 = b'Q';

/// What `rr-client` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ClientMode {
    /// Connect (retrying until the deadline) and time the first answered request.
    First,
    /// One connection, one message in flight, for the duration: rate and latencies.
    Pingpong,
    /// Connect, one request, read the answer and the server's close; repeat.
    Connect,
    /// Open `conns` connections, check each with one request, keep them until stdin
    /// closes (or the duration ends), then check each again.
    Hold,
    /// One connection, one request every `interval-ms`, for the duration: one JSON line
    /// per second of round trips (the echo latency over time, light on the machine).
    Series,
}

/// The arguments of `rr-client`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ClientArgs {
    /// The server's address.
    #[arg(long)]
    pub(crate) connect: SocketAddr,
    /// What to measure.
    #[arg(long, value_enum)]
    pub(crate) mode: ClientMode,
    /// How long to measure (the deadline of `first` and `hold`).
    #[arg(long, default_value_t = 3.0)]
    pub(crate) seconds: f64,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    pub(crate) size: usize,
    /// Connections to hold (`hold`).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) conns: usize,
    /// The most requests or connections made, whatever the time.
    #[arg(long, default_value_t = 5_000_000)]
    pub(crate) max: u64,
    /// Milliseconds between requests (`series`).
    #[arg(long, default_value_t = 10)]
    pub(crate) interval_ms: u64,
}

/// Raise the soft limit of open files to the hard one (10,000 connections need it).
pub(crate) fn raise_nofile() -> anyhow::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(RLIMIT_NOFILE)")?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("setrlimit(RLIMIT_NOFILE)")?;
    Ok(hard)
}

/// `rr-server`: echo on `listen` until killed. Prints `rr-server: listening on ADDR` once
/// the socket listens.
pub(crate) fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    raise_nofile()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("building the runtime")?;
    runtime.block_on(async move {
        let socket = if listen.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .context("socket")?;
        socket.set_reuseaddr(true).context("SO_REUSEADDR")?;
        socket
            .bind(listen)
            .with_context(|| format!("bind {listen}"))?;
        let listener = socket.listen(4096).context("listen")?;
        println!("rr-server: listening on {}", listener.local_addr()?);
        std::io::stdout().flush().context("stdout")?;
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(echo(stream));
                }
                // Out of descriptors or a connection reset before accept: keep serving.
                Err(e) => {
                    eprintln!("rr-server: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    })
}

async fn echo(mut stream: tokio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
        if buf[0] == CLOSE {
            return;
        }
    }
}

/// `rr-client`: measure as `args.mode` says and print the JSON result.
pub(crate) fn client(args: &ClientArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.size > 0, "--size must be at least 1");
    let limit = Duration::from_secs_f64(args.seconds.clamp(0.1, 600.0));
    let result = match args.mode {
        ClientMode::First => first(args, limit)?,
        ClientMode::Pingpong => pingpong(args, limit)?,
        ClientMode::Connect => connect_rate(args, limit)?,
        ClientMode::Hold => hold(args, limit)?,
        ClientMode::Series => series(args, limit)?,
    };
    println!("{result}");
    Ok(())
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// One request on `stream`: send `size` bytes of `byte`, read as many back.
fn request(stream: &mut TcpStream, msg: &[u8], buf: &mut [u8]) -> std::io::Result<()> {
    stream.write_all(msg)?;
    stream.read_exact(&mut buf[..msg.len()])?;
    if buf[..msg.len()] != *msg {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the echo differs from the request",
        ));
    }
    Ok(())
}

fn first(args: &ClientArgs, limit: Duration) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    let msg = vec![PING; args.size];
    let mut buf = vec![0u8; args.size];
    let mut attempts = 0u32;
    let mut last_error = String::new();
    while started.elapsed() < limit {
        attempts += 1;
        let left = limit
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1));
        match TcpStream::connect_timeout(&args.connect, left) {
            Ok(mut stream) => {
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(left))?;
                request(&mut stream, &msg, &mut buf).context("the first request")?;
                return Ok(json!({
                    "mode": "first",
                    "first_reply_unix_ns": unix_ns().to_string(),
                    "attempts": attempts,
                }));
            }
            Err(e) => {
                last_error = e.to_string();
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    anyhow::bail!(
        "no answer from {} within {:?} ({attempts} attempts, last: {last_error})",
        args.connect,
        limit
    )
}

/// The value at quantile `q` (0..=1) of sorted `values`.
pub(crate) fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let index = ((sorted.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    sorted.get(index).copied()
}

fn latency_summary(mut ns: Vec<u64>, elapsed: Duration, mode: &str) -> serde_json::Value {
    ns.sort_unstable();
    let us = |q: f64| quantile(&ns, q).map_or(0.0, |v| v as f64 / 1000.0);
    json!({
        "mode": mode,
        "count": ns.len(),
        "seconds": elapsed.as_secs_f64(),
        "rate": ns.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        "p50_us": us(0.5),
        "p99_us": us(0.99),
    })
}

fn pingpong(args: &ClientArgs, limit: Duration) -> anyhow::Result<serde_json::Value> {
    let mut stream = TcpStream::connect_timeout(&args.connect, Duration::from_secs(10))
        .with_context(|| format!("connect {}", args.connect))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let msg = vec![PING; args.size];
    let mut buf = vec![0u8; args.size];
    // One warm-up exchange, so the measurement starts on a working connection.
    request(&mut stream, &msg, &mut buf).context("the warm-up request")?;
    let mut ns = Vec::with_capacity(1 << 16);
    let started = Instant::now();
    while started.elapsed() < limit && (ns.len() as u64) < args.max {
        let t = Instant::now();
        request(&mut stream, &msg, &mut buf)
            .with_context(|| format!("request {} of the ping-pong", ns.len() + 1))?;
        ns.push(t.elapsed().as_nanos() as u64);
    }
    Ok(latency_summary(ns, started.elapsed(), "pingpong"))
}

/// Paced ping-pong: prints a `latency_summary` line with `end_unix_ns` for every second
/// (flushed as it goes, so a runner can read it while the client runs), then the summary
/// of the whole run. A request that gets no answer within 10 s ends the run.
fn series(args: &ClientArgs, limit: Duration) -> anyhow::Result<serde_json::Value> {
    let mut stream = TcpStream::connect_timeout(&args.connect, Duration::from_secs(10))
        .with_context(|| format!("connect {}", args.connect))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let msg = vec![PING; args.size];
    let mut buf = vec![0u8; args.size];
    request(&mut stream, &msg, &mut buf).context("the warm-up request")?;
    let interval = Duration::from_millis(args.interval_ms.clamp(1, 10_000));
    let started = Instant::now();
    let mut all = Vec::new();
    let mut second = Vec::new();
    let mut second_start = Instant::now();
    let mut out = std::io::stdout();
    while started.elapsed() < limit && (all.len() as u64) < args.max {
        let t = Instant::now();
        request(&mut stream, &msg, &mut buf)
            .with_context(|| format!("request {} of the series", all.len() + 1))?;
        let ns = t.elapsed().as_nanos() as u64;
        all.push(ns);
        second.push(ns);
        if second_start.elapsed() >= Duration::from_secs(1) {
            let mut line = latency_summary(
                std::mem::take(&mut second),
                second_start.elapsed(),
                "second",
            );
            line["end_unix_ns"] = json!(unix_ns().to_string());
            writeln!(out, "{line}")?;
            out.flush()?;
            second_start = Instant::now();
        }
        std::thread::sleep(interval.saturating_sub(t.elapsed()));
    }
    Ok(latency_summary(all, started.elapsed(), "series"))
}

fn connect_rate(args: &ClientArgs, limit: Duration) -> anyhow::Result<serde_json::Value> {
    let msg = vec![CLOSE; args.size];
    let mut buf = vec![0u8; args.size.max(16)];
    let mut ns = Vec::with_capacity(1 << 14);
    let started = Instant::now();
    while started.elapsed() < limit && (ns.len() as u64) < args.max {
        let t = Instant::now();
        let mut stream = TcpStream::connect_timeout(&args.connect, Duration::from_secs(5))
            .with_context(|| format!("connection {} to {}", ns.len() + 1, args.connect))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        request(&mut stream, &msg, &mut buf)
            .with_context(|| format!("the request on connection {}", ns.len() + 1))?;
        // The server closes after answering: wait for its FIN, then close.
        let n = stream
            .read(&mut buf)
            .with_context(|| format!("waiting for close on connection {}", ns.len() + 1))?;
        anyhow::ensure!(n == 0, "the server sent {n} bytes more instead of closing");
        drop(stream);
        ns.push(t.elapsed().as_nanos() as u64);
    }
    Ok(latency_summary(ns, started.elapsed(), "connect"))
}

/// The number of threads that open connections in `hold` mode.
const HOLD_THREADS: usize = 4;

fn hold(args: &ClientArgs, limit: Duration) -> anyhow::Result<serde_json::Value> {
    raise_nofile()?;
    let started = Instant::now();
    let deadline = started + limit;
    let msg = vec![PING; args.size];
    let per_thread = args.conns.div_ceil(HOLD_THREADS);
    let mut streams = Vec::with_capacity(args.conns);
    let mut errors = Vec::new();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..HOLD_THREADS)
            .map(|t| {
                let want = per_thread.min(args.conns.saturating_sub(t * per_thread));
                let msg = &msg;
                scope.spawn(move || {
                    let mut mine = Vec::with_capacity(want);
                    let mut buf = vec![0u8; msg.len()];
                    let mut error = None;
                    while mine.len() < want && Instant::now() < deadline {
                        let opened =
                            TcpStream::connect_timeout(&args.connect, Duration::from_secs(5))
                                .and_then(|mut s| {
                                    s.set_nodelay(true)?;
                                    s.set_read_timeout(Some(Duration::from_secs(5)))?;
                                    request(&mut s, msg, &mut buf)?;
                                    Ok(s)
                                });
                        match opened {
                            Ok(s) => mine.push(s),
                            Err(e) => {
                                error = Some(format!("connection {}: {e}", mine.len() + 1));
                                break;
                            }
                        }
                    }
                    (mine, error)
                })
            })
            .collect();
        for worker in workers {
            match worker.join() {
                Ok((mine, error)) => {
                    streams.extend(mine);
                    errors.extend(error);
                }
                Err(_) => errors.push("a connecting thread panicked".into()),
            }
        }
    });
    let established = started.elapsed();
    println!(
        "{}",
        json!({
            "mode": "hold-open",
            "held": streams.len(),
            "seconds": established.as_secs_f64(),
            "errors": errors,
        })
    );
    std::io::stdout().flush()?;

    // Hold until stdin closes (the benchmark's signal) or the deadline.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sink = String::new();
        let mut stdin = std::io::stdin().lock();
        while stdin.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));

    let mut buf = vec![0u8; msg.len()];
    let mut alive = 0usize;
    for stream in &mut streams {
        if request(stream, &msg, &mut buf).is_ok() {
            alive += 1;
        }
    }
    Ok(json!({
        "mode": "hold",
        "wanted": args.conns,
        "held": streams.len(),
        "alive_after": alive,
        "open_seconds": established.as_secs_f64(),
        "errors": errors,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_the_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(51));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&v, 0.0), Some(1));
        assert_eq!(quantile(&v, 1.0), Some(100));
        assert_eq!(quantile(&[], 0.5), None);
    }

    /// The server and every client mode against each other on loopback.
    #[test]
    fn client_modes_work_against_the_server() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        std::thread::spawn(move || serve(addr));
        let args = |mode, seconds| ClientArgs {
            connect: addr,
            mode,
            seconds,
            size: 64,
            conns: 50,
            max: 200,
            interval_ms: 1,
        };
        let first = first(&args(ClientMode::First, 5.0), Duration::from_secs(5)).unwrap();
        assert!(first["first_reply_unix_ns"]
            .as_str()
            .unwrap()
            .parse::<u128>()
            .is_ok());
        let pp = pingpong(&args(ClientMode::Pingpong, 5.0), Duration::from_secs(5)).unwrap();
        assert_eq!(pp["count"], 200);
        assert!(pp["p50_us"].as_f64().unwrap() > 0.0);
        assert!(pp["p99_us"].as_f64().unwrap() >= pp["p50_us"].as_f64().unwrap());
        let se = series(&args(ClientMode::Series, 5.0), Duration::from_secs(5)).unwrap();
        assert_eq!(se["count"], 200);
        let cr = connect_rate(&args(ClientMode::Connect, 5.0), Duration::from_secs(5)).unwrap();
        assert_eq!(cr["count"], 200);
        // Hold: stdin of the test harness is not closed, so the short deadline ends it.
        let held = hold(&args(ClientMode::Hold, 1.0), Duration::from_secs(1)).unwrap();
        assert_eq!(held["held"], 50);
        assert_eq!(held["alive_after"], 50);
    }
}
