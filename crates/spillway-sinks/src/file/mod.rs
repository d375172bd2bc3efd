//! The `file` sink: JSON lines to a file, or to standard output.
//!
//! One encoded event per line (the native JSON event by default; the
//! runtime's encoder decides the bytes, the sink adds the `\n`).
//!
//! * **Durability.** [`Sink::deliver`](crate::Sink::deliver) writes the
//!   whole batch and `fsync`s the file (`sync_data`) before returning `Ok`;
//!   for `-` (stdout) or an injected writer it flushes the writer.
//! * **Rotation** (`max_bytes`). Before a line that would make the file
//!   larger than `max_bytes` (and the file is not empty), the file is
//!   fsynced and renamed to `<path>.<n>`, `n` counting up from 1 (the
//!   highest number is the newest; the next `n` is found by scanning the
//!   directory at open, so restarts continue the sequence); the directory is
//!   fsynced and a new `<path>` is started. A single line larger than
//!   `max_bytes` gets a file of its own. Lines are never split.
//! * **Torn tails.** After a crash mid-write, the file may end in a partial
//!   line. Opening the sink truncates it away (it was never acknowledged, so
//!   it is replayed from the log), so every line in the file is whole.
//! * **Failures.** A failed write or fsync is [`SinkError::Transient`](crate::SinkError):
//!   the file is closed and reopened (truncating any partial line) on the
//!   next attempt, which rewrites the batch — whole lines of a failed batch
//!   may appear twice, as at-least-once allows.

mod config;
mod sink;

pub use config::FileSinkConfig;
pub use sink::{rotated_files, FileSink};
