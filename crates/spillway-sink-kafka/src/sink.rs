//! The `kafka` sink's [`Sink`] implementation (behaviour in the crate docs).

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use spillway_sinks::route::Router;
use spillway_sinks::{Sink, SinkError, SinkRecord};

use crate::config::KafkaSinkConfig;

/// Kafka topic names allow `[a-zA-Z0-9._-]`.
fn topic_char(c: char) -> char {
    if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
        c
    } else {
        '_'
    }
}

fn fatal(m: impl std::fmt::Display) -> SinkError {
    SinkError::Fatal(format!("kafka sink: {m}"))
}

/// The connection and security properties of `config` (bootstrap servers,
/// TLS, SASL), shared by the producer and the admin client — and by anyone
/// who wants to read what the sink wrote with the same settings.
pub fn client_config(config: &KafkaSinkConfig) -> Result<ClientConfig, SinkError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", config.brokers.replace(' ', ""));
    c.set("client.id", "spillway");
    c.set(
        "security.protocol",
        config.security_protocol.to_ascii_lowercase(),
    );
    if let Some(p) = &config.ssl_keystore_location {
        c.set("ssl.keystore.location", p.display().to_string());
    }
    if let Some(p) = &config.ssl_keystore_password {
        c.set("ssl.keystore.password", p);
    }
    if let Some(p) = &config.ssl_ca_location {
        c.set("ssl.ca.location", p.display().to_string());
    }
    if let Some(path) = &config.ssl_truststore_location {
        c.set(
            "ssl.ca.pem",
            truststore_pem(path, config.ssl_truststore_password.as_deref())?,
        );
    }
    if let Some(m) = &config.sasl_mechanism {
        c.set("sasl.mechanisms", m);
    }
    if let Some(u) = &config.sasl_username {
        c.set("sasl.username", u);
    }
    if let Some(p) = &config.sasl_password {
        c.set("sasl.password", p);
    }
    Ok(c)
}

/// The producer properties: [`client_config`] plus the idempotent producer,
/// compression, the delivery timeout, then the pass-through `options`.
pub fn producer_config(config: &KafkaSinkConfig) -> Result<ClientConfig, SinkError> {
    let mut c = client_config(config)?;
    c.set("acks", "all");
    c.set("compression.type", &config.compression);
    c.set("message.timeout.ms", config.delivery_timeout_ms.to_string());
    c.set("linger.ms", "5");
    for (k, v) in &config.options {
        c.set(k, v);
    }
    c.set("enable.idempotence", "true");
    Ok(c)
}

/// The CA certificates of a PKCS#12 truststore as PEM (librdkafka reads
/// only PEM CAs).
fn truststore_pem(path: &std::path::Path, password: Option<&str>) -> Result<String, SinkError> {
    let der = std::fs::read(path).map_err(|e| {
        fatal(format!(
            "cannot read ssl_truststore_location {}: {e}",
            path.display()
        ))
    })?;
    let p12 = openssl::pkcs12::Pkcs12::from_der(&der).map_err(|_| {
        fatal(format!(
            "ssl_truststore_location {} is not a PKCS#12 file",
            path.display()
        ))
    })?;
    let parsed = p12.parse2(password.unwrap_or("")).map_err(|_| {
        fatal(format!(
            "cannot open the PKCS#12 truststore {}: wrong ssl_truststore_password, or a legacy (RC2) file; re-export it with a current openssl",
            path.display()
        ))
    })?;
    let mut pem = String::new();
    let certs = parsed
        .cert
        .into_iter()
        .chain(parsed.ca.into_iter().flatten());
    for cert in certs {
        let bytes = cert
            .to_pem()
            .map_err(|e| fatal(format!("truststore certificate: {e}")))?;
        pem.push_str(&String::from_utf8_lossy(&bytes));
    }
    if pem.is_empty() {
        return Err(fatal(format!(
            "the truststore {} holds no certificate",
            path.display()
        )));
    }
    Ok(pem)
}

/// Errors by consequence.
fn classify(what: &str, e: &KafkaError) -> SinkError {
    use RDKafkaErrorCode as C;
    match e.rdkafka_error_code() {
        Some(
            C::MessageSizeTooLarge
            | C::InvalidTopic
            | C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::SaslAuthenticationFailed
            | C::Authentication
            | C::InvalidRecord
            | C::InvalidRequiredAcks,
        ) => fatal(format!("{what}: {e}")),
        _ => SinkError::Transient(format!("kafka sink: {what}: {e}")),
    }
}

/// The `kafka` sink.
pub struct KafkaSink {
    config: KafkaSinkConfig,
    router: Router,
    producer: Option<FutureProducer>,
    admin: Option<AdminClient<DefaultClientContext>>,
    /// Topics created (or found) by this instance.
    ready: HashSet<String>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    /// Validates `config` (and its librdkafka properties, by building the
    /// producer); `prefix` and `db` fill `{prefix}` and `{db}` in the topic
    /// templates. No broker is contacted yet.
    pub fn new(config: &KafkaSinkConfig, prefix: &str, db: &str) -> Result<KafkaSink, SinkError> {
        config.validate()?;
        let router = Router::new(
            "topic",
            &config.topic,
            &config.control_topic,
            &config.topic_mapping,
            prefix,
            db,
            topic_char,
        )
        .map_err(fatal)?;
        let mut sink = KafkaSink {
            config: config.clone(),
            router,
            producer: None,
            admin: None,
            ready: HashSet::new(),
        };
        sink.producer = Some(sink.build_producer()?);
        Ok(sink)
    }

    /// The topic a record about `entity` goes to.
    pub fn topic_for(&mut self, entity: Option<&str>) -> String {
        self.router.route(entity).to_owned()
    }

    fn build_producer(&self) -> Result<FutureProducer, SinkError> {
        producer_config(&self.config)?.create().map_err(|e| {
            fatal(format!(
                "invalid producer settings: {e}; check [sinks.options]"
            ))
        })
    }

    async fn ensure_topics(&mut self, topics: &[String]) -> Result<(), SinkError> {
        let missing: Vec<&String> = topics.iter().filter(|t| !self.ready.contains(*t)).collect();
        if missing.is_empty() || !self.config.create_topics {
            return Ok(());
        }
        if self.admin.is_none() {
            let admin = client_config(&self.config)?
                .create()
                .map_err(|e| fatal(format!("invalid client settings: {e}")))?;
            self.admin = Some(admin);
        }
        let Some(admin) = self.admin.as_ref() else {
            return Ok(());
        };
        let rf = self.config.replication_factor;
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|t| NewTopic::new(t, self.config.partitions, TopicReplication::Fixed(rf)))
            .collect();
        let timeout = Duration::from_millis(self.config.delivery_timeout_ms.min(30_000));
        let opts = AdminOptions::new()
            .request_timeout(Some(timeout))
            .operation_timeout(Some(timeout));
        let results = admin
            .create_topics(&new, &opts)
            .await
            .map_err(|e| classify("creating topics", &e))?;
        let mut created = Vec::new();
        for r in results {
            match r {
                Ok(name) => created.push(name),
                Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => created.push(name),
                Err((
                    name,
                    code @ (RDKafkaErrorCode::InvalidTopic
                    | RDKafkaErrorCode::InvalidPartitions
                    | RDKafkaErrorCode::InvalidReplicationFactor
                    | RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::ClusterAuthorizationFailed
                    | RDKafkaErrorCode::PolicyViolation),
                )) => {
                    return Err(fatal(format!(
                        "the broker refused to create topic `{name}`: {code}; create it yourself and set create_topics = false, or fix partitions/replication_factor"
                    )))
                }
                Err((name, code)) => {
                    return Err(SinkError::Transient(format!(
                        "kafka sink: creating topic `{name}`: {code}"
                    )))
                }
            }
        }
        for name in created {
            tracing::debug!(topic = %name, "kafka topic ready");
            self.ready.insert(name);
        }
        Ok(())
    }

    async fn produce(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
        let topics: Vec<String> = batch
            .iter()
            .map(|r| self.router.route(r.entity.as_deref()).to_owned())
            .collect();
        let mut distinct = topics.clone();
        distinct.sort();
        distinct.dedup();
        self.ensure_topics(&distinct).await?;
        if self.producer.is_none() {
            self.producer = Some(self.build_producer()?);
        }
        let Some(producer) = self.producer.as_ref() else {
            return Err(fatal("no producer"));
        };

        let mut pending: VecDeque<DeliveryFuture> = VecDeque::with_capacity(batch.len());
        let mut first_error: Option<SinkError> = None;
        for (rec, topic) in batch.iter().zip(&topics) {
            let lsn = rec.lsn.to_string();
            let headers = OwnedHeaders::new_with_capacity(2)
                .insert(Header {
                    key: "spillway-id",
                    value: Some(rec.id.as_bytes()),
                })
                .insert(Header {
                    key: "spillway-lsn",
                    value: Some(lsn.as_bytes()),
                });
            let mut record = FutureRecord::to(topic)
                .payload(&rec.value)
                .headers(headers)
                .timestamp(rec.timestamp_us.div_euclid(1000));
            if let Some(key) = &rec.key {
                record = record.key(key);
            }
            loop {
                match producer.send_result(record) {
                    Ok(f) => {
                        pending.push_back(f);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        // librdkafka's queue is full: wait for the oldest report.
                        record = r;
                        match pending.pop_front() {
                            Some(f) => {
                                if let Err(e) = report(f.await) {
                                    first_error.get_or_insert(e);
                                }
                            }
                            None => tokio::time::sleep(Duration::from_millis(5)).await,
                        }
                    }
                    Err((e, _)) => {
                        let err = classify("producing", &e);
                        self.drop_if_dead();
                        return Err(err);
                    }
                }
            }
        }
        while let Some(f) = pending.pop_front() {
            if let Err(e) = report(f.await) {
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            self.drop_if_dead();
            return Err(e);
        }
        Ok(())
    }

    /// After a fatal librdkafka error the producer is unusable: drop it, so
    /// the next attempt builds a new one.
    fn drop_if_dead(&mut self) {
        let dead = self
            .producer
            .as_ref()
            .and_then(|p| p.client().fatal_error());
        if let Some((code, reason)) = dead {
            tracing::warn!(%code, %reason, "the kafka producer hit a fatal error; rebuilding it");
            self.producer = None;
        }
    }
}

/// A delivery report as a result.
fn report<E>(
    r: Result<rdkafka::producer::future_producer::OwnedDeliveryResult, E>,
) -> Result<(), SinkError> {
    match r {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(classify("delivery", &e)),
        Err(_) => Err(SinkError::Transient(
            "kafka sink: the producer dropped a delivery report".into(),
        )),
    }
}

impl Sink for KafkaSink {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    async fn deliver(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
        self.produce(batch).await
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        if let Some(p) = self.producer.take() {
            let flushed = tokio::task::spawn_blocking(move || p.flush(Duration::from_secs(10)))
                .await
                .map_err(|e| SinkError::Transient(format!("kafka sink: close: {e}")))?;
            flushed.map_err(|e| classify("flushing on close", &e))?;
        }
        Ok(())
    }
}
