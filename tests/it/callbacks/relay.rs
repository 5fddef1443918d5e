//! The completion relay: a run with a callback finds
//! `AUTOMATION_CALLBACK_URL` pointing at sandboxd and its own token as
//! `AUTOMATION_CALLBACK_API_KEY`; what it posts there is merged into the
//! one completion the service receives, with the service's real token.

use std::time::Duration;

use serde_json::{json, Value};

use super::sink::{CallbackSink, Reply};
use super::{assert_valid, callback, fast, free_addr, wait_callback, TOKEN};
use crate::support::{Options, TestDaemon};

/// A shell script posting `body` to its `AUTOMATION_CALLBACK_URL` the way
/// the SDK does (`Authorization: Bearer $AUTOMATION_CALLBACK_API_KEY`),
/// printing the HTTP status, then exiting `code`.
fn posts_then_exits(body: &Value, code: i32) -> Value {
    let script = format!(
        "curl -s -o /dev/null -w '%{{http_code}}\\n' -X POST -H \"Authorization: Bearer $AUTOMATION_CALLBACK_API_KEY\" \
         -H 'Content-Type: application/json' -d '{body}' \"$AUTOMATION_CALLBACK_URL\"; exit {code}"
    );
    json!(["sh", "-c", script])
}

async fn relay_run(daemon: &TestDaemon, sink: &CallbackSink, id: &str, command: Value) -> Value {
    daemon
        .start_run(json!({"run_id": id, "command": command, "callback": callback(sink, id)}))
        .await;
    let got = sink.wait_completions(id, 1).await;
    assert_valid(&got);
    assert_eq!(
        got[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    got[0].body.clone()
}

/// The env points at sandboxd for this run, with the run's own token and
/// never the service's.
#[tokio::test]
async fn relay_env_points_at_sandboxd_with_the_run_token() {
    let sink = CallbackSink::start().await;
    let daemon = TestDaemon::start_with(fast(&[])).await;
    let script = "echo \"$AUTOMATION_CALLBACK_URL\"; echo \"$AUTOMATION_PHASE_URL\"; \
                  [ \"$AUTOMATION_CALLBACK_API_KEY\" = \"$SANDBOXD_RUN_TOKEN\" ] && echo same-token; env";
    let run = daemon
        .exec(json!({"run_id": "env-1", "command": ["sh", "-c", script],
                     "callback": callback(&sink, "env-1")}))
        .await;
    let stdout = run["stdout"].as_str().unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], format!("{}/v1/runs/env-1/complete", daemon.url));
    assert_eq!(lines[1], format!("{}/v1/runs/env-1/phase", daemon.url));
    assert_eq!(lines[2], "same-token");
    assert!(!stdout.contains(TOKEN), "{stdout}");
}

/// An SDK-shaped completion with a conversation id and cost, then exit 0:
/// one COMPLETED completion carrying them.
#[tokio::test]
async fn relay_carries_the_scripts_completion() {
    let sink = CallbackSink::start().await;
    let daemon = TestDaemon::start_with(fast(&[])).await;
    let body = json!({"status": "COMPLETED", "run_id": "x", "conversation_id": "0123abcd", "cost": 0.42,
                      "task_outcome": {"kind": "done"}});
    let payload = relay_run(&daemon, &sink, "ok-1", posts_then_exits(&body, 0)).await;
    assert_eq!(
        payload,
        json!({"status": "COMPLETED", "run_id": "ok-1", "conversation_id": "0123abcd", "cost": 0.42,
               "task_outcome": {"kind": "done"}})
    );
    assert_eq!(sink.completions("ok-1").len(), 1, "exactly one completion");
}

/// The exit decides: COMPLETED then exit 1 is FAILED with the exit code;
/// FAILED with an SDK error event then exit 0 is FAILED with that event.
#[tokio::test]
async fn relay_combines_the_scripts_status_with_the_exit() {
    let sink = CallbackSink::start().await;
    let daemon = TestDaemon::start_with(fast(&[])).await;
    let said_ok = json!({"status": "COMPLETED", "conversation_id": "c1"});
    let payload = relay_run(&daemon, &sink, "lie-1", posts_then_exits(&said_ok, 1)).await;
    assert_eq!(payload["status"], "FAILED");
    assert_eq!(payload["conversation_id"], "c1");
    assert!(
        payload["error"]
            .as_str()
            .unwrap()
            .starts_with("exit_code=1"),
        "{payload}"
    );

    let event =
        json!({"kind": "ConversationErrorEvent", "code": "ValueError", "detail": "disk full"});
    let said_failed = json!({"status": "FAILED", "error": event});
    let payload = relay_run(&daemon, &sink, "fail-0", posts_then_exits(&said_failed, 0)).await;
    assert_eq!(
        payload,
        json!({"status": "FAILED", "run_id": "fail-0", "error": event})
    );
}

/// Phases the script posts reach the service's phase URL in order, with
/// the service's token, before the one completion.
#[tokio::test]
async fn relay_forwards_the_scripts_phases_in_order() {
    let sink = CallbackSink::start().await;
    let daemon = TestDaemon::start_with(fast(&[])).await;
    let script = "for p in cloning building testing; do curl -s -o /dev/null -X POST \
                  -H \"Authorization: Bearer $AUTOMATION_CALLBACK_API_KEY\" \
                  -H 'Content-Type: application/json' -d \"{\\\"phase\\\": \\\"$p\\\"}\" \"$AUTOMATION_PHASE_URL\"; done";
    relay_run(&daemon, &sink, "ph-1", json!(["sh", "-c", script])).await;
    let got = sink.for_run("ph-1");
    let phases: Vec<&Value> = got
        .iter()
        .filter(|r| r.is_phase())
        .map(|r| &r.body["phase"])
        .collect();
    assert_eq!(
        phases,
        [&json!("cloning"), &json!("building"), &json!("testing")]
    );
    for post in got.iter().filter(|r| r.is_phase()) {
        assert_eq!(
            post.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
    }
    assert!(
        got.last().unwrap().is_complete(),
        "the completion comes last"
    );
}

/// Phases are stored before the script hears `200`: the service is down,
/// the run ends, sandboxd is killed -9; restarted, it posts every phase in
/// order and only then the one completion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_phases_survive_a_crash_and_go_before_the_completion() {
    let mut first = TestDaemon::start_with(Options {
        binary: true,
        ..fast(&[])
    })
    .await;
    let down = free_addr();
    let url = format!("http://{down}/api/automation/v1/runs/ph-crash/complete");
    let script = "for p in cloning 'two  words' testing; do curl -s -o /dev/null -w '%{http_code} ' -X POST \
                  -H \"Authorization: Bearer $AUTOMATION_CALLBACK_API_KEY\" \
                  -H 'Content-Type: application/json' -d \"{\\\"phase\\\": \\\"$p\\\"}\" \"$AUTOMATION_PHASE_URL\"; done";
    let run = first
        .exec(
            json!({"run_id": "ph-crash", "command": ["sh", "-c", script],
                     "callback": {"url": url, "token": TOKEN, "run_id": "ph-crash"}}),
        )
        .await;
    assert_eq!(
        run["stdout"], "200 200 200 ",
        "every phase was taken: {run}"
    );
    let queued = first.state_dir().join("outbox/ph-crash.phases");
    let stored: Value = serde_json::from_slice(&std::fs::read(&queued).unwrap()).unwrap();
    let names: Vec<&Value> = stored["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["phase"])
        .collect();
    assert_eq!(
        names,
        [&json!("cloning"), &json!("two words"), &json!("testing")]
    );
    let file = std::fs::read_to_string(&queued).unwrap();
    assert!(
        !file.contains(crate::support::KEY),
        "no session key in the queue"
    );
    assert_eq!(run["callback"]["state"], "pending", "{run}");

    first.signal(libc::SIGKILL);
    first.wait_exit();
    let service = CallbackSink::start_at(down).await;
    let daemon = TestDaemon::start_with(Options {
        binary: true,
        dir: Some(first.dir.clone()),
        ..fast(&[])
    })
    .await;
    service.wait_completions("ph-crash", 1).await;
    wait_callback(&daemon, "ph-crash", "delivered").await;
    let got = service.for_run("ph-crash");
    assert_valid(&got);
    let order: Vec<String> = got
        .iter()
        .map(|r| match r.is_phase() {
            true => r.body["phase"].as_str().unwrap().to_owned(),
            false => "COMPLETE".to_owned(),
        })
        .collect();
    assert_eq!(order, ["cloning", "two words", "testing", "COMPLETE"]);
    for post in &got {
        assert_eq!(
            post.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
    }
    assert!(!queued.exists(), "the queue's file goes once it is empty");
}

/// A phase endpoint that never takes anything holds the run's completion
/// back for 30 s after the run's end at most: then the phases are dropped
/// (logged) and the one completion goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phases_hold_the_completion_back_for_30_s_at_most() {
    let sink = CallbackSink::start().await;
    sink.script_phases(&[Reply::Status(500); 10_000]);
    let daemon = TestDaemon::start_with(Options {
        binary: true,
        ..fast(&[])
    })
    .await;
    let mut cb = callback(&sink, "ph-stuck");
    cb["phases"] = json!(true);
    let run = daemon
        .exec(json!({"run_id": "ph-stuck", "command": ["true"], "callback": cb}))
        .await;
    assert_eq!(run["state"], "succeeded");
    let ended = std::time::Instant::now();
    let got = sink
        .wait_within("the completion", Duration::from_secs(45), |all| {
            all.iter().any(|r| r.is_complete())
        })
        .await;
    let held = ended.elapsed();
    let got: Vec<_> = got.into_iter().filter(|r| r.is_complete()).collect();
    assert_eq!(got.len(), 1);
    assert!(
        held >= Duration::from_secs(28) && held < Duration::from_secs(40),
        "the completion came {held:?} after the run's end"
    );
    assert_eq!(
        got[0].body,
        json!({"status": "COMPLETED", "run_id": "ph-stuck"})
    );
    let tried = sink.for_run("ph-stuck");
    assert!(
        tried.iter().filter(|r| r.is_phase()).count() >= 3,
        "phases were retried while the completion waited"
    );
    assert!(tried
        .iter()
        .filter(|r| r.is_phase())
        .all(|r| r.body["phase"] == "running"));
    // The log is read from the daemon's stderr as it comes.
    let logged = std::time::Instant::now() + Duration::from_secs(5);
    while !daemon.logs().contains("phase reports dropped") && std::time::Instant::now() < logged {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(daemon.logs().contains("phase reports dropped"));
    assert!(!daemon.state_dir().join("outbox/ph-stuck.phases").exists());
}

/// A run's end stops only its own phase queue's backoff: a run whose phase
/// the service asked to retry in an hour is not re-posted when other runs
/// end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_runs_end_leaves_a_phase_queue_in_its_backoff() {
    let sink = CallbackSink::start().await;
    sink.script_phases(&[Reply::RetryAfter(503, 3600); 10_000]);
    let daemon = TestDaemon::start_with(fast(&[])).await;
    let mut cb = callback(&sink, "herd-a");
    cb["phases"] = json!(true);
    daemon
        .start_run(json!({"run_id": "herd-a", "command": ["sleep", "30"], "callback": cb}))
        .await;
    sink.wait("a's first phase", |all| {
        all.iter()
            .any(|r| r.is_phase() && r.path.contains("herd-a"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let a_posts = |s: &CallbackSink| s.for_run("herd-a").iter().filter(|r| r.is_phase()).count();
    let before = a_posts(&sink);
    for n in 0..3 {
        let id = format!("herd-b{n}");
        let mut cb = callback(&sink, &id);
        cb["phases"] = json!(true);
        daemon
            .exec(json!({"run_id": id, "command": ["sleep", "0.3"], "callback": cb}))
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let after = a_posts(&sink);
    assert_eq!(
        before, after,
        "run a's phase was re-posted despite Retry-After: 3600"
    );
}

/// A hostile run floods its phase endpoint (300 posts back to back on one
/// connection) while the service is down: every post is taken, the daemon
/// stays responsive, at most 64 phases wait on disk with the newest last,
/// and once the service is back it gets them in order, then one completion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_flooding_its_phases_is_bounded() {
    let daemon = TestDaemon::start_with(fast(&[])).await;
    let down = free_addr();
    let url = format!("http://{down}/api/automation/v1/runs/ph-flood/complete");
    let flood = r#"
import http.client, json, os, urllib.parse
u = urllib.parse.urlsplit(os.environ["AUTOMATION_PHASE_URL"])
c = http.client.HTTPConnection(u.hostname, u.port)
h = {"Authorization": "Bearer " + os.environ["AUTOMATION_CALLBACK_API_KEY"],
     "Content-Type": "application/json"}
ok = 0
for i in range(300):
    c.request("POST", u.path, json.dumps({"phase": "p%d" % i}), h)
    r = c.getresponse(); r.read(); ok += r.status == 200
print(ok)
"#;
    let run = daemon
        .exec(
            json!({"run_id": "ph-flood", "command": ["python3", "-c", flood],
                     "callback": {"url": url, "token": TOKEN, "run_id": "ph-flood"}}),
        )
        .await;
    assert_eq!(run["stdout"], "300\n", "{run}");
    let started = std::time::Instant::now();
    let (status, _) = daemon.get("/healthz").await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(1));
    let queued = daemon.state_dir().join("outbox/ph-flood.phases");
    let stored: Value = serde_json::from_slice(&std::fs::read(&queued).unwrap()).unwrap();
    let pending = stored["pending"].as_array().unwrap();
    assert!(pending.len() <= 64, "{} phases wait", pending.len());
    assert_eq!(pending.last().unwrap()["phase"], "p299");

    let service = CallbackSink::start_at(down).await;
    service.wait_completions("ph-flood", 1).await;
    let got = service.for_run("ph-flood");
    let phases: Vec<u32> = got
        .iter()
        .filter(|r| r.is_phase())
        .map(|r| r.body["phase"].as_str().unwrap()[1..].parse().unwrap())
        .collect();
    assert!(phases.len() <= 65, "{} phases posted", phases.len());
    assert!(
        phases.windows(2).all(|w| w[0] < w[1]),
        "in order: {phases:?}"
    );
    assert_eq!(phases.last(), Some(&299));
    assert!(got.last().unwrap().is_complete());
    assert_eq!(got.iter().filter(|r| r.is_complete()).count(), 1);
}

/// Only the service's shape is taken: an unknown field is refused and
/// nothing is stored; an ended run takes none.
#[tokio::test]
async fn relay_refuses_other_shapes() {
    let sink = CallbackSink::start().await;
    let daemon = TestDaemon::start_with(fast(&[])).await;
    let extra = json!({"status": "COMPLETED", "surprise": 1});
    let lower = json!({"status": "completed"});
    let script = format!(
        "for b in '{extra}' '{lower}'; do curl -s -X POST -H \"Authorization: Bearer $AUTOMATION_CALLBACK_API_KEY\" \
         -H 'Content-Type: application/json' -d \"$b\" \"$AUTOMATION_CALLBACK_URL\"; echo; done"
    );
    let run = daemon
        .exec(json!({"run_id": "shape-1", "command": ["sh", "-c", script],
                     "callback": callback(&sink, "shape-1")}))
        .await;
    let answers: Vec<Value> = run["stdout"]
        .as_str()
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(answers[0]["error"]["code"], "bad_json", "{answers:?}");
    assert!(answers[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("surprise"));
    assert_eq!(answers[1]["error"]["code"], "bad_json", "{answers:?}");
    let got = sink.wait_completions("shape-1", 1).await;
    assert_eq!(
        got[0].body,
        json!({"status": "COMPLETED", "run_id": "shape-1"})
    );
    let (status, _) = daemon
        .post("/v1/runs/shape-1/complete", json!({"status": "FAILED"}))
        .await;
    assert_eq!(
        status,
        reqwest::StatusCode::CONFLICT,
        "an ended run takes no completion"
    );
}
