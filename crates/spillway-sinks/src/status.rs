//! [`SinkStatus`]: the live state of one sink, shared with the status API and metrics.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

/// Live state of one sink, shared with the status API and metrics. All
/// counters are since [`run_sink`] started.
#[derive(Debug, Default)]
pub struct SinkStatus {
    pub(crate) delivered: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) requeries: AtomicU64,
    pub(crate) retrying: AtomicBool,
    pub(crate) failed: AtomicBool,
    pub(crate) checkpoint_lsn: AtomicU64,
    pub(crate) committed_lsn: AtomicU64,
    /// Timestamp of the record at the checkpoint (0: unknown).
    pub(crate) checkpoint_timestamp_us: AtomicI64,
    /// Timestamp of the last committed transaction (0: unknown).
    pub(crate) committed_timestamp_us: AtomicI64,
    pub(crate) last_error: Mutex<Option<String>>,
}

/// A copy of [`SinkStatus`] at one instant (for `/v1/status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SinkStatusSnapshot {
    /// Records delivered (acknowledged by the destination).
    pub delivered: u64,
    /// Batches delivered.
    pub batches: u64,
    /// Failed delivery or checkpoint attempts.
    pub errors: u64,
    /// `requery_required` records delivered.
    pub requeries: u64,
    /// Whether the sink is waiting to retry a failed delivery.
    pub retrying: bool,
    /// Whether the sink stopped on a fatal error.
    pub failed: bool,
    /// The sink's checkpoint.
    pub checkpoint_lsn: u64,
    /// The log's committed lsn, as last seen by the sink.
    pub committed_lsn: u64,
    /// `committed_lsn - checkpoint_lsn`.
    pub lag_events: u64,
    /// Commit time of the last committed transaction minus that of the
    /// record at the checkpoint, µs (0 when caught up or unknown).
    pub lag_micros: i64,
    /// The last error, if any.
    pub last_error: Option<String>,
}

impl SinkStatus {
    /// Records delivered.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
    /// Failed attempts.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
    /// `requery_required` records delivered.
    pub fn requeries(&self) -> u64 {
        self.requeries.load(Ordering::Relaxed)
    }
    /// Waiting to retry.
    pub fn retrying(&self) -> bool {
        self.retrying.load(Ordering::Relaxed)
    }
    /// Stopped on a fatal error.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }
    /// The sink's checkpoint.
    pub fn checkpoint_lsn(&self) -> u64 {
        self.checkpoint_lsn.load(Ordering::Acquire)
    }
    /// Tells the status where the log's head is now (the sink itself only
    /// looks between batches, so a sink retrying one delivery for minutes
    /// would report the lag it had when the outage began). Never moves back.
    pub fn observe_head(&self, committed_lsn: u64, timestamp_us: Option<i64>) {
        self.committed_lsn
            .fetch_max(committed_lsn, Ordering::Relaxed);
        if let Some(ts) = timestamp_us {
            self.committed_timestamp_us.fetch_max(ts, Ordering::Relaxed);
        }
    }
    /// Events committed to the log but not yet past the checkpoint.
    pub fn lag_events(&self) -> u64 {
        self.committed_lsn
            .load(Ordering::Relaxed)
            .saturating_sub(self.checkpoint_lsn())
    }
    /// How far behind in commit time, µs: the last committed
    /// transaction's timestamp minus the checkpoint record's (0 when caught
    /// up or before anything was delivered).
    pub fn lag_micros(&self) -> i64 {
        let at = self.checkpoint_timestamp_us.load(Ordering::Relaxed);
        let head = self.committed_timestamp_us.load(Ordering::Relaxed);
        if self.lag_events() == 0 || at == 0 || head == 0 {
            0
        } else {
            head.saturating_sub(at).max(0)
        }
    }
    /// The last error.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().map(|e| e.clone()).unwrap_or(None)
    }
    /// A consistent-enough copy of everything.
    pub fn snapshot(&self) -> SinkStatusSnapshot {
        SinkStatusSnapshot {
            delivered: self.delivered(),
            batches: self.batches.load(Ordering::Relaxed),
            errors: self.errors(),
            requeries: self.requeries(),
            retrying: self.retrying(),
            failed: self.failed(),
            checkpoint_lsn: self.checkpoint_lsn(),
            committed_lsn: self.committed_lsn.load(Ordering::Relaxed),
            lag_events: self.lag_events(),
            lag_micros: self.lag_micros(),
            last_error: self.last_error(),
        }
    }

    pub(crate) fn record_error(&self, msg: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(msg.to_owned());
        }
    }
}
