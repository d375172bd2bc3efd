//! [`Client`]: the server address, the token, and the request/response endpoints
//! (status, checkpoints, consumers).

use crate::error::{Error, Result};
use reqwest::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;

/// How long a request/response call (not a stream) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long opening a TCP connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A handle on one Spillway server. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct Client {
    pub(crate) http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `GET /v1/status`: the log's positions, plus everything else the server reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// The newest lsn in the log (0 when empty).
    pub current_lsn: u64,
    /// The oldest lsn still retained.
    pub oldest_lsn: u64,
    /// The rest of the document (source, log, …), as sent.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// The answer to a checkpoint update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Consumer name.
    pub name: String,
    /// The last lsn the consumer has processed.
    pub checkpoint: u64,
    /// When it was stored, µs since the Unix epoch.
    pub updated_at_us: i64,
}

/// A named consumer as `GET /v1/consumers` describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsumerInfo {
    /// Consumer name.
    pub name: String,
    /// The last lsn the consumer has processed.
    pub checkpoint: u64,
    /// Events in the log after the checkpoint.
    #[serde(default)]
    pub lag_events: Option<u64>,
    /// Age of the oldest unprocessed event, in seconds.
    #[serde(default)]
    pub lag_seconds: Option<f64>,
    /// When the checkpoint was stored, µs since the Unix epoch.
    #[serde(default)]
    pub updated_at_us: Option<i64>,
}

#[derive(Deserialize)]
struct ConsumerList {
    consumers: Vec<ConsumerInfo>,
}

impl Client {
    /// A client for the server at `url` (e.g. `http://127.0.0.1:7654`; a path prefix is
    /// kept, for servers behind a proxy). Nothing is sent yet.
    pub fn new(url: &str) -> Result<Client> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let base = Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
        match base.scheme() {
            "http" => {}
            "https" if cfg!(feature = "rustls") => {}
            "https" => {
                return Err(invalid(
                    "https needs the `rustls` feature of spillway-client",
                ))
            }
            other => return Err(invalid(&format!("scheme `{other}` is not http or https"))),
        }
        if base.cannot_be_a_base() || base.host().is_none() {
            return Err(invalid("no host"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid(
                "give the server address without ?query or #fragment",
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .build()
            .map_err(Error::transport)?;
        Ok(Client {
            http,
            base,
            token: None,
        })
    }

    /// Sends `Authorization: Bearer TOKEN` with every request (the server's `api.token`).
    pub fn with_token(mut self, token: impl Into<String>) -> Client {
        self.token = Some(token.into());
        self
    }

    /// The server address.
    pub fn url(&self) -> &str {
        self.base.as_str()
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<ServerStatus> {
        let resp = self.send(Method::GET, &["v1", "status"], None).await?;
        let resp = ok_or_error(resp).await?;
        json_body(resp).await
    }

    /// The newest lsn in the log (0 when the log is empty). Lag of a consumer is
    /// `current_lsn - last processed lsn`.
    pub async fn current_lsn(&self) -> Result<u64> {
        Ok(self.status().await?.current_lsn)
    }

    /// The oldest lsn still retained.
    pub async fn oldest_lsn(&self) -> Result<u64> {
        Ok(self.status().await?.oldest_lsn)
    }

    /// Stores `lsn` as the last event consumer `name` has processed (durable on the
    /// server). Creates the consumer when new. Moving a checkpoint backward fails with
    /// [`Error::CheckpointConflict`]; see [`Client::checkpoint_force`].
    pub async fn checkpoint(&self, name: &str, lsn: u64) -> Result<Checkpoint> {
        self.put_checkpoint(name, lsn, false).await
    }

    /// Like [`Client::checkpoint`], but may move the checkpoint backward (to replay).
    pub async fn checkpoint_force(&self, name: &str, lsn: u64) -> Result<Checkpoint> {
        self.put_checkpoint(name, lsn, true).await
    }

    async fn put_checkpoint(&self, name: &str, lsn: u64, force: bool) -> Result<Checkpoint> {
        check_name(name)?;
        let body = if force {
            serde_json::json!({ "lsn": lsn, "force": true })
        } else {
            serde_json::json!({ "lsn": lsn })
        };
        let resp = self
            .send(
                Method::PUT,
                &["v1", "consumers", name, "checkpoint"],
                Some(body),
            )
            .await?;
        if resp.status() == StatusCode::CONFLICT {
            let message = error_message(resp).await;
            return Err(Error::CheckpointConflict {
                name: name.to_string(),
                lsn,
                message,
            });
        }
        json_body(ok_or_error(resp).await?).await
    }

    /// One consumer, or `None` when there is none by that name.
    pub async fn consumer(&self, name: &str) -> Result<Option<ConsumerInfo>> {
        check_name(name)?;
        let resp = self
            .send(Method::GET, &["v1", "consumers", name], None)
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        json_body(ok_or_error(resp).await?).await.map(Some)
    }

    /// Every named consumer with its checkpoint and lag.
    pub async fn consumers(&self) -> Result<Vec<ConsumerInfo>> {
        let resp = self.send(Method::GET, &["v1", "consumers"], None).await?;
        let list: ConsumerList = json_body(ok_or_error(resp).await?).await?;
        Ok(list.consumers)
    }

    /// Removes a consumer (its checkpoint no longer holds back retention). `false` when
    /// there was none by that name.
    pub async fn delete_consumer(&self, name: &str) -> Result<bool> {
        check_name(name)?;
        let resp = self
            .send(Method::DELETE, &["v1", "consumers", name], None)
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        ok_or_error(resp).await?;
        Ok(true)
    }

    /// `base` + `/seg/seg…` (each segment percent-encoded).
    pub(crate) fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// A request with the token and `Accept` set.
    pub(crate) fn request(
        &self,
        method: Method,
        url: Url,
        accept: &'static str,
    ) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .request(method, url)
            .header(ACCEPT, HeaderValue::from_static(accept));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        req
    }

    async fn send(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<Value>,
    ) -> Result<reqwest::Response> {
        let mut req = self
            .request(method, self.endpoint(segments), "application/json")
            .timeout(REQUEST_TIMEOUT);
        if let Some(body) = body {
            req = req
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        req.send().await.map_err(Error::transport)
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidArgument("consumer name is empty".into()));
    }
    Ok(())
}

/// The response when it is a success, else the error it carries.
pub(crate) async fn ok_or_error(resp: reqwest::Response) -> Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let message = error_message(resp).await;
    if status == StatusCode::UNAUTHORIZED {
        return Err(Error::Unauthorized { message });
    }
    Err(Error::Api {
        status: status.as_u16(),
        message,
    })
}

/// The `error` field of a JSON error body, else the body's start, else the status text.
async fn error_message(resp: reqwest::Response) -> String {
    let status = resp.status();
    let body = resp.bytes().await.unwrap_or_default();
    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
        if let Some(e) = v.get("error").and_then(Value::as_str) {
            return e.to_string();
        }
    }
    let text = String::from_utf8_lossy(&body);
    let text = text.trim();
    if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("no message")
            .to_string()
    } else {
        let line = text.lines().next().unwrap_or_default();
        line.chars().take(200).collect()
    }
}

async fn json_body<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> Result<T> {
    let url = resp.url().path().to_string();
    let body = resp.bytes().await.map_err(Error::transport)?;
    serde_json::from_slice(&body).map_err(|e| Error::Protocol(format!("{url}: {e}")))
}
