//! Runs: exec, env, process groups, timeouts, cancel, logs, records.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{self, alive, Options, TestDaemon, KEY};

fn text(run: &Value, field: &str) -> String {
    run[field].as_str().unwrap_or_default().to_owned()
}

/// An argv runs directly, a string runs through bash; exit codes and
/// output come back with exec-and-wait.
#[tokio::test]
async fn exec_and_wait_reports_exit_and_output() {
    let daemon = TestDaemon::start().await;
    let run = daemon.exec(json!({"command": ["echo", "a b"]})).await;
    assert_eq!(run["state"], "succeeded");
    assert_eq!(run["exit_code"], 0);
    assert_eq!(run["stdout"], "a b\n");
    assert_eq!(run["stdout_bytes"], 4);
    assert!(run["duration_s"].as_f64().unwrap() >= 0.0);
    assert!(run["started_at"].is_string() && run["finished_at"].is_string());

    let run = daemon
        .exec(json!({"command": "echo out; echo err >&2; exit 3"}))
        .await;
    assert_eq!(run["state"], "failed");
    assert_eq!(run["exit_code"], 3);
    assert_eq!(
        run["command"],
        json!(["bash", "-c", "echo out; echo err >&2; exit 3"])
    );
    assert_eq!(
        (text(&run, "stdout"), text(&run, "stderr")),
        ("out\n".into(), "err\n".into())
    );
}

/// A run started without waiting answers 201 at once and is followed by id.
#[tokio::test]
async fn async_run_is_followed_by_id() {
    let daemon = TestDaemon::start().await;
    let run = daemon
        .start_run(json!({"run_id": "r-async", "command": "sleep 0.2; exit 5"}))
        .await;
    assert_eq!(run["run_id"], "r-async");
    assert!(matches!(
        run["state"].as_str(),
        Some("starting" | "running")
    ));
    let run = daemon.wait_ended("r-async").await;
    assert_eq!(
        (run["state"].as_str(), run["exit_code"].as_i64()),
        (Some("failed"), Some(5))
    );
    let (status, list) = daemon.get("/v1/runs?state=failed").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["runs"].as_array().unwrap().len(), 1);
    let (_, list) = daemon.get("/v1/runs?state=running").await;
    assert!(list["runs"].as_array().unwrap().is_empty());
    let (status, body) = daemon.get("/v1/runs?state=bogus").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = daemon.get("/v1/runs/nope").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("run_not_found"))
    );
}

fn env_of(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .split('\0')
        .filter(|entry| !entry.is_empty())
        .filter_map(|entry| entry.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Every case computed by the OpenHands SDK's sanitized_env() is reproduced
/// by a real child of a daemon started with that case's environment.
#[tokio::test]
async fn child_env_matches_the_sdk_fixture() {
    let cases: Vec<Value> =
        serde_json::from_str(include_str!("../data/fixtures/sanitized_env.json")).unwrap();
    assert_eq!(cases.len(), 18);
    for case in cases {
        let input: BTreeMap<String, String> =
            serde_json::from_value(case["input_env"].clone()).unwrap();
        let want: BTreeMap<String, String> =
            serde_json::from_value(case["output_env"].clone()).unwrap();
        let daemon = TestDaemon::start_with(Options {
            exact_env: Some(input.into_iter().collect()),
            ..Options::default()
        })
        .await;
        let run = daemon
            .exec(json!({"command": ["/usr/bin/env", "-0"]}))
            .await;
        assert_eq!(run["state"], "succeeded", "{}: {run}", case["name"]);
        let mut got = env_of(&text(&run, "stdout"));
        for name in ["SANDBOXD_RUN_ID", "SANDBOXD_URL", "SANDBOXD_RUN_TOKEN"] {
            assert!(
                got.remove(name).is_some(),
                "{}: {name} is set",
                case["name"]
            );
        }
        assert_eq!(got, want, "case {}", case["name"]);
    }
}

/// The session key never reaches a child: not under its own names, not
/// under another name, not as OPENHANDS_API_KEY when that is the daemon's
/// callback token; unless the caller passes it on purpose.
#[tokio::test]
async fn session_key_stays_out_of_children() {
    let daemon = TestDaemon::start_with(Options {
        env: vec![
            ("SESSION_API_KEY".into(), KEY.into()),
            ("OH_SESSION_API_KEYS_0".into(), KEY.into()),
            ("COPY_OF_KEY".into(), KEY.into()),
            ("OPENHANDS_API_KEY".into(), "sk-oh-callback-token".into()),
            ("PLAIN".into(), "kept".into()),
        ],
        ..Options::default()
    })
    .await;
    let run = daemon
        .exec(json!({"command": ["/usr/bin/env", "-0"]}))
        .await;
    let env = env_of(&text(&run, "stdout"));
    for name in [
        "SESSION_API_KEY",
        "OH_SESSION_API_KEYS_0",
        "COPY_OF_KEY",
        "OPENHANDS_API_KEY",
    ] {
        assert!(!env.contains_key(name), "{name} reached the child");
    }
    assert!(!text(&run, "stdout").contains(KEY));
    assert_eq!(env["PLAIN"], "kept");
    assert_eq!(env["AI_AGENT"], "openhands");

    let (status, body) = daemon
        .post(
            "/v1/runs",
            json!({"command": ["true"], "env": {"SESSION_API_KEY": "x"}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "sensitive_env");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("SESSION_API_KEY"));
    let (status, _) = daemon
        .post(
            "/v1/runs",
            json!({"command": ["true"], "env": {"OH_SESSION_API_KEYS_4": "x"}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let run = daemon
        .exec(json!({
            "command": ["/usr/bin/env", "-0"],
            "env": {"SESSION_API_KEY": "passed-on-purpose", "OPENHANDS_API_KEY": "sdk-key"},
            "allow_sensitive_env": ["SESSION_API_KEY"],
        }))
        .await;
    let env = env_of(&text(&run, "stdout"));
    assert_eq!(env["SESSION_API_KEY"], "passed-on-purpose");
    assert_eq!(
        env["OPENHANDS_API_KEY"], "sdk-key",
        "OPENHANDS_API_KEY is not sensitive in `env`"
    );
}

/// --strip-env and --strip-env-prefix remove names and make them sensitive.
#[tokio::test]
async fn strip_flags_remove_and_guard_names() {
    let daemon = TestDaemon::start_with(Options {
        args: vec![
            "--strip-env".into(),
            "MY_TOKEN".into(),
            "--strip-env-prefix".into(),
            "CORP_".into(),
        ],
        env: vec![
            ("MY_TOKEN".into(), "t".into()),
            ("CORP_A".into(), "a".into()),
            ("KEEP".into(), "k".into()),
        ],
        ..Options::default()
    })
    .await;
    let run = daemon
        .exec(json!({"command": ["/usr/bin/env", "-0"]}))
        .await;
    let env = env_of(&text(&run, "stdout"));
    assert!(!env.contains_key("MY_TOKEN") && !env.contains_key("CORP_A"));
    assert_eq!(env["KEEP"], "k");
    let (status, _) = daemon
        .post(
            "/v1/runs",
            json!({"command": ["true"], "env": {"CORP_B": "x"}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// inherit_env false starts from PATH, HOME and LANG only; `env` is added.
#[tokio::test]
async fn inherit_env_false_is_minimal() {
    let daemon = TestDaemon::start_with(Options {
        env: vec![
            ("HOME".into(), "/home/x".into()),
            ("LANG".into(), "C.UTF-8".into()),
            ("OTHER".into(), "o".into()),
        ],
        ..Options::default()
    })
    .await;
    let run = daemon
        .exec(json!({"command": ["/usr/bin/env", "-0"], "inherit_env": false, "env": {"A": "1"}}))
        .await;
    let env = env_of(&text(&run, "stdout"));
    let names: Vec<&str> = env.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "A",
            "AI_AGENT",
            "HOME",
            "LANG",
            "PATH",
            "SANDBOXD_RUN_ID",
            "SANDBOXD_RUN_TOKEN",
            "SANDBOXD_URL"
        ]
    );
}

/// Children start clean: no ignored or blocked signal inherited from the
/// daemon, stdin is /dev/null, no descriptor beyond stdio, and the run's
/// oom_score_adj.
#[tokio::test]
async fn children_start_clean() {
    let daemon = TestDaemon::start_with(Options {
        ignored_signals: vec![libc::SIGINT, libc::SIGHUP, libc::SIGUSR1],
        args: vec!["--child-oom-score-adj".into(), "300".into()],
        ..Options::default()
    })
    .await;
    let run = daemon
        .exec(json!({"command": ["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"]}))
        .await;
    assert_eq!(
        run["stdout"], "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n",
        "{run}"
    );
    let run = daemon
        .exec(json!({"command": ["readlink", "/proc/self/fd/0"]}))
        .await;
    assert_eq!(run["stdout"], "/dev/null\n");
    let run = daemon
        .exec(json!({"command": ["ls", "/proc/self/fd"]}))
        .await;
    assert_eq!(
        run["stdout"], "0\n1\n2\n3\n",
        "only stdio (3 is ls's own directory handle)"
    );
    let run = daemon
        .exec(json!({"command": ["cat", "/proc/self/oom_score_adj"]}))
        .await;
    assert_eq!(run["stdout"], "300\n");
}

async fn grandchild_pid(daemon: &TestDaemon, run_id: &str) -> i32 {
    let mut last = String::new();
    support::wait_for(
        "the grandchild's pid in the log",
        || async {
            let (_, log) = daemon.text(&format!("/v1/runs/{run_id}/logs")).await;
            (log.ends_with('\n'), log)
        },
        &mut last,
    )
    .await;
    last.trim().parse().unwrap()
}

async fn assert_gone(pid: i32) {
    let mut last = true;
    support::wait_for(
        &format!("process {pid} to be gone and reaped"),
        || async {
            let exists = std::path::Path::new(&format!("/proc/{pid}")).exists();
            (!exists, exists)
        },
        &mut last,
    )
    .await;
}

/// On timeout the whole process group is killed: no grandchild survives and
/// no zombie remains.
#[tokio::test]
async fn timeout_kills_the_whole_tree() {
    let daemon = TestDaemon::start_with(Options {
        args: vec!["--kill-grace".into(), "1".into()],
        ..Options::default()
    })
    .await;
    daemon
        .start_run(json!({"run_id": "t1", "command": "sleep 1000 & echo $!; wait", "timeout_s": 1}))
        .await;
    let grandchild = grandchild_pid(&daemon, "t1").await;
    assert!(alive(grandchild));
    let run = daemon.wait_ended("t1").await;
    assert_eq!(run["state"], "timed_out");
    assert_eq!(run["error"], "timed out after 1s");
    assert_gone(grandchild).await;
}

/// Cancel: SIGTERM to the group, SIGKILL after the grace; a tree that
/// ignores SIGTERM is still gone; cancelling again is 409.
#[tokio::test]
async fn cancel_kills_the_whole_tree() {
    let daemon = TestDaemon::start().await;
    daemon
        .start_run(json!({"run_id": "c1", "command": "trap '' TERM; sleep 1000 & echo $!; wait; sleep 1000"}))
        .await;
    let grandchild = grandchild_pid(&daemon, "c1").await;
    let (status, run) = daemon
        .post("/v1/runs/c1/cancel", json!({"grace_s": 0.5}))
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    let run = daemon.wait_ended("c1").await;
    assert_eq!(run["state"], "cancelled");
    assert!(text(&run, "error").starts_with("cancelled"), "{run}");
    assert_gone(grandchild).await;
    let (status, body) = daemon.post("/v1/runs/c1/cancel", json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("run_ended"))
    );
}

/// A grandchild left behind by a command that exits is ended with its run.
#[tokio::test]
async fn leftovers_end_with_the_run() {
    let daemon = TestDaemon::start().await;
    let run = daemon
        .exec(json!({"command": "setsid sleep 1000 >/dev/null 2>&1 & echo $!"}))
        .await;
    assert_eq!(run["state"], "succeeded");
    assert_gone(text(&run, "stdout").trim().parse().unwrap()).await;
}

/// An orphan that exits while its run goes on is reaped then, not left a
/// zombie until the run ends: a run that keeps leaving orphans (a shell
/// loop of background jobs) must not fill the process table.
#[tokio::test]
async fn orphans_are_reaped_while_the_run_goes_on() {
    let daemon = TestDaemon::start().await;
    daemon
        .start_run(
            json!({"run_id": "o1", "command": "sh -c 'sleep 0.2 & echo $!'; exec sleep 1000"}),
        )
        .await;
    let orphan = grandchild_pid(&daemon, "o1").await;
    assert_gone(orphan).await;
    let (_, run) = daemon.get("/v1/runs/o1").await;
    assert_eq!(run["state"], "running", "{run}");
    daemon
        .post("/v1/runs/o1/cancel", json!({"grace_s": 0.5}))
        .await;
    assert_eq!(daemon.wait_ended("o1").await["state"], "cancelled");
}

/// /signal delivers to the group; a run killed by a signal is failed with
/// the signal's name.
#[tokio::test]
async fn signal_reaches_the_group() {
    let daemon = TestDaemon::start().await;
    daemon
        .start_run(json!({"run_id": "s1", "command": ["sleep", "1000"]}))
        .await;
    daemon
        .wait_run("s1", "to run", |r| r["state"] == "running")
        .await;
    let (status, _) = daemon
        .post("/v1/runs/s1/signal", json!({"signal": "SIGINT"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let run = daemon.wait_ended("s1").await;
    assert_eq!(
        (run["state"].as_str(), run["signal"].as_str()),
        (Some("failed"), Some("SIGINT"))
    );
    assert_eq!(run["error"], "killed by SIGINT");
    let (status, body) = daemon
        .post("/v1/runs/s1/signal", json!({"signal": "NOPE"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

/// setup.sh runs first in the cwd; its failure fails the run with its exit
/// code and the command never starts; setup: false skips it.
#[tokio::test]
async fn setup_script_runs_first() {
    let daemon = TestDaemon::start().await;
    let cwd = daemon.dir.path().join("proj");
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::write(
        cwd.join("setup.sh"),
        "echo setting up; echo ready > marker\n",
    )
    .unwrap();
    let run = daemon
        .exec(json!({"command": "cat marker", "cwd": cwd}))
        .await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["stdout"], "setting up\nready\n");

    std::fs::write(cwd.join("setup.sh"), "echo broken >&2; exit 4\n").unwrap();
    let run = daemon
        .exec(json!({"command": "touch ran", "cwd": cwd}))
        .await;
    assert_eq!(
        (run["state"].as_str(), run["exit_code"].as_i64()),
        (Some("failed"), Some(4))
    );
    assert_eq!(run["error"], "setup.sh exited with 4");
    assert_eq!(run["stderr"], "broken\n");
    assert!(!cwd.join("ran").exists(), "the command did not start");

    let run = daemon
        .exec(json!({"command": "touch ran", "cwd": cwd, "setup": false}))
        .await;
    assert_eq!(run["state"], "succeeded");
}

/// Spawn failures are failed runs saying what was missing, not 500s.
#[tokio::test]
async fn spawn_failures_are_failed_runs() {
    let daemon = TestDaemon::start().await;
    let run = daemon.exec(json!({"command": ["no-such-binary-x"]})).await;
    assert_eq!(run["state"], "failed");
    assert_eq!(run["error"], "command not found: no-such-binary-x");
    let run = daemon
        .exec(json!({"command": ["true"], "cwd": "/no/such/dir"}))
        .await;
    assert_eq!(run["state"], "failed");
    assert!(text(&run, "error").contains("/no/such/dir"), "{run}");
    let script = daemon.dir.path().join("noexec.sh");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let run = daemon.exec(json!({"command": [script]})).await;
    assert_eq!(run["state"], "failed");
    assert!(text(&run, "error").contains("permission denied"), "{run}");
}

/// Bad requests are 400s naming the field.
#[tokio::test]
async fn bad_run_requests_are_named() {
    let daemon = TestDaemon::start().await;
    for (body, needle) in [
        (json!({"command": []}), "command"),
        (json!({"command": ""}), "command"),
        (json!({"command": ["true"], "cwd": "rel"}), "cwd"),
        (json!({"command": ["true"], "timeout_s": -1}), "timeout_s"),
        (json!({"command": ["true"], "run_id": "../x"}), "run_id"),
        (
            json!({"command": ["true"], "callback": {"url": "ftp://x"}}),
            "callback.url",
        ),
        (json!({"command": ["true"], "env": {"A=B": "x"}}), "env"),
        (json!({"command": 5}), "command"),
    ] {
        let (status, res) = daemon.post("/v1/runs", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {res}");
        let message = res["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(needle) || needle == "command",
            "{body}: {message}"
        );
    }
    let (_, list) = daemon.get("/v1/runs").await;
    assert!(
        list["runs"].as_array().unwrap().is_empty(),
        "nothing was started"
    );
}

/// The same run_id with the same body answers the existing run; a
/// different body is 409.
#[tokio::test]
async fn run_ids_are_idempotent() {
    let daemon = TestDaemon::start().await;
    let body = json!({"run_id": "same", "command": ["sleep", "0.3"]});
    let first = daemon.start_run(body.clone()).await;
    let (status, again) = daemon.post("/v1/runs", body.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["created_at"], first["created_at"]);
    let (status, body409) = daemon
        .post("/v1/runs", json!({"run_id": "same", "command": ["true"]}))
        .await;
    assert_eq!(
        (status, body409["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("run_exists"))
    );
    let mut waiting = body.clone();
    waiting["wait"] = json!(true);
    let (status, ended) = daemon.post("/v1/runs", waiting).await;
    assert_eq!(
        (status, ended["state"].as_str()),
        (StatusCode::OK, Some("succeeded"))
    );
    let (_, list) = daemon.get("/v1/runs").await;
    assert_eq!(list["runs"].as_array().unwrap().len(), 1, "started once");
}

/// --max-running refuses more with 429 and Retry-After.
#[tokio::test]
async fn max_running_gives_429() {
    let daemon = TestDaemon::start_with(Options {
        args: vec!["--max-running".into(), "1".into()],
        ..Options::default()
    })
    .await;
    daemon
        .start_run(json!({"run_id": "busy", "command": ["sleep", "1000"]}))
        .await;
    let res = daemon
        .request(Method::POST, "/v1/runs")
        .json(&json!({"command": ["true"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    let body: Value = res.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--max-running"));
    daemon
        .post("/v1/runs/busy/cancel", json!({"grace_s": 0}))
        .await;
    daemon.wait_ended("busy").await;
    daemon.exec(json!({"command": ["true"]})).await;
}

/// A run that outlived a daemon still takes its place under
/// `--max-running` in the next one; the place is freed when it ends, and
/// refused starts take none.
#[tokio::test]
async fn max_running_counts_a_reattached_run() {
    let args = vec!["--max-running".to_owned(), "1".to_owned()];
    let mut daemon = TestDaemon::start_with(Options {
        args: args.clone(),
        binary: true,
        ..Options::default()
    })
    .await;
    daemon
        .start_run(json!({"run_id": "kept", "command": ["sleep", "1000"]}))
        .await;
    daemon
        .wait_run("kept", "to run", |r| r["state"] == "running")
        .await;
    let dir = daemon.dir.clone();
    daemon.kill9();
    let daemon = TestDaemon::start_with(Options {
        args,
        binary: true,
        dir: Some(dir),
        ..Options::default()
    })
    .await;
    for _ in 0..3 {
        let (status, body) = daemon.post("/v1/runs", json!({"command": ["true"]})).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    }
    daemon
        .post("/v1/runs/kept/cancel", json!({"grace_s": 0}))
        .await;
    assert_eq!(daemon.wait_ended("kept").await["state"], "cancelled");
    for _ in 0..3 {
        let run = daemon.exec(json!({"command": ["true"]})).await;
        assert_eq!(run["state"], "succeeded", "{run}");
    }
}

/// Logs: each stream, offsets, both in arrival order.
#[tokio::test]
async fn logs_by_stream_and_offset() {
    let daemon = TestDaemon::start().await;
    let cmd = "echo one; sleep 0.05; echo two >&2; sleep 0.05; echo three";
    daemon.exec(json!({"run_id": "l1", "command": cmd})).await;
    for (query, want) in [
        ("", "one\nthree\n"),
        ("?stream=stdout&offset=4", "three\n"),
        ("?stream=stderr", "two\n"),
        ("?stream=both", "one\ntwo\nthree\n"),
        ("?stream=both&offset=5", "wo\nthree\n"),
        ("?stream=both&offset=100", ""),
    ] {
        let (status, body) = daemon.text(&format!("/v1/runs/l1/logs{query}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, want, "logs{query}");
    }
    let (status, _) = daemon.text("/v1/runs/l1/logs?stream=nope").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// Starts run `run_id` as `before; <wait for the gate file>; after` and
/// opens `logs?follow=true` on it; returns the gate and the response.
async fn follow_gated_run(
    daemon: &TestDaemon,
    run_id: &str,
    before: &str,
    after: &str,
) -> (std::path::PathBuf, reqwest::Response) {
    let gate = daemon.dir.path().join(format!("gate-{run_id}"));
    let cmd = format!(
        "{before}; while [ ! -e {} ]; do sleep 0.02; done; {after}",
        gate.display()
    );
    daemon
        .start_run(json!({"run_id": run_id, "command": cmd}))
        .await;
    let res = daemon
        .request(Method::GET, &format!("/v1/runs/{run_id}/logs?follow=true"))
        .send()
        .await
        .unwrap();
    (gate, res)
}

/// Checks the run still runs, opens its gate and reads the followed
/// stream to its end.
async fn open_gate_and_read_rest(
    daemon: &TestDaemon,
    run_id: &str,
    gate: &std::path::Path,
    res: &mut reqwest::Response,
) -> Vec<u8> {
    let (_, run) = daemon.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(run["state"], "running");
    std::fs::write(gate, "").unwrap();
    let mut rest = Vec::new();
    while let Some(chunk) = tokio::time::timeout(support::TIMEOUT, res.chunk())
        .await
        .unwrap()
        .unwrap()
    {
        rest.extend_from_slice(&chunk);
    }
    rest
}

/// follow=true streams output live and ends when the run ends.
#[tokio::test]
async fn logs_follow_streams_live() {
    let daemon = TestDaemon::start().await;
    let (gate, mut res) = follow_gated_run(&daemon, "f1", "echo first", "echo second").await;
    let first = tokio::time::timeout(support::TIMEOUT, res.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        &first[..],
        b"first\n",
        "the first line arrives while the run still runs"
    );
    let rest = open_gate_and_read_rest(&daemon, "f1", &gate, &mut res).await;
    assert_eq!(rest, b"second\n");
}

/// A follower gets the whole of a fast burst while the run is still going
/// (progress is reported in batches while output keeps coming, and at
/// once when it pauses).
#[tokio::test]
async fn logs_follow_gets_a_whole_burst_before_the_run_ends() {
    let daemon = TestDaemon::start().await;
    let burst = 4 * 1024 * 1024;
    let before = format!("head -c {burst} /dev/zero | tr '\\0' a");
    let (gate, mut res) = follow_gated_run(&daemon, "fb", &before, "echo done").await;
    let mut got = Vec::new();
    while got.len() < burst {
        let chunk = tokio::time::timeout(support::TIMEOUT, res.chunk())
            .await
            .expect("the burst arrives while the run waits at its gate")
            .unwrap()
            .expect("the stream stays open while the run runs");
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got.len(), burst);
    assert!(got.iter().all(|b| *b == b'a'));
    let rest = open_gate_and_read_rest(&daemon, "fb", &gate, &mut res).await;
    assert_eq!(rest, b"done\n");
}

/// A big output is captured whole, with bounded daemon memory, and the
/// terminal state comes only after the last byte is stored.
#[tokio::test]
async fn large_output_is_captured_whole() {
    let daemon = TestDaemon::start_binary().await;
    let run = daemon
        .exec(json!({"command": "head -c 67108864 /dev/zero", "wait": true}))
        .await;
    assert_eq!(run["stdout_bytes"], 64 << 20);
    assert_eq!(
        run["stdout"].as_str().unwrap().len(),
        1 << 20,
        "wait answers the last --wait-output-bytes"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    let hwm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    assert!(
        hwm_kb < 64 * 1024,
        "daemon peak RSS {hwm_kb} kB while capturing 64 MiB"
    );
}

/// DELETE removes an ended run's record, logs and work dir; 409 while it runs.
#[tokio::test]
async fn delete_removes_everything() {
    let daemon = TestDaemon::start().await;
    daemon
        .start_run(json!({"run_id": "d1", "command": ["sleep", "1000"]}))
        .await;
    let (status, body) = daemon.delete("/v1/runs/d1").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("run_running"))
    );
    daemon
        .post("/v1/runs/d1/cancel", json!({"grace_s": 0}))
        .await;
    daemon.wait_ended("d1").await;
    let (status, _) = daemon.delete("/v1/runs/d1").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!daemon.state_dir().join("runs/d1").exists());
    assert!(!daemon.work_root().join("d1").exists());
    let (status, _) = daemon.get("/v1/runs/d1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Ended runs survive a restart with their exit codes and logs.
#[tokio::test]
async fn finished_runs_survive_restart() {
    let mut daemon = TestDaemon::start_binary().await;
    daemon
        .exec(json!({"run_id": "p1", "command": "echo kept; exit 9"}))
        .await;
    let dir = daemon.dir.clone();
    daemon.kill9();
    let daemon = TestDaemon::start_with(Options {
        binary: true,
        dir: Some(dir),
        ..Options::default()
    })
    .await;
    let (_, run) = daemon.get("/v1/runs/p1").await;
    assert_eq!(
        (run["state"].as_str(), run["exit_code"].as_i64()),
        (Some("failed"), Some(9))
    );
    assert_eq!(daemon.text("/v1/runs/p1/logs").await.1, "kept\n");
    let (_, status) = daemon.get("/v1/status").await;
    assert_eq!(status["runs"]["failed"], 1);
}

/// A run that was running when sandboxd was killed keeps running, and the
/// restarted daemon re-attaches and records its real exit code.
#[tokio::test]
async fn running_runs_are_reattached_after_a_crash() {
    let mut daemon = TestDaemon::start_binary().await;
    let gate = daemon.dir.path().join("gate");
    let cmd = format!(
        "echo before; while [ ! -e {} ]; do sleep 0.02; done; echo after; exit 7",
        gate.display()
    );
    daemon
        .start_run(json!({"run_id": "ra", "command": cmd}))
        .await;
    daemon
        .wait_run("ra", "to print", |r| r["stdout_bytes"] == 7)
        .await;
    let dir = daemon.dir.clone();
    daemon.kill9();
    let daemon = TestDaemon::start_with(Options {
        binary: true,
        dir: Some(dir),
        ..Options::default()
    })
    .await;
    let (_, run) = daemon.get("/v1/runs/ra").await;
    assert_eq!(run["state"], "running", "re-attached: {run}");
    let mut follow = daemon
        .request(Method::GET, "/v1/runs/ra/logs?follow=true")
        .send()
        .await
        .unwrap();
    std::fs::write(&gate, "").unwrap();
    let mut all = Vec::new();
    while let Some(chunk) = tokio::time::timeout(support::TIMEOUT, follow.chunk())
        .await
        .unwrap()
        .unwrap()
    {
        all.extend_from_slice(&chunk);
    }
    assert_eq!(all, b"before\nafter\n");
    let run = daemon.wait_ended("ra").await;
    assert_eq!(
        (run["state"].as_str(), run["exit_code"].as_i64()),
        (Some("failed"), Some(7))
    );
    assert!(daemon.logs().contains("re-attached"));
}

/// A run that ends while no daemon runs is recorded by the next one: its
/// shim, with no daemon to tell, writes how the run ended before it
/// exits, and the restarted daemon reads it.
#[tokio::test]
async fn a_run_that_ends_while_no_daemon_runs_is_recorded_by_the_next() {
    let mut daemon = TestDaemon::start_binary().await;
    let gate = daemon.dir.path().join("gate");
    let cmd = format!(
        "while [ ! -e {} ]; do sleep 0.02; done; echo done; exit 5",
        gate.display()
    );
    daemon
        .start_run(json!({"run_id": "nd", "command": cmd}))
        .await;
    daemon
        .wait_run("nd", "to run", |r| r["state"] == "running")
        .await;
    let record: Value = serde_json::from_slice(
        &std::fs::read(daemon.state_dir().join("runs/nd/record.json")).unwrap(),
    )
    .unwrap();
    let shim = record["shim"]["pid"].as_i64().unwrap() as i32;
    let dir = daemon.dir.clone();
    daemon.kill9();
    std::fs::write(&gate, "").unwrap();
    let mut alive = true;
    support::wait_for(
        "the shim to end with its run",
        || async {
            let alive = support::alive(shim);
            (!alive, alive)
        },
        &mut alive,
    )
    .await;
    let daemon = TestDaemon::start_with(Options {
        binary: true,
        dir: Some(dir),
        ..Options::default()
    })
    .await;
    let (_, run) = daemon.get("/v1/runs/nd").await;
    assert_eq!(
        (run["state"].as_str(), run["exit_code"].as_i64()),
        (Some("failed"), Some(5)),
        "{run}"
    );
    assert_eq!(daemon.text("/v1/runs/nd/logs").await.1, "done\n");
}

/// When the run's owner died with sandboxd, the run is `lost` with an
/// explanation, never `running` forever.
#[tokio::test]
async fn runs_without_a_shim_are_lost() {
    let mut daemon = TestDaemon::start_binary().await;
    daemon
        .start_run(json!({"run_id": "lo", "command": ["sleep", "1000"]}))
        .await;
    let run = daemon
        .wait_run("lo", "to run", |r| r["state"] == "running")
        .await;
    let pid = run["pid"].as_i64().unwrap() as i32;
    let record: Value = serde_json::from_slice(
        &std::fs::read(daemon.state_dir().join("runs/lo/record.json")).unwrap(),
    )
    .unwrap();
    let shim = record["shim"]["pid"].as_i64().unwrap() as i32;
    let dir = daemon.dir.clone();
    daemon.kill9();
    // SAFETY: kill with plain integers.
    unsafe {
        libc::kill(shim, libc::SIGKILL);
        libc::kill(-pid, libc::SIGKILL);
    }
    assert_gone(shim).await;
    let daemon = TestDaemon::start_with(Options {
        binary: true,
        dir: Some(dir),
        ..Options::default()
    })
    .await;
    let (_, run) = daemon.get("/v1/runs/lo").await;
    assert_eq!(run["state"], "lost");
    assert!(text(&run, "error").contains("restarted"), "{run}");
}

/// 200 short runs started at once (retrying on 429 and on the connection
/// cap's 503) all end with their own exit code.
#[tokio::test]
async fn many_concurrent_runs_keep_their_exit_codes() {
    let daemon = TestDaemon::start_with(Options {
        args: vec!["--max-running".into(), "32".into()],
        ..Options::default()
    })
    .await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let req = daemon.request(Method::POST, "/v1/runs");
        let url = daemon.url.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"run_id": format!("m{i}"), "command": ["sh", "-c", format!("exit {}", i % 7)], "wait": true});
            let mut req = Some(req);
            // One client per task: retries reuse its connection.
            let retry_client = reqwest::Client::new();
            loop {
                let builder = req.take().unwrap_or_else(|| {
                    retry_client.post(format!("{url}/v1/runs")).header("X-Session-API-Key", KEY)
                });
                let res = builder.json(&body).send().await.unwrap();
                // 429: no run slot yet; 503: over the connection cap.
                if res.status() == StatusCode::TOO_MANY_REQUESTS
                    || res.status() == StatusCode::SERVICE_UNAVAILABLE
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let run: Value = res.json().await.unwrap();
                return (i, run);
            }
        }));
    }
    for task in tasks {
        let (i, run) = task.await.unwrap();
        assert_eq!(run["exit_code"].as_i64(), Some(i % 7), "run m{i}: {run}");
    }
    let (_, status) = daemon.get("/v1/status").await;
    assert_eq!(status["runs"]["running"], 0);
    assert_eq!(
        status["runs"]["succeeded"].as_u64().unwrap() + status["runs"]["failed"].as_u64().unwrap(),
        200
    );
}
