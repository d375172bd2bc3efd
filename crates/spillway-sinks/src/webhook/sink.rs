//! The `webhook` sink's [`Sink`] implementation (behaviour in the module docs).

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::StatusCode;
use sha2::Sha256;

use super::config::WebhookSinkConfig;
use crate::{Sink, SinkError, SinkRecord};

/// The signature header.
const SIGNATURE: &str = "x-spillway-signature";
/// Lsn of the batch's first record.
const FIRST_LSN: &str = "x-spillway-first-lsn";
/// Lsn of the batch's last record.
const LAST_LSN: &str = "x-spillway-last-lsn";

/// The `webhook` sink.
pub struct WebhookSink {
    config: WebhookSinkConfig,
    client: reqwest::Client,
    /// Content-Type and the configured extra headers.
    headers: HeaderMap,
}

impl std::fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSink")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl WebhookSink {
    /// Validates `config` and builds the HTTP client (no request is made).
    pub fn new(config: &WebhookSinkConfig) -> Result<WebhookSink, SinkError> {
        config.validate()?;
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                SinkError::Fatal(format!(
                    "webhook sink: header name {name:?} is not a valid HTTP header name"
                ))
            })?;
            let v = HeaderValue::from_str(value).map_err(|_| {
                SinkError::Fatal(format!(
                    "webhook sink: the value of header {name:?} is not a valid HTTP header value"
                ))
            })?;
            headers.insert(n, v);
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .map_err(|e| {
                SinkError::Fatal(format!(
                    "webhook sink: cannot build the HTTP client ({e}); https:// needs the rustls feature"
                ))
            })?;
        Ok(WebhookSink {
            config: config.clone(),
            client,
            headers,
        })
    }

    /// The request body for `batch`: `[v1,v2,...]`.
    pub fn body(batch: &[SinkRecord]) -> Vec<u8> {
        let len = batch.iter().map(|r| r.value.len() + 1).sum::<usize>() + 2;
        let mut body = Vec::with_capacity(len);
        body.push(b'[');
        for (i, r) in batch.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&r.value);
        }
        body.push(b']');
        body
    }

    /// `sha256=<lowercase hex HMAC-SHA256(secret, body)>`.
    pub fn signature(secret: &str, body: &[u8]) -> String {
        // HMAC accepts keys of any length.
        let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(body);
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(7 + digest.len() * 2);
        out.push_str("sha256=");
        for b in digest.iter() {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }
}

/// Whether an HTTP answer is worth retrying.
fn transient_status(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

impl Sink for WebhookSink {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    async fn deliver(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
        let body = Self::body(batch);
        let mut headers = self.headers.clone();
        if let (Some(first), Some(last)) = (batch.first(), batch.last()) {
            headers.insert(FIRST_LSN, HeaderValue::from(first.lsn));
            headers.insert(LAST_LSN, HeaderValue::from(last.lsn));
        }
        if let Some(secret) = &self.config.secret {
            let sig = Self::signature(secret, &body);
            if let Ok(v) = HeaderValue::from_str(&sig) {
                headers.insert(SIGNATURE, v);
            }
        }
        let url = &self.config.url;
        let res = self
            .client
            .post(url)
            .headers(headers)
            .body(body)
            .send()
            .await;
        let resp = match res {
            Ok(resp) => resp,
            Err(e) => {
                let what = if e.is_timeout() {
                    format!("timed out after {} ms", self.config.timeout_ms)
                } else if e.is_connect() {
                    "cannot connect".to_owned()
                } else {
                    "request failed".to_owned()
                };
                let cause = std::error::Error::source(&e)
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default();
                let msg = format!("webhook sink: POST {url} {what}{cause}").replace('\n', " ");
                // A builder error (e.g. https without TLS support) cannot
                // heal by retrying.
                return Err(if e.is_builder() {
                    SinkError::Fatal(msg)
                } else {
                    SinkError::Transient(msg)
                });
            }
        };
        let status = resp.status();
        // Drain the answer so the connection can be reused.
        let _ = resp.bytes().await;
        if status.is_success() {
            Ok(())
        } else if transient_status(status) {
            Err(SinkError::Transient(format!(
                "webhook sink: POST {url} answered {status}; retrying"
            )))
        } else {
            Err(SinkError::Fatal(format!(
                "webhook sink: POST {url} answered {status}; the endpoint rejects the request, check the url, headers and secret"
            )))
        }
    }
}
