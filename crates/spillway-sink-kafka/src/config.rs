//! Configuration of the `kafka` sink.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use spillway_sinks::SinkError;

/// `[[sinks]] type = "kafka"` settings (the common settings — name, tables,
/// operations, format, prefix, batching — are in
/// [`SinkSettings`](spillway_sinks::SinkSettings)).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Topic template for table events (`{prefix}`, `{db}`, `{schema}`,
    /// `{table}`). Default `{prefix}.{schema}.{table}`.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Topic for events of no table. Default `{prefix}.control`.
    #[serde(default = "default_control_topic")]
    pub control_topic: String,
    /// Per-table topics: `{"trades": "transactions"}`; keys are table names
    /// or `schema.table`, values topic templates.
    #[serde(default)]
    pub topic_mapping: BTreeMap<String, String>,
    /// Create missing topics before their first record. Default true.
    #[serde(default = "default_true")]
    pub create_topics: bool,
    /// Partitions of topics this sink creates. Default 1.
    #[serde(default = "default_one")]
    pub partitions: i32,
    /// Replication factor of topics this sink creates. Default 1.
    #[serde(default = "default_one")]
    pub replication_factor: i32,
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd`. Default `lz4`.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// How long librdkafka may try to deliver a record before the batch
    /// counts as failed (and is retried by the runtime). Default 30000 ms.
    #[serde(default = "default_delivery_timeout")]
    pub delivery_timeout_ms: u64,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`. Default
    /// `plaintext`.
    #[serde(default = "default_protocol")]
    pub security_protocol: String,
    /// PKCS#12 file with the client certificate and key.
    #[serde(default)]
    pub ssl_keystore_location: Option<PathBuf>,
    /// Password of the keystore.
    #[serde(default)]
    pub ssl_keystore_password: Option<String>,
    /// PKCS#12 file with the CA certificate(s) to trust.
    #[serde(default)]
    pub ssl_truststore_location: Option<PathBuf>,
    /// Password of the truststore.
    #[serde(default)]
    pub ssl_truststore_password: Option<String>,
    /// PEM file with the CA certificate(s) to trust.
    #[serde(default)]
    pub ssl_ca_location: Option<PathBuf>,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    #[serde(default)]
    pub sasl_mechanism: Option<String>,
    /// SASL user.
    #[serde(default)]
    pub sasl_username: Option<String>,
    /// SASL password.
    #[serde(default)]
    pub sasl_password: Option<String>,
    /// Any librdkafka producer property (`linger.ms`, `batch.size`, …);
    /// values may be strings, numbers or booleans.
    #[serde(default, deserialize_with = "scalar_map")]
    pub options: BTreeMap<String, String>,
}

/// A map whose values are strings, numbers or booleans, kept as text.
fn scalar_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        I(i64),
        F(f64),
        B(bool),
    }
    let raw: BTreeMap<String, Scalar> = BTreeMap::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Scalar::S(s) => s,
                Scalar::I(i) => i.to_string(),
                Scalar::F(f) => f.to_string(),
                Scalar::B(b) => b.to_string(),
            };
            (k, v)
        })
        .collect())
}

fn default_topic() -> String {
    "{prefix}.{schema}.{table}".into()
}
fn default_control_topic() -> String {
    "{prefix}.control".into()
}
fn default_true() -> bool {
    true
}
fn default_one() -> i32 {
    1
}
fn default_compression() -> String {
    "lz4".into()
}
fn default_delivery_timeout() -> u64 {
    30_000
}
fn default_protocol() -> String {
    "plaintext".into()
}

/// Option names whose values are secrets (hidden in Debug).
fn secret_option(name: &str) -> bool {
    name.contains("password") || name.contains("secret") || name.ends_with(".pem")
}

impl std::fmt::Debug for KafkaSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |o: &Option<String>| o.as_ref().map(|_| "<hidden>");
        let options: BTreeMap<&str, &str> = self
            .options
            .iter()
            .map(|(k, v)| {
                let v = if secret_option(k) {
                    "<hidden>"
                } else {
                    v.as_str()
                };
                (k.as_str(), v)
            })
            .collect();
        f.debug_struct("KafkaSinkConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("control_topic", &self.control_topic)
            .field("topic_mapping", &self.topic_mapping)
            .field("create_topics", &self.create_topics)
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("compression", &self.compression)
            .field("delivery_timeout_ms", &self.delivery_timeout_ms)
            .field("security_protocol", &self.security_protocol)
            .field("ssl_keystore_location", &self.ssl_keystore_location)
            .field(
                "ssl_keystore_password",
                &hidden(&self.ssl_keystore_password),
            )
            .field("ssl_truststore_location", &self.ssl_truststore_location)
            .field(
                "ssl_truststore_password",
                &hidden(&self.ssl_truststore_password),
            )
            .field("ssl_ca_location", &self.ssl_ca_location)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .field("sasl_password", &hidden(&self.sasl_password))
            .field("options", &options)
            .finish()
    }
}

impl KafkaSinkConfig {
    /// Defaults for the given bootstrap brokers.
    pub fn new(brokers: impl Into<String>) -> KafkaSinkConfig {
        KafkaSinkConfig {
            brokers: brokers.into(),
            topic: default_topic(),
            control_topic: default_control_topic(),
            topic_mapping: BTreeMap::new(),
            create_topics: true,
            partitions: 1,
            replication_factor: 1,
            compression: default_compression(),
            delivery_timeout_ms: default_delivery_timeout(),
            security_protocol: default_protocol(),
            ssl_keystore_location: None,
            ssl_keystore_password: None,
            ssl_truststore_location: None,
            ssl_truststore_password: None,
            ssl_ca_location: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            options: BTreeMap::new(),
        }
    }

    /// Checks what can be checked without a broker; one-line errors.
    pub fn validate(&self) -> Result<(), SinkError> {
        let fatal = |m: String| Err(SinkError::Fatal(format!("kafka sink: {m}")));
        let brokers: Vec<&str> = self.brokers.split(',').map(str::trim).collect();
        if brokers.iter().any(|b| {
            b.is_empty()
                || b.contains("://")
                || !b
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        }) {
            return fatal(format!(
                "brokers = `{}` is not a host:port list; write e.g. \"127.0.0.1:9092,other:9092\"",
                self.brokers
            ));
        }
        if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&self.compression.as_str()) {
            return fatal(format!(
                "compression = `{}` is unknown; use none, gzip, snappy, lz4 or zstd",
                self.compression
            ));
        }
        if !(1..=100_000).contains(&self.partitions) || !(1..=32).contains(&self.replication_factor)
        {
            return fatal("partitions must be 1-100000 and replication_factor 1-32".into());
        }
        if self.delivery_timeout_ms < 100 {
            return fatal("delivery_timeout_ms must be at least 100".into());
        }
        let protocol = self.security_protocol.to_ascii_lowercase();
        if !["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"].contains(&protocol.as_str()) {
            return fatal(format!(
                "security_protocol = `{}` is unknown; use plaintext, ssl, sasl_plaintext or sasl_ssl",
                self.security_protocol
            ));
        }
        let tls_set = self.ssl_keystore_location.is_some()
            || self.ssl_truststore_location.is_some()
            || self.ssl_ca_location.is_some();
        if tls_set && !protocol.ends_with("ssl") {
            return fatal(
                "TLS files are set but security_protocol is not ssl or sasl_ssl; set security_protocol = \"ssl\""
                    .into(),
            );
        }
        if self.ssl_truststore_location.is_some() && self.ssl_ca_location.is_some() {
            return fatal("set ssl_truststore_location or ssl_ca_location, not both".into());
        }
        let sasl = protocol.starts_with("sasl");
        if sasl != self.sasl_mechanism.is_some() {
            return fatal(
                "sasl_mechanism goes with security_protocol sasl_plaintext or sasl_ssl (set both or neither)"
                    .into(),
            );
        }
        if let Some(m) = &self.sasl_mechanism {
            if !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&m.as_str()) {
                return fatal(format!(
                    "sasl_mechanism = `{m}` is unknown; use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
                ));
            }
            if self.sasl_username.is_none() || self.sasl_password.is_none() {
                return fatal("SASL needs sasl_username and sasl_password".into());
            }
        }
        for path in [
            &self.ssl_keystore_location,
            &self.ssl_truststore_location,
            &self.ssl_ca_location,
        ]
        .into_iter()
        .flatten()
        {
            if !path.is_file() {
                return fatal(format!(
                    "{} does not exist or is not a file",
                    path.display()
                ));
            }
        }
        if let Some(k) = self
            .options
            .keys()
            .find(|k| k.as_str() == "enable.idempotence")
        {
            return fatal(format!(
                "options.{k} cannot be changed: the sink relies on the idempotent producer"
            ));
        }
        Ok(())
    }
}
