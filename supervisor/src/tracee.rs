//! Reading arguments from, and writing results into, the traced program's memory, with
//! Linux's length conventions (`socklen_t *` in/out arguments).
use nix::errno::Errno;

use crate::kernel::Kernel;
use crate::wire::SOCKADDR_MAX;

/// Largest single buffer the supervisor copies out of the program (a UDP datagram).
pub(crate) const MAX_COPY: usize = 65_536;

/// Copy `len` bytes at `addr` out of thread `pid`.
pub(crate) fn read_bytes<K: Kernel + ?Sized>(
    k: &K,
    pid: u32,
    addr: u64,
    len: usize,
) -> Result<Vec<u8>, Errno> {
    if len > 0 && addr == 0 {
        return Err(Errno::EFAULT);
    }
    let mut buf = vec![0u8; len];
    k.read_memory(pid, addr, &mut buf)?;
    Ok(buf)
}

/// Read a C `int` (also `socklen_t`).
pub(crate) fn read_i32<K: Kernel + ?Sized>(k: &K, pid: u32, addr: u64) -> Result<i32, Errno> {
    let mut b = [0u8; 4];
    if addr == 0 {
        return Err(Errno::EFAULT);
    }
    k.read_memory(pid, addr, &mut b)?;
    Ok(i32::from_ne_bytes(b))
}

/// Read a socket address argument of `len` bytes (`connect`, `bind`, `sendto`).
pub(crate) fn read_sockaddr<K: Kernel + ?Sized>(
    k: &K,
    pid: u32,
    addr: u64,
    len: u64,
) -> Result<Vec<u8>, Errno> {
    read_bytes(k, pid, addr, sockaddr_len(len)?)
}

/// The length of a socket address argument: the kernel takes an int, and a negative one
/// or one larger than `sockaddr_storage` is `EINVAL`.
pub(crate) fn sockaddr_len(len: u64) -> Result<usize, Errno> {
    let len = len as u32 as i32;
    if len < 0 || len as usize > SOCKADDR_MAX {
        return Err(Errno::EINVAL);
    }
    Ok(len as usize)
}

/// Gather the `(addr, len)` regions of the program into one buffer, in one copy where
/// the kernel allows ([`Kernel::read_memory_parts`]); a region at address 0 is `EFAULT`,
/// as in [`read_bytes`].
pub(crate) fn read_parts<K: Kernel + ?Sized>(
    k: &K,
    pid: u32,
    parts: &[(u64, usize)],
) -> Result<Vec<u8>, Errno> {
    if parts.iter().any(|&(addr, len)| len > 0 && addr == 0) {
        return Err(Errno::EFAULT);
    }
    k.read_memory_parts(pid, parts)
}

/// Store each `(addr, data)` part in the program, in order, in one copy where the kernel
/// allows ([`Kernel::write_memory_parts`]); a part at address 0 is `EFAULT` before
/// anything is written.
pub(crate) fn write_parts<K: Kernel + ?Sized>(
    k: &K,
    pid: u32,
    parts: &[(u64, &[u8])],
) -> Result<(), Errno> {
    if parts
        .iter()
        .any(|&(addr, data)| !data.is_empty() && addr == 0)
    {
        return Err(Errno::EFAULT);
    }
    k.write_memory_parts(pid, parts)
}

/// The room a `socklen_t *len` in/out argument offers: `*len`, read from the program;
/// negative is `EINVAL`.
pub(crate) fn len_capacity<K: Kernel + ?Sized>(
    k: &K,
    pid: u32,
    len_ptr: u64,
) -> Result<usize, Errno> {
    let cap = read_i32(k, pid, len_ptr)?;
    if cap < 0 {
        return Err(Errno::EINVAL);
    }
    Ok(cap as usize)
}

/// Store `value` through a `(buf, socklen_t *len)` pair the way `getsockname(2)` and
/// `getsockopt(2)` do: copy at most `*len` bytes and write back the real length
/// (`report_full`) or the copied length.
pub(crate) fn write_with_len<K: Kernel + ?Sized>(
    k: &K,
    pid: u32,
    buf: u64,
    len_ptr: u64,
    value: &[u8],
    report_full: bool,
) -> Result<(), Errno> {
    let n = value.len().min(len_capacity(k, pid, len_ptr)?);
    if n > 0 {
        k.write_memory(pid, buf, &value[..n])?;
    }
    let reported = if report_full { value.len() } else { n };
    k.write_memory(pid, len_ptr, &(reported as u32).to_ne_bytes())
}
