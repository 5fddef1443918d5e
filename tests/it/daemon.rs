//! The daemon itself: auth, status, metrics, OpenAPI, JSON errors, limits,
//! shutdown, systemd readiness, hardening.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{self, Options, TestDaemon, KEY};

/// Every route except /healthz and /openapi.json refuses requests without
/// the key, or with a wrong one, with the JSON 401.
#[tokio::test]
async fn every_protected_route_needs_the_key() {
    let daemon = TestDaemon::start().await;
    let http = reqwest::Client::new();
    let routes = [
        (Method::GET, "/v1/status"),
        (Method::GET, "/metrics"),
        (Method::POST, "/v1/runs"),
        (Method::GET, "/v1/runs"),
        (Method::GET, "/v1/runs/r1"),
        (Method::DELETE, "/v1/runs/r1"),
        (Method::GET, "/v1/runs/r1/logs"),
        (Method::POST, "/v1/runs/r1/cancel"),
        (Method::POST, "/v1/runs/r1/signal"),
        (Method::POST, "/v1/runs/r1/report"),
        (Method::PUT, "/v1/runs/r1/bundle"),
        (Method::POST, "/v1/runs/r1/bundle"),
        (Method::PUT, "/v1/files?path=/tmp/x"),
        (Method::POST, "/v1/secrets/resolve"),
    ];
    for (method, path) in routes {
        for header in [
            None,
            Some(("X-Session-API-Key", "wrong")),
            Some(("Authorization", "Bearer wrong")),
        ] {
            let mut req = http.request(method.clone(), format!("{}{path}", daemon.url));
            if let Some((name, value)) = header {
                req = req.header(name, value);
            }
            let (status, body) = support::send(req).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {header:?}"
            );
            assert_eq!(
                body["error"]["code"], "unauthorized",
                "{method} {path}: {body}"
            );
            assert!(body["error"]["message"].as_str().unwrap().len() > 10);
        }
    }
    for path in ["/healthz", "/openapi.json"] {
        let res = http
            .get(format!("{}{path}", daemon.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path} is public");
    }
    let bearer = http
        .get(format!("{}/v1/status", daemon.url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        bearer.status(),
        StatusCode::OK,
        "Authorization: Bearer works too"
    );
}

/// /v1/status has every field of the contract.
#[tokio::test]
async fn status_has_the_contract_fields() {
    let daemon = TestDaemon::start().await;
    let (status, body) = daemon.get("/v1/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["pid"], daemon.pid());
    assert!(body["uptime_s"].as_f64().unwrap() >= 0.0);
    for state in [
        "running",
        "succeeded",
        "failed",
        "timed_out",
        "cancelled",
        "lost",
    ] {
        assert_eq!(body["runs"][state], 0, "runs.{state}");
    }
    assert_eq!(body["outbox"], json!({"pending": 0, "failed": 0}));
    assert_eq!(body["agent_server"]["url"], "http://127.0.0.1:9");
    assert_eq!(
        body["agent_server"]["healthy"], false,
        "nothing listens on port 9"
    );
    assert!(body["service"].is_null());
    assert_eq!(
        body["work_root"]["path"],
        daemon.work_root().display().to_string()
    );
    assert!(body["work_root"]["free_bytes"].as_u64().unwrap() > 0);
}

/// The agent-server probe reports a live server as healthy.
#[tokio::test]
async fn agent_server_probe_sees_a_live_server() {
    let app = axum::Router::new().route("/alive", axum::routing::get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let daemon = TestDaemon::start_with(Options {
        args: vec!["--agent-server-url".into(), format!("http://{addr}")],
        ..Options::default()
    })
    .await;
    let mut last = Value::Null;
    support::wait_for(
        "agent_server.healthy",
        || async {
            let (_, body) = daemon.get("/v1/status").await;
            (body["agent_server"]["healthy"] == true, body)
        },
        &mut last,
    )
    .await;
    assert!(last["agent_server"]["checked_at"].is_string());
}

/// /metrics is Prometheus/OpenMetrics text that counts requests and runs.
#[tokio::test]
async fn metrics_exposition_parses() {
    let daemon = TestDaemon::start().await;
    daemon.exec(json!({"command": ["true"]})).await;
    let (status, text) = daemon.text("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    let mut samples = 0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("sample line {line:?}"));
        assert!(value.parse::<f64>().is_ok(), "value of {line:?}");
        assert!(name.starts_with("sandboxd_"), "{line:?}");
        samples += 1;
    }
    assert!(samples > 5);
    assert!(
        text.contains("sandboxd_runs{state=\"succeeded\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("sandboxd_runs_ended_total{state=\"succeeded\"} 1"),
        "{text}"
    );
    assert!(text.contains("route=\"/v1/runs\""), "{text}");
}

/// /openapi.json is valid JSON naming every route the daemon serves.
#[tokio::test]
async fn openapi_lists_the_routes() {
    let daemon = TestDaemon::start().await;
    let body: Value = reqwest::get(format!("{}/openapi.json", daemon.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(body["openapi"].as_str().unwrap().starts_with("3."));
    let paths = body["paths"].as_object().unwrap();
    for path in [
        "/healthz",
        "/openapi.json",
        "/v1/status",
        "/metrics",
        "/v1/runs",
        "/v1/runs/{run_id}",
        "/v1/runs/{run_id}/logs",
        "/v1/runs/{run_id}/cancel",
        "/v1/runs/{run_id}/signal",
        "/v1/runs/{run_id}/report",
        "/v1/runs/{run_id}/bundle",
        "/v1/files",
        "/v1/secrets/resolve",
    ] {
        assert!(paths.contains_key(path), "openapi.json lacks {path}");
    }
}

/// Unknown routes, wrong methods, malformed and oversized bodies all get
/// the JSON error shape, never a bare text or a 500.
#[tokio::test]
async fn errors_are_json() {
    let daemon = TestDaemon::start().await;
    let (status, body) = daemon.get("/v1/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");

    let (status, body) = support::send(daemon.request(Method::PATCH, "/v1/status")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"]["code"], "method_not_allowed");

    let bad = daemon
        .request(Method::POST, "/v1/runs")
        .header("content-type", "application/json")
        .body("{not json");
    let (status, body) = support::send(bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "bad_json");

    let (status, body) = daemon
        .post("/v1/runs", json!({"command": ["true"], "timeout": 5}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timeout"),
        "names the unknown field: {body}"
    );

    let big = "x".repeat(11 * 1024 * 1024);
    let req = daemon
        .request(Method::POST, "/v1/runs")
        .header("content-type", "application/json")
        .body(big);
    let (status, body) = support::send(req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"]["code"], "body_too_large");

    // The daemon answers 431 and closes without reading the rest, so the
    // client may see the reset before the answer: retry until the answer is
    // read, and never accept another status.
    let huge_header = "h".repeat(70 * 1024);
    let mut answered = false;
    for _ in 0..20 {
        let sent = daemon
            .request(Method::GET, "/v1/status")
            .header("x-big", huge_header.clone())
            .send()
            .await;
        if let Ok(res) = sent {
            assert_eq!(res.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
            answered = true;
            break;
        }
    }
    assert!(answered, "never read the 431 answer");
}

/// Without a key the daemon refuses to start and says how to fix it.
#[tokio::test]
async fn refuses_to_start_without_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(support::bin())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(dir.path())
        .env_remove("SESSION_API_KEY")
        .env_remove("OH_SESSION_API_KEYS_0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--insecure-no-auth") && stderr.contains("SESSION_API_KEY"),
        "{stderr}"
    );
}

/// Bad flag values are refused at start with the flag's name.
#[tokio::test]
async fn bad_flags_are_named() {
    for (args, flag) in [
        (vec!["--listen", "nowhere"], "--listen"),
        (vec!["--max-running", "0"], "--max-running"),
        (vec!["--default-timeout", "soon"], "--default-timeout"),
        (vec!["--agent-server-url", "ftp://x"], "--agent-server-url"),
    ] {
        let out = std::process::Command::new(support::bin())
            .arg("serve")
            .args(&args)
            .env("SESSION_API_KEY", "k")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}

/// An unwritable state dir stops the start with a clear message.
#[tokio::test]
async fn unwritable_state_dir_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let out = std::process::Command::new(support::bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--insecure-no-auth"])
        .arg("--state-dir")
        .arg(file.join("state"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--state-dir"), "{stderr}");
}

/// SIGTERM: the daemon finishes an in-flight request and exits 0.
#[tokio::test]
async fn sigterm_is_a_graceful_exit() {
    let mut daemon = TestDaemon::start_binary().await;
    let slow = daemon
        .request(Method::POST, "/v1/runs")
        .json(&json!({"command": "sleep 0.5", "wait": true}));
    let in_flight = tokio::spawn(slow.send());
    tokio::time::sleep(Duration::from_millis(150)).await;
    daemon.signal(libc::SIGTERM);
    let res = in_flight
        .await
        .unwrap()
        .expect("in-flight request answered");
    assert_eq!(res.status(), StatusCode::OK);
    let status = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.logs());
    assert!(
        reqwest::get(format!("{}/healthz", daemon.url))
            .await
            .is_err(),
        "no longer listening"
    );
}

/// Under systemd (NOTIFY_SOCKET set), READY=1 arrives once listening.
#[tokio::test]
async fn notifies_systemd_when_ready() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(support::TIMEOUT)).unwrap();
    let daemon = TestDaemon::start_with(Options {
        env: vec![("NOTIFY_SOCKET".into(), socket_path.display().to_string())],
        ..Options::default()
    })
    .await;
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("a notify message");
    let message = String::from_utf8_lossy(&buf[..n]);
    assert!(message.lines().any(|l| l == "READY=1"), "{message}");
    drop(daemon);
}

/// The daemon is non-dumpable: its /proc files belong to root, and a
/// process of its own uid cannot read its environ.
#[tokio::test]
async fn daemon_is_not_dumpable() {
    let uid = if support::is_root() {
        Some(65534)
    } else {
        None
    };
    let daemon = TestDaemon::start_with(Options {
        binary: true,
        uid,
        ..Options::default()
    })
    .await;
    let environ = format!("/proc/{}/environ", daemon.pid());
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&environ).unwrap());
    assert_eq!(owner, 0, "non-dumpable processes' /proc files are root's");
    let run = daemon.exec(json!({"command": ["cat", environ]})).await;
    assert_eq!(run["state"], "failed", "{run}");
    assert!(
        run["stderr"]
            .as_str()
            .unwrap()
            .contains("Permission denied"),
        "{run}"
    );
    assert!(!run["stdout"].as_str().unwrap().contains(KEY));
}

/// `run()` installs no signal handler: after an in-process daemon served a
/// run and was stopped through its signal stream, SIGTERM, SIGINT, SIGHUP,
/// SIGQUIT, SIGUSR1 and SIGUSR2 have the disposition they had before in
/// this process (a tokio signal stream would have installed a handler for
/// good), and the stream's SIGTERM stopped it cleanly.
#[tokio::test]
async fn run_installs_no_signal_handler() {
    let signals = [
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ];
    // SAFETY: a query (null new action) into a zeroed struct we own.
    let disposition = |signal: i32| unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(signal, std::ptr::null(), &mut old), 0);
        old.sa_sigaction
    };
    // What the test process started with (a shell running it in the
    // background ignores SIGINT and SIGQUIT): default or ignored, never a
    // handler.
    let before: Vec<usize> = signals.iter().map(|s| disposition(*s)).collect();
    assert!(before
        .iter()
        .all(|d| *d == libc::SIG_DFL || *d == libc::SIG_IGN));
    let mut daemon = TestDaemon::start().await;
    let run = daemon.exec(json!({"command": ["true"]})).await;
    assert_eq!(run["exit_code"], 0, "{run}");
    let code = daemon.stop_in_process(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    for (signal, before) in signals.iter().zip(before) {
        assert_eq!(
            disposition(*signal),
            before,
            "signal {signal} has a handler"
        );
    }
}
