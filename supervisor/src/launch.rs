//! Starting the program under the filter, waiting for it, forwarding signals.
//!
//! The launch sequence (the reaper's half is `sys::reaper_main`, the child's
//! `sys::child_main`):
//!
//! 1. Parent: build and check the filter (`filter::build` refuses a program that would
//!    trap any call of the hand-off below), resolve the program on `PATH`, and prepare
//!    argv/envp, so the child allocates nothing. Make this process non-dumpable
//!    (`PR_SET_DUMPABLE` 0): the program runs with our uid, and would otherwise reach
//!    our memory, descriptors (`pidfd_getfd`: the overlay's UDP sockets) and threads
//!    (`ptrace`).
//! 2. Parent: create a close-on-exec report pipe and a pidfd of ourselves, and block all
//!    signals in this thread.
//! 3. Parent: `clone(CLONE_FILES | CLONE_PIDFD)`: the *reaper*, a child subreaper that
//!    shares our fd table until it has started the program. It
//!    `clone(CLONE_VFORK | CLONE_FILES | CLONE_PIDFD)`s the child, reports the child's
//!    pid and pidfd, takes a private fd table holding only the report pipe and our
//!    pidfd, and reports ready. From then on it reaps every process the program leaves
//!    behind, reports the program's wait status, and, if we die (SIGKILL included),
//!    kills the program's whole tree, grandchildren included. It ends when the program
//!    and everything it left behind are gone.
//! 4. Child: set the signal dispositions and mask this process was started with (those
//!    ignored then ignored, every other default: Rust's ignored `SIGPIPE` undone), and,
//!    when asked (running as root), switch to the target uid/gid with raw syscalls; then
//!    `prctl(PR_SET_PDEATHSIG, SIGKILL)`, so the program dies with the reaper, and stop
//!    if the reaper is already gone.
//! 5. Child: `prctl(PR_SET_NO_NEW_PRIVS)`.
//! 6. Child: `seccomp(SECCOMP_SET_MODE_FILTER, NEW_LISTENER | WAIT_KILLABLE_RECV)`,
//!    falling back to `NEW_LISTENER` alone on kernels before 5.19. The listener fd is
//!    close-on-exec and lands in the shared table, i.e. in the parent.
//! 7. Child: write the listener's number to the pipe (`write` is not trapped).
//! 8. Child: `execve`. Exec unshares the fd table and closes the pipe and the listener
//!    on the child's side; the parent keeps both.
//! 9. Parent: read the reports until the reaper is ready, own the listener and the
//!    program's pidfd; on a failure report, reap the reaper and return the failing step
//!    with its errno.
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use tokio::io::Interest;

use crate::backend::{Backend, Policy};
use crate::filter::{self, FilterError};
use crate::sys;
pub use crate::sys::ChildStep;

/// Why a launch failed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The program was not found on `PATH`.
    #[error("`{program}` not found on PATH")]
    NotFound {
        /// What was asked for.
        program: String,
    },
    /// An argument or environment entry contains a NUL byte.
    #[error("argument or environment entry contains a NUL byte: {0:?}")]
    Nul(OsString),
    /// The filter is malformed or would trap the hand-off.
    #[error("seccomp filter rejected")]
    Filter(#[source] FilterError),
    /// A step of the launch sequence failed.
    #[error("launch step {step:?} failed for `{program}`")]
    Step {
        /// The program.
        program: String,
        /// The failing step.
        step: ChildStep,
        /// The errno.
        #[source]
        errno: Errno,
    },
    /// Waiting for or signalling the child failed.
    #[error("{what} failed")]
    Wait {
        /// Operation.
        what: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Command {
    program: OsString,
    args: Vec<OsString>,
    env: Option<Vec<(OsString, OsString)>>,
    ids: Option<(u32, u32)>,
    nofile: Option<(u64, u64)>,
    ptracer: Option<i32>,
}

impl Command {
    /// Run `program` (searched on `PATH` unless it contains a slash).
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Self {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: None,
            ids: None,
            nofile: None,
            ptracer: None,
        }
    }
    /// Append an argument.
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_owned());
        self
    }
    /// Append arguments.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, a: I) -> Self {
        self.args
            .extend(a.into_iter().map(|s| s.as_ref().to_owned()));
        self
    }
    /// Replace the environment (default: inherit ours).
    pub fn env_clear(mut self) -> Self {
        self.env = Some(Vec::new());
        self
    }
    /// Set one environment variable (starting from ours unless cleared).
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        let env = self
            .env
            .get_or_insert_with(|| std::env::vars_os().collect());
        let k = k.as_ref().to_owned();
        env.retain(|(x, _)| *x != k);
        env.push((k, v.as_ref().to_owned()));
        self
    }
    /// Run the program as `uid`/`gid` (the caller must be privileged to switch).
    pub fn user(mut self, uid: u32, gid: u32) -> Self {
        self.ids = Some((uid, gid));
        self
    }
    /// Give the program this `RLIMIT_NOFILE` (soft, hard) instead of ours: a supervisor
    /// that raised its own limit to hold many connections hands the program the limit
    /// it would have had (programs using `select` rely on a soft limit of 1024).
    pub fn nofile_limit(mut self, soft: u64, hard: u64) -> Self {
        self.nofile = Some((soft, hard));
        self
    }
    /// Let process `pid`, which is not the program's ancestor, supervise it: under
    /// Yama's `ptrace_scope` 1 only an ancestor (or a process the program names with
    /// `PR_SET_PTRACER`) may read its memory and descriptors. For a supervisor in another
    /// process that receives the listener (a node shared by several programs).
    pub fn ptracer(mut self, pid: i32) -> Self {
        self.ptracer = Some(pid);
        self
    }
}

/// How the program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// `exit(code)`.
    Exited(i32),
    /// Killed by a signal.
    Signaled(i32),
}

/// A raw `wait(2)` status as an [`ExitStatus`].
fn decode_wait_status(raw: i32) -> ExitStatus {
    if libc::WIFSIGNALED(raw) {
        ExitStatus::Signaled(libc::WTERMSIG(raw))
    } else {
        ExitStatus::Exited(libc::WEXITSTATUS(raw))
    }
}

impl ExitStatus {
    /// The shell convention: the code, or 128 + signal.
    pub fn code(self) -> i32 {
        match self {
            Self::Exited(c) => c,
            Self::Signaled(s) => 128 + s,
        }
    }
}

/// A started program. Dropping it does not kill the program.
#[derive(Debug)]
pub struct Child {
    pid: i32,
    pidfd: OwnedFd,
    listener: Option<OwnedFd>,
    killable_recv: bool,
    /// The program's parent (launch step 3), as a pidfd.
    reaper: Arc<OwnedFd>,
    /// Its reports: the program's wait status.
    reports: OwnedFd,
}

fn cstr(s: &OsStr) -> Result<CString, LaunchError> {
    CString::new(s.as_bytes()).map_err(|_| LaunchError::Nul(s.to_owned()))
}

fn resolve(program: &OsStr, env: &[(OsString, OsString)]) -> Result<PathBuf, LaunchError> {
    if program.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(program));
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
        .ok_or_else(|| LaunchError::NotFound {
            program: program.to_string_lossy().into_owned(),
        })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Start `cmd` under the filter (steps 1–9 above). The returned [`Child`] holds the
/// listener for [`crate::supervise`]; until someone serves it, the program blocks at its
/// first trapped call.
pub fn spawn(cmd: &Command) -> Result<Child, LaunchError> {
    let env: Vec<(OsString, OsString)> = cmd
        .env
        .clone()
        .unwrap_or_else(|| std::env::vars_os().collect());
    let path = resolve(&cmd.program, &env)?;
    let mut argv = vec![cstr(&cmd.program)?];
    for a in &cmd.args {
        argv.push(cstr(a)?);
    }
    let envp = env
        .iter()
        .map(|(k, v)| {
            let mut kv = k.clone().into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            cstr(OsStr::from_bytes(&kv))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let plan = sys::ChildPlan {
        path: cstr(path.as_os_str())?,
        argv,
        envp,
        filter: filter::build().map_err(LaunchError::Filter)?,
        ids: cmd.ids,
        nofile: cmd.nofile,
        ptracer: cmd.ptracer,
    };
    sys::set_non_dumpable().map_err(|errno| LaunchError::Step {
        program: cmd.program.to_string_lossy().into_owned(),
        step: ChildStep::NonDumpable,
        errno,
    })?;
    let started = sys::clone_filter_exec(&plan).map_err(|f| LaunchError::Step {
        program: cmd.program.to_string_lossy().into_owned(),
        step: f.step,
        errno: f.errno,
    })?;
    Ok(Child {
        pid: started.pid,
        pidfd: started.pidfd,
        listener: Some(started.listener),
        killable_recv: started.killable_recv,
        reaper: Arc::new(started.reaper),
        reports: started.reports,
    })
}

impl Child {
    /// The program's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether the kernel accepted `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`.
    pub fn killable_recv(&self) -> bool {
        self.killable_recv
    }

    /// The seccomp listener, once.
    pub fn take_listener(&mut self) -> Option<OwnedFd> {
        self.listener.take()
    }

    /// Send `signal` to the program (through its pidfd: no pid-reuse race).
    pub fn signal(&self, signal: Signal) -> Result<(), LaunchError> {
        sys::pidfd_send_signal(self.pidfd.as_fd(), signal as i32).map_err(|e| LaunchError::Wait {
            what: "pidfd_send_signal",
            source: e.into(),
        })
    }

    /// Wait for the program to end (its parent, the reaper, reaps it and reports how).
    pub async fn wait(&self) -> Result<ExitStatus, LaunchError> {
        let err = |what| move |source| LaunchError::Wait { what, source };
        let dup = self.reports.try_clone().map_err(err("dup report socket"))?;
        let afd = sys::async_fd(dup, Interest::READABLE).map_err(err("register report socket"))?;
        let status = loop {
            let mut guard = afd.readable().await.map_err(err("wait for the program"))?;
            match sys::try_read_report(afd.get_ref().as_fd()) {
                Ok(Some((sys::MSG_EXIT, raw))) => break decode_wait_status(raw as i32),
                Ok(Some(_)) => continue,
                Err(Errno::EAGAIN) => guard.clear_ready(),
                Err(Errno::EINTR) => {}
                // End of file: the reaper was killed before the program ended (only a
                // process of our uid can do that). Its status is lost: wait for its end.
                Ok(None) | Err(_) => {
                    tracing::warn!(
                        pid = self.pid,
                        "the program's parent was killed: its exit status is lost"
                    );
                    let pid = self.pidfd.try_clone().map_err(err("dup pidfd"))?;
                    let pid =
                        sys::async_fd(pid, Interest::READABLE).map_err(err("register pidfd"))?;
                    let _ = pid.readable().await;
                    break ExitStatus::Signaled(libc::SIGKILL);
                }
            }
        };
        // The reaper ends with the last process the program left behind: reap it then.
        let reaper = self.reaper.clone();
        if let Ok(dup) = reaper.try_clone() {
            if let Ok(afd) = sys::async_fd(dup, Interest::READABLE) {
                tokio::spawn(async move {
                    let _ = afd.readable().await;
                    let _ = waitid(Id::PIDFd(reaper.as_fd()), WaitPidFlag::WEXITED);
                });
            }
        }
        Ok(status)
    }

    /// Wait for the program, passing it the signals `signals` caught (`SIGINT SIGTERM
    /// SIGHUP SIGQUIT SIGUSR1 SIGUSR2 SIGWINCH`), including those caught before this call:
    /// install [`ForwardedSignals`] before [`spawn`] so none sent during start-up is lost.
    pub async fn wait_forwarding(
        &self,
        mut signals: ForwardedSignals,
    ) -> Result<ExitStatus, LaunchError> {
        let wait = self.wait();
        tokio::pin!(wait);
        loop {
            tokio::select! {
                status = &mut wait => break status,
                Some(sig) = signals.rx.recv() => { let _ = self.signal(sig); }
            }
        }
    }
}

/// Handlers for the signals passed on to the program (`SIGINT SIGTERM SIGHUP SIGQUIT
/// SIGUSR1 SIGUSR2 SIGWINCH`). Installed before the program starts, so that a signal sent
/// while it starts is delivered once it runs instead of being lost (or, for `SIGINT`,
/// ending the launcher). Dropping it removes nothing (tokio keeps its handlers) but stops
/// the forwarding.
#[derive(Debug)]
pub struct ForwardedSignals {
    rx: tokio::sync::mpsc::UnboundedReceiver<Signal>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ForwardedSignals {
    /// Install the handlers (inside a tokio runtime).
    pub fn install() -> Result<Self, LaunchError> {
        use tokio::signal::unix::{signal, SignalKind};
        let kinds = [
            (SignalKind::interrupt(), Signal::SIGINT),
            (SignalKind::terminate(), Signal::SIGTERM),
            (SignalKind::hangup(), Signal::SIGHUP),
            (SignalKind::quit(), Signal::SIGQUIT),
            (SignalKind::user_defined1(), Signal::SIGUSR1),
            (SignalKind::user_defined2(), Signal::SIGUSR2),
            (SignalKind::window_change(), Signal::SIGWINCH),
        ];
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for (kind, sig) in kinds {
            let mut stream = signal(kind).map_err(|source| LaunchError::Wait {
                what: "install signal handler",
                source,
            })?;
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    if tx.send(sig).is_err() {
                        break;
                    }
                }
            }));
        }
        Ok(ForwardedSignals { rx, tasks })
    }
}

impl Drop for ForwardedSignals {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Start `cmd`, supervise it against `backend`, forward signals, and return its exit
/// status once the program *and every traced process it left behind* are gone.
pub async fn run<B: Backend>(
    cmd: &Command,
    policy: Policy,
    backend: Arc<B>,
) -> Result<ExitStatus, LaunchError> {
    let signals = ForwardedSignals::install()?;
    let mut child = spawn(cmd)?;
    let listener = child.take_listener().ok_or_else(|| LaunchError::Wait {
        what: "take listener",
        source: std::io::Error::other("listener already taken"),
    })?;
    let served = tokio::spawn(crate::supervise(listener, policy, backend));
    let status = child.wait_forwarding(signals).await?;
    // Teardown: the listener hangs up when the last traced task is gone.
    match served.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(%e, "supervisor stopped with an error"),
        Err(e) => tracing::warn!(%e, "supervisor task failed"),
    }
    Ok(status)
}
