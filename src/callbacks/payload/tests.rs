use std::path::Path;

use serde_json::{json, Value};

use super::*;
use crate::callbacks::StoredToken;
use crate::callbacks::{CallbackTarget, RunReport};

#[allow(unreachable_pub)]
#[path = "../../../tests/it/callbacks/rules.rs"]
mod rules;

fn completion(outcome: Outcome) -> Completion {
    Completion {
        run_id: "r1".into(),
        target: CallbackTarget {
            url: "http://127.0.0.1:1/api/automation/v1/runs/svc-1/complete".into(),
            token: Some(StoredToken::from("tok")),
            run_id: "svc-1".into(),
            phases: false,
        },
        outcome,
        exit_code: None,
        signal: None,
        error: None,
        stdout_tail: String::new(),
        stderr_tail: String::new(),
        truncated: None,
        report: RunReport::default(),
    }
}

fn body(completion: &Completion) -> Value {
    serde_json::to_value(build(completion)).unwrap()
}

/// The rules the tests check payloads with agree with every fixture case.
#[test]
fn rules_agree_with_the_fixtures() {
    rules::check_against_fixtures(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fixtures"),
    );
}

/// Success is exactly `{"status":"COMPLETED","run_id"}`.
#[test]
fn succeeded_is_completed_with_run_id_only() {
    let mut c = completion(Outcome::Succeeded);
    c.exit_code = Some(0);
    c.stdout_tail = "lots of output".into();
    assert_eq!(body(&c), json!({"status": "COMPLETED", "run_id": "svc-1"}));
}

/// Every terminal state gives a body the service accepts; only `succeeded`
/// is COMPLETED, and each failure says what happened first.
#[test]
fn every_terminal_state_has_a_valid_payload() {
    let cases: Vec<(&str, Completion, &str)> = vec![
        (
            "exit 1",
            {
                let mut c = completion(Outcome::Failed);
                c.exit_code = Some(1);
                c
            },
            "exit_code=1\n",
        ),
        (
            "killed",
            {
                let mut c = completion(Outcome::Failed);
                c.signal = Some("SIGKILL".into());
                c.error = Some("killed by SIGKILL".into());
                c
            },
            "killed by SIGKILL\n",
        ),
        (
            "signal without error text",
            {
                let mut c = completion(Outcome::Failed);
                c.signal = Some("SIGSEGV".into());
                c
            },
            "killed by SIGSEGV\n",
        ),
        (
            "spawn failed",
            {
                let mut c = completion(Outcome::Failed);
                c.error = Some("command not found: nope".into());
                c
            },
            "command not found: nope\n",
        ),
        (
            "setup failed",
            {
                let mut c = completion(Outcome::Failed);
                c.exit_code = Some(3);
                c.error = Some("setup.sh exited with 3".into());
                c
            },
            "setup.sh exited with 3\n",
        ),
        (
            "timed out",
            {
                let mut c = completion(Outcome::TimedOut);
                c.signal = Some("SIGTERM".into());
                c.error = Some("timed out after 3600s".into());
                c
            },
            "timed out after 3600s\n",
        ),
        (
            "cancelled",
            {
                let mut c = completion(Outcome::Cancelled);
                c.error = Some("cancelled (killed by SIGTERM)".into());
                c
            },
            "cancelled (killed by SIGTERM)\n",
        ),
        (
            "lost",
            {
                let mut c = completion(Outcome::Lost);
                c.error = Some("sandboxd restarted and the run's shim was gone".into());
                c
            },
            "sandboxd restarted",
        ),
        (
            "lost without words",
            completion(Outcome::Lost),
            "run ended lost\n",
        ),
    ];
    for (name, mut c, starts) in cases {
        for report in [
            RunReport::default(),
            RunReport {
                conversation_id: Some("conv".into()),
                cost: Some(0.25),
                ..RunReport::default()
            },
        ] {
            c.report = report.clone();
            c.stderr_tail = "Traceback: boom".into();
            c.stdout_tail = "working\n".into();
            let value = body(&c);
            rules::validate(&value).unwrap_or_else(|e| panic!("{name}: {e}: {value}"));
            assert_eq!(value["status"], "FAILED", "{name}");
            assert_eq!(value["run_id"], "svc-1", "{name}");
            let error = value["error"].as_str().unwrap();
            assert!(error.starts_with(starts), "{name}: {error:?}");
            assert!(
                error.ends_with("\nstderr: Traceback: boom\nstdout: working\n"),
                "{name}: {error:?}"
            );
            match report.conversation_id {
                Some(_) => {
                    assert_eq!(value["conversation_id"], "conv");
                    assert_eq!(value["cost"], 0.25);
                }
                None => {
                    let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
                    assert_eq!(keys.len(), 3, "{name}: no null fields: {value}");
                }
            }
        }
    }
    let mut ok = completion(Outcome::Succeeded);
    ok.report = RunReport {
        conversation_id: Some("c".into()),
        cost: Some(0.0),
        ..RunReport::default()
    };
    let value = body(&ok);
    rules::validate(&value).unwrap();
    assert_eq!(
        value,
        json!({"status": "COMPLETED", "run_id": "svc-1", "conversation_id": "c", "cost": 0.0})
    );
}

/// The tails are cut to the last 1000 (stderr) and 500 (stdout)
/// characters, counted as characters, not bytes.
#[test]
fn tails_are_cut_by_characters() {
    let mut c = completion(Outcome::Failed);
    c.exit_code = Some(2);
    c.stderr_tail = format!("{}{}", "x".repeat(3000), "é".repeat(1000));
    c.stdout_tail = format!("{}{}", "y".repeat(100), "✗".repeat(600));
    let text = error_text(&c);
    let expected = format!(
        "exit_code=2\nstderr: {}\nstdout: {}",
        "é".repeat(1000),
        "✗".repeat(500)
    );
    assert_eq!(text, expected);
    c.stderr_tail = "short".into();
    c.stdout_tail = String::new();
    assert_eq!(error_text(&c), "exit_code=2\nstderr: short\nstdout: ");
}

/// Truncated output is said on its own line after the reason; the body
/// stays valid; a succeeded run's payload carries no error for it.
#[test]
fn truncation_is_said_in_the_error() {
    let mut c = completion(Outcome::Failed);
    c.exit_code = Some(3);
    c.truncated = Some("5 bytes of stdout and 0 bytes of stderr dropped (cap)".into());
    c.stdout_tail = "end".into();
    let text = error_text(&c);
    assert_eq!(
        text,
        "exit_code=3\noutput truncated: 5 bytes of stdout and 0 bytes of stderr dropped (cap)\nstderr: \nstdout: end"
    );
    rules::validate(&body(&c)).unwrap();
    c.outcome = Outcome::Succeeded;
    assert_eq!(body(&c), json!({"status": "COMPLETED", "run_id": "svc-1"}));
}

/// `last_chars` is Python's `text[-n:]`.
#[test]
fn last_chars_table() {
    for (text, n, want) in [
        ("", 3, ""),
        ("abc", 0, ""),
        ("abc", 2, "bc"),
        ("abc", 3, "abc"),
        ("abc", 9, "abc"),
        ("aé✗", 2, "é✗"),
    ] {
        assert_eq!(last_chars(text, n), want, "{text:?}[-{n}:]");
    }
}

/// A stored payload reads back the same, and unknown fields are refused.
#[test]
fn payload_round_trips() {
    let mut c = completion(Outcome::Failed);
    c.exit_code = Some(1);
    c.report.cost = Some(1.5);
    let payload = build(&c);
    let text = serde_json::to_string(&payload).unwrap();
    assert_eq!(serde_json::from_str::<Payload>(&text).unwrap(), payload);
    assert!(serde_json::from_str::<Payload>(r#"{"status":"FAILED","run_id":"r","x":1}"#).is_err());
}
