//! Phase reports: what a run's script (or sandboxd, at `setup` and
//! `running`) says about its progress, forwarded to the service's
//! `.../runs/{id}/phase` beside the completion URL, durably and in order.
//!
//! A phase is taken into the run's queue in memory and written to
//! `<state-dir>/outbox/<run_id>.phases` (0600, atomic, fsync) before the
//! caller hears it is stored. One task per run posts the queue front to
//! back: each phase is retried with the callbacks' backoff until the
//! service takes it, refuses it for good (a 409 once the run is terminal
//! there counts as taken), or `--callback-max-age` passes. The file then
//! shrinks, and goes when the queue is empty. A restarted daemon resumes
//! every queue it finds.
//!
//! The run's completion waits for its queue: the service takes phases only
//! while the run is running, so a phase that arrived after the completion
//! would be lost. It waits at most [`COMPLETION_WAITS_AT_MOST`] after the
//! run's end: the completion is the promise, phases are progress. The queue is bounded: past [`MAX_PENDING`] undelivered
//! phases the newest replaces the last one waiting. The service keeps only
//! the current phase, so what it ends up showing is the same.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::target::{CallbackTarget, StoredToken};
use super::worker::phase_url;
use super::Shared;
use crate::durable;

/// Current format of a phase file.
const PHASES_VERSION: u32 = 1;

/// Undelivered phases kept per run.
pub(crate) const MAX_PENDING: usize = 64;

/// Longest a run's completion waits, after the run ended, for phases the
/// service does not take: then they are dropped (the completion supersedes
/// them; the service takes no phase after it anyway).
const COMPLETION_WAITS_AT_MOST: Duration = Duration::from_secs(30);

/// Longest one phase report may take.
const PHASE_TIMEOUT: Duration = Duration::from_secs(10);

/// One phase waiting to be posted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PendingPhase {
    /// The phase's name.
    pub phase: String,
    /// When it was taken (the start of its retry window).
    pub posted_at: DateTime<Utc>,
    /// Attempts so far.
    #[serde(default)]
    pub attempts: u32,
}

/// One run's phase queue, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PhaseQueue {
    /// Format version.
    pub version: u32,
    /// sandboxd's run id (the file's name; the completion's key).
    pub run_id: String,
    /// The service's phase URL.
    pub url: String,
    /// Bearer token of the run's callback.
    pub token: Option<StoredToken>,
    /// Phases not yet taken, oldest first.
    pub pending: Vec<PendingPhase>,
    /// Phases replaced by a newer one while the queue was full.
    #[serde(default)]
    pub superseded: u64,
    /// Phases taken since this queue was made (in memory only).
    #[serde(skip)]
    taken: u64,
    /// Of those, how many a flushed write holds (in memory only).
    #[serde(skip)]
    flushed: u64,
    /// Told when the run's completion starts waiting for this queue (in
    /// memory only; a stored permit is not lost when nobody waits yet).
    #[serde(skip)]
    completion_waits: Arc<tokio::sync::Notify>,
}

/// The phase queues of all runs, in memory and on disk.
pub(crate) struct Phases {
    dir: PathBuf,
    queues: Mutex<HashMap<String, PhaseQueue>>,
    /// Serialises the writes of phase files, so the file always ends up
    /// with the queue's latest state. Phases are few per run, so one lock
    /// for all runs costs nothing worth a lock per run.
    writes: Mutex<()>,
}

impl Phases {
    /// Reads the queues left on disk in `dir` (the outbox directory).
    pub(crate) fn load(dir: PathBuf) -> io::Result<Phases> {
        let mut queues = HashMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|ext| ext != "phases") {
                continue;
            }
            let loaded = std::fs::read(&path).and_then(|bytes| {
                serde_json::from_slice::<PhaseQueue>(&bytes).map_err(io::Error::other)
            });
            match loaded {
                Ok(queue) if queue.version == PHASES_VERSION && !queue.pending.is_empty() => {
                    queues.insert(queue.run_id.clone(), queue);
                }
                Ok(_) => {
                    let _ = std::fs::remove_file(&path);
                }
                Err(err) => {
                    tracing::warn!(path = %path.display(), "skipping an unreadable phase file: {err}");
                }
            }
        }
        Ok(Phases {
            dir,
            queues: Mutex::new(queues),
            writes: Mutex::new(()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, PhaseQueue>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs with queued phases (resumed after a restart).
    pub(crate) fn run_ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Whether a run still has phases to post (its completion waits).
    pub(crate) fn pending(&self, run_id: &str) -> bool {
        self.lock().contains_key(run_id)
    }

    pub(crate) fn path(&self, run_id: &str) -> PathBuf {
        self.dir.join(format!("{run_id}.phases"))
    }

    /// Appends a phase; whether the run had no queue (a task must start),
    /// and the phase's number in its queue (for [`Phases::flush_through`]).
    fn push(
        &self,
        run_id: &str,
        target: &CallbackTarget,
        url: String,
        phase: String,
    ) -> (bool, u64) {
        let mut queues = self.lock();
        let fresh = !queues.contains_key(run_id);
        let queue = queues
            .entry(run_id.to_owned())
            .or_insert_with(|| PhaseQueue {
                version: PHASES_VERSION,
                run_id: run_id.to_owned(),
                url,
                token: target.token.clone(),
                pending: Vec::new(),
                superseded: 0,
                taken: 0,
                flushed: 0,
                completion_waits: Arc::default(),
            });
        let entry = PendingPhase {
            phase,
            posted_at: Utc::now(),
            attempts: 0,
        };
        // The front may be in flight; the newest replaces the last waiting.
        if queue.pending.len() >= MAX_PENDING {
            queue.superseded += 1;
            queue.pending.pop();
        }
        queue.pending.push(entry);
        queue.taken += 1;
        (fresh, queue.taken)
    }

    /// Returns once phase number `taken` of the run's queue is on disk
    /// (fsync), or has left the queue. One flush covers every phase taken
    /// before it: a run posting phases back to back gets a flush at a
    /// time, not one each.
    fn flush_through(&self, run_id: &str, taken: u64) -> io::Result<()> {
        let _writing = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        let (bytes, holds) = match self.lock().get(run_id) {
            Some(queue) if queue.flushed < taken => (
                serde_json::to_vec(queue).map_err(io::Error::other)?,
                queue.taken,
            ),
            // Flushed by a later write, or delivered and gone.
            _ => return Ok(()),
        };
        durable::write_atomic(
            &self.path(run_id),
            &bytes,
            0o600,
            durable::Durability::Flush,
        )?;
        if let Some(queue) = self.lock().get_mut(run_id) {
            queue.flushed = queue.flushed.max(holds);
        }
        Ok(())
    }

    /// Writes a run's queue as it is now, or removes its file when it has
    /// none left.
    fn sync_file(&self, run_id: &str, sync: durable::Durability) -> io::Result<()> {
        let _writing = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = match self.lock().get(run_id) {
            Some(queue) => serde_json::to_vec(queue).map_err(io::Error::other)?,
            None => {
                return match std::fs::remove_file(self.path(run_id)) {
                    Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
                    _ => Ok(()),
                }
            }
        };
        durable::write_atomic(&self.path(run_id), &bytes, 0o600, sync)
    }

    /// The run's completion waits for its queue now: its task, if in a
    /// backoff, stops it.
    pub(crate) fn run_ended(&self, run_id: &str) {
        if let Some(queue) = self.lock().get(run_id) {
            queue.completion_waits.notify_one();
        }
    }

    /// Drops a run's queue and file (the run was deleted).
    pub(crate) fn forget(&self, run_id: &str) {
        self.lock().remove(run_id);
        if let Err(err) = self.sync_file(run_id, durable::Durability::NoFlush) {
            tracing::warn!(run_id, "cannot remove the run's phase file: {err}");
        }
    }
}

/// Takes a phase for the service: queued in memory at once (so phases keep
/// the order of the calls), on disk when the returned future completes.
pub(super) fn take(
    shared: &Arc<Shared>,
    run_id: &str,
    target: &CallbackTarget,
    phase: String,
) -> impl std::future::Future<Output = io::Result<()>> + Send + 'static {
    let run_id = run_id.to_owned();
    let url = phase_url(&target.url);
    let shared = shared.clone();
    let pushed = url.map(|url| shared.phases.push(&run_id, target, url, phase));
    if let Some((true, _)) = pushed {
        tokio::spawn(post::post_all(shared.clone(), run_id.clone()));
    }
    async move {
        let Some((_, taken)) = pushed else {
            // Debug: a run may post phases as fast as it likes.
            tracing::debug!(
                run_id,
                "callback.url does not end in /complete; no phase URL beside it, phase not reported"
            );
            return Ok(());
        };
        tokio::task::spawn_blocking(move || shared.phases.flush_through(&run_id, taken))
            .await
            .map_err(io::Error::other)?
    }
}

/// Starts the delivery of every queue found on disk.
pub(super) fn resume(shared: &Arc<Shared>) {
    let run_ids = shared.phases.run_ids();
    if !run_ids.is_empty() {
        tracing::info!(runs = run_ids.len(), "resuming pending phase reports");
    }
    for run_id in run_ids {
        tokio::spawn(post::post_all(shared.clone(), run_id));
    }
}

mod post;

#[cfg(test)]
mod tests;
