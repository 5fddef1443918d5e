//! A run as the daemon knows it: [`Run`], whose [`RunStatus`] carries each
//! state's own data (a pid only while running, an exit only once ended),
//! and its conversions to and from the flat on-disk [`RunRecord`].

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::record::{RecordState, RunRecord, ShimIdentity, StopReason, RECORD_VERSION};
use super::shim::StdinMode;
use super::token::TokenDigest;
use crate::callbacks::{CallbackTarget, Outcome, RunReport};

/// Lifecycle of a run, without its data: what listings filter and count by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunState {
    /// Accepted; its process is not running yet.
    Starting,
    /// Its process (setup or command) runs.
    Running,
    /// It has ended, this way.
    Ended(Outcome),
}

impl RunState {
    /// Every state, in display order.
    pub const ALL: [RunState; 7] = [
        RunState::Starting,
        RunState::Running,
        RunState::Ended(Outcome::Succeeded),
        RunState::Ended(Outcome::Failed),
        RunState::Ended(Outcome::TimedOut),
        RunState::Ended(Outcome::Cancelled),
        RunState::Ended(Outcome::Lost),
    ];

    /// Whether the run has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, RunState::Ended(_))
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Starting => "starting",
            RunState::Running => "running",
            RunState::Ended(outcome) => outcome.as_str(),
        }
    }
}

/// Where a run is in its life, with the data of that state only.
#[derive(Debug, Clone, PartialEq)]
pub enum RunStatus {
    /// Accepted, its shim not yet running a process.
    Starting,
    /// A process of the run (setup or command) runs: it leads the run's
    /// process group.
    Running {
        /// Pid and process group of the current process.
        pid: i32,
    },
    /// Ended and recorded.
    Ended(RunEnd),
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEnd {
    /// Which way.
    pub outcome: Outcome,
    /// When.
    pub finished_at: DateTime<Utc>,
    /// The last process that ran, when one did.
    pub pid: Option<i32>,
    /// Its exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed it, as a name (`SIGKILL`).
    pub signal: Option<String>,
    /// What went wrong, in words (masked).
    pub error: Option<String>,
    /// Final size of the stored stdout.
    pub stdout_bytes: u64,
    /// Final size of the stored stderr.
    pub stderr_bytes: u64,
    /// Bytes of stdout not stored (past `--max-output-bytes`, or lost to
    /// a failed write).
    pub stdout_truncated_bytes: u64,
    /// Bytes of stderr not stored.
    pub stderr_truncated_bytes: u64,
    /// Why output was not stored, in words; `None` when all of it was.
    pub truncation: Option<String>,
}

/// One run.
#[derive(Debug, Clone)]
pub struct Run {
    /// Its id.
    pub run_id: String,
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
    /// Wall-clock limit.
    pub timeout: Duration,
    /// The shim that owns its processes, once started.
    pub shim: Option<ShimIdentity>,
    /// The digest of its own token for its calls back to sandboxd.
    pub token_digest: TokenDigest,
    /// The uid (and gid) of its own (`--run-uid-range`), held until the
    /// run is removed.
    pub run_uid: Option<u32>,
    /// Where its completion goes.
    pub callback: Option<CallbackTarget>,
    /// What its script reported.
    pub report: RunReport,
    /// Set when sandboxd asked it to stop.
    pub stop_reason: Option<StopReason>,
    /// Where it is in its life.
    pub status: RunStatus,
    /// What its command reads: nothing, a pipe or a terminal.
    pub stdin: StdinMode,
}

impl Run {
    /// Its state without data.
    pub fn state(&self) -> RunState {
        match &self.status {
            RunStatus::Starting => RunState::Starting,
            RunStatus::Running { .. } => RunState::Running,
            RunStatus::Ended(end) => RunState::Ended(end.outcome),
        }
    }

    /// How it ended, once it has.
    pub fn end(&self) -> Option<&RunEnd> {
        match &self.status {
            RunStatus::Ended(end) => Some(end),
            _ => None,
        }
    }

    /// The pid of its current (or last) process.
    pub fn pid(&self) -> Option<i32> {
        match &self.status {
            RunStatus::Starting => None,
            RunStatus::Running { pid } => Some(*pid),
            RunStatus::Ended(end) => end.pid,
        }
    }

    /// Seconds between start (or creation) and end.
    pub fn duration_s(&self) -> Option<f64> {
        let end = self.end()?.finished_at;
        let start = self.started_at.unwrap_or(self.created_at);
        Some(((end - start).num_milliseconds().max(0) as f64) / 1000.0)
    }

    /// The on-disk form.
    pub fn to_record(&self) -> RunRecord {
        let end = self.end();
        RunRecord {
            version: RECORD_VERSION,
            run_id: self.run_id.clone(),
            state: RecordState::from(self.state()),
            command: self.command.clone(),
            cwd: self.cwd.clone(),
            default_cwd: self.default_cwd,
            fingerprint: self.fingerprint.clone(),
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: end.map(|e| e.finished_at),
            pid: self.pid(),
            exit_code: end.and_then(|e| e.exit_code),
            signal: end.and_then(|e| e.signal.clone()),
            error: end.and_then(|e| e.error.clone()),
            timeout_s: self.timeout.as_secs_f64(),
            shim: self.shim,
            run_uid: self.run_uid,
            token: None,
            token_sha256: Some(self.token_digest.to_hex()),
            callback: self.callback.clone(),
            report: self.report.clone(),
            stop_reason: self.stop_reason,
            stdout_bytes: end.map_or(0, |e| e.stdout_bytes),
            stderr_bytes: end.map_or(0, |e| e.stderr_bytes),
            stdout_truncated_bytes: end.map_or(0, |e| e.stdout_truncated_bytes),
            stderr_truncated_bytes: end.map_or(0, |e| e.stderr_truncated_bytes),
            truncation: end.and_then(|e| e.truncation.clone()),
            stdin: self.stdin,
        }
    }

    /// The run a record describes.
    pub fn from_record(record: RunRecord) -> Run {
        let token_digest = record.token_digest();
        let status = match RunState::from(record.state) {
            RunState::Starting => RunStatus::Starting,
            RunState::Running => match record.pid {
                Some(pid) => RunStatus::Running { pid },
                None => RunStatus::Starting,
            },
            RunState::Ended(outcome) => RunStatus::Ended(RunEnd {
                outcome,
                finished_at: record.finished_at.unwrap_or(record.created_at),
                pid: record.pid,
                exit_code: record.exit_code,
                signal: record.signal,
                error: record.error,
                stdout_bytes: record.stdout_bytes,
                stderr_bytes: record.stderr_bytes,
                stdout_truncated_bytes: record.stdout_truncated_bytes,
                stderr_truncated_bytes: record.stderr_truncated_bytes,
                truncation: record.truncation,
            }),
        };
        Run {
            run_id: record.run_id,
            command: record.command,
            cwd: record.cwd,
            default_cwd: record.default_cwd,
            fingerprint: record.fingerprint,
            created_at: record.created_at,
            started_at: record.started_at,
            timeout: Duration::try_from_secs_f64(record.timeout_s).unwrap_or(Duration::MAX),
            shim: record.shim,
            token_digest,
            run_uid: record.run_uid,
            callback: record.callback,
            report: record.report,
            stop_reason: record.stop_reason,
            status,
            stdin: record.stdin,
        }
    }
}

impl From<RunState> for RecordState {
    fn from(state: RunState) -> RecordState {
        match state {
            RunState::Starting => RecordState::Starting,
            RunState::Running => RecordState::Running,
            RunState::Ended(Outcome::Succeeded) => RecordState::Succeeded,
            RunState::Ended(Outcome::Failed) => RecordState::Failed,
            RunState::Ended(Outcome::TimedOut) => RecordState::TimedOut,
            RunState::Ended(Outcome::Cancelled) => RecordState::Cancelled,
            RunState::Ended(Outcome::Lost) => RecordState::Lost,
        }
    }
}

impl From<RecordState> for RunState {
    fn from(state: RecordState) -> RunState {
        match state {
            RecordState::Starting => RunState::Starting,
            RecordState::Running => RunState::Running,
            RecordState::Succeeded => RunState::Ended(Outcome::Succeeded),
            RecordState::Failed => RunState::Ended(Outcome::Failed),
            RecordState::TimedOut => RunState::Ended(Outcome::TimedOut),
            RecordState::Cancelled => RunState::Ended(Outcome::Cancelled),
            RecordState::Lost => RunState::Ended(Outcome::Lost),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: RunStatus) -> Run {
        Run {
            run_id: "r1".into(),
            command: vec!["true".into()],
            cwd: "/tmp".into(),
            default_cwd: true,
            fingerprint: "f".into(),
            created_at: Utc::now(),
            started_at: Some(Utc::now()),
            timeout: Duration::from_millis(1500),
            shim: Some(ShimIdentity {
                pid: 7,
                start_ticks: 9,
            }),
            token_digest: TokenDigest::of("tok"),
            run_uid: Some(61200),
            callback: None,
            report: RunReport::default(),
            stop_reason: Some(StopReason::Cancel),
            status,
            stdin: StdinMode::Pty { cols: 80, rows: 24 },
        }
    }

    /// Every status survives the trip through the on-disk record.
    #[test]
    fn statuses_round_trip_through_the_record() {
        let ended = RunEnd {
            outcome: Outcome::TimedOut,
            finished_at: Utc::now(),
            pid: Some(42),
            exit_code: None,
            signal: Some("SIGKILL".into()),
            error: Some("timed out after 1.5s".into()),
            stdout_bytes: 3,
            stderr_bytes: 4,
            stdout_truncated_bytes: 5,
            stderr_truncated_bytes: 0,
            truncation: Some("stdout: over the output cap of 8 bytes".into()),
        };
        for status in [
            RunStatus::Starting,
            RunStatus::Running { pid: 42 },
            RunStatus::Ended(ended),
        ] {
            let back = Run::from_record(run(status.clone()).to_record());
            assert_eq!(back.status, status);
            assert_eq!(back.timeout, Duration::from_millis(1500));
        }
    }

    /// Each state has its wire name, and the record keeps it.
    #[test]
    fn states_have_their_names() {
        let names: Vec<&str> = RunState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "starting",
                "running",
                "succeeded",
                "failed",
                "timed_out",
                "cancelled",
                "lost"
            ]
        );
        for state in RunState::ALL {
            assert_eq!(RunState::from(RecordState::from(state)), state);
        }
    }
}
