//! [`RunCell`]: a run as the registry and the handlers read it. Its
//! changes are visible only to the run's task (the parent module): the
//! compiler keeps every other module from changing a run.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::durable;
use crate::runs::record;
use crate::runs::run::Run;
use crate::runs::Progress;
use crate::secrets::SecretMap;
use crate::state_dir::RunDir;

/// A run as the registry and the handlers see it. Only the run's task
/// changes it.
pub(in crate::runs) struct RunCell {
    run: Mutex<Run>,
    progress: watch::Sender<Progress>,
    /// The run's secret sources, for `names` resolution by its token;
    /// dropped (and zeroized) when the run ends.
    secrets: Mutex<SecretMap>,
    /// Held while the run's record is written: writes take turns, each
    /// writing the latest state.
    writing: Mutex<()>,
    /// Where its record lives.
    run_dir: RunDir,
}

impl RunCell {
    /// A run not yet started by a task.
    pub(in crate::runs) fn new(run: Run, secrets: SecretMap, run_dir: RunDir) -> RunCell {
        let ended = run.end().is_some();
        let progress = match run.end() {
            Some(end) => Progress {
                stdout_bytes: end.stdout_bytes,
                stderr_bytes: end.stderr_bytes,
                ended,
            },
            None => Progress::default(),
        };
        RunCell {
            run: Mutex::new(run),
            progress: watch::Sender::new(progress),
            secrets: Mutex::new(secrets),
            writing: Mutex::default(),
            run_dir,
        }
    }

    /// A copy of the run now.
    pub(in crate::runs) fn run(&self) -> Run {
        self.lock().clone()
    }

    /// Reads the run without copying it.
    pub(in crate::runs) fn read<R>(&self, read: impl FnOnce(&Run) -> R) -> R {
        read(&self.lock())
    }

    /// The run's output counters now.
    pub(in crate::runs) fn progress_now(&self) -> Progress {
        *self.progress.borrow()
    }

    /// Watches the run's output counters and end.
    pub(in crate::runs) fn watch_progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// How many follow the run's output or wait for its end right now.
    pub(in crate::runs) fn watchers(&self) -> usize {
        self.progress.receiver_count()
    }

    /// The run's secret sources (empty once it has ended).
    pub(in crate::runs) fn secrets(&self) -> SecretMap {
        self.secrets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Writes the run's record as it is now. Writes take turns, each
    /// writing the latest state, so the file is never older than a write
    /// that has returned.
    pub(in crate::runs) fn persist(&self, sync: durable::Durability) -> std::io::Result<()> {
        let _turn = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let record = self.lock().to_record();
        record::save(&self.run_dir, &record, sync)
    }

    /// [`Self::persist`], a flushed write on the blocking pool
    /// ([`durable::off_runtime_when_flushed`]).
    pub(super) async fn persist_off_runtime(
        self: Arc<Self>,
        sync: durable::Durability,
    ) -> std::io::Result<()> {
        durable::off_runtime_when_flushed(sync, move || self.persist(sync))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Changes the run (the task only).
    pub(super) fn change(&self, change: impl FnOnce(&mut Run)) {
        change(&mut self.lock());
    }

    /// The sender of the run's output counters (the task only).
    pub(super) fn progress(&self) -> &watch::Sender<Progress> {
        &self.progress
    }

    /// Drops (and so zeroizes) the run's secret sources once it has ended.
    pub(super) fn forget_secrets(&self) {
        *self.secrets.lock().unwrap_or_else(|e| e.into_inner()) = SecretMap::default();
    }

    /// The run's state dir.
    pub(in crate::runs) fn run_dir(&self) -> &RunDir {
        &self.run_dir
    }

    fn lock(&self) -> MutexGuard<'_, Run> {
        self.run.lock().unwrap_or_else(|e| e.into_inner())
    }
}
