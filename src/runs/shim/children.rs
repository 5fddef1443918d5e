//! The shim as a child subreaper: waiting for a phase's leader while
//! reaping orphans, ending what is left of the run after it, and reaping
//! every child before the next phase or the end.

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::containment::RunCgroup;
use crate::procfs;

/// Waits for the leader, reaping any orphan that exits meanwhile.
pub(super) fn wait_for_leader(leader: i32) -> WaitStatus {
    loop {
        match waitpid(None, None) {
            Ok(status) if status.pid() == Some(Pid::from_raw(leader)) => return status,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return WaitStatus::Exited(Pid::from_raw(leader), -1),
        }
    }
}

/// Ends what is left of a run after its leader: the rest of its process
/// group, everything in the run's cgroup (when it has one), and every
/// descendant of the shim found in `/proc` (processes that `setsid` or
/// double-fork away are reparented to this subreaper), SIGKILLed round
/// after round until none is left. No process outlives its run.
pub(super) fn kill_leftovers(leader: i32, cgroup: Option<&RunCgroup>) {
    let _ = killpg(Pid::from_raw(leader), Signal::SIGKILL);
    if let Some(cgroup) = cgroup {
        cgroup.kill_all(Duration::from_secs(5), reap_exited);
    }
    let me = std::process::id() as i32;
    let started = Instant::now();
    loop {
        reap_exited();
        // Usually none left, and then /proc need not be walked.
        if waitpid(None, Some(WaitPidFlag::WNOHANG)) == Err(Errno::ECHILD) {
            return;
        }
        let pids = procfs::descendants_of(me);
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

/// Reaps the children that have exited, without waiting.
fn reap_exited() {
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
