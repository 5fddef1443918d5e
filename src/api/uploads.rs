//! `PUT/POST /v1/runs/{run_id}/bundle` and `PUT /v1/files`. Wire types
//! live here; the work is in [`crate::upload`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::runs::check_run_id;
use super::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::upload::{BundleSummary, FetchRequest, Started, UploadError};

/// Default and largest `timeout_s` of a bundle download.
const FETCH_TIMEOUT_DEFAULT_S: f64 = 300.0;
const FETCH_TIMEOUT_MAX_S: f64 = 3600.0;

/// Query of the bundle endpoints.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BundleQuery {
    /// Replace an existing bundle (only before the run starts).
    pub replace: Option<bool>,
}

/// Body of `POST /v1/runs/{run_id}/bundle`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FetchBundleRequest {
    /// http(s) URL of a tar, tar.gz or tar.zst archive; redirects are followed.
    pub url: String,
    /// Request headers (e.g. Authorization); values are treated as secrets.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    pub headers: BTreeMap<String, SecretString>,
    /// Limit of the whole download in seconds (default 300, at most 3600).
    pub timeout_s: Option<f64>,
    /// SHA-256 of the archive (64 hex digits): the bundle is committed only
    /// when the downloaded bytes have it (else 424 bundle_checksum_mismatch,
    /// permanent, nothing kept).
    pub sha256: Option<String>,
}

/// An extracted bundle.
#[derive(Debug, Serialize, ToSchema)]
pub struct BundleView {
    /// The run.
    pub run_id: String,
    /// The run's work dir holding the files.
    pub dir: String,
    /// Entries in the archive.
    pub entries: u64,
    /// Bytes of file data extracted.
    pub bytes: u64,
}

/// Query of `PUT /v1/files`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FileQuery {
    /// Absolute path of the file, under an `--upload-root`.
    pub path: String,
    /// Octal permission bits (default 0644).
    pub mode: Option<String>,
}

/// A written file.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileView {
    /// Its path.
    pub path: String,
    /// Its size.
    pub bytes: u64,
}

/// Upload a bundle (tar, tar.gz or tar.zst) into a run's work dir.
// The OpenAPI tag is that of the module's old name, `files`.
#[utoipa::path(put, path = "/v1/runs/{run_id}/bundle", tag = "files", params(("run_id" = String, Path), BundleQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = BundleView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 507, body = ErrorBody)))]
pub async fn put_bundle(
    State(state): State<AppState>,
    ApiPath(run_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<BundleQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<BundleView>), ApiError> {
    check_run_id(&run_id)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let summary = state
        .uploads
        .put_bundle(
            &run_id,
            body.into_data_stream(),
            declared,
            query.replace.unwrap_or(false),
            started(&state, &run_id),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(bundle_view(summary))))
}

/// Fetch a bundle from a URL into a run's work dir.
// The OpenAPI tag is that of the module's old name, `files`.
#[utoipa::path(post, path = "/v1/runs/{run_id}/bundle", tag = "files", params(("run_id" = String, Path), BundleQuery),
    request_body = FetchBundleRequest,
    responses((status = 201, body = BundleView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 424, description = "the origin answered 4xx; permanent: true", body = ErrorBody),
              (status = 502, description = "connect error, timeout, 408, 429 or 5xx; permanent: false", body = ErrorBody),
              (status = 507, body = ErrorBody)))]
pub async fn post_bundle(
    State(state): State<AppState>,
    ApiPath(run_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<BundleQuery>,
    ApiJson(request): ApiJson<FetchBundleRequest>,
) -> Result<(StatusCode, Json<BundleView>), ApiError> {
    check_run_id(&run_id)?;
    let timeout = match request.timeout_s {
        None => FETCH_TIMEOUT_DEFAULT_S,
        Some(secs) if secs.is_finite() && secs > 0.0 && secs <= FETCH_TIMEOUT_MAX_S => secs,
        Some(secs) => {
            return Err(UploadError::Invalid(format!(
                "timeout_s {secs} must be between 0 and {FETCH_TIMEOUT_MAX_S} seconds"
            ))
            .into())
        }
    };
    let fetch = FetchRequest::new(
        &request.url,
        request.headers.into_iter().collect(),
        Duration::from_secs_f64(timeout),
    )?;
    let fetch = match &request.sha256 {
        Some(digest) => fetch.with_sha256(digest)?,
        None => fetch,
    };
    let summary = state
        .uploads
        .fetch_bundle(
            &state.http,
            &run_id,
            fetch,
            query.replace.unwrap_or(false),
            started(&state, &run_id),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(bundle_view(summary))))
}

/// Write one file atomically.
// The OpenAPI tag is that of the module's old name, `files`.
#[utoipa::path(put, path = "/v1/files", tag = "files", params(FileQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = FileView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 507, body = ErrorBody)))]
pub async fn put_file(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<FileQuery>,
    body: Body,
) -> Result<(StatusCode, Json<FileView>), ApiError> {
    let summary = state
        .uploads
        .put_file(&query.path, query.mode.as_deref(), body.into_data_stream())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(FileView {
            path: summary.path.display().to_string(),
            bytes: summary.bytes,
        }),
    ))
}

fn started(state: &AppState, run_id: &str) -> Started {
    let runs = state.runs.clone();
    let run_id = run_id.to_owned();
    Arc::new(move || runs.has_started(&run_id))
}

fn bundle_view(summary: BundleSummary) -> BundleView {
    BundleView {
        run_id: summary.run_id,
        dir: summary.dir.display().to_string(),
        entries: summary.entries,
        bytes: summary.bytes,
    }
}
