//! What keeps a run inside its bounds, and how sandboxd finds out which
//! protections this host allows: the per-run cgroup (cgroup v2, where one
//! is writable) that lets a shim kill every process of its run at once,
//! with the `/proc` walk of the shim's descendants as the fallback, and the
//! [`Report`] of protections on and missing shown at start-up and in
//! `GET /v1/status`.

use std::io;
use std::path::Path;

mod cgroup;

pub(crate) use cgroup::{cgroup2_mount, remove_leftover_cgroups, RunCgroup, CGROUP2_MOUNT_ENV};

/// Gives a run's work dir to the user it runs as (`--run-user`, or its
/// own uid from `--run-uid-range`): the directory itself, not followed if
/// it is a symlink. With a `share_gid` (the `--service-user`'s group) the
/// group is that one and the mode 2770, so the agent-server reads and
/// writes the run's files and what the run creates keeps that group
/// (setgid); otherwise the run's own group and mode 0700. What a bundle
/// put in it before keeps its owner (root) and its modes; the run owns the
/// directory, so it can add, rename and remove entries. A no-op without a
/// run user.
pub(crate) fn give_work_dir(
    dir: &Path,
    run_as: Option<crate::runs::shim::RunAs>,
    share_gid: Option<u32>,
) -> io::Result<()> {
    let Some(user) = run_as else { return Ok(()) };
    let gid = share_gid.unwrap_or(user.gid);
    std::os::unix::fs::lchown(dir, Some(user.uid), Some(gid))?;
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.is_dir() {
        use std::os::unix::fs::PermissionsExt;
        let mode = if share_gid.is_some() { 0o2770 } else { 0o700 };
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// How a shim ends every process of its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillMechanism {
    /// A cgroup v2 per run, killed with `cgroup.kill`, then the `/proc`
    /// walk as a backstop.
    Cgroup,
    /// The shim (their subreaper) walks `/proc` for its descendants and
    /// SIGKILLs them until none is left.
    ProcWalk,
}

impl KillMechanism {
    /// Which mechanism shims started by this process will use: tries to
    /// create (and removes) a probe cgroup.
    pub fn probe() -> KillMechanism {
        match RunCgroup::create(&format!("probe-{}", std::process::id())) {
            Some(_) => KillMechanism::Cgroup,
            None => KillMechanism::ProcWalk,
        }
    }

    /// The name shown in logs and `/v1/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            KillMechanism::Cgroup => "cgroup",
            KillMechanism::ProcWalk => "proc_walk",
        }
    }
}

/// The protections on and missing, for the start-up log line and the
/// `containment` section of `GET /v1/status`.
#[derive(Debug, Clone)]
pub struct Report {
    /// `uid_per_run` (`--run-uid-range`), `run_user` (`--run-user`) or
    /// `same_uid` (runs have sandboxd's uid).
    pub mode: &'static str,
    /// Runs execute as a different user than the daemon.
    pub run_user_separated: bool,
    /// The user runs execute as (`uid:gid`, with the name when known).
    pub run_user: String,
    /// The daemon's uid.
    pub daemon_uid: u32,
    /// How a run's processes are ended.
    pub kill_mechanism: KillMechanism,
    /// The soft descriptor limit after start-up.
    pub fd_limit: u64,
    /// What a run can still reach, one sentence each; empty when nothing
    /// is known to be missing.
    pub missing: Vec<String>,
}

impl Report {
    /// What this daemon, with `config`, protects and leaves open. Errs when
    /// `--run-user` is asked of a daemon that cannot switch users.
    pub fn probe(config: &crate::config::Config) -> anyhow::Result<Report> {
        let daemon_uid = nix::unistd::getuid().as_raw();
        if config.run_as.is_some() && daemon_uid != 0 {
            anyhow::bail!("--run-user needs sandboxd to run as root (it runs as uid {daemon_uid})");
        }
        if config.run_uid_range.is_some() && daemon_uid != 0 {
            anyhow::bail!(
                "--run-uid-range needs sandboxd to run as root (it runs as uid {daemon_uid})"
            );
        }
        if config.service.run_as.is_some() && daemon_uid != 0 {
            anyhow::bail!(
                "--service-user needs sandboxd to run as root (it runs as uid {daemon_uid})"
            );
        }
        let run_user = match (config.run_uid_range, config.run_as, &config.run_user_name) {
            (Some(range), _, _) => format!("a uid of its own from {}-{}", range.first, range.last),
            (None, Some(user), Some(name)) => format!("{name} ({}:{})", user.uid, user.gid),
            (None, Some(user), None) => format!("{}:{}", user.uid, user.gid),
            (None, None, _) => format!("uid {daemon_uid} (sandboxd's own)",),
        };
        let per_run = config.run_uid_range.is_some();
        let separated = per_run || config.run_as.is_some_and(|user| user.uid != daemon_uid);
        let mode = match (per_run, separated) {
            (true, _) => "uid_per_run",
            (false, true) => "run_user",
            (false, false) => "same_uid",
        };
        let kill_mechanism = KillMechanism::probe();
        let fd_limit = fd_limit();
        let mut missing = Vec::new();
        if !separated {
            missing.push(
                "runs share sandboxd's uid: they can read the supervised service's \
                 /proc environ, signal sandboxd and the service, and read the state dir \
                 (set --run-user as root)"
                    .to_owned(),
            );
            if daemon_uid == 0 {
                missing.push("runs execute as root".to_owned());
            }
        } else {
            if !per_run {
                missing.push(
                    "runs share one run user: a run can reach another run's processes and \
                     work dir (set --run-uid-range)"
                        .to_owned(),
                );
            }
            let service_apart = config.service.run_as.is_some_and(|service| {
                service.uid != daemon_uid && Some(service.uid) != config.run_as.map(|run| run.uid)
            });
            if !service_apart {
                missing.push(
                    "the supervised service runs as sandboxd: set --service-user so no \
                     run reads its environment"
                        .to_owned(),
                );
            }
        }
        if kill_mechanism == KillMechanism::ProcWalk {
            missing.push(
                "no writable cgroup v2: a run's processes are ended by a /proc walk of \
                 the shim's descendants (a process passed outside the tree is not)"
                    .to_owned(),
            );
        }
        if config.callback_token_from_flag {
            missing.push(
                "the callback token was given as --callback-token and shows in \
                 /proc/<pid>/cmdline (use --callback-token-file or OPENHANDS_API_KEY)"
                    .to_owned(),
            );
        }
        Ok(Report {
            mode,
            run_user_separated: separated,
            run_user,
            daemon_uid,
            kill_mechanism,
            fd_limit,
            missing,
        })
    }

    /// The one-line summary logged at start-up.
    pub fn summary(&self) -> String {
        let missing = if self.missing.is_empty() {
            "none".to_owned()
        } else {
            self.missing.join("; ")
        };
        format!(
            "containment: runs as {} ({}); kill: {}; fd limit {}; missing: {}",
            self.run_user,
            self.mode,
            self.kill_mechanism.as_str(),
            self.fd_limit,
            missing
        )
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft
/// limit now in force.
pub(crate) fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    limit.rlim_cur
}

/// The soft `RLIMIT_NOFILE` now.
pub(crate) fn fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probe names a mechanism and leaves no cgroup behind.
    #[test]
    fn probe_leaves_nothing() {
        let mechanism = KillMechanism::probe();
        if let Some(dir) = cgroup::own_cgroup_dir() {
            let probe = dir.join(format!("sandboxd-run-probe-{}", std::process::id()));
            assert!(!probe.exists());
        }
        assert!(matches!(
            mechanism,
            KillMechanism::Cgroup | KillMechanism::ProcWalk
        ));
    }
}
