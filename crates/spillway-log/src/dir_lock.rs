//! The single-process lock of a log directory: an exclusive advisory lock
//! on its `LOCK` file (plus an in-process registry, for platforms without
//! file locks).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::LogError;
use crate::lock::lock;

/// Name of the lock file inside the log directory.
pub(crate) const LOCK_FILE_NAME: &str = "LOCK";

/// Directories locked by this process (canonical paths).
static OPEN_DIRS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Holds the lock on a directory until dropped. Shared (in an `Arc`) by the
/// log's state and every [`CheckpointStore`](crate::CheckpointStore) clone.
#[derive(Debug)]
pub(crate) struct DirLock {
    /// Canonical directory path (the registry key).
    dir: PathBuf,
    /// The open, locked `LOCK` file; closing it releases the lock.
    file: Option<File>,
}

impl DirLock {
    /// Locks `dir` (which must exist) or fails with
    /// [`LogError::AlreadyOpen`].
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock, LogError> {
        let canonical = dir
            .canonicalize()
            .map_err(|e| LogError::io("resolve directory", dir, e))?;
        {
            let mut open = lock(&OPEN_DIRS);
            if open.contains(&canonical) {
                return Err(LogError::AlreadyOpen {
                    dir: dir.to_path_buf(),
                });
            }
            open.push(canonical.clone());
        }
        // From here on, dropping `guard` unregisters the directory.
        let mut guard = DirLock {
            dir: canonical,
            file: None,
        };
        let path = dir.join(LOCK_FILE_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| LogError::io("open lock file", &path, e))?;
        match file.try_lock() {
            Ok(()) => {
                // For operators: who holds the directory. Best effort.
                let pid = format!("{}\n", std::process::id());
                let _ = file
                    .set_len(0)
                    .and_then(|()| file.write_all(pid.as_bytes()));
            }
            Err(TryLockError::WouldBlock) => {
                return Err(LogError::AlreadyOpen {
                    dir: dir.to_path_buf(),
                })
            }
            Err(TryLockError::Error(e)) if e.kind() == io::ErrorKind::Unsupported => {
                tracing::warn!(
                    dir = %dir.display(),
                    "file locks are not supported here; make sure only one spillway process uses this change log directory"
                );
            }
            Err(TryLockError::Error(e)) => return Err(LogError::io("lock", &path, e)),
        }
        guard.file = Some(file);
        Ok(guard)
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Release the file lock before the in-process registration, so
        // that a new open that passes the registry also gets the file lock.
        drop(self.file.take());
        lock(&OPEN_DIRS).retain(|d| d != &self.dir);
    }
}
