//! The agent-server side of the sandbox: the health probe of
//! `--agent-server-url`, the supervised service of entrypoint mode, and
//! systemd notification.

mod probe;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

pub use probe::{AgentHealth, AgentProbe};

use crate::config::Config;
use crate::metrics::Metrics;

/// A supervised service (entrypoint mode).
#[derive(Clone)]
pub struct Service {
    inner: Arc<ServiceInner>,
}

struct ServiceInner {
    command: Vec<String>,
    exited: CancellationToken,
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
}

impl Service {
    /// Starts the service when a command was given.
    pub fn start(
        _config: &Config,
        command: Vec<String>,
        _metrics: Metrics,
    ) -> anyhow::Result<Option<Service>> {
        if command.is_empty() {
            return Ok(None);
        }
        anyhow::bail!("supervising a service (`serve -- CMD`) is not available in this build")
    }

    /// Cancelled when the service has ended for good.
    pub fn exited(&self) -> CancellationToken {
        self.inner.exited.clone()
    }

    /// Its status.
    pub fn status(&self) -> ServiceStatus {
        ServiceStatus {
            command: self.inner.command.clone(),
            pid: None,
            state: "stopped",
            restarts: 0,
        }
    }

    /// Stops it by `deadline`; returns the exit code sandboxd should exit with.
    pub async fn stop(&self, _deadline: Instant) -> ExitCode {
        ExitCode::SUCCESS
    }
}

/// Tells systemd (when `NOTIFY_SOCKET` is set) that sandboxd is ready, and
/// starts watchdog pings when `WATCHDOG_USEC` asks for them. The pings come
/// from a task on the same runtime as the API, so they stop when the event
/// loop stalls.
pub fn notify_ready() {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        let period = std::time::Duration::from_micros(usec / 2);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            loop {
                ticker.tick().await;
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            }
        });
    }
}
