//! The sink part of `make bench`: end-to-end events/s from PostgreSQL into
//! NATS JetStream and into Kafka (`spillway run` with one sink, from a slot
//! that holds the whole workload, timed until the sink's checkpoint — i.e.
//! the broker's acknowledgement — reaches the end of the log), next to the
//! rate of a plain producer writing the same number of same-sized messages
//! into the same broker with the broker's client library (async-nats with a
//! window of 1024 unacknowledged publishes; librdkafka with the sink's
//! producer settings) in the same run.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use spillway_testkit::services::{NatsServer, Tansu};

/// A payload of about the size of the workload's native events.
fn payload(i: u64) -> Vec<u8> {
    format!(
        r#"{{"type":"change","id":"0/{i:X}:1","lsn":{i},"entity":"public.holding","operation":"insert","new_data":{{"holding_id":{i},"user_id":{},"holding_stock":"VFIAX","holding_quantity":{},"datetime_created":"2026-11-22T04:00:00.000000Z","datetime_updated":"2026-11-22T04:00:00.000000Z"}},"old_data":null,"entity_id":{{"holding_id":{i}}},"timestamp":1795321960691206,"tx":{{"xid":750,"commit_lsn":"0/1929540","index":{i}}},"source":{{"db":"bench","pg_lsn":"0/1929540"}}}}"#,
        i % 1000,
        i % 100
    )
    .into_bytes()
}

/// The reference: the NATS client publishing `n` messages into a stream.
pub(crate) async fn nats_reference(url: &str, n: u64) -> Result<f64, String> {
    let client = async_nats::connect(url).await.map_err(|e| e.to_string())?;
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "reference".into(),
        subjects: vec!["reference".into()],
        ..Default::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    let t = Instant::now();
    let mut window = std::collections::VecDeque::new();
    for i in 0..n {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("0/{i:X}:1").as_str(),
        );
        let ack = js
            .publish_with_headers("reference", headers, payload(i).into())
            .await
            .map_err(|e| e.to_string())?;
        window.push_back(ack);
        if window.len() >= 1024 {
            if let Some(a) = window.pop_front() {
                a.await.map_err(|e| e.to_string())?;
            }
        }
    }
    for a in window {
        a.await.map_err(|e| e.to_string())?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// The reference: librdkafka producing `n` keyed records (the sink's
/// producer settings) and waiting for every delivery report.
pub(crate) async fn kafka_reference(bootstrap: &str, n: u64) -> Result<f64, String> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let cfg = spillway_sink_kafka::KafkaSinkConfig::new(bootstrap);
    let producer: FutureProducer = spillway_sink_kafka::producer_config(&cfg)
        .map_err(|e| e.to_string())?
        .create()
        .map_err(|e| e.to_string())?;
    // Create the topic through the sink's path (one record), then time.
    let mut sink = spillway_sink_kafka::KafkaSink::new(&cfg, "reference", "bench")
        .map_err(|e| e.to_string())?;
    use spillway_sinks::Sink;
    sink.deliver(&[spillway_sinks::SinkRecord {
        lsn: 0,
        id: "warmup".into(),
        entity: Some("public.holding".into()),
        key: None,
        value: payload(0),
        timestamp_us: 0,
    }])
    .await
    .map_err(|e| e.to_string())?;
    let topic = "reference.public.holding";
    let t = Instant::now();
    let mut pending = Vec::with_capacity(n as usize);
    for i in 0..n {
        let key = format!(r#"{{"holding_id":{i}}}"#);
        let value = payload(i);
        let mut record = FutureRecord::to(topic).key(&key).payload(&value);
        loop {
            match producer.send_result(record) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err((_, r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
    for f in pending {
        match f.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(e.to_string()),
            Err(_) => return Err("delivery report dropped".into()),
        }
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// `spillway run` with one sink from `slot`; seconds until the sink's
/// checkpoint reaches `events` (every captured event acknowledged).
pub(crate) async fn spillway_into(
    spillway: &Path,
    dir: &Path,
    dsn: &str,
    slot: &str,
    sink_toml: &str,
    events: u64,
) -> Result<f64, String> {
    let log_dir = dir.join(format!("log-{slot}"));
    let cfg = dir.join(format!("spillway-{slot}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[source]\ndsn = \"{dsn}\"\nslot = \"{slot}\"\npublication = \"spillway\"\n[log]\ndir = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\n\n{sink_toml}",
            log_dir.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let t = Instant::now();
    let mut child = Command::new(spillway)
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(cfg.with_extension("log")).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", spillway.display()))?;
    let client = reqwest::Client::new();
    let mut addr: Option<String> = None;
    let result = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!("spillway exited early: {status}"));
        }
        if t.elapsed() > Duration::from_secs(600) {
            break Err("the sink did not catch up within 600 s".into());
        }
        if addr.is_none() {
            addr = crate::api_addr(&log_dir, &cfg).ok();
        }
        if let Some(a) = &addr {
            let status: Option<serde_json::Value> =
                match client.get(format!("http://{a}/v1/status")).send().await {
                    Ok(r) => r
                        .bytes()
                        .await
                        .ok()
                        .and_then(|b| serde_json::from_slice(&b).ok()),
                    Err(_) => None,
                };
            let checkpoint = status
                .as_ref()
                .and_then(|s| s["sinks"][0]["checkpoint"].as_u64())
                .unwrap_or(0);
            if checkpoint >= events {
                break Ok(t.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    spillway_testkit::send_signal(child.id(), "TERM");
    let _ = child.wait();
    result
}

/// Runs both sinks and both references; prints the rates.
pub(crate) async fn bench_sinks(
    spillway: &Path,
    dir: &Path,
    dsn: &str,
    changes: u64,
    events: u64,
) -> Result<(), String> {
    let nats = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .map_err(|e| e.to_string())??;
    let nats_ref = nats_reference(&nats.url(), changes).await?;
    let sink = format!(
        "[[sinks]]\nname = \"bus\"\ntype = \"nats\"\nurl = \"{}\"\nbatch_size = 5000\n",
        nats.url()
    );
    let secs = spillway_into(spillway, dir, dsn, "sink_nats", &sink, events).await?;
    let nats_rate = changes as f64 / secs;
    println!(
        "nats: spillway PostgreSQL -> JetStream {nats_rate:>9.0} events/s ({secs:.2}s end to end) | async-nats publishing alone {nats_ref:>9.0} msgs/s | ratio {:.2}",
        nats_rate / nats_ref
    );
    drop(nats);

    let kafka = tokio::task::spawn_blocking(Tansu::start)
        .await
        .map_err(|e| e.to_string())??;
    let kafka_ref = kafka_reference(&kafka.bootstrap, changes).await?;
    let sink = format!(
        "[[sinks]]\nname = \"kafka\"\ntype = \"kafka\"\nbrokers = \"{}\"\nbatch_size = 10000\n",
        kafka.bootstrap
    );
    let secs = spillway_into(spillway, dir, dsn, "sink_kafka", &sink, events).await?;
    let kafka_rate = changes as f64 / secs;
    println!(
        "kafka: spillway PostgreSQL -> tansu {kafka_rate:>9.0} events/s ({secs:.2}s end to end) | librdkafka producing alone {kafka_ref:>9.0} msgs/s | ratio {:.2}",
        kafka_rate / kafka_ref
    );
    Ok(())
}
