//! Router-level tests: the HTTP mapping (fallbacks, extractor rejections,
//! auth, body limits) through `oneshot`, with no listener.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

use super::*;

/// A config as `serve` builds it, with its dirs in `dir`.
pub(super) fn config(dir: &std::path::Path) -> Config {
    use clap::Parser;
    let key_file = dir.join("key");
    std::fs::write(&key_file, KEY).unwrap();
    let cli = crate::cli::Cli::try_parse_from([
        "sandboxd".as_ref(),
        "serve".as_ref(),
        "--state-dir".as_ref(),
        dir.join("state").as_os_str(),
        "--work-root".as_ref(),
        dir.join("work").as_os_str(),
        "--session-key-file".as_ref(),
        key_file.as_os_str(),
        "--agent-server-url".as_ref(),
        "http://127.0.0.1:9".as_ref(),
    ])
    .unwrap();
    let crate::cli::Command::Serve { args, .. } = cli.command else {
        unreachable!("parsed as serve");
    };
    Config::from_args(&args).unwrap()
}

const KEY: &str = "router-test-key-0123456789";

async fn router_in(dir: &tempfile::TempDir) -> Router {
    let state = crate::daemon::subsystems::start(
        config(dir.path()),
        "http://127.0.0.1:1".into(),
        Vec::new(),
        crate::telemetry::LogMasks::default(),
    )
    .await
    .unwrap();
    router(state)
}

/// Sends one request; the status and the JSON error code.
async fn send(app: &Router, req: Request<Body>) -> (StatusCode, String) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&body)));
    let code = json["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        json["error"]["message"].is_string(),
        "no error message: {json}"
    );
    (status, code)
}

fn post_runs(key: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut req = Request::post("/v1/runs").header("content-type", "application/json");
    if let Some(key) = key {
        req = req.header("X-Session-API-Key", key);
    }
    req.body(body.into()).unwrap()
}

/// Every refusal the router itself makes is the JSON error shape with its
/// status and code.
#[tokio::test]
async fn refusals_are_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let app = router_in(&dir).await;
    let get = |path: &str, key: Option<&str>| {
        let mut req = Request::get(path);
        if let Some(key) = key {
            req = req.header("X-Session-API-Key", key);
        }
        req.body(Body::empty()).unwrap()
    };
    let oversized = format!("{{\"command\":\"{}\"}}", "x".repeat(JSON_BODY_LIMIT));
    let table: Vec<(&str, Request<Body>, StatusCode, &str)> = vec![
        (
            "unknown route",
            get("/nope", Some(KEY)),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "wrong method",
            Request::delete("/healthz").body(Body::empty()).unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "no key",
            get("/v1/status", None),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "wrong key",
            get("/v1/status", Some("not-the-key")),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "no key on a POST",
            post_runs(None, r#"{"command":"true"}"#),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "malformed JSON",
            post_runs(Some(KEY), "{not json"),
            StatusCode::BAD_REQUEST,
            "bad_json",
        ),
        (
            "JSON of the wrong shape",
            post_runs(Some(KEY), r#"{"command": 5}"#),
            StatusCode::BAD_REQUEST,
            "bad_json",
        ),
        (
            "oversized JSON",
            post_runs(Some(KEY), oversized),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
    ];
    for (what, req, status, code) in table {
        assert_eq!(send(&app, req).await, (status, code.to_owned()), "{what}");
    }
}

/// The open routes answer without the key.
#[tokio::test]
async fn healthz_needs_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let app = router_in(&dir).await;
    let res = app
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}
