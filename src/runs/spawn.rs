//! Starting a run's shim: `sandboxd shim` with a clean env, its own process
//! group, the spec on stdin (one line; stdin stays open for
//! [`ShimControl`](super::shim::protocol::ShimControl) lines) and its events on stdout.
//!
//! The shim's stdin is one end of a unix socketpair, not a pipe: the spec
//! and the control lines carry secret values, and a socket cannot be
//! opened again through `/proc/<shim>/fd/0` (the kernel answers ENXIO),
//! so no other process can read them, not even in the moment before the
//! shim makes itself non-dumpable.

use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::process::{Child, ChildStdout, Command};

use super::record::ShimIdentity;
use super::shim::protocol::ShimSpec;

/// A started shim.
pub(super) struct ShimProcess {
    pub(super) child: Child,
    pub(super) events: ChildStdout,
    /// Where control lines go, after the spec: the daemon's end of the
    /// shim's stdin socket.
    pub(super) control: UnixStream,
    pub(super) identity: ShimIdentity,
}

/// Starts the shim and hands it the spec. The error is a sentence for the
/// run's `error` field.
pub(super) async fn spawn_shim(exe: &Path, spec: &ShimSpec) -> Result<ShimProcess, String> {
    let (daemon_end, shim_end) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| format!("cannot make the run's spec channel: {e}"))?;
    let shim_stdin = std::os::fd::OwnedFd::from(shim_end);
    let mut child = Command::new(exe)
        .arg("shim")
        .env_clear()
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
    let mut stdin = daemon_end
        .set_nonblocking(true)
        .and_then(|()| UnixStream::from_std(daemon_end))
        .map_err(|e| format!("cannot use the run's spec channel: {e}"))?;
    let bytes = spec
        .encode()
        .map_err(|e| format!("cannot encode the run spec: {e}"))?;
    let write = async {
        stdin.write_all(&bytes).await?;
        stdin.flush().await
    };
    if let Err(err) = write.await {
        let _ = child.start_kill();
        let _ = child.wait().await;
        return Err(format!("cannot hand the run to its shim: {err}"));
    }
    let events = child.stdout.take().ok_or("the shim has no stdout")?;
    Ok(ShimProcess {
        child,
        events,
        control: stdin,
        identity,
    })
}
