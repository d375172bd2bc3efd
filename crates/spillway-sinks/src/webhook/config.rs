//! Configuration of the `webhook` sink.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::SinkError;

fn default_timeout_ms() -> u64 {
    10_000
}

/// `[[sinks]] type = "webhook"` settings (the common settings — name,
/// tables, operations, format, batching — are in
/// [`SinkSettings`](crate::SinkSettings)).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkConfig {
    /// The endpoint each batch is POSTed to (`http://` or `https://`).
    pub url: String,
    /// Shared secret: when set, each request carries
    /// `X-Spillway-Signature: sha256=<hex HMAC-SHA256(secret, body)>`.
    /// Never shown in `Debug` output.
    #[serde(default)]
    pub secret: Option<String>,
    /// How long one request may take (connect, send, answer), ms; a timeout
    /// is retried. Default 10000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Extra request headers, e.g. `{"Authorization" = "Bearer …"}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl std::fmt::Debug for WebhookSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSinkConfig")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("timeout_ms", &self.timeout_ms)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl WebhookSinkConfig {
    /// A config posting to `url` with no secret, the default timeout and no
    /// extra headers.
    pub fn new(url: impl Into<String>) -> WebhookSinkConfig {
        WebhookSinkConfig {
            url: url.into(),
            secret: None,
            timeout_ms: default_timeout_ms(),
            headers: BTreeMap::new(),
        }
    }

    /// Checks the settings; the error is one line saying what to fix.
    pub fn validate(&self) -> Result<(), SinkError> {
        let url = reqwest::Url::parse(&self.url).map_err(|e| {
            SinkError::Fatal(format!(
                "webhook sink: url {:?} is not a valid URL ({e}); use http://host[:port]/path or https://…",
                self.url
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(SinkError::Fatal(format!(
                "webhook sink: url {:?} must be an http:// or https:// URL with a host",
                self.url
            )));
        }
        if self.timeout_ms == 0 {
            return Err(SinkError::Fatal(
                "webhook sink: timeout_ms must be at least 1".into(),
            ));
        }
        if self.secret.as_deref() == Some("") {
            return Err(SinkError::Fatal(
                "webhook sink: secret is empty; set a secret or remove it".into(),
            ));
        }
        Ok(())
    }
}
