//! Output capture: the shim's main thread reads each pipe (`pump`)
//! through the masker into `stdout.log` / `stderr.log`, records the
//! arrival order in `output.idx`, and batches progress events to the
//! daemon.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use self::tail::TailRing;
use super::events::EventPipe;
use super::protocol::ShimEvent;
use super::{lock, Shared};
use crate::state_dir::RunDir;

/// Bytes read from a pipe at once.
const READ_CHUNK: usize = 256 * 1024;

/// While output keeps coming, progress events go to the daemon at most
/// this often (each one wakes it); a reader that has drained its pipe
/// reports at once, so a follower never waits for bytes already stored.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(2);

/// Pipe capacity asked for stdout: fewer context switches between a fast
/// writer and the capture (1 MiB is the unprivileged maximum by default).
const PIPE_CAPACITY: libc::c_int = 1 << 20;

/// Which of the run's output streams.
#[derive(Clone, Copy)]
pub(super) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// The stream's byte in `output.idx`.
    fn index_tag(self) -> u8 {
        match self {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Most bytes of a capped stream's most recent tail kept in memory.
const MAX_TAIL: u64 = 1 << 20;

/// One output stream's file and its cap.
struct StreamOut {
    /// The log, opened when the stream first has output.
    file: Option<File>,
    path: PathBuf,
    /// Bytes stored in the log.
    stored: u64,
    /// Bytes of the head still to be written as they come; `None` when
    /// the stream has no cap.
    head_room: Option<u64>,
    /// The most recent bytes past the head (a capped stream only).
    tail: TailRing,
    /// Bytes lost to a failed write (a full disk) or dropped past the cap.
    lost: u64,
    /// Why bytes were lost to a write, when one failed.
    write_error: Option<String>,
}

impl StreamOut {
    fn new(path: PathBuf, cap: u64) -> StreamOut {
        let (head_room, tail) = match cap {
            0 => (None, 0),
            cap => {
                let tail = (cap / 4).min(MAX_TAIL);
                (Some(cap - tail), tail)
            }
        };
        StreamOut {
            file: None,
            path,
            stored: 0,
            head_room,
            tail: TailRing::new(tail as usize),
            lost: 0,
            write_error: None,
        }
    }

    /// Writes what fits of `bytes` to the log (opening it when first
    /// needed); returns how many were stored and notes the rest as lost.
    fn write(&mut self, bytes: &[u8]) -> usize {
        if self.file.is_none() {
            match open_append(&self.path) {
                Ok(file) => self.file = Some(file),
                Err(err) => {
                    self.lose(bytes.len(), &err);
                    return 0;
                }
            }
        }
        let file = self.file.as_mut().expect("just opened");
        let (stored, error) = write_what_fits(file, bytes);
        self.stored += stored as u64;
        if let Some(err) = error {
            self.lose(bytes.len() - stored, &err);
        }
        stored
    }

    fn lose(&mut self, bytes: usize, err: &io::Error) {
        self.lost += bytes as u64;
        self.write_error.get_or_insert_with(|| err.to_string());
    }
}

/// How much of a stream was not stored, and why.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Truncation {
    /// Bytes of stdout not stored.
    pub(super) stdout_dropped: u64,
    /// Bytes of stderr not stored.
    pub(super) stderr_dropped: u64,
    /// Why, in words (the cap, a failed write), when bytes were dropped.
    pub(super) reason: Option<String>,
}

/// The run's output files and the event pipe, behind one lock so the
/// counters, the index and the progress events agree. Files are created
/// when first needed: a run without output has none.
pub(super) struct OutputFiles {
    stdout: StreamOut,
    stderr: StreamOut,
    index: Option<File>,
    index_path: PathBuf,
    /// Bytes per stream past which output is dropped (0: no cap).
    cap: u64,
    /// Events for the daemon.
    pub(super) events: EventPipe,
    /// Bytes were stored since the last progress event.
    unreported: bool,
    /// When the last progress event was sent.
    last_progress: Instant,
}

impl OutputFiles {
    /// The output files of `run_dir` (none is created yet); `cap` bytes
    /// per stream, 0 for no cap.
    pub(super) fn new(run_dir: &Path, cap: u64, events: EventPipe) -> OutputFiles {
        let run_dir = RunDir::new(run_dir);
        OutputFiles {
            stdout: StreamOut::new(run_dir.stdout_log(), cap),
            stderr: StreamOut::new(run_dir.stderr_log(), cap),
            index: None,
            index_path: run_dir.output_index(),
            cap,
            events,
            unreported: false,
            last_progress: Instant::now(),
        }
    }

    /// Bytes stored in stdout.log.
    pub(super) fn stdout_bytes(&self) -> u64 {
        self.stdout.stored
    }

    /// Bytes stored in stderr.log.
    pub(super) fn stderr_bytes(&self) -> u64 {
        self.stderr.stored
    }

    /// Flushes the logs and the index to disk, as far as the disk lets.
    pub(super) fn sync(&self) {
        let files = [&self.stdout.file, &self.stderr.file, &self.index];
        for file in files.into_iter().flatten() {
            let _ = file.sync_data();
        }
    }

    fn stream(&mut self, stream: Stream) -> &mut StreamOut {
        match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        }
    }

    /// Stores a chunk: all of it without a cap; with one, what fits in
    /// the head goes to the log now, the rest into the tail ring.
    fn store_bytes(&mut self, stream: Stream, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let out = self.stream(stream);
        let head = match out.head_room {
            None => bytes,
            Some(room) => {
                let head = &bytes[..bytes.len().min(room as usize)];
                out.head_room = Some(room - head.len() as u64);
                out.tail.push(&bytes[head.len()..]);
                head
            }
        };
        self.append(stream, head);
    }

    /// Appends to a stream's log and notes the stored bytes in the index.
    /// On a full disk (or a file-size limit) the bytes that did not fit
    /// are lost, but the run goes on, and the counters and the index stay
    /// true to what is stored, also when a write stopped partway.
    fn append(&mut self, stream: Stream, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let stored = self.stream(stream).write(bytes);
        if stored == 0 {
            return;
        }
        if self.index.is_none() {
            self.index = open_append(&self.index_path).ok();
        }
        if let Some(index) = &mut self.index {
            let _ = index.write_all(&index_record(stream, stored));
        }
        self.unreported = true;
    }

    /// Ends the capture: for a stream past its cap, a marker line saying
    /// how much was dropped, then the kept tail. Returns what was lost.
    pub(super) fn finish(&mut self) -> Truncation {
        let cap = self.cap;
        let mut reasons = Vec::new();
        let mut dropped = [0u64; 2];
        for (i, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
            let out = self.stream(stream);
            let over_cap = out.tail.dropped();
            let tail = out.tail.contents().concat();
            out.tail = TailRing::new(0);
            let mut why = Vec::new();
            if over_cap > 0 {
                why.push(format!("over the output cap of {cap} bytes"));
            }
            if let Some(err) = &out.write_error {
                why.push(format!("not written: {err}"));
            }
            if !why.is_empty() {
                let why = why.join("; ");
                let marker = format!(
                    "\n[sandboxd: {} bytes of {} dropped ({why})]\n",
                    over_cap + out.lost,
                    stream.name()
                );
                // The marker is not output: bytes of it lost are not counted.
                let lost = self.stream(stream).lost;
                self.append(stream, marker.as_bytes());
                self.stream(stream).lost = lost;
                reasons.push(format!("{}: {why}", stream.name()));
            }
            self.append(stream, &tail);
            dropped[i] = over_cap + self.stream(stream).lost;
        }
        Truncation {
            stdout_dropped: dropped[0],
            stderr_dropped: dropped[1],
            reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

fn grow_pipe(pipe: &impl AsRawFd) {
    // SAFETY: fcntl on a pipe descriptor we own; failure leaves it as it was.
    unsafe {
        libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_CAPACITY);
    }
}

/// Whether more bytes wait in the pipe (`FIONREAD`).
fn bytes_waiting(pipe: &impl AsRawFd) -> bool {
    let mut waiting: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through a pointer to a live local.
    let ok = unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut waiting) } == 0;
    ok && waiting > 0
}

/// Stores masked output and reports progress: at once when the reader's
/// pipe is drained (`more_waiting` false), else at most every
/// [`PROGRESS_INTERVAL`].
fn store(shared: &Shared, stream: Stream, bytes: &[u8], more_waiting: bool) {
    let mut output = lock(&shared.output);
    let files = &mut *output;
    files.store_bytes(stream, bytes);
    let due = !more_waiting || files.last_progress.elapsed() >= PROGRESS_INTERVAL;
    if files.unreported && due {
        let event = ShimEvent::Output {
            stdout_bytes: files.stdout.stored,
            stderr_bytes: files.stderr.stored,
        };
        // An event a stalled daemon cannot take now goes with the next one.
        if files.events.try_send(&event) {
            files.unreported = false;
            files.last_progress = Instant::now();
        }
    }
}

/// One `output.idx` record: the stream's tag, then the chunk's length
/// (u32, little-endian).
fn index_record(stream: Stream, stored: usize) -> [u8; 5] {
    let mut record = [0u8; 5];
    record[0] = stream.index_tag();
    record[1..].copy_from_slice(&(stored as u32).to_le_bytes());
    record
}

/// Writes `bytes` until done or a write fails; returns how many were
/// written and, when not all, why.
fn write_what_fits(file: &mut File, bytes: &[u8]) -> (usize, Option<io::Error>) {
    let mut written = 0;
    while written < bytes.len() {
        match file.write(&bytes[written..]) {
            Ok(0) => return (written, Some(io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return (written, Some(err)),
        }
    }
    (written, None)
}

mod pump;
mod tail;

pub(super) use pump::Pump;
#[cfg(test)]
mod tests;
