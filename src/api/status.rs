//! `/healthz`, `/v1/status` and `/metrics`.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::callbacks::Outcome;
use crate::error::ErrorBody;
use crate::runs::RunState;

/// `GET /healthz` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

/// `GET /v1/status` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusView {
    /// sandboxd's version.
    pub version: &'static str,
    /// sandboxd's pid.
    pub pid: u32,
    /// Seconds since start.
    pub uptime_s: f64,
    /// Runs by state.
    pub runs: RunCounts,
    /// Completion callbacks.
    pub outbox: OutboxCounts,
    /// The agent-server probe.
    pub agent_server: AgentServerView,
    /// The supervised service; null without one.
    pub service: Option<ServiceView>,
    /// The work root and its free space.
    pub work_root: WorkRootView,
    /// Which ended runs are kept, and how many were removed.
    pub retention: RetentionView,
    /// Which protections keep runs from the daemon, the service and each
    /// other, and which are missing here.
    pub containment: ContainmentView,
    /// Shims started ahead of need (`--warm-shims`).
    pub warm_shims: WarmShimsView,
}

/// Shims waiting for a run.
#[derive(Debug, Serialize, ToSchema)]
pub struct WarmShimsView {
    /// How many the daemon keeps (0: every shim starts on demand).
    pub target: usize,
    /// How many are ready now.
    pub ready: usize,
}

/// Runs by state.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct RunCounts {
    /// Starting or running.
    pub running: u64,
    /// Exited 0.
    pub succeeded: u64,
    /// Failed.
    pub failed: u64,
    /// Timed out.
    pub timed_out: u64,
    /// Cancelled.
    pub cancelled: u64,
    /// Lost.
    pub lost: u64,
}

/// Callbacks waiting or given up.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutboxCounts {
    /// Not yet delivered.
    pub pending: u64,
    /// Given up.
    pub failed: u64,
}

/// The agent-server's health.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentServerView {
    /// Probed URL.
    pub url: String,
    /// Whether `/alive` answered 2xx at the last probe.
    pub healthy: bool,
    /// When it was last probed.
    pub checked_at: Option<DateTime<Utc>>,
}

/// The supervised service.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceView {
    /// Its argv.
    pub command: Vec<String>,
    /// Current pid.
    pub pid: Option<u32>,
    /// `starting`, `running`, `unhealthy`, `backoff`, `stopped`.
    pub state: &'static str,
    /// Restarts so far.
    pub restarts: u64,
    /// `never`, `on-failure` or `always` (`--service-restart`).
    pub restart_policy: &'static str,
    /// How its last run ended; null while the first one runs.
    pub last_exit: Option<ServiceExitView>,
    /// When it starts again (state `backoff`).
    pub next_start_at: Option<DateTime<Utc>>,
    /// Its last output lines (both streams, oldest first, masked).
    pub recent_output: Vec<ServiceOutputLine>,
}

/// How the service's last run ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceExitView {
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Signal name, when one killed it.
    pub signal: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// One line of the service's output.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceOutputLine {
    /// `stdout` or `stderr`.
    pub stream: &'static str,
    /// The line, without its newline, cut at 1 KiB.
    pub text: String,
}

/// What keeps runs from the daemon and from each other on this host.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContainmentView {
    /// How runs are kept apart: `uid_per_run` (`--run-uid-range`: each
    /// run a uid of its own), `run_user` (`--run-user`: one user for all
    /// runs) or `same_uid` (runs have sandboxd's uid).
    pub mode: &'static str,
    /// Runs execute as a different user than the daemon.
    pub run_user_separated: bool,
    /// The user runs execute as (`uid:gid`, with the name when known).
    pub run_user: String,
    /// The daemon's uid.
    pub daemon_uid: u32,
    /// How a run's processes are ended: `cgroup` or `proc_walk`.
    pub kill_mechanism: &'static str,
    /// The soft descriptor limit after start-up.
    pub fd_limit: u64,
    /// What a run can still reach, one sentence each.
    pub missing: Vec<String>,
}

impl From<&crate::containment::Report> for ContainmentView {
    fn from(report: &crate::containment::Report) -> ContainmentView {
        ContainmentView {
            mode: report.mode,
            run_user_separated: report.run_user_separated,
            run_user: report.run_user.clone(),
            daemon_uid: report.daemon_uid,
            kill_mechanism: report.kill_mechanism.as_str(),
            fd_limit: report.fd_limit,
            missing: report.missing.clone(),
        }
    }
}

/// Retention of ended runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct RetentionView {
    /// `--retain-runs`: ended runs kept at most; null keeps all.
    pub retain_runs: Option<usize>,
    /// `--retain-for` in seconds: how long after its end a run is kept;
    /// null for no age limit.
    pub retain_for_s: Option<f64>,
    /// `--max-output-bytes`: stored stdout (and stderr) of a run at most;
    /// null for no limit.
    pub max_output_bytes: Option<u64>,
    /// Ended runs kept now.
    pub ended_runs: u64,
    /// Ended runs removed by retention since the daemon started.
    pub pruned_total: u64,
}

/// The work root.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkRootView {
    /// Its path.
    pub path: String,
    /// Bytes free for sandboxd there.
    pub free_bytes: u64,
}

/// Liveness (no auth).
#[utoipa::path(get, path = "/healthz", security(), responses((status = 200, body = Health)))]
pub async fn get_healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The daemon's status.
#[utoipa::path(get, path = "/v1/status", responses((status = 200, body = StatusView), (status = 401, body = ErrorBody)))]
pub async fn get_status(State(state): State<AppState>) -> Json<StatusView> {
    let mut runs = RunCounts::default();
    let mut ended = 0;
    for (run_state, count) in state.runs.counts() {
        if run_state.is_terminal() {
            ended += count;
        }
        match run_state {
            RunState::Starting | RunState::Running => runs.running += count,
            RunState::Ended(Outcome::Succeeded) => runs.succeeded = count,
            RunState::Ended(Outcome::Failed) => runs.failed = count,
            RunState::Ended(Outcome::TimedOut) => runs.timed_out = count,
            RunState::Ended(Outcome::Cancelled) => runs.cancelled = count,
            RunState::Ended(Outcome::Lost) => runs.lost = count,
        }
    }
    let (pending, failed) = state.outbox.counts();
    let health = state.agent.health();
    let service = state.service.as_ref().map(|service| {
        let status = service.status();
        ServiceView {
            command: status.command,
            pid: status.pid,
            state: status.state,
            restarts: status.restarts,
            restart_policy: status.restart_policy,
            last_exit: status.last_exit.map(|exit| ServiceExitView {
                exit_code: exit.code,
                signal: exit.signal.map(|n| {
                    nix::sys::signal::Signal::try_from(n)
                        .map(|s| s.as_str().to_owned())
                        .unwrap_or_else(|_| n.to_string())
                }),
                at: exit.at,
            }),
            next_start_at: status.next_start,
            recent_output: status
                .recent_output
                .into_iter()
                .map(|line| ServiceOutputLine {
                    stream: line.stream.as_str(),
                    text: line.text,
                })
                .collect(),
        }
    });
    let work_root = state.config.work_root.clone();
    let free_bytes = nix::sys::statvfs::statvfs(&work_root)
        .map(|s| s.blocks_available().saturating_mul(s.fragment_size()))
        .unwrap_or(0);
    Json(StatusView {
        version: env!("CARGO_PKG_VERSION"),
        pid: std::process::id(),
        uptime_s: (state.started.elapsed().as_millis() as f64) / 1000.0,
        runs,
        outbox: OutboxCounts { pending, failed },
        agent_server: AgentServerView {
            url: health.url,
            healthy: health.healthy,
            checked_at: health.checked_at,
        },
        service,
        work_root: WorkRootView {
            path: work_root.display().to_string(),
            free_bytes,
        },
        retention: RetentionView {
            retain_runs: state.config.retention.max_runs,
            retain_for_s: state.config.retention.max_age.map(|a| a.as_secs_f64()),
            max_output_bytes: Some(state.config.max_output_bytes).filter(|b| *b > 0),
            ended_runs: ended,
            pruned_total: state.metrics.runs_pruned_total(),
        },
        containment: ContainmentView::from(&state.containment),
        warm_shims: {
            let (target, ready) = state.runs.warm_shims();
            WarmShimsView { target, ready }
        },
    })
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, content_type = "application/openmetrics-text", body = String)))]
pub async fn get_metrics(State(state): State<AppState>) -> impl IntoResponse {
    let counts: Vec<(&str, u64)> = state
        .runs
        .counts()
        .into_iter()
        .map(|(s, n)| (s.as_str(), n))
        .collect();
    let text = state.metrics.render(&counts, state.outbox.counts());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}
