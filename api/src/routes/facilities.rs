//! `GET /api/v1/facilities/{id}`: one facility's latest state, and where its latest
//! reading came from (a gateway, or a count entered by hand: issue 15).

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use reserve::coverage::NotReady;
use reserve::ledger::{Latest, ShelterLatest};
use reserve::reading::ShelterMode;
use reserve::registry::{DualUse, FacilityKind, FacilityKindName, Report};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, Entity, ErrorBody};
use crate::extract::ApiPath;
use crate::model::{LinkState, PowerMode, Pump};

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FacilityKindView {
    Warehouse,
    WaterPoint,
    PowerUnit,
    Shelter,
}

impl From<FacilityKindName> for FacilityKindView {
    fn from(k: FacilityKindName) -> FacilityKindView {
        match k {
            FacilityKindName::Warehouse => FacilityKindView::Warehouse,
            FacilityKindName::WaterPoint => FacilityKindView::WaterPoint,
            FacilityKindName::PowerUnit => FacilityKindView::PowerUnit,
            FacilityKindName::Shelter => FacilityKindView::Shelter,
        }
    }
}

/// How a facility's figures arrive: from a gateway, or counted by hand (no gateway
/// expected; a count is due after `stale_after_s`).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReportView {
    Gateway,
    Manual,
}

impl From<Report> for ReportView {
    fn from(r: Report) -> ReportView {
        match r {
            Report::Gateway => ReportView::Gateway,
            Report::Manual => ReportView::Manual,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FacilityDetail {
    pub id: String,
    pub name: String,
    /// Town id.
    pub town: String,
    pub kind: FacilityKindView,
    /// `gateway`, or `manual` for a facility counted by hand (docs/design.md#entities).
    pub report: ReportView,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    /// Expected interval between readings.
    pub report_every_s: f64,
    /// Silent after this long without a reading; for a manual facility, its count is
    /// due after this long.
    pub stale_after_s: f64,
    /// Water points: tank capacity.
    pub capacity_l: Option<f64>,
    /// Power units: tank capacity, rated burn at planned load, minimum battery.
    pub fuel_capacity_l: Option<f64>,
    pub burn_l_per_h: Option<f64>,
    pub min_battery_pct: Option<f64>,
    /// Shelters: what the registry says of it (capacity, everyday use, time to convert).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shelter: Option<ShelterSpecView>,
    /// Measurement time of the latest reading (the gateway's clock).
    pub last_ts: Option<DateTime<Utc>>,
    pub last_seq: Option<u64>,
    /// When the latest reading arrived (our clock); silence is judged on this.
    pub heard_at: Option<DateTime<Utc>>,
    pub never_reported: bool,
    /// Reported before, but not within `stale_after_s`: its last values still count.
    pub silent: bool,
    /// The gateway's MQTT connectivity, when it has published a status.
    pub link: Option<LinkView>,
    /// Water points and power units: ready or not, and why.
    pub ready: Option<bool>,
    pub problems: Vec<NotReady>,
    /// The latest observation: exactly one of `stock`, `water`, `power`, `shelter`, as on
    /// the wire.
    pub latest: Option<LatestView>,
    /// Where the latest reading came from, and its age: a figure that rests on a count
    /// made by hand says so. Absent when the facility never reported (or the store
    /// could not be read: see the log).
    pub latest_source: Option<LatestSource>,
}

/// Where the latest reading came from.
#[derive(Debug, Serialize, ToSchema)]
pub struct LatestSource {
    pub source: ReadingSourceName,
    /// For a count entered by hand, the name of the token it was entered with. Shown
    /// to callers with a token only: it names a person.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entered_by: Option<String>,
    /// For a count entered by hand, seconds since it was counted (by its `ts`): how old
    /// the figure is. A gateway's readings are judged by `heard_at` and `silent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_s: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadingSourceName {
    /// The facility's gateway, over MQTT.
    Gateway,
    /// A count entered by hand (`POST /api/v1/facilities/{id}/readings`).
    Manual,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LinkView {
    pub state: LinkState,
    pub since: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LatestView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stock: Option<Vec<StockLineView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub water: Option<WaterView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power: Option<PowerView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shelter: Option<ShelterView>,
}

/// A shelter's registry entry (docs/design.md#shelters).
#[derive(Debug, Serialize, ToSchema)]
pub struct ShelterSpecView {
    /// People it can take.
    pub capacity: u64,
    /// Its everyday use: `school`, `gym`, `hotel`, `community_centre`, `warehouse`,
    /// `other`.
    #[schema(value_type = String, example = "school")]
    pub dual_use: DualUse,
    /// How long it may take to convert before `shelter_not_ready`.
    pub convert_within_s: f64,
}

/// A shelter's latest reading.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShelterView {
    /// People inside.
    pub occupancy: u64,
    pub capacity: u64,
    /// `occupancy` as a percentage of `capacity`.
    pub fill_pct: f64,
    /// `normal` (everyday use), `activating` (converting), `open` or `closed`.
    #[schema(value_type = String, example = "open")]
    pub mode: ShelterMode,
    /// When it entered `mode` (the first reading in it).
    pub mode_since: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StockLineView {
    pub category: String,
    pub unit: String,
    pub quantity: f64,
    /// Estimated from recent decreases, in `unit` per hour.
    pub consumption_per_h: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WaterView {
    pub level_l: f64,
    pub pump: Pump,
    pub potable: bool,
    pub consumption_l_per_h: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PowerView {
    pub fuel_l: f64,
    pub battery_pct: Option<f64>,
    pub state: PowerMode,
    /// The gateway's measured burn, when it sends one (overrides the rated burn).
    pub measured_burn_l_per_h: Option<f64>,
    /// Hours of fuel at the measured, else rated, burn.
    pub runtime_h: f64,
}

/// A facility's latest state, link and silence, and where its latest reading came from.
#[utoipa::path(get, path = "/api/v1/facilities/{id}", tag = "facilities",
    params(("id" = String, Path, description = "Facility id, e.g. `jingshan-wh1`")),
    responses(
        (status = 200, body = FacilityDetail),
        (status = 401, description = "A token is needed", body = ErrorBody),
        (status = 404, description = "Unknown facility (`unknown_facility`)", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state, caller))]
pub(super) async fn facility(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<FacilityDetail>, ApiError> {
    let facility_id = {
        let ledger = state.ledger();
        let registry = ledger.registry();
        let f = registry
            .facility_idx(&id)
            .ok_or_else(|| ApiError::not_found(Entity::Facility, &id))?;
        registry.facility(f).id.clone()
    };
    // Before the ledger is read: the ledger's lock is never held across I/O.
    let manual = state
        .with_store(move |store| store.latest_manual_entry(&facility_id))
        .await
        .inspect_err(|error| {
            tracing::warn!(
                message = "Cannot read the facility's latest hand count; its source is left out.",
                %error
            );
        })
        .ok();
    let now = Utc::now();
    let ledger = state.ledger();
    let registry = ledger.registry();
    let f = registry
        .facility_idx(&id)
        .ok_or_else(|| ApiError::not_found(Entity::Facility, &id))?;
    let facility = registry.facility(f);
    let live = ledger.facility(f);
    let figures = ledger.figures(facility.town);
    let readiness = figures
        .power_units
        .iter()
        .chain(&figures.water_points)
        .find(|r| r.facility == f);
    let (capacity_l, fuel_capacity_l, rated_burn, min_battery_pct) = match facility.kind {
        FacilityKind::Warehouse => (None, None, None, None),
        FacilityKind::WaterPoint { capacity_l } => (capacity_l, None, None, None),
        FacilityKind::PowerUnit {
            fuel_capacity_l,
            burn_l_per_h,
            min_battery_pct,
        } => (
            None,
            Some(fuel_capacity_l),
            Some(burn_l_per_h),
            Some(min_battery_pct),
        ),
        FacilityKind::Shelter(_) => (None, None, None, None),
    };
    let shelter = match &facility.kind {
        FacilityKind::Shelter(spec) => Some(ShelterSpecView {
            capacity: spec.capacity,
            dual_use: spec.dual_use,
            convert_within_s: spec.convert_within.as_secs_f64(),
        }),
        _ => None,
    };
    let latest = live.latest.as_ref().map(|latest| match latest {
        Latest::Stock(lines) => LatestView {
            stock: Some(
                lines
                    .iter()
                    .map(|line| {
                        let category = registry.category(line.category);
                        StockLineView {
                            category: category.id.to_string(),
                            unit: category.unit.clone(),
                            quantity: line.quantity,
                            consumption_per_h: ledger.consumption_per_h(&line.drawdown),
                        }
                    })
                    .collect(),
            ),
            water: None,
            power: None,
            shelter: None,
        },
        Latest::Water { obs, drawdown } => LatestView {
            stock: None,
            water: Some(WaterView {
                level_l: obs.level_l,
                pump: obs.pump.into(),
                potable: obs.potable,
                consumption_l_per_h: ledger.consumption_per_h(drawdown),
            }),
            power: None,
            shelter: None,
        },
        Latest::Power(obs) => LatestView {
            stock: None,
            water: None,
            power: Some(PowerView {
                fuel_l: obs.fuel_l,
                battery_pct: obs.battery_pct,
                state: obs.state.into(),
                measured_burn_l_per_h: obs.burn_l_per_h,
                runtime_h: reserve::coverage::runtime_h(
                    obs.fuel_l,
                    obs.burn_l_per_h.or(rated_burn).unwrap_or(0.0),
                ),
            }),
            shelter: None,
        },
        Latest::Shelter(latest) => LatestView {
            stock: None,
            water: None,
            power: None,
            shelter: Some(shelter_view(latest, shelter.as_ref())),
        },
    });
    Ok(Json(FacilityDetail {
        id: facility.id.to_string(),
        name: facility.name.clone(),
        town: registry.town(facility.town).id.to_string(),
        kind: facility.kind.name().into(),
        report: facility.report.into(),
        lat: facility.lat,
        lon: facility.lon,
        report_every_s: facility.report_every.as_secs_f64(),
        stale_after_s: facility.stale_after.as_secs_f64(),
        capacity_l,
        fuel_capacity_l,
        burn_l_per_h: rated_burn,
        min_battery_pct,
        shelter,
        last_ts: live.last_ts,
        last_seq: live.last_seq,
        heard_at: live.heard_at,
        never_reported: live.latest.is_none(),
        silent: live.is_silent(facility.stale_after, now),
        link: live.link.map(|(link, since)| LinkView {
            state: link.into(),
            since,
        }),
        ready: readiness.map(|r| r.ready),
        problems: readiness.map(|r| r.problems.clone()).unwrap_or_default(),
        latest,
        latest_source: manual
            .and_then(|manual| latest_source(live.last_ts, manual.as_ref(), &caller, now)),
    }))
}

/// Where the reading at `last_ts` came from: a hand count when the facility's latest
/// one is at that millisecond (a facility and `ts` are stored once), its gateway
/// otherwise.
fn latest_source(
    last_ts: Option<DateTime<Utc>>,
    manual: Option<&store::ManualEntry>,
    caller: &Caller,
    now: DateTime<Utc>,
) -> Option<LatestSource> {
    let last_ts = last_ts?;
    // The store keeps milliseconds (its key), the ledger what the reading said.
    let by_hand = manual.filter(|m| m.ts.timestamp_millis() == last_ts.timestamp_millis());
    Some(LatestSource {
        source: if by_hand.is_some() {
            ReadingSourceName::Manual
        } else {
            ReadingSourceName::Gateway
        },
        entered_by: by_hand
            .filter(|_| !matches!(caller, Caller::Public))
            .map(|m| m.entered_by.clone()),
        age_s: by_hand.map(|m| ((now - m.ts).num_milliseconds() as f64 / 1000.0).max(0.0)),
    })
}

/// A shelter's latest reading against its capacity (`spec` is always there for a
/// shelter; a reading is validated against its facility's kind).
fn shelter_view(latest: &ShelterLatest, spec: Option<&ShelterSpecView>) -> ShelterView {
    let capacity = spec.map_or(0, |s| s.capacity);
    let fill_pct = if capacity == 0 {
        0.0
    } else {
        latest.obs.occupancy as f64 * 100.0 / capacity as f64
    };
    ShelterView {
        occupancy: latest.obs.occupancy,
        capacity,
        fill_pct: (fill_pct * 10.0).round() / 10.0,
        mode: latest.obs.mode,
        mode_since: latest.mode_since,
    }
}
