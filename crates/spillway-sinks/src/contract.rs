//! The sink contract in code: what a destination implements ([`Sink`], or [`DynSink`]
//! to hold sinks of different types) and what it is handed ([`SinkRecord`]) and may
//! answer ([`SinkError`]). The rules themselves are in the crate docs.

use std::future::Future;
use std::pin::Pin;

/// One event as handed to [`Sink::deliver`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkRecord {
    /// Log lsn of the event (for a `requery_required` record: `oldest - 1`).
    pub lsn: u64,
    /// The event's stable id; the same on every replay (dedup key).
    pub id: String,
    /// `schema.table`, for events about a table.
    pub entity: Option<String>,
    /// The key columns (`entity_id`) as JSON text: message key / ordering key.
    pub key: Option<Vec<u8>>,
    /// The encoded event.
    pub value: Vec<u8>,
    /// Commit time, µs since the Unix epoch.
    pub timestamp_us: i64,
}

/// Why a delivery (or the sink) failed, by consequence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The destination is unreachable or refused for now: the runtime
    /// retries the same batch with backoff.
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help (bad configuration, unrepresentable event,
    /// corrupt log): this sink stops and reports it.
    #[error("{0}")]
    Fatal(String),
}

/// A destination. See the crate docs for the contract.
///
/// Methods are called from one task, one at a time: `deliver` for each
/// batch in log order (again with the same batch after a
/// [`SinkError::Transient`]), then `close` once when the sink stops.
pub trait Sink: Send {
    /// The sink type (`file`, `kafka`, …), for logs and metrics.
    fn kind(&self) -> &'static str;

    /// Delivers `batch` (non-empty, log order). `Ok` promises the
    /// destination acknowledged every record durably; the runtime then moves
    /// the checkpoint past the batch.
    fn deliver(
        &mut self,
        batch: &[SinkRecord],
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Called once when the runtime stops (shutdown or fatal error), after
    /// the last `deliver`. Releases connections; default: nothing.
    fn close(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send {
        async { Ok(()) }
    }
}

/// A boxed, `Send` future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Object-safe form of [`Sink`], for holding sinks of different types
/// (`Box<dyn DynSink>` is itself a [`Sink`]). Implemented for every `Sink`.
pub trait DynSink: Send {
    /// See [`Sink::kind`].
    fn kind_dyn(&self) -> &'static str;
    /// See [`Sink::deliver`].
    fn deliver_boxed<'a>(
        &'a mut self,
        batch: &'a [SinkRecord],
    ) -> BoxFuture<'a, Result<(), SinkError>>;
    /// See [`Sink::close`].
    fn close_boxed(&mut self) -> BoxFuture<'_, Result<(), SinkError>>;
}

impl<S: Sink> DynSink for S {
    fn kind_dyn(&self) -> &'static str {
        self.kind()
    }

    fn deliver_boxed<'a>(
        &'a mut self,
        batch: &'a [SinkRecord],
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.deliver(batch))
    }

    fn close_boxed(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(self.close())
    }
}

impl Sink for Box<dyn DynSink> {
    fn kind(&self) -> &'static str {
        (**self).kind_dyn()
    }

    async fn deliver(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
        (**self).deliver_boxed(batch).await
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        (**self).close_boxed().await
    }
}
