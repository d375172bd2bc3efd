//! # spillway-log — Spillway's durable change log
//!
//! One writer (the PostgreSQL source pipeline) appends records; any number of
//! readers (HTTP streams, sinks) read them concurrently. A record is an opaque
//! payload (the change event's JSON) plus a small header.
//!
//! ```text
//! source ──append──▶ bounded queue ──▶ writer thread ──write──▶ segment files
//!                                          │ commit point         ▲
//!                                          ▼                      │ fsync
//!                                     sync thread ────────────────┘
//!                                          │ publishes committed_lsn
//!                                          ▼
//!                      readers ◀── watch (subscribe) ── ChangeLog
//! ```
//!
//! ## Invariants
//!
//! * **Dense lsns.** Records carry the log's own sequence number, `lsn`,
//!   starting at 1 with no holes. The appender supplies it and it must equal
//!   [`LogWriter::next_lsn`] ([`LogError::LsnMismatch`] otherwise).
//! * **Visibility.** Each record has a `tx_end` flag. Readers only see records
//!   up to the *committed lsn*: the last **durable** (fsynced) record with
//!   `tx_end = true`. Records of a transaction whose end has not been made
//!   durable are invisible, and recovery deletes them.
//! * **What `append` promises.** [`LogWriter::append`] returning `Ok` means
//!   the record is *queued* — nothing more. (Records are staged in the
//!   handle and handed to the writer thread in batches of up to 256 records
//!   or 256 KiB, and at once when a record ends a transaction, so a queue
//!   operation and a thread wake-up cost per batch, not per record.) Durability is signalled through
//!   [`LogWriter::durable`] (positions of the last durable tx_end record) and
//!   [`ChangeLog::subscribe`] (committed lsn); [`LogWriter::flush`] waits for
//!   everything appended so far.
//! * **What survives a crash.** Everything up to the last fsynced tx_end
//!   record, i.e. everything that was ever visible. Nothing after it: the
//!   next open removes records after the last durable tx_end record, even
//!   after a clean close (an unfinished transaction never survives a reopen;
//!   the source re-sends it). Dropping a [`LogWriter`] without `close` still
//!   writes and fsyncs what was queued (staged records, which never include
//!   a transaction's end, are dropped: recovery would remove them anyway). A
//!   [`LogWriter::discard_uncommitted`] removes the unfinished transaction
//!   at once instead; what it removed never comes back, not even after a
//!   crash during it.
//! * **Discarding an unfinished transaction.**
//!   [`LogWriter::discard_uncommitted`] (for a replication connection that
//!   broke mid-transaction: PostgreSQL resends the whole transaction) makes
//!   at runtime exactly the cut recovery makes at open, without closing the
//!   log: in queue order, the writer writes and fsyncs everything queued
//!   before it, then removes every record after the last tx_end record —
//!   truncating the segment that holds the cut (just after that record, or
//!   to its bare header if the segment starts after it), deleting every
//!   newer segment with its index, deleting the cut segment's `.idx` (it is
//!   active again) and fsyncing the file and the directory. The committed
//!   lsn and [`ChangeLog::last_commit`] do not change;
//!   [`LogWriter::next_lsn`] becomes `committed lsn + 1`, so the resent
//!   records reuse the removed records' lsns (lsns stay dense, segments
//!   stay named by their first lsn). Readers never saw the removed records,
//!   and a reader holding an open segment whose read-ahead may contain
//!   them drops it and reopens before reading past the cut.
//! * **Group commit.** The writer thread encodes and writes records as they
//!   arrive. At a *commit point* — its queue is momentarily empty, 1 MiB has
//!   been written, or the oldest unsynced record is 5 ms old, whichever comes
//!   first, or a [`LogWriter::flush`] — it hands "everything written so far"
//!   to a sync thread and carries on writing. The sync thread fsyncs
//!   (requests arriving meanwhile coalesce into the next fsync) and then
//!   publishes the new committed lsn. So one fsync covers many records, and
//!   waiting for the disk overlaps with writing the next group. At most
//!   8 MiB may wait for fsync before the writer itself waits (then the
//!   bounded queue makes `append` wait: memory stays bounded). A segment is
//!   fsynced completely before the next one is created, and creating or
//!   deleting segment files also fsyncs the directory.
//! * **Poisoning ("fsyncgate").** If a write or fsync fails the log is
//!   poisoned: it is never retried (after a failed fsync the kernel may
//!   have marked the unwritten pages clean, so a retry or a later read
//!   could "succeed" on data that never reached the disk). The writer
//!   thread stops, waits for the sync thread, and cuts the active segment
//!   back to the last offset a successful fsync covered (truncate + fsync),
//!   so that a restart in the same boot cannot read those page-cache bytes
//!   back and confirm them. If that cut fails too, it writes a
//!   `durable-end` marker (segment + offset, fsynced, renamed into place)
//!   that the next open honours before reading anything. Appends and
//!   flushes return [`LogError::Poisoned`] with the first failure as its
//!   cause (the file, the operation and the OS error: ENOSPC, EIO, …); the
//!   process must reopen the log.
//! * **Readers never see bad data.** Every record read is length- and
//!   CRC-checked and its lsn compared with the expected one; any mismatch is
//!   returned as [`LogError::Corrupt`], never skipped.
//! * **Single process.** One `ChangeLog` per directory. [`ChangeLog::open`]
//!   takes an exclusive advisory lock on the directory's `LOCK` file
//!   ([`std::fs::File::try_lock`]: `flock` on Unix, `LockFileEx` on
//!   Windows) and writes its pid into it; a second open — in another
//!   process or in this one — fails at once with [`LogError::AlreadyOpen`].
//!   The lock is held as long as anything of the open log lives: the
//!   [`LogWriter`] (and its threads), any [`ChangeLog`] clone, any
//!   [`LogReader`], any [`CheckpointStore`] clone; it is released when the
//!   last of them drops (or the process dies — the OS releases it). The
//!   `LOCK` file itself stays (deleting it would race with the next
//!   opener). On a file system without advisory locks a warning is logged
//!   and only opens within this process are detected. [`inspect`] reads a
//!   directory without the lock.
//!
//! ## On-disk format (version 1)
//!
//! All integers are little-endian. The directory holds:
//!
//! * `NNNNNNNNNNNNNNNNNNNN.seg` — a segment, named by its first lsn as 20
//!   zero-padded decimal digits (e.g. `00000000000000000001.seg`);
//! * `NNNNNNNNNNNNNNNNNNNN.idx` — the sparse index of a **sealed** segment;
//! * `*.tmp` — half-written index files, deleted at open;
//! * `LOCK` — the single-process lock (holds the pid of the last opener);
//! * `checkpoints.redb` — consumer checkpoints (a [redb] database, see
//!   below);
//! * `trimmed`, `durable-end` (see recovery), `epochs` and
//!   `idle-confirmed` (see [`Epoch`] and [`ChangeLog::idle_confirmed`]) —
//!   small marker files, written atomically (tmp, fsync, rename, fsync
//!   the directory) with a magic and a CRC32C.
//!
//! [redb]: https://docs.rs/redb
//!
//! ### Segment file
//!
//! A 64-byte header followed by records back to back. A new segment is
//! started before a record that would make the active one exceed
//! `segment_bytes` (a segment always holds at least one record, so a single
//! record larger than `segment_bytes` gets a segment of its own).
//!
//! ```text
//! offset size field
//!      0    8 magic              "SPWLSEG\0"
//!      8    4 format version     1
//!     12    4 header length      64
//!     16    8 base_lsn           lsn of the first record (= file name)
//!     24    8 prev_commit.lsn    last tx_end record before this segment (0 = none)
//!     32    8 prev_commit.pg_commit_lsn
//!     40    8 prev_commit.pg_end_lsn
//!     48    8 prev_commit.timestamp_us (i64)
//!     56    4 reserved           0
//!     60    4 crc32c of bytes 0..60
//! ```
//!
//! `prev_commit` lets recovery restore [`ChangeLog::last_commit`] even when
//! retention has deleted every segment holding a tx_end record.
//!
//! ### Record
//!
//! ```text
//! offset size field
//!      0    4 len             payload length (<= 256 MiB)
//!      4    4 crc             crc32c over bytes 0..4 (len) and 8..end
//!      8    8 lsn
//!     16    8 timestamp_us    i64, µs since the Unix epoch
//!     24    1 flags           bit 0 = tx_end; other bits must be 0
//!     25    8 pg_commit_lsn   opaque to this crate
//!     33    8 pg_end_lsn      opaque to this crate
//!     41  len payload
//! ```
//!
//! The codec lives in the sans-IO [`record`] module.
//!
//! ### Index sidecar (`.idx`)
//!
//! ```text
//! offset size field
//!      0    8 magic           "SPWLIDX\0"
//!      8    4 version         1
//!     12    4 entry count n
//!     16    8 base_lsn
//!     24    8 last_lsn        lsn of the segment's last record
//!     32    8 segment length  bytes; must equal the .seg file size
//!     40    8 max timestamp   i64, largest record timestamp in the segment
//!     48 24*n entries         u64 lsn, u64 file offset, i64 max timestamp of the chunk
//!  48+24n   4 crc32c of everything before
//! ```
//!
//! An entry is made for the first record and then for the first record at
//! least `index_interval_bytes` past the previous entry. Each entry also
//! records the largest timestamp of its chunk, so
//! [`ChangeLog::lsn_for_timestamp`] is exact even if timestamps are not
//! monotonic. The index is written (tmp file + rename) when a segment is
//! sealed; at open it is used only if its checksum is valid and its base,
//! last lsn and segment length match, otherwise it is rebuilt by scanning.
//! The active segment's index is always rebuilt by scanning at open.
//!
//! ## Recovery (at [`ChangeLog::open`])
//!
//! 1. Delete `*.tmp` files and `.idx` files without a segment. An empty
//!    directory gets segment 1.
//! 2. If a `durable-end` marker exists (left by a failed write or fsync
//!    whose cut failed), cut its segment there first, fsync, remove it.
//! 3. Scan segments from the newest backwards, validating the header and every
//!    record (length, CRC, flags, dense lsns); a scan stops at the first torn
//!    or invalid record. Stop at the first (newest) segment containing a valid
//!    tx_end record, or at the oldest segment. Invalid bytes are classified:
//!    * in the newest segment with nothing valid after them, or with an
//!      aligned all-zero 4 KiB block before the next valid record (a block
//!      that write-back never reached before a crash; no fsync covering it
//!      ever succeeded): a **torn tail**, cut below;
//!    * in the newest segment followed by a valid record without such a
//!      hole, or anywhere in an older segment (each was fsynced whole before
//!      the next one was created): **damage** of durable, confirmed data.
//!      The open fails with [`LogError::Damaged`] (segment, offset, what
//!      follows) and changes nothing. The way out is a backup, or
//!      [`repair`] (`spillway admin cdc repair`), which cuts at the damage
//!      and keeps the cut-off bytes in `.damaged` files.
//! 4. Cut there: truncate that segment just after its last valid tx_end
//!    record (or to its bare header if there is none), delete every newer
//!    segment (newest first) with its index, delete the cut segment's own
//!    `.idx` (it is active again). The torn tail and any unfinished
//!    transaction, even one spanning several segments, are gone. A crash
//!    during recovery recovers to the same cut.
//! 5. fsync the kept active segment and the directory — always, not only
//!    after a cut: after a crash of the process (not the machine) the bytes
//!    may be in the page cache only. Only then is the committed lsn
//!    published (and confirmed to the source).
//! 6. The committed lsn and [`ChangeLog::last_commit`] come from that tx_end
//!    record (or, without one, from the oldest segment's header:
//!    `base_lsn - 1` and `prev_commit`).
//! 7. Load the indexes of the older (sealed) segments, rebuilding damaged or
//!    missing ones. Sealed segments that recovery does not cut into are not
//!    otherwise validated at open; damage there is reported by readers as
//!    [`LogError::Corrupt`] (never skipped).
//! 8. Every consumer checkpoint beyond the committed lsn (a repaired or
//!    restored directory: its lsns will be handed out again for other
//!    events) is reset to the committed lsn with a [`PendingRequery`]
//!    ([`CheckpointStore::reset_ahead`]); the consumer gets
//!    `requery_required` before it reads on, never a silent skip.
//!
//! [`LogWriter::discard_uncommitted`] performs step 4 on the open log (the
//! writer knows where the last tx_end record ends, so nothing is scanned
//! except the cut segment, to rebuild its index). If the process crashes
//! during it, recovery makes the same cut.
//!
//! ## Consumer checkpoints
//!
//! [`CheckpointStore`] (from [`ChangeLog::checkpoints`], or
//! [`CheckpointStore::open`] without the log) keeps named consumer
//! positions in `checkpoints.redb`: a checkpoint `(name, lsn)` says the
//! consumer has processed every record up to and including `lsn` (so it
//! resumes at `lsn + 1`; `0` = nothing yet). Names are 1 to 256 bytes.
//!
//! * [`CheckpointStore::set`] is durable when it returns `Ok`: each call is
//!   one redb write transaction committed with `Durability::Immediate`
//!   (fsynced). That costs an fsync per call: checkpoint periodically (or
//!   per batch), not per record.
//! * A checkpoint never moves backward unless `force` is passed
//!   ([`LogError::CheckpointBackward`]); concurrent calls are serialized, so
//!   the check is atomic. Rewinding to a position already trimmed is
//!   allowed; the consumer's reader then gets [`LogError::Trimmed`].
//! * redb is crash safe: a committed checkpoint survives a crash or power
//!   loss; an uncommitted one is not applied at all. After a crash redb
//!   repairs the file at the next open (quick: the table is tiny); until
//!   then [`inspect`] cannot read it (a read-only open cannot repair).
//! * Checkpoints are not changed by trimming or
//!   [`LogWriter::discard_uncommitted`]. At open, a checkpoint past the
//!   committed lsn is **not harmless**: the consumer saw records this log no
//!   longer holds, and the lsns after the end will be reused. It is reset
//!   (step 8 of recovery) and the consumer told.
//! * [`CheckpointStore::set_if`] lets an owner (a sink) update its
//!   checkpoint only if nobody else (an operator's rewind) changed it;
//!   [`CheckpointStore::subscribe`] notifies every change.
//! * All methods do blocking file I/O (call them from `spawn_blocking` in
//!   async code).
//!
//! ## Retention
//!
//! Records are only ever deleted as whole segments, oldest first and
//! contiguous from the oldest, never the active segment and never a segment
//! holding a record that is not yet visible (lsn > committed lsn). The
//! oldest lsn moves up accordingly; a reader positioned in a deleted
//! segment gets [`LogError::Trimmed`]. Deleting fsyncs the directory; a
//! crash in between leaves a contiguous log.
//!
//! * [`ChangeLog::apply_retention`] applies a [`RetentionPolicy`] (the
//!   caller runs it periodically, passing the current time):
//!   * `max_age` — a sealed segment is deleted when its newest record (the
//!     largest timestamp in it, kept in its index) is older than
//!     `now - max_age`, **but never past the lowest consumer checkpoint**:
//!     every record with lsn > min checkpoint is kept, so a consumer that
//!     fell behind holds age-based deletion back (including one whose
//!     checkpoint is already trimmed away; delete abandoned checkpoints).
//!   * `max_bytes` — while [`ChangeLog::disk_usage_bytes`] (segment and
//!     index files; not `LOCK` or `checkpoints.redb`) exceeds it, the
//!     oldest sealed segment is deleted. This limit **overrides
//!     checkpoints** (the disk must not fill up): a warning names each
//!     consumer whose position is trimmed away. The active segment is
//!     never deleted, so usage can stay above `max_bytes` by up to one
//!     segment (or more while an unfinished transaction spans segments).
//!     With [`LogOptions::max_bytes`] the writer enforces the same limit at
//!     every segment seal, so the cap holds between retention runs too.
//! * [`ChangeLog::trim_before`] is the operator's explicit trim
//!   (`spillway admin cdc trim --before-lsn N`, `POST /v1/admin/trim`): it
//!   deletes every segment whose records all have lsn `< N` and **ignores
//!   checkpoints**.
//!
//! ## Read-only inspection
//!
//! [`inspect`] summarises a log directory ([`LogSummary`]: oldest and
//! current lsn, segment count, disk usage, oldest/newest timestamps,
//! checkpoints) without opening it: no lock, no writer, no recovery (a torn
//! tail or an unfinished transaction is skipped over, not cut), no file
//! created or changed. It works while another process has the log open,
//! except for the checkpoints: redb lets a file be opened either by one
//! writer or by readers, and the running process holds it, so
//! `checkpoints` is then empty and [`LogSummary::checkpoints_unavailable`]
//! says why (ask the running process, e.g. its HTTP API). `inspect` holds
//! a shared lock on `checkpoints.redb` for a moment; a concurrent
//! [`ChangeLog::open`] waits up to 2 s for it. A missing directory or one
//! without segments gives [`LogError::NotALog`].

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod checkpoint;
mod dir_lock;
mod error;
mod index;
mod inspect;
mod lock;
mod marker;
mod reader;
pub mod record;
mod recovery;
mod repair;
mod segment;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;

pub use checkpoint::{Checkpoint, CheckpointStore, PendingRequery};
pub use error::LogError;
pub use inspect::{inspect, LogSummary};
pub use marker::{start_in_epochs, Epoch};
pub use reader::LogReader;
pub use repair::{repair, RepairCut, RepairReport};
pub use writer::LogWriter;

use dir_lock::DirLock;
use lock::{lock, read, write};
use segment::{open_checked, remove_if_exists, sync_dir, Segment, Step, SMALL_READ_BUF_BYTES};

/// Default segment size: 64 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Default append queue capacity, in records.
pub const DEFAULT_CHANNEL_CAPACITY: usize = 4096;
/// Default distance between sparse index entries: 64 KiB.
pub const DEFAULT_INDEX_INTERVAL_BYTES: u64 = 64 * 1024;
/// Smallest accepted `segment_bytes`.
pub const MIN_SEGMENT_BYTES: u64 = 256;

/// Configuration of a change log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogOptions {
    /// Directory holding the segment files (created if missing).
    pub dir: PathBuf,
    /// Target segment size in bytes (default 64 MiB, at least 256).
    pub segment_bytes: u64,
    /// Capacity of the append queue in records (default 4096). A full queue
    /// makes [`LogWriter::append`] wait, which bounds memory.
    pub channel_capacity: usize,
    /// Distance between sparse index entries in bytes (default 64 KiB).
    pub index_interval_bytes: u64,
    /// Size cap of segment and index files, enforced by the writer each
    /// time it seals a segment (oldest sealed segments are deleted, even
    /// past consumer checkpoints; see "Retention"). `None`: no cap.
    pub max_bytes: Option<u64>,
}

impl LogOptions {
    /// Options with the defaults for `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogOptions {
            dir: dir.into(),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            channel_capacity: DEFAULT_CHANNEL_CAPACITY,
            index_interval_bytes: DEFAULT_INDEX_INTERVAL_BYTES,
            max_bytes: None,
        }
    }

    fn validate(&self) -> Result<(), LogError> {
        if self.segment_bytes < MIN_SEGMENT_BYTES {
            return Err(LogError::InvalidOptions(format!(
                "segment_bytes must be at least {MIN_SEGMENT_BYTES}, got {}",
                self.segment_bytes
            )));
        }
        if self.channel_capacity == 0 {
            return Err(LogError::InvalidOptions(
                "channel_capacity must be at least 1".into(),
            ));
        }
        if self.index_interval_bytes == 0 {
            return Err(LogError::InvalidOptions(
                "index_interval_bytes must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// A record to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendRecord {
    /// Must equal [`LogWriter::next_lsn`].
    pub lsn: u64,
    /// Event time, µs since the Unix epoch (used by
    /// [`ChangeLog::lsn_for_timestamp`]).
    pub timestamp_us: i64,
    /// Whether this record ends its transaction (makes it and everything
    /// before it visible once durable).
    pub tx_end: bool,
    /// PostgreSQL commit lsn of the transaction (opaque).
    pub pg_commit_lsn: u64,
    /// PostgreSQL end lsn of the transaction (opaque).
    pub pg_end_lsn: u64,
    /// The event bytes.
    pub payload: Vec<u8>,
}

/// Where the last visible transaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitPosition {
    /// Log lsn of the transaction's tx_end record.
    pub lsn: u64,
    /// PostgreSQL commit lsn carried by that record.
    pub pg_commit_lsn: u64,
    /// PostgreSQL end lsn carried by that record.
    pub pg_end_lsn: u64,
    /// Timestamp of that record.
    pub timestamp_us: i64,
}

/// A record returned by a [`LogReader`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Log sequence number.
    pub lsn: u64,
    /// Timestamp given at append time.
    pub timestamp_us: i64,
    /// The event bytes.
    pub payload: Vec<u8>,
}

/// What [`ChangeLog::trim_before`] or [`ChangeLog::apply_retention`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrimReport {
    /// Number of segment files deleted.
    pub segments_deleted: usize,
    /// Bytes freed (segments and their indexes).
    pub bytes_freed: u64,
    /// Oldest lsn retained afterwards.
    pub oldest_lsn: u64,
}

/// What [`ChangeLog::apply_retention`] deletes. Each limit is off when
/// `None`; the default deletes nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Delete sealed segments whose newest record is older than this, but
    /// never records after the lowest consumer checkpoint.
    pub max_age: Option<std::time::Duration>,
    /// Delete the oldest sealed segments while segment and index files take
    /// more than this many bytes, even past consumer checkpoints.
    pub max_bytes: Option<u64>,
}

/// Counters of the writer since the log was opened (for metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Records made durable.
    pub records: u64,
    /// Encoded bytes made durable.
    pub bytes: u64,
    /// Group commits (fsyncs of segment data).
    pub fsyncs: u64,
    /// Total time spent in those fsyncs, µs.
    pub fsync_micros: u64,
    /// Segments started by rolling.
    pub rolls: u64,
}

#[derive(Default)]
pub(crate) struct StatCounters {
    pub(crate) records: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) fsyncs: AtomicU64,
    pub(crate) fsync_micros: AtomicU64,
    pub(crate) rolls: AtomicU64,
    pub(crate) retention_runs: AtomicU64,
}

/// State shared by the handle, the writer thread and readers.
pub(crate) struct Shared {
    pub(crate) opts: LogOptions,
    /// Oldest first; the last one is the active segment. Never empty.
    pub(crate) segments: RwLock<Vec<Arc<Segment>>>,
    pub(crate) committed: AtomicU64,
    pub(crate) committed_tx: watch::Sender<u64>,
    pub(crate) last_commit: Mutex<Option<CommitPosition>>,
    pub(crate) poisoned: AtomicBool,
    /// Largest record timestamp that trimming may have deleted
    /// (`i64::MIN`: nothing trimmed, `i64::MAX`: unknown).
    pub(crate) trimmed_max_ts: AtomicI64,
    /// The first failure that poisoned the log, as one line.
    poison_cause: Mutex<Option<String>>,
    pub(crate) stats: StatCounters,
    /// Number of [`LogWriter::discard_uncommitted`] calls that removed
    /// records. Readers compare it to drop read-ahead of removed records.
    pub(crate) discards: AtomicU64,
    pub(crate) trim_lock: Mutex<()>,
    pub(crate) checkpoints: CheckpointStore,
    /// The log's epochs, oldest first (see [`marker`]); never empty.
    pub(crate) epochs: Mutex<Vec<Epoch>>,
    /// The stored idle-confirm position (see [`marker`]).
    pub(crate) idle_confirmed: Mutex<marker::IdleConfirmed>,
    /// The directory lock; dropped last (field order), once the writer, the
    /// readers and every `ChangeLog` clone are gone.
    _dir_lock: Arc<DirLock>,
}

impl Shared {
    /// Poisons the log because of `e` (the first cause is kept).
    pub(crate) fn poison(&self, e: &LogError) {
        let cause = match e {
            LogError::Io { op, path, source } => format!("{op} {}: {source}", path.display()),
            LogError::Poisoned { cause } => cause.clone(),
            other => other.to_string(),
        };
        self.poison_msg(cause);
    }

    /// Poisons the log with `cause` (the first cause is kept).
    pub(crate) fn poison_msg(&self, cause: String) {
        lock(&self.poison_cause).get_or_insert(cause);
        self.poisoned.store(true, Ordering::Release);
    }

    /// The error appends and flushes return once the log is poisoned.
    pub(crate) fn poisoned_error(&self) -> LogError {
        LogError::Poisoned {
            cause: lock(&self.poison_cause)
                .clone()
                .unwrap_or_else(|| "unknown cause".into()),
        }
    }

    pub(crate) fn committed_lsn(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    pub(crate) fn oldest_lsn(&self) -> u64 {
        read(&self.segments).first().map_or(1, |s| s.base_lsn)
    }

    /// Deletes the `n` oldest segments, `n = choose(segments, deletable)`
    /// capped at `deletable`: the number of sealed segments, oldest first,
    /// holding only visible records. Returns the report and the oldest lsn
    /// from before.
    pub(crate) fn trim_oldest(
        &self,
        choose: impl FnOnce(&[Arc<Segment>], usize) -> usize,
    ) -> Result<(TrimReport, u64), LogError> {
        let _serial = lock(&self.trim_lock);
        // Only grows (a discard never lowers it): a stale value is safe.
        let visible_end = self.committed_lsn() + 1;
        let (removed, old_oldest): (Vec<Arc<Segment>>, u64) = {
            let mut segs = write(&self.segments);
            let old_oldest = segs.first().map_or(1, |s| s.base_lsn);
            // Segment `i` is sealed if `i + 1` exists, and holds only
            // visible records if it ends before `visible_end`.
            let deletable = (0..segs.len())
                .take_while(|&i| segs.get(i + 1).is_some_and(|s| s.base_lsn <= visible_end))
                .count();
            let n = choose(&segs, deletable).min(deletable);
            let doomed = segs.get(..n).unwrap_or_default();
            if let Some(newest) = doomed.iter().map(|seg| read(&seg.index).max_ts).max() {
                let max_ts = newest.max(self.trimmed_max_ts.load(Ordering::Acquire));
                // Persisted before anything is deleted, so that a reopen
                // knows the trimmed range too. A failure (a full disk, when
                // trimming matters most) does not stop the trim: the oldest
                // kept segment's header still bounds it after a reopen.
                if let Err(e) = recovery::write_trimmed_max_ts(&self.opts.dir, max_ts) {
                    tracing::warn!(error = %e, "change log: could not persist the trimmed range; a reopen estimates it from the oldest segment");
                }
                // Raised while the segments are still locked: a timestamp
                // lookup sees either both the old segments and the old
                // bound, or neither.
                self.trimmed_max_ts.fetch_max(max_ts, Ordering::AcqRel);
            }
            (segs.drain(..n).collect(), old_oldest)
        };
        let mut bytes_freed = 0;
        // Oldest first: a crash in between leaves a contiguous log.
        for seg in &removed {
            bytes_freed += seg.disk_bytes();
            remove_if_exists(&seg.path)?;
            remove_if_exists(&seg.idx_path)?;
        }
        if !removed.is_empty() {
            sync_dir(&self.opts.dir)?;
            tracing::info!(
                segments = removed.len(),
                bytes_freed,
                oldest_lsn = self.oldest_lsn(),
                "change log trimmed"
            );
        }
        Ok((
            TrimReport {
                segments_deleted: removed.len(),
                bytes_freed,
                oldest_lsn: self.oldest_lsn(),
            },
            old_oldest,
        ))
    }

    /// Deletes the oldest sealed segments while segment and index files
    /// take more than `max_bytes` (even past consumer checkpoints; a warning
    /// names each consumer whose position goes).
    pub(crate) fn enforce_max_bytes(&self, max_bytes: u64) -> Result<TrimReport, LogError> {
        let checkpoints = self.checkpoints.list()?;
        let (report, old_oldest) =
            self.trim_oldest(|segs, deletable| segments_over(segs, deletable, max_bytes))?;
        warn_trimmed_consumers(&checkpoints, old_oldest, report.oldest_lsn, max_bytes);
        Ok(report)
    }

    /// Whether `err` (from opening `seg`) is because retention deleted it.
    pub(crate) fn was_trimmed(&self, seg: &Segment, err: &LogError) -> bool {
        matches!(err, LogError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
            && self.oldest_lsn() > seg.base_lsn
    }

    /// The segment holding `lsn` and its last lsn (`u64::MAX` if active).
    pub(crate) fn segment_for(&self, lsn: u64) -> Result<(Arc<Segment>, u64), LogError> {
        let segs = read(&self.segments);
        let i = segs.partition_point(|s| s.base_lsn <= lsn);
        let Some(seg) = i.checked_sub(1).and_then(|i| segs.get(i)) else {
            return Err(LogError::Trimmed {
                requested: lsn,
                oldest: segs.first().map_or(1, |s| s.base_lsn),
            });
        };
        let bound = segs.get(i).map_or(u64::MAX, |next| next.base_lsn - 1);
        Ok((seg.clone(), bound))
    }
}

/// How many of the oldest `deletable` segments must go for `segs` to take at
/// most `max_bytes` (as many as can go if that is not enough).
fn segments_over(segs: &[Arc<Segment>], deletable: usize, max_bytes: u64) -> usize {
    let mut total: u64 = segs.iter().map(|s| s.disk_bytes()).sum();
    let mut n = 0;
    while total > max_bytes && n < deletable {
        total -= segs.get(n).map_or(0, |s| s.disk_bytes());
        n += 1;
    }
    n
}

/// Warns about the consumers whose next record was in `old_oldest..new_oldest`
/// (trimmed by the size limit before they read it).
fn warn_trimmed_consumers(
    checkpoints: &[Checkpoint],
    old_oldest: u64,
    new_oldest: u64,
    max_bytes: u64,
) {
    let trimmed: Vec<String> = checkpoints
        .iter()
        .filter(|c| {
            let next = c.lsn.saturating_add(1);
            next >= old_oldest && next < new_oldest
        })
        .map(|c| format!("{} (at lsn {})", c.name, c.lsn))
        .collect();
    if !trimmed.is_empty() {
        tracing::warn!(
            consumers = %trimmed.join(", "),
            oldest_lsn = new_oldest,
            max_bytes,
            "change log retention: size limit trimmed records that these consumers have not processed yet; they will get requery_required and must re-snapshot"
        );
    }
}

/// Handle to an open change log; cheap to clone, shared by all readers.
#[derive(Clone)]
pub struct ChangeLog {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ChangeLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeLog")
            .field("dir", &self.shared.opts.dir)
            .field("committed_lsn", &self.committed_lsn())
            .finish_non_exhaustive()
    }
}

impl ChangeLog {
    /// Opens (creating if missing) and recovers the log in `opts.dir`, then
    /// starts the writer thread. See the crate docs for the recovery rules.
    ///
    /// Takes the directory's lock first: fails with
    /// [`LogError::AlreadyOpen`] while another process (or anything of
    /// another open of it in this process) uses the directory. Also opens
    /// the consumer checkpoint store ([`ChangeLog::checkpoints`]).
    pub fn open(opts: LogOptions) -> Result<(ChangeLog, LogWriter), LogError> {
        opts.validate()?;
        std::fs::create_dir_all(&opts.dir)
            .map_err(|e| LogError::io("create directory", &opts.dir, e))?;
        let dir_lock = Arc::new(DirLock::acquire(&opts.dir)?);
        let rec = recovery::recover(&opts)?;
        let checkpoints = CheckpointStore::open_locked(&opts.dir, dir_lock.clone())?;
        // A checkpoint beyond the log's end (a repaired or restored
        // directory) must never become a silent skip of the lsns handed
        // out again: reset it, and the consumer is told first.
        for (name, old) in checkpoints.reset_ahead(rec.committed_lsn)? {
            tracing::warn!(
                consumer = %name,
                checkpoint = old,
                committed_lsn = rec.committed_lsn,
                "change log: a consumer's checkpoint is beyond the end of the log; reset to the end, it gets requery_required before it reads on"
            );
        }
        tracing::info!(
            dir = %opts.dir.display(),
            committed_lsn = rec.committed_lsn,
            segments = rec.segments.len(),
            "change log opened"
        );
        let oldest = rec.segments.first().map_or(1, |s| s.base_lsn);
        let epochs = marker::load_or_create_epochs(&opts.dir, oldest, rec.committed_lsn)?;
        let idle_confirmed = marker::read_idle_confirmed(&opts.dir);
        let (committed_tx, _) = watch::channel(rec.committed_lsn);
        let shared = Arc::new(Shared {
            opts,
            segments: RwLock::new(rec.segments),
            committed: AtomicU64::new(rec.committed_lsn),
            committed_tx,
            last_commit: Mutex::new(rec.last_commit),
            poisoned: AtomicBool::new(false),
            trimmed_max_ts: AtomicI64::new(rec.trimmed_max_ts),
            poison_cause: Mutex::new(None),
            stats: StatCounters::default(),
            discards: AtomicU64::new(0),
            trim_lock: Mutex::new(()),
            checkpoints,
            epochs: Mutex::new(epochs),
            idle_confirmed: Mutex::new(idle_confirmed),
            _dir_lock: dir_lock,
        });
        let writer = LogWriter::spawn(
            shared.clone(),
            rec.active_file,
            rec.active_index,
            rec.last_commit,
        )?;
        Ok((ChangeLog { shared }, writer))
    }

    /// Last visible lsn (0 if nothing was ever committed).
    pub fn committed_lsn(&self) -> u64 {
        self.shared.committed_lsn()
    }

    /// First lsn still retained. When no visible record is retained (empty
    /// log, or everything trimmed) this is `committed_lsn() + 1`.
    pub fn oldest_lsn(&self) -> u64 {
        self.shared.oldest_lsn()
    }

    /// Positions of the last visible tx_end record (restored at open; its
    /// lsn is normally `committed_lsn()`): tells the source where to resume
    /// and what it may confirm to PostgreSQL.
    pub fn last_commit(&self) -> Option<CommitPosition> {
        *lock(&self.shared.last_commit)
    }

    /// The log's epochs, oldest first (never empty): where lsns began to
    /// mean something new (see [`start_in_epochs`]).
    pub fn epochs(&self) -> Vec<Epoch> {
        lock(&self.shared.epochs).clone()
    }

    /// The epoch new records belong to.
    pub fn current_epoch(&self) -> Epoch {
        let epochs = lock(&self.shared.epochs);
        // Never empty (created at open); the fallback is unreachable.
        epochs.last().copied().unwrap_or(Epoch {
            id: 0,
            first_lsn: 1,
        })
    }

    /// The directory was written by a build from before epochs and the
    /// idle-confirm marker, and no capture start has taken the slot's
    /// position over since (see [`ChangeLog::trusted_slot_once`]).
    pub fn predates_epochs(&self) -> bool {
        marker::trust_slot_once(&self.shared.opts.dir)
    }

    /// Records that the slot's position of a log from an earlier build was
    /// taken over (stored with [`ChangeLog::record_idle_confirmed`] first):
    /// from now on a slot ahead of the log is a gap.
    pub fn trusted_slot_once(&self) -> Result<(), LogError> {
        marker::remove_trust_slot_once(&self.shared.opts.dir)
    }

    /// The highest source position stored by [`record_idle_confirmed`]
    /// (0: none): the source may have been confirmed up to it although the
    /// log's last commit ends before it.
    ///
    /// It counts only while the log still reaches the committed lsn it had
    /// when the position was stored: a cut below that (repair, or recovery
    /// cutting a damaged last record) voids it, so that the slot being ahead
    /// is taken for the gap it is.
    ///
    /// [`record_idle_confirmed`]: ChangeLog::record_idle_confirmed
    pub fn idle_confirmed(&self) -> u64 {
        let idle = *lock(&self.shared.idle_confirmed);
        if self.committed_lsn() >= idle.committed_lsn {
            idle.pg_lsn
        } else {
            0
        }
    }

    /// Durably stores that the source is about to be confirmed up to
    /// `pg_lsn` with nothing of it in the log (only uncaptured changes up
    /// to there). Must return before that confirmation is sent: at the
    /// next start, a slot confirmed beyond both this and the log's last
    /// commit is taken for a gap in the log. Blocking (fsync).
    pub fn record_idle_confirmed(&self, pg_lsn: u64) -> Result<(), LogError> {
        let mut idle = lock(&self.shared.idle_confirmed);
        let committed_lsn = self.committed_lsn();
        let valid = if committed_lsn >= idle.committed_lsn {
            idle.pg_lsn
        } else {
            0
        };
        if pg_lsn <= valid {
            return Ok(());
        }
        let next = marker::IdleConfirmed {
            pg_lsn,
            committed_lsn,
        };
        marker::write_idle_confirmed(&self.shared.opts.dir, next)?;
        *idle = next;
        Ok(())
    }

    /// Whether an earlier write or fsync failure poisoned the log.
    pub fn is_poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::Acquire)
    }

    /// Notifies changes of the committed lsn; readers wait on this instead of
    /// polling.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.committed_tx.subscribe()
    }

    /// A reader positioned at `from_lsn`. Positions past the committed lsn
    /// are allowed; the reader returns records once they become visible. A
    /// position below [`oldest_lsn`](ChangeLog::oldest_lsn) — given so, or
    /// trimmed before the first read — is never moved up silently: the
    /// reader's first [`read_batch`](LogReader::read_batch) returns
    /// [`LogError::Trimmed`] (`lsn 0` counts as 1).
    pub fn reader(&self, from_lsn: u64) -> Result<LogReader, LogError> {
        Ok(LogReader::new(self.shared.clone(), from_lsn.max(1)))
    }

    /// The first visible lsn whose record timestamp is `>= ts_us`, or
    /// `committed_lsn() + 1` if there is none.
    ///
    /// When records at or after `ts_us` may have been trimmed (the newest
    /// trimmed timestamp is `>= ts_us`, or unknown), returns
    /// `oldest_lsn() - 1`: a position below the oldest retained record, so a
    /// reader there reports [`LogError::Trimmed`] instead of silently
    /// starting later. (The newest trimmed timestamp is exact for trims by
    /// this process; after a reopen it is the commit time carried in the
    /// oldest segment's header.)
    pub fn lsn_for_timestamp(&self, ts_us: i64) -> Result<u64, LogError> {
        // One consistent view: trimming raises the bound while it holds the
        // segments locked, so these segments and this bound go together.
        let (segs, trimmed_max_ts): (Vec<Arc<Segment>>, i64) = {
            let segs = read(&self.shared.segments);
            (
                segs.clone(),
                self.shared.trimmed_max_ts.load(Ordering::Acquire),
            )
        };
        let oldest = segs.first().map_or(1, |s| s.base_lsn);
        if oldest > 1 && ts_us <= trimmed_max_ts {
            return Ok(oldest - 1);
        }
        let committed = self.committed_lsn();
        for (i, seg) in segs.iter().enumerate() {
            // Last lsn of this segment, if sealed.
            let bound = segs.get(i + 1).map_or(u64::MAX, |n| n.base_lsn - 1);
            let start = {
                let idx = read(&seg.index);
                if idx.max_ts < ts_us {
                    continue;
                }
                idx.first_chunk_with_ts(ts_us)
            };
            let Some(start) = start else { continue };
            if start.lsn > committed {
                break;
            }
            let mut cursor = match open_checked(seg, SMALL_READ_BUF_BYTES) {
                Ok(cursor) => cursor,
                // Trimmed while we looked: continue with what is retained.
                Err(e) if self.shared.was_trimmed(seg, &e) => continue,
                Err(e) => return Err(e),
            };
            cursor
                .seek(start.offset)
                .map_err(|e| LogError::io("seek segment", &seg.path, e))?;
            let mut lsn = start.lsn;
            loop {
                if lsn > committed {
                    return Ok(committed + 1);
                }
                let at = cursor.offset();
                match cursor
                    .next()
                    .map_err(|e| LogError::io("read segment", &seg.path, e))?
                {
                    Step::Record(rec) if rec.header.lsn == lsn => {
                        if rec.header.timestamp_us >= ts_us {
                            return Ok(lsn);
                        }
                        lsn += 1;
                    }
                    Step::End if lsn > bound => break,
                    other => {
                        let reason = reader::describe(&other, lsn);
                        tracing::error!(segment = %seg.path.display(), offset = at, %reason, "change log: corrupt record");
                        return Err(seg.corrupt(at));
                    }
                }
            }
        }
        Ok(committed + 1)
    }

    /// Deletes whole segments whose records all have lsn `< lsn` (never the
    /// active segment, never a record that is not yet visible).
    ///
    /// This is the operator's manual trim (`spillway admin cdc trim
    /// --before-lsn N`, `POST /v1/admin/trim`): it **ignores consumer
    /// checkpoints** — consumers positioned before the new oldest lsn get
    /// [`LogError::Trimmed`]. Use [`apply_retention`](ChangeLog::apply_retention)
    /// for policy-driven trimming that respects them.
    pub fn trim_before(&self, lsn: u64) -> Result<TrimReport, LogError> {
        Ok(self
            .shared
            .trim_oldest(|segs, deletable| {
                // Segment `i` (sealed) ends at `segs[i + 1].base_lsn - 1`.
                (0..deletable)
                    .take_while(|&i| segs.get(i + 1).is_some_and(|s| s.base_lsn <= lsn))
                    .count()
            })?
            .0)
    }

    /// Deletes the oldest whole segments that `policy` says to drop (see the
    /// crate docs, "Retention"), and reports what was deleted.
    ///
    /// * `max_age`: a sealed segment goes when its newest record timestamp
    ///   (the largest one in it) is older than `now_us - max_age`, as long as
    ///   every record in it is at or before the lowest consumer checkpoint
    ///   (records a consumer has not processed yet are kept).
    /// * `max_bytes`: while [`disk_usage_bytes`](ChangeLog::disk_usage_bytes)
    ///   exceeds it, the oldest sealed segment goes — even past consumer
    ///   checkpoints (a warning names the consumers whose position is
    ///   trimmed away; they get [`LogError::Trimmed`]).
    ///
    /// Only a contiguous run of segments starting at the oldest is deleted;
    /// never the active segment, never a segment holding records that are
    /// not yet visible. `now_us` is the current time, µs since the Unix
    /// epoch (a parameter, so that callers and tests control the clock).
    /// Blocking file I/O.
    pub fn apply_retention(
        &self,
        policy: &RetentionPolicy,
        now_us: i64,
    ) -> Result<TrimReport, LogError> {
        self.shared
            .stats
            .retention_runs
            .fetch_add(1, Ordering::Relaxed);
        if policy.max_age.is_none() && policy.max_bytes.is_none() {
            return Ok(TrimReport {
                segments_deleted: 0,
                bytes_freed: 0,
                oldest_lsn: self.oldest_lsn(),
            });
        }
        // Read before deleting: checkpoints only move forward (unless
        // forced), so an older view only keeps more.
        let checkpoints = self.shared.checkpoints.list()?;
        let min_checkpoint = checkpoints.iter().map(|c| c.lsn).min();
        let cutoff = policy
            .max_age
            .map(|age| now_us.saturating_sub(i64::try_from(age.as_micros()).unwrap_or(i64::MAX)));
        let mut by_age = 0;
        let (report, old_oldest) = self.shared.trim_oldest(|segs, deletable| {
            if let Some(cutoff) = cutoff {
                // Keep every record with lsn > min checkpoint: segment `i`
                // may go only if its last lsn (`segs[i + 1].base_lsn - 1`)
                // is <= the checkpoint.
                let keep_from = min_checkpoint.map_or(u64::MAX, |c| c.saturating_add(1));
                by_age = (0..deletable)
                    .take_while(|&i| {
                        segs.get(i).is_some_and(|s| read(&s.index).max_ts < cutoff)
                            && segs.get(i + 1).is_some_and(|s| s.base_lsn <= keep_from)
                    })
                    .count();
            }
            let by_size = policy
                .max_bytes
                .map_or(0, |max| segments_over(segs, deletable, max));
            by_age.max(by_size)
        })?;
        if report.segments_deleted > by_age {
            // max_bytes went further than the checkpoints allow.
            if let Some(max) = policy.max_bytes {
                warn_trimmed_consumers(&checkpoints, old_oldest, report.oldest_lsn, max);
            }
        }
        Ok(report)
    }

    /// How many times [`apply_retention`](ChangeLog::apply_retention) ran
    /// since open (for status and tests: "retention has run since …").
    pub fn retention_runs(&self) -> u64 {
        self.shared.stats.retention_runs.load(Ordering::Relaxed)
    }

    /// The consumer checkpoints stored with this log (`checkpoints.redb` in
    /// its directory), opened by [`ChangeLog::open`].
    pub fn checkpoints(&self) -> &CheckpointStore {
        &self.shared.checkpoints
    }

    /// Bytes used by segment and index files (the active segment as of the
    /// last group commit); `LOCK` and `checkpoints.redb` are not counted.
    pub fn disk_usage_bytes(&self) -> u64 {
        read(&self.shared.segments)
            .iter()
            .map(|s| s.disk_bytes())
            .sum()
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.shared.opts.dir
    }

    /// Writer counters since open.
    pub fn writer_stats(&self) -> WriterStats {
        let c = &self.shared.stats;
        WriterStats {
            records: c.records.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            fsync_micros: c.fsync_micros.load(Ordering::Relaxed),
            rolls: c.rolls.load(Ordering::Relaxed),
        }
    }
}

/// Fault injection for unit tests: an operation on a log directory fails
/// with a chosen OS error. In normal builds every check is a no-op.
pub(crate) mod faults {
    use std::io;
    use std::path::Path;

    /// Operations that can be made to fail.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) enum Op {
        /// fsync of a segment file (group commit, recovery, cuts).
        Fsync,
        /// write of records into a segment file.
        Write,
        /// truncation of a segment file.
        Truncate,
        /// writing the durable-end marker file.
        Marker,
    }

    #[cfg(test)]
    static FAIL: std::sync::Mutex<Vec<(std::path::PathBuf, Op, i32)>> =
        std::sync::Mutex::new(Vec::new());

    /// Makes every `op` in `dir` fail with the OS error `errno` from now on.
    #[cfg(test)]
    pub(crate) fn inject(dir: &Path, op: Op, errno: i32) {
        crate::lock::lock(&FAIL).push((dir.to_path_buf(), op, errno));
    }

    /// Stops injecting failures of `op` in `dir`.
    #[cfg(test)]
    pub(crate) fn clear(dir: &Path, op: Op) {
        crate::lock::lock(&FAIL).retain(|(d, o, _)| !(d == dir && *o == op));
    }

    /// Fails if a failure of `op` in `dir` is injected.
    #[cfg_attr(not(test), inline(always))]
    pub(crate) fn check(dir: &Path, op: Op) -> io::Result<()> {
        #[cfg(test)]
        if let Some((_, _, errno)) = crate::lock::lock(&FAIL)
            .iter()
            .find(|(d, o, _)| d == dir && *o == op)
        {
            return Err(io::Error::from_raw_os_error(*errno));
        }
        let _ = (dir, op);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
