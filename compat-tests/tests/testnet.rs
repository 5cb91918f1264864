//! The test-host harness, tested on real namespaces: NAT behaviours, loss, teardown (also
//! on panic), unprivileged commands, stale cleanup. Needs root; fails loudly without it.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use compat_tests::testnet::{
    cleanup_stale_namespaces, require_root, Direction, Host, Impairment, NatKind, Netem, TestNet,
    TestNetError,
};

/// A UDP echo server whose socket lives in a test host. It answers `PAYLOAD` with
/// `PAYLOAD|SOURCE`, SOURCE being the address and port it saw the datagram come from.
struct Echo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start(host: &Host<'_>, addr: SocketAddr) -> Result<Echo> {
        let socket = host.run(move || UdpSocket::bind(addr))??;
        Echo::serve(socket)
    }

    /// Echo on a socket already bound (in its host's namespace).
    fn serve(socket: UdpSocket) -> Result<Echo> {
        let addr = socket.local_addr()?;
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        // The thread itself is in the root namespace; its socket is not.
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stopping.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let mut reply = buf[..n].to_vec();
                    reply.extend_from_slice(format!("|{from}").as_bytes());
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        Ok(Echo {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A UDP socket of `host` bound to `addr`.
fn udp_socket(host: &Host<'_>, addr: &str) -> Result<UdpSocket> {
    let addr: SocketAddr = addr.parse()?;
    Ok(host.run(move || UdpSocket::bind(addr))??)
}

/// Send `payload` to an [`Echo`] at `to` and wait up to `timeout` for its answer; returns
/// the source address the server saw. Stale answers to earlier payloads are skipped.
fn ask(socket: &UdpSocket, to: SocketAddr, payload: &str, timeout: Duration) -> Option<SocketAddr> {
    socket.send_to(payload.as_bytes(), to).ok()?;
    receive_matching(socket, timeout, |text, _| {
        let (echoed, seen) = text.split_once('|')?;
        (echoed == payload).then(|| seen.parse().ok())?
    })
}

/// Wait up to `timeout` for a datagram on `socket` for which `accept(text, from)` is
/// `Some`, and return that.
fn receive_matching<T>(
    socket: &UdpSocket,
    timeout: Duration,
    mut accept: impl FnMut(&str, SocketAddr) -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        if left.is_zero() {
            return None;
        }
        socket.set_read_timeout(Some(left)).ok()?;
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                if let Some(found) = accept(&String::from_utf8_lossy(&buf[..n]), from) {
                    return Some(found);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            // ICMP errors (e.g. port unreachable) surface as ECONNREFUSED: keep waiting.
            Err(_) => {}
        }
    }
}

/// The names `ip netns list` prints.
fn ip_netns_list() -> Result<BTreeSet<String>> {
    let out = Command::new("ip").args(["netns", "list"]).output()?;
    if !out.status.success() {
        bail!("ip netns list: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect())
}

fn assert_all_gone(names: &[String]) -> Result<()> {
    let listed = ip_netns_list()?;
    let left: Vec<&String> = names.iter().filter(|n| listed.contains(*n)).collect();
    assert!(left.is_empty(), "namespaces left after teardown: {left:?}");
    Ok(())
}

fn wait_for_exit(child: &mut Child, within: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            bail!("process {} still running after {within:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

#[test]
fn port_restricted_nat_translates_and_loss_drops_some_datagrams() -> Result<()> {
    require_root();
    let net = TestNet::new()?;
    let public = net.lan("public", "198.18.0.0/24")?;
    let b = net.host("b")?;
    let b_addr = b.attach(&public)?.addr;
    let nat = net.nat_router("nat-a", &public, NatKind::PortRestrictedCone)?;
    let a = net.host("a")?;
    let a_addr = a.attach(&nat.inside)?.addr;
    assert_eq!(nat.inside.gateway(), nat.inside.subnet().host(1));

    let echo = Echo::start(&b, SocketAddr::new(b_addr.into(), 7000))?;
    let client = udp_socket(&a, "0.0.0.0:0")?;
    let seen = ask(&client, echo.addr, "hello", REPLY_TIMEOUT)
        .context("no echo came back through the NAT")?;
    assert_eq!(
        seen.ip(),
        IpAddr::V4(nat.public_addr),
        "B must see the NAT's address"
    );
    assert_ne!(seen.ip(), IpAddr::V4(a_addr));

    // 10% loss on A's link to the NAT's inside LAN, in the direction from A: requests are
    // lost, replies are not.
    let how = a.netem(&nat.inside, Netem::loss(10.0))?;
    assert_ne!(how, Impairment::Cleared);
    let started = Instant::now();
    let mut received = 0;
    for seq in 0..200 {
        if ask(
            &client,
            echo.addr,
            &format!("seq {seq}"),
            Duration::from_millis(30),
        )
        .is_some()
        {
            received += 1;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the loss loop overran"
        );
    }
    eprintln!(
        "10% loss on a's link to nat-a-in ({how:?}): {received}/200 echoes came back in {:?}",
        started.elapsed()
    );
    assert!(received > 0 && received < 200, "received {received} of 200");

    // Removing the impairment brings every datagram back.
    assert_eq!(a.netem(&nat.inside, Netem::default())?, Impairment::Cleared);
    for seq in 0..20 {
        ask(&client, echo.addr, &format!("clean {seq}"), REPLY_TIMEOUT)
            .with_context(|| format!("datagram {seq} lost after clearing the impairment"))?;
    }

    let names = net.namespaces();
    assert_eq!(names.len(), 4, "switch, b, nat-a, a: {names:?}");
    assert!(ip_netns_list()?.is_superset(&names.iter().cloned().collect()));
    drop(echo);
    drop(net);
    assert_all_gone(&names)
}

#[test]
fn teardown_happens_when_the_test_body_panics() -> Result<()> {
    require_root();
    let created: Mutex<Option<(Vec<String>, Child)>> = Mutex::new(None);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let net = TestNet::new().unwrap();
        let lan = net.lan("lan", "198.18.0.0/24").unwrap();
        let a = net.host("a").unwrap();
        a.attach(&lan).unwrap();
        let sleeper = a
            .command("sleep")
            .arg("60")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        *created.lock().unwrap() = Some((net.namespaces(), sleeper));
        panic!("deliberate panic with a test network alive");
    }));
    assert!(outcome.is_err(), "the body was meant to panic");
    let (names, mut sleeper) = created
        .into_inner()
        .unwrap()
        .ok_or_else(|| anyhow!("the body did not get far enough"))?;
    assert_eq!(names.len(), 2);
    assert_all_gone(&names)?;
    // The process started on the host was killed by the teardown.
    let status = wait_for_exit(&mut sleeper, Duration::from_secs(5))?;
    assert!(
        !status.success(),
        "sleep was meant to be killed, not finish: {status}"
    );
    Ok(())
}

/// The external ports a NAT of `kind` gives one inside socket toward two destinations
/// (two ports of one public host).
fn external_ports(kind: NatKind) -> Result<(u16, u16)> {
    let net = TestNet::new()?;
    let public = net.lan("public", "198.18.0.0/24")?;
    let b = net.host("b")?;
    let b_addr = b.attach(&public)?.addr;
    let nat = net.nat_router("nat", &public, kind)?;
    let a = net.host("a")?;
    a.attach(&nat.inside)?;
    let first = Echo::start(&b, SocketAddr::new(b_addr.into(), 7001))?;
    let second = Echo::start(&b, SocketAddr::new(b_addr.into(), 7002))?;
    let client = udp_socket(&a, "0.0.0.0:0")?;
    let one = ask(&client, first.addr, "one", REPLY_TIMEOUT).context("no echo from 7001")?;
    let two = ask(&client, second.addr, "two", REPLY_TIMEOUT).context("no echo from 7002")?;
    assert_eq!(one.ip(), IpAddr::V4(nat.public_addr));
    assert_eq!(two.ip(), IpAddr::V4(nat.public_addr));
    Ok((one.port(), two.port()))
}

#[test]
fn symmetric_nat_uses_a_new_port_per_destination() -> Result<()> {
    require_root();
    let (one, two) = external_ports(NatKind::Symmetric)?;
    eprintln!("symmetric NAT: external ports {one} and {two}");
    // Random ports: equal by chance about once in 64 000 runs.
    assert_ne!(one, two);
    Ok(())
}

#[test]
fn port_restricted_nat_keeps_one_port_for_every_destination() -> Result<()> {
    require_root();
    let (one, two) = external_ports(NatKind::PortRestrictedCone)?;
    eprintln!("port-restricted NAT: external ports {one} and {two}");
    assert_eq!(one, two);
    Ok(())
}

/// A hole-punching probe that reaches a port-restricted NAT before the inside socket has
/// sent to its sender must not move the socket's mapping: when the socket then sends to
/// that peer, the peer sees the same external port as everyone else (endpoint-independent
/// mapping), so the two sides' probes meet.
#[test]
fn an_unsolicited_packet_does_not_move_the_mapping() -> Result<()> {
    require_root();
    let net = TestNet::new()?;
    let public = net.lan("public", "198.18.0.0/24")?;
    let b = net.host("b")?;
    let b_addr = b.attach(&public)?.addr;
    let c = net.host("c")?;
    let c_addr = c.attach(&public)?.addr;
    let nat = net.nat_router("nat", &public, NatKind::PortRestrictedCone)?;
    let a = net.host("a")?;
    a.attach(&nat.inside)?;
    let echo_b = Echo::start(&b, SocketAddr::new(b_addr.into(), 7001))?;
    let client = udp_socket(&a, "0.0.0.0:0")?;
    let mapped = ask(&client, echo_b.addr, "one", REPLY_TIMEOUT).context("no echo from B")?;
    // C probes the mapping first (dropped by the NAT: A never sent to C) ...
    let probe = udp_socket(&c, &format!("{c_addr}:7003"))?;
    probe.send_to(b"probe", mapped)?;
    std::thread::sleep(Duration::from_millis(100));
    // ... then A sends to C from the same socket, which the probe's socket now answers.
    // (Closing it and binding the address again could fail: a process another test forks
    // at that moment holds the descriptor until it execs.)
    let echo_c = Echo::serve(probe)?;
    let seen = ask(&client, echo_c.addr, "two", REPLY_TIMEOUT).context("no echo from C")?;
    assert_eq!(
        seen, mapped,
        "C must see the socket's one external address, as B did"
    );
    Ok(())
}

/// A sends once to B through a NAT of `kind`, then C (never contacted) sends to the mapped
/// address. Returns the address A saw C's datagram come from, if it arrived.
fn third_party_reaches_mapping(kind: NatKind) -> Result<Option<SocketAddr>> {
    let net = TestNet::new()?;
    let public = net.lan("public", "198.18.0.0/24")?;
    let b = net.host("b")?;
    let b_addr = b.attach(&public)?.addr;
    let c = net.host("c")?;
    let c_addr = c.attach(&public)?.addr;
    let nat = net.nat_router("nat", &public, kind)?;
    let a = net.host("a")?;
    a.attach(&nat.inside)?;
    let echo = Echo::start(&b, SocketAddr::new(b_addr.into(), 7000))?;
    let client = udp_socket(&a, "0.0.0.0:0")?;
    let mapped = ask(&client, echo.addr, "open", REPLY_TIMEOUT).context("no echo from B")?;
    assert_eq!(mapped.ip(), IpAddr::V4(nat.public_addr));

    let stranger = udp_socket(&c, &format!("{c_addr}:7100"))?;
    stranger.send_to(b"from c", mapped)?;
    let from_c = receive_matching(&client, Duration::from_millis(500), |text, from| {
        (text == "from c").then_some(from)
    });
    if let Some(from) = from_c {
        assert_eq!(
            from,
            SocketAddr::new(c_addr.into(), 7100),
            "A must see C's address"
        );
        // A's answer goes back out through the same mapping.
        client.send_to(b"to c", from)?;
        let back = receive_matching(&stranger, REPLY_TIMEOUT, |text, from| {
            (text == "to c").then_some(from)
        })
        .context("A's answer did not reach C")?;
        assert_eq!(
            back, mapped,
            "C must see A's answer come from the mapped address"
        );
    }
    // Whatever happened to C, the endpoint A did contact still gets through.
    let again = ask(&client, echo.addr, "still open", REPLY_TIMEOUT)
        .context("the mapping to B stopped working")?;
    assert_eq!(again, mapped);
    Ok(from_c)
}

#[test]
fn full_cone_nat_lets_anyone_reach_the_mapping() -> Result<()> {
    require_root();
    let from_c = third_party_reaches_mapping(NatKind::FullCone)?;
    assert!(
        from_c.is_some(),
        "C could not reach A's mapped address through a full cone"
    );
    Ok(())
}

#[test]
fn port_restricted_nat_filters_unknown_senders() -> Result<()> {
    require_root();
    let from_c = third_party_reaches_mapping(NatKind::PortRestrictedCone)?;
    assert_eq!(from_c, None, "a port-restricted NAT let a stranger in");
    Ok(())
}

#[test]
fn command_as_user_runs_as_nobody_inside_the_namespace() -> Result<()> {
    require_root();
    let net = TestNet::new()?;
    let lan = net.lan("public", "198.18.0.0/24")?;
    let a = net.host("a")?;
    let att = a.attach(&lan)?;
    let output = |mut cmd: Command| -> Result<String> {
        let out = cmd.output()?;
        if !out.status.success() {
            bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    };
    let mut id = a.command_as_user("id");
    id.args(["-u"]);
    assert_eq!(output(id)?, "65534");
    let mut id = a.command_as_user("id");
    id.args(["-g"]);
    assert_eq!(output(id)?, "65534");
    let mut id = a.command_as_user("id");
    id.args(["-G"]);
    assert_eq!(output(id)?, "65534", "supplementary groups must be cleared");
    let mut caps = a.command_as_user("grep");
    caps.args(["^CapEff:", "/proc/self/status"]);
    assert_eq!(output(caps)?, "CapEff:\t0000000000000000");

    let mut addrs = a.command_as_user("ip");
    addrs.args(["-o", "addr", "show"]);
    let addrs = output(addrs)?;
    assert!(addrs.contains(&format!("{}/24", att.addr)), "{addrs}");
    assert!(addrs.contains(&format!("{}/64", att.addr6)), "{addrs}");
    assert!(
        !addrs.contains("eth0"),
        "the root namespace's interfaces leak: {addrs}"
    );

    // Unprivileged ICMP echo sockets are allowed, as on a systemd distribution.
    let mut range = a.command_as_user("cat");
    range.arg("/proc/sys/net/ipv4/ping_group_range");
    assert_eq!(
        output(range)?.split_whitespace().collect::<Vec<_>>(),
        ["0", "2147483647"]
    );

    // The root variant is root, in the same namespace.
    let mut id = a.command("id");
    id.arg("-u");
    assert_eq!(output(id)?, "0");
    Ok(())
}

#[test]
fn ipv6_works_at_once_and_run_binds_in_the_namespace() -> Result<()> {
    require_root();
    let net = TestNet::new()?;
    let lan = net.lan("public", "198.18.0.0/24")?;
    let a = net.host("a")?;
    let b = net.host("b")?;
    let a6 = a.attach(&lan)?.addr6;
    let b_att = b.attach(&lan)?;
    // No wait for duplicate address detection: the addresses are usable immediately.
    let echo = Echo::start(&b, SocketAddr::new(b_att.addr6.into(), 7000))?;
    let client = udp_socket(&a, &format!("[{a6}]:0"))?;
    let seen = ask(&client, echo.addr, "v6", REPLY_TIMEOUT).context("no IPv6 echo")?;
    assert_eq!(seen.ip(), IpAddr::V6(a6));
    // The address exists in b's namespace, not in the test process's own.
    let here = UdpSocket::bind(SocketAddr::new(b_att.addr.into(), 0));
    assert!(
        here.is_err(),
        "{} must not exist in the root namespace",
        b_att.addr
    );
    Ok(())
}

/// Whether this kernel has the netem qdisc (probed in a host of `net`).
fn kernel_has_netem(host: &Host<'_>) -> Result<bool> {
    let probe = host
        .command("tc")
        .args(["qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"])
        .output()?;
    if probe.status.success() {
        host.ip(["link", "show", "lo"])?; // still there
        let _ = host
            .command("tc")
            .args(["qdisc", "del", "dev", "lo", "root"])
            .status();
        return Ok(true);
    }
    let stderr = String::from_utf8_lossy(&probe.stderr);
    assert!(
        stderr.contains("qdisc kind is unknown"),
        "tc netem probe: {stderr}"
    );
    Ok(false)
}

#[test]
fn netem_delay_reordering_and_clearing() -> Result<()> {
    require_root();
    let net = TestNet::new()?;
    let lan = net.lan("public", "198.18.0.0/24")?;
    let a = net.host("a")?;
    let b = net.host("b")?;
    a.attach(&lan)?;
    let b_addr = b.attach(&lan)?.addr;
    let echo = Echo::start(&b, SocketAddr::new(b_addr.into(), 7000))?;
    let client = udp_socket(&a, "0.0.0.0:0")?;
    ask(&client, echo.addr, "warm-up", REPLY_TIMEOUT).context("no echo")?;
    let expected = if kernel_has_netem(&a)? {
        Impairment::Netem
    } else {
        Impairment::Relay
    };

    // 40 ms each way on a's link: a round trip takes at least 80 ms.
    let delay = Netem {
        delay_ms: 40,
        direction: Direction::Both,
        ..Netem::default()
    };
    assert_eq!(a.netem(&lan, delay)?, expected);
    let started = Instant::now();
    ask(&client, echo.addr, "slow", REPLY_TIMEOUT).context("no echo through the delay")?;
    let rtt = started.elapsed();
    eprintln!("delay 40 ms both ways ({expected:?}): round trip {rtt:?}");
    assert!(rtt >= Duration::from_millis(80), "round trip {rtt:?}");
    assert!(rtt < Duration::from_millis(500), "round trip {rtt:?}");

    // Half the datagrams skip a 30 ms delay: they arrive out of order, none is lost.
    let reorder = Netem {
        delay_ms: 30,
        reorder_pct: 50.0,
        ..Netem::default()
    };
    assert_eq!(a.netem(&lan, reorder)?, expected);
    let sink = udp_socket(&b, &format!("{b_addr}:7100"))?;
    for seq in 0..40u8 {
        client.send_to(&[seq], sink.local_addr()?)?;
    }
    let mut order = Vec::new();
    while order.len() < 40 {
        let got = receive_matching(&sink, Duration::from_secs(1), |text, _| text.bytes().next());
        match got {
            Some(seq) => order.push(seq),
            None => bail!("only {} of 40 datagrams arrived: {order:?}", order.len()),
        }
    }
    eprintln!("arrival order with reorder 50%: {order:?}");
    assert!(
        order.windows(2).any(|w| w[0] > w[1]),
        "nothing was reordered"
    );
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..40).collect::<Vec<u8>>());

    // Clearing gives the plain link back.
    assert_eq!(a.netem(&lan, Netem::default())?, Impairment::Cleared);
    let started = Instant::now();
    ask(&client, echo.addr, "fast", REPLY_TIMEOUT).context("no echo after clearing")?;
    assert!(
        started.elapsed() < Duration::from_millis(40),
        "{:?}",
        started.elapsed()
    );
    Ok(())
}

#[test]
fn tcp_bulk_transfer_survives_a_delayed_jittery_link() -> Result<()> {
    require_root();
    let net = TestNet::new()?;
    let lan = net.lan("public", "198.18.0.0/24")?;
    let a = net.host("a")?;
    let b = net.host("b")?;
    a.attach(&lan)?;
    let b_addr = b.attach(&lan)?.addr;
    a.netem(
        &lan,
        Netem {
            delay_ms: 5,
            jitter_ms: 1,
            direction: Direction::Both,
            ..Netem::default()
        },
    )?;
    let listener = b.run(move || TcpListener::bind((b_addr, 8000)))??;
    const LEN: usize = 4 << 20;
    let receiver = std::thread::spawn(move || -> std::io::Result<(usize, u64)> {
        let (mut conn, _) = listener.accept()?;
        conn.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut buf = vec![0u8; 1 << 16];
        let (mut total, mut sum) = (0usize, 0u64);
        loop {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                return Ok((total, sum));
            }
            total += n;
            sum = buf[..n]
                .iter()
                .fold(sum, |s, &x| s.wrapping_mul(31).wrapping_add(u64::from(x)));
        }
    });
    let data: Vec<u8> = (0..LEN).map(|i| (i * 7 % 251) as u8).collect();
    let expected = data
        .iter()
        .fold(0u64, |s, &x| s.wrapping_mul(31).wrapping_add(u64::from(x)));
    let started = Instant::now();
    let mut conn = a.run(move || TcpStream::connect((b_addr, 8000)))??;
    conn.set_write_timeout(Some(Duration::from_secs(20)))?;
    conn.write_all(&data)?;
    drop(conn);
    let (total, sum) = receiver
        .join()
        .map_err(|_| anyhow!("the receiver panicked"))??;
    eprintln!(
        "4 MiB over TCP across a 5±1 ms link in {:?}",
        started.elapsed()
    );
    assert_eq!(total, LEN);
    assert_eq!(sum, expected, "the bytes arrived changed");
    Ok(())
}

#[test]
fn names_are_unique_per_test_and_carry_the_pid() -> Result<()> {
    require_root();
    let one = TestNet::new()?;
    let two = TestNet::new()?;
    assert_ne!(one.id(), two.id());
    let pid = format!("-{}-", std::process::id());
    for net in [&one, &two] {
        assert!(
            net.id().starts_with("ztt") && net.id().contains(&pid),
            "{}",
            net.id()
        );
        let h = net.host("same-name")?;
        assert!(h.netns().starts_with(net.id()));
    }
    // Host names must fit interface names of the router's inside LAN.
    assert!(matches!(
        one.host("a-name-that-is-too-long"),
        Err(TestNetError::InvalidName { .. })
    ));
    assert!(matches!(
        one.lan("x", "10.0.0.0/24"),
        Err(TestNetError::InvalidAddress { .. })
    ));
    assert!(matches!(
        one.lan("x", "192.168.1.0/24"),
        Err(TestNetError::InvalidAddress { .. })
    ));
    let x = one.lan("x", "198.18.0.0/24")?;
    // A LAN of one network cannot be used from another's host.
    let stranger = two.host("stranger")?;
    assert!(matches!(
        stranger.attach(&x),
        Err(TestNetError::Attachment { .. })
    ));
    assert!(matches!(
        one.lan("all", "198.18.9.0/24"),
        Err(TestNetError::InvalidName { .. })
    ));
    assert!(matches!(
        one.lan("y", "198.18.0.128/25"),
        Err(TestNetError::InvalidAddress { .. })
    ));
    Ok(())
}

#[test]
fn stale_namespaces_of_dead_processes_are_removed() -> Result<()> {
    require_root();
    let live = TestNet::new()?;
    live.host("alive")?;
    // A name whose creator is "this pid with another start time": a process that is gone.
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let rest = &stat[stat.rfind(')').context("odd /proc/self/stat")? + 1..];
    let start: u64 = rest
        .split_whitespace()
        .nth(19)
        .context("no start time")?
        .parse()?;
    let stale = format!("ztt-{}-{}-0-stale", std::process::id(), start + 1);
    // The orphan makes its own namespace first (unshare(1)) and only then gets the stale
    // name (`ip netns attach`), so whichever test process cleans up first finds it inside.
    let mut orphan = Command::new("unshare")
        .args(["--net", "sleep", "60"])
        .spawn()?;
    let own_netns = std::fs::read_link("/proc/self/ns/net")?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_link(format!("/proc/{}/ns/net", orphan.id()))? == own_netns {
        assert!(
            Instant::now() < deadline,
            "unshare never made its namespace"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = Command::new("ip")
        .args(["netns", "attach", &stale, &orphan.id().to_string()])
        .status()?;
    assert!(status.success());
    cleanup_stale_namespaces()?;
    let listed = ip_netns_list()?;
    assert!(!listed.contains(&stale), "{stale} survived the cleanup");
    for name in live.namespaces() {
        assert!(
            listed.contains(&name),
            "cleanup removed the live namespace {name}"
        );
    }
    let status = wait_for_exit(&mut orphan, Duration::from_secs(5))?;
    assert!(
        !status.success(),
        "the process in the stale namespace was not killed"
    );
    Ok(())
}

#[test]
fn nat_routers_nest_and_spawned_threads_live_in_the_host() -> Result<()> {
    require_root();
    let net = TestNet::new()?;
    let public = net.lan("public", "198.18.0.0/24")?;
    let b = net.host("b")?;
    let b_addr = b.attach(&public)?.addr;
    // A carrier-grade NAT in front of a home NAT: the home router's upstream is the
    // carrier's inside LAN, and its default route goes through the carrier.
    let carrier = net.nat_router("cgn", &public, NatKind::PortRestrictedCone)?;
    let home = net.nat_router("home", &carrier.inside, NatKind::Symmetric)?;
    assert_eq!(carrier.public_addr, carrier.host.addr(&public).unwrap());
    assert_eq!(home.public_addr, home.host.addr(&carrier.inside).unwrap());
    let a = net.host("a")?;
    let a_addr = a.attach(&home.inside)?.addr;
    let echo = Echo::start(&b, SocketAddr::new(b_addr.into(), 7000))?;
    let client = udp_socket(&a, "0.0.0.0:0")?;
    let seen = ask(&client, echo.addr, "nested", REPLY_TIMEOUT).context("no echo")?;
    assert_eq!(seen.ip(), IpAddr::V4(carrier.public_addr));

    // A thread started with `spawn` is in A's namespace: it can bind A's address, which
    // does not exist anywhere else.
    let bound = a
        .spawn(move || UdpSocket::bind(SocketAddr::new(a_addr.into(), 0)).map(|_| ()))?
        .join()
        .map_err(|_| anyhow!("the spawned thread panicked"))?;
    bound.context("binding A's address from a thread spawned in A")?;
    Ok(())
}
