//! [`run`]: the daemon's whole life on an already bound listener, from
//! restoring state to the ordered shutdown. It neither binds sockets nor
//! installs signal handlers: `main` (or a test) does both.

use std::future::Future;
use std::process::ExitCode;

use std::time::{Duration, Instant};

use anyhow::Context;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, UnixListener};
use tower::Service;

use crate::api::{self, AppState};
use crate::config::Config;

/// Headers larger than this are answered 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// A connection that sends no complete request head in this time is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Serves the API until `shutdown` completes, then shuts down in order.
/// With a non-empty `service`, also supervises that command. Returns the
/// process exit code.
pub async fn run(
    config: Config,
    listener: Listener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    service: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let url = listener.url()?;
    let state = AppState::start(config, url.clone(), service).await?;
    let app = api::router(state.clone());
    tracing::info!(addr = %url, version = env!("CARGO_PKG_VERSION"), "listening");
    crate::supervise::notify_ready(&url);

    let stop = tokio_util::sync::CancellationToken::new();
    let stop_on_signal = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        stop_on_signal.cancel();
    });
    let service_stop = state.service_exit_token();
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    loop {
        let io = tokio::select! {
            _ = stop.cancelled() => break,
            _ = service_stop.cancelled() => break,
            accepted = accept(&listener) => match accepted {
                Ok(io) => io,
                Err(err) => {
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        let hyper_service = hyper::service::service_fn(move |req| app.clone().call(req));
        let conn = builder
            .serve_connection_with_upgrades(io, hyper_service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    crate::supervise::notify_stopping();
    let grace = state.config.shutdown_grace;
    let deadline = Instant::now() + grace;
    tracing::info!(
        grace_s = grace.as_secs_f64(),
        "shutting down: no new runs; stopping runs"
    );
    let code = state.shutdown(deadline).await;
    // In-flight requests (log followers, waiting execs) see their runs end
    // above; give them what is left of the grace.
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(200));
    if tokio::time::timeout(left, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open at the end of the grace");
    }
    tracing::info!("stopped");
    Ok(code)
}

enum Io {
    Tcp(TokioIo<tokio::net::TcpStream>),
    Unix(TokioIo<tokio::net::UnixStream>),
}

async fn accept(listener: &Listener) -> std::io::Result<Io> {
    match listener {
        Listener::Tcp(listener) => {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            Ok(Io::Tcp(TokioIo::new(stream)))
        }
        Listener::Unix(listener) => {
            let (stream, _) = listener.accept().await?;
            Ok(Io::Unix(TokioIo::new(stream)))
        }
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
