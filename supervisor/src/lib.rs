//! The supervisor: runs an unmodified program so that its IPv4/IPv6 sockets live on a
//! user-space network, by trapping its socket system calls with seccomp user
//! notification and emulating them.
//!
//! # Layers
//!
//! - [`launch`]: the fork/filter/exec sequence. A reaper (a child subreaper that kills
//!   the program's whole tree if the supervisor dies) starts the child, which shares the
//!   reaper's fd table (`CLONE_FILES`) until `execve`, sets `no_new_privs`, installs the
//!   [`filter`] with
//!   `SECCOMP_FILTER_FLAG_NEW_LISTENER` (and `WAIT_KILLABLE_RECV` where the kernel has it)
//!   and reports the listener's fd number through a close-on-exec pipe; no trapped call
//!   is ever made before the supervisor reads the listener. [`launch::Child`] waits for
//!   the exit status and forwards signals.
//! - [`filter`]: the seccomp rules, built with libseccomp and exported as classic BPF,
//!   unit-tested by interpretation.
//! - [`notify`]: the tokio loop reading the listener; every notification is its own task,
//!   so a blocking emulated call never delays another.
//! - [`kernel`]: the seam. Tracee memory, answers, fd injection and fd → inode
//!   resolution go through the [`kernel::Kernel`] trait, so the emulation (`emulate`)
//!   is plain code that unit tests drive with a recording fake.
//! - `emulate`: one function per system call, with Linux's errno values; `virt` (TCP on
//!   the virtual network: pumps, listener tokens, non-blocking connect edges), `udp`
//!   (UDP and ICMP echo on the virtual network), `raw` (raw ICMP sockets for programs
//!   holding `CAP_NET_RAW`, UDP-Lite), `kdgram` (kernel datagram sockets kept under
//!   emulation).
//! - [`dns`]: names of the virtual networks' members, answered for queries the program
//!   sends to the host's nameservers; other names forwarded with fall-through.
//! - [`backend`]: routing policy: loopback and (with fall-through) host destinations use
//!   real kernel sockets swapped into the program's fd number; anything else not on a
//!   virtual network gets `ENETUNREACH`. The [`backend::Backend`] trait is the virtual
//!   network; [`network::Networks`] implements it over `netstack::Stack`s.
//!
//! # Driving it
//!
//! ```no_run
//! # async fn demo(stack: netstack::Stack) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use supervisor::{backend::Policy, launch, network::Networks};
//! let cmd = launch::Command::new("curl").arg("http://10.147.17.5:8080/");
//! let backend = Arc::new(Networks::new(vec![stack]));
//! let status = launch::run(&cmd, Policy::default(), backend).await?;
//! std::process::exit(status.code());
//! # }
//! ```
//!
//! # What it refuses
//!
//! i386 and x32 system calls fail with `ENOSYS` (so a 32-bit binary cannot open sockets
//! behind the filter), `io_uring_setup` fails with `ENOSYS`, packet sockets fail with
//! `EPERM` and so do raw sockets for a program without `CAP_NET_RAW`, every other family it does not emulate (but `AF_UNIX` and
//! `AF_ALG`) with `EAFNOSUPPORT`. Permission checks are made against the calling thread's
//! credentials (`permit`); see `docs/SECURITY.md` for what it promises. It contains no protocol or crypto code. See `docs/SUPERVISOR.md` for the
//! decisions, the traps and what is not done yet.
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod backend;
mod copy;
mod diag;
pub mod dns;
mod emulate;
pub mod filter;
mod idle;
mod kdgram;
pub mod kernel;
pub mod launch;
mod netlink;
pub mod network;
pub mod notify;
mod options;
mod permit;
mod raw;
mod sys;
mod tracee;
mod udp;
mod virt;
mod wire;

/// Fuzz entry point for the decoders of the wrapped program's memory.
#[doc(hidden)]
pub use wire::fuzz_program_bytes;

pub use emulate::{Kind, Supervisor};
pub use notify::{supervise, trapped_calls, SuperviseError};
pub use wire::Family;
