//! The uids of `--run-uid-range` in use, the way systemd's `DynamicUser`
//! hands them out: a run takes the lowest free one when it is accepted
//! and holds it (in its record) until it is removed, so no later run
//! inherits files or processes of an earlier one; a restart marks the
//! uids of the restored records as taken again.

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::config::UidRange;

/// The uids held by runs.
pub(super) struct RunUids {
    range: Option<UidRange>,
    taken: Mutex<BTreeSet<u32>>,
}

impl RunUids {
    /// A pool over `range`; without one it hands out nothing.
    pub(super) fn new(range: Option<UidRange>) -> RunUids {
        RunUids {
            range,
            taken: Mutex::default(),
        }
    }

    /// Takes the lowest free uid. `Ok(None)` without a range; `Err(range)`
    /// when every uid of the range is held.
    pub(super) fn take(&self) -> Result<Option<u32>, UidRange> {
        let Some(range) = self.range else {
            return Ok(None);
        };
        let mut taken = self.lock();
        // The lowest uid above the first run of held ones from `first`.
        let mut candidate = range.first;
        for uid in taken.range(range.first..=range.last) {
            if *uid != candidate {
                break;
            }
            candidate += 1;
        }
        if candidate > range.last {
            return Err(range);
        }
        taken.insert(candidate);
        Ok(Some(candidate))
    }

    /// Marks `uid` (from a restored record) as held.
    pub(super) fn mark(&self, uid: Option<u32>) {
        if let Some(uid) = uid {
            self.lock().insert(uid);
        }
    }

    /// Frees `uid` (its run is removed).
    pub(super) fn free(&self, uid: Option<u32>) {
        if let Some(uid) = uid {
            self.lock().remove(&uid);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<u32>> {
        self.taken.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lowest free uid goes first, a freed one is taken again, a
    /// restored one is not handed out, and a full range says so.
    #[test]
    fn uids_are_handed_out_lowest_first_and_held_until_freed() {
        let uids = RunUids::new(Some(UidRange {
            first: 100,
            last: 102,
        }));
        uids.mark(Some(101));
        assert_eq!(uids.take(), Ok(Some(100)));
        assert_eq!(uids.take(), Ok(Some(102)));
        assert!(uids.take().is_err());
        uids.free(Some(101));
        assert_eq!(uids.take(), Ok(Some(101)));
        assert_eq!(RunUids::new(None).take(), Ok(None));
    }
}
