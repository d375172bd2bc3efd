//! Reading back what the sink wrote: every record of some topics, from the
//! beginning (tests, the benchmark, and checks by hand).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use spillway_sinks::SinkError;

use crate::config::KafkaSinkConfig;
use crate::sink::client_config;

/// How long the brokers must have had nothing more after the high
/// watermarks were reached.
const QUIET: Duration = Duration::from_millis(400);

/// One record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaMessage {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub value: Vec<u8>,
    /// The `spillway-id` header.
    pub id: Option<String>,
}

/// Reads every record of every topic whose name passes `select`, from the
/// first offset to the high watermark at the time of the call (and until
/// the brokers have had nothing more for 400 ms), with the
/// connection and security settings of `config`. Records are returned
/// topic by topic, partition by partition, in offset order. Blocking.
pub fn read_topics(
    config: &KafkaSinkConfig,
    select: impl Fn(&str) -> bool,
    timeout: Duration,
) -> Result<Vec<KafkaMessage>, SinkError> {
    let err = |what: &str, e: rdkafka::error::KafkaError| {
        SinkError::Transient(format!("reading back: {what}: {e}"))
    };
    let consumer: BaseConsumer = client_config(config)?
        .set("group.id", "spillway-read-back")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|e| err("consumer", e))?;
    let metadata = consumer
        .fetch_metadata(None, timeout)
        .map_err(|e| err("metadata", e))?;
    let mut tpl = TopicPartitionList::new();
    let mut ends: HashMap<(String, i32), i64> = HashMap::new();
    let mut topics: Vec<&str> = metadata
        .topics()
        .iter()
        .map(|t| t.name())
        .filter(|n| !n.starts_with("__") && select(n))
        .collect();
    topics.sort_unstable();
    for topic in &topics {
        let Some(t) = metadata.topics().iter().find(|t| t.name() == *topic) else {
            continue;
        };
        for p in t.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), timeout)
                .map_err(|e| err("watermarks", e))?;
            if high > low {
                tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))
                    .map_err(|e| err("assign", e))?;
                ends.insert((topic.to_string(), p.id()), high);
            }
        }
    }
    let mut out: Vec<KafkaMessage> = Vec::new();
    if ends.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl).map_err(|e| err("assign", e))?;
    let deadline = Instant::now() + timeout;
    // Read to the high watermarks, then on until the brokers have nothing
    // more for a moment: some brokers (tansu 0.6) report a high watermark
    // that lags behind the last record of a multi-record batch.
    let mut last_record = Instant::now();
    loop {
        if Instant::now() > deadline {
            return Err(SinkError::Transient(format!(
                "reading back: {} partitions not read to their end within {timeout:?}",
                ends.len()
            )));
        }
        let Some(m) = consumer.poll(Duration::from_millis(50)) else {
            if ends.is_empty() && last_record.elapsed() >= QUIET {
                break;
            }
            continue;
        };
        last_record = Instant::now();
        let m = m.map_err(|e| err("poll", e))?;
        let id = m.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == "spillway-id")
                .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
        });
        let key = (m.topic().to_owned(), m.partition());
        if ends.get(&key).is_some_and(|&end| m.offset() + 1 >= end) {
            ends.remove(&key);
        }
        out.push(KafkaMessage {
            topic: key.0,
            partition: key.1,
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            id,
        });
    }
    out.sort_by(|a, b| (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset)));
    Ok(out)
}
