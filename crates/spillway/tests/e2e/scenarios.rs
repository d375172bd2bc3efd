//! Scenario tests that mirror the reference deployments, with real brokers
//! and object stores started by the testkit. They run against PostgreSQL 15
//! only (the module is not named `pg*`): what they test is the sinks.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use spillway_testkit::services::{read_jetstream, JetStreamMessage, NatsServer, S3Server, Tansu};
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

/// Each sink's error count from `GET /v1/status`.
async fn sink_errors(api: &str) -> BTreeMap<String, u64> {
    let s: Value = reqwest::get(format!("http://{api}/v1/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    s["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["name"].as_str().unwrap().to_owned(),
                k["errors"].as_u64().unwrap(),
            )
        })
        .collect()
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

/// A write load delivered by three sinks at once — `nats`, `kafka`, `s3` —
/// with each destination going away and coming back in the middle (NATS
/// and the S3 server stopped and started, the Kafka broker frozen), then
/// Spillway killed with SIGKILL mid-delivery and restarted. Afterwards every
/// committed change is at each destination: exactly once in NATS (replays
/// carry the same `Nats-Msg-Id`, which the server drops) and in S3 (replays
/// rewrite the same objects), at least once in Kafka with duplicates
/// carrying the same id; in commit order per row everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_and_kill_9_under_write_load_lose_nothing_in_any_sink() {
    let pg = cluster("CREATE TABLE public.t (id int PRIMARY KEY, pad text);").await;
    let mut nats = NatsServer::start().unwrap();
    let mut kafka = Tansu::start().unwrap();
    let mut s3 = S3Server::start("lake").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("spillway.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}\n[[sinks]]\nname = \"bus\"\ntype = \"nats\"\nurl = \"{}\"\nack_timeout_ms = 1000\nconnect_timeout_ms = 1000\nbatch_size = 200\n\n[[sinks]]\nname = \"kafka\"\ntype = \"kafka\"\nbrokers = \"{}\"\ndelivery_timeout_ms = 2000\nbatch_size = 200\n\n[[sinks]]\nname = \"lake\"\ntype = \"s3\"\nurl = \"s3://lake/cdc\"\nendpoint = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\nmax_object_events = 300\nmax_object_age_ms = 100\n",
            crate::pg::config_text(&pg, &dir.path().join("log"), ""),
            nats.url(),
            kafka.bootstrap,
            s3.endpoint(),
            s3.access_key,
            s3.secret_key,
        ),
    )
    .unwrap();
    let mut p = Proc::start(&cfg, dir.path());
    wait_slot_active(&pg, "spillway", &mut p).await;
    let (stop_tx, load) = crate::pg::write_load(&pg, 20, Duration::from_millis(2), |next| {
        format!(
            "INSERT INTO t SELECT g, 'p' FROM generate_series({next}, {}) g; UPDATE t SET pad = 'q' WHERE id = {next}",
            next + 19
        )
    });
    let url = nats.url();
    let changes = |m: &[JetStreamMessage]| m.iter().filter(|m| body(m)["type"] == "change").count();
    let count = |n: usize| move |m: &[JetStreamMessage]| changes(m) >= n;
    wait_stream(&url, "spillway", Some(&p), count(500)).await;
    // Outages: every destination goes away while rows keep coming, until
    // every sink has reported a failed delivery and more rows were written.
    let api = crate::pg_stream::wait_for_addr(&p).await;
    let errors_before = sink_errors(&api).await;
    let rows_before = crate::pg::row_count(&pg, "t").await;
    nats.service.stop();
    kafka.pause();
    s3.service.stop();
    let deadline = Instant::now() + WAIT;
    loop {
        let now = sink_errors(&api).await;
        if now.len() == 3 && now.iter().all(|(k, n)| *n > errors_before[k]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every sink noticed its outage: {now:?}; spillway said: {}",
            p.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    crate::pg::wait_rows(&pg, "t", rows_before + 500).await;
    nats.service.start_again().unwrap();
    kafka.resume();
    s3.service.start_again().unwrap();
    let seen = changes(&read_jetstream(&url, "spillway").await.unwrap());
    wait_stream(&url, "spillway", Some(&p), count(seen + 500)).await;
    // kill -9 in the middle of delivery, then a restart.
    let walsender = crate::pg::slot_pid(&pg).await;
    p.kill9();
    let mut p = Proc::start(&cfg, dir.path());
    // The load goes on until the new process streams and a few more rows are in.
    crate::pg::wait_new_walsender(&pg, walsender, &mut p).await;
    let rows_now = crate::pg::row_count(&pg, "t").await;
    crate::pg::wait_rows(&pg, "t", rows_now + 200).await;
    stop_tx.send(true).unwrap();
    let last = load.await.unwrap();
    let expected = last as usize + (last as usize / 20); // inserts + one update per 20
    let msgs = wait_stream(&url, "spillway", Some(&p), count(expected)).await;

    // Every row: an insert, and for every 20th an update after it.
    let check_rows = |what: &str, events: &[Value], exactly_once: bool| {
        let mut ids = std::collections::HashMap::new();
        let mut per_key: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
        for e in events.iter().filter(|e| e["type"] == "change") {
            let id = e["id"].as_str().unwrap().to_owned();
            let n = ids.entry(id.clone()).or_insert(0);
            *n += 1;
            if *n > 1 {
                assert!(!exactly_once, "{what}: {id} delivered twice");
                continue;
            }
            let row = e["entity_id"]["id"].as_i64().unwrap();
            per_key
                .entry(row)
                .or_default()
                .push(if e["operation"] == "insert" { "i" } else { "u" });
        }
        assert_eq!(ids.len(), expected, "{what}: every change");
        assert_eq!(per_key.len() as i64, last, "{what}: every row");
        for (row, ops) in per_key {
            let want: &[&str] = if (row - 1) % 20 == 0 {
                &["i", "u"]
            } else {
                &["i"]
            };
            assert_eq!(ops, want, "{what}: row {row} in commit order");
        }
    };
    let nats_events: Vec<Value> = msgs
        .iter()
        .map(|m| {
            let e = body(m);
            assert_eq!(
                e["id"].as_str(),
                Some(m.msg_id.as_str()),
                "Nats-Msg-Id is the event id"
            );
            e
        })
        .collect();
    check_rows("nats", &nats_events, true);

    let kcfg = spillway_sink_kafka::KafkaSinkConfig::new(&kafka.bootstrap);
    let s3cfg = {
        let mut c = spillway_sink_s3::S3SinkConfig::new("s3://lake/cdc");
        c.endpoint = Some(s3.endpoint());
        c.access_key_id = Some(s3.access_key.clone());
        c.secret_access_key = Some(s3.secret_key.clone());
        c
    };
    let reader = spillway_sink_s3::S3Sink::new(&s3cfg).unwrap();
    let deadline = Instant::now() + WAIT;
    let distinct = |events: &[Value]| {
        events
            .iter()
            .filter(|e| e["type"] == "change")
            .filter_map(|e| e["id"].as_str())
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    let (kafka_events, s3_events) = loop {
        let k = kcfg.clone();
        let kafka_events: Vec<Value> = tokio::task::spawn_blocking(move || {
            spillway_sink_kafka::read_topics(
                &k,
                |t| t == "spillway.public.t",
                Duration::from_secs(60),
            )
        })
        .await
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|m| {
            let e: Value = serde_json::from_slice(&m.value).unwrap();
            assert_eq!(
                m.id.as_deref(),
                e["id"].as_str(),
                "spillway-id header is the event id"
            );
            e
        })
        .collect();
        let s3_events: Vec<Value> = reader
            .read_all()
            .await
            .unwrap()
            .into_iter()
            .flat_map(|(_, c)| {
                String::from_utf8(c)
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect();
        if distinct(&kafka_events) >= expected && distinct(&s3_events) >= expected {
            break (kafka_events, s3_events);
        }
        assert!(
            Instant::now() < deadline,
            "kafka has {}, s3 has {} of {expected} changes; spillway said: {}",
            distinct(&kafka_events),
            distinct(&s3_events),
            p.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(p.terminate().success());
    check_rows("kafka", &kafka_events, false);
    check_rows("s3", &s3_events, true);
}

/// Reference 003: `commerce.users` and `commerce.products` → one Kafka
/// topic per table (`prefix.schema.table`, Debezium's envelope) and an `s3`
/// sink writing table-specific paths. Both are read back and compared with
/// each other and with what was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_003_topics_per_table_and_table_paths_in_s3() {
    let pg = cluster(
        "CREATE SCHEMA commerce;
         CREATE TABLE commerce.users (id int PRIMARY KEY, name text);
         CREATE TABLE commerce.products (id int PRIMARY KEY, title text, price numeric(10,2));",
    )
    .await;
    let kafka = Tansu::start().unwrap();
    let s3 = S3Server::start("lake").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("spillway.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}\n[[sinks]]\nname = \"kafka\"\ntype = \"kafka\"\nbrokers = \"{}\"\nformat = \"debezium\"\nprefix = \"dbserver1\"\ntables = {{ \"commerce.*\" = [] }}\n\n[[sinks]]\nname = \"lake\"\ntype = \"s3\"\nurl = \"s3://lake/topics\"\nendpoint = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\nformat = \"debezium\"\nprefix = \"dbserver1\"\nmax_object_age_ms = 200\n",
            crate::pg::config_text(&pg, &dir.path().join("log"), ""),
            kafka.bootstrap,
            s3.endpoint(),
            s3.access_key,
            s3.secret_key
        ),
    )
    .unwrap();
    let mut p = Proc::start(&cfg, dir.path());
    wait_slot_active(&pg, "spillway", &mut p).await;
    pg.execute(
        "shop",
        "INSERT INTO commerce.users SELECT g, 'user ' || g FROM generate_series(1, 20) g;
         INSERT INTO commerce.products SELECT g, 'product ' || g, g * 1.5 FROM generate_series(1, 10) g;
         UPDATE commerce.users SET name = 'renamed' WHERE id <= 5;
         UPDATE commerce.products SET price = 99.99 WHERE id = 3;
         DELETE FROM commerce.users WHERE id = 20;
         DELETE FROM commerce.products WHERE id = 10;",
    )
    .await
    .unwrap();
    // users: 20 inserts, 5 updates, 1 delete; products: 10 + 1 + 1.
    let want = [("users", 26usize), ("products", 12usize)];

    let mut kcfg = spillway_sink_kafka::KafkaSinkConfig::new(&kafka.bootstrap);
    kcfg.delivery_timeout_ms = 5000;
    let s3cfg = {
        let mut c = spillway_sink_s3::S3SinkConfig::new("s3://lake/topics");
        c.endpoint = Some(s3.endpoint());
        c.access_key_id = Some(s3.access_key.clone());
        c.secret_access_key = Some(s3.secret_key.clone());
        c
    };
    let reader = spillway_sink_s3::S3Sink::new(&s3cfg).unwrap();
    let deadline = Instant::now() + WAIT;
    let (topics, objects) = loop {
        let k = kcfg.clone();
        let msgs = tokio::task::spawn_blocking(move || {
            spillway_sink_kafka::read_topics(
                &k,
                |t| t.starts_with("dbserver1."),
                Duration::from_secs(30),
            )
        })
        .await
        .unwrap()
        .unwrap();
        let objs = reader.read_all().await.unwrap();
        let count = |table: &str| {
            let k = msgs
                .iter()
                .filter(|m| m.topic == format!("dbserver1.commerce.{table}"))
                .count();
            let o: usize = objs
                .iter()
                .filter(|(n, _)| n.starts_with(&format!("commerce/{table}/")))
                .map(|(_, c)| c.iter().filter(|&&b| b == b'\n').count())
                .sum();
            (k, o)
        };
        if want.iter().all(|&(t, n)| count(t) == (n, n)) {
            break (msgs, objs);
        }
        assert!(
            Instant::now() < deadline,
            "kafka/s3 counts {:?}; spillway said: {}",
            want.iter().map(|(t, _)| count(t)).collect::<Vec<_>>(),
            p.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(p.terminate().success());

    for (table, n) in want {
        // Kafka: one topic per table, keyed by the primary key, Debezium envelope.
        let from_kafka: Vec<Value> = topics
            .iter()
            .filter(|m| m.topic == format!("dbserver1.commerce.{table}"))
            .map(|m| {
                let v: Value = serde_json::from_slice(&m.value).unwrap();
                let key: Value = serde_json::from_slice(m.key.as_deref().unwrap()).unwrap();
                let row = if v["payload"]["op"] == "d" {
                    &v["payload"]["before"]
                } else {
                    &v["payload"]["after"]
                };
                assert_eq!(key["payload"]["id"], row["id"], "message key = primary key");
                v
            })
            .collect();
        // S3: table-specific paths, objects in name order.
        let mut from_s3: Vec<Value> = Vec::new();
        for (name, content) in objects
            .iter()
            .filter(|(n, _)| n.starts_with(&format!("commerce/{table}/")))
        {
            assert!(
                name.starts_with(&format!("commerce/{table}/date=")) && name.ends_with(".jsonl"),
                "{name}"
            );
            from_s3.extend(
                String::from_utf8(content.clone())
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap()),
            );
        }
        assert_eq!(from_kafka.len(), n);
        // The same events in the same order; only Debezium's envelope
        // timestamps (processing time of each sink's encoder) may differ.
        let strip = |v: &Value| {
            let mut v = v.clone();
            for k in ["ts_ms", "ts_us", "ts_ns"] {
                v["payload"].as_object_mut().unwrap().remove(k);
            }
            v
        };
        assert_eq!(from_s3.len(), n);
        for (i, (k, s)) in from_kafka.iter().zip(&from_s3).enumerate() {
            assert!(
                strip(k) == strip(s),
                "{table} event {i} differs between Kafka and S3: {} vs {}",
                k["payload"],
                s["payload"]
            );
        }
        let ops: Vec<&str> = from_kafka
            .iter()
            .map(|v| v["payload"]["op"].as_str().unwrap())
            .collect();
        let (c, u) = if table == "users" { (20, 5) } else { (10, 1) };
        assert_eq!(ops.iter().filter(|&&o| o == "c").count(), c);
        assert_eq!(ops.iter().filter(|&&o| o == "u").count(), u);
        assert_eq!(ops.last(), Some(&"d"));
        for v in &from_kafka {
            let source = &v["payload"]["source"];
            assert_eq!(source["connector"], "postgresql");
            assert_eq!(source["name"], "dbserver1");
            assert_eq!(source["schema"], "commerce");
            assert_eq!(source["table"], table);
        }
    }
}

/// Reference 000: a consumer in a consumer group, over TLS with PKCS#12
/// keystore and truststore, receives `document` events for an upsert, an
/// update and a remove.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_000_consumer_group_over_tls_receives_document_events() {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::Message;

    let pg = cluster(
        "CREATE TABLE public.profiles (id int PRIMARY KEY, name text, plan text);
         ALTER TABLE public.profiles REPLICA IDENTITY FULL;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let pki = spillway_testkit::pki::TestPki::create(&dir.path().join("pki")).unwrap();
    let keystore = pki.client_keystore("user-secret").unwrap();
    let truststore = pki.ca_truststore("ca-secret").unwrap();
    let kafka = Tansu::start_tls(&pki).unwrap();
    let cfg = dir.path().join("spillway.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}\n[[sinks]]\nname = \"documents\"\ntype = \"kafka\"\nbrokers = \"{}\"\nformat = \"document\"\ntopic = \"{{db}}.documents\"\nsecurity_protocol = \"ssl\"\nssl_keystore_location = \"{}\"\nssl_keystore_password = \"user-secret\"\nssl_truststore_location = \"{}\"\nssl_truststore_password = \"ca-secret\"\n",
            crate::pg::config_text(&pg, &dir.path().join("log"), ""),
            kafka.bootstrap,
            keystore.display(),
            truststore.display()
        ),
    )
    .unwrap();
    let mut p = Proc::start(&cfg, dir.path());
    wait_slot_active(&pg, "spillway", &mut p).await;
    pg.execute(
        "shop",
        "INSERT INTO profiles VALUES (1, 'ann', 'free');
         UPDATE profiles SET plan = 'pro' WHERE id = 1;
         DELETE FROM profiles WHERE id = 1;",
    )
    .await
    .unwrap();

    // The application's consumer: same TLS material, a consumer group.
    let mut kcfg = spillway_sink_kafka::KafkaSinkConfig::new(&kafka.bootstrap);
    kcfg.security_protocol = "ssl".into();
    kcfg.ssl_keystore_location = Some(keystore.clone());
    kcfg.ssl_keystore_password = Some("user-secret".into());
    kcfg.ssl_truststore_location = Some(truststore.clone());
    kcfg.ssl_truststore_password = Some("ca-secret".into());
    let consumer: StreamConsumer = spillway_sink_kafka::client_config(&kcfg)
        .unwrap()
        .set("group.id", "profile-indexer")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    // The sink creates the topic with its first record; subscribe once it exists.
    let deadline = Instant::now() + WAIT;
    loop {
        let md = consumer.fetch_metadata(Some("shop.documents"), Duration::from_secs(5));
        if md.is_ok_and(|m| {
            m.topics()
                .iter()
                .any(|t| t.name() == "shop.documents" && !t.partitions().is_empty())
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "topic never appeared: {}",
            p.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    consumer.subscribe(&["shop.documents"]).unwrap();
    let mut docs: Vec<Value> = Vec::new();
    while docs.len() < 3 {
        let m = tokio::time::timeout(WAIT, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("no message; got {docs:?}; spillway said: {}", p.stderr()))
            .unwrap();
        docs.push(serde_json::from_slice(m.payload().unwrap()).unwrap());
    }
    consumer
        .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        .unwrap();
    assert!(p.terminate().success());

    let methods: Vec<&str> = docs
        .iter()
        .map(|d| d["change"]["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["upsert", "update", "remove"]);
    assert!(docs
        .iter()
        .all(|d| d["type"] == "documentChanged" && d["collection"] == "public.profiles"));
    let txn: Vec<i64> = docs.iter().map(|d| d["txnId"].as_i64().unwrap()).collect();
    assert!(
        txn.windows(2).all(|w| w[0] < w[1]),
        "txnId always increases: {txn:?}"
    );
    assert_eq!(docs[0]["change"]["newValue"]["plan"], "free");
    assert_eq!(docs[0]["change"]["oldValue"], Value::Null);
    assert_eq!(docs[1]["change"]["oldValue"]["plan"], "free");
    assert_eq!(docs[1]["change"]["newValue"]["plan"], "pro");
    assert_eq!(docs[2]["change"]["value"]["id"], 1);
}
