//! Event encodings: how a sink writes one native event (SPEC §3).
//!
//! ```text
//!  native event bytes (as stored in the log)
//!        │
//!        ▼
//!  Encoder::encode ──▶ Option<Encoded { key, value, id }>
//!   (stateful: remembers each table's columns from its schema_change events)
//! ```
//!
//! | format (`format = …`) | value | key | carries |
//! |---|---|---|---|
//! | `native` (default) | the event bytes unchanged | `entity_id` | every event except `heartbeat` |
//! | `debezium` | Debezium's envelope with its `schema` part | Debezium key with schema | changes, logical messages |
//! | `debezium-schemaless` | the same without `schema` (the bare `payload`) | bare key payload | changes, logical messages |
//! | `document` | reference 000's document-change message | `entity_id` | changes, `requery_required` |
//! | `flat` | reference 001's `{ID, Schema, Table, Action, Data, DataOld, EventTime}` | `entity_id` | changes |
//!
//! Rules that hold for every format:
//!
//! - **Identity.** [`Encoded::id`] is the native event id, the same in every format, so
//!   a sink can use it as the broker's dedup id (`Nats-Msg-Id`, a Kafka header) whatever
//!   the body looks like. `requery_required` (which the log does not store and so has no
//!   id) gets `requery:<requested_lsn>:<oldest_lsn>`. In the body, `native` carries it as
//!   `id`, `flat` as `ID` (a UUID derived from it), `debezium` and `document` not at all.
//! - **Keys** are the row's key columns as compact JSON (`{"id":7}`), `None` when the
//!   event has no row key (truncate, `schema_change`, tables without a key). Every event of
//!   one row has the same key bytes, so per-key ordering holds on partitioned brokers.
//! - **Determinism.** Encoding the same event twice gives the same `id`, `key` and —
//!   except Debezium's processing-time fields `payload.ts_ms`/`ts_us`/`ts_ns` with the
//!   default [`PayloadTime::EncodeTime`] — the same `value` bytes. A redelivery may thus
//!   differ from the first delivery only in those three numbers; brokers dedupe by id.
//! - **`None`** means the format cannot express the event. `heartbeat` is never encoded
//!   (it is stream keep-alive, not data). A sink must not silently drop a
//!   `requery_required` that its format does not carry (`debezium`, `flat`): it should
//!   report it (and stop or re-snapshot, per its policy).
//! - **Errors** ([`EncodeError`]) are permanent for that event: the input is not a
//!   native event, or a value does not match its column's type. Encoding never panics.
//!
//! The per-format rules and every decision taken where the references are silent are in
//! the documentation of the modules [`debezium`], [`document`] and [`flat`].

pub mod debezium;
pub mod document;
pub mod flat;
pub(crate) mod json;
pub use crate::time::utc_date;
pub mod uuid;

use std::fmt;
use std::str::FromStr;

use crate::event::{EventKind as Kind, EventView, MalformedEvent};

/// A message as the format modules produce it: key and value bytes.
pub(crate) type KeyValue = (Option<Vec<u8>>, Vec<u8>);

/// An encoding a sink writes events in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// Spillway's own JSON, unchanged (`native`).
    #[default]
    Native,
    /// Debezium's JSON envelope (`debezium`: with the `schema` part, as Kafka Connect's
    /// `JsonConverter` writes it by default; `debezium-schemaless`: the bare payload, as
    /// with `value.converter.schemas.enable=false`).
    Debezium {
        /// Whether to include the `schema` part.
        schemas: bool,
    },
    /// Document-change messages (`document`, reference 000).
    Document,
    /// Flat row messages (`flat`, reference 001).
    Flat,
}

impl Format {
    /// Every format name [`Format::from_str`] accepts.
    pub const NAMES: [&'static str; 5] = [
        "native",
        "debezium",
        "debezium-schemaless",
        "document",
        "flat",
    ];

    /// The configuration name of the format.
    pub fn name(self) -> &'static str {
        match self {
            Format::Native => "native",
            Format::Debezium { schemas: true } => "debezium",
            Format::Debezium { schemas: false } => "debezium-schemaless",
            Format::Document => "document",
            Format::Flat => "flat",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown format name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFormat(pub String);

impl fmt::Display for UnknownFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown format {:?}; valid values: {}",
            self.0,
            Format::NAMES.join(", ")
        )
    }
}

impl std::error::Error for UnknownFormat {}

impl FromStr for Format {
    type Err = UnknownFormat;

    /// Parses a format name (ASCII case-insensitive): `native`, `debezium`,
    /// `debezium-schemaless`, `document`, `flat`.
    fn from_str(s: &str) -> Result<Format, UnknownFormat> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "native" => Format::Native,
            "debezium" => Format::Debezium { schemas: true },
            "debezium-schemaless" => Format::Debezium { schemas: false },
            "document" => Format::Document,
            "flat" => Format::Flat,
            _ => return Err(UnknownFormat(s.to_owned())),
        })
    }
}

impl serde::Serialize for Format {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Format {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Format, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Which time Debezium's envelope-level `ts_ms`/`ts_us`/`ts_ns` carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PayloadTime {
    /// The time of encoding, as Debezium does ("when the connector processed the event";
    /// consumers compute lag as `payload.ts_ms - source.ts_ms`). Redeliveries then differ
    /// in these fields.
    #[default]
    EncodeTime,
    /// The commit time, like `source.ts_*`: value bytes fully deterministic, lag reads 0.
    CommitTime,
}

/// Settings of an [`Encoder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderOptions {
    /// The logical server name: Debezium's `topic.prefix`, written as `source.name` and as
    /// the first part of schema names (`<prefix>.<schema>.<table>.Envelope`). Default
    /// `spillway`, the sinks' `{prefix}`.
    pub prefix: String,
    /// What Debezium's envelope-level timestamps carry.
    pub payload_time: PayloadTime,
}

impl Default for EncoderOptions {
    fn default() -> Self {
        EncoderOptions {
            prefix: "spillway".to_owned(),
            payload_time: PayloadTime::default(),
        }
    }
}

impl EncoderOptions {
    /// These options with `prefix` as the logical server name.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// These options with the given [`PayloadTime`].
    pub fn with_payload_time(mut self, payload_time: PayloadTime) -> Self {
        self.payload_time = payload_time;
        self
    }
}

/// One encoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Message key: the row's key columns as compact JSON (Debezium: its key struct, with
    /// the `schema` part when the format has schemas). `None` when the event has no row key.
    pub key: Option<Vec<u8>>,
    /// Message value. `None` would be a tombstone (no format emits one today).
    pub value: Option<Vec<u8>>,
    /// The event id, identical in every format: use it as the broker's dedup id.
    pub id: String,
}

/// Why an event could not be encoded. Permanent for that event: retrying gives the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// The input is not a native event: not JSON, an unknown `type` or `operation`, or a
    /// field the format needs is missing or mistyped.
    Malformed(String),
    /// A column value does not match the column's type.
    Value {
        /// `schema.table`.
        entity: String,
        /// The column.
        column: String,
        /// What is wrong.
        message: String,
    },
}

impl From<MalformedEvent> for EncodeError {
    fn from(e: MalformedEvent) -> Self {
        EncodeError::Malformed(e.0)
    }
}

/// Parses PostgreSQL's `X/Y` LSN text of an event field.
pub(crate) fn parse_pg_lsn(text: &str) -> Result<u64, EncodeError> {
    crate::lsn::parse_pg_lsn(text).ok_or_else(|| {
        EncodeError::Malformed(format!("{text:?} is not a PostgreSQL LSN (X/Y in hex)"))
    })
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let one_line = |s: &str| s.replace(['\n', '\r'], " ");
        match self {
            EncodeError::Malformed(m) => write!(f, "malformed native event: {}", one_line(m)),
            EncodeError::Value {
                entity,
                column,
                message,
            } => write!(
                f,
                "cannot encode column {column:?} of {entity}: {}",
                one_line(message)
            ),
        }
    }
}

impl std::error::Error for EncodeError {}

/// Turns native events into one [`Format`]. Stateful: remembers each table's columns from
/// its `schema_change` events (a sink sees a table's `schema_change` before its first
/// change after start), so feed it every event of the stream, in order.
#[derive(Debug)]
pub struct Encoder {
    state: State,
}

/// Per-format state.
#[derive(Debug)]
enum State {
    Native,
    Debezium(debezium::Debezium),
    Document,
    Flat,
}

impl Encoder {
    /// An encoder for `format`.
    pub fn new(format: Format, options: EncoderOptions) -> Self {
        let state = match format {
            Format::Native => State::Native,
            Format::Debezium { schemas } => {
                State::Debezium(debezium::Debezium::new(schemas, &options))
            }
            Format::Document => State::Document,
            Format::Flat => State::Flat,
        };
        Encoder { state }
    }

    /// The format this encoder writes.
    pub fn format(&self) -> Format {
        match &self.state {
            State::Native => Format::Native,
            State::Debezium(d) => Format::Debezium {
                schemas: d.schemas(),
            },
            State::Document => Format::Document,
            State::Flat => Format::Flat,
        }
    }

    /// Encodes one native event (the JSON bytes as stored in the log). `Ok(None)` for
    /// events the format does not carry (see the module documentation).
    ///
    /// # Errors
    /// [`EncodeError`] if `native` is not a native event or a value does not match its
    /// column type.
    pub fn encode(&mut self, native: &[u8]) -> Result<Option<Encoded>, EncodeError> {
        self.encode_view(&EventView::parse(native)?, native)
    }

    /// Encodes an event already parsed into `ev` from `native` (the sink runtime parses
    /// each event once, for its filter and transforms, then hands the view here).
    ///
    /// # Errors
    /// As [`Encoder::encode`].
    pub fn encode_view(
        &mut self,
        ev: &EventView<'_>,
        native: &[u8],
    ) -> Result<Option<Encoded>, EncodeError> {
        let kind = ev.kind()?;
        if kind == Kind::Heartbeat {
            return Ok(None);
        }
        let id = ev.event_id()?;
        let out = match &mut self.state {
            State::Native => {
                let key = if kind == Kind::Change {
                    ev.entity_id_key()
                } else {
                    None
                };
                Some((key, native.to_vec()))
            }
            State::Debezium(dbz) => dbz.encode(ev, kind)?,
            State::Document => document::encode(ev, kind)?,
            State::Flat => flat::encode(ev, kind, &id)?,
        };
        Ok(out.map(|(key, value)| Encoded {
            key,
            value: Some(value),
            id,
        }))
    }
}

#[cfg(test)]
mod tests;
