//! Output capture: one reader thread per pipe pushes what it reads through
//! the masker into `stdout.log` / `stderr.log`, records the arrival order
//! in `output.idx`, and batches progress events to the daemon.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::events::EventPipe;
use super::protocol::{ShimControl, ShimEvent};
use super::{lock, Shared};
use crate::secrets::mask::{LiveMasker, StreamMasker};
use crate::state_dir::RunDir;
use std::path::PathBuf;
use zeroize::Zeroize;

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
}

/// The run's output files and the event pipe, behind one lock so the
/// counters, the index and the progress events agree.
pub(super) struct OutputFiles {
    stdout: File,
    stderr: File,
    index: File,
    /// Bytes stored in stdout.log.
    pub(super) stdout_bytes: u64,
    /// Bytes stored in stderr.log.
    pub(super) stderr_bytes: u64,
    /// Events for the daemon.
    pub(super) events: EventPipe,
    /// Bytes were stored since the last progress event.
    unreported: bool,
    /// When the last progress event was sent.
    last_progress: Instant,
}

impl OutputFiles {
    /// Opens (appending) the output files in `run_dir`.
    pub(super) fn open(run_dir: &Path, events: EventPipe) -> io::Result<OutputFiles> {
        let run_dir = RunDir::new(run_dir);
        let open = |path: PathBuf| OpenOptions::new().create(true).append(true).open(path);
        Ok(OutputFiles {
            stdout: open(run_dir.stdout_log())?,
            stderr: open(run_dir.stderr_log())?,
            index: open(run_dir.output_index())?,
            stdout_bytes: 0,
            stderr_bytes: 0,
            events,
            unreported: false,
            last_progress: Instant::now(),
        })
    }

    /// Flushes the logs and the index to disk, as far as the disk lets.
    pub(super) fn sync(&self) {
        for file in [&self.stdout, &self.stderr, &self.index] {
            let _ = file.sync_data();
        }
    }

    fn store_bytes(&mut self, stream: Stream, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let (file, counter) = match stream {
            Stream::Stdout => (&mut self.stdout, &mut self.stdout_bytes),
            Stream::Stderr => (&mut self.stderr, &mut self.stderr_bytes),
        };
        // On a full disk (or a file-size limit) the bytes that did not fit
        // are lost, but the run goes on, and the counters and the index
        // stay true to what is stored, also when a write stopped partway.
        let stored = write_what_fits(file, bytes);
        if stored == 0 {
            return;
        }
        *counter += stored as u64;
        let _ = self.index.write_all(&index_record(stream, stored));
        self.unreported = true;
    }
}

/// Starts the thread that reads `pipe` until its end.
pub(super) fn spawn_reader(
    mut pipe: impl Read + AsRawFd + Send + 'static,
    stream: Stream,
    shared: &Arc<Shared>,
    masker: &LiveMasker,
) -> JoinHandle<()> {
    grow_pipe(&pipe);
    let shared = Arc::clone(shared);
    let mut masked: StreamMasker = masker.stream();
    std::thread::spawn(move || {
        let shared = &*shared;
        let mut buf = vec![0u8; READ_CHUNK];
        let mut out = Vec::with_capacity(buf.len() + 64);
        loop {
            let n = match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            out.clear();
            masked.push(&buf[..n], &mut out);
            store(shared, stream, &out, bytes_waiting(&pipe));
        }
        out.clear();
        masked.finish(&mut out);
        store(shared, stream, &out, false);
    })
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
            stdout_bytes: files.stdout_bytes,
            stderr_bytes: files.stderr_bytes,
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
/// written.
fn write_what_fits(file: &mut File, bytes: &[u8]) -> usize {
    let mut written = 0;
    while written < bytes.len() {
        match file.write(&bytes[written..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    written
}

/// Applies the daemon's [`ShimControl`] lines from stdin until it closes:
/// values to mask are added to the live masker (each reader takes them up
/// before its next chunk), then acknowledged, so the daemon hands a value
/// to the run only once output printing it will be masked.
pub(super) fn spawn_control_thread(shared: Arc<Shared>, masker: LiveMasker) {
    std::thread::spawn(move || {
        let mut line = String::new();
        loop {
            line.zeroize();
            line.clear();
            match io::stdin().read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let Ok(control) = serde_json::from_str::<ShimControl>(&line) else {
                let _ = writeln!(io::stderr(), "sandboxd shim: unreadable control line");
                continue;
            };
            let ShimControl::Mask { seq, values } = &control;
            masker.add(values.iter());
            let event = ShimEvent::Masked { seq: *seq };
            lock(&shared.output).events.send_blocking(&event);
        }
        line.zeroize();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Index records are the stream's tag and the little-endian length,
    /// the format `runs::logs` reads back.
    #[test]
    fn index_records() {
        let cases = [
            (Stream::Stdout, 1, [1, 1, 0, 0, 0]),
            (Stream::Stderr, 5, [2, 5, 0, 0, 0]),
            (Stream::Stdout, 0x0102_0304, [1, 4, 3, 2, 1]),
            (Stream::Stderr, READ_CHUNK + 64, [2, 0x40, 0, 4, 0]),
        ];
        for (stream, stored, want) in cases {
            assert_eq!(index_record(stream, stored), want, "{stored}");
        }
    }
}
