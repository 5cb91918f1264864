//! A TCP connection's two buffers in one anonymous mapping of their own, so that the pages
//! an idle connection touched can be given back ([`Rings::release_rx`]).
//!
//! From the allocator (1 MiB each, so each its own mapping) a buffer shared its first
//! page with the allocator's header: that page was resident from the start and the first
//! 4,080 bytes of data landed in it, so every connection that had carried one request held
//! two pages on each side (8 KiB of the 11.5 KiB a held connection cost, BENCHMARKS.md)
//! and nothing could return them. Here each buffer starts on a page of its own, untouched
//! until data arrives, and `madvise(MADV_DONTNEED)` returns them once the connection is
//! idle with nothing in them (core.rs, the trim pass).
//!
//! A mapping outlives its connection in a small pool of spare ones ([`SPARE_MAX`]), its
//! pages given back first: a short connection otherwise cost an `mmap`, an `madvise` and
//! an `munmap` (whose TLB shootdown interrupts every CPU the process ran on), some 6 % of
//! `ztrun`'s CPU when programs open connections in a loop (BENCHMARKS.md).
//!
//! smoltcp borrows the two slices for `'static`. That is true only while the [`Rings`]
//! lives: the owner (the connection entry, `Conn`) must outlive the smoltcp socket that
//! borrows them. `Core::remove_conn` removes the socket before the entry, and `Core`
//! drops its shards (with their sockets) before its entries.

#![allow(unsafe_code)]

use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::Mutex;

/// The page size the mapping is laid out in (the smallest Linux uses; `madvise` needs
/// page-aligned ranges, and a larger real page only makes a release cover less).
const PAGE: usize = 4096;

fn pages(n: usize) -> usize {
    n.div_ceil(PAGE) * PAGE
}

/// Spare mappings kept at most, process-wide. Each holds no resident page, only its
/// address range (2 MiB with the default buffers).
const SPARE_MAX: usize = 16;

/// Spare mappings as `(address, length)`: every page given back (they read as zeros),
/// transparent huge pages off.
static SPARE: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

fn spare() -> std::sync::MutexGuard<'static, Vec<(usize, usize)>> {
    SPARE.lock().unwrap_or_else(|e| e.into_inner())
}

/// One mapping: the receive buffer at its start, the send buffer on the next page boundary.
#[derive(Debug)]
pub(crate) struct Rings {
    base: NonNull<u8>,
    rx: usize,
    tx: usize,
    /// Every page was given back since the buffers were last written
    /// ([`Rings::release_all`]).
    released: Cell<bool>,
}

// SAFETY: `Rings` only holds the address and sizes of a mapping; it reads or writes no
// memory through them (the smoltcp socket does, under the stack's lock).
unsafe impl Send for Rings {}

impl Rings {
    /// Map `rx` + `tx` bytes (each rounded up to whole pages), returning the mapping and
    /// the two buffers. `None` if the kernel refuses the mapping (the caller then uses
    /// ordinary allocations, which cannot be released while the connection lives).
    pub(crate) fn map(
        rx: usize,
        tx: usize,
    ) -> Option<(Rings, &'static mut [u8], &'static mut [u8])> {
        let len = pages(rx).checked_add(pages(tx))?;
        let reused = {
            let mut spare = spare();
            let found = spare.iter().position(|&(_, l)| l == len);
            found.map(|i| spare.swap_remove(i).0)
        };
        let base = match reused {
            Some(addr) => NonNull::new(addr as *mut u8)?,
            None => Self::map_new(len)?,
        };
        // SAFETY: the two ranges lie inside the `len` bytes of a mapping that is readable
        // and writable (fresh, or spare: zero-filled either way) and ours alone (a spare
        // one left the pool above), do not overlap, and stay mapped until `Rings` drops,
        // which its owner lets happen only after the socket borrowing them is gone
        // (module docs).
        let (rx_buf, tx_buf) = unsafe {
            (
                std::slice::from_raw_parts_mut(base.as_ptr(), rx),
                std::slice::from_raw_parts_mut(base.as_ptr().add(pages(rx)), tx),
            )
        };
        let rings = Rings {
            base,
            rx,
            tx,
            released: Cell::new(false),
        };
        Some((rings, rx_buf, tx_buf))
    }

    /// A new mapping of `len` bytes, never backed by transparent huge pages.
    fn map_new(len: usize) -> Option<NonNull<u8>> {
        // SAFETY: a new private anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        let base = NonNull::new(p.cast::<u8>())?;
        // Never a transparent huge page: the kernel aligns mappings of 2 MiB and more on
        // a huge page boundary, and where THP is "always" (the default of several
        // distributions) the first byte written would fault in, zero and keep resident a
        // whole 2 MiB page per connection, which no release of 4 KiB pages returns.
        // Refused only by kernels built without THP, which cannot do that anyway.
        // SAFETY: advice on the mapping just made; it changes no byte of it.
        unsafe { libc::madvise(p, len, libc::MADV_NOHUGEPAGE) };
        Some(base)
    }

    /// Give the receive buffer's pages back: they read as zeros afterwards. Only when the
    /// buffer holds nothing the socket will read again (no queued data, no out-of-order
    /// segment waiting for a gap to fill).
    pub(crate) fn release_rx(&self) {
        self.release(0, pages(self.rx));
    }

    /// Give the send buffer's pages back. Only when it holds no unacknowledged data.
    pub(crate) fn release_tx(&self) {
        self.release(pages(self.rx), pages(self.tx));
    }

    /// Give both buffers' pages back at once: the connection will neither send nor read
    /// again (it waits in TIME-WAIT with no owner).
    pub(crate) fn release_all(&self) {
        if self.release(0, self.len()) {
            self.released.set(true);
        }
    }

    fn len(&self) -> usize {
        pages(self.rx) + pages(self.tx)
    }

    /// Returns whether the pages were given back.
    fn release(&self, at: usize, len: usize) -> bool {
        // SAFETY: a page-aligned range inside our own mapping. MADV_DONTNEED replaces its
        // pages with zero-filled ones on next touch; the callers promise the bytes there
        // are not needed, and nothing else lives in the mapping.
        let r =
            unsafe { libc::madvise(self.base.as_ptr().add(at).cast(), len, libc::MADV_DONTNEED) };
        if r != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "madvise of an idle connection's buffer"
            );
        }
        r == 0
    }
}

impl Drop for Rings {
    fn drop(&mut self) {
        // The socket that borrowed the buffers is gone (module docs): the mapping is
        // ours to give back or to keep, once none of its pages is resident.
        if !self.released.get() {
            self.release_all();
        }
        if self.released.get() {
            let mut spare = spare();
            if spare.len() < SPARE_MAX {
                spare.push((self.base.as_ptr() as usize, self.len()));
                return;
            }
        }
        // SAFETY: unmaps exactly the mapping made in `map`, which nothing borrows now.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_page_aligned_and_released_pages_read_as_zero() {
        let (rings, rx, tx) = Rings::map(10_000, 5_000).expect("mapping");
        assert_eq!((rx.len(), tx.len()), (10_000, 5_000));
        assert_eq!(rx.as_ptr() as usize % PAGE, 0);
        assert_eq!(tx.as_ptr() as usize % PAGE, 0);
        rx.fill(7);
        tx.fill(9);
        rings.release_rx();
        assert!(rx.iter().all(|&b| b == 0), "released receive buffer");
        assert!(tx.iter().all(|&b| b == 9), "the send buffer is untouched");
        rings.release_tx();
        assert!(tx.iter().all(|&b| b == 0), "released send buffer");
        drop(rings);
    }

    #[test]
    fn a_dropped_mapping_is_reused_with_its_pages_given_back() {
        // A size no other test maps, so the pool's entry is this test's.
        let (rx_len, tx_len) = (3 * PAGE + 11, 5 * PAGE + 7);
        let (rings, rx, tx) = Rings::map(rx_len, tx_len).expect("mapping");
        let first = rx.as_ptr() as usize;
        rx.fill(7);
        tx.fill(9);
        drop(rings);
        let (again, rx, tx) = Rings::map(rx_len, tx_len).expect("mapping");
        assert_eq!(rx.as_ptr() as usize, first, "the spare mapping was taken");
        assert!(
            rx.iter().all(|&b| b == 0),
            "a reused receive buffer reads as zeros"
        );
        assert!(
            tx.iter().all(|&b| b == 0),
            "a reused send buffer reads as zeros"
        );
        drop(again);
    }

    #[test]
    fn the_mapping_never_becomes_a_huge_page() {
        // Large enough for the kernel to align it on a huge page boundary.
        let (rings, rx, _tx) = Rings::map(1 << 20, 1 << 20).expect("mapping");
        let start = rx.as_ptr() as usize;
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let mut lines = smaps.lines();
        // The VMA holding it (an adjacent mapping with the same flags may have merged).
        let vma = lines
            .by_ref()
            .find(|l| {
                let range = l.split_whitespace().next().unwrap_or("");
                let mut ends = range
                    .split('-')
                    .map(|a| usize::from_str_radix(a, 16).unwrap_or(0));
                matches!((ends.next(), ends.next()), (Some(a), Some(b)) if a <= start && start < b)
            })
            .expect("the mapping is listed");
        let flags = lines
            .find(|l| l.starts_with("VmFlags:"))
            .expect("VmFlags line");
        assert!(
            flags.split_whitespace().any(|f| f == "nh"),
            "{vma}: {flags} lacks nh (MADV_NOHUGEPAGE)"
        );
        drop(rings);
    }
}
