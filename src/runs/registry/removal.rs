//! Removing runs from the registry: an ended run deleted through the API,
//! or taken out by retention when nothing protects it.

use std::sync::Arc;

use super::Registry;
use crate::runs::task::RunCell;
use crate::runs::RunError;

impl Registry {
    /// Takes a removed run out of the index of ended runs.
    fn forget_end(&self, cell: &RunCell) {
        cell.read(|run| {
            if let Some(end) = run.end() {
                self.inner
                    .context
                    .ended_runs
                    .remove(&run.run_id, end.finished_at);
            }
        });
    }

    /// Takes an ended run out of the registry unless something protects
    /// it: someone following or waiting on it, or its pending callback.
    pub(in crate::runs) fn take_prunable(&self, run_id: &str) -> Option<Arc<RunCell>> {
        let mut runs = self.lock_runs();
        let slot = runs.get(run_id)?;
        let (ended, has_callback, digest) = slot.cell.read(|run| {
            (
                run.end().is_some(),
                run.callback.is_some(),
                run.token_digest,
            )
        });
        let pending = has_callback && self.inner.context.outbox.status(run_id).state == "pending";
        if !ended || pending || slot.cell.watchers() > 0 {
            return None;
        }
        let slot = runs.remove(run_id)?;
        self.forget_end(&slot.cell);
        self.inner.tokens.remove(digest);
        self.inner.context.unsaved.forget(&run_id.to_owned());
        Some(slot.cell)
    }

    /// Frees the uid of a run taken out by retention, once its work dir
    /// is gone: no later run of that uid finds anything of it.
    pub(in crate::runs) fn free_run_uid(&self, run_uid: Option<u32>) {
        self.inner.uids.free(run_uid);
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
        self.forget_end(&slot.cell);
        let (default_cwd, run_uid) = slot.cell.read(|run| {
            self.inner.tokens.remove(run.token_digest);
            (run.default_cwd, run.run_uid)
        });
        self.inner.context.unsaved.forget(&run_id.to_owned());
        self.inner.context.outbox.forget(run_id);
        let run_dir = self.run_dir(run_id);
        let run_dir = run_dir.path();
        remove_dir(run_dir).map_err(|e| RunError::io(run_id, "removing", run_dir, e))?;
        if default_cwd {
            let work = self.work_dir(run_id);
            remove_dir(&work).map_err(|e| RunError::io(run_id, "removing", &work, e))?;
        }
        let state_dir = &self.inner.config.state_dir;
        crate::upload::forget_bundle(state_dir, run_id)
            .map_err(|e| RunError::io(run_id, "removing the bundle record of", state_dir, e))?;
        self.inner.uids.free(run_uid);
        Ok(())
    }
}

fn remove_dir(dir: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
