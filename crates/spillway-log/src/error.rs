//! Error type of the change log.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong with the change log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// A file operation failed.
    #[error("change log i/o error: {op} {path}: {source}; check the disk, free space and permissions of the log directory")]
    Io {
        /// What was being done (e.g. "open", "fsync").
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A record or segment header failed validation; the data is not served.
    #[error("corrupt change log data in {segment} at offset {offset}; restore the log directory from a backup or re-snapshot the consumers")]
    Corrupt {
        /// Path of the damaged segment file.
        segment: PathBuf,
        /// Byte offset of the damaged record (or header) in that file.
        offset: u64,
    },
    /// An earlier write or fsync failed; the log refuses further appends.
    /// `cause` is the first failure (the operation, the file and the
    /// operating system's error, e.g. "No space left on device").
    #[error("change log stopped after a failed write or fsync ({cause}); fix the disk (free space, hardware errors in the kernel log), then restart spillway: what was not yet on disk is cut off and PostgreSQL resends it")]
    Poisoned {
        /// The first write or fsync failure, as one line.
        cause: String,
    },
    /// Recovery found damaged bytes with valid records after them: cutting
    /// there would delete data that was durable (and confirmed to the
    /// source), so the log refuses to open.
    #[error("change log segment {segment} is damaged at offset {offset} ({reason}) and valid data follows it ({follows}); spillway will not delete confirmed data: restore the log directory from a backup, or run `spillway admin cdc repair` to cut the log at the damage (the cut-off bytes are kept in a .damaged file; consumers past the cut get requery_required)")]
    Damaged {
        /// Path of the damaged segment file.
        segment: PathBuf,
        /// Byte offset of the first damaged byte (record or header).
        offset: u64,
        /// What is wrong there.
        reason: String,
        /// Where valid data was found after the damage.
        follows: String,
    },
    /// The appended lsn is not the next dense lsn.
    #[error("append out of sequence: expected lsn {expected}, got {got}; append records with dense lsns starting at next_lsn()")]
    LsnMismatch {
        /// The lsn the log expected (`next_lsn()`).
        expected: u64,
        /// The lsn that was supplied.
        got: u64,
    },
    /// The writer thread has stopped (closed or crashed).
    #[error("change log writer is closed; reopen the log to append again")]
    Closed,
    /// The requested position was deleted by retention.
    #[error("lsn {requested} was trimmed by retention (oldest retained lsn is {oldest}); requery from a snapshot or restart from the oldest lsn")]
    Trimmed {
        /// The lsn the reader wanted.
        requested: u64,
        /// The oldest lsn still retained.
        oldest: u64,
    },
    /// The payload is larger than the format allows.
    #[error("record payload of {len} bytes exceeds the {max}-byte limit; split the change or raise the limit")]
    RecordTooLarge {
        /// Payload length.
        len: usize,
        /// Maximum allowed payload length.
        max: usize,
    },
    /// Another spillway process (or another [`ChangeLog`](crate::ChangeLog) or
    /// [`CheckpointStore`](crate::CheckpointStore) in this process) has the
    /// directory open: it holds the exclusive lock on the directory's `LOCK`
    /// file.
    #[error(
        "change log directory {dir} is in use by another spillway process (or is already open in this process); stop that process or use a different directory (the LOCK file in the directory holds the pid of the last process that opened it)"
    )]
    AlreadyOpen {
        /// The directory.
        dir: PathBuf,
    },
    /// [`CheckpointStore::set`](crate::CheckpointStore::set) would move a
    /// checkpoint backward without `force`.
    #[error("checkpoint {name:?} is at lsn {current}; refusing to move it back to lsn {requested} (pass force to rewind a consumer on purpose)")]
    CheckpointBackward {
        /// The checkpoint's name.
        name: String,
        /// Its current lsn.
        current: u64,
        /// The lsn that was requested.
        requested: u64,
    },
    /// [`CheckpointStore::set_if`](crate::CheckpointStore::set_if): the
    /// checkpoint was changed by someone else.
    #[error("checkpoint {name:?} was moved to lsn {current} by someone else (an operator's rewind?); re-read it and continue from there")]
    CheckpointMoved {
        /// The checkpoint's name.
        name: String,
        /// Its current lsn (0 if it was deleted).
        current: u64,
    },
    /// A checkpoint name is unusable.
    #[error(
        "invalid checkpoint name {name:?}: {reason}; use a non-empty name of at most 256 bytes"
    )]
    InvalidCheckpointName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The checkpoint database (`checkpoints.redb`) failed.
    #[error("change log checkpoint store error: {op} {path}: {source}; check the disk and permissions of the log directory")]
    CheckpointStore {
        /// What was being done (e.g. "open", "commit").
        op: &'static str,
        /// The database file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// [`inspect`](crate::inspect) found no change log in the directory.
    #[error("no change log in {dir}: {reason}; check the configured log directory")]
    NotALog {
        /// The directory.
        dir: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// The options are unusable.
    #[error("invalid change log options: {0}; fix the configuration")]
    InvalidOptions(String),
}

impl LogError {
    /// Whether the same operation may succeed if tried again later, without anyone
    /// changing the log: an i/o error of a read or of the checkpoint database (a full
    /// file table, a disk that recovers), a checkpoint someone else moved (re-read it).
    /// Everything else needs a person or another request: damaged or corrupt data, a
    /// writer poisoned by a failed write or fsync (a restart reopens the log), a closed
    /// writer, a trimmed position, a bad lsn, name or option, a directory in use.
    ///
    /// Callers decide what "again" means for them (a sink retries with backoff; capture
    /// stops, since a failed append poisons the writer anyway).
    pub fn is_transient(&self) -> bool {
        match self {
            LogError::Io { .. }
            | LogError::CheckpointStore { .. }
            | LogError::CheckpointMoved { .. } => true,
            LogError::Corrupt { .. }
            | LogError::Poisoned { .. }
            | LogError::Damaged { .. }
            | LogError::LsnMismatch { .. }
            | LogError::Closed
            | LogError::Trimmed { .. }
            | LogError::RecordTooLarge { .. }
            | LogError::AlreadyOpen { .. }
            | LogError::CheckpointBackward { .. }
            | LogError::InvalidCheckpointName { .. }
            | LogError::NotALog { .. }
            | LogError::InvalidOptions(_) => false,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LogError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_means_trying_again_can_help() {
        let io = LogError::io("read", "/x", io::Error::from(io::ErrorKind::Interrupted));
        assert!(io.is_transient());
        assert!(LogError::CheckpointMoved {
            name: "n".into(),
            current: 1
        }
        .is_transient());
        for permanent in [
            LogError::Corrupt {
                segment: "/s".into(),
                offset: 0,
            },
            LogError::Poisoned { cause: "x".into() },
            LogError::Closed,
            LogError::Trimmed {
                requested: 1,
                oldest: 2,
            },
            LogError::LsnMismatch {
                expected: 1,
                got: 2,
            },
            LogError::InvalidOptions("x".into()),
        ] {
            assert!(!permanent.is_transient(), "{permanent}");
        }
    }
}
