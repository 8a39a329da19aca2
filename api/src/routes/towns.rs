//! Towns: the list the board polls, one town's full figures, and the sheltered count its
//! officer reports.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use reserve::coverage::NotReady;
use reserve::reading::ShelterMode;
use reserve::registry::{Registry, TownIdx};
use reserve::{Ledger, TownId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, Entity, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::model::{CategoryNames, LevelView, MAX_SHELTERED, Status, StatusCounts, TownSummary};

use super::facilities::{FacilityKindView, ReportView};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct TownsQuery {
    /// Only towns with this status.
    status: Option<Status>,
    /// Only towns of this cluster (id).
    cluster: Option<String>,
    /// Only towns of this district (id).
    district: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TownList {
    /// Counts of the listed towns by status.
    pub counts: StatusCounts,
    /// In registry order.
    pub towns: Vec<TownSummary>,
}

/// Towns with status, worst days and location; filter by status, cluster, district.
#[utoipa::path(get, path = "/api/v1/towns", tag = "towns",
    params(TownsQuery),
    responses(
        (status = 200, body = TownList),
        (status = 400, description = "Unknown query parameter or value", body = ErrorBody),
        (status = 401, description = "A token is needed", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state))]
pub(super) async fn list_towns(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<TownsQuery>,
) -> Result<Json<TownList>, ApiError> {
    let ledger = state.ledger();
    let registry = ledger.registry();
    let unknown = |field: &str, value: &str| ApiError::BadRequest {
        code: "invalid_query",
        message: format!("query parameter {field}: unknown {field} {value:?}"),
        field: Some(field.to_owned()),
    };
    let cluster = match &query.cluster {
        Some(id) => Some(
            registry
                .cluster_idx(id)
                .ok_or_else(|| unknown("cluster", id))?,
        ),
        None => None,
    };
    let district = match &query.district {
        Some(id) => Some(
            registry
                .district_idx(id)
                .ok_or_else(|| unknown("district", id))?,
        ),
        None => None,
    };
    let mut counts = StatusCounts::default();
    let mut towns = Vec::new();
    for t in registry.town_indices() {
        let town = registry.town(t);
        let status = Status::from(ledger.figures(t).status);
        if cluster.is_some_and(|c| c != town.cluster)
            || district.is_some_and(|d| d != town.district)
            || query.status.is_some_and(|s| s != status)
        {
            continue;
        }
        counts.add(status);
        towns.push(TownSummary::of(&ledger, t));
    }
    Ok(Json(TownList { counts, towns }))
}

/// A town's full figures.
#[derive(Debug, Serialize, ToSchema)]
pub struct TownDetail {
    #[serde(flatten)]
    pub summary: TownSummary,
    /// People in named groups (`infants`, `elderly`, …), part of the population.
    pub groups: BTreeMap<String, u64>,
    /// Coverage per category of supply, in registry order.
    pub categories: Vec<CategoryCoverageView>,
    /// Days of power: the smallest runtime over the town's power units, a unit not
    /// ready counting as 0; `null` for a town without power units.
    pub power_days: Option<f64>,
    pub power_units: Vec<UnitReadiness>,
    pub water_points: Vec<UnitReadiness>,
    /// Facilities that have reported but not lately: their last values still count.
    pub silent: Vec<String>,
    /// Facilities that have never reported: they count as empty.
    pub never_reported: Vec<String>,
    /// Every facility of the town, in registry order: what its officer counts by hand
    /// and sends transfers from (each one's state: `GET /api/v1/facilities/{id}`).
    pub facilities: Vec<TownFacility>,
    /// The town's shelters, in registry order: the open ones' occupancy is `sheltered`.
    pub shelters: Vec<TownShelter>,
}

/// A shelter of a town and its latest reading (docs/design.md#shelters).
#[derive(Debug, Serialize, ToSchema)]
pub struct TownShelter {
    pub facility: String,
    pub name: String,
    /// People it can take.
    pub capacity: u64,
    /// People inside; `null` until it first reports.
    pub occupancy: Option<u64>,
    /// `normal`, `activating`, `open` or `closed`; `null` until it first reports.
    #[schema(value_type = Option<String>, example = "open")]
    pub mode: Option<ShelterMode>,
    /// Since when it has been in `mode`.
    pub mode_since: Option<DateTime<Utc>>,
}

/// A facility of a town, as the town page lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TownFacility {
    pub id: String,
    pub name: String,
    pub kind: FacilityKindView,
    /// `gateway`, or `manual` for a facility counted by hand.
    pub report: ReportView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CategoryCoverageView {
    /// Category id.
    pub id: String,
    pub name: String,
    /// Its names in Chinese and English (the registry's `name_zh`, `name_en`, else
    /// `name`), for pages in either language.
    pub names: CategoryNames,
    pub unit: String,
    /// Held, in `unit`.
    pub stock: f64,
    /// Needed per day by the town's people (residents plus sheltered), in `unit`.
    pub need_per_day: f64,
    /// Days of supply; `null` when nobody in the town needs the category.
    pub days: Option<f64>,
    pub target_days: f64,
    pub warn_days: f64,
    pub level: LevelView,
    /// False when a contributing facility is silent or has never reported.
    pub verified: bool,
    /// Estimated consumption from recent decreases, in `unit` per hour.
    pub consumption_per_h: Option<f64>,
    /// Forecast hours until the stock falls below the target at that consumption;
    /// 0 when already below, `null` when not being consumed.
    pub hours_to_target: Option<f64>,
    /// Present when the stock rests on a hand count (a contributing facility's latest
    /// figure was entered by hand): when the oldest such count was made, and its age.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counted_by_hand: Option<HandCount>,
}

/// The hand count a figure rests on.
#[derive(Debug, Serialize, ToSchema)]
pub struct HandCount {
    /// When it was counted (the reading's `ts`).
    pub at: DateTime<Utc>,
    /// Its age now, in seconds.
    pub age_s: i64,
}

/// Readiness of a water point or power unit.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnitReadiness {
    pub facility: String,
    pub name: String,
    pub ready: bool,
    /// Why it is not ready; empty when ready.
    pub problems: Vec<NotReady>,
    /// Power units: hours of fuel at the burn rate.
    pub runtime_h: Option<f64>,
}

impl TownDetail {
    pub(crate) fn of(ledger: &Ledger, t: TownIdx) -> TownDetail {
        let registry = ledger.registry();
        let figures = ledger.figures(t);
        let facility_id = |f: &reserve::registry::FacilityIdx| registry.facility(*f).id.to_string();
        let unit = |r: &reserve::ledger::Readiness| UnitReadiness {
            facility: facility_id(&r.facility),
            name: registry.facility(r.facility).name.clone(),
            ready: r.ready,
            problems: r.problems.clone(),
            runtime_h: r.runtime_h,
        };
        TownDetail {
            summary: TownSummary::of(ledger, t),
            groups: registry.town(t).groups.clone(),
            categories: figures
                .categories
                .iter()
                .map(|c| {
                    let category = registry.category(c.category);
                    CategoryCoverageView {
                        id: category.id.to_string(),
                        name: category.name.clone(),
                        names: CategoryNames::of(category),
                        unit: category.unit.clone(),
                        stock: c.stock,
                        need_per_day: c.need_per_day,
                        days: c.days,
                        target_days: c.target_days,
                        warn_days: c.warn_days,
                        level: c.level.into(),
                        verified: c.verified,
                        consumption_per_h: c.consumption_per_h,
                        hours_to_target: c.hours_to_target,
                        counted_by_hand: c.counted_by_hand.map(|at| HandCount {
                            at,
                            age_s: (Utc::now() - at).num_seconds().max(0),
                        }),
                    }
                })
                .collect(),
            power_days: figures.power_days,
            power_units: figures.power_units.iter().map(unit).collect(),
            water_points: figures.water_points.iter().map(unit).collect(),
            silent: figures.silent.iter().map(facility_id).collect(),
            never_reported: figures.never_reported.iter().map(facility_id).collect(),
            facilities: TownFacility::of_town(registry, t),
            shelters: figures
                .shelters
                .iter()
                .map(|s| TownShelter {
                    facility: facility_id(&s.facility),
                    name: registry.facility(s.facility).name.clone(),
                    capacity: s.capacity,
                    occupancy: s.occupancy,
                    mode: s.mode,
                    mode_since: s.mode_since,
                })
                .collect(),
        }
    }
}

impl TownFacility {
    /// The facilities of town `t`, in registry order.
    fn of_town(registry: &Registry, t: TownIdx) -> Vec<TownFacility> {
        registry
            .town(t)
            .facilities
            .iter()
            .map(|&f| {
                let facility = registry.facility(f);
                TownFacility {
                    id: facility.id.to_string(),
                    name: facility.name.clone(),
                    kind: facility.kind.name().into(),
                    report: facility.report.into(),
                }
            })
            .collect()
    }
}

/// A town's full figures: categories, power, water points, silent facilities.
#[utoipa::path(get, path = "/api/v1/towns/{id}", tag = "towns",
    params(("id" = String, Path, description = "Town id, e.g. `jingshan`")),
    responses(
        (status = 200, body = TownDetail),
        (status = 401, description = "A token is needed", body = ErrorBody),
        (status = 404, description = "Unknown town (`unknown_town`)", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state))]
pub(super) async fn town(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TownDetail>, ApiError> {
    let ledger = state.ledger();
    let t = ledger
        .registry()
        .town_idx(&id)
        .ok_or_else(|| ApiError::not_found(Entity::Town, &id))?;
    Ok(Json(TownDetail::of(&ledger, t)))
}

/// People sheltered in a town now, on top of its residents.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShelteredUpdate {
    /// People sheltered there now (not an increment), at most 100,000,000.
    #[schema(example = 5000)]
    pub sheltered: u64,
}

/// Reports the people sheltered in a town now. Officers may report for their own towns,
/// admins for any. Persisted before it is applied; answers the town's new figures.
#[utoipa::path(put, path = "/api/v1/towns/{id}/sheltered", tag = "towns",
    params(("id" = String, Path, description = "Town id")),
    request_body = ShelteredUpdate,
    responses(
        (status = 200, description = "The town's figures with the new count", body = TownDetail),
        (status = 400, description = "Body is not JSON", body = ErrorBody),
        (status = 401, description = "A token is needed", body = ErrorBody),
        (status = 403, description = "Not an officer of this town, nor an admin", body = ErrorBody),
        (status = 404, description = "Unknown town", body = ErrorBody),
        (status = 413, description = "Body over 16 KiB (`body_too_large`)", body = ErrorBody),
        (status = 415, description = "Body is not `application/json`", body = ErrorBody),
        (status = 422, description = "Body of the wrong shape; `field` names the field", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state, body), fields(caller = caller.name()))]
pub(super) async fn set_sheltered(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    // Decoded after the permission check: a caller who may not change the town learns
    // that first, whatever it sent.
    body: Result<ApiJson<ShelteredUpdate>, ApiError>,
) -> Result<Json<TownDetail>, ApiError> {
    let (t, town_id) = {
        let ledger = state.ledger();
        let t = ledger
            .registry()
            .town_idx(&id)
            .ok_or_else(|| ApiError::not_found(Entity::Town, &id))?;
        (t, ledger.registry().town(t).id.clone())
    };
    caller.require_town(&town_id)?;
    let ApiJson(update) = body?;
    if update.sheltered > MAX_SHELTERED {
        return Err(ApiError::invalid_field(
            "sheltered",
            format!("{} is more than {MAX_SHELTERED}", update.sheltered),
        ));
    }
    let now = Utc::now();
    let sheltered = update.sheltered;
    let persisted: TownId = town_id.clone();
    let applier = state.clone();
    // Persisted first (durable before visible), then applied, both under the store's
    // lock: two reports for one town reach the ledger in the order they reach the file.
    let detail = state
        .with_store(move |store| {
            store.set_sheltered(&persisted, sheltered, now)?;
            let mut ledger = applier.ledger_mut();
            ledger.set_sheltered(t, sheltered);
            ledger.refresh(t, now);
            Ok(TownDetail::of(&ledger, t))
        })
        .await?;
    state.changes().publish([t]);
    tracing::info!(message = "Sheltered count set.", town = %town_id, sheltered, by = caller.name());
    let action = crate::audit::Action {
        actor: caller.name().to_owned(),
        via: "token",
        action: "sheltered",
        towns: vec![town_id.to_string()],
        detail: format!("{sheltered} people sheltered"),
        ..crate::audit::Action::default()
    };
    crate::audit::record(&state, action).await;
    Ok(Json(detail))
}
