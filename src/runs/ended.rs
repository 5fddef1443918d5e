//! The ended runs in the order of their end: what retention removes
//! first (the oldest, past `--retain-runs` or `--retain-for`) is the
//! front of this index, found without a walk of every run. A run is
//! entered when its end is applied (or it is restored ended) and leaves
//! when it is removed, so a pass after each run's end costs the runs it
//! removes, not the runs retained.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};

/// Ended runs by (end, id).
#[derive(Default)]
pub(super) struct EndedRuns(Mutex<BTreeSet<(DateTime<Utc>, String)>>);

impl EndedRuns {
    fn lock(&self) -> MutexGuard<'_, BTreeSet<(DateTime<Utc>, String)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Enters a run that ended at `finished_at`.
    pub(super) fn insert(&self, run_id: &str, finished_at: DateTime<Utc>) {
        self.lock().insert((finished_at, run_id.to_owned()));
    }

    /// Takes a removed run out.
    pub(super) fn remove(&self, run_id: &str, finished_at: DateTime<Utc>) {
        self.lock().remove(&(finished_at, run_id.to_owned()));
    }

    /// How many runs have ended and are kept.
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    /// The runs due for removal, oldest first: the `over` oldest, and
    /// every one that ended before `cutoff`; at most `limit` of them, and
    /// how many are due in all.
    pub(super) fn due(
        &self,
        over: usize,
        cutoff: Option<DateTime<Utc>>,
        limit: usize,
    ) -> (Vec<String>, usize) {
        let runs = self.lock();
        let aged = |at: &DateTime<Utc>| cutoff.is_some_and(|cutoff| *at < cutoff);
        let due = runs
            .iter()
            .enumerate()
            .take_while(|(index, (at, _))| *index < over || aged(at));
        let mut taken = Vec::new();
        let mut total = 0;
        for (_, (_, run_id)) in due {
            if taken.len() < limit {
                taken.push(run_id.clone());
            }
            total += 1;
        }
        (taken, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn index() -> EndedRuns {
        let runs = EndedRuns::default();
        for (id, seconds) in [("c", 30), ("a", 10), ("d", 40), ("b", 20)] {
            runs.insert(id, at(seconds));
        }
        runs
    }

    #[test]
    fn the_oldest_past_the_count_are_due_first() {
        let (ids, total) = index().due(2, None, 10);
        assert_eq!((ids, total), (vec!["a".to_owned(), "b".to_owned()], 2));
    }

    #[test]
    fn runs_ended_before_the_cutoff_are_due_with_those_past_the_count() {
        let (ids, total) = index().due(1, Some(at(35)), 10);
        assert_eq!(total, 3);
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(index().due(0, Some(at(5)), 10), (Vec::new(), 0));
    }

    #[test]
    fn at_most_the_limit_is_taken_but_all_due_are_counted() {
        let (ids, total) = index().due(4, None, 3);
        assert_eq!((ids.len(), total), (3, 4));
    }

    #[test]
    fn a_removed_run_is_no_longer_due() {
        let runs = index();
        runs.remove("a", at(10));
        runs.remove("b", at(99));
        assert_eq!(runs.len(), 3, "only the run with its own end is removed");
        assert_eq!(runs.due(1, None, 10).0, ["b"]);
    }
}
