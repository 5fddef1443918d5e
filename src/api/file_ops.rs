//! `DELETE /v1/files`, `POST /v1/files/mkdir` and `POST /v1/files/move`:
//! changes under the upload roots. Wire types live here; the work is in
//! [`crate::files`].

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
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
