//! The delivery loop: one task that waits for the next due callback, a
//! wake-up or shutdown, and starts an attempt for each due callback (first
//! attempts start at once from [`super::Outbox::enqueue`]; the loop runs
//! retries and callbacks resumed after a restart). Each attempt settles
//! its entry (delivered, failed, or due again after a backoff with full
//! jitter) and writes it back to disk.
//! A completion waits while its run still has phases to post
//! ([`super::phases`]).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use tokio::time::Instant;

use super::deliver::{self, Outcome};
use super::store::DeliveryState;
use super::Shared;
use crate::durable;

/// Longest wait between two attempts of our own choosing (a `Retry-After`
/// from the service is honoured even when longer).
pub(crate) const BACKOFF_CAP: Duration = Duration::from_secs(60);

/// Longest wait between two attempts at a receiver that cannot be
/// connected to: a refused connection costs it nothing, and a service that
/// is restarting gets what waits for it within this time of its return.
pub(crate) const UNREACHABLE_BACKOFF_CAP: Duration = Duration::from_secs(10);

/// How often outbox files whose write failed are written again.
const UNSAVED_RETRY: Duration = Duration::from_secs(1);

/// Runs until the outbox is stopped.
pub(super) async fn run(shared: Arc<Shared>) {
    loop {
        let mut next = dispatch_due(&shared);
        if shared.save_unsaved() {
            let retry = Instant::now() + UNSAVED_RETRY;
            next = Some(next.map_or(retry, |at| at.min(retry)));
        }
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {}
            () = shared.wake.notified() => {}
            () = shared.stop.cancelled() => return,
        }
    }
}

/// Starts an attempt for every due entry; returns when the next one is due.
fn dispatch_due(shared: &Arc<Shared>) -> Option<Instant> {
    let now = Instant::now();
    let mut next: Option<Instant> = None;
    let mut due = Vec::new();
    {
        let mut entries = shared.lock_entries();
        for (run_id, entry) in entries.iter_mut() {
            let Some(at) = entry.due else { continue };
            // Its phases go first; their task wakes the loop when done.
            if shared.phases.pending(run_id) {
                continue;
            }
            if at <= now {
                entry.due = None;
                due.push(run_id.clone());
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
    }
    for run_id in due {
        tokio::spawn(attempt(shared.clone(), run_id));
    }
    next
}

/// One attempt for one run's callback, then its settlement. It waits for
/// a slot of its receiver's origin, then for one of all attempts: a
/// receiver that hangs holds at most its own origin's slots, and the
/// callbacks of other receivers go on.
pub(super) async fn attempt(shared: Arc<Shared>, run_id: String) {
    let url = {
        let entries = shared.lock_entries();
        let Some(entry) = entries.get(&run_id) else {
            return;
        };
        entry.record.url.clone()
    };
    let (origin, origin_slots) = shared.origin_slots(&url);
    if let Ok(_origin_permit) = origin_slots.acquire().await {
        if let Ok(_permit) = shared.slots.acquire().await {
            attempt_now(&shared, &run_id).await;
        }
    }
    drop(origin_slots);
    shared.release_origin(&origin);
}

async fn attempt_now(shared: &Arc<Shared>, run_id: &str) {
    let prepared = {
        let entries = shared.lock_entries();
        entries.get(run_id).map(|entry| {
            let record = &entry.record;
            (
                record.url.clone(),
                record.token.as_ref().map(|t| t.0.clone()),
                serde_json::to_vec(&record.payload).unwrap_or_default(),
            )
        })
    };
    // Forgotten (the run was deleted) while waiting.
    let Some((url, token, body)) = prepared else {
        return;
    };
    let started = std::time::Instant::now();
    let result = deliver::post(
        &shared.client,
        deliver::Request {
            url: &url,
            token: token.as_ref(),
            idempotency_key: Some(run_id),
            body,
            timeout: None,
        },
    )
    .await;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let settled = settle(shared, run_id, &result);
    if let Some((state, attempts, retry_in)) = settled {
        let label = match (result.outcome, state) {
            (Outcome::Retry, DeliveryState::Failed) => "failed",
            (outcome, _) => outcome.as_str(),
        };
        shared.metrics.callback_attempt(label);
        let retry_in_s = retry_in.map(|d| d.as_secs_f64());
        match state {
            DeliveryState::Delivered => tracing::info!(
                run_id,
                url,
                attempt = attempts,
                status = result.status,
                elapsed_ms,
                "callback delivered"
            ),
            DeliveryState::Pending => tracing::warn!(
                run_id,
                url,
                attempt = attempts,
                status = result.status,
                elapsed_ms,
                retry_in_s,
                error = result.error.as_deref(),
                "callback attempt failed; will retry"
            ),
            DeliveryState::Failed => tracing::error!(
                run_id,
                url,
                attempt = attempts,
                status = result.status,
                elapsed_ms,
                error = result.error.as_deref(),
                "callback failed; giving up"
            ),
        }
    }
    flush_settled(shared, run_id).await;
    shared.wake.notify_one();
    shared.changed.notify_waiters();
}

/// Flushes the rewritten file of a settled attempt: a rename of unflushed
/// data over the flushed file could leave neither after a power loss, and
/// a pending callback with it. Off the entries lock; a file removed
/// meanwhile (the run was deleted) is fine.
async fn flush_settled(shared: &Arc<Shared>, run_id: &str) {
    let (store, id) = (shared.store.clone(), run_id.to_owned());
    let flushed = tokio::task::spawn_blocking(move || store.flush(&id)).await;
    if let Ok(Err(err)) = flushed {
        if err.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(run_id, "cannot flush the callback's outbox file: {err}");
        }
    }
}

/// Applies an attempt's result to the entry and writes it. Returns the
/// new state, the attempt count and the wait before the next attempt.
fn settle(
    shared: &Shared,
    run_id: &str,
    result: &deliver::Attempt,
) -> Option<(DeliveryState, u32, Option<Duration>)> {
    let mut entries = shared.lock_entries();
    let entry = entries.get_mut(run_id)?;
    let record = &mut entry.record;
    record.attempts += 1;
    record.last_status = result.status;
    record.last_error = result.error.clone();
    let mut retry_in = None;
    match result.outcome {
        Outcome::Delivered => {
            record.state = DeliveryState::Delivered;
            record.delivered_at = Some(Utc::now());
        }
        Outcome::Failed => record.state = DeliveryState::Failed,
        Outcome::Retry => {
            let wait = retry_wait(
                record.attempts,
                shared.config.callback_backoff,
                result,
                rand::thread_rng().gen(),
            );
            let age = (Utc::now() - record.created_at)
                .to_std()
                .unwrap_or_default();
            let max_age = shared.config.callback_max_age;
            if age + wait > max_age {
                record.state = DeliveryState::Failed;
                record.last_error = Some(format!(
                    "gave up after {} attempts within --callback-max-age {}: {}",
                    record.attempts,
                    humantime::format_duration(max_age),
                    result.error.as_deref().unwrap_or("no answer"),
                ));
            } else {
                entry.due = Some(Instant::now() + wait);
                retry_in = Some(wait);
            }
        }
    }
    let (state, attempts) = (record.state, record.attempts);
    // Written under the lock, so a concurrent `forget` cannot be undone by
    // a late write; flushed after it ([`flush_settled`]).
    if let Err(err) = shared.save_entry(&entry.record, durable::Durability::NoFlush) {
        tracing::error!(run_id, "cannot write the callback's outbox file: {err}");
    }
    Some((state, attempts, retry_in))
}

/// Wait after failed attempt number `attempts`: [`backoff`], at most
/// [`UNREACHABLE_BACKOFF_CAP`] when no connection could be made, and never
/// shorter than the answer's `Retry-After`.
pub(crate) fn retry_wait(
    attempts: u32,
    base: Duration,
    result: &deliver::Attempt,
    unit: f64,
) -> Duration {
    let cap = match result.unreachable {
        true => UNREACHABLE_BACKOFF_CAP,
        false => BACKOFF_CAP,
    };
    let jittered = backoff(attempts, base, cap, unit);
    result.retry_after.map_or(jittered, |ra| ra.max(jittered))
}

/// Wait before retry number `retry` (1 = the first retry): full jitter,
/// a random time up to `min(cap, base × 2^(retry-1))`; `unit` is a random
/// number in [0, 1).
fn backoff(retry: u32, base: Duration, cap: Duration, unit: f64) -> Duration {
    let exponent = retry.saturating_sub(1).min(30);
    let ceiling = base.saturating_mul(1 << exponent).min(cap);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

/// The phase URL beside a completion URL: `.../complete` → `.../phase`.
pub(crate) fn phase_url(complete_url: &str) -> Option<String> {
    let mut url = reqwest::Url::parse(complete_url).ok()?;
    let path = url.path().trim_end_matches('/');
    let base = path.strip_suffix("/complete")?;
    let phase = format!("{base}/phase");
    url.set_path(&phase);
    Some(url.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Full jitter: the first retry comes within the base (1 s by default),
    /// the ceiling doubles per retry and stops at 60 s.
    #[test]
    fn backoff_schedule() {
        let base = Duration::from_secs(1);
        let top = 0.999_999;
        assert_eq!(backoff(1, base, BACKOFF_CAP, 0.0), Duration::ZERO);
        assert!(backoff(1, base, BACKOFF_CAP, top) <= Duration::from_secs(1));
        assert!(backoff(1, base, BACKOFF_CAP, top) > Duration::from_millis(999));
        for (retry, ceiling) in [(2, 2), (3, 4), (4, 8), (6, 32), (7, 60), (8, 60), (40, 60)] {
            let wait = backoff(retry, base, BACKOFF_CAP, top);
            assert!(
                wait <= Duration::from_secs(ceiling),
                "retry {retry}: {wait:?}"
            );
            assert!(
                wait > Duration::from_secs(ceiling) - Duration::from_millis(1),
                "retry {retry}: {wait:?}"
            );
        }
        assert_eq!(backoff(5, base, BACKOFF_CAP, 0.5), Duration::from_secs(8));
        assert!(backoff(u32::MAX, Duration::from_secs(3600), BACKOFF_CAP, top) <= BACKOFF_CAP);
    }

    /// A receiver that cannot be connected to is tried again within 10 s;
    /// one that answers backs off to 60 s; `Retry-After` is a floor.
    #[test]
    fn an_unreachable_receiver_is_retried_within_10_s() {
        let base = Duration::from_secs(1);
        let top = 0.999_999;
        let attempt = |unreachable, retry_after| deliver::Attempt {
            outcome: Outcome::Retry,
            status: None,
            retry_after,
            error: None,
            unreachable,
        };
        for attempts in [5, 8, 40] {
            let refused = retry_wait(attempts, base, &attempt(true, None), top);
            assert!(refused <= UNREACHABLE_BACKOFF_CAP && refused > Duration::from_millis(9_999));
        }
        assert!(retry_wait(2, base, &attempt(true, None), top) <= Duration::from_secs(2));
        let answered = retry_wait(40, base, &attempt(false, None), top);
        assert!(answered > Duration::from_secs(59));
        let told = retry_wait(
            40,
            base,
            &attempt(true, Some(Duration::from_secs(120))),
            top,
        );
        assert_eq!(told, Duration::from_secs(120));
    }

    /// The phase URL is the completion URL's sibling; other URLs have none.
    #[test]
    fn phase_url_table() {
        let table = [
            (
                "https://a.example/api/automation/v1/runs/r1/complete",
                Some("https://a.example/api/automation/v1/runs/r1/phase"),
            ),
            (
                "http://127.0.0.1:8/runs/r1/complete/",
                Some("http://127.0.0.1:8/runs/r1/phase"),
            ),
            (
                "http://h/runs/r1/complete?x=1",
                Some("http://h/runs/r1/phase?x=1"),
            ),
            ("http://h/runs/r1/done", None),
            ("http://h/completed", None),
            ("not a url", None),
        ];
        for (url, want) in table {
            assert_eq!(phase_url(url).as_deref(), want, "{url}");
        }
    }
}
