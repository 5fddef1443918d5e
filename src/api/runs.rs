//! `/v1/runs...`: start, list, read, follow, cancel, signal, report and
//! delete runs. Wire types live here; the domain is in [`crate::runs`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::{AppState, Caller};
use crate::callbacks::{CallbackTarget, Outcome, RunReport, StoredToken};
use crate::config::Config;
use crate::error::{ApiError, ErrorBody};
use crate::runs::logs::{self, LogReader, LogStream};
use crate::runs::{parse_signal, NewRun, RunError, RunSnapshot};
use crate::runs::{ListCursor, ListFilter, RunState};

/// The command: an argv executed directly, or a string run by `bash -c`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum CommandSpec {
    /// argv.
    Argv(Vec<String>),
    /// Shell string.
    Shell(String),
}

// Written by hand: the derived schema cannot say that the argv and the
// string must not be empty.
impl utoipa::PartialSchema for CommandSpec {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
        let text = || {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
        };
        OneOfBuilder::new()
            .description(Some(
                "argv (executed directly), or a string run as `bash -c <string>`",
            ))
            .item(ArrayBuilder::new().items(text()).min_items(Some(1)))
            .item(text())
            .into()
    }
}

impl ToSchema for CommandSpec {}

/// Body of `POST /v1/runs`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRunRequest {
    /// The run's id; a UUID v4 when absent. Letters, digits, `.`, `_`, `-`.
    #[schema(pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")]
    pub run_id: Option<String>,
    /// argv, or a string run as `bash -c <string>`.
    pub command: CommandSpec,
    /// Absolute working dir; default: the run's work dir (created).
    #[schema(pattern = "^/")]
    pub cwd: Option<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Sensitive names in `env` that are wanted anyway.
    #[serde(default)]
    pub allow_sensitive_env: Vec<String>,
    /// Start from the daemon's env, sanitized (default true).
    #[serde(default = "yes")]
    pub inherit_env: bool,
    /// Env var name to secret source (LookupSecret, `{"name": ...}`,
    /// StaticSecret or a string), resolved before spawn.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub secrets: BTreeMap<String, serde_json::Value>,
    /// Run `bash setup.sh` first when present in cwd (default true).
    #[serde(default = "yes")]
    pub setup: bool,
    /// Wall-clock limit of setup + command, in seconds.
    #[schema(exclusive_minimum = 0.0, maximum = 2592000.0)]
    pub timeout_s: Option<f64>,
    /// Completion callback.
    pub callback: Option<CallbackRequest>,
    /// Answer only when the run has ended.
    #[serde(default)]
    pub wait: bool,
}

fn yes() -> bool {
    true
}

/// A run's completion callback.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallbackRequest {
    /// The `.../runs/{id}/complete` URL (http or https).
    pub url: String,
    /// Bearer token; default `--callback-token` / `OPENHANDS_API_KEY`.
    pub token: Option<String>,
    /// `run_id` in the payload; default: this run's id.
    pub run_id: Option<String>,
    /// Also post `{"phase": ...}` to the sibling `/phase` URL.
    #[serde(default)]
    pub phases: bool,
}

/// Delivery state of a run's callback.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallbackView {
    /// `none`, `pending`, `delivered`, `failed`.
    pub state: &'static str,
    /// Attempts so far.
    pub attempts: u32,
    /// HTTP status of the last attempt.
    pub last_status: Option<u16>,
    /// Error of the last attempt.
    pub last_error: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Lifecycle state of a run, on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStateView {
    /// Accepted; its process is not running yet.
    Starting,
    /// Its process (setup or command) runs.
    Running,
    /// The command exited 0.
    Succeeded,
    /// Non-zero exit, killed by a signal, setup failed or spawn failed.
    Failed,
    /// The deadline passed.
    TimedOut,
    /// Cancelled through the API or by sandboxd's shutdown.
    Cancelled,
    /// sandboxd cannot know how it ended.
    Lost,
}

impl From<RunState> for RunStateView {
    fn from(state: RunState) -> RunStateView {
        match state {
            RunState::Starting => RunStateView::Starting,
            RunState::Running => RunStateView::Running,
            RunState::Ended(Outcome::Succeeded) => RunStateView::Succeeded,
            RunState::Ended(Outcome::Failed) => RunStateView::Failed,
            RunState::Ended(Outcome::TimedOut) => RunStateView::TimedOut,
            RunState::Ended(Outcome::Cancelled) => RunStateView::Cancelled,
            RunState::Ended(Outcome::Lost) => RunStateView::Lost,
        }
    }
}

/// A run's status.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    /// The run's id.
    pub run_id: String,
    /// Lifecycle state.
    pub state: RunStateView,
    /// Pid (and process group) of its current or last process.
    pub pid: Option<i32>,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Signal that killed it (`SIGKILL`).
    pub signal: Option<String>,
    /// What went wrong.
    pub error: Option<String>,
    /// The argv.
    pub command: Vec<String>,
    /// Working dir.
    pub cwd: String,
    /// Accepted at.
    pub created_at: DateTime<Utc>,
    /// Command started at.
    pub started_at: Option<DateTime<Utc>>,
    /// Ended at.
    pub finished_at: Option<DateTime<Utc>>,
    /// Seconds from start to end.
    pub duration_s: Option<f64>,
    /// Wall-clock limit in seconds.
    pub timeout_s: f64,
    /// Bytes of stored (masked) stdout.
    pub stdout_bytes: u64,
    /// Bytes of stored (masked) stderr.
    pub stderr_bytes: u64,
    /// Whether a bundle was extracted into the run's work dir.
    pub bundle: bool,
    /// What the run reported about itself.
    pub report: ReportView,
    /// Completion callback delivery.
    pub callback: CallbackView,
    /// Exec-and-wait only: the last `--wait-output-bytes` of stdout, masked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// Exec-and-wait only: the last `--wait-output-bytes` of stderr, masked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
}

/// Values a run reported (`POST /v1/runs/{id}/report`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportView {
    /// The conversation the run drove.
    pub conversation_id: Option<String>,
    /// What it cost.
    pub cost: Option<f64>,
}

/// `GET /v1/runs` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    /// One page of runs, newest first.
    pub runs: Vec<RunView>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<String>,
}

/// Runs per page when `limit` is not given.
pub const DEFAULT_PAGE: usize = 100;

/// The largest `limit`.
pub const MAX_PAGE: usize = 1000;

/// Query of `GET /v1/runs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only runs in this state.
    pub state: Option<String>,
    /// Only runs created at or after this time (RFC 3339).
    pub created_since: Option<String>,
    /// Runs per page: 1 to 1000, default 100.
    pub limit: Option<usize>,
    /// The `next` of the page before.
    pub after: Option<String>,
}

/// Query of `GET /v1/runs/{run_id}/logs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// `stdout` (default), `stderr` or `both`.
    pub stream: Option<String>,
    /// Byte offset in the stream to start at.
    pub offset: Option<u64>,
    /// Stream until the run ends.
    pub follow: Option<bool>,
}

/// Body of `POST /v1/runs/{run_id}/cancel` (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Seconds between SIGTERM and SIGKILL (default 10).
    pub grace_s: Option<f64>,
}

/// Body of `POST /v1/runs/{run_id}/signal`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalRequest {
    /// `SIGINT`, `INT` or a number.
    #[schema(schema_with = signal_schema)]
    pub signal: serde_json::Value,
}

fn signal_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String))
        .item(ObjectBuilder::new().schema_type(Type::Integer))
        .into()
}

/// Start a run.
#[utoipa::path(post, path = "/v1/runs", request_body = CreateRunRequest,
    responses((status = 201, body = RunView), (status = 200, description = "existing run, or wait: true", body = RunView),
              (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 424, body = ErrorBody),
              (status = 429, body = ErrorBody), (status = 503, body = ErrorBody), (status = 507, body = ErrorBody)))]
pub async fn create_run(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    let (mut new, wait) = create_run_request(body, &state.config)?;
    if wait {
        new.record_sync = crate::durable::Sync::NoFlush;
    }
    let (snapshot, created) = state.runs.create(new).await?;
    let run_id = snapshot.run.run_id.clone();
    if wait {
        // Watching the run until its tails are read keeps retention from
        // removing it in between.
        let _watching = state.runs.progress(&run_id)?;
        let snapshot = state.runs.wait_ended(&run_id).await?;
        let mut view = view(&state, snapshot);
        let limit = state.config.wait_output_bytes;
        let run_dir = state.state_dir.run(&run_id);
        view.stdout = Some(logs::tail_text(&run_dir.stdout_log(), limit).await);
        view.stderr = Some(logs::tail_text(&run_dir.stderr_log(), limit).await);
        return Ok((StatusCode::OK, Json(view)).into_response());
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(&state, snapshot))).into_response())
}

/// The parsing and validation `POST /v1/runs` does, from the body's bytes:
/// the run to start and whether the caller waits for its end. The env
/// checks ([`crate::runs::check_env`]) and those that need the registry
/// (whether the id is taken, `--max-running`) come after. Public for the
/// fuzz target `run_spec`.
pub fn parse_create_run(body: &[u8], config: &Config) -> Result<(NewRun, bool), ApiError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::BadJson(e.to_string()))?;
    create_run_request(value, config)
}

fn create_run_request(
    mut body: serde_json::Value,
    config: &Config,
) -> Result<(NewRun, bool), ApiError> {
    normalize_fields(&mut body)?;
    let fingerprint = fingerprint(&mut body);
    let request: CreateRunRequest =
        serde_json::from_value(body).map_err(|e| ApiError::BadJson(e.to_string()))?;
    let wait = request.wait;
    Ok((validate(config, request, fingerprint)?, wait))
}

/// Checks the fields whose serde errors would not name them (`command` is
/// an untagged enum) and turns a human `timeout_s` ("5m", as the CLI
/// takes) into seconds, before the body is fingerprinted and typed.
fn normalize_fields(body: &mut serde_json::Value) -> Result<(), ApiError> {
    use serde_json::Value;
    fn kind(value: &Value) -> &'static str {
        match value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
    // Not an object: serde's own message says so.
    let Some(map) = body.as_object_mut() else {
        return Ok(());
    };
    if let Some(command) = map.get("command") {
        let bad = match command {
            Value::String(_) => None,
            Value::Array(items) => items
                .iter()
                .find(|item| !item.is_string())
                .map(|item| format!("an array holding {}", kind(item))),
            other => Some(kind(other).to_owned()),
        };
        if let Some(got) = bad {
            return Err(ApiError::BadJson(format!(
                "command must be an argv array of strings or a shell string, e.g. \
                 [\"python3\", \"main.py\"] or \"make test\"; got {got}"
            )));
        }
    }
    let timeout_hint = "give seconds (600) or a string with a unit (\"90s\", \"5m\", \"1h\")";
    match map.get("timeout_s") {
        None | Some(Value::Null | Value::Number(_)) => {}
        Some(Value::String(text)) => {
            let secs = crate::config::parse_duration(text).map_err(|_| {
                ApiError::BadJson(format!(
                    "timeout_s {text:?} is not a duration; {timeout_hint}"
                ))
            })?;
            map.insert(
                "timeout_s".to_owned(),
                serde_json::json!(secs.as_secs_f64()),
            );
        }
        Some(other) => {
            return Err(ApiError::BadJson(format!(
                "timeout_s must be a duration, not {}; {timeout_hint}",
                kind(other)
            )))
        }
    }
    Ok(())
}

/// The request's identity for idempotent retries: a hash of its canonical
/// JSON without `wait` (a retry may wait or not). Hashed as it is
/// serialized: no copy of the body (and its secret values) is made.
fn fingerprint(body: &mut serde_json::Value) -> String {
    let wait = body.as_object_mut().and_then(|map| map.remove("wait"));
    let mut hasher = Sha256::new();
    // Writing into a hasher cannot fail.
    let _ = serde_json::to_writer(&mut hasher, &*body);
    if let (Some(wait), Some(map)) = (wait, body.as_object_mut()) {
        map.insert("wait".to_owned(), wait);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn validate(
    config: &Config,
    mut request: CreateRunRequest,
    fingerprint: String,
) -> Result<NewRun, ApiError> {
    // First, so that the raw values are zeroized (as they are parsed) on
    // every path.
    let secrets = crate::secrets::parse_map(std::mem::take(&mut request.secrets), config)?;
    let invalid = |msg: String| ApiError::Run(RunError::Invalid(msg));
    let run_id = match request.run_id {
        Some(id) => {
            check_run_id(&id)?;
            id
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    let argv = match request.command {
        CommandSpec::Argv(argv) if argv.first().is_some_and(|a| !a.is_empty()) => argv,
        CommandSpec::Argv(_) => {
            return Err(invalid(
                "command must be a non-empty argv array or string".into(),
            ))
        }
        CommandSpec::Shell(text) if !text.trim().is_empty() => {
            vec!["bash".into(), "-c".into(), text]
        }
        CommandSpec::Shell(_) => return Err(invalid("command must not be empty".into())),
    };
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(invalid("command must not contain NUL bytes".into()));
    }
    let cwd = match request.cwd {
        Some(cwd) if !cwd.starts_with('/') => {
            return Err(invalid(format!("cwd {cwd:?} must be an absolute path")));
        }
        Some(cwd) => Some(PathBuf::from(cwd)),
        None => None,
    };
    let timeout = match request.timeout_s {
        Some(secs) if secs.is_finite() && secs > 0.0 && secs <= 30.0 * 86400.0 => {
            Duration::from_secs_f64(secs)
        }
        Some(secs) => {
            return Err(invalid(format!(
                "timeout_s {secs} must be between 0 and 2592000 seconds"
            )))
        }
        None => config.default_timeout,
    };
    let callback = request
        .callback
        .map(|cb| callback_target(config, cb, &run_id))
        .transpose()?;
    Ok(NewRun {
        run_id,
        argv,
        cwd,
        env: request.env,
        allow_sensitive_env: request.allow_sensitive_env,
        inherit_env: request.inherit_env,
        secrets,
        setup: request.setup,
        timeout,
        callback,
        fingerprint,
        record_sync: crate::durable::Sync::Flush,
    })
}

fn callback_target(
    config: &Config,
    cb: CallbackRequest,
    run_id: &str,
) -> Result<CallbackTarget, ApiError> {
    let invalid = |msg: String| ApiError::Run(RunError::Invalid(msg));
    let url = reqwest::Url::parse(&cb.url)
        .map_err(|e| invalid(format!("callback.url {:?}: {e}", cb.url)))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid(format!(
            "callback.url {:?} must be an http:// or https:// URL",
            cb.url
        )));
    }
    if let Some(why) = crate::secrets::custody::refused_host(&url) {
        return Err(invalid(format!(
            "callback.url {} is {why}; callbacks never go to link-local or cloud metadata addresses",
            crate::secrets::source::display_url(&url)
        )));
    }
    // The default token goes only to the origin it belongs to
    // (--callback-token-origin, else --cloud-api-url's); elsewhere the
    // callback is sent without it, unless the request names its own.
    let token = match cb.token.filter(|t| !t.is_empty()) {
        Some(token) => Some(StoredToken::from(token.as_str())),
        None if config.callback_token_origin.as_ref() == Some(&url.origin()) => {
            config.callback_token.clone().map(StoredToken)
        }
        None => None,
    };
    Ok(CallbackTarget {
        url: cb.url,
        token,
        run_id: cb
            .run_id
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| run_id.to_owned()),
        phases: cb.phases,
    })
}

/// Run ids name directories: letters, digits, `.`, `_`, `-`; 1 to 128 bytes.
pub fn check_run_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        return Ok(());
    }
    Err(ApiError::Run(RunError::Invalid(format!(
        "run_id {id:?} must be 1 to 128 letters, digits, '.', '_' or '-', not starting with '.'"
    ))))
}

pub(super) fn view(state: &AppState, snapshot: RunSnapshot) -> RunView {
    let RunSnapshot { run, progress } = snapshot;
    let callback = match &run.callback {
        None => CallbackView {
            state: "none",
            attempts: 0,
            last_status: None,
            last_error: None,
            delivered_at: None,
        },
        Some(_) => {
            let status = state.outbox.status(&run.run_id);
            CallbackView {
                state: status.state,
                attempts: status.attempts,
                last_status: status.last_status,
                last_error: status.last_error,
                delivered_at: status.delivered_at,
            }
        }
    };
    let bundle = crate::upload::has_bundle(&state.config, &run.run_id);
    let end = run.end().cloned();
    RunView {
        duration_s: run.duration_s(),
        state: run.state().into(),
        pid: run.pid(),
        exit_code: end.as_ref().and_then(|e| e.exit_code),
        signal: end.as_ref().and_then(|e| e.signal.clone()),
        error: end.as_ref().and_then(|e| e.error.clone()),
        finished_at: end.as_ref().map(|e| e.finished_at),
        cwd: run.cwd.display().to_string(),
        created_at: run.created_at,
        started_at: run.started_at,
        timeout_s: run.timeout.as_secs_f64(),
        stdout_bytes: progress.stdout_bytes,
        stderr_bytes: progress.stderr_bytes,
        bundle,
        report: ReportView {
            conversation_id: run.report.conversation_id,
            cost: run.report.cost,
        },
        callback,
        run_id: run.run_id,
        command: run.command,
        stdout: None,
        stderr: None,
    }
}

/// List runs.
#[utoipa::path(get, path = "/v1/runs", params(ListQuery),
    responses((status = 200, body = RunList), (status = 400, body = ErrorBody)))]
pub async fn list_runs(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<RunList>, ApiError> {
    let state_filter = match query.state.as_deref() {
        None | Some("") => None,
        Some(name) => Some(RunState::ALL.into_iter().find(|s| s.as_str() == name).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown state {name:?}; use one of starting, running, succeeded, failed, timed_out, cancelled, lost"
            ))
        })?),
    };
    let created_since = match query.created_since.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            DateTime::parse_from_rfc3339(text)
                .map_err(|e| {
                    ApiError::BadRequest(format!(
                        "created_since {text:?} is not an RFC 3339 time (e.g. 2026-01-31T12:00:00Z): {e}"
                    ))
                })?
                .with_timezone(&Utc),
        ),
    };
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit {limit} is out of range; use 1 to {MAX_PAGE}"
        )));
    }
    let after = match query.after.as_deref() {
        None | Some("") => None,
        Some(text) => Some(ListCursor::decode(text).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "after {text:?} is not a cursor; pass the `next` of the page before"
            ))
        })?),
    };
    let filter = ListFilter {
        state: state_filter,
        created_since,
    };
    let (page, next) = state.runs.list(&filter, after.as_ref(), limit);
    let runs = page.into_iter().map(|s| view(&state, s)).collect();
    let next = next.map(|cursor| cursor.encode());
    Ok(Json(RunList { runs, next }))
}

/// Read a run's status.
#[utoipa::path(get, path = "/v1/runs/{run_id}", params(("run_id" = String, Path)),
    responses((status = 200, body = RunView), (status = 404, body = ErrorBody)))]
pub async fn get_run(
    State(state): State<AppState>,
    ApiPath(run_id): ApiPath<String>,
) -> Result<Json<RunView>, ApiError> {
    Ok(Json(view(&state, state.runs.snapshot(&run_id)?)))
}

/// Read (or follow) a run's captured output.
#[utoipa::path(get, path = "/v1/runs/{run_id}/logs", params(("run_id" = String, Path), LogsQuery),
    responses((status = 200, content_type = "text/plain", body = String), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn get_logs(
    State(state): State<AppState>,
    ApiPath(run_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<LogsQuery>,
) -> Result<Response, ApiError> {
    let stream = match query.stream.as_deref() {
        None | Some("stdout") => LogStream::Stdout,
        Some("stderr") => LogStream::Stderr,
        Some("both") => LogStream::Both,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "stream {other:?} must be stdout, stderr or both"
            )));
        }
    };
    let progress = state.runs.progress(&run_id)?;
    let reader = LogReader::new(
        state.state_dir.run(&run_id).path().to_path_buf(),
        stream,
        query.offset.unwrap_or(0),
        query.follow.unwrap_or(false),
        progress,
    );
    let body = futures::stream::unfold(reader, |mut reader| async move {
        let chunk = reader.next_chunk().await?;
        Some((chunk, reader))
    });
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(body),
    )
        .into_response())
}

/// Cancel a run: SIGTERM to its process group, SIGKILL after the grace.
#[utoipa::path(post, path = "/v1/runs/{run_id}/cancel", params(("run_id" = String, Path)),
    request_body(content = Option<CancelRequest>),
    responses((status = 200, body = RunView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel_run(
    State(state): State<AppState>,
    ApiPath(run_id): ApiPath<String>,
    body: Bytes,
) -> Result<Json<RunView>, ApiError> {
    let request: CancelRequest = optional_json(&body)?;
    let grace = match request.grace_s {
        Some(secs) if secs.is_finite() && (0.0..=3600.0).contains(&secs) => {
            Duration::from_secs_f64(secs)
        }
        Some(secs) => {
            return Err(ApiError::BadRequest(format!(
                "grace_s {secs} must be between 0 and 3600"
            )))
        }
        None => Duration::from_secs(10),
    };
    Ok(Json(view(&state, state.runs.cancel(&run_id, grace)?)))
}

/// Send a signal to a run's process group.
#[utoipa::path(post, path = "/v1/runs/{run_id}/signal", params(("run_id" = String, Path)),
    request_body = SignalRequest,
    responses((status = 200, body = RunView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn signal_run(
    State(state): State<AppState>,
    ApiPath(run_id): ApiPath<String>,
    ApiJson(request): ApiJson<SignalRequest>,
) -> Result<Json<RunView>, ApiError> {
    let text = match &request.signal {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        other => return Err(ApiError::Run(RunError::BadSignal(other.to_string()))),
    };
    let signal = parse_signal(&text)?;
    Ok(Json(view(&state, state.runs.signal(&run_id, signal)?)))
}

/// Store the run's conversation id and cost for its completion payload.
#[utoipa::path(post, path = "/v1/runs/{run_id}/report", params(("run_id" = String, Path)),
    request_body = ReportView,
    responses((status = 200, body = RunView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn report_run(
    State(state): State<AppState>,
    Extension(_caller): Extension<Caller>,
    ApiPath(run_id): ApiPath<String>,
    ApiJson(request): ApiJson<ReportView>,
) -> Result<Json<RunView>, ApiError> {
    if let Some(cost) = request.cost {
        if !cost.is_finite() || cost < 0.0 {
            return Err(ApiError::BadRequest(format!(
                "cost {cost} must be a non-negative number"
            )));
        }
    }
    let report = RunReport {
        conversation_id: request.conversation_id,
        cost: request.cost,
    };
    Ok(Json(view(
        &state,
        state.runs.report(&run_id, report).await?,
    )))
}

/// Remove an ended run's record, logs and work dir.
#[utoipa::path(delete, path = "/v1/runs/{run_id}", params(("run_id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_run(
    State(state): State<AppState>,
    ApiPath(run_id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state.runs.delete(&run_id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// An optional JSON body: empty, or JSON `null`, means the defaults.
fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice::<Option<T>>(body)
        .map(Option::unwrap_or_default)
        .map_err(|e| ApiError::BadJson(e.to_string()))
}

#[cfg(test)]
mod tests;
