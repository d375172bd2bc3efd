//! The sink runtime: [`run_sink`] reads the log, applies the chain (filter →
//! transforms → encode), batches, delivers with retry and moves the checkpoint. The
//! contract it drives is in `contract.rs` (and the crate docs), the settings in
//! `settings.rs`, the live state in `status.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use spillway_log::{ChangeLog, LogError, LogReader, LogRecord};
use tokio::sync::watch;
use tokio::time::Instant;

use spillway_core::encoding::Encoder;
use spillway_core::time::now_us;
use spillway_core::transform::{Filter, Transform, Verdict};
use spillway_core::{EventKind, EventView, RequeryReason, RequeryRequired};

use crate::contract::{Sink, SinkError, SinkRecord};
use crate::settings::SinkSettings;
use crate::status::SinkStatus;

/// The name of sink `sink`'s checkpoint in the log's checkpoint store.
///
/// Sinks have a namespace of their own (`sink:` + name; API consumer names
/// cannot contain `:`), so that a `PUT` or `DELETE` of an HTTP consumer
/// can never move a sink's position, and vice versa.
pub fn checkpoint_name(sink: &str) -> String {
    format!("sink:{sink}")
}

/// Runs one sink until `shutdown` becomes `true` (returns `Ok`) or a fatal
/// error (returns it, after recording it in `status`). Transient errors are
/// retried forever. Calls [`Sink::close`] before returning.
pub async fn run_sink<S: Sink>(
    log: ChangeLog,
    settings: SinkSettings,
    mut sink: S,
    status: Arc<SinkStatus>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), SinkError> {
    let result = match settings.validate() {
        Ok(filter) => {
            let mut run = Runner {
                log,
                settings: &settings,
                filter,
                encoder: Encoder::new(settings.format, settings.encoder_options.clone()),
                status: &status,
                checkpoint: 0,
                cp_name: checkpoint_name(&settings.name),
                cp_version: 0,
            };
            run.drive(&mut sink, &mut shutdown).await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = &result {
        status.failed.store(true, Ordering::Relaxed);
        status.record_error(&e.to_string());
        tracing::error!(sink = %settings.name, kind = sink.kind(), error = %e, "sink stopped");
    }
    let closed = sink.close().await;
    result.and(closed)
}

/// Records read but not yet delivered.
#[derive(Default)]
struct Pending {
    records: Vec<SinkRecord>,
    /// The transaction (commit lsn text) of each record in `records`.
    txs: Vec<Option<String>>,
    /// Encoded bytes in `records`.
    bytes: usize,
    /// The transaction of the last record read (delivered or not).
    last_tx: Option<String>,
    /// Last lsn read (delivered or filtered out); the checkpoint target.
    last_lsn: Option<u64>,
    /// Timestamp of the record at `last_lsn`.
    last_timestamp_us: i64,
    /// Records read (including filtered out ones), to bound a batch that
    /// the filters keep almost empty.
    scanned: usize,
    /// When a partial batch must go out.
    deadline: Option<Instant>,
}

struct Runner<'a> {
    log: ChangeLog,
    settings: &'a SinkSettings,
    filter: Filter,
    /// Stateful (remembers columns from `schema_change`): fed in log order.
    encoder: Encoder,
    status: &'a SinkStatus,
    /// The checkpoint as this sink last stored or read it.
    checkpoint: u64,
    /// Its name in the checkpoint store ([`checkpoint_name`]).
    cp_name: String,
    /// [`CheckpointStore::version`](spillway_log::CheckpointStore::version)
    /// of `cp_name` that `checkpoint` reflects (read before the database,
    /// so a change in between shows as a newer version: an extra look,
    /// never a missed change).
    cp_version: u64,
}

/// Waits until shutdown is requested (forever if the sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, SinkError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SinkError::Fatal(format!("sink worker task failed: {e}")))
}

/// Log errors by consequence ([`LogError::is_transient`]).
fn log_error(e: LogError) -> SinkError {
    if e.is_transient() {
        SinkError::Transient(e.to_string())
    } else {
        SinkError::Fatal(e.to_string())
    }
}

enum Step {
    Records(Vec<LogRecord>),
    CaughtUp,
    Trimmed { requested: u64, oldest: u64 },
}

impl Runner<'_> {
    async fn drive<S: Sink>(
        &mut self,
        sink: &mut S,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), SinkError> {
        // A sink holds a position from its first start on (0: nothing
        // delivered yet), so that retention keeps its records even while
        // its destination has never been reachable.
        let name = self.cp_name.clone();
        let store = self.log.checkpoints().clone();
        self.cp_version = store.version(&name);
        let (stored, requery) = blocking(move || {
            let cp = store.ensure(&name, 0)?;
            Ok::<_, LogError>((cp, store.pending_requery(&name)?))
        })
        .await?
        .map_err(log_error)?;
        self.checkpoint = stored.lsn;
        self.status
            .checkpoint_lsn
            .store(self.checkpoint, Ordering::Release);
        let mut committed_rx = self.log.subscribe();
        let mut cp_rx = self.log.checkpoints().subscribe();
        let mut reader: Option<LogReader> = None;
        let mut pending = Pending::default();
        let mut delay = self.settings.retry_initial;

        if let Some(rq) = requery {
            // The log ended before this sink's checkpoint when it was
            // opened (a repaired or restored directory): the destination
            // holds events the log no longer has; say so before going on.
            tracing::error!(
                sink = %self.settings.name, requested = rq.requested_lsn, resume = rq.resume_lsn,
                "the sink's checkpoint was beyond the end of the change log; delivering requery_required and continuing at the log's end"
            );
            let rec =
                self.requery_record(rq.requested_lsn, rq.resume_lsn, RequeryReason::LogRewound)?;
            pending.records.push(rec);
            pending.txs.push(None);
            pending.last_lsn = Some(rq.resume_lsn - 1);
            if !self.flush(sink, &mut pending, shutdown).await? {
                return Ok(());
            }
            self.status.requeries.fetch_add(1, Ordering::Relaxed);
            let store = self.log.checkpoints().clone();
            let name = self.cp_name.clone();
            blocking(move || store.clear_requery(&name))
                .await?
                .map_err(log_error)?;
        }

        loop {
            if *shutdown.borrow() {
                break;
            }
            let committed = *committed_rx.borrow_and_update();
            self.status
                .committed_lsn
                .store(committed, Ordering::Relaxed);
            if let Some(head) = self.log.last_commit() {
                self.status
                    .committed_timestamp_us
                    .store(head.timestamp_us, Ordering::Relaxed);
            }
            let next = pending.last_lsn.unwrap_or(self.checkpoint) + 1;

            let step = match self.read(&mut reader, next, &pending).await {
                Ok(step) => {
                    delay = self.settings.retry_initial;
                    step
                }
                Err(SinkError::Transient(msg)) => {
                    self.status.record_error(&msg);
                    tracing::warn!(sink = %self.settings.name, error = %msg, "reading the change log failed; retrying");
                    reader = None;
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stopped(shutdown) => break,
                    }
                    delay = (delay * 2).min(self.settings.retry_max);
                    continue;
                }
                Err(fatal) => return Err(fatal),
            };

            match step {
                Step::Records(records) => {
                    for rec in records {
                        self.push(&mut pending, rec)?;
                    }
                    let full = pending.records.len() >= self.settings.batch_size
                        || pending.bytes >= self.settings.max_batch_bytes
                        || pending.scanned >= self.settings.batch_size.saturating_mul(8);
                    let due = pending.deadline.is_some_and(|d| d <= Instant::now());
                    if (full || due) && !self.flush(sink, &mut pending, shutdown).await? {
                        break;
                    }
                }
                Step::CaughtUp => {
                    if let Some(deadline) = pending.deadline {
                        tokio::select! {
                            _ = tokio::time::sleep_until(deadline) => {
                                if !self.flush(sink, &mut pending, shutdown).await? {
                                    break;
                                }
                            }
                            _ = committed_rx.changed() => {}
                            // Noticed at the next checkpoint (set_if).
                            _ = cp_rx.changed() => {}
                            _ = stopped(shutdown) => break,
                        }
                    } else if pending.last_lsn.is_some() {
                        // Only filtered-out records: move the checkpoint.
                        if !self.flush(sink, &mut pending, shutdown).await? {
                            break;
                        }
                    } else {
                        tokio::select! {
                            changed = committed_rx.changed() => {
                                if changed.is_err() {
                                    stopped(shutdown).await;
                                    break;
                                }
                            }
                            _ = cp_rx.changed() => {
                                cp_rx.borrow_and_update();
                                // Most changes are other consumers' own.
                                if self.log.checkpoints().version(&self.cp_name) != self.cp_version {
                                    self.follow_external_checkpoint().await?;
                                }
                            }
                            _ = stopped(shutdown) => break,
                        }
                    }
                }
                Step::Trimmed { requested, oldest } => {
                    reader = None;
                    if pending.last_lsn.is_some()
                        && !self.flush(sink, &mut pending, shutdown).await?
                    {
                        break;
                    }
                    let rec = self.requery_record(requested, oldest, RequeryReason::Trimmed)?;
                    tracing::error!(
                        sink = %self.settings.name, requested, oldest,
                        "the sink's position was trimmed by retention; delivering requery_required and continuing at the oldest retained lsn"
                    );
                    pending.records.push(rec);
                    pending.txs.push(None);
                    pending.last_lsn = Some(oldest - 1);
                    if !self.flush(sink, &mut pending, shutdown).await? {
                        break;
                    }
                    self.status.requeries.fetch_add(1, Ordering::Relaxed);
                }
            }
        }

        // Shutdown: one attempt for what is batched, no retries.
        if pending.last_lsn.is_some() {
            let ok = pending.records.is_empty() || sink.deliver(&pending.records).await.is_ok();
            if ok {
                if let Some(lsn) = pending.last_lsn {
                    let n = pending.records.len() as u64;
                    self.status.delivered.fetch_add(n, Ordering::Relaxed);
                    let _ = self.store_checkpoint(lsn).await;
                }
            }
        }
        Ok(())
    }

    /// Reads the next records (or learns that the position is gone).
    async fn read(
        &self,
        reader: &mut Option<LogReader>,
        next: u64,
        pending: &Pending,
    ) -> Result<Step, SinkError> {
        let oldest = self.log.oldest_lsn();
        if next < oldest {
            return Ok(Step::Trimmed {
                requested: next,
                oldest,
            });
        }
        let mut r = match reader.take() {
            Some(r) if r.next_lsn() == next => r,
            _ => {
                let r = self.log.reader(next).map_err(log_error)?;
                // `reader` clamps to the oldest lsn: a trim that raced with
                // the check above must not become a silent gap.
                if r.next_lsn() != next {
                    return Ok(Step::Trimmed {
                        requested: next,
                        oldest: r.next_lsn(),
                    });
                }
                r
            }
        };
        let max = self
            .settings
            .batch_size
            .saturating_sub(pending.records.len())
            .max(1);
        let max_bytes = self.settings.max_read_bytes;
        let (r, res) = blocking(move || {
            let res = r.read_batch(max, max_bytes);
            (r, res)
        })
        .await?;
        match res {
            Ok(records) if records.is_empty() => {
                *reader = Some(r);
                Ok(Step::CaughtUp)
            }
            Ok(records) => {
                *reader = Some(r);
                Ok(Step::Records(records))
            }
            Err(LogError::Trimmed { requested, oldest }) => Ok(Step::Trimmed { requested, oldest }),
            Err(e) => Err(log_error(e)),
        }
    }

    /// Filters and encodes one log record into the pending batch.
    fn push(&mut self, pending: &mut Pending, rec: LogRecord) -> Result<(), SinkError> {
        pending.last_lsn = Some(rec.lsn);
        pending.last_timestamp_us = rec.timestamp_us;
        pending.scanned += 1;
        let view = EventView::parse(&rec.payload).map_err(|e| {
            SinkError::Fatal(format!(
                "log record {} is not a native JSON event ({e}); the log holds data this version cannot read",
                rec.lsn
            ))
        })?;
        let kind = view.kind().ok();
        pending.last_tx = view.commit_lsn().map(str::to_owned);
        let accepted = self.filter.apply(&view) == Verdict::Keep;
        // The encoder learns table columns from schema_change events: feed
        // it every one, delivered or not.
        if !accepted && kind != Some(EventKind::SchemaChange) {
            return Ok(());
        }
        let encoded = self.encoder.encode_view(&view, &rec.payload).map_err(|e| {
            SinkError::Fatal(format!(
                "sink {}: cannot encode the event at lsn {} as {}: {e}; choose another format or filter the table out",
                self.settings.name, rec.lsn, self.settings.format
            ))
        })?;
        let requery = kind == Some(EventKind::RequeryRequired);
        // `None`: the format does not carry this kind of event.
        let Some(encoded) = encoded.filter(|_| accepted) else {
            if requery {
                // A requery record in the log itself (the log lacks events
                // before it): never dropped silently.
                return Err(SinkError::Fatal(format!(
                    "sink {}: the change log says at lsn {} that events are missing (requery_required) and format {} cannot carry it; re-snapshot the destination, then move the sink's checkpoint to {} (PUT /v1/sinks/{}/checkpoint)",
                    self.settings.name, rec.lsn, self.settings.format, rec.lsn, self.settings.name
                )));
            }
            return Ok(());
        };
        if requery {
            self.status.requeries.fetch_add(1, Ordering::Relaxed);
        }
        pending.bytes += encoded.value.as_ref().map_or(0, Vec::len);
        pending.txs.push(pending.last_tx.clone());
        pending.records.push(SinkRecord {
            lsn: rec.lsn,
            id: encoded.id,
            entity: view.entity_opt().map(str::to_owned),
            key: encoded.key,
            // TODO(tombstones): no format emits a `None` value today.
            value: encoded.value.unwrap_or_default(),
            timestamp_us: rec.timestamp_us,
        });
        if pending.deadline.is_none() {
            pending.deadline = Some(Instant::now() + self.settings.batch_timeout);
        }
        Ok(())
    }

    /// `reason`: `trimmed` (retention deleted `requested..oldest`) or
    /// `log_rewound` (the log ends before `requested`; it continues at
    /// `oldest`).
    fn requery_record(
        &mut self,
        requested: u64,
        oldest: u64,
        reason: RequeryReason,
    ) -> Result<SinkRecord, SinkError> {
        let timestamp = now_us();
        let payload = RequeryRequired::new(requested, oldest, reason, timestamp).to_json();
        let name = &self.settings.name;
        let format = self.settings.format;
        let fix = format!(
            "re-snapshot the destination, then move the sink's checkpoint to {} (PUT /v1/sinks/{name}/checkpoint)",
            oldest - 1
        );
        let encoded = match self.encoder.encode(&payload) {
            Ok(Some(encoded)) => encoded,
            // Never a silent gap: a format that cannot say it stops the sink.
            Ok(None) => {
                return Err(SinkError::Fatal(format!(
                    "sink {name}: lsns {requested}..{} were trimmed by retention before delivery and format {format} cannot carry requery_required; {fix}",
                    oldest - 1
                )))
            }
            Err(e) => {
                return Err(SinkError::Fatal(format!(
                    "sink {name}: cannot encode requery_required as {format}: {e}; {fix}"
                )))
            }
        };
        Ok(SinkRecord {
            lsn: oldest - 1,
            id: encoded.id,
            entity: None,
            key: encoded.key,
            value: encoded.value.unwrap_or_default(),
            timestamp_us: timestamp,
        })
    }

    /// Delivers the pending batch with retries, then moves the checkpoint.
    /// `Ok(false)`: shutdown was requested while retrying (nothing moved).
    async fn flush<S: Sink>(
        &mut self,
        sink: &mut S,
        pending: &mut Pending,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<bool, SinkError> {
        let Some(last_lsn) = pending.last_lsn else {
            return Ok(true);
        };
        // Whole transactions: hold back the last transaction's records when
        // it may go on past what was read. `pending` itself changes only
        // after the delivery and the checkpoint succeeded, so a shutdown in
        // between delivers (and checkpoints) all of it.
        let mut cut = pending.records.len();
        let mut target = last_lsn;
        if self.settings.whole_transactions && last_lsn < self.log.committed_lsn() {
            let open = &pending.last_tx;
            let c = pending
                .txs
                .iter()
                .rposition(|t| t != open)
                .map_or(0, |i| i + 1);
            if c > 0 && c < pending.records.len() {
                cut = c;
                target = pending.records[c].lsn - 1;
            }
        }
        if cut > 0 {
            let batch = &pending.records[..cut];
            let mut delay = self.settings.retry_initial;
            loop {
                match sink.deliver(batch).await {
                    Ok(()) => {
                        self.status.retrying.store(false, Ordering::Relaxed);
                        break;
                    }
                    Err(SinkError::Fatal(msg)) => return Err(SinkError::Fatal(msg)),
                    Err(SinkError::Transient(msg)) => {
                        self.status.record_error(&msg);
                        self.status.retrying.store(true, Ordering::Relaxed);
                        tracing::warn!(
                            sink = %self.settings.name, kind = sink.kind(), error = %msg,
                            retry_in_ms = delay.as_millis() as u64,
                            "delivery failed; retrying the batch"
                        );
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = stopped(shutdown) => return Ok(false),
                        }
                        delay = (delay * 2).min(self.settings.retry_max);
                    }
                }
            }
            self.status
                .delivered
                .fetch_add(cut as u64, Ordering::Relaxed);
            self.status.batches.fetch_add(1, Ordering::Relaxed);
        }
        let mut delay = self.settings.retry_initial;
        loop {
            match self.store_checkpoint(target).await {
                Ok(true) => break,
                Ok(false) => {
                    // An operator moved the checkpoint meanwhile: theirs
                    // wins; continue from it (a rewind redelivers).
                    *pending = Pending::default();
                    return Ok(true);
                }
                Err(msg) => {
                    // Delivered but not recorded: a retry of the checkpoint only.
                    self.status.record_error(&msg);
                    tracing::warn!(sink = %self.settings.name, error = %msg, "storing the sink checkpoint failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stopped(shutdown) => return Ok(false),
                    }
                    delay = (delay * 2).min(self.settings.retry_max);
                }
            }
        }
        let timestamp = if cut < pending.records.len() {
            pending.records[cut - 1].timestamp_us
        } else {
            pending.last_timestamp_us
        };
        if timestamp != 0 {
            self.status
                .checkpoint_timestamp_us
                .store(timestamp, Ordering::Relaxed);
        }
        if cut < pending.records.len() {
            // The held-back transaction starts the next batch.
            pending.records.drain(..cut);
            pending.txs.drain(..cut);
            pending.bytes = pending.records.iter().map(|r| r.value.len()).sum();
            pending.scanned = pending.records.len();
            pending.deadline = Some(Instant::now() + self.settings.batch_timeout);
        } else {
            *pending = Pending::default();
        }
        Ok(true)
    }

    /// Durably moves the checkpoint to `lsn` unless someone else (an
    /// operator's `PUT /v1/sinks/{name}/checkpoint`) changed it since this
    /// sink last stored it: then `Ok(false)`, and the sink continues from
    /// the new position.
    async fn store_checkpoint(&mut self, lsn: u64) -> Result<bool, String> {
        let store = self.log.checkpoints().clone();
        let name = self.cp_name.clone();
        let expected = self.checkpoint;
        let before = store.version(&name);
        let res = blocking(move || store.set_if(&name, expected, lsn))
            .await
            .map_err(|e| e.to_string())?;
        match res {
            Ok(_) => {
                // Our own change; anyone else's after it shows as newer.
                self.cp_version = before.wrapping_add(1);
                self.checkpoint = lsn;
                self.status.checkpoint_lsn.store(lsn, Ordering::Release);
                Ok(true)
            }
            Err(LogError::CheckpointMoved { current, .. }) => {
                self.cp_version = before;
                tracing::warn!(sink = %self.settings.name, current, lsn, "the sink's checkpoint was moved by an operator; continuing from it");
                self.checkpoint = current;
                self.status.checkpoint_lsn.store(current, Ordering::Release);
                Ok(false)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// While idle: adopts a checkpoint moved by someone else.
    async fn follow_external_checkpoint(&mut self) -> Result<(), SinkError> {
        let store = self.log.checkpoints().clone();
        let name = self.cp_name.clone();
        self.cp_version = store.version(&name);
        let current = blocking(move || store.get(&name))
            .await?
            .map_err(log_error)?
            .map_or(0, |c| c.lsn);
        if current != self.checkpoint {
            tracing::warn!(sink = %self.settings.name, from = self.checkpoint, to = current, "the sink's checkpoint was moved by an operator; continuing from it");
            self.checkpoint = current;
            self.status.checkpoint_lsn.store(current, Ordering::Release);
        }
        Ok(())
    }
}
