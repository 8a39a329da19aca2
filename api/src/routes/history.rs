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
/// Shortest `step`: readings are stored to the millisecond, but a wall display needs no
/// point per second fraction, and a step under a millisecond divided by zero.
const MIN_STEP: std::time::Duration = std::time::Duration::from_secs(1);
/// Most steps one range may hold: the longest range for a step is this many steps
/// (2 h 46 min at `1s`, 6.9 days at `1m`, 416 days at `1h`).
const MAX_STEPS: u128 = 10_000;
/// Longest range without a `step`: every reading is a point.
const MAX_RAW_RANGE_H: i64 = 7 * 24;
/// Most points in one answer, all categories together (a few MB of JSON).
const MAX_POINTS: usize = 100_000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct HistoryParams {
    /// One category (id); every category when absent.
    category: Option<String>,
    /// Start, inclusive (RFC 3339); 24 hours before `to` when absent. Without `step`
    /// the range is at most 7 days.
    from: Option<String>,
    /// End, exclusive (RFC 3339); now when absent.
    to: Option<String>,
    /// Thin to the last point of each step, e.g. `15m`, `1h` (units `ms`, `s`, `m`,
    /// `h`, `d`; sums like `1h30m`). At least `1s`; the range holds at most 10,000
    /// steps, so the longest range is 10,000 × `step`.
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
///
/// Bounds: `step` at least 1 s and at most 10,000 steps per range; without `step` a
/// range of at most 7 days; at most 100,000 points per answer (all categories) and
/// 1,000,000 readings read to compute it. At most 4 history or scenario requests run
/// at once (more get 503 `overloaded`).
#[utoipa::path(get, path = "/api/v1/towns/{id}/history", tag = "towns",
    params(("id" = String, Path, description = "Town id"), HistoryParams),
    responses(
        (status = 200, body = HistoryBody),
        (status = 400, description = "A bad time or step, a step under 1 s, more than 10,000 steps, a range over 7 days without a step (`invalid_query`, `field` names the parameter), an empty range (`empty_range`)", body = ErrorBody),
        (status = 401, description = "A token is needed", body = ErrorBody),
        (status = 404, description = "Unknown town or category", body = ErrorBody),
        (status = 422, description = "The range holds more than 1,000,000 readings (`too_many_readings`) or the answer more than 100,000 points (`too_many_points`): ask for a shorter range or a longer step", body = ErrorBody),
        (status = 503, description = "InfluxDB did not answer (`unavailable`), or too many expensive requests at once (`overloaded`)", body = ErrorBody),
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
        Some(t) => ApiError::query_time("to", t)?,
        None => Utc::now(),
    };
    let from = match &params.from {
        Some(t) => ApiError::query_time("from", t)?,
        None => to
            .checked_sub_signed(Duration::hours(DEFAULT_RANGE_H))
            .ok_or_else(|| ApiError::invalid_query("to", "too early to look a day back from"))?,
    };
    let step = match &params.step {
        Some(s) => Some(step(s)?),
        None => None,
    };
    check_range(from, to, step)?;
    let query = HistoryQuery {
        town,
        category,
        from,
        to,
        step,
    };
    let history = source.history(&registry, &query).await?;
    let points: usize = history.categories.iter().map(|c| c.points.len()).sum();
    if points > MAX_POINTS {
        return Err(ApiError::Unprocessable {
            code: "too_many_points",
            message: format!(
                "the answer would hold {points} points, more than {MAX_POINTS}; \
                 ask for a shorter range or a longer step"
            ),
        });
    }
    Ok(Json(history))
}

/// The bounds on a range and its step; an empty range is the store's to report.
fn check_range(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    step: Option<std::time::Duration>,
) -> Result<(), ApiError> {
    let Ok(range) = (to - from).to_std() else {
        return Ok(());
    };
    match step {
        Some(step) => {
            let steps = range.as_millis().div_ceil(step.as_millis().max(1));
            if steps > MAX_STEPS {
                return Err(ApiError::invalid_query(
                    "step",
                    format!(
                        "the range holds {steps} steps of {}, more than {MAX_STEPS}; \
                         ask for a longer step or a shorter range",
                        humantime(step)
                    ),
                ));
            }
        }
        None => {
            if range > std::time::Duration::from_secs(MAX_RAW_RANGE_H as u64 * 3600) {
                return Err(ApiError::invalid_query(
                    "from",
                    format!("a range longer than {MAX_RAW_RANGE_H} h needs a step (e.g. step=1h)"),
                ));
            }
        }
    }
    Ok(())
}

/// A step as the caller could write it back: whole seconds, else milliseconds.
fn humantime(step: std::time::Duration) -> String {
    if step.subsec_millis() == 0 {
        format!("{}s", step.as_secs())
    } else {
        format!("{}ms", step.as_millis())
    }
}

fn step(value: &str) -> Result<std::time::Duration, ApiError> {
    let step =
        reserve::duration::parse_duration(value).map_err(|e| ApiError::invalid_query("step", e))?;
    if step < MIN_STEP {
        return Err(ApiError::invalid_query(
            "step",
            format!("{value:?} is shorter than the shortest step, 1s"),
        ));
    }
    Ok(step)
}
