//! The overlay network: VL1 (identities, encrypted peer-to-peer UDP sessions, roots and
//! relays) and VL2 (virtual Ethernet networks with membership and controllers).
//!
//! The protocol state machines here are sans-IO: they open no sockets, read no clock and
//! draw no randomness of their own. Time and datagrams come in as arguments through
//! `handle_*` methods and outputs are taken with `poll_*` methods.
#![forbid(unsafe_code)]
