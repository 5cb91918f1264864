//! What a scenario works with: its topology, a private directory, servers with log files,
//! clients with timeouts, and one error type that says what went wrong.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::wrap::{Member, Topology};
use crate::testnet::TestNetError;

/// The unprivileged uid and gid programs run as (`nobody`/`nogroup`).
const NOBODY: u32 = 65534;

/// Why a scenario is BROKEN.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MatrixError {
    /// Programs the scenario needs are not installed.
    #[error("not installed: {programs} (see .ci/packages-matrix)")]
    Missing {
        /// The programs missing, comma-separated.
        programs: String,
    },
    /// Building or tearing down the test hosts failed.
    #[error("test hosts: {0}")]
    TestNet(#[from] TestNetError),
    /// A file operation of the runner failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// A step of setting up the virtual network failed (ztrun mode).
    #[error("ztrun mode set-up, {step}: {reason}")]
    Overlay {
        /// The step.
        step: String,
        /// Why it failed.
        reason: String,
    },
    /// A program could not be started.
    #[error("could not start {what} (`{command}`): {source}")]
    Spawn {
        /// Which server or client.
        what: String,
        /// Its command line.
        command: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// A server exited while it should be serving.
    #[error("server {name} exited ({status}): {log}")]
    ServerExited {
        /// The server.
        name: String,
        /// How it exited.
        status: ExitStatus,
        /// The end of its output.
        log: String,
    },
    /// A server did not accept connections in time.
    #[error("server {name} did not accept connections on port {port} within {secs} s: {log}")]
    ServerTimeout {
        /// The server.
        name: String,
        /// The port waited for.
        port: u16,
        /// The time waited.
        secs: u64,
        /// The end of its output.
        log: String,
    },
    /// A server did not print its readiness line in time.
    #[error("server {name} did not print {line:?} within {secs} s: {log}")]
    ServerNotReady {
        /// The server.
        name: String,
        /// The line waited for.
        line: String,
        /// The time waited.
        secs: u64,
        /// The end of its output.
        log: String,
    },
    /// A client did not finish in time and was killed.
    #[error("{name} did not finish within {secs} s (`{command}`): {log}")]
    ClientTimeout {
        /// The client.
        name: String,
        /// Its command line.
        command: String,
        /// The time allowed.
        secs: u64,
        /// The end of its output.
        log: String,
    },
    /// A client exited unsuccessfully.
    #[error("{name} failed ({status}, `{command}`): {log}")]
    ClientFailed {
        /// The client.
        name: String,
        /// Its command line.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// The end of its output.
        log: String,
    },
    /// The scenario panicked (a bug of the runner or the harness).
    #[error("the runner panicked: {message}")]
    Panicked {
        /// The panic message.
        message: String,
    },
    /// A check found something other than what it expected.
    #[error("{what}: expected {expected}, got {got}")]
    Check {
        /// What was checked.
        what: String,
        /// What should have been there.
        expected: String,
        /// What was there.
        got: String,
    },
}

impl MatrixError {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        MatrixError::Io {
            what: what.into(),
            source,
        }
    }

    /// A failed check.
    pub fn check(
        what: impl Into<String>,
        expected: impl Into<String>,
        got: impl Into<String>,
    ) -> Self {
        MatrixError::Check {
            what: what.into(),
            expected: expected.into(),
            got: got.into(),
        }
    }
}

/// A finished (or killed) client.
#[derive(Debug)]
pub struct Ran {
    /// Its command line.
    pub command: String,
    /// How it exited.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
    /// True when it was killed because its time was up.
    pub timed_out: bool,
    /// How long it ran.
    pub elapsed: Duration,
}

impl Ran {
    /// The last few lines of stderr (or stdout when stderr is empty), on one line.
    pub fn stderr_tail(&self) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        tail(text, 400)
    }
}

/// The last `max` bytes of `text` (at a character boundary), whitespace collapsed.
fn tail(text: &str, max: usize) -> String {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let joined = text[start..]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if start > 0 {
        format!("...{joined}")
    } else if joined.is_empty() {
        "(no output)".into()
    } else {
        joined
    }
}

/// `cmd` as a shell-like line, for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Run `cmd` to completion with stdin closed and stdout/stderr captured, killing it after
/// `timeout`. Only failing to start it is an error; the caller judges the result.
pub fn run_with_timeout(
    cmd: &mut Command,
    what: &str,
    timeout: Duration,
) -> Result<Ran, MatrixError> {
    let command = describe(cmd);
    let capture =
        || tempfile::tempfile().map_err(|e| MatrixError::io("creating a capture file", e));
    let (mut out, mut err) = (capture()?, capture()?);
    let clone = |f: &File| {
        f.try_clone()
            .map_err(|e| MatrixError::io("cloning a capture file", e))
    };
    cmd.stdin(Stdio::null())
        .stdout(clone(&out)?)
        .stderr(clone(&err)?);
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|source| MatrixError::Spawn {
        what: what.into(),
        command: command.clone(),
        source,
    })?;
    let (status, timed_out) = wait_deadline(&mut child, started + timeout)
        .map_err(|e| MatrixError::io(format!("waiting for {what}"), e))?;
    let read = |f: &mut File| -> Result<String, MatrixError> {
        use std::io::Seek;
        let mut bytes = Vec::new();
        f.seek(io::SeekFrom::Start(0))
            .and_then(|_| f.read_to_end(&mut bytes))
            .map_err(|e| MatrixError::io(format!("reading the output of {what}"), e))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    Ok(Ran {
        command,
        status,
        stdout: read(&mut out)?,
        stderr: read(&mut err)?,
        timed_out,
        elapsed: started.elapsed(),
    })
}

/// Wait for `child` until `deadline`, then kill it. Returns its status and whether it
/// was killed.
fn wait_deadline(child: &mut Child, deadline: Instant) -> io::Result<(ExitStatus, bool)> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok((status, false));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            return Ok((child.wait()?, true));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Give `path` to uid/gid 65534.
pub fn chown_nobody(path: &Path) -> Result<(), MatrixError> {
    std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY))
        .map_err(|e| MatrixError::io(format!("chown 65534 {}", path.display()), e))
}

/// The hex SHA-256 of a file.
pub(crate) fn sha256_file(path: &Path) -> Result<String, MatrixError> {
    let mut file =
        File::open(path).map_err(|e| MatrixError::io(format!("opening {}", path.display()), e))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)
        .map_err(|e| MatrixError::io(format!("reading {}", path.display()), e))?;
    Ok(hex(&hasher.finalize()))
}

/// The hex SHA-256 of bytes.
pub(crate) fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Which member a program runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Member 1.
    Server,
    /// Member 2.
    Client,
    /// Member 2's host under a second identity: a server running beside the clients.
    Backend,
}

/// As whom a program runs.
#[derive(Debug, Clone)]
pub enum Who {
    /// uid/gid 65534 with no groups or capabilities (the harness's `command_as_user`).
    Nobody,
    /// The same identity, but in a private mount namespace where `/etc/passwd` and
    /// `/etc/shadow` are replaced by the given files (for sshd, which needs the account
    /// it serves to have a shell and an unlocked entry); see `apps::ssh`.
    NobodyWithAccount {
        /// Replacement `/etc/passwd`.
        passwd: PathBuf,
        /// Replacement `/etc/shadow`.
        shadow: PathBuf,
    },
}

struct Server {
    name: String,
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

/// A scenario's working state; see the [module documentation](super).
pub struct Stage<'t, 'n> {
    topology: &'t Topology<'n>,
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    servers: Vec<Server>,
    keep: bool,
    verbose: bool,
}

impl std::fmt::Debug for Stage<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stage")
            .field("dir", &self.path)
            .field(
                "servers",
                &self.servers.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl<'t, 'n> Stage<'t, 'n> {
    /// A stage on `topology` with a fresh directory `/tmp/ztmatrix-NAME-*` owned by 65534.
    pub fn new(
        topology: &'t Topology<'n>,
        name: &str,
        keep: bool,
        verbose: bool,
    ) -> Result<Self, MatrixError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("ztmatrix-{name}-"))
            .tempdir()
            .map_err(|e| MatrixError::io("creating the scenario directory", e))?;
        let path = dir.path().to_owned();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(|e| MatrixError::io(format!("chmod {}", path.display()), e))?;
        chown_nobody(&path)?;
        std::fs::create_dir(path.join("logs"))
            .map_err(|e| MatrixError::io("creating the log directory", e))?;
        chown_nobody(&path.join("logs"))?;
        Ok(Stage {
            topology,
            dir: Some(dir),
            path,
            servers: Vec::new(),
            keep,
            verbose,
        })
    }

    /// The topology.
    pub fn topology(&self) -> &'t Topology<'n> {
        self.topology
    }

    /// The scenario's directory.
    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// `rel` inside the scenario's directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// The address clients use to reach the server member.
    pub fn server_addr(&self) -> IpAddr {
        self.topology.server.addr
    }

    /// The server member's IPv6 address for clients, if it has one.
    pub fn server_addr6(&self) -> Option<IpAddr> {
        self.topology.server.addr6
    }

    /// The address the server member uses to reach the client member.
    pub fn client_addr(&self) -> IpAddr {
        self.topology.client.addr
    }

    /// The address of the backend (a server on member 2's host beside the clients).
    pub fn backend_addr(&self) -> IpAddr {
        self.topology.backend.addr
    }

    fn member(&self, side: Side) -> &'t Member<'n> {
        match side {
            Side::Server => &self.topology.server,
            Side::Client => &self.topology.client,
            Side::Backend => &self.topology.backend,
        }
    }

    /// Create the directory `rel` (and its parents inside the scenario directory), owned
    /// by 65534.
    pub fn mkdir(&self, rel: &str) -> Result<PathBuf, MatrixError> {
        let path = self.path(rel);
        std::fs::create_dir_all(&path)
            .map_err(|e| MatrixError::io(format!("creating {}", path.display()), e))?;
        let mut at = path.as_path();
        while at != self.path {
            chown_nobody(at)?;
            at = match at.parent() {
                Some(parent) => parent,
                None => break,
            };
        }
        Ok(path)
    }

    /// Write `contents` to `rel`, owned by 65534.
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> Result<PathBuf, MatrixError> {
        let path = self.path(rel);
        if let Some(parent) = Path::new(rel)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            self.mkdir(&parent.to_string_lossy())?;
        }
        std::fs::write(&path, contents)
            .map_err(|e| MatrixError::io(format!("writing {}", path.display()), e))?;
        chown_nobody(&path)?;
        Ok(path)
    }

    /// Write `size` random bytes to `rel` (owned by 65534); returns the path and the
    /// SHA-256 of the contents.
    pub fn random_file(&self, rel: &str, size: usize) -> Result<(PathBuf, String), MatrixError> {
        let mut bytes = vec![0u8; size];
        File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(|e| MatrixError::io("reading /dev/urandom", e))?;
        let digest = sha256(&bytes);
        Ok((self.write(rel, &bytes)?, digest))
    }

    /// A command that runs `program args...` on `side` as `who`, wrapped as the mode
    /// says. Environment variables set on the result reach the program.
    pub fn command<S: AsRef<OsStr>>(
        &self,
        side: Side,
        who: &Who,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = S>,
    ) -> Command {
        let member = self.member(side);
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let argv = self
            .topology
            .wrap
            .argv(&member.home, program.as_ref(), &args);
        let mut cmd = match who {
            Who::Nobody => {
                let mut cmd = member.host.command_as_user(&argv[0]);
                cmd.args(&argv[1..]);
                cmd
            }
            Who::NobodyWithAccount { passwd, shadow } => {
                // unshare(1) gives the shell a private mount namespace (propagation
                // private, so nothing leaks to the machine's); the bind mounts exist only
                // there and vanish with the last process in it. setpriv(1) then drops to
                // 65534 with no groups and no inheritable capabilities, as command_as_user
                // does, before the program starts.
                let mut cmd = member.host.command("unshare");
                cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
                    .arg(
                        "mount --bind \"$1\" /etc/passwd && mount --bind \"$2\" /etc/shadow \
                         && shift 2 && exec setpriv --reuid=65534 --regid=65534 \
                         --clear-groups --inh-caps=-all -- \"$@\"",
                    )
                    .arg("sh")
                    .arg(passwd)
                    .arg(shadow)
                    .args(&argv);
                cmd.env("USER", "nobody")
                    .env("LOGNAME", "nobody")
                    .env("HOME", "/nonexistent");
                cmd
            }
        };
        cmd.current_dir(&self.path);
        cmd
    }

    /// Start a server; its output goes to `logs/NAME.out` and `logs/NAME.err`. It is
    /// killed when the stage finishes (and everything it started, at teardown).
    pub fn start_server(&mut self, name: &str, mut cmd: Command) -> Result<(), MatrixError> {
        let out = self.path(&format!("logs/{name}.out"));
        let err = self.path(&format!("logs/{name}.err"));
        let create = |p: &Path| {
            File::create(p).map_err(|e| MatrixError::io(format!("creating {}", p.display()), e))
        };
        cmd.stdin(Stdio::null())
            .stdout(create(&out)?)
            .stderr(create(&err)?);
        if self.verbose {
            eprintln!("matrix:   server {name}: {}", describe(&cmd));
        }
        let child = cmd.spawn().map_err(|source| MatrixError::Spawn {
            what: name.into(),
            command: describe(&cmd),
            source,
        })?;
        self.servers.push(Server {
            name: name.into(),
            child,
            out,
            err,
        });
        Ok(())
    }

    fn server(&mut self, name: &str) -> &mut Server {
        match self.servers.iter_mut().position(|s| s.name == name) {
            Some(at) => &mut self.servers[at],
            None => panic!("scenario bug: no server named {name}"),
        }
    }

    /// The end of a server's stderr and stdout.
    ///
    /// # Panics
    ///
    /// When no server of that name was started (a bug of the scenario).
    pub fn server_log(&mut self, name: &str) -> String {
        let server = self.server(name);
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let text = format!("{} {}", read(&server.err), read(&server.out));
        tail(&text, 500)
    }

    /// The process id of a running server (the process the runner started).
    ///
    /// # Panics
    ///
    /// When no server of that name was started (a bug of the scenario).
    pub fn server_pid(&mut self, name: &str) -> u32 {
        self.server(name).child.id()
    }

    /// The real uid of a running server's process, from `/proc/PID/status`.
    ///
    /// # Panics
    ///
    /// When no server of that name was started (a bug of the scenario).
    pub fn server_uid(&mut self, name: &str) -> Option<u32> {
        let pid = self.server_pid(name);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("Uid:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Every process in `side`'s network namespace, as (pid, real uid, command line with
    /// spaces between arguments). Servers that fork (nginx, apache) are counted with it.
    pub fn processes_on(&self, side: Side) -> Result<Vec<(u32, u32, String)>, MatrixError> {
        use std::os::unix::fs::MetadataExt;
        let ns = format!("/run/netns/{}", self.member(side).host.netns());
        let inode = std::fs::metadata(&ns)
            .map_err(|e| MatrixError::io(format!("stat {ns}"), e))?
            .ino();
        let want = format!("net:[{inode}]");
        let entries =
            std::fs::read_dir("/proc").map_err(|e| MatrixError::io("listing /proc", e))?;
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let in_ns = std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .map(|l| l.to_string_lossy() == want)
                .unwrap_or(false);
            if !in_ns {
                continue;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let text = String::from_utf8_lossy(&cmdline)
                .split('\0')
                .filter(|a| !a.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|status| {
                    let line = status.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
                    line.split_whitespace().nth(1)?.parse().ok()
                })
                .unwrap_or(u32::MAX);
            found.push((pid, uid, text));
        }
        Ok(found)
    }

    /// Fail if the server has exited.
    ///
    /// # Panics
    ///
    /// When no server of that name was started (a bug of the scenario).
    pub fn check_alive(&mut self, name: &str) -> Result<(), MatrixError> {
        let status = self
            .server(name)
            .child
            .try_wait()
            .map_err(|e| MatrixError::io(format!("checking server {name}"), e))?;
        match status {
            None => Ok(()),
            Some(status) => Err(MatrixError::ServerExited {
                name: name.into(),
                status,
                log: self.server_log(name),
            }),
        }
    }

    /// Wait until something accepts TCP connections on `port` of `side`'s loopback (a
    /// wildcard-bound server listens there too, in both modes), failing early if the
    /// server `name` exits and after `timeout` at the latest.
    ///
    /// # Panics
    ///
    /// When no server of that name was started (a bug of the scenario).
    pub fn wait_tcp(
        &mut self,
        name: &str,
        side: Side,
        port: u16,
        timeout: Duration,
    ) -> Result<(), MatrixError> {
        let host = self.member(side).host;
        let deadline = Instant::now() + timeout;
        let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        loop {
            self.check_alive(name)?;
            let connected = host.run(move || {
                TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok()
            })?;
            if connected {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(MatrixError::ServerTimeout {
                    name: name.into(),
                    port,
                    secs: timeout.as_secs(),
                    log: self.server_log(name),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until server `name` has printed `line` on its stdout, failing early if it
    /// exits and after `timeout` at the latest.
    ///
    /// # Panics
    ///
    /// When no server of that name was started (a bug of the scenario).
    pub fn wait_output(
        &mut self,
        name: &str,
        line: &str,
        timeout: Duration,
    ) -> Result<(), MatrixError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive(name)?;
            let printed = std::fs::read_to_string(&self.server(name).out).unwrap_or_default();
            if printed.lines().any(|l| l == line) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(MatrixError::ServerNotReady {
                    name: name.into(),
                    line: line.into(),
                    secs: timeout.as_secs(),
                    log: self.server_log(name),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Run a client to completion (killed after `timeout`); only failing to start it or
    /// running out of time is an error.
    pub fn run(
        &self,
        name: &str,
        cmd: &mut Command,
        timeout: Duration,
    ) -> Result<Ran, MatrixError> {
        if self.verbose {
            eprintln!("matrix:   {name}: {}", describe(cmd));
        }
        let ran = run_with_timeout(cmd, name, timeout)?;
        if ran.timed_out {
            return Err(MatrixError::ClientTimeout {
                name: name.into(),
                command: ran.command.clone(),
                secs: timeout.as_secs(),
                log: ran.stderr_tail(),
            });
        }
        Ok(ran)
    }

    /// Run a client that must exit successfully; returns what it printed.
    pub fn run_ok(
        &self,
        name: &str,
        cmd: &mut Command,
        timeout: Duration,
    ) -> Result<Ran, MatrixError> {
        let ran = self.run(name, cmd, timeout)?;
        if !ran.status.success() {
            return Err(MatrixError::ClientFailed {
                name: name.into(),
                command: ran.command.clone(),
                status: ran.status,
                log: ran.stderr_tail(),
            });
        }
        Ok(ran)
    }

    /// Kill the servers and remove the directory (unless asked to keep it).
    pub fn finish(&mut self) {
        for server in &mut self.servers {
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
        self.servers.clear();
        if let Some(dir) = self.dir.take() {
            if self.keep {
                let kept = dir.keep();
                eprintln!("matrix: kept {}", kept.display());
            }
        }
    }
}

impl Drop for Stage<'_, '_> {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Fail unless `got` contains `want`.
pub(crate) fn expect_contains(what: &str, got: &str, want: &str) -> Result<(), MatrixError> {
    if got.contains(want) {
        Ok(())
    } else {
        Err(MatrixError::check(
            what,
            format!("{want:?}"),
            format!("{:?}", tail(got, 300)),
        ))
    }
}

/// Fail unless `got == want`.
pub(crate) fn expect_eq(what: &str, got: &str, want: &str) -> Result<(), MatrixError> {
    if got == want {
        Ok(())
    } else {
        Err(MatrixError::check(what, want, got))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end_on_one_line() {
        assert_eq!(tail("a\nb  c\n", 100), "a b c");
        assert_eq!(tail("", 100), "(no output)");
        assert_eq!(tail("0123456789", 4), "...6789");
        // Never splits a character.
        assert_eq!(tail("ééé", 3), "...é");
    }

    #[test]
    fn run_with_timeout_captures_output_and_kills_late_programs() {
        let ran = run_with_timeout(
            Command::new("/bin/sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            "sh",
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(ran.stdout, "out\n");
        assert_eq!(ran.stderr, "err\n");
        assert_eq!(ran.status.code(), Some(3));
        assert!(!ran.timed_out);

        let started = Instant::now();
        let ran = run_with_timeout(
            Command::new("/bin/sleep").arg("30"),
            "sleep",
            Duration::from_millis(200),
        )
        .unwrap();
        assert!(ran.timed_out);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn sha256_matches_the_standard_vector() {
        assert_eq!(
            sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
