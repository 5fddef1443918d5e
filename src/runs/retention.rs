//! Retention: ended runs past `--retain-runs` (the oldest first) or
//! `--retain-for` (since their end) are removed whole, in the background,
//! a bounded batch per pass. Never removed: a run that has not ended, one
//! whose callback is still pending, one someone follows or waits on.
//!
//! Removal is crash-safe: the work dir is first renamed into a staging
//! name (removed by the upload module's start-up clean), the bundle record
//! and outbox file are removed, then the run dir is renamed to a
//! `.pruned-` name: the commit point. A restore removes such dirs, so a
//! kill -9 at any step leaves a whole run or none.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Registry;

/// Runs removed per pass at most: a pass never holds the daemon long.
const PRUNE_BATCH: usize = 256;

/// Time between passes when nothing is left over from the last one.
const PRUNE_INTERVAL: Duration = Duration::from_secs(10);

/// Time between passes while a backlog is being worked off.
const PRUNE_BACKLOG_INTERVAL: Duration = Duration::from_millis(50);

/// Prefix of a run dir being removed.
pub(super) const PRUNED_PREFIX: &str = ".pruned-";

/// Prefix of a work dir being removed: the upload module's stale-staging
/// clean at start-up removes it.
const PRUNED_WORK_PREFIX: &str = ".sandboxd-staging-pruned-";

/// What a pruning pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Runs removed.
    pub removed: usize,
    /// Runs past a limit still left (protected, or beyond the batch).
    pub left: usize,
    /// When the oldest ended run still kept passes `--retain-for`; none
    /// without that limit or without an ended run.
    pub next_age_due: Option<DateTime<Utc>>,
}

/// An ended run as retention sees it.
struct Candidate {
    run_id: String,
    finished_at: DateTime<Utc>,
}

impl Registry {
    /// Starts the background pruning loop: a pass at once, then one
    /// whenever a run ends and at least every [`PRUNE_INTERVAL`] (or half
    /// of `--retain-for`, when that is shorter).
    pub(super) fn start_pruning(&self) {
        let retention = self.config().retention;
        if retention.max_runs.is_none() && retention.max_age.is_none() {
            return;
        }
        let interval = retention
            .max_age
            .map_or(PRUNE_INTERVAL, |age| (age / 2).min(PRUNE_INTERVAL))
            .max(PRUNE_BACKLOG_INTERVAL);
        let registry = self.clone();
        let ended = self.context().ended.clone();
        tokio::spawn(async move {
            // What the last pass found: a run's end starts a walk of every
            // run only when a limit may have been passed since.
            let mut last: Option<PruneReport> = None;
            loop {
                let a_run_ended = ended.notified();
                let now = Utc::now();
                if last.is_none_or(|last| registry.prune_may_be_due(now, &last)) {
                    let report = registry.prune_once(now);
                    last = Some(report);
                    if report.removed == PRUNE_BATCH {
                        tokio::time::sleep(PRUNE_BACKLOG_INTERVAL).await;
                        continue;
                    }
                }
                tokio::select! {
                    () = a_run_ended => {}
                    () = tokio::time::sleep(interval) => last = None,
                }
            }
        });
    }

    /// Whether a pass could remove anything, judged without walking the
    /// runs (a pass runs after every run's end; a walk takes the run map's
    /// lock for as long as it takes to read every run): more ended runs
    /// than `--retain-runs`, a run left over by the `last` pass, or the
    /// oldest kept run past `--retain-for`. A run ending now is the
    /// youngest: it is never the first to pass `--retain-for`.
    fn prune_may_be_due(&self, now: DateTime<Utc>, last: &PruneReport) -> bool {
        let retention = self.config().retention;
        let ended = self.ended_count();
        last.left > 0
            || retention.max_runs.is_some_and(|max| ended > max)
            || match last.next_age_due {
                Some(due) => now >= due,
                // No ended run was kept: the one that just ended is due
                // after its own age.
                None => retention.max_age.is_some() && ended > 0,
            }
    }

    /// One pass: removes up to a batch of the ended runs past a limit.
    pub fn prune_once(&self, now: DateTime<Utc>) -> PruneReport {
        let retention = self.config().retention;
        let ended = self.ended_runs();
        let over_count = retention
            .max_runs
            .map_or(0, |max| ended.len().saturating_sub(max));
        let too_old = |finished_at: DateTime<Utc>| {
            retention.max_age.is_some_and(|age| {
                let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
                now.signed_duration_since(finished_at) > age
            })
        };
        let next_age_due = |kept: &mut dyn Iterator<Item = DateTime<Utc>>| {
            let age = chrono::Duration::from_std(retention.max_age?).ok()?;
            kept.min()?.checked_add_signed(age)
        };
        // When nothing is due (the common case), the pass stops before
        // sorting.
        if over_count == 0 && !ended.iter().any(|(_, finished_at)| too_old(*finished_at)) {
            return PruneReport {
                next_age_due: next_age_due(&mut ended.iter().map(|(_, at)| *at)),
                ..PruneReport::default()
            };
        }
        let mut ended: Vec<Candidate> = ended
            .into_iter()
            .map(|(run_id, finished_at)| Candidate {
                run_id,
                finished_at,
            })
            .collect();
        ended.sort_by(|a, b| (a.finished_at, &a.run_id).cmp(&(b.finished_at, &b.run_id)));
        let due: Vec<&Candidate> = ended
            .iter()
            .enumerate()
            .filter(|(index, c)| *index < over_count || too_old(c.finished_at))
            .map(|(_, c)| c)
            .collect();
        let mut report = PruneReport::default();
        let mut removed = std::collections::HashSet::new();
        for candidate in &due {
            if report.removed == PRUNE_BATCH || !self.prune_run(&candidate.run_id) {
                report.left += 1;
                continue;
            }
            removed.insert(candidate.run_id.as_str());
            report.removed += 1;
        }
        report.next_age_due = next_age_due(
            &mut ended
                .iter()
                .filter(|c| !removed.contains(c.run_id.as_str()))
                .map(|c| c.finished_at),
        );
        if report.removed > 0 {
            self.context().metrics.runs_pruned(report.removed as u64);
            tracing::info!(
                removed = report.removed,
                left = report.left,
                "removed ended runs past retention"
            );
        }
        report
    }

    /// Removes one ended run if nothing protects it; false when kept.
    fn prune_run(&self, run_id: &str) -> bool {
        let Some(cell) = self.take_prunable(run_id) else {
            return false;
        };
        let (default_cwd, run_uid) = cell.read(|run| (run.default_cwd, run.run_uid));
        let work_dir = self.work_dir(run_id);
        let run_dir = self.run_dir(run_id);
        let result = (|| {
            if default_cwd {
                let trash = work_dir.with_file_name(format!("{PRUNED_WORK_PREFIX}{run_id}"));
                rename_if_present(&work_dir, &trash)?;
                remove_tree(&trash)?;
            }
            crate::upload::forget_bundle(&self.config().state_dir, run_id)?;
            self.context().outbox.forget(run_id);
            let run_dir = run_dir.path();
            let trash = run_dir.with_file_name(format!("{PRUNED_PREFIX}{run_id}"));
            rename_if_present(run_dir, &trash)?;
            remove_tree(&trash)
        })();
        match result {
            // Its uid serves later runs only once nothing of it is left.
            Ok(()) => self.free_run_uid(run_uid),
            // The run is out of memory already; what is left on disk is
            // finished at the next start (restore removes `.pruned-` dirs).
            Err(err) => {
                tracing::warn!(run_id, "cannot remove an ended run past retention: {err}")
            }
        }
        true
    }
}

/// Removes the `.pruned-` dirs a crash left in the runs dir.
pub(super) fn remove_pruned_leftovers(runs_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(runs_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(PRUNED_PREFIX)
        {
            tracing::info!(dir = %entry.path().display(), "finishing the removal of a pruned run");
            let _ = remove_tree(&entry.path());
        }
    }
}

fn rename_if_present(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn remove_tree(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
