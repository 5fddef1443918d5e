//! The fork and exec of a phase's process, born in the run's cgroup:
//! `clone3(CLONE_INTO_CGROUP | CLONE_VFORK)` puts the child in the cgroup
//! as it is created, so it runs no instruction outside it and nothing has
//! to move it. Moving a process (a write of `cgroup.procs`) takes the
//! kernel's cgroup-wide write lock, which waits for an RCU grace period:
//! about 0.1 ms on a quiet machine and 10 to 20 ms on a busy one, where
//! it was the largest single cost of a short run. Where `clone3` or
//! `CLONE_INTO_CGROUP` is refused (Linux < 5.7, a seccomp filter) or
//! fails, the child is forked and writes `cgroup.procs` itself before
//! anything else, as before.
//!
//! Hand-written because `std::process::Command` has no way to pass clone
//! flags. The child is a forked copy (no `CLONE_VM`): it may return from
//! the system call on its own stack, and makes only async-signal-safe
//! calls on memory prepared before the clone, like a `pre_exec` hook. An
//! exec that fails sends its errno back through a close-on-exec pipe.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::raw::c_char;

use super::protocol::RunAs;

/// `struct clone_args` of `clone3(2)`, the same on every architecture.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The run's cgroup as a new child enters it: its directory (for
/// `CLONE_INTO_CGROUP`) and its `cgroup.procs` (for the fallback).
#[derive(Clone, Copy)]
pub(super) struct Target {
    pub(super) dir: RawFd,
    pub(super) procs: RawFd,
}

/// Everything the child needs, prepared before the clone: no allocation
/// happens after it.
pub(super) struct Exec {
    program: CString,
    /// Keeps the strings `argv_ptrs` points into.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    /// Keeps the strings `envp_ptrs` points into.
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const c_char>,
    cwd: CString,
    /// The child's stdin, stdout and stderr (descriptors of the shim's,
    /// close-on-exec, duplicated onto 0, 1 and 2 in the child).
    stdio: [RawFd; 3],
    /// Lead a new process group (else a new session on the terminal).
    own_group: bool,
    /// The run's `oom_score_adj`, as written to /proc.
    oom: Vec<u8>,
    run_as: Option<RunAs>,
}

impl Exec {
    /// Prepares `argv` with `env` in `cwd`; errs on a NUL byte.
    pub(super) fn new(
        argv: &[String],
        env: &[(String, String)],
        cwd: &std::path::Path,
        stdio: [RawFd; 3],
        own_group: bool,
        oom_score_adj: i32,
        run_as: Option<RunAs>,
    ) -> io::Result<Exec> {
        use std::os::unix::ffi::OsStrExt;
        let c =
            |s: &[u8]| CString::new(s).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e));
        let args = argv
            .iter()
            .map(|a| c(a.as_bytes()))
            .collect::<io::Result<Vec<_>>>()?;
        let program = args
            .first()
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the command is empty"))?;
        let envp = env
            .iter()
            .map(|(k, v)| c(format!("{k}={v}").as_bytes()))
            .collect::<io::Result<Vec<_>>>()?;
        let pointers = |strings: &[CString]| {
            let mut list: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
            list.push(std::ptr::null());
            list
        };
        Ok(Exec {
            program,
            argv_ptrs: pointers(&args),
            _argv: args,
            envp_ptrs: pointers(&envp),
            _envp: envp,
            cwd: c(cwd.as_os_str().as_bytes())?,
            stdio,
            own_group,
            oom: format!("{oom_score_adj}\n").into_bytes(),
            run_as,
        })
    }

    /// Starts the child, in `cgroup` when given; its pid once it has
    /// exec'd, or why it could not.
    pub(super) fn spawn(&self, cgroup: Option<Target>) -> io::Result<i32> {
        self.spawn_with(cgroup, Create::Clone3)
    }

    fn spawn_with(&self, cgroup: Option<Target>, create: Create) -> io::Result<i32> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (pid, must_move) = clone_child(cgroup, create)?;
        if pid == 0 {
            let procs = if must_move {
                cgroup.map(|c| c.procs)
            } else {
                None
            };
            // The new child, a copy of this process: it runs only
            // async-signal-safe calls on memory prepared above.
            self.in_child(procs, write.as_raw_fd())
        }
        drop(write);
        let mut errno = [0u8; 4];
        let read_bytes = read_full(&read, &mut errno);
        if read_bytes == errno.len() {
            // The child failed before exec and has exited: reap it.
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            return Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)));
        }
        Ok(pid)
    }

    /// The child between clone and exec: into the cgroup (fallback only),
    /// stdio, cwd, its process group or session, a clean signal state,
    /// the run's user, exec. A failure sends errno to `report` and exits.
    fn in_child(&self, procs: Option<RawFd>, report: RawFd) -> ! {
        let fail = || -> ! {
            let errno = io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            // SAFETY: write and _exit are async-signal-safe.
            unsafe {
                libc::write(report, errno.to_ne_bytes().as_ptr().cast(), 4);
                libc::_exit(127)
            }
        };
        // SAFETY: async-signal-safe calls on memory prepared before the
        // clone; this process is the child's own copy, so setting its
        // `environ` touches no other thread.
        unsafe {
            if let Some(fd) = procs {
                // Into the run's cgroup first: whatever the child forks
                // from now on is killed with the run.
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    fail();
                }
            }
            for (target, fd) in self.stdio.iter().enumerate() {
                if libc::dup2(*fd, target as RawFd) < 0 {
                    fail();
                }
            }
            if libc::chdir(self.cwd.as_ptr()) != 0 {
                fail();
            }
            if self.own_group && libc::setpgid(0, 0) != 0 {
                fail();
            }
            super::child::reset_child(&self.oom);
            if !self.own_group && super::pty::take_terminal().is_err() {
                fail();
            }
            if let Some(user) = self.run_as {
                if super::child::drop_privileges(user).is_err() {
                    fail();
                }
            }
            // execvp searches the PATH of the run's env, as a shell would.
            environ = self.envp_ptrs.as_ptr();
            libc::execvp(self.program.as_ptr(), self.argv_ptrs.as_ptr());
        }
        fail()
    }
}

extern "C" {
    /// The C library's environment, which `execvp` reads PATH from.
    static mut environ: *const *const c_char;
}

/// How the child is created.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Create {
    /// `clone3` into the cgroup, `fork` where it is refused.
    Clone3,
    /// `fork` (the fallback; tests take it on purpose).
    #[cfg_attr(not(test), allow(dead_code))]
    Fork,
}

/// Creates the child: `clone3` into `cgroup` when given, falling back to
/// `fork`. Returns the pid (0 in the child) and whether the child must
/// move itself into the cgroup.
fn clone_child(cgroup: Option<Target>, create: Create) -> io::Result<(i32, bool)> {
    if let (Some(target), Create::Clone3) = (cgroup, create) {
        let mut args = CloneArgs {
            flags: CLONE_INTO_CGROUP | libc::CLONE_VFORK as u64,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: target.dir as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 without CLONE_VM forks: the child gets a copy of
        // this address space and returns here on its copy of the stack.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &mut args as *mut CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if pid >= 0 {
            return Ok((pid as i32, false));
        }
        // Refused (ENOSYS, EINVAL, E2BIG, EPERM from a seccomp filter) or
        // failed for a reason of the cgroup's: the fallback does what was
        // done before, and reports that write's own error if it fails too.
    }
    // SAFETY: the child only runs async-signal-safe calls until exec.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        pid => Ok((pid, cgroup.is_some())),
    }
}

/// Reads until `buf` is full or the pipe's end; the bytes read.
fn read_full(pipe: &OwnedFd, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(pipe.as_raw_fd(), &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    got
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containment::RunCgroup;
    use std::io::Read;

    /// Runs `argv` through [`Exec`] with its stdout piped here, in
    /// `cgroup`; its exit code and stdout.
    fn run(argv: &[&str], cgroup: Option<&RunCgroup>, create: Create) -> io::Result<(i32, String)> {
        run_as(argv, cgroup, create, None)
    }

    fn run_as(
        argv: &[&str],
        cgroup: Option<&RunCgroup>,
        create: Create,
        user: Option<RunAs>,
    ) -> io::Result<(i32, String)> {
        let (out_read, out_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let null = std::fs::File::open("/dev/null").unwrap();
        let stdio = [null.as_raw_fd(), out_write.as_raw_fd(), null.as_raw_fd()];
        let argv: Vec<String> = argv.iter().map(|a| (*a).to_owned()).collect();
        let env = [("PATH".to_owned(), "/usr/bin:/bin".to_owned())];
        let exec = Exec::new(&argv, &env, std::path::Path::new("/"), stdio, true, 0, user)?;
        let target = cgroup.map(|c| Target {
            dir: c.dir_fd(),
            procs: c.procs_fd(),
        });
        let pid = exec.spawn_with(target, create)?;
        drop(out_write);
        let mut text = String::new();
        std::fs::File::from(out_read)
            .read_to_string(&mut text)
            .unwrap();
        let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
        let code = match status {
            nix::sys::wait::WaitStatus::Exited(_, code) => code,
            other => panic!("{other:?}"),
        };
        Ok((code, text))
    }

    /// The child is in the run's cgroup when its program starts, created
    /// there by `clone3` or moved there by the fallback, and leads its own
    /// process group.
    #[test]
    fn the_child_starts_in_the_cgroup_either_way() {
        let name = format!("clone-test-{}", std::process::id());
        let Some(cgroup) = RunCgroup::create(&name) else {
            eprintln!("needs a writable cgroup v2; skipped");
            return;
        };
        for create in [Create::Clone3, Create::Fork] {
            let script = "cat /proc/self/cgroup; cut -d' ' -f5 /proc/$$/stat; echo $$";
            let (code, out) = run(&["sh", "-c", script], Some(&cgroup), create).unwrap();
            assert_eq!(code, 0, "{out}");
            let line = out
                .lines()
                .find(|l| l.starts_with("0::"))
                .unwrap_or_default();
            assert!(line.ends_with(&format!("/sandboxd-run-{name}")), "{out}");
            let numbers: Vec<&str> = out
                .lines()
                .skip(out.lines().count() - 2)
                .map(str::trim)
                .collect();
            assert_eq!(numbers[0], numbers[1], "its own process group: {out}");
        }
    }

    /// A program that cannot be started is an error of the spawn (the
    /// errno of the failed exec), not a child that exits 127.
    #[test]
    fn a_failed_exec_is_reported() {
        let err = run(&["/nonexistent/program"], None, Create::Clone3).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        let (code, out) = run(&["echo", "found on PATH"], None, Create::Fork).unwrap();
        assert_eq!((code, out.as_str()), (0, "found on PATH\n"));
    }

    /// The child of a process with threads becomes the run user (as
    /// root): the change is made for the child alone, without waiting on
    /// threads the C library believes it has.
    #[test]
    fn the_child_becomes_the_run_user_beside_threads() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("needs root; skipped");
            return;
        }
        let _busy = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_secs(2)));
        let user = RunAs {
            uid: 61234,
            gid: 61234,
        };
        for create in [Create::Clone3, Create::Fork] {
            let (code, out) =
                run_as(&["sh", "-c", "id -u; id -G"], None, create, Some(user)).unwrap();
            assert_eq!((code, out.as_str()), (0, "61234\n61234\n"));
        }
    }

    extern "C" fn ignore_it(_: libc::c_int) {}

    /// The child starts with every signal at its default, with none
    /// blocked: one this process ignores or catches is reset.
    #[test]
    fn the_child_has_default_signal_dispositions() {
        // SAFETY: SIGUSR1 ignored and a no-op handler for SIGUSR2, in
        // this test process (no other test uses them).
        unsafe {
            libc::signal(libc::SIGUSR1, libc::SIG_IGN);
            libc::signal(libc::SIGUSR2, ignore_it as *const () as libc::sighandler_t);
        }
        let (code, out) = run(&["cat", "/proc/self/status"], None, Create::Clone3).unwrap();
        assert_eq!(code, 0, "{out}");
        let lines: Vec<&str> = out
            .lines()
            .filter(|l| {
                ["SigBlk:", "SigIgn:", "SigCgt:"]
                    .iter()
                    .any(|k| l.starts_with(k))
            })
            .collect();
        assert_eq!(lines.len(), 3, "{out}");
        for line in lines {
            assert!(line.ends_with("0000000000000000"), "{line}");
        }
    }
}
