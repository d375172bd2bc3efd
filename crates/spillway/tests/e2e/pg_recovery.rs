//! Issue 8.3 and 8.4 end to end: a damaged change log is refused (never cut
//! silently), `spillway admin cdc repair` is the way out, a consumer past
//! the cut is told; and a sink that never reached its destination holds
//! back retention.

use crate::pg::{cluster, config_text, read_until, Proc, WAIT};
use serde_json::{json, Value};
use spillway_server::config::Config;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const SCHEMA: &str = "CREATE SCHEMA bank; CREATE TABLE bank.holding (id int PRIMARY KEY, v text);";

fn newest_segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    segs.pop().unwrap()
}

/// (lsn, start offset) of each record in a segment (the documented format).
fn record_starts(path: &Path) -> Vec<(u64, usize)> {
    let bytes = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut off = 64usize;
    while off + 41 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
        let lsn = u64::from_le_bytes(bytes[off + 8..off + 16].try_into().unwrap());
        out.push((lsn, off));
        off += 41 + len;
    }
    out
}

/// The first `n` lines of a stream.
async fn first_lines(url: &str, n: usize) -> Vec<Value> {
    let mut resp = reqwest::get(url).await.unwrap();
    let mut buf = Vec::new();
    loop {
        let chunk = tokio::time::timeout(WAIT, resp.chunk())
            .await
            .expect("lines in time")
            .unwrap()
            .expect("the stream stays open");
        buf.extend_from_slice(&chunk);
        let complete = &buf[..buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)];
        let lines: Vec<Value> = complete
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        if lines.len() >= n {
            return lines;
        }
    }
}

async fn first_line(url: &str) -> Value {
    let mut resp = reqwest::get(url).await.unwrap();
    let mut buf = Vec::new();
    loop {
        let chunk = tokio::time::timeout(WAIT, resp.chunk())
            .await
            .expect("a line in time")
            .unwrap()
            .expect("the stream stays open");
        buf.extend_from_slice(&chunk);
        if let Some(i) = buf.iter().position(|b| *b == b'\n') {
            return serde_json::from_slice(&buf[..i]).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_log_is_refused_then_repaired_and_consumers_are_told() {
    let pg = cluster(SCHEMA).await;
    let work = tempfile::tempdir().unwrap();
    let log_dir = work.path().join("log");
    let text = config_text(&pg, &log_dir, "");
    let config_path = work.path().join("spillway.toml");
    std::fs::write(&config_path, &text).unwrap();

    let running = spillway_server::start(Config::from_parts(Some(("test", &text)), &[]).unwrap())
        .await
        .unwrap();
    for i in 0..20 {
        pg.execute(
            "shop",
            &format!(
                "INSERT INTO bank.holding SELECT g, repeat('x', 100) FROM generate_series({}, {}) g",
                i * 10 + 1,
                i * 10 + 10
            ),
        )
        .await
        .unwrap();
    }
    let events = read_until(&running.log, 1, |ev| {
        ev.iter().filter(|e| e["type"] == "change").count() >= 200
    })
    .await;
    let end = events.last().unwrap()["lsn"].as_u64().unwrap();
    let r = reqwest::Client::new()
        .put(format!(
            "http://{}/v1/consumers/reader/checkpoint",
            running.addr
        ))
        .body(json!({ "lsn": end }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A second consumer well below where the damage will be.
    let r = reqwest::Client::new()
        .put(format!(
            "http://{}/v1/consumers/below/checkpoint",
            running.addr
        ))
        .body(json!({ "lsn": 10 }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let old_epoch = running.log.current_epoch();
    running.shutdown();
    running.wait().await.unwrap();

    // One flipped byte in a record in the middle of the newest segment.
    let seg = newest_segment(&log_dir);
    let records = record_starts(&seg);
    let (bad_lsn, at) = records[records.len() / 2];
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[at + 45] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();

    // `run` refuses: one line, the segment and offset, the way out; no cut.
    let config = config_path.display().to_string();
    let mut p = Proc::start(&config_path, work.path());
    let deadline = Instant::now() + WAIT;
    while !p.has_exited() {
        assert!(
            Instant::now() < deadline,
            "spillway run did not stop: {}",
            p.stderr()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let status = p.terminate();
    assert!(!status.success());
    let stderr = std::fs::read_to_string(
        std::fs::read_dir(work.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().contains("stderr-"))
            .unwrap(),
    )
    .unwrap();
    let error: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error.len(), 1, "{stderr}");
    assert!(
        error[0].contains(&seg.display().to_string())
            && error[0].contains(&format!("offset {at}"))
            && error[0].contains("spillway admin cdc repair"),
        "{}",
        error[0]
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        bytes,
        "the damaged segment was changed"
    );

    // The way out: repair cuts at the damage and keeps the bytes.
    let out = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["admin", "cdc", "repair", "--config", &config])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("at offset {at}")), "{stdout}");
    let damaged = PathBuf::from(format!("{}.damaged", seg.display()));
    assert_eq!(std::fs::read(&damaged).unwrap(), bytes[at..]);

    // Runs again. The slot was confirmed for the transactions the cut
    // removed, so PostgreSQL will not send them again: the log records the
    // gap itself, a requery_required record in a new epoch.
    let running = spillway_server::start(Config::from_parts(Some(("test", &text)), &[]).unwrap())
        .await
        .unwrap();
    let events = read_until(&running.log, 1, |ev| {
        ev.iter().any(|e| e["type"] == "requery_required")
    })
    .await;
    let gap = events
        .iter()
        .find(|e| e["type"] == "requery_required")
        .unwrap()
        .clone();
    let gap_lsn = gap["lsn"].as_u64().unwrap();
    let committed = gap_lsn - 1;
    assert!(
        committed < bad_lsn,
        "the log ends before the damage ({committed})"
    );
    assert_eq!(gap["reason"], "log_gap", "{gap}");
    assert_eq!(gap["requested_lsn"], gap_lsn);
    assert_eq!(gap["oldest_lsn"], gap_lsn + 1);
    let epochs = running.log.epochs();
    assert_eq!(epochs.len(), 2, "{epochs:?}");
    assert_eq!(epochs[0], old_epoch);
    assert_eq!(
        epochs[1].first_lsn, gap_lsn,
        "the new epoch begins at the gap"
    );
    assert_eq!(gap["log_epoch"], epochs[1].id_hex());
    // The consumer below the cut reads on up to the cut, then meets the gap
    // before anything captured after it.
    let below = format!("http://{}/v1/changes?consumer=below", running.addr);
    let want = (gap_lsn - 10) as usize;
    let mut lines = first_lines(&below, want).await;
    lines.truncate(want);
    let lsns: Vec<u64> = lines.iter().map(|l| l["lsn"].as_u64().unwrap()).collect();
    assert_eq!(
        lsns,
        (11..=gap_lsn).collect::<Vec<_>>(),
        "below the cut: every lsn up to the gap, in order"
    );
    assert_eq!(lines.last().unwrap()["type"], "requery_required");
    assert_eq!(lines.last().unwrap()["reason"], "log_gap");
    let first = first_line(&format!(
        "http://{}/v1/changes?consumer=reader",
        running.addr
    ))
    .await;
    assert_eq!(first["type"], "requery_required", "{first}");
    assert_eq!(first["reason"], "log_rewound");
    assert_eq!(first["requested_lsn"], end + 1);
    assert_eq!(first["oldest_lsn"], committed + 1);
    // Sent again until the consumer acknowledges it by storing a checkpoint
    // (a stream cut before the client read the line must not lose it).
    let url = format!(
        "http://{}/v1/changes?consumer=reader&heartbeat_ms=100",
        running.addr
    );
    assert_eq!(first_line(&url).await["type"], "requery_required");
    let put = reqwest::Client::new()
        .put(format!(
            "http://{}/v1/consumers/reader/checkpoint",
            running.addr
        ))
        .json(&serde_json::json!({"lsn": committed}))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.text().await.unwrap());
    assert_eq!(
        first_line(&url).await["type"],
        "requery_required",
        "the gap record comes next"
    );
    let put = reqwest::Client::new()
        .put(format!(
            "http://{}/v1/consumers/reader/checkpoint",
            running.addr
        ))
        .json(&serde_json::json!({"lsn": gap_lsn}))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    assert_eq!(first_line(&url).await["type"], "heartbeat");

    // The log regrows past what an anonymous client had seen before the cut.
    pg.execute(
        "shop",
        "INSERT INTO bank.holding SELECT g, 'y' FROM generate_series(1000, 1299) g",
    )
    .await
    .unwrap();
    read_until(&running.log, 1, |ev| {
        ev.last().and_then(|e| e["lsn"].as_u64()).unwrap_or(0) > end + 5
    })
    .await;
    let base = format!("http://{}/v1/changes?from_lsn={}", running.addr, end + 1);
    // With the epoch its position belongs to, it is told and moved back to
    // the gap, whose record comes next.
    let lines = first_lines(&format!("{base}&epoch={}", old_epoch.id_hex()), 2).await;
    assert_eq!(lines[0]["type"], "requery_required", "{lines:?}");
    assert_eq!(lines[0]["reason"], "log_rewound");
    assert_eq!(lines[0]["requested_lsn"], end + 1);
    assert_eq!(lines[0]["oldest_lsn"], gap_lsn);
    assert_eq!(lines[1]["lsn"], gap_lsn, "{lines:?}");
    assert_eq!(lines[1]["reason"], "log_gap");
    // In the current epoch the position is taken as it is.
    let first = first_line(&format!("{base}&epoch={}", epochs[1].id_hex())).await;
    assert_eq!(first["lsn"], end + 1, "{first}");
    running.shutdown();
    running.wait().await.unwrap();
}

/// Issue 8.4 as a user meets it: a webhook sink whose endpoint is down
/// since the first start, `retention = "1s"`, small segments: nothing is
/// trimmed away under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_what_a_never_reached_sink_has_not_delivered() {
    let pg = cluster(SCHEMA).await;
    let work = tempfile::tempdir().unwrap();
    let log_dir = work.path().join("log");
    let dead = spillway_testkit::free_port();
    let text = format!(
        "{}\n[[sinks]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{dead}/events\"\n",
        config_text(&pg, &log_dir, "")
            .replace("segment_bytes = \"1MiB\"", "segment_bytes = \"4KiB\"\nretention = \"1s\"")
    );
    let running = spillway_server::start(Config::from_parts(Some(("test", &text)), &[]).unwrap())
        .await
        .unwrap();
    pg.execute(
        "shop",
        "INSERT INTO bank.holding SELECT g, repeat('x', 200) FROM generate_series(1, 300) g",
    )
    .await
    .unwrap();
    read_until(&running.log, 1, |ev| {
        ev.iter().filter(|e| e["type"] == "change").count() >= 300
    })
    .await;
    // Every event is older than the retention age once the clock passes
    // the newest one by 1 s; then wait for two more retention runs.
    let sink = running.sink_status[0].status.clone();
    let newest = running.log.last_commit().unwrap().timestamp_us;
    let deadline = Instant::now() + WAIT;
    let now_us = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64
    };
    while now_us() < newest + 1_100_000 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let runs = running.log.retention_runs();
    while running.log.retention_runs() < runs + 2 {
        assert!(Instant::now() < deadline, "retention never ran");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        sink.errors() > 0 && sink.delivered() == 0,
        "the endpoint is down"
    );
    assert_eq!(
        running.log.oldest_lsn(),
        1,
        "retention trimmed events the sink never delivered"
    );
    running.shutdown();
    running.wait().await.unwrap();
}

/// Second review of issue 8: a slot dropped and made again (invalidated by
/// `max_slot_wal_keep_size`, dropped by hand, lost in a failover) starts
/// beyond the log; what was committed in between is gone from both, and the
/// log says so with a `log_gap` record instead of going on silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_slot_is_a_gap_in_the_log() {
    let pg = cluster(SCHEMA).await;
    let work = tempfile::tempdir().unwrap();
    let log_dir = work.path().join("log");
    let text = config_text(&pg, &log_dir, "");
    let running = spillway_server::start(Config::from_parts(Some(("test", &text)), &[]).unwrap())
        .await
        .unwrap();
    pg.execute("shop", "INSERT INTO bank.holding VALUES (1, 'a')")
        .await
        .unwrap();
    read_until(&running.log, 1, |ev| {
        ev.iter().any(|e| e["type"] == "change")
    })
    .await;
    running.shutdown();
    running.wait().await.unwrap();
    // The slot goes; a row is committed while there is none.
    pg.execute("shop", "SELECT pg_drop_replication_slot('spillway')")
        .await
        .unwrap();
    pg.execute("shop", "INSERT INTO bank.holding VALUES (2, 'lost')")
        .await
        .unwrap();
    let running = spillway_server::start(Config::from_parts(Some(("test", &text)), &[]).unwrap())
        .await
        .unwrap();
    pg.execute("shop", "INSERT INTO bank.holding VALUES (3, 'c')")
        .await
        .unwrap();
    let events = read_until(&running.log, 1, |ev| {
        ev.iter().any(|e| e["new_data"]["id"] == 3)
    })
    .await;
    let kinds: Vec<(String, Option<i64>)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["new_data"]["id"].as_i64(),
            )
        })
        .filter(|(t, _)| t != "schema_change")
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("change".to_string(), Some(1)),
            ("requery_required".to_string(), None),
            ("change".to_string(), Some(3)),
        ],
        "row 2 is in neither the log nor the slot: the gap must be said before row 3"
    );
    let gap = events
        .iter()
        .find(|e| e["type"] == "requery_required")
        .unwrap();
    assert_eq!(gap["reason"], "log_gap", "{gap}");
    running.shutdown();
    running.wait().await.unwrap();
}
