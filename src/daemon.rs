//! Process-level setup of `sandboxd serve`: hardening, the runtime, the
//! listener, signal handling and systemd notification. [`crate::run`]
//! does the rest and is what tests drive.

use std::process::ExitCode;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{Config, Listen};
use crate::server::Listener;

/// Runs the daemon until SIGTERM/SIGINT; returns the process exit code.
pub fn main(config: Config, service: Vec<String>) -> ExitCode {
    harden();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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
        let shutdown = shutdown_signal()?;
        crate::run(config, listener, shutdown, service).await
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

/// Makes the daemon non-dumpable (a same-uid process cannot read its
/// memory or `/proc/<pid>/environ`) and a poor OOM-killer choice.
fn harden() {
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

fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM: shutting down");
                crate::supervise::set_stop_signal(nix::sys::signal::Signal::SIGTERM);
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: shutting down");
                crate::supervise::set_stop_signal(nix::sys::signal::Signal::SIGINT);
            }
        }
    })
}
