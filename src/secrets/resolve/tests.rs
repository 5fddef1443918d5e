//! Unit tests of resolution: the retry backoff.

use std::time::Duration;

use super::fetch::backoff;

#[test]
fn backoff_doubles() {
    for (attempt, low) in [(1, 100), (2, 200), (3, 400)] {
        let wait = backoff(attempt);
        let low = Duration::from_millis(low);
        assert!(
            wait >= low && wait <= low.mul_f64(1.25),
            "{attempt}: {wait:?}"
        );
    }
}
