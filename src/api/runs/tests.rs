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
