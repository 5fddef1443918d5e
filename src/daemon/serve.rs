//! [`run`]: the daemon's whole life on an already bound listener, from
//! restoring state to the ordered shutdown: the accept loop (hyper, header
//! limits and timeouts), the routing of [`Signals`], then refusing new
//! runs, stopping runs and the service, flushing the outbox. It neither
//! binds sockets nor installs signal handlers: `daemon::main` (or a test)
//! does both.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use hyper_util::rt::{TokioIo, TokioTimer};
use nix::sys::signal::Signal;
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tower::Service;

use super::limits::{Busy, Connections, REFUSAL};
use super::signals::{Received, Signals};
use super::{notify, subsystems};
use crate::api::{self, AppState};
use crate::config::Config;
use crate::telemetry::LogMasks;

/// Headers larger than this are answered 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix socket.
    Unix(UnixListener),
}

impl Listener {
    /// The base URL children and clients reach this listener at.
    pub fn url(&self) -> anyhow::Result<String> {
        match self {
            Listener::Tcp(listener) => Ok(format!("http://{}", listener.local_addr()?)),
            Listener::Unix(listener) => {
                let addr = listener.local_addr()?;
                let path = addr.as_pathname().context("unix socket has no path")?;
                Ok(format!("unix:{}", path.display()))
            }
        }
    }
}

/// Serves the API until a shutdown signal arrives on `signals` (or the
/// supervised service ends for good), then shuts down in order. With a
/// non-empty `service`, also supervises that command and forwards it the
/// non-shutdown signals. Returns the process exit code.
pub async fn run(
    config: Config,
    listener: Listener,
    signals: Signals,
    service: Vec<String>,
) -> anyhow::Result<ExitCode> {
    run_logged(config, listener, signals, service, LogMasks::default()).await
}

/// [`run`], with the masks of the log subscriber `main` installed: the
/// daemon's credentials and every live run's secrets go into them.
pub async fn run_logged(
    config: Config,
    listener: Listener,
    signals: Signals,
    service: Vec<String>,
    log_masks: LogMasks,
) -> anyhow::Result<ExitCode> {
    let url = listener.url()?;
    let state = subsystems::start(config, url.clone(), service, log_masks).await?;
    let app = api::router(state.clone());
    tracing::info!(addr = %url, version = env!("CARGO_PKG_VERSION"), "listening");
    notify::ready(&url);

    let stop = CancellationToken::new();
    let stop_signal = Arc::new(Mutex::new(Signal::SIGTERM));
    // Kept to the end: signals are forwarded to the service while it stops.
    let router = tokio::spawn(route_signals(
        signals,
        state.clone(),
        stop.clone(),
        stop_signal.clone(),
    ));
    let service_stop = state.service_exit_token();
    // Each connection's task, and the token that asks them all to finish
    // their request and close (hyper-util's GracefulShutdown cannot watch
    // a connection that may be upgraded to a WebSocket, `attach`).
    let connection_tasks = tokio_util::task::TaskTracker::new();
    let closing = tokio_util::sync::CancellationToken::new();
    // HTTP/1.1 only. Its header read timeout (`--header-timeout`) runs from
    // the moment a request head is awaited: on a new connection, and again
    // between requests on a kept-alive one, so a silent, slow or idle
    // client is closed. HTTP/2 with prior knowledge would need idle and
    // header timeouts of its own (hyper's auto-detection waits for the
    // preface without one), and no client of sandboxd speaks it.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.header_timeout)
        // The hard limit on a request head (431). The read buffer's size
        // alone is not one: a single read may fill it past its maximum.
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(MAX_HEADER_BYTES);
    let connections = Connections::new(
        state.config.max_connections,
        state.config.max_connections_per_peer,
    );
    let refusals = crate::api::Sampler::new();
    let accept_failures = crate::api::Sampler::new();
    loop {
        let (io, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            _ = service_stop.cancelled() => break,
            accepted = accept(&listener) => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    if let Some(count) = accept_failures.note() {
                        tracing::warn!("accept failed ({count} since the last such line): {err}");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(admitted) = connections.admit(peer) else {
            io.refuse();
            if let Some(count) = refusals.note() {
                tracing::info!(
                    refused = count,
                    "connection refused: too many open connections ({count} since the last such line)"
                );
            }
            continue;
        };
        let app = app.clone();
        let busy = admitted.busy.clone();
        let hyper_service = hyper::service::service_fn(move |req| {
            let marker = Busy::new(&busy);
            let call = app.clone().call(req);
            async move {
                let res = call.await?;
                // Busy until the response body is sent (log followers).
                Ok::<_, std::convert::Infallible>(api::hold_until_sent(res, marker))
            }
        });
        let conn = builder.serve_connection(io, hyper_service).with_upgrades();
        let closing = closing.clone();
        connection_tasks.spawn(async move {
            let place = admitted.guard;
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                // A newer connection took this idle one's place.
                _ = admitted.evict.cancelled() => {}
                () = closing.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(place);
        });
    }
    drop(listener);
    notify::stopping();
    let grace = state.config.shutdown_grace;
    let deadline = Instant::now() + grace;
    tracing::info!(
        grace_s = grace.as_secs_f64(),
        "shutting down: no new runs; stopping runs"
    );
    let signal = *stop_signal.lock().unwrap_or_else(|e| e.into_inner());
    let code = shutdown(&state, deadline, signal).await;
    // In-flight requests (log followers, waiting execs) see their runs end
    // above; give them what is left of the grace.
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(200));
    closing.cancel();
    connection_tasks.close();
    if tokio::time::timeout(left, connection_tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open at the end of the grace");
    }
    router.abort();
    tracing::info!("stopped");
    Ok(code)
}

/// Follows `signals` for the daemon's life: the first shutdown signal is
/// recorded in `stop_signal` and cancels `stop`; later ones are ignored
/// (the shutdown is under way). Forwarded signals go to the service.
async fn route_signals(
    mut signals: Signals,
    state: AppState,
    stop: CancellationToken,
    stop_signal: Arc<Mutex<Signal>>,
) {
    while let Some(received) = signals.recv().await {
        match received {
            Received::Shutdown(signal) if !stop.is_cancelled() => {
                tracing::info!("{signal}: shutting down");
                *stop_signal.lock().unwrap_or_else(|e| e.into_inner()) = signal;
                stop.cancel();
            }
            Received::Shutdown(signal) => {
                tracing::debug!(%signal, "already shutting down");
            }
            Received::Forward(signal) => {
                if let Some(service) = &state.service {
                    service.signal(signal);
                }
            }
        }
    }
}

/// The ordered shutdown: refuse new runs, stop runs and the service
/// together (`signal` now, SIGKILL at `deadline`), then flush the outbox
/// until `deadline`. Returns the exit code.
async fn shutdown(state: &AppState, deadline: Instant, signal: Signal) -> ExitCode {
    let service = async {
        match &state.service {
            Some(service) => service.stop(deadline, signal).await,
            None => ExitCode::SUCCESS,
        }
    };
    let ((), code) = tokio::join!(state.runs.shutdown(deadline), service);
    state.outbox.flush(deadline).await;
    code
}

enum Io {
    Tcp(TokioIo<tokio::net::TcpStream>),
    Unix(TokioIo<tokio::net::UnixStream>),
}

/// The next connection and its peer address (TCP).
async fn accept(listener: &Listener) -> std::io::Result<(Io, Option<std::net::IpAddr>)> {
    match listener {
        Listener::Tcp(listener) => {
            let (stream, addr) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            Ok((Io::Tcp(TokioIo::new(stream)), Some(addr.ip())))
        }
        Listener::Unix(listener) => {
            let (stream, _) = listener.accept().await?;
            Ok((Io::Unix(TokioIo::new(stream)), None))
        }
    }
}

impl Io {
    /// Refuses the connection: the 503 written if the socket takes it at
    /// once (never waiting), then closed.
    fn refuse(self) {
        let _ = match &self {
            Io::Tcp(io) => io.inner().try_write(REFUSAL),
            Io::Unix(io) => io.inner().try_write(REFUSAL),
        };
    }
}

impl hyper::rt::Read for Io {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(io) => std::pin::Pin::new(io).poll_read(cx, buf),
            Io::Unix(io) => std::pin::Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Io {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(io) => std::pin::Pin::new(io).poll_write(cx, buf),
            Io::Unix(io) => std::pin::Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(io) => std::pin::Pin::new(io).poll_flush(cx),
            Io::Unix(io) => std::pin::Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(io) => std::pin::Pin::new(io).poll_shutdown(cx),
            Io::Unix(io) => std::pin::Pin::new(io).poll_shutdown(cx),
        }
    }
}
