//! The tiny init of entrypoint mode: what `sandboxd serve` becomes first
//! when it is PID 1 (or given `--subreaper`), so that reaping never steals
//! an exit status (option (a) of "Reaping" in DESIGN.md, as tini and
//! fpco/pid1 do it).
//!
//! The init re-executes the same binary, with the same arguments and
//! environment plus [`CHILD_MARKER`], as the real daemon, its only child.
//! Then, single-threaded and without an async runtime, it:
//! - is a child subreaper (`PR_SET_CHILD_SUBREAPER`) unless it is PID 1,
//!   so every orphan in the tree (a double-forked grandchild of the
//!   service, the shim of a run whose daemon crashed) is reparented to it;
//! - reaps every child with `waitpid(-1)`. The daemon never reaps anything
//!   but its own children (the service, the run shims, through
//!   `tokio::process`), so no exit status is stolen from anyone;
//! - forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the
//!   daemon, which applies them (ordered shutdown, or passing them on to
//!   the service's process group);
//! - exits with the daemon's exit code, 128+N if signal N killed it.
//!
//! If the init itself is killed, the daemon gets SIGTERM
//! (`PR_SET_PDEATHSIG`) and shuts down in order.
//!
//! Crash restart: when the daemon dies of a signal the init did not pass
//! on to it (SIGKILL from the OOM killer, SIGSEGV, SIGABRT, ...) or exits
//! 101 (a Rust panic), and no SIGTERM/SIGINT was received, the init starts
//! it again after [`RESTART_DELAY`]. The new daemon re-attaches to the runs
//! (their shims were reparented to the init and kept running) and replaces
//! the service the dead daemon left behind. More than [`MAX_CRASHES`]
//! crashes within [`CRASH_WINDOW`] and the init gives up and exits like the
//! daemon did.
//!
//! Hand-written rather than a crate: the whole job is a fork/exec and a
//! `sigtimedwait` loop (tini is ~600 lines of C), and it must run before
//! anything else (no tokio, no threads) in the same binary.

use std::ffi::OsString;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::signals::FORWARDED_SIGNALS;

/// Environment variable telling a `sandboxd serve` that it is the init's
/// child, i.e. the daemon proper. Removed from the environment at once so
/// neither the service nor the runs inherit it.
pub(crate) const CHILD_MARKER: &str = "SANDBOXD_INIT_CHILD";

/// Wait before starting a crashed daemon again.
pub(crate) const RESTART_DELAY: Duration = Duration::from_secs(1);

/// Crashes tolerated within [`CRASH_WINDOW`].
pub(crate) const MAX_CRASHES: usize = 5;

/// See [`MAX_CRASHES`].
pub(crate) const CRASH_WINDOW: Duration = Duration::from_secs(300);

/// Whether this process is the init's child; removes the marker. Call it
/// first thing, while the process has a single thread.
pub(crate) fn take_marker() -> bool {
    let marked = std::env::var_os(CHILD_MARKER).is_some();
    if marked {
        // Single-threaded here (nothing has started a thread yet), which is
        // what makes changing the environment sound.
        std::env::remove_var(CHILD_MARKER);
    }
    marked
}

/// Whether `serve` should become the init: PID 1, or asked to.
pub(crate) fn wanted(subreaper: bool) -> bool {
    subreaper || std::process::id() == 1
}

/// How the daemon ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Exited(i32),
    Signaled(Signal),
}

impl Ended {
    fn from_status(status: WaitStatus) -> Option<Ended> {
        match status {
            WaitStatus::Exited(_, code) => Some(Ended::Exited(code)),
            WaitStatus::Signaled(_, signal, _) => Some(Ended::Signaled(signal)),
            _ => None,
        }
    }

    /// The init's exit code: the daemon's, 128+N for signal N.
    fn code(self) -> u8 {
        match self {
            Ended::Exited(code) => code as u8,
            Ended::Signaled(signal) => 128u8.wrapping_add(signal as u8),
        }
    }

    /// A crash, not an exit the daemon chose or a signal passed on to it.
    fn is_crash(self, forwarded: &[Signal]) -> bool {
        match self {
            Ended::Exited(code) => code == 101,
            Ended::Signaled(signal) => !forwarded.contains(&signal),
        }
    }
}

/// Runs the init until the daemon ends for good; returns its exit code.
pub(crate) fn main() -> ExitCode {
    // The environment holds the session key: no dumps, no ptrace by peers.
    // SAFETY: prctl with integer arguments touches no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let pid1 = std::process::id() == 1;
    if !pid1 {
        // SAFETY: as above.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            let err = std::io::Error::last_os_error();
            eprintln!("sandboxd: --subreaper: cannot become a child subreaper: {err}");
            return ExitCode::from(1);
        }
    }
    let mut waited = SigSet::empty();
    for signal in FORWARDED_SIGNALS {
        waited.add(signal);
    }
    waited.add(Signal::SIGCHLD);
    // An ignored signal is discarded even while blocked, and `nohup` or a
    // shell's background job hands us SIGHUP/SIGINT/SIGQUIT ignored: back
    // to the default, which never runs since they stay blocked.
    for signal in waited.iter() {
        // SAFETY: setting a default disposition installs no handler.
        unsafe { libc::signal(signal as libc::c_int, libc::SIG_DFL) };
    }
    // Blocked before the first fork: no signal is lost between the spawn
    // and the wait. The child starts with an empty mask (std resets it).
    if let Err(err) = waited.thread_block() {
        eprintln!("sandboxd: cannot block signals: {err}");
        return ExitCode::from(1);
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(err) => {
            eprintln!("sandboxd: cannot find its own executable: {err}");
            return ExitCode::from(1);
        }
    };
    // The daemon gets the credentials through an inherited memfd, never
    // its environment (see `handover`).
    let credentials = match super::handover::take_from_env() {
        Ok(credentials) => credentials,
        Err(err) => {
            eprintln!("sandboxd: cannot hand the credentials over: {err}");
            return ExitCode::from(1);
        }
    };
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    tracing::info!(
        pid1,
        "init: starting the daemon as its child; reaping orphans"
    );
    let mut init = Init {
        exe,
        args,
        credentials,
        waited,
        daemon: None,
        stopping: false,
        forwarded: Vec::new(),
        crashes: Vec::new(),
    };
    ExitCode::from(init.run())
}

struct Init {
    exe: std::path::PathBuf,
    args: Vec<OsString>,
    /// The memfd each daemon inherits its credentials from.
    credentials: Option<std::fs::File>,
    waited: SigSet,
    daemon: Option<Pid>,
    /// SIGTERM/SIGINT seen: no more restarts.
    stopping: bool,
    /// Signals passed to the current daemon (a death by one of them is not
    /// a crash).
    forwarded: Vec<Signal>,
    crashes: Vec<Instant>,
}

impl Init {
    fn run(&mut self) -> u8 {
        let mut restart_at: Option<Instant> = Some(Instant::now());
        let mut last: Option<Ended> = None;
        loop {
            if let Some(at) = restart_at {
                if Instant::now() >= at {
                    restart_at = None;
                    if let Err(code) = self.spawn() {
                        return code;
                    }
                }
            }
            let timeout = restart_at
                .map(|at| at.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            if let Some(signal) = self.next_signal(timeout) {
                if signal != Signal::SIGCHLD {
                    self.on_signal(signal);
                    if self.daemon.is_none() && self.stopping {
                        // Waiting to restart a crashed daemon: just stop.
                        return last.map_or(128 + signal as u8, Ended::code);
                    }
                }
            }
            if let Some(ended) = self.reap() {
                last = Some(ended);
                if !self.stopping && ended.is_crash(&self.forwarded) && self.may_restart() {
                    tracing::error!(
                        ?ended,
                        delay_s = RESTART_DELAY.as_secs_f64(),
                        "init: the daemon crashed; starting it again (runs re-attach)"
                    );
                    restart_at = Some(Instant::now() + RESTART_DELAY);
                    continue;
                }
                self.reap_leftovers();
                return ended.code();
            }
        }
    }

    fn spawn(&mut self) -> Result<(), u8> {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(&self.exe);
        command.args(&self.args).env(CHILD_MARKER, "1");
        let credentials = self.credentials.as_ref().map(|file| {
            command.env(
                super::handover::CREDENTIALS_FD,
                super::handover::number(file),
            );
            std::os::fd::AsRawFd::as_raw_fd(file)
        });
        // SAFETY: the closure only makes async-signal-safe calls.
        unsafe {
            command.pre_exec(move || {
                if let Some(fd) = credentials {
                    super::handover::inherit(fd)?;
                }
                reset_signals();
                // If the init is killed, the daemon is left without a
                // reaper: it shuts down in order instead.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0);
                Ok(())
            })
        };
        let child = command.spawn();
        match child {
            Ok(child) => {
                let pid = Pid::from_raw(child.id() as i32);
                // The init reaps it with waitpid; the handle is not needed.
                drop(child);
                tracing::debug!(pid = pid.as_raw(), "init: daemon started");
                self.daemon = Some(pid);
                self.forwarded.clear();
                Ok(())
            }
            Err(err) => {
                eprintln!(
                    "sandboxd: cannot start the daemon {}: {err}",
                    self.exe.display()
                );
                Err(1)
            }
        }
    }

    /// The next blocked signal, or None after `timeout`.
    fn next_signal(&self, timeout: Duration) -> Option<Signal> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        // SAFETY: the set and the timespec live on our stack for the call;
        // a null siginfo pointer is allowed.
        let n = unsafe { libc::sigtimedwait(self.waited.as_ref(), std::ptr::null_mut(), &ts) };
        if n < 0 {
            return None; // EAGAIN (timeout) or EINTR
        }
        Signal::try_from(n).ok()
    }

    fn on_signal(&mut self, signal: Signal) {
        if matches!(signal, Signal::SIGTERM | Signal::SIGINT) {
            self.stopping = true;
        }
        if let Some(daemon) = self.daemon {
            tracing::debug!(%signal, "init: forwarding to the daemon");
            self.forwarded.push(signal);
            let _ = kill(daemon, signal);
        }
    }

    /// Reaps every child that has exited; returns the daemon's end if it
    /// was among them.
    fn reap(&mut self) -> Option<Ended> {
        let mut daemon_ended = None;
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Err(Errno::EINTR) => continue,
                Err(_) => break,
                Ok(status) => {
                    let pid = status.pid();
                    if pid.is_some() && pid == self.daemon {
                        self.daemon = None;
                        daemon_ended = Ended::from_status(status);
                    } else {
                        tracing::trace!(?status, "init: reaped an orphan");
                    }
                }
            }
        }
        daemon_ended
    }

    fn may_restart(&mut self) -> bool {
        let now = Instant::now();
        self.crashes
            .retain(|at| now.saturating_duration_since(*at) < CRASH_WINDOW);
        self.crashes.push(now);
        if self.crashes.len() > MAX_CRASHES {
            tracing::error!(
                crashes = self.crashes.len(),
                window_s = CRASH_WINDOW.as_secs(),
                "init: the daemon keeps crashing; giving up"
            );
            return false;
        }
        true
    }

    /// Zombies that are already there when the init exits.
    fn reap_leftovers(&mut self) {
        let _ = self.reap();
    }
}

/// In a forked child before exec: an empty signal mask (the init blocks
/// the signals it waits for, and a mask survives exec) and the default
/// disposition for every signal (an ignored one stays ignored across exec:
/// `nohup`, a shell's background jobs and Rust's SIGPIPE hand them down).
/// Async-signal-safe calls only.
pub(crate) fn reset_signals() {
    // An all-zero kernel `struct sigaction` is SIG_DFL, no flags, empty
    // mask, whatever the architecture's layout. The raw syscall because
    // glibc's wrappers refuse the two real-time signals it reserves.
    let default_action = [0u64; 4];
    // SAFETY: sigemptyset and sigprocmask touch only this frame's set;
    // rt_sigaction reads `default_action` (as large as any kernel
    // sigaction) and writes nothing back.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        for signal in 1..=64 {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    signal,
                    default_action.as_ptr(),
                    std::ptr::null_mut::<u8>(),
                    8usize,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_map_like_tini() {
        assert_eq!(Ended::Exited(0).code(), 0);
        assert_eq!(Ended::Exited(3).code(), 3);
        assert_eq!(Ended::Signaled(Signal::SIGTERM).code(), 143);
        assert_eq!(Ended::Signaled(Signal::SIGKILL).code(), 137);
    }

    #[test]
    fn crashes_are_told_apart_from_forwarded_signals() {
        let forwarded = [Signal::SIGTERM];
        assert!(Ended::Signaled(Signal::SIGKILL).is_crash(&forwarded));
        assert!(Ended::Signaled(Signal::SIGSEGV).is_crash(&forwarded));
        assert!(Ended::Exited(101).is_crash(&forwarded));
        assert!(!Ended::Signaled(Signal::SIGTERM).is_crash(&forwarded));
        assert!(!Ended::Exited(0).is_crash(&forwarded));
        assert!(!Ended::Exited(3).is_crash(&forwarded));
    }
}
