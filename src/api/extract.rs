//! Extractors whose rejections answer in the JSON error shape.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};

use crate::error::ApiError;

/// `axum::Json` with rejections mapped to [`ApiError`].
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `axum::extract::Query` with rejections mapped to [`ApiError`].
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// `axum::extract::Path` with rejections mapped to [`ApiError`].
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        if body_timed_out(&rejection) {
            return ApiError::BodyTimeout;
        }
        match rejection {
            JsonRejection::BytesRejection(err) if err.status().as_u16() == 413 => {
                ApiError::BodyTooLarge {
                    limit: super::JSON_BODY_LIMIT as u64,
                }
            }
            JsonRejection::MissingJsonContentType(_) => {
                ApiError::BadJson("send the body with Content-Type: application/json".to_owned())
            }
            other => ApiError::BadJson(other.body_text()),
        }
    }
}

/// Whether the body failed because it stopped arriving: the error the
/// router's body timeout layer (`--body-timeout`) puts into the stream.
fn body_timed_out(rejection: &JsonRejection) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(err) = source {
        if err.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        source = err.source();
    }
    false
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::BadRequest(format!("invalid query string: {}", rejection.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        ApiError::BadRequest(format!("invalid path: {}", rejection.body_text()))
    }
}
