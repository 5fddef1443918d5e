//! `GET /openapi.json`: the OpenAPI document, generated from the handlers
//! and wire types.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{files, runs, secrets, status};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "sandboxd", description = "The in-sandbox supervisor's HTTP API."),
    paths(
        status::get_healthz, status::get_status, status::get_metrics,
        runs::create_run, runs::list_runs, runs::get_run, runs::get_logs, runs::cancel_run,
        runs::signal_run, runs::report_run, runs::delete_run,
        files::put_bundle, files::post_bundle, files::put_file,
        secrets::resolve_secrets,
        get_openapi,
    ),
    modifiers(&Auth),
    security(("session_key" = []), ("bearer" = [])),
)]
pub struct ApiDoc;

struct Auth;

impl Modify for Auth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Session-API-Key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// This document (no auth).
#[utoipa::path(get, path = "/openapi.json", security(), responses((status = 200, description = "OpenAPI 3.1 document")))]
pub async fn get_openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
