//! Does an `AF_UNIX` socket still exist? Asked of the kernel by inode (`sock_diag(7)`,
//! `unix_diag`'s exact lookup), in one request and one answer.
//!
//! The supervisor needs to know when the program has closed its end of a socketpair whose
//! both directions are shut down: our end then reports a hang-up whether the program
//! closed its end or only shut it down (and may still ask for its names and options).
//! Listing the program's descriptors answers that at a `readlink` per descriptor; the
//! program's end, when nothing of ours holds it, exists exactly as long as some process
//! holds it (or it is in flight in an `SCM_RIGHTS` message), and the kernel releases it
//! from its table at the last close. The lookup walks the namespace's `AF_UNIX` sockets
//! in the kernel (about 20 ns each), where the listing costs microseconds per descriptor.
//!
//! Where the kernel cannot answer (no `unix_diag`, netlink refused), the caller lists
//! descriptors as before: [`UnixDiag::exists`] answers `None`.
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sys::socket::{
    recv, send, socket, socketpair, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType,
};

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_HDR: usize = 16;
/// `struct unix_diag_req`.
const REQ_LEN: usize = 24;

/// The diagnostic socket, opened and checked on first use.
#[derive(Debug, Default)]
pub(crate) struct UnixDiag {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Untried,
    Ready {
        fd: OwnedFd,
        seq: u32,
    },
    Unavailable,
}

impl UnixDiag {
    /// Whether the `AF_UNIX` socket of inode `ino` exists in our network namespace.
    /// `None`: the kernel cannot say (then nothing is known).
    pub(crate) fn exists(&self, ino: u64) -> Option<bool> {
        let ino = u32::try_from(ino).ok()?;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*state, State::Untried) {
            *state = open_checked().map_or(State::Unavailable, |fd| State::Ready { fd, seq: 1 });
        }
        let State::Ready { fd, seq } = &mut *state else {
            return None;
        };
        *seq = seq.wrapping_add(1);
        let answer = ask(fd, *seq, ino);
        if answer.is_none() {
            tracing::debug!(ino, "sock_diag gave no answer: listing descriptors instead");
            *state = State::Unavailable;
        }
        answer
    }
}

/// A diagnostic socket that finds a live socket of ours and not a closed one: a kernel
/// without `unix_diag` answers `ENOENT` for every inode, which must not read as closed.
fn open_checked() -> Option<OwnedFd> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .inspect_err(|e| tracing::debug!(%e, "no sock_diag socket"))
    .ok()?;
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .ok()?;
    let live = crate::emulate::inode(a.as_fd()).ok()?;
    let live = u32::try_from(live).ok()?;
    let found = ask(&fd, 0, live);
    drop((a, b));
    let gone = ask(&fd, 1, live);
    if found == Some(true) && gone == Some(false) {
        Some(fd)
    } else {
        tracing::debug!(?found, ?gone, "sock_diag cannot tell AF_UNIX sockets apart");
        None
    }
}

/// One exact lookup: `Some(true)` found, `Some(false)` not found, `None` no usable answer.
fn ask(fd: &OwnedFd, seq: u32, ino: u32) -> Option<bool> {
    let mut msg = [0u8; NLMSG_HDR + REQ_LEN];
    msg[0..4].copy_from_slice(&((NLMSG_HDR + REQ_LEN) as u32).to_ne_bytes());
    msg[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    msg[8..12].copy_from_slice(&seq.to_ne_bytes());
    // struct unix_diag_req: family, protocol, pad, states (all), ino, show (nothing),
    // cookie (INET_DIAG_NOCOOKIE twice: no cookie check).
    let req = &mut msg[NLMSG_HDR..];
    req[0] = libc::AF_UNIX as u8;
    req[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    req[8..12].copy_from_slice(&ino.to_ne_bytes());
    req[16..24].fill(0xff);
    send(fd.as_raw_fd(), &msg, MsgFlags::empty()).ok()?;
    let mut buf = [0u8; 512];
    // The kernel answers within the send: what is not queued now will not come.
    loop {
        let n = match recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(_) => return None,
        };
        match parse(&buf[..n], seq, ino) {
            Reply::Found => return Some(true),
            Reply::Absent => return Some(false),
            Reply::Stale => continue,
            Reply::Unusable => return None,
        }
    }
}

enum Reply {
    Found,
    Absent,
    /// The answer to an earlier request.
    Stale,
    Unusable,
}

fn parse(b: &[u8], seq: u32, ino: u32) -> Reply {
    let field = |at: usize| -> Option<u32> {
        b.get(at..at + 4)
            .and_then(|s| s.try_into().ok())
            .map(u32::from_ne_bytes)
    };
    let (Some(kind), Some(got_seq)) = (
        b.get(4..6)
            .and_then(|s| s.try_into().ok())
            .map(u16::from_ne_bytes),
        field(8),
    ) else {
        return Reply::Unusable;
    };
    if got_seq != seq {
        return Reply::Stale;
    }
    match kind {
        // struct unix_diag_msg: family, type, state, pad, ino.
        SOCK_DIAG_BY_FAMILY if field(NLMSG_HDR + 4) == Some(ino) => Reply::Found,
        NLMSG_ERROR => match field(NLMSG_HDR).map(|e| e as i32) {
            Some(e) if e == -libc::ENOENT => Reply::Absent,
            _ => Reply::Unusable,
        },
        _ => Reply::Unusable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_exists_until_its_last_descriptor_closes() {
        let diag = UnixDiag::default();
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let ino = crate::emulate::inode(b.as_fd()).unwrap();
        let Some(found) = diag.exists(ino) else {
            // A kernel without unix_diag: the callers list descriptors instead.
            eprintln!("this kernel has no unix_diag: nothing to check");
            return;
        };
        assert!(found);
        let dup = b.try_clone().unwrap();
        // Both directions shut down: our end hangs up, the socket is still there.
        nix::sys::socket::shutdown(a.as_raw_fd(), nix::sys::socket::Shutdown::Both).unwrap();
        nix::sys::socket::shutdown(b.as_raw_fd(), nix::sys::socket::Shutdown::Both).unwrap();
        drop(b);
        assert_eq!(diag.exists(ino), Some(true), "a duplicate still holds it");
        drop(dup);
        assert_eq!(diag.exists(ino), Some(false));
        drop(a);
    }

    #[test]
    fn garbage_answers_are_unusable() {
        assert!(matches!(parse(&[], 1, 1), Reply::Unusable));
        assert!(matches!(parse(&[0u8; 12], 1, 1), Reply::Stale));
        let mut err = [0u8; 20];
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err[8..12].copy_from_slice(&7u32.to_ne_bytes());
        err[16..20].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        assert!(matches!(parse(&err, 7, 1), Reply::Unusable));
        err[16..20].copy_from_slice(&(-libc::ENOENT).to_ne_bytes());
        assert!(matches!(parse(&err, 7, 1), Reply::Absent));
    }
}
