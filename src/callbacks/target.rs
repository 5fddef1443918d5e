//! The types a run hands to the outbox: where its completion goes
//! ([`CallbackTarget`]), how it ended ([`Outcome`]) and what its script
//! reported ([`RunReport`]). `runs` depends on these; `callbacks` knows
//! nothing of `runs`.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A bearer token as stored: a [`SecretString`] in memory (never in
/// `Debug`), plain text only inside the daemon's own 0600 files.
#[derive(Clone)]
pub struct StoredToken(pub SecretString);

impl std::fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredToken(****)")
    }
}

impl PartialEq for StoredToken {
    fn eq(&self, other: &StoredToken) -> bool {
        use subtle::ConstantTimeEq;
        let (a, b) = (self.0.expose_secret(), other.0.expose_secret());
        a.as_bytes().ct_eq(b.as_bytes()).into()
    }
}

impl From<&str> for StoredToken {
    fn from(text: &str) -> StoredToken {
        StoredToken(SecretString::from(text))
    }
}

impl Serialize for StoredToken {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.expose_secret())
    }
}

impl<'de> Deserialize<'de> for StoredToken {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<StoredToken, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(StoredToken(SecretString::from(text)))
    }
}

/// Where a run's completion is reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackTarget {
    /// The `.../runs/{id}/complete` URL.
    pub url: String,
    /// Bearer token; kept so delivery survives restarts.
    pub token: Option<StoredToken>,
    /// `run_id` in the payload.
    pub run_id: String,
    /// Also post phase reports.
    pub phases: bool,
}

/// Values an SDK script reported about its run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The conversation the run drove.
    pub conversation_id: Option<String>,
    /// What it cost.
    pub cost: Option<f64>,
    /// The status the script posted to its `AUTOMATION_CALLBACK_URL`
    /// (`COMPLETED` or `FAILED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The error the script posted (a string or an SDK error event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<serde_json::Value>,
    /// The task outcome the script posted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_outcome: Option<serde_json::Value>,
    /// The blocking factor the script posted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocking_factor: Option<serde_json::Value>,
}

impl RunReport {
    /// Takes the values `newer` carries, keeping the others.
    pub fn merge(&mut self, newer: RunReport) {
        if newer.conversation_id.is_some() {
            self.conversation_id = newer.conversation_id;
        }
        if newer.cost.is_some() {
            self.cost = newer.cost;
        }
        if newer.status.is_some() {
            self.status = newer.status;
            // A new status comes with its own error (or none).
            self.error = newer.error;
        }
        if newer.task_outcome.is_some() {
            self.task_outcome = newer.task_outcome;
        }
        if newer.blocking_factor.is_some() {
            self.blocking_factor = newer.blocking_factor;
        }
    }
}

/// How a run ended, as the completion reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The command exited 0.
    Succeeded,
    /// Any other exit, a signal, a failed setup or spawn.
    Failed,
    /// The deadline passed.
    TimedOut,
    /// Cancelled, or stopped by sandboxd's shutdown.
    Cancelled,
    /// sandboxd cannot know how it ended.
    Lost,
}

impl Outcome {
    /// The wire name (as in a run's `state`).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::Cancelled => "cancelled",
            Outcome::Lost => "lost",
        }
    }
}
