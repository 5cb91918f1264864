//! TCP: connect, listen with a real accept queue, and streams with tokio `AsyncRead` /
//! `AsyncWrite`.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use crate::config::unmap;
use crate::core::{from_smol, to_smol, Conn, Key, Listener, Role, Shared};
use crate::ring::Rings;
use crate::trim::Trim;
use crate::Error;

/// Delayed-ACK timer (real time), as Linux's minimum `ato`.
const ACK_DELAY: Duration = Duration::from_millis(10);

/// Smallest and largest socket buffer accepted (larger requests are clamped).
const MIN_BUFFER: usize = 4 * 1024;
const MAX_BUFFER: usize = 64 * 1024 * 1024;

/// Options for a TCP connection, given at creation ([`crate::Stack::tcp_connect`], or
/// [`TcpListener::set_accept_options`] for accepted connections).
///
/// Buffer sizes are fixed when the socket is created: smoltcp cannot resize a socket's
/// buffers, and the window scale is chosen from the receive buffer in the SYN. The
/// supervisor should pass `SO_RCVBUF`/`SO_SNDBUF` values set before `connect`/`listen` here;
/// later changes can only be reported, as Linux also keeps the window scale of the SYN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpOptions {
    /// Disable Nagle's algorithm (`TCP_NODELAY`). Default false.
    pub nodelay: bool,
    /// Send keepalive probes after this much idle time (`SO_KEEPALIVE` with
    /// `TCP_KEEPIDLE`). Default `None` (off).
    pub keepalive: Option<Duration>,
    /// Receive buffer in bytes; also bounds the advertised window (scaled, RFC 7323).
    /// Default 1 MiB, clamped to 4 KiB..64 MiB.
    pub recv_buffer: usize,
    /// Send buffer in bytes. Default 1 MiB, clamped to 4 KiB..64 MiB.
    pub send_buffer: usize,
    /// Give up a connect after this long without a SYN-ACK ([`Error::TimedOut`]).
    /// Default 127 s (Linux with `tcp_syn_retries` = 6).
    pub connect_timeout: Duration,
    /// Abort an established connection when sent data stays unacknowledged this long
    /// (`TCP_USER_TIMEOUT`); reads and writes then fail with [`Error::TimedOut`].
    /// Default 15 minutes (about Linux's `tcp_retries2`).
    pub user_timeout: Option<Duration>,
    /// Congestion control (`TCP_CONGESTION`). Default [`Congestion::Cubic`].
    pub congestion: Congestion,
}

/// A congestion control algorithm (smoltcp's implementations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Congestion {
    /// CUBIC (RFC 9438), Linux's default.
    Cubic,
    /// NewReno-style (RFC 5681).
    Reno,
    /// None: send up to the peer's window. Only for links known not to congest (the
    /// in-memory test link); on a real network it is unfair and collapses under
    /// congestion.
    None,
}

impl Default for TcpOptions {
    fn default() -> Self {
        TcpOptions {
            nodelay: false,
            keepalive: None,
            recv_buffer: 1024 * 1024,
            send_buffer: 1024 * 1024,
            connect_timeout: Duration::from_secs(127),
            user_timeout: Some(Duration::from_secs(900)),
            congestion: Congestion::Cubic,
        }
    }
}

/// A socket for `opts`, with its buffers in a mapping of their own when the kernel gives
/// one ([`Rings`]; the connection entry must own it, and outlive the socket).
pub(crate) fn new_socket(opts: &TcpOptions) -> (tcp::Socket<'static>, Option<Rings>) {
    let rx = opts.recv_buffer.clamp(MIN_BUFFER, MAX_BUFFER);
    let tx = opts.send_buffer.clamp(MIN_BUFFER, MAX_BUFFER);
    let (rings, rx_buf, tx_buf) = match Rings::map(rx, tx) {
        Some((rings, r, t)) => (
            Some(rings),
            tcp::SocketBuffer::new(r),
            tcp::SocketBuffer::new(t),
        ),
        // `vec![0; n]` is calloc: pages of an idle connection's buffers are not touched.
        None => (
            None,
            tcp::SocketBuffer::new(vec![0u8; rx]),
            tcp::SocketBuffer::new(vec![0u8; tx]),
        ),
    };
    let mut s = tcp::Socket::new(rx_buf, tx_buf);
    s.set_nagle_enabled(!opts.nodelay);
    s.set_keep_alive(opts.keepalive.map(to_smol));
    s.set_timeout(Some(to_smol(opts.connect_timeout)));
    s.set_ack_delay(Some(to_smol(ACK_DELAY)));
    s.set_congestion_control(match opts.congestion {
        Congestion::Cubic => tcp::CongestionControl::Cubic,
        Congestion::Reno => tcp::CongestionControl::Reno,
        Congestion::None => tcp::CongestionControl::None,
    });
    (s, rings)
}

/// Switch a socket from handshake to established settings.
pub(crate) fn apply_established(s: &mut tcp::Socket<'static>, opts: &TcpOptions) {
    s.set_timeout(opts.user_timeout.map(to_smol));
}

/// State of a TCP connection (RFC 9293 section 3.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    /// No connection.
    Closed,
    /// Waiting for a SYN.
    Listen,
    /// SYN sent, waiting for SYN-ACK.
    SynSent,
    /// SYN received and answered.
    SynReceived,
    /// Open in both directions.
    Established,
    /// We sent FIN, not yet acknowledged.
    FinWait1,
    /// Our FIN was acknowledged; the peer may still send.
    FinWait2,
    /// The peer sent FIN; we may still send.
    CloseWait,
    /// Both sent FIN simultaneously.
    Closing,
    /// The peer closed first, our FIN is unacknowledged.
    LastAck,
    /// Both closed; waiting out old segments.
    TimeWait,
}

impl TcpState {
    /// The value Linux reports in `tcpi_state` (`TCP_ESTABLISHED` = 1 ... `TCP_CLOSING` = 11).
    pub fn linux_code(self) -> u8 {
        match self {
            TcpState::Established => 1,
            TcpState::SynSent => 2,
            TcpState::SynReceived => 3,
            TcpState::FinWait1 => 4,
            TcpState::FinWait2 => 5,
            TcpState::TimeWait => 6,
            TcpState::Closed => 7,
            TcpState::CloseWait => 8,
            TcpState::LastAck => 9,
            TcpState::Listen => 10,
            TcpState::Closing => 11,
        }
    }
}

impl From<tcp::State> for TcpState {
    fn from(s: tcp::State) -> Self {
        match s {
            tcp::State::Closed => TcpState::Closed,
            tcp::State::Listen => TcpState::Listen,
            tcp::State::SynSent => TcpState::SynSent,
            tcp::State::SynReceived => TcpState::SynReceived,
            tcp::State::Established => TcpState::Established,
            tcp::State::FinWait1 => TcpState::FinWait1,
            tcp::State::FinWait2 => TcpState::FinWait2,
            tcp::State::CloseWait => TcpState::CloseWait,
            tcp::State::Closing => TcpState::Closing,
            tcp::State::LastAck => TcpState::LastAck,
            tcp::State::TimeWait => TcpState::TimeWait,
        }
    }
}

/// A snapshot of a connection, for `getsockopt(TCP_INFO)` and friends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpInfo {
    /// Current state.
    pub state: TcpState,
    /// Round-trip time of the handshake as we measured it (smoltcp keeps its running
    /// estimate private); `None` before the handshake completes.
    pub rtt: Option<Duration>,
    /// Bytes written but not yet acknowledged by the peer.
    pub send_queue: usize,
    /// Bytes received and not yet read.
    pub recv_queue: usize,
    /// Capacity of the send buffer.
    pub send_buffer: usize,
    /// Capacity of the receive buffer.
    pub recv_buffer: usize,
    /// `TCP_NODELAY` is set.
    pub nodelay: bool,
    /// Keepalive idle interval, if on.
    pub keepalive: Option<Duration>,
    /// The largest segment the connection sends (Linux's `mss_cache`, what `TCP_MAXSEG`
    /// reports): `None` until the peer's SYN has been seen.
    pub mss: Option<u16>,
}

#[derive(Debug)]
struct StreamInner {
    shared: Arc<Shared>,
    key: Key,
    shard: u32,
    handle: SocketHandle,
}

impl Drop for StreamInner {
    fn drop(&mut self) {
        let mut core = self.shared.lock();
        let Some(c) = core.tcp.get_mut(&self.key) else {
            return;
        };
        if c.role != Role::Owned {
            return; // handed back to a listener's queue
        }
        c.role = Role::Orphan;
        c.started = std::time::Instant::now();
        c.write_closed = true;
        let aborted = c.aborted;
        let sock = core.socket(self.shard, self.handle);
        if sock.state() == tcp::State::Closed {
            core.remove_conn(&self.key);
            return;
        }
        if !aborted {
            // Graceful close: FIN after the queued data, like close(2) on a kernel socket.
            // Keepalive probes bound how long an orphan can wait for the peer's FIN (Linux
            // `tcp_fin_timeout`): they wake its shard, where `settle` ends it.
            sock.set_keep_alive(Some(to_smol(crate::core::FIN_TIMEOUT)));
            core.close_write(self.shard, self.key);
        }
        // Orphans are watched until they end (a pending close is finished there too).
        core.watch(self.shard, self.key);
        core.poll_shard(self.shard);
        self.shared.after_inline(&mut core);
    }
}

/// An established TCP connection.
///
/// Implements tokio's [`AsyncRead`] and [`AsyncWrite`] (also for `&TcpStream`, so one task
/// can read while another writes; one reader and one writer at a time, as each direction
/// keeps a single waker). Clones share the connection like `dup(2)`: it closes
/// gracefully (FIN after queued data) when the last clone is dropped, unless
/// [`TcpStream::abort`]ed. Reads return 0 (EOF) after the peer's FIN; after the peer's RST
/// they fail with `ECONNRESET` (`io::Error::raw_os_error`), after a timeout with
/// `ETIMEDOUT`. Writes after [`AsyncWriteExt::shutdown`](tokio::io::AsyncWriteExt) fail
/// with `EPIPE`.
#[derive(Debug, Clone)]
pub struct TcpStream {
    inner: Arc<StreamInner>,
}

impl TcpStream {
    fn new(shared: Arc<Shared>, key: Key, shard: u32, handle: SocketHandle) -> Self {
        TcpStream {
            inner: Arc::new(StreamInner {
                shared,
                key,
                shard,
                handle,
            }),
        }
    }

    /// Our address of the connection.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.key.0
    }

    /// The peer's address. For a connection accepted by a dual-stack IPv6 listener from an
    /// IPv4 client this is the plain IPv4 address; the supervisor shows it as
    /// `::ffff:a.b.c.d` to an `AF_INET6` socket.
    pub fn peer_addr(&self) -> SocketAddr {
        self.inner.key.1
    }

    fn with<R>(&self, f: impl FnOnce(&mut tcp::Socket<'static>, &mut Conn) -> R) -> R {
        let mut core = self.inner.shared.lock();
        let (s, c) = core.socket_and_conn(self.inner.shard, self.inner.handle, &self.inner.key);
        f(s, c)
    }

    /// Set `TCP_NODELAY` (disable Nagle's algorithm).
    pub fn set_nodelay(&self, on: bool) {
        self.with(|s, _| s.set_nagle_enabled(!on));
        self.kick();
    }

    /// Is `TCP_NODELAY` set?
    pub fn nodelay(&self) -> bool {
        self.with(|s, _| !s.nagle_enabled())
    }

    /// Turn keepalive probes on (after `idle`) or off.
    pub fn set_keepalive(&self, idle: Option<Duration>) {
        self.with(|s, _| s.set_keep_alive(idle.map(to_smol)));
        self.kick();
    }

    /// Set `TCP_USER_TIMEOUT` (see [`TcpOptions::user_timeout`]).
    pub fn set_user_timeout(&self, t: Option<Duration>) {
        self.with(|s, _| s.set_timeout(t.map(to_smol)));
        self.kick();
    }

    /// [`TcpStream::set_nodelay`], [`TcpStream::set_keepalive`] and
    /// [`TcpStream::set_user_timeout`] together, with one poll of the stack.
    pub fn set_tuning(
        &self,
        nodelay_on: bool,
        keepalive_idle: Option<Duration>,
        timeout: Option<Duration>,
    ) {
        self.with(|s, _| {
            s.set_nagle_enabled(!nodelay_on);
            s.set_keep_alive(keepalive_idle.map(to_smol));
            s.set_timeout(timeout.map(to_smol));
        });
        self.kick();
    }

    /// Capacity of the receive buffer (fixed at creation, see [`TcpOptions`]).
    pub fn recv_buffer_size(&self) -> usize {
        self.with(|s, _| s.recv_capacity())
    }

    /// Capacity of the send buffer (fixed at creation, see [`TcpOptions`]).
    pub fn send_buffer_size(&self) -> usize {
        self.with(|s, _| s.send_capacity())
    }

    /// Bytes ready to read now (`FIONREAD`).
    pub fn bytes_readable(&self) -> usize {
        self.with(|s, _| s.recv_queue())
    }

    /// Reset the connection (RST), as `close` with `SO_LINGER` 0 does. Queued data is
    /// discarded; further reads and writes fail with `ECONNABORTED`.
    pub fn abort(&self) {
        self.with(|s, c| {
            s.abort();
            c.aborted = true;
        });
        self.kick();
    }

    /// Shut down sending (FIN after queued data): `shutdown(SHUT_WR)`. Reading continues.
    pub fn shutdown_write(&self) {
        {
            let mut core = self.inner.shared.lock();
            let Some(c) = core.tcp.get_mut(&self.inner.key) else {
                return;
            };
            if !c.write_closed {
                c.write_closed = true;
                if core.close_write(self.inner.shard, self.inner.key) {
                    core.watch(self.inner.shard, self.inner.key);
                }
            }
        }
        self.kick();
    }

    /// A snapshot of the connection's state.
    pub fn tcp_info(&self) -> TcpInfo {
        self.with(|s, c| info(s, c))
    }

    /// The IP MTU of the network the connection runs on: what Linux's `IP_MTU` reports
    /// on a connected socket (the route's MTU, whatever the peer announced).
    pub fn path_mtu(&self) -> usize {
        self.inner.shared.net.mtu
    }

    /// Poll the shard now so a change goes on the wire without waiting for the driver.
    fn kick(&self) {
        let mut core = self.inner.shared.lock();
        core.poll_shard(self.inner.shard);
        self.inner.shared.after_inline(&mut core);
    }

    fn closed_error(state: tcp::State, c: &Conn, writing: bool) -> Option<Error> {
        if c.aborted {
            return Some(Error::ConnectionAborted);
        }
        if state == tcp::State::Closed {
            if c.rst_seen {
                return Some(Error::ConnectionReset);
            }
            if !c.write_closed {
                return Some(Error::TimedOut);
            }
        }
        if writing {
            Some(Error::BrokenPipe)
        } else {
            None
        }
    }

    /// Poll form of reading into `buf`; `Ready(Ok(0))` is end of stream.
    pub fn poll_read_slice(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<Result<usize, Error>> {
        let mut core = self.inner.shared.lock();
        let (shard, h) = (self.inner.shard, self.inner.handle);
        let (s, c) = core.socket_and_conn(shard, h, &self.inner.key);
        if s.can_recv() {
            let n = s.recv_slice(buf).unwrap_or(0);
            c.trim.read(n);
            core.poll_shard(shard);
            self.inner.shared.after_inline(&mut core);
            return Poll::Ready(Ok(n));
        }
        if !s.may_recv() {
            let (s, c) = core.socket_and_conn(shard, h, &self.inner.key);
            return Poll::Ready(match Self::closed_error(s.state(), c, false) {
                Some(e) => Err(e),
                None => Ok(0),
            });
        }
        s.register_recv_waker(cx.waker());
        Poll::Pending
    }

    /// Poll form of writing `buf`; returns how much was queued.
    pub fn poll_write_slice(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, Error>> {
        let mut core = self.inner.shared.lock();
        let (shard, h) = (self.inner.shard, self.inner.handle);
        let (s, c) = core.socket_and_conn(shard, h, &self.inner.key);
        if !s.may_send() || c.aborted || c.write_closed {
            return Poll::Ready(Err(
                Self::closed_error(s.state(), c, true).unwrap_or(Error::BrokenPipe)
            ));
        }
        if s.can_send() {
            let n = s.send_slice(buf).unwrap_or(0);
            if n > 0 && c.trim.moved() {
                core.list_for_trim(self.inner.key);
            }
            core.poll_shard(shard);
            self.inner.shared.after_inline(&mut core);
            return Poll::Ready(Ok(n));
        }
        s.register_send_waker(cx.waker());
        Poll::Pending
    }

    /// Wait until reading would not block (data, EOF or error).
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut core = self.inner.shared.lock();
        let s = core.socket(self.inner.shard, self.inner.handle);
        if s.can_recv() || !s.may_recv() {
            return Poll::Ready(());
        }
        s.register_recv_waker(cx.waker());
        Poll::Pending
    }

    /// Wait until the connection can no longer send: reset or timed out by the network
    /// (or closed on our side). Lets a caller that has stopped reading (after the
    /// peer's FIN) learn of a reset before its next write.
    pub fn poll_send_closed(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut core = self.inner.shared.lock();
        let (shard, h) = (self.inner.shard, self.inner.handle);
        let (s, c) = core.socket_and_conn(shard, h, &self.inner.key);
        if !s.may_send() || c.aborted || c.write_closed {
            return Poll::Ready(());
        }
        s.register_send_waker(cx.waker());
        Poll::Pending
    }

    /// Wait until writing would not block (room, or an error to report).
    pub fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut core = self.inner.shared.lock();
        let s = core.socket(self.inner.shard, self.inner.handle);
        if s.can_send() || !s.may_send() {
            return Poll::Ready(());
        }
        s.register_send_waker(cx.waker());
        Poll::Pending
    }
}

fn io_err(e: Error) -> io::Error {
    e.into()
}

impl AsyncRead for &TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let dst = buf.initialize_unfilled();
        match self.poll_read_slice(cx, dst) {
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(io_err(e))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for &TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_slice(cx, buf).map_err(io_err)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written data is in the socket's buffer, as with a kernel socket.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shutdown_write();
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut r: &TcpStream = &self;
        Pin::new(&mut r).poll_read(cx, buf)
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut r: &TcpStream = &self;
        Pin::new(&mut r).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shutdown_write();
        Poll::Ready(Ok(()))
    }
}

/// Undo a connect that did not finish (the future was dropped).
struct ConnectGuard {
    shared: Arc<Shared>,
    key: Key,
    armed: bool,
}

impl Drop for ConnectGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut core = self.shared.lock();
        let Some(c) = core.tcp.get_mut(&self.key) else {
            return;
        };
        c.role = Role::Orphan;
        let (shard, h) = (c.shard, c.handle);
        core.socket(shard, h).abort();
        core.watch(shard, self.key);
        core.poll_shard(shard);
        self.shared.after_inline(&mut core);
    }
}

pub(crate) async fn connect(
    shared: &Arc<Shared>,
    local: Option<SocketAddr>,
    remote: SocketAddr,
    opts: TcpOptions,
) -> Result<TcpStream, Error> {
    let remote = SocketAddr::new(unmap(remote.ip()), remote.port());
    let net = &shared.net;
    if remote.port() == 0 || remote.ip().is_unspecified() || remote.ip().is_multicast() {
        return Err(Error::AddrNotAvailable { addr: remote.ip() });
    }
    if !net.is_local(remote.ip()) && net.next_hop(remote.ip()).is_none() {
        return Err(Error::NetworkUnreachable { addr: remote.ip() });
    }
    let local = local.map(|l| SocketAddr::new(unmap(l.ip()), l.port()));
    let local_ip = match local {
        Some(l) if !l.ip().is_unspecified() => {
            if l.ip().is_ipv4() != remote.ip().is_ipv4() {
                return Err(Error::AddressFamily { addr: remote.ip() });
            }
            if !net.is_local(l.ip()) {
                return Err(Error::AddrNotAvailable { addr: l.ip() });
            }
            l.ip()
        }
        _ => net
            .source_for(remote.ip())
            .ok_or(Error::NetworkUnreachable { addr: remote.ip() })?,
    };
    let key = {
        let mut core = shared.lock();
        let port = match local.map(|l| l.port()) {
            Some(p) if p != 0 => p,
            _ => core
                .ephemeral_port(false)
                .ok_or(Error::AddrNotAvailable { addr: local_ip })?,
        };
        let key = (SocketAddr::new(local_ip, port), remote);
        if core.tcp.contains_key(&key) {
            return Err(Error::AddrInUse { addr: key.0 });
        }
        let (sock, rings) = new_socket(&opts);
        let (shard, handle) = core.add_tcp(sock);
        core.tcp
            .insert(key, Box::new(conn(shard, handle, Role::Owned, rings)));
        let (s, cx) = core.socket_ctx(shard, handle);
        if s.connect(cx, remote, key.0).is_err() {
            core.remove_conn(&key);
            return Err(Error::AddrNotAvailable { addr: local_ip });
        }
        core.hold_port(port);
        core.poll_shard(shard);
        shared.after_inline(&mut core);
        key
    };
    let mut guard = ConnectGuard {
        shared: shared.clone(),
        key,
        armed: true,
    };
    poll_fn(|cx| {
        let mut core = shared.lock();
        let c = core.tcp.get(&key).expect("connecting entry");
        let (shard, h, rst) = (c.shard, c.handle, c.rst_seen);
        let (established_then_reset, unreachable) = (c.reset_established, c.unreachable);
        let s = core.socket(shard, h);
        match s.state() {
            tcp::State::SynSent | tcp::State::SynReceived => {
                s.register_send_waker(cx.waker());
                s.register_recv_waker(cx.waker());
                Poll::Pending
            }
            tcp::State::Closed | tcp::State::Listen if !established_then_reset => {
                Poll::Ready(Err(if rst {
                    Error::ConnectionRefused { remote }
                } else if unreachable {
                    Error::HostUnreachable { addr: remote.ip() }
                } else {
                    Error::TimedOut
                }))
            }
            _ => {
                apply_established(s, &opts);
                let c = core.tcp.get_mut(&key).expect("connecting entry");
                c.rtt = Some(c.started.elapsed());
                Poll::Ready(Ok(()))
            }
        }
    })
    .await
    .inspect_err(|_| {
        // The socket is closed already: free it now rather than via the guard.
        let mut core = shared.lock();
        core.remove_conn(&key);
    })?;
    guard.armed = false;
    let core = shared.lock();
    let c = core.tcp.get(&key).expect("connected entry");
    Ok(TcpStream::new(shared.clone(), key, c.shard, c.handle))
}

/// What [`TcpStream::tcp_info`] and [`crate::Stack::tcp_connections`] report.
pub(crate) fn info(s: &tcp::Socket<'static>, c: &Conn) -> TcpInfo {
    TcpInfo {
        state: s.state().into(),
        rtt: c.rtt,
        send_queue: s.send_queue(),
        recv_queue: s.recv_queue(),
        send_buffer: s.send_capacity(),
        recv_buffer: s.recv_capacity(),
        nodelay: !s.nagle_enabled(),
        keepalive: s.keep_alive().map(from_smol),
        mss: c.mss,
    }
}

fn conn(shard: u32, handle: SocketHandle, role: Role, rings: Option<Rings>) -> Conn {
    Conn {
        shard,
        handle,
        role,
        rst_seen: false,
        reset_established: false,
        unreachable: false,
        aborted: false,
        write_closed: false,
        close_pending: false,
        fin_seq: None,
        last_pure_ack: None,
        rtt: None,
        trim: Trim::new(rings),
        mss: None,
        started: std::time::Instant::now(),
    }
}

pub(crate) fn new_conn(shard: u32, handle: SocketHandle, lid: u64, rings: Option<Rings>) -> Conn {
    conn(shard, handle, Role::HalfOpen(lid), rings)
}

/// A listening TCP socket with an accept queue of up to `backlog` established
/// connections.
///
/// A SYN is answered only while fewer than `backlog` connections are queued or
/// half-open; otherwise it is dropped unanswered and the client retransmits it later, as
/// Linux does with a full accept queue. Dropping the listener stops answering SYNs (they
/// then get RST) and resets the connections still queued.
#[derive(Debug)]
pub struct TcpListener {
    shared: Arc<Shared>,
    id: u64,
    local: SocketAddr,
    pending: watch::Receiver<usize>,
}

pub(crate) fn listen(
    shared: &Arc<Shared>,
    local: SocketAddr,
    backlog: usize,
    v6only: bool,
) -> Result<TcpListener, Error> {
    let ip = unmap(local.ip());
    if !ip.is_unspecified() && !shared.net.is_local(ip) {
        return Err(Error::AddrNotAvailable { addr: ip });
    }
    let v6only = v6only && ip.is_ipv6();
    let mut core = shared.lock();
    let port = match local.port() {
        0 => core
            .ephemeral_port(false)
            .ok_or(Error::AddrNotAvailable { addr: ip })?,
        p => p,
    };
    let local = SocketAddr::new(ip, port);
    if core.listen_conflict(local, v6only) {
        return Err(Error::AddrInUse { addr: local });
    }
    let (tx, rx) = watch::channel(0);
    let id = core.add_listener(Listener {
        local,
        v6only,
        backlog: backlog.clamp(1, 65535),
        half_open: 0,
        ready: Default::default(),
        wakers: Vec::new(),
        pending: tx,
        opts: TcpOptions::default(),
    });
    Ok(TcpListener {
        shared: shared.clone(),
        id,
        local,
        pending: rx,
    })
}

impl TcpListener {
    /// The bound address (with the chosen port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Options given to connections accepted from now on (Linux inherits `SO_RCVBUF`,
    /// `TCP_NODELAY` and friends from the listener).
    pub fn set_accept_options(&self, opts: TcpOptions) {
        let mut core = self.shared.lock();
        if let Some(l) = core.listeners.get_mut(&self.id) {
            l.opts = opts;
        }
    }

    /// Change the backlog (a second `listen(2)` call).
    pub fn set_backlog(&self, backlog: usize) {
        let mut core = self.shared.lock();
        if let Some(l) = core.listeners.get_mut(&self.id) {
            l.backlog = backlog.clamp(1, 65535);
        }
    }

    /// Take the next established connection, waiting for one.
    pub async fn accept(&self) -> Result<TcpStream, Error> {
        poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// Poll form of [`TcpListener::accept`].
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<Result<TcpStream, Error>> {
        match self.take(Some(cx)) {
            Some(s) => Poll::Ready(Ok(s)),
            None => Poll::Pending,
        }
    }

    /// Take the next established connection if one waits, else [`Error::WouldBlock`].
    pub fn try_accept(&self) -> Result<TcpStream, Error> {
        self.take(None).ok_or(Error::WouldBlock)
    }

    fn take(&self, cx: Option<&mut Context<'_>>) -> Option<TcpStream> {
        let mut core = self.shared.lock();
        let l = core.listeners.get_mut(&self.id)?;
        let Some(key) = l.ready.pop_front() else {
            if let Some(cx) = cx {
                if !l.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    l.wakers.push(cx.waker().clone());
                }
            }
            return None;
        };
        l.pending.send_replace(l.ready.len());
        let c = core
            .tcp
            .get_mut(&key)
            .expect("queued connection has an entry");
        c.role = Role::Owned;
        let (shard, h) = (c.shard, c.handle);
        Some(TcpStream::new(self.shared.clone(), key, shard, h))
    }

    /// Put an accepted stream back at the head of the queue (for an `accept` whose
    /// caller vanished before it could be told). The stream must come from this listener
    /// and must not have been used or cloned.
    pub fn requeue(&self, stream: TcpStream) {
        let mut core = self.shared.lock();
        let key = stream.inner.key;
        let Some(l) = core.listeners.get_mut(&self.id) else {
            return;
        };
        l.ready.push_front(key);
        l.pending.send_replace(l.ready.len());
        l.wakers.drain(..).for_each(|w| w.wake());
        if let Some(c) = core.tcp.get_mut(&key) {
            c.role = Role::Ready(self.id);
        }
        drop(core);
        drop(stream);
    }

    /// Connections established and waiting to be accepted.
    pub fn pending(&self) -> usize {
        *self.pending.borrow()
    }

    /// A watch of [`TcpListener::pending`]: it changes whenever a connection is queued or
    /// taken, so the supervisor can keep exactly one token byte per waiting connection.
    pub fn pending_watch(&self) -> watch::Receiver<usize> {
        self.pending.clone()
    }

    /// Wait until the pending count differs from `seen`, and return it.
    pub async fn wait_pending_changed(&self, seen: usize) -> usize {
        let mut rx = self.pending.clone();
        let r = rx.wait_for(|n| *n != seen).await.map(|n| *n);
        r.unwrap_or(seen)
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        let mut core = self.shared.lock();
        core.remove_listener(self.id);
        let dirty: Vec<u32> = core.take_dirty();
        for s in dirty {
            core.poll_shard(s);
        }
        self.shared.after_inline(&mut core);
    }
}
