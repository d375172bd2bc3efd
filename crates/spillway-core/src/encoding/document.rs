//! The `document` encoding (reference 000): document-change messages with an
//! always-increasing `txnId`.
//!
//! | native event | document message |
//! |---|---|
//! | insert, read | `{"txnId","type":"documentChanged","collection","change":{"method":"upsert","oldValue":null,"newValue":new_data}}` |
//! | update | `… "change":{"method":"update","oldValue":old_data or null,"newValue":new_data}` |
//! | delete | `… "change":{"method":"remove","value":old_data, else entity_id, else null}` |
//! | truncate | `{"txnId","type":"requeryRequired","collection","documents":[]}` |
//! | requery_required | `{"txnId","type":"requeryRequired","documents":[]}` |
//! | schema_change, message, heartbeat | not carried (`None`) |
//!
//! - `txnId` is the change log's `lsn`: dense and strictly increasing, so it is "always
//!   increasing" across transactions and within one. For `requery_required` it is
//!   `oldest_lsn - 1`: the re-read covers everything up to it and the next change the
//!   consumer sees has `txnId = oldest_lsn`, so the sequence stays increasing.
//! - `collection` is the entity, `schema.table` (PostgreSQL's collection is a table, and
//!   two schemas can hold tables of the same name).
//! - A truncate empties the collection, which no change method can say; it becomes a
//!   `requeryRequired` scoped by `collection` (re-reading the table yields it empty). A
//!   consumer that ignores `collection` re-reads everything, which is still correct.
//! - `documents` of `requeryRequired` is deprecated upstream and always `[]`, as there.
//! - Columns named in the native `unchanged_toast` list are absent from `newValue`
//!   (unchanged, value not available).

use std::fmt::Write as _;

use super::json::{write_key, write_str};
use super::{EncodeError, KeyValue};
use crate::event::{EventKind as Kind, EventView};
use crate::Operation;

/// Encodes one event; `None` for events the format does not carry.
pub(crate) fn encode(ev: &EventView<'_>, kind: Kind) -> Result<Option<KeyValue>, EncodeError> {
    let mut out = String::with_capacity(256);
    match kind {
        Kind::Change => {
            let op = ev.operation()?;
            let _ = write!(out, "{{\"txnId\":{}", ev.lsn()?);
            if op == Operation::Truncate {
                out.push_str(",\"type\":\"requeryRequired\",\"collection\":");
                write_str(&mut out, &ev.entity()?);
                out.push_str(",\"documents\":[]}");
                return Ok(Some((None, out.into_bytes())));
            }
            out.push_str(",\"type\":\"documentChanged\",\"collection\":");
            write_str(&mut out, &ev.entity()?);
            out.push_str(",\"change\":{\"method\":");
            let write_row = |out: &mut String, row: Option<&crate::event::Row<'_>>| match row {
                Some(r) => r.write_json(out),
                None => out.push_str("null"),
            };
            match op {
                Operation::Insert | Operation::Read => {
                    out.push_str("\"upsert\",\"oldValue\":null,");
                    write_key(&mut out, "newValue");
                    write_row(&mut out, ev.new_data.as_ref());
                }
                Operation::Update => {
                    out.push_str("\"update\",");
                    write_key(&mut out, "oldValue");
                    write_row(&mut out, ev.old_data.as_ref());
                    out.push(',');
                    write_key(&mut out, "newValue");
                    write_row(&mut out, ev.new_data.as_ref());
                }
                Operation::Delete => {
                    out.push_str("\"remove\",");
                    write_key(&mut out, "value");
                    write_row(&mut out, ev.old_data.as_ref().or(ev.entity_id.as_ref()));
                }
                Operation::Truncate => {}
            }
            out.push_str("}}");
            Ok(Some((ev.entity_id_key(), out.into_bytes())))
        }
        Kind::RequeryRequired => {
            let oldest = ev.oldest_lsn.ok_or_else(|| {
                EncodeError::Malformed("requery_required event has no \"oldest_lsn\" field".into())
            })?;
            let _ = write!(
                out,
                "{{\"txnId\":{},\"type\":\"requeryRequired\",\"documents\":[]}}",
                oldest.saturating_sub(1)
            );
            Ok(Some((None, out.into_bytes())))
        }
        Kind::SchemaChange | Kind::Message | Kind::Heartbeat => Ok(None),
    }
}
