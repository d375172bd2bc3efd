//! Read-only inspection of a log directory: no lock, no writer, no
//! recovery, no files created or changed (see the crate docs).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::Path;

use redb::DatabaseError;

use crate::checkpoint::{read_all, Checkpoint, CHECKPOINTS_FILE_NAME};
use crate::error::LogError;
use crate::segment::{
    index_file_name, parse_file_name, scan_segment, segment_file_name, SegCursor, Step, INDEX_EXT,
    SEGMENT_EXT, SMALL_READ_BUF_BYTES,
};

/// What [`inspect`] found in a log directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSummary {
    /// First lsn retained (the oldest segment's first lsn).
    pub oldest_lsn: u64,
    /// Lsn of the last tx_end record found (what
    /// [`ChangeLog::committed_lsn`](crate::ChangeLog::committed_lsn) is, or
    /// will be after the next open); `oldest_lsn - 1` when the retained
    /// segments hold none. While a writer is running it may be a few
    /// milliseconds ahead of that process's committed lsn (a transaction
    /// written but still being fsynced).
    pub current_lsn: u64,
    /// Number of segment files.
    pub segments: usize,
    /// Bytes of segment and index files (as
    /// [`ChangeLog::disk_usage_bytes`](crate::ChangeLog::disk_usage_bytes)).
    pub disk_usage_bytes: u64,
    /// Timestamp of record `oldest_lsn`, if it is visible
    /// (`oldest_lsn <= current_lsn`).
    pub oldest_timestamp_us: Option<i64>,
    /// Timestamp of the last tx_end record (record `current_lsn`, or the
    /// last commit recorded in the oldest segment's header when every
    /// segment holding one was trimmed); `None` if nothing was ever
    /// committed.
    pub newest_timestamp_us: Option<i64>,
    /// Consumer checkpoints, sorted by name; empty when they could not be
    /// read (see `checkpoints_unavailable`).
    pub checkpoints: Vec<Checkpoint>,
    /// Why `checkpoints` could not be read, if so: a running process has
    /// the log open (it holds `checkpoints.redb` exclusively: ask that
    /// process instead), or the process that had it open crashed (the file
    /// is repaired at the next open of the log).
    pub checkpoints_unavailable: Option<String>,
}

/// Summarises the log in `dir` without opening it: takes no lock, starts no
/// writer, runs no recovery (a torn tail is skipped over, not truncated) and
/// creates or changes no file. Works while another process has the log open
/// — except for the checkpoints, which that process holds exclusively
/// ([`LogSummary::checkpoints_unavailable`] says so). Blocking file I/O;
/// reads the newest segment(s) in full to find the last tx_end record.
///
/// Fails with [`LogError::NotALog`] if `dir` does not exist, is not a
/// directory or holds no segment file.
pub fn inspect(dir: &Path) -> Result<LogSummary, LogError> {
    let not_a_log = |reason: &str| LogError::NotALog {
        dir: dir.to_path_buf(),
        reason: reason.to_owned(),
    };
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(not_a_log("not a directory")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(not_a_log("the directory does not exist"))
        }
        Err(e) => return Err(LogError::io("inspect directory", dir, e)),
    }
    // A running writer may delete segments while we look (retention, a
    // discarded transaction): look again.
    let mut attempts = 0;
    loop {
        match inspect_once(dir) {
            Err(LogError::Io { source, .. })
                if source.kind() == io::ErrorKind::NotFound && attempts < 5 =>
            {
                attempts += 1;
            }
            res => return res,
        }
    }
}

fn inspect_once(dir: &Path) -> Result<LogSummary, LogError> {
    let mut bases = Vec::new();
    let mut idx_bases = HashSet::new();
    let listing = fs::read_dir(dir).map_err(|e| LogError::io("list directory", dir, e))?;
    for entry in listing {
        let entry = entry.map_err(|e| LogError::io("list directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        match parse_file_name(name) {
            Some((0, _)) => {}
            Some((base, SEGMENT_EXT)) => bases.push(base),
            Some((base, INDEX_EXT)) => {
                idx_bases.insert(base);
            }
            _ => {}
        }
    }
    bases.sort_unstable();
    let Some(&oldest) = bases.first() else {
        return Err(LogError::NotALog {
            dir: dir.to_path_buf(),
            reason: "it holds no segment files (*.seg)".into(),
        });
    };

    let mut disk_usage_bytes = 0;
    for &base in &bases {
        let seg = dir.join(segment_file_name(base));
        disk_usage_bytes += fs::metadata(&seg)
            .map_err(|e| LogError::io("stat", &seg, e))?
            .len();
        if idx_bases.contains(&base) {
            // An index may vanish with its segment, or not be written yet.
            disk_usage_bytes +=
                fs::metadata(dir.join(index_file_name(base))).map_or(0, |m| m.len());
        }
    }

    // The last tx_end record, searched from the newest segment backwards,
    // as recovery does (but without cutting anything).
    let mut current_lsn = oldest.saturating_sub(1);
    let mut newest_timestamp_us = None;
    for (i, &base) in bases.iter().enumerate().rev() {
        let scan = scan_segment(&dir.join(segment_file_name(base)), base, u64::MAX)?;
        if let Some((mark, _)) = scan.last_tx_end {
            current_lsn = mark.lsn;
            newest_timestamp_us = Some(mark.timestamp_us);
            break;
        }
        if i == 0 {
            newest_timestamp_us = scan
                .header
                .map(|h| h.prev_commit)
                .filter(|c| c.lsn != 0)
                .map(|c| c.timestamp_us);
        }
    }

    let oldest_timestamp_us = if oldest <= current_lsn {
        Some(first_record_timestamp(dir, oldest)?)
    } else {
        None
    };
    let (checkpoints, checkpoints_unavailable) = read_checkpoints(dir);
    Ok(LogSummary {
        oldest_lsn: oldest,
        current_lsn,
        segments: bases.len(),
        disk_usage_bytes,
        oldest_timestamp_us,
        newest_timestamp_us,
        checkpoints,
        checkpoints_unavailable,
    })
}

/// Timestamp of the first record of segment `base`.
fn first_record_timestamp(dir: &Path, base: u64) -> Result<i64, LogError> {
    let path = dir.join(segment_file_name(base));
    let mut cursor = SegCursor::open(&path, SMALL_READ_BUF_BYTES)?;
    let io_err = |e| LogError::io("read segment", &path, e);
    let corrupt = |offset| LogError::Corrupt {
        segment: path.clone(),
        offset,
    };
    match cursor.read_header().map_err(io_err)? {
        Ok(h) if h.base_lsn == base => {}
        _ => return Err(corrupt(0)),
    }
    let at = cursor.offset();
    match cursor.next().map_err(io_err)? {
        Step::Record(rec) if rec.header.lsn == base => Ok(rec.header.timestamp_us),
        _ => Err(corrupt(at)),
    }
}

/// The checkpoints, or why they cannot be read.
fn read_checkpoints(dir: &Path) -> (Vec<Checkpoint>, Option<String>) {
    let path = dir.join(CHECKPOINTS_FILE_NAME);
    match fs::metadata(&path) {
        Ok(_) => {}
        // Never opened by this version, or no checkpoint store yet.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return (Vec::new(), None),
        Err(e) => {
            return (
                Vec::new(),
                Some(format!("cannot access {}: {e}", path.display())),
            )
        }
    }
    let db = redb::Builder::new()
        .set_cache_size(1024 * 1024)
        .open_read_only(&path);
    let reason = match db {
        Ok(db) => match read_all(&db) {
            Ok(list) => return (list, None),
            Err(e) => format!("cannot read {}: {e}", path.display()),
        },
        Err(DatabaseError::DatabaseAlreadyOpen) => {
            "the log is open in a running spillway process, which holds the checkpoint database; ask that process".into()
        }
        Err(DatabaseError::RepairAborted) => {
            "the checkpoint database was not closed cleanly (crash?) and needs a repair, which the next open of the log performs".into()
        }
        Err(e) => format!("cannot open {}: {e}", path.display()),
    };
    (Vec::new(), Some(reason))
}
