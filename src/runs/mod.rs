//! Runs: the registry of every run, the start of a run, the task that
//! owns each live run, the classification of its end and its durable
//! record.
//!
//! A run is accepted by [`Registry::create`], which checks the request and
//! reserves the id ([`registry`]), then [`start`] resolves secrets, writes
//! the record, builds the child env and spawns the run's shim ([`shim`]),
//! and hands the run to its [`task`]: the only writer of the run from then
//! on. Handlers talk to it through [`Control`] messages. [`finish`] turns
//! the shim's exit report into the run's end; [`restore`] loads runs after
//! a restart and re-attaches to shims that are still alive; [`input`]
//! reaches a run's stdin through its shim's socket.

mod ended;
pub mod env;
mod finish;
pub mod input;
pub mod logs;
pub mod record;
mod registry;
mod restore;
mod retention;
mod run;
pub mod shim;
mod spawn;
mod start;
mod task;
mod template;
pub mod token;
mod warm;

pub use registry::{ListCursor, ListFilter, Registry, UploadProbe};
pub use retention::PruneReport;
pub use run::{Run, RunEnd, RunState, RunStatus};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use secrecy::SecretString;
use tokio::sync::oneshot;

use crate::callbacks::{CallbackTarget, RunReport};
use crate::config::Config;
use crate::durable;
use crate::secrets::{SecretError, SecretMap};
use record::StopReason;

/// Why a run operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No such run.
    #[error("run {0:?} not found")]
    NotFound(String),
    /// Same id, different request.
    #[error("run {0:?} already exists with a different request; use a new run_id or send the identical body")]
    Exists(String),
    /// The run has ended.
    #[error("run {0:?} has already ended")]
    Ended(String),
    /// A bundle upload for the run is under way.
    #[error("a bundle upload for run {0:?} is in progress; start the run when it has ended")]
    UploadInProgress(String),
    /// The run is still going.
    #[error("run {0:?} is still running; cancel it first")]
    StillRunning(String),
    /// Too many runs at once.
    #[error("{limit} runs are already running (--max-running); retry when one ends")]
    TooManyRunning {
        /// The limit.
        limit: usize,
    },
    /// Every uid of `--run-uid-range` is held by a run not yet removed.
    #[error("every uid of --run-uid-range {first}-{last} is held by a run; delete ended runs or widen the range")]
    NoRunUid {
        /// The range's first uid.
        first: u32,
        /// Its last uid.
        last: u32,
    },
    /// The request is wrong.
    #[error("{0}")]
    Invalid(String),
    /// A sensitive name in `env` was not allowed.
    #[error("env sets sensitive variable(s) {0}; list them in allow_sensitive_env to pass them on purpose")]
    SensitiveEnv(String),
    /// The run takes no input.
    #[error("run {0:?} reads no input; start it with stdin \"pipe\" or \"pty\"")]
    NoInput(String),
    /// Not a signal sandboxd can send.
    #[error("unknown signal {0:?}; use a name like SIGTERM or SIGINT, or a number")]
    BadSignal(String),
    /// Shutting down.
    #[error("sandboxd is shutting down and starts no new runs")]
    ShuttingDown,
    /// The state dir is full.
    #[error("no space left on the device to record run {run_id:?}; free space in the state dir (and work root) and retry")]
    StorageFull {
        /// The run.
        run_id: String,
    },
    /// A secret could not be resolved; nothing was started.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// Disk trouble.
    #[error("i/o error while {action} {path:?}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl RunError {
    fn io(run_id: &str, action: &'static str, path: &Path, source: std::io::Error) -> RunError {
        if durable::is_storage_full(&source) {
            return RunError::StorageFull {
                run_id: run_id.to_owned(),
            };
        }
        RunError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// A validated request to start a run.
#[derive(Debug)]
pub struct NewRun {
    /// The run's id.
    pub run_id: String,
    /// The argv.
    pub argv: Vec<String>,
    /// Working dir; `None` means the run's work dir.
    pub cwd: Option<PathBuf>,
    /// Extra env.
    pub env: BTreeMap<String, String>,
    /// Sensitive names in `env` that are wanted.
    pub allow_sensitive_env: Vec<String>,
    /// Start from the daemon's env.
    pub inherit_env: bool,
    /// Secrets to resolve and inject.
    pub secrets: SecretMap,
    /// Run setup.sh first.
    pub setup: bool,
    /// Wall-clock limit.
    pub timeout: Duration,
    /// Completion callback.
    pub callback: Option<CallbackTarget>,
    /// Fingerprint of the request, for idempotent retries.
    pub fingerprint: String,
    /// How durably the first record is written: an exec-and-wait caller
    /// gets its answer directly, so its record is not flushed before spawn.
    pub record_sync: durable::Durability,
    /// What the command reads: `/dev/null`, a pipe or a terminal.
    pub stdin: shim::StdinMode,
    /// `TERM` for a terminal run.
    pub term: Option<String>,
}

/// A message to a run's task.
#[derive(Debug)]
pub enum Control {
    /// SIGTERM the run, SIGKILL after the grace.
    Stop {
        /// Why.
        reason: StopReason,
        /// Time before SIGKILL.
        grace: Duration,
    },
    /// Send a signal to the run's process group.
    Signal(Signal),
    /// Values resolved for the run after its start: masked in its output
    /// from now on. `done` is told `true` once the shim masks them, `false`
    /// when there is no way to tell the shim (a re-attached run), and is
    /// dropped when the run's task ends (its output is over).
    Mask {
        /// The values.
        values: Vec<SecretString>,
        /// Told whether the shim has them.
        done: oneshot::Sender<bool>,
    },
    /// Values the run's script reported; written durably before `done`.
    Report {
        /// The values.
        report: RunReport,
        /// Told once the record holds them.
        done: oneshot::Sender<Result<(), RunError>>,
    },
    /// A phase the run's script posted; queued for the service (when the
    /// run has a completion callback) before `done`.
    Phase {
        /// The phase's name.
        phase: String,
        /// Told once it is queued.
        done: oneshot::Sender<Result<(), RunError>>,
    },
}

/// Live output counters and whether the run has ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes in stdout.log.
    pub stdout_bytes: u64,
    /// Bytes in stderr.log.
    pub stderr_bytes: u64,
    /// The run has ended: its terminal state is final, and recorded
    /// (a run that promised nothing durable is published just before its
    /// record is written, so its answer does not wait for the file).
    pub ended: bool,
}

/// A copy of one run's state at one moment.
#[derive(Debug, Clone)]
pub struct RunSnapshot {
    /// The run.
    pub run: Run,
    /// Live output counters.
    pub progress: Progress,
}

/// The daemon's own credentials (session key, default callback token),
/// masked in every run's output and in the daemon's logs.
fn daemon_credentials(config: &Config) -> Vec<SecretString> {
    config
        .session_key
        .iter()
        .chain(&config.callback_token)
        .cloned()
        .collect()
}

/// Checks a new run's env and secrets names: valid variable names, and no
/// sensitive name in `env` unless `allow_sensitive_env` lists it. Part of
/// accepting a run; public for the fuzz target `run_spec`.
pub fn check_env(new: &NewRun, config: &Config) -> Result<(), RunError> {
    if let Some(bad) = new.env.keys().find(|name| !env::valid_name(name)) {
        return Err(RunError::Invalid(format!(
            "env name {bad:?} is not a valid variable name"
        )));
    }
    if let Some(bad) = new.secrets.keys().find(|name| !env::valid_name(name)) {
        return Err(RunError::Invalid(format!(
            "secrets name {bad:?} is not a valid variable name"
        )));
    }
    let forbidden = env::forbidden_names(&new.env, &new.allow_sensitive_env, &env_policy(config));
    if !forbidden.is_empty() {
        return Err(RunError::SensitiveEnv(forbidden.join(", ")));
    }
    Ok(())
}

fn env_policy(config: &Config) -> env::EnvPolicy {
    let mut credential_names = Vec::new();
    if config.callback_token_from_env {
        credential_names.push("OPENHANDS_API_KEY".to_owned());
    }
    env::EnvPolicy {
        strip_names: config.strip_env.clone(),
        strip_prefixes: config.strip_env_prefix.clone(),
        credential_names,
    }
}

/// Parses a signal given as `SIGTERM`, `TERM` or a number.
pub fn parse_signal(text: &str) -> Result<Signal, RunError> {
    let bad = || RunError::BadSignal(text.to_owned());
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| bad());
    }
    let upper = text.trim().to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().map_err(|_| bad())
}
