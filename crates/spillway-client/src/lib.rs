//! Rust client for Spillway's consumer API (SPEC §5): stream the change log as typed
//! events, resume after failures, and keep named checkpoints on the server.
//!
//! ```no_run
//! use spillway_client::{Client, Operation};
//!
//! # async fn run() -> Result<(), spillway_client::Error> {
//! let client = Client::new("http://127.0.0.1:7654")?; // .with_token("…") when api.token is set
//! let mut stream = client
//!     .stream_changes()
//!     .consumer("search-sync") // or .from_lsn(n), .from_timestamp(t), .from_beginning()
//!     .entities(["commerce.product", "commerce.category"])
//!     .operations([Operation::Insert, Operation::Update, Operation::Delete])
//!     .await?;
//! while let Some(change) = stream.next().await? {
//!     match change.operation {
//!         Operation::Insert | Operation::Read => println!("new {}: {:?}", change.entity, change.entity_id),
//!         Operation::Update => println!("updated {}: {:?}", change.entity, change.entity_id),
//!         Operation::Delete => println!("deleted {}: {:?}", change.entity, change.entity_id),
//!         Operation::Truncate => println!("{} emptied", change.entity),
//!     }
//!     client.checkpoint("search-sync", change.lsn).await?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! `next()` yields row changes. When events are missing before the next one (retention
//! trimmed them, the log was repaired) it returns [`Error::RequeryRequired`] — the `?`
//! above ends the loop rather than skip silently; rebuild from the tables and call
//! `next()` again to go on. [`ChangeStream::next_item`] yields every item instead
//! (schema changes, logical messages, the requery as a [`StreamItem`]).
//! [`ChangeStream`] is also a [`futures_util::Stream`] of `Result<ChangeEvent>`, and a
//! blocking iterator ([`Changes`]: `for change in stream`) on a multi-threaded runtime.
//!
//! Batches, as the server flushes them (`batch_size`, `batch_timeout`):
//!
//! ```no_run
//! # use spillway_client::{Client, Operation};
//! # use std::time::Duration;
//! # async fn run(client: Client) -> Result<(), spillway_client::Error> {
//! let mut stream = client
//!     .stream_changes()
//!     .from_beginning()
//!     .batch_size(100)
//!     .batch_timeout(Duration::from_secs(1))
//!     .await?;
//! while let Some(batch) = stream.next_batch().await? {
//!     let inserts: Vec<_> = batch.iter().filter(|c| c.operation == Operation::Insert).collect();
//!     println!("{} inserts", inserts.len());
//!     if let Some(last) = batch.last() {
//!         client.checkpoint("bulk-indexer", last.lsn).await?;
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Everything so far, then stop ([`ChangeStreamBuilder::until_caught_up`]):
//!
//! ```no_run
//! # async fn run(client: spillway_client::Client) -> Result<(), spillway_client::Error> {
//! let mut stream = client.stream_changes().from_beginning().until_caught_up().await?;
//! let mut n = 0;
//! while let Some(_change) = stream.next().await? {
//!     n += 1;
//! }
//! println!("{n} changes in the log");
//! # Ok(())
//! # }
//! ```
//!
//! # Start positions
//!
//! | builder call | starts at |
//! |---|---|
//! | *(none)*, `.from_now()` | the first event committed after the stream is opened |
//! | `.from_lsn(n)` | lsn `n`, inclusive (lsns are dense: 1, 2, 3 …) |
//! | `.after_lsn(c)` | lsn `c + 1` (resume after a checkpoint you stored yourself) |
//! | `.from_timestamp(t)` | the first event committed at or after `t` |
//! | `.from_beginning()` | the oldest event still retained |
//! | `.consumer("name")` | the server-side checkpoint of `name` + 1 (the beginning if it has none) |
//!
//! A position that is no longer retained yields [`Error::RequeryRequired`]
//! ([`StreamItem::RequeryRequired`] from the item calls) first; the stream then continues
//! at its `oldest_lsn`. Filters (`entities`, `exclude_entities`, `operations`) are applied
//! by the server, so a filtered stream skips lsns; the server's heartbeats say how far it
//! has read, so [`ChangeStream::last_lsn`] reaches the log's end when a filtered consumer
//! is caught up.
//!
//! # Reconnection
//!
//! A change stream survives a broken connection, a server restart and a network blip by
//! itself: the caller sees no error, no gap and no duplicate.
//!
//! - **When**: the connection breaks (reset, server shutdown, refused while the server
//!   is down), the server ends the response, the server answers 5xx/408/429, or nothing
//!   arrives — no answer, no event, no heartbeat — for
//!   [`idle_timeout`](ChangeStreamBuilder::idle_timeout) (default 45 s; the server sends
//!   a heartbeat every ~10 s on an idle stream, and the client swallows heartbeats).
//! - **How often**: after 100 ms, doubling up to 5 s between attempts
//!   ([`backoff`](ChangeStreamBuilder::backoff)); the delay resets once data flows again.
//!   Without [`max_reconnect_attempts`](ChangeStreamBuilder::max_reconnect_attempts) it
//!   never gives up: `next()` simply waits for the server to come back.
//! - **Where**: right after the last event received — `from_lsn = last + 1`, with the
//!   same filters and batch settings. Events already received but not yet handed out
//!   are kept, a partially received line is dropped and fetched again, and any event at
//!   or below the last lsn received is discarded, so every event is handed out once and
//!   in lsn order. Before the first event, the original start position is asked again
//!   (`from_timestamp`, `from=beginning`, `consumer=NAME`); "now" is pinned to an lsn
//!   (`current_lsn + 1` from `GET /v1/status`) when the stream opens, so a reconnect
//!   cannot skip what was committed meanwhile. After a
//!   [`StreamItem::RequeryRequired`] the resume position is its `oldest_lsn`.
//!   Every resume also sends the server's *log epoch* the position belongs to, so a
//!   log that handed those lsns out again (repaired, or restored from a backup) moves
//!   the stream back with a `RequeryRequired` instead of letting it skip. Across a
//!   restart of the consumer process, store [`ChangeStream::log_epoch`] next to the
//!   checkpoint and pass it to [`ChangeStreamBuilder::log_epoch`].
//! - **What is not retried**: opening the stream (the first request fails fast, so a
//!   wrong address or parameter shows at once), and answers that no retry can fix: 400
//!   (bad parameter), 401 ([`Error::Unauthorized`]), 404. These are returned from
//!   `next()`; calling `next()` again tries again.
//! - **Position vs checkpoint**: resuming within one [`ChangeStream`] needs nothing from
//!   the caller. Surviving a restart of the *consumer process* needs a checkpoint:
//!   store [`ChangeStream::last_lsn`] with [`Client::checkpoint`] after processing, and
//!   open the next stream with `.consumer(name)`. Delivery across process restarts is
//!   then at least once (events after the last stored checkpoint come again), so
//!   process idempotently, e.g. by the event's stable `id`.
//!
//! With [`reconnect(false)`](ChangeStreamBuilder::reconnect) a broken connection is
//! returned as an error and a stream the server ends ends for the caller
//! (`next()` → `Ok(None)`).
//!
//! # Errors
//!
//! [`Error`], one line each. A line of the stream that does not parse is
//! [`Error::Decode`] (returned once, in its place; the stream goes on after it).
//!
//! # TLS
//!
//! Plain `http://` out of the box; enable the `rustls` feature for `https://`.

mod client;
mod error;
mod stream;

pub use client::{Checkpoint, Client, ConsumerInfo, ServerStatus};
pub use error::{Error, Result};
pub use stream::{ChangeStream, ChangeStreamBuilder, Changes, StreamItem, Timestamp};

pub use spillway_core::{
    ChangeEvent, ColumnInfo, Event, MessageEvent, Operation, RequeryReason, SchemaChangeEvent,
    SourceInfo, TxInfo,
};

/// Reference 004 imports the stream from a `cdc` module; the same types, by that path.
pub mod cdc {
    pub use crate::{ChangeEvent, ChangeStream, ChangeStreamBuilder, Operation, StreamItem};
}
