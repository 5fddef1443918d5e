//! The HTTP API: the shared handles ([`AppState`]), the router, authentication and the
//! fallbacks that keep every answer in the JSON error shape.
//!
//! Only this module and [`crate::error`] know about axum.

mod auth;
pub mod extract;
pub mod file_ops;
pub mod files;
pub mod openapi;
pub mod runs;
pub mod secrets;
pub mod status;
pub mod uploads;

use std::sync::Arc;
use std::time::{Duration, Instant};

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
use crate::state_dir::StateDir;
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
    /// The paths of the state dir.
    pub state_dir: StateDir,
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
    /// Reading files under the roots.
    pub files: crate::files::Files,
    /// The agent-server health probe.
    pub agent: AgentProbe,
    /// The supervised service, when one was given.
    pub service: Option<Service>,
    /// When the daemon started.
    pub started: Instant,
    /// The protections on and missing (`/v1/status` `containment`).
    pub containment: crate::containment::Report,
    /// Which runs have an attached writer (one per run).
    pub writers: crate::runs::input::Writers,
}

impl std::ops::Deref for AppState {
    type Target = StateInner;
    fn deref(&self) -> &StateInner {
        &self.inner
    }
}

impl AppState {
    /// Shares the handles; `daemon` builds them.
    pub fn new(inner: StateInner) -> AppState {
        AppState {
            inner: Arc::new(inner),
        }
    }

    /// Cancelled when the supervised service has ended for good.
    pub fn service_exit_token(&self) -> CancellationToken {
        match &self.service {
            Some(service) => service.exited(),
            None => CancellationToken::new(),
        }
    }
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
        .route("/v1/runs/{run_id}/complete", post(runs::complete_run))
        .route("/v1/runs/{run_id}/phase", post(runs::phase_run))
        .route(
            "/v1/runs/{run_id}/stdin",
            post(runs::post_stdin).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/runs/{run_id}/attach", get(runs::attach))
        .route(
            "/v1/runs/{run_id}/bundle",
            put(uploads::put_bundle)
                .post(uploads::post_bundle)
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/v1/files",
            put(uploads::put_file)
                .layer(DefaultBodyLimit::disable())
                .get(files::get_file)
                .delete(file_ops::delete_file),
        )
        .route("/v1/files/mkdir", post(file_ops::make_dir))
        .route("/v1/files/watch", get(file_ops::watch_files))
        .route("/v1/files/move", post(file_ops::move_file))
        .route("/v1/files/stat", get(files::stat_file))
        .route("/v1/files/list", get(files::list_files))
        .route("/v1/runs/{run_id}/files", get(files::get_run_file))
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

/// The response with `guard` kept alive until its body is sent or dropped
/// (the accept loop marks a connection busy that long).
pub fn hold_until_sent<T: Send + 'static>(res: Response, guard: T) -> Response {
    res.map(move |body| {
        axum::body::Body::new(http_body_util::BodyExt::map_frame(body, move |frame| {
            let _ = &guard;
            frame
        }))
    })
}

/// Refused requests since the last sampled log line.
static REFUSALS: Sampler = Sampler::new();

/// Counts events and says when one may be logged: at most once a second,
/// with the number of events since the last line.
pub struct Sampler {
    state: std::sync::Mutex<(Option<Instant>, u64)>,
}

impl Sampler {
    /// A sampler that logs its first event.
    pub const fn new() -> Sampler {
        Sampler {
            state: std::sync::Mutex::new((None, 0)),
        }
    }

    /// Counts one event; `Some(count)` when a line is due.
    pub fn note(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1 += 1;
        let now = Instant::now();
        if state
            .0
            .is_some_and(|last| now.duration_since(last) < Duration::from_secs(1))
        {
            return None;
        }
        let count = state.1;
        *state = (Some(now), 0);
        Some(count)
    }
}

impl Default for Sampler {
    fn default() -> Sampler {
        Sampler::new()
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
        // Refusals can come at any rate (an unauthenticated flood): one
        // line each at debug, and at most one info line a second.
        tracing::debug!(%method, route, status, latency_ms, "request refused");
        if let Some(count) = REFUSALS.note() {
            tracing::info!(
                %method,
                route,
                status,
                refused = count,
                "requests refused (sampled: {count} since the last such line)"
            );
        }
    } else {
        tracing::debug!(%method, route, status, latency_ms, "request");
    }
    res
}

#[cfg(test)]
mod tests;
