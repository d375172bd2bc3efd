//! A borrowed, order-preserving view of one native event, as the encodings read it.
//!
//! The typed model in the crate root ([`crate::Event`]) turns rows into `serde_json::Map`,
//! which sorts keys; encodings must keep column order and must copy values byte for byte,
//! so they parse into [`NativeEvent`] instead: rows are `(column, raw JSON value)` lists
//! borrowed from the input. Every field is optional here; what a given event type needs is
//! checked by the accessors, which fail with a one-line [`EncodeError::Malformed`].

use std::borrow::Cow;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::json::{write_compact, write_key};
use super::EncodeError;
use crate::Operation;

/// A row (or key): columns in their original order with their raw JSON values.
#[derive(Debug, Default)]
pub(crate) struct Row<'a>(pub(crate) Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Row<'a> {
    /// The raw value of `column`, if the row has it.
    pub(crate) fn get(&self, column: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .find(|(name, _)| name.as_ref() == column)
            .map(|(_, v)| *v)
    }

    /// Appends the row as a compact JSON object, columns in order.
    pub(crate) fn write_json(&self, out: &mut String) {
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
    pub(crate) fn to_json_bytes(&self) -> Vec<u8> {
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

/// `tx` of a native event.
#[derive(Debug, Deserialize)]
pub(crate) struct Tx<'a> {
    pub(crate) xid: u64,
    #[serde(borrow)]
    pub(crate) commit_lsn: Cow<'a, str>,
}

/// `source` of a native event.
#[derive(Debug, Deserialize)]
pub(crate) struct Source<'a> {
    #[serde(borrow)]
    pub(crate) db: Cow<'a, str>,
    #[serde(borrow)]
    pub(crate) pg_lsn: Cow<'a, str>,
    #[serde(default)]
    pub(crate) origin: Option<String>,
}

/// One column of a `schema_change` event (see [`crate::ColumnInfo`]).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ColumnDef {
    pub(crate) name: String,
    #[serde(rename = "type")]
    pub(crate) type_name: String,
    #[serde(default)]
    pub(crate) key: bool,
    #[serde(default)]
    pub(crate) nullable: Option<bool>,
    #[serde(default)]
    pub(crate) default: Option<String>,
    #[serde(default)]
    pub(crate) type_modifier: Option<i32>,
}

/// Any native event; which fields are present depends on `type`.
#[derive(Debug, Deserialize)]
pub(crate) struct NativeEvent<'a> {
    #[serde(rename = "type", borrow)]
    pub(crate) kind: Cow<'a, str>,
    pub(crate) lsn: Option<u64>,
    #[serde(borrow)]
    pub(crate) id: Option<Cow<'a, str>>,
    pub(crate) timestamp: Option<i64>,
    #[serde(borrow)]
    operation: Option<Cow<'a, str>>,
    #[serde(borrow)]
    entity: Option<Cow<'a, str>>,
    #[serde(borrow)]
    schema: Option<Cow<'a, str>>,
    #[serde(borrow)]
    table: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) entity_id: Option<Row<'a>>,
    #[serde(borrow)]
    pub(crate) old_data: Option<Row<'a>>,
    #[serde(borrow)]
    pub(crate) new_data: Option<Row<'a>>,
    #[serde(default, borrow)]
    pub(crate) unchanged_toast: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) tx: Option<Tx<'a>>,
    #[serde(borrow)]
    pub(crate) source: Option<Source<'a>>,
    pub(crate) columns: Option<Vec<ColumnDef>>,
    pub(crate) requested_lsn: Option<u64>,
    pub(crate) oldest_lsn: Option<u64>,
    #[serde(borrow)]
    pub(crate) prefix: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) content_base64: Option<Cow<'a, str>>,
}

/// The event types of the native stream (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Change,
    SchemaChange,
    Message,
    RequeryRequired,
    Heartbeat,
}

fn missing(field: &str, kind: &str) -> EncodeError {
    EncodeError::Malformed(format!("{kind} event has no {field:?} field"))
}

impl<'a> NativeEvent<'a> {
    /// Parses one native event.
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Self, EncodeError> {
        serde_json::from_slice(bytes).map_err(|e| EncodeError::Malformed(e.to_string()))
    }

    pub(crate) fn kind(&self) -> Result<Kind, EncodeError> {
        Ok(match self.kind.as_ref() {
            "change" => Kind::Change,
            "schema_change" => Kind::SchemaChange,
            "message" => Kind::Message,
            "requery_required" => Kind::RequeryRequired,
            "heartbeat" => Kind::Heartbeat,
            other => {
                return Err(EncodeError::Malformed(format!(
                    "unknown event type {other:?} (expected change, schema_change, message, requery_required or heartbeat)"
                )))
            }
        })
    }

    /// The event id: the `id` field of log events; `requery:<requested>:<oldest>` for
    /// `requery_required` (which the log does not store, so it has none).
    pub(crate) fn event_id(&self) -> Result<String, EncodeError> {
        if let Some(id) = &self.id {
            return Ok(id.to_string());
        }
        if self.kind.as_ref() == "requery_required" {
            return Ok(format!(
                "requery:{}:{}",
                self.requested_lsn.unwrap_or(0),
                self.oldest_lsn.unwrap_or(0)
            ));
        }
        Err(missing("id", &self.kind))
    }

    pub(crate) fn lsn(&self) -> Result<u64, EncodeError> {
        self.lsn.ok_or_else(|| missing("lsn", &self.kind))
    }

    pub(crate) fn timestamp(&self) -> Result<i64, EncodeError> {
        self.timestamp
            .ok_or_else(|| missing("timestamp", &self.kind))
    }

    pub(crate) fn operation(&self) -> Result<Operation, EncodeError> {
        let op = self
            .operation
            .as_deref()
            .ok_or_else(|| missing("operation", &self.kind))?;
        Ok(match op {
            "insert" => Operation::Insert,
            "update" => Operation::Update,
            "delete" => Operation::Delete,
            "truncate" => Operation::Truncate,
            "read" => Operation::Read,
            other => {
                return Err(EncodeError::Malformed(format!(
                "unknown operation {other:?} (expected insert, update, delete, truncate or read)"
            )))
            }
        })
    }

    pub(crate) fn schema(&self) -> Result<&str, EncodeError> {
        self.schema
            .as_deref()
            .ok_or_else(|| missing("schema", &self.kind))
    }

    pub(crate) fn table(&self) -> Result<&str, EncodeError> {
        self.table
            .as_deref()
            .ok_or_else(|| missing("table", &self.kind))
    }

    /// `entity`, or `schema.table` when absent.
    pub(crate) fn entity(&self) -> Result<Cow<'_, str>, EncodeError> {
        match &self.entity {
            Some(e) => Ok(Cow::Borrowed(e.as_ref())),
            None => Ok(Cow::Owned(format!("{}.{}", self.schema()?, self.table()?))),
        }
    }

    pub(crate) fn source(&self) -> Result<&Source<'a>, EncodeError> {
        self.source
            .as_ref()
            .ok_or_else(|| missing("source", &self.kind))
    }

    /// The `entity_id` as compact JSON bytes, the message key of most encodings.
    pub(crate) fn entity_id_key(&self) -> Option<Vec<u8>> {
        self.entity_id.as_ref().map(Row::to_json_bytes)
    }
}

/// Parses PostgreSQL's `X/Y` LSN text (two hex numbers) into its 64-bit value.
pub(crate) fn parse_pg_lsn(text: &str) -> Result<u64, EncodeError> {
    crate::lsn::parse_pg_lsn(text).ok_or_else(|| {
        EncodeError::Malformed(format!("{text:?} is not a PostgreSQL LSN (X/Y in hex)"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_keep_column_order_and_raw_values() {
        let ev = NativeEvent::parse(
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
    fn lsn_text_parses() {
        assert_eq!(parse_pg_lsn("0/19B5EA8").unwrap(), 26_959_528);
        assert_eq!(parse_pg_lsn("1/0").unwrap(), 1 << 32);
        assert!(parse_pg_lsn("0x12").is_err());
        assert!(parse_pg_lsn("G/1").is_err());
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert!(NativeEvent::parse(b"not json").is_err());
        assert!(NativeEvent::parse(b"{}").is_err());
        let ev = NativeEvent::parse(br#"{"type":"bogus"}"#).unwrap();
        assert!(ev.kind().is_err());
    }
}
