//! The stack's state behind one lock, and the driver task that runs it.
//!
//! Layers, bottom up:
//! - **Ethernet, ARP and NDP** are handled here, once per stack ([`Egress`] resolves next
//!   hops and frames outgoing packets; the receive path answers ARP requests and Neighbor
//!   Solicitations and learns neighbors).
//! - **Demultiplexing**: each received IP packet is routed by a hash lookup on its TCP
//!   4-tuple (or UDP port, ICMP identifier) to the one place that owns it.
//! - **Shards**: TCP runs in smoltcp, but smoltcp scans every socket of an interface for
//!   every packet and at every poll. So TCP sockets live in many small smoltcp
//!   `Interface`s (medium IP, at most `StackConfig::sockets_per_shard` sockets each); a packet
//!   reaches, and a poll touches, only its shard. The work per packet is independent of
//!   how many idle connections exist.
//! - **UDP and ICMP echo** are implemented directly (they are stateless datagram
//!   exchanges; smoltcp's versions add a scan and copies without adding anything).
//!
//! Events drive everything: a frame pushed into the inbound queue, room appearing in the
//! outbound queue, a socket operation (which polls its shard inline, in the caller's task),
//! or the earliest smoltcp timer of any shard (kept in an ordered set). There is no tick.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Waker;
use std::time::Duration;

use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{
    Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium, RxToken, TxToken,
};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{HardwareAddress, IpCidr};
use tokio::sync::{watch, Notify};

use crate::config::Net;
use crate::link::FrameQueue;
use crate::wire::{self, Arp, Ethernet, Icmp, Ip, Ndp, TcpPorts, Udp, ETH_HEADER};
use crate::TcpOptions;

/// Frames taken from the inbound queue per driver turn.
const BATCH: usize = 256;
/// Packets held per unresolved neighbor.
const PENDING_PER_NEIGHBOR: usize = 64;
/// Interval between ARP/NS retries for one neighbor.
const SOLICIT_INTERVAL: Duration = Duration::from_millis(500);
/// Requests sent for one neighbor before it counts as unreachable: its waiting packets are
/// dropped and the connects that sent them fail with `EHOSTUNREACH` (a sender's own
/// retransmission starts a new round). Six requests 500 ms apart give up 3 s after the
/// first, as Linux does with its defaults (`mcast_solicit` 3, `retrans_time` 1 s).
const SOLICIT_TRIES: u8 = 6;
/// How long a closed-by-us connection waits in FIN-WAIT-2 for the peer's FIN (Linux
/// `tcp_fin_timeout`).
pub(crate) const FIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Least delay before re-polling a shard whose poll left it wanting to run "now".
const RESPIN: Duration = Duration::from_micros(200);
/// Ephemeral port range (Linux `ip_local_port_range` default).
const EPHEMERAL: std::ops::RangeInclusive<u16> = 32768..=60999;

/// smoltcp's clock runs this many times faster than real time.
///
/// smoltcp hard-codes its TCP timing: a retransmission timeout floor of 1 s (RFC 6298's
/// conservative value; Linux uses 200 ms), a 1 s initial RTO, a 60 s RTO ceiling and a
/// 10 s TIME-WAIT. Without SACK every lost retransmission costs one full RTO, so the 1 s
/// floor dominates throughput on a lossy path. Scaling the clock given to smoltcp by 5
/// turns these into 200 ms, 200 ms, 12 s and 2 s of real time, consistently (measured RTTs
/// scale too); every duration we hand to smoltcp goes through [`to_smol`].
pub(crate) const CLOCK_SCALE: u64 = 5;

/// A real duration in smoltcp's (scaled) clock.
pub(crate) fn to_smol(d: Duration) -> smoltcp::time::Duration {
    smoltcp::time::Duration::from_micros((d.as_micros() as u64).saturating_mul(CLOCK_SCALE))
}

/// A smoltcp (scaled) duration in real time.
pub(crate) fn from_smol(d: smoltcp::time::Duration) -> Duration {
    Duration::from_micros(d.total_micros() / CLOCK_SCALE)
}

/// A TCP connection's identity: (local, remote).
pub(crate) type Key = (SocketAddr, SocketAddr);

/// Who holds a TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Created for a SYN to a listener; handshake not complete.
    HalfOpen(u64),
    /// Established, waiting in a listener's accept queue.
    Ready(u64),
    /// Connecting or owned by a `TcpStream`.
    Owned,
    /// The stream was dropped; the socket finishes its close and is then freed.
    Orphan,
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) shard: u32,
    pub(crate) handle: SocketHandle,
    pub(crate) role: Role,
    /// An RST for this 4-tuple arrived (tells "reset" from "timed out" once closed).
    pub(crate) rst_seen: bool,
    /// Closed while connecting because its neighbor never answered (`EHOSTUNREACH`).
    pub(crate) unreachable: bool,
    /// That RST arrived after the handshake had completed: a connect that had not yet
    /// seen the connection established succeeds, as on Linux, and reading then fails
    /// with `ECONNRESET` (rather than the connect failing with `ECONNREFUSED`).
    pub(crate) reset_established: bool,
    /// Aborted locally.
    pub(crate) aborted: bool,
    /// We sent FIN (shutdown or close).
    pub(crate) write_closed: bool,
    /// The owner closed its sending half after the peer had closed its own, while data
    /// was still queued: the FIN waits until that data is acknowledged
    /// ([`Core::close_write`]).
    pub(crate) close_pending: bool,
    /// Sequence number of the FIN we sent, once sent.
    pub(crate) fin_seq: Option<u32>,
    /// The last bare ACK passed to smoltcp that acknowledged all our data but not our
    /// FIN; see [`Core::repeated_ack_for_fin`].
    pub(crate) last_pure_ack: Option<(u32, u16)>,
    /// Handshake round trip, measured by us (smoltcp keeps its estimate private).
    pub(crate) rtt: Option<Duration>,
    /// Its buffers' mapping, and what tells when they may be released (trim.rs). The
    /// socket borrows the buffers: it must be removed before this entry.
    pub(crate) trim: crate::trim::Trim,
    /// The segment size this connection sends, once the peer's SYN told its limit:
    /// the smaller of ours (the MTU less the headers) and the peer's, as smoltcp computes
    /// it (which keeps it private).
    pub(crate) mss: Option<u16>,
    /// When the handshake began; for an orphan, when its stream was dropped.
    pub(crate) started: std::time::Instant,
}

impl Conn {
    /// Take in what a received segment `t` tells beyond smoltcp: from the peer's SYN its
    /// segment size and initial sequence number, from data where it ends (trim.rs), over
    /// an IP MTU of `mtu`. Returns whether the connection must now be listed for the
    /// trim pass ([`Core::list_for_trim`]).
    fn note_segment(&mut self, t: &TcpPorts, mtu: usize, v6: bool) -> bool {
        if t.syn && !t.rst {
            self.mss = Some(effective_mss(mtu, v6, t.mss));
            self.trim.syn(t.seq);
        }
        t.data_end.is_some_and(|end| self.trim.received(end))
    }
}

#[derive(Debug)]
pub(crate) struct Listener {
    pub(crate) local: SocketAddr,
    pub(crate) v6only: bool,
    pub(crate) backlog: usize,
    pub(crate) half_open: usize,
    pub(crate) ready: VecDeque<Key>,
    pub(crate) wakers: Vec<Waker>,
    pub(crate) pending: watch::Sender<usize>,
    pub(crate) opts: TcpOptions,
}

#[derive(Debug)]
pub(crate) struct UdpState {
    pub(crate) local: SocketAddr,
    pub(crate) v6only: bool,
    /// `SO_REUSEADDR`: may share its address with other sockets that set it too.
    pub(crate) reuse: bool,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) rx: VecDeque<(SocketAddr, Vec<u8>)>,
    pub(crate) rx_bytes: usize,
    pub(crate) rx_cap: usize,
    pub(crate) waker: Option<Waker>,
    /// An error an ICMP message reported for this connected socket (Linux `sk_err`):
    /// the next receive reports it, once.
    pub(crate) error: Option<crate::Error>,
}

/// A raw socket (raw.rs): every packet of its protocol addressed to the stack.
#[derive(Debug)]
pub(crate) struct RawState {
    pub(crate) v6: bool,
    pub(crate) protocol: u8,
    pub(crate) rx: VecDeque<(IpAddr, Vec<u8>)>,
    pub(crate) rx_bytes: usize,
    pub(crate) waker: Option<Waker>,
}

#[derive(Debug)]
pub(crate) struct IcmpState {
    pub(crate) v6: bool,
    pub(crate) ident: u16,
    pub(crate) rx: VecDeque<(IpAddr, Vec<u8>)>,
    pub(crate) rx_bytes: usize,
    pub(crate) waker: Option<Waker>,
}

struct Shard {
    iface: Interface,
    sockets: SocketSet<'static>,
    /// Received frames for this shard (IP packet at [`ETH_HEADER`]).
    rx: VecDeque<Vec<u8>>,
    used: usize,
    deadline: Option<SmolInstant>,
    /// Connections to check after each poll (half-open and orphaned ones).
    watch: Vec<Key>,
    dirty: bool,
}

#[derive(Debug, Default)]
struct Neighbor {
    mac: Option<[u8; 6]>,
    pending: Vec<Vec<u8>>,
    asked: Option<std::time::Instant>,
    /// Requests sent in the current round.
    tries: u8,
}

/// The outgoing half of the Ethernet layer: resolves next hops, frames packets and batches
/// them into the outbound queue.
pub(crate) struct Egress {
    net: Arc<Net>,
    out: Arc<FrameQueue>,
    neighbors: HashMap<IpAddr, Neighbor>,
    pool: Vec<Vec<u8>>,
    batch: Vec<Vec<u8>>,
    /// Frames addressed to ourselves, fed back into the receive path by the driver.
    pub(crate) loopback: VecDeque<Vec<u8>>,
    /// Frames the outbound queue can still take in this turn.
    room: usize,
    /// A poll stopped because the outbound queue was full.
    blocked: bool,
    /// FINs sent since the last poll: (connection, sequence number of the FIN).
    fins: Vec<(Key, u32)>,
    /// Next hops with packets waiting for their link-layer address.
    unresolved: Vec<IpAddr>,
    /// A hop joined `unresolved` since the driver last looked: it must arm its retry timer.
    newly_unresolved: bool,
    /// Connections whose SYN was dropped because its neighbor never answered; the driver
    /// fails those still connecting ([`Core::fail_unreachable`]).
    pub(crate) unreachable: Vec<Key>,
}

impl Egress {
    pub(crate) fn buffer(&mut self, len: usize) -> Vec<u8> {
        if self.pool.is_empty() {
            self.out.take_spent(&mut self.pool, 64);
        }
        let mut b = self.pool.pop().unwrap_or_default();
        b.clear();
        b.resize(len, 0);
        b
    }

    fn recycle(&mut self, b: Vec<u8>) {
        if self.pool.len() < crate::link::POOL_MAX {
            self.pool.push(b);
        }
    }

    fn begin(&mut self) {
        // Room is read once per poll; frames batched since count against it.
        self.room = self.out.room().saturating_sub(self.batch.len());
        self.blocked = false;
    }

    pub(crate) fn has_room(&mut self) -> bool {
        if self.room == 0 {
            self.blocked = true;
        }
        self.room > 0
    }

    pub(crate) fn flush(&mut self) {
        self.out.push_all(&mut self.batch);
    }

    fn emit(&mut self, frame: Vec<u8>) {
        self.room = self.room.saturating_sub(1);
        self.batch.push(frame);
        if self.batch.len() >= 64 {
            self.flush();
        }
    }

    /// Send the IP packet at `frame[ETH_HEADER..]`.
    pub(crate) fn send_ip(&mut self, mut frame: Vec<u8>) {
        let Some(ip) = Ip::parse(&frame[ETH_HEADER..]) else {
            return;
        };
        if ip.proto == wire::PROTO_TCP {
            if let Some(t) = TcpPorts::parse(ip.payload(&frame[ETH_HEADER..])) {
                if let Some(seq) = t.fin_seq {
                    let key = (
                        SocketAddr::new(ip.src, t.src),
                        SocketAddr::new(ip.dst, t.dst),
                    );
                    self.fins.push((key, seq));
                }
            }
        }
        let ethertype = if ip.dst.is_ipv4() {
            wire::ETHERTYPE_IPV4
        } else {
            wire::ETHERTYPE_IPV6
        };
        let mac = self.net.mac;
        if self.net.is_local(ip.dst) {
            Ethernet::emit(&mut frame, mac, mac, ethertype);
            self.loopback.push_back(frame);
            return;
        }
        if let Some(m) = wire::multicast_mac(ip.dst) {
            Ethernet::emit(&mut frame, m, mac, ethertype);
            self.emit(frame);
            return;
        }
        let Some(hop) = self.net.next_hop(ip.dst) else {
            return;
        };
        let n = self.neighbors.entry(hop).or_default();
        if let Some(m) = n.mac {
            Ethernet::emit(&mut frame, m, mac, ethertype);
            self.emit(frame);
            return;
        }
        if n.pending.is_empty() {
            self.unresolved.push(hop);
            self.newly_unresolved = true;
        }
        if n.pending.len() < PENDING_PER_NEIGHBOR {
            n.pending.push(frame);
        }
        let now = std::time::Instant::now();
        // The last request of a round is the driver's to give up on
        // (`resolve_pending`): a retransmission arriving then (a SYN's fourth falls at
        // 3.0 s, with the give-up) must not stretch the round by another interval.
        if n.tries < SOLICIT_TRIES
            && n.asked
                .is_none_or(|t| now.duration_since(t) >= SOLICIT_INTERVAL)
        {
            n.asked = Some(now);
            n.tries = n.tries.saturating_add(1);
            self.solicit(hop);
        }
    }

    /// Ask again for the neighbors that packets still wait for, every
    /// [`SOLICIT_INTERVAL`], and give up on one after [`SOLICIT_TRIES`] requests (its
    /// packets are dropped). A request can be lost like any frame (a peer not yet reachable
    /// over the overlay, for one), so this does not wait for the next packet to ask again.
    /// Returns when to call it next.
    fn resolve_pending(&mut self, now: std::time::Instant) -> Option<std::time::Instant> {
        self.newly_unresolved = false;
        let mut next: Option<std::time::Instant> = None;
        let mut hops = std::mem::take(&mut self.unresolved);
        hops.retain(|hop| {
            let Some(n) = self.neighbors.get_mut(hop) else {
                return false;
            };
            if n.mac.is_some() || n.pending.is_empty() {
                n.tries = 0;
                return false;
            }
            let due = n.asked.map_or(now, |t| t + SOLICIT_INTERVAL);
            if due > now {
                next = Some(next.map_or(due, |x| x.min(due)));
                return true;
            }
            if n.tries >= SOLICIT_TRIES {
                let dropped = std::mem::take(&mut n.pending);
                n.tries = 0;
                n.asked = None;
                for b in dropped {
                    if let Some(key) = connecting(&b) {
                        self.unreachable.push(key);
                    }
                    self.recycle(b);
                }
                return false;
            }
            n.asked = Some(now);
            n.tries += 1;
            let due = now + SOLICIT_INTERVAL;
            next = Some(next.map_or(due, |x| x.min(due)));
            self.solicit(*hop);
            true
        });
        // `solicit` cannot add hops, so nothing was pushed meanwhile.
        self.unresolved = hops;
        next
    }

    /// Ask who has `hop` (ARP request or Neighbor Solicitation).
    fn solicit(&mut self, hop: IpAddr) {
        let mac = self.net.mac;
        match (hop, self.net.source_for(hop)) {
            (IpAddr::V4(h), Some(IpAddr::V4(src))) => {
                let mut f = self.buffer(ETH_HEADER + wire::ARP_LEN);
                Ethernet::emit(&mut f, wire::BROADCAST_MAC, mac, wire::ETHERTYPE_ARP);
                Arp::emit(&mut f[ETH_HEADER..], true, (mac, src), ([0; 6], h));
                self.emit(f);
            }
            (IpAddr::V6(h), Some(IpAddr::V6(src))) => {
                let dst = wire::solicited_node(h);
                self.send_ndp(
                    true,
                    h,
                    src,
                    dst,
                    wire::multicast_mac(IpAddr::V6(dst)).unwrap_or(wire::BROADCAST_MAC),
                );
            }
            _ => {}
        }
    }

    fn send_ndp(
        &mut self,
        solicit: bool,
        target: Ipv6Addr,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        dst_mac: [u8; 6],
    ) {
        let mac = self.net.mac;
        let mut f = self.buffer(ETH_HEADER + wire::IPV6_HEADER + wire::NDP_LEN);
        Ethernet::emit(&mut f, dst_mac, mac, wire::ETHERTYPE_IPV6);
        let ip = &mut f[ETH_HEADER..];
        wire::emit_ip(
            ip,
            IpAddr::V6(src),
            IpAddr::V6(dst),
            wire::PROTO_ICMPV6,
            255,
            wire::NDP_LEN,
        );
        Ndp::emit(&mut ip[wire::IPV6_HEADER..], solicit, target, mac, src, dst);
        self.emit(f);
    }

    /// Record `ip` at `mac` and release the packets that waited for it.
    fn learn(&mut self, ip: IpAddr, mac: [u8; 6]) {
        if mac[0] & 1 != 0 || self.neighbors.len() > 65536 {
            return;
        }
        let n = self.neighbors.entry(ip).or_default();
        n.mac = Some(mac);
        n.tries = 0;
        let pending = std::mem::take(&mut n.pending);
        for mut f in pending {
            let ethertype = if ip.is_ipv4() {
                wire::ETHERTYPE_IPV4
            } else {
                wire::ETHERTYPE_IPV6
            };
            Ethernet::emit(&mut f, mac, self.net.mac, ethertype);
            self.emit(f);
        }
    }
}

/// smoltcp's view of one shard: packets from the demultiplexer in, packets to [`Egress`] out.
struct ShardDevice<'a> {
    rx: &'a mut VecDeque<Vec<u8>>,
    spent: &'a mut Vec<Vec<u8>>,
    egress: &'a mut Egress,
    mtu: usize,
}

struct Rx<'a> {
    frame: Vec<u8>,
    spent: &'a mut Vec<Vec<u8>>,
}

struct Tx<'a> {
    egress: &'a mut Egress,
}

impl RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(&self.frame[ETH_HEADER..]);
        self.spent.push(self.frame);
        r
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = self.egress.buffer(ETH_HEADER + len);
        let r = f(&mut frame[ETH_HEADER..]);
        self.egress.send_ip(frame);
        r
    }
}

fn capabilities(mtu: usize) -> DeviceCapabilities {
    let mut caps = DeviceCapabilities::default();
    caps.medium = Medium::Ip;
    caps.max_transmission_unit = mtu;
    caps.max_burst_size = None;
    // The overlay authenticates every frame, so received checksums are not verified
    // (as with NIC checksum offload); transmitted ones are always computed.
    let mut cs = ChecksumCapabilities::default();
    cs.ipv4 = Checksum::Tx;
    cs.tcp = Checksum::Tx;
    cs.udp = Checksum::Tx;
    cs.icmpv4 = Checksum::Tx;
    cs.icmpv6 = Checksum::Tx;
    caps.checksum = cs;
    caps
}

impl Device for ShardDevice<'_> {
    type RxToken<'a>
        = Rx<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = Tx<'a>
    where
        Self: 'a;

    fn receive(&mut self, _now: SmolInstant) -> Option<(Rx<'_>, Tx<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((
            Rx {
                frame,
                spent: self.spent,
            },
            Tx {
                egress: self.egress,
            },
        ))
    }

    fn transmit(&mut self, _now: SmolInstant) -> Option<Tx<'_>> {
        if self.egress.has_room() {
            Some(Tx {
                egress: self.egress,
            })
        } else {
            None
        }
    }

    fn capabilities(&self) -> DeviceCapabilities {
        capabilities(self.mtu)
    }
}

struct NullDevice(usize);

impl Device for NullDevice {
    type RxToken<'a>
        = Rx<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = Tx<'a>
    where
        Self: 'a;
    fn receive(&mut self, _now: SmolInstant) -> Option<(Rx<'_>, Tx<'_>)> {
        None
    }
    fn transmit(&mut self, _now: SmolInstant) -> Option<Tx<'_>> {
        None
    }
    fn capabilities(&self) -> DeviceCapabilities {
        capabilities(self.0)
    }
}

/// Everything mutable about a stack.
pub(crate) struct Core {
    net: Arc<Net>,
    epoch: std::time::Instant,
    /// Boxed: a shard (its smoltcp `Interface` inline) is 1.8 KB, and a vector of them
    /// that doubled as it grew left up to half of that unused per shard.
    #[allow(
        clippy::vec_box,
        reason = "a shard is large and the vector's spare room is not"
    )]
    shards: Vec<Box<Shard>>,
    /// Shards with a free socket slot (shard 0, the "no socket here" shard that answers
    /// stray segments with RST, is never in it).
    open: Vec<u32>,
    pub(crate) egress: Egress,
    spent: Vec<Vec<u8>>,
    /// Boxed: the table keeps room for more entries than it holds, and a `Conn` inline
    /// made that room cost 300 bytes an entry.
    pub(crate) tcp: HashMap<Key, Box<Conn>>,
    pub(crate) listeners: HashMap<u64, Listener>,
    listen_ports: HashMap<u16, Vec<u64>>,
    tcp_ports: HashMap<u16, u32>,
    pub(crate) udp: HashMap<u64, UdpState>,
    udp_ports: HashMap<u16, Vec<u64>>,
    pub(crate) icmp: HashMap<u64, IcmpState>,
    icmp_idents: HashMap<(bool, u16), u64>,
    pub(crate) raw: HashMap<u64, RawState>,
    next_id: u64,
    timers: BTreeSet<(SmolInstant, u32)>,
    dirty: Vec<u32>,
    blocked: Vec<u32>,
    rng: u64,
    /// 1 + the offset in the ephemeral range of the next TCP port to try; 0 before the
    /// first connection.
    next_tcp_port: u32,
    /// When the driver will next wake by itself (None: only on notification).
    driver_wakes_at: Option<SmolInstant>,
    /// Connections that moved data since their buffers were last released (trim.rs).
    pub(crate) trim_list: Vec<Key>,
    /// When the driver next looks at them.
    pub(crate) trim_at: Option<SmolInstant>,
    /// Connections' buffers released so far ([`crate::StackStats::buffers_released`]).
    pub(crate) buffers_released: u64,
}

impl Drop for Core {
    fn drop(&mut self) {
        // The sockets borrow their buffers from their connection entries' mappings
        // (ring.rs): they go first.
        self.shards.clear();
    }
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("shards", &self.shards.len())
            .field("tcp", &self.tcp.len())
            .finish_non_exhaustive()
    }
}

/// What a stack's handles share.
#[derive(Debug)]
pub(crate) struct Shared {
    core: Mutex<Core>,
    pub(crate) net: Arc<Net>,
    pub(crate) wake: Arc<Notify>,
    pub(crate) inbound: Arc<FrameQueue>,
    pub(crate) outbound: Arc<FrameQueue>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.outbound.close();
        self.wake.notify_one();
    }
}

impl Shared {
    pub(crate) fn new(
        net: Net,
        inbound: Arc<FrameQueue>,
        outbound: Arc<FrameQueue>,
        wake: Arc<Notify>,
    ) -> Self {
        let net = Arc::new(net);
        let epoch = std::time::Instant::now();
        let seed = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(epoch.elapsed().as_nanos() as u64);
            h.finish() | 1
        };
        let mut core = Core {
            net: net.clone(),
            epoch,
            shards: Vec::new(),
            open: Vec::new(),
            egress: Egress {
                net: net.clone(),
                out: outbound.clone(),
                neighbors: HashMap::new(),
                pool: Vec::new(),
                batch: Vec::new(),
                loopback: VecDeque::new(),
                room: 0,
                blocked: false,
                fins: Vec::new(),
                unresolved: Vec::new(),
                newly_unresolved: false,
                unreachable: Vec::new(),
            },
            spent: Vec::new(),
            tcp: HashMap::new(),
            listeners: HashMap::new(),
            listen_ports: HashMap::new(),
            tcp_ports: HashMap::new(),
            udp: HashMap::new(),
            udp_ports: HashMap::new(),
            icmp: HashMap::new(),
            icmp_idents: HashMap::new(),
            raw: HashMap::new(),
            next_id: 1,
            timers: BTreeSet::new(),
            dirty: Vec::new(),
            blocked: Vec::new(),
            rng: seed,
            next_tcp_port: 0,
            driver_wakes_at: None,
            trim_list: Vec::new(),
            trim_at: None,
            buffers_released: 0,
        };
        core.new_shard();
        Shared {
            core: Mutex::new(core),
            net,
            wake,
            inbound,
            outbound,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After a socket operation polled inline: wake the driver if it must act sooner.
    pub(crate) fn after_inline(&self, core: &mut Core) {
        if core.needs_driver() {
            self.wake.notify_one();
        }
    }
}

/// The driver: runs until the stack's last handle is gone.
pub(crate) async fn drive(weak: Weak<Shared>, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(shared) = weak.upgrade() else { return };
            let mut core = shared.lock();
            core.turn(&shared.inbound)
        };
        match next {
            Next::Again => tokio::task::yield_now().await,
            Next::At(t) => {
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep_until(t) => {}
                }
            }
            Next::Idle => wake.notified().await,
        }
    }
}

enum Next {
    Again,
    At(tokio::time::Instant),
    Idle,
}

impl Core {
    pub(crate) fn now(&self) -> SmolInstant {
        SmolInstant::from_micros(self.epoch.elapsed().as_micros() as i64 * CLOCK_SCALE as i64)
    }

    fn tokio_instant(&self, t: SmolInstant) -> tokio::time::Instant {
        let d = Duration::from_micros(t.total_micros().max(0) as u64 / CLOCK_SCALE);
        tokio::time::Instant::from_std(self.epoch + d)
    }

    fn rand(&mut self) -> u64 {
        // xorshift64*: only for port choice and smoltcp's ISN seed per shard.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn new_shard(&mut self) -> u32 {
        let mut cfg = IfaceConfig::new(HardwareAddress::Ip);
        cfg.random_seed = self.rand();
        let now = self.now();
        let mut iface = Interface::new(cfg, &mut NullDevice(self.net.mtu), now);
        iface.update_ip_addrs(|a| {
            for (ip, len) in &self.net.addrs {
                let _ = a.push(IpCidr::new((*ip).into(), *len));
            }
        });
        let idx = self.shards.len() as u32;
        self.shards.push(Box::new(Shard {
            iface,
            sockets: SocketSet::new(Vec::with_capacity(self.net.per_shard.min(64))),
            rx: VecDeque::new(),
            used: 0,
            deadline: None,
            watch: Vec::new(),
            dirty: false,
        }));
        idx
    }

    /// Number of smoltcp interfaces in use (shard 0 included).
    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    fn alloc_shard(&mut self) -> u32 {
        let i = match self.open.last() {
            Some(&i) => i,
            None => {
                let i = self.new_shard();
                self.open.push(i);
                i
            }
        };
        let s = &mut self.shards[i as usize];
        s.used += 1;
        if s.used >= self.net.per_shard {
            self.open.pop();
        }
        i
    }

    pub(crate) fn add_tcp(&mut self, sock: tcp::Socket<'static>) -> (u32, SocketHandle) {
        let i = self.alloc_shard();
        let h = self.shards[i as usize].sockets.add(sock);
        (i, h)
    }

    pub(crate) fn socket(&mut self, shard: u32, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.shards[shard as usize]
            .sockets
            .get_mut::<tcp::Socket<'static>>(h)
    }

    /// A stream's socket and its connection entry together.
    ///
    /// # Panics
    /// If `key` has no entry: a live stream always has one.
    pub(crate) fn socket_and_conn(
        &mut self,
        shard: u32,
        h: SocketHandle,
        key: &Key,
    ) -> (&mut tcp::Socket<'static>, &mut Conn) {
        let s = self.shards[shard as usize]
            .sockets
            .get_mut::<tcp::Socket<'static>>(h);
        let c = self
            .tcp
            .get_mut(key)
            .expect("a live stream has a connection entry");
        (s, c)
    }

    /// Shards marked for polling, emptied.
    pub(crate) fn take_dirty(&mut self) -> Vec<u32> {
        let d = std::mem::take(&mut self.dirty);
        for i in &d {
            self.shards[*i as usize].dirty = false;
        }
        d
    }

    pub(crate) fn socket_ctx(
        &mut self,
        shard: u32,
        h: SocketHandle,
    ) -> (&mut tcp::Socket<'static>, &mut smoltcp::iface::Context) {
        let s = &mut self.shards[shard as usize];
        (
            s.sockets.get_mut::<tcp::Socket<'static>>(h),
            s.iface.context(),
        )
    }

    /// Remove a connection and free its socket, port and shard slot.
    pub(crate) fn remove_conn(&mut self, key: &Key) {
        let Some(c) = self.tcp.remove(key) else {
            return;
        };
        let s = &mut self.shards[c.shard as usize];
        s.sockets.remove(c.handle);
        s.used -= 1;
        if s.used == self.net.per_shard - 1 {
            self.open.push(c.shard);
        }
        self.release_port(key.0.port());
    }

    /// Close the sending half of `key` (FIN after the queued data), like `shutdown(SHUT_WR)`.
    ///
    /// smoltcp enters LAST-ACK at once when closed in CLOSE-WAIT, with data still queued,
    /// and in LAST-ACK it answers every ACK that acknowledges nothing new with a challenge
    /// ACK and discards it, window and all. A peer that closed first and whose window
    /// filled (a slow reader) then reopens its window in vain: the queued data waits for a
    /// zero-window probe or, after a retransmission timeout, forever (docs/NETSTACK.md).
    /// RFC 9293 sends the FIN, and enters LAST-ACK, only once the queued data is out; so
    /// here the close waits in CLOSE-WAIT, watched, until the data is acknowledged
    /// ([`Core::settle`] finishes it). Returns true when the close waits: the caller must
    /// [`Core::watch`] the connection.
    pub(crate) fn close_write(&mut self, shard: u32, key: Key) -> bool {
        let Some(c) = self.tcp.get(&key) else {
            return false;
        };
        if c.close_pending {
            return true;
        }
        let s = self.socket(shard, c.handle);
        if !close_must_wait(s) {
            s.close();
            return false;
        }
        if let Some(c) = self.tcp.get_mut(&key) {
            c.close_pending = true;
        }
        true
    }

    pub(crate) fn watch(&mut self, shard: u32, key: Key) {
        // A shard holds a handful of connections: the list stays short.
        let w = &mut self.shards[shard as usize].watch;
        if !w.contains(&key) {
            w.push(key);
        }
    }

    // ---- ports ------------------------------------------------------------------------

    fn release_port(&mut self, port: u16) {
        if let Some(n) = self.tcp_ports.get_mut(&port) {
            *n -= 1;
            if *n == 0 {
                self.tcp_ports.remove(&port);
            }
        }
    }

    pub(crate) fn hold_port(&mut self, port: u16) {
        *self.tcp_ports.entry(port).or_default() += 1;
    }

    /// A free ephemeral port for TCP (`udp` false) or UDP.
    ///
    /// UDP ports are random. TCP ports are handed out in sequence from a random start (in
    /// the spirit of RFC 6056's counter-based algorithms, as Linux does): a port comes back
    /// only after the whole range has been used, long after the peer's TIME-WAIT for the
    /// previous connection on it has ended. Random TCP ports collide with one of n
    /// connections still in TIME-WAIT at the server after about √(2·28232) ≈ 240
    /// connections, and such a SYN is dropped until TIME-WAIT ends.
    pub(crate) fn ephemeral_port(&mut self, udp: bool) -> Option<u16> {
        let span = u32::from(EPHEMERAL.end() - EPHEMERAL.start()) + 1;
        let start = if udp {
            (self.rand() % u64::from(span)) as u32
        } else {
            if self.next_tcp_port == 0 {
                self.next_tcp_port = (self.rand() % u64::from(span)) as u32 + 1;
            }
            self.next_tcp_port - 1
        };
        let port = (0..span)
            .map(|i| EPHEMERAL.start() + ((start + i) % span) as u16)
            .find(|p| {
                if udp {
                    !self.udp_ports.contains_key(p)
                } else {
                    !self.tcp_ports.contains_key(p)
                }
            })?;
        if !udp {
            self.next_tcp_port = u32::from(port - EPHEMERAL.start()) % span + 2;
        }
        Some(port)
    }

    pub(crate) fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    // ---- listeners --------------------------------------------------------------------

    /// Would a listener on `local` (v6only as given) overlap an existing one?
    pub(crate) fn listen_conflict(&self, local: SocketAddr, v6only: bool) -> bool {
        let Some(ids) = self.listen_ports.get(&local.port()) else {
            return false;
        };
        ids.iter()
            .filter_map(|id| self.listeners.get(id))
            .any(|l| overlap((l.local, l.v6only), (local, v6only)))
    }

    pub(crate) fn add_listener(&mut self, l: Listener) -> u64 {
        let id = self.new_id();
        self.hold_port(l.local.port());
        self.listen_ports
            .entry(l.local.port())
            .or_default()
            .push(id);
        self.listeners.insert(id, l);
        id
    }

    /// Drop a listener: queued and half-open connections are reset, as Linux does.
    pub(crate) fn remove_listener(&mut self, id: u64) {
        let Some(l) = self.listeners.remove(&id) else {
            return;
        };
        let port = l.local.port();
        if let Some(v) = self.listen_ports.get_mut(&port) {
            v.retain(|x| *x != id);
            if v.is_empty() {
                self.listen_ports.remove(&port);
            }
        }
        self.release_port(port);
        let doomed: Vec<Key> = self
            .tcp
            .iter()
            .filter(|(_, c)| matches!(c.role, Role::HalfOpen(x) | Role::Ready(x) if x == id))
            .map(|(k, _)| *k)
            .collect();
        for k in doomed {
            let (shard, h) = {
                let c = self.tcp.get_mut(&k).expect("listed above");
                c.role = Role::Orphan;
                (c.shard, c.handle)
            };
            self.socket(shard, h).abort();
            self.shards[shard as usize].watch.push(k);
            self.mark_dirty(shard);
        }
    }

    fn find_listener(&self, dst: IpAddr, port: u16) -> Option<u64> {
        let ids = self.listen_ports.get(&port)?;
        let mut best: Option<(u8, u64)> = None;
        for id in ids {
            let Some(l) = self.listeners.get(id) else {
                continue;
            };
            let la = l.local.ip();
            let score = if la == dst {
                3
            } else if la.is_unspecified() && la.is_ipv4() == dst.is_ipv4() {
                2
            } else if la.is_unspecified() && la.is_ipv6() && dst.is_ipv4() && !l.v6only {
                1
            } else {
                continue;
            };
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, *id));
            }
        }
        best.map(|(_, id)| id)
    }

    // ---- UDP and ICMP registries ------------------------------------------------------

    /// Would binding `local` clash with a bound socket? Sockets that both set
    /// `SO_REUSEADDR` may share an address (Linux UDP, `socket(7)`).
    pub(crate) fn udp_conflict(&self, local: SocketAddr, v6only: bool, reuse: bool) -> bool {
        let Some(ids) = self.udp_ports.get(&local.port()) else {
            return false;
        };
        ids.iter()
            .filter_map(|id| self.udp.get(id))
            .any(|u| !(reuse && u.reuse) && overlap((u.local, u.v6only), (local, v6only)))
    }

    pub(crate) fn add_udp(&mut self, u: UdpState) -> u64 {
        let id = self.new_id();
        self.udp_ports.entry(u.local.port()).or_default().push(id);
        self.udp.insert(id, u);
        id
    }

    pub(crate) fn remove_udp(&mut self, id: u64) {
        if let Some(u) = self.udp.remove(&id) {
            if let Some(v) = self.udp_ports.get_mut(&u.local.port()) {
                v.retain(|x| *x != id);
                if v.is_empty() {
                    self.udp_ports.remove(&u.local.port());
                }
            }
        }
    }

    pub(crate) fn icmp_ident_free(&self, v6: bool, ident: u16) -> bool {
        !self.icmp_idents.contains_key(&(v6, ident))
    }

    pub(crate) fn add_icmp(&mut self, s: IcmpState) -> u64 {
        let id = self.new_id();
        self.icmp_idents.insert((s.v6, s.ident), id);
        self.icmp.insert(id, s);
        id
    }

    pub(crate) fn remove_icmp(&mut self, id: u64) {
        if let Some(s) = self.icmp.remove(&id) {
            self.icmp_idents.remove(&(s.v6, s.ident));
        }
    }

    pub(crate) fn add_raw(&mut self, s: RawState) -> u64 {
        let id = self.new_id();
        self.raw.insert(id, s);
        id
    }

    pub(crate) fn random_u16(&mut self) -> u16 {
        self.rand() as u16
    }

    // ---- polling ----------------------------------------------------------------------

    fn mark_dirty(&mut self, shard: u32) {
        let s = &mut self.shards[shard as usize];
        if !s.dirty {
            s.dirty = true;
            self.dirty.push(shard);
        }
    }

    /// Poll one shard now: smoltcp ingress of its queued packets and egress of its
    /// sockets; then settle half-open and orphaned connections and re-arm its timer.
    pub(crate) fn poll_shard(&mut self, i: u32) {
        let now = self.now();
        let mtu = self.net.mtu;
        self.egress.begin();
        {
            let Core {
                shards,
                egress,
                spent,
                ..
            } = self;
            let s = &mut shards[i as usize];
            s.dirty = false;
            let mut dev = ShardDevice {
                rx: &mut s.rx,
                spent,
                egress,
                mtu,
            };
            s.iface.poll(now, &mut dev, &mut s.sockets);
        }
        self.egress.flush();
        while let Some(b) = self.spent.pop() {
            self.egress.recycle(b);
        }
        for (key, seq) in std::mem::take(&mut self.egress.fins) {
            if let Some(c) = self.tcp.get_mut(&key) {
                c.fin_seq = Some(seq);
            }
        }
        if !self.shards[i as usize].watch.is_empty() {
            self.settle(i);
        }
        let blocked = self.egress.blocked;
        let s = &mut self.shards[i as usize];
        let at = s.iface.poll_at(now, &s.sockets);
        if let Some(old) = s.deadline.take() {
            self.timers.remove(&(old, i));
        }
        match at {
            Some(t) if t <= now && blocked => self.blocked.push(i),
            Some(t) => {
                // A poll just ran: "again right now" can only mean smoltcp cannot make
                // progress yet (it has such cases); retry shortly instead of spinning.
                let t = t.max(now + to_smol(RESPIN));
                s.deadline = Some(t);
                self.timers.insert((t, i));
            }
            None => {}
        }
    }

    /// Check the watched connections of shard `i`.
    fn settle(&mut self, i: u32) {
        let keys = std::mem::take(&mut self.shards[i as usize].watch);
        let mut keep = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(c) = self.tcp.get(&key) else {
                continue;
            };
            let (role, h, started, close_pending) = (c.role, c.handle, c.started, c.close_pending);
            let state = self.socket(i, h).state();
            if close_pending {
                if close_must_wait(self.socket(i, h)) {
                    keep.push(key);
                    continue;
                }
                if let Some(c) = self.tcp.get_mut(&key) {
                    c.close_pending = false;
                }
                // All queued data is acknowledged (or the connection ended): the FIN now.
                self.socket(i, h).close();
                self.mark_dirty(i);
                if role == Role::Orphan {
                    keep.push(key);
                }
                continue;
            }
            match role {
                Role::HalfOpen(lid) => match state {
                    tcp::State::SynReceived => keep.push(key),
                    tcp::State::Listen | tcp::State::Closed => {
                        if let Some(l) = self.listeners.get_mut(&lid) {
                            l.half_open = l.half_open.saturating_sub(1);
                        }
                        self.remove_conn(&key);
                    }
                    _ => {
                        let Some(l) = self.listeners.get_mut(&lid) else {
                            self.socket(i, h).abort();
                            if let Some(c) = self.tcp.get_mut(&key) {
                                c.role = Role::Orphan;
                            }
                            keep.push(key);
                            continue;
                        };
                        l.half_open = l.half_open.saturating_sub(1);
                        l.ready.push_back(key);
                        l.pending.send_replace(l.ready.len());
                        l.wakers.drain(..).for_each(Waker::wake);
                        let opts = l.opts.clone();
                        if let Some(c) = self.tcp.get_mut(&key) {
                            c.role = Role::Ready(lid);
                            c.rtt = Some(started.elapsed());
                        }
                        let sock = self.socket(i, h);
                        crate::tcp::apply_established(sock, &opts);
                    }
                },
                Role::Orphan => {
                    if state == tcp::State::Closed {
                        self.remove_conn(&key);
                    } else {
                        if state == tcp::State::TimeWait
                            && self.tcp.get_mut(&key).is_some_and(|c| c.trim.finished())
                        {
                            self.buffers_released += 1;
                        }
                        if state == tcp::State::FinWait2 && started.elapsed() >= FIN_TIMEOUT {
                            self.socket(i, h).abort();
                            self.mark_dirty(i);
                        }
                        keep.push(key);
                    }
                }
                Role::Ready(_) | Role::Owned => {}
            }
        }
        let w = &mut self.shards[i as usize].watch;
        if w.is_empty() {
            *w = keep;
        } else {
            w.extend(keep);
        }
    }

    /// Fail the connects whose neighbor never answered ([`Egress::unreachable`]) with
    /// `EHOSTUNREACH`, as Linux fails a connect whose SYN waited on a neighbor entry that
    /// failed (RFC 1122 4.2.3.9: a host unreachable is a hard error while connecting).
    /// Established connections are left alone (Linux only notes a soft error); their own
    /// retransmissions ask again.
    fn fail_unreachable(&mut self) {
        for key in std::mem::take(&mut self.egress.unreachable) {
            // A connect's retransmitted SYNs may all have waited: the key can repeat.
            let Some(c) = self.tcp.get(&key).filter(|c| c.role == Role::Owned) else {
                continue;
            };
            let (shard, h) = (c.shard, c.handle);
            let s = self.socket(shard, h);
            if s.state() != tcp::State::SynSent {
                continue;
            }
            // Closes without sending anything, and wakes the connecting task.
            s.close();
            if let Some(c) = self.tcp.get_mut(&key) {
                c.unreachable = true;
            }
            self.poll_shard(shard);
        }
    }

    /// A human-readable snapshot of the driver's and every connection's state, for a test
    /// that stalls to print.
    pub(crate) fn describe(&mut self, inbound: &FrameQueue) -> String {
        use std::fmt::Write;
        let now = self.now();
        let rel = |t: SmolInstant| (t - now).total_micros() as i64 / CLOCK_SCALE as i64;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "inbound: {}; outbound: {}; egress room {} blocked {}; blocked shards {:?}; \
             dirty {:?}; loopback {}; timers {} (first in {:?} us); driver wakes in {:?} us",
            inbound.describe(),
            self.egress.out.describe(),
            self.egress.room,
            self.egress.blocked,
            self.blocked,
            self.dirty,
            self.egress.loopback.len(),
            self.timers.len(),
            self.timers.first().map(|&(t, _)| rel(t)),
            self.driver_wakes_at.map(rel),
        );
        let keys: Vec<Key> = self.tcp.keys().copied().collect();
        for key in keys {
            let c = &self.tcp[&key];
            let (shard, h) = (c.shard, c.handle);
            let line = format!(
                "{} -> {}: {:?} fin_seq {:?} last_pure_ack {:?}",
                key.0, key.1, c.role, c.fin_seq, c.last_pure_ack
            );
            let sh = &mut self.shards[shard as usize];
            let (rx, deadline) = (sh.rx.len(), sh.deadline.map(rel));
            let at = sh.iface.poll_at(now, &sh.sockets).map(rel);
            let s = self.socket(shard, h);
            let _ = writeln!(
                out,
                "  {line}; {} send_queue {} recv_queue {} window {} can_send {} \
                 can_recv {}; shard {shard} rx {rx} deadline {deadline:?} us poll_at {at:?} us",
                s.state(),
                s.send_queue(),
                s.recv_queue(),
                s.recv_capacity() - s.recv_queue(),
                s.can_send(),
                s.can_recv(),
            );
        }
        out
    }

    /// The earliest of the shards' timers and the trim pass.
    fn next_deadline(&self) -> Option<SmolInstant> {
        let timer = self.timers.first().map(|&(t, _)| t);
        match (timer, self.trim_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn needs_driver(&self) -> bool {
        if !self.egress.loopback.is_empty()
            || !self.blocked.is_empty()
            || !self.dirty.is_empty()
            || self.egress.newly_unresolved
        {
            return true;
        }
        match (self.next_deadline(), self.driver_wakes_at) {
            (Some(t), Some(w)) => t < w,
            (Some(_), None) => true,
            _ => false,
        }
    }

    /// One turn of the driver: take a batch of frames, demultiplex them, poll the shards
    /// they touched, then the shards whose timers expired or that wait for room.
    fn turn(&mut self, inbound: &FrameQueue) -> Next {
        let mut batch = std::mem::take(&mut self.spent);
        batch.clear();
        let _ = inbound.poll_pop_many(None, &mut batch, BATCH);
        let loops = self.egress.loopback.len().min(BATCH);
        batch.extend(self.egress.loopback.drain(..loops));
        self.receive_batch(&mut batch);
        self.spent = batch;
        let now = self.now();
        let mut due = Vec::new();
        while let Some(&(t, i)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.remove(&(t, i));
            self.shards[i as usize].deadline = None;
            due.push(i);
        }
        for i in due {
            self.poll_shard(i);
        }
        if self.trim_at.is_some_and(|t| t <= now) {
            self.trim_idle();
        }
        if !self.blocked.is_empty() && self.egress.out.has_room() {
            let mut b = std::mem::take(&mut self.blocked);
            b.sort_unstable();
            b.dedup();
            for i in b {
                self.poll_shard(i);
            }
        }
        let resolve_at = if self.egress.unresolved.is_empty() {
            None
        } else {
            self.egress.begin();
            let at = self.egress.resolve_pending(std::time::Instant::now());
            self.egress.flush();
            self.fail_unreachable();
            at.map(tokio::time::Instant::from_std)
        };
        let more =
            inbound.has_pending() || !self.egress.loopback.is_empty() || !self.dirty.is_empty();
        if more {
            self.driver_wakes_at = Some(now);
            return Next::Again;
        }
        let timer_at = match self.next_deadline() {
            Some(t) => {
                self.driver_wakes_at = Some(t);
                Some(self.tokio_instant(t))
            }
            None => {
                self.driver_wakes_at = None;
                None
            }
        };
        match (timer_at, resolve_at) {
            (Some(a), Some(b)) => Next::At(a.min(b)),
            (Some(t), None) | (None, Some(t)) => Next::At(t),
            (None, None) => Next::Idle,
        }
    }

    /// Demultiplex `frames` (drained) and poll the shards they touched.
    pub(crate) fn receive_batch(&mut self, frames: &mut Vec<Vec<u8>>) {
        self.egress.begin();
        for f in frames.drain(..) {
            self.receive(f);
        }
        self.egress.flush();
        while let Some(i) = self.dirty.pop() {
            self.poll_shard(i);
        }
    }

    // ---- receive path -----------------------------------------------------------------

    fn receive(&mut self, frame: Vec<u8>) {
        let Some(eth) = Ethernet::parse(&frame) else {
            return;
        };
        if eth.dst != self.net.mac && eth.dst[0] & 1 == 0 {
            return self.egress.recycle(frame);
        }
        match eth.ethertype {
            wire::ETHERTYPE_ARP => {
                self.receive_arp(&frame[ETH_HEADER..]);
                self.egress.recycle(frame);
            }
            wire::ETHERTYPE_IPV4 | wire::ETHERTYPE_IPV6 => self.receive_ip(eth, frame),
            _ => self.egress.recycle(frame),
        }
    }

    fn receive_arp(&mut self, p: &[u8]) {
        let Some(a) = Arp::parse(p) else { return };
        let ours = self.net.is_local(IpAddr::V4(a.target_ip));
        if !a.sender_ip.is_unspecified()
            && (ours || self.egress.neighbors.contains_key(&IpAddr::V4(a.sender_ip)))
        {
            self.egress.learn(IpAddr::V4(a.sender_ip), a.sender_mac);
        }
        if a.request && ours {
            let mac = self.net.mac;
            let mut f = self.egress.buffer(ETH_HEADER + wire::ARP_LEN);
            Ethernet::emit(&mut f, a.sender_mac, mac, wire::ETHERTYPE_ARP);
            Arp::emit(
                &mut f[ETH_HEADER..],
                false,
                (mac, a.target_ip),
                (a.sender_mac, a.sender_ip),
            );
            self.egress.emit(f);
        }
    }

    fn receive_ip(&mut self, eth: Ethernet, frame: Vec<u8>) {
        let Some(ip) = Ip::parse(&frame[ETH_HEADER..]) else {
            return self.egress.recycle(frame);
        };
        let for_us = self.net.is_local(ip.dst);
        let multicast = wire::multicast_mac(ip.dst).is_some();
        if (!for_us && !multicast) || ip.fragment {
            // Not ours, or an IPv4 fragment: fragments are not reassembled (docs/NETSTACK.md).
            return self.egress.recycle(frame);
        }
        match ip.proto {
            wire::PROTO_TCP if for_us => self.receive_tcp(&ip, frame),
            wire::PROTO_UDP if for_us => {
                self.receive_udp(&ip, &frame[ETH_HEADER..]);
                self.egress.recycle(frame);
            }
            wire::PROTO_ICMP if for_us => {
                self.deliver_raw(&ip, &frame[ETH_HEADER..ETH_HEADER + ip.total_len]);
                self.receive_icmp(&ip, &frame[ETH_HEADER..]);
                self.egress.recycle(frame);
            }
            wire::PROTO_ICMPV6 => {
                self.deliver_raw(&ip, ip.payload(&frame[ETH_HEADER..]));
                self.receive_icmpv6(eth, &ip, &frame[ETH_HEADER..]);
                self.egress.recycle(frame);
            }
            _ => self.egress.recycle(frame),
        }
    }

    fn receive_tcp(&mut self, ip: &Ip, frame: Vec<u8>) {
        let pkt = &frame[ETH_HEADER..];
        let Some(t) = TcpPorts::parse(ip.payload(pkt)) else {
            return self.egress.recycle(frame);
        };
        let key = (
            SocketAddr::new(ip.dst, t.dst),
            SocketAddr::new(ip.src, t.src),
        );
        if t.syn && !t.ack && !t.rst && self.in_time_wait(&key) {
            // A new connection on the 4-tuple of one we closed (RFC 6191 lets a server
            // accept it; smoltcp would drop the SYN until TIME-WAIT ends).
            self.remove_conn(&key);
        } else if t.syn && !t.ack && !t.rst && self.stale_conn(&key) {
            // A bare SYN on a synchronized connection: the peer lost its state (its
            // process was killed) and reuses the 4-tuple. smoltcp would answer with a RST,
            // refusing the new connection and keeping the stale one for good. Reset the
            // stale one instead (its owner reads ECONNRESET) and drop this SYN; the peer's
            // retransmitted SYN opens a fresh connection once the owner lets go of the
            // dead one (at once for an orphan, whose entry goes now).
            if self.reset_stale(&key) {
                return self.egress.recycle(frame);
            }
        }
        // Whether an RST finds the handshake completed (see `Conn::reset_established`).
        let synchronized = match self.tcp.get(&key).map(|c| (c.shard, c.handle)) {
            Some((shard, handle)) if t.rst => {
                use tcp::State::*;
                !matches!(
                    self.socket(shard, handle).state(),
                    Closed | Listen | SynSent | SynReceived
                )
            }
            _ => false,
        };
        // The segment's data made its connection one to list for the trim pass.
        let mut list = false;
        let shard = if let Some(c) = self.tcp.get_mut(&key) {
            if t.rst {
                c.rst_seen = true;
                c.reset_established |= synchronized;
            }
            if c.fin_seq.is_some() && repeated_ack_for_fin(c, t.pure_ack) {
                return self.egress.recycle(frame);
            }
            list = c.note_segment(&t, self.net.mtu, ip.dst.is_ipv6());
            c.shard
        } else if t.syn && !t.ack && !t.rst {
            match self.find_listener(ip.dst, t.dst) {
                Some(lid) => match self.admit(lid, key) {
                    Some(shard) => {
                        if let Some(c) = self.tcp.get_mut(&key) {
                            list = c.note_segment(&t, self.net.mtu, ip.dst.is_ipv6());
                        }
                        shard
                    }
                    // Accept queue full: say nothing, the client retries (Linux behaviour).
                    None => return self.egress.recycle(frame),
                },
                None => 0,
            }
        } else if t.rst {
            return self.egress.recycle(frame);
        } else {
            0
        };
        if list {
            self.list_for_trim(key);
        }
        self.shards[shard as usize].rx.push_back(frame);
        self.mark_dirty(shard);
    }

    /// Whether `key` is a synchronized connection (established or closing, not
    /// TIME-WAIT), which a bare SYN cannot belong to.
    fn stale_conn(&mut self, key: &Key) -> bool {
        let Some(c) = self.tcp.get(key) else {
            return false;
        };
        if matches!(c.role, Role::HalfOpen(_)) {
            return false; // a retransmitted SYN of the handshake in progress
        }
        let (shard, handle) = (c.shard, c.handle);
        use tcp::State::*;
        matches!(
            self.socket(shard, handle).state(),
            Established | FinWait1 | FinWait2 | CloseWait | Closing | LastAck
        )
    }

    /// Reset the stale connection `key` (see `receive_tcp`). Returns whether the SYN must
    /// be dropped (its owner still holds the entry) rather than go to a listener.
    fn reset_stale(&mut self, key: &Key) -> bool {
        let Some(c) = self.tcp.get_mut(key) else {
            return false;
        };
        let (shard, handle, orphan) = (c.shard, c.handle, c.role == Role::Orphan);
        c.rst_seen = true;
        self.socket(shard, handle).abort();
        if orphan {
            self.remove_conn(key);
            return false;
        }
        self.mark_dirty(shard);
        true
    }

    /// Whether `key` is a connection the program has let go of that waits in TIME-WAIT.
    fn in_time_wait(&mut self, key: &Key) -> bool {
        let Some(c) = self.tcp.get(key) else {
            return false;
        };
        if c.role != Role::Orphan {
            return false;
        }
        let (shard, handle) = (c.shard, c.handle);
        self.socket(shard, handle).state() == tcp::State::TimeWait
    }

    /// A SYN for listener `lid`: make a socket for it if the accept queue has room.
    fn admit(&mut self, lid: u64, key: Key) -> Option<u32> {
        let l = self.listeners.get(&lid)?;
        if l.ready.len() + l.half_open >= l.backlog {
            return None;
        }
        let opts = l.opts.clone();
        let (mut sock, rings) = crate::tcp::new_socket(&opts);
        // Half-open connections give up after Linux's SYN-ACK retries (~63 s).
        sock.set_timeout(Some(to_smol(Duration::from_secs(63))));
        if sock.listen(key.0).is_err() {
            return None;
        }
        let (shard, handle) = self.add_tcp(sock);
        self.hold_port(key.0.port());
        self.tcp.insert(
            key,
            Box::new(crate::tcp::new_conn(shard, handle, lid, rings)),
        );
        if let Some(l) = self.listeners.get_mut(&lid) {
            l.half_open += 1;
        }
        self.shards[shard as usize].watch.push(key);
        Some(shard)
    }

    fn receive_udp(&mut self, ip: &Ip, pkt: &[u8]) {
        let Some(u) = Udp::parse(ip.payload(pkt)) else {
            return;
        };
        let src = SocketAddr::new(ip.src, u.src);
        let mut best: Option<(u8, u64)> = None;
        if let Some(ids) = self.udp_ports.get(&u.dst) {
            for id in ids {
                let Some(s) = self.udp.get(id) else { continue };
                if s.peer
                    .is_some_and(|p| crate::config::unmap(p.ip()) != ip.src || p.port() != u.src)
                {
                    continue;
                }
                let la = s.local.ip();
                let score = if la == ip.dst {
                    3
                } else if la.is_unspecified() && la.is_ipv4() == ip.dst.is_ipv4() {
                    2
                } else if la.is_unspecified() && la.is_ipv6() && ip.dst.is_ipv4() && !s.v6only {
                    1
                } else {
                    continue;
                };
                // A socket connected to the sender beats an unconnected one on the same
                // address (Linux `compute_score`), which matters with SO_REUSEADDR.
                let score = score * 2 + u8::from(s.peer.is_some());
                if best.is_none_or(|(b, _)| score > b) {
                    best = Some((score, *id));
                }
            }
        }
        match best {
            Some((_, id)) => {
                let Some(s) = self.udp.get_mut(&id) else {
                    return;
                };
                if s.rx_bytes + u.payload.len() > s.rx_cap {
                    return; // receive buffer full: dropped, as the kernel does
                }
                let mut v = self.egress.buffer(0);
                v.extend_from_slice(u.payload);
                s.rx_bytes += v.len();
                s.rx.push_back((src, v));
                if let Some(w) = s.waker.take() {
                    w.wake();
                }
            }
            None if wire::multicast_mac(ip.dst).is_none() => self.port_unreachable(ip, pkt),
            None => {}
        }
    }

    /// ICMP destination/port unreachable quoting `pkt` (RFC 792, RFC 4443 3.1).
    fn port_unreachable(&mut self, ip: &Ip, pkt: &[u8]) {
        let quote = &pkt[..ip.total_len.min(self.net.mtu - 96)];
        let hl = wire::ip_header_len(ip.dst);
        let len = 8 + quote.len();
        let mut f = self.egress.buffer(ETH_HEADER + hl + len);
        let v4 = ip.dst.is_ipv4();
        let (proto, ty, code) = if v4 {
            (wire::PROTO_ICMP, wire::ICMPV4_DEST_UNREACH, 3)
        } else {
            (wire::PROTO_ICMPV6, wire::ICMPV6_DEST_UNREACH, 4)
        };
        wire::emit_ip(&mut f[ETH_HEADER..], ip.dst, ip.src, proto, 64, len);
        let msg = &mut f[ETH_HEADER + hl..];
        msg[0] = ty;
        msg[1] = code;
        msg[8..].copy_from_slice(quote);
        Icmp::fix_checksum(msg, ip.dst, ip.src);
        self.egress.send_ip(f);
    }

    fn echo_reply(&mut self, ip: &Ip, msg: &[u8], reply_type: u8) {
        let hl = wire::ip_header_len(ip.dst);
        let mut f = self.egress.buffer(ETH_HEADER + hl + msg.len());
        let proto = if ip.dst.is_ipv4() {
            wire::PROTO_ICMP
        } else {
            wire::PROTO_ICMPV6
        };
        wire::emit_ip(&mut f[ETH_HEADER..], ip.dst, ip.src, proto, 64, msg.len());
        let m = &mut f[ETH_HEADER + hl..];
        m.copy_from_slice(msg);
        Icmp::set_type(m, reply_type);
        Icmp::fix_checksum(m, ip.dst, ip.src);
        self.egress.send_ip(f);
    }

    fn deliver_icmp(&mut self, v6: bool, ident: u16, from: IpAddr, msg: &[u8]) {
        let Some(id) = self.icmp_idents.get(&(v6, ident)) else {
            return;
        };
        let Some(s) = self.icmp.get_mut(id) else {
            return;
        };
        if s.rx_bytes + msg.len() > crate::icmp::RX_CAP {
            return;
        }
        s.rx_bytes += msg.len();
        s.rx.push_back((from, msg.to_vec()));
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }

    fn receive_icmp(&mut self, ip: &Ip, pkt: &[u8]) {
        let msg = ip.payload(pkt);
        let Some(h) = Icmp::parse(msg) else { return };
        match (h.ty, h.code) {
            (wire::ICMPV4_ECHO_REQUEST, 0) => self.echo_reply(ip, msg, wire::ICMPV4_ECHO_REPLY),
            (wire::ICMPV4_ECHO_REPLY, 0) => self.deliver_icmp(false, h.ident, ip.src, msg),
            (ty, code) => self.udp_icmp_error(false, ty, code, msg),
        }
    }

    /// Give a copy of a received packet to the raw sockets of its family and protocol
    /// (raw(7)): IPv4 ones get the whole packet, IP header included; IPv6 ones the
    /// payload (ipv6(7), "raw sockets"). The stack goes on processing it as usual.
    fn deliver_raw(&mut self, ip: &Ip, data: &[u8]) {
        if self.raw.is_empty() {
            return;
        }
        let v6 = ip.dst.is_ipv6();
        for s in self.raw.values_mut() {
            if s.v6 != v6 || s.protocol != ip.proto {
                continue;
            }
            if s.rx_bytes + data.len() > crate::icmp::RX_CAP {
                continue; // receive buffer full: dropped, as the kernel does
            }
            s.rx_bytes += data.len();
            s.rx.push_back((ip.src, data.to_vec()));
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        }
    }

    /// An ICMP error about a UDP datagram we sent: a connected socket of that flow keeps
    /// the error for its next receive, when Linux would report it (a hard error,
    /// [`wire::udp_hard_error`]; `__udp4_lib_err` looks the socket up by the quoted
    /// addresses and ignores unconnected ones without `IP_RECVERR`).
    fn udp_icmp_error(&mut self, v6: bool, ty: u8, code: u8, msg: &[u8]) {
        let Some((local, remote)) = wire::quoted_udp(msg) else {
            return;
        };
        let Some(err) = wire::udp_hard_error(v6, ty, code, remote) else {
            return;
        };
        let Some(ids) = self.udp_ports.get(&local.port()) else {
            return;
        };
        for id in ids {
            let Some(s) = self.udp.get_mut(id) else {
                continue;
            };
            let connected = s.peer.is_some_and(|p| {
                crate::config::unmap(p.ip()) == remote.ip() && p.port() == remote.port()
            });
            if !connected {
                continue;
            }
            s.error = Some(err.clone());
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        }
    }

    fn receive_icmpv6(&mut self, eth: Ethernet, ip: &Ip, pkt: &[u8]) {
        let msg = ip.payload(pkt);
        let Some(h) = Icmp::parse(msg) else { return };
        match h.ty {
            wire::ICMPV6_NS | wire::ICMPV6_NA => {
                // RFC 4861 7.1.1: NDP messages must arrive with hop limit 255.
                if ip.hop_limit != 255 {
                    return;
                }
                let Some(n) = Ndp::parse(msg) else { return };
                let IpAddr::V6(src) = ip.src else { return };
                if n.solicit {
                    if !self.net.is_local(IpAddr::V6(n.target)) {
                        return;
                    }
                    let lladdr = n.lladdr.unwrap_or(eth.src);
                    if !src.is_unspecified() {
                        self.egress.learn(IpAddr::V6(src), lladdr);
                    }
                    let (dst, dst_mac) = if src.is_unspecified() {
                        let all: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
                        (
                            all,
                            wire::multicast_mac(IpAddr::V6(all)).unwrap_or(wire::BROADCAST_MAC),
                        )
                    } else {
                        (src, lladdr)
                    };
                    self.egress
                        .send_ndp(false, n.target, n.target, dst, dst_mac);
                } else if let Some(m) = n.lladdr {
                    if self.egress.neighbors.contains_key(&IpAddr::V6(n.target)) {
                        self.egress.learn(IpAddr::V6(n.target), m);
                    }
                }
            }
            wire::ICMPV6_ECHO_REQUEST if h.code == 0 && self.net.is_local(ip.dst) => {
                self.echo_reply(ip, msg, wire::ICMPV6_ECHO_REPLY)
            }
            wire::ICMPV6_ECHO_REPLY if h.code == 0 => self.deliver_icmp(true, h.ident, ip.src, msg),
            ty @ 1..=4 => self.udp_icmp_error(true, ty, h.code, msg),
            _ => {}
        }
    }
}

/// The connection (local, remote) of a TCP SYN (no ACK) framed at `frame[ETH_HEADER..]`:
/// a connect's first segment or its retransmission.
fn connecting(frame: &[u8]) -> Option<Key> {
    let ip = Ip::parse(frame.get(ETH_HEADER..)?)?;
    if ip.proto != wire::PROTO_TCP {
        return None;
    }
    let t = TcpPorts::parse(ip.payload(&frame[ETH_HEADER..]))?;
    (t.syn && !t.ack && !t.rst).then(|| {
        (
            SocketAddr::new(ip.src, t.src),
            SocketAddr::new(ip.dst, t.dst),
        )
    })
}

/// The segment size a connection over an IP MTU of `mtu` sends to a peer whose SYN
/// announced `peer` (smoltcp's `remote_mss`: 536 without the option, at least 48; no TCP
/// options are sent besides on the SYN, so nothing more comes off).
fn effective_mss(mtu: usize, v6: bool, peer: Option<u16>) -> u16 {
    let ours = mtu.saturating_sub(if v6 { 40 } else { 20 } + 20);
    let theirs = match peer {
        Some(m) if m != 0 => usize::from(m).max(48),
        _ => 536,
    };
    ours.min(theirs).min(usize::from(u16::MAX)) as u16
}

/// Whether a close must wait ([`Core::close_write`]): the peer has closed (CLOSE-WAIT) and
/// data is still queued.
fn close_must_wait(s: &tcp::Socket<'_>) -> bool {
    s.state() == tcp::State::CloseWait && s.send_queue() > 0
}

/// Whether a bare ACK for a connection that sent its FIN is a repeat to keep from smoltcp.
///
/// smoltcp 0.14 cannot fast-retransmit a FIN: when the third duplicate ACK arrives while
/// only the FIN is unacknowledged (all data acknowledged), it clears its retransmission
/// timer, finds no data to resend, and never sends the FIN again, so the peer never sees
/// end-of-file. Duplicate ACKs are common right there: after a timeout smoltcp resends
/// everything from the oldest unacknowledged byte, and the peer answers each duplicate
/// segment with the same ACK. An ACK that acknowledges exactly up to our FIN, repeated
/// with the same window, carries nothing new and only feeds that count, so it is dropped;
/// smoltcp's retransmission timer then resends the FIN. ACKs below the FIN (data still
/// unacknowledged: duplicate ACKs drive the fast retransmit of that data) and the ACK of
/// the FIN itself pass untouched.
fn repeated_ack_for_fin(c: &mut Conn, pure_ack: Option<(u32, u16)>) -> bool {
    match pure_ack {
        Some((ack, win)) if Some(ack) == c.fin_seq => {
            if c.last_pure_ack == Some((ack, win)) {
                return true;
            }
            c.last_pure_ack = Some((ack, win));
            false
        }
        _ => false,
    }
}

/// Do two bindings `(addr, v6only)` on one port overlap?
fn overlap(a: (SocketAddr, bool), b: (SocketAddr, bool)) -> bool {
    let covers = |(x, x6only): (SocketAddr, bool), y: IpAddr| {
        let xa = x.ip();
        xa == y
            || (xa.is_unspecified() && xa.is_ipv4() == y.is_ipv4())
            || (xa.is_unspecified() && xa.is_ipv6() && y.is_ipv4() && !x6only)
    };
    let (aa, ba) = (a.0.ip(), b.0.ip());
    if aa.is_unspecified() && ba.is_unspecified() {
        return aa.is_ipv4() == ba.is_ipv4() || (aa.is_ipv6() && !a.1) || (ba.is_ipv6() && !b.1);
    }
    covers(a, ba) || covers(b, aa)
}

/// Unused by the core itself: the unspecified address of a family.
pub(crate) fn unspecified(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_overlap_follows_v6only() {
        let any4: SocketAddr = "0.0.0.0:80".parse().unwrap();
        let any6: SocketAddr = "[::]:80".parse().unwrap();
        let one4: SocketAddr = "10.0.0.1:80".parse().unwrap();
        assert!(overlap((any4, false), (one4, false)));
        assert!(overlap((any6, false), (any4, false)));
        assert!(!overlap((any6, true), (any4, false)));
        assert!(!overlap((any6, true), (one4, false)));
        assert!(overlap((any6, false), (one4, false)));
        assert!(!overlap(
            ("10.0.0.2:80".parse().unwrap(), false),
            (one4, false)
        ));
    }
}
