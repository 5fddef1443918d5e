//! A periodic `GET /alive` of the agent-server, for `GET /v1/status`,
//! trusting the same port owner as the key-filled LookupSecret
//! (`secrets::custody`): on a loopback URL the port must be held by the
//! agent-server's uid (`--agent-server-uid`), or the listener is an
//! impostor, reported as such and never as healthy.

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
    /// Whether `/alive` answered 2xx and the port's owner is the
    /// agent-server's uid.
    pub healthy: bool,
    /// Set when another uid listens on the agent-server's port, in words.
    pub impostor: Option<String>,
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
    /// Starts probing `url` every [`PROBE_INTERVAL`]; `expected_uid` is the
    /// uid the agent-server listens as.
    pub fn start(url: String, http: reqwest::Client, expected_uid: u32) -> AgentProbe {
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
            let parsed = reqwest::Url::parse(&url).ok();
            loop {
                let answered = matches!(
                    http.get(&alive).timeout(Duration::from_secs(2)).send().await,
                    Ok(res) if res.status().is_success()
                );
                let impostor = parsed.as_ref().and_then(|url| impostor(url, expected_uid));
                {
                    let mut health = health.lock().unwrap_or_else(|e| e.into_inner());
                    health.healthy = answered && impostor.is_none();
                    health.impostor = impostor;
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

/// Who else holds the agent-server's port, in words; `None` when only
/// `expected_uid` (or nothing) listens there, or the host is not loopback.
fn impostor(url: &reqwest::Url, expected_uid: u32) -> Option<String> {
    let holders = crate::secrets::custody::loopback_port_holders(url)?;
    let others: Vec<String> = holders
        .iter()
        .filter(|uid| **uid != expected_uid)
        .map(u32::to_string)
        .collect();
    if others.is_empty() {
        return None;
    }
    Some(format!(
        "the agent-server's port is held by uid {}, not the agent-server's uid {expected_uid} \
         (--agent-server-uid): an impostor",
        others.join(", ")
    ))
}
