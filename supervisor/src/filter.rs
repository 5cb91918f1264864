//! The seccomp filter, built with libseccomp and exported as classic BPF.
//!
//! The rules are libseccomp's (`seccomp_rule_add`), and so are the architecture checks:
//! the program it exports tests the audit architecture and, on x86_64, the x32 bit, and
//! answers a foreign one with the bad-architecture action. The parent builds and exports
//! it (`seccomp_export_bpf`); the child, which may only make async-signal-safe calls,
//! installs the exported program with a raw `seccomp(2)` and the flags we choose
//! (`NEW_LISTENER`, `WAIT_KILLABLE_RECV`). The unit tests below run the exported program
//! through an interpreter of classic BPF, which is how we prove what it traps and that
//! it cannot trap the launch hand-off.
//!
//! The rules:
//!
//! 1. A foreign architecture (i386 `int 0x80`, x32) → `ERRNO(ENOSYS)`: no 32-bit call can
//!    reach the kernel's socket code behind our back.
//! 2. `io_uring_setup` → `ERRNO(ENOSYS)`: io_uring would perform socket operations
//!    without system calls we can see.
//! 3. `socket`, by domain (the low 32 bits of arg 0, as the kernel reads an `int`):
//!    `AF_INET`, `AF_INET6`, `AF_NETLINK` (route sockets are proxied, netlink.rs) →
//!    `USER_NOTIF`; `AF_UNIX` and `AF_ALG` (local only) run natively; `AF_PACKET` and
//!    `AF_KEY` → `ERRNO(EPERM)`, as for a process without `CAP_NET_RAW`/`CAP_NET_ADMIN`;
//!    every other family below 64 → `ERRNO(EAFNOSUPPORT)`, as on a kernel built without
//!    it (the kernel itself refuses those at or above `AF_MAX`). Every family is decided
//!    here: nothing reaches the host network behind our back (AF_VSOCK, AF_SMC,
//!    AF_TIPC, AF_XDP, ...).
//! 4. `setns` into a network namespace (`nstype` 0, which may be one, or with
//!    `CLONE_NEWNET` set) → `ERRNO(EPERM)`, as for a process without `CAP_SYS_ADMIN`
//!    there: a namespace the program could enter (another of its uid's user namespaces,
//!    e.g. a rootless container's) may be wired to the host. New namespaces
//!    (`unshare`/`clone` with `CLONE_NEWNET`) start empty and stay allowed; sockets made
//!    in them are the kernel's (see `permit`).
//! 5. `sendto`/`recvfrom` → `USER_NOTIF` only when the address pointer (arg 4, all 64
//!    bits) is not NULL, so plain `send`/`recv` never leave the kernel; `sendto` also
//!    with `MSG_OOB` in its flags (arg 3), which a virtual IPv6 UDP socket accepts and
//!    the AF_UNIX end behind it would refuse.
//! 6. `connect bind listen accept accept4 getsockname getpeername setsockopt getsockopt
//!    shutdown sendmsg recvmsg sendmmsg recvmmsg` → `USER_NOTIF`.
//! 7. `ioctl` with a socket request of [`TRAPPED_IOCTLS`] (low 32 bits of arg 1) →
//!    `USER_NOTIF`; every other ioctl runs natively.
//! 8. Everything else → `ALLOW`. `read write close poll epoll_* select fcntl dup*` are
//!    never trapped.
use std::io::Read as _;

use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};

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

/// Socket ioctls trapped by request number (the low 32 bits of arg 1, as the kernel
/// reads an `unsigned int`); every other ioctl (terminals, files, `FIONREAD`, `FIONBIO`)
/// runs natively.
pub const TRAPPED_IOCTLS: &[(&str, u64)] = &[
    ("SIOCATMARK", 0x8905),
    ("SIOCGSTAMP", 0x8906),
    ("SIOCGSTAMPNS", 0x8907),
    ("SIOCGIFNAME", 0x8910),
    ("SIOCGIFCONF", 0x8912),
    ("SIOCGIFFLAGS", 0x8913),
    ("SIOCGIFADDR", 0x8915),
    ("SIOCGIFBRDADDR", 0x8919),
    ("SIOCGIFNETMASK", 0x891b),
    ("SIOCGIFMTU", 0x8921),
    ("SIOCGIFHWADDR", 0x8927),
    ("SIOCGIFINDEX", 0x8933),
];

/// The calls the child makes between installing the filter and `execve` returning
/// control to the program (see `launch`). None of them may be trapped.
pub const HANDOFF_CALLS: &[(&str, i64)] = &[
    ("write", libc::SYS_write),
    ("execve", libc::SYS_execve),
    ("exit_group", libc::SYS_exit_group),
    ("exit", libc::SYS_exit),
];

#[cfg(test)]
const RET_ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
#[cfg(test)]
const RET_EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
#[cfg(test)]
const RET_EAFNOSUPPORT: u32 = libc::SECCOMP_RET_ERRNO | libc::EAFNOSUPPORT as u32;

/// Offsets in `struct seccomp_data` (little endian).
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;

/// What `socket(domain, ...)` does, by domain (rule 3).
fn socket_action(domain: i32) -> Option<ScmpAction> {
    match domain {
        libc::AF_INET | libc::AF_INET6 | libc::AF_NETLINK => Some(ScmpAction::Notify),
        libc::AF_UNIX | libc::AF_ALG => None,
        libc::AF_PACKET | libc::AF_KEY => Some(ScmpAction::Errno(libc::EPERM)),
        _ => Some(ScmpAction::Errno(libc::EAFNOSUPPORT)),
    }
}

/// Errors building the filter.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// libseccomp refused a rule or the export.
    #[error("libseccomp: {what}")]
    Seccomp {
        /// What was being done.
        what: &'static str,
        /// The library's error.
        #[source]
        source: libseccomp::error::SeccompError,
    },
    /// Reading the exported program back failed, or it is malformed.
    #[error("exported seccomp program unreadable: {0}")]
    Export(String),
    /// A call the launch hand-off makes would be trapped: that would deadlock the launch.
    #[error("the filter would trap `{0}`, which the launch hand-off makes")]
    TrapsHandoff(&'static str),
}

fn rules() -> Result<ScmpFilterContext, FilterError> {
    let err = |what| move |source| FilterError::Seccomp { what, source };
    let mut ctx = ScmpFilterContext::new(ScmpAction::Allow).map_err(err("new filter"))?;
    ctx.set_act_badarch(ScmpAction::Errno(libc::ENOSYS))
        .map_err(err("bad-architecture action"))?;
    let low32 = |arg: u32, value: u64| {
        ScmpArgCompare::new(arg, ScmpCompareOp::MaskedEqual(0xffff_ffff), value)
    };
    ctx.add_rule(
        ScmpAction::Errno(libc::ENOSYS),
        ScmpSyscall::from(libc::SYS_io_uring_setup as i32),
    )
    .map_err(err("io_uring_setup"))?;
    let socket = ScmpSyscall::from(libc::SYS_socket as i32);
    for domain in 0..64 {
        if let Some(action) = socket_action(domain) {
            ctx.add_rule_conditional(action, socket, &[low32(0, domain as u64)])
                .map_err(err("socket"))?;
        }
    }
    let setns = ScmpSyscall::from(libc::SYS_setns as i32);
    let net = libc::CLONE_NEWNET as u64;
    ctx.add_rule_conditional(ScmpAction::Errno(libc::EPERM), setns, &[low32(1, 0)])
        .map_err(err("setns"))?;
    ctx.add_rule_conditional(
        ScmpAction::Errno(libc::EPERM),
        setns,
        &[ScmpArgCompare::new(1, ScmpCompareOp::MaskedEqual(net), net)],
    )
    .map_err(err("setns"))?;
    for nr in [libc::SYS_sendto, libc::SYS_recvfrom] {
        ctx.add_rule_conditional(
            ScmpAction::Notify,
            ScmpSyscall::from(nr as i32),
            &[ScmpArgCompare::new(4, ScmpCompareOp::NotEqual, 0)],
        )
        .map_err(err("sendto/recvfrom"))?;
    }
    // Urgent data on a connected datagram socket: the AF_UNIX end behind a virtual one
    // would refuse what IPv6 UDP accepts.
    let oob = libc::MSG_OOB as u64;
    ctx.add_rule_conditional(
        ScmpAction::Notify,
        ScmpSyscall::from(libc::SYS_sendto as i32),
        &[ScmpArgCompare::new(3, ScmpCompareOp::MaskedEqual(oob), oob)],
    )
    .map_err(err("sendto MSG_OOB"))?;
    for &(_, nr) in TRAPPED {
        ctx.add_rule(ScmpAction::Notify, ScmpSyscall::from(nr as i32))
            .map_err(err("trapped call"))?;
    }
    for &(_, request) in TRAPPED_IOCTLS {
        ctx.add_rule_conditional(
            ScmpAction::Notify,
            ScmpSyscall::from(libc::SYS_ioctl as i32),
            &[low32(1, request)],
        )
        .map_err(err("ioctl"))?;
    }
    Ok(ctx)
}

/// Build the filter with libseccomp and export it as kernel `sock_filter` instructions,
/// checked not to trap the launch hand-off.
pub fn build() -> Result<Vec<libc::sock_filter>, FilterError> {
    let ctx = rules()?;
    let mut file = tempfile_in_memory()?;
    ctx.export_bpf(&file)
        .map_err(|source| FilterError::Seccomp {
            what: "export",
            source,
        })?;
    let mut bytes = Vec::new();
    std::io::Seek::rewind(&mut file).map_err(|e| FilterError::Export(e.to_string()))?;
    file.read_to_end(&mut bytes)
        .map_err(|e| FilterError::Export(e.to_string()))?;
    if bytes.is_empty() || bytes.len() % 8 != 0 || bytes.len() / 8 > usize::from(u16::MAX) {
        return Err(FilterError::Export(format!("{} bytes", bytes.len())));
    }
    let prog: Vec<libc::sock_filter> = bytes
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    check_handoff(&prog)?;
    Ok(prog)
}

/// An anonymous in-memory file for the export.
fn tempfile_in_memory() -> Result<std::fs::File, FilterError> {
    let fd =
        nix::sys::memfd::memfd_create(c"seccomp-filter", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(|e| FilterError::Export(e.to_string()))?;
    Ok(std::fs::File::from(fd))
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

/// Run a filter the way the kernel would (classic BPF as seccomp accepts it: loads of
/// `seccomp_data` words, scratch memory, ALU and jumps with constants or X, returns).
/// Anything else, or running off the end, yields `SECCOMP_RET_KILL_PROCESS`, as the
/// kernel's checker would have refused it.
pub fn evaluate(prog: &[libc::sock_filter], input: &Input) -> u32 {
    let kill = libc::SECCOMP_RET_KILL_PROCESS;
    let (mut a, mut x) = (0u32, 0u32);
    let mut mem = [0u32; 16];
    let mut pc = 0usize;
    let mut steps = 0usize;
    while let Some(ins) = prog.get(pc) {
        steps += 1;
        if steps > 4096 {
            return kill;
        }
        let code = u32::from(ins.code);
        let k = ins.k;
        pc += 1;
        let src = if code & 0x08 != 0 { x } else { k }; // BPF_X : BPF_K
        match code & 0x07 {
            // BPF_LD
            0x00 => match code {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => match input.word(k) {
                    Some(w) => a = w,
                    None => return kill,
                },
                c if c == libc::BPF_LD | libc::BPF_IMM => a = k,
                c if c == libc::BPF_LD | libc::BPF_MEM => match mem.get(k as usize) {
                    Some(v) => a = *v,
                    None => return kill,
                },
                _ => return kill,
            },
            // BPF_LDX
            0x01 => match code {
                c if c == libc::BPF_LDX | libc::BPF_IMM => x = k,
                c if c == libc::BPF_LDX | libc::BPF_MEM => match mem.get(k as usize) {
                    Some(v) => x = *v,
                    None => return kill,
                },
                _ => return kill,
            },
            // BPF_ST, BPF_STX
            0x02 | 0x03 => {
                let v = if code & 0x07 == 0x02 { a } else { x };
                match mem.get_mut(k as usize) {
                    Some(m) => *m = v,
                    None => return kill,
                }
            }
            // BPF_ALU
            0x04 => {
                a = match code & 0xf0 {
                    0x00 => a.wrapping_add(src),
                    0x10 => a.wrapping_sub(src),
                    0x20 => a.wrapping_mul(src),
                    0x30 if src != 0 => a / src,
                    0x40 => a | src,
                    0x50 => a & src,
                    0x60 => a.checked_shl(src).unwrap_or(0),
                    0x70 => a.checked_shr(src).unwrap_or(0),
                    0x80 => a.wrapping_neg(),
                    0x90 if src != 0 => a % src,
                    0xa0 => a ^ src,
                    _ => return kill,
                }
            }
            // BPF_JMP
            0x05 => {
                let taken = match code & 0xf0 {
                    0x00 => {
                        pc += k as usize; // BPF_JA
                        continue;
                    }
                    0x10 => a == src,
                    0x20 => a > src,
                    0x30 => a >= src,
                    0x40 => a & src != 0,
                    _ => return kill,
                };
                pc += usize::from(if taken { ins.jt } else { ins.jf });
            }
            // BPF_RET
            0x06 => return if code & 0x18 == 0x10 { a } else { k },
            // BPF_MISC: TAX, TXA
            _ => {
                if code & 0xf8 == 0x00 {
                    x = a;
                } else {
                    a = x;
                }
            }
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
        // AF_VSOCK, AF_SMC, AF_TIPC, AF_XDP, AF_BLUETOOTH, families to come: not built in.
        for domain in [40u64, 43, 30, 44, 31, 0, 46, 63] {
            assert_eq!(
                run(libc::SYS_socket, [domain, 1, 0, 0, 0, 0]),
                RET_EAFNOSUPPORT,
                "domain {domain}"
            );
        }
        // At or above AF_MAX the kernel itself answers EAFNOSUPPORT.
        assert_eq!(run(libc::SYS_socket, [0xffff_ffff, 1, 0, 0, 0, 0]), ALLOW);
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
        let oob = libc::MSG_OOB as u64;
        assert_eq!(run(libc::SYS_sendto, [3, 0x1000, 1, oob, 0, 0]), NOTIF);
        assert_eq!(
            run(
                libc::SYS_sendto,
                [3, 0x1000, 1, libc::MSG_NOSIGNAL as u64, 0, 0]
            ),
            ALLOW
        );
        assert_eq!(run(libc::SYS_recvfrom, [3, 0x1000, 1, oob, 0, 0]), ALLOW);
    }

    #[test]
    fn socket_ioctls_are_trapped_by_request_and_others_are_not() {
        for &(name, request) in TRAPPED_IOCTLS {
            assert_eq!(
                run(libc::SYS_ioctl, [3, request, 0, 0, 0, 0]),
                NOTIF,
                "{name}"
            );
            let garbage = request | 0xdead_0000_0000;
            assert_eq!(
                run(libc::SYS_ioctl, [3, garbage, 0, 0, 0, 0]),
                NOTIF,
                "{name}"
            );
        }
        for request in [
            libc::TCGETS,
            libc::TIOCGWINSZ,
            libc::FIONREAD,
            libc::FIONBIO,
        ] {
            assert_eq!(run(libc::SYS_ioctl, [1, request, 0, 0, 0, 0]), ALLOW);
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
        let bad = vec![libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_USER_NOTIF,
        }];
        assert!(matches!(
            check_handoff(&bad),
            Err(FilterError::TrapsHandoff("write"))
        ));
    }
}
