//! The `webhook` sink: one HTTP POST per batch.
//!
//! * **Body.** A JSON array of the batch's encoded events, in log order:
//!   `[event1,event2,...]` (each record's bytes are one JSON document, as
//!   the runtime's encoder made them). `Content-Type: application/json`.
//! * **Headers.** `X-Spillway-First-Lsn` / `X-Spillway-Last-Lsn` (the log
//!   lsns of the first and last record of the batch), any extra
//!   [`headers`](WebhookSinkConfig::headers), and, when a
//!   [`secret`](WebhookSinkConfig::secret) is set,
//!   `X-Spillway-Signature: sha256=<hex>` — the lowercase hex
//!   HMAC-SHA256 of the exact body bytes keyed with the secret. Receivers
//!   should recompute it and compare in constant time.
//! * **Durability.** [`Sink::deliver`](crate::Sink::deliver) returns `Ok`
//!   only on a 2xx answer: the endpoint must store the batch before
//!   answering. Batches are replayed after a crash (at-least-once): dedup
//!   by each event's `id`.
//! * **Failures.** 5xx, 408, 429, timeouts ([`timeout_ms`](WebhookSinkConfig::timeout_ms))
//!   and connection errors are [`SinkError::Transient`](crate::SinkError)
//!   (retried with backoff, forever). Any other status (other 4xx,
//!   redirects, 1xx) is [`SinkError::Fatal`](crate::SinkError): the endpoint
//!   is misconfigured and retrying will not help.
//! * **TLS.** `https://` URLs need the crate feature `rustls`.

mod config;
mod sink;

pub use config::WebhookSinkConfig;
pub use sink::WebhookSink;
