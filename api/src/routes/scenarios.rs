//! `POST /api/v1/scenarios`: what-if stress tests on a copy of the ledger.

use axum::Json;
use axum::extract::State;
use chrono::Utc;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiJson;
use crate::scenario::{self, ScenarioOutcome, ScenarioRequest};

/// Plays a disaster scenario — water, power, roads or communications cut, a population
/// surge, or any mix — on a copy of the ledger and answers days per town and category
/// and what falls below target, when. Live state is never touched. Any valid token.
/// The body is at most 2 MiB; at most 4 scenario and history requests run at once.
#[utoipa::path(post, path = "/api/v1/scenarios", tag = "scenarios",
    request_body(content = ScenarioRequest, example = json!({
        "water_cut": {"water_need_l_per_person": 15, "lose_water_points": true},
        "power_cut": true,
        "road_cut_days": 3,
        "comms_cut": {"silent_as": "last_value"},
        "population_surge": {"factor": 1.1, "towns": {"jingshan": 5000}}
    })),
    responses(
        (status = 200, body = ScenarioOutcome),
        (status = 400, description = "Body is not JSON", body = ErrorBody),
        (status = 401, description = "A token is needed", body = ErrorBody),
        (status = 413, description = "Body over 2 MiB (`body_too_large`)", body = ErrorBody),
        (status = 415, description = "Body is not `application/json`", body = ErrorBody),
        (status = 422, description = "A field is wrong (out of range, unknown town, a surge over 100× or 100,000,000 people); `field` names it", body = ErrorBody),
        (status = 503, description = "Too many history and scenario requests at once (`overloaded`)", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state, request), fields(caller = caller.name()))]
pub(super) async fn run_scenario(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<ScenarioRequest>,
) -> Result<Json<ScenarioOutcome>, ApiError> {
    // A copy taken under the lock (a memory copy, no maths), so ingest waits for
    // microseconds, not for the scenario.
    let live = state.ledger().clone();
    let outcome = tokio::task::spawn_blocking(move || scenario::run(&live, &request, Utc::now()))
        .await
        .map_err(|e| ApiError::Internal(format!("scenario task failed: {e}")))??;
    Ok(Json(outcome))
}
