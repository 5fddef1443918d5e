//! The HTTP API: shared state, the router, authentication and the
//! fallbacks that keep every answer in the JSON error shape.
//!
//! Only this module and [`crate::error`] know about axum.

mod auth;
pub mod extract;
pub mod files;
pub mod openapi;
pub mod runs;
pub mod secrets;
pub mod status;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::Method;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::RequestBodyTimeoutLayer;

pub use auth::Caller;

use crate::callbacks::Outbox;
use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::runs::Registry;
use crate::supervise::{AgentProbe, Service};
use crate::upload::Uploader;

/// Largest JSON request body.
pub const JSON_BODY_LIMIT: usize = 10 * 1024 * 1024;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

/// The shared parts.
pub struct StateInner {
    /// Validated configuration.
    pub config: Arc<Config>,
    /// All runs.
    pub runs: Registry,
    /// Completion callbacks.
    pub outbox: Outbox,
    /// Counters for /metrics.
    pub metrics: Metrics,
    /// HTTP client for secrets and bundle URLs.
    pub http: reqwest::Client,
    /// Bundle and file uploads.
    pub uploads: Uploader,
    /// The agent-server health probe.
    pub agent: AgentProbe,
    /// The supervised service, when one was given.
    pub service: Option<Service>,
    /// When the daemon started.
    pub started: Instant,
}

impl std::ops::Deref for AppState {
    type Target = StateInner;
    fn deref(&self) -> &StateInner {
        &self.inner
    }
}

impl AppState {
    /// Prepares the state dirs, restores runs and the outbox, and starts the
    /// background tasks.
    pub async fn start(
        config: Config,
        url: String,
        service: Vec<String>,
    ) -> anyhow::Result<AppState> {
        prepare_dirs(&config)?;
        let config = Arc::new(config);
        let metrics = Metrics::new();
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .context("cannot build the HTTP client")?;
        let outbox = Outbox::start(config.clone(), http.clone(), metrics.clone())
            .context("cannot open the callback outbox")?;
        let uploads = Uploader::new(config.clone(), metrics.clone());
        let probe = uploads.clone();
        let runs = Registry::new(
            config.clone(),
            url,
            outbox.clone(),
            metrics.clone(),
            http.clone(),
            Arc::new(move |run_id: &str| probe.is_uploading(run_id)),
        );
        runs.restore()
            .await
            .context("cannot restore runs from the state dir")?;
        let agent = AgentProbe::start(config.agent_server_url.clone(), http.clone());
        let service = Service::start(&config, service, metrics.clone(), agent.clone()).await?;
        Ok(AppState {
            inner: Arc::new(StateInner {
                config,
                runs,
                outbox,
                metrics,
                http,
                uploads,
                agent,
                service,
                started: Instant::now(),
            }),
        })
    }

    /// Cancelled when the supervised service has ended for good.
    pub fn service_exit_token(&self) -> CancellationToken {
        match &self.service {
            Some(service) => service.exited(),
            None => CancellationToken::new(),
        }
    }

    /// The ordered shutdown: refuse new runs, stop runs and the service
    /// together (signal now, SIGKILL at `deadline`), then flush the outbox
    /// until `deadline`. Returns the exit code.
    pub async fn shutdown(&self, deadline: Instant) -> ExitCode {
        let service = async {
            match &self.service {
                Some(service) => service.stop(deadline).await,
                None => ExitCode::SUCCESS,
            }
        };
        let ((), code) = tokio::join!(self.runs.shutdown(deadline), service);
        self.outbox.flush(deadline).await;
        code
    }
}

fn prepare_dirs(config: &Config) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    for (flag, dir) in [
        ("--state-dir", &config.state_dir),
        ("--work-root", &config.work_root),
    ] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("{flag} {}: cannot create it", dir.display()))?;
        check_writable(flag, dir)?;
    }
    crate::upload::clean_staging(&config.work_root).with_context(|| {
        format!(
            "--work-root {}: cannot clean it",
            config.work_root.display()
        )
    })?;
    for sub in ["runs", "outbox", "bundles"] {
        let dir = config.state_dir.join(sub);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("--state-dir: cannot create {}", dir.display()))?;
        check_writable("--state-dir", &dir)?;
    }
    crate::upload::clean_record_temp_files(&config.state_dir).with_context(|| {
        format!(
            "--state-dir {}: cannot clean it",
            config.state_dir.display()
        )
    })?;
    Ok(())
}

/// Creates and removes a file in `dir`: a dir sandboxd cannot write stops
/// the start, instead of failing every run later.
fn check_writable(flag: &str, dir: &std::path::Path) -> anyhow::Result<()> {
    let probe = dir.join(format!(".sandboxd-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .with_context(|| format!("{flag} {}: not writable by sandboxd", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/v1/status", get(status::get_status))
        .route("/metrics", get(status::get_metrics))
        .route("/v1/runs", post(runs::create_run).get(runs::list_runs))
        .route(
            "/v1/runs/{run_id}",
            get(runs::get_run).delete(runs::delete_run),
        )
        .route("/v1/runs/{run_id}/logs", get(runs::get_logs))
        .route("/v1/runs/{run_id}/cancel", post(runs::cancel_run))
        .route("/v1/runs/{run_id}/signal", post(runs::signal_run))
        .route("/v1/runs/{run_id}/report", post(runs::report_run))
        .route(
            "/v1/runs/{run_id}/bundle",
            put(files::put_bundle)
                .post(files::post_bundle)
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/v1/files",
            put(files::put_file).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/secrets/resolve", post(secrets::resolve_secrets))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_auth,
        ));
    Router::new()
        .route("/healthz", get(status::get_healthz))
        .route("/openapi.json", get(openapi::get_openapi))
        .merge(protected)
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .layer(RequestBodyTimeoutLayer::new(state.config.body_timeout))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn route_not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::RouteNotFound {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

/// The request span and metrics: method, route, status, latency. 5xx
/// details (kept in a response extension by [`ApiError`]) are logged here,
/// once.
async fn observe(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: middleware::Next,
) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let res = next.run(req).await.into_response();
    let status = res.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    state.metrics.http_request(method.as_str(), &route, status);
    if let Some(detail) = res.extensions().get::<Arc<String>>() {
        tracing::error!(%method, route, status, latency_ms, error = %detail, "request failed");
    } else if status >= 400 {
        tracing::info!(%method, route, status, latency_ms, "request refused");
    } else {
        tracing::debug!(%method, route, status, latency_ms, "request");
    }
    res
}
