//! The supervisor task that owns the service process: it spawns it (own
//! process group, output pumped through [`super::output`]), follows its
//! health, restarts it by the policy after the backoff, stops it when
//! asked, records its pid in `service.json`, and stops a service left by
//! a crashed daemon ([`stop_leftover`]).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::{init, output, Backoff, Inner, ServiceExit, ServiceState};
use crate::config::RestartPolicy;
use crate::procfs::ProcessIdentity;
use crate::secrets::mask::Masker;

/// How long a service left by a crashed daemon gets between SIGTERM and
/// SIGKILL.
const LEFTOVER_GRACE: Duration = Duration::from_secs(5);

/// The supervisor task's own state.
pub(super) struct Task {
    pub(super) inner: Arc<Inner>,
    pub(super) pid_file: PathBuf,
    pub(super) masker: Masker,
    pub(super) style: crate::config::ServiceOutput,
    pub(super) backoff: Backoff,
}

impl Task {
    pub(super) async fn supervise(mut self) {
        let inner = self.inner.clone();
        let exit = loop {
            let started = Instant::now();
            let exit = self.run_once().await;
            let up_for = started.elapsed();
            inner.lock_live().last_exit = Some(exit);
            if inner.stop.is_cancelled() {
                break exit;
            }
            let restart = match inner.policy {
                RestartPolicy::Never => false,
                RestartPolicy::OnFailure => !exit.success(),
                RestartPolicy::Always => true,
            };
            if !restart {
                tracing::warn!(
                    code = exit.code,
                    signal = exit.signal,
                    "service exited; not restarted (--service-restart); shutting down"
                );
                break exit;
            }
            let Some(delay) = self.backoff.next(up_for) else {
                tracing::error!(
                    code = exit.code,
                    signal = exit.signal,
                    max = self.backoff.max_restarts,
                    "service keeps exiting: giving up after --service-max-restarts; shutting down"
                );
                break exit;
            };
            tracing::warn!(
                code = exit.code,
                signal = exit.signal,
                up_s = up_for.as_secs_f64(),
                delay_s = delay.as_secs_f64(),
                "service exited; restarting after a delay"
            );
            let next_start = chrono::Duration::from_std(delay)
                .ok()
                .map(|d| Utc::now() + d);
            inner.set_state_with(ServiceState::Backoff, next_start);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = inner.stop.cancelled() => break exit,
            }
            inner.lock_live().restarts += 1;
            inner.metrics.service_restarted();
        };
        inner.set_state(ServiceState::Stopped);
        inner.final_code.send_replace(Some(exit.exit_code()));
        inner.exited.cancel();
    }

    /// Starts the service once and follows it until it exits.
    async fn run_once(&mut self) -> ServiceExit {
        let inner = self.inner.clone();
        let started_wall = Utc::now();
        let mut child = match self.spawn() {
            Ok(child) => child,
            Err(exit) => return exit,
        };
        let pid = child.id().unwrap_or(0) as i32;
        let group = Pid::from_raw(pid);
        self.write_pid_file(pid);
        inner.lock_live().pid = Some(pid as u32);
        inner.set_state(ServiceState::Starting);
        tracing::info!(pid, command = ?inner.command, "service started");
        inner.agent.probe_now();

        let mut healthy_once = false;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut stopping = false;
        let mut kill_at: Option<tokio::time::Instant> = None;
        let status = loop {
            let kill_timer = async {
                match kill_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                status = child.wait() => break status,
                _ = inner.stop.cancelled(), if !stopping => {
                    stopping = true;
                    let (deadline, signal) = inner.stop_request();
                    tracing::info!(%signal, pid, "stopping the service");
                    let _ = killpg(group, signal);
                    kill_at = Some(tokio::time::Instant::from_std(deadline));
                }
                () = kill_timer => {
                    tracing::warn!(pid, "the service outlived the grace: SIGKILL to its process group");
                    let _ = killpg(group, Signal::SIGKILL);
                    kill_at = None;
                }
                _ = tick.tick() => {
                    healthy_once = self.follow_health(started_wall, healthy_once);
                }
            }
        };
        // Whatever is left of its group would hold its port or its files.
        let _ = killpg(group, Signal::SIGKILL);
        let _ = std::fs::remove_file(&self.pid_file);
        inner.lock_live().pid = None;
        match status {
            Ok(status) => ServiceExit::from_status(status),
            Err(err) => {
                tracing::error!(pid, "cannot wait for the service: {err}");
                ServiceExit {
                    code: Some(1),
                    signal: None,
                    at: Utc::now(),
                }
            }
        }
    }

    fn spawn(&self) -> Result<tokio::process::Child, ServiceExit> {
        let (program, args) = self
            .inner
            .command
            .split_first()
            .expect("a service has a command");
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        if let Some(user) = self.inner.run_as {
            // std sets the groups to the one gid when it drops root.
            command.uid(user.uid).gid(user.gid);
            if let Some(home) = home_of(user.uid) {
                command.env("HOME", home);
            }
        }
        // SAFETY: the closure only makes async-signal-safe calls.
        unsafe {
            command.pre_exec(|| {
                init::reset_signals();
                Ok(())
            })
        };
        let spawned = command.spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(err) => {
                // What a shell answers: 127 not found, 126 not executable.
                let code = match err.kind() {
                    std::io::ErrorKind::NotFound => 127,
                    _ => 126,
                };
                let message = format!("sandboxd: cannot start the service {program}: {err}");
                tracing::error!("{message}");
                self.inner
                    .ring
                    .push(output::Stream::Stderr, message.as_bytes());
                return Err(ServiceExit {
                    code: Some(code),
                    signal: None,
                    at: Utc::now(),
                });
            }
        };
        // The pumps are detached: a grandchild that escaped the group may
        // hold the pipes open long after the service itself exited.
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(output::pump(
                stdout,
                tokio::io::stdout(),
                output::Stream::Stdout,
                self.style,
                self.masker.clone(),
                self.inner.ring.clone(),
            ));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(output::pump(
                stderr,
                tokio::io::stderr(),
                output::Stream::Stderr,
                self.style,
                self.masker.clone(),
                self.inner.ring.clone(),
            ));
        }
        Ok(child)
    }

    /// Updates the state from the probe; returns whether this run of the
    /// service has been seen healthy.
    fn follow_health(&self, started: DateTime<Utc>, healthy_once: bool) -> bool {
        let health = self.inner.agent.health();
        let fresh = health.checked_at.is_some_and(|at| at >= started);
        let (state, healthy_once) = match (fresh, health.healthy, healthy_once) {
            (true, true, _) => (ServiceState::Running, true),
            (true, false, true) => (ServiceState::Unhealthy, true),
            (_, _, true) => (ServiceState::Running, true),
            (_, _, false) => (ServiceState::Starting, false),
        };
        if !healthy_once {
            // Until it is first seen healthy, probe often.
            self.inner.agent.probe_now();
        }
        if !self.inner.stop.is_cancelled() {
            self.inner.set_state(state);
        }
        healthy_once
    }

    fn write_pid_file(&self, pid: i32) {
        let bytes = serde_json::to_vec(&ProcessIdentity::of(pid)).unwrap_or_default();
        if let Err(err) = crate::durable::write_atomic(
            &self.pid_file,
            &bytes,
            0o600,
            crate::durable::Durability::NoFlush,
        ) {
            tracing::warn!(path = %self.pid_file.display(), "cannot record the service's pid: {err}");
        }
    }
}

/// Stops the service a previous (crashed) daemon left running, if any:
/// SIGTERM to its group, SIGKILL after [`LEFTOVER_GRACE`].
pub(super) async fn stop_leftover(pid_file: &std::path::Path) {
    let Ok(bytes) = std::fs::read(pid_file) else {
        return;
    };
    let _ = std::fs::remove_file(pid_file);
    let Ok(old) = serde_json::from_slice::<ProcessIdentity>(&bytes) else {
        return;
    };
    if !old.is_alive() {
        return;
    }
    tracing::warn!(
        pid = old.pid,
        "a service left by a previous sandboxd is still running; stopping it"
    );
    let group = Pid::from_raw(old.pid);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = Instant::now() + LEFTOVER_GRACE;
    while old.is_alive() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = killpg(group, Signal::SIGKILL);
}

/// A user's home dir from the password database.
fn home_of(uid: u32) -> Option<std::path::PathBuf> {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok()??;
    Some(user.dir)
}
