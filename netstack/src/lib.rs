//! A user-space TCP/IP stack per virtual network, on smoltcp, fed with Ethernet frames.
//!
//! It knows nothing of seccomp, processes, file descriptors or the overlay: frames come in
//! and go out through queues ([`FrameLink`]), and the caller (the launcher) joins those
//! queues to a network. The supervisor uses the socket API: [`Stack::tcp_connect`],
//! [`Stack::tcp_listen`], [`Stack::udp_bind`], [`Stack::icmp_bind`].
//!
//! # Layers
//!
//! ```text
//!   TcpStream / TcpListener      UdpSocket        IcmpSocket
//!        |                          |                 |
//!   smoltcp TCP, in many small     direct datagram queues
//!   Interfaces ("shards")          (no smoltcp socket)
//!        \__________________________|_________________/
//!                 demultiplexer: hash on 4-tuple / port / ident
//!                                   |
//!                 Ethernet, ARP, NDP, ICMP echo answers (once per stack)
//!                                   |
//!                          FrameLink queues (bounded)
//! ```
//!
//! smoltcp checks every socket of an interface for every packet and at every poll. To keep
//! per-packet work independent of the number of idle connections, each TCP connection
//! is placed in a small shard (a smoltcp `Interface` of medium IP holding at most a handful
//! of sockets), and the demultiplexer hands each segment straight to its shard.
//! smoltcp's listening socket takes one connection; here a listener is a table entry, and
//! each admitted SYN gets a fresh socket, up to the backlog (then SYNs go unanswered, as on
//! Linux). docs/NETSTACK.md records the measurements behind these choices.
//!
//! # Driving
//!
//! [`Stack::new`] spawns a driver task on the current tokio runtime. It wakes on events
//! only: a frame pushed into the stack, room in the outbound queue, or the earliest smoltcp
//! timer of any shard. Socket operations poll their own shard inline, in the caller's task,
//! so a write goes on the wire without a hand-off to another thread.
//!
//! # What it refuses
//!
//! No IP fragmentation (datagrams beyond the MTU fail with `EMSGSIZE`; received IPv4
//! fragments are dropped), no SACK, no IP options, no multicast group membership. Raw
//! sockets only for ICMP, ICMPv6 and sending whole IPv4 packets ([`Stack::raw_bind`]).
//! Received checksums are not verified: the overlay authenticates every frame.
//!
//! ICMP errors about UDP datagrams are reported as Linux reports them to a socket without
//! `IP_RECVERR`: a hard error (port unreachable and the like) to a connected socket of that
//! flow, once, by its next receive.
// Unsafe code only in `ring` (the connection buffers' mapping).
#![deny(unsafe_code)]

mod config;
mod core;
mod error;
mod icmp;
mod link;
mod raw;
mod ring;
mod tcp;
mod trim;
mod udp;
mod wire;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub use crate::config::{prefix_contains, Route, StackConfig, DEFAULT_MTU};
pub use crate::error::{Error, Unreachable};
pub use crate::icmp::{IcmpSocket, IpFamily};
pub use crate::link::FrameLink;
pub use crate::raw::{RawSocket, PROTO_RAW};
pub use crate::tcp::{Congestion, TcpInfo, TcpListener, TcpOptions, TcpState, TcpStream};
pub use crate::udp::UdpSocket;

use crate::config::Net;
use crate::core::Shared;
use crate::link::FrameQueue;

/// One user-space TCP/IP stack, attached to one virtual network.
///
/// Cheap to clone (a reference count); `Send + Sync`. The stack runs while any handle or
/// socket lives; then its driver stops and the [`FrameLink`] reports end of stream.
#[derive(Debug, Clone)]
pub struct Stack {
    shared: Arc<Shared>,
}

/// Counters describing a stack, for tests and benchmarks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackStats {
    /// smoltcp interfaces in use (shards), including the one that answers stray segments.
    pub shards: usize,
    /// TCP connections known (any state, including half-open and closing ones).
    pub tcp_connections: usize,
    /// Times an idle connection's buffers were given back to the kernel (a connection
    /// counts again each time it goes idle after moving data).
    pub buffers_released: u64,
}

impl Stack {
    /// Create a stack and spawn its driver on the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime (it calls `tokio::spawn`).
    pub fn new(config: StackConfig) -> (Stack, FrameLink) {
        let wake = Arc::new(tokio::sync::Notify::new());
        let depth = config.queue_frames;
        let inbound = Arc::new(FrameQueue::new(depth, wake.clone()));
        let outbound = Arc::new(FrameQueue::new(depth, wake.clone()));
        let shared = Arc::new(Shared::new(
            Net::new(&config),
            inbound.clone(),
            outbound.clone(),
            wake.clone(),
        ));
        tokio::spawn(crate::core::drive(Arc::downgrade(&shared), wake));
        let link = FrameLink {
            outbound,
            inbound,
            shared: Arc::downgrade(&shared),
        };
        (Stack { shared }, link)
    }

    /// Is `ip` inside one of this network's subnets or routes (so a socket aimed at it
    /// belongs on this stack)? IPv4-mapped IPv6 addresses are judged as IPv4.
    pub fn is_virtual(&self, ip: IpAddr) -> bool {
        let ip = config::unmap(ip);
        self.shared.net.is_virtual(ip) || self.shared.net.is_local(ip)
    }

    /// Is `ip` one of this stack's own addresses?
    pub fn is_local(&self, ip: IpAddr) -> bool {
        self.shared.net.is_local(config::unmap(ip))
    }

    /// Our addresses with their prefix lengths, IPv4 first.
    pub fn addresses(&self) -> Vec<(IpAddr, u8)> {
        self.shared.net.addrs.clone()
    }

    /// The IP MTU.
    pub fn mtu(&self) -> usize {
        self.shared.net.mtu
    }

    /// Our Ethernet address.
    pub fn mac(&self) -> [u8; 6] {
        self.shared.net.mac
    }

    /// Open a TCP connection to `remote` and wait for the handshake.
    ///
    /// `local`: `None` or an unspecified address picks the source address for `remote`;
    /// port 0 picks an ephemeral port. IPv4-mapped addresses are treated as IPv4.
    /// Errors: `ECONNREFUSED` (RST), `ETIMEDOUT` (no answer within
    /// [`TcpOptions::connect_timeout`]), `ENETUNREACH` (outside the network),
    /// `EADDRNOTAVAIL`, `EADDRINUSE` (4-tuple taken), `EAFNOSUPPORT`. Dropping the future
    /// abandons the attempt (the half-made connection is reset).
    pub async fn tcp_connect(
        &self,
        local: Option<SocketAddr>,
        remote: SocketAddr,
        opts: TcpOptions,
    ) -> Result<TcpStream, Error> {
        tcp::connect(&self.shared, local, remote, opts).await
    }

    /// Listen for TCP connections on `local` (unspecified address: every address of the
    /// family; port 0: an ephemeral port) with an accept queue of `backlog` (at least 1).
    /// An IPv6 wildcard listener with `v6only` false also accepts IPv4 clients
    /// (dual-stack); with `v6only` true it does not, and an IPv4 listener on the same port
    /// may coexist. `EADDRINUSE` when an overlapping listener exists.
    pub fn tcp_listen(
        &self,
        local: SocketAddr,
        backlog: usize,
        v6only: bool,
    ) -> Result<TcpListener, Error> {
        tcp::listen(&self.shared, local, backlog, v6only)
    }

    /// Bind a UDP socket (same address rules as [`Stack::tcp_listen`]).
    pub fn udp_bind(&self, local: SocketAddr, v6only: bool) -> Result<UdpSocket, Error> {
        udp::bind(&self.shared, local, v6only, false)
    }

    /// [`Stack::udp_bind`] with `SO_REUSEADDR`: the socket may share its address and port
    /// with other sockets bound this way (a UDP server that `connect`s one socket per
    /// client and binds a fresh one for the next, as iperf3 does). A datagram goes to a
    /// socket connected to its sender if there is one, else to the most specific
    /// unconnected binding.
    pub fn udp_bind_reuse(&self, local: SocketAddr, v6only: bool) -> Result<UdpSocket, Error> {
        udp::bind(&self.shared, local, v6only, true)
    }

    /// Open an ICMP echo socket with identifier `ident` (`None` or 0: pick a free one).
    /// `EADDRINUSE` if the identifier is taken in that family.
    pub fn icmp_bind(&self, family: IpFamily, ident: Option<u16>) -> Result<IcmpSocket, Error> {
        icmp::bind(&self.shared, family, ident)
    }

    /// Open a raw socket of `family` for IP protocol `protocol`: `IPPROTO_ICMP` (1) on
    /// IPv4, `IPPROTO_ICMPV6` (58) on IPv6, or [`PROTO_RAW`] on IPv4 (send only); see
    /// [`RawSocket`]. Anything else is `EPROTONOSUPPORT`. Whether the caller may have one
    /// (`CAP_NET_RAW`) is the caller's check.
    pub fn raw_bind(&self, family: IpFamily, protocol: u8) -> Result<RawSocket, Error> {
        raw::bind(&self.shared, family, protocol)
    }

    /// A human-readable snapshot of the stack's queues, timers and connections, for
    /// diagnosing a stall (tests print it when a transfer times out).
    pub fn describe(&self) -> String {
        let mut core = self.shared.lock();
        core.describe(&self.shared.inbound)
    }

    /// Every TCP connection of the stack, as `(local, remote, snapshot)` (what `ss -ti`
    /// shows for kernel sockets), including those waiting in an accept queue or closing.
    pub fn tcp_connections(&self) -> Vec<(SocketAddr, SocketAddr, TcpInfo)> {
        let mut core = self.shared.lock();
        let keys: Vec<_> = core.tcp.keys().copied().collect();
        keys.into_iter()
            .filter_map(|key| {
                let c = core.tcp.get(&key)?;
                let (shard, handle) = (c.shard, c.handle);
                let (s, c) = core.socket_and_conn(shard, handle, &key);
                Some((key.0, key.1, tcp::info(s, c)))
            })
            .collect()
    }

    /// Counters describing the stack.
    pub fn stats(&self) -> StackStats {
        let core = self.shared.lock();
        StackStats {
            shards: core.shard_count(),
            tcp_connections: core.tcp.len(),
            buffers_released: core.buffers_released,
        }
    }
}
