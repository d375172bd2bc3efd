//! [`EventView`]: a borrowed, order-preserving view of one stored (native JSON) event,
//! parsed once per event by whoever handles it — the sink runtime, the transforms, the
//! encodings, the HTTP stream.
//!
//! The typed model ([`crate::Event`]) turns rows into `serde_json::Map`, which sorts keys
//! and owns every value; encodings must keep column order and copy values byte for byte,
//! so the view keeps rows as `(column, raw JSON value)` lists borrowed from the input.
//! Every field is optional here; what a given event type needs is checked by the
//! accessors, which fail with a one-line [`MalformedEvent`].

use std::borrow::Cow;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::encoding::json::{write_compact, write_key};
use crate::{EventKind, Operation};

/// A stored event that lacks what its type needs, or is not a native event at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedEvent(pub String);

impl fmt::Display for MalformedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MalformedEvent {}

/// A row (or key): columns in their original order with their raw JSON values.
#[derive(Debug, Default)]
pub struct Row<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Row<'a> {
    /// The raw value of `column`, if the row has it.
    pub fn get(&self, column: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .find(|(name, _)| name.as_ref() == column)
            .map(|(_, v)| *v)
    }

    /// Appends the row as a compact JSON object, columns in order.
    pub fn write_json(&self, out: &mut String) {
        out.push('{');
        for (i, (name, value)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_key(out, name);
            write_compact(out, value.get());
        }
        out.push('}');
    }

    /// The row as compact JSON bytes.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(64);
        self.write_json(&mut out);
        out.into_bytes()
    }
}

#[derive(Deserialize)]
#[serde(transparent)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Row<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RowVisitor;
        impl<'de> Visitor<'de> for RowVisitor {
            type Value = Row<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of column values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Row<'de>, A::Error> {
                let mut cols = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Key(name)) = map.next_key::<Key<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    cols.push((name, value));
                }
                Ok(Row(cols))
            }
        }
        deserializer.deserialize_map(RowVisitor)
    }
}

/// `tx` of an event.
#[derive(Debug, Deserialize)]
pub struct TxView<'a> {
    /// PostgreSQL transaction id.
    pub xid: u64,
    /// The commit's LSN text (`X/Y`): the same for every event of one transaction.
    #[serde(borrow)]
    pub commit_lsn: Cow<'a, str>,
}

/// `source` of an event.
#[derive(Debug, Deserialize)]
pub struct SourceView<'a> {
    /// Database name.
    #[serde(borrow)]
    pub db: Cow<'a, str>,
    /// WAL position of the change, `X/Y`.
    #[serde(borrow)]
    pub pg_lsn: Cow<'a, str>,
    /// Replication origin, when the transaction had one.
    #[serde(default)]
    pub origin: Option<String>,
}

/// One column of a `schema_change` event (see [`crate::ColumnInfo`]).
#[derive(Debug, Clone, Deserialize)]
pub struct ColumnView {
    /// Column name.
    pub name: String,
    /// Type name.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Part of the key.
    #[serde(default)]
    pub key: bool,
    /// Whether NULL is allowed, when known.
    #[serde(default)]
    pub nullable: Option<bool>,
    /// The column default's expression, when known.
    #[serde(default)]
    pub default: Option<String>,
    /// `atttypmod`, when known.
    #[serde(default)]
    pub type_modifier: Option<i32>,
}

/// Any stored event; which fields are present depends on `type`.
#[derive(Debug, Deserialize)]
pub struct EventView<'a> {
    /// The raw `type` (see [`EventView::kind`]).
    #[serde(rename = "type", borrow)]
    pub type_name: Cow<'a, str>,
    /// The log lsn.
    pub lsn: Option<u64>,
    /// The stable id.
    #[serde(borrow)]
    pub id: Option<Cow<'a, str>>,
    /// Commit time, µs since the Unix epoch.
    pub timestamp: Option<i64>,
    #[serde(borrow)]
    operation: Option<Cow<'a, str>>,
    #[serde(borrow)]
    entity: Option<Cow<'a, str>>,
    #[serde(borrow)]
    schema: Option<Cow<'a, str>>,
    #[serde(borrow)]
    table: Option<Cow<'a, str>>,
    /// Key columns.
    #[serde(borrow)]
    pub entity_id: Option<Row<'a>>,
    /// The row before.
    #[serde(borrow)]
    pub old_data: Option<Row<'a>>,
    /// The row after.
    #[serde(borrow)]
    pub new_data: Option<Row<'a>>,
    /// Columns whose unchanged TOAST value was not available.
    #[serde(default, borrow)]
    pub unchanged_toast: Vec<Cow<'a, str>>,
    /// The transaction (null outside one).
    #[serde(borrow)]
    pub tx: Option<TxView<'a>>,
    /// Where it came from.
    #[serde(borrow)]
    pub source: Option<SourceView<'a>>,
    /// A `schema_change`'s columns.
    pub columns: Option<Vec<ColumnView>>,
    /// A `requery_required`'s requested lsn.
    pub requested_lsn: Option<u64>,
    /// A `requery_required`'s first lsn to go on with.
    pub oldest_lsn: Option<u64>,
    /// A `message`'s prefix.
    #[serde(borrow)]
    pub prefix: Option<Cow<'a, str>>,
    /// A `message`'s content (UTF-8).
    #[serde(borrow)]
    pub content: Option<Cow<'a, str>>,
    /// A `message`'s content (base64).
    #[serde(borrow)]
    pub content_base64: Option<Cow<'a, str>>,
}

fn missing(field: &str, kind: &str) -> MalformedEvent {
    MalformedEvent(format!("{kind} event has no {field:?} field"))
}

impl<'a> EventView<'a> {
    /// Parses one stored event.
    ///
    /// # Errors
    /// [`MalformedEvent`] when the bytes are not a JSON object with a `type`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, MalformedEvent> {
        serde_json::from_slice(bytes).map_err(|e| MalformedEvent(e.to_string()))
    }

    /// The event's kind.
    ///
    /// # Errors
    /// [`MalformedEvent`] for a `type` this version does not know.
    pub fn kind(&self) -> Result<EventKind, MalformedEvent> {
        EventKind::from_name(&self.type_name).ok_or_else(|| {
            MalformedEvent(format!(
                "unknown event type {:?} (expected change, schema_change, message, requery_required or heartbeat)",
                self.type_name
            ))
        })
    }

    /// The commit LSN text of the event's transaction, if it is in one.
    pub fn commit_lsn(&self) -> Option<&str> {
        self.tx.as_ref().map(|t| t.commit_lsn.as_ref())
    }

    /// The schema and table the event is about, if it names one (`schema` / `table`,
    /// or `entity` split at its first dot).
    pub fn schema_table(&self) -> Option<(&str, &str)> {
        match (&self.schema, &self.table, &self.entity) {
            (Some(s), Some(t), _) => Some((s.as_ref(), t.as_ref())),
            (_, _, Some(e)) => e.split_once('.'),
            _ => None,
        }
    }

    /// The operation of a change event, if it names a known one.
    pub fn operation_opt(&self) -> Option<Operation> {
        self.operation.as_deref().and_then(Operation::from_name)
    }

    /// The event id: the `id` field; `requery:<requested>:<oldest>` for a
    /// `requery_required` written before it carried one.
    ///
    /// # Errors
    /// [`MalformedEvent`] when an event of another type has none.
    pub fn event_id(&self) -> Result<String, MalformedEvent> {
        if let Some(id) = &self.id {
            return Ok(id.to_string());
        }
        if self.type_name.as_ref() == "requery_required" {
            return Ok(format!(
                "requery:{}:{}",
                self.requested_lsn.unwrap_or(0),
                self.oldest_lsn.unwrap_or(0)
            ));
        }
        Err(missing("id", &self.type_name))
    }

    /// The log lsn.
    ///
    /// # Errors
    /// [`MalformedEvent`] when absent.
    pub fn lsn(&self) -> Result<u64, MalformedEvent> {
        self.lsn.ok_or_else(|| missing("lsn", &self.type_name))
    }

    /// The commit time, µs.
    ///
    /// # Errors
    /// [`MalformedEvent`] when absent.
    pub fn timestamp(&self) -> Result<i64, MalformedEvent> {
        self.timestamp
            .ok_or_else(|| missing("timestamp", &self.type_name))
    }

    /// The operation of a change event.
    ///
    /// # Errors
    /// [`MalformedEvent`] when absent or unknown.
    pub fn operation(&self) -> Result<Operation, MalformedEvent> {
        let op = self
            .operation
            .as_deref()
            .ok_or_else(|| missing("operation", &self.type_name))?;
        Operation::from_name(op).ok_or_else(|| {
            MalformedEvent(format!(
                "unknown operation {op:?} (expected insert, update, delete, truncate or read)"
            ))
        })
    }

    /// The schema.
    ///
    /// # Errors
    /// [`MalformedEvent`] when absent.
    pub fn schema(&self) -> Result<&str, MalformedEvent> {
        self.schema
            .as_deref()
            .ok_or_else(|| missing("schema", &self.type_name))
    }

    /// The table.
    ///
    /// # Errors
    /// [`MalformedEvent`] when absent.
    pub fn table(&self) -> Result<&str, MalformedEvent> {
        self.table
            .as_deref()
            .ok_or_else(|| missing("table", &self.type_name))
    }

    /// The raw `entity` field.
    pub fn entity_opt(&self) -> Option<&str> {
        self.entity.as_deref()
    }

    /// `entity`, or `schema.table` when absent.
    ///
    /// # Errors
    /// [`MalformedEvent`] when neither is there.
    pub fn entity(&self) -> Result<Cow<'_, str>, MalformedEvent> {
        match &self.entity {
            Some(e) => Ok(Cow::Borrowed(e.as_ref())),
            None => Ok(Cow::Owned(format!("{}.{}", self.schema()?, self.table()?))),
        }
    }

    /// Where the event came from.
    ///
    /// # Errors
    /// [`MalformedEvent`] when absent.
    pub fn source(&self) -> Result<&SourceView<'a>, MalformedEvent> {
        self.source
            .as_ref()
            .ok_or_else(|| missing("source", &self.type_name))
    }

    /// The `entity_id` as compact JSON bytes, the message key of most encodings.
    pub fn entity_id_key(&self) -> Option<Vec<u8>> {
        self.entity_id.as_ref().map(Row::to_json_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_keep_column_order_and_raw_values() {
        let ev = EventView::parse(
            br#"{"type":"change","new_data":{"z":1,"a":"x\"y","m":[1, 2],"n":1.50}}"#,
        )
        .unwrap();
        let row = ev.new_data.unwrap();
        let names: Vec<_> = row.0.iter().map(|(n, _)| n.as_ref()).collect();
        assert_eq!(names, ["z", "a", "m", "n"]);
        assert_eq!(row.get("n").unwrap().get(), "1.50");
        assert_eq!(
            String::from_utf8(row.to_json_bytes()).unwrap(),
            r#"{"z":1,"a":"x\"y","m":[1,2],"n":1.50}"#
        );
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert!(EventView::parse(b"not json").is_err());
        assert!(EventView::parse(b"{}").is_err());
        let ev = EventView::parse(br#"{"type":"bogus"}"#).unwrap();
        assert!(ev.kind().is_err());
    }
}
