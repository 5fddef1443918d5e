//! Bounded history: retention of ended runs and the paged listing.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::callbacks::sink::{CallbackSink, Reply};
use crate::support::{self, Options, TestDaemon};

fn daemon_args(extra: &[&str]) -> Options {
    Options {
        args: extra.iter().map(|s| s.to_string()).collect(),
        ..Options::default()
    }
}

/// The ids of every run the daemon lists (all pages).
async fn listed(daemon: &TestDaemon) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after = String::new();
    loop {
        let (status, page) = daemon
            .get(&format!("/v1/runs?limit=1000&after={after}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for run in page["runs"].as_array().unwrap() {
            ids.push(run["run_id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => return ids,
        }
    }
}

/// Past `--retain-runs`, the oldest ended runs are removed whole (record,
/// logs, work dir); a running run is never counted out.
#[tokio::test]
async fn ended_runs_past_the_count_are_removed_oldest_first() {
    let daemon = TestDaemon::start_with(daemon_args(&["--retain-runs", "2"])).await;
    daemon
        .start_run(json!({"run_id": "long", "command": "sleep 30"}))
        .await;
    for i in 0..5 {
        let run = daemon
            .exec(json!({"run_id": format!("r{i}"), "command": "echo x > file; echo out"}))
            .await;
        assert_eq!(run["state"], "succeeded", "{run}");
    }
    let mut last = Vec::new();
    support::wait_for(
        "retention to keep the 2 newest ended runs",
        || async {
            let ids = listed(&daemon).await;
            let set: HashSet<&str> = ids.iter().map(String::as_str).collect();
            (set == HashSet::from(["long", "r3", "r4"]), ids)
        },
        &mut last,
    )
    .await;
    for gone in ["r0", "r1", "r2"] {
        assert!(
            !daemon.state_dir().join("runs").join(gone).exists(),
            "{gone}"
        );
        assert!(!daemon.work_root().join(gone).exists(), "{gone}");
        let (status, _) = daemon.get(&format!("/v1/runs/{gone}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    assert!(daemon.work_root().join("r4/file").exists());
    // A run leaves the list when retention takes it, its files and the
    // count a moment later.
    let mut status = json!(null);
    support::wait_for(
        "the removals counted",
        || async {
            let (_, status) = daemon.get("/v1/status").await;
            (
                status["retention"]["pruned_total"].as_u64() >= Some(3),
                status,
            )
        },
        &mut status,
    )
    .await;
    assert_eq!(status["retention"]["retain_runs"], 2, "{status}");
    let (_, metrics) = daemon.text("/metrics").await;
    assert!(metrics.contains("runs_pruned_total 3"), "{metrics}");
    daemon.post("/v1/runs/long/cancel", json!({})).await;
}

/// Past `--retain-for`, an ended run is removed; a run whose callback is
/// still pending is kept until it is delivered.
#[tokio::test]
async fn old_runs_go_but_pending_callbacks_keep_theirs() {
    let sink = CallbackSink::start().await;
    sink.script(&[Reply::Status(503); 1000]);
    let daemon = TestDaemon::start_with(daemon_args(&[
        "--retain-for",
        "1s",
        "--callback-backoff",
        "0.2s",
    ]))
    .await;
    daemon
        .exec(json!({"run_id": "plain", "command": "true"}))
        .await;
    let callback = json!({"url": sink.complete_url("svc-1")});
    daemon
        .exec(json!({"run_id": "pending", "command": "true", "callback": callback}))
        .await;
    let mut last = Vec::new();
    support::wait_for(
        "the plain run to age out",
        || async {
            let ids = listed(&daemon).await;
            (!ids.contains(&"plain".to_owned()), ids)
        },
        &mut last,
    )
    .await;
    let (status, run) = daemon.get("/v1/runs/pending").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "removed while its callback was pending"
    );
    assert_eq!(run["callback"]["state"], "pending", "{run}");
    sink.clear_script();
    support::wait_for(
        "the delivered run to age out",
        || async {
            let ids = listed(&daemon).await;
            (ids.is_empty(), ids)
        },
        &mut last,
    )
    .await;
}

/// A removal a crash interrupted (a `.pruned-` run dir, a pruned work
/// dir) is finished at the next start, which serves normally.
#[tokio::test]
async fn an_interrupted_removal_is_finished_at_start() {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let state = dir.path().join("state");
    let half = state.join("runs/.pruned-gone");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(
        half.join("record.json"),
        b"{\"version\": 2, \"run_id\": \"gone\"",
    )
    .unwrap();
    std::fs::write(half.join("exit.json"), b"{").unwrap();
    let work = dir.path().join("work/.sandboxd-staging-pruned-gone");
    std::fs::create_dir_all(&work).unwrap();
    let daemon = TestDaemon::start_with(Options {
        dir: Some(dir.clone()),
        ..Options::default()
    })
    .await;
    assert!(!half.exists(), "the half-removed run dir is left");
    assert!(!work.exists(), "the half-removed work dir is left");
    assert!(listed(&daemon).await.is_empty());
    let run = daemon
        .exec(json!({"run_id": "gone", "command": "true"}))
        .await;
    assert_eq!(run["state"], "succeeded", "{run}");
}

/// `GET /v1/runs` pages newest first; `next` leads through every run once;
/// `state` and `created_since` filter; bad paging input is a clear 400.
#[tokio::test]
async fn runs_are_listed_in_pages_newest_first() {
    let daemon = TestDaemon::start().await;
    for i in 0..25 {
        daemon
            .exec(json!({"run_id": format!("p{i:02}"), "command": "true"}))
            .await;
    }
    daemon
        .exec(json!({"run_id": "p-failed", "command": "exit 3"}))
        .await;
    let mut seen = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let (status, page) = daemon
            .get(&format!("/v1/runs?limit=10&after={after}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        seen.extend(
            page["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["run_id"].as_str().unwrap().to_owned()),
        );
        match page["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut expected: Vec<String> = (0..25).map(|i| format!("p{i:02}")).collect();
    expected.push("p-failed".into());
    expected.reverse();
    assert_eq!(seen, expected);

    let (_, failed) = daemon.get("/v1/runs?state=failed").await;
    let ids: Vec<&Value> = failed["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["run_id"])
        .collect();
    assert_eq!(ids, [&json!("p-failed")]);
    let (_, run) = daemon.get("/v1/runs/p20").await;
    let since = run["created_at"].as_str().unwrap().replace('+', "%2B");
    let (_, recent) = daemon.get(&format!("/v1/runs?created_since={since}")).await;
    assert_eq!(recent["runs"].as_array().unwrap().len(), 6, "{recent}");

    for (query, needle) in [
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
        ("after=nonsense", "after"),
        ("created_since=yesterday", "created_since"),
    ] {
        let (status, body) = daemon.get(&format!("/v1/runs?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(needle),
            "{body}"
        );
    }
}
