//! The restart backoff: exponential delays between restarts, a burst
//! limit, and a fresh start after a stable run.

use std::time::Duration;

/// First restart delay.
pub(crate) const BACKOFF_INITIAL: Duration = Duration::from_millis(500);

/// Longest restart delay.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A service that stayed up this long starts a fresh backoff and burst.
pub(crate) const STABLE_AFTER: Duration = Duration::from_secs(60);

/// Exponential restart delays: [`BACKOFF_INITIAL`] doubling up to
/// [`BACKOFF_MAX`], at most `max_restarts` in a row; a run that lasted
/// [`STABLE_AFTER`] starts over.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    pub(super) max_restarts: u32,
    in_a_row: u32,
}

impl Backoff {
    /// A fresh backoff.
    pub(crate) fn new(max_restarts: u32) -> Backoff {
        Backoff {
            max_restarts,
            in_a_row: 0,
        }
    }

    /// The delay before the next restart of a service that was up for
    /// `up_for`, or None when the burst is exhausted.
    pub(crate) fn next(&mut self, up_for: Duration) -> Option<Duration> {
        if up_for >= STABLE_AFTER {
            self.in_a_row = 0;
        }
        if self.in_a_row >= self.max_restarts {
            return None;
        }
        let delay = BACKOFF_INITIAL
            .saturating_mul(1u32 << self.in_a_row.min(16))
            .min(BACKOFF_MAX);
        self.in_a_row += 1;
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_gives_up() {
        let mut backoff = Backoff::new(9);
        let quick = Duration::from_millis(10);
        let delays: Vec<f64> = (0..9)
            .map(|_| backoff.next(quick).unwrap().as_secs_f64())
            .collect();
        assert_eq!(delays, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]);
        assert_eq!(backoff.next(quick), None, "the burst is spent");
    }

    #[test]
    fn backoff_resets_after_a_stable_run() {
        let mut backoff = Backoff::new(2);
        let quick = Duration::from_millis(10);
        assert!(backoff.next(quick).is_some());
        assert!(backoff.next(quick).is_some());
        assert_eq!(backoff.next(quick), None);
        assert_eq!(backoff.next(STABLE_AFTER), Some(BACKOFF_INITIAL));
    }
}
