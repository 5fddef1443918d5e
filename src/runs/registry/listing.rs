//! Listing runs: newest first, filtered, in pages that a cursor links.

use std::sync::Arc;

use chrono::Utc;

use super::{snapshot_of, Registry};
use crate::runs::run::RunState;
use crate::runs::task::RunCell;
use crate::runs::RunSnapshot;

impl Registry {
    /// One page of runs, newest first: those matching `filter` that come
    /// after `after` (a run's creation time and id, the last of the page
    /// before), at most `limit`. The second value is where the next page
    /// starts, when there is one.
    pub fn list(
        &self,
        filter: &ListFilter,
        after: Option<&ListCursor>,
        limit: usize,
    ) -> (Vec<RunSnapshot>, Option<ListCursor>) {
        let mut keys: Vec<(ListCursor, Arc<RunCell>)> = self
            .lock_runs()
            .values()
            .filter_map(|slot| {
                let (created_at, run_id, state) = slot
                    .cell
                    .read(|run| (run.created_at, run.run_id.clone(), run.state()));
                let matches = filter.state.is_none_or(|wanted| wanted == state)
                    && filter.created_since.is_none_or(|since| created_at >= since);
                let cursor = ListCursor { created_at, run_id };
                matches.then(|| (cursor, slot.cell.clone()))
            })
            .filter(|(cursor, _)| after.is_none_or(|after| cursor < after))
            .collect();
        keys.sort_by(|a, b| b.0.cmp(&a.0));
        let next = (keys.len() > limit).then(|| keys[limit - 1].0.clone());
        let page = keys
            .into_iter()
            .take(limit)
            .map(|(_, cell)| snapshot_of(&cell))
            .collect();
        (page, next.filter(|_| limit > 0))
    }
}

/// Which runs a listing shows.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only runs in this state.
    pub state: Option<RunState>,
    /// Only runs created at or after this time.
    pub created_since: Option<chrono::DateTime<Utc>>,
}

/// A place in the newest-first order of runs: a run's creation time and
/// id. Its text form (`<nanoseconds since the epoch>-<run id>`) is the
/// `next` of a page.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListCursor {
    created_at: chrono::DateTime<Utc>,
    run_id: String,
}

impl ListCursor {
    /// The text form.
    pub fn encode(&self) -> String {
        let nanos = self.created_at.timestamp_nanos_opt().unwrap_or(i64::MAX);
        format!("{nanos}-{}", self.run_id)
    }

    /// Reads the text form; `None` when it is not one.
    pub fn decode(text: &str) -> Option<ListCursor> {
        let (nanos, run_id) = text.split_once('-')?;
        let nanos: i64 = nanos.parse().ok()?;
        Some(ListCursor {
            created_at: chrono::DateTime::from_timestamp_nanos(nanos),
            run_id: run_id.to_owned(),
        })
    }
}
