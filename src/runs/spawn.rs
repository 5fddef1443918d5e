//! Starting a run's shim: `sandboxd shim` with a clean env, its own process
//! group, the spec on stdin (one line; stdin stays open for
//! [`ShimControl`](super::shim::protocol::ShimControl) lines) and its events on stdout.
//!
//! Starting the process ([`start_idle_shim`]) and handing it its spec
//! ([`hand_spec`]) are two steps, so a shim can be started ahead of need
//! (`runs::warm`) and a run only pays for the second.
//!
//! The shim's stdin is one end of a unix socketpair, not a pipe: the spec
//! and the control lines carry secret values, and a socket cannot be
//! opened again through `/proc/<shim>/fd/0` (the kernel answers ENXIO),
//! so no other process can read them, not even in the moment before the
//! shim makes itself non-dumpable.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::unix::AsyncFd;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use super::record::ShimIdentity;
use super::shim::protocol::{ShimExe, ShimSpec};

/// The executable of the shims, chosen on first use: the choice may start
/// `sandboxd-shim --version`, which the daemon's start should not wait
/// for. The warm pool's filler makes it first, off the request path.
pub(super) struct ShimExecutable {
    choice: ShimExe,
    chosen: std::sync::OnceLock<PathBuf>,
    /// Where the unified cgroup hierarchy is mounted, found once and named
    /// to every shim, which would otherwise read the mount table.
    cgroup2_mount: Option<PathBuf>,
}

impl ShimExecutable {
    pub(super) fn new(choice: ShimExe) -> ShimExecutable {
        ShimExecutable {
            choice,
            chosen: std::sync::OnceLock::new(),
            cgroup2_mount: crate::containment::cgroup2_mount(),
        }
    }

    /// The executable (choosing it on the first call).
    pub(super) fn path(&self) -> &Path {
        self.chosen.get_or_init(|| self.choice.choose())
    }

    /// The command that starts a shim (or the template) reading `stdin`,
    /// with a clean env, in its own process group.
    pub(super) fn command(&self, stdin: OwnedFd, stdout: Stdio) -> Command {
        let mut command = Command::new(self.path());
        command.arg("shim").env_clear();
        if let Some(mount) = &self.cgroup2_mount {
            // Spares each shim a read of the mount table.
            command.env(crate::containment::CGROUP2_MOUNT_ENV, mount);
        }
        command
            .stdin(Stdio::from(stdin))
            .stdout(stdout)
            // The shim writes its own diagnostics to shim.log, created
            // only when it has something to say.
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(false);
        command
    }
}

/// A shim process: the daemon's child (started), or the template's
/// (forked by it, `runs::template`), followed through a pidfd.
pub(super) enum ShimChild {
    Started(Child),
    Forked(AsyncFd<OwnedFd>),
}

impl ShimChild {
    /// Follows a shim through its pidfd (one the template sent, or one
    /// opened here with [`ShimChild::follow`]).
    pub(super) fn forked(pidfd: OwnedFd) -> std::io::Result<ShimChild> {
        // SAFETY: the AsyncFd owns the pidfd until it is dropped, which
        // closes it after deregistering; nothing else refers to it.
        unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
            .map(ShimChild::Forked)
            .map_err(|e| e.into_parts().1)
    }

    /// Follows a shim that is not the daemon's child, by pid (one that
    /// outlived a previous daemon); an error when it is already gone.
    pub(super) fn follow(pid: i32) -> std::io::Result<ShimChild> {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open takes plain integers and returns a new
        // descriptor.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        ShimChild::forked(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// Waits until the shim has exited (and, when it is the daemon's
    /// child, reaps it). Returns at once after the first time.
    pub(super) async fn wait(&mut self) {
        match self {
            ShimChild::Started(child) => {
                let _ = child.wait().await;
            }
            // A pidfd stays readable once its process has exited.
            ShimChild::Forked(pidfd) => {
                let _ = pidfd.readable().await;
            }
        }
    }

    /// Whether the shim is still running.
    fn is_alive(&mut self) -> bool {
        match self {
            ShimChild::Started(child) => matches!(child.try_wait(), Ok(None)),
            ShimChild::Forked(pidfd) => {
                let mut poll = libc::pollfd {
                    fd: pidfd.get_ref().as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: poll reads and writes the one pollfd given.
                unsafe { libc::poll(&mut poll, 1, 0) == 0 }
            }
        }
    }

    /// Sends SIGKILL (to the very process: a pidfd names no other).
    fn start_kill(&mut self) {
        match self {
            ShimChild::Started(child) => {
                let _ = child.start_kill();
            }
            ShimChild::Forked(pidfd) => {
                // SAFETY: pidfd_send_signal takes plain integers and a
                // null siginfo.
                unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        pidfd.get_ref().as_raw_fd(),
                        libc::SIGKILL,
                        std::ptr::null::<libc::siginfo_t>(),
                        0u32,
                    )
                };
            }
        }
    }
}

/// A started shim.
pub(super) struct ShimProcess {
    pub(super) child: ShimChild,
    pub(super) events: pipe::Receiver,
    /// Where control lines go, after the spec: the daemon's end of the
    /// shim's stdin socket.
    pub(super) control: UnixStream,
    pub(super) identity: ShimIdentity,
}

/// A shim waiting for its spec. Dropping it closes its spec channel, and
/// the shim ends.
pub(super) struct IdleShim(ShimProcess);

impl IdleShim {
    /// Whether the shim is still running (it may have been killed while
    /// idle).
    pub(super) fn is_alive(&mut self) -> bool {
        self.0.child.is_alive()
    }

    /// The shim's pid and start time.
    pub(super) fn identity(&self) -> ShimIdentity {
        self.0.identity
    }
}

/// Starts a shim that waits for its spec. The error is a sentence for the
/// run's `error` field.
pub(super) fn start_idle_shim(shim_exe: &ShimExecutable) -> Result<IdleShim, String> {
    let (daemon_end, shim_end) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| format!("cannot make the run's spec channel: {e}"))?;
    let mut child = shim_exe
        .command(OwnedFd::from(shim_end), Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start the run's shim {}: {e}",
                shim_exe.path().display()
            )
        })?;
    let pid = child.id().unwrap_or(0) as i32;
    let events = child
        .stdout
        .take()
        .ok_or_else(|| "the shim has no stdout".to_owned())
        .and_then(|stdout| {
            stdout
                .into_owned_fd()
                .map_err(|e| format!("cannot read the shim's events: {e}"))
        })?;
    idle_shim(ShimChild::Started(child), pid, daemon_end, events)
}

/// An idle shim from its process, the daemon's end of its spec channel
/// and the read end of its event pipe.
pub(super) fn idle_shim(
    child: ShimChild,
    pid: i32,
    control: std::os::unix::net::UnixStream,
    events: OwnedFd,
) -> Result<IdleShim, String> {
    let control = control
        .set_nonblocking(true)
        .and_then(|()| UnixStream::from_std(control))
        .map_err(|e| format!("cannot use the run's spec channel: {e}"))?;
    let events = pipe::Receiver::from_owned_fd(events)
        .map_err(|e| format!("cannot read the shim's events: {e}"))?;
    Ok(IdleShim(ShimProcess {
        child,
        events,
        control,
        identity: ShimIdentity::of(pid),
    }))
}

/// Hands `spec` to an idle shim, which starts the run. On an error the
/// shim is killed and reaped.
pub(super) async fn hand_spec(shim: IdleShim, spec: &ShimSpec) -> Result<ShimProcess, String> {
    let IdleShim(mut shim) = shim;
    let bytes = spec
        .encode()
        .map_err(|e| format!("cannot encode the run spec: {e}"))?;
    let write = async {
        shim.control.write_all(&bytes).await?;
        shim.control.flush().await
    };
    if let Err(err) = write.await {
        shim.child.start_kill();
        shim.child.wait().await;
        return Err(format!("cannot hand the run to its shim: {err}"));
    }
    Ok(shim)
}
