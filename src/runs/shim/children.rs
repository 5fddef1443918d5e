//! The shim as a child subreaper: ending what is left of the run after a
//! phase's leader, and reaping every child before the next phase or the
//! end. (Waiting for the leader while reaping orphans is `capture::Pump`'s,
//! which reads the phase's output meanwhile.)

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::containment::RunCgroup;
use crate::procfs;

/// Ends what is left of a run after its leader: the rest of its process
/// group, everything in the run's cgroup (when it has one), and every
/// descendant of the shim found in `/proc` (processes that `setsid` or
/// double-fork away are reparented to this subreaper), SIGKILLed round
/// after round until none is left. No process outlives its run. With a
/// `kill_uid` (a uid only this run has), every process of that uid too,
/// wherever it went.
pub(super) fn kill_leftovers(leader: i32, cgroup: Option<&RunCgroup>, kill_uid: Option<u32>) {
    let _ = killpg(Pid::from_raw(leader), Signal::SIGKILL);
    if let Some(cgroup) = cgroup {
        cgroup.kill_all(Duration::from_secs(5), reap_exited);
    }
    let me = std::process::id() as i32;
    let started = Instant::now();
    loop {
        reap_exited();
        if let Some(uid) = kill_uid {
            kill_every_process_of(uid);
        }
        // Usually no child left, and then /proc need not be walked.
        let mut pids = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Err(Errno::ECHILD) => Vec::new(),
            _ => procfs::descendants_of(me),
        };
        if let Some(uid) = kill_uid {
            pids.extend(procfs::live_pids_of_uid(uid));
        }
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        // A process stuck in the kernel (D state) may take a while; the
        // round goes on, but never spins.
        let pause = if started.elapsed() < Duration::from_millis(100) {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(20)
        };
        std::thread::sleep(pause);
    }
}

/// SIGKILLs every process of `uid` at once: a forked helper becomes
/// `uid` and calls `kill(-1)`, which reaches every process it may signal
/// (those of its uid) but itself, forks included. Needs root; without it
/// the helper fails to switch and kills nothing.
fn kill_every_process_of(uid: u32) {
    // SAFETY: the child makes raw system calls only (async-signal-safe in
    // a forked copy of a multithreaded process) and leaves with _exit.
    unsafe {
        let helper = libc::fork();
        if helper == 0 {
            let switched = libc::syscall(libc::SYS_setresgid, uid, uid, uid) == 0
                && libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) == 0
                && libc::syscall(libc::SYS_setresuid, uid, uid, uid) == 0;
            if switched {
                libc::kill(-1, libc::SIGKILL);
            }
            libc::_exit(0);
        }
        if helper > 0 {
            let _ = waitpid(Pid::from_raw(helper), None);
        }
    }
}

/// Reaps the children that have exited, without waiting.
pub(super) fn reap_exited() {
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            return;
        }
    }
}

/// Reaps every child until none is left.
pub(super) fn reap_all() {
    loop {
        match waitpid(None, None) {
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
}
