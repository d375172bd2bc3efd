//! The `debezium` encoding: Debezium 3.x's PostgreSQL change-event envelope as the Kafka
//! Connect `JsonConverter` writes it (with `schemas.enable=true` for
//! [`Format::Debezium { schemas: true }`](super::Format::Debezium), the bare `payload`
//! otherwise). Checked field by field against real Debezium 3.6.3 output
//! (`tests/fixtures/debezium/`).
//!
//! Value: `{"schema":{…},"payload":{"before","after","source":{…},"transaction","op",
//! "ts_ms","ts_us","ts_ns"}}`; key: `{"schema":{…"name":"<prefix>.<schema>.<table>.Key"},
//! "payload":{<key columns>}}`. How each field is filled:
//!
//! | field | from the native event |
//! |---|---|
//! | `before` / `after` | `old_data` / `new_data`, every column of the table in column order; a column the row lacks is `null` (or the unavailable-value placeholder when it is in `unchanged_toast`) |
//! | `op` | insert `c`, update `u`, delete `d`, read `r`, truncate `t` |
//! | `source.version` | `spillway-<crate version>` (not Debezium's) |
//! | `source.name` | the prefix ([`EncoderOptions::prefix`](super::EncoderOptions::prefix)) |
//! | `source.ts_ms` / `ts_us` / `ts_ns` | commit time (`timestamp`) |
//! | `source.snapshot` | `"true"` for read, `"false"` otherwise |
//! | `source.db` / `schema` / `table` | `source.db` / `schema` / `table` |
//! | `source.sequence` | `"[\"<tx.commit_lsn>\",\"<source.pg_lsn>\"]"` as decimal LSNs (`null` first element without `tx`) |
//! | `source.txId` / `lsn` | `tx.xid` / `source.pg_lsn` as numbers |
//! | `source.xmin` / `origin_lsn` | `null` |
//! | `source.origin` | `source.origin` or `null` |
//! | `transaction` | `null` (Debezium's default `provide.transaction.metadata=false`) |
//! | `ts_ms` / `ts_us` / `ts_ns` | processing time by default, like Debezium ([`PayloadTime`]) |
//!
//! Decisions where Spillway cannot or does not copy Debezium:
//!
//! - `sequence`'s first element is Debezium's "last commit LSN processed before this
//!   event", which depends on where the connector happened to start. Spillway puts the
//!   event's own commit LSN there: deterministic across redeliveries and, like Debezium's,
//!   non-decreasing in stream order; the second element (the change's LSN) is the same.
//! - Schemas come from `schema_change` events. pgoutput does not say whether a column is
//!   nullable or has a default: without the optional `nullable` / `default` /
//!   `type_modifier` column fields ([`crate::ColumnInfo`]) key columns are
//!   `"optional":false`, all others `"optional":true`, no `default` is written, and
//!   `time`/`timestamp`/`timestamptz` assume the default precision 6.
//! - Types the native stream knows only by name (enums, domains, composites, extension
//!   types) are plain `string`s (Debezium sends enums as `io.debezium.data.Enum` with the
//!   allowed labels, which Spillway does not have). Arrays of types Debezium skips
//!   (`money[]`, `interval[]`, …) are sent as arrays rather than dropped.
//! - A change whose table has no `schema_change` yet (or with columns the last one did not
//!   list) gets a schema inferred from its JSON values (integer → `int64`, other numbers →
//!   `double`, string → `string`, object → `io.debezium.data.Json`, array → `array`).
//! - `truncate` is emitted (op `t`, `before`/`after` null, key `None`); Debezium skips it by
//!   default (`skipped.operations=t`); use the sink's `operations` filter to do the same.
//! - One native event gives one message. Debezium turns an update that changes the
//!   primary key into a delete (old key), a tombstone and a create (new key), and sends a
//!   tombstone (null value) after every delete (`tombstones.on.delete=true`); Spillway
//!   sends one `u` keyed by the new key and no tombstones (the native event has the old key
//!   in `old_data`, so splitting can be added when the encoder may return several messages).
//! - `message` events become Debezium's logical-decoding message (`op` `m`, key
//!   `{"prefix"}`; Debezium sends them to `<prefix>.message`). `schema_change`,
//!   `heartbeat` and `requery_required` are not carried (`None`): Debezium has nothing
//!   equivalent; a sink must handle `requery_required` itself.

mod types;
mod values;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::value::RawValue;

use self::types::{default_json, DbzType};
use self::values::{write_unavailable, write_value};
use super::json::{write_base64, write_key, write_str};
use super::parse_pg_lsn;
use super::{EncodeError, EncoderOptions, KeyValue, PayloadTime};
use crate::event::{ColumnView as ColumnDef, EventKind as Kind, EventView, Row};
use crate::Operation;

/// `source.version` of Spillway's Debezium events.
pub const SOURCE_VERSION: &str = concat!("spillway-", env!("CARGO_PKG_VERSION"));

/// The `io.debezium.connector.postgresql.Source` schema, as a struct field named `source`.
const SOURCE_SCHEMA: &str = r#"{"type":"struct","fields":[{"type":"string","optional":false,"field":"version"},{"type":"string","optional":false,"field":"connector"},{"type":"string","optional":false,"field":"name"},{"type":"int64","optional":false,"field":"ts_ms"},{"type":"string","optional":true,"name":"io.debezium.data.Enum","version":1,"parameters":{"allowed":"true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},"default":"false","field":"snapshot"},{"type":"string","optional":false,"field":"db"},{"type":"string","optional":true,"field":"sequence"},{"type":"int64","optional":true,"field":"ts_us"},{"type":"int64","optional":true,"field":"ts_ns"},{"type":"string","optional":false,"field":"schema"},{"type":"string","optional":false,"field":"table"},{"type":"int64","optional":true,"field":"txId"},{"type":"int64","optional":true,"field":"lsn"},{"type":"int64","optional":true,"field":"xmin"},{"type":"string","optional":true,"field":"origin"},{"type":"int64","optional":true,"field":"origin_lsn"}],"optional":false,"name":"io.debezium.connector.postgresql.Source","version":1,"field":"source"}"#;

/// The transaction block schema, as a struct field named `transaction`.
const TRANSACTION_SCHEMA: &str = r#"{"type":"struct","fields":[{"type":"string","optional":false,"field":"id"},{"type":"int64","optional":false,"field":"total_order"},{"type":"int64","optional":false,"field":"data_collection_order"}],"optional":true,"name":"event.block","version":1,"field":"transaction"}"#;

/// The envelope fields after `transaction`.
const ENVELOPE_TAIL_SCHEMA: &str = r#"{"type":"string","optional":false,"field":"op"},{"type":"int64","optional":true,"field":"ts_ms"},{"type":"int64","optional":true,"field":"ts_us"},{"type":"int64","optional":true,"field":"ts_ns"}"#;

/// Logical decoding message value schema (`io.debezium.connector.postgresql.MessageValue`).
fn message_value_schema() -> String {
    format!(
        r#"{{"type":"struct","fields":[{{"type":"string","optional":false,"field":"op"}},{{"type":"int64","optional":true,"field":"ts_ms"}},{SOURCE_SCHEMA},{TRANSACTION_SCHEMA},{{"type":"struct","fields":[{{"type":"string","optional":true,"field":"prefix"}},{{"type":"bytes","optional":true,"field":"content"}}],"optional":true,"name":"io.debezium.connector.postgresql.Message","version":1,"field":"message"}}],"optional":false,"name":"io.debezium.connector.postgresql.MessageValue","version":1}}"#
    )
}

const MESSAGE_KEY_SCHEMA: &str = r#"{"type":"struct","fields":[{"type":"string","optional":true,"field":"prefix"}],"optional":false,"name":"io.debezium.connector.postgresql.MessageKey","version":1}"#;

/// One column as Debezium represents it.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    ty: DbzType,
    optional: bool,
    /// JSON text of the schema `default`.
    default: Option<String>,
}

impl Column {
    fn from_def(def: &ColumnDef) -> Column {
        let ty = DbzType::from_pg(&def.type_name, def.type_modifier);
        let default = def
            .default
            .as_deref()
            .and_then(|expr| default_json(&def.type_name, &ty, expr));
        Column {
            name: def.name.clone(),
            optional: def.nullable.unwrap_or(!def.key),
            ty,
            default,
        }
    }

    /// A column known only from a value in an event.
    fn inferred(name: &str, sample: Option<&RawValue>, key: bool) -> Column {
        let ty = sample.map_or(DbzType::Text, infer_type);
        Column {
            name: name.to_owned(),
            ty,
            optional: !key,
            default: None,
        }
    }

    fn write_schema(&self, out: &mut String, optional: bool) {
        self.ty
            .write_schema(out, optional, self.default.as_deref(), Some(&self.name));
    }
}

fn infer_type(raw: &RawValue) -> DbzType {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') | Some(b'n') | None => DbzType::Text,
        Some(b't' | b'f') => DbzType::Bool,
        Some(b'{') => DbzType::Json,
        Some(b'[') => {
            let first = serde_json::from_str::<Vec<&RawValue>>(text)
                .ok()
                .and_then(|items| items.into_iter().find(|v| v.get() != "null"));
            DbzType::Array(Box::new(first.map_or(DbzType::Text, infer_type)))
        }
        _ if text.bytes().all(|b| b.is_ascii_digit() || b == b'-') => DbzType::Int64,
        _ => DbzType::Float64,
    }
}

/// A table as Debezium describes it, with its schema JSON prepared once.
#[derive(Debug)]
struct Table {
    columns: Vec<Column>,
    /// Column name → position in `columns`.
    positions: HashMap<String, usize>,
    /// The whole value `schema` object.
    envelope_schema: String,
    /// The key `schema` object and the key column order it was built for.
    key_schema: Option<(Vec<String>, String)>,
}

impl Table {
    fn new(prefix: &str, schema: &str, table: &str, columns: Vec<Column>) -> Table {
        let mut value = String::with_capacity(256 + columns.len() * 64);
        value.push_str(r#"{"type":"struct","fields":["#);
        for (i, c) in columns.iter().enumerate() {
            if i > 0 {
                value.push(',');
            }
            c.write_schema(&mut value, c.optional);
        }
        value.push_str(r#"],"optional":true,"name":"#);
        write_str(&mut value, &format!("{prefix}.{schema}.{table}.Value"));
        let mut envelope = String::with_capacity(value.len() * 2 + 1600);
        envelope.push_str(r#"{"type":"struct","fields":["#);
        for field in ["before", "after"] {
            envelope.push_str(&value);
            envelope.push_str(",\"field\":");
            write_str(&mut envelope, field);
            envelope.push_str("},");
        }
        envelope.push_str(SOURCE_SCHEMA);
        envelope.push(',');
        envelope.push_str(TRANSACTION_SCHEMA);
        envelope.push(',');
        envelope.push_str(ENVELOPE_TAIL_SCHEMA);
        envelope.push_str(r#"],"optional":false,"name":"#);
        write_str(
            &mut envelope,
            &format!("{prefix}.{schema}.{table}.Envelope"),
        );
        envelope.push_str(r#","version":2}"#);
        let positions = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        Table {
            columns,
            positions,
            envelope_schema: envelope,
            key_schema: None,
        }
    }

    fn column(&self, name: &str) -> Option<&Column> {
        self.positions.get(name).and_then(|&i| self.columns.get(i))
    }

    /// The key schema for key columns in the order of `key`.
    fn key_schema(&mut self, prefix: &str, schema: &str, table: &str, key: &Row<'_>) -> &str {
        let fresh = match &self.key_schema {
            Some((names, _)) => {
                names.len() != key.0.len()
                    || names.iter().zip(&key.0).any(|(a, (b, _))| a != b.as_ref())
            }
            None => true,
        };
        if fresh {
            let mut s = String::from(r#"{"type":"struct","fields":["#);
            for (i, (name, raw)) in key.0.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                match self.column(name) {
                    Some(c) => c.write_schema(&mut s, false),
                    None => Column::inferred(name, Some(raw), true).write_schema(&mut s, false),
                }
            }
            s.push_str(r#"],"optional":false,"name":"#);
            write_str(&mut s, &format!("{prefix}.{schema}.{table}.Key"));
            s.push('}');
            let names = key.0.iter().map(|(n, _)| n.to_string()).collect();
            self.key_schema = Some((names, s));
        }
        self.key_schema.as_ref().map_or("", |(_, s)| s.as_str())
    }
}

/// State of the Debezium encoder: the tables seen in `schema_change` events.
#[derive(Debug)]
pub(crate) struct Debezium {
    schemas: bool,
    prefix: String,
    payload_time: PayloadTime,
    tables: HashMap<String, Table>,
}

/// Times in ms, µs and ns.
#[derive(Debug, Clone, Copy)]
struct Instant3 {
    ms: i64,
    us: i64,
    ns: i64,
}

impl Instant3 {
    fn from_micros(us: i64) -> Instant3 {
        Instant3 {
            ms: us.div_euclid(1000),
            us,
            ns: us.saturating_mul(1000),
        }
    }

    fn now() -> Instant3 {
        let ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        Instant3 {
            ms: ns / 1_000_000,
            us: ns / 1000,
            ns,
        }
    }
}

impl Debezium {
    pub(crate) fn new(schemas: bool, options: &EncoderOptions) -> Debezium {
        Debezium {
            schemas,
            prefix: options.prefix.clone(),
            payload_time: options.payload_time,
            tables: HashMap::new(),
        }
    }

    pub(crate) fn schemas(&self) -> bool {
        self.schemas
    }

    pub(crate) fn encode(
        &mut self,
        ev: &EventView<'_>,
        kind: Kind,
    ) -> Result<Option<KeyValue>, EncodeError> {
        match kind {
            Kind::SchemaChange => {
                let columns = ev.columns.as_ref().ok_or_else(|| {
                    EncodeError::Malformed("schema_change event has no \"columns\" field".into())
                })?;
                let columns = columns.iter().map(Column::from_def).collect();
                let table = Table::new(&self.prefix, ev.schema()?, ev.table()?, columns);
                self.tables.insert(ev.entity()?.into_owned(), table);
                Ok(None)
            }
            Kind::Change => self.change(ev).map(Some),
            Kind::Message => self.message(ev).map(Some),
            Kind::RequeryRequired | Kind::Heartbeat => Ok(None),
        }
    }

    fn payload_time(&self, commit: Instant3) -> Instant3 {
        match self.payload_time {
            PayloadTime::EncodeTime => Instant3::now(),
            PayloadTime::CommitTime => commit,
        }
    }

    fn change(&mut self, ev: &EventView<'_>) -> Result<KeyValue, EncodeError> {
        let op = ev.operation()?;
        let (schema, table_name) = (ev.schema()?, ev.table()?);
        let entity = ev.entity()?;
        let commit = Instant3::from_micros(ev.timestamp()?);
        let payload_time = self.payload_time(commit);

        // The table's columns, plus any the event has that the schema does not.
        let mut extra: Vec<Column> = Vec::new();
        let known = self.tables.get(entity.as_ref());
        for row in [&ev.new_data, &ev.old_data, &ev.entity_id]
            .into_iter()
            .flatten()
        {
            for (name, raw) in &row.0 {
                let listed = known.is_some_and(|t| t.column(name).is_some())
                    || extra.iter().any(|c| c.name == name.as_ref());
                if !listed {
                    let key = ev.entity_id.as_ref().is_some_and(|k| k.get(name).is_some());
                    extra.push(Column::inferred(name, Some(raw), key));
                }
            }
        }
        let mut adhoc;
        let table: &mut Table = if extra.is_empty() && known.is_some() {
            self.tables
                .get_mut(entity.as_ref())
                .ok_or_else(|| EncodeError::Malformed("table cache lost an entry".into()))?
        } else {
            let mut columns = known.map(|t| t.columns.clone()).unwrap_or_default();
            columns.append(&mut extra);
            adhoc = Table::new(&self.prefix, schema, table_name, columns);
            &mut adhoc
        };

        let value_error = |column: &str, message: String| EncodeError::Value {
            entity: entity.to_string(),
            column: column.to_owned(),
            message,
        };

        // Key.
        let key = match (&ev.entity_id, op) {
            (Some(key_row), op) if op != Operation::Truncate => {
                let mut k = String::with_capacity(64);
                if self.schemas {
                    k.push_str("{\"schema\":");
                    k.push_str(table.key_schema(&self.prefix, schema, table_name, key_row));
                    k.push_str(",\"payload\":");
                }
                k.push('{');
                for (i, (name, raw)) in key_row.0.iter().enumerate() {
                    if i > 0 {
                        k.push(',');
                    }
                    write_key(&mut k, name);
                    let ty = table.column(name).map_or(&DbzType::Text, |c| &c.ty);
                    write_value(&mut k, ty, raw).map_err(|m| value_error(name, m))?;
                }
                k.push('}');
                if self.schemas {
                    k.push('}');
                }
                Some(k.into_bytes())
            }
            _ => None,
        };

        // Value.
        let mut out = String::with_capacity(
            512 + if self.schemas {
                table.envelope_schema.len()
            } else {
                0
            },
        );
        if self.schemas {
            out.push_str("{\"schema\":");
            out.push_str(&table.envelope_schema);
            out.push_str(",\"payload\":");
        }
        let toast: &[Cow<'_, str>] = &ev.unchanged_toast;
        out.push_str("{\"before\":");
        write_row(&mut out, table, ev.old_data.as_ref(), &[])
            .map_err(|(c, m)| value_error(&c, m))?;
        out.push_str(",\"after\":");
        write_row(&mut out, table, ev.new_data.as_ref(), toast)
            .map_err(|(c, m)| value_error(&c, m))?;
        out.push_str(",\"source\":");
        let snapshot = if op == Operation::Read {
            "true"
        } else {
            "false"
        };
        self.write_source(&mut out, ev, schema, table_name, snapshot, commit)?;
        out.push_str(",\"transaction\":null,\"op\":");
        write_str(
            &mut out,
            match op {
                Operation::Insert => "c",
                Operation::Update => "u",
                Operation::Delete => "d",
                Operation::Read => "r",
                Operation::Truncate => "t",
            },
        );
        let _ = write!(
            out,
            ",\"ts_ms\":{},\"ts_us\":{},\"ts_ns\":{}}}",
            payload_time.ms, payload_time.us, payload_time.ns
        );
        if self.schemas {
            out.push('}');
        }
        Ok((key, out.into_bytes()))
    }

    fn message(&self, ev: &EventView<'_>) -> Result<KeyValue, EncodeError> {
        let commit = Instant3::from_micros(ev.timestamp()?);
        let payload_time = self.payload_time(commit);
        let prefix = ev.prefix.as_deref();

        let mut key = String::new();
        if self.schemas {
            key.push_str("{\"schema\":");
            key.push_str(MESSAGE_KEY_SCHEMA);
            key.push_str(",\"payload\":");
        }
        key.push_str("{\"prefix\":");
        match prefix {
            Some(p) => write_str(&mut key, p),
            None => key.push_str("null"),
        }
        key.push('}');
        if self.schemas {
            key.push('}');
        }

        let mut out = String::with_capacity(256);
        if self.schemas {
            out.push_str("{\"schema\":");
            out.push_str(&message_value_schema());
            out.push_str(",\"payload\":");
        }
        let _ = write!(
            out,
            "{{\"op\":\"m\",\"ts_ms\":{},\"source\":",
            payload_time.ms
        );
        self.write_source(&mut out, ev, "", "", "false", commit)?;
        out.push_str(",\"transaction\":null,\"message\":{\"prefix\":");
        match prefix {
            Some(p) => write_str(&mut out, p),
            None => out.push_str("null"),
        }
        out.push_str(",\"content\":");
        match (&ev.content_base64, &ev.content) {
            (Some(b64), _) => write_str(&mut out, b64),
            (None, Some(text)) => {
                out.push('"');
                write_base64(&mut out, text.as_bytes());
                out.push('"');
            }
            (None, None) => out.push_str("null"),
        }
        out.push_str("}}");
        if self.schemas {
            out.push('}');
        }
        Ok((Some(key.into_bytes()), out.into_bytes()))
    }

    fn write_source(
        &self,
        out: &mut String,
        ev: &EventView<'_>,
        schema: &str,
        table: &str,
        snapshot: &str,
        commit: Instant3,
    ) -> Result<(), EncodeError> {
        let source = ev.source()?;
        let lsn = parse_pg_lsn(&source.pg_lsn)?;
        let commit_lsn = match &ev.tx {
            Some(tx) => Some(parse_pg_lsn(&tx.commit_lsn)?),
            None => None,
        };
        out.push_str("{\"version\":");
        write_str(out, SOURCE_VERSION);
        out.push_str(",\"connector\":\"postgresql\",\"name\":");
        write_str(out, &self.prefix);
        let _ = write!(out, ",\"ts_ms\":{},\"snapshot\":", commit.ms);
        write_str(out, snapshot);
        out.push_str(",\"db\":");
        write_str(out, &source.db);
        out.push_str(",\"sequence\":");
        let sequence = match commit_lsn {
            Some(c) => format!("[\"{c}\",\"{lsn}\"]"),
            None => format!("[null,\"{lsn}\"]"),
        };
        write_str(out, &sequence);
        let _ = write!(
            out,
            ",\"ts_us\":{},\"ts_ns\":{},\"schema\":",
            commit.us, commit.ns
        );
        write_str(out, schema);
        out.push_str(",\"table\":");
        write_str(out, table);
        match &ev.tx {
            Some(tx) => {
                let _ = write!(out, ",\"txId\":{}", tx.xid);
            }
            None => out.push_str(",\"txId\":null"),
        }
        let _ = write!(out, ",\"lsn\":{lsn},\"xmin\":null,\"origin\":");
        match &source.origin {
            Some(origin) => write_str(out, origin),
            None => out.push_str("null"),
        }
        out.push_str(",\"origin_lsn\":null}");
        Ok(())
    }
}

/// Appends `before`/`after`: every column of `table` in order, or `null` without a row.
fn write_row(
    out: &mut String,
    table: &Table,
    row: Option<&Row<'_>>,
    unchanged_toast: &[Cow<'_, str>],
) -> Result<(), (String, String)> {
    let Some(row) = row else {
        out.push_str("null");
        return Ok(());
    };
    out.push('{');
    for (i, column) in table.columns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_key(out, &column.name);
        // Rows normally list the columns in table order: try the same position first.
        let raw = match row.0.get(i) {
            Some((name, raw)) if name.as_ref() == column.name => Some(*raw),
            _ => row.get(&column.name),
        };
        match raw {
            Some(raw) => write_value(out, &column.ty, raw).map_err(|m| (column.name.clone(), m))?,
            None if unchanged_toast.iter().any(|c| c.as_ref() == column.name) => {
                write_unavailable(out, &column.ty);
            }
            None => out.push_str("null"),
        }
    }
    out.push('}');
    Ok(())
}

#[cfg(test)]
mod tests;
