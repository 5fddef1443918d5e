//! The durable record of a run: `<state-dir>/runs/<run_id>/record.json`,
//! a versioned on-disk type, replaced atomically at every state change.

use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::durable;

/// Current record format.
pub const RECORD_VERSION: u32 = 1;

/// File name of the record inside the run dir.
pub const RECORD_FILE: &str = "record.json";

/// Lifecycle of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Accepted; its process is not running yet.
    Starting,
    /// Its process (setup or command) runs.
    Running,
    /// The command exited 0.
    Succeeded,
    /// Non-zero exit, killed by a signal, setup failed or spawn failed.
    Failed,
    /// The deadline passed.
    TimedOut,
    /// Cancelled through the API or by sandboxd's shutdown.
    Cancelled,
    /// sandboxd cannot know how it ended.
    Lost,
}

impl RunState {
    /// Every state, in display order.
    pub const ALL: [RunState; 7] = [
        RunState::Starting,
        RunState::Running,
        RunState::Succeeded,
        RunState::Failed,
        RunState::TimedOut,
        RunState::Cancelled,
        RunState::Lost,
    ];

    /// Whether the run has ended.
    pub fn is_terminal(self) -> bool {
        !matches!(self, RunState::Starting | RunState::Running)
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Starting => "starting",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::TimedOut => "timed_out",
            RunState::Cancelled => "cancelled",
            RunState::Lost => "lost",
        }
    }
}

/// Where a run's completion is reported. `Debug` hides the token.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackTarget {
    /// The `.../runs/{id}/complete` URL.
    pub url: String,
    /// Bearer token; stored in the 0600 record so delivery survives restarts.
    pub token: Option<String>,
    /// `run_id` in the payload.
    pub run_id: String,
    /// Also post phase reports.
    pub phases: bool,
}

impl std::fmt::Debug for CallbackTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackTarget")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "****"))
            .field("run_id", &self.run_id)
            .field("phases", &self.phases)
            .finish()
    }
}

/// Values an SDK script reported about its run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The conversation the run drove.
    pub conversation_id: Option<String>,
    /// What it cost.
    pub cost: Option<f64>,
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
    pub state: RunState,
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
    /// Per-run token for the run's own calls.
    pub token: String,
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
}

/// One shim process, named for good by pid and start time.
pub type ShimIdentity = crate::procfs::ProcessIdentity;

impl RunRecord {
    /// Seconds between start (or creation) and end.
    pub fn duration_s(&self) -> Option<f64> {
        let end = self.finished_at?;
        let start = self.started_at.unwrap_or(self.created_at);
        Some(((end - start).num_milliseconds().max(0) as f64) / 1000.0)
    }
}

/// Writes `record.json` into `run_dir`.
pub fn save(run_dir: &Path, record: &RunRecord, sync: durable::Sync) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
    durable::write_atomic(&run_dir.join(RECORD_FILE), &bytes, 0o600, sync)
}

/// Reads `record.json` from `run_dir`.
pub fn load(run_dir: &Path) -> io::Result<RunRecord> {
    let bytes = std::fs::read(run_dir.join(RECORD_FILE))?;
    let record: RunRecord = serde_json::from_slice(&bytes).map_err(io::Error::other)?;
    if record.version != RECORD_VERSION {
        return Err(io::Error::other(format!(
            "unknown record version {}",
            record.version
        )));
    }
    Ok(record)
}
