//! Network controllers: the authority over the networks whose IDs start with its address.
//!
//! A [`Controller`] keeps each network's settings and members, decides who is authorized,
//! assigns addresses (an IPv4 pool, RFC 4193 IPv6 and a 6plane-style per-node IPv6
//! prefix), and issues [`SignedConfig`]s, each carrying a membership [`Certificate`], all
//! signed with the controller's Ed25519 key. Deauthorizing a member produces a signed
//! [`Revocation`] that the hosting node sends to the network's members.
//!
//! It is sans-IO like the rest of the crate: a [`crate::Node`] hosts it
//! ([`crate::Node::attach_controller`]) and answers configuration requests that arrive
//! over VL1. Timestamps come from a wall-clock reading given at construction plus the
//! monotonic `now` arguments. The controller records which networks and members changed;
//! its host drains those changes ([`Controller::take_changes`]) into a [`store::Store`],
//! one record per network and per member, and restores a controller from the stored
//! records ([`Controller::from_state`]). The embedded redb store is
//! [`store::RedbStore`] (cargo feature `store`). The whole state also has a JSON form
//! ([`Controller::to_json`], [`Controller::from_json`]), the stored layout of schema 1.
//! The HTTP management API is not part of this crate.
//!
//! Certificates follow ZeroTier's "certificate of membership" idea: two members' certificates
//! agree when their timestamps differ by at most `max_delta`. Members refresh their
//! configurations regularly, so the certificates of current members stay close; a
//! deauthorized member gets no new certificate, and its old one is revoked explicitly and,
//! failing that, stops agreeing once the others have moved on by more than `max_delta`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use ed25519_dalek::{Signature, VerifyingKey};

use crate::identity::{Address, Identity, SecretIdentity};
use crate::vl2::{NetworkId, DEFAULT_MTU, MAX_MTU, MIN_MTU};
use crate::wire::credential::{
    valid_member_name, Certificate, DirectoryEntry, Revocation, Route, SignedConfig,
    CERTIFICATE_CONTEXT, CONFIG_CONTEXT, MAX_DIRECTORY, MAX_LIST, REVOCATION_CONTEXT,
};

pub mod record;
pub mod store;

use store::{Change, ControllerState, StoredNetwork, Writer};

/// Default `max_delta` of certificates.
pub const DEFAULT_MAX_DELTA: Duration = Duration::from_secs(120);

/// Errors of controller operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControllerError {
    /// The network number does not fit in 24 bits.
    #[error("network number {number:#x} does not fit in 24 bits")]
    NetworkNumber {
        /// The number.
        number: u32,
    },
    /// This controller does not run that network.
    #[error("network {nwid} is not run by this controller")]
    UnknownNetwork {
        /// The network.
        nwid: NetworkId,
    },
    /// The network has no record of that member.
    #[error("{member} is not a member of network {nwid}")]
    UnknownMember {
        /// The network.
        nwid: NetworkId,
        /// The address asked about.
        member: Address,
    },
    /// Settings that cannot be encoded in a configuration.
    #[error("invalid network settings: {reason}")]
    Settings {
        /// Why.
        reason: &'static str,
    },
    /// A member name that cannot be used.
    #[error("invalid member name: {reason}")]
    MemberName {
        /// Why.
        reason: &'static str,
    },
    /// The saved state could not be read.
    #[error("invalid controller state: {reason}")]
    State {
        /// Why.
        reason: String,
    },
}

/// Why a member gets no configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfigDenied {
    /// No such network.
    #[error("network not found")]
    NotFound,
    /// Private network, member not authorized.
    #[error("access denied")]
    AccessDenied,
}

impl ConfigDenied {
    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            ConfigDenied::NotFound => 1,
            ConfigDenied::AccessDenied => 2,
        }
    }

    /// Decodes the wire code.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(ConfigDenied::NotFound),
            2 => Some(ConfigDenied::AccessDenied),
            _ => None,
        }
    }
}

/// What an administrator sets on a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSettings {
    /// Human-readable name.
    pub name: String,
    /// Private networks admit only authorized members; public ones admit anybody.
    pub private: bool,
    /// MTU of the virtual Ethernet.
    pub mtu: u16,
    /// IPv4 pool (first and last address) and the prefix length of the subnet.
    pub ipv4_pool: Option<(Ipv4Addr, Ipv4Addr, u8)>,
    /// Give each member its RFC 4193 address (`fd` + network ID + `9993` + node address, /88).
    pub rfc4193: bool,
    /// Give each member a 6plane-style /80 prefix (its first address is assigned).
    pub sixplane: bool,
    /// Routes pushed to members.
    pub routes: Vec<Route>,
}

impl NetworkSettings {
    /// Checks what the configuration format can carry.
    pub fn validate(&self) -> Result<(), ControllerError> {
        let bad = |reason| Err(ControllerError::Settings { reason });
        if self.name.len() > 255 {
            return bad("name longer than 255 bytes");
        }
        if self.routes.len() > MAX_LIST {
            return bad("more than 32 routes");
        }
        if !(MIN_MTU..=MAX_MTU).contains(&usize::from(self.mtu)) {
            return bad("MTU outside 1280..=10000");
        }
        if let Some((first, last, prefix)) = self.ipv4_pool {
            if prefix > 32 || u32::from(first) > u32::from(last) {
                return bad("IPv4 pool must be first <= last with a prefix of at most 32");
            }
        }
        for r in &self.routes {
            let max = if r.target.is_ipv4() { 32 } else { 128 };
            if r.prefix > max || r.via.is_some_and(|v| v.is_ipv4() != r.target.is_ipv4()) {
                return bad("route prefix too long or gateway of another address family");
            }
        }
        Ok(())
    }
}

impl Default for NetworkSettings {
    fn default() -> Self {
        NetworkSettings {
            name: String::new(),
            private: true,
            mtu: DEFAULT_MTU as u16,
            ipv4_pool: None,
            rfc4193: true,
            sixplane: false,
            routes: Vec::new(),
        }
    }
}

/// A member as the controller records it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Member {
    /// Whether it may have a configuration.
    pub authorized: bool,
    /// Its IPv4 address from the pool, once assigned.
    pub ipv4: Option<Ipv4Addr>,
    /// When it last asked for its configuration (controller clock, ms).
    pub last_request: Option<u64>,
    /// Its DNS name on the network, set by an administrator
    /// ([`crate::wire::credential::valid_member_name`]).
    pub name: Option<String>,
}

impl Member {
    /// Authorized and has asked for a configuration: online as far as the controller knows
    /// (it hears revocations and pushed configurations).
    pub fn is_active(&self) -> bool {
        self.authorized && self.last_request.is_some()
    }
}

#[derive(Debug, Clone)]
struct ControlledNetwork {
    settings: NetworkSettings,
    members: BTreeMap<Address, Member>,
}

/// The controller state machine. See the module documentation.
#[derive(Debug)]
pub struct Controller {
    identity: SecretIdentity,
    clock_base: (u64, Instant),
    max_delta: u64,
    networks: BTreeMap<NetworkId, ControlledNetwork>,
    /// The timestamp of the last configuration issued: each new one is later, so a member
    /// takes a pushed configuration issued in the same millisecond as the previous one.
    last_issued: u64,
    /// Records changed since the last [`Controller::take_changes`].
    changed: BTreeSet<Dirty>,
    /// Networks deleted since then (their records and members go first).
    deleted: BTreeSet<NetworkId>,
    /// The members of `changed` that an administrator changed ([`Writer`]).
    by_administrator: BTreeSet<(NetworkId, Address)>,
    /// An address was assigned since the last [`Controller::take_changes`].
    assigned: bool,
}

/// A record that changed and must be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Dirty {
    Network(NetworkId),
    Member(NetworkId, Address),
    LastIssued,
}

/// The RFC 4193 address ZeroTier gives a member: `fd` ‖ network ID ‖ `99 93` ‖ node address.
pub fn rfc4193_address(nwid: NetworkId, member: Address) -> Ipv6Addr {
    let mut b = [0u8; 16];
    b[0] = 0xfd;
    b[1..9].copy_from_slice(&nwid.0.to_be_bytes());
    b[9] = 0x99;
    b[10] = 0x93;
    b[11..16].copy_from_slice(&member.to_bytes());
    Ipv6Addr::from(b)
}

/// The 6plane-style /80 prefix of a member: `fc` ‖ (network ID's halves XORed, 32 bits) ‖
/// node address; the member's address is the prefix's `::1`.
pub fn sixplane_address(nwid: NetworkId, member: Address) -> Ipv6Addr {
    let fold = ((nwid.0 >> 32) as u32) ^ (nwid.0 as u32);
    let mut b = [0u8; 16];
    b[0] = 0xfc;
    b[1..5].copy_from_slice(&fold.to_be_bytes());
    b[5..10].copy_from_slice(&member.to_bytes());
    b[15] = 1;
    Ipv6Addr::from(b)
}

/// The addresses a member of an ad-hoc network uses (there is no controller to assign any):
/// its RFC 4193 IPv6 address (/88) and `10.x.y.z/8` from the low 24 bits of its address.
/// The IPv4 address can collide between two members (probability 2^-24 per pair); the
/// IPv6 address cannot.
pub fn adhoc_addresses(nwid: NetworkId, member: Address) -> Vec<(IpAddr, u8)> {
    let a = member.to_u64();
    vec![
        (
            IpAddr::V4(Ipv4Addr::new(10, (a >> 16) as u8, (a >> 8) as u8, a as u8)),
            8,
        ),
        (IpAddr::V6(rfc4193_address(nwid, member)), 88),
    ]
}

fn signed(context: &[u8], body: &[u8]) -> Vec<u8> {
    [context, body].concat()
}

fn check(identity: &Identity, context: &[u8], body: &[u8], sig: &[u8; 64]) -> bool {
    VerifyingKey::from_bytes(identity.ed25519_public())
        .and_then(|k| k.verify_strict(&signed(context, body), &Signature::from_bytes(sig)))
        .is_ok()
}

/// True if `cert` was signed by the controller `controller`, which must own its network.
pub fn verify_certificate(cert: &Certificate, controller: &Identity) -> bool {
    cert.nwid.controller() == Some(controller.address())
        && check(
            controller,
            CERTIFICATE_CONTEXT,
            &cert.body(),
            &cert.signature,
        )
}

/// True if `rev` was signed by the controller of its network.
pub fn verify_revocation(rev: &Revocation, controller: &Identity) -> bool {
    rev.nwid.controller() == Some(controller.address())
        && check(controller, REVOCATION_CONTEXT, &rev.body(), &rev.signature)
}

/// True if `config` and the certificate inside were signed by the network's controller and
/// belong together.
pub fn verify_config(config: &SignedConfig, controller: &Identity) -> bool {
    config.nwid.controller() == Some(controller.address())
        && config.certificate.nwid == config.nwid
        && config.certificate.member == config.issued_to
        && check(
            controller,
            CONFIG_CONTEXT,
            &config.body(),
            &config.signature,
        )
        && verify_certificate(&config.certificate, controller)
}

/// True if two certificates of one network agree (their timestamps are within `mine`'s
/// `max_delta`).
pub fn certificates_agree(mine: &Certificate, theirs: &Certificate) -> bool {
    mine.nwid == theirs.nwid && mine.timestamp.abs_diff(theirs.timestamp) <= mine.max_delta
}

impl Controller {
    /// A controller with no networks. `unix_ms` is the wall clock at `now`.
    pub fn new(identity: SecretIdentity, unix_ms: u64, now: Instant) -> Self {
        Controller {
            identity,
            clock_base: (unix_ms, now),
            max_delta: DEFAULT_MAX_DELTA.as_millis() as u64,
            networks: BTreeMap::new(),
            last_issued: 0,
            changed: BTreeSet::new(),
            deleted: BTreeSet::new(),
            by_administrator: BTreeSet::new(),
            assigned: false,
        }
    }

    /// A controller with the state a store kept ([`store::Store::load`]). Nothing is
    /// pending ([`Controller::take_changes`] is empty).
    pub fn from_state(
        identity: SecretIdentity,
        unix_ms: u64,
        now: Instant,
        state: ControllerState,
    ) -> Self {
        let mut c = Controller::new(identity, unix_ms, now);
        // Timestamps issued before a restart may be ahead of the clock: stay above them.
        c.last_issued = state.last_issued;
        c.networks = state
            .networks
            .into_iter()
            .map(|(nwid, n)| {
                (
                    nwid,
                    ControlledNetwork {
                        settings: n.settings,
                        members: n.members,
                    },
                )
            })
            .collect();
        c
    }

    /// The whole state, as a store keeps it.
    pub fn state(&self) -> ControllerState {
        ControllerState {
            networks: self
                .networks
                .iter()
                .map(|(nwid, n)| {
                    (
                        *nwid,
                        StoredNetwork {
                            settings: n.settings.clone(),
                            members: n.members.clone(),
                        },
                    )
                })
                .collect(),
            last_issued: self.last_issued,
        }
    }

    /// The records changed since the last call, to hand to [`store::Store::apply`] in this
    /// order: deleted networks first, then settings, members and the issue counter. If the
    /// store fails, give them back with [`Controller::unsaved`] so the next save retries.
    pub fn take_changes(&mut self) -> Vec<Change> {
        self.assigned = false;
        let mut out: Vec<Change> = std::mem::take(&mut self.deleted)
            .into_iter()
            .map(|nwid| Change::Network {
                nwid,
                settings: None,
            })
            .collect();
        for d in std::mem::take(&mut self.changed) {
            out.push(match d {
                Dirty::Network(nwid) => Change::Network {
                    nwid,
                    settings: self.networks.get(&nwid).map(|n| n.settings.clone()),
                },
                Dirty::Member(nwid, member) => Change::Member {
                    nwid,
                    member,
                    record: self
                        .networks
                        .get(&nwid)
                        .and_then(|n| n.members.get(&member))
                        .cloned(),
                    by: if self.by_administrator.remove(&(nwid, member)) {
                        Writer::Administrator
                    } else {
                        Writer::Controller
                    },
                },
                Dirty::LastIssued => Change::LastIssued(self.last_issued),
            });
        }
        out
    }

    /// Marks the records of `changes` (taken with [`Controller::take_changes`] and not
    /// stored) as changed again.
    pub fn unsaved(&mut self, changes: &[Change]) {
        for c in changes {
            match c {
                Change::Network {
                    nwid,
                    settings: None,
                } => {
                    self.deleted.insert(*nwid);
                }
                Change::Network { nwid, .. } => {
                    self.changed.insert(Dirty::Network(*nwid));
                }
                Change::Member {
                    nwid, member, by, ..
                } => {
                    self.changed.insert(Dirty::Member(*nwid, *member));
                    if *by == Writer::Administrator {
                        self.by_administrator.insert((*nwid, *member));
                    }
                }
                Change::LastIssued(_) => {
                    self.changed.insert(Dirty::LastIssued);
                }
            }
        }
    }

    /// Installs a record as another writer stored it (a replica sharing this controller's
    /// database): the network's settings (`Some`, creating the network) or its deletion
    /// with its members (`None`). Nothing is marked changed, and a network whose own
    /// changes wait to be stored keeps them ([`Controller::is_pending`]).
    pub fn install_network(&mut self, nwid: NetworkId, settings: Option<NetworkSettings>) {
        match settings {
            Some(settings) => match self.networks.get_mut(&nwid) {
                Some(n) => n.settings = settings,
                None => {
                    self.networks.insert(
                        nwid,
                        ControlledNetwork {
                            settings,
                            members: BTreeMap::new(),
                        },
                    );
                }
            },
            None => {
                self.networks.remove(&nwid);
                self.changed.retain(|d| match d {
                    Dirty::Network(n) | Dirty::Member(n, _) => *n != nwid,
                    Dirty::LastIssued => true,
                });
                self.by_administrator.retain(|(n, _)| *n != nwid);
            }
        }
    }

    /// Installs a member record as another writer stored it (`None`: removed), without
    /// marking it changed. A member of an unknown network is ignored (its network's record
    /// comes first in a store's order).
    pub fn install_member(&mut self, nwid: NetworkId, member: Address, record: Option<Member>) {
        let Some(net) = self.networks.get_mut(&nwid) else {
            return;
        };
        match record {
            Some(m) => {
                net.members.insert(member, m);
            }
            None => {
                net.members.remove(&member);
            }
        }
    }

    /// Takes a stored issue counter into account: later configurations are issued after
    /// it.
    pub fn install_last_issued(&mut self, last_issued: u64) {
        self.last_issued = self.last_issued.max(last_issued);
    }

    /// Whether the record `change` names has changes of this controller waiting to be
    /// stored (they are newer than what the store holds).
    pub fn is_pending(&self, change: &Change) -> bool {
        match change {
            Change::Network { nwid, .. } => {
                self.changed.contains(&Dirty::Network(*nwid)) || self.deleted.contains(nwid)
            }
            Change::Member { nwid, member, .. } => {
                self.changed.contains(&Dirty::Member(*nwid, *member)) || self.deleted.contains(nwid)
            }
            Change::LastIssued(_) => false,
        }
    }

    /// Whether an address was assigned since the last [`Controller::take_changes`]: a
    /// host whose controller may be replaced by another process (replicas on one
    /// database) stores the changes before the configuration carrying it goes out.
    pub fn must_store(&self) -> bool {
        self.assigned
    }

    /// Who changed a member whose record waits to be stored (`None`: nothing waits).
    pub fn pending_member(&self, nwid: NetworkId, member: Address) -> Option<Writer> {
        if !self.changed.contains(&Dirty::Member(nwid, member)) {
            return None;
        }
        Some(if self.by_administrator.contains(&(nwid, member)) {
            Writer::Administrator
        } else {
            Writer::Controller
        })
    }

    /// Whether changes wait for [`Controller::take_changes`].
    pub fn has_changes(&self) -> bool {
        !self.changed.is_empty() || !self.deleted.is_empty()
    }

    /// One member of a network, if recorded.
    pub fn member(
        &self,
        nwid: NetworkId,
        member: Address,
    ) -> Result<Option<&Member>, ControllerError> {
        self.networks
            .get(&nwid)
            .map(|n| n.members.get(&member))
            .ok_or(ControllerError::UnknownNetwork { nwid })
    }

    /// The number of members of a network and how many are authorized.
    pub fn member_count(&self, nwid: NetworkId) -> Result<(usize, usize), ControllerError> {
        self.networks
            .get(&nwid)
            .map(|n| {
                (
                    n.members.len(),
                    n.members.values().filter(|m| m.authorized).count(),
                )
            })
            .ok_or(ControllerError::UnknownNetwork { nwid })
    }

    /// Sets the certificates' `max_delta` (tests shorten it).
    pub fn set_max_delta(&mut self, d: Duration) {
        self.max_delta = d.as_millis() as u64;
    }

    /// The controller's address (the first 10 hex digits of its network IDs).
    pub fn address(&self) -> Address {
        self.identity.address()
    }

    /// The controller clock in ms.
    pub fn clock(&self, now: Instant) -> u64 {
        self.clock_base.0 + now.saturating_duration_since(self.clock_base.1).as_millis() as u64
    }

    /// Creates (or replaces the settings of) network number `number`.
    pub fn create_network(
        &mut self,
        number: u32,
        settings: NetworkSettings,
    ) -> Result<NetworkId, ControllerError> {
        if number >> 24 != 0 {
            return Err(ControllerError::NetworkNumber { number });
        }
        settings.validate()?;
        let nwid = NetworkId((self.address().to_u64() << 24) | u64::from(number));
        self.changed.insert(Dirty::Network(nwid));
        match self.networks.get_mut(&nwid) {
            Some(n) => n.settings = settings,
            None => {
                self.networks.insert(
                    nwid,
                    ControlledNetwork {
                        settings,
                        members: BTreeMap::new(),
                    },
                );
            }
        }
        Ok(nwid)
    }

    /// Deletes a network.
    pub fn delete_network(&mut self, nwid: NetworkId) -> Result<(), ControllerError> {
        self.networks
            .remove(&nwid)
            .ok_or(ControllerError::UnknownNetwork { nwid })?;
        self.changed.retain(|d| match d {
            Dirty::Network(n) | Dirty::Member(n, _) => *n != nwid,
            Dirty::LastIssued => true,
        });
        self.by_administrator.retain(|(n, _)| *n != nwid);
        self.deleted.insert(nwid);
        Ok(())
    }

    /// Removes a member's record (its address, name and authorization) and returns it.
    /// Deauthorize it first ([`Controller::set_authorized`]) so that its certificate is
    /// revoked. A node that asks again is recorded anew, as any newcomer.
    pub fn delete_member(
        &mut self,
        nwid: NetworkId,
        member: Address,
    ) -> Result<Member, ControllerError> {
        self.networks
            .get_mut(&nwid)
            .ok_or(ControllerError::UnknownNetwork { nwid })?
            .members
            .remove(&member)
            .ok_or(ControllerError::UnknownMember { nwid, member })
            .inspect(|_| {
                self.changed.insert(Dirty::Member(nwid, member));
                self.by_administrator.insert((nwid, member));
            })
    }

    /// The networks and their settings.
    pub fn networks(&self) -> Vec<(NetworkId, NetworkSettings)> {
        self.networks
            .iter()
            .map(|(n, c)| (*n, c.settings.clone()))
            .collect()
    }

    /// The members of a network.
    pub fn members(&self, nwid: NetworkId) -> Result<Vec<(Address, Member)>, ControllerError> {
        self.networks
            .get(&nwid)
            .map(|n| n.members.iter().map(|(a, m)| (*a, m.clone())).collect())
            .ok_or(ControllerError::UnknownNetwork { nwid })
    }

    /// Authorizes or deauthorizes a member. Deauthorizing returns the signed revocation to
    /// send to the network's members.
    pub fn set_authorized(
        &mut self,
        now: Instant,
        nwid: NetworkId,
        member: Address,
        authorized: bool,
    ) -> Result<Option<Revocation>, ControllerError> {
        // Never below a timestamp already issued (they run ahead of the clock when many
        // configurations go out in one millisecond): the revocation must cover them all.
        let clock = self.clock(now).max(self.last_issued);
        let net = self
            .networks
            .get_mut(&nwid)
            .ok_or(ControllerError::UnknownNetwork { nwid })?;
        let m = net.members.entry(member).or_default();
        let was = m.authorized;
        m.authorized = authorized;
        self.changed.insert(Dirty::Member(nwid, member));
        self.by_administrator.insert((nwid, member));
        if was && !authorized {
            return Ok(Some(self.revocation_at(clock, nwid, member)));
        }
        Ok(None)
    }

    /// A signed revocation of every certificate `member` of `nwid` holds, for a
    /// deauthorization another writer stored ([`Controller::install_member`]).
    pub fn revocation(&self, now: Instant, nwid: NetworkId, member: Address) -> Revocation {
        self.revocation_at(self.clock(now).max(self.last_issued), nwid, member)
    }

    fn revocation_at(&self, threshold: u64, nwid: NetworkId, member: Address) -> Revocation {
        let mut rev = Revocation {
            nwid,
            member,
            threshold,
            signature: [0; 64],
        };
        rev.signature = self.identity.sign(&signed(REVOCATION_CONTEXT, &rev.body()));
        rev
    }

    /// A network's settings.
    pub fn settings(&self, nwid: NetworkId) -> Option<&NetworkSettings> {
        self.networks.get(&nwid).map(|n| &n.settings)
    }

    /// Names a member in DNS (`None` removes its name). The other members learn it with
    /// their next configuration. Errors: unknown network, a name that is not a DNS label
    /// ([`valid_member_name`]) or one another member of the network already has.
    pub fn set_member_name(
        &mut self,
        nwid: NetworkId,
        member: Address,
        name: Option<String>,
    ) -> Result<(), ControllerError> {
        let net = self
            .networks
            .get_mut(&nwid)
            .ok_or(ControllerError::UnknownNetwork { nwid })?;
        if let Some(n) = &name {
            if !valid_member_name(n) {
                return Err(ControllerError::MemberName {
                    reason: "a member name is a DNS label: 1 to 63 of a-z, 0-9 and '-', \
                             not starting or ending with '-', and not 10 hex digits",
                });
            }
            if net
                .members
                .iter()
                .any(|(a, m)| *a != member && m.name.as_deref() == Some(n.as_str()))
            {
                return Err(ControllerError::MemberName {
                    reason: "another member of this network has that name",
                });
            }
        }
        net.members.entry(member).or_default().name = name;
        self.changed.insert(Dirty::Member(nwid, member));
        self.by_administrator.insert((nwid, member));
        Ok(())
    }

    /// Whether `member` of `nwid` is active: authorized and asked for a configuration.
    pub fn is_active(&self, nwid: NetworkId, member: Address) -> bool {
        self.networks
            .get(&nwid)
            .and_then(|n| n.members.get(&member))
            .is_some_and(Member::is_active)
    }

    /// The authorized members that asked for a configuration (who must hear revocations).
    pub fn active_members(&self, nwid: NetworkId) -> Vec<Address> {
        self.networks
            .get(&nwid)
            .map(|n| {
                n.members
                    .iter()
                    .filter(|(_, m)| m.is_active())
                    .map(|(a, _)| *a)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Answers a member's configuration request (and records that it asked).
    pub fn request(
        &mut self,
        now: Instant,
        nwid: NetworkId,
        member: Address,
    ) -> Result<SignedConfig, ConfigDenied> {
        let clock = self.clock(now);
        let net = self.networks.get_mut(&nwid).ok_or(ConfigDenied::NotFound)?;
        let private = net.settings.private;
        let m = net.members.entry(member).or_insert_with(|| Member {
            authorized: !private,
            ..Member::default()
        });
        m.last_request = Some(clock);
        self.changed.insert(Dirty::Member(nwid, member));
        self.issue(now, nwid, member)
    }

    /// A fresh configuration for a known member, as [`Controller::request`] answers, without
    /// recording a request (for pushing a changed member directory to every member).
    pub fn issue(
        &mut self,
        now: Instant,
        nwid: NetworkId,
        member: Address,
    ) -> Result<SignedConfig, ConfigDenied> {
        let clock = self.clock(now).max(self.last_issued + 1);
        let max_delta = self.max_delta;
        let net = self.networks.get_mut(&nwid).ok_or(ConfigDenied::NotFound)?;
        let taken: BTreeSet<Ipv4Addr> = net.members.values().filter_map(|m| m.ipv4).collect();
        let m = net
            .members
            .get_mut(&member)
            .ok_or(ConfigDenied::AccessDenied)?;
        if !m.authorized {
            return Err(ConfigDenied::AccessDenied);
        }
        let s = &net.settings;
        if m.ipv4.is_none() {
            if let Some((first, last, _)) = s.ipv4_pool {
                let (first, last) = (u32::from(first), u32::from(last));
                m.ipv4 = (first..=last)
                    .map(Ipv4Addr::from)
                    .find(|a| !taken.contains(a));
                self.changed.insert(Dirty::Member(nwid, member));
                self.assigned |= m.ipv4.is_some();
            }
        }
        let mut addresses = Vec::new();
        if let (Some(a), Some((_, _, prefix))) = (m.ipv4, s.ipv4_pool) {
            addresses.push((IpAddr::V4(a), prefix));
        }
        if s.rfc4193 {
            addresses.push((IpAddr::V6(rfc4193_address(nwid, member)), 88));
        }
        if s.sixplane {
            addresses.push((IpAddr::V6(sixplane_address(nwid, member)), 80));
        }
        let mut certificate = Certificate {
            nwid,
            member,
            timestamp: clock,
            max_delta,
            signature: [0; 64],
        };
        certificate.signature = self
            .identity
            .sign(&signed(CERTIFICATE_CONTEXT, &certificate.body()));
        // The directory: authorized members with an address or a name, at most
        // MAX_DIRECTORY of them (docs/CONTROLLER.md): the named ones first (the names an
        // administrator gave are what members look up), then those with an address
        // only, each in address order.
        let entry = |(a, m): (&Address, &Member)| DirectoryEntry {
            member: *a,
            ipv4: m.ipv4,
            name: m.name.clone().unwrap_or_default(),
        };
        let mut directory: Vec<DirectoryEntry> = net
            .members
            .iter()
            .filter(|(_, m)| m.authorized && m.name.is_some())
            .take(MAX_DIRECTORY)
            .map(&entry)
            .collect();
        let room = MAX_DIRECTORY - directory.len();
        directory.extend(
            net.members
                .iter()
                .filter(|(_, m)| m.authorized && m.name.is_none() && m.ipv4.is_some())
                .take(room)
                .map(entry),
        );
        let mut config = SignedConfig {
            nwid,
            issued_to: member,
            timestamp: clock,
            private: s.private,
            mtu: s.mtu,
            name: s.name.clone(),
            addresses,
            routes: s.routes.clone(),
            directory,
            certificate,
            signature: [0; 64],
        };
        config.signature = self.identity.sign(&signed(CONFIG_CONTEXT, &config.body()));
        self.last_issued = clock;
        self.changed.insert(Dirty::LastIssued);
        Ok(config)
    }

    /// The networks and members as JSON, for saving.
    pub fn to_json(&self) -> String {
        use serde_json::{json, Value};
        let nets: Vec<Value> = self
            .networks
            .iter()
            .map(|(nwid, n)| {
                let s = &n.settings;
                json!({
                    "nwid": nwid.to_string(),
                    "name": s.name,
                    "private": s.private,
                    "mtu": s.mtu,
                    "ipv4_pool": s.ipv4_pool.map(|(a, b, p)| json!([a.to_string(), b.to_string(), p])),
                    "rfc4193": s.rfc4193,
                    "sixplane": s.sixplane,
                    "routes": s.routes.iter().map(|r| json!({
                        "target": r.target.to_string(),
                        "prefix": r.prefix,
                        "via": r.via.map(|v| v.to_string()),
                    })).collect::<Vec<_>>(),
                    "members": n.members.iter().map(|(a, m)| json!({
                        "address": a.to_string(),
                        "authorized": m.authorized,
                        "ipv4": m.ipv4.map(|x| x.to_string()),
                        "last_request": m.last_request,
                        "name": m.name,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({ "version": 1, "networks": nets, "last_issued": self.last_issued }).to_string()
    }

    /// Restores a controller saved with [`Controller::to_json`].
    pub fn from_json(
        identity: SecretIdentity,
        unix_ms: u64,
        now: Instant,
        text: &str,
    ) -> Result<Self, ControllerError> {
        Ok(Controller::from_state(
            identity,
            unix_ms,
            now,
            Controller::state_from_json(text)?,
        ))
    }

    /// Reads the JSON form of [`Controller::to_json`] (schema 1 of the store).
    pub fn state_from_json(text: &str) -> Result<ControllerState, ControllerError> {
        use serde_json::Value;
        let bad = |reason: &str| ControllerError::State {
            reason: reason.to_string(),
        };
        let v: Value = serde_json::from_str(text).map_err(|e| ControllerError::State {
            reason: e.to_string(),
        })?;
        let mut c = ControllerState {
            last_issued: v["last_issued"].as_u64().unwrap_or(0),
            ..ControllerState::default()
        };
        let nets = v["networks"].as_array().ok_or_else(|| bad("no networks"))?;
        for n in nets {
            let nwid: NetworkId = n["nwid"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("bad nwid"))?;
            let ip = |v: &Value| v.as_str().and_then(|s| s.parse::<IpAddr>().ok());
            let ipv4_pool = match &n["ipv4_pool"] {
                Value::Array(a) if a.len() == 3 => match (ip(&a[0]), ip(&a[1]), a[2].as_u64()) {
                    (Some(IpAddr::V4(x)), Some(IpAddr::V4(y)), Some(p)) if p <= 32 => {
                        Some((x, y, p as u8))
                    }
                    _ => return Err(bad("bad ipv4_pool")),
                },
                Value::Null => None,
                _ => return Err(bad("bad ipv4_pool")),
            };
            let mut routes = Vec::new();
            for r in n["routes"].as_array().into_iter().flatten() {
                routes.push(Route {
                    target: ip(&r["target"]).ok_or_else(|| bad("bad route"))?,
                    prefix: r["prefix"].as_u64().ok_or_else(|| bad("bad route"))? as u8,
                    via: ip(&r["via"]),
                });
            }
            let settings = NetworkSettings {
                name: n["name"].as_str().unwrap_or_default().to_string(),
                private: n["private"].as_bool().unwrap_or(true),
                mtu: n["mtu"].as_u64().unwrap_or(DEFAULT_MTU as u64) as u16,
                ipv4_pool,
                rfc4193: n["rfc4193"].as_bool().unwrap_or(true),
                sixplane: n["sixplane"].as_bool().unwrap_or(false),
                routes,
            };
            settings.validate()?;
            let mut members = BTreeMap::new();
            for m in n["members"].as_array().into_iter().flatten() {
                let a: Address = m["address"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad("bad member address"))?;
                members.insert(
                    a,
                    Member {
                        authorized: m["authorized"].as_bool().unwrap_or(false),
                        ipv4: m["ipv4"].as_str().and_then(|s| s.parse().ok()),
                        last_request: m["last_request"].as_u64(),
                        name: m["name"]
                            .as_str()
                            .filter(|n| valid_member_name(n))
                            .map(str::to_string),
                    },
                );
            }
            c.networks.insert(nwid, StoredNetwork { settings, members });
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::tests::test_identity;

    /// Past MAX_DIRECTORY entries, named members stay in the directory and members with
    /// only an address make room.
    #[test]
    fn the_directory_is_bounded_and_keeps_named_members() {
        let now = Instant::now();
        let mut c = Controller::new(test_identity(44), 1_000, now);
        let settings = NetworkSettings {
            ipv4_pool: Some((
                Ipv4Addr::new(10, 1, 0, 1),
                Ipv4Addr::new(10, 1, 255, 254),
                16,
            )),
            ..NetworkSettings::default()
        };
        let nwid = c.create_network(1, settings).unwrap();
        let addr = |i: u64| Address::new(0x01_0000_0000 + i).unwrap();
        let total = MAX_DIRECTORY as u64 + 100;
        for i in 0..total {
            c.set_authorized(now, nwid, addr(i), true).unwrap();
            c.request(now, nwid, addr(i)).unwrap();
        }
        // Two named members at the end of the address order.
        for i in [total - 2, total - 1] {
            c.set_member_name(nwid, addr(i), Some(format!("host-{i}")))
                .unwrap();
        }
        let config = c.issue(now, nwid, addr(0)).unwrap();
        assert_eq!(config.directory.len(), MAX_DIRECTORY);
        assert_eq!(config.directory[0].member, addr(total - 2));
        assert_eq!(config.directory[1].name, format!("host-{}", total - 1));
        assert_eq!(config.directory[2].member, addr(0));
        // It encodes and decodes (the wire refuses more than MAX_DIRECTORY entries).
        assert_eq!(
            SignedConfig::parse(&config.to_vec()).unwrap().directory,
            config.directory
        );
    }

    /// Changes say who made them; records installed from a store mark nothing; an
    /// assigned address asks to be stored before it goes out.
    #[test]
    fn writers_installs_and_assigned_addresses() {
        let now = Instant::now();
        let mut c = Controller::new(test_identity(41), 1_000, now);
        let settings = NetworkSettings {
            ipv4_pool: Some((Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 9), 24)),
            ..NetworkSettings::default()
        };
        let nwid = c.create_network(1, settings).unwrap();
        let (a, b) = (test_identity(42).address(), test_identity(43).address());
        c.set_authorized(now, nwid, a, true).unwrap();
        let _ = c.take_changes();
        assert!(!c.must_store());
        // The member asks: its address is assigned, the controller wrote the record.
        c.request(now, nwid, a).unwrap();
        assert!(c.must_store());
        assert_eq!(c.pending_member(nwid, a), Some(Writer::Controller));
        let changes = c.take_changes();
        assert!(!c.must_store());
        assert!(changes.iter().any(|ch| matches!(ch,
            Change::Member { member, by: Writer::Controller, record: Some(m), .. }
                if *member == a && m.ipv4.is_some())));
        c.set_member_name(nwid, a, Some("db".into())).unwrap();
        assert_eq!(c.pending_member(nwid, a), Some(Writer::Administrator));
        let changes = c.take_changes();
        assert!(matches!(
            changes[0],
            Change::Member {
                by: Writer::Administrator,
                ..
            }
        ));
        // Given back unsaved, the writer stays.
        c.unsaved(&changes);
        assert_eq!(c.pending_member(nwid, a), Some(Writer::Administrator));
        let _ = c.take_changes();
        // Another writer's records: installed, nothing pending.
        let theirs = Member {
            authorized: true,
            name: Some("web".into()),
            ..Member::default()
        };
        c.install_member(nwid, b, Some(theirs.clone()));
        c.install_last_issued(u64::MAX / 2);
        assert!(!c.has_changes());
        assert_eq!(c.member(nwid, b).unwrap(), Some(&theirs));
        assert!(c.issue(now, nwid, b).unwrap().timestamp > u64::MAX / 2);
        c.install_network(nwid, None);
        assert!(c.networks().is_empty());
        c.install_member(nwid, b, Some(theirs));
        assert!(c.networks().is_empty());
    }

    #[test]
    fn a_deleted_member_is_gone_and_comes_back_as_a_newcomer() {
        let now = Instant::now();
        let mut c = Controller::new(test_identity(41), 0, now);
        let nwid = c.create_network(1, NetworkSettings::default()).unwrap();
        let typo = test_identity(42).address();
        c.set_authorized(now, nwid, typo, true).unwrap();
        c.set_member_name(nwid, typo, Some("web".into())).unwrap();
        let gone = c.delete_member(nwid, typo).unwrap();
        assert!(gone.authorized && gone.name.as_deref() == Some("web"));
        assert!(c.members(nwid).unwrap().is_empty());
        assert_eq!(
            c.delete_member(nwid, typo),
            Err(ControllerError::UnknownMember { nwid, member: typo })
        );
        let other = NetworkId(nwid.0 + 1);
        assert_eq!(
            c.delete_member(other, typo),
            Err(ControllerError::UnknownNetwork { nwid: other })
        );
        // Asking again on a private network records it, not authorized, without its name.
        assert_eq!(c.request(now, nwid, typo), Err(ConfigDenied::AccessDenied));
        let again = &c.members(nwid).unwrap()[0].1;
        assert!(!again.authorized && again.name.is_none());
        // The name is free again.
        let other_member = test_identity(43).address();
        c.set_member_name(nwid, other_member, Some("web".into()))
            .unwrap();
    }

    #[test]
    fn configs_list_authorized_members_with_their_ipv4_and_names() {
        let ctl_id = test_identity(34);
        let (a, b, c_) = (
            test_identity(35).address(),
            test_identity(36).address(),
            test_identity(37).address(),
        );
        let now = Instant::now();
        let mut c = Controller::new(ctl_id.clone(), 1_700_000_000_000, now);
        let nwid = c
            .create_network(
                2,
                NetworkSettings {
                    ipv4_pool: Some((
                        "10.147.18.1".parse().unwrap(),
                        "10.147.18.9".parse().unwrap(),
                        24,
                    )),
                    ..NetworkSettings::default()
                },
            )
            .unwrap();
        for m in [a, b] {
            c.set_authorized(now, nwid, m, true).unwrap();
        }
        c.set_member_name(nwid, b, Some("db".into())).unwrap();
        // A third member that asked but is not authorized is not listed.
        assert!(c.request(now, nwid, c_).is_err());
        let b_ip = c.request(now, nwid, b).unwrap().addresses[0].0;
        let cfg = c.request(now, nwid, a).unwrap();
        assert!(verify_config(&cfg, ctl_id.public()));
        let a_ip = cfg.addresses[0].0;
        let mut want = vec![
            DirectoryEntry {
                member: a,
                ipv4: Some(match a_ip {
                    IpAddr::V4(x) => x,
                    IpAddr::V6(_) => unreachable!(),
                }),
                name: String::new(),
            },
            DirectoryEntry {
                member: b,
                ipv4: Some(match b_ip {
                    IpAddr::V4(x) => x,
                    IpAddr::V6(_) => unreachable!(),
                }),
                name: "db".into(),
            },
        ];
        want.sort_by_key(|e| e.member);
        assert_eq!(cfg.directory, want);
        // Names are DNS labels, unique on the network; clearing one works.
        let refused = |r: Result<(), ControllerError>| {
            assert!(
                matches!(r, Err(ControllerError::MemberName { .. })),
                "{r:?}"
            );
        };
        refused(c.set_member_name(nwid, a, Some("db".into())));
        refused(c.set_member_name(nwid, a, Some("Web".into())));
        refused(c.set_member_name(nwid, a, Some("web.lab".into())));
        c.set_member_name(nwid, b, None).unwrap();
        c.set_member_name(nwid, a, Some("db".into())).unwrap();
        // Names survive a save and restore.
        let back = Controller::from_json(ctl_id, 1_700_000_000_000, now, &c.to_json()).unwrap();
        let names: Vec<_> = back
            .members(nwid)
            .unwrap()
            .into_iter()
            .filter_map(|(m, x)| x.name.map(|n| (m, n)))
            .collect();
        assert_eq!(names, vec![(a, "db".to_string())]);
    }

    #[test]
    fn a_revocation_covers_certificates_issued_ahead_of_the_clock() {
        let ctl_id = test_identity(38);
        let member = test_identity(39).address();
        let now = Instant::now();
        let mut c = Controller::new(ctl_id, 1_700_000_000_000, now);
        let nwid = c.create_network(4, NetworkSettings::default()).unwrap();
        c.set_authorized(now, nwid, member, true).unwrap();
        // Many configurations in one millisecond: their timestamps run ahead.
        let mut last = 0;
        for _ in 0..50 {
            last = c.issue(now, nwid, member).unwrap().certificate.timestamp;
        }
        assert!(last > c.clock(now), "timestamps are strictly increasing");
        let rev = c.set_authorized(now, nwid, member, false).unwrap().unwrap();
        assert!(
            rev.threshold >= last,
            "the revocation covers the last certificate"
        );
        // Authorized again, the next certificate is newer than the revocation, also after
        // a restart at the same clock.
        c.set_authorized(now, nwid, member, true).unwrap();
        let again = c.issue(now, nwid, member).unwrap();
        assert!(again.certificate.timestamp > rev.threshold);
        let mut back =
            Controller::from_json(test_identity(38), 1_700_000_000_000, now, &c.to_json()).unwrap();
        let after = back.issue(now, nwid, member).unwrap();
        assert!(after.certificate.timestamp > again.certificate.timestamp);
    }

    #[test]
    fn private_network_admits_only_authorized_members_and_signs_configs() {
        let ctl_id = test_identity(31);
        let member = test_identity(32).address();
        let now = Instant::now();
        let mut c = Controller::new(ctl_id.clone(), 1_700_000_000_000, now);
        let nwid = c
            .create_network(
                1,
                NetworkSettings {
                    name: "lab".into(),
                    ipv4_pool: Some((
                        "10.147.17.10".parse().unwrap(),
                        "10.147.17.20".parse().unwrap(),
                        24,
                    )),
                    sixplane: true,
                    ..NetworkSettings::default()
                },
            )
            .unwrap();
        assert_eq!(nwid.controller(), Some(c.address()));
        assert_eq!(
            c.request(now, nwid, member),
            Err(ConfigDenied::AccessDenied)
        );
        assert!(!c.members(nwid).unwrap()[0].1.authorized);
        c.set_authorized(now, nwid, member, true).unwrap();
        let cfg = c.request(now, nwid, member).unwrap();
        assert!(verify_config(&cfg, ctl_id.public()));
        assert_eq!(cfg.addresses[0], ("10.147.17.10".parse().unwrap(), 24));
        assert_eq!(
            cfg.addresses[1],
            (IpAddr::V6(rfc4193_address(nwid, member)), 88)
        );
        assert_eq!(cfg.addresses.len(), 3);
        // Round trip through bytes keeps the signature valid; tampering breaks it.
        let back = SignedConfig::parse(&cfg.to_vec()).unwrap();
        assert!(verify_config(&back, ctl_id.public()));
        let mut tampered = back.clone();
        tampered.addresses[0].1 = 16;
        assert!(!verify_config(&tampered, ctl_id.public()));
        // Another controller's key does not verify it.
        assert!(!verify_config(&back, test_identity(33).public()));
        // Deauthorizing yields a verifiable revocation covering the issued certificate.
        let later = now + Duration::from_secs(1);
        let rev = c
            .set_authorized(later, nwid, member, false)
            .unwrap()
            .unwrap();
        assert!(verify_revocation(&rev, ctl_id.public()));
        assert!(rev.threshold >= cfg.certificate.timestamp);
        assert_eq!(
            c.request(later, nwid, member),
            Err(ConfigDenied::AccessDenied)
        );
        assert_eq!(
            c.request(now, NetworkId(nwid.0 + 1), member),
            Err(ConfigDenied::NotFound)
        );
    }

    #[test]
    fn settings_that_cannot_be_encoded_are_refused() {
        let mut c = Controller::new(test_identity(31), 0, Instant::now());
        for s in [
            NetworkSettings {
                name: "x".repeat(256),
                ..NetworkSettings::default()
            },
            NetworkSettings {
                mtu: 10001,
                ..NetworkSettings::default()
            },
            NetworkSettings {
                mtu: 1279,
                ..NetworkSettings::default()
            },
            NetworkSettings {
                ipv4_pool: Some(("10.0.0.9".parse().unwrap(), "10.0.0.1".parse().unwrap(), 24)),
                ..NetworkSettings::default()
            },
            NetworkSettings {
                routes: vec![
                    Route {
                        target: "10.0.0.0".parse().unwrap(),
                        prefix: 24,
                        via: None,
                    };
                    33
                ],
                ..NetworkSettings::default()
            },
        ] {
            assert!(matches!(
                c.create_network(1, s),
                Err(ControllerError::Settings { .. })
            ));
        }
        assert!(c
            .create_network(1 << 24, NetworkSettings::default())
            .is_err());
    }

    #[test]
    fn certificates_agree_within_max_delta() {
        let ctl = test_identity(31);
        let now = Instant::now();
        let mut c = Controller::new(ctl, 0, now);
        c.set_max_delta(Duration::from_secs(10));
        let nwid = c
            .create_network(
                2,
                NetworkSettings {
                    private: false,
                    ..NetworkSettings::default()
                },
            )
            .unwrap();
        let a = c
            .request(now, nwid, test_identity(32).address())
            .unwrap()
            .certificate;
        let b = c
            .request(
                now + Duration::from_secs(9),
                nwid,
                test_identity(33).address(),
            )
            .unwrap()
            .certificate;
        let late = c
            .request(
                now + Duration::from_secs(11),
                nwid,
                test_identity(33).address(),
            )
            .unwrap()
            .certificate;
        assert!(certificates_agree(&a, &b));
        assert!(!certificates_agree(&a, &late));
    }

    #[test]
    fn state_survives_json_round_trip() {
        let ctl = test_identity(31);
        let now = Instant::now();
        let mut c = Controller::new(ctl.clone(), 5, now);
        let nwid = c
            .create_network(
                7,
                NetworkSettings {
                    ipv4_pool: Some(("10.0.0.1".parse().unwrap(), "10.0.0.9".parse().unwrap(), 24)),
                    routes: vec![Route {
                        target: "10.0.0.0".parse().unwrap(),
                        prefix: 24,
                        via: None,
                    }],
                    ..NetworkSettings::default()
                },
            )
            .unwrap();
        let m = test_identity(32).address();
        c.set_authorized(now, nwid, m, true).unwrap();
        c.request(now, nwid, m).unwrap();
        let text = c.to_json();
        let back = Controller::from_json(ctl, 5, now, &text).unwrap();
        assert_eq!(back.networks(), c.networks());
        assert_eq!(back.members(nwid).unwrap(), c.members(nwid).unwrap());
        assert!(Controller::from_json(test_identity(31), 0, now, "{").is_err());
    }

    #[test]
    fn derived_ipv6_addresses() {
        let nwid: NetworkId = "8056c2e21c000001".parse().unwrap();
        let a: Address = "89e92ceee5".parse().unwrap();
        assert_eq!(
            rfc4193_address(nwid, a).to_string(),
            "fd80:56c2:e21c:0:199:9389:e92c:eee5"
        );
        assert_eq!(
            sixplane_address(nwid, a).to_string(),
            "fc9c:56c2:e389:e92c:eee5::1"
        );
        let adhoc = adhoc_addresses(NetworkId(0xff00_0000_0000_0001), a);
        assert_eq!(adhoc[0], ("10.44.238.229".parse().unwrap(), 8));
    }
}
