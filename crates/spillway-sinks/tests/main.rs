//! Tests of the sink runtime and the `file` sink.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use spillway_sinks::conformance::{
    self, check_delivery, test_settings, wait_until, FailFirst, Outage, Running, TestLog,
};
use spillway_sinks::file::{rotated_files, FileSink, FileSinkConfig};
use spillway_sinks::{DynSink, Sink, SinkError, SinkRecord};

/// Everything the file sink wrote under `path`: rotated files oldest first,
/// then the current file.
fn read_file_sink(path: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = rotated_files(path).into_iter().map(|(_, p)| p).collect();
    files.push(path.to_path_buf());
    let mut out = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        for line in text.lines() {
            out.push(serde_json::from_str(line).expect("every line is a whole JSON event"));
        }
    }
    out
}

/// A shared in-memory writer (stands in for stdout).
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("buffer lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedBuf {
    fn lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().expect("buffer lock").clone();
        String::from_utf8(bytes)
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }
}

/// A switch that makes a wrapped sink's destination unavailable.
#[derive(Clone, Default)]
struct Switch(Arc<AtomicBool>);

impl Outage for Switch {
    fn begin(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    fn end(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

struct Unplugged<S> {
    inner: S,
    down: Switch,
}

impl<S: Sink> Sink for Unplugged<S> {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn deliver(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
        if self.down.0.load(Ordering::SeqCst) {
            return Err(SinkError::Transient("destination unplugged".into()));
        }
        self.inner.deliver(batch).await
    }
}

fn file_config(path: &Path, max_bytes: Option<u64>) -> FileSinkConfig {
    FileSinkConfig {
        path: path.to_string_lossy().into_owned(),
        max_bytes,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sink_passes_conformance() {
    let dir = conformance::temp_dir("spillway-file-sink");
    let path = dir.join("out").join("events.jsonl");
    let config = file_config(&path, None);
    conformance::run_conformance(
        || FileSink::open(&config).expect("open the file sink"),
        || read_file_sink(&path),
        None,
    )
    .await;
    assert!(rotated_files(&path).is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_file_sink_passes_conformance_with_outage() {
    let dir = conformance::temp_dir("spillway-file-sink");
    let path = dir.join("events.jsonl");
    let config = file_config(&path, Some(3000));
    let switch = Switch::default();
    conformance::run_conformance(
        || Unplugged {
            inner: FileSink::open(&config).expect("open the file sink"),
            down: switch.clone(),
        },
        || read_file_sink(&path),
        Some(&switch),
    )
    .await;
    assert!(rotated_files(&path).len() > 3, "the files were rotated");
    let _ = std::fs::remove_dir_all(dir);
}

fn record(lsn: u64, len: usize) -> SinkRecord {
    let body = format!(r#"{{"lsn":{lsn},"pad":"{}"}}"#, "x".repeat(len));
    SinkRecord {
        lsn,
        id: format!("0/1:{lsn}"),
        entity: None,
        key: None,
        value: body.into_bytes(),
        timestamp_us: 0,
    }
}

#[tokio::test]
async fn rotation_by_size_keeps_lines_whole_and_continues_after_restart() {
    let dir = conformance::temp_dir("spillway-file-rotation");
    let path = dir.join("r.jsonl");
    let config = file_config(&path, Some(100));
    let mut sink = FileSink::open(&config).expect("open");
    // 40-byte lines (with the newline): two fit in 100 bytes.
    let small: Vec<SinkRecord> = (1..=5).map(|l| record(l, 21)).collect();
    assert_eq!(small[0].value.len() + 1, 40);
    sink.deliver(&small).await.expect("deliver");
    // Files: .1 = [1,2], .2 = [3,4], current = [5].
    let rotated = rotated_files(&path);
    assert_eq!(
        rotated.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        vec![1, 2]
    );
    for (_, f) in &rotated {
        let len = std::fs::metadata(f).expect("stat").len();
        assert_eq!(len, 80, "{}", f.display());
    }
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), 40);
    drop(sink);

    // A restart continues the numbering; an oversized line gets its own file.
    let mut sink = FileSink::open(&config).expect("reopen");
    sink.deliver(&[record(6, 200), record(7, 10)])
        .await
        .expect("deliver");
    let numbers: Vec<u64> = rotated_files(&path).iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, vec![1, 2, 3, 4]);
    let lsns: Vec<u64> = read_file_sink(&path)
        .iter()
        .map(|v| v["lsn"].as_u64().expect("lsn"))
        .collect();
    assert_eq!(lsns, vec![1, 2, 3, 4, 5, 6, 7]);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn torn_last_line_is_removed_on_open() {
    let dir = conformance::temp_dir("spillway-file-torn");
    let path = dir.join("t.jsonl");
    std::fs::write(&path, b"{\"lsn\":1}\n{\"lsn\":2}\n{\"lsn\":3,\"tr").expect("write");
    let mut sink = FileSink::open(&file_config(&path, None)).expect("open");
    sink.deliver(&[record(3, 1)]).await.expect("deliver");
    let lsns: Vec<u64> = read_file_sink(&path)
        .iter()
        .map(|v| v["lsn"].as_u64().expect("lsn"))
        .collect();
    assert_eq!(lsns, vec![1, 2, 3]);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn writer_mode_writes_one_line_per_event() {
    let buf = SharedBuf::default();
    let mut sink = FileSink::with_writer(Box::new(buf.clone()));
    sink.deliver(&[record(1, 3), record(2, 3)])
        .await
        .expect("deliver");
    sink.deliver(&[record(3, 3)]).await.expect("deliver");
    let lsns: Vec<u64> = buf
        .lines()
        .iter()
        .map(|v| v["lsn"].as_u64().expect("lsn"))
        .collect();
    assert_eq!(lsns, vec![1, 2, 3]);

    let stdout = FileSinkConfig {
        path: "-".into(),
        max_bytes: None,
    };
    assert!(stdout.is_stdout());
    FileSink::open(&stdout).expect("stdout sink opens");
}

#[test]
fn config_rejects_unknown_fields() {
    let ok: FileSinkConfig =
        serde_json::from_str(r#"{"path":"/tmp/x.jsonl","max_bytes":1024}"#).expect("valid");
    assert_eq!(ok.max_bytes, Some(1024));
    let err = serde_json::from_str::<FileSinkConfig>(r#"{"path":"x","max_size":1}"#)
        .expect_err("unknown field");
    assert!(err.to_string().contains("max_size"), "{err}");
}

/// Runs a writer-mode sink over `t` with `settings` until caught up.
async fn run_to_end(t: &TestLog, settings: spillway_sinks::SinkSettings) -> (Vec<Value>, u64) {
    let buf = SharedBuf::default();
    // Through the object-safe form, as the server holds sinks.
    let sink: Box<dyn DynSink> = Box::new(FileSink::with_writer(Box::new(buf.clone())));
    let run = Running::start(&t.log, settings, sink);
    let committed = t.log.committed_lsn();
    wait_until("the sink catches up", || {
        run.status.checkpoint_lsn() == committed
    })
    .await;
    let lag = run.status.lag_events();
    run.stop().await.expect("clean stop");
    (buf.lines(), lag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_select_tables_and_operations_and_still_advance_the_checkpoint() {
    let mut t = TestLog::new();
    t.append_control_events().await;
    t.append_changes(90).await;

    // Reference 001 style: per-table operations, a schema.* pattern.
    let mut settings = test_settings("filtered");
    let mut tables = BTreeMap::new();
    tables.insert(
        "orders".to_string(),
        vec!["insert".to_string(), "update".to_string()],
    );
    tables.insert("audit.*".to_string(), vec![]);
    settings.tables = Some(tables);
    let (got, lag) = run_to_end(&t, settings).await;
    assert_eq!(lag, 0);
    let expected: Vec<u64> = t
        .appended
        .iter()
        .filter(|a| {
            let e = &a.event;
            let entity = e["entity"].as_str().unwrap_or("");
            match e["type"].as_str() {
                Some("change") => {
                    (entity == "public.orders"
                        && matches!(e["operation"].as_str(), Some("insert" | "update")))
                        || entity == "audit.events"
                }
                Some("schema_change") => entity == "public.orders" || entity == "audit.events",
                _ => false,
            }
        })
        .map(|a| a.lsn)
        .collect();
    let lsns: Vec<u64> = got
        .iter()
        .map(|v| v["lsn"].as_u64().expect("lsn"))
        .collect();
    assert_eq!(lsns, expected);
    assert_eq!(t.checkpoint("filtered"), t.log.committed_lsn());

    // Global operations filter: only deletes (control events pass without
    // a tables filter).
    let mut settings = test_settings("deletes");
    settings.operations = Some(vec!["delete".into()]);
    let (got, _) = run_to_end(&t, settings).await;
    let deletes = got
        .iter()
        .filter(|v| v["type"] == "change")
        .inspect(|v| assert_eq!(v["operation"], "delete"))
        .count();
    assert_eq!(
        deletes,
        t.appended
            .iter()
            .filter(|a| a.event["operation"] == "delete")
            .count()
    );
    assert!(deletes > 0);

    // A bad operation name is a fatal configuration error.
    let mut settings = test_settings("bad");
    settings.operations = Some(vec!["upsert".into()]);
    let run = Running::start(
        &t.log,
        settings,
        FileSink::with_writer(Box::new(SharedBuf::default())),
    );
    let err = run.handle.await.expect("task").expect_err("fatal");
    assert!(err.to_string().contains("upsert"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_and_shown_in_status() {
    let mut t = TestLog::new();
    t.append_changes(20).await;
    let committed_before_start = t.log.committed_lsn();
    let buf = SharedBuf::default();
    let sink = FailFirst::new(
        FileSink::with_writer(Box::new(buf.clone())),
        4,
        &t.log,
        "flaky",
    );
    let seen = sink.seen.clone();
    let run = Running::start(&t.log, test_settings("flaky"), sink);
    wait_until("retrying shows", || run.status.retrying()).await;
    let snap = run.status.snapshot();
    assert_eq!(snap.lag_events, committed_before_start);
    assert_eq!(
        snap.lag_micros, 0,
        "nothing delivered yet: lag time unknown"
    );
    assert!(snap.errors >= 1 && snap.retrying && snap.last_error.is_some());
    assert_eq!(snap.checkpoint_lsn, 0);
    let committed = t.log.committed_lsn();
    wait_until("caught up", || run.status.checkpoint_lsn() == committed).await;
    let snap = run.status.snapshot();
    assert_eq!((snap.errors, snap.retrying, snap.lag_events), (4, false, 0));
    assert_eq!(*seen.lock().expect("lock"), vec![0, 0, 0, 0]);
    run.stop().await.expect("stop");
    check_delivery(&t.appended, &buf.lines(), &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_errors_stop_the_sink_and_are_reported() {
    struct Broken;
    impl Sink for Broken {
        fn kind(&self) -> &'static str {
            "broken"
        }
        async fn deliver(&mut self, _: &[SinkRecord]) -> Result<(), SinkError> {
            Err(SinkError::Fatal("message too large for the topic".into()))
        }
    }
    let mut t = TestLog::new();
    t.append_changes(5).await;
    let run = Running::start(&t.log, test_settings("broken"), Broken);
    let status = run.status.clone();
    let err = run.handle.await.expect("task").expect_err("fatal");
    assert_eq!(
        err,
        SinkError::Fatal("message too large for the topic".into())
    );
    assert!(status.failed());
    assert_eq!(status.checkpoint_lsn(), 0);
    assert_eq!(t.checkpoint("broken"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimmed_position_delivers_requery_required_then_continues() {
    let mut t = TestLog::with_segment_bytes(512);
    t.append_changes(60).await;
    t.log
        .checkpoints()
        .set(&spillway_sinks::checkpoint_name("late"), 2, false)
        .expect("set checkpoint");
    let report = t.log.trim_before(40).expect("trim");
    let oldest = report.oldest_lsn;
    assert!(oldest > 3, "segments were trimmed (oldest {oldest})");

    let (got, lag) = run_to_end(&t, test_settings("late")).await;
    assert_eq!(lag, 0);
    let first = got.first().expect("something delivered");
    assert_eq!(first["type"], "requery_required");
    assert_eq!(first["requested_lsn"], 3);
    assert_eq!(first["oldest_lsn"], oldest);
    assert_eq!(first["id"], format!("requery:3:{oldest}"));
    let lsns: Vec<u64> = got[1..]
        .iter()
        .map(|v| v["lsn"].as_u64().expect("lsn"))
        .collect();
    let expected: Vec<u64> = (oldest..=t.log.committed_lsn()).collect();
    assert_eq!(lsns, expected);
    assert_eq!(t.checkpoint("late"), t.log.committed_lsn());

    // A new sink (no checkpoint) on a trimmed log is told as well.
    let (got, _) = run_to_end(&t, test_settings("newcomer")).await;
    assert_eq!(got[0]["type"], "requery_required");
    assert_eq!(got[0]["requested_lsn"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_setting_encodes_events_and_keeps_ids() {
    let mut t = TestLog::new();
    t.append_control_events().await;
    t.append_changes(12).await;
    let changes: Vec<&conformance::Appended> = t
        .appended
        .iter()
        .filter(|a| a.event["type"] == "change")
        .collect();

    // flat (reference 001): one line per change, control events not carried.
    let mut settings = test_settings("flat");
    settings.format = "flat".parse().expect("format");
    let (got, lag) = run_to_end(&t, settings).await;
    assert_eq!(
        lag, 0,
        "events the format drops still advance the checkpoint"
    );
    assert_eq!(got.len(), changes.len());
    for (line, a) in got.iter().zip(&changes) {
        assert_eq!(line["Table"], a.event["table"], "{line}");
        assert!(line.get("ID").is_some(), "{line}");
    }

    // The sink record carries the native id and key whatever the format.
    struct Capture(Arc<Mutex<Vec<SinkRecord>>>);
    impl Sink for Capture {
        fn kind(&self) -> &'static str {
            "capture"
        }
        async fn deliver(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
            self.0.lock().expect("lock").extend_from_slice(batch);
            Ok(())
        }
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut settings = test_settings("document");
    settings.format = "document".parse().expect("format");
    let run = Running::start(&t.log, settings, Capture(seen.clone()));
    let committed = t.log.committed_lsn();
    wait_until("caught up", || run.status.checkpoint_lsn() == committed).await;
    run.stop().await.expect("stop");
    let records = seen.lock().expect("lock").clone();
    assert_eq!(records.len(), changes.len());
    for (r, a) in records.iter().zip(&changes) {
        assert_eq!((r.lsn, r.id.as_str()), (a.lsn, a.id.as_str()));
        let key: Value =
            serde_json::from_slice(r.key.as_deref().expect("a key")).expect("json key");
        assert_eq!(key, a.event["entity_id"]);
        let doc: Value = serde_json::from_slice(&r.value).expect("json");
        assert_eq!(doc["type"], "documentChanged", "{doc}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_without_requery_required_stops_instead_of_skipping() {
    let mut t = TestLog::with_segment_bytes(512);
    t.append_changes(60).await;
    t.log
        .checkpoints()
        .set(&spillway_sinks::checkpoint_name("flat"), 2, false)
        .expect("set checkpoint");
    t.log.trim_before(40).expect("trim");
    let mut settings = test_settings("flat");
    settings.format = "flat".parse().expect("format");
    let run = Running::start(
        &t.log,
        settings,
        FileSink::with_writer(Box::new(SharedBuf::default())),
    );
    let err = run.handle.await.expect("task").expect_err("fatal");
    let msg = err.to_string();
    assert!(
        msg.contains("re-snapshot") && msg.contains("requery_required"),
        "{msg}"
    );
    assert_eq!(
        t.checkpoint("flat"),
        2,
        "the checkpoint never jumps the gap"
    );
}

/// Records every delivered batch's lsns.
struct Batches(Arc<Mutex<Vec<Vec<u64>>>>);

impl Sink for Batches {
    fn kind(&self) -> &'static str {
        "batches"
    }
    async fn deliver(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
        self.0
            .lock()
            .expect("lock")
            .push(batch.iter().map(|r| r.lsn).collect());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_transactions_cut_batches_between_transactions() {
    let mut t = TestLog::new();
    // Transactions of three events (the test log's shape), 30 events.
    t.append_changes(30).await;
    let tx_of: std::collections::HashMap<u64, String> = t
        .appended
        .iter()
        .map(|a| {
            (
                a.lsn,
                a.event["tx"]["commit_lsn"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect();
    let mut settings = conformance::test_settings("tx");
    settings.batch_size = 4;
    settings.whole_transactions = true;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let run = Running::start(&t.log, settings, Batches(seen.clone()));
    let committed = t.log.committed_lsn();
    wait_until("caught up", || run.status.checkpoint_lsn() == committed).await;
    run.stop().await.expect("stop");
    let batches = seen.lock().expect("lock").clone();
    let all: Vec<u64> = batches.iter().flatten().copied().collect();
    assert_eq!(
        all,
        (1..=30).collect::<Vec<_>>(),
        "everything, in order, once"
    );
    for b in &batches {
        let first = &tx_of[&b[0]];
        let last = &tx_of[&b[b.len() - 1]];
        // No transaction is split across batches: the batch's first record
        // starts its transaction and its last record ends one.
        assert!(
            b[0] == 1 || tx_of[&(b[0] - 1)] != *first,
            "batch {b:?} starts mid-transaction"
        );
        let end = b[b.len() - 1];
        assert!(
            end == 30 || tx_of[&(end + 1)] != *last,
            "batch {b:?} ends mid-transaction"
        );
    }
    assert!(
        batches.len() >= 10,
        "batches of at most 4 hold one transaction each: {batches:?}"
    );
}

/// Fails while `down` is set; records what it accepted.
struct Flaky {
    down: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Vec<u64>>>>,
}

impl Sink for Flaky {
    fn kind(&self) -> &'static str {
        "flaky"
    }
    async fn deliver(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(SinkError::Transient("down".into()));
        }
        self.seen
            .lock()
            .expect("lock")
            .push(batch.iter().map(|r| r.lsn).collect());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_retrying_a_cut_batch_never_checkpoints_undelivered_records() {
    for round in 0..5 {
        let mut t = TestLog::new();
        t.append_changes(30).await;
        let mut settings = conformance::test_settings("flaky");
        settings.batch_size = 4;
        settings.whole_transactions = true;
        let down = Arc::new(AtomicBool::new(true));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let run = Running::start(
            &t.log,
            settings,
            Flaky {
                down: down.clone(),
                seen: seen.clone(),
            },
        );
        wait_until("retrying", || run.status.retrying()).await;
        // The destination comes back as the shutdown arrives: the runtime's
        // last attempt may or may not succeed, but the checkpoint must never
        // pass what was delivered.
        down.store(false, Ordering::SeqCst);
        run.stop().await.expect("stop");
        let checkpoint = t.checkpoint("flaky");
        let delivered: std::collections::BTreeSet<u64> = seen
            .lock()
            .expect("lock")
            .iter()
            .flatten()
            .copied()
            .collect();
        for lsn in 1..=checkpoint {
            assert!(
                delivered.contains(&lsn),
                "round {round}: checkpoint {checkpoint} passed undelivered lsn {lsn} (delivered {delivered:?})"
            );
        }
    }
}

/// Issue 8.8: an operator's forced rewind of a running (idle) sink takes
/// effect — the sink redelivers from there — instead of being overwritten
/// by the sink's own next checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_rewind_of_a_running_sink_takes_effect() {
    let mut t = TestLog::new();
    t.append_changes(40).await;
    let buf = SharedBuf::default();
    let sink: Box<dyn DynSink> = Box::new(FileSink::with_writer(Box::new(buf.clone())));
    let run = Running::start(&t.log, test_settings("rewound"), sink);
    let committed = t.log.committed_lsn();
    wait_until("the sink catches up", || {
        run.status.checkpoint_lsn() == committed
    })
    .await;
    let first_pass = buf.lines().len();
    t.log
        .checkpoints()
        .set(&spillway_sinks::checkpoint_name("rewound"), 10, true)
        .expect("operator rewind");
    // The sink redelivers 11.. and checkpoints the end again.
    wait_until("the sink redelivers from the rewind", || {
        buf.lines().iter().skip(first_pass).any(|v| v["lsn"] == 11)
            && run.status.checkpoint_lsn() == committed
    })
    .await;
    let again: Vec<u64> = buf.lines()[first_pass..]
        .iter()
        .map(|v| v["lsn"].as_u64().expect("lsn"))
        .collect();
    assert_eq!(again, (11..=committed).collect::<Vec<_>>());
    assert_eq!(t.checkpoint("rewound"), committed);
    run.stop().await.expect("clean stop");
}

/// Holds its first delivery until released; records every batch.
struct Gate {
    entered: Arc<AtomicBool>,
    release: Arc<tokio::sync::Semaphore>,
    first: bool,
    seen: Arc<Mutex<Vec<u64>>>,
}

impl Sink for Gate {
    fn kind(&self) -> &'static str {
        "gate"
    }
    async fn deliver(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
        if std::mem::take(&mut self.first) {
            self.entered.store(true, Ordering::SeqCst);
            self.release.acquire().await.expect("semaphore").forget();
        }
        self.seen
            .lock()
            .expect("lock")
            .extend(batch.iter().map(|r| r.lsn));
        Ok(())
    }
}

/// Starts a sink whose first batch is in flight (held by the destination),
/// lets `operator` change its checkpoint meanwhile, releases the batch and
/// returns what was delivered once the sink has checkpointed the log's end.
async fn change_checkpoint_while_a_batch_is_in_flight(
    name: &str,
    start_at: u64,
    operator: impl FnOnce(&spillway_log::CheckpointStore, &str),
) -> (Vec<u64>, u64) {
    let mut t = TestLog::new();
    t.append_changes(40).await;
    let committed = t.log.committed_lsn();
    let entered = Arc::new(AtomicBool::new(false));
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut settings = test_settings(name);
    settings.batch_size = 1000;
    if start_at > 0 {
        t.log
            .checkpoints()
            .set(&spillway_sinks::checkpoint_name(name), start_at, false)
            .expect("set");
    }
    let run = Running::start(
        &t.log,
        settings,
        Gate {
            entered: entered.clone(),
            release: release.clone(),
            first: true,
            seen: seen.clone(),
        },
    );
    wait_until("the first batch is in flight", || {
        entered.load(Ordering::SeqCst)
    })
    .await;
    operator(t.log.checkpoints(), &spillway_sinks::checkpoint_name(name));
    release.add_permits(1);
    wait_until("the sink checkpoints the end", || {
        t.log
            .checkpoints()
            .get(&spillway_sinks::checkpoint_name(name))
            .expect("get")
            .is_some_and(|c| c.lsn == committed)
            && run.status.checkpoint_lsn() == committed
    })
    .await;
    run.stop().await.expect("clean stop");
    let seen = seen.lock().expect("lock").clone();
    (seen, committed)
}

/// Issue 8.8: a rewind made while the sink's batch is in flight wins over
/// the sink's own checkpoint of that batch (the CheckpointMoved path): the
/// sink redelivers from the rewind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewind_while_a_batch_is_in_flight_wins() {
    let (seen, committed) =
        change_checkpoint_while_a_batch_is_in_flight("inflight", 0, |cps, name| {
            cps.set(name, 10, true).expect("operator rewind");
        })
        .await;
    let first: Vec<u64> = (1..=committed).collect();
    let again: Vec<u64> = (11..=committed).collect();
    assert_eq!(seen, [first, again].concat());
}

/// A sink's checkpoint deleted under it while a batch is in flight (found by
/// review: the sink was then told "moved" on every store, forever): it
/// starts over from the beginning and holds a checkpoint again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_deleted_under_a_running_sink_is_recreated() {
    let (seen, committed) =
        change_checkpoint_while_a_batch_is_in_flight("deleted", 5, |cps, name| {
            assert!(cps.delete(name).expect("delete"));
        })
        .await;
    let first: Vec<u64> = (6..=committed).collect();
    let over: Vec<u64> = (1..=committed).collect();
    assert_eq!(seen, [first, over].concat());
}

/// Issue 8.8: sinks and API consumers do not share checkpoint names.
#[test]
fn sink_checkpoints_have_their_own_namespace() {
    let name = spillway_sinks::checkpoint_name("search");
    assert_ne!(name, "search");
    // API consumer names are letters, digits, `_`, `-`, `.` only.
    assert!(name.contains(':'));
}

/// A sink that never gets through (its destination down since its start).
struct NeverUp;

impl Sink for NeverUp {
    fn kind(&self) -> &'static str {
        "never-up"
    }
    async fn deliver(&mut self, _batch: &[SinkRecord]) -> Result<(), SinkError> {
        Err(SinkError::Transient("connection refused".into()))
    }
}

/// Issue 8.4: a sink whose destination was down from its first start holds
/// a checkpoint, so age-based retention keeps its records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_never_delivered_still_holds_back_retention() {
    let mut t = TestLog::with_segment_bytes(512);
    t.append_changes(60).await;
    let run = Running::start(&t.log, test_settings("down"), NeverUp);
    wait_until("the sink retries", || run.status.errors() > 0).await;
    let policy = spillway_log::RetentionPolicy {
        max_age: Some(std::time::Duration::from_secs(1)),
        max_bytes: None,
    };
    let report = t.log.apply_retention(&policy, i64::MAX).expect("retention");
    assert_eq!(
        report.segments_deleted, 0,
        "retention deleted records of a sink that never delivered them"
    );
    assert_eq!(t.log.oldest_lsn(), 1);
    run.kill().await;
}

/// Issue 8.3: a sink whose checkpoint was found beyond the log's end (and
/// reset at open) gets requery_required first, then the records from the
/// log's end on — never a silent skip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_reset_past_the_logs_end_gets_requery_required_first() {
    let mut t = TestLog::new();
    t.append_changes(20).await;
    let end = t.log.committed_lsn();
    let name = spillway_sinks::checkpoint_name("ahead");
    t.log
        .checkpoints()
        .set(&name, end + 30, false)
        .expect("set");
    // What ChangeLog::open does when the log ends before a checkpoint.
    t.log.checkpoints().reset_ahead(end).expect("reset");
    t.append_changes(5).await;
    let (got, _) = run_to_end(&t, test_settings("ahead")).await;
    assert_eq!(got[0]["type"], "requery_required");
    assert_eq!(got[0]["reason"], "log_rewound");
    assert_eq!(got[0]["requested_lsn"], end + 31);
    assert_eq!(got[0]["oldest_lsn"], end + 1);
    let lsns: Vec<u64> = got[1..]
        .iter()
        .map(|v| v["lsn"].as_u64().expect("lsn"))
        .collect();
    assert_eq!(lsns, (end + 1..=t.log.committed_lsn()).collect::<Vec<_>>());
    assert_eq!(
        t.log.checkpoints().pending_requery(&name).expect("read"),
        None
    );
}

/// A `requery_required` record in the log itself (how the log marks that it
/// lacks events before it) reaches the destination whatever the filters;
/// a format that cannot carry it stops the sink instead of dropping it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requery_record_in_the_log_is_delivered_or_stops_the_sink() {
    let gap = || serde_json::json!({"type": "requery_required", "requested_lsn": 4, "oldest_lsn": 5, "reason": "log_gap"});
    let mut t = TestLog::new();
    t.append_changes(3).await;
    t.append_events(vec![gap()]).await;
    t.append_changes(3).await;
    let committed = t.log.committed_lsn();

    let buf = SharedBuf::default();
    let mut settings = test_settings("native");
    settings.tables = Some(BTreeMap::from([("no_such_table".to_string(), vec![])]));
    let sink: Box<dyn DynSink> = Box::new(FileSink::with_writer(Box::new(buf.clone())));
    let run = Running::start(&t.log, settings, sink);
    wait_until("the sink checkpoints the end", || {
        run.status.checkpoint_lsn() == committed
    })
    .await;
    let run_requeries = run.status.requeries();
    run.stop().await.expect("clean stop");
    let lines = buf.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["type"], "requery_required");
    assert_eq!(lines[0]["reason"], "log_gap");
    assert_eq!(
        run_requeries, 1,
        "an in-log requery counts in the sink's status"
    );

    let mut settings = test_settings("flat");
    settings.format = spillway_core::encoding::Format::Flat;
    let buf = SharedBuf::default();
    let sink: Box<dyn DynSink> = Box::new(FileSink::with_writer(Box::new(buf.clone())));
    let run = Running::start(&t.log, settings, sink);
    let res = tokio::time::timeout(std::time::Duration::from_secs(30), run.handle)
        .await
        .expect("a flat sink went past an in-log requery instead of stopping")
        .expect("the sink task panicked");
    match res {
        Err(SinkError::Fatal(msg)) => assert!(msg.contains("requery_required"), "{msg}"),
        other => panic!("a flat sink went past an in-log requery: {other:?}"),
    }
    assert!(
        t.checkpoint("flat") < 4,
        "the checkpoint passed the requery record"
    );
}
