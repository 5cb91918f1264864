//! Permission checks made on the program's behalf.
//!
//! The supervisor creates kernel sockets for the program and serves the virtual network
//! itself, so the kernel never checks the program's own rights there: a program that
//! dropped to an unprivileged uid under a root `ztrun` would otherwise bind port 80 on
//! loopback, and any program would on the virtual network. Every check Linux makes on a
//! socket call is made here against the *calling thread's* credentials and user
//! namespace (`/proc/<tid>/status`, `/proc/<tid>/ns/user`), as `ns_capable(net->user_ns,
//! CAP_...)` does in the kernel: a capability counts only in the user namespace that
//! owns the network namespace (a program that made its own user namespace holds every
//! capability there, and none here). When the credentials cannot be read, the check
//! fails closed.
//!
//! A program that moved to a network namespace of its own (`unshare(CLONE_NEWNET)`;
//! entering an existing one is refused by the filter) has left every network the
//! supervisor serves, as it would have left the host's: its new sockets are the kernel's,
//! made in that namespace with its own credentials.
use std::os::fd::AsFd;

use crate::backend::Backend;
use crate::emulate::Supervisor;
use crate::kernel::Kernel;

/// `CAP_NET_BIND_SERVICE`.
pub(crate) const CAP_NET_BIND_SERVICE: u32 = 10;
/// `CAP_NET_ADMIN`.
pub(crate) const CAP_NET_ADMIN: u32 = 12;
/// `CAP_NET_RAW`.
pub(crate) const CAP_NET_RAW: u32 = 13;

/// What the checks compare a caller with, read once when the supervisor starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostNet {
    /// The supervisor's network namespace (where its kernel sockets live).
    pub(crate) netns: Option<u64>,
    /// The user namespace owning it.
    pub(crate) owner: Option<u64>,
    /// `net.ipv4.ip_unprivileged_port_start` there (1024 on most hosts, 0 in Docker).
    pub(crate) unprivileged_port_start: u16,
}

impl HostNet {
    /// Read from `/proc/self` and `/proc/sys` (defaults where unreadable: no namespace
    /// comparison, ports below 1024 privileged).
    pub(crate) fn read() -> Self {
        let ns = std::fs::File::open("/proc/self/ns/net").ok();
        Self {
            netns: crate::kernel::ns_inode("/proc/self/ns/net").ok(),
            owner: ns.and_then(|f| crate::sys::ns_owner(f.as_fd()).ok()),
            unprivileged_port_start: std::fs::read_to_string(
                "/proc/sys/net/ipv4/ip_unprivileged_port_start",
            )
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .map_or(1024, |p| p.min(65536) as u16),
        }
    }
}

impl<K: Kernel, B: Backend> Supervisor<K, B> {
    /// Does thread `pid` hold `cap` over the supervisor's network namespace?
    pub(crate) fn capable(&self, pid: u32, cap: u32) -> bool {
        let Ok(c) = self.kernel.credentials(pid) else {
            return false;
        };
        let here = match (c.user_ns, self.host_net().owner) {
            (None, _) => true,
            (Some(theirs), Some(owner)) => theirs == owner,
            (Some(_), None) => false,
        };
        here && c.has(cap)
    }

    /// May thread `pid` bind `port`? (`inet_port_requires_bind_service`)
    pub(crate) fn may_bind_port(&self, pid: u32, port: u16) -> bool {
        port == 0
            || port >= self.host_net().unprivileged_port_start
            || self.capable(pid, CAP_NET_BIND_SERVICE)
    }

    /// Has thread `pid` moved to a network namespace other than the supervisor's?
    /// Unknown (unreadable) counts as not: the call is then emulated, on the networks
    /// the supervisor serves, never on the host's.
    pub(crate) fn left_our_netns(&self, pid: u32) -> bool {
        match (self.kernel.net_namespace(pid), self.host_net().netns) {
            (Ok(theirs), Some(ours)) => theirs != ours,
            _ => false,
        }
    }

    /// The capability a socket option needs on Linux, if any (`sock_setsockopt`,
    /// `do_ip_setsockopt`): the supervisor sets it on kernel sockets with its own
    /// rights, so the program's are checked first.
    pub(crate) fn option_capability(level: i32, name: i32, value: &[u8]) -> Option<u32> {
        let int = value
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_ne_bytes);
        match (level, name) {
            (libc::SOL_SOCKET, libc::SO_MARK)
            | (libc::SOL_SOCKET, libc::SO_RCVBUFFORCE)
            | (libc::SOL_SOCKET, libc::SO_SNDBUFFORCE) => Some(CAP_NET_ADMIN),
            // Turning debugging off is anyone's (sock.c: `if (val && !capable)`).
            (libc::SOL_SOCKET, libc::SO_DEBUG) if int != Some(0) => Some(CAP_NET_ADMIN),
            // Priorities 0-6 are anyone's.
            (libc::SOL_SOCKET, libc::SO_PRIORITY) if !matches!(int, Some(0..=6)) => {
                Some(CAP_NET_ADMIN)
            }
            (libc::SOL_SOCKET, libc::SO_BINDTODEVICE | libc::SO_BINDTOIFINDEX) => Some(CAP_NET_RAW),
            (libc::IPPROTO_IP, libc::IP_TRANSPARENT)
            | (libc::IPPROTO_IPV6, libc::IPV6_TRANSPARENT) => Some(CAP_NET_ADMIN),
            // The supervisor (options.rs) and its kernel sockets hold these rights; a
            // program without them must not borrow them: repair mode (tcp.c,
            // tcp_can_repair_sock) and IPsec policies (ip_sockglue.c, ipv6_sockglue.c).
            (libc::IPPROTO_TCP, libc::TCP_REPAIR)
            | (libc::IPPROTO_IP, libc::IP_IPSEC_POLICY | libc::IP_XFRM_POLICY)
            | (libc::IPPROTO_IPV6, libc::IPV6_IPSEC_POLICY | libc::IPV6_XFRM_POLICY) => {
                Some(CAP_NET_ADMIN)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::fake::FakeKernel;
    use crate::network::Networks;

    #[test]
    fn the_host_network_is_read() {
        let h = HostNet::read();
        assert!(h.netns.is_some());
        assert!(h.unprivileged_port_start <= 1024);
    }

    #[test]
    fn options_that_need_a_capability() {
        type S = Supervisor<FakeKernel, Networks>;
        let one = 1i32.to_ne_bytes();
        let seven = 7i32.to_ne_bytes();
        assert_eq!(
            S::option_capability(libc::SOL_SOCKET, libc::SO_MARK, &one),
            Some(CAP_NET_ADMIN)
        );
        assert_eq!(
            S::option_capability(libc::SOL_SOCKET, libc::SO_PRIORITY, &one),
            None
        );
        assert_eq!(
            S::option_capability(libc::SOL_SOCKET, libc::SO_PRIORITY, &seven),
            Some(CAP_NET_ADMIN)
        );
        assert_eq!(
            S::option_capability(libc::SOL_SOCKET, libc::SO_BINDTODEVICE, b"eth0\0"),
            Some(CAP_NET_RAW)
        );
        assert_eq!(
            S::option_capability(libc::SOL_SOCKET, libc::SO_REUSEADDR, &one),
            None
        );
        assert_eq!(
            S::option_capability(libc::IPPROTO_TCP, libc::TCP_REPAIR, &one),
            Some(CAP_NET_ADMIN)
        );
        let zero = 0i32.to_ne_bytes();
        assert_eq!(
            S::option_capability(libc::SOL_SOCKET, libc::SO_DEBUG, &zero),
            None
        );
        assert_eq!(
            S::option_capability(libc::SOL_SOCKET, libc::SO_DEBUG, &one),
            Some(CAP_NET_ADMIN)
        );
    }
}
