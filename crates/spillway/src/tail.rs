//! `spillway tail`: follow `/v1/changes` of a running Spillway.

use futures_util::StreamExt;
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
    #[arg(long, conflicts_with = "from")]
    from_lsn: Option<u64>,
    /// `beginning` or `now` (default).
    #[arg(long)]
    from: Option<String>,
    /// Raw NDJSON, one event per line.
    #[arg(long)]
    json: bool,
}

fn base_url(args: &TailArgs) -> String {
    if let Some(u) = &args.url {
        return u.trim_end_matches('/').to_string();
    }
    let path = args.config.clone().or_else(|| {
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

/// Just enough to find `[api] listen` without requiring a valid `[source]`.
mod toml_like {
    pub(crate) struct Doc {
        pub(crate) api_listen: Option<String>,
    }
    impl std::str::FromStr for Doc {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            let mut section = String::new();
            let mut api_listen = None;
            for line in s.lines() {
                let l = line.trim();
                if l.starts_with('[') {
                    section = l.trim_matches(|c| c == '[' || c == ']').trim().to_string();
                } else if section == "api" {
                    if let Some((k, v)) = l.split_once('=') {
                        if k.trim() == "listen" {
                            api_listen = Some(v.trim().trim_matches('"').to_string());
                        }
                    }
                }
            }
            Ok(Doc { api_listen })
        }
    }
}

pub(crate) async fn tail(args: TailArgs) -> Result<(), String> {
    let base = base_url(&args);
    let mut url = format!("{base}/v1/changes");
    if let Some(l) = args.from_lsn {
        url.push_str(&format!("?from_lsn={l}"));
    } else if let Some(f) = &args.from {
        url.push_str(&format!("?from={f}"));
    }
    let resp = reqwest::Client::new().get(&url).send().await.map_err(|e| {
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
