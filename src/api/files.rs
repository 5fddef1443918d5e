//! `PUT/POST /v1/runs/{run_id}/bundle` and `PUT /v1/files`.

use axum::extract::State;

use super::extract::ApiPath;
use super::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::upload::UploadError;

/// Upload a bundle (tar, tar.gz or tar.zst) into a run's work dir.
#[utoipa::path(put, path = "/v1/runs/{run_id}/bundle", params(("run_id" = String, Path)),
    responses((status = 501, body = ErrorBody)))]
pub async fn put_bundle(
    State(_state): State<AppState>,
    ApiPath(_run_id): ApiPath<String>,
) -> Result<(), ApiError> {
    Err(UploadError::NotImplemented.into())
}

/// Fetch a bundle from a URL into a run's work dir.
#[utoipa::path(post, path = "/v1/runs/{run_id}/bundle", params(("run_id" = String, Path)),
    responses((status = 501, body = ErrorBody)))]
pub async fn post_bundle(
    State(_state): State<AppState>,
    ApiPath(_run_id): ApiPath<String>,
) -> Result<(), ApiError> {
    Err(UploadError::NotImplemented.into())
}

/// Write one file atomically.
#[utoipa::path(put, path = "/v1/files", responses((status = 501, body = ErrorBody)))]
pub async fn put_file(State(_state): State<AppState>) -> Result<(), ApiError> {
    Err(UploadError::NotImplemented.into())
}
