//! Containment: what a run can and cannot obtain of the daemon's
//! credentials and of other runs.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{self, Options, TestDaemon};

/// The state dir holds no usable run token: a record keeps the token's
/// SHA-256 only, during the run, after its end and across a restart, and
/// the token a run got still works after the daemon restarted.
#[tokio::test]
async fn records_hold_token_digests_not_tokens() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut daemon = TestDaemon::start_with(Options {
        dir: Some(dir.clone()),
        binary: true,
        ..Options::default()
    })
    .await;
    let script =
        r#"echo "$SANDBOXD_RUN_TOKEN" > token.txt; while [ ! -e go ]; do sleep 0.05; done"#;
    daemon
        .start_run(json!({"run_id": "holder", "command": script}))
        .await;
    let work = daemon.work_root().join("holder");
    let token_file = work.join("token.txt");
    let mut last = String::new();
    support::wait_for(
        "the run to write its token",
        || async {
            let text = std::fs::read_to_string(&token_file).unwrap_or_default();
            (text.trim().len() == 64, text)
        },
        &mut last,
    )
    .await;
    let token = last.trim().to_owned();
    let record_path = daemon.state_dir().join("runs/holder/record.json");
    let record = std::fs::read_to_string(&record_path).unwrap();
    assert!(
        !record.contains(&token),
        "the record holds the token: {record}"
    );
    assert!(record.contains("token_sha256"), "{record}");

    daemon.signal(libc::SIGKILL);
    daemon.wait_exit();
    let daemon = TestDaemon::start_with(Options {
        dir: Some(dir.clone()),
        binary: true,
        ..Options::default()
    })
    .await;
    let report = reqwest::Client::new()
        .post(format!("{}/v1/runs/holder/report", daemon.url))
        .bearer_auth(&token)
        .json(&json!({"cost": 0.5}));
    let (status, body) = support::send(report).await;
    assert_eq!(status, StatusCode::OK, "the token after a restart: {body}");
    assert_eq!(body["report"]["cost"], 0.5);

    std::fs::write(work.join("go"), b"").unwrap();
    let run = daemon.wait_ended("holder").await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let record = std::fs::read_to_string(&record_path).unwrap();
    assert!(!record.contains(&token), "the final record holds the token");
    assert!(record.contains("\"cost\": 0.5"), "{record}");
}
