//! Completion callbacks against a real local stand-in of the automation
//! service: payloads of every end, headers, retries, 409/400, a service
//! that is down or hangs, run reports, run-token scope, phases, shutdown,
//! and `kill -9` of sandboxd with callbacks pending and runs running.

mod relay;
mod rules;
pub mod sink;

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{self, Options, TestDaemon};
use sink::{CallbackSink, Received, Reply};

/// The bearer token runs give their callbacks in these tests.
const TOKEN: &str = "sk-callback-token-for-tests";

/// Flags for quick tests: retries within 50 ms, attempts time out after 2 s.
fn fast(extra: &[&str]) -> Options {
    let mut args: Vec<String> = [
        "--callback-backoff",
        "0.05",
        "--callback-timeout",
        "2",
        "--kill-grace",
        "1",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    Options {
        args,
        ..Options::default()
    }
}

fn callback(sink: &CallbackSink, service_run_id: &str) -> Value {
    json!({"url": sink.complete_url(service_run_id), "token": TOKEN, "run_id": service_run_id})
}

/// An address nothing listens on (yet).
fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Waits until the run's `callback.state` is `state`; returns the run.
async fn wait_callback(daemon: &TestDaemon, run_id: &str, state: &str) -> Value {
    daemon
        .wait_run(run_id, &format!("to have its callback {state}"), |run| {
            run["callback"]["state"] == state
        })
        .await
}

fn error_text(received: &Received) -> &str {
    received.body["error"].as_str().unwrap_or_default()
}

fn assert_valid(all: &[Received]) {
    for r in all {
        assert!(
            r.verdict.is_ok(),
            "{} sent a body the service refuses: {:?} {}",
            r.path,
            r.verdict,
            r.body
        );
    }
}

/// The sink checks bodies with rules that agree with every case of the
/// service's fixtures (valid ones pass, invalid ones fail).
#[test]
fn sink_rules_agree_with_the_service_fixtures() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fixtures");
    rules::check_against_fixtures(&dir);
}

/// A succeeded run posts exactly `{"status":"COMPLETED","run_id"}` with
/// the bearer token, JSON content type and the run id as Idempotency-Key,
/// once; the run then shows the callback delivered; without a token there
/// is no Authorization header; the token is never logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_is_posted_once_with_its_headers() {
    let daemon = TestDaemon::start_with(Options {
        binary: true,
        ..fast(&[])
    })
    .await;
    let sink = CallbackSink::start().await;
    daemon
        .start_run(
            json!({"run_id": "ok-1", "command": ["sh", "-c", "echo hello"],
                          "callback": callback(&sink, "svc-ok")}),
        )
        .await;
    let got = sink.wait_completions("svc-ok", 1).await;
    let post = &got[0];
    assert_eq!(
        post.body,
        json!({"status": "COMPLETED", "run_id": "svc-ok"})
    );
    assert_valid(&got);
    assert_eq!(
        post.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(post.header("content-type"), Some("application/json"));
    assert_eq!(post.header("idempotency-key"), Some("ok-1"));
    let (_, run) = daemon.get("/v1/runs/ok-1").await;
    assert_eq!(
        run["state"], "succeeded",
        "ended by the time the service hears of it"
    );

    let run = wait_callback(&daemon, "ok-1", "delivered").await;
    let cb = &run["callback"];
    assert_eq!(cb["attempts"], 1, "{run}");
    assert_eq!(cb["last_status"], 200);
    assert!(cb["last_error"].is_null());
    assert!(cb["delivered_at"].is_string());

    // No token given and no --callback-token: no Authorization header;
    // no callback.run_id: the run's own id.
    daemon
        .start_run(json!({"run_id": "ok-2", "command": ["true"],
                          "callback": {"url": sink.complete_url("ok-2")}}))
        .await;
    let got = sink.wait_completions("ok-2", 1).await;
    assert_eq!(
        got[0].body,
        json!({"status": "COMPLETED", "run_id": "ok-2"})
    );
    assert_eq!(got[0].header("authorization"), None);
    wait_callback(&daemon, "ok-2", "delivered").await;

    // A run without a callback says so.
    let run = daemon
        .exec(json!({"run_id": "none-1", "command": ["true"]}))
        .await;
    assert_eq!(run["callback"]["state"], "none");

    let (_, status) = daemon.get("/v1/status").await;
    assert_eq!(status["outbox"], json!({"pending": 0, "failed": 0}));
    assert_eq!(sink.completions("svc-ok").len(), 1, "delivered once");
    let (_, metrics) = daemon.text("/metrics").await;
    assert!(
        metrics.contains("sandboxd_callback_attempts_total{outcome=\"delivered\"} 2"),
        "{metrics}"
    );
    assert!(
        !daemon.logs().contains(TOKEN),
        "the token leaked into the log"
    );

    // The outbox file is 0600 and goes away with its run.
    let file = daemon.state_dir().join("outbox/ok-1.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (status, _) = daemon.delete("/v1/runs/ok-1").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!file.exists(), "outbox file of a deleted run remains");
}

/// Every way a run can fail is FAILED with the reason first, then the last
/// 1000 characters of stderr and the last 500 of stdout, masked; every
/// body passes the service's rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_kind_has_its_payload() {
    let sink = CallbackSink::start().await;
    let daemon = TestDaemon::start_with(Options {
        binary: true,
        ..fast(&[
            "--callback-token",
            "sk-daemon-default-token",
            "--callback-token-origin",
            &sink.url,
        ])
    })
    .await;
    let setup_dir = daemon.dir.path().join("with-setup");
    std::fs::create_dir_all(&setup_dir).unwrap();
    std::fs::write(setup_dir.join("setup.sh"), "echo setting-up\nexit 4\n").unwrap();
    let runs = [
        ("f-exit", json!(["sh", "-c", "echo out-line; echo err-line >&2; echo sk-daemon-default-token >&2; exit 3"]), json!({})),
        ("f-kill", json!(["sh", "-c", "kill -9 $$"]), json!({})),
        ("f-spawn", json!(["/nonexistent/command"]), json!({})),
        ("f-setup", json!(["true"]), json!({"cwd": setup_dir.display().to_string()})),
        ("f-timeout", json!(["sleep", "30"]), json!({"timeout_s": 0.3})),
        ("f-cancel", json!(["sleep", "30"]), json!({})),
        ("f-big", json!(["sh", "-c", "yes e | head -c 3000 | tr -d '\\n' >&2; yes o | head -c 2000 | tr -d '\\n'; exit 1"]), json!({})),
    ];
    for (run_id, command, extra) in &runs {
        let mut body = json!({"run_id": run_id, "command": command,
                              "callback": {"url": sink.complete_url(run_id)}});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        daemon.start_run(body).await;
    }
    daemon
        .wait_run("f-cancel", "running", |r| r["state"] == "running")
        .await;
    let (status, _) = daemon
        .post("/v1/runs/f-cancel/cancel", json!({"grace_s": 1}))
        .await;
    assert_eq!(status, StatusCode::OK);

    let mut errors = std::collections::HashMap::new();
    for (run_id, _, _) in &runs {
        let got = sink.wait_completions(run_id, 1).await;
        assert_valid(&got);
        let post = &got[0];
        assert_eq!(post.body["status"], "FAILED", "{run_id}: {}", post.body);
        assert_eq!(post.body["run_id"], *run_id);
        assert_eq!(
            post.header("authorization"),
            Some("Bearer sk-daemon-default-token"),
            "default token"
        );
        assert_eq!(post.header("idempotency-key"), Some(*run_id));
        let keys: Vec<&String> = post.body.as_object().unwrap().keys().collect();
        assert_eq!(
            keys.len(),
            3,
            "{run_id}: only status, run_id, error: {}",
            post.body
        );
        errors.insert(*run_id, error_text(post).to_owned());
    }
    assert_eq!(
        errors["f-exit"],
        "exit_code=3\nstderr: err-line\n****\n\nstdout: out-line\n"
    );
    assert_eq!(errors["f-kill"], "killed by SIGKILL\nstderr: \nstdout: ");
    assert_eq!(
        errors["f-setup"],
        "setup.sh exited with 4\nstderr: \nstdout: setting-up\n"
    );
    assert!(
        errors["f-timeout"].starts_with("timed out after 0.3s\n"),
        "{:?}",
        errors["f-timeout"]
    );
    assert!(
        errors["f-cancel"].starts_with("cancelled"),
        "{:?}",
        errors["f-cancel"]
    );
    let (_, spawn_run) = daemon.get("/v1/runs/f-spawn").await;
    let spawn_error = spawn_run["error"].as_str().unwrap();
    assert!(spawn_error.contains("/nonexistent/command"), "{spawn_run}");
    assert!(
        errors["f-spawn"].starts_with(&format!("{spawn_error}\nstderr: ")),
        "{:?}",
        errors["f-spawn"]
    );
    assert_eq!(
        errors["f-big"],
        format!(
            "exit_code=1\nstderr: {}\nstdout: {}",
            "e".repeat(1000),
            "o".repeat(500)
        )
    );
    for (run_id, _, _) in &runs {
        wait_callback(&daemon, run_id, "delivered").await;
    }
    assert!(!daemon.logs().contains("sk-daemon-default-token"));
}

/// With the default backoff the first retry comes within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_retry_comes_within_a_second() {
    let daemon = TestDaemon::start().await;
    let sink = CallbackSink::start().await;
    sink.script(&[Reply::Status(500)]);
    daemon
        .start_run(json!({"run_id": "r-first", "command": ["true"], "callback": callback(&sink, "svc-first")}))
        .await;
    let got = sink.wait_completions("svc-first", 2).await;
    let gap = got[1].at - got[0].at;
    assert!(
        gap <= Duration::from_millis(1200),
        "first retry after {gap:?}"
    );
    let run = wait_callback(&daemon, "r-first", "delivered").await;
    assert_eq!(run["callback"]["attempts"], 2);
}

/// 500, 503 and 429 are retried (429's Retry-After honoured) until the
/// service takes the callback; while it retries, status shows the last
/// answer; the metrics count each outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_until_the_service_takes_it() {
    let daemon = TestDaemon::start_with(fast(&[])).await;
    let sink = CallbackSink::start().await;
    sink.script(&[
        Reply::Status(500),
        Reply::Status(503),
        Reply::RetryAfter(429, 1),
        Reply::Status(200),
    ]);
    daemon
        .start_run(json!({"run_id": "r-retry", "command": ["true"], "callback": callback(&sink, "svc-retry")}))
        .await;
    let got = sink.wait_completions("svc-retry", 3).await;
    assert_eq!(got[2].reply, Reply::RetryAfter(429, 1));
    let pending = daemon
        .wait_run("r-retry", "to show the 429", |r| {
            r["callback"]["last_status"] == 429
        })
        .await;
    assert_eq!(pending["callback"]["state"], "pending", "{pending}");
    assert!(pending["callback"]["last_error"]
        .as_str()
        .unwrap()
        .contains("429"));
    let got = sink.wait_completions("svc-retry", 4).await;
    assert_valid(&got);
    assert!(
        got.iter().all(|r| r.body == got[0].body),
        "every attempt sends the same body"
    );
    let after_429 = got[3].at - got[2].at;
    assert!(
        after_429 >= Duration::from_millis(950),
        "Retry-After: 1 not honoured: {after_429:?}"
    );
    let run = wait_callback(&daemon, "r-retry", "delivered").await;
    assert_eq!(run["callback"]["attempts"], 4);
    assert_eq!(run["callback"]["last_status"], 200);
    assert!(run["callback"]["last_error"].is_null());
    let (_, metrics) = daemon.text("/metrics").await;
    assert!(
        metrics.contains("sandboxd_callback_attempts_total{outcome=\"retry\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sandboxd_callback_attempts_total{outcome=\"delivered\"} 1"),
        "{metrics}"
    );
}

/// 409 (the service already holds a terminal state) counts as delivered;
/// 400 fails at once and is not retried; /v1/status counts the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_is_delivered_and_bad_request_fails() {
    let daemon = TestDaemon::start_with(fast(&[])).await;
    let sink = CallbackSink::start().await;
    sink.script(&[Reply::Status(409)]);
    daemon
        .start_run(
            json!({"run_id": "r-409", "command": ["true"], "callback": callback(&sink, "svc-409")}),
        )
        .await;
    let run = wait_callback(&daemon, "r-409", "delivered").await;
    assert_eq!(run["callback"]["attempts"], 1);
    assert_eq!(run["callback"]["last_status"], 409);

    sink.script(&[Reply::Status(400)]);
    daemon
        .start_run(json!({"run_id": "r-400", "command": ["false"], "callback": callback(&sink, "svc-400")}))
        .await;
    let run = wait_callback(&daemon, "r-400", "failed").await;
    assert_eq!(run["callback"]["attempts"], 1);
    assert_eq!(run["callback"]["last_status"], 400);
    assert!(
        run["callback"]["last_error"]
            .as_str()
            .unwrap()
            .contains("400"),
        "{run}"
    );
    assert!(run["callback"]["delivered_at"].is_null());
    let (_, status) = daemon.get("/v1/status").await;
    assert_eq!(status["outbox"], json!({"pending": 0, "failed": 1}));
    // A retry would have come within 2 × 50 ms; give it ten times that.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(sink.completions("svc-400").len(), 1, "a 400 is not retried");
    assert_eq!(sink.completions("svc-409").len(), 1, "a 409 is not retried");
}

/// A service that does not answer is timed out and retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_service_is_timed_out_and_retried() {
    let daemon = TestDaemon::start_with(Options {
        binary: true,
        args: ["--callback-backoff", "0.05", "--callback-timeout", "0.5"]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    })
    .await;
    let sink = CallbackSink::start().await;
    sink.script(&[Reply::Hang, Reply::Status(200)]);
    daemon
        .start_run(json!({"run_id": "r-hang", "command": ["true"], "callback": callback(&sink, "svc-hang")}))
        .await;
    let run = wait_callback(&daemon, "r-hang", "delivered").await;
    assert_eq!(run["callback"]["attempts"], 2, "{run}");
    assert_eq!(sink.completions("svc-hang").len(), 2);
    // On a loaded machine the 0.5 s can also run out while connecting.
    let logs = daemon.logs();
    assert!(
        logs.contains("callback attempt failed; will retry")
            && (logs.contains("no answer in time") || logs.contains("cannot connect")),
        "the timeout is logged: {logs}"
    );
}

/// While the service is down the callback stays pending (connect errors
/// are retried, /v1/status counts it); once the service is back it is
/// delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_down_for_a_while_then_back() {
    let daemon = TestDaemon::start_with(fast(&[])).await;
    let addr = free_addr();
    let url = format!("http://{addr}/api/automation/v1/runs/svc-down/complete");
    daemon
        .start_run(json!({"run_id": "r-down", "command": ["true"],
                          "callback": {"url": url, "token": TOKEN, "run_id": "svc-down"}}))
        .await;
    let run = daemon
        .wait_run("r-down", "to retry a few times", |r| {
            r["callback"]["attempts"].as_u64() >= Some(3)
        })
        .await;
    assert_eq!(run["callback"]["state"], "pending", "{run}");
    assert!(run["callback"]["last_status"].is_null());
    assert!(
        run["callback"]["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{run}"
    );
    let (_, status) = daemon.get("/v1/status").await;
    assert_eq!(status["outbox"], json!({"pending": 1, "failed": 0}));

    let sink = CallbackSink::start_at(addr).await;
    let got = sink.wait_completions("svc-down", 1).await;
    assert_eq!(
        got[0].body,
        json!({"status": "COMPLETED", "run_id": "svc-down"})
    );
    wait_callback(&daemon, "r-down", "delivered").await;
    let (_, status) = daemon.get("/v1/status").await;
    assert_eq!(status["outbox"], json!({"pending": 0, "failed": 0}));
}

/// Past --callback-max-age a callback that keeps failing is given up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_at_the_max_age() {
    let daemon = TestDaemon::start_with(fast(&["--callback-max-age", "1"])).await;
    let sink = CallbackSink::start().await;
    sink.script(&[Reply::Status(503); 200]);
    daemon
        .start_run(
            json!({"run_id": "r-old", "command": ["true"], "callback": callback(&sink, "svc-old")}),
        )
        .await;
    let run = wait_callback(&daemon, "r-old", "failed").await;
    let error = run["callback"]["last_error"].as_str().unwrap();
    assert!(
        error.contains("gave up") && error.contains("503"),
        "{error}"
    );
    assert!(run["callback"]["attempts"].as_u64().unwrap() >= 2);
    let (_, status) = daemon.get("/v1/status").await;
    assert_eq!(status["outbox"], json!({"pending": 0, "failed": 1}));
}

/// What a run reports through its own token reaches the completion, even
/// when the script dies right after; unknown report fields are 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_carried_into_the_payload() {
    let daemon = TestDaemon::start_with(fast(&[])).await;
    let sink = CallbackSink::start().await;
    let script = r#"
report() {
  curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $SANDBOXD_RUN_TOKEN" \
    -H 'Content-Type: application/json' -d "$1" "$SANDBOXD_URL/v1/runs/$SANDBOXD_RUN_ID/report"
}
echo "report=$(report '{"conversation_id":"conv-1","cost":1.25}') unknown=$(report '{"conversation_id":"x","bogus":1}')"
kill -9 $$
"#;
    daemon
        .start_run(json!({"run_id": "r-report", "command": script, "callback": callback(&sink, "svc-report")}))
        .await;
    let got = sink.wait_completions("svc-report", 1).await;
    assert_valid(&got);
    assert_eq!(
        got[0].body,
        json!({"status": "FAILED", "run_id": "svc-report", "conversation_id": "conv-1", "cost": 1.25,
               "error": "killed by SIGKILL\nstderr: \nstdout: report=200 unknown=400\n"})
    );

    let ok = r#"curl -sf -o /dev/null -X POST -H "Authorization: Bearer $SANDBOXD_RUN_TOKEN" \
      -H 'Content-Type: application/json' -d '{"conversation_id":"conv-2","cost":0}' \
      "$SANDBOXD_URL/v1/runs/$SANDBOXD_RUN_ID/report""#;
    daemon
        .start_run(json!({"run_id": "r-report-ok", "command": ok, "callback": callback(&sink, "svc-report-ok")}))
        .await;
    let got = sink.wait_completions("svc-report-ok", 1).await;
    assert_valid(&got);
    assert_eq!(
        got[0].body,
        json!({"status": "COMPLETED", "run_id": "svc-report-ok", "conversation_id": "conv-2", "cost": 0.0})
    );
    let (_, run) = daemon.get("/v1/runs/r-report-ok").await;
    assert_eq!(
        run["report"],
        json!({"conversation_id": "conv-2", "cost": 0.0})
    );
}

/// A run token reaches its own run's report and status only: another
/// run's id and every other endpoint are 403; once the run has ended the
/// token is 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_token_scope() {
    let daemon = TestDaemon::start().await;
    daemon
        .start_run(json!({"run_id": "other", "command": ["sleep", "30"]}))
        .await;
    let script = r#"
call() {
  code=$(curl -s -o /dev/null -w '%{http_code}' -X "$2" -H "Authorization: Bearer $SANDBOXD_RUN_TOKEN" \
    -H 'Content-Type: application/json' ${4:+-d "$4"} "$SANDBOXD_URL$3")
  echo "$1=$code"
}
R=/v1/runs/$SANDBOXD_RUN_ID
call own_get GET "$R"
call own_report POST "$R/report" '{"cost":0.5}'
call other_get GET /v1/runs/other
call other_report POST /v1/runs/other/report '{"cost":1}'
call other_cancel POST /v1/runs/other/cancel '{}'
call own_logs GET "$R/logs"
call own_cancel POST "$R/cancel" '{}'
call own_signal POST "$R/signal" '{"signal":"SIGUSR1"}'
call own_delete DELETE "$R"
call own_bundle PUT "$R/bundle"
call list GET /v1/runs
call create POST /v1/runs '{"command":["true"]}'
call status GET /v1/status
call metrics GET /metrics
call files PUT '/v1/files?path=/tmp/x'
echo "$SANDBOXD_RUN_TOKEN" > token.txt
"#;
    let run = daemon
        .exec(json!({"run_id": "scoped", "command": script}))
        .await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let stdout = run["stdout"].as_str().unwrap();
    let codes: std::collections::HashMap<&str, &str> =
        stdout.lines().filter_map(|l| l.split_once('=')).collect();
    let expected = [
        ("own_get", "200"),
        ("own_report", "200"),
        ("other_get", "403"),
        ("other_report", "403"),
        ("other_cancel", "403"),
        ("own_logs", "403"),
        ("own_cancel", "403"),
        ("own_signal", "403"),
        ("own_delete", "403"),
        ("own_bundle", "403"),
        ("list", "403"),
        ("create", "403"),
        ("status", "403"),
        ("metrics", "403"),
        ("files", "403"),
    ];
    for (name, code) in expected {
        assert_eq!(
            codes.get(name).copied(),
            Some(code),
            "{name}; the run printed:\n{stdout}"
        );
    }
    let (_, other) = daemon.get("/v1/runs/other").await;
    assert_eq!(other["state"], "running", "the other run was not touched");

    let token = std::fs::read_to_string(daemon.work_root().join("scoped/token.txt")).unwrap();
    let token = token.trim();
    assert_eq!(token.len(), 64);
    let http = reqwest::Client::new();
    for (method, path) in [
        (reqwest::Method::GET, "/v1/runs/scoped"),
        (reqwest::Method::POST, "/v1/runs/scoped/report"),
    ] {
        let req = http
            .request(method.clone(), format!("{}{path}", daemon.url))
            .bearer_auth(token)
            .json(&json!({"cost": 1}));
        let (status, body) = support::send(req).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} after the run ended: {body}"
        );
        assert_eq!(body["error"]["code"], "unauthorized");
    }
}

/// With `phases: true` the run's setup and running phases are posted, in
/// order, to the sibling /phase URL with the same auth; a failing phase
/// endpoint is retried until it takes them, never holds the run back, and
/// holds its completion back until they are through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phases_are_reported_beside_the_completion() {
    let daemon = TestDaemon::start_with(fast(&[])).await;
    let sink = CallbackSink::start().await;
    let cwd = daemon.dir.path().join("phased");
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::write(cwd.join("setup.sh"), "true\n").unwrap();
    let mut cb = callback(&sink, "svc-phase");
    cb["phases"] = json!(true);
    daemon
        .start_run(json!({"run_id": "r-phase", "command": ["true"], "cwd": cwd.display().to_string(), "callback": cb}))
        .await;
    let all = sink
        .wait("both phases and the completion", |all| {
            all.iter()
                .filter(|r| r.path.contains("/svc-phase/"))
                .count()
                >= 3
        })
        .await;
    let mine: Vec<&Received> = all
        .iter()
        .filter(|r| r.path.contains("/svc-phase/"))
        .collect();
    assert_valid(&mine.iter().map(|r| (*r).clone()).collect::<Vec<_>>());
    let phases: Vec<&Value> = mine
        .iter()
        .filter(|r| r.is_phase())
        .map(|r| &r.body["phase"])
        .collect();
    assert_eq!(phases, [&json!("setup"), &json!("running")]);
    for r in &mine {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        if r.is_phase() {
            assert_eq!(r.path, "/api/automation/v1/runs/svc-phase/phase");
        }
    }

    // The phase endpoint fails for a while: the run goes on, each phase is
    // retried until taken, in order, and the completion waits for them.
    sink.script_phases(&[
        Reply::Status(500),
        Reply::Status(503),
        Reply::Status(500),
        Reply::Status(429),
    ]);
    let mut cb = callback(&sink, "svc-phase-down");
    cb["phases"] = json!(true);
    let run = daemon
        .exec(json!({"run_id": "r-phase-down", "command": ["true"], "cwd": cwd.display().to_string(), "callback": cb}))
        .await;
    assert_eq!(run["state"], "succeeded");
    sink.wait_completions("svc-phase-down", 1).await;
    wait_callback(&daemon, "r-phase-down", "delivered").await;
    let order: Vec<String> = sink
        .for_run("svc-phase-down")
        .iter()
        .map(|r| match r.is_phase() {
            true => format!("{}:{}", r.body["phase"].as_str().unwrap(), r.reply_status()),
            false => "complete".to_owned(),
        })
        .collect();
    assert_eq!(
        order,
        [
            "setup:500",
            "setup:503",
            "setup:500",
            "setup:429",
            "setup:200",
            "running:200",
            "complete"
        ]
    );

    // Without `phases`, none.
    daemon
        .exec(json!({"run_id": "r-nophase", "command": ["true"], "callback": callback(&sink, "svc-nophase")}))
        .await;
    sink.wait_completions("svc-nophase", 1).await;
    assert!(sink
        .for_run("svc-nophase")
        .iter()
        .all(Received::is_complete));
}

/// SIGTERM: runs stopped by the shutdown get their callback before the
/// daemon exits; a callback the service cannot take yet stays on disk and
/// is delivered by the next start; delivered results survive the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_and_keeps_the_rest() {
    let mut daemon = TestDaemon::start_with(Options {
        binary: true,
        ..fast(&["--shutdown-grace", "2"])
    })
    .await;
    let sink = CallbackSink::start().await;
    let down = free_addr();
    daemon
        .start_run(json!({"run_id": "s-live", "command": ["sleep", "30"], "callback": callback(&sink, "svc-live")}))
        .await;
    daemon
        .wait_run("s-live", "running", |r| r["state"] == "running")
        .await;
    let url = format!("http://{down}/api/automation/v1/runs/svc-later/complete");
    daemon
        .exec(json!({"run_id": "s-later", "command": ["true"], "callback": {"url": url, "run_id": "svc-later"}}))
        .await;
    daemon.signal(libc::SIGTERM);
    let code = daemon.wait_exit();
    assert!(code.success(), "{code:?}");
    let got = sink.completions("svc-live");
    assert_eq!(
        got.len(),
        1,
        "the shutdown's cancellation was reported before exit"
    );
    assert!(
        error_text(&got[0]).starts_with("cancelled"),
        "{:?}",
        got[0].body
    );
    let file = daemon.state_dir().join("outbox/s-later.json");
    let stored: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(stored["state"], "pending", "{stored}");

    let later = CallbackSink::start_at(down).await;
    let daemon = TestDaemon::start_with(Options {
        binary: true,
        dir: Some(daemon.dir.clone()),
        ..fast(&[])
    })
    .await;
    let got = later.wait_completions("svc-later", 1).await;
    assert_eq!(
        got[0].body,
        json!({"status": "COMPLETED", "run_id": "svc-later"})
    );
    wait_callback(&daemon, "s-later", "delivered").await;
    let run = wait_callback(&daemon, "s-live", "delivered").await;
    assert_eq!(run["callback"]["attempts"], 1, "{run}");
    assert_eq!(run["callback"]["last_status"], 200);
    assert_eq!(
        sink.completions("svc-live").len(),
        1,
        "not sent again after the restart"
    );
}

/// kill -9 of sandboxd while callbacks are pending and runs are running,
/// runs ending while it is down, then a restart on the same state dir:
/// every run's callback arrives once with its right status and exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_and_restart_lose_no_callback() {
    let mut first = TestDaemon::start_with(Options {
        binary: true,
        ..fast(&[])
    })
    .await;
    let sink = CallbackSink::start().await;
    // The service is unavailable until the restart: callbacks stay pending.
    sink.script(&[Reply::Status(503); 10_000]);
    let runs = [
        ("c-done", "exit 0"),
        ("c-fail", "echo bad >&2; exit 5"),
        ("c-ends-while-down", "sleep 1; echo late; exit 7"),
        ("c-killed-while-down", "sleep 1; kill -9 $$"),
        (
            "c-outlives",
            r#"curl -sf -o /dev/null -X POST -H "Authorization: Bearer $SANDBOXD_RUN_TOKEN" \
                 -H 'Content-Type: application/json' -d '{"conversation_id":"conv-x","cost":2.5}' \
                 "$SANDBOXD_URL/v1/runs/$SANDBOXD_RUN_ID/report"; sleep 3; exit 0"#,
        ),
        ("c-lost", "sleep 30"),
    ];
    for (run_id, script) in runs {
        first
            .start_run(
                json!({"run_id": run_id, "command": script, "callback": callback(&sink, run_id)}),
            )
            .await;
    }
    for run_id in ["c-done", "c-fail"] {
        sink.wait_completions(run_id, 2).await;
    }
    first
        .wait_run("c-outlives", "to report", |r| r["report"]["cost"] == 2.5)
        .await;
    first
        .wait_run("c-lost", "running", |r| r["state"] == "running")
        .await;
    first.kill9();
    let runs_dir = first.state_dir().join("runs");
    // c-lost's shim dies too, without recording the end: nobody can know.
    let record: Value =
        serde_json::from_slice(&std::fs::read(runs_dir.join("c-lost/record.json")).unwrap())
            .unwrap();
    let shim_pid = record["shim"]["pid"].as_i64().unwrap() as i32;
    let group = record["pid"].as_i64().unwrap() as i32;
    // SAFETY: kill with plain integers, on processes this test started.
    unsafe {
        libc::kill(shim_pid, libc::SIGKILL);
        libc::kill(-group, libc::SIGKILL);
    }
    for run_id in ["c-ends-while-down", "c-killed-while-down"] {
        let exit = runs_dir.join(run_id).join("exit.json");
        let mut last = false;
        support::wait_for(
            &format!("{run_id} ending while sandboxd is down"),
            || {
                let exists = exit.exists();
                async move { (exists, exists) }
            },
            &mut last,
        )
        .await;
    }
    assert!(
        !runs_dir.join("c-outlives/exit.json").exists(),
        "c-outlives must still run at the restart"
    );
    sink.clear_script();
    let second = TestDaemon::start_with(Options {
        binary: true,
        dir: Some(first.dir.clone()),
        ..fast(&[])
    })
    .await;

    let expected = [
        ("c-done", "COMPLETED", ""),
        ("c-fail", "FAILED", "exit_code=5\nstderr: bad\n\nstdout: "),
        ("c-ends-while-down", "FAILED", "exit_code=7\nstderr: \nstdout: late\n"),
        ("c-killed-while-down", "FAILED", "killed by SIGKILL\nstderr: \nstdout: "),
        ("c-outlives", "COMPLETED", ""),
        (
            "c-lost",
            "FAILED",
            "sandboxd restarted and the run's shim was gone without recording how the run ended\nstderr: \nstdout: ",
        ),
    ];
    for (run_id, status, error) in expected {
        let run = wait_callback(&second, run_id, "delivered").await;
        let got = sink.completions(run_id);
        assert_valid(&got);
        let delivered: Vec<&Received> = got
            .iter()
            .filter(|r| r.reply == Reply::Status(200))
            .collect();
        assert_eq!(
            delivered.len(),
            1,
            "{run_id}: delivered exactly once: {got:#?}"
        );
        let body = &delivered[0].body;
        assert_eq!(body["status"], status, "{run_id}: {body}");
        assert_eq!(
            body["error"].as_str().unwrap_or_default(),
            error,
            "{run_id}: {body}"
        );
        assert!(
            got.iter().all(|r| r.body == *body),
            "{run_id}: every attempt carried the same body"
        );
        assert_eq!(run["callback"]["last_status"], 200, "{run_id}: {run}");
    }
    let outlived = &sink.completions("c-outlives")[0].body;
    assert_eq!(
        outlived["conversation_id"], "conv-x",
        "reported before the crash: {outlived}"
    );
    assert_eq!(outlived["cost"], 2.5);
    let (_, status) = second.get("/v1/status").await;
    assert_eq!(status["outbox"], json!({"pending": 0, "failed": 0}));
    assert_eq!(status["runs"]["running"], 0);
    assert_eq!(status["runs"]["lost"], 1);
    let logs = second.logs();
    assert!(
        logs.contains("re-attached to a run that outlived the last daemon")
            && logs.contains("c-outlives"),
        "c-outlives was followed through its shim:\n{logs}"
    );
}

/// The default callback token goes only to the origin it belongs to (by
/// default `--cloud-api-url`'s): a callback URL elsewhere gets no
/// Authorization header unless the request names its own token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_token_goes_only_to_its_origin() {
    let cloud = CallbackSink::start().await;
    let elsewhere = CallbackSink::start().await;
    let daemon = TestDaemon::start_with(fast(&[
        "--callback-token",
        "sk-default-token",
        "--cloud-api-url",
        &cloud.url,
    ]))
    .await;
    for (run_id, sink, token) in [
        ("own-origin", &cloud, None),
        ("foreign-origin", &elsewhere, None),
        ("foreign-named", &elsewhere, Some(TOKEN)),
    ] {
        let mut callback = json!({"url": sink.complete_url(run_id)});
        if let Some(token) = token {
            callback["token"] = json!(token);
        }
        daemon
            .start_run(json!({"run_id": run_id, "command": ["true"], "callback": callback}))
            .await;
    }
    assert_eq!(
        auth(&cloud, "own-origin").await.as_deref(),
        Some("Bearer sk-default-token")
    );
    assert_eq!(auth(&elsewhere, "foreign-origin").await, None);
    assert_eq!(
        auth(&elsewhere, "foreign-named").await,
        Some(format!("Bearer {TOKEN}"))
    );
}

/// Link-local and cloud metadata addresses are refused as callback URLs
/// with a 400 naming `callback.url`; nothing starts.
#[tokio::test]
async fn metadata_and_link_local_callback_urls_are_refused() {
    let daemon = TestDaemon::start_with(fast(&["--callback-token", "sk-default-token"])).await;
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.1.1:8080/runs/x/complete",
        "http://[fe80::1%25eth0]/complete",
        "http://[fe80::abcd]:9/complete",
        "http://[fd00:ec2::254]/latest/",
        "http://metadata.google.internal/computeMetadata/v1/",
    ] {
        let (status, body) = daemon
            .post(
                "/v1/runs",
                json!({"run_id": "meta", "command": ["true"], "callback": {"url": url}}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("callback.url"), "{url}: {body}");
        let (status, _) = daemon.get("/v1/runs/meta").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{url}: a run was created");
    }
}

/// The Authorization header of a run's completion.
async fn auth(sink: &CallbackSink, run_id: &str) -> Option<String> {
    let got = sink.wait_completions(run_id, 1).await;
    got[0].header("authorization").map(str::to_owned)
}
