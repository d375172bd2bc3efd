//! The conformance suite: the sink contract (crate docs) as one test that
//! every sink's tests run, against the real destination.
//!
//! ```ignore
//! conformance::run_conformance(|| make_sink(), || read_back(), None).await;
//! ```
//!
//! It builds a real change log in a temporary directory ([`TestLog`]) with
//! change events of several entities (inserts, updates, deletes),
//! `schema_change` and `message` events, and checks, in order:
//!
//! * **(a) delivery** — everything appended is delivered, ids intact, in log
//!   order per key, and the checkpoint reaches the committed lsn;
//! * **(b) restart** — a sink killed between the destination's ack and the
//!   checkpoint write (the task is aborted, like `kill -9`), then a new sink
//!   instance on the same log: no gap, duplicates only after the checkpoint
//!   at the kill and with the same ids; then a clean stop/start;
//! * **(c) failed deliveries** — a wrapper makes `deliver` fail transiently
//!   3 times: the checkpoint does not move meanwhile, the status shows
//!   retrying, errors and the last error, then everything arrives;
//! * **(d) outage** — if the caller gives an [`Outage`], the destination is
//!   made unavailable while events are appended: the sink retries, the
//!   checkpoint stays, and once the outage ends everything is delivered.
//!
//! `read_back` must return everything the destination holds, in the order
//! it holds it, as native JSON events (at least `id`, `lsn`, `entity`,
//! `entity_id`): run the suite with the native format.
//!
//! The suite panics on a violation (it is a test).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use spillway_log::{AppendRecord, ChangeLog, LogOptions, LogWriter};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{run_sink, Sink, SinkError, SinkRecord, SinkSettings, SinkStatus};

/// The name of the sink (and checkpoint) the suite uses.
pub const SINK_NAME: &str = "conformance";

/// An event the test log holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Its lsn.
    pub lsn: u64,
    /// Its id.
    pub id: String,
    /// Its ordering key (`entity` + `entity_id`).
    pub key: String,
    /// The native JSON event.
    pub event: Value,
}

/// A real change log in a temporary directory, fed with generated native
/// events. Removed on drop.
pub struct TestLog {
    /// The log.
    pub log: ChangeLog,
    writer: Option<LogWriter>,
    dir: PathBuf,
    /// Everything appended, in lsn order.
    pub appended: Vec<Appended>,
    /// Per-key row versions, to pick insert/update/delete.
    versions: HashMap<String, u64>,
    tx: u64,
}

static DIR_SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh, unique temporary directory (the caller removes it).
pub fn temp_dir(prefix: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        DIR_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    dir
}

/// The ordering key of a native event: entity plus the `entity_id` JSON.
pub fn event_key(event: &Value) -> String {
    match event.get("type").and_then(Value::as_str) {
        Some("message") => "message".into(),
        _ => format!(
            "{}|{}",
            event.get("entity").and_then(Value::as_str).unwrap_or(""),
            event.get("entity_id").unwrap_or(&Value::Null)
        ),
    }
}

const ENTITIES: [(&str, &str); 3] = [
    ("public", "accounts"),
    ("public", "orders"),
    ("audit", "events"),
];

impl TestLog {
    /// A new log with default options.
    pub fn new() -> TestLog {
        TestLog::with_segment_bytes(spillway_log::DEFAULT_SEGMENT_BYTES)
    }

    /// A new log with small segments (for retention tests).
    pub fn with_segment_bytes(segment_bytes: u64) -> TestLog {
        let dir = temp_dir("spillway-sinks-log");
        let mut opts = LogOptions::new(dir.join("log"));
        opts.segment_bytes = segment_bytes;
        let (log, writer) = ChangeLog::open(opts).expect("open the test change log");
        TestLog {
            log,
            writer: Some(writer),
            dir,
            appended: Vec::new(),
            versions: HashMap::new(),
            tx: 0,
        }
    }

    /// The temporary directory (destinations may put files under it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends `n` generated change events over three entities and four
    /// keys each (insert, then updates, every fourth version a delete), in
    /// transactions of up to three, and waits until they are committed.
    pub async fn append_changes(&mut self, n: usize) {
        let mut events = Vec::with_capacity(n);
        for i in 0..n {
            let (schema, table) = ENTITIES[i % ENTITIES.len()];
            let row = (self.appended.len() + i) / 3 % 4;
            let key = format!("{schema}.{table}|{row}");
            let version = self.versions.entry(key).or_insert(0);
            let op = match *version % 4 {
                0 => "insert",
                3 => "delete",
                _ => "update",
            };
            *version += 1;
            let v = *version;
            let row_data =
                json!({"id": row, "version": v, "note": format!("{table} row {row} v{v}")});
            let (old, new) = match op {
                "insert" => (Value::Null, row_data),
                "delete" => (json!({"id": row}), Value::Null),
                _ => (json!({"id": row, "version": v - 1}), row_data),
            };
            events.push(json!({
                "type": "change", "operation": op,
                "entity": format!("{schema}.{table}"), "schema": schema, "table": table,
                "entity_id": {"id": row}, "old_data": old, "new_data": new,
            }));
        }
        self.append_events(events).await;
    }

    /// Appends a `schema_change` for every entity and one `message`.
    pub async fn append_control_events(&mut self) {
        let mut events: Vec<Value> = ENTITIES
            .iter()
            .map(|(schema, table)| {
                json!({
                    "type": "schema_change", "entity": format!("{schema}.{table}"),
                    "schema": schema, "table": table, "replica_identity": "default",
                    "columns": [{"name": "id", "type": "int4", "key": true}],
                })
            })
            .collect();
        events.push(
            json!({"type": "message", "transactional": true, "prefix": "app", "content": "hello"}),
        );
        self.append_events(events).await;
    }

    /// Appends events (objects without `lsn`, `id`, `timestamp`, `tx`,
    /// `source`, which are filled in), in transactions of up to three, and
    /// waits until they are committed.
    pub async fn append_events(&mut self, events: Vec<Value>) {
        let writer = self.writer.as_mut().expect("the test log's writer is open");
        let count = events.len();
        for (i, mut event) in events.into_iter().enumerate() {
            let lsn = writer.next_lsn();
            if i % 3 == 0 {
                self.tx += 1;
            }
            let index = i % 3 + 1;
            let commit_lsn = format!("0/{:X}", 0x16B_0000 + self.tx * 0x100);
            let id = format!("{commit_lsn}:{index}");
            let ts = 1_763_683_200_000_000 + lsn as i64;
            if let Some(obj) = event.as_object_mut() {
                obj.insert("lsn".into(), json!(lsn));
                obj.insert("id".into(), json!(id));
                obj.insert("timestamp".into(), json!(ts));
                obj.insert(
                    "tx".into(),
                    json!({"xid": 700 + self.tx, "commit_lsn": commit_lsn, "index": index}),
                );
                obj.insert(
                    "source".into(),
                    json!({"db": "shop", "pg_lsn": format!("0/{:X}", 0x16B_0000 + lsn * 0x10)}),
                );
            }
            let tx_end = i % 3 == 2 || i + 1 == count;
            writer
                .append(AppendRecord {
                    lsn,
                    timestamp_us: ts,
                    tx_end,
                    pg_commit_lsn: 0x16B_0000 + self.tx * 0x100,
                    pg_end_lsn: 0x16B_0000 + self.tx * 0x100 + 8,
                    payload: serde_json::to_vec(&event).expect("serialize a test event"),
                })
                .await
                .expect("append to the test log");
            self.appended.push(Appended {
                lsn,
                id,
                key: event_key(&event),
                event,
            });
        }
        writer.flush().await.expect("flush the test log");
    }

    /// The checkpoint of the sink `name` (0 if none).
    pub fn checkpoint(&self, name: &str) -> u64 {
        self.log
            .checkpoints()
            .get(&crate::checkpoint_name(name))
            .expect("read a checkpoint")
            .map_or(0, |c| c.lsn)
    }
}

impl Default for TestLog {
    fn default() -> Self {
        TestLog::new()
    }
}

impl Drop for TestLog {
    fn drop(&mut self) {
        drop(self.writer.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A sink running in a task.
pub struct Running {
    /// The task; its result is [`run_sink`]'s.
    pub handle: JoinHandle<Result<(), SinkError>>,
    /// The sink's status.
    pub status: Arc<SinkStatus>,
    stop: watch::Sender<bool>,
}

impl Running {
    /// Starts `sink` under [`run_sink`].
    pub fn start<S: Sink + 'static>(log: &ChangeLog, settings: SinkSettings, sink: S) -> Running {
        let status = Arc::new(SinkStatus::default());
        Running::start_with_status(log, settings, sink, status)
    }

    /// Starts `sink` with a given status.
    pub fn start_with_status<S: Sink + 'static>(
        log: &ChangeLog,
        settings: SinkSettings,
        sink: S,
        status: Arc<SinkStatus>,
    ) -> Running {
        let (stop, rx) = watch::channel(false);
        let handle = tokio::spawn(run_sink(log.clone(), settings, sink, status.clone(), rx));
        Running {
            handle,
            status,
            stop,
        }
    }

    /// Signals shutdown and waits for the task.
    pub async fn stop(self) -> Result<(), SinkError> {
        let _ = self.stop.send(true);
        self.handle.await.expect("the sink task panicked")
    }

    /// Aborts the task (like `kill -9`: nothing after this point runs).
    pub async fn kill(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }
}

/// Polls `cond` every 5 ms for up to 30 s; panics with `what` otherwise.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Settings the suite uses: small batches, fast retries.
pub fn test_settings(name: &str) -> SinkSettings {
    let mut s = SinkSettings::new(name);
    s.batch_size = 7;
    s.batch_timeout = Duration::from_millis(10);
    s.retry_initial = Duration::from_millis(10);
    s.retry_max = Duration::from_millis(40);
    s
}

/// Makes a destination unavailable and available again.
pub trait Outage: Sync {
    /// The destination becomes unreachable (deliveries must fail
    /// transiently).
    fn begin(&self);
    /// The destination is back.
    fn end(&self);
}

/// Checks `delivered` against the appended events: every id present; each
/// delivered event's id is the id of its lsn; an id appears twice or more
/// only if its lsn is in one of `dup_ok` (inclusive ranges); per key, the
/// first deliveries follow log order.
pub fn check_delivery(appended: &[Appended], delivered: &[Value], dup_ok: &[(u64, u64)]) {
    let by_lsn: BTreeMap<u64, &Appended> = appended.iter().map(|a| (a.lsn, a)).collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let mut last_per_key: HashMap<String, u64> = HashMap::new();
    for event in delivered {
        let lsn = event
            .get("lsn")
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("delivered event without lsn: {event}"));
        let id = event.get("id").and_then(Value::as_str).unwrap_or("");
        let expected = by_lsn
            .get(&lsn)
            .unwrap_or_else(|| panic!("delivered an event that was never appended: {event}"));
        assert_eq!(
            id, expected.id,
            "event at lsn {lsn} delivered with a different id"
        );
        let count = counts.entry(expected.id.as_str()).or_insert(0);
        *count += 1;
        if *count > 1 {
            assert!(
                dup_ok.iter().any(|&(lo, hi)| (lo..=hi).contains(&lsn)),
                "lsn {lsn} delivered {count} times, outside the replay windows {dup_ok:?}"
            );
            continue;
        }
        let key = event_key(event);
        assert_eq!(key, expected.key, "event at lsn {lsn} has a different key");
        if let Some(prev) = last_per_key.insert(key.clone(), lsn) {
            assert!(
                prev < lsn,
                "key {key}: lsn {lsn} delivered after lsn {prev} (log order broken)"
            );
        }
    }
    for a in appended {
        assert!(
            counts.contains_key(a.id.as_str()),
            "lsn {} (id {}) was never delivered: a gap",
            a.lsn,
            a.id
        );
    }
}

/// Wraps a sink: after `stall_after` successful deliveries it delivers the
/// next batch to the destination and then never returns (so the checkpoint
/// is not written), and raises `stalled`.
struct StallAfter<S> {
    inner: S,
    stall_after: usize,
    done: usize,
    stalled: Arc<AtomicBool>,
}

impl<S: Sink> Sink for StallAfter<S> {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn deliver(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
        self.inner.deliver(batch).await?;
        self.done += 1;
        if self.done > self.stall_after {
            self.stalled.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        self.inner.close().await
    }
}

/// Wraps a sink: the first `fail` deliveries fail transiently without
/// reaching the destination; each failing call records the checkpoint it
/// sees.
pub struct FailFirst<S> {
    inner: S,
    fail: Arc<AtomicUsize>,
    log: ChangeLog,
    name: String,
    /// Checkpoints observed during the failing calls.
    pub seen: Arc<std::sync::Mutex<Vec<u64>>>,
}

impl<S: Sink> FailFirst<S> {
    /// Fails the first `fail` deliveries of `inner`.
    pub fn new(inner: S, fail: usize, log: &ChangeLog, name: &str) -> FailFirst<S> {
        FailFirst {
            inner,
            fail: Arc::new(AtomicUsize::new(fail)),
            log: log.clone(),
            name: name.to_owned(),
            seen: Arc::default(),
        }
    }

    /// Failures still to come.
    pub fn remaining(&self) -> Arc<AtomicUsize> {
        self.fail.clone()
    }
}

impl<S: Sink> Sink for FailFirst<S> {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn deliver(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
        let left = self.fail.load(Ordering::SeqCst);
        if left > 0 {
            self.fail.store(left - 1, Ordering::SeqCst);
            let cp = self
                .log
                .checkpoints()
                .get(&crate::checkpoint_name(&self.name))
                .ok()
                .flatten()
                .map_or(0, |c| c.lsn);
            if let Ok(mut seen) = self.seen.lock() {
                seen.push(cp);
            }
            return Err(SinkError::Transient(format!(
                "injected failure ({left} left)"
            )));
        }
        self.inner.deliver(batch).await
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        self.inner.close().await
    }
}

/// Runs the whole suite (see the module docs). `make_sink` makes a new
/// sink instance on the same destination each time it is called.
pub async fn run_conformance<S, F, R>(make_sink: F, read_back: R, outage: Option<&dyn Outage>)
where
    S: Sink + 'static,
    F: Fn() -> S,
    R: Fn() -> Vec<Value>,
{
    let mut t = TestLog::new();
    let settings = test_settings(SINK_NAME);
    let mut dup_ok: Vec<(u64, u64)> = Vec::new();

    // (a) Everything appended is delivered, in order per key.
    t.append_control_events().await;
    t.append_changes(60).await;
    let run = Running::start(&t.log, settings.clone(), make_sink());
    let committed = t.log.committed_lsn();
    wait_until("(a) the checkpoint reaches the committed lsn", || {
        run.status.checkpoint_lsn() == committed
    })
    .await;
    assert_eq!(run.status.lag_events(), 0, "(a) lag after catching up");
    assert_eq!(run.status.delivered(), committed, "(a) delivered count");
    run.stop().await.expect("(a) clean stop");
    assert_eq!(t.checkpoint(SINK_NAME), committed, "(a) durable checkpoint");
    check_delivery(&t.appended, &read_back(), &dup_ok);

    // (b) Killed between the destination's ack and the checkpoint write.
    t.append_changes(70).await;
    let stalled = Arc::new(AtomicBool::new(false));
    let sink = StallAfter {
        inner: make_sink(),
        stall_after: 3,
        done: 0,
        stalled: stalled.clone(),
    };
    let run = Running::start(&t.log, settings.clone(), sink);
    wait_until("(b) the sink delivered a few batches", || {
        stalled.load(Ordering::SeqCst)
    })
    .await;
    run.kill().await;
    let at_kill = t.checkpoint(SINK_NAME);
    assert!(
        at_kill < t.log.committed_lsn(),
        "(b) the kill happened before the end"
    );
    dup_ok.push((at_kill + 1, t.log.committed_lsn()));
    let run = Running::start(&t.log, settings.clone(), make_sink());
    let committed = t.log.committed_lsn();
    wait_until("(b) the restarted sink catches up", || {
        run.status.checkpoint_lsn() == committed
    })
    .await;
    // Clean stop and start in the middle of more events.
    t.append_changes(20).await;
    run.stop().await.expect("(b) clean stop");
    let run = Running::start(&t.log, settings.clone(), make_sink());
    t.append_changes(20).await;
    let committed = t.log.committed_lsn();
    wait_until("(b) the second restart catches up", || {
        run.status.checkpoint_lsn() == committed
    })
    .await;
    run.stop().await.expect("(b) clean stop");
    check_delivery(&t.appended, &read_back(), &dup_ok);

    // (c) Failed deliveries: the checkpoint waits, the status tells.
    let before = t.checkpoint(SINK_NAME);
    t.append_changes(25).await;
    let sink = FailFirst::new(make_sink(), 3, &t.log, SINK_NAME);
    let remaining = sink.remaining();
    let seen = sink.seen.clone();
    let run = Running::start(&t.log, settings.clone(), sink);
    wait_until("(c) the sink is retrying", || run.status.retrying()).await;
    assert_eq!(
        t.checkpoint(SINK_NAME),
        before,
        "(c) checkpoint moved during failures"
    );
    let committed = t.log.committed_lsn();
    wait_until("(c) the sink recovers and catches up", || {
        run.status.checkpoint_lsn() == committed
    })
    .await;
    assert_eq!(
        remaining.load(Ordering::SeqCst),
        0,
        "(c) all failures injected"
    );
    assert!(run.status.errors() >= 3, "(c) errors counted");
    assert!(
        run.status
            .last_error()
            .is_some_and(|e| e.contains("injected failure")),
        "(c) last error shown"
    );
    assert!(!run.status.retrying(), "(c) retrying cleared after success");
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(seen.len(), 3, "(c) three failing calls");
    assert!(
        seen.iter().all(|&cp| cp == before),
        "(c) the checkpoint moved while deliveries failed: {seen:?} (was {before})"
    );
    run.stop().await.expect("(c) clean stop");
    check_delivery(&t.appended, &read_back(), &dup_ok);

    // (d) Destination outage.
    if let Some(outage) = outage {
        let before = t.checkpoint(SINK_NAME);
        let run = Running::start(&t.log, settings.clone(), make_sink());
        outage.begin();
        t.append_changes(30).await;
        wait_until("(d) the sink notices the outage", || {
            run.status.retrying() && run.status.errors() >= 2
        })
        .await;
        let during = t.checkpoint(SINK_NAME);
        assert_eq!(during, before, "(d) checkpoint moved during the outage");
        dup_ok.push((before + 1, t.log.committed_lsn()));
        outage.end();
        let committed = t.log.committed_lsn();
        wait_until("(d) the sink catches up after the outage", || {
            run.status.checkpoint_lsn() == committed
        })
        .await;
        run.stop().await.expect("(d) clean stop");
        check_delivery(&t.appended, &read_back(), &dup_ok);
    }
}
