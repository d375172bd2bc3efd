//! The HTTP API (SPEC §5).
//!
//! | endpoint | module |
//! |---|---|
//! | `GET /v1/changes` | [`changes`] |
//! | `GET/PUT/DELETE /v1/consumers…` | [`consumers`] |
//! | `GET /v1/status`, `POST /v1/admin/trim`, `GET /healthz` | here |
//! | `GET /metrics` | [`metrics`] |
//!
//! With `[api] token` set, every endpoint but `/healthz` requires
//! `Authorization: Bearer <token>`. Bad parameters are HTTP 400 with `{"error": "…"}`
//! naming the parameter.

pub mod changes;
pub mod consumers;
pub mod metrics;

use crate::config::Secret;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::json;
use spillway_core::status::SourceStatus;
use spillway_log::ChangeLog;
use std::sync::Arc;
use std::time::Duration;

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct ApiState {
    /// The change log (with its consumer checkpoints).
    pub log: ChangeLog,
    /// Live state of the source.
    pub source: Arc<SourceStatus>,
    /// Slot name (for status).
    pub slot: String,
    /// Publication name (for status).
    pub publication: String,
    /// Database name (for status).
    pub database: String,
    /// Retention by age, for status.
    pub retention: Option<Duration>,
    /// Bearer token; `None` = no auth.
    pub token: Option<Secret>,
    /// The configured sinks.
    pub sinks: Vec<SinkInfo>,
    /// Turns true when the server stops; open streams end then.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Reads the tables the publication sends now (from PostgreSQL), for an `entities`
    /// name the last known list lacks (a table created since); `None`: no look-up.
    pub lookup_tables: Option<TableLookup>,
}

/// Reads the published tables as `(schema, table)`; an error means "cannot tell".
pub type TableLookup = Arc<
    dyn Fn() -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Vec<(String, String)>, String>> + Send>,
        > + Send
        + Sync,
>;

/// A configured sink, for status and metrics.
#[derive(Clone)]
pub struct SinkInfo {
    /// Its name (also its checkpoint name).
    pub name: String,
    /// Its type (`file`, …).
    pub kind: &'static str,
    /// Live counters.
    pub status: Arc<spillway_sinks::SinkStatus>,
}

/// Builds the router.
pub fn router(state: ApiState) -> Router {
    let protected = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/changes", get(changes::changes))
        .route("/v1/consumers", get(consumers::list))
        .route(
            "/v1/consumers/{name}",
            get(consumers::get_one).delete(consumers::delete),
        )
        .route(
            "/v1/consumers/{name}/checkpoint",
            put(consumers::put_checkpoint),
        )
        .route(
            "/v1/sinks/{name}/checkpoint",
            put(consumers::put_sink_checkpoint),
        )
        .route("/v1/admin/trim", post(admin_trim))
        .route("/metrics", get(metrics::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(protected)
        .fallback(not_found)
        .with_state(state)
}

async fn require_token(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.0.as_bytes())) {
            let mut r = ApiError(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token; send Authorization: Bearer <api.token>".into(),
            )
            .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An error answer with `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

pub(crate) fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

async fn not_found() -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "no such endpoint; see /v1/changes, /v1/consumers, /v1/status, /v1/admin/trim, /metrics, /healthz".into(),
    )
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

pub(crate) use spillway_core::time::now_us;

/// The body of `GET /v1/status`.
pub fn status_json(state: &ApiState) -> serde_json::Value {
    use std::sync::atomic::Ordering;
    let s = &state.source;
    let fmt = spillway_pgoutput::message::format_pg_lsn;
    let last_commit = s.last_commit_time_us.load(Ordering::Relaxed);
    json!({
        "enabled": true,
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
            "wal_retained_bytes": s.wal_retained_bytes.load(Ordering::Relaxed),
            "lag_ms": s.lag_ms.load(Ordering::Relaxed),
            "last_error": s.last_error.lock().map(|e| e.clone()).unwrap_or(None),
        },
        "sinks": state.sinks.iter().map(|s| {
            s.status.observe_head(state.log.committed_lsn(), state.log.last_commit().map(|c| c.timestamp_us));
            let snap = s.status.snapshot();
            json!({
                "name": s.name,
                "type": s.kind,
                "delivered": snap.delivered,
                "errors": snap.errors,
                "retrying": snap.retrying,
                "failed": snap.failed,
                "checkpoint": snap.checkpoint_lsn,
                "lag_events": snap.lag_events,
                "lag_seconds": snap.lag_micros as f64 / 1e6,
                "last_error": snap.last_error,
            })
        }).collect::<Vec<_>>(),
        "log": {
            "dir": state.log.dir().display().to_string(),
            "disk_usage_bytes": state.log.disk_usage_bytes(),
            "retention_seconds": state.retention.map(|d| d.as_secs()),
        },
        "time_us": now_us(),
    })
}

async fn status(State(state): State<ApiState>) -> impl IntoResponse {
    Json(status_json(&state))
}

async fn admin_trim(
    State(state): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Trim {
        before_lsn: u64,
    }
    let t: Trim = serde_json::from_slice(&body)
        .map_err(|e| bad_request(format!("body must be {{\"before_lsn\": N}}: {e}")))?;
    let log = state.log.clone();
    let report = tokio::task::spawn_blocking(move || log.trim_before(t.before_lsn))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    Ok(Json(json!({
        "segments_deleted": report.segments_deleted,
        "bytes_freed": report.bytes_freed,
        "oldest_lsn": report.oldest_lsn,
    }))
    .into_response())
}
