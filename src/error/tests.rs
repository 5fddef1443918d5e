use super::*;

/// Every kind of error has its status and wire code (docs/API.md).
#[test]
fn status_and_code_table() {
    let s = String::new;
    let table: Vec<(ApiError, StatusCode, &str)> = vec![
        (
            ApiError::Unauthorized("no key"),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (ApiError::Forbidden(s()), StatusCode::FORBIDDEN, "forbidden"),
        (
            ApiError::RouteNotFound {
                method: s(),
                path: s(),
            },
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            ApiError::MethodNotAllowed {
                method: s(),
                path: s(),
            },
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (ApiError::BadJson(s()), StatusCode::BAD_REQUEST, "bad_json"),
        (
            ApiError::BodyTooLarge { limit: 1 },
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            ApiError::BodyTimeout,
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
        ),
        (
            ApiError::BadRequest(s()),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            ApiError::ShuttingDown,
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
        ),
        (
            ApiError::Internal(s()),
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
        ),
        (
            RunError::NotFound(s()).into(),
            StatusCode::NOT_FOUND,
            "run_not_found",
        ),
        (
            RunError::Exists(s()).into(),
            StatusCode::CONFLICT,
            "run_exists",
        ),
        (
            RunError::Ended(s()).into(),
            StatusCode::CONFLICT,
            "run_ended",
        ),
        (
            RunError::NoInput(s()).into(),
            StatusCode::CONFLICT,
            "run_without_stdin",
        ),
        (
            RunError::UploadInProgress(s()).into(),
            StatusCode::CONFLICT,
            "upload_in_progress",
        ),
        (
            RunError::StillRunning(s()).into(),
            StatusCode::CONFLICT,
            "run_running",
        ),
        (
            RunError::TooManyRunning { limit: 1 }.into(),
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_runs",
        ),
        (
            RunError::Invalid(s()).into(),
            StatusCode::BAD_REQUEST,
            "invalid_run",
        ),
        (
            RunError::SensitiveEnv(s()).into(),
            StatusCode::BAD_REQUEST,
            "sensitive_env",
        ),
        (
            RunError::BadSignal(s()).into(),
            StatusCode::BAD_REQUEST,
            "bad_signal",
        ),
        (
            RunError::ShuttingDown.into(),
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
        ),
        (
            RunError::StorageFull { run_id: s() }.into(),
            StatusCode::INSUFFICIENT_STORAGE,
            "insufficient_storage",
        ),
        (
            UploadError::Unsafe {
                entry: s(),
                reason: s(),
            }
            .into(),
            StatusCode::BAD_REQUEST,
            "unsafe_archive",
        ),
        (
            UploadError::BadArchive { reason: s() }.into(),
            StatusCode::BAD_REQUEST,
            "bad_archive",
        ),
        (
            UploadError::BundleTooLarge { limit: 1 }.into(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "bundle_too_large",
        ),
        (
            UploadError::TooManyEntries { limit: 1 }.into(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_entries",
        ),
        (
            UploadError::BundleExists(s()).into(),
            StatusCode::CONFLICT,
            "bundle_exists",
        ),
        (
            UploadError::RunStarted(s()).into(),
            StatusCode::CONFLICT,
            "run_started",
        ),
        (
            UploadError::InProgress(s()).into(),
            StatusCode::CONFLICT,
            "upload_in_progress",
        ),
        (
            UploadError::Unavailable {
                url: s(),
                status: 404,
            }
            .into(),
            StatusCode::FAILED_DEPENDENCY,
            "bundle_unavailable",
        ),
        (
            SecretError::Invalid {
                var: s(),
                reason: s(),
            }
            .into(),
            StatusCode::BAD_REQUEST,
            "invalid_secret",
        ),
    ];
    for (err, status, code) in table {
        assert_eq!(err.status_and_code(), (status, code), "{err:?}");
    }
}

/// A 5xx answers a generic message; the detail stays out of the body.
#[tokio::test]
async fn server_errors_hide_their_detail() {
    let res = ApiError::Internal("disk /secret/path broke".into()).into_response();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&body);
    assert!(!text.contains("/secret/path"), "{text}");
    assert!(text.contains("\"code\":\"internal\""), "{text}");
}
