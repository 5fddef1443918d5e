//! [`Registry`]: every run by id, run tokens, the `--max-running` limit,
//! snapshots and listings, and the ordered stop of all runs. It changes no
//! run itself: a run's task does ([`super::task`]), reached through
//! [`Control`] messages.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::Utc;
use nix::sys::signal::Signal;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::record::StopReason;
use super::run::{Run, RunState, RunStatus};
use super::start::Starter;
use super::task::{RunCell, TaskContext};
use super::{daemon_credentials, Control, NewRun, Progress, RunError, RunSnapshot};
use crate::callbacks::{Outbox, RunReport};
use crate::config::Config;
use crate::durable;
use crate::metrics::Metrics;
use crate::secrets::mask::Masker;
use crate::secrets::{Resolver, SecretMap};

/// How often records whose write failed are written again.
const UNSAVED_RETRY: Duration = Duration::from_secs(1);

/// Tells whether a bundle upload for a run id is under way.
pub type UploadProbe = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Every run. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

/// One run in the registry.
struct RunSlot {
    cell: Arc<RunCell>,
    /// The run's task; `None` while the run is starting (and for a run
    /// restored as ended).
    control: Option<mpsc::UnboundedSender<Control>>,
}

struct Inner {
    config: Arc<Config>,
    starter: Starter,
    runs: Mutex<HashMap<String, RunSlot>>,
    /// Run ids by the SHA-256 of their token: a lookup compares digests,
    /// so its timing says nothing about how much of a token was guessed.
    tokens: Mutex<HashMap<[u8; 32], String>>,
    shutting_down: AtomicBool,
    /// Bundle uploads under way: a run is not started while its bundle is
    /// being put in place. Asked under the run map's lock, so an upload
    /// that checks for a started run afterwards (it asks the map) sees the
    /// run, and one that began first refuses the run.
    uploading: UploadProbe,
    context: TaskContext,
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
        let credentials = daemon_credentials(&config);
        crate::telemetry::mask_in_logs("sandboxd", &credentials);
        let context = TaskContext {
            outbox,
            metrics,
            ended: Arc::new(Notify::new()),
            unsaved: Arc::default(),
            credentials: Masker::new(credentials.iter().map(|v| v.expose_secret().as_bytes())),
        };
        Registry {
            inner: Arc::new(Inner {
                starter: Starter::new(config.clone(), url, resolver),
                config,
                runs: Mutex::default(),
                tokens: Mutex::default(),
                shutting_down: AtomicBool::new(false),
                uploading,
                context,
            }),
        }
    }

    /// The secret resolver.
    pub fn resolver(&self) -> &Resolver {
        self.inner.starter.resolver()
    }

    /// The dir of every run's state dir.
    pub(super) fn runs_dir(&self) -> PathBuf {
        self.inner.config.state_dir.join("runs")
    }

    /// A run's state dir.
    pub fn run_dir(&self, run_id: &str) -> PathBuf {
        self.runs_dir().join(run_id)
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
        super::check_env(&new, &self.inner.config)?;
        let cell = match self.reserve(&new)? {
            Reserved::Existing(snapshot) => return Ok((*snapshot, false)),
            Reserved::New(cell) => cell,
        };
        let run_id = new.run_id.clone();
        let (control, receiver) = mpsc::unbounded_channel();
        let started = self
            .inner
            .starter
            .start(new, cell.clone(), receiver, self.inner.context.clone())
            .await;
        if let Err(err) = started {
            self.lock_runs().remove(&run_id);
            self.lock_tokens()
                .remove(&cell.read(|run| token_digest(&run.token)));
            return Err(err);
        }
        if let Some(slot) = self.lock_runs().get_mut(&run_id) {
            slot.control = Some(control);
        }
        Ok((snapshot_of(&cell), true))
    }

    /// Claims the id in memory (or finds the identical run). The slot has
    /// no control channel until the run's task takes over.
    fn reserve(&self, new: &NewRun) -> Result<Reserved, RunError> {
        let mut runs = self.lock_runs();
        if let Some(slot) = runs.get(&new.run_id) {
            if slot.cell.read(|run| run.fingerprint == new.fingerprint) {
                return Ok(Reserved::Existing(Box::new(snapshot_of(&slot.cell))));
            }
            return Err(RunError::Exists(new.run_id.clone()));
        }
        if (self.inner.uploading)(&new.run_id) {
            return Err(RunError::UploadInProgress(new.run_id.clone()));
        }
        let running = runs
            .values()
            .filter(|slot| !slot.cell.read(|run| run.state().is_terminal()))
            .count();
        if running >= self.inner.config.max_running {
            return Err(RunError::TooManyRunning {
                limit: self.inner.config.max_running,
            });
        }
        let run = Run {
            run_id: new.run_id.clone(),
            command: new.argv.clone(),
            cwd: new
                .cwd
                .clone()
                .unwrap_or_else(|| self.work_dir(&new.run_id)),
            default_cwd: new.cwd.is_none(),
            fingerprint: new.fingerprint.clone(),
            created_at: Utc::now(),
            started_at: None,
            timeout: new.timeout,
            shim: None,
            token: new_token(),
            callback: new.callback.clone(),
            report: RunReport::default(),
            stop_reason: None,
            status: RunStatus::Starting,
        };
        let cell = Arc::new(RunCell::new(
            run,
            new.secrets.clone(),
            self.run_dir(&new.run_id),
        ));
        // The token works from the start: the run may call back at once.
        let token = cell.read(|run| token_digest(&run.token));
        self.lock_tokens().insert(token, new.run_id.clone());
        let slot = RunSlot {
            cell: cell.clone(),
            control: None,
        };
        runs.insert(new.run_id.clone(), slot);
        Ok(Reserved::New(cell))
    }

    /// Puts a restored run in the registry; its task, if it has one, is
    /// reached through `control`.
    pub(super) fn insert_restored(
        &self,
        cell: Arc<RunCell>,
        control: Option<mpsc::UnboundedSender<Control>>,
    ) {
        let (run_id, token) = cell.read(|run| (run.run_id.clone(), token_digest(&run.token)));
        self.lock_tokens().insert(token, run_id.clone());
        self.lock_runs().insert(run_id, RunSlot { cell, control });
    }

    /// What a run's task works with.
    pub(super) fn context(&self) -> &TaskContext {
        &self.inner.context
    }

    /// Every second, writes again the records whose last write failed.
    pub(super) fn rewrite_unsaved(&self) {
        let registry = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(UNSAVED_RETRY);
            loop {
                tick.tick().await;
                let (written, _) = registry.inner.context.unsaved.retry(|run_id| {
                    let cell = registry.lock_runs().get(run_id)?.cell.clone();
                    Some(cell.persist(durable::Sync::Flush))
                });
                for run_id in written {
                    tracing::info!(run_id, "the run's record is written again");
                }
            }
        });
    }

    /// One run.
    pub fn snapshot(&self, run_id: &str) -> Result<RunSnapshot, RunError> {
        Ok(snapshot_of(&*self.cell(run_id)?))
    }

    /// Every run, optionally only those in `state`, oldest first.
    pub fn list(&self, state: Option<RunState>) -> Vec<RunSnapshot> {
        let cells: Vec<Arc<RunCell>> = self
            .lock_runs()
            .values()
            .map(|slot| slot.cell.clone())
            .collect();
        let mut list: Vec<RunSnapshot> = cells
            .iter()
            .filter(|cell| state.is_none_or(|st| cell.read(Run::state) == st))
            .map(|cell| snapshot_of(cell))
            .collect();
        list.sort_by(|a, b| {
            (a.run.created_at, &a.run.run_id).cmp(&(b.run.created_at, &b.run.run_id))
        });
        list
    }

    /// Runs per state.
    pub fn counts(&self) -> Vec<(RunState, u64)> {
        let mut counts: HashMap<RunState, u64> = HashMap::new();
        for slot in self.lock_runs().values() {
            *counts.entry(slot.cell.read(Run::state)).or_default() += 1;
        }
        RunState::ALL
            .iter()
            .map(|state| (*state, counts.get(state).copied().unwrap_or(0)))
            .collect()
    }

    /// Watches a run's output counters and end.
    pub fn progress(&self, run_id: &str) -> Result<watch::Receiver<Progress>, RunError> {
        Ok(self.cell(run_id)?.watch_progress())
    }

    /// Waits until the run has ended; returns its final snapshot.
    pub async fn wait_ended(&self, run_id: &str) -> Result<RunSnapshot, RunError> {
        let mut progress = self.progress(run_id)?;
        let _ = progress.wait_for(|p| p.ended).await;
        self.snapshot(run_id)
    }

    /// Asks a running run to stop: SIGTERM, SIGKILL after `grace`.
    pub fn cancel(&self, run_id: &str, grace: Duration) -> Result<RunSnapshot, RunError> {
        let reason = StopReason::Cancel;
        self.send(run_id, Control::Stop { reason, grace })?;
        self.snapshot(run_id)
    }

    /// Sends a signal to a running run's process group.
    pub fn signal(&self, run_id: &str, signal: Signal) -> Result<RunSnapshot, RunError> {
        self.send(run_id, Control::Signal(signal))?;
        self.snapshot(run_id)
    }

    /// Stores values an SDK script reported: the run's task writes them to
    /// its record (durably) for the completion.
    pub async fn report(&self, run_id: &str, report: RunReport) -> Result<RunSnapshot, RunError> {
        let (done, written) = oneshot::channel();
        self.send(run_id, Control::Report { report, done })?;
        // A task that ended before it took the report drops `done`.
        written
            .await
            .map_err(|_| RunError::Ended(run_id.to_owned()))??;
        self.snapshot(run_id)
    }

    /// Adds values resolved during a run to the masker of its output, and
    /// returns once the run's shim masks them (or the run has no output
    /// left to mask). `false` when the shim did not confirm within
    /// `patience`: the values must not be handed out then.
    pub async fn mask_in_run(
        &self,
        run_id: &str,
        values: Vec<SecretString>,
        patience: Duration,
    ) -> bool {
        if values.is_empty() {
            return true;
        }
        let (done, masked) = oneshot::channel();
        match self.send(run_id, Control::Mask { values, done }) {
            Ok(()) => {}
            // Ended (or gone): its output is complete.
            Err(RunError::Ended(_) | RunError::NotFound(_)) => return true,
            Err(_) => return false,
        }
        // A dropped `done` means the run's task has finished: its output
        // is over.
        match tokio::time::timeout(patience, masked).await {
            Ok(Ok(masked)) => masked,
            Ok(Err(_)) => true,
            Err(_) => false,
        }
    }

    fn send(&self, run_id: &str, control: Control) -> Result<(), RunError> {
        let runs = self.lock_runs();
        let slot = runs
            .get(run_id)
            .ok_or_else(|| RunError::NotFound(run_id.to_owned()))?;
        if slot.cell.read(|run| run.state().is_terminal()) {
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

    /// Removes an ended run's record, logs and default work dir.
    pub fn delete(&self, run_id: &str) -> Result<(), RunError> {
        let slot = {
            let mut runs = self.lock_runs();
            let slot = runs
                .get(run_id)
                .ok_or_else(|| RunError::NotFound(run_id.to_owned()))?;
            if !slot.cell.read(|run| run.state().is_terminal()) {
                return Err(RunError::StillRunning(run_id.to_owned()));
            }
            runs.remove(run_id).expect("checked above")
        };
        let (token, default_cwd) = slot
            .cell
            .read(|run| (token_digest(&run.token), run.default_cwd));
        self.lock_tokens().remove(&token);
        self.inner.context.unsaved.forget(&run_id.to_owned());
        self.inner.context.outbox.forget(run_id);
        let run_dir = self.run_dir(run_id);
        remove_dir(&run_dir).map_err(|e| RunError::io(run_id, "removing", &run_dir, e))?;
        if default_cwd {
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
        let digest = token_digest(&SecretString::from(token));
        let run_id = self.lock_tokens().get(&digest).cloned()?;
        let running = self
            .lock_runs()
            .get(&run_id)
            .is_some_and(|slot| !slot.cell.read(|run| run.state().is_terminal()));
        Some((run_id, running))
    }

    /// The secret sources a run was given (none once it has ended).
    pub fn secrets_of(&self, run_id: &str) -> Result<SecretMap, RunError> {
        Ok(self.cell(run_id)?.secrets())
    }

    /// Whether a run exists and has started (or ended).
    pub fn has_started(&self, run_id: &str) -> bool {
        self.lock_runs().contains_key(run_id)
    }

    /// Stops every run by `deadline` (SIGTERM now, SIGKILL at the deadline)
    /// and waits for their ends to be recorded. New runs are refused from
    /// now on.
    pub async fn shutdown(&self, deadline: Instant) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        // Past the deadline, SIGKILL has been sent; allow a moment to record.
        let hard_deadline = tokio::time::Instant::from_std(deadline + Duration::from_secs(2));
        let mut stopped = HashSet::new();
        loop {
            let notified = self.inner.context.ended.notified();
            // A run that was still starting (no control channel yet) when
            // the shutdown began is stopped as soon as it has one. A run is
            // done once its end is fully recorded: `progress.ended`.
            let live: Vec<(String, bool)> = self
                .lock_runs()
                .iter()
                .filter(|(_, slot)| !slot.cell.progress_now().ended)
                .map(|(run_id, slot)| (run_id.clone(), slot.control.is_some()))
                .collect();
            if live.is_empty() {
                return;
            }
            let grace = deadline.saturating_duration_since(Instant::now());
            for (run_id, controllable) in &live {
                if *controllable && !stopped.contains(run_id) {
                    let reason = StopReason::Shutdown;
                    if self.send(run_id, Control::Stop { reason, grace }).is_ok() {
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

    fn cell(&self, run_id: &str) -> Result<Arc<RunCell>, RunError> {
        self.lock_runs()
            .get(run_id)
            .map(|slot| slot.cell.clone())
            .ok_or_else(|| RunError::NotFound(run_id.to_owned()))
    }

    fn lock_runs(&self) -> MutexGuard<'_, HashMap<String, RunSlot>> {
        self.inner.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_tokens(&self) -> MutexGuard<'_, HashMap<[u8; 32], String>> {
        self.inner.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What [`Registry::reserve`] found.
enum Reserved {
    /// The identical request was made before.
    Existing(Box<RunSnapshot>),
    /// The id is claimed for this run.
    New(Arc<RunCell>),
}

fn snapshot_of(cell: &RunCell) -> RunSnapshot {
    let run = cell.run();
    let mut progress = cell.progress_now();
    if let Some(end) = run.end() {
        progress.stdout_bytes = end.stdout_bytes;
        progress.stderr_bytes = end.stderr_bytes;
    }
    RunSnapshot { run, progress }
}

/// The key of a run token in the token map.
fn token_digest(token: &SecretString) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.expose_secret().as_bytes()).into()
}

/// A fresh per-run token: 32 random bytes, hex.
fn new_token() -> SecretString {
    use rand::RngCore;
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    SecretString::from(hex)
}

fn remove_dir(dir: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
