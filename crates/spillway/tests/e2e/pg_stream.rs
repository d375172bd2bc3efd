//! The consumer API against a real PostgreSQL: start positions, filters, batching, SSE,
//! heartbeats, named checkpoints, retention and trimming, auth, metrics, many consumers.

use crate::pg::{cluster, count_changes, read_until, JsonBody, Proc, WAIT};
use serde_json::{json, Value};
use spillway_server::config::Config;
use spillway_testkit::PgCluster;
use std::path::Path;
use std::time::{Duration, Instant};

fn config(pg: &PgCluster, dir: &Path, log_extra: &str, api_extra: &str) -> String {
    format!(
        "[source]\ndsn = \"{}\"\n[log]\ndir = \"{}\"\nsegment_bytes = \"4KiB\"\n{log_extra}\n[api]\nlisten = \"127.0.0.1:0\"\n{api_extra}\n",
        pg.dsn("shop"),
        dir.join("log").display()
    )
}

async fn start_with(
    pg: &PgCluster,
    dir: &Path,
    log_extra: &str,
    api_extra: &str,
) -> spillway_server::Running {
    let text = config(pg, dir, log_extra, api_extra);
    spillway_server::start(Config::from_parts(Some(("test", &text)), &[]).unwrap())
        .await
        .unwrap()
}

/// An open `/v1/changes` stream, read line by line.
struct Lines {
    resp: reqwest::Response,
    buf: String,
}

impl Lines {
    async fn open(url: &str) -> Lines {
        Lines::open_with(reqwest::Client::new().get(url)).await
    }

    async fn open_with(req: reqwest::RequestBuilder) -> Lines {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200, "{:?}", resp.headers());
        Lines {
            resp,
            buf: String::new(),
        }
    }

    /// The next non-empty line (panics after WAIT).
    async fn next(&mut self) -> String {
        loop {
            if let Some(pos) = self.buf.find('\n') {
                let line: String = self.buf.drain(..=pos).collect();
                if line.trim().is_empty() {
                    continue;
                }
                return line.trim_end().to_string();
            }
            let chunk = tokio::time::timeout(WAIT, self.resp.chunk())
                .await
                .expect("stream stalled")
                .unwrap()
                .expect("stream ended");
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    async fn next_json(&mut self) -> Value {
        serde_json::from_str(&self.next().await).unwrap()
    }

    /// The next `n` change events (skipping other types).
    async fn changes(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        while out.len() < n {
            let v = self.next_json().await;
            if v["type"] == "change" {
                out.push(v);
            }
        }
        out
    }
}

fn ids(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .map(|e| {
            e["new_data"]["id"]
                .as_i64()
                .or(e["old_data"]["id"].as_i64())
                .unwrap()
        })
        .collect()
}

const SCHEMA: &str = "CREATE SCHEMA bank; CREATE TABLE bank.holding (id int PRIMARY KEY, v text);
                      CREATE SCHEMA commerce; CREATE TABLE commerce.users (id int PRIMARY KEY, v text);
                      CREATE TABLE commerce.products (id int PRIMARY KEY, v text);";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_positions() {
    let pg = cluster(SCHEMA).await;
    let dir = tempfile::tempdir().unwrap();
    let running = start_with(&pg, dir.path(), "", "").await;
    let base = format!("http://{}", running.addr);
    pg.execute(
        "shop",
        "INSERT INTO bank.holding SELECT g, 'a' FROM generate_series(1, 10) g",
    )
    .await
    .unwrap();
    let first = read_until(&running.log, 1, count_changes(10)).await;
    let before_second = first.last().unwrap()["timestamp"].as_i64().unwrap() + 1;
    // the second commit gets a later timestamp: wait until PostgreSQL's clock is past it
    let deadline = Instant::now() + WAIT;
    loop {
        let rows = pg
            .execute(
                "shop",
                &format!("SELECT (extract(epoch FROM clock_timestamp()) * 1e6)::bigint > {before_second}"),
            )
            .await
            .unwrap();
        if rows[0][0].as_deref() == Some("t") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the clock never passed {before_second}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    pg.execute(
        "shop",
        "INSERT INTO bank.holding SELECT g, 'b' FROM generate_series(11, 20) g",
    )
    .await
    .unwrap();
    let all = read_until(&running.log, 1, count_changes(20)).await;
    let lsn_of = |id: i64| {
        all.iter().find(|e| e["new_data"]["id"] == id).unwrap()["lsn"]
            .as_u64()
            .unwrap()
    };

    let mut s = Lines::open(&format!("{base}/v1/changes?from=beginning")).await;
    assert_eq!(
        s.next_json().await["lsn"],
        1,
        "beginning starts at the oldest lsn"
    );
    assert_eq!(ids(&s.changes(20).await), (1..=20).collect::<Vec<_>>());

    let mut s = Lines::open(&format!("{base}/v1/changes?from_lsn={}", lsn_of(15))).await;
    assert_eq!(
        ids(&s.changes(6).await),
        (15..=20).collect::<Vec<_>>(),
        "from_lsn is inclusive"
    );

    let mut s = Lines::open(&format!("{base}/v1/changes?from_timestamp={before_second}")).await;
    assert_eq!(
        ids(&s.changes(10).await),
        (11..=20).collect::<Vec<_>>(),
        "from_timestamp in µs"
    );
    let secs = before_second / 1_000_000;
    let rfc = {
        // format µs as RFC 3339 with a +00:00 offset, through PostgreSQL to avoid a date library
        let rows = pg.execute("shop", &format!("SELECT to_char(to_timestamp({before_second}::float8 / 1e6) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '+00:00'")).await.unwrap();
        rows[0][0].clone().unwrap()
    };
    assert!(rfc.starts_with("20"), "{rfc} {secs}");
    let mut s = Lines::open(&format!(
        "{base}/v1/changes?from_timestamp={}",
        rfc.replace('+', "%2B")
    ))
    .await;
    assert_eq!(
        ids(&s.changes(10).await),
        (11..=20).collect::<Vec<_>>(),
        "from_timestamp in RFC 3339"
    );

    let mut s = Lines::open(&format!("{base}/v1/changes?from=now&heartbeat_ms=60000")).await;
    pg.execute("shop", "INSERT INTO bank.holding VALUES (21, 'c')")
        .await
        .unwrap();
    assert_eq!(ids(&s.changes(1).await), [21], "now: only what comes after");

    // a named consumer resumes after its checkpoint; a new one starts at the beginning
    let c = reqwest::Client::new();
    let r = c
        .put(format!("{base}/v1/consumers/search-sync/checkpoint"))
        .json_body(json!({"lsn": lsn_of(18)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut s = Lines::open(&format!("{base}/v1/changes?consumer=search-sync")).await;
    assert_eq!(ids(&s.changes(3).await), [19, 20, 21]);
    let mut s = Lines::open(&format!("{base}/v1/changes?consumer=newcomer")).await;
    assert_eq!(s.next_json().await["lsn"], 1);
    running.shutdown();
    running.wait().await.unwrap();
}

trait JsonRequest {
    fn json_body(self, v: Value) -> Self;
}

impl JsonRequest for reqwest::RequestBuilder {
    fn json_body(self, v: Value) -> Self {
        self.header("content-type", "application/json")
            .body(v.to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_happen_on_the_server() {
    let pg = cluster(SCHEMA).await;
    let dir = tempfile::tempdir().unwrap();
    let running = start_with(&pg, dir.path(), "", "").await;
    let base = format!("http://{}", running.addr);
    pg.execute(
        "shop",
        "INSERT INTO bank.holding VALUES (1, 'a'); INSERT INTO commerce.users VALUES (2, 'a'); INSERT INTO commerce.products VALUES (3, 'a');
         UPDATE bank.holding SET v = 'b'; UPDATE commerce.users SET v = 'b'; DELETE FROM commerce.products;",
    )
    .await
    .unwrap();
    read_until(&running.log, 1, count_changes(6)).await;
    let fetch = |q: &'static str, n: usize| {
        let base = base.clone();
        async move {
            let mut s = Lines::open(&format!("{base}/v1/changes?from=beginning&{q}")).await;
            let got = s.changes(n).await;
            // nothing else matching follows: a marker row in a table every filter below admits would be needed
            // to prove absence, so instead compare with what the log holds
            got.iter()
                .map(|e| {
                    format!(
                        "{}:{}",
                        e["entity"].as_str().unwrap(),
                        e["operation"].as_str().unwrap()
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        fetch("entities=commerce.*", 4).await,
        [
            "commerce.users:insert",
            "commerce.products:insert",
            "commerce.users:update",
            "commerce.products:delete"
        ]
    );
    assert_eq!(
        fetch("entities=holding,products", 4).await,
        [
            "bank.holding:insert",
            "commerce.products:insert",
            "bank.holding:update",
            "commerce.products:delete"
        ]
    );
    assert_eq!(
        fetch("exclude_entities=commerce.users", 4).await,
        [
            "bank.holding:insert",
            "commerce.products:insert",
            "bank.holding:update",
            "commerce.products:delete"
        ]
    );
    assert_eq!(
        fetch("operations=update,delete", 3).await,
        [
            "bank.holding:update",
            "commerce.users:update",
            "commerce.products:delete"
        ]
    );
    assert_eq!(
        fetch(
            "entities=commerce.*&exclude_entities=products&operations=insert",
            1
        )
        .await,
        ["commerce.users:insert"]
    );
    // schema_change events follow the entity filter
    let mut s = Lines::open(&format!(
        "{base}/v1/changes?from=beginning&entities=bank.holding"
    ))
    .await;
    let first = s.next_json().await;
    assert_eq!(
        (first["type"].as_str(), first["entity"].as_str()),
        (Some("schema_change"), Some("bank.holding"))
    );
    // and nothing from other tables arrives after the matching ones: add a holding row as a fence
    s.changes(2).await;
    pg.execute(
        "shop",
        "INSERT INTO commerce.users VALUES (9, 'x'); INSERT INTO bank.holding VALUES (9, 'fence')",
    )
    .await
    .unwrap();
    let next = s.changes(1).await;
    assert_eq!(next[0]["new_data"]["v"], "fence");
    running.shutdown();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_flush_by_size_and_by_timeout() {
    let pg = cluster(SCHEMA).await;
    let dir = tempfile::tempdir().unwrap();
    let running = start_with(&pg, dir.path(), "", "").await;
    let base = format!("http://{}", running.addr);
    // by timeout: 3 events, batch_size 100, timeout 1500 ms → they arrive together after ~1.5 s
    let mut s = Lines::open(&format!("{base}/v1/changes?from=now&batch_size=100&batch_timeout_ms=1500&entities=bank.holding&heartbeat_ms=60000")).await;
    pg.execute(
        "shop",
        "INSERT INTO bank.holding SELECT g, 'a' FROM generate_series(1, 3) g",
    )
    .await
    .unwrap();
    let t = Instant::now();
    let got = s.changes(3).await;
    let waited = t.elapsed();
    assert_eq!(ids(&got), [1, 2, 3]);
    assert!(
        waited >= Duration::from_millis(1200),
        "a partial batch waits for its timeout (got it after {waited:?})"
    );
    // by size: batch_size 3 with a long timeout → the batch goes out as soon as it is full
    let mut s = Lines::open(&format!("{base}/v1/changes?from=now&batch_size=3&batch_timeout_ms=60000&entities=bank.holding&heartbeat_ms=60000")).await;
    let t = Instant::now();
    pg.execute(
        "shop",
        "INSERT INTO bank.holding SELECT g, 'a' FROM generate_series(4, 6) g",
    )
    .await
    .unwrap();
    assert_eq!(ids(&s.changes(3).await), [4, 5, 6]);
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "a full batch does not wait for the 60 s timeout"
    );
    // default: no timeout, delivered as soon as durable
    let mut s = Lines::open(&format!("{base}/v1/changes?from=now&entities=bank.holding")).await;
    let t = Instant::now();
    pg.execute("shop", "INSERT INTO bank.holding VALUES (7, 'a')")
        .await
        .unwrap();
    assert_eq!(ids(&s.changes(1).await), [7]);
    assert!(t.elapsed() < Duration::from_secs(5));
    running.shutdown();
    running.wait().await.unwrap();
}

/// A batch is also cut by bytes: `batch_size=10000` of 4 KiB rows must not
/// become one multi-megabyte chunk (the per-stream buffer is 8 chunks; its
/// bound is in bytes, not in events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_cut_at_one_mebibyte_whatever_batch_size_says() {
    let pg = cluster(SCHEMA).await;
    let dir = tempfile::tempdir().unwrap();
    let running = start_with(&pg, dir.path(), "", "").await;
    pg.execute(
        "shop",
        "INSERT INTO bank.holding SELECT g, repeat('z', 4096) FROM generate_series(1, 2000) g",
    )
    .await
    .unwrap();
    read_until(&running.log, 1, count_changes(2000)).await;
    // Read the HTTP/1.1 chunked framing itself: each batch is one chunk.
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let mut sock = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    sock.write_all(
        b"GET /v1/changes?from=beginning&batch_size=10000&heartbeat_ms=60000 HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await
    .unwrap();
    let mut r = BufReader::new(sock);
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
        assert!(!line.is_empty(), "the server closed before the body");
    }
    let (mut total, mut largest, mut lines) = (0usize, 0usize, 0usize);
    while lines < 2000 {
        line.clear();
        tokio::time::timeout(WAIT, r.read_line(&mut line))
            .await
            .expect("the stream goes on")
            .unwrap();
        let size = usize::from_str_radix(line.trim(), 16).expect("a chunk size line");
        assert!(size > 0, "the stream ended early");
        let mut chunk = vec![0u8; size + 2];
        r.read_exact(&mut chunk).await.unwrap();
        total += size;
        largest = largest.max(size);
        lines += chunk[..size].iter().filter(|b| **b == b'\n').count();
    }
    assert!(
        total > 8 << 20,
        "the test streams more than 8 MiB ({total})"
    );
    assert!(
        largest <= (1 << 20) + 8192,
        "a chunk of {largest} bytes: batches must be cut at 1 MiB"
    );
    running.shutdown();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_resume_with_last_event_id_and_heartbeats_keep_idle_streams_alive() {
    let pg = cluster(SCHEMA).await;
    let dir = tempfile::tempdir().unwrap();
    let running = start_with(&pg, dir.path(), "", "").await;
    let base = format!("http://{}", running.addr);
    pg.execute(
        "shop",
        "INSERT INTO bank.holding SELECT g, 'a' FROM generate_series(1, 3) g",
    )
    .await
    .unwrap();
    read_until(&running.log, 1, count_changes(3)).await;
    let c = reqwest::Client::new();
    let mut s = Lines::open_with(
        c.get(format!("{base}/v1/changes?from=beginning"))
            .header("accept", "text/event-stream"),
    )
    .await;
    assert_eq!(s.resp.headers()["content-type"], "text/event-stream");
    // ids are lsn:epoch, the epoch as the response header names it
    let epoch = s.resp.headers()["spillway-log-epoch"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(epoch.len(), 16, "{epoch}");
    assert_eq!(epoch, running.log.current_epoch().id_hex());
    assert_eq!(s.next().await, format!("id: 1:{epoch}"));
    assert_eq!(s.next().await, "event: schema_change");
    assert!(s
        .next()
        .await
        .starts_with("data: {\"type\":\"schema_change\""));
    assert_eq!(s.next().await, format!("id: 2:{epoch}"));
    assert_eq!(s.next().await, "event: change");
    // a browser reconnecting with Last-Event-ID: 2:<epoch> continues at 3
    let mut s = Lines::open_with(
        c.get(format!("{base}/v1/changes?from=beginning"))
            .header("accept", "text/event-stream")
            .header("last-event-id", format!("2:{epoch}")),
    )
    .await;
    assert_eq!(s.next().await, format!("id: 3:{epoch}"));
    // a bare lsn (an earlier server's id) still works
    let mut s = Lines::open_with(
        c.get(format!("{base}/v1/changes?from=beginning"))
            .header("accept", "text/event-stream")
            .header("last-event-id", "2"),
    )
    .await;
    assert_eq!(s.next().await, format!("id: 3:{epoch}"));
    // an epoch this log never had: told, never taken as valid
    let mut s = Lines::open_with(
        c.get(format!("{base}/v1/changes?from=beginning"))
            .header("accept", "text/event-stream")
            .header("last-event-id", "2:00000000000000ff"),
    )
    .await;
    // with the id of where it moves the stream (the log's end), so a browser
    // reconnecting before the next event is not told again
    assert_eq!(s.next().await, format!("id: 4:{epoch}"));
    assert_eq!(s.next().await, "event: requery_required");
    let data = s.next().await;
    assert!(data.contains("\"reason\":\"unknown_log_epoch\""), "{data}");
    // an idle NDJSON stream gets heartbeat lines
    let mut s = Lines::open(&format!("{base}/v1/changes?from=now&heartbeat_ms=200")).await;
    let hb = s.next_json().await;
    assert_eq!(hb["type"], "heartbeat");
    assert_eq!(hb["current_lsn"], 4);
    running.shutdown();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_checkpoints_are_durable_and_monotone() {
    let pg = cluster(SCHEMA).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("spillway.toml"),
        config(&pg, dir.path(), "", ""),
    )
    .unwrap();
    let running = start_with(&pg, dir.path(), "", "").await;
    let base = format!("http://{}", running.addr);
    let c = reqwest::Client::new();
    pg.execute(
        "shop",
        "INSERT INTO bank.holding SELECT g, 'a' FROM generate_series(1, 20) g",
    )
    .await
    .unwrap();
    read_until(&running.log, 1, count_changes(20)).await;
    let put = |name: &str, body: Value| {
        c.put(format!("{base}/v1/consumers/{name}/checkpoint"))
            .json_body(body)
            .send()
    };
    let r = put("audit", json!({"lsn": 10})).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json_value().await["checkpoint"], 10);
    assert_eq!(
        put("audit", json!({"lsn": 5})).await.unwrap().status(),
        409,
        "never backward without force"
    );
    assert_eq!(
        put("audit", json!({"lsn": 5, "force": true}))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        put("audit", json!({"lsn": 12})).await.unwrap().status(),
        200
    );
    assert_eq!(
        put("search", json!({"lsn": 21})).await.unwrap().status(),
        200
    );
    assert_eq!(
        put("audit", json!({"lsn": 999})).await.unwrap().status(),
        400,
        "beyond the log"
    );
    assert_eq!(
        put("audit", json!({"lsn": "x"})).await.unwrap().status(),
        400
    );
    assert_eq!(
        put("bad name", json!({"lsn": 1})).await.unwrap().status(),
        400
    );
    let list = c
        .get(format!("{base}/v1/consumers"))
        .send()
        .await
        .unwrap()
        .json_value()
        .await;
    let consumers = list["consumers"].as_array().unwrap();
    assert_eq!(consumers.len(), 2);
    assert_eq!(consumers[0]["name"], "audit");
    assert_eq!(consumers[0]["lag_events"], 21 - 12);
    assert!(consumers[0]["lag_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(consumers[1]["lag_events"], 0);
    assert_eq!(consumers[1]["lag_seconds"], 0.0);
    let one = c
        .get(format!("{base}/v1/consumers/audit"))
        .send()
        .await
        .unwrap()
        .json_value()
        .await;
    assert_eq!(one["checkpoint"], 12);
    assert_eq!(
        c.delete(format!("{base}/v1/consumers/search"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        c.get(format!("{base}/v1/consumers/search"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        c.delete(format!("{base}/v1/consumers/search"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // survives a restart
    running.shutdown();
    running.wait().await.unwrap();
    let running = start_with(&pg, dir.path(), "", "").await;
    let base = format!("http://{}", running.addr);
    let one = c
        .get(format!("{base}/v1/consumers/audit"))
        .send()
        .await
        .unwrap()
        .json_value()
        .await;
    assert_eq!(one["checkpoint"], 12, "after a restart");
    running.shutdown();
    running.wait().await.unwrap();
    // and a kill -9 right after the answer
    let p = Proc::start(&dir.path().join("spillway.toml"), dir.path());
    crate::pg::wait_streaming(&pg).await;
    let addr = wait_for_addr(&p).await;
    let r = c
        .put(format!("http://{addr}/v1/consumers/audit/checkpoint"))
        .json_body(json!({"lsn": 17}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    p.kill9();
    let running = start_with(&pg, dir.path(), "", "").await;
    let one = c
        .get(format!("http://{}/v1/consumers/audit", running.addr))
        .send()
        .await
        .unwrap()
        .json_value()
        .await;
    assert_eq!(one["checkpoint"], 17, "after kill -9");
    running.shutdown();
    running.wait().await.unwrap();
}

/// The API address of a `spillway run` process, from its log line `api listening addr=…`.
pub(crate) async fn wait_for_addr(p: &Proc) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let err = p.stderr();
        if let Some(line) = err.lines().find(|l| l.contains("api listening")) {
            let addr = line
                .split("addr=")
                .nth(1)
                .unwrap_or_else(|| panic!("{line:?}"))
                .split_whitespace()
                .next()
                .unwrap();
            return addr
                .trim_end_matches(|c: char| !c.is_ascii_digit())
                .to_string();
        }
        assert!(Instant::now() < deadline, "no api address in: {err}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trim_and_retention_lead_to_requery_required() {
    let pg = cluster(SCHEMA).await;
    let dir = tempfile::tempdir().unwrap();
    let running = start_with(&pg, dir.path(), "retention = \"0\"", "").await;
    let base = format!("http://{}", running.addr);
    let c = reqwest::Client::new();
    for i in 0..10 {
        pg.execute("shop", &format!("INSERT INTO bank.holding SELECT g, repeat('x', 200) FROM generate_series({}, {}) g", i * 20 + 1, i * 20 + 20)).await.unwrap();
    }
    let events = read_until(&running.log, 1, count_changes(200)).await;
    let ts20 = events
        .iter()
        .find(|e| e["lsn"] == 20)
        .map(|e| e["timestamp"].as_i64().unwrap())
        .unwrap();
    let r = c
        .post(format!("{base}/v1/admin/trim"))
        .json_body(json!({"before_lsn": 100}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let report = r.json_value().await;
    assert!(report["segments_deleted"].as_u64().unwrap() > 0, "{report}");
    let oldest = report["oldest_lsn"].as_u64().unwrap();
    assert!(oldest > 1 && oldest <= 100, "{report}");
    let status = c
        .get(format!("{base}/v1/status"))
        .send()
        .await
        .unwrap()
        .json_value()
        .await;
    assert_eq!(status["oldest_lsn"], oldest);
    let mut s = Lines::open(&format!("{base}/v1/changes?from_lsn=1")).await;
    let first = s.next_json().await;
    assert_eq!(first["type"], "requery_required");
    assert_eq!(first["requested_lsn"], 1);
    assert_eq!(first["oldest_lsn"], oldest);
    assert_eq!(
        s.next_json().await["lsn"],
        oldest,
        "then the stream from oldest_lsn, no silent gap"
    );
    // Issue 8.3: a start time inside the trimmed range is told too (it used
    // to start silently at the oldest retained record).
    let mut s = Lines::open(&format!("{base}/v1/changes?from_timestamp={ts20}")).await;
    let first = s.next_json().await;
    assert_eq!(first["type"], "requery_required", "{first}");
    assert_eq!(first["oldest_lsn"], oldest);
    assert_eq!(s.next_json().await["lsn"], oldest);
    // A start beyond the log's end (a client that saw another log) is told.
    let end = running.log.committed_lsn();
    let mut s = Lines::open(&format!("{base}/v1/changes?from_lsn={}", end + 50)).await;
    let first = s.next_json().await;
    assert_eq!(first["type"], "requery_required", "{first}");
    assert_eq!(first["reason"], "ahead_of_log");
    assert_eq!(first["requested_lsn"], end + 50);
    assert_eq!(first["oldest_lsn"], end + 1);
    assert_eq!(
        c.post(format!("{base}/v1/admin/trim"))
            .json_body(json!({"before": 1}))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    running.shutdown();
    running.wait().await.unwrap();

    // retention by age never passes a named consumer's checkpoint
    let running = start_with(&pg, dir.path(), "retention = \"1s\"", "").await;
    let base = format!("http://{}", running.addr);
    let before = running.log.oldest_lsn();
    let protect = before + 30;
    assert_eq!(
        c.put(format!("{base}/v1/consumers/slow/checkpoint"))
            .json_body(json!({"lsn": protect}))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    pg.execute(
        "shop",
        "INSERT INTO bank.holding SELECT g, repeat('y', 200) FROM generate_series(1000, 1100) g",
    )
    .await
    .unwrap();
    read_until(&running.log, running.log.oldest_lsn(), |ev| {
        ev.iter().any(|e| e["new_data"]["id"] == 1100)
    })
    .await;
    // Retention may delete every segment whose records all lie at or before
    // the checkpoint (they are older than 1 s by now, or soon): the oldest
    // lsn it may leave is the base of the segment holding `protect + 1`.
    // Wait until retention has gone that far (every run from then on sees
    // all of those records old), then check it went no further.
    let limit = segment_bases(&dir.path().join("log"))
        .into_iter()
        .filter(|&b| b <= protect + 1)
        .max()
        .unwrap_or_else(|| panic!("retention deleted the segment holding lsn {}", protect + 1));
    assert!(
        limit > before,
        "the checkpoint protects more than the first segment"
    );
    let deadline = Instant::now() + WAIT;
    while running.log.oldest_lsn() < limit {
        assert!(
            Instant::now() < deadline,
            "retention never reached lsn {limit} (oldest {})",
            running.log.oldest_lsn()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let oldest = running.log.oldest_lsn();
    assert!(
        oldest > before && oldest <= protect + 1 && oldest == limit,
        "oldest {oldest} must not pass checkpoint {protect} + 1 (segment base {limit})"
    );
    running.shutdown();
    running.wait().await.unwrap();
}

/// The base lsns of the log's segment files (`<base lsn, 20 digits>.seg`).
fn segment_bases(log_dir: &Path) -> Vec<u64> {
    std::fs::read_dir(log_dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".seg")?.parse().ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_cdc_status_and_trim_from_the_cli() {
    let pg = cluster(SCHEMA).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("spillway.toml");
    std::fs::write(&cfg, config(&pg, dir.path(), "retention = \"168h\"", "")).unwrap();
    let running = start_with(&pg, dir.path(), "retention = \"168h\"", "").await;
    pg.execute(
        "shop",
        "INSERT INTO bank.holding SELECT g, repeat('x', 300) FROM generate_series(1, 100) g",
    )
    .await
    .unwrap();
    read_until(&running.log, 1, count_changes(100)).await;
    let url = format!("http://{}", running.addr);
    let run = |args: Vec<String>| {
        let cfg = cfg.clone();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_spillway"))
                .args(&args)
                .arg("--config")
                .arg(&cfg)
                .output()
                .await
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        }
    };
    let text = run(vec![
        "admin".into(),
        "cdc".into(),
        "status".into(),
        "--url".into(),
        url.clone(),
    ])
    .await;
    assert!(
        text.contains("CDC Status:") && text.contains("Enabled: true"),
        "{text}"
    );
    assert!(text.contains("Current LSN: 101"), "{text}");
    assert!(text.contains("Oldest LSN: 1\n"), "{text}");
    assert!(text.contains("Retention: 168 hours"), "{text}");
    assert!(text.contains("Source: running server"), "{text}");
    let text = run(vec![
        "admin".into(),
        "cdc".into(),
        "trim".into(),
        "--before-lsn".into(),
        "50".into(),
        "--url".into(),
        url,
    ])
    .await;
    assert!(text.contains("trimmed"), "{text}");
    let oldest = running.log.oldest_lsn();
    assert!(oldest > 1);
    running.shutdown();
    running.wait().await.unwrap();
    // no server: read from the data directory (the config's api.listen port is 0 → nothing answers)
    let text = run(vec![
        "admin".into(),
        "cdc".into(),
        "status".into(),
        "--url".into(),
        format!("http://127.0.0.1:{}", spillway_testkit::free_port()),
    ])
    .await;
    assert!(text.contains("Current LSN: 101"), "{text}");
    assert!(text.contains(&format!("Oldest LSN: {oldest}\n")), "{text}");
    assert!(text.contains("no server running"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_auth() {
    let pg = cluster(SCHEMA).await;
    let dir = tempfile::tempdir().unwrap();
    let running = start_with(&pg, dir.path(), "", "token = \"t0ps3cret\"").await;
    let base = format!("http://{}", running.addr);
    let c = reqwest::Client::new();
    assert_eq!(
        c.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "healthz stays open"
    );
    for path in ["/v1/status", "/v1/changes", "/v1/consumers", "/metrics"] {
        let r = c.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert!(r.json_value().await["error"]
            .as_str()
            .unwrap()
            .contains("bearer token"));
        assert_eq!(
            c.get(format!("{base}{path}"))
                .bearer_auth("wrong")
                .send()
                .await
                .unwrap()
                .status(),
            401
        );
    }
    assert_eq!(
        c.get(format!("{base}/v1/status"))
            .bearer_auth("t0ps3cret")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.post(format!("{base}/v1/admin/trim"))
            .json_body(json!({"before_lsn": 1}))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    running.shutdown();
    running.wait().await.unwrap();
    // without a token everything is open on loopback
    let running = start_with(&pg, dir.path(), "", "").await;
    assert_eq!(
        c.get(format!("http://{}/v1/status", running.addr))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    running.shutdown();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_in_prometheus_format() {
    let pg = cluster(SCHEMA).await;
    let dir = tempfile::tempdir().unwrap();
    let running = start_with(&pg, dir.path(), "", "").await;
    let base = format!("http://{}", running.addr);
    let c = reqwest::Client::new();
    pg.execute(
        "shop",
        "INSERT INTO bank.holding SELECT g, 'a' FROM generate_series(1, 5) g",
    )
    .await
    .unwrap();
    read_until(&running.log, 1, count_changes(5)).await;
    c.put(format!("{base}/v1/consumers/audit/checkpoint"))
        .json_body(json!({"lsn": 2}))
        .send()
        .await
        .unwrap();
    let r = c.get(format!("{base}/metrics")).send().await.unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text().await.unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(value("spillway_changes_captured_total "), 6.0);
    assert_eq!(value("spillway_log_current_lsn "), 6.0);
    assert_eq!(value("spillway_log_oldest_lsn "), 1.0);
    assert!(value("spillway_log_disk_bytes ") > 0.0);
    assert_eq!(
        value("spillway_consumer_lag_events{consumer=\"audit\"} "),
        4.0
    );
    assert!(value("spillway_consumer_lag_seconds{consumer=\"audit\"} ") >= 0.0);
    assert!(value("spillway_source_wal_retained_bytes ") >= 0.0);
    assert!(text.contains("# TYPE spillway_source_lag_milliseconds gauge"));
    running.shutdown();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_consumers_with_different_filters_during_a_write_load() {
    let pg = cluster(SCHEMA).await;
    let dir = tempfile::tempdir().unwrap();
    let running = start_with(&pg, dir.path(), "", "").await;
    let base = format!("http://{}", running.addr);
    const TXS: i64 = 40;
    let filters = [
        "entities=bank.holding",
        "entities=commerce.*",
        "operations=insert",
        "exclude_entities=commerce.users",
        "",
    ];
    let wanted = |f: &str, e: &Value| match f {
        "entities=bank.holding" => e["table"] == "holding",
        "entities=commerce.*" => e["schema"] == "commerce",
        "exclude_entities=commerce.users" => e["table"] != "users",
        _ => true,
    };
    let counts = [TXS, 2 * TXS, 3 * TXS, 2 * TXS, 3 * TXS];
    let mut consumers = Vec::new();
    for i in 0..50 {
        let f = filters[i % filters.len()];
        let n = counts[i % filters.len()] as usize;
        let url = format!("{base}/v1/changes?from=beginning&{f}");
        consumers.push(tokio::spawn(async move {
            let mut s = Lines::open(&url).await;
            let got: Vec<(u64, String)> = s
                .changes(n)
                .await
                .iter()
                .map(|v| {
                    (
                        v["lsn"].as_u64().unwrap(),
                        format!("{}:{}", v["table"].as_str().unwrap(), v["new_data"]["id"]),
                    )
                })
                .collect();
            (i, got)
        }));
    }
    for t in 1..=TXS {
        pg.execute("shop", &format!("INSERT INTO commerce.users VALUES ({t}, 'u'); INSERT INTO commerce.products VALUES ({t}, 'p'); INSERT INTO bank.holding VALUES ({t}, 'h');")).await.unwrap();
    }
    let all = read_until(&running.log, 1, count_changes(3 * TXS as usize)).await;
    for c in consumers {
        let (i, got) = tokio::time::timeout(WAIT, c).await.unwrap().unwrap();
        let f = filters[i % filters.len()];
        let expected: Vec<(u64, String)> = all
            .iter()
            .filter(|e| e["type"] == "change" && wanted(f, e))
            .map(|e| {
                (
                    e["lsn"].as_u64().unwrap(),
                    format!("{}:{}", e["table"].as_str().unwrap(), e["new_data"]["id"]),
                )
            })
            .collect();
        assert_eq!(got, expected, "consumer {i} with `{f}`");
    }
    running.shutdown();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_consumer_neither_stalls_others_nor_grows_memory() {
    use tokio::io::AsyncWriteExt;
    let pg = cluster("CREATE TABLE public.t (id int PRIMARY KEY, pad text);").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("spillway.toml");
    std::fs::write(
        &cfg,
        config(&pg, dir.path(), "", "").replace("\"4KiB\"", "\"64MiB\""),
    )
    .unwrap();
    let p = Proc::start(&cfg, dir.path());
    crate::pg::wait_streaming(&pg).await;
    let addr = wait_for_addr(&p).await;
    // a consumer that asks for everything and then never reads
    let mut stuck = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stuck
        .write_all(
            format!("GET /v1/changes?from=beginning HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let rss_before = p.peak_rss_kib();
    for i in 0..20 {
        pg.execute(
            "shop",
            &format!(
                "INSERT INTO t SELECT g, repeat('x', 1000) FROM generate_series({}, {}) g",
                i * 5000 + 1,
                i * 5000 + 5000
            ),
        )
        .await
        .unwrap();
    }
    // another consumer reads all 100,000 rows (~110 MB of events) meanwhile
    let mut s = Lines::open(&format!(
        "http://{addr}/v1/changes?from=beginning&batch_size=1000"
    ))
    .await;
    let mut n = 0;
    while n < 100_000 {
        let line = s.next().await;
        if line.starts_with("{\"type\":\"change\"") {
            n += 1;
        }
    }
    let rss = p.peak_rss_kib();
    eprintln!(
        "peak RSS with a stuck consumer: {} KiB before the load, {} KiB after 100,000 rows",
        rss_before, rss
    );
    drop(stuck);
    assert!(p.terminate().success());
    // What the design holds here (100,000 events of ~1.1 KB, ~110 MB): per
    // stream, the channel of 8 chunks, a chunk being written by hyper, the
    // batch being built and the reader's batch (1 MiB); a chunk is
    // `batch_size` events (default 1000 here: ~1.1 MiB), so ~12 MiB for the
    // stuck stream and as much for the reading one, which falls behind too.
    // Capture: the append queue (16 batches of at most 256 KiB: 4 MiB), the
    // writer's 320 KiB buffer and the 256 KiB replication read buffer: ~5 MiB.
    // The 8 MiB in flight to fsync are page cache, not the process's memory.
    // About 29 MiB in all. Measured (debug build, 2 cores): 36-42 MiB of
    // growth (32 MiB with MALLOC_ARENA_MAX=1: the rest is freed read batches
    // kept by glibc's per-thread arenas), up to 44 MiB with four copies of
    // this test at once. 56 MiB leaves that margin and fails a
    // stuck stream that buffers half of what it was sent.
    assert!(
        rss < rss_before + 56 * 1024,
        "RSS grew from {} KiB to {} KiB with a stuck consumer",
        rss_before,
        rss
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_sink_is_a_named_consumer_with_status_and_metrics() {
    let pg = cluster(SCHEMA).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("audit.jsonl");
    let sink = format!(
        "[[sinks]]\nname = \"audit\"\ntype = \"file\"\npath = \"{}\"\nformat = \"flat\"\ntables = {{ holding = [\"insert\", \"update\"] }}\n",
        out.display()
    );
    let text = config(&pg, dir.path(), "", "") + &sink;
    let running = spillway_server::start(Config::from_parts(Some(("test", &text)), &[]).unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", running.addr);
    pg.execute("shop", "INSERT INTO bank.holding SELECT g, 'a' FROM generate_series(1, 5) g; UPDATE bank.holding SET v = 'b' WHERE id = 1; DELETE FROM bank.holding WHERE id = 2; INSERT INTO commerce.users VALUES (1, 'u');").await.unwrap();
    let deadline = Instant::now() + WAIT;
    let lines = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= 6 {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "the sink delivered only {} lines",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // reference 001's flat shape, filtered by the sink's tables map (no delete, no users)
    let actions: Vec<&str> = lines
        .iter()
        .map(|l| l["Action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["insert", "insert", "insert", "insert", "insert", "update"]
    );
    assert!(lines
        .iter()
        .all(|l| l["Table"] == "holding" && l["Schema"] == "bank"));
    assert_eq!(lines[5]["Data"]["v"], "b");
    // the sink's checkpoint reaches the end of the log (filtered events advance it too)
    let current = running.log.committed_lsn();
    let deadline = Instant::now() + WAIT;
    loop {
        let s = reqwest::get(format!("{base}/v1/status"))
            .await
            .unwrap()
            .json_value()
            .await;
        let sink = &s["sinks"][0];
        assert_eq!(sink["name"], "audit");
        assert_eq!(sink["type"], "file");
        if sink["checkpoint"] == current {
            assert_eq!(
                sink["delivered"], 6,
                "6 rows (the flat format carries row changes only): {sink}"
            );
            assert_eq!(sink["lag_events"], 0);
            break;
        }
        assert!(Instant::now() < deadline, "sink checkpoint stuck: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("spillway_sink_delivered_total{sink=\"audit\"} 6"),
        "{metrics}"
    );
    assert!(
        metrics.contains("spillway_sink_retrying{sink=\"audit\"} 0"),
        "{metrics}"
    );
    let out_text = tokio::process::Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["status", "--url", &base])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out_text.stdout);
    assert!(out_text.status.success(), "{text}");
    assert!(
        text.contains("Sink audit (file): ok, delivered 6"),
        "{text}"
    );

    // Issue 8.8 over HTTP. API consumer calls under the sink's name touch an
    // API consumer of that name, never the sink.
    let c = reqwest::Client::new();
    let sink_cp = || {
        running
            .log
            .checkpoints()
            .get("sink:audit")
            .unwrap()
            .unwrap()
            .lsn
    };
    assert_eq!(sink_cp(), current);
    let r = c
        .put(format!("{base}/v1/consumers/audit/checkpoint"))
        .json(&serde_json::json!({"lsn": 1, "force": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .delete(format!("{base}/v1/consumers/audit"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(sink_cp(), current, "an API consumer call moved the sink");
    // An unknown sink is a 404 that names the configured ones.
    let r = c
        .put(format!("{base}/v1/sinks/nope/checkpoint"))
        .json(&serde_json::json!({"lsn": 1, "force": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("audit"));
    // An operator's rewind takes effect: the sink delivers again from there
    // (lsn 2 = the first insert) and its own progress never overwrites it.
    let r = c
        .put(format!("{base}/v1/sinks/audit/checkpoint"))
        .json(&serde_json::json!({"lsn": 2, "force": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let deadline = Instant::now() + WAIT;
    let lines = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= 11 && sink_cp() == current {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "after a rewind to lsn 2 the sink delivered {} lines, checkpoint {}",
            lines.len(),
            sink_cp()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // lsn 3.. again: the 2nd to 5th inserts and the update.
    assert_eq!(lines.len(), 11, "{lines:?}");
    assert_eq!(
        lines[6..],
        lines[1..6],
        "the rewind redelivered lsn 3 onwards"
    );
    running.shutdown();
    running.wait().await.unwrap();
}

/// Issue 8.9 through the server: with only `max_bytes` set, the cap holds
/// while data arrives — enforced at each segment seal, not only by the
/// retention task (which runs once at start, then every 30 s: the whole
/// load here fits between two of its runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_bytes_holds_while_the_log_grows() {
    let pg = cluster(SCHEMA).await;
    let dir = tempfile::tempdir().unwrap();
    let running = start_with(&pg, dir.path(), "max_bytes = \"64KiB\"", "").await;
    let log = running.log.clone();
    // The retention task's first run (at start) is behind us.
    let deadline = Instant::now() + WAIT;
    while log.retention_runs() == 0 {
        assert!(Instant::now() < deadline, "retention never ran at start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let runs = log.retention_runs();
    let cap = 64 * 1024;
    let mut committed = log.subscribe();
    let mut peak = 0;
    for i in 0..40 {
        pg.execute(
            "shop",
            &format!(
                "INSERT INTO bank.holding SELECT g, repeat('m', 300) FROM generate_series({}, {}) g",
                i * 10 + 1,
                i * 10 + 10
            ),
        )
        .await
        .unwrap();
        // schema_change, then 10 rows per transaction.
        let target = 1 + (i as u64 + 1) * 10;
        while log.committed_lsn() < target {
            tokio::time::timeout(WAIT, committed.changed())
                .await
                .expect("capture went on")
                .unwrap();
        }
        peak = peak.max(log.disk_usage_bytes());
    }
    assert_eq!(
        log.retention_runs(),
        runs,
        "the retention task ran meanwhile; this test must see the seal-time cap alone"
    );
    assert!(log.oldest_lsn() > 1, "nothing was trimmed");
    // Over the cap by at most the active segment (4 KiB) and one record.
    assert!(
        peak <= cap + 4096 + 1024,
        "the log reached {peak} bytes with max_bytes = {cap}"
    );
    running.shutdown();
    running.wait().await.unwrap();
}

/// `spillway tail` sends every flag it takes (it used to send only the start position)
/// and the token, and refuses a bad flag before any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_applies_its_filters_and_the_token() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let pg = cluster(SCHEMA).await;
    let dir = tempfile::tempdir().unwrap();
    let running = start_with(&pg, dir.path(), "", "token = \"t0ps3cret\"").await;
    pg.execute(
        "shop",
        "INSERT INTO bank.holding VALUES (1, 'a');
         INSERT INTO commerce.users VALUES (1, 'a');
         UPDATE bank.holding SET v = 'b';
         INSERT INTO commerce.users VALUES (2, 'b');
         DELETE FROM bank.holding;
         INSERT INTO commerce.users VALUES (3, 'c');",
    )
    .await
    .unwrap();
    read_until(&running.log, 1, count_changes(6)).await;
    let url = format!("http://{}", running.addr);
    let tail = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_spillway"));
        cmd.args(["tail", "--url", &url, "--json"])
            .args(args)
            .env_remove("SPILLWAY_API_TOKEN");
        cmd
    };
    let mut child = tail(&[
        "--from",
        "beginning",
        "--entities",
        "commerce.*",
        "--exclude-entities",
        "products",
        "--operations",
        "insert",
        "--token",
        "t0ps3cret",
    ])
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut got: Vec<Value> = Vec::new();
        // The filtered stream: users' schema_change, then its three inserts.
        while got.len() < 4 {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 {
                break;
            }
            got.push(serde_json::from_str(&line).unwrap());
        }
        let _ = child.kill();
        let _ = child.wait();
        got
    })
    .await
    .unwrap();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0]["type"], "schema_change");
    for l in &lines {
        assert_eq!(l["entity"], "commerce.users", "{l}");
    }
    let ops: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["insert", "insert", "insert"]);

    // Without the token: the server's 401, one line.
    let out = tail(&["--from", "beginning"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // A bad flag: named, before any request.
    let out = tail(&["--operations", "upsert"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown operation `upsert`"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    running.shutdown();
    running.wait().await.unwrap();
}

/// A filtered stream that read past its last event says how far it has read
/// (`scanned_lsn`) soon after it caught up, long before `heartbeat_ms`: the consumer's
/// position reaches the log's end although the filter left those records out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_stream_says_how_far_it_has_read() {
    let pg = cluster(SCHEMA).await;
    let dir = tempfile::tempdir().unwrap();
    let running = start_with(&pg, dir.path(), "", "").await;
    let base = format!("http://{}", running.addr);
    let mut s = Lines::open(&format!(
        "{base}/v1/changes?from=beginning&entities=bank.holding&heartbeat_ms=60000"
    ))
    .await;
    pg.execute("shop", "INSERT INTO bank.holding VALUES (1, 'a')")
        .await
        .unwrap();
    let first = s.changes(1).await;
    let holding_lsn = first[0]["lsn"].as_u64().unwrap();
    pg.execute(
        "shop",
        "INSERT INTO commerce.users SELECT g, 'u' FROM generate_series(1, 5) g",
    )
    .await
    .unwrap();
    let end = read_until(&running.log, 1, count_changes(6)).await;
    let end_lsn = end.last().unwrap()["lsn"].as_u64().unwrap();
    assert!(end_lsn > holding_lsn);
    let t = Instant::now();
    let hb = loop {
        let v = s.next_json().await;
        assert_ne!(
            v["type"], "change",
            "the filter lets no users change through: {v}"
        );
        if v["type"] == "heartbeat" && v["scanned_lsn"].as_u64() == Some(end_lsn) {
            break v;
        }
    };
    assert_eq!(hb["current_lsn"].as_u64(), Some(end_lsn));
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "told long before the 60 s heartbeat"
    );
    running.shutdown();
    running.wait().await.unwrap();
}

/// `entities` naming a table the publication does not send is a 400 naming it (it used
/// to be a stream that stayed empty); a `*` pattern may wait for tables to come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_that_match_no_captured_table_are_named() {
    let pg = cluster(SCHEMA).await;
    let dir = tempfile::tempdir().unwrap();
    let running = start_with(&pg, dir.path(), "", "").await;
    let base = format!("http://{}", running.addr);
    let c = reqwest::Client::new();
    let resp = c
        .get(format!(
            "{base}/v1/changes?entities=bank.holding,bank.holdings"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    let e = body["error"].as_str().unwrap();
    assert!(e.contains("`bank.holdings` matches no table"), "{e}");
    assert!(
        e.contains("bank.holding,") || e.contains("bank.holding)"),
        "{e}"
    );
    for ok in ["bank.holding", "holding", "users", "future_*"] {
        let resp = c
            .get(format!("{base}/v1/changes?entities={ok}&from=now"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{ok}");
    }
    // a table created after the start counts once capture has met it
    pg.execute(
        "shop",
        "CREATE TABLE public.later (id int PRIMARY KEY); INSERT INTO public.later VALUES (1);",
    )
    .await
    .unwrap();
    read_until(&running.log, 1, |evs| {
        evs.iter()
            .any(|e| e["entity"] == "public.later" && e["type"] == "change")
    })
    .await;
    let resp = c
        .get(format!("{base}/v1/changes?entities=public.later&from=now"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    running.shutdown();
    running.wait().await.unwrap();
}
