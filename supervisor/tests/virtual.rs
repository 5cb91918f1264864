//! The virtual-network path of the supervisor (socketpair ends pumped to backend streams,
//! listener tokens, non-blocking connect edges), over a stand-in backend that carries the
//! virtual network 10.77.0.0/16 on kernel loopback (`common::LoopbackNet`).
mod common;

use common::*;
use supervisor::launch::ExitStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_tcp_client_and_server_on_the_virtual_network() {
    let s = Scratch::new();
    let prog = s.compile("tcp_blocking");
    let status = run_virtual(&command(&s, &prog, &["10.77.0.1"])).await;
    assert_ok(
        &s,
        status,
        &[
            "listening",
            "accepted",
            "server got ping",
            "client got pong",
            "done",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonblocking_connect_epoll_et_accept4_names_half_close_and_refused() {
    let s = Scratch::new();
    let prog = s.compile("nonblocking");
    let status = run_virtual(&command(&s, &prog, &["10.77.0.1"])).await;
    assert_ok(
        &s,
        status,
        &[
            "EINPROGRESS",
            "client connected",
            "accepted",
            "half-close ok",
            "refused ok",
        ],
    );
}

/// nginx registers its upstream socket with epoll before `connect`: the registration
/// must survive a non-blocking virtual connect (the program's end is kept, not replaced).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epoll_registration_made_before_a_nonblocking_connect_gets_its_edges() {
    let s = Scratch::new();
    let prog = s.compile("epoll_first");
    let status = run_virtual(&command(&s, &prog, &["10.77.0.1"])).await;
    assert_ok(&s, status, &["EINPROGRESS", "proxied", "refused ok"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_still_works_with_a_virtual_network() {
    let s = Scratch::new();
    let prog = s.compile("nonblocking");
    let status = run_virtual(&command(&s, &prog, &["127.0.0.1"])).await;
    assert_ok(
        &s,
        status,
        &[
            "client connected",
            "accepted",
            "half-close ok",
            "refused ok",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_virtual_hosts_are_unreachable_and_host_addresses_stay_closed() {
    let s = Scratch::new();
    let prog = s.compile("misc");
    let status = run_virtual(&command(&s, &prog, &["unreach", "192.0.2.99", "80"])).await;
    assert_ok(&s, status, &["ENETUNREACH"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_listener_serves_the_virtual_network_and_loopback() {
    let s = Scratch::new();
    let prog = s.compile("servers");
    let status = run_virtual(&command(&s, &prog, &["wildcard", "10.77.0.1"])).await;
    assert_ok(&s, status, &["peer 10.77.0.1", "peer 127.0.0.1", "done"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_forked_workers_share_a_listener_and_serve_100_threads() {
    let s = Scratch::new();
    let prog = s.compile("servers");
    let status = run_virtual(&command(&s, &prog, &["workers", "10.77.0.1"])).await;
    assert_ok(&s, status, &["100 clients served", "done"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_accept_survives_a_sigurg_storm() {
    let s = Scratch::new();
    let prog = s.compile("servers");
    let status = run_virtual(&command(&s, &prog, &["sigurg", "10.77.0.1"])).await;
    assert_ok(&s, status, &["accept survived 1 SIGURG", "done"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_unconnected_connected_mmsg_on_the_virtual_network() {
    let s = Scratch::new();
    let prog = s.compile("udp");
    let status = run_virtual(&command(&s, &prog, &["10.77.0.1"])).await;
    assert_ok(
        &s,
        status,
        &[
            "unconnected ok",
            "connected ok",
            "trunc ok",
            "mmsg ok",
            "done",
        ],
    );
}

/// The kernel checks nothing on the virtual network: the supervisor checks the caller's
/// own right to a port below 1024 (`ip_unprivileged_port_start`, CAP_NET_BIND_SERVICE).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_ports_on_the_virtual_network_need_the_programs_own_right() {
    if !is_root() && unprivileged_port_start() == 0 {
        eprintln!("skipped: every port is unprivileged here (ip_unprivileged_port_start 0)");
        return;
    }
    let s = Scratch::new();
    let prog = s.compile("misc");
    for addr in ["10.77.0.1", "0.0.0.0"] {
        let status = run_virtual(&command(&s, &prog, &["privport", addr])).await;
        assert_ok(&s, status, &["privileged ports refused"]);
    }
}

fn unprivileged_port_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
}

/// Blocked emulated calls are interrupted by signals the program handles: EINTR without
/// SA_RESTART, a restart with it, EINTR under SO_RCVTIMEO whatever the flags, and a
/// SIGTERM after a handled SIGCHLD ends a daemon blocked in accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handled_signals_interrupt_blocked_calls_as_on_linux() {
    let s = Scratch::new();
    let prog = s.compile("interrupt");
    let status = run_virtual(&command(&s, &prog, &["10.77.0.1"])).await;
    let out = s.read_output();
    assert_eq!(
        status,
        ExitStatus::Signaled(libc::SIGTERM),
        "the daemon must end by SIGTERM; output:\n{out}"
    );
    for want in [
        "accept EINTR",
        "accept restarted",
        "timed accept EINTR",
        "recv EINTR",
        "blocking until SIGTERM",
    ] {
        assert!(
            out.lines().any(|l| l == want),
            "missing {want:?} in:\n{out}"
        );
    }
}
