//! Where a controller keeps its networks and members.
//!
//! A [`Store`] holds records, not one document: a network's settings under its network ID,
//! each member under (network ID, member address), and a counter
//! ([`Change::LastIssued`]). The [`Controller`](super::Controller) records which of them
//! changed ([`Controller::take_changes`](super::Controller::take_changes)); the host hands
//! those changes to [`Store::apply`], one transaction, so authorizing one member writes
//! one member record whatever the size of the network. [`Store::load`] reads everything
//! back as a [`ControllerState`] and refuses a state it cannot read completely: a damaged
//! record, a database without its `schema_version` record, a schema from a newer version
//! are errors that name the file, never an empty start.
//!
//! The embedded implementation is [`RedbStore`] (cargo feature `store`). Another engine
//! (a SQL database) implements the same trait.

use std::collections::BTreeMap;

use super::{Member, NetworkSettings};
use crate::identity::Address;
use crate::vl2::NetworkId;

/// The version of the stored layout this build writes. 1: the whole state as one JSON
/// document (table `controller`, key `state`); 2: one record per network and per member,
/// with a `meta` table holding `schema_version` and `last_issued`.
pub const SCHEMA_VERSION: u64 = 2;

/// One network as stored: its settings and members.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredNetwork {
    /// Settings.
    pub settings: NetworkSettings,
    /// Members by address.
    pub members: BTreeMap<Address, Member>,
}

/// Everything a controller keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControllerState {
    /// Networks by ID.
    pub networks: BTreeMap<NetworkId, StoredNetwork>,
    /// The timestamp of the last configuration issued (new ones are later).
    pub last_issued: u64,
}

/// One change to the stored records. A store applies a list of them in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A network's settings were set (`Some`) or the network was deleted with all its
    /// members (`None`).
    Network {
        /// The network.
        nwid: NetworkId,
        /// Its settings, or `None` when deleted.
        settings: Option<NetworkSettings>,
    },
    /// A member was recorded or changed (`Some`) or removed (`None`).
    Member {
        /// The network.
        nwid: NetworkId,
        /// The member.
        member: Address,
        /// Its record, or `None` when removed.
        record: Option<Member>,
        /// Who changed it.
        by: Writer,
    },
    /// The timestamp of the last configuration issued.
    LastIssued(u64),
}

/// Who changed a member record. A store that several replicas of a controller write
/// keeps each side's fields from its own writers: an administrator's write (through the
/// API: authorization, name, removal) keeps the address and request time the database
/// holds, and the controller's (a request's time, an assigned address) keeps the
/// authorization and name, so neither undoes the other's concurrent change. A store with
/// one writer stores the record as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Writer {
    /// An administrator's change, or a copy of a whole state (import).
    #[default]
    Administrator,
    /// The controller's own bookkeeping.
    Controller,
}

/// Errors of a store. Each names where the state lives.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database engine failed (I/O, a damaged page, a lock held by another process).
    #[error("controller database {location}: {source}")]
    Database {
        /// The file or database.
        location: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A record cannot be read.
    #[error("controller database {location} is damaged: {reason}")]
    Damaged {
        /// The file or database.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// The database exists but holds no controller state.
    #[error("controller database {location} holds no controller state (no schema_version record)")]
    Missing {
        /// The file or database.
        location: String,
    },
    /// Written by a newer version.
    #[error(
        "controller database {location} has schema version {found}; this version reads up to \
         {SCHEMA_VERSION}: run a newer zt"
    )]
    Newer {
        /// The file or database.
        location: String,
        /// The version found.
        found: u64,
    },
    /// The database engine panicked on the file's contents (caught).
    #[error(
        "controller database {location} is damaged: the database engine failed on it ({message})"
    )]
    Panicked {
        /// The file or database.
        location: String,
        /// The panic message.
        message: String,
    },
    /// The copy kept before a schema change could not be written.
    #[error(
        "cannot back up controller database {location} to {backup} before upgrading it: {source}"
    )]
    Backup {
        /// The file.
        location: String,
        /// The backup's path.
        backup: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A place that keeps a controller's records. See the module documentation.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Where the state lives (a path or a database name), for messages.
    fn location(&self) -> &str;

    /// Reads every record. Anything unreadable is an error, never a partial state.
    fn load(&self) -> Result<ControllerState, StoreError>;

    /// Applies `changes` in order, all or none.
    fn apply(&self, changes: &[Change]) -> Result<(), StoreError>;

    /// Sets a network's settings.
    fn put_network(&self, nwid: NetworkId, settings: &NetworkSettings) -> Result<(), StoreError> {
        self.apply(&[Change::Network {
            nwid,
            settings: Some(settings.clone()),
        }])
    }

    /// Deletes a network and its members.
    fn delete_network(&self, nwid: NetworkId) -> Result<(), StoreError> {
        self.apply(&[Change::Network {
            nwid,
            settings: None,
        }])
    }

    /// Records a member.
    fn put_member(
        &self,
        nwid: NetworkId,
        member: Address,
        record: &Member,
    ) -> Result<(), StoreError> {
        self.apply(&[Change::Member {
            nwid,
            member,
            record: Some(record.clone()),
            by: Writer::Administrator,
        }])
    }

    /// Removes a member.
    fn delete_member(&self, nwid: NetworkId, member: Address) -> Result<(), StoreError> {
        self.apply(&[Change::Member {
            nwid,
            member,
            record: None,
            by: Writer::Administrator,
        }])
    }
}

/// The name in an export's `format` field ([`export_json`]).
pub const EXPORT_FORMAT: &str = "zt-controller-export";

/// Why an export cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a controller export: {reason}")]
pub struct ExportError {
    /// What is wrong with it.
    pub reason: String,
}

/// A controller's whole state as one JSON document, the same in every store, for moving
/// it from one store to another (`zt controller export`): the controller's address, the
/// issue counter and every network with its members, each record in its stored form
/// ([`super::record`]).
pub fn export_json(controller: Address, state: &ControllerState) -> String {
    use serde_json::{json, Map, Value};
    let record = |text: String| serde_json::from_str::<Value>(&text).unwrap_or(Value::Null);
    let networks: Vec<Value> = state
        .networks
        .iter()
        .map(|(nwid, n)| {
            let members: Map<String, Value> = n
                .members
                .iter()
                .map(|(a, m)| (a.to_string(), record(super::record::encode_member(m))))
                .collect();
            json!({
                "id": nwid.to_string(),
                "settings": record(super::record::encode_network(&n.settings)),
                "members": members,
            })
        })
        .collect();
    let doc = json!({
        "format": EXPORT_FORMAT,
        "version": 1,
        "controller": controller.to_string(),
        "last_issued": state.last_issued,
        "networks": networks,
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// Reads an [`export_json`] document: the controller's address and its state. Every
/// record is checked as a store checks it; anything unreadable is an error.
pub fn import_json(text: &str) -> Result<(Address, ControllerState), ExportError> {
    use serde_json::Value;
    let bad = |reason: String| ExportError { reason };
    let v: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    if v["format"] != EXPORT_FORMAT {
        return Err(bad(format!("no \"format\": \"{EXPORT_FORMAT}\"")));
    }
    if v["version"] != 1 {
        return Err(bad(format!("version {} (this zt reads 1)", v["version"])));
    }
    let controller: Address = v["controller"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad \"controller\" address".into()))?;
    let mut state = ControllerState {
        last_issued: v["last_issued"]
            .as_u64()
            .ok_or_else(|| bad("bad \"last_issued\"".into()))?,
        ..ControllerState::default()
    };
    let networks = v["networks"]
        .as_array()
        .ok_or_else(|| bad("no \"networks\" list".into()))?;
    for n in networks {
        let nwid: NetworkId = n["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad network id {}", n["id"])))?;
        if nwid.controller() != Some(controller) {
            return Err(bad(format!("network {nwid} is not run by {controller}")));
        }
        let settings = super::record::decode_network(n["settings"].to_string().as_bytes())
            .map_err(|e| bad(format!("{e} ({nwid})")))?;
        let mut stored = StoredNetwork {
            settings,
            ..StoredNetwork::default()
        };
        let members = n["members"]
            .as_object()
            .ok_or_else(|| bad(format!("no members object in {nwid}")))?;
        for (a, m) in members {
            let addr: Address = a
                .parse()
                .map_err(|_| bad(format!("member {a:?} of {nwid} is no address")))?;
            let m = super::record::decode_member(m.to_string().as_bytes())
                .map_err(|e| bad(format!("{e} ({nwid}/{addr})")))?;
            stored.members.insert(addr, m);
        }
        if state.networks.insert(nwid, stored).is_some() {
            return Err(bad(format!("network {nwid} appears twice")));
        }
    }
    Ok((controller, state))
}

/// Every record of `state` as changes that make an empty store hold it.
pub fn changes_of(state: &ControllerState) -> Vec<Change> {
    let mut out = Vec::new();
    for (nwid, n) in &state.networks {
        out.push(Change::Network {
            nwid: *nwid,
            settings: Some(n.settings.clone()),
        });
        for (a, m) in &n.members {
            out.push(Change::Member {
                nwid: *nwid,
                member: *a,
                record: Some(m.clone()),
                by: Writer::Administrator,
            });
        }
    }
    out.push(Change::LastIssued(state.last_issued));
    out
}

/// The changes that turn `from` into `to` (a replica catching up with its database).
pub fn diff(from: &ControllerState, to: &ControllerState) -> Vec<Change> {
    let mut out = Vec::new();
    for nwid in from
        .networks
        .keys()
        .filter(|n| !to.networks.contains_key(n))
    {
        out.push(Change::Network {
            nwid: *nwid,
            settings: None,
        });
    }
    let empty = BTreeMap::new();
    for (nwid, n) in &to.networks {
        let old = from.networks.get(nwid);
        if old.map(|o| &o.settings) != Some(&n.settings) {
            out.push(Change::Network {
                nwid: *nwid,
                settings: Some(n.settings.clone()),
            });
        }
        let old_members = old.map_or(&empty, |o| &o.members);
        for a in old_members.keys().filter(|a| !n.members.contains_key(a)) {
            out.push(Change::Member {
                nwid: *nwid,
                member: *a,
                record: None,
                by: Writer::Administrator,
            });
        }
        for (a, m) in &n.members {
            if old_members.get(a) != Some(m) {
                out.push(Change::Member {
                    nwid: *nwid,
                    member: *a,
                    record: Some(m.clone()),
                    by: Writer::Administrator,
                });
            }
        }
    }
    if to.last_issued > from.last_issued {
        out.push(Change::LastIssued(to.last_issued));
    }
    out
}

#[cfg(feature = "store")]
pub use self::redb_store::RedbStore;

#[cfg(feature = "store")]
mod redb_store {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::path::{Path, PathBuf};

    use redb::backends::InMemoryBackend;
    use redb::{Database, ReadableTable as _, StorageBackend as _, TableDefinition, TableError};

    use super::super::{record, Controller};
    use super::{Change, ControllerState, Store, StoreError, StoredNetwork, SCHEMA_VERSION};
    use crate::identity::Address;
    use crate::vl2::NetworkId;

    const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
    const NETWORKS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("networks");
    const MEMBERS: TableDefinition<'_, (u64, u64), &[u8]> = TableDefinition::new("members");
    /// Schema 1: the whole state as one JSON document.
    const LEGACY: TableDefinition<'_, &str, &str> = TableDefinition::new("controller");
    const LEGACY_KEY: &str = "state";
    const SCHEMA_KEY: &str = "schema_version";
    const LAST_ISSUED_KEY: &str = "last_issued";

    /// A state read from a database, and the schema it was in.
    #[derive(Debug)]
    pub(super) struct Loaded {
        state: ControllerState,
        schema: u64,
    }

    /// The controller's records in an embedded redb database file.
    ///
    /// [`RedbStore::open`] checks the whole file before it uses it: the file is read into
    /// memory and loaded from that copy, so a damaged file is reported without a byte
    /// written to it (the engine's own repair after an unclean stop works on the copy
    /// first), and a panic of the engine on some byte pattern is caught and reported as
    /// damage. An older schema is upgraded after a copy of the file is kept beside it
    /// ([`RedbStore::backup_path`]).
    pub struct RedbStore {
        db: Database,
        location: String,
    }

    impl std::fmt::Debug for RedbStore {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "RedbStore({})", self.location)
        }
    }

    fn engine(location: &str, e: impl Into<redb::Error>) -> StoreError {
        let e: redb::Error = e.into();
        match e {
            redb::Error::Corrupted(reason) => StoreError::Damaged {
                location: location.to_string(),
                reason,
            },
            e => StoreError::Database {
                location: location.to_string(),
                source: Box::new(e),
            },
        }
    }

    fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into())
    }

    /// Runs `f`, turning a panic into [`StoreError::Panicked`].
    fn guarded<T>(
        location: &str,
        f: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
            Err(StoreError::Panicked {
                location: location.to_string(),
                message: panic_message(p.as_ref()),
            })
        })
    }

    /// Reads the whole state of `db`.
    fn read_all(db: &Database, location: &str) -> Result<Loaded, StoreError> {
        let err = |e: redb::Error| engine(location, e);
        let damaged = |reason: String| StoreError::Damaged {
            location: location.to_string(),
            reason,
        };
        let tx = db.begin_read().map_err(|e| err(e.into()))?;
        let meta = match tx.open_table(META) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => {
                // Schema 1, or no state at all.
                let legacy = match tx.open_table(LEGACY) {
                    Ok(t) => t,
                    Err(TableError::TableDoesNotExist(_)) => {
                        return Err(StoreError::Missing {
                            location: location.to_string(),
                        })
                    }
                    Err(e) => return Err(err(e.into())),
                };
                let text = legacy.get(LEGACY_KEY).map_err(|e| err(e.into()))?.ok_or(
                    StoreError::Missing {
                        location: location.to_string(),
                    },
                )?;
                let state = Controller::state_from_json(text.value())
                    .map_err(|e| damaged(format!("schema 1 state: {e}")))?;
                return Ok(Loaded { state, schema: 1 });
            }
            Err(e) => return Err(err(e.into())),
        };
        let schema = meta
            .get(SCHEMA_KEY)
            .map_err(|e| err(e.into()))?
            .ok_or(StoreError::Missing {
                location: location.to_string(),
            })?
            .value();
        if schema > SCHEMA_VERSION {
            return Err(StoreError::Newer {
                location: location.to_string(),
                found: schema,
            });
        }
        if schema != SCHEMA_VERSION {
            return Err(damaged(format!("unknown schema version {schema}")));
        }
        let mut state = ControllerState {
            last_issued: meta
                .get(LAST_ISSUED_KEY)
                .map_err(|e| err(e.into()))?
                .ok_or_else(|| damaged("no last_issued record".into()))?
                .value(),
            ..ControllerState::default()
        };
        let open = |e: TableError| match e {
            TableError::TableDoesNotExist(t) => damaged(format!("table {t} is missing")),
            e => err(e.into()),
        };
        let networks = tx.open_table(NETWORKS).map_err(open)?;
        for row in networks.iter().map_err(|e| err(e.into()))? {
            let (k, v) = row.map_err(|e| err(e.into()))?;
            let nwid = NetworkId(k.value());
            let settings =
                record::decode_network(v.value()).map_err(|e| damaged(format!("{e} ({nwid})")))?;
            state.networks.insert(
                nwid,
                StoredNetwork {
                    settings,
                    ..StoredNetwork::default()
                },
            );
        }
        let members = tx.open_table(MEMBERS).map_err(open)?;
        for row in members.iter().map_err(|e| err(e.into()))? {
            let (k, v) = row.map_err(|e| err(e.into()))?;
            let (n, a) = k.value();
            let nwid = NetworkId(n);
            let member = Address::new(a)
                .map_err(|_| damaged(format!("member key {a:#x} of {nwid} is no address")))?;
            let m = record::decode_member(v.value())
                .map_err(|e| damaged(format!("{e} ({nwid}/{member})")))?;
            state
                .networks
                .get_mut(&nwid)
                .ok_or_else(|| damaged(format!("member {member} of a missing network {nwid}")))?
                .members
                .insert(member, m);
        }
        Ok(Loaded { state, schema })
    }

    /// Writes `state` as schema [`SCHEMA_VERSION`] records (and drops a schema 1 table).
    fn write_all(db: &Database, location: &str, state: &ControllerState) -> Result<(), StoreError> {
        let err = |e: redb::Error| engine(location, e);
        let tx = db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut meta = tx.open_table(META).map_err(|e| err(e.into()))?;
            let mut nets = tx.open_table(NETWORKS).map_err(|e| err(e.into()))?;
            let mut members = tx.open_table(MEMBERS).map_err(|e| err(e.into()))?;
            for (nwid, n) in &state.networks {
                let rec = record::encode_network(&n.settings);
                nets.insert(nwid.0, rec.as_bytes())
                    .map_err(|e| err(e.into()))?;
                for (a, m) in &n.members {
                    let rec = record::encode_member(m);
                    members
                        .insert((nwid.0, a.to_u64()), rec.as_bytes())
                        .map_err(|e| err(e.into()))?;
                }
            }
            meta.insert(LAST_ISSUED_KEY, state.last_issued)
                .map_err(|e| err(e.into()))?;
            meta.insert(SCHEMA_KEY, SCHEMA_VERSION)
                .map_err(|e| err(e.into()))?;
        }
        match tx.delete_table(LEGACY) {
            Ok(_) => {}
            Err(e) => return Err(err(e.into())),
        }
        tx.commit().map_err(|e| err(e.into()))
    }

    /// Loads a database held in memory (a copy of a file), without touching any file.
    /// Never panics: a panic of the engine is caught.
    pub(super) fn check_bytes(location: &str, bytes: &[u8]) -> Result<Loaded, StoreError> {
        let db = guarded(location, || {
            let mem = InMemoryBackend::new();
            mem.set_len(bytes.len() as u64)
                .and_then(|()| mem.write(0, bytes))
                .map_err(|e| engine(location, e))?;
            if bytes.is_empty() {
                // The engine would make a new database in an empty file.
                return Err(StoreError::Missing {
                    location: location.to_string(),
                });
            }
            Database::builder()
                .create_with_backend(mem)
                .map_err(|e| engine(location, e))
        })?;
        let loaded = guarded(location, || read_all(&db, location));
        if matches!(loaded, Err(StoreError::Panicked { .. })) {
            // The engine is in an unknown state: do not run its Drop.
            std::mem::forget(db);
        } else if let Err(p) = catch_unwind(AssertUnwindSafe(move || drop(db))) {
            return Err(StoreError::Panicked {
                location: location.to_string(),
                message: panic_message(p.as_ref()),
            });
        }
        loaded
    }

    impl RedbStore {
        /// The copy kept before the file at `path` is upgraded from schema `from`.
        pub fn backup_path(path: &Path, from: u64) -> PathBuf {
            let mut name = path.file_name().unwrap_or_default().to_os_string();
            name.push(format!(".schema{from}.backup"));
            path.with_file_name(name)
        }

        /// Opens the database at `path`, creating it (empty, current schema) only when no
        /// file is there, and returns its state. An existing file that cannot be read
        /// completely is an error and is left as it was.
        pub fn open(path: &Path) -> Result<(RedbStore, ControllerState), StoreError> {
            let location = path.display().to_string();
            let io = |e: std::io::Error| engine(&location, e);
            let bytes = match std::fs::read(path) {
                Ok(b) => Some(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(io(e)),
            };
            let Some(bytes) = bytes else {
                return Self::create(path, &location).map(|s| (s, ControllerState::default()));
            };
            let loaded = check_bytes(&location, &bytes)?;
            if loaded.schema != SCHEMA_VERSION {
                let backup = Self::backup_path(path, loaded.schema);
                Self::write_backup(&backup, &bytes).map_err(|source| StoreError::Backup {
                    location: location.clone(),
                    backup: backup.display().to_string(),
                    source,
                })?;
                tracing::info!(
                    from = loaded.schema,
                    to = SCHEMA_VERSION,
                    backup = %backup.display(),
                    "upgrading the controller database"
                );
            }
            let db = guarded(&location, || {
                Database::open(path).map_err(|e| engine(&location, e))
            })?;
            if loaded.schema != SCHEMA_VERSION {
                write_all(&db, &location, &loaded.state)?;
            }
            Ok((RedbStore { db, location }, loaded.state))
        }

        /// A new file with the current schema and no networks, made aside and renamed into
        /// place, so `path` never holds a database without its schema record.
        fn create(path: &Path, location: &str) -> Result<RedbStore, StoreError> {
            let io = |e: std::io::Error| engine(location, e);
            let mut name = path.file_name().unwrap_or_default().to_os_string();
            name.push(format!(".new{}", std::process::id()));
            let tmp = path.with_file_name(name);
            let _ = std::fs::remove_file(&tmp);
            {
                let db = Database::create(&tmp).map_err(|e| engine(location, e))?;
                write_all(&db, location, &ControllerState::default())?;
            }
            std::fs::rename(&tmp, path).map_err(io)?;
            let db = Database::open(path).map_err(|e| engine(location, e))?;
            Ok(RedbStore {
                db,
                location: location.to_string(),
            })
        }

        fn write_backup(backup: &Path, bytes: &[u8]) -> std::io::Result<()> {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            // Never overwrite an earlier backup.
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(backup)?;
            f.write_all(bytes)?;
            f.sync_all()
        }

        /// Checks a database image held in memory as [`RedbStore::open`] checks a file,
        /// and returns its state (for tests and fuzzing: it never panics and writes
        /// nothing).
        pub fn check_image(bytes: &[u8]) -> Result<ControllerState, StoreError> {
            check_bytes("(image)", bytes).map(|l| l.state)
        }
    }

    impl Store for RedbStore {
        fn location(&self) -> &str {
            &self.location
        }

        fn load(&self) -> Result<ControllerState, StoreError> {
            guarded(&self.location, || read_all(&self.db, &self.location)).map(|l| l.state)
        }

        fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
            if changes.is_empty() {
                return Ok(());
            }
            let err = |e: redb::Error| engine(&self.location, e);
            let tx = self.db.begin_write().map_err(|e| err(e.into()))?;
            {
                let mut nets = tx.open_table(NETWORKS).map_err(|e| err(e.into()))?;
                let mut members = tx.open_table(MEMBERS).map_err(|e| err(e.into()))?;
                let mut meta = tx.open_table(META).map_err(|e| err(e.into()))?;
                for c in changes {
                    match c {
                        Change::Network {
                            nwid,
                            settings: Some(s),
                        } => {
                            let rec = record::encode_network(s);
                            nets.insert(nwid.0, rec.as_bytes())
                                .map_err(|e| err(e.into()))?;
                        }
                        Change::Network {
                            nwid,
                            settings: None,
                        } => {
                            nets.remove(nwid.0).map_err(|e| err(e.into()))?;
                            members
                                .retain_in((nwid.0, 0)..=(nwid.0, u64::MAX), |_, _| false)
                                .map_err(|e| err(e.into()))?;
                        }
                        Change::Member {
                            nwid,
                            member,
                            record: Some(m),
                            ..
                        } => {
                            let rec = record::encode_member(m);
                            members
                                .insert((nwid.0, member.to_u64()), rec.as_bytes())
                                .map_err(|e| err(e.into()))?;
                        }
                        Change::Member {
                            nwid,
                            member,
                            record: None,
                            ..
                        } => {
                            members
                                .remove((nwid.0, member.to_u64()))
                                .map_err(|e| err(e.into()))?;
                        }
                        Change::LastIssued(t) => {
                            meta.insert(LAST_ISSUED_KEY, *t)
                                .map_err(|e| err(e.into()))?;
                        }
                    }
                }
            }
            tx.commit().map_err(|e| err(e.into()))
        }
    }
}

#[cfg(all(test, feature = "store"))]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::controller::{Controller, NetworkSettings};
    use crate::identity::tests::test_identity;

    fn path(dir: &tempfile::TempDir) -> std::path::PathBuf {
        dir.path().join("controller.redb")
    }

    /// A database with one network and two members, and the controller that wrote it.
    fn sample(dir: &tempfile::TempDir) -> (Controller, NetworkId) {
        let (store, state) = RedbStore::open(&path(dir)).unwrap();
        assert_eq!(state, ControllerState::default());
        let now = Instant::now();
        let mut c = Controller::from_state(test_identity(31), 0, now, state);
        let nwid = c.create_network(3, NetworkSettings::default()).unwrap();
        c.set_authorized(now, nwid, test_identity(32).address(), true)
            .unwrap();
        c.set_authorized(now, nwid, test_identity(33).address(), false)
            .unwrap();
        c.set_member_name(nwid, test_identity(32).address(), Some("db".into()))
            .unwrap();
        store.apply(&c.take_changes()).unwrap();
        assert!(!c.has_changes());
        (c, nwid)
    }

    #[test]
    fn export_import_round_trip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let (c, nwid) = sample(&dir);
        let text = export_json(c.address(), &c.state());
        let (addr, state) = import_json(&text).unwrap();
        assert_eq!((addr, &state), (c.address(), &c.state()));
        assert_eq!(diff(&ControllerState::default(), &state), {
            let mut all = changes_of(&state);
            all.retain(|ch| !matches!(ch, Change::LastIssued(0)));
            all
        });
        assert!(diff(&state, &state).is_empty());
        let member = test_identity(32).address().to_string();
        let id = format!("\"id\": \"{nwid}\"");
        for (from, to, want) in [
            ("\"authorized\": true", "\"authorized\": 1", "member record"),
            ("zt-controller-export", "other", "format"),
            (id.as_str(), "\"id\": \"0000000001000003\"", "not run by"),
            (&member, "xyz", "no address"),
        ] {
            let broken = text.replacen(from, to, 1);
            assert_ne!(broken, text, "{from}");
            let e = import_json(&broken).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn records_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, nwid) = sample(&dir);
        let (store, state) = RedbStore::open(&path(&dir)).unwrap();
        assert_eq!(state, c.state());
        // One member removed, one network deleted and made again: its old members go.
        let other = c.create_network(4, NetworkSettings::default()).unwrap();
        c.set_authorized(Instant::now(), other, test_identity(34).address(), true)
            .unwrap();
        store.apply(&c.take_changes()).unwrap();
        store
            .delete_member(nwid, test_identity(33).address())
            .unwrap();
        c.delete_network(other).unwrap();
        c.create_network(4, NetworkSettings::default()).unwrap();
        store.apply(&c.take_changes()).unwrap();
        let back = store.load().unwrap();
        assert_eq!(back.networks[&other].members.len(), 0);
        assert_eq!(back.networks[&nwid].members.len(), 1);
    }

    #[test]
    fn schema_1_is_upgraded_after_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let mut c = Controller::new(test_identity(31), 0, now);
        let nwid = c.create_network(3, NetworkSettings::default()).unwrap();
        c.set_authorized(now, nwid, test_identity(32).address(), true)
            .unwrap();
        {
            let db = redb::Database::create(path(&dir)).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let legacy: redb::TableDefinition<'_, &str, &str> =
                    redb::TableDefinition::new("controller");
                let mut t = tx.open_table(legacy).unwrap();
                t.insert("state", c.to_json().as_str()).unwrap();
            }
            tx.commit().unwrap();
        }
        let before = std::fs::read(path(&dir)).unwrap();
        let (store, state) = RedbStore::open(&path(&dir)).unwrap();
        assert_eq!(state, c.state());
        let backup = RedbStore::backup_path(&path(&dir), 1);
        assert_eq!(std::fs::read(&backup).unwrap(), before);
        assert_eq!(store.load().unwrap(), c.state());
        drop(store);
        // Now schema 2: opened again without another backup.
        let (_, again) = RedbStore::open(&path(&dir)).unwrap();
        assert_eq!(again, c.state());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    fn write_raw(p: &std::path::Path, f: impl FnOnce(&redb::WriteTransaction)) {
        let db = redb::Database::create(p).unwrap();
        let tx = db.begin_write().unwrap();
        f(&tx);
        tx.commit().unwrap();
    }

    #[test]
    fn unreadable_states_are_errors_and_left_alone() {
        let meta: redb::TableDefinition<'_, &str, u64> = redb::TableDefinition::new("meta");
        let members: redb::TableDefinition<'_, (u64, u64), &[u8]> =
            redb::TableDefinition::new("members");
        type Make<'a> = Box<dyn Fn(&std::path::Path) + 'a>;
        let cases: Vec<(&str, Make<'_>)> = vec![
            (
                "holds no controller state",
                Box::new(|p| write_raw(p, |_| {})),
            ),
            (
                "holds no controller state",
                Box::new(|p| write_raw(p, |tx| drop(tx.open_table(meta).unwrap()))),
            ),
            (
                "schema version 9",
                Box::new(|p| {
                    write_raw(p, |tx| {
                        tx.open_table(meta)
                            .unwrap()
                            .insert("schema_version", 9)
                            .unwrap();
                    })
                }),
            ),
            (
                "member record",
                Box::new(|p| {
                    let (s, _) = RedbStore::open(p).unwrap();
                    s.put_network(NetworkId(7), &NetworkSettings::default())
                        .unwrap();
                    drop(s);
                    write_raw(p, |tx| {
                        tx.open_table(members)
                            .unwrap()
                            .insert((7, 0x0102030405), &br#"{"authorized":tru"#[..])
                            .unwrap();
                    })
                }),
            ),
            (
                "missing network",
                Box::new(|p| {
                    let (s, _) = RedbStore::open(p).unwrap();
                    s.put_member(
                        NetworkId(7),
                        Address::new(0x0102030405).unwrap(),
                        &Member::default(),
                    )
                    .unwrap();
                }),
            ),
            (
                "holds no controller state",
                Box::new(|p| std::fs::write(p, b"").unwrap()),
            ),
            (
                "controller database",
                Box::new(|p| std::fs::write(p, b"not a database").unwrap()),
            ),
        ];
        for (want, make) in cases {
            let dir = tempfile::tempdir().unwrap();
            make(&path(&dir));
            let before = std::fs::read(path(&dir)).unwrap();
            let e = RedbStore::open(&path(&dir)).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
            assert!(e.contains(&path(&dir).display().to_string()), "{e}");
            assert_eq!(
                std::fs::read(path(&dir)).unwrap(),
                before,
                "{want}: file changed"
            );
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "{want}");
        }
    }

    /// Every byte of the database's pages that hold data, and a sample of the rest, flipped
    /// one at a time: the check answers a state or an error, and never panics.
    #[test]
    fn byte_flips_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _) = sample(&dir);
        let image = std::fs::read(path(&dir)).unwrap();
        assert_eq!(RedbStore::check_image(&image).unwrap(), c.state());
        // Quiet the default hook: a caught panic is still printed by it.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        // The header and the first page whole, then every non-zero byte (pages in use),
        // then a sample of the rest: bounded to a few thousand opens.
        const HEAD: usize = 4096;
        let mut positions: Vec<usize> = (0..image.len().min(HEAD)).step_by(2).collect();
        let used: Vec<usize> = (HEAD..image.len()).filter(|i| image[*i] != 0).collect();
        positions.extend(used.iter().step_by(used.len() / 1500 + 1));
        positions.extend((HEAD..image.len()).step_by(image.len() / 200 + 1));
        let (mut ok, mut refused, mut panicked) = (0, 0, 0);
        let mut failing = Vec::new();
        for &i in &positions {
            let mut bad = image.clone();
            bad[i] ^= 0xff;
            match RedbStore::check_image(&bad) {
                Ok(_) => ok += 1,
                Err(StoreError::Panicked { .. }) => {
                    panicked += 1;
                    failing.push(i);
                }
                Err(_) => {
                    refused += 1;
                    failing.push(i);
                }
            }
        }
        // The same flips in the file itself: open refuses them and leaves the file as it was.
        for &i in failing.iter().take(40) {
            let mut bad = image.clone();
            bad[i] ^= 0xff;
            std::fs::write(path(&dir), &bad).unwrap();
            let e = RedbStore::open(&path(&dir)).unwrap_err();
            assert!(e.to_string().contains("controller.redb"), "{e}");
            assert!(
                std::fs::read(path(&dir)).unwrap() == bad,
                "flip at {i}: file changed"
            );
        }
        std::panic::set_hook(hook);
        eprintln!(
            "{} flips of a {}-byte database: {ok} read, {refused} refused, {panicked} engine \
             panics caught",
            positions.len(),
            image.len()
        );
        assert!(refused > 0);
    }
}
