//! Sans-IO codec for segment headers and records.
//!
//! Everything here works on byte slices only: no file access, no allocation
//! beyond what the caller asks for, and no panics on any input (decoding
//! arbitrary bytes returns a [`DecodeError`], never panics). The layouts are
//! documented in the crate-level docs.

#![deny(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)]

use std::fmt;

/// Magic bytes at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SPWLSEG\0";
/// On-disk format version written into (and required in) every segment header.
pub const FORMAT_VERSION: u32 = 1;
/// Length of the segment header in bytes.
pub const SEGMENT_HEADER_LEN: usize = 64;
/// Length of the fixed record header (everything before the payload).
pub const RECORD_HEADER_LEN: usize = 41;
/// Largest payload a record may carry (256 MiB).
pub const MAX_PAYLOAD_LEN: usize = 256 * 1024 * 1024;
/// Record flag bit: the record ends a transaction.
pub const FLAG_TX_END: u8 = 0x01;
const KNOWN_FLAGS: u8 = FLAG_TX_END;

/// Why bytes could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ends before the record (or header) does; `needed` is the
    /// total number of bytes the complete item occupies (when known).
    Incomplete {
        /// Total length of the item, if the length field could be read.
        needed: Option<usize>,
    },
    /// The length field is larger than [`MAX_PAYLOAD_LEN`].
    BadLength(u64),
    /// The stored CRC32C does not match the bytes.
    ChecksumMismatch {
        /// CRC stored in the record.
        stored: u32,
        /// CRC computed over the bytes.
        computed: u32,
    },
    /// Unknown flag bits are set.
    BadFlags(u8),
    /// The segment header magic is wrong.
    BadMagic,
    /// The segment header carries a format version this code cannot read.
    UnsupportedVersion(u32),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Incomplete { needed: Some(n) } => {
                write!(f, "incomplete data (item needs {n} bytes)")
            }
            DecodeError::Incomplete { needed: None } => write!(f, "incomplete data"),
            DecodeError::BadLength(n) => write!(f, "implausible payload length {n}"),
            DecodeError::ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            DecodeError::BadFlags(flags) => write!(f, "unknown flag bits {flags:#04x}"),
            DecodeError::BadMagic => write!(f, "bad magic"),
            DecodeError::UnsupportedVersion(v) => write!(f, "unsupported format version {v}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A transaction commit position carried in segment headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CommitMark {
    /// Log lsn of the tx_end record (0 = none).
    pub lsn: u64,
    /// PostgreSQL commit lsn of that transaction.
    pub pg_commit_lsn: u64,
    /// PostgreSQL end lsn of that transaction.
    pub pg_end_lsn: u64,
    /// Timestamp of the tx_end record.
    pub timestamp_us: i64,
}

/// Decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Lsn of the first record in the segment.
    pub base_lsn: u64,
    /// Last tx_end record written before this segment (lsn 0 = none).
    pub prev_commit: CommitMark,
}

/// The fixed fields of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// Log sequence number.
    pub lsn: u64,
    /// Record timestamp, microseconds since the Unix epoch.
    pub timestamp_us: i64,
    /// Whether the record ends a transaction.
    pub tx_end: bool,
    /// PostgreSQL commit lsn of the record's transaction (opaque here).
    pub pg_commit_lsn: u64,
    /// PostgreSQL end lsn of the record's transaction (opaque here).
    pub pg_end_lsn: u64,
}

/// A record decoded in place from a byte slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Header fields.
    pub header: RecordHeader,
    /// Payload bytes (borrowed from the input).
    pub payload: &'a [u8],
}

impl RecordRef<'_> {
    /// Total encoded length of this record.
    pub fn encoded_len(&self) -> usize {
        RECORD_HEADER_LEN + self.payload.len()
    }
}

/// Total encoded length of a record with a payload of `payload_len` bytes.
pub const fn encoded_len(payload_len: usize) -> usize {
    RECORD_HEADER_LEN + payload_len
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = buf.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

fn read_u64(buf: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = buf.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

fn read_i64(buf: &[u8], at: usize) -> Option<i64> {
    read_u64(buf, at).map(|v| v as i64)
}

/// Appends the encoding of a record to `out`.
///
/// Returns `false` and leaves `out` unchanged if the payload is longer than
/// [`MAX_PAYLOAD_LEN`].
pub fn encode_record(out: &mut Vec<u8>, header: &RecordHeader, payload: &[u8]) -> bool {
    if payload.len() > MAX_PAYLOAD_LEN {
        return false;
    }
    let start = out.len();
    out.reserve(encoded_len(payload.len()));
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0u8; 4]); // crc placeholder
    out.extend_from_slice(&header.lsn.to_le_bytes());
    out.extend_from_slice(&header.timestamp_us.to_le_bytes());
    out.push(if header.tx_end { FLAG_TX_END } else { 0 });
    out.extend_from_slice(&header.pg_commit_lsn.to_le_bytes());
    out.extend_from_slice(&header.pg_end_lsn.to_le_bytes());
    out.extend_from_slice(payload);
    let rec = out.get(start..).unwrap_or_default();
    let crc = record_crc(rec);
    if let Some(slot) = out.get_mut(start + 4..start + 8) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
    true
}

/// CRC32C of a record: covers the length field and everything after the
/// CRC field (`bytes[0..4] ++ bytes[8..]`).
fn record_crc(rec: &[u8]) -> u32 {
    let len_part = rec.get(..4).unwrap_or_default();
    let rest = rec.get(8..).unwrap_or_default();
    crc32c::crc32c_append(crc32c::crc32c(len_part), rest)
}

/// Reads just the total encoded length of the record starting at `buf[0]`.
///
/// Returns `Incomplete` if fewer than 4 bytes are available and `BadLength`
/// for an implausible length.
pub fn peek_record_len(buf: &[u8]) -> Result<usize, DecodeError> {
    let len = read_u32(buf, 0).ok_or(DecodeError::Incomplete { needed: None })? as usize;
    if len > MAX_PAYLOAD_LEN {
        return Err(DecodeError::BadLength(len as u64));
    }
    Ok(encoded_len(len))
}

/// Decodes and verifies the record at the start of `buf`.
///
/// Returns the record (borrowing its payload from `buf`); its total length
/// is [`RecordRef::encoded_len`]. Never panics.
pub fn decode_record(buf: &[u8]) -> Result<RecordRef<'_>, DecodeError> {
    let total = peek_record_len(buf)?;
    let rec = buf.get(..total).ok_or(DecodeError::Incomplete {
        needed: Some(total),
    })?;
    let incomplete = DecodeError::Incomplete {
        needed: Some(total),
    };
    let stored = read_u32(rec, 4).ok_or(incomplete)?;
    let computed = record_crc(rec);
    if stored != computed {
        return Err(DecodeError::ChecksumMismatch { stored, computed });
    }
    let lsn = read_u64(rec, 8).ok_or(incomplete)?;
    let timestamp_us = read_i64(rec, 16).ok_or(incomplete)?;
    let flags = *rec.get(24).ok_or(incomplete)?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(DecodeError::BadFlags(flags));
    }
    let pg_commit_lsn = read_u64(rec, 25).ok_or(incomplete)?;
    let pg_end_lsn = read_u64(rec, 33).ok_or(incomplete)?;
    let payload = rec.get(RECORD_HEADER_LEN..).ok_or(incomplete)?;
    Ok(RecordRef {
        header: RecordHeader {
            lsn,
            timestamp_us,
            tx_end: flags & FLAG_TX_END != 0,
            pg_commit_lsn,
            pg_end_lsn,
        },
        payload,
    })
}

/// Encodes a segment header (exactly [`SEGMENT_HEADER_LEN`] bytes).
pub fn encode_segment_header(header: &SegmentHeader) -> [u8; SEGMENT_HEADER_LEN] {
    let mut out = Vec::with_capacity(SEGMENT_HEADER_LEN);
    out.extend_from_slice(&SEGMENT_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
    out.extend_from_slice(&header.base_lsn.to_le_bytes());
    out.extend_from_slice(&header.prev_commit.lsn.to_le_bytes());
    out.extend_from_slice(&header.prev_commit.pg_commit_lsn.to_le_bytes());
    out.extend_from_slice(&header.prev_commit.pg_end_lsn.to_le_bytes());
    out.extend_from_slice(&header.prev_commit.timestamp_us.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // reserved
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    <[u8; SEGMENT_HEADER_LEN]>::try_from(out.as_slice()).unwrap_or([0; SEGMENT_HEADER_LEN])
}

/// Decodes and verifies a segment header from the start of `buf`.
pub fn decode_segment_header(buf: &[u8]) -> Result<SegmentHeader, DecodeError> {
    let hdr = buf
        .get(..SEGMENT_HEADER_LEN)
        .ok_or(DecodeError::Incomplete {
            needed: Some(SEGMENT_HEADER_LEN),
        })?;
    let incomplete = DecodeError::Incomplete {
        needed: Some(SEGMENT_HEADER_LEN),
    };
    if hdr.get(..8) != Some(&SEGMENT_MAGIC[..]) {
        return Err(DecodeError::BadMagic);
    }
    let version = read_u32(hdr, 8).ok_or(incomplete)?;
    let stored = read_u32(hdr, 60).ok_or(incomplete)?;
    let computed = crc32c::crc32c(hdr.get(..60).unwrap_or_default());
    if stored != computed {
        return Err(DecodeError::ChecksumMismatch { stored, computed });
    }
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let header_len = read_u32(hdr, 12).ok_or(incomplete)?;
    if header_len as usize != SEGMENT_HEADER_LEN {
        return Err(DecodeError::BadLength(u64::from(header_len)));
    }
    Ok(SegmentHeader {
        base_lsn: read_u64(hdr, 16).ok_or(incomplete)?,
        prev_commit: CommitMark {
            lsn: read_u64(hdr, 24).ok_or(incomplete)?,
            pg_commit_lsn: read_u64(hdr, 32).ok_or(incomplete)?,
            pg_end_lsn: read_u64(hdr, 40).ok_or(incomplete)?,
            timestamp_us: read_i64(hdr, 48).ok_or(incomplete)?,
        },
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn hdr(lsn: u64, tx_end: bool) -> RecordHeader {
        RecordHeader {
            lsn,
            timestamp_us: -5 + lsn as i64,
            tx_end,
            pg_commit_lsn: 0xdead_beef_0000 + lsn,
            pg_end_lsn: u64::MAX - lsn,
        }
    }

    #[test]
    fn record_round_trip() {
        let mut buf = Vec::new();
        assert!(encode_record(&mut buf, &hdr(7, true), b"hello"));
        assert!(encode_record(&mut buf, &hdr(8, false), b""));
        assert_eq!(buf.len(), encoded_len(5) + encoded_len(0));
        let a = decode_record(&buf).unwrap();
        assert_eq!(a.header, hdr(7, true));
        assert_eq!(a.payload, b"hello");
        let b = decode_record(&buf[a.encoded_len()..]).unwrap();
        assert_eq!(b.header, hdr(8, false));
        assert!(b.payload.is_empty());
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let mut buf = Vec::new();
        encode_record(&mut buf, &hdr(1, true), b"payload bytes");
        for cut in 0..buf.len() {
            match decode_record(&buf[..cut]) {
                Err(DecodeError::Incomplete { .. }) => {}
                other => panic!("cut {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode_record(&mut buf, &hdr(3, false), b"some payload");
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                assert!(decode_record(&bad).is_err(), "flip {byte}:{bit} undetected");
            }
        }
    }

    #[test]
    fn oversized_length_rejected_without_reading() {
        let mut buf = vec![0xff, 0xff, 0xff, 0xff];
        buf.extend_from_slice(&[0; 64]);
        assert_eq!(
            decode_record(&buf),
            Err(DecodeError::BadLength(u64::from(u32::MAX)))
        );
        assert!(!encode_record(
            &mut Vec::new(),
            &hdr(1, false),
            &vec![0; MAX_PAYLOAD_LEN + 1]
        ));
    }

    #[test]
    fn garbage_never_panics() {
        // Deterministic pseudo-random garbage.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..300 {
            let mut v = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.push(x as u8);
            }
            let _ = decode_record(&v);
            let _ = decode_segment_header(&v);
            let _ = peek_record_len(&v);
        }
    }

    #[test]
    fn segment_header_round_trip_and_damage() {
        let h = SegmentHeader {
            base_lsn: 42,
            prev_commit: CommitMark {
                lsn: 41,
                pg_commit_lsn: 1,
                pg_end_lsn: 2,
                timestamp_us: -3,
            },
        };
        let bytes = encode_segment_header(&h);
        assert_eq!(decode_segment_header(&bytes).unwrap(), h);
        assert!(matches!(
            decode_segment_header(&bytes[..10]),
            Err(DecodeError::Incomplete { .. })
        ));
        let mut bad = bytes;
        bad[0] ^= 1;
        assert_eq!(decode_segment_header(&bad), Err(DecodeError::BadMagic));
        let mut bad = bytes;
        bad[20] ^= 1;
        assert!(matches!(
            decode_segment_header(&bad),
            Err(DecodeError::ChecksumMismatch { .. })
        ));
    }
}
