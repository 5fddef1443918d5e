//! Hostile input: the hostile-archive corpus (tests/data/hostile/, written
//! by its make.py, each archive's expected answer in its cases.json)
//! uploaded to a real daemon, and regressions of what API fuzzing
//! (bench/reliability/20-schemathesis.sh) and the cargo-fuzz targets
//! (fuzz/) found. The plainer unsafe archives (`..`, absolute names,
//! symlink and hardlink escapes through the name, devices, cut streams,
//! the limits) are in upload.rs.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{self, Options, TestDaemon};
use crate::upload::{assert_no_evil_outside, tree};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hostile")
}

/// Resolves the symlink `link` (relative to `root`) through the real tree
/// as the kernel would, with `root` as the top: false when the walk climbs
/// above `root` or meets an absolute target.
fn resolves_inside(root: &Path, link: &Path) -> bool {
    let mut stack: Vec<PathBuf> = Vec::new();
    let mut queue: Vec<PathBuf> = link
        .components()
        .rev()
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    let mut followed = 0;
    while let Some(part) = queue.pop() {
        match part.components().next() {
            Some(Component::ParentDir) => {
                if stack.pop().is_none() {
                    return false;
                }
                continue;
            }
            Some(Component::Normal(_)) => {}
            Some(Component::CurDir) | None => continue,
            Some(_) => return false,
        }
        stack.push(part);
        let here = root.join(stack.iter().collect::<PathBuf>());
        if !std::fs::symlink_metadata(&here).is_ok_and(|m| m.file_type().is_symlink()) {
            continue;
        }
        followed += 1;
        if followed > 40 {
            return true;
        }
        let target = std::fs::read_link(&here).unwrap();
        if target.is_absolute() {
            return false;
        }
        stack.pop();
        queue.extend(
            target
                .components()
                .rev()
                .map(|c| PathBuf::from(c.as_os_str())),
        );
    }
    true
}

/// Each archive of the hostile corpus is either refused with the JSON error
/// cases.json names (status, code, a message saying why) in a few seconds,
/// leaving no work dir, staging dir or bundle record, or extracted with
/// exactly the files cases.json lists and every symlink resolving inside
/// the run dir; at the end nothing exists outside the accepted run dirs.
#[tokio::test]
async fn hostile_corpus_is_refused_or_safely_extracted() {
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(corpus_dir().join("cases.json")).unwrap())
            .unwrap();
    let limits = &manifest["limits"];
    let daemon = TestDaemon::start_with(Options {
        args: vec![
            format!("--max-bundle-bytes={}", limits["max_bundle_bytes"]),
            format!("--max-extracted-bytes={}", limits["max_extracted_bytes"]),
            format!("--max-entries={}", limits["max_entries"]),
        ],
        ..Options::default()
    })
    .await;
    let cases = manifest["cases"].as_array().unwrap();
    assert!(cases.len() >= 40, "the corpus has {} cases", cases.len());
    let mut accepted = BTreeSet::new();
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let file = case["file"].as_str().unwrap();
        let expect = &case["expect"];
        let body = std::fs::read(corpus_dir().join(file)).unwrap();
        let run_id = format!("h{i:02}");
        let started = Instant::now();
        let req = daemon
            .request(Method::PUT, &format!("/v1/runs/{run_id}/bundle"))
            .body(body);
        let (status, answer) = support::send(req).await;
        let took = started.elapsed();
        let mut fail = |what: String| failures.push(format!("{file}: {what}; answer {answer}"));
        if took > Duration::from_secs(10) {
            fail(format!("took {took:?}"));
        }
        if status.as_u16() != expect["status"].as_u64().unwrap() as u16 {
            fail(format!("status {status}, want {}", expect["status"]));
            continue;
        }
        let dir = daemon.work_root().join(&run_id);
        if let Some(code) = expect["code"].as_str() {
            let message = answer["error"]["message"].as_str().unwrap_or("");
            if answer["error"]["code"] != code {
                fail(format!("code {}, want {code}", answer["error"]["code"]));
            }
            let says = expect["says"].as_str().unwrap();
            if !message.to_lowercase().contains(&says.to_lowercase()) {
                fail(format!("the message does not say {says:?}"));
            }
            if dir.exists() {
                fail("a refused archive left its work dir".to_owned());
            }
            continue;
        }
        accepted.insert(run_id.clone());
        for (path, content) in expect["files"].as_object().unwrap() {
            match std::fs::read(dir.join(path)) {
                Ok(data) => {
                    if let Some(want) = content.as_str() {
                        if data != want.as_bytes() {
                            fail(format!("{path} holds {:?}", String::from_utf8_lossy(&data)));
                        }
                    }
                }
                Err(err) => fail(format!("{path}: {err}")),
            }
        }
        for path in tree(&dir) {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let relative = path.strip_prefix(&dir).unwrap();
            if meta.file_type().is_symlink() && !resolves_inside(&dir, relative) {
                fail(format!(
                    "the symlink {} leaves the run dir",
                    relative.display()
                ));
            }
            if !(meta.is_file() || meta.is_dir() || meta.file_type().is_symlink()) {
                fail(format!(
                    "{} is not a file, dir or symlink",
                    relative.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Nothing outside the accepted run dirs: no staging dir left, no other
    // work dir, a bundle record for each accepted run only, and no entry
    // named `evil` anywhere under the daemon's dir or at the top of /tmp.
    let names: BTreeSet<String> = std::fs::read_dir(daemon.work_root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, accepted, "the work root");
    let records: BTreeSet<String> = std::fs::read_dir(daemon.state_dir().join("bundles"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let want: BTreeSet<String> = accepted.iter().map(|id| format!("{id}.json")).collect();
    assert_eq!(records, want, "bundle records");
    assert_no_evil_outside(&daemon);
    assert!(!Path::new("/tmp/sandboxd-evil-pax-abs").exists());
    let (status, _) = daemon.get("/v1/status").await;
    assert_eq!(status, StatusCode::OK, "the daemon still answers");
}

/// A log offset beyond the largest file offset (2^63 and up, where a seek
/// fails) reads as the end of the log: 200 and an empty body, for every
/// stream and with follow, never a response cut off mid-stream. (Found by
/// schemathesis: `?offset=9223372036854775808` broke the chunked body.)
#[tokio::test]
async fn huge_log_offsets_read_as_the_end() {
    let daemon = TestDaemon::start().await;
    daemon
        .exec(json!({"run_id": "lg", "command": "echo out; echo err >&2"}))
        .await;
    for offset in [
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551615",
    ] {
        for query in [
            "stream=stdout",
            "stream=stderr",
            "stream=both",
            "follow=true",
        ] {
            let path = format!("/v1/runs/lg/logs?{query}&offset={offset}");
            let res = daemon.request(Method::GET, &path).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{path}");
            let body = res.bytes().await;
            assert!(
                body.as_ref().is_ok_and(|b| b.is_empty()),
                "{path}: {body:?}"
            );
        }
    }
    let (status, body) = daemon
        .get("/v1/runs/lg/logs?offset=18446744073709551616")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "past u64: {body}");
    assert_eq!(body["error"]["code"], "bad_request");
}

/// The cancel body is optional: none, an empty one and JSON `null` all mean
/// the defaults, as the OpenAPI document says. (Found by schemathesis:
/// `null` was a 400.)
#[tokio::test]
async fn cancel_takes_no_body_or_null() {
    let daemon = TestDaemon::start().await;
    for (i, body) in ["", "null", " null\n"].into_iter().enumerate() {
        let run_id = format!("c{i}");
        daemon
            .start_run(json!({"run_id": run_id, "command": ["sleep", "30"]}))
            .await;
        daemon
            .wait_run(&run_id, "running", |run| run["state"] == "running")
            .await;
        let req = daemon
            .request(Method::POST, &format!("/v1/runs/{run_id}/cancel"))
            .header("content-type", "application/json")
            .body(body);
        let (status, answer) = support::send(req).await;
        assert_eq!(status, StatusCode::OK, "{body:?}: {answer}");
        let run = daemon.wait_ended(&run_id).await;
        assert_eq!(run["state"], "cancelled", "{run}");
    }
    let req = daemon
        .request(Method::POST, "/v1/runs/c0/cancel")
        .header("content-type", "application/json")
        .body("[]");
    let (status, answer) = support::send(req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["code"], "bad_json");
}

/// The OpenAPI document describes what the daemon really sends: every
/// protected operation lists 401, 403 and 500; every JSON body 400 and
/// 413; every operation with parameters 400; raw uploads are binary
/// strings; `/metrics` has the content type it is served with.
#[tokio::test]
async fn openapi_lists_every_answer() {
    let daemon = TestDaemon::start().await;
    let doc: Value = reqwest::get(format!("{}/openapi.json", daemon.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let responses = op["responses"].as_object().unwrap();
            let has = |status: &str| responses.contains_key(status);
            let public = op.get("security").is_some_and(|s| s == &json!([]));
            if !public {
                for status in ["401", "403", "500"] {
                    assert!(has(status), "{method} {path} lacks {status}");
                }
            }
            let body = &op["requestBody"]["content"];
            if body.get("application/json").is_some() {
                assert!(has("400") && has("413"), "{method} {path}");
            }
            if let Some(raw) = body.get("application/octet-stream") {
                assert_eq!(
                    raw["schema"],
                    json!({"type": "string", "format": "binary"}),
                    "{method} {path}"
                );
            }
            if op.get("parameters").is_some_and(|p| p != &json!([])) {
                assert!(has("400"), "{method} {path}");
            }
        }
    }
    assert!(operations >= 16);
    let metrics = &doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"];
    let documented = metrics.as_object().unwrap().keys().next().unwrap().clone();
    let (_, _) = daemon.get("/v1/status").await;
    let res = daemon
        .request(Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    let served = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        served.starts_with(&documented),
        "served {served}, documented {documented}"
    );
}

/// `PUT /v1/files` with a path the file system refuses (a name over 255
/// bytes, a path over 4096, a symlink loop, a file used as a dir) is 400
/// invalid_upload naming the path, not a 500, and leaves no temp file and
/// no dir behind. (Found by probing past schemathesis: a 300-byte name
/// and a 4200-byte path were 500s.)
#[tokio::test]
async fn file_paths_the_file_system_refuses_are_400() {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let root = dir.path().join("files");
    std::fs::create_dir(&root).unwrap();
    let daemon = TestDaemon::start_with(Options {
        args: vec![format!("--upload-root={}", root.display())],
        dir: Some(dir),
        ..Options::default()
    })
    .await;
    std::os::unix::fs::symlink("loop-b", root.join("loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", root.join("loop-b")).unwrap();
    std::fs::write(root.join("plain"), b"x").unwrap();
    let base = root.display().to_string();
    let cases = [
        (format!("{base}/{}", "n".repeat(300)), "255"),
        (format!("{base}/{}f", "d/".repeat(2100)), "4096"),
        (format!("{base}/new/{}/x", "n".repeat(256)), "255"),
        (format!("{base}/plain/x"), "not a directory"),
    ];
    for (path, says) in cases {
        let req = daemon
            .request(Method::PUT, "/v1/files")
            .query(&[("path", path.as_str())])
            .body("data");
        let (status, body) = support::send(req).await;
        let shown = &path[..path.len().min(80)];
        assert_eq!(status, StatusCode::BAD_REQUEST, "{shown}: {body}");
        assert_eq!(body["error"]["code"], "invalid_upload", "{shown}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.to_lowercase().contains(says),
            "{shown}: says {says:?}: {message}"
        );
        assert!(message.len() < 600, "a short message: {message}");
    }
    // A symlink (a loop here) below a root is never followed: 403.
    let req = daemon
        .request(Method::PUT, "/v1/files")
        .query(&[("path", format!("{base}/loop-a/x"))])
        .body("data");
    let (status, body) = support::send(req).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("symlink"));
    let mut left: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["loop-a", "loop-b", "plain"], "nothing left behind");
}

/// A failed lookup names its URL without the daemon's key, even where
/// the key may go (a configured origin, the key in the path): the message
/// can reach a run token's caller. And a URL with the key in its host, in
/// any case, is refused without showing it. (The second was found by the
/// fuzz target `secret_source`.)
#[tokio::test]
async fn secret_errors_never_show_the_session_key() {
    use axum::http::StatusCode as S;
    let app = axum::Router::new().fallback(|| async { S::NOT_FOUND });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let daemon = TestDaemon::start_with(Options {
        args: vec!["--agent-server-url".to_owned(), agent.clone()],
        ..Options::default()
    })
    .await;
    let upper = support::KEY.to_uppercase();
    let sources = [
        (
            json!({"kind": "LookupSecret", "url": format!("{agent}/secrets/{}", support::KEY),
                   "headers": {"X-Session-API-Key": ""}}),
            StatusCode::FAILED_DEPENDENCY,
        ),
        (
            json!({"kind": "LookupSecret", "url": format!("http://a.{upper}.example/s")}),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (source, want) in sources {
        let (status, body) = daemon
            .post("/v1/secrets/resolve", json!({"secrets": {"GH": source}}))
            .await;
        assert_eq!(status, want, "{body}");
        let text = body.to_string().to_lowercase();
        assert!(!text.contains(&support::KEY.to_lowercase()), "{body}");
    }
}
