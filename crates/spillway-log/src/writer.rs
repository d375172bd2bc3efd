//! The single writer: an async handle feeding a dedicated OS thread that
//! does blocking file I/O with group commit.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, warn};

use crate::error::LogError;
use crate::index::{encode_index_file, SegmentIndex};
use crate::lock::{lock, write};
use crate::record::{encode_record, encoded_len, RecordHeader, MAX_PAYLOAD_LEN};
use crate::recovery::create_segment_file;
use crate::segment::{publish_index, sync_dir, write_file_atomically, Segment};
use crate::{AppendRecord, CommitPosition, DirGuard, Shared};

/// fsync once this many bytes are unsynced, even if more records are queued.
pub(crate) const SYNC_BYTES: u64 = 1024 * 1024;
/// fsync once the oldest unsynced record is this old, even if more are queued.
pub(crate) const SYNC_INTERVAL: Duration = Duration::from_millis(5);
/// Most commands taken from the queue at once.
const RECV_BATCH: usize = 1024;
/// Encoded records are handed to the kernel in chunks of about this size.
const WRITE_CHUNK: usize = 256 * 1024;

pub(crate) enum Cmd {
    Append(AppendRecord),
    Flush(oneshot::Sender<Result<(), LogError>>),
    Close(oneshot::Sender<Result<(), LogError>>),
}

/// The one handle that appends to the log. Dropping it without
/// [`close`](LogWriter::close) still writes and fsyncs everything queued
/// (blocking the dropping thread until the writer thread has stopped).
pub struct LogWriter {
    shared: Arc<Shared>,
    tx: Option<mpsc::Sender<Cmd>>,
    next_lsn: u64,
    durable_rx: watch::Receiver<Option<CommitPosition>>,
    thread: Option<JoinHandle<()>>,
    _guard: DirGuard,
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
        guard: DirGuard,
    ) -> Result<LogWriter, LogError> {
        let (tx, rx) = mpsc::channel(shared.opts.channel_capacity);
        let (durable_tx, durable_rx) = watch::channel(last_commit);
        let seg = crate::lock::read(&shared.segments)
            .last()
            .cloned()
            .ok_or_else(|| LogError::InvalidOptions("no active segment".into()))?;
        let next_lsn = index.last_lsn + 1;
        let sync = Arc::new(SyncShared::default());
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
            thread: Some(thread),
            _guard: guard,
        })
    }

    /// The lsn the next appended record must carry.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    fn stopped_error(&self) -> LogError {
        if self.shared.poisoned.load(Ordering::Acquire) {
            LogError::Poisoned
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
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Err(LogError::Poisoned);
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
        self.send(Cmd::Append(rec)).await?;
        self.next_lsn += 1;
        Ok(())
    }

    /// Positions of the last durable tx_end record (initially the one
    /// restored by recovery). Changes after each group commit that made a
    /// new transaction end durable.
    pub fn durable(&self) -> watch::Receiver<Option<CommitPosition>> {
        self.durable_rx.clone()
    }

    /// Waits until every record appended so far is written and fsynced.
    pub async fn flush(&mut self) -> Result<(), LogError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.send(Cmd::Flush(reply_tx)).await?;
        match reply_rx.await {
            Ok(res) => res,
            Err(_) => Err(self.stopped_error()),
        }
    }

    /// Flushes everything and stops the writer thread.
    pub async fn close(mut self) -> Result<(), LogError> {
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
                self.shared.poisoned.store(true, Ordering::Release);
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
}

#[derive(Default)]
struct SyncShared {
    state: Mutex<SyncState>,
    cond: Condvar,
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
            let ok = self.sync_job(job);
            let mut st = lock(&self.sync.state);
            st.busy = false;
            st.busy_bytes = 0;
            if !ok {
                st.failed = true;
                if let Some(job) = st.pending.take() {
                    for w in job.waiters {
                        let _ = w.send(Err(LogError::Poisoned));
                    }
                }
            }
            self.sync.cond.notify_all();
            if !ok {
                return;
            }
        }
    }

    /// fsyncs and publishes one job; false if the fsync failed.
    fn sync_job(&mut self, job: SyncJob) -> bool {
        let started = Instant::now();
        let res = job.file.sync_data();
        #[cfg(test)]
        let res = res.and_then(|()| crate::test_hooks::check_fsync(&self.shared.opts.dir));
        if let Err(e) = res {
            // Never retry: after a failed fsync the state of the written
            // pages is unknown. Recovery at the next open decides.
            self.shared.poisoned.store(true, Ordering::Release);
            error!(error = %e, segment = %job.seg.path.display(), "change log fsync failed; the log is poisoned until reopened");
            let mut waiters = job.waiters.into_iter();
            if let Some(first) = waiters.next() {
                let _ = first.send(Err(LogError::io("fsync", &job.seg.path, e)));
            }
            for w in waiters {
                let _ = w.send(Err(LogError::Poisoned));
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
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        // Let the sync thread finish what it was given, then stop it.
        lock(&self.sync.state).stop = true;
        self.sync.cond.notify_all();
        if let Some(syncer) = self.syncer.take() {
            if syncer.join().is_err() {
                self.shared.poisoned.store(true, Ordering::Release);
                error!("change log sync thread panicked");
            }
        }
    }
}

impl WriterThread {
    fn run(mut self) {
        if let Err(e) = self.run_inner() {
            self.shared.poisoned.store(true, Ordering::Release);
            error!(error = %e, dir = %self.shared.opts.dir.display(), "change log writer stopped; the log is poisoned until reopened");
            // Fail whoever waits on a flush; appends now fail on send.
            self.rx.close();
            while let Ok(cmd) = self.rx.try_recv() {
                match cmd {
                    Cmd::Flush(reply) | Cmd::Close(reply) => {
                        let _ = reply.send(Err(LogError::Poisoned));
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
                    Cmd::Append(rec) => {
                        self.append(rec)?;
                        if self.unsynced_bytes >= SYNC_BYTES {
                            self.commit_point(None)?;
                        }
                    }
                    Cmd::Flush(reply) => self.commit_point(Some(reply))?,
                    Cmd::Close(reply) => {
                        let res = self.commit_point(None).and_then(|()| self.wait_durable());
                        let failed = res.is_err();
                        let _ = reply.send(res);
                        return if failed {
                            Err(LogError::Poisoned)
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

    fn poison(&self, e: LogError) -> LogError {
        self.shared.poisoned.store(true, Ordering::Release);
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
        if let Err(e) = (&*self.file).write_all(&self.buf) {
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
                let _ = reply.send(Err(LogError::Poisoned));
            }
            return Err(LogError::Poisoned);
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
            commit: None,
            records: 0,
            bytes: 0,
            waiters: Vec::new(),
        });
        job.commit = self.last_commit;
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
            return Err(LogError::Poisoned);
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
            return Err(LogError::Poisoned);
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
        self.shared.stats.rolls.fetch_add(1, Ordering::Relaxed);
        debug!(base, "change log: rolled to a new segment");
        self.seg = seg;
        self.file = Arc::new(file);
        self.index = index;
        Ok(())
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
