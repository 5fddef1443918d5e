//! A periodic `GET /alive` of the agent-server, for `GET /v1/status`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// How often the agent-server is probed.
pub(super) const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// The last probe's outcome.
#[derive(Debug, Clone, Default)]
pub struct AgentHealth {
    /// The probed base URL.
    pub url: String,
    /// Whether `/alive` answered 2xx.
    pub healthy: bool,
    /// When it was last probed.
    pub checked_at: Option<DateTime<Utc>>,
}

/// Handle on the probe task's latest result.
#[derive(Clone)]
pub struct AgentProbe {
    health: Arc<Mutex<AgentHealth>>,
    wake: Arc<tokio::sync::Notify>,
}

impl AgentProbe {
    /// Starts probing `url` every [`PROBE_INTERVAL`].
    pub fn start(url: String, http: reqwest::Client) -> AgentProbe {
        let health = Arc::new(Mutex::new(AgentHealth {
            url: url.clone(),
            ..AgentHealth::default()
        }));
        let wake = Arc::new(tokio::sync::Notify::new());
        let probe = AgentProbe {
            health: health.clone(),
            wake: wake.clone(),
        };
        tokio::spawn(async move {
            let alive = format!("{url}/alive");
            loop {
                let healthy = matches!(
                    http.get(&alive).timeout(Duration::from_secs(2)).send().await,
                    Ok(res) if res.status().is_success()
                );
                {
                    let mut health = health.lock().unwrap_or_else(|e| e.into_inner());
                    health.healthy = healthy;
                    health.checked_at = Some(Utc::now());
                }
                tokio::select! {
                    _ = tokio::time::sleep(PROBE_INTERVAL) => {}
                    _ = wake.notified() => {}
                }
            }
        });
        probe
    }

    /// The latest result.
    pub fn health(&self) -> AgentHealth {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Probes again now (after the service restarted, say).
    pub fn probe_now(&self) {
        self.wake.notify_one();
    }
}
