//! Test hosts: networks of hosts, LANs and NAT routers built from Linux network namespaces,
//! for the integration tests, the compatibility matrix and the benchmarks.
//!
//! ```no_run
//! use compat_tests::testnet::{require_root, NatKind, Netem, TestNet};
//! use std::net::UdpSocket;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! require_root();
//! let net = TestNet::new()?;
//! let public = net.lan("public", "198.18.0.0/24")?;
//! let b = net.host("b")?;
//! let b_addr = b.attach(&public)?.addr;
//! let nat = net.nat_router("nat-a", &public, NatKind::PortRestrictedCone)?;
//! let a = net.host("a")?;
//! a.attach(&nat.inside)?; // default route through the router
//! a.netem(&nat.inside, Netem::loss(10.0))?;
//! let socket = a.run(|| UdpSocket::bind("0.0.0.0:0"))??; // a socket of host a
//! socket.send_to(b"hello", (b_addr, 7000))?; // B sees it from nat.public_addr
//! let id = a.command_as_user("id").arg("-u").output()?; // "65534", inside host a
//! # let _ = id;
//! # Ok(())
//! # }
//! ```
//!
//! # The model
//!
//! A [`TestNet`] is one test's private network. Everything in it is a network namespace
//! (ip-netns(8), network_namespaces(7)) that the `TestNet` creates, owns and deletes:
//!
//! * a **host** ([`TestNet::host`]) is a namespace with only `lo` up. It gets one interface
//!   per LAN it is attached to, named after the LAN (`public`, `nat-a-in`, ...), so
//!   `ip addr` inside it reads like a small machine's.
//! * a **LAN** ([`TestNet::lan`]) is a Linux bridge. All bridges of a test live in one extra
//!   namespace, the **switch**, which holds nothing else: no addresses, IPv6 off, STP off
//!   (ports forward at once) and multicast snooping off (neighbour discovery is flooded
//!   like on a dumb switch).
//! * an **attachment** ([`Host::attach`]) is a veth pair created from inside the switch with
//!   its peer born directly in the host's namespace (`ip -n SWITCH link add PORT type veth
//!   peer name LAN netns HOST`): one end is a bridge port, the other the host's interface.
//!   Neither end ever exists in the root namespace, so a test creates nothing there, and
//!   interface names only need to be unique inside their own namespace (bridge `br0`, port
//!   `l0h3`, host side the LAN's name): always far below the 15-character limit.
//! * a **NAT router** ([`TestNet::nat_router`]) is a host attached to an upstream LAN and to
//!   a new inside LAN, with forwarding on and an nftables ruleset that gives it one of the
//!   behaviours of [`NatKind`]; the rules and why they have the behaviour they claim are in
//!   that type's module documentation.
//!
//! Addresses come only from 198.18.0.0/15, the RFC 2544 benchmarking block, which no real
//! network uses; LANs are given as subnets of it (`"198.18.0.0/24"`) and hosts get the next
//! free address, or one chosen. Every link is dual-stack: LAN number `k` (counting from 0
//! in creation order) also carries the ULA prefix `fd00:0:0:k+1::/64` (RFC 4193), and a host
//! whose IPv4 address is host number `n` of its LAN gets `fd00:0:0:k+1::n`. Duplicate address
//! detection is off in every host (`accept_dad=0` and `nodad`), so IPv6 addresses work the
//! moment they are added. NAT is IPv4 only.
//!
//! # Names
//!
//! Namespaces have global names (files in `/run/netns`), so they carry who made them:
//! `ztt-<pid>-<start time>-<n>-<host>` for hosts and `ztt-<pid>-<start time>-<n>.switch`
//! for the switch, where `pid` and `start time` (clock ticks since boot, proc(5)) identify
//! the test process for good, and `n` counts the `TestNet`s of that process. Tests running
//! on parallel threads of one binary, and several test binaries at once, therefore never
//! collide, even when a pid is reused. Host names are at most 12 characters so that a
//! router's inside LAN, `<router>-in`, is still a valid interface name.
//!
//! # Running things on a host
//!
//! * [`Host::command`] returns a [`std::process::Command`] whose child enters the host's
//!   namespace between fork and exec (setns(2) in a `pre_exec` hook), as root;
//!   [`Host::command_as_user`] also drops to uid/gid 65534 (`nobody`/`nogroup`) with no
//!   supplementary groups, to prove that what runs there needs no privilege.
//! * [`Host::run`] runs a closure on a fresh thread that has entered the namespace (setns
//!   affects only the calling thread); sockets created there belong to the host and keep
//!   working from any thread afterwards. [`Host::spawn`] is the same for a thread that
//!   keeps running. Threads and processes started from such a thread begin in the same
//!   namespace (clone(2) copies the calling thread's namespaces), so a tokio runtime built
//!   inside [`Host::run`] has all its workers in the host.
//! * [`Host::netem`] impairs a host's link (loss, delay, jitter, reordering) with tc-netem.
//!   On kernels built without `sch_netem`, loss alone is an nftables rule, and delay,
//!   jitter or reordering are made by a relay thread of the test process that carries the
//!   link's frames through packet sockets (the `relay` module).
//!
//! # Teardown
//!
//! Dropping the `TestNet`, also while unwinding from a panic, first kills (SIGKILL) every
//! process whose network namespace is one of its own (whatever started it: children of
//! [`Host::command`], their children, servers started by scripts), then deletes its
//! namespaces, hosts first and the switch last. Deleting a namespace destroys its
//! interfaces, veth pairs, bridges, qdiscs and nftables rules with it, so nothing is left
//! behind. [`TestNet::teardown`] does the same on demand and reports what could not be
//! removed. A test process that dies without unwinding (SIGKILL, abort) leaves its
//! namespaces; [`cleanup_stale_namespaces`], run once per process by [`TestNet::new`],
//! removes namespaces whose creating process is gone.
//!
//! Everything here needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN). Tests call
//! [`require_root`] first, which panics with a clear message when they are not root: a test
//! that cannot run fails, it is never skipped in silence.

mod error;
mod impair;
mod nat;
mod process;
mod relay;
mod subnet;
mod sys;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::panic;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, Once, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

pub use error::{Result, TestNetError};
pub use impair::{Direction, Impairment, Netem};
pub use nat::NatKind;
pub use process::{cleanup_stale_namespaces, list_namespaces};
pub use subnet::Subnet;

use process::{ip, run_checked, tool, NETNS_DIR};
use relay::Relay;

/// Panic with a clear message unless the process runs as root. Every test that builds a
/// [`TestNet`] calls this first.
///
/// # Panics
///
/// When the effective uid is not 0.
pub fn require_root() {
    if let Err(e) = check_root() {
        panic!("{e}");
    }
}

fn check_root() -> Result<()> {
    let euid = nix::unistd::geteuid().as_raw();
    if euid != 0 {
        return Err(TestNetError::NotRoot { euid });
    }
    Ok(())
}

/// Counts the `TestNet`s of this process, for their names.
static NEXT_NET: AtomicU32 = AtomicU32::new(0);

/// One test's network of namespaces; see the [module documentation](self).
pub struct TestNet {
    id: String,
    switch: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Every namespace created, in creation order (the switch first).
    namespaces: Vec<String>,
    lans: Vec<LanState>,
    hosts: Vec<HostState>,
    /// User-space relays impairing links, by (host, LAN).
    relays: Vec<((usize, usize), Relay)>,
    torn_down: bool,
}

struct LanState {
    name: String,
    subnet: Subnet,
    bridge: String,
    gateway: Option<Ipv4Addr>,
    /// Host numbers in use.
    used: BTreeSet<u32>,
}

struct HostState {
    name: String,
    ns: String,
    ifaces: Vec<IfaceState>,
    default_v4: Option<Ipv4Addr>,
}

struct IfaceState {
    lan: usize,
    ifname: String,
    /// The bridge-port end of the veth pair, in the switch namespace.
    port: String,
    addr: Ipv4Addr,
    addr6: Ipv6Addr,
}

impl fmt::Debug for TestNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestNet")
            .field("id", &self.id)
            .field("namespaces", &self.namespaces())
            .finish()
    }
}

fn netns_path(ns: &str) -> std::path::PathBuf {
    Path::new(NETNS_DIR).join(ns)
}

fn open_netns(ns: &str) -> io::Result<File> {
    File::open(netns_path(ns))
}

/// Run `f` on a fresh thread that first enters the network namespace `ns`; a panic in `f`
/// is resumed in the caller.
fn in_netns<T, F>(ns: &str, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let file =
        open_netns(ns).map_err(|e| TestNetError::io(format!("opening namespace {ns}"), e))?;
    let joined = thread::scope(|scope| {
        scope
            .spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| TestNetError::io(format!("entering namespace {ns}"), e.into()))?;
                Ok(f())
            })
            .join()
    });
    match joined {
        Ok(result) => result,
        Err(payload) => panic::resume_unwind(payload),
    }
}

fn write_sysctls(ns: &str, settings: &[(&str, &str)]) -> Result<()> {
    in_netns(ns, || {
        for (key, value) in settings {
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            std::fs::write(&path, value).map_err(|e| {
                TestNetError::io(format!("setting sysctl {key}={value} in namespace {ns}"), e)
            })?;
        }
        Ok(())
    })?
}

/// `ip -n NS -batch -` with `script` on stdin.
fn ip_batch(ns: &str, script: &str) -> Result<String> {
    run_checked(
        Command::new(tool("ip")).args(["-n", ns, "-batch", "-"]),
        Some(script),
        "",
    )
}

/// Wait (up to 5 s) until each interface of `ifaces` in namespace `ns` is operationally up,
/// and forwarding if it is a bridge port. Links come up asynchronously (the kernel's
/// linkwatch work activates a device's queue and sets its operstate a moment after
/// `ip link set up`; a bridge port starts forwarding on that event), and frames sent before
/// that are dropped; waiting here makes the first packet of a test as safe as the rest.
fn wait_ready(ns: &str, ifaces: &[&str]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = ip(["-n", ns, "-d", "-o", "link", "show"])?;
        let ready = ifaces.iter().all(|want| {
            out.lines().any(|line| {
                let name = line.split_whitespace().nth(1).unwrap_or("");
                let name = name.trim_end_matches(':');
                let name = name.split('@').next().unwrap_or(name);
                name == *want
                    && line.contains(" state UP ")
                    && (!line.contains("bridge_slave")
                        || line.contains("bridge_slave state forwarding"))
            })
        });
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(TestNetError::io(
                format!("waiting for {ifaces:?} in namespace {ns} to come up:\n{out}"),
                io::ErrorKind::TimedOut.into(),
            ));
        }
        thread::sleep(Duration::from_millis(2));
    }
}

fn validate_name(name: &str, max: usize, what: &str) -> Result<()> {
    let bad = |reason: String| TestNetError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() || name.len() > max {
        return Err(bad(format!("a {what} name has 1 to {max} characters")));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || name.starts_with('-')
    {
        return Err(bad(format!(
            "a {what} name has lowercase letters, digits and '-', and does not start with '-'"
        )));
    }
    if ["lo", "all", "default"].contains(&name) {
        return Err(bad(
            "\"lo\" is the loopback interface, and \"all\" and \"default\" are taken \
             in /proc/sys/net"
                .into(),
        ));
    }
    Ok(())
}

impl TestNet {
    /// An empty network: just its switch namespace. Removes stale namespaces of dead test
    /// processes the first time it is called in a process.
    pub fn new() -> Result<Self> {
        check_root()?;
        static CLEANUP: Once = Once::new();
        CLEANUP.call_once(|| match cleanup_stale_namespaces() {
            Ok(removed) if !removed.is_empty() => {
                eprintln!("testnet: removed stale namespaces {removed:?}");
            }
            Ok(_) => {}
            Err(e) => eprintln!("testnet: stale namespace cleanup: {e}"),
        });
        let n = NEXT_NET.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", process::process_tag());
        let net = TestNet {
            switch: format!("{id}.switch"),
            id,
            state: Mutex::new(State::default()),
        };
        // From here on, a failure drops `net`, which removes what was made.
        net.create_namespace(&net.switch)?;
        write_sysctls(
            &net.switch,
            &[
                ("net.ipv6.conf.all.disable_ipv6", "1"),
                ("net.ipv6.conf.default.disable_ipv6", "1"),
            ],
        )?;
        Ok(net)
    }

    /// The id every namespace name of this network starts with.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The name of the switch namespace that holds the LANs' bridges.
    pub fn switch_namespace(&self) -> &str {
        &self.switch
    }

    /// The names of all namespaces this network has created and not yet deleted.
    pub fn namespaces(&self) -> Vec<String> {
        self.lock().namespaces.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn create_namespace(&self, ns: &str) -> Result<()> {
        // The first `ip netns add` on a machine makes /run/netns a shared mount; letting
        // one thread of the process do its first creation alone keeps parallel tests from
        // racing each other on that mount. Later creations run in parallel.
        static FIRST: Mutex<bool> = Mutex::new(false);
        {
            let mut done = FIRST.lock().unwrap_or_else(PoisonError::into_inner);
            if !*done {
                ip(["netns", "add", ns])?;
                *done = true;
                self.lock().namespaces.push(ns.to_owned());
                return Ok(());
            }
        }
        ip(["netns", "add", ns])?;
        self.lock().namespaces.push(ns.to_owned());
        Ok(())
    }

    /// A new host: a namespace named after `name` with `lo` up, IPv6 duplicate address
    /// detection and router advertisements off, and unprivileged ICMP echo sockets allowed
    /// (`net.ipv4.ping_group_range = 0 2147483647`, as systemd sets it). `name`: 1 to 12 of
    /// `a-z 0-9 -`, unique in this network.
    pub fn host(&self, name: &str) -> Result<Host<'_>> {
        validate_name(name, 12, "host")?;
        if self.lock().hosts.iter().any(|h| h.name == name) {
            return Err(TestNetError::InvalidName {
                name: name.into(),
                reason: "this network already has a host of that name".into(),
            });
        }
        let ns = format!("{}-{name}", self.id);
        self.create_namespace(&ns)?;
        write_sysctls(
            &ns,
            &[
                ("net.ipv6.conf.all.accept_dad", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
                ("net.ipv6.conf.all.accept_ra", "0"),
                ("net.ipv6.conf.default.accept_ra", "0"),
                // As on systemd distributions: any user may open ICMP echo sockets
                // (icmp(7)), so `ping` works for `command_as_user` without privileges.
                ("net.ipv4.ping_group_range", "0 2147483647"),
            ],
        )?;
        ip(["-n", &ns, "link", "set", "lo", "up"])?;
        let mut state = self.lock();
        state.hosts.push(HostState {
            name: name.to_owned(),
            ns,
            ifaces: Vec::new(),
            default_v4: None,
        });
        Ok(Host {
            net: self,
            index: state.hosts.len() - 1,
        })
    }

    /// A new LAN (a bridge in the switch namespace) on `subnet`, e.g. `"198.18.0.0/24"`,
    /// which must lie in 198.18.0.0/15, have a prefix from /16 to /30 and not overlap
    /// another LAN of this network. `name` (1 to 15 of `a-z 0-9 -`) is also the name of
    /// each attached host's interface on it.
    pub fn lan(&self, name: &str, subnet: &str) -> Result<Lan<'_>> {
        validate_name(name, 15, "LAN")?;
        let parsed: Subnet = subnet.parse()?;
        if !Subnet::BENCHMARK.contains_subnet(&parsed) || !(16..=30).contains(&parsed.prefix()) {
            return Err(TestNetError::InvalidAddress {
                text: subnet.into(),
                reason: "test LANs are /16 to /30 subnets of 198.18.0.0/15 (RFC 2544)".into(),
            });
        }
        let mut state = self.lock();
        if state.lans.iter().any(|l| l.name == name) {
            return Err(TestNetError::InvalidName {
                name: name.into(),
                reason: "this network already has a LAN of that name".into(),
            });
        }
        if let Some(other) = state.lans.iter().find(|l| l.subnet.overlaps(&parsed)) {
            return Err(TestNetError::InvalidAddress {
                text: subnet.into(),
                reason: format!("overlaps LAN {} ({})", other.name, other.subnet),
            });
        }
        let index = state.lans.len();
        let bridge = format!("br{index}");
        ip_batch(
            &self.switch,
            &format!(
                "link add {bridge} type bridge stp_state 0 mcast_snooping 0\n\
                 link set {bridge} up\n"
            ),
        )?;
        state.lans.push(LanState {
            name: name.to_owned(),
            subnet: parsed,
            bridge,
            gateway: None,
            used: BTreeSet::new(),
        });
        Ok(Lan { net: self, index })
    }

    /// A NAT router `name` of kind `kind` attached to `upstream`, with a new inside LAN
    /// `<name>-in` on the first /24 of 198.18.128.0/17 that no LAN uses yet. The router
    /// takes host number 1 of the inside LAN, which becomes that LAN's gateway: hosts
    /// attached to it get their default route through the router.
    pub fn nat_router(
        &self,
        name: &str,
        upstream: &Lan<'_>,
        kind: NatKind,
    ) -> Result<NatRouter<'_>> {
        let inside = {
            let state = self.lock();
            (128..=255u8)
                .map(|third| Subnet::new(Ipv4Addr::new(198, 18, third, 0), 24))
                .filter_map(|s| s.ok())
                .find(|s| !state.lans.iter().any(|l| l.subnet.overlaps(s)))
                .ok_or_else(|| TestNetError::AddressesExhausted {
                    lan: "198.18.128.0/17 (inside LANs)".into(),
                })?
        };
        self.nat_router_with(name, upstream, kind, &inside.to_string())
    }

    /// [`nat_router`](Self::nat_router) with the inside LAN on `inside_subnet`.
    pub fn nat_router_with(
        &self,
        name: &str,
        upstream: &Lan<'_>,
        kind: NatKind,
        inside_subnet: &str,
    ) -> Result<NatRouter<'_>> {
        let router = self.host(name)?;
        let outer = router.attach(upstream)?;
        let inside = self.lan(&format!("{name}-in"), inside_subnet)?;
        let inner = router.attach_with(
            &inside,
            Attach {
                addr: inside.subnet().host(1),
                default_route: DefaultRoute::None,
            },
        )?;
        self.lock().lans[inside.index].gateway = Some(inner.addr);
        router.sysctl("net.ipv4.ip_forward", "1")?;
        router.nft(&nat::ruleset(
            kind,
            &outer.ifname,
            &inner.ifname,
            outer.addr,
        ))?;
        Ok(NatRouter {
            host: router,
            inside,
            public_addr: outer.addr,
            kind,
        })
    }

    /// Kill every process in this network's namespaces and delete them (what `Drop` does),
    /// reporting what could not be removed. Calling it again does nothing.
    pub fn teardown(&self) -> Result<()> {
        let names = {
            let mut state = self.lock();
            if state.torn_down {
                return Ok(());
            }
            state.torn_down = true;
            // Relays stop (and close their sockets) before their namespace goes.
            let relays = std::mem::take(&mut state.relays);
            drop(state);
            drop(relays);
            std::mem::take(&mut self.lock().namespaces)
        };
        process::kill_processes_in(&names);
        // Hosts before the switch: the reverse of creation order.
        let order: Vec<String> = names.into_iter().rev().collect();
        let failures = process::delete_namespaces(&order);
        if failures.is_empty() {
            Ok(())
        } else {
            Err(TestNetError::Teardown {
                net: self.id.clone(),
                failures,
            })
        }
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("testnet: {e}");
        }
    }
}

/// A LAN of a [`TestNet`]: a bridge that hosts attach to.
#[derive(Clone, Copy)]
pub struct Lan<'n> {
    net: &'n TestNet,
    index: usize,
}

impl fmt::Debug for Lan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lan")
            .field("name", &self.name())
            .field("subnet", &self.subnet())
            .finish()
    }
}

impl Lan<'_> {
    /// The LAN's name, also the name of hosts' interfaces on it.
    pub fn name(&self) -> String {
        self.net.lock().lans[self.index].name.clone()
    }

    /// The LAN's IPv4 subnet.
    pub fn subnet(&self) -> Subnet {
        self.net.lock().lans[self.index].subnet
    }

    /// The LAN's IPv6 /64 prefix (its network address).
    pub fn prefix6(&self) -> Ipv6Addr {
        subnet::ula_address(self.index, 0)
    }

    /// The default gateway hosts attached to this LAN use: the NAT router's inside address
    /// for an inside LAN, `None` otherwise.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.net.lock().lans[self.index].gateway
    }
}

/// How [`Host::attach_with`] attaches a host to a LAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attach {
    /// The IPv4 address to take; `None` for the lowest free one.
    pub addr: Option<Ipv4Addr>,
    /// Whether to add a default route through this LAN.
    pub default_route: DefaultRoute,
}

/// The default-route choice of an [`Attach`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DefaultRoute {
    /// Through the LAN's [gateway](Lan::gateway) if it has one and the host has no default
    /// route yet; otherwise none.
    #[default]
    Auto,
    /// No default route.
    None,
    /// Through this address on the LAN.
    Via(Ipv4Addr),
}

/// A host's interface on a LAN, as [`Host::attach`] made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The interface name inside the host (the LAN's name).
    pub ifname: String,
    /// The IPv4 address.
    pub addr: Ipv4Addr,
    /// The IPv4 prefix length of the LAN.
    pub prefix: u8,
    /// The IPv6 (ULA) address, in the LAN's /64.
    pub addr6: Ipv6Addr,
}

/// A NAT router made by [`TestNet::nat_router`].
#[derive(Debug, Clone, Copy)]
pub struct NatRouter<'n> {
    /// The router itself, attached to the upstream LAN and to `inside`.
    pub host: Host<'n>,
    /// The LAN behind the router; attach hosts to it to put them behind the NAT.
    pub inside: Lan<'n>,
    /// The router's address on the upstream LAN: what the outside sees as the source of
    /// translated traffic.
    pub public_addr: Ipv4Addr,
    /// Its behaviour.
    pub kind: NatKind,
}

/// A host of a [`TestNet`]: a network namespace.
#[derive(Clone, Copy)]
pub struct Host<'n> {
    net: &'n TestNet,
    index: usize,
}

impl fmt::Debug for Host<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("name", &self.name())
            .field("netns", &self.netns())
            .finish()
    }
}

impl<'n> Host<'n> {
    /// The host's name.
    pub fn name(&self) -> String {
        self.net.lock().hosts[self.index].name.clone()
    }

    /// The name of the host's network namespace, for `ip netns exec NAME` or `ip -n NAME`.
    pub fn netns(&self) -> String {
        self.net.lock().hosts[self.index].ns.clone()
    }

    /// Handles of one `TestNet` index its tables; a LAN of another one must not be used.
    fn check_same_net(&self, lan: &Lan<'_>) -> Result<()> {
        if std::ptr::eq(self.net, lan.net) {
            return Ok(());
        }
        Err(TestNetError::Attachment {
            host: self.name(),
            lan: lan.name(),
            problem: "is in another TestNet than",
        })
    }

    fn iface<R>(&self, lan: &Lan<'_>, f: impl FnOnce(&HostState, &IfaceState) -> R) -> Result<R> {
        self.check_same_net(lan)?;
        let state = self.net.lock();
        let host = &state.hosts[self.index];
        match host.ifaces.iter().find(|i| i.lan == lan.index) {
            Some(iface) => Ok(f(host, iface)),
            None => Err(TestNetError::Attachment {
                host: host.name.clone(),
                lan: state.lans[lan.index].name.clone(),
                problem: "is not attached to",
            }),
        }
    }

    /// The host's IPv4 address on `lan`, if attached to it.
    pub fn addr(&self, lan: &Lan<'_>) -> Option<Ipv4Addr> {
        self.iface(lan, |_, i| i.addr).ok()
    }

    /// The host's IPv6 address on `lan`, if attached to it.
    pub fn addr6(&self, lan: &Lan<'_>) -> Option<Ipv6Addr> {
        self.iface(lan, |_, i| i.addr6).ok()
    }

    /// The host's interface name on `lan`, if attached to it.
    pub fn ifname(&self, lan: &Lan<'_>) -> Option<String> {
        self.iface(lan, |_, i| i.ifname.clone()).ok()
    }

    /// Attach the host to `lan` with the lowest free address and the default route of
    /// [`DefaultRoute::Auto`].
    pub fn attach(&self, lan: &Lan<'_>) -> Result<Attachment> {
        self.attach_with(lan, Attach::default())
    }

    /// Attach the host to `lan` as `how` says: a veth pair from a new bridge port to a new
    /// interface in the host named after the LAN, with an IPv4 and an IPv6 address.
    pub fn attach_with(&self, lan: &Lan<'_>, how: Attach) -> Result<Attachment> {
        self.check_same_net(lan)?;
        let mut state = self.net.lock();
        let State { lans, hosts, .. } = &mut *state;
        let l = &mut lans[lan.index];
        let h = &mut hosts[self.index];
        if h.ifaces.iter().any(|i| i.lan == lan.index) {
            return Err(TestNetError::Attachment {
                host: h.name.clone(),
                lan: l.name.clone(),
                problem: "is already attached to",
            });
        }
        let number = match how.addr {
            Some(addr) => {
                let n = l
                    .subnet
                    .host_index(addr)
                    .ok_or_else(|| TestNetError::InvalidAddress {
                        text: addr.to_string(),
                        reason: format!("not a host address of LAN {} ({})", l.name, l.subnet),
                    })?;
                if l.used.contains(&n) {
                    return Err(TestNetError::InvalidAddress {
                        text: addr.to_string(),
                        reason: format!("already used on LAN {}", l.name),
                    });
                }
                n
            }
            None => (1..)
                .map_while(|n| l.subnet.host(n).map(|_| n))
                .find(|n| !l.used.contains(n))
                .ok_or_else(|| TestNetError::AddressesExhausted {
                    lan: l.name.clone(),
                })?,
        };
        let addr = l.subnet.host(number).unwrap_or(l.subnet.network());
        let addr6 = subnet::ula_address(lan.index, number);
        let gateway = match how.default_route {
            DefaultRoute::Auto if h.default_v4.is_none() => l.gateway.filter(|g| *g != addr),
            DefaultRoute::Auto | DefaultRoute::None => None,
            DefaultRoute::Via(gw) => Some(gw),
        };
        let ifname = l.name.clone();
        let port = format!("l{}h{}", lan.index, self.index);
        ip_batch(
            &self.net.switch,
            &format!(
                "link add {port} type veth peer name {ifname} netns {ns}\n\
                 link set {port} master {bridge}\n\
                 link set {port} up\n",
                ns = h.ns,
                bridge = l.bridge,
            ),
        )?;
        let mut script = format!(
            "addr add {addr}/{prefix} dev {ifname}\n\
             addr add {addr6}/64 dev {ifname} nodad\n\
             link set {ifname} up\n",
            prefix = l.subnet.prefix(),
        );
        if let Some(gw) = gateway {
            script.push_str(&format!("route add default via {gw} dev {ifname}\n"));
        }
        ip_batch(&h.ns, &script)?;
        wait_ready(&self.net.switch, &[&port])?;
        wait_ready(&h.ns, &[&ifname])?;
        l.used.insert(number);
        if gateway.is_some() {
            h.default_v4 = gateway;
        }
        h.ifaces.push(IfaceState {
            lan: lan.index,
            ifname: ifname.clone(),
            port,
            addr,
            addr6,
        });
        Ok(Attachment {
            ifname,
            addr,
            prefix: l.subnet.prefix(),
            addr6,
        })
    }

    /// A command that runs `program` inside the host's namespace, as root. Spawning it
    /// fails if the namespace is gone. Whatever it starts is killed at teardown.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        sys::enter_netns_on_exec(&mut cmd, open_netns(&self.netns()), false);
        cmd
    }

    /// Like [`command`](Self::command), but the program runs as uid and gid 65534
    /// (`nobody`/`nogroup`) with no supplementary groups and no capabilities, with `USER`
    /// and `LOGNAME` set to `nobody` and `HOME` to `/nonexistent` (as in `/etc/passwd`).
    pub fn command_as_user(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("USER", "nobody")
            .env("LOGNAME", "nobody")
            .env("HOME", "/nonexistent");
        sys::enter_netns_on_exec(&mut cmd, open_netns(&self.netns()), true);
        cmd
    }

    /// Run `f` on a fresh thread that has entered the host's namespace, and return what it
    /// returns. Sockets `f` creates belong to the host and can be used from any thread
    /// afterwards. A panic in `f` is resumed in the caller.
    pub fn run<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        in_netns(&self.netns(), f)
    }

    /// Start a thread that enters the host's namespace and then runs `f`.
    ///
    /// # Panics
    ///
    /// The new thread panics (seen when joining it) if entering the namespace fails, which
    /// happens only if the namespace was deleted in between.
    pub fn spawn<T, F>(&self, f: F) -> Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let ns = self.netns();
        let file =
            open_netns(&ns).map_err(|e| TestNetError::io(format!("opening namespace {ns}"), e))?;
        thread::Builder::new()
            .name(format!("netns {ns}"))
            .spawn(move || {
                if let Err(e) = setns(&file, CloneFlags::CLONE_NEWNET) {
                    panic!("entering namespace {ns}: {e}");
                }
                drop(file);
                f()
            })
            .map_err(|e| TestNetError::io("starting a thread", e))
    }

    /// `ip ARGS...` in the host's namespace; returns its stdout.
    pub fn ip<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(tool("ip"));
        cmd.arg("-n").arg(self.netns()).args(args);
        run_checked(&mut cmd, None, "")
    }

    /// Load an nftables script (`nft -f -`) in the host's namespace.
    pub fn nft(&self, script: &str) -> Result<()> {
        let mut cmd = self.command(tool("nft"));
        cmd.args(["-f", "-"]);
        run_checked(&mut cmd, Some(script), &format!("in {}", self.netns())).map(drop)
    }

    /// Set a sysctl of the host's namespace, e.g. `("net.ipv4.ip_forward", "1")`.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        write_sysctls(&self.netns(), &[(key, value)])
    }

    /// Impair the host's link to `lan` as `netem` says, replacing an earlier impairment of
    /// that link; an all-zero `netem` removes it. Uses tc-netem when the kernel has it.
    /// Without it, loss alone is made with nftables, and anything with delay, jitter or
    /// reordering with the user-space relay of the `relay` module. Returns which way was
    /// used.
    pub fn netem(&self, lan: &Lan<'_>, netem: Netem) -> Result<Impairment> {
        netem.validate()?;
        self.clear_impairment(lan)?;
        if netem.is_none() {
            return Ok(Impairment::Cleared);
        }
        let (ns, ifname, port) =
            self.iface(lan, |h, i| (h.ns.clone(), i.ifname.clone(), i.port.clone()))?;
        let sides = [
            (
                netem.direction.includes_from_host(),
                ns.as_str(),
                ifname.as_str(),
            ),
            (
                netem.direction.includes_to_host(),
                self.net.switch.as_str(),
                port.as_str(),
            ),
        ];
        for (wanted, side_ns, dev) in sides {
            if !wanted {
                continue;
            }
            let mut cmd = Command::new(tool("tc"));
            cmd.args([
                "-n", side_ns, "qdisc", "replace", "dev", dev, "root", "netem",
            ])
            .args(netem.netem_args());
            match run_checked(&mut cmd, None, "") {
                Ok(_) => {}
                Err(TestNetError::CommandFailed { stderr, .. })
                    if stderr.contains("qdisc kind is unknown") =>
                {
                    return self.impair_without_netem(lan, &ifname, netem);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Impairment::Netem)
    }

    /// Remove every impairment of the link to `lan`, whichever way it was made.
    fn clear_impairment(&self, lan: &Lan<'_>) -> Result<()> {
        let (ns, ifname, port) =
            self.iface(lan, |h, i| (h.ns.clone(), i.ifname.clone(), i.port.clone()))?;
        let relay = {
            let mut state = self.net.lock();
            let key = (self.index, lan.index);
            state
                .relays
                .iter()
                .position(|(k, _)| *k == key)
                .map(|at| state.relays.swap_remove(at).1)
        };
        if let Some(relay) = relay {
            drop(relay); // stops and joins the thread
            let (relay_port, _) = relay_ports(lan.index, self.index);
            let bridge = self.net.lock().lans[lan.index].bridge.clone();
            ip_batch(
                &self.net.switch,
                &format!(
                    "link del {relay_port}\n\
                     link set {port} promisc off\n\
                     link set {port} master {bridge}\n"
                ),
            )?;
            wait_ready(&self.net.switch, &[&port])?;
        }
        for (side_ns, dev) in [
            (ns.as_str(), ifname.as_str()),
            (self.net.switch.as_str(), port.as_str()),
        ] {
            // Fails when there is no qdisc to delete, which is fine.
            let _ = run_checked(
                Command::new(tool("tc")).args(["-n", side_ns, "qdisc", "del", "dev", dev, "root"]),
                None,
                "",
            );
        }
        self.nft(&impair::nft_loss_script(&ifname, &Netem::default()))
    }

    fn impair_without_netem(
        &self,
        lan: &Lan<'_>,
        ifname: &str,
        netem: Netem,
    ) -> Result<Impairment> {
        if !netem.needs_queue() {
            self.nft(&impair::nft_loss_script(ifname, &netem))?;
            return Ok(Impairment::NftablesLoss);
        }
        let port = self.iface(lan, |_, i| i.port.clone())?;
        let bridge = self.net.lock().lans[lan.index].bridge.clone();
        let (relay_port, bridge_side) = relay_ports(lan.index, self.index);
        ip_batch(
            &self.net.switch,
            &format!(
                "link add {relay_port} type veth peer name {bridge_side}\n\
                 link set {port} nomaster\n\
                 link set {port} promisc on\n\
                 link set {relay_port} promisc on\n\
                 link set {relay_port} up\n\
                 link set {bridge_side} master {bridge}\n\
                 link set {bridge_side} up\n"
            ),
        )?;
        wait_ready(&self.net.switch, &[&port, &relay_port, &bridge_side])?;
        let from_host = netem.direction.includes_from_host().then_some(netem);
        let to_host = netem.direction.includes_to_host().then_some(netem);
        let relay = Relay::start(&self.net.switch, &port, &relay_port, from_host, to_host)?;
        self.net
            .lock()
            .relays
            .push(((self.index, lan.index), relay));
        Ok(Impairment::Relay)
    }
}

/// The relay's veth pair for host `host` on LAN `lan`: (the end the relay uses, the end
/// on the bridge).
fn relay_ports(lan: usize, host: usize) -> (String, String) {
    (format!("r{lan}h{host}"), format!("b{lan}h{host}"))
}
