//! The one place with `unsafe`: making a child process enter a network namespace (and
//! optionally drop to an unprivileged user) between `fork` and `exec`, and the packet
//! sockets of the user-space link relay.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};

/// The unprivileged identity `command_as_user` runs as: `nobody`/`nogroup` on Debian.
pub(crate) const NOBODY: u32 = 65534;

/// Arrange for `cmd`'s child to enter the network namespace `ns` (an open
/// `/run/netns/NAME`) before it executes, and, with `as_nobody`, to then clear its
/// supplementary groups and set its real, effective and saved gid and uid to 65534.
///
/// If opening the namespace failed, `ns` carries that error and spawning the command fails
/// with it.
pub(crate) fn enter_netns_on_exec(cmd: &mut Command, ns: io::Result<File>, as_nobody: bool) {
    // Keep only the errno of a failed open: the hook below must not allocate.
    let ns = ns.map_err(|e| e.raw_os_error().unwrap_or(libc::ENOENT));
    let hook = move || -> io::Result<()> {
        let errno = |e: nix::Error| io::Error::from_raw_os_error(e as i32);
        let fd = ns.as_ref().map_err(|&e| io::Error::from_raw_os_error(e))?;
        setns(fd, CloneFlags::CLONE_NEWNET).map_err(errno)?;
        if as_nobody {
            // Order matters: groups and gid can only be changed while still root.
            setgroups(&[]).map_err(errno)?;
            let gid = Gid::from_raw(NOBODY);
            setresgid(gid, gid, gid).map_err(errno)?;
            let uid = Uid::from_raw(NOBODY);
            setresuid(uid, uid, uid).map_err(errno)?;
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec, where only async-signal-safe
    // work is allowed. It makes four plain system calls (setns, setgroups, setresgid,
    // setresuid; `setgroups(&[])` passes an empty slice and allocates nothing), builds
    // `io::Error`s from raw errno values (no allocation) and touches no lock. The file it
    // owns was opened with O_CLOEXEC (std's default), so it does not leak into the program.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// `SOL_PACKET` options from linux/if_packet.h.
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

fn set_packet_option(fd: &OwnedFd, option: libc::c_int) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `fd` is an open socket; the option value points to a live c_int whose size
    // is passed with it, as setsockopt(2) requires for these integer options.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            option,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A non-blocking raw packet socket (packet(7)) bound to the interface `ifindex` of the
/// calling thread's network namespace. It receives every frame that arrives on that
/// interface but not the ones sent from it (PACKET_IGNORE_OUTGOING), and every frame read
/// or written starts with a `struct virtio_net_hdr` (PACKET_VNET_HDR), which carries
/// segmentation-offload and partial-checksum state across, so large TCP segments and
/// frames whose checksum the kernel has not filled in yet survive the trip.
pub(crate) fn packet_socket(ifindex: u32) -> io::Result<OwnedFd> {
    // Protocol 0: the socket receives nothing until `bind` names the interface, so no
    // frame of another interface can slip in first.
    let fd = socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    set_packet_option(&fd, PACKET_VNET_HDR)?;
    set_packet_option(&fd, PACKET_IGNORE_OUTGOING)?;
    let ifindex =
        libc::c_int::try_from(ifindex).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let addr = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as libc::c_ushort,
        sll_protocol: (libc::ETH_P_ALL as u16).to_be(),
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    // SAFETY: `addr` is a fully initialised sockaddr_ll that lives across the call, and
    // its exact size is passed, as bind(2) and packet(7) require.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}
