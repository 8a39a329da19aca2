//! `GET /api/v1/rejects`: what ingest refused, from the store's bounded reject log.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiQuery;

/// Rejects listed when `limit` is not given.
const DEFAULT_LIMIT: usize = 100;
/// Most rejects one request lists.
const MAX_LIMIT: usize = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct RejectsQuery {
    /// How many of the newest rejects to list (default 100, at most 1000).
    limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RejectLog {
    /// Rejects per reason since the store was created, including those the bounded log
    /// no longer holds.
    pub counts: BTreeMap<String, u64>,
    /// Newest first.
    pub rejects: Vec<RejectView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RejectView {
    /// Received at, by our clock.
    pub at: DateTime<Utc>,
    pub topic: String,
    /// Stable id: `not_json`, `unknown_town`, `wrong_kind`, `too_large`, …
    pub reason: String,
    pub detail: String,
    /// The payload's head as text (invalid UTF-8 replaced).
    pub payload: String,
    /// Bytes received; more than `payload` holds when it was cut.
    pub payload_len: usize,
}

/// The newest rejected messages and counts by reason.
#[utoipa::path(get, path = "/api/v1/rejects", tag = "ingest",
    params(RejectsQuery),
    responses(
        (status = 200, body = RejectLog),
        (status = 400, description = "Bad `limit`", body = ErrorBody),
        (status = 401, description = "A token is needed", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state))]
pub(super) async fn rejects(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<RejectsQuery>,
) -> Result<Json<RejectLog>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit > MAX_LIMIT {
        return Err(ApiError::BadRequest {
            code: "invalid_query",
            message: format!("query parameter limit: at most {MAX_LIMIT}, got {limit}"),
            field: Some("limit".into()),
        });
    }
    let (counts, records) = state
        .with_store(move |store| Ok((store.reject_counts()?, store.recent_rejects(limit)?)))
        .await?;
    Ok(Json(RejectLog {
        counts: counts.into_iter().collect(),
        rejects: records
            .into_iter()
            .map(|r| RejectView {
                at: r.at,
                topic: r.topic,
                reason: r.reason,
                detail: r.detail,
                payload: r.payload,
                payload_len: r.payload_len,
            })
            .collect(),
    }))
}
