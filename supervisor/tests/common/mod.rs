//! Shared harness: compile a C program at test time and run it under the supervisor.
#![allow(dead_code, unreachable_pub)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command as Proc;
use std::sync::Arc;
use std::time::Duration;

use supervisor::backend::{Backend, NoNetwork, Policy};
use supervisor::launch::{self, Command, ExitStatus};

/// uid/gid the wrapped programs run as when the tests run as root.
pub const NOBODY: (u32, u32) = (65534, 65534);

/// A scratch directory every user can use (the program runs as nobody).
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("supervisor-test")
            .tempdir()
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        Self { dir }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// Compile `tests/c/<name>.c` (plus `common.h`) with `cc -pthread`.
    pub fn compile(&self, name: &str) -> PathBuf {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/c")
            .join(format!("{name}.c"));
        let out = self.path(name);
        let st = Proc::new("cc")
            .args(["-O1", "-Wall", "-pthread", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .expect("cc is installed (gcc, libc6-dev)");
        assert!(st.success(), "compiling {name}.c failed");
        out
    }
    pub fn output(&self) -> PathBuf {
        self.path("out.txt")
    }
    pub fn read_output(&self) -> String {
        std::fs::read_to_string(self.output()).unwrap_or_default()
    }
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The command for `prog`, whose first argument is the output file. Runs as nobody when
/// we are root, proving the wrapped program needs no privilege.
pub fn command(s: &Scratch, prog: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(prog).arg(s.output()).args(args);
    if is_root() {
        c = c.user(NOBODY.0, NOBODY.1);
    }
    c
}

/// Run `cmd` under the supervisor with `policy`, bounded in time.
pub async fn run_with<B: Backend>(cmd: &Command, policy: Policy, backend: Arc<B>) -> ExitStatus {
    tokio::time::timeout(Duration::from_secs(60), launch::run(cmd, policy, backend))
        .await
        .expect("program under supervisor timed out")
        .expect("launch failed")
}

pub async fn run(cmd: &Command) -> ExitStatus {
    run_with(cmd, Policy::default(), Arc::new(NoNetwork)).await
}

/// Assert the program succeeded and printed `want` lines (each must appear).
pub fn assert_ok(s: &Scratch, status: ExitStatus, want: &[&str]) {
    let out = s.read_output();
    assert_eq!(
        status,
        ExitStatus::Exited(0),
        "program failed; output:\n{out}"
    );
    for w in want {
        assert!(
            out.lines().any(|l| l == *w),
            "missing line {w:?} in output:\n{out}"
        );
    }
}
