//! The shim as a child subreaper: waiting for a phase's leader while
//! reaping orphans, ending what is left of the run after it, and reaping
//! every child before the next phase or the end.

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

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
/// group and any process reparented to the shim (orphans that left the
/// group). No grandchild outlives its run.
pub(super) fn kill_leftovers(leader: i32) {
    let _ = killpg(Pid::from_raw(leader), Signal::SIGKILL);
    // Children left (orphans adopted by this subreaper)? Usually none, and
    // then /proc need not be scanned.
    if waitpid(None, Some(WaitPidFlag::WNOHANG)) == Err(Errno::ECHILD) {
        return;
    }
    let me = std::process::id() as i32;
    for pid in procfs::children_of(me) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
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
