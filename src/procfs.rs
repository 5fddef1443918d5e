//! Everything sandboxd reads from `/proc`: a process's stat line, the
//! children of a process, the path behind a descriptor, and
//! [`ProcessIdentity`], the pid and start time that name one process for
//! good (pids are reused, start times are not).
//!
//! Writes of our own `oom_score_adj` stay with the code that makes them.

use serde::{Deserialize, Serialize};

/// One process, named for good by its pid and start time. Stored in a
/// run's record (its shim) and in `service.json` (the supervised service),
/// so a later daemon can tell the process from one that reused its pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    /// The pid.
    pub pid: i32,
    /// Its start time in clock ticks since boot; 0 when `/proc` could not
    /// tell (the process was already gone).
    pub start_ticks: u64,
}

impl ProcessIdentity {
    /// The identity of the process `pid` now.
    pub fn of(pid: i32) -> ProcessIdentity {
        let start_ticks = proc_stat(pid).map_or(0, |stat| stat.start_ticks);
        ProcessIdentity { pid, start_ticks }
    }

    /// Whether this very process still runs: its pid has the same start
    /// time and is not a zombie.
    pub fn is_alive(&self) -> bool {
        self.pid > 0
            && proc_stat(self.pid)
                .is_some_and(|stat| stat.start_ticks == self.start_ticks && stat.state != 'Z')
    }
}

/// The fields of `/proc/PID/stat` that sandboxd uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// Parent pid.
    pub ppid: i32,
    /// Start time in clock ticks since boot.
    pub start_ticks: u64,
    /// State letter (`Z` for a zombie).
    pub state: char,
}

/// Reads `/proc/PID/stat`.
pub(crate) fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses a stat line. The command name is in parentheses and may hold
/// spaces and parentheses: the fields are parsed after its last `)`.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = text.get(text.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split(' ').collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// Pids whose parent is `parent`: from `/proc/<parent>/task/*/children`
/// (one small file per thread), else by scanning all of `/proc`.
pub(crate) fn children_of(parent: i32) -> Vec<i32> {
    if let Some(children) = children_from_tasks(parent) {
        return children;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| proc_stat(*pid).is_some_and(|stat| stat.ppid == parent))
        .collect()
}

/// Every descendant of `root` (children, their children, ...), parents
/// before their children. Processes that `setsid` or double-fork away from
/// a subreaper are reparented to it and so are still found.
pub(crate) fn descendants_of(root: i32) -> Vec<i32> {
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        for child in children_of(pid) {
            if child != root && !found.contains(&child) {
                found.push(child);
                queue.push(child);
            }
        }
    }
    found
}

/// Live processes (not zombies) any of whose uids (real, effective,
/// saved, filesystem) is `uid`, from `/proc/<pid>/status` (the owner of
/// `/proc/<pid>` is root for a non-dumpable process, so it is not used).
pub(crate) fn live_pids_of_uid(uid: u32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let wanted = uid.to_string();
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                return false;
            };
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix(name))
                    .unwrap_or_default()
                    .to_owned()
            };
            let zombie = field("State:").trim_start().starts_with('Z');
            !zombie && field("Uid:").split_whitespace().any(|id| id == wanted)
        })
        .collect()
}

/// Children listed by the kernel per thread (CONFIG_PROC_CHILDREN); `None`
/// when the kernel has no such files.
fn children_from_tasks(parent: i32) -> Option<Vec<i32>> {
    let tasks = std::fs::read_dir(format!("/proc/{parent}/task")).ok()?;
    let mut children = Vec::new();
    for task in tasks.flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).ok()?;
        children.extend(
            text.split_whitespace()
                .filter_map(|pid| pid.parse::<i32>().ok()),
        );
    }
    Some(children)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stat lines parse after the command name, whatever it holds.
    #[test]
    fn parses_stat_lines() {
        let tail = "4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 4242 22";
        let cases = [
            (format!("12 (sleep) S 1 {tail}"), Some(('S', 1, 4242))),
            (format!("12 (a b) c) Z 77 {tail}"), Some(('Z', 77, 4242))),
            (format!("12 ()) R 3 {tail}"), Some(('R', 3, 4242))),
            ("12 (sleep) S 1 2 3".to_owned(), None),
            ("12 (sleep".to_owned(), None),
            ("12 (sleep)".to_owned(), None),
            (String::new(), None),
        ];
        for (line, want) in cases {
            let got = parse_stat(&line).map(|s| (s.state, s.ppid, s.start_ticks));
            assert_eq!(got, want, "{line:?}");
        }
    }

    /// Our own stat names our parent and a start time.
    #[test]
    fn parses_own_stat() {
        let stat = proc_stat(std::process::id() as i32).unwrap();
        assert_eq!(stat.ppid, nix::unistd::getppid().as_raw());
        assert!(stat.start_ticks > 0);
    }

    /// An identity is alive while its process runs, and not after it was
    /// reaped, nor with another start time.
    #[test]
    fn identity_follows_the_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let identity = ProcessIdentity::of(child.id() as i32);
        assert!(identity.is_alive());
        let other = ProcessIdentity {
            start_ticks: identity.start_ticks + 1,
            ..identity
        };
        assert!(!other.is_alive());
        let _ = child.kill();
        let _ = child.wait();
        assert!(!identity.is_alive());
        assert!(!ProcessIdentity {
            pid: 0,
            start_ticks: 0
        }
        .is_alive());
    }

    /// The per-thread children files name our children, like the /proc scan.
    #[test]
    fn finds_own_children() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let me = std::process::id() as i32;
        let pid = child.id() as i32;
        let listed = children_from_tasks(me);
        let scanned = children_of(me);
        let _ = child.kill();
        let _ = child.wait();
        if let Some(listed) = listed {
            assert!(listed.contains(&pid), "{pid} not in {listed:?}");
        }
        assert!(scanned.contains(&pid), "{pid} not in {scanned:?}");
    }
}
