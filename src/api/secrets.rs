//! `POST /v1/secrets/resolve`: secret values for SDK scripts, without
//! spawning anything.
//!
//! Operators (session key) send sources: `{"secrets": {...}}`. A run
//! (its `SANDBOXD_RUN_TOKEN`) sends names: `{"names": [...]}`, and gets
//! fresh values of its own run's sources by their env var names; it never
//! sees a source, and cannot name any other. Those values are added to the
//! masker of the run's output before they are answered, so a rotated value
//! the run prints is masked too.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::{Extension, Json};
use secrecy::{ExposeSecret, SecretString};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::ApiJson;
use super::{AppState, Caller};
use crate::error::{ApiError, ErrorBody};
use crate::secrets::{self, SecretMap};

/// How long a run's shim may take to confirm it masks values resolved for
/// the run.
const MASK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// Body of `POST /v1/secrets/resolve`: exactly one of the two fields.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// Env var name to secret source, as in a run's `secrets` (session key
    /// callers).
    #[schema(value_type = Object)]
    pub secrets: Option<BTreeMap<String, serde_json::Value>>,
    /// Env var names of the calling run's own `secrets` (run-token callers).
    pub names: Option<Vec<String>>,
}

/// Answer of `POST /v1/secrets/resolve`.
#[derive(ToSchema)]
pub struct ResolveResponse {
    /// Name to value.
    #[schema(value_type = BTreeMap<String, String>)]
    pub values: Vec<(String, SecretString)>,
}

// Written by hand: the values are exposed only while the body is
// serialized, with no intermediate plain map.
impl Serialize for ResolveResponse {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Values<'a>(&'a [(String, SecretString)]);
        impl Serialize for Values<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(self.0.len()))?;
                for (name, value) in self.0 {
                    map.serialize_entry(name, value.expose_secret())?;
                }
                map.end()
            }
        }
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("values", &Values(&self.values))?;
        map.end()
    }
}

/// Resolve secrets without starting anything.
#[utoipa::path(post, path = "/v1/secrets/resolve", request_body = ResolveRequest,
    responses((status = 200, body = ResolveResponse), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 424, body = ErrorBody)))]
pub async fn resolve_secrets(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(request): ApiJson<ResolveRequest>,
) -> Result<Json<ResolveResponse>, ApiError> {
    let run = match &caller {
        Caller::Run(run_id) => Some(run_id.clone()),
        Caller::Operator => None,
    };
    let sources = match (caller, request.secrets, request.names) {
        (_, Some(mut raw), Some(_)) => {
            scrub(&mut raw);
            return Err(ApiError::BadRequest(
                "send either secrets (sources) or names (of your run's secrets), not both"
                    .to_owned(),
            ));
        }
        (_, None, None) => {
            return Err(ApiError::BadRequest(
                "send {\"secrets\": {NAME: source}} (or, from inside a run, {\"names\": [NAME]})"
                    .to_owned(),
            ))
        }
        (Caller::Operator, Some(raw), None) => secrets::parse_map(raw, &state.config)?,
        (Caller::Operator, None, Some(_)) => {
            return Err(ApiError::BadRequest(
                "names resolves a run's own secrets and takes that run's SANDBOXD_RUN_TOKEN; \
                 with the session key, send {\"secrets\": {NAME: source}}"
                    .to_owned(),
            ))
        }
        (Caller::Run(_), Some(mut raw), None) => {
            scrub(&mut raw);
            return Err(ApiError::Forbidden(
                "a run token may only resolve its own run's secrets by name: send {\"names\": [NAME]}"
                    .to_owned(),
            ));
        }
        (Caller::Run(run_id), None, Some(names)) => own_secrets(&state, &run_id, &names)?,
    };
    let values = state.runs.resolver().resolve_all(&sources).await?;
    if let Some(run_id) = run {
        // A value resolved afresh (a rotated one) is masked in the run's
        // output before the run gets it.
        let fresh = values.iter().map(|(_, v)| v.clone()).collect();
        if !state.runs.mask_in_run(&run_id, fresh, MASK_PATIENCE).await {
            return Err(ApiError::Internal(format!(
                "run {run_id:?}'s output masker did not take the resolved values in time, so they \
                 are withheld; retry"
            )));
        }
    }
    Ok(Json(ResolveResponse { values }))
}

/// The entries of a run's `secrets` named by `names`; any other name is 403.
fn own_secrets(state: &AppState, run_id: &str, names: &[String]) -> Result<SecretMap, ApiError> {
    let mut all = state.runs.secrets_of(run_id)?;
    let unknown: Vec<&str> = names
        .iter()
        .filter(|name| !all.contains_key(*name))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::Forbidden(format!(
            "run {run_id:?} has no secret named {}; a run token resolves only the env var names of \
             its own run's secrets (a run re-attached after a sandboxd restart has none: sources are \
             never written to disk)",
            unknown.join(", ")
        )));
    }
    all.retain(|name, _| names.contains(name));
    Ok(all)
}

fn scrub(raw: &mut BTreeMap<String, serde_json::Value>) {
    raw.values_mut().for_each(secrets::source::zeroize_json);
}
