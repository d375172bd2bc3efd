//! Scenario tests that mirror the reference deployments, with real brokers
//! and object stores started by the testkit. They run against PostgreSQL 15
//! only (the module is not named `pg*`): what they test is the sinks.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use spillway_testkit::services::{read_jetstream, JetStreamMessage, NatsServer};
use spillway_testkit::PgCluster;

use crate::pg::{cluster, Proc, WAIT};

/// Waits until `slot` exists and a walsender streams from it.
async fn wait_slot_active(pg: &PgCluster, slot: &str, proc: &mut Proc) {
    let deadline = Instant::now() + WAIT;
    loop {
        let rows = pg
            .execute(
                "shop",
                &format!("SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'"),
            )
            .await
            .unwrap();
        if rows.first().and_then(|r| r[0].as_deref()) == Some("t") {
            return;
        }
        assert!(
            Instant::now() < deadline && !proc.has_exited(),
            "slot {slot} never became active: {}",
            proc.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the stream until `done(messages)` holds.
async fn wait_stream(
    url: &str,
    stream: &str,
    proc: Option<&Proc>,
    mut done: impl FnMut(&[JetStreamMessage]) -> bool,
) -> Vec<JetStreamMessage> {
    let deadline = Instant::now() + WAIT;
    loop {
        let msgs = read_jetstream(url, stream).await.unwrap();
        if done(&msgs) {
            return msgs;
        }
        assert!(
            Instant::now() < deadline,
            "stream {stream} holds {} messages; spillway said: {}",
            msgs.len(),
            proc.map(Proc::stderr).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn body(m: &JetStreamMessage) -> Value {
    serde_json::from_slice(&m.payload).unwrap()
}

/// Reference 001: the environment variables alone make a PostgreSQL → NATS
/// pipeline; `TABLE_FILTER` and `TOPIC_MAPPING` apply; events have the
/// reference's flat shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_001_environment_only_pipeline_into_nats() {
    let pg = cluster(
        "CREATE TABLE public.trades (id int PRIMARY KEY, symbol text, qty int);
         ALTER TABLE public.trades REPLICA IDENTITY FULL;
         CREATE TABLE public.users (id int PRIMARY KEY, name text);",
    )
    .await;
    let nats = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dsn = format!("{}&replication=database", pg.dsn("shop"));
    assert!(dsn.contains("?sslmode="), "{dsn}");
    let url = nats.url();
    let mut p = Proc::start_with(
        &["run"],
        &[
            ("DB_DSN", &dsn),
            ("OUTPUT_PLUGIN", "pgoutput"),
            ("PUBLICATION_NAME", "ditto"),
            ("SLOT_NAME", "ditto"),
            ("NATS_PUB_URI", &url),
            ("TABLE_FILTER", r#"{"trades":["insert","update"]}"#),
            ("TOPIC_MAPPING", r#"{"trades":"transactions"}"#),
            // Not reference 001's: a free port, so tests can run side by side.
            ("SPILLWAY_API_LISTEN", "127.0.0.1:0"),
        ],
        dir.path(),
    );
    wait_slot_active(&pg, "ditto", &mut p).await;
    pg.execute(
        "shop",
        "INSERT INTO trades VALUES (1, 'ACME', 10), (2, 'INIT', 5);
         INSERT INTO users VALUES (1, 'ann');
         UPDATE trades SET qty = 11 WHERE id = 1;
         DELETE FROM trades WHERE id = 2;
         UPDATE users SET name = 'bob';
         INSERT INTO trades VALUES (3, 'LAST', 1);",
    )
    .await
    .unwrap();
    // The last insert arrives after everything before it (log order).
    let msgs = wait_stream(&url, "spillway", Some(&p), |m| {
        m.iter().any(|m| body(m)["Data"]["id"] == 3)
    })
    .await;
    let pub_rows = pg
        .execute("shop", "SELECT pubname FROM pg_publication")
        .await
        .unwrap();
    assert_eq!(
        pub_rows[0][0].as_deref(),
        Some("ditto"),
        "publication created on start"
    );
    assert!(
        msgs.iter().all(|m| m.subject == "transactions"),
        "mapped subject only (users filtered out)"
    );
    let events: Vec<Value> = msgs.iter().map(body).collect();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["Action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["insert", "insert", "update", "insert"],
        "no delete"
    );
    for (m, e) in msgs.iter().zip(&events) {
        assert_eq!(e["Schema"], "public");
        assert_eq!(e["Table"], "trades");
        assert!(
            e["EventTime"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{e}"
        );
        // Reference 001's ID is a UUID: the v5 UUID of the event id, which
        // is the Nats-Msg-Id.
        assert!(m.msg_id.contains(':'), "{}", m.msg_id);
        assert_eq!(
            e["ID"].as_str(),
            Some(spillway_core::encoding::uuid::event_uuid(&m.msg_id).as_str()),
        );
        let mut keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "Action",
                "Data",
                "DataOld",
                "EventTime",
                "ID",
                "Schema",
                "Table"
            ]
        );
    }
    assert_eq!(events[0]["Data"]["symbol"], "ACME");
    assert_eq!(events[2]["Data"]["qty"], 11);
    assert_eq!(
        events[2]["DataOld"]["qty"], 10,
        "REPLICA IDENTITY FULL gives old values"
    );
    assert!(p.terminate().success());
}

/// A write load into NATS with the broker stopped and started again in the
/// middle, then Spillway killed with SIGKILL mid-delivery and restarted:
/// every committed row arrives, each exactly once (replays carry the same
/// `Nats-Msg-Id` and the server drops them), in commit order per key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_outage_and_kill_9_under_write_load_lose_nothing() {
    let pg = cluster("CREATE TABLE public.t (id int PRIMARY KEY, pad text);").await;
    let mut nats = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("spillway.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}\n[[sinks]]\nname = \"bus\"\ntype = \"nats\"\nurl = \"{}\"\nack_timeout_ms = 1000\nconnect_timeout_ms = 1000\nbatch_size = 200\n",
            crate::pg::config_text(&pg, &dir.path().join("log"), ""),
            nats.url()
        ),
    )
    .unwrap();
    let mut p = Proc::start(&cfg, dir.path());
    wait_slot_active(&pg, "spillway", &mut p).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let writer_pg = pg.connect_config("shop");
    let load = tokio::spawn(async move {
        let mut conn = spillway_postgres::PgConnection::connect(&writer_pg, false)
            .await
            .unwrap();
        let mut next = 1i64;
        while !*stop_rx.borrow() {
            let sql = format!(
                "INSERT INTO t SELECT g, 'p' FROM generate_series({next}, {}) g; UPDATE t SET pad = 'q' WHERE id = {next}",
                next + 19
            );
            conn.simple_query(&sql).await.unwrap();
            next += 20;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        next - 1
    });
    let url = nats.url();
    let changes = |m: &[JetStreamMessage]| m.iter().filter(|m| body(m)["type"] == "change").count();
    let count = |n: usize| move |m: &[JetStreamMessage]| changes(m) >= n;
    wait_stream(&url, "spillway", Some(&p), count(500)).await;
    // Outage: the broker goes away while rows keep coming.
    nats.service.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.service.start_again().unwrap();
    let seen = changes(&read_jetstream(&url, "spillway").await.unwrap());
    wait_stream(&url, "spillway", Some(&p), count(seen + 500)).await;
    // kill -9 in the middle of delivery, then a restart.
    p.kill9();
    let p = Proc::start(&cfg, dir.path());
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_tx.send(true).unwrap();
    let last = load.await.unwrap();
    let expected = last as usize + (last as usize / 20); // inserts + one update per 20
    let msgs = wait_stream(&url, "spillway", Some(&p), count(expected)).await;
    assert!(p.terminate().success());

    let mut ids = std::collections::HashSet::new();
    let mut per_key: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
    for m in &msgs {
        assert!(ids.insert(m.msg_id.clone()), "duplicate id {}", m.msg_id);
        let e = body(m);
        if e["type"] != "change" {
            // schema_change: announced again by the restarted process.
            assert_eq!(e["type"], "schema_change");
            continue;
        }
        assert_eq!(e["id"].as_str(), Some(m.msg_id.as_str()));
        let id = e["entity_id"]["id"].as_i64().unwrap();
        per_key
            .entry(id)
            .or_default()
            .push(if e["operation"] == "insert" { "i" } else { "u" });
    }
    assert_eq!(changes(&msgs), expected, "every change exactly once");
    assert_eq!(per_key.len() as i64, last, "every row");
    for (id, ops) in per_key {
        let want: &[&str] = if (id - 1) % 20 == 0 {
            &["i", "u"]
        } else {
            &["i"]
        };
        assert_eq!(ops, want, "row {id}: operations in commit order");
    }
}
