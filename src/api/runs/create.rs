//! `POST /v1/runs` request side: the request DTOs (`CreateRunRequest`,
//! `CommandSpec`, `CallbackRequest`) and their parsing and validation into a
//! [`crate::runs::NewRun`]: field normalization, the idempotency
//! fingerprint, the callback target and the run id rule.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::callbacks::{CallbackTarget, StoredToken};
use crate::config::Config;
use crate::error::ApiError;
use crate::runs::shim::StdinMode;
use crate::runs::{NewRun, RunError};

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
    /// The command's stdin: `null` (default: `/dev/null`), `pipe` (written
    /// through `POST .../stdin` or `GET .../attach`) or `pty` (a terminal:
    /// stdin, stdout and stderr, its output stored as stdout).
    #[schema(value_type = Option<String>, pattern = "^(null|pipe|pty)$")]
    pub stdin: Option<String>,
    /// Terminal columns (`stdin: "pty"` only; default 80).
    #[schema(minimum = 1, maximum = 1000)]
    pub cols: Option<u32>,
    /// Terminal rows (`stdin: "pty"` only; default 24).
    #[schema(minimum = 1, maximum = 1000)]
    pub rows: Option<u32>,
    /// `TERM` of a terminal run (`stdin: "pty"` only; default `xterm`).
    pub term: Option<String>,
}

/// Largest terminal side, in columns or rows.
const MAX_TERMINAL_SIDE: u32 = 1000;

/// The `stdin`, `cols`, `rows` and `term` fields as the run's stdin mode
/// and `TERM`.
fn stdin_mode(request: &CreateRunRequest) -> Result<(StdinMode, Option<String>), ApiError> {
    let invalid = |msg: String| ApiError::Run(RunError::Invalid(msg));
    let mode = request.stdin.as_deref().unwrap_or("null");
    if mode != "pty" {
        let given = [
            ("cols", request.cols.is_some()),
            ("rows", request.rows.is_some()),
            ("term", request.term.is_some()),
        ];
        if let Some((name, _)) = given.iter().find(|(_, given)| *given) {
            return Err(invalid(format!(
                "{name} is for a terminal; give it with stdin \"pty\""
            )));
        }
    }
    let side = |name: &str, value: Option<u32>, default: u16| match value {
        None => Ok(default),
        Some(n) if (1..=MAX_TERMINAL_SIDE).contains(&n) => Ok(n as u16),
        Some(n) => Err(invalid(format!(
            "{name} {n} must be between 1 and {MAX_TERMINAL_SIDE}"
        ))),
    };
    match mode {
        "null" => Ok((StdinMode::Null, None)),
        "pipe" => Ok((StdinMode::Pipe, None)),
        "pty" => {
            let cols = side("cols", request.cols, 80)?;
            let rows = side("rows", request.rows, 24)?;
            let term = request.term.clone().unwrap_or_else(|| "xterm".to_owned());
            let printable = term.bytes().all(|b| b.is_ascii_graphic());
            if term.is_empty() || term.len() > 64 || !printable {
                return Err(invalid(format!(
                    "term {term:?} must be 1 to 64 printable characters without spaces"
                )));
            }
            Ok((StdinMode::Pty { cols, rows }, Some(term)))
        }
        other => Err(invalid(format!(
            "stdin {other:?} must be null, \"pipe\" or \"pty\""
        ))),
    }
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

pub(super) fn create_run_request(
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
    let (stdin, term) = stdin_mode(&request)?;
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
        record_sync: crate::durable::Durability::Flush,
        stdin,
        term,
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
