//! `ZTRUN_STATS=FILE`: what this `ztrun` process has cost so far, for the benchmark.
//!
//! When the variable names a file, `ztrun` writes one line of JSON to it every half
//! second and once more as it exits: the trapped calls its supervisor received, and the
//! context switches and CPU time of all its threads (getrusage(2), `RUSAGE_SELF`). The benchmark
//! reads it before and after a measurement to count calls and wake-ups per request and
//! per connection. A diagnostic: nothing else reads or needs it.

use std::path::PathBuf;
use std::time::Duration;

/// The variable that turns the file on.
pub const VAR: &str = "ZTRUN_STATS";

/// The file being written.
#[derive(Debug, Clone)]
pub struct Stats {
    path: PathBuf,
}

/// The file `ZTRUN_STATS` names, written from now on every half second.
pub fn from_env() -> Option<Stats> {
    let path = PathBuf::from(std::env::var_os(VAR).filter(|v| !v.is_empty())?);
    let stats = Stats { path };
    let writer = stats.clone();
    let spawned = std::thread::Builder::new()
        .name("ztrun-stats".into())
        .spawn(move || loop {
            writer.write();
            std::thread::sleep(Duration::from_millis(500));
        });
    if let Err(e) = spawned {
        tracing::warn!(%e, "{VAR}: cannot start its writer");
    }
    Some(stats)
}

impl Stats {
    /// Write the current figures (replacing the file's content at once).
    pub fn write(&self) {
        let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF);
        let (voluntary, involuntary, cpu_us) = usage
            .map(|u| {
                let us = |t: nix::sys::time::TimeVal| t.tv_sec() * 1_000_000 + t.tv_usec();
                (
                    u.voluntary_context_switches(),
                    u.involuntary_context_switches(),
                    us(u.user_time()) + us(u.system_time()),
                )
            })
            .unwrap_or((0, 0, 0));
        let line = format!(
            "{{\"trapped_calls\":{},\"voluntary_switches\":{voluntary},\"involuntary_switches\":{involuntary},\"cpu_us\":{cpu_us}}}\n",
            supervisor::trapped_calls()
        );
        let tmp = self.path.with_extension("tmp");
        if std::fs::write(&tmp, line).is_ok() {
            let _ = std::fs::rename(&tmp, &self.path);
        }
    }
}
