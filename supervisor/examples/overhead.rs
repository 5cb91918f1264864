//! Overhead of running under the supervisor, measured against native runs in the same
//! invocation: `cargo run -p supervisor --release --example overhead`.
//!
//! Prints a table: a CPU-bound loop (no trapped calls), `socket()+connect()+close()` to a
//! loopback listener (two trapped calls and a kernel-socket swap), and `socket()+close()`
//! alone (one trapped call and an fd injection).
use std::path::Path;
use std::process::Command as Proc;
use std::sync::Arc;
use std::time::Duration;

use supervisor::backend::{NoNetwork, Policy};
use supervisor::launch::{self, Command};

const PROGRAM: &str = r#"
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv) {
    int n = atoi(argv[2]);
    double t0 = now();
    if (!strcmp(argv[1], "cpu")) {
        volatile unsigned long x = 1;
        for (long i = 0; i < (long)n * 1000000; i++) x = x * 6364136223846793005UL + 1;
    } else {
        int ls = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {0};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof a;
        bind(ls, (struct sockaddr *)&a, sizeof a);
        listen(ls, 4096);
        getsockname(ls, (struct sockaddr *)&a, &len);
        t0 = now();
        for (int i = 0; i < n; i++) {
            int c = socket(AF_INET, SOCK_STREAM, 0);
            if (!strcmp(argv[1], "connect")) {
                if (connect(c, (struct sockaddr *)&a, sizeof a) != 0) { perror("connect"); return 1; }
                int s = accept(ls, NULL, NULL);
                close(s);
            }
            close(c);
        }
    }
    fprintf(stderr, "%f\n", (now() - t0) / n);
    return 0;
}
"#;

fn per_op(out: &str) -> Duration {
    Duration::from_secs_f64(out.trim().parse::<f64>().unwrap_or(f64::NAN))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("supervisor-overhead-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let src = dir.join("bench.c");
    let exe = dir.join("bench");
    std::fs::write(&src, PROGRAM)?;
    let ok = Proc::new("cc")
        .args(["-O2", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()?
        .success();
    assert!(ok, "cc failed");
    let rt = tokio::runtime::Runtime::new()?;
    println!(
        "{:<28} {:>14} {:>16} {:>8}",
        "case", "native", "supervised", "ratio"
    );
    for (case, n, unit) in [
        ("cpu", 300, "per 1M iters"),
        ("socket", 2000, "per call"),
        ("connect", 2000, "per call"),
    ] {
        let native = Proc::new(&exe).args([case, &n.to_string()]).output()?;
        let native = per_op(&String::from_utf8_lossy(&native.stderr));
        let sup = supervised(&rt, &exe, case, n, &dir)?;
        println!(
            "{:<28} {:>14?} {:>16?} {:>8.2}",
            format!("{case} ({unit})"),
            native,
            sup,
            sup.as_secs_f64() / native.as_secs_f64()
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn supervised(
    rt: &tokio::runtime::Runtime,
    exe: &Path,
    case: &str,
    n: u32,
    dir: &Path,
) -> std::io::Result<Duration> {
    // The program reports on stderr; send it to a file through a shell redirect.
    let out = dir.join(format!("{case}.txt"));
    let script = format!("exec {} {case} {n} 2>{}", exe.display(), out.display());
    let cmd = Command::new("/bin/sh").args(["-c", &script]);
    let status = rt.block_on(launch::run(&cmd, Policy::default(), Arc::new(NoNetwork)));
    assert!(
        matches!(status, Ok(launch::ExitStatus::Exited(0))),
        "{status:?}"
    );
    Ok(per_op(&std::fs::read_to_string(out)?))
}
