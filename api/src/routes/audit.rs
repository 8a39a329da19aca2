//! `GET /api/v1/audit` (docs/design.md#audit): who changed what — acknowledged,
//! silenced, counted, moved, reloaded, drilled —, when, how, in which towns and from
//! where. It names people, so a token is needed: admins read every entry, officers the
//! entries of their towns.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use store::AuditFilter;
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
    /// Only entries that touched this town (id). An officer reads only its towns.
    town: Option<String>,
    /// Only entries recorded at or after this time (RFC 3339).
    since: Option<String>,
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
    /// How: `link` (a signed link), `sms` (an SMS reply), `token` (the API) or
    /// `signal` (SIGHUP on the server).
    pub via: String,
    /// What: `ack`, `silence`, `silence_end`, `sheltered`, `manual_reading`,
    /// `transfer`, `drill_start`, `drill_end`, `registry_reload`.
    pub action: String,
    /// The towns (ids) it touched; empty for a city-wide action (admins only).
    pub towns: Vec<String>,
    pub alert_ids: Vec<i64>,
    /// The note, the SMS's text, the figures entered.
    pub detail: String,
    /// Where the request came from: the connection's peer, and whom a proxy said it
    /// forwarded for (as the proxy said it). Empty when not from the network.
    pub remote: String,
}

/// The audit log, newest first: every mutation, by whom, how, when, in which towns and
/// from where. Admins read every entry; officers the entries of their towns (a
/// city-wide action such as a registry reload is for admins).
#[utoipa::path(get, path = "/api/v1/audit", tag = "alerts",
    params(AuditQuery),
    responses(
        (status = 200, body = Vec<AuditEntry>),
        (status = 400, description = "Unknown query parameter or value, an unknown town, a time that is not RFC 3339", body = ErrorBody),
        (status = 401, description = "A token is needed, public reads or not", body = ErrorBody),
        (status = 403, description = "A viewer's token, or an officer asking for another town", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state), fields(caller = caller.name()))]
pub(super) async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let filter = AuditFilter {
        towns: towns_read(&state, &caller, query.town)?,
        since: query
            .since
            .as_deref()
            .map(|v| ApiError::query_time("since", v))
            .transpose()?,
        before_id: query.before_id,
        limit: query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT),
    };
    let rows = state.with_store(move |s| s.audit(&filter)).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| AuditEntry {
                id: r.id,
                at: r.entry.at,
                actor: r.entry.actor,
                via: r.entry.via,
                action: r.entry.action,
                towns: r.entry.towns,
                alert_ids: r.entry.alert_ids,
                detail: r.entry.detail,
                remote: r.entry.remote,
            })
            .collect(),
    ))
}

/// The towns whose entries the caller reads: `None` for every entry (an admin without
/// `town`), else the one asked for or an officer's own.
fn towns_read(
    state: &AppState,
    caller: &Caller,
    town: Option<String>,
) -> Result<Option<Vec<String>>, ApiError> {
    let scope = caller.row_scope()?;
    if let Some(id) = &town
        && state.ledger().registry().town_idx(id).is_none()
    {
        return Err(ApiError::invalid_query(
            "town",
            format!("unknown town {id:?}"),
        ));
    }
    match (scope, town) {
        (RowScope::All, town) => Ok(town.map(|t| vec![t])),
        (RowScope::Towns(own), None) => Ok(Some(own.iter().map(ToString::to_string).collect())),
        (scope @ RowScope::Towns(_), Some(town)) if scope.covers(Some(&town)) => {
            Ok(Some(vec![town]))
        }
        (RowScope::Towns(_), Some(town)) => Err(ApiError::Forbidden(format!(
            "{:?} is an officer of other towns; the audit entries of {town:?} are not theirs \
             to read",
            caller.name()
        ))),
    }
}
