//! The durable record of a run: `<state-dir>/runs/<run_id>/record.json`,
//! a versioned on-disk type, flat (every field of every state, optional
//! where a state lacks it), replaced atomically at every state change.
//! [`super::run::Run`] is what the daemon works with.

use std::io;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::callbacks::{CallbackTarget, RunReport, StoredToken};
use crate::durable;
use crate::runs::shim::StdinMode;
use crate::runs::token::TokenDigest;
use crate::state_dir::RunDir;

/// Current record format.
pub const RECORD_VERSION: u32 = 2;

/// A run's state as the record stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    /// Accepted; no process yet.
    Starting,
    /// A process runs.
    Running,
    /// Exit 0.
    Succeeded,
    /// Any other end.
    Failed,
    /// The deadline passed.
    TimedOut,
    /// Cancelled or stopped by a shutdown.
    Cancelled,
    /// Unknown end.
    Lost,
}

/// Why sandboxd itself stopped a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `POST /v1/runs/{id}/cancel`.
    Cancel,
    /// sandboxd's own shutdown.
    Shutdown,
}

/// The on-disk record of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// Format version.
    pub version: u32,
    /// The run's id.
    pub run_id: String,
    /// Lifecycle state.
    pub state: RecordState,
    /// The argv that runs (a shell string becomes `bash -c <string>`).
    pub command: Vec<String>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Whether the work dir is the default one under the work root.
    pub default_cwd: bool,
    /// Fingerprint of the request, for idempotent retries.
    pub fingerprint: String,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When its command started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Pid (and process group) of the process running now or last.
    pub pid: Option<i32>,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Signal that killed it, as a name (`SIGKILL`).
    pub signal: Option<String>,
    /// What went wrong, in words.
    pub error: Option<String>,
    /// Timeout in seconds.
    pub timeout_s: f64,
    /// The shim's pid and start time, to re-attach after a restart.
    pub shim: Option<ShimIdentity>,
    /// The uid (and gid) of the run's own (`--run-uid-range`): in use
    /// until the run is removed, also across a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_uid: Option<u32>,
    /// Version 1 only: the run's token itself. Read (as its digest), never
    /// written.
    #[serde(default, skip_serializing)]
    pub token: Option<StoredToken>,
    /// The SHA-256 of the run's token, hex: a record holds no usable
    /// credential of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sha256: Option<String>,
    /// Completion callback target.
    pub callback: Option<CallbackTarget>,
    /// Values the run reported.
    pub report: RunReport,
    /// Set when sandboxd asked the run to stop.
    pub stop_reason: Option<StopReason>,
    /// Final byte counts of the stored output.
    pub stdout_bytes: u64,
    /// Final byte counts of the stored output.
    pub stderr_bytes: u64,
    /// Bytes of stdout not stored (the output cap, a failed write).
    #[serde(default)]
    pub stdout_truncated_bytes: u64,
    /// Bytes of stderr not stored.
    #[serde(default)]
    pub stderr_truncated_bytes: u64,
    /// Why output was not stored, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncation: Option<String>,
    /// What the command reads (absent: `/dev/null`).
    #[serde(default, skip_serializing_if = "is_null_stdin")]
    pub stdin: StdinMode,
}

fn is_null_stdin(mode: &StdinMode) -> bool {
    *mode == StdinMode::Null
}

/// One shim process, named for good by pid and start time.
pub type ShimIdentity = crate::procfs::ProcessIdentity;

impl RunRecord {
    /// The digest of the run's token. A record with neither form (never
    /// written by sandboxd) gets one no token matches.
    pub fn token_digest(&self) -> TokenDigest {
        use secrecy::ExposeSecret;
        if let Some(digest) = self.token_sha256.as_deref().and_then(TokenDigest::from_hex) {
            return digest;
        }
        match &self.token {
            Some(token) => TokenDigest::of(token.0.expose_secret()),
            None => crate::runs::token::new_token().1,
        }
    }
}

/// Writes `record.json` into `run_dir`.
pub fn save(run_dir: &RunDir, record: &RunRecord, sync: durable::Durability) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
    durable::write_atomic(&run_dir.record(), &bytes, 0o600, sync)
}

/// Reads `record.json` from `run_dir`.
pub fn load(run_dir: &RunDir) -> io::Result<RunRecord> {
    let bytes = std::fs::read(run_dir.record())?;
    let record: RunRecord = serde_json::from_slice(&bytes).map_err(io::Error::other)?;
    if !(1..=RECORD_VERSION).contains(&record.version) {
        return Err(io::Error::other(format!(
            "unknown record version {}",
            record.version
        )));
    }
    Ok(record)
}
