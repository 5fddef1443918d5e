//! The shim's two watcher threads, both acting on the phase running now:
//! forwarded signals (SIGTERM and SIGINT also mark the run cancelled) and
//! the deadline (SIGTERM to the group, SIGKILL after the grace). Both end
//! when the run is marked finished.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, SigSet, Signal};
use nix::unistd::Pid;

use super::parked::Parked;
use super::{lock, Shared};
use crate::signals;

/// Starts the thread that, once handed the run's state, takes the
/// (blocked) signals in `set` and passes them on to the current process
/// group. Signals that came before stay pending until then.
pub(super) fn park_signal_thread(set: SigSet) -> Parked<Arc<Shared>> {
    Parked::start(move |shared: Arc<Shared>| loop {
        let Ok(signal) = set.wait() else { continue };
        if signals::asks_to_stop(signal) {
            shared.cancelled.store(true, Ordering::SeqCst);
        }
        signal_current(&shared, signal);
    })
}

/// When a run ends by its deadline.
pub(super) struct Deadline {
    /// When the run started.
    pub(super) started: Instant,
    /// How long it may run.
    pub(super) timeout: Duration,
    /// SIGTERM to SIGKILL.
    pub(super) grace: Duration,
}

/// Starts the thread that, once handed the run's state and deadline, ends
/// the run at the deadline.
pub(super) fn park_deadline_thread() -> Parked<(Arc<Shared>, Deadline)> {
    Parked::start(|(shared, deadline): (Arc<Shared>, Deadline)| {
        if !wait_finished_until(&shared, deadline.started + deadline.timeout) {
            return;
        }
        shared.timed_out.store(true, Ordering::SeqCst);
        signal_current(&shared, Signal::SIGTERM);
        if !wait_finished_until(&shared, Instant::now() + deadline.grace) {
            return;
        }
        signal_current(&shared, Signal::SIGKILL);
    })
}

/// Marks the run finished: the deadline thread stops waiting.
pub(super) fn finish(shared: &Shared) {
    let (lock_, cvar) = &shared.finished;
    *lock(lock_) = true;
    cvar.notify_all();
}

/// Sleeps until `until`; false when the run finished first.
fn wait_finished_until(shared: &Shared, until: Instant) -> bool {
    let (lock_, cvar) = &shared.finished;
    let mut finished = lock(lock_);
    loop {
        if *finished {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        finished = cvar
            .wait_timeout(finished, until - now)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0);
    }
}

fn signal_current(shared: &Shared, signal: Signal) {
    let pgid = shared.current_pgid.load(Ordering::SeqCst);
    if pgid > 0 {
        let _ = killpg(Pid::from_raw(pgid), signal);
    }
}
