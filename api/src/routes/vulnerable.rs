//! Vulnerable people a town's shortfalls reach, per community (村社)
//! (docs/design.md#communities). Counts only: the registry names no persons, so this
//! is an ordinary read, not one of the personal ones.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use reserve::Ledger;
use reserve::registry::TownIdx;
use reserve::vulnerable::{Cause, CauseKind, TownVulnerable, affected};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, Entity, ErrorBody};
use crate::extract::ApiPath;

/// Who in a town is affected now, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TownVulnerableView {
    /// Town id.
    pub town: String,
    /// Communities the registry lists under the town.
    pub communities_listed: usize,
    /// Vulnerable people over those communities, affected or not.
    pub people_listed: u64,
    /// Affected vulnerable people, each counted once.
    pub affected_people: u64,
    /// Affected communities, in registry order; empty when nobody is affected.
    pub communities: Vec<AffectedCommunityView>,
}

/// `GET /api/v1/towns/{id}/vulnerable`: who is affected now, beside every community the
/// town lists (what the town page shows, the affected ones highlighted).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TownVulnerableAnswer {
    #[serde(flatten)]
    pub affected: TownVulnerableView,
    /// Every community the registry lists under the town, in registry order.
    pub listed: Vec<ListedCommunityView>,
}

/// A community as the registry lists it: its vulnerable people by group and the
/// facilities serving it (ids; any town's).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ListedCommunityView {
    pub id: String,
    pub name: String,
    pub people: u64,
    pub groups: BTreeMap<String, u64>,
    pub water_point: Option<String>,
    pub power_unit: Option<String>,
    pub shelter: Option<String>,
}

impl ListedCommunityView {
    fn all_of(ledger: &Ledger, t: TownIdx) -> Vec<ListedCommunityView> {
        let registry = ledger.registry();
        let id = |f: Option<reserve::registry::FacilityIdx>| {
            f.map(|f| registry.facility(f).id.to_string())
        };
        registry
            .communities_of(t)
            .iter()
            .map(|c| ListedCommunityView {
                id: c.id.clone(),
                name: c.name.clone(),
                people: c.people(),
                groups: c.groups.clone(),
                water_point: id(c.water_point),
                power_unit: id(c.power_unit),
                shelter: id(c.shelter),
            })
            .collect()
    }
}

/// One affected community.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AffectedCommunityView {
    /// Community id.
    pub id: String,
    pub name: String,
    /// Affected people in it, each counted once.
    pub people: u64,
    /// Affected people by group (`elderly_alone`, `infants`, …).
    pub groups: BTreeMap<String, u64>,
    /// Why they are affected.
    pub causes: Vec<CauseView>,
}

/// Why a community's people are affected: its water point or power unit is not ready
/// (`facility`: everyone there), or the town is below target in a category one of its
/// groups depends on (`category`, `group`: that group only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CauseView {
    #[schema(value_type = String, example = "water_point_not_ready")]
    pub kind: CauseKind,
    /// The water point or power unit not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facility: Option<String>,
    /// The category below target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The group that depends on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl TownVulnerableView {
    /// Town `t` by the ledger's latest figures.
    pub(crate) fn of(ledger: &Ledger, t: TownIdx) -> TownVulnerableView {
        Self::from_affected(ledger, t, &affected(ledger, t))
    }

    pub(crate) fn from_affected(
        ledger: &Ledger,
        t: TownIdx,
        found: &TownVulnerable,
    ) -> TownVulnerableView {
        let registry = ledger.registry();
        let listed = registry.communities_of(t);
        let communities = found
            .communities
            .iter()
            .map(|a| {
                let c = &registry.communities()[a.community];
                AffectedCommunityView {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    people: a.people,
                    groups: a.groups.clone(),
                    causes: a
                        .causes
                        .iter()
                        .map(|cause| cause_view(ledger, cause))
                        .collect(),
                }
            })
            .collect();
        TownVulnerableView {
            town: registry.town(t).id.to_string(),
            communities_listed: listed.len(),
            people_listed: listed.iter().map(|c| c.people()).sum(),
            affected_people: found.people,
            communities,
        }
    }
}

fn cause_view(ledger: &Ledger, cause: &Cause) -> CauseView {
    let registry = ledger.registry();
    let mut view = CauseView {
        kind: cause.kind(),
        facility: None,
        category: None,
        group: None,
    };
    match cause {
        Cause::WaterPointNotReady(f) | Cause::PowerUnitNotReady(f) => {
            view.facility = Some(registry.facility(*f).id.to_string());
        }
        Cause::BelowTarget { category, group } => {
            view.category = Some(registry.category(*category).id.to_string());
            view.group = Some(group.clone());
        }
    }
    view
}

/// Which communities of a town, and how many of their vulnerable people, a water point
/// or power unit not ready, or a category below target, affects now. Counts only.
#[utoipa::path(get, path = "/api/v1/towns/{id}/vulnerable", tag = "towns",
    params(("id" = String, Path, description = "Town id, e.g. `jingshan`")),
    responses(
        (status = 200, body = TownVulnerableAnswer),
        (status = 401, description = "A token is needed", body = ErrorBody),
        (status = 404, description = "Unknown town (`unknown_town`)", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state))]
pub(super) async fn town_vulnerable(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TownVulnerableAnswer>, ApiError> {
    let ledger = state.ledger();
    let t = ledger
        .registry()
        .town_idx(&id)
        .ok_or_else(|| ApiError::not_found(Entity::Town, &id))?;
    Ok(Json(TownVulnerableAnswer {
        affected: TownVulnerableView::of(&ledger, t),
        listed: ListedCommunityView::all_of(&ledger, t),
    }))
}
