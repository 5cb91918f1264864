//! `ztrun`: run a program with its IPv4/IPv6 sockets on a virtual network.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use supervisor::backend::{NoNetwork, Policy};
use supervisor::launch;

use launcher::{identity, overlay};
use std::time::{Duration, Instant};
use supervisor::network::Networks;
use zt_core::NetworkId;

use launcher::cli::Ztrun as Args;

fn main() -> ExitCode {
    launcher::sys::tune_allocator();
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(launcher::node::DAEMON_FLAG) {
        // A home's node, started by the first ztrun of that home (launcher::node).
        let code = launcher::node::daemon_main(&argv[2..]);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let mut args = Args::parse();
    init_tracing(args.quiet);
    if !args.ephemeral && std::env::var_os("ZTRUN_OWN_NODE").is_some_and(|v| v == "1") {
        args.own_node = true;
    }
    let stats = launcher::stats::from_env();
    let result = run(args);
    if let Some(stats) = &stats {
        stats.write();
    }
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("ztrun: {e:#}");
            // 125, like env(1) and container runtimes: ztrun itself failed.
            ExitCode::from(125)
        }
    }
}

fn init_tracing(quiet: bool) {
    launcher::cli::init_tracing(if quiet { "error" } else { "warn" });
}

fn run(args: Args) -> anyhow::Result<i32> {
    let nwids = args
        .nwids
        .iter()
        .map(|n| {
            n.parse::<NetworkId>()
                .map_err(|e| anyhow::anyhow!("--nwid {n}: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(n) = nwids
        .iter()
        .find(|n| !n.is_adhoc() && n.controller().is_none())
    {
        anyhow::bail!(
            "--nwid {n}: a network ID starts with its controller's 10-digit address (or ff \
             for an ad-hoc network), and {} is not a valid address",
            &n.to_string()[..10]
        );
    }
    let doors_wanted =
        !args.publish.is_empty() || args.socks5.is_some() || args.http_proxy.is_some();
    if doors_wanted && nwids.is_empty() {
        anyhow::bail!("--publish, --socks5 and --http-proxy are doors into a network: give --nwid");
    }
    if let Some(listen) = args.http_proxy.filter(|l| !l.ip().is_loopback()) {
        return Err(launcher::doors::DoorError::HttpOffLoopback(listen).into());
    }
    let socks5 = match args.socks5 {
        Some(listen) => {
            let credentials = match &args.socks5_user {
                Some(user) => {
                    let password = std::env::var("ZTRUN_SOCKS5_PASSWORD").map_err(|_| {
                        anyhow::anyhow!("--socks5-user needs the password in ZTRUN_SOCKS5_PASSWORD")
                    })?;
                    Some((user.clone(), password))
                }
                None => None,
            };
            if !listen.ip().is_loopback() && credentials.is_none() {
                // Said before joining, not after.
                return Err(launcher::doors::DoorError::NeedsCredentials(listen).into());
            }
            Some(launcher::doors::SocksConfig {
                listen,
                credentials,
            })
        }
        None => None,
    };
    let policy = Policy {
        fallthrough: args.fallthrough,
    };
    // Only a door may come without a program (clap checks it).
    let program = args.program.first().cloned().unwrap_or_default();
    let mut cmd = launch::Command::new(&program).args(args.program.iter().skip(1));
    if let Some((soft, hard)) = launcher::sys::raise_nofile_limit() {
        cmd = cmd.nofile_limit(soft, hard);
    }
    let rt = launcher::spin::runtime(
        launcher::runtime_workers(),
        launcher::spin::window_from_env(),
    )
    .context("cannot start the runtime")?
    .0;
    let status = rt.block_on(async {
        if nwids.is_empty() {
            return launch::run(&cmd, policy, Arc::new(NoNetwork))
                .await
                .with_context(|| format!("cannot run `{}`", program));
        }
        // Joining can wait for a controller for a long time: a signal ends the wait
        // cleanly (the home is released).
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        if args.ephemeral || args.own_node || doors_wanted {
            let dir = if args.ephemeral {
                Some(
                    tempfile::Builder::new()
                        .prefix("ztrun-ephemeral-")
                        .tempdir()
                        .context("cannot make a temporary home")?,
                )
            } else {
                None
            };
            let home = match &dir {
                Some(d) => d.path().to_path_buf(),
                None => launcher::home::resolve(args.home.as_deref())?,
            };
            launcher::home::prepare(&home)?;
            let lock = launcher::status::HomeLock::acquire(&home)?;
            let (networks, doors) = tokio::select! {
                r = join_all(&args, &home, &lock, &nwids) => r?,
                _ = int.recv() => return Ok(interrupted(nix::sys::signal::Signal::SIGINT)),
                _ = term.recv() => return Ok(interrupted(nix::sys::signal::Signal::SIGTERM)),
            };
            for p in &args.publish {
                launcher::doors::publish(&doors, *p).await?;
                if !args.quiet {
                    eprintln!(
                        "ztrun: published {p} (to port {} on the virtual network)",
                        p.host.port()
                    );
                }
            }
            if let Some(config) = socks5 {
                let at = launcher::doors::serve_socks5(&doors, config).await?;
                if !args.quiet {
                    eprintln!("ztrun: SOCKS5 on {at} (CONNECT to members by address or .zt name)");
                }
            }
            if let Some(listen) = args.http_proxy {
                let at = launcher::doors::serve_http_connect(&doors, listen).await?;
                if !args.quiet {
                    eprintln!(
                        "ztrun: HTTP CONNECT proxy on {at} (to members by address or .zt name)"
                    );
                }
            }
            if args.program.is_empty() {
                // A door alone: it serves until a signal.
                let sig = tokio::select! {
                    _ = int.recv() => nix::sys::signal::Signal::SIGINT,
                    _ = term.recv() => nix::sys::signal::Signal::SIGTERM,
                };
                return Ok(launch::ExitStatus::Signaled(sig as i32));
            }
            return launch::run(&cmd, policy, Arc::new(networks))
                .await
                .with_context(|| format!("cannot run `{}`", program));
        }
        let home = launcher::home::resolve(args.home.as_deref())?;
        launcher::home::prepare(&home)?;
        let say = say(args.quiet);
        let (link, node_pid) = tokio::select! {
            r = launcher::node::attach(&home, &args.roots, &nwids, &say) => r?,
            _ = int.recv() => return Ok(interrupted(nix::sys::signal::Signal::SIGINT)),
            _ = term.recv() => return Ok(interrupted(nix::sys::signal::Signal::SIGTERM)),
        };
        drop((int, term));
        run_on_node(&args, &home, cmd, link, node_pid, say).await
    })?;
    Ok(status.code())
}

/// Messages for the user, unless `--quiet`.
fn say(quiet: bool) -> overlay::Say {
    if quiet {
        Arc::new(|_: &str| {})
    } else {
        overlay::say_on_stderr()
    }
}

/// Start the program and hand it to the home's node (launcher::node), then wait for it.
async fn run_on_node(
    args: &Args,
    home: &std::path::Path,
    cmd: launch::Command,
    link: launcher::node::Link,
    node_pid: u32,
    say: overlay::Say,
) -> anyhow::Result<launch::ExitStatus> {
    use launcher::node::{FromNode, ToNode};
    use std::os::fd::AsFd as _;
    let cannot_run = || format!("cannot run `{}`", args.program[0]);
    let signals = launch::ForwardedSignals::install().with_context(cannot_run)?;
    let pid = i32::try_from(node_pid).unwrap_or(0);
    let mut child = launch::spawn(&cmd.ptracer(pid)).with_context(cannot_run)?;
    let listener = child
        .take_listener()
        .context("the program's seccomp listener is missing")?;
    let handed = link
        .send(
            &ToNode::Supervise {
                pid: child.pid() as u32,
                command: args.program.join(" "),
                fallthrough: args.fallthrough,
            },
            Some(listener.as_fd()),
        )
        .await;
    drop(listener);
    if let Err(e) = handed {
        let _ = child.signal(nix::sys::signal::Signal::SIGKILL);
        return Err(e).context("cannot hand the program to the node");
    }
    let node_gone = async {
        loop {
            match link.recv::<FromNode>().await {
                Ok(Some((FromNode::Say(line), _))) => say(&line),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
    };
    tokio::select! {
        status = child.wait_forwarding(signals) => status.with_context(cannot_run),
        () = node_gone => {
            let _ = child.signal(nix::sys::signal::Signal::SIGKILL);
            anyhow::bail!(
                "the node of {} stopped (its log is {}); the program was killed",
                home.display(),
                home.join(launcher::node::LOG_FILE).display()
            )
        }
    }
}

/// A signal arrived before the program started: say so, and exit as if it killed us.
fn interrupted(sig: nix::sys::signal::Signal) -> launch::ExitStatus {
    eprintln!("ztrun: {sig} while joining the network(s); the program was not started");
    launch::ExitStatus::Signaled(sig as i32)
}

/// Steps 1–3 of `ztrun`: identity, node, networks.
async fn join_all(
    args: &Args,
    home: &std::path::Path,
    lock: &launcher::status::HomeLock,
    nwids: &[NetworkId],
) -> anyhow::Result<(Networks, launcher::doors::Doors)> {
    let started = Instant::now();
    let (id, created) = identity::load_or_create(home)?;
    if created && !args.quiet {
        eprintln!("ztrun: new identity {} in {}", id.address(), home.display());
    }
    let me = id.address();
    let root_args = if args.roots.is_empty() {
        overlay::host_default_root_if_free()?;
        vec![launcher::roots::RootArg {
            identity: None,
            endpoint: launcher::roots::DEFAULT_ROOT_ENDPOINT,
        }]
    } else {
        args.roots.clone()
    };
    let node = overlay::start_node(id, launcher::roots::specs(&root_args)).await?;
    if overlay::wait_for_root(&node, Duration::from_secs(5))
        .await
        .is_none()
    {
        let eps: Vec<String> = root_args.iter().map(|r| r.endpoint.to_string()).collect();
        eprintln!(
            "ztrun: warning: no root answered within 5 s ({}); peers that know this node can \
             still reach it, others cannot find it",
            eps.join(", ")
        );
    }
    let status = launcher::status::spawn_writer(lock, node.clone(), Default::default());
    let mut stacks = Vec::new();
    let mut names = Vec::new();
    for &nwid in nwids {
        let joined = overlay::join(&node, nwid, me, say(args.quiet)).await?;
        // `zt status` shows the network from the moment ztrun says it joined.
        status.now();
        if !args.quiet {
            eprintln!(
                "ztrun: joined {nwid} as {} {}{}",
                overlay::describe(&joined),
                overlay::join_time(started.elapsed(), joined.waited_for_authorization),
                overlay::name_suffix(&joined, me)
            );
        }
        stacks.push(joined.stack);
        names.push(joined.names);
    }
    // The node runs as long as this process; its handle must outlive the program.
    std::mem::forget(node);
    let names = launcher::names::MemberNames::new(names);
    let doors = launcher::doors::Doors::new(stacks.clone(), names.clone());
    let resolver = supervisor::dns::Resolver::new(
        supervisor::dns::system_nameservers(),
        names,
        args.fallthrough,
    );
    Ok((Networks::new(stacks).with_resolver(resolver), doors))
}
