//! Sockets at scale: what thousands of idle sockets and a fast loop of loopback
//! connections cost `ztrun` (issue 15). Both fail on a supervisor that scans the
//! program's descriptor table per socket, or keeps a closed socket's descriptors until a
//! periodic sweep.

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::{cpu_time, python, root, KillOnDrop, ZTRUN};

const NWID: &str = "ff00000000c0ffee";

/// Read lines from `out` until one starts with `prefix`; returns it (bounded by `limit`).
fn wait_line(out: &mut BufReader<ChildStdout>, prefix: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    let mut line = String::new();
    while Instant::now() < deadline {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            panic!("the program ended before printing {prefix:?}");
        }
        if line.starts_with(prefix) {
            return line.trim().to_owned();
        }
        assert!(!line.starts_with("error"), "the program failed: {line}");
    }
    panic!("no {prefix:?} line within {limit:?}");
}

/// Raise the program's own descriptor limit to its hard one, as servers do.
const RAISE_LIMIT: &str = "import resource\n\
    s, h = resource.getrlimit(resource.RLIMIT_NOFILE)\n\
    resource.setrlimit(resource.RLIMIT_NOFILE, (h, h))\n";

/// Listeners on the wildcard (each on the virtual network and on loopback), bound UDP
/// sockets, and one listener that accepts the client's connections and keeps them.
const SERVER: &str = "import socket, sys\n\
    n = int(sys.argv[1])\n\
    keep = []\n\
    for _ in range(n):\n\
    \x20   s = socket.socket(); s.bind(('0.0.0.0', 0)); s.listen(8); keep.append(s)\n\
    for _ in range(n):\n\
    \x20   u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('0.0.0.0', 0)); keep.append(u)\n\
    srv = socket.socket(); srv.bind(('0.0.0.0', 0)); srv.listen(4096)\n\
    print('ready', srv.getsockname()[1], flush=True)\n\
    srv.settimeout(60)\n\
    while len(keep) < 3 * n:\n\
    \x20   keep.append(srv.accept()[0])\n\
    print('accepted', flush=True)\n\
    sys.stdin.read()\n";

const CLIENT: &str = "import socket, sys\n\
    n, host, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])\n\
    keep = [socket.create_connection((host, port), timeout=20) for _ in range(n)]\n\
    print('connected', flush=True)\n\
    sys.stdin.read()\n";

/// `ztrun --ephemeral` on the test network running `script` with `args`; its stdout and
/// the address it joined as (from its stderr).
fn wrapped(
    root_arg: &str,
    script: &str,
    args: &[String],
) -> (KillOnDrop, BufReader<ChildStdout>, String) {
    // The program says why it failed on its stdout, where the test reads.
    let script = format!(
        "{RAISE_LIMIT}try:\n{}\nexcept Exception as e:\n    print('error', repr(e), flush=True)\n",
        script
            .lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let mut child = Command::new(ZTRUN)
        .args(["--ephemeral", "--nwid", NWID, "--root", root_arg, "--"])
        .args([python(), "-c", &script])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        assert!(Instant::now() < deadline, "ztrun printed no `joined` line");
        line.clear();
        assert_ne!(err.read_line(&mut line).unwrap(), 0, "ztrun ended: {line}");
        if let Some(rest) = line.strip_prefix(&format!("ztrun: joined {NWID} as ")) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining stderr so that a chatty ztrun never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    (KillOnDrop(child), out, addr)
}

#[test]
fn thousands_of_idle_sockets_cost_ztrun_almost_no_cpu() {
    const N: usize = 3_000;
    let (_root, root_arg) = root();
    let (mut server, mut server_out, server_addr) = wrapped(&root_arg, SERVER, &[N.to_string()]);
    let ready = wait_line(&mut server_out, "ready", Duration::from_secs(120));
    let port = ready.split_whitespace().nth(1).unwrap().to_owned();
    let (mut client, mut client_out, _) =
        wrapped(&root_arg, CLIENT, &[N.to_string(), server_addr, port]);
    wait_line(&mut client_out, "connected", Duration::from_secs(120));
    wait_line(&mut server_out, "accepted", Duration::from_secs(60));

    // Every socket now exists and is idle: 3,000 wildcard listeners, 3,000 bound UDP
    // sockets and 3,000 accepted connections in the server, 3,000 connected ones in the
    // client. Let start-up work settle, then measure ten seconds.
    std::thread::sleep(Duration::from_secs(2));
    let pids = [server.0.id(), client.0.id()];
    let before: Vec<Duration> = pids.iter().map(|p| cpu_time(*p)).collect();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let wall = start.elapsed();
    for (who, (pid, before)) in ["server", "client"].iter().zip(pids.iter().zip(before)) {
        let used = cpu_time(*pid) - before;
        let share = used.as_secs_f64() / wall.as_secs_f64();
        eprintln!(
            "{who}'s ztrun: {used:?} of CPU in {wall:?} ({:.2} %)",
            share * 100.0
        );
        assert!(
            share < 0.02,
            "{who}'s ztrun used {:.1} % of a core holding idle sockets (goal: under 2 %)",
            share * 100.0
        );
    }
    // Both programs still run (nothing failed while we measured).
    for child in [&mut server, &mut client] {
        assert!(child.0.try_wait().unwrap().is_none(), "a program ended");
        drop(child.0.stdin.take());
    }
}

#[test]
fn a_fast_loop_of_loopback_connects_runs_out_of_nothing() {
    // 20,000 connect/close cycles to a loopback listener of the program's own, as fast as
    // it goes, under a 4,096 descriptor limit. Natively this completes; a supervisor that holds two descriptors per
    // connect until a periodic sweep reaches its descriptor limit first.
    const N: u32 = 20_000;
    let script = "import socket, sys, threading, time\n\
        n = int(sys.argv[1])\n\
        srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(4096)\n\
        port = srv.getsockname()[1]\n\
        def serve():\n\
        \x20   while True:\n\
        \x20       srv.accept()[0].close()\n\
        threading.Thread(target=serve, daemon=True).start()\n\
        start = time.monotonic()\n\
        for i in range(n):\n\
        \x20   s = socket.socket()\n\
        \x20   try:\n\
        \x20       s.connect(('127.0.0.1', port))\n\
        \x20   except OSError as e:\n\
        \x20       print('failed at', i, e, flush=True); sys.exit(1)\n\
        \x20   s.close()\n\
        \x20   if time.monotonic() - start > 240:\n\
        \x20       print('too slow: stopped at', i, flush=True); sys.exit(2)\n\
        print('done', n, round(time.monotonic() - start, 1), flush=True)\n";
    // With the hard descriptor limit many distributions give a session (4,096), which
    // ztrun raises its soft limit to.
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -n 4096 && exec \"$@\"", "sh", ZTRUN])
        .args(["--quiet", "--", python(), "-c", script, &N.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    let status = child.wait().unwrap();
    let _ = std::io::stderr().flush();
    assert!(
        status.success() && out.starts_with(&format!("done {N}")),
        "the loop did not complete under ztrun: {out:?} ({status})"
    );
    eprintln!("{}", out.trim());
}
