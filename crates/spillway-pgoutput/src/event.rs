//! Assembly of Spillway native JSON change events from decoded pgoutput
//! messages.
//!
//! [`EventEncoder`] is a small state machine fed every decoded message in
//! stream order. It keeps the relation cache, the type registry, known
//! primary keys and the current transaction, and turns row changes,
//! truncates, logical messages and relation (schema) changes into
//! [`EncodedEvent`]s: one compact JSON object each, fields in a fixed order.
//!
//! Event ids: inside a transaction every *emitted* event gets a 1-based
//! ordinal `index`, and `id` is `"<commit LSN as X/Y>:<index>"`. Changes
//! rejected by the table filter are not emitted and do not consume an
//! ordinal, so ids of emitted events are gap-free within a transaction.
//! Events produced outside a transaction (non-transactional logical
//! messages, relation messages outside `BEGIN`/`COMMIT`) use index 0:
//! `"<LSN>:0"` (the message LSN for logical messages, the XLogData WAL start
//! for relations), `"tx":null`, and as timestamp the last known commit
//! timestamp (0 if none was seen yet).

use std::collections::HashMap;

use crate::message::{
    write_pg_lsn, ColumnValue, LogicalMessage, OldTuple, OldTupleKind, PgOutputMessage, Relation,
    ReplicaIdentity, TupleData,
};
use crate::value::{
    write_base64_string, write_json_string, write_json_value, OidMap, TypeInfo, TypeKind,
    TypeRegistry, ValueError,
};

/// A row-level operation, as passed to the table filter (the one vocabulary of
/// `spillway-core`; the WAL carries all but `Read`).
pub use spillway_core::Operation;

/// Slot of `op` in [`CachedRelation::accept`] (`Read` never comes from the WAL).
fn wal_index(op: Operation) -> Option<usize> {
    Operation::WAL.iter().position(|o| *o == op)
}

/// What kind of event an [`EncodedEvent`] is (its JSON `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `"type":"change"`: insert, update, delete or truncate.
    Change,
    /// `"type":"schema_change"`: a relation was seen for the first time or
    /// its definition changed.
    SchemaChange,
    /// `"type":"message"`: a logical decoding message.
    Message,
}

/// One event produced by [`EventEncoder::encode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEvent {
    /// Position in Spillway's log (taken from `next_lsn`).
    pub lsn: u64,
    /// Commit timestamp, microseconds since the Unix epoch.
    pub timestamp_us: i64,
    /// Event type.
    pub kind: EventKind,
    /// The event as one compact JSON object (no trailing newline).
    pub json: Vec<u8>,
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A change referenced a relation id with no preceding Relation message.
    #[error("change for unknown relation id {0}")]
    UnknownRelation(u32),
    /// A tuple's column count differs from its relation's.
    #[error(
        "tuple for {table} (relation id {rel_id}) has {actual} columns, relation has {expected}"
    )]
    ColumnCountMismatch {
        /// Relation id.
        rel_id: u32,
        /// `schema.table`.
        table: String,
        /// Columns in the Relation message.
        expected: usize,
        /// Columns in the tuple.
        actual: usize,
    },
    /// A message that must be inside `BEGIN`/`COMMIT` arrived outside one.
    #[error("{0} message outside a transaction")]
    OutsideTransaction(&'static str),
    /// A column value did not match its type's text format.
    #[error("cannot convert column {column} of {table} (type {type_name}): {source}")]
    Value {
        /// `schema.table`.
        table: String,
        /// Column name.
        column: String,
        /// Type name.
        type_name: String,
        /// The underlying error.
        #[source]
        source: ValueError,
    },
}

/// Decides per (schema, table, operation) whether changes are emitted.
///
/// It must be deterministic: it is evaluated once per operation when a
/// Relation message is processed and the result is cached.
pub type TableFilter = Box<dyn Fn(&str, &str, Operation) -> bool + Send>;

/// A relation plus everything precomputed for encoding its changes.
#[derive(Debug)]
struct CachedRelation {
    rel: Relation,
    /// `schema.table`, for error messages.
    qualified: String,
    /// `"entity":"s.t","schema":"s","table":"t"`.
    entity_fields: Vec<u8>,
    /// JSON string literal of each column name.
    col_names: Vec<Box<[u8]>>,
    /// Replica-identity flagged columns (the contents of a `'K'` tuple).
    ri_cols: Vec<usize>,
    /// Columns making up `entity_id` (primary key if known, else
    /// `ri_cols`).
    id_cols: Vec<usize>,
    /// Filter decision per operation of [`Operation::WAL`].
    accept: [bool; 4],
}

impl CachedRelation {
    fn accepts(&self, op: Operation) -> bool {
        wal_index(op)
            .and_then(|i| self.accept.get(i).copied())
            .unwrap_or(false)
    }
}

/// What a schema_change compares: replica identity and the emitted columns.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TableSignature {
    replica_identity: ReplicaIdentity,
    columns: Vec<(String, u32, bool)>,
}

#[derive(Debug)]
struct TxContext {
    xid: u32,
    /// Commit LSN rendered as `X/Y`.
    commit_lsn_text: Vec<u8>,
    timestamp_us: i64,
    /// JSON string literal of the origin name.
    origin: Option<Vec<u8>>,
    /// Index of the last emitted event (0 = none yet).
    ordinal: u64,
}

/// Turns decoded pgoutput messages into Spillway native JSON events.
pub struct EventEncoder {
    /// JSON string literal of the database name.
    db_json: Vec<u8>,
    filter: TableFilter,
    relations: OidMap<CachedRelation>,
    signatures: HashMap<(String, String), TableSignature>,
    primary_keys: HashMap<(String, String), Vec<String>>,
    types: TypeRegistry,
    tx: Option<TxContext>,
    last_commit_ts: i64,
    /// Capacity used for the next event buffer.
    size_hint: usize,
}

impl std::fmt::Debug for EventEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventEncoder")
            .field("db", &String::from_utf8_lossy(&self.db_json))
            .field("relations", &self.relations.len())
            .field("in_transaction", &self.tx.is_some())
            .finish_non_exhaustive()
    }
}

/// The schema name shown in events (pgoutput sends `""` for `pg_catalog`).
fn display_schema(namespace: &str) -> &str {
    if namespace.is_empty() {
        "pg_catalog"
    } else {
        namespace
    }
}

fn write_u64(out: &mut Vec<u8>, v: u64) {
    spillway_core::time::write_uint(out, v, 0);
}

fn write_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    write_u64(out, v.unsigned_abs());
}

/// Looks up the value of column `i` for `entity_id` / TOAST filling.
fn tuple_value<'t, 'a>(t: Option<&'t TupleData<'a>>, i: usize) -> Option<&'t ColumnValue<'a>> {
    t.and_then(|t| t.columns.get(i))
}

impl EventEncoder {
    /// Creates an encoder for database `db_name`. `filter` decides which
    /// (schema, table, operation) combinations produce events.
    #[must_use]
    pub fn new(db_name: String, filter: TableFilter) -> Self {
        let mut db_json = Vec::with_capacity(db_name.len() + 2);
        write_json_string(&mut db_json, &db_name);
        Self {
            db_json,
            filter,
            relations: OidMap::default(),
            signatures: HashMap::new(),
            primary_keys: HashMap::new(),
            types: TypeRegistry::new(),
            tx: None,
            last_commit_ts: 0,
            size_hint: 256,
        }
    }

    /// The type registry used for value conversion.
    #[must_use]
    pub fn types(&self) -> &TypeRegistry {
        &self.types
    }

    /// Mutable access to the type registry (to register user types found in
    /// `pg_type` before a Relation message is encoded).
    pub fn types_mut(&mut self) -> &mut TypeRegistry {
        &mut self.types
    }

    /// Whether a `BEGIN` has been seen without its `COMMIT`.
    #[must_use]
    pub fn in_transaction(&self) -> bool {
        self.tx.is_some()
    }

    /// Forgets the current transaction (e.g. after a reconnect, when the
    /// server will resend it from its `BEGIN`).
    pub fn abort_transaction(&mut self) {
        self.tx = None;
    }

    /// The cached Relation message for `rel_id`.
    #[must_use]
    pub fn relation(&self, rel_id: u32) -> Option<&Relation> {
        self.relations.get(&rel_id).map(|c| &c.rel)
    }

    /// Records the primary-key columns of `schema.table` (from a catalog
    /// lookup). Used for `entity_id` and the `key` flags of schema changes;
    /// applies to cached relations immediately.
    pub fn set_primary_key(&mut self, schema: &str, table: &str, cols: Vec<String>) {
        self.primary_keys
            .insert((schema.to_owned(), table.to_owned()), cols);
        let pks = &self.primary_keys;
        for cached in self.relations.values_mut() {
            if display_schema(&cached.rel.namespace) == schema && cached.rel.name == table {
                cached.id_cols = id_columns(pks, &cached.rel);
            }
        }
    }

    /// The primary key recorded for `schema.table`, if any.
    #[must_use]
    pub fn primary_key(&self, schema: &str, table: &str) -> Option<&[String]> {
        self.primary_keys
            .get(&(schema.to_owned(), table.to_owned()))
            .map(Vec::as_slice)
    }

    /// Type OIDs used by `rel` (column types, array element types and domain
    /// base types) that are not in the registry, without duplicates. The I/O
    /// layer looks these up in `pg_type` and registers them before encoding
    /// the Relation message.
    #[must_use]
    pub fn unknown_type_oids(&self, rel: &Relation) -> Vec<u32> {
        let mut missing = Vec::new();
        for col in &rel.columns {
            let mut oid = col.type_oid;
            // Follow arrays/domains a few steps to find unregistered targets.
            for _ in 0..8 {
                match self.types.get(oid) {
                    None => {
                        if !missing.contains(&oid) {
                            missing.push(oid);
                        }
                        break;
                    }
                    Some(TypeInfo {
                        kind: TypeKind::Array { elem: next } | TypeKind::Domain { base: next },
                        ..
                    }) => oid = *next,
                    Some(_) => break,
                }
            }
        }
        missing
    }

    /// Processes one decoded message, appending the events it produces to
    /// `out`. Each event takes `*next_lsn` as its `lsn`, which is then
    /// incremented. `wal_start` is the WAL position of the XLogData message
    /// that carried `msg` (reported as `source.pg_lsn`).
    ///
    /// Message handling: `Begin` starts a transaction context (replacing any
    /// unfinished one, as after a reconnect the server resends a transaction
    /// from its `BEGIN`), `Commit` ends it, `Origin` tags the rest of the transaction, `Type` registers
    /// unknown type names, `Relation` is cached and may produce a
    /// schema_change, changes/truncates/logical messages produce events.
    ///
    /// # Errors
    /// [`EncodeError`] for changes of unknown relations, column count
    /// mismatches, messages that need a transaction outside one, and value
    /// conversion failures. On error nothing is appended to `out` and
    /// `next_lsn` is unchanged.
    pub fn encode(
        &mut self,
        msg: &PgOutputMessage<'_>,
        wal_start: u64,
        next_lsn: &mut u64,
        out: &mut Vec<EncodedEvent>,
    ) -> Result<(), EncodeError> {
        match msg {
            PgOutputMessage::Begin(b) => {
                let timestamp_us = crate::message::pg_epoch_to_unix_micros(b.timestamp);
                let mut commit_lsn_text = Vec::with_capacity(17);
                write_pg_lsn(&mut commit_lsn_text, b.final_lsn);
                self.tx = Some(TxContext {
                    xid: b.xid,
                    commit_lsn_text,
                    timestamp_us,
                    origin: None,
                    ordinal: 0,
                });
                self.last_commit_ts = timestamp_us;
                Ok(())
            }
            PgOutputMessage::Commit(c) => {
                if self.tx.take().is_none() {
                    return Err(EncodeError::OutsideTransaction("commit"));
                }
                self.last_commit_ts = crate::message::pg_epoch_to_unix_micros(c.timestamp);
                Ok(())
            }
            PgOutputMessage::Origin(o) => {
                let tx = self
                    .tx
                    .as_mut()
                    .ok_or(EncodeError::OutsideTransaction("origin"))?;
                let mut name = Vec::with_capacity(o.name.len() + 2);
                write_json_string(&mut name, o.name);
                tx.origin = Some(name);
                Ok(())
            }
            PgOutputMessage::Type(t) => {
                if !self.types.contains(t.oid) {
                    self.types.insert(
                        t.oid,
                        TypeInfo {
                            name: t.name.to_owned(),
                            kind: TypeKind::Other,
                        },
                    );
                }
                Ok(())
            }
            PgOutputMessage::Relation(r) => self.on_relation(r, wal_start, next_lsn, out),
            PgOutputMessage::Insert(i) => self.on_change(
                Operation::Insert,
                i.rel_id,
                None,
                Some(&i.new),
                wal_start,
                next_lsn,
                out,
            ),
            PgOutputMessage::Update(u) => self.on_change(
                Operation::Update,
                u.rel_id,
                u.old.as_ref(),
                Some(&u.new),
                wal_start,
                next_lsn,
                out,
            ),
            PgOutputMessage::Delete(d) => self.on_change(
                Operation::Delete,
                d.rel_id,
                Some(&d.old),
                None,
                wal_start,
                next_lsn,
                out,
            ),
            PgOutputMessage::Truncate(t) => self.on_truncate(&t.rel_ids, wal_start, next_lsn, out),
            PgOutputMessage::Message(m) => self.on_message(m, wal_start, next_lsn, out),
        }
    }

    fn new_buffer(&self) -> Vec<u8> {
        Vec::with_capacity(self.size_hint)
    }

    fn finish_event(
        &mut self,
        json: Vec<u8>,
        kind: EventKind,
        timestamp_us: i64,
        next_lsn: &mut u64,
        out: &mut Vec<EncodedEvent>,
    ) {
        self.size_hint = (json.len() + 64).clamp(128, 1 << 16);
        out.push(EncodedEvent {
            lsn: *next_lsn,
            timestamp_us,
            kind,
            json,
        });
        *next_lsn = next_lsn.wrapping_add(1);
    }

    /// Writes `"type":..,"lsn":..,"id":..,"timestamp":..` (after `{`).
    /// `index` 0 means "outside a transaction" with `id_lsn` as the LSN.
    fn write_header(
        &self,
        j: &mut Vec<u8>,
        type_name: &str,
        lsn: u64,
        index: u64,
        id_lsn: u64,
        timestamp_us: i64,
    ) {
        j.extend_from_slice(b"{\"type\":\"");
        j.extend_from_slice(type_name.as_bytes());
        j.extend_from_slice(b"\",\"lsn\":");
        write_u64(j, lsn);
        j.extend_from_slice(b",\"id\":\"");
        match (&self.tx, index) {
            (Some(tx), 1..) => j.extend_from_slice(&tx.commit_lsn_text),
            _ => write_pg_lsn(j, id_lsn),
        }
        j.push(b':');
        write_u64(j, index);
        j.extend_from_slice(b"\",\"timestamp\":");
        write_i64(j, timestamp_us);
    }

    /// Writes `,"tx":{..}|null,"source":{..}}` closing the event.
    fn write_trailer(&self, j: &mut Vec<u8>, index: u64, wal_start: u64) {
        let tx = self.tx.as_ref().filter(|_| index > 0);
        match tx {
            Some(tx) => {
                j.extend_from_slice(b",\"tx\":{\"xid\":");
                write_u64(j, u64::from(tx.xid));
                j.extend_from_slice(b",\"commit_lsn\":\"");
                j.extend_from_slice(&tx.commit_lsn_text);
                j.extend_from_slice(b"\",\"index\":");
                write_u64(j, index);
                j.push(b'}');
            }
            None => j.extend_from_slice(b",\"tx\":null"),
        }
        j.extend_from_slice(b",\"source\":{\"db\":");
        j.extend_from_slice(&self.db_json);
        j.extend_from_slice(b",\"pg_lsn\":\"");
        write_pg_lsn(j, wal_start);
        j.push(b'"');
        if let Some(origin) = tx.and_then(|tx| tx.origin.as_ref()) {
            j.extend_from_slice(b",\"origin\":");
            j.extend_from_slice(origin);
        }
        j.extend_from_slice(b"}}");
    }

    /// The ordinal the next emitted event gets (0 outside a transaction).
    fn next_index(&self) -> u64 {
        self.tx.as_ref().map_or(0, |tx| tx.ordinal + 1)
    }

    fn commit_index(&mut self, index: u64) {
        if let Some(tx) = self.tx.as_mut() {
            if index > 0 {
                tx.ordinal = index;
            }
        }
    }

    fn current_timestamp(&self) -> i64 {
        self.tx
            .as_ref()
            .map_or(self.last_commit_ts, |tx| tx.timestamp_us)
    }

    fn on_relation(
        &mut self,
        r: &Relation,
        wal_start: u64,
        next_lsn: &mut u64,
        out: &mut Vec<EncodedEvent>,
    ) -> Result<(), EncodeError> {
        let schema = display_schema(&r.namespace).to_owned();
        let table = r.name.clone();
        let accept = Operation::WAL.map(|op| (self.filter)(&schema, &table, op));

        let mut entity_fields = Vec::with_capacity(schema.len() * 2 + table.len() * 2 + 40);
        let qualified = format!("{schema}.{table}");
        entity_fields.extend_from_slice(b"\"entity\":");
        write_json_string(&mut entity_fields, &qualified);
        entity_fields.extend_from_slice(b",\"schema\":");
        write_json_string(&mut entity_fields, &schema);
        entity_fields.extend_from_slice(b",\"table\":");
        write_json_string(&mut entity_fields, &table);

        let col_names = r
            .columns
            .iter()
            .map(|c| {
                let mut v = Vec::with_capacity(c.name.len() + 2);
                write_json_string(&mut v, &c.name);
                v.into_boxed_slice()
            })
            .collect();
        let ri_cols = r
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_key())
            .map(|(i, _)| i)
            .collect();
        let id_cols = id_columns(&self.primary_keys, r);

        let signature = TableSignature {
            replica_identity: r.replica_identity,
            columns: r
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name.clone(), c.type_oid, id_cols.contains(&i)))
                .collect(),
        };
        let key = (schema, table);
        let changed = self.signatures.get(&key) != Some(&signature);
        let emit = changed && (accept[0] || accept[1] || accept[2]);

        let cached = CachedRelation {
            rel: r.clone(),
            qualified,
            entity_fields,
            col_names,
            ri_cols,
            id_cols,
            accept,
        };

        if emit {
            let index = self.next_index();
            let timestamp_us = self.current_timestamp();
            let mut j = self.new_buffer();
            self.write_header(
                &mut j,
                "schema_change",
                *next_lsn,
                index,
                wal_start,
                timestamp_us,
            );
            j.push(b',');
            j.extend_from_slice(&cached.entity_fields);
            j.extend_from_slice(b",\"replica_identity\":\"");
            j.extend_from_slice(r.replica_identity.as_str().as_bytes());
            j.extend_from_slice(b"\",\"columns\":[");
            for (i, col) in r.columns.iter().enumerate() {
                if i > 0 {
                    j.push(b',');
                }
                j.extend_from_slice(b"{\"name\":");
                write_json_string(&mut j, &col.name);
                j.extend_from_slice(b",\"type\":");
                write_json_string(&mut j, &self.types.name(col.type_oid));
                j.extend_from_slice(b",\"type_oid\":");
                write_u64(&mut j, u64::from(col.type_oid));
                j.extend_from_slice(if cached.id_cols.contains(&i) {
                    b",\"key\":true}"
                } else {
                    b",\"key\":false}"
                });
            }
            j.push(b']');
            self.write_trailer(&mut j, index, wal_start);
            self.commit_index(index);
            self.finish_event(j, EventKind::SchemaChange, timestamp_us, next_lsn, out);
        }

        self.signatures.insert(key, signature);
        self.relations.insert(r.rel_id, cached);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn on_change(
        &mut self,
        op: Operation,
        rel_id: u32,
        old: Option<&OldTuple<'_>>,
        new: Option<&TupleData<'_>>,
        wal_start: u64,
        next_lsn: &mut u64,
        out: &mut Vec<EncodedEvent>,
    ) -> Result<(), EncodeError> {
        let Some(tx) = self.tx.as_ref() else {
            return Err(EncodeError::OutsideTransaction(op.as_str()));
        };
        let timestamp_us = tx.timestamp_us;
        let cached = self
            .relations
            .get(&rel_id)
            .ok_or(EncodeError::UnknownRelation(rel_id))?;
        let expected = cached.rel.columns.len();
        for t in old.map(|o| &o.data).into_iter().chain(new) {
            if t.columns.len() != expected {
                return Err(EncodeError::ColumnCountMismatch {
                    rel_id,
                    table: cached.qualified.clone(),
                    expected,
                    actual: t.columns.len(),
                });
            }
        }
        if !cached.accepts(op) {
            return Ok(());
        }

        let index = self.next_index();
        let mut j = self.new_buffer();
        self.write_header(&mut j, "change", *next_lsn, index, wal_start, timestamp_us);
        j.extend_from_slice(b",\"operation\":\"");
        j.extend_from_slice(op.as_str().as_bytes());
        j.extend_from_slice(b"\",");
        j.extend_from_slice(&cached.entity_fields);

        let full_old = old.filter(|o| o.kind == OldTupleKind::Old).map(|o| &o.data);
        // Effective new value of column i: unchanged TOAST filled from a full
        // old row when possible; None if unavailable.
        let effective_new = |i: usize| -> Option<&ColumnValue<'_>> {
            match tuple_value(new, i)? {
                ColumnValue::UnchangedToast => {
                    tuple_value(full_old, i).filter(|v| **v != ColumnValue::UnchangedToast)
                }
                v => Some(v),
            }
        };
        // Value of column i in the old image, if the image carries it.
        let old_value = |i: usize| -> Option<&ColumnValue<'_>> {
            let o = old?;
            let v = o.data.columns.get(i)?;
            let carried = match o.kind {
                OldTupleKind::Old => true,
                OldTupleKind::Key => cached.ri_cols.contains(&i),
            };
            (carried && *v != ColumnValue::UnchangedToast).then_some(v)
        };

        let write_col = |j: &mut Vec<u8>,
                         i: usize,
                         v: &ColumnValue<'_>|
         -> Result<(), EncodeError> {
            match v {
                ColumnValue::Null | ColumnValue::UnchangedToast => {
                    j.extend_from_slice(b"null");
                    Ok(())
                }
                ColumnValue::Binary(b) => {
                    write_base64_string(j, b);
                    Ok(())
                }
                ColumnValue::Text(t) => {
                    let oid = cached.rel.columns.get(i).map_or(0, |c| c.type_oid);
                    write_json_value(j, oid, t, &self.types).map_err(|source| EncodeError::Value {
                        table: cached.qualified.clone(),
                        column: cached
                            .rel
                            .columns
                            .get(i)
                            .map(|c| c.name.clone())
                            .unwrap_or_default(),
                        type_name: self.types.name(oid),
                        source,
                    })
                }
            }
        };
        let write_key = |j: &mut Vec<u8>, i: usize| {
            if let Some(name) = cached.col_names.get(i) {
                j.extend_from_slice(name);
            }
            j.push(b':');
        };

        // entity_id
        j.extend_from_slice(b",\"entity_id\":");
        let id_available = !cached.id_cols.is_empty()
            && op != Operation::Truncate
            && cached
                .id_cols
                .iter()
                .all(|&i| effective_new(i).or_else(|| old_value(i)).is_some());
        if id_available {
            j.push(b'{');
            for (n, &i) in cached.id_cols.iter().enumerate() {
                if n > 0 {
                    j.push(b',');
                }
                write_key(&mut j, i);
                let v = effective_new(i)
                    .or_else(|| old_value(i))
                    .unwrap_or(&ColumnValue::Null);
                write_col(&mut j, i, v)?;
            }
            j.push(b'}');
        } else {
            j.extend_from_slice(b"null");
        }

        // old_data
        j.extend_from_slice(b",\"old_data\":");
        match old {
            Some(o) => {
                j.push(b'{');
                let mut first = true;
                for (i, v) in o.data.columns.iter().enumerate() {
                    if old_value(i).is_none() {
                        continue;
                    }
                    if !first {
                        j.push(b',');
                    }
                    first = false;
                    write_key(&mut j, i);
                    write_col(&mut j, i, v)?;
                }
                j.push(b'}');
            }
            None => j.extend_from_slice(b"null"),
        }

        // new_data (+ unchanged_toast)
        j.extend_from_slice(b",\"new_data\":");
        let mut unchanged_toast = false;
        match new {
            Some(n) => {
                j.push(b'{');
                let mut first = true;
                for i in 0..n.columns.len() {
                    let Some(v) = effective_new(i) else {
                        unchanged_toast = true;
                        continue;
                    };
                    if !first {
                        j.push(b',');
                    }
                    first = false;
                    write_key(&mut j, i);
                    write_col(&mut j, i, v)?;
                }
                j.push(b'}');
            }
            None => j.extend_from_slice(b"null"),
        }
        if unchanged_toast {
            j.extend_from_slice(b",\"unchanged_toast\":[");
            let mut first = true;
            for i in 0..new.map_or(0, |n| n.columns.len()) {
                if effective_new(i).is_some() {
                    continue;
                }
                if !first {
                    j.push(b',');
                }
                first = false;
                if let Some(name) = cached.col_names.get(i) {
                    j.extend_from_slice(name);
                }
            }
            j.push(b']');
        }

        self.write_trailer(&mut j, index, wal_start);
        self.commit_index(index);
        self.finish_event(j, EventKind::Change, timestamp_us, next_lsn, out);
        Ok(())
    }

    fn on_truncate(
        &mut self,
        rel_ids: &[u32],
        wal_start: u64,
        next_lsn: &mut u64,
        out: &mut Vec<EncodedEvent>,
    ) -> Result<(), EncodeError> {
        let Some(tx) = self.tx.as_ref() else {
            return Err(EncodeError::OutsideTransaction("truncate"));
        };
        let timestamp_us = tx.timestamp_us;
        // Validate everything first so an error leaves `out` untouched.
        for rel_id in rel_ids {
            if !self.relations.contains_key(rel_id) {
                return Err(EncodeError::UnknownRelation(*rel_id));
            }
        }
        for rel_id in rel_ids {
            let Some(cached) = self.relations.get(rel_id) else {
                continue;
            };
            if !cached.accepts(Operation::Truncate) {
                continue;
            }
            let index = self.next_index();
            let mut j = self.new_buffer();
            self.write_header(&mut j, "change", *next_lsn, index, wal_start, timestamp_us);
            j.extend_from_slice(b",\"operation\":\"truncate\",");
            j.extend_from_slice(&cached.entity_fields);
            j.extend_from_slice(b",\"entity_id\":null,\"old_data\":null,\"new_data\":null");
            self.write_trailer(&mut j, index, wal_start);
            self.commit_index(index);
            self.finish_event(j, EventKind::Change, timestamp_us, next_lsn, out);
        }
        Ok(())
    }

    fn on_message(
        &mut self,
        m: &LogicalMessage<'_>,
        wal_start: u64,
        next_lsn: &mut u64,
        out: &mut Vec<EncodedEvent>,
    ) -> Result<(), EncodeError> {
        let transactional = m.transactional();
        if transactional && self.tx.is_none() {
            return Err(EncodeError::OutsideTransaction("transactional logical"));
        }
        let index = if transactional { self.next_index() } else { 0 };
        let timestamp_us = self.current_timestamp();
        let mut j = self.new_buffer();
        self.write_header(&mut j, "message", *next_lsn, index, m.lsn, timestamp_us);
        j.extend_from_slice(if transactional {
            b",\"transactional\":true,\"prefix\":"
        } else {
            b",\"transactional\":false,\"prefix\":"
        });
        write_json_string(&mut j, m.prefix);
        match std::str::from_utf8(m.content) {
            Ok(s) => {
                j.extend_from_slice(b",\"content\":");
                write_json_string(&mut j, s);
            }
            Err(_) => {
                j.extend_from_slice(b",\"content_base64\":");
                write_base64_string(&mut j, m.content);
            }
        }
        self.write_trailer(&mut j, index, wal_start);
        self.commit_index(index);
        self.finish_event(j, EventKind::Message, timestamp_us, next_lsn, out);
        Ok(())
    }
}

/// `entity_id` columns: the recorded primary key if every column of it is
/// present in the relation, else the replica-identity flagged columns.
fn id_columns(pks: &HashMap<(String, String), Vec<String>>, r: &Relation) -> Vec<usize> {
    let key = (display_schema(&r.namespace).to_owned(), r.name.clone());
    if let Some(pk) = pks.get(&key).filter(|pk| !pk.is_empty()) {
        let idx: Option<Vec<usize>> = pk
            .iter()
            .map(|name| r.columns.iter().position(|c| &c.name == name))
            .collect();
        if let Some(idx) = idx {
            return idx;
        }
    }
    r.columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.is_key())
        .map(|(i, _)| i)
        .collect()
}
