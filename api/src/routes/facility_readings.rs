//! `POST /api/v1/facilities/{id}/readings`: a count entered by hand (issue 15).
//!
//! When a facility's gateway is down, an officer counts by hand and posts the figures
//! here, in the MQTT payload's JSON (one reading or an array). They are decoded and
//! validated by the same code as a gateway's (`reserve::wire`), refused for the same
//! reasons, and stored, committed and applied by the same ingest writer, which is the
//! ledger's only writer of facility state. The answer comes after the commit: a 201 is
//! never given for a count that is not in the file.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use live::{ManualError, ManualOutcome, ManualReadings};
use reserve::wire::{self, DecodeContext, Rejected, Topic, TopicKind};
use reserve::{FacilityId, Reading, TownId};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::{ApiError, Entity, ErrorBody};
use crate::extract::{ApiPath, JsonBytes};
use crate::model::{PowerMode, Pump};
use crate::{AppState, limits};

/// What a client is told to wait before sending a count again after a 503, in seconds.
const RETRY_AFTER_S: &str = "5";

/// A reading as a gateway publishes it over MQTT (docs/design.md#payloads): `ts` and
/// exactly one of `stock`, `water`, `power`, `shelter`, matching the facility's kind. The body is
/// one of these or an array of them.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"ts": "2026-11-24T05:00:00+08:00", "stock": {"water": 12000, "food": 5400}}))]
#[allow(dead_code)] // documents the body, which `reserve::wire` decodes
pub struct ReadingPayload {
    /// When counted: RFC 3339 with any offset, or epoch milliseconds. At most 5 minutes
    /// ahead of the server's clock, not older than the history retention.
    #[schema(value_type = String)]
    pub ts: String,
    pub seq: Option<u64>,
    /// Warehouses: category id → quantity, in the category's unit.
    pub stock: Option<BTreeMap<String, f64>>,
    pub water: Option<WaterPayload>,
    pub power: Option<PowerPayload>,
    /// Shelters: people inside (a check-in desk's count) and the mode.
    pub shelter: Option<ShelterPayload>,
}

#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // documents the body
pub struct WaterPayload {
    pub level_l: f64,
    pub pump: Pump,
    pub potable: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // documents the body
pub struct PowerPayload {
    pub fuel_l: f64,
    pub battery_pct: Option<f64>,
    pub state: PowerMode,
    pub burn_l_per_h: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // documents the body
pub struct ShelterPayload {
    /// A whole number of people, at most the shelter's `capacity`.
    pub occupancy: u64,
    /// `normal`, `activating`, `open` or `closed`.
    pub mode: String,
}

/// The body: one reading, or several (a day's counts at once).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // documents the body
pub enum ReadingsBody {
    One(ReadingPayload),
    Many(Vec<ReadingPayload>),
}

/// What was stored of a count.
#[derive(Debug, Serialize, ToSchema)]
pub struct ManualReadingsStored {
    pub facility: String,
    /// Readings stored now.
    pub stored: usize,
    /// Readings whose facility and `ts` were stored already, ignored: sending a count
    /// again is safe.
    pub duplicates: usize,
    /// The newest `ts` among them.
    pub latest_ts: Option<DateTime<Utc>>,
    /// Recorded with each reading: the name of the token used.
    pub entered_by: String,
}

/// A count refused: nothing of it was stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct RejectedReadingsBody {
    pub error: RejectedReadings,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RejectedReadings {
    /// `rejected_readings`.
    pub code: String,
    pub message: String,
    /// Every rejected reading, in the body's order.
    pub rejected: Vec<RejectedReading>,
}

/// One rejected reading: the reason a gateway's reading would be rejected for.
#[derive(Debug, Serialize, ToSchema)]
pub struct RejectedReading {
    /// A stable reject reason (docs/design.md#reject-reasons): `not_json`,
    /// `bad_payload`, `wrong_kind`, `unknown_category`, `bad_number`, `ts_in_future`,
    /// `ts_too_old`, `too_many_readings`, `over_capacity`, …
    pub reason: String,
    /// What is wrong and what would be right; for an array, it starts with the
    /// element's index (`element [2]: …`).
    pub detail: String,
}

/// Why a count was not stored, as the client is told.
#[derive(Debug)]
pub(super) enum CountRefused {
    Api(ApiError),
    Rejected(Vec<Rejected>),
    /// Not committed within the wait (a store fault pauses ingest): 503 with
    /// `Retry-After`.
    NotStoredYet(String),
}

impl From<ApiError> for CountRefused {
    fn from(e: ApiError) -> CountRefused {
        CountRefused::Api(e)
    }
}

impl IntoResponse for CountRefused {
    fn into_response(self) -> Response {
        match self {
            CountRefused::Api(e) => e.into_response(),
            CountRefused::Rejected(rejected) => {
                let message = format!(
                    "{} reading(s) rejected; nothing was stored. Correct them and send the count again",
                    rejected.len()
                );
                let body = RejectedReadingsBody {
                    error: RejectedReadings {
                        code: "rejected_readings".into(),
                        message,
                        rejected: rejected
                            .into_iter()
                            .map(|r| RejectedReading {
                                reason: r.reason.as_str().to_owned(),
                                detail: r.detail,
                            })
                            .collect(),
                    },
                };
                (StatusCode::BAD_REQUEST, Json(body)).into_response()
            }
            CountRefused::NotStoredYet(message) => {
                let mut response = ApiError::Unavailable(message).into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_S));
                response
            }
        }
    }
}

/// Enters a count made by hand: the facility's readings in the MQTT payload's JSON,
/// validated as a gateway's, stored with `source = manual` and the token's name, and
/// applied to the ledger before the answer. Officers for their own towns, admins for
/// any.
#[utoipa::path(post, path = "/api/v1/facilities/{id}/readings", tag = "facilities",
    params(("id" = String, Path, description = "Facility id, e.g. `jingshan-wh1`")),
    request_body(content = ReadingsBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored and applied", body = ManualReadingsStored),
        (status = 400, description = "Rejected readings (`rejected_readings`), each with its reason; nothing stored", body = RejectedReadingsBody),
        (status = 401, description = "A token is needed", body = ErrorBody),
        (status = 403, description = "Not an officer of the facility's town, nor an admin", body = ErrorBody),
        (status = 404, description = "Unknown facility (`unknown_facility`)", body = ErrorBody),
        (status = 413, description = "Body over 16 KiB (`body_too_large`)", body = ErrorBody),
        (status = 415, description = "Body is not `application/json`", body = ErrorBody),
        (status = 503, description = "Not stored within the commit wait (10 s; the store is failing and ingest paused) or ingest not running (`unavailable`), with `Retry-After`; sending the count again is safe", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state, body), fields(caller = caller.name()))]
pub(super) async fn post_readings(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    // Read after the permission check: a caller who may not enter counts for the town
    // learns that first, whatever it sent.
    body: Result<JsonBytes, ApiError>,
) -> Result<(StatusCode, Json<ManualReadingsStored>), CountRefused> {
    let (town, facility) = {
        let ledger = state.ledger();
        let registry = ledger.registry();
        let f = registry
            .facility_idx(&id)
            .ok_or_else(|| ApiError::not_found(Entity::Facility, &id))?;
        let facility = registry.facility(f);
        (registry.town(facility.town).id.clone(), facility.id.clone())
    };
    caller.require_town(&town)?;
    let JsonBytes(payload) = body?;
    let Some(manual) = state.manual_readings() else {
        return Err(ApiError::Unavailable(
            "counts by hand need the ingest writer, which does not run in this process".into(),
        )
        .into());
    };
    let readings = decode_count(&state, manual, &town, &facility, &payload)?;
    let entered_by = caller.name().to_owned();
    let outcome = manual
        .submit(readings, entered_by.clone())
        .await
        .map_err(not_stored)?;
    tracing::info!(
        message = "Count entered by hand stored.",
        facility = %facility,
        stored = outcome.stored,
        duplicates = outcome.duplicates,
        by = %entered_by
    );
    audit_count(&state, &entered_by, &town, &facility, &payload, outcome).await;
    let ManualOutcome {
        stored,
        duplicates,
        latest_ts,
    } = outcome;
    let answer = ManualReadingsStored {
        facility: facility.to_string(),
        stored,
        duplicates,
        latest_ts,
        entered_by,
    };
    Ok((StatusCode::CREATED, Json(answer)))
}

/// The most of a count's JSON an audit entry keeps, in characters: the figures of a
/// facility's few categories fit many times over.
const AUDIT_PAYLOAD_CHARS: usize = 2000;

/// The audit entry of a count stored: the facility, what was stored, and the count as
/// the officer sent it.
async fn audit_count(
    state: &AppState,
    entered_by: &str,
    town: &TownId,
    facility: &FacilityId,
    payload: &[u8],
    outcome: ManualOutcome,
) {
    let sent: String = String::from_utf8_lossy(payload)
        .chars()
        .take(AUDIT_PAYLOAD_CHARS)
        .collect();
    let detail = format!(
        "{facility}: {} stored, {} duplicates: {sent}",
        outcome.stored, outcome.duplicates
    );
    let action = crate::audit::Action {
        actor: entered_by.to_owned(),
        via: "token",
        action: "manual_reading",
        towns: vec![town.to_string()],
        detail,
        ..crate::audit::Action::default()
    };
    crate::audit::record(state, action).await;
}

/// The count's readings, decoded and checked by `reserve::wire` as if the facility's
/// gateway had published them: all accepted, or the count refused with every reason.
fn decode_count(
    state: &AppState,
    manual: &ManualReadings,
    town: &TownId,
    facility: &FacilityId,
    payload: &[u8],
) -> Result<Vec<Reading>, CountRefused> {
    let ledger = state.ledger();
    let topic = Topic {
        town: town.as_str(),
        facility: facility.as_str(),
        kind: TopicKind::Reading,
    };
    let context = DecodeContext {
        max_payload_bytes: limits::BODY_LIMIT,
        max_readings: manual.max_readings,
        retention: manual.retention,
        ..DecodeContext::new(ledger.registry(), Utc::now())
    };
    match wire::decode_readings(&topic, payload, &context) {
        Err(rejected) => Err(CountRefused::Rejected(vec![rejected])),
        Ok(decoded) if !decoded.rejected.is_empty() => {
            Err(CountRefused::Rejected(decoded.rejected))
        }
        Ok(decoded) => Ok(decoded.readings),
    }
}

fn not_stored(e: ManualError) -> CountRefused {
    match e {
        ManualError::NotStoredYet(wait) => CountRefused::NotStoredYet(format!(
            "the count was not stored within {} s: the store is failing and ingest is paused \
             (see /readyz). It may still be stored once the store recovers; sending it again \
             is safe, a reading of the same facility and ts is stored once",
            wait.as_secs()
        )),
        ManualError::Stopped => {
            CountRefused::NotStoredYet("ingest is not running (the service is stopping)".into())
        }
    }
}
