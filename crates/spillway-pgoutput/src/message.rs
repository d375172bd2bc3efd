//! Decoder for the pgoutput logical replication protocol, version 1.
//!
//! [`decode`] takes the payload of one `XLogData` copy message (everything
//! after the `'w'` header with its three 8-byte fields) and returns a
//! [`PgOutputMessage`] that borrows its variable-length parts (names, column
//! values, message content) from the input buffer, so decoding a row change
//! allocates exactly once (the column vector of each tuple).
//!
//! The decoder is total: any malformed input (truncation, negative or
//! oversized lengths, missing NUL terminators, invalid UTF-8 in names, unknown
//! message or tuple kinds, trailing bytes) yields a [`DecodeError`] naming the
//! problem and the byte offset where it was found. It never panics.

use std::fmt;

/// Microseconds between the Unix epoch (1970-01-01) and the PostgreSQL epoch
/// (2000-01-01).
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// Converts a PostgreSQL timestamp (microseconds since 2000-01-01 00:00 UTC)
/// to microseconds since the Unix epoch. Saturates instead of overflowing
/// (PostgreSQL encodes `infinity` as `i64::MAX`).
#[must_use]
pub fn pg_epoch_to_unix_micros(ts: i64) -> i64 {
    ts.saturating_add(PG_EPOCH_OFFSET_MICROS)
}

// The text forms of a PostgreSQL LSN live with the event vocabulary.
pub use spillway_core::lsn::{format_pg_lsn, parse_pg_lsn, write_pg_lsn};

/// One decoded pgoutput message. Variable-length data borrows from the
/// buffer passed to [`decode`], except [`Relation`], which is owned because
/// consumers cache it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgOutputMessage<'a> {
    /// `'B'`: start of a transaction.
    Begin(Begin),
    /// `'C'`: end of a transaction.
    Commit(Commit),
    /// `'O'`: replication origin of the current transaction.
    Origin(Origin<'a>),
    /// `'R'`: description of a relation, sent before its first change in a
    /// session and again after any change of its definition.
    Relation(Relation),
    /// `'Y'`: description of a non-builtin type used by a relation.
    Type(TypeMessage<'a>),
    /// `'I'`: row inserted.
    Insert(Insert<'a>),
    /// `'U'`: row updated.
    Update(Update<'a>),
    /// `'D'`: row deleted.
    Delete(Delete<'a>),
    /// `'T'`: one or more relations truncated.
    Truncate(Truncate),
    /// `'M'`: logical decoding message (`pg_logical_emit_message`).
    Message(LogicalMessage<'a>),
}

impl PgOutputMessage<'_> {
    /// The protocol tag byte of this message kind (`b'B'`, `b'C'`, ...).
    #[must_use]
    pub fn tag(&self) -> u8 {
        match self {
            PgOutputMessage::Begin(_) => b'B',
            PgOutputMessage::Commit(_) => b'C',
            PgOutputMessage::Origin(_) => b'O',
            PgOutputMessage::Relation(_) => b'R',
            PgOutputMessage::Type(_) => b'Y',
            PgOutputMessage::Insert(_) => b'I',
            PgOutputMessage::Update(_) => b'U',
            PgOutputMessage::Delete(_) => b'D',
            PgOutputMessage::Truncate(_) => b'T',
            PgOutputMessage::Message(_) => b'M',
        }
    }
}

/// `'B'` Begin message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begin {
    /// LSN of the transaction's commit record.
    pub final_lsn: u64,
    /// Commit timestamp, microseconds since 2000-01-01 UTC
    /// (see [`pg_epoch_to_unix_micros`]).
    pub timestamp: i64,
    /// Transaction id.
    pub xid: u32,
}

/// `'C'` Commit message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// Flags (currently unused by PostgreSQL, always 0).
    pub flags: u8,
    /// LSN of the commit record.
    pub commit_lsn: u64,
    /// LSN just past the commit record.
    pub end_lsn: u64,
    /// Commit timestamp, microseconds since 2000-01-01 UTC.
    pub timestamp: i64,
}

/// `'O'` Origin message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    /// LSN of the commit on the origin server.
    pub commit_lsn: u64,
    /// Origin name.
    pub name: &'a str,
}

/// A relation's replica identity setting (`pg_class.relreplident`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplicaIdentity {
    /// `'d'`: primary key columns.
    Default,
    /// `'n'`: nothing.
    Nothing,
    /// `'f'`: all columns.
    Full,
    /// `'i'`: columns of a chosen unique index.
    Index,
}

impl ReplicaIdentity {
    /// Maps the protocol byte to a variant.
    #[must_use]
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'd' => Some(Self::Default),
            b'n' => Some(Self::Nothing),
            b'f' => Some(Self::Full),
            b'i' => Some(Self::Index),
            _ => None,
        }
    }

    /// The protocol byte (`b'd'`, `b'n'`, `b'f'`, `b'i'`).
    #[must_use]
    pub fn as_byte(self) -> u8 {
        match self {
            Self::Default => b'd',
            Self::Nothing => b'n',
            Self::Full => b'f',
            Self::Index => b'i',
        }
    }

    /// Lower-case name used in events: `default`, `nothing`, `full`, `index`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Nothing => "nothing",
            Self::Full => "full",
            Self::Index => "index",
        }
    }
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelationColumn {
    /// Raw flags; bit 1 marks a replica-identity (key) column.
    pub flags: u8,
    /// Column name.
    pub name: String,
    /// OID of the column's data type.
    pub type_oid: u32,
    /// Type modifier (`atttypmod`), -1 if none.
    pub type_modifier: i32,
}

impl RelationColumn {
    /// Whether the column is part of the replica identity.
    #[must_use]
    pub fn is_key(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// `'R'` Relation message (owned: consumers keep it in a cache).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Relation {
    /// Relation OID.
    pub rel_id: u32,
    /// Schema name; pgoutput sends an empty string for `pg_catalog`.
    pub namespace: String,
    /// Relation name.
    pub name: String,
    /// Replica identity setting.
    pub replica_identity: ReplicaIdentity,
    /// Columns in attribute order (dropped and generated columns excluded).
    pub columns: Vec<RelationColumn>,
}

/// `'Y'` Type message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeMessage<'a> {
    /// Type OID.
    pub oid: u32,
    /// Schema name; empty for `pg_catalog`.
    pub namespace: &'a str,
    /// Type name (`pg_type.typname`).
    pub name: &'a str,
}

/// One column value of a [`TupleData`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnValue<'a> {
    /// `'n'`: SQL NULL.
    Null,
    /// `'u'`: unchanged TOASTed value; the actual value is not sent.
    UnchangedToast,
    /// `'t'`: value in text format.
    Text(&'a [u8]),
    /// `'b'`: value in binary format (only with `binary 'true'`).
    Binary(&'a [u8]),
}

/// The column values of one row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TupleData<'a> {
    /// Values in relation column order.
    pub columns: Vec<ColumnValue<'a>>,
}

/// `'I'` Insert message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert<'a> {
    /// Relation OID (refers to an earlier [`Relation`]).
    pub rel_id: u32,
    /// The inserted row.
    pub new: TupleData<'a>,
}

/// Which old-row image accompanies an update or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OldTupleKind {
    /// `'K'`: only replica-identity key columns carry values (others null).
    Key,
    /// `'O'`: the full old row (`REPLICA IDENTITY FULL`).
    Old,
}

/// An old-row image of an update or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldTuple<'a> {
    /// Key-only or full image.
    pub kind: OldTupleKind,
    /// The values.
    pub data: TupleData<'a>,
}

/// `'U'` Update message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update<'a> {
    /// Relation OID.
    pub rel_id: u32,
    /// Old row image, present if the key changed (`'K'`) or with
    /// `REPLICA IDENTITY FULL` (`'O'`).
    pub old: Option<OldTuple<'a>>,
    /// The new row.
    pub new: TupleData<'a>,
}

/// `'D'` Delete message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete<'a> {
    /// Relation OID.
    pub rel_id: u32,
    /// Old row image (key columns or the full row).
    pub old: OldTuple<'a>,
}

/// `'T'` Truncate message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    /// Raw option bits: 1 = `CASCADE`, 2 = `RESTART IDENTITY`.
    pub options: u8,
    /// OIDs of the truncated relations.
    pub rel_ids: Vec<u32>,
}

impl Truncate {
    /// `TRUNCATE ... CASCADE`.
    #[must_use]
    pub fn cascade(&self) -> bool {
        self.options & 1 != 0
    }

    /// `TRUNCATE ... RESTART IDENTITY`.
    #[must_use]
    pub fn restart_identity(&self) -> bool {
        self.options & 2 != 0
    }
}

/// `'M'` logical decoding message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogicalMessage<'a> {
    /// Raw flags; bit 1 = transactional.
    pub flags: u8,
    /// LSN of the message.
    pub lsn: u64,
    /// Prefix given to `pg_logical_emit_message`.
    pub prefix: &'a str,
    /// Content bytes (arbitrary binary).
    pub content: &'a [u8],
}

impl LogicalMessage<'_> {
    /// Whether the message was emitted as part of a transaction.
    #[must_use]
    pub fn transactional(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// Why a buffer could not be decoded. Offsets are byte positions in the
/// buffer given to [`decode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The buffer was empty.
    #[error("empty pgoutput message")]
    Empty,
    /// The first byte is not a known protocol-v1 message kind.
    #[error("unknown pgoutput message kind 0x{0:02x}")]
    UnknownMessage(u8),
    /// The buffer ended before a field was complete.
    #[error("truncated pgoutput message: {what} at offset {offset} needs {needed} bytes, {available} available")]
    UnexpectedEof {
        /// What was being read.
        what: &'static str,
        /// Offset of the field.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the buffer.
        available: usize,
    },
    /// A length or count field was negative.
    #[error("negative {what} {value} at offset {offset}")]
    NegativeLength {
        /// What the length describes.
        what: &'static str,
        /// Offset of the field.
        offset: usize,
        /// The value read.
        value: i64,
    },
    /// A C string was not NUL-terminated within the buffer.
    #[error("missing NUL terminator for {what} starting at offset {offset}")]
    MissingNul {
        /// What was being read.
        what: &'static str,
        /// Offset where the string starts.
        offset: usize,
    },
    /// A name was not valid UTF-8.
    #[error("invalid UTF-8 in {what} at offset {offset}")]
    InvalidUtf8 {
        /// What was being read.
        what: &'static str,
        /// Offset where the string starts.
        offset: usize,
    },
    /// A byte did not have one of the allowed values.
    #[error("invalid {what} byte 0x{byte:02x} at offset {offset}")]
    InvalidByte {
        /// What the byte was supposed to be.
        what: &'static str,
        /// Offset of the byte.
        offset: usize,
        /// The byte found.
        byte: u8,
    },
    /// Bytes were left after a complete message.
    #[error("{remaining} trailing bytes after pgoutput message at offset {offset}")]
    TrailingBytes {
        /// Offset of the first extra byte.
        offset: usize,
        /// How many bytes were left.
        remaining: usize,
    },
}

/// Bounds-checked big-endian cursor over the input.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n);
        match end.and_then(|end| self.buf.get(self.pos..end)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(DecodeError::UnexpectedEof {
                what,
                offset: self.pos,
                needed: n,
                available: self.remaining(),
            }),
        }
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(u8::from_be_bytes(self.array(what)?))
    }

    fn i16(&mut self, what: &'static str) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    /// Reads a NUL-terminated UTF-8 string.
    fn cstr(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        let start = self.pos;
        let rest = self.buf.get(start..).unwrap_or_default();
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::MissingNul {
                what,
                offset: start,
            })?;
        let bytes = rest.get(..len).unwrap_or_default();
        let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8 {
            what,
            offset: start,
        })?;
        self.pos = start + len + 1;
        Ok(s)
    }

    /// Reads a signed 16-bit count that must not be negative.
    fn count16(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let offset = self.pos;
        let n = self.i16(what)?;
        usize::try_from(n).map_err(|_| DecodeError::NegativeLength {
            what,
            offset,
            value: i64::from(n),
        })
    }

    /// Reads an i32 length followed by that many bytes.
    fn len_prefixed(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let offset = self.pos;
        let n = self.i32(what)?;
        let n = usize::try_from(n).map_err(|_| DecodeError::NegativeLength {
            what,
            offset,
            value: i64::from(n),
        })?;
        self.take(n, what)
    }

    fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            remaining => Err(DecodeError::TrailingBytes {
                offset: self.pos,
                remaining,
            }),
        }
    }
}

/// Decodes one pgoutput (protocol version 1) message.
///
/// `buf` must contain exactly one message; trailing bytes are an error.
///
/// # Errors
/// Returns a [`DecodeError`] describing the first malformation found.
pub fn decode(buf: &[u8]) -> Result<PgOutputMessage<'_>, DecodeError> {
    let mut r = Reader { buf, pos: 0 };
    let kind = match buf.first() {
        Some(&k) => k,
        None => return Err(DecodeError::Empty),
    };
    r.pos = 1;
    let msg = match kind {
        b'B' => PgOutputMessage::Begin(Begin {
            final_lsn: r.u64("begin final_lsn")?,
            timestamp: r.i64("begin timestamp")?,
            xid: r.u32("begin xid")?,
        }),
        b'C' => PgOutputMessage::Commit(Commit {
            flags: r.u8("commit flags")?,
            commit_lsn: r.u64("commit lsn")?,
            end_lsn: r.u64("commit end_lsn")?,
            timestamp: r.i64("commit timestamp")?,
        }),
        b'O' => PgOutputMessage::Origin(Origin {
            commit_lsn: r.u64("origin commit_lsn")?,
            name: r.cstr("origin name")?,
        }),
        b'R' => PgOutputMessage::Relation(decode_relation(&mut r)?),
        b'Y' => PgOutputMessage::Type(TypeMessage {
            oid: r.u32("type oid")?,
            namespace: r.cstr("type namespace")?,
            name: r.cstr("type name")?,
        }),
        b'I' => {
            let rel_id = r.u32("insert relation id")?;
            expect_marker(&mut r, b'N', "insert tuple marker")?;
            PgOutputMessage::Insert(Insert {
                rel_id,
                new: decode_tuple(&mut r)?,
            })
        }
        b'U' => {
            let rel_id = r.u32("update relation id")?;
            let offset = r.pos;
            let marker = r.u8("update tuple marker")?;
            let (old, new_marker_offset, new_marker) = match marker {
                b'K' | b'O' => {
                    let kind = if marker == b'K' {
                        OldTupleKind::Key
                    } else {
                        OldTupleKind::Old
                    };
                    let data = decode_tuple(&mut r)?;
                    let offset = r.pos;
                    let m = r.u8("update new tuple marker")?;
                    (Some(OldTuple { kind, data }), offset, m)
                }
                m => (None, offset, m),
            };
            if new_marker != b'N' {
                return Err(DecodeError::InvalidByte {
                    what: "update tuple marker",
                    offset: new_marker_offset,
                    byte: new_marker,
                });
            }
            PgOutputMessage::Update(Update {
                rel_id,
                old,
                new: decode_tuple(&mut r)?,
            })
        }
        b'D' => {
            let rel_id = r.u32("delete relation id")?;
            let offset = r.pos;
            let kind = match r.u8("delete tuple marker")? {
                b'K' => OldTupleKind::Key,
                b'O' => OldTupleKind::Old,
                byte => {
                    return Err(DecodeError::InvalidByte {
                        what: "delete tuple marker",
                        offset,
                        byte,
                    })
                }
            };
            PgOutputMessage::Delete(Delete {
                rel_id,
                old: OldTuple {
                    kind,
                    data: decode_tuple(&mut r)?,
                },
            })
        }
        b'T' => {
            let n = r.u32("truncate relation count")?;
            let options = r.u8("truncate options")?;
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            // Never trust a count for preallocation beyond what the buffer can hold.
            let mut rel_ids = Vec::with_capacity(n.min(r.remaining() / 4));
            for _ in 0..n {
                rel_ids.push(r.u32("truncate relation id")?);
            }
            PgOutputMessage::Truncate(Truncate { options, rel_ids })
        }
        b'M' => {
            let flags = r.u8("message flags")?;
            let lsn = r.u64("message lsn")?;
            let prefix = r.cstr("message prefix")?;
            let content = r.len_prefixed("message content length")?;
            PgOutputMessage::Message(LogicalMessage {
                flags,
                lsn,
                prefix,
                content,
            })
        }
        other => return Err(DecodeError::UnknownMessage(other)),
    };
    r.finish()?;
    Ok(msg)
}

fn expect_marker(r: &mut Reader<'_>, want: u8, what: &'static str) -> Result<(), DecodeError> {
    let offset = r.pos;
    let byte = r.u8(what)?;
    if byte == want {
        Ok(())
    } else {
        Err(DecodeError::InvalidByte { what, offset, byte })
    }
}

fn decode_relation(r: &mut Reader<'_>) -> Result<Relation, DecodeError> {
    let rel_id = r.u32("relation id")?;
    let namespace = r.cstr("relation namespace")?.to_owned();
    let name = r.cstr("relation name")?.to_owned();
    let offset = r.pos;
    let ri = r.u8("replica identity")?;
    let replica_identity = ReplicaIdentity::from_byte(ri).ok_or(DecodeError::InvalidByte {
        what: "replica identity",
        offset,
        byte: ri,
    })?;
    let ncols = r.count16("relation column count")?;
    // Each column takes at least 10 bytes (flags, empty name, oid, typmod).
    let mut columns = Vec::with_capacity(ncols.min(r.remaining() / 10));
    for _ in 0..ncols {
        columns.push(RelationColumn {
            flags: r.u8("column flags")?,
            name: r.cstr("column name")?.to_owned(),
            type_oid: r.u32("column type oid")?,
            type_modifier: r.i32("column type modifier")?,
        });
    }
    Ok(Relation {
        rel_id,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

fn decode_tuple<'a>(r: &mut Reader<'a>) -> Result<TupleData<'a>, DecodeError> {
    let ncols = r.count16("tuple column count")?;
    // Each column takes at least one byte.
    let mut columns = Vec::with_capacity(ncols.min(r.remaining()));
    for _ in 0..ncols {
        let offset = r.pos;
        let value = match r.u8("column kind")? {
            b'n' => ColumnValue::Null,
            b'u' => ColumnValue::UnchangedToast,
            b't' => ColumnValue::Text(r.len_prefixed("text value length")?),
            b'b' => ColumnValue::Binary(r.len_prefixed("binary value length")?),
            byte => {
                return Err(DecodeError::InvalidByte {
                    what: "column kind",
                    offset,
                    byte,
                })
            }
        };
        columns.push(value);
    }
    Ok(TupleData { columns })
}

impl fmt::Display for ReplicaIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
