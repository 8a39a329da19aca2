//! What-if stress tests on a copy of the ledger, kept (issue 17, 体检):
//! `POST /api/v1/scenarios` runs one and stores it, `GET /api/v1/scenarios` lists the
//! newest, `GET /api/v1/scenarios/{id}` reads one back (JSON, or its table as CSV), and
//! `GET /api/v1/stress-test/latest` is the scheduled stress test's last report, for the
//! wall board.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use store::{NewScenarioRun, ScenarioRunRow};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, Entity, ErrorBody};
use crate::export;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::scenario::{self, ScenarioOutcome, ScenarioRequest, StoredScenario};
use crate::stress_test::StressTestSummary;

const CSV: &str = "text/csv; charset=utf-8";
/// Runs a list holds when the caller does not say, and at most (the store keeps 100).
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = store::MAX_SCENARIO_RUNS;

/// Plays a disaster scenario — water, power, roads or communications cut, a population
/// surge, or any mix — on a copy of the ledger and answers days per town and category
/// and what falls below target, when; the run is stored and its `id` answered with it
/// (`GET /api/v1/scenarios/{id}`). Live state is never touched. Any valid token.
/// The body is at most 2 MiB; at most 4 scenario and history requests run at once.
#[utoipa::path(post, path = "/api/v1/scenarios", tag = "scenarios",
    request_body(content = ScenarioRequest, example = json!({
        "name": "flood",
        "water_cut": {"water_need_l_per_person": 15, "lose_water_points": true},
        "power_cut": true,
        "road_cut_days": 3,
        "comms_cut": {"silent_as": "last_value"},
        "population_surge": {"factor": 1.1, "towns": {"jingshan": 5000}}
    })),
    responses(
        (status = 200, body = StoredScenario),
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
) -> Result<Json<StoredScenario>, ApiError> {
    // A copy taken under the lock (a memory copy, no maths), so ingest waits for
    // microseconds, not for the scenario.
    let live = state.ledger().clone();
    // To the millisecond the store keeps, so a run reads back as it was answered.
    let at = Utc::now().trunc_subsecs(3);
    let (request, outcome) = tokio::task::spawn_blocking(move || {
        scenario::run(&live, &request, at).map(|outcome| (request, outcome))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("scenario task failed: {e}")))??;
    let run = NewScenarioRun {
        at,
        name: request.name.clone(),
        requested_by: caller.name().to_owned(),
        towns_below_target: outcome.towns_below_target,
        request: to_json(&request)?,
        outcome: to_json(&outcome)?,
    };
    let id = state
        .with_store(move |store| store.record_scenario_run(&run))
        .await?;
    Ok(Json(StoredScenario {
        id,
        at,
        stress_test: None,
        request,
        outcome,
    }))
}

fn to_json(value: &impl Serialize) -> Result<String, ApiError> {
    serde_json::to_string(value).map_err(|e| ApiError::Internal(format!("scenario JSON: {e}")))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// At most this many, newest first: 1 to 100, default 20.
    limit: Option<usize>,
}

/// The newest stored runs, without their towns.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScenarioList {
    pub scenarios: Vec<ScenarioListItem>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScenarioListItem {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub name: Option<String>,
    /// The scheduled stress test it ran in; `null` when asked through the API.
    pub stress_test: Option<i64>,
    pub towns_below_target: u64,
}

/// The newest stored what-if runs first (the store keeps the newest 100).
#[utoipa::path(get, path = "/api/v1/scenarios", tag = "scenarios",
    params(ListQuery),
    responses(
        (status = 200, body = ScenarioList),
        (status = 400, description = "Bad `limit` (`invalid_query`)", body = ErrorBody),
        (status = 401, description = "A token is needed", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state))]
pub(super) async fn list_scenarios(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<ScenarioList>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest {
            code: "invalid_query",
            message: format!("limit: must be between 1 and {MAX_LIMIT}, got {limit}"),
            field: Some("limit".to_owned()),
        });
    }
    let rows = state
        .with_store(move |store| store.scenario_runs(limit))
        .await?;
    let scenarios = rows
        .into_iter()
        .map(|row| ScenarioListItem {
            id: row.id,
            at: row.at,
            name: row.name,
            stress_test: row.stress_test,
            towns_below_target: row.towns_below_target,
        })
        .collect();
    Ok(Json(ScenarioList { scenarios }))
}

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StoredFormat {
    #[default]
    Json,
    Csv,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct StoredQuery {
    /// `json` (default: the run as `POST` answered it) or `csv` (a row per town and
    /// category: days before and after, below target, shortfall, what mutual aid in
    /// the cluster covers; UTF-8 with a byte order mark).
    #[serde(default)]
    #[param(inline)]
    format: StoredFormat,
}

/// A stored what-if run, as `POST /api/v1/scenarios` answered it, or its table as CSV.
#[utoipa::path(get, path = "/api/v1/scenarios/{id}", tag = "scenarios",
    params(("id" = i64, Path, description = "The run's id, as `POST` answered it"), StoredQuery),
    responses(
        (status = 200, body = StoredScenario, content((StoredScenario = "application/json"), (String = "text/csv"))),
        (status = 400, description = "Bad `id` or `format`", body = ErrorBody),
        (status = 401, description = "A token is needed", body = ErrorBody),
        (status = 404, description = "No run with this id is kept (`unknown_scenario`)", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state))]
pub(super) async fn stored_scenario(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(query): ApiQuery<StoredQuery>,
) -> Result<Response, ApiError> {
    let row = state
        .with_store(move |store| store.scenario_run(id))
        .await?
        .ok_or_else(|| ApiError::not_found(Entity::Scenario, &id.to_string()))?;
    let stored = stored(row)?;
    match query.format {
        StoredFormat::Json => Ok(Json(stored).into_response()),
        StoredFormat::Csv => {
            let csv = export::to_csv(&[scenario::table(&stored.outcome)])
                .map_err(|e| ApiError::Internal(format!("scenario CSV: {e}")))?;
            let file = format!("stockpile-scenario-{id}.csv");
            Ok((
                [
                    (header::CONTENT_TYPE, CSV.to_owned()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{file}\""),
                    ),
                ],
                csv,
            )
                .into_response())
        }
    }
}

/// A stored row back as the API answered it; JSON this code did not write is an
/// internal error naming the run.
fn stored(row: ScenarioRunRow) -> Result<StoredScenario, ApiError> {
    let corrupt = |e: serde_json::Error| {
        ApiError::Internal(format!("stored scenario {} cannot be read: {e}", row.id))
    };
    let request: ScenarioRequest = serde_json::from_str(&row.run.request).map_err(corrupt)?;
    let outcome: ScenarioOutcome = serde_json::from_str(&row.run.outcome).map_err(corrupt)?;
    Ok(StoredScenario {
        id: row.id,
        at: row.run.at,
        stress_test: row.stress_test,
        request,
        outcome,
    })
}

/// The scheduled stress test's last report (`[stress_test]`): when it ran, when the next
/// is due, each scenario's run and the weakest towns across them — what the wall board
/// shows.
#[utoipa::path(get, path = "/api/v1/stress-test/latest", tag = "scenarios",
    responses(
        (status = 200, body = StressTestSummary),
        (status = 401, description = "A token is needed", body = ErrorBody),
        (status = 404, description = "No stress test has run yet (`unknown_stress_test`)", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state))]
pub(super) async fn latest_stress_test(
    State(state): State<AppState>,
) -> Result<Json<StressTestSummary>, ApiError> {
    let row = state
        .with_store(|store| store.latest_stress_test())
        .await?
        .ok_or_else(|| ApiError::not_found(Entity::StressTest, "latest"))?;
    let summary = row.summary.as_deref().unwrap_or("null");
    serde_json::from_str(summary)
        .map(Json)
        .map_err(|e| ApiError::Internal(format!("stress test {} cannot be read: {e}", row.id)))
}
