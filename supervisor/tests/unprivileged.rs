//! The supervisor itself needs no privilege, and works inside what Docker's default
//! seccomp profile allows. When the tests run as root, this test re-runs itself as uid
//! 65534 (through `setpriv`); the inner run installs an outer filter like Docker's
//! (`pidfd_getfd`, `kcmp`, `process_madvise`, `process_vm_readv`, `process_vm_writev` →
//! EPERM, `clone3` → ENOSYS, as Docker 20.10's profile does without `CAP_SYS_PTRACE`) on
//! itself and then supervises programs, whose memory it then reads through
//! `/proc/PID/mem`.
mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command as Proc;

use common::*;

const INNER: &str = "SUPERVISOR_TEST_INNER";

/// Docker-like outer filter: the calls the default profile denies to a container
/// without `CAP_SYS_PTRACE`/`CAP_SYS_ADMIN`.
fn install_docker_like_filter() {
    const ARCH_X86_64: u32 = 0xC000_003E;
    let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    let ld = |k| libc::sock_filter {
        code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k, jt, jf| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let ret = |k| libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let prog = [
        ld(4),
        jeq(ARCH_X86_64, 1, 0),
        ret(libc::SECCOMP_RET_KILL_PROCESS),
        ld(0),
        jeq(libc::SYS_pidfd_getfd as u32, 6, 0),
        jeq(libc::SYS_kcmp as u32, 5, 0),
        jeq(libc::SYS_process_madvise as u32, 4, 0),
        jeq(libc::SYS_process_vm_readv as u32, 3, 0),
        jeq(libc::SYS_process_vm_writev as u32, 2, 0),
        jeq(libc::SYS_clone3 as u32, 2, 0),
        ret(libc::SECCOMP_RET_ALLOW),
        ret(eperm),
        ret(enosys),
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    nix::sys::prctl::set_no_new_privs().expect("no_new_privs");
    // SAFETY: `fprog` points at `prog`, a valid program that outlives the call; TSYNC
    // applies it to every thread of this test process.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            &fprog as *const libc::sock_fprog,
        )
    };
    assert_eq!(
        ret,
        0,
        "installing the outer filter failed: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a raw syscall with integer arguments, expected to be refused.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, 0, 0, 0) };
    assert_eq!(
        (r, nix::errno::Errno::last()),
        (-1, nix::errno::Errno::EPERM)
    );
}

fn inner() {
    assert!(!is_root(), "the inner run must be unprivileged");
    install_docker_like_filter();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = std::path::PathBuf::from(std::env::var("SUPERVISOR_TEST_DIR").unwrap());
    let out = dir.join("inner.txt");
    for (prog, args, virt) in [
        ("tcp_blocking", vec!["127.0.0.1"], false),
        ("nonblocking", vec!["10.77.0.1"], true),
        ("servers", vec!["workers", "10.77.0.1"], true),
    ] {
        let _ = std::fs::remove_file(&out);
        let cmd = supervisor::launch::Command::new(dir.join(prog))
            .arg(&out)
            .args(&args);
        let status = rt.block_on(async {
            if virt {
                run_virtual(&cmd).await
            } else {
                run(&cmd).await
            }
        });
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        assert_eq!(
            status,
            supervisor::launch::ExitStatus::Exited(0),
            "{prog}: {text}"
        );
        println!("inner {prog} ok");
    }
}

#[test]
fn the_supervisor_runs_unprivileged_under_a_docker_like_profile() {
    if std::env::var_os(INNER).is_some() {
        return inner();
    }
    let s = Scratch::new();
    for p in ["tcp_blocking", "nonblocking", "servers"] {
        s.compile(p);
    }
    let exe = std::env::current_exe().unwrap();
    let mut cmd = if is_root() {
        // The test binary must be reachable by nobody; it lives in the target dir.
        let mode = std::fs::metadata(&exe).unwrap().permissions().mode();
        assert_ne!(
            mode & 0o001,
            0,
            "test binary not executable by others: {}",
            exe.display()
        );
        let mut c = Proc::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&exe);
        c
    } else {
        Proc::new(&exe)
    };
    let out = cmd
        .args([
            "--exact",
            "the_supervisor_runs_unprivileged_under_a_docker_like_profile",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INNER, "1")
        .env("SUPERVISOR_TEST_DIR", s.dir.path())
        .output()
        .expect("setpriv (util-linux) runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "inner run failed:\n{stdout}\n{stderr}"
    );
    for p in ["tcp_blocking", "nonblocking", "servers"] {
        assert!(
            stdout.contains(&format!("inner {p} ok")),
            "{p} did not run:\n{stdout}\n{stderr}"
        );
    }
}
