//! # spillway-sink-nats — the `nats` sink
//!
//! Delivers change events into NATS JetStream. It is a [`Sink`] under
//! Spillway's sink runtime ([`spillway_sinks::run_sink`]), which provides the
//! checkpoint, batching, filters, encoding and retries; this crate only
//! publishes a batch and waits for JetStream's acknowledgements. It lives in
//! its own crate so the NATS client builds once, not with every change.
//!
//! * **Subjects.** Each record goes to a subject made from the
//!   [`subject`](NatsSinkConfig::subject) template, default
//!   `{prefix}_{schema}_{table}` (reference 001's `prefix_schema_table`),
//!   unless [`subject_mapping`](NatsSinkConfig::subject_mapping) names
//!   another for its table (`{"trades": "transactions"}`, reference 001's
//!   `TOPIC_MAPPING`). Records that belong to no table (`message`,
//!   `requery_required`) go to [`control_subject`](NatsSinkConfig::control_subject)
//!   (`{prefix}_control`). Whitespace, `*` and `>` in names become `_`.
//! * **Stream.** With [`manage_stream`](NatsSinkConfig::manage_stream)
//!   (the default) the stream ([`stream`](NatsSinkConfig::stream), default
//!   `spillway`) is created when missing (file storage,
//!   [`duplicate_window_s`](NatsSinkConfig::duplicate_window_s)) and each
//!   new subject is added to it before its first message, unless one of the
//!   stream's subjects already covers it (`>` and `*` wildcards included).
//!   Without it, a subject no stream subject covers stops the sink with a
//!   one-line error.
//! * **Dedup.** Every message carries `Nats-Msg-Id` = the event id, so a
//!   batch replayed after a crash (at-least-once) is dropped by the server
//!   within the stream's duplicate window. `Spillway-Lsn` carries the log
//!   lsn.
//! * **Acknowledgement.** A batch is published asynchronously with at most
//!   [`max_in_flight`](NatsSinkConfig::max_in_flight) unacknowledged
//!   messages; [`Sink::deliver`] returns `Ok` only once JetStream acked every
//!   message (stored in the stream). A missing ack within
//!   [`ack_timeout_ms`](NatsSinkConfig::ack_timeout_ms), a lost connection
//!   or an unavailable JetStream is [`SinkError::Transient`]: the runtime
//!   retries the whole batch, and dedup drops what had already arrived. A
//!   message over the server's `max_payload`, a stream the server refuses to
//!   create or update, or bad credentials are [`SinkError::Fatal`].
//! * **Order.** One connection publishes in log order, so the stream holds
//!   each subject's messages in log order. After a transient failure in the
//!   middle of a batch a later message may have been stored before the
//!   retry stores an earlier one (the retry keeps the ids, so consumers that
//!   track ids can tell).
//! * **Connection.** The client connects on the first delivery (an
//!   unreachable server is retried like any outage) and reconnects by
//!   itself afterwards. Authentication: [`token`](NatsSinkConfig::token),
//!   [`user`](NatsSinkConfig::user)/[`password`](NatsSinkConfig::password)
//!   or a [`credentials_file`](NatsSinkConfig::credentials_file); TLS with
//!   [`tls`](NatsSinkConfig::tls), [`tls_ca`](NatsSinkConfig::tls_ca) and a
//!   client certificate ([`tls_cert`](NatsSinkConfig::tls_cert),
//!   [`tls_key`](NatsSinkConfig::tls_key)).

mod config;
mod sink;

pub use config::NatsSinkConfig;
pub use sink::{subject_covered, NatsSink};

#[doc(no_inline)]
pub use spillway_sinks::{Sink, SinkError};
