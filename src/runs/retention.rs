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
            loop {
                let a_run_ended = ended.notified();
                let report = registry.prune_once(Utc::now());
                if report.removed == PRUNE_BATCH {
                    tokio::time::sleep(PRUNE_BACKLOG_INTERVAL).await;
                    continue;
                }
                tokio::select! {
                    () = a_run_ended => {}
                    () = tokio::time::sleep(interval) => {}
                }
            }
        });
    }

    /// One pass: removes up to a batch of the ended runs past a limit,
    /// the oldest first. The index of ended runs (`runs::ended`) gives
    /// them without a walk: a pass after each run's end costs the runs it
    /// removes.
    pub fn prune_once(&self, now: DateTime<Utc>) -> PruneReport {
        let retention = self.config().retention;
        let ended = &self.context().ended_runs;
        let over_count = retention
            .max_runs
            .map_or(0, |max| ended.len().saturating_sub(max));
        let cutoff = retention.max_age.and_then(|age| {
            let age = chrono::Duration::from_std(age).ok()?;
            now.checked_sub_signed(age)
        });
        let (due, total) = ended.due(over_count, cutoff, PRUNE_BATCH);
        let mut report = PruneReport {
            left: total - due.len(),
            ..PruneReport::default()
        };
        for run_id in &due {
            if self.prune_run(run_id) {
                report.removed += 1;
            } else {
                report.left += 1;
            }
        }
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
