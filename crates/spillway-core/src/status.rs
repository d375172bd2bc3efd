//! Live state shared between the parts of a running instance (capture writes it, the API
//! and metrics read it). Plain atomics: no I/O.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::Mutex;

/// Live state of the source, shared with the API and metrics.
#[derive(Debug, Default)]
pub struct SourceStatus {
    /// Connected and streaming.
    pub streaming: AtomicBool,
    /// The flush position last confirmed to PostgreSQL.
    pub confirmed_flush_lsn: AtomicU64,
    /// The server's WAL end as last reported.
    pub server_wal_end: AtomicU64,
    /// Commit time (µs since epoch) of the last captured transaction.
    pub last_commit_time_us: AtomicI64,
    /// Events appended since start.
    pub events_captured: AtomicU64,
    /// WAL bytes the slot holds back on the server (`pg_current_wal_lsn() - restart_lsn`),
    /// refreshed with every periodic status update.
    pub wal_retained_bytes: AtomicU64,
    /// Milliseconds from the last captured commit to its capture.
    pub lag_ms: AtomicU64,
    /// Last error, for `/v1/status`.
    pub last_error: Mutex<Option<String>>,
    /// The tables the publication sends, as `(schema, table)`, read at every connect and
    /// extended by tables met in the stream; `None` until first read. The API names an
    /// `entities` pattern that matches none of them instead of serving an empty stream.
    pub published_tables: Mutex<Option<Vec<(String, String)>>>,
}

impl SourceStatus {
    /// Replaces the list of published tables.
    pub fn set_published_tables(&self, tables: Vec<(String, String)>) {
        if let Ok(mut t) = self.published_tables.lock() {
            *t = Some(tables);
        }
    }

    /// Adds a table met in the stream (created after the last connect).
    pub fn add_published_table(&self, schema: &str, table: &str) {
        if let Ok(mut guard) = self.published_tables.lock() {
            let list = guard.get_or_insert_with(Vec::new);
            if !list.iter().any(|(s, t)| s == schema && t == table) {
                list.push((schema.to_owned(), table.to_owned()));
            }
        }
    }
}
