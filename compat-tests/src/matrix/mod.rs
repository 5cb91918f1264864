//! The compatibility matrix: real applications from Debian packages, a server on one test
//! host and its client on another, each check verifying a real result.
//!
//! ```text
//! cargo run -p compat-tests -- matrix                  # every scenario, ztrun mode
//! cargo run -p compat-tests -- matrix --mode native    # the same scenarios, kernel network
//! cargo run -p compat-tests -- matrix --list
//! cargo run -p compat-tests -- matrix --mode native python ping dnsmasq
//! ```
//!
//! # The pieces
//!
//! * a [`Scenario`] is one row of the table: which programs it needs, how to ask the
//!   package database for their versions, and a function that starts the server(s), runs
//!   the client(s) and checks what came back. The list is [`scenarios`]; each lives in a
//!   module of `apps`, one per family (ssh, web servers, language runtimes, databases,
//!   network tools).
//! * a [`Topology`] is the set of test hosts one scenario runs on, built fresh for every
//!   scenario by [`Topology::build`] on a new [`TestNet`] and torn
//!   down after it.
//! * a [`Wrap`] is the one place that knows how a program is started on a member host:
//!   [`Wrap::Native`] runs it as is, on the kernel's network between the hosts;
//!   [`Wrap::Ztrun`] prefixes it with `ztrun` and its flags, and the client is given the
//!   server's address on the virtual network instead of its host address.
//! * a [`Stage`] is what a scenario function works with: the topology, a private
//!   directory readable by the unprivileged user, helpers that start servers (with their
//!   output in log files), wait for them with deadlines, run clients with timeouts, and
//!   turn every failure into a [`MatrixError`] that says what was expected and what came.
//!
//! # Modes and topologies
//!
//! In **ztrun mode** (the product) the topology is the one the project promises to work
//! in: a public LAN holding the root/controller host, and two port-restricted-cone NAT
//! routers on it, each with one member host behind it (the server on member 1, the client
//! on member 2). Members reach each other only through the overlay (hole punching through
//! both NATs, or a relay through the root).
//!
//! In **native mode** the same scenarios run with no wrapping, as the reference that
//! proves each scenario's set-up, client and check are right. Two hosts behind separate
//! port-restricted NATs cannot open connections to each other with kernel networking at
//! all, so native mode puts both members on one LAN (198.18.1.0/24) and omits the root
//! host: the only difference from ztrun mode is what [`Wrap`] and [`Topology`] decide.
//!
//! # Results
//!
//! Every scenario ends with a [`Verdict`]: `WORKS` (every check passed), `MARGINAL`
//! (every check passed but something measured was off, e.g. loss on a UDP test), or
//! `BROKEN` with the reason (a program missing, a server that did not start, a client
//! that failed or answered wrong, a set-up step of the overlay that failed). Nothing is
//! skipped in silence: a scenario that cannot run is BROKEN with the reason why.

mod apps;
mod elf;
mod report;
mod stage;
mod version;
mod wrap;

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use report::{markdown, table, utc_date, Row};
pub use stage::{chown_nobody, run_with_timeout};
pub use stage::{MatrixError, Ran, Side, Stage, Who};
pub use wrap::{Member, Mode, Topology, Wrap, ZtrunBinaries, ZtrunWrap, NWID};

use crate::testnet::TestNet;

/// The outcome of one scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Every check passed.
    Works,
    /// Every check passed, but a measurement was outside what is expected of a healthy
    /// network (the notes say which).
    Marginal,
    /// A check failed or the scenario could not run; the notes say why.
    Broken,
}

impl Verdict {
    /// The word printed in the table.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Works => "WORKS",
            Verdict::Marginal => "MARGINAL",
            Verdict::Broken => "BROKEN",
        }
    }
}

/// What a scenario function found when all its checks passed.
#[derive(Debug, Default, Clone)]
pub struct Finding {
    /// What was checked and measured, one short phrase each.
    pub notes: Vec<String>,
    /// Set when a measurement makes the result MARGINAL, with the reason.
    pub marginal: Option<String>,
}

impl Finding {
    /// Add a note.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Mark the result MARGINAL with `why` (the first reason wins).
    pub fn marginal(&mut self, why: impl Into<String>) {
        if self.marginal.is_none() {
            self.marginal = Some(why.into());
        }
    }
}

/// A scenario function: starts the servers, runs the clients, checks the results.
pub type ScenarioFn = fn(&mut Stage<'_, '_>) -> Result<Finding, MatrixError>;

/// One row of the matrix.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// The name used on the command line (`matrix nginx`).
    pub name: &'static str,
    /// The application as shown in the table.
    pub title: &'static str,
    /// Programs that must be installed (looked up in `PATH` or given as absolute paths).
    pub programs: &'static [&'static str],
    /// Debian packages (dpkg-query patterns) whose versions are reported.
    pub packages: &'static [&'static str],
    /// What the scenario does, in one sentence (for `--list` and the docs).
    pub summary: &'static str,
    /// The scenario itself.
    pub run: ScenarioFn,
}

/// Every scenario, in table order.
pub fn scenarios() -> &'static [Scenario] {
    apps::ALL
}

/// The scenarios named by `filters` (all when empty), or the names that match nothing.
pub fn select(filters: &[String]) -> Result<Vec<Scenario>, Vec<String>> {
    if filters.is_empty() {
        return Ok(scenarios().to_vec());
    }
    let unknown: Vec<String> = filters
        .iter()
        .filter(|f| !scenarios().iter().any(|s| s.name == f.as_str()))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(unknown);
    }
    Ok(scenarios()
        .iter()
        .filter(|s| filters.iter().any(|f| f == s.name))
        .copied()
        .collect())
}

/// How to run the matrix.
#[derive(Debug, Clone)]
pub struct Options {
    /// Native (kernel network between hosts) or ztrun (the product).
    pub mode: Mode,
    /// Where `ztrun` and `zt` are, for ztrun mode.
    pub binaries: ZtrunBinaries,
    /// Keep each scenario's directory (configs, logs) instead of deleting it.
    pub keep: bool,
    /// Print progress to stderr.
    pub verbose: bool,
}

/// Run one scenario on a fresh topology and return its row.
pub fn run_scenario(scenario: &Scenario, options: &Options) -> Row {
    let started = Instant::now();
    let version = version::describe(scenario.packages);
    // A panic (a bug of the runner or the harness) makes this row BROKEN, not the run;
    // the TestNet's Drop has torn the hosts down while unwinding.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_checked(scenario, options)
    }))
    .unwrap_or_else(|payload| {
        let text = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "(no message)".into());
        Err(MatrixError::Panicked { message: text })
    });
    let (verdict, notes) = match result {
        Ok(finding) => {
            let verdict = if finding.marginal.is_some() {
                Verdict::Marginal
            } else {
                Verdict::Works
            };
            let mut notes = finding.notes;
            if let Some(why) = finding.marginal {
                notes.insert(0, format!("marginal: {why}"));
            }
            (verdict, notes.join("; "))
        }
        Err(e) => (Verdict::Broken, error_chain(&e)),
    };
    Row {
        name: scenario.name,
        app: scenario.title,
        version,
        date: utc_date(std::time::SystemTime::now()),
        verdict,
        notes,
        elapsed: started.elapsed(),
    }
}

fn run_checked(scenario: &Scenario, options: &Options) -> Result<Finding, MatrixError> {
    let missing: Vec<&str> = scenario
        .programs
        .iter()
        .copied()
        .filter(|p| find_program(p).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(MatrixError::Missing {
            programs: missing.join(", "),
        });
    }
    let net = TestNet::new()?;
    let result = {
        let topology = Topology::build(&net, options.mode, &options.binaries)?;
        let mut stage = Stage::new(&topology, scenario.name, options.keep, options.verbose)?;
        let result = (scenario.run)(&mut stage);
        stage.finish();
        result
    };
    net.teardown()?;
    result
}

/// The error and its sources, joined by ": ".
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// `program` if it is an absolute path that exists, else its location in `PATH`.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::path::Path::new(program);
    if path.is_absolute() {
        return path.exists().then(|| path.to_owned());
    }
    let dirs = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&dirs)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Run `scenarios` one after the other (the machine has two cores and the scenarios
/// measure), calling `each` with every row as it is made.
pub fn run_all(scenarios: &[Scenario], options: &Options, mut each: impl FnMut(&Row)) -> Vec<Row> {
    let mut rows = Vec::with_capacity(scenarios.len());
    for scenario in scenarios {
        if options.verbose {
            eprintln!("matrix: {} ...", scenario.name);
        }
        let row = run_scenario(scenario, options);
        each(&row);
        rows.push(row);
    }
    rows
}

/// True when no row is BROKEN.
pub fn all_pass(rows: &[Row]) -> bool {
    rows.iter().all(|r| r.verdict != Verdict::Broken)
}

/// The default time a client may take before it is killed and the scenario is BROKEN.
pub(crate) const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The default time a server may take to accept connections.
pub(crate) const SERVER_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_finds_named_scenarios_in_table_order() {
        let picked = select(&["ping".into(), "python".into()]).unwrap();
        let names: Vec<_> = picked.iter().map(|s| s.name).collect();
        let order: Vec<_> = scenarios()
            .iter()
            .map(|s| s.name)
            .filter(|n| *n == "ping" || *n == "python")
            .collect();
        assert_eq!(names, order);
    }

    #[test]
    fn select_rejects_unknown_names() {
        let err = select(&["python".into(), "mongodb".into()]).unwrap_err();
        assert_eq!(err, vec!["mongodb".to_string()]);
    }

    #[test]
    fn scenario_names_are_unique_and_every_issue_app_is_listed() {
        let names: Vec<_> = scenarios().iter().map(|s| s.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "duplicate names in {names:?}");
        for want in [
            "ssh",
            "apache-prefork",
            "apache-event",
            "nginx",
            "node",
            "java",
            "redis",
            "postgresql",
            "memcached",
            "go",
            "python",
            "iperf3",
            "dnsmasq",
            "ping",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
    }

    #[test]
    fn a_missing_program_is_broken_with_its_name() {
        fn never(_: &mut Stage<'_, '_>) -> Result<Finding, MatrixError> {
            panic!("must not run without its programs")
        }
        let scenario = Scenario {
            name: "fake",
            title: "fake",
            programs: &["/nonexistent/fake-server"],
            packages: &[],
            summary: "",
            run: never,
        };
        let options = Options {
            mode: Mode::Native,
            binaries: ZtrunBinaries::default(),
            keep: false,
            verbose: false,
        };
        let row = run_scenario(&scenario, &options);
        assert_eq!(row.verdict, Verdict::Broken);
        assert!(
            row.notes.contains("/nonexistent/fake-server"),
            "{}",
            row.notes
        );
    }
}
