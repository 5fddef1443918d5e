//! One [`RunTask`] per live run: it owns the run's shim, its control
//! channel and every change of the run. Handlers read a run through its
//! [`RunCell`] and reach its task only with [`Control`] messages (a report
//! from the run's script is one too).
//!
//! The task follows the shim's events (spawned pid, output counters, the
//! end), applies controls (stop, signal, report), and at the end records
//! the run's end: in memory, then the completion in the outbox (durable),
//! then the record, then it wakes everyone waiting on the run (before the
//! record, for a run that promised nothing durable), then tells the shim
//! the end is recorded.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, Notify};

mod cell;
mod end;

pub(super) use cell::RunCell;
pub(super) use end::read_exit_report;

use super::record::ShimIdentity;
use super::run::{Run, RunStatus};
use super::shim::protocol::{self, ShimControl};
use super::shim::{ExitReport, Phase, ShimEvent};
use super::spawn::{ShimChild, ShimProcess};
use super::{Control, RunError};
use crate::callbacks::Outbox;
use crate::durable;
use crate::metrics::Metrics;
use crate::secrets::mask::Masker;
use crate::telemetry::LogMasks;
use secrecy::{ExposeSecret, SecretString};

/// How often a re-attached run's output counters are refreshed (no event
/// pipe survives a restart; the files are the source).
const REATTACHED_REFRESH: Duration = Duration::from_millis(250);

/// What a run's task works with besides its run.
#[derive(Clone)]
pub(super) struct TaskContext {
    /// Where completions go.
    pub(super) outbox: Outbox,
    /// Counters.
    pub(super) metrics: Metrics,
    /// Told whenever a run's end is fully recorded.
    pub(super) ended: Arc<Notify>,
    /// Runs whose last record write failed.
    pub(super) unsaved: Arc<durable::Unsaved<String>>,
    /// Masks the daemon's own credentials: for runs whose secrets are gone.
    pub(super) credentials: Masker,
    /// What the daemon's log lines are masked with.
    pub(super) log_masks: LogMasks,
    /// How many runs have not ended: counted when a run is reserved (or
    /// restored unended), uncounted when its end is applied. Kept as a
    /// count so `--max-running` is checked without a walk of every run
    /// retained.
    pub(super) unended: Arc<std::sync::atomic::AtomicUsize>,
    /// The ended runs kept, in the order of their end (for retention).
    pub(super) ended_runs: Arc<super::ended::EndedRuns>,
    /// Runs answered before their final record is written, until it is.
    pub(super) recording: Arc<std::sync::atomic::AtomicUsize>,
}

impl TaskContext {
    /// Counts a restored run: among the unended, or in the index of the
    /// ended.
    pub(super) fn count_restored(&self, run: &Run) {
        match run.end() {
            Some(end) => self.ended_runs.insert(&run.run_id, end.finished_at),
            None => {
                self.unended
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }
}

/// The owner of one live run.
pub(super) struct RunTask {
    run_id: String,
    cell: Arc<RunCell>,
    control: mpsc::UnboundedReceiver<Control>,
    context: TaskContext,
    /// Masks the run's secrets in its error text.
    masker: Masker,
    /// How durably the run's records are written.
    sync: durable::Durability,
    /// When the grace of a stop ends and the group gets SIGKILL.
    kill_at: Option<tokio::time::Instant>,
    /// Number of the last mask control sent to the shim.
    mask_seq: u64,
    /// Callers waiting for the shim to mask values, by control number.
    mask_waiters: Vec<(u64, tokio::sync::oneshot::Sender<bool>)>,
}

impl RunTask {
    /// The task of a run whose cell is in the registry.
    pub(super) fn new(
        cell: Arc<RunCell>,
        control: mpsc::UnboundedReceiver<Control>,
        context: TaskContext,
        masker: Masker,
        sync: durable::Durability,
    ) -> RunTask {
        let run_id = cell.read(|run| run.run_id.clone());
        RunTask {
            run_id,
            cell,
            control,
            context,
            masker,
            sync,
            kill_at: None,
            mask_seq: 0,
            mask_waiters: Vec::new(),
        }
    }

    /// Follows a freshly started shim until the run has ended and is
    /// recorded. A shim that could not start ends the run at once.
    pub(super) async fn follow_new(mut self, shim: Result<ShimProcess, String>) {
        let ShimProcess {
            mut child,
            events,
            mut control,
            identity,
        } = match shim {
            Ok(shim) => shim,
            Err(error) => return self.finish_and_tidy(Err(error)).await,
        };
        let mut lines = BufReader::new(events).lines();
        let mut events_open = true;
        let mut ended: Option<ExitReport> = None;
        while ended.is_none() {
            tokio::select! {
                line = lines.next_line(), if events_open => match line {
                    Ok(Some(line)) => ended = self.on_event(&line),
                    _ => events_open = false,
                },
                Some(message) = self.control.recv() => match message {
                    Control::Mask { values, done } => {
                        self.send_mask(&mut control, values, done).await;
                    }
                    message => self.on_control(identity, message),
                },
                () = kill_timer(self.kill_at) => self.kill_group(),
                _ = child.wait() => break,
            }
        }
        // Events written just before the shim exited.
        while ended.is_none() {
            match tokio::time::timeout(Duration::from_millis(200), lines.next_line()).await {
                Ok(Ok(Some(line))) => ended = self.on_event(&line),
                _ => break,
            }
        }
        // The report of the `Ended` event is exit.json's content, and
        // arrives also when exit.json could not be written (a full disk).
        let report = match ended {
            Some(report) => Ok(report),
            None => read_exit_report(self.cell.run_dir()),
        };
        let recorded = self.finish(report).await;
        if recorded {
            Self::say_recorded(&mut control).await;
        }
        drop(control);
        // After `Ended` the shim still flushes to disk, or writes exit.json
        // unless told the end is recorded; reap it when it exits.
        let _ = child.wait().await;
        if recorded {
            self.tidy();
        }
    }

    /// Follows a shim that outlived a previous daemon (through a pidfd:
    /// it is not our child) until the run has ended and is recorded.
    pub(super) async fn follow_reattached(mut self, identity: ShimIdentity) {
        // A shim already gone (no pidfd) has ended.
        let mut shim = ShimChild::follow(identity.pid).ok();
        let exited = async {
            if let Some(shim) = shim.as_mut() {
                shim.wait().await;
            }
        };
        tokio::pin!(exited);
        let mut refresh = tokio::time::interval(REATTACHED_REFRESH);
        loop {
            tokio::select! {
                () = &mut exited => break,
                _ = refresh.tick() => self.refresh_progress(),
                Some(control) = self.control.recv() => self.on_control(identity, control),
                () = kill_timer(self.kill_at) => self.kill_group(),
            }
        }
        let report = read_exit_report(self.cell.run_dir());
        self.finish_and_tidy(report).await;
    }

    /// Records the end of a run that has no shim to follow (its report is
    /// on disk, or it is lost).
    pub(super) async fn finish_now(mut self, report: Result<ExitReport, String>) {
        self.finish_and_tidy(report).await;
    }

    /// Notes the run's shim in its record.
    /// Notes the run's shim without writing the record: the first record,
    /// written next, carries it (a warm shim is known before it).
    pub(super) fn note_shim(&self, identity: ShimIdentity) {
        self.cell.change(|run| run.shim = Some(identity));
    }

    pub(super) fn record_shim(&self, identity: ShimIdentity) {
        self.update(durable::Durability::NoFlush, |run| {
            run.shim = Some(identity)
        });
    }

    /// Changes the run and writes its record.
    fn update(&self, sync: durable::Durability, change: impl FnOnce(&mut Run)) {
        self.cell.change(change);
        if let Err(err) = self.save(sync) {
            tracing::error!(run_id = self.run_id, "cannot write the run's record: {err}");
        }
    }

    fn save(&self, sync: durable::Durability) -> std::io::Result<()> {
        let written = self.cell.persist(sync);
        self.context.unsaved.note(&self.run_id, written)
    }

    /// [`Self::save`], a flushed write on the blocking pool.
    async fn save_off_runtime(&self, sync: durable::Durability) -> std::io::Result<()> {
        let written = self.cell.clone().persist_off_runtime(sync).await;
        self.context.unsaved.note(&self.run_id, written)
    }

    /// Hands values to mask to the shim (a control line on its stdin); the
    /// caller hears back when the shim's `Masked` event arrives.
    async fn send_mask(
        &mut self,
        shim: &mut tokio::net::UnixStream,
        values: Vec<SecretString>,
        done: tokio::sync::oneshot::Sender<bool>,
    ) {
        use tokio::io::AsyncWriteExt;
        self.masker = self
            .masker
            .with_values(values.iter().map(|v| v.expose_secret().as_bytes()));
        self.mask_seq += 1;
        let seq = self.mask_seq;
        let message = ShimControl::Mask {
            seq,
            values: values
                .iter()
                .map(|v| v.expose_secret().to_owned())
                .collect(),
        };
        let Ok(line) = protocol::encode_line(&message) else {
            let _ = done.send(false);
            return;
        };
        drop(message);
        if shim.write_all(&line).await.is_err() {
            // The shim is gone: the run's output is over.
            return;
        }
        self.mask_waiters.push((seq, done));
    }

    /// Applies one event of the shim; the run's exit report when it says
    /// the run has ended.
    fn on_event(&mut self, line: &str) -> Option<ExitReport> {
        let Ok(event) = ShimEvent::from_line(line) else {
            tracing::warn!(run_id = self.run_id, "unreadable event from the run's shim");
            return None;
        };
        match event {
            ShimEvent::Ended { report } => return Some(*report),
            ShimEvent::Output {
                stdout_bytes,
                stderr_bytes,
            } => {
                self.cell.progress().send_modify(|p| {
                    p.stdout_bytes = p.stdout_bytes.max(stdout_bytes);
                    p.stderr_bytes = p.stderr_bytes.max(stderr_bytes);
                });
            }
            ShimEvent::Spawned { phase, pid } => self.on_spawned(phase, pid),
            ShimEvent::Masked { seq } => {
                let (masked, waiting) = std::mem::take(&mut self.mask_waiters)
                    .into_iter()
                    .partition(|(s, _)| *s <= seq);
                self.mask_waiters = waiting;
                for (_, done) in masked {
                    let _ = done.send(true);
                }
            }
        }
        None
    }

    fn on_spawned(&self, phase: Phase, pid: i32) {
        let mut target = None;
        self.update(durable::Durability::NoFlush, |run| {
            run.status = RunStatus::Running { pid };
            if phase == Phase::Command {
                run.started_at = Some(chrono::Utc::now());
            }
            target = run.callback.clone().filter(|c| c.phases);
        });
        tracing::info!(run_id = self.run_id, pid, ?phase, "run process started");
        if let Some(target) = target {
            let name = match phase {
                Phase::Setup => "setup",
                Phase::Command => "running",
            };
            let stored = self.context.outbox.phase(&self.run_id, &target, name);
            let run_id = self.run_id.clone();
            tokio::spawn(async move {
                if let Err(err) = stored.await {
                    tracing::warn!(run_id, "cannot store the run's phase report: {err}");
                }
            });
        }
    }

    /// Applies a control message.
    fn on_control(&mut self, shim: ShimIdentity, control: Control) {
        match control {
            Control::Stop { reason, grace } => {
                self.update(durable::Durability::NoFlush, |run| {
                    run.stop_reason.get_or_insert(reason);
                });
                tracing::info!(
                    run_id = self.run_id,
                    ?reason,
                    grace_s = grace.as_secs_f64(),
                    "stopping run"
                );
                // The shim marks the run cancelled (so no later phase
                // starts) and passes SIGTERM on to the current group.
                let _ = kill(Pid::from_raw(shim.pid), Signal::SIGTERM);
                let at = tokio::time::Instant::now() + grace;
                self.kill_at = Some(self.kill_at.map_or(at, |old| old.min(at)));
            }
            Control::Signal(signal) => {
                if let Some(pid) = self.cell.read(Run::pid) {
                    let _ = killpg(Pid::from_raw(pid), signal);
                }
            }
            // No way to reach a re-attached shim.
            Control::Mask { done, .. } => {
                let _ = done.send(false);
            }
            Control::Phase { phase, done } => {
                let Some(target) = self.cell.read(|run| run.callback.clone()) else {
                    let _ = done.send(Ok(()));
                    return;
                };
                let stored = self.context.outbox.phase(&self.run_id, &target, phase);
                let run_id = self.run_id.clone();
                let file = self.context.outbox.phases_file(&run_id);
                tokio::spawn(async move {
                    let stored = stored.await.map_err(|source| {
                        RunError::io(&run_id, "storing a phase of", &file, source)
                    });
                    let _ = done.send(stored);
                });
            }
            Control::Report { report, done } => {
                self.cell.change(|run| run.report.merge(report));
                let cell = self.cell.clone();
                let unsaved = self.context.unsaved.clone();
                let run_id = self.run_id.clone();
                tokio::spawn(async move {
                    let written = cell
                        .clone()
                        .persist_off_runtime(durable::Durability::Flush)
                        .await;
                    let saved = unsaved.note(&run_id, written).map_err(|source| {
                        RunError::io(
                            &run_id,
                            "writing the record of",
                            cell.run_dir().path(),
                            source,
                        )
                    });
                    let _ = done.send(saved);
                });
            }
        }
    }

    fn kill_group(&mut self) {
        self.kill_at = None;
        if let Some(pid) = self.cell.read(Run::pid) {
            tracing::info!(
                run_id = self.run_id,
                pid,
                "grace over: SIGKILL to the run's process group"
            );
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    fn refresh_progress(&self) {
        let size = |path: PathBuf| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let stdout = size(self.cell.run_dir().stdout_log());
        let stderr = size(self.cell.run_dir().stderr_log());
        self.cell.progress().send_if_modified(|p| {
            let changed = p.stdout_bytes != stdout || p.stderr_bytes != stderr;
            p.stdout_bytes = stdout;
            p.stderr_bytes = stderr;
            changed
        });
    }
}

/// Sleeps until `at`, or forever without one.
async fn kill_timer(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
