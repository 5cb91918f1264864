//! Copying bytes both ways between a program's socket and its virtual connection, with
//! buffers that grow for bulk transfers.
//!
//! `tokio::io::copy_bidirectional` moves at most 8 KiB per read, so a bulk transfer costs
//! a `recv` or `send` on the program's socket, and a stack poll, for every 8 KiB. A fixed
//! larger buffer would cost every idle connection that memory. Here each direction reads
//! [`FIRST`] bytes at first and doubles, up to [`LARGEST`], whenever a read fills it: a
//! request/response connection keeps its small reads, a bulk flow soon moves 128 KiB per
//! system call.
//!
//! An idle direction holds no buffer. A read lands in a per-thread scratch buffer and is
//! written on at once; only bytes the writer cannot take yet are kept, in a buffer of the
//! direction's own, which is freed when the reader has nothing more and nothing waits to
//! be written. 10,000 idle connections held two 8 KiB buffers each before (16 KiB of
//! `ztrun` memory per connection).
//!
//! Semantics follow tokio's: when one direction reads end-of-file, its writer is shut down
//! and the other direction goes on; the first error from either direction ends both, and
//! so does a reset of the network side after it sent its end of file ([`SendClosed`]).

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Initial buffer of each direction.
pub(crate) const FIRST: usize = 8 * 1024;
/// Largest buffer of each direction.
pub(crate) const LARGEST: usize = 128 * 1024;
/// Buffers filled and drained per direction before the task yields to others.
const TURNS_PER_POLL: usize = 16;

thread_local! {
    /// Where a direction without a buffer of its own reads.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One direction: bytes read but not yet written are `buf[pos..end]`; `buf` is empty
/// (unallocated) while nothing waits.
#[derive(Debug)]
struct Half {
    buf: Vec<u8>,
    /// How much the next read asks for.
    size: usize,
    pos: usize,
    end: usize,
    read_done: bool,
    /// Written since the last flush.
    unflushed: bool,
    moved: u64,
    done: bool,
}

impl Half {
    fn new() -> Self {
        Half {
            buf: Vec::new(),
            size: FIRST,
            pos: 0,
            end: 0,
            read_done: false,
            unflushed: false,
            moved: 0,
            done: false,
        }
    }

    /// Read into this thread's scratch buffer and write on at once; what `w` does not take
    /// now is kept in `self.buf` (`pos..end`). `Ready(Ok(n))`: `n` bytes read.
    fn read_through_scratch<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
    ) -> Poll<io::Result<usize>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        SCRATCH.with(|scratch| {
            // Not re-entered (no reader or writer here copies), but never panic on it.
            let Ok(mut scratch) = scratch.try_borrow_mut() else {
                self.buf = vec![0; self.size];
                let mut rb = ReadBuf::new(&mut self.buf);
                return Pin::new(&mut *r).poll_read(cx, &mut rb).map_ok(|()| {
                    let n = rb.filled().len();
                    (self.pos, self.end) = (0, n);
                    n
                });
            };
            if scratch.len() < LARGEST {
                scratch.resize(LARGEST, 0);
            }
            let mut rb = ReadBuf::new(&mut scratch[..self.size]);
            ready!(Pin::new(&mut *r).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            let mut written = 0;
            while written < n {
                match Pin::new(&mut *w).poll_write(cx, &scratch[written..n]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    Poll::Ready(Ok(k)) => {
                        written += k;
                        self.moved += k as u64;
                        self.unflushed = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                }
            }
            if written < n {
                // The rest waits in a buffer of this direction's own.
                let mut buf = vec![0; self.size.max(n - written)];
                buf[..n - written].copy_from_slice(&scratch[written..n]);
                self.buf = buf;
                (self.pos, self.end) = (0, n - written);
            }
            Poll::Ready(Ok(n))
        })
    }

    /// Move bytes from `r` to `w`; `Ready(Ok(()))` once `r` ended and `w` is shut down.
    fn poll<R, W>(&mut self, cx: &mut Context<'_>, r: &mut R, w: &mut W) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        for _ in 0..TURNS_PER_POLL {
            if self.pos == self.end && !self.read_done {
                let read = if self.buf.is_empty() {
                    self.read_through_scratch(cx, r, w)
                } else {
                    let mut rb = ReadBuf::new(&mut self.buf[..self.size]);
                    Pin::new(&mut *r)
                        .poll_read(cx, &mut rb)
                        .map_ok(|()| rb.filled().len())
                        .map_ok(|n| {
                            (self.pos, self.end) = (0, n);
                            n
                        })
                };
                match read {
                    Poll::Pending => {
                        if self.unflushed {
                            ready!(Pin::new(&mut *w).poll_flush(cx))?;
                            self.unflushed = false;
                        }
                        if self.pos == self.end {
                            // Idle: nothing read waits to be written.
                            self.buf = Vec::new();
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(0)) => self.read_done = true,
                    Poll::Ready(Ok(n)) => {
                        if n == self.size && self.size < LARGEST {
                            // A full read: the other side has more. Read more next time.
                            self.size = (self.size * 2).min(LARGEST);
                            if !self.buf.is_empty() {
                                self.buf.resize(self.size, 0);
                            }
                        }
                    }
                }
            }
            while self.pos < self.end {
                let n = ready!(Pin::new(&mut *w).poll_write(cx, &self.buf[self.pos..self.end]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.moved += n as u64;
                self.unflushed = true;
            }
            if self.read_done {
                ready!(Pin::new(&mut *w).poll_flush(cx))?;
                ready!(Pin::new(&mut *w).poll_shutdown(cx))?;
                return Poll::Ready(Ok(()));
            }
        }
        // Plenty moved in one go: let other tasks run, then go on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// A stream that can tell, without being read, that it can no longer send.
pub(crate) trait SendClosed {
    /// Ready once sending can only fail (a reset from the network); registers `cx`
    /// otherwise.
    fn poll_send_closed(&mut self, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

/// Copy `a` to `b` and `b` to `a` until both directions have ended; returns the bytes
/// moved each way (`a` to `b`, `b` to `a`). Once `b` has ended its direction, a `b`
/// that can no longer send (reset) ends both with `BrokenPipe`.
pub(crate) async fn bidirectional<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + SendClosed + Unpin + ?Sized,
{
    let mut up = Half::new();
    let mut down = Half::new();
    poll_fn(|cx| {
        if !up.done {
            if let Poll::Ready(r) = up.poll(cx, a, b) {
                r?;
                up.done = true;
            }
        }
        if !down.done {
            if let Poll::Ready(r) = down.poll(cx, b, a) {
                r?;
                down.done = true;
            }
        }
        if down.done && !up.read_done && b.poll_send_closed(cx).is_ready() {
            // `b` finished sending to `a` (its FIN) and then could no longer send (its
            // reset): Linux fails the next write with EPIPE rather than accept it.
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if up.done && down.done {
            Poll::Ready(Ok((up.moved, down.moved)))
        } else {
            Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
impl SendClosed for tokio::io::DuplexStream {}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Both directions carry everything, in order, while each side writes and reads
    /// concurrently; ends propagate as shutdowns.
    #[tokio::test]
    async fn both_directions_arrive_whole_and_ends_propagate() {
        let (mut left, mut mid_a) = tokio::io::duplex(64 * 1024);
        let (mut mid_b, mut right) = tokio::io::duplex(64 * 1024);
        let pump = tokio::spawn(async move { bidirectional(&mut mid_a, &mut mid_b).await });
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let small = b"a short answer".to_vec();
        let (l, r) = tokio::join!(
            async {
                left.write_all(&big).await.unwrap();
                left.shutdown().await.unwrap();
                let mut got = Vec::new();
                left.read_to_end(&mut got).await.unwrap();
                got
            },
            async {
                let mut got = Vec::new();
                right.read_to_end(&mut got).await.unwrap();
                right.write_all(&small).await.unwrap();
                right.shutdown().await.unwrap();
                got
            }
        );
        assert_eq!(r, big);
        assert_eq!(l, small);
        let (up, down) = pump.await.unwrap().unwrap();
        assert_eq!((up, down), (big.len() as u64, small.len() as u64));
    }

    /// A buffer grows only while reads fill it.
    #[tokio::test]
    async fn buffers_grow_with_full_reads_only() {
        let mut h = Half::new();
        let (mut src, mut src_end) = tokio::io::duplex(1 << 20);
        let (mut dst, mut dst_end) = tokio::io::duplex(1 << 20);
        src_end.write_all(&[1u8; 100]).await.unwrap();
        poll_fn(|cx| {
            let _ = h.poll(cx, &mut src, &mut dst);
            Poll::Ready(())
        })
        .await;
        assert_eq!(h.size, FIRST, "a short read keeps the read size");
        assert!(h.buf.is_empty(), "an idle direction holds no buffer");
        src_end.write_all(&vec![2u8; 600 * 1024]).await.unwrap();
        poll_fn(|cx| {
            let _ = h.poll(cx, &mut src, &mut dst);
            Poll::Ready(())
        })
        .await;
        assert_eq!(h.size, LARGEST, "full reads grow it to the cap");
        let mut got = vec![0u8; 100];
        dst_end.read_exact(&mut got).await.unwrap();
        assert_eq!(got, vec![1u8; 100]);
    }

    /// An error in one direction ends the copy with that error.
    #[tokio::test]
    async fn an_error_ends_both_directions() {
        struct Broken;
        impl AsyncRead for Broken {
            fn poll_read(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                _: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()))
            }
        }
        impl AsyncWrite for Broken {
            fn poll_write(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                b: &[u8],
            ) -> Poll<io::Result<usize>> {
                Poll::Ready(Ok(b.len()))
            }
            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
            fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
        }
        let (mut other, _keep) = tokio::io::duplex(1024);
        let e = bidirectional(&mut Broken, &mut other).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    }
}
