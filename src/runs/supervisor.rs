//! One task per run: it owns the run's shim, applies [`Control`] messages,
//! follows the shim's events, and records the run's end. Also the restore
//! of runs after a restart, re-attaching to shims that are still alive.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, watch};

use super::logs;
use super::record::{self, RunRecord, RunState, ShimIdentity, StopReason};
use super::shim::{self, ExitReport, Phase, ShimEvent};
use super::spawn::ShimProcess;
use super::{Control, Progress, Registry, RunSlot};
use crate::callbacks::Completion;
use crate::durable;
use crate::secrets::mask::Masker;

/// Bytes of each output stream kept for the completion payload.
const COMPLETION_TAIL_BYTES: u64 = 4096;

/// How often records whose write failed are written again.
const UNSAVED_RETRY: Duration = Duration::from_secs(1);

/// How often a re-attached run's output counters are refreshed (no event
/// pipe survives a restart; the files are the source).
const REATTACHED_REFRESH: Duration = Duration::from_millis(250);

/// Supervises a freshly started run.
pub(super) async fn supervise_new(
    registry: Registry,
    run_id: String,
    shim: Result<ShimProcess, String>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let ShimProcess {
        mut child,
        events,
        identity,
    } = match shim {
        Ok(shim) => shim,
        Err(error) => {
            registry.finish(&run_id, Err(error)).await;
            return;
        }
    };
    let mut lines = BufReader::new(events).lines();
    let mut events_open = true;
    let mut ended: Option<ExitReport> = None;
    let mut kill_at: Option<tokio::time::Instant> = None;
    while ended.is_none() {
        let kill_timer = async {
            match kill_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            line = lines.next_line(), if events_open => match line {
                Ok(Some(line)) => ended = registry.on_event(&run_id, &line),
                _ => events_open = false,
            },
            Some(command) = control.recv() => {
                if let Some(at) = registry.on_control(&run_id, identity, command) {
                    kill_at = Some(kill_at.map_or(at, |old| old.min(at)));
                }
            }
            () = kill_timer => {
                registry.kill_group(&run_id);
                kill_at = None;
            }
            _ = child.wait() => break,
        }
    }
    // Events written just before the shim exited.
    while ended.is_none() {
        match tokio::time::timeout(Duration::from_millis(200), lines.next_line()).await {
            Ok(Ok(Some(line))) => ended = registry.on_event(&run_id, &line),
            _ => break,
        }
    }
    // The report of the `Ended` event is exit.json's content, and arrives
    // also when exit.json could not be written (a full state dir).
    let report = match ended {
        Some(report) => Ok(report),
        None => read_exit_report(&registry.run_dir(&run_id)),
    };
    registry.finish(&run_id, report).await;
    // After `Ended` the shim still flushes to disk; reap it when it exits.
    let _ = child.wait().await;
}

/// Supervises a run whose shim outlived a previous daemon.
pub(super) async fn supervise_reattached(
    registry: Registry,
    run_id: String,
    identity: ShimIdentity,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let exited = wait_pid_exit(identity.pid);
    tokio::pin!(exited);
    let mut refresh = tokio::time::interval(REATTACHED_REFRESH);
    let mut kill_at: Option<tokio::time::Instant> = None;
    let run_dir = registry.run_dir(&run_id);
    loop {
        let kill_timer = async {
            match kill_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut exited => break,
            _ = refresh.tick() => registry.refresh_progress(&run_id, &run_dir),
            Some(command) = control.recv() => {
                if let Some(at) = registry.on_control(&run_id, identity, command) {
                    kill_at = Some(kill_at.map_or(at, |old| old.min(at)));
                }
            }
            () = kill_timer => {
                registry.kill_group(&run_id);
                kill_at = None;
            }
        }
    }
    let report = read_exit_report(&run_dir);
    registry.finish(&run_id, report).await;
}

/// Waits for a process that is not our child to exit (pidfd).
async fn wait_pid_exit(pid: i32) {
    // SAFETY: pidfd_open takes plain integers and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return;
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: `owned` is moved into the AsyncFd, which closes it on drop
    // after deregistering; nothing else refers to the descriptor.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE)
    };
    let Ok(async_fd) = registered else {
        return;
    };
    let _ = async_fd.readable().await;
}

/// Removes the temp files of record writes a crash interrupted (only the
/// daemon writes records, and no other daemon is alive now).
fn remove_record_temp_files(run_dir: &Path) {
    let prefix = format!(".{}.tmp-", record::RECORD_FILE);
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn read_exit_report(run_dir: &Path) -> Result<ExitReport, String> {
    let path = run_dir.join(shim::files::EXIT);
    let bytes = std::fs::read(&path)
        .map_err(|_| "the run's shim ended without recording how the run ended".to_owned())?;
    serde_json::from_slice(&bytes).map_err(|e| format!("the run's exit record is unreadable: {e}"))
}

/// Every second, writes again the records whose last write failed (see
/// [`Registry::save_record`]).
async fn rewrite_unsaved(registry: Registry) {
    let mut tick = tokio::time::interval(UNSAVED_RETRY);
    loop {
        tick.tick().await;
        let unsaved: Vec<String> = registry.lock_unsaved().iter().cloned().collect();
        for run_id in unsaved {
            if registry.save_record(&run_id, durable::Sync::Flush).is_ok() {
                tracing::info!(run_id, "the run's record is written again");
            }
        }
    }
}

impl Registry {
    /// Writes a run's record as it is in memory now. Writes of one run
    /// take turns, each writing the latest state, so the file on disk is
    /// never older than a write that has returned. When a write fails (a
    /// full state dir), the run is remembered and its record written again
    /// every second until the disk takes it: what a restart reads catches
    /// up once there is space again. A deleted run is not written.
    pub(super) fn save_record(&self, run_id: &str, sync: durable::Sync) -> std::io::Result<()> {
        let writing = self.lock_runs().get(run_id).map(|s| s.writing.clone());
        let Some(writing) = writing else {
            self.lock_unsaved().remove(run_id);
            return Ok(());
        };
        let _turn = writing.lock().unwrap_or_else(|e| e.into_inner());
        let record = self.lock_runs().get(run_id).map(|s| s.record.clone());
        let Some(record) = record else {
            self.lock_unsaved().remove(run_id);
            return Ok(());
        };
        let saved = record::save(&self.run_dir(run_id), &record, sync);
        let mut unsaved = self.lock_unsaved();
        match saved {
            Ok(()) => unsaved.remove(run_id),
            Err(_) => unsaved.insert(run_id.to_owned()),
        };
        saved
    }

    /// Changes a run's record and writes it.
    pub(super) fn update(
        &self,
        run_id: &str,
        sync: durable::Sync,
        change: impl FnOnce(&mut RunRecord),
    ) {
        {
            let mut runs = self.lock_runs();
            let Some(slot) = runs.get_mut(run_id) else {
                return;
            };
            change(&mut slot.record);
        }
        if let Err(err) = self.save_record(run_id, sync) {
            tracing::error!(run_id, "cannot write the run's record: {err}");
        }
    }

    /// Applies one event of the shim; the run's exit report when it says
    /// the run has ended.
    fn on_event(&self, run_id: &str, line: &str) -> Option<ExitReport> {
        let Ok(event) = ShimEvent::from_line(line) else {
            tracing::warn!(run_id, "unreadable event from the run's shim");
            return None;
        };
        match event {
            ShimEvent::Ended { report } => return Some(*report),
            ShimEvent::Output {
                stdout_bytes,
                stderr_bytes,
            } => {
                let runs = self.lock_runs();
                if let Some(slot) = runs.get(run_id) {
                    slot.progress.send_modify(|p| {
                        p.stdout_bytes = p.stdout_bytes.max(stdout_bytes);
                        p.stderr_bytes = p.stderr_bytes.max(stderr_bytes);
                    });
                }
            }
            ShimEvent::Spawned { phase, pid } => {
                let mut target = None;
                self.update(run_id, durable::Sync::NoFlush, |record| {
                    record.state = RunState::Running;
                    record.pid = Some(pid);
                    if phase == Phase::Command {
                        record.started_at = Some(chrono::Utc::now());
                    }
                    target = record.callback.clone().filter(|c| c.phases);
                });
                tracing::info!(run_id, pid, ?phase, "run process started");
                if let Some(target) = target {
                    let name = match phase {
                        Phase::Setup => "setup",
                        Phase::Command => "running",
                    };
                    self.inner.outbox.phase(&target, name);
                }
            }
        }
        None
    }

    /// Applies a control message; returns when to SIGKILL, if anything.
    fn on_control(
        &self,
        run_id: &str,
        shim: ShimIdentity,
        control: Control,
    ) -> Option<tokio::time::Instant> {
        match control {
            Control::Stop { reason, grace } => {
                self.update(run_id, durable::Sync::NoFlush, |record| {
                    record.stop_reason.get_or_insert(reason);
                });
                tracing::info!(
                    run_id,
                    ?reason,
                    grace_s = grace.as_secs_f64(),
                    "stopping run"
                );
                // The shim marks the run cancelled (so no later phase starts)
                // and passes SIGTERM on to the current process group.
                let _ = kill(Pid::from_raw(shim.pid), Signal::SIGTERM);
                Some(tokio::time::Instant::now() + grace)
            }
            Control::Signal(signal) => {
                let pid = self.lock_runs().get(run_id).and_then(|s| s.record.pid);
                if let Some(pid) = pid {
                    let _ = killpg(Pid::from_raw(pid), signal);
                }
                None
            }
        }
    }

    fn kill_group(&self, run_id: &str) {
        let pid = self.lock_runs().get(run_id).and_then(|s| s.record.pid);
        if let Some(pid) = pid {
            tracing::info!(
                run_id,
                pid,
                "grace over: SIGKILL to the run's process group"
            );
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    fn refresh_progress(&self, run_id: &str, run_dir: &Path) {
        let size = |name| {
            std::fs::metadata(run_dir.join(name))
                .map(|m| m.len())
                .unwrap_or(0)
        };
        let (o, r) = (size(shim::files::STDOUT), size(shim::files::STDERR));
        let runs = self.lock_runs();
        if let Some(slot) = runs.get(run_id) {
            slot.progress.send_if_modified(|p| {
                let changed = p.stdout_bytes != o || p.stderr_bytes != r;
                p.stdout_bytes = o;
                p.stderr_bytes = r;
                changed
            });
        }
    }

    /// Records a run's end: in memory, then the outbox (durable), then the
    /// record, then wakes everyone waiting on the run.
    pub(super) async fn finish(&self, run_id: &str, report: Result<ExitReport, String>) {
        // The end is applied in memory at once: from here on the run reads
        // as ended (a status read by the service when the callback arrives
        // agrees with it) and takes no more reports, so every accepted
        // report is in the payload. `progress.ended` and the waiters follow
        // once the outbox and the record are written.
        let (record, sync) = {
            let mut runs = self.lock_runs();
            let Some(slot) = runs.get_mut(run_id) else {
                return;
            };
            let masker = slot.masker.clone();
            apply_exit(&mut slot.record, report, &masker);
            (slot.record.clone(), slot.sync)
        };
        let run_dir = self.run_dir(run_id);
        if let Some(target) = record.callback.clone() {
            let completion = Completion {
                run_id: run_id.to_owned(),
                target,
                state: record.state,
                exit_code: record.exit_code,
                signal: record.signal.clone(),
                error: record.error.clone(),
                stdout_tail: logs::tail_text_now(
                    &run_dir.join(shim::files::STDOUT),
                    COMPLETION_TAIL_BYTES,
                ),
                stderr_tail: logs::tail_text_now(
                    &run_dir.join(shim::files::STDERR),
                    COMPLETION_TAIL_BYTES,
                ),
                report: record.report.clone(),
            };
            if let Err(err) = self.inner.outbox.enqueue(completion).await {
                tracing::error!(run_id, "cannot store the completion callback: {err}");
            }
        }
        // A run with a callback already made its promise durable in the
        // outbox; the record follows the run's own durability.
        if let Err(err) = self.save_record(run_id, sync) {
            tracing::error!(run_id, "cannot write the run's final record: {err}");
        }
        tracing::info!(
            run_id,
            state = record.state.as_str(),
            exit_code = record.exit_code,
            signal = record.signal.as_deref(),
            "run ended"
        );
        self.inner
            .metrics
            .run_ended(record.state.as_str(), record.duration_s());
        {
            let mut runs = self.lock_runs();
            if let Some(slot) = runs.get_mut(run_id) {
                let final_progress = Progress {
                    stdout_bytes: record.stdout_bytes,
                    stderr_bytes: record.stderr_bytes,
                    ended: true,
                };
                slot.control = None;
                slot.progress.send_replace(final_progress);
                // The run's secrets are no longer needed: dropping them
                // zeroizes them.
                slot.secrets = Default::default();
                slot.masker = self.credentials_masker();
            }
        }
        crate::telemetry::unmask_in_logs(run_id);
        self.inner.ended.notify_waiters();
    }

    /// Loads every run from the state dir: ended runs as they are, live
    /// ones re-attached to their shims, the rest finished from their exit
    /// record or marked lost.
    pub async fn restore(&self) -> std::io::Result<()> {
        let runs_dir = self.inner.config.state_dir.join("runs");
        let mut restored = 0usize;
        for entry in std::fs::read_dir(&runs_dir)? {
            let dir = entry?.path();
            if !dir.is_dir() {
                continue;
            }
            remove_record_temp_files(&dir);
            let record = match record::load(&dir) {
                Ok(record) => record,
                Err(err)
                    if err.kind() == std::io::ErrorKind::NotFound
                        && !dir.join(shim::files::EXIT).exists() =>
                {
                    // Made by a daemon that died before the run's first
                    // record: the run was neither acknowledged nor started.
                    tracing::info!(dir = %dir.display(), "removing a run dir without a record");
                    let _ = std::fs::remove_dir_all(&dir);
                    continue;
                }
                Err(err) => {
                    tracing::warn!(dir = %dir.display(), "skipping a run dir without a readable record: {err}");
                    continue;
                }
            };
            restored += 1;
            self.restore_one(record).await;
        }
        if restored > 0 {
            tracing::info!(runs = restored, "restored runs from the state dir");
        }
        tokio::spawn(rewrite_unsaved(self.clone()));
        Ok(())
    }

    async fn restore_one(&self, record: RunRecord) {
        let run_id = record.run_id.clone();
        let run_dir = self.run_dir(&run_id);
        let terminal = record.state.is_terminal();
        let shim = record.shim;
        let (tx, rx) = mpsc::unbounded_channel();
        let progress = Progress {
            stdout_bytes: record.stdout_bytes,
            stderr_bytes: record.stderr_bytes,
            ended: terminal,
        };
        let masker = self.credentials_masker();
        self.lock_tokens()
            .insert(super::token_digest(&record.token), run_id.clone());
        self.lock_runs().insert(
            run_id.clone(),
            RunSlot {
                record,
                control: (!terminal).then_some(tx),
                progress: watch::Sender::new(progress),
                secrets: Default::default(),
                masker,
                sync: durable::Sync::Flush,
                writing: Default::default(),
            },
        );
        if terminal {
            return;
        }
        if run_dir.join(shim::files::EXIT).exists() {
            self.finish(&run_id, read_exit_report(&run_dir)).await;
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
                tokio::spawn(supervise_reattached(self.clone(), run_id, identity, rx));
            }
            None => {
                let reason = "sandboxd restarted and the run's shim was gone without recording how the run ended";
                self.finish(&run_id, Err(reason.to_owned())).await;
            }
        }
    }
}

/// Turns the shim's report (or the reason there is none) into the run's
/// terminal state.
fn apply_exit(record: &mut RunRecord, report: Result<ExitReport, String>, masker: &Masker) {
    let report = match report {
        Ok(report) => report,
        Err(reason) => {
            record.state = RunState::Lost;
            record.error = Some(reason);
            record.finished_at = Some(chrono::Utc::now());
            return;
        }
    };
    record.exit_code = report.exit_code;
    record.signal = report
        .signal
        .and_then(|n| Signal::try_from(n).ok())
        .map(|s| s.as_str().to_owned());
    record.finished_at = Some(report.finished_at);
    if report.started_at.is_some() {
        record.started_at = report.started_at;
    }
    record.stdout_bytes = report.stdout_bytes;
    record.stderr_bytes = report.stderr_bytes;
    let (state, error) = classify(record, &report);
    record.state = state;
    record.error = error.map(|e| masker.mask_str(&e));
}

fn classify(record: &RunRecord, report: &ExitReport) -> (RunState, Option<String>) {
    let how = match (&record.signal, report.exit_code) {
        (Some(signal), _) => format!("killed by {signal}"),
        (None, Some(code)) => format!("exited with {code}"),
        (None, None) => "ended".to_owned(),
    };
    if let Some(spawn_error) = &report.spawn_error {
        let error = match report.phase {
            Phase::Setup => format!("setup.sh could not start: {spawn_error}"),
            Phase::Command => spawn_error.clone(),
        };
        return (RunState::Failed, Some(error));
    }
    if report.timed_out {
        return (
            RunState::TimedOut,
            Some(format!("timed out after {}s", trim_float(record.timeout_s))),
        );
    }
    if report.cancelled || record.stop_reason.is_some() {
        let error = match record.stop_reason {
            Some(StopReason::Shutdown) => {
                format!("cancelled: stopped by sandboxd's shutdown ({how})")
            }
            _ => format!("cancelled ({how})"),
        };
        return (RunState::Cancelled, Some(error));
    }
    if report.phase == Phase::Setup {
        return (RunState::Failed, Some(format!("setup.sh {how}")));
    }
    match (report.exit_code, &record.signal) {
        (Some(0), None) => (RunState::Succeeded, None),
        (_, Some(_)) => (RunState::Failed, Some(how)),
        _ => (RunState::Failed, None),
    }
}

fn trim_float(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{}", value as u64)
    } else {
        format!("{value}")
    }
}
