//! `--run-uid-range`: its parser and the checks made at start-up, each
//! refusal one sentence naming the flag. A range must hold neither root,
//! nor sandboxd's own uid, nor the `--service-user`'s, nor a uid or gid
//! that `/etc/passwd` or `/etc/group` gives a name (a run would share that
//! user's files and processes, or that group's files), and must be at
//! least `--max-running` wide. Narrower than `--max-running` plus
//! `--retain-runs` it is only warned about: ended runs hold their uids
//! until removed, so the range may fill up (`503 no_run_uid`).
//!
//! Only the two files are read, not NSS (LDAP, systemd's `DynamicUser`
//! uids): reading them is cheap and they are where an image's users are.

use anyhow::bail;

use super::RunAs;

/// `--run-uid-range`: the uids (each also the gid) runs get one of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    /// The first uid.
    pub first: u32,
    /// The last uid (included).
    pub last: u32,
}

impl UidRange {
    /// Whether `uid` is in the range.
    pub fn contains(self, uid: u32) -> bool {
        (self.first..=self.last).contains(&uid)
    }

    /// How many uids the range holds.
    pub fn width(self) -> u64 {
        u64::from(self.last - self.first) + 1
    }
}

impl std::fmt::Display for UidRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// Parses `FIRST-LAST`: two uids, FIRST <= LAST, none of them 0.
pub(super) fn parse_uid_range(value: &str) -> Result<UidRange, String> {
    let bad = || format!("{value:?} is not FIRST-LAST, two uids above 0 (e.g. 61184-65519)");
    let (first, last) = value.trim().split_once('-').ok_or_else(bad)?;
    let first: u32 = first.trim().parse().map_err(|_| bad())?;
    let last: u32 = last.trim().parse().map_err(|_| bad())?;
    if first > last {
        return Err(format!("{value:?}: FIRST ({first}) is above LAST ({last})"));
    }
    if first == 0 {
        return Err(format!(
            "{value:?} holds uid 0 (root): runs must not run as root"
        ));
    }
    if last == u32::MAX {
        return Err(format!(
            "{value:?} holds uid {last}, which means no uid to the kernel"
        ));
    }
    Ok(UidRange { first, last })
}

/// The start-up checks of a range, against sandboxd's own uid, the
/// service's user, the users and groups of the system and `max_running`.
pub(super) fn check(
    range: UidRange,
    daemon_uid: u32,
    service: Option<RunAs>,
    max_running: usize,
) -> anyhow::Result<()> {
    if range.contains(daemon_uid) {
        bail!("--run-uid-range {range} holds sandboxd's own uid {daemon_uid}");
    }
    if let Some(service) = service.filter(|service| range.contains(service.uid)) {
        bail!(
            "--run-uid-range {range} holds --service-user's uid {}",
            service.uid
        );
    }
    for (file, what, id_kind) in [
        ("/etc/passwd", "user", "uid"),
        ("/etc/group", "group", "gid"),
    ] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if let Some((name, id)) = named_id_in(range, &text) {
            bail!(
                "--run-uid-range {range} holds {id_kind} {id}, which {file} gives to the {what} \
                 {name}: pick a range no {what} has"
            );
        }
    }
    if range.width() < max_running as u64 {
        bail!(
            "--run-uid-range {range} holds {} uids, fewer than --max-running ({max_running}): \
             widen it or lower --max-running",
            range.width()
        );
    }
    Ok(())
}

/// The warning for a range narrower than the runs that may hold a uid at
/// once (`max_running` running plus `retain_runs` ended, kept until
/// removed); `None` when it is wide enough.
pub(super) fn shortfall(
    range: UidRange,
    max_running: usize,
    retain_runs: Option<usize>,
) -> Option<String> {
    let held = match retain_runs {
        Some(retained) => (max_running as u64).saturating_add(retained as u64),
        None => {
            return Some(format!(
                "--run-uid-range {range}: --retain-runs 0 keeps every ended run and each holds \
                 its uid until deleted, so the range fills up (503 no_run_uid) unless ended runs \
                 are deleted"
            ))
        }
    };
    (range.width() < held).then(|| {
        format!(
            "--run-uid-range {range} holds {} uids, fewer than --max-running plus --retain-runs \
             ({held}): ended runs hold their uids until removed, so new runs may get 503 \
             no_run_uid; widen it or lower --retain-runs",
            range.width()
        )
    })
}

/// The first `name:x:id:` line of a passwd or group file whose id is in
/// `range`.
fn named_id_in(range: UidRange, text: &str) -> Option<(String, u32)> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.trim().parse().ok()?;
        range.contains(id).then(|| (name.to_owned(), id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RANGE: UidRange = UidRange {
        first: 61184,
        last: 65519,
    };

    /// Each bad range gets its own reason; a good one parses.
    #[test]
    fn ranges_are_parsed_with_the_reason_they_are_refused() {
        assert_eq!(parse_uid_range("61184-65519"), Ok(RANGE));
        assert!(RANGE.contains(61184) && RANGE.contains(65519) && !RANGE.contains(65520));
        assert!(parse_uid_range("a-b").unwrap_err().contains("FIRST-LAST"));
        assert!(parse_uid_range("10-5").unwrap_err().contains("above LAST"));
        assert!(parse_uid_range("0-5").unwrap_err().contains("uid 0"));
        assert!(parse_uid_range("5").unwrap_err().contains("FIRST-LAST"));
        assert!(parse_uid_range("1-4294967295").is_err());
    }

    /// A passwd or group line with an id in the range is found by name;
    /// comments, blank and broken lines are not.
    #[test]
    fn named_ids_in_the_range_are_found() {
        let text = "root:x:0:0::/root:/bin/sh\n# comment\n\nbroken\nnobody:x:65534:65534::/:/bin/false\nci:x:61200:61200::/:/bin/sh\n";
        assert_eq!(named_id_in(RANGE, text), Some(("ci".to_owned(), 61200)));
        assert_eq!(named_id_in(RANGE, "nobody:x:65534:\n"), None);
    }

    /// The width check counts both ends; the warning names both flags.
    #[test]
    fn a_narrow_range_is_warned_about() {
        let ten = UidRange {
            first: 100,
            last: 109,
        };
        assert_eq!(ten.width(), 10);
        assert!(shortfall(ten, 10, Some(0)).is_none());
        let warning = shortfall(ten, 4, Some(10)).unwrap();
        assert!(warning.contains("--retain-runs"), "{warning}");
        assert!(shortfall(ten, 4, None).is_some());
        assert!(shortfall(RANGE, 64, Some(1000)).is_none());
    }
}
