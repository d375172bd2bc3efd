//! The single writer: an async handle feeding a dedicated OS thread that
//! does blocking file I/O with group commit.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use crate::error::LogError;
use crate::index::{encode_index_file, SegmentIndex};
use crate::lock::{lock, read, write};
use crate::record::{
    encode_record, encoded_len, RecordHeader, MAX_PAYLOAD_LEN, SEGMENT_HEADER_LEN,
};
use crate::recovery::create_segment_file;
use crate::segment::{
    cut_tail_file, cut_tail_segments, publish_index, sync_dir, sync_file, truncate_file,
    write_file_atomically, Segment,
};
use crate::{AppendRecord, CommitPosition, Shared};

/// fsync once this many bytes are unsynced, even if more records are queued.
pub(crate) const SYNC_BYTES: u64 = 1024 * 1024;
/// fsync once the oldest unsynced record is this old, even if more are queued.
pub(crate) const SYNC_INTERVAL: Duration = Duration::from_millis(5);
/// Records staged in the [`LogWriter`] before they go to the writer thread as
/// one command: one queue operation (and at most one thread wake-up) per batch
/// instead of per record. A transaction's last record always goes at once.
const STAGE_RECORDS: usize = 256;
/// Payload bytes staged before a batch goes regardless of its length.
const STAGE_BYTES: usize = 256 * 1024;
/// Most commands taken from the queue at once.
const RECV_BATCH: usize = 1024;
/// Encoded records are handed to the kernel in chunks of about this size.
const WRITE_CHUNK: usize = 256 * 1024;

pub(crate) enum Cmd {
    /// A batch of records, in lsn order (see [`LogWriter::append`]).
    Append(Vec<AppendRecord>),
    Flush(oneshot::Sender<Result<(), LogError>>),
    Close(oneshot::Sender<Result<(), LogError>>),
    DiscardUncommitted(oneshot::Sender<Result<Discarded, LogError>>),
}

/// Reply to [`Cmd::DiscardUncommitted`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Discarded {
    /// Number of records removed.
    records: u64,
    /// The lsn the next appended record must carry afterwards.
    next_lsn: u64,
}

type DiscardReply = oneshot::Receiver<Result<Discarded, LogError>>;

/// The one handle that appends to the log. Dropping it without
/// [`close`](LogWriter::close) still writes and fsyncs everything queued
/// (blocking the dropping thread until the writer thread has stopped).
pub struct LogWriter {
    shared: Arc<Shared>,
    tx: Option<mpsc::Sender<Cmd>>,
    next_lsn: u64,
    durable_rx: watch::Receiver<Option<CommitPosition>>,
    /// A discard whose caller stopped waiting (its future was dropped); it
    /// is settled before the next command so that `next_lsn` stays right.
    pending_discard: Option<DiscardReply>,
    /// Records accepted by `append` but not yet handed to the writer thread
    /// (never a tx_end record: one is sent at once, with everything before it).
    staged: Vec<AppendRecord>,
    staged_bytes: usize,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter")
            .field("dir", &self.shared.opts.dir)
            .field("next_lsn", &self.next_lsn)
            .finish_non_exhaustive()
    }
}

impl LogWriter {
    pub(crate) fn spawn(
        shared: Arc<Shared>,
        file: File,
        index: SegmentIndex,
        last_commit: Option<CommitPosition>,
    ) -> Result<LogWriter, LogError> {
        // The queue holds batches of up to STAGE_RECORDS records.
        let (tx, rx) = mpsc::channel((shared.opts.channel_capacity / STAGE_RECORDS).max(2));
        let (durable_tx, durable_rx) = watch::channel(last_commit);
        let seg = crate::lock::read(&shared.segments)
            .last()
            .cloned()
            .ok_or_else(|| LogError::InvalidOptions("no active segment".into()))?;
        let next_lsn = index.last_lsn + 1;
        // Recovery leaves the active segment ending just after the last
        // tx_end record (or as a bare header).
        let commit_end = CommitEnd {
            base_lsn: seg.base_lsn,
            offset: index.end_offset,
            next_lsn,
        };
        let sync = Arc::new(SyncShared::default());
        // Recovery made the active segment durable as it is.
        lock(&sync.state).durable_end = (seg.base_lsn, index.end_offset);
        let syncer = Syncer {
            shared: shared.clone(),
            sync: sync.clone(),
            durable_tx,
            published: last_commit,
        };
        let syncer = std::thread::Builder::new()
            .name("spillway-log-sync".into())
            .spawn(move || syncer.run())
            .map_err(|e| LogError::io("spawn sync thread", &shared.opts.dir, e))?;
        let state = WriterThread {
            shared: shared.clone(),
            rx,
            sync,
            syncer: Some(syncer),
            seg,
            file: Arc::new(file),
            index,
            buf: Vec::with_capacity(WRITE_CHUNK + 64 * 1024),
            unsynced_bytes: 0,
            unsynced_records: 0,
            unsynced_since: None,
            last_commit,
            commit_end,
        };
        let thread = std::thread::Builder::new()
            .name("spillway-log-writer".into())
            .spawn(move || state.run());
        let thread = match thread {
            Ok(thread) => thread,
            Err(e) => {
                // `state` was dropped with the closure, which stops the syncer.
                return Err(LogError::io("spawn writer thread", &shared.opts.dir, e));
            }
        };
        Ok(LogWriter {
            shared,
            tx: Some(tx),
            next_lsn,
            durable_rx,
            pending_discard: None,
            staged: Vec::with_capacity(STAGE_RECORDS),
            staged_bytes: 0,
            thread: Some(thread),
        })
    }

    /// The lsn the next appended record must carry.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Begins a new epoch at [`next_lsn`](LogWriter::next_lsn) (durably;
    /// no-op when the current epoch begins there) and returns it. For the
    /// source, before it appends a record saying the log lacks events
    /// before it: a client whose position is of an earlier epoch and at or
    /// beyond this lsn is moved back here (see [`crate::start_in_epochs`]).
    pub fn begin_epoch(&mut self) -> Result<crate::Epoch, LogError> {
        let mut epochs = crate::lock::lock(&self.shared.epochs);
        let next =
            crate::marker::begin_epoch(&self.shared.opts.dir, epochs.clone(), self.next_lsn)?;
        *epochs = next;
        Ok(*epochs.last().unwrap_or(&crate::Epoch {
            id: 0,
            first_lsn: self.next_lsn,
        }))
    }

    fn stopped_error(&self) -> LogError {
        if self.shared.poisoned.load(Ordering::Acquire) {
            self.shared.poisoned_error()
        } else {
            LogError::Closed
        }
    }

    async fn send(&mut self, cmd: Cmd) -> Result<(), LogError> {
        let tx = self.tx.as_ref().ok_or(LogError::Closed)?;
        if tx.send(cmd).await.is_err() {
            return Err(self.stopped_error());
        }
        Ok(())
    }

    /// Queues one record. Returns once the record is queued (waiting while
    /// the queue is full); it is **not yet durable** — watch
    /// [`durable`](LogWriter::durable) or call [`flush`](LogWriter::flush).
    ///
    /// Fails with [`LogError::LsnMismatch`] unless `rec.lsn == next_lsn()`,
    /// with [`LogError::RecordTooLarge`] for payloads over 256 MiB, and with
    /// [`LogError::Poisoned`] after a write or fsync failure.
    pub async fn append(&mut self, rec: AppendRecord) -> Result<(), LogError> {
        if self.pending_discard.is_some() {
            self.settle_discard().await?;
        }
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Err(self.shared.poisoned_error());
        }
        if rec.lsn != self.next_lsn {
            return Err(LogError::LsnMismatch {
                expected: self.next_lsn,
                got: rec.lsn,
            });
        }
        if rec.payload.len() > MAX_PAYLOAD_LEN {
            return Err(LogError::RecordTooLarge {
                len: rec.payload.len(),
                max: MAX_PAYLOAD_LEN,
            });
        }
        let ends_tx = rec.tx_end;
        self.staged_bytes += rec.payload.len();
        self.staged.push(rec);
        self.next_lsn += 1;
        if ends_tx || self.staged.len() >= STAGE_RECORDS || self.staged_bytes >= STAGE_BYTES {
            self.send_staged().await?;
        }
        Ok(())
    }

    /// Hands the staged records to the writer thread as one command.
    async fn send_staged(&mut self) -> Result<(), LogError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.staged, Vec::with_capacity(STAGE_RECORDS));
        self.staged_bytes = 0;
        self.send(Cmd::Append(batch)).await
    }

    /// Positions of the last durable tx_end record (initially the one
    /// restored by recovery). Changes after each group commit that made a
    /// new transaction end durable.
    pub fn durable(&self) -> watch::Receiver<Option<CommitPosition>> {
        self.durable_rx.clone()
    }

    /// Waits until every record appended so far is written and fsynced.
    pub async fn flush(&mut self) -> Result<(), LogError> {
        self.send_staged().await?;
        let (reply_tx, reply_rx) = oneshot::channel();
        self.send(Cmd::Flush(reply_tx)).await?;
        match reply_rx.await {
            Ok(res) => res,
            Err(_) => Err(self.stopped_error()),
        }
    }

    /// Removes the records of the unfinished transaction — every record
    /// appended after the last tx_end record — exactly as recovery would at
    /// the next open, but without closing the log. Returns how many records
    /// were removed (0 if the last appended record ends a transaction).
    ///
    /// Meant for the source after its replication connection broke in the
    /// middle of a transaction: PostgreSQL resends the whole transaction, so
    /// afterwards [`next_lsn`](LogWriter::next_lsn) is the lsn after the last
    /// tx_end record (`committed lsn + 1`) and appends continue densely from
    /// there, reusing the lsns of the removed records.
    ///
    /// Processed in order after everything queued before it: the writer
    /// writes and fsyncs what is queued (so every complete transaction
    /// before the cut becomes durable and visible), then truncates the
    /// segment holding the cut, deletes every newer segment with its index
    /// and fsyncs the file and the directory. Readers never saw the removed
    /// records (they were never visible) and keep working: a reader
    /// positioned after the last visible record reads the new records with
    /// the reused lsns once they are committed.
    ///
    /// Cancel-safe in the sense that dropping the future after the command
    /// was queued still performs the discard; the next `append` or
    /// `discard_uncommitted` waits for it and updates `next_lsn` first
    /// (until then `next_lsn()` still shows the value from before).
    ///
    /// Fails with [`LogError::Poisoned`] after a write or fsync failure; a
    /// failure during the discard itself also poisons the log (recovery at
    /// the next open then makes the same cut).
    pub async fn discard_uncommitted(&mut self) -> Result<u64, LogError> {
        // Staged records never include a tx_end record (one forces a send), so
        // they all belong to the unfinished transaction.
        let staged = self.staged.len() as u64;
        self.staged.clear();
        self.staged_bytes = 0;
        self.settle_discard().await?;
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Err(self.shared.poisoned_error());
        }
        let (reply_tx, reply_rx) = oneshot::channel();
        self.send(Cmd::DiscardUncommitted(reply_tx)).await?;
        self.pending_discard = Some(reply_rx);
        Ok(staged + self.settle_discard().await?.map_or(0, |d| d.records))
    }

    /// Waits for the outcome of a queued discard (if any) and applies it.
    async fn settle_discard(&mut self) -> Result<Option<Discarded>, LogError> {
        let Some(reply_rx) = self.pending_discard.as_mut() else {
            return Ok(None);
        };
        // If this future is dropped here, `pending_discard` stays set.
        let res = reply_rx.await;
        self.pending_discard = None;
        match res {
            Ok(Ok(d)) => {
                self.next_lsn = d.next_lsn;
                Ok(Some(d))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(self.stopped_error()),
        }
    }

    /// Flushes everything and stops the writer thread.
    pub async fn close(mut self) -> Result<(), LogError> {
        self.send_staged().await?;
        let (reply_tx, reply_rx) = oneshot::channel();
        self.send(Cmd::Close(reply_tx)).await?;
        let res = match reply_rx.await {
            Ok(res) => res,
            Err(_) => Err(self.stopped_error()),
        };
        // The thread has replied and is returning; joining is immediate.
        self.stop_thread();
        res
    }

    fn stop_thread(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                error!("change log writer thread panicked");
                self.shared
                    .poison_msg("the change log writer thread panicked".into());
            }
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// Most written-but-not-yet-durable bytes before the writer waits for the
/// sync thread (bounds the data a crash can lose and the dirty page cache).
const MAX_IN_FLIGHT_BYTES: u64 = 8 * SYNC_BYTES;

type Reply = oneshot::Sender<Result<(), LogError>>;

/// Work handed from the writer thread to the sync thread: "everything
/// written to `file` so far must be made durable". Jobs coalesce: a newer
/// request for the same file simply extends the pending one.
struct SyncJob {
    file: Arc<File>,
    seg: Arc<Segment>,
    /// Length of `file` when the job was (last) extended: durable once done.
    end_offset: u64,
    /// Last tx_end record written before this request.
    commit: Option<CommitPosition>,
    records: u64,
    bytes: u64,
    waiters: Vec<Reply>,
}

#[derive(Default)]
struct SyncState {
    pending: Option<SyncJob>,
    /// Bytes of the job being fsynced right now (0 when idle).
    busy_bytes: u64,
    busy: bool,
    failed: bool,
    stop: bool,
    /// The active segment (base lsn) is known durable up to this offset:
    /// what a failed write or fsync cuts the file back to.
    durable_end: (u64, u64),
}

#[derive(Default)]
struct SyncShared {
    state: Mutex<SyncState>,
    cond: Condvar,
    /// Held by the writer while it writes to the active segment and by the
    /// sync thread while it cuts the segment after a failed fsync, so that
    /// no write lands after the cut.
    write_gate: Mutex<()>,
    /// Set (under `write_gate`) once the sync thread has cut the segment
    /// after a failed fsync: the writer must not write again.
    cut: std::sync::atomic::AtomicBool,
}

impl SyncShared {
    fn wait<'a>(&self, guard: MutexGuard<'a, SyncState>) -> MutexGuard<'a, SyncState> {
        self.cond
            .wait(guard)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Group commit on its own thread, so that fsync (waiting for the disk)
/// overlaps with encoding and writing the next group.
struct Syncer {
    shared: Arc<Shared>,
    sync: Arc<SyncShared>,
    durable_tx: watch::Sender<Option<CommitPosition>>,
    published: Option<CommitPosition>,
}

impl Syncer {
    fn run(mut self) {
        loop {
            let job = {
                let mut st = lock(&self.sync.state);
                while st.pending.is_none() && !st.stop {
                    st = self.sync.wait(st);
                }
                let Some(job) = st.pending.take() else {
                    return; // stopped and nothing left to do
                };
                st.busy = true;
                st.busy_bytes = job.bytes;
                job
            };
            let end = (job.seg.base_lsn, job.end_offset);
            let ok = self.sync_job(job, |this, job| this.cut_after_failed_fsync(job));
            let mut st = lock(&self.sync.state);
            st.busy = false;
            st.busy_bytes = 0;
            if ok {
                st.durable_end = end;
            }
            if !ok {
                st.failed = true;
                if let Some(job) = st.pending.take() {
                    for w in job.waiters {
                        let _ = w.send(Err(self.shared.poisoned_error()));
                    }
                }
            }
            self.sync.cond.notify_all();
            if !ok {
                return;
            }
        }
    }

    /// After a failed fsync, before anyone hears of it: cuts the segment
    /// back to its last durable byte, so that the bytes the kernel may have
    /// marked clean without writing are gone from the page cache at once.
    /// Otherwise a process killed before the writer's own (fsynced) cut
    /// leaves them for the next open in this boot to read back as durable
    /// and confirm. The writer still makes its cut (fsynced, or a marker).
    fn cut_after_failed_fsync(&self, job: &SyncJob) {
        let _gate = lock(&self.sync.write_gate);
        self.sync.cut.store(true, Ordering::Release);
        let (base, offset) = lock(&self.sync.state).durable_end;
        if base != job.seg.base_lsn {
            return;
        }
        if let Err(e) = truncate_file(&job.file, &job.seg.path, &self.shared.opts.dir, offset) {
            error!(error = %e, segment = %job.seg.path.display(), offset, "change log: could not cut the segment back after the failed fsync");
        }
    }

    /// fsyncs and publishes one job; false if the fsync failed (then
    /// `on_failure` runs before any waiter is told).
    fn sync_job(&mut self, job: SyncJob, on_failure: impl FnOnce(&Self, &SyncJob)) -> bool {
        let started = Instant::now();
        let res = crate::faults::check(&self.shared.opts.dir, crate::faults::Op::Fsync)
            .and_then(|()| job.file.sync_data());
        if let Err(e) = res {
            // Never retry: after a failed fsync the state of the written
            // pages is unknown (the kernel may have marked them clean). The
            // writer cuts the segment back to what is known durable.
            // Cut first, then poison: nothing (not even an append that
            // would learn of the failure) gets ahead of the cut.
            on_failure(self, &job);
            self.shared
                .poison(&LogError::io("fsync", &job.seg.path, io_clone(&e)));
            error!(error = %e, segment = %job.seg.path.display(), "change log fsync failed; the log is poisoned until reopened");
            let mut waiters = job.waiters.into_iter();
            if let Some(first) = waiters.next() {
                let _ = first.send(Err(LogError::io("fsync", &job.seg.path, e)));
            }
            for w in waiters {
                let _ = w.send(Err(self.shared.poisoned_error()));
            }
            return false;
        }
        let stats = &self.shared.stats;
        stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        stats
            .fsync_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        stats.bytes.fetch_add(job.bytes, Ordering::Relaxed);
        stats.records.fetch_add(job.records, Ordering::Relaxed);
        if job.commit != self.published {
            if let Some(pos) = job.commit {
                self.shared.publish_commit(pos);
                self.durable_tx.send_replace(Some(pos));
            }
            self.published = job.commit;
        }
        for w in job.waiters {
            let _ = w.send(Ok(()));
        }
        true
    }
}

struct WriterThread {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Cmd>,
    sync: Arc<SyncShared>,
    syncer: Option<JoinHandle<()>>,
    /// Active segment.
    seg: Arc<Segment>,
    file: Arc<File>,
    /// Full index of the active segment, including buffered records.
    index: SegmentIndex,
    /// Encoded records not yet handed to the kernel.
    buf: Vec<u8>,
    /// Bytes / records appended but not yet handed to the sync thread.
    unsynced_bytes: u64,
    unsynced_records: u64,
    unsynced_since: Option<Instant>,
    /// Last tx_end record appended (durable or not).
    last_commit: Option<CommitPosition>,
    /// Where the last tx_end record appended ends: the cut made by
    /// [`discard_uncommitted`](WriterThread::discard_uncommitted).
    commit_end: CommitEnd,
}

/// The position just after the last tx_end record appended (or after the
/// segment header if the log holds no transaction end).
#[derive(Clone, Copy, Debug)]
struct CommitEnd {
    /// Base lsn of the segment holding it.
    base_lsn: u64,
    /// File offset in that segment.
    offset: u64,
    /// The lsn following that record (`committed lsn + 1` once durable).
    next_lsn: u64,
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        // Let the sync thread finish what it was given, then stop it.
        lock(&self.sync.state).stop = true;
        self.sync.cond.notify_all();
        if let Some(syncer) = self.syncer.take() {
            if syncer.join().is_err() {
                self.shared
                    .poison_msg("the change log sync thread panicked".into());
                error!("change log sync thread panicked");
            }
        }
    }
}

impl WriterThread {
    fn run(mut self) {
        if let Err(e) = self.run_inner() {
            self.shared.poison(&e);
            let e = self.shared.poisoned_error();
            error!(error = %e, dir = %self.shared.opts.dir.display(), "change log writer stopped; the log is poisoned until reopened");
            self.cut_to_durable();
            // Fail whoever waits on a flush; appends now fail on send.
            self.rx.close();
            while let Ok(cmd) = self.rx.try_recv() {
                match cmd {
                    Cmd::Flush(reply) | Cmd::Close(reply) => {
                        let _ = reply.send(Err(self.shared.poisoned_error()));
                    }
                    Cmd::DiscardUncommitted(reply) => {
                        let _ = reply.send(Err(self.shared.poisoned_error()));
                    }
                    Cmd::Append(_) => {}
                }
            }
        }
    }

    fn run_inner(&mut self) -> Result<(), LogError> {
        let mut batch = Vec::with_capacity(RECV_BATCH);
        loop {
            if self.unsynced_bytes > 0 && self.rx.is_empty() {
                // Queue momentarily empty: commit the group.
                self.commit_point(None)?;
            }
            // Taking many commands at once frees their queue slots in one go,
            // so a blocked appender wakes once per batch, not per record.
            if self.rx.blocking_recv_many(&mut batch, RECV_BATCH) == 0 {
                // Every sender is gone (the LogWriter was dropped).
                self.commit_point(None)?;
                return self.wait_durable();
            }
            for cmd in batch.drain(..) {
                match cmd {
                    Cmd::Append(records) => {
                        for rec in records {
                            self.append(rec)?;
                            if self.unsynced_bytes >= SYNC_BYTES {
                                self.commit_point(None)?;
                            }
                        }
                    }
                    Cmd::Flush(reply) => self.commit_point(Some(reply))?,
                    Cmd::DiscardUncommitted(reply) => {
                        let res = self.discard_uncommitted();
                        let failed = res.is_err();
                        if let Err(e) = &res {
                            // Before replying, so the caller sees it.
                            self.shared.poison(e);
                        }
                        let _ = reply.send(res);
                        if failed {
                            // The files may be half cut: stop here; the
                            // next open recovers to the same cut.
                            return Err(self.shared.poisoned_error());
                        }
                    }
                    Cmd::Close(reply) => {
                        let res = self.commit_point(None).and_then(|()| self.wait_durable());
                        let failed = res.is_err();
                        let _ = reply.send(res);
                        return if failed {
                            Err(self.shared.poisoned_error())
                        } else {
                            Ok(())
                        };
                    }
                }
            }
            if self
                .unsynced_since
                .is_some_and(|t| t.elapsed() >= SYNC_INTERVAL)
            {
                self.commit_point(None)?;
            }
        }
    }

    /// After a failed write or fsync: stops the sync thread, then cuts the
    /// active segment back to the last offset a successful fsync covered,
    /// so that no later open (in this boot, while the page cache still
    /// holds bytes the disk may never have received) reads them back and
    /// confirms them. If the cut itself fails, a durable-end marker tells
    /// the next open to make it; if even that fails, the error says so.
    fn cut_to_durable(&mut self) {
        {
            let mut st = lock(&self.sync.state);
            st.stop = true;
            self.sync.cond.notify_all();
            // Let an fsync in progress finish (its outcome decides the end).
            while st.busy {
                st = self.sync.wait(st);
            }
        }
        if let Some(syncer) = self.syncer.take() {
            if syncer.join().is_err() {
                error!("change log sync thread panicked");
            }
        }
        let (base, offset) = lock(&self.sync.state).durable_end;
        let dir = self.shared.opts.dir.clone();
        let path = self.seg.path.clone();
        let cut = if base == self.seg.base_lsn {
            truncate_file(&self.file, &path, &dir, offset)
                .and_then(|()| sync_file(&self.file, &path, &dir))
        } else {
            Err(LogError::Corrupt {
                segment: path.clone(),
                offset,
            })
        };
        match cut {
            Ok(()) => {
                info!(segment = %path.display(), offset, "change log: cut the active segment back to its last durable byte");
            }
            Err(e) => match crate::recovery::write_durable_end(&dir, base, offset) {
                Ok(()) => {
                    warn!(error = %e, segment = base, offset, "change log: could not cut the active segment back; the next open cuts it (durable-end marker written)");
                }
                Err(e2) => {
                    error!(error = %e, marker_error = %e2, segment = %path.display(), offset,
                        "change log: could neither cut the active segment back to its last durable byte nor record where that is; before restarting, truncate this segment to this offset (bytes after it may never have reached the disk)");
                }
            },
        }
    }

    fn poison(&self, e: LogError) -> LogError {
        self.shared.poison(&e);
        e
    }

    fn append(&mut self, rec: AppendRecord) -> Result<(), LogError> {
        let len = encoded_len(rec.payload.len()) as u64;
        if !self.index.is_empty() && self.index.end_offset + len > self.shared.opts.segment_bytes {
            self.roll()?;
        }
        if rec.lsn != self.index.last_lsn + 1 {
            // The handle checks this; reaching here is a bug.
            return Err(self.poison(LogError::LsnMismatch {
                expected: self.index.last_lsn + 1,
                got: rec.lsn,
            }));
        }
        let header = RecordHeader {
            lsn: rec.lsn,
            timestamp_us: rec.timestamp_us,
            tx_end: rec.tx_end,
            pg_commit_lsn: rec.pg_commit_lsn,
            pg_end_lsn: rec.pg_end_lsn,
        };
        if !encode_record(&mut self.buf, &header, &rec.payload) {
            return Err(LogError::RecordTooLarge {
                len: rec.payload.len(),
                max: MAX_PAYLOAD_LEN,
            });
        }
        let offset = self.index.end_offset;
        self.index.observe(
            rec.lsn,
            offset,
            len,
            rec.timestamp_us,
            self.shared.opts.index_interval_bytes,
        );
        if rec.tx_end {
            self.last_commit = Some(CommitPosition {
                lsn: rec.lsn,
                pg_commit_lsn: rec.pg_commit_lsn,
                pg_end_lsn: rec.pg_end_lsn,
                timestamp_us: rec.timestamp_us,
            });
            self.commit_end = CommitEnd {
                base_lsn: self.seg.base_lsn,
                offset: offset + len,
                next_lsn: rec.lsn + 1,
            };
        }
        if self.unsynced_bytes == 0 {
            self.unsynced_since = Some(Instant::now());
        }
        self.unsynced_bytes += len;
        self.unsynced_records += 1;
        if self.buf.len() >= WRITE_CHUNK {
            self.write_out()?;
        }
        Ok(())
    }

    fn write_out(&mut self) -> Result<(), LogError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let res = {
            let _gate = lock(&self.sync.write_gate);
            if self.sync.cut.load(Ordering::Acquire) {
                return Err(self.shared.poisoned_error());
            }
            crate::faults::check(&self.shared.opts.dir, crate::faults::Op::Write)
                .and_then(|()| (&*self.file).write_all(&self.buf))
        };
        if let Err(e) = res {
            return Err(self.poison(LogError::io("write", &self.seg.path, e)));
        }
        self.buf.clear();
        if self.buf.capacity() > 4 * WRITE_CHUNK {
            // Don't keep a huge buffer around after one oversized record.
            self.buf = Vec::with_capacity(WRITE_CHUNK + 64 * 1024);
        }
        Ok(())
    }

    /// Writes everything appended so far and hands it to the sync thread;
    /// `reply` (a flush) is answered once it is durable. Waits only if too
    /// much data is already waiting for fsync.
    fn commit_point(&mut self, reply: Option<Reply>) -> Result<(), LogError> {
        if self.unsynced_bytes == 0 && reply.is_none() {
            return Ok(());
        }
        self.write_out()?;
        // Readers only follow index entries up to the committed lsn, so the
        // index may run ahead of durability.
        publish_index(&self.seg, &self.index);
        let mut st = lock(&self.sync.state);
        if st.failed {
            if let Some(reply) = reply {
                let _ = reply.send(Err(self.shared.poisoned_error()));
            }
            return Err(self.shared.poisoned_error());
        }
        if self.unsynced_bytes == 0 && st.pending.is_none() && !st.busy {
            // A flush with nothing outstanding.
            if let Some(reply) = reply {
                let _ = reply.send(Ok(()));
            }
            return Ok(());
        }
        let job = st.pending.get_or_insert_with(|| SyncJob {
            file: self.file.clone(),
            seg: self.seg.clone(),
            end_offset: 0,
            commit: None,
            records: 0,
            bytes: 0,
            waiters: Vec::new(),
        });
        job.commit = self.last_commit;
        job.end_offset = self.index.end_offset;
        job.records += self.unsynced_records;
        job.bytes += self.unsynced_bytes;
        job.waiters.extend(reply);
        self.unsynced_bytes = 0;
        self.unsynced_records = 0;
        self.unsynced_since = None;
        self.sync.cond.notify_all();
        // Backpressure: bound written-but-not-durable data.
        while !st.failed
            && st.busy_bytes + st.pending.as_ref().map_or(0, |j| j.bytes) > MAX_IN_FLIGHT_BYTES
        {
            st = self.sync.wait(st);
        }
        if st.failed {
            return Err(self.shared.poisoned_error());
        }
        Ok(())
    }

    /// Waits until everything handed to the sync thread is durable.
    fn wait_durable(&mut self) -> Result<(), LogError> {
        let mut st = lock(&self.sync.state);
        while !st.failed && (st.pending.is_some() || st.busy) {
            st = self.sync.wait(st);
        }
        if st.failed {
            return Err(self.shared.poisoned_error());
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one.
    fn roll(&mut self) -> Result<(), LogError> {
        // The sealed segment must be complete and durable before a newer
        // segment exists: recovery trusts every segment before the newest
        // one holding a tx_end record.
        self.commit_point(None)?;
        self.wait_durable()?;
        let dir = self.shared.opts.dir.clone();
        // The sidecar index is an optimisation (rebuilt if missing), so a
        // failure to write it does not poison the log.
        let idx = encode_index_file(&self.index);
        match write_file_atomically(&self.seg.idx_path, &idx) {
            Ok(()) => self
                .seg
                .idx_bytes
                .store(idx.len() as u64, Ordering::Relaxed),
            Err(e) => warn!(error = %e, "change log: could not write segment index"),
        }
        let base = self.index.last_lsn + 1;
        let file = create_segment_file(&dir, base, self.last_commit).map_err(|e| self.poison(e))?;
        sync_dir(&dir).map_err(|e| self.poison(e))?;
        let index = SegmentIndex::new(base);
        let seg = Arc::new(Segment::new(&dir, index.clone(), 0));
        write(&self.shared.segments).push(seg.clone());
        lock(&self.sync.state).durable_end = (base, SEGMENT_HEADER_LEN as u64);
        self.shared.stats.rolls.fetch_add(1, Ordering::Relaxed);
        // The size cap is a bound, not a hope: enforced at every seal, not
        // only when the periodic retention task runs.
        if let Some(max_bytes) = self.shared.opts.max_bytes {
            if let Err(e) = self.shared.enforce_max_bytes(max_bytes) {
                warn!(error = %e, "change log: enforcing max_bytes at a segment seal failed; retention retries");
            }
        }
        debug!(base, "change log: rolled to a new segment");
        self.seg = seg;
        self.file = Arc::new(file);
        self.index = index;
        Ok(())
    }

    /// Removes every record after the last tx_end record appended, like
    /// recovery does at open (see [`LogWriter::discard_uncommitted`]).
    ///
    /// Crash safety: newer segments are deleted newest first, then the cut
    /// segment is truncated; at every step in between, recovery makes the
    /// same cut. An error poisons the log (the caller stops the writer).
    fn discard_uncommitted(&mut self) -> Result<Discarded, LogError> {
        // Write and fsync everything queued before: the committed lsn is
        // then final (exactly the records before the cut are visible) and
        // the sync thread holds no job on any file we are about to change.
        self.commit_point(None)?;
        self.wait_durable()?;
        let end = self.commit_end;
        // Records after the last tx_end record: `end.next_lsn..=last_lsn`.
        let records = (self.index.last_lsn + 1).saturating_sub(end.next_lsn);
        debug_assert_eq!(self.shared.committed_lsn() + 1, end.next_lsn);
        if records == 0 {
            return Ok(Discarded {
                records: 0,
                next_lsn: end.next_lsn,
            });
        }
        let first = end.next_lsn;
        let dir = self.shared.opts.dir.clone();
        // Retention must not delete segments while we rearrange the tail
        // (it never deletes the one we cut: that one holds lsn `first`).
        let _serial = lock(&self.shared.trim_lock);

        // The cut goes into the segment that holds lsn `first`: just after
        // the last tx_end record if that segment holds it, otherwise (the
        // segment starts with `first`) right after its header.
        let (cut_seg, cut, removed) = {
            let mut segs = write(&self.shared.segments);
            let k = segs.partition_point(|s| s.base_lsn <= first);
            let target = match k.checked_sub(1).and_then(|i| segs.get(i)) {
                Some(s) if s.base_lsn == first => Some((s.clone(), SEGMENT_HEADER_LEN as u64)),
                Some(s) if s.base_lsn == end.base_lsn => Some((s.clone(), end.offset)),
                _ => None,
            };
            let Some((cut_seg, cut)) = target else {
                // Not reachable: retention keeps the segment holding
                // `first`, and the tx_end record before it is in it.
                return Err(LogError::Corrupt {
                    segment: self.seg.path.clone(),
                    offset: end.offset,
                });
            };
            let removed: Vec<Arc<Segment>> = segs.drain(k..).collect();
            (cut_seg, cut, removed)
        };
        // The same cut as recovery's, by the same routine.
        let newer: Vec<u64> = removed.iter().map(|s| s.base_lsn).collect();
        cut_tail_segments(
            &dir,
            &newer,
            cut_seg.base_lsn,
            "of a discarded unfinished transaction",
        )?;
        // The cut segment is active (again): it gets a fresh index when it
        // is sealed.
        cut_seg.idx_bytes.store(0, Ordering::Relaxed);

        let file = if Arc::ptr_eq(&cut_seg, &self.seg) {
            self.file.clone()
        } else {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&cut_seg.path)
                .map_err(|e| LogError::io("open segment", &cut_seg.path, e))?;
            Arc::new(file)
        };
        let scan = cut_tail_file(
            &dir,
            &file,
            &cut_seg.path,
            cut_seg.base_lsn,
            cut,
            self.shared.opts.index_interval_bytes,
        )?;
        if scan.index.last_lsn + 1 != first {
            return Err(LogError::Corrupt {
                segment: cut_seg.path.clone(),
                offset: scan.index.end_offset,
            });
        }
        // Readers only look up index entries of visible records, which the
        // cut keeps; replace the whole index (chunk timestamps included).
        *write(&cut_seg.index) = scan.index.clone();
        self.seg = cut_seg;
        self.file = file;
        self.index = scan.index;
        self.commit_end = CommitEnd {
            base_lsn: self.seg.base_lsn,
            offset: cut,
            next_lsn: first,
        };
        lock(&self.sync.state).durable_end = (self.seg.base_lsn, cut);
        // Readers may have buffered bytes of the removed records (they read
        // ahead of the committed lsn); this makes them drop their open
        // segment before reading anything at the reused lsns.
        self.shared.discards.fetch_add(1, Ordering::Release);
        info!(
            records,
            next_lsn = first,
            segments_deleted = removed.len(),
            "change log: discarded the records of an unfinished transaction"
        );
        debug_assert_eq!(
            read(&self.shared.segments).last().map(|s| s.base_lsn),
            Some(self.seg.base_lsn)
        );
        Ok(Discarded {
            records,
            next_lsn: first,
        })
    }
}

impl Shared {
    pub(crate) fn publish_commit(&self, pos: CommitPosition) {
        {
            let mut last = lock(&self.last_commit);
            *last = Some(pos);
            self.committed.store(pos.lsn, Ordering::Release);
        }
        self.committed_tx.send_replace(pos.lsn);
    }
}

/// A copy of an I/O error (keeping the OS error code).
fn io_clone(e: &std::io::Error) -> std::io::Error {
    e.raw_os_error().map_or_else(
        || std::io::Error::new(e.kind(), e.to_string()),
        std::io::Error::from_raw_os_error,
    )
}
