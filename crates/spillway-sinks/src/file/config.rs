//! Configuration of the `file` sink.

use serde::{Deserialize, Serialize};

/// `[[sinks]] type = "file"` settings (the common settings — name, tables,
/// operations, format, batching — are in
/// [`SinkSettings`](crate::SinkSettings)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The file to append JSON lines to (created if missing, with its
    /// directory), or `-` for standard output.
    pub path: String,
    /// Rotate the file before it would grow past this many bytes (renamed
    /// to `<path>.1`, `<path>.2`, …; highest is newest). Unset: never
    /// rotate. Ignored for stdout.
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

impl FileSinkConfig {
    /// Whether this writes to standard output.
    pub fn is_stdout(&self) -> bool {
        self.path == "-"
    }
}
