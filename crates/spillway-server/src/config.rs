//! Configuration: one TOML file, every key overridable by environment variables.
//!
//! Two stages, as everywhere in Spillway: the raw file (serde, unknown keys rejected) is
//! merged with the environment, then validated into [`Config`] before anything connects.
//!
//! Environment variables: `SPILLWAY_<SECTION>_<KEY>` in upper case, e.g.
//! `SPILLWAY_SOURCE_DSN`, `SPILLWAY_LOG_SEGMENT_BYTES`, `SPILLWAY_API_LISTEN`. The names of
//! reference 001 work too: `DB_DSN`, `SLOT_NAME`, `PUBLICATION_NAME`, `TABLE_FILTER`
//! (JSON `{"trades":["insert","update"]}` or a comma list), `OUTPUT_PLUGIN` (must be
//! `pgoutput`). A `SPILLWAY_` variable will override its reference-001 alias.
//! `NATS_PUB_URI` (with `TOPIC_MAPPING`, `TOPIC_PREFIX`) adds reference 001's NATS sink,
//! so `DB_DSN` + `NATS_PUB_URI` is a whole PostgreSQL → NATS pipeline without a file.

use serde::Deserialize;
use spillway_core::pattern::TablePattern;
use spillway_core::Operation;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A configuration problem: one line, naming the key and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// A DSN that never shows its password in `Debug` or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Dsn(pub String);

impl fmt::Debug for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&spillway_postgres::dsn::redact(&self.0))
    }
}

/// A secret (token) that never shows in `Debug` or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    source: RawSource,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    api: RawApi,
    /// `[[sinks]]`: checked separately (common keys + the keys of each sink type).
    #[serde(default)]
    sinks: Vec<toml::Table>,
}

/// Sink types known so far.
const SINK_TYPES: &[&str] = &["file", "webhook", "nats", "kafka", "s3"];

/// One `[[sinks]]` entry, validated.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Common settings (name = its checkpoint name, filters, format, batching).
    pub settings: spillway_sinks::SinkSettings,
    /// The type and its own settings.
    pub kind: SinkKind,
}

/// The destination of a sink.
#[derive(Debug, Clone)]
pub enum SinkKind {
    /// JSON lines to a file or stdout.
    File(spillway_sinks::file::FileSinkConfig),
    /// Batched HTTP POST of JSON arrays.
    Webhook(spillway_sinks::webhook::WebhookSinkConfig),
    /// NATS JetStream.
    Nats(Box<spillway_sink_nats::NatsSinkConfig>),
    /// Kafka topics.
    Kafka(Box<spillway_sink_kafka::KafkaSinkConfig>),
    /// JSON-lines objects in S3-compatible storage (or a directory).
    S3(Box<spillway_sink_s3::S3SinkConfig>),
}

impl SinkKind {
    /// The `type` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkKind::File(_) => "file",
            SinkKind::Webhook(_) => "webhook",
            SinkKind::Nats(_) => "nats",
            SinkKind::Kafka(_) => "kafka",
            SinkKind::S3(_) => "s3",
        }
    }
}

/// Deserializes `value`, naming the offending key path under `prefix` in errors
/// (`sinks[0].url: invalid type …`).
fn deserialize_at<T: serde::de::DeserializeOwned>(
    value: toml::Value,
    prefix: &str,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let msg = one_line(e.inner().message());
        match path.as_str() {
            "" | "." => err(format!("{}: {msg}", prefix.trim_end_matches(':'))),
            p if prefix.ends_with(':') => err(format!("{prefix} {p}: {msg}")),
            p => err(format!("{prefix}.{p}: {msg}")),
        }
    })
}

fn validate_sink(i: usize, mut t: toml::Table) -> Result<SinkConfig, ConfigError> {
    let at = |key: &str| format!("sinks[{i}].{key}");
    let name = match t.remove("name") {
        Some(toml::Value::String(n)) => n,
        Some(_) => return Err(err(format!("{} must be a string", at("name")))),
        None => {
            return Err(err(format!(
                "{} is missing; every sink needs a unique name (it is its checkpoint name)",
                at("name")
            )))
        }
    };
    let ok_name = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok_name {
        return Err(err(format!(
            "{} = `{name}` is invalid; use 1-128 letters, digits, `_`, `-` or `.`",
            at("name")
        )));
    }
    let kind = match t.remove("type") {
        Some(toml::Value::String(k)) => k,
        _ => {
            return Err(err(format!(
                "{} is missing; one of: {}",
                at("type"),
                SINK_TYPES.join(", ")
            )))
        }
    };
    let mut settings = spillway_sinks::SinkSettings::new(name);
    if let Some(v) = t.remove("format") {
        let f = v
            .as_str()
            .ok_or_else(|| err(format!("{} must be a string", at("format"))))?;
        settings.format = f
            .parse()
            .map_err(|e: spillway_core::encoding::UnknownFormat| {
                err(format!("{}: {e}", at("format")))
            })?;
    }
    if let Some(v) = t.remove("prefix") {
        let p = v
            .as_str()
            .filter(|p| {
                !p.is_empty()
                    && p.len() <= 128
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            })
            .ok_or_else(|| {
                err(format!(
                    "{} must be 1-128 letters, digits, `_`, `-` or `.` (it fills {{prefix}} in topic and subject names)",
                    at("prefix")
                ))
            })?;
        settings.encoder_options.prefix = p.to_owned();
    }
    if let Some(v) = t.remove("tables") {
        let map: BTreeMap<String, Vec<String>> = v.try_into().map_err(|_| {
            err(format!(
                "{} must be a table of lists, e.g. {{ trades = [\"insert\", \"update\"] }}",
                at("tables")
            ))
        })?;
        for (pattern, ops) in &map {
            TablePattern::parse(pattern).map_err(|e| err(format!("{}: {e}", at("tables"))))?;
            Operation::parse_list(ops, &Operation::ALL)
                .map_err(|e| err(format!("{}: {e}", at("tables"))))?;
        }
        settings.tables = Some(map);
    }
    if let Some(v) = t.remove("operations") {
        let ops: Vec<String> = v
            .try_into()
            .map_err(|_| err(format!("{} must be a list of operations", at("operations"))))?;
        Operation::parse_list(&ops, &Operation::ALL)
            .map_err(|e| err(format!("{}: {e}", at("operations"))))?;
        settings.operations = Some(ops);
    }
    let batching_set = t.contains_key("batch_size") || t.contains_key("batch_timeout_ms");
    if let Some(v) = t.remove("batch_size") {
        settings.batch_size = v
            .as_integer()
            .filter(|n| (1..=100_000).contains(n))
            .ok_or_else(|| {
                err(format!(
                    "{} must be a number from 1 to 100000",
                    at("batch_size")
                ))
            })? as usize;
    }
    if let Some(v) = t.remove("batch_timeout_ms") {
        let ms = v
            .as_integer()
            .filter(|n| (0..=600_000).contains(n))
            .ok_or_else(|| {
                err(format!(
                    "{} must be milliseconds from 0 to 600000",
                    at("batch_timeout_ms")
                ))
            })?;
        settings.batch_timeout = std::time::Duration::from_millis(ms as u64);
    }
    let kind = match kind.as_str() {
        "file" => {
            if let Some(toml::Value::String(size)) = t.get("max_bytes").cloned() {
                let n = parse_size(&size).ok_or_else(|| {
                    err(format!(
                        "{} = `{size}` is not a size; write e.g. \"64MiB\"",
                        at("max_bytes")
                    ))
                })?;
                t.insert("max_bytes".into(), toml::Value::Integer(n as i64));
            }
            let cfg: spillway_sinks::file::FileSinkConfig =
                deserialize_at(toml::Value::Table(t), &format!("sinks[{i}]"))?;
            SinkKind::File(cfg)
        }
        "webhook" => {
            let cfg: spillway_sinks::webhook::WebhookSinkConfig =
                deserialize_at(toml::Value::Table(t), &format!("sinks[{i}]"))?;
            cfg.validate()
                .map_err(|e| err(format!("sinks[{i}]: {e}")))?;
            SinkKind::Webhook(cfg)
        }
        "nats" => {
            let cfg: spillway_sink_nats::NatsSinkConfig =
                deserialize_at(toml::Value::Table(t), &format!("sinks[{i}]"))?;
            // Checks the settings and the subject templates (no connection).
            spillway_sink_nats::NatsSink::new(&cfg, &settings.encoder_options.prefix, "db")
                .map_err(|e| err(format!("sinks[{i}]: {e}")))?;
            SinkKind::Nats(Box::new(cfg))
        }
        "kafka" => {
            let cfg: spillway_sink_kafka::KafkaSinkConfig =
                deserialize_at(toml::Value::Table(t), &format!("sinks[{i}]"))?;
            // Checks the settings, topic templates and librdkafka properties.
            spillway_sink_kafka::KafkaSink::new(&cfg, &settings.encoder_options.prefix, "db")
                .map_err(|e| err(format!("sinks[{i}]: {e}")))?;
            SinkKind::Kafka(Box::new(cfg))
        }
        "s3" => {
            if batching_set {
                return Err(err(format!(
                    "sinks[{i}]: an s3 sink cuts objects with max_object_events, max_object_bytes and max_object_age_ms; remove batch_size / batch_timeout_ms"
                )));
            }
            for key in ["max_object_bytes"] {
                if let Some(toml::Value::String(size)) = t.get(key).cloned() {
                    let n = parse_size(&size).ok_or_else(|| {
                        err(format!(
                            "{} = `{size}` is not a size; write e.g. \"64MiB\"",
                            at(key)
                        ))
                    })?;
                    t.insert(key.into(), toml::Value::Integer(n as i64));
                }
            }
            let cfg: spillway_sink_s3::S3SinkConfig =
                deserialize_at(toml::Value::Table(t), &format!("sinks[{i}]"))?;
            cfg.validate()
                .map_err(|e| err(format!("sinks[{i}]: {e}")))?;
            cfg.apply(&mut settings);
            SinkKind::S3(Box::new(cfg))
        }
        other => {
            return Err(err(format!(
                "{} = `{other}` is not a sink type; one of: {}",
                at("type"),
                SINK_TYPES.join(", ")
            )))
        }
    };
    Ok(SinkConfig { settings, kind })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    /// PostgreSQL connection string (URL or key/value).
    dsn: Option<String>,
    /// Logical replication slot; created when missing.
    slot: Option<String>,
    /// Publication; created when missing, reused as it is when present.
    publication: Option<String>,
    /// Which tables to capture: a list of patterns, or a map pattern → operations.
    tables: Option<RawTables>,
    /// Must be `pgoutput` when given (reference 001's OUTPUT_PLUGIN).
    output_plugin: Option<String>,
    /// Reconnect when nothing arrives on the replication connection for this long.
    receive_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawTables {
    List(Vec<String>),
    Map(BTreeMap<String, Vec<String>>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    /// Directory of the change log.
    dir: Option<PathBuf>,
    /// Segment size, e.g. "64MiB".
    segment_bytes: Option<Size>,
    /// Keep records at least this long, e.g. "168h" (whole segments are deleted after).
    retention: Option<String>,
    /// Cap on the log's disk usage, e.g. "10GiB" (may trim past consumer checkpoints).
    max_bytes: Option<Size>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    /// Address of the HTTP API.
    listen: Option<String>,
    /// Bearer token required on every endpoint but /healthz.
    token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Int(u64),
    Text(String),
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[source]`
    pub source: SourceConfig,
    /// `[log]`
    pub log: LogConfig,
    /// `[api]`
    pub api: ApiConfig,
    /// `[[sinks]]`
    pub sinks: Vec<SinkConfig>,
}

/// `[source]`, validated.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// The DSN (redacted in Debug).
    pub dsn: Dsn,
    /// Parsed DSN.
    pub connect: spillway_postgres::ConnectConfig,
    /// Slot name.
    pub slot: String,
    /// Publication name.
    pub publication: String,
    /// Table patterns and the operations to keep for each (empty = all).
    pub tables: Vec<(TablePattern, Vec<Operation>)>,
    /// Give the replication connection up (and reconnect) when nothing arrives for this
    /// long, like PostgreSQL's `wal_receiver_timeout`; zero = never.
    pub receive_timeout: std::time::Duration,
}

/// `[log]`, validated.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Directory.
    pub dir: PathBuf,
    /// Segment size in bytes.
    pub segment_bytes: u64,
    /// Retention by age (`None` = keep forever).
    pub retention: Option<std::time::Duration>,
    /// Retention by size (`None` = no cap).
    pub max_bytes: Option<u64>,
}

/// `[api]`, validated.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Bearer token (never logged).
    pub token: Option<Secret>,
}

/// Default segment size: 64 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// Default retention by age: 7 days.
pub const DEFAULT_RETENTION: std::time::Duration = std::time::Duration::from_secs(168 * 3600);
/// Default API address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7654";
/// Default receive timeout of the replication connection: 60 s, PostgreSQL's own
/// `wal_receiver_timeout`. Not less: an idle walsender answers Spillway's pings at once,
/// but one replaying a large transaction that the publication filters out answers only
/// every `wal_sender_timeout / 2` (30 s by default), so a shorter deadline would cut it
/// off again and again while it is working.
pub const DEFAULT_RECEIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Every key and its environment variable (beside the `SPILLWAY_` form).
const KEYS: &[(&str, &str, Option<&str>)] = &[
    ("source", "dsn", Some("DB_DSN")),
    ("source", "slot", Some("SLOT_NAME")),
    ("source", "publication", Some("PUBLICATION_NAME")),
    ("source", "tables", Some("TABLE_FILTER")),
    ("source", "output_plugin", Some("OUTPUT_PLUGIN")),
    ("source", "receive_timeout", None),
    ("log", "dir", None),
    ("log", "segment_bytes", None),
    ("log", "retention", None),
    ("log", "max_bytes", None),
    ("api", "listen", None),
    ("api", "token", None),
];

/// The environment variable that overrides `section.key`.
pub fn env_name(section: &str, key: &str) -> String {
    format!("SPILLWAY_{}_{}", section.to_uppercase(), key.to_uppercase())
}

impl Config {
    /// Loads `path` (required when given) merged with the process environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let text = match path {
            Some(p) => Some((
                p.display().to_string(),
                std::fs::read_to_string(p).map_err(|e| {
                    err(format!(
                        "cannot read config file {}: {}; pass an existing file with --config",
                        p.display(),
                        e.kind().to_string().to_lowercase()
                    ))
                })?,
            )),
            None => None,
        };
        Config::from_parts(text.as_ref().map(|(n, t)| (n.as_str(), t.as_str())), &env)
    }

    /// Builds the configuration from file text (name, contents) and environment pairs.
    pub fn from_parts(
        file: Option<(&str, &str)>,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = match file {
            Some((name, text)) => toml::from_str(text).map_err(|e| toml_error(name, text, &e))?,
            None => toml::Table::new(),
        };
        apply_env(&mut table, env)?;
        let origin = file.map(|(n, _)| n).unwrap_or("environment");
        let raw: RawConfig = deserialize_at(toml::Value::Table(table), &format!("{origin}:"))?;
        validate(raw)
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn toml_error(name: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
    match line {
        Some(l) => err(format!("{name}:{l}: {}", one_line(e.message()))),
        None => err(format!("{name}: {}", one_line(e.message()))),
    }
}

fn apply_env(table: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    for (k, _) in env {
        for section in ["SOURCE", "LOG", "API"] {
            let prefix = format!("SPILLWAY_{section}_");
            if let Some(key) = k.strip_prefix(&prefix) {
                let known = KEYS.iter().any(|(s, kk, _)| {
                    s.eq_ignore_ascii_case(section) && kk.eq_ignore_ascii_case(key)
                });
                if !known {
                    let keys: Vec<String> = KEYS
                        .iter()
                        .filter(|(s, _, _)| s.eq_ignore_ascii_case(section))
                        .map(|(s, kk, _)| env_name(s, kk))
                        .collect();
                    return Err(err(format!(
                        "unknown environment variable {k}; known ones are {}",
                        keys.join(", ")
                    )));
                }
            }
        }
    }
    reference_001_sink(table, &lookup)?;
    for (section, key, alias) in KEYS {
        let value = lookup(&env_name(section, key)).or_else(|| alias.and_then(&lookup));
        let Some(value) = value else { continue };
        let value = env_value(section, key, &value)?;
        let entry = table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(t) => {
                t.insert(key.to_string(), value);
            }
            _ => return Err(err(format!("`{section}` must be a table ([{section}])"))),
        }
    }
    Ok(())
}

/// Reference 001's pipeline from the environment alone: `NATS_PUB_URI` adds
/// a `nats` sink named `nats` (format `flat`: `ID, Schema, Table, Action,
/// Data, DataOld, EventTime`), with `TOPIC_MAPPING` (JSON object) as its
/// `subject_mapping` and `TOPIC_PREFIX` as its `prefix`. `TABLE_FILTER`
/// filters at the source, for every sink.
fn reference_001_sink(
    table: &mut toml::Table,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    let Some(url) = lookup("NATS_PUB_URI") else {
        if lookup("TOPIC_MAPPING").is_some() {
            return Err(err(
                "TOPIC_MAPPING is set but NATS_PUB_URI is not; set NATS_PUB_URI=nats://host:4222 for the NATS sink it maps subjects of",
            ));
        }
        return Ok(());
    };
    let mut sink = toml::Table::new();
    sink.insert("name".into(), "nats".into());
    sink.insert("type".into(), "nats".into());
    sink.insert("url".into(), url.into());
    sink.insert("format".into(), "flat".into());
    if let Some(prefix) = lookup("TOPIC_PREFIX") {
        sink.insert("prefix".into(), prefix.into());
    }
    if let Some(mapping) = lookup("TOPIC_MAPPING") {
        let json: serde_json::Value = serde_json::from_str(mapping.trim()).map_err(|e| {
            err(format!(
                "TOPIC_MAPPING: not valid JSON ({e}); write {{\"trades\":\"transactions\"}}"
            ))
        })?;
        let ok = json
            .as_object()
            .is_some_and(|o| o.values().all(serde_json::Value::is_string));
        let value = json_to_toml(&json).filter(|_| ok).ok_or_else(|| {
            err("TOPIC_MAPPING: must be a JSON object of table to subject, e.g. {\"trades\":\"transactions\"}")
        })?;
        sink.insert("subject_mapping".into(), value);
    }
    let sinks = table
        .entry("sinks")
        .or_insert_with(|| toml::Value::Array(Vec::new()));
    let toml::Value::Array(list) = sinks else {
        return Err(err("`sinks` must be a list of tables ([[sinks]])"));
    };
    if list
        .iter()
        .any(|s| s.get("name").and_then(toml::Value::as_str) == Some("nats"))
    {
        return Err(err(
            "NATS_PUB_URI adds a sink named `nats`, but the config file has one already; remove NATS_PUB_URI or rename the file's sink",
        ));
    }
    list.push(toml::Value::Table(sink));
    Ok(())
}

fn env_value(section: &str, key: &str, value: &str) -> Result<toml::Value, ConfigError> {
    if (section, key) == ("source", "tables") {
        let v = value.trim();
        if v.starts_with('{') || v.starts_with('[') {
            let json: serde_json::Value = serde_json::from_str(v).map_err(|e| {
                err(format!(
                    "TABLE_FILTER / {}: not valid JSON ({e}); write {{\"trades\":[\"insert\",\"update\"]}} or a comma list",
                    env_name(section, key)
                ))
            })?;
            return json_to_toml(&json).ok_or_else(|| {
                err(format!(
                    "{}: must be a JSON list or object of lists",
                    env_name(section, key)
                ))
            });
        }
        return Ok(toml::Value::Array(
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ));
    }
    Ok(toml::Value::String(value.to_string()))
}

fn json_to_toml(v: &serde_json::Value) -> Option<toml::Value> {
    Some(match v {
        serde_json::Value::String(s) => toml::Value::String(s.clone()),
        serde_json::Value::Array(a) => {
            toml::Value::Array(a.iter().map(json_to_toml).collect::<Option<_>>()?)
        }
        serde_json::Value::Object(o) => toml::Value::Table(
            o.iter()
                .map(|(k, v)| Some((k.clone(), json_to_toml(v)?)))
                .collect::<Option<_>>()?,
        ),
        serde_json::Value::Number(n) => toml::Value::Integer(n.as_i64()?),
        serde_json::Value::Bool(b) => toml::Value::Boolean(*b),
        serde_json::Value::Null => return None,
    })
}

/// Parses "168h", "30m", "45s", "500ms", "7d", "0" (= forever).
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let secs = |m: u64| n.checked_mul(m).map(std::time::Duration::from_secs);
    match unit.trim() {
        "ms" => Some(std::time::Duration::from_millis(n)),
        "" | "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        "w" => secs(7 * 86_400),
        _ => None,
    }
}

/// Parses "64MiB", "10GiB", "512KiB", "1MB", "4096".
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "TiB" | "T" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn validate_name(key: &str, v: &str) -> Result<(), ConfigError> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(err(format!(
            "source.{key} = `{v}` is invalid; use 1-63 lower-case letters, digits and underscores"
        )))
    }
}

fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let dsn = raw.source.dsn.ok_or_else(|| {
        err(format!(
            "source.dsn is missing; set it in [source] (dsn = \"postgres://user@host:5432/db\") or with {} / DB_DSN",
            env_name("source", "dsn")
        ))
    })?;
    let connect = spillway_postgres::ConnectConfig::parse(&dsn)
        .map_err(|e| err(format!("source.dsn: {e}")))?;
    let slot = raw.source.slot.unwrap_or_else(|| "spillway".into());
    validate_name("slot", &slot)?;
    let publication = raw.source.publication.unwrap_or_else(|| "spillway".into());
    if publication.is_empty() {
        return Err(err("source.publication must not be empty"));
    }
    if let Some(p) = raw.source.output_plugin {
        if p != "pgoutput" {
            return Err(err(format!(
                "source.output_plugin = `{p}` is not supported; spillway reads pgoutput (remove OUTPUT_PLUGIN or set it to pgoutput)"
            )));
        }
    }
    let raw_tables: Vec<(String, Vec<String>)> = match raw.source.tables {
        None => Vec::new(),
        Some(RawTables::List(l)) => l.into_iter().map(|t| (t, Vec::new())).collect(),
        Some(RawTables::Map(m)) => m.into_iter().collect(),
    };
    let mut tables = Vec::with_capacity(raw_tables.len());
    for (t, ops) in &raw_tables {
        let pattern = TablePattern::parse(t).map_err(|e| err(format!("source.tables: {e}")))?;
        // The WAL carries no snapshot reads.
        let ops = Operation::parse_list(ops, &Operation::WAL)
            .map_err(|e| err(format!("source.tables: {e} for `{t}`")))?;
        tables.push((pattern, ops));
    }
    let receive_timeout = match raw.source.receive_timeout {
        None => DEFAULT_RECEIVE_TIMEOUT,
        Some(t) => match parse_duration(&t) {
            Some(d) if d.is_zero() || d >= std::time::Duration::from_secs(1) => d,
            Some(_) => {
                return Err(err(format!(
                    "source.receive_timeout = `{t}` is too short; use at least \"1s\" (or \"0\" for no deadline)"
                )))
            }
            None => {
                return Err(err(format!(
                    "source.receive_timeout = `{t}` is not a duration; write e.g. \"30s\" or \"0\" for no deadline"
                )))
            }
        },
    };
    let segment_bytes = match raw.log.segment_bytes {
        None => DEFAULT_SEGMENT_BYTES,
        Some(Size::Int(n)) => n,
        Some(Size::Text(s)) => parse_size(&s).ok_or_else(|| {
            err(format!(
                "log.segment_bytes = `{s}` is not a size; write e.g. \"64MiB\""
            ))
        })?,
    };
    if segment_bytes < 4096 {
        return Err(err(format!(
            "log.segment_bytes = {segment_bytes} is too small; use at least 4KiB"
        )));
    }
    let retention = match raw.log.retention {
        None => Some(DEFAULT_RETENTION),
        Some(t) => match parse_duration(&t) {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => {
                return Err(err(format!(
                    "log.retention = `{t}` is not a duration; write e.g. \"168h\", \"7d\" or \"0\" to keep everything"
                )))
            }
        },
    };
    let max_bytes = match raw.log.max_bytes {
        None => None,
        Some(Size::Int(n)) => Some(n),
        Some(Size::Text(s)) => Some(parse_size(&s).ok_or_else(|| {
            err(format!(
                "log.max_bytes = `{s}` is not a size; write e.g. \"10GiB\""
            ))
        })?),
    };
    if max_bytes.is_some_and(|m| m < 2 * segment_bytes) {
        return Err(err(format!(
            "log.max_bytes must be at least two segments ({} bytes with log.segment_bytes = {segment_bytes})",
            2 * segment_bytes
        )));
    }
    let token = match raw.api.token {
        Some(t) if t.trim().is_empty() => {
            return Err(err(
                "api.token is empty; set a long random string or remove the key",
            ))
        }
        Some(t) => Some(Secret(t)),
        None => None,
    };
    let listen_text = raw.api.listen.unwrap_or_else(|| DEFAULT_LISTEN.into());
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        err(format!(
            "api.listen = `{listen_text}` is not an address; write host:port, e.g. \"127.0.0.1:7654\""
        ))
    })?;
    let mut sinks = Vec::new();
    for (i, t) in raw.sinks.into_iter().enumerate() {
        let sink = validate_sink(i, t)?;
        if sinks
            .iter()
            .any(|s: &SinkConfig| s.settings.name == sink.settings.name)
        {
            return Err(err(format!(
                "sinks[{i}].name = `{}` is used twice; sink names must be unique",
                sink.settings.name
            )));
        }
        sinks.push(sink);
    }
    if !listen.ip().is_loopback() && token.is_none() {
        return Err(err(format!(
            "api.listen = {listen} is reachable from other machines but api.token is not set; set [api] token = \"<long random string>\" (or {}) to require a bearer token, or listen on 127.0.0.1",
            env_name("api", "token")
        )));
    }
    Ok(Config {
        source: SourceConfig {
            dsn: Dsn(dsn),
            connect,
            slot,
            publication,
            tables,
            receive_timeout,
        },
        log: LogConfig {
            dir: raw
                .log
                .dir
                .unwrap_or_else(|| PathBuf::from("./spillway-data")),
            segment_bytes,
            retention,
            max_bytes,
        },
        api: ApiConfig { listen, token },
        sinks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[source]
dsn = "postgres://postgres@127.0.0.1:5432/shop"
slot = "spillway"
publication = "spillway"
# tables = ["bank.holding", "commerce.*"]   optional, default: all tables

[log]
dir = "./spillway-data"

[api]
listen = "127.0.0.1:7654"
"#;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn minimal_file() {
        let c = Config::from_parts(Some(("spillway.toml", MINIMAL)), &[]).unwrap();
        assert_eq!(c.source.connect.dbname, "shop");
        assert_eq!(c.source.slot, "spillway");
        assert_eq!(c.log.dir, PathBuf::from("./spillway-data"));
        assert_eq!(c.log.segment_bytes, DEFAULT_SEGMENT_BYTES);
        assert_eq!(c.api.listen.port(), 7654);
        assert!(c.source.tables.is_empty());
    }

    #[test]
    fn env_overrides_and_aliases() {
        let c = Config::from_parts(
            Some(("f", MINIMAL)),
            &env(&[
                ("SPILLWAY_SOURCE_SLOT", "other"),
                ("SPILLWAY_LOG_SEGMENT_BYTES", "1MiB"),
                ("PUBLICATION_NAME", "ditto"),
                ("TABLE_FILTER", r#"{"trades":["insert","update"]}"#),
            ]),
        )
        .unwrap();
        assert_eq!(c.source.slot, "other");
        assert_eq!(c.source.publication, "ditto");
        assert_eq!(c.log.segment_bytes, 1 << 20);
        assert_eq!(
            c.source.tables,
            vec![(
                TablePattern::parse("trades").unwrap(),
                vec![Operation::Insert, Operation::Update]
            )]
        );
        // env only, reference-001 names
        let c = Config::from_parts(
            None,
            &env(&[
                ("DB_DSN", "postgres://u@h/db?replication=database"),
                ("SLOT_NAME", "ditto"),
                ("TABLE_FILTER", "a.b, c"),
            ]),
        )
        .unwrap();
        assert_eq!(c.source.slot, "ditto");
        assert_eq!(c.source.tables.len(), 2);
        // SPILLWAY_ wins over the alias
        let c = Config::from_parts(
            None,
            &env(&[
                ("DB_DSN", "postgres://u@h/a"),
                ("SPILLWAY_SOURCE_DSN", "postgres://u@h/b"),
            ]),
        )
        .unwrap();
        assert_eq!(c.source.connect.dbname, "b");
    }

    #[test]
    fn errors_are_one_line_and_name_the_key() {
        type Case<'a> = (Option<&'a str>, Vec<(String, String)>, &'a str);
        let cases: Vec<Case> = vec![
            (
                Some("[source]\ndsn = \"postgres://h/db\"\ndsnn = 1\n"),
                vec![],
                "dsnn",
            ),
            (Some("[sauce]\n"), vec![], "sauce"),
            (Some("[source]\ndsn = 5\n"), vec![], "dsn"),
            (Some("[source\n"), vec![], "f:1"),
            (
                Some("[source]\ndsn = \"postgres://h/db\"\n[log]\nsegment_bytes = \"lots\"\n"),
                vec![],
                "log.segment_bytes",
            ),
            (
                Some("[source]\ndsn = \"postgres://h/db\"\n[api]\nlisten = \"nowhere\"\n"),
                vec![],
                "api.listen",
            ),
            (
                Some("[source]\ndsn = \"mysql://h/db\"\n"),
                vec![],
                "source.dsn",
            ),
            (
                Some("[source]\ndsn = \"postgres://h/db\"\ntables = {t = [\"upsert\"]}\n"),
                vec![],
                "upsert",
            ),
            (
                Some("[source]\ndsn = \"postgres://h/db\"\nslot = \"Bad-Slot\"\n"),
                vec![],
                "source.slot",
            ),
            (None, vec![], "source.dsn is missing"),
            (
                None,
                env(&[("SPILLWAY_SOURCE_DNS", "x")]),
                "SPILLWAY_SOURCE_DNS",
            ),
            (
                None,
                env(&[("DB_DSN", "postgres://h/d"), ("TABLE_FILTER", "{bad json")]),
                "TABLE_FILTER",
            ),
        ];
        for (file, env, needle) in cases {
            let e = Config::from_parts(file.map(|t| ("f", t)), &env)
                .unwrap_err()
                .0;
            assert!(!e.contains('\n'), "multi-line: {e}");
            assert!(e.contains(needle), "`{e}` does not mention `{needle}`");
        }
    }

    #[test]
    fn retention_token_and_exposure() {
        let base = "[source]\ndsn = \"postgres://h/db\"\n";
        let c = Config::from_parts(Some(("f", base)), &[]).unwrap();
        assert_eq!(c.log.retention, Some(DEFAULT_RETENTION));
        assert_eq!(c.log.max_bytes, None);
        let c = Config::from_parts(
            Some((
                "f",
                &format!("{base}[log]\nretention = \"2h\"\nmax_bytes = \"1GiB\"\n"),
            )),
            &[],
        )
        .unwrap();
        assert_eq!(c.log.retention, Some(std::time::Duration::from_secs(7200)));
        assert_eq!(c.log.max_bytes, Some(1 << 30));
        let c = Config::from_parts(
            Some(("f", &format!("{base}[log]\nretention = \"0\"\n"))),
            &[],
        )
        .unwrap();
        assert_eq!(c.log.retention, None);
        // beyond loopback needs a token
        let e = Config::from_parts(
            Some(("f", &format!("{base}[api]\nlisten = \"0.0.0.0:7654\"\n"))),
            &[],
        )
        .unwrap_err()
        .0;
        assert!(e.contains("api.token") && !e.contains('\n'), "{e}");
        let c = Config::from_parts(
            Some(("f", &format!("{base}[api]\nlisten = \"0.0.0.0:7654\"\n"))),
            &env(&[("SPILLWAY_API_TOKEN", "s3cr3t")]),
        )
        .unwrap();
        assert_eq!(c.api.token.as_ref().map(|t| t.0.as_str()), Some("s3cr3t"));
        assert!(
            !format!("{c:?}").contains("s3cr3t"),
            "tokens never show in Debug"
        );
        for (bad, needle) in [
            ("[log]\nretention = \"soon\"\n", "log.retention"),
            ("[log]\nmax_bytes = \"lots\"\n", "log.max_bytes"),
            ("[log]\nmax_bytes = 10\n", "log.max_bytes"),
            ("[api]\ntoken = \"\"\n", "api.token"),
        ] {
            let e = Config::from_parts(Some(("f", &format!("{base}{bad}"))), &[])
                .unwrap_err()
                .0;
            assert!(e.contains(needle), "{e}");
        }
        assert_eq!(
            parse_duration("500ms"),
            Some(std::time::Duration::from_millis(500))
        );
        assert_eq!(
            parse_duration("7d"),
            Some(std::time::Duration::from_secs(604_800))
        );
        assert_eq!(parse_duration("x"), None);
    }

    #[test]
    fn the_dsn_password_never_shows() {
        // (a dsn, the same with a mistake)
        for (dsn, bad) in [
            (
                "postgres://u:Kq7@Zx9@h/db",
                "postgres://u:Kq7@Zx9@h:99999/db",
            ),
            (
                "postgres://u@h/db?sslmode=disable&password=Kq7@Zx9",
                "postgres://u@h/db?sslmode=bogus&password=Kq7@Zx9",
            ),
            (
                "host=h user=u password='Kq7 @Zx9' dbname=db",
                "host=h user=u password='Kq7 @Zx9' port=x",
            ),
        ] {
            let file = |d: &str| format!("[source]\ndsn = \"{d}\"\n");
            let c = Config::from_parts(Some(("f", &file(dsn))), &[]).unwrap();
            assert!(c.source.connect.password.is_some());
            let shown = format!("{c:?} {}", c.source.connect);
            assert!(
                !shown.contains("Kq7") && !shown.contains("Zx9"),
                "{dsn} shows as {shown}"
            );
            let e = Config::from_parts(Some(("f", &file(bad))), &[])
                .map(|_| ())
                .unwrap_err()
                .0;
            assert!(e.starts_with("source.dsn"), "{e}");
            assert!(!e.contains("Kq7") && !e.contains("Zx9"), "{e}");
        }
    }

    #[test]
    fn receive_timeout() {
        let base = "[source]\ndsn = \"postgres://h/db\"\n";
        let c = Config::from_parts(Some(("f", base)), &[]).unwrap();
        assert_eq!(c.source.receive_timeout, DEFAULT_RECEIVE_TIMEOUT);
        assert_eq!(DEFAULT_RECEIVE_TIMEOUT, std::time::Duration::from_secs(60));
        let c = Config::from_parts(
            Some(("f", &format!("{base}receive_timeout = \"2s\"\n"))),
            &[],
        )
        .unwrap();
        assert_eq!(c.source.receive_timeout, std::time::Duration::from_secs(2));
        let c = Config::from_parts(
            Some(("f", base)),
            &env(&[("SPILLWAY_SOURCE_RECEIVE_TIMEOUT", "90s")]),
        )
        .unwrap();
        assert_eq!(c.source.receive_timeout, std::time::Duration::from_secs(90));
        let c = Config::from_parts(
            Some(("f", &format!("{base}receive_timeout = \"0\"\n"))),
            &[],
        )
        .unwrap();
        assert!(c.source.receive_timeout.is_zero());
        for bad in ["soon", "500ms"] {
            let e = Config::from_parts(
                Some(("f", &format!("{base}receive_timeout = \"{bad}\"\n"))),
                &[],
            )
            .unwrap_err()
            .0;
            assert!(
                e.contains("source.receive_timeout") && !e.contains('\n'),
                "{e}"
            );
        }
    }

    #[test]
    fn sinks() {
        let base = "[source]\ndsn = \"postgres://h/db\"\n";
        let c = Config::from_parts(Some(("f", &format!("{base}[[sinks]]\nname = \"audit\"\ntype = \"file\"\npath = \"/tmp/a.jsonl\"\nmax_bytes = \"1MiB\"\nformat = \"flat\"\ntables = {{ trades = [\"insert\"] }}\nbatch_size = 10\n"))), &[]).unwrap();
        assert_eq!(c.sinks.len(), 1);
        assert_eq!(c.sinks[0].settings.name, "audit");
        assert_eq!(c.sinks[0].settings.batch_size, 10);
        let SinkKind::File(f) = &c.sinks[0].kind else {
            panic!("not a file sink")
        };
        assert_eq!(f.max_bytes, Some(1 << 20));
        let c = Config::from_parts(Some(("f", &format!("{base}[[sinks]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/in\"\nsecret = \"s3cr3t-value\"\nformat = \"document\"\n"))), &[]).unwrap();
        let SinkKind::Webhook(w) = &c.sinks[0].kind else {
            panic!("not a webhook sink")
        };
        assert_eq!(w.url, "http://127.0.0.1:9/in");
        assert!(
            !format!("{c:?}").contains("s3cr3t-value"),
            "secrets never show in Debug"
        );
        let e = Config::from_parts(
            Some((
                "f",
                &format!(
                    "{base}[[sinks]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"ftp://x\"\n"
                ),
            )),
            &[],
        )
        .unwrap_err()
        .0;
        assert!(e.contains("sinks[0]") && !e.contains('\n'), "{e}");
        for (bad, needle) in [
            ("[[sinks]]\ntype = \"file\"\npath = \"x\"\n", "sinks[0].name"),
            ("[[sinks]]\nname = \"a\"\ntype = \"ftp\"\n", "sinks[0].type"),
            ("[[sinks]]\nname = \"a\"\ntype = \"file\"\npath = \"x\"\npaht = 1\n", "paht"),
            ("[[sinks]]\nname = \"a\"\ntype = \"file\"\npath = \"x\"\nformat = \"avro\"\n", "sinks[0].format"),
            ("[[sinks]]\nname = \"a\"\ntype = \"file\"\npath = \"x\"\noperations = [\"upsert\"]\n", "upsert"),
            ("[[sinks]]\nname = \"a\"\ntype = \"file\"\npath = \"x\"\n[[sinks]]\nname = \"a\"\ntype = \"file\"\npath = \"y\"\n", "used twice"),
        ] {
            let e = Config::from_parts(Some(("f", &format!("{base}{bad}"))), &[]).unwrap_err().0;
            assert!(e.contains(needle) && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("10GiB"), Some(10 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("1MB"), Some(1_000_000));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("99999999999999999999"), None);
    }

    #[test]
    fn nats_sink_and_reference_001_environment() {
        let base = "[source]\ndsn = \"postgres://u@h/db\"\n";
        let c = Config::from_parts(Some(("f", &format!("{base}[[sinks]]\nname = \"bus\"\ntype = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\nprefix = \"app\"\nsubject_mapping = {{ trades = \"transactions\" }}\ntoken = \"tok\"\n"))), &[]).unwrap();
        let SinkKind::Nats(n) = &c.sinks[0].kind else {
            panic!("not a nats sink")
        };
        assert_eq!(n.subject, "{prefix}_{schema}_{table}");
        assert_eq!(n.subject_mapping["trades"], "transactions");
        assert_eq!(c.sinks[0].settings.encoder_options.prefix, "app");
        assert!(!format!("{c:?}").contains("tok\""), "token hidden");

        // Reference 001: the environment alone makes the pipeline.
        let c = Config::from_parts(
            None,
            &env(&[
                (
                    "DB_DSN",
                    "postgres://postgres:pw@localhost:5432/db_name?replication=database",
                ),
                ("OUTPUT_PLUGIN", "pgoutput"),
                ("PUBLICATION_NAME", "ditto"),
                ("SLOT_NAME", "ditto"),
                ("NATS_PUB_URI", "nats://localhost:4222"),
                ("TABLE_FILTER", r#"{"trades":["insert"]}"#),
                ("TOPIC_MAPPING", r#"{"trades":"transactions"}"#),
            ]),
        )
        .unwrap();
        assert_eq!(c.source.slot, "ditto");
        assert_eq!(c.sinks.len(), 1);
        let s = &c.sinks[0];
        assert_eq!(s.settings.name, "nats");
        assert_eq!(s.settings.format, spillway_core::encoding::Format::Flat);
        let SinkKind::Nats(n) = &s.kind else {
            panic!("not a nats sink")
        };
        assert_eq!(n.url, "nats://localhost:4222");
        assert_eq!(n.subject_mapping["trades"], "transactions");

        for (pairs, want) in [
            (
                vec![("DB_DSN", "postgres://h/d"), ("TOPIC_MAPPING", "{}")],
                "NATS_PUB_URI",
            ),
            (
                vec![
                    ("DB_DSN", "postgres://h/d"),
                    ("NATS_PUB_URI", "nats://h:1"),
                    ("TOPIC_MAPPING", "[1]"),
                ],
                "TOPIC_MAPPING",
            ),
            (
                vec![
                    ("DB_DSN", "postgres://h/d"),
                    ("NATS_PUB_URI", "nats://h:1"),
                    ("TOPIC_MAPPING", "{bad"),
                ],
                "TOPIC_MAPPING",
            ),
            (
                vec![("DB_DSN", "postgres://h/d"), ("NATS_PUB_URI", "http://h:1")],
                "not a NATS URL",
            ),
            (
                vec![
                    ("DB_DSN", "postgres://h/d"),
                    ("NATS_PUB_URI", "nats://h:1"),
                    ("TOPIC_PREFIX", "a b"),
                ],
                "prefix",
            ),
        ] {
            let e = Config::from_parts(None, &env(&pairs))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let e = Config::from_parts(
            Some((
                "f",
                &format!("{base}[[sinks]]\nname = \"nats\"\ntype = \"file\"\npath = \"x\"\n"),
            )),
            &env(&[("NATS_PUB_URI", "nats://h:1")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("already"), "{e}");
        let e = Config::from_parts(
            Some(("f", &format!("{base}[[sinks]]\nname = \"n\"\ntype = \"nats\"\nurl = \"nats://h:1\"\nsubject = \"{{prefix}}.{{tbl}}\"\n"))),
            &[],
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("sinks[0]") && e.to_string().contains("{tbl}"),
            "{e}"
        );
    }

    #[test]
    fn kafka_sink_with_options() {
        let base = "[source]\ndsn = \"postgres://u@h/db\"\n";
        let c = Config::from_parts(Some(("f", &format!("{base}[[sinks]]\nname = \"k\"\ntype = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\nformat = \"debezium\"\ntopic_mapping = {{ trades = \"transactions\" }}\n[sinks.options]\n\"linger.ms\" = 20\n\"socket.keepalive.enable\" = true\n"))), &[]).unwrap();
        let SinkKind::Kafka(k) = &c.sinks[0].kind else {
            panic!("not a kafka sink")
        };
        assert_eq!(k.topic, "{prefix}.{schema}.{table}");
        assert_eq!(k.options["linger.ms"], "20");
        assert_eq!(k.options["socket.keepalive.enable"], "true");
        for (extra, want) in [
            ("brokers = \"h\"\n", "host:port"),
            (
                "brokers = \"h:1\"\n[sinks.options]\n\"bogus.prop\" = 1\n",
                "bogus.prop",
            ),
            (
                "brokers = \"h:1\"\npartitions = \"x\"\n",
                "sinks[0].partitions",
            ),
        ] {
            let e = Config::from_parts(
                Some((
                    "f",
                    &format!("{base}[[sinks]]\nname = \"k\"\ntype = \"kafka\"\n{extra}"),
                )),
                &[],
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains(want) && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn s3_sink_sets_object_batching() {
        let base = "[source]\ndsn = \"postgres://u@h/db\"\n";
        let c = Config::from_parts(Some(("f", &format!("{base}[[sinks]]\nname = \"lake\"\ntype = \"s3\"\nurl = \"s3://lake/cdc\"\nendpoint = \"http://127.0.0.1:9000\"\ngzip = true\nmax_object_bytes = \"1MiB\"\nmax_object_age_ms = 5000\n"))), &[]).unwrap();
        let SinkKind::S3(s3) = &c.sinks[0].kind else {
            panic!("not an s3 sink")
        };
        assert!(s3.gzip);
        let st = &c.sinks[0].settings;
        assert_eq!(st.max_batch_bytes, 1 << 20);
        assert_eq!(st.batch_timeout, std::time::Duration::from_secs(5));
        assert!(st.whole_transactions);
        for (extra, want) in [
            ("url = \"s3://lake\"\nbatch_size = 5\n", "max_object_events"),
            ("url = \"ftp://x\"\n", "s3://"),
            (
                "url = \"s3://lake\"\nmax_object_bytes = \"lots\"\n",
                "sinks[0].max_object_bytes",
            ),
        ] {
            let e = Config::from_parts(
                Some((
                    "f",
                    &format!("{base}[[sinks]]\nname = \"l\"\ntype = \"s3\"\n{extra}"),
                )),
                &[],
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains(want) && !e.contains('\n'), "{e}");
        }
    }
}
