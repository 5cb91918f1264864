//! The connections of the controller's management API and what they may cost.
//!
//! The API listens on loopback, where every local user can connect, token or not. Before
//! a connection has shown the token it is a stranger's, so the listener bounds what it
//! can hold:
//!
//! - **Count.** At most [`MAX_CONNECTIONS`] are open at once, fewer when the descriptor
//!   limit leaves less room ([`capacity`]). A connection beyond that closes the oldest
//!   open connection that has not shown the token; when every open connection has shown
//!   it, the new one is closed instead ([`Connections`]).
//! - **Time.** A request head must arrive complete within [`HEADER_TIMEOUT`] of the
//!   connection opening or of the previous answer, so idle and trickling connections
//!   close then. A request body must arrive within [`BODY_TIMEOUT`].
//! - **Memory.** A connection buffers at most [`MAX_BUF`] (its request head must fit);
//!   a body is at most [`crate::api::MAX_BODY`].
//! - **Accept errors.** When `accept` fails for want of descriptors or memory (EMFILE,
//!   ENFILE, ENOBUFS, ENOMEM), the pending connection keeps the listener readable, so
//!   retrying at once spins a core without end. The listener closes the oldest
//!   connection without the token and waits [`ACCEPT_PAUSE`] first ([`pause_after`]).
//!
//! A flood of idle connections thus costs the controller at most [`MAX_CONNECTIONS`]
//! small connections, each for at most [`HEADER_TIMEOUT`], and the token holder's
//! connection, the newest, is served (`launcher/tests/api_flood.rs`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Connections open at once, at most.
pub const MAX_CONNECTIONS: usize = 512;
/// Time for a request head to arrive, from the connection's start or the previous answer.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a request body to arrive, once its head has.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection's read buffer, at most (hyper's minimum is 8 KiB).
pub const MAX_BUF: usize = 16 * 1024;
/// The wait after `accept` failed for want of a resource.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(50);
/// Descriptors kept free for the controller's own files (store, status, token).
const RESERVED_DESCRIPTORS: u64 = 64;
/// Connections allowed however low the descriptor limit.
const MIN_CONNECTIONS: usize = 8;

/// How many API connections fit in a descriptor limit of `nofile` with `in_use`
/// descriptors already open: [`MAX_CONNECTIONS`], or fewer so that
/// `RESERVED_DESCRIPTORS` stay free, never fewer than 8.
pub fn capacity(nofile: u64, in_use: usize) -> usize {
    let room = nofile.saturating_sub(in_use as u64 + RESERVED_DESCRIPTORS);
    usize::try_from(room)
        .unwrap_or(usize::MAX)
        .clamp(MIN_CONNECTIONS, MAX_CONNECTIONS)
}

/// How long to wait before the next `accept` after it failed with `e`: [`ACCEPT_PAUSE`]
/// when a resource ran out (or the error is not known to concern one connection only),
/// none when only that connection failed (it was reset or aborted before it was
/// accepted), see accept(2).
pub fn pause_after(e: &io::Error) -> Option<Duration> {
    use io::ErrorKind as K;
    match e.kind() {
        K::ConnectionAborted | K::ConnectionReset | K::Interrupted | K::WouldBlock => None,
        _ => match e.raw_os_error() {
            Some(libc::EPROTO | libc::EPERM | libc::ENETDOWN | libc::EHOSTUNREACH) => None,
            _ => Some(ACCEPT_PAUSE),
        },
    }
}

/// The open connections, oldest first, split by whether they have shown the token.
///
/// Each holds the sending half of its connection's shed signal: a connection is told to
/// close by dropping that half, which [`Connections::admit`] does to the oldest
/// connection without the token when the table is full.
#[derive(Debug)]
pub struct Connections {
    inner: Mutex<Table>,
}

#[derive(Debug)]
struct Table {
    capacity: usize,
    next: u64,
    strangers: BTreeMap<u64, oneshot::Sender<Infallible>>,
    token_holders: BTreeMap<u64, oneshot::Sender<Infallible>>,
}

/// A connection's place in [`Connections`]: its number, and the signal that it must close
/// (the receiver resolves when the table drops the connection's entry).
#[derive(Debug)]
pub struct Ticket {
    /// The connection's number (connections are numbered in the order they opened).
    pub id: u64,
    /// Resolves (with an error) when the connection is shed.
    pub shed: oneshot::Receiver<Infallible>,
}

impl Connections {
    /// An empty table for at most `capacity` connections (at least 1).
    pub fn new(capacity: usize) -> Self {
        Connections {
            inner: Mutex::new(Table {
                capacity: capacity.max(1),
                next: 0,
                strangers: BTreeMap::new(),
                token_holders: BTreeMap::new(),
            }),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // The table is consistent after every statement: a panic elsewhere leaves it usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes room for a new connection and enters it: when the table is full, the oldest
    /// connection that has not shown the token is shed. `None` when every open connection
    /// has shown it: the new connection must be closed.
    pub fn admit(&self) -> Option<Ticket> {
        let mut t = self.table();
        if t.strangers.len() + t.token_holders.len() >= t.capacity
            && t.strangers.pop_first().is_none()
        {
            return None;
        }
        let id = t.next;
        t.next += 1;
        let (tx, shed) = oneshot::channel();
        t.strangers.insert(id, tx);
        Some(Ticket { id, shed })
    }

    /// Connection `id` showed the token: it is no longer shed for newer connections.
    pub fn token_shown(&self, id: u64) {
        let mut t = self.table();
        if let Some(tx) = t.strangers.remove(&id) {
            t.token_holders.insert(id, tx);
        }
    }

    /// Sheds the oldest connection without the token; false when there is none.
    pub fn shed_oldest_stranger(&self) -> bool {
        self.table().strangers.pop_first().is_some()
    }

    /// Connection `id` closed.
    pub fn remove(&self, id: u64) {
        let mut t = self.table();
        if t.strangers.remove(&id).is_none() {
            t.token_holders.remove(&id);
        }
    }

    /// Open connections (with the token, without it).
    pub fn len(&self) -> (usize, usize) {
        let t = self.table();
        (t.token_holders.len(), t.strangers.len())
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }
}

/// What a request handler is told about its connection: [`Proof::token_shown`] once the
/// request carried the right token.
#[derive(Debug, Clone)]
pub struct Proof {
    conns: Arc<Connections>,
    id: u64,
}

impl Proof {
    /// The request carried the right token: its connection is kept over strangers'.
    pub fn token_shown(&self) {
        self.conns.token_shown(self.id);
    }
}

/// Removes a connection from the table when its task ends, however it ends.
struct Leave {
    conns: Arc<Connections>,
    id: u64,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.conns.remove(self.id);
    }
}

/// A source of connections: a listening socket, or a fake in tests.
pub trait Accept {
    /// The next connection.
    fn accept(&self) -> impl Future<Output = io::Result<(TcpStream, SocketAddr)>> + Send;
}

impl Accept for TcpListener {
    fn accept(&self) -> impl Future<Output = io::Result<(TcpStream, SocketAddr)>> + Send {
        TcpListener::accept(self)
    }
}

/// Serves HTTP/1.1 on the connections of `listener` with `handler` within the limits of
/// this module; runs until dropped.
pub async fn serve<A, H, F>(listener: A, conns: Arc<Connections>, handler: H)
where
    A: Accept,
    H: Fn(Request<Incoming>, Proof) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let mut exhausted = false;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => {
                exhausted = false;
                x
            }
            Err(e) => {
                if let Some(pause) = pause_after(&e) {
                    let shed = conns.shed_oldest_stranger();
                    if !exhausted {
                        let (holders, strangers) = conns.len();
                        tracing::warn!(
                            error = %e, holders, strangers, shed,
                            "the API cannot accept connections; pausing"
                        );
                    }
                    exhausted = true;
                    tokio::time::sleep(pause).await;
                } else {
                    tracing::debug!(error = %e, "API accept failed");
                }
                continue;
            }
        };
        let Some(Ticket { id, shed }) = conns.admit() else {
            tracing::debug!(%peer, "every API connection has shown the token; closing a new one");
            continue;
        };
        let leave = Leave {
            conns: conns.clone(),
            id,
        };
        let proof = Proof {
            conns: conns.clone(),
            id,
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _leave = leave;
            let service = hyper::service::service_fn(move |req| {
                let answer = handler(req, proof.clone());
                async move { Ok::<_, Infallible>(answer.await) }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_BUF);
            tokio::select! {
                r = http.serve_connection(TokioIo::new(stream), service) => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "API connection failed");
                    }
                }
                _ = shed => tracing::debug!(%peer, "API connection shed for a newer one"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    fn is_shed(t: &mut Ticket) -> bool {
        matches!(t.shed.try_recv(), Err(oneshot::error::TryRecvError::Closed))
    }

    #[test]
    fn a_full_table_sheds_its_oldest_stranger_and_keeps_token_holders() {
        let conns = Connections::new(3);
        let mut a = conns.admit().unwrap();
        let mut b = conns.admit().unwrap();
        let mut c = conns.admit().unwrap();
        conns.token_shown(a.id);
        // Full: the fourth sheds b, the oldest without the token, not a.
        let mut d = conns.admit().unwrap();
        assert!(!is_shed(&mut a));
        assert!(is_shed(&mut b));
        assert!(!is_shed(&mut c) && !is_shed(&mut d));
        assert_eq!(conns.len(), (1, 2));
        conns.token_shown(c.id);
        conns.token_shown(d.id);
        // Every connection has shown the token: a new one is refused, none is shed.
        assert!(conns.admit().is_none());
        assert!(!is_shed(&mut a) && !is_shed(&mut c) && !is_shed(&mut d));
        // A connection that closes makes room.
        conns.remove(c.id);
        let e = conns.admit().unwrap();
        assert!(e.id > d.id);
        assert_eq!(conns.len(), (2, 1));
        conns.remove(b.id); // already shed: no effect
        assert_eq!(conns.len(), (2, 1));
    }

    #[test]
    fn shedding_on_demand_takes_strangers_only() {
        let conns = Connections::new(10);
        let mut a = conns.admit().unwrap();
        let mut b = conns.admit().unwrap();
        conns.token_shown(a.id);
        assert!(conns.shed_oldest_stranger());
        assert!(is_shed(&mut b) && !is_shed(&mut a));
        assert!(!conns.shed_oldest_stranger());
        conns.remove(a.id);
        assert!(conns.is_empty());
    }

    #[test]
    fn capacity_leaves_descriptors_for_the_controller() {
        assert_eq!(capacity(1 << 20, 30), MAX_CONNECTIONS);
        assert_eq!(capacity(1024, 30), MAX_CONNECTIONS);
        assert_eq!(capacity(256, 30), 256 - 30 - 64);
        assert_eq!(capacity(64, 30), MIN_CONNECTIONS);
    }

    #[test]
    fn accept_pauses_when_out_of_descriptors_only() {
        let err = io::Error::from_raw_os_error;
        for e in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert_eq!(pause_after(&err(e)), Some(ACCEPT_PAUSE), "errno {e}");
        }
        for e in [libc::ECONNABORTED, libc::EINTR, libc::EAGAIN, libc::EPERM] {
            assert_eq!(pause_after(&err(e)), None, "errno {e}");
        }
    }

    /// A listener whose every accept fails with EMFILE, as when the descriptor table is full.
    struct OutOfDescriptors(AtomicUsize);

    impl Accept for Arc<OutOfDescriptors> {
        async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
            self.0.fetch_add(1, Ordering::Relaxed);
            // As tokio's listener does once a task has used its budget: a loop that
            // retries at once spins, but lets the timer run.
            tokio::task::yield_now().await;
            Err(io::Error::from_raw_os_error(libc::EMFILE))
        }
    }

    #[tokio::test]
    async fn out_of_descriptors_the_accept_loop_waits_instead_of_spinning() {
        let listener = Arc::new(OutOfDescriptors(AtomicUsize::new(0)));
        let conns = Arc::new(Connections::new(4));
        let mut stranger = conns.admit().unwrap();
        let handler = |_req: Request<Incoming>, _p: Proof| async { Response::new(Full::default()) };
        let t = Instant::now();
        let run = Duration::from_millis(500);
        let _ = tokio::time::timeout(run, serve(listener.clone(), conns.clone(), handler)).await;
        let tries = listener.0.load(Ordering::Relaxed);
        let most = (t.elapsed().as_millis() / ACCEPT_PAUSE.as_millis()) as usize + 1;
        assert!(
            tries <= most,
            "{tries} accept calls in {:?}, at most {most} expected",
            t.elapsed()
        );
        // The first failure freed a descriptor: the oldest connection without the token.
        assert!(is_shed(&mut stranger));
    }
}
