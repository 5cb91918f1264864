//! External commands, process identity for names, killing what lives in a namespace, and
//! cleaning up after dead test processes.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::error::{Result, TestNetError};

/// Where `ip netns` keeps the names of network namespaces (ip-netns(8)).
pub(crate) const NETNS_DIR: &str = "/run/netns";

/// Prefix of every namespace the harness creates.
pub(crate) const PREFIX: &str = "ztt";

/// The full path of a system tool, looking in the sbin directories a non-login root shell
/// may not have on its PATH; falls back to the bare name (PATH lookup).
pub(crate) fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    PathBuf::from(name)
}

/// `program arg arg ...` for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or(cmd.get_program())
        .to_string_lossy()
        .into_owned();
    let mut s = program;
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Run `cmd` to completion, feeding it `stdin`, and return its stdout; a non-zero exit is
/// an error carrying the command line (prefixed by `context` when not empty) and stderr.
pub(crate) fn run_checked(cmd: &mut Command, stdin: Option<&str>, context: &str) -> Result<String> {
    let command = if context.is_empty() {
        describe(cmd)
    } else {
        format!("{context}: {}", describe(cmd))
    };
    let spawn_err = |source| TestNetError::Spawn {
        command: command.clone(),
        source,
    };
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(spawn_err)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).map_err(spawn_err)?;
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if !out.status.success() {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if let Some(input) = stdin {
            stderr.push_str(&format!("\n--- input was:\n{input}"));
        }
        return Err(TestNetError::CommandFailed {
            command,
            status: out.status,
            stderr,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip ARGS...`, checked.
pub(crate) fn ip<I, S>(args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_checked(Command::new(tool("ip")).args(args), None, "")
}

/// The start time of process `pid` in clock ticks since boot (proc(5), field 22 of
/// `/proc/PID/stat`); together with the pid it names a process for good, since pids are
/// reused but never at the same start time.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything, so count
    // fields from the last ')': what follows starts at field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// `ztt-<pid>-<start time>`: the part of every namespace name that names this process.
pub(crate) fn process_tag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let pid = std::process::id();
        format!("{PREFIX}-{pid}-{}", start_time(pid).unwrap_or(0))
    })
}

/// The (pid, start time) of the process that created namespace `name`, if `name` is one of
/// the harness's.
pub(crate) fn creator(name: &str) -> Option<(u32, u64)> {
    let mut parts = name.strip_prefix(PREFIX)?.strip_prefix('-')?.splitn(3, '-');
    let pid = parts.next()?.parse().ok()?;
    let start = parts.next()?.parse().ok()?;
    parts.next()?;
    Some((pid, start))
}

/// The names of all network namespaces in `/run/netns`, sorted, like `ip netns list`.
pub fn list_namespaces() -> Result<Vec<String>> {
    let entries = match fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TestNetError::io(format!("listing {NETNS_DIR}"), e)),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// Send SIGKILL to every process (other than this one) whose network namespace is one of
/// the named ones, like `ip netns pids NAME | xargs kill -9`. Returns the pids killed.
pub(crate) fn kill_processes_in(names: &[String]) -> Vec<i32> {
    // A namespace is identified by the (device, inode) of its nsfs file.
    let wanted: HashMap<(u64, u64), &str> = names
        .iter()
        .filter_map(|name| {
            let meta = fs::metadata(Path::new(NETNS_DIR).join(name)).ok()?;
            Some(((meta.dev(), meta.ino()), name.as_str()))
        })
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let me = std::process::id() as i32;
    let mut killed = Vec::new();
    let Ok(proc_dir) = fs::read_dir("/proc") else {
        return killed;
    };
    for entry in proc_dir.filter_map(|e| e.ok()) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(meta) = fs::metadata(entry.path().join("ns/net")) else {
            continue;
        };
        if wanted.contains_key(&(meta.dev(), meta.ino()))
            && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
        {
            killed.push(pid);
        }
    }
    killed
}

/// Delete the named namespaces (`ip netns delete`), going on past failures; returns one
/// message per namespace that is still there afterwards.
pub(crate) fn delete_namespaces(names: &[String]) -> Vec<String> {
    if names.is_empty() {
        return Vec::new();
    }
    let script: String = names
        .iter()
        .map(|n| format!("netns delete {n}\n"))
        .collect();
    let result = run_checked(
        Command::new(tool("ip")).args(["-force", "-batch", "-"]),
        Some(&script),
        "",
    );
    names
        .iter()
        .filter(|n| Path::new(NETNS_DIR).join(n).exists())
        .map(|n| match &result {
            Ok(_) => format!("namespace {n} is still there"),
            Err(e) => format!("namespace {n} is still there ({e})"),
        })
        .collect()
}

/// Best-effort removal of namespaces left behind by test processes that died without
/// tearing down (killed by a signal, `abort`, a debugger...). A namespace is stale when its
/// name starts with `ztt-PID-START-` and no process with that pid and start time is alive;
/// processes still running inside it are killed first. Namespaces of live processes and
/// every name the harness did not make are left alone. Returns the names removed.
///
/// [`TestNet::new`](super::TestNet::new) calls this once per process.
pub fn cleanup_stale_namespaces() -> Result<Vec<String>> {
    let stale: Vec<String> = list_namespaces()?
        .into_iter()
        .filter(|name| match creator(name) {
            Some((pid, start)) => start_time(pid) != Some(start),
            None => false,
        })
        .collect();
    kill_processes_in(&stale);
    let failures = delete_namespaces(&stale);
    if !failures.is_empty() {
        return Err(TestNetError::Teardown {
            net: "stale namespaces".into(),
            failures,
        });
    }
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_their_creator() {
        assert_eq!(creator("ztt-123-456-7-nat-a"), Some((123, 456)));
        assert_eq!(creator("ztt-123-456-7.switch"), Some((123, 456)));
        assert_eq!(creator("ztt-123-456"), None);
        assert_eq!(creator("other-123-456-7-a"), None);
        assert_eq!(creator("ztt-x-456-7-a"), None);
        let tag = process_tag();
        let (pid, start) = creator(&format!("{tag}-0-a")).unwrap();
        assert_eq!(pid, std::process::id());
        assert_eq!(Some(start), start_time(pid));
    }

    #[test]
    fn describes_commands() {
        let mut cmd = Command::new("/usr/sbin/ip");
        cmd.args(["-n", "x", "link"]);
        assert_eq!(describe(&cmd), "ip -n x link");
    }
}
