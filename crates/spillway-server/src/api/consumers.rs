//! Named consumers and their durable checkpoints.
//!
//! A checkpoint records the last lsn a consumer has processed; `consumer=NAME` on
//! `/v1/changes` resumes at checkpoint + 1. Checkpoints live in the change log's
//! checkpoint store (fsynced before the answer), never move backward unless the request
//! says `"force": true`, and hold back retention by age.

use super::changes::valid_consumer_name;
use super::{bad_request, internal, now_us, ApiError, ApiState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use spillway_log::{ChangeLog, Checkpoint, LogError};

/// Lag of a consumer: events after its checkpoint, and how long the oldest of them has
/// been waiting (seconds, 0 when caught up).
pub(crate) fn lag(log: &ChangeLog, checkpoint: u64) -> (u64, f64) {
    let current = log.committed_lsn();
    let events = current.saturating_sub(checkpoint);
    if events == 0 {
        return (0, 0.0);
    }
    let first_ts = |from: u64| {
        log.reader(from)
            .and_then(|mut r| r.read_batch(1, 1 << 20))
            .map(|b| b.first().map(|r| r.timestamp_us))
    };
    let waiting_since = match first_ts(checkpoint + 1) {
        Ok(ts) => ts,
        // The next event was trimmed away: it has waited at least as long
        // as the oldest one retained (never "0 s", which reads as caught up).
        Err(LogError::Trimmed { .. }) => first_ts(log.oldest_lsn()).ok().flatten(),
        Err(_) => None,
    };
    let seconds = waiting_since
        .map(|ts| ((now_us() - ts).max(0) as f64) / 1e6)
        .unwrap_or(0.0);
    (events, seconds)
}

pub(crate) fn consumer_json(log: &ChangeLog, cp: &Checkpoint) -> Value {
    let (lag_events, lag_seconds) = lag(log, cp.lsn);
    json!({
        "name": cp.name,
        "checkpoint": cp.lsn,
        "lag_events": lag_events,
        "lag_seconds": lag_seconds,
        "updated_at_us": cp.updated_at_us,
    })
}

pub(crate) async fn list(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let log = state.log.clone();
    let out = tokio::task::spawn_blocking(move || -> Result<Vec<Value>, LogError> {
        // Sinks' checkpoints (`sink:NAME`) are shown under /v1/status.
        Ok(log
            .checkpoints()
            .list()?
            .iter()
            .filter(|cp| valid_consumer_name(&cp.name).is_ok())
            .map(|cp| consumer_json(&log, cp))
            .collect())
    })
    .await
    .map_err(internal)?
    .map_err(internal)?;
    Ok(Json(json!({ "consumers": out })))
}

fn not_found(name: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("no consumer named `{name}`"))
}

pub(crate) async fn get_one(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    valid_consumer_name(&name)?;
    let log = state.log.clone();
    tokio::task::spawn_blocking(move || match log.checkpoints().get(&name) {
        Ok(Some(cp)) => Ok(Json(consumer_json(&log, &cp))),
        Ok(None) => Err(not_found(&name)),
        Err(e) => Err(internal(e)),
    })
    .await
    .map_err(internal)?
}

pub(crate) async fn delete(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    valid_consumer_name(&name)?;
    let log = state.log.clone();
    let n = name.clone();
    let removed = tokio::task::spawn_blocking(move || log.checkpoints().delete(&n))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    if removed {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(not_found(&name))
    }
}

pub(crate) async fn put_checkpoint(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    valid_consumer_name(&name)?;
    set_checkpoint(&state, &name, name.clone(), &body).await
}

/// `PUT /v1/sinks/{name}/checkpoint`: an operator moves a sink's position
/// (e.g. a forced rewind to redeliver). The running sink notices and
/// continues from it (its own updates never overwrite it).
pub(crate) async fn put_sink_checkpoint(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    if !state.sinks.iter().any(|s| s.name == name) {
        let known: Vec<&str> = state.sinks.iter().map(|s| s.name.as_str()).collect();
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "no sink named `{name}`; configured sinks: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ));
    }
    let store_name = spillway_sinks::checkpoint_name(&name);
    set_checkpoint(&state, &name, store_name, &body).await
}

async fn set_checkpoint(
    state: &ApiState,
    name: &str,
    store_name: String,
    body: &[u8],
) -> Result<Json<Value>, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        lsn: u64,
        #[serde(default)]
        force: bool,
    }
    let b: Body = serde_json::from_slice(body).map_err(|e| {
        bad_request(format!(
            "body must be {{\"lsn\": N}} or {{\"lsn\": N, \"force\": true}}: {e}"
        ))
    })?;
    let current = state.log.committed_lsn();
    if b.lsn > current {
        return Err(bad_request(format!(
            "`lsn` {} is beyond the log's current lsn {current}; checkpoint only what you have read",
            b.lsn
        )));
    }
    let log = state.log.clone();
    // An API consumer storing a checkpoint has read its stream up to there,
    // so it got the `requery_required` its stream starts with: only now is
    // that pending requery done (a stream cut before the client read the
    // line sends it again). An operator moving a sink's checkpoint has
    // dealt with it (the way out the sink's error names for a format that
    // cannot carry the requery; it would stop at every start otherwise).
    let result = tokio::task::spawn_blocking(move || {
        let cps = log.checkpoints();
        let cp = cps.set(&store_name, b.lsn, b.force)?;
        if cps.pending_requery(&store_name)?.is_some() {
            cps.clear_requery(&store_name)?;
        }
        Ok::<_, LogError>(cp)
    })
    .await
    .map_err(internal)?;
    match result {
        Ok(cp) => Ok(Json(json!({"name": name, "checkpoint": cp.lsn, "updated_at_us": cp.updated_at_us}))),
        Err(LogError::CheckpointBackward { current, requested, .. }) => Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "checkpoint of `{name}` is {current}; moving it back to {requested} needs \"force\": true"
            ),
        )),
        Err(e) => Err(internal(e)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use spillway_log::{AppendRecord, LogOptions};

    /// Review of issue 8: a sink reset with a pending requery that its
    /// format cannot carry stops at every start; the operator's PUT (the
    /// way out its error names) must clear the pending requery.
    #[tokio::test]
    async fn an_operators_sink_checkpoint_acknowledges_its_pending_requery() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut w) = ChangeLog::open(LogOptions::new(dir.path())).unwrap();
        for lsn in 1..=10u64 {
            w.append(AppendRecord {
                lsn,
                timestamp_us: lsn as i64,
                tx_end: true,
                pg_commit_lsn: lsn,
                pg_end_lsn: lsn,
                payload: b"{}".to_vec(),
            })
            .await
            .unwrap();
        }
        w.flush().await.unwrap();
        let cp_name = spillway_sinks::checkpoint_name("hook");
        log.checkpoints().set(&cp_name, 10, false).unwrap();
        log.checkpoints().reset_ahead(5).unwrap();
        assert!(log
            .checkpoints()
            .pending_requery(&cp_name)
            .unwrap()
            .is_some());
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        let state = ApiState {
            log: log.clone(),
            source: Default::default(),
            slot: "s".into(),
            publication: "p".into(),
            database: "d".into(),
            retention: None,
            token: None,
            sinks: vec![super::super::SinkInfo {
                name: "hook".into(),
                kind: "webhook",
                status: Default::default(),
            }],
            shutdown,
            lookup_tables: None,
        };
        let answer = put_sink_checkpoint(
            State(state),
            Path("hook".to_string()),
            axum::body::Bytes::from_static(br#"{"lsn": 6, "force": true}"#),
        )
        .await
        .unwrap();
        assert_eq!(answer.0["checkpoint"], 6);
        assert_eq!(log.checkpoints().get(&cp_name).unwrap().unwrap().lsn, 6);
        assert!(
            log.checkpoints()
                .pending_requery(&cp_name)
                .unwrap()
                .is_none(),
            "the operator's checkpoint left the sink's requery pending"
        );
        w.close().await.unwrap();
    }

    /// A consumer whose next event was trimmed away is not "caught up":
    /// its lag in seconds is at least the age of the oldest event kept.
    #[tokio::test]
    async fn lag_of_a_trimmed_position_is_not_zero() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = LogOptions::new(dir.path());
        opts.segment_bytes = 2048;
        let (log, mut w) = ChangeLog::open(opts).unwrap();
        let hour_ago = now_us() - 3_600_000_000;
        for lsn in 1..=300u64 {
            w.append(AppendRecord {
                lsn,
                timestamp_us: hour_ago + lsn as i64,
                tx_end: true,
                pg_commit_lsn: lsn,
                pg_end_lsn: lsn,
                payload: vec![b'x'; 64],
            })
            .await
            .unwrap();
        }
        w.flush().await.unwrap();
        log.trim_before(200).unwrap();
        assert!(log.oldest_lsn() > 2);
        let (events, seconds) = lag(&log, 1);
        assert_eq!(events, 299);
        assert!(seconds > 3000.0, "lag of a trimmed position: {seconds} s");
        w.close().await.unwrap();
    }
}
