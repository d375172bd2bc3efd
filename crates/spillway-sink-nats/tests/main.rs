//! Tests of the `nats` sink against a real `nats-server -js` (started by
//! the testkit on a free port).

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_nats::jetstream;
use serde_json::Value;
use spillway_sink_nats::{NatsSink, NatsSinkConfig};
use spillway_sinks::conformance::{self, test_settings, wait_until, Outage, Running, TestLog};
use spillway_sinks::{Sink, SinkError, SinkRecord};
use spillway_testkit::services::{read_jetstream, NatsServer};

/// Every message of `stream`, in stream order: (subject, Nats-Msg-Id, body).
async fn read_stream(url: &str, stream: &str) -> Vec<(String, String, Value)> {
    read_jetstream(url, stream)
        .await
        .expect("read the stream back")
        .into_iter()
        .map(|m| {
            let body: Value = serde_json::from_slice(&m.payload).expect("a JSON message");
            (m.subject, m.msg_id, body)
        })
        .collect()
}

fn read_blocking(url: &str, stream: &str) -> Vec<(String, String, Value)> {
    tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(read_stream(url, stream))
    })
}

struct Down<'a>(&'a Mutex<NatsServer>);

impl Outage for Down<'_> {
    fn begin(&self) {
        self.0.lock().expect("lock").service.stop();
    }
    fn end(&self) {
        self.0
            .lock()
            .expect("lock")
            .service
            .start_again()
            .expect("nats-server starts again");
    }
}

fn config(url: &str) -> NatsSinkConfig {
    let mut c = NatsSinkConfig::new(url);
    c.ack_timeout_ms = 1000;
    c.connect_timeout_ms = 1000;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_sink_passes_conformance_with_outage() {
    let server = NatsServer::start().expect("nats-server");
    let url = server.url();
    let server = Mutex::new(server);
    let cfg = config(&url);
    conformance::run_conformance(
        || NatsSink::new(&cfg, "spillway", "shop").expect("nats sink"),
        || {
            let msgs = read_blocking(&url, "spillway");
            for (subject, id, body) in &msgs {
                assert_eq!(
                    Some(id.as_str()),
                    body["id"].as_str(),
                    "Nats-Msg-Id is the event id"
                );
                let want = match body["entity"].as_str() {
                    Some(e) => format!("spillway_{}", e.replace('.', "_")),
                    None => "spillway_control".into(),
                };
                assert_eq!(subject, &want, "subject of {body}");
            }
            msgs.into_iter().map(|(_, _, b)| b).collect()
        },
        Some(&Down(&server)),
    )
    .await;
}

fn record(lsn: u64, entity: Option<&str>) -> SinkRecord {
    SinkRecord {
        lsn,
        id: format!("0/16B{lsn:04X}:1"),
        entity: entity.map(str::to_owned),
        key: None,
        value: format!(r#"{{"lsn":{lsn}}}"#).into_bytes(),
        timestamp_us: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_batch_is_deduplicated_by_msg_id() {
    let server = NatsServer::start().expect("nats-server");
    let mut sink = NatsSink::new(&config(&server.url()), "spillway", "shop").expect("sink");
    let batch: Vec<SinkRecord> = (1..=50).map(|l| record(l, Some("public.t"))).collect();
    sink.deliver(&batch).await.expect("first delivery");
    sink.deliver(&batch).await.expect("replay");
    sink.deliver(&batch[10..20]).await.expect("partial replay");
    let msgs = read_stream(&server.url(), "spillway").await;
    assert_eq!(msgs.len(), 50, "the server dropped the replays");
    let lsns: Vec<u64> = msgs
        .iter()
        .filter_map(|(_, _, b)| b["lsn"].as_u64())
        .collect();
    assert_eq!(lsns, (1..=50).collect::<Vec<_>>());
    // A new sink instance (a restart) replaying is deduplicated too.
    let mut again = NatsSink::new(&config(&server.url()), "spillway", "shop").expect("sink");
    again
        .deliver(&batch[40..])
        .await
        .expect("replay after restart");
    assert_eq!(read_stream(&server.url(), "spillway").await.len(), 50);
    sink.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subjects_follow_template_mapping_and_prefix() {
    let server = NatsServer::start().expect("nats-server");
    let mut cfg = config(&server.url());
    cfg.stream = "orders_stream".into();
    cfg.subject_mapping = BTreeMap::from([
        ("trades".to_owned(), "transactions".to_owned()),
        ("audit.log".to_owned(), "{db}.audit".to_owned()),
    ]);
    let mut sink = NatsSink::new(&cfg, "ditto", "shop").expect("sink");
    let batch = vec![
        record(1, Some("public.users")),
        record(2, Some("public.trades")),
        record(3, Some("audit.log")),
        record(4, None),
        record(5, Some("other.odd name")),
    ];
    sink.deliver(&batch).await.expect("delivered");
    let subjects: Vec<String> = read_stream(&server.url(), "orders_stream")
        .await
        .into_iter()
        .map(|(s, _, _)| s)
        .collect();
    assert_eq!(
        subjects,
        [
            "ditto_public_users",
            "transactions",
            "shop.audit",
            "ditto_control",
            "ditto_other_odd_name"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_stream_is_used_and_unmanaged_gaps_are_fatal() {
    let server = NatsServer::start().expect("nats-server");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = jetstream::new(client);
    js.create_stream(jetstream::stream::Config {
        name: "mine".into(),
        subjects: vec!["app.>".into()],
        ..Default::default()
    })
    .await
    .expect("create stream");
    let mut cfg = config(&server.url());
    cfg.stream = "mine".into();
    cfg.manage_stream = false;
    cfg.subject = "app.{schema}.{table}".into();
    cfg.control_subject = "app.control".into();
    let mut sink = NatsSink::new(&cfg, "spillway", "shop").expect("sink");
    sink.deliver(&[record(1, Some("public.a")), record(2, None)])
        .await
        .expect("covered by app.>");
    let mut s = js.get_stream("mine").await.expect("stream");
    let info = s.info().await.expect("info");
    assert_eq!(
        info.config.subjects,
        vec!["app.>".to_owned()],
        "not modified"
    );
    assert_eq!(info.state.messages, 2);

    cfg.subject = "elsewhere_{table}".into();
    let mut sink = NatsSink::new(&cfg, "spillway", "shop").expect("sink");
    let err = sink
        .deliver(&[record(3, Some("public.a"))])
        .await
        .expect_err("not covered");
    assert!(matches!(err, SinkError::Fatal(_)), "{err:?}");
    assert!(
        err.to_string().contains("elsewhere_a") && err.to_string().contains("manage_stream"),
        "{err}"
    );

    cfg.stream = "missing".into();
    let mut sink = NatsSink::new(&cfg, "spillway", "shop").expect("sink");
    let err = sink
        .deliver(&[record(3, Some("public.a"))])
        .await
        .expect_err("no stream");
    assert!(
        matches!(err, SinkError::Fatal(_)) && err.to_string().contains("does not exist"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_retried_and_then_delivered() {
    let mut server = NatsServer::start().expect("nats-server");
    server.service.stop();
    let mut t = TestLog::new();
    t.append_changes(10).await;
    let run = Running::start(
        &t.log,
        test_settings("nats"),
        NatsSink::new(&config(&server.url()), "spillway", "shop").expect("sink"),
    );
    wait_until("connection failures are retried", || {
        run.status.retrying() && run.status.errors() >= 2
    })
    .await;
    assert_eq!(t.checkpoint("nats"), 0);
    assert!(
        run.status
            .last_error()
            .is_some_and(|e| e.contains("cannot connect")),
        "{:?}",
        run.status.last_error()
    );
    server.service.start_again().expect("restart");
    let committed = t.log.committed_lsn();
    wait_until("delivered after the server came up", || {
        run.status.checkpoint_lsn() == committed
    })
    .await;
    run.stop().await.expect("stop");
    assert_eq!(read_stream(&server.url(), "spillway").await.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_fatal() {
    let mut server = NatsServer::start_with_args(&["--auth", "right-token"]).expect("nats-server");
    let mut cfg = config(&server.url());
    cfg.token = Some("wrong-token".into());
    let mut sink = NatsSink::new(&cfg, "spillway", "shop").expect("sink");
    let err = sink
        .deliver(&[record(1, Some("public.a"))])
        .await
        .expect_err("refused");
    assert!(matches!(err, SinkError::Fatal(_)), "{err:?}");
    cfg.token = Some("right-token".into());
    let mut sink = NatsSink::new(&cfg, "spillway", "shop").expect("sink");
    sink.deliver(&[record(1, Some("public.a"))])
        .await
        .expect("accepted with the token");
    server.service.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificate() {
    let dir = conformance::temp_dir("spillway-nats-tls");
    let pki = spillway_testkit::pki::TestPki::create(&dir).expect("pki");
    let path = |p: &std::path::Path| p.display().to_string();
    let server = NatsServer::start_with_args(&[
        "--tls",
        "--tlscert",
        &path(&pki.server_cert),
        "--tlskey",
        &path(&pki.server_key),
        "--tlscacert",
        &path(&pki.ca_cert),
        "--tlsverify",
    ])
    .expect("nats-server with TLS");
    let mut cfg = config(&server.url());
    cfg.tls = true;
    cfg.tls_ca = Some(pki.ca_cert.clone());
    cfg.tls_cert = Some(pki.client_cert.clone());
    cfg.tls_key = Some(pki.client_key.clone());
    let mut sink = NatsSink::new(&cfg, "spillway", "shop").expect("sink");
    sink.deliver(&[record(1, Some("public.a")), record(2, Some("public.a"))])
        .await
        .expect("delivered over TLS with a client certificate");
    sink.close().await.expect("close");

    // Without the client certificate the server refuses the connection.
    cfg.tls_cert = None;
    cfg.tls_key = None;
    let mut sink = NatsSink::new(&cfg, "spillway", "shop").expect("sink");
    let err = sink
        .deliver(&[record(3, Some("public.a"))])
        .await
        .expect_err("refused without a client certificate");
    assert!(!err.to_string().contains('\n'), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
