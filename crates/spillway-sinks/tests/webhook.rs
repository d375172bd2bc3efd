//! Tests of the `webhook` sink against a real HTTP server in the test.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use spillway_sinks::conformance::{
    self, check_delivery, test_settings, wait_until, Outage, Running, TestLog,
};
use spillway_sinks::webhook::{WebhookSink, WebhookSinkConfig};
use spillway_sinks::{Sink, SinkError, SinkRecord};

const SECRET: &str = "s3cret-key";

/// What the test server saw and how it answers.
#[derive(Default)]
struct Seen {
    /// Every event of every accepted POST, in arrival order.
    events: Mutex<Vec<Value>>,
    /// Headers of accepted POSTs.
    headers: Mutex<Vec<HeaderMap>>,
    /// POSTs answered (any status).
    requests: AtomicUsize,
    /// Requests whose signature did not verify.
    bad_signatures: AtomicUsize,
    /// Status to answer instead of accepting (0: accept with 200).
    answer: AtomicU16,
    /// Outage: answer 503.
    down: AtomicBool,
}

fn hex_hmac(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn hook(State(seen): State<Arc<Seen>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    seen.requests.fetch_add(1, Ordering::SeqCst);
    if seen.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let answer = seen.answer.load(Ordering::SeqCst);
    if answer != 0 {
        return StatusCode::from_u16(answer).expect("status");
    }
    let expected = format!("sha256={}", hex_hmac(SECRET, &body));
    let sig = headers
        .get("x-spillway-signature")
        .and_then(|v| v.to_str().ok());
    if sig != Some(expected.as_str()) {
        seen.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(Value::Array(events)) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    seen.events.lock().expect("lock").extend(events);
    seen.headers.lock().expect("lock").push(headers);
    StatusCode::OK
}

/// Starts the server on 127.0.0.1:0; returns its state and the hook URL.
async fn server() -> (Arc<Seen>, String) {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (seen, format!("http://{addr}/hook"))
}

fn config(url: &str) -> WebhookSinkConfig {
    let mut c = WebhookSinkConfig::new(url);
    c.secret = Some(SECRET.into());
    c.timeout_ms = 2000;
    c.headers.insert("X-Tenant".into(), "acme".into());
    c
}

struct Down(Arc<Seen>);

impl Outage for Down {
    fn begin(&self) {
        self.0.down.store(true, Ordering::SeqCst);
    }
    fn end(&self) {
        self.0.down.store(false, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_sink_passes_conformance_with_outage() {
    let (seen, url) = server().await;
    let cfg = config(&url);
    let outage = Down(seen.clone());
    conformance::run_conformance(
        || WebhookSink::new(&cfg).expect("webhook sink"),
        || seen.events.lock().expect("lock").clone(),
        Some(&outage),
    )
    .await;
    assert_eq!(seen.bad_signatures.load(Ordering::SeqCst), 0);
    let headers = seen.headers.lock().expect("lock");
    assert!(headers
        .iter()
        .all(|h| h.get("x-tenant").is_some_and(|v| v == "acme")
            && h.get("content-type")
                .is_some_and(|v| v == "application/json")));
}

fn record(lsn: u64) -> SinkRecord {
    SinkRecord {
        lsn,
        id: format!("id-{lsn}"),
        entity: None,
        key: None,
        value: format!(r#"{{"lsn":{lsn},"id":"id-{lsn}"}}"#).into_bytes(),
        timestamp_us: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_and_lsn_headers_are_correct() {
    let (seen, url) = server().await;
    let mut sink = WebhookSink::new(&config(&url)).expect("sink");
    sink.deliver(&[record(3), record(4), record(9)])
        .await
        .expect("delivered");
    assert_eq!(seen.bad_signatures.load(Ordering::SeqCst), 0);
    let headers = seen.headers.lock().expect("lock").clone();
    assert_eq!(headers.len(), 1);
    let h = &headers[0];
    assert_eq!(h["x-spillway-first-lsn"], "3");
    assert_eq!(h["x-spillway-last-lsn"], "9");
    let body = br#"[{"lsn":3,"id":"id-3"},{"lsn":4,"id":"id-4"},{"lsn":9,"id":"id-9"}]"#;
    assert_eq!(
        h["x-spillway-signature"],
        format!("sha256={}", hex_hmac(SECRET, body)).as_str()
    );
    let events = seen.events.lock().expect("lock").clone();
    let lsns: Vec<u64> = events.iter().filter_map(|e| e["lsn"].as_u64()).collect();
    assert_eq!(lsns, vec![3, 4, 9]);

    // Without a secret: no signature header (the test server rejects it).
    let mut plain = WebhookSink::new(&WebhookSinkConfig::new(&url)).expect("sink");
    let err = plain.deliver(&[record(1)]).await.expect_err("unsigned");
    assert!(matches!(err, SinkError::Fatal(_)), "{err:?}");
    assert_eq!(seen.bad_signatures.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_answer_stops_the_sink_with_fatal() {
    let (seen, url) = server().await;
    seen.answer.store(400, Ordering::SeqCst);
    let mut t = TestLog::new();
    t.append_changes(5).await;
    let run = Running::start(
        &t.log,
        test_settings("hook"),
        WebhookSink::new(&config(&url)).expect("sink"),
    );
    let status = run.status.clone();
    let err = run.handle.await.expect("task").expect_err("fatal");
    let msg = err.to_string();
    assert!(matches!(err, SinkError::Fatal(_)), "{err:?}");
    assert!(msg.contains("400") && msg.contains(&url), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert!(status.failed());
    assert_eq!(status.checkpoint_lsn(), 0);
    assert_eq!(t.checkpoint("hook"), 0);
    assert_eq!(seen.requests.load(Ordering::SeqCst), 1, "no retries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_is_retried_then_delivered() {
    let (seen, url) = server().await;
    seen.answer.store(503, Ordering::SeqCst);
    let mut t = TestLog::new();
    t.append_changes(20).await;
    let run = Running::start(
        &t.log,
        test_settings("hook"),
        WebhookSink::new(&config(&url)).expect("sink"),
    );
    wait_until("a few 503s were retried", || {
        run.status.retrying() && seen.requests.load(Ordering::SeqCst) >= 3
    })
    .await;
    assert_eq!(t.checkpoint("hook"), 0);
    assert!(run.status.last_error().is_some_and(|e| e.contains("503")));
    seen.answer.store(0, Ordering::SeqCst);
    let committed = t.log.committed_lsn();
    wait_until("caught up", || run.status.checkpoint_lsn() == committed).await;
    assert!(!run.status.retrying());
    run.stop().await.expect("stop");
    check_delivery(&t.appended, &seen.events.lock().expect("lock"), &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_retried() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let mut t = TestLog::new();
    t.append_changes(5).await;
    let run = Running::start(
        &t.log,
        test_settings("hook"),
        WebhookSink::new(&config(&format!("http://{addr}/hook"))).expect("sink"),
    );
    wait_until("connection errors are retried", || {
        run.status.retrying() && run.status.errors() >= 3
    })
    .await;
    assert!(!run.status.failed());
    assert_eq!(t.checkpoint("hook"), 0);
    let last = run.status.last_error().expect("last error");
    assert!(last.contains("cannot connect"), "{last}");
    run.stop().await.expect("stop");
}

#[test]
fn config_validates_and_hides_the_secret() {
    let cfg: WebhookSinkConfig = serde_json::from_str(
        r#"{"url":"https://example.com/x","secret":"hunter2","headers":{"A":"b"}}"#,
    )
    .expect("parse");
    assert_eq!(cfg.timeout_ms, 10_000);
    assert!(cfg.validate().is_ok());
    assert!(!format!("{cfg:?}").contains("hunter2"));
    assert!(!format!(
        "{:?}",
        WebhookSink::new(&config("http://h/")).expect("sink")
    )
    .contains(SECRET));
    assert!(serde_json::from_str::<WebhookSinkConfig>(r#"{"url":"http://h","nope":1}"#).is_err());
    for bad in ["ftp://h/x", "not a url", "file:///tmp/x"] {
        let err = WebhookSinkConfig::new(bad).validate().expect_err(bad);
        assert!(!err.to_string().contains('\n'));
    }
}
