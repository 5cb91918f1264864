//! The seccomp filter, written by hand as classic BPF.
//!
//! Why by hand rather than libseccomp: the program is twenty-odd instructions, it must be
//! built in the parent and installed by a child that may only make async-signal-safe
//! calls (a raw `seccomp(2)`), and a hand-written program can be interpreted by the unit
//! tests below, which is how we prove what it traps and that it cannot trap the launch
//! hand-off.
//!
//! The program, in order:
//!
//! 1. `arch != AUDIT_ARCH_X86_64` → `ERRNO(ENOSYS)`. An i386 (`int 0x80`) call can never
//!    reach the kernel's socket code behind our back.
//! 2. `nr >= 0x40000000` (the x32 ABI bit) → `ERRNO(ENOSYS)`.
//! 3. `io_uring_setup` → `ERRNO(ENOSYS)`: io_uring would perform socket operations
//!    without system calls we can see.
//! 4. `socket` with a domain (low 32 bits of arg 0, as the kernel reads an `int`) of
//!    `AF_INET`, `AF_INET6` or `AF_NETLINK` (route sockets are proxied, netlink.rs) →
//!    `USER_NOTIF`; `AF_UNIX` and `AF_ALG` (local only) run natively; `AF_PACKET` and
//!    `AF_KEY` → `ERRNO(EPERM)`, as for a process without `CAP_NET_RAW`/`CAP_NET_ADMIN`;
//!    every other family → `ERRNO(EAFNOSUPPORT)`, as on a kernel built without it.
//!    Every family is decided here: nothing reaches the host network behind our back
//!    (AF_VSOCK, AF_SMC, AF_TIPC, AF_XDP, ...).
//! 5. `setns` into a network namespace (`nstype` 0, which may be one, or with
//!    `CLONE_NEWNET` set) → `ERRNO(EPERM)`, as for a process without `CAP_SYS_ADMIN`
//!    there: a namespace the program could enter (another of its uid's user namespaces,
//!    e.g. a rootless container's) may be wired to the host. New namespaces
//!    (`unshare`/`clone` with `CLONE_NEWNET`) start empty and stay allowed; sockets made
//!    in them are the kernel's (see `permit`).
//! 6. `sendto`/`recvfrom` → `USER_NOTIF` only when the address pointer (arg 4, all 64
//!    bits) is not NULL, so plain `send`/`recv` never leave the kernel.
//! 7. `connect bind listen accept accept4 getsockname getpeername setsockopt getsockopt
//!    shutdown sendmsg recvmsg sendmmsg recvmmsg` → `USER_NOTIF`.
//! 8. Everything else → `ALLOW`. `read write close poll epoll_* select fcntl dup*` are
//!    never trapped.

/// Calls trapped unconditionally (step 7).
pub const TRAPPED: &[(&str, i64)] = &[
    ("connect", libc::SYS_connect),
    ("bind", libc::SYS_bind),
    ("listen", libc::SYS_listen),
    ("accept", libc::SYS_accept),
    ("accept4", libc::SYS_accept4),
    ("getsockname", libc::SYS_getsockname),
    ("getpeername", libc::SYS_getpeername),
    ("setsockopt", libc::SYS_setsockopt),
    ("getsockopt", libc::SYS_getsockopt),
    ("shutdown", libc::SYS_shutdown),
    ("sendmsg", libc::SYS_sendmsg),
    ("recvmsg", libc::SYS_recvmsg),
    ("sendmmsg", libc::SYS_sendmmsg),
    ("recvmmsg", libc::SYS_recvmmsg),
];

/// The calls the child makes between installing the filter and `execve` returning
/// control to the program (see `launch`). None of them may be trapped.
pub const HANDOFF_CALLS: &[(&str, i64)] = &[
    ("write", libc::SYS_write),
    ("execve", libc::SYS_execve),
    ("exit_group", libc::SYS_exit_group),
    ("exit", libc::SYS_exit),
];

const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const RET_ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
const RET_EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
const RET_EAFNOSUPPORT: u32 = libc::SECCOMP_RET_ERRNO | libc::EAFNOSUPPORT as u32;

// Offsets in `struct seccomp_data` (little endian).
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg_lo(i: u32) -> u32 {
    16 + 8 * i
}
const fn off_arg_hi(i: u32) -> u32 {
    16 + 8 * i + 4
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Next,
    Notify,
    Allow,
    Enosys,
    SocketCheck,
    SetnsCheck,
    AddrCheck,
    Eperm,
    Eafnosupport,
}

#[derive(Debug, Clone, Copy)]
enum Ins {
    Load(u32),
    Jeq(u32, Label, Label),
    Jge(u32, Label, Label),
    /// Jump if `acc & k != 0`.
    Jset(u32, Label, Label),
    Ret(u32),
    Mark(Label),
}

fn program() -> Vec<Ins> {
    use Ins::*;
    use Label::*;
    let mut p = vec![
        Load(OFF_ARCH),
        Jeq(crate::sys::AUDIT_ARCH_X86_64, Next, Enosys),
        Load(OFF_NR),
        Jge(X32_SYSCALL_BIT, Enosys, Next),
        Jeq(libc::SYS_io_uring_setup as u32, Enosys, Next),
        Jeq(libc::SYS_socket as u32, SocketCheck, Next),
        Jeq(libc::SYS_setns as u32, SetnsCheck, Next),
        Jeq(libc::SYS_sendto as u32, AddrCheck, Next),
        Jeq(libc::SYS_recvfrom as u32, AddrCheck, Next),
    ];
    for &(_, nr) in TRAPPED {
        p.push(Jeq(nr as u32, Notify, Next));
    }
    p.extend([
        Ret(libc::SECCOMP_RET_ALLOW),
        Mark(SocketCheck),
        Load(off_arg_lo(0)),
        Jeq(libc::AF_INET as u32, Notify, Next),
        Jeq(libc::AF_INET6 as u32, Notify, Next),
        Jeq(libc::AF_NETLINK as u32, Notify, Next),
        Jeq(libc::AF_UNIX as u32, Allow, Next),
        Jeq(libc::AF_ALG as u32, Allow, Next),
        Jeq(libc::AF_PACKET as u32, Eperm, Next),
        Jeq(libc::AF_KEY as u32, Eperm, Eafnosupport),
        Mark(SetnsCheck),
        Load(off_arg_lo(1)),
        Jeq(0, Eperm, Next),
        Jset(libc::CLONE_NEWNET as u32, Eperm, Allow),
        Mark(AddrCheck),
        Load(off_arg_lo(4)),
        Jeq(0, Next, Notify),
        Load(off_arg_hi(4)),
        Jeq(0, Allow, Notify),
        Mark(Notify),
        Ret(libc::SECCOMP_RET_USER_NOTIF),
        Mark(Allow),
        Ret(libc::SECCOMP_RET_ALLOW),
        Mark(Enosys),
        Ret(RET_ENOSYS),
        Mark(Eperm),
        Ret(RET_EPERM),
        Mark(Eafnosupport),
        Ret(RET_EAFNOSUPPORT),
    ]);
    p
}

/// Errors building the filter (only possible through a programming mistake above).
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// A jump spans more than 255 instructions.
    #[error("BPF jump from instruction {from} to {label} is out of range")]
    JumpTooFar {
        /// Instruction index.
        from: usize,
        /// Target label.
        label: String,
    },
    /// A call the launch hand-off makes would be trapped: that would deadlock the launch.
    #[error("the filter would trap `{0}`, which the launch hand-off makes")]
    TrapsHandoff(&'static str),
}

/// Assemble the filter into kernel `sock_filter` instructions.
pub fn build() -> Result<Vec<libc::sock_filter>, FilterError> {
    let prog = program();
    // Index of each real instruction and of each label.
    let mut labels = Vec::new();
    let mut n = 0usize;
    for ins in &prog {
        match ins {
            Ins::Mark(l) => labels.push((*l, n)),
            _ => n += 1,
        }
    }
    let resolve = |from: usize, l: Label| -> Result<u8, FilterError> {
        let to = if l == Label::Next {
            from + 1
        } else {
            labels
                .iter()
                .find(|(x, _)| *x == l)
                .map(|(_, i)| *i)
                .unwrap_or(usize::MAX)
        };
        to.checked_sub(from + 1)
            .and_then(|d| u8::try_from(d).ok())
            .ok_or(FilterError::JumpTooFar {
                from,
                label: format!("{l:?}"),
            })
    };
    let mut out = Vec::with_capacity(n);
    for ins in prog {
        let at = out.len();
        let f = match ins {
            Ins::Mark(_) => continue,
            Ins::Load(off) => stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, off),
            Ins::Jeq(k, t, f) => jump(libc::BPF_JEQ, k, resolve(at, t)?, resolve(at, f)?),
            Ins::Jge(k, t, f) => jump(libc::BPF_JGE, k, resolve(at, t)?, resolve(at, f)?),
            Ins::Jset(k, t, f) => jump(libc::BPF_JSET, k, resolve(at, t)?, resolve(at, f)?),
            Ins::Ret(k) => stmt(libc::BPF_RET | libc::BPF_K, k),
        };
        out.push(f);
    }
    check_handoff(&out)?;
    Ok(out)
}

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(op: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | op | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

/// Refuse a filter that would trap any call of [`HANDOFF_CALLS`] (youki's
/// `check_seccomp` habit): the child makes them before anyone reads the listener.
pub fn check_handoff(prog: &[libc::sock_filter]) -> Result<(), FilterError> {
    for &(name, nr) in HANDOFF_CALLS {
        for arg in [0u64, 1, 2, u64::MAX] {
            let data = Input {
                nr: nr as u32,
                arch: crate::sys::AUDIT_ARCH_X86_64,
                args: [arg; 6],
            };
            if evaluate(prog, &data) != libc::SECCOMP_RET_ALLOW {
                return Err(FilterError::TrapsHandoff(name));
            }
        }
    }
    Ok(())
}

/// A `seccomp_data` for [`evaluate`].
#[derive(Debug, Clone, Copy)]
pub struct Input {
    /// Syscall number.
    pub nr: u32,
    /// `AUDIT_ARCH_*`.
    pub arch: u32,
    /// Arguments.
    pub args: [u64; 6],
}

impl Input {
    fn word(&self, off: u32) -> Option<u32> {
        match off {
            OFF_NR => Some(self.nr),
            OFF_ARCH => Some(self.arch),
            8 | 12 => Some(0),
            o if (16..64).contains(&o) && o % 4 == 0 => {
                let a = self.args[((o - 16) / 8) as usize];
                Some(if (o - 16) % 8 == 0 {
                    a as u32
                } else {
                    (a >> 32) as u32
                })
            }
            _ => None,
        }
    }
}

/// Run a filter the way the kernel would, for the subset of classic BPF this module
/// emits. Anything else (or running off the end) yields `SECCOMP_RET_KILL_PROCESS`, as
/// the kernel's verifier would have refused it.
pub fn evaluate(prog: &[libc::sock_filter], input: &Input) -> u32 {
    let kill = libc::SECCOMP_RET_KILL_PROCESS;
    let mut acc = 0u32;
    let mut pc = 0usize;
    while let Some(ins) = prog.get(pc) {
        let code = u32::from(ins.code);
        pc += 1;
        if code == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS {
            match input.word(ins.k) {
                Some(w) => acc = w,
                None => return kill,
            }
        } else if code == libc::BPF_RET | libc::BPF_K {
            return ins.k;
        } else if code == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K
            || code == libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K
            || code == libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K
        {
            let taken = match code & 0xf0 {
                libc::BPF_JEQ => acc == ins.k,
                libc::BPF_JGE => acc >= ins.k,
                _ => acc & ins.k != 0,
            };
            pc += usize::from(if taken { ins.jt } else { ins.jf });
        } else {
            return kill;
        }
    }
    kill
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{AUDIT_ARCH_I386, AUDIT_ARCH_X86_64};

    fn run(nr: i64, args: [u64; 6]) -> u32 {
        let prog = build().unwrap();
        evaluate(
            &prog,
            &Input {
                nr: nr as u32,
                arch: AUDIT_ARCH_X86_64,
                args,
            },
        )
    }
    const NOTIF: u32 = libc::SECCOMP_RET_USER_NOTIF;
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

    #[test]
    fn every_socket_family_is_decided() {
        assert_eq!(run(libc::SYS_socket, [2, 1, 0, 0, 0, 0]), NOTIF);
        assert_eq!(run(libc::SYS_socket, [10, 2, 0, 0, 0, 0]), NOTIF);
        assert_eq!(run(libc::SYS_socket, [1, 1, 0, 0, 0, 0]), ALLOW);
        assert_eq!(run(libc::SYS_socket, [38, 5, 0, 0, 0, 0]), ALLOW);
        assert_eq!(run(libc::SYS_socket, [16, 3, 0, 0, 0, 0]), NOTIF);
        // AF_PACKET and AF_KEY need a capability the program is refused.
        assert_eq!(run(libc::SYS_socket, [17, 3, 0, 0, 0, 0]), RET_EPERM);
        assert_eq!(run(libc::SYS_socket, [15, 3, 0, 0, 0, 0]), RET_EPERM);
        // AF_VSOCK, AF_SMC, AF_TIPC, AF_XDP, AF_BLUETOOTH and garbage: not built in.
        for domain in [40u64, 43, 30, 44, 31, 0, 46, 0xffff_ffff] {
            assert_eq!(
                run(libc::SYS_socket, [domain, 1, 0, 0, 0, 0]),
                RET_EAFNOSUPPORT,
                "domain {domain}"
            );
        }
        // Garbage above the int the kernel reads does not hide AF_PACKET either.
        assert_eq!(
            run(libc::SYS_socket, [0x1_0000_0011, 3, 0, 0, 0, 0]),
            RET_EPERM
        );
        // The kernel reads an int: garbage in the upper half must not hide AF_INET.
        assert_eq!(
            run(libc::SYS_socket, [0xdead_0000_0002, 1, 0, 0, 0, 0]),
            NOTIF
        );
    }

    #[test]
    fn setns_into_a_network_namespace_is_refused() {
        let net = libc::CLONE_NEWNET as u64;
        assert_eq!(run(libc::SYS_setns, [3, net, 0, 0, 0, 0]), RET_EPERM);
        assert_eq!(run(libc::SYS_setns, [3, 0, 0, 0, 0, 0]), RET_EPERM);
        // A pidfd with several namespaces, the network one among them.
        let many = (libc::CLONE_NEWNET | libc::CLONE_NEWUTS | libc::CLONE_NEWNS) as u64;
        assert_eq!(run(libc::SYS_setns, [3, many, 0, 0, 0, 0]), RET_EPERM);
        assert_eq!(
            run(libc::SYS_setns, [3, libc::CLONE_NEWNS as u64, 0, 0, 0, 0]),
            ALLOW
        );
        assert_eq!(run(libc::SYS_unshare, [net, 0, 0, 0, 0, 0]), ALLOW);
    }

    #[test]
    fn sendto_and_recvfrom_only_with_an_address() {
        for nr in [libc::SYS_sendto, libc::SYS_recvfrom] {
            assert_eq!(run(nr, [3, 0x1000, 10, 0, 0, 0]), ALLOW);
            assert_eq!(run(nr, [3, 0x1000, 10, 0, 0x7fff_0000_0000, 16]), NOTIF);
            assert_eq!(run(nr, [3, 0x1000, 10, 0, 0x10, 16]), NOTIF);
        }
    }

    #[test]
    fn the_socket_calls_are_trapped() {
        for &(name, nr) in TRAPPED {
            assert_eq!(run(nr, [0; 6]), NOTIF, "{name}");
        }
    }

    #[test]
    fn data_path_calls_are_never_trapped() {
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_close,
            libc::SYS_poll,
            libc::SYS_ppoll,
            libc::SYS_epoll_wait,
            libc::SYS_epoll_ctl,
            libc::SYS_epoll_pwait,
            libc::SYS_select,
            libc::SYS_fcntl,
            libc::SYS_dup,
            libc::SYS_dup2,
            libc::SYS_dup3,
            libc::SYS_readv,
            libc::SYS_writev,
            libc::SYS_sendfile,
            libc::SYS_splice,
            libc::SYS_ioctl,
            libc::SYS_socketpair,
        ] {
            assert_eq!(run(nr, [2, 1, 0, 0, 0, 0]), ALLOW, "syscall {nr}");
        }
    }

    #[test]
    fn io_uring_and_foreign_abis_get_enosys() {
        assert_eq!(
            run(libc::SYS_io_uring_setup, [8, 0, 0, 0, 0, 0]),
            RET_ENOSYS
        );
        // x32 socket(2): 0x40000000 | 41.
        assert_eq!(run(0x4000_0000 | 41, [2, 1, 0, 0, 0, 0]), RET_ENOSYS);
        let prog = build().unwrap();
        // i386 socketcall (102) and socket (359).
        for nr in [102, 359, 1] {
            let input = Input {
                nr,
                arch: AUDIT_ARCH_I386,
                args: [2, 1, 0, 0, 0, 0],
            };
            assert_eq!(evaluate(&prog, &input), RET_ENOSYS);
        }
    }

    #[test]
    fn the_handoff_is_not_trapped_and_a_trapping_filter_is_refused() {
        let prog = build().unwrap();
        assert!(check_handoff(&prog).is_ok());
        let bad = vec![stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_USER_NOTIF,
        )];
        assert!(matches!(
            check_handoff(&bad),
            Err(FilterError::TrapsHandoff("write"))
        ));
    }
}
