//! The change event: its one vocabulary ([`Operation`], [`EventKind`]), the typed model
//! ([`Event`] and its parts, for code that reads events: the CLI, tests, the Rust
//! client), the control events with one shape each ([`RequeryRequired`], [`Heartbeat`]),
//! and [`EventView`], the borrowed view of a stored event that sinks, transforms, the
//! encodings and the HTTP stream parse once per event.
//!
//! The capture path does not build these structs: it writes native JSON directly
//! (`spillway-pgoutput::event`) for speed. The typed model is the view of that JSON, and
//! its tests pin the field names of SPEC §3.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

mod control;
mod view;

pub use control::{Heartbeat, RequeryReason, RequeryRequired};
pub use view::{ColumnView, EventView, MalformedEvent, Row, SourceView, TxView};

/// What happened to a row.
///
/// The one list of operations: configuration (`tables`, `operations`), the API's
/// `operations=` parameter, the capture filter and every encoding use it. Match on it
/// with all five arms; `Read` is a row a snapshot read, not a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// A new row (`INSERT`).
    Insert,
    /// A changed row (`UPDATE`).
    Update,
    /// A removed row (`DELETE`).
    Delete,
    /// The table was emptied (`TRUNCATE`).
    Truncate,
    /// A row as a snapshot read it.
    Read,
}

impl Operation {
    /// Every operation, in declaration order.
    pub const ALL: [Operation; 5] = [
        Operation::Insert,
        Operation::Update,
        Operation::Delete,
        Operation::Truncate,
        Operation::Read,
    ];

    /// The operations PostgreSQL's WAL carries (everything but [`Operation::Read`]).
    pub const WAL: [Operation; 4] = [
        Operation::Insert,
        Operation::Update,
        Operation::Delete,
        Operation::Truncate,
    ];

    /// The name in events and configuration: `insert`, `update`, `delete`, `truncate`,
    /// `read`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Insert => "insert",
            Operation::Update => "update",
            Operation::Delete => "delete",
            Operation::Truncate => "truncate",
            Operation::Read => "read",
        }
    }

    /// The operation named `name` (exactly as [`Operation::as_str`] writes it).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.as_str() == name)
    }

    /// Parses a list of names; the error names the first unknown one and the choices
    /// (`of`: the operations allowed here, e.g. [`Operation::WAL`]).
    pub fn parse_list<S: AsRef<str>>(
        names: &[S],
        of: &[Operation],
    ) -> Result<Vec<Operation>, UnknownOperation> {
        names
            .iter()
            .map(|n| {
                Operation::from_name(n.as_ref())
                    .filter(|op| of.contains(op))
                    .ok_or_else(|| UnknownOperation {
                        name: n.as_ref().to_owned(),
                        allowed: of.to_vec(),
                    })
            })
            .collect()
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Operation {
    type Err = UnknownOperation;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Operation::from_name(s).ok_or_else(|| UnknownOperation {
            name: s.to_owned(),
            allowed: Operation::ALL.to_vec(),
        })
    }
}

/// An operation name that is not one of the allowed ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownOperation {
    /// What was given.
    pub name: String,
    /// What is allowed where it was given.
    pub allowed: Vec<Operation>,
}

impl fmt::Display for UnknownOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown operation `{}`; use ", self.name)?;
        for (i, op) in self.allowed.iter().enumerate() {
            if i > 0 {
                f.write_str(if i + 1 == self.allowed.len() {
                    " or "
                } else {
                    ", "
                })?;
            }
            f.write_str(op.as_str())?;
        }
        Ok(())
    }
}

impl std::error::Error for UnknownOperation {}

/// The `type` of an event (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `change`: a row change.
    Change,
    /// `schema_change`: a table's columns, announced before its first change.
    SchemaChange,
    /// `message`: a logical decoding message.
    Message,
    /// `requery_required`: events are missing before the next one ([`RequeryRequired`]).
    RequeryRequired,
    /// `heartbeat`: the stream is alive ([`Heartbeat`]); never stored in the log.
    Heartbeat,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 5] = [
        EventKind::Change,
        EventKind::SchemaChange,
        EventKind::Message,
        EventKind::RequeryRequired,
        EventKind::Heartbeat,
    ];

    /// The `type` field's value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Change => "change",
            EventKind::SchemaChange => "schema_change",
            EventKind::Message => "message",
            EventKind::RequeryRequired => "requery_required",
            EventKind::Heartbeat => "heartbeat",
        }
    }

    /// The kind whose `type` is `name`.
    #[must_use]
    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
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
    /// Events are missing before the next one: re-read the source ([`RequeryRequired`]).
    RequeryRequired(RequeryRequired),
    /// Stream keep-alive ([`Heartbeat`]).
    Heartbeat(Heartbeat),
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

    /// The log lsn, for events stored in the log (a `requery_required` only when the log
    /// itself holds it).
    pub fn lsn(&self) -> Option<u64> {
        match self {
            Event::Change(c) => Some(c.lsn),
            Event::SchemaChange(s) => Some(s.lsn),
            Event::Message(m) => Some(m.lsn),
            Event::RequeryRequired(r) => r.lsn,
            Event::Heartbeat(_) => None,
        }
    }

    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Change(_) => EventKind::Change,
            Event::SchemaChange(_) => EventKind::SchemaChange,
            Event::Message(_) => EventKind::Message,
            Event::RequeryRequired(_) => EventKind::RequeryRequired,
            Event::Heartbeat(_) => EventKind::Heartbeat,
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
        assert_eq!(
            hb,
            Event::Heartbeat(Heartbeat {
                current_lsn: 5,
                scanned_lsn: None,
                timestamp: 1
            })
        );
        let rq = Event::parse(
            br#"{"type":"requery_required","id":"requery:2:9","timestamp":1,"requested_lsn":2,"oldest_lsn":9,"reason":"trimmed"}"#,
        )
        .unwrap();
        let Event::RequeryRequired(rq) = rq else {
            panic!("not a requery")
        };
        assert_eq!(rq.reason, Some(RequeryReason::Trimmed));
        assert_eq!(rq.oldest_lsn, 9);
    }

    #[test]
    fn operations_have_one_list() {
        for op in Operation::ALL {
            assert_eq!(op.as_str().parse::<Operation>(), Ok(op));
            let json = serde_json::to_string(&op).unwrap();
            assert_eq!(json, format!("\"{op}\""));
        }
        let err = Operation::parse_list(&["insert", "read"], &Operation::WAL).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown operation `read`; use insert, update, delete or truncate"
        );
        assert_eq!(
            "upsert".parse::<Operation>().unwrap_err().to_string(),
            "unknown operation `upsert`; use insert, update, delete, truncate or read"
        );
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_name(kind.as_str()), Some(kind));
        }
    }
}
