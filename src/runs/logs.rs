//! Reading a run's captured output: tails for exec-and-wait and callbacks,
//! and the chunked stream of `GET /v1/runs/{id}/logs` (optionally
//! following the run live). Output on disk is already masked.
//!
//! `both` interleaves the two streams in arrival order using
//! `output.idx`, whose 5-byte records name the stream and length of every
//! stored chunk.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::watch;

use super::Progress;
use crate::state_dir::RunDir;

/// Largest chunk a log stream yields at once.
const CHUNK: usize = 64 * 1024;

/// Which output to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// stdout only.
    Stdout,
    /// stderr only.
    Stderr,
    /// Both, in arrival order.
    Both,
}

/// The last `max` bytes of a file (less when it is shorter).
pub async fn tail(path: &Path, max: u64) -> Vec<u8> {
    let Ok(mut file) = tokio::fs::File::open(path).await else {
        return Vec::new();
    };
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max);
    if file.seek(SeekFrom::Start(start)).await.is_err() {
        return Vec::new();
    }
    let mut buf = Vec::with_capacity((len - start) as usize);
    let _ = file.take(max).read_to_end(&mut buf).await;
    buf
}

/// The tail of a file as text (invalid UTF-8 replaced).
pub async fn tail_text(path: &Path, max: u64) -> String {
    String::from_utf8_lossy(&tail(path, max).await).into_owned()
}

/// [`tail_text`] read in place, for small tails on a latency-sensitive
/// path: a few KiB from the page cache cost microseconds, less than the
/// blocking-pool round trips of each async file operation.
pub fn tail_text_now(path: &Path, max: u64) -> String {
    use std::io::{Read, Seek};
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut buf = Vec::with_capacity(len.min(max) as usize);
    if file.seek(SeekFrom::Start(len.saturating_sub(max))).is_ok() {
        let _ = file.take(max).read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A reader of one run's output from an offset, optionally following it.
pub struct LogReader {
    run_dir: RunDir,
    stream: LogStream,
    follow: bool,
    progress: watch::Receiver<Progress>,
    /// Position in the requested stream (for `both`: in the interleaving).
    offset: u64,
    /// For `both`: read position in the index and in each file.
    both: BothCursor,
    done: bool,
}

#[derive(Default)]
struct BothCursor {
    index_pos: u64,
    stdout_pos: u64,
    stderr_pos: u64,
    /// Interleaved position reached so far.
    position: u64,
    /// A chunk partly consumed: (stream tag, bytes left).
    partial: Option<(u8, u64)>,
}

impl LogReader {
    /// A reader starting at `offset` bytes of `stream`.
    pub fn new(
        run_dir: PathBuf,
        stream: LogStream,
        offset: u64,
        follow: bool,
        progress: watch::Receiver<Progress>,
    ) -> LogReader {
        LogReader {
            run_dir: RunDir::new(run_dir),
            stream,
            follow,
            progress,
            offset,
            both: BothCursor::default(),
            done: false,
        }
    }

    /// The next chunk; `None` at the end (for a follower: the run ended and
    /// everything was read).
    pub async fn next_chunk(&mut self) -> Option<std::io::Result<Bytes>> {
        if self.done {
            return None;
        }
        loop {
            // Read "ended" before reading data: data stored before the end
            // was recorded is then surely seen by the read below.
            let ended = self.progress.borrow_and_update().ended;
            let chunk = match self.read_available().await {
                Ok(chunk) => chunk,
                Err(err) => {
                    self.done = true;
                    return Some(Err(err));
                }
            };
            if !chunk.is_empty() {
                return Some(Ok(chunk));
            }
            if ended || !self.follow {
                self.done = true;
                return None;
            }
            if self.progress.changed().await.is_err() {
                // The run's slot is gone (deleted); nothing more will come.
                self.done = true;
                return None;
            }
        }
    }

    async fn read_available(&mut self) -> std::io::Result<Bytes> {
        match self.stream {
            LogStream::Stdout => self.read_file(self.run_dir.stdout_log()).await,
            LogStream::Stderr => self.read_file(self.run_dir.stderr_log()).await,
            LogStream::Both => self.read_both().await,
        }
    }

    async fn read_file(&mut self, path: PathBuf) -> std::io::Result<Bytes> {
        let bytes = read_at(&path, self.offset, CHUNK as u64).await?;
        self.offset += bytes.len() as u64;
        Ok(bytes)
    }

    async fn read_both(&mut self) -> std::io::Result<Bytes> {
        let mut out = Vec::new();
        while out.len() < CHUNK {
            let (tag, left) = match self.both.partial.take() {
                Some(partial) => partial,
                None => {
                    let record =
                        read_at(&self.run_dir.output_index(), self.both.index_pos, 5).await?;
                    if record.len() < 5 {
                        break;
                    }
                    self.both.index_pos += 5;
                    let len = u32::from_le_bytes([record[1], record[2], record[3], record[4]]);
                    (record[0], u64::from(len))
                }
            };
            let (name, pos) = match tag {
                1 => (self.run_dir.stdout_log(), &mut self.both.stdout_pos),
                _ => (self.run_dir.stderr_log(), &mut self.both.stderr_pos),
            };
            // Skip what lies before the requested offset without reading it.
            let skip = self.offset.saturating_sub(self.both.position).min(left);
            *pos += skip;
            self.both.position += skip;
            let want = (left - skip).min((CHUNK - out.len()) as u64);
            let bytes = read_at(&name, *pos, want).await?;
            *pos += bytes.len() as u64;
            self.both.position += bytes.len() as u64;
            out.extend_from_slice(&bytes);
            let rest = left - skip - bytes.len() as u64;
            if rest > 0 {
                self.both.partial = Some((tag, rest));
                if (bytes.len() as u64) < want {
                    break; // The file lags its index for a moment.
                }
            }
        }
        self.offset = self.offset.max(self.both.position);
        Ok(Bytes::from(out))
    }
}

async fn read_at(path: &Path, offset: u64, max: u64) -> std::io::Result<Bytes> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Bytes::new()),
        Err(err) => return Err(err),
    };
    // At or past the end there is nothing to read. Checked, not left to
    // the read: near 2^63 (a client's `?offset=`) the seek or the read
    // fails with EINVAL instead of reading nothing.
    if offset >= file.metadata().await?.len() {
        return Ok(Bytes::new());
    }
    file.seek(SeekFrom::Start(offset)).await?;
    let mut buf = Vec::with_capacity(max.min(CHUNK as u64) as usize);
    file.take(max).read_to_end(&mut buf).await?;
    Ok(Bytes::from(buf))
}
