//! Starting a run's shim: `sandboxd shim` with a clean env, its own process
//! group, the spec on stdin (one line; stdin stays open for
//! [`shim::ShimControl`] lines) and its events on stdout.

use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use zeroize::Zeroizing;

use super::record::ShimIdentity;
use super::shim::{self, ShimSpec};

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
pub(super) async fn spawn_shim(
    exe: &Path,
    run_dir: &Path,
    spec: &ShimSpec,
) -> Result<ShimProcess, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir.join(shim::files::SHIM_LOG))
        .map_err(|e| format!("cannot open the shim log in {}: {e}", run_dir.display()))?;
    let mut child = Command::new(exe)
        .arg("shim")
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| format!("cannot start the run's shim {}: {e}", exe.display()))?;
    let pid = child.id().unwrap_or(0) as i32;
    let start_ticks = shim::proc_stat(pid).map(|s| s.start_ticks).unwrap_or(0);
    let mut stdin = child.stdin.take().ok_or("the shim has no stdin")?;
    let bytes = encode_spec(spec).map_err(|e| format!("cannot encode the run spec: {e}"))?;
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
        identity: ShimIdentity { pid, start_ticks },
    })
}

/// The spec as one JSON line, in a buffer of exactly its size (so no
/// reallocation leaves a copy of the secret values behind) that is
/// zeroized when dropped.
fn encode_spec(spec: &ShimSpec) -> serde_json::Result<Zeroizing<Vec<u8>>> {
    encode_line(spec)
}

/// A value as one JSON line (JSON text holds no raw newline) in a
/// zeroizing buffer of exactly its size.
pub(super) fn encode_line<T: serde::Serialize>(
    value: &T,
) -> serde_json::Result<Zeroizing<Vec<u8>>> {
    let mut counter = ByteCounter(0);
    serde_json::to_writer(&mut counter, value)?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(counter.0 + 1));
    serde_json::to_writer(&mut *bytes, value)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Counts what is written to it.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
