//! A thin tokio driver: owns the UDP sockets (IPv4 and IPv6) and the clock, feeds a
//! [`Node`] (or a [`Root`]), and exchanges Ethernet frames of joined networks with the rest
//! of the program over channels. All protocol logic stays in the sans-IO core.
//!
//! ```no_run
//! # async fn example(node: zt_core::Node, nwid: zt_core::NetworkId) -> Result<(), Box<dyn std::error::Error>> {
//! use zt_core::driver::{spawn_node, Sockets};
//! let sockets = Sockets::bind(9993).await?;            // 0.0.0.0:9993 and [::]:9993
//! let (handle, _task) = spawn_node(node, sockets);
//! let mut port = handle.join(nwid).await?;              // a virtual Ethernet port
//! // port.config.mac / port.config.mtu describe the interface;
//! // port.tx.send(frame).await sends a frame, port.rx.recv().await receives one.
//! # Ok(()) }
//! ```
//!
//! Frames received for a network whose receiver is full are dropped, as a NIC drops when
//! its ring is full; nothing here buffers without bound.
//!
//! A port's channels cost a task hand-off per frame and direction. A program that owns
//! its own device (a user-space stack) can instead [`NodeHandle::attach`] a
//! [`FrameDevice`]: the driver then takes the device's outgoing frames and hands it the
//! received ones in its own task, a batch at a time, with no channel in between. Datagrams are received in batches
//! (`recvmmsg`, and UDP GRO where the kernel offers it, through `quinn-udp`). On the send
//! side the driver takes every frame that is waiting (up to 64), lets the node turn them
//! into datagrams, and hands all of them to the kernel at once: on Linux one `sendmmsg(2)`
//! carries up to 64 messages, each message being the consecutive datagrams to one
//! destination (the fragments of a 2800-byte frame) as one UDP GSO send (`UDP_SEGMENT`,
//! udp(7)) where the kernel offers it. So a burst of 64 full-size frames costs one system
//! call instead of 64. Elsewhere the datagrams go out through `quinn-udp`, one GSO send per
//! destination run.

use std::future::poll_fn;
use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::controller::store::Change;
use crate::controller::{Controller, ControllerError, Member};
use crate::identity::Address;
use crate::node::{
    Event, JoinError, NetworkConfig, NetworkState, NetworkStatus, Node, PeerStatus, RelayStats,
    Root, Transmit,
};
use crate::vl2::NetworkId;

/// Frames queued per direction per network before the driver drops or the sender waits.
pub const FRAME_QUEUE: usize = 1024;
const MAX_DATAGRAM: usize = 65_536;
/// Receive and send buffer asked for each UDP socket.
const SOCKET_BUFFER: usize = 4 << 20;
/// Frames taken from the frame channel per wake-up before the datagrams are sent.
const FRAME_BATCH: usize = 64;
/// Messages per `sendmmsg(2)` call.
#[cfg(target_os = "linux")]
const SEND_BATCH: usize = 64;
/// Receive slots per `recvmmsg(2)`. With UDP GRO each slot takes up to 64 KiB (some 45
/// datagrams of a bulk flow), so 8 slots take hundreds of datagrams per call, and a bulk
/// flow keeps 512 KiB of them resident instead of quinn-udp's 32 slots' 2 MiB.
const RECV_SLOTS: usize = 8;
/// Largest UDP GSO message (the kernel refuses more than 64 KiB of UDP payload).
const MAX_GSO_BYTES: usize = 65_000;

/// Errors of the driver.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A socket could not be created or bound.
    #[error("cannot bind UDP socket on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The driver task has stopped.
    #[error("the overlay driver has stopped")]
    Stopped,
    /// The network could not be joined.
    #[error(transparent)]
    Join(#[from] JoinError),
    /// A controller operation failed.
    #[error(transparent)]
    Controller(#[from] ControllerError),
    /// A device was attached to a network this node has not joined.
    #[error("network {0} is not joined")]
    NotJoined(NetworkId),
    /// This node hosts no controller.
    #[error("this node hosts no controller")]
    NoController,
}

/// One bound socket and its batching state.
struct Socket {
    /// Registered for reading only: the kernel signals a UDP socket writable each time a
    /// datagram it sent is freed (read by a local receiver, or sent by the device), and
    /// registered for writing, every datagram sent would wake the runtime once more for
    /// nothing. A send that finds the buffer full waits on a duplicate registered for
    /// writing ([`wait_writable`]).
    io: AsyncFd<std::net::UdpSocket>,
    state: quinn_udp::UdpSocketState,
    /// Set when the kernel refused a GSO send (some drivers do, with EIO): send each
    /// datagram on its own from then on.
    #[cfg(target_os = "linux")]
    gso_failed: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Socket({:?})", self.io.get_ref().local_addr().ok())
    }
}

/// The UDP sockets a driver uses: at most one IPv4 and one IPv6 (v6-only) socket.
#[derive(Debug)]
pub struct Sockets {
    v4: Option<Socket>,
    v6: Option<Socket>,
}

fn bind_std(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

impl Sockets {
    /// Binds `0.0.0.0:port` and, if the host has IPv6, `[::]:port` (v6-only). With port
    /// 0 the IPv6 socket tries the port the IPv4 socket got.
    pub async fn bind(port: u16) -> Result<Self, DriverError> {
        let a4 = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
        let v4 = bind_std(a4).map_err(|source| DriverError::Bind { addr: a4, source })?;
        let port = v4.local_addr().map(|a| a.port()).unwrap_or(port);
        let a6 = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0));
        let v6 = match bind_std(a6) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::info!(error = %e, "no IPv6 UDP socket; IPv4 only");
                None
            }
        };
        Self::from_std(Some(v4), v6)
    }

    /// Binds exactly the given addresses (e.g. `127.0.0.1:0` in tests).
    pub async fn bind_addrs(addrs: &[SocketAddr]) -> Result<Self, DriverError> {
        let mut v4 = None;
        let mut v6 = None;
        for a in addrs {
            let s = bind_std(*a).map_err(|source| DriverError::Bind { addr: *a, source })?;
            if a.is_ipv4() {
                v4 = Some(s);
            } else {
                v6 = Some(s);
            }
        }
        Self::from_std(v4, v6)
    }

    /// Wraps already bound, non-blocking standard sockets.
    pub fn from_std(
        v4: Option<std::net::UdpSocket>,
        v6: Option<std::net::UdpSocket>,
    ) -> Result<Self, DriverError> {
        let wrap = |s: std::net::UdpSocket| {
            let addr = s
                .local_addr()
                .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
            // A burst arrives as GRO super-datagrams of up to 64 KiB; the default receive
            // buffer (208 KiB) holds three of them, and each one dropped loses dozens of
            // frames at once. The kernel caps the request at `net.core.rmem_max` and
            // `wmem_max` without an error (raising those is the host owner's choice).
            let sock = socket2::SockRef::from(&s);
            let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
            let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
            // The kernel reports twice what it granted. Said once per process.
            let granted = sock.recv_buffer_size().unwrap_or(0) / 2;
            static SAID: std::sync::Once = std::sync::Once::new();
            if granted < SOCKET_BUFFER {
                SAID.call_once(|| {
                    tracing::info!(
                        granted,
                        wanted = SOCKET_BUFFER,
                        "UDP receive buffer capped by net.core.rmem_max; bursts may be dropped \
                     (raise it with `sysctl -w net.core.rmem_max={SOCKET_BUFFER}` for bulk \
                     throughput)"
                    )
                });
            }
            s.set_nonblocking(true)
                .and_then(|()| quinn_udp::UdpSocketState::new((&s).into()))
                .and_then(|state| {
                    Ok(Socket {
                        io: crate::reactor::register(s, Interest::READABLE)?,
                        state,
                        #[cfg(target_os = "linux")]
                        gso_failed: std::sync::atomic::AtomicBool::new(false),
                    })
                })
                .map_err(|source| DriverError::Bind { addr, source })
        };
        Ok(Sockets {
            v4: v4.map(wrap).transpose()?,
            v6: v6.map(wrap).transpose()?,
        })
    }

    /// The bound local addresses.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        [&self.v4, &self.v6]
            .into_iter()
            .flatten()
            .filter_map(|s| s.io.get_ref().local_addr().ok())
            .collect()
    }

    fn socket_for(&self, dst: SocketAddr) -> Option<&Socket> {
        match dst {
            SocketAddr::V4(_) => self.v4.as_ref(),
            SocketAddr::V6(_) => self.v6.as_ref(),
        }
    }

    /// Sends the transmits: on Linux, up to [`SEND_BATCH`] messages per `sendmmsg(2)`,
    /// each message one GSO run (see [`gso_run`]).
    #[cfg(target_os = "linux")]
    async fn send_all(&self, transmits: &[Transmit], _scratch: &mut Vec<u8>) {
        use std::sync::atomic::Ordering;
        let mut i = 0;
        while i < transmits.len() {
            let dst = transmits[i].dst;
            let Some(sock) = self.socket_for(dst) else {
                tracing::trace!(%dst, "no socket for this address family");
                i += 1;
                continue;
            };
            let max_segments = if sock.gso_failed.load(Ordering::Relaxed) {
                1
            } else {
                sock.state.max_gso_segments().max(1)
            };
            let batch = sendmmsg_batch(transmits, i, max_segments);
            let sent = loop {
                match batch.send(sock.io.as_raw_fd(), transmits) {
                    Ok(n) => break n.max(1),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if wait_writable(sock).await.is_err() {
                            break batch.messages.len();
                        }
                    }
                    Err(e) if e.raw_os_error() == Some(libc_eio()) && batch.segment.is_some() => {
                        tracing::info!(error = %e, "UDP GSO refused; sending datagrams one by one");
                        sock.gso_failed.store(true, Ordering::Relaxed);
                        break 0;
                    }
                    Err(e) => {
                        // The first message failed (unreachable, too big...): skip it.
                        tracing::debug!(dst = %batch.messages[0].dst, error = %e, "UDP send failed");
                        break 1;
                    }
                }
            };
            // Continue after the messages the kernel took.
            i = batch.messages.get(sent).map_or(batch.end, |m| m.start);
        }
    }

    /// Sends the transmits, one `quinn-udp` (GSO) send per run of datagrams to one
    /// destination (see [`gso_run`]).
    #[cfg(not(target_os = "linux"))]
    async fn send_all(&self, transmits: &[Transmit], scratch: &mut Vec<u8>) {
        let mut i = 0;
        while i < transmits.len() {
            let first = &transmits[i];
            let Some(sock) = self.socket_for(first.dst) else {
                tracing::trace!(dst = %first.dst, "no socket for this address family");
                i += 1;
                continue;
            };
            let end = gso_run(transmits, i, sock.state.max_gso_segments().max(1));
            let size = first.bytes.len();
            scratch.clear();
            for t in &transmits[i..end] {
                scratch.extend_from_slice(&t.bytes);
            }
            let t = quinn_udp::Transmit {
                destination: first.dst,
                ecn: None,
                contents: scratch,
                segment_size: (end - i > 1).then_some(size),
                src_ip: None,
            };
            loop {
                match sock.state.try_send(sock.io.get_ref().into(), &t) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if wait_writable(sock).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(dst = %first.dst, error = %e, "UDP send failed");
                        break;
                    }
                }
            }
            i = end;
        }
    }
}

#[cfg(target_os = "linux")]
use std::os::fd::AsRawFd as _;

#[cfg(target_os = "linux")]
fn libc_eio() -> i32 {
    nix::errno::Errno::EIO as i32
}

/// The end of the run of datagrams starting at `start` that one UDP GSO send can carry:
/// consecutive datagrams to one destination, all of the first one's size except the last,
/// which may be shorter (udp(7), `UDP_SEGMENT`), at most `max_segments` of them and
/// [`MAX_GSO_BYTES`] in all. The fragments of one packet form such a run.
fn gso_run(transmits: &[Transmit], start: usize, max_segments: usize) -> usize {
    let first = &transmits[start];
    let size = first.bytes.len();
    let mut total = size;
    let mut end = start + 1;
    while end < transmits.len()
        && end - start < max_segments
        && transmits[end].dst == first.dst
        && transmits[end].bytes.len() <= size
        && transmits[end - 1].bytes.len() == size
        && total + transmits[end].bytes.len() <= MAX_GSO_BYTES
    {
        total += transmits[end].bytes.len();
        end += 1;
    }
    end
}

/// One message of a `sendmmsg(2)` batch: the GSO run `start..end` of the transmits.
#[cfg(target_os = "linux")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchMessage {
    dst: SocketAddr,
    start: usize,
    end: usize,
}

/// Messages for one `sendmmsg(2)` call on one socket, all sent with the same GSO segment
/// size (the kernel segments a message only when it is longer than that size, so single
/// datagrams up to that size ride along unchanged).
#[cfg(target_os = "linux")]
#[derive(Debug)]
struct SendBatch {
    messages: Vec<BatchMessage>,
    /// The `UDP_SEGMENT` size, when some message holds several datagrams.
    segment: Option<u16>,
    /// Index after the last transmit in the batch.
    end: usize,
}

/// Collects the messages of one `sendmmsg(2)` call from `start`: GSO runs to destinations
/// of the same address family, at most [`SEND_BATCH`], compatible with one segment size.
#[cfg(target_os = "linux")]
fn sendmmsg_batch(transmits: &[Transmit], start: usize, max_segments: usize) -> SendBatch {
    let v6 = transmits[start].dst.is_ipv6();
    let mut messages = Vec::new();
    let mut segment: Option<usize> = None;
    let mut largest_single = 0;
    let mut i = start;
    while i < transmits.len() && messages.len() < SEND_BATCH {
        let t = &transmits[i];
        if t.dst.is_ipv6() != v6 {
            break;
        }
        let len = t.bytes.len();
        let mut end = gso_run(transmits, i, max_segments);
        if u16::try_from(len).is_err() {
            end = i + 1; // not a GSO segment size
        }
        if end - i > 1 {
            match segment {
                None if largest_single <= len => segment = Some(len),
                Some(s) if s == len => {}
                _ => break,
            }
        } else {
            if segment.is_some_and(|s| len > s) {
                break;
            }
            largest_single = largest_single.max(len);
        }
        messages.push(BatchMessage {
            dst: t.dst,
            start: i,
            end,
        });
        i = end;
    }
    SendBatch {
        messages,
        segment: segment.and_then(|s| u16::try_from(s).ok()),
        end: i,
    }
}

#[cfg(target_os = "linux")]
impl SendBatch {
    /// One `sendmmsg(2)` call; returns how many messages the kernel took.
    fn send(&self, fd: std::os::fd::RawFd, transmits: &[Transmit]) -> io::Result<usize> {
        use nix::sys::socket::{sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage};
        let iovs: Vec<Vec<io::IoSlice<'_>>> = self
            .messages
            .iter()
            .map(|m| {
                transmits[m.start..m.end]
                    .iter()
                    .map(|t| io::IoSlice::new(&t.bytes))
                    .collect()
            })
            .collect();
        let addrs: Vec<Option<SockaddrStorage>> = self
            .messages
            .iter()
            .map(|m| Some(SockaddrStorage::from(m.dst)))
            .collect();
        let segment = self.segment.unwrap_or(0);
        let cmsgs: Vec<ControlMessage<'_>> = if self.segment.is_some() {
            vec![ControlMessage::UdpGsoSegments(&segment)]
        } else {
            Vec::new()
        };
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(
            self.messages.len(),
            self.segment.map(|_| nix::cmsg_space!(u16)),
        );
        let sent = sendmmsg(fd, &mut headers, &iovs, &addrs, &cmsgs, MsgFlags::empty())
            .map_err(io::Error::from)?
            .count();
        Ok(sent)
    }
}

/// Receive buffers for one socket: a batch of datagrams (or GRO super-datagrams).
struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    meta: Vec<quinn_udp::RecvMeta>,
}

impl RecvBatch {
    fn new(sock: Option<&Socket>) -> Self {
        let n = if sock.is_some() {
            RECV_SLOTS.clamp(1, quinn_udp::BATCH_SIZE.max(1))
        } else {
            0
        };
        RecvBatch {
            bufs: (0..n).map(|_| vec![0u8; MAX_DATAGRAM]).collect(),
            meta: vec![quinn_udp::RecvMeta::default(); n],
        }
    }
}

/// Waits for datagrams on `sock` and returns how many batch slots were filled.
async fn recv_batch(sock: Option<&Socket>, batch: &mut RecvBatch) -> io::Result<usize> {
    let Some(sock) = sock else {
        return std::future::pending().await;
    };
    loop {
        let mut guard = sock.io.readable().await?;
        let RecvBatch { bufs, meta } = &mut *batch;
        let mut slices: Vec<IoSliceMut<'_>> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        match guard.try_io(|io| sock.state.recv(io.get_ref().into(), &mut slices, meta)) {
            Ok(Ok(n)) => {
                // Fewer datagrams than slots: the queue was empty when the kernel looked
                // for the next, so asking again would only answer EAGAIN. A datagram
                // arriving from now on signals the (edge-triggered) registration anew.
                if n < slices.len() {
                    guard.clear_ready();
                }
                return Ok(n);
            }
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
}

/// Waits until `sock` has room for a datagram again, on a duplicate registered for
/// writing for as long as the wait lasts (`Socket::io` is registered for reading only).
/// A registration reports the state it finds, so room made meanwhile is not missed.
async fn wait_writable(sock: &Socket) -> io::Result<()> {
    let dup = sock.io.get_ref().try_clone()?;
    let writer = crate::reactor::register(dup, Interest::WRITABLE)?;
    let _ready = writer.writable().await?;
    Ok(())
}

/// Feeds the datagrams of a received batch to `f`, splitting GRO super-datagrams at their
/// stride.
fn for_each_datagram(batch: &mut RecvBatch, n: usize, mut f: impl FnMut(SocketAddr, &mut [u8])) {
    for (buf, meta) in batch.bufs.iter_mut().zip(&batch.meta).take(n) {
        let len = meta.len.min(buf.len());
        let data = &mut buf[..len];
        let stride = if meta.stride == 0 {
            data.len().max(1)
        } else {
            meta.stride
        };
        for d in data.chunks_mut(stride) {
            f(meta.addr, d);
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

/// What `zt status` shows about a running node.
#[derive(Debug, Clone)]
pub struct Status {
    /// The node's address.
    pub address: Address,
    /// Where the roots see it.
    pub observed: Option<SocketAddr>,
    /// Its peers.
    pub peers: Vec<PeerStatus>,
    /// The local UDP addresses.
    pub local_addrs: Vec<SocketAddr>,
    /// The joined networks.
    pub networks: Vec<NetworkStatus>,
    /// What handshake admission did (initiations received, answered, cookies sent).
    pub admission: crate::admission::AdmissionStats,
}

/// A joined network as a virtual Ethernet port.
#[derive(Debug)]
pub struct NetworkPort {
    /// MAC, MTU, addresses and routes when the port was handed out.
    pub config: NetworkConfig,
    /// The network's state from then on (new configurations, denial after a revocation).
    pub state: watch::Receiver<NetworkState>,
    /// Frames to send on the network (the frame's source MAC must be `config.mac`).
    pub tx: FrameSender,
    /// Frames that arrived from the network.
    pub rx: mpsc::Receiver<Vec<u8>>,
}

/// Sends frames on one network.
#[derive(Debug, Clone)]
pub struct FrameSender {
    nwid: NetworkId,
    tx: mpsc::Sender<(NetworkId, Vec<u8>)>,
}

impl FrameSender {
    /// Sends a frame, waiting while the driver's queue is full (backpressure).
    pub async fn send(&self, frame: Vec<u8>) -> Result<(), DriverError> {
        self.tx
            .send((self.nwid, frame))
            .await
            .map_err(|_| DriverError::Stopped)
    }

    /// Sends a frame if there is room right now; returns false when the frame was dropped.
    pub fn try_send(&self, frame: Vec<u8>) -> bool {
        self.tx.try_send((self.nwid, frame)).is_ok()
    }
}

/// A virtual Ethernet device driven by the node's own task (see [`NodeHandle::attach`]).
///
/// Both methods run inside the driver's task and must not block: a device does its work
/// (a user-space stack's receive path, say) inline or queues it, and drops frames it has
/// no room for, as a NIC does.
pub trait FrameDevice: Send + 'static {
    /// Frames received from the network for this device, in arrival order; take them
    /// out of `frames` (what is left there is dropped).
    fn deliver(&mut self, frames: &mut Vec<Vec<u8>>);

    /// Move up to `max` frames the device wants sent into `out`. `Ready(0)` means the
    /// device has shut down (the driver then detaches it); `Pending` registers `cx`.
    fn poll_outgoing(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<Vec<u8>>,
        max: usize,
    ) -> Poll<usize>;

    /// Buffers of frames the driver has sent, for reuse.
    fn recycle(&mut self, spent: &mut Vec<Vec<u8>>) {
        spent.clear();
    }
}

enum Command {
    Join {
        nwid: NetworkId,
        reply: JoinReply,
    },
    Leave {
        nwid: NetworkId,
    },
    Attach {
        nwid: NetworkId,
        device: Box<dyn FrameDevice>,
        reply: oneshot::Sender<Result<(), DriverError>>,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
    Authorize {
        nwid: NetworkId,
        member: Address,
        authorized: bool,
        reply: oneshot::Sender<Result<(), DriverError>>,
    },
    Controller(ControllerJob),
    PushConfigs {
        nwid: NetworkId,
    },
    ApplyStored {
        changes: Vec<Change>,
        reply: oneshot::Sender<()>,
    },
    DeleteNetwork {
        nwid: NetworkId,
        reply: oneshot::Sender<Result<(), DriverError>>,
    },
    DeleteMember {
        nwid: NetworkId,
        member: Address,
        reply: oneshot::Sender<Result<Member, DriverError>>,
    },
}

type ControllerJob = Box<dyn FnOnce(Option<&mut Controller>) + Send>;

/// Controls a running node driver. When every handle is dropped, the driver stops.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    cmd: mpsc::Sender<Command>,
}

impl NodeHandle {
    /// Joins a network and returns its port once the network is configured (at once for
    /// ad-hoc networks; when the controller's configuration arrives otherwise). While the
    /// controller denies access this waits: use a timeout and [`NodeHandle::status`] to
    /// tell the user why.
    pub async fn join(&self, nwid: NetworkId) -> Result<NetworkPort, DriverError> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Command::Join { nwid, reply })
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)?
    }

    /// Carries `nwid`'s frames between the network and `device` inside the driver's task
    /// from now on, instead of through the port's channels (which then carry nothing).
    /// The network must have been joined and its port handed out.
    pub async fn attach(
        &self,
        nwid: NetworkId,
        device: impl FrameDevice,
    ) -> Result<(), DriverError> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Command::Attach {
                nwid,
                device: Box::new(device),
                reply,
            })
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)?
    }

    /// Leaves a network; its port's receiver ends.
    pub async fn leave(&self, nwid: NetworkId) -> Result<(), DriverError> {
        self.cmd
            .send(Command::Leave { nwid })
            .await
            .map_err(|_| DriverError::Stopped)
    }

    /// Authorizes or deauthorizes a member of a network of this node's controller.
    pub async fn set_member_authorized(
        &self,
        nwid: NetworkId,
        member: Address,
        authorized: bool,
    ) -> Result<(), DriverError> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Command::Authorize {
                nwid,
                member,
                authorized,
                reply,
            })
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)?
    }

    /// As the controller of `nwid`, sends every online member a fresh configuration (after
    /// a change to the member directory, such as a member's name).
    pub async fn push_configs(&self, nwid: NetworkId) -> Result<(), DriverError> {
        self.cmd
            .send(Command::PushConfigs { nwid })
            .await
            .map_err(|_| DriverError::Stopped)
    }

    /// Applies records another writer stored to this node's controller and tells the
    /// members ([`Node::apply_stored`]).
    pub async fn apply_stored(&self, changes: Vec<Change>) -> Result<(), DriverError> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Command::ApplyStored { changes, reply })
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)
    }

    /// Deletes a network of this node's controller; the members that asked for its
    /// configuration are told at once ([`Node::delete_network`]).
    pub async fn delete_network(&self, nwid: NetworkId) -> Result<(), DriverError> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Command::DeleteNetwork { nwid, reply })
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)?
    }

    /// Deauthorizes a member of a network of this node's controller and deletes its record
    /// ([`Node::delete_member`]); returns the record as it was.
    pub async fn delete_member(
        &self,
        nwid: NetworkId,
        member: Address,
    ) -> Result<Member, DriverError> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Command::DeleteMember {
                nwid,
                member,
                reply,
            })
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)?
    }

    /// Runs `f` on this node's controller (create networks, list members, save state).
    pub async fn with_controller<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Controller) -> R + Send + 'static,
    ) -> Result<R, DriverError> {
        let (reply, rx) = oneshot::channel();
        let job: ControllerJob = Box::new(move |c| {
            let _ = reply.send(c.map(f));
        });
        self.cmd
            .send(Command::Controller(job))
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await
            .map_err(|_| DriverError::Stopped)?
            .ok_or(DriverError::NoController)
    }

    /// The node's status.
    pub async fn status(&self) -> Result<Status, DriverError> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Command::Status { reply })
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)
    }
}

/// Starts driving `node` on `sockets` in a tokio task.
pub fn spawn_node(node: Node, sockets: Sockets) -> (NodeHandle, JoinHandle<()>) {
    spawn_node_with(node, sockets, None)
}

/// Called with the hosted controller before datagrams go out whenever
/// [`Controller::must_store`] says that records must be stored first (an address was
/// assigned in a configuration about to be sent).
pub type BeforeSend = Box<dyn FnMut(&mut Controller) + Send>;

/// As [`spawn_node`], calling `before_send` as [`BeforeSend`] says.
pub fn spawn_node_with(
    node: Node,
    sockets: Sockets,
    before_send: Option<BeforeSend>,
) -> (NodeHandle, JoinHandle<()>) {
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let task = tokio::spawn(run_node(node, sockets, cmd_rx, before_send));
    (NodeHandle { cmd: cmd_tx }, task)
}

/// The driver's side of a joined network.
struct Port {
    frames: mpsc::Sender<Vec<u8>>,
    state: watch::Sender<NetworkState>,
    /// A `join` call waiting for the first configuration.
    waiting: Option<(JoinReply, mpsc::Receiver<Vec<u8>>)>,
    /// The attached device, which replaces `frames` and the port's sender.
    device: Option<Box<dyn FrameDevice>>,
    /// Frames received for the device in this turn, delivered together.
    arrived: Vec<Vec<u8>>,
}

/// Hand `spent` buffers back to the device of `nwid` (dropped if it has none).
fn recycle(
    ports: &mut std::collections::HashMap<NetworkId, Port>,
    nwid: Option<NetworkId>,
    spent: &mut Vec<Vec<u8>>,
) {
    if let Some(dev) = nwid
        .and_then(|n| ports.get_mut(&n))
        .and_then(|p| p.device.as_mut())
    {
        dev.recycle(spent);
    }
    spent.clear();
}

/// Take outgoing frames from every attached device: `Ready` with the network of each
/// frame moved into `out` (none for a device that shut down: it is detached).
fn poll_devices(
    ports: &mut std::collections::HashMap<NetworkId, Port>,
    cx: &mut Context<'_>,
    out: &mut Vec<(NetworkId, Vec<u8>)>,
    scratch: &mut Vec<Vec<u8>>,
) -> Poll<()> {
    let mut ready = false;
    for (nwid, port) in ports.iter_mut() {
        let Some(dev) = port.device.as_mut() else {
            continue;
        };
        match dev.poll_outgoing(cx, scratch, FRAME_BATCH) {
            Poll::Pending => {}
            Poll::Ready(0) => {
                tracing::debug!(%nwid, "device shut down; detached");
                port.device = None;
                ready = true;
            }
            Poll::Ready(_) => {
                out.extend(scratch.drain(..).map(|f| (*nwid, f)));
                ready = true;
            }
        }
    }
    if ready {
        Poll::Ready(())
    } else {
        Poll::Pending
    }
}

type JoinReply = oneshot::Sender<Result<NetworkPort, DriverError>>;

async fn run_node(
    mut node: Node,
    sockets: Sockets,
    mut cmd_rx: mpsc::Receiver<Command>,
    mut before_send: Option<BeforeSend>,
) {
    let (frames_tx, mut frames_rx) = mpsc::channel::<(NetworkId, Vec<u8>)>(FRAME_QUEUE);
    let mut ports: std::collections::HashMap<NetworkId, Port> = std::collections::HashMap::new();
    let mut batch4 = RecvBatch::new(sockets.v4.as_ref());
    let mut batch6 = RecvBatch::new(sockets.v6.as_ref());
    let mut outgoing: Vec<Transmit> = Vec::new();
    let mut scratch: Vec<u8> = Vec::new();
    let mut from_devices: Vec<(NetworkId, Vec<u8>)> = Vec::new();
    let mut device_scratch: Vec<Vec<u8>> = Vec::new();
    loop {
        if let (Some(hook), Some(c)) = (before_send.as_mut(), node.controller_mut()) {
            if c.must_store() {
                hook(c);
            }
        }
        outgoing.clear();
        while let Some(t) = node.poll_transmit() {
            outgoing.push(t);
        }
        sockets.send_all(&outgoing, &mut scratch).await;
        for t in outgoing.drain(..) {
            node.recycle(t.bytes);
        }
        while let Some(e) = node.poll_event() {
            match e {
                Event::FrameReceived { nwid, frame } => {
                    if let Some(p) = ports.get_mut(&nwid) {
                        if p.device.is_some() {
                            p.arrived.push(frame);
                        } else if p.frames.try_send(frame).is_err() {
                            tracing::trace!(%nwid, "receiver full or gone; frame dropped");
                        }
                    }
                }
                Event::PeerUp { address } => tracing::debug!(peer = %address, "peer up"),
                Event::PeerDown { address } => tracing::debug!(peer = %address, "peer down"),
                Event::NetworkConfig(c) => {
                    tracing::debug!(nwid = %c.nwid, mac = %c.mac, "network configured");
                    if let Some(p) = ports.get_mut(&c.nwid) {
                        let _ = p.state.send(NetworkState::Ok(c.clone()));
                        if let Some((reply, rx)) = p.waiting.take() {
                            let _ = reply.send(Ok(NetworkPort {
                                config: c.clone(),
                                state: p.state.subscribe(),
                                tx: FrameSender {
                                    nwid: c.nwid,
                                    tx: frames_tx.clone(),
                                },
                                rx,
                            }));
                        }
                    }
                }
                Event::NetworkDenied { nwid, reason } => {
                    tracing::info!(%nwid, %reason, "network access refused");
                    if let Some(p) = ports.get_mut(&nwid) {
                        let _ = p.state.send(NetworkState::Denied(reason));
                    }
                }
            }
        }
        for p in ports.values_mut() {
            if let (Some(dev), false) = (p.device.as_mut(), p.arrived.is_empty()) {
                dev.deliver(&mut p.arrived);
                p.arrived.clear();
            }
        }
        let timeout = node.poll_timeout();
        tokio::select! {
            r = recv_batch(sockets.v4.as_ref(), &mut batch4) => match r {
                Ok(n) => {
                    let now = Instant::now();
                    for_each_datagram(&mut batch4, n, |from, d| {
                        node.handle_datagram_in_place(now, from, d)
                    });
                }
                Err(e) => tracing::debug!(error = %e, "UDP receive failed"),
            },
            r = recv_batch(sockets.v6.as_ref(), &mut batch6) => match r {
                Ok(n) => {
                    let now = Instant::now();
                    for_each_datagram(&mut batch6, n, |from, d| {
                        node.handle_datagram_in_place(now, from, d)
                    });
                }
                Err(e) => tracing::debug!(error = %e, "UDP receive failed"),
            },
            Some((nwid, frame)) = frames_rx.recv() => {
                let now = Instant::now();
                if let Err(e) = node.send_frame(now, nwid, &frame) {
                    tracing::debug!(error = %e, "frame not sent");
                }
                // Take what else is queued without going around the loop, so the
                // datagrams of all of them go out in one batch.
                for _ in 1..FRAME_BATCH {
                    let Ok((nwid, frame)) = frames_rx.try_recv() else { break };
                    if let Err(e) = node.send_frame(now, nwid, &frame) {
                        tracing::debug!(error = %e, "frame not sent");
                    }
                }
            }
            () = poll_fn(|cx| poll_devices(&mut ports, cx, &mut from_devices, &mut device_scratch)) => {
                let now = Instant::now();
                // Frames come in runs per device; each run's buffers go back at once.
                let mut run: Option<NetworkId> = None;
                for (nwid, frame) in from_devices.drain(..) {
                    if let Err(e) = node.send_frame(now, nwid, &frame) {
                        tracing::debug!(error = %e, "frame not sent");
                    }
                    if run.is_some_and(|r| r != nwid) {
                        recycle(&mut ports, run, &mut device_scratch);
                    }
                    run = Some(nwid);
                    device_scratch.push(frame);
                }
                recycle(&mut ports, run, &mut device_scratch);
            }
            cmd = cmd_rx.recv() => match cmd {
                None => break,
                Some(Command::Join { nwid, reply }) => {
                    match node.join(Instant::now(), nwid) {
                        Err(e) => {
                            let _ = reply.send(Err(e.into()));
                        }
                        Ok(_) => {
                            let (frames, rx) = mpsc::channel(FRAME_QUEUE);
                            let (state, _) = watch::channel(NetworkState::Requesting);
                            ports.insert(nwid, Port {
                                frames,
                                state,
                                waiting: Some((reply, rx)),
                                device: None,
                                arrived: Vec::new(),
                            });
                        }
                    }
                }
                Some(Command::Authorize { nwid, member, authorized, reply }) => {
                    let r = node
                        .set_member_authorized(Instant::now(), nwid, member, authorized)
                        .map_err(DriverError::from);
                    let _ = reply.send(r);
                }
                Some(Command::Controller(job)) => job(node.controller_mut()),
                Some(Command::PushConfigs { nwid }) => node.push_configs(Instant::now(), nwid, None),
                Some(Command::ApplyStored { changes, reply }) => {
                    node.apply_stored(Instant::now(), &changes);
                    let _ = reply.send(());
                }
                Some(Command::DeleteNetwork { nwid, reply }) => {
                    let r = node.delete_network(Instant::now(), nwid).map_err(DriverError::from);
                    let _ = reply.send(r);
                }
                Some(Command::DeleteMember { nwid, member, reply }) => {
                    let r = node
                        .delete_member(Instant::now(), nwid, member)
                        .map_err(DriverError::from);
                    let _ = reply.send(r);
                }
                Some(Command::Attach { nwid, device, reply }) => {
                    let r = match ports.get_mut(&nwid) {
                        Some(p) => {
                            p.device = Some(device);
                            Ok(())
                        }
                        None => Err(DriverError::NotJoined(nwid)),
                    };
                    let _ = reply.send(r);
                }
                Some(Command::Leave { nwid }) => {
                    node.leave(Instant::now(), nwid);
                    ports.remove(&nwid);
                }
                Some(Command::Status { reply }) => {
                    let _ = reply.send(Status {
                        address: node.address(),
                        observed: node.observed_endpoint(),
                        peers: node.peers(Instant::now()),
                        local_addrs: sockets.local_addrs(),
                        networks: node.networks(),
                        admission: node.admission_stats(),
                    });
                }
            },
            () = sleep_until(timeout) => node.handle_timeout(Instant::now()),
        }
    }
}

/// Controls a running root driver. When every handle is dropped, the driver stops.
#[derive(Debug, Clone)]
pub struct RootHandle {
    cmd: mpsc::Sender<oneshot::Sender<(RelayStats, Vec<PeerStatus>)>>,
}

impl RootHandle {
    /// The relay counters and the registered nodes.
    pub async fn stats(&self) -> Result<(RelayStats, Vec<PeerStatus>), DriverError> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(reply)
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)
    }
}

/// Starts driving a root on `sockets` in a tokio task.
pub fn spawn_root(root: Root, sockets: Sockets) -> (RootHandle, JoinHandle<()>) {
    let (cmd_tx, cmd_rx) = mpsc::channel(4);
    let task = tokio::spawn(run_root(root, sockets, cmd_rx));
    (RootHandle { cmd: cmd_tx }, task)
}

async fn run_root(
    mut root: Root,
    sockets: Sockets,
    mut cmd_rx: mpsc::Receiver<oneshot::Sender<(RelayStats, Vec<PeerStatus>)>>,
) {
    let mut batch4 = RecvBatch::new(sockets.v4.as_ref());
    let mut batch6 = RecvBatch::new(sockets.v6.as_ref());
    let mut outgoing: Vec<Transmit> = Vec::new();
    let mut scratch: Vec<u8> = Vec::new();
    loop {
        outgoing.clear();
        while let Some(t) = root.poll_transmit() {
            outgoing.push(t);
        }
        sockets.send_all(&outgoing, &mut scratch).await;
        let timeout = root.poll_timeout();
        tokio::select! {
            r = recv_batch(sockets.v4.as_ref(), &mut batch4) => match r {
                Ok(n) => {
                    let now = Instant::now();
                    for_each_datagram(&mut batch4, n, |from, d| {
                        root.handle_datagram_in_place(now, from, d)
                    });
                }
                Err(e) => tracing::debug!(error = %e, "UDP receive failed"),
            },
            r = recv_batch(sockets.v6.as_ref(), &mut batch6) => match r {
                Ok(n) => {
                    let now = Instant::now();
                    for_each_datagram(&mut batch6, n, |from, d| {
                        root.handle_datagram_in_place(now, from, d)
                    });
                }
                Err(e) => tracing::debug!(error = %e, "UDP receive failed"),
            },
            cmd = cmd_rx.recv() => match cmd {
                None => break,
                Some(reply) => {
                    let _ = reply.send((root.relay_stats(), root.peers(Instant::now())));
                }
            },
            () = sleep_until(timeout) => root.handle_timeout(Instant::now()),
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn t(dst: SocketAddr, len: usize, id: u16) -> Transmit {
        let mut bytes = vec![(id % 251) as u8; len];
        bytes[..2].copy_from_slice(&id.to_be_bytes());
        Transmit { dst, bytes }
    }

    #[test]
    fn batches_follow_gso_runs_and_one_segment_size() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let c: SocketAddr = "[::1]:3".parse().unwrap();
        // Two fragmented packets to A, a small one to B, a fragmented one to B, one to an
        // IPv6 address (another socket), then a run with another segment size.
        let ts = vec![
            t(a, 1400, 0),
            t(a, 1400, 1),
            t(a, 90, 2),
            t(a, 1400, 3),
            t(a, 60, 4),
            t(b, 100, 5),
            t(b, 1400, 6),
            t(b, 1400, 7),
            t(c, 80, 8),
            t(a, 1200, 9),
            t(a, 1200, 10),
        ];
        let m = |dst, start, end| BatchMessage { dst, start, end };
        let batch = sendmmsg_batch(&ts, 0, 64);
        assert_eq!(
            batch.messages,
            vec![m(a, 0, 3), m(a, 3, 5), m(b, 5, 6), m(b, 6, 8)]
        );
        assert_eq!((batch.segment, batch.end), (Some(1400), 8));
        let batch = sendmmsg_batch(&ts, 8, 64);
        assert_eq!((batch.messages, batch.segment), (vec![m(c, 8, 9)], None));
        let batch = sendmmsg_batch(&ts, 9, 64);
        assert_eq!(
            (batch.messages, batch.segment),
            (vec![m(a, 9, 11)], Some(1200))
        );
        // Without GSO every datagram is its own message, still one call for all.
        let batch = sendmmsg_batch(&ts, 0, 1);
        assert_eq!(batch.messages.len(), 8);
        assert_eq!(batch.segment, None);
        // A single datagram larger than the batch's segment size ends the batch.
        let ts = vec![t(a, 1000, 0), t(a, 500, 1), t(b, 1400, 2)];
        let batch = sendmmsg_batch(&ts, 0, 64);
        assert_eq!((batch.messages, batch.end), (vec![m(a, 0, 2)], 2));
    }

    /// The sockets ask for large buffers: as much as the host allows, up to
    /// `SOCKET_BUFFER` (the kernel reports twice the granted size).
    #[tokio::test]
    async fn sockets_get_large_buffers_as_far_as_the_host_allows() {
        let max = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(212_992);
        let socks = Sockets::bind_addrs(&["127.0.0.1:0".parse().unwrap()])
            .await
            .unwrap();
        let io = &socks.v4.as_ref().unwrap().io;
        let got = socket2::SockRef::from(io).recv_buffer_size().unwrap();
        assert_eq!(got, 2 * max.min(SOCKET_BUFFER));
    }

    /// Many datagrams of mixed sizes to two receivers, handed over in one burst: every one
    /// arrives intact.
    #[tokio::test]
    async fn a_burst_of_mixed_datagrams_all_arrive() {
        let sockets = Sockets::bind_addrs(&["127.0.0.1:0".parse().unwrap()])
            .await
            .unwrap();
        let rx: Vec<std::net::UdpSocket> = (0..2)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let dsts: Vec<SocketAddr> = rx.iter().map(|s| s.local_addr().unwrap()).collect();
        // 30 fragmented packets (1400, 1400, tail) alternating between the receivers, with
        // a small datagram after every third: 100 datagrams, about 94 KB per receiver at
        // most, within loopback's default receive buffer.
        let mut ts = Vec::new();
        let mut id = 0u16;
        for k in 0..30usize {
            let dst = dsts[k % 2];
            for len in [1400, 1400, 40 + k * 13] {
                ts.push(t(dst, len, id));
                id += 1;
            }
            if k % 3 == 2 {
                ts.push(t(dsts[(k + 1) % 2], 64, id));
                id += 1;
            }
        }
        assert_eq!(ts.len(), 100);
        assert!(sendmmsg_batch(&ts, 0, 64).messages.len() > 1);
        sockets.send_all(&ts, &mut Vec::new()).await;
        let mut got: Vec<Vec<u8>> = Vec::new();
        for s in &rx {
            s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
            let mut buf = vec![0u8; 65_536];
            let expected = ts
                .iter()
                .filter(|x| x.dst == s.local_addr().unwrap())
                .count();
            for _ in 0..expected {
                let (n, _) = s.recv_from(&mut buf).expect("a datagram is missing");
                got.push(buf[..n].to_vec());
            }
        }
        let mut want: Vec<Vec<u8>> = ts.iter().map(|x| x.bytes.clone()).collect();
        want.sort();
        got.sort();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "datagrams arrived changed");
    }
}
