//! Socket options on emulated sockets: `getsockopt(2)`/`setsockopt(2)` answered as Linux
//! answers them.
//!
//! # Two sources of answers
//!
//! An emulated socket is a socketpair end in the program and a phase in the supervisor;
//! it has no kernel socket whose options could answer. Linux's own option code is large
//! (`net/core/sock.c` `sk_setsockopt`/`sk_getsockopt`, `net/ipv4/ip_sockglue.c`,
//! `net/ipv6/ipv6_sockglue.c`, `net/ipv4/tcp.c`, `net/ipv4/udp.c`) and its answers depend
//! on the family, the protocol, the length and the host's sysctls (the default TTL, the
//! congestion control, the keepalive times). Rather than restate it, every call is put to
//! a **model**: a fresh, never bound kernel socket of the same family, type and protocol,
//! with every option the program set so far replayed on it
//! ([`Supervisor::kernel_socket`](crate::emulate::Supervisor::kernel_socket)). The model
//! gets the program's own arguments, mirrored ([`SetCall`], [`GetCall`]): its length as
//! given, and for a pointer the supervisor could not read, NULL, so the kernel returns
//! `EFAULT` at the point of its own checks. Values, lengths, errno and their order (a
//! NULL `optlen` before `ENOPROTOOPT` at `SOL_SOCKET`, `EOPNOTSUPP` for another protocol's
//! level, `ENOPROTOOPT` for read-only options) are therefore Linux's by construction. An
//! option is recorded only when the model accepted it, and replayed later on the real
//! kernel socket the emulated one may become.
//!
//! The model knows nothing of the virtual socket's state (it is never connected, never
//! listens) and nothing of what the supervisor does with an option. [`TABLE`] lists
//! those options, each with its [`Role`]: the few answered from the virtual socket's
//! state, those that tune the virtual connection, those the kernel must also apply to
//! the program's end of the socketpair, and those that carry the program's pointers or
//! descriptors and so cannot be put to the model. Every other option is the model's.
//!
//! # Call order (net/socket.c)
//!
//! `setsockopt`: a negative `optlen` is `EINVAL` before anything else; then the option's
//! capability ([`Supervisor::option_capability`](crate::emulate::Supervisor)), checked
//! before any effect; then the model, which decides. `getsockopt`: `optlen` is read, the
//! model answers, then the value and the length it reports are written back, value first.

use nix::errno::Errno;

use crate::kernel::Kernel;
use crate::sys::{UserArg, OPTION_BUF};
use crate::tracee;

/// Largest `setsockopt` value copied from the program (the largest option value Linux
/// takes, `struct tcp_md5sig` and the multicast filters, are far smaller).
pub(crate) const MAX_SET: usize = 4096;

/// What the supervisor itself does with an option, beyond what the model answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// `getsockopt` answers from the virtual socket's state, which the model lacks
    /// ([`State`]); `setsockopt` is the model's (read-only: `ENOPROTOOPT`).
    State(State),
    /// Recorded, then applied to the live virtual connection
    /// ([`VSocket::tuning`](crate::emulate::VSocket::tuning), `Backend::stream_tune`).
    Tune,
    /// Recorded for the calls the supervisor emulates (accept, connect, recvmsg), and
    /// the call continues so the kernel applies it to the program's own end, where the
    /// program's reads and writes go untrapped.
    ProgramEnd,
    /// The value holds the program's pointers or descriptors (a BPF program, a filter),
    /// which mean nothing in the supervisor: accepted, neither modelled nor recorded (so
    /// `SO_DETACH_FILTER` then answers `ENOENT`, as for a socket without a filter).
    Dropped,
    /// `getsockopt` would act in the caller's address space, the supervisor's for the
    /// model: refused with `EOPNOTSUPP` (not emulated). `setsockopt` is the model's.
    NotModelled,
}

/// State-dependent answers ([`Role::State`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// `SO_ACCEPTCONN`: 1 while listening.
    Listening,
    /// `SO_ERROR`: the pending error of a failed connect, cleared by reading it.
    Error,
    /// `TCP_INFO`: `tcpi_state` of the virtual connection.
    Tcpi,
    /// `TCP_MAXSEG`: the connection's segment size once connected (`mss_cache`), no
    /// larger than a value the program set; before, the model's (what it set, else 536).
    MaxSeg,
    /// `SO_COOKIE`: one number per socket for its life (the model's would change).
    Cookie,
    /// `IP_MTU`/`IPV6_MTU`: `ENOTCONN` until connected, then the path MTU.
    PathMtu,
    /// `IPV6_V6ONLY`: set by binding to a specific IPv6 address that is not v4-mapped
    /// (`__inet6_bind`: `sk->sk_ipv6only = 1`), a bind the model never makes.
    V6Only,
}

/// One option the supervisor acts on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Opt {
    pub(crate) level: i32,
    pub(crate) name: i32,
    /// The C name, for logs and tests.
    pub(crate) text: &'static str,
    pub(crate) role: Role,
}

const fn opt(level: i32, name: i32, text: &'static str, role: Role) -> Opt {
    Opt {
        level,
        name,
        text,
        role,
    }
}

/// The options the supervisor acts on; every other option is the model's alone.
pub(crate) const TABLE: &[Opt] = {
    use libc::*;
    use Role::*;
    &[
        opt(
            SOL_SOCKET,
            SO_ACCEPTCONN,
            "SO_ACCEPTCONN",
            Role::State(self::State::Listening),
        ),
        opt(
            SOL_SOCKET,
            SO_ERROR,
            "SO_ERROR",
            Role::State(self::State::Error),
        ),
        opt(
            SOL_SOCKET,
            SO_COOKIE,
            "SO_COOKIE",
            Role::State(self::State::Cookie),
        ),
        opt(
            IPPROTO_TCP,
            TCP_INFO,
            "TCP_INFO",
            Role::State(self::State::Tcpi),
        ),
        opt(
            IPPROTO_TCP,
            TCP_MAXSEG,
            "TCP_MAXSEG",
            Role::State(self::State::MaxSeg),
        ),
        opt(
            IPPROTO_IP,
            IP_MTU,
            "IP_MTU",
            Role::State(self::State::PathMtu),
        ),
        opt(
            IPPROTO_IPV6,
            IPV6_MTU,
            "IPV6_MTU",
            Role::State(self::State::PathMtu),
        ),
        opt(
            IPPROTO_IPV6,
            IPV6_V6ONLY,
            "IPV6_V6ONLY",
            Role::State(self::State::V6Only),
        ),
        opt(IPPROTO_TCP, TCP_NODELAY, "TCP_NODELAY", Tune),
        opt(SOL_SOCKET, SO_KEEPALIVE, "SO_KEEPALIVE", Tune),
        opt(IPPROTO_TCP, TCP_KEEPIDLE, "TCP_KEEPIDLE", Tune),
        opt(IPPROTO_TCP, TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT", Tune),
        opt(SOL_SOCKET, SO_RCVTIMEO, "SO_RCVTIMEO", ProgramEnd),
        opt(SOL_SOCKET, SO_SNDTIMEO, "SO_SNDTIMEO", ProgramEnd),
        opt(SOL_SOCKET, SO_ATTACH_FILTER, "SO_ATTACH_FILTER", Dropped),
        opt(SOL_SOCKET, SO_ATTACH_BPF, "SO_ATTACH_BPF", Dropped),
        opt(
            SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            "SO_ATTACH_REUSEPORT_CBPF",
            Dropped,
        ),
        opt(
            SOL_SOCKET,
            SO_ATTACH_REUSEPORT_EBPF,
            "SO_ATTACH_REUSEPORT_EBPF",
            Dropped,
        ),
        // getsockopt maps received pages into the caller.
        opt(
            IPPROTO_TCP,
            TCP_ZEROCOPY_RECEIVE,
            "TCP_ZEROCOPY_RECEIVE",
            NotModelled,
        ),
    ]
};

/// The table's entry for `(level, name)`, if the supervisor acts on it.
pub(crate) fn lookup(level: i32, name: i32) -> Option<&'static Opt> {
    TABLE.iter().find(|o| (o.level, o.name) == (level, name))
}

/// What the supervisor does with `(level, name)` besides asking the model.
pub(crate) fn role(level: i32, name: i32) -> Option<Role> {
    lookup(level, name).map(|o| o.role)
}

/// The errno of a `setsockopt` refused for want of a capability
/// ([`Supervisor::option_capability`](crate::emulate::Supervisor)): `EACCES` for
/// `SO_DEBUG` (`sk_setsockopt`), `EPERM` for the others.
pub(crate) fn refusal(level: i32, name: i32) -> nix::errno::Errno {
    match (level, name) {
        (libc::SOL_SOCKET, libc::SO_DEBUG) => nix::errno::Errno::EACCES,
        _ => nix::errno::Errno::EPERM,
    }
}

/// The MTU reported where the network is not known (a backend without
/// [`Backend::link_of`](crate::backend::Backend::link_of)): the smallest MTU of any
/// virtual network (`zt --mtu` takes 1280..=10000), so that a program that sizes
/// datagrams by it never sends one too big.
pub(crate) const VIRTUAL_PATH_MTU: i32 = 1280;

/// What the model would answer to a `setsockopt` whose Linux checks are only the length
/// and readability of an `int` (and, for the timeouts, of a `timeval` and its
/// microseconds), for the options clients set on every connection: answered without
/// making a model, which costs a kernel socket made, set and closed per call. `None`:
/// ask the model. `stream`: the socket is TCP (`TCP_NODELAY` is `ENOPROTOOPT` on others).
///
/// The order is `sk_setsockopt`'s (net/core/sock.c): `optlen < sizeof(int)` is `EINVAL`,
/// then the `int` is copied (`EFAULT`), then `sock_set_timeout` wants a whole `timeval`
/// (`EINVAL`) with `0 <= tv_usec < 1000000` (`EDOM`); `do_tcp_setsockopt` checks
/// `TCP_NODELAY` the same way. None of them fails on a valid value.
pub(crate) fn set_without_model(stream: bool, call: &SetCall) -> Option<Result<(), Errno>> {
    let timeout = match (call.level, call.name) {
        (libc::IPPROTO_TCP, libc::TCP_NODELAY) if stream => false,
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE | libc::SO_REUSEADDR) => false,
        (libc::SOL_SOCKET, libc::SO_RCVTIMEO | libc::SO_SNDTIMEO) => true,
        _ => return None,
    };
    const TIMEVAL: usize = std::mem::size_of::<libc::timeval>();
    Some(if (call.len as usize) < std::mem::size_of::<i32>() {
        Err(Errno::EINVAL)
    } else if call.value.is_none() {
        Err(Errno::EFAULT)
    } else if !timeout {
        Ok(())
    } else if (call.len as usize) < TIMEVAL {
        Err(Errno::EINVAL)
    } else {
        let v = call.value.as_deref().unwrap_or(&[]);
        let usec = v
            .get(8..16)
            .and_then(|b| b.try_into().ok())
            .map(i64::from_ne_bytes);
        match usec {
            Some(u) if (0..1_000_000).contains(&u) => Ok(()),
            Some(_) => Err(Errno::EDOM),
            None => Err(Errno::EFAULT),
        }
    })
}

/// What a fresh model would answer to `getsockopt(SO_ERROR)` (no error: 0), written into
/// `call`'s buffer, without making one; `None` for every other option. `sk_getsockopt`
/// reads `optlen` (`EFAULT`), refuses a negative one (`EINVAL`), then copies at most an
/// `int` out (`EFAULT` for a NULL `optval` when it copies anything).
pub(crate) fn get_without_model(call: &mut GetCall) -> Option<Result<u32, Errno>> {
    if (call.level, call.name) != (libc::SOL_SOCKET, libc::SO_ERROR) {
        return None;
    }
    let Some(len) = call.len else {
        return Some(Err(Errno::EFAULT));
    };
    if (len as i32) < 0 {
        return Some(Err(Errno::EINVAL));
    }
    let n = (len as usize).min(std::mem::size_of::<i32>());
    Some(match call.buf.as_mut() {
        Some(b) => {
            b[..n].fill(0);
            Ok(n as u32)
        }
        None if n == 0 => Ok(0),
        None => Err(Errno::EFAULT),
    })
}

/// `setsockopt`'s arguments as read from the program.
#[derive(Debug)]
pub(crate) struct SetCall {
    pub(crate) level: i32,
    pub(crate) name: i32,
    /// The program's `optlen` (never negative here).
    pub(crate) len: u32,
    /// The value, `min(len, MAX_SET)` bytes; `None` when the program's pointer could
    /// not be read (the model then gets NULL and decides between EFAULT and its checks).
    pub(crate) value: Option<Vec<u8>>,
    optval: u64,
}

impl SetCall {
    /// Read and check `setsockopt(fd, level, name, optval, optlen)`'s arguments in
    /// `__sys_setsockopt`'s order: a negative length is `EINVAL` before anything else.
    pub(crate) fn read<K: Kernel + ?Sized>(
        k: &K,
        pid: u32,
        args: &[u64; 6],
    ) -> Result<Self, nix::errno::Errno> {
        let (level, name) = (args[1] as u32 as i32, args[2] as u32 as i32);
        let len = args[4] as u32 as i32;
        if len < 0 {
            return Err(nix::errno::Errno::EINVAL);
        }
        let want = (len as usize).min(MAX_SET);
        let value = tracee::read_bytes(k, pid, args[3], want).ok();
        Ok(Self {
            level,
            name,
            len: len as u32,
            value,
            optval: args[3],
        })
    }

    /// The value as the kernel is to see it ([`UserArg`]).
    pub(crate) fn arg(&self) -> UserArg<&[u8]> {
        match (&self.value, self.optval) {
            (Some(v), _) => UserArg::Given(v),
            (None, 0) => UserArg::Null,
            (None, _) => UserArg::Unreadable,
        }
    }

    /// The value as far as it was read (empty when unreadable).
    pub(crate) fn bytes(&self) -> &[u8] {
        self.value.as_deref().unwrap_or(&[])
    }
}

/// `getsockopt`'s arguments as read from the program, and the buffer the model answers
/// into.
#[derive(Debug)]
pub(crate) struct GetCall {
    pub(crate) level: i32,
    pub(crate) name: i32,
    /// `*optlen`, `None` when `optlen` could not be read.
    pub(crate) len: Option<u32>,
    /// Where the model writes; `None` for a NULL `optval`. Holds what the program's
    /// buffer held (some options read their input from it).
    pub(crate) buf: Option<Vec<u8>>,
    optval: u64,
    optlen: u64,
}

impl GetCall {
    /// Read `getsockopt(fd, level, name, optval, optlen)`'s arguments. Nothing is checked
    /// here: the model checks them in the order of the level's code.
    pub(crate) fn read<K: Kernel + ?Sized>(k: &K, pid: u32, args: &[u64; 6]) -> Self {
        let len = tracee::read_i32(k, pid, args[4]).ok().map(|l| l as u32);
        let buf = (args[3] != 0).then(|| {
            let mut b = vec![0u8; OPTION_BUF];
            if let Some(l) = len.filter(|l| (*l as i32) > 0) {
                let n = (l as usize).min(OPTION_BUF);
                // Unreadable input is left zero: the kernel would fault only on options
                // that read it, and the write back faults the same way.
                let _ = k.read_memory(pid, args[3], &mut b[..n]);
            }
            b
        });
        Self {
            level: args[1] as u32 as i32,
            name: args[2] as u32 as i32,
            len,
            buf,
            optval: args[3],
            optlen: args[4],
        }
    }

    /// `*optlen` as the kernel is to see it ([`UserArg`]).
    pub(crate) fn len_arg(&self) -> UserArg<u32> {
        match (self.len, self.optlen) {
            (Some(l), _) => UserArg::Given(l),
            (None, 0) => UserArg::Null,
            (None, _) => UserArg::Unreadable,
        }
    }

    /// Store the answer: `reported` is the length the model wrote back; the value, as
    /// much of it as fits the program's length, goes first (`EFAULT` if it cannot be
    /// written), then the length.
    pub(crate) fn write_back<K: Kernel + ?Sized>(
        &self,
        k: &K,
        pid: u32,
        value: &[u8],
        reported: u32,
    ) -> Result<(), nix::errno::Errno> {
        let n = value.len().min(reported as usize);
        if n > 0 {
            if self.optval == 0 {
                return Err(nix::errno::Errno::EFAULT);
            }
            k.write_memory(pid, self.optval, &value[..n])?;
        }
        if self.optlen == 0 {
            return Err(nix::errno::Errno::EFAULT);
        }
        k.write_memory(pid, self.optlen, &reported.to_ne_bytes())
    }
}

/// An `int` answer cut to the caller's length as the int options of `sk_getsockopt` and
/// `do_tcp_getsockopt` do: a negative length is `EINVAL`, a shorter one gets the first
/// bytes. For the [`State`] answers that the model cannot give at all.
pub(crate) fn int_answer(len: Option<u32>, v: i32) -> Result<(Vec<u8>, u32), nix::errno::Errno> {
    let len = len.ok_or(nix::errno::Errno::EFAULT)? as i32;
    if len < 0 {
        return Err(nix::errno::Errno::EINVAL);
    }
    let n = (len as usize).min(4);
    Ok((v.to_ne_bytes()[..n].to_vec(), n as u32))
}

/// What `getsockopt` answers for an option never set when no model socket can be made
/// (descriptors exhausted, ping sockets not allowed): the Linux defaults of the commonest
/// options, else `ENOPROTOOPT`.
pub(crate) fn fallback_default(stream: bool, level: i32, name: i32) -> Option<i32> {
    match (level, name) {
        (libc::SOL_SOCKET, libc::SO_RCVBUF) => Some(131_072),
        (libc::SOL_SOCKET, libc::SO_SNDBUF) => Some(16_384),
        (libc::SOL_SOCKET, libc::SO_REUSEADDR | libc::SO_REUSEPORT | libc::SO_KEEPALIVE) => Some(0),
        (libc::SOL_SOCKET, libc::SO_BROADCAST) => Some(0),
        (libc::IPPROTO_TCP, libc::TCP_NODELAY) if stream => Some(0),
        (libc::IPPROTO_TCP, libc::TCP_MAXSEG) if stream => Some(536),
        (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) => Some(0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_each_option_once() {
        for (i, a) in TABLE.iter().enumerate() {
            for b in &TABLE[i + 1..] {
                assert!(
                    (a.level, a.name) != (b.level, b.name),
                    "{} and {} are the same option",
                    a.text,
                    b.text
                );
            }
        }
    }

    #[test]
    fn roles() {
        assert_eq!(role(libc::IPPROTO_TCP, libc::TCP_NODELAY), Some(Role::Tune));
        assert_eq!(
            role(libc::SOL_SOCKET, libc::SO_RCVTIMEO),
            Some(Role::ProgramEnd)
        );
        assert_eq!(
            role(libc::SOL_SOCKET, libc::SO_ERROR),
            Some(Role::State(State::Error))
        );
        assert_eq!(
            role(libc::SOL_SOCKET, libc::SO_ATTACH_FILTER),
            Some(Role::Dropped)
        );
        // The model's alone.
        assert_eq!(role(libc::IPPROTO_IP, libc::IP_TTL), None);
        assert_eq!(role(500, 1), None);
    }

    #[test]
    fn tuning_options_are_the_ones_tuning_reads() {
        let tune: Vec<_> = TABLE
            .iter()
            .filter(|o| o.role == Role::Tune)
            .map(|o| o.text)
            .collect();
        assert_eq!(
            tune,
            [
                "TCP_NODELAY",
                "SO_KEEPALIVE",
                "TCP_KEEPIDLE",
                "TCP_USER_TIMEOUT"
            ]
        );
    }

    #[test]
    fn int_answers_follow_the_callers_length() {
        assert_eq!(
            int_answer(Some(4), 7).unwrap(),
            (7i32.to_ne_bytes().to_vec(), 4)
        );
        assert_eq!(int_answer(Some(100), 7).unwrap().1, 4);
        assert_eq!(int_answer(Some(2), 7).unwrap().1, 2);
        assert_eq!(int_answer(Some(0), 7).unwrap(), (vec![], 0));
        assert_eq!(
            int_answer(Some(u32::MAX), 7),
            Err(nix::errno::Errno::EINVAL)
        );
        assert_eq!(int_answer(None, 7), Err(nix::errno::Errno::EFAULT));
    }

    /// The model answers as Linux does: these are the kernel's own answers on a fresh
    /// socket, what the conformance suite compares against.
    #[test]
    fn a_model_socket_answers_as_linux() {
        use std::os::fd::AsFd;
        let s = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Inet,
            nix::sys::socket::SockType::Stream,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let mut buf = vec![0u8; OPTION_BUF];
        // Another protocol's level on TCP: EOPNOTSUPP; an unknown option: ENOPROTOOPT.
        let r = crate::sys::getsockopt_as(
            s.as_fd(),
            libc::IPPROTO_UDP,
            libc::UDP_CORK,
            Some(&mut buf),
            UserArg::Given(4),
        );
        assert_eq!(r, Err(nix::errno::Errno::EOPNOTSUPP));
        let r = crate::sys::getsockopt_as(
            s.as_fd(),
            libc::SOL_SOCKET,
            9999,
            Some(&mut buf),
            UserArg::Given(4),
        );
        assert_eq!(r, Err(nix::errno::Errno::ENOPROTOOPT));
        // A NULL optlen faults before the option is looked at, at SOL_SOCKET.
        let r = crate::sys::getsockopt_as(
            s.as_fd(),
            libc::SOL_SOCKET,
            9999,
            Some(&mut buf),
            UserArg::Null,
        );
        assert_eq!(r, Err(nix::errno::Errno::EFAULT));
        // Read-only options refuse a set; an unreadable value of an unknown option is
        // ENOPROTOOPT, not EFAULT.
        let one = 1i32.to_ne_bytes();
        let r = crate::sys::setsockopt_as(
            s.as_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            UserArg::Given(&one),
            4,
        );
        assert_eq!(r, Err(nix::errno::Errno::ENOPROTOOPT));
        let r = crate::sys::setsockopt_as(s.as_fd(), libc::SOL_SOCKET, 9999, UserArg::Null, 4);
        assert_eq!(r, Err(nix::errno::Errno::EFAULT));
        let r =
            crate::sys::setsockopt_as(s.as_fd(), libc::IPPROTO_IP, 9999, UserArg::Unreadable, 4);
        assert_eq!(r, Err(nix::errno::Errno::ENOPROTOOPT));
        // SO_LINGER has a value on a fresh socket.
        let r = crate::sys::getsockopt_as(
            s.as_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            Some(&mut buf),
            UserArg::Given(8),
        );
        assert_eq!(r, Ok(8));
    }
}
