//! `spillway tail`: follow `/v1/changes` of a running Spillway.

use futures_util::StreamExt;
use spillway_core::query::ChangesQuery;
use std::io::{IsTerminal, Write};

#[derive(clap::Args)]
pub(crate) struct TailArgs {
    /// Base URL of the API; defaults to http://<api.listen of the config>.
    #[arg(long)]
    url: Option<String>,
    /// Configuration file, to find the API address.
    #[arg(long, short)]
    config: Option<std::path::PathBuf>,
    /// Start at this lsn (inclusive).
    #[arg(long, conflicts_with_all = ["from", "from_timestamp", "consumer"])]
    from_lsn: Option<u64>,
    /// Start at the first change committed at or after this time (µs since the epoch or RFC 3339).
    #[arg(long, conflicts_with_all = ["from", "consumer"])]
    from_timestamp: Option<String>,
    /// `beginning` or `now` (default).
    #[arg(long, conflicts_with = "consumer")]
    from: Option<String>,
    /// Resume after this named consumer's checkpoint.
    #[arg(long)]
    consumer: Option<String>,
    /// Only these entities (comma list of schema.table or table, `*` wildcards).
    #[arg(long)]
    entities: Option<String>,
    /// Leave out these entities.
    #[arg(long)]
    exclude_entities: Option<String>,
    /// Only these operations (comma list of insert, update, delete, truncate, read).
    #[arg(long)]
    operations: Option<String>,
    /// Events per batch.
    #[arg(long)]
    batch_size: Option<u64>,
    /// Longest wait before a partial batch is sent.
    #[arg(long)]
    batch_timeout_ms: Option<u64>,
    /// Bearer token (default: api.token of the config, or SPILLWAY_API_TOKEN).
    #[arg(long)]
    token: Option<String>,
    /// Raw NDJSON, one event per line.
    #[arg(long)]
    json: bool,
}

fn base_url(args: &TailArgs) -> String {
    api_base_url(args.url.as_deref(), args.config.as_deref())
}

/// The API's base URL: `--url`, else `http://<api.listen>` of the config, else the default.
pub(crate) fn api_base_url(url: Option<&str>, config: Option<&std::path::Path>) -> String {
    if let Some(u) = url {
        return u.trim_end_matches('/').to_string();
    }
    let path = config.map(std::path::PathBuf::from).or_else(|| {
        let p = std::path::PathBuf::from("spillway.toml");
        p.exists().then_some(p)
    });
    let listen = path
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| t.parse::<toml_like::Doc>().ok())
        .and_then(|d| d.api_listen)
        .or_else(|| std::env::var("SPILLWAY_API_LISTEN").ok())
        .unwrap_or_else(|| spillway_server::config::DEFAULT_LISTEN.to_string());
    format!("http://{listen}")
}

/// The API token from the config file or the environment, if any.
pub(crate) fn config_token(config: Option<&std::path::Path>) -> Option<String> {
    std::env::var("SPILLWAY_API_TOKEN").ok().or_else(|| {
        let path = config.map(std::path::PathBuf::from).or_else(|| {
            let p = std::path::PathBuf::from("spillway.toml");
            p.exists().then_some(p)
        })?;
        let text = std::fs::read_to_string(path).ok()?;
        text.parse::<toml_like::Doc>().ok()?.api_token
    })
}

/// Just enough to find `[api] listen` without requiring a valid `[source]`.
mod toml_like {
    pub(crate) struct Doc {
        pub(crate) api_listen: Option<String>,
        pub(crate) api_token: Option<String>,
    }
    impl std::str::FromStr for Doc {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            let mut section = String::new();
            let mut api_listen = None;
            let mut api_token = None;
            for line in s.lines() {
                let l = line.trim();
                if l.starts_with('[') {
                    section = l.trim_matches(|c| c == '[' || c == ']').trim().to_string();
                } else if section == "api" {
                    if let Some((k, v)) = l.split_once('=') {
                        let v = Some(v.trim().trim_matches('"').to_string());
                        match k.trim() {
                            "listen" => api_listen = v,
                            "token" => api_token = v,
                            _ => {}
                        }
                    }
                }
            }
            Ok(Doc {
                api_listen,
                api_token,
            })
        }
    }
}

/// The `/v1/changes` query of the flags: read with the server's own parser
/// ([`ChangesQuery::parse`]), so a bad flag is the server's one-line error, before any
/// request is made.
fn query(args: &TailArgs) -> Result<ChangesQuery, String> {
    let from_lsn = args.from_lsn.map(|l| l.to_string());
    let batch_size = args.batch_size.map(|n| n.to_string());
    let batch_timeout = args.batch_timeout_ms.map(|n| n.to_string());
    let pairs = [
        ("from_lsn", from_lsn.as_deref()),
        ("from_timestamp", args.from_timestamp.as_deref()),
        ("from", args.from.as_deref()),
        ("consumer", args.consumer.as_deref()),
        ("entities", args.entities.as_deref()),
        ("exclude_entities", args.exclude_entities.as_deref()),
        ("operations", args.operations.as_deref()),
        ("batch_size", batch_size.as_deref()),
        ("batch_timeout_ms", batch_timeout.as_deref()),
    ];
    ChangesQuery::parse(pairs.iter().filter_map(|(k, v)| v.map(|v| (*k, v)))).map_err(|e| {
        format!("spillway tail: {e} (the flags are the parameter names with `-` for `_`)")
    })
}

pub(crate) async fn tail(args: TailArgs) -> Result<(), String> {
    let base = base_url(&args);
    let url = format!("{base}/v1/changes?{}", query(&args)?.to_query_string());
    let token = args
        .token
        .clone()
        .or_else(|| config_token(args.config.as_deref()));
    let mut request = reqwest::Client::new().get(&url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let resp = request.send().await.map_err(|e| {
        format!("cannot reach spillway at {base}: {e}; is `spillway run` running there?")
    })?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        return Err(format!("{url}: {status}: {}", body.trim()));
    }
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut stream = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    let stdout = std::io::stdout();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("stream from {base} broke: {e}"))?;
        buf.extend_from_slice(&chunk);
        let mut out = stdout.lock();
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            let written = if args.json {
                writeln!(out, "{line}")
            } else {
                writeln!(out, "{}", crate::render::pretty(&line, colour))
            };
            if written.is_err() {
                return Ok(()); // stdout closed (e.g. piped into head)
            }
        }
        let _ = out.flush();
    }
    Ok(())
}
