//! `spillway admin cdc status|trim`: from the running server when one answers, otherwise
//! from the data directory. `repair` and `forget-sink` work on a stopped log only (they
//! take the data directory's lock).

use spillway_server::config::Config;
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub(crate) enum AdminCommand {
    /// Change-data-capture administration.
    #[command(subcommand)]
    Cdc(CdcCommand),
}

#[derive(clap::Subcommand)]
pub(crate) enum CdcCommand {
    /// Enabled, current LSN, oldest LSN, retention, disk usage.
    Status(Target),
    /// Delete whole segments holding only records before an lsn.
    Trim {
        /// Remove records before this lsn (whole segments only).
        #[arg(long)]
        before_lsn: u64,
        #[command(flatten)]
        target: Target,
    },
    /// Cut a damaged change log at the damage so that it opens again (spillway must be
    /// stopped). The cut-off bytes are kept in `.damaged` files; consumers whose checkpoint
    /// lies beyond the new end get requery_required. Restoring a backup is better when you
    /// have one: the events after the damage were confirmed to PostgreSQL and are gone there.
    Repair {
        /// Configuration file (for the data directory).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Delete the checkpoint of a sink that is no longer configured (spillway must be
    /// stopped); it holds back age-based retention while it exists.
    ForgetSink {
        /// The sink's name.
        name: String,
        /// Configuration file (for the data directory).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// `spillway status`: the source, the log and every sink of a running Spillway.
pub(crate) async fn status(target: Target) -> Result<(), String> {
    let base = crate::tail::api_base_url(target.url.as_deref(), target.config.as_deref());
    let s = server_request(&target, reqwest::Method::GET, "/v1/status", None)
        .await?
        .ok_or_else(|| format!("no spillway answers at {base}; is `spillway run` running? (`spillway admin cdc status` also reads a stopped log)"))?;
    let src = &s["source"];
    println!(
        "Source: database {} slot {} publication {}",
        src["database"], src["slot"], src["publication"]
    );
    println!(
        "  streaming: {}, confirmed flush: {}, WAL retained: {}, lag: {} ms, captured: {}",
        src["streaming"],
        src["confirmed_flush_lsn"],
        human_bytes(src["wal_retained_bytes"].as_u64().unwrap_or(0)),
        src["lag_ms"],
        src["events_captured"]
    );
    if let Some(e) = src["last_error"].as_str() {
        println!("  last error: {e}");
    }
    println!(
        "Log: current LSN {}, oldest LSN {}, {}",
        thousands(s["current_lsn"].as_u64().unwrap_or(0)),
        thousands(s["oldest_lsn"].as_u64().unwrap_or(0)),
        human_bytes(s["log"]["disk_usage_bytes"].as_u64().unwrap_or(0))
    );
    let sinks = s["sinks"].as_array().cloned().unwrap_or_default();
    if sinks.is_empty() {
        println!("Sinks: none configured");
    }
    for k in sinks {
        let state = if k["failed"] == true {
            "FAILED"
        } else if k["retrying"] == true {
            "retrying"
        } else {
            "ok"
        };
        println!(
            "Sink {} ({}): {state}, delivered {}, checkpoint {}, lag {} events / {:.1} s, errors {}",
            k["name"].as_str().unwrap_or("?"), k["type"].as_str().unwrap_or("?"), k["delivered"], k["checkpoint"], k["lag_events"], k["lag_seconds"].as_f64().unwrap_or(0.0), k["errors"]
        );
        if let Some(e) = k["last_error"].as_str() {
            println!("  last error: {e}");
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub(crate) struct Target {
    /// Configuration file (for the API address, token and data directory).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Base URL of a running Spillway (default: from the config).
    #[arg(long)]
    url: Option<String>,
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

fn retention_text(secs: Option<u64>) -> String {
    match secs {
        None => "forever".into(),
        Some(s) if s.is_multiple_of(3600) => format!("{} hours", s / 3600),
        Some(s) => format!("{s} seconds"),
    }
}

async fn server_request(
    target: &Target,
    method: reqwest::Method,
    path: &str,
    body: Option<String>,
) -> Result<Option<serde_json::Value>, String> {
    let base = crate::tail::api_base_url(target.url.as_deref(), target.config.as_deref());
    let mut req = reqwest::Client::new().request(method, format!("{base}{path}"));
    if let Some(t) = crate::tail::config_token(target.config.as_deref()) {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) if e.is_connect() => return Ok(None), // nothing running there
        Err(e) => return Err(format!("{base}: {e}")),
    };
    let status = resp.status();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{base}{path}: {status}: {}", text.trim()));
    }
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| format!("{base}{path}: bad answer: {e}"))
}

fn offline_config(target: &Target) -> Result<Config, String> {
    load_config(target.config.clone())
}

fn load_config(config: Option<PathBuf>) -> Result<Config, String> {
    let path = config.or_else(|| {
        let p = PathBuf::from("spillway.toml");
        p.exists().then_some(p)
    });
    Config::load(path.as_deref())
        .map_err(|e| format!("no server answered and the data directory is unknown: {e}"))
}

pub(crate) async fn run(cmd: AdminCommand) -> Result<(), String> {
    let AdminCommand::Cdc(cmd) = cmd;
    match cmd {
        CdcCommand::Status(target) => {
            let (source, current, oldest, retention, disk) =
                match server_request(&target, reqwest::Method::GET, "/v1/status", None).await? {
                    Some(s) => (
                        "running server".to_string(),
                        s["current_lsn"].as_u64().unwrap_or(0),
                        s["oldest_lsn"].as_u64().unwrap_or(0),
                        s["log"]["retention_seconds"].as_u64(),
                        s["log"]["disk_usage_bytes"].as_u64().unwrap_or(0),
                    ),
                    None => {
                        let config = offline_config(&target)?;
                        let dir = config.log.dir.clone();
                        let summary =
                            tokio::task::spawn_blocking(move || spillway_log::inspect(&dir))
                                .await
                                .map_err(|e| e.to_string())?
                                .map_err(|e| format!("{}: {e}", config.log.dir.display()))?;
                        (
                            format!(
                                "data directory {} (no server running)",
                                config.log.dir.display()
                            ),
                            summary.current_lsn,
                            summary.oldest_lsn,
                            config.log.retention.map(|d| d.as_secs()),
                            summary.disk_usage_bytes,
                        )
                    }
                };
            println!("CDC Status:");
            println!("  Enabled: true");
            println!("  Current LSN: {}", thousands(current));
            println!("  Oldest LSN: {}", thousands(oldest));
            println!("  Retention: {}", retention_text(retention));
            println!("  Disk usage: {}", human_bytes(disk));
            println!("  Source: {source}");
            Ok(())
        }
        CdcCommand::Repair { config } => {
            let config = load_config(config)?;
            let mut opts = spillway_log::LogOptions::new(config.log.dir.clone());
            opts.segment_bytes = config.log.segment_bytes;
            let report = tokio::task::spawn_blocking(move || spillway_log::repair(&opts))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("{}: {e}", config.log.dir.display()))?;
            if report.cuts.is_empty() {
                println!(
                    "the change log in {} needs no repair",
                    config.log.dir.display()
                );
            }
            for cut in &report.cuts {
                println!(
                    "cut {} at offset {} (the cut-off bytes are in {}; {} newer segment(s) set aside)",
                    cut.segment.display(),
                    cut.offset,
                    cut.saved_as.display(),
                    cut.set_aside.len()
                );
            }
            if !report.cuts.is_empty() {
                println!("events after the cut are lost: re-snapshot the consumers (those past the cut get requery_required)");
            }
            Ok(())
        }
        CdcCommand::ForgetSink { name, config } => {
            let config = load_config(config)?;
            if config.sinks.iter().any(|s| s.settings.name == name) {
                return Err(format!(
                    "sink `{name}` is still configured; remove its [[sinks]] entry first"
                ));
            }
            let dir = config.log.dir.clone();
            let cp = spillway_sinks::checkpoint_name(&name);
            let removed = tokio::task::spawn_blocking(move || {
                spillway_log::CheckpointStore::open(&dir)?.delete(&cp)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{}: {e}", config.log.dir.display()))?;
            if removed {
                println!("forgot the checkpoint of sink `{name}`");
                Ok(())
            } else {
                Err(format!(
                    "no checkpoint of a sink named `{name}` in {}",
                    config.log.dir.display()
                ))
            }
        }
        CdcCommand::Trim { before_lsn, target } => {
            let body = serde_json::json!({ "before_lsn": before_lsn }).to_string();
            let report = match server_request(
                &target,
                reqwest::Method::POST,
                "/v1/admin/trim",
                Some(body),
            )
            .await?
            {
                Some(r) => r,
                None => {
                    let config = offline_config(&target)?;
                    let dir = config.log.dir.clone();
                    let report = tokio::task::spawn_blocking(move || {
                        let (log, writer) =
                            spillway_log::ChangeLog::open(spillway_log::LogOptions::new(dir))?;
                        let r = log.trim_before(before_lsn);
                        drop(writer);
                        r
                    })
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("{}: {e}", config.log.dir.display()))?;
                    serde_json::json!({"segments_deleted": report.segments_deleted, "bytes_freed": report.bytes_freed, "oldest_lsn": report.oldest_lsn})
                }
            };
            println!(
                "trimmed {} segment(s), {} freed; oldest LSN is now {}",
                report["segments_deleted"],
                human_bytes(report["bytes_freed"].as_u64().unwrap_or(0)),
                thousands(report["oldest_lsn"].as_u64().unwrap_or(0))
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formatting() {
        assert_eq!(super::thousands(1_234_567), "1,234,567");
        assert_eq!(super::thousands(12), "12");
        assert_eq!(super::human_bytes(256 << 20), "256.0 MiB");
        assert_eq!(super::retention_text(Some(168 * 3600)), "168 hours");
    }
}
