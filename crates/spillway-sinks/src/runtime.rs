//! The sink runtime: the [`Sink`] trait and [`run_sink`], which reads the
//! log, filters, batches, delivers with retry and moves the checkpoint (the
//! contract is in the crate docs).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use spillway_log::{ChangeLog, LogError, LogReader, LogRecord};
use tokio::sync::watch;
use tokio::time::Instant;

use spillway_core::encoding::{Encoder, EncoderOptions, Format};
use spillway_core::pattern::TablePattern;
use spillway_core::time::now_us;
use spillway_core::transform::{Filter, Transform, Verdict};
use spillway_core::{EventKind, EventView, Operation, RequeryReason, RequeryRequired};

/// One event as handed to [`Sink::deliver`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkRecord {
    /// Log lsn of the event (for a `requery_required` record: `oldest - 1`).
    pub lsn: u64,
    /// The event's stable id; the same on every replay (dedup key).
    pub id: String,
    /// `schema.table`, for events about a table.
    pub entity: Option<String>,
    /// The key columns (`entity_id`) as JSON text: message key / ordering key.
    pub key: Option<Vec<u8>>,
    /// The encoded event.
    pub value: Vec<u8>,
    /// Commit time, µs since the Unix epoch.
    pub timestamp_us: i64,
}

/// Why a delivery (or the sink) failed, by consequence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The destination is unreachable or refused for now: the runtime
    /// retries the same batch with backoff.
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help (bad configuration, unrepresentable event,
    /// corrupt log): this sink stops and reports it.
    #[error("{0}")]
    Fatal(String),
}

/// A destination. See the crate docs for the contract.
///
/// Methods are called from one task, one at a time: `deliver` for each
/// batch in log order (again with the same batch after a
/// [`SinkError::Transient`]), then `close` once when the sink stops.
pub trait Sink: Send {
    /// The sink type (`file`, `kafka`, …), for logs and metrics.
    fn kind(&self) -> &'static str;

    /// Delivers `batch` (non-empty, log order). `Ok` promises the
    /// destination acknowledged every record durably; the runtime then moves
    /// the checkpoint past the batch.
    fn deliver(
        &mut self,
        batch: &[SinkRecord],
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Called once when the runtime stops (shutdown or fatal error), after
    /// the last `deliver`. Releases connections; default: nothing.
    fn close(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send {
        async { Ok(()) }
    }
}

/// A boxed, `Send` future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Object-safe form of [`Sink`], for holding sinks of different types
/// (`Box<dyn DynSink>` is itself a [`Sink`]). Implemented for every `Sink`.
pub trait DynSink: Send {
    /// See [`Sink::kind`].
    fn kind_dyn(&self) -> &'static str;
    /// See [`Sink::deliver`].
    fn deliver_boxed<'a>(
        &'a mut self,
        batch: &'a [SinkRecord],
    ) -> BoxFuture<'a, Result<(), SinkError>>;
    /// See [`Sink::close`].
    fn close_boxed(&mut self) -> BoxFuture<'_, Result<(), SinkError>>;
}

impl<S: Sink> DynSink for S {
    fn kind_dyn(&self) -> &'static str {
        self.kind()
    }

    fn deliver_boxed<'a>(
        &'a mut self,
        batch: &'a [SinkRecord],
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.deliver(batch))
    }

    fn close_boxed(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(self.close())
    }
}

impl Sink for Box<dyn DynSink> {
    fn kind(&self) -> &'static str {
        (**self).kind_dyn()
    }

    async fn deliver(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
        (**self).deliver_boxed(batch).await
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        (**self).close_boxed().await
    }
}

/// Settings every sink shares (SPEC §6 "common settings").
#[derive(Debug, Clone)]
pub struct SinkSettings {
    /// The sink's name: also the name of its checkpoint in the log.
    pub name: String,
    /// Per-table filter, e.g. `{"trades": ["insert","update"]}`: keys are
    /// `table` or `schema.table` patterns with `*`; values the operations
    /// kept (empty: all). `None`: every table.
    pub tables: Option<BTreeMap<String, Vec<String>>>,
    /// Operations kept for every table (`None`: all).
    pub operations: Option<Vec<String>>,
    /// Most records per delivered batch (at least 1).
    pub batch_size: usize,
    /// How long a partial batch waits for more records when the log is
    /// quiet.
    pub batch_timeout: Duration,
    /// Most payload bytes read from the log per read (a batch may still be
    /// one larger record).
    pub max_read_bytes: usize,
    /// First retry delay after a transient failure (default 200 ms).
    pub retry_initial: Duration,
    /// Longest retry delay (default 30 s); the delay doubles up to it.
    pub retry_max: Duration,
    /// The encoding written (`format`, default native).
    pub format: Format,
    /// Options of the encoder (`{prefix}`, Debezium's payload time).
    pub encoder_options: EncoderOptions,
    /// A batch is also full once its encoded records reach this many bytes.
    pub max_batch_bytes: usize,
    /// Cut batches only between transactions where possible: when a batch
    /// is delivered while the log holds more, the records of its last,
    /// possibly unfinished transaction wait for the next batch (unless the
    /// batch holds nothing else; such a transaction is then split).
    pub whole_transactions: bool,
}

impl SinkSettings {
    /// Defaults for a sink called `name`: no filters, batches of 1000 or
    /// 100 ms, retries 200 ms doubling to 30 s, native format.
    pub fn new(name: impl Into<String>) -> SinkSettings {
        SinkSettings {
            name: name.into(),
            tables: None,
            operations: None,
            batch_size: 1000,
            batch_timeout: Duration::from_millis(100),
            max_read_bytes: 4 << 20,
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            format: Format::Native,
            encoder_options: EncoderOptions::default(),
            max_batch_bytes: 64 << 20,
            whole_transactions: false,
        }
    }

    fn validate(&self) -> Result<Filter, SinkError> {
        if self.name.is_empty() || self.name.len() > 256 {
            return Err(SinkError::Fatal(
                "invalid sink name: use a non-empty name of at most 256 bytes".into(),
            ));
        }
        if self.batch_size == 0 {
            return Err(SinkError::Fatal(format!(
                "sink {}: batch_size must be at least 1",
                self.name
            )));
        }
        if self.retry_initial.is_zero() || self.retry_max < self.retry_initial {
            return Err(SinkError::Fatal(format!(
                "sink {}: retry delays must be positive with retry_max >= retry_initial",
                self.name
            )));
        }
        self.filter()
    }

    /// The `tables` and `operations` settings as the first transform of the chain.
    fn filter(&self) -> Result<Filter, SinkError> {
        let fatal = |what: &str, e: &dyn std::fmt::Display| {
            SinkError::Fatal(format!("sink {}: {what}: {e}", self.name))
        };
        let mut filter = Filter::all();
        if let Some(ops) = &self.operations {
            let ops =
                Operation::parse_list(ops, &Operation::ALL).map_err(|e| fatal("operations", &e))?;
            filter = filter.with_operations(ops);
        }
        if let Some(map) = &self.tables {
            let mut tables = Vec::with_capacity(map.len());
            for (pattern, ops) in map {
                let what = format!("tables.{pattern}");
                let pattern = TablePattern::parse(pattern).map_err(|e| fatal("tables", &e))?;
                let ops =
                    Operation::parse_list(ops, &Operation::ALL).map_err(|e| fatal(&what, &e))?;
                tables.push((pattern, ops));
            }
            filter = filter.with_tables(tables);
        }
        Ok(filter)
    }
}

/// Live state of one sink, shared with the status API and metrics. All
/// counters are since [`run_sink`] started.
#[derive(Debug, Default)]
pub struct SinkStatus {
    delivered: AtomicU64,
    batches: AtomicU64,
    errors: AtomicU64,
    requeries: AtomicU64,
    retrying: AtomicBool,
    failed: AtomicBool,
    checkpoint_lsn: AtomicU64,
    committed_lsn: AtomicU64,
    /// Timestamp of the record at the checkpoint (0: unknown).
    checkpoint_timestamp_us: AtomicI64,
    /// Timestamp of the last committed transaction (0: unknown).
    committed_timestamp_us: AtomicI64,
    last_error: Mutex<Option<String>>,
}

/// A copy of [`SinkStatus`] at one instant (for `/v1/status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SinkStatusSnapshot {
    /// Records delivered (acknowledged by the destination).
    pub delivered: u64,
    /// Batches delivered.
    pub batches: u64,
    /// Failed delivery or checkpoint attempts.
    pub errors: u64,
    /// `requery_required` records delivered.
    pub requeries: u64,
    /// Whether the sink is waiting to retry a failed delivery.
    pub retrying: bool,
    /// Whether the sink stopped on a fatal error.
    pub failed: bool,
    /// The sink's checkpoint.
    pub checkpoint_lsn: u64,
    /// The log's committed lsn, as last seen by the sink.
    pub committed_lsn: u64,
    /// `committed_lsn - checkpoint_lsn`.
    pub lag_events: u64,
    /// Commit time of the last committed transaction minus that of the
    /// record at the checkpoint, µs (0 when caught up or unknown).
    pub lag_micros: i64,
    /// The last error, if any.
    pub last_error: Option<String>,
}

impl SinkStatus {
    /// Records delivered.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
    /// Failed attempts.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
    /// `requery_required` records delivered.
    pub fn requeries(&self) -> u64 {
        self.requeries.load(Ordering::Relaxed)
    }
    /// Waiting to retry.
    pub fn retrying(&self) -> bool {
        self.retrying.load(Ordering::Relaxed)
    }
    /// Stopped on a fatal error.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }
    /// The sink's checkpoint.
    pub fn checkpoint_lsn(&self) -> u64 {
        self.checkpoint_lsn.load(Ordering::Acquire)
    }
    /// Tells the status where the log's head is now (the sink itself only
    /// looks between batches, so a sink retrying one delivery for minutes
    /// would report the lag it had when the outage began). Never moves back.
    pub fn observe_head(&self, committed_lsn: u64, timestamp_us: Option<i64>) {
        self.committed_lsn
            .fetch_max(committed_lsn, Ordering::Relaxed);
        if let Some(ts) = timestamp_us {
            self.committed_timestamp_us.fetch_max(ts, Ordering::Relaxed);
        }
    }
    /// Events committed to the log but not yet past the checkpoint.
    pub fn lag_events(&self) -> u64 {
        self.committed_lsn
            .load(Ordering::Relaxed)
            .saturating_sub(self.checkpoint_lsn())
    }
    /// How far behind in commit time, µs: the last committed
    /// transaction's timestamp minus the checkpoint record's (0 when caught
    /// up or before anything was delivered).
    pub fn lag_micros(&self) -> i64 {
        let at = self.checkpoint_timestamp_us.load(Ordering::Relaxed);
        let head = self.committed_timestamp_us.load(Ordering::Relaxed);
        if self.lag_events() == 0 || at == 0 || head == 0 {
            0
        } else {
            head.saturating_sub(at).max(0)
        }
    }
    /// The last error.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().map(|e| e.clone()).unwrap_or(None)
    }
    /// A consistent-enough copy of everything.
    pub fn snapshot(&self) -> SinkStatusSnapshot {
        SinkStatusSnapshot {
            delivered: self.delivered(),
            batches: self.batches.load(Ordering::Relaxed),
            errors: self.errors(),
            requeries: self.requeries(),
            retrying: self.retrying(),
            failed: self.failed(),
            checkpoint_lsn: self.checkpoint_lsn(),
            committed_lsn: self.committed_lsn.load(Ordering::Relaxed),
            lag_events: self.lag_events(),
            lag_micros: self.lag_micros(),
            last_error: self.last_error(),
        }
    }

    fn record_error(&self, msg: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(msg.to_owned());
        }
    }
}

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
