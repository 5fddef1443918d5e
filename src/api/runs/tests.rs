use super::*;

/// A bad `POST /v1/runs` body is refused with the code that names what is
/// wrong with it.
#[test]
fn bad_run_bodies_are_refused_with_their_code() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::api::tests::config(dir.path());
    let table: &[(&str, &str)] = &[
        ("{not json", "bad_json"),
        ("[]", "bad_json"),
        ("{}", "bad_json"),
        (r#"{"command": 5}"#, "bad_json"),
        (r#"{"command": "true", "timeout_s": "soon"}"#, "bad_json"),
        (r#"{"command": []}"#, "invalid_run"),
        (r#"{"command": [""]}"#, "invalid_run"),
        (r#"{"command": "   "}"#, "invalid_run"),
        (r#"{"command": ["a\u0000b"]}"#, "invalid_run"),
        (
            r#"{"command": "true", "cwd": "relative/dir"}"#,
            "invalid_run",
        ),
        (r#"{"command": "true", "timeout_s": 0}"#, "invalid_run"),
        (r#"{"command": "true", "timeout_s": -1}"#, "invalid_run"),
        (r#"{"command": "true", "timeout_s": 1e9}"#, "invalid_run"),
        (r#"{"command": "true", "run_id": ""}"#, "invalid_run"),
        (
            r#"{"command": "true", "run_id": "../escape"}"#,
            "invalid_run",
        ),
        (r#"{"command": "true", "run_id": ".hidden"}"#, "invalid_run"),
        (r#"{"command": "true", "run_id": "a/b"}"#, "invalid_run"),
        (
            r#"{"command": "true", "callback": {"url": "ftp://host/x"}}"#,
            "invalid_run",
        ),
        (
            r#"{"command": "true", "callback": {"url": "not a url"}}"#,
            "invalid_run",
        ),
        (r#"{"command": "true", "stdin": "tty"}"#, "invalid_run"),
        (r#"{"command": "true", "stdin": 1}"#, "bad_json"),
        (r#"{"command": "true", "cols": 100}"#, "invalid_run"),
        (
            r#"{"command": "true", "stdin": "pipe", "term": "x"}"#,
            "invalid_run",
        ),
        (
            r#"{"command": "true", "stdin": "pty", "cols": 0}"#,
            "invalid_run",
        ),
        (
            r#"{"command": "true", "stdin": "pty", "rows": 5000}"#,
            "invalid_run",
        ),
        (
            r#"{"command": "true", "stdin": "pty", "term": "a b"}"#,
            "invalid_run",
        ),
    ];
    for (body, want) in table {
        let err = match parse_create_run(body.as_bytes(), &config) {
            Ok(_) => panic!("{body} was accepted"),
            Err(err) => err,
        };
        assert_eq!(err.status_and_code().1, *want, "{body}: {err}");
    }
}

/// A good body becomes a `NewRun`: a shell string runs under bash, the
/// default timeout applies, `wait` is passed back and not fingerprinted.
#[test]
fn a_good_body_becomes_a_new_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::api::tests::config(dir.path());
    let (run, wait) = parse_create_run(
        br#"{"command": "echo hi", "run_id": "r1", "wait": true}"#,
        &config,
    )
    .unwrap();
    assert!(wait);
    assert_eq!(run.run_id, "r1");
    assert_eq!(run.argv, ["bash", "-c", "echo hi"]);
    assert_eq!(run.timeout, config.default_timeout);
    let (again, wait) =
        parse_create_run(br#"{"command": "echo hi", "run_id": "r1"}"#, &config).unwrap();
    assert!(!wait);
    assert_eq!(run.fingerprint, again.fingerprint, "wait is not part of it");
}

/// `stdin`, `cols`, `rows` and `term` become the run's stdin mode and
/// `TERM`; a refusal names the field.
#[test]
fn stdin_fields_become_the_stdin_mode() {
    use crate::runs::shim::StdinMode;
    let dir = tempfile::tempdir().unwrap();
    let config = crate::api::tests::config(dir.path());
    let parse = |body: &str| parse_create_run(body.as_bytes(), &config);
    let (run, _) = parse(r#"{"command": "true"}"#).unwrap();
    assert_eq!((run.stdin, run.term), (StdinMode::Null, None));
    let (run, _) = parse(r#"{"command": "true", "stdin": null}"#).unwrap();
    assert_eq!(run.stdin, StdinMode::Null);
    let (run, _) = parse(r#"{"command": "cat", "stdin": "pipe"}"#).unwrap();
    assert_eq!(run.stdin, StdinMode::Pipe);
    let (run, _) = parse(r#"{"command": "bash", "stdin": "pty"}"#).unwrap();
    assert_eq!(run.stdin, StdinMode::Pty { cols: 80, rows: 24 });
    assert_eq!(run.term.as_deref(), Some("xterm"));
    let body = r#"{"command": "bash", "stdin": "pty", "cols": 132, "rows": 43, "term": "vt100"}"#;
    let (run, _) = parse(body).unwrap();
    assert_eq!(
        run.stdin,
        StdinMode::Pty {
            cols: 132,
            rows: 43
        }
    );
    assert_eq!(run.term.as_deref(), Some("vt100"));
    for (body, field) in [
        (r#"{"command": "true", "rows": 10}"#, "rows"),
        (r#"{"command": "true", "stdin": "pty", "cols": 0}"#, "cols"),
        (r#"{"command": "true", "stdin": "file"}"#, "stdin"),
        (r#"{"command": "true", "stdin": "pty", "term": ""}"#, "term"),
    ] {
        let Err(err) = parse(body) else {
            panic!("{body} was accepted")
        };
        let err = err.to_string();
        assert!(err.starts_with(field), "{body}: {err}");
    }
}
