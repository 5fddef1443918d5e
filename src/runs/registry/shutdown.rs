//! The ordered stop of every run at shutdown.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Registry;
use crate::runs::record::StopReason;
use crate::runs::Control;

impl Registry {
    /// Stops every run by `deadline` (SIGTERM now, SIGKILL at the deadline)
    /// and waits for their ends to be recorded. New runs are refused from
    /// now on.
    pub async fn shutdown(&self, deadline: Instant) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        self.inner.starter.close_warm_shims();
        // Past the deadline, SIGKILL has been sent; allow a moment to record.
        let hard_deadline = tokio::time::Instant::from_std(deadline + Duration::from_secs(2));
        let mut stopped = HashSet::new();
        loop {
            let notified = self.inner.context.ended.notified();
            // A run that was still starting (no control channel yet) when
            // the shutdown began is stopped as soon as it has one. A run is
            // done once its end is fully recorded: `progress.ended`, and for
            // a run answered before its record, `recording` back to 0.
            let live: Vec<(String, bool)> = self
                .lock_runs()
                .iter()
                .filter(|(_, slot)| !slot.cell.progress_now().ended)
                .map(|(run_id, slot)| (run_id.clone(), slot.control.is_some()))
                .collect();
            let recording = self.inner.context.recording.load(Ordering::SeqCst);
            if live.is_empty() && recording == 0 {
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
}
