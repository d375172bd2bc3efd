//! `GET /metrics` in the Prometheus text format (version 0.0.4).

use super::consumers::lag;
use super::{internal, ApiError, ApiState};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::fmt::Write;
use std::sync::atomic::Ordering;

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders every metric.
pub fn render(state: &ApiState) -> Result<String, spillway_log::LogError> {
    let s = &state.source;
    let log = &state.log;
    let mut out = String::new();
    metric(
        &mut out,
        "spillway_changes_captured_total",
        "counter",
        "Events appended to the change log since start.",
        s.events_captured.load(Ordering::Relaxed),
    );
    metric(
        &mut out,
        "spillway_log_current_lsn",
        "gauge",
        "Newest lsn in the change log.",
        log.committed_lsn(),
    );
    metric(
        &mut out,
        "spillway_log_oldest_lsn",
        "gauge",
        "Oldest lsn retained in the change log.",
        log.oldest_lsn(),
    );
    metric(
        &mut out,
        "spillway_log_disk_bytes",
        "gauge",
        "Bytes the change log uses on disk.",
        log.disk_usage_bytes(),
    );
    metric(
        &mut out,
        "spillway_source_streaming",
        "gauge",
        "1 while the replication stream is up.",
        u8::from(s.streaming.load(Ordering::Relaxed)),
    );
    metric(
        &mut out,
        "spillway_source_confirmed_flush_lsn",
        "gauge",
        "WAL position confirmed to PostgreSQL (bytes).",
        s.confirmed_flush_lsn.load(Ordering::Relaxed),
    );
    metric(
        &mut out,
        "spillway_source_wal_retained_bytes",
        "gauge",
        "WAL bytes the replication slot retains on the server.",
        s.wal_retained_bytes.load(Ordering::Relaxed),
    );
    metric(
        &mut out,
        "spillway_source_lag_milliseconds",
        "gauge",
        "Time from the last captured commit to its capture.",
        s.lag_ms.load(Ordering::Relaxed),
    );
    let consumers = log.checkpoints().list()?;
    let _ = writeln!(out, "# HELP spillway_consumer_checkpoint_lsn Last lsn a named consumer has processed.\n# TYPE spillway_consumer_checkpoint_lsn gauge");
    for cp in &consumers {
        let _ = writeln!(
            out,
            "spillway_consumer_checkpoint_lsn{{consumer=\"{}\"}} {}",
            label_value(&cp.name),
            cp.lsn
        );
    }
    let lags: Vec<(String, u64, f64)> = consumers
        .iter()
        .map(|cp| {
            let (e, secs) = lag(log, cp.lsn);
            (label_value(&cp.name), e, secs)
        })
        .collect();
    let _ = writeln!(out, "# HELP spillway_consumer_lag_events Events after a named consumer's checkpoint.\n# TYPE spillway_consumer_lag_events gauge");
    for (name, e, _) in &lags {
        let _ = writeln!(
            out,
            "spillway_consumer_lag_events{{consumer=\"{name}\"}} {e}"
        );
    }
    let _ = writeln!(out, "# HELP spillway_consumer_lag_seconds How long the oldest unprocessed event of a named consumer has waited.\n# TYPE spillway_consumer_lag_seconds gauge");
    for (name, _, secs) in &lags {
        let _ = writeln!(
            out,
            "spillway_consumer_lag_seconds{{consumer=\"{name}\"}} {secs:.3}"
        );
    }
    let sinks: Vec<(String, spillway_sinks::SinkStatusSnapshot)> = state
        .sinks
        .iter()
        .map(|s| {
            s.status.observe_head(
                log.committed_lsn(),
                log.last_commit().map(|c| c.timestamp_us),
            );
            (label_value(&s.name), s.status.snapshot())
        })
        .collect();
    for (name, kind, help, value) in [
        (
            "spillway_sink_delivered_total",
            "counter",
            "Events a sink delivered (acknowledged by its destination).",
            &(|s: &spillway_sinks::SinkStatusSnapshot| s.delivered as f64)
                as &dyn Fn(&spillway_sinks::SinkStatusSnapshot) -> f64,
        ),
        (
            "spillway_sink_errors_total",
            "counter",
            "Failed delivery attempts of a sink.",
            &|s| s.errors as f64,
        ),
        (
            "spillway_sink_retrying",
            "gauge",
            "1 while a sink retries an unreachable destination.",
            &|s| u8::from(s.retrying) as f64,
        ),
        (
            "spillway_sink_lag_events",
            "gauge",
            "Events after a sink's checkpoint.",
            &|s| s.lag_events as f64,
        ),
        (
            "spillway_sink_lag_seconds",
            "gauge",
            "Commit-time distance between a sink's checkpoint and the newest event.",
            &|s| s.lag_micros as f64 / 1e6,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (sink, snap) in &sinks {
            let _ = writeln!(out, "{name}{{sink=\"{sink}\"}} {}", value(snap));
        }
    }
    Ok(out)
}

pub(crate) async fn metrics(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let body = tokio::task::spawn_blocking(move || render(&state))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response())
}
