//! The completion relay: `POST /v1/runs/{run_id}/complete`, where a run
//! with a completion callback finds its `AUTOMATION_CALLBACK_URL`. It takes
//! exactly the automation service's `RunCompleteRequest` (unknown fields
//! refused), authenticated by the run's own token, and stores it as the
//! run's report; the one completion sandboxd posts when the run ends
//! carries it (see `callbacks::payload::build` for how it combines with
//! the exit).

use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use utoipa::ToSchema;

use super::super::extract::{ApiJson, ApiPath};
use super::super::{AppState, Caller};
use super::view::view;
use super::RunView;
use crate::callbacks::RunReport;
use crate::error::{ApiError, ErrorBody};

/// `status` of a `RunCompleteRequest`.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompleteStatus {
    /// The script finished its work.
    Completed,
    /// The script failed.
    Failed,
}

/// The automation service's `RunCompleteRequest`, as an SDK script posts it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    /// `COMPLETED` or `FAILED`.
    pub status: CompleteStatus,
    /// The service's run id (ignored: the path names the run).
    #[serde(default)]
    pub run_id: Option<String>,
    /// The conversation the script drove.
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// A text or the SDK's `ConversationErrorEvent`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub error: Option<serde_json::Value>,
    /// What the run cost.
    #[serde(default)]
    pub cost: Option<f64>,
    /// Why the task could not go on.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub blocking_factor: Option<serde_json::Value>,
    /// How the task ended, in the script's words.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub task_outcome: Option<serde_json::Value>,
}

/// From inside a run: its SDK's completion, relayed in the run's one
/// completion callback.
#[utoipa::path(post, path = "/v1/runs/{run_id}/complete", params(("run_id" = String, Path)),
    request_body = CompleteRequest,
    responses((status = 200, body = RunView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn complete_run(
    State(state): State<AppState>,
    Extension(_caller): Extension<Caller>,
    ApiPath(run_id): ApiPath<String>,
    ApiJson(request): ApiJson<CompleteRequest>,
) -> Result<Json<RunView>, ApiError> {
    if let Some(cost) = request.cost {
        if !cost.is_finite() {
            return Err(ApiError::BadRequest(format!(
                "cost {cost} must be a number"
            )));
        }
    }
    let status = match request.status {
        CompleteStatus::Completed => "COMPLETED",
        CompleteStatus::Failed => "FAILED",
    };
    let report = RunReport {
        conversation_id: request.conversation_id,
        cost: request.cost,
        status: Some(status.to_owned()),
        error: request.error.filter(|e| !e.is_null()),
        task_outcome: request.task_outcome.filter(|v| !v.is_null()),
        blocking_factor: request.blocking_factor.filter(|v| !v.is_null()),
    };
    Ok(Json(view(
        &state,
        state.runs.report(&run_id, report).await?,
    )))
}

/// The automation service's `RunPhaseRequest`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PhaseRequest {
    /// The phase the script is in, in its words (`"cloning"`).
    pub phase: String,
}

/// Longest phase name taken (the service's `max_length`).
const MAX_PHASE_CHARS: usize = 200;

/// The service's normalisation of a phase: control characters and runs of
/// whitespace become one space, the ends are trimmed.
fn normalize_phase(phase: &str) -> String {
    let spaced: String = phase
        .chars()
        .map(|c| if c.is_ascii_control() { ' ' } else { c })
        .collect();
    spaced.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// From inside a run: a phase, normalised as the service does, stored
/// durably and forwarded to the service's phase URL (beside the callback's
/// `/complete`) in the order posted, before the run's completion.
#[utoipa::path(post, path = "/v1/runs/{run_id}/phase", params(("run_id" = String, Path)),
    request_body = PhaseRequest,
    responses((status = 200, body = RunView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn phase_run(
    State(state): State<AppState>,
    Extension(_caller): Extension<Caller>,
    ApiPath(run_id): ApiPath<String>,
    ApiJson(request): ApiJson<PhaseRequest>,
) -> Result<Json<RunView>, ApiError> {
    let phase = normalize_phase(&request.phase);
    if phase.is_empty() || phase.chars().count() > MAX_PHASE_CHARS {
        return Err(ApiError::BadRequest(format!(
            "phase must be 1 to {MAX_PHASE_CHARS} characters after control characters and \
             runs of whitespace become one space"
        )));
    }
    Ok(Json(view(&state, state.runs.phase(&run_id, phase).await?)))
}

#[cfg(test)]
mod tests {
    use super::normalize_phase;

    /// As the service's `RunPhaseRequest` validator: control characters
    /// and whitespace runs collapse to one space, ends trimmed.
    #[test]
    fn phases_are_normalised_like_the_service() {
        let table = [
            ("cloning", "cloning"),
            ("  two\n\tlines \r\n", "two lines"),
            ("a\u{7f}b\u{1b}[31mc", "a b [31mc"),
            ("\n\t ", ""),
            ("ünïcode  spaces", "ünïcode spaces"),
        ];
        for (given, want) in table {
            assert_eq!(normalize_phase(given), want, "{given:?}");
        }
    }
}
