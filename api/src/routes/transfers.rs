//! Transfers (issue 15, docs/design.md#transfers): the record of mutual aid. An officer
//! of the sending town (or an admin) records that stock moved from one facility to
//! another; anyone who may read the figures lists them.
//!
//! It goes to the ingest writer, the ledger's only writer of facility state, on the
//! queue counts by hand take (`live::ManualReadings`): at a facility counted by hand
//! (`report = "manual"`) it moves the figure, the sender's latest count less the
//! quantity and the receiver's plus, in the same commit as its row; a sender whose
//! count holds less is refused (409). At a facility with a gateway the next readings
//! are the truth of what it holds, and the consumption estimate is told to expect the
//! drop and the rise. The note and who recorded it name people, so a caller without a
//! token does not see them, as it does not see who acknowledged an alert.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use live::{ManualError, Transfer, TransferOutcome, TransferRefused};
use reserve::registry::{CategoryIdx, FacilityIdx, FacilityKind, Registry, Report};
use serde::{Deserialize, Serialize};
use store::{NewTransfer, TransferRow};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, Entity, ErrorBody, ErrorDetail};
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
    /// When recorded now: the sender's figure for the category after it, when it is
    /// counted by hand (its latest count less the quantity).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_stock_after: Option<f64>,
    /// When recorded now: the receiver's figure after it, when counted by hand.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_stock_after: Option<f64>,
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
            from_stock_after: None,
            to_stock_after: None,
        }
    }
}

/// Why a transfer was not recorded, as the client is told.
#[derive(Debug)]
pub(super) enum TransferNotRecorded {
    Api(ApiError),
    /// 409: what the ledger holds does not allow it.
    Conflict {
        code: &'static str,
        message: String,
    },
}

impl From<ApiError> for TransferNotRecorded {
    fn from(e: ApiError) -> TransferNotRecorded {
        TransferNotRecorded::Api(e)
    }
}

impl IntoResponse for TransferNotRecorded {
    fn into_response(self) -> Response {
        match self {
            TransferNotRecorded::Api(e) => e.into_response(),
            TransferNotRecorded::Conflict { code, message } => {
                let error = ErrorDetail {
                    code: code.to_owned(),
                    message,
                    field: None,
                };
                (StatusCode::CONFLICT, Json(ErrorBody { error })).into_response()
            }
        }
    }
}

/// Records a transfer of stock between two facilities, typically mutual aid inside a
/// cluster. Officers of the sending facility's town, admins. At a facility counted by
/// hand it moves the figure (the sender's latest count less the quantity, the
/// receiver's plus); at a facility with a gateway the next readings show it, and the
/// forecast takes the drop and the rise for a transfer, not use or a restock.
/// Recorded in the audit log.
#[utoipa::path(post, path = "/api/v1/transfers", tag = "clusters",
    request_body = TransferRequest,
    responses(
        (status = 201, description = "Recorded (and figures counted by hand moved)", body = TransferView),
        (status = 400, description = "Body is not JSON (`invalid_json`)", body = ErrorBody),
        (status = 401, description = "A token is needed", body = ErrorBody),
        (status = 403, description = "Not an officer of the sending facility's town, nor an admin", body = ErrorBody),
        (status = 404, description = "Unknown facility (`unknown_facility`) or category (`unknown_category`)", body = ErrorBody),
        (status = 409, description = "The sender is counted by hand and its latest count holds less than the quantity, or none (`insufficient_stock`); the receiver is counted by hand and would hold more than its capacity (`over_capacity`); the registry changed meanwhile (`registry_changed`). Nothing stored", body = ErrorBody),
        (status = 413, description = "Body over 16 KiB (`body_too_large`)", body = ErrorBody),
        (status = 415, description = "Body is not `application/json`", body = ErrorBody),
        (status = 422, description = "A missing field, a quantity out of bounds, a facility that cannot hold the category, `from` equal to `to`, a note too long; `field` names it", body = ErrorBody),
        (status = 503, description = "Not stored within the commit wait (the store is failing and ingest paused; the transfer is dropped, not stored later: send it again) or ingest not running (`unavailable`). No figure moved", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state, body), fields(caller = caller.name()))]
pub(super) async fn record_transfer(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<ApiJson<TransferRequest>, ApiError>,
) -> Result<(StatusCode, Json<TransferView>), TransferNotRecorded> {
    // Before the body: a viewer learns it may not record whatever it sent.
    may_record(&caller)?;
    let ApiJson(request) = body?;
    let (transfer, counted_by_hand) = {
        let ledger = state.ledger();
        checked(ledger.registry(), &caller, request)?
    };
    let remote = crate::audit::origin();
    let (row, outcome) = match state.manual_readings() {
        Some(writer) => through_writer(writer, transfer, remote).await?,
        // No ingest writer in this process (an API alone): the record only, which is
        // all a transfer between gateway facilities is until their readings come.
        None if !counted_by_hand => {
            let row = state
                .with_store(move |store| store.record_transfer(&transfer, &remote))
                .await?;
            (row, None)
        }
        None => {
            return Err(ApiError::Unavailable(
                "a transfer touching a facility counted by hand needs the ingest writer, \
                 which does not run in this process"
                    .into(),
            )
            .into());
        }
    };
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
    let mut view = TransferView::of(row, true);
    if let Some(outcome) = outcome {
        view.from_stock_after = outcome.from_after;
        view.to_stock_after = outcome.to_after;
    }
    Ok((StatusCode::CREATED, Json(view)))
}

/// Hands the transfer to the ingest writer and waits for its commit or refusal.
async fn through_writer(
    writer: &live::ManualReadings,
    transfer: NewTransfer,
    remote: String,
) -> Result<(TransferRow, Option<TransferOutcome>), TransferNotRecorded> {
    let submission = Transfer {
        at: transfer.at,
        from: transfer.from_facility.clone(),
        to: transfer.to_facility.clone(),
        category: transfer.category.clone(),
        quantity: transfer.quantity,
        note: transfer.note.clone(),
        recorded_by: transfer.recorded_by.clone(),
        remote,
    };
    let answer = writer.submit_transfer(submission).await.map_err(|e| {
        ApiError::Unavailable(match e {
            // The writer drops a transfer whose request gave up, so a retry cannot
            // move the stock twice.
            ManualError::NotStoredYet(wait) => format!(
                "the transfer was not stored within {} s: the store is failing and ingest \
                 is paused (see /readyz). Nothing of it is stored, nor will be: send it \
                 again once the store is back",
                wait.as_secs()
            ),
            ManualError::Stopped => "ingest is not running (the service is stopping)".into(),
        })
    })?;
    match answer {
        Ok(outcome) => {
            let row = TransferRow {
                id: outcome.id,
                transfer,
            };
            Ok((row, Some(outcome)))
        }
        Err(refused) => Err(refusal(&transfer, refused)),
    }
}

/// The 409 for a transfer the writer refused.
fn refusal(t: &NewTransfer, refused: TransferRefused) -> TransferNotRecorded {
    match refused {
        TransferRefused::Shortfall { held } => TransferNotRecorded::Conflict {
            code: "insufficient_stock",
            message: match held {
                Some(held) => format!(
                    "{} is counted by hand and its latest count holds {held} {}, less than the \
                     {} sent; enter a new count first if it holds more. Nothing was stored",
                    t.from_facility, t.category, t.quantity
                ),
                None => format!(
                    "{} is counted by hand and has no count of {} yet; enter a count first. \
                     Nothing was stored",
                    t.from_facility, t.category
                ),
            },
        },
        TransferRefused::OverCapacity { held, capacity } => TransferNotRecorded::Conflict {
            code: "over_capacity",
            message: format!(
                "{} is counted by hand and holds {held} {} of a capacity of {capacity}: \
                 receiving {} would exceed it. Nothing was stored",
                t.to_facility, t.category, t.quantity
            ),
        },
        TransferRefused::NotInRegistry(what) => TransferNotRecorded::Conflict {
            code: "registry_changed",
            message: format!(
                "{what} is no longer in the registry (reloaded meanwhile); nothing was stored"
            ),
        },
    }
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
/// stored, and whether either end is counted by hand.
fn checked(
    registry: &Registry,
    caller: &Caller,
    request: TransferRequest,
) -> Result<(NewTransfer, bool), ApiError> {
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
    let counted_by_hand = [from, to]
        .iter()
        .any(|&f| registry.facility(f).report == Report::Manual);
    let transfer = NewTransfer {
        at: Utc::now(),
        from_facility: registry.facility(from).id.to_string(),
        from_town: from_town.to_string(),
        to_facility: registry.facility(to).id.to_string(),
        to_town: registry.town(registry.facility(to).town).id.to_string(),
        category: registry.categories[category.index()].id.to_string(),
        quantity: q,
        note: request.note,
        recorded_by: caller.name().to_owned(),
    };
    Ok((transfer, counted_by_hand))
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
        FacilityKind::PowerUnit { .. } | FacilityKind::Shelter(_) => false,
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
        return Err(ApiError::invalid_query(
            "town",
            format!("unknown town {town:?}"),
        ));
    }
    let since = query
        .since
        .as_deref()
        .map(|v| ApiError::query_time("since", v))
        .transpose()?;
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
