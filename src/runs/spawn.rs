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

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::process::{Child, ChildStdout, Command};

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
}

/// A started shim.
pub(super) struct ShimProcess {
    pub(super) child: Child,
    pub(super) events: ChildStdout,
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
        matches!(self.0.child.try_wait(), Ok(None))
    }

    /// The shim's pid and start time.
    pub(super) fn identity(&self) -> ShimIdentity {
        self.0.identity
    }
}

/// Starts a shim that waits for its spec. The error is a sentence for the
/// run's `error` field.
pub(super) fn start_idle_shim(shim_exe: &ShimExecutable) -> Result<IdleShim, String> {
    let exe = shim_exe.path();
    let (daemon_end, shim_end) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| format!("cannot make the run's spec channel: {e}"))?;
    let shim_stdin = std::os::fd::OwnedFd::from(shim_end);
    let mut command = Command::new(exe);
    command.arg("shim").env_clear();
    if let Some(mount) = &shim_exe.cgroup2_mount {
        // Spares each shim a read of the mount table.
        command.env(crate::containment::CGROUP2_MOUNT_ENV, mount);
    }
    let mut child = command
        .stdin(Stdio::from(shim_stdin))
        .stdout(Stdio::piped())
        // The shim writes its own diagnostics to shim.log, created only
        // when it has something to say.
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| format!("cannot start the run's shim {}: {e}", exe.display()))?;
    let identity = ShimIdentity::of(child.id().unwrap_or(0) as i32);
    let control = daemon_end
        .set_nonblocking(true)
        .and_then(|()| UnixStream::from_std(daemon_end))
        .map_err(|e| format!("cannot use the run's spec channel: {e}"))?;
    let events = child.stdout.take().ok_or("the shim has no stdout")?;
    Ok(IdleShim(ShimProcess {
        child,
        events,
        control,
        identity,
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
        let _ = shim.child.start_kill();
        let _ = shim.child.wait().await;
        return Err(format!("cannot hand the run to its shim: {err}"));
    }
    Ok(shim)
}
