//! Secrets: sources, resolution (retries, timeouts, fast failures), key
//! custody, injection, masking, the resolve endpoint and run tokens.
//!
//! A [`SecretServer`] (an axum app on 127.0.0.1:0 inside the test) stands in
//! for the sandbox settings API, the agent-server and any secret URL, and
//! records every request it gets.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::response::{IntoResponse, Response};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{self, Options, TestDaemon, KEY};

/// One request a [`SecretServer`] got.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A local stand-in for the settings API, the agent-server and secret URLs.
///
/// Paths: `/value/N` (the value set for N), `/status/C` (always C),
/// `/flaky/C/F/N` (C with `Retry-After: 0` for the first F hits, then N's
/// value), `/hang`, `/slow/MS/N`, `/counter/N` (`N-<hit number>`),
/// `/redirect?to=URL` (307), `/key` (the daemon's key as a value),
/// `/api/v1/sandboxes/S/settings/secrets/N` (the settings API: 401 without
/// the daemon's key, else the value set for `named:N`) and
/// `.../api/settings/secrets/N` (agent-server style: `value-of-N`).
#[derive(Clone, Default)]
pub struct SecretServer {
    pub url: String,
    state: Arc<ServerState>,
}

#[derive(Default)]
struct ServerState {
    seen: Mutex<Vec<Seen>>,
    hits: Mutex<HashMap<String, usize>>,
    values: Mutex<BTreeMap<String, String>>,
}

impl SecretServer {
    pub async fn start() -> SecretServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = SecretServer {
            url: format!("http://{}", listener.local_addr().unwrap()),
            state: Arc::default(),
        };
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(server.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        server
    }

    /// Sets the value served for `name`.
    pub fn set(&self, name: &str, value: &str) {
        let mut values = self.state.values.lock().unwrap();
        values.insert(name.to_owned(), value.to_owned());
    }

    /// Requests to `path` so far.
    pub fn hits(&self, path: &str) -> usize {
        let hits = self.state.hits.lock().unwrap();
        hits.get(path).copied().unwrap_or(0)
    }

    /// Every request so far, except the agent probe's `/alive`.
    pub fn seen(&self) -> Vec<Seen> {
        let seen = self.state.seen.lock().unwrap();
        seen.iter()
            .filter(|s| s.path != "/alive")
            .cloned()
            .collect()
    }

    /// The last request to `path`.
    pub fn last(&self, path: &str) -> Seen {
        self.seen()
            .into_iter()
            .rev()
            .find(|s| s.path == path)
            .unwrap_or_else(|| panic!("no request to {path}; seen: {:?}", self.seen()))
    }

    fn value(&self, name: &str) -> Option<String> {
        self.state.values.lock().unwrap().get(name).cloned()
    }
}

async fn handle(State(server): State<SecretServer>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let headers: &HeaderMap = req.headers();
    let seen = Seen {
        path: path.clone(),
        query: query.clone(),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    let key = seen.header("x-session-api-key").map(str::to_owned);
    server.state.seen.lock().unwrap().push(seen);
    let hit = {
        let mut hits = server.state.hits.lock().unwrap();
        let n = hits.entry(path.clone()).or_default();
        *n += 1;
        *n
    };
    let found = |value: Option<String>| match value {
        Some(value) => value.into_response(),
        None => AxumStatus::NOT_FOUND.into_response(),
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["alive"] => "ok".into_response(),
        ["value", name] => found(server.value(name)),
        ["status", code] => AxumStatus::from_u16(code.parse().unwrap())
            .unwrap()
            .into_response(),
        ["flaky", code, fails, name] => {
            if hit <= fails.parse().unwrap() {
                let status = AxumStatus::from_u16(code.parse().unwrap()).unwrap();
                (status, [("retry-after", "0")]).into_response()
            } else {
                found(server.value(name))
            }
        }
        ["hang"] => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "too late".into_response()
        }
        ["slow", ms, name] => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
            found(server.value(name))
        }
        ["counter", name] => format!("{name}-{hit}").into_response(),
        ["redirect"] => {
            let to = query.strip_prefix("to=").unwrap_or("").to_owned();
            (AxumStatus::TEMPORARY_REDIRECT, [("location", to)]).into_response()
        }
        ["key"] => KEY.into_response(),
        ["api", "v1", "sandboxes", _, "settings", "secrets", name] => {
            if key.as_deref() != Some(KEY) {
                return AxumStatus::UNAUTHORIZED.into_response();
            }
            found(server.value(&format!("named:{name}")))
        }
        [.., "api", "settings", "secrets", name] => format!("value-of-{name}").into_response(),
        _ => AxumStatus::NOT_FOUND.into_response(),
    }
}

/// A daemon whose cloud API and agent-server are `cloud` and `agent`
/// (relative URLs are joined to `agent` unless `extra` says otherwise).
async fn daemon_with(cloud: &SecretServer, agent: &SecretServer, extra: &[&str]) -> TestDaemon {
    TestDaemon::start_with(daemon_options(cloud, agent, extra)).await
}

/// The options of [`daemon_with`].
fn daemon_options(cloud: &SecretServer, agent: &SecretServer, extra: &[&str]) -> Options {
    let mut args: Vec<String> = vec![
        "--cloud-api-url".into(),
        cloud.url.clone(),
        "--sandbox-id".into(),
        "sbx-1".into(),
        "--agent-server-url".into(),
        agent.url.clone(),
    ];
    if !extra.contains(&"--internal-server-url") {
        args.extend(["--internal-server-url".into(), agent.url.clone()]);
    }
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    Options {
        args,
        ..Options::default()
    }
}

async fn resolve(daemon: &TestDaemon, secrets: Value) -> (StatusCode, Value) {
    daemon
        .post("/v1/secrets/resolve", json!({ "secrets": secrets }))
        .await
}

fn message(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn lookup(url: String) -> Value {
    json!({"kind": "LookupSecret", "url": url, "headers": {}})
}

/// Asserts a 424 secret_unresolved whose message holds every `words`.
fn assert_unresolved(status: StatusCode, body: &Value, words: &[&str]) {
    assert_eq!(status, StatusCode::FAILED_DEPENDENCY, "{body}");
    assert_eq!(body["error"]["code"], "secret_unresolved", "{body}");
    for word in words {
        assert!(message(body).contains(word), "{word:?} not in {body}");
    }
}

/// Every source kind (LookupSecret absolute and relative, named,
/// StaticSecret, a bare string) resolves and reaches the child's env under
/// its name; the session key does not.
#[tokio::test]
async fn each_source_kind_reaches_the_child() {
    let cloud = SecretServer::start().await;
    let agent = SecretServer::start().await;
    cloud.set("named:slack_token", "slack-value-1");
    agent.set("gh", "gh-value-1");
    let daemon = daemon_with(&cloud, &agent, &[]).await;
    let run = daemon
        .exec(json!({
            "command": ["bash", "-c", "[ \"$GH\" = gh-value-1 ] && [ \"$REL\" = value-of-REL ] \
                && [ \"$SLACK\" = slack-value-1 ] && [ \"$PLAIN\" = static-value ] \
                && [ \"$BARE\" = bare-value ] || exit 3; env -0"],
            "secrets": {
                "GH": {"kind": "LookupSecret", "url": format!("{}/value/gh", agent.url),
                       "headers": {"Authorization": "Bearer tok-123", "Accept": "text/plain"},
                       "description": "GitHub token"},
                "REL": {"kind": "LookupSecret", "url": "/api/settings/secrets/REL"},
                "SLACK": {"name": "slack_token"},
                "PLAIN": {"kind": "StaticSecret", "value": "static-value", "description": null},
                "BARE": "bare-value",
            },
        }))
        .await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let stdout = run["stdout"].as_str().unwrap();
    let env: BTreeMap<&str, &str> = stdout
        .split('\0')
        .filter_map(|entry| entry.split_once('='))
        .collect();
    for name in ["GH", "REL", "SLACK", "PLAIN", "BARE"] {
        assert_eq!(
            env.get(name),
            Some(&"****"),
            "{name} is set, and masked in output"
        );
    }
    assert!(!stdout.contains(KEY));
    let seen = agent.last("/value/gh");
    assert_eq!(seen.header("authorization"), Some("Bearer tok-123"));
    assert_eq!(seen.header("accept"), Some("text/plain"));
    assert_eq!(seen.header("x-session-api-key"), None);
    let named = cloud.last("/api/v1/sandboxes/sbx-1/settings/secrets/slack_token");
    assert_eq!(named.header("x-session-api-key"), Some(KEY));
    assert_eq!(agent.hits("/api/settings/secrets/REL"), 1);
}

/// The OpenHands SDK's own serializations of LookupSecret (exposed, plain
/// with redacted headers, plaintext), its relative URLs and its
/// update_secrets payloads are accepted verbatim; only the origins are
/// pointed at local stand-ins.
#[tokio::test]
async fn sdk_fixture_json_is_accepted_verbatim() {
    let agent = SecretServer::start().await;
    let foreign = SecretServer::start().await;
    foreign.set("abc", "abc-value");
    let fixture = include_str!("../data/fixtures/lookup_secrets.json")
        .replace("http://127.0.0.1:60000", &agent.url)
        .replace("http://127.0.0.1:8000", &agent.url)
        .replace(
            "https://secrets.example.com/v1/secret/abc",
            &format!("{}/value/abc", foreign.url),
        );
    let fixture: Value = serde_json::from_str(&fixture).unwrap();
    // The relative URL cases are joined to this base, as the SDK joins
    // them to OH_INTERNAL_SERVER_URL.
    let base = format!("{}/prefix", agent.url);
    let daemon = daemon_with(&agent, &agent, &["--internal-server-url", &base]).await;

    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 7);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let url: reqwest::Url = case["model_dump_json_expose_secrets_true"]["url"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let server = if url.path() == "/value/abc" {
            &foreign
        } else {
            &agent
        };
        let value = match url.path() {
            "/value/abc" => "abc-value".to_owned(),
            path => format!("value-of-{}", path.rsplit('/').next().unwrap()),
        };
        for dump in [
            "model_dump_json_expose_secrets_true",
            "model_dump_json_expose_secrets_plaintext",
            "model_dump_json_plain",
        ] {
            let source = &case[dump];
            let (status, body) = resolve(&daemon, json!({"S": source})).await;
            let given_key = source["headers"]["X-Session-API-Key"].as_str();
            let redacted_elsewhere = server.url == foreign.url
                && source["headers"]
                    .as_object()
                    .unwrap()
                    .values()
                    .any(|v| v == "**********");
            if redacted_elsewhere {
                // A redacted Authorization cannot be filled, and the key is
                // never filled for a foreign origin: refused up front.
                assert_eq!(status, StatusCode::BAD_REQUEST, "{name} {dump}: {body}");
                assert_eq!(body["error"]["code"], "invalid_secret");
                assert!(
                    message(&body).starts_with("secrets.S: header \"Authorization\" is redacted"),
                    "{body}"
                );
                continue;
            }
            assert_eq!(status, StatusCode::OK, "{name} {dump}: {body}");
            assert_eq!(body["values"]["S"], value.as_str(), "{name} {dump}");
            let seen = server.last(url.path());
            let want_key = match given_key {
                Some("**********") => Some(KEY),
                other => other,
            };
            assert_eq!(seen.header("x-session-api-key"), want_key, "{name} {dump}");
            for (header, sent) in source["headers"].as_object().unwrap() {
                if header != "X-Session-API-Key" {
                    assert_eq!(seen.header(header), sent.as_str(), "{name} {dump} {header}");
                }
            }
        }
        // The constructor's relative URLs, joined by the daemon.
        let kwargs = &case["constructor_kwargs"];
        if !kwargs["url"].as_str().unwrap().starts_with("http") {
            let mut source = kwargs.clone();
            source["kind"] = json!("LookupSecret");
            // `/api/...` replaces the base's path; `api/...` extends it.
            let before = agent.hits(url.path());
            let (status, body) = resolve(&daemon, json!({"S": source})).await;
            assert_eq!(status, StatusCode::OK, "{name}: {body}");
            assert_eq!(agent.hits(url.path()), before + 1, "{name}: {}", url.path());
        }
    }

    let flow = &fixture["get_secrets_then_update_secrets"];
    let (status, body) = resolve(&daemon, flow["get_secrets_result_expose"].clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["values"],
        json!({"GITHUB_TOKEN": "value-of-GITHUB_TOKEN", "OPENAI_API_KEY": "value-of-OPENAI_API_KEY"})
    );
    let want = json!({
        "GITHUB_TOKEN": "value-of-GITHUB_TOKEN", "OPENAI_API_KEY": "value-of-OPENAI_API_KEY",
        "PLAIN_STRING": "plain-value", "STATIC": "static-value", "CALLABLE": "from-callable",
    });
    for payload in [
        &flow["update_secrets_request"]["json_body"]["secrets"],
        &flow["server_UpdateSecretsRequest_parsed_expose"]["secrets"],
    ] {
        let (status, body) = resolve(&daemon, payload.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["values"], want);
    }
    // The plain parse redacts StaticSecret values: nothing to inject.
    let (status, body) = resolve(
        &daemon,
        flow["server_UpdateSecretsRequest_parsed_plain"]["secrets"].clone(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        message(&body).starts_with("secrets.CALLABLE: the value is redacted"),
        "{body}"
    );
    // Its LookupSecrets alone: the redacted key is filled (agent origin).
    let mut lookups = flow["server_UpdateSecretsRequest_parsed_plain"]["secrets"].clone();
    lookups
        .as_object_mut()
        .unwrap()
        .retain(|_, s| s["kind"] == "LookupSecret");
    let (status, body) = resolve(&daemon, lookups).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen = agent.last("/api/settings/secrets/OPENAI_API_KEY");
    assert_eq!(seen.header("x-session-api-key"), Some(KEY));
}

/// Connect errors aside, 503 and 429 are retried (3 times, with backoff)
/// and a later success wins; a server that keeps failing is a 424 after 4
/// attempts.
#[tokio::test]
async fn transient_failures_are_retried() {
    let server = SecretServer::start().await;
    server.set("x", "x-value");
    let daemon = daemon_with(&server, &server, &[]).await;
    let (status, body) = resolve(
        &daemon,
        json!({
            "A": lookup(format!("{}/flaky/503/2/x", server.url)),
            "B": lookup(format!("{}/flaky/429/3/x", server.url)),
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["values"], json!({"A": "x-value", "B": "x-value"}));
    assert_eq!(server.hits("/flaky/503/2/x"), 3);
    assert_eq!(server.hits("/flaky/429/3/x"), 4);

    let run = daemon
        .exec(json!({
            "command": ["bash", "-c", "[ \"$A\" = x-value ]"],
            "secrets": {"A": lookup(format!("{}/flaky/502/1/x", server.url))},
        }))
        .await;
    assert_eq!(run["state"], "succeeded", "{run}");

    let started = Instant::now();
    let (status, body) = resolve(
        &daemon,
        json!({"DOWN": lookup(format!("{}/status/503", server.url))}),
    )
    .await;
    assert_unresolved(
        status,
        &body,
        &["secret DOWN", "503 Service Unavailable", "(4 attempts)"],
    );
    assert_eq!(server.hits("/status/503"), 4);
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "backoff 100 + 200 + 400 ms"
    );

    // Nothing listens: connect errors are retried too, then named.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let (status, body) = resolve(
        &daemon,
        json!({"GONE": lookup(format!("http://127.0.0.1:{port}/x"))}),
    )
    .await;
    assert_unresolved(
        status,
        &body,
        &["secret GONE", "could not connect", "(4 attempts)"],
    );
}

/// A 4xx other than 408/429 fails at once (one request), answers 424 naming
/// the env var, the secret's name and the status, and starts nothing.
#[tokio::test]
async fn client_errors_fail_fast_and_start_nothing() {
    let cloud = SecretServer::start().await;
    let daemon = daemon_with(&cloud, &cloud, &[]).await;
    cloud.set("ok", "ok-value");
    let (status, body) = daemon
        .post(
            "/v1/runs",
            json!({
                "run_id": "r-404",
                "command": ["touch", "/tmp/sandboxd-secret-test-must-not-exist"],
                "secrets": {
                    "GH": lookup(format!("{}/status/404", cloud.url)),
                    "OK": lookup(format!("{}/value/ok", cloud.url)),
                },
            }),
        )
        .await;
    assert_unresolved(
        status,
        &body,
        &["secret GH", "404 Not Found", "check its url"],
    );
    assert!(!message(&body).contains("ok-value"));
    assert_eq!(cloud.hits("/status/404"), 1, "a 404 is not retried");
    let (status, _) = daemon.get("/v1/runs/r-404").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no run was recorded");
    assert!(!daemon.work_root().join("r-404").exists(), "no work dir");
    assert!(
        !daemon.state_dir().join("runs/r-404").exists(),
        "no run dir"
    );
    let (_, list) = daemon.get("/v1/runs").await;
    assert_eq!(list["runs"], json!([]));

    for code in [400, 401, 403, 410] {
        let path = format!("/status/{code}");
        let (status, body) = resolve(
            &daemon,
            json!({"X": lookup(format!("{}{path}", cloud.url))}),
        )
        .await;
        assert_unresolved(status, &body, &["secret X", &code.to_string()]);
        assert_eq!(cloud.hits(&path), 1, "{code} is not retried");
    }

    let (status, body) = resolve(&daemon, json!({"SLACK": {"name": "missing_one"}})).await;
    assert_unresolved(
        status,
        &body,
        &["secret SLACK (named secret \"missing_one\")", "404"],
    );
    assert_eq!(
        cloud.hits("/api/v1/sandboxes/sbx-1/settings/secrets/missing_one"),
        1
    );

    // A redirect is not followed (the key could go with it): final.
    let (status, body) = resolve(
        &daemon,
        json!({"R": lookup(format!("{}/redirect?to={}/value/moved", cloud.url, cloud.url))}),
    )
    .await;
    assert_unresolved(status, &body, &["307", "redirects are not followed"]);
    assert_eq!(cloud.hits("/value/moved"), 0);
}

/// A server that never answers hits --secret-timeout on each of the 4
/// attempts; the answer is a 424 saying so, well before any client gives up.
#[tokio::test]
async fn hanging_server_hits_the_timeout() {
    let server = SecretServer::start().await;
    let daemon = daemon_with(&server, &server, &["--secret-timeout", "0.3"]).await;
    let started = Instant::now();
    let (status, body) = daemon
        .post(
            "/v1/runs",
            json!({"command": ["true"], "secrets": {"SLOW": lookup(format!("{}/hang", server.url))}}),
        )
        .await;
    let elapsed = started.elapsed();
    assert_unresolved(
        status,
        &body,
        &["secret SLOW", "timed out after 300ms", "(4 attempts)"],
    );
    assert_eq!(server.hits("/hang"), 4);
    assert!(
        elapsed >= Duration::from_millis(4 * 300 + 700),
        "{elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(6), "{elapsed:?}");
}

/// Lookups run concurrently: ten that each take 300 ms take well under
/// ten times that.
#[tokio::test]
async fn lookups_run_concurrently() {
    let server = SecretServer::start().await;
    server.set("v", "slow-value");
    let daemon = daemon_with(&server, &server, &[]).await;
    let secrets: serde_json::Map<String, Value> = (0..10)
        .map(|i| {
            (
                format!("S{i}"),
                lookup(format!("{}/slow/300/v", server.url)),
            )
        })
        .collect();
    let started = Instant::now();
    let (status, body) = resolve(&daemon, Value::Object(secrets)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["values"].as_object().unwrap().len(), 10);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

/// Named secrets: fetched from the settings API with the daemon's key;
/// names with '/' or '..' are a 400; without --cloud-api-url or
/// --sandbox-id the 424 says which flag is missing.
#[tokio::test]
async fn named_secrets_need_a_clean_name_and_the_settings_api() {
    let cloud = SecretServer::start().await;
    cloud.set("named:gh", "named-value");
    let daemon = daemon_with(&cloud, &cloud, &[]).await;
    let (status, body) = resolve(&daemon, json!({"GH": {"name": "gh"}})).await;
    assert_eq!(
        (status, &body["values"]),
        (StatusCode::OK, &json!({"GH": "named-value"}))
    );
    for bad in ["a/b", "..", "../etc", "x..y", ""] {
        let (status, body) = resolve(&daemon, json!({"GH": {"name": bad}})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {body}");
        assert_eq!(body["error"]["code"], "invalid_secret");
        assert!(
            message(&body).starts_with("secrets.GH: secret name"),
            "{body}"
        );
    }
    assert_eq!(cloud.seen().len(), 1, "bad names send nothing");

    let bare = TestDaemon::start().await;
    let (status, body) = resolve(&bare, json!({"GH": {"name": "gh"}})).await;
    assert_unresolved(
        status,
        &body,
        &["(named secret \"gh\")", "--cloud-api-url", "--sandbox-id"],
    );
    let no_id = TestDaemon::start_with(Options {
        args: vec!["--cloud-api-url".into(), cloud.url.clone()],
        ..Options::default()
    })
    .await;
    let (status, body) = resolve(&no_id, json!({"GH": {"name": "gh"}})).await;
    assert_unresolved(
        status,
        &body,
        &["--sandbox-id (env SANDBOX_ID) is not configured"],
    );
    assert!(!message(&body).contains("--cloud-api-url"), "{body}");
}

/// An empty or redacted X-Session-API-Key is filled with the daemon's key
/// for the configured cloud API and agent-server origins only; the key
/// never reaches any other origin, whether by filling, by a caller's
/// header, by the URL or by a redirect.
#[tokio::test]
async fn session_key_goes_only_to_configured_origins() {
    let cloud = SecretServer::start().await;
    let agent = SecretServer::start().await;
    let foreign = SecretServer::start().await;
    for server in [&cloud, &agent, &foreign] {
        server.set("s", "s-value");
    }
    let daemon = daemon_with(&cloud, &agent, &[]).await;
    let with_key = |url: String, key: &str| json!({"kind": "LookupSecret", "url": url, "headers": {"X-Session-API-Key": key}});
    for (server, key) in [
        (&cloud, "**********"),
        (&cloud, ""),
        (&agent, "**********"),
        (&agent, " "),
    ] {
        let (status, body) = resolve(
            &daemon,
            json!({"S": with_key(format!("{}/value/s", server.url), key)}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            server.last("/value/s").header("x-session-api-key"),
            Some(KEY),
            "{key:?}"
        );
    }
    // An empty key for another origin is dropped, as the SDK drops it.
    let (status, body) = resolve(
        &daemon,
        json!({"S": with_key(format!("{}/value/s", foreign.url), "")}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(foreign.last("/value/s").header("x-session-api-key"), None);
    // Same host, other port: another origin.
    let port = reqwest::Url::parse(&foreign.url).unwrap().port().unwrap();
    let localhost = format!("http://localhost:{port}/value/s");
    let (status, _) = resolve(&daemon, json!({"S": with_key(localhost, "")})).await;
    assert_eq!(status, StatusCode::OK);

    // Refused before any request: a redacted key, the key in a header or in
    // the URL, for another origin.
    let before = foreign.seen().len();
    for source in [
        with_key(format!("{}/value/s", foreign.url), "**********"),
        json!({"kind": "LookupSecret", "url": format!("{}/value/s", foreign.url),
               "headers": {"Authorization": format!("Bearer {KEY}")}}),
        lookup(format!("{}/value/s?key={KEY}", foreign.url)),
    ] {
        let (status, body) = resolve(&daemon, json!({"S": source})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["code"], "invalid_secret");
        assert!(!message(&body).contains(KEY), "{body}");
    }
    // A configured origin redirecting elsewhere: not followed.
    let hop = format!("{}/redirect?to={}/value/s", cloud.url, foreign.url);
    let (status, body) = resolve(&daemon, json!({"S": with_key(hop, "**********")})).await;
    assert_unresolved(status, &body, &["307"]);
    assert_eq!(
        foreign.seen().len(),
        before,
        "the foreign server got nothing more"
    );

    for seen in foreign.seen() {
        assert!(!seen.query.contains(KEY), "{seen:?}");
        for (name, value) in &seen.headers {
            assert!(
                !value.contains(KEY),
                "the key reached a foreign origin in {name}"
            );
        }
    }
}

/// A source whose value is the daemon's own key is refused: the key never
/// goes into a run or to a script.
#[tokio::test]
async fn the_session_key_is_never_a_secret_value() {
    let server = SecretServer::start().await;
    let daemon = daemon_with(&server, &server, &[]).await;
    for source in [lookup(format!("{}/key", server.url)), json!(KEY)] {
        let (status, body) = daemon
            .post(
                "/v1/runs",
                json!({"command": ["true"], "secrets": {"K": source}}),
            )
            .await;
        assert_unresolved(status, &body, &["secret K", "sandboxd's own session key"]);
        assert!(!message(&body).contains(KEY));
    }
}

/// Malformed sources are a 400 naming the env var (and the unknown kind or
/// field) before anything is fetched or started.
#[tokio::test]
async fn bad_sources_are_refused_before_anything_starts() {
    let server = SecretServer::start().await;
    let daemon = daemon_with(&server, &server, &[]).await;
    let cases = [
        (
            json!({"kind": "VaultSecret", "path": "x"}),
            "unknown kind \"VaultSecret\"",
        ),
        (
            json!({"kind": "LookupSecret", "url": format!("{}/value/s", server.url), "timeout": 3}),
            "unknown field \"timeout\"",
        ),
        (
            json!({"kind": "StaticSecret", "value": "v", "extra": true}),
            "unknown field \"extra\"",
        ),
        (json!({"name": "gh", "kind2": 1}), "unknown field \"kind2\""),
        (
            json!({"kind": "LookupSecret", "url": "ftp://x/y"}),
            "http:// or https://",
        ),
        (json!(["not", "a", "source"]), "must be an object"),
    ];
    for (source, want) in cases {
        let shown = source.to_string();
        let (status, body) = daemon
            .post(
                "/v1/runs",
                json!({"run_id": "r-bad", "command": ["true"],
                       "secrets": {"OK": lookup(format!("{}/value/s", server.url)), "GH": source.clone()}}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{shown}: {body}");
        assert_eq!(body["error"]["code"], "invalid_secret");
        assert!(message(&body).starts_with("secrets.GH: "), "{body}");
        assert!(message(&body).contains(want), "{want:?}: {body}");
        let (status, body) = resolve(&daemon, json!({"GH": source})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{shown}: {body}");
        assert!(message(&body).contains(want), "{want:?}: {body}");
    }
    assert_eq!(server.seen().len(), 0, "nothing was fetched");
    let (status, _) = daemon.get("/v1/runs/r-bad").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!daemon.work_root().join("r-bad").exists());

    for body in [
        json!({"secrets": {}, "extra": 1}),
        json!({"names": ["A"], "nope": true}),
    ] {
        let (status, answer) = daemon.post("/v1/secrets/resolve", body).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("bad_json")),
            "{answer}"
        );
    }
    for body in [
        json!({}),
        json!({"secrets": {}, "names": []}),
        json!({"names": ["A"]}),
    ] {
        let (status, answer) = daemon.post("/v1/secrets/resolve", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    }
}

/// Every resolved value of 3 bytes or more, the session key and the
/// callback token are masked (`****`) in stored stdout and stderr, the logs
/// endpoint (each stream and both), the exec-and-wait answer, a run's
/// error text and the daemon's own logs, even written one byte at a time
/// by a real child; values of 1 and 2 bytes are not.
#[tokio::test]
async fn secret_values_are_masked_everywhere() {
    use rand::Rng;
    let server = SecretServer::start().await;
    let lookup_value = "päss-wörd-✓-from-lookup";
    server.set("lk", lookup_value);
    let callback_token = "sk-oh-callback-token-for-masking";
    // Its log lines are read: the binary.
    let daemon = TestDaemon::start_with(Options {
        binary: true,
        ..daemon_options(
            &server,
            &server,
            &["-vv", "--callback-token", callback_token],
        )
    })
    .await;
    let mut rng = rand::thread_rng();
    let letters: Vec<char> = ('a'..='z').chain('A'..='Z').collect();
    let values: Vec<String> = (1..=200)
        .map(|len| {
            (0..len)
                .map(|_| letters[rng.gen_range(0..letters.len())])
                .collect()
        })
        .collect();
    let mut secrets: serde_json::Map<String, Value> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            (
                format!("S{}", i + 1),
                json!({"kind": "StaticSecret", "value": v}),
            )
        })
        .collect();
    secrets.insert("LK".into(), lookup(format!("{}/value/lk", server.url)));
    // Each value, labelled by a number, written one byte at a time with a
    // flush after each byte, to stdout and then to stderr.
    let script = r#"
import os, sys
vals = [(str(n), os.environ["S%d" % n]) for n in range(1, 201)]
vals += [("201", sys.argv[1]), ("202", sys.argv[2]), ("203", os.environ["LK"])]
for out in (sys.stdout.buffer, sys.stderr.buffer):
    for label, v in vals:
        out.write(label.encode() + b":"); out.flush()
        for b in v.encode():
            out.write(bytes([b])); out.flush()
        out.write(b"\n"); out.flush()
"#;
    let run = daemon
        .exec(json!({
            "run_id": "r-mask",
            "command": ["python3", "-c", script, KEY, callback_token],
            "secrets": secrets,
        }))
        .await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let mut want = String::new();
    for (i, value) in values.iter().enumerate() {
        let shown = if value.len() >= 3 {
            "****"
        } else {
            value.as_str()
        };
        want.push_str(&format!("{}:{shown}\n", i + 1));
    }
    want.push_str("201:****\n202:****\n203:****\n");
    assert_eq!(run["stdout"], want.as_str(), "exec-and-wait stdout");
    assert_eq!(run["stderr"], want.as_str(), "exec-and-wait stderr");
    assert_eq!(run["stdout_bytes"], want.len());

    let run_dir = daemon.state_dir().join("runs/r-mask");
    for file in ["stdout.log", "stderr.log"] {
        let stored = std::fs::read_to_string(run_dir.join(file)).unwrap();
        assert_eq!(stored, want, "stored {file}");
    }
    for stream in ["stdout", "stderr"] {
        let (status, text) = daemon
            .text(&format!("/v1/runs/r-mask/logs?stream={stream}"))
            .await;
        assert_eq!(
            (status, text.as_str()),
            (StatusCode::OK, want.as_str()),
            "logs {stream}"
        );
    }
    // `both` interleaves the streams in arrival order (the two pipes are
    // read by two threads, so stderr may overtake held-back stdout).
    let (_, both) = daemon.text("/v1/runs/r-mask/logs?stream=both").await;
    assert_eq!(both.len(), 2 * want.len());
    assert_eq!(
        both.matches("****").count(),
        2 * want.matches("****").count()
    );
    for value in values.iter().filter(|v| v.len() >= 3) {
        assert!(
            !both.contains(value.as_str()),
            "{value} in logs?stream=both"
        );
    }

    // The error text of a run (what the completion callback carries).
    let hidden = &values[49];
    let run = daemon
        .exec(json!({
            "command": [format!("/nonexistent/{hidden}")],
            "secrets": {"S50": {"kind": "StaticSecret", "value": hidden}},
        }))
        .await;
    assert_eq!(run["state"], "failed");
    assert_eq!(
        run["error"], "command not found: /nonexistent/****",
        "{run}"
    );

    let logs = daemon.logs();
    assert!(logs.contains("run ended"), "the daemon logged the runs");
    let mut leaked: Vec<&str> = values
        .iter()
        .filter(|v| v.len() >= 3)
        .map(String::as_str)
        .collect();
    leaked.extend([KEY, callback_token, lookup_value]);
    leaked.retain(|value| logs.contains(value));
    assert!(leaked.is_empty(), "values in the daemon's log: {leaked:?}");
}

/// A run's environ (read from /proc by another process) holds its secrets
/// and not the session key; a process of the daemon's uid cannot read the
/// daemon's environ (which holds the key here) nor the shim's memory
/// (which holds the secrets): both are non-dumpable. See also
/// daemon::daemon_is_not_dumpable.
#[tokio::test]
async fn proc_environ_holds_no_key_and_sandboxd_is_unreadable() {
    let uid = support::is_root().then_some(65534);
    let daemon = TestDaemon::start_with(Options {
        uid,
        env: vec![("SESSION_API_KEY".into(), KEY.into())],
        ..Options::default()
    })
    .await;
    daemon
        .start_run(json!({
            "run_id": "r-environ",
            "command": ["sleep", "30"],
            "secrets": {"TOKEN": {"kind": "StaticSecret", "value": "environ-secret-value"}},
        }))
        .await;
    let run = daemon
        .wait_run("r-environ", "to run", |r| {
            r["pid"].is_i64() && r["state"] == "running"
        })
        .await;
    let pid = run["pid"].as_i64().unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ
            .split('\0')
            .any(|e| e == "TOKEN=environ-secret-value"),
        "{environ}"
    );
    assert!(
        !environ.contains(KEY),
        "the session key is in the child's environ"
    );
    let shim = proc_ppid(pid);

    let daemon_pid = daemon.pid();
    let probe = format!(
        "for f in /proc/{daemon_pid}/environ /proc/{daemon_pid}/mem /proc/{shim}/environ /proc/{shim}/mem; do \
           if head -c 1 $f >/dev/null 2>&1; then echo \"READ $f\"; fi; done; \
         grep -c . /proc/{daemon_pid}/environ; true"
    );
    let probe_run = daemon.exec(json!({"command": ["bash", "-c", probe]})).await;
    assert_eq!(probe_run["stdout"], "", "{probe_run}");
    assert!(
        probe_run["stderr"]
            .as_str()
            .unwrap()
            .contains("Permission denied"),
        "{probe_run}"
    );
    let (status, _) = daemon
        .post("/v1/runs/r-environ/cancel", json!({"grace_s": 0}))
        .await;
    assert_eq!(status, StatusCode::OK);
    daemon.wait_ended("r-environ").await;
}

fn proc_ppid(pid: i64) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(1).unwrap().parse().unwrap()
}

/// From inside a run, its token resolves fresh values of its own secrets by
/// env var name; any other name, the `secrets` form or a token of an ended
/// run is refused.
#[tokio::test]
async fn run_token_resolves_only_its_own_secrets() {
    let cloud = SecretServer::start().await;
    cloud.set("named:slack", "slack-value");
    let daemon = daemon_with(&cloud, &cloud, &[]).await;
    daemon
        .start_run(json!({
            "run_id": "r-token",
            "command": ["bash", "-c", "printf %s \"$SANDBOXD_RUN_TOKEN\" > token.tmp && mv token.tmp token && sleep 30"],
            "secrets": {
                "FRESH": lookup(format!("{}/counter/fresh", cloud.url)),
                "SLACK": {"name": "slack"},
                "PLAIN": "plain-value",
            },
        }))
        .await;
    let token_file = daemon.work_root().join("r-token/token");
    support::wait_for(
        "the run writing its token",
        || async { (token_file.exists(), ()) },
        &mut (),
    )
    .await;
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(
        cloud.hits("/counter/fresh"),
        1,
        "resolved once to start the run"
    );

    let http = reqwest::Client::new();
    let as_run = |body: Value| {
        http.post(format!("{}/v1/secrets/resolve", daemon.url))
            .bearer_auth(&token)
            .json(&body)
    };
    let (status, body) = support::send(as_run(json!({"names": ["FRESH", "SLACK", "PLAIN"]}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["values"],
        json!({"FRESH": "fresh-2", "SLACK": "slack-value", "PLAIN": "plain-value"}),
        "resolved afresh"
    );
    let (status, body) = support::send(as_run(json!({"names": ["FRESH"]}))).await;
    assert_eq!(
        (status, &body["values"]["FRESH"]),
        (StatusCode::OK, &json!("fresh-3"))
    );

    let (status, body) = support::send(as_run(json!({"names": ["FRESH", "OTHER"]}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        message(&body).contains("OTHER") && !message(&body).contains("FRESH,"),
        "{body}"
    );
    let (status, body) = support::send(as_run(json!({"secrets": {"X": "v"}}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = support::send(as_run(json!({"names": ["FRESH"], "secrets_too": 1}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = support::send(
        http.get(format!("{}/v1/runs", daemon.url))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a run token reaches nothing else"
    );

    daemon
        .post("/v1/runs/r-token/cancel", json!({"grace_s": 0}))
        .await;
    daemon.wait_ended("r-token").await;
    let (status, _) = support::send(as_run(json!({"names": ["FRESH"]}))).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the token of an ended run"
    );
}

/// Nothing secret is written to the state dir: not the sources, not the
/// values (only masked output).
#[tokio::test]
async fn no_value_reaches_the_state_dir() {
    let server = SecretServer::start().await;
    server.set("v", "looked-up-value-on-disk");
    let daemon = daemon_with(&server, &server, &[]).await;
    let run = daemon
        .exec(json!({
            "run_id": "r-disk",
            "command": ["bash", "-c", "echo \"$A $B\"; echo \"$A\" >&2"],
            "secrets": {
                "A": lookup(format!("{}/value/v", server.url)),
                "B": {"kind": "StaticSecret", "value": "static-value-on-disk"},
            },
        }))
        .await;
    assert_eq!(run["stdout"], "**** ****\n");
    for value in ["looked-up-value-on-disk", "static-value-on-disk"] {
        assert_tree_lacks(&daemon.state_dir(), value);
    }
}

fn assert_tree_lacks(dir: &Path, value: &str) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            assert_tree_lacks(&path, value);
        } else {
            let bytes = std::fs::read(&path).unwrap_or_default();
            let found = bytes.windows(value.len()).any(|w| w == value.as_bytes());
            assert!(!found, "{value} is in {}", path.display());
        }
    }
}

/// The key never leaves for a foreign origin however it is dressed:
/// percent-encoded in the path or query (once or twice), split across two
/// headers or across the URL and a header. Each is refused with 400 before
/// any request, naming the env var.
#[tokio::test]
async fn encoded_or_split_key_is_never_sent_to_a_foreign_origin() {
    let cloud = SecretServer::start().await;
    let foreign = SecretServer::start().await;
    let daemon = daemon_with(&cloud, &cloud, &[]).await;
    let encoded: String = KEY.bytes().map(|b| format!("%{b:02X}")).collect();
    let (head, tail) = KEY.split_at(KEY.len() / 2);
    let sources = [
        json!({"kind": "LookupSecret", "url": format!("{}/value/{encoded}", foreign.url)}),
        json!({"kind": "LookupSecret", "url": format!("{}/value/x?k={}", foreign.url, encoded.replace('%', "%25"))}),
        json!({"kind": "LookupSecret", "url": format!("{}/value/x", foreign.url),
               "headers": {"X-Part-A": head, "X-Part-B": tail}}),
        json!({"kind": "LookupSecret", "url": format!("{}/value/{head}", foreign.url),
               "headers": {"X-Rest": tail}}),
        json!({"kind": "LookupSecret", "url": format!("{}/value/x", foreign.url),
               "headers": {"Authorization": format!("Bearer {encoded}")}}),
    ];
    for source in sources {
        let shown = source.to_string();
        let (status, body) = resolve(&daemon, json!({"GH": source})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{shown}: {body}");
        assert_eq!(body["error"]["code"], "invalid_secret", "{body}");
        assert!(message(&body).starts_with("secrets.GH: "), "{body}");
        assert!(message(&body).contains("session key"), "{body}");
        assert!(!body.to_string().contains(KEY), "{body}");
    }
    assert!(foreign.seen().is_empty(), "{:?}", foreign.seen());
}

/// Link-local and cloud metadata addresses are refused as secret URLs
/// with a 400 naming the env var, before any request.
#[tokio::test]
async fn metadata_and_link_local_secret_urls_are_refused() {
    let daemon = TestDaemon::start().await;
    for url in [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://169.254.10.1:8080/s",
        "http://[fe80::1]/s",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://[::ffff:169.254.169.254]/",
    ] {
        let (status, body) = resolve(&daemon, json!({"META": lookup(url.to_owned())})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
        assert!(message(&body).starts_with("secrets.META: "), "{body}");
        assert!(
            message(&body).contains("link-local") || message(&body).contains("metadata"),
            "{body}"
        );
        let (status, body) = daemon
            .post(
                "/v1/runs",
                json!({"command": ["true"], "secrets": {"META": lookup(url.to_owned())}}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
    }
}

/// The impostor agent-server (issue 14, attack 6), from inside a real
/// run: the run kills the agent-server, listens on its port as another
/// user, and asks for its LookupSecret with a blank X-Session-API-Key to
/// that origin. sandboxd sees that the port's listener is not the
/// agent-server's uid and refuses (424); the impostor gets no request.
/// Before that, the genuine agent-server (our uid) was sent the key.
///
/// Not root, the run cannot become another user: its impostor has the
/// daemon's uid, which is the agent-server's, and gets the key. That is
/// the limit of a non-root daemon README's "Who can read what" names: a
/// same-uid run can take the agent-server's place.
#[tokio::test]
async fn impostor_agent_server_gets_no_key() {
    let root = support::is_root();
    let dir = tempfile::tempdir().unwrap();
    // The genuine agent-server: our uid (the daemon's), logs each request's key.
    const SERVER: &str = r#"
import http.server, sys
port, log = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(log, "a") as f:
            f.write(repr((self.path, self.headers.get("X-Session-API-Key"))) + "\n")
        body = b"agent-value"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"#;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let genuine_log = dir.path().join("genuine.log");
    let impostor_log = dir.path().join("impostor.log");
    std::fs::write(&impostor_log, "").unwrap();
    std::fs::set_permissions(
        &impostor_log,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let mut genuine = std::process::Command::new("/usr/bin/python3")
        .args(["-c", SERVER, &port.to_string()])
        .arg(&genuine_log)
        .spawn()
        .unwrap();
    support::wait_for(
        "the agent-server listening",
        || async {
            (
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
                (),
            )
        },
        &mut (),
    )
    .await;
    let agent_url = format!("http://127.0.0.1:{port}");
    let daemon = TestDaemon::start_with(Options {
        args: vec!["--agent-server-url".into(), agent_url.clone()],
        ..Options::default()
    })
    .await;
    // The run: resolve once (the genuine server), kill it, listen on its
    // port as nobody, resolve again.
    let script = r#"
import json, os, signal, socket, subprocess, sys, time, urllib.request, urllib.error
genuine, port, log, server = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
as_other = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if sys.argv[5] == "root" else []
def resolve():
    req = urllib.request.Request(os.environ["SANDBOXD_URL"] + "/v1/secrets/resolve",
        data=json.dumps({"names": ["AGENT"]}).encode(),
        headers={"Authorization": "Bearer " + os.environ["SANDBOXD_RUN_TOKEN"],
                 "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)
status, body = resolve()
print("genuine", status, body.get("values", {}).get("AGENT"))
os.kill(genuine, signal.SIGKILL)
# The killed server's socket closes when it is gone: wait for that, so
# the port that answers next is the impostor's.
for _ in range(200):
    try:
        socket.create_connection(("127.0.0.1", port)).close()
        time.sleep(0.05)
    except OSError:
        break
impostor = subprocess.Popen(as_other + ["/usr/bin/python3", "-c", server, str(port), log])
for _ in range(200):
    try:
        socket.create_connection(("127.0.0.1", port)).close()
        break
    except OSError:
        time.sleep(0.05)
status, body = resolve()
if status == 200:
    print("impostor", status, body["values"]["AGENT"])
else:
    print("impostor", status, body["error"]["code"], body["error"]["message"])
impostor.kill()
"#;
    let run = daemon
        .exec(json!({
            "command": ["/usr/bin/python3", "-c", script, genuine.id().to_string(),
                        port.to_string(), impostor_log.display().to_string(), SERVER,
                        if root { "root" } else { "same-uid" }],
            "secrets": {"AGENT": {"kind": "LookupSecret", "url": format!("{agent_url}/api/x"),
                                  "headers": {"X-Session-API-Key": ""}}},
        }))
        .await;
    let _ = genuine.kill();
    let _ = genuine.wait();
    let stdout = run["stdout"].as_str().unwrap_or_default();
    assert_eq!(run["state"], "succeeded", "{run}");
    assert!(stdout.contains("genuine 200 ****"), "{stdout}");
    let genuine_seen = std::fs::read_to_string(&genuine_log).unwrap();
    assert!(
        genuine_seen.contains(KEY),
        "the genuine server got the key: {genuine_seen}"
    );
    let impostor_seen = std::fs::read_to_string(&impostor_log).unwrap();
    if !root {
        // The limit: same uid, so the impostor is trusted with the key.
        assert!(stdout.contains("impostor 200 ****"), "{stdout}");
        assert!(impostor_seen.contains(KEY), "{impostor_seen}");
        return;
    }
    assert!(
        stdout.contains("impostor 424 secret_unresolved") && stdout.contains("held by uid 65534"),
        "{stdout}"
    );
    assert!(
        impostor_seen.is_empty(),
        "the impostor was asked: {impostor_seen}"
    );
}

/// With the expected uid configured to another user, the agent-server
/// (listening at our uid) is not trusted with the key either.
#[tokio::test]
async fn agent_server_uid_is_configurable() {
    let agent = SecretServer::start().await;
    let other_uid = (nix::unistd::geteuid().as_raw() + 1).to_string();
    let daemon = TestDaemon::start_with(Options {
        args: vec![
            "--agent-server-url".into(),
            agent.url.clone(),
            "--agent-server-uid".into(),
            other_uid.clone(),
        ],
        ..Options::default()
    })
    .await;
    let source = json!({"kind": "LookupSecret", "url": format!("{}/api/settings/secrets/A", agent.url),
                        "headers": {"X-Session-API-Key": ""}});
    let (status, body) = resolve(&daemon, json!({"A": source})).await;
    assert_unresolved(status, &body, &["--agent-server-uid", &other_uid]);
    assert!(agent.seen().is_empty(), "{:?}", agent.seen());
}

/// A value resolved during a run (a rotating LookupSecret, asked for again
/// with the run token) is masked in that run's output, printed whole right
/// after the answer, split across two writes, or on stderr.
#[tokio::test]
async fn values_resolved_during_a_run_are_masked_in_its_output() {
    let server = SecretServer::start().await;
    let daemon = daemon_with(&server, &server, &[]).await;
    let script = r#"
import json, os, sys, time, urllib.request
def resolve():
    req = urllib.request.Request(os.environ["SANDBOXD_URL"] + "/v1/secrets/resolve",
        data=json.dumps({"names": ["ROTATING"]}).encode(),
        headers={"Authorization": "Bearer " + os.environ["SANDBOXD_RUN_TOKEN"],
                 "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)["values"]["ROTATING"]
print("start", os.environ["ROTATING"], flush=True)
value = resolve()
print("fresh", value, flush=True)
sys.stdout.write("split " + value[:9]); sys.stdout.flush(); time.sleep(0.2)
sys.stdout.write(value[9:] + "\n"); sys.stdout.flush()
print("err", value, file=sys.stderr, flush=True)
again = resolve()
print("again", again, "differs", again != value, flush=True)
"#;
    let run = daemon
        .exec(json!({
            "command": ["python3", "-c", script],
            "secrets": {"ROTATING": lookup(format!("{}/counter/rotating-secret-value", server.url))},
        }))
        .await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let stdout = run["stdout"].as_str().unwrap_or_default();
    let stderr = run["stderr"].as_str().unwrap_or_default();
    assert_eq!(
        stdout, "start ****\nfresh ****\nsplit ****\nagain **** differs True\n",
        "{run}"
    );
    assert_eq!(stderr, "err ****\n", "{run}");
    assert_eq!(server.hits("/counter/rotating-secret-value"), 3);
    let run_id = run["run_id"].as_str().unwrap();
    let (_, logs) = daemon.text(&format!("/v1/runs/{run_id}/logs")).await;
    assert!(!logs.contains("rotating-secret-value"), "{logs}");
}

/// Overlapping secret values leave no fragment in a run's captured output
/// (`****12ijklmn` before): the union of their spans is one `****`.
#[tokio::test]
async fn overlapping_values_leave_no_fragment_in_a_run() {
    let daemon = TestDaemon::start().await;
    let run = daemon
        .exec(json!({
            "command": ["sh", "-c", "printf 'a abcdefgh12ijklmn b\\n'; printf 'abcdefgh1'; sleep 0.2; printf '2ijklmn\\n'; printf '12ijklmnabcdefgh12\\n' >&2"],
            "secrets": {"FIRST": "abcdefgh12", "SECOND": "12ijklmn"},
        }))
        .await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["stdout"], "a **** b\n****\n", "{run}");
    assert_eq!(run["stderr"], "****\n", "{run}");
}
