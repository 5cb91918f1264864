//! What the report says about the machine and the binaries measured.

use std::process::Command;
use std::time::UNIX_EPOCH;

use compat_tests::matrix::ZtrunBinaries;

/// The machine, in one line: CPU model and count, memory, kernel.
pub(crate) fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".to_string(), |(_, m)| m.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(String::new(), |kb| {
            format!(", {:.1} GiB RAM", kb / 1024.0 / 1024.0)
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or("unknown".to_string(), |k| k.trim().to_string());
    // ztrun asks for 4 MiB UDP buffers; the kernel grants at most this much, and a
    // smaller grant drops bursts (bulk throughput depends on it).
    let rmem = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(String::new(), |b| {
            format!(", net.core.rmem_max {} KiB", b / 1024)
        });
    format!("{cores} cores ({model}){mem_gib}, Linux {kernel}{rmem}")
}

/// Which `ztrun` was measured: when its binary was written, and the commit of the working
/// tree now, with whether the crates ztrun is made of have uncommitted changes (`git`;
/// "unknown commit" outside a checkout). The binary may predate the tree: say both.
pub(crate) fn source_version(binaries: &ZtrunBinaries) -> String {
    let built = binaries
        .ztrun_path()
        .ok()
        .and_then(|p| std::fs::metadata(p).ok())
        .and_then(|m| m.modified().ok())
        .map_or("at an unknown time".to_string(), |t| {
            let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let day = compat_tests::matrix::utc_date(t);
            format!(
                "on {day} {:02}:{:02} UTC",
                secs % 86_400 / 3_600,
                secs % 3_600 / 60
            )
        });
    format!(
        "ztrun binary written {built}; working tree at {}",
        tree_version()
    )
}

pub(super) fn tree_version() -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) => {
            let dirty = git(&[
                "status",
                "--porcelain",
                "--",
                "zt-core",
                "netstack",
                "supervisor",
                "launcher",
            ])
            .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("commit {commit}, with uncommitted changes in the ztrun crates")
            } else {
                format!("commit {commit}")
            }
        }
        None => "unknown commit".into(),
    }
}

/// The 1-minute load average (proc(5) /proc/loadavg): other work on the machine skews
/// every figure, so the report says how busy it was.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}
