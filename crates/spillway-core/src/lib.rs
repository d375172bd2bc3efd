//! The change-event model shared by everything that *reads* events (the CLI, tests, the
//! Rust client) and the sink encodings. No I/O.
//!
//! The capture path does not build these structs: it writes native JSON directly
//! (`spillway-pgoutput::event`) for speed. The crate root is the typed view of that JSON,
//! and its tests pin the field names of SPEC §3.
//!
//! # Layout
//!
//! - crate root: [`Event`] and its parts, the typed native event.
//! - [`lsn`]: the `X/Y` text form of PostgreSQL LSNs.
//! - [`encoding`]: [`Encoder`](encoding::Encoder) turns native event bytes into the
//!   format a sink writes (`native`, `debezium`, `document`, `flat`); the rules of each
//!   format and every choice made where the references are silent are in the module
//!   documentation of [`encoding`] and its submodules.
//!
//! # Encodings
//!
//! All examples encode the SPEC §3 update, after the `schema_change` announcing its table
//! (an encoder is fed every event of the stream, in order):
//!
//! ```
//! # use spillway_core::encoding::{Encoder, EncoderOptions, Format, PayloadTime};
//! const SCHEMA_CHANGE: &[u8] = br#"{"type":"schema_change","lsn":1041,"id":"0/1A2B3C8:1","timestamp":1763683200123456,"entity":"public.orders","schema":"public","table":"orders","replica_identity":"full","columns":[{"name":"id","type":"int4","type_oid":23,"key":true},{"name":"status","type":"text","type_oid":25,"key":false}],"tx":{"xid":731,"commit_lsn":"0/1A2B3C8","index":1},"source":{"db":"shop","pg_lsn":"0/1A2B300"}}"#;
//! const UPDATE: &[u8] = br#"{"type":"change","lsn":1042,"id":"0/1A2B3C8:3","timestamp":1763683200123456,"operation":"update","entity":"public.orders","schema":"public","table":"orders","entity_id":{"id":7},"old_data":{"id":7,"status":"paid"},"new_data":{"id":7,"status":"shipped"},"tx":{"xid":731,"commit_lsn":"0/1A2B3C8","index":3},"source":{"db":"shop","pg_lsn":"0/1A2B3A0"}}"#;
//! # let _ = (SCHEMA_CHANGE, UPDATE);
//! ```
//!
//! ## `native` (default)
//!
//! The event unchanged; key `{"id":7}`. Every event type except `heartbeat` is carried.
//!
//! ```
//! # use spillway_core::encoding::{Encoder, EncoderOptions, Format};
//! # const UPDATE: &[u8] = br#"{"type":"change","lsn":1042,"id":"0/1A2B3C8:3","timestamp":1763683200123456,"operation":"update","entity":"public.orders","schema":"public","table":"orders","entity_id":{"id":7},"old_data":{"id":7,"status":"paid"},"new_data":{"id":7,"status":"shipped"},"tx":{"xid":731,"commit_lsn":"0/1A2B3C8","index":3},"source":{"db":"shop","pg_lsn":"0/1A2B3A0"}}"#;
//! let mut encoder = Encoder::new(Format::Native, EncoderOptions::default());
//! let out = encoder.encode(UPDATE)?.expect("carried");
//! assert_eq!(out.value.as_deref(), Some(UPDATE));
//! assert_eq!(out.key.as_deref(), Some(&br#"{"id":7}"#[..]));
//! assert_eq!(out.id, "0/1A2B3C8:3");
//! # Ok::<(), spillway_core::encoding::EncodeError>(())
//! ```
//!
//! ## `debezium` / `debezium-schemaless`
//!
//! Debezium 3.x's envelope, identical to real Debezium output field by field (see
//! [`encoding::debezium`]). `debezium` wraps it as `{"schema":{…},"payload":…}` like Kafka
//! Connect's `JsonConverter`; `debezium-schemaless` is the bare payload:
//!
//! ```text
//! {"before":{"id":7,"status":"paid"},"after":{"id":7,"status":"shipped"},
//!  "source":{"version":"spillway-0.1.0","connector":"postgresql","name":"spillway",
//!   "ts_ms":1763683200123,"snapshot":"false","db":"shop",
//!   "sequence":"[\"27440072\",\"27440032\"]","ts_us":1763683200123456,
//!   "ts_ns":1763683200123456000,"schema":"public","table":"orders","txId":731,
//!   "lsn":27440032,"xmin":null,"origin":null,"origin_lsn":null},
//!  "transaction":null,"op":"u","ts_ms":…,"ts_us":…,"ts_ns":…}
//! ```
//!
//! with key `{"id":7}` (with schemas:
//! `{"schema":{"type":"struct","fields":[{"type":"int32","optional":false,"field":"id"}],"optional":false,"name":"spillway.public.orders.Key"},"payload":{"id":7}}`).
//!
//! ```
//! # use spillway_core::encoding::{Encoder, EncoderOptions, Format, PayloadTime};
//! # const SCHEMA_CHANGE: &[u8] = br#"{"type":"schema_change","lsn":1041,"id":"0/1A2B3C8:1","timestamp":1763683200123456,"entity":"public.orders","schema":"public","table":"orders","replica_identity":"full","columns":[{"name":"id","type":"int4","type_oid":23,"key":true},{"name":"status","type":"text","type_oid":25,"key":false}],"tx":{"xid":731,"commit_lsn":"0/1A2B3C8","index":1},"source":{"db":"shop","pg_lsn":"0/1A2B300"}}"#;
//! # const UPDATE: &[u8] = br#"{"type":"change","lsn":1042,"id":"0/1A2B3C8:3","timestamp":1763683200123456,"operation":"update","entity":"public.orders","schema":"public","table":"orders","entity_id":{"id":7},"old_data":{"id":7,"status":"paid"},"new_data":{"id":7,"status":"shipped"},"tx":{"xid":731,"commit_lsn":"0/1A2B3C8","index":3},"source":{"db":"shop","pg_lsn":"0/1A2B3A0"}}"#;
//! let mut encoder = Encoder::new(
//!     "debezium-schemaless".parse()?,
//!     EncoderOptions::default().with_payload_time(PayloadTime::CommitTime),
//! );
//! assert!(encoder.encode(SCHEMA_CHANGE)?.is_none()); // remembered, not carried
//! let out = encoder.encode(UPDATE)?.expect("carried");
//! let value: serde_json::Value = serde_json::from_slice(out.value.as_deref().unwrap())?;
//! assert_eq!(value["op"], "u");
//! assert_eq!(value["after"], serde_json::json!({"id": 7, "status": "shipped"}));
//! assert_eq!(value["source"]["lsn"], 27440032);
//! assert_eq!(value["source"]["sequence"], r#"["27440072","27440032"]"#);
//! assert_eq!(value["ts_us"], 1763683200123456_i64); // commit time, as requested
//! assert_eq!(out.key.as_deref(), Some(&br#"{"id":7}"#[..]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## `document`
//!
//! Reference 000's document-change message; `txnId` is the log `lsn` (see
//! [`encoding::document`]).
//!
//! ```
//! # use spillway_core::encoding::{Encoder, EncoderOptions, Format};
//! # const UPDATE: &[u8] = br#"{"type":"change","lsn":1042,"id":"0/1A2B3C8:3","timestamp":1763683200123456,"operation":"update","entity":"public.orders","schema":"public","table":"orders","entity_id":{"id":7},"old_data":{"id":7,"status":"paid"},"new_data":{"id":7,"status":"shipped"},"tx":{"xid":731,"commit_lsn":"0/1A2B3C8","index":3},"source":{"db":"shop","pg_lsn":"0/1A2B3A0"}}"#;
//! let mut encoder = Encoder::new(Format::Document, EncoderOptions::default());
//! let out = encoder.encode(UPDATE)?.expect("carried");
//! assert_eq!(
//!     out.value.as_deref(),
//!     Some(&br#"{"txnId":1042,"type":"documentChanged","collection":"public.orders","change":{"method":"update","oldValue":{"id":7,"status":"paid"},"newValue":{"id":7,"status":"shipped"}}}"#[..])
//! );
//! # Ok::<(), spillway_core::encoding::EncodeError>(())
//! ```
//!
//! ## `flat`
//!
//! Reference 001's row message; `ID` is a UUID v5 of the event id (see
//! [`encoding::flat`]).
//!
//! ```
//! # use spillway_core::encoding::{Encoder, EncoderOptions, Format};
//! # const UPDATE: &[u8] = br#"{"type":"change","lsn":1042,"id":"0/1A2B3C8:3","timestamp":1763683200123456,"operation":"update","entity":"public.orders","schema":"public","table":"orders","entity_id":{"id":7},"old_data":{"id":7,"status":"paid"},"new_data":{"id":7,"status":"shipped"},"tx":{"xid":731,"commit_lsn":"0/1A2B3C8","index":3},"source":{"db":"shop","pg_lsn":"0/1A2B3A0"}}"#;
//! let mut encoder = Encoder::new(Format::Flat, EncoderOptions::default());
//! let out = encoder.encode(UPDATE)?.expect("carried");
//! assert_eq!(
//!     out.value.as_deref(),
//!     Some(&br#"{"ID":"489a4bdc-26af-5100-ae0a-e9fafb2aac71","Schema":"public","Table":"orders","Action":"update","Data":{"id":7,"status":"shipped"},"DataOld":{"id":7,"status":"paid"},"EventTime":"2025-11-21T00:00:00.123456Z"}"#[..])
//! );
//! # Ok::<(), spillway_core::encoding::EncodeError>(())
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub mod encoding;
pub mod lsn;

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// A new row.
    Insert,
    /// A changed row.
    Update,
    /// A removed row.
    Delete,
    /// The table was emptied.
    Truncate,
    /// A snapshot row.
    Read,
}

/// Transaction context of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxInfo {
    /// PostgreSQL transaction id.
    pub xid: u32,
    /// LSN of the commit record, PostgreSQL's `X/Y` form.
    pub commit_lsn: String,
    /// 1-based ordinal of the event in its transaction.
    pub index: u32,
}

/// Where an event came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// Database name.
    pub db: String,
    /// WAL position of the change, `X/Y`.
    pub pg_lsn: String,
    /// Replication origin of the transaction, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// A column as announced by a `schema_change` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// Type name (`pg_type.typname`).
    #[serde(rename = "type")]
    pub type_name: String,
    /// Type OID.
    pub type_oid: u32,
    /// Part of the primary key (or replica identity).
    pub key: bool,
    /// Whether the column accepts NULL (`NOT attnotnull`), when the producer knows it.
    /// pgoutput does not carry it; encodings that need it (Debezium's `optional`) assume
    /// key columns are NOT NULL and all others nullable when it is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nullable: Option<bool>,
    /// The column default as `pg_get_expr(adbin, adrelid)` prints it (e.g.
    /// `nextval('orders_id_seq'::regclass)`), when the producer knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// `atttypmod` (e.g. the precision of `timestamp(3)` is 3), when the producer knows it;
    /// -1 or absent means "no modifier".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_modifier: Option<i32>,
}

/// Any event of the native stream, by its `type` field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A row change.
    Change(ChangeEvent),
    /// A table's columns changed (or were seen for the first time since start).
    SchemaChange(SchemaChangeEvent),
    /// A logical decoding message (`pg_logical_emit_message`).
    Message(MessageEvent),
    /// The requested position is no longer retained.
    RequeryRequired {
        /// What the consumer asked for.
        requested_lsn: u64,
        /// The oldest lsn still retained.
        oldest_lsn: u64,
        /// Why: `trimmed`, `ahead_of_log`, `log_rewound`, `log_gap`,
        /// `unknown_log_epoch` (absent from older servers).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// For a `log_gap` record: the log epoch that begins with it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log_epoch: Option<String>,
    },
    /// Stream keep-alive.
    Heartbeat {
        /// The log's current lsn.
        current_lsn: u64,
    },
}

/// A row change (SPEC §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// The log's sequence number.
    pub lsn: u64,
    /// Stable id: `<commit_lsn>:<index>`.
    pub id: String,
    /// Commit time, µs since the Unix epoch.
    pub timestamp: i64,
    /// What happened.
    pub operation: Operation,
    /// `schema.table`.
    pub entity: String,
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// Key columns.
    pub entity_id: Option<Map<String, Value>>,
    /// The row before, where PostgreSQL provides it.
    pub old_data: Option<Map<String, Value>>,
    /// The row after (null for deletes).
    pub new_data: Option<Map<String, Value>>,
    /// Columns whose unchanged TOAST value was not available.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchanged_toast: Vec<String>,
    /// Transaction context.
    pub tx: TxInfo,
    /// Source position.
    pub source: SourceInfo,
}

/// A table's shape (SPEC §3 control event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaChangeEvent {
    /// The log's sequence number.
    pub lsn: u64,
    /// Stable id.
    pub id: String,
    /// Commit time, µs.
    pub timestamp: i64,
    /// `schema.table`.
    pub entity: String,
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// `default`, `full`, `nothing` or `index`.
    pub replica_identity: String,
    /// Columns in order.
    pub columns: Vec<ColumnInfo>,
    /// Transaction context.
    pub tx: TxInfo,
    /// Source position.
    pub source: SourceInfo,
}

/// A logical decoding message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageEvent {
    /// The log's sequence number.
    pub lsn: u64,
    /// Stable id.
    pub id: String,
    /// Commit time (transactional) or last known commit time, µs.
    pub timestamp: i64,
    /// Emitted inside a transaction.
    pub transactional: bool,
    /// The message prefix.
    pub prefix: String,
    /// Content, when valid UTF-8.
    #[serde(default)]
    pub content: Option<String>,
    /// Content as base64, when not valid UTF-8.
    #[serde(default)]
    pub content_base64: Option<String>,
    /// Transaction context (null for non-transactional messages).
    pub tx: Option<TxInfo>,
    /// Source position.
    pub source: SourceInfo,
}

impl Event {
    /// Parses one NDJSON line.
    pub fn parse(line: &[u8]) -> Result<Event, serde_json::Error> {
        serde_json::from_slice(line)
    }

    /// The log lsn, for events stored in the log.
    pub fn lsn(&self) -> Option<u64> {
        match self {
            Event::Change(c) => Some(c.lsn),
            Event::SchemaChange(s) => Some(s.lsn),
            Event::Message(m) => Some(m.lsn),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_parses() {
        let line = br#"{"type":"change","lsn":1042,"id":"0/1A2B3C8:3","timestamp":1763683200123456,
 "operation":"update","entity":"public.orders","schema":"public","table":"orders",
 "entity_id":{"id":7},"old_data":{"id":7,"status":"paid"},"new_data":{"id":7,"status":"shipped"},
 "tx":{"xid":731,"commit_lsn":"0/1A2B3C8","index":3},"source":{"db":"shop","pg_lsn":"0/1A2B3A0"}}"#;
        let Event::Change(c) = Event::parse(line).unwrap() else {
            panic!("not a change")
        };
        assert_eq!(c.lsn, 1042);
        assert_eq!(c.operation, Operation::Update);
        assert_eq!(c.new_data.unwrap()["status"], "shipped");
        assert_eq!(c.tx.index, 3);
        let hb = Event::parse(br#"{"type":"heartbeat","current_lsn":5,"timestamp":1}"#).unwrap();
        assert_eq!(hb, Event::Heartbeat { current_lsn: 5 });
    }
}
