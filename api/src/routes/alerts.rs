//! Alerts, their acknowledgement, silences and the notification outbox: routed only
//! when [`AppState::with_alerts`] plugged the alert service in.
//!
//! Who may change what: an officer acknowledges alerts of its own towns and silences
//! only within them (a silence must name one of its towns, and it may end only such
//! silences); an admin does anything; a viewer reads.

use alerts::{
    AlertFilter, AlertStatus, AlertView, AlertsHandle, NewSilence, NotificationFilter,
    NotificationView, Rule, Severity, SilenceView,
};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use reserve::TownId;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::ack::{self, Via};
use crate::auth::{Caller, Role, RowScope};
use crate::error::{ApiError, Entity, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};

fn handle(state: &AppState) -> Result<&AlertsHandle, ApiError> {
    state
        .alerts()
        .ok_or_else(|| ApiError::Internal("alert routes are served without alerts".into()))
}

/// An id in a path: anything but a number is an id no alert or silence has.
fn numeric_id(id: &str, kind: Entity) -> Result<i64, ApiError> {
    id.parse().map_err(|_| ApiError::not_found(kind, id))
}

/// A town id from a query, checked against the registry (400 naming `town`).
fn known_town(state: &AppState, town: Option<String>) -> Result<Option<String>, ApiError> {
    match town {
        Some(id) if state.ledger().registry().town_idx(&id).is_none() => {
            Err(ApiError::BadRequest {
                code: "invalid_query",
                message: format!("query parameter town: unknown town {id:?}"),
                field: Some("town".into()),
            })
        }
        other => Ok(other),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct AlertsQuery {
    /// Only alerts in this state.
    state: Option<AlertStatus>,
    /// Only pending and firing alerts (ignored when `state` is given).
    open: Option<bool>,
    /// Only alerts of this town (id).
    town: Option<String>,
    severity: Option<Severity>,
    rule: Option<Rule>,
    /// Page: only alerts with an id below this.
    before_id: Option<i64>,
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
}

/// Alerts, newest first; filter by state, town, severity, rule. Without a token (public
/// reads), acknowledgements show when, not who or why.
#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts",
    params(AlertsQuery),
    responses(
        (status = 200, body = Vec<AlertView>),
        (status = 400, description = "Unknown query parameter or value", body = ErrorBody),
        (status = 401, description = "A token is needed", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state))]
pub(super) async fn list_alerts(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<AlertsQuery>,
) -> Result<Json<Vec<AlertView>>, ApiError> {
    let filter = AlertFilter {
        state: query.state,
        open: query.open.unwrap_or(false),
        town: known_town(&state, query.town)?,
        severity: query.severity,
        rule: query.rule,
        before_id: query.before_id,
        limit: query.limit.unwrap_or(0),
    };
    let alerts = handle(&state)?.list_alerts(&filter).await?;
    Ok(Json(match caller {
        Caller::Public => alerts.into_iter().map(AlertView::without_people).collect(),
        Caller::Token { .. } => alerts,
    }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// What is being done about it; at most 1000 characters are kept.
    #[serde(default)]
    #[schema(example = "Truck with 2000 L on its way")]
    pub note: String,
}

/// Acknowledges an alert: its reminders and escalation stop. Officers may acknowledge
/// alerts of their own towns, admins any. Acknowledging again keeps the first
/// acknowledgement. Answers the alert.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/ack", tag = "alerts",
    params(("id" = i64, Path, description = "Alert id")),
    request_body = AckRequest,
    responses(
        (status = 200, description = "The alert, acknowledged", body = AlertView),
        (status = 400, description = "Body is not JSON", body = ErrorBody),
        (status = 401, description = "A token is needed", body = ErrorBody),
        (status = 403, description = "Not an officer of the alert's town, nor an admin", body = ErrorBody),
        (status = 404, description = "Unknown alert (`unknown_alert`)", body = ErrorBody),
        (status = 413, description = "Body over 16 KiB (`body_too_large`)", body = ErrorBody),
        (status = 415, description = "Body is not `application/json`", body = ErrorBody),
        (status = 422, description = "Body of the wrong shape", body = ErrorBody),
        (status = 503, description = "The alert engine is not running", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state, body), fields(caller = caller.name()))]
pub(super) async fn ack_alert(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    // Decoded after the permission check, as for the sheltered count.
    body: Result<ApiJson<AckRequest>, ApiError>,
) -> Result<Json<AlertView>, ApiError> {
    let alerts = handle(&state)?;
    let id = numeric_id(&id, Entity::Alert)?;
    let alert = alerts
        .alert(id)
        .await?
        .ok_or_else(|| ApiError::not_found(Entity::Alert, &id.to_string()))?;
    caller.require_town(&town_id(&alert.town)?)?;
    let ApiJson(request) = body?;
    let first = alert.acknowledged.is_none();
    let acked = alerts.ack(id, caller.name(), &request.note).await?;
    tracing::info!(message = "Alert acknowledged.", alert = id, town = %acked.town, by = caller.name());
    if first {
        ack::record(
            &state,
            caller.name(),
            Via::Token,
            std::slice::from_ref(&acked),
            &request.note,
        )
        .await;
    }
    Ok(Json(acked))
}

/// A town id the alert service gave us; it came from the registry, so it parses.
fn town_id(town: &str) -> Result<TownId, ApiError> {
    TownId::parse(town).map_err(|e| ApiError::Internal(format!("town id {town:?}: {e}")))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct SilencesQuery {
    /// Also silences that have ended.
    include_expired: Option<bool>,
}

/// Silences in force (or all with `include_expired=true`). Without a token (public
/// reads), who made a silence and why are left out.
#[utoipa::path(get, path = "/api/v1/silences", tag = "alerts",
    params(SilencesQuery),
    responses(
        (status = 200, body = Vec<SilenceView>),
        (status = 400, description = "Unknown query parameter or value", body = ErrorBody),
        (status = 401, description = "A token is needed", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state))]
pub(super) async fn list_silences(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<SilencesQuery>,
) -> Result<Json<Vec<SilenceView>>, ApiError> {
    let include_expired = query.include_expired.unwrap_or(false);
    let silences = handle(&state)?.silences(include_expired).await?;
    Ok(Json(match caller {
        Caller::Public => silences
            .into_iter()
            .map(SilenceView::without_people)
            .collect(),
        Caller::Token { .. } => silences,
    }))
}

/// A silence to create: alerts matching every matcher given notify nobody until
/// `until`. At least one of town, facility and rule; an officer must name one of its
/// towns.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SilenceRequest {
    /// Town id.
    pub town: Option<String>,
    /// Facility id.
    pub facility: Option<String>,
    pub rule: Option<Rule>,
    /// When it ends (RFC 3339), in the future.
    pub until: DateTime<Utc>,
    #[serde(default)]
    pub comment: String,
}

/// Creates a silence. Admins may silence anything; officers only within their own
/// towns (the silence must name one). Answers the silence.
#[utoipa::path(post, path = "/api/v1/silences", tag = "alerts",
    request_body = SilenceRequest,
    responses(
        (status = 201, description = "The silence", body = SilenceView),
        (status = 400, description = "Body is not JSON, or no matcher", body = ErrorBody),
        (status = 401, description = "A token is needed", body = ErrorBody),
        (status = 403, description = "A viewer, or an officer not naming one of its towns", body = ErrorBody),
        (status = 413, description = "Body over 16 KiB (`body_too_large`)", body = ErrorBody),
        (status = 415, description = "Body is not `application/json`", body = ErrorBody),
        (status = 422, description = "Body of the wrong shape or an unknown town, facility, past `until`; `field` names it", body = ErrorBody),
        (status = 503, description = "The alert engine is not running", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state, body), fields(caller = caller.name()))]
pub(super) async fn add_silence(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<ApiJson<SilenceRequest>, ApiError>,
) -> Result<(StatusCode, Json<SilenceView>), ApiError> {
    let alerts = handle(&state)?;
    require_silencer(&caller)?;
    let ApiJson(request) = body?;
    require_silence_town(&caller, request.town.as_deref())?;
    let silence = alerts
        .add_silence(NewSilence {
            town: request.town,
            facility: request.facility,
            rule: request.rule,
            until: request.until,
            created_by: caller.name().to_owned(),
            comment: request.comment,
        })
        .await?;
    tracing::info!(
        message = "Silence added.",
        silence = silence.id,
        by = caller.name()
    );
    audit_silence(&state, &caller, "silence", &silence).await;
    Ok((StatusCode::CREATED, Json(silence)))
}

/// Ends a silence now. Admins may end any; officers those of their own towns.
#[utoipa::path(delete, path = "/api/v1/silences/{id}", tag = "alerts",
    params(("id" = i64, Path, description = "Silence id")),
    responses(
        (status = 204, description = "Ended"),
        (status = 401, description = "A token is needed", body = ErrorBody),
        (status = 403, description = "A viewer, or an officer and not a silence of its towns", body = ErrorBody),
        (status = 404, description = "Unknown silence (`unknown_silence`)", body = ErrorBody),
        (status = 503, description = "The alert engine is not running", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state), fields(caller = caller.name()))]
pub(super) async fn delete_silence(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let alerts = handle(&state)?;
    require_silencer(&caller)?;
    let id = numeric_id(&id, Entity::Silence)?;
    let silence = alerts
        .silences(true)
        .await?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| ApiError::not_found(Entity::Silence, &id.to_string()))?;
    require_silence_town(&caller, silence.town.as_deref())?;
    if !alerts.delete_silence(id).await? {
        return Err(ApiError::not_found(Entity::Silence, &id.to_string()));
    }
    tracing::info!(message = "Silence ended.", silence = id, by = caller.name());
    audit_silence(&state, &caller, "silence_end", &silence).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The audit entry of a silence made or ended: its matchers, until when, and why.
async fn audit_silence(state: &AppState, caller: &Caller, action: &'static str, s: &SilenceView) {
    let rule = s.rule.map(|r| r.as_str().to_owned());
    let matchers = [
        ("town", &s.town),
        ("facility", &s.facility),
        ("rule", &rule),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
    .collect::<Vec<_>>()
    .join(" ");
    let comment = s.comment.as_deref().unwrap_or_default();
    let detail = format!("silence {}: {matchers} until {}: {comment}", s.id, s.until);
    let action = crate::audit::Action {
        actor: caller.name().to_owned(),
        via: "token",
        action,
        towns: s.town.iter().cloned().collect(),
        detail,
        ..crate::audit::Action::default()
    };
    crate::audit::record(state, action).await;
}

/// Silences are made by officers and admins.
fn require_silencer(caller: &Caller) -> Result<(), ApiError> {
    match caller {
        Caller::Public => Err(ApiError::MissingToken),
        Caller::Token {
            role: Role::Viewer,
            name,
            ..
        } => Err(ApiError::Forbidden(format!(
            "{name:?} has role viewer; silences need officer or admin"
        ))),
        Caller::Token { .. } => Ok(()),
    }
}

/// An officer's silence must be confined to one of its towns: one without a town would
/// mute other towns' alerts too.
fn require_silence_town(caller: &Caller, town: Option<&str>) -> Result<(), ApiError> {
    if let Caller::Token {
        role: Role::Admin, ..
    } = caller
    {
        return Ok(());
    }
    match town {
        // An unknown town is the alert service's to report (422 naming `town`).
        Some(town) => match TownId::parse(town) {
            Ok(town) => caller.require_town(&town),
            Err(_) => Ok(()),
        },
        None => Err(ApiError::Forbidden(format!(
            "officer {:?} may only silence alerts of its own towns: give \"town\"",
            caller.name()
        ))),
    }
}

/// A notification's delivery state.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Sent,
    Failed,
}

impl DeliveryStatus {
    fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Failed => "failed",
        }
    }
}

/// A notification channel.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelName {
    Email,
    Sms,
    Webhook,
}

impl ChannelName {
    fn as_str(self) -> &'static str {
        match self {
            ChannelName::Email => "email",
            ChannelName::Sms => "sms",
            ChannelName::Webhook => "webhook",
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct NotificationsQuery {
    state: Option<DeliveryStatus>,
    /// Only notifications about this town (id).
    town: Option<String>,
    channel: Option<ChannelName>,
    /// Only notifications about this alert.
    alert_id: Option<i64>,
    /// Page: only notifications with an id below this.
    before_id: Option<i64>,
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
}

/// Notifications sent, pending or failed, newest first. They name people (addresses,
/// phone numbers, message bodies), so a token is needed even with public reads: an
/// officer sees its towns' notifications, an admin all, a viewer none. A webhook's
/// recipient is shown as `scheme://host` only (its URL may hold a robot's token).
#[utoipa::path(get, path = "/api/v1/notifications", tag = "alerts",
    params(NotificationsQuery),
    responses(
        (status = 200, body = Vec<NotificationView>),
        (status = 400, description = "Unknown query parameter or value", body = ErrorBody),
        (status = 401, description = "A token is needed, public reads or not", body = ErrorBody),
        (status = 403, description = "A viewer's token, or an officer asking for another town", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state), fields(caller = caller.name()))]
pub(super) async fn list_notifications(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<NotificationsQuery>,
) -> Result<Json<Vec<NotificationView>>, ApiError> {
    let town = known_town(&state, query.town)?;
    let towns = match caller.row_scope()? {
        RowScope::All => None,
        RowScope::Towns(towns) => {
            if let Some(town) = &town
                && !towns.iter().any(|t| t.as_str() == town)
            {
                return Err(ApiError::Forbidden(format!(
                    "officer {:?} is not responsible for town {town}",
                    caller.name()
                )));
            }
            Some(towns.iter().map(|t| t.to_string()).collect())
        }
    };
    let filter = NotificationFilter {
        state: query.state.map(|s| s.as_str().to_owned()),
        town,
        towns,
        channel: query.channel.map(|c| c.as_str().to_owned()),
        alert_id: query.alert_id,
        before_id: query.before_id,
        limit: query.limit.unwrap_or(0),
    };
    Ok(Json(handle(&state)?.list_notifications(&filter).await?))
}
