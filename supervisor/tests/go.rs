//! A static Go binary (`CGO_ENABLED=0`: raw system calls, the Go netpoller with
//! edge-triggered epoll, SIGURG preemption) under the supervisor: net/http with
//! keep-alive and a UDP echo, over loopback and over a netstack Stack.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command as Proc;
use std::sync::Arc;

use common::*;
use netstack::{Stack, StackConfig};
use supervisor::backend::Policy;
use supervisor::network::Networks;

fn build_go(s: &Scratch) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go/gonet.go");
    let out = s.path("gonet");
    // A build cache next to the test binaries, reused across runs.
    let cache = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join("gocache");
    let st = Proc::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(&src)
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", &cache)
        .env("GOFLAGS", "-mod=mod")
        .env("GO111MODULE", "off")
        .status()
        .expect("the Go toolchain is needed for this test (Debian package golang-go)");
    assert!(st.success(), "go build failed");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_go_http_keepalive_and_udp_over_loopback() {
    let s = Scratch::new();
    let exe = build_go(&s);
    let status = run(&command(&s, &exe, &["127.0.0.1"])).await;
    assert_ok(
        &s,
        status,
        &[
            "http 20 requests over 1 connection(s)",
            "udp echo ok",
            "done",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_go_http_keepalive_and_udp_on_a_netstack() {
    let s = Scratch::new();
    let exe = build_go(&s);
    let mut c = StackConfig::new([0x02, 0, 0, 0, 0, 1]);
    c.ipv4.push(("10.7.0.1".parse().unwrap(), 24));
    let (stack, link) = Stack::new(c);
    let cmd = command(&s, &exe, &["10.7.0.1"]);
    let status = run_with(
        &cmd,
        Policy::default(),
        Arc::new(Networks::new(vec![stack])),
    )
    .await;
    drop(link);
    assert_ok(
        &s,
        status,
        &[
            "http 20 requests over 1 connection(s)",
            "udp echo ok",
            "done",
        ],
    );
}
