//! The `file` sink's [`Sink`] implementation (behaviour in the module docs).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::config::FileSinkConfig;
use crate::{Sink, SinkError, SinkRecord};

/// Where lines go.
enum Output {
    File(FileState),
    Writer(Box<dyn Write + Send>),
}

struct FileState {
    path: PathBuf,
    file: File,
    /// Current length of `file`.
    size: u64,
    max_bytes: Option<u64>,
    /// Number the next rotated file gets.
    next_index: u64,
}

/// The `file` sink.
pub struct FileSink {
    config: Option<FileSinkConfig>,
    /// `None` after a failure (reopened on the next delivery) or while a
    /// write runs on the blocking pool.
    out: Option<Output>,
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn io_err(what: &str, path: &Path, e: io::Error) -> SinkError {
    SinkError::Transient(format!(
        "file sink: {what} {}: {e}; check the disk, free space and permissions",
        path.display()
    ))
}

impl FileSink {
    /// Opens the sink: creates the file (and its directory), removes a torn
    /// last line, and finds the next rotation number. For `-`, stdout.
    pub fn open(config: &FileSinkConfig) -> Result<FileSink, SinkError> {
        let out = Self::open_output(config)?;
        Ok(FileSink {
            config: Some(config.clone()),
            out: Some(out),
        })
    }

    /// A sink writing lines to `writer` (flushed per batch), e.g. for tests.
    pub fn with_writer(writer: Box<dyn Write + Send>) -> FileSink {
        FileSink {
            config: None,
            out: Some(Output::Writer(writer)),
        }
    }

    fn open_output(config: &FileSinkConfig) -> Result<Output, SinkError> {
        if config.is_stdout() {
            return Ok(Output::Writer(Box::new(io::stdout())));
        }
        if config.path.is_empty() {
            return Err(SinkError::Fatal(
                "file sink: path is empty; set path to a file or - for stdout".into(),
            ));
        }
        if config.max_bytes == Some(0) {
            return Err(SinkError::Fatal(
                "file sink: max_bytes must be at least 1 (or unset to never rotate)".into(),
            ));
        }
        open_file(Path::new(&config.path), config.max_bytes).map(Output::File)
    }
}

fn open_file(path: &Path, max_bytes: Option<u64>) -> Result<FileState, SinkError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(|e| io_err("create directory", &dir, e))?;
    let existed = path.exists();
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| io_err("open", path, e))?;
    let mut size = file.metadata().map_err(|e| io_err("stat", path, e))?.len();
    let whole = whole_lines_len(&mut file, size).map_err(|e| io_err("read", path, e))?;
    if whole < size {
        file.set_len(whole)
            .map_err(|e| io_err("truncate torn line of", path, e))?;
        file.sync_all().map_err(|e| io_err("fsync", path, e))?;
        tracing::warn!(path = %path.display(), removed = size - whole, "file sink removed a torn last line (it is redelivered from the log)");
        size = whole;
    }
    if !existed {
        sync_dir(&dir)?;
    }
    let next_index = rotated_files(path).last().map_or(1, |(n, _)| n + 1);
    Ok(FileState {
        path: path.to_path_buf(),
        file,
        size,
        max_bytes,
        next_index,
    })
}

/// Length of the file up to and including its last `\n`.
fn whole_lines_len(file: &mut File, size: u64) -> io::Result<u64> {
    let mut end = size;
    let mut buf = [0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let len = usize::try_from(end - start).unwrap_or(buf.len());
        let chunk = buf.get_mut(..len).unwrap_or(&mut []);
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(pos) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + pos as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

fn sync_dir(dir: &Path) -> Result<(), SinkError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err("fsync directory", dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The rotated files of `path` (`<path>.<n>`), oldest (lowest `n`) first.
pub fn rotated_files(path: &Path) -> Vec<(u64, PathBuf)> {
    let Some(base) = path.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut out: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let n = name
                .to_str()?
                .strip_prefix(base)?
                .strip_prefix('.')?
                .parse::<u64>()
                .ok()?;
            Some((n, entry.path()))
        })
        .collect();
    out.sort();
    out
}

impl FileState {
    /// Writes the lines (`buf`, with `ends` the end offset of each line),
    /// rotating as needed, then fsyncs.
    fn write_lines(&mut self, buf: &[u8], ends: &[usize]) -> Result<(), SinkError> {
        let mut start = 0;
        let mut chunk_start = 0;
        for &end in ends {
            let len = (end - start) as u64;
            if let Some(max) = self.max_bytes {
                if self.size > 0 && self.size + len > max {
                    self.write_chunk(buf.get(chunk_start..start).unwrap_or(&[]))?;
                    self.rotate()?;
                    chunk_start = start;
                }
            }
            self.size += len;
            start = end;
        }
        // `size` already counts the rest; write it.
        let rest = buf.get(chunk_start..).unwrap_or(&[]);
        self.file
            .write_all(rest)
            .map_err(|e| io_err("write", &self.path, e))?;
        self.file
            .sync_data()
            .map_err(|e| io_err("fsync", &self.path, e))
    }

    fn write_chunk(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        self.file
            .write_all(bytes)
            .map_err(|e| io_err("write", &self.path, e))
    }

    fn rotate(&mut self) -> Result<(), SinkError> {
        self.file
            .sync_all()
            .map_err(|e| io_err("fsync", &self.path, e))?;
        let mut target = self.path.clone().into_os_string();
        target.push(format!(".{}", self.next_index));
        let target = PathBuf::from(target);
        fs::rename(&self.path, &target).map_err(|e| io_err("rotate (rename)", &self.path, e))?;
        let fresh = open_file(&self.path, self.max_bytes)?;
        // `open_file` fsynced the directory (new file), covering the rename.
        self.file = fresh.file;
        self.size = 0;
        self.next_index += 1;
        Ok(())
    }
}

impl Output {
    fn write_batch(&mut self, buf: &[u8], ends: &[usize]) -> Result<(), SinkError> {
        match self {
            Output::File(state) => state.write_lines(buf, ends),
            Output::Writer(w) => w.write_all(buf).and_then(|()| w.flush()).map_err(|e| {
                SinkError::Transient(format!("file sink: writing to stdout failed: {e}"))
            }),
        }
    }
}

impl Sink for FileSink {
    fn kind(&self) -> &'static str {
        "file"
    }

    async fn deliver(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
        let mut out = match self.out.take() {
            Some(out) => out,
            None => match &self.config {
                Some(config) => Self::open_output(config)?,
                None => {
                    return Err(SinkError::Fatal(
                        "file sink: the injected writer failed earlier".into(),
                    ))
                }
            },
        };
        let total: usize = batch.iter().map(|r| r.value.len() + 1).sum();
        let mut buf = Vec::with_capacity(total);
        let mut ends = Vec::with_capacity(batch.len());
        for rec in batch {
            buf.extend_from_slice(&rec.value);
            buf.push(b'\n');
            ends.push(buf.len());
        }
        let (out, res) = tokio::task::spawn_blocking(move || {
            let res = out.write_batch(&buf, &ends);
            (out, res)
        })
        .await
        .map_err(|e| SinkError::Fatal(format!("file sink: writer task failed: {e}")))?;
        match res {
            Ok(()) => {
                self.out = Some(out);
                Ok(())
            }
            // Dropped: reopened (torn line removed) on the next attempt.
            Err(e) => Err(e),
        }
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        self.out = None;
        Ok(())
    }
}
