//! Segment files: naming, the shared per-segment state, a buffered record
//! cursor and the validating scanner used by recovery and index rebuilds.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::error::LogError;
use crate::index::SegmentIndex;
use crate::lock::{read, write};
use crate::record::{
    decode_record, decode_segment_header, peek_record_len, CommitMark, DecodeError, RecordRef,
    SegmentHeader, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};

/// Default read buffer of cursors.
pub(crate) const READ_BUF_BYTES: usize = 256 * 1024;
/// Read buffer used for short lookups (seeks, time lookups).
pub(crate) const SMALL_READ_BUF_BYTES: usize = 64 * 1024;

pub(crate) const SEGMENT_EXT: &str = "seg";
pub(crate) const INDEX_EXT: &str = "idx";
pub(crate) const TMP_EXT: &str = "tmp";

/// File name of the segment whose first lsn is `base_lsn`.
pub(crate) fn segment_file_name(base_lsn: u64) -> String {
    format!("{base_lsn:020}.{SEGMENT_EXT}")
}

/// File name of the index sidecar of the segment `base_lsn`.
pub(crate) fn index_file_name(base_lsn: u64) -> String {
    format!("{base_lsn:020}.{INDEX_EXT}")
}

/// Parses `00000000000000000001.seg` style names into (base lsn, extension).
pub(crate) fn parse_file_name(name: &str) -> Option<(u64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}

/// fsyncs a directory so that created/deleted/renamed entries are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    let f = File::open(dir).map_err(|e| LogError::io("open directory", dir, e))?;
    f.sync_all()
        .map_err(|e| LogError::io("fsync directory", dir, e))
}

/// fsyncs a segment file (data and metadata, e.g. its length after a
/// truncation). `dir` is the log directory (for fault injection in tests).
pub(crate) fn sync_file(file: &File, path: &Path, dir: &Path) -> Result<(), LogError> {
    crate::faults::check(dir, crate::faults::Op::Fsync)
        .and_then(|()| file.sync_all())
        .map_err(|e| LogError::io("fsync", path, e))
}

/// Truncates a segment file to `len` bytes (not yet durable: fsync after).
pub(crate) fn truncate_file(
    file: &File,
    path: &Path,
    dir: &Path,
    len: u64,
) -> Result<(), LogError> {
    crate::faults::check(dir, crate::faults::Op::Truncate)
        .and_then(|()| file.set_len(len))
        .map_err(|e| LogError::io("truncate", path, e))
}

/// The tail cut, shared by recovery at open and by the writer's `discard_uncommitted`
/// (one routine, so the two cannot drift apart). First step: deletes the segments
/// `newer` (ascending bases) newest first, with their indexes, and the index of the
/// segment `cut_base` the cut goes into (it becomes active again and gets a fresh index
/// when it is sealed). A crash in between leaves a log that recovers to the same cut.
pub(crate) fn cut_tail_segments(
    dir: &Path,
    newer: &[u64],
    cut_base: u64,
    why: &str,
) -> Result<(), LogError> {
    for &base in newer.iter().rev() {
        tracing::info!(segment = base, "change log: deleting segment {why}");
        remove_if_exists(&dir.join(segment_file_name(base)))?;
        remove_if_exists(&dir.join(index_file_name(base)))?;
    }
    remove_if_exists(&dir.join(index_file_name(cut_base)))?;
    Ok(())
}

/// Second step of the tail cut: truncates the segment `file` (at `path`, first lsn
/// `base`) to `offset` when it is longer, fsyncs it always (the bytes kept may be only in
/// the page cache) and the directory, leaves the file positioned at its end, and rescans
/// it; the scan must end exactly at `offset` (else the file changed under us or the disk
/// returns different bytes: [`LogError::Corrupt`]).
pub(crate) fn cut_tail_file(
    dir: &Path,
    file: &File,
    path: &Path,
    base: u64,
    offset: u64,
    index_interval: u64,
) -> Result<ScanOutcome, LogError> {
    let len = file
        .metadata()
        .map_err(|e| LogError::io("stat", path, e))?
        .len();
    if len != offset {
        tracing::info!(segment = %path.display(), from = len, to = offset, "change log: truncating");
        truncate_file(file, path, dir, offset)?;
    }
    sync_file(file, path, dir)?;
    sync_dir(dir)?;
    (&*file)
        .seek(SeekFrom::End(0))
        .map_err(|e| LogError::io("seek", path, e))?;
    let scan = scan_segment(path, base, index_interval)?;
    if scan.stop != ScanStop::End || scan.index.end_offset != offset {
        return Err(LogError::Corrupt {
            segment: path.to_path_buf(),
            offset: scan.index.end_offset,
        });
    }
    Ok(scan)
}

/// One segment as known to readers and the writer.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base_lsn: u64,
    pub(crate) path: PathBuf,
    pub(crate) idx_path: PathBuf,
    /// Published index: for the active segment it covers every record up to
    /// the last fsync; for sealed segments it is final.
    pub(crate) index: RwLock<SegmentIndex>,
    /// Size of the `.idx` sidecar (0 while none exists).
    pub(crate) idx_bytes: AtomicU64,
}

impl Segment {
    pub(crate) fn new(dir: &Path, index: SegmentIndex, idx_bytes: u64) -> Self {
        let base_lsn = index.base_lsn;
        Segment {
            base_lsn,
            path: dir.join(segment_file_name(base_lsn)),
            idx_path: dir.join(index_file_name(base_lsn)),
            index: RwLock::new(index),
            idx_bytes: AtomicU64::new(idx_bytes),
        }
    }

    pub(crate) fn disk_bytes(&self) -> u64 {
        read(&self.index).end_offset + self.idx_bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn corrupt(&self, offset: u64) -> LogError {
        LogError::Corrupt {
            segment: self.path.clone(),
            offset,
        }
    }
}

/// Result of one cursor step.
#[derive(Debug)]
pub(crate) enum Step<'a> {
    /// A complete, checksum-verified record.
    Record(RecordRef<'a>),
    /// Clean end of file at a record boundary.
    End,
    /// The file ends inside a record.
    Torn,
    /// The bytes at the cursor do not form a valid record.
    Bad(DecodeError),
}

/// Buffered sequential reader of one segment file.
pub(crate) struct SegCursor {
    file: File,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// File offset of `buf[start]`.
    pos: u64,
    default_cap: usize,
}

impl std::fmt::Debug for SegCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegCursor")
            .field("pos", &self.pos)
            .field("buffered", &(self.end - self.start))
            .finish_non_exhaustive()
    }
}

impl SegCursor {
    /// Opens `path` positioned at offset 0.
    pub(crate) fn open(path: &Path, buf_bytes: usize) -> Result<Self, LogError> {
        let file = File::open(path).map_err(|e| LogError::io("open segment", path, e))?;
        Ok(SegCursor {
            file,
            buf: Vec::new(),
            start: 0,
            end: 0,
            pos: 0,
            default_cap: buf_bytes.max(RECORD_HEADER_LEN * 2),
        })
    }

    /// The buffered, not yet consumed bytes.
    fn buffered(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }

    /// File offset of the next unread byte.
    pub(crate) fn offset(&self) -> u64 {
        self.pos
    }

    /// Repositions the cursor at `offset`.
    pub(crate) fn seek(&mut self, offset: u64) -> io::Result<()> {
        let buffered_from = self.pos - self.start as u64;
        let buffered_to = self.pos + (self.end - self.start) as u64;
        if offset >= buffered_from && offset <= buffered_to {
            // Inside the buffer: no syscall.
            self.start = (offset - buffered_from) as usize;
            self.pos = offset;
            return Ok(());
        }
        self.file.seek(SeekFrom::Start(offset))?;
        self.start = 0;
        self.end = 0;
        self.pos = offset;
        Ok(())
    }

    /// Ensures at least `n` bytes are buffered from the cursor on. Returns
    /// false if the file ends first.
    fn fill(&mut self, n: usize) -> io::Result<bool> {
        if self.end - self.start >= n {
            return Ok(true);
        }
        if n > self.buf.len() && n > self.default_cap {
            // Never allocate for a length the file cannot hold (a corrupt
            // length field must not cause a huge allocation).
            let file_len = self.file.metadata()?.len();
            if self.pos.saturating_add(n as u64) > file_len {
                return Ok(false);
            }
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let want = n.max(self.default_cap);
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        while self.end < n {
            let Some(dst) = self.buf.get_mut(self.end..) else {
                return Ok(false);
            };
            let got = match self.file.read(dst) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if got == 0 {
                return Ok(false);
            }
            self.end += got;
        }
        Ok(true)
    }

    /// Reads and validates the segment header (cursor must be at offset 0).
    pub(crate) fn read_header(&mut self) -> io::Result<Result<SegmentHeader, DecodeError>> {
        if !self.fill(SEGMENT_HEADER_LEN)? {
            return Ok(Err(DecodeError::Incomplete {
                needed: Some(SEGMENT_HEADER_LEN),
            }));
        }
        let res = decode_segment_header(self.buffered());
        if res.is_ok() {
            self.start += SEGMENT_HEADER_LEN;
            self.pos += SEGMENT_HEADER_LEN as u64;
        }
        Ok(res)
    }

    /// Reads the next record, verifying length and checksum.
    pub(crate) fn next(&mut self) -> io::Result<Step<'_>> {
        if !self.fill(4)? {
            return Ok(if self.end == self.start {
                Step::End
            } else {
                Step::Torn
            });
        }
        let total = match peek_record_len(self.buffered()) {
            Ok(total) => total,
            Err(e) => return Ok(Step::Bad(e)),
        };
        if !self.fill(total)? {
            return Ok(Step::Torn);
        }
        let start = self.start;
        match decode_record(self.buf.get(start..start + total).unwrap_or_default()) {
            Ok(rec) => {
                self.start += total;
                self.pos += total as u64;
                Ok(Step::Record(rec))
            }
            Err(DecodeError::Incomplete { .. }) => Ok(Step::Torn),
            Err(e) => Ok(Step::Bad(e)),
        }
    }
}

/// Why a scan stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScanStop {
    /// Clean end of file after the last record.
    End,
    /// The file ends inside a record starting at `offset`.
    Torn { offset: u64 },
    /// Invalid bytes (bad header, length, checksum, flags or lsn) at `offset`.
    Bad { offset: u64 },
}

/// Outcome of scanning a segment from its start.
#[derive(Debug)]
pub(crate) struct ScanOutcome {
    /// Header, if valid and matching the expected base lsn.
    pub(crate) header: Option<SegmentHeader>,
    /// Index over the valid records before `stop`.
    pub(crate) index: SegmentIndex,
    /// Last valid tx_end record and the file offset just past it.
    pub(crate) last_tx_end: Option<(CommitMark, u64)>,
    pub(crate) stop: ScanStop,
}

/// Reads a whole segment, validating every record (length, CRC, dense lsns
/// starting at `base_lsn`), and stops at the first problem.
pub(crate) fn scan_segment(
    path: &Path,
    base_lsn: u64,
    index_interval: u64,
) -> Result<ScanOutcome, LogError> {
    let mut index = SegmentIndex::new(base_lsn);
    let mut cursor = SegCursor::open(path, READ_BUF_BYTES)?;
    let io_err = |e| LogError::io("read segment", path, e);
    let header = match cursor.read_header().map_err(io_err)? {
        Ok(h) if h.base_lsn == base_lsn => h,
        _ => {
            return Ok(ScanOutcome {
                header: None,
                index,
                last_tx_end: None,
                stop: ScanStop::Bad { offset: 0 },
            })
        }
    };
    let mut last_tx_end = None;
    let mut expected = base_lsn;
    let stop = loop {
        let offset = cursor.offset();
        match cursor.next().map_err(io_err)? {
            Step::Record(rec) => {
                let h = rec.header;
                if h.lsn != expected {
                    break ScanStop::Bad { offset };
                }
                let len = rec.encoded_len() as u64;
                index.observe(h.lsn, offset, len, h.timestamp_us, index_interval);
                if h.tx_end {
                    last_tx_end = Some((
                        CommitMark {
                            lsn: h.lsn,
                            pg_commit_lsn: h.pg_commit_lsn,
                            pg_end_lsn: h.pg_end_lsn,
                            timestamp_us: h.timestamp_us,
                        },
                        offset + len,
                    ));
                }
                expected += 1;
            }
            Step::End => break ScanStop::End,
            Step::Torn => break ScanStop::Torn { offset },
            Step::Bad(_) => break ScanStop::Bad { offset },
        }
    };
    Ok(ScanOutcome {
        header: Some(header),
        index,
        last_tx_end,
        stop,
    })
}

/// Writes `bytes` to `path` via a temporary file and a rename.
pub(crate) fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    use std::io::Write;
    let tmp = path.with_extension(TMP_EXT);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| LogError::io("create", &tmp, e))?;
    f.write_all(bytes)
        .map_err(|e| LogError::io("write", &tmp, e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| LogError::io("rename", path, e))
}

/// Removes a file, treating "not found" as success.
pub(crate) fn remove_if_exists(path: &Path) -> Result<bool, LogError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(LogError::io("delete", path, e)),
    }
}

/// Opens a segment for reading and checks its header; the cursor is left
/// just after the header.
pub(crate) fn open_checked(seg: &Arc<Segment>, buf_bytes: usize) -> Result<SegCursor, LogError> {
    let mut cursor = SegCursor::open(&seg.path, buf_bytes)?;
    match cursor
        .read_header()
        .map_err(|e| LogError::io("read segment", &seg.path, e))?
    {
        Ok(h) if h.base_lsn == seg.base_lsn => Ok(cursor),
        _ => Err(seg.corrupt(0)),
    }
}

/// Lets the writer replace the published index wholesale.
pub(crate) fn publish_index(seg: &Segment, local: &SegmentIndex) {
    write(&seg.index).catch_up(local);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(segment_file_name(1), "00000000000000000001.seg");
        assert_eq!(
            parse_file_name("00000000000000000001.seg"),
            Some((1, "seg"))
        );
        assert_eq!(
            parse_file_name(&index_file_name(u64::MAX)),
            Some((u64::MAX, "idx"))
        );
        assert_eq!(parse_file_name("0001.seg"), None);
        assert_eq!(parse_file_name("0000000000000000000a.seg"), None);
        assert_eq!(parse_file_name("junk"), None);
    }
}
