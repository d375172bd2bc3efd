//! The client against a scripted HTTP/1.1 server: every byte it receives is chosen by the
//! test, so broken connections, partial lines, duplicates and bad lines are exact.

use serde_json::json;
use spillway_client::{Client, Error, Operation, StreamItem};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the fake server saw it.
#[derive(Debug, Clone)]
struct Req {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Req {
    fn path(&self) -> &str {
        self.target.split('?').next().unwrap()
    }

    fn query(&self, key: &str) -> Option<String> {
        let url = reqwest::Url::parse(&format!("http://x{}", self.target)).unwrap();
        url.query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the stream part of a reply does, step by step.
#[derive(Debug, Clone)]
enum Step {
    /// One HTTP chunk (flushed on its own).
    Chunk(String),
    /// Pause.
    Sleep(u64),
    /// Drop the connection mid-body (no terminating chunk).
    Close,
    /// End the body properly.
    End,
    /// Send nothing more, keep the connection open.
    Hang,
}

enum Reply {
    /// No answer at all (the connection stays open).
    Silent,
    Json(u16, serde_json::Value),
    Empty(u16),
    Stream(Vec<Step>),
    /// A stream whose response names this log epoch (`Spillway-Log-Epoch`).
    StreamEpoch(&'static str, Vec<Step>),
}

struct Fake {
    url: String,
    reqs: Arc<Mutex<Vec<Req>>>,
}

impl Fake {
    fn requests(&self) -> Vec<Req> {
        self.reqs.lock().unwrap().clone()
    }

    fn changes_requests(&self) -> Vec<Req> {
        self.requests()
            .into_iter()
            .filter(|r| r.path() == "/v1/changes")
            .collect()
    }

    fn client(&self) -> Client {
        Client::new(&self.url).unwrap()
    }
}

type Handler = dyn Fn(usize, &Req) -> Reply + Send + Sync;

/// Starts a server; `handler(n, req)` answers the `n`-th request (0-based).
async fn fake(handler: impl Fn(usize, &Req) -> Reply + Send + Sync + 'static) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let reqs: Arc<Mutex<Vec<Req>>> = Arc::default();
    let handler: Arc<Handler> = Arc::new(handler);
    let r = reqs.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let (reqs, handler) = (r.clone(), handler.clone());
            tokio::spawn(async move { serve(sock, reqs, handler).await });
        }
    });
    Fake { url, reqs }
}

async fn serve(mut sock: TcpStream, reqs: Arc<Mutex<Vec<Req>>>, handler: Arc<Handler>) {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap().split(' ');
    let (method, target) = (
        first.next().unwrap().to_string(),
        first.next().unwrap().to_string(),
    );
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let req = Req {
        method,
        target,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    };
    let n = {
        let mut all = reqs.lock().unwrap();
        all.push(req.clone());
        all.len() - 1
    };
    match handler(n, &req) {
        // A server that never answers: the silence is the point (no condition to await).
        Reply::Silent => tokio::time::sleep(Duration::from_secs(3600)).await,
        Reply::Json(status, v) => {
            let body = v.to_string();
            let head = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
        }
        Reply::Empty(status) => {
            let head =
                format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = sock.write_all(head.as_bytes()).await;
        }
        Reply::Stream(steps) => stream(&mut sock, "", steps).await,
        Reply::StreamEpoch(epoch, steps) => {
            stream(
                &mut sock,
                &format!("spillway-log-epoch: {epoch}\r\n"),
                steps,
            )
            .await
        }
    }
    let _ = sock.shutdown().await;
}

async fn stream(sock: &mut TcpStream, extra_headers: &str, steps: Vec<Step>) {
    let head = format!("HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n{extra_headers}connection: close\r\n\r\n");
    if sock.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    for step in steps {
        match step {
            Step::Chunk(data) => {
                let frame = format!("{:x}\r\n{data}\r\n", data.len());
                if sock.write_all(frame.as_bytes()).await.is_err() {
                    return;
                }
                let _ = sock.flush().await;
            }
            // A scripted pause between chunks (the test's subject: data arriving in pieces).
            Step::Sleep(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            Step::Close => return,
            Step::End => {
                let _ = sock.write_all(b"0\r\n\r\n").await;
                return;
            }
            Step::Hang => {
                // A stalled server keeps the connection open and sends nothing.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
        }
    }
}

/// A native change line for row `id` of `public.items`.
fn change(lsn: u64, id: i64, op: &str) -> String {
    let new = if op == "delete" {
        json!(null)
    } else {
        json!({"id": id, "v": format!("row {id}")})
    };
    format!(
        "{}\n",
        json!({"type": "change", "lsn": lsn, "id": format!("0/{lsn:X}:1"), "timestamp": 1_763_683_200_000_000i64 + lsn as i64,
            "operation": op, "entity": "public.items", "schema": "public", "table": "items",
            "entity_id": {"id": id}, "old_data": null, "new_data": new,
            "tx": {"xid": 700 + lsn, "commit_lsn": format!("0/{lsn:X}"), "index": 1},
            "source": {"db": "shop", "pg_lsn": format!("0/{lsn:X}")}})
    )
}

fn heartbeat(current: u64) -> String {
    format!(
        "{}\n",
        json!({"type": "heartbeat", "current_lsn": current, "timestamp": 1})
    )
}

fn requery(requested: u64, oldest: u64) -> String {
    format!(
        "{}\n",
        json!({"type": "requery_required", "requested_lsn": requested, "oldest_lsn": oldest, "timestamp": 1})
    )
}

fn chunk(s: impl Into<String>) -> Step {
    Step::Chunk(s.into())
}

fn lsns(items: &[StreamItem]) -> Vec<u64> {
    items.iter().filter_map(StreamItem::lsn).collect()
}

async fn next(stream: &mut spillway_client::ChangeStream) -> StreamItem {
    tokio::time::timeout(Duration::from_secs(10), stream.next_item())
        .await
        .expect("an item within 10 s")
        .unwrap()
        .expect("the stream goes on")
}

const FAST: Duration = Duration::from_millis(10);

#[tokio::test]
async fn typed_items_and_heartbeats_swallowed() {
    let schema = json!({"type": "schema_change", "lsn": 1, "id": "0/1:0", "timestamp": 5, "entity": "public.items",
        "schema": "public", "table": "items", "replica_identity": "default",
        "columns": [{"name": "id", "type": "int4", "type_oid": 23, "key": true}],
        "tx": {"xid": 1, "commit_lsn": "0/1", "index": 0}, "source": {"db": "shop", "pg_lsn": "0/1"}});
    let message = json!({"type": "message", "lsn": 3, "id": "0/3:1", "timestamp": 6, "transactional": false,
        "prefix": "app", "content": "hello", "tx": null, "source": {"db": "shop", "pg_lsn": "0/3"}});
    let body = format!(
        "{}{schema}\n{}{message}\n{}",
        heartbeat(0),
        change(2, 7, "insert"),
        heartbeat(3)
    );
    let f = fake(move |_, _| Reply::Stream(vec![chunk(body.clone()), Step::Hang])).await;
    let mut s = f.client().stream_changes().from_lsn(1).await.unwrap();
    assert!(matches!(next(&mut s).await, StreamItem::SchemaChange(sc) if sc.columns[0].key));
    match next(&mut s).await {
        StreamItem::Change(c) => {
            assert_eq!((c.lsn, c.operation), (2, Operation::Insert));
            assert_eq!(c.entity_id.unwrap()["id"], 7);
            assert_eq!(c.new_data.unwrap()["v"], "row 7");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(next(&mut s).await, StreamItem::Message(m) if m.content.as_deref() == Some("hello"))
    );
    assert_eq!(s.last_lsn(), Some(3));
    // the trailing heartbeat is not an item: nothing more arrives
    assert!(
        tokio::time::timeout(Duration::from_millis(300), s.next_item())
            .await
            .is_err()
    );
    let reqs = f.changes_requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].query("from_lsn").as_deref(), Some("1"));
    assert_eq!(reqs[0].header("accept"), Some("application/x-ndjson"));
}

#[tokio::test]
async fn query_carries_every_option() {
    let f = fake(|_, _| Reply::Stream(vec![Step::Hang])).await;
    let _s = f
        .client()
        .stream_changes()
        .from_timestamp(1_700_000_000_000_000i64)
        .entities(["bank.holding", "commerce.*"])
        .exclude_entities(vec!["audit_log".to_string()])
        .operations([Operation::Insert, Operation::Update])
        .batch_size(100)
        .batch_timeout(Duration::from_millis(50))
        .await
        .unwrap();
    let r = &f.changes_requests()[0];
    assert_eq!(
        r.query("from_timestamp").as_deref(),
        Some("1700000000000000")
    );
    assert_eq!(
        r.query("entities").as_deref(),
        Some("bank.holding,commerce.*")
    );
    assert_eq!(r.query("exclude_entities").as_deref(), Some("audit_log"));
    assert_eq!(r.query("operations").as_deref(), Some("insert,update"));
    assert_eq!(r.query("batch_size").as_deref(), Some("100"));
    assert_eq!(r.query("batch_timeout_ms").as_deref(), Some("50"));
    assert_eq!(r.query("from_lsn"), None);

    let f = fake(|_, _| Reply::Stream(vec![Step::Hang])).await;
    let c = f.client();
    let _a = c.stream_changes().from_beginning().await.unwrap();
    let _b = c.stream_changes().consumer("search sync").await.unwrap();
    let _c = c.stream_changes().after_lsn(41).await.unwrap();
    let _d = c
        .stream_changes()
        .from_timestamp(std::time::UNIX_EPOCH + Duration::from_micros(5))
        .start()
        .await
        .unwrap();
    let r = f.changes_requests();
    assert_eq!(r[0].query("from").as_deref(), Some("beginning"));
    assert_eq!(r[1].query("consumer").as_deref(), Some("search sync"));
    assert_eq!(r[2].query("from_lsn").as_deref(), Some("42"));
    assert_eq!(r[3].query("from_timestamp").as_deref(), Some("5"));
}

#[tokio::test]
async fn now_is_pinned_to_an_lsn() {
    let f = fake(|_, r| match r.path() {
        "/v1/status" => Reply::Json(200, json!({"current_lsn": 41, "oldest_lsn": 1, "x": 1})),
        _ => Reply::Stream(vec![Step::Hang]),
    })
    .await;
    let _s = f.client().stream_changes().await.unwrap();
    let r = f.changes_requests();
    assert_eq!(r[0].query("from_lsn").as_deref(), Some("42"));
    assert_eq!(r[0].query("from"), None);
}

/// The connection breaks mid-line; the client asks again from the last complete event + 1
/// with the same filters, drops the repeated event, and hands out each event once.
#[tokio::test]
async fn resumes_after_a_broken_connection_without_gap_or_duplicate() {
    let f = fake(|n, _| match n {
        0 => {
            let partial = change(3, 30, "insert");
            Reply::Stream(vec![
                chunk(change(1, 10, "insert") + &change(2, 20, "update")),
                Step::Sleep(50),
                chunk(&partial[..partial.len() / 2]),
                Step::Close,
            ])
        }
        1 => Reply::Empty(503),
        _ => Reply::Stream(vec![
            // a server that repeats an event: the client must not hand it out twice
            chunk(change(2, 20, "update") + &change(3, 30, "insert") + &change(4, 40, "delete")),
            Step::Hang,
        ]),
    })
    .await;
    let mut s = f
        .client()
        .stream_changes()
        .from_lsn(1)
        .entities(["public.items"])
        .backoff(FAST, FAST)
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(next(&mut s).await);
    }
    assert_eq!(lsns(&got), [1, 2, 3, 4]);
    let ids: Vec<i64> = got
        .iter()
        .map(|i| {
            i.as_change().unwrap().entity_id.as_ref().unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, [10, 20, 30, 40]);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), s.next_item())
            .await
            .is_err(),
        "no duplicate of lsn 2"
    );
    let reqs = f.changes_requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[1].query("from_lsn").as_deref(), Some("3"));
    assert_eq!(reqs[2].query("from_lsn").as_deref(), Some("3"));
    for r in &reqs {
        assert_eq!(r.query("entities").as_deref(), Some("public.items"));
    }
    assert_eq!(s.reconnects(), 1);
    assert_eq!(s.last_lsn(), Some(4));
}

/// Before any event, a reconnect asks for the original start again.
#[tokio::test]
async fn reconnect_before_the_first_event_reuses_the_start() {
    let f = fake(|n, _| match n {
        0 => Reply::Stream(vec![chunk(heartbeat(0)), Step::End]),
        _ => Reply::Stream(vec![chunk(change(9, 1, "insert")), Step::Hang]),
    })
    .await;
    let mut s = f
        .client()
        .stream_changes()
        .consumer("audit")
        .backoff(FAST, FAST)
        .await
        .unwrap();
    assert_eq!(next(&mut s).await.lsn(), Some(9));
    let r = f.changes_requests();
    assert_eq!(r.len(), 2);
    assert_eq!(r[1].query("consumer").as_deref(), Some("audit"));
    assert_eq!(r[1].query("from_lsn"), None);
}

#[tokio::test]
async fn silence_past_the_idle_timeout_reconnects() {
    let f = fake(|n, _| match n {
        0 => Reply::Stream(vec![chunk(change(1, 1, "insert")), Step::Hang]),
        _ => Reply::Stream(vec![chunk(change(2, 2, "insert")), Step::Hang]),
    })
    .await;
    let mut s = f
        .client()
        .stream_changes()
        .from_lsn(1)
        .idle_timeout(Duration::from_millis(300))
        .backoff(FAST, FAST)
        .await
        .unwrap();
    assert_eq!(next(&mut s).await.lsn(), Some(1));
    assert_eq!(next(&mut s).await.lsn(), Some(2));
    assert_eq!(
        f.changes_requests()[1].query("from_lsn").as_deref(),
        Some("2")
    );
}

#[tokio::test]
async fn a_server_that_never_answers_is_not_waited_for_forever() {
    let f = fake(|n, _| match n {
        0 => Reply::Silent,
        1 => Reply::Stream(vec![chunk(change(1, 1, "insert")), Step::End]),
        _ => Reply::Silent,
    })
    .await;
    let idle = Duration::from_millis(200);
    let e = f
        .client()
        .stream_changes()
        .from_lsn(1)
        .idle_timeout(idle)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Idle(d) if d == idle), "{e}");
    let mut s = f
        .client()
        .stream_changes()
        .from_lsn(1)
        .idle_timeout(idle)
        .backoff(FAST, FAST)
        .max_reconnect_attempts(2)
        .await
        .unwrap();
    assert_eq!(next(&mut s).await.lsn(), Some(1));
    let e = s.next_item().await.unwrap_err();
    assert!(
        matches!(&e, Error::GaveUp { attempts: 2, last } if matches!(**last, Error::Idle(_))),
        "{e}"
    );
}

#[tokio::test]
async fn requery_is_typed_alone_in_its_batch_and_moves_the_resume_point() {
    let f = fake(|n, _| match n {
        0 => Reply::Stream(vec![chunk(requery(1, 10)), Step::Close]),
        1 => Reply::Stream(vec![
            chunk(requery(10, 12) + &change(12, 1, "insert")),
            Step::Close,
        ]),
        _ => Reply::Stream(vec![chunk(change(13, 2, "insert")), Step::Hang]),
    })
    .await;
    let s = f
        .client()
        .stream_changes()
        .from_lsn(1)
        .backoff(FAST, FAST)
        .await
        .unwrap();
    let b = s.next_item_batch().await.unwrap().unwrap_or_default();
    assert_eq!(
        b,
        [StreamItem::RequeryRequired {
            requested_lsn: 1,
            oldest_lsn: 10
        }]
    );
    let b = s.next_item_batch().await.unwrap().unwrap_or_default();
    assert!(matches!(
        b[..],
        [StreamItem::RequeryRequired {
            requested_lsn: 10,
            oldest_lsn: 12
        }]
    ));
    assert_eq!(
        lsns(&s.next_item_batch().await.unwrap().unwrap_or_default()),
        [12]
    );
    assert_eq!(
        lsns(&s.next_item_batch().await.unwrap().unwrap_or_default()),
        [13]
    );
    let r = f.changes_requests();
    assert_eq!(r[1].query("from_lsn").as_deref(), Some("10"));
    assert_eq!(r[2].query("from_lsn").as_deref(), Some("13"));
}

/// Issue 8.3: after a repaired or restored log the server says
/// `ahead_of_log` and goes on at its end, below lsns this stream already
/// received. Those are new events: the client must not drop them as
/// duplicates of a reconnect.
#[tokio::test]
async fn after_requery_ahead_of_the_log_lower_lsns_are_new_events() {
    let f = fake(|n, _| match n {
        0 => Reply::Stream(vec![
            chunk(change(40, 1, "insert") + &change(41, 2, "insert")),
            Step::Close,
        ]),
        _ => Reply::Stream(vec![
            chunk(
                format!(
                    "{}\n",
                    json!({"type": "requery_required", "requested_lsn": 42, "oldest_lsn": 31, "reason": "ahead_of_log", "timestamp": 1})
                ) + &change(31, 3, "insert")
                    + &change(32, 4, "insert"),
            ),
            Step::Hang,
        ]),
    })
    .await;
    let s = f
        .client()
        .stream_changes()
        .from_lsn(40)
        .backoff(FAST, FAST)
        .await
        .unwrap();
    assert_eq!(
        lsns(&s.next_item_batch().await.unwrap().unwrap_or_default()),
        [40, 41]
    );
    assert!(matches!(
        s.next_item_batch().await.unwrap().unwrap_or_default()[..],
        [StreamItem::RequeryRequired {
            requested_lsn: 42,
            oldest_lsn: 31
        }]
    ));
    assert_eq!(
        lsns(&s.next_item_batch().await.unwrap().unwrap_or_default()),
        [31, 32]
    );
}

#[tokio::test]
async fn batches_follow_the_server_flushes_and_the_batch_size() {
    let five: String = (1..=5).map(|l| change(l, l as i64, "insert")).collect();
    let line6 = change(6, 6, "insert");
    let (a, b) = line6.split_at(20);
    let (a, b) = (a.to_string(), b.to_string());
    let f = fake(move |_, _| {
        Reply::Stream(vec![
            chunk(five.clone()),
            Step::Sleep(50),
            // one server batch split across two chunks
            chunk(a.clone()),
            Step::Sleep(50),
            chunk(b.clone() + &change(7, 7, "insert")),
            Step::Sleep(50),
            chunk(change(8, 8, "insert")),
            Step::Hang,
        ])
    })
    .await;
    let s = f
        .client()
        .stream_changes()
        .from_lsn(1)
        .batch_size(2)
        .await
        .unwrap();
    let mut batches = Vec::new();
    for _ in 0..5 {
        batches.push(lsns(
            &s.next_item_batch().await.unwrap().unwrap_or_default(),
        ));
    }
    assert_eq!(
        batches,
        [vec![1, 2], vec![3, 4], vec![5], vec![6, 7], vec![8]]
    );
    assert_eq!(s.last_lsn(), Some(8));

    // next() takes from a batch, next_batch() returns the rest of it
    let f = fake(|_, _| {
        Reply::Stream(vec![
            chunk((1..=3).map(|l| change(l, 1, "insert")).collect::<String>()),
            Step::Hang,
        ])
    })
    .await;
    let mut s = f.client().stream_changes().from_lsn(1).await.unwrap();
    assert_eq!(next(&mut s).await.lsn(), Some(1));
    assert_eq!(
        lsns(&s.next_item_batch().await.unwrap().unwrap_or_default()),
        [2, 3]
    );
    assert_eq!(s.last_lsn(), Some(3));
}

#[tokio::test]
async fn a_bad_line_is_an_error_in_its_place() {
    let f = fake(|_, _| {
        Reply::Stream(vec![
            chunk(change(1, 1, "insert") + "{not json\n" + &change(2, 2, "insert")),
            chunk("{\"type\":\"change\",\"lsn\":3}\n".to_string() + &change(4, 4, "insert")),
            Step::Hang,
        ])
    })
    .await;
    let mut s = f.client().stream_changes().from_lsn(1).await.unwrap();
    assert_eq!(next(&mut s).await.lsn(), Some(1));
    let e = s.next_item().await.unwrap_err();
    assert!(matches!(e, Error::Decode { .. }), "{e}");
    assert!(e.to_string().contains("{not json"), "{e}");
    assert_eq!(next(&mut s).await.lsn(), Some(2));
    let e = s.next_item().await.unwrap_err();
    assert!(matches!(e, Error::Decode { .. }), "{e}");
    assert!(e.to_string().contains("missing field"), "{e}");
    assert_eq!(next(&mut s).await.lsn(), Some(4));
}

#[tokio::test]
async fn client_errors_are_returned_not_retried() {
    let f = fake(|_, r| {
        if r.header("authorization") != Some("Bearer s3cret") {
            return Reply::Json(
                401,
                json!({"error": "missing or wrong bearer token; send Authorization: Bearer <api.token>"}),
            );
        }
        Reply::Json(
            400,
            json!({"error": "`batch_size` must be a whole number in 1..=10000, got `20000`"}),
        )
    })
    .await;
    let e = f.client().stream_changes().from_lsn(1).await.unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e}");
    assert_eq!(e.status(), Some(401));
    assert!(e.to_string().contains("with_token"), "{e}");
    let e = f
        .client()
        .with_token("s3cret")
        .stream_changes()
        .from_lsn(1)
        .batch_size(20000)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Api { status: 400, message } if message.contains("batch_size")),
        "{e}"
    );
    assert!(!e.is_retryable());
    assert_eq!(f.requests().len(), 2, "no retries");
    assert!(!e.to_string().contains('\n'));
}

#[tokio::test]
async fn rejected_reconnect_is_returned_and_attempts_are_bounded() {
    let f = fake(|n, _| match n {
        0 => Reply::Stream(vec![chunk(change(1, 1, "insert")), Step::End]),
        _ => Reply::Json(401, json!({"error": "wrong token"})),
    })
    .await;
    let mut s = f
        .client()
        .stream_changes()
        .from_lsn(1)
        .backoff(FAST, FAST)
        .await
        .unwrap();
    assert_eq!(next(&mut s).await.lsn(), Some(1));
    let e = s.next_item().await.unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e}");
    assert_eq!(f.changes_requests().len(), 2);

    let f = fake(|n, _| match n {
        0 => Reply::Stream(vec![Step::End]),
        _ => Reply::Json(503, json!({"error": "starting"})),
    })
    .await;
    let s = f
        .client()
        .stream_changes()
        .from_lsn(1)
        .backoff(FAST, FAST)
        .max_reconnect_attempts(3)
        .await
        .unwrap();
    let e = s.next_item().await.unwrap_err();
    assert!(
        matches!(&e, Error::GaveUp { attempts: 3, last } if last.status() == Some(503)),
        "{e}"
    );
    assert_eq!(f.changes_requests().len(), 4);
}

#[tokio::test]
async fn without_reconnect_the_stream_ends() {
    let f = fake(|_, _| Reply::Stream(vec![chunk(change(1, 1, "insert")), Step::End])).await;
    let mut s = f
        .client()
        .stream_changes()
        .from_lsn(1)
        .reconnect(false)
        .await
        .unwrap();
    assert_eq!(next(&mut s).await.lsn(), Some(1));
    assert!(s.next_item().await.unwrap().is_none());
    assert!(s
        .next_item_batch()
        .await
        .unwrap()
        .unwrap_or_default()
        .is_empty());

    let f = fake(|_, _| Reply::Stream(vec![chunk(change(1, 1, "insert")), Step::Close])).await;
    let mut s = f
        .client()
        .stream_changes()
        .from_lsn(1)
        .reconnect(false)
        .await
        .unwrap();
    assert_eq!(next(&mut s).await.lsn(), Some(1));
    let e = s.next_item().await.unwrap_err();
    assert!(matches!(e, Error::Transport { .. }), "{e}");
    assert!(s.next_item().await.unwrap().is_none());
}

#[tokio::test]
async fn unreachable_server_fails_fast_on_open() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = Client::new(&format!("http://127.0.0.1:{port}")).unwrap();
    let e = c.stream_changes().from_lsn(1).await.unwrap_err();
    assert!(matches!(e, Error::Transport { .. }), "{e}");
    assert!(e.is_retryable());
    assert!(e.to_string().to_lowercase().contains("refused"), "{e}");
}

#[tokio::test]
async fn arguments_are_checked_before_any_request() {
    let f = fake(|_, _| Reply::Stream(vec![Step::Hang])).await;
    let c = f.client();
    for b in [
        c.stream_changes().batch_size(0),
        c.stream_changes().entities(["a,b"]),
        c.stream_changes().exclude_entities([""]),
        c.stream_changes().consumer(""),
    ] {
        let e = b.await.unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    }
    assert!(f.requests().is_empty());
    for bad in ["ftp://x", "not a url", "http://h:1/?a=b", "unix:/tmp/x"] {
        assert!(
            matches!(Client::new(bad), Err(Error::InvalidUrl { .. })),
            "{bad}"
        );
    }
    #[cfg(not(feature = "rustls"))]
    assert!(Client::new("https://example.com")
        .unwrap_err()
        .to_string()
        .contains("rustls"));
}

#[tokio::test]
async fn consumer_endpoints() {
    let f = fake(|_, r| match (r.method.as_str(), r.path()) {
        ("GET", "/base/v1/status") => {
            Reply::Json(200, json!({"current_lsn": 9, "oldest_lsn": 3, "log": {"dir": "x"}}))
        }
        ("PUT", "/base/v1/consumers/search-sync/checkpoint") => {
            let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            if body["lsn"] == 2 && body.get("force").is_none() {
                Reply::Json(409, json!({"error": "checkpoint 5 is ahead of 2"}))
            } else {
                Reply::Json(
                    200,
                    json!({"name": "search-sync", "checkpoint": body["lsn"], "updated_at_us": 77}),
                )
            }
        }
        ("GET", "/base/v1/consumers") => Reply::Json(
            200,
            json!({"consumers": [{"name": "search-sync", "checkpoint": 5, "lag_events": 4, "lag_seconds": 1.5, "updated_at_us": 77}]}),
        ),
        ("GET", "/base/v1/consumers/search-sync") => Reply::Json(
            200,
            json!({"name": "search-sync", "checkpoint": 5, "lag_events": 4, "lag_seconds": null, "updated_at_us": 77}),
        ),
        ("DELETE", "/base/v1/consumers/search-sync") => Reply::Empty(204),
        _ => Reply::Json(404, json!({"error": "no such consumer"})),
    })
    .await;
    let c = Client::new(&format!("{}/base/", f.url))
        .unwrap()
        .with_token("t");
    assert_eq!(c.current_lsn().await.unwrap(), 9);
    let st = c.status().await.unwrap();
    assert_eq!((st.current_lsn, st.oldest_lsn), (9, 3));
    assert_eq!(st.other["log"]["dir"], "x");
    let cp = c.checkpoint("search-sync", 5).await.unwrap();
    assert_eq!(
        (cp.name.as_str(), cp.checkpoint, cp.updated_at_us),
        ("search-sync", 5, 77)
    );
    let e = c.checkpoint("search-sync", 2).await.unwrap_err();
    assert!(
        matches!(&e, Error::CheckpointConflict { lsn: 2, message, .. } if message.contains("ahead")),
        "{e}"
    );
    assert_eq!(
        c.checkpoint_force("search-sync", 2)
            .await
            .unwrap()
            .checkpoint,
        2
    );
    let all = c.consumers().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(
        (all[0].checkpoint, all[0].lag_events, all[0].lag_seconds),
        (5, Some(4), Some(1.5))
    );
    assert_eq!(
        c.consumer("search-sync").await.unwrap().unwrap().checkpoint,
        5
    );
    assert!(c.consumer("other").await.unwrap().is_none());
    assert!(c.delete_consumer("search-sync").await.unwrap());
    assert!(!c.delete_consumer("other").await.unwrap());
    let reqs = f.requests();
    assert!(reqs
        .iter()
        .all(|r| r.header("authorization") == Some("Bearer t")));
    let put = reqs.iter().find(|r| r.method == "PUT").unwrap();
    assert_eq!(put.header("content-type"), Some("application/json"));
    let forced = reqs.iter().filter(|r| r.method == "PUT").nth(2).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&forced.body).unwrap(),
        json!({"lsn": 2, "force": true})
    );
    // a consumer name is one path segment, whatever it holds
    assert!(c.consumer("a/b").await.unwrap().is_none());
    assert_eq!(
        f.requests().last().unwrap().path(),
        "/base/v1/consumers/a%2Fb"
    );
}

#[test]
fn stream_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    let client = Client::new("http://127.0.0.1:1").unwrap();
    let builder = client.stream_changes();
    let fut = std::future::IntoFuture::into_future(builder);
    send(&fut);
    async fn uses(s: spillway_client::ChangeStream) {
        let _ = s.next_item().await;
        let _ = s.next_item_batch().await;
    }
    fn check(s: spillway_client::ChangeStream) {
        send(&uses(s));
    }
    let _ = check;
    send(&client.checkpoint("x", 1));
}

/// Issue 8.3: the stream resumes with the log epoch its position belongs to —
/// the server's header from the first line of a connection on, and the
/// `log_epoch` of a gap record the log holds — and a connection lost before
/// its first line asks again with the epoch it had.
#[tokio::test]
async fn resumes_with_the_log_epoch_of_its_position() {
    let f = fake(|n, _| match n {
        0 => Reply::StreamEpoch(
            "00000000000000aa",
            vec![chunk(change(1, 1, "insert") + &change(2, 2, "insert")), Step::Close],
        ),
        // Lost before its first line: its epoch must not be taken over.
        1 => Reply::StreamEpoch("00000000000000bb", vec![Step::Close]),
        2 => Reply::StreamEpoch(
            "00000000000000bb",
            vec![
                chunk(format!(
                    "{}\n",
                    json!({"type": "requery_required", "lsn": 3, "requested_lsn": 3, "oldest_lsn": 4, "reason": "log_gap", "log_epoch": "00000000000000cc", "timestamp": 1})
                )),
                chunk(change(4, 4, "insert")),
                Step::Close,
            ],
        ),
        _ => Reply::StreamEpoch("00000000000000cc", vec![chunk(change(5, 5, "insert")), Step::Hang]),
    })
    .await;
    let mut s = f
        .client()
        .stream_changes()
        .from_lsn(1)
        .backoff(FAST, FAST)
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 5 {
        got.push(next(&mut s).await);
    }
    assert!(
        matches!(
            got[2],
            StreamItem::RequeryRequired {
                requested_lsn: 3,
                oldest_lsn: 4
            }
        ),
        "{got:?}"
    );
    assert_eq!(lsns(&got), vec![1, 2, 4, 5]);
    let reqs = f.changes_requests();
    let asked: Vec<(Option<String>, Option<String>)> = reqs
        .iter()
        .map(|r| (r.query("from_lsn"), r.query("epoch")))
        .collect();
    let p = |l: &str, e: Option<&str>| (Some(l.to_string()), e.map(str::to_string));
    assert_eq!(
        asked,
        vec![
            p("1", None),
            p("3", Some("00000000000000aa")),
            p("3", Some("00000000000000aa")),
            p("5", Some("00000000000000cc")),
        ]
    );
    assert_eq!(s.log_epoch().as_deref(), Some("00000000000000cc"));
    // An old gap record (before the epoch the connection is in) does not
    // change the epoch: positions read on this connection are in the newer one.
    let f = fake(|n, _| match n {
        0 => Reply::StreamEpoch(
            "00000000000000dd\r\nspillway-log-epoch-start: 10",
            vec![
                chunk(format!(
                    "{}\n",
                    json!({"type": "requery_required", "lsn": 3, "requested_lsn": 3, "oldest_lsn": 4, "reason": "log_gap", "log_epoch": "00000000000000cc", "timestamp": 1})
                )),
                chunk(change(4, 4, "insert")),
                Step::Close,
            ],
        ),
        _ => Reply::StreamEpoch("00000000000000dd", vec![Step::Hang]),
    })
    .await;
    let mut s = f
        .client()
        .stream_changes()
        .from_lsn(3)
        .backoff(FAST, FAST)
        .await
        .unwrap();
    next(&mut s).await;
    next(&mut s).await;
    // Reading on makes the stream reconnect (the fake then holds it open).
    let reconnected = async {
        while f.changes_requests().len() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        item = s.next_item() => panic!("nothing more was sent: {item:?}"),
        _ = tokio::time::timeout(Duration::from_secs(10), reconnected) => {}
    }
    let r = &f.changes_requests()[1];
    assert_eq!(r.query("from_lsn").as_deref(), Some("5"));
    assert_eq!(r.query("epoch").as_deref(), Some("00000000000000dd"));
    // A stored position resumes in its epoch from the first request on.
    let f = fake(|_, _| Reply::StreamEpoch("00000000000000cc", vec![Step::Hang])).await;
    let _s = f
        .client()
        .stream_changes()
        .after_lsn(41)
        .log_epoch("00000000000000aa")
        .backoff(FAST, FAST)
        .await
        .unwrap();
    let r = &f.changes_requests()[0];
    assert_eq!(r.query("from_lsn").as_deref(), Some("42"));
    assert_eq!(r.query("epoch").as_deref(), Some("00000000000000aa"));
    for (builder, what) in [
        (
            f.client().stream_changes().after_lsn(1).log_epoch("xyz"),
            "hex",
        ),
        (
            f.client().stream_changes().from_beginning().log_epoch("aa"),
            "from_lsn",
        ),
    ] {
        match builder.await {
            Err(spillway_client::Error::InvalidArgument(m)) => assert!(m.contains(what), "{m}"),
            other => panic!("{what}: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// The row-change level (reference 004's shape)
// ---------------------------------------------------------------------------

fn schema_line(lsn: u64) -> String {
    format!(
        "{}\n",
        json!({"type": "schema_change", "lsn": lsn, "id": format!("0/{lsn:X}:1"), "timestamp": 5, "entity": "public.items",
            "schema": "public", "table": "items", "replica_identity": "default",
            "columns": [{"name": "id", "type": "int4", "type_oid": 23, "key": true}],
            "tx": {"xid": 1, "commit_lsn": format!("0/{lsn:X}"), "index": 1}, "source": {"db": "shop", "pg_lsn": "0/1"}})
    )
}

fn scanned(current: u64, scanned: u64) -> String {
    format!(
        "{}\n",
        json!({"type": "heartbeat", "current_lsn": current, "scanned_lsn": scanned, "timestamp": 1})
    )
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("within 10 s")
}

#[tokio::test]
async fn next_yields_row_changes_and_a_requery_cannot_be_ignored() {
    let body = format!(
        "{}{}{}{}{}",
        schema_line(1),
        change(2, 1, "insert"),
        change(3, 2, "update"),
        requery(4, 9),
        change(9, 3, "delete")
    );
    let f = fake(move |n, _| match n {
        0 => Reply::Stream(vec![chunk(body.clone()), Step::Sleep(100), Step::Close]),
        _ => Reply::Stream(vec![chunk(change(10, 4, "insert")), Step::Hang]),
    })
    .await;
    let s = f.client().stream_changes().from_lsn(1).await.unwrap();
    let c = within(s.next()).await.unwrap().unwrap();
    assert_eq!((c.lsn, c.operation), (2, Operation::Insert));
    let c = within(s.next()).await.unwrap().unwrap();
    assert_eq!((c.lsn, c.operation), (3, Operation::Update));
    match within(s.next()).await {
        Err(e @ Error::RequeryRequired { .. }) => {
            assert!(e.is_requery());
            assert!(matches!(
                e,
                Error::RequeryRequired {
                    requested_lsn: 4,
                    oldest_lsn: 9
                }
            ));
            assert!(e.to_string().contains("rebuild"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // and the stream goes on where the server said
    let c = within(s.next()).await.unwrap().unwrap();
    assert_eq!((c.lsn, c.operation), (9, Operation::Delete));
    assert_eq!(within(s.next()).await.unwrap().unwrap().lsn, 10);
    assert_eq!(
        f.changes_requests()[1].query("from_lsn").as_deref(),
        Some("10")
    );
}

#[tokio::test]
async fn batches_of_changes_and_the_futures_stream() {
    use futures_util::StreamExt;
    let body = schema_line(1);
    let body2 = format!("{}{}", change(2, 1, "insert"), change(3, 2, "insert"));
    let f = fake(move |_, _| {
        Reply::Stream(vec![
            chunk(body.clone()),
            Step::Sleep(50),
            chunk(body2.clone()),
            Step::Sleep(50),
            chunk(change(4, 3, "delete")),
            Step::End,
        ])
    })
    .await;
    let s = f
        .client()
        .stream_changes()
        .from_lsn(1)
        .reconnect(false)
        .await
        .unwrap();
    // a batch of only a schema change is passed over; batches hold changes
    let b = within(s.next_batch()).await.unwrap().unwrap();
    assert_eq!(b.iter().map(|c| c.lsn).collect::<Vec<_>>(), [2, 3]);
    let b = within(s.next_batch()).await.unwrap().unwrap();
    assert_eq!(b.iter().map(|c| c.lsn).collect::<Vec<_>>(), [4]);
    assert!(within(s.next_batch()).await.unwrap().is_none());

    let mut s = f
        .client()
        .stream_changes()
        .from_lsn(1)
        .reconnect(false)
        .await
        .unwrap();
    let all: Vec<u64> = within(s.by_ref().map(|c| c.unwrap().lsn).collect()).await; // StreamExt
    assert_eq!(all, [2, 3, 4]);
}

#[tokio::test]
async fn heartbeats_move_a_filtered_streams_position_and_its_resume_point() {
    let f = fake(move |n, _| match n {
        0 => Reply::Stream(vec![
            chunk(format!("{}{}", change(2, 1, "insert"), scanned(10, 10))),
            Step::Sleep(100),
            Step::Close,
        ]),
        _ => Reply::Stream(vec![chunk(change(11, 2, "insert")), Step::Hang]),
    })
    .await;
    let s = f
        .client()
        .stream_changes()
        .from_lsn(1)
        .entities(["items"])
        .backoff(FAST, FAST)
        .await
        .unwrap();
    assert_eq!(within(s.next()).await.unwrap().unwrap().lsn, 2);
    assert_eq!(s.last_lsn(), Some(2));
    let c = within(s.next()).await.unwrap().unwrap();
    assert_eq!(c.lsn, 11);
    // the reconnect did not read lsns 3..=10 again
    let reqs = f.changes_requests();
    assert_eq!(reqs[1].query("from_lsn").as_deref(), Some("11"));
    assert_eq!(reqs[1].query("entities").as_deref(), Some("items"));
    assert_eq!(s.server_current_lsn(), Some(10));

    // caught up on a filtered stream: the position reaches the server's end
    let f = fake(move |_, _| {
        Reply::Stream(vec![
            chunk(change(2, 1, "insert")),
            Step::Sleep(50),
            chunk(scanned(7, 7)),
            Step::Hang,
        ])
    })
    .await;
    let s = f.client().stream_changes().from_lsn(1).await.unwrap();
    assert_eq!(within(s.next()).await.unwrap().unwrap().lsn, 2);
    assert!(tokio::time::timeout(Duration::from_millis(500), s.next())
        .await
        .is_err());
    assert_eq!(s.last_lsn(), Some(7), "current 7 - last 7 = no lag");
}

#[tokio::test]
async fn until_caught_up_reads_what_was_there_then_ends() {
    let f = fake(move |_, r| match r.path() {
        "/v1/status" => Reply::Json(200, json!({"current_lsn": 3, "oldest_lsn": 1})),
        _ => Reply::Stream(vec![
            chunk(format!(
                "{}{}{}",
                schema_line(1),
                change(2, 1, "insert"),
                change(3, 2, "insert")
            )),
            Step::Hang,
        ]),
    })
    .await;
    let s = f
        .client()
        .stream_changes()
        .from_beginning()
        .until_caught_up()
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(c) = within(s.next()).await.unwrap() {
        got.push(c.lsn);
    }
    assert_eq!(got, [2, 3]);
    let req = &f.changes_requests()[0];
    assert_eq!(req.query("heartbeat_ms").as_deref(), Some("100"));

    // filtered: the last records are left out, a heartbeat says they were read
    let f = fake(move |_, r| match r.path() {
        "/v1/status" => Reply::Json(200, json!({"current_lsn": 9, "oldest_lsn": 1})),
        _ => Reply::Stream(vec![
            chunk(change(2, 1, "insert")),
            Step::Sleep(100),
            chunk(scanned(9, 9)),
            Step::Hang,
        ]),
    })
    .await;
    let s = f
        .client()
        .stream_changes()
        .from_beginning()
        .operations([Operation::Insert])
        .until_caught_up()
        .await
        .unwrap();
    assert_eq!(within(s.next()).await.unwrap().unwrap().lsn, 2);
    assert!(within(s.next()).await.unwrap().is_none());
    // an empty log: nothing to read, done at once
    let f = fake(move |_, r| match r.path() {
        "/v1/status" => Reply::Json(200, json!({"current_lsn": 0, "oldest_lsn": 1})),
        _ => Reply::Stream(vec![Step::Hang]),
    })
    .await;
    let s = f
        .client()
        .stream_changes()
        .from_beginning()
        .until_caught_up()
        .await
        .unwrap();
    assert!(within(s.next()).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_iteration_yields_changes_and_says_why_it_stopped() {
    let body = format!(
        "{}{}{}",
        change(1, 1, "insert"),
        change(2, 2, "insert"),
        requery(3, 7)
    );
    let f = fake(move |_, _| Reply::Stream(vec![chunk(body.clone()), Step::Hang])).await;
    let mut stream = f.client().stream_changes().from_lsn(1).await.unwrap();
    let mut got = Vec::new();
    for change in &mut stream {
        got.push(change.lsn);
    }
    assert_eq!(got, [1, 2]);
    assert!(matches!(
        stream.take_error(),
        Some(Error::RequeryRequired { oldest_lsn: 7, .. })
    ));
}

#[test]
fn blocking_iteration_on_a_current_thread_runtime_is_an_error_not_a_panic() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let f =
            fake(move |_, _| Reply::Stream(vec![chunk(change(1, 1, "insert")), Step::Hang])).await;
        let mut stream = f.client().stream_changes().from_lsn(1).await.unwrap();
        assert!((&mut stream).into_iter().next().is_none());
        let e = stream.take_error().expect("why it stopped");
        assert!(e.to_string().contains("multi-threaded"), "{e}");
        // the async API still works on it
        assert_eq!(within(stream.next()).await.unwrap().unwrap().lsn, 1);
    });
}

#[tokio::test]
async fn a_dropped_next_loses_nothing() {
    let f = fake(move |_, _| {
        Reply::Stream(vec![
            Step::Sleep(300),
            chunk(format!(
                "{}{}",
                change(1, 1, "insert"),
                change(2, 2, "insert")
            )),
            Step::Hang,
        ])
    })
    .await;
    let s = f.client().stream_changes().from_lsn(1).await.unwrap();
    // cancelled while the chunk is on its way
    assert!(tokio::time::timeout(Duration::from_millis(50), s.next())
        .await
        .is_err());
    assert_eq!(within(s.next()).await.unwrap().unwrap().lsn, 1);
    assert_eq!(within(s.next_item()).await.unwrap().unwrap().lsn(), Some(2));
}

#[tokio::test]
async fn from_lsn_zero_is_the_first_lsn() {
    let f = fake(move |_, _| Reply::Stream(vec![Step::Hang])).await;
    let _s = f.client().stream_changes().from_lsn(0).await.unwrap();
    assert_eq!(
        f.changes_requests()[0].query("from_lsn").as_deref(),
        Some("1")
    );
}

/// Events received in a chunk that ends mid-line are handed out before an
/// until_caught_up stream ends (they used to be dropped when they reached the end).
#[tokio::test]
async fn until_caught_up_hands_out_what_a_split_chunk_held() {
    let f = fake(move |_, r| match r.path() {
        "/v1/status" => Reply::Json(200, json!({"current_lsn": 3, "oldest_lsn": 1})),
        _ => {
            let four = change(4, 3, "insert");
            let (head, tail) = four.split_at(20);
            Reply::Stream(vec![
                chunk(format!(
                    "{}{}{head}",
                    change(2, 1, "insert"),
                    change(3, 2, "insert")
                )),
                Step::Sleep(100),
                chunk(tail.to_string()),
                Step::Hang,
            ])
        }
    })
    .await;
    let s = f
        .client()
        .stream_changes()
        .from_lsn(1)
        .until_caught_up()
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(c) = within(s.next()).await.unwrap() {
        got.push(c.lsn);
    }
    // 4, committed after the stream opened, completes the batch 2 and 3 arrived in.
    assert_eq!(got, [2, 3, 4]);
}
