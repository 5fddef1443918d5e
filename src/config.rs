//! Daemon configuration: the `serve` flags (clap, every flag with an env
//! fallback) and the validated [`Config`] built from them.
//!
//! Nothing outside this module sees [`ServeArgs`]; everything downstream
//! takes a [`Config`], whose fields are already checked and typed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use secrecy::{ExposeSecret, SecretString};

/// Flags of `sandboxd serve`. Each one also reads the environment variable
/// named in its help.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "The session key is read from --session-key-file, else env SESSION_API_KEY, \
                  else env OH_SESSION_API_KEYS_0. Without one the daemon refuses to start \
                  unless --insecure-no-auth is given."
)]
pub struct ServeArgs {
    /// Address to listen on: HOST:PORT (port 0 picks a free one), or unix:/path.sock.
    #[arg(
        help_heading = "Listening and auth",
        long,
        env = "SANDBOXD_LISTEN",
        default_value = "127.0.0.1:60001"
    )]
    pub listen: String,

    /// File holding the session key (trailing newline ignored).
    #[arg(
        help_heading = "Listening and auth",
        long,
        env = "SANDBOXD_SESSION_KEY_FILE"
    )]
    pub session_key_file: Option<PathBuf>,

    /// Serve without a session key. Only for local development.
    #[arg(
        help_heading = "Listening and auth",
        long,
        env = "SANDBOXD_INSECURE_NO_AUTH"
    )]
    pub insecure_no_auth: bool,

    /// Directory for run records, logs and the callback outbox
    /// [default: $XDG_STATE_HOME/sandboxd, else ~/.local/state/sandboxd, else /var/lib/sandboxd].
    #[arg(help_heading = "Runs", long, env = "SANDBOXD_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Directory holding one work dir per run (bundles are extracted there)
    /// [default: /workspace/runs when /workspace exists, else <state-dir>/work].
    #[arg(help_heading = "Runs", long, env = "SANDBOXD_WORK_ROOT")]
    pub work_root: Option<PathBuf>,

    /// Directories `PUT /v1/files` may write under; repeat or comma-separate
    /// [default: the work root and /tmp].
    #[arg(
        help_heading = "Uploads",
        long = "upload-root",
        env = "SANDBOXD_UPLOAD_ROOTS",
        value_delimiter = ','
    )]
    pub upload_roots: Vec<PathBuf>,

    /// Largest accepted bundle, compressed: bytes, or with a unit (512MiB, 1GiB, 500MB).
    #[arg(help_heading = "Uploads", long, env = "SANDBOXD_MAX_BUNDLE_BYTES", default_value = "512MiB", value_parser = parse_size, value_name = "SIZE")]
    pub max_bundle_bytes: u64,

    /// Largest total size a bundle may extract to: bytes, or with a unit (2GiB).
    #[arg(help_heading = "Uploads", long, env = "SANDBOXD_MAX_EXTRACTED_BYTES", default_value = "2GiB", value_parser = parse_size, value_name = "SIZE")]
    pub max_extracted_bytes: u64,

    /// Most entries (files, dirs, links) a bundle may hold.
    #[arg(
        help_heading = "Uploads",
        long,
        env = "SANDBOXD_MAX_ENTRIES",
        default_value_t = 100_000
    )]
    pub max_entries: u64,

    /// Most runs running at once (a count); more are refused with 429.
    #[arg(
        help_heading = "Runs",
        long,
        env = "SANDBOXD_MAX_RUNNING",
        default_value_t = 64
    )]
    pub max_running: usize,

    /// Wall-clock limit of a run (setup + command) when the request gives
    /// none: seconds, or with a unit (90s, 10m, 1h).
    #[arg(help_heading = "Runs", long, env = "SANDBOXD_DEFAULT_TIMEOUT", default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
    pub default_timeout: Duration,

    /// Time between SIGTERM and SIGKILL when a run times out: seconds, or with a unit (500ms, 10s).
    #[arg(help_heading = "Runs", long, env = "SANDBOXD_KILL_GRACE", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub kill_grace: Duration,

    /// Size of the stdout and of the stderr tails returned by an exec-and-wait
    /// (`wait: true`): bytes, or with a unit (1MiB, 64KiB).
    #[arg(help_heading = "Runs", long, env = "SANDBOXD_WAIT_OUTPUT_BYTES", default_value = "1MiB", value_parser = parse_size, value_name = "SIZE")]
    pub wait_output_bytes: u64,

    /// How many ended runs are kept (record, logs, work dir); older ones are
    /// removed in the background. 0 keeps every run.
    #[arg(
        help_heading = "Retention",
        long,
        env = "SANDBOXD_RETAIN_RUNS",
        default_value_t = 1000,
        value_name = "COUNT"
    )]
    pub retain_runs: usize,

    /// How long an ended run is kept after its end: a duration (7d, 12h),
    /// or `off` to keep runs whatever their age.
    #[arg(help_heading = "Retention", long, env = "SANDBOXD_RETAIN_FOR", default_value = "7d", value_parser = parse_retention_age, value_name = "DURATION")]
    pub retain_for: RetentionAge,

    /// Largest stored stdout, and stderr, of one run: past it the run goes
    /// on, the head and the most recent tail are kept and the bytes between
    /// are dropped (the run's status says how many). 0 for no limit.
    #[arg(help_heading = "Retention", long, env = "SANDBOXD_MAX_OUTPUT_BYTES", default_value = "100MiB", value_parser = parse_size, value_name = "SIZE")]
    pub max_output_bytes: u64,

    /// More variable names to remove from every child's env; repeat or comma-separate.
    #[arg(
        help_heading = "Runs",
        long,
        env = "SANDBOXD_STRIP_ENV",
        value_delimiter = ','
    )]
    pub strip_env: Vec<String>,

    /// More variable name prefixes to remove from every child's env.
    #[arg(
        help_heading = "Runs",
        long,
        env = "SANDBOXD_STRIP_ENV_PREFIX",
        value_delimiter = ','
    )]
    pub strip_env_prefix: Vec<String>,

    /// oom_score_adj given to every run (-1000 to 1000), so the kernel picks
    /// runs before sandboxd.
    #[arg(help_heading = "Runs", long, env = "SANDBOXD_CHILD_OOM_SCORE_ADJ", default_value_t = 100,
          allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(-1000..=1000))]
    pub child_oom_score_adj: i32,

    /// Default bearer token of completion callbacks.
    #[arg(
        help_heading = "Callbacks",
        long,
        env = "OPENHANDS_API_KEY",
        hide_env_values = true
    )]
    pub callback_token: Option<String>,

    /// The origin (`scheme://host:port`) the default callback token belongs
    /// to: it is sent only to callback URLs of this origin
    /// [default: the origin of --cloud-api-url; with neither, never sent].
    #[arg(
        help_heading = "Callbacks",
        long,
        env = "SANDBOXD_CALLBACK_TOKEN_ORIGIN",
        value_name = "ORIGIN"
    )]
    pub callback_token_origin: Option<String>,

    /// How long an undelivered callback is retried: seconds, or with a unit (24h, 7d).
    #[arg(help_heading = "Callbacks", long, env = "SANDBOXD_CALLBACK_MAX_AGE", default_value = "24h", value_parser = parse_duration, value_name = "DURATION")]
    pub callback_max_age: Duration,

    /// Upper bound of the first callback retry's wait; retry n waits a
    /// random time up to min(60 s, this × 2^(n-1)) (full jitter): seconds, or
    /// with a unit (500ms, 2s).
    #[arg(help_heading = "Callbacks", long, env = "SANDBOXD_CALLBACK_BACKOFF", default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub callback_backoff: Duration,

    /// Timeout of one callback attempt (connect, send, answer): seconds, or with a unit (30s).
    #[arg(help_heading = "Callbacks", long, env = "SANDBOXD_CALLBACK_TIMEOUT", default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub callback_timeout: Duration,

    /// Base URL of the OpenHands cloud API, for named secrets.
    #[arg(help_heading = "Secrets", long, env = "OPENHANDS_CLOUD_API_URL")]
    pub cloud_api_url: Option<String>,

    /// This sandbox's id, for named secrets.
    #[arg(help_heading = "Secrets", long, env = "SANDBOX_ID")]
    pub sandbox_id: Option<String>,

    /// URL of the agent-server, probed at /alive
    /// [default: http://127.0.0.1:$AGENT_SERVER_PORT, port 60000].
    #[arg(
        help_heading = "Entrypoint (serve -- CMD)",
        long,
        env = "SANDBOXD_AGENT_SERVER_URL"
    )]
    pub agent_server_url: Option<String>,

    /// Uid that must own the agent-server's listening port (a local one)
    /// before sandboxd fills its session key into a lookup to it
    /// [default: sandboxd's own uid].
    #[arg(long, env = "SANDBOXD_AGENT_SERVER_UID")]
    pub agent_server_uid: Option<u32>,

    /// Base URL that relative LookupSecret URLs are joined to.
    #[arg(
        help_heading = "Secrets",
        long,
        env = "OH_INTERNAL_SERVER_URL",
        default_value = "http://127.0.0.1:8000"
    )]
    pub internal_server_url: String,

    /// Timeout of one secret lookup request: seconds, or with a unit (10s).
    #[arg(help_heading = "Secrets", long, env = "SANDBOXD_SECRET_TIMEOUT", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub secret_timeout: Duration,

    /// A connection that sends no complete request head for this long is
    /// closed (also between requests on a kept-alive connection): seconds, or
    /// with a unit (30s).
    #[arg(help_heading = "Listening and auth", long, env = "SANDBOXD_HEADER_TIMEOUT", default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub header_timeout: Duration,

    /// A request body that sends nothing for this long is given up: a JSON
    /// body is answered 408, an upload ends with nothing written: seconds, or
    /// with a unit (1m).
    #[arg(help_heading = "Listening and auth", long, env = "SANDBOXD_BODY_TIMEOUT", default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub body_timeout: Duration,

    /// How long shutdown waits for runs and the outbox before SIGKILL and
    /// exit: seconds, or with a unit (10s).
    #[arg(help_heading = "Runs", long, env = "SANDBOXD_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub shutdown_grace: Duration,

    /// Become a tiny init first (as PID 1 this is automatic): reap every
    /// orphan, forward signals, run the daemon as its child and restart it
    /// if it crashes. Uses PR_SET_CHILD_SUBREAPER.
    #[arg(
        help_heading = "Entrypoint (serve -- CMD)",
        long,
        env = "SANDBOXD_SUBREAPER"
    )]
    pub subreaper: bool,

    /// When to restart the supervised service (`serve -- CMD`) after it exits.
    #[arg(
        help_heading = "Entrypoint (serve -- CMD)",
        long,
        env = "SANDBOXD_SERVICE_RESTART",
        value_enum,
        default_value = "on-failure"
    )]
    pub service_restart: RestartPolicy,

    /// Restarts in a row (the service never staying up for 60 s) before
    /// sandboxd gives up and exits with the service's exit code.
    #[arg(
        help_heading = "Entrypoint (serve -- CMD)",
        long,
        env = "SANDBOXD_SERVICE_MAX_RESTARTS",
        default_value_t = 10
    )]
    pub service_max_restarts: u32,

    /// How the service's stdout/stderr reach sandboxd's: as they are, or
    /// each line prefixed with `[service] `.
    #[arg(
        help_heading = "Entrypoint (serve -- CMD)",
        long,
        env = "SANDBOXD_SERVICE_OUTPUT",
        value_enum,
        default_value = "raw"
    )]
    pub service_output: ServiceOutput,

    /// Log format: text for people, json for log pipelines.
    #[arg(
        help_heading = "Logging",
        long,
        env = "SANDBOXD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// More log detail (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(help_heading = "Logging", short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// When the supervised service is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RestartPolicy {
    /// Never: when it exits, sandboxd shuts down with its exit code.
    Never,
    /// When it exits non-zero or is killed by a signal.
    OnFailure,
    /// Whenever it exits.
    Always,
}

/// How the service's output is passed through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceOutput {
    /// Byte for byte (line by line).
    Raw,
    /// Each line prefixed with `[service] `.
    Prefixed,
}

/// Settings of the supervised service.
#[derive(Debug, Clone, Copy)]
pub struct ServiceConfig {
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Restarts in a row before giving up.
    pub max_restarts: u32,
    /// Pass-through style.
    pub output: ServiceOutput,
}

/// Where the API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

/// Bundle extraction limits.
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    /// Largest compressed body.
    pub max_bundle_bytes: u64,
    /// Largest total extracted size.
    pub max_extracted_bytes: u64,
    /// Most entries.
    pub max_entries: u64,
}

/// Validated daemon configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub listen: Listen,
    /// The session key; `None` only with `--insecure-no-auth`.
    pub session_key: Option<SecretString>,
    /// Run records, logs, outbox.
    pub state_dir: PathBuf,
    /// Parent of every run's work dir.
    pub work_root: PathBuf,
    /// Where `PUT /v1/files` may write.
    pub upload_roots: Vec<PathBuf>,
    /// Bundle limits.
    pub upload_limits: UploadLimits,
    /// Most runs at once.
    pub max_running: usize,
    /// Default run timeout.
    pub default_timeout: Duration,
    /// SIGTERM to SIGKILL on timeout.
    pub kill_grace: Duration,
    /// Tail size of exec-and-wait output.
    pub wait_output_bytes: u64,
    /// Which ended runs are kept.
    pub retention: Retention,
    /// Largest stored stdout (and stderr) of a run; 0 for no limit.
    pub max_output_bytes: u64,
    /// Extra names stripped from child envs.
    pub strip_env: Vec<String>,
    /// Extra prefixes stripped from child envs.
    pub strip_env_prefix: Vec<String>,
    /// oom_score_adj of children.
    pub child_oom_score_adj: i32,
    /// Default callback token.
    pub callback_token: Option<SecretString>,
    /// The only origin the default callback token is sent to.
    pub callback_token_origin: Option<url::Origin>,
    /// Whether the callback token came from the daemon's env
    /// (`OPENHANDS_API_KEY`), so it must be stripped from children.
    pub callback_token_from_env: bool,
    /// Retry window of callbacks.
    pub callback_max_age: Duration,
    /// Ceiling of the first callback retry's wait (doubles per retry).
    pub callback_backoff: Duration,
    /// Timeout of one callback attempt.
    pub callback_timeout: Duration,
    /// Cloud API base URL (no trailing slash).
    pub cloud_api_url: Option<String>,
    /// Sandbox id for named secrets.
    pub sandbox_id: Option<String>,
    /// Agent-server base URL (no trailing slash).
    pub agent_server_url: String,
    /// Uid expected on the agent-server's listening port; `None`: ours.
    pub agent_server_uid: Option<u32>,
    /// Base of relative LookupSecret URLs.
    pub internal_server_url: String,
    /// Timeout of one secret request.
    pub secret_timeout: Duration,
    /// Longest wait for a complete request head.
    pub header_timeout: Duration,
    /// Longest pause inside a request body.
    pub body_timeout: Duration,
    /// Shutdown grace.
    pub shutdown_grace: Duration,
    /// The supervised service's settings.
    pub service: ServiceConfig,
    /// The executable that runs `sandboxd shim` for each run.
    pub shim_exe: PathBuf,
}

impl Config {
    /// Validates the flags and reads the session key. Errors name the flag.
    pub fn from_args(args: &ServeArgs) -> anyhow::Result<Config> {
        let listen = parse_listen(&args.listen)?;
        let session_key = read_session_key(args)?;
        if session_key.is_none() && !args.insecure_no_auth {
            bail!(
                "no session key: set --session-key-file, SESSION_API_KEY or OH_SESSION_API_KEYS_0 \
                 (or pass --insecure-no-auth for local development)"
            );
        }
        let state_dir = match &args.state_dir {
            Some(dir) => absolute("--state-dir", dir)?,
            None => default_state_dir(),
        };
        let work_root = match &args.work_root {
            Some(dir) => absolute("--work-root", dir)?,
            None => default_work_root(&state_dir),
        };
        let upload_roots = if args.upload_roots.is_empty() {
            vec![work_root.clone(), PathBuf::from("/tmp")]
        } else {
            let mut roots = Vec::new();
            for root in &args.upload_roots {
                roots.push(absolute("--upload-root", root)?);
            }
            roots
        };
        if args.max_running == 0 {
            bail!("--max-running must be at least 1");
        }
        for (flag, value) in [
            ("--max-bundle-bytes", args.max_bundle_bytes),
            ("--max-extracted-bytes", args.max_extracted_bytes),
            ("--max-entries", args.max_entries),
            ("--wait-output-bytes", args.wait_output_bytes),
        ] {
            if value == 0 {
                bail!("{flag} must be greater than 0");
            }
        }
        if args.default_timeout.is_zero() {
            bail!("--default-timeout must be greater than 0");
        }
        for (flag, value) in [
            ("--callback-timeout", args.callback_timeout),
            ("--header-timeout", args.header_timeout),
            ("--body-timeout", args.body_timeout),
        ] {
            if value.is_zero() {
                bail!("{flag} must be greater than 0");
            }
        }
        let callback_token = args.callback_token.clone().filter(|t| !t.is_empty());
        let callback_token_from_env = std::env::var("OPENHANDS_API_KEY")
            .ok()
            .is_some_and(|v| Some(&v) == callback_token.as_ref());
        let cloud_api_url = match &args.cloud_api_url {
            Some(url) if !url.is_empty() => Some(parse_base_url("--cloud-api-url", url)?),
            _ => None,
        };
        let agent_server_url = match &args.agent_server_url {
            Some(url) => parse_base_url("--agent-server-url", url)?,
            None => default_agent_server_url()?,
        };
        let internal_server_url =
            parse_base_url("--internal-server-url", &args.internal_server_url)?;
        let callback_token_origin = match &args.callback_token_origin {
            Some(origin) if !origin.is_empty() => {
                Some(parse_origin("--callback-token-origin", origin)?)
            }
            _ => cloud_api_url
                .as_deref()
                .and_then(|url| reqwest::Url::parse(url).ok())
                .map(|url| url.origin()),
        };
        let shim_exe = std::env::current_exe().context("cannot find sandboxd's own executable")?;
        Ok(Config {
            listen,
            session_key,
            state_dir,
            work_root,
            upload_roots,
            upload_limits: UploadLimits {
                max_bundle_bytes: args.max_bundle_bytes,
                max_extracted_bytes: args.max_extracted_bytes,
                max_entries: args.max_entries,
            },
            max_running: args.max_running,
            default_timeout: args.default_timeout,
            kill_grace: args.kill_grace,
            wait_output_bytes: args.wait_output_bytes,
            retention: Retention {
                max_runs: (args.retain_runs > 0).then_some(args.retain_runs),
                max_age: args.retain_for.0,
            },
            max_output_bytes: args.max_output_bytes,
            strip_env: args
                .strip_env
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect(),
            strip_env_prefix: args
                .strip_env_prefix
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect(),
            child_oom_score_adj: args.child_oom_score_adj,
            callback_token: callback_token.map(SecretString::from),
            callback_token_origin,
            callback_token_from_env,
            callback_max_age: args.callback_max_age,
            callback_backoff: args.callback_backoff,
            callback_timeout: args.callback_timeout,
            cloud_api_url,
            sandbox_id: args.sandbox_id.clone().filter(|s| !s.is_empty()),
            agent_server_url,
            agent_server_uid: args.agent_server_uid,
            internal_server_url,
            secret_timeout: args.secret_timeout,
            header_timeout: args.header_timeout,
            body_timeout: args.body_timeout,
            shutdown_grace: args.shutdown_grace,
            service: ServiceConfig {
                restart: args.service_restart,
                max_restarts: args.service_max_restarts,
                output: args.service_output,
            },
            shim_exe,
        })
    }

    /// The session key as bytes, when one is configured.
    pub fn session_key_bytes(&self) -> Option<&[u8]> {
        self.session_key
            .as_ref()
            .map(|k| k.expose_secret().as_bytes())
    }
}

/// How long ended runs are kept: `None` for as long as the count allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionAge(pub Option<Duration>);

/// Which ended runs are kept; a run past either limit is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// How many ended runs, at most.
    pub max_runs: Option<usize>,
    /// How long after their end.
    pub max_age: Option<Duration>,
}

/// Parses `--retain-for`: a duration, or `off`/`0` for no age limit.
pub fn parse_retention_age(value: &str) -> Result<RetentionAge, String> {
    match value.trim() {
        "off" | "0" | "" => Ok(RetentionAge(None)),
        text => parse_duration(text).map(|age| RetentionAge(Some(age))),
    }
}

/// Parses `HOST:PORT` or `unix:/path`.
pub fn parse_listen(value: &str) -> anyhow::Result<Listen> {
    if let Some(path) = value.strip_prefix("unix:") {
        let path = PathBuf::from(path);
        if !path.is_absolute() {
            bail!("--listen {value:?}: a unix socket path must be absolute, e.g. unix:/run/sandboxd.sock");
        }
        return Ok(Listen::Unix(path));
    }
    let addr = value.parse::<SocketAddr>().with_context(|| {
        format!("--listen {value:?} is not HOST:PORT (e.g. 127.0.0.1:60001) or unix:/path.sock")
    })?;
    Ok(Listen::Tcp(addr))
}

/// Parses a duration given as seconds (`90`, `1.5`) or humantime (`10s`, `24h`).
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    if let Ok(secs) = value.parse::<f64>() {
        if secs.is_finite() && (0.0..1e12).contains(&secs) {
            return Ok(Duration::from_secs_f64(secs));
        }
        return Err(format!("{value:?} is not a duration in seconds"));
    }
    humantime::parse_duration(value)
        .map_err(|err| format!("{value:?} is not a duration (e.g. 30, 10s, 24h): {err}"))
}

/// Parses a size: bytes (`1048576`) or a number with a unit, binary
/// (`512MiB`, `64KiB`, `2GiB`, also `512M`, `2g`) or decimal (`500MB`);
/// a space before the unit is allowed (`512 MiB`).
pub fn parse_size(value: &str) -> Result<u64, String> {
    let text = value.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let example = "e.g. 1048576, 512MiB, 2GiB, 500MB";
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{value:?} is not a size ({example})"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(format!("{value:?}: unknown unit {unit:?} ({example})")),
    };
    let bytes = number * factor as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("{value:?} is too large"));
    }
    Ok(bytes.round() as u64)
}

fn read_session_key(args: &ServeArgs) -> anyhow::Result<Option<SecretString>> {
    if let Some(path) = &args.session_key_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--session-key-file {}: cannot read it", path.display()))?;
        let key = text.trim_end_matches(['\n', '\r']);
        if key.is_empty() {
            bail!("--session-key-file {}: the file is empty", path.display());
        }
        return Ok(Some(SecretString::from(key.to_owned())));
    }
    for name in ["SESSION_API_KEY", "OH_SESSION_API_KEYS_0"] {
        if let Ok(key) = std::env::var(name) {
            if !key.is_empty() {
                return Ok(Some(SecretString::from(key)));
            }
        }
    }
    Ok(None)
}

fn absolute(flag: &str, path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path)
        .with_context(|| format!("{flag} {}: not a usable path", path.display()))
}

fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("sandboxd");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".local/state/sandboxd");
    }
    PathBuf::from("/var/lib/sandboxd")
}

fn default_work_root(state_dir: &Path) -> PathBuf {
    let workspace = Path::new("/workspace");
    if workspace.is_dir() {
        return workspace.join("runs");
    }
    state_dir.join("work")
}

fn default_agent_server_url() -> anyhow::Result<String> {
    let port = match std::env::var("AGENT_SERVER_PORT") {
        Ok(port) if !port.is_empty() => port
            .parse::<u16>()
            .with_context(|| format!("AGENT_SERVER_PORT {port:?} is not a port number"))?,
        _ => 60000,
    };
    Ok(format!("http://127.0.0.1:{port}"))
}

/// An origin, given as a URL (`https://app.all-hands.dev` or any URL of it).
fn parse_origin(flag: &str, value: &str) -> anyhow::Result<url::Origin> {
    let url = parse_base_url(flag, value)?;
    let url = reqwest::Url::parse(&url)?;
    if url.path() != "/" || url.query().is_some() {
        bail!("{flag} {value:?} must be an origin: scheme://host[:port], with no path");
    }
    Ok(url.origin())
}

fn parse_base_url(flag: &str, value: &str) -> anyhow::Result<String> {
    let url = reqwest::Url::parse(value)
        .with_context(|| format!("{flag} {value:?} is not a URL (e.g. http://127.0.0.1:8000)"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        bail!("{flag} {value:?} must be an http:// or https:// URL with a host");
    }
    Ok(value.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        assert_eq!(
            parse_listen("127.0.0.1:1").unwrap(),
            Listen::Tcp("127.0.0.1:1".parse().unwrap())
        );
        assert_eq!(
            parse_listen("unix:/a.sock").unwrap(),
            Listen::Unix("/a.sock".into())
        );
        assert!(parse_listen("unix:rel.sock").is_err());
        let err = parse_listen("localhost").unwrap_err().to_string();
        assert!(err.contains("--listen"), "{err}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("512 MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5KiB").unwrap(), 1536);
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
