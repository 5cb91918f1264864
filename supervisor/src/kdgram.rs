//! UDP/ICMP sockets served by a real kernel socket (loopback, or the host with
//! fall-through).
//!
//! Unlike a connected or listening TCP socket, a kernel datagram socket could later be
//! aimed anywhere with `sendto`/`sendmsg`/`connect`. So the supervisor keeps a handle on
//! it (under the kernel socket's inode, closed by the same sweep as virtual listeners)
//! and emulates every address-bearing call on it: the destination is copied out, routed
//! like any other, and the send or connect is performed on our handle. Receives and
//! every other call are continued natively. The kernel socket is also bound to the
//! loopback device when it serves loopback, so even a call that slipped past could only
//! reach loopback.
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{send, MsgFlags};

use crate::backend::{route, Backend, Route};
use crate::emulate::{errno, inode, tri, value, Kind, Phase, Reply, Supervisor, VSocket, CONTINUE};
use crate::kernel::{Kernel, Notification, Response};
use crate::options::SetCall;
use crate::sys;
use crate::tracee;
use crate::udp::MMSGHDR_LEN;
use crate::virt::SWEEP;
use crate::wire::{self, SockAddr, MSGHDR_LEN};

impl<K: Kernel, B: Backend> Supervisor<K, B> {
    /// Track kernel datagram socket `r`, just swapped into the program.
    pub(crate) fn adopt_kernel_dgram(self: &Arc<Self>, vs: &VSocket<B>, r: Arc<OwnedFd>) {
        let (Ok(ino), Ok(placeholder)) = (inode(r.as_fd()), r.try_clone()) else {
            return;
        };
        let entry = Arc::new(vs.successor(placeholder, Phase::KernelDgram(r)));
        self.table().insert(ino, entry.clone());
        self.kernel_dgrams.store(true, Ordering::Relaxed);
        let me = Arc::downgrade(self);
        let weak = Arc::downgrade(&entry);
        drop(entry);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SWEEP).await;
                let (Some(me), Some(entry)) = (me.upgrade(), weak.upgrade()) else {
                    return;
                };
                if !me.still_held(ino) {
                    me.forget(ino, &entry);
                    return;
                }
            }
        });
    }

    /// Is `dest` allowed for a kernel socket? (loopback, or the host with fall-through)
    pub(crate) fn kernel_dest(&self, dest: SocketAddr) -> bool {
        matches!(
            route(&*self.backend, self.policy(), dest, true),
            Route::Loopback | Route::Host
        )
    }

    /// A call on a kernel datagram socket of ours.
    pub(crate) async fn kernel_dgram_call(
        self: &Arc<Self>,
        n: &Notification,
        vs: &VSocket<B>,
        r: Arc<OwnedFd>,
    ) -> Reply {
        match n.nr {
            libc::SYS_connect => {
                let bytes = tri!(tracee::read_sockaddr(
                    &*self.kernel,
                    n.pid,
                    n.args[1],
                    n.args[2]
                ));
                if !self.kernel.id_valid(n.id) {
                    return Reply::Done;
                }
                let addr = match tri!(vs.parse_destination(&bytes)) {
                    SockAddr::Unspec => vec![0u8; 16],
                    SockAddr::Inet(dest) if self.kernel_dest(dest) => wire::emit_sockaddr(dest),
                    SockAddr::Inet(_) => return errno(Errno::ENETUNREACH),
                };
                tri!(sys::connect_bytes(r.as_fd(), &addr, false));
                value(0)
            }
            libc::SYS_sendto => {
                let (dest, data) = tri!(self.read_sendto(n));
                self.kernel_send(n, vs, &r, dest, &data, n.args[3] as u32 as i32)
                    .await
            }
            libc::SYS_sendmsg => {
                let flags = n.args[2] as u32 as i32;
                let (hdr, dest, data) = tri!(self.read_send_msghdr(n.pid, n.args[1]));
                // Checked as the virtual path checks them, then not applied: the
                // program's control messages could choose an outgoing interface.
                tri!(self.check_send_control(n.pid, &hdr, |ip| ip.is_loopback()));
                self.kernel_send(n, vs, &r, dest, &data, flags).await
            }
            libc::SYS_sendmmsg => {
                // sendmmsg(2): each message in turn; an error after the first one ends
                // the call with the count sent so far.
                let flags = n.args[3] as u32 as i32;
                let vlen = (n.args[2] as u32).min(1024) as u64;
                let mut count = 0u64;
                while count < vlen {
                    let at = n.args[1] + count * MMSGHDR_LEN;
                    let read = self
                        .read_send_msghdr(n.pid, at)
                        .and_then(|(hdr, dest, data)| {
                            self.check_send_control(n.pid, &hdr, |ip| ip.is_loopback())?;
                            Ok((dest, data))
                        });
                    let (dest, data) = match read {
                        Ok(x) => x,
                        Err(e) if count == 0 => return errno(e),
                        Err(_) => break,
                    };
                    match self.kernel_send(n, vs, &r, dest, &data, flags).await {
                        Reply::Answer(Response::Value(sent)) => {
                            tri!(self.kernel.write_memory(
                                n.pid,
                                at + MSGHDR_LEN as u64,
                                &(sent as u32).to_ne_bytes()
                            ));
                            count += 1;
                        }
                        reply if count == 0 => return reply,
                        _ => break,
                    }
                }
                value(count as i64)
            }
            // A raw socket's header option is decided here, on our copy (raw.rs).
            libc::SYS_setsockopt
                if vs.kind == Kind::Raw
                    && matches!(
                        (n.args[1] as u32 as i32, n.args[2] as u32 as i32),
                        (libc::IPPROTO_IP, libc::IP_HDRINCL)
                            | (libc::IPPROTO_IPV6, libc::IPV6_HDRINCL)
                    ) =>
            {
                let call = tri!(SetCall::read(&*self.kernel, n.pid, &n.args));
                if !self.kernel.id_valid(n.id) {
                    return Reply::Done;
                }
                if let Some(e) = crate::raw::refused_option(vs, call.level, call.name, call.bytes())
                {
                    return errno(e);
                }
                tri!(sys::setsockopt_as(
                    r.as_fd(),
                    call.level,
                    call.name,
                    call.arg(),
                    call.len
                ));
                value(0)
            }
            // Receives, names, options, close: the kernel socket answers itself.
            _ => CONTINUE,
        }
    }

    /// Send `data` from our handle, to `dest` (our copy, routed) or to the connected peer.
    async fn kernel_send(
        &self,
        n: &Notification,
        vs: &VSocket<B>,
        r: &OwnedFd,
        dest: Option<Vec<u8>>,
        data: &[u8],
        flags: i32,
    ) -> Reply {
        if !self.kernel.id_valid(n.id) {
            return Reply::Done;
        }
        let dest = match dest {
            None => None,
            Some(bytes) => match tri!(vs.parse_destination(&bytes)) {
                SockAddr::Unspec => return errno(Errno::EAFNOSUPPORT),
                SockAddr::Inet(d) if self.kernel_dest(d) => Some(wire::emit_sockaddr(d)),
                SockAddr::Inet(_) => return errno(Errno::ENETUNREACH),
            },
        };
        let nonblocking = flags & libc::MSG_DONTWAIT != 0 || tri!(self.program_nonblocking(n));
        // MSG_OOB goes through: the kernel socket refuses it as Linux would.
        let keep = libc::MSG_DONTROUTE | libc::MSG_CONFIRM | libc::MSG_MORE | libc::MSG_OOB;
        let flags = (flags & keep) | libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
        loop {
            let sent = match &dest {
                Some(d) => sys::sendto_bytes(r.as_fd(), data, flags, d),
                None => send(r.as_raw_fd(), data, MsgFlags::from_bits_retain(flags)),
            };
            match sent {
                Err(Errno::EAGAIN) if !nonblocking => {
                    if !self.kernel.id_valid(n.id) {
                        return Reply::Done;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Ok(n) => return value(n as i64),
                Err(e) => return errno(e),
            }
        }
    }
}
