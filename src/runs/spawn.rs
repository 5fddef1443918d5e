//! Starting a run's shim: `sandboxd shim` with a clean env, its own process
//! group, the spec on stdin (one line; stdin stays open for
//! [`ShimControl`](super::shim::protocol::ShimControl) lines) and its events on stdout.

use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::record::ShimIdentity;
use super::shim::protocol::ShimSpec;

/// A started shim.
pub(super) struct ShimProcess {
    pub(super) child: Child,
    pub(super) events: ChildStdout,
    /// Where control lines go, after the spec.
    pub(super) control: ChildStdin,
    pub(super) identity: ShimIdentity,
}

/// Starts the shim and hands it the spec. The error is a sentence for the
/// run's `error` field.
pub(super) async fn spawn_shim(exe: &Path, spec: &ShimSpec) -> Result<ShimProcess, String> {
    let mut child = Command::new(exe)
        .arg("shim")
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // The shim writes its own diagnostics to shim.log, created only
        // when it has something to say.
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| format!("cannot start the run's shim {}: {e}", exe.display()))?;
    let identity = ShimIdentity::of(child.id().unwrap_or(0) as i32);
    let mut stdin = child.stdin.take().ok_or("the shim has no stdin")?;
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
