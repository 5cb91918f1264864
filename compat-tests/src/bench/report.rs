//! The results of one run: the table (value per path and ratio to the veth path), the
//! issue's targets with met / not met, and the Markdown of `BENCHMARKS.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Where the two programs of a measurement run and what carries their bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Path {
    /// (a) both on host 1, over 127.0.0.1.
    Loopback,
    /// (b) host 1 and host 2, kernel TCP over the veth LAN: the reference.
    Veth,
    /// (c) both under `ztrun`, over the virtual network between the hosts.
    Ztrun,
}

impl Path {
    /// Every path, in table order.
    pub(crate) const ALL: [Path; 3] = [Path::Loopback, Path::Veth, Path::Ztrun];

    /// The column heading.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Path::Loopback => "(a) loopback",
            Path::Veth => "(b) veth",
            Path::Ztrun => "(c) ztrun",
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Metric {
    /// iperf3 TCP, one stream (Gbit/s).
    Iperf1,
    /// iperf3 TCP, four streams (Gbit/s).
    Iperf4,
    /// 64-byte ping-pong on one connection (requests/s).
    RrRate,
    /// Its median round trip (µs).
    RrP50,
    /// Its 99th-percentile round trip (µs).
    RrP99,
    /// Connect, one request, close (connections/s).
    ConnRate,
    /// redis-benchmark SET, 10 clients (requests/s).
    RedisSet,
    /// redis-benchmark GET, 10 clients (requests/s).
    RedisGet,
    /// From spawning the client to its first answered request (ms).
    FirstReply,
    /// A CPU-bound program's own run time (s): (b) without ztrun, (c) with.
    CpuTime,
    /// The same program's CPU time (s).
    CpuProcess,
    /// CPU used by the server's `ztrun` while online and idle (% of one core).
    CpuIdle,
    /// The server's `ztrun`, online and idle (MiB).
    RssIdle,
    /// The larger `ztrun` during iperf3 (MiB).
    RssLoad,
    /// Connections held and still answering after the bulk flow.
    Held,
    /// One iperf3 stream while they are held (Gbit/s).
    BulkAlongside,
    /// The server's `ztrun` holding them (MiB).
    RssHeldServer,
    /// The client's `ztrun` holding them (MiB).
    RssHeldClient,
    /// The larger `ztrun` holding them once they have been idle a while (MiB).
    RssHeldIdle,
    /// Context switches of both `ztrun`s per ping-pong request.
    SwitchesPerRequest,
    /// CPU time of both `ztrun`s per ping-pong request (µs).
    CpuPerRequest,
    /// Trapped calls of both `ztrun`s per new connection.
    TrapsPerConn,
    /// Context switches of both `ztrun`s per new connection.
    SwitchesPerConn,
    /// CPU time of both `ztrun`s per new connection (µs).
    CpuPerConn,
    /// `ztrun` CPU holding idle wildcard listeners (% of one core).
    IdleListenersCpu,
    /// `ztrun` memory per idle listener (KiB).
    IdleListenersKib,
    /// `ztrun` descriptors per idle listener.
    IdleListenersFds,
    /// `ztrun` CPU holding idle UDP sockets.
    IdleUdpCpu,
    /// `ztrun` memory per idle UDP socket (KiB).
    IdleUdpKib,
    /// `ztrun` descriptors per idle UDP socket.
    IdleUdpFds,
    /// The larger `ztrun` CPU (server or client) holding the connections idle.
    IdleConnsCpu,
    /// The larger `ztrun` memory per held connection (KiB).
    IdleConnsKib,
    /// Loopback connect/close cycles completed of 20,000 (10,000 in a quick run).
    LoopCycles,
    /// Their rate (cycles/s).
    LoopRate,
}

impl Metric {
    /// Every metric, in table order.
    pub(crate) const ALL: [Metric; 34] = [
        Metric::Iperf1,
        Metric::Iperf4,
        Metric::RrRate,
        Metric::RrP50,
        Metric::RrP99,
        Metric::ConnRate,
        Metric::RedisSet,
        Metric::RedisGet,
        Metric::FirstReply,
        Metric::CpuTime,
        Metric::CpuProcess,
        Metric::CpuIdle,
        Metric::RssIdle,
        Metric::RssLoad,
        Metric::Held,
        Metric::BulkAlongside,
        Metric::RssHeldServer,
        Metric::RssHeldClient,
        Metric::RssHeldIdle,
        Metric::SwitchesPerRequest,
        Metric::CpuPerRequest,
        Metric::TrapsPerConn,
        Metric::SwitchesPerConn,
        Metric::CpuPerConn,
        Metric::IdleListenersCpu,
        Metric::IdleListenersKib,
        Metric::IdleListenersFds,
        Metric::IdleUdpCpu,
        Metric::IdleUdpKib,
        Metric::IdleUdpFds,
        Metric::IdleConnsCpu,
        Metric::IdleConnsKib,
        Metric::LoopCycles,
        Metric::LoopRate,
    ];

    /// The row heading.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Metric::Iperf1 => "iperf3 TCP, 1 stream",
            Metric::Iperf4 => "iperf3 TCP, 4 streams",
            Metric::RrRate => "request/response, 64 B, 1 conn",
            Metric::RrP50 => "round trip p50",
            Metric::RrP99 => "round trip p99",
            Metric::ConnRate => "new connections (connect+req+close)",
            Metric::RedisSet => "redis-benchmark SET (10 clients)",
            Metric::RedisGet => "redis-benchmark GET (10 clients)",
            Metric::FirstReply => "spawn to first answered request",
            Metric::CpuTime => "CPU-bound program (sha256 loop), wall",
            Metric::CpuProcess => "CPU-bound program, its CPU time",
            Metric::CpuIdle => "ztrun CPU, idle",
            Metric::RssIdle => "ztrun RSS, idle",
            Metric::RssLoad => "ztrun RSS, under iperf3 load",
            Metric::Held => "concurrent connections held",
            Metric::BulkAlongside => "bulk flow alongside them",
            Metric::RssHeldServer => "ztrun RSS holding them, server",
            Metric::RssHeldClient => "ztrun RSS holding them, client",
            Metric::RssHeldIdle => "ztrun RSS holding them idle (larger side)",
            Metric::SwitchesPerRequest => "ztrun context switches per request, both sides",
            Metric::TrapsPerConn => "trapped calls per new connection, both sides",
            Metric::SwitchesPerConn => "ztrun context switches per new connection, both sides",
            Metric::CpuPerRequest => "ztrun CPU per request, both sides",
            Metric::CpuPerConn => "ztrun CPU per new connection, both sides",
            Metric::IdleListenersCpu => "idle wildcard listeners: ztrun CPU",
            Metric::IdleListenersKib => "idle wildcard listeners: ztrun memory each",
            Metric::IdleListenersFds => "idle wildcard listeners: ztrun descriptors each",
            Metric::IdleUdpCpu => "idle UDP sockets: ztrun CPU",
            Metric::IdleUdpKib => "idle UDP sockets: ztrun memory each",
            Metric::IdleUdpFds => "idle UDP sockets: ztrun descriptors each",
            Metric::IdleConnsCpu => "idle held connections: ztrun CPU (larger side)",
            Metric::IdleConnsKib => "idle held connections: ztrun memory each (larger side)",
            Metric::LoopCycles => "loopback connect/close loop: cycles completed",
            Metric::LoopRate => "loopback connect/close loop: rate",
        }
    }

    /// The unit of its values.
    pub(crate) fn unit(self) -> &'static str {
        match self {
            Metric::Iperf1 | Metric::Iperf4 | Metric::BulkAlongside => "Gbit/s",
            Metric::RrRate | Metric::RedisSet | Metric::RedisGet => "req/s",
            Metric::ConnRate => "conn/s",
            Metric::RrP50 | Metric::RrP99 | Metric::CpuPerRequest | Metric::CpuPerConn => "µs",
            Metric::FirstReply => "ms",
            Metric::CpuTime | Metric::CpuProcess => "s",
            Metric::CpuIdle => "% of a core",
            Metric::RssIdle
            | Metric::RssLoad
            | Metric::RssHeldServer
            | Metric::RssHeldClient
            | Metric::RssHeldIdle => "MiB",
            Metric::Held
            | Metric::SwitchesPerRequest
            | Metric::TrapsPerConn
            | Metric::SwitchesPerConn
            | Metric::LoopCycles => "",
            Metric::IdleListenersCpu | Metric::IdleUdpCpu | Metric::IdleConnsCpu => "% of a core",
            Metric::IdleListenersKib | Metric::IdleUdpKib | Metric::IdleConnsKib => "KiB",
            Metric::IdleListenersFds | Metric::IdleUdpFds => "",
            Metric::LoopRate => "cycles/s",
        }
    }

    /// `value` with as many digits as it deserves.
    pub(crate) fn format(self, value: f64) -> String {
        let digits = match self {
            Metric::CpuTime | Metric::CpuProcess => 3,
            Metric::CpuIdle
            | Metric::IdleListenersCpu
            | Metric::IdleUdpCpu
            | Metric::IdleConnsCpu => 2,
            Metric::Held | Metric::LoopCycles => 0,
            Metric::SwitchesPerRequest
            | Metric::TrapsPerConn
            | Metric::SwitchesPerConn
            | Metric::IdleListenersFds
            | Metric::IdleUdpFds => 1,
            Metric::RssIdle
            | Metric::RssLoad
            | Metric::RssHeldServer
            | Metric::RssHeldClient
            | Metric::RssHeldIdle => 1,
            _ if value.abs() >= 100.0 => 0,
            _ if value.abs() >= 10.0 => 1,
            _ => 2,
        };
        format!("{value:.digits$}")
    }
}

/// One target of the issue, judged.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The target as the issue states it.
    pub(crate) goal: &'static str,
    /// What was measured.
    pub(crate) measured: String,
    /// Met, not met, or (None) not measured, which counts as not met.
    pub(crate) met: Option<bool>,
}

impl Target {
    /// `met`, `NOT MET` or `not measured`.
    pub(crate) fn verdict(&self) -> &'static str {
        match self.met {
            Some(true) => "met",
            Some(false) => "NOT MET",
            None => "not measured",
        }
    }
}

/// Everything one run measured.
#[derive(Debug)]
pub(crate) struct Report {
    /// A `--quick` run (small sizes).
    pub(crate) quick: bool,
    /// The connections the many-connections test asked for.
    pub(crate) conns_wanted: usize,
    /// The whole run's wall time.
    pub(crate) elapsed: Duration,
    /// The open-files limit (RLIMIT_NOFILE) every program of the run had.
    pub(crate) nofile: u64,
    /// Every sample of a metric on a path (one per run), or why it failed.
    cells: BTreeMap<(Metric, Path), Result<Vec<f64>, String>>,
    notes: Vec<String>,
}

impl Report {
    pub(crate) fn new(quick: bool, conns_wanted: usize) -> Report {
        Report {
            quick,
            conns_wanted,
            elapsed: Duration::ZERO,
            nofile: 0,
            cells: BTreeMap::new(),
            notes: Vec::new(),
        }
    }

    /// Record a measurement (one more sample when the run repeats it) or why it failed
    /// (which leaves the samples of other runs standing).
    pub(crate) fn set(&mut self, metric: Metric, path: Path, value: anyhow::Result<f64>) {
        match value {
            Ok(v) => match self.cells.get_mut(&(metric, path)) {
                Some(Ok(samples)) => samples.push(v),
                _ => {
                    self.cells.insert((metric, path), Ok(vec![v]));
                }
            },
            Err(e) => {
                let why = format!("{e:#}");
                self.notes
                    .push(format!("{} on {}: {why}", metric.label(), path.label()));
                if !matches!(self.cells.get(&(metric, path)), Some(Ok(_))) {
                    self.cells.insert((metric, path), Err(why));
                }
            }
        }
    }

    /// Record the same failure for several metrics (noted once).
    pub(crate) fn fail_all(&mut self, metrics: &[Metric], path: Path, error: &anyhow::Error) {
        let names: Vec<_> = metrics.iter().map(|m| m.label()).collect();
        self.notes.push(format!(
            "{} on {}: {error:#}",
            names.join(", "),
            path.label()
        ));
        for metric in metrics {
            if !matches!(self.cells.get(&(*metric, path)), Some(Ok(_))) {
                self.cells
                    .insert((*metric, path), Err(format!("{error:#}")));
            }
        }
    }

    /// Add a remark printed under the table.
    pub(crate) fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// The measured value (the median of the runs' samples), if any.
    pub(crate) fn value(&self, metric: Metric, path: Path) -> Option<f64> {
        let samples = self.cells.get(&(metric, path))?.as_ref().ok()?;
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(sorted[n / 2]),
            _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
        }
    }

    /// The lowest and highest sample, when there are several.
    pub(crate) fn spread(&self, metric: Metric, path: Path) -> Option<(f64, f64)> {
        let samples = self.cells.get(&(metric, path))?.as_ref().ok()?;
        (samples.len() > 1).then(|| {
            samples
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                    (lo.min(*v), hi.max(*v))
                })
        })
    }

    /// `path`'s value over the veth path's.
    pub(crate) fn ratio(&self, metric: Metric, path: Path) -> Option<f64> {
        let base = self.value(metric, Path::Veth)?;
        let value = self.value(metric, path)?;
        (base != 0.0).then(|| value / base)
    }

    fn cell(&self, metric: Metric, path: Path, with_ratio: bool) -> String {
        match self.cells.get(&(metric, path)) {
            None => "—".into(),
            Some(Err(_)) => "failed".into(),
            Some(Ok(_)) => {
                let Some(v) = self.value(metric, path) else {
                    return "—".into();
                };
                let mut text = metric.format(v);
                if with_ratio && path != Path::Veth {
                    if let Some(r) = self.ratio(metric, path) {
                        let _ = write!(text, " ({r:.2}×)");
                    }
                }
                if let Some((lo, hi)) = self.spread(metric, path) {
                    let _ = write!(text, " [{}–{}]", metric.format(lo), metric.format(hi));
                }
                text
            }
        }
    }

    /// The rows of the table: metric (unit), then each path's value with its ratio to (b).
    fn rows(&self) -> Vec<[String; 4]> {
        Metric::ALL
            .iter()
            .filter(|m| {
                Path::ALL
                    .iter()
                    .any(|p| self.cells.contains_key(&(**m, *p)))
            })
            .map(|m| {
                let name = if m.unit().is_empty() {
                    m.label().to_string()
                } else {
                    format!("{} ({})", m.label(), m.unit())
                };
                [
                    name,
                    self.cell(*m, Path::Loopback, true),
                    self.cell(*m, Path::Veth, true),
                    self.cell(*m, Path::Ztrun, true),
                ]
            })
            .collect()
    }

    /// The table as aligned text, for the terminal.
    pub(crate) fn text_table(&self) -> String {
        let mut rows = vec![[
            "metric".to_string(),
            Path::Loopback.label().into(),
            Path::Veth.label().into(),
            Path::Ztrun.label().into(),
        ]];
        rows.extend(self.rows());
        let widths: Vec<usize> = (0..4)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for (i, row) in rows.iter().enumerate() {
            let _ = write!(out, "{:<w$}", row[0], w = widths[0]);
            for c in 1..4 {
                let _ = write!(out, "  {:>w$}", row[c], w = widths[c]);
            }
            out.push('\n');
            if i == 0 {
                out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 6));
                out.push('\n');
            }
        }
        out.push_str("(ratio to (b) veth in parentheses)\n");
        out
    }

    /// The targets, judged against this run.
    pub(crate) fn targets(&self) -> Vec<Target> {
        let ratio_target = |goal, metric: Metric, at_least: f64| {
            let measured = match (
                self.ratio(metric, Path::Ztrun),
                self.value(metric, Path::Ztrun),
            ) {
                (Some(r), Some(v)) => format!(
                    "{r:.3} × veth ({} of {} {})",
                    metric.format(v),
                    self.value(metric, Path::Veth)
                        .map_or("?".into(), |b| metric.format(b)),
                    metric.unit()
                ),
                _ => "not measured".into(),
            };
            Target {
                goal,
                measured,
                met: self.ratio(metric, Path::Ztrun).map(|r| r >= at_least),
            }
        };
        let at_most = |goal, metric: Metric, limit: f64| {
            let v = self.value(metric, Path::Ztrun);
            Target {
                goal,
                measured: v.map_or("not measured".into(), |v| {
                    format!("{} {}", metric.format(v), metric.unit())
                }),
                met: v.map(|v| v <= limit),
            }
        };
        let ratio_at_most = |goal, metric: Metric, limit: f64| {
            let r = self.ratio(metric, Path::Ztrun);
            Target {
                goal,
                measured: match (r, self.value(metric, Path::Ztrun)) {
                    (Some(r), Some(v)) => {
                        format!("{r:.2} × veth's ({} {})", metric.format(v), metric.unit())
                    }
                    _ => "not measured".into(),
                },
                met: r.map(|r| r <= limit),
            }
        };
        let idle = |goal, cpu: Metric, kib: Metric| {
            let (c, k) = (self.value(cpu, Path::Ztrun), self.value(kib, Path::Ztrun));
            Target {
                goal,
                measured: match (c, k) {
                    (Some(c), Some(k)) => format!("{c:.2} % of a core, {k:.1} KiB each"),
                    _ => "not measured".into(),
                },
                met: c.zip(k).map(|(c, k)| c < 2.0 && k < 3.0),
            }
        };
        let slowdown = self
            .ratio(Metric::CpuTime, Path::Ztrun)
            .map(|r| (r - 1.0) * 100.0);
        let held = self.value(Metric::Held, Path::Ztrun);
        let cycles = self.value(Metric::LoopCycles, Path::Ztrun);
        let loop_wanted = if self.quick { 10_000.0 } else { 20_000.0 };
        vec![
            ratio_target("bulk TCP, 1 stream ≥ 0.42 × veth", Metric::Iperf1, 0.42),
            ratio_target("bulk TCP, 4 streams ≥ 0.4 × veth", Metric::Iperf4, 0.4),
            ratio_target("request/response ≥ 0.66 × veth", Metric::RrRate, 0.66),
            ratio_at_most("p50 round trip ≤ 1.5 × veth's", Metric::RrP50, 1.5),
            ratio_target("new connections ≥ 0.47 × veth", Metric::ConnRate, 0.47),
            idle(
                "idle listeners: < 2 % of a core, < 3 KiB each",
                Metric::IdleListenersCpu,
                Metric::IdleListenersKib,
            ),
            idle(
                "idle UDP sockets: < 2 % of a core, < 3 KiB each",
                Metric::IdleUdpCpu,
                Metric::IdleUdpKib,
            ),
            idle(
                "idle connections: < 2 % of a core, < 3 KiB each",
                Metric::IdleConnsCpu,
                Metric::IdleConnsKib,
            ),
            Target {
                goal: "loopback connect/close loop completes",
                measured: cycles.map_or("not measured".into(), |c| {
                    format!("{c:.0} of {loop_wanted:.0} cycles")
                }),
                met: cycles.map(|c| c >= loop_wanted),
            },
            at_most("RSS under iperf3 load ≤ 16 MiB", Metric::RssLoad, 16.0),
            Target {
                goal: "CPU-bound program slowdown ≤ 1 %",
                measured: slowdown.map_or("not measured".into(), |s| format!("{s:+.2} %")),
                met: slowdown.map(|s| s <= 1.0),
            },
            at_most("start to first packet ≤ 50 ms", Metric::FirstReply, 50.0),
            at_most("idle RSS ≤ 8 MiB", Metric::RssIdle, 8.0),
            Target {
                goal: if self.quick {
                    "concurrent connections (quick run: fewer than 10,000)"
                } else {
                    "10,000 concurrent connections"
                },
                measured: held.map_or("not measured".into(), |h| {
                    format!("{h:.0} of {} held and answering", self.conns_wanted)
                }),
                met: held.map(|h| h >= self.conns_wanted as f64),
            },
        ]
    }

    /// The targets as aligned text.
    pub(crate) fn text_targets(&self) -> String {
        let targets = self.targets();
        let width = targets
            .iter()
            .map(|t| t.goal.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for t in &targets {
            let _ = writeln!(
                out,
                "{:<width$}  {:<12}  {}",
                t.goal,
                t.verdict(),
                t.measured
            );
        }
        out
    }

    /// The notes (failures and remarks), one per line.
    pub(crate) fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The Markdown of `BENCHMARKS.md` above the kept analysis.
    pub(crate) fn markdown(&self, machine: &str, command: &str, date: &str, chart: &str) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# Benchmarks\n");
        let _ = writeln!(
            md,
            "Written by `{command}` on {date} in {:.0} s. Machine: {machine}.\n",
            self.elapsed.as_secs_f64()
        );
        md.push_str(
            "One test network (network namespaces, `compat_tests::testnet`): a LAN of veth pairs \
             on a bridge holding a root host (`zt root`), host 1 (servers) and host 2 \
             (clients); every program runs as uid 65534. **(a) loopback**: server and client \
             on host 1 over 127.0.0.1. **(b) veth**: server on host 1, client on host 2, \
             kernel TCP; every ratio is to this path. **(c) ztrun**: the same two programs, \
             each under its own `ztrun`, the client using the server's address on the virtual \
             network, so every byte crosses both supervisors, both user-space stacks and the \
             encrypted overlay. Request/response and new connections use this repository's \
             `compat-tests rr-server`/`rr-client` (64-byte echo; for new connections the \
             server closes after answering). Start-up is from spawning the client (under \
             `ztrun` for (c)) to its first answered request. The CPU-bound program is a \
             Python SHA-256 loop timing itself on host 2, without ztrun in (b) and with it \
             in (c), alternating (9 times each in a full run). RSS is VmRSS of the `ztrun` process \
             (proc(5)). A full run repeats the request/response and iperf3 measurements three \
             times: those rows show the median with the lowest and highest run in brackets; \
             the CPU row is the median of 9, the rest single values. Context switches, CPU time and \
             trapped calls are both `ztrun`s' own figures (`ZTRUN_STATS`). The machine is shared: the load average below says how busy it was, and \
             the CPU-bound row's own CPU time shows what other work did to its wall time.\n\n",
        );
        let _ = writeln!(
            md,
            "Every program could open {} files (RLIMIT_NOFILE, soft and hard: the run raises \
             both to 65,536 when it may, else the soft limit to the hard one).\n",
            self.nofile
        );
        let _ = writeln!(md, "## Results\n");
        let _ = writeln!(
            md,
            "| metric | {} | {} | {} |\n|---|---:|---:|---:|",
            Path::Loopback.label(),
            Path::Veth.label(),
            Path::Ztrun.label()
        );
        for row in self.rows() {
            let _ = writeln!(md, "| {} | {} | {} | {} |", row[0], row[1], row[2], row[3]);
        }
        let _ = writeln!(md, "\nRatios to (b) veth in parentheses.\n");
        let _ = writeln!(md, "![throughput and round trip per path]({chart})\n");
        let _ = writeln!(md, "## Goals (issue 15)\n");
        let _ = writeln!(md, "| target | result | measured |\n|---|---|---|");
        for t in self.targets() {
            let _ = writeln!(md, "| {} | {} | {} |", t.goal, t.verdict(), t.measured);
        }
        if !self.notes.is_empty() {
            let _ = writeln!(md, "\n## Notes from this run\n");
            for n in &self.notes {
                let _ = writeln!(md, "- {}", n.replace('|', "\\|"));
            }
        }
        md
    }
}

/// The line after which `BENCHMARKS.md` is written by hand and kept across runs.
pub(crate) const KEEP_MARKER: &str =
    "<!-- Everything below this line is kept when `compat-tests bench` rewrites the file. -->";

/// The new file: `generated`, then the marker and whatever followed it in `old`.
pub(crate) fn merge_kept(generated: &str, old: Option<&str>) -> String {
    let kept = old
        .and_then(|o| o.split_once(KEEP_MARKER))
        .map(|(_, rest)| rest.trim_start_matches('\n'))
        .unwrap_or("");
    format!("{generated}\n{KEEP_MARKER}\n\n{kept}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut r = Report::new(false, 10_000);
        r.set(Metric::Iperf1, Path::Loopback, Ok(40.0));
        r.set(Metric::Iperf1, Path::Veth, Ok(20.0));
        r.set(Metric::Iperf1, Path::Ztrun, Ok(5.0));
        r.set(Metric::RrRate, Path::Veth, Ok(10_000.0));
        r.set(Metric::RrRate, Path::Ztrun, Ok(5_000.0));
        r.set(Metric::RrP50, Path::Ztrun, Ok(80.0));
        r.set(Metric::CpuTime, Path::Veth, Ok(2.0));
        r.set(Metric::CpuTime, Path::Ztrun, Ok(2.03));
        r.set(Metric::Held, Path::Ztrun, Ok(10_000.0));
        r.set(
            Metric::RssIdle,
            Path::Ztrun,
            Err(anyhow::anyhow!("ztrun exited")),
        );
        r
    }

    #[test]
    fn table_shows_values_with_ratios_to_veth() {
        let text = sample().text_table();
        let line = text
            .lines()
            .find(|l| l.starts_with("iperf3 TCP, 1 stream"))
            .unwrap();
        assert!(line.contains("40.0 (2.00×)"), "{line}");
        assert!(line.contains("20.0"), "{line}");
        assert!(line.contains("5.00 (0.25×)"), "{line}");
        let rss = text
            .lines()
            .find(|l| l.starts_with("ztrun RSS, idle"))
            .unwrap();
        assert!(rss.contains("failed"), "{rss}");
        // Metrics never measured are not rows.
        assert!(!text.contains("redis"), "{text}");
    }

    #[test]
    fn targets_are_judged_and_unmeasured_ones_are_not_met() {
        let targets = sample().targets();
        let find = |start: &str| targets.iter().find(|t| t.goal.starts_with(start)).unwrap();
        assert_eq!(find("bulk TCP, 1").met, Some(false)); // 0.25 < 0.42
        assert_eq!(find("request/response").met, Some(false)); // 0.5 < 0.66
        assert_eq!(find("p50").met, None); // no veth p50 in the sample
        assert_eq!(find("CPU").met, Some(false)); // +1.5 %
        assert_eq!(find("CPU").measured, "+1.50 %");
        assert_eq!(find("idle RSS").met, None);
        assert_eq!(find("idle RSS").verdict(), "not measured");
        assert_eq!(find("new connections").met, None);
        assert_eq!(find("10,000").met, Some(true));
    }

    #[test]
    fn repeated_runs_give_the_median_and_the_spread() {
        let mut r = Report::new(false, 10);
        for v in [10.0, 30.0, 20.0] {
            r.set(Metric::RrRate, Path::Ztrun, Ok(v));
        }
        r.set(
            Metric::RrRate,
            Path::Ztrun,
            Err(anyhow::anyhow!("a failed run")),
        );
        r.set(Metric::RrRate, Path::Veth, Ok(40.0));
        assert_eq!(r.value(Metric::RrRate, Path::Ztrun), Some(20.0));
        assert_eq!(r.spread(Metric::RrRate, Path::Ztrun), Some((10.0, 30.0)));
        assert_eq!(r.spread(Metric::RrRate, Path::Veth), None);
        let line = r
            .text_table()
            .lines()
            .find(|l| l.starts_with("request/response"))
            .unwrap()
            .to_string();
        assert!(line.contains("20.0 (0.50×) [10.0–30.0]"), "{line}");
        assert!(r.notes().iter().any(|n| n.contains("a failed run")));
    }

    #[test]
    fn the_hand_written_analysis_survives_a_rewrite() {
        let first = merge_kept("# Benchmarks\nold table\n", None);
        assert!(first.contains(KEEP_MARKER));
        let edited = format!("{first}## Profile\nwhere the time goes\n");
        let second = merge_kept("# Benchmarks\nnew table\n", Some(&edited));
        assert!(second.contains("new table"));
        assert!(!second.contains("old table"));
        assert!(
            second.ends_with("## Profile\nwhere the time goes\n"),
            "{second}"
        );
        assert_eq!(second.matches(KEEP_MARKER).count(), 1);
    }

    #[test]
    fn markdown_has_the_table_chart_and_targets() {
        let md = sample().markdown(
            "2 cores",
            "compat-tests bench",
            "2026-11-22",
            "docs/BENCH.svg",
        );
        assert!(
            md.contains("| iperf3 TCP, 1 stream (Gbit/s) | 40.0 (2.00×) | 20.0 | 5.00 (0.25×) |"),
            "{md}"
        );
        assert!(md.contains("![throughput and round trip per path](docs/BENCH.svg)"));
        assert!(
            md.contains("| idle RSS ≤ 8 MiB | not measured | not measured |"),
            "{md}"
        );
        assert!(md.contains("ztrun exited"));
    }
}
