//! The sans-IO VL1/VL2 state machine: [`Node`] (an ordinary member of the overlay) and
//! [`Root`] (rendezvous, WHOIS and relay of last resort).
//!
//! # Driving a node
//!
//! ```text
//! let mut node = Node::new(config, now);          // starts handshakes with the roots
//! loop {
//!     while let Some(t) = node.poll_transmit() { send t.bytes to t.dst }
//!     while let Some(e) = node.poll_event() { ... }
//!     wait until a datagram arrives, a frame must be sent, or node.poll_timeout()
//!     node.handle_datagram(now, from, &bytes) | node.send_frame(now, nwid, &frame)
//!         | node.handle_timeout(now)
//! }
//! ```
//!
//! Every input method takes the current time; nothing here reads a clock, opens a socket or
//! draws randomness except from the ChaCha20 generator seeded by [`NodeConfig::rng_seed`].
//! After any `handle_*`/`send_frame`/`join` call, drain `poll_transmit` and `poll_event`, and
//! re-read `poll_timeout`.
//!
//! # Peers and paths
//!
//! A peer is reached over a *direct path* (a UDP endpoint from which an authenticated
//! packet arrived within [`Timing::path_timeout`]) or, when there is none, through a root,
//! which forwards packets addressed to other nodes unchanged except for the hop count.
//! When a root relays between two nodes it sends each a RENDEZVOUS with the other's
//! external endpoint as the root sees it; both then send probes to each other at the same
//! time, which opens port-restricted NAT mappings on both sides (UDP hole punching). A
//! probe answered with an authenticated packet makes the path direct, and traffic moves to
//! it. Behind symmetric NATs the probes never arrive and traffic stays relayed. When an
//! authenticated packet arrives from a new endpoint (a NAT rebinding), the path moves
//! there.
//!
//! Only paths *confirmed* for the current session are used: whenever the current session
//! is replaced, every path waits for a packet of the new session. So when a peer restarts
//! with the same identity on a new endpoint and reaches this node through a root, its new
//! session replaces the old one and replies follow it through the relay, instead of going
//! for up to [`Timing::path_timeout`] to the endpoint of the dead instance. When the
//! restarted peer stays silent instead, this node notices that nothing authentic came back
//! for a keepalive interval and a third while it kept sending, and starts a handshake that
//! goes both on the direct path and through the relay, which finds the new instance.
//!
//! # Sessions
//!
//! Each peer has up to three sessions: `current` (used to send), `previous` (still
//! accepted for [`Timing::previous_keep`] after a rekey, so packets in flight across a
//! rekey are not lost) and `next` (a responder's new session, promoted to `current` once the
//! initiator sends on it, which proves the handshake was not a replay). Sessions are
//! replaced after [`Timing::rekey_after_packets`] packets or [`Timing::rekey_after_time`].
//! When both sides start a handshake at once, the initiation from the lower address wins.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng as _, SeedableRng as _};

use crate::admission::{Admission, AdmissionStats, Source, Verdict, SECRET_LIFETIME};
use crate::controller::{
    adhoc_addresses, certificates_agree,
    store::{Change, Writer},
    verify_certificate, verify_config, verify_revocation, ConfigDenied, Controller,
    ControllerError, Member,
};
use crate::identity::{Address, Identity, SecretIdentity};
use crate::reassembly::Reassembler;
use crate::session::{self, InitiatorHandshake, Session};
use crate::vl2::{Mac, NetworkId, DEFAULT_MTU};
use crate::wire::cookie::{
    CookieInitPacket, CookieInitRepr, CookieReplyPacket, CookieReplyRepr, COOKIE_LEN,
};
use crate::wire::credential::{Certificate, DirectoryEntry, Revocation, Route, SignedConfig};
use crate::wire::data::{DataPacket, DataRepr, DATA_PREFIX_LEN, TAG_LEN};
use crate::wire::fragment::{FragmentPacket, FragmentRepr, FRAGMENT_PREFIX_LEN, MAX_FRAGMENTS};
use crate::wire::handshake::{InitPacket, InitRepr, ResponsePacket, ResponseRepr};
use crate::wire::header::{self, PacketType, FLAG_AES_GCM, HEADER_LEN, MAX_HOPS};
use crate::wire::message::{Message, MAX_FRAME_LEN, MAX_MEMBERS, MIN_FRAME_LEN};

/// Timers and limits. The defaults suit real networks; tests shorten them.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Send a keepalive when nothing was sent to a peer for this long.
    pub keepalive: Duration,
    /// A peer with no authenticated packet for this long is down.
    pub peer_timeout: Duration,
    /// A direct path with no authenticated packet for this long is dropped.
    pub path_timeout: Duration,
    /// First handshake retransmission delay (doubles up to 8×).
    pub handshake_retry: Duration,
    /// WHOIS retransmission delay.
    pub whois_retry: Duration,
    /// WHOIS attempts before queued traffic for the address is dropped.
    pub whois_attempts: u32,
    /// Start a new handshake after this many packets on a session.
    pub rekey_after_packets: u64,
    /// Start a new handshake when a session is this old.
    pub rekey_after_time: Duration,
    /// Keep accepting the replaced session for this long after a rekey.
    pub previous_keep: Duration,
    /// Interval between hole-punching probes.
    pub probe_interval: Duration,
    /// Probes sent per rendezvous.
    pub probe_count: u32,
    /// A root sends a pair of nodes a RENDEZVOUS at most this often.
    pub rendezvous_interval: Duration,
    /// Re-request a network configuration this often (keeps certificates fresh).
    pub config_refresh: Duration,
    /// Retry a configuration request this often while none has arrived or access is denied.
    pub config_retry: Duration,
    /// Incomplete fragmented packets are dropped after this long.
    pub reassembly_timeout: Duration,
    /// Re-announce network memberships (LIKE) to the roots this often; until a member list
    /// has arrived, retry every [`Timing::whois_retry`].
    pub members_refresh: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            keepalive: Duration::from_secs(15),
            peer_timeout: Duration::from_secs(60),
            path_timeout: Duration::from_secs(45),
            handshake_retry: Duration::from_secs(1),
            whois_retry: Duration::from_secs(1),
            whois_attempts: 5,
            rekey_after_packets: 1 << 40,
            rekey_after_time: Duration::from_secs(120),
            previous_keep: Duration::from_secs(30),
            probe_interval: Duration::from_millis(500),
            probe_count: 10,
            rendezvous_interval: Duration::from_secs(10),
            reassembly_timeout: Duration::from_secs(5),
            config_refresh: Duration::from_secs(30),
            config_retry: Duration::from_secs(2),
            members_refresh: Duration::from_secs(30),
        }
    }
}

/// A root this node registers with.
#[derive(Debug, Clone)]
pub struct RootSpec {
    /// The root's identity (verified by [`Node::new`]).
    pub identity: Identity,
    /// Its UDP endpoints (IPv4 and/or IPv6).
    pub endpoints: Vec<SocketAddr>,
}

/// Everything a [`Node`] is made from.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's identity.
    pub identity: SecretIdentity,
    /// The roots to register with; at least one for anything beyond direct contact.
    pub roots: Vec<RootSpec>,
    /// Seed of the node's random generator (session indices, ephemeral keys, ids).
    pub rng_seed: [u8; 32],
    /// Timers.
    pub timing: Timing,
    /// Largest UDP payload to send; bigger packets are fragmented.
    pub udp_mtu: usize,
    /// Offer and accept AES-256-GCM for sessions' transport (default: when this CPU runs
    /// it in hardware, [`session::aes_gcm_is_fast`]); ChaCha20-Poly1305 otherwise.
    pub aes_transport: bool,
}

impl NodeConfig {
    /// A configuration with default timing and a 1400-byte UDP MTU.
    pub fn new(identity: SecretIdentity, roots: Vec<RootSpec>, rng_seed: [u8; 32]) -> Self {
        NodeConfig {
            identity,
            roots,
            rng_seed,
            timing: Timing::default(),
            udp_mtu: DEFAULT_UDP_MTU,
            aes_transport: session::aes_gcm_is_fast(),
        }
    }
}

/// Default largest UDP payload (fits a 1500-byte Ethernet path with IPv6 and headroom).
pub const DEFAULT_UDP_MTU: usize = 1400;
/// Smallest UDP MTU a node accepts.
pub const MIN_UDP_MTU: usize = 576;
/// Records queued for a peer without a session (waiting for WHOIS or a handshake): at
/// most this many, and at most [`MAX_QUEUE_BYTES`]; the oldest are dropped first.
const MAX_QUEUE: usize = 64;
const MAX_QUEUE_BYTES: usize = 64 * 1024;
/// Broadcast and multicast frames sent on a network before a root has told the member
/// list: at most this many wait for it (the oldest are dropped first).
const MAX_EARLY_MULTICAST: usize = 8;
const MAX_HANDSHAKE_ATTEMPTS: u32 = 8;
/// New identities (unknown to this node) verified per second at most; more initiations
/// from unknown nodes are dropped and will be retransmitted by their senders.
/// They pass [`crate::admission`] first, so a flood from a few addresses cannot use up
/// this budget.
const MAX_VERIFY_PER_SECOND: u32 = 100;
/// An initiator uses a cookie it received this long (the responder accepts it for at
/// least [`SECRET_LIFETIME`]).
const COOKIE_TTL: Duration = Duration::from_secs(SECRET_LIFETIME.as_secs() - 10);
/// Cookies an initiator remembers per peer (one per endpoint it sends initiations to).
const MAX_COOKIES: usize = 4;
const MAX_CANDIDATES: usize = 4;
/// Packets reassembled at once: a burst of frames sends the first pieces of up to
/// `FRAME_BATCH` (64) frames before their last pieces, per peer.
const MAX_REASSEMBLY: usize = 256;
/// Most spare transmit buffers kept for reuse ([`Node::recycle`]): a burst of frames'
/// fragments.
const MAX_SPARE: usize = 64;
/// Most spare buffers larger than a UDP MTU kept for reuse.
const MAX_SPARE_LARGE: usize = 16;
/// Buffers larger than this are not kept (a fragment or a small packet is at most a UDP
/// MTU; a whole jumbo frame's packet is sent fragmented and its buffer kept too).
const MAX_SPARE_CAPACITY: usize = 16 * 1024;
/// Bytes of a FRAME record before the frame: the type and the network ID.
const FRAME_RECORD_PREFIX: usize = 1 + 8;

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination endpoint.
    pub dst: SocketAddr,
    /// UDP payload.
    pub bytes: Vec<u8>,
}

/// The settings of a joined virtual network, as the interface on top needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The network.
    pub nwid: NetworkId,
    /// This node's MAC on it.
    pub mac: Mac,
    /// The MTU (Ethernet payload bytes).
    pub mtu: usize,
    /// The network's name (empty for ad-hoc networks).
    pub name: String,
    /// Whether members need certificates.
    pub private: bool,
    /// Addresses assigned to this node, with prefix lengths. Ad-hoc networks get the
    /// addresses of [`crate::controller::adhoc_addresses`].
    pub addresses: Vec<(IpAddr, u8)>,
    /// Routes pushed by the controller.
    pub routes: Vec<Route>,
    /// The members the controller lists, for naming them (empty on ad-hoc networks).
    pub directory: Vec<DirectoryEntry>,
}

/// Where a joined network stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkState {
    /// Waiting for the controller's answer.
    Requesting,
    /// Configured.
    Ok(NetworkConfig),
    /// The controller refused (or revoked this node).
    Denied(ConfigDenied),
}

/// A joined network as `zt status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkStatus {
    /// The network.
    pub nwid: NetworkId,
    /// This node's MAC on it.
    pub mac: Mac,
    /// Its state.
    pub state: NetworkState,
}

/// Something the application should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A session with a peer is established.
    PeerUp {
        /// The peer.
        address: Address,
    },
    /// A peer stopped answering; its sessions are gone.
    PeerDown {
        /// The peer.
        address: Address,
    },
    /// An Ethernet frame arrived for a joined network.
    FrameReceived {
        /// The network.
        nwid: NetworkId,
        /// The frame.
        frame: Vec<u8>,
    },
    /// A network is ready or its configuration changed (ad-hoc networks are ready at
    /// once, controller networks when the signed configuration arrives).
    NetworkConfig(NetworkConfig),
    /// The controller refused this node a configuration, or revoked it. The node keeps
    /// asking, so a later authorization is picked up.
    NetworkDenied {
        /// The network.
        nwid: NetworkId,
        /// Why.
        reason: ConfigDenied,
    },
}

/// How a peer is reached right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// Directly, at this endpoint.
    Direct(SocketAddr),
    /// Through a root.
    Relayed,
    /// Not at all (yet).
    None,
}

/// A peer as `zt status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer.
    pub address: Address,
    /// Whether it is one of this node's roots.
    pub is_root: bool,
    /// Whether the peer is live: a session is up, an authenticated packet came from it
    /// within [`Node::live_within`] (a live peer sends at least a keepalive per
    /// [`Timing::keepalive`]), and no ping to it has gone unanswered for more than
    /// [`PING_ANSWER`]. A peer that exited shows as not up within that time, long before
    /// [`Timing::peer_timeout`] ends its session.
    pub up: bool,
    /// The path in use.
    pub path: PathKind,
    /// Round-trip time of the last answered ping.
    pub latency: Option<Duration>,
    /// Handshakes completed with this peer (1 + number of rekeys, typically).
    pub handshakes: u64,
    /// How long ago the last authenticated packet came from it, if one did since its
    /// session came up.
    pub last_heard: Option<Duration>,
    /// The AEAD of the current session's transport, if there is a session.
    pub cipher: Option<session::Cipher>,
}

/// A ping unanswered for this long means the peer is not live (for [`PeerStatus::up`]);
/// round trips over the overlay, relayed ones included, take far less.
pub const PING_ANSWER: Duration = Duration::from_secs(2);

/// Relay counters of a [`Root`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Packets forwarded.
    pub packets: u64,
    /// Bytes forwarded.
    pub bytes: u64,
    /// Of which handshake packets.
    pub handshake_packets: u64,
    /// Of which transport packets and fragments (data).
    pub data_packets: u64,
}

/// Why a frame was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The node has not joined this network.
    #[error("network {nwid} is not joined")]
    NotJoined {
        /// The network.
        nwid: NetworkId,
    },
    /// The frame is shorter than an Ethernet header or longer than the MTU allows.
    #[error("frame of {len} bytes is outside {MIN_FRAME_LEN}..={MAX_FRAME_LEN}")]
    FrameSize {
        /// Its length.
        len: usize,
    },
    /// The source MAC is not this node's MAC on the network (bridging is not supported).
    #[error("source MAC {src} is not this node's MAC {mine} on {nwid}")]
    ForeignSource {
        /// The network.
        nwid: NetworkId,
        /// The frame's source MAC.
        src: Mac,
        /// This node's MAC.
        mine: Mac,
    },
    /// The network has no configuration yet (or access was denied).
    #[error("network {nwid} is not configured (waiting for the controller, or access denied)")]
    NotConfigured {
        /// The network.
        nwid: NetworkId,
    },
    /// The destination MAC belongs to no possible member.
    #[error("destination MAC {dst} is not a member MAC of {nwid}")]
    UnknownDestination {
        /// The network.
        nwid: NetworkId,
        /// The frame's destination MAC.
        dst: Mac,
    },
}

/// Why a network could not be joined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The ID neither starts with `ff` (ad-hoc) nor with a valid controller address.
    #[error("network ID {nwid} names no controller (its first 10 digits are a reserved address)")]
    InvalidNetworkId {
        /// The network.
        nwid: NetworkId,
    },
}

#[derive(Debug)]
struct Pending {
    hs: InitiatorHandshake,
    /// The HANDSHAKE_INIT datagram, for [`Node::on_init`] to repeat it when the peer's own
    /// initiation crosses it and loses the tie-break.
    packet: Vec<u8>,
    /// When `packet` was last repeated that way.
    repeated_at: Option<Instant>,
    /// When `packet` was last sent again at once because a COOKIE_REPLY asked for it.
    cookie_resent_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Path {
    endpoint: SocketAddr,
    last_rx: Instant,
    /// The [`Peer::generation`] of the current session when a packet authenticated under
    /// the current session last arrived here. Only a path confirmed for the session in use
    /// is used to send: a path learned under an older session may lead to a previous
    /// instance of the peer (a restarted process on a new port).
    confirmed: u64,
}

#[derive(Debug)]
struct Peer {
    identity: Option<Identity>,
    root_endpoints: Vec<SocketAddr>,
    current: Option<Session>,
    previous: Option<(Session, Instant)>,
    next: Option<(Session, Instant)>,
    pending: Option<Pending>,
    hs_attempts: u32,
    hs_next: Option<Instant>,
    handshakes: u64,
    last_init: Option<[u8; 32]>,
    /// Cookies from this peer's COOKIE_REPLYs: (where the reply came from, cookie, when).
    cookies: Vec<(SocketAddr, [u8; COOKIE_LEN], Instant)>,
    paths: Vec<Path>,
    /// Bumped whenever `current` becomes another session (0: never had one).
    generation: u64,
    candidates: Vec<SocketAddr>,
    probes_left: u32,
    probe_at: Option<Instant>,
    last_rx: Option<Instant>,
    last_tx: Option<Instant>,
    last_confirm: Option<Instant>,
    up: bool,
    queue: VecDeque<Vec<u8>>,
    whois_at: Option<Instant>,
    whois_attempts: u32,
    latency: Option<Duration>,
    ping: Option<(u64, Instant)>,
}

impl Peer {
    fn new() -> Self {
        Peer {
            identity: None,
            root_endpoints: Vec::new(),
            current: None,
            previous: None,
            next: None,
            pending: None,
            hs_attempts: 0,
            hs_next: None,
            handshakes: 0,
            last_init: None,
            cookies: Vec::new(),
            paths: Vec::new(),
            generation: 0,
            candidates: Vec::new(),
            probes_left: 0,
            probe_at: None,
            last_rx: None,
            last_tx: None,
            last_confirm: None,
            up: false,
            queue: VecDeque::new(),
            whois_at: None,
            whois_attempts: 0,
            latency: None,
            ping: None,
        }
    }

    fn is_root(&self) -> bool {
        !self.root_endpoints.is_empty()
    }

    /// The freshest direct path that is still alive and confirmed for the current
    /// session (see [`Path::confirmed`]).
    fn best_path(&self, now: Instant, timeout: Duration) -> Option<SocketAddr> {
        self.confirmed_paths()
            .filter(|p| now.saturating_duration_since(p.last_rx) < timeout)
            .max_by_key(|p| p.last_rx)
            .map(|p| p.endpoint)
    }

    /// Paths that carried a packet of the current session.
    fn confirmed_paths(&self) -> impl Iterator<Item = &Path> {
        let generation = self.current.as_ref().map(|_| self.generation);
        self.paths
            .iter()
            .filter(move |p| Some(p.confirmed) == generation)
    }

    /// Makes `session` the current one; returns the replaced session. Every path must
    /// carry a packet of the new session before it is used again.
    fn set_current(&mut self, session: Session) -> Option<Session> {
        self.generation += 1;
        self.current.replace(session)
    }

    /// Records an authenticated packet that arrived directly from `endpoint`;
    /// `on_current` says whether it was authenticated under the current session.
    fn touch_path(&mut self, endpoint: SocketAddr, now: Instant, on_current: bool) {
        let generation = self.generation;
        if let Some(p) = self.paths.iter_mut().find(|p| p.endpoint == endpoint) {
            p.last_rx = now;
            if on_current {
                p.confirmed = generation;
            }
        } else {
            self.paths.push(Path {
                endpoint,
                last_rx: now,
                confirmed: if on_current { generation } else { 0 },
            });
            if self.paths.len() > MAX_CANDIDATES {
                self.paths.sort_by_key(|p| std::cmp::Reverse(p.last_rx));
                self.paths.truncate(MAX_CANDIDATES);
            }
        }
    }

    /// Holds a record until a session is up; see [`MAX_QUEUE`].
    fn enqueue(&mut self, msg: Vec<u8>) {
        self.queue.push_back(msg);
        let mut bytes: usize = self.queue.iter().map(Vec::len).sum();
        while self.queue.len() > MAX_QUEUE || (bytes > MAX_QUEUE_BYTES && self.queue.len() > 1) {
            bytes -= self.queue.pop_front().map_or(0, |m| m.len());
        }
    }

    fn session_indices(&self) -> Vec<u32> {
        let mut v = Vec::new();
        v.extend(self.current.as_ref().map(|s| s.local_index));
        v.extend(self.previous.as_ref().map(|s| s.0.local_index));
        v.extend(self.next.as_ref().map(|s| s.0.local_index));
        v.extend(self.pending.as_ref().map(|p| p.hs.local_index));
        v
    }
}

#[derive(Debug)]
struct Network {
    mac: Mac,
    members: BTreeSet<Address>,
    /// Whether a root has sent a member list yet.
    members_known: bool,
    /// FRAME records of multicast frames sent before the member list arrived.
    early_multicast: VecDeque<Vec<u8>>,
    /// When to announce the membership to the roots again.
    like_at: Instant,
    /// The signed configuration (controller networks).
    config: Option<SignedConfig>,
    /// The controller's refusal, if any.
    denied: Option<ConfigDenied>,
    /// When to ask the controller (again); `None` for ad-hoc networks.
    request_at: Option<Instant>,
    /// Verified certificates of peers.
    peer_certs: BTreeMap<Address, Certificate>,
    /// Revocation thresholds by member.
    revoked: BTreeMap<Address, u64>,
    /// When this node last showed its certificate to a peer, which one, and the peer's
    /// session generation ([`Peer::generation`]) then.
    creds_sent: BTreeMap<Address, (Instant, u64, u64)>,
}

impl Network {
    fn new(mac: Mac, like_at: Instant, request_at: Option<Instant>) -> Self {
        Network {
            mac,
            members: BTreeSet::new(),
            members_known: false,
            early_multicast: VecDeque::new(),
            like_at,
            config: None,
            denied: None,
            request_at,
            peer_certs: BTreeMap::new(),
            revoked: BTreeMap::new(),
            creds_sent: BTreeMap::new(),
        }
    }

    /// For private networks: may frames from/to `peer` pass?
    fn admits(&self, peer: Address) -> bool {
        let Some(cfg) = &self.config else {
            return false;
        };
        if !cfg.private {
            return true;
        }
        let Some(cert) = self.peer_certs.get(&peer) else {
            return false;
        };
        certificates_agree(&cfg.certificate, cert)
            && self.revoked.get(&peer).is_none_or(|t| cert.timestamp > *t)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Node,
    Root,
}

/// A member of the overlay. See the module documentation for the call order.
#[derive(Debug)]
pub struct Node {
    role: Role,
    identity: SecretIdentity,
    timing: Timing,
    udp_mtu: usize,
    /// [`NodeConfig::aes_transport`].
    aes_transport: bool,
    rng: ChaCha20Rng,
    peers: BTreeMap<Address, Peer>,
    indices: HashMap<u32, Address>,
    networks: BTreeMap<NetworkId, Network>,
    transmits: VecDeque<Transmit>,
    /// Fragments that are not the last of their packet. They complete no packet, so
    /// sending them ahead of what is queued changes no packet's arrival order, and it puts
    /// the equal-sized pieces of a burst of frames side by side: the first pieces of 40
    /// frames leave as one UDP GSO send, their last pieces as another, instead of 80
    /// alternating sizes that the kernel must take one packet at a time.
    leading: VecDeque<Transmit>,
    /// Buffers of sent transmits, given back by the driver ([`Node::recycle`]) and reused
    /// for the next packets and fragments, so the data path does not allocate per packet:
    /// those of at most a UDP MTU, and larger ones (whole packets that were fragmented).
    spare: [Vec<Vec<u8>>; 2],
    events: VecDeque<Event>,
    reassembly: Reassembler,
    observed: Option<SocketAddr>,
    // Root role only.
    memberships: BTreeMap<NetworkId, BTreeSet<Address>>,
    rendezvous: HashMap<(Address, Address), Instant>,
    relay: RelayStats,
    /// Start of the current one-second window and identities verified in it.
    verify_window: (Instant, u32),
    /// What is checked before an initiation costs asymmetric crypto.
    admission: Admission,
    /// The controller this node hosts, if any.
    controller: Option<Controller>,
}

impl Node {
    /// Creates a node and starts handshakes with its roots. Roots whose identity does not
    /// verify are ignored (and logged).
    pub fn new(config: NodeConfig, now: Instant) -> Self {
        let roots = config.roots.clone();
        let mut node = Node::with_role(config, Role::Node, now);
        for spec in roots {
            if let Err(e) = spec.identity.verify() {
                tracing::warn!(root = %spec.identity.address(), error = %e, "ignoring root");
                continue;
            }
            if spec.identity.address() == node.address() || spec.endpoints.is_empty() {
                continue;
            }
            let peer = node.peer_mut(spec.identity.address());
            peer.identity = Some(spec.identity.clone());
            peer.root_endpoints = spec.endpoints.clone();
        }
        node.handle_timeout(now);
        node
    }

    fn with_role(config: NodeConfig, role: Role, now: Instant) -> Self {
        let mut rng = ChaCha20Rng::from_seed(config.rng_seed);
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        Node {
            role,
            identity: config.identity,
            timing: config.timing,
            udp_mtu: config.udp_mtu.max(MIN_UDP_MTU),
            aes_transport: config.aes_transport,
            rng,
            peers: BTreeMap::new(),
            indices: HashMap::new(),
            networks: BTreeMap::new(),
            transmits: VecDeque::new(),
            leading: VecDeque::new(),
            spare: [Vec::new(), Vec::new()],
            events: VecDeque::new(),
            reassembly: Reassembler::new(MAX_REASSEMBLY),
            observed: None,
            memberships: BTreeMap::new(),
            rendezvous: HashMap::new(),
            relay: RelayStats::default(),
            verify_window: (now, 0),
            admission: Admission::new(secret, now),
            controller: None,
        }
    }

    /// This node's address.
    pub fn address(&self) -> Address {
        self.identity.address()
    }

    /// This node's public identity.
    pub fn identity(&self) -> &Identity {
        self.identity.public()
    }

    /// What handshake admission did so far (initiations, cookies, crypto spent).
    pub fn admission_stats(&self) -> AdmissionStats {
        self.admission.stats()
    }

    /// The external endpoint a root reported for this node (HELLO_OK), if any.
    pub fn observed_endpoint(&self) -> Option<SocketAddr> {
        self.observed
    }

    /// Takes the next datagram to send. Datagrams that complete packets come in the order
    /// the packets were sent; fragments that complete none may come ahead of them.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.leading
            .pop_front()
            .or_else(|| self.transmits.pop_front())
    }

    /// Gives back the buffer of a sent [`Transmit`] for the node to build later packets
    /// in (optional: a node that gets none allocates).
    pub fn recycle(&mut self, mut bytes: Vec<u8>) {
        let (pool, most) = if bytes.capacity() > self.udp_mtu {
            (&mut self.spare[1], MAX_SPARE_LARGE)
        } else {
            (&mut self.spare[0], MAX_SPARE)
        };
        if pool.len() < most && bytes.capacity() <= MAX_SPARE_CAPACITY {
            bytes.clear();
            pool.push(bytes);
        }
    }

    /// An empty buffer of at least `len` bytes of capacity, a spare one if there is one.
    fn buffer(&mut self, len: usize) -> Vec<u8> {
        let pool = &mut self.spare[usize::from(len > self.udp_mtu)];
        match pool.pop() {
            Some(mut b) => {
                b.reserve(len);
                b
            }
            None => Vec::with_capacity(len.max(self.udp_mtu)),
        }
    }

    /// Takes the next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// How recently a peer must have been heard from to count as live in
    /// [`PeerStatus::up`]: one keepalive interval and a third, as for
    /// `silence_deadline`.
    pub fn live_within(&self) -> Duration {
        self.timing.keepalive + self.timing.keepalive / 3
    }

    /// The status of every known peer, roots first.
    pub fn peers(&self, now: Instant) -> Vec<PeerStatus> {
        let live_within = self.live_within();
        let mut v: Vec<PeerStatus> = self
            .peers
            .iter()
            .map(|(a, p)| PeerStatus {
                address: *a,
                is_root: p.is_root(),
                up: p.up
                    && p.last_rx
                        .is_some_and(|x| now.saturating_duration_since(x) <= live_within)
                    && p.ping
                        .is_none_or(|(_, sent)| now.saturating_duration_since(sent) <= PING_ANSWER),
                last_heard: p.last_rx.map(|x| now.saturating_duration_since(x)),
                path: match p.best_path(now, self.timing.path_timeout) {
                    Some(ep) => PathKind::Direct(ep),
                    None if p.current.is_some() && self.relay_root().is_some() => PathKind::Relayed,
                    None => PathKind::None,
                },
                latency: p.latency,
                handshakes: p.handshakes,
                cipher: p.current.as_ref().map(Session::cipher),
            })
            .collect();
        v.sort_by_key(|s| (!s.is_root, s.address));
        v
    }

    /// Joins a virtual network and returns this node's MAC on it. Ad-hoc networks (ID
    /// starting with `ff`) are ready at once; for controller networks the node asks the
    /// controller, and an [`Event::NetworkConfig`] or [`Event::NetworkDenied`] follows.
    pub fn join(&mut self, now: Instant, nwid: NetworkId) -> Result<Mac, JoinError> {
        if !nwid.is_adhoc() && nwid.controller().is_none() {
            return Err(JoinError::InvalidNetworkId { nwid });
        }
        let mac = Mac::for_member(nwid, self.address());
        if self.networks.contains_key(&nwid) {
            return Ok(mac);
        }
        let like_at = now + self.timing.whois_retry;
        if nwid.is_adhoc() {
            self.networks.insert(nwid, Network::new(mac, like_at, None));
            let config = adhoc_view(nwid, mac, self.address());
            self.events.push_back(Event::NetworkConfig(config));
        } else {
            self.networks
                .insert(nwid, Network::new(mac, like_at, Some(now)));
            self.request_config(now, nwid);
        }
        let like = Message::Like { nwid }.to_vec();
        for root in self.root_addresses() {
            self.send_message(now, root, like.clone());
        }
        Ok(mac)
    }

    /// The joined networks and their state.
    pub fn networks(&self) -> Vec<NetworkStatus> {
        self.networks
            .iter()
            .map(|(nwid, n)| NetworkStatus {
                nwid: *nwid,
                mac: n.mac,
                state: if nwid.is_adhoc() {
                    NetworkState::Ok(adhoc_view(*nwid, n.mac, self.address()))
                } else if let Some(c) = &n.config {
                    NetworkState::Ok(config_view(n.mac, c))
                } else if let Some(d) = n.denied {
                    NetworkState::Denied(d)
                } else {
                    NetworkState::Requesting
                },
            })
            .collect()
    }

    /// Makes this node the controller of the networks whose IDs start with its address.
    pub fn attach_controller(&mut self, controller: Controller) {
        self.controller = Some(controller);
    }

    /// The hosted controller, for reading its state.
    pub fn controller(&self) -> Option<&Controller> {
        self.controller.as_ref()
    }

    /// The hosted controller, for changing network settings. Use
    /// [`Node::set_member_authorized`] to (de)authorize members, so that revocations and
    /// fresh configurations are sent.
    pub fn controller_mut(&mut self) -> Option<&mut Controller> {
        self.controller.as_mut()
    }

    /// Authorizes or deauthorizes a member of a network of the hosted controller.
    /// Deauthorizing sends a signed revocation to the network's active members (and the
    /// member); authorizing pushes a configuration at once to a member that has asked for
    /// one before.
    pub fn set_member_authorized(
        &mut self,
        now: Instant,
        nwid: NetworkId,
        member: Address,
        authorized: bool,
    ) -> Result<(), ControllerError> {
        let Some(ctl) = self.controller.as_mut() else {
            return Err(ControllerError::UnknownNetwork { nwid });
        };
        // Push a configuration only to a member that has asked for one (it is online and
        // waiting); the others get theirs when they ask.
        let known = ctl.member(nwid, member)?;
        let asked = known.is_some_and(|m| m.last_request.is_some());
        let was = known.is_some_and(|m| m.authorized);
        let revocation = ctl.set_authorized(now, nwid, member, authorized)?;
        let members = match revocation {
            Some(_) => ctl.active_members(nwid),
            None => Vec::new(),
        };
        let me = self.address();
        if let Some(revocation) = revocation {
            self.send_revocation(now, &members, revocation);
        } else if authorized {
            if member == me {
                self.request_config(now, nwid);
            } else if let Some(Ok(config)) = self
                .controller
                .as_mut()
                .filter(|_| asked)
                .map(|c| c.request(now, nwid, member))
            {
                let msg = Message::Config {
                    config: Box::new(config),
                };
                self.send_message(now, member, msg.to_vec());
            }
        }
        if was != authorized {
            // The member directory the others hold changed.
            self.push_configs(now, nwid, Some(member));
        }
        Ok(())
    }

    /// Sends `revocation` to `members` and to the member it revokes (and applies it here
    /// when this node is a member of the network).
    fn send_revocation(&mut self, now: Instant, members: &[Address], revocation: Revocation) {
        let me = self.address();
        let (nwid, member) = (revocation.nwid, revocation.member);
        let bytes = Message::Revoke {
            revocation: revocation.clone(),
        }
        .to_vec();
        for m in members.iter().chain(std::iter::once(&member)) {
            if *m != me {
                self.send_message(now, *m, bytes.clone());
            }
        }
        if self.networks.contains_key(&nwid) {
            self.on_message(now, None, me, Message::Revoke { revocation });
        }
    }

    /// Applies records that another writer stored (a replica of this controller sharing
    /// its database) to the hosted controller, and tells the members as if the change had
    /// been made here: a deauthorized or removed member is revoked, a newly authorized
    /// member that asked before gets its configuration, a deleted network is announced,
    /// and a network whose settings or member directory changed gets fresh
    /// configurations. A record with changes of this controller waiting to be stored is
    /// left as it is (those are newer); a record equal to the one held changes nothing.
    pub fn apply_stored(&mut self, now: Instant, changes: &[Change]) {
        let me = self.address();
        let mut push = BTreeSet::new();
        for c in changes {
            let Some(ctl) = self.controller.as_mut() else {
                return;
            };
            if !matches!(c, Change::Member { .. }) && ctl.is_pending(c) {
                continue;
            }
            match c {
                Change::LastIssued(t) => ctl.install_last_issued(*t),
                Change::Network {
                    nwid,
                    settings: Some(s),
                } => {
                    if ctl.settings(*nwid) != Some(s) {
                        ctl.install_network(*nwid, Some(s.clone()));
                        push.insert(*nwid);
                    }
                }
                Change::Network {
                    nwid,
                    settings: None,
                } => {
                    let Ok(members) = ctl.members(*nwid) else {
                        continue;
                    };
                    ctl.install_network(*nwid, None);
                    push.remove(nwid);
                    let bytes = Message::ConfigError {
                        nwid: *nwid,
                        code: ConfigDenied::NotFound.code(),
                    }
                    .to_vec();
                    for (m, _) in members.iter().filter(|(_, m)| m.last_request.is_some()) {
                        if *m != me {
                            self.send_message(now, *m, bytes.clone());
                        }
                    }
                    if self.networks.contains_key(nwid) {
                        self.request_config(now, *nwid);
                    }
                }
                Change::Member {
                    nwid,
                    member,
                    record,
                    ..
                } => {
                    let Ok(old) = ctl.member(*nwid, *member).map(|m| m.cloned()) else {
                        continue;
                    };
                    let record = &match (ctl.pending_member(*nwid, *member), &old, record) {
                        // An administrator's change here goes to the store next: it wins.
                        (Some(Writer::Administrator), _, _) => continue,
                        // The controller's own bookkeeping waits: the administrator's
                        // fields from the store, the address and request time from here
                        // (as the store merges them).
                        (Some(Writer::Controller), Some(mine), Some(theirs)) => Some(Member {
                            authorized: theirs.authorized,
                            name: theirs.name.clone(),
                            ipv4: mine.ipv4.or(theirs.ipv4),
                            last_request: mine.last_request.max(theirs.last_request),
                        }),
                        _ => record.clone(),
                    };
                    if old == *record {
                        continue;
                    }
                    let was = old.as_ref().is_some_and(|m| m.authorized);
                    let is = record.as_ref().is_some_and(|m| m.authorized);
                    let asked = record.as_ref().is_some_and(|m| m.last_request.is_some());
                    let directory = |m: &Option<Member>| {
                        m.as_ref()
                            .filter(|m| m.authorized)
                            .map(|m| (m.ipv4, m.name.clone()))
                    };
                    if directory(&old) != directory(record) {
                        push.insert(*nwid);
                    }
                    // The revocation is made while the member is still held as authorized
                    // (its threshold covers every configuration issued to it).
                    let revocation = (was && !is).then(|| ctl.revocation(now, *nwid, *member));
                    let active = ctl.active_members(*nwid);
                    ctl.install_member(*nwid, *member, record.clone());
                    if let Some(revocation) = revocation {
                        self.send_revocation(now, &active, revocation);
                    } else if is && !was && asked {
                        if *member == me {
                            self.request_config(now, *nwid);
                        } else if let Some(Ok(config)) = self
                            .controller
                            .as_mut()
                            .map(|c| c.issue(now, *nwid, *member))
                        {
                            let msg = Message::Config {
                                config: Box::new(config),
                            };
                            self.send_message(now, *member, msg.to_vec());
                        }
                    }
                }
            }
        }
        for nwid in push {
            self.push_configs(now, nwid, None);
        }
    }

    /// Deletes a network of the hosted controller and tells every member that has asked
    /// for its configuration at once ("network not found"), so that they drop it now
    /// rather than at their next refresh.
    pub fn delete_network(&mut self, now: Instant, nwid: NetworkId) -> Result<(), ControllerError> {
        let Some(ctl) = self.controller.as_mut() else {
            return Err(ControllerError::UnknownNetwork { nwid });
        };
        let asked: Vec<Address> = ctl
            .members(nwid)?
            .into_iter()
            .filter(|(_, m)| m.last_request.is_some())
            .map(|(a, _)| a)
            .collect();
        ctl.delete_network(nwid)?;
        let me = self.address();
        let bytes = Message::ConfigError {
            nwid,
            code: ConfigDenied::NotFound.code(),
        }
        .to_vec();
        for m in asked.into_iter().filter(|m| *m != me) {
            self.send_message(now, m, bytes.clone());
        }
        if self.networks.contains_key(&nwid) {
            self.request_config(now, nwid);
        }
        Ok(())
    }

    /// Deletes a member's record from a network of the hosted controller, deauthorizing
    /// it first ([`Node::set_member_authorized`]: its certificate is revoked). Returns
    /// the record as it was.
    pub fn delete_member(
        &mut self,
        now: Instant,
        nwid: NetworkId,
        member: Address,
    ) -> Result<Member, ControllerError> {
        let Some(ctl) = self.controller.as_ref() else {
            return Err(ControllerError::UnknownNetwork { nwid });
        };
        let Some((_, record)) = ctl.members(nwid)?.into_iter().find(|(a, _)| *a == member) else {
            return Err(ControllerError::UnknownMember { nwid, member });
        };
        self.set_member_authorized(now, nwid, member, false)?;
        if let Some(ctl) = self.controller.as_mut() {
            ctl.delete_member(nwid, member)?;
        }
        if record.name.is_some() {
            // Its name leaves the others' member directories.
            self.push_configs(now, nwid, Some(member));
        }
        Ok(record)
    }

    /// As the controller of `nwid`, sends a fresh configuration to every member that is
    /// online (authorized and asked before), except `except`: their member directory
    /// changed (a member was named or came online). This node, if a member, asks itself.
    pub fn push_configs(&mut self, now: Instant, nwid: NetworkId, except: Option<Address>) {
        let me = self.address();
        let Some(ctl) = self.controller.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        for m in ctl.active_members(nwid) {
            if Some(m) == except || m == me {
                continue;
            }
            if let Ok(config) = ctl.issue(now, nwid, m) {
                out.push((
                    m,
                    Message::Config {
                        config: Box::new(config),
                    }
                    .to_vec(),
                ));
            }
        }
        for (m, bytes) in out {
            self.send_message(now, m, bytes);
        }
        if except != Some(me) && self.networks.contains_key(&nwid) {
            self.request_config(now, nwid);
        }
    }

    /// Asks the controller of `nwid` for this node's configuration (or answers locally
    /// when this node is that controller).
    fn request_config(&mut self, now: Instant, nwid: NetworkId) {
        let Some(ctl) = nwid.controller() else {
            return;
        };
        let t = self.timing.clone();
        let Some(net) = self.networks.get_mut(&nwid) else {
            return;
        };
        net.request_at = Some(
            now + if net.config.is_some() {
                t.config_refresh
            } else {
                t.config_retry
            },
        );
        let me = self.address();
        if ctl == me {
            let answer = match self.controller.as_mut() {
                Some(c) => c.request(now, nwid, me),
                None => Err(ConfigDenied::NotFound),
            };
            let msg = match answer {
                Ok(config) => Message::Config {
                    config: Box::new(config),
                },
                Err(d) => Message::ConfigError {
                    nwid,
                    code: d.code(),
                },
            };
            self.on_message(now, None, me, msg);
        } else {
            self.send_message(now, ctl, Message::ConfigRequest { nwid }.to_vec());
        }
    }

    /// The identity of a network's controller, if known and verified.
    fn controller_identity(&self, nwid: NetworkId) -> Option<Identity> {
        let ctl = nwid.controller()?;
        if ctl == self.address() {
            return Some(self.identity.public().clone());
        }
        self.peers.get(&ctl)?.identity.clone()
    }

    /// Leaves a virtual network.
    pub fn leave(&mut self, now: Instant, nwid: NetworkId) {
        if self.networks.remove(&nwid).is_some() {
            let unlike = Message::Unlike { nwid }.to_vec();
            for root in self.root_addresses() {
                self.send_message(now, root, unlike.clone());
            }
        }
    }

    /// Sends an Ethernet frame on a joined network: unicast frames go to the member whose
    /// MAC is the destination, broadcast and multicast frames to every known member.
    /// Frames for a member without a session wait (bounded) until the WHOIS and handshake
    /// are done; multicast frames sent before a root listed the members wait for the list.
    pub fn send_frame(
        &mut self,
        now: Instant,
        nwid: NetworkId,
        frame: &[u8],
    ) -> Result<(), SendError> {
        let net = self
            .networks
            .get(&nwid)
            .ok_or(SendError::NotJoined { nwid })?;
        if !(MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&frame.len()) {
            return Err(SendError::FrameSize { len: frame.len() });
        }
        let (Some(dst), Some(src)) = (Mac::frame_dst(frame), Mac::frame_src(frame)) else {
            return Err(SendError::FrameSize { len: frame.len() });
        };
        if src != net.mac {
            return Err(SendError::ForeignSource {
                nwid,
                src,
                mine: net.mac,
            });
        }
        if !nwid.is_adhoc() && net.config.is_none() {
            return Err(SendError::NotConfigured { nwid });
        }
        if !dst.is_multicast() {
            let to = dst
                .to_member(nwid)
                .filter(|a| *a != self.address())
                .ok_or(SendError::UnknownDestination { nwid, dst })?;
            if self.show_credentials(now, nwid, to) {
                // The record is written straight into the packet and sealed there.
                let record = Message::Frame { nwid, frame };
                self.send_record(now, to, None, FRAME_RECORD_PREFIX + frame.len(), |out| {
                    record.emit(out)
                });
            }
            return Ok(());
        }
        let msg = Message::Frame { nwid, frame }.to_vec();
        if !net.members_known {
            // Nobody to send it to yet: hold it until a root lists the members.
            if let Some(net) = self.networks.get_mut(&nwid) {
                if net.early_multicast.len() >= MAX_EARLY_MULTICAST {
                    net.early_multicast.pop_front();
                }
                net.early_multicast.push_back(msg);
            }
            return Ok(());
        }
        self.send_to_members(now, nwid, msg);
        Ok(())
    }

    /// Sends a FRAME record of a multicast frame to every other known member of `nwid`.
    fn send_to_members(&mut self, now: Instant, nwid: NetworkId, msg: Vec<u8>) {
        let me = self.address();
        let Some(net) = self.networks.get(&nwid) else {
            return;
        };
        let targets: Vec<Address> = net.members.iter().copied().filter(|m| *m != me).collect();
        for m in targets {
            if self.show_credentials(now, nwid, m) {
                self.send_message(now, m, msg.clone());
            }
        }
    }

    /// On private networks: sends this node's certificate to `peer` when it has not seen
    /// the current one recently, or not on the current session. Returns false if frames
    /// must not go to `peer` (revoked, or its known certificate no longer agrees with ours).
    ///
    /// "Seen" is per session: a new session may be a new instance of the peer (a process
    /// restarted with the same identity), which knows nothing of what the old one was
    /// shown and drops our frames as coming from a non-member until it sees our
    /// certificate. Showing it only every `config_refresh / 2` stalled every connection
    /// to us from a restarted member for up to 15 s (issue 18). A rekey shows it again
    /// too, and the first session shows it twice (once queued before the session, once
    /// on it): one small record per session, fewer than the periodic refresh sends.
    fn show_credentials(&mut self, now: Instant, nwid: NetworkId, peer: Address) -> bool {
        let refresh = self.timing.config_refresh;
        let generation = self.peers.get(&peer).map_or(0, |p| p.generation);
        let Some(net) = self.networks.get_mut(&nwid) else {
            return false;
        };
        let Some(cfg) = &net.config else {
            return true; // ad-hoc
        };
        if !cfg.private {
            return true;
        }
        let known = net.peer_certs.contains_key(&peer) || net.revoked.contains_key(&peer);
        if known && !net.admits(peer) {
            return false;
        }
        let cert = cfg.certificate.clone();
        let stale = net.creds_sent.get(&peer).is_none_or(|(at, ts, seen_on)| {
            *ts != cert.timestamp || *seen_on != generation || now >= *at + refresh / 2
        });
        if stale {
            net.creds_sent
                .insert(peer, (now, cert.timestamp, generation));
            self.send_message(
                now,
                peer,
                Message::Credentials { certificate: cert }.to_vec(),
            );
        }
        true
    }

    /// The earliest time at which [`Node::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let t = &self.timing;
        let mut next: Option<Instant> = None;
        let mut consider = |i: Option<Instant>| {
            if let Some(i) = i {
                next = Some(next.map_or(i, |n: Instant| n.min(i)));
            }
        };
        for p in self.peers.values() {
            consider(p.previous.as_ref().map(|s| s.1));
            consider(p.next.as_ref().map(|s| s.1));
            if self.wants_session(p) && p.current.is_none() {
                if p.identity.is_some() {
                    consider(p.hs_next);
                } else {
                    consider(p.whois_at);
                }
            }
            if p.probes_left > 0 {
                consider(p.probe_at);
            }
            if let Some(s) = &p.current {
                consider(Some(s.created + t.rekey_after_time * 3));
                if self.role == Role::Node {
                    if p.pending.is_none() {
                        consider(Some(self.rekey_deadline(s)));
                        consider(self.silence_deadline(p));
                    } else {
                        consider(p.hs_next);
                    }
                }
                if self.role == Role::Node && p.up {
                    consider(p.last_tx.map(|x| x + t.keepalive));
                }
            }
            if p.up {
                consider(p.last_rx.map(|x| x + t.peer_timeout));
            }
            for path in &p.paths {
                consider(Some(path.last_rx + t.path_timeout));
            }
        }
        consider(self.reassembly.next_expiry());
        for n in self.networks.values() {
            consider(Some(n.like_at));
            consider(n.request_at);
        }
        next
    }

    /// Runs the timers that are due: retransmissions, probes, keepalives, rekeys, expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        let t = self.timing.clone();
        self.reassembly.expire(now);
        self.rendezvous
            .retain(|_, at| now < *at + t.rendezvous_interval);
        let mut likes = Vec::new();
        for (nwid, n) in self.networks.iter_mut() {
            if now >= n.like_at {
                n.like_at = now
                    + if n.members_known {
                        t.members_refresh
                    } else {
                        t.whois_retry
                    };
                likes.push(*nwid);
            }
        }
        let requests: Vec<NetworkId> = self
            .networks
            .iter()
            .filter(|(_, n)| n.request_at.is_some_and(|t| now >= t))
            .map(|(k, _)| *k)
            .collect();
        for nwid in requests {
            self.request_config(now, nwid);
        }
        for nwid in likes {
            for root in self.root_addresses() {
                if self.peers.get(&root).is_some_and(|p| p.current.is_some()) {
                    self.send_message(now, root, Message::Like { nwid }.to_vec());
                }
            }
        }
        let addrs: Vec<Address> = self.peers.keys().copied().collect();
        for addr in addrs {
            let mut stale = Vec::new();
            let mut down = false;
            {
                let Some(p) = self.peers.get_mut(&addr) else {
                    continue;
                };
                if p.previous.as_ref().is_some_and(|s| s.1 <= now) {
                    stale.extend(p.previous.take().map(|s| s.0.local_index));
                }
                if p.next.as_ref().is_some_and(|s| s.1 <= now) {
                    stale.extend(p.next.take().map(|s| s.0.local_index));
                }
                if p.current
                    .as_ref()
                    .is_some_and(|s| now >= s.created + t.rekey_after_time * 3)
                {
                    stale.extend(p.current.take().map(|s| s.local_index));
                    p.generation += 1;
                }
                p.paths.retain(|x| now < x.last_rx + t.path_timeout);
                if p.up && p.last_rx.is_some_and(|x| now >= x + t.peer_timeout) {
                    down = true;
                }
            }
            for i in stale {
                self.indices.remove(&i);
            }
            if down {
                self.peer_down(addr);
                continue;
            }
            self.service_peer(now, addr);
        }
    }

    fn rekey_deadline(&self, s: &Session) -> Instant {
        if s.initiator {
            s.created + self.timing.rekey_after_time
        } else {
            // The responder rekeys only if the initiator did not.
            s.created + self.timing.rekey_after_time + self.timing.keepalive
        }
    }

    /// When a peer this node keeps sending to, but that has sent nothing authentic since,
    /// counts as silent: one keepalive interval (in which a live peer sends at least a
    /// keepalive) and a third more. A silent peer gets a new handshake, sent both on the
    /// direct path and through the relay (see [`Node::handshake_destinations`]): if it
    /// restarted on a new endpoint, the relayed copy finds it.
    fn silence_deadline(&self, p: &Peer) -> Option<Instant> {
        if self.role != Role::Node || p.current.is_none() {
            return None;
        }
        let (rx, tx) = (p.last_rx?, p.last_tx?);
        (tx > rx).then(|| rx + self.timing.keepalive + self.timing.keepalive / 3)
    }

    fn wants_session(&self, p: &Peer) -> bool {
        self.role == Role::Node && (p.is_root() || !p.queue.is_empty())
    }

    /// Does what is due for one peer.
    fn service_peer(&mut self, now: Instant, addr: Address) {
        let t = self.timing.clone();
        let Some(p) = self.peers.get(&addr) else {
            return;
        };
        let wants = self.wants_session(p);
        let has_current = p.current.is_some();
        let rekey_due = p.current.as_ref().is_some_and(|s| {
            now >= self.rekey_deadline(s) || s.packets_sent() >= t.rekey_after_packets
        }) || self.silence_deadline(p).is_some_and(|d| now >= d);
        let retry_due = p.hs_next.is_none_or(|x| now >= x);
        let gave_up = !p.is_root() && p.hs_attempts >= MAX_HANDSHAKE_ATTEMPTS;
        if self.role == Role::Node && ((!has_current && wants) || (has_current && rekey_due)) {
            if gave_up && retry_due {
                // The peer does not answer: drop what waited for it and start over later.
                if let Some(p) = self.peers.get_mut(&addr) {
                    p.queue.clear();
                    p.hs_attempts = 0;
                    p.hs_next = None;
                    if let Some(x) = p.pending.take() {
                        self.indices.remove(&x.hs.local_index);
                    }
                }
            } else if p.identity.is_none() {
                if p.whois_at.is_none_or(|x| now >= x) {
                    self.whois(now, addr);
                }
            } else if retry_due {
                self.initiate(now, addr);
            }
        }
        // Hole-punching probes.
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        if p.probes_left > 0 && p.probe_at.is_some_and(|x| now >= x) {
            p.probes_left -= 1;
            p.probe_at = Some(now + t.probe_interval);
            // A candidate that is a known but unconfirmed path (the peer restarted on the
            // same endpoint) is probed too.
            let live: Vec<SocketAddr> = p.confirmed_paths().map(|x| x.endpoint).collect();
            let targets: Vec<SocketAddr> = p
                .candidates
                .iter()
                .copied()
                .filter(|c| !live.contains(c))
                .collect();
            if targets.is_empty() {
                p.probes_left = 0;
            }
            let have_session = p.current.is_some();
            for ep in targets {
                if have_session {
                    let id = self.rng.next_u64();
                    if let Some(p) = self.peers.get_mut(&addr) {
                        p.ping = Some((id, now));
                    }
                    self.send_message_to(now, addr, Message::Ping { id }.to_vec(), Some(ep));
                } else {
                    self.send_hole_punch(addr, ep);
                }
            }
        }
        // Keepalives.
        let Some(p) = self.peers.get(&addr) else {
            return;
        };
        if self.role == Role::Node
            && p.up
            && p.current.is_some()
            && p.last_tx.is_none_or(|x| now >= x + t.keepalive)
        {
            if self.route(now, addr).is_some() {
                // To a root, repeat HELLO until it has answered (HELLO_OK may be lost);
                // otherwise a PING, which keeps the path open and measures latency.
                let msg = if p.is_root() && self.observed.is_none() {
                    Message::Hello
                } else {
                    let id = self.rng.next_u64();
                    if let Some(p) = self.peers.get_mut(&addr) {
                        p.ping = Some((id, now));
                    }
                    Message::Ping { id }
                };
                self.send_message(now, addr, msg.to_vec());
            }
            if let Some(p) = self.peers.get_mut(&addr) {
                p.last_tx = Some(now);
            }
        }
    }

    fn peer_down(&mut self, addr: Address) {
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        let indices = p.session_indices();
        p.current = None;
        p.previous = None;
        p.next = None;
        p.pending = None;
        p.hs_next = None;
        p.hs_attempts = 0;
        p.paths.clear();
        p.up = false;
        p.last_rx = None;
        for i in indices {
            self.indices.remove(&i);
        }
        self.push_event(Event::PeerDown { address: addr });
        if self.role == Role::Root {
            let nets: Vec<NetworkId> = self
                .memberships
                .iter()
                .filter(|(_, m)| m.contains(&addr))
                .map(|(n, _)| *n)
                .collect();
            for n in nets {
                if let Some(m) = self.memberships.get_mut(&n) {
                    m.remove(&addr);
                }
                self.push_members(n);
            }
            self.peers.remove(&addr);
        }
    }

    fn push_event(&mut self, e: Event) {
        if self.role == Role::Node {
            self.events.push_back(e);
        }
    }

    fn peer_mut(&mut self, addr: Address) -> &mut Peer {
        self.peers.entry(addr).or_insert_with(Peer::new)
    }

    fn root_addresses(&self) -> Vec<Address> {
        self.peers
            .iter()
            .filter(|(_, p)| p.is_root())
            .map(|(a, _)| *a)
            .collect()
    }

    /// The root used for WHOIS and relaying: the first one with a session.
    fn relay_root(&self) -> Option<Address> {
        self.peers
            .iter()
            .find(|(_, p)| p.is_root() && p.up && p.current.is_some())
            .map(|(a, _)| *a)
    }

    fn fresh_index(&mut self) -> u32 {
        loop {
            let i = self.rng.next_u32();
            if !self.indices.contains_key(&i) {
                return i;
            }
        }
    }

    /// Where packets for `addr` go: a direct path, a root's endpoint, or a relaying root.
    fn route(&self, now: Instant, addr: Address) -> Option<SocketAddr> {
        let p = self.peers.get(&addr)?;
        if let Some(ep) = p.best_path(now, self.timing.path_timeout) {
            return Some(ep);
        }
        if p.is_root() {
            return p.root_endpoints.first().copied();
        }
        if self.role == Role::Root {
            return None;
        }
        self.relay_endpoint(now)
    }

    /// Where packets to be relayed go: the relaying root's endpoint.
    fn relay_endpoint(&self, now: Instant) -> Option<SocketAddr> {
        let root = self.relay_root()?;
        let rp = self.peers.get(&root)?;
        rp.best_path(now, self.timing.path_timeout)
            .or_else(|| rp.root_endpoints.first().copied())
    }

    fn whois(&mut self, now: Instant, addr: Address) {
        let attempts = self.peers.get(&addr).map_or(0, |p| p.whois_attempts);
        if attempts >= self.timing.whois_attempts {
            // Nobody knows this address: give up on what was queued for it.
            if let Some(p) = self.peers.get_mut(&addr) {
                p.queue.clear();
                p.whois_at = None;
                p.whois_attempts = 0;
            }
            return;
        }
        let retry = now + self.timing.whois_retry;
        let root = self.relay_root();
        if let Some(p) = self.peers.get_mut(&addr) {
            p.whois_at = Some(retry);
            // Without a root session nothing is asked: that is no attempt (a root coming
            // up asks at once, see `Node::authenticated`).
            if root.is_some() {
                p.whois_attempts += 1;
            }
        }
        if let Some(root) = root {
            self.send_message(now, root, Message::Whois { address: addr }.to_vec());
        }
    }

    /// A root came up: ask it at once about every address waiting for a WHOIS that could
    /// not be sent.
    fn whois_waiting(&mut self, now: Instant) {
        let waiting: Vec<Address> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.identity.is_none()
                    && p.whois_attempts == 0
                    && p.whois_at.is_some()
                    && !p.queue.is_empty()
            })
            .map(|(a, _)| *a)
            .collect();
        for addr in waiting {
            self.whois(now, addr);
        }
    }

    fn initiate(&mut self, now: Instant, addr: Address) {
        let index = self.fresh_index();
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let retry = self.timing.handshake_retry;
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        let Some(remote) = p.identity.clone() else {
            return;
        };
        let (hs, msg1) = match session::initiate(&self.identity, &remote, seed, index) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(peer = %addr, error = %e, "cannot start handshake");
                return;
            }
        };
        let mut pkt = Vec::with_capacity(HEADER_LEN + 4 + msg1.len());
        header::Repr {
            packet_type: PacketType::HandshakeInit,
            hops: 0,
            flags: if self.aes_transport { FLAG_AES_GCM } else { 0 },
            dst: addr,
            src: self.identity.address(),
        }
        .emit_vec(&mut pkt);
        InitRepr {
            sender_index: index,
            noise: &msg1,
        }
        .emit(&mut pkt);
        let old = p
            .pending
            .replace(Pending {
                hs,
                packet: pkt.clone(),
                repeated_at: None,
                cookie_resent_at: None,
            })
            .map(|x| x.hs.local_index);
        p.hs_attempts = p.hs_attempts.saturating_add(1);
        p.hs_next = Some(now + retry * (1u32 << p.hs_attempts.min(4).saturating_sub(1)));
        if let Some(i) = old {
            self.indices.remove(&i);
        }
        self.indices.insert(index, addr);
        for dst in self.handshake_destinations(now, addr) {
            self.send_init(now, addr, dst, &pkt);
        }
    }

    /// Sends the HANDSHAKE_INIT datagram `pkt` for `addr` to `dst`, as a
    /// HANDSHAKE_INIT_COOKIE when a cookie from `dst` is fresh.
    fn send_init(&mut self, now: Instant, addr: Address, dst: SocketAddr, pkt: &[u8]) {
        let cookie = self.peers.get(&addr).and_then(|p| {
            p.cookies
                .iter()
                .find(|(ep, _, at)| *ep == dst && now < *at + COOKIE_TTL)
                .map(|x| x.1)
        });
        let bytes = match cookie {
            Some(cookie) => match with_cookie(pkt, cookie) {
                Some(b) => b,
                None => return,
            },
            None => pkt.to_vec(),
        };
        self.send_packet(dst, bytes);
    }

    /// Where a HANDSHAKE_INIT for `addr` goes: a root's confirmed path or all its
    /// endpoints; any other peer's route (a confirmed path, or the relay).
    fn handshake_destinations(&self, now: Instant, addr: Address) -> Vec<SocketAddr> {
        let Some(p) = self.peers.get(&addr) else {
            return Vec::new();
        };
        let silent = self.silence_deadline(p).is_some_and(|d| now >= d);
        let mut dsts: Vec<SocketAddr> = if p.is_root() {
            match p.best_path(now, self.timing.path_timeout) {
                Some(ep) => vec![ep],
                None => p.root_endpoints.clone(),
            }
        } else {
            self.route(now, addr).into_iter().collect()
        };
        if silent {
            // The direct path may lead to where the peer no longer is.
            let more = if p.is_root() {
                p.root_endpoints.clone()
            } else {
                self.relay_endpoint(now).into_iter().collect()
            };
            for ep in more {
                if !dsts.contains(&ep) {
                    dsts.push(ep);
                }
            }
        }
        dsts
    }

    fn header(&self, packet_type: PacketType, dst: Address) -> header::Repr {
        header::Repr {
            packet_type,
            hops: 0,
            flags: 0,
            dst,
            src: self.address(),
        }
    }

    fn send_hole_punch(&mut self, addr: Address, ep: SocketAddr) {
        let mut pkt = Vec::with_capacity(HEADER_LEN);
        self.header(PacketType::HolePunch, addr).emit_vec(&mut pkt);
        self.transmits.push_back(Transmit {
            dst: ep,
            bytes: pkt,
        });
    }

    /// Sends a plaintext record to a peer over its current session, or queues it and sets
    /// up a session.
    fn send_message(&mut self, now: Instant, addr: Address, msg: Vec<u8>) {
        self.send_message_to(now, addr, msg, None);
    }

    fn send_message_to(
        &mut self,
        now: Instant,
        addr: Address,
        msg: Vec<u8>,
        via: Option<SocketAddr>,
    ) {
        self.send_record(now, addr, via, msg.len(), |out| out.extend_from_slice(&msg));
    }

    /// Sends the record that `write` appends (`len` bytes) to `addr` on the current
    /// session, or queues it until there is one. The packet is built in one buffer:
    /// header, data prefix, then the record, sealed in place.
    fn send_record(
        &mut self,
        now: Instant,
        addr: Address,
        via: Option<SocketAddr>,
        len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        if addr == self.address() {
            return;
        }
        let dst = via.or_else(|| self.route(now, addr));
        let hdr = self.header(PacketType::Data, addr);
        let rekey_after = self.timing.rekey_after_packets;
        let mut pkt = self.buffer(HEADER_LEN + DATA_PREFIX_LEN + len + TAG_LEN);
        let p = self.peer_mut(addr);
        let (Some(s), Some(dst)) = (p.current.as_mut(), dst) else {
            write(&mut pkt);
            p.enqueue(pkt);
            self.service_peer(now, addr);
            return;
        };
        let counter = match s.next_counter() {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(peer = %addr, error = %e, "seal failed");
                return;
            }
        };
        hdr.emit_vec(&mut pkt);
        DataRepr {
            receiver_index: s.remote_index,
            counter,
            ciphertext: &[],
        }
        .emit(&mut pkt);
        let start = pkt.len();
        write(&mut pkt);
        if let Err(e) = s.seal_in_place(&mut pkt, start) {
            tracing::debug!(peer = %addr, error = %e, "seal failed");
            return;
        }
        let rekey = s.packets_sent() >= rekey_after;
        p.last_tx = Some(now);
        self.send_packet(dst, pkt);
        if rekey && self.peers.get(&addr).is_some_and(|p| p.pending.is_none()) {
            self.initiate(now, addr);
        }
    }

    fn flush_queue(&mut self, now: Instant, addr: Address) {
        let queued: Vec<Vec<u8>> = match self.peers.get_mut(&addr) {
            Some(p) if p.current.is_some() => p.queue.drain(..).collect(),
            _ => return,
        };
        for m in queued {
            self.send_message(now, addr, m);
        }
    }

    /// Queues a whole packet, cut into fragments if it exceeds the UDP MTU.
    fn send_packet(&mut self, dst: SocketAddr, pkt: Vec<u8>) {
        if pkt.len() <= self.udp_mtu {
            self.transmits.push_back(Transmit { dst, bytes: pkt });
            return;
        }
        let chunk_len = self.udp_mtu - HEADER_LEN - FRAGMENT_PREFIX_LEN;
        let count = pkt.len().div_ceil(chunk_len);
        if count > usize::from(MAX_FRAGMENTS) {
            tracing::debug!(len = pkt.len(), "packet too large to fragment");
            return;
        }
        let Ok(hdr) = header::Repr::parse(&header::Packet::new_unchecked(&pkt[..])) else {
            return;
        };
        let packet_id = self.rng.next_u32();
        for (index, chunk) in pkt.chunks(chunk_len).enumerate() {
            let mut f = self.buffer(HEADER_LEN + FRAGMENT_PREFIX_LEN + chunk.len());
            header::Repr {
                packet_type: PacketType::Fragment,
                flags: 0,
                ..hdr
            }
            .emit_vec(&mut f);
            FragmentRepr {
                packet_id,
                index: index as u8,
                count: count as u8,
                chunk,
            }
            .emit(&mut f);
            let queue = if index + 1 < count {
                &mut self.leading
            } else {
                &mut self.transmits
            };
            queue.push_back(Transmit { dst, bytes: f });
        }
        self.recycle(pkt);
    }

    /// Processes one UDP datagram from `from`. Malformed or unauthentic input is dropped.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.handle_packet(now, from, &mut bytes.to_vec(), true);
    }

    /// [`Node::handle_datagram`] on a buffer the node may decrypt in place (its contents
    /// are unspecified afterwards): what the driver calls, without a copy.
    pub fn handle_datagram_in_place(&mut self, now: Instant, from: SocketAddr, bytes: &mut [u8]) {
        self.handle_packet(now, from, bytes, true);
    }

    fn handle_packet(&mut self, now: Instant, from: SocketAddr, bytes: &mut [u8], outer: bool) {
        let Ok(pkt) = header::Packet::new_checked(&*bytes) else {
            return;
        };
        let Ok(hdr) = header::Repr::parse(&pkt) else {
            return;
        };
        if hdr.src == self.address() {
            return;
        }
        if hdr.dst != self.address() {
            if self.role == Role::Root && outer {
                self.relay_packet(now, from, hdr, bytes);
            }
            return;
        }
        // Mutable, so that a transport packet is opened in place.
        let body = &mut bytes[HEADER_LEN..];
        match hdr.packet_type {
            PacketType::Fragment if outer => self.on_fragment(now, from, hdr, body),
            PacketType::Fragment | PacketType::HolePunch => {}
            PacketType::HandshakeInit => self.on_init(now, from, hdr, body, None),
            PacketType::HandshakeInitCookie => {
                let Ok(cp) = CookieInitPacket::new_checked(&*body) else {
                    return;
                };
                let cookie = cp.cookie();
                self.on_init(now, from, hdr, cp.init_body(), Some(cookie));
            }
            PacketType::CookieReply => self.on_cookie_reply(now, from, hdr, body),
            PacketType::HandshakeResponse => self.on_response(now, from, hdr, body),
            PacketType::Data => self.on_data(now, from, hdr, body),
        }
    }

    fn on_fragment(&mut self, now: Instant, from: SocketAddr, hdr: header::Repr, body: &[u8]) {
        let Ok(fp) = FragmentPacket::new_checked(body) else {
            return;
        };
        let Ok(f) = FragmentRepr::parse(&fp) else {
            return;
        };
        let expires = now + self.timing.reassembly_timeout;
        let Some(mut whole) = self.reassembly.insert(hdr.src, &f, expires) else {
            return;
        };
        // The reassembled packet must come from the same source as its fragments.
        if header::Packet::new_checked(&whole[..])
            .ok()
            .and_then(|p| header::Repr::parse(&p).ok())
            .is_some_and(|h| h.src == hdr.src && h.dst == hdr.dst)
        {
            self.handle_packet(now, from, &mut whole, false);
        }
    }

    /// A HANDSHAKE_INIT, or the initiation inside a HANDSHAKE_INIT_COOKIE with its
    /// `cookie`.
    fn on_init(
        &mut self,
        now: Instant,
        from: SocketAddr,
        hdr: header::Repr,
        body: &[u8],
        cookie: Option<[u8; COOKIE_LEN]>,
    ) {
        let Ok(ip) = InitPacket::new_checked(body) else {
            return;
        };
        let Ok(init) = InitRepr::parse(&ip) else {
            return;
        };
        let mut ephemeral = [0u8; 32];
        ephemeral.copy_from_slice(&init.noise[..32]);
        if self
            .peers
            .get(&hdr.src)
            .is_some_and(|p| p.last_init == Some(ephemeral))
        {
            return; // a duplicate (or replay) of the last initiation
        }
        // Nothing above cost more than a lookup; the Noise read below costs two X25519
        // operations, and an unknown identity an Argon2id run: admission first.
        if self.admission.needs_secret(now) {
            let mut secret = [0u8; 32];
            self.rng.fill_bytes(&mut secret);
            self.admission.rotate(secret, now);
        }
        let relayed_for = (hdr.hops > 0 && self.is_root_endpoint(from)).then_some(hdr.src);
        let source = Source::new(from, relayed_for);
        match self
            .admission
            .check(now, from, source, hdr.src, cookie.as_ref())
        {
            Verdict::Admit => {}
            Verdict::Cookie(cookie) => {
                let mut pkt = Vec::with_capacity(HEADER_LEN + 4 + COOKIE_LEN);
                self.header(PacketType::CookieReply, hdr.src)
                    .emit_vec(&mut pkt);
                CookieReplyRepr {
                    receiver_index: init.sender_index,
                    cookie,
                }
                .emit(&mut pkt);
                self.send_packet(from, pkt);
                return;
            }
            Verdict::Drop => {
                tracing::debug!(peer = %hdr.src, %from, "initiation over its source's budget");
                return;
            }
        }
        let index = self.fresh_index();
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let r = match session::respond(
            &self.identity,
            hdr.src,
            init.noise,
            seed,
            index,
            init.sender_index,
            (hdr.flags & FLAG_AES_GCM != 0, self.aes_transport),
            now,
        ) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(peer = %hdr.src, error = %e, "handshake init rejected");
                return;
            }
        };
        let known = self
            .peers
            .get(&hdr.src)
            .and_then(|p| p.identity.as_ref())
            .is_some_and(|i| *i == r.identity);
        if known
            && self.address() < hdr.src
            && self
                .peers
                .get(&hdr.src)
                .is_some_and(|p| p.pending.is_some())
        {
            // Both initiated: ours wins, and the peer abandons its own initiation when ours
            // arrives. Ours may have been lost, or sent where the peer no longer is (it
            // restarted on a new endpoint): repeat it, towards where the peer's
            // initiation came from when that was through one of our roots.
            self.repeat_initiation(now, from, hdr);
            return;
        }
        if !known {
            // Verifying a new identity costs an Argon2id run: bound how many per second.
            if now >= self.verify_window.0 + Duration::from_secs(1) {
                self.verify_window = (now, 0);
            }
            if self.verify_window.1 >= MAX_VERIFY_PER_SECOND {
                tracing::debug!(peer = %hdr.src, "identity verification budget exhausted");
                return;
            }
            self.verify_window.1 += 1;
            self.admission.count_verification();
            if let Err(e) = r.identity.verify() {
                tracing::debug!(peer = %hdr.src, error = %e, "identity rejected");
                return;
            }
        }
        let previous_keep = self.timing.previous_keep;
        let p = self.peer_mut(hdr.src);
        p.identity = Some(r.identity);
        p.last_init = Some(ephemeral);
        p.handshakes += 1;
        let mut stale = Vec::new();
        stale.extend(p.pending.take().map(|x| x.hs.local_index));
        p.hs_attempts = 0;
        p.hs_next = None;
        let fresh = p.current.is_none();
        if fresh {
            p.set_current(r.session);
        } else {
            stale.extend(
                p.next
                    .replace((r.session, now + previous_keep))
                    .map(|s| s.0.local_index),
            );
        }
        for i in stale {
            self.indices.remove(&i);
        }
        if fresh {
            self.session_changed(hdr.src);
        }
        self.indices.insert(index, hdr.src);
        let mut pkt = Vec::with_capacity(HEADER_LEN + 8 + r.msg2.len());
        self.header(PacketType::HandshakeResponse, hdr.src)
            .emit_vec(&mut pkt);
        ResponseRepr {
            sender_index: index,
            receiver_index: init.sender_index,
            noise: &r.msg2,
        }
        .emit(&mut pkt);
        self.send_packet(from, pkt);
        self.flush_queue(now, hdr.src);
    }

    /// A responder under load asks for its cookie to be echoed: remember the cookie for
    /// where the reply came from and send the pending initiation again at once (at most
    /// four times per [`Timing::handshake_retry`], so forged replies cannot make this node
    /// a reflector), instead of waiting for the retransmission timer.
    fn on_cookie_reply(&mut self, now: Instant, from: SocketAddr, hdr: header::Repr, body: &[u8]) {
        let Ok(cp) = CookieReplyPacket::new_checked(body) else {
            return;
        };
        let Ok(reply) = CookieReplyRepr::parse(&cp) else {
            return;
        };
        let min_gap = self.timing.handshake_retry / 4;
        let Some(p) = self.peers.get_mut(&hdr.src) else {
            return;
        };
        // Only an answer to the initiation in flight (its random index) counts.
        let Some(pending) = p
            .pending
            .as_mut()
            .filter(|x| x.hs.local_index == reply.receiver_index)
        else {
            return;
        };
        let resend = pending.cookie_resent_at.is_none_or(|t| now >= t + min_gap);
        if resend {
            pending.cookie_resent_at = Some(now);
        }
        let pkt = pending.packet.clone();
        p.cookies.retain(|(ep, _, _)| *ep != from);
        p.cookies.push((from, reply.cookie, now));
        if p.cookies.len() > MAX_COOKIES {
            p.cookies.remove(0);
        }
        if resend {
            self.send_init(now, hdr.src, from, &pkt);
        }
    }

    /// Whether `from` is an endpoint of one of this node's roots.
    fn is_root_endpoint(&self, from: SocketAddr) -> bool {
        self.role == Role::Node
            && self.peers.values().any(|p| {
                p.is_root()
                    && (p.root_endpoints.contains(&from)
                        || p.paths.iter().any(|x| x.endpoint == from))
            })
    }

    /// See [`Node::on_init`]: the peer's (authentic, perhaps replayed) initiation crossed
    /// ours. At most four repetitions per [`Timing::handshake_retry`].
    fn repeat_initiation(&mut self, now: Instant, from: SocketAddr, hdr: header::Repr) {
        let min_gap = self.timing.handshake_retry / 4;
        let via_root = hdr.hops > 0 && self.is_root_endpoint(from);
        let dsts = if via_root {
            vec![from]
        } else {
            self.handshake_destinations(now, hdr.src)
        };
        let Some(pending) = self
            .peers
            .get_mut(&hdr.src)
            .and_then(|p| p.pending.as_mut())
        else {
            return;
        };
        if pending.repeated_at.is_some_and(|t| now < t + min_gap) {
            return;
        }
        pending.repeated_at = Some(now);
        let pkt = pending.packet.clone();
        for dst in dsts {
            self.send_init(now, hdr.src, dst, &pkt);
        }
    }

    fn on_response(&mut self, now: Instant, from: SocketAddr, hdr: header::Repr, body: &[u8]) {
        let Ok(rp) = ResponsePacket::new_checked(body) else {
            return;
        };
        let Ok(resp) = ResponseRepr::parse(&rp) else {
            return;
        };
        let previous_keep = self.timing.previous_keep;
        // A handshake started because the peer fell silent: if it is a root, it may have
        // restarted and forgotten this node's registration and networks.
        let was_silent = self
            .peers
            .get(&hdr.src)
            .and_then(|p| self.silence_deadline(p))
            .is_some_and(|d| now >= d);
        let Some(p) = self.peers.get_mut(&hdr.src) else {
            return;
        };
        if p.pending.as_ref().map(|x| x.hs.local_index) != Some(resp.receiver_index) {
            return;
        }
        let Some(pending) = p.pending.take() else {
            return;
        };
        let offered_aes = self.aes_transport; // as `initiate` flagged it
        let session = match pending
            .hs
            .finish(resp.sender_index, resp.noise, offered_aes, now)
        {
            Ok(s) => s,
            Err(e) => {
                // The handshake state is spent; the retry timer starts a new one.
                tracing::debug!(peer = %hdr.src, error = %e, "handshake response rejected");
                self.indices.remove(&resp.receiver_index);
                return;
            }
        };
        p.hs_attempts = 0;
        p.hs_next = None;
        p.handshakes += 1;
        let mut stale = Vec::new();
        if let Some(old) = p.set_current(session) {
            stale.extend(
                p.previous
                    .replace((old, now + previous_keep))
                    .map(|s| s.0.local_index),
            );
        }
        for i in stale {
            self.indices.remove(&i);
        }
        self.session_changed(hdr.src);
        self.authenticated(now, from, hdr, true);
        // Confirm the session to the responder right away.
        let queued = self
            .peers
            .get(&hdr.src)
            .is_some_and(|p| !p.queue.is_empty());
        if queued {
            self.flush_queue(now, hdr.src);
        } else {
            self.send_message(now, hdr.src, Message::Keepalive.to_vec());
        }
        if was_silent && self.sent_by_root(hdr.src) {
            self.send_message(now, hdr.src, Message::Hello.to_vec());
            let nets: Vec<NetworkId> = self.networks.keys().copied().collect();
            for nwid in nets {
                self.send_message(now, hdr.src, Message::Like { nwid }.to_vec());
            }
        }
    }

    /// A peer's current session was replaced (first session, rekey, or a restarted peer).
    /// A root introduces the peer to the nodes it relays for again at the next relayed
    /// packet, without waiting for [`Timing::rendezvous_interval`]: after a restart or
    /// a NAT rebinding the endpoint it told them before may be dead.
    fn session_changed(&mut self, addr: Address) {
        if self.role == Role::Root {
            self.rendezvous.retain(|(x, y), _| *x != addr && *y != addr);
        }
    }

    /// Bookkeeping for any authenticated packet: liveness, path learning, peer up.
    /// `on_current`: authenticated under the current session (not the previous one).
    fn authenticated(
        &mut self,
        now: Instant,
        from: SocketAddr,
        hdr: header::Repr,
        on_current: bool,
    ) {
        let probe_count = self.timing.probe_count;
        let is_root_role = self.role == Role::Root;
        let Some(p) = self.peers.get_mut(&hdr.src) else {
            return;
        };
        p.last_rx = Some(now);
        if hdr.hops == 0 {
            p.touch_path(from, now, on_current);
        }
        if !p.up && p.current.is_some() {
            p.up = true;
            let candidates = !p.candidates.is_empty();
            let is_root = p.is_root();
            if candidates && !is_root_role {
                p.probes_left = probe_count;
                p.probe_at = Some(now);
            }
            self.push_event(Event::PeerUp { address: hdr.src });
            if is_root && !is_root_role {
                self.send_message(now, hdr.src, Message::Hello.to_vec());
                let nets: Vec<NetworkId> = self.networks.keys().copied().collect();
                for nwid in nets {
                    self.send_message(now, hdr.src, Message::Like { nwid }.to_vec());
                }
                self.whois_waiting(now);
            }
        }
    }

    fn on_data(&mut self, now: Instant, from: SocketAddr, hdr: header::Repr, body: &mut [u8]) {
        let Ok(dp) = DataPacket::new_checked(&*body) else {
            return;
        };
        let Ok(DataRepr {
            receiver_index,
            counter,
            ..
        }) = DataRepr::parse(&dp)
        else {
            return;
        };
        let ciphertext = &mut body[DATA_PREFIX_LEN..];
        if self.indices.get(&receiver_index) != Some(&hdr.src) {
            return;
        }
        let previous_keep = self.timing.previous_keep;
        let Some(p) = self.peers.get_mut(&hdr.src) else {
            return;
        };
        let mut on_previous = false;
        let mut promoted = false;
        let plain = if p.current.as_ref().map(|s| s.local_index) == Some(receiver_index) {
            p.current
                .as_mut()
                .map(|s| s.open_in_place(counter, ciphertext))
        } else if p.next.as_ref().map(|s| s.0.local_index) == Some(receiver_index) {
            let r = p
                .next
                .as_mut()
                .map(|s| s.0.open_in_place(counter, ciphertext));
            if matches!(r, Some(Ok(_))) {
                // The initiator uses the new session: it is confirmed.
                if let Some((s, _)) = p.next.take() {
                    promoted = true;
                    if let Some(old) = p.set_current(s) {
                        if let Some(gone) = p.previous.replace((old, now + previous_keep)) {
                            self.indices.remove(&gone.0.local_index);
                        }
                    }
                }
            }
            r
        } else if p.previous.as_ref().map(|s| s.0.local_index) == Some(receiver_index) {
            on_previous = true;
            p.previous
                .as_mut()
                .map(|s| s.0.open_in_place(counter, ciphertext))
        } else {
            None
        };
        let Some(Ok(plain)) = plain else {
            return;
        };
        if promoted {
            self.session_changed(hdr.src);
        }
        self.authenticated(now, from, hdr, !on_previous);
        if on_previous {
            // The peer still sends on the replaced session: it may have missed our
            // confirmation. Re-confirm at most once a second.
            let p = self.peer_mut(hdr.src);
            let initiator = p.current.as_ref().is_some_and(|s| s.initiator);
            if initiator
                && p.last_confirm
                    .is_none_or(|x| now >= x + Duration::from_secs(1))
            {
                p.last_confirm = Some(now);
                self.send_message(now, hdr.src, Message::Keepalive.to_vec());
            }
        }
        let Ok(msg) = Message::parse(plain) else {
            tracing::debug!(peer = %hdr.src, "malformed record");
            return;
        };
        self.on_message(now, Some(from), hdr.src, msg);
    }

    fn sent_by_root(&self, addr: Address) -> bool {
        self.role == Role::Node && self.peers.get(&addr).is_some_and(|p| p.is_root())
    }

    fn on_message(
        &mut self,
        now: Instant,
        from: Option<SocketAddr>,
        src: Address,
        msg: Message<'_>,
    ) {
        match msg {
            Message::Keepalive => {}
            Message::Ping { id } => {
                self.send_message_to(now, src, Message::Pong { id }.to_vec(), from);
            }
            Message::Pong { id } => {
                if let Some(p) = self.peers.get_mut(&src) {
                    if let Some((pid, sent)) = p.ping {
                        if pid == id {
                            p.latency = Some(now.saturating_duration_since(sent));
                            p.ping = None;
                        }
                    }
                }
            }
            Message::Hello => {
                if let (Role::Root, Some(from)) = (self.role, from) {
                    self.send_message_to(
                        now,
                        src,
                        Message::HelloOk { observed: from }.to_vec(),
                        Some(from),
                    );
                }
            }
            Message::HelloOk { observed } => {
                if self.sent_by_root(src) {
                    self.observed = Some(observed);
                }
            }
            Message::Whois { address } => {
                if self.role == Role::Root {
                    let reply = match self.peers.get(&address).and_then(|p| p.identity.clone()) {
                        Some(identity) => Message::WhoisOk { identity }.to_vec(),
                        None => Message::WhoisNotFound { address }.to_vec(),
                    };
                    self.send_message(now, src, reply);
                }
            }
            Message::WhoisOk { identity } => {
                let addr = identity.address();
                let asked = self
                    .peers
                    .get(&addr)
                    .is_some_and(|p| p.identity.is_none() && p.whois_at.is_some());
                if self.sent_by_root(src) && asked && identity.verify().is_ok() {
                    if let Some(p) = self.peers.get_mut(&addr) {
                        p.identity = Some(identity);
                        p.whois_at = None;
                        p.whois_attempts = 0;
                    }
                    self.service_peer(now, addr);
                }
            }
            Message::WhoisNotFound { address } => {
                if self.sent_by_root(src) {
                    tracing::debug!(%address, "root does not know this address");
                }
            }
            Message::Rendezvous { address, endpoint } => {
                if !self.sent_by_root(src) || address == self.address() {
                    return;
                }
                let probe_count = self.timing.probe_count;
                let p = self.peer_mut(address);
                if p.is_root() {
                    return;
                }
                if !p.candidates.contains(&endpoint) {
                    p.candidates.push(endpoint);
                    if p.candidates.len() > MAX_CANDIDATES {
                        p.candidates.remove(0);
                    }
                }
                p.probes_left = probe_count;
                p.probe_at = Some(now);
                self.service_peer(now, address);
            }
            Message::Like { nwid } => {
                if self.role == Role::Root {
                    if self.memberships.entry(nwid).or_default().insert(src) {
                        self.push_members(nwid);
                    } else {
                        self.send_members(now, nwid, src);
                    }
                }
            }
            Message::Unlike { nwid } => {
                if self.role == Role::Root
                    && self
                        .memberships
                        .get_mut(&nwid)
                        .is_some_and(|m| m.remove(&src))
                {
                    self.push_members(nwid);
                }
            }
            Message::Members { nwid, members } => {
                if self.sent_by_root(src) {
                    let mut early = VecDeque::new();
                    if let Some(n) = self.networks.get_mut(&nwid) {
                        n.members = members.into_iter().collect();
                        if !n.members_known {
                            n.members_known = true;
                            n.like_at = now + self.timing.members_refresh;
                            early = std::mem::take(&mut n.early_multicast);
                        }
                    }
                    for msg in early {
                        self.send_to_members(now, nwid, msg);
                    }
                }
            }
            m @ (Message::ConfigRequest { .. }
            | Message::Config { .. }
            | Message::ConfigError { .. }
            | Message::Credentials { .. }
            | Message::Revoke { .. }) => self.on_controller_message(now, src, m),
            Message::Frame { nwid, frame } => {
                let Some(net) = self.networks.get(&nwid) else {
                    return;
                };
                let (Some(dst), Some(fsrc)) = (Mac::frame_dst(frame), Mac::frame_src(frame)) else {
                    return;
                };
                if fsrc != Mac::for_member(nwid, src) {
                    tracing::debug!(peer = %src, "frame with a spoofed source MAC dropped");
                    return;
                }
                if dst != net.mac && !dst.is_multicast() {
                    return;
                }
                if !nwid.is_adhoc() && !net.admits(src) {
                    tracing::debug!(peer = %src, %nwid, "frame from a non-member dropped");
                    return;
                }
                self.push_event(Event::FrameReceived {
                    nwid,
                    frame: frame.to_vec(),
                });
            }
        }
    }

    fn on_controller_message(&mut self, now: Instant, src: Address, msg: Message<'_>) {
        match msg {
            Message::ConfigRequest { nwid } => {
                if self.role != Role::Node || nwid.controller() != Some(self.address()) {
                    return;
                }
                let was_active = self
                    .controller
                    .as_ref()
                    .is_some_and(|c| c.is_active(nwid, src));
                let answer = match self.controller.as_mut() {
                    Some(c) => c.request(now, nwid, src),
                    None => Err(ConfigDenied::NotFound),
                };
                let listed = answer
                    .as_ref()
                    .is_ok_and(|c| c.directory.iter().any(|e| e.member == src));
                if listed && !was_active {
                    // A member with a pool address or a name came (back) online: the
                    // others' member directories change. (Members the directory does not
                    // list cost the others nothing.)
                    self.push_configs(now, nwid, Some(src));
                }
                let reply = match answer {
                    Ok(config) => Message::Config {
                        config: Box::new(config),
                    },
                    Err(d) => Message::ConfigError {
                        nwid,
                        code: d.code(),
                    },
                };
                self.send_message(now, src, reply.to_vec());
            }
            Message::Config { config } => {
                let nwid = config.nwid;
                if nwid.controller() != Some(src) || config.issued_to != self.address() {
                    return;
                }
                let Some(ctl) = self.controller_identity(nwid) else {
                    return;
                };
                if !verify_config(&config, &ctl) {
                    tracing::debug!(%nwid, "configuration with a bad signature dropped");
                    return;
                }
                let me = self.address();
                let refresh = self.timing.config_refresh;
                let Some(net) = self.networks.get_mut(&nwid) else {
                    return;
                };
                if net
                    .config
                    .as_ref()
                    .is_some_and(|c| c.timestamp >= config.timestamp)
                {
                    return;
                }
                if net
                    .revoked
                    .get(&me)
                    .is_some_and(|t| config.certificate.timestamp <= *t)
                {
                    return;
                }
                let view = config_view(net.mac, &config);
                let changed = net
                    .config
                    .as_ref()
                    .is_none_or(|c| config_view(net.mac, c) != view);
                net.config = Some(*config);
                net.denied = None;
                net.request_at = Some(now + refresh);
                if changed {
                    self.events.push_back(Event::NetworkConfig(view));
                }
            }
            Message::ConfigError { nwid, code } => {
                let Some(reason) = ConfigDenied::from_code(code) else {
                    return;
                };
                if nwid.controller() != Some(src) {
                    return;
                }
                let retry = self.timing.config_retry;
                let Some(net) = self.networks.get_mut(&nwid) else {
                    return;
                };
                let was = net.denied;
                net.config = None;
                net.denied = Some(reason);
                net.request_at = Some(now + retry);
                if was != Some(reason) {
                    self.events.push_back(Event::NetworkDenied { nwid, reason });
                }
            }
            Message::Credentials { certificate } => {
                let nwid = certificate.nwid;
                if certificate.member != src {
                    return;
                }
                let Some(ctl) = self.controller_identity(nwid) else {
                    return;
                };
                let Some(net) = self.networks.get_mut(&nwid) else {
                    return;
                };
                if net
                    .peer_certs
                    .get(&src)
                    .is_some_and(|c| c.timestamp >= certificate.timestamp)
                {
                    return;
                }
                if verify_certificate(&certificate, &ctl) {
                    net.peer_certs.insert(src, certificate);
                }
            }
            Message::Revoke { revocation } => {
                let nwid = revocation.nwid;
                let Some(ctl) = self.controller_identity(nwid) else {
                    return;
                };
                if !verify_revocation(&revocation, &ctl) {
                    return;
                }
                let me = self.address();
                let retry = self.timing.config_retry;
                let Some(net) = self.networks.get_mut(&nwid) else {
                    return;
                };
                let t = net.revoked.entry(revocation.member).or_insert(0);
                *t = (*t).max(revocation.threshold);
                if revocation.member == me
                    && net
                        .config
                        .as_ref()
                        .is_some_and(|c| c.certificate.timestamp <= revocation.threshold)
                {
                    net.config = None;
                    net.denied = Some(ConfigDenied::AccessDenied);
                    net.request_at = Some(now + retry);
                    self.events.push_back(Event::NetworkDenied {
                        nwid,
                        reason: ConfigDenied::AccessDenied,
                    });
                }
            }
            _ => {}
        }
    }

    /// Root: tells every member of `nwid` the current member list.
    fn push_members(&mut self, nwid: NetworkId) {
        let members: Vec<Address> = self
            .memberships
            .get(&nwid)
            .map(|m| m.iter().copied().collect())
            .unwrap_or_default();
        // The clock only matters for queued sends; members have sessions.
        let now = self.peers.values().filter_map(|p| p.last_rx).max();
        let Some(now) = now else {
            return;
        };
        for m in &members {
            self.send_members(now, nwid, *m);
        }
    }

    fn send_members(&mut self, now: Instant, nwid: NetworkId, to: Address) {
        let members: Vec<Address> = self
            .memberships
            .get(&nwid)
            .map(|m| m.iter().copied().take(MAX_MEMBERS).collect())
            .unwrap_or_default();
        self.send_message(now, to, Message::Members { nwid, members }.to_vec());
    }

    /// Root: forwards a packet addressed to another node.
    fn relay_packet(&mut self, now: Instant, from: SocketAddr, hdr: header::Repr, bytes: &[u8]) {
        if hdr.hops >= MAX_HOPS {
            return;
        }
        // Only registered senders, from the endpoint they registered from, may use the relay.
        let path_timeout = self.timing.path_timeout;
        let Some(src_ep) = self
            .peers
            .get(&hdr.src)
            .and_then(|p| p.paths.iter().find(|x| x.endpoint == from))
            .filter(|x| now < x.last_rx + path_timeout)
            .map(|x| x.endpoint)
        else {
            return;
        };
        let Some(dst_ep) = self
            .peers
            .get(&hdr.dst)
            .and_then(|p| p.best_path(now, path_timeout))
        else {
            return;
        };
        let mut out = bytes.to_vec();
        header::Packet::new_unchecked(&mut out[..]).set_hops(hdr.hops + 1);
        self.relay.packets += 1;
        self.relay.bytes += out.len() as u64;
        match hdr.packet_type {
            PacketType::HandshakeInit
            | PacketType::HandshakeInitCookie
            | PacketType::CookieReply
            | PacketType::HandshakeResponse => self.relay.handshake_packets += 1,
            PacketType::Data | PacketType::Fragment => self.relay.data_packets += 1,
            PacketType::HolePunch => {}
        }
        self.transmits.push_back(Transmit {
            dst: dst_ep,
            bytes: out,
        });
        // Introduce the two nodes so they can try a direct path.
        let key = (hdr.src.min(hdr.dst), hdr.src.max(hdr.dst));
        let interval = self.timing.rendezvous_interval;
        if self
            .rendezvous
            .get(&key)
            .is_none_or(|t| now >= *t + interval)
        {
            self.rendezvous.insert(key, now);
            self.send_message(
                now,
                hdr.src,
                Message::Rendezvous {
                    address: hdr.dst,
                    endpoint: dst_ep,
                }
                .to_vec(),
            );
            self.send_message(
                now,
                hdr.dst,
                Message::Rendezvous {
                    address: hdr.src,
                    endpoint: src_ep,
                }
                .to_vec(),
            );
        }
    }
}

/// A root: accepts sessions from any node with a valid identity, answers HELLO and WHOIS,
/// keeps network membership lists for ad-hoc networks, relays packets between nodes and
/// introduces them to each other (RENDEZVOUS) so they can punch through NATs. Sans-IO like
/// [`Node`], with the same call order.
#[derive(Debug)]
pub struct Root {
    node: Node,
}

impl Root {
    /// Creates a root.
    pub fn new(identity: SecretIdentity, rng_seed: [u8; 32], timing: Timing, now: Instant) -> Self {
        let mut config = NodeConfig::new(identity, Vec::new(), rng_seed);
        config.timing = timing;
        Root {
            node: Node::with_role(config, Role::Root, now),
        }
    }

    /// The root's address.
    pub fn address(&self) -> Address {
        self.node.address()
    }

    /// The root's public identity (what nodes put in their [`RootSpec`]).
    pub fn identity(&self) -> &Identity {
        self.node.identity()
    }

    /// Processes one UDP datagram.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.node.handle_datagram(now, from, bytes);
    }

    /// [`Root::handle_datagram`] on a buffer the root may decrypt in place (its contents
    /// are unspecified afterwards).
    pub fn handle_datagram_in_place(&mut self, now: Instant, from: SocketAddr, bytes: &mut [u8]) {
        self.node.handle_datagram_in_place(now, from, bytes);
    }

    /// Runs due timers (session and path expiry).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.node.handle_timeout(now);
    }

    /// Takes the next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.node.poll_transmit()
    }

    /// The earliest time at which [`Root::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.node.poll_timeout()
    }

    /// What the relay has forwarded so far.
    pub fn relay_stats(&self) -> RelayStats {
        self.node.relay
    }

    /// What handshake admission did so far (initiations, cookies, crypto spent).
    pub fn admission_stats(&self) -> AdmissionStats {
        self.node.admission_stats()
    }

    /// Registered nodes and their paths.
    pub fn peers(&self, now: Instant) -> Vec<PeerStatus> {
        self.node.peers(now)
    }
}

/// The HANDSHAKE_INIT datagram `pkt` (header and body, as [`Node::initiate`] made it) as a
/// HANDSHAKE_INIT_COOKIE carrying `cookie`.
fn with_cookie(pkt: &[u8], cookie: [u8; COOKIE_LEN]) -> Option<Vec<u8>> {
    let p = header::Packet::new_checked(pkt).ok()?;
    let mut hdr = header::Repr::parse(&p).ok()?;
    let ip = InitPacket::new_checked(p.body()).ok()?;
    let init = InitRepr::parse(&ip).ok()?;
    hdr.packet_type = PacketType::HandshakeInitCookie;
    let repr = CookieInitRepr { cookie, init };
    let mut out = Vec::with_capacity(HEADER_LEN + repr.buffer_len());
    hdr.emit_vec(&mut out);
    repr.emit(&mut out);
    Some(out)
}

fn config_view(mac: Mac, c: &SignedConfig) -> NetworkConfig {
    NetworkConfig {
        nwid: c.nwid,
        mac,
        mtu: usize::from(c.mtu),
        name: c.name.clone(),
        private: c.private,
        addresses: c.addresses.clone(),
        routes: c.routes.clone(),
        directory: c.directory.clone(),
    }
}

fn adhoc_view(nwid: NetworkId, mac: Mac, me: Address) -> NetworkConfig {
    NetworkConfig {
        nwid,
        mac,
        mtu: DEFAULT_MTU,
        name: String::new(),
        private: false,
        addresses: adhoc_addresses(nwid, me),
        routes: Vec::new(),
        directory: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_for_a_peer_without_session_is_bounded_oldest_first() {
        let mut p = Peer::new();
        for i in 0..30u8 {
            p.enqueue(vec![i; 3000]);
        }
        let bytes: usize = p.queue.iter().map(Vec::len).sum();
        assert!(bytes <= MAX_QUEUE_BYTES, "{bytes} bytes queued");
        assert_eq!(p.queue.len(), MAX_QUEUE_BYTES / 3000);
        assert_eq!(p.queue.back().map(|m| m[0]), Some(29), "newest kept");
        for i in 0..100u8 {
            p.enqueue(vec![i; 10]);
        }
        assert_eq!(p.queue.len(), MAX_QUEUE);
        assert_eq!(p.queue.front().map(|m| m[0]), Some(100 - MAX_QUEUE as u8));
        // One record larger than the byte budget is still kept alone.
        p.enqueue(vec![7; MAX_QUEUE_BYTES + 1]);
        assert_eq!(p.queue.len(), 1);
    }
}
