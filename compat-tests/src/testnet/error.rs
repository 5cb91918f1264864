//! The one error type of the harness: every failure names what was being done and, for an
//! external command, the command line and its stderr.

use std::io;
use std::process::ExitStatus;

/// Why building, using or tearing down a test network failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestNetError {
    /// The process is not root, so it cannot create network namespaces.
    #[error(
        "this test builds network namespaces and needs root (CI runs as root); \
         the effective uid is {euid}"
    )]
    NotRoot {
        /// The effective uid found.
        euid: u32,
    },
    /// An external command (`ip`, `tc`, `nft`, ...) ran and exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line, prefixed by the namespace it ran in when there was one.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// An external command could not be started or waited for.
    #[error("could not run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// A system call or file operation of the harness itself failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the names involved.
        what: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// A host or LAN name that cannot be used.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it was refused.
        reason: String,
    },
    /// An address or subnet that cannot be used.
    #[error("invalid address {text:?}: {reason}")]
    InvalidAddress {
        /// The address or subnet given, as text.
        text: String,
        /// Why it was refused.
        reason: String,
    },
    /// A LAN has no free address left for another host.
    #[error("LAN {lan} has no free address left")]
    AddressesExhausted {
        /// The LAN's name.
        lan: String,
    },
    /// A host was used on a LAN it is not attached to, or attached twice.
    #[error("host {host} {problem} LAN {lan}")]
    Attachment {
        /// The host's name.
        host: String,
        /// The LAN's name.
        lan: String,
        /// "is not attached to", "is already attached to" or "is in another TestNet than".
        problem: &'static str,
    },
    /// A link impairment with impossible numbers.
    #[error("invalid impairment {netem}: {reason}")]
    InvalidImpairment {
        /// The impairment asked for.
        netem: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The kernel or the tools here cannot do what was asked.
    #[error("{what} is not supported here: {reason}")]
    Unsupported {
        /// What was asked.
        what: String,
        /// Why it cannot be done.
        reason: String,
    },
    /// Teardown left something behind; each entry is one failure.
    #[error("teardown of test network {net} was incomplete: {}", .failures.join("; "))]
    Teardown {
        /// The test network's id.
        net: String,
        /// What failed, one message each.
        failures: Vec<String>,
    },
}

/// Shorthand used throughout the harness.
pub type Result<T, E = TestNetError> = std::result::Result<T, E>;

impl TestNetError {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        TestNetError::Io {
            what: what.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_root_says_what_to_do() {
        let msg = TestNetError::NotRoot { euid: 1000 }.to_string();
        assert!(msg.contains("needs root"), "{msg}");
        assert!(msg.contains("1000"), "{msg}");
    }
}
