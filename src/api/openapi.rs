//! `GET /openapi.json`: the OpenAPI document, generated from the handlers
//! and wire types.
//!
//! The handlers' annotations list the answers particular to each
//! operation; [`CommonResponses`] adds the ones every operation of a kind
//! can give (no key, a run token out of scope, a malformed body or query,
//! an internal error), so that the document describes every status the
//! daemon really sends. `bench/reliability/20-schemathesis.sh` checks it
//! against the live daemon.

use axum::Json;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::{file_ops, files, runs, secrets, status, uploads};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "sandboxd", description = "The in-sandbox supervisor's HTTP API."),
    paths(
        status::get_healthz, status::get_status, status::get_metrics,
        runs::create_run, runs::list_runs, runs::get_run, runs::get_logs, runs::cancel_run,
        runs::signal_run, runs::report_run, runs::relay::complete_run, runs::relay::phase_run, runs::delete_run, runs::interactive::post_stdin, runs::interactive::attach,
        uploads::put_bundle, uploads::post_bundle, uploads::put_file,
        files::get_file, files::stat_file, files::list_files, files::get_run_file,
        file_ops::delete_file, file_ops::make_dir, file_ops::move_file, file_ops::watch_files,
        secrets::resolve_secrets,
        get_openapi,
    ),
    modifiers(&Auth, &CommonResponses),
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

/// Adds the answers shared by whole classes of operations, and describes
/// raw upload bodies as binary strings.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                add_common(operation);
            }
        }
    }
}

fn add_common(operation: &mut Operation) {
    let public = operation.security.as_ref().is_some_and(Vec::is_empty);
    let body_media: Vec<String> = operation
        .request_body
        .as_ref()
        .map(|body| body.content.keys().cloned().collect())
        .unwrap_or_default();
    let has_params = operation
        .parameters
        .as_ref()
        .is_some_and(|params| !params.is_empty());
    if let Some(body) = operation.request_body.as_mut() {
        if let Some(raw) = body.content.get_mut("application/octet-stream") {
            raw.schema = Some(RefOr::T(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
                    .into(),
            ));
        }
    }
    let mut add = |status: &str, description: &str| {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| error_response(description));
    };
    if body_media.iter().any(|m| m == "application/json") {
        add(
            "400",
            "bad_json: the body is not this JSON, or lacks Content-Type: application/json",
        );
        add("413", "body_too_large: a JSON body over 10 MiB");
    }
    if has_params {
        add("400", "bad_request: a malformed query string or path");
    }
    if !public {
        add(
            "401",
            "unauthorized: no key, a wrong key, or the token of an ended run",
        );
        add(
            "403",
            "forbidden: a run token used beyond its own run's report, status and secrets",
        );
        add(
            "500",
            "internal: a bug or an I/O failure inside sandboxd; its log has the details",
        );
    }
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

/// This document (no auth).
#[utoipa::path(get, path = "/openapi.json", security(),
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object, content_type = "application/json")))]
pub async fn get_openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
