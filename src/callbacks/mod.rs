//! Completion callbacks: the durable outbox and its delivery to the
//! automation service.
//!
//! When a run with a `callback` ends, [`Outbox::enqueue`] builds the
//! payload ([`payload`]), puts it in `<state-dir>/outbox/<run_id>.json`
//! ([`store`]), starts the first attempt ([`deliver`]) and flushes the file
//! to disk while that attempt is on its way; the run's final record is
//! written only after that flush, so no crash or power loss can leave an
//! ended run without its callback. The delivery loop ([`worker`]) retries
//! what may succeed later and resumes pending callbacks after a restart.
//! The file keeps the result after delivery, so status survives restarts;
//! it goes away with its run ([`Outbox::forget`]).
//!
//! At most one callback per run: a run whose end is recorded twice (a
//! crash between the outbox write and the run's final record) finds its
//! entry already there and is not sent again. Duplicates happen only when
//! a crash falls between a send and its record, and then carry the same
//! `Idempotency-Key`.

pub(crate) mod deliver;
pub(crate) mod payload;
mod phases;
pub(crate) mod store;
mod target;
pub(crate) mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::durable;
use crate::metrics::Metrics;
use store::{DeliveryState, OutboxRecord, Store};
pub(crate) use target::{CallbackTarget, Outcome, RunReport, StoredToken};

/// Attempts in flight at once, over all runs.
const MAX_CONCURRENT_ATTEMPTS: usize = 64;

/// Attempts in flight at once to one origin (scheme, host, port): a
/// receiver that hangs ties up at most this many of the slots above.
const MAX_ATTEMPTS_PER_ORIGIN: usize = 16;

/// Everything the completion payload is built from.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The run's id (the `Idempotency-Key`).
    pub run_id: String,
    /// Where to post, with what token.
    pub target: CallbackTarget,
    /// How the run ended.
    pub outcome: Outcome,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Signal name, when one killed it.
    pub signal: Option<String>,
    /// What went wrong, in words.
    pub error: Option<String>,
    /// Last bytes of stdout, masked.
    pub stdout_tail: String,
    /// Last bytes of stderr, masked.
    pub stderr_tail: String,
    /// What of the output was dropped, in words; `None` when nothing was.
    pub truncated: Option<String>,
    /// Values the run reported.
    pub report: RunReport,
}

/// Delivery state of one run's callback.
#[derive(Debug, Clone, Default)]
pub struct CallbackStatus {
    /// `none`, `pending`, `delivered`, `failed`.
    pub state: &'static str,
    /// Attempts so far.
    pub attempts: u32,
    /// HTTP status of the last attempt.
    pub last_status: Option<u16>,
    /// Error of the last attempt.
    pub last_error: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Handle on the outbox. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

/// What the handle, the delivery loop and the attempts share.
struct Shared {
    config: Arc<Config>,
    client: reqwest::Client,
    metrics: Metrics,
    store: Store,
    entries: Mutex<HashMap<String, Entry>>,
    /// Phase queues of runs, in memory and on disk.
    phases: phases::Phases,
    /// Something became due: a new entry, or a settled attempt.
    wake: Notify,
    /// An attempt settled (for [`Outbox::flush`]).
    changed: Notify,
    /// The outbox stops starting attempts.
    stop: CancellationToken,
    slots: Semaphore,
    /// Attempt slots per origin, present while an attempt holds or awaits one.
    origins: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Callbacks whose last write to the outbox failed (a full state dir):
    /// written again from memory by the delivery loop until the disk
    /// takes them.
    unsaved: durable::Unsaved<String>,
}

/// One callback in memory: its record and when its next attempt is due
/// (`None` while an attempt is in flight, and once it is settled).
struct Entry {
    record: OutboxRecord,
    due: Option<tokio::time::Instant>,
}

impl Shared {
    fn lock_entries(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The attempt slots of a callback URL's origin, and the origin.
    fn origin_slots(&self, url: &str) -> (String, Arc<Semaphore>) {
        let origin = reqwest::Url::parse(url)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|_| url.to_owned());
        let mut origins = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        let slots = origins
            .entry(origin.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(MAX_ATTEMPTS_PER_ORIGIN)))
            .clone();
        (origin, slots)
    }

    /// Forgets an origin's slots once no attempt holds or awaits them.
    fn release_origin(&self, origin: &str) {
        let mut origins = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        if origins
            .get(origin)
            .is_some_and(|slots| Arc::strong_count(slots) == 1)
        {
            origins.remove(origin);
        }
    }

    /// Writes an entry's record (the caller holds the entries lock, so a
    /// concurrent `forget` cannot be undone by a late write); a failure is
    /// remembered for the delivery loop to write it again.
    fn save_entry(&self, record: &OutboxRecord, sync: durable::Durability) -> std::io::Result<()> {
        self.unsaved
            .note(&record.run_id, self.store.save(record, sync))
    }

    /// Writes again every entry whose last write failed; true when some
    /// are still unsaved.
    fn save_unsaved(&self) -> bool {
        let (written, left) = self.unsaved.retry(|run_id| {
            let entries = self.lock_entries();
            let entry = entries.get(run_id)?;
            Some(self.store.save(&entry.record, durable::Durability::Flush))
        });
        for run_id in written {
            tracing::info!(run_id, "the callback's outbox file is written again");
        }
        left
    }
}

impl Outbox {
    /// Opens the outbox in the state dir (pending callbacks resume, settled
    /// ones keep their result) and starts the delivery worker.
    ///
    /// The daemon's shared client is not used: callbacks need one that
    /// never follows redirects (a redirected POST would lose its body or
    /// carry the token elsewhere) and has the callback timeout.
    pub fn start(
        config: Arc<Config>,
        _http: reqwest::Client,
        metrics: Metrics,
    ) -> std::io::Result<Outbox> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.callback_timeout.min(Duration::from_secs(10)))
            .timeout(config.callback_timeout)
            .build()
            .map_err(std::io::Error::other)?;
        let dir = crate::state_dir::StateDir::new(&config.state_dir).outbox();
        let store = Store::new(dir.clone());
        let phases = phases::Phases::load(dir)?;
        let now = tokio::time::Instant::now();
        let entries: HashMap<String, Entry> = store
            .load_all()?
            .into_iter()
            .map(|record| {
                let due = (record.state == DeliveryState::Pending).then_some(now);
                (record.run_id.clone(), Entry { record, due })
            })
            .collect();
        let pending = entries.values().filter(|e| e.due.is_some()).count();
        if pending > 0 {
            tracing::info!(pending, "resuming pending completion callbacks");
        }
        let shared = Arc::new(Shared {
            config,
            client,
            metrics,
            store,
            entries: Mutex::new(entries),
            phases,
            wake: Notify::new(),
            changed: Notify::new(),
            stop: CancellationToken::new(),
            slots: Semaphore::new(MAX_CONCURRENT_ATTEMPTS),
            origins: Mutex::default(),
            unsaved: durable::Unsaved::default(),
        });
        phases::resume(&shared);
        tokio::spawn(worker::run(shared.clone()));
        Ok(Outbox { shared })
    }

    /// Stores a completion durably; it is then delivered in the background.
    /// A run whose callback is already in the outbox keeps that one.
    ///
    /// The file is in place (atomically) before the first attempt starts,
    /// and on disk (fsync) when this returns: the flush runs while the
    /// first attempt is on its way, so it costs the callback no latency,
    /// and it completes before the caller records the run's end.
    pub async fn enqueue(&self, completion: Completion) -> std::io::Result<()> {
        let run_id = completion.run_id.clone();
        if self.shared.lock_entries().contains_key(&run_id) {
            tracing::info!(
                run_id,
                "the run's callback is already in the outbox; not sending another"
            );
            // It may have been written just before a crash, never flushed.
            return self.flush_file(run_id).await;
        }
        let record = OutboxRecord {
            version: store::OUTBOX_VERSION,
            run_id: run_id.clone(),
            url: completion.target.url.clone(),
            token: completion.target.token.clone(),
            payload: payload::build(&completion),
            created_at: Utc::now(),
            state: DeliveryState::Pending,
            attempts: 0,
            last_status: None,
            last_error: None,
            delivered_at: None,
        };
        // Write-ahead: in place before the first attempt. When the disk
        // refuses, the callback is still attempted from memory, and the
        // file written once there is space again.
        // Phases still queued go first; the delivery loop sends the
        // completion once they are through. Checked under the entries
        // lock: a queue that empties meanwhile wakes the loop after the
        // entry is in place.
        let (saved, behind_phases) = {
            let mut entries = self.shared.lock_entries();
            let behind_phases = self.shared.phases.pending(&run_id);
            let saved = self
                .shared
                .save_entry(&record, durable::Durability::NoFlush);
            let due = behind_phases.then(tokio::time::Instant::now);
            entries.insert(run_id.clone(), Entry { record, due });
            (saved, behind_phases)
        };
        if behind_phases {
            // The run's phase task stops its backoff to finish within the
            // completion's wait; the loop looks again in any case.
            self.shared.phases.run_ended(&run_id);
            self.shared.wake.notify_one();
        } else {
            // The first attempt starts right here, not through the
            // worker's loop: one task hop less between a run's end and
            // its callback.
            tokio::spawn(worker::attempt(self.shared.clone(), run_id.clone()));
        }
        saved?;
        self.flush_file(run_id).await
    }

    async fn flush_file(&self, run_id: String) -> std::io::Result<()> {
        let store = self.shared.store.clone();
        tokio::task::spawn_blocking(move || store.flush(&run_id))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Takes a phase for the service's phase URL (beside the callback's
    /// `/complete`): queued at once, in the order of the calls, and on disk
    /// when the returned future completes. Delivered in the background,
    /// before the run's completion.
    pub fn phase(
        &self,
        run_id: &str,
        target: &CallbackTarget,
        phase: impl Into<String>,
    ) -> impl std::future::Future<Output = std::io::Result<()>> + Send + 'static {
        phases::take(&self.shared, run_id, target, phase.into())
    }

    /// The file holding a run's queued phases.
    pub fn phases_file(&self, run_id: &str) -> std::path::PathBuf {
        self.shared.phases.path(run_id)
    }

    /// Delivery state of a run's callback (`pending` until the run ends).
    pub fn status(&self, run_id: &str) -> CallbackStatus {
        let entries = self.shared.lock_entries();
        let Some(entry) = entries.get(run_id) else {
            return CallbackStatus {
                state: DeliveryState::Pending.as_str(),
                ..CallbackStatus::default()
            };
        };
        let record = &entry.record;
        CallbackStatus {
            state: record.state.as_str(),
            attempts: record.attempts,
            last_status: record.last_status,
            last_error: record.last_error.clone(),
            delivered_at: record.delivered_at,
        }
    }

    /// Pending and failed callbacks.
    pub fn counts(&self) -> (u64, u64) {
        let entries = self.shared.lock_entries();
        let count = |state| entries.values().filter(|e| e.record.state == state).count() as u64;
        (count(DeliveryState::Pending), count(DeliveryState::Failed))
    }

    /// Removes a run's entry and file (the run was deleted).
    pub fn forget(&self, run_id: &str) {
        self.shared.phases.forget(run_id);
        let mut entries = self.shared.lock_entries();
        entries.remove(run_id);
        if let Err(err) = self.shared.store.remove(run_id) {
            tracing::warn!(run_id, "cannot remove the callback's outbox file: {err}");
        }
    }

    /// Delivers what is due until `deadline`, then stops the outbox; what
    /// is left stays on disk for the next start.
    pub async fn flush(&self, deadline: std::time::Instant) {
        let until = tokio::time::Instant::from_std(deadline);
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.outstanding(until) == 0 {
                break;
            }
            if tokio::time::timeout_at(until, changed).await.is_err() {
                break;
            }
        }
        self.shared.stop.cancel();
        let (pending, failed) = self.counts();
        if pending > 0 {
            tracing::info!(
                pending,
                failed,
                "callbacks left in the outbox for the next start"
            );
        }
    }

    /// Pending callbacks in flight or due before `until`.
    fn outstanding(&self, until: tokio::time::Instant) -> usize {
        let entries = self.shared.lock_entries();
        entries
            .values()
            .filter(|e| e.record.state == DeliveryState::Pending)
            .filter(|e| e.due.is_none_or(|at| at <= until))
            .count()
    }
}
