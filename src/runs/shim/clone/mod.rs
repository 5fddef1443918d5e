//! The fork and exec of a phase's process, born in the run's cgroup:
//! `clone3(CLONE_INTO_CGROUP | CLONE_VFORK)` puts the child in the cgroup
//! as it is created, so it runs no instruction outside it and nothing has
//! to move it. Moving a process (a write of `cgroup.procs`) takes the
//! kernel's cgroup-wide write lock, which waits for an RCU grace period:
//! about 0.1 ms on a quiet machine and 10 to 20 ms on a busy one, where
//! it was the largest single cost of a short run.
//!
//! Three ways, the first that works: the child shares the shim's memory
//! until its exec (`shared_memory`: `CLONE_VM`, as `posix_spawn` does, for
//! a root shim on x86_64 and aarch64); else a forked copy created by
//! `clone3`; else (Linux < 5.7, a seccomp filter) `fork`, the child then
//! writing `cgroup.procs` itself before anything else.
//!
//! Hand-written because `std::process::Command` has no way to pass clone
//! flags. The child makes only async-signal-safe calls on memory prepared
//! before the clone, like a `pre_exec` hook, and searches the run's PATH
//! itself as `execvp` would (the C library's `execvp` reads the shim's
//! environment, not the run's). A failed start sends its errno back
//! through memory (shared) or a close-on-exec pipe (forked).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::raw::c_char;
use std::sync::atomic::{AtomicI32, Ordering};

use super::protocol::RunAs;

mod shared_memory;

/// `struct clone_args` of `clone3(2)`, the same on every architecture.
#[repr(C)]
#[derive(Default)]
pub(super) struct CloneArgs {
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

pub(super) const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

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
    /// The paths to try in order: the program itself when it names a
    /// path, else its name in each directory of the run's PATH.
    candidates: Vec<CString>,
    /// For each candidate, `/bin/sh`'s argv to run it as a script (a file
    /// of no executable format), as `execvp` does.
    script_argvs: Vec<Vec<*const c_char>>,
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
    /// The errno of a failed start, written by a child sharing this
    /// memory before it exits; 0 while none.
    failed: AtomicI32,
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
        if args.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the command is empty",
            ));
        }
        let path = env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str());
        let candidates = search_path(argv[0].as_bytes(), path)
            .iter()
            .map(|p| c(p))
            .collect::<io::Result<Vec<_>>>()?;
        let envp = env
            .iter()
            .map(|(k, v)| c(format!("{k}={v}").as_bytes()))
            .collect::<io::Result<Vec<_>>>()?;
        let pointers = |strings: &[CString]| {
            let mut list: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
            list.push(std::ptr::null());
            list
        };
        let script_argvs = candidates
            .iter()
            .map(|file| {
                let mut list = vec![c"/bin/sh".as_ptr(), file.as_ptr()];
                list.extend(args.iter().skip(1).map(|a| a.as_ptr()));
                list.push(std::ptr::null());
                list
            })
            .collect();
        Ok(Exec {
            candidates,
            script_argvs,
            argv_ptrs: pointers(&args),
            _argv: args,
            envp_ptrs: pointers(&envp),
            _envp: envp,
            cwd: c(cwd.as_os_str().as_bytes())?,
            stdio,
            own_group,
            oom: format!("{oom_score_adj}\n").into_bytes(),
            run_as,
            failed: AtomicI32::new(0),
        })
    }

    /// Starts the child, in `cgroup` when given; its pid once it has
    /// exec'd, or why it could not.
    pub(super) fn spawn(&self, cgroup: Option<Target>) -> io::Result<i32> {
        self.spawn_with(cgroup, Create::Shared)
    }

    fn spawn_with(&self, cgroup: Option<Target>, create: Create) -> io::Result<i32> {
        // A shim that is not root must make itself dumpable for a moment
        // in the child to write oom_score_adj (`child::reset_child`),
        // which a child sharing its memory would do to the shim itself.
        if create == Create::Shared && nix::unistd::geteuid().is_root() {
            if let Some(started) = shared_memory::spawn(self, cgroup.map(|c| c.dir)) {
                return started;
            }
        }
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
            self.in_child(procs, Some(write.as_raw_fd()))
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
    /// the run's user, exec. A failure is told through `failed` (seen by
    /// a parent sharing this memory) and `report` (a forked child's pipe),
    /// and the child exits.
    fn in_child(&self, procs: Option<RawFd>, report: Option<RawFd>) -> ! {
        let fail = |errno: i32| -> ! {
            self.failed.store(errno, Ordering::SeqCst);
            // SAFETY: write and _exit are async-signal-safe.
            unsafe {
                if let Some(report) = report {
                    libc::write(report, errno.to_ne_bytes().as_ptr().cast(), 4);
                }
                libc::_exit(127)
            }
        };
        let last_errno = || {
            io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO)
        };
        // SAFETY: async-signal-safe calls on memory prepared before the
        // clone.
        unsafe {
            if let Some(fd) = procs {
                // Into the run's cgroup first: whatever the child forks
                // from now on is killed with the run.
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    fail(last_errno());
                }
            }
            for (target, fd) in self.stdio.iter().enumerate() {
                if libc::dup2(*fd, target as RawFd) < 0 {
                    fail(last_errno());
                }
            }
            if libc::chdir(self.cwd.as_ptr()) != 0 {
                fail(last_errno());
            }
            if self.own_group && libc::setpgid(0, 0) != 0 {
                fail(last_errno());
            }
            // Only a forked copy may become dumpable for a moment.
            super::child::reset_child(&self.oom, report.is_some());
            if !self.own_group && super::pty::take_terminal().is_err() {
                fail(last_errno());
            }
            if let Some(user) = self.run_as {
                if super::child::drop_privileges(user).is_err() {
                    fail(last_errno());
                }
            }
        }
        fail(self.exec_candidates())
    }

    /// Tries each candidate as `execvp` does: on to the next one where the
    /// file is missing or not reachable, a file of no executable format
    /// run by `/bin/sh`, EACCES reported if any candidate gave it. Returns
    /// only on failure, with the errno.
    fn exec_candidates(&self) -> i32 {
        let mut denied = false;
        let mut errno = libc::ENOENT;
        for (file, script_argv) in self.candidates.iter().zip(&self.script_argvs) {
            // SAFETY: execve on NUL-terminated strings and arrays made
            // before the clone.
            unsafe {
                libc::execve(
                    file.as_ptr(),
                    self.argv_ptrs.as_ptr(),
                    self.envp_ptrs.as_ptr(),
                );
                errno = io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO);
                if errno == libc::ENOEXEC {
                    libc::execve(
                        c"/bin/sh".as_ptr(),
                        script_argv.as_ptr(),
                        self.envp_ptrs.as_ptr(),
                    );
                    return libc::ENOEXEC;
                }
            }
            match errno {
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ESTALE | libc::ENOTDIR | libc::ENODEV | libc::ETIMEDOUT => {}
                _ => return errno,
            }
        }
        if denied {
            libc::EACCES
        } else {
            errno
        }
    }
}

/// The paths `execvp` would try for `program` with the run's `PATH`
/// (`/bin:/usr/bin` when it has none): the program itself when it holds a
/// `/`, else `dir/program` for each entry, an empty entry meaning the
/// working directory.
fn search_path(program: &[u8], path: Option<&str>) -> Vec<Vec<u8>> {
    if program.is_empty() {
        return Vec::new();
    }
    if program.contains(&b'/') {
        return vec![program.to_vec()];
    }
    path.unwrap_or("/bin:/usr/bin")
        .split(':')
        .map(|dir| match dir {
            "" => program.to_vec(),
            dir => [dir.as_bytes(), b"/", program].concat(),
        })
        .collect()
}

/// How the child is created.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Create {
    /// Sharing memory where it can, else as [`Create::Clone3`].
    Shared,
    /// A forked copy by `clone3` into the cgroup, `fork` where it is
    /// refused (tests take it on purpose).
    #[cfg_attr(not(test), allow(dead_code))]
    Clone3,
    /// `fork` (the fallback; tests take it on purpose).
    #[cfg_attr(not(test), allow(dead_code))]
    Fork,
}

/// Creates the child: `clone3` into `cgroup` when given, falling back to
/// `fork`. Returns the pid (0 in the child) and whether the child must
/// move itself into the cgroup.
fn clone_child(cgroup: Option<Target>, create: Create) -> io::Result<(i32, bool)> {
    if let (Some(target), Create::Clone3 | Create::Shared) = (cgroup, create) {
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
mod tests;
