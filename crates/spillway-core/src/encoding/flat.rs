//! The `flat` encoding (reference 001): one self-contained row message,
//! `{"ID","Schema","Table","Action","Data","DataOld","EventTime"}`.
//!
//! - `ID` is a UUID version 5 of the event id in the namespace
//!   [`EVENT_ID_NAMESPACE`](super::uuid::EVENT_ID_NAMESPACE), so a redelivered event
//!   carries the same `ID` and anyone can recompute it from the native `id`.
//! - `Action`: `insert`, `update`, `delete`, `truncate`; a snapshot row (`read`) is an
//!   `insert` (the format has no snapshot action, and for a consumer building state it is one).
//! - `Data` is `new_data` (null for delete and truncate); `DataOld` is `old_data` (null
//!   when PostgreSQL did not provide it: inserts, updates without REPLICA IDENTITY FULL).
//!   Values are the native ones (numeric as exact strings, timestamps ISO-8601, …).
//! - `EventTime` is the commit time in RFC 3339 UTC with as many fractional digits as
//!   needed (Go's `time.RFC3339Nano`, what the reference's `time.Time` marshals to).
//! - schema_change, message, requery_required and heartbeat are not carried (`None`):
//!   the format has no way to say them; a sink must handle `requery_required` itself.

use super::json::{write_key, write_str};
use super::uuid::event_uuid;
use super::{EncodeError, KeyValue};
use crate::event::{EventKind as Kind, EventView, Row};
use crate::time::rfc3339_micros;
use crate::Operation;

/// Encodes one event; `None` for events the format does not carry.
pub(crate) fn encode(
    ev: &EventView<'_>,
    kind: Kind,
    id: &str,
) -> Result<Option<KeyValue>, EncodeError> {
    if kind != Kind::Change {
        return Ok(None);
    }
    let action = match ev.operation()? {
        Operation::Insert | Operation::Read => "insert",
        Operation::Update => "update",
        Operation::Delete => "delete",
        Operation::Truncate => "truncate",
    };
    let write_row = |out: &mut String, row: Option<&Row<'_>>| match row {
        Some(r) => r.write_json(out),
        None => out.push_str("null"),
    };
    let mut out = String::with_capacity(256);
    out.push('{');
    write_key(&mut out, "ID");
    write_str(&mut out, &event_uuid(id));
    out.push(',');
    write_key(&mut out, "Schema");
    write_str(&mut out, ev.schema()?);
    out.push(',');
    write_key(&mut out, "Table");
    write_str(&mut out, ev.table()?);
    out.push(',');
    write_key(&mut out, "Action");
    write_str(&mut out, action);
    out.push(',');
    write_key(&mut out, "Data");
    write_row(&mut out, ev.new_data.as_ref());
    out.push(',');
    write_key(&mut out, "DataOld");
    write_row(&mut out, ev.old_data.as_ref());
    out.push(',');
    write_key(&mut out, "EventTime");
    write_str(&mut out, &rfc3339_micros(ev.timestamp()?));
    out.push('}');
    Ok(Some((ev.entity_id_key(), out.into_bytes())))
}
