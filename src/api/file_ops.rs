//! `DELETE /v1/files`, `POST /v1/files/mkdir` and `POST /v1/files/move`:
//! changes under the upload roots. Wire types live here; the work is in
//! [`crate::files`].

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiJson, ApiQuery};
use super::files::blocking;
use super::AppState;
use crate::error::{ApiError, ErrorBody};

/// Query of `DELETE /v1/files`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Absolute path under an `--upload-root`.
    pub path: String,
    /// Remove a directory with everything in it (default false).
    pub recursive: Option<bool>,
}

/// Body of `POST /v1/files/mkdir`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MkdirRequest {
    /// Absolute path under an `--upload-root`; missing parents are made too.
    pub path: String,
}

/// Body of `POST /v1/files/move`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    /// What to move: an absolute path under an `--upload-root`.
    pub from: String,
    /// Where: an absolute path under an `--upload-root`; must not exist.
    pub to: String,
}

/// What a change did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangeView {
    /// The path changed (for a move, the new one).
    pub path: String,
    /// For mkdir: whether the directory was made (false: it existed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
}

/// Remove a file, a symlink (not its target) or a directory.
#[utoipa::path(delete, path = "/v1/files", tag = "files", params(DeleteQuery),
    responses((status = 200, body = ChangeView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, description = "a non-empty directory without recursive=true", body = ErrorBody)))]
pub async fn delete_file(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<DeleteQuery>,
) -> Result<Json<ChangeView>, ApiError> {
    let files = state.files.clone();
    let path = query.path.clone();
    let recursive = query.recursive.unwrap_or(false);
    blocking(move || files.delete(&path, recursive)).await?;
    Ok(Json(ChangeView {
        path: query.path,
        created: None,
    }))
}

/// Make a directory and its missing parents.
#[utoipa::path(post, path = "/v1/files/mkdir", tag = "files", request_body = MkdirRequest,
    responses((status = 201, description = "made", body = ChangeView), (status = 200, description = "it existed", body = ChangeView),
              (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 409, description = "a non-directory is in the way", body = ErrorBody)))]
pub async fn make_dir(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<MkdirRequest>,
) -> Result<(StatusCode, Json<ChangeView>), ApiError> {
    let files = state.files.clone();
    let path = request.path.clone();
    let created = blocking(move || files.mkdir(&path)).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(ChangeView {
            path: request.path,
            created: Some(created),
        }),
    ))
}

/// Move (rename) within the upload roots, never over an existing entry.
#[utoipa::path(post, path = "/v1/files/move", tag = "files", request_body = MoveRequest,
    responses((status = 200, body = ChangeView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, description = "the destination exists", body = ErrorBody)))]
pub async fn move_file(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<MoveRequest>,
) -> Result<Json<ChangeView>, ApiError> {
    let files = state.files.clone();
    let (from, to) = (request.from, request.to.clone());
    blocking(move || files.rename(&from, &to)).await?;
    Ok(Json(ChangeView {
        path: request.to,
        created: None,
    }))
}

/// Query of `GET /v1/files/watch`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WatchQuery {
    /// Absolute path of a directory under a readable root.
    pub path: String,
}

/// Data of one watch event.
#[derive(Debug, Serialize, ToSchema)]
pub struct WatchEventView {
    /// The entry's name (for a move, the new one); empty for `overflow`.
    pub name: String,
    /// For a `move` within the directory: the old name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// Watch a directory: server-sent events named `create`, `modify`,
/// `delete`, `move` and `overflow` (events were dropped: the client read
/// too slowly), each with a JSON `WatchEventView`.
#[utoipa::path(get, path = "/v1/files/watch", tag = "files", params(WatchQuery),
    responses((status = 200, description = "server-sent events", content_type = "text/event-stream", body = String),
              (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn watch_files(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<WatchQuery>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use axum::response::IntoResponse;
    let files = state.files.clone();
    let mut changes = blocking(move || files.watch(&query.path)).await?;
    let stream = futures::stream::poll_fn(move |cx| changes.poll_recv(cx)).map(|change| {
        let view = WatchEventView {
            name: change.name,
            from: change.from,
        };
        Event::default()
            .event(change.kind)
            .json_data(&view)
            .or_else(|_| Ok::<_, std::convert::Infallible>(Event::default().event(change.kind)))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
