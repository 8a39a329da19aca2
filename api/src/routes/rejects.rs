//! `GET /api/v1/rejects`: what ingest refused, from the store's bounded reject log.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::{Caller, RowScope};
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

/// The newest rejected messages and counts by reason. Rejects hold raw gateway payloads,
/// so a token is needed even with public reads: an admin sees every reject, an officer
/// those among the newest 1000 whose topic names one of its towns, a viewer none.
/// Counts by reason are the service's, whoever asks.
#[utoipa::path(get, path = "/api/v1/rejects", tag = "ingest",
    params(RejectsQuery),
    responses(
        (status = 200, body = RejectLog),
        (status = 400, description = "Bad `limit`", body = ErrorBody),
        (status = 401, description = "A token is needed, public reads or not", body = ErrorBody),
        (status = 403, description = "A viewer's token", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state), fields(caller = caller.name()))]
pub(super) async fn rejects(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<RejectsQuery>,
) -> Result<Json<RejectLog>, ApiError> {
    let scope = caller.row_scope()?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit > MAX_LIMIT {
        return Err(ApiError::BadRequest {
            code: "invalid_query",
            message: format!("query parameter limit: at most {MAX_LIMIT}, got {limit}"),
            field: Some("limit".into()),
        });
    }
    // An officer's rejects are picked from the newest MAX_LIMIT: the log has no town
    // column (a reject's town may not even exist), only the topic names one.
    let read = match scope {
        RowScope::All => limit,
        RowScope::Towns(_) => MAX_LIMIT,
    };
    let (counts, records) = state
        .with_store(move |store| Ok((store.reject_counts()?, store.recent_rejects(read)?)))
        .await?;
    Ok(Json(RejectLog {
        counts: counts.into_iter().collect(),
        rejects: records
            .into_iter()
            .filter(|r| scope.covers(topic_town(&r.topic)))
            .take(limit)
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

/// The town a topic names (`stockpile/v1/{town}/…`), if it has that shape.
fn topic_town(topic: &str) -> Option<&str> {
    let mut levels = topic.split('/');
    match (levels.next(), levels.next(), levels.next()) {
        (Some("stockpile"), Some("v1"), Some(town)) => Some(town),
        _ => None,
    }
}
