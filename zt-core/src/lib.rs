//! The overlay network of `ztrun`: VL1, encrypted peer-to-peer UDP between nodes that are
//! named by their keys, and VL2, virtual Ethernet networks carried over VL1. The model is
//! ZeroTier's; the cryptography is the Noise protocol framework (via `snow`).
//!
//! # Layers
//!
//! - [`identity`]: a node is an X25519 key (key agreement) plus an Ed25519 key
//!   (signatures). Its 40-bit [`Address`] is derived from both public keys with a
//!   memory-hard function and a difficulty rule, so an address cannot be claimed without
//!   the keys, and every peer re-derives it ([`Identity::verify`]) before trusting a key.
//! - [`wire`]: every byte format: the 14-byte header with its version field, handshake,
//!   transport and fragment bodies, and the plaintext records inside transport packets.
//!   Decoders never panic on untrusted input and each one is a fuzz target.
//! - [`session`]: Noise IK handshakes bound to verified identities, and transport
//!   encryption with explicit counters and a [`ReplayWindow`], so UDP loss and reordering
//!   are harmless.
//! - [`admission`]: what a responder checks before it spends asymmetric crypto on a
//!   handshake initiation: a load budget, a stateless cookie that proves the sender
//!   receives at its address (as WireGuard does under load), and per-source budgets, so a
//!   flood from some addresses does not lock out nodes at others.
//! - [`node`]: the sans-IO state machines. A [`node::Node`] registers with roots (HELLO),
//!   looks up peers (WHOIS), punches holes through NATs after a root's RENDEZVOUS, falls
//!   back to relaying through a root, keeps paths alive, migrates when a NAT rebinds, and
//!   switches Ethernet frames of the [`vl2`] networks it joined. A [`node::Root`] is the
//!   rendezvous point and relay of last resort.
//! - [`controller`]: the authority over the networks whose IDs start with its address:
//!   authorization, address assignment, signed configurations, membership certificates and
//!   revocations. A node hosts it and answers configuration requests over VL1; members show
//!   each other their certificates and drop frames from nodes without a valid one.
//! - `driver` (cargo feature `tokio`): the thin glue that owns UDP sockets (batched
//!   receive through `quinn-udp`, batched send with `sendmmsg` and UDP GSO) and a clock,
//!   feeds a `Node` or a `Root`, and hands frames of a joined network to the rest of the
//!   program over channels.
//! - `controller::store`: the `Store` trait a controller's records are kept behind (one
//!   record per network and per member; `Controller::take_changes` hands a store what
//!   changed), and, with cargo feature `store`, `RedbStore`, an embedded redb database
//!   that refuses a file it cannot read completely.
//!
//! # How to drive it
//!
//! The protocol core opens no sockets, reads no clock and draws no randomness of its own:
//! time is an argument of every input method and the random generator is seeded from the
//! configuration. Inputs are `handle_datagram(now, from, bytes)`, `handle_timeout(now)`,
//! `send_frame(now, nwid, frame)` and `join(now, nwid)`; outputs are taken with
//! `poll_transmit()`, `poll_event()` and `poll_timeout()`. The simulation tests drive nodes,
//! a root and NAT models on a virtual clock this way.
//!
//! # What it refuses
//!
//! Packets from other protocol versions, identities whose address does not derive from
//! their keys, handshakes whose static key is not the claimed identity's, replayed or
//! forged transport packets, frames whose source MAC is not the sender's, and relaying for
//! nodes that are not registered with the root from the endpoint they use; on private
//! networks, frames from nodes without a valid, unrevoked membership certificate. The wire
//! format is described in `docs/PROTOCOL.md`. The controller's HTTP management API lives
//! outside this crate.
#![deny(unsafe_code)]

pub mod admission;
pub mod controller;
#[cfg(feature = "tokio")]
pub mod driver;
pub mod identity;
pub mod node;
#[cfg(feature = "tokio")]
mod reactor;
mod reassembly;
pub mod replay;
pub mod session;
pub mod vl2;
pub mod wire;

pub use identity::{
    random_seed, write_secret_file, Address, Identity, IdentityError, SecretIdentity,
};
pub use node::{Event, Node, NodeConfig, Root, RootSpec, Timing, Transmit};
pub use replay::ReplayWindow;
pub use vl2::{Mac, NetworkId};
