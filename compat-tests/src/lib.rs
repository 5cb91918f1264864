//! Test hosts made of network namespaces, the compatibility matrix of real applications,
//! and the benchmarks. Nothing here is needed at run time.
//!
//! * [`testnet`]: networks of hosts, LANs and NAT routers built from Linux network
//!   namespaces, torn down when the test ends. Every integration test, the matrix and the
//!   benchmarks build their hosts with it; its module documentation describes the model.
//! * [`matrix`]: the compatibility matrix of real applications (`compat-tests matrix`),
//!   run natively as a reference or under `ztrun` across two NATs.
//!
//! The harness needs root to create namespaces; the programs under test can be run as an
//! unprivileged user inside them ([`testnet::Host::command_as_user`]).

#![deny(unsafe_code)]

pub mod matrix;
pub mod testnet;

/// A binary of the workspace (`ztrun`, `zt`) built beside the running integration test:
/// the test executable is in `target/<profile>/deps`, the binaries in `target/<profile>`.
///
/// # Panics
///
/// When it is not there, with the command that builds it.
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} not found: build it first (`cargo build -p launcher --bins`)",
        path.display()
    );
    path
}
