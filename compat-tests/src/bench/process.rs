//! Processes of a run: servers that stop when dropped, finished clients, and what
//! /proc says about a process (resident memory, CPU time).

use std::fs::File;
use std::io::{Read as _, Seek as _};
use std::path::{Path as FsPath, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _};

/// A finished client.
pub(super) struct Finished {
    pub(super) stdout: String,
    /// The wall-clock time just before it was spawned.
    pub(super) spawned_at: SystemTime,
    /// The largest resident memory seen of each watched process (KiB).
    pub(super) rss_kb: Vec<u64>,
    /// Its `ztrun`'s figures at exit (`ZTRUN_STATS`), when it ran under one.
    pub(super) stats: Option<ZtrunStats>,
}

/// What a `ztrun` process had cost when it last wrote its `ZTRUN_STATS` file.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct ZtrunStats {
    pub(super) trapped_calls: f64,
    pub(super) switches: f64,
    /// User and system CPU time (µs).
    pub(super) cpu_us: f64,
}

impl ZtrunStats {
    /// Read the file (`None` when absent or unreadable).
    pub(super) fn read(path: &FsPath) -> Option<ZtrunStats> {
        let text = std::fs::read_to_string(path).ok()?;
        let v: serde_json::Value = serde_json::from_str(text.trim()).ok()?;
        Some(ZtrunStats {
            trapped_calls: v["trapped_calls"].as_f64()?,
            switches: v["voluntary_switches"].as_f64()? + v["involuntary_switches"].as_f64()?,
            cpu_us: v["cpu_us"].as_f64()?,
        })
    }

    /// The figures of a `ztrun` still running: read after its writer's next turn.
    pub(super) fn read_settled(path: &FsPath) -> Option<ZtrunStats> {
        std::thread::sleep(std::time::Duration::from_millis(600));
        Self::read(path)
    }

    pub(super) fn minus(self, earlier: ZtrunStats) -> ZtrunStats {
        ZtrunStats {
            trapped_calls: self.trapped_calls - earlier.trapped_calls,
            switches: self.switches - earlier.switches,
            cpu_us: self.cpu_us - earlier.cpu_us,
        }
    }

    pub(super) fn plus(self, other: ZtrunStats) -> ZtrunStats {
        ZtrunStats {
            trapped_calls: self.trapped_calls + other.trapped_calls,
            switches: self.switches + other.switches,
            cpu_us: self.cpu_us + other.cpu_us,
        }
    }
}

/// The `ZTRUN_STATS` file a command's `ztrun` writes, if it was given one.
pub(super) fn stats_file(cmd: &Command) -> Option<PathBuf> {
    cmd.get_envs()
        .find(|(k, _)| *k == STATS_VAR)
        .and_then(|(_, v)| v.map(PathBuf::from))
}

/// `launcher::stats::VAR`, spelled here (compat-tests runs the binaries, it does not link
/// the launcher).
pub(super) const STATS_VAR: &str = "ZTRUN_STATS";

/// A running server; stopped (SIGTERM, then SIGKILL) when dropped.
pub(super) struct Server {
    pub(super) name: String,
    pub(super) child: Child,
    pub(super) log: PathBuf,
    /// Its `ztrun`'s `ZTRUN_STATS` file, when it runs under one.
    pub(super) stats: Option<PathBuf>,
}

impl Server {
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(super) fn stop(self) {
        drop(self);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            if wait_with_deadline(&mut self.child, Duration::from_secs(5)).is_err() {
                eprintln!("bench: {} ignored SIGTERM; killing it", self.name);
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// Wait for `child` for at most `limit`; an error when it is still running.
pub(super) fn wait_with_deadline(
    child: &mut Child,
    limit: Duration,
) -> anyhow::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            bail!("still running after {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `perf record` of `pids` for `seconds`, call graphs by DWARF unwinding.
pub(super) fn start_perf(dir: &FsPath, pids: &[u32], seconds: f64, verbose: bool) -> Option<Child> {
    let _ = std::fs::create_dir_all(dir);
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let mut cmd = Command::new("perf");
    cmd.args(["record", "-F", "499", "--call-graph", "dwarf,32768", "-o"])
        .arg(dir.join("perf.data"))
        .args(["-p", &pids.join(","), "--", "sleep"])
        .arg(format!("{}", seconds.max(1.0)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            File::create(dir.join("perf-record.log"))
                .ok()
                .map_or(Stdio::null(), Stdio::from),
        );
    if verbose {
        eprintln!("bench: $ {}", describe(&cmd));
    }
    cmd.spawn().map_err(|e| eprintln!("bench: perf: {e}")).ok()
}

pub(super) fn chown_nobody(path: &FsPath) -> anyhow::Result<()> {
    std::os::unix::fs::chown(path, Some(65534), Some(65534))
        .with_context(|| format!("chown 65534 {}", path.display()))
}

pub(super) fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

pub(super) fn read_all(file: &mut File) -> String {
    let mut bytes = Vec::new();
    let _ = file
        .seek(std::io::SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes));
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last 300 bytes of `text`, on one line.
pub(super) fn tail(text: &str) -> String {
    let mut start = text.len().saturating_sub(300);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let joined = text[start..]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if joined.is_empty() {
        "(no output)".into()
    } else {
        joined
    }
}

/// User plus system CPU time of `pid` in clock ticks (fields 14 and 15 of
/// /proc/PID/stat, proc(5)).
pub(super) fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat)
}

pub(super) fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field n is at index n - 3.
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// `ticks` of CPU time over `window` as a percentage of one core.
pub(super) fn ticks_percent(ticks: u64, window: Duration) -> f64 {
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100) as f64;
    ticks as f64 / per_second / window.as_secs_f64().max(1e-9) * 100.0
}

/// VmRSS of `pid` in KiB, from /proc/PID/status (proc(5)).
pub(super) fn vm_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss_kb(&status)
}

pub(super) fn parse_vm_rss_kb(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn vm_rss_is_read_from_proc_status() {
        let status = "Name:\tztrun\nVmPeak:\t  20000 kB\nVmRSS:\t    6144 kB\nRssAnon:\t 3000 kB\n";
        assert_eq!(parse_vm_rss_kb(status), Some(6144));
        assert_eq!(parse_vm_rss_kb("Name:\tx\n"), None);
        let own = vm_rss_kb(std::process::id()).unwrap();
        assert!(own > 100, "{own} KiB");
    }

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        let stat = "1234 (a (weird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 25 17 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(42));
        assert_eq!(parse_cpu_ticks("1234 (x) S 1"), None);
        assert!(cpu_ticks(std::process::id()).is_some());
    }
}
