//! Durability end to end (issue 8), with the `spillway` binary against a real
//! PostgreSQL: the replication connection cut in the middle of a transaction
//! (walsender terminated, PostgreSQL restarted), and a sink destination that
//! stays down for a long stretch while the write load goes on.
//!
//! Every test compares what Spillway holds with what PostgreSQL committed:
//! each committed row exactly once, each transaction whole (all of its
//! changes under one commit, contiguous, nothing of another transaction in
//! between), nothing of a transaction that did not commit.

use crate::pg::{
    cluster, config_text, read_log_dir, row_count, wait_new_walsender, JsonBody, Proc, WAIT,
};
use serde_json::Value;
use spillway_testkit::PgCluster;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every test's table: `batch` says which transaction of the test wrote a row.
const SCHEMA: &str =
    "CREATE TABLE public.t (id bigint PRIMARY KEY, batch bigint NOT NULL, pad text);";

/// Rows per transaction of the background write load.
const LOAD_ROWS: i64 = 20;

/// Spillway's `[api] listen` port in these tests (the status shows capture progress).
fn config_on_port(pg: &PgCluster, log_dir: &Path, api_port: u16) -> String {
    config_text(pg, log_dir, "").replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{api_port}\""),
    )
}

/// A write load of multi-row transactions on its own connection: for `next` =
/// 1, 1 + 20, …: `BEGIN; INSERT 20 rows (ids next.., batch = next); UPDATE one
/// of them; COMMIT`. An error (PostgreSQL restarting) makes it reconnect and go
/// on with the next ids; whether the failed transaction committed is left to
/// the table, which every test compares with. Returns the number of
/// transactions that reported success.
fn resilient_load(
    pg: &PgCluster,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<u64>,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let cfg = pg.connect_config("shop");
    let task = tokio::spawn(async move {
        let mut conn: Option<spillway_postgres::PgConnection> = None;
        let mut next = 1i64;
        let mut ok = 0u64;
        let deadline = Instant::now() + 4 * WAIT;
        while !*stop_rx.borrow() {
            assert!(
                Instant::now() < deadline,
                "the write load was never stopped"
            );
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match spillway_postgres::PgConnection::connect(&cfg, false).await {
                    Ok(c) => conn.insert(c),
                    Err(_) => {
                        // PostgreSQL is restarting: try again shortly.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let sql = format!(
                "BEGIN; INSERT INTO t SELECT g, {next}, 'p' FROM generate_series({next}, {}) g; \
                 UPDATE t SET pad = 'u' WHERE id = {next}; COMMIT;",
                next + LOAD_ROWS - 1
            );
            next += LOAD_ROWS;
            match c.simple_query(&sql).await {
                Ok(_) => ok += 1,
                Err(_) => conn = None,
            }
            // A modest rate: a steady stream of small transactions around the big ones.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        ok
    });
    (stop_tx, task)
}

async fn status(api: &str) -> Value {
    reqwest::get(format!("http://{api}/v1/status"))
        .await
        .unwrap()
        .json_value()
        .await
}

/// `(events_captured, current_lsn)` from the status: appended to the log vs
/// committed in it. `events_captured` counts every append since the process
/// started, including those a discard removed later.
async fn in_flight(api: &str) -> Option<(i64, i64)> {
    let s = reqwest::get(format!("http://{api}/v1/status"))
        .await
        .ok()?
        .json::<Value>()
        .await
        .ok()?;
    let captured = s["source"]["events_captured"].as_i64()?;
    let current = s["current_lsn"].as_i64()?;
    Some((captured, current))
}

/// Commits one big transaction (`rows` rows, `batch` = `label`), then waits
/// until Spillway has appended at least `cut_after` of its changes without
/// the transaction being committed in the log. Returns whether that moment
/// was seen (false: the transaction was already whole in the log).
async fn big_transaction_in_flight(
    pg: &PgCluster,
    api: &str,
    label: i64,
    first_id: i64,
    rows: i64,
    cut_after: i64,
) -> bool {
    // Start from a log that holds everything so far (a cut before may have
    // left a resend in flight, which would be mistaken for this transaction).
    crate::pg::wait_confirmed_caught_up(pg).await;
    let deadline = Instant::now() + WAIT;
    let (captured0, current0) = loop {
        if let Some(v) = in_flight(api).await {
            break v;
        }
        assert!(Instant::now() < deadline, "no status from spillway");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Appended but not committed before the big transaction (small load transactions).
    let base = captured0 - current0;
    pg.execute(
        "shop",
        &format!(
            "INSERT INTO t SELECT g, {label}, repeat('b', 50) FROM generate_series({first_id}, {}) g",
            first_id + rows - 1
        ),
    )
    .await
    .unwrap();
    // The walsender decodes the whole transaction at its commit and then sends
    // it; Spillway appends its rows as they arrive and commits them in the log
    // with the last one. Poll (no pause: the window is a second or so).
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some((captured, current)) = in_flight(api).await {
            // Changes of the big transaction committed in the log: it is over.
            if current >= current0 + rows {
                return false;
            }
            if captured - current - base >= cut_after {
                eprintln!(
                    "batch {label}: {} of {rows} changes appended, not committed",
                    captured - current - base
                );
                return true;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the big transaction never reached spillway"
        );
    }
}

/// Number of times the log discarded an unfinished transaction (its log line).
fn discards(p: &Proc) -> Vec<String> {
    p.stderr()
        .lines()
        .filter(|l| l.contains("discarded the records of an unfinished transaction"))
        .map(str::to_owned)
        .collect()
}

/// What PostgreSQL committed: per `batch`, the inserted ids and how many rows
/// were updated.
async fn committed(pg: &PgCluster) -> BTreeMap<i64, (BTreeSet<i64>, usize)> {
    let rows = pg
        .execute("shop", "SELECT id, batch, pad = 'u' FROM t")
        .await
        .unwrap();
    let mut out: BTreeMap<i64, (BTreeSet<i64>, usize)> = BTreeMap::new();
    for r in rows {
        let id: i64 = r[0].as_deref().unwrap().parse().unwrap();
        let batch: i64 = r[1].as_deref().unwrap().parse().unwrap();
        let e = out.entry(batch).or_default();
        assert!(e.0.insert(id));
        if r[2].as_deref() == Some("t") {
            e.1 += 1;
        }
    }
    out
}

/// The log holds exactly what PostgreSQL committed: dense lsns, unique event
/// ids, every transaction whole and contiguous with indexes 1..n, one log
/// transaction per committed `batch` with exactly its rows and updates.
fn assert_log_matches(events: &[Value], want: &BTreeMap<i64, (BTreeSet<i64>, usize)>) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["lsn"].as_u64(), Some(i as u64 + 1), "dense lsns: {e}");
    }
    let mut ids = HashSet::new();
    for e in events {
        let id = e["id"].as_str().unwrap();
        assert!(ids.insert(id), "event {id} is in the log twice");
    }
    // Transactions in log order: (commit_lsn, events).
    let mut txs: Vec<(String, Vec<&Value>)> = Vec::new();
    for e in events.iter().filter(|e| !e["tx"].is_null()) {
        let commit = e["tx"]["commit_lsn"].as_str().unwrap().to_owned();
        match txs.last_mut() {
            Some((c, evs)) if *c == commit => evs.push(e),
            _ => txs.push((commit, vec![e])),
        }
    }
    let mut seen_commits = HashSet::new();
    let mut got: BTreeMap<i64, (BTreeSet<i64>, usize)> = BTreeMap::new();
    for (commit, evs) in &txs {
        assert!(
            seen_commits.insert(commit.clone()),
            "transaction {commit} is split in the log (another one in between) or there twice"
        );
        let indexes: Vec<u64> = evs
            .iter()
            .map(|e| e["tx"]["index"].as_u64().unwrap())
            .collect();
        assert_eq!(
            indexes,
            (1..=evs.len() as u64).collect::<Vec<_>>(),
            "transaction {commit}: indexes 1..n, nothing missing or repeated"
        );
        let changes: Vec<&&Value> = evs.iter().filter(|e| e["type"] == "change").collect();
        let batches: BTreeSet<i64> = changes
            .iter()
            .map(|e| e["new_data"]["batch"].as_i64().unwrap())
            .collect();
        assert_eq!(
            batches.len(),
            1,
            "transaction {commit} holds rows of one batch: {batches:?}"
        );
        let batch = *batches.first().unwrap();
        assert!(
            !got.contains_key(&batch),
            "batch {batch} is in two log transactions"
        );
        let mut rows = BTreeSet::new();
        let mut updates = 0;
        for e in &changes {
            let id = e["new_data"]["id"].as_i64().unwrap();
            match e["operation"].as_str().unwrap() {
                "insert" => assert!(rows.insert(id), "row {id} inserted twice"),
                "update" => updates += 1,
                op => panic!("unexpected {op}: {e}"),
            }
        }
        got.insert(batch, (rows, updates));
    }
    let want_rows: usize = want.values().map(|(r, _)| r.len()).sum();
    let got_rows: usize = got.values().map(|(r, _)| r.len()).sum();
    assert_eq!(got_rows, want_rows, "rows in the log vs committed rows");
    for (batch, w) in want {
        let g = got
            .get(batch)
            .unwrap_or_else(|| panic!("committed batch {batch} is not in the log"));
        assert_eq!(&g.0, &w.0, "batch {batch}: the log holds exactly its rows");
        assert_eq!(g.1, w.1, "batch {batch}: updates");
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "no batch PostgreSQL did not commit"
    );
}

/// Stops the load, lets Spillway confirm everything, stops it and compares
/// its log with the table.
async fn finish(
    pg: &PgCluster,
    p: Proc,
    log_dir: &Path,
    load: (
        tokio::sync::watch::Sender<bool>,
        tokio::task::JoinHandle<u64>,
    ),
) -> (usize, u64) {
    load.0.send(true).unwrap();
    let load_txs = load.1.await.unwrap();
    assert!(load_txs > 0);
    crate::pg::wait_confirmed_caught_up(pg).await;
    let stderr = p.stderr();
    assert!(p.terminate().success(), "{stderr}");
    let want = committed(pg).await;
    let events = read_log_dir(log_dir);
    assert_log_matches(&events, &want);
    (events.len(), load_txs)
}

/// The walsender is terminated several times while a write load of
/// multi-row transactions runs, each time while a big transaction is being
/// streamed (part of it appended to the log, its end not yet received).
/// The log drops the unfinished part (`LogWriter::discard_uncommitted`),
/// PostgreSQL sends the transaction again, and afterwards the log holds
/// every committed row exactly once, every transaction whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walsender_terminated_mid_transaction_loses_and_duplicates_nothing() {
    let pg = cluster(SCHEMA).await;
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    let cfg = dir.path().join("spillway.toml");
    let api_port = spillway_testkit::free_port();
    std::fs::write(&cfg, config_on_port(&pg, &log_dir, api_port)).unwrap();
    let api = format!("127.0.0.1:{api_port}");
    let t0 = Instant::now();
    let mut p = Proc::start(&cfg, dir.path());
    let mut walsender = Some(wait_new_walsender(&pg, None, &mut p).await);
    let load = resilient_load(&pg);
    const ROUNDS: i64 = 4;
    const BIG: i64 = 100_000;
    let mut mid_tx = 0;
    for round in 1..=ROUNDS {
        let first_id = 1_000_000_000 * round;
        if big_transaction_in_flight(&pg, &api, -round, first_id, BIG, 5_000).await {
            mid_tx += 1;
        }
        let killed = pg
            .execute(
                "shop",
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'walsender'",
            )
            .await
            .unwrap();
        assert_eq!(killed.len(), 1, "one walsender: {killed:?}");
        assert_eq!(killed[0][0].as_deref(), Some("t"));
        walsender = Some(wait_new_walsender(&pg, walsender, &mut p).await);
        eprintln!("after cut {round}: {} discards", discards(&p).len());
    }
    // A cut inside a transaction makes the log discard the records it holds
    // of it, and say so, before capture reconnects (so the new walsender
    // above means the line is written). At least one cut must have landed
    // there, else this test proves little.
    let cuts = discards(&p);
    eprintln!(
        "{mid_tx} of {ROUNDS} cuts seen with a big transaction in flight; the log said:\n{}",
        cuts.join("\n")
    );
    assert!(
        mid_tx >= 1 && cuts.len() >= mid_tx,
        "{mid_tx} cuts with a transaction in flight, {} discards: {}",
        cuts.len(),
        p.stderr()
    );
    let (events, load_txs) = finish(&pg, p, &log_dir, load).await;
    eprintln!(
        "{events} events, {load_txs} load transactions, {} s",
        t0.elapsed().as_secs()
    );
}

/// PostgreSQL restarted while a big transaction is being streamed to
/// Spillway, with a write load going on: first a fast shutdown (another
/// transaction still open, uncommitted, at the restart), then an immediate
/// one (`SIGQUIT`, as in a crash: the walsender dies mid-transaction, and
/// crash recovery may move the slot's confirmed position back to its last
/// checkpoint, so PostgreSQL resends transactions the log already holds).
/// Afterwards the log holds every committed row exactly once and nothing of
/// the open transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_mid_transaction_loses_and_duplicates_nothing() {
    let mut pg = cluster(SCHEMA).await;
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    let cfg = dir.path().join("spillway.toml");
    let api_port = spillway_testkit::free_port();
    std::fs::write(&cfg, config_on_port(&pg, &log_dir, api_port)).unwrap();
    let api = format!("127.0.0.1:{api_port}");
    let t0 = Instant::now();
    let mut p = Proc::start(&cfg, dir.path());
    let mut walsender = wait_new_walsender(&pg, None, &mut p).await;
    let load = resilient_load(&pg);
    for (round, immediate) in [(1i64, false), (2, true)] {
        // A transaction left open across the restart: PostgreSQL aborts it.
        let mut open = pg.connect("shop").await.unwrap();
        open.simple_query(&format!(
            "BEGIN; INSERT INTO t SELECT g, -100, 'open' FROM generate_series({0}, {0} + 9999) g",
            2_000_000_000 + round * 100_000
        ))
        .await
        .unwrap();
        let discards_before = discards(&p).len();
        let mid_tx =
            big_transaction_in_flight(&pg, &api, -round, 1_000_000_000 * round, 200_000, 5_000)
                .await;
        pg = tokio::task::spawn_blocking(move || {
            if immediate {
                pg.restart_immediate().unwrap();
            } else {
                pg.restart().unwrap();
            }
            pg
        })
        .await
        .unwrap();
        assert!(
            open.simple_query("COMMIT").await.is_err(),
            "the open transaction died with the server"
        );
        walsender = wait_new_walsender(&pg, Some(walsender), &mut p).await;
        let discarded = discards(&p).len() - discards_before;
        eprintln!(
            "{} restart with part of a big transaction in flight ({mid_tx}): {discarded} discards",
            if immediate { "immediate" } else { "fast" }
        );
        if immediate {
            // The walsender died at once: the log held part of the
            // transaction and dropped it (a fast shutdown lets the walsender
            // send everything first, so nothing is cut there).
            assert!(
                mid_tx && discarded >= 1,
                "the immediate restart did not cut a transaction: {}",
                p.stderr()
            );
        }
        // Rows keep coming after the restart.
        let before = row_count(&pg, "t").await;
        let deadline = Instant::now() + WAIT;
        while row_count(&pg, "t").await < before + 10 * LOAD_ROWS {
            assert!(Instant::now() < deadline, "the write load never resumed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let want = committed(&pg).await;
    assert!(
        !want.contains_key(&-100),
        "the open transactions were aborted"
    );
    assert_eq!(want[&-1].0.len(), 200_000);
    assert_eq!(want[&-2].0.len(), 200_000);
    let (events, load_txs) = finish(&pg, p, &log_dir, load).await;
    eprintln!(
        "{events} events, {load_txs} load transactions, {} s",
        t0.elapsed().as_secs()
    );
}

// ---------- a webhook destination that is down for a long stretch ----------

/// One POST the receiver acknowledged: the lsn headers and the body's events.
struct Delivery {
    first_lsn: u64,
    last_lsn: u64,
    events: Vec<Value>,
}

#[derive(Default)]
struct Received {
    deliveries: Vec<Delivery>,
    /// Requests that did not look like the webhook sink's.
    problems: Vec<String>,
}

/// A minimal HTTP/1.1 endpoint (keep-alive, `Content-Length` bodies) that
/// stores each POSTed batch and answers 200 once it has.
async fn serve_webhook(listener: tokio::net::TcpListener, got: Arc<Mutex<Received>>) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            return;
        };
        let got = got.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(sock, &got).await {
                got.lock().unwrap().problems.push(e);
            }
        });
    }
}

async fn serve_connection(
    sock: tokio::net::TcpStream,
    got: &Mutex<Received>,
) -> Result<(), String> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let mut r = BufReader::new(sock);
    loop {
        let mut request = String::new();
        if r.read_line(&mut request).await.map_err(|e| e.to_string())? == 0 {
            return Ok(()); // the client closed the connection
        }
        if !request.starts_with("POST /ingest HTTP/1.1") {
            return Err(format!("unexpected request {request:?}"));
        }
        let mut headers = BTreeMap::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.map_err(|e| e.to_string())? == 0 {
                return Err("connection closed inside the headers".into());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').ok_or(format!("bad header {line:?}"))?;
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
        let num = |k: &str| -> Result<u64, String> {
            headers
                .get(k)
                .and_then(|v| v.parse().ok())
                .ok_or(format!("no {k} in {headers:?}"))
        };
        if headers.get("content-type").map(String::as_str) != Some("application/json") {
            return Err(format!("content-type: {headers:?}"));
        }
        let mut body = vec![0u8; num("content-length")? as usize];
        r.read_exact(&mut body).await.map_err(|e| e.to_string())?;
        let events: Vec<Value> =
            serde_json::from_slice(&body).map_err(|e| format!("body is no JSON array: {e}"))?;
        got.lock().unwrap().deliveries.push(Delivery {
            first_lsn: num("x-spillway-first-lsn")?,
            last_lsn: num("x-spillway-last-lsn")?,
            events,
        });
        r.get_mut()
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
    }
}

async fn slot_confirmed_at_least(pg: &PgCluster, target: &str) -> bool {
    let rows = pg
        .execute(
            "shop",
            &format!("SELECT confirmed_flush_lsn >= '{target}'::pg_lsn FROM pg_replication_slots WHERE slot_name = 'spillway'"),
        )
        .await
        .unwrap();
    rows.first().and_then(|r| r[0].as_deref()) == Some("t")
}

/// A `webhook` sink whose endpoint is down from the start, for 30 s, while
/// the write load goes on: the sink reports the outage (retrying, errors,
/// the last error), capture does not wait for it (the slot's
/// `confirmed_flush_lsn` keeps advancing, the log keeps growing), and once
/// the endpoint is up the sink delivers every row, in log order. No crash
/// happens and every POST that reaches the endpoint is answered 200, so the
/// contract (at-least-once: replays after a crash or a failed batch) gives
/// no reason for a duplicate: each event arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_down_for_a_long_stretch_catches_up_while_capture_never_waits() {
    // The endpoint is down from the start and for this long after the sink's
    // first failed delivery. The sink's retry delays (200 ms doubling, at most
    // 30 s) put an attempt ~25.4 s after the first failure: the endpoint comes
    // up just before it, so the test does not wait another 25.6 s for the
    // next one (it would still pass, only slower).
    const OUTAGE: Duration = Duration::from_secs(24);
    let pg = cluster(SCHEMA).await;
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    let cfg = dir.path().join("spillway.toml");
    let api_port = spillway_testkit::free_port();
    let hook_port = spillway_testkit::free_port();
    let hook_url = format!("http://127.0.0.1:{hook_port}/ingest");
    std::fs::write(
        &cfg,
        format!(
            "{}\n[[sinks]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{hook_url}\"\ntimeout_ms = 5000\nbatch_size = 500\n",
            config_on_port(&pg, &log_dir, api_port)
        ),
    )
    .unwrap();
    let api = format!("127.0.0.1:{api_port}");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", hook_port))
            .await
            .is_err(),
        "nothing listens on the endpoint's port"
    );
    let t0 = Instant::now();
    let mut p = Proc::start(&cfg, dir.path());
    wait_new_walsender(&pg, None, &mut p).await;
    let load = resilient_load(&pg);

    // The sink notices: its first delivery fails and it retries.
    let deadline = Instant::now() + WAIT;
    let outage_start = loop {
        if let Ok(r) = reqwest::get(format!("http://{api}/v1/status")).await {
            let s: Value = r.json_value().await;
            let sink = &s["sinks"][0];
            if sink["errors"].as_u64().unwrap_or(0) > 0 {
                break Instant::now();
            }
        }
        assert!(
            Instant::now() < deadline && !p.has_exited(),
            "the sink never reported a failed delivery: {}",
            p.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // During the outage, every few seconds: the slot is confirmed past the
    // WAL written up to the previous sample, the log grows, the sink has
    // delivered nothing and says why.
    let mut samples = 0;
    let mut last_current = 0;
    let mut retrying_seen = false;
    let mut target = current_wal_lsn(&pg).await;
    let outage_end = outage_start + OUTAGE;
    while Instant::now() < outage_end {
        // Pacing of the samples; the outage's length is the point of the test.
        let left = outage_end.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_secs(3))).await;
        let deadline = Instant::now() + WAIT;
        while !slot_confirmed_at_least(&pg, &target).await {
            assert!(
                Instant::now() < deadline,
                "the slot was not confirmed past {target} while the sink was down"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        target = current_wal_lsn(&pg).await;
        let s = status(&api).await;
        let sink = &s["sinks"][0];
        assert_eq!(sink["name"], "hook");
        assert_eq!(sink["type"], "webhook");
        assert_eq!(sink["delivered"], 0, "{sink}");
        assert_eq!(
            sink["failed"], false,
            "a refused connection is transient: {sink}"
        );
        assert!(sink["errors"].as_u64().unwrap() > 0, "{sink}");
        let err = sink["last_error"].as_str().unwrap_or_default();
        assert!(
            err.contains(&hook_url) && err.contains("cannot connect"),
            "last_error names the endpoint and the failure: {sink}"
        );
        retrying_seen |= sink["retrying"] == true;
        let current = s["current_lsn"].as_u64().unwrap();
        assert!(
            current > last_current,
            "the log grows during the outage: {s}"
        );
        // The whole log is behind the sink (it delivered nothing), also while
        // it sits in one delivery's retries (`current_lsn` is read first, so
        // a commit in between can only make the lag larger).
        assert!(
            sink["lag_events"].as_u64().unwrap() >= current - sink["checkpoint"].as_u64().unwrap(),
            "the sink's lag follows the log during the outage: {s}"
        );
        last_current = current;
        samples += 1;
    }
    assert!(samples >= 5, "{samples} samples during the outage");
    assert!(retrying_seen, "the status showed the sink retrying");
    let s = status(&api).await;
    let errors_during_outage = s["sinks"][0]["errors"].as_u64().unwrap();
    eprintln!(
        "outage of {:?}: {samples} samples, log at lsn {last_current}, sink: {}",
        outage_start.elapsed(),
        s["sinks"][0]
    );

    // The endpoint comes up on its port.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", hook_port))
        .await
        .unwrap_or_else(|e| panic!("cannot listen on the endpoint's port {hook_port}: {e}"));
    let got = Arc::new(Mutex::new(Received::default()));
    let server = tokio::spawn(serve_webhook(listener, got.clone()));
    let up = Instant::now();
    // The sink delivers again while rows keep coming (its retry delay has
    // grown to up to 30 s by now), then the load stops.
    let deadline = Instant::now() + WAIT;
    while got.lock().unwrap().deliveries.is_empty() {
        assert!(
            Instant::now() < deadline,
            "no delivery after the endpoint came up: {}",
            p.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first_delivery = up.elapsed();
    load.0.send(true).unwrap();
    load.1.await.unwrap();
    crate::pg::wait_confirmed_caught_up(&pg).await;
    let want = committed(&pg).await;
    let want_rows: BTreeSet<i64> = want.values().flat_map(|(r, _)| r.iter().copied()).collect();
    // Caught up: the sink's checkpoint reaches the end of the log.
    let deadline = Instant::now() + WAIT;
    let s = loop {
        let s = status(&api).await;
        if s["sinks"][0]["checkpoint"] == s["current_lsn"] {
            break s;
        }
        assert!(Instant::now() < deadline, "the sink never caught up: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let caught_up = up.elapsed();
    let sink = &s["sinks"][0];
    assert_eq!(sink["retrying"], false, "{sink}");
    assert_eq!(sink["lag_events"], 0, "{sink}");
    assert_eq!(
        sink["errors"].as_u64().unwrap(),
        errors_during_outage,
        "no failure once the endpoint is up: {sink}"
    );
    let current = s["current_lsn"].as_u64().unwrap();
    let stderr = p.stderr();
    assert!(p.terminate().success(), "{stderr}");
    server.abort();

    let got = got.lock().unwrap();
    assert!(got.problems.is_empty(), "{:?}", got.problems);
    let mut lsns = Vec::new();
    let mut rows = Vec::new();
    for d in &got.deliveries {
        assert!(!d.events.is_empty());
        assert_eq!(d.events[0]["lsn"].as_u64(), Some(d.first_lsn));
        assert_eq!(d.events.last().unwrap()["lsn"].as_u64(), Some(d.last_lsn));
        for e in &d.events {
            lsns.push(e["lsn"].as_u64().unwrap());
            if e["type"] == "change" && e["operation"] == "insert" {
                rows.push(e["new_data"]["id"].as_i64().unwrap());
            }
        }
    }
    // Every log record (the native format carries them all), once, in log order.
    assert_eq!(
        lsns,
        (1..=current).collect::<Vec<_>>(),
        "each event once, in order"
    );
    assert_eq!(sink["delivered"].as_u64(), Some(current), "{sink}");
    let delivered_rows: BTreeSet<i64> = rows.iter().copied().collect();
    assert_eq!(delivered_rows.len(), rows.len(), "no row delivered twice");
    assert_eq!(delivered_rows, want_rows, "every committed row delivered");
    eprintln!(
        "{} rows, {} POSTs; first delivery {first_delivery:?} and caught up {caught_up:?} after the endpoint came up; {} s in all",
        rows.len(),
        got.deliveries.len(),
        t0.elapsed().as_secs()
    );
}

async fn current_wal_lsn(pg: &PgCluster) -> String {
    pg.execute("shop", "SELECT pg_current_wal_insert_lsn()::text")
        .await
        .unwrap()[0][0]
        .clone()
        .unwrap()
}

/// Issue 8.2 end to end: a write error of the log under `spillway run` (here
/// a file-size limit, so the kernel answers EFBIG as it would ENOSPC for a
/// full disk) stops the process with one line naming the OS error, no
/// panic; PostgreSQL was confirmed only up to what the log holds durably,
/// and a restart without the limit captures every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_write_error_stops_run_with_one_line_and_loses_nothing() {
    let pg = cluster(SCHEMA).await;
    let work = tempfile::tempdir().unwrap();
    let log_dir = work.path().join("log");
    // One segment larger than the limit, so the segment file is what hits it.
    let text = config_text(&pg, &log_dir, "")
        .replace("segment_bytes = \"1MiB\"", "segment_bytes = \"64MiB\"");
    let config_path = work.path().join("spillway.toml");
    std::fs::write(&config_path, &text).unwrap();
    let config = config_path.display().to_string();
    // SIGXFSZ ignored (inherited through exec): the write fails with EFBIG.
    let mut p = Proc::start_via(
        &[
            "sh",
            "-c",
            "trap '' XFSZ; exec prlimit --fsize=3145728 \"$0\" \"$@\"",
        ],
        &["run", "--config", &config],
        &[],
        work.path(),
    );
    // Rows committed before the slot exists are not for capture.
    let deadline = Instant::now() + WAIT;
    while row_count(&pg, "pg_replication_slots WHERE slot_name = 'spillway'").await == 0 {
        assert!(Instant::now() < deadline, "no slot: {}", p.stderr());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut batch = 0i64;
    while !p.has_exited() {
        assert!(
            Instant::now() < deadline,
            "spillway kept running past its file-size limit: {}",
            p.stderr()
        );
        if batch < 40 {
            pg.execute(
                "shop",
                &format!(
                    "INSERT INTO t SELECT g, {batch}, repeat('x', 2000) FROM generate_series({}, {}) g",
                    batch * 100 + 1,
                    batch * 100 + 100
                ),
            )
            .await
            .unwrap();
            batch += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let stderr = p.stderr();
    let status = p.terminate();
    assert!(!status.success(), "exit status {status}: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("os error 27"),
        "the OS error is named: {}",
        errors[0]
    );
    assert!(
        errors[0].contains(".seg"),
        "the file is named: {}",
        errors[0]
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // Confirmed only what the log holds durably.
    let (log, writer) =
        spillway_log::ChangeLog::open(spillway_log::LogOptions::new(&log_dir)).unwrap();
    // (Or idle progress beyond its last commit, stored before it was confirmed.)
    let held = log
        .last_commit()
        .map_or(0, |c| c.pg_end_lsn)
        .max(log.idle_confirmed());
    drop(writer);
    drop(log);
    let rows = pg
        .execute(
            "shop",
            &format!("SELECT confirmed_flush_lsn <= '{:X}/{:X}'::pg_lsn FROM pg_replication_slots WHERE slot_name = 'spillway'", held >> 32, held & 0xffff_ffff),
        )
        .await
        .unwrap();
    assert_eq!(
        rows[0][0].as_deref(),
        Some("t"),
        "the slot was confirmed beyond the log's durable end"
    );

    // Without the limit, every committed row arrives once.
    let inserted = batch * 100;
    let p = Proc::start(&config_path, work.path());
    crate::pg::wait_confirmed_caught_up(&pg).await;
    p.terminate();
    let events = read_log_dir(&log_dir);
    let ids: Vec<i64> = events
        .iter()
        .filter(|e| e["type"] == "change")
        .map(|e| e["new_data"]["id"].as_i64().unwrap())
        .collect();
    let want: Vec<i64> = (1..=inserted).collect();
    assert!(
        ids == want,
        "every row once, in order: got {} ids, first {:?}, last {:?}; want 1..={inserted}",
        ids.len(),
        ids.first(),
        ids.last()
    );
}
