//! [`SinkSettings`]: what every sink shares (SPEC §6 "common settings"), and the first
//! step of its chain built from them (the `tables` / `operations` filter).

use std::collections::BTreeMap;
use std::time::Duration;

use spillway_core::encoding::{EncoderOptions, Format};
use spillway_core::pattern::TablePattern;
use spillway_core::transform::Filter;
use spillway_core::Operation;

use crate::contract::SinkError;

/// Settings every sink shares (SPEC §6 "common settings").
#[derive(Debug, Clone)]
pub struct SinkSettings {
    /// The sink's name: also the name of its checkpoint in the log.
    pub name: String,
    /// Per-table filter, e.g. `{"trades": ["insert","update"]}`: keys are
    /// `table` or `schema.table` patterns with `*`; values the operations
    /// kept (empty: all). `None`: every table.
    pub tables: Option<BTreeMap<String, Vec<String>>>,
    /// Operations kept for every table (`None`: all).
    pub operations: Option<Vec<String>>,
    /// Most records per delivered batch (at least 1).
    pub batch_size: usize,
    /// How long a partial batch waits for more records when the log is
    /// quiet.
    pub batch_timeout: Duration,
    /// Most payload bytes read from the log per read (a batch may still be
    /// one larger record).
    pub max_read_bytes: usize,
    /// First retry delay after a transient failure (default 200 ms).
    pub retry_initial: Duration,
    /// Longest retry delay (default 30 s); the delay doubles up to it.
    pub retry_max: Duration,
    /// The encoding written (`format`, default native).
    pub format: Format,
    /// Options of the encoder (`{prefix}`, Debezium's payload time).
    pub encoder_options: EncoderOptions,
    /// A batch is also full once its encoded records reach this many bytes.
    pub max_batch_bytes: usize,
    /// Cut batches only between transactions where possible: when a batch
    /// is delivered while the log holds more, the records of its last,
    /// possibly unfinished transaction wait for the next batch (unless the
    /// batch holds nothing else; such a transaction is then split).
    pub whole_transactions: bool,
}

impl SinkSettings {
    /// Defaults for a sink called `name`: no filters, batches of 1000 or
    /// 100 ms, retries 200 ms doubling to 30 s, native format.
    pub fn new(name: impl Into<String>) -> SinkSettings {
        SinkSettings {
            name: name.into(),
            tables: None,
            operations: None,
            batch_size: 1000,
            batch_timeout: Duration::from_millis(100),
            max_read_bytes: 4 << 20,
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            format: Format::Native,
            encoder_options: EncoderOptions::default(),
            max_batch_bytes: 64 << 20,
            whole_transactions: false,
        }
    }

    pub(crate) fn validate(&self) -> Result<Filter, SinkError> {
        if self.name.is_empty() || self.name.len() > 256 {
            return Err(SinkError::Fatal(
                "invalid sink name: use a non-empty name of at most 256 bytes".into(),
            ));
        }
        if self.batch_size == 0 {
            return Err(SinkError::Fatal(format!(
                "sink {}: batch_size must be at least 1",
                self.name
            )));
        }
        if self.retry_initial.is_zero() || self.retry_max < self.retry_initial {
            return Err(SinkError::Fatal(format!(
                "sink {}: retry delays must be positive with retry_max >= retry_initial",
                self.name
            )));
        }
        self.filter()
    }

    /// The `tables` and `operations` settings as the first transform of the chain.
    fn filter(&self) -> Result<Filter, SinkError> {
        let fatal = |what: &str, e: &dyn std::fmt::Display| {
            SinkError::Fatal(format!("sink {}: {what}: {e}", self.name))
        };
        let mut filter = Filter::all();
        if let Some(ops) = &self.operations {
            let ops =
                Operation::parse_list(ops, &Operation::ALL).map_err(|e| fatal("operations", &e))?;
            filter = filter.with_operations(ops);
        }
        if let Some(map) = &self.tables {
            let mut tables = Vec::with_capacity(map.len());
            for (pattern, ops) in map {
                let what = format!("tables.{pattern}");
                let pattern = TablePattern::parse(pattern).map_err(|e| fatal("tables", &e))?;
                let ops =
                    Operation::parse_list(ops, &Operation::ALL).map_err(|e| fatal(&what, &e))?;
                tables.push((pattern, ops));
            }
            filter = filter.with_tables(tables);
        }
        Ok(filter)
    }
}
