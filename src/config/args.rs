//! `ServeArgs`: the `sandboxd serve` flags as clap declares them, each
//! with its env fallback, default, help heading and value parser.

use std::path::PathBuf;
use std::time::Duration;

use super::parse::{parse_duration, parse_retention_age, parse_size, RetentionAge};
use super::{LogFormat, RestartPolicy, ServiceOutput};

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

    /// More directories `GET /v1/files` may read (the upload roots are
    /// always readable); repeat or comma-separate. `/proc`, `/sys` and
    /// `/dev` are never served.
    #[arg(
        help_heading = "Uploads",
        long = "read-root",
        env = "SANDBOXD_READ_ROOTS",
        value_delimiter = ','
    )]
    pub read_roots: Vec<PathBuf>,

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

    /// Shims made ahead of need and waiting for a run: a new run takes
    /// one instead of starting a process. They are forked by one more
    /// idle shim, the pool's template. 0 starts every shim on demand,
    /// with no template.
    #[arg(
        help_heading = "Runs",
        long,
        env = "SANDBOXD_WARM_SHIMS",
        default_value_t = 1,
        value_name = "COUNT"
    )]
    pub warm_shims: usize,

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

    /// Run every run as this user (`USER[:GROUP]`, names or numbers) when
    /// sandboxd runs as root; its work dir is chowned to it. Without it a
    /// run has sandboxd's uid (see README, "Who can read what").
    #[arg(
        help_heading = "Containment",
        long,
        env = "SANDBOXD_RUN_USER",
        value_name = "USER[:GROUP]"
    )]
    pub run_user: Option<String>,

    /// Give each run a uid (and gid) of its own from this range
    /// (`FIRST-LAST`, e.g. `61184-65519`), held until the run is removed,
    /// when sandboxd runs as root: runs cannot reach each other, and every
    /// process of that uid dies with the run. Excludes --run-user. Refused
    /// at start when it holds uid 0, sandboxd's or --service-user's uid,
    /// or an id /etc/passwd or /etc/group names, or has fewer uids than
    /// --max-running; narrower than --max-running plus --retain-runs, it
    /// is warned about (ended runs hold their uids until removed).
    #[arg(
        help_heading = "Containment",
        long,
        env = "SANDBOXD_RUN_UID_RANGE",
        value_name = "FIRST-LAST",
        value_parser = super::uid_range::parse_uid_range
    )]
    pub run_uid_range: Option<super::uid_range::UidRange>,

    /// Run the supervised service (the agent-server after `--`) as this
    /// user (`USER[:GROUP]`) when sandboxd runs as root, so runs cannot
    /// read its environment (its session key) or signal it. Its uid is
    /// then the default of --agent-server-uid.
    #[arg(
        help_heading = "Containment",
        long,
        env = "SANDBOXD_SERVICE_USER",
        value_name = "USER[:GROUP]"
    )]
    pub service_user: Option<String>,

    /// Most open connections at once; more are closed at once.
    #[arg(
        help_heading = "Containment",
        long,
        env = "SANDBOXD_MAX_CONNECTIONS",
        default_value_t = 512
    )]
    pub max_connections: usize,

    /// Most open connections from one peer address (TCP) at once.
    #[arg(
        help_heading = "Containment",
        long,
        env = "SANDBOXD_MAX_CONNECTIONS_PER_PEER",
        default_value_t = 512
    )]
    pub max_connections_per_peer: usize,

    /// Default bearer token of completion callbacks.
    #[arg(
        help_heading = "Callbacks",
        long,
        env = "OPENHANDS_API_KEY",
        hide_env_values = true
    )]
    pub callback_token: Option<String>,

    /// File holding the default callback token (trailing newline ignored);
    /// preferred to --callback-token, which shows in the process list.
    #[arg(
        help_heading = "Callbacks",
        long,
        env = "SANDBOXD_CALLBACK_TOKEN_FILE",
        conflicts_with = "callback_token"
    )]
    pub callback_token_file: Option<PathBuf>,

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
    /// random time up to min(60 s, this × 2^(n-1)) (full jitter; 10 s
    /// instead of 60 s while no connection can be made): seconds, or with a
    /// unit (500ms, 2s).
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
    #[arg(
        help_heading = "Secrets",
        long,
        env = "SANDBOXD_AGENT_SERVER_UID",
        value_name = "UID"
    )]
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
