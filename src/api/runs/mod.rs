//! `/v1/runs...`: start, list, read, follow, cancel, signal, report,
//! complete (the relay, in [`relay`]) and delete runs. Wire types live here; the domain is in [`crate::runs`].
//!
//! Layout: [`create`] parses and validates the `POST /v1/runs` body,
//! [`mod@view`] holds the answers' and queries' wire types; the handlers are
//! here.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};

use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::{AppState, Caller};
use crate::callbacks::RunReport;
use crate::error::{ApiError, ErrorBody};
use crate::runs::logs::{self, LogReader, LogStream};
use crate::runs::{parse_signal, RunError};
use crate::runs::{ListCursor, ListFilter, RunState};

mod create;
pub mod interactive;
pub mod relay;
mod view;

use create::create_run_request;
pub use create::{check_run_id, parse_create_run, CallbackRequest, CommandSpec, CreateRunRequest};
pub use interactive::{attach, post_stdin, AttachControl, AttachQuery, StdinQuery};
pub use relay::{complete_run, phase_run, CompleteRequest, CompleteStatus, PhaseRequest};
use view::view;
pub use view::{
    CallbackView, CancelRequest, ListQuery, LogsQuery, ReportView, RunList, RunStateView, RunView,
    SignalRequest, DEFAULT_PAGE, MAX_PAGE,
};

/// Start a run.
#[utoipa::path(post, path = "/v1/runs", request_body = CreateRunRequest,
    responses((status = 201, body = RunView), (status = 200, description = "existing run, or wait: true", body = RunView),
              (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 424, body = ErrorBody),
              (status = 429, body = ErrorBody), (status = 503, body = ErrorBody), (status = 507, body = ErrorBody)))]
pub async fn create_run(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    let (mut new, wait) = create_run_request(body, &state.config)?;
    if wait {
        new.record_sync = crate::durable::Durability::NoFlush;
    }
    let (snapshot, created) = state.runs.create(new).await?;
    let run_id = snapshot.run.run_id.clone();
    if wait {
        // Watching the run until its tails are read keeps retention from
        // removing it in between.
        let _watching = state.runs.progress(&run_id)?;
        let snapshot = state.runs.wait_ended(&run_id).await?;
        let written = snapshot.progress;
        let mut view = view(&state, snapshot);
        let limit = state.config.wait_output_bytes;
        let run_dir = state.state_dir.run(&run_id);
        // A stream with no output has no file to read: no trip to the
        // blocking pool for it.
        let tail = |bytes: u64, path: std::path::PathBuf| async move {
            match bytes {
                0 => String::new(),
                _ => logs::tail_text(&path, limit).await,
            }
        };
        view.stdout = Some(tail(written.stdout_bytes, run_dir.stdout_log()).await);
        view.stderr = Some(tail(written.stderr_bytes, run_dir.stderr_log()).await);
        return Ok((StatusCode::OK, Json(view)).into_response());
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(&state, snapshot))).into_response())
}

/// List runs.
#[utoipa::path(get, path = "/v1/runs", params(ListQuery),
    responses((status = 200, body = RunList), (status = 400, body = ErrorBody)))]
pub async fn list_runs(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<RunList>, ApiError> {
    let state_filter = match query.state.as_deref() {
        None | Some("") => None,
        Some(name) => Some(RunState::ALL.into_iter().find(|s| s.as_str() == name).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown state {name:?}; use one of starting, running, succeeded, failed, timed_out, cancelled, lost"
            ))
        })?),
    };
    let created_since = match query.created_since.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            DateTime::parse_from_rfc3339(text)
                .map_err(|e| {
                    ApiError::BadRequest(format!(
                        "created_since {text:?} is not an RFC 3339 time (e.g. 2026-01-31T12:00:00Z): {e}"
                    ))
                })?
                .with_timezone(&Utc),
        ),
    };
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit {limit} is out of range; use 1 to {MAX_PAGE}"
        )));
    }
    let after = match query.after.as_deref() {
        None | Some("") => None,
        Some(text) => Some(ListCursor::decode(text).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "after {text:?} is not a cursor; pass the `next` of the page before"
            ))
        })?),
    };
    let filter = ListFilter {
        state: state_filter,
        created_since,
    };
    let (page, next) = state.runs.list(&filter, after.as_ref(), limit);
    let runs = page.into_iter().map(|s| view(&state, s)).collect();
    let next = next.map(|cursor| cursor.encode());
    Ok(Json(RunList { runs, next }))
}

/// Read a run's status.
#[utoipa::path(get, path = "/v1/runs/{run_id}", params(("run_id" = String, Path)),
    responses((status = 200, body = RunView), (status = 404, body = ErrorBody)))]
pub async fn get_run(
    State(state): State<AppState>,
    ApiPath(run_id): ApiPath<String>,
) -> Result<Json<RunView>, ApiError> {
    Ok(Json(view(&state, state.runs.snapshot(&run_id)?)))
}

/// Read (or follow) a run's captured output.
#[utoipa::path(get, path = "/v1/runs/{run_id}/logs", params(("run_id" = String, Path), LogsQuery),
    responses((status = 200, content_type = "text/plain", body = String), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn get_logs(
    State(state): State<AppState>,
    ApiPath(run_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<LogsQuery>,
) -> Result<Response, ApiError> {
    let stream = match query.stream.as_deref() {
        None | Some("stdout") => LogStream::Stdout,
        Some("stderr") => LogStream::Stderr,
        Some("both") => LogStream::Both,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "stream {other:?} must be stdout, stderr or both"
            )));
        }
    };
    let progress = state.runs.progress(&run_id)?;
    let reader = LogReader::new(
        state.state_dir.run(&run_id).path().to_path_buf(),
        stream,
        query.offset.unwrap_or(0),
        query.follow.unwrap_or(false),
        progress,
    );
    let body = futures::stream::unfold(reader, |mut reader| async move {
        let chunk = reader.next_chunk().await?;
        Some((chunk, reader))
    });
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(body),
    )
        .into_response())
}

/// Cancel a run: SIGTERM to its process group, SIGKILL after the grace.
#[utoipa::path(post, path = "/v1/runs/{run_id}/cancel", params(("run_id" = String, Path)),
    request_body(content = Option<CancelRequest>),
    responses((status = 200, body = RunView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel_run(
    State(state): State<AppState>,
    ApiPath(run_id): ApiPath<String>,
    body: Bytes,
) -> Result<Json<RunView>, ApiError> {
    let request: CancelRequest = optional_json(&body)?;
    let grace = match request.grace_s {
        Some(secs) if secs.is_finite() && (0.0..=3600.0).contains(&secs) => {
            Duration::from_secs_f64(secs)
        }
        Some(secs) => {
            return Err(ApiError::BadRequest(format!(
                "grace_s {secs} must be between 0 and 3600"
            )))
        }
        None => Duration::from_secs(10),
    };
    Ok(Json(view(&state, state.runs.cancel(&run_id, grace)?)))
}

/// Send a signal to a run's process group.
#[utoipa::path(post, path = "/v1/runs/{run_id}/signal", params(("run_id" = String, Path)),
    request_body = SignalRequest,
    responses((status = 200, body = RunView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn signal_run(
    State(state): State<AppState>,
    ApiPath(run_id): ApiPath<String>,
    ApiJson(request): ApiJson<SignalRequest>,
) -> Result<Json<RunView>, ApiError> {
    let text = match &request.signal {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        other => return Err(ApiError::Run(RunError::BadSignal(other.to_string()))),
    };
    let signal = parse_signal(&text)?;
    Ok(Json(view(&state, state.runs.signal(&run_id, signal)?)))
}

/// Store the run's conversation id and cost for its completion payload.
#[utoipa::path(post, path = "/v1/runs/{run_id}/report", params(("run_id" = String, Path)),
    request_body = ReportView,
    responses((status = 200, body = RunView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn report_run(
    State(state): State<AppState>,
    Extension(_caller): Extension<Caller>,
    ApiPath(run_id): ApiPath<String>,
    ApiJson(request): ApiJson<ReportView>,
) -> Result<Json<RunView>, ApiError> {
    if let Some(cost) = request.cost {
        if !cost.is_finite() || cost < 0.0 {
            return Err(ApiError::BadRequest(format!(
                "cost {cost} must be a non-negative number"
            )));
        }
    }
    let report = RunReport {
        conversation_id: request.conversation_id,
        cost: request.cost,
        ..RunReport::default()
    };
    Ok(Json(view(
        &state,
        state.runs.report(&run_id, report).await?,
    )))
}

/// Remove an ended run's record, logs and work dir.
#[utoipa::path(delete, path = "/v1/runs/{run_id}", params(("run_id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_run(
    State(state): State<AppState>,
    ApiPath(run_id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state.runs.delete(&run_id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// An optional JSON body: empty, or JSON `null`, means the defaults.
fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice::<Option<T>>(body)
        .map(Option::unwrap_or_default)
        .map_err(|e| ApiError::BadJson(e.to_string()))
}

#[cfg(test)]
mod tests;
