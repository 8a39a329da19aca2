//! Transfers (issue 15, docs/design.md#transfers): the record of mutual aid. An officer
//! of the sending town (or an admin) records that stock moved from one facility to
//! another; anyone who may read the figures lists them.
//!
//! A transfer is a record, not a reading: it changes no figure. For a facility with a
//! gateway the next readings are the truth of what it holds, and they show the drop and
//! the rise. The note and who recorded it name people, so a caller without a token does
//! not see them, as it does not see who acknowledged an alert.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use reserve::registry::{CategoryIdx, FacilityIdx, FacilityKind, Registry};
use serde::{Deserialize, Serialize};
use store::{NewTransfer, TransferRow};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, Entity, ErrorBody};
use crate::extract::{ApiJson, ApiQuery};

/// The most of a category one transfer may move, in its unit: a billion litres is a
/// thousand tankers' worth of a thousand tonnes; anything more is a typo.
const MAX_QUANTITY: f64 = 1e9;
/// The longest note kept, in characters.
const MAX_NOTE_CHARS: usize = 1000;
/// Rows a list holds when the caller does not say, and at most.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// A transfer to record.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// The sending facility: a warehouse, or a water point for the water category.
    #[schema(example = "dh-wh1")]
    pub from: String,
    /// The receiving facility, of another or the same town.
    #[schema(example = "js-wp1")]
    pub to: String,
    /// A category id the sending and receiving facilities hold.
    #[schema(example = "water")]
    pub category: String,
    /// In the category's unit: above 0, at most 1,000,000,000.
    #[schema(example = 2000.0)]
    pub quantity: f64,
    /// How and why, for people: at most 1000 characters.
    #[serde(default)]
    #[schema(example = "Tanker 京A-12345, driver Wang")]
    pub note: String,
}

/// A recorded transfer.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransferView {
    pub id: i64,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    pub from: String,
    pub from_town: String,
    pub to: String,
    pub to_town: String,
    pub category: String,
    /// In the category's unit.
    pub quantity: f64,
    /// The note; left out without a token (it may name people).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The name of the token it was recorded with; left out without a token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded_by: Option<String>,
}

impl TransferView {
    fn of(row: TransferRow, people: bool) -> TransferView {
        let t = row.transfer;
        TransferView {
            id: row.id,
            recorded_at: t.at,
            from: t.from_facility,
            from_town: t.from_town,
            to: t.to_facility,
            to_town: t.to_town,
            category: t.category,
            quantity: t.quantity,
            note: people.then_some(t.note),
            recorded_by: people.then_some(t.recorded_by),
        }
    }
}

/// Records a transfer of stock between two facilities, typically mutual aid inside a
/// cluster. Officers of the sending facility's town, admins. It changes no figure: the
/// facilities' next readings show what they hold. Recorded in the audit log.
#[utoipa::path(post, path = "/api/v1/transfers", tag = "clusters",
    request_body = TransferRequest,
    responses(
        (status = 201, description = "Recorded", body = TransferView),
        (status = 400, description = "Body is not JSON (`invalid_json`)", body = ErrorBody),
        (status = 401, description = "A token is needed", body = ErrorBody),
        (status = 403, description = "Not an officer of the sending facility's town, nor an admin", body = ErrorBody),
        (status = 404, description = "Unknown facility (`unknown_facility`) or category (`unknown_category`)", body = ErrorBody),
        (status = 413, description = "Body over 16 KiB (`body_too_large`)", body = ErrorBody),
        (status = 415, description = "Body is not `application/json`", body = ErrorBody),
        (status = 422, description = "A missing field, a quantity out of bounds, a facility that cannot hold the category, `from` equal to `to`, a note too long; `field` names it", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state, body), fields(caller = caller.name()))]
pub(super) async fn record_transfer(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<ApiJson<TransferRequest>, ApiError>,
) -> Result<(StatusCode, Json<TransferView>), ApiError> {
    // Before the body: a viewer learns it may not record whatever it sent.
    may_record(&caller)?;
    let ApiJson(request) = body?;
    let transfer = {
        let ledger = state.ledger();
        checked(ledger.registry(), &caller, request)?
    };
    let remote = crate::audit::origin();
    let row = state
        .with_store(move |store| store.record_transfer(&transfer, &remote))
        .await?;
    let t = &row.transfer;
    tracing::info!(
        message = "Transfer recorded.",
        id = row.id,
        from = %t.from_facility,
        to = %t.to_facility,
        category = %t.category,
        quantity = t.quantity,
        by = %t.recorded_by
    );
    Ok((StatusCode::CREATED, Json(TransferView::of(row, true))))
}

/// Officers and admins record transfers; which towns an officer may send from is
/// checked once the sending facility is known.
fn may_record(caller: &Caller) -> Result<(), ApiError> {
    match caller {
        Caller::Public => Err(ApiError::MissingToken),
        Caller::Token {
            role: Role::Viewer,
            name,
            ..
        } => Err(ApiError::Forbidden(format!(
            "{name:?} has role viewer; recording a transfer needs an officer of the sending town or admin"
        ))),
        Caller::Token { .. } => Ok(()),
    }
}

/// The request checked against the registry and the caller's towns, as it will be
/// stored.
fn checked(
    registry: &Registry,
    caller: &Caller,
    request: TransferRequest,
) -> Result<NewTransfer, ApiError> {
    let from = facility(registry, &request.from)?;
    let from_town = registry.town(registry.facility(from).town).id.clone();
    caller.require_town(&from_town)?;
    let to = facility(registry, &request.to)?;
    let category = registry
        .category_idx(&request.category)
        .ok_or_else(|| ApiError::not_found(Entity::Category, &request.category))?;
    if from == to {
        return Err(ApiError::invalid_field(
            "to",
            "is the sending facility; a transfer moves stock between two facilities",
        ));
    }
    holds(registry, from, category, "from")?;
    holds(registry, to, category, "to")?;
    let q = request.quantity;
    if !(q.is_finite() && q > 0.0 && q <= MAX_QUANTITY) {
        return Err(ApiError::invalid_field(
            "quantity",
            format!("{q} is not above 0 and at most {MAX_QUANTITY:e}"),
        ));
    }
    if request.note.chars().count() > MAX_NOTE_CHARS {
        return Err(ApiError::invalid_field(
            "note",
            format!("is longer than {MAX_NOTE_CHARS} characters"),
        ));
    }
    Ok(NewTransfer {
        at: Utc::now(),
        from_facility: registry.facility(from).id.to_string(),
        from_town: from_town.to_string(),
        to_facility: registry.facility(to).id.to_string(),
        to_town: registry.town(registry.facility(to).town).id.to_string(),
        category: registry.categories[category.index()].id.to_string(),
        quantity: q,
        note: request.note,
        recorded_by: caller.name().to_owned(),
    })
}

fn facility(registry: &Registry, id: &str) -> Result<FacilityIdx, ApiError> {
    registry
        .facility_idx(id)
        .ok_or_else(|| ApiError::not_found(Entity::Facility, id))
}

/// Whether facility `f` (named by `field`) can hold `category`: a warehouse any, a
/// water point the water category, a power unit none (its fuel is not a category).
fn holds(
    registry: &Registry,
    f: FacilityIdx,
    category: CategoryIdx,
    field: &str,
) -> Result<(), ApiError> {
    let facility = registry.facility(f);
    let held = match facility.kind {
        FacilityKind::Warehouse => true,
        FacilityKind::WaterPoint { .. } => registry.water_category == Some(category),
        FacilityKind::PowerUnit { .. } => false,
    };
    if held {
        return Ok(());
    }
    Err(ApiError::invalid_field(
        field,
        format!(
            "{} is a {} and holds no {}",
            facility.id,
            facility.kind.name(),
            registry.categories[category.index()].id
        ),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct TransfersQuery {
    /// Only transfers this town (id) sent or received.
    town: Option<String>,
    /// Only transfers recorded at or after this time (RFC 3339).
    since: Option<String>,
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
}

/// Recorded transfers, newest first. Without a token (public reads), the note and who
/// recorded it are left out.
#[utoipa::path(get, path = "/api/v1/transfers", tag = "clusters",
    params(TransfersQuery),
    responses(
        (status = 200, body = Vec<TransferView>),
        (status = 400, description = "Unknown query parameter, town or a malformed value (`invalid_query`, `field` names it)", body = ErrorBody),
        (status = 401, description = "A token is needed", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state))]
pub(super) async fn list_transfers(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<TransfersQuery>,
) -> Result<Json<Vec<TransferView>>, ApiError> {
    if let Some(town) = &query.town
        && state.ledger().registry().town_idx(town).is_none()
    {
        return Err(bad_query("town", format!("unknown town {town:?}")));
    }
    let since = query.since.as_deref().map(since).transpose()?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let town = query.town;
    let rows = state
        .with_store(move |store| store.transfers(town.as_deref(), since, limit))
        .await?;
    let people = matches!(caller, Caller::Token { .. });
    Ok(Json(
        rows.into_iter()
            .map(|row| TransferView::of(row, people))
            .collect(),
    ))
}

fn since(value: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            bad_query(
                "since",
                format!("{value:?} is not an RFC 3339 time ({e}); e.g. 2026-11-24T08:00:00+08:00"),
            )
        })
}

fn bad_query(field: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest {
        code: "invalid_query",
        message: format!("query parameter {field}: {why}"),
        field: Some(field.to_owned()),
    }
}
