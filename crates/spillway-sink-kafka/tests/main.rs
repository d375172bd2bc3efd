//! Tests of the `kafka` sink against a real Kafka-protocol broker (`tansu`,
//! started by the testkit on a free port; TLS through `stunnel`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use spillway_sink_kafka::{read_topics, KafkaMessage, KafkaSink, KafkaSinkConfig};
use spillway_sinks::conformance::{self, test_settings, wait_until, Outage, Running, TestLog};
use spillway_sinks::{Sink, SinkError, SinkRecord};
use spillway_testkit::services::Tansu;

fn config(bootstrap: &str) -> KafkaSinkConfig {
    let mut c = KafkaSinkConfig::new(bootstrap);
    c.delivery_timeout_ms = 1500;
    c
}

fn read(cfg: &KafkaSinkConfig, prefix: &str) -> Vec<KafkaMessage> {
    let prefix = prefix.to_owned();
    read_topics(cfg, |t| t.starts_with(&prefix), Duration::from_secs(30)).expect("read back")
}

struct Paused<'a>(&'a Mutex<Tansu>);

impl Outage for Paused<'_> {
    fn begin(&self) {
        self.0.lock().expect("lock").pause();
    }
    fn end(&self) {
        self.0.lock().expect("lock").resume();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sink_passes_conformance_with_outage() {
    let broker = Tansu::start().expect("tansu");
    let cfg = config(&broker.bootstrap);
    let broker = Mutex::new(broker);
    conformance::run_conformance(
        || KafkaSink::new(&cfg, "spillway", "shop").expect("kafka sink"),
        || {
            let msgs = tokio::task::block_in_place(|| read(&cfg, "spillway."));
            msgs.into_iter()
                .map(|m| {
                    let v: Value = serde_json::from_slice(&m.value).expect("JSON value");
                    assert_eq!(m.id.as_deref(), v["id"].as_str(), "spillway-id header");
                    let want = match v["entity"].as_str() {
                        Some(e) => format!("spillway.{e}"),
                        None => "spillway.control".into(),
                    };
                    assert_eq!(m.topic, want, "topic of {v}");
                    if v["type"] == "change" {
                        let key: Value = serde_json::from_slice(m.key.as_deref().expect("a key"))
                            .expect("JSON key");
                        assert_eq!(key, v["entity_id"], "key = primary key");
                    }
                    v
                })
                .collect()
        },
        Some(&Paused(&broker)),
    )
    .await;
}

fn record(lsn: u64, entity: Option<&str>, key: Option<&str>) -> SinkRecord {
    SinkRecord {
        lsn,
        id: format!("0/{lsn:X}:1"),
        entity: entity.map(str::to_owned),
        key: key.map(|k| k.as_bytes().to_vec()),
        value: format!(r#"{{"lsn":{lsn}}}"#).into_bytes(),
        timestamp_us: 1_763_683_200_000_000 + lsn as i64,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_keys_headers_and_mapping() {
    let broker = Tansu::start().expect("tansu");
    let mut cfg = config(&broker.bootstrap);
    cfg.topic_mapping = BTreeMap::from([("trades".to_owned(), "{prefix}.transactions".to_owned())]);
    cfg.partitions = 3;
    let mut sink = KafkaSink::new(&cfg, "app", "shop").expect("sink");
    let batch = vec![
        record(1, Some("commerce.users"), Some(r#"{"id":1}"#)),
        record(2, Some("public.trades"), Some(r#"{"id":7}"#)),
        record(3, None, None),
        record(4, Some("commerce.users"), Some(r#"{"id":1}"#)),
        record(5, Some("weird schema.odd/name"), Some(r#"{"id":2}"#)),
    ];
    sink.deliver(&batch).await.expect("delivered");
    sink.close().await.expect("close");
    let msgs = tokio::task::block_in_place(|| read(&cfg, "app."));
    let mut seen: Vec<(String, Option<String>, Option<String>)> = msgs
        .iter()
        .map(|m| {
            (
                m.topic.clone(),
                m.key
                    .as_ref()
                    .map(|k| String::from_utf8_lossy(k).into_owned()),
                m.id.clone(),
            )
        })
        .collect();
    seen.sort();
    let s = |x: &str| Some(x.to_owned());
    assert_eq!(
        seen,
        vec![
            ("app.commerce.users".into(), s(r#"{"id":1}"#), s("0/1:1")),
            ("app.commerce.users".into(), s(r#"{"id":1}"#), s("0/4:1")),
            ("app.control".into(), None, s("0/3:1")),
            ("app.transactions".into(), s(r#"{"id":7}"#), s("0/2:1")),
            (
                "app.weird_schema.odd_name".into(),
                s(r#"{"id":2}"#),
                s("0/5:1")
            ),
        ]
    );
    // Same key, same partition, in order.
    let users: Vec<&KafkaMessage> = msgs
        .iter()
        .filter(|m| m.topic == "app.commerce.users")
        .collect();
    assert_eq!(users[0].partition, users[1].partition);
    assert!(users[0].offset < users[1].offset);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_retried_and_then_delivered() {
    let mut broker = Tansu::start().expect("tansu");
    broker.pause();
    let mut t = TestLog::new();
    t.append_changes(12).await;
    let cfg = config(&broker.bootstrap);
    let run = Running::start(
        &t.log,
        test_settings("kafka"),
        KafkaSink::new(&cfg, "spillway", "shop").expect("sink"),
    );
    wait_until("failures are retried", || {
        run.status.retrying() && run.status.errors() >= 1
    })
    .await;
    assert_eq!(
        t.checkpoint("kafka"),
        0,
        "nothing acknowledged, nothing checkpointed"
    );
    broker.resume();
    let committed = t.log.committed_lsn();
    wait_until("delivered after the broker came back", || {
        run.status.checkpoint_lsn() == committed
    })
    .await;
    run.stop().await.expect("stop");
    let msgs = tokio::task::block_in_place(|| read(&cfg, "spillway."));
    let mut ids: Vec<String> = msgs.into_iter().filter_map(|m| m.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        12,
        "every event arrived (duplicates allowed, same ids)"
    );
}

#[test]
fn bad_config_is_one_line() {
    for (f, want) in [
        (r#"{"brokers":"kafka://h:9092"}"#, "host:port"),
        (
            r#"{"brokers":"h:9092","compression":"brotli"}"#,
            "compression",
        ),
        (
            r#"{"brokers":"h:9092","security_protocol":"tls"}"#,
            "security_protocol",
        ),
        (r#"{"brokers":"h:9092","sasl_mechanism":"PLAIN"}"#, "sasl"),
        (r#"{"brokers":"h:9092","topic":"{prefix}.{tbl}"}"#, "{tbl}"),
        (
            r#"{"brokers":"h:9092","options":{"enable.idempotence":"false"}}"#,
            "idempotent",
        ),
        (
            r#"{"brokers":"h:9092","options":{"no.such.property":"1"}}"#,
            "no.such.property",
        ),
        (
            r#"{"brokers":"h:9092","security_protocol":"ssl","ssl_keystore_location":"/nonexistent.p12"}"#,
            "/nonexistent.p12",
        ),
    ] {
        let cfg: KafkaSinkConfig = serde_json::from_str(f).expect(f);
        let e = KafkaSink::new(&cfg, "p", "d").expect_err(f).to_string();
        assert!(e.contains(want), "{f}: {e}");
        assert!(!e.contains('\n'), "{e}");
    }
    let cfg: KafkaSinkConfig = serde_json::from_str(
        r#"{"brokers":"h:9092","sasl_password":"hunter2","options":{"sasl.password":"x2"}}"#,
    )
    .expect("parse");
    let dbg = format!("{cfg:?}");
    assert!(!dbg.contains("hunter2") && !dbg.contains("x2"), "{dbg}");
    assert!(serde_json::from_str::<KafkaSinkConfig>(r#"{"brokers":"h:1","nope":1}"#).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_the_size_limit_is_fatal() {
    let broker = Tansu::start().expect("tansu");
    let mut cfg = config(&broker.bootstrap);
    cfg.options
        .insert("message.max.bytes".into(), "2000".into());
    let mut sink = KafkaSink::new(&cfg, "spillway", "shop").expect("sink");
    let mut big = record(1, Some("public.t"), Some(r#"{"id":1}"#));
    big.value = vec![b'x'; 5000];
    let err = sink.deliver(&[big]).await.expect_err("too large");
    assert!(matches!(err, SinkError::Fatal(_)), "{err:?}");
}

/// Reference 000's connection: TLS with a PKCS#12 keystore (client
/// certificate) and a PKCS#12 truststore (cluster CA), through a TLS
/// terminator that requires a client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_pkcs12_keystore_and_truststore() {
    let dir = tempfile_dir();
    let pki = spillway_testkit::pki::TestPki::create(&dir).expect("pki");
    let broker = Tansu::start_tls(&pki).expect("tansu behind stunnel");
    let mut cfg = config(&broker.bootstrap);
    cfg.security_protocol = "ssl".into();
    cfg.ssl_keystore_location = Some(pki.client_keystore("user-pass").expect("keystore"));
    cfg.ssl_keystore_password = Some("user-pass".into());
    cfg.ssl_truststore_location = Some(pki.ca_truststore("ca-pass").expect("truststore"));
    cfg.ssl_truststore_password = Some("ca-pass".into());
    let mut sink = KafkaSink::new(&cfg, "spillway", "shop").expect("sink");
    let batch: Vec<SinkRecord> = (1..=5)
        .map(|l| record(l, Some("public.t"), Some(r#"{"id":1}"#)))
        .collect();
    sink.deliver(&batch).await.expect("delivered over TLS");
    let msgs = tokio::task::block_in_place(|| read(&cfg, "spillway."));
    assert_eq!(msgs.len(), 5);

    // Without the client certificate the terminator refuses the handshake.
    let mut no_cert = cfg.clone();
    no_cert.ssl_keystore_location = None;
    no_cert.ssl_keystore_password = None;
    no_cert.delivery_timeout_ms = 1000;
    let mut sink = KafkaSink::new(&no_cert, "spillway", "shop").expect("sink");
    let err = sink
        .deliver(&batch[..1])
        .await
        .expect_err("refused without a client certificate");
    assert!(matches!(err, SinkError::Transient(_)), "{err:?}");

    // A wrong truststore password is a one-line configuration error.
    let mut bad = cfg.clone();
    bad.ssl_truststore_password = Some("nope".into());
    let e = KafkaSink::new(&bad, "spillway", "shop")
        .expect_err("bad password")
        .to_string();
    assert!(
        e.contains("ssl_truststore_password") && !e.contains('\n'),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    spillway_sinks::conformance::temp_dir("spillway-kafka-tls")
}
