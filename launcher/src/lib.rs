//! Shared code of the `ztrun` and `zt` commands: configuration, the state directory, and
//! the glue that joins the overlay (`zt-core`), the user-space stacks (`netstack`) and the
//! supervisor into one process.
//!
//! `ztrun` runs one program tree. Its sequence:
//!
//! 1. Resolve the state directory (`--home`), load or create the node identity there.
//! 2. Start the overlay driver and join each `--nwid`, waiting for an address.
//! 3. Start one user-space stack per joined network and wire its frames to the overlay.
//! 4. Launch the program under the seccomp filter and supervise it until the last traced
//!    process is gone; return its exit status.
//!
//! On a controller network, step 2 waits for the controller's signed configuration (the
//! addresses, routes and MTU come from it) and says on stderr when the controller refuses
//! this node and what to run on the controller.
//!
//! `zt controller` ([`controller`]) runs a node that hosts a network controller with its
//! store and a JSON-over-HTTP management API on loopback ([`api`]); `zt net` and
//! `zt member` are clients of that API.
//!
//! Steps 2 and 3 are skipped when no network is given: the program then reaches loopback
//! only (and, with `--fallthrough`, the host network).
#![deny(unsafe_code)]

pub mod api;
pub mod cli;
pub mod connections;
pub mod controller;
pub mod doors;
pub mod home;
pub mod identity;
pub mod names;
pub mod netconf;
pub mod node;
pub mod overlay;
pub mod roots;
pub mod spin;
pub mod stats;
pub mod status;
pub mod sys;

/// The version `ztrun --version` and `zt --version` print: the package version and the git
/// commit the binaries were built from (`unknown` when built outside a git checkout).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("ZT_GIT_COMMIT"),
    ")"
);

/// Worker threads for the runtime of `ztrun` and of a home's node: one on a machine of one
/// or two CPUs, two above (DECISIONS.md D19). With two `ztrun`s (or nodes) and their
/// programs on two CPUs, a second worker mostly turns hand-offs between our own tasks into
/// wake-ups of another CPU: one worker opened 20-30 % more connections per second there,
/// with request/response unchanged.
pub fn runtime_workers() -> usize {
    match std::thread::available_parallelism().map(usize::from) {
        Ok(n) if n > 2 => 2,
        _ => 1,
    }
}
