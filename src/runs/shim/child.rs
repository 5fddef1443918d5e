//! Starting one phase's process: its own process group, the run's env and
//! cwd, stdin `/dev/null`, stdout and stderr piped to the shim, and, in the
//! child before exec, default signal dispositions, an empty mask, the
//! run's oom_score_adj and no descriptors beyond stdio. It is created in
//! the run's cgroup (`clone`).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::clone::{Exec, Target};
use super::protocol::{RunAs, ShimSpec};
use super::pty::ChildInput;
use crate::containment::RunCgroup;

/// A started phase process: its pid, and the read ends of its stdout and
/// stderr (none with a terminal, whose master the shim reads).
pub(super) struct ChildProcess {
    pub(super) pid: i32,
    pub(super) stdout: Option<File>,
    pub(super) stderr: Option<File>,
}

/// Starts `argv` for the run, in the run's cgroup when it has one, and as
/// `spec.run_as` when set, with `input` as its stdio. The error is a
/// sentence for the report.
pub(super) fn spawn_child(
    argv: &[String],
    spec: &ShimSpec,
    cgroup: Option<&RunCgroup>,
    input: &ChildInput,
) -> Result<ChildProcess, String> {
    let Some(program) = argv.first() else {
        return Err("the command is empty".to_owned());
    };
    if !spec.cwd.is_dir() {
        return Err(format!(
            "cwd {} does not exist or is not a directory",
            spec.cwd.display()
        ));
    }
    let run_as = spec.run_as;
    let started = start(argv, spec, cgroup, input);
    started.map_err(|err| match err.kind() {
        io::ErrorKind::NotFound => format!("command not found: {program}"),
        io::ErrorKind::PermissionDenied if run_as.is_some() => {
            format!("permission denied executing {program} as the run user")
        }
        io::ErrorKind::PermissionDenied => format!("permission denied executing {program}"),
        _ => format!("cannot start {program}: {err}"),
    })
}

/// The child's stdio, made here, and the clone.
fn start(
    argv: &[String],
    spec: &ShimSpec,
    cgroup: Option<&RunCgroup>,
    input: &ChildInput,
) -> io::Result<ChildProcess> {
    let piped = !matches!(input, ChildInput::Pty(_));
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from);
    let (out, err) = match piped {
        true => (Some(pipe()?), Some(pipe()?)),
        false => (None, None),
    };
    let null = match input {
        ChildInput::Null => Some(File::open("/dev/null")?),
        _ => None,
    };
    let stdin = match (input, &null) {
        (ChildInput::Pty(fd) | ChildInput::Pipe(fd), _) => fd.as_raw_fd(),
        (ChildInput::Null, null) => null.as_ref().map_or(-1, |n| n.as_raw_fd()),
    };
    // A terminal's slave is also stdout and stderr.
    let write_end =
        |pipe: &Option<(OwnedFd, OwnedFd)>| pipe.as_ref().map_or(stdin, |p| p.1.as_raw_fd());
    let stdio = [stdin, write_end(&out), write_end(&err)];
    let exec = Exec::new(
        argv,
        &spec.env,
        &spec.cwd,
        stdio,
        piped,
        spec.oom_score_adj,
        spec.run_as,
    )?;
    let target = cgroup.map(|c| Target {
        dir: c.dir_fd(),
        procs: c.procs_fd(),
    });
    let pid = exec.spawn(target)?;
    // The child has its ends; the shim keeps the read ends.
    let read_end = |pipe: Option<(OwnedFd, OwnedFd)>| pipe.map(|(read, _write)| File::from(read));
    Ok(ChildProcess {
        pid,
        stdout: read_end(out),
        stderr: read_end(err),
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

/// The signals whose disposition in the shim is not the default (ignored,
/// or caught by a handler of the Rust runtime), a bit each (`1 << (n -
/// 1)`); noted by [`note_signal_dispositions`] while a warm shim waits.
static NOT_DEFAULT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Notes which signals the child must set back to their default: those the
/// shim does not leave at the default. Asked once, before the spec: the
/// shim changes no disposition after its start (it blocks the signals it
/// takes and reads them from a `signalfd`), so a child resets those few
/// instead of asking the kernel to reset all 62.
pub(super) fn note_signal_dispositions() {
    let mut not_default = 0u64;
    for signal in 1..=64 {
        let mut current = KernelSigaction {
            handler: libc::SIG_DFL,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        // SAFETY: rt_sigaction with no new action only writes the current
        // one into our local.
        let asked = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                std::ptr::null::<KernelSigaction>(),
                &mut current as *mut KernelSigaction,
                8usize,
            )
        };
        if asked != 0 || current.handler != libc::SIG_DFL {
            not_default |= 1 << (signal - 1);
        }
    }
    // The C library's own two (cancellation, set*id), whose handlers it
    // may install later, are reset always.
    not_default |= (1 << 31) | (1 << 32);
    let _ = NOT_DEFAULT.set(not_default);
}

/// Runs in the child before exec: default dispositions for every signal,
/// an empty mask, the run's oom_score_adj, and every descriptor beyond
/// stdio marked close-on-exec. Async-signal-safe calls only. A forked
/// child that cannot open its oom_score_adj (a shim that is not root)
/// `may_become_dumpable` for the write; a child sharing the shim's memory
/// may not, since that would make the shim dumpable.
pub(super) fn reset_child(oom: &[u8], may_become_dumpable: bool) {
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
        // Every signal when the shim did not note its dispositions.
        let not_default = NOT_DEFAULT.get().copied().unwrap_or(u64::MAX);
        for signal in 1..=64 {
            if not_default & (1 << (signal - 1)) != 0
                && signal != libc::SIGKILL
                && signal != libc::SIGSTOP
            {
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
        if !write_oom_score_adj(oom) && may_become_dumpable {
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
/// writes that need the shim's privileges. Raw system calls: the C
/// library's wrappers apply a change to every thread the library knows
/// of, and in a child created by a bare `clone3` it still knows the
/// shim's threads, which are not there: it would wait for them forever.
pub(super) fn drop_privileges(user: RunAs) -> io::Result<()> {
    // SAFETY: setgroups reads one gid from our stack; setresgid and
    // setresuid take integers. All are async-signal-safe.
    unsafe {
        let groups = [user.gid as libc::gid_t];
        if libc::syscall(libc::SYS_setgroups, 1usize, groups.as_ptr()) != 0
            || libc::syscall(libc::SYS_setresgid, user.gid, user.gid, user.gid) != 0
            || libc::syscall(libc::SYS_setresuid, user.uid, user.uid, user.uid) != 0
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
