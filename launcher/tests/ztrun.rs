//! `ztrun` and `zt` as a person runs them on one machine: a root, a server and a client,
//! each its own process, talking over the overlay on loopback.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{python, root, KillOnDrop as Killed, ZT, ZTRUN};

const NWID: &str = "ff0000000000e2e0";

#[test]
fn a_client_reaches_a_server_over_the_overlay() {
    let (_root, root_arg) = root();
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("index.html"), "marker-7f3a over the overlay\n").unwrap();
    let server_home = dir.path().join("server");
    let mut server = Command::new(ZTRUN)
        .arg("--home")
        .arg(&server_home)
        .args(["--nwid", NWID, "--root", &root_arg, "--", python()])
        .args(["-m", "http.server", "18080", "--directory"])
        .arg(&www)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(server.stderr.take().unwrap());
    let _server = Killed(server);
    let mut addr = None;
    let mut node = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut line = String::new();
    while addr.is_none() && Instant::now() < deadline {
        line.clear();
        if err.read_line(&mut line).unwrap() == 0 {
            break;
        }
        // "ztrun: new identity ADDRESS in HOME"
        if let Some(rest) = line.strip_prefix("ztrun: new identity ") {
            node = rest.split_whitespace().next().map(str::to_owned);
        }
        // "ztrun: joined NWID as V4 and V6 in N ms"
        if let Some(rest) = line.strip_prefix(&format!("ztrun: joined {NWID} as ")) {
            addr = rest.split_whitespace().next().map(str::to_owned);
        }
    }
    let addr = addr.expect("the server's ztrun printed no `joined` line");
    let node = node.expect("the server's ztrun printed no `new identity` line");
    assert!(
        addr.starts_with("100."),
        "ad-hoc IPv4 address expected: {addr}"
    );

    // The server may need a moment to listen; bounded retries.
    let client_home = dir.path().join("client");
    let mut last = String::new();
    for _ in 0..20 {
        let out = Command::new(ZTRUN)
            .arg("--home")
            .arg(&client_home)
            .args(["--quiet", "--nwid", NWID, "--root", &root_arg, "--"])
            .args(["curl", "-sS", "--max-time", "5"])
            .arg(format!("http://{addr}:18080/"))
            .output()
            .unwrap();
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "marker-7f3a over the overlay\n"
            );
            // --quiet: nothing on stderr from ztrun itself.
            assert!(out.stderr.is_empty(), "{last}");
            // The server by its member name, resolved inside the wrapped program.
            let by_name = Command::new(ZTRUN)
                .arg("--home")
                .arg(&client_home)
                .args(["--quiet", "--nwid", NWID, "--root", &root_arg, "--"])
                .args(["curl", "-sS", "--max-time", "5"])
                .arg(format!("http://{node}.{NWID}.zt:18080/"))
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&by_name.stdout),
                "marker-7f3a over the overlay\n",
                "fetching by name: {}",
                String::from_utf8_lossy(&by_name.stderr)
            );
            // The server's node shows the client as a peer.
            let status = Command::new(ZT)
                .args(["status", "--home"])
                .arg(&server_home)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&status.stdout);
            assert!(
                text.contains(NWID),
                "zt status: {text}{}",
                String::from_utf8_lossy(&status.stderr)
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("the client never got the page: {last}");
}

#[test]
fn without_a_network_only_loopback_is_reachable() {
    let out = Command::new(ZTRUN)
        .args(["--", python(), "-c"])
        .arg(
            "import socket,errno; s=socket.socket(); s.settimeout(3); \
             print(errno.errorcode.get(s.connect_ex(('198.18.0.1', 9)), 'connected'))",
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ENETUNREACH");
}

#[test]
fn the_program_exit_status_is_returned() {
    let st = Command::new(ZTRUN)
        .args(["--", "sh", "-c", "exit 7"])
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(7));
}

#[test]
fn bad_input_gets_an_actionable_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(ZTRUN)
        .args(["--nwid", "not-a-network", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("16 hex digits"));

    std::fs::write(dir.path().join("identity.secret"), "garbage").unwrap();
    let out = Command::new(ZTRUN)
        .arg("--home")
        .arg(dir.path())
        .args(["--nwid", NWID, "--root", "127.0.0.1:9", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("identity.secret"), "{err}");

    let out = Command::new(ZTRUN)
        .args([
            "--nwid",
            "0000000000000001",
            "--root",
            "127.0.0.1:9",
            "--",
            "true",
        ])
        .env("ZTRUN_HOME", dir.path().join("other"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("controller") && err.contains("0000000000"),
        "{err}"
    );
}

/// The pids of `pid`'s children (every thread's).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
    {
        let path = task.unwrap().path().join("children");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        out.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    out
}

fn alive(pid: u32) -> bool {
    // A zombie (reaped by nobody yet) counts as gone: it runs no code.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

#[test]
fn a_killed_ztrun_takes_its_program_with_it() {
    let mut ztrun = Command::new(ZTRUN)
        .args(["--", "sleep", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let program = loop {
        if let Some(&p) = children(ztrun.id()).first() {
            break p;
        }
        assert!(Instant::now() < deadline, "ztrun started no program");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(alive(program));
    // SIGKILL: ztrun gets no chance to forward anything or clean up.
    ztrun.kill().unwrap();
    ztrun.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(program) {
        assert!(
            Instant::now() < deadline,
            "the program (pid {program}) outlived its ztrun by 5 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_program_keeps_its_file_limit_while_ztrun_raises_its_own() {
    // Start ztrun with a soft limit of 512 under the hard one, as login sessions do.
    let hard = String::from_utf8(
        Command::new("sh")
            .args(["-c", "ulimit -Hn"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let hard = hard.trim();
    assert!(hard == "unlimited" || hard.parse::<u64>().unwrap() > 512);
    let script = "ulimit -Sn; ulimit -Hn; grep 'Max open files' /proc/$PPID/limits";
    let wrapped = Command::new("sh")
        .args([
            "-c",
            "ulimit -Sn 512 && exec \"$0\" --quiet -- sh -c \"$1\"",
        ])
        .arg(ZTRUN)
        .arg(script)
        .output()
        .unwrap();
    assert!(wrapped.status.success(), "{wrapped:?}");
    let out = String::from_utf8_lossy(&wrapped.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..2],
        ["512", hard],
        "the program sees the limits it would have had"
    );
    // ztrun itself (the program's parent): soft raised to hard.
    let fields: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        fields[3], fields[4],
        "ztrun's soft limit is its hard limit: {}",
        lines[2]
    );
    assert_ne!(fields[3], "512");
}

/// Every descendant of `pid`, depth first.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for c in children(pid) {
        out.push(c);
        out.extend(descendants(c));
    }
    out
}

#[test]
fn a_killed_ztrun_takes_the_whole_tree_with_it() {
    // One sleep is the shell's child, the other an orphan (its subshell has exited): a
    // daemon's shape. Neither may outlive a SIGKILLed ztrun.
    let mut ztrun = Command::new(ZTRUN)
        .args(["--", "sh", "-c", "(sleep 61 &); sleep 62 & wait"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let tree = loop {
        let tree = descendants(ztrun.id());
        let sleeps = tree
            .iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "sleep")
            })
            .count();
        if sleeps == 2 {
            break tree;
        }
        assert!(
            Instant::now() < deadline,
            "the program's tree did not start: {tree:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    ztrun.kill().unwrap();
    ztrun.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<u32> = tree.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "processes {left:?} of the program's tree outlived their ztrun by 5 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_program_starts_with_the_signal_dispositions_ztrun_was_given() {
    // The same parent dispositions (SIGUSR1 ignored, SIGPIPE default) natively and under
    // ztrun (whose Rust runtime ignores SIGPIPE for itself).
    let probe = "grep -E '^Sig(Ign|Blk)' /proc/self/status; yes | head -c 1 >/dev/null";
    let run = |wrapped: bool| {
        let script = if wrapped {
            "trap '' USR1; exec \"$0\" --quiet -- sh -c \"$1\""
        } else {
            "trap '' USR1; exec sh -c \"$1\""
        };
        let out = Command::new("sh")
            .args(["-c", script])
            .arg(ZTRUN)
            .arg(probe)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let (native, wrapped) = (run(false), run(true));
    let ignored = native
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap();
    assert_eq!(
        ignored & 0x1200,
        0x200,
        "SIGUSR1 ignored, SIGPIPE not: {native}"
    );
    assert_eq!(
        wrapped, native,
        "signal dispositions and mask differ under ztrun"
    );
    // `yes` dies of SIGPIPE (141 in the shell) rather than writing "Broken pipe".
    let out = Command::new(ZTRUN)
        .args([
            "--quiet",
            "--",
            "sh",
            "-c",
            "yes | head -c 1 >/dev/null; yes | (exit 0); echo $?",
        ])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("Broken pipe"),
        "{out:?}"
    );
}

/// A real forking daemon (vsftpd, standalone) blocked in `accept` on a virtual listener
/// after serving a client: its SIGCHLD handler has a signal pending when SIGTERM comes,
/// and it must stop within 1 s (it ignored SIGTERM until SIGKILL when only fatal signals
/// could interrupt an emulated call).
#[test]
fn a_forking_daemon_blocked_in_accept_stops_on_sigterm() {
    use std::io::{BufRead as _, Write as _};
    const VSFTPD: &str = "/usr/sbin/vsftpd";
    if !std::path::Path::new(VSFTPD).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "vsftpd is missing: .ci/packages installs it"
        );
        eprintln!("SKIPPED: {VSFTPD} is not installed (apt-get install vsftpd)");
        return;
    }
    let (_root, root_arg) = root();
    let dir = tempfile::tempdir().unwrap();
    let ftp_root = dir.path().join("root");
    std::fs::create_dir(&ftp_root).unwrap();
    std::fs::write(ftp_root.join("f.txt"), "hello\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.path().join("vsftpd.conf");
    std::fs::write(
        &conf,
        format!(
            "listen=YES\nlisten_ipv6=NO\nlisten_port={port}\nbackground=NO\n\
             run_as_launching_user=YES\nanonymous_enable=YES\nanon_root={root}\n\
             local_enable=NO\nwrite_enable=NO\nseccomp_sandbox=NO\nisolate=NO\n\
             isolate_network=NO\nsecure_chroot_dir={root}\n",
            root = ftp_root.display()
        ),
    )
    .unwrap();
    let mut ztrun = Command::new(ZTRUN)
        .arg("--home")
        .arg(dir.path().join("home"))
        .args([
            "--nwid",
            "ff0000000000e2e7",
            "--root",
            &root_arg,
            "--quiet",
            "--",
        ])
        .arg(VSFTPD)
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = scopeguard(ztrun.id());
    // Serve one client through the wildcard listener's loopback half: the daemon forks
    // a session process, which ends (SIGCHLD) after QUIT.
    let deadline = Instant::now() + Duration::from_secs(20);
    let stream = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "vsftpd did not listen: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut line = String::new();
    for command in ["USER anonymous", "PASS guest", "QUIT"] {
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert!(!line.starts_with('5'), "vsftpd refused: {line}");
        writeln!(writer, "{command}\r").unwrap();
    }
    line.clear();
    reader.read_line(&mut line).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // SIGTERM to ztrun, which forwards it to the daemon.
    let sent = Instant::now();
    Command::new("kill")
        .args(["-TERM", &ztrun.id().to_string()])
        .status()
        .unwrap();
    loop {
        if let Some(status) = ztrun.try_wait().unwrap() {
            assert_eq!(status.code(), Some(128 + 15), "ended by SIGTERM: {status}");
            break;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(1),
            "the daemon blocked in accept ignored SIGTERM for 1 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills `pid` with SIGKILL when dropped (a test that fails leaves nothing running).
fn scopeguard(pid: u32) -> impl Drop {
    struct Guard(u32);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-KILL", &self.0.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
    Guard(pid)
}
