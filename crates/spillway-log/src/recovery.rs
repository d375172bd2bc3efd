//! Opening a log directory: discovery, tail recovery and index loading.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use tracing::{info, warn};

use crate::error::LogError;
use crate::index::{decode_index_file, encode_index_file, SegmentIndex};
use crate::record::{encode_segment_header, CommitMark, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::segment::{
    index_file_name, parse_file_name, remove_if_exists, scan_segment, segment_file_name, sync_dir,
    write_file_atomically, ScanStop, Segment, INDEX_EXT, SEGMENT_EXT, TMP_EXT,
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
            Some((_, TMP_EXT)) => {
                remove_if_exists(&entry.path())?;
            }
            _ => {}
        }
    }
    bases.sort_unstable();
    let mut dir_dirty = false;
    for base in idx_bases {
        if bases.binary_search(&base).is_err() {
            dir_dirty |= remove_if_exists(&dir.join(index_file_name(base)))?;
        }
    }

    if bases.is_empty() {
        drop(create_segment_file(dir, 1, None)?);
        bases.push(1);
        dir_dirty = true;
    }

    // Tail recovery: find the newest valid tx_end record.
    let mut cut_at = bases.len() - 1;
    let (cut_offset, last_commit, committed_lsn, header_ok) = loop {
        let base = bases.get(cut_at).copied().unwrap_or(1);
        let path = dir.join(segment_file_name(base));
        let scan = scan_segment(&path, base, interval)?;
        if scan.stop != ScanStop::End {
            warn!(segment = %path.display(), stop = ?scan.stop, "change log recovery: discarding torn or corrupt tail");
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
    for &base in bases.get(cut_at + 1..).unwrap_or_default().iter().rev() {
        info!(
            segment = base,
            "change log recovery: deleting segment after the last complete transaction"
        );
        remove_if_exists(&dir.join(segment_file_name(base)))?;
        remove_if_exists(&dir.join(index_file_name(base)))?;
        dir_dirty = true;
    }
    bases.truncate(cut_at + 1);
    let active_base = bases.last().copied().unwrap_or(1);
    let active_path = dir.join(segment_file_name(active_base));
    // The active segment gets a fresh index when it is sealed again.
    dir_dirty |= remove_if_exists(&dir.join(index_file_name(active_base)))?;

    let mut active_file = if header_ok {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&active_path)
            .map_err(|e| LogError::io("open segment", &active_path, e))?
    } else {
        // No valid header (crash while creating it): start the file afresh.
        warn!(segment = %active_path.display(), "change log recovery: rewriting damaged segment header");
        remove_if_exists(&active_path)?;
        dir_dirty = true;
        create_segment_file(dir, active_base, last_commit)?
    };
    let file_len = active_file
        .metadata()
        .map_err(|e| LogError::io("stat", &active_path, e))?
        .len();
    if file_len != cut_offset {
        info!(segment = %active_path.display(), from = file_len, to = cut_offset, "change log recovery: truncating");
        active_file
            .set_len(cut_offset)
            .map_err(|e| LogError::io("truncate", &active_path, e))?;
        active_file
            .sync_all()
            .map_err(|e| LogError::io("fsync", &active_path, e))?;
    }
    if dir_dirty {
        sync_dir(dir)?;
    }
    active_file
        .seek(SeekFrom::End(0))
        .map_err(|e| LogError::io("seek", &active_path, e))?;

    // Rebuild the active index from the (now clean) file.
    let scan = scan_segment(&active_path, active_base, interval)?;
    if scan.stop != ScanStop::End || scan.index.end_offset != cut_offset {
        // The file changed under us or the disk returns different bytes.
        return Err(LogError::Corrupt {
            segment: active_path,
            offset: scan.index.end_offset,
        });
    }
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

    Ok(Recovered {
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
