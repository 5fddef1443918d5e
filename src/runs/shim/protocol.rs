//! What the daemon and a run's shim say to each other: the [`ShimSpec`]
//! the daemon writes to the shim's stdin (JSON, secret values wiped on
//! both sides), the [`ShimEvent`] lines the shim writes to its stdout, the
//! [`ExitReport`] it leaves in `exit.json`, the names of the files in a
//! run dir, and which executable runs the shim ([`shim_executable`]). Both
//! ends are one version (the daemon checks it); only `exit.json` is read by
//! a later daemon, so only [`ExitReport`] is versioned.

use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

/// What `sandboxd-shim --version` prints: the daemon uses that executable
/// only when it says exactly this.
pub const VERSION_LINE: &str = concat!("sandboxd-shim ", env!("CARGO_PKG_VERSION"));

/// The file name of the shim's own executable, installed beside `sandboxd`.
pub const SHIM_FILE_NAME: &str = "sandboxd-shim";

/// Set in the environment of the warm pool's shim template
/// (`runs::shim::template`): a shim started with it forks shims instead
/// of taking a run. It asks for one with any byte on its stdin, and gets
/// the shim's pid (4 bytes, little-endian) with, as `SCM_RIGHTS`, the
/// daemon's end of its spec channel, the read end of its event pipe and
/// a pidfd of it.
pub const TEMPLATE_ENV: &str = "SANDBOXD_SHIM_TEMPLATE";

/// Which executable runs each run's shim (as `<exe> shim`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShimExe {
    /// [`shim_executable`] of this daemon executable: `sandboxd-shim`
    /// beside it, else itself. Decided on first use (it starts
    /// `sandboxd-shim --version`), so not on the daemon's way to ready.
    BesideDaemon(PathBuf),
    /// Exactly this executable.
    Exactly(PathBuf),
}

impl ShimExe {
    /// The executable, checking `sandboxd-shim`'s version where that is
    /// the choice.
    pub fn choose(&self) -> PathBuf {
        match self {
            ShimExe::BesideDaemon(daemon_exe) => shim_executable(daemon_exe),
            ShimExe::Exactly(exe) => exe.clone(),
        }
    }
}

/// The executable that runs the shim (as `<exe> shim`) for a daemon
/// running `daemon_exe`: `sandboxd-shim` beside it when that is there and
/// of the daemon's version (it maps a tenth of the code: a quicker start
/// and fork, a smaller idle process), else the daemon's own executable
/// (`sandboxd shim`). A stale `sandboxd-shim` left by an older install is
/// skipped, with a warning.
pub fn shim_executable(daemon_exe: &Path) -> PathBuf {
    let beside = daemon_exe.with_file_name(SHIM_FILE_NAME);
    if !beside.is_file() {
        return daemon_exe.to_owned();
    }
    let version = std::process::Command::new(&beside)
        .arg("--version")
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    match version {
        Ok(out)
            if out.status.success() && out.stdout.trim_ascii_end() == VERSION_LINE.as_bytes() =>
        {
            beside
        }
        _ => {
            tracing::warn!(
                "{} is not {VERSION_LINE}: runs use {} shim instead",
                beside.display(),
                daemon_exe.display()
            );
            daemon_exe.to_owned()
        }
    }
}

/// What the daemon asks the shim to run.
#[derive(Debug, Serialize, Deserialize)]
pub struct ShimSpec {
    /// The run's state dir (logs, exit.json).
    pub run_dir: PathBuf,
    /// The command's argv.
    pub argv: Vec<String>,
    /// Working directory.
    pub cwd: PathBuf,
    /// The child's complete environment.
    pub env: Vec<(String, String)>,
    /// Run `bash setup.sh` first when it exists in `cwd`.
    pub setup: bool,
    /// Wall-clock limit for setup and command together, in milliseconds.
    pub timeout_ms: u64,
    /// SIGTERM to SIGKILL on timeout, in milliseconds.
    pub kill_grace_ms: u64,
    /// oom_score_adj of the run's processes.
    pub oom_score_adj: i32,
    /// Values masked in the captured output.
    pub mask: Vec<String>,
    /// fsync the logs and `exit.json` before exiting. Off for an
    /// exec-and-wait without callback, whose caller gets the answer directly.
    pub durable: bool,
    /// Bytes stored per output stream at most (0: no cap): the head as it
    /// comes, then a marker and the most recent tail at the end.
    #[serde(default)]
    pub max_output_bytes: u64,
    /// The user the run's processes execute as (`--run-user`), when the
    /// shim runs as root; `None`: the shim's own uid.
    #[serde(default)]
    pub run_as: Option<RunAs>,
    /// A uid no other run has (`--run-uid-range`): every process of it is
    /// killed when the run's processes are, wherever it went.
    #[serde(default)]
    pub kill_uid: Option<u32>,
    /// The command's stdin: `/dev/null`, a pipe or a terminal, fed
    /// through the run's input socket (`shim::stdin`).
    #[serde(default)]
    pub stdin: StdinMode,
}

/// What a run's command reads as stdin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum StdinMode {
    /// `/dev/null` (the default).
    #[default]
    Null,
    /// A pipe whose write end the shim holds.
    Pipe,
    /// A pseudo-terminal: the command gets its slave as stdin, stdout and
    /// stderr and as its controlling terminal; the shim holds the master.
    Pty {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
}

impl StdinMode {
    /// Whether the run takes input (a pipe or a terminal).
    pub fn takes_input(self) -> bool {
        self != StdinMode::Null
    }

    /// The mode's name on the wire: `null`, `pipe` or `pty`.
    pub fn name(self) -> &'static str {
        match self {
            StdinMode::Null => "null",
            StdinMode::Pipe => "pipe",
            StdinMode::Pty { .. } => "pty",
        }
    }
}

/// A uid and gid a run executes as (its only group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAs {
    /// The uid.
    pub uid: u32,
    /// The gid (also the only supplementary group).
    pub gid: u32,
}

// The spec carries secret values (in `env` and `mask`): wipe them when it
// goes, in the daemon (after handing it over) and in the shim.
impl Drop for ShimSpec {
    fn drop(&mut self) {
        for (_, value) in &mut self.env {
            value.zeroize();
        }
        self.mask.zeroize();
    }
}

impl ShimSpec {
    /// The spec as one JSON line (the first on the shim's stdin; control
    /// lines follow), zeroized when dropped.
    pub fn encode(&self) -> serde_json::Result<Zeroizing<Vec<u8>>> {
        encode_line(self)
    }

    /// Parses the spec from its line (the caller wipes the line).
    pub fn from_line(line: &[u8]) -> io::Result<ShimSpec> {
        serde_json::from_slice::<ShimSpec>(line)
            .map_err(|e| io::Error::other(format!("bad spec: {e}")))
    }

    /// Reads the spec, the first line of `input` (the shim's stdin),
    /// wiping the text it was parsed from. `None`: the channel closed
    /// before a byte came (a warm shim that was never used).
    pub fn read_from(mut input: impl io::BufRead) -> io::Result<Option<ShimSpec>> {
        let mut text = String::new();
        if input.read_line(&mut text)? == 0 {
            return Ok(None);
        }
        let spec = serde_json::from_str::<ShimSpec>(&text);
        text.zeroize();
        spec.map(Some)
            .map_err(|e| io::Error::other(format!("bad spec: {e}")))
    }
}

/// A value as one JSON line (JSON text holds no raw newline) in a buffer
/// of exactly its size (so no reallocation leaves a copy of secret values
/// behind) that is zeroized when dropped.
pub fn encode_line<T: Serialize>(value: &T) -> serde_json::Result<Zeroizing<Vec<u8>>> {
    let mut counter = ByteCounter(0);
    serde_json::to_writer(&mut counter, value)?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(counter.0 + 1));
    serde_json::to_writer(&mut *bytes, value)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// A message from the daemon after the spec: one JSON line each on the
/// shim's stdin, which the daemon keeps open for the run's life.
#[derive(Serialize, Deserialize)]
#[serde(tag = "c", rename_all = "snake_case")]
pub enum ShimControl {
    /// More values to mask (resolved during the run); answered with
    /// [`ShimEvent::Masked`] once they are in the masker.
    Mask {
        /// The message's number.
        seq: u64,
        /// The values.
        values: Vec<String>,
    },
    /// The daemon has recorded the run's end from [`ShimEvent::Ended`]:
    /// the shim of a run that is not durable need not write `exit.json`.
    Recorded,
}

impl Drop for ShimControl {
    fn drop(&mut self) {
        if let ShimControl::Mask { values, .. } = self {
            values.zeroize();
        }
    }
}

/// Counts what is written to it.
struct ByteCounter(usize);

impl io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Which part of a run a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// `bash setup.sh`.
    Setup,
    /// The run's command.
    Command,
}

/// A message from the shim to a live daemon: one JSON line on the shim's
/// stdout, tagged by `e`. Lines stay under `PIPE_BUF`, so a write of one
/// is whole or nothing.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "snake_case")]
pub enum ShimEvent {
    /// A phase's process started; `pid` leads its process group.
    Spawned {
        /// Which phase.
        phase: Phase,
        /// The leader's pid (and process group id).
        pid: i32,
    },
    /// Bytes stored so far. Sent often while output flows, hence the
    /// short names on the wire.
    Output {
        /// stdout.log size.
        #[serde(rename = "o")]
        stdout_bytes: u64,
        /// stderr.log size.
        #[serde(rename = "r")]
        stderr_bytes: u64,
    },
    /// The values of a [`ShimControl::Mask`] are in the masker: output
    /// read from now on is masked with them.
    Masked {
        /// The message's number.
        seq: u64,
    },
    /// The run has ended and `exit.json` is written (not yet flushed), or
    /// could not be written (a full state dir): the report comes along,
    /// so a live daemon records the end either way.
    Ended {
        /// How the run ended: the content of `exit.json`.
        report: Box<ExitReport>,
    },
}

impl ShimEvent {
    /// The event as one line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }

    /// Parses one line (with or without its newline).
    pub fn from_line(line: &str) -> serde_json::Result<ShimEvent> {
        serde_json::from_str(line)
    }
}

/// How the run ended, as the shim saw it. Written to `exit.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitReport {
    /// Format version.
    pub version: u32,
    /// The phase that ended the run.
    pub phase: Phase,
    /// Exit code, when the process exited.
    pub exit_code: Option<i32>,
    /// Signal number, when a signal killed it.
    pub signal: Option<i32>,
    /// Why the process could not be started.
    pub spawn_error: Option<String>,
    /// The deadline passed.
    pub timed_out: bool,
    /// SIGTERM or SIGINT reached the shim.
    pub cancelled: bool,
    /// Bytes in stdout.log.
    pub stdout_bytes: u64,
    /// Bytes in stderr.log.
    pub stderr_bytes: u64,
    /// Bytes of stdout not stored (over the cap, or a failed write).
    #[serde(default)]
    pub stdout_dropped: u64,
    /// Bytes of stderr not stored (over the cap, or a failed write).
    #[serde(default)]
    pub stderr_dropped: u64,
    /// Why output was dropped, in words; `None` when none was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncation: Option<String>,
    /// When the command phase started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the run ended.
    pub finished_at: DateTime<Utc>,
}

impl ExitReport {
    /// Current format of `exit.json`.
    pub const VERSION: u32 = 1;

    /// A report for a run that has not started a phase yet.
    pub fn not_started() -> ExitReport {
        ExitReport {
            version: ExitReport::VERSION,
            phase: Phase::Setup,
            exit_code: None,
            signal: None,
            spawn_error: None,
            timed_out: false,
            cancelled: false,
            stdout_bytes: 0,
            stderr_bytes: 0,
            stdout_dropped: 0,
            stderr_dropped: 0,
            truncation: None,
            started_at: None,
            finished_at: Utc::now(),
        }
    }
}

#[cfg(test)]
mod tests;
