//! The command lines as a person and a script meet them: `--version`, help, shell
//! completions, manual pages, `--json` outputs that parse, `zt status` without a node,
//! `zt net set`, `zt member delete`, and what a member is told when its network is deleted.
//! Each command is its own process; controller tests use a root and a controller on
//! loopback.

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;
use common::{root, StopOnDrop as Killed, ZT, ZTRUN};

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok_stdout(out: Output) -> String {
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `zt ARGS --home HOME`.
fn zt(home: &Path, args: &[&str]) -> Output {
    Command::new(ZT)
        .args(args)
        .arg("--home")
        .arg(home)
        .output()
        .unwrap()
}

#[test]
fn version_names_the_commit() {
    let in_git = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .any(|d| d.join(".git").exists());
    for program in [ZT, ZTRUN] {
        let out = ok_stdout(run(program, &["--version"]));
        let commit = out
            .split("(commit ")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .unwrap_or_else(|| panic!("no commit in {out:?}"));
        assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
        if in_git {
            assert!(
                commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit()),
                "{out}"
            );
        } else {
            assert!(
                commit == "unknown" || commit.chars().all(|c| c.is_ascii_hexdigit()),
                "{out}"
            );
        }
    }
}

#[test]
fn help_says_what_each_command_does() {
    let zt_help = ok_stdout(run(ZT, &["--help"]));
    let ztrun_help = ok_stdout(run(ZTRUN, &["--help"]));
    assert!(zt_help.starts_with("Manage the identities"), "{zt_help}");
    assert!(ztrun_help.starts_with("Run a program"), "{ztrun_help}");
    for h in [&zt_help, &ztrun_help] {
        assert!(!h.contains("The ztrun and zt commands"), "{h}");
    }
}

#[test]
fn completions_are_generated_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let zt = ok_stdout(run(ZT, &["completions", shell]));
        assert!(
            zt.contains("member") && zt.contains("completions"),
            "{shell}: {zt}"
        );
        let ztrun = ok_stdout(run(ZT, &["completions", shell, "ztrun"]));
        assert!(ztrun.contains("nwid"), "{shell}: {ztrun}");
    }
    let out = run(ZT, &["completions", "tcsh"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values"));
}

#[test]
fn man_pages_are_generated() {
    let page = ok_stdout(run(ZT, &["man"]));
    assert!(page.contains(".TH zt 1"), "{page}");
    assert!(page.contains("member"), "{page}");
    let page = ok_stdout(run(ZT, &["man", "ztrun"]));
    assert!(
        page.contains(".TH ztrun 1") && page.contains("nwid"),
        "{page}"
    );
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man1");
    ok_stdout(run(ZT, &["man", "--out-dir", out_dir.to_str().unwrap()]));
    for page in ["zt.1", "ztrun.1", "zt-member-delete.1", "zt-net-set.1"] {
        let body = std::fs::read_to_string(out_dir.join(page)).unwrap();
        assert!(body.contains(".TH"), "{page}: {body}");
    }
}

#[test]
fn status_json_without_a_node_parses_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let out = zt(&home, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["running"], false, "{v}");
    assert!(v["node"].is_null(), "{v}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("no ztrun is running"),
        "{v}"
    );
    // Without --json: the reason on stderr, the same exit status.
    let out = zt(&home, &["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no ztrun is running"));
}

/// A reader that stops early ends zt quietly (SIGPIPE), without a panic message.
#[test]
fn a_closed_pipe_ends_zt_quietly() {
    let mut child = Command::new(ZT)
        .args(["completions", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // stdout is closed here: the rest of the script (40 KB, more than a pipe holds)
    // meets a closed pipe.
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!err.contains("panicked"), "{err}");
    use std::os::unix::process::ExitStatusExt as _;
    assert!(
        status.success() || status.signal() == Some(libc::SIGPIPE),
        "{status:?} {err}"
    );
}

/// `zt controller` with its home in `home` and its API on a free port.
fn controller(home: &Path, root: &str) -> Killed {
    let mut child = Command::new(ZT)
        .arg("controller")
        .arg("--home")
        .arg(home)
        .args(["--root", root, "--api", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.split_whitespace().count(),
        2,
        "no ready line: {line:?}"
    );
    Killed(child)
}

fn json(out: Output) -> serde_json::Value {
    serde_json::from_str(&ok_stdout(out)).unwrap()
}

#[test]
fn lists_have_headers_and_json_and_members_can_be_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let ctl_home = dir.path().join("controller");
    let (_root, root_arg) = root();
    let _ctl = controller(&ctl_home, &root_arg);
    let nwid = ok_stdout(zt(
        &ctl_home,
        &[
            "net",
            "create",
            "--name",
            "lab",
            "--ipv4-pool",
            "10.9.0.0/24",
        ],
    ))
    .trim()
    .to_string();

    // Networks: a header, then the network; JSON is an array of objects.
    let table = ok_stdout(zt(&ctl_home, &["net", "list"]));
    let mut rows = table.lines();
    let header = rows.next().unwrap();
    for column in ["NETWORK", "NAME", "ACCESS", "IPV4 POOL", "MTU", "MEMBERS"] {
        assert!(header.contains(column), "{table}");
    }
    let row = rows.next().unwrap();
    assert!(row.starts_with(&nwid) && row.contains("lab"), "{table}");
    let list = json(zt(&ctl_home, &["net", "list", "--json"]));
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["id"], nwid.as_str());
    assert_eq!(list[0]["name"], "lab");

    // Settings change in place; an unknown network is not created by a typo.
    let changed = ok_stdout(zt(
        &ctl_home,
        &[
            "net", "set", &nwid, "--name", "lab2", "--public", "--mtu", "1400",
        ],
    ));
    assert!(
        changed.contains("lab2") && changed.contains("public"),
        "{changed}"
    );
    let list = json(zt(&ctl_home, &["net", "list", "--json"]));
    assert_eq!(list[0]["name"], "lab2");
    assert_eq!(list[0]["private"], false);
    assert_eq!(list[0]["mtu"], 1400);
    let other = format!("{}ffffff", &nwid[..10]);
    let out = zt(&ctl_home, &["net", "set", &other, "--name", "x"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no network"),
        "{}",
        text(&out)
    );
    let out = zt(&ctl_home, &["net", "set", &nwid]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing to change"),
        "{}",
        text(&out)
    );
    assert_eq!(
        json(zt(&ctl_home, &["net", "list", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        1
    );
    ok_stdout(zt(&ctl_home, &["net", "set", &nwid, "--private"]));

    // Members: a typo authorized by mistake is listed, then deleted.
    let typo = "0123456789";
    let out = ok_stdout(zt(&ctl_home, &["member", "authorize", &nwid, typo]));
    assert!(out.contains("has not asked to join yet"), "{out}");
    let table = ok_stdout(zt(&ctl_home, &["member", "list", &nwid]));
    let header = table.lines().next().unwrap();
    for column in [
        "MEMBER",
        "AUTHORIZED",
        "ONLINE",
        "LAST SEEN",
        "NAME",
        "ADDRESSES",
    ] {
        assert!(header.contains(column), "{table}");
    }
    let row = table.lines().nth(1).unwrap();
    assert!(row.starts_with(typo) && row.contains("never"), "{table}");
    let list = json(zt(&ctl_home, &["member", "list", &nwid, "--json"]));
    assert_eq!(list[0]["id"], typo, "{list}");
    assert_eq!(list[0]["online"], false, "{list}");
    assert_eq!(list[0]["authorized"], true, "{list}");

    // Deauthorizing an address the network never saw records nothing and says so.
    let never = "0123456788";
    let out = zt(&ctl_home, &["member", "deauthorize", &nwid, never]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not a member") && !err.contains("revoked"),
        "{err}"
    );
    // Deauthorizing one that never asked revokes nothing it holds.
    let out = ok_stdout(zt(&ctl_home, &["member", "deauthorize", &nwid, typo]));
    assert!(out.contains("never asked to join"), "{out}");

    let out = ok_stdout(zt(&ctl_home, &["member", "delete", &nwid, typo]));
    assert!(out.contains(&format!("deleted member {typo}")), "{out}");
    let list = json(zt(&ctl_home, &["member", "list", &nwid, "--json"]));
    assert_eq!(list, serde_json::json!([]));
    let out = zt(&ctl_home, &["member", "delete", &nwid, typo]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a member"),
        "{}",
        text(&out)
    );
}

fn lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_line(
    rx: &mpsc::Receiver<String>,
    needle: &str,
    limit: Duration,
    seen: &mut Vec<String>,
) -> String {
    let deadline = Instant::now() + limit;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
            Err(_) => break,
        }
    }
    panic!(
        "no line with {needle:?} within {limit:?}; got:\n{}",
        seen.join("\n")
    );
}

/// A member waits for authorization (the `joined` line tells the wait apart), shows the
/// network's name in `zt status`, is listed online, and hears at once that its network
/// was deleted, told so rather than to ask for authorization.
#[test]
fn a_member_is_told_at_once_that_its_network_was_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let ctl_home = dir.path().join("controller");
    let home = dir.path().join("member");
    let (_root, root_arg) = root();
    let _ctl = controller(&ctl_home, &root_arg);
    let nwid = ok_stdout(zt(
        &ctl_home,
        &[
            "net",
            "create",
            "--name",
            "lab",
            "--ipv4-pool",
            "10.9.1.0/24",
        ],
    ))
    .trim()
    .to_string();
    let mut child = Command::new(ZTRUN)
        .arg("--home")
        .arg(&home)
        .args(["--nwid", &nwid, "--root", &root_arg, "--", "sleep", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines(child.stderr.take().unwrap());
    let _member = Killed(child);
    let mut seen = Vec::new();
    let denied = wait_line(
        &stderr,
        "is not authorized",
        Duration::from_secs(20),
        &mut seen,
    );
    let addr = denied
        .split("zt member authorize ")
        .nth(1)
        .and_then(|r| r.split_whitespace().nth(1))
        .map(|a| a.trim_end_matches('`').to_string())
        .unwrap_or_else(|| panic!("no address in {denied:?}"));
    std::thread::sleep(Duration::from_millis(500));
    ok_stdout(zt(&ctl_home, &["member", "authorize", &nwid, &addr]));
    let joined = wait_line(&stderr, "joined", Duration::from_secs(10), &mut seen);
    assert!(joined.contains("ms waiting for authorization"), "{joined}");

    // The network's name in `zt status`, text and JSON.
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let out = zt(&home, &["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if v["node"]["networks"][0]["name"] == "lab" || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["running"], true, "{status}");
    assert_eq!(status["node"]["networks"][0]["name"], "lab", "{status}");
    // A peer with a session says which transport cipher it runs.
    let peers = status["node"]["peers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        peers.iter().any(|p| p["up"] == true
            && ["AES-256-GCM", "ChaCha20-Poly1305"].contains(&p["cipher"].as_str().unwrap_or(""))),
        "{status}"
    );
    let shown = ok_stdout(zt(&home, &["status"]));
    let line = shown
        .lines()
        .find(|l| l.contains(&nwid))
        .unwrap_or_default();
    assert!(
        line.contains(&format!("{nwid} ok ")) && line.ends_with(" name lab"),
        "{shown}"
    );
    let members = json(zt(&ctl_home, &["member", "list", &nwid, "--json"]));
    assert_eq!(members[0]["online"], true, "{members}");

    let deleted = Instant::now();
    ok_stdout(zt(&ctl_home, &["net", "delete", &nwid]));
    let told = wait_line(
        &stderr,
        "deleted network",
        Duration::from_secs(5),
        &mut seen,
    );
    assert!(deleted.elapsed() < Duration::from_secs(3), "{told}");
    assert!(!told.contains("authorize"), "{told}");
}

/// Logs written to a pipe or a file carry no ANSI colour codes.
#[test]
fn logs_to_a_file_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (_root, root_arg) = root();
    let mut child = Command::new(ZT)
        .arg("controller")
        .arg("--home")
        .arg(dir.path().join("controller"))
        .args(["--root", &root_arg, "--api", "127.0.0.1:0"])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines(child.stderr.take().unwrap());
    let _ctl = Killed(child);
    let mut seen = Vec::new();
    // A tracing line (DEBUG), not one of the plain start-up lines.
    let line = wait_line(
        &stderr,
        "API connection limit",
        Duration::from_secs(10),
        &mut seen,
    );
    assert!(line.contains("DEBUG"), "{line}");
    for l in &seen {
        assert!(!l.contains('\u{1b}'), "an escape code in {l:?}");
    }
}
