//! The client's error type.

use std::time::Duration;

/// Everything that can go wrong, one line each.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server address given to [`Client::new`](crate::Client::new) is unusable.
    #[error("invalid server url `{url}`: {reason}")]
    InvalidUrl {
        /// What was given.
        url: String,
        /// Why it is unusable.
        reason: String,
    },
    /// A builder or method argument is out of range (checked before any request).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The request did not get an HTTP answer (connection refused, reset, timeout…), or
    /// the answer's body broke off.
    #[error("{message}")]
    Transport {
        /// The whole cause chain on one line.
        message: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// The server rejected the token (or one is needed): HTTP 401.
    #[error(
        "unauthorized (HTTP 401): {message}; pass the server's api.token with Client::with_token"
    )]
    Unauthorized {
        /// The server's `error` text.
        message: String,
    },
    /// A checkpoint would have moved backward: HTTP 409.
    #[error("checkpoint of consumer `{name}` not set to {lsn}: {message}; use checkpoint_force to move it backward")]
    CheckpointConflict {
        /// Consumer name.
        name: String,
        /// The lsn that was refused.
        lsn: u64,
        /// The server's `error` text.
        message: String,
    },
    /// Any other non-success answer (400 for bad parameters, 404, 5xx…).
    #[error("server answered HTTP {status}: {message}")]
    Api {
        /// HTTP status code.
        status: u16,
        /// The server's `error` text (or the start of the body).
        message: String,
    },
    /// A line of the change stream is not a valid event. The line is consumed: the next
    /// call continues with the line after it.
    #[error("unreadable event line from the server ({source}): {line}")]
    Decode {
        /// The line (cut at 200 characters).
        line: String,
        /// Why it did not parse.
        #[source]
        source: serde_json::Error,
    },
    /// The server's answer is not what the API promises (wrong content type, missing field).
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// Reconnecting failed `attempts` times in a row
    /// ([`ChangeStreamBuilder::max_reconnect_attempts`](crate::ChangeStreamBuilder::max_reconnect_attempts)).
    #[error("gave up reconnecting after {attempts} attempts; last error: {last}")]
    GaveUp {
        /// Consecutive failed attempts.
        attempts: u32,
        /// The last attempt's error.
        last: Box<Error>,
    },
    /// Events are missing before the next one (`requery_required`: retention trimmed
    /// them, or the server's log was repaired or restored): rebuild the consumer's state
    /// from the source tables, then go on — the stream continues at `oldest_lsn` with the
    /// next call. Only the row-change calls ([`ChangeStream::next`](crate::ChangeStream::next),
    /// [`next_batch`](crate::ChangeStream::next_batch), the `Stream` and `Iterator` impls)
    /// return it; the item calls yield [`StreamItem::RequeryRequired`](crate::StreamItem::RequeryRequired).
    #[error("events {requested_lsn}..{oldest_lsn} are missing from the change log (requery_required): rebuild from the source tables; the stream continues at lsn {oldest_lsn}")]
    RequeryRequired {
        /// The lsn the stream asked for.
        requested_lsn: u64,
        /// The next event has this lsn or a later one.
        oldest_lsn: u64,
    },
    /// Nothing at all (not even a heartbeat) arrived for this long on a change stream
    /// ([`ChangeStreamBuilder::idle_timeout`](crate::ChangeStreamBuilder::idle_timeout)).
    #[error("no data from the server for {0:?} (no heartbeat either)")]
    Idle(Duration),
}

impl Error {
    /// The HTTP status, for errors that are an HTTP answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Unauthorized { .. } => Some(401),
            Error::CheckpointConflict { .. } => Some(409),
            Error::Api { status, .. } => Some(*status),
            Error::GaveUp { last, .. } => last.status(),
            _ => None,
        }
    }

    /// Whether this is [`Error::RequeryRequired`].
    pub fn is_requery(&self) -> bool {
        matches!(self, Error::RequeryRequired { .. })
    }

    /// Whether trying again later can help: transport failures, 5xx, 408 and 429. Other
    /// 4xx answers (bad parameters, unknown consumer, bad token) are final.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport { .. } | Error::Idle(_) => true,
            Error::Api { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }

    pub(crate) fn transport(source: reqwest::Error) -> Error {
        let url = source.url().map(|u| {
            let mut u = u.clone();
            u.set_query(None);
            u.to_string()
        });
        let url = url.as_deref().unwrap_or("the server");
        let head = if source.is_connect() {
            format!("cannot connect to {url}")
        } else if source.is_timeout() {
            format!("request to {url} timed out")
        } else if source.is_body() || source.is_decode() {
            format!("the response from {url} broke off")
        } else {
            format!("request to {url} failed")
        };
        // The innermost cause says what happened ("Connection refused (os error 111)").
        let mut root = None;
        let mut cause = std::error::Error::source(&source);
        while let Some(c) = cause {
            root = Some(c.to_string());
            cause = c.source();
        }
        let message = match root {
            Some(r) => format!("{head}: {r}"),
            None => format!("{head}: {source}"),
        };
        Error::Transport { message, source }
    }

    pub(crate) fn decode(line: &[u8], source: serde_json::Error) -> Error {
        let text = String::from_utf8_lossy(line);
        let line = match text.char_indices().nth(200) {
            Some((cut, _)) => format!("{}…", &text[..cut]),
            None => text.into_owned(),
        };
        Error::Decode { line, source }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
