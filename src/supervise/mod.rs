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

mod backoff;
pub(crate) mod handover;
pub(crate) mod init;
pub(crate) mod output;
mod probe;
mod status;
mod task;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use secrecy::ExposeSecret;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub(crate) use backoff::Backoff;
pub(crate) use probe::AgentProbe;
pub(crate) use status::{ServiceExit, ServiceState, ServiceStatus};
use task::{stop_leftover, Task};

use crate::config::{Config, RestartPolicy};
use crate::metrics::Metrics;
use crate::secrets::mask::Masker;
use crate::state_dir::StateDir;

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
    /// The user the service runs as, when not sandboxd's.
    run_as: Option<crate::config::RunAs>,
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
                run_as: config.service.run_as,
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
        self.set_state_with(state, None);
    }

    /// Sets the state and, in the same lock, when the next start is due
    /// (a backoff's): a status read never sees one without the other.
    fn set_state_with(&self, state: ServiceState, next_start: Option<DateTime<Utc>>) {
        let changed = {
            let mut live = self.lock_live();
            let changed = live.state != state;
            live.state = state;
            live.next_start = next_start.filter(|_| state == ServiceState::Backoff);
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
