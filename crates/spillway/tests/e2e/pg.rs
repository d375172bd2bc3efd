//! Tests against real PostgreSQL clusters.

use serde_json::{json, Value};
use spillway_server::config::Config;
use spillway_testkit::{Auth, PgCluster, PgOptions};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const WAIT: Duration = Duration::from_secs(120);

pub(crate) async fn cluster_with(opts: PgOptions, schema: &str) -> PgCluster {
    let cluster = tokio::task::spawn_blocking(move || PgCluster::start(opts))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot start postgresql: {e}"));
    cluster.create_database("shop").await.unwrap();
    if !schema.is_empty() {
        cluster.execute("shop", schema).await.unwrap();
    }
    cluster
}

pub(crate) async fn cluster(schema: &str) -> PgCluster {
    cluster_with(PgOptions::default(), schema).await
}

pub(crate) fn config_text(cluster: &PgCluster, log_dir: &Path, extra_source: &str) -> String {
    format!(
        "[source]\ndsn = \"{}\"\nslot = \"spillway\"\npublication = \"spillway\"\n{extra_source}\n[log]\ndir = \"{}\"\nsegment_bytes = \"1MiB\"\n\n[api]\nlisten = \"127.0.0.1:0\"\n",
        cluster.dsn("shop"),
        log_dir.display()
    )
}

pub(crate) async fn start(
    cluster: &PgCluster,
    log_dir: &Path,
    extra_source: &str,
) -> spillway_server::Running {
    let text = config_text(cluster, log_dir, extra_source);
    let config = Config::from_parts(Some(("test", &text)), &[]).unwrap();
    spillway_server::start(config).await.unwrap()
}

/// Reads events from the log starting at `from` until `pred` says enough (or panics after WAIT).
pub(crate) async fn read_until(
    log: &spillway_log::ChangeLog,
    from: u64,
    mut done: impl FnMut(&[Value]) -> bool,
) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut reader = log.reader(from).unwrap();
    let mut committed = log.subscribe();
    let deadline = Instant::now() + WAIT;
    loop {
        committed.borrow_and_update();
        let (r, batch) = tokio::task::spawn_blocking(move || {
            let b = reader.read_batch(10_000, 8 << 20);
            (reader, b)
        })
        .await
        .unwrap();
        reader = r;
        let batch = batch.unwrap();
        if batch.is_empty() {
            if done(&out) {
                return out;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, committed.changed())
                .await
                .is_err()
            {
                panic!(
                    "timed out; got {} events: {:?}",
                    out.len(),
                    out.iter().rev().take(3).collect::<Vec<_>>()
                );
            }
            continue;
        }
        for rec in batch {
            let v: Value = serde_json::from_slice(&rec.payload).unwrap();
            assert_eq!(v["lsn"], json!(rec.lsn), "payload lsn matches record lsn");
            out.push(v);
        }
        if done(&out) {
            return out;
        }
    }
}

pub(crate) fn changes(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| e["type"] == "change").collect()
}

pub(crate) fn count_changes(n: usize) -> impl FnMut(&[Value]) -> bool {
    move |ev: &[Value]| changes(ev).len() >= n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_value_type() {
    let pg = cluster(
        "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
         CREATE DOMAIN posint AS int CHECK (VALUE > 0);
         CREATE TABLE public.types (
           id int PRIMARY KEY, i2 int2, i8 int8, f4 float4, f8 float8, f8nan float8, f8inf float8, f8ninf float8,
           num numeric, num_nan numeric, b bool, t text, vc varchar(10), ch char(3), j json, jb jsonb,
           u uuid, by bytea, d date, d_inf date, ts timestamp, tstz timestamptz, tstz_inf timestamptz,
           tm time, tmtz timetz, iv interval, arr int[], arr2 text[], arr_nested int[][],
           e mood, dom posint, earr mood[], nul text, ip inet, o oid);",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let running = start(&pg, dir.path(), "").await;
    pg.execute(
        "shop",
        r#"INSERT INTO public.types VALUES (
           1, -32768, 9223372036854775807, 1.5, 2.25, 'NaN', 'Infinity', '-Infinity',
           '12345678901234567890.000000000001', 'NaN', true, E'quote" back\\ tab\t nl\n é', 'short', 'ab', '{"a": [1, 2.5, null]}', '{"b": {"c": "d"}}',
           'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\xdeadbeef', '2024-02-29', 'infinity', '2024-01-02 03:04:05.5', '2024-01-02 03:04:05.123456+02', '-infinity',
           '03:04:05', '03:04:05.25+05:30', '1 day 02:03:04', '{1,2,NULL}', '{"a b","c\"d",NULL,"NULL"}', '{{1,2},{3,4}}',
           'happy', 7, '{sad,happy}', NULL, '192.168.0.1/24', 42)"#,
    )
    .await
    .unwrap();
    let events = read_until(&running.log, 1, count_changes(1)).await;
    let ch = changes(&events)[0];
    let n = &ch["new_data"];
    let expect = json!({
        "id": 1, "i2": -32768, "i8": 9223372036854775807i64, "f4": 1.5, "f8": 2.25, "f8nan": "NaN", "f8inf": "Infinity", "f8ninf": "-Infinity",
        "num": "12345678901234567890.000000000001", "num_nan": "NaN", "b": true, "t": "quote\" back\\ tab\t nl\n é", "vc": "short", "ch": "ab ",
        "j": {"a": [1, 2.5, null]}, "jb": {"b": {"c": "d"}},
        "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "by": "3q2+7w==", "d": "2024-02-29", "d_inf": "infinity",
        "ts": "2024-01-02T03:04:05.500000", "tstz": "2024-01-02T01:04:05.123456Z", "tstz_inf": "-infinity",
        "tm": "03:04:05.000000", "tmtz": "03:04:05.250000+05:30", "iv": "1 day 02:03:04",
        "arr": [1, 2, null], "arr2": ["a b", "c\"d", null, "NULL"], "arr_nested": [[1, 2], [3, 4]],
        "e": "happy", "dom": 7, "earr": ["sad", "happy"], "nul": null, "ip": "192.168.0.1/24", "o": 42
    });
    for (k, v) in expect.as_object().unwrap() {
        assert_eq!(&n[k], v, "column {k}");
    }
    assert_eq!(
        n.as_object().unwrap().len(),
        expect.as_object().unwrap().len()
    );
    assert_eq!(ch["entity_id"], json!({"id": 1}));
    assert_eq!(ch["entity"], "public.types");
    assert_eq!(ch["source"]["db"], "shop");
    // the schema_change before it names types and the key
    let sc = events
        .iter()
        .find(|e| e["type"] == "schema_change")
        .expect("schema_change");
    let cols = sc["columns"].as_array().unwrap();
    assert_eq!(
        cols[0],
        json!({"name": "id", "type": "int4", "type_oid": 23, "key": true})
    );
    assert_eq!(
        cols.iter().find(|c| c["name"] == "e").unwrap()["type"],
        "mood"
    );
    running.shutdown();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_update_delete_truncate_in_order() {
    let pg = cluster("CREATE TABLE public.orders (id int PRIMARY KEY, status text);").await;
    let dir = tempfile::tempdir().unwrap();
    let running = start(&pg, dir.path(), "").await;
    pg.execute("shop", "INSERT INTO orders VALUES (7, 'paid'), (8, 'new')")
        .await
        .unwrap();
    pg.execute("shop", "UPDATE orders SET status = 'shipped' WHERE id = 7")
        .await
        .unwrap();
    pg.execute("shop", "DELETE FROM orders WHERE id = 8")
        .await
        .unwrap();
    pg.execute("shop", "TRUNCATE orders").await.unwrap();
    let events = read_until(&running.log, 1, count_changes(5)).await;
    let ch = changes(&events);
    let ops: Vec<&str> = ch
        .iter()
        .map(|c| c["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["insert", "insert", "update", "delete", "truncate"]);
    // dense lsns from 1
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["lsn"], json!(i as u64 + 1));
    }
    // two inserts of one transaction share the commit lsn and have indexes in order
    assert_eq!(ch[0]["tx"]["commit_lsn"], ch[1]["tx"]["commit_lsn"]);
    assert!(ch[0]["tx"]["index"].as_u64() < ch[1]["tx"]["index"].as_u64());
    assert_eq!(
        ch[0]["id"],
        json!(format!(
            "{}:{}",
            ch[0]["tx"]["commit_lsn"].as_str().unwrap(),
            ch[0]["tx"]["index"]
        ))
    );
    assert_eq!(ch[2]["new_data"], json!({"id": 7, "status": "shipped"}));
    assert_eq!(
        ch[2]["old_data"],
        Value::Null,
        "default identity, key unchanged: no old row"
    );
    assert_eq!(
        ch[3]["old_data"],
        json!({"id": 8}),
        "default identity delete: key only"
    );
    assert_eq!(ch[3]["new_data"], Value::Null);
    assert_eq!(ch[4]["entity"], "public.orders");
    assert!(ch[4]["entity_id"].is_null());
    // timestamps are commit times in µs, non-decreasing
    let ts: Vec<i64> = ch
        .iter()
        .map(|c| c["timestamp"].as_i64().unwrap())
        .collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]));
    assert!(ts[0] > 1_700_000_000_000_000);
    running.shutdown();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_identity_default_vs_full() {
    let pg = cluster(
        "CREATE TABLE public.d (id int PRIMARY KEY, v text);
         CREATE TABLE public.f (id int PRIMARY KEY, v text); ALTER TABLE public.f REPLICA IDENTITY FULL;
         CREATE TABLE public.nokey (a int, b text); ALTER TABLE public.nokey REPLICA IDENTITY FULL;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let running = start(&pg, dir.path(), "").await;
    pg.execute(
        "shop",
        "INSERT INTO d VALUES (1, 'a'); INSERT INTO f VALUES (1, 'a'); INSERT INTO nokey VALUES (1, 'x');
         UPDATE d SET v = 'b'; UPDATE f SET v = 'b'; UPDATE d SET id = 2; UPDATE nokey SET b = 'y';
         DELETE FROM d; DELETE FROM f;",
    )
    .await
    .unwrap();
    let events = read_until(&running.log, 1, count_changes(9)).await;
    let ch = changes(&events);
    let find = |table: &str, op: &str| -> Vec<&Value> {
        ch.iter()
            .copied()
            .filter(|c| c["table"] == table && c["operation"] == op)
            .collect()
    };
    assert_eq!(find("d", "update")[0]["old_data"], Value::Null);
    assert_eq!(
        find("f", "update")[0]["old_data"],
        json!({"id": 1, "v": "a"})
    );
    assert_eq!(
        find("f", "update")[0]["entity_id"],
        json!({"id": 1}),
        "primary key, not the whole row"
    );
    assert_eq!(
        find("d", "update")[1]["old_data"],
        json!({"id": 1}),
        "key change carries the old key"
    );
    assert_eq!(find("d", "update")[1]["entity_id"], json!({"id": 2}));
    assert_eq!(find("d", "delete")[0]["old_data"], json!({"id": 2}));
    assert_eq!(
        find("f", "delete")[0]["old_data"],
        json!({"id": 1, "v": "b"})
    );
    assert_eq!(
        find("nokey", "update")[0]["old_data"],
        json!({"a": 1, "b": "x"})
    );
    running.shutdown();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_toast_values() {
    let pg = cluster(
        "CREATE TABLE public.docs (id int PRIMARY KEY, title text, body text);
         ALTER TABLE public.docs ALTER COLUMN body SET STORAGE EXTERNAL;
         CREATE TABLE public.docs_full (id int PRIMARY KEY, title text, body text);
         ALTER TABLE public.docs_full ALTER COLUMN body SET STORAGE EXTERNAL;
         ALTER TABLE public.docs_full REPLICA IDENTITY FULL;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let running = start(&pg, dir.path(), "").await;
    pg.execute(
        "shop",
        "INSERT INTO docs VALUES (1, 'a', repeat('x', 10000)); UPDATE docs SET title = 'b' WHERE id = 1;
         INSERT INTO docs_full VALUES (1, 'a', repeat('y', 10000)); UPDATE docs_full SET title = 'b' WHERE id = 1;",
    )
    .await
    .unwrap();
    let events = read_until(&running.log, 1, count_changes(4)).await;
    let ch = changes(&events);
    let upd: Vec<&&Value> = ch.iter().filter(|c| c["operation"] == "update").collect();
    assert_eq!(upd[0]["table"], "docs");
    assert_eq!(
        upd[0]["new_data"],
        json!({"id": 1, "title": "b"}),
        "unchanged toast left out"
    );
    assert_eq!(upd[0]["unchanged_toast"], json!(["body"]));
    assert_eq!(upd[1]["table"], "docs_full");
    assert_eq!(
        upd[1]["new_data"]["body"].as_str().unwrap().len(),
        10000,
        "filled from the old row"
    );
    assert!(upd[1].get("unchanged_toast").is_none());
    running.shutdown();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_added_and_dropped_mid_stream() {
    let pg = cluster("CREATE TABLE public.items (id int PRIMARY KEY, a text, b text);").await;
    let dir = tempfile::tempdir().unwrap();
    let running = start(&pg, dir.path(), "").await;
    pg.execute("shop", "INSERT INTO items VALUES (1, 'a', 'b')")
        .await
        .unwrap();
    pg.execute("shop", "ALTER TABLE items ADD COLUMN c int DEFAULT 5")
        .await
        .unwrap();
    pg.execute("shop", "INSERT INTO items VALUES (2, 'a', 'b', 6)")
        .await
        .unwrap();
    pg.execute("shop", "ALTER TABLE items DROP COLUMN a")
        .await
        .unwrap();
    pg.execute("shop", "INSERT INTO items VALUES (3, 'b', 7)")
        .await
        .unwrap();
    let events = read_until(&running.log, 1, count_changes(3)).await;
    let kinds: Vec<String> = events
        .iter()
        .map(|e| match e["type"].as_str().unwrap() {
            "change" => format!("row{}", e["new_data"]["id"]),
            t => t.to_string(),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "schema_change",
            "row1",
            "schema_change",
            "row2",
            "schema_change",
            "row3"
        ]
    );
    let names = |e: &Value| -> Vec<String> {
        e["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&events[2]), ["id", "a", "b", "c"]);
    assert_eq!(names(&events[4]), ["id", "b", "c"]);
    assert_eq!(
        events[3]["new_data"],
        json!({"id": 2, "a": "a", "b": "b", "c": 6})
    );
    assert_eq!(events[5]["new_data"], json!({"id": 3, "b": "b", "c": 7}));
    running.shutdown();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_filter_and_messages_and_origin() {
    let pg = cluster("CREATE TABLE public.trades (id int PRIMARY KEY); CREATE TABLE public.other (id int PRIMARY KEY);").await;
    let dir = tempfile::tempdir().unwrap();
    let running = start(
        &pg,
        dir.path(),
        "tables = { trades = [\"insert\", \"update\"] }",
    )
    .await;
    pg.execute(
        "shop",
        "INSERT INTO other VALUES (1); INSERT INTO trades VALUES (1); DELETE FROM trades;
         SELECT pg_logical_emit_message(true, 'audit', 'hello');
         SELECT pg_replication_origin_create('upstream');",
    )
    .await
    .unwrap();
    pg.execute(
        "shop",
        "SELECT pg_replication_origin_session_setup('upstream'); INSERT INTO trades VALUES (2);",
    )
    .await
    .unwrap();
    let events = read_until(&running.log, 1, |ev| changes(ev).len() >= 2).await;
    let ch = changes(&events);
    assert!(
        ch.iter()
            .all(|c| c["table"] == "trades" && c["operation"] == "insert"),
        "{ch:?}"
    );
    assert_eq!(ch[1]["source"]["origin"], "upstream");
    assert!(ch[0]["source"].get("origin").is_none());
    let msg = events
        .iter()
        .find(|e| e["type"] == "message")
        .expect("logical message");
    assert_eq!(msg["prefix"], "audit");
    assert_eq!(msg["content"], "hello");
    assert_eq!(msg["transactional"], true);
    running.shutdown();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_stream_status_and_health() {
    let pg = cluster("CREATE TABLE public.t (id int PRIMARY KEY);").await;
    let dir = tempfile::tempdir().unwrap();
    let running = start(&pg, dir.path(), "").await;
    let base = format!("http://{}", running.addr);
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // a live stream opened before the changes sees them
    let mut live = client
        .get(format!("{base}/v1/changes?from=now"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.headers()["content-type"], "application/x-ndjson");
    pg.execute("shop", "INSERT INTO t SELECT generate_series(1, 5)")
        .await
        .unwrap();
    let mut buf = String::new();
    while buf
        .lines()
        .filter(|l| l.contains("\"type\":\"change\""))
        .count()
        < 5
    {
        let chunk = tokio::time::timeout(WAIT, live.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let ids: Vec<i64> = buf
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "change")
        .map(|v| v["new_data"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    // from_lsn is inclusive; the stream is typed native JSON
    let status: Value = client
        .get(format!("{base}/v1/status"))
        .send()
        .await
        .unwrap()
        .json_value()
        .await;
    let current = status["current_lsn"].as_u64().unwrap();
    assert!(current >= 6, "{status}");
    assert_eq!(status["oldest_lsn"], 1);
    assert!(status["source"]["confirmed_flush_lsn"]
        .as_str()
        .unwrap()
        .contains('/'));
    let mut from = client
        .get(format!("{base}/v1/changes?from_lsn={current}"))
        .send()
        .await
        .unwrap();
    let chunk = tokio::time::timeout(WAIT, from.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let first: Value =
        serde_json::from_str(std::str::from_utf8(&chunk).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(first["lsn"], current);
    let ev = spillway_core::Event::parse(
        std::str::from_utf8(&chunk)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(ev.lsn(), Some(current));
    // bad parameters are 400 with a JSON error naming the parameter
    for (q, needle) in [
        ("from_lsn=abc", "from_lsn"),
        ("from=later", "from"),
        ("from=now&from_lsn=1", "both"),
        ("bogus=1", "bogus"),
    ] {
        let r = client
            .get(format!("{base}/v1/changes?{q}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{q}");
        let body: Value = r.json_value().await;
        assert!(
            body["error"].as_str().unwrap().contains(needle),
            "{q}: {body}"
        );
    }
    // the slot is confirmed once the log holds the data durably
    let deadline = Instant::now() + WAIT;
    loop {
        let rows = pg.execute("shop", "SELECT confirmed_flush_lsn >= pg_current_wal_insert_lsn() - 1000000 FROM pg_replication_slots WHERE slot_name = 'spillway'").await.unwrap();
        if rows[0][0].as_deref() == Some("t") {
            break;
        }
        assert!(Instant::now() < deadline, "slot never confirmed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.shutdown();
    running.wait().await.unwrap();
}

pub(crate) trait JsonBody {
    async fn json_value(self) -> Value;
}

impl JsonBody for reqwest::Response {
    async fn json_value(self) -> Value {
        serde_json::from_slice(&self.bytes().await.unwrap()).unwrap()
    }
}

// ---------- the binary as a separate process ----------

pub(crate) struct Proc {
    child: Child,
    stderr_path: std::path::PathBuf,
}

impl Proc {
    pub(crate) fn start(config: &Path, workdir: &Path) -> Proc {
        let config = config.display().to_string();
        Proc::start_with(&["run", "--config", &config], &[], workdir)
    }

    /// `spillway <args>` with `envs` on top of a clean environment (no
    /// inherited `SPILLWAY_*` or reference-001 variables), in `workdir`.
    pub(crate) fn start_with(args: &[&str], envs: &[(&str, &str)], workdir: &Path) -> Proc {
        Proc::start_via(&[], args, envs, workdir)
    }

    /// Like [`Proc::start_with`], but `spillway` is started by `wrapper` (a
    /// command line that ends by exec'ing its last argument, the binary).
    pub(crate) fn start_via(
        wrapper: &[&str],
        args: &[&str],
        envs: &[(&str, &str)],
        workdir: &Path,
    ) -> Proc {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let stderr_path = workdir.join(format!(
            "stderr-{}.log",
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = match wrapper.split_first() {
            None => Command::new(env!("CARGO_BIN_EXE_spillway")),
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(env!("CARGO_BIN_EXE_spillway"));
                c
            }
        };
        for (k, _) in std::env::vars() {
            let reference = [
                "DB_DSN",
                "SLOT_NAME",
                "PUBLICATION_NAME",
                "TABLE_FILTER",
                "OUTPUT_PLUGIN",
                "NATS_PUB_URI",
                "TOPIC_MAPPING",
                "TOPIC_PREFIX",
            ];
            if k.starts_with("SPILLWAY_") || reference.contains(&k.as_str()) {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .args(args)
            .envs(envs.iter().copied())
            .env("RUST_LOG", "info")
            .current_dir(workdir)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Proc { child, stderr_path }
    }

    /// Whether the process has exited already.
    pub(crate) fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub(crate) fn kill9(mut self) {
        spillway_testkit::send_signal(self.child.id(), "KILL");
        let _ = self.child.wait();
    }

    pub(crate) fn terminate(mut self) -> std::process::ExitStatus {
        spillway_testkit::send_signal(self.child.id(), "TERM");
        self.child.wait().unwrap()
    }

    pub(crate) fn peak_rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens the log read-only-ish (after the process stopped) and returns every event.
pub(crate) fn read_log_dir(dir: &Path) -> Vec<Value> {
    let (log, writer) = spillway_log::ChangeLog::open(spillway_log::LogOptions::new(dir)).unwrap();
    let mut reader = log.reader(1).unwrap();
    let mut out = Vec::new();
    loop {
        let batch = reader.read_batch(100_000, 64 << 20).unwrap();
        if batch.is_empty() {
            break;
        }
        out.extend(
            batch
                .into_iter()
                .map(|r| serde_json::from_slice::<Value>(&r.payload).unwrap()),
        );
    }
    drop(writer);
    out
}

/// Waits until a spillway process streams from the slot (so later writes are captured).
pub(crate) async fn wait_streaming(pg: &PgCluster) {
    let deadline = Instant::now() + WAIT;
    loop {
        let rows = pg
            .execute(
                "shop",
                "SELECT active FROM pg_replication_slots WHERE slot_name = 'spillway'",
            )
            .await
            .unwrap();
        if rows.first().and_then(|r| r[0].as_deref()) == Some("t") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "spillway never started streaming"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The pid of the walsender streaming from the slot `spillway`, if one does.
pub(crate) async fn slot_pid(pg: &PgCluster) -> Option<i64> {
    let rows = pg
        .execute(
            "shop",
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'spillway'",
        )
        .await
        .ok()?;
    rows.first()?.first()?.as_deref()?.parse().ok()
}

/// Waits until a walsender other than `old` streams from the slot (a new
/// connection of `p`, not the one before a kill or restart); returns its pid.
pub(crate) async fn wait_new_walsender(pg: &PgCluster, old: Option<i64>, p: &mut Proc) -> i64 {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(pid) = slot_pid(pg).await {
            if Some(pid) != old {
                return pid;
            }
        }
        assert!(
            Instant::now() < deadline && !p.has_exited(),
            "spillway never streamed (again): {}",
            p.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `SELECT count(*)` of `table` in database `shop`.
pub(crate) async fn row_count(pg: &PgCluster, table: &str) -> i64 {
    pg.execute("shop", &format!("SELECT count(*) FROM {table}"))
        .await
        .unwrap()[0][0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

/// Waits until `table` holds at least `n` rows (a write load got that far).
pub(crate) async fn wait_rows(pg: &PgCluster, table: &str, n: i64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let have = row_count(pg, table).await;
        if have >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{table} holds {have} rows, never {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn wait_confirmed_caught_up(pg: &PgCluster) {
    let target = pg
        .execute("shop", "SELECT pg_current_wal_insert_lsn()::text")
        .await
        .unwrap()[0][0]
        .clone()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let rows = pg
            .execute("shop", &format!("SELECT confirmed_flush_lsn >= '{target}'::pg_lsn FROM pg_replication_slots WHERE slot_name = 'spillway'"))
            .await
            .unwrap();
        if rows.first().and_then(|r| r[0].as_deref()) == Some("t") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "spillway never confirmed {target}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A write load on its own connection: `sql(next)` for `next` = 1,
/// 1 + `step`, … with `pause` between statements, until the sender is told
/// `true`; the task returns the last id written.
pub(crate) fn write_load(
    pg: &PgCluster,
    step: i64,
    pause: Duration,
    sql: impl Fn(i64) -> String + Send + 'static,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<i64>,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let writer_pg = pg.connect_config("shop");
    let load = tokio::spawn(async move {
        let mut conn = spillway_postgres::PgConnection::connect(&writer_pg, false)
            .await
            .unwrap();
        let mut next = 1i64;
        while !*stop_rx.borrow() {
            conn.simple_query(&sql(next)).await.unwrap();
            next += step;
            tokio::time::sleep(pause).await;
        }
        next - 1
    });
    (stop_tx, load)
}

pub(crate) fn ids_of(events: &[Value], table: &str) -> Vec<i64> {
    events
        .iter()
        .filter(|e| e["type"] == "change" && e["table"] == table && e["operation"] == "insert")
        .map(|e| e["new_data"]["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_restart_resumes_without_loss_or_duplicates() {
    let pg = cluster("CREATE TABLE public.t (id int PRIMARY KEY);").await;
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    let cfg = dir.path().join("spillway.toml");
    std::fs::write(&cfg, config_text(&pg, &log_dir, "")).unwrap();
    let p = Proc::start(&cfg, dir.path());
    wait_streaming(&pg).await;
    pg.execute("shop", "INSERT INTO t SELECT generate_series(1, 100)")
        .await
        .unwrap();
    wait_confirmed_caught_up(&pg).await;
    let stderr = p.stderr();
    let status = p.terminate();
    assert!(status.success(), "SIGTERM exits cleanly: {stderr}");
    // changes while spillway is down
    pg.execute("shop", "INSERT INTO t SELECT generate_series(101, 200)")
        .await
        .unwrap();
    let p = Proc::start(&cfg, dir.path());
    pg.execute("shop", "INSERT INTO t SELECT generate_series(201, 300)")
        .await
        .unwrap();
    wait_confirmed_caught_up(&pg).await;
    assert!(p.terminate().success());
    let events = read_log_dir(&log_dir);
    assert_eq!(ids_of(&events, "t"), (1..=300).collect::<Vec<_>>());
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["lsn"], json!(i as u64 + 1), "dense lsns across restarts");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_write_load_loses_nothing() {
    let pg = cluster("CREATE TABLE public.t (id int PRIMARY KEY, pad text);").await;
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    let cfg = dir.path().join("spillway.toml");
    std::fs::write(&cfg, config_text(&pg, &log_dir, "")).unwrap();
    let p = Proc::start(&cfg, dir.path());
    wait_streaming(&pg).await;
    let (stop_tx, load) = write_load(&pg, 50, Duration::ZERO, |next| {
        format!(
            "INSERT INTO t SELECT g, repeat('p', 100) FROM generate_series({next}, {}) g",
            next + 49
        )
    });
    // let the load run until spillway has confirmed a good part of it, then kill it hard
    wait_rows(&pg, "t", 5_000).await;
    wait_confirmed_caught_up(&pg).await;
    let walsender = slot_pid(&pg).await;
    let at_kill = row_count(&pg, "t").await;
    p.kill9();
    // writes continue while spillway is dead
    wait_rows(&pg, "t", at_kill + 1_000).await;
    let mut p = Proc::start(&cfg, dir.path());
    // and while the new process streams again
    wait_new_walsender(&pg, walsender, &mut p).await;
    let at_restart = row_count(&pg, "t").await;
    wait_rows(&pg, "t", at_restart + 1_000).await;
    stop_tx.send(true).unwrap();
    let last = load.await.unwrap();
    wait_confirmed_caught_up(&pg).await;
    assert!(p.terminate().success());
    let events = read_log_dir(&log_dir);
    let ids = ids_of(&events, "t");
    assert_eq!(ids.len() as i64, last, "every committed row exactly once");
    assert_eq!(ids, (1..=last).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_row_transaction_streams_in_bounded_memory() {
    let pg = cluster("CREATE TABLE public.big (id int PRIMARY KEY, v text);").await;
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    let cfg = dir.path().join("spillway.toml");
    let mut text = config_text(&pg, &log_dir, "");
    text = text.replace("segment_bytes = \"1MiB\"", "segment_bytes = \"64MiB\"");
    std::fs::write(&cfg, text).unwrap();
    let p = Proc::start(&cfg, dir.path());
    wait_streaming(&pg).await;
    let rss_start_kib = p.peak_rss_kib();
    pg.execute(
        "shop",
        "INSERT INTO big SELECT g, 'value ' || g FROM generate_series(1, 1000000) g",
    )
    .await
    .unwrap();
    wait_confirmed_caught_up(&pg).await;
    let rss_kib = p.peak_rss_kib();
    eprintln!(
        "peak RSS while a 1,000,000-row transaction streamed: {} MiB ({} KiB; {} KiB when streaming began)",
        rss_kib / 1024,
        rss_kib,
        rss_start_kib
    );
    assert!(p.terminate().success());
    assert!(rss_kib > 0 && rss_start_kib > 0);
    // What the design holds while one transaction streams (~360 MB of events
    // here): the last event (held to learn whether it ends the transaction),
    // the append queue (4096 records in batches of at most 256 records or
    // 256 KiB: ~1.5 MiB of these ~360-byte events, 4 MiB at most), the writer's
    // 320 KiB write buffer and the replication read buffer (256 KiB; these
    // messages are small). The 8 MiB in flight to fsync are page cache, not
    // the process's memory. About 2-5 MiB, plus what the allocator keeps.
    // Measured (debug build, 2 cores): 4.7-5.0 MiB of growth alone, up to
    // 6.4 MiB with four copies of this test at once. 12 MiB leaves room for
    // the allocator and still fails anything that keeps per-row state for
    // the transaction (1M rows × 16 bytes is already 16 MB).
    let growth_kib = rss_kib.saturating_sub(rss_start_kib);
    assert!(
        growth_kib < 12 * 1024,
        "peak RSS grew by {} KiB (from {} KiB to {} KiB) while a 1M-row transaction streamed",
        growth_kib,
        rss_start_kib,
        rss_kib
    );
    let (log, _w) = spillway_log::ChangeLog::open(spillway_log::LogOptions::new(log_dir)).unwrap();
    // schema_change + 1,000,000 rows, one transaction
    assert_eq!(log.committed_lsn(), 1_000_001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_level_replica_fails_at_once_and_check_explains() {
    let pg = cluster_with(
        PgOptions {
            wal_level: "replica".into(),
            ..Default::default()
        },
        "CREATE TABLE public.t (a int);",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("spillway.toml");
    std::fs::write(&cfg, config_text(&pg, &dir.path().join("log"), "")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ")
            && last.contains("wal_level")
            && last.contains("ALTER SYSTEM SET wal_level = logical"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("wal_level is `replica`"), "{text}");
    assert!(text.contains("public.t: no primary key"), "{text}");
    assert!(text.contains("fix: "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_on_a_ready_server() {
    let pg = cluster(
        "CREATE TABLE public.t (id int PRIMARY KEY); ALTER TABLE public.t REPLICA IDENTITY FULL;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("spillway.toml");
    std::fs::write(&cfg, config_text(&pg, &dir.path().join("log"), "")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("public.t: replica identity full"), "{text}");
    assert!(text.contains("ready for `spillway run`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_password_authentication() {
    let pg = cluster_with(
        PgOptions {
            auth: Auth::Scram("s3cret pw".into()),
            ..Default::default()
        },
        "CREATE TABLE public.t (id int PRIMARY KEY);",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let running = start(&pg, dir.path(), "").await;
    pg.execute("shop", "INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let events = read_until(&running.log, 1, count_changes(1)).await;
    assert_eq!(changes(&events)[0]["new_data"], json!({"id": 1}));
    running.shutdown();
    running.wait().await.unwrap();
    // a wrong password is a one-line authentication error
    let mut bad = pg.connect_config("shop");
    bad.password = Some("wrong".into());
    let e = spillway_postgres::PgConnection::connect(&bad, false)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("authentication failed") && !e.contains('\n'),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_password_authentication() {
    let pg = cluster_with(
        PgOptions {
            auth: Auth::Md5("md5pw".into()),
            ..Default::default()
        },
        "",
    )
    .await;
    let rows = pg.execute("shop", "SELECT 1").await.unwrap();
    assert_eq!(rows[0][0].as_deref(), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sslmode_require_and_verify_full() {
    let pg = cluster_with(
        PgOptions {
            tls: true,
            auth: Auth::Scram("pw".into()),
            ..Default::default()
        },
        "CREATE TABLE public.t (id int PRIMARY KEY);",
    )
    .await;
    let root = pg.dir().join("root.crt");
    for mode in [
        "require".to_string(),
        format!("verify-full&sslrootcert={}", root.display()),
    ] {
        let dsn = format!(
            "postgres://postgres:pw@localhost:{}/shop?sslmode={mode}",
            pg.port
        );
        let cfg = spillway_postgres::ConnectConfig::parse(&dsn).unwrap();
        let mut c = spillway_postgres::PgConnection::connect(&cfg, false)
            .await
            .unwrap();
        assert!(c.is_tls());
        let rows = c
            .simple_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .await
            .unwrap();
        assert_eq!(rows[0][0].as_deref(), Some("t"), "{mode}");
        c.close().await;
    }
    // capture over TLS end to end
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[source]\ndsn = \"postgres://postgres:pw@127.0.0.1:{}/shop?sslmode=require\"\n[log]\ndir = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\n",
        pg.port,
        dir.path().display()
    );
    let running = spillway_server::start(Config::from_parts(Some(("t", &text)), &[]).unwrap())
        .await
        .unwrap();
    pg.execute("shop", "INSERT INTO t VALUES (42)")
        .await
        .unwrap();
    let events = read_until(&running.log, 1, count_changes(1)).await;
    assert_eq!(changes(&events)[0]["new_data"]["id"], 42);
    running.shutdown();
    running.wait().await.unwrap();
    // verify-full without a readable CA file fails with a clear error
    let bad = format!(
        "postgres://postgres:pw@localhost:{}/shop?sslmode=verify-full&sslrootcert=/nonexistent.crt",
        pg.port
    );
    let e = spillway_postgres::PgConnection::connect(
        &spillway_postgres::ConnectConfig::parse(&bad).unwrap(),
        false,
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("sslrootcert"), "{e}");
}

#[test]
fn demo_once_shows_the_scripted_changes() {
    let out = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["demo", "--once"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("bank.holding"), "{text}");
    assert!(text.contains("commerce.products"), "{text}");
    assert_eq!(text.matches("insert  ").count(), 7, "{text}");
    assert_eq!(text.matches("update  ").count(), 3, "{text}");
    assert_eq!(text.matches("delete  ").count(), 3, "{text}");
    assert!(text.contains("done: 13 change events captured"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_advances_while_only_uncaptured_tables_change() {
    let pg = cluster("CREATE TABLE public.a (id int PRIMARY KEY); CREATE TABLE public.b (id int PRIMARY KEY, pad text);").await;
    let dir = tempfile::tempdir().unwrap();
    // publication FOR TABLE public.a: writes to b produce WAL but nothing to capture
    let running = start(&pg, dir.path(), "tables = [\"public.a\"]").await;
    pg.execute("shop", "INSERT INTO a VALUES (1)")
        .await
        .unwrap();
    read_until(&running.log, 1, count_changes(1)).await;
    for i in 0..20 {
        pg.execute(
            "shop",
            &format!(
                "INSERT INTO b SELECT g, repeat('x', 200) FROM generate_series({}, {}) g",
                i * 1000,
                i * 1000 + 999
            ),
        )
        .await
        .unwrap();
    }
    // the slot is confirmed past all of it, so the WAL of b is not retained for us
    wait_confirmed_caught_up(&pg).await;
    assert_eq!(
        running.log.committed_lsn(),
        2,
        "schema_change + one row of a, nothing of b"
    );
    running.shutdown();
    running.wait().await.unwrap();
    // The slot is now confirmed beyond the log's last commit, legitimately: a
    // restart must tell that from a log that lost transactions (it stores the
    // idle position before confirming it) and write no gap record.
    let running = start(&pg, dir.path(), "tables = [\"public.a\"]").await;
    pg.execute("shop", "INSERT INTO a VALUES (2)")
        .await
        .unwrap();
    let events = read_until(&running.log, 1, count_changes(2)).await;
    let gaps: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "requery_required")
        .collect();
    assert!(
        gaps.is_empty(),
        "idle progress was taken for a gap: {gaps:?}"
    );
    assert_eq!(ids_of(&events, "a"), vec![1, 2]);
    running.shutdown();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_reconnects_and_resumes() {
    let mut pg = cluster("CREATE TABLE public.t (id int PRIMARY KEY);").await;
    let dir = tempfile::tempdir().unwrap();
    let running = start(&pg, dir.path(), "").await;
    pg.execute("shop", "INSERT INTO t SELECT generate_series(1, 10)")
        .await
        .unwrap();
    read_until(&running.log, 1, count_changes(10)).await;
    pg = tokio::task::spawn_blocking(move || {
        pg.restart().unwrap();
        pg
    })
    .await
    .unwrap();
    pg.execute("shop", "INSERT INTO t SELECT generate_series(11, 20)")
        .await
        .unwrap();
    let events = read_until(&running.log, 1, count_changes(20)).await;
    assert_eq!(ids_of(&events, "t"), (1..=20).collect::<Vec<_>>());
    let shapes = events
        .iter()
        .filter(|e| e["type"] == "schema_change")
        .count();
    assert_eq!(
        shapes, 1,
        "a reconnect does not announce an unchanged table again"
    );
    running.shutdown();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_the_stream_raw_and_pretty() {
    use std::io::{BufRead, BufReader};
    let pg = cluster("CREATE TABLE public.t (id int PRIMARY KEY, v text);").await;
    let dir = tempfile::tempdir().unwrap();
    let running = start(&pg, dir.path(), "").await;
    pg.execute(
        "shop",
        "INSERT INTO t VALUES (1, 'a'); UPDATE t SET v = 'b'; DELETE FROM t;",
    )
    .await
    .unwrap();
    read_until(&running.log, 1, count_changes(3)).await;
    let url = format!("http://{}", running.addr);
    let lines = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for extra in [vec!["--json"], vec![]] {
            let mut child = Command::new(env!("CARGO_BIN_EXE_spillway"))
                .args(["tail", "--url", &url, "--from", "beginning"])
                .args(extra)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut reader = BufReader::new(child.stdout.take().unwrap());
            let mut got = Vec::new();
            while got.len() < 4 {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                if !line.trim().is_empty() && !line.starts_with("   ") {
                    got.push(line.trim_end().to_string());
                }
            }
            let _ = child.kill();
            let _ = child.wait();
            out.push(got);
        }
        out
    })
    .await
    .unwrap();
    // --json: the exact NDJSON of the log, starting at lsn 1
    let raw: Vec<Value> = lines[0]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(raw[0]["type"], "schema_change");
    assert_eq!(raw[1]["operation"], "insert");
    assert_eq!(raw[3]["operation"], "delete");
    // pretty: one headline per event, no colour codes when stdout is not a terminal
    assert!(
        lines[1][1].contains("insert") && lines[1][1].contains("public.t"),
        "{:?}",
        lines[1]
    );
    assert!(lines[1][2].contains("update"), "{:?}", lines[1]);
    assert!(lines[1].iter().all(|l| !l.contains('\x1b')));
    // an unreachable server is a one-line error
    let out = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args([
            "tail",
            "--url",
            &format!("http://127.0.0.1:{}", spillway_testkit::free_port()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim().lines().count(),
        1
    );
    running.shutdown();
    running.wait().await.unwrap();
}

#[test]
fn demo_runs_until_ctrl_c_then_removes_its_files() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .arg("demo")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let (mut tmp, mut psql, mut text) = (None, None, String::new());
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "demo ended early: {text}"
        );
        text.push_str(&line);
        if let Some(rest) = line.trim().strip_prefix("▶ temporary files in ") {
            tmp = rest.split(' ').next().map(std::path::PathBuf::from);
        }
        if line.trim_start().starts_with("psql ") {
            psql = Some(line.trim().to_string());
        }
        if line.contains("Ctrl-C") {
            break;
        }
    }
    let tmp = tmp.expect("the demo names its temporary directory");
    assert!(tmp.exists());
    assert!(psql.unwrap().contains("/shop"), "{text}");
    spillway_testkit::send_signal(child.id(), "INT");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!tmp.exists(), "{} is left behind", tmp.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_made_by_the_user_is_honoured() {
    let pg = cluster(
        "CREATE TABLE public.t (id int PRIMARY KEY, v text, secret text);
         CREATE PUBLICATION spillway FOR TABLE public.t (id, v) WHERE (id > 5);",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let running = start(&pg, dir.path(), "").await;
    pg.execute(
        "shop",
        "INSERT INTO t SELECT g, 'v' || g, 'hidden' FROM generate_series(1, 10) g",
    )
    .await
    .unwrap();
    let events = read_until(&running.log, 1, count_changes(5)).await;
    let ch = changes(&events);
    assert_eq!(
        ids_of(&events, "t"),
        (6..=10).collect::<Vec<_>>(),
        "row filter applied in the database"
    );
    assert!(
        ch.iter().all(|c| c["new_data"].get("secret").is_none()),
        "column list applied"
    );
    // the publication was reused, not replaced
    let rows = pg
        .execute(
            "shop",
            "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'spillway'",
        )
        .await
        .unwrap();
    assert_eq!(rows[0][0].as_deref(), Some("1"));
    running.shutdown();
    running.wait().await.unwrap();
}

/// Review of issue 8: the idle position is stored before it is confirmed on
/// the hot path, not only at a clean shutdown. Killed with SIGKILL after
/// the slot was confirmed past the log's last commit (only uncaptured
/// changes), a restart writes no gap record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_progress_survives_a_kill_without_a_gap_record() {
    let pg = cluster("CREATE TABLE public.a (id int PRIMARY KEY); CREATE TABLE public.b (id int PRIMARY KEY, pad text);").await;
    let work = tempfile::tempdir().unwrap();
    let log_dir = work.path().join("log");
    let config_path = work.path().join("spillway.toml");
    std::fs::write(
        &config_path,
        config_text(&pg, &log_dir, "tables = [\"public.a\"]"),
    )
    .unwrap();
    let p = Proc::start(&config_path, work.path());
    // The slot exists once the stream runs; then one captured row.
    let deadline = Instant::now() + WAIT;
    while row_count(
        &pg,
        "pg_replication_slots WHERE slot_name = 'spillway' AND active",
    )
    .await
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "spillway never streamed: {}",
            p.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pg.execute("shop", "INSERT INTO a VALUES (1)")
        .await
        .unwrap();
    wait_confirmed_caught_up(&pg).await;
    // Only uncaptured changes from here; the slot is confirmed past them.
    pg.execute(
        "shop",
        "INSERT INTO b SELECT g, repeat('x', 200) FROM generate_series(1, 2000) g",
    )
    .await
    .unwrap();
    wait_confirmed_caught_up(&pg).await;
    p.kill9();
    let running = start(&pg, &log_dir, "tables = [\"public.a\"]").await;
    pg.execute("shop", "INSERT INTO a VALUES (2)")
        .await
        .unwrap();
    let events = read_until(&running.log, 1, count_changes(2)).await;
    let gaps: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "requery_required")
        .collect();
    assert!(
        gaps.is_empty(),
        "idle progress was taken for a gap: {gaps:?}"
    );
    assert_eq!(ids_of(&events, "a"), vec![1, 2]);
    running.shutdown();
    running.wait().await.unwrap();
}
