//! `zt controller` refuses a state it cannot read and a directory that is not a home, and
//! writes nothing when it refuses: each case runs the binary and compares the home's files
//! (names, bytes, modification times) before and after.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

const ZT: &str = env!("CARGO_BIN_EXE_zt");
const ZTRUN: &str = env!("CARGO_BIN_EXE_ztrun");
/// A root nobody answers on: the refusals come before the node starts.
const NO_ROOT: &str = "127.0.0.1:9";

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `zt controller --home HOME` (plus `extra`) and waits for its ready line.
fn start(home: &Path, extra: &[&str]) -> (Killed, SocketAddr) {
    let mut child = Command::new(ZT)
        .arg("controller")
        .arg("--home")
        .arg(home)
        .args(["--root", NO_ROOT, "--api", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let Some(api) = line.split_whitespace().nth(1) else {
        let out = child.wait_with_output().unwrap();
        panic!(
            "zt controller did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    (Killed(child), api.parse().unwrap())
}

/// Runs `zt controller` expecting a refusal within a few seconds.
fn refused(home: &Path, api: &str) -> Output {
    let mut child = Command::new(ZT)
        .arg("controller")
        .arg("--home")
        .arg(home)
        .args(["--root", NO_ROOT, "--api", api])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("zt controller --home {} did not refuse", home.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit status {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn zt(home: &Path, args: &[&str]) -> String {
    let out = Command::new(ZT)
        .args(args)
        .arg("--home")
        .arg(home)
        .output()
        .unwrap();
    assert!(out.status.success(), "zt {args:?}: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Every file of a directory (not recursive): name → (bytes, modification time).
fn snapshot(dir: &Path) -> BTreeMap<String, (Vec<u8>, SystemTime)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
            (name, (std::fs::read(&p).unwrap(), mtime))
        })
        .collect()
}

/// A controller home with one network and one authorized member, as a run leaves it.
fn golden(dir: &Path) -> (PathBuf, String) {
    let home = dir.join("golden");
    let (ctl, _) = start(&home, &[]);
    let nwid = zt(&home, &["net", "create", "--name", "kept"])
        .trim()
        .to_string();
    zt(&home, &["member", "authorize", &nwid, "0123456789"]);
    drop(ctl);
    (home, nwid)
}

/// A copy of `home` at `dir/name` (mode 0700).
fn copy_home(home: &Path, dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::create_dir(&to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o700)).unwrap();
    for e in std::fs::read_dir(home).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
    to
}

/// Writes `f`'s changes into the database file of `home` with the engine itself.
fn edit_db(home: &Path, f: impl FnOnce(&redb::WriteTransaction)) {
    let db = redb::Database::open(home.join("controller.redb")).unwrap();
    let tx = db.begin_write().unwrap();
    f(&tx);
    tx.commit().unwrap();
}

/// The refusal of a damaged state: exit status 1, the file named, what to do said, and
/// nothing written in the home.
fn check_refusal(home: &Path, names: &[&str], case: &str) -> String {
    let before = snapshot(home);
    std::thread::sleep(Duration::from_millis(20));
    let out = refused(home, "127.0.0.1:0");
    let err = stderr(&out);
    for n in names {
        let shown = home.join(n).display().to_string();
        assert!(err.contains(&shown), "{case}: {shown} not named: {err}");
    }
    assert!(err.contains("--reset"), "{case}: {err}");
    assert!(!err.contains("panicked"), "{case}: {err}");
    assert!(
        snapshot(home) == before,
        "{case}: the home changed; stderr: {err}"
    );
    err
}

#[test]
fn damaged_states_are_refused_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let (golden, nwid) = golden(dir.path());
    let net: u64 = u64::from_str_radix(&nwid, 16).unwrap();
    let meta: redb::TableDefinition<'_, &str, u64> = redb::TableDefinition::new("meta");
    let networks: redb::TableDefinition<'_, u64, &[u8]> = redb::TableDefinition::new("networks");
    let members: redb::TableDefinition<'_, (u64, u64), &[u8]> =
        redb::TableDefinition::new("members");

    // Broken JSON inside a member record.
    let home = copy_home(&golden, dir.path(), "json");
    edit_db(&home, |tx| {
        let mut t = tx.open_table(members).unwrap();
        t.insert(
            (net, 0x0123456789),
            &br#"{"authorized":tru,"ipv4":null"#[..],
        )
        .unwrap();
    });
    let err = check_refusal(&home, &["controller.redb"], "broken JSON");
    assert!(
        err.contains("member record") && err.contains("damaged"),
        "{err}"
    );

    // A network record that is valid JSON but not a network.
    let home = copy_home(&golden, dir.path(), "record");
    edit_db(&home, |tx| {
        let mut t = tx.open_table(networks).unwrap();
        t.insert(net, &br#"{"name":"kept"}"#[..]).unwrap();
    });
    let err = check_refusal(&home, &["controller.redb"], "bad network record");
    assert!(err.contains("network record"), "{err}");

    // The state entry missing from an existing database (it once read as a new one).
    let home = copy_home(&golden, dir.path(), "missing");
    edit_db(&home, |tx| {
        tx.open_table(meta)
            .unwrap()
            .remove("schema_version")
            .unwrap();
    });
    let err = check_refusal(&home, &["controller.redb"], "no schema_version");
    assert!(err.contains("holds no controller state"), "{err}");

    // Not a database at all, and half a database.
    let home = copy_home(&golden, dir.path(), "garbage");
    std::fs::write(home.join("controller.redb"), b"{\"networks\": []}").unwrap();
    check_refusal(&home, &["controller.redb"], "not a database");
    let home = copy_home(&golden, dir.path(), "truncated");
    let bytes = std::fs::read(home.join("controller.redb")).unwrap();
    std::fs::write(home.join("controller.redb"), &bytes[..bytes.len() / 3]).unwrap();
    check_refusal(&home, &["controller.redb"], "truncated");

    // A byte pattern the database engine panics on: caught, reported, exit status 1.
    let image = std::fs::read(golden.join("controller.redb")).unwrap();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let panicking = (0..image.len()).step_by(3).find_map(|i| {
        let mut bad = image.clone();
        bad[i] ^= 0xff;
        matches!(
            zt_core::controller::store::RedbStore::check_image(&bad),
            Err(zt_core::controller::store::StoreError::Panicked { .. })
        )
        .then_some(bad)
    });
    std::panic::set_hook(hook);
    match panicking {
        Some(bad) => {
            let home = copy_home(&golden, dir.path(), "panics");
            std::fs::write(home.join("controller.redb"), bad).unwrap();
            let err = check_refusal(&home, &["controller.redb"], "engine panic");
            assert!(err.contains("database engine failed"), "{err}");
        }
        None => eprintln!("skipped: no single byte flip makes this database engine panic"),
    }

    // The identity deleted beside the database.
    let home = copy_home(&golden, dir.path(), "no-identity");
    std::fs::remove_file(home.join("identity.secret")).unwrap();
    let err = check_refusal(
        &home,
        &["identity.secret", "controller.redb"],
        "identity missing",
    );
    assert!(err.contains("is missing"), "{err}");

    // --reset starts over on purpose and keeps the damaged file aside.
    let home = copy_home(&golden, dir.path(), "reset");
    std::fs::write(home.join("controller.redb"), b"damaged").unwrap();
    let (_ctl, _) = start(&home, &["--reset"]);
    assert!(!zt(&home, &["net", "list"]).contains(&nwid));
    let aside: Vec<_> = std::fs::read_dir(&home)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("controller.redb.reset-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read(home.join(&aside[0])).unwrap(), b"damaged");

    // The untouched copy still starts with its network.
    let (_ctl, _) = start(&golden, &[]);
    assert!(zt(&golden, &["net", "list"]).contains(&nwid));
}

#[test]
fn directories_that_are_not_homes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let check = |home: &Path, want: &str| {
        let before = snapshot(home);
        let err = stderr(&refused(home, "127.0.0.1:0"));
        assert!(err.contains(want), "{}: {err}", home.display());
        assert!(err.contains("--home"), "{err}");
        assert!(snapshot(home) == before, "{} changed", home.display());
        err
    };
    // /etc: not empty, not a home (and it stays without an identity).
    check(Path::new("/etc"), "not empty and holds no ztrun state");
    assert!(!Path::new("/etc/identity.secret").exists());
    assert!(!Path::new("/etc/controller.redb").exists());
    // An unrelated project directory.
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("Cargo.toml"), "[package]\n").unwrap();
    check(&project, "\"Cargo.toml\"");
    // Writable by others.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    check(&open, "writable by other users (mode 0777)");
    // Another user's directory.
    if nix::unistd::geteuid().is_root() {
        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        check(&theirs, "is owned by uid 65534, not by you (uid 0)");
    } else {
        // A directory root owns that is not writable by others.
        check(Path::new("/usr"), "is owned by uid 0");
    }
    // ztrun checks its home the same way.
    let out = Command::new(ZTRUN)
        .args(["--home", "/etc", "--nwid", "ff00000000000001", "--", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not empty and holds no ztrun state"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_taken_api_port_is_found_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api = taken.local_addr().unwrap().to_string();
    // A new home: not even created.
    let home = dir.path().join("second");
    let err = stderr(&refused(&home, &api));
    assert!(
        err.contains("cannot listen on") && err.contains(&api),
        "{err}"
    );
    assert!(!home.exists(), "the home was created");
    // An empty one: still empty.
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    refused(&home, &api);
    assert_eq!(std::fs::read_dir(&home).unwrap().count(), 0);
}
