//! The end of a run: classified, put in the outbox, recorded, published.

use std::sync::atomic::Ordering;

use super::RunTask;
use crate::callbacks::Completion;
use crate::durable;
use crate::runs::finish::{self, Ending};
use crate::runs::run::{Run, RunStatus};
use crate::runs::shim::protocol::{self, ShimControl};
use crate::runs::shim::ExitReport;
use crate::runs::{logs, Progress};
use crate::state_dir::RunDir;

/// Bytes of each output stream kept for the completion payload.
const COMPLETION_TAIL_BYTES: u64 = 4096;

impl RunTask {
    /// Records the run's end: in memory at once (from here on the run
    /// reads as ended and takes no more reports: the control channel is
    /// closed, so every accepted report is in the payload), then the
    /// outbox (durable), then the record, then wakes every waiter. A run
    /// that promised nothing durable (no callback, no flushed record)
    /// wakes its waiters before its record is written: its caller's
    /// answer does not wait for the file, and a daemon that dies before
    /// the write leaves the shim to write `exit.json` (it writes it unless
    /// told the end is recorded). Whether the final record was written.
    pub(super) async fn finish(&mut self, report: Result<ExitReport, String>) -> bool {
        self.control.close();
        let run = self.apply_end(report);
        let end = run.end().expect("the end was just applied");
        // Whoever hears of the end finds the run's traces consistent with
        // it: the log line, the counters, no empty work dir left.
        tracing::info!(
            run_id = self.run_id,
            state = end.outcome.as_str(),
            exit_code = end.exit_code,
            signal = end.signal.as_deref(),
            "run ended"
        );
        self.context
            .metrics
            .run_ended(end.outcome.as_str(), run.duration_s());
        if run.default_cwd {
            // Fails, as it should, on a dir that is not empty.
            let _ = std::fs::remove_dir(&run.cwd);
        }
        let answer_first = self.sync == durable::Durability::NoFlush && run.callback.is_none();
        if answer_first {
            self.context.recording.fetch_add(1, Ordering::SeqCst);
            self.publish_end(end);
            // The waiters (a `wait` request's answer) run before the write.
            tokio::task::yield_now().await;
        }
        if let Some(completion) = self.completion(&run) {
            if let Err(err) = self.context.outbox.enqueue(completion).await {
                tracing::error!(
                    run_id = self.run_id,
                    "cannot store the completion callback: {err}"
                );
            }
        }
        // A run with a callback made its promise durable in the outbox; the
        // record follows the run's own durability.
        let recorded = match self.save_off_runtime(self.sync).await {
            Ok(()) => true,
            Err(err) => {
                tracing::error!(
                    run_id = self.run_id,
                    "cannot write the run's final record: {err}"
                );
                false
            }
        };
        if answer_first {
            self.context.recording.fetch_sub(1, Ordering::SeqCst);
        } else {
            self.publish_end(end);
        }
        // Its secrets are no longer needed: dropping them zeroizes them.
        self.cell.forget_secrets();
        self.context.log_masks.unmask(&self.run_id);
        self.context.ended.notify_waiters();
        recorded
    }

    /// [`Self::finish`], then [`Self::tidy`] once the record is written:
    /// for a run whose shim has exited already (or never started).
    pub(super) async fn finish_and_tidy(&mut self, report: Result<ExitReport, String>) {
        if self.finish(report).await {
            self.tidy();
        }
    }

    /// Tells waiters and followers the run has ended.
    fn publish_end(&self, end: &crate::runs::run::RunEnd) {
        self.cell.progress().send_replace(Progress {
            stdout_bytes: end.stdout_bytes,
            stderr_bytes: end.stderr_bytes,
            ended: true,
        });
    }

    /// Tells the shim its report is recorded: a shim of a run that is not
    /// durable then exits without writing `exit.json`.
    pub(super) async fn say_recorded(shim: &mut tokio::net::UnixStream) {
        use tokio::io::AsyncWriteExt;
        if let Ok(line) = protocol::encode_line(&ShimControl::Recorded) {
            // A shim that is gone has nothing left to write.
            let _ = shim.write_all(&line).await;
        }
    }

    /// Removes `exit.json`, which the final record makes redundant once
    /// it is as durable as the report was (flushed, or a run without
    /// callback whose shim did not flush either), after the run's shim
    /// has exited (it writes no file after that).
    pub(super) fn tidy(&self) {
        let callback = self.cell.read(|run| run.callback.is_some());
        if self.sync == durable::Durability::Flush || !callback {
            let _ = std::fs::remove_file(self.cell.run_dir().exit_report());
        }
    }

    /// Classifies the report into the run's end and applies it.
    fn apply_end(&mut self, report: Result<ExitReport, String>) -> Run {
        let masker = std::mem::replace(&mut self.masker, self.context.credentials.clone());
        let mut ended = None;
        self.cell.change(|run| {
            let ending = Ending {
                stop_reason: run.stop_reason,
                timeout_s: run.timeout.as_secs_f64(),
                pid: run.pid(),
            };
            let mut end = finish::classify(ending, report.as_ref().map_err(String::as_str));
            end.error = end.error.map(|e| masker.mask_str(&e));
            if let Ok(report) = &report {
                if report.started_at.is_some() {
                    run.started_at = report.started_at;
                }
            }
            // Indexed under the run's lock: whoever sees the run ended
            // (a DELETE, retention) finds it in the index too, so a run
            // deleted as it ends leaves no entry behind.
            self.context
                .ended_runs
                .insert(&self.run_id, end.finished_at);
            run.status = RunStatus::Ended(end);
            ended = Some(run.clone());
        });
        self.context
            .unended
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        ended.expect("the change ran")
    }

    fn completion(&self, run: &Run) -> Option<Completion> {
        let target = run.callback.clone()?;
        let end = run.end()?;
        let run_dir = &self.cell.run_dir();
        Some(Completion {
            run_id: self.run_id.clone(),
            target,
            outcome: end.outcome,
            exit_code: end.exit_code,
            signal: end.signal.clone(),
            error: end.error.clone(),
            stdout_tail: logs::tail_text_now(&run_dir.stdout_log(), COMPLETION_TAIL_BYTES),
            stderr_tail: logs::tail_text_now(&run_dir.stderr_log(), COMPLETION_TAIL_BYTES),
            truncated: truncation_text(end),
            report: run.report.clone(),
        })
    }
}

/// What of a run's output was dropped, in words (for its callback).
fn truncation_text(end: &crate::runs::run::RunEnd) -> Option<String> {
    let reason = end.truncation.as_deref()?;
    Some(format!(
        "{} bytes of stdout and {} bytes of stderr dropped ({reason})",
        end.stdout_truncated_bytes, end.stderr_truncated_bytes
    ))
}

/// The shim's `exit.json`, or why there is none.
pub(in crate::runs) fn read_exit_report(run_dir: &RunDir) -> Result<ExitReport, String> {
    let path = run_dir.exit_report();
    let bytes = std::fs::read(&path)
        .map_err(|_| "the run's shim ended without recording how the run ended".to_owned())?;
    serde_json::from_slice(&bytes).map_err(|e| format!("the run's exit record is unreadable: {e}"))
}
