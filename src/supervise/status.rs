//! The service's status types: its [`ServiceState`], how one run of it
//! ended ([`ServiceExit`], and the exit code sandboxd takes from it), and
//! the [`ServiceStatus`] that `GET /v1/status` shows.

use std::os::unix::process::ExitStatusExt;

use chrono::{DateTime, Utc};

use super::output;

/// The service's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServiceState {
    /// Alive, not yet seen healthy.
    Starting,
    /// Alive and healthy.
    Running,
    /// Alive, was healthy, fails the probe now.
    Unhealthy,
    /// Exited; waiting to be restarted.
    Backoff,
    /// Ended for good.
    Stopped,
}

impl ServiceState {
    /// Every state, for metrics.
    pub(crate) const ALL: [&'static str; 5] =
        ["starting", "running", "unhealthy", "backoff", "stopped"];

    /// The wire name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ServiceState::Starting => "starting",
            ServiceState::Running => "running",
            ServiceState::Unhealthy => "unhealthy",
            ServiceState::Backoff => "backoff",
            ServiceState::Stopped => "stopped",
        }
    }
}

/// How one run of the service ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceExit {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal number, when one killed it.
    pub signal: Option<i32>,
    /// When.
    pub at: DateTime<Utc>,
}

impl ServiceExit {
    pub(super) fn from_status(status: std::process::ExitStatus) -> ServiceExit {
        ServiceExit {
            code: status.code(),
            signal: status.signal(),
            at: Utc::now(),
        }
    }

    pub(super) fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The exit code sandboxd exits with: the service's, 128+N for signal N.
    pub fn exit_code(&self) -> u8 {
        match (self.code, self.signal) {
            (Some(code), _) => code as u8,
            (None, Some(signal)) => 128u8.wrapping_add(signal as u8),
            (None, None) => 1,
        }
    }
}

/// What `GET /v1/status` shows of the service.
#[derive(Debug, Clone)]
pub struct ServiceStatus {
    /// Its argv.
    pub command: Vec<String>,
    /// Pid of the current process.
    pub pid: Option<u32>,
    /// `starting`, `running`, `unhealthy`, `backoff`, `stopped`.
    pub state: &'static str,
    /// Restarts so far.
    pub restarts: u64,
    /// The restart policy.
    pub restart_policy: &'static str,
    /// How the last run of it ended.
    pub last_exit: Option<ServiceExit>,
    /// When it is started again (state `backoff`).
    pub next_start: Option<DateTime<Utc>>,
    /// Its last output lines, masked.
    pub recent_output: Vec<output::Line>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_map_signals_to_128_plus_n() {
        let exit = |code, signal| ServiceExit {
            code,
            signal,
            at: Utc::now(),
        };
        assert_eq!(exit(Some(3), None).exit_code(), 3);
        assert_eq!(exit(None, Some(9)).exit_code(), 137);
        assert_eq!(exit(None, Some(15)).exit_code(), 143);
    }
}
