//! [`Registry`]: every run by id, run tokens, the `--max-running` limit,
//! snapshots and listings, and the ordered stop of all runs. It changes no
//! run itself: a run's task does ([`super::task`]), reached through
//! [`Control`] messages.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use nix::sys::signal::Signal;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{mpsc, oneshot, watch, Notify};

mod listing;
mod removal;
pub use listing::{ListCursor, ListFilter};
mod shutdown;
mod tokens;
mod uids;

use super::record::StopReason;
use super::run::{Run, RunState, RunStatus};
use super::start::Starter;
use super::task::{RunCell, TaskContext};
use super::token::new_token;
use super::{daemon_credentials, Control, NewRun, Progress, RunError, RunSnapshot};
use crate::callbacks::{Outbox, RunReport};
use crate::config::Config;
use crate::durable;
use crate::metrics::Metrics;
use crate::secrets::mask::Masker;
use crate::secrets::{Resolver, SecretMap};
use crate::state_dir::{RunDir, StateDir};
use crate::telemetry::LogMasks;

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
    state_dir: StateDir,
    starter: Starter,
    runs: Mutex<HashMap<String, RunSlot>>,
    tokens: tokens::RunTokens,
    /// The uids of `--run-uid-range` runs hold.
    uids: uids::RunUids,
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
        log_masks: LogMasks,
    ) -> Registry {
        let resolver = Resolver::new(config.clone(), http);
        let credentials = daemon_credentials(&config);
        log_masks.mask("sandboxd", &credentials);
        let context = TaskContext {
            outbox,
            metrics,
            ended: Arc::new(Notify::new()),
            unsaved: Arc::default(),
            log_masks,
            credentials: Masker::new(credentials.iter().map(|v| v.expose_secret().as_bytes())),
            unended: Arc::default(),
            recording: Arc::default(),
            ended_runs: Arc::default(),
        };
        Registry {
            inner: Arc::new(Inner {
                starter: Starter::new(config.clone(), url, resolver, context.ended.clone()),
                state_dir: StateDir::new(&config.state_dir),
                uids: uids::RunUids::new(config.run_uid_range),
                config,
                runs: Mutex::default(),
                tokens: tokens::RunTokens::default(),
                shutting_down: AtomicBool::new(false),
                uploading,
                context,
            }),
        }
    }

    /// How many warm shims are kept, and how many are ready now.
    pub fn warm_shims(&self) -> (usize, usize) {
        self.inner.starter.warm_shims()
    }

    /// The daemon's configuration.
    pub(super) fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The secret resolver.
    pub fn resolver(&self) -> &Resolver {
        self.inner.starter.resolver()
    }

    /// The dir of every run's state dir.
    pub(super) fn state_dir(&self) -> &StateDir {
        &self.inner.state_dir
    }

    /// A run's state dir.
    pub fn run_dir(&self, run_id: &str) -> RunDir {
        self.inner.state_dir.run(run_id)
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
        let (cell, token) = match self.reserve(&new)? {
            Reserved::Existing(snapshot) => return Ok((*snapshot, false)),
            Reserved::New(cell, token) => (cell, token),
        };
        let run_id = new.run_id.clone();
        let (control, receiver) = mpsc::unbounded_channel();
        let started = self
            .inner
            .starter
            .start(
                new,
                cell.clone(),
                token,
                receiver,
                self.inner.context.clone(),
            )
            .await;
        if let Err(err) = started {
            self.lock_runs().remove(&run_id);
            self.inner.context.unended.fetch_sub(1, Ordering::SeqCst);
            cell.read(|run| {
                self.inner.tokens.remove(run.token_digest);
                self.inner.uids.free(run.run_uid);
            });
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
        // Counted under the run map's lock: two creates cannot both take
        // the last place.
        let unended = &self.inner.context.unended;
        if unended.load(Ordering::SeqCst) >= self.inner.config.max_running {
            return Err(RunError::TooManyRunning {
                limit: self.inner.config.max_running,
            });
        }
        let run_uid = self.inner.uids.take().map_err(|range| RunError::NoRunUid {
            first: range.first,
            last: range.last,
        })?;
        unended.fetch_add(1, Ordering::SeqCst);
        let (token, token_digest) = new_token();
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
            token_digest,
            run_uid,
            callback: new.callback.clone(),
            report: RunReport::default(),
            stop_reason: None,
            status: RunStatus::Starting,
            stdin: new.stdin,
        };
        let cell = Arc::new(RunCell::new(
            run,
            new.secrets.clone(),
            self.run_dir(&new.run_id),
        ));
        // The token works from the start: the run may call back at once.
        self.inner.tokens.insert(token_digest, &new.run_id);
        let slot = RunSlot {
            cell: cell.clone(),
            control: None,
        };
        runs.insert(new.run_id.clone(), slot);
        Ok(Reserved::New(cell, token))
    }

    /// Puts a restored run in the registry; its task, if it has one, is
    /// reached through `control`.
    pub(super) fn insert_restored(
        &self,
        cell: Arc<RunCell>,
        control: Option<mpsc::UnboundedSender<Control>>,
    ) {
        let run_id = cell.read(|run| {
            self.inner.tokens.insert(run.token_digest, &run.run_id);
            self.inner.uids.mark(run.run_uid);
            self.inner.context.count_restored(run);
            run.run_id.clone()
        });
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
                    Some(cell.persist(durable::Durability::Flush))
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

    /// Queues a phase the run's script posted for the automation service.
    pub async fn phase(&self, run_id: &str, phase: String) -> Result<RunSnapshot, RunError> {
        let (done, queued) = oneshot::channel();
        self.send(run_id, Control::Phase { phase, done })?;
        queued
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
        self.inner.context.log_masks.add(run_id, &values);
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

    /// The run a token belongs to, and whether that run is still going.
    pub fn token_owner(&self, token: &str) -> Option<(String, bool)> {
        let run_id = self.inner.tokens.owner(token)?;
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

    fn cell(&self, run_id: &str) -> Result<Arc<RunCell>, RunError> {
        self.lock_runs()
            .get(run_id)
            .map(|slot| slot.cell.clone())
            .ok_or_else(|| RunError::NotFound(run_id.to_owned()))
    }

    fn lock_runs(&self) -> MutexGuard<'_, HashMap<String, RunSlot>> {
        self.inner.runs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What [`Registry::reserve`] found.
enum Reserved {
    /// The identical request was made before.
    Existing(Box<RunSnapshot>),
    /// The id is claimed for this run, whose token is this.
    New(Arc<RunCell>, SecretString),
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
