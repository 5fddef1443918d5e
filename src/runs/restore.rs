//! Restore after a restart: every run in the state dir is loaded; ended
//! runs as they are, live ones re-attached to their shims (which outlived
//! the last daemon), the rest finished from their exit record or marked
//! `lost`.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::record::{self, RunRecord, ShimIdentity};
use super::run::Run;
use super::task::{read_exit_report, RunCell, RunTask};
use super::Registry;
use crate::durable;
use crate::secrets::SecretMap;
use crate::state_dir::{RunDir, RECORD_FILE};

impl Registry {
    /// Loads every run from the state dir and starts the loop that writes
    /// again the records a full disk refused.
    pub async fn restore(&self) -> std::io::Result<()> {
        let runs_dir = self.state_dir().runs();
        super::retention::remove_pruned_leftovers(&runs_dir);
        let mut restored = 0usize;
        for entry in std::fs::read_dir(&runs_dir)? {
            let dir = entry?.path();
            if !dir.is_dir() {
                continue;
            }
            remove_record_temp_files(&dir);
            let Some(record) = load(&dir) else {
                continue;
            };
            restored += 1;
            self.restore_one(record).await;
        }
        if restored > 0 {
            tracing::info!(runs = restored, "restored runs from the state dir");
        }
        self.rewrite_unsaved();
        self.start_pruning();
        Ok(())
    }

    async fn restore_one(&self, record: RunRecord) {
        let run = Run::from_record(record);
        let run_id = run.run_id.clone();
        let run_dir = self.run_dir(&run_id);
        let ended = run.end().is_some();
        let shim = run.shim;
        let cell = Arc::new(RunCell::new(run, SecretMap::default(), run_dir.clone()));
        if ended {
            self.insert_restored(cell, None);
            return;
        }
        let (control, receiver) = mpsc::unbounded_channel();
        self.insert_restored(cell.clone(), Some(control));
        let context = self.context().clone();
        let masker = context.credentials.clone();
        let task = RunTask::new(cell, receiver, context, masker, durable::Durability::Flush);
        if run_dir.exit_report().exists() {
            task.finish_now(read_exit_report(&run_dir)).await;
            return;
        }
        let alive = shim.filter(ShimIdentity::is_alive);
        match alive {
            Some(identity) => {
                tracing::info!(
                    run_id,
                    shim_pid = identity.pid,
                    "re-attached to a run that outlived the last daemon"
                );
                tokio::spawn(task.follow_reattached(identity));
            }
            None => {
                let reason = "sandboxd restarted and the run's shim was gone without recording how the run ended";
                task.finish_now(Err(reason.to_owned())).await;
            }
        }
    }
}

/// A run dir's record; `None` for a dir to skip. A dir without a record
/// (nor an exit report) was made by a daemon that died before the run's
/// first record: the run was neither acknowledged nor started, and the
/// dir is removed.
fn load(dir: &Path) -> Option<RunRecord> {
    match record::load(&RunDir::new(dir)) {
        Ok(record) => Some(record),
        Err(err)
            if err.kind() == std::io::ErrorKind::NotFound
                && !RunDir::new(dir).exit_report().exists() =>
        {
            tracing::info!(dir = %dir.display(), "removing a run dir without a record");
            let _ = std::fs::remove_dir_all(dir);
            None
        }
        Err(err) => {
            tracing::warn!(dir = %dir.display(), "skipping a run dir without a readable record: {err}");
            None
        }
    }
}

/// Removes the temp files of record writes a crash interrupted (only the
/// daemon writes records, and no other daemon is alive now).
fn remove_record_temp_files(run_dir: &Path) {
    let prefix = format!(".{RECORD_FILE}.tmp-");
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
