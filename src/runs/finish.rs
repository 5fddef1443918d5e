//! The end of a run, classified: the shim's [`ExitReport`] (or the reason
//! there is none) becomes a [`RunEnd`]. Pure, table-tested.

use chrono::Utc;
use nix::sys::signal::Signal;

use super::record::StopReason;
use super::run::RunEnd;
use super::shim::{ExitReport, Phase};
use crate::callbacks::Outcome;

/// What the classification needs of the run besides the report.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ending {
    /// Why sandboxd stopped it, if it did.
    pub(super) stop_reason: Option<StopReason>,
    /// Its time limit, in seconds (for the message).
    pub(super) timeout_s: f64,
    /// The pid of its last process.
    pub(super) pid: Option<i32>,
}

/// How the run ended. `report` is the shim's report, or why there is none
/// (the run is then `lost`). The error text is not yet masked.
pub(super) fn classify(ending: Ending, report: Result<&ExitReport, &str>) -> RunEnd {
    let report = match report {
        Ok(report) => report,
        Err(reason) => {
            return RunEnd {
                outcome: Outcome::Lost,
                finished_at: Utc::now(),
                pid: ending.pid,
                exit_code: None,
                signal: None,
                error: Some(reason.to_owned()),
                stdout_bytes: 0,
                stderr_bytes: 0,
                stdout_truncated_bytes: 0,
                stderr_truncated_bytes: 0,
                truncation: None,
            }
        }
    };
    let signal = report
        .signal
        .and_then(|n| Signal::try_from(n).ok())
        .map(|s| s.as_str().to_owned());
    let (outcome, error) = outcome_of(ending, report, signal.as_deref());
    RunEnd {
        outcome,
        finished_at: report.finished_at,
        pid: ending.pid,
        exit_code: report.exit_code,
        signal,
        error,
        stdout_bytes: report.stdout_bytes,
        stderr_bytes: report.stderr_bytes,
        stdout_truncated_bytes: report.stdout_dropped,
        stderr_truncated_bytes: report.stderr_dropped,
        truncation: report.truncation.clone(),
    }
}

/// The outcome and its words. The order is the rule: a spawn failure, then
/// the deadline, then a stop sandboxd asked for, then a failed setup, then
/// the command's own exit.
fn outcome_of(
    ending: Ending,
    report: &ExitReport,
    signal: Option<&str>,
) -> (Outcome, Option<String>) {
    let how = match (signal, report.exit_code) {
        (Some(signal), _) => format!("killed by {signal}"),
        (None, Some(code)) => format!("exited with {code}"),
        (None, None) => "ended".to_owned(),
    };
    if let Some(spawn_error) = &report.spawn_error {
        let error = match report.phase {
            Phase::Setup => format!("setup.sh could not start: {spawn_error}"),
            Phase::Command => spawn_error.clone(),
        };
        return (Outcome::Failed, Some(error));
    }
    if report.timed_out {
        let limit = trim_float(ending.timeout_s);
        return (Outcome::TimedOut, Some(format!("timed out after {limit}s")));
    }
    if report.cancelled || ending.stop_reason.is_some() {
        let error = match ending.stop_reason {
            Some(StopReason::Shutdown) => {
                format!("cancelled: stopped by sandboxd's shutdown ({how})")
            }
            _ => format!("cancelled ({how})"),
        };
        return (Outcome::Cancelled, Some(error));
    }
    if report.phase == Phase::Setup {
        return (Outcome::Failed, Some(format!("setup.sh {how}")));
    }
    match (report.exit_code, signal) {
        (Some(0), None) => (Outcome::Succeeded, None),
        (_, Some(_)) => (Outcome::Failed, Some(how)),
        _ => (Outcome::Failed, None),
    }
}

fn trim_float(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{}", value as u64)
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests;
