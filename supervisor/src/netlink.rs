//! Route netlink sockets (`NETLINK_ROUTE`), proxied so the program sees the virtual
//! network's addresses.
//!
//! Programs learn their addresses over rtnetlink (`RTM_GETADDR` dumps): glibc for
//! `getaddrinfo(AI_ADDRCONFIG)` and `getifaddrs`, dnsmasq to decide which local addresses
//! it serves (it answers a TCP query only if the connection's local address belongs to an
//! interface it enumerated). The virtual network has no kernel interface, so a real
//! netlink socket would never mention it.
//!
//! `socket(AF_NETLINK, SOCK_RAW|SOCK_DGRAM, NETLINK_ROUTE)` gives the program one end of
//! a seqpacket socketpair; the supervisor holds a real `NETLINK_ROUTE` socket and moves
//! messages between the two: requests the program sends (natively with `send`/`write`,
//! or through the trapped `sendto`/`sendmsg`) go to the kernel unchanged; the kernel's
//! answers and notifications come back unchanged, except that an address dump
//! (`RTM_GETADDR` with `NLM_F_DUMP`) gets the virtual network's addresses appended
//! before its `NLMSG_DONE`, as `RTM_NEWADDR` entries on interface 1 (`lo`, the interface
//! index `IP_PKTINFO` reports too; see `udp.rs`). `bind`, `connect`, `getsockname`,
//! `getpeername`, `setsockopt` and `getsockopt` act on the real socket, so port ids and
//! multicast groups are the kernel's; `recvfrom`/`recvmsg`/`recvmmsg` are emulated
//! through a duplicate of the program's end and report the kernel (port 0) as the
//! sender. Other netlink protocols are not touched (the call is continued).
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::socket::{self as sock, recv, send, AddressFamily, MsgFlags, SockFlag, SockType};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::task::AbortHandle;
use tracing::debug;

use crate::backend::Backend;
use crate::emulate::{errno, inode, socketpair, tri, value, Kind, Reply, Supervisor, CONTINUE};
use crate::kernel::{FdTarget, Kernel, Notification, Placement};
use crate::sys::{self, NameSide};
use crate::tracee::{self, MAX_COPY};
use crate::udp::VIRTUAL_IFINDEX;
use crate::virt::SWEEP;
use crate::wire::{self, MsgHdr, MSGHDR_LEN};

/// Largest netlink datagram we move (the kernel's dumps use at most 32 KiB).
const NL_BUF: usize = 64 * 1024;

/// One proxied route netlink socket.
pub(crate) struct NlSocket {
    /// The real `NETLINK_ROUTE` socket (non-blocking).
    real: Arc<AsyncFd<OwnedFd>>,
    /// Duplicate of the program's end, for emulated receives.
    theirs: AsyncFd<OwnedFd>,
    /// Address dumps under way: sequence number → family asked for (0: all).
    dumps: Arc<Mutex<HashMap<u32, u8>>>,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Drop for NlSocket {
    fn drop(&mut self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
    }
}

/// Read one datagram from the kernel's route socket with a buffer of its size, at least a
/// page. The kernel sizes a dump's datagrams by the largest buffer its reader ever
/// offered (up to 32 KiB): reading with a large buffer would make it pack more than a
/// program's page-sized buffer holds (glibc's `getifaddrs` reads 4 KiB and fails on
/// `MSG_TRUNC`), as soon as a host has a few interfaces.
fn recv_sized(fd: std::os::fd::RawFd, buf: &mut [u8]) -> Result<usize, Errno> {
    const PAGE: usize = 4096;
    let peek = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC;
    let cap = buf.len();
    let full = recv(fd, &mut buf[..PAGE.min(cap)], peek)?;
    let want = full.clamp(PAGE.min(cap), cap);
    recv(fd, &mut buf[..want], MsgFlags::MSG_DONTWAIT)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Note the address dumps a request datagram asks for.
fn note_dumps(dumps: &Mutex<HashMap<u32, u8>>, request: &[u8]) {
    for m in wire::parse_nlmsgs(request) {
        if m.ty == wire::RTM_GETADDR && m.flags & wire::NLM_F_DUMP == wire::NLM_F_DUMP {
            lock(dumps).insert(m.seq, m.family.unwrap_or(0));
        }
    }
}

/// The datagrams to hand the program for one datagram from the kernel: unchanged, or,
/// when it ends an address dump we noted, split before its `NLMSG_DONE` with the
/// virtual addresses (of the family asked for) placed in front of it.
fn rewrite(
    dumps: &Mutex<HashMap<u32, u8>>,
    addrs: &[(std::net::IpAddr, u8)],
    d: &[u8],
) -> Vec<Vec<u8>> {
    for m in wire::parse_nlmsgs(d) {
        if m.ty != wire::NLMSG_DONE {
            continue;
        }
        let Some(family) = lock(dumps).remove(&m.seq) else {
            continue;
        };
        let wanted = |ip: &std::net::IpAddr| match family as i32 {
            libc::AF_INET => ip.is_ipv4(),
            libc::AF_INET6 => ip.is_ipv6(),
            _ => true,
        };
        let mut tail: Vec<u8> = Vec::new();
        for (ip, prefix) in addrs.iter().filter(|(ip, _)| wanted(ip)) {
            tail.extend(wire::emit_newaddr(
                *ip,
                *prefix,
                VIRTUAL_IFINDEX as u32,
                "lo",
                m.seq,
                m.pid,
            ));
        }
        if tail.is_empty() {
            break;
        }
        tail.extend_from_slice(&d[m.start..]);
        let head = &d[..m.start];
        return if head.is_empty() {
            vec![tail]
        } else {
            vec![head.to_vec(), tail]
        };
    }
    vec![d.to_vec()]
}

impl<K: Kernel, B: Backend> Supervisor<K, B> {
    /// `socket(AF_NETLINK, ...)`: proxy `NETLINK_ROUTE`, continue anything else.
    pub(crate) fn netlink_socket(self: &Arc<Self>, n: &Notification) -> Reply {
        let raw_type = n.args[1] as u32 as i32;
        let protocol = n.args[2] as u32 as i32;
        let flags = raw_type & (libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
        let ty = raw_type & !flags;
        if protocol != libc::NETLINK_ROUTE || (ty != libc::SOCK_RAW && ty != libc::SOCK_DGRAM) {
            return CONTINUE;
        }
        let real = tri!(sock::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            sock::SockProtocol::NetlinkRoute,
        ));
        let real = Arc::new(tri!(
            sys::async_fd(real, Interest::READABLE).map_err(|_| Errno::ENOBUFS)
        ));
        let (theirs, ours) = tri!(socketpair(Kind::Dgram, flags & libc::SOCK_NONBLOCK != 0));
        let ino = tri!(inode(theirs.as_fd()));
        let dup = tri!(theirs.try_clone().map_err(|_| Errno::EMFILE));
        let nl = Arc::new(NlSocket {
            real: real.clone(),
            theirs: tri!(sys::async_fd(dup, Interest::READABLE).map_err(|_| Errno::ENOBUFS)),
            dumps: Arc::new(Mutex::new(HashMap::new())),
            tasks: Mutex::new(Vec::new()),
        });
        self.netlinks().insert(ino, nl.clone());
        self.netlink_seen
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let how = Placement::AnswerWithNew {
            cloexec: flags & libc::SOCK_CLOEXEC != 0,
        };
        if let Err(e) = self.kernel.add_fd(n.id, theirs.as_fd(), how) {
            self.netlinks().remove(&ino);
            return if e == Errno::ENOENT {
                Reply::Done
            } else {
                errno(e)
            };
        }
        drop(theirs);
        debug!(pid = n.pid, ino, "netlink route socket");

        // Kernel → program.
        let writer = tri!(ours.try_clone().map_err(|_| Errno::EMFILE));
        let writer = tri!(sys::async_fd(writer, Interest::WRITABLE).map_err(|_| Errno::ENOBUFS));
        let backend = self.backend.clone();
        let dumps = nl.dumps.clone();
        let down_real = real.clone();
        let down = tokio::spawn(async move {
            let mut buf = vec![0u8; NL_BUF];
            loop {
                let Ok(mut guard) = down_real.readable().await else {
                    return;
                };
                let got = match recv_sized(down_real.get_ref().as_raw_fd(), &mut buf) {
                    Ok(len) => len,
                    Err(Errno::EAGAIN) => {
                        guard.clear_ready();
                        continue;
                    }
                    // Overrun: the kernel dropped notifications; nothing to pass on.
                    Err(Errno::ENOBUFS | Errno::EINTR) => continue,
                    Err(_) => return,
                };
                let addrs = backend.local_addresses();
                for d in rewrite(&dumps, &addrs, &buf[..got]) {
                    loop {
                        match send(
                            writer.get_ref().as_raw_fd(),
                            &d,
                            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                        ) {
                            Ok(_) => break,
                            Err(Errno::EAGAIN) => {
                                let Ok(mut g) = writer.writable().await else {
                                    return;
                                };
                                g.clear_ready();
                            }
                            Err(Errno::EINTR) => {}
                            Err(_) => return,
                        }
                    }
                }
            }
        });
        // Program (native send/write) → kernel.
        let dumps = nl.dumps.clone();
        let up = tokio::spawn(async move {
            let Ok(afd) = sys::async_fd(ours, Interest::READABLE) else {
                return;
            };
            let mut buf = vec![0u8; NL_BUF];
            loop {
                let Ok(mut guard) = afd.readable().await else {
                    return;
                };
                match recv(afd.get_ref().as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                    Ok(0) if guard.ready().is_read_closed() => return,
                    Ok(len) => {
                        note_dumps(&dumps, &buf[..len]);
                        if let Err(e) = send(
                            real.get_ref().as_raw_fd(),
                            &buf[..len],
                            MsgFlags::MSG_DONTWAIT,
                        ) {
                            debug!(%e, "netlink request not passed on");
                        }
                    }
                    Err(Errno::EAGAIN) => guard.clear_ready(),
                    Err(Errno::EINTR) => {}
                    Err(_) => return,
                }
            }
        });
        // Close detection (we hold a duplicate of the program's end).
        let me = Arc::downgrade(self);
        let sweeper = tokio::spawn(async move {
            loop {
                tokio::time::sleep(SWEEP).await;
                let Some(me) = me.upgrade() else { return };
                if !me.still_held(ino) {
                    me.netlinks().remove(&ino);
                    return;
                }
            }
        });
        lock(&nl.tasks).extend([
            down.abort_handle(),
            up.abort_handle(),
            sweeper.abort_handle(),
        ]);
        Reply::Done
    }

    /// Resolve fd argument 0 to one of our netlink sockets.
    pub(crate) fn netlink_lookup(&self, n: &Notification) -> Option<Arc<NlSocket>> {
        let fd = n.args[0] as u32 as i32;
        match self.kernel.fd_target(n.pid, fd).ok()? {
            FdTarget::Socket(ino) => self.netlinks().get(&ino).cloned(),
            FdTarget::Other => None,
        }
    }

    /// A trapped call on a proxied netlink socket.
    pub(crate) async fn netlink_call(&self, n: &Notification, nl: Arc<NlSocket>) -> Reply {
        let real = nl.real.get_ref().as_fd();
        match n.nr {
            libc::SYS_bind | libc::SYS_connect => {
                let bytes = tri!(tracee::read_sockaddr(
                    &*self.kernel,
                    n.pid,
                    n.args[1],
                    n.args[2]
                ));
                if !self.kernel.id_valid(n.id) {
                    return Reply::Done;
                }
                tri!(sys::connect_bytes(real, &bytes, n.nr == libc::SYS_bind));
                value(0)
            }
            libc::SYS_getsockname | libc::SYS_getpeername => {
                let side = if n.nr == libc::SYS_getsockname {
                    NameSide::Local
                } else {
                    NameSide::Peer
                };
                let name = tri!(sys::socket_name(real, side));
                tri!(tracee::write_with_len(
                    &*self.kernel,
                    n.pid,
                    n.args[1],
                    n.args[2],
                    &name,
                    true
                ));
                value(0)
            }
            libc::SYS_setsockopt => {
                let len = n.args[4] as u32 as i32;
                if len < 0 {
                    return errno(Errno::EINVAL);
                }
                let val = tri!(tracee::read_bytes(
                    &*self.kernel,
                    n.pid,
                    n.args[3],
                    (len as usize).min(4096)
                ));
                if !self.kernel.id_valid(n.id) {
                    return Reply::Done;
                }
                tri!(sys::setsockopt_bytes(
                    real,
                    n.args[1] as u32 as i32,
                    n.args[2] as u32 as i32,
                    &val
                ));
                value(0)
            }
            libc::SYS_getsockopt => {
                let mut cap = [0u8; 4];
                tri!(self.kernel.read_memory(n.pid, n.args[4], &mut cap));
                let cap = i32::from_ne_bytes(cap);
                if cap < 0 {
                    return errno(Errno::EINVAL);
                }
                let mut buf = vec![0u8; (cap as usize).min(4096)];
                let got = tri!(sys::getsockopt_bytes(
                    real,
                    n.args[1] as u32 as i32,
                    n.args[2] as u32 as i32,
                    &mut buf
                ));
                tri!(tracee::write_with_len(
                    &*self.kernel,
                    n.pid,
                    n.args[3],
                    n.args[4],
                    &buf[..got.min(buf.len())],
                    false
                ));
                value(0)
            }
            libc::SYS_sendto => {
                let len = n.args[2] as usize;
                if len > MAX_COPY {
                    return errno(Errno::EMSGSIZE);
                }
                let data = tri!(tracee::read_bytes(&*self.kernel, n.pid, n.args[1], len));
                let dest = tri!(tracee::read_sockaddr(
                    &*self.kernel,
                    n.pid,
                    n.args[4],
                    n.args[5]
                ));
                if !self.kernel.id_valid(n.id) {
                    return Reply::Done;
                }
                note_dumps(&nl.dumps, &data);
                let flags = n.args[3] as u32 as i32 & libc::MSG_DONTWAIT;
                value(tri!(sys::sendto_bytes(real, &data, flags, &dest)) as i64)
            }
            libc::SYS_sendmsg | libc::SYS_sendmmsg => {
                if n.nr == libc::SYS_sendmmsg && n.args[2] as u32 == 0 {
                    return value(0);
                }
                let (hdr, data) = tri!(self.read_msghdr_data(n.pid, n.args[1]));
                let dest = if hdr.name == 0 {
                    wire::emit_sockaddr_nl(0, 0)
                } else {
                    tri!(tracee::read_sockaddr(
                        &*self.kernel,
                        n.pid,
                        hdr.name,
                        u64::from(hdr.namelen)
                    ))
                };
                if !self.kernel.id_valid(n.id) {
                    return Reply::Done;
                }
                note_dumps(&nl.dumps, &data);
                let sent = tri!(sys::sendto_bytes(real, &data, 0, &dest));
                if n.nr == libc::SYS_sendmmsg {
                    tri!(self.kernel.write_memory(
                        n.pid,
                        n.args[1] + MSGHDR_LEN as u64,
                        &(sent as u32).to_ne_bytes()
                    ));
                    return value(1);
                }
                value(sent as i64)
            }
            libc::SYS_recvfrom | libc::SYS_recvmsg | libc::SYS_recvmmsg => {
                self.netlink_recv(n, &nl).await
            }
            libc::SYS_listen | libc::SYS_accept | libc::SYS_accept4 => errno(Errno::EOPNOTSUPP),
            libc::SYS_shutdown => value(0),
            _ => CONTINUE,
        }
    }

    /// An emulated receive: the next datagram through our duplicate of the program's end,
    /// from the kernel (port 0).
    async fn netlink_recv(&self, n: &Notification, nl: &NlSocket) -> Reply {
        let flags = match n.nr {
            libc::SYS_recvmsg => n.args[2],
            _ => n.args[3],
        } as u32 as i32;
        let peek = flags & libc::MSG_PEEK != 0;
        let nonblocking = flags & libc::MSG_DONTWAIT != 0 || tri!(self.program_nonblocking(n));
        let mut tv = [0u8; 16];
        let deadline = sys::getsockopt_bytes(
            nl.real.get_ref().as_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &mut tv,
        )
        .ok()
        .and_then(|_| wire::parse_timeval(&tv))
        .filter(|t| !t.is_zero())
        .map(|t| tokio::time::Instant::now() + t);
        let mut buf = vec![0u8; NL_BUF];
        let full = loop {
            let mut f = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC;
            if peek {
                f |= MsgFlags::MSG_PEEK;
            }
            match recv(nl.theirs.get_ref().as_raw_fd(), &mut buf, f) {
                Ok(full) => break full,
                Err(Errno::EAGAIN) if nonblocking => return errno(Errno::EAGAIN),
                Err(Errno::EAGAIN) => {
                    let expiry = async {
                        match deadline {
                            Some(t) => tokio::time::sleep_until(t).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        g = nl.theirs.readable() => {
                            if let Ok(mut g) = g {
                                g.clear_ready();
                            }
                        }
                        _ = self.given_up(n) => return self.give_up_reply(n, false),
                        _ = expiry => return errno(Errno::EAGAIN),
                    }
                }
                Err(e) => return errno(e),
            }
        };
        let data = &buf[..full.min(buf.len())];
        let name = wire::emit_sockaddr_nl(0, 0);
        let report = |copied: usize| {
            if flags & libc::MSG_TRUNC != 0 {
                full
            } else {
                copied
            }
        };
        if n.nr == libc::SYS_recvfrom {
            let len = (n.args[2] as usize).min(data.len());
            tri!(self.kernel.write_memory(n.pid, n.args[1], &data[..len]));
            if n.args[4] != 0 {
                tri!(tracee::write_with_len(
                    &*self.kernel,
                    n.pid,
                    n.args[4],
                    n.args[5],
                    &name,
                    true
                ));
            }
            return value(report(len) as i64);
        }
        let at = n.args[1];
        let mut raw = [0u8; MSGHDR_LEN];
        tri!(self.kernel.read_memory(n.pid, at, &mut raw));
        let hdr = MsgHdr::parse(&raw);
        if hdr.iovlen > 1024 {
            return errno(Errno::EMSGSIZE);
        }
        let iov = tri!(tracee::read_bytes(
            &*self.kernel,
            n.pid,
            hdr.iov,
            hdr.iovlen as usize * 16
        ));
        let mut done = 0usize;
        for (base, len) in wire::parse_iovecs(&iov) {
            if done >= data.len() {
                break;
            }
            let chunk = (len as usize).min(data.len() - done);
            tri!(self
                .kernel
                .write_memory(n.pid, base, &data[done..done + chunk]));
            done += chunk;
        }
        if hdr.name != 0 {
            let cap = (hdr.namelen as usize).min(name.len());
            tri!(self.kernel.write_memory(n.pid, hdr.name, &name[..cap]));
            tri!(self
                .kernel
                .write_memory(n.pid, at + 8, &(name.len() as u32).to_ne_bytes()));
        }
        tri!(self
            .kernel
            .write_memory(n.pid, at + 40, &0u64.to_ne_bytes()));
        let out_flags = if done < full { libc::MSG_TRUNC } else { 0 };
        tri!(self
            .kernel
            .write_memory(n.pid, at + 48, &out_flags.to_ne_bytes()));
        if n.nr == libc::SYS_recvmmsg {
            tri!(self.kernel.write_memory(
                n.pid,
                at + MSGHDR_LEN as u64,
                &(report(done) as u32).to_ne_bytes()
            ));
            return value(1);
        }
        value(report(done) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_dump_gets_the_virtual_addresses_before_its_end() {
        let dumps = Mutex::new(HashMap::new());
        // The program asks for IPv4 addresses (rtgenmsg family AF_INET), seq 5.
        let mut req = vec![0u8; 17];
        req[0..4].copy_from_slice(&17u32.to_ne_bytes());
        req[4..6].copy_from_slice(&wire::RTM_GETADDR.to_ne_bytes());
        req[6..8].copy_from_slice(&(wire::NLM_F_DUMP | 1).to_ne_bytes());
        req[8..12].copy_from_slice(&5u32.to_ne_bytes());
        req[16] = libc::AF_INET as u8;
        note_dumps(&dumps, &req);
        let addrs = vec![
            ("10.7.0.1".parse().unwrap(), 24),
            ("fd7a::1".parse().unwrap(), 64),
        ];
        let host = wire::emit_newaddr("192.0.2.2".parse().unwrap(), 24, 4, "eth0", 5, 99);
        let mut done = vec![0u8; 20];
        done[0..4].copy_from_slice(&20u32.to_ne_bytes());
        done[4..6].copy_from_slice(&wire::NLMSG_DONE.to_ne_bytes());
        done[8..12].copy_from_slice(&5u32.to_ne_bytes());
        done[12..16].copy_from_slice(&99u32.to_ne_bytes());
        let mut kernel = host.clone();
        kernel.extend_from_slice(&done);
        let out = rewrite(&dumps, &addrs, &kernel);
        assert_eq!(out.len(), 2, "the host's entries, then ours and the end");
        assert_eq!(out[0], host);
        let ours = wire::parse_nlmsgs(&out[1]);
        assert_eq!(
            ours.len(),
            2,
            "one IPv4 address (the dump asked for AF_INET), then DONE"
        );
        assert_eq!(
            (ours[0].ty, ours[0].seq, ours[0].pid),
            (wire::RTM_NEWADDR, 5, 99)
        );
        assert_eq!(ours[0].family, Some(libc::AF_INET as u8));
        assert_eq!(ours[1].ty, wire::NLMSG_DONE);
        // Once only: another DONE with that sequence passes unchanged.
        assert_eq!(rewrite(&dumps, &addrs, &done), vec![done.clone()]);
    }
}
