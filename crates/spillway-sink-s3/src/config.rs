//! Configuration of the `s3` sink.

use std::time::Duration;

use serde::Deserialize;
use spillway_sinks::{SinkError, SinkSettings};

/// `[[sinks]] type = "s3"` settings (the common settings — name, tables,
/// operations, format — are in [`SinkSettings`]).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3SinkConfig {
    /// `s3://bucket/prefix` or `file:///dir/prefix`.
    pub url: String,
    /// Endpoint of an S3-compatible store, e.g. `http://127.0.0.1:9000`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region. Default `us-east-1` (or `AWS_REGION`).
    #[serde(default)]
    pub region: Option<String>,
    /// Access key id (else `AWS_ACCESS_KEY_ID`).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Secret access key (else `AWS_SECRET_ACCESS_KEY`).
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Session token (else `AWS_SESSION_TOKEN`).
    #[serde(default)]
    pub session_token: Option<String>,
    /// Compress objects with gzip (`.jsonl.gz`).
    #[serde(default)]
    pub gzip: bool,
    /// Most events per object. Default 100000.
    #[serde(default = "default_events")]
    pub max_object_events: usize,
    /// Most (uncompressed) bytes per object, roughly. Default 64 MiB.
    #[serde(default = "default_bytes")]
    pub max_object_bytes: usize,
    /// Longest time the first event of an object waits for more. Default
    /// 60000 ms.
    #[serde(default = "default_age")]
    pub max_object_age_ms: u64,
}

fn default_events() -> usize {
    100_000
}
fn default_bytes() -> usize {
    64 << 20
}
fn default_age() -> u64 {
    60_000
}

impl std::fmt::Debug for S3SinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |o: &Option<String>| o.as_ref().map(|_| "<hidden>");
        f.debug_struct("S3SinkConfig")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &hidden(&self.secret_access_key))
            .field("session_token", &hidden(&self.session_token))
            .field("gzip", &self.gzip)
            .field("max_object_events", &self.max_object_events)
            .field("max_object_bytes", &self.max_object_bytes)
            .field("max_object_age_ms", &self.max_object_age_ms)
            .finish()
    }
}

/// Where objects go, parsed from the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// Bucket and key prefix (no leading or trailing `/`).
    S3 { bucket: String, prefix: String },
    /// Local directory (the whole path is the root).
    File { dir: std::path::PathBuf },
}

impl S3SinkConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> S3SinkConfig {
        S3SinkConfig {
            url: url.into(),
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            gzip: false,
            max_object_events: default_events(),
            max_object_bytes: default_bytes(),
            max_object_age_ms: default_age(),
        }
    }

    /// Sets the batching of `settings` from the object limits: batches are
    /// objects, cut between transactions.
    pub fn apply(&self, settings: &mut SinkSettings) {
        settings.batch_size = self.max_object_events;
        settings.max_batch_bytes = self.max_object_bytes;
        settings.batch_timeout = Duration::from_millis(self.max_object_age_ms);
        settings.whole_transactions = true;
    }

    pub(crate) fn location(&self) -> Result<Location, SinkError> {
        let fatal = |m: String| SinkError::Fatal(format!("s3 sink: {m}"));
        if let Some(rest) = self.url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let ok = (3..=63).contains(&bucket.len())
                && bucket.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.')
                });
            if !ok {
                return Err(fatal(format!(
                    "url `{}`: `{bucket}` is not a bucket name (3-63 lower-case letters, digits, `-`, `.`)",
                    self.url
                )));
            }
            Ok(Location::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
            })
        } else if let Some(path) = self.url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(fatal(format!(
                    "url `{}` needs an absolute path: file:///dir/prefix",
                    self.url
                )));
            }
            Ok(Location::File { dir: path.into() })
        } else {
            Err(fatal(format!(
                "url `{}` is not s3://bucket/prefix or file:///dir",
                self.url
            )))
        }
    }

    /// Checks what can be checked without the store; one-line errors.
    pub fn validate(&self) -> Result<(), SinkError> {
        let fatal = |m: &str| Err(SinkError::Fatal(format!("s3 sink: {m}")));
        let location = self.location()?;
        if let Some(e) = &self.endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return fatal(
                    "endpoint must be an http:// or https:// URL, e.g. http://127.0.0.1:9000",
                );
            }
            if matches!(location, Location::File { .. }) {
                return fatal("endpoint applies to s3:// URLs only");
            }
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return fatal("set both access_key_id and secret_access_key, or neither (then AWS_* environment variables apply)");
        }
        if self.max_object_events == 0 || self.max_object_events > 10_000_000 {
            return fatal("max_object_events must be from 1 to 10000000");
        }
        if self.max_object_bytes < 1024 || self.max_object_bytes > 4 << 30 {
            return fatal("max_object_bytes must be from 1KiB to 4GiB");
        }
        if self.max_object_age_ms == 0 {
            return fatal("max_object_age_ms must be positive");
        }
        Ok(())
    }
}
