//! The vocabulary of Spillway, with no I/O: the change event, the names and text forms
//! every other crate shares, and the per-consumer processing chain.
//!
//! # Layout
//!
//! | module | what it holds |
//! |---|---|
//! | [`event`] | the one [`Operation`] and [`EventKind`], the typed [`Event`] (for code that reads events: the CLI, tests, the Rust client), the control events with one shape each ([`RequeryRequired`], [`Heartbeat`]), and [`EventView`], the borrowed view of a stored event that sinks, transforms, encodings and the HTTP stream parse once |
//! | [`pattern`] | table patterns (`schema.table`, `table`, `*`): the one matcher behind capture's, sinks' and the API's table filters |
//! | [`transform`] | the [`Transform`](transform::Transform) trait and its first implementation, [`Filter`](transform::Filter) (`tables`, `operations`, exclusions) |
//! | [`query`] | the `/v1/changes` query, parsed by the server and written by the client and `spillway tail` |
//! | [`encoding`] | [`Encoder`](encoding::Encoder): native event bytes → the format a sink writes (`native`, `debezium`, `document`, `flat`); the rules of each format are in its module documentation |
//! | [`time`] | the one calendar and every date/time text form (PostgreSQL's output, native values, `java.time`/Go forms, RFC 3339 input), `now_us` |
//! | [`lsn`] | the `X/Y` text form of PostgreSQL LSNs |
//! | [`status`] | live state shared by capture, the API and metrics |
//!
//! The capture path does not build the typed structs: it writes native JSON directly
//! (`spillway-pgoutput::event`) for speed; [`event`]'s tests pin its field names (SPEC §3).
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

pub mod encoding;
pub mod event;
pub mod lsn;
pub mod pattern;
pub mod query;
pub mod status;
pub mod time;
pub mod transform;

pub use event::{
    ChangeEvent, ColumnInfo, Event, EventKind, EventView, Heartbeat, MessageEvent, Operation,
    RequeryReason, RequeryRequired, SchemaChangeEvent, SourceInfo, TxInfo,
};
