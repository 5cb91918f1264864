//! Replicas of one controller on one PostgreSQL database: one is active on the overlay,
//! the others stand by, and every one serves the management API.
//!
//! - **Who is active.** Each replica keeps a connection of its own that asks for a
//!   session-level advisory lock keyed by the controller's address
//!   ([`postgres::active_lock_key`]). The one that holds it runs the controller's node
//!   with its roots; the others run the controller on a node with no roots (it answers
//!   the API and reaches nobody) and wait in `pg_advisory_lock`. PostgreSQL releases the
//!   lock when the holder's connection ends, so a killed active replica (its socket
//!   closed by the kernel) is replaced as soon as the server notices: within the time a
//!   standby needs to read the records and start its node. An active replica checks its
//!   lock connection every [`PING_EVERY`] and stands by when the database does not
//!   answer within [`PING_TIMEOUT`]; until then a standby that got the lock (the server
//!   dropped the old connection first) may run beside it for up to that long. Members
//!   hold signed configurations and keep them; they reach the new active node through
//!   their roots at their next request or push.
//! - **Writes from any replica.** Every change is written to the database in one
//!   transaction with a notification naming the records ([`postgres::Notice`]). Each
//!   replica listens on a connection of its own, reads the named records and applies them
//!   to its controller (`Node::apply_stored`): the active one revokes, pushes or
//!   announces as if the change had been made through it. A replica that (re)connects,
//!   or gets a notification too large to name its records, compares everything with its
//!   own state ([`store::diff`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::{AsyncMessage, Client, NoTls};
use zt_core::controller::store::{self, ControllerState};
use zt_core::controller::Controller;
use zt_core::driver::NodeHandle;

use super::postgres::{self, Key, Notice};
use super::{unix_ms, Overlay, Service};

/// How often the active replica checks its lock connection.
pub(super) const PING_EVERY: Duration = Duration::from_millis(500);
/// How long it waits for the answer before it stands by.
pub(super) const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Wait before connecting again after a failure.
const RETRY: Duration = Duration::from_secs(1);

/// The database the replicas share.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) cfg: tokio_postgres::Config,
    pub(super) location: String,
    /// This process's replica number (its notifications carry it).
    pub(super) replica: u64,
}

/// Stands by until this replica holds the active lock, runs the controller on the
/// overlay while it holds it, and stands by again when the database stops answering.
/// Never returns.
pub(super) async fn hold_active(svc: &Arc<Service>, overlay: &Overlay<'_>, db: &Shared) {
    let key = postgres::active_lock_key(svc.address);
    loop {
        let client = match postgres::connect(&db.cfg, &db.location).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the database for the active lock");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let free = match client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await
        {
            Ok(row) => row.get::<_, bool>(0),
            Err(e) => {
                tracing::warn!(error = %e, "cannot ask for the active lock");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        if !free {
            eprintln!(
                "zt: standing by: another replica of controller {} is active (this one \
                 serves the API and takes over when that one stops)",
                svc.address
            );
            if let Err(e) = client.execute("SELECT pg_advisory_lock($1)", &[&key]).await {
                tracing::warn!(error = %e, "lost the database while standing by");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        }
        let t = Instant::now();
        if let Err(e) = activate(svc, overlay, &client, &db.location).await {
            eprintln!("zt: cannot become the active replica: {e:#}; trying again");
            tokio::time::sleep(RETRY).await;
            continue;
        }
        eprintln!(
            "zt: active: controller {} is on the overlay (took over in {} ms)",
            svc.address,
            t.elapsed().as_millis()
        );
        loop {
            tokio::time::sleep(PING_EVERY).await;
            match tokio::time::timeout(PING_TIMEOUT, client.simple_query("SELECT 1")).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    eprintln!("zt: lost the database ({e}); standing by");
                    break;
                }
                Err(_) => {
                    eprintln!(
                        "zt: the database did not answer within {} s; standing by",
                        PING_TIMEOUT.as_secs()
                    );
                    break;
                }
            }
        }
        drop(client);
        if let Err(e) = stand_by(svc, overlay).await {
            tracing::warn!(error = %e, "cannot stop the overlay node");
        }
    }
}

/// Starts the controller on the overlay with the records as stored now.
async fn activate(
    svc: &Arc<Service>,
    overlay: &Overlay<'_>,
    client: &Client,
    location: &str,
) -> anyhow::Result<()> {
    // What the standby node holds but did not store yet goes first.
    if let Ok(Err(e)) = svc.save_pending().await {
        tracing::warn!(error = %e, "cannot save the controller state");
    }
    let state = postgres::read_all(client, location).await?;
    let controller = Controller::from_state(overlay.id.clone(), unix_ms(), Instant::now(), state);
    let node = overlay.start(controller, true).await?;
    svc.replace_node(node);
    // Writes made through the standby node while this one started.
    resync(svc, client, location).await?;
    Ok(())
}

/// Leaves the overlay: the controller goes on, with its current state, on a node with no
/// roots.
async fn stand_by(svc: &Arc<Service>, overlay: &Overlay<'_>) -> anyhow::Result<()> {
    let state: ControllerState = svc.node().with_controller(|c| c.state()).await?;
    let controller = Controller::from_state(overlay.id.clone(), unix_ms(), Instant::now(), state);
    let node = overlay.start(controller, false).await?;
    svc.replace_node(node);
    Ok(())
}

/// Makes the controller's state the stored one (what differs is applied as a change
/// another replica made).
///
/// The state held is taken before the database is read: a change made here meanwhile is
/// then in neither or (saved) in the database only, and is left alone, where the other
/// order would take a network created here after the read for one deleted elsewhere.
async fn resync(svc: &Service, client: &Client, location: &str) -> anyhow::Result<()> {
    let node: NodeHandle = svc.node();
    let held = node.with_controller(|c| c.state()).await?;
    let stored = postgres::read_all(client, location).await?;
    let changes = store::diff(&held, &stored);
    if !changes.is_empty() {
        tracing::debug!(changes = changes.len(), "caught up with the database");
        node.apply_stored(changes).await?;
    }
    Ok(())
}

/// Applies the changes other replicas write, as they are notified. Never returns.
pub(super) async fn follow(svc: &Arc<Service>, db: &Shared) {
    loop {
        let (client, mut conn) = match db.cfg.connect(NoTls).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the database to follow its changes");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let driver = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        if tx.send(n.payload().to_string()).is_err() {
                            break;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "the listening connection failed");
                        break;
                    }
                    None => break,
                }
            }
        });
        let listening = client
            .batch_execute(&format!("LISTEN {}", postgres::CHANNEL))
            .await;
        if let Err(e) = listening {
            tracing::warn!(error = %e, "cannot listen for the controller's changes");
            driver.abort();
            tokio::time::sleep(RETRY).await;
            continue;
        }
        // Whatever was written before LISTEN took effect.
        if let Err(e) = resync(svc, &client, &db.location).await {
            tracing::warn!(error = %e, "cannot catch up with the database");
        }
        while let Some(first) = rx.recv().await {
            let mut payloads = vec![first];
            while let Ok(p) = rx.try_recv() {
                payloads.push(p);
            }
            let (mut keys, mut seen, mut all) = (Vec::new(), HashSet::new(), false);
            for p in &payloads {
                match Notice::parse(p) {
                    Some(n) if n.replica == db.replica => {}
                    Some(Notice { keys: Some(k), .. }) => {
                        keys.extend(k.into_iter().filter(|k| seen.insert(key_id(k))))
                    }
                    Some(_) => all = true,
                    None => {
                        tracing::warn!(payload = %p, "unknown notification; reloading");
                        all = true;
                    }
                }
            }
            let applied = if all {
                resync(svc, &client, &db.location).await
            } else if keys.is_empty() {
                continue;
            } else {
                apply_keys(svc, &client, &keys, &db.location).await
            };
            if let Err(e) = applied {
                tracing::warn!(error = %e, "cannot apply another replica's change");
            }
            // Configurations pushed for the change may have assigned addresses.
            if let Ok(Err(e)) = svc.save_pending().await {
                tracing::warn!(error = %e, "cannot save the controller state");
            }
        }
        driver.abort();
        tracing::warn!("the listening connection ended; reconnecting");
        tokio::time::sleep(RETRY).await;
    }
}

fn key_id(k: &Key) -> (u8, u64, u64) {
    match *k {
        Key::Network(n) => (0, n.0, 0),
        Key::Member(n, a) => (1, n.0, a.to_u64()),
        Key::LastIssued => (2, 0, 0),
    }
}

async fn apply_keys(
    svc: &Service,
    client: &Client,
    keys: &[Key],
    location: &str,
) -> anyhow::Result<()> {
    let changes = postgres::read_keys(client, keys, location).await?;
    svc.node().apply_stored(changes).await?;
    Ok(())
}
