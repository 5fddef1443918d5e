//! The `/v1/runs...` wire DTOs: the answers (`RunView` and what it holds,
//! `RunList`), the queries and the small request bodies (cancel, signal,
//! report), and [`view`], which turns a run's snapshot into a `RunView`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::AppState;
use crate::callbacks::Outcome;
use crate::runs::{RunSnapshot, RunState};

/// Delivery state of a run's callback.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallbackView {
    /// `none`, `pending`, `delivered`, `failed`.
    pub state: &'static str,
    /// Attempts so far.
    pub attempts: u32,
    /// HTTP status of the last attempt.
    pub last_status: Option<u16>,
    /// Error of the last attempt.
    pub last_error: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Lifecycle state of a run, on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStateView {
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

impl From<RunState> for RunStateView {
    fn from(state: RunState) -> RunStateView {
        match state {
            RunState::Starting => RunStateView::Starting,
            RunState::Running => RunStateView::Running,
            RunState::Ended(Outcome::Succeeded) => RunStateView::Succeeded,
            RunState::Ended(Outcome::Failed) => RunStateView::Failed,
            RunState::Ended(Outcome::TimedOut) => RunStateView::TimedOut,
            RunState::Ended(Outcome::Cancelled) => RunStateView::Cancelled,
            RunState::Ended(Outcome::Lost) => RunStateView::Lost,
        }
    }
}

/// A run's status.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    /// The run's id.
    pub run_id: String,
    /// Lifecycle state.
    pub state: RunStateView,
    /// Pid (and process group) of its current or last process.
    pub pid: Option<i32>,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Signal that killed it (`SIGKILL`).
    pub signal: Option<String>,
    /// What went wrong.
    pub error: Option<String>,
    /// The argv.
    pub command: Vec<String>,
    /// Working dir.
    pub cwd: String,
    /// Accepted at.
    pub created_at: DateTime<Utc>,
    /// Command started at.
    pub started_at: Option<DateTime<Utc>>,
    /// Ended at.
    pub finished_at: Option<DateTime<Utc>>,
    /// Seconds from start to end.
    pub duration_s: Option<f64>,
    /// Wall-clock limit in seconds.
    pub timeout_s: f64,
    /// Bytes of stored (masked) stdout.
    pub stdout_bytes: u64,
    /// Bytes of stored (masked) stderr.
    pub stderr_bytes: u64,
    /// Bytes of stdout the run printed that were not stored: past
    /// `--max-output-bytes` (the head and the most recent tail are kept,
    /// with a marker line between them), or lost to a failed write (a full
    /// disk). 0 when nothing was dropped, and while the run runs.
    pub stdout_truncated_bytes: u64,
    /// Bytes of stderr not stored, as `stdout_truncated_bytes`.
    pub stderr_truncated_bytes: u64,
    /// Why output was dropped, in words; null when none was.
    pub truncation: Option<String>,
    /// Whether a bundle was extracted into the run's work dir.
    pub bundle: bool,
    /// What the run reported about itself.
    pub report: ReportView,
    /// Completion callback delivery.
    pub callback: CallbackView,
    /// What the command reads: `pipe` or `pty` (absent: `/dev/null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Exec-and-wait only: the last `--wait-output-bytes` of stdout, masked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// Exec-and-wait only: the last `--wait-output-bytes` of stderr, masked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
}

/// Values a run reported (`POST /v1/runs/{id}/report`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportView {
    /// The conversation the run drove.
    pub conversation_id: Option<String>,
    /// What it cost.
    pub cost: Option<f64>,
}

/// `GET /v1/runs` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    /// One page of runs, newest first.
    pub runs: Vec<RunView>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<String>,
}

/// Runs per page when `limit` is not given.
pub const DEFAULT_PAGE: usize = 100;

/// The largest `limit`.
pub const MAX_PAGE: usize = 1000;

/// Query of `GET /v1/runs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only runs in this state.
    pub state: Option<String>,
    /// Only runs created at or after this time (RFC 3339).
    pub created_since: Option<String>,
    /// Runs per page: 1 to 1000, default 100.
    pub limit: Option<usize>,
    /// The `next` of the page before.
    pub after: Option<String>,
}

/// Query of `GET /v1/runs/{run_id}/logs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// `stdout` (default), `stderr` or `both`.
    pub stream: Option<String>,
    /// Byte offset in the stream to start at.
    pub offset: Option<u64>,
    /// Stream until the run ends.
    pub follow: Option<bool>,
}

/// Body of `POST /v1/runs/{run_id}/cancel` (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Seconds between SIGTERM and SIGKILL (default 10).
    pub grace_s: Option<f64>,
}

/// Body of `POST /v1/runs/{run_id}/signal`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalRequest {
    /// `SIGINT`, `INT` or a number.
    #[schema(schema_with = signal_schema)]
    pub signal: serde_json::Value,
}

fn signal_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String))
        .item(ObjectBuilder::new().schema_type(Type::Integer))
        .into()
}

/// A run's snapshot as the wire sees it.
pub(super) fn view(state: &AppState, snapshot: RunSnapshot) -> RunView {
    let RunSnapshot { run, progress } = snapshot;
    let callback = match &run.callback {
        None => CallbackView {
            state: "none",
            attempts: 0,
            last_status: None,
            last_error: None,
            delivered_at: None,
        },
        Some(_) => {
            let status = state.outbox.status(&run.run_id);
            CallbackView {
                state: status.state,
                attempts: status.attempts,
                last_status: status.last_status,
                last_error: status.last_error,
                delivered_at: status.delivered_at,
            }
        }
    };
    let bundle = crate::upload::has_bundle(&state.config, &run.run_id);
    let end = run.end().cloned();
    RunView {
        duration_s: run.duration_s(),
        state: run.state().into(),
        pid: run.pid(),
        exit_code: end.as_ref().and_then(|e| e.exit_code),
        signal: end.as_ref().and_then(|e| e.signal.clone()),
        error: end.as_ref().and_then(|e| e.error.clone()),
        finished_at: end.as_ref().map(|e| e.finished_at),
        cwd: run.cwd.display().to_string(),
        created_at: run.created_at,
        started_at: run.started_at,
        timeout_s: run.timeout.as_secs_f64(),
        stdout_bytes: progress.stdout_bytes,
        stderr_bytes: progress.stderr_bytes,
        stdout_truncated_bytes: end.as_ref().map_or(0, |e| e.stdout_truncated_bytes),
        stderr_truncated_bytes: end.as_ref().map_or(0, |e| e.stderr_truncated_bytes),
        truncation: end.as_ref().and_then(|e| e.truncation.clone()),
        bundle,
        report: ReportView {
            conversation_id: run.report.conversation_id,
            cost: run.report.cost,
        },
        callback,
        run_id: run.run_id,
        command: run.command,
        stdin: run.stdin.takes_input().then(|| run.stdin.name().to_owned()),
        stdout: None,
        stderr: None,
    }
}
