//! The agent-server side of the sandbox: the health probe of
//! `--agent-server-url`, the supervised service of entrypoint mode
//! (`serve -- CMD`), the init that reaps orphans as PID 1 or subreaper
//! ([`init`]). Signals reach the service from the daemon
//! ([`Service::signal`], [`Service::stop`]); this module installs no
//! handler.
//!
//! The service runs with the daemon's own environment (it needs its key),
//! stdin `/dev/null`, as the leader of its own process group, its output
//! passed through ([`output`]). One task owns it: it starts it, follows
//! its health through the [`AgentProbe`], restarts it by the policy with
//! exponential backoff ([`Backoff`]), and stops it when asked. Its state is
//! `starting` (alive, not yet seen healthy), `running` (alive and healthy),
//! `unhealthy` (alive, healthy once, failing the probe now), `backoff`
//! (exited, waiting to restart) or `stopped` (ended for good).
//!
//! The pid of the current service is written to `<state-dir>/service.json`,
//! so that a daemon started after a crash stops the service the dead one
//! left behind before it starts its own (it would hold the port).

pub mod init;
pub mod output;
mod probe;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use secrecy::ExposeSecret;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use probe::{AgentHealth, AgentProbe};

use crate::config::{Config, RestartPolicy};
use crate::metrics::Metrics;
use crate::procfs::ProcessIdentity;
use crate::secrets::mask::Masker;
use crate::state_dir::StateDir;

/// First restart delay.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(500);

/// Longest restart delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A service that stayed up this long starts a fresh backoff and burst.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);

/// How long a service left by a crashed daemon gets between SIGTERM and
/// SIGKILL.
const LEFTOVER_GRACE: Duration = Duration::from_secs(5);

/// The service's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceState {
    /// Alive, not yet seen healthy.
    Starting,
    /// Alive and healthy.
    Running,
    /// Alive, was healthy, fails the probe now.
    Unhealthy,
    /// Exited; waiting to be restarted.
    Backoff,
    /// Ended for good.
    Stopped,
}

impl ServiceState {
    /// Every state, for metrics.
    pub const ALL: [&'static str; 5] = ["starting", "running", "unhealthy", "backoff", "stopped"];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Starting => "starting",
            ServiceState::Running => "running",
            ServiceState::Unhealthy => "unhealthy",
            ServiceState::Backoff => "backoff",
            ServiceState::Stopped => "stopped",
        }
    }
}

/// How one run of the service ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceExit {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal number, when one killed it.
    pub signal: Option<i32>,
    /// When.
    pub at: DateTime<Utc>,
}

impl ServiceExit {
    fn from_status(status: std::process::ExitStatus) -> ServiceExit {
        ServiceExit {
            code: status.code(),
            signal: status.signal(),
            at: Utc::now(),
        }
    }

    fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The exit code sandboxd exits with: the service's, 128+N for signal N.
    pub fn exit_code(&self) -> u8 {
        match (self.code, self.signal) {
            (Some(code), _) => code as u8,
            (None, Some(signal)) => 128u8.wrapping_add(signal as u8),
            (None, None) => 1,
        }
    }
}

/// Exponential restart delays: [`BACKOFF_INITIAL`] doubling up to
/// [`BACKOFF_MAX`], at most `max_restarts` in a row; a run that lasted
/// [`STABLE_AFTER`] starts over.
#[derive(Debug, Clone)]
pub struct Backoff {
    max_restarts: u32,
    in_a_row: u32,
}

impl Backoff {
    /// A fresh backoff.
    pub fn new(max_restarts: u32) -> Backoff {
        Backoff {
            max_restarts,
            in_a_row: 0,
        }
    }

    /// The delay before the next restart of a service that was up for
    /// `up_for`, or None when the burst is exhausted.
    pub fn next(&mut self, up_for: Duration) -> Option<Duration> {
        if up_for >= STABLE_AFTER {
            self.in_a_row = 0;
        }
        if self.in_a_row >= self.max_restarts {
            return None;
        }
        let delay = BACKOFF_INITIAL
            .saturating_mul(1u32 << self.in_a_row.min(16))
            .min(BACKOFF_MAX);
        self.in_a_row += 1;
        Some(delay)
    }
}

/// A supervised service (entrypoint mode).
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    command: Vec<String>,
    policy: RestartPolicy,
    exited: CancellationToken,
    stop: CancellationToken,
    /// When the stop turns to SIGKILL, and the signal it starts with.
    stop_request: Mutex<Option<(Instant, Signal)>>,
    live: Mutex<Live>,
    ring: output::Ring,
    final_code: watch::Sender<Option<u8>>,
    metrics: Metrics,
    agent: AgentProbe,
}

#[derive(Debug)]
struct Live {
    pid: Option<u32>,
    state: ServiceState,
    restarts: u64,
    last_exit: Option<ServiceExit>,
    next_start: Option<DateTime<Utc>>,
}

/// What `GET /v1/status` shows of the service.
#[derive(Debug, Clone)]
pub struct ServiceStatus {
    /// Its argv.
    pub command: Vec<String>,
    /// Pid of the current process.
    pub pid: Option<u32>,
    /// `starting`, `running`, `unhealthy`, `backoff`, `stopped`.
    pub state: &'static str,
    /// Restarts so far.
    pub restarts: u64,
    /// The restart policy.
    pub restart_policy: &'static str,
    /// How the last run of it ended.
    pub last_exit: Option<ServiceExit>,
    /// When it is started again (state `backoff`).
    pub next_start: Option<DateTime<Utc>>,
    /// Its last output lines, masked.
    pub recent_output: Vec<output::Line>,
}

impl Service {
    /// Starts the service when a command was given: first stops a service
    /// a crashed daemon left behind, then starts CMD and its supervisor
    /// task. The daemon forwards signals to it ([`Service::signal`]).
    pub async fn start(
        config: &Config,
        command: Vec<String>,
        metrics: Metrics,
        agent: AgentProbe,
    ) -> anyhow::Result<Option<Service>> {
        if command.is_empty() {
            return Ok(None);
        }
        let pid_file = StateDir::new(&config.state_dir).service_pid_file();
        stop_leftover(&pid_file).await;
        let service = Service {
            inner: Arc::new(Inner {
                command,
                policy: config.service.restart,
                exited: CancellationToken::new(),
                stop: CancellationToken::new(),
                stop_request: Mutex::new(None),
                live: Mutex::new(Live {
                    pid: None,
                    state: ServiceState::Starting,
                    restarts: 0,
                    last_exit: None,
                    next_start: None,
                }),
                ring: output::Ring::default(),
                final_code: watch::Sender::new(None),
                metrics,
                agent,
            }),
        };
        let credentials: Vec<String> = [&config.session_key, &config.callback_token]
            .into_iter()
            .flatten()
            .map(|s| s.expose_secret().to_owned())
            .collect();
        let task = Task {
            inner: service.inner.clone(),
            pid_file,
            masker: Masker::new(credentials),
            style: config.service.output,
            backoff: Backoff::new(config.service.max_restarts),
        };
        service.set_state(ServiceState::Starting);
        tokio::spawn(task.supervise());
        Ok(Some(service))
    }

    /// Cancelled when the service has ended for good.
    pub fn exited(&self) -> CancellationToken {
        self.inner.exited.clone()
    }

    /// Its status.
    pub fn status(&self) -> ServiceStatus {
        let live = self.inner.lock_live();
        ServiceStatus {
            command: self.inner.command.clone(),
            pid: live.pid,
            state: live.state.as_str(),
            restarts: live.restarts,
            restart_policy: match self.inner.policy {
                RestartPolicy::Never => "never",
                RestartPolicy::OnFailure => "on-failure",
                RestartPolicy::Always => "always",
            },
            last_exit: live.last_exit,
            next_start: live.next_start,
            recent_output: self.inner.ring.snapshot(),
        }
    }

    /// Stops it: `signal` (the one that stopped sandboxd: SIGTERM or
    /// SIGINT) to its process group now, SIGKILL at `deadline`. Returns the
    /// exit code sandboxd exits with: the service's, 128+N when signal N
    /// killed it.
    pub async fn stop(&self, deadline: Instant, signal: Signal) -> ExitCode {
        *self
            .inner
            .stop_request
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((deadline, signal));
        self.inner.stop.cancel();
        let mut code = self.inner.final_code.subscribe();
        let code = match code.wait_for(Option::is_some).await {
            Ok(code) => code.unwrap_or(1),
            Err(_) => 1,
        };
        ExitCode::from(code)
    }

    /// Sends a signal to the service's process group, if it is running.
    pub fn signal(&self, signal: Signal) {
        let pid = self.inner.lock_live().pid;
        if let Some(pid) = pid {
            tracing::info!(%signal, pid, "forwarding a signal to the service");
            let _ = killpg(Pid::from_raw(pid as i32), signal);
        }
    }

    fn set_state(&self, state: ServiceState) {
        self.inner.set_state(state);
    }
}

impl Inner {
    fn lock_live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_state(&self, state: ServiceState) {
        let changed = {
            let mut live = self.lock_live();
            let changed = live.state != state;
            live.state = state;
            if state != ServiceState::Backoff {
                live.next_start = None;
            }
            changed
        };
        if changed {
            tracing::info!(state = state.as_str(), "service state");
        }
        self.metrics
            .service_state(state.as_str(), &ServiceState::ALL);
    }

    /// The deadline and signal [`Service::stop`] asked for.
    fn stop_request(&self) -> (Instant, Signal) {
        self.stop_request
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or_else(|| (Instant::now(), Signal::SIGTERM))
    }
}

/// The supervisor task's own state.
struct Task {
    inner: Arc<Inner>,
    pid_file: PathBuf,
    masker: Masker,
    style: crate::config::ServiceOutput,
    backoff: Backoff,
}

impl Task {
    async fn supervise(mut self) {
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
            inner.set_state(ServiceState::Backoff);
            inner.lock_live().next_start = chrono::Duration::from_std(delay)
                .ok()
                .map(|d| Utc::now() + d);
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
            crate::durable::Sync::NoFlush,
        ) {
            tracing::warn!(path = %self.pid_file.display(), "cannot record the service's pid: {err}");
        }
    }
}

/// Stops the service a previous (crashed) daemon left running, if any:
/// SIGTERM to its group, SIGKILL after [`LEFTOVER_GRACE`].
async fn stop_leftover(pid_file: &std::path::Path) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_gives_up() {
        let mut backoff = Backoff::new(9);
        let quick = Duration::from_millis(10);
        let delays: Vec<f64> = (0..9)
            .map(|_| backoff.next(quick).unwrap().as_secs_f64())
            .collect();
        assert_eq!(delays, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]);
        assert_eq!(backoff.next(quick), None, "the burst is spent");
    }

    #[test]
    fn backoff_resets_after_a_stable_run() {
        let mut backoff = Backoff::new(2);
        let quick = Duration::from_millis(10);
        assert!(backoff.next(quick).is_some());
        assert!(backoff.next(quick).is_some());
        assert_eq!(backoff.next(quick), None);
        assert_eq!(backoff.next(STABLE_AFTER), Some(BACKOFF_INITIAL));
    }

    #[test]
    fn exit_codes_map_signals_to_128_plus_n() {
        let exit = |code, signal| ServiceExit {
            code,
            signal,
            at: Utc::now(),
        };
        assert_eq!(exit(Some(3), None).exit_code(), 3);
        assert_eq!(exit(None, Some(9)).exit_code(), 137);
        assert_eq!(exit(None, Some(15)).exit_code(), 143);
    }
}
