//! The one place that knows HTTP status codes and wire error codes.
//!
//! Domain modules return their own `thiserror` enums; [`ApiError`] wraps
//! them and maps each variant to a status and a snake_case code. Every error
//! leaves the daemon as `{"error": {"code": ..., "message": ...}}`.

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::files::FilesError;
use crate::runs::RunError;
use crate::secrets::SecretError;
use crate::upload::UploadError;

/// An error answered to an API caller.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or wrong credentials.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Credentials valid, but not for this.
    #[error("{0}")]
    Forbidden(String),
    /// No route at this path.
    #[error("no endpoint {method} {path}; see GET /openapi.json for the API")]
    RouteNotFound {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
    },
    /// Known path, wrong method.
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
    },
    /// The body is not the JSON this endpoint takes.
    #[error("invalid JSON body: {0}")]
    BadJson(String),
    /// The body is larger than the limit.
    #[error("request body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The request body stopped arriving (`--body-timeout`).
    #[error("the request body paused longer than the daemon's --body-timeout; send the whole body without long pauses")]
    BodyTimeout,
    /// A query string or path parameter is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// The daemon is shutting down and takes no new work.
    #[error("sandboxd is shutting down; retry against the next instance")]
    ShuttingDown,
    /// A run operation failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// An upload failed.
    #[error(transparent)]
    Upload(#[from] UploadError),
    /// A secret could not be resolved.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A file operation failed.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// A `Range` no byte of the file is in.
    #[error("the range asks for no byte of this {size}-byte file; ask within 0-{size}")]
    RangeNotSatisfiable {
        /// The file's size.
        size: u64,
    },
    /// Something broke inside sandboxd; details are logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The wire shape of every error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Code and message of an error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code.
    pub code: String,
    /// A sentence naming what was wrong and how to fix it.
    pub message: String,
    /// For bundle fetches: whether retrying can help.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permanent: Option<bool>,
}

impl ApiError {
    /// Status code and wire code of this error.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::RouteNotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
            ApiError::BadJson(_) => (StatusCode::BAD_REQUEST, "bad_json"),
            ApiError::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            ApiError::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            ApiError::Run(err) => run_status(err),
            ApiError::Upload(err) => upload_status(err),
            ApiError::Secret(err) => secret_status(err),
            ApiError::Files(err) => files_status(err),
            ApiError::RangeNotSatisfiable { .. } => {
                (StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable")
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    fn permanent(&self) -> Option<bool> {
        match self {
            ApiError::Upload(UploadError::Unavailable { .. }) => Some(true),
            ApiError::Upload(UploadError::ChecksumMismatch { .. }) => Some(true),
            ApiError::Upload(UploadError::FetchFailed { .. }) => Some(false),
            _ => None,
        }
    }
}

fn run_status(err: &RunError) -> (StatusCode, &'static str) {
    match err {
        RunError::NotFound(_) => (StatusCode::NOT_FOUND, "run_not_found"),
        RunError::Exists(_) => (StatusCode::CONFLICT, "run_exists"),
        RunError::Ended(_) => (StatusCode::CONFLICT, "run_ended"),
        RunError::NoInput(_) => (StatusCode::CONFLICT, "run_without_stdin"),
        RunError::UploadInProgress(_) => (StatusCode::CONFLICT, "upload_in_progress"),
        RunError::StillRunning(_) => (StatusCode::CONFLICT, "run_running"),
        RunError::TooManyRunning { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_runs"),
        RunError::NoRunUid { .. } => (StatusCode::SERVICE_UNAVAILABLE, "no_run_uid"),
        RunError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_run"),
        RunError::SensitiveEnv(_) => (StatusCode::BAD_REQUEST, "sensitive_env"),
        RunError::BadSignal(_) => (StatusCode::BAD_REQUEST, "bad_signal"),
        RunError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        RunError::Secret(err) => secret_status(err),
        RunError::StorageFull { .. } => (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage"),
        RunError::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

fn upload_status(err: &UploadError) -> (StatusCode, &'static str) {
    match err {
        UploadError::Unsafe { .. } => (StatusCode::BAD_REQUEST, "unsafe_archive"),
        UploadError::BadArchive { .. } => (StatusCode::BAD_REQUEST, "bad_archive"),
        UploadError::BundleTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "bundle_too_large"),
        UploadError::ExtractedTooLarge { .. } => {
            (StatusCode::PAYLOAD_TOO_LARGE, "extracted_too_large")
        }
        UploadError::TooManyEntries { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_many_entries"),
        UploadError::Incomplete(_) => (StatusCode::BAD_REQUEST, "upload_incomplete"),
        UploadError::BundleExists(_) => (StatusCode::CONFLICT, "bundle_exists"),
        UploadError::RunStarted(_) => (StatusCode::CONFLICT, "run_started"),
        UploadError::InProgress(_) => (StatusCode::CONFLICT, "upload_in_progress"),
        UploadError::WorkDirExists(_) => (StatusCode::CONFLICT, "work_dir_exists"),
        UploadError::Unavailable { .. } => (StatusCode::FAILED_DEPENDENCY, "bundle_unavailable"),
        UploadError::FetchFailed { .. } => (StatusCode::BAD_GATEWAY, "bundle_fetch_failed"),
        UploadError::ChecksumMismatch { .. } => {
            (StatusCode::FAILED_DEPENDENCY, "bundle_checksum_mismatch")
        }
        UploadError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_upload"),
        UploadError::Forbidden { .. } | UploadError::ThroughSymlink { .. } => {
            (StatusCode::FORBIDDEN, "path_not_allowed")
        }
        UploadError::StorageFull { .. } => {
            (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
        }
        UploadError::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

fn files_status(err: &FilesError) -> (StatusCode, &'static str) {
    match err {
        FilesError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_path"),
        FilesError::NotAllowed { .. }
        | FilesError::NotWritable { .. }
        | FilesError::ThroughSymlink(_) => (StatusCode::FORBIDDEN, "path_not_allowed"),
        FilesError::NotFound(_) => (StatusCode::NOT_FOUND, "file_not_found"),
        FilesError::Exists(_) => (StatusCode::CONFLICT, "file_exists"),
        FilesError::NotEmpty(_) => (StatusCode::CONFLICT, "dir_not_empty"),
        FilesError::WrongKind { .. } => (StatusCode::BAD_REQUEST, "wrong_kind"),
        FilesError::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

fn secret_status(err: &SecretError) -> (StatusCode, &'static str) {
    match err {
        SecretError::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid_secret"),
        SecretError::Unresolved { .. } => (StatusCode::FAILED_DEPENDENCY, "secret_unresolved"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match (&self, status.is_server_error()) {
            // Internal detail is logged once by the request layer, never sent.
            (ApiError::Run(RunError::Io { .. }), true)
            | (ApiError::Upload(UploadError::Io { .. }), true)
            | (ApiError::Files(FilesError::Io { .. }), true)
            | (ApiError::Internal(_), true) => {
                "internal error; the daemon's log has the details".to_owned()
            }
            _ => self.to_string(),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message,
                permanent: self.permanent(),
            },
        };
        let mut res = (status, Json(body)).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            res.headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
        }
        if status.is_server_error() {
            res.extensions_mut().insert(Arc::new(self.to_string()));
        }
        res
    }
}

#[cfg(test)]
mod tests;
