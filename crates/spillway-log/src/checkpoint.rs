//! Named consumer checkpoints, kept in `checkpoints.redb` inside the log
//! directory (see the crate docs, "Consumer checkpoints").

use spillway_core::time::now_us;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition,
    TableError,
};

use crate::dir_lock::DirLock;
use crate::error::LogError;
use crate::segment::sync_dir;

/// Name of the checkpoint database inside the log directory.
pub(crate) const CHECKPOINTS_FILE_NAME: &str = "checkpoints.redb";
/// name → (lsn, updated_at_us).
const TABLE: TableDefinition<'static, &str, (u64, i64)> = TableDefinition::new("checkpoints");
/// name → (requested_lsn, resume_lsn): a consumer whose checkpoint was
/// found beyond the log's end at open and reset; it must be told
/// (`requery_required`) before it reads on.
const REQUERY: TableDefinition<'static, &str, (u64, u64)> = TableDefinition::new("requery");
/// Longest accepted checkpoint name, in bytes.
pub(crate) const MAX_NAME_BYTES: usize = 256;
/// Memory redb may use for caching; the table is tiny.
const CACHE_BYTES: usize = 4 * 1024 * 1024;
/// How long `open` waits while [`crate::inspect`] briefly holds the database
/// open read-only (it takes a shared lock on the file for a moment).
const OPEN_RETRY_FOR: Duration = Duration::from_secs(2);

/// One consumer's position: it has processed every record up to and
/// including `lsn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The consumer's name.
    pub name: String,
    /// Last lsn the consumer has processed (0 = nothing yet).
    pub lsn: u64,
    /// When the checkpoint was last set, µs since the Unix epoch.
    pub updated_at_us: i64,
}

/// A consumer whose checkpoint was reset because the log ends before it
/// (see [`CheckpointStore::reset_ahead`]): it has seen records that the log
/// no longer holds, and must re-read its tables before it continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingRequery {
    /// The lsn the consumer would have read next (its old checkpoint + 1).
    pub requested_lsn: u64,
    /// Where it continues (the log's end at the reset + 1).
    pub resume_lsn: u64,
}

/// Durable named consumer checkpoints of one log directory. Cheap to clone;
/// all clones share one open database. Every method does blocking file
/// I/O: from async code call it in `spawn_blocking`.
///
/// A store (any clone of it) holds the directory's lock, like the
/// [`ChangeLog`](crate::ChangeLog) it came from.
#[derive(Clone)]
pub struct CheckpointStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    path: PathBuf,
    /// Bumped after every committed change (for [`CheckpointStore::subscribe`]).
    changes: tokio::sync::watch::Sender<u64>,
    /// Per name: how often it changed (for [`CheckpointStore::version`]).
    versions: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// Dropped after `db` (field order): the database is closed before the
    /// directory can be opened again.
    _lock: Arc<DirLock>,
}

impl std::fmt::Debug for CheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

fn db_err(op: &'static str, path: &Path, e: impl Into<redb::Error>) -> LogError {
    LogError::CheckpointStore {
        op,
        path: path.to_path_buf(),
        source: Box::new(e.into()),
    }
}

fn validate_name(name: &str) -> Result<(), LogError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_NAME_BYTES {
        "longer than 256 bytes"
    } else {
        return Ok(());
    };
    Err(LogError::InvalidCheckpointName {
        name: name.chars().take(64).collect(),
        reason,
    })
}

/// Every checkpoint in `db`, sorted by name (redb keeps `&str` keys in
/// byte order, which is `String`'s order).
pub(crate) fn read_all(db: &impl ReadableDatabase) -> Result<Vec<Checkpoint>, redb::Error> {
    let txn = db.begin_read()?;
    let table = match txn.open_table(TABLE) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (name, value) = entry?;
        let (lsn, updated_at_us) = value.value();
        out.push(Checkpoint {
            name: name.value().to_owned(),
            lsn,
            updated_at_us,
        });
    }
    Ok(out)
}

impl CheckpointStore {
    /// Opens (creating if missing) the checkpoint store of the log directory
    /// `dir` (created if missing). Takes the directory's lock: fails with
    /// [`LogError::AlreadyOpen`] while a [`ChangeLog`](crate::ChangeLog) or
    /// another store has the directory open, here or in another process.
    /// Use [`ChangeLog::checkpoints`](crate::ChangeLog::checkpoints) when the
    /// log is open.
    pub fn open(dir: &Path) -> Result<CheckpointStore, LogError> {
        std::fs::create_dir_all(dir).map_err(|e| LogError::io("create directory", dir, e))?;
        let lock = Arc::new(DirLock::acquire(dir)?);
        CheckpointStore::open_locked(dir, lock)
    }

    /// Opens the store of `dir`, whose lock the caller holds.
    pub(crate) fn open_locked(dir: &Path, lock: Arc<DirLock>) -> Result<CheckpointStore, LogError> {
        let path = dir.join(CHECKPOINTS_FILE_NAME);
        let existed = path.exists();
        let started = Instant::now();
        let db = loop {
            match Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(&path)
            {
                Ok(db) => break db,
                // Another process can only hold it briefly (`inspect`), as
                // we hold the directory lock; in this process, a leaked
                // handle would hold it forever.
                Err(DatabaseError::DatabaseAlreadyOpen) if started.elapsed() < OPEN_RETRY_FOR => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(DatabaseError::DatabaseAlreadyOpen) => {
                    return Err(LogError::AlreadyOpen {
                        dir: dir.to_path_buf(),
                    })
                }
                Err(e) => return Err(db_err("open", &path, e)),
            }
        };
        let store = CheckpointStore {
            inner: Arc::new(Inner {
                db,
                path,
                changes: tokio::sync::watch::Sender::new(0),
                versions: std::sync::Mutex::default(),
                _lock: lock,
            }),
        };
        // Create the table once, so that read transactions find it.
        let has_table = store
            .inner
            .db
            .begin_read()
            .map_err(|e| db_err("begin transaction", store.path(), e))?
            .open_table(TABLE)
            .is_ok();
        if !has_table {
            store.write(&[], |_| Ok(()))?;
        }
        if !existed {
            sync_dir(dir)?;
        }
        Ok(store)
    }

    fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` in a write transaction and commits it durably.
    fn write<T>(
        &self,
        names: &[&str],
        f: impl FnOnce(&mut redb::Table<'_, &'static str, (u64, i64)>) -> Result<T, LogError>,
    ) -> Result<T, LogError> {
        let path = self.path();
        let mut txn = self
            .inner
            .db
            .begin_write()
            .map_err(|e| db_err("begin transaction", path, e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| db_err("set durability", path, e))?;
        let out = {
            let mut table = txn
                .open_table(TABLE)
                .map_err(|e| db_err("open table", path, e))?;
            f(&mut table)?
        };
        txn.commit().map_err(|e| db_err("commit", path, e))?;
        self.changed(names.iter().copied());
        Ok(out)
    }

    fn changed<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        {
            let mut versions = crate::lock::lock(&self.inner.versions);
            for name in names {
                let v = versions.entry(name.to_owned()).or_default();
                *v = v.wrapping_add(1);
            }
        }
        self.inner.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// How often checkpoint `name` changed since the store was opened (set,
    /// delete, reset, a requery recorded or cleared). An owner woken by
    /// [`subscribe`](CheckpointStore::subscribe) compares it with the
    /// version it last saw to tell a change of its own checkpoint from the
    /// many changes of others — without reading the database.
    pub fn version(&self, name: &str) -> u64 {
        crate::lock::lock(&self.inner.versions)
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    /// Notified after every change of any checkpoint (set, delete, reset),
    /// so that an owner notices a change made by someone else (an
    /// operator's rewind) without polling.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Creates the checkpoint `name` at `lsn` unless it exists; returns the
    /// checkpoint as it is afterwards. Durable when it returns `Ok`.
    pub fn ensure(&self, name: &str, lsn: u64) -> Result<Checkpoint, LogError> {
        validate_name(name)?;
        let path = self.path();
        let now = now_us();
        self.write(&[name], |table| {
            let current = table
                .get(name)
                .map_err(|e| db_err("read", path, e))?
                .map(|v| v.value());
            let (lsn, updated_at_us) = match current {
                Some(v) => v,
                None => {
                    table
                        .insert(name, (lsn, now))
                        .map_err(|e| db_err("write", path, e))?;
                    (lsn, now)
                }
            };
            Ok(Checkpoint {
                name: name.to_owned(),
                lsn,
                updated_at_us,
            })
        })
    }

    /// Sets `name` to `lsn` only if it is still at `expected` (an owner's
    /// update that must not overwrite someone else's change, such as an
    /// operator's rewind): fails with [`LogError::CheckpointMoved`] naming
    /// the current lsn otherwise. A missing checkpoint is at `0`.
    pub fn set_if(&self, name: &str, expected: u64, lsn: u64) -> Result<Checkpoint, LogError> {
        validate_name(name)?;
        let path = self.path();
        let updated_at_us = now_us();
        self.write(&[name], |table| {
            let current = table
                .get(name)
                .map_err(|e| db_err("read", path, e))?
                .map(|v| v.value().0);
            // A missing checkpoint counts as 0 (deleted, e.g. by `spillway
            // admin cdc forget-sink`): an owner told "moved to 0" and then
            // storing from 0 must succeed, not be told "moved" forever.
            let current = current.unwrap_or(0);
            if current != expected {
                return Err(LogError::CheckpointMoved {
                    name: name.to_owned(),
                    current,
                });
            }
            table
                .insert(name, (lsn, updated_at_us))
                .map_err(|e| db_err("write", path, e))?;
            Ok(())
        })?;
        Ok(Checkpoint {
            name: name.to_owned(),
            lsn,
            updated_at_us,
        })
    }

    /// The checkpoint called `name`, if any.
    pub fn get(&self, name: &str) -> Result<Option<Checkpoint>, LogError> {
        validate_name(name)?;
        let path = self.path();
        let txn = self
            .inner
            .db
            .begin_read()
            .map_err(|e| db_err("begin transaction", path, e))?;
        let table = match txn.open_table(TABLE) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(db_err("open table", path, e)),
        };
        let value = table.get(name).map_err(|e| db_err("read", path, e))?;
        Ok(value.map(|v| {
            let (lsn, updated_at_us) = v.value();
            Checkpoint {
                name: name.to_owned(),
                lsn,
                updated_at_us,
            }
        }))
    }

    /// Sets the checkpoint `name` to `lsn` (creating it if needed) and
    /// returns it. Durable when it returns `Ok` (the commit is fsynced).
    ///
    /// Never moves a checkpoint backward unless `force`: fails with
    /// [`LogError::CheckpointBackward`] when `lsn` is below the current one.
    /// Setting the current lsn again only refreshes `updated_at_us`.
    /// Concurrent calls are serialized, so the check and the update are
    /// atomic.
    pub fn set(&self, name: &str, lsn: u64, force: bool) -> Result<Checkpoint, LogError> {
        validate_name(name)?;
        let path = self.path();
        let updated_at_us = now_us();
        self.write(&[name], |table| {
            let current = table
                .get(name)
                .map_err(|e| db_err("read", path, e))?
                .map(|v| v.value().0);
            if let Some(current) = current {
                if lsn < current && !force {
                    return Err(LogError::CheckpointBackward {
                        name: name.to_owned(),
                        current,
                        requested: lsn,
                    });
                }
            }
            table
                .insert(name, (lsn, updated_at_us))
                .map_err(|e| db_err("write", path, e))?;
            Ok(())
        })?;
        Ok(Checkpoint {
            name: name.to_owned(),
            lsn,
            updated_at_us,
        })
    }

    /// Renames checkpoint `from` to `to` in one durable transaction if `to`
    /// does not exist yet and `from` does; returns the moved checkpoint.
    /// (How a sink's checkpoint stored under its bare name by an older
    /// version becomes `sink:NAME`, never lost and never doubled.)
    pub fn rename_if_absent(&self, from: &str, to: &str) -> Result<Option<Checkpoint>, LogError> {
        validate_name(from)?;
        validate_name(to)?;
        let path = self.path();
        let mut txn = self
            .inner
            .db
            .begin_write()
            .map_err(|e| db_err("begin transaction", path, e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| db_err("set durability", path, e))?;
        let moved = {
            let mut table = txn
                .open_table(TABLE)
                .map_err(|e| db_err("open table", path, e))?;
            let mut requery = txn
                .open_table(REQUERY)
                .map_err(|e| db_err("open table", path, e))?;
            let target = table
                .get(to)
                .map_err(|e| db_err("read", path, e))?
                .is_some();
            let old = if target {
                None
            } else {
                table
                    .remove(from)
                    .map_err(|e| db_err("delete", path, e))?
                    .map(|v| v.value())
            };
            if let Some((lsn, updated_at_us)) = old {
                table
                    .insert(to, (lsn, updated_at_us))
                    .map_err(|e| db_err("write", path, e))?;
                // A requery recorded under the old name goes along.
                let pending = requery
                    .remove(from)
                    .map_err(|e| db_err("delete", path, e))?
                    .map(|v| v.value());
                if let Some(pending) = pending {
                    requery
                        .insert(to, pending)
                        .map_err(|e| db_err("write", path, e))?;
                }
            }
            old.map(|(lsn, updated_at_us)| Checkpoint {
                name: to.to_owned(),
                lsn,
                updated_at_us,
            })
        };
        txn.commit().map_err(|e| db_err("commit", path, e))?;
        self.changed([from, to]);
        Ok(moved)
    }

    /// Deletes the checkpoint `name`; false if there was none. Durable when
    /// it returns `Ok`.
    pub fn delete(&self, name: &str) -> Result<bool, LogError> {
        validate_name(name)?;
        let path = self.path();
        let removed = self.write(&[name], |table| {
            let old = table.remove(name).map_err(|e| db_err("delete", path, e))?;
            Ok(old.is_some())
        })?;
        self.clear_requery(name)?;
        Ok(removed)
    }

    /// Resets every checkpoint beyond `end` (the log's committed lsn at
    /// open) to `end` and records a [`PendingRequery`] for it, in one
    /// durable transaction; returns `(name, old checkpoint)` of each.
    ///
    /// A checkpoint beyond the log's end means the consumer has seen
    /// records the log does not hold any more (a repaired or restored log
    /// directory): the lsns after `end` will be handed out again for other
    /// events, so continuing at the old checkpoint would silently skip
    /// them. The consumer continues at `end + 1`, told first.
    pub fn reset_ahead(&self, end: u64) -> Result<Vec<(String, u64)>, LogError> {
        let path = self.path();
        let ahead: Vec<(String, u64)> = self
            .list()?
            .into_iter()
            .filter(|c| c.lsn > end)
            .map(|c| (c.name, c.lsn))
            .collect();
        if ahead.is_empty() {
            return Ok(ahead);
        }
        let now = now_us();
        let mut txn = self
            .inner
            .db
            .begin_write()
            .map_err(|e| db_err("begin transaction", path, e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| db_err("set durability", path, e))?;
        {
            let mut table = txn
                .open_table(TABLE)
                .map_err(|e| db_err("open table", path, e))?;
            let mut requery = txn
                .open_table(REQUERY)
                .map_err(|e| db_err("open table", path, e))?;
            for (name, old) in &ahead {
                table
                    .insert(name.as_str(), (end, now))
                    .map_err(|e| db_err("write", path, e))?;
                // An earlier, not yet delivered reset keeps its older start.
                let requested = requery
                    .get(name.as_str())
                    .map_err(|e| db_err("read", path, e))?
                    .map_or(old + 1, |v| v.value().0.min(old + 1));
                requery
                    .insert(name.as_str(), (requested, end + 1))
                    .map_err(|e| db_err("write", path, e))?;
            }
        }
        txn.commit().map_err(|e| db_err("commit", path, e))?;
        self.changed(ahead.iter().map(|(name, _)| name.as_str()));
        Ok(ahead)
    }

    /// The pending `requery_required` of consumer `name`, if its checkpoint
    /// was reset by [`reset_ahead`](CheckpointStore::reset_ahead) and it was
    /// not yet told.
    pub fn pending_requery(&self, name: &str) -> Result<Option<PendingRequery>, LogError> {
        validate_name(name)?;
        let path = self.path();
        let txn = self
            .inner
            .db
            .begin_read()
            .map_err(|e| db_err("begin transaction", path, e))?;
        let table = match txn.open_table(REQUERY) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(db_err("open table", path, e)),
        };
        let value = table.get(name).map_err(|e| db_err("read", path, e))?;
        Ok(value.map(|v| {
            let (requested_lsn, resume_lsn) = v.value();
            PendingRequery {
                requested_lsn,
                resume_lsn,
            }
        }))
    }

    /// Forgets the pending `requery_required` of `name` (once it was
    /// delivered). Durable when it returns `Ok`.
    pub fn clear_requery(&self, name: &str) -> Result<(), LogError> {
        validate_name(name)?;
        let path = self.path();
        let mut txn = self
            .inner
            .db
            .begin_write()
            .map_err(|e| db_err("begin transaction", path, e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| db_err("set durability", path, e))?;
        {
            let mut table = txn
                .open_table(REQUERY)
                .map_err(|e| db_err("open table", path, e))?;
            table.remove(name).map_err(|e| db_err("delete", path, e))?;
        }
        txn.commit().map_err(|e| db_err("commit", path, e))?;
        self.changed([name]);
        Ok(())
    }

    /// Every checkpoint, sorted by name.
    pub fn list(&self) -> Result<Vec<Checkpoint>, LogError> {
        read_all(&self.inner.db).map_err(|e| db_err("read", self.path(), e))
    }

    /// The smallest checkpoint lsn (`None` without checkpoints): what
    /// age-based retention must keep (every record after it).
    pub fn min_lsn(&self) -> Result<Option<u64>, LogError> {
        Ok(self.list()?.iter().map(|c| c.lsn).min())
    }
}
