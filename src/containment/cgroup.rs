//! The per-run cgroup: made by a shim beside its own cgroup, the run's
//! processes created in it and killed as a whole, removed with whatever
//! the run nested inside it; and the clean-up of leftovers of shims that
//! were killed.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The cgroup v2 directory this process is in, when the unified hierarchy
/// is mounted: `/sys/fs/cgroup` (pure v2) or `/sys/fs/cgroup/unified`
/// (hybrid), joined with the `0::` line of `/proc/self/cgroup`.
pub(crate) fn own_cgroup_dir() -> Option<PathBuf> {
    own_cgroup_dir_under(None)
}

/// [`own_cgroup_dir`], the hierarchy's mount point taken from `hint`
/// when it names one.
fn own_cgroup_dir_under(hint: Option<&Path>) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = text.lines().find_map(|line| line.strip_prefix("0::"))?;
    let mount = cgroup2_mount_or(hint)?;
    let dir = mount.join(rel.trim_start_matches('/'));
    dir.join("cgroup.procs").is_file().then_some(dir)
}

/// The environment variable in which the daemon names the unified
/// hierarchy's mount point to the shims it starts, so a shim does not read
/// `/proc/self/mountinfo` (the kernel formats every mount of the
/// namespace) to prepare its cgroup: with `/proc/self/cgroup`, 8% of the
/// shims' CPU in a profile of back-to-back runs (bench/exec-path.md).
pub(crate) const CGROUP2_MOUNT_ENV: &str = "SANDBOXD_CGROUP2_MOUNT";

/// The mount point named in `hint` when it is a cgroup2 root, else the
/// one `/proc/self/mountinfo` gives.
fn cgroup2_mount_or(hint: Option<&Path>) -> Option<PathBuf> {
    match hint {
        Some(dir) if dir.is_absolute() && dir.join("cgroup.controllers").is_file() => {
            Some(dir.to_owned())
        }
        _ => cgroup2_mount(),
    }
}

/// Where the unified (v2) hierarchy is mounted, from `/proc/self/mountinfo`.
pub(crate) fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split(' ').next()? != "cgroup2" {
            return None;
        }
        left.split(' ').nth(4).map(PathBuf::from)
    })
}

/// A run's own cgroup: created by its shim next to the shim's cgroup
/// (while the shim waits for its spec: the name is the shim's pid, not the
/// run's), the run's processes created in it, and killed as a whole
/// (`cgroup.kill`) when the run ends. Removed on drop.
#[derive(Debug)]
pub(crate) struct RunCgroup {
    dir: PathBuf,
    /// The directory itself, for `clone3(CLONE_INTO_CGROUP)`.
    handle: File,
    procs: File,
}

impl RunCgroup {
    /// Creates `sandboxd-run-<name>` beside this process's cgroup; `None`
    /// when there is no writable cgroup v2 or no `cgroup.kill` (Linux < 5.14).
    pub(crate) fn create(name: &str) -> Option<RunCgroup> {
        RunCgroup::create_under(name, None)
    }

    /// [`RunCgroup::create`], the hierarchy's mount point taken from
    /// `mount_hint` when it names one (a shim's, from the daemon).
    pub(crate) fn create_under(name: &str, mount_hint: Option<&Path>) -> Option<RunCgroup> {
        RunCgroup::create_in(&own_cgroup_dir_under(mount_hint)?, name)
    }

    fn create_in(parent: &Path, name: &str) -> Option<RunCgroup> {
        let dir = fresh_cgroup_dir(parent, name)?;
        let usable = dir.join("cgroup.kill").exists();
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"));
        let handle = File::open(&dir);
        match (usable, procs, handle) {
            (true, Ok(procs), Ok(handle)) => Some(RunCgroup { dir, handle, procs }),
            _ => {
                let _ = std::fs::remove_dir(&dir);
                None
            }
        }
    }

    /// This cgroup, or a new one of the same name when it was removed
    /// since it was made (a cgroup prepared ahead of need is empty, and
    /// an empty cgroup can be removed by anyone allowed to).
    pub(crate) fn or_again(self, name: &str) -> Option<RunCgroup> {
        // Looked up from the directory's own descriptor: one name, not the
        // whole path from the root of the hierarchy. A removed directory
        // holds no file any more.
        let present = nix::sys::stat::fstatat(
            Some(self.handle.as_raw_fd()),
            "cgroup.procs",
            nix::fcntl::AtFlags::empty(),
        )
        .is_ok();
        match present {
            true => Some(self),
            false => {
                // Its drop removes the path: before the new one is made.
                let parent = self.dir.parent()?.to_owned();
                drop(self);
                RunCgroup::create_in(&parent, name)
            }
        }
    }

    /// The descriptor of `cgroup.procs`: a forked child writes `0` to it
    /// (before exec, async-signal-safe) to move itself in, where it could
    /// not be created in the cgroup.
    pub(crate) fn procs_fd(&self) -> RawFd {
        self.procs.as_raw_fd()
    }

    /// The descriptor of the cgroup's directory: `clone3` creates a child
    /// in the cgroup with it (`CLONE_INTO_CGROUP`).
    pub(crate) fn dir_fd(&self) -> RawFd {
        self.handle.as_raw_fd()
    }

    /// Whether any process is still in the cgroup.
    pub(crate) fn populated(&self) -> bool {
        std::fs::read_to_string(self.dir.join("cgroup.events"))
            .map(|text| text.lines().any(|l| l == "populated 1"))
            .unwrap_or(false)
    }

    /// SIGKILLs every process in the cgroup (the kernel does it atomically,
    /// forks included) and waits up to `wait` for it to empty, calling
    /// `reap` (the shim's, the only reaper here) as it goes: zombies leave
    /// the cgroup only when reaped.
    pub(crate) fn kill_all(&self, wait: Duration, reap: impl Fn()) {
        if !self.populated() {
            return;
        }
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.kill"))
        {
            let _ = file.write_all(b"1");
        }
        let until = Instant::now() + wait;
        while self.populated() && Instant::now() < until {
            reap();
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        let _ = remove_cgroup_tree(&self.dir);
    }
}

/// Makes a new, empty `sandboxd-run-<name>` beside `parent`. A directory
/// of that name is a leftover (the name is a live shim's pid, so its
/// maker is gone and the pid reused): removed and made again when empty;
/// while it still holds a dead run's processes, `sandboxd-run-<name>-<n>`
/// is made instead, so a run never shares a cgroup with another.
fn fresh_cgroup_dir(parent: &Path, name: &str) -> Option<PathBuf> {
    for n in 0..8 {
        let dir = match n {
            0 => parent.join(format!("sandboxd-run-{name}")),
            n => parent.join(format!("sandboxd-run-{name}-{n}")),
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Some(dir),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                if remove_cgroup_tree(&dir).is_ok() && std::fs::create_dir(&dir).is_ok() {
                    return Some(dir);
                }
            }
            Err(_) => return None,
        }
    }
    None
}

/// Removes a cgroup and the cgroups a run made inside it, deepest first
/// (the kernel removes only a cgroup without children or processes).
fn remove_cgroup_tree(dir: &Path) -> io::Result<()> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            // Symlinks are not followed: a cgroup holds none of its own.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = remove_cgroup_tree(&entry.path());
            }
        }
    }
    std::fs::remove_dir(dir)
}

/// Removes the run cgroups (`sandboxd-run-<pid>`, `sandboxd-run-probe-<pid>`)
/// left beside this process's cgroup by shims that were SIGKILLed: only an
/// empty one (the kernel refuses to remove any other) whose pid is not a
/// live process. A live shim (one restored after a restart, an idle warm
/// shim holding its prepared, empty cgroup, one of another daemon or of a
/// binary since replaced) keeps its cgroup; a leftover whose pid was
/// reused goes once that process is gone. Returns how many were removed.
pub(crate) fn remove_leftover_cgroups() -> usize {
    let Some(dir) = own_cgroup_dir() else {
        return 0;
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("sandboxd-run-")) else {
            continue;
        };
        // `<pid>`, `probe-<pid>`, or `<pid>-<n>` beside a leftover.
        let pid = rest.strip_prefix("probe-").unwrap_or(rest);
        let pid = pid.split('-').next().unwrap_or_default();
        if pid.parse::<i32>().is_ok_and(is_live) {
            continue;
        }
        // rmdir fails on a cgroup that still holds a process.
        if remove_cgroup_tree(&entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Whether a process `pid` exists.
fn is_live(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A prepared cgroup removed behind its owner's back is made again,
    /// and stays once made.
    #[test]
    fn a_removed_cgroup_is_made_again() {
        let name = format!("again-test-{}", std::process::id());
        let Some(cgroup) = RunCgroup::create(&name) else {
            eprintln!("needs a writable cgroup v2; skipped");
            return;
        };
        let dir = cgroup.dir.clone();
        std::fs::remove_dir(&dir).unwrap();
        let cgroup = cgroup.or_again(&name).expect("made again");
        assert!(dir.join("cgroup.procs").exists());
        let cgroup = cgroup.or_again(&name).expect("kept");
        assert!(dir.exists());
        drop(cgroup);
        assert!(!dir.exists(), "removed on drop");
    }

    /// A leftover of this name that still holds a dead run's process (its
    /// shim killed, the pid reused) is not shared: the new run gets a
    /// cgroup of its own beside it, and the leftover goes once empty.
    #[test]
    fn a_populated_leftover_is_never_shared() {
        let name = format!("reuse-test-{}", std::process::id());
        let Some(first) = RunCgroup::create(&name) else {
            eprintln!("needs a writable cgroup v2; skipped");
            return;
        };
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(first.dir.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
        let leftover = first.dir.clone();
        std::mem::forget(first);

        let second = RunCgroup::create(&name).expect("a cgroup of its own");
        assert_ne!(second.dir, leftover);
        assert!(!second.populated());
        assert!(leftover.exists(), "the populated leftover is left alone");
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        drop(second);
        let deadline = Instant::now() + Duration::from_secs(5);
        while remove_cgroup_tree(&leftover).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!leftover.exists());
    }

    /// Cgroups a run nested inside its own go with it.
    #[test]
    fn nested_cgroups_go_with_the_run() {
        let name = format!("nested-test-{}", std::process::id());
        let Some(cgroup) = RunCgroup::create(&name) else {
            eprintln!("needs a writable cgroup v2; skipped");
            return;
        };
        let dir = cgroup.dir.clone();
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::create_dir(dir.join("c")).unwrap();
        drop(cgroup);
        assert!(!dir.exists());
    }
}
