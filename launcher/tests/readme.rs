//! The README's "Private networks" section, run word for word as a person would on one
//! machine: every command of its `sh` block in order, in one shell, with the machine's
//! defaults (the default home, the controller API on 127.0.0.1:9994, the default root on
//! 127.0.0.1:9993). What the person does between commands is added around them and
//! nothing else: a command the README puts in the background has its output kept in a
//! file, `ADDR` is read from what `ztrun` printed, and each step waits for the line the
//! README says comes next.
//!
//! The defaults are the machine's, so the test runs in a network namespace of its own
//! (`unshare -n`), as uid 65534 with its own `HOME`: it needs root to set that up, and
//! says so without it.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

const ZTRUN: &str = env!("CARGO_BIN_EXE_ztrun");
const ZT: &str = env!("CARGO_BIN_EXE_zt");

/// The commands of the section's `sh` block.
fn readme_commands() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let section = readme
        .split("## Private networks")
        .nth(1)
        .expect("a \"Private networks\" section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("an sh block in the section");
    block
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(|l| match l.find("  #") {
            Some(i) => l[..i].trim_end().to_string(),
            None => l.trim_end().to_string(),
        })
        .collect()
}

/// The shell script: each README command, with what a person does around it.
fn script(commands: &[String]) -> String {
    let mut s = String::from(
        "set -eu\n\
         wait_for() { # FILE TEXT: wait (at most 30 s) until FILE holds TEXT\n\
           for _ in $(seq 300); do grep -q \"$2\" \"$1\" 2>/dev/null && return 0; sleep 0.1; done\n\
           echo \"no '$2' in $1:\"; cat \"$1\"; exit 1\n\
         }\n\
         trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n",
    );
    let mut background = 0;
    let mut server_log = String::new();
    for c in commands {
        let c = c.replace("ADDR", "$ADDR");
        s.push_str(&format!("echo '+ {}'\n", c.replace('\'', "'\\''")));
        if let Some(cmd) = c.strip_suffix('&') {
            background += 1;
            let log = format!("bg{background}.log");
            s.push_str(&format!("{} > {log} 2>&1 &\n", cmd.trim_end()));
            if cmd.starts_with("zt controller") {
                s.push_str("for _ in $(seq 300); do zt net list >/dev/null 2>&1 && break; sleep 0.1; done\n");
            } else if cmd.starts_with("ztrun") {
                server_log = log.clone();
                // The README shows the line the person reads ADDR from.
                s.push_str(&format!(
                    "wait_for {log} 'is not authorized'\n\
                     ADDR=$(sed -n 's/.*this node (\\([0-9a-f]*\\)).*/\\1/p' {log} | head -1)\n\
                     echo \"ADDR=$ADDR\"\n"
                ));
            }
            continue;
        }
        s.push_str(&c);
        s.push('\n');
        if c.starts_with("zt member authorize") {
            // The person sees the server start.
            s.push_str(&format!(
                "wait_for {server_log} 'joined'\nwait_for {server_log} 'Serving HTTP'\ncat {server_log}\n"
            ));
        }
    }
    s
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn the_private_networks_section_runs_as_written() {
    if !is_root() {
        eprintln!(
            "SKIPPED (not run): the README test needs root to give itself a network namespace \
             (`unshare -n`) for the machine's default ports; run the tests as root"
        );
        return;
    }
    let commands = readme_commands();
    assert!(
        commands.iter().any(|c| c.starts_with("zt controller"))
            && commands.iter().filter(|c| c.starts_with("ztrun")).count() >= 2,
        "the section changed shape: {commands:#?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    std::fs::set_permissions(work, std::fs::Permissions::from_mode(0o777)).unwrap();
    let bin = work.join("bin");
    std::fs::create_dir(&bin).unwrap();
    for (src, name) in [(ZTRUN, "ztrun"), (ZT, "zt")] {
        std::fs::copy(src, bin.join(name)).unwrap();
    }
    // The README's ./server: a web server that takes --port.
    let server = work.join("server");
    std::fs::write(
        &server,
        "#!/bin/sh\n# ./server --port PORT\nmkdir -p site && echo 'hello from the lab' > site/index.html\n\
         exec python3 -u -m http.server --directory site \"$2\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&server, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(work.join("readme.sh"), script(&commands)).unwrap();
    let home = work.join("home");
    std::fs::create_dir(&home).unwrap();
    nix::unistd::chown(
        &home,
        Some(nix::unistd::Uid::from_raw(65534)),
        Some(nix::unistd::Gid::from_raw(65534)),
    )
    .unwrap();
    nix::unistd::chown(
        work,
        Some(nix::unistd::Uid::from_raw(65534)),
        Some(nix::unistd::Gid::from_raw(65534)),
    )
    .unwrap();
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display());
    let inner = format!(
        "ip link set lo up && cd {} && exec setpriv --reuid=65534 --regid=65534 --clear-groups \
         env -i PATH={path} HOME={} bash readme.sh",
        work.display(),
        home.display()
    );
    let out = Command::new("timeout")
        .args(["120", "unshare", "-n", "sh", "-c", &inner])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let logs: String = (1..=2)
        .map(|i| {
            let p = work.join(format!("bg{i}.log"));
            format!(
                "--- bg{i}.log\n{}",
                std::fs::read_to_string(p).unwrap_or_default()
            )
        })
        .collect();
    let node_log =
        std::fs::read_to_string(home.join(".local/share/ztrun/node.log")).unwrap_or_default();
    let all = format!("{stdout}\n--- stderr\n{stderr}\n{logs}\n--- node.log\n{node_log}");
    assert!(out.status.success(), "the README's commands failed:\n{all}");
    // What the section promises along the way.
    assert!(
        stdout.contains("joined ") && stdout.contains("as 10.147.17.1 "),
        "the server did not join as 10.147.17.1:\n{all}"
    );
    assert!(
        stdout.contains("hello from the lab"),
        "curl under ztrun did not fetch the page from web.zt:\n{all}"
    );
    assert!(
        stderr.contains("shared with 1 other program"),
        "the second ztrun did not attach to the home's node:\n{all}"
    );
    assert!(
        stdout.contains("program  pid") && stdout.contains("./server --port 8080"),
        "zt status does not list the server:\n{all}"
    );
    assert!(
        stdout.contains("lab2"),
        "zt net set did not rename the network:\n{all}"
    );
}
