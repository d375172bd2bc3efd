//! Pipeline wiring: opens the change log, starts the PostgreSQL capture loop and the HTTP
//! API, and stops them in order. No processing logic lives here.
//!
//! # Layout
//!
//! | module      | what it holds                                     |
//! |-------------|---------------------------------------------------|
//! | [`config`]  | the TOML file + environment → validated `Config` |
//! | [`api`]     | HTTP endpoints                                    |
//! | this file   | [`start`] / [`Running`]: wiring and shutdown      |
//!
//! Shutdown order (SIGTERM / Ctrl-C): the capture loop stops reading, flushes the log and
//! confirms the last durable commit to PostgreSQL; then the API stops.

pub mod api;
pub mod config;

use config::Config;
use spillway_log::{ChangeLog, LogOptions};
use spillway_postgres::capture::{self, CaptureConfig, CaptureError, SourceStatus};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why Spillway stopped (one line each, for the operator).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Opening the change log failed.
    #[error("cannot open the change log in {dir}: {source}")]
    Log {
        /// Directory.
        dir: String,
        /// Cause.
        source: spillway_log::LogError,
    },
    /// The API address is unusable.
    #[error("cannot listen on {addr}: {source}; choose another [api] listen address")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// A sink could not be set up.
    #[error("sink `{name}`: {message}")]
    Sink {
        /// Sink name.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// The source failed for good.
    #[error("{0}")]
    Capture(#[from] CaptureError),
    /// A task panicked (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

/// A running pipeline.
pub struct Running {
    /// Where the API listens.
    pub addr: SocketAddr,
    /// The change log (for in-process readers: demo, tests).
    pub log: ChangeLog,
    /// Live state of each sink (name, type, status).
    pub sink_status: Vec<api::SinkInfo>,
    /// Live source state.
    pub source: Arc<SourceStatus>,
    shutdown: watch::Sender<bool>,
    done: watch::Receiver<bool>,
    sinks: Vec<JoinHandle<Result<(), spillway_sinks::SinkError>>>,
    capture: JoinHandle<Result<(), CaptureError>>,
    server: JoinHandle<Result<(), std::io::Error>>,
}

impl Running {
    /// Asks everything to stop (drain, confirm, close).
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Resolves when the capture loop has ended (after shutdown or a fatal error).
    pub async fn finished(&self) {
        let mut done = self.done.clone();
        let _ = done.wait_for(|d| *d).await;
    }

    /// Waits until the capture loop ends — because of [`Running::shutdown`] or an error —
    /// then stops the API.
    pub async fn wait(mut self) -> Result<(), RunError> {
        let result = (&mut self.capture).await;
        let _ = self.shutdown.send(true);
        // Sinks make one last delivery attempt and checkpoint it.
        for sink in self.sinks.drain(..) {
            if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(10), sink).await {
                tracing::warn!(error = %e, "a sink had stopped with an error");
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.server).await;
        self.server.abort();
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(RunError::Capture(e)),
            Err(e) => Err(RunError::Internal(e.to_string())),
        }
    }
}

/// How often retention runs: every 30 s, or half the retention when that is shorter.
fn retention_interval(policy: &spillway_log::RetentionPolicy) -> Duration {
    let half = policy
        .max_age
        .map(|a| a / 2)
        .unwrap_or(Duration::from_secs(30));
    half.clamp(Duration::from_millis(200), Duration::from_secs(30))
}

/// Applies the retention policy now and every [`retention_interval`] (whole segments;
/// never past a named consumer's checkpoint unless `max_bytes` forces it).
async fn retention_task(
    log: ChangeLog,
    policy: spillway_log::RetentionPolicy,
    mut shutdown: watch::Receiver<bool>,
) {
    if policy.max_age.is_none() && policy.max_bytes.is_none() {
        return;
    }
    loop {
        let l = log.clone();
        let now = api::now_us();
        match tokio::task::spawn_blocking(move || l.apply_retention(&policy, now)).await {
            Ok(Ok(report)) if report.segments_deleted > 0 => tracing::info!(
                segments = report.segments_deleted,
                bytes = report.bytes_freed,
                oldest_lsn = report.oldest_lsn,
                "retention trimmed the change log"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "retention failed; will retry"),
            Err(_) => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(retention_interval(&policy)) => {}
            _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => return,
        }
    }
}

/// Gives every configured sink a checkpoint before retention first runs (0 —
/// nothing delivered — for a new one), so a sink whose destination is down
/// from its first start still holds back age-based retention. Warns about
/// checkpoints of sinks no longer configured: they hold retention back too.
async fn register_sink_checkpoints(log: &ChangeLog, config: &Config) -> Result<(), RunError> {
    let store = log.checkpoints().clone();
    let names: Vec<String> = config
        .sinks
        .iter()
        .map(|s| s.settings.name.clone())
        .collect();
    let res = tokio::task::spawn_blocking(move || {
        for name in &names {
            let cp_name = spillway_sinks::checkpoint_name(name);
            // Earlier builds stored a sink's checkpoint under its bare
            // name (shared with API consumers): carry it over, or the sink
            // would start from the beginning and the old entry would hold
            // retention back forever.
            if let Some(cp) = store.rename_if_absent(name, &cp_name)? {
                tracing::info!(sink = %name, lsn = cp.lsn, "moved the sink's checkpoint from its bare name to {cp_name}");
            }
            store.ensure(&cp_name, 0)?;
        }
        let configured: Vec<String> = names
            .iter()
            .map(|n| spillway_sinks::checkpoint_name(n))
            .collect();
        Ok::<_, spillway_log::LogError>(
            store
                .list()?
                .into_iter()
                .filter(|c| c.name.starts_with("sink:") && !configured.contains(&c.name))
                .collect::<Vec<_>>(),
        )
    })
    .await
    .map_err(|e| RunError::Internal(e.to_string()))?;
    let orphans = res.map_err(|source| RunError::Log {
        dir: log.dir().display().to_string(),
        source,
    })?;
    for cp in orphans {
        tracing::warn!(
            checkpoint = %cp.name,
            lsn = cp.lsn,
            "a sink that is no longer configured still has a checkpoint; it holds back age-based retention (remove it with `spillway admin cdc forget-sink NAME` while spillway is stopped)"
        );
    }
    Ok(())
}

/// Opens the log, binds the API and starts capturing. Fails at once on a bad log
/// directory, an unusable listen address, or a server without `wal_level = logical`.
pub async fn start(config: Config) -> Result<Running, RunError> {
    let capture_cfg = CaptureConfig {
        connect: config.source.connect.clone(),
        slot: config.source.slot.clone(),
        publication: config.source.publication.clone(),
        tables: config.source.tables.clone(),
        status_interval: Duration::from_secs(10),
        receive_timeout: config.source.receive_timeout,
    };
    // Fail fast on what no retry can fix (unreachable server, wal_level, privileges).
    let mut conn = capture::prepare(&capture_cfg).await?;
    // What the publication sends, for the API's check of `entities` (capture refreshes it
    // at every connect).
    let published =
        spillway_postgres::catalog::published_tables(&mut conn, &capture_cfg.publication)
            .await
            .ok();
    conn.close().await;
    let dir = config.log.dir.clone();
    let mut opts = LogOptions::new(dir.clone());
    opts.segment_bytes = config.log.segment_bytes;
    opts.max_bytes = config.log.max_bytes;
    let (log, writer) = tokio::task::spawn_blocking(move || ChangeLog::open(opts))
        .await
        .map_err(|e| RunError::Internal(e.to_string()))?
        .map_err(|source| RunError::Log {
            dir: dir.display().to_string(),
            source,
        })?;

    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: config.api.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| RunError::Listen {
        addr: config.api.listen,
        source,
    })?;
    // Each sink is a named consumer of the log; open them all before anything runs.
    let mut sink_status = Vec::new();
    let mut sink_starts = Vec::new();
    for sink in &config.sinks {
        let status = Arc::new(spillway_sinks::SinkStatus::default());
        let destination = match &sink.kind {
            config::SinkKind::File(f) => spillway_sinks::file::FileSink::open(f)
                .map(|s| Box::new(s) as Box<dyn spillway_sinks::DynSink>),
            config::SinkKind::Webhook(w) => spillway_sinks::webhook::WebhookSink::new(w)
                .map(|s| Box::new(s) as Box<dyn spillway_sinks::DynSink>),
            config::SinkKind::Nats(n) => spillway_sink_nats::NatsSink::new(
                n,
                &sink.settings.encoder_options.prefix,
                &config.source.connect.dbname,
            )
            .map(|s| Box::new(s) as Box<dyn spillway_sinks::DynSink>),
            config::SinkKind::S3(c) => spillway_sink_s3::S3Sink::new(c)
                .map(|s| Box::new(s) as Box<dyn spillway_sinks::DynSink>),
            config::SinkKind::Kafka(k) => spillway_sink_kafka::KafkaSink::new(
                k,
                &sink.settings.encoder_options.prefix,
                &config.source.connect.dbname,
            )
            .map(|s| Box::new(s) as Box<dyn spillway_sinks::DynSink>),
        }
        .map_err(|e| RunError::Sink {
            name: sink.settings.name.clone(),
            message: e.to_string(),
        })?;
        sink_status.push(api::SinkInfo {
            name: sink.settings.name.clone(),
            kind: sink.kind.type_name(),
            status: status.clone(),
        });
        sink_starts.push((sink.settings.clone(), destination, status));
    }
    register_sink_checkpoints(&log, &config).await?;
    let source = Arc::new(SourceStatus::default());
    if let Some(tables) = published {
        source.set_published_tables(tables);
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let state = api::ApiState {
        log: log.clone(),
        source: source.clone(),
        slot: config.source.slot.clone(),
        publication: config.source.publication.clone(),
        database: config.source.connect.dbname.clone(),
        retention: config.log.retention,
        token: config.api.token.clone(),
        sinks: sink_status.clone(),
        shutdown: shutdown_rx.clone(),
        lookup_tables: Some({
            let connect = config.source.connect.clone();
            let publication = config.source.publication.clone();
            Arc::new(move || {
                let (connect, publication) = (connect.clone(), publication.clone());
                Box::pin(async move {
                    let look = async {
                        let mut conn = spillway_postgres::PgConnection::connect(&connect, false)
                            .await
                            .map_err(|e| e.to_string())?;
                        let tables =
                            spillway_postgres::catalog::published_tables(&mut conn, &publication)
                                .await
                                .map_err(|e| e.to_string());
                        conn.close().await;
                        tables
                    };
                    tokio::time::timeout(Duration::from_secs(5), look)
                        .await
                        .map_err(|_| "PostgreSQL did not answer within 5 s".to_string())?
                })
            })
        }),
    };
    let sinks = sink_starts
        .into_iter()
        .map(|(settings, destination, status)| {
            tokio::spawn(spillway_sinks::run_sink(
                log.clone(),
                settings,
                destination,
                status,
                shutdown_rx.clone(),
            ))
        })
        .collect();
    tokio::spawn(retention_task(
        log.clone(),
        spillway_log::RetentionPolicy {
            max_age: config.log.retention,
            max_bytes: config.log.max_bytes,
        },
        shutdown_rx.clone(),
    ));
    let mut api_shutdown = shutdown_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, api::router(state))
            .with_graceful_shutdown(async move {
                let _ = api_shutdown.wait_for(|s| *s).await;
            })
            .await
    });
    let (done_tx, done) = watch::channel(false);
    let capture = tokio::spawn({
        let (log, source) = (log.clone(), source.clone());
        async move {
            let result = capture::run(capture_cfg, log, writer, source, shutdown_rx).await;
            let _ = done_tx.send(true);
            result
        }
    });
    tracing::info!(%addr, "api listening");
    Ok(Running {
        addr,
        log,
        source,
        shutdown: shutdown_tx,
        done,
        sinks,
        sink_status,
        capture,
        server,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config_with_sinks(dir: &std::path::Path, sinks: &[&str]) -> Config {
        let mut toml = format!(
            "[source]\ndsn = \"postgres://postgres@127.0.0.1:5432/shop\"\n[log]\ndir = \"{}\"\n",
            dir.display()
        );
        for name in sinks {
            toml.push_str(&format!(
                "[[sinks]]\nname = \"{name}\"\ntype = \"file\"\npath = \"{}/{name}.jsonl\"\n",
                dir.display()
            ));
        }
        Config::from_parts(Some(("spillway.toml", &toml)), &[]).unwrap()
    }

    /// Every configured sink holds a checkpoint (`sink:NAME`) before anything
    /// runs; one an earlier build stored under the sink's bare name is
    /// carried over (with its pending requery), not restarted from 0; API
    /// consumers' checkpoints are left alone.
    #[tokio::test]
    async fn sink_checkpoints_are_registered_and_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let (log, w) = ChangeLog::open(spillway_log::LogOptions::new(dir.path())).unwrap();
        let cps = log.checkpoints();
        cps.set("audit", 42, false).unwrap(); // an earlier build's sink checkpoint
        cps.set("reporting", 7, false).unwrap(); // an API consumer
        let config = config_with_sinks(dir.path(), &["audit", "fresh"]);
        register_sink_checkpoints(&log, &config).await.unwrap();
        assert_eq!(cps.get("sink:audit").unwrap().unwrap().lsn, 42);
        assert!(cps.get("audit").unwrap().is_none(), "the bare name is gone");
        assert_eq!(cps.get("sink:fresh").unwrap().unwrap().lsn, 0);
        assert_eq!(cps.get("reporting").unwrap().unwrap().lsn, 7);
        // A second start changes nothing (and a bare name that appears
        // later, e.g. an API consumer called like the sink, is not taken).
        cps.set("audit", 3, false).unwrap();
        register_sink_checkpoints(&log, &config).await.unwrap();
        assert_eq!(cps.get("sink:audit").unwrap().unwrap().lsn, 42);
        assert_eq!(cps.get("audit").unwrap().unwrap().lsn, 3);
        w.close().await.unwrap();
    }
}
