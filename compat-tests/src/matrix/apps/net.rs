//! Network tools: iperf3, dnsmasq + dig, ping.

use std::time::Duration;

use crate::matrix::stage::{expect_eq, MatrixError, Side, Stage, Who};
use crate::matrix::{Finding, CLIENT_TIMEOUT, SERVER_TIMEOUT};

/// A number at `path` (keys separated by '.') in iperf3's JSON report. When it is missing,
/// the report's own `error` (iperf3 puts the reason a test failed there) is the finding.
fn json_number(json: &serde_json::Value, path: &str) -> Result<f64, MatrixError> {
    path.split('.')
        .try_fold(json, |v, key| v.get(key))
        .and_then(serde_json::Value::as_f64)
        .ok_or_else(|| {
            let got = match json.get("error").and_then(serde_json::Value::as_str) {
                Some(error) => format!("none; iperf3 reported: {error}"),
                None => "none".to_string(),
            };
            MatrixError::check("iperf3 JSON report", format!("a number at {path}"), got)
        })
}

pub(super) fn iperf3(stage: &mut Stage<'_, '_>) -> Result<Finding, MatrixError> {
    const PORT: u16 = 5201;
    let server = stage.command(
        Side::Server,
        &Who::Nobody,
        "iperf3",
        ["-s", "-p", "5201", "--forceflush"],
    );
    stage.start_server("iperf3-server", server)?;
    // Ready once it says so (after its listen returned): a probe connection would be
    // taken for a test, fail, and make iperf3 close its listener and listen again, and a
    // client arriving in between is refused.
    let ready = format!("Server listening on {PORT} (test #1)");
    stage.wait_output("iperf3-server", &ready, SERVER_TIMEOUT)?;
    let addr = stage.server_addr().to_string();
    let mut finding = Finding::default();

    let mut tcp = stage.command(
        Side::Client,
        &Who::Nobody,
        "iperf3",
        [
            "-c",
            &addr,
            "-p",
            "5201",
            "-t",
            "3",
            "-J",
            "--connect-timeout",
            "5000",
        ],
    );
    let ran = stage.run_ok("iperf3 TCP client", &mut tcp, CLIENT_TIMEOUT)?;
    let json: serde_json::Value = serde_json::from_str(&ran.stdout)
        .map_err(|e| MatrixError::check("iperf3 TCP report", "JSON", e.to_string()))?;
    let bytes = json_number(&json, "end.sum_received.bytes")?;
    let bps = json_number(&json, "end.sum_received.bits_per_second")?;
    if bytes < 1_000_000.0 {
        return Err(MatrixError::check(
            "iperf3 TCP bytes received",
            "at least 1 MB",
            format!("{bytes}"),
        ));
    }
    finding.note(format!("TCP {:.0} Mbit/s", bps / 1e6));

    stage.check_alive("iperf3-server")?;
    // iperf3 listens anew after each test.
    let ready = format!("Server listening on {PORT} (test #2)");
    stage.wait_output("iperf3-server", &ready, SERVER_TIMEOUT)?;
    let mut udp = stage.command(
        Side::Client,
        &Who::Nobody,
        "iperf3",
        [
            "-c",
            &addr,
            "-p",
            "5201",
            "-u",
            "-b",
            "100M",
            "-t",
            "3",
            "-J",
            "--connect-timeout",
            "5000",
        ],
    );
    let ran = stage.run_ok("iperf3 UDP client", &mut udp, CLIENT_TIMEOUT)?;
    let json: serde_json::Value = serde_json::from_str(&ran.stdout)
        .map_err(|e| MatrixError::check("iperf3 UDP report", "JSON", e.to_string()))?;
    let packets = json_number(&json, "end.sum.packets")?;
    let lost = json_number(&json, "end.sum.lost_percent")?;
    let bps = json_number(&json, "end.sum.bits_per_second")?;
    if packets < 100.0 {
        return Err(MatrixError::check(
            "iperf3 UDP datagrams",
            "at least 100",
            format!("{packets}"),
        ));
    }
    if lost > 50.0 {
        return Err(MatrixError::check(
            "iperf3 UDP loss",
            "at most 50%",
            format!("{lost:.1}%"),
        ));
    }
    if lost > 5.0 {
        finding.marginal(format!("UDP loss {lost:.1}% at 100 Mbit/s"));
    }
    finding.note(format!(
        "UDP 100 Mbit/s offered: {:.0} Mbit/s, {packets:.0} datagrams, {lost:.2}% lost",
        bps / 1e6
    ));
    Ok(finding)
}

pub(super) fn dnsmasq(stage: &mut Stage<'_, '_>) -> Result<Finding, MatrixError> {
    const PORT: u16 = 10053;
    let hosts = stage.write(
        "hosts",
        "198.18.77.7 www.matrix.test\n198.18.77.8 db.matrix.test\nfd00:77::7 www.matrix.test\n",
    )?;
    let server = stage.command(
        Side::Server,
        &Who::Nobody,
        "dnsmasq",
        [
            "--keep-in-foreground".to_string(),
            "--conf-file=/dev/null".into(),
            format!("--port={PORT}"),
            "--no-resolv".into(),
            "--no-hosts".into(),
            format!("--addn-hosts={}", hosts.display()),
            "--pid-file=".into(),
            "--log-facility=-".into(),
            "--log-queries".into(),
        ],
    );
    stage.start_server("dnsmasq", server)?;
    stage.wait_tcp("dnsmasq", Side::Server, PORT, SERVER_TIMEOUT)?;
    let addr = format!("@{}", stage.server_addr());
    let mut finding = Finding::default();
    for (transport, rtype, name, want) in [
        ("+notcp", "A", "www.matrix.test", "198.18.77.7"),
        ("+tcp", "A", "db.matrix.test", "198.18.77.8"),
        ("+tcp", "AAAA", "www.matrix.test", "fd00:77::7"),
        ("+notcp", "AAAA", "www.matrix.test", "fd00:77::7"),
    ] {
        let mut dig = stage.command(
            Side::Client,
            &Who::Nobody,
            "dig",
            [
                &addr, "-p", "10053", transport, "+short", "+time=2", "+tries=3", rtype, name,
            ],
        );
        let what = format!("dig {transport} {rtype} {name}");
        let ran = stage.run_ok(&what, &mut dig, Duration::from_secs(30))?;
        expect_eq(&what, ran.stdout.trim(), want)?;
    }
    finding.note("A over UDP, A and AAAA over TCP, AAAA over UDP answered from the hosts file");
    Ok(finding)
}

pub(super) fn ping(stage: &mut Stage<'_, '_>) -> Result<Finding, MatrixError> {
    const COUNT: u32 = 10;
    // What answers the echo requests is the server member's network stack. Natively that
    // is its kernel; under ztrun it is the stack of a `ztrun` running there, which exists
    // only while a program runs under it: keep one online (it prints once it has joined,
    // since ztrun starts the program only then) for the whole check.
    let online = stage.command(
        Side::Server,
        &Who::Nobody,
        "/bin/sh",
        ["-c", "echo online && exec sleep 120"],
    );
    stage.start_server("online", online)?;
    stage.wait_output("online", "online", SERVER_TIMEOUT)?;
    let addr = stage.server_addr().to_string();
    let count = COUNT.to_string();
    let mut ping = stage.command(
        Side::Client,
        &Who::Nobody,
        "setpriv",
        [
            "--no-new-privs",
            "ping",
            "-n",
            "-c",
            &count,
            "-i",
            "0.2",
            "-W",
            "2",
            "-w",
            "20",
            &addr,
        ],
    );
    let ran = stage.run("ping", &mut ping, Duration::from_secs(30))?;
    let summary = ran
        .stdout
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_default()
        .to_owned();
    let received: u32 = summary
        .split(", ")
        .find_map(|part| part.strip_suffix(" received"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    if received == 0 {
        return Err(MatrixError::check(
            "ping replies",
            format!("{COUNT} received"),
            format!("{summary:?} {}", ran.stderr_tail()),
        ));
    }
    let mut finding = Finding::default();
    if received < COUNT {
        finding.marginal(format!("{received}/{COUNT} echo replies"));
    }
    let rtt = ran
        .stdout
        .lines()
        .find(|l| l.starts_with("rtt"))
        .and_then(|l| l.split(" = ").nth(1))
        .map(|v| format!(", rtt min/avg/max/mdev {v}"))
        .unwrap_or_default();
    finding.note(format!(
        "{received}/{COUNT} echo replies over an unprivileged ICMP socket{rtt}"
    ));
    Ok(finding)
}
