//! The capture loop: the only writer of the change log.
//!
//! ```text
//!  ReplicationStream ─XLogData─▶ pgoutput::decode ─▶ EventEncoder ─▶ hold-one ─▶ LogWriter::append
//!         ▲                                                                           │ group commit
//!         └──────── send_status(flush = pg_end_lsn of last durable commit) ◀── durable()
//! ```
//!
//! Invariants:
//! * **Confirm only what is durable.** The flush position sent to PostgreSQL is the
//!   `pg_end_lsn` of the last transaction whose final record the log has fsynced, or the
//!   `wal_end` of a keepalive received while nothing was outstanding (not inside a
//!   transaction, everything appended already durable).
//! * **Bounded memory.** Rows are appended as they arrive; a transaction is never held.
//!   The one exception is the *last* event seen, held back until the next message says
//!   whether it ends its transaction (then it is appended with `tx_end`).
//! * **No duplicates after restart.** A transaction whose commit LSN is not above the last
//!   commit the log holds is skipped (PostgreSQL may resend it when our confirmation did
//!   not reach it before a crash). A partial transaction left by a crash or a lost
//!   connection is dropped by the log (recovery, or [`spillway_log::LogWriter::discard_uncommitted`]).
//! * **Retry or stop.** Transient errors (network, server restart) reconnect with
//!   exponential backoff and resume from the slot; definite ones (bad config, wal_level,
//!   protocol violations) end the loop with an error. The backoff starts again from its
//!   shortest delay after a healthy connection ([`Backoff`]).
//! * **A silent connection is a lost one.** Like PostgreSQL's `wal_receiver_timeout`: when
//!   nothing at all arrives for [`CaptureConfig::receive_timeout`], the connection is
//!   given up as a transient error (reconnect, the cut-off transaction is discarded and
//!   resent whole). An idle walsender may legitimately send nothing for a long time, so
//!   after a third of that time of silence (or a status interval, whichever is shorter) a
//!   status update asks for a reply, which PostgreSQL answers with a keepalive. Every
//!   write and catalog round trip on the replication path is bounded by the same timeout,
//!   so a connection that stops relaying cannot hold the loop in a send either. TCP
//!   keepalive and `TCP_USER_TIMEOUT` (see [`ConnectConfig`]) cover the other connections.
//! * **A message that does not decode stops capture.** An unknown pgoutput message kind, a
//!   truncated or malformed message is fatal, not retried: the walsender would resend the
//!   very same bytes from the slot (decoding is deterministic and WAL is checksummed), and
//!   corruption in transit is what TCP checksums and TLS are for, so a retry loop would
//!   only hide a bug or a broken middlebox. Nothing of the transaction is confirmed (the
//!   flush position only ever moves to durable commits), the error names the WAL position,
//!   and a restart reads the transaction again from the slot.

use crate::catalog;
use crate::dsn::ConnectConfig;
use crate::replication::{ReplicationMessage, ReplicationStream, StartOptions};
use crate::wire::PgConnection;
use crate::PgError;
use spillway_core::pattern::TablePattern;
use spillway_core::time::now_us;
use spillway_core::transform::Filter;
use spillway_core::{Operation, RequeryRequired};
use spillway_log::{AppendRecord, ChangeLog, LogError, LogWriter};
use spillway_pgoutput::event::{EncodedEvent, EventEncoder};
use spillway_pgoutput::message::{decode, PgOutputMessage};
use spillway_pgoutput::value::{TypeInfo, TypeKind};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// What to capture.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// Where PostgreSQL is.
    pub connect: ConnectConfig,
    /// Replication slot name.
    pub slot: String,
    /// Publication name.
    pub publication: String,
    /// Table filter: `schema.table` / `table` patterns with `*`, each with the operations
    /// to keep (empty = all). Empty = every table the publication sends.
    pub tables: Vec<(TablePattern, Vec<Operation>)>,
    /// How often a status update is sent even when nothing changed.
    pub status_interval: Duration,
    /// Give the replication connection up when nothing arrives for this long (PostgreSQL's
    /// `wal_receiver_timeout`); zero disables the deadline.
    pub receive_timeout: Duration,
}

/// The reconnect delays: exponential from `initial` up to `max`, and back to `initial`
/// after a healthy connection, so one blip after hours of streaming is retried at once
/// while a server that keeps refusing is not hammered.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A connection that received data from the walsender and stayed up at least this
    /// long was healthy: the next failure is a new incident, not the same one again.
    pub const HEALTHY_AFTER: Duration = Duration::from_secs(10);

    /// Delays `initial`, 2×`initial`, … capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay before the next attempt; the one after is twice as long (up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Records how a connection ended: `streamed_for` is the time from its first message
    /// from the walsender to its end (`None` when it never got that far).
    pub fn connection_ended(&mut self, streamed_for: Option<Duration>) {
        if streamed_for.is_some_and(|d| d >= Self::HEALTHY_AFTER) {
            self.next = self.initial;
        }
    }
}

pub use spillway_core::status::SourceStatus;

/// A fatal capture error: the process should stop and say why.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// PostgreSQL refused in a way retrying will not fix.
    #[error("{0}")]
    Postgres(#[from] PgError),
    /// The change log failed (disk full, fsync error, corruption).
    #[error("change log: {0}")]
    Log(#[from] LogError),
    /// The server is not configured for logical replication.
    #[error("{what}; fix: {fix}")]
    Preflight {
        /// The problem.
        what: String,
        /// The fix.
        fix: String,
    },
}

impl CaptureConfig {
    fn filter(&self) -> spillway_pgoutput::event::TableFilter {
        let filter = if self.tables.is_empty() {
            Filter::all()
        } else {
            Filter::all().with_tables(self.tables.clone())
        };
        Box::new(move |schema, table, op| filter.accepts_row(schema, table, op))
    }

    fn patterns(&self) -> Vec<String> {
        self.tables
            .iter()
            .map(|(p, _)| p.as_str().to_owned())
            .collect()
    }
}

/// Connects, prepares publication and slot, then streams until `shutdown` turns true.
/// Transient failures reconnect with backoff; definite ones are returned.
pub async fn run(
    cfg: CaptureConfig,
    log: ChangeLog,
    mut writer: LogWriter,
    status: Arc<SourceStatus>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), CaptureError> {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
    // Kept across reconnects: the relation cache makes a reconnect emit no
    // schema_change unless a table's shape really changed; types and keys stay known.
    let mut encoder = EventEncoder::new(cfg.connect.dbname.clone(), cfg.filter());
    let mut keys_known: HashMap<u32, ()> = HashMap::new();
    loop {
        let mut first_message: Option<Instant> = None;
        let result = run_once(
            &cfg,
            &log,
            &mut writer,
            &status,
            &mut shutdown,
            &mut encoder,
            &mut keys_known,
            &mut first_message,
        )
        .await;
        backoff.connection_ended(first_message.map(|t| t.elapsed()));
        encoder.abort_transaction();
        status.streaming.store(false, Ordering::Relaxed);
        match result {
            Ok(()) => {
                writer.flush().await?;
                return Ok(());
            }
            Err(CaptureError::Postgres(e)) if e.is_transient() => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "postgresql unavailable, reconnecting");
                *status.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                // A transaction cut off mid-way will be resent whole.
                writer.discard_uncommitted().await?;
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Checks `wal_level`, makes the publication send every configured table (see
/// [`catalog::ensure_publication`]: Spillway's own is brought in line with the config, a
/// user's that lacks a table is refused) and creates the slot when missing. Runs at start
/// and before every reconnect. Used by `run` and tests.
pub async fn prepare(cfg: &CaptureConfig) -> Result<PgConnection, CaptureError> {
    Ok(prepare_with(cfg).await?.0)
}

/// [`prepare`], also saying whether the slot was created just now.
pub async fn prepare_with(cfg: &CaptureConfig) -> Result<(PgConnection, bool), CaptureError> {
    let mut catalog_conn = PgConnection::connect(&cfg.connect, false).await?;
    if let Some(f) = catalog::check_wal_level(&mut catalog_conn).await? {
        return Err(CaptureError::Preflight {
            what: f.what,
            fix: f.fix,
        });
    }
    let plan =
        catalog::ensure_publication(&mut catalog_conn, &cfg.publication, &cfg.patterns()).await?;
    if let Some(f) = plan.problem {
        return Err(CaptureError::Preflight {
            what: f.what,
            fix: f.fix,
        });
    }
    for change in &plan.changes {
        tracing::info!(publication = %cfg.publication, "publication: {change}");
    }
    let created = catalog::ensure_slot(&mut catalog_conn, &cfg.slot).await?;
    if created {
        tracing::info!(slot = %cfg.slot, "created replication slot");
    }
    Ok((catalog_conn, created))
}

struct Pending {
    event: EncodedEvent,
    commit_lsn: u64,
}

/// Bounds one network round of the replication path by `limit` (zero = unbounded): a
/// connection that stops relaying must not hold the loop in a write or a query.
async fn bounded<T, E: From<PgError>>(
    limit: Duration,
    what: &str,
    round: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    if limit.is_zero() {
        return round.await;
    }
    match tokio::time::timeout(limit, round).await {
        Ok(r) => r,
        Err(_) => Err(connection_lost(format!(
            "{what} did not complete within {} (source.receive_timeout)",
            humanize(limit)
        ))
        .into()),
    }
}

fn connection_lost(why: String) -> PgError {
    PgError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, why))
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Sends a standby status update, bounded by the receive timeout.
async fn send_status(
    stream: &mut ReplicationStream,
    limit: Duration,
    flush: u64,
    reply: bool,
) -> Result<(), PgError> {
    bounded(
        limit,
        "sending a status update",
        stream.send_status(flush, flush, reply),
    )
    .await
}

/// A walsender replaying a large transaction that the publication filters out sends
/// nothing, and reads replies (pings included), only every `wal_sender_timeout / 2`: a
/// receive timeout not above that would give up a working connection again and again.
async fn warn_if_receive_timeout_too_short(
    conn: &mut PgConnection,
    receive_timeout: Duration,
) -> Result<(), PgError> {
    if receive_timeout.is_zero() {
        return Ok(());
    }
    let rows = conn
        .simple_query("SELECT setting FROM pg_settings WHERE name = 'wal_sender_timeout'")
        .await?;
    let sender_ms: Option<u64> = rows
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .and_then(|v| v.parse().ok());
    if let Some(ms) = sender_ms.filter(|ms| *ms > 0) {
        if receive_timeout <= Duration::from_millis(ms / 2) {
            tracing::warn!(
                receive_timeout = %humanize(receive_timeout),
                wal_sender_timeout = %humanize(Duration::from_millis(ms)),
                "source.receive_timeout is not above half of the server's wal_sender_timeout; a walsender busy with a large filtered-out transaction may be given up as lost; raise source.receive_timeout"
            );
        }
    }
    Ok(())
}

/// How often to ask an idle walsender for a reply: a third of the receive timeout, or the
/// status interval when that is shorter.
fn ping_interval(receive_timeout: Duration, status_interval: Duration) -> Duration {
    (receive_timeout / 3)
        .min(status_interval)
        .max(Duration::from_millis(10))
}

// The loop's state that outlives one connection is passed in piece by piece.
#[allow(clippy::too_many_arguments)]
async fn run_once(
    cfg: &CaptureConfig,
    log: &ChangeLog,
    writer: &mut LogWriter,
    status: &SourceStatus,
    shutdown: &mut watch::Receiver<bool>,
    encoder: &mut EventEncoder,
    keys_known: &mut HashMap<u32, ()>,
    first_message: &mut Option<Instant>,
) -> Result<(), CaptureError> {
    let limit = cfg.receive_timeout;
    let mut catalog_conn =
        bounded(limit, "preparing the publication and slot", prepare(cfg)).await?;
    let published = bounded(limit, "the published tables query", async {
        Ok::<_, CaptureError>(catalog::published_tables(&mut catalog_conn, &cfg.publication).await?)
    })
    .await?;
    status.set_published_tables(published);
    bounded(
        limit,
        "the wal_sender_timeout query",
        warn_if_receive_timeout_too_short(&mut catalog_conn, limit),
    )
    .await?;
    let slot_confirmed = bounded(
        limit,
        "the slot's confirmed_flush_lsn query",
        catalog::confirmed_flush_lsn(&mut catalog_conn, &cfg.slot),
    )
    .await?;
    if let Some(slot_confirmed) = slot_confirmed {
        mark_gap_if_slot_is_ahead(log, writer, slot_confirmed).await?;
    }
    let last = log.last_commit();
    let resume_after_commit = last.map(|c| c.pg_commit_lsn).unwrap_or(0);
    let start_lsn = last.map(|c| c.pg_end_lsn).unwrap_or(0);
    let repl_conn = PgConnection::connect(&cfg.connect, true).await?;
    let mut stream = bounded(
        limit,
        "START_REPLICATION",
        ReplicationStream::start(
            repl_conn,
            &StartOptions {
                slot: cfg.slot.clone(),
                publications: vec![cfg.publication.clone()],
                start_lsn,
                messages: true,
            },
        ),
    )
    .await?;
    status.streaming.store(true, Ordering::Relaxed);
    *status.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
    tracing::info!(slot = %cfg.slot, start_lsn = %spillway_pgoutput::message::format_pg_lsn(start_lsn), "streaming");

    let mut durable_rx = writer.durable();
    let mut confirmed = start_lsn.max(status.confirmed_flush_lsn.load(Ordering::Relaxed));
    // pg_end_lsn of the last tx_end record appended; when durable reaches it, nothing is outstanding.
    let mut appended_end: u64 = durable_rx.borrow().map(|c| c.pg_end_lsn).unwrap_or(0);
    // Highest position that may be confirmed once everything appended is durable.
    let mut idle_confirmable: u64 = 0;
    // When the idle-confirm position was last stored (see idle_target).
    let mut idle_stored_at: Option<Instant> = None;
    let mut next_lsn = writer.next_lsn();
    let mut pending: Option<Pending> = None;
    let mut out: Vec<EncodedEvent> = Vec::with_capacity(16);
    let mut in_tx = false;
    let mut skipping = false;
    let mut tx_commit_lsn = 0u64;
    let mut ticker = tokio::time::interval(cfg.status_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The receive deadline. `last_rx` is when the last message was received and handled
    // (handling may wait on the log writer; that is not the server's silence). One timer,
    // moved lazily, so a busy stream does not re-arm a timer per message.
    let ping_every = ping_interval(limit, cfg.status_interval);
    let mut last_rx = Instant::now();
    let mut last_ping = last_rx;
    let mut received = false;
    let watchdog = tokio::time::sleep(ping_every);
    tokio::pin!(watchdog);

    loop {
        if received {
            received = false;
            last_rx = Instant::now();
        }
        tokio::select! {
            biased;
            _ = shutdown.changed() => {
                writer.flush().await?;
                let durable = durable_rx.borrow().map(|c| c.pg_end_lsn).unwrap_or(0);
                let target = if !in_tx && durable >= appended_end { durable.max(idle_confirmable) } else { durable };
                let target = idle_target(log, durable, target, &mut idle_stored_at, true)?;
                if target > confirmed {
                    confirmed = target;
                    status.confirmed_flush_lsn.store(confirmed, Ordering::Relaxed);
                }
                // Bounded: a stalled connection must not keep the process from stopping.
                let bye = async {
                    send_status(&mut stream, limit, confirmed, false).await.ok();
                    stream.close().await;
                    catalog_conn.close().await;
                };
                if limit.is_zero() {
                    bye.await;
                } else {
                    let _ = tokio::time::timeout(limit, bye).await;
                }
                return Ok(());
            }
            changed = durable_rx.changed() => {
                if changed.is_err() {
                    // The writer stopped: say why (a failed write or fsync names
                    // its OS error there), not just that it is gone.
                    let why = writer.flush().await.err().unwrap_or(LogError::Closed);
                    return Err(CaptureError::Log(why));
                }
                let durable = durable_rx.borrow_and_update().map(|c| c.pg_end_lsn).unwrap_or(0);
                let target = if !in_tx && durable >= appended_end { durable.max(idle_confirmable) } else { durable };
                let target = idle_target(log, durable, target, &mut idle_stored_at, false)?;
                if target > confirmed {
                    confirmed = target;
                    status.confirmed_flush_lsn.store(confirmed, Ordering::Relaxed);
                    send_status(&mut stream, limit, confirmed, false).await?;
                }
            }
            _ = ticker.tick() => {
                // An idle position held back by idle_target's rate goes out here.
                let durable = durable_rx.borrow().map(|c| c.pg_end_lsn).unwrap_or(0);
                if !in_tx && pending.is_none() && durable >= appended_end {
                    let target = idle_target(log, durable, durable.max(idle_confirmable), &mut idle_stored_at, false)?;
                    if target > confirmed {
                        confirmed = target;
                        status.confirmed_flush_lsn.store(confirmed, Ordering::Relaxed);
                    }
                }
                send_status(&mut stream, limit, confirmed, false).await?;
                let retained = bounded(
                    limit,
                    "the slot's retained-wal query",
                    catalog::retained_wal_bytes(&mut catalog_conn, &cfg.slot),
                )
                .await?;
                if let Some(bytes) = retained {
                    status.wal_retained_bytes.store(bytes, Ordering::Relaxed);
                }
            }
            msg = stream.recv() => {
                received = true;
                if first_message.is_none() {
                    *first_message = Some(Instant::now());
                }
                match msg? {
                    ReplicationMessage::Keepalive { wal_end, reply_requested, .. } => {
                        status.server_wal_end.store(wal_end, Ordering::Relaxed);
                        if !in_tx && pending.is_none() {
                            idle_confirmable = idle_confirmable.max(wal_end);
                            let durable = durable_rx.borrow().map(|c| c.pg_end_lsn).unwrap_or(0);
                            if durable >= appended_end && idle_confirmable > confirmed {
                                let target = idle_target(log, durable, idle_confirmable, &mut idle_stored_at, false)?;
                                if target > confirmed {
                                    confirmed = target;
                                    status.confirmed_flush_lsn.store(confirmed, Ordering::Relaxed);
                                    send_status(&mut stream, limit, confirmed, false).await?;
                                    continue;
                                }
                            }
                        }
                        if reply_requested {
                            send_status(&mut stream, limit, confirmed, false).await?;
                        }
                    }
                    ReplicationMessage::XLogData { wal_start, wal_end, data, .. } => {
                        status.server_wal_end.store(wal_end, Ordering::Relaxed);
                        let message = decode(&data).map_err(|e| undecodable(e, wal_start))?;
                        match &message {
                            PgOutputMessage::Begin(b) => {
                                in_tx = true;
                                tx_commit_lsn = b.final_lsn;
                                skipping = b.final_lsn <= resume_after_commit;
                                if skipping {
                                    tracing::debug!(commit_lsn = b.final_lsn, "skipping a transaction the log already holds");
                                }
                            }
                            PgOutputMessage::Commit(c) => {
                                in_tx = false;
                                if skipping {
                                    skipping = false;
                                    idle_confirmable = idle_confirmable.max(c.end_lsn);
                                } else if let Some(p) = pending.take() {
                                    append(writer, p, true, c.end_lsn, status).await?;
                                    appended_end = c.end_lsn;
                                    let commit_us = spillway_pgoutput::message::pg_epoch_to_unix_micros(c.timestamp);
                                    status.last_commit_time_us.store(commit_us, Ordering::Relaxed);
                                    let lag_us = now_us().saturating_sub(commit_us).max(0);
                                    status.lag_ms.store((lag_us / 1000) as u64, Ordering::Relaxed);
                                } else {
                                    // Nothing of this transaction passed the filters.
                                    idle_confirmable = idle_confirmable.max(c.end_lsn);
                                }
                                // fall through to let the encoder close its transaction
                            }
                            PgOutputMessage::Relation(rel) => {
                                let schema = if rel.namespace.is_empty() { "pg_catalog" } else { rel.namespace.as_str() };
                                status.add_published_table(schema, &rel.name);
                                bounded(
                                    limit,
                                    "the catalog look-up of a relation's types and key",
                                    prepare_relation(&mut catalog_conn, encoder, rel.rel_id, keys_known, &message),
                                )
                                .await?;
                            }
                            _ => {}
                        }
                        out.clear();
                        let lsn_before = next_lsn;
                        encoder
                            .encode(&message, wal_start, &mut next_lsn, &mut out)
                            .map_err(|e| undecodable(e, wal_start))?;
                        if skipping {
                            // The encoder still learns relations and transaction bounds,
                            // but nothing of a transaction the log already holds is kept.
                            next_lsn = lsn_before;
                            out.clear();
                            continue;
                        }
                        for ev in out.drain(..) {
                            if let Some(p) = pending.take() {
                                append(writer, p, false, 0, status).await?;
                            }
                            if in_tx {
                                pending = Some(Pending { event: ev, commit_lsn: tx_commit_lsn });
                            } else {
                                // A non-transactional logical message: complete on its own.
                                let p = Pending { event: ev, commit_lsn: wal_start };
                                append(writer, p, true, wal_start, status).await?;
                                appended_end = appended_end.max(wal_start);
                            }
                        }
                    }
                }
            }
            // Last, so a message already waiting always wins over the deadline.
            () = &mut watchdog, if !limit.is_zero() => {
                let now = Instant::now();
                if now.duration_since(last_rx) >= limit {
                    return Err(connection_lost(format!(
                        "nothing received from the server for {} (source.receive_timeout)",
                        humanize(limit)
                    ))
                    .into());
                }
                if now.duration_since(last_rx) >= ping_every
                    && now.duration_since(last_ping) >= ping_every
                {
                    send_status(&mut stream, limit, confirmed, true).await?;
                    last_ping = now;
                }
                watchdog
                    .as_mut()
                    .reset((last_rx + limit).min(last_rx.max(last_ping) + ping_every));
            }
        }
    }
}

/// How often at most the idle-confirm position is stored (an fsync each): idle
/// confirmations beyond the stored one wait for the next store.
const IDLE_STORE_EVERY: Duration = Duration::from_secs(1);

/// What may be confirmed of `target` now. A position beyond the log's durable commit
/// (`durable`; only uncaptured changes up to there) is stored first
/// ([`ChangeLog::record_idle_confirmed`]), so the next start can tell it from a gap in
/// the log; stores are rate-limited to [`IDLE_STORE_EVERY`] unless `force`, and until
/// the next one the answer is the stored position. The store is a small synchronous
/// write + fsync, rare enough not to need a blocking thread.
fn idle_target(
    log: &ChangeLog,
    durable: u64,
    target: u64,
    stored_at: &mut Option<Instant>,
    force: bool,
) -> Result<u64, CaptureError> {
    let stored = log.idle_confirmed();
    if target <= durable.max(stored) {
        return Ok(target);
    }
    if !force && stored_at.is_some_and(|t| t.elapsed() < IDLE_STORE_EVERY) {
        return Ok(durable.max(stored));
    }
    log.record_idle_confirmed(target)?;
    *stored_at = Some(Instant::now());
    Ok(target)
}

/// The slot says PostgreSQL will not send anything before `slot_confirmed`. When that
/// is beyond both the log's last commit and the stored idle-confirm position (see
/// [`ChangeLog::record_idle_confirmed`]), the log lacks confirmed transactions: the
/// directory was repaired or restored from a backup, or something else consumed the
/// slot. Those transactions cannot be read again, so the gap is written into the log
/// itself, as its own transaction: a `requery_required` record (`reason: "log_gap"`) at
/// the next lsn, in a new epoch beginning there. Every reader below it meets it before
/// the first event after the gap; a client of an earlier epoch beyond it is moved back
/// to it. Its `pg_end_lsn` is `slot_confirmed`, so the next start finds no gap again.
/// A slot dropped and made again (invalidated by `max_slot_wal_keep_size`, dropped by
/// hand, lost in a failover) starts beyond the log: a gap too. A log that never held a
/// commit starts at the slot's position (stored as idle progress) with no record.
pub async fn mark_gap_if_slot_is_ahead(
    log: &ChangeLog,
    writer: &mut LogWriter,
    slot_confirmed: u64,
) -> Result<(), CaptureError> {
    let log_end = log.last_commit().map_or(0, |c| c.pg_end_lsn);
    let idle = log.idle_confirmed();
    let fmt = spillway_pgoutput::message::format_pg_lsn;
    if log.predates_epochs() {
        // Written by an earlier build, which confirmed idle positions without
        // storing them: the slot cannot be told from a gap, and an upgrade must not
        // alarm every consumer. Trusted at this first start only, ahead or not;
        // from now on positions are stored.
        if slot_confirmed > log_end.max(idle) {
            tracing::warn!(
                slot_confirmed_flush_lsn = %fmt(slot_confirmed),
                "change log from an earlier version: taking the slot's confirmed position beyond the log's last commit for idle progress"
            );
            log.record_idle_confirmed(slot_confirmed)?;
        }
        log.trusted_slot_once()?;
        return Ok(());
    }
    if slot_confirmed <= log_end.max(idle) {
        return Ok(());
    }
    if log.committed_lsn() == 0 {
        // Nothing was ever committed to this log: capture starts where the slot
        // is (a new slot, or one made before the first start). What the slot was
        // confirmed for earlier — if this is a deleted log directory — cannot be
        // told from that, hence the note.
        tracing::info!(
            slot_confirmed_flush_lsn = %fmt(slot_confirmed),
            "new change log: capture starts at the replication slot's position (if this directory replaced one that held data, consumers must re-snapshot)"
        );
        log.record_idle_confirmed(slot_confirmed)?;
        return Ok(());
    }
    writer.flush().await?;
    let epoch = writer.begin_epoch()?;
    let lsn = writer.next_lsn();
    tracing::error!(
        lsn,
        log_end = %fmt(log_end),
        slot_confirmed_flush_lsn = %fmt(slot_confirmed),
        "the change log lacks transactions the replication slot was confirmed for (a repaired or restored log directory, or another reader of the slot); wrote requery_required at this lsn: every consumer reading past it must re-snapshot"
    );
    let payload = RequeryRequired::log_gap(
        lsn,
        lsn + 1,
        epoch.id_hex(),
        fmt(log_end),
        fmt(slot_confirmed),
        now_us(),
    )
    .to_json();
    writer
        .append(AppendRecord {
            lsn,
            timestamp_us: now_us(),
            tx_end: true,
            // Below the slot position: a transaction whose commit record
            // starts exactly there is sent and must not be taken for one the
            // log already holds.
            pg_commit_lsn: slot_confirmed.saturating_sub(1).max(log_end),
            pg_end_lsn: slot_confirmed,
            payload,
        })
        .await?;
    writer.flush().await?;
    Ok(())
}

/// A pgoutput message that does not decode (or encode): fatal, see the module doc.
fn undecodable(e: impl std::fmt::Display, wal_start: u64) -> PgError {
    PgError::Decode(format!(
        "{e} (XLogData at {}); capture stopped without confirming it, and a restart reads it again from the slot",
        spillway_pgoutput::message::format_pg_lsn(wal_start)
    ))
}

async fn append(
    writer: &mut LogWriter,
    p: Pending,
    tx_end: bool,
    end_lsn: u64,
    status: &SourceStatus,
) -> Result<(), CaptureError> {
    writer
        .append(AppendRecord {
            lsn: p.event.lsn,
            timestamp_us: p.event.timestamp_us,
            tx_end,
            pg_commit_lsn: p.commit_lsn,
            pg_end_lsn: end_lsn,
            payload: p.event.json,
        })
        .await?;
    status.events_captured.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// OIDs below this are built into PostgreSQL; the registry knows those it converts.
const FIRST_USER_OID: u32 = 16384;

/// Before a Relation message reaches the encoder: register unknown types and the table's
/// primary key (catalog look-ups on the side connection).
async fn prepare_relation(
    conn: &mut PgConnection,
    encoder: &mut EventEncoder,
    rel_id: u32,
    keys_known: &mut HashMap<u32, ()>,
    message: &PgOutputMessage<'_>,
) -> Result<(), CaptureError> {
    let PgOutputMessage::Relation(rel) = message else {
        return Ok(());
    };
    // A Type message registers a user type by name only (kind Other); look those up too.
    let needs_lookup = |encoder: &EventEncoder, oid: u32| {
        encoder
            .types()
            .get(oid)
            .is_none_or(|t| t.kind == TypeKind::Other)
    };
    let mut wanted: Vec<u32> = rel
        .columns
        .iter()
        .map(|c| c.type_oid)
        .filter(|oid| *oid >= FIRST_USER_OID && needs_lookup(encoder, *oid))
        .collect();
    for _round in 0..4 {
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            break;
        }
        let rows = catalog::lookup_types(conn, &wanted).await?;
        let mut next = Vec::new();
        for row in rows {
            let kind = match row.typtype {
                'e' => TypeKind::Enum,
                'd' => TypeKind::Domain { base: row.base },
                'c' => TypeKind::Composite,
                'r' | 'm' => TypeKind::Range,
                _ if row.category == 'A' && row.elem != 0 => TypeKind::Array { elem: row.elem },
                _ => TypeKind::Other,
            };
            for dep in [row.base, row.elem] {
                if dep >= FIRST_USER_OID && needs_lookup(encoder, dep) {
                    next.push(dep);
                }
            }
            encoder.types_mut().insert(
                row.oid,
                TypeInfo {
                    name: row.name,
                    kind,
                },
            );
        }
        wanted = next;
    }
    if keys_known.insert(rel_id, ()).is_none() {
        let pk = catalog::primary_key(conn, rel_id).await?;
        if !pk.is_empty() {
            encoder.set_primary_key(&rel.namespace, &rel.name, pk);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut b = Backoff::new(ms(250), ms(2000));
        let delays: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        assert_eq!(
            delays,
            [ms(250), ms(500), ms(1000), ms(2000), ms(2000), ms(2000)]
        );
    }

    #[test]
    fn backoff_resets_only_after_a_healthy_connection() {
        let mut b = Backoff::new(ms(250), Duration::from_secs(30));
        for _ in 0..5 {
            b.next_delay();
        }
        // Refused before streaming, or streamed only briefly: the same incident goes on.
        b.connection_ended(None);
        assert_eq!(b.next_delay(), ms(8000));
        b.connection_ended(Some(Backoff::HEALTHY_AFTER - ms(1)));
        assert_eq!(b.next_delay(), ms(16000));
        // Streamed for a while: the next failure starts from the shortest delay again.
        b.connection_ended(Some(Backoff::HEALTHY_AFTER));
        assert_eq!(b.next_delay(), ms(250));
        assert_eq!(b.next_delay(), ms(500));
    }

    #[test]
    fn idle_walsenders_are_pinged_well_within_the_receive_timeout() {
        assert_eq!(
            ping_interval(Duration::from_secs(30), Duration::from_secs(10)),
            Duration::from_secs(10)
        );
        assert_eq!(
            ping_interval(Duration::from_secs(3), Duration::from_secs(10)),
            Duration::from_secs(1)
        );
        assert_eq!(
            ping_interval(Duration::from_secs(60), Duration::from_secs(10)),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn decode_errors_are_one_line_fatal_and_name_the_position() {
        let e = undecodable("unknown pgoutput message kind 0x3f", 0x1_0000_0028);
        assert!(!e.is_transient());
        let text = e.to_string();
        assert!(text.contains("0x3f") && text.contains("1/28"), "{text}");
        assert!(!text.contains('\n'));
    }

    #[test]
    fn a_silent_connection_is_transient() {
        assert!(connection_lost("nothing received".into()).is_transient());
    }
}
