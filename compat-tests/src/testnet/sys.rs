//! The one place with `unsafe`: making a child process enter a network namespace (and
//! optionally drop to an unprivileged user) between `fork` and `exec`.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sched::{setns, CloneFlags};
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
