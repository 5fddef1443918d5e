//! Daemon configuration: the `serve` flags (clap, every flag with an env
//! fallback) and the validated [`Config`] built from them.
//!
//! Nothing outside this module sees [`ServeArgs`]; everything downstream
//! takes a [`Config`], whose fields are already checked and typed.
//!
//! Layout: [`args`] declares the flags, [`parse`] holds their value
//! parsers, [`uid_range`] `--run-uid-range` and its checks; this file has [`Config`], its parts and [`Config::from_args`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use secrecy::{ExposeSecret, SecretString};

pub use crate::runs::shim::{RunAs, ShimExe};

mod args;
mod parse;
mod uid_range;

pub use args::ServeArgs;
use parse::{parse_base_url, parse_origin, parse_user};
pub use parse::{parse_duration, parse_listen, parse_retention_age, parse_size, RetentionAge};
pub use uid_range::UidRange;

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
    /// The user the service runs as (`--service-user`); `None`: sandboxd's.
    pub run_as: Option<RunAs>,
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
    /// More directories `GET /v1/files` may read (besides the upload roots).
    pub read_roots: Vec<PathBuf>,
    /// Bundle limits.
    pub upload_limits: UploadLimits,
    /// Most runs at once.
    pub max_running: usize,
    /// Default run timeout.
    pub default_timeout: Duration,
    /// SIGTERM to SIGKILL on timeout.
    pub kill_grace: Duration,
    /// Idle shims kept ready for new runs.
    pub warm_shims: usize,
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
    /// The executable started as `<exe> shim` for each run: `sandboxd-shim`
    /// beside sandboxd, else sandboxd itself.
    pub shim_exe: ShimExe,
    /// The user runs execute as (`--run-user`); `None`: sandboxd's own.
    pub run_as: Option<RunAs>,
    /// `--run-user` as given, for logs and `/v1/status`.
    pub run_user_name: Option<String>,
    /// `--run-uid-range`: a uid (and gid) of its own for each run.
    pub run_uid_range: Option<UidRange>,
    /// Most open connections at once.
    pub max_connections: usize,
    /// Most open connections from one peer address.
    pub max_connections_per_peer: usize,
    /// The default callback token was given as `--callback-token` (it shows
    /// in `/proc/<pid>/cmdline`): warned about at start-up.
    pub callback_token_from_flag: bool,
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
            absolute_all("--upload-root", &args.upload_roots)?
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
        let callback_token = match &args.callback_token_file {
            Some(path) => Some(read_secret_file("--callback-token-file", path)?),
            None => args.callback_token.clone().filter(|t| !t.is_empty()),
        };
        let callback_token_from_env = std::env::var("OPENHANDS_API_KEY")
            .ok()
            .is_some_and(|v| Some(&v) == callback_token.as_ref());
        let callback_token_from_flag = args.callback_token_file.is_none()
            && callback_token.is_some()
            && !callback_token_from_env;
        let service_as = match &args.service_user {
            Some(spec) if !spec.is_empty() => Some(parse_user("--service-user", spec)?),
            _ => None,
        };
        let run_as = match &args.run_user {
            Some(spec) if !spec.is_empty() => Some(parse_user("--run-user", spec)?),
            _ => None,
        };
        if args.run_uid_range.is_some() && run_as.is_some() {
            bail!("--run-uid-range and --run-user exclude each other: pick one");
        }
        if let Some(range) = args.run_uid_range {
            let daemon_uid = nix::unistd::getuid().as_raw();
            uid_range::check(range, daemon_uid, service_as, args.max_running)?;
        }
        for (flag, value) in [
            ("--max-connections", args.max_connections),
            ("--max-connections-per-peer", args.max_connections_per_peer),
        ] {
            if value == 0 {
                bail!("{flag} must be at least 1");
            }
        }
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
        let own_exe = std::env::current_exe().context("cannot find sandboxd's own executable")?;
        let shim_exe = ShimExe::BesideDaemon(own_exe);
        Ok(Config {
            listen,
            session_key,
            state_dir,
            work_root,
            upload_roots,
            read_roots: absolute_all("--read-root", &args.read_roots)?,
            upload_limits: UploadLimits {
                max_bundle_bytes: args.max_bundle_bytes,
                max_extracted_bytes: args.max_extracted_bytes,
                max_entries: args.max_entries,
            },
            max_running: args.max_running,
            default_timeout: args.default_timeout,
            kill_grace: args.kill_grace,
            warm_shims: args.warm_shims,
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
            agent_server_uid: args.agent_server_uid.or(service_as.map(|user| user.uid)),
            internal_server_url,
            secret_timeout: args.secret_timeout,
            header_timeout: args.header_timeout,
            body_timeout: args.body_timeout,
            shutdown_grace: args.shutdown_grace,
            service: ServiceConfig {
                restart: args.service_restart,
                max_restarts: args.service_max_restarts,
                output: args.service_output,
                run_as: service_as,
            },
            shim_exe,
            run_as,
            run_user_name: args.run_user.clone().filter(|s| !s.is_empty()),
            run_uid_range: args.run_uid_range,
            max_connections: args.max_connections,
            max_connections_per_peer: args.max_connections_per_peer,
            callback_token_from_flag,
        })
    }

    /// The start-up warning for a `--run-uid-range` narrower than the runs
    /// that may hold a uid at once; `None` when wide enough or unset.
    pub fn run_uid_shortfall(&self) -> Option<String> {
        let range = self.run_uid_range?;
        uid_range::shortfall(range, self.max_running, self.retention.max_runs)
    }

    /// The session key as bytes, when one is configured.
    pub fn session_key_bytes(&self) -> Option<&[u8]> {
        self.session_key
            .as_ref()
            .map(|k| k.expose_secret().as_bytes())
    }
}
/// Which ended runs are kept; a run past either limit is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// How many ended runs, at most.
    pub max_runs: Option<usize>,
    /// How long after their end.
    pub max_age: Option<Duration>,
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

/// Reads a one-line secret file (trailing newline ignored).
fn read_secret_file(flag: &str, path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{flag} {}: cannot read it", path.display()))?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        bail!("{flag} {}: the file is empty", path.display());
    }
    Ok(value.to_owned())
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

fn absolute_all(flag: &str, paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    paths.iter().map(|p| absolute(flag, p)).collect()
}

fn default_work_root(state_dir: &Path) -> PathBuf {
    if Path::new("/workspace").is_dir() {
        return PathBuf::from("/workspace/runs");
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
