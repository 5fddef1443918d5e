//! Authentication: the session key (operators, the dispatcher) or a run's
//! own token (an SDK script inside that run), compared in constant time.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use crate::error::ApiError;

/// Who is calling, put into the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Holds the session key (or auth is off).
    Operator,
    /// Holds the token of this run, which is running.
    Run(String),
}

/// Routes a run token may call: (method, route, whether `{run_id}` must be
/// the token's own run).
const RUN_TOKEN_ROUTES: [(Method, &str); 7] = [
    (Method::POST, "/v1/runs/{run_id}/report"),
    (Method::POST, "/v1/runs/{run_id}/complete"),
    (Method::GET, "/v1/runs/{run_id}"),
    (Method::GET, "/v1/runs/{run_id}/files"),
    (Method::POST, "/v1/runs/{run_id}/stdin"),
    (Method::GET, "/v1/runs/{run_id}/attach"),
    (Method::POST, "/v1/secrets/resolve"),
];

/// Rejects requests without a valid key or run token.
pub(super) async fn require_auth(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let caller = match authenticate(&state, req.headers()) {
        Ok(caller) => caller,
        Err(err) => return err.into_response(),
    };
    if let Caller::Run(run_id) = &caller {
        if let Err(err) = check_run_scope(&req, run_id) {
            return err.into_response();
        }
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let Some(key) = state.config.session_key_bytes() else {
        return Ok(Caller::Operator);
    };
    let Some(presented) = presented_credential(headers) else {
        return Err(ApiError::Unauthorized(
            "missing credentials: send the session key as X-Session-API-Key or Authorization: Bearer",
        ));
    };
    if key_matches(presented.as_bytes(), key) {
        return Ok(Caller::Operator);
    }
    match state.runs.token_owner(presented) {
        Some((run_id, true)) => Ok(Caller::Run(run_id)),
        Some((_, false)) => Err(ApiError::Unauthorized(
            "this run token belongs to a run that has ended",
        )),
        None => Err(ApiError::Unauthorized("invalid session key")),
    }
}

/// Whether `presented` is the session key. Both are hashed first and the
/// digests compared with `subtle::ConstantTimeEq`: the comparison takes the
/// same time whatever prefix (or length) of the key a guess shares. (A
/// plain `ct_eq` of the two values would still answer early on a length
/// mismatch, telling the key's length.)
fn key_matches(presented: &[u8], key: &[u8]) -> bool {
    let presented = Sha256::digest(presented);
    let key = Sha256::digest(key);
    presented.ct_eq(&key).into()
}

fn presented_credential(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers
        .get("x-session-api-key")
        .and_then(|v| v.to_str().ok())
    {
        return Some(value);
    }
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn check_run_scope(req: &Request, run_id: &str) -> Result<(), ApiError> {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or("");
    let allowed = RUN_TOKEN_ROUTES
        .iter()
        .any(|(method, path)| method == req.method() && *path == route);
    if !allowed {
        return Err(ApiError::Forbidden(format!(
            "a run token may only call its own run's report, completion, status, files, stdin, attach and secret resolution, not {} {route}",
            req.method()
        )));
    }
    if route.contains("{run_id}") {
        let own = format!("/v1/runs/{run_id}");
        let path = req.uri().path();
        if path != own && !path.starts_with(&format!("{own}/")) {
            return Err(ApiError::Forbidden(
                "a run token only reaches its own run".to_owned(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_matches_only_the_whole_key() {
        let key = b"session-key-0123456789";
        assert!(key_matches(key, key));
        for wrong in [
            &b""[..],
            b"session-key-012345678",
            b"session-key-0123456789x",
            b"session-key-0123456788",
            b"xession-key-0123456789",
        ] {
            assert!(!key_matches(wrong, key), "{wrong:?}");
        }
    }
}
