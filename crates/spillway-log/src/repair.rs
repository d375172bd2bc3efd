//! Explicit repair of a damaged log directory (`spillway admin cdc repair`).
//!
//! [`ChangeLog::open`](crate::ChangeLog::open) refuses a directory whose
//! damage is followed by valid records ([`LogError::Damaged`]): cutting
//! there would delete transactions that were durable and confirmed to the
//! source. When no backup is available, [`repair`] makes that cut on the
//! operator's explicit request, keeping every byte it removes in a
//! `.damaged` file next to the segment (never deleted by Spillway). At the
//! next open, consumers whose checkpoint lies beyond the new end are reset
//! and get `requery_required` (see
//! [`CheckpointStore::reset_ahead`](crate::CheckpointStore::reset_ahead)).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::dir_lock::DirLock;
use crate::error::LogError;
use crate::segment::{
    index_file_name, parse_file_name, remove_if_exists, sync_dir, sync_file, truncate_file,
    SEGMENT_EXT,
};
use crate::{marker, recovery, LogOptions};

/// One cut made by [`repair`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairCut {
    /// The damaged segment.
    pub segment: PathBuf,
    /// Where it was cut (the first damaged byte).
    pub offset: u64,
    /// The file now holding the bytes that were cut off.
    pub saved_as: PathBuf,
    /// Newer segments moved aside whole (renamed to `*.seg.damaged`).
    pub set_aside: Vec<PathBuf>,
}

/// What [`repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// The cuts, in order (empty: the log needed no repair).
    pub cuts: Vec<RepairCut>,
}

/// Cuts the log in `opts.dir` at each damage that makes
/// [`ChangeLog::open`](crate::ChangeLog::open) refuse it, until it opens.
/// Takes the directory's lock ([`LogError::AlreadyOpen`] while Spillway
/// runs). Other errors (I/O, a bad marker) are returned as they are.
pub fn repair(opts: &LogOptions) -> Result<RepairReport, LogError> {
    opts.validate()?;
    fs::create_dir_all(&opts.dir).map_err(|e| LogError::io("create directory", &opts.dir, e))?;
    let _lock = DirLock::acquire(&opts.dir)?;
    let mut report = RepairReport::default();
    loop {
        match recovery::recover(opts) {
            Ok(rec) => {
                if !report.cuts.is_empty() {
                    // The lsns after the cut are handed out again: a new
                    // epoch, so clients that saw the old ones are told. The
                    // log's end moved back: an idle-confirm position beyond
                    // it no longer explains a slot ahead of the log.
                    let oldest = rec.segments.first().map_or(1, |s| s.base_lsn);
                    let epochs =
                        marker::load_or_create_epochs(&opts.dir, oldest, rec.committed_lsn)?;
                    marker::begin_epoch(&opts.dir, epochs, rec.committed_lsn + 1)?;
                }
                return Ok(report);
            }
            Err(LogError::Damaged {
                segment, offset, ..
            }) => {
                if report
                    .cuts
                    .iter()
                    .any(|c| c.segment == segment && c.offset == offset)
                {
                    // The same damage again: the cut did not take.
                    return Err(LogError::Corrupt { segment, offset });
                }
                // Before anything is cut (a crash in the middle must not
                // leave a cut log that looks whole): the idle-confirm
                // position no longer explains a slot ahead of the log, and
                // lsns from the damaged segment's first one on may be handed
                // out again.
                marker::remove_idle_confirmed(&opts.dir)?;
                marker::remove_trust_slot_once(&opts.dir)?;
                if let Some(base) = segment
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(crate::segment::parse_file_name)
                    .map(|(b, _)| b)
                {
                    let epochs = marker::load_or_create_epochs(&opts.dir, 1, 0)?;
                    marker::begin_epoch(&opts.dir, epochs, base)?;
                }
                let cut = set_aside(&opts.dir, &segment, offset)?;
                tracing::warn!(segment = %cut.segment.display(), offset, saved_as = %cut.saved_as.display(),
                    newer_segments = cut.set_aside.len(), "change log repair: cut a damaged segment");
                report.cuts.push(cut);
            }
            Err(e) => return Err(e),
        }
    }
}

/// A path next to `path` ending in `.damaged` that does not exist yet.
fn free_damaged_name(path: &Path) -> PathBuf {
    let base = path.as_os_str().to_string_lossy().into_owned();
    let mut candidate = PathBuf::from(format!("{base}.damaged"));
    let mut n = 1;
    while candidate.exists() {
        n += 1;
        candidate = PathBuf::from(format!("{base}.damaged-{n}"));
    }
    candidate
}

fn set_aside(dir: &Path, segment: &Path, offset: u64) -> Result<RepairCut, LogError> {
    let base = segment
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_file_name)
        .map(|(b, _)| b)
        .ok_or_else(|| LogError::Corrupt {
            segment: segment.to_path_buf(),
            offset,
        })?;
    // Newer segments cannot be read past the damage: move them aside whole.
    let mut newer = Vec::new();
    let listing = fs::read_dir(dir).map_err(|e| LogError::io("list directory", dir, e))?;
    for entry in listing {
        let entry = entry.map_err(|e| LogError::io("list directory", dir, e))?;
        let name = entry.file_name();
        if let Some((b, SEGMENT_EXT)) = name.to_str().and_then(parse_file_name) {
            if b > base {
                newer.push((b, entry.path()));
            }
        }
    }
    newer.sort();
    let mut moved = Vec::new();
    for (b, path) in newer.iter().rev() {
        let to = free_damaged_name(path);
        fs::rename(path, &to).map_err(|e| LogError::io("rename", path, e))?;
        remove_if_exists(&dir.join(index_file_name(*b)))?;
        moved.push(to);
    }
    moved.reverse();

    // Keep the cut-off bytes, durably, before cutting.
    let saved_as = free_damaged_name(segment);
    let mut src = OpenOptions::new()
        .read(true)
        .write(true)
        .open(segment)
        .map_err(|e| LogError::io("open segment", segment, e))?;
    let mut tail = Vec::new();
    src.seek(SeekFrom::Start(offset))
        .and_then(|_| src.read_to_end(&mut tail))
        .map_err(|e| LogError::io("read segment", segment, e))?;
    let mut out = File::create(&saved_as).map_err(|e| LogError::io("create", &saved_as, e))?;
    out.write_all(&tail)
        .and_then(|()| out.sync_all())
        .map_err(|e| LogError::io("write", &saved_as, e))?;
    sync_dir(dir)?;
    truncate_file(&src, segment, dir, offset)?;
    sync_file(&src, segment, dir)?;
    remove_if_exists(&dir.join(index_file_name(base)))?;
    sync_dir(dir)?;
    Ok(RepairCut {
        segment: segment.to_path_buf(),
        offset,
        saved_as,
        set_aside: moved,
    })
}
