//! `GET /v1/changes`: the change stream.
//!
//! Each request gets a reader task that reads the log in batches on the blocking pool,
//! filters on the server (entities, operations), groups events into batches (flushed when
//! `batch_size` events are ready or `batch_timeout_ms` after the first one, whichever comes
//! first; `0` = as soon as nothing more is ready) and writes them into a bounded channel
//! (8 chunks). A slow consumer therefore costs bounded memory and never slows the others or
//! capture. New records are pushed the moment they become durable: the task waits on the
//! log's committed-lsn watch, not on a timer.
//!
//! Formats: NDJSON (default; a batch is a run of lines written together) and Server-Sent
//! Events for `Accept: text/event-stream` (`id:` = `lsn:epoch`, so a browser's
//! `Last-Event-ID` resumes right after the last event it saw).
//!
//! **Epochs.** Every response names the log's current epoch in the `Spillway-Log-Epoch`
//! header (16 hex digits; its first lsn in `Spillway-Log-Epoch-Start`); a `requery_required` record the log itself holds (`reason:
//! "log_gap"`) names the epoch that begins with it in `log_epoch`. A client resuming by
//! lsn sends the epoch its position belongs to (`epoch=`, or `Last-Event-ID: lsn:epoch`):
//! when a later epoch began at or below that position (a repaired or restored log handed
//! those lsns out again), the stream starts at that epoch's first lsn instead, after a
//! `requery_required` (`reason: "log_rewound"`, `oldest_lsn` = that lsn) — and an epoch this log never had is answered with
//! `requery_required` (`reason: "unknown_log_epoch"`), then the log's end. Without an
//! epoch, a position is taken as it is.

use super::{bad_request, now_us, ApiError, ApiState};
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use spillway_log::{LogError, PendingRequery};
use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

const PARAMS: &[&str] = &[
    "from_lsn",
    "from_timestamp",
    "from",
    "consumer",
    "entities",
    "exclude_entities",
    "operations",
    "batch_size",
    "batch_timeout_ms",
    "heartbeat_ms",
    "epoch",
];
const OPERATIONS: &[&str] = &["insert", "update", "delete", "truncate", "read"];
/// Largest accepted `batch_size`.
pub const MAX_BATCH_SIZE: usize = 10_000;
/// Default `batch_size`.
pub const DEFAULT_BATCH_SIZE: usize = 1_000;
/// A batch also goes out once it holds this many bytes, whatever
/// `batch_size` says: with the 8-chunk channel this bounds a stream's
/// buffered output to about 8 MiB (plus one event).
pub const MAX_CHUNK_BYTES: usize = 1 << 20;

/// Where a stream starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    /// At this lsn, inclusive.
    Lsn(u64),
    /// At the first event committed at or after this time (µs since the epoch).
    Timestamp(i64),
    /// The oldest retained record.
    Beginning,
    /// Only records committed from now on.
    Now,
    /// Right after this consumer's checkpoint (the beginning for a new consumer).
    Consumer(String),
}

/// The wire format of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Ndjson,
    /// Server-Sent Events.
    Sse,
}

/// Validated parameters of `/v1/changes`.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamParams {
    /// Start position.
    pub start: StartAt,
    /// Event filter.
    pub filter: Filter,
    /// Events per batch.
    pub batch_size: usize,
    /// Longest wait after the first event of a batch before it is flushed.
    pub batch_timeout: Duration,
    /// Idle time before a heartbeat line.
    pub heartbeat: Duration,
    /// Wire format.
    pub format: Format,
    /// The log epoch a `from_lsn` / `Last-Event-ID` position belongs to.
    pub epoch: Option<u64>,
}

/// Which events a consumer wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// `schema.table` / `table` patterns with `*`; empty = all.
    pub entities: Vec<String>,
    /// Patterns to leave out.
    pub exclude_entities: Vec<String>,
    /// Operations of change events to keep; `None` = all.
    pub operations: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    entity: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    operation: Option<Cow<'a, str>>,
}

fn entity_matches(patterns: &[String], entity: &str) -> bool {
    let (schema, table) = entity.split_once('.').unwrap_or(("", entity));
    patterns
        .iter()
        .any(|p| spillway_postgres::table_matches(std::slice::from_ref(p), schema, table))
}

impl Filter {
    /// Whether nothing is filtered.
    pub fn is_all(&self) -> bool {
        self.entities.is_empty() && self.exclude_entities.is_empty() && self.operations.is_none()
    }

    /// Whether the event stored as `payload` passes. `operations` applies to row changes;
    /// entity filters apply to every event that names an entity, and events without one
    /// (logical messages) only pass when no `entities` list is given.
    pub fn accepts(&self, payload: &[u8]) -> bool {
        if self.is_all() {
            return true;
        }
        let Ok(head) = serde_json::from_slice::<Head>(payload) else {
            return true; // never hide what we cannot classify
        };
        // The log saying events are missing reaches every reader.
        if head.kind == "requery_required" {
            return true;
        }
        match head.entity.as_deref() {
            Some(entity) => {
                if !self.entities.is_empty() && !entity_matches(&self.entities, entity) {
                    return false;
                }
                if entity_matches(&self.exclude_entities, entity) {
                    return false;
                }
            }
            None => {
                if !self.entities.is_empty() {
                    return false;
                }
            }
        }
        if head.kind == "change" {
            if let (Some(ops), Some(op)) = (&self.operations, head.operation.as_deref()) {
                return ops.iter().any(|o| o == op);
            }
        }
        true
    }
}

fn list(q: &HashMap<String, String>, key: &str) -> Result<Vec<String>, ApiError> {
    let Some(v) = q.get(key) else {
        return Ok(Vec::new());
    };
    let items: Vec<String> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    for item in &items {
        if item.split('.').count() > 2 || item.split('.').any(str::is_empty) {
            return Err(bad_request(format!(
                "`{key}`: `{item}` is not an entity; write schema.table, table or schema.*"
            )));
        }
    }
    if items.is_empty() {
        return Err(bad_request(format!(
            "`{key}` is empty; give a comma list of schema.table"
        )));
    }
    Ok(items)
}

fn number(
    q: &HashMap<String, String>,
    key: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, ApiError> {
    match q.get(key) {
        None => Ok(None),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(bad_request(format!(
                "`{key}` must be a whole number from {min} to {max}, got `{v}`"
            ))),
        },
    }
}

/// Validates a consumer name (also used by the consumer endpoints).
pub fn valid_consumer_name(name: &str) -> Result<(), ApiError> {
    if !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        Ok(())
    } else {
        Err(bad_request(format!(
            "consumer name `{name}` is invalid; use 1-128 letters, digits, `_`, `-` or `.`"
        )))
    }
}

/// Parses and validates the query (and the `Accept` / `Last-Event-ID` headers).
pub fn parse_params(
    q: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<StreamParams, ApiError> {
    if let Some(unknown) = q.keys().find(|k| !PARAMS.contains(&k.as_str())) {
        return Err(bad_request(format!(
            "unknown parameter `{unknown}`; /v1/changes takes {}",
            PARAMS.join(", ")
        )));
    }
    let starts: Vec<&str> = ["from_lsn", "from_timestamp", "from", "consumer"]
        .into_iter()
        .filter(|k| q.contains_key(*k))
        .collect();
    if starts.len() > 1 {
        return Err(bad_request(format!(
            "give only one of `from_lsn`, `from_timestamp`, `from`, `consumer` (got both `{}` and `{}`)",
            starts[0], starts[1]
        )));
    }
    let mut start = match starts.first().copied() {
        None => StartAt::Now,
        Some("from_lsn") => StartAt::Lsn(number(q, "from_lsn", 1, u64::MAX)?.unwrap_or(1)),
        Some("from_timestamp") => {
            let v = &q["from_timestamp"];
            let ts = v
                .parse::<i64>()
                .ok()
                .filter(|t| *t >= 0)
                .or_else(|| super::time::parse_rfc3339_micros(v))
                .ok_or_else(|| {
                    bad_request(format!(
                        "`from_timestamp` must be µs since the epoch or RFC 3339 (2024-01-02T03:04:05Z), got `{v}`"
                    ))
                })?;
            StartAt::Timestamp(ts)
        }
        Some("from") => match q["from"].as_str() {
            "beginning" => StartAt::Beginning,
            "now" => StartAt::Now,
            other => {
                return Err(bad_request(format!(
                    "`from` must be `beginning` or `now`, got `{other}`"
                )))
            }
        },
        Some(_) => {
            let name = &q["consumer"];
            valid_consumer_name(name)?;
            StartAt::Consumer(name.clone())
        }
    };
    let mut epoch = match q.get("epoch") {
        None => None,
        Some(v) => Some(parse_epoch(v).ok_or_else(|| {
            bad_request(format!(
                "`epoch` must be the 16 hex digits of a Spillway-Log-Epoch header, got `{v}`"
            ))
        })?),
    };
    if epoch.is_some() && !matches!(start, StartAt::Lsn(_)) {
        return Err(bad_request(
            "`epoch` says which log epoch a `from_lsn` belongs to; give it with `from_lsn` only",
        ));
    }
    // A reconnecting EventSource resumes right after the last event it received.
    if let Some(id) = headers.get("last-event-id") {
        let bad = || bad_request("`Last-Event-ID` must be an lsn, or `lsn:epoch` as sent in `id:`");
        let text = id.to_str().map_err(|_| bad())?.trim();
        let (lsn_text, epoch_text) = match text.split_once(':') {
            Some((l, e)) => (l, Some(e)),
            None => (text, None),
        };
        let id = lsn_text.parse::<u64>().map_err(|_| bad())?;
        if let Some(e) = epoch_text {
            epoch = Some(parse_epoch(e).ok_or_else(bad)?);
        }
        let next = id.checked_add(1).ok_or_else(|| {
            bad_request(format!(
                "`Last-Event-ID` {id} is not an lsn this log can reach; reconnect without it (or with from_lsn)"
            ))
        })?;
        start = StartAt::Lsn(next);
    }
    let operations = match q.get("operations") {
        None => None,
        Some(_) => {
            let ops = list_plain(q, "operations")?;
            if let Some(bad) = ops.iter().find(|o| !OPERATIONS.contains(&o.as_str())) {
                return Err(bad_request(format!(
                    "`operations`: unknown operation `{bad}`; use {}",
                    OPERATIONS.join(", ")
                )));
            }
            Some(ops)
        }
    };
    let format = match headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()) {
        Some(a) if a.contains("text/event-stream") => Format::Sse,
        _ => Format::Ndjson,
    };
    Ok(StreamParams {
        start,
        filter: Filter {
            entities: list(q, "entities")?,
            exclude_entities: list(q, "exclude_entities")?,
            operations,
        },
        batch_size: number(q, "batch_size", 1, MAX_BATCH_SIZE as u64)?
            .map_or(DEFAULT_BATCH_SIZE, |n| n as usize),
        batch_timeout: Duration::from_millis(
            number(q, "batch_timeout_ms", 0, 60_000)?.unwrap_or(0),
        ),
        heartbeat: Duration::from_millis(
            number(q, "heartbeat_ms", 100, 300_000)?.unwrap_or(10_000),
        ),
        format,
        epoch,
    })
}

fn parse_epoch(v: &str) -> Option<u64> {
    // Hex digits only (`from_str_radix` would also take a leading `+`).
    if v.is_empty() || v.len() > 16 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(v, 16).ok()
}

fn list_plain(q: &HashMap<String, String>, key: &str) -> Result<Vec<String>, ApiError> {
    let items: Vec<String> = q
        .get(key)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    if items.is_empty() {
        return Err(bad_request(format!("`{key}` is empty; give a comma list")));
    }
    Ok(items)
}

/// Resolves a start position to the first lsn to read.
pub(crate) fn resolve_start(state: &ApiState, start: &StartAt) -> Result<u64, ApiError> {
    let log = &state.log;
    Ok(match start {
        StartAt::Lsn(n) => *n,
        StartAt::Beginning => log.oldest_lsn(),
        StartAt::Now => log.committed_lsn() + 1,
        StartAt::Timestamp(ts) => log
            .lsn_for_timestamp(*ts)
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
        StartAt::Consumer(name) => match log
            .checkpoints()
            .get(name)
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        {
            Some(cp) => cp.lsn + 1,
            None => log.oldest_lsn(),
        },
    })
}

pub(crate) async fn changes(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let params = parse_params(&q, &headers)?;
    let from_lsn = resolve_start(&state, &params.start)?;
    // A named consumer reset because the log ended before its checkpoint
    // (a repaired or restored log) is told first, on every stream, until it
    // stores a checkpoint (PUT /v1/consumers/{name}/checkpoint) — proof it
    // read the line. Read here so that a database error is a 500, never a
    // stream without the line.
    let pending = match &params.start {
        StartAt::Consumer(name) => state
            .log
            .checkpoints()
            .pending_requery(name)
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
        _ => None,
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let content_type = match params.format {
        Format::Ndjson => "application/x-ndjson",
        Format::Sse => "text/event-stream",
    };
    let epoch = state.log.current_epoch();
    tokio::spawn(stream_task(state, from_lsn, pending, params, tx));
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header("spillway-log-epoch", epoch.id_hex())
        .header("spillway-log-epoch-start", epoch.first_lsn)
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

/// Appends one event in the stream's format.
/// `id` is `lsn:epoch` (SSE only).
fn push_event(
    buf: &mut Vec<u8>,
    format: Format,
    id: Option<(u64, &str)>,
    kind: &str,
    payload: &[u8],
) {
    match format {
        Format::Ndjson => {
            buf.extend_from_slice(payload);
            buf.push(b'\n');
        }
        Format::Sse => {
            if let Some((lsn, epoch)) = id {
                buf.extend_from_slice(format!("id: {lsn}:{epoch}\n").as_bytes());
            }
            buf.extend_from_slice(format!("event: {kind}\ndata: ").as_bytes());
            buf.extend_from_slice(payload);
            buf.extend_from_slice(b"\n\n");
        }
    }
}

fn event_kind(payload: &[u8]) -> String {
    serde_json::from_slice::<Head>(payload)
        .map(|h| h.kind.into_owned())
        .unwrap_or_else(|_| "change".into())
}

fn control(format: Format, kind: &str, value: serde_json::Value) -> Bytes {
    let mut buf = Vec::new();
    push_event(&mut buf, format, None, kind, value.to_string().as_bytes());
    Bytes::from(buf)
}

fn heartbeat(format: Format, current_lsn: u64) -> Bytes {
    control(
        format,
        "heartbeat",
        json!({"type": "heartbeat", "current_lsn": current_lsn, "timestamp": now_us()}),
    )
}

type Tx = mpsc::Sender<Result<Bytes, std::io::Error>>;

/// The batch being assembled for one stream, and when the stream last sent anything.
struct Batch {
    buf: Vec<u8>,
    events: usize,
    started: Option<Instant>,
    last_sent: Instant,
}

impl Batch {
    /// `epoch`: the log's current epoch, read after the record became visible (an epoch
    /// begins before its first record is written), so it is right for this lsn.
    fn push(&mut self, format: Format, lsn: u64, epoch: &str, payload: &[u8]) {
        let kind = if format == Format::Sse {
            event_kind(payload)
        } else {
            String::new()
        };
        push_event(&mut self.buf, format, Some((lsn, epoch)), &kind, payload);
        self.events += 1;
        self.started.get_or_insert_with(Instant::now);
    }

    /// Sends the batch (if any) and then `extra` (a control line, if any). False when the
    /// client has gone away.
    async fn send(&mut self, tx: &Tx, extra: Option<Bytes>) -> bool {
        if !self.buf.is_empty()
            && tx
                .send(Ok(Bytes::from(std::mem::take(&mut self.buf))))
                .await
                .is_err()
        {
            return false;
        }
        self.events = 0;
        self.started = None;
        if let Some(line) = extra {
            if tx.send(Ok(line)).await.is_err() {
                return false;
            }
        }
        self.last_sent = Instant::now();
        true
    }
}

/// Reads the log from `from_lsn` and pushes batches into `tx` until the client goes away.
async fn stream_task(
    state: ApiState,
    from_lsn: u64,
    pending: Option<PendingRequery>,
    params: StreamParams,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let log = state.log.clone();
    let mut committed = log.subscribe();
    let mut shutdown = state.shutdown.clone();
    let format = params.format;
    // `reason`: `trimmed` (retention deleted requested..oldest),
    // `ahead_of_log` (the position is past the log's end: the client saw
    // lsns this log does not hold, e.g. after a repair or restore),
    // `log_rewound` (a named consumer's checkpoint was reset for that, or a
    // position of an earlier epoch was moved back to a later epoch's start),
    // or `unknown_log_epoch`.
    // In SSE it carries the id of the position it moves the stream to, so a
    // browser reconnecting before the next event does not get it again.
    let requery = |requested: u64, oldest: u64, reason: &str| {
        let mut buf = Vec::new();
        let epoch = log.current_epoch().id_hex();
        push_event(
            &mut buf,
            format,
            Some((oldest.saturating_sub(1), &epoch)),
            "requery_required",
            json!({"type": "requery_required", "requested_lsn": requested, "oldest_lsn": oldest, "reason": reason, "timestamp": now_us()})
                .to_string()
                .as_bytes(),
        );
        Bytes::from(buf)
    };
    let mut start = from_lsn;
    if let Some(rq) = pending {
        if tx
            .send(Ok(requery(rq.requested_lsn, rq.resume_lsn, "log_rewound")))
            .await
            .is_err()
        {
            return;
        }
    }
    // A position of an earlier epoch: lsns from a later epoch's start on are
    // not the ones the client saw.
    if let Some(epoch) = params.epoch {
        match spillway_log::start_in_epochs(&log.epochs(), epoch, start) {
            Ok(s) if s < start => {
                // Said first, so the client takes what follows for new events,
                // not duplicates of what it saw at these lsns before.
                if tx.send(Ok(requery(start, s, "log_rewound"))).await.is_err() {
                    return;
                }
                start = s;
            }
            Ok(_) => {}
            Err(()) => {
                let end = log.committed_lsn();
                if tx
                    .send(Ok(requery(start, end + 1, "unknown_log_epoch")))
                    .await
                    .is_err()
                {
                    return;
                }
                start = end + 1;
            }
        }
    }
    // Committed lsns only grow: a start beyond the end means the client saw
    // records that are not in this log.
    let end = log.committed_lsn();
    if start > end + 1 {
        if tx
            .send(Ok(requery(start, end + 1, "ahead_of_log")))
            .await
            .is_err()
        {
            return;
        }
        start = end + 1;
    }
    // A start below the oldest retained record is reported by the reader
    // (LogError::Trimmed below), also when a trim races with this request.
    let mut reader = match log.reader(start) {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
            return;
        }
    };
    let mut batch = Batch {
        buf: Vec::new(),
        events: 0,
        started: None,
        last_sent: Instant::now(),
    };
    let read_max = params.batch_size.clamp(256, 4096);
    loop {
        committed.borrow_and_update();
        let result = tokio::task::spawn_blocking(move || {
            let b = reader.read_batch(read_max, 1 << 20);
            (reader, b)
        })
        .await;
        let Ok((r, records)) = result else { return };
        reader = r;
        match records {
            Ok(records) if !records.is_empty() => {
                let epoch = if format == Format::Sse {
                    log.current_epoch().id_hex()
                } else {
                    String::new()
                };
                for rec in records {
                    if !params.filter.accepts(&rec.payload) {
                        continue;
                    }
                    batch.push(format, rec.lsn, &epoch, &rec.payload);
                    let full =
                        batch.events >= params.batch_size || batch.buf.len() >= MAX_CHUNK_BYTES;
                    if full && !batch.send(&tx, None).await {
                        return;
                    }
                }
                // A long scan through records the filter drops sends nothing; keep the
                // connection (and the client's idle timer) alive meanwhile.
                if batch.events == 0
                    && batch.last_sent.elapsed() >= params.heartbeat
                    && !batch
                        .send(&tx, Some(heartbeat(format, log.committed_lsn())))
                        .await
                {
                    return;
                }
            }
            Ok(_) => {
                // Caught up: flush a partial batch now, or when its timeout comes;
                // with nothing to send, wait for new records or the heartbeat.
                let (due, idle) = match batch.started {
                    Some(t) => (t + params.batch_timeout, false),
                    None => (batch.last_sent + params.heartbeat, true),
                };
                if !idle && Instant::now() >= due {
                    if !batch.send(&tx, None).await {
                        return;
                    }
                    continue;
                }
                tokio::select! {
                    changed = committed.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep_until(due) => {
                        let line = idle.then(|| heartbeat(format, log.committed_lsn()));
                        if !batch.send(&tx, line).await { return }
                    }
                    _ = tx.closed() => return,
                    _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => return,
                }
            }
            Err(LogError::Trimmed { requested, oldest }) => {
                // Retention removed what this consumer was about to read.
                if !batch
                    .send(&tx, Some(requery(requested, oldest, "trimmed")))
                    .await
                {
                    return;
                }
                reader = match log.reader(oldest) {
                    Ok(r) => r,
                    Err(_) => return,
                };
            }
            Err(e) => {
                tracing::error!(error = %e, "reading the change log failed; ending the stream");
                let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<StreamParams, String> {
        parse_params(&q(pairs), &HeaderMap::new()).map_err(|e| e.1)
    }

    #[test]
    fn starts() {
        assert_eq!(parse(&[]).unwrap().start, StartAt::Now);
        assert_eq!(parse(&[("from_lsn", "5")]).unwrap().start, StartAt::Lsn(5));
        assert_eq!(
            parse(&[("from", "beginning")]).unwrap().start,
            StartAt::Beginning
        );
        assert_eq!(
            parse(&[("from_timestamp", "1000")]).unwrap().start,
            StartAt::Timestamp(1000)
        );
        assert_eq!(
            parse(&[("from_timestamp", "1970-01-01T00:00:01Z")])
                .unwrap()
                .start,
            StartAt::Timestamp(1_000_000)
        );
        assert_eq!(
            parse(&[("consumer", "search-sync")]).unwrap().start,
            StartAt::Consumer("search-sync".into())
        );
        let mut h = HeaderMap::new();
        h.insert("last-event-id", "41".parse().unwrap());
        h.insert(header::ACCEPT, "text/event-stream".parse().unwrap());
        let p = parse_params(&q(&[("from", "beginning")]), &h).unwrap();
        assert_eq!(p.start, StartAt::Lsn(42));
        assert_eq!(p.format, Format::Sse);
    }

    #[test]
    fn every_bad_parameter_is_named() {
        for (bad, needle) in [
            (vec![("from_lsn", "-1")], "from_lsn"),
            (vec![("from_lsn", "0")], "from_lsn"),
            (vec![("from_lsn", "x")], "from_lsn"),
            (vec![("from", "yesterday")], "from"),
            (vec![("from", "now"), ("from_lsn", "1")], "only one"),
            (vec![("from_lsn", "1"), ("from_timestamp", "1")], "only one"),
            (vec![("from_timestamp", "soon")], "from_timestamp"),
            (vec![("from_timestamp", "-5")], "from_timestamp"),
            (vec![("consumer", "bad name")], "consumer name"),
            (vec![("operations", "insert,upsert")], "upsert"),
            (vec![("operations", "")], "operations"),
            (vec![("entities", "a.b.c")], "entities"),
            (vec![("exclude_entities", "")], "exclude_entities"),
            (vec![("batch_size", "-3")], "batch_size"),
            (vec![("batch_size", "0")], "batch_size"),
            (vec![("batch_size", "100001")], "batch_size"),
            (vec![("batch_timeout_ms", "x")], "batch_timeout_ms"),
            (vec![("heartbeat_ms", "1")], "heartbeat_ms"),
            (vec![("color", "red")], "color"),
            (vec![("from_lsn", "18446744073709551616")], "from_lsn"),
        ] {
            let e = parse(&bad).err().unwrap_or_default();
            assert!(
                e.contains(needle),
                "{bad:?}: `{e}` does not name `{needle}`"
            );
        }
    }

    #[test]
    fn epochs_go_with_an_lsn_position_only() {
        let p = parse(&[("from_lsn", "7"), ("epoch", "00000000000000ab")]).unwrap();
        assert_eq!((p.start, p.epoch), (StartAt::Lsn(7), Some(0xab)));
        for (pairs, needle) in [
            (vec![("from", "beginning"), ("epoch", "ab")], "from_lsn"),
            (vec![("epoch", "ab")], "from_lsn"),
            (vec![("from_lsn", "1"), ("epoch", "xyz")], "16 hex digits"),
            (vec![("from_lsn", "1"), ("epoch", "")], "16 hex digits"),
            (vec![("from_lsn", "1"), ("epoch", "+ab")], "16 hex digits"),
            (
                vec![("from_lsn", "1"), ("epoch", "00000000000000000ab")],
                "16 hex digits",
            ),
        ] {
            let e = parse(&pairs).unwrap_err();
            assert!(e.contains(needle), "{pairs:?}: {e}");
        }
        let mut h = HeaderMap::new();
        h.insert("last-event-id", "41:00000000000000cd".parse().unwrap());
        let p = parse_params(&q(&[]), &h).unwrap();
        assert_eq!((p.start, p.epoch), (StartAt::Lsn(42), Some(0xcd)));
        h.insert("last-event-id", "41:zz".parse().unwrap());
        let e = parse_params(&q(&[]), &h)
            .err()
            .map(|e| e.1)
            .unwrap_or_default();
        assert!(e.contains("lsn:epoch"), "{e}");
    }

    /// Issue 8.7: `Last-Event-ID: u64::MAX` must be a 400, not an overflow.
    #[test]
    fn last_event_id_at_the_top_of_the_range_is_refused() {
        let mut h = HeaderMap::new();
        h.insert("last-event-id", u64::MAX.to_string().parse().unwrap());
        let e = parse_params(&q(&[]), &h)
            .err()
            .map(|e| e.1)
            .unwrap_or_default();
        assert!(e.contains("Last-Event-ID"), "{e}");
        h.insert("last-event-id", (u64::MAX - 1).to_string().parse().unwrap());
        assert_eq!(
            parse_params(&q(&[]), &h).unwrap().start,
            StartAt::Lsn(u64::MAX)
        );
    }

    #[test]
    fn filters() {
        let f = Filter {
            entities: vec!["bank.*".into(), "users".into()],
            exclude_entities: vec!["bank.secret".into()],
            operations: Some(vec!["insert".into()]),
        };
        let ev = |t: &str, e: &str, op: &str| {
            format!(r#"{{"type":"{t}","lsn":1,"operation":"{op}","entity":"{e}"}}"#).into_bytes()
        };
        assert!(f.accepts(&ev("change", "bank.holding", "insert")));
        assert!(!f.accepts(&ev("change", "bank.holding", "delete")));
        assert!(!f.accepts(&ev("change", "bank.secret", "insert")));
        assert!(f.accepts(&ev("change", "commerce.users", "insert")));
        assert!(!f.accepts(&ev("change", "commerce.products", "insert")));
        assert!(f.accepts(br#"{"type":"schema_change","lsn":1,"entity":"bank.holding"}"#));
        assert!(!f.accepts(br#"{"type":"message","lsn":1,"prefix":"p"}"#));
        assert!(Filter::default().accepts(br#"{"type":"message","lsn":1}"#));
        // A requery record in the log passes every filter.
        assert!(f.accepts(br#"{"type":"requery_required","lsn":9,"reason":"log_gap"}"#));
    }
}
