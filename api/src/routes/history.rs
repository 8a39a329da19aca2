//! A town's stock history: routed only when [`AppState::with_history`] plugged a source
//! in (InfluxDB, or the readings in SQLite).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use store::history::{History, HistoryQuery};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::error::{ApiError, Entity, ErrorBody};
use crate::extract::{ApiPath, ApiQuery};

/// The range asked for when the caller gives no `from`.
const DEFAULT_RANGE_H: i64 = 24;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct HistoryParams {
    /// One category (id); every category when absent.
    category: Option<String>,
    /// Start, inclusive (RFC 3339); 24 hours before `to` when absent.
    from: Option<String>,
    /// End, exclusive (RFC 3339); now when absent.
    to: Option<String>,
    /// Thin to the last point of each step, e.g. `15m`, `1h`.
    step: Option<String>,
}

/// The response body (documentation of `store::history::History`, which it mirrors).
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryBody {
    /// Town id.
    pub town: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub categories: Vec<CategoryHistoryBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CategoryHistoryBody {
    /// Category id.
    pub category: String,
    pub unit: String,
    /// Units the town's residents need per day: the divisor of `days`.
    pub need_per_day: f64,
    pub target_days: f64,
    /// Oldest first.
    pub points: Vec<HistoryPointBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryPointBody {
    pub ts: DateTime<Utc>,
    /// Held, in `unit`.
    pub stock: f64,
    /// Days of supply for the residents; `null` when nobody needs the category.
    pub days: Option<f64>,
}

/// A town's stock over time, per category: a point at each reading (or the last of
/// each `step`), with days of supply for its residents.
#[utoipa::path(get, path = "/api/v1/towns/{id}/history", tag = "towns",
    params(("id" = String, Path, description = "Town id"), HistoryParams),
    responses(
        (status = 200, body = HistoryBody),
        (status = 400, description = "A bad time or step (`field` names it), an empty range (`empty_range`)", body = ErrorBody),
        (status = 401, description = "A token is needed", body = ErrorBody),
        (status = 404, description = "Unknown town or category", body = ErrorBody),
        (status = 422, description = "The range holds too many readings (`too_many_readings`)", body = ErrorBody),
        (status = 503, description = "InfluxDB did not answer", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state))]
pub(super) async fn town_history(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<HistoryParams>,
) -> Result<Json<History>, ApiError> {
    let source = state
        .history()
        .ok_or_else(|| ApiError::Internal("history route served without history".into()))?;
    let (registry, town, category) = {
        let ledger = state.ledger();
        let registry = Arc::clone(ledger.registry());
        let town = registry
            .town_idx(&id)
            .ok_or_else(|| ApiError::not_found(Entity::Town, &id))?;
        let category = match &params.category {
            Some(c) => Some(
                registry
                    .category_idx(c)
                    .ok_or_else(|| ApiError::not_found(Entity::Category, c))?,
            ),
            None => None,
        };
        (registry, town, category)
    };
    let to = match &params.to {
        Some(t) => time("to", t)?,
        None => Utc::now(),
    };
    let from = match &params.from {
        Some(t) => time("from", t)?,
        None => to - Duration::hours(DEFAULT_RANGE_H),
    };
    let step = match &params.step {
        Some(s) => Some(step(s)?),
        None => None,
    };
    let query = HistoryQuery {
        town,
        category,
        from,
        to,
        step,
    };
    Ok(Json(source.history(&registry, &query).await?))
}

fn bad_param(field: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest {
        code: "invalid_query",
        message: format!("query parameter {field}: {why}"),
        field: Some(field.to_owned()),
    }
}

fn time(field: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            bad_param(
                field,
                format!("{value:?} is not an RFC 3339 time ({e}); e.g. 2026-05-01T08:00:00Z"),
            )
        })
}

fn step(value: &str) -> Result<std::time::Duration, ApiError> {
    let step = reserve::duration::parse_duration(value).map_err(|e| bad_param("step", e))?;
    if step.is_zero() {
        return Err(bad_param("step", "must be more than zero"));
    }
    Ok(step)
}
