//! Opening a log directory: discovery, tail recovery and index loading.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use tracing::warn;

use crate::error::LogError;
use crate::index::{decode_index_file, encode_index_file, SegmentIndex};
use crate::record::{
    decode_record, encode_segment_header, peek_record_len, CommitMark, SegmentHeader,
    RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use crate::segment::{
    cut_tail_file, cut_tail_segments, index_file_name, parse_file_name, remove_if_exists,
    scan_segment, segment_file_name, sync_dir, sync_file, truncate_file, write_file_atomically,
    ScanStop, Segment, INDEX_EXT, SEGMENT_EXT, TMP_EXT,
};
use crate::{CommitPosition, LogOptions};

/// State handed from recovery to the log and its writer.
pub(crate) struct Recovered {
    /// All segments, oldest first; the last one is active.
    pub(crate) segments: Vec<Arc<Segment>>,
    /// The active segment, opened for appending, positioned at its end.
    pub(crate) active_file: File,
    /// Full index of the active segment.
    pub(crate) active_index: SegmentIndex,
    /// Last visible tx_end record.
    pub(crate) last_commit: Option<CommitPosition>,
    /// Last visible lsn.
    pub(crate) committed_lsn: u64,
    /// Newest timestamp among trimmed records, as far as known (see
    /// `Shared::trimmed_max_ts`).
    pub(crate) trimmed_max_ts: i64,
}

fn to_position(mark: CommitMark) -> Option<CommitPosition> {
    (mark.lsn != 0).then_some(CommitPosition {
        lsn: mark.lsn,
        pg_commit_lsn: mark.pg_commit_lsn,
        pg_end_lsn: mark.pg_end_lsn,
        timestamp_us: mark.timestamp_us,
    })
}

/// Creates a new segment file containing only its header, fsynced.
pub(crate) fn create_segment_file(
    dir: &Path,
    base_lsn: u64,
    prev_commit: Option<CommitPosition>,
) -> Result<File, LogError> {
    let path = dir.join(segment_file_name(base_lsn));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| LogError::io("create segment", &path, e))?;
    let header = SegmentHeader {
        base_lsn,
        prev_commit: prev_commit
            .map(|p| CommitMark {
                lsn: p.lsn,
                pg_commit_lsn: p.pg_commit_lsn,
                pg_end_lsn: p.pg_end_lsn,
                timestamp_us: p.timestamp_us,
            })
            .unwrap_or_default(),
    };
    file.write_all(&encode_segment_header(&header))
        .map_err(|e| LogError::io("write segment header", &path, e))?;
    file.sync_all()
        .map_err(|e| LogError::io("fsync", &path, e))?;
    Ok(file)
}

/// Opens `opts.dir` (creating it if needed) and recovers it:
///
/// 1. delete leftover `*.tmp` files and `.idx` files without a segment;
/// 2. scan segments from the newest backwards, validating every record, until
///    one contains a valid tx_end record (or the oldest is reached);
/// 3. truncate that segment just after its last valid tx_end record (or to
///    its bare header), delete every newer segment, fsync file and directory;
/// 4. load (or rebuild by scanning) the sparse index of every older segment.
pub(crate) fn recover(opts: &LogOptions) -> Result<Recovered, LogError> {
    let dir = opts.dir.as_path();
    let interval = opts.index_interval_bytes;
    fs::create_dir_all(dir).map_err(|e| LogError::io("create directory", dir, e))?;

    let mut bases = Vec::new();
    let mut idx_bases = Vec::new();
    let listing = fs::read_dir(dir).map_err(|e| LogError::io("list directory", dir, e))?;
    for entry in listing {
        let entry = entry.map_err(|e| LogError::io("list directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        match parse_file_name(name) {
            Some((0, _)) => warn!(
                file = name,
                "change log: ignoring file with lsn 0 in its name"
            ),
            Some((base, SEGMENT_EXT)) => bases.push(base),
            Some((base, INDEX_EXT)) => idx_bases.push(base),
            // Half-written files of an atomic write (an index, a marker, the
            // kept bytes of a torn tail) that a crash left behind.
            _ if name.ends_with(&format!(".{TMP_EXT}")) => {
                remove_if_exists(&entry.path())?;
            }
            _ => {}
        }
    }
    bases.sort_unstable();
    apply_durable_end(dir, &mut bases)?;
    for base in idx_bases {
        if bases.binary_search(&base).is_err() {
            remove_if_exists(&dir.join(index_file_name(base)))?;
        }
    }

    if bases.is_empty() {
        drop(create_segment_file(dir, 1, None)?);
        bases.push(1);
    }

    // Tail recovery: find the newest valid tx_end record. Only the newest
    // segment may end in a torn tail: every older one was fsynced whole
    // before the next was created, so damage there (or damage followed by
    // valid records anywhere) is refused, never cut — cutting would delete
    // durable data that PostgreSQL was told it may forget.
    let newest = bases.len() - 1;
    let mut cut_at = newest;
    let (cut_offset, last_commit, committed_lsn, header_ok) = loop {
        let base = bases.get(cut_at).copied().unwrap_or(1);
        let path = dir.join(segment_file_name(base));
        let scan = scan_segment(&path, base, interval)?;
        match scan.stop {
            ScanStop::End => {}
            ScanStop::Torn { offset } | ScanStop::Bad { offset } => {
                let expected = scan.index.last_lsn + 1;
                if cut_at != newest {
                    let next = bases.get(cut_at + 1).copied().unwrap_or(base);
                    return Err(LogError::Damaged {
                        segment: path,
                        offset,
                        reason: format!("{:?} before lsn {expected}", scan.stop),
                        follows: format!("the newer segment {}", segment_file_name(next)),
                    });
                }
                // A bad length field reads as a record running past the
                // end (Torn), a bad checksum as Bad: either may be damage
                // in front of durable records, so both are checked.
                check_tail_is_torn(&path, offset, expected)?;
                keep_torn_bytes(dir, &path, offset);
                warn!(segment = %path.display(), stop = ?scan.stop, "change log recovery: discarding a torn tail (bytes written but never made durable)");
            }
        }
        if let Some((mark, end)) = scan.last_tx_end {
            break (end, to_position(mark), mark.lsn, true);
        }
        if cut_at == 0 {
            let prev = scan.header.and_then(|h| to_position(h.prev_commit));
            // Every record before the oldest retained segment was visible
            // when it was trimmed, so the log is committed up to its base.
            let committed = base.saturating_sub(1);
            break (
                SEGMENT_HEADER_LEN as u64,
                prev,
                committed,
                scan.header.is_some(),
            );
        }
        cut_at -= 1;
    };

    // Delete every segment after the cut, newest first (a crash in between
    // leaves a state that recovers to the same cut).
    let active_base = bases.get(cut_at).copied().unwrap_or(1);
    cut_tail_segments(
        dir,
        bases.get(cut_at + 1..).unwrap_or_default(),
        active_base,
        "after the last complete transaction (recovery)",
    )?;
    bases.truncate(cut_at + 1);
    let active_path = dir.join(segment_file_name(active_base));

    let active_file = if header_ok {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&active_path)
            .map_err(|e| LogError::io("open segment", &active_path, e))?
    } else {
        // No valid header (crash while creating it): start the file afresh.
        warn!(segment = %active_path.display(), "change log recovery: rewriting damaged segment header");
        remove_if_exists(&active_path)?;
        create_segment_file(dir, active_base, last_commit)?
    };
    // Truncate, then fsync always, not only after a truncation: the bytes kept
    // may be only in the page cache (a crash of the process, not the machine,
    // between a write and its group fsync). The committed position is published
    // — and confirmed to PostgreSQL — only once they are on disk; likewise the
    // directory (a segment created just before the crash). Then the active index
    // is rebuilt from the (now clean) file.
    let scan = cut_tail_file(
        dir,
        &active_file,
        &active_path,
        active_base,
        cut_offset,
        interval,
    )?;
    let active_index = scan.index;

    // Sealed segments: load or rebuild their indexes.
    let mut segments = Vec::with_capacity(bases.len());
    for (i, &base) in bases.iter().enumerate() {
        if base == active_base {
            segments.push(Arc::new(Segment::new(dir, active_index.clone(), 0)));
            break;
        }
        let next_base = bases.get(i + 1).copied().unwrap_or(active_base);
        let (index, idx_bytes) = load_sealed_index(dir, base, next_base - 1, interval)?;
        segments.push(Arc::new(Segment::new(dir, index, idx_bytes)));
    }

    // What trimming deleted before the oldest segment: its header carries
    // the last commit before it (the best bound a reopen has).
    // (The trimmed marker is exact; the header is the fallback for a log
    // trimmed before the marker existed, or with a damaged marker.)
    let trimmed_max_ts = match bases.first() {
        Some(&first) if first > 1 => {
            let oldest = scan_header(&dir.join(segment_file_name(first)));
            let from_header =
                oldest.and_then(|h| (h.prev_commit.lsn != 0).then_some(h.prev_commit.timestamp_us));
            match (read_trimmed_max_ts(dir), from_header) {
                (Some(marker), Some(header)) => marker.max(header),
                (Some(ts), None) | (None, Some(ts)) => ts,
                // Unknown: every timestamp may be in the trimmed range.
                (None, None) => i64::MAX,
            }
        }
        _ => i64::MIN,
    };

    Ok(Recovered {
        trimmed_max_ts,
        segments,
        active_file,
        active_index,
        last_commit,
        committed_lsn,
    })
}

/// Loads the `.idx` of a sealed segment, or rebuilds it by scanning.
fn load_sealed_index(
    dir: &Path,
    base: u64,
    last_lsn: u64,
    interval: u64,
) -> Result<(SegmentIndex, u64), LogError> {
    let seg_path = dir.join(segment_file_name(base));
    let idx_path = dir.join(index_file_name(base));
    let seg_len = fs::metadata(&seg_path)
        .map_err(|e| LogError::io("stat", &seg_path, e))?
        .len();
    if let Ok(bytes) = fs::read(&idx_path) {
        match decode_index_file(&bytes) {
            Ok(idx)
                if idx.base_lsn == base
                    && idx.last_lsn == last_lsn
                    && idx.end_offset == seg_len =>
            {
                return Ok((idx, bytes.len() as u64));
            }
            Ok(_) => {
                warn!(index = %idx_path.display(), "change log: index does not match its segment; rebuilding")
            }
            Err(e) => {
                warn!(index = %idx_path.display(), error = %e, "change log: damaged index; rebuilding")
            }
        }
    }
    let scan = scan_segment(&seg_path, base, interval)?;
    if scan.stop != ScanStop::End || scan.index.last_lsn != last_lsn {
        // Keep the log available; readers reaching the damage get Corrupt.
        warn!(segment = %seg_path.display(), stop = ?scan.stop, last_lsn = scan.index.last_lsn, expected = last_lsn,
            "change log: sealed segment is damaged; readers will get a corrupt-data error there");
        return Ok((scan.index, 0));
    }
    let bytes = encode_index_file(&scan.index);
    match write_file_atomically(&idx_path, &bytes) {
        Ok(()) => Ok((scan.index, bytes.len() as u64)),
        Err(e) => {
            warn!(error = %e, "change log: could not write rebuilt index");
            Ok((scan.index, 0))
        }
    }
}

/// The size of the blocks a file system writes back; a crash can leave a
/// whole block of a file unwritten (it reads back as zeros) while later
/// blocks made it to disk.
const FS_BLOCK: u64 = 4096;

/// Decides what the invalid bytes at `offset` of the newest segment are.
///
/// * Nothing valid after them: a **torn tail** — the last write before a
///   crash, never made durable. `Ok(())`: recovery cuts it.
/// * A valid record after them, with a whole file-system block of zeros in
///   between: also a torn tail. Write-back after a crash can leave such a
///   hole (an unwritten block reads as zeros) before blocks that did reach
///   the disk; a hole means no fsync covering it ever succeeded, so nothing
///   from the hole on was durable or confirmed. `Ok(())`.
/// * A valid record after them without such a hole: **damage** of durable
///   data (a flipped bit, an overwritten record). `Err(Damaged)`: cutting
///   would delete confirmed transactions.
fn check_tail_is_torn(path: &Path, offset: u64, expected_lsn: u64) -> Result<(), LogError> {
    let bytes = fs::read(path).map_err(|e| LogError::io("read segment", path, e))?;
    let from = usize::try_from(offset).unwrap_or(usize::MAX);
    let Some(rest) = bytes.get(from..) else {
        return Ok(());
    };
    let Some((at, lsn)) = find_valid_record(rest, expected_lsn) else {
        return Ok(());
    };
    let valid_at = offset + at as u64;
    let reason = match decode_record(rest) {
        Err(e) => e.to_string(),
        Ok(r) => format!("expected lsn {expected_lsn}, found lsn {}", r.header.lsn),
    };
    if has_zero_block(rest, offset, valid_at) {
        warn!(segment = %path.display(), offset, valid_at, %reason, "change log recovery: unwritten block before later records (a crash during write-back); treating as a torn tail");
        return Ok(());
    }
    Err(LogError::Damaged {
        segment: path.to_path_buf(),
        offset,
        reason,
        follows: format!("a valid record with lsn {lsn} at offset {valid_at}"),
    })
}

/// The first offset in `bytes` where a complete, checksum-valid record with
/// lsn `>= min_lsn` starts, and its lsn.
pub(crate) fn find_valid_record(bytes: &[u8], min_lsn: u64) -> Option<(usize, u64)> {
    let mut at = 0usize;
    while at + RECORD_HEADER_LEN <= bytes.len() {
        let rest = bytes.get(at..).unwrap_or_default();
        // Cheap plausibility first (flags, lsn, length), then the checksum.
        let plausible = rest.get(24).is_some_and(|f| *f <= 1)
            && rest
                .get(8..16)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .is_some_and(|b| u64::from_le_bytes(b) >= min_lsn.max(1))
            && peek_record_len(rest).is_ok_and(|n| n <= rest.len());
        if plausible {
            if let Ok(rec) = decode_record(rest) {
                return Some((at, rec.header.lsn));
            }
        }
        at += 1;
    }
    None
}

/// Copies the invalid bytes a recovery is about to cut (from `offset` to the
/// end of the segment) to `<segment>.<offset>.torn` next to it, for
/// inspection: they were never durable, but a person investigating a crash
/// may want them. Best effort — a failure is logged, never fatal. Only a
/// torn write (a machine crash, not a process crash) leaves such bytes, so
/// these files are rare; nothing deletes them.
fn keep_torn_bytes(dir: &Path, path: &Path, offset: u64) {
    let Ok(bytes) = fs::read(path) else { return };
    let Some(rest) = usize::try_from(offset).ok().and_then(|o| bytes.get(o..)) else {
        return;
    };
    if rest.is_empty() {
        return;
    }
    let name = format!(
        "{}.{offset}.torn",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("segment")
    );
    let target = dir.join(name);
    match write_file_atomically(&target, rest) {
        Ok(()) => {
            warn!(file = %target.display(), bytes = rest.len(), "change log recovery: kept the cut bytes for inspection")
        }
        Err(e) => warn!(error = %e, "change log recovery: could not keep the cut bytes"),
    }
}

/// Whether `bytes` (starting at file offset `base`) holds a hole a crash
/// during write-back leaves, ending at or before file offset `end`: an
/// aligned all-zero file-system block, or zeros from `base` to the end of
/// its block (a block whose beginning was durable before and whose new
/// part was never written back).
pub(crate) fn has_zero_block(bytes: &[u8], base: u64, end: u64) -> bool {
    let mut block = base.div_ceil(FS_BLOCK) * FS_BLOCK;
    if block > base && block <= end {
        let head = (block - base) as usize;
        if bytes.get(..head).is_some_and(|b| b.iter().all(|x| *x == 0)) {
            return true;
        }
    }
    while block + FS_BLOCK <= end {
        let lo = (block - base) as usize;
        let hi = lo + FS_BLOCK as usize;
        if bytes.get(lo..hi).is_some_and(|b| b.iter().all(|x| *x == 0)) {
            return true;
        }
        block += FS_BLOCK;
    }
    false
}

/// Name of the marker written when a failed write or fsync could not be
/// undone by truncating the segment (see [`write_durable_end`]).
pub(crate) const DURABLE_END_FILE: &str = "durable-end";
const DURABLE_END_MAGIC: [u8; 8] = *b"SPWLDUR\0";

/// Persists "segment `base_lsn` is durable up to byte `offset`; anything
/// after it may be page-cache bytes that never reached the disk". Written
/// after a failed write or fsync when truncating the segment to its durable
/// end failed too; the next open cuts there before reading anything.
pub(crate) fn write_durable_end(dir: &Path, base_lsn: u64, offset: u64) -> Result<(), LogError> {
    let mut payload = Vec::with_capacity(16);
    payload.extend_from_slice(&base_lsn.to_le_bytes());
    payload.extend_from_slice(&offset.to_le_bytes());
    crate::marker::write_marker(
        dir,
        DURABLE_END_FILE,
        &DURABLE_END_MAGIC,
        &payload,
        "write durable-end marker",
    )
}

pub(crate) const TRIMMED_FILE: &str = "trimmed";
const TRIMMED_MAGIC: [u8; 8] = *b"SPWLTRM\0";

/// Persists the largest record timestamp trimming has deleted, so that a
/// reopened log still maps a timestamp inside the trimmed range below its
/// oldest record (see `ChangeLog::lsn_for_timestamp`). Written (fsynced,
/// renamed into place) *before* the segments are deleted.
pub(crate) fn write_trimmed_max_ts(dir: &Path, max_ts: i64) -> Result<(), LogError> {
    crate::marker::write_marker(
        dir,
        TRIMMED_FILE,
        &TRIMMED_MAGIC,
        &max_ts.to_le_bytes(),
        "write trimmed marker",
    )
}

/// The timestamp [`write_trimmed_max_ts`] stored, if any (a damaged file
/// counts as none: the caller falls back to the oldest segment's header).
fn read_trimmed_max_ts(dir: &Path) -> Option<i64> {
    let p = crate::marker::read_marker(dir, TRIMMED_FILE, &TRIMMED_MAGIC)?;
    <[u8; 8]>::try_from(p.as_slice())
        .ok()
        .map(i64::from_le_bytes)
}

/// Honours a durable-end marker left by a failed write or fsync: cuts the
/// named segment there (and deletes newer ones, which cannot hold durable
/// data either), makes that durable, then removes the marker.
fn apply_durable_end(dir: &Path, bases: &mut Vec<u64>) -> Result<(), LogError> {
    let path = dir.join(DURABLE_END_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(LogError::io("read durable-end marker", &path, e)),
    };
    let field = |at: usize| {
        bytes
            .get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    let crc_ok = bytes.len() == 28
        && bytes.get(24..28).and_then(|b| <[u8; 4]>::try_from(b).ok())
            == Some(crc32c::crc32c(bytes.get(..24).unwrap_or_default()).to_le_bytes());
    let (Some(base), Some(offset), true, true) = (
        field(8),
        field(16),
        crc_ok,
        bytes.get(..8) == Some(&DURABLE_END_MAGIC[..]),
    ) else {
        // Written by rename after an fsync: it is whole or absent.
        return Err(LogError::Corrupt {
            segment: path,
            offset: 0,
        });
    };
    for &newer in bases.iter().filter(|b| **b > base).rev() {
        warn!(
            segment = newer,
            "change log recovery: deleting a segment written after a failed fsync"
        );
        remove_if_exists(&dir.join(segment_file_name(newer)))?;
        remove_if_exists(&dir.join(index_file_name(newer)))?;
    }
    bases.retain(|b| *b <= base);
    let seg_path = dir.join(segment_file_name(base));
    if let Ok(file) = OpenOptions::new().write(true).open(&seg_path) {
        let len = file
            .metadata()
            .map_err(|e| LogError::io("stat", &seg_path, e))?
            .len();
        if len > offset {
            warn!(segment = %seg_path.display(), from = len, to = offset, "change log recovery: cutting what a failed fsync left unconfirmed");
            truncate_file(&file, &seg_path, dir, offset)?;
        }
        sync_file(&file, &seg_path, dir)?;
    }
    sync_dir(dir)?;
    remove_if_exists(&path)?;
    sync_dir(dir)
}

/// The valid header of the segment file at `path`, if any.
fn scan_header(path: &Path) -> Option<SegmentHeader> {
    let bytes = {
        use std::io::Read;
        let mut f = File::open(path).ok()?;
        let mut buf = [0u8; SEGMENT_HEADER_LEN];
        f.read_exact(&mut buf).ok()?;
        buf
    };
    crate::record::decode_segment_header(&bytes).ok()
}
