//! The delivery of one run's phase queue: front to back, each phase
//! retried until the service takes it, the queue dropped once the run's
//! completion has waited long enough, the file kept in step.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rand::Rng;

use super::super::deliver::{self, Outcome};
use super::super::worker::retry_wait;
use super::super::Shared;
use super::{PendingPhase, COMPLETION_WAITS_AT_MOST, PHASE_TIMEOUT};
use crate::durable;

/// Posts a run's phases in order until its queue is empty, then lets its
/// completion go. Returns early, leaving the file, when the outbox stops.
pub(super) async fn post_all(shared: Arc<Shared>, run_id: String) {
    loop {
        let waited = completion_waiting_for(&shared, &run_id);
        let over = waited.is_some_and(|w| w >= COMPLETION_WAITS_AT_MOST);
        let Some(next) = next_phase(&shared, &run_id, over) else {
            break;
        };
        let body = serde_json::json!({ "phase": next.front.phase })
            .to_string()
            .into_bytes();
        let result = tokio::select! {
            result = deliver::post(&shared.client, deliver::Request {
                url: &next.url,
                token: next.token.as_ref(),
                idempotency_key: None,
                body,
                timeout: Some(PHASE_TIMEOUT.min(shared.config.callback_timeout)),
            }) => result,
            () = shared.stop.cancelled() => return,
        };
        let wait = settle_front(&shared, &run_id, &next.front, &result);
        store_settled(&shared, &run_id).await;
        let Some(mut wait) = wait else {
            continue;
        };
        // A completion that is waiting is not kept past its limit.
        if let Some(waited) = completion_waiting_for(&shared, &run_id) {
            wait = wait.min(COMPLETION_WAITS_AT_MOST.saturating_sub(waited));
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = next.completion_waits.notified() => {}
            () = shared.stop.cancelled() => return,
        }
    }
    store_settled(&shared, &run_id).await;
    // The completion held back for this queue may go now.
    shared.wake.notify_one();
    shared.changed.notify_waiters();
}

/// Writes the queue as settled (flushed: a rename of unflushed data over
/// the flushed file could leave neither after a power loss), or removes
/// its file once it is empty.
async fn store_settled(shared: &Arc<Shared>, run_id: &str) {
    let (shared, run_id) = (shared.clone(), run_id.to_owned());
    let stored = tokio::task::spawn_blocking(move || {
        let stored = shared.phases.sync_file(&run_id, durable::Durability::Flush);
        (run_id, stored)
    })
    .await;
    if let Ok((run_id, Err(err))) = stored {
        tracing::warn!(run_id, "cannot write the run's phase file: {err}");
    }
}

/// How long the run's completion has been waiting (since the run ended),
/// when it is in the outbox.
fn completion_waiting_for(shared: &Shared, run_id: &str) -> Option<Duration> {
    let entries = shared.lock_entries();
    let record = &entries.get(run_id)?.record;
    Some(
        (Utc::now() - record.created_at)
            .to_std()
            .unwrap_or_default(),
    )
}

/// The queue's front, where and how to post it.
struct NextPhase {
    front: PendingPhase,
    url: String,
    token: Option<secrecy::SecretString>,
    completion_waits: Arc<tokio::sync::Notify>,
}

/// The queue's front with where and how to post it; `None` once the queue
/// is empty (it is removed) or, with `give_up`, dropped whole.
fn next_phase(shared: &Shared, run_id: &str, give_up: bool) -> Option<NextPhase> {
    let mut queues = shared.phases.lock();
    let queue = queues.get(run_id)?;
    match queue.pending.first() {
        Some(front) if !give_up => Some(NextPhase {
            front: front.clone(),
            url: queue.url.clone(),
            token: queue.token.as_ref().map(|t| t.0.clone()),
            completion_waits: queue.completion_waits.clone(),
        }),
        _ => {
            if !queue.pending.is_empty() {
                tracing::warn!(
                    run_id,
                    dropped = queue.pending.len(),
                    "phase reports dropped: the run's completion waits no longer"
                );
            }
            queues.remove(run_id);
            None
        }
    }
}

/// Applies an attempt's result to the queue front in memory: taken or
/// given up (it leaves the queue), or tried again after the returned wait.
/// The caller stores the queue ([`store_settled`]).
fn settle_front(
    shared: &Shared,
    run_id: &str,
    front: &PendingPhase,
    result: &deliver::Attempt,
) -> Option<Duration> {
    let attempts = front.attempts + 1;
    let mut wait = None;
    if result.outcome == Outcome::Retry {
        let next = retry_wait(
            attempts,
            shared.config.callback_backoff,
            result,
            rand::thread_rng().gen(),
        );
        let age = (Utc::now() - front.posted_at).to_std().unwrap_or_default();
        if age + next <= shared.config.callback_max_age {
            wait = Some(next);
        }
    }
    match (result.outcome, wait) {
        (Outcome::Delivered, _) => {
            tracing::debug!(
                run_id,
                phase = front.phase,
                status = result.status,
                "phase reported"
            );
        }
        (_, None) => tracing::warn!(
            run_id,
            phase = front.phase,
            attempts,
            status = result.status,
            error = result.error.as_deref(),
            "phase report given up"
        ),
        (_, Some(wait)) => tracing::info!(
            run_id,
            phase = front.phase,
            attempts,
            status = result.status,
            error = result.error.as_deref(),
            retry_in_s = wait.as_secs_f64(),
            "phase report failed; will retry"
        ),
    }
    {
        let mut queues = shared.phases.lock();
        let queue = queues.get_mut(run_id)?;
        match (queue.pending.first_mut(), wait) {
            (Some(first), Some(_)) => first.attempts = attempts,
            (Some(_), None) => {
                queue.pending.remove(0);
            }
            (None, _) => {}
        }
    }
    wait
}
