//! The shim template: one idle shim process of the warm pool that never
//! takes a run, and forks the pool's shims instead (`runs::template` is
//! the daemon's side).
//!
//! A started shim pays for an exec and the C library's start (which, on a
//! virtual machine, detects the CPU with dozens of trapping `CPUID`
//! instructions): about a millisecond of CPU, spent while the run it
//! replaces is answered. A fork of this small, already started process
//! costs a tenth of that.
//!
//! The template is started as a shim is, with [`TEMPLATE_ENV`] set, and
//! is prepared as every shim is (`prepare_process`: not dumpable, its
//! signals blocked, the dispositions its commands get back noted). It
//! holds nothing of any run, ever: a forked shim starts from this state.
//! For each byte the daemon writes to the template's stdin (a socket) it:
//! - makes the new shim's spec channel (a socket pair) and event pipe;
//! - forks (the C library's `fork`: one thread, so the copy is whole);
//!   the child makes the channel and the pipe its stdin and stdout,
//!   closes every other descriptor, leads its own process group, and goes
//!   on as a started shim does once prepared (`serve`);
//! - answers with the child's pid and, as `SCM_RIGHTS`, the daemon's ends
//!   of the channel and the pipe and a pidfd of the child, then closes its
//!   copies. The template keeps no end of any shim's channel, so an idle
//!   forked shim still ends when the daemon dies.
//!
//! Forked shims are the template's children; it reaps them as they exit
//! (SIGCHLD from a signalfd). The daemon follows each through its pidfd.
//! The template ends when its channel closes (the daemon stopped or
//! died). Forked shims that still run a run live on, reparented as a
//! started shim would be when its daemon dies.
//!
//! Written with `libc` and `nix` calls: the fork's child must not go
//! through anything that allocates or locks before it is on its own, and
//! no crate wraps this exchange.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

pub(super) use super::protocol::TEMPLATE_ENV;

/// The process name of the template (`/proc/<pid>/comm`); a forked shim
/// takes back [`SHIM_NAME`].
const TEMPLATE_NAME: &[u8] = b"shim-template\0";
const SHIM_NAME: &[u8] = b"sandboxd-shim\0";

/// Entry point of a shim started with [`TEMPLATE_ENV`]: forks shims on
/// request until its channel closes. In a forked child this returns the
/// child's own exit code (it ran as a shim).
pub(super) fn main(blocked: SigSet) -> ExitCode {
    set_name(TEMPLATE_NAME);
    match serve_requests(blocked) {
        Ok(Served::Closed) => ExitCode::SUCCESS,
        Ok(Served::AsShim(code)) => code,
        Err(err) => {
            super::diagnose(&format!("shim template: {err}"));
            ExitCode::from(70)
        }
    }
}

/// How [`serve_requests`] ended.
enum Served {
    /// The daemon closed the channel: the template ends.
    Closed,
    /// This is a forked child, which ran as a shim with this exit code.
    AsShim(ExitCode),
}

fn serve_requests(blocked: SigSet) -> io::Result<Served> {
    let mut only_sigchld = SigSet::empty();
    only_sigchld.add(Signal::SIGCHLD);
    let exited = SignalFd::with_flags(
        &only_sigchld,
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    )?;
    // SAFETY: fd 0 is the template's channel, used only here.
    let channel = unsafe { UnixStream::from_raw_fd(0) };
    let code = CodePages::of_this_executable();
    loop {
        code.release();
        let mut fds = [
            PollFd::new(channel.as_fd(), PollFlags::POLLIN),
            PollFd::new(exited.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => other?,
        };
        let request = fds[0].any().unwrap_or(true);
        let reap = fds[1].any().unwrap_or(false);
        if reap {
            while exited.read_signal().ok().flatten().is_some() {}
            super::children::reap_exited();
        }
        if request {
            let mut byte = [0u8; 1];
            match io::Read::read(&mut &channel, &mut byte) {
                Ok(0) => return Ok(Served::Closed),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
            if let Some(code) = fork_shim(&channel, blocked)? {
                // A forked child: these numbers were closed at the fork
                // and may name the shim's own files since.
                std::mem::forget(channel);
                std::mem::forget(exited);
                return Ok(Served::AsShim(code));
            }
        }
    }
}

/// Forks one shim and hands the daemon its ends; `Some` in the child,
/// once it has run as a shim.
fn fork_shim(channel: &UnixStream, blocked: SigSet) -> io::Result<Option<ExitCode>> {
    let (daemon_end, shim_end) = UnixStream::pair()?;
    let (events_read, events_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: the template is one thread, so the child is a whole copy;
    // it runs on in Rust as the process it now is.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let shim_end = OwnedFd::from(shim_end).into_raw_fd();
        let events_write = events_write.into_raw_fd();
        become_shim(shim_end, events_write);
        // The parent's ends and the template's channel were closed with
        // every other descriptor: never close them again.
        std::mem::forget(daemon_end);
        std::mem::forget(events_read);
        return Ok(Some(super::serve(blocked)));
    }
    drop(shim_end);
    drop(events_write);
    // SAFETY: pidfd_open takes plain integers. The child is ours and not
    // yet reaped (only this thread reaps), so the pid is still its own.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    let fds = [
        daemon_end.as_raw_fd(),
        events_read.as_raw_fd(),
        pidfd.as_raw_fd(),
    ];
    let pid_bytes = pid.to_le_bytes();
    let iov = [io::IoSlice::new(&pid_bytes)];
    let rights = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(
        channel.as_raw_fd(),
        &iov,
        &rights,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(None)
}

/// In the forked child: the shim's channel and event pipe become its
/// stdin and stdout, every other descriptor is closed, and it leads a
/// process group of its own, as a started shim does.
fn become_shim(shim_end: RawFd, events_write: RawFd) {
    // SAFETY: plain descriptor and process calls on this process's own
    // descriptors; nothing refers to the ones closed here afterwards.
    unsafe {
        libc::dup2(shim_end, 0);
        libc::dup2(events_write, 1);
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        libc::setpgid(0, 0);
    }
    set_name(SHIM_NAME);
}

/// The executable's code as this process maps it (its `r-xp` mapping).
///
/// Each page of code a process touches is mapped with its neighbours
/// (the kernel's fault-around, 64 KiB at a time), and counts in its RSS
/// although the page cache holds it once for every shim. Between forks
/// the template unmaps its code (`MADV_DONTNEED`: the pages stay cached;
/// its next request maps back what it runs), so its RSS is about what it
/// holds of its own. Code is never written, so nothing is lost; the
/// writable and relocated mappings are left alone.
struct CodePages(Option<(usize, usize)>);

impl CodePages {
    fn of_this_executable() -> CodePages {
        let exe = std::fs::read_link("/proc/self/exe").ok();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let range = maps.lines().find_map(|line| {
            let mut fields = line.split_whitespace();
            let (range, perms) = (fields.next()?, fields.next()?);
            let path = fields.nth(3)?;
            if perms != "r-xp" || Some(std::path::Path::new(path)) != exe.as_deref() {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            Some((start, end - start))
        });
        CodePages(range)
    }

    fn release(&self) {
        if let Some((start, len)) = self.0 {
            // SAFETY: the range is this executable's code mapping, read
            // from /proc/self/maps and never unmapped; dropping the page
            // table entries of a private, never-written file mapping only
            // makes its next access fault the same bytes back in.
            unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        }
    }
}

fn set_name(name: &[u8]) {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16
    // bytes, which `name` is.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0);
    }
}
