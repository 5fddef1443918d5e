use chrono::TimeZone;

use super::*;

fn spec() -> ShimSpec {
    ShimSpec {
        run_dir: PathBuf::from("/state/runs/r1"),
        argv: vec!["bash".into(), "-c".into(), "echo \"hi\"\n".into()],
        cwd: PathBuf::from("/work/r1"),
        env: vec![
            ("TOKEN".into(), "s3cr\u{e9}t".into()),
            ("EMPTY".into(), String::new()),
        ],
        setup: true,
        timeout_ms: 60_000,
        kill_grace_ms: 5_000,
        oom_score_adj: 100,
        mask: vec!["s3cr\u{e9}t".into()],
        durable: false,
        max_output_bytes: 1 << 20,
        run_as: None,
        kill_uid: None,
        stdin: StdinMode::Pty {
            cols: 100,
            rows: 30,
        },
    }
}

/// A spec reads back as it was written, and its buffer is exactly its size.
#[test]
fn spec_round_trips() {
    let spec = spec();
    let bytes = spec.encode().unwrap();
    assert_eq!(bytes.len(), bytes.capacity());
    let back = ShimSpec::read_from(&bytes[..]).unwrap().unwrap();
    assert_eq!(back.run_dir, spec.run_dir);
    assert_eq!(back.argv, spec.argv);
    assert_eq!(back.cwd, spec.cwd);
    assert_eq!(back.env, spec.env);
    assert_eq!(back.setup, spec.setup);
    assert_eq!(back.timeout_ms, spec.timeout_ms);
    assert_eq!(back.kill_grace_ms, spec.kill_grace_ms);
    assert_eq!(back.oom_score_adj, spec.oom_score_adj);
    assert_eq!(back.mask, spec.mask);
    assert_eq!(back.durable, spec.durable);
}

/// A closed channel is no spec (an unused warm shim ends quietly).
#[test]
fn closed_channel_is_no_spec() {
    assert!(ShimSpec::read_from(&b""[..]).unwrap().is_none());
}

/// A spec that is not one is refused with a message that holds none of it.
#[test]
fn bad_specs_are_refused() {
    for text in ["\n", "{}", "{\"run_dir\": 1}", "not json"] {
        let err = ShimSpec::read_from(text.as_bytes()).unwrap_err();
        assert!(err.to_string().starts_with("bad spec: "), "{text:?}: {err}");
    }
}

fn report() -> ExitReport {
    ExitReport {
        phase: Phase::Command,
        exit_code: Some(3),
        stdout_bytes: 12,
        started_at: Some(Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()),
        finished_at: Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 1).unwrap(),
        ..ExitReport::not_started()
    }
}

/// Events have one line each, in a fixed format, and parse back.
#[test]
fn event_lines() {
    let cases = [
        (
            ShimEvent::Spawned {
                phase: Phase::Setup,
                pid: 42,
            },
            r#"{"e":"spawned","phase":"setup","pid":42}"#.to_owned(),
        ),
        (
            ShimEvent::Spawned {
                phase: Phase::Command,
                pid: 7,
            },
            r#"{"e":"spawned","phase":"command","pid":7}"#.to_owned(),
        ),
        (
            ShimEvent::Output {
                stdout_bytes: 10,
                stderr_bytes: u64::MAX,
            },
            format!(r#"{{"e":"output","o":10,"r":{}}}"#, u64::MAX),
        ),
        (
            ShimEvent::Ended {
                report: Box::new(report()),
            },
            format!(
                r#"{{"e":"ended","report":{}}}"#,
                serde_json::to_string(&report()).unwrap()
            ),
        ),
    ];
    for (event, want) in cases {
        let line = event.to_line();
        assert_eq!(line.last(), Some(&b'\n'));
        let text = std::str::from_utf8(&line).unwrap();
        assert_eq!(text.trim_end(), want);
        assert_eq!(text.matches('\n').count(), 1, "{text:?}");
        assert_eq!(ShimEvent::from_line(text).unwrap(), event);
        assert_eq!(ShimEvent::from_line(text.trim_end()).unwrap(), event);
    }
}

/// Lines that are not events are refused, not misread.
#[test]
fn bad_event_lines() {
    for line in [
        "",
        "{}",
        r#"{"e":"exploded"}"#,
        r#"{"e":"output","o":1}"#,
        r#"{"e":"spawned","phase":"teardown","pid":1}"#,
        r#"{"e":"output","o":-1,"r":0}"#,
    ] {
        assert!(ShimEvent::from_line(line).is_err(), "{line:?}");
    }
}

/// `exit.json` keeps its field names: a later daemon reads what an
/// earlier shim wrote.
#[test]
fn exit_report_format() {
    let json = serde_json::to_value(report()).unwrap();
    let want = serde_json::json!({
        "version": 1,
        "phase": "command",
        "exit_code": 3,
        "signal": null,
        "spawn_error": null,
        "timed_out": false,
        "cancelled": false,
        "stdout_bytes": 12,
        "stderr_bytes": 0,
        "stdout_dropped": 0,
        "stderr_dropped": 0,
        "started_at": "2024-05-01T12:00:00Z",
        "finished_at": "2024-05-01T12:00:01Z",
    });
    assert_eq!(json, want);
    let back: ExitReport = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, report());
    // A report of an earlier shim, without the drop counts, still reads.
    let mut earlier = json;
    for field in ["stdout_dropped", "stderr_dropped"] {
        earlier.as_object_mut().unwrap().remove(field);
    }
    let back: ExitReport = serde_json::from_value(earlier).unwrap();
    assert_eq!(back, report());
}

/// `sandboxd-shim` beside the daemon is used only when it says it is of
/// the daemon's version; else (absent, stale, broken) `sandboxd shim`.
#[test]
fn the_shim_executable_beside_the_daemon_is_used_when_of_its_version() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let daemon = dir.path().join("sandboxd");
    std::fs::write(&daemon, "").unwrap();
    assert_eq!(shim_executable(&daemon), daemon, "none beside it");
    let beside = dir.path().join(SHIM_FILE_NAME);
    let says = |line: &str| {
        std::fs::write(&beside, format!("#!/bin/sh\necho '{line}'\n")).unwrap();
        std::fs::set_permissions(&beside, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    says(VERSION_LINE);
    assert_eq!(shim_executable(&daemon), beside, "of the daemon's version");
    says("sandboxd-shim 0.0.1");
    assert_eq!(shim_executable(&daemon), daemon, "stale");
    std::fs::write(&beside, "not a program").unwrap();
    assert_eq!(shim_executable(&daemon), daemon, "broken");
}
