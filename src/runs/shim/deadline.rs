//! The shim's two watcher threads, both acting on the phase running now:
//! forwarded signals (SIGTERM and SIGINT also mark the run cancelled) and
//! the deadline (SIGTERM to the group, SIGKILL after the grace). Both end
//! when the run is marked finished.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, SigSet, Signal};
use nix::unistd::Pid;

use super::{lock, Shared};
use crate::signals;

/// Starts the thread that takes the (blocked) signals in `set` and passes
/// them on to the current process group.
pub(super) fn spawn_signal_thread(shared: Arc<Shared>, set: SigSet) {
    std::thread::spawn(move || loop {
        let Ok(signal) = set.wait() else { continue };
        if signals::asks_to_stop(signal) {
            shared.cancelled.store(true, Ordering::SeqCst);
        }
        signal_current(&shared, signal);
    });
}

/// Starts the thread that ends the run at `started + timeout`.
pub(super) fn spawn_deadline_thread(
    shared: Arc<Shared>,
    started: Instant,
    timeout: Duration,
    grace: Duration,
) {
    let deadline = started + timeout;
    std::thread::spawn(move || {
        if !wait_finished_until(&shared, deadline) {
            return;
        }
        shared.timed_out.store(true, Ordering::SeqCst);
        signal_current(&shared, Signal::SIGTERM);
        if !wait_finished_until(&shared, Instant::now() + grace) {
            return;
        }
        signal_current(&shared, Signal::SIGKILL);
    });
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
