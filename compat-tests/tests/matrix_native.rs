//! The matrix runner tested on itself: a small fast subset (python, ping, dnsmasq) in
//! native mode must come out WORKS with the results its checks claim, and ztrun mode with
//! an unusable ztrun must come out BROKEN with the reason, never as a pass. Needs root
//! (the runner builds network namespaces); fails loudly without it.

use std::time::{Duration, Instant};

use compat_tests::matrix::{
    self, Finding, MatrixError, Mode, Options, Scenario, Stage, Verdict, ZtrunBinaries,
};
use compat_tests::testnet::require_root;

fn options(mode: Mode, binaries: ZtrunBinaries) -> Options {
    Options {
        mode,
        binaries,
        keep: false,
        verbose: false,
    }
}

#[test]
fn native_subset_works() {
    require_root();
    let started = Instant::now();
    let scenarios = matrix::select(&["python".into(), "ping".into(), "dnsmasq".into()])
        .expect("the subset's scenarios exist");
    let rows = matrix::run_all(
        &scenarios,
        &options(Mode::Native, ZtrunBinaries::default()),
        |_| {},
    );
    let table = matrix::table(&rows);
    assert_eq!(rows.len(), 3, "{table}");
    for row in &rows {
        assert_eq!(row.verdict, Verdict::Works, "{table}");
        assert!(!row.version.contains("not installed"), "{table}");
    }
    let notes = |name: &str| rows.iter().find(|r| r.name == name).unwrap().notes.clone();
    assert!(notes("python").contains("sha256 matches"), "{table}");
    assert!(notes("ping").starts_with("10/10 echo replies"), "{table}");
    assert!(notes("dnsmasq").contains("over TCP"), "{table}");
    assert!(matrix::all_pass(&rows));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the subset took {:?}",
        started.elapsed()
    );
}

#[test]
fn ztrun_mode_without_a_usable_ztrun_is_broken_with_the_reason() {
    require_root();
    let binaries = ZtrunBinaries {
        ztrun: Some("/nonexistent/ztrun".into()),
        zt: Some("/nonexistent/zt".into()),
    };
    let scenarios = matrix::select(&["ping".into()]).unwrap();
    let rows = matrix::run_all(&scenarios, &options(Mode::Ztrun, binaries), |_| {});
    assert_eq!(rows[0].verdict, Verdict::Broken);
    assert!(
        rows[0].notes.contains("/nonexistent/ztrun does not exist"),
        "{}",
        rows[0].notes
    );
    assert!(!matrix::all_pass(&rows));
}

#[test]
fn a_panicking_scenario_is_broken_and_the_run_goes_on() {
    require_root();
    fn boom(_: &mut Stage<'_, '_>) -> Result<Finding, MatrixError> {
        panic!("boom in the scenario")
    }
    let scenario = Scenario {
        name: "boom",
        title: "boom",
        programs: &[],
        packages: &[],
        summary: "",
        run: boom,
    };
    let row = matrix::run_scenario(&scenario, &options(Mode::Native, ZtrunBinaries::default()));
    assert_eq!(row.verdict, Verdict::Broken);
    assert!(row.notes.contains("boom in the scenario"), "{}", row.notes);
}
