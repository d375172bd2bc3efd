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
//! **Heartbeats** (`{"type":"heartbeat","current_lsn":…,"scanned_lsn":…}`) go out after
//! `heartbeat_ms` without anything to send, during long scans through records the filter
//! drops, and 100 ms after a caught-up stream read past its last event: `scanned_lsn` is
//! how far the stream has read, every lsn up to it sent or filtered out, so a filtered
//! consumer's position reaches `current_lsn` when it is caught up.
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
//! `requery_required` (`reason: RequeryReason::LogRewound`, `oldest_lsn` = that lsn) — and an epoch this log never had is answered with
//! `requery_required` (`reason: RequeryReason::UnknownLogEpoch`), then the log's end. Without an
//! epoch, a position is taken as it is.

use super::{bad_request, ApiError, ApiState};
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use spillway_core::query::{parse_epoch, ChangesQuery};
use spillway_core::time::now_us;
use spillway_core::transform::Filter;
use spillway_core::{EventView, Heartbeat, RequeryReason, RequeryRequired};
use spillway_log::{LogError, PendingRequery};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub use spillway_core::query::{Start as StartAt, DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE};

/// A batch also goes out once it holds this many bytes, whatever
/// `batch_size` says: with the 8-chunk channel this bounds a stream's
/// buffered output to about 8 MiB (plus one event).
pub const MAX_CHUNK_BYTES: usize = 1 << 20;

/// How soon a caught-up stream whose last records its filter left out sends a heartbeat
/// saying how far it has read (`scanned_lsn`).
const SCANNED_NOTICE: Duration = Duration::from_millis(100);

/// The wire format of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Ndjson,
    /// Server-Sent Events.
    Sse,
}

/// Validated parameters of `/v1/changes`: the query ([`ChangesQuery`], shared with the
/// client and `spillway tail`) with the `Accept` and `Last-Event-ID` headers applied.
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

/// Validates a consumer name (also used by the consumer endpoints).
pub fn valid_consumer_name(name: &str) -> Result<(), ApiError> {
    spillway_core::query::valid_consumer_name(name).map_err(|e| bad_request(e.0))
}

/// Parses and validates the query (and the `Accept` / `Last-Event-ID` headers).
pub fn parse_params(
    pairs: &[(String, String)],
    headers: &HeaderMap,
) -> Result<StreamParams, ApiError> {
    let q = ChangesQuery::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|e| bad_request(e.0))?;
    let mut start = q.start.clone();
    let mut epoch = q.epoch;
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
    let format = match headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()) {
        Some(a) if a.contains("text/event-stream") => Format::Sse,
        _ => Format::Ndjson,
    };
    Ok(StreamParams {
        start,
        filter: q.filter(),
        batch_size: q.batch_size.unwrap_or(DEFAULT_BATCH_SIZE),
        batch_timeout: Duration::from_millis(q.batch_timeout_ms.unwrap_or(0)),
        heartbeat: Duration::from_millis(
            q.heartbeat_ms
                .unwrap_or(spillway_core::query::DEFAULT_HEARTBEAT_MS),
        ),
        format,
        epoch,
    })
}

/// An `entities` name (no `*`) that matches none of the tables the publication sends is
/// a 400 naming it, not a stream that stays empty for ever. The list capture read at its
/// last connect (plus the tables met since) is asked first; on a miss PostgreSQL itself
/// (a table created a moment ago is in a `FOR ALL TABLES` publication at once). When
/// PostgreSQL cannot be asked, the stream is served (and the miss logged). Patterns with
/// `*` may be meant for tables still to come and are taken as they are.
async fn check_entities(state: &ApiState, filter: &Filter) -> Result<(), ApiError> {
    let missing = |tables: &[(String, String)]| -> Option<String> {
        filter
            .table_patterns()
            .find(|p| !p.as_str().contains('*') && !tables.iter().any(|(s, t)| p.matches(s, t)))
            .map(|p| p.as_str().to_owned())
    };
    let known = match state.source.published_tables.lock() {
        Ok(guard) => guard.clone(),
        Err(_) => None,
    };
    let Some(known) = known else {
        return Ok(()); // not known yet
    };
    if missing(&known).is_none() {
        return Ok(());
    }
    let Some(lookup) = &state.lookup_tables else {
        return Ok(());
    };
    let tables = match lookup().await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "cannot check `entities` against the published tables; serving the stream");
            return Ok(());
        }
    };
    state.source.set_published_tables(tables.clone());
    let Some(pattern) = missing(&tables) else {
        return Ok(());
    };
    let mut names: Vec<String> = tables.iter().map(|(s, t)| format!("{s}.{t}")).collect();
    let more = names.len().saturating_sub(10);
    names.truncate(10);
    let listed = if names.is_empty() {
        "none".to_string()
    } else if more > 0 {
        format!("{}, and {more} more", names.join(", "))
    } else {
        names.join(", ")
    };
    Err(bad_request(format!(
        "`entities`: `{pattern}` matches no table this Spillway captures (captured: {listed}); check the name (schema.table or table; names are case-sensitive), or add the table to the publication"
    )))
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
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let params = parse_params(&q, &headers)?;
    check_entities(&state, &params.filter).await?;
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

/// A heartbeat line: the log's end and how far this stream has read it.
fn heartbeat(format: Format, current_lsn: u64, scanned_lsn: u64) -> Bytes {
    let line = Heartbeat {
        current_lsn,
        scanned_lsn: Some(scanned_lsn.min(current_lsn)),
        timestamp: now_us(),
    }
    .to_json();
    let mut buf = Vec::new();
    push_event(&mut buf, format, None, "heartbeat", &line);
    Bytes::from(buf)
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
    /// `kind`: the event's `type` (SSE's `event:` field).
    fn push(&mut self, format: Format, lsn: u64, epoch: &str, kind: &str, payload: &[u8]) {
        push_event(&mut self.buf, format, Some((lsn, epoch)), kind, payload);
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
    let requery = |requested: u64, oldest: u64, reason: RequeryReason| {
        let mut buf = Vec::new();
        let epoch = log.current_epoch().id_hex();
        push_event(
            &mut buf,
            format,
            Some((oldest.saturating_sub(1), &epoch)),
            "requery_required",
            &RequeryRequired::new(requested, oldest, reason, now_us()).to_json(),
        );
        Bytes::from(buf)
    };
    let mut start = from_lsn;
    if let Some(rq) = pending {
        if tx
            .send(Ok(requery(
                rq.requested_lsn,
                rq.resume_lsn,
                RequeryReason::LogRewound,
            )))
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
                if tx
                    .send(Ok(requery(start, s, RequeryReason::LogRewound)))
                    .await
                    .is_err()
                {
                    return;
                }
                start = s;
            }
            Ok(_) => {}
            Err(()) => {
                let end = log.committed_lsn();
                if tx
                    .send(Ok(requery(start, end + 1, RequeryReason::UnknownLogEpoch)))
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
            .send(Ok(requery(start, end + 1, RequeryReason::AheadOfLog)))
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
    // The last lsn this stream has read (delivered or filtered out).
    let mut scanned = start.saturating_sub(1);
    // How far the client knows this stream has read: the last event sent, or the
    // `scanned_lsn` of the last heartbeat.
    let mut told = scanned;
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
                    scanned = rec.lsn;
                    // Parsed once, only when the filter or SSE's `event:` needs it.
                    let mut kind = "";
                    if !params.filter.is_all() || format == Format::Sse {
                        match EventView::parse(&rec.payload) {
                            Ok(view) => {
                                if !params.filter.accepts(&view) {
                                    continue;
                                }
                                kind = view.kind().map_or("change", |k| k.as_str());
                            }
                            // Never hide what cannot be classified.
                            Err(_) => kind = "change",
                        }
                    }
                    batch.push(format, rec.lsn, &epoch, kind, &rec.payload);
                    told = rec.lsn;
                    let full =
                        batch.events >= params.batch_size || batch.buf.len() >= MAX_CHUNK_BYTES;
                    if full && !batch.send(&tx, None).await {
                        return;
                    }
                }
                // A long scan through records the filter drops sends nothing; keep the
                // connection (and the client's idle timer) alive meanwhile.
                if batch.events == 0 && batch.last_sent.elapsed() >= params.heartbeat {
                    let line = heartbeat(format, log.committed_lsn(), scanned);
                    told = scanned;
                    if !batch.send(&tx, Some(line)).await {
                        return;
                    }
                }
            }
            Ok(_) => {
                // Caught up: flush a partial batch now, or when its timeout comes;
                // with nothing to send, wait for new records or the heartbeat.
                // A filtered stream that read past its last event says so soon, so a
                // caught-up consumer's position reaches the log's end.
                let (due, idle) = match batch.started {
                    Some(t) => (t + params.batch_timeout, false),
                    None if scanned > told => {
                        (batch.last_sent + SCANNED_NOTICE.min(params.heartbeat), true)
                    }
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
                        let line = idle.then(|| heartbeat(format, log.committed_lsn(), scanned));
                        if idle {
                            told = scanned;
                        }
                        if !batch.send(&tx, line).await { return }
                    }
                    _ = tx.closed() => return,
                    _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => return,
                }
            }
            Err(LogError::Trimmed { requested, oldest }) => {
                // Retention removed what this consumer was about to read.
                if !batch
                    .send(
                        &tx,
                        Some(requery(requested, oldest, RequeryReason::Trimmed)),
                    )
                    .await
                {
                    return;
                }
                reader = match log.reader(oldest) {
                    Ok(r) => r,
                    Err(_) => return,
                };
                scanned = oldest.saturating_sub(1);
                told = scanned;
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

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
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
}
