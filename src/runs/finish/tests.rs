use super::*;

fn report(phase: Phase) -> ExitReport {
    ExitReport {
        version: 1,
        phase,
        exit_code: None,
        signal: None,
        spawn_error: None,
        timed_out: false,
        cancelled: false,
        stdout_bytes: 5,
        stderr_bytes: 6,
        stdout_dropped: 0,
        stderr_dropped: 0,
        truncation: None,
        started_at: None,
        finished_at: Utc::now(),
    }
}

fn ending(stop_reason: Option<StopReason>) -> Ending {
    Ending {
        stop_reason,
        timeout_s: 2.5,
        pid: Some(99),
    }
}

/// A name, the report, why sandboxd stopped the run, the expected outcome
/// and error.
type Case = (
    &'static str,
    ExitReport,
    Option<StopReason>,
    Outcome,
    Option<&'static str>,
);

/// Each way a run can end maps to one outcome and one message, with the
/// precedence spawn error > timeout > stop > setup > exit.
#[test]
fn exit_reports_classify_by_precedence() {
    let exited = |code| ExitReport {
        exit_code: Some(code),
        ..report(Phase::Command)
    };
    let killed = |signal| ExitReport {
        signal: Some(signal),
        ..report(Phase::Command)
    };
    let cases: Vec<Case> = vec![
        ("exit 0", exited(0), None, Outcome::Succeeded, None),
        ("exit 3", exited(3), None, Outcome::Failed, None),
        (
            "killed",
            killed(9),
            None,
            Outcome::Failed,
            Some("killed by SIGKILL"),
        ),
        (
            "spawn error",
            ExitReport {
                spawn_error: Some("no such file".into()),
                timed_out: true,
                ..report(Phase::Command)
            },
            Some(StopReason::Cancel),
            Outcome::Failed,
            Some("no such file"),
        ),
        (
            "setup spawn error",
            ExitReport {
                spawn_error: Some("no bash".into()),
                ..report(Phase::Setup)
            },
            None,
            Outcome::Failed,
            Some("setup.sh could not start: no bash"),
        ),
        (
            "timeout beats cancel",
            ExitReport {
                timed_out: true,
                cancelled: true,
                ..killed(15)
            },
            Some(StopReason::Cancel),
            Outcome::TimedOut,
            Some("timed out after 2.5s"),
        ),
        (
            "cancel through the shim",
            ExitReport {
                cancelled: true,
                ..killed(15)
            },
            None,
            Outcome::Cancelled,
            Some("cancelled (killed by SIGTERM)"),
        ),
        (
            "cancel even with exit 0",
            exited(0),
            Some(StopReason::Cancel),
            Outcome::Cancelled,
            Some("cancelled (exited with 0)"),
        ),
        (
            "shutdown",
            killed(15),
            Some(StopReason::Shutdown),
            Outcome::Cancelled,
            Some("cancelled: stopped by sandboxd's shutdown (killed by SIGTERM)"),
        ),
        (
            "setup failed",
            ExitReport {
                exit_code: Some(2),
                ..report(Phase::Setup)
            },
            None,
            Outcome::Failed,
            Some("setup.sh exited with 2"),
        ),
    ];
    for (name, report, stop, outcome, error) in cases {
        let end = classify(ending(stop), Ok(&report));
        assert_eq!(end.outcome, outcome, "{name}");
        assert_eq!(end.error.as_deref(), error, "{name}");
        assert_eq!((end.stdout_bytes, end.stderr_bytes), (5, 6), "{name}");
        assert_eq!(end.pid, Some(99), "{name}");
    }
}

/// No report at all is a lost run carrying the reason.
#[test]
fn a_missing_report_is_lost() {
    let end = classify(ending(None), Err("the shim was gone"));
    assert_eq!(end.outcome, Outcome::Lost);
    assert_eq!(end.error.as_deref(), Some("the shim was gone"));
}

/// A whole-second limit is written without a fraction.
#[test]
fn whole_second_limits_have_no_fraction() {
    let report = ExitReport {
        timed_out: true,
        ..report(Phase::Command)
    };
    let mut ending = ending(None);
    ending.timeout_s = 5.0;
    let end = classify(ending, Ok(&report));
    assert_eq!(end.error.as_deref(), Some("timed out after 5s"));
}
