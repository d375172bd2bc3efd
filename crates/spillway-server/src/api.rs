//! The HTTP API: `GET /v1/changes` (NDJSON stream), `GET /v1/status`, `GET /healthz`.
//!
//! Each `/v1/changes` request gets its own reader task that reads the log in batches on
//! the blocking pool and writes into a bounded channel (8 chunks of at most ~1 MiB), so a
//! slow consumer costs a bounded amount of memory and never slows the others or capture.
//! New records are pushed the moment they become durable: the task waits on the log's
//! committed-lsn watch, not on a timer.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::json;
use spillway_log::{ChangeLog, LogError};
use spillway_postgres::capture::SourceStatus;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct ApiState {
    /// The change log.
    pub log: ChangeLog,
    /// Live state of the source.
    pub source: Arc<SourceStatus>,
    /// Slot name (for status).
    pub slot: String,
    /// Publication name (for status).
    pub publication: String,
    /// Database name (for status).
    pub database: String,
    /// How long an idle stream waits before sending a heartbeat line.
    pub heartbeat: Duration,
    /// Turns true when the server stops; open streams end then.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// Builds the router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/status", get(status))
        .route("/v1/changes", get(changes))
        .fallback(not_found)
        .with_state(state)
}

/// A 400/404 with `{"error": "..."}`.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

async fn not_found() -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "no such endpoint; see /v1/changes, /v1/status, /healthz".into(),
    )
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The body of `GET /v1/status`.
pub fn status_json(state: &ApiState) -> serde_json::Value {
    let s = &state.source;
    let fmt = spillway_pgoutput::message::format_pg_lsn;
    let last_commit = s.last_commit_time_us.load(Ordering::Relaxed);
    json!({
        "current_lsn": state.log.committed_lsn(),
        "oldest_lsn": state.log.oldest_lsn(),
        "source": {
            "database": state.database,
            "slot": state.slot,
            "publication": state.publication,
            "streaming": s.streaming.load(Ordering::Relaxed),
            "confirmed_flush_lsn": fmt(s.confirmed_flush_lsn.load(Ordering::Relaxed)),
            "server_wal_end": fmt(s.server_wal_end.load(Ordering::Relaxed)),
            "last_commit_time_us": if last_commit > 0 { json!(last_commit) } else { json!(null) },
            "events_captured": s.events_captured.load(Ordering::Relaxed),
            "last_error": s.last_error.lock().map(|e| e.clone()).unwrap_or(None),
        },
        "log": {
            "dir": state.log.dir().display().to_string(),
            "disk_usage_bytes": state.log.disk_usage_bytes(),
        },
        "time_us": now_us(),
    })
}

async fn status(State(state): State<ApiState>) -> impl IntoResponse {
    Json(status_json(&state))
}

const CHANGES_PARAMS: &[&str] = &["from_lsn", "from"];

/// Where a stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// At this lsn, inclusive.
    Lsn(u64),
    /// The oldest retained record.
    Beginning,
    /// Only records committed from now on.
    Now,
}

/// Parses the parameters of `/v1/changes`.
pub fn parse_changes_params(q: &HashMap<String, String>) -> Result<StartAt, ApiError> {
    if let Some(unknown) = q.keys().find(|k| !CHANGES_PARAMS.contains(&k.as_str())) {
        return Err(bad_request(format!(
            "unknown parameter `{unknown}`; /v1/changes takes {}",
            CHANGES_PARAMS.join(", ")
        )));
    }
    match (q.get("from_lsn"), q.get("from")) {
        (Some(_), Some(_)) => Err(bad_request("give either `from_lsn` or `from`, not both")),
        (Some(l), None) => match l.parse::<u64>() {
            Ok(n) if n >= 1 => Ok(StartAt::Lsn(n)),
            _ => Err(bad_request(format!(
                "`from_lsn` must be a whole number >= 1, got `{l}`"
            ))),
        },
        (None, Some(f)) => match f.as_str() {
            "beginning" => Ok(StartAt::Beginning),
            "now" => Ok(StartAt::Now),
            other => Err(bad_request(format!(
                "`from` must be `beginning` or `now`, got `{other}`"
            ))),
        },
        (None, None) => Ok(StartAt::Now),
    }
}

async fn changes(
    State(state): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let start = parse_changes_params(&q)?;
    let from_lsn = match start {
        StartAt::Lsn(n) => n,
        StartAt::Beginning => state.log.oldest_lsn(),
        StartAt::Now => state.log.committed_lsn() + 1,
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::spawn(stream_task(state, from_lsn, tx));
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

fn requery_line(requested: u64, oldest: u64) -> Bytes {
    Bytes::from(format!(
        "{}\n",
        json!({"type": "requery_required", "requested_lsn": requested, "oldest_lsn": oldest, "timestamp": now_us()})
    ))
}

/// Reads the log from `from_lsn` and pushes NDJSON chunks into `tx` until the client goes away.
async fn stream_task(
    state: ApiState,
    from_lsn: u64,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let log = state.log.clone();
    let mut committed = log.subscribe();
    let mut shutdown = state.shutdown.clone();
    let oldest = log.oldest_lsn();
    let mut start = from_lsn;
    if from_lsn < oldest && from_lsn <= log.committed_lsn() {
        if tx.send(Ok(requery_line(from_lsn, oldest))).await.is_err() {
            return;
        }
        start = oldest;
    }
    let mut reader = match log.reader(start) {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
            return;
        }
    };
    loop {
        committed.borrow_and_update();
        let result = tokio::task::spawn_blocking(move || {
            let batch = reader.read_batch(4096, 1 << 20);
            (reader, batch)
        })
        .await;
        let (r, batch) = match result {
            Ok(v) => v,
            Err(_) => return,
        };
        reader = r;
        match batch {
            Ok(records) if records.is_empty() => {
                tokio::select! {
                    changed = committed.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(state.heartbeat) => {
                        let hb = format!("{}\n", json!({"type": "heartbeat", "current_lsn": log.committed_lsn(), "timestamp": now_us()}));
                        if tx.send(Ok(Bytes::from(hb))).await.is_err() { return }
                    }
                    _ = tx.closed() => return,
                    _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => return,
                }
            }
            Ok(records) => {
                let size: usize = records.iter().map(|r| r.payload.len() + 1).sum();
                let mut buf = Vec::with_capacity(size);
                for r in records {
                    buf.extend_from_slice(&r.payload);
                    buf.push(b'\n');
                }
                if tx.send(Ok(Bytes::from(buf))).await.is_err() {
                    return;
                }
            }
            Err(LogError::Trimmed { requested, oldest }) => {
                if tx.send(Ok(requery_line(requested, oldest))).await.is_err() {
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

    #[test]
    fn params() {
        assert_eq!(parse_changes_params(&q(&[])).ok(), Some(StartAt::Now));
        assert_eq!(
            parse_changes_params(&q(&[("from_lsn", "5")])).ok(),
            Some(StartAt::Lsn(5))
        );
        assert_eq!(
            parse_changes_params(&q(&[("from", "beginning")])).ok(),
            Some(StartAt::Beginning)
        );
        for (bad, needle) in [
            (q(&[("from_lsn", "-1")]), "from_lsn"),
            (q(&[("from_lsn", "0")]), "from_lsn"),
            (q(&[("from_lsn", "x")]), "from_lsn"),
            (q(&[("from", "yesterday")]), "from"),
            (q(&[("from", "now"), ("from_lsn", "1")]), "both"),
            (q(&[("color", "red")]), "color"),
        ] {
            let e = parse_changes_params(&bad)
                .err()
                .map(|e| e.1)
                .unwrap_or_default();
            assert!(e.contains(needle), "{e}");
        }
    }
}
