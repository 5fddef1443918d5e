//! The run's deadline and the signals the shim passes on, both acting on
//! the phase running now and both taken by the main thread between reads
//! of the run's output (`capture::Pump` polls with the deadline as its
//! timeout and reads the signals from a `signalfd`): no thread of the
//! shim waits on a timer or in `sigwait`, so the run's start and end wake
//! the main thread alone.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::Shared;
use crate::signals;

/// Where the run stands against its deadline: SIGTERM to the group at the
/// deadline, SIGKILL after the grace.
pub(super) struct Deadline {
    /// When the next step is due; `None` once there is none (no deadline
    /// within reach, or SIGKILL sent).
    next: Option<Instant>,
    /// SIGTERM to SIGKILL.
    grace: Duration,
    /// Whether SIGTERM was sent.
    terminated: bool,
}

impl Deadline {
    /// A deadline `timeout` after `started`.
    pub(super) fn new(started: Instant, timeout: Duration, grace: Duration) -> Deadline {
        Deadline {
            next: started.checked_add(timeout),
            grace,
            terminated: false,
        }
    }

    /// A run without a deadline (before the spec names one).
    pub(super) fn none() -> Deadline {
        Deadline {
            next: None,
            grace: Duration::ZERO,
            terminated: false,
        }
    }

    /// How long until the next step is due; `None`: nothing is.
    pub(super) fn wait(&self, now: Instant) -> Option<Duration> {
        self.next.map(|at| at.saturating_duration_since(now))
    }

    /// The signal due at `now`, if any: SIGTERM at the deadline, SIGKILL
    /// when the grace has passed; each is due once.
    fn due(&mut self, now: Instant) -> Option<Signal> {
        if self.next? > now {
            return None;
        }
        if self.terminated {
            self.next = None;
            return Some(Signal::SIGKILL);
        }
        self.terminated = true;
        self.next = now.checked_add(self.grace);
        Some(Signal::SIGTERM)
    }

    /// Takes the step due at `now`, if any: the run is marked timed out
    /// at its SIGTERM.
    pub(super) fn enforce(&mut self, shared: &Shared, now: Instant) {
        let Some(signal) = self.due(now) else { return };
        if signal == Signal::SIGTERM {
            shared.timed_out.store(true, Ordering::SeqCst);
        }
        signal_current(shared, signal);
    }
}

/// A forwarded signal reached the shim: SIGTERM and SIGINT also mark the
/// run cancelled; each is passed on to the current process group.
pub(super) fn forward(shared: &Shared, signal: Signal) {
    if signals::asks_to_stop(signal) {
        shared.cancelled.store(true, Ordering::SeqCst);
    }
    signal_current(shared, signal);
}

fn signal_current(shared: &Shared, signal: Signal) {
    let pgid = shared.current_pgid.load(Ordering::SeqCst);
    if pgid > 0 {
        let _ = killpg(Pid::from_raw(pgid), signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_terminates_then_kills_after_the_grace() {
        let start = Instant::now();
        let mut deadline = Deadline::new(start, Duration::from_secs(10), Duration::from_secs(2));
        assert_eq!(deadline.wait(start), Some(Duration::from_secs(10)));
        assert_eq!(deadline.due(start + Duration::from_secs(9)), None);
        let due = start + Duration::from_secs(10);
        assert_eq!(deadline.due(due), Some(Signal::SIGTERM));
        assert_eq!(deadline.due(due), None, "SIGTERM is sent once");
        assert_eq!(deadline.wait(due), Some(Duration::from_secs(2)));
        assert_eq!(
            deadline.due(due + Duration::from_secs(2)),
            Some(Signal::SIGKILL)
        );
        assert_eq!(deadline.wait(due), None, "nothing after SIGKILL");
        assert_eq!(deadline.due(due + Duration::from_secs(60)), None);
    }

    #[test]
    fn a_deadline_out_of_reach_is_none() {
        let deadline = Deadline::new(Instant::now(), Duration::MAX, Duration::ZERO);
        assert_eq!(deadline.wait(Instant::now()), None);
        assert_eq!(Deadline::none().wait(Instant::now()), None);
    }
}
