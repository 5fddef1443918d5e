//! The daemon process (`sandboxd serve`). [`main`] owns what belongs to
//! the process: hardening, the runtime, binding the listener and every
//! signal handler ([`Signals::install`]). [`run`] is the daemon's life on
//! a bound listener and a signal stream, and what tests drive in-process.
//!
//! - [`signals`]: the signal stream (shutdown vs forwarded signals).
//! - `subsystems`: building the parts ([`crate::api::AppState`]) and
//!   preparing the state and work dirs.
//! - [`serve`]: [`run`]: accept loop, signal routing, ordered shutdown.
//! - [`limits`]: the connection caps of the accept loop.
//! - `notify`: systemd READY, watchdog and STOPPING.

pub mod limits;
mod notify;
pub mod serve;
pub mod signals;
pub(crate) mod subsystems;

use std::process::ExitCode;

use anyhow::Context;

pub use serve::{run, run_logged, Listener};
pub use signals::{SignalSender, Signals};

use crate::config::{Config, Listen};
use crate::telemetry::LogMasks;

/// Runs the daemon until SIGTERM/SIGINT; returns the process exit code.
/// The only caller of [`harden`], [`bind`] and [`Signals::install`].
pub fn main(config: Config, service: Vec<String>, log_masks: LogMasks) -> ExitCode {
    harden();
    // One thread runs every task: a request, its run's task and the warm
    // pool hand work to each other without waking a second worker (a
    // context switch each, costly on a virtual machine): 0.08 to 0.13 ms
    // off exec-and-wait in paired rounds (bench/exec-path.md). What may
    // block (fsyncs, extraction, file reads) runs on the blocking pool.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!("cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let res = runtime.block_on(async move {
        let listener = bind(&config.listen).await?;
        let signals = Signals::install()?;
        run_logged(config, listener, signals, service, log_masks).await
    });
    match res {
        Ok(code) => code,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("sandboxd: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// Raises the soft descriptor limit to the hard one; makes the daemon non-dumpable (a same-uid process cannot read its
/// memory or `/proc/<pid>/environ`) and a poor OOM-killer choice, and keeps
/// a file-size limit (RLIMIT_FSIZE) from killing it: with SIGXFSZ ignored
/// such a write fails with EFBIG, which is answered like a full disk (507).
/// Shims inherit the ignored SIGXFSZ; run children start with it at its
/// default.
fn harden() {
    // Every connection and every run's pipes take descriptors: the soft
    // limit (often 1,024) would be reached long before the hard one.
    let limit = crate::containment::raise_fd_limit();
    tracing::debug!(
        fd_limit = limit,
        "soft RLIMIT_NOFILE raised to the hard limit"
    );
    // SAFETY: setting a signal to SIG_IGN installs no handler code.
    if unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) } == libc::SIG_ERR {
        tracing::warn!("cannot ignore SIGXFSZ: {}", std::io::Error::last_os_error());
    }
    // SAFETY: prctl with integer arguments touches no memory of ours.
    let res = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if res != 0 {
        tracing::warn!(
            "cannot mark sandboxd non-dumpable: {}",
            std::io::Error::last_os_error()
        );
    }
    // Lowering needs CAP_SYS_RESOURCE; without it the kernel says no and
    // runs still get +100 of their own.
    if std::fs::write("/proc/self/oom_score_adj", "-900\n").is_err() {
        tracing::debug!("cannot lower sandboxd's oom_score_adj (not permitted here)");
    }
}

async fn bind(listen: &Listen) -> anyhow::Result<Listener> {
    match listen {
        Listen::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--listen {addr}: cannot bind"))?;
            Ok(Listener::Tcp(listener))
        }
        Listen::Unix(path) => {
            // A stale socket from a previous run would make bind fail.
            if std::fs::symlink_metadata(path).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_socket()
            }) {
                let _ = std::fs::remove_file(path);
            }
            let listener = tokio::net::UnixListener::bind(path)
                .with_context(|| format!("--listen unix:{}: cannot bind", path.display()))?;
            Ok(Listener::Unix(listener))
        }
    }
}
