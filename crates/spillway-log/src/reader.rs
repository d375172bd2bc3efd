//! Sequential readers.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::error::LogError;
use crate::lock::read;
use crate::record::SEGMENT_HEADER_LEN;
use crate::segment::{open_checked, SegCursor, Segment, Step, READ_BUF_BYTES};
use crate::{LogRecord, Shared};

/// A reader's open segment.
struct Position {
    seg: Arc<Segment>,
    cursor: SegCursor,
    /// Last lsn stored in `seg`, or `u64::MAX` while it is the active segment.
    bound: u64,
    /// `Shared::discards` before `cursor` was opened.
    discards: u64,
}

/// Reads visible records in lsn order. Reads are blocking file I/O: call
/// from `spawn_blocking` or a dedicated thread, and wait for new data with
/// [`ChangeLog::subscribe`](crate::ChangeLog::subscribe).
pub struct LogReader {
    shared: Arc<Shared>,
    next_lsn: u64,
    pos: Option<Position>,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("next_lsn", &self.next_lsn)
            .finish_non_exhaustive()
    }
}

impl LogReader {
    pub(crate) fn new(shared: Arc<Shared>, next_lsn: u64) -> Self {
        LogReader {
            shared,
            next_lsn,
            pos: None,
        }
    }

    /// Lsn of the next record this reader returns.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Reads up to `max` visible records (at most `max_bytes` of payload,
    /// but always at least one record if one is visible), starting at
    /// [`next_lsn`](LogReader::next_lsn). Returns an empty `Vec` when caught
    /// up with the committed lsn.
    ///
    /// Errors: [`LogError::Trimmed`] if retention deleted the reader's
    /// position; [`LogError::Corrupt`] if a record fails validation (the
    /// reader stays positioned before it, it never skips data).
    pub fn read_batch(&mut self, max: usize, max_bytes: usize) -> Result<Vec<LogRecord>, LogError> {
        let committed = self.shared.committed_lsn();
        if self.next_lsn > committed || max == 0 {
            // Still report a trimmed position even when caught up.
            let oldest = self.shared.oldest_lsn();
            if self.next_lsn < oldest {
                return Err(LogError::Trimmed {
                    requested: self.next_lsn,
                    oldest,
                });
            }
            return Ok(Vec::new());
        }
        // The cursor may have read ahead of the committed lsn, into records
        // that a discard has since removed and whose lsns were reused. Any
        // such discard finished before the reused lsns were committed, so
        // (loaded after `committed`) the counter shows it: start afresh.
        let discards = self.shared.discards.load(Ordering::Acquire);
        if self.pos.as_ref().is_some_and(|p| p.discards != discards) {
            self.pos = None;
        }
        self.locate(discards)?;
        let wanted = (committed - self.next_lsn + 1).min(max as u64) as usize;
        let mut out = Vec::with_capacity(wanted.min(4096));
        let mut bytes = 0usize;
        while out.len() < wanted && (out.is_empty() || bytes < max_bytes) {
            if self.pos.as_ref().is_none_or(|p| self.next_lsn > p.bound) {
                self.locate(discards)?;
            }
            let Some(pos) = self.pos.as_mut() else {
                return Err(LogError::Closed);
            };
            let offset = pos.cursor.offset();
            let step = pos
                .cursor
                .next()
                .map_err(|e| LogError::io("read segment", &pos.seg.path, e))?;
            match step {
                Step::Record(rec) if rec.header.lsn == self.next_lsn => {
                    bytes += rec.payload.len();
                    out.push(LogRecord {
                        lsn: rec.header.lsn,
                        timestamp_us: rec.header.timestamp_us,
                        payload: rec.payload.to_vec(),
                    });
                    self.next_lsn += 1;
                }
                _ if !out.is_empty() => {
                    // Hand out the good records first; the next call
                    // re-reads this spot and reports the damage.
                    pos.cursor
                        .seek(offset)
                        .map_err(|e| LogError::io("seek segment", &pos.seg.path, e))?;
                    return Ok(out);
                }
                other => {
                    // Committed records are complete and valid by
                    // construction; anything else is damage. Drop the
                    // position so a retry re-reads from the index.
                    let reason = describe(&other, self.next_lsn);
                    tracing::error!(segment = %pos.seg.path.display(), offset, %reason, "change log: corrupt record");
                    let err = pos.seg.corrupt(offset);
                    self.pos = None;
                    return Err(err);
                }
            }
        }
        Ok(out)
    }

    /// Makes `self.pos` the segment holding `next_lsn`, positioned exactly at
    /// that record. `discards` is `Shared::discards`, loaded before.
    fn locate(&mut self, discards: u64) -> Result<(), LogError> {
        let (seg, bound) = self.shared.segment_for(self.next_lsn)?;
        if let Some(pos) = self.pos.as_mut() {
            if Arc::ptr_eq(&pos.seg, &seg) {
                pos.bound = bound;
                return Ok(());
            }
        }
        self.pos = None;
        let mut cursor = match open_checked(&seg, READ_BUF_BYTES) {
            Ok(cursor) => cursor,
            Err(e) if self.shared.was_trimmed(&seg, &e) => {
                return Err(LogError::Trimmed {
                    requested: self.next_lsn,
                    oldest: self.shared.oldest_lsn(),
                })
            }
            Err(e) => return Err(e),
        };
        let (offset, mut lsn) = if self.next_lsn == seg.base_lsn {
            (SEGMENT_HEADER_LEN as u64, seg.base_lsn)
        } else {
            match read(&seg.index).seek(self.next_lsn) {
                Some(e) => (e.offset, e.lsn),
                None => (SEGMENT_HEADER_LEN as u64, seg.base_lsn),
            }
        };
        cursor
            .seek(offset)
            .map_err(|e| LogError::io("seek segment", &seg.path, e))?;
        while lsn < self.next_lsn {
            let at = cursor.offset();
            match cursor
                .next()
                .map_err(|e| LogError::io("read segment", &seg.path, e))?
            {
                Step::Record(rec) if rec.header.lsn == lsn => lsn += 1,
                other => {
                    let reason = describe(&other, lsn);
                    tracing::error!(segment = %seg.path.display(), offset = at, %reason, "change log: corrupt record");
                    return Err(seg.corrupt(at));
                }
            }
        }
        self.pos = Some(Position {
            seg,
            cursor,
            bound,
            discards,
        });
        Ok(())
    }
}

/// Why a step that should have produced record `expected` did not.
pub(crate) fn describe(step: &Step<'_>, expected: u64) -> String {
    match step {
        Step::Record(rec) => format!("expected lsn {expected}, found lsn {}", rec.header.lsn),
        Step::End => format!("segment ends before lsn {expected}"),
        Step::Torn => format!("segment ends inside lsn {expected}"),
        Step::Bad(e) => e.to_string(),
    }
}
