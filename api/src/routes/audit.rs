//! `GET /api/v1/audit`: who acknowledged which alerts, how and when
//! (docs/design.md#acknowledging-from-a-phone). It names people, so admins only.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::{Caller, RowScope};
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiQuery;

/// Rows a page holds when the caller does not say, and at most.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditQuery {
    /// Page: only entries with an id below this.
    before_id: Option<i64>,
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
}

/// One recorded action.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// A contact's name (links, SMS replies) or a token's name.
    pub actor: String,
    /// How: `link` (a signed link), `sms` (an SMS reply) or `token` (the API).
    pub via: String,
    /// What: `ack`, `drill_start`, `drill_end`, `transfer`.
    pub action: String,
    pub alert_ids: Vec<i64>,
    /// The note, or the SMS's text.
    pub detail: String,
}

/// The audit log, newest first: every acknowledgement, by whom, how and when. Admins
/// only (it names people), public reads or not.
#[utoipa::path(get, path = "/api/v1/audit", tag = "alerts",
    params(AuditQuery),
    responses(
        (status = 200, body = Vec<AuditEntry>),
        (status = 400, description = "Unknown query parameter or value", body = ErrorBody),
        (status = 401, description = "A token is needed, public reads or not", body = ErrorBody),
        (status = 403, description = "Not an admin's token", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state), fields(caller = caller.name()))]
pub(super) async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    if caller.row_scope()? != RowScope::All {
        return Err(ApiError::Forbidden(format!(
            "{:?} is an officer; the audit log is for admins",
            caller.name()
        )));
    }
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let before_id = query.before_id;
    let rows = state.with_store(move |s| s.audit(before_id, limit)).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| AuditEntry {
                id: r.id,
                at: r.at,
                actor: r.actor,
                via: r.via,
                action: r.action,
                alert_ids: r.alert_ids,
                detail: r.detail,
            })
            .collect(),
    ))
}
