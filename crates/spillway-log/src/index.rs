//! Sans-IO sparse segment index and the `.idx` sidecar codec.
//!
//! A segment's index holds one [`IndexEntry`] per ~`index_interval_bytes`
//! of records: the lsn and file offset of the record that starts the chunk,
//! and the largest record timestamp inside the chunk (so time lookups stay
//! correct even if timestamps are not monotonic).

#![deny(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)]

use crate::record::{DecodeError, SEGMENT_HEADER_LEN};

/// Magic bytes at the start of every `.idx` file.
pub(crate) const INDEX_MAGIC: [u8; 8] = *b"SPWLIDX\0";
/// Version of the `.idx` format.
pub(crate) const INDEX_VERSION: u32 = 1;
const INDEX_FIXED_LEN: usize = 48;
const ENTRY_LEN: usize = 24;

/// One sparse index entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// Lsn of the record starting the chunk.
    pub(crate) lsn: u64,
    /// File offset of that record.
    pub(crate) offset: u64,
    /// Largest timestamp of the records in the chunk.
    pub(crate) max_ts: i64,
}

/// Index and summary of one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SegmentIndex {
    pub(crate) base_lsn: u64,
    pub(crate) entries: Vec<IndexEntry>,
    /// Lsn of the last record (`base_lsn - 1` when empty).
    pub(crate) last_lsn: u64,
    /// File offset just past the last record.
    pub(crate) end_offset: u64,
    /// Largest record timestamp (`i64::MIN` when empty).
    pub(crate) max_ts: i64,
}

impl SegmentIndex {
    /// An index for an empty segment.
    pub(crate) fn new(base_lsn: u64) -> Self {
        SegmentIndex {
            base_lsn,
            entries: Vec::new(),
            last_lsn: base_lsn.saturating_sub(1),
            end_offset: SEGMENT_HEADER_LEN as u64,
            max_ts: i64::MIN,
        }
    }

    /// Whether the segment holds no records.
    pub(crate) fn is_empty(&self) -> bool {
        self.last_lsn < self.base_lsn
    }

    /// Records the record `lsn` at `offset`, `len` bytes long. Must be called
    /// for every record, in order.
    pub(crate) fn observe(&mut self, lsn: u64, offset: u64, len: u64, ts: i64, interval: u64) {
        match self.entries.last_mut() {
            Some(last) if offset.saturating_sub(last.offset) < interval.max(1) => {
                last.max_ts = last.max_ts.max(ts);
            }
            _ => self.entries.push(IndexEntry {
                lsn,
                offset,
                max_ts: ts,
            }),
        }
        self.last_lsn = lsn;
        self.end_offset = offset + len;
        self.max_ts = self.max_ts.max(ts);
    }

    /// The entry to start from to reach `lsn`: the last entry with
    /// `entry.lsn <= lsn`.
    pub(crate) fn seek(&self, lsn: u64) -> Option<IndexEntry> {
        let n = self.entries.partition_point(|e| e.lsn <= lsn);
        n.checked_sub(1).and_then(|i| self.entries.get(i)).copied()
    }

    /// The first chunk that may hold a record with timestamp `>= ts`.
    pub(crate) fn first_chunk_with_ts(&self, ts: i64) -> Option<IndexEntry> {
        self.entries.iter().find(|e| e.max_ts >= ts).copied()
    }

    /// Brings `self` (a published copy) up to date with `src`, a superset
    /// built by appending to the same segment. Cheap: only copies new entries.
    pub(crate) fn catch_up(&mut self, src: &SegmentIndex) {
        let n = self.entries.len();
        if n > src.entries.len() || self.base_lsn != src.base_lsn {
            *self = src.clone();
            return;
        }
        if let (Some(dst), Some(s)) = (
            n.checked_sub(1).and_then(|i| self.entries.get_mut(i)),
            n.checked_sub(1).and_then(|i| src.entries.get(i)),
        ) {
            *dst = *s;
        }
        self.entries
            .extend_from_slice(src.entries.get(n..).unwrap_or_default());
        self.last_lsn = src.last_lsn;
        self.end_offset = src.end_offset;
        self.max_ts = src.max_ts;
    }
}

/// Encodes the sidecar file for a sealed segment.
pub(crate) fn encode_index_file(idx: &SegmentIndex) -> Vec<u8> {
    let mut out = Vec::with_capacity(INDEX_FIXED_LEN + idx.entries.len() * ENTRY_LEN + 4);
    out.extend_from_slice(&INDEX_MAGIC);
    out.extend_from_slice(&INDEX_VERSION.to_le_bytes());
    out.extend_from_slice(&(idx.entries.len() as u32).to_le_bytes());
    out.extend_from_slice(&idx.base_lsn.to_le_bytes());
    out.extend_from_slice(&idx.last_lsn.to_le_bytes());
    out.extend_from_slice(&idx.end_offset.to_le_bytes());
    out.extend_from_slice(&idx.max_ts.to_le_bytes());
    for e in &idx.entries {
        out.extend_from_slice(&e.lsn.to_le_bytes());
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.max_ts.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn u64_at(buf: &[u8], at: usize) -> Result<u64, DecodeError> {
    buf.get(at..at + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .ok_or(DecodeError::Incomplete { needed: None })
}

fn u32_at(buf: &[u8], at: usize) -> Result<u32, DecodeError> {
    buf.get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes)
        .ok_or(DecodeError::Incomplete { needed: None })
}

/// Decodes and verifies a sidecar file. Structural checks only; the caller
/// compares base lsn / segment length with the segment itself.
pub(crate) fn decode_index_file(buf: &[u8]) -> Result<SegmentIndex, DecodeError> {
    if buf.len() < INDEX_FIXED_LEN + 4 {
        return Err(DecodeError::Incomplete { needed: None });
    }
    if buf.get(..8) != Some(&INDEX_MAGIC[..]) {
        return Err(DecodeError::BadMagic);
    }
    let body_len = buf.len() - 4;
    let stored = u32_at(buf, body_len)?;
    let computed = crc32c::crc32c(buf.get(..body_len).unwrap_or_default());
    if stored != computed {
        return Err(DecodeError::ChecksumMismatch { stored, computed });
    }
    let version = u32_at(buf, 8)?;
    if version != INDEX_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let count = u32_at(buf, 12)? as usize;
    let expected_len = count
        .checked_mul(ENTRY_LEN)
        .and_then(|n| n.checked_add(INDEX_FIXED_LEN));
    if expected_len != Some(body_len) {
        return Err(DecodeError::BadLength(count as u64));
    }
    let mut entries = Vec::with_capacity(count);
    for i in 0..count {
        let at = INDEX_FIXED_LEN + i * ENTRY_LEN;
        entries.push(IndexEntry {
            lsn: u64_at(buf, at)?,
            offset: u64_at(buf, at + 8)?,
            max_ts: u64_at(buf, at + 16)? as i64,
        });
    }
    let idx = SegmentIndex {
        base_lsn: u64_at(buf, 16)?,
        last_lsn: u64_at(buf, 24)?,
        end_offset: u64_at(buf, 32)?,
        max_ts: u64_at(buf, 40)? as i64,
        entries,
    };
    // Internal consistency: entries strictly increasing and inside the segment.
    let mut prev: Option<IndexEntry> = None;
    for e in &idx.entries {
        let ordered = prev.is_none_or(|p| e.lsn > p.lsn && e.offset > p.offset);
        if !ordered
            || e.lsn < idx.base_lsn
            || e.lsn > idx.last_lsn
            || e.offset < SEGMENT_HEADER_LEN as u64
            || e.offset >= idx.end_offset
        {
            return Err(DecodeError::BadLength(e.offset));
        }
        prev = Some(*e);
    }
    if idx.entries.first().is_some_and(|e| e.lsn != idx.base_lsn) {
        return Err(DecodeError::BadLength(0));
    }
    Ok(idx)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn sample() -> SegmentIndex {
        let mut idx = SegmentIndex::new(10);
        let mut off = SEGMENT_HEADER_LEN as u64;
        for lsn in 10..50u64 {
            let ts = if lsn == 30 { 1_000 } else { lsn as i64 };
            idx.observe(lsn, off, 100, ts, 350);
            off += 100;
        }
        idx
    }

    #[test]
    fn observe_builds_sparse_entries() {
        let idx = sample();
        assert_eq!(idx.entries.len(), 10);
        assert_eq!(idx.entries[0].lsn, 10);
        assert_eq!(idx.entries[1].lsn, 14);
        assert_eq!(idx.last_lsn, 49);
        assert_eq!(idx.max_ts, 1_000);
        assert_eq!(idx.seek(9), None);
        assert_eq!(idx.seek(10).unwrap().lsn, 10);
        assert_eq!(idx.seek(17).unwrap().lsn, 14);
        assert_eq!(idx.seek(1000).unwrap().lsn, 46);
        // Chunk [30..34) holds ts 1000.
        assert_eq!(idx.first_chunk_with_ts(500).unwrap().lsn, 30);
        assert_eq!(idx.first_chunk_with_ts(20).unwrap().lsn, 18);
        assert_eq!(idx.first_chunk_with_ts(2_000), None);
    }

    #[test]
    fn file_round_trip_and_damage() {
        let idx = sample();
        let bytes = encode_index_file(&idx);
        assert_eq!(decode_index_file(&bytes).unwrap(), idx);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(decode_index_file(&bad).is_err(), "byte {i}");
        }
        for cut in 0..bytes.len() {
            assert!(decode_index_file(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn catch_up_copies_incrementally() {
        let full = sample();
        let mut published = SegmentIndex::new(10);
        let mut partial = SegmentIndex::new(10);
        let mut off = SEGMENT_HEADER_LEN as u64;
        for lsn in 10..50u64 {
            let ts = if lsn == 30 { 1_000 } else { lsn as i64 };
            partial.observe(lsn, off, 100, ts, 350);
            off += 100;
            if lsn % 7 == 0 {
                published.catch_up(&partial);
                assert_eq!(published, partial);
            }
        }
        published.catch_up(&partial);
        assert_eq!(published, full);
    }
}
