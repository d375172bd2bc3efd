//! # spillway-sink-s3 — the `s3` sink
//!
//! Writes change events as JSON-lines objects into S3-compatible storage
//! (or a local directory) through the `object_store` crate. It is a
//! [`Sink`] under Spillway's sink runtime ([`spillway_sinks::run_sink`]),
//! which provides the checkpoint, filters, encoding and retries; this crate
//! turns each delivered batch into objects. It lives in its own crate so
//! the object-store client builds once.
//!
//! * **Where.** [`url`](S3SinkConfig::url) is `s3://bucket/prefix` or
//!   `file:///dir/prefix`; [`endpoint`](S3SinkConfig::endpoint) and
//!   [`region`](S3SinkConfig::region) serve S3-compatible stores (MinIO,
//!   s3s, …; path-style requests). Credentials come from
//!   [`access_key_id`](S3SinkConfig::access_key_id) /
//!   [`secret_access_key`](S3SinkConfig::secret_access_key) /
//!   [`session_token`](S3SinkConfig::session_token), else from the standard
//!   `AWS_*` environment variables.
//! * **Paths.** Table-specific, as reference 003's object-store sink:
//!   `{prefix}/{schema}/{table}/date=YYYY-MM-DD/{first_lsn}-{last_lsn}.jsonl`
//!   (`.jsonl.gz` with [`gzip`](S3SinkConfig::gzip)). The date is the
//!   commit date (UTC) of the records; the lsns are the first and last log
//!   lsn of the records in the object, zero-padded to 20 digits so names
//!   sort in log order. Records of no table (`message`,
//!   `requery_required`) go under `{prefix}/_control/`. Each line is one
//!   encoded event (`format`).
//! * **Cutting.** One delivered batch becomes one object per table and
//!   date. The runtime cuts batches at transaction boundaries
//!   ([`whole_transactions`](spillway_sinks::SinkSettings::whole_transactions))
//!   once they reach [`max_object_events`](S3SinkConfig::max_object_events)
//!   or [`max_object_bytes`](S3SinkConfig::max_object_bytes), or when the
//!   oldest record has waited [`max_object_age_ms`](S3SinkConfig::max_object_age_ms)
//!   — see [`S3SinkConfig::apply`]. A single transaction larger than that
//!   is split.
//! * **Atomic, durable objects.** Each object is written with one PUT (for
//!   `file://`: a finished, fsynced temporary file renamed into place): a
//!   reader never sees part of an object, and a crash leaves either the
//!   whole object or none. [`Sink::deliver`] returns `Ok` after every object
//!   of the batch is written.
//! * **A replay never stores an event twice.** After a restart or a failed
//!   attempt, batches may start inside what an earlier attempt wrote
//!   already. Until a batch overlaps nothing, the sink lists each target
//!   directory first: records that an existing object holds (its name gives
//!   its lsn range) are skipped — that object keeps its name and content —
//!   and a new object never reaches across the first lsn of an existing
//!   one. So readers never see an event in two objects because of a crash,
//!   whatever the cut of the replayed batches.

mod config;
mod sink;

pub use config::S3SinkConfig;
pub use sink::{object_name, S3Sink};

#[doc(no_inline)]
pub use spillway_sinks::{Sink, SinkError};
