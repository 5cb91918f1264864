//! The controller's records in PostgreSQL (`zt controller --store postgres://…`).
//!
//! The tables hold what the embedded redb store holds, one row per network and per member
//! with the record in its JSON form (zt-core `controller::record`, decoded as strictly),
//! and `zt_meta` the issue counter and the controller's address. The schema is made and
//! upgraded by the numbered files of `launcher/migrations/`, compiled in, each applied once
//! in a transaction under an advisory lock (two replicas starting together do not race)
//! and recorded in `zt_schema`; a database at a version this build does not know is
//! refused.
//!
//! [`PgStore`] implements zt-core's [`Store`]. That trait is synchronous (the node driver
//! calls it between two events, as it calls redb), so the store owns a small runtime of
//! its own with a connection pool (deadpool-postgres) and waits for its answer; a write
//! that takes longer than [`WRITE_TIMEOUT`] is an error, and the change stays pending.
//! Every write also sends a notification on [`CHANNEL`] in its transaction, naming the
//! records it changed and the replica that wrote them ([`Notice`]): the other replicas of
//! the controller read those records and apply them (see `replica`).

use std::future::Future;
use std::str::FromStr as _;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{Client, NoTls};
use zt_core::controller::record;
use zt_core::controller::store::{
    Change, ControllerState, Store, StoreError, StoredNetwork, Writer,
};
use zt_core::{Address, NetworkId};

/// The notification channel of controller writes.
pub const CHANNEL: &str = "zt_controller";
/// The longest a write waits for the database.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// A notification longer than this names no records but asks for a full reload
/// (PostgreSQL's limit is 8000 bytes).
const MAX_NOTICE: usize = 7000;

/// The schema files, in order. Never edit one that was released: add the next.
const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("../../migrations/0001_records.sql"))];

/// Key of the advisory lock held while migrating.
const MIGRATION_LOCK: i64 = 0x7a74_0100_0000_0000;

/// Key of the advisory lock the active replica of `controller` holds.
pub fn active_lock_key(controller: Address) -> i64 {
    // 0x7a74 ("zt") above the 40-bit address: always positive, never the migration key.
    (0x7a74_0000_0000_0000_u64 | controller.to_u64()) as i64
}

/// Whether `store` names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_url(store: &str) -> bool {
    store.starts_with("postgres://") || store.starts_with("postgresql://")
}

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.split_once('@') {
        Some((a, h)) if !a.contains('/') => (a, h),
        _ => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://{auth}@{host}"),
    }
}

fn database(location: &str, source: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Database {
        location: location.to_string(),
        source: Box::new(source),
    }
}

fn other(location: &str, message: String) -> StoreError {
    database(location, std::io::Error::other(message))
}

fn damaged(location: &str, reason: String) -> StoreError {
    StoreError::Damaged {
        location: location.to_string(),
        reason,
    }
}

/// The connection settings of `url`, with a connect timeout and keepalives when the URL
/// sets none (a replica must notice a database that went away).
pub fn config(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    let location = redact(url);
    let mut cfg = tokio_postgres::Config::from_str(url).map_err(|e| database(&location, e))?;
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(Duration::from_secs(5));
    }
    cfg.keepalives(true)
        .keepalives_idle(Duration::from_secs(5))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3);
    if cfg.get_application_name().is_none() {
        cfg.application_name("zt controller");
    }
    Ok(cfg)
}

/// A connection of its own (not from a pool), driven by a task of the current runtime.
pub async fn connect(cfg: &tokio_postgres::Config, location: &str) -> Result<Client, StoreError> {
    let (client, connection) = cfg
        .connect(NoTls)
        .await
        .map_err(|e| database(location, e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// Brings the schema to the newest version this build knows, or refuses a newer one.
async fn migrate(client: &mut Client, location: &str) -> Result<(), StoreError> {
    let db = |e| database(location, e);
    let tx = client.transaction().await.map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db)?;
    let fresh: bool = tx
        .query_one("SELECT to_regclass('zt_schema') IS NULL", &[])
        .await
        .map_err(db)?
        .get(0);
    if fresh {
        tx.batch_execute(
            "CREATE TABLE zt_schema (version integer PRIMARY KEY, \
             applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(db)?;
    }
    let current: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM zt_schema", &[])
        .await
        .map_err(db)?
        .get(0);
    let newest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > newest {
        return Err(other(
            location,
            format!(
                "schema version {current} was written by a newer zt; this one knows up to \
                 {newest}: run a newer zt"
            ),
        ));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| other(location, format!("schema migration {version} failed: {e}")))?;
        tx.execute("INSERT INTO zt_schema (version) VALUES ($1)", &[version])
            .await
            .map_err(db)?;
        tracing::info!(version, "controller database schema migrated");
    }
    tx.commit().await.map_err(db)
}

/// Records `controller` as the owner of the database's networks if none is, and refuses
/// a database that belongs to another controller. `None`: only reads the owner.
async fn check_owner(
    client: &Client,
    controller: Option<Address>,
    location: &str,
) -> Result<Option<Address>, StoreError> {
    let db = |e| database(location, e);
    if let Some(c) = controller {
        client
            .execute(
                "INSERT INTO zt_meta (key, value) VALUES ('controller', $1) \
                 ON CONFLICT (key) DO NOTHING",
                &[&(c.to_u64() as i64)],
            )
            .await
            .map_err(db)?;
    }
    let row = client
        .query_opt("SELECT value FROM zt_meta WHERE key = 'controller'", &[])
        .await
        .map_err(db)?;
    let owner = match row {
        None => None,
        Some(r) => {
            let v: i64 = r.get(0);
            Some(Address::new(v as u64).map_err(|_| {
                damaged(location, format!("controller record {v:#x} is no address"))
            })?)
        }
    };
    if let (Some(c), Some(o)) = (controller, owner) {
        if c != o {
            return Err(other(
                location,
                format!(
                    "the database holds the networks of controller {o}, and this controller's \
                     identity is {c}: give every replica the identity.secret of {o}, or use \
                     another database"
                ),
            ));
        }
    }
    Ok(owner)
}

fn decode_nwid(v: i64) -> NetworkId {
    NetworkId(v as u64)
}

fn decode_member_key(location: &str, nwid: NetworkId, v: i64) -> Result<Address, StoreError> {
    Address::new(v as u64).map_err(|_| {
        damaged(
            location,
            format!("member key {v:#x} of {nwid} is no address"),
        )
    })
}

/// Reads every record.
pub async fn read_all(client: &Client, location: &str) -> Result<ControllerState, StoreError> {
    let db = |e| database(location, e);
    let last: i64 = client
        .query_opt("SELECT value FROM zt_meta WHERE key = 'last_issued'", &[])
        .await
        .map_err(db)?
        .ok_or_else(|| damaged(location, "no last_issued record".into()))?
        .get(0);
    let mut state = ControllerState {
        last_issued: last as u64,
        ..ControllerState::default()
    };
    for row in client
        .query("SELECT nwid, record::text FROM zt_networks", &[])
        .await
        .map_err(db)?
    {
        let nwid = decode_nwid(row.get(0));
        let text: String = row.get(1);
        let settings = record::decode_network(text.as_bytes())
            .map_err(|e| damaged(location, format!("{e} ({nwid})")))?;
        state.networks.insert(
            nwid,
            StoredNetwork {
                settings,
                ..StoredNetwork::default()
            },
        );
    }
    for row in client
        .query("SELECT nwid, member, record::text FROM zt_members", &[])
        .await
        .map_err(db)?
    {
        let nwid = decode_nwid(row.get(0));
        let member = decode_member_key(location, nwid, row.get(1))?;
        let text: String = row.get(2);
        let m = record::decode_member(text.as_bytes())
            .map_err(|e| damaged(location, format!("{e} ({nwid}/{member})")))?;
        state
            .networks
            .get_mut(&nwid)
            .ok_or_else(|| damaged(location, format!("member {member} of a missing network")))?
            .members
            .insert(member, m);
    }
    Ok(state)
}

/// A record a notification names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A network's settings.
    Network(NetworkId),
    /// A member.
    Member(NetworkId, Address),
    /// The issue counter.
    LastIssued,
}

/// A notification of a write: who wrote, and which records (`None`: too many to name,
/// reload everything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The writing replica ([`PgStore::replica`]).
    pub replica: u64,
    /// The records written, in the order written.
    pub keys: Option<Vec<Key>>,
}

impl Notice {
    /// The payload for `changes` written by `replica`: `REPLICA KEY…` with keys `nNWID`,
    /// `mNWID/MEMBER` and `l`, or `REPLICA *`.
    pub fn payload(replica: u64, changes: &[Change]) -> String {
        let mut s = format!("{replica:x}");
        for c in changes {
            match c {
                Change::Network { nwid, .. } => s.push_str(&format!(" n{nwid}")),
                Change::Member { nwid, member, .. } => s.push_str(&format!(" m{nwid}/{member}")),
                Change::LastIssued(_) => s.push_str(" l"),
            }
            if s.len() > MAX_NOTICE {
                return format!("{replica:x} *");
            }
        }
        s
    }

    /// Reads a payload; `None` if it is not one.
    pub fn parse(payload: &str) -> Option<Notice> {
        let mut words = payload.split(' ');
        let replica = u64::from_str_radix(words.next()?, 16).ok()?;
        let mut keys = Vec::new();
        for w in words {
            if w == "*" {
                return Some(Notice {
                    replica,
                    keys: None,
                });
            }
            keys.push(if w == "l" {
                Key::LastIssued
            } else if let Some(n) = w.strip_prefix('n') {
                Key::Network(n.parse().ok()?)
            } else if let Some(m) = w.strip_prefix('m') {
                let (n, a) = m.split_once('/')?;
                Key::Member(n.parse().ok()?, a.parse().ok()?)
            } else {
                return None;
            });
        }
        Some(Notice {
            replica,
            keys: Some(keys),
        })
    }
}

/// The records `keys` name as they are stored now, as changes (a missing record is a
/// deletion).
pub async fn read_keys(
    client: &Client,
    keys: &[Key],
    location: &str,
) -> Result<Vec<Change>, StoreError> {
    let db = |e| database(location, e);
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        out.push(match *k {
            Key::LastIssued => {
                let v: i64 = client
                    .query_opt("SELECT value FROM zt_meta WHERE key = 'last_issued'", &[])
                    .await
                    .map_err(db)?
                    .ok_or_else(|| damaged(location, "no last_issued record".into()))?
                    .get(0);
                Change::LastIssued(v as u64)
            }
            Key::Network(nwid) => {
                let row = client
                    .query_opt(
                        "SELECT record::text FROM zt_networks WHERE nwid = $1",
                        &[&(nwid.0 as i64)],
                    )
                    .await
                    .map_err(db)?;
                let settings = match row {
                    None => None,
                    Some(r) => Some(
                        record::decode_network(r.get::<_, String>(0).as_bytes())
                            .map_err(|e| damaged(location, format!("{e} ({nwid})")))?,
                    ),
                };
                Change::Network { nwid, settings }
            }
            Key::Member(nwid, member) => {
                let row = client
                    .query_opt(
                        "SELECT record::text FROM zt_members WHERE nwid = $1 AND member = $2",
                        &[&(nwid.0 as i64), &(member.to_u64() as i64)],
                    )
                    .await
                    .map_err(db)?;
                let record = match row {
                    None => None,
                    Some(r) => Some(
                        record::decode_member(r.get::<_, String>(0).as_bytes())
                            .map_err(|e| damaged(location, format!("{e} ({nwid}/{member})")))?,
                    ),
                };
                Change::Member {
                    nwid,
                    member,
                    record,
                    by: Writer::Administrator,
                }
            }
        });
    }
    Ok(out)
}

/// The controller's records in a PostgreSQL database. See the module documentation.
pub struct PgStore {
    /// `Some` until dropped (a runtime cannot be dropped inside another one, so it is
    /// shut down in the background).
    rt: Option<tokio::runtime::Runtime>,
    pool: Pool,
    location: String,
    replica: u64,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgStore({})", self.location)
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl PgStore {
    /// Connects to `url`, migrates its schema, checks that its networks belong to
    /// `controller` (and records it as their owner when none is; `None`: any owner, as
    /// for an export) and returns the store with its records.
    pub fn open(
        url: &str,
        controller: Option<Address>,
    ) -> Result<(PgStore, ControllerState, Option<Address>), StoreError> {
        let location = redact(url);
        let cfg = config(url)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("zt-postgres")
            .enable_all()
            .build()
            .map_err(|e| database(&location, e))?;
        let mgr = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(4)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(WRITE_TIMEOUT))
            .create_timeout(Some(WRITE_TIMEOUT))
            .build()
            .map_err(|e| other(&location, e.to_string()))?;
        let store = PgStore {
            rt: Some(rt),
            pool,
            location,
            replica: u64::from_le_bytes(
                crate::identity::os_seed().map_err(|e| other(&redact(url), e.to_string()))?[..8]
                    .try_into()
                    .unwrap_or_default(),
            ),
        };
        let (state, owner) = store.run(|pool, location| async move {
            let mut client = pool
                .get()
                .await
                .map_err(|e| other(&location, e.to_string()))?;
            migrate(&mut client, &location).await?;
            let owner = check_owner(&client, controller, &location).await?;
            Ok((read_all(&client, &location).await?, owner))
        })?;
        Ok((store, state, owner))
    }

    /// This process's replica number (random), which its notifications carry.
    pub fn replica(&self) -> u64 {
        self.replica
    }

    /// Runs `f` on the store's runtime and waits for it, at most [`WRITE_TIMEOUT`] plus
    /// the time to connect. Blocks the calling thread (as a write to redb does).
    fn run<T, F>(&self, f: impl FnOnce(Pool, String) -> F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let Some(rt) = &self.rt else {
            return Err(other(&self.location, "the store is closed".into()));
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let location = self.location.clone();
        let fut = f(self.pool.clone(), location.clone());
        rt.spawn(async move {
            let r = match tokio::time::timeout(WRITE_TIMEOUT * 2, fut).await {
                Ok(r) => r,
                Err(_) => Err(other(
                    &location,
                    format!(
                        "no answer from the database within {} s",
                        (WRITE_TIMEOUT * 2).as_secs()
                    ),
                )),
            };
            let _ = tx.send(r);
        });
        rx.recv()
            .map_err(|_| other(&self.location, "the store's runtime stopped".into()))?
    }
}

impl Store for PgStore {
    fn location(&self) -> &str {
        &self.location
    }

    fn load(&self) -> Result<ControllerState, StoreError> {
        self.run(|pool, location| async move {
            let client = pool
                .get()
                .await
                .map_err(|e| other(&location, e.to_string()))?;
            read_all(&client, &location).await
        })
    }

    fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let changes = changes.to_vec();
        let notice = Notice::payload(self.replica, &changes);
        self.run(move |pool, location| async move {
            let db = |e| database(&location, e);
            let mut client = pool
                .get()
                .await
                .map_err(|e| other(&location, e.to_string()))?;
            let tx = client.transaction().await.map_err(db)?;
            let put_net = tx
                .prepare(
                    "INSERT INTO zt_networks (nwid, record) VALUES ($1, $2::text::jsonb) \
                     ON CONFLICT (nwid) DO UPDATE SET record = excluded.record",
                )
                .await
                .map_err(db)?;
            // Each writer's fields win over the row (see `Writer`): an administrator's
            // write keeps the stored address (once assigned) and the later request time,
            // the controller's keeps the stored authorization and name.
            let put_member_admin = tx
                .prepare(
                    "INSERT INTO zt_members AS old (nwid, member, record) \
                     VALUES ($1, $2, $3::text::jsonb) \
                     ON CONFLICT (nwid, member) DO UPDATE SET record = excluded.record \
                     || jsonb_build_object( \
                        'ipv4', CASE WHEN old.record->'ipv4' = 'null'::jsonb \
                                THEN excluded.record->'ipv4' ELSE old.record->'ipv4' END, \
                        'last_request', coalesce(to_jsonb(greatest( \
                            (old.record->>'last_request')::bigint, \
                            (excluded.record->>'last_request')::bigint)), 'null'::jsonb))",
                )
                .await
                .map_err(db)?;
            let put_member_controller = tx
                .prepare(
                    "INSERT INTO zt_members AS old (nwid, member, record) \
                     VALUES ($1, $2, $3::text::jsonb) \
                     ON CONFLICT (nwid, member) DO UPDATE SET record = excluded.record \
                     || jsonb_build_object('authorized', old.record->'authorized', \
                                           'name', old.record->'name')",
                )
                .await
                .map_err(db)?;
            for c in &changes {
                match c {
                    Change::Network {
                        nwid,
                        settings: Some(s),
                    } => {
                        let rec = record::encode_network(s);
                        tx.execute(&put_net, &[&(nwid.0 as i64), &rec])
                            .await
                            .map_err(db)?;
                    }
                    Change::Network {
                        nwid,
                        settings: None,
                    } => {
                        tx.execute(
                            "DELETE FROM zt_networks WHERE nwid = $1",
                            &[&(nwid.0 as i64)],
                        )
                        .await
                        .map_err(db)?;
                    }
                    Change::Member {
                        nwid,
                        member,
                        record: Some(m),
                        by,
                    } => {
                        let rec = record::encode_member(m);
                        let put = match by {
                            Writer::Administrator => &put_member_admin,
                            Writer::Controller => &put_member_controller,
                        };
                        tx.execute(put, &[&(nwid.0 as i64), &(member.to_u64() as i64), &rec])
                            .await
                            .map_err(db)?;
                    }
                    Change::Member {
                        nwid,
                        member,
                        record: None,
                        ..
                    } => {
                        tx.execute(
                            "DELETE FROM zt_members WHERE nwid = $1 AND member = $2",
                            &[&(nwid.0 as i64), &(member.to_u64() as i64)],
                        )
                        .await
                        .map_err(db)?;
                    }
                    Change::LastIssued(t) => {
                        tx.execute(
                            "UPDATE zt_meta SET value = greatest(value, $1) \
                             WHERE key = 'last_issued'",
                            &[&(*t as i64)],
                        )
                        .await
                        .map_err(db)?;
                    }
                }
            }
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &notice])
                .await
                .map_err(db)?;
            tx.commit().await.map_err(db)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip_and_refuse_junk() {
        let nwid: NetworkId = "8056c2e21c000001".parse().unwrap();
        let member = Address::new(0x0102030405).unwrap();
        let changes = vec![
            Change::Network {
                nwid,
                settings: None,
            },
            Change::Member {
                nwid,
                member,
                record: None,
                by: Writer::Administrator,
            },
            Change::LastIssued(3),
        ];
        let p = Notice::payload(0xabc, &changes);
        assert_eq!(p, "abc n8056c2e21c000001 m8056c2e21c000001/0102030405 l");
        assert_eq!(
            Notice::parse(&p),
            Some(Notice {
                replica: 0xabc,
                keys: Some(vec![
                    Key::Network(nwid),
                    Key::Member(nwid, member),
                    Key::LastIssued
                ]),
            })
        );
        let many: Vec<Change> = (0..1000)
            .map(|i| Change::Member {
                nwid,
                member: Address::new(0x0100000000 + i).unwrap(),
                record: None,
                by: Writer::Administrator,
            })
            .collect();
        assert_eq!(
            Notice::parse(&Notice::payload(7, &many)).unwrap().keys,
            None
        );
        for junk in ["", "xyz", "1 q", "1 mnope", "1 m8056c2e21c000001/zz", "1 n"] {
            assert_eq!(Notice::parse(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact("postgres://zt:s3cret@db.example:5432/zt"),
            "postgres://zt:***@db.example:5432/zt"
        );
        assert_eq!(redact("postgres://zt@db/zt"), "postgres://zt@db/zt");
        assert_eq!(redact("postgres://db/zt"), "postgres://db/zt");
        assert!(active_lock_key(Address::new(0xfedcba9876).unwrap()) > 0);
        assert_ne!(
            active_lock_key(Address::new(0x0100000000).unwrap()),
            MIGRATION_LOCK
        );
    }
}
