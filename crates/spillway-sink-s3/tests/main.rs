//! Tests of the `s3` sink against a real S3-compatible server (`s3s-fs`,
//! which checks signatures) and against `file://`.

use std::sync::Mutex;

use serde_json::Value;
use spillway_sink_s3::{S3Sink, S3SinkConfig};
use spillway_sinks::conformance::{self, wait_until, Outage, Running, TestLog};
use spillway_sinks::{Sink, SinkError, SinkRecord};
use spillway_testkit::services::S3Server;

fn config(server: &S3Server, url: &str) -> S3SinkConfig {
    let mut c = S3SinkConfig::new(url);
    c.endpoint = Some(server.endpoint());
    c.access_key_id = Some(server.access_key.clone());
    c.secret_access_key = Some(server.secret_key.clone());
    c
}

/// Every event in every object, objects in name order (= log order per
/// table); checks that each object's name matches its records.
async fn events(sink: &S3Sink) -> Vec<Value> {
    let mut out = Vec::new();
    for (name, content) in sink.read_all().await.expect("read back") {
        let lines: Vec<Value> = String::from_utf8(content)
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert!(!lines.is_empty(), "{name} is empty");
        let first = lines[0]["lsn"].as_u64().unwrap_or(0);
        let last = lines[lines.len() - 1]["lsn"].as_u64().unwrap_or(0);
        assert!(
            name.ends_with(&format!("{first:020}-{last:020}.jsonl"))
                || name.ends_with(&format!("{first:020}-{last:020}.jsonl.gz")),
            "{name} holds lsns {first}..{last}"
        );
        if let Some(entity) = lines[0]["entity"].as_str() {
            let dir = entity.replace('.', "/");
            assert!(
                name.starts_with(&format!("{dir}/date=")),
                "{name} for {entity}"
            );
            assert!(
                lines.iter().all(|l| l["entity"] == entity),
                "one table per object"
            );
        }
        out.extend(lines);
    }
    out
}

fn read_blocking(sink: &S3Sink) -> Vec<Value> {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(events(sink)))
}

struct Down<'a>(&'a Mutex<S3Server>);

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
            .expect("s3s-fs starts again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_sink_passes_conformance_with_outage() {
    let server = S3Server::start("lake").expect("s3s-fs");
    let cfg = config(&server, "s3://lake/cdc");
    let reader = S3Sink::new(&cfg).expect("sink");
    let server = Mutex::new(server);
    conformance::run_conformance(
        || S3Sink::new(&cfg).expect("sink"),
        || read_blocking(&reader),
        Some(&Down(&server)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_url_with_gzip_passes_conformance() {
    let dir = conformance::temp_dir("spillway-s3-file");
    let mut cfg = S3SinkConfig::new(format!("file://{}/out", dir.display()));
    cfg.gzip = true;
    let reader = S3Sink::new(&cfg).expect("sink");
    conformance::run_conformance(
        || S3Sink::new(&cfg).expect("sink"),
        || read_blocking(&reader),
        None,
    )
    .await;
    // No temporary files are left next to the objects.
    let mut stack = vec![dir.join("out")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                assert!(
                    p.to_string_lossy().ends_with(".jsonl.gz"),
                    "stray file {}",
                    p.display()
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn record(lsn: u64, entity: &str) -> SinkRecord {
    SinkRecord {
        lsn,
        id: format!("0/{lsn:X}:1"),
        entity: Some(entity.to_owned()),
        key: None,
        value: format!(r#"{{"lsn":{lsn},"entity":"{entity}"}}"#).into_bytes(),
        timestamp_us: 1_763_683_200_000_000,
    }
}

/// Records 1..=n, even lsns in commerce.users, odd ones in commerce.products.
fn alternating(n: u64) -> Vec<SinkRecord> {
    (1..=n)
        .map(|l| record(l, ["commerce.users", "commerce.products"][(l % 2) as usize]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_longer_replay_keeps_the_object_names() {
    let server = S3Server::start("lake").expect("s3s-fs");
    let cfg = config(&server, "s3://lake/p");
    let mut sink = S3Sink::new(&cfg).expect("sink");
    let a = alternating(6);
    sink.deliver(&a).await.expect("first");
    let before: Vec<String> = sink
        .read_all()
        .await
        .expect("read")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        before,
        [
            "commerce/products/date=2025-11-21/00000000000000000001-00000000000000000005.jsonl",
            "commerce/users/date=2025-11-21/00000000000000000002-00000000000000000006.jsonl",
        ]
    );
    // A restart replays from lsn 1 with more records in the batch (the
    // original batch had been cut by age): same names for what was
    // written, new objects only for the rest.
    let mut again = S3Sink::new(&cfg).expect("sink");
    let b = alternating(9);
    again.deliver(&b).await.expect("replay");
    let objects = again.read_all().await.expect("read");
    let names: Vec<&str> = objects.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "commerce/products/date=2025-11-21/00000000000000000001-00000000000000000005.jsonl",
            "commerce/products/date=2025-11-21/00000000000000000007-00000000000000000009.jsonl",
            "commerce/users/date=2025-11-21/00000000000000000002-00000000000000000006.jsonl",
            "commerce/users/date=2025-11-21/00000000000000000008-00000000000000000008.jsonl",
        ]
    );
    let lsns: Vec<u64> = events(&again)
        .await
        .iter()
        .filter_map(|e| e["lsn"].as_u64())
        .collect();
    assert_eq!(lsns.len(), 9, "no event twice: {lsns:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_fatal_and_a_stopped_server_is_retried() {
    let mut server = S3Server::start("lake").expect("s3s-fs");
    let mut bad = config(&server, "s3://lake/p");
    bad.secret_access_key = Some("wrong".into());
    let mut sink = S3Sink::new(&bad).expect("sink");
    let err = sink
        .deliver(&[record(1, "a.b")])
        .await
        .expect_err("refused");
    assert!(matches!(err, SinkError::Fatal(_)), "{err:?}");

    server.service.stop();
    let mut t = TestLog::new();
    t.append_changes(6).await;
    let cfg = config(&server, "s3://lake/p");
    let mut settings = conformance::test_settings("s3");
    cfg.apply(&mut settings);
    settings.batch_timeout = std::time::Duration::from_millis(10);
    let run = Running::start(&t.log, settings, S3Sink::new(&cfg).expect("sink"));
    wait_until("retrying", || {
        run.status.retrying() && run.status.errors() >= 2
    })
    .await;
    assert_eq!(t.checkpoint("s3"), 0);
    server.service.start_again().expect("restart");
    let committed = t.log.committed_lsn();
    wait_until("delivered", || run.status.checkpoint_lsn() == committed).await;
    run.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_the_aws_environment_variables() {
    let server = S3Server::start("lake").expect("s3s-fs");
    // nextest runs each test in its own process: the variables stay here.
    std::env::set_var("AWS_ACCESS_KEY_ID", &server.access_key);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", &server.secret_key);
    std::env::set_var("AWS_REGION", "eu-west-1");
    let mut cfg = S3SinkConfig::new("s3://lake/env");
    cfg.endpoint = Some(server.endpoint());
    let mut sink = S3Sink::new(&cfg).expect("sink");
    sink.deliver(&[record(1, "a.b")])
        .await
        .expect("signed with the environment's keys");
    let objects = sink.read_all().await.expect("read");
    assert_eq!(objects.len(), 1);
    assert!(objects[0].0.starts_with("a/b/date="), "{}", objects[0].0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shorter_replay_stores_nothing_twice() {
    let server = S3Server::start("lake").expect("s3s-fs");
    let cfg = config(&server, "s3://lake/p");
    let mut sink = S3Sink::new(&cfg).expect("sink");
    sink.deliver(&alternating(9)).await.expect("first");
    // Restarted: the replayed batches are cut differently (shorter first).
    let mut again = S3Sink::new(&cfg).expect("sink");
    again.deliver(&alternating(4)).await.expect("replay 1..4");
    let twelve = alternating(12);
    again.deliver(&twelve[4..]).await.expect("5..12");
    let names: Vec<String> = again
        .read_all()
        .await
        .expect("read")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        [
            "commerce/products/date=2025-11-21/00000000000000000001-00000000000000000009.jsonl",
            "commerce/products/date=2025-11-21/00000000000000000011-00000000000000000011.jsonl",
            "commerce/users/date=2025-11-21/00000000000000000002-00000000000000000008.jsonl",
            "commerce/users/date=2025-11-21/00000000000000000010-00000000000000000012.jsonl",
        ]
    );
    let mut lsns: Vec<u64> = events(&again)
        .await
        .iter()
        .filter_map(|e| e["lsn"].as_u64())
        .collect();
    lsns.sort_unstable();
    assert_eq!(lsns, (1..=12).collect::<Vec<_>>(), "every event once");
}
