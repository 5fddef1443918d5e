//! Starting one phase's process: its own process group, the run's env and
//! cwd, stdin `/dev/null`, stdout and stderr piped to the shim, and, in the
//! forked child before exec, default signal dispositions, an empty mask,
//! the run's oom_score_adj and no descriptors beyond stdio.

use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use super::protocol::{RunAs, ShimSpec};
use super::pty::{self, ChildInput};

/// Starts `argv` for the run, moved into the run's cgroup (`cgroup_procs`,
/// the cgroup's `cgroup.procs` opened for writing) when it has one, and as
/// `spec.run_as` when set, with `input` as its stdio. The error is a
/// sentence for the report.
pub(super) fn spawn_child(
    argv: &[String],
    spec: &ShimSpec,
    cgroup_procs: Option<RawFd>,
    input: &ChildInput,
) -> Result<Child, String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("the command is empty".to_owned());
    };
    if !spec.cwd.is_dir() {
        return Err(format!(
            "cwd {} does not exist or is not a directory",
            spec.cwd.display()
        ));
    }
    let oom = format!("{}\n", spec.oom_score_adj).into_bytes();
    let run_as = spec.run_as;
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd);
    let terminal = input
        .configure(&mut command)
        .map_err(|err| format!("cannot set up the command's stdin: {err}"))?;
    // SAFETY: the closure only makes async-signal-safe system calls on
    // memory allocated before the fork (see `reset_child`).
    unsafe {
        command.pre_exec(move || {
            if let Some(fd) = cgroup_procs {
                // Into the run's cgroup first: whatever the child forks
                // from now on is killed with the run.
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            reset_child(&oom);
            if terminal {
                pty::take_terminal()?;
            }
            match run_as {
                Some(user) => drop_privileges(user),
                None => Ok(()),
            }
        });
    }
    command.spawn().map_err(|err| match err.kind() {
        io::ErrorKind::NotFound => format!("command not found: {program}"),
        io::ErrorKind::PermissionDenied if run_as.is_some() => {
            format!("permission denied executing {program} as the run user")
        }
        io::ErrorKind::PermissionDenied => format!("permission denied executing {program}"),
        _ => format!("cannot start {program}: {err}"),
    })
}

/// Writes `oom` to `/proc/self/oom_score_adj`; whether it could open it.
/// Async-signal-safe (open, write, close).
fn write_oom_score_adj(oom: &[u8]) -> bool {
    // SAFETY: open, write and close take a static path and our buffer.
    unsafe {
        let fd = libc::open(
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return false;
        }
        libc::write(fd, oom.as_ptr().cast(), oom.len());
        libc::close(fd);
    }
    true
}

/// Runs in the forked child before exec: default dispositions for every
/// signal, an empty mask, the run's oom_score_adj, and every descriptor
/// beyond stdio marked close-on-exec. Async-signal-safe calls only.
fn reset_child(oom: &[u8]) {
    // SAFETY: signal, sigprocmask, open, write, close and close_range are
    // async-signal-safe and take no pointers into shared state.
    unsafe {
        // The raw system call: glibc's wrappers refuse the signals it
        // reserves (32, 33), whose dispositions are inherited all the same.
        let default = KernelSigaction {
            handler: libc::SIG_DFL,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        for signal in 1..=64 {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    signal,
                    &default as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                );
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        // A write of the child's own oom_score_adj: not a read of /proc,
        // and it must stay here, between fork and exec.
        if !write_oom_score_adj(oom) {
            // The /proc files of a non-dumpable process (the shim's fork)
            // are root's: a shim that is not root cannot open its own.
            // Dumpable for the write only; what the moment shows is the
            // run's, which its process shows after exec anyway.
            libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0);
            write_oom_score_adj(oom);
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        }
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
}

/// Becomes the run user, for good: its gid as the only group, then its
/// uid (real, effective and saved). Runs in the forked child after the
/// writes that need the shim's privileges. Async-signal-safe calls only.
fn drop_privileges(user: RunAs) -> io::Result<()> {
    // SAFETY: setgroups reads one gid from our stack; setresgid and
    // setresuid take integers. All are async-signal-safe.
    unsafe {
        let groups = [user.gid as libc::gid_t];
        if libc::setgroups(1, groups.as_ptr()) != 0
            || libc::setresgid(user.gid, user.gid, user.gid) != 0
            || libc::setresuid(user.uid, user.uid, user.uid) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The kernel's `struct sigaction` for rt_sigaction on Linux.
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}
