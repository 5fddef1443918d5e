//! `POST /v1/secrets/resolve`: secret values for SDK scripts.

use axum::extract::State;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::ApiJson;
use super::{AppState, Caller};
use crate::error::{ApiError, ErrorBody};
use crate::secrets::SecretError;

/// Body of `POST /v1/secrets/resolve`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// Env var name to secret source (session key callers).
    #[schema(value_type = Object)]
    pub secrets: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    /// Names of the calling run's own secrets (run-token callers).
    pub names: Option<Vec<String>>,
}

/// Answer of `POST /v1/secrets/resolve`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResolveResponse {
    /// Name to value.
    pub values: std::collections::BTreeMap<String, String>,
}

/// Resolve secrets without starting anything.
#[utoipa::path(post, path = "/v1/secrets/resolve", request_body = ResolveRequest,
    responses((status = 200, body = ResolveResponse), (status = 424, body = ErrorBody), (status = 501, body = ErrorBody)))]
pub async fn resolve_secrets(
    State(_state): State<AppState>,
    Extension(_caller): Extension<Caller>,
    ApiJson(_request): ApiJson<ResolveRequest>,
) -> Result<Json<ResolveResponse>, ApiError> {
    Err(SecretError::NotImplemented.into())
}
