//! The change-event model shared by everything that *reads* events: the CLI, tests, and
//! (later) the Rust client and the sink encodings. No I/O.
//!
//! The capture path does not build these structs: it writes native JSON directly
//! (`spillway-pgoutput::event`) for speed. This module is the typed view of that JSON, and
//! its tests pin the field names of SPEC §3.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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
