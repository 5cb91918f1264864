//! The controller's management API under a flood of idle connections, as any local user
//! can open them: 20,000 loopback connections that never send a byte. The controller
//! must keep answering the token holder within a second and must not spin.
//!
//! One process cannot hold 20,000 sockets where the hard `RLIMIT_NOFILE` is 20,000, so
//! the connections are held by child processes: this test binary run again with
//! [`HOLDER_ENV`] set, which makes [`flood_holder`] open and hold its share.

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{cpu_time, ZT};
/// Set in a holder child: `API_ADDRESS COUNT`.
const HOLDER_ENV: &str = "ZT_TEST_FLOOD_HOLDER";
/// The idle connections opened against the controller.
const FLOOD: usize = 20_000;
/// The soft descriptor limit the controller starts with, well under the flood, so that
/// a controller without limits runs out of descriptors (EMFILE) as it accepts.
const CONTROLLER_SOFT_NOFILE: u64 = 1024;

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `zt controller` started with a soft descriptor limit of [`CONTROLLER_SOFT_NOFILE`];
/// returns it and its API address.
fn controller(home: &Path) -> (Killed, SocketAddr) {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -Sn {CONTROLLER_SOFT_NOFILE} && exec \"$0\" \"$@\""
        ))
        .arg(ZT)
        .arg("controller")
        .arg("--home")
        .arg(home)
        // No root answers there; the node keeps trying, which costs next to nothing.
        .args(["--root", "127.0.0.1:9", "--api", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let api = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("zt controller printed no ready line: {line:?}"))
        .parse()
        .unwrap();
    (Killed(child), api)
}

/// One authorized `GET /controller`, bounded by `limit`: the status code and the time it
/// took, or what went wrong.
fn authorized_get(
    api: SocketAddr,
    token: &str,
    limit: Duration,
) -> Result<(u16, Duration), String> {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&api, limit).map_err(|e| format!("connect: {e}"))?;
    let left = limit
        .saturating_sub(t.elapsed())
        .max(Duration::from_millis(1));
    s.set_read_timeout(Some(left)).unwrap();
    s.set_write_timeout(Some(left)).unwrap();
    write!(
        s,
        "GET /controller HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\nX-ZT-Auth: {token}\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)
        .map_err(|e| format!("no answer after {:?}: {e}", t.elapsed()))?;
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {resp:?}"))?;
    Ok((code, t.elapsed()))
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// A holder child with its report line on a channel.
struct Holder {
    _child: Killed,
    report: mpsc::Receiver<String>,
}

fn holder(api: SocketAddr, count: usize) -> Holder {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "flood_holder",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(HOLDER_ENV, format!("{api} {count}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout: ChildStdout = child.stdout.take().unwrap();
    let (tx, report) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest may have started the line with "test flood_holder ... ".
            if let Some((_, r)) = line.split_once("holding ") {
                let _ = tx.send(r.to_string());
            }
        }
    });
    Holder {
        _child: Killed(child),
        report,
    }
}

/// Not a test of its own: the body of a holder child (see the module comment). Without
/// [`HOLDER_ENV`] it has nothing to do.
///
/// Opens COUNT connections to the API (at most 256 connecting at once, each given 10 s,
/// all of them 40 s), prints `holding ESTABLISHED of COUNT ...`, and holds them until its
/// stdin closes (the test ends) or 300 s pass.
#[test]
fn flood_holder() {
    let Ok(spec) = std::env::var(HOLDER_ENV) else {
        return;
    };
    let mut words = spec.split_whitespace();
    let api: SocketAddr = words.next().unwrap().parse().unwrap();
    let count: usize = words.next().unwrap().parse().unwrap();
    launcher::sys::raise_nofile_limit();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let t = Instant::now();
    let (streams, failures) = rt.block_on(async move {
        let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(256));
        let mut set = tokio::task::JoinSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
        for _ in 0..count {
            let Ok(permit) =
                tokio::time::timeout_at(deadline, in_flight.clone().acquire_owned()).await
            else {
                break;
            };
            set.spawn(async move {
                let r = tokio::time::timeout(
                    Duration::from_secs(10),
                    tokio::net::TcpStream::connect(api),
                )
                .await;
                drop(permit);
                match r {
                    Ok(Ok(s)) => Ok(s),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no answer to the SYN in 10 s".to_string()),
                }
            });
        }
        let mut streams = Vec::with_capacity(count);
        let mut failures = std::collections::BTreeMap::<String, usize>::new();
        while let Some(r) = set.join_next().await {
            match r.unwrap() {
                Ok(s) => streams.push(s),
                Err(e) => *failures.entry(e).or_default() += 1,
            }
        }
        (streams, failures)
    });
    println!(
        "holding {} of {count} in {} ms; failed: {failures:?}",
        streams.len(),
        t.elapsed().as_millis()
    );
    std::io::stdout().flush().unwrap();
    let (done, wait) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read(&mut [0]);
        let _ = done.send(());
    });
    let _ = wait.recv_timeout(Duration::from_secs(300));
    drop(streams);
}

#[test]
fn api_answers_within_1s_and_does_not_spin_with_20000_idle_connections_open() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("ctl");
    let (ctl, api) = controller(&home);
    let pid = ctl.0.id();
    let token = std::fs::read_to_string(home.join("authtoken.secret")).unwrap();
    let token = token.trim();
    assert_eq!(
        authorized_get(api, token, Duration::from_secs(1)).map(|(c, _)| c),
        Ok(200)
    );
    let rss_before = rss_kib(pid);

    // Each holder holds at most what its descriptor limit allows, 10,000 at most.
    let hard = std::fs::read_to_string("/proc/self/limits")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1024);
    let per_holder = hard.saturating_sub(64).clamp(256, 10_000);
    let holders: Vec<Holder> = (0..FLOOD.div_ceil(per_holder))
        .map(|i| holder(api, per_holder.min(FLOOD - i * per_holder)))
        .collect();
    let reports: Vec<String> = holders
        .iter()
        .map(|h| {
            h.report
                .recv_timeout(Duration::from_secs(60))
                .expect("a holder did not report within 60 s")
        })
        .collect();
    let established: usize = reports
        .iter()
        .map(|r| {
            r.split_whitespace()
                .next()
                .unwrap()
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    eprintln!("holders: {reports:?}");

    // Held open, the flood costs the controller no CPU to speak of...
    let (t0, cpu0) = (Instant::now(), cpu_time(pid));
    std::thread::sleep(Duration::from_secs(2));
    let cpu = (cpu_time(pid) - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64();
    let rss_flooded = rss_kib(pid);
    // ...and the token holder is answered within a second, every time.
    let answers: Vec<Result<(u16, Duration), String>> = (0..9)
        .map(|_| authorized_get(api, token, Duration::from_secs(3)))
        .collect();
    eprintln!(
        "{established} idle connections established; controller CPU {:.0}% of a core; \
         RSS {rss_before} KiB before, {rss_flooded} KiB flooded; answers {answers:?}",
        cpu * 100.0
    );
    let slow: Vec<_> = answers
        .iter()
        .filter(|a| !matches!(a, Ok((200, t)) if *t < Duration::from_secs(1)))
        .collect();
    assert!(
        slow.is_empty(),
        "{} of 9 authorized requests failed or took 1 s or more with {established} idle \
         connections open: {slow:?}",
        slow.len()
    );
    assert!(
        cpu < 0.2,
        "the controller used {:.0}% of a core with idle connections open",
        cpu * 100.0
    );
    // The load was really applied: every connection was accepted by the kernel.
    assert_eq!(established, FLOOD, "holders: {reports:?}");
    // Its memory stays bounded while the flood is held...
    assert!(
        rss_flooded < rss_before + 64 * 1024,
        "RSS {rss_before} KiB before, {rss_flooded} KiB with the flood open"
    );

    // ...and after the flood goes away, it still answers.
    drop(holders);
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = rss_kib(pid);
    eprintln!("RSS {rss_after} KiB after the flood closed");
    assert_eq!(
        authorized_get(api, token, Duration::from_secs(1)).map(|(c, _)| c),
        Ok(200)
    );
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS {rss_before} KiB before, {rss_after} KiB after the flood closed"
    );
}

/// Reads from `s` until the server closes it (or `limit` passes); returns what arrived and
/// when the close came.
fn until_closed(s: &mut TcpStream, limit: Duration) -> (String, Option<Duration>) {
    let t = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Some(left) = limit.checked_sub(t.elapsed()) {
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => {
                return (
                    String::from_utf8_lossy(&got).into_owned(),
                    Some(t.elapsed()),
                )
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (
                    String::from_utf8_lossy(&got).into_owned(),
                    Some(t.elapsed()),
                )
            }
            Err(_) => break,
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), None)
}

#[test]
fn silent_trickling_and_tokenless_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (_ctl, api) = controller(&dir.path().join("ctl"));
    let mut silent = TcpStream::connect(api).unwrap();
    // A request head sent a byte at a time, 300 ms apart: complete only after 10 s.
    let mut trickle = TcpStream::connect(api).unwrap();
    let trickler = {
        let mut w = trickle.try_clone().unwrap();
        std::thread::spawn(move || {
            for b in b"GET /controller HTTP/1.1\r\nHost: x\r\nX-Zt-Auth: guess\r\n\r\n" {
                if w.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    // A request without the token, on a connection the client would keep open.
    let mut tokenless = TcpStream::connect(api).unwrap();
    write!(tokenless, "GET /controller HTTP/1.1\r\nHost: {api}\r\n\r\n").unwrap();
    let (answer, closed) = until_closed(&mut tokenless, Duration::from_secs(2));
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer:?}");
    assert!(
        closed.is_some(),
        "the tokenless connection was kept open: {answer:?}"
    );

    for (what, s) in [("silent", &mut silent), ("trickling", &mut trickle)] {
        let (got, closed) = until_closed(s, Duration::from_secs(8));
        let closed = closed.unwrap_or_else(|| panic!("the {what} connection is open after 8 s"));
        // Closed without an answer at the 5 s header timeout (started before `until_closed`).
        assert!(!got.contains("HTTP/1.1 200"), "{what}: {got:?}");
        assert!(
            closed < Duration::from_secs(7),
            "{what} closed after {closed:?}"
        );
    }
    trickler.join().unwrap();
}
