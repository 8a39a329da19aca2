//! Drills (docs/design.md#drills): an admin starts one over a scope for a while; alerts
//! raised in it are marked as a drill's, and the board shows a banner while it runs.
//! Routed with the alert service.

use alerts::drill::{DrillView, NewDrill};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, Entity, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};

fn handle(state: &AppState) -> Result<&alerts::AlertsHandle, ApiError> {
    state
        .alerts()
        .ok_or_else(|| ApiError::Internal("drill routes are served without alerts".into()))
}

/// A drill to start.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrillRequest {
    /// `city`, `district:<id>`, `cluster:<id>` or `towns:<id>,<id>` (`town:<id>`).
    #[schema(example = "cluster:c07")]
    pub scope: String,
    /// How long it runs: `90m`, `2h`, `1h30m`; 1 minute to 24 hours.
    #[schema(example = "2h")]
    pub duration: String,
    /// What is exercised, for the board and the audit log.
    #[serde(default)]
    pub note: String,
}

/// Starts a drill (admins). Until it ends, alerts raised in its scope are drill
/// alerts: their messages start with 【演练】 / [DRILL] and they escalate no further
/// than the scope's own contacts. Recorded in the audit log.
#[utoipa::path(post, path = "/api/v1/drill", tag = "alerts",
    request_body = DrillRequest,
    responses(
        (status = 201, description = "The drill", body = DrillView),
        (status = 400, description = "Body is not JSON", body = ErrorBody),
        (status = 401, description = "A token is needed", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 413, description = "Body over 16 KiB (`body_too_large`)", body = ErrorBody),
        (status = 415, description = "Body is not `application/json`", body = ErrorBody),
        (status = 422, description = "Body of the wrong shape, a scope naming nothing, a duration out of bounds; `field` names it", body = ErrorBody),
        (status = 503, description = "The alert engine is not running", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state, body), fields(caller = caller.name()))]
pub(super) async fn start_drill(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<ApiJson<DrillRequest>, ApiError>,
) -> Result<(StatusCode, Json<DrillView>), ApiError> {
    let alerts = handle(&state)?;
    require_admin(&caller)?;
    let ApiJson(request) = body?;
    let drill = alerts
        .start_drill(NewDrill {
            scope: request.scope,
            duration: request.duration,
            started_by: caller.name().to_owned(),
            note: request.note,
            remote: crate::audit::origin(),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(drill)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct DrillsQuery {
    /// Also drills that have ended.
    include_ended: Option<bool>,
}

/// Drills running now, newest first (all with `include_ended=true`). Without a token
/// (public reads), who started a drill and its note are left out.
#[utoipa::path(get, path = "/api/v1/drill", tag = "alerts",
    params(DrillsQuery),
    responses(
        (status = 200, body = Vec<DrillView>),
        (status = 400, description = "Unknown query parameter or value", body = ErrorBody),
        (status = 401, description = "A token is needed", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state))]
pub(super) async fn list_drills(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<DrillsQuery>,
) -> Result<Json<Vec<DrillView>>, ApiError> {
    let drills = handle(&state)?
        .drills(query.include_ended.unwrap_or(false))
        .await?;
    Ok(Json(match caller {
        Caller::Public => drills.into_iter().map(DrillView::without_people).collect(),
        Caller::Token { .. } => drills,
    }))
}

/// Ends a running drill now (admins): its open alerts resolve without a message; a
/// condition that still holds is raised again as a real alert. Recorded in the audit
/// log.
#[utoipa::path(delete, path = "/api/v1/drill/{id}", tag = "alerts",
    params(("id" = i64, Path, description = "Drill id")),
    responses(
        (status = 204, description = "Ended"),
        (status = 401, description = "A token is needed", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such drill running (`unknown_drill`)", body = ErrorBody),
        (status = 503, description = "The alert engine is not running", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state), fields(caller = caller.name()))]
pub(super) async fn end_drill(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let alerts = handle(&state)?;
    require_admin(&caller)?;
    let not_found = || ApiError::not_found(Entity::Drill, &id);
    let number: i64 = id.parse().map_err(|_| not_found())?;
    if !alerts
        .end_drill(number, caller.name(), &crate::audit::origin())
        .await?
    {
        return Err(not_found());
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Drills page people across a scope: only admins start or end them.
fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    match caller {
        Caller::Public => Err(ApiError::MissingToken),
        Caller::Token {
            role: Role::Admin, ..
        } => Ok(()),
        Caller::Token { name, role, .. } => Err(ApiError::Forbidden(format!(
            "{name:?} has role {}; drills need admin",
            role.as_str()
        ))),
    }
}
