//! # spillway-sinks — delivering the change log to destinations
//!
//! A *sink* takes the events of the change log to a destination (a file,
//! Kafka, NATS, S3, an HTTP endpoint). This crate holds the shared runtime
//! that every sink runs under ([`run_sink`]), the sinks themselves (one
//! directory each), and the conformance suite every sink's tests run.
//!
//! ```text
//!  change log ──read_batch──▶ filter ──encode──▶ batch ──deliver──▶ destination
//!      ▲  committed lsn (watch)                     │ Ok = durable ack
//!      └──────────── checkpoint "<sink name>" ◀─────┘ (only after Ok)
//! ```
//!
//! ## The sink contract
//!
//! Every sink — and every new sink — keeps these promises. The runtime
//! ([`run_sink`]) implements the parts that are common; a [`Sink`]
//! implementation only has to keep the promise of [`Sink::deliver`].
//! [`conformance::run_conformance`] checks them; every sink's tests call it.
//!
//! 1. **A sink is a named consumer of the log.** Its checkpoint lives in the
//!    log's [`CheckpointStore`](spillway_log::CheckpointStore) under the
//!    sink's name ([`SinkSettings::name`]). The checkpoint is the last log
//!    lsn the sink has fully dealt with (delivered, or filtered out). Two
//!    sinks with different names never affect each other; a slow or broken
//!    sink only grows its own lag, never holds WAL on PostgreSQL and never
//!    slows the capture (the log keeps appending).
//! 2. **Batches.** The runtime reads committed records in log order, drops
//!    the ones the filters reject, encodes the rest and hands them to
//!    [`Sink::deliver`] in batches of at most
//!    [`batch_size`](SinkSettings::batch_size) records (or
//!    [`max_batch_bytes`](SinkSettings::max_batch_bytes)), cut early after
//!    [`batch_timeout`](SinkSettings::batch_timeout) when the log is quiet.
//!    With [`whole_transactions`](SinkSettings::whole_transactions) (the
//!    `s3` sink) a batch cut while the log holds more leaves the records of
//!    its last, possibly unfinished transaction for the next batch (the
//!    checkpoint then moves to just before them), unless the batch holds
//!    nothing else.
//! 3. **`Ok` means durable.** `deliver(batch)` returns `Ok` only once the
//!    destination has acknowledged every record of the batch durably (the
//!    file is fsynced, the broker acked, the object is written). Only then
//!    does the runtime move the checkpoint, to the last lsn of the batch
//!    (including filtered-out records after the last delivered one). The
//!    checkpoint therefore never passes what the destination holds.
//! 4. **At-least-once, same ids.** After a crash between the destination's
//!    ack and the checkpoint write, the records since the checkpoint are
//!    delivered again. A replayed record carries the same event id (the
//!    event's `id` field, [`SinkRecord::id`]), so destinations must tolerate
//!    duplicates or drop them by id (`Nats-Msg-Id`, idempotent upserts, …).
//! 5. **Order.** Records are delivered in log order; in particular the order
//!    per key (per `entity_id` of an entity) is the log order. A sink that
//!    delivers in parallel must keep the order per [`SinkRecord::key`].
//!    One exception, at-least-once's: when a batch fails part-way, the retry
//!    re-sends records that may already have arrived, so a destination that
//!    keeps everything (Kafka) can hold an older version of a row after a
//!    newer one; the duplicate has the same id and a lower lsn. A sink that
//!    pipelines (NATS, Kafka) can also lose one message while a later one
//!    of the same key is stored, and the retry then stores the earlier one
//!    after it. Consumers that must never go backwards compare the lsn (or
//!    Debezium's `source.lsn`) before applying a change.
//! 6. **Unreachable destinations are retried, forever.** A
//!    [`SinkError::Transient`] from `deliver` makes the runtime retry the
//!    same batch with exponential backoff
//!    ([`retry_initial`](SinkSettings::retry_initial) 200 ms doubling to
//!    [`retry_max`](SinkSettings::retry_max) 30 s), forever, while capture
//!    continues. [`SinkStatus`] shows `retrying`, the error count and the
//!    last error meanwhile. A [`SinkError::Fatal`] stops this sink (only
//!    this one) and is reported through [`SinkStatus`] and the return value
//!    of [`run_sink`].
//! 7. **Restart resumes at checkpoint + 1.** After a clean stop, a restart
//!    or a `kill -9`, the sink starts reading at the lsn after its
//!    checkpoint (lsn 1 for a sink without a checkpoint).
//! 8. **Never a silent gap** (SPEC principle 2). If retention trimmed the
//!    position the sink needs, the runtime delivers a `requery_required`
//!    control record *through the sink* — the native event
//!    `{"type":"requery_required","id":"requery:<requested>:<oldest>",
//!    "requested_lsn":..,"oldest_lsn":..,"timestamp":..}`, encoded like any
//!    event — so the destination's owner learns it must re-read its tables.
//!    Once that record is delivered the checkpoint moves to `oldest - 1` and
//!    the sink continues from the oldest retained lsn. A sink without a
//!    checkpoint whose log no longer starts at lsn 1 gets the same record
//!    (`requested_lsn` 1): the destination never saw the trimmed history.
//!    If the sink's `format` cannot carry `requery_required` (`debezium`,
//!    `flat`), the sink stops with a [`SinkError::Fatal`] that says to
//!    re-snapshot and then move the checkpoint — it never jumps the gap.
//! 9. **Shutdown.** When the shutdown signal fires, the runtime delivers
//!    what it has batched (one attempt, no retries), moves the checkpoint if
//!    that succeeded, then calls [`Sink::close`] once and returns.
//!
//! What is delivered: `change` events that pass the filters
//! ([`SinkSettings::tables`], [`SinkSettings::operations`]), `schema_change`
//! events of tables that pass the `tables` filter, `message` events when no
//! `tables` filter is set, and `requery_required` records (always). Records
//! the filters drop still advance the checkpoint, so lag reaches 0. The
//! sink's [`Format`] ([`SinkSettings::format`]) encodes each delivered
//! event; events the format does not carry (e.g. `schema_change` in `flat`)
//! are dropped like filtered ones, and an event the format cannot encode is
//! a [`SinkError::Fatal`]. Whatever the format, [`SinkRecord::id`] is the
//! native event id and [`SinkRecord::key`] the row key as compact JSON.
//!
//! ## Layout
//!
//! * `contract` — the [`Sink`] trait (and [`DynSink`]), [`SinkRecord`], [`SinkError`].
//! * `settings` — [`SinkSettings`], and the `tables` / `operations` filter built from
//!   them ([`spillway_core::transform::Filter`]).
//! * `status` — [`SinkStatus`], the live state the API and metrics read.
//! * [`runtime`] — [`run_sink`]: read the log, parse each event once
//!   ([`spillway_core::EventView`]), filter → transforms → encode (one
//!   [`spillway_core::encoding::Encoder`] per running sink, fed every delivered event
//!   and every `schema_change` in log order), batch, deliver, checkpoint.
//! * [`file`](mod@file) — the `file` sink (JSON lines, rotation by size, or stdout).
//!   Every sink is a directory with the same files: `mod.rs` (docs),
//!   `config.rs` (serde config), `sink.rs` (the [`Sink`] implementation).
//! * [`webhook`] — the `webhook` sink (one signed HTTP POST per batch).
//! * [`route`] — topic / subject names from templates and mappings
//!   (used by the broker sinks, which live in crates of their own:
//!   `spillway-sink-nats`, `spillway-sink-kafka`, `spillway-sink-s3`, so
//!   their heavy dependencies build once).
//! * [`conformance`] — the suite every sink's tests run.

pub mod conformance;
mod contract;
pub mod file;
pub mod route;
pub mod runtime;
mod settings;
mod status;
pub mod webhook;

pub use spillway_core::encoding::{EncoderOptions, Format};

pub use contract::{BoxFuture, DynSink, Sink, SinkError, SinkRecord};
pub use runtime::{checkpoint_name, run_sink};
pub use settings::SinkSettings;
pub use status::{SinkStatus, SinkStatusSnapshot};
