//! Stock Docker containers on the overlay (issue 16), as a user runs them: Docker's
//! default seccomp profile, `--cap-drop ALL`, `--security-opt no-new-privileges`,
//! `--read-only` with a tmpfs for the ztrun home, `--user 65534`, no `/dev/net/tun`.
//!
//! A root (`zt root`, the `FROM scratch` image) sits on a Docker network of its own and
//! is connected to the networks of the others under the alias `root`; a static Go server
//! (in an image built from the README's `Dockerfile`, `FROM scratch`), nginx
//! and redis (the Debian image), and a client (the Debian image, curl and redis-cli) each
//! run on their own user-defined `--internal` network, so no two of them share a Docker
//! network: the client reaches the servers only through the overlay, relayed by the root.
//!
//! - 100 MiB each way between the client and the Go server are SHA-256-equal, and the
//!   root's relay counters grow by at least that much;
//! - nginx and redis in the Debian image answer the client by their `.zt` member name;
//! - the Go server is not reachable from the client's Docker network at all;
//! - a Go server with `ztrun --publish 8080`, started with `docker run -p`, answers from
//!   the host through Docker's port and the client through the overlay by name;
//! - `curl --socks5-hostname` on the host, through `ztrun --socks5` on the host, fetches
//!   a page from a member by its `.zt` name;
//! - the compose example (`examples/compose`) comes up and answers, from the host and
//!   from its client by name.
//!
//! It needs root (the Docker socket) and a running Docker Engine, and fails saying so
//! without them. The images come from `scripts/image` (run here; CI runs it first).
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use compat_tests::testnet::require_root;

const NWID: &str = "ff00000000d0c4e1";
const MIB: u64 = 100;

/// How every container runs: what a careful user gives `docker run`.
const LOCKED_DOWN: &[&str] = &[
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--read-only",
    "--user",
    "65534:65534",
    "--tmpfs",
    "/var/lib/ztrun:uid=65534,gid=65534,mode=0700",
    "--tmpfs",
    "/tmp",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace holds compat-tests")
        .to_owned()
}

fn docker(args: &[&str]) -> Result<Output> {
    Command::new("docker")
        .args(args)
        .output()
        .with_context(|| format!("cannot run docker {}", args.join(" ")))
}

/// `docker ARGS`, which must succeed; its stdout, trimmed.
fn docker_ok(args: &[&str]) -> Result<String> {
    let out = docker(args)?;
    ensure!(
        out.status.success(),
        "docker {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Fails the test, saying why, when no Docker Engine answers.
fn require_docker() {
    match docker(&[
        "info",
        "--format",
        "{{.ServerVersion}} {{.SecurityOptions}}",
    ]) {
        Ok(out) if out.status.success() => {
            let info = String::from_utf8_lossy(&out.stdout);
            assert!(
                info.contains("seccomp"),
                "the Docker Engine runs without seccomp ({info}): this test is about its default profile"
            );
            println!("docker engine: {}", info.trim());
        }
        Ok(out) => panic!(
            "this test needs a running Docker Engine: `docker info` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("this test needs Docker: {e:#}"),
    }
}

/// Containers and networks of one run, removed on drop (also after a failure).
struct Lab {
    prefix: String,
    containers: Vec<String>,
    networks: Vec<String>,
}

impl Lab {
    fn new() -> Lab {
        Lab {
            prefix: format!("ztt{}", std::process::id()),
            containers: Vec::new(),
            networks: Vec::new(),
        }
    }

    fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix)
    }

    /// A user-defined `--internal` network: no route out of this machine.
    fn network(&mut self, what: &str) -> Result<String> {
        self.network_with(what, &["--internal"])
    }

    fn network_with(&mut self, what: &str, opts: &[&str]) -> Result<String> {
        let name = self.name(what);
        let mut args = vec!["network", "create"];
        args.extend_from_slice(opts);
        args.push(&name);
        docker_ok(&args)?;
        self.networks.push(name.clone());
        Ok(name)
    }

    /// `docker run -d` of a locked-down container named `what` on `network`.
    fn start(&mut self, what: &str, network: &str, image: &str, cmd: &[&str]) -> Result<String> {
        self.start_with(what, network, &[], image, cmd)
    }

    /// [`Lab::start`] with more `docker run` options.
    fn start_with(
        &mut self,
        what: &str,
        network: &str,
        opts: &[&str],
        image: &str,
        cmd: &[&str],
    ) -> Result<String> {
        let name = self.name(what);
        let mut args = vec!["run", "-d", "--name", &name, "--network", network];
        args.extend_from_slice(opts);
        args.extend_from_slice(LOCKED_DOWN);
        args.push(image);
        args.extend_from_slice(cmd);
        docker_ok(&args)?;
        self.containers.push(name.clone());
        Ok(name)
    }

    /// The logs of a container, stdout and stderr together.
    fn logs(&self, name: &str) -> String {
        match docker(&["logs", name]) {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("(no logs: {e:#})"),
        }
    }

    /// Waits for ztrun's `joined` line in a container's logs; returns the member name.
    fn joined(&self, name: &str) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let logs = self.logs(name);
            if let Some(line) = logs.lines().find(|l| l.starts_with("ztrun: joined ")) {
                let member = line
                    .rsplit_once("; name ")
                    .map(|(_, n)| n.trim().to_owned())
                    .with_context(|| format!("no member name in {line:?}"))?;
                println!("{name}: {line}");
                return Ok(member);
            }
            if Instant::now() > deadline {
                bail!("{name} did not join within 30 s:\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last relay counter line of the root: bytes relayed so far.
    fn relayed_bytes(&self, root: &str) -> u64 {
        let logs = self.logs(root);
        logs.lines()
            .rev()
            .find_map(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("bytes="))
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        for n in &self.networks {
            let _ = docker(&["network", "rm", n]);
        }
        let _ = docker(&["rmi", &format!("{}-readme", self.prefix)]);
    }
}

/// The image of the README's `Dockerfile` (its "Containers" section), with the static
/// ztrun and the static Go server as `server` in the build context.
fn build_readme_image(lab: &Lab) -> Result<String> {
    let readme = std::fs::read_to_string(workspace().join("README.md"))?;
    let dockerfile = readme
        .split("```Dockerfile\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .context("README.md has no ```Dockerfile block")?;
    ensure!(
        dockerfile.contains(NWID),
        "the README's Dockerfile no longer joins {NWID}: update this test"
    );
    let ctx = tempfile::tempdir()?;
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile)?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    for (from, to) in [
        ("x86_64-unknown-linux-gnu/static/ztrun", "ztrun"),
        ("image/scratch/goserver", "server"),
    ] {
        std::fs::copy(target.join(from), ctx.path().join(to))
            .with_context(|| format!("cannot copy {from} (scripts/image makes it)"))?;
    }
    let tag = format!("{}-readme", lab.prefix);
    let ctx_path = ctx.path().to_string_lossy().to_string();
    let out = Command::new("docker")
        .args(["build", "-q", "-t", &tag, &ctx_path])
        .env("DOCKER_BUILDKIT", "0")
        .output()?;
    ensure!(
        out.status.success(),
        "docker build of the README's Dockerfile failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(tag)
}

/// The client's script: each result on a line of its own, `KEY VALUE`.
fn client_script(server: &str, web: &str) -> String {
    format!(
        r#"set -eu
test ! -e /dev/net/tun && echo "tun absent"
echo "uid $(id -u)"
echo "hello $(curl -sS --retry 5 --retry-all-errors http://{server}:8080/)"
head -c {bytes} /dev/urandom > /tmp/blob
echo "sent $(sha256sum < /tmp/blob | cut -d' ' -f1)"
echo "received-by-server $(curl -sS --data-binary @/tmp/blob http://{server}:8080/sha256)"
rm /tmp/blob
echo "download $(curl -sS http://{server}:8080/blob?mib={MIB} | sha256sum | cut -d' ' -f1)"
echo "download-expected $(curl -sS http://{server}:8080/blob.sha256?mib={MIB})"
echo "nginx $(curl -sS --retry 5 --retry-all-errors http://{web}:8080/)"
echo "redis-set $(redis-cli -h {web} set greeting overlay)"
echo "redis-get $(redis-cli -h {web} get greeting)"
"#,
        bytes = MIB << 20
    )
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or("")
}

#[test]
fn stock_containers_meet_only_through_the_overlay() {
    require_root();
    require_docker();
    if let Err(e) = run() {
        panic!("{e:#}");
    }
}

fn run() -> Result<()> {
    let status = Command::new(workspace().join("scripts/image"))
        .status()
        .context("cannot run scripts/image")?;
    ensure!(status.success(), "scripts/image failed ({status})");

    let mut lab = Lab::new();
    let net_root = lab.network("root")?;
    let net_server = lab.network("server")?;
    let net_web = lab.network("web")?;
    let net_client = lab.network("client")?;

    let root = lab.start(
        "root",
        &net_root,
        "ztrun/scratch",
        &[
            "zt",
            "root",
            "--listen",
            "0.0.0.0:9993",
            "--stats-every",
            "1",
        ],
    )?;
    for net in [&net_server, &net_web, &net_client] {
        docker_ok(&["network", "connect", "--alias", "root", net, &root])?;
    }
    // Each member finds the root by its alias, through Docker's DNS.
    let root_arg = "root:9993".to_owned();
    let ztrun = move |program: &'static [&'static str]| -> Vec<String> {
        let mut v: Vec<String> = ["ztrun", "--own-node", "--nwid", NWID, "--root", &root_arg]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.push("--".into());
        v.extend(program.iter().map(|s| s.to_string()));
        v
    };
    let readme_image = build_readme_image(&lab)?;
    let server = lab.start("server", &net_server, &readme_image, &[])?;
    let web_cmd = ztrun(&[
        "bash",
        "-c",
        "redis-server --port 6379 --save '' --appendonly no --protected-mode no --dir /tmp & \
         exec nginx -c /etc/nginx/ztrun.conf",
    ]);
    let web_cmd: Vec<&str> = web_cmd.iter().map(String::as_str).collect();
    let web = lab.start("web", &net_web, "ztrun/debian", &web_cmd)?;
    let server_name = lab.joined(&server)?;
    let web_name = lab.joined(&web)?;

    // The Go server's Docker address is not reachable from the client's network.
    let server_ip = docker_ok(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &server,
    ])?;
    let direct = docker(&[
        "run",
        "--rm",
        "--network",
        &net_client,
        "ztrun/debian",
        "curl",
        "-sS",
        "--max-time",
        "3",
        &format!("http://{server_ip}:8080/"),
    ])?;
    ensure!(
        !direct.status.success(),
        "the Go server answered on Docker's network at {server_ip}: {}",
        String::from_utf8_lossy(&direct.stdout)
    );
    println!("direct http://{server_ip}:8080/ from the client's network: refused or unreachable, as it must be");

    let relayed_before = lab.relayed_bytes(&root);
    let script = client_script(&server_name, &web_name);
    let client_cmd = ztrun(&["bash", "-c"]);
    let client_name = lab.name("client");
    let mut args: Vec<&str> = vec![
        "run",
        "--rm",
        "--name",
        &client_name,
        "--network",
        &net_client,
    ];
    args.extend_from_slice(LOCKED_DOWN);
    args.push("ztrun/debian");
    args.extend(client_cmd.iter().map(String::as_str));
    args.push(&script);
    let started = Instant::now();
    let out = docker(&args)?;
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    println!("client ({} ms):\n{stdout}{stderr}", took.as_millis());
    let context = || {
        format!(
            "client said:\n{stdout}{stderr}\nserver:\n{}\nweb:\n{}\nroot:\n{}",
            lab.logs(&server),
            lab.logs(&web),
            tail(&lab.logs(&root), 5)
        )
    };
    ensure!(out.status.success(), "the client failed: {}", context());
    ensure!(stdout.contains("tun absent\n"), "{}", context());
    ensure!(field(&stdout, "uid") == "65534", "{}", context());
    ensure!(
        field(&stdout, "hello") == "hello from a static Go server on the virtual network",
        "{}",
        context()
    );
    let sent = field(&stdout, "sent");
    ensure!(
        sent.len() == 64 && field(&stdout, "received-by-server") == sent,
        "upload of {MIB} MiB differs: {}",
        context()
    );
    let down = field(&stdout, "download");
    ensure!(
        down.len() == 64 && field(&stdout, "download-expected") == down,
        "download of {MIB} MiB differs: {}",
        context()
    );
    ensure!(
        field(&stdout, "nginx") == "hello from nginx in a Debian container on the virtual network",
        "{}",
        context()
    );
    ensure!(field(&stdout, "redis-set") == "OK", "{}", context());
    ensure!(field(&stdout, "redis-get") == "overlay", "{}", context());

    // Every byte crossed the overlay through the root: it relayed both transfers.
    std::thread::sleep(Duration::from_millis(1500));
    let relayed = lab.relayed_bytes(&root) - relayed_before;
    println!(
        "root relayed {} MiB during the client's run; {} MiB each way took {:.1} s in all",
        relayed >> 20,
        MIB,
        took.as_secs_f64()
    );
    ensure!(
        relayed >= 2 * (MIB << 20),
        "the root relayed only {relayed} bytes for 2 × {MIB} MiB: {}",
        context()
    );
    doors(&mut lab, &root, &ztrun)?;
    compose(&lab)
}

/// `docker-compose down` of a project on drop.
struct ComposeDown<'a>(&'a dyn Fn(&[&str]) -> Result<Output>);

impl Drop for ComposeDown<'_> {
    fn drop(&mut self) {
        let _ = (self.0)(&["down", "--volumes", "--timeout", "2"]);
    }
}

/// The compose example comes up; its server answers the host through the published
/// port and its client (on another network) by the server's `.zt` name.
fn compose(lab: &Lab) -> Result<()> {
    let project = lab.name("compose");
    let file = workspace().join("examples/compose/docker-compose.yml");
    let port = free_port()?.to_string();
    let server_name = std::cell::RefCell::new(String::new());
    let dc = |args: &[&str]| -> Result<Output> {
        Command::new("docker-compose")
            .arg("-p")
            .arg(&project)
            .arg("-f")
            .arg(&file)
            .args(args)
            .env("ZT_PORT", &port)
            .env("SERVER", server_name.borrow().as_str())
            .output()
            .context("cannot run docker-compose (Debian's docker-compose package)")
    };
    let _down = ComposeDown(&dc);
    let up = dc(&["up", "-d", "root", "server"])?;
    ensure!(
        up.status.success(),
        "docker-compose up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let name = loop {
        let logs = dc(&["logs", "--no-color", "server"])?;
        let text = String::from_utf8_lossy(&logs.stdout).to_string();
        if let Some(n) = text
            .lines()
            .find_map(|l| l.split_once("; name ").map(|(_, n)| n.trim().to_owned()))
        {
            break n;
        }
        ensure!(
            Instant::now() < deadline,
            "the compose server did not join:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let from_host = curl(&[&format!("http://127.0.0.1:{port}/")])?;
    ensure!(
        from_host == "hello from a static Go server on the virtual network",
        "compose server from the host: {from_host:?}"
    );
    *server_name.borrow_mut() = name.clone();
    let client = dc(&["run", "--rm", "client"])?;
    let said = String::from_utf8_lossy(&client.stdout).trim().to_owned();
    ensure!(
        client.status.success() && said == "hello from a static Go server on the virtual network",
        "the compose client said {said:?}: {}",
        String::from_utf8_lossy(&client.stderr)
    );
    println!("compose example: up, the host and the client (by {name}) got {said:?}");
    Ok(())
}

/// A port on the host's loopback that nothing holds now.
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `curl ARGS` on the host: its stdout, or why it failed.
fn curl(args: &[&str]) -> Result<String> {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "--retry",
            "5",
            "--retry-all-errors",
        ])
        .args(args)
        .output()
        .context("cannot run curl")?;
    ensure!(
        out.status.success(),
        "curl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `--publish` through `docker run -p`, and the SOCKS5 door on the host.
fn doors(
    lab: &mut Lab,
    root: &str,
    ztrun: &dyn Fn(&'static [&'static str]) -> Vec<String>,
) -> Result<()> {
    // A network with Docker's port mapping (an --internal one has none).
    let net_pub = lab.network_with("pub", &[])?;
    docker_ok(&["network", "connect", "--alias", "root", &net_pub, root])?;
    let host_port = free_port()?;
    let mapping = format!("127.0.0.1:{host_port}:8080");
    let mut cmd = ztrun(&["goserver"]);
    // ztrun's own options go before the "--".
    let dashes = cmd.iter().position(|a| a == "--").unwrap_or(cmd.len());
    cmd.splice(dashes..dashes, ["--publish".to_owned(), "8080".to_owned()]);
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let published = lab.start_with(
        "published",
        &net_pub,
        &["-p", &mapping],
        "ztrun/scratch",
        &cmd,
    )?;
    let published_name = lab.joined(&published)?;
    let from_host =
        curl(&[&format!("http://127.0.0.1:{host_port}/")]).with_context(|| lab.logs(&published))?;
    ensure!(
        from_host == "hello from a static Go server on the virtual network",
        "the published port answered {from_host:?}"
    );
    println!("--publish 8080 with docker -p {mapping}: the host got {from_host:?}");

    // SOCKS5 on the host, with the root's address on the mapped network.
    let root_ip = docker_ok(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{net_pub}\").IPAddress}}}}"),
        root,
    ])?;
    let socks_port = free_port()?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let mut door = Command::new(target.join("x86_64-unknown-linux-gnu/static/ztrun"))
        .args(["--ephemeral", "--nwid", NWID, "--root"])
        .arg(format!("{root_ip}:9993"))
        .arg("--socks5")
        .arg(format!("127.0.0.1:{socks_port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("cannot start ztrun --socks5 on the host")?;
    let page = curl(&[
        "--socks5-hostname",
        &format!("127.0.0.1:{socks_port}"),
        &format!("http://{published_name}:8080/"),
    ]);
    let _ = door.kill();
    let _ = door.wait();
    let page = page?;
    ensure!(
        page == "hello from a static Go server on the virtual network",
        "through SOCKS5: {page:?}"
    );
    println!("curl --socks5-hostname on the host fetched http://{published_name}:8080/: {page:?}");
    Ok(())
}
