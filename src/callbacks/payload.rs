//! The completion payload: the body the automation service's
//! `RunCompleteRequest` accepts, built from a run's [`Completion`]. Pure.
//!
//! The service forbids unknown fields, so the body is a closed struct with
//! exactly the fields sandboxd fills: `status`, `run_id`, and `error`,
//! `conversation_id`, `cost` only when there is a value. It is not an API
//! DTO (it goes out to another service, and it is stored in the outbox as
//! it was built), so it lives here rather than in `api/`.

use serde::{Deserialize, Serialize};

use super::{Completion, Outcome};

/// Characters of stderr carried by a `FAILED` payload's `error`.
pub(crate) const STDERR_CHARS: usize = 1000;

/// Characters of stdout carried by a `FAILED` payload's `error`.
pub(crate) const STDOUT_CHARS: usize = 500;

/// `status` of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum PayloadStatus {
    /// The run succeeded (exit 0).
    Completed,
    /// Any other end.
    Failed,
}

/// Body of `POST <callback.url>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Payload {
    /// `COMPLETED` or `FAILED`.
    pub status: PayloadStatus,
    /// The automation service's run id (`callback.run_id`).
    pub run_id: String,
    /// What happened and the output tails, or the error the script itself
    /// posted (an SDK error event); `FAILED` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<serde_json::Value>,
    /// Reported by the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// Reported by the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    /// Posted by the script to its `AUTOMATION_CALLBACK_URL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocking_factor: Option<serde_json::Value>,
    /// Posted by the script to its `AUTOMATION_CALLBACK_URL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_outcome: Option<serde_json::Value>,
}

/// Builds the payload of a run's completion: the run's end combined with
/// what its script posted to its `AUTOMATION_CALLBACK_URL`. The exit
/// decides, the script may only make it worse: exit 0 is `COMPLETED`
/// unless the script said `FAILED` (then its error); any other end is
/// `FAILED` whatever the script said, with the script's own error when it
/// said `FAILED` with one and the process exited non-zero, else sandboxd's
/// text (exit code, signal, timeout, cancel, and the output tails).
pub(crate) fn build(completion: &Completion) -> Payload {
    let script = &completion.report;
    let script_failed = script.status.as_deref() == Some("FAILED");
    let (status, error) = match completion.outcome {
        Outcome::Succeeded if !script_failed => (PayloadStatus::Completed, None),
        Outcome::Succeeded => (
            PayloadStatus::Failed,
            Some(script.error.clone().unwrap_or_else(|| {
                serde_json::Value::String("the script reported FAILED, then exited 0".into())
            })),
        ),
        Outcome::Failed if script_failed && script.error.is_some() => {
            (PayloadStatus::Failed, script.error.clone())
        }
        _ => (
            PayloadStatus::Failed,
            Some(serde_json::Value::String(error_text(completion))),
        ),
    };
    Payload {
        status,
        run_id: completion.target.run_id.clone(),
        error,
        conversation_id: script.conversation_id.clone(),
        cost: script.cost.filter(|c| c.is_finite()),
        blocking_factor: script.blocking_factor.clone(),
        task_outcome: script.task_outcome.clone(),
    }
}

/// The service's own failure text: the reason, a line saying the output
/// was truncated when it was, then the last 1000 characters of stderr and
/// the last 500 of stdout (both already masked).
pub(crate) fn error_text(completion: &Completion) -> String {
    let truncated = match &completion.truncated {
        Some(truncated) => format!("\noutput truncated: {truncated}"),
        None => String::new(),
    };
    format!(
        "{}{truncated}\nstderr: {}\nstdout: {}",
        reason(completion),
        last_chars(&completion.stderr_tail, STDERR_CHARS),
        last_chars(&completion.stdout_tail, STDOUT_CHARS),
    )
}

/// What ended the run, in one line of words.
fn reason(completion: &Completion) -> String {
    if let Some(error) = completion.error.as_deref().filter(|e| !e.is_empty()) {
        return error.to_owned();
    }
    match (completion.exit_code, completion.signal.as_deref()) {
        (_, Some(signal)) => format!("killed by {signal}"),
        (Some(code), None) => format!("exit_code={code}"),
        (None, None) => format!("run ended {}", completion.outcome.as_str()),
    }
}

/// The last `n` characters of `text` (Python's `text[-n:]`).
fn last_chars(text: &str, n: usize) -> &str {
    match text.char_indices().rev().nth(n.saturating_sub(1)) {
        Some((index, _)) if n > 0 => &text[index..],
        _ if n == 0 => "",
        _ => text,
    }
}

#[cfg(test)]
mod tests;
