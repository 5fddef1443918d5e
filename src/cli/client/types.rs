//! The client's own lenient view of the daemon's answers (unknown fields
//! ignored, states kept as strings), so an older or newer daemon still
//! works; the daemon's strict types live in `crate::api`.

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// A run's status, as the client reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct RunInfo {
    /// The run's id.
    pub run_id: String,
    /// `starting`, `running`, `succeeded`, `failed`, `timed_out`, `cancelled`, `lost`.
    pub state: String,
    /// Pid of its process.
    #[serde(default)]
    pub pid: Option<i32>,
    /// Exit code.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Signal that killed it (`SIGKILL`).
    #[serde(default)]
    pub signal: Option<String>,
    /// What went wrong.
    #[serde(default)]
    pub error: Option<String>,
    /// The argv.
    #[serde(default)]
    pub command: Vec<String>,
    /// Working dir.
    #[serde(default)]
    pub cwd: String,
    /// Accepted at.
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    /// Started at.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// Seconds from start to end.
    #[serde(default)]
    pub duration_s: Option<f64>,
    /// Bytes of stored stdout.
    #[serde(default)]
    pub stdout_bytes: u64,
    /// Bytes of stored stderr.
    #[serde(default)]
    pub stderr_bytes: u64,
}

impl RunInfo {
    /// Whether the run has ended.
    pub fn is_terminal(&self) -> bool {
        !matches!(self.state.as_str(), "starting" | "running")
    }
}

/// `GET /v1/runs` answer.
#[derive(Debug, Deserialize)]
pub struct RunList {
    /// One page of runs, newest first.
    pub runs: Vec<RunInfo>,
    /// Where the next page starts; `None` on the last one.
    #[serde(default)]
    pub next: Option<String>,
}

/// `PUT /v1/runs/{id}/bundle` answer.
#[derive(Debug, Deserialize)]
pub struct BundleInfo {
    /// Where it was extracted.
    pub dir: String,
    /// Entries extracted.
    #[serde(default)]
    pub entries: u64,
    /// Bytes extracted.
    #[serde(default)]
    pub bytes: u64,
}
