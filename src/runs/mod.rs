//! Runs: the registry of every run, its lifecycle and its durable record.
//!
//! A run is accepted by [`Registry::create`], which checks the request,
//! resolves secrets, writes the record and hands the run to its supervisor
//! task ([`supervisor`]). The supervisor starts a shim ([`shim`]) that owns
//! the run's processes and output, and is the only writer of the run's
//! state from then on; handlers talk to it through [`Control`] messages.

pub mod env;
pub mod logs;
pub mod record;
pub mod shim;
mod spawn;
mod supervisor;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use nix::sys::signal::Signal;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{mpsc, watch};

use crate::callbacks::Outbox;
use crate::config::Config;
use crate::durable;
use crate::metrics::Metrics;
use crate::secrets::mask::Masker;
use crate::secrets::{Resolver, SecretError, SecretMap};
use record::{CallbackTarget, RunRecord, RunReport, RunState, StopReason};

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
    /// The request is wrong.
    #[error("{0}")]
    Invalid(String),
    /// A sensitive name in `env` was not allowed.
    #[error("env sets sensitive variable(s) {0}; list them in allow_sensitive_env to pass them on purpose")]
    SensitiveEnv(String),
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
    pub record_sync: durable::Sync,
}

/// A message to a run's supervisor.
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
}

/// Live output counters and whether the run has ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes in stdout.log.
    pub stdout_bytes: u64,
    /// Bytes in stderr.log.
    pub stderr_bytes: u64,
    /// The terminal state is recorded.
    pub ended: bool,
}

/// A copy of one run's state at one moment.
#[derive(Debug, Clone)]
pub struct RunSnapshot {
    /// The record.
    pub record: RunRecord,
    /// Live output counters.
    pub progress: Progress,
}

struct RunSlot {
    record: RunRecord,
    control: Option<mpsc::UnboundedSender<Control>>,
    progress: watch::Sender<Progress>,
    secrets: SecretMap,
    masker: Masker,
    /// How durably the run's records are written (see [`NewRun::record_sync`]).
    sync: durable::Sync,
    /// Held while the run's record is written: writes take turns.
    writing: Arc<Mutex<()>>,
}

/// Tells whether a bundle upload for a run id is under way.
pub type UploadProbe = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Every run. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    url: String,
    outbox: Outbox,
    metrics: Metrics,
    resolver: Resolver,
    runs: Mutex<HashMap<String, RunSlot>>,
    /// Run ids by the SHA-256 of their token: a lookup compares digests,
    /// so its timing says nothing about how much of a token was guessed.
    tokens: Mutex<HashMap<[u8; 32], String>>,
    shutting_down: AtomicBool,
    ended: tokio::sync::Notify,
    /// Runs whose last record write failed (a full state dir): their
    /// records are written again from memory until the disk takes them.
    unsaved: Mutex<HashSet<String>>,
    /// Bundle uploads under way: a run is not started while its bundle is
    /// being put in place. Asked under the run map's lock, so an upload
    /// that checks for a started run afterwards (it asks the map) sees the
    /// run, and one that began first refuses the run.
    uploading: UploadProbe,
}

impl Registry {
    /// An empty registry; call [`Registry::restore`] next. `uploading`
    /// tells which runs have a bundle upload under way.
    pub fn new(
        config: Arc<Config>,
        url: String,
        outbox: Outbox,
        metrics: Metrics,
        http: reqwest::Client,
        uploading: UploadProbe,
    ) -> Registry {
        let resolver = Resolver::new(config.clone(), http);
        crate::telemetry::mask_in_logs("sandboxd", &daemon_credentials(&config));
        Registry {
            inner: Arc::new(Inner {
                config,
                url,
                outbox,
                metrics,
                resolver,
                runs: Mutex::default(),
                tokens: Mutex::default(),
                shutting_down: AtomicBool::new(false),
                ended: tokio::sync::Notify::new(),
                unsaved: Mutex::default(),
                uploading,
            }),
        }
    }

    /// The daemon's configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The secret resolver.
    pub fn resolver(&self) -> &Resolver {
        &self.inner.resolver
    }

    /// A run's state dir.
    pub fn run_dir(&self, run_id: &str) -> PathBuf {
        self.inner.config.state_dir.join("runs").join(run_id)
    }

    /// A run's default work dir.
    pub fn work_dir(&self, run_id: &str) -> PathBuf {
        self.inner.config.work_root.join(run_id)
    }

    /// Accepts a run. Returns its snapshot and whether it is new (false:
    /// an identical request for an existing run).
    pub async fn create(&self, new: NewRun) -> Result<(RunSnapshot, bool), RunError> {
        if self.inner.shutting_down.load(Ordering::SeqCst) {
            return Err(RunError::ShuttingDown);
        }
        self.check_env(&new)?;
        let run_id = new.run_id.clone();
        if let Some(existing) = self.reserve(&new)? {
            return Ok((existing, false));
        }
        match self.prepare_and_start(new).await {
            Ok(snapshot) => Ok((snapshot, true)),
            Err(err) => {
                self.lock_runs().remove(&run_id);
                Err(err)
            }
        }
    }

    fn check_env(&self, new: &NewRun) -> Result<(), RunError> {
        check_env(new, &self.inner.config)
    }

    /// Claims the id in memory (or finds the identical run). The slot is
    /// `starting` with no control channel until the supervisor takes over.
    fn reserve(&self, new: &NewRun) -> Result<Option<RunSnapshot>, RunError> {
        let mut runs = self.lock_runs();
        if let Some(slot) = runs.get(&new.run_id) {
            if slot.record.fingerprint == new.fingerprint {
                return Ok(Some(snapshot_of(slot)));
            }
            return Err(RunError::Exists(new.run_id.clone()));
        }
        if (self.inner.uploading)(&new.run_id) {
            return Err(RunError::UploadInProgress(new.run_id.clone()));
        }
        let running = runs
            .values()
            .filter(|s| !s.record.state.is_terminal())
            .count();
        if running >= self.inner.config.max_running {
            return Err(RunError::TooManyRunning {
                limit: self.inner.config.max_running,
            });
        }
        let default_cwd = new.cwd.is_none();
        let cwd = new
            .cwd
            .clone()
            .unwrap_or_else(|| self.work_dir(&new.run_id));
        let record = RunRecord {
            version: record::RECORD_VERSION,
            run_id: new.run_id.clone(),
            state: RunState::Starting,
            command: new.argv.clone(),
            cwd,
            default_cwd,
            fingerprint: new.fingerprint.clone(),
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            pid: None,
            exit_code: None,
            signal: None,
            error: None,
            timeout_s: new.timeout.as_secs_f64(),
            shim: None,
            token: new_token(),
            callback: new.callback.clone(),
            report: RunReport::default(),
            stop_reason: None,
            stdout_bytes: 0,
            stderr_bytes: 0,
        };
        let slot = RunSlot {
            record,
            control: None,
            progress: watch::Sender::new(Progress::default()),
            secrets: new.secrets.clone(),
            masker: Masker::new(std::iter::empty::<&[u8]>()),
            sync: new.record_sync,
            writing: Arc::default(),
        };
        runs.insert(new.run_id.clone(), slot);
        Ok(None)
    }

    async fn prepare_and_start(&self, new: NewRun) -> Result<RunSnapshot, RunError> {
        let resolved = self.inner.resolver.resolve_all(&new.secrets).await?;
        let run_id = new.run_id.clone();
        let (record, token) = {
            let runs = self.lock_runs();
            let slot = runs
                .get(&run_id)
                .ok_or_else(|| RunError::NotFound(run_id.clone()))?;
            (slot.record.clone(), slot.record.token.clone())
        };
        let run_dir = self.run_dir(&run_id);
        // Write-ahead: the record exists before any process does. A run
        // refused here (a full or broken state dir) leaves nothing behind.
        let new_work_dir = record.default_cwd && !record.cwd.exists();
        let prepared = prepare_dirs(&record, &run_dir, new.record_sync);
        if let Err((action, path, err)) = prepared {
            let _ = remove_dir(&run_dir);
            if new_work_dir {
                let _ = std::fs::remove_dir(&record.cwd);
            }
            return Err(RunError::io(&run_id, action, &path, err));
        }
        let credentials = daemon_credentials(&self.inner.config);
        let secret_values = resolved.iter().map(|(_, v)| v).chain(&credentials);
        let masker = Masker::new(secret_values.clone().map(|v| v.expose_secret().as_bytes()));
        // Plain copies for the shim; ShimSpec zeroizes them when dropped.
        let mask_values: Vec<String> = secret_values
            .map(|v| v.expose_secret().to_owned())
            .collect();
        let child_env = self.child_env(&new, &resolved, &token);
        let spec = shim::ShimSpec {
            run_dir: run_dir.clone(),
            argv: record.command.clone(),
            cwd: record.cwd.clone(),
            env: child_env,
            setup: new.setup,
            timeout_ms: new.timeout.as_millis().min(u64::MAX as u128) as u64,
            kill_grace_ms: self.inner.config.kill_grace.as_millis() as u64,
            oom_score_adj: self.inner.config.child_oom_score_adj,
            mask: mask_values,
            durable: new.record_sync == durable::Sync::Flush || new.callback.is_some(),
        };
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        {
            let mut runs = self.lock_runs();
            let slot = runs
                .get_mut(&run_id)
                .ok_or_else(|| RunError::NotFound(run_id.clone()))?;
            slot.control = Some(control_tx);
            slot.masker = masker;
        }
        self.lock_tokens()
            .insert(token_digest(&token), run_id.clone());
        crate::telemetry::mask_in_logs(&run_id, resolved.iter().map(|(_, v)| v));
        self.inner.metrics.run_started();
        let shim = spawn::spawn_shim(&self.inner.config.shim_exe, &run_dir, &spec).await;
        if let Ok(shim) = &shim {
            // In the record before the run is acknowledged: a daemon
            // restarted after a crash finds the shim and re-attaches.
            let identity = shim.identity;
            self.update(&run_id, durable::Sync::NoFlush, |record| {
                record.shim = Some(identity)
            });
        }
        drop(spec);
        drop(resolved);
        tokio::spawn(supervisor::supervise_new(
            self.clone(),
            run_id.clone(),
            shim,
            control_rx,
        ));
        self.snapshot(&run_id)
    }

    fn env_policy(&self) -> env::EnvPolicy {
        env_policy(&self.inner.config)
    }

    /// A masker of the daemon's own credentials only: for runs whose
    /// secrets are gone (ended, or restored after a restart).
    fn credentials_masker(&self) -> Masker {
        let credentials = daemon_credentials(&self.inner.config);
        Masker::new(credentials.iter().map(|v| v.expose_secret().as_bytes()))
    }

    fn child_env(
        &self,
        new: &NewRun,
        secrets: &[(String, SecretString)],
        token: &str,
    ) -> Vec<(String, String)> {
        let key = self
            .inner
            .config
            .session_key
            .as_ref()
            .map(|k| k.expose_secret());
        let mut child = env::base_env(std::env::vars(), new.inherit_env, &self.env_policy(), key);
        child.extend(new.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        for (name, value) in secrets {
            let value = value.expose_secret().to_owned();
            if let Some(mut replaced) = child.insert(name.clone(), value) {
                zeroize::Zeroize::zeroize(&mut replaced);
            }
        }
        child.insert("SANDBOXD_RUN_ID".to_owned(), new.run_id.clone());
        child.insert("SANDBOXD_URL".to_owned(), self.inner.url.clone());
        child.insert("SANDBOXD_RUN_TOKEN".to_owned(), token.to_owned());
        child.into_iter().collect()
    }

    /// One run.
    pub fn snapshot(&self, run_id: &str) -> Result<RunSnapshot, RunError> {
        let runs = self.lock_runs();
        runs.get(run_id)
            .map(snapshot_of)
            .ok_or_else(|| RunError::NotFound(run_id.to_owned()))
    }

    /// Every run, optionally only those in `state`, oldest first.
    pub fn list(&self, state: Option<RunState>) -> Vec<RunSnapshot> {
        let runs = self.lock_runs();
        let mut list: Vec<RunSnapshot> = runs
            .values()
            .filter(|s| state.is_none_or(|st| s.record.state == st))
            .map(snapshot_of)
            .collect();
        list.sort_by(|a, b| {
            a.record
                .created_at
                .cmp(&b.record.created_at)
                .then(a.record.run_id.cmp(&b.record.run_id))
        });
        list
    }

    /// Runs per state.
    pub fn counts(&self) -> Vec<(RunState, u64)> {
        let runs = self.lock_runs();
        RunState::ALL
            .iter()
            .map(|state| {
                (
                    *state,
                    runs.values().filter(|s| s.record.state == *state).count() as u64,
                )
            })
            .collect()
    }

    /// Watches a run's output counters and end.
    pub fn progress(&self, run_id: &str) -> Result<watch::Receiver<Progress>, RunError> {
        let runs = self.lock_runs();
        let slot = runs
            .get(run_id)
            .ok_or_else(|| RunError::NotFound(run_id.to_owned()))?;
        Ok(slot.progress.subscribe())
    }

    /// Waits until the run has ended; returns its final snapshot.
    pub async fn wait_ended(&self, run_id: &str) -> Result<RunSnapshot, RunError> {
        let mut progress = self.progress(run_id)?;
        let _ = progress.wait_for(|p| p.ended).await;
        self.snapshot(run_id)
    }

    /// Asks a running run to stop: SIGTERM, SIGKILL after `grace`.
    pub fn cancel(&self, run_id: &str, grace: Duration) -> Result<RunSnapshot, RunError> {
        self.send(
            run_id,
            Control::Stop {
                reason: StopReason::Cancel,
                grace,
            },
        )?;
        self.snapshot(run_id)
    }

    /// Sends a signal to a running run's process group.
    pub fn signal(&self, run_id: &str, signal: Signal) -> Result<RunSnapshot, RunError> {
        self.send(run_id, Control::Signal(signal))?;
        self.snapshot(run_id)
    }

    fn send(&self, run_id: &str, control: Control) -> Result<(), RunError> {
        let runs = self.lock_runs();
        let slot = runs
            .get(run_id)
            .ok_or_else(|| RunError::NotFound(run_id.to_owned()))?;
        if slot.record.state.is_terminal() {
            return Err(RunError::Ended(run_id.to_owned()));
        }
        let Some(tx) = &slot.control else {
            return Err(RunError::Invalid(format!(
                "run {run_id:?} is still starting; retry in a moment"
            )));
        };
        tx.send(control)
            .map_err(|_| RunError::Ended(run_id.to_owned()))
    }

    /// Stores values an SDK script reported; persisted for the callback.
    pub fn report(&self, run_id: &str, report: RunReport) -> Result<RunSnapshot, RunError> {
        {
            let mut runs = self.lock_runs();
            let slot = runs
                .get_mut(run_id)
                .ok_or_else(|| RunError::NotFound(run_id.to_owned()))?;
            if slot.record.state.is_terminal() {
                return Err(RunError::Ended(run_id.to_owned()));
            }
            if report.conversation_id.is_some() {
                slot.record.report.conversation_id = report.conversation_id;
            }
            if report.cost.is_some() {
                slot.record.report.cost = report.cost;
            }
        }
        self.save_record(run_id, durable::Sync::Flush)
            .map_err(|e| RunError::io(run_id, "writing the record of", &self.run_dir(run_id), e))?;
        self.snapshot(run_id)
    }

    /// Removes an ended run's record, logs and default work dir.
    pub fn delete(&self, run_id: &str) -> Result<(), RunError> {
        let slot = {
            let mut runs = self.lock_runs();
            let slot = runs
                .get(run_id)
                .ok_or_else(|| RunError::NotFound(run_id.to_owned()))?;
            if !slot.record.state.is_terminal() {
                return Err(RunError::StillRunning(run_id.to_owned()));
            }
            runs.remove(run_id).expect("checked above")
        };
        self.lock_tokens().remove(&token_digest(&slot.record.token));
        self.inner.outbox.forget(run_id);
        let run_dir = self.run_dir(run_id);
        remove_dir(&run_dir).map_err(|e| RunError::io(run_id, "removing", &run_dir, e))?;
        if slot.record.default_cwd {
            let work = self.work_dir(run_id);
            remove_dir(&work).map_err(|e| RunError::io(run_id, "removing", &work, e))?;
        }
        let state_dir = &self.inner.config.state_dir;
        crate::upload::forget_bundle(state_dir, run_id)
            .map_err(|e| RunError::io(run_id, "removing the bundle record of", state_dir, e))?;
        Ok(())
    }

    /// The run a token belongs to, and whether that run is still going.
    pub fn token_owner(&self, token: &str) -> Option<(String, bool)> {
        let run_id = self.lock_tokens().get(&token_digest(token)).cloned()?;
        let running = self
            .lock_runs()
            .get(&run_id)
            .is_some_and(|s| !s.record.state.is_terminal());
        Some((run_id, running))
    }

    /// The secret sources a run was given.
    pub fn secrets_of(&self, run_id: &str) -> Result<SecretMap, RunError> {
        let runs = self.lock_runs();
        let slot = runs
            .get(run_id)
            .ok_or_else(|| RunError::NotFound(run_id.to_owned()))?;
        Ok(slot.secrets.clone())
    }

    /// Whether a run exists and has started (or ended).
    pub fn has_started(&self, run_id: &str) -> bool {
        self.lock_runs().get(run_id).is_some()
    }

    /// Stops every run by `deadline` (SIGTERM now, SIGKILL at the deadline)
    /// and waits for their ends to be recorded. New runs are refused from
    /// now on.
    pub async fn shutdown(&self, deadline: Instant) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        // Past the deadline, SIGKILL has been sent; allow a moment to record.
        let hard_deadline = tokio::time::Instant::from_std(deadline + Duration::from_secs(2));
        let mut stopped = std::collections::HashSet::new();
        loop {
            let notified = self.inner.ended.notified();
            // A run that was still starting (no control channel yet) when
            // the shutdown began is stopped as soon as it has one. A run is
            // done once its end is fully recorded (outbox included):
            // `progress.ended`.
            let live: Vec<(String, bool)> = {
                let runs = self.lock_runs();
                runs.values()
                    .filter(|s| !s.progress.borrow().ended)
                    .map(|s| {
                        let controllable = s.control.is_some() && !s.record.state.is_terminal();
                        (s.record.run_id.clone(), controllable)
                    })
                    .collect()
            };
            if live.is_empty() {
                return;
            }
            let grace = deadline.saturating_duration_since(Instant::now());
            for (run_id, controllable) in &live {
                if *controllable && !stopped.contains(run_id) {
                    let stop = Control::Stop {
                        reason: StopReason::Shutdown,
                        grace,
                    };
                    if self.send(run_id, stop).is_ok() {
                        stopped.insert(run_id.clone());
                    }
                }
            }
            let starting = live.iter().any(|(id, _)| !stopped.contains(id));
            let wake = if starting {
                hard_deadline.min(tokio::time::Instant::now() + Duration::from_millis(20))
            } else {
                hard_deadline
            };
            if tokio::time::timeout_at(wake, notified).await.is_err()
                && tokio::time::Instant::now() >= hard_deadline
            {
                tracing::warn!(
                    left = live.len(),
                    "runs still not ended at the end of the shutdown grace"
                );
                return;
            }
        }
    }

    /// Whether new runs are refused.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    fn lock_runs(&self) -> std::sync::MutexGuard<'_, HashMap<String, RunSlot>> {
        self.inner.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_unsaved(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.inner.unsaved.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], String>> {
        self.inner.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }
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

fn snapshot_of(slot: &RunSlot) -> RunSnapshot {
    let mut progress = *slot.progress.borrow();
    if slot.record.state.is_terminal() {
        progress.stdout_bytes = slot.record.stdout_bytes;
        progress.stderr_bytes = slot.record.stderr_bytes;
    }
    RunSnapshot {
        record: slot.record.clone(),
        progress,
    }
}

/// The key of a run token in the token map.
fn token_digest(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// A fresh per-run token: 32 random bytes, hex.
fn new_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates the run's work dir (when it is the default one) and state dir,
/// and writes its first record.
fn prepare_dirs(
    record: &RunRecord,
    run_dir: &Path,
    sync: durable::Sync,
) -> Result<(), (&'static str, PathBuf, std::io::Error)> {
    if record.default_cwd {
        create_dir(&record.cwd).map_err(|e| ("creating work dir", record.cwd.clone(), e))?;
    }
    create_dir(run_dir).map_err(|e| ("creating run dir", run_dir.to_owned(), e))?;
    record::save(run_dir, record, sync)
        .map_err(|e| ("writing the record of", run_dir.to_owned(), e))
}

fn create_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn remove_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
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
