//! Warning levels (预警等级, docs/design.md#warning-levels): an admin sets a level over a
//! scope with a reason and an end; the registry says what each level changes. The level
//! is stored (its history kept), then handed to the ledger, which raises the targets of
//! the towns under it at once; the alert engine, the board and the messages follow the
//! ledger.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use reserve::Ledger;
use reserve::ledger::{TownWarning, WarningScope, WarningSet};
use reserve::registry::{FacilityKind, PreActivate, Registry, WarningLevel};
use serde::{Deserialize, Serialize};
use store::WarningLevelRow;
use utoipa::{IntoParams, ToSchema};

use super::activations::{ActivationScope, StartActivation};
use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, Entity, ErrorBody};
use crate::extract::{ApiJson, ApiQuery};

/// The most towns one level names: a longer list is a district or a cluster.
const MAX_SCOPE_TOWNS: usize = 100;
/// The longest reason kept, in characters.
const MAX_REASON_CHARS: usize = 500;
/// The longest a level may be set for: a warning lasting longer is set again.
const MAX_DURATION: chrono::Duration = chrono::Duration::days(30);

/// Where a level applies: exactly one of the keys.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeBody {
    /// The whole city: `{"city": true}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<bool>,
    /// A district's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub district: Option<String>,
    /// A cluster's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Towns' ids, at most 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub towns: Option<Vec<String>>,
}

impl ScopeBody {
    fn of(scope: &WarningScope) -> ScopeBody {
        match scope {
            WarningScope::City => ScopeBody {
                city: Some(true),
                ..ScopeBody::default()
            },
            WarningScope::District(id) => ScopeBody {
                district: Some(id.clone()),
                ..ScopeBody::default()
            },
            WarningScope::Cluster(id) => ScopeBody {
                cluster: Some(id.clone()),
                ..ScopeBody::default()
            },
            WarningScope::Towns(ids) => ScopeBody {
                towns: Some(ids.clone()),
                ..ScopeBody::default()
            },
        }
    }

    /// The scope it names, checked against the registry; a 422 naming the key at fault.
    fn resolve(self, registry: &Registry) -> Result<WarningScope, ApiError> {
        let given = [
            self.city.map(|_| "city"),
            self.district.as_ref().map(|_| "district"),
            self.cluster.as_ref().map(|_| "cluster"),
            self.towns.as_ref().map(|_| "towns"),
        ];
        let given: Vec<&str> = given.into_iter().flatten().collect();
        if given.len() != 1 {
            return Err(ApiError::invalid_field(
                "scope",
                format!(
                    "give exactly one of city, district, cluster, towns (got {})",
                    if given.is_empty() {
                        "none".to_owned()
                    } else {
                        given.join(", ")
                    }
                ),
            ));
        }
        let unknown = |field: &str, kind: &str, id: &str| {
            ApiError::invalid_field(field, format!("unknown {kind} {id:?}"))
        };
        match self {
            ScopeBody {
                city: Some(true), ..
            } => Ok(WarningScope::City),
            ScopeBody {
                city: Some(false), ..
            } => Err(ApiError::invalid_field(
                "scope.city",
                "must be true (name a district, cluster or towns instead)",
            )),
            ScopeBody {
                district: Some(id), ..
            } => match registry.district_idx(&id) {
                Some(_) => Ok(WarningScope::District(id)),
                None => Err(unknown("scope.district", "district", &id)),
            },
            ScopeBody {
                cluster: Some(id), ..
            } => match registry.cluster_idx(&id) {
                Some(_) => Ok(WarningScope::Cluster(id)),
                None => Err(unknown("scope.cluster", "cluster", &id)),
            },
            ScopeBody {
                towns: Some(ids), ..
            } => resolve_towns(registry, ids),
            ScopeBody { .. } => unreachable!("exactly one key was given"),
        }
    }
}

fn resolve_towns(registry: &Registry, ids: Vec<String>) -> Result<WarningScope, ApiError> {
    if ids.is_empty() || ids.len() > MAX_SCOPE_TOWNS {
        return Err(ApiError::invalid_field(
            "scope.towns",
            format!("name 1 to {MAX_SCOPE_TOWNS} towns, got {}", ids.len()),
        ));
    }
    let mut towns: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        if registry.town_idx(&id).is_none() {
            return Err(ApiError::invalid_field(
                "scope.towns",
                format!("unknown town {id:?}"),
            ));
        }
        if !towns.contains(&id) {
            towns.push(id);
        }
    }
    Ok(WarningScope::Towns(towns))
}

/// A level to set, or `none` to end the levels of a scope.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WarningLevelRequest {
    /// `blue`, `yellow`, `orange`, `red`, or `none` to end the levels in force whose
    /// scope lies within `scope`.
    #[schema(example = "red")]
    pub level: String,
    pub scope: ScopeBody,
    /// Why: the warning as issued (e.g. 市气象台暴雨红色预警), for the board, the
    /// messages and the audit log. Required to set a level.
    #[serde(default)]
    pub reason: String,
    /// When it ends by itself (RFC 3339); or give `for`. Neither: until ended.
    pub ends_at: Option<String>,
    /// How long it lasts: `6h`, `2d`; at most 30 days.
    #[serde(rename = "for")]
    pub for_: Option<String>,
}

/// What the request is, checked.
enum Change {
    Set {
        level: WarningLevel,
        scope: WarningScope,
        reason: String,
        until: Option<DateTime<Utc>>,
    },
    End {
        scope: WarningScope,
    },
}

impl WarningLevelRequest {
    fn check(self, registry: &Registry, now: DateTime<Utc>) -> Result<Change, ApiError> {
        let level = match self.level.as_str() {
            "none" => None,
            other => Some(WarningLevel::parse(other).ok_or_else(|| {
                ApiError::invalid_field(
                    "level",
                    format!("unknown {other:?} (expected blue, yellow, orange, red or none)"),
                )
            })?),
        };
        let scope = self.scope.resolve(registry)?;
        let Some(level) = level else {
            return Ok(Change::End { scope });
        };
        let reason = self.reason.trim().to_owned();
        if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
            return Err(ApiError::invalid_field(
                "reason",
                format!("say why in 1 to {MAX_REASON_CHARS} characters"),
            ));
        }
        let until = end_of(self.ends_at.as_deref(), self.for_.as_deref(), now)?;
        Ok(Change::Set {
            level,
            scope,
            reason,
            until,
        })
    }
}

/// The end given as `ends_at` or `for`, within [`MAX_DURATION`] of `now`.
fn end_of(
    ends_at: Option<&str>,
    for_: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    let (field, end) = match (ends_at, for_) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_field(
                "for",
                "give ends_at or for, not both",
            ));
        }
        (None, None) => return Ok(None),
        (Some(at), None) => {
            let end = DateTime::parse_from_rfc3339(at).map_err(|e| {
                ApiError::invalid_field("ends_at", format!("{at:?} is not an RFC 3339 time ({e})"))
            })?;
            ("ends_at", end.with_timezone(&Utc))
        }
        (None, Some(text)) => {
            let d = reserve::duration::parse_duration(text)
                .map_err(|e| ApiError::invalid_field("for", e))?;
            let d = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
            (
                "for",
                now.checked_add_signed(d)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC),
            )
        }
    };
    if end <= now || end - now > MAX_DURATION {
        return Err(ApiError::invalid_field(
            field,
            "must end in the future and within 30 days",
        ));
    }
    Ok(Some(end))
}

/// A level as stored, with whether it is in force now.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WarningLevelView {
    pub id: i64,
    #[schema(value_type = String, example = "red")]
    pub level: WarningLevel,
    pub scope: ScopeBody,
    pub reason: String,
    pub starts_at: DateTime<Utc>,
    /// When it ends by itself; `null`: until ended.
    pub ends_at: Option<DateTime<Utc>>,
    /// Who set it; left out without a token (public reads).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set_by: Option<String>,
    pub set_at: DateTime<Utc>,
    /// When it was ended early or replaced.
    pub ended_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<String>,
    /// The level that took its place.
    pub replaced_by: Option<i64>,
    pub in_force: bool,
}

impl WarningLevelView {
    fn of(row: &WarningLevelRow, now: DateTime<Utc>) -> Option<WarningLevelView> {
        let set = row.to_set()?;
        Some(WarningLevelView {
            id: row.id,
            level: set.level,
            scope: ScopeBody::of(&set.scope),
            reason: row.reason.clone(),
            starts_at: row.starts_at,
            ends_at: row.ends_at,
            set_by: Some(row.set_by.clone()),
            set_at: row.set_at,
            ended_at: row.ended.as_ref().map(|(at, _)| *at),
            ended_by: row.ended.as_ref().map(|(_, by)| by.clone()),
            replaced_by: row.replaced_by,
            in_force: row.in_force(now),
        })
    }

    fn without_people(self) -> WarningLevelView {
        WarningLevelView {
            set_by: None,
            ended_by: None,
            ..self
        }
    }
}

/// The level in force for a town, as `GET /api/v1/towns` and the board show it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TownWarningView {
    /// The stored level's id (`GET /api/v1/warning-level`).
    pub id: i64,
    #[schema(value_type = String, example = "red")]
    pub level: WarningLevel,
    pub reason: String,
    pub since: DateTime<Utc>,
    /// When it ends; `null`: until ended.
    pub until: Option<DateTime<Utc>>,
    /// The level's days target, when the registry gives one; the town is held to the
    /// higher of it and its own target.
    pub days_target: Option<f64>,
    /// Where it comes from: the scope it was set for.
    pub scope: ScopeBody,
}

impl TownWarningView {
    pub(crate) fn of(warning: &TownWarning) -> TownWarningView {
        TownWarningView {
            id: warning.set.id,
            level: warning.set.level,
            reason: warning.set.reason.clone(),
            since: warning.set.since,
            until: warning.set.until,
            days_target: warning.days_target,
            scope: ScopeBody::of(&warning.set.scope),
        }
    }
}

/// What a request changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct WarningLevelChange {
    /// The level set; `null` for `none`.
    pub set: Option<WarningLevelView>,
    /// Ids of the levels it ended (replaced, or ended by `none`).
    pub ended: Vec<i64>,
    /// Towns whose level in force changed.
    pub towns: Vec<String>,
    /// The activation started for the shelters the level's plan names in its scope
    /// (`pre_activate`), when there were any not already activating.
    pub pre_activated: Option<i64>,
}

/// Sets a warning level over a scope, or ends the levels of a scope with `none`
/// (admins). A level replaces the one in force for the same scope; a town's level in
/// force is the highest covering it. Days, alerts, the board and messages follow at
/// once; recorded in the audit log.
#[utoipa::path(post, path = "/api/v1/warning-level", tag = "alerts",
    request_body = WarningLevelRequest,
    responses(
        (status = 201, description = "A level set", body = WarningLevelChange),
        (status = 200, description = "Levels ended (`none`)", body = WarningLevelChange),
        (status = 400, description = "Body is not JSON", body = ErrorBody),
        (status = 401, description = "A token is needed", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 413, description = "Body over 16 KiB (`body_too_large`)", body = ErrorBody),
        (status = 415, description = "Body is not `application/json`", body = ErrorBody),
        (status = 422, description = "Unknown level, a scope naming nothing, no reason, an end out of bounds; `field` names it", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state, body), fields(caller = caller.name()))]
pub(super) async fn set_warning_level(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<ApiJson<WarningLevelRequest>, ApiError>,
) -> Result<(StatusCode, Json<WarningLevelChange>), ApiError> {
    require_admin(&caller)?;
    let ApiJson(request) = body?;
    let now = Utc::now();
    let registry = Arc::clone(state.ledger().registry());
    let change = request.check(&registry, now)?;
    let by = caller.name().to_owned();
    let applier = state.clone();
    let (set, ended, moved) = state
        .with_store(move |store| {
            let in_force = store.list_warning_levels(Some(now))?;
            let (set, ended) = write_change(store, &registry, &change, &in_force, &by, now)?;
            // Applied under the store's lock: two changes reach the ledger in the order
            // they reach the file.
            let sets: Vec<WarningSet> = store
                .list_warning_levels(Some(now))?
                .iter()
                .filter_map(WarningLevelRow::to_set)
                .collect();
            let moved = applier.ledger_mut().set_warnings(sets, now);
            Ok((set, ended, moved))
        })
        .await?;
    state.changes().publish(moved.iter().copied());
    let mut answer = answer(&state, set, ended, &moved, now);
    audit(&state, &caller, &answer).await;
    if let Some(set) = &answer.set {
        answer.pre_activated = pre_activate(&state, set).await;
    }
    let status = match answer.set {
        Some(_) => StatusCode::CREATED,
        None => StatusCode::OK,
    };
    Ok((status, Json(answer)))
}

/// Stores `change`: the new level, ending the ones in force for the same scope, or the
/// end of those in force within the scope. Returns the new row and the ids ended.
fn write_change(
    store: &mut store::Store,
    registry: &Registry,
    change: &Change,
    in_force: &[WarningLevelRow],
    by: &str,
    now: DateTime<Utc>,
) -> Result<(Option<WarningLevelRow>, Vec<i64>), store::StoreError> {
    let scope_of = |row: &WarningLevelRow| row.to_set().map(|s| s.scope);
    match change {
        Change::Set {
            level,
            scope,
            reason,
            until,
        } => {
            let replaces: Vec<i64> = in_force
                .iter()
                .filter(|row| scope_of(row).is_some_and(|s| same_scope(&s, scope)))
                .map(|row| row.id)
                .collect();
            let mut row = WarningLevelRow {
                id: 0,
                level: level.as_str().to_owned(),
                scope_kind: scope.kind().to_owned(),
                scope_ids: scope.ids(),
                reason: reason.clone(),
                starts_at: now,
                ends_at: *until,
                set_by: by.to_owned(),
                set_at: now,
                ended: None,
                replaced_by: None,
            };
            row.id = store.set_warning_level(&row, &replaces)?;
            Ok((Some(row), replaces))
        }
        Change::End { scope } => {
            let within: Vec<i64> = in_force
                .iter()
                .filter(|row| scope_of(row).is_some_and(|s| s.within(scope, registry)))
                .map(|row| row.id)
                .collect();
            Ok((None, store.end_warning_levels(&within, now, by)?))
        }
    }
}

/// The same part of the city: towns named in another order are the same towns.
fn same_scope(a: &WarningScope, b: &WarningScope) -> bool {
    match (a, b) {
        (WarningScope::Towns(x), WarningScope::Towns(y)) => {
            x.iter().collect::<BTreeSet<_>>() == y.iter().collect::<BTreeSet<_>>()
        }
        _ => a == b,
    }
}

fn answer(
    state: &AppState,
    set: Option<WarningLevelRow>,
    ended: Vec<i64>,
    moved: &[reserve::registry::TownIdx],
    now: DateTime<Utc>,
) -> WarningLevelChange {
    let ledger = state.ledger();
    WarningLevelChange {
        set: set.and_then(|row| WarningLevelView::of(&row, now)),
        ended,
        towns: moved
            .iter()
            .map(|&t| ledger.registry().town(t).id.to_string())
            .collect(),
        pre_activated: None,
    }
}

/// Starts converting the shelters of the level's scope that its plan names
/// (`pre_activate`: by everyday use or by id) through the activation table, leaving out
/// those already in an open activation. Returns the activation's id. A refusal is
/// logged, not the caller's failure: the level is set either way.
async fn pre_activate(state: &AppState, set: &WarningLevelView) -> Option<i64> {
    let shelters = shelters_to_activate(state, set);
    if shelters.is_empty() {
        return None;
    }
    let request = StartActivation {
        scope: ActivationScope {
            shelters: Some(shelters),
            towns: None,
            cluster: None,
        },
        reason: format!(
            "{}预警 {} warning: {}",
            set.level.name_zh(),
            set.level.name_en(),
            set.reason
        ),
        scenario: None,
    };
    match super::activations::start(state, request, "warning-level", "token").await {
        Ok(activation) => Some(activation.id),
        Err(error) => {
            tracing::warn!(message = "Shelters of a warning level's plan not activated.", level = %set.level, id = set.id, ?error);
            None
        }
    }
}

/// Ids of the shelters in `set`'s scope its level's plan names, not already activating.
fn shelters_to_activate(state: &AppState, set: &WarningLevelView) -> Vec<String> {
    let ledger = state.ledger();
    let registry = ledger.registry();
    let Some(plan) = registry.warning_plan(set.level) else {
        return Vec::new();
    };
    let Ok(scope) = set.scope.clone().resolve(registry) else {
        return Vec::new();
    };
    let open = state
        .activations()
        .read()
        .unwrap_or_else(|p| p.into_inner());
    let named = |f: &reserve::registry::Facility, spec: &reserve::registry::ShelterSpec| {
        plan.pre_activate.iter().any(|p| match p {
            PreActivate::DualUse(use_) => spec.dual_use == *use_,
            PreActivate::Shelter(id) => f.id == *id,
        })
    };
    registry
        .facilities
        .iter()
        .filter(|f| match &f.kind {
            FacilityKind::Shelter(spec) => named(f, spec),
            _ => false,
        })
        .filter(|f| scope.covers(registry, f.town) && open.of(f.id.as_str()).is_none())
        .map(|f| f.id.to_string())
        .collect()
}

/// One audit entry: `warning_level` for a level set, `warning_level_end` for `none`,
/// naming the towns of the scope (none for the city).
async fn audit(state: &AppState, caller: &Caller, answer: &WarningLevelChange) {
    let (action, detail, towns) = match &answer.set {
        Some(set) => {
            let scope = set_scope_text(&set.scope);
            let until = set
                .ends_at
                .map_or_else(|| "until ended".to_owned(), |t| format!("until {t}"));
            let replaced = if answer.ended.is_empty() {
                String::new()
            } else {
                format!(", replacing {:?}", answer.ended)
            };
            let detail = format!(
                "warning level {} {} over {scope} {until}{replaced}: {}",
                set.id, set.level, set.reason
            );
            (
                "warning_level",
                detail,
                scope_towns(&state.ledger(), &set.scope),
            )
        }
        None => (
            "warning_level_end",
            format!("warning levels {:?} ended", answer.ended),
            answer.towns.clone(),
        ),
    };
    let action = crate::audit::Action {
        actor: caller.name().to_owned(),
        via: "token",
        action,
        towns,
        detail,
        ..crate::audit::Action::default()
    };
    tracing::info!(message = "Warning level changed.", action = action.action, detail = %action.detail, by = %action.actor);
    crate::audit::record(state, action).await;
}

fn set_scope_text(scope: &ScopeBody) -> String {
    match scope {
        ScopeBody { city: Some(_), .. } => "city".to_owned(),
        ScopeBody {
            district: Some(id), ..
        } => format!("district:{id}"),
        ScopeBody {
            cluster: Some(id), ..
        } => format!("cluster:{id}"),
        ScopeBody {
            towns: Some(ids), ..
        } => format!("towns:{}", ids.join(",")),
        ScopeBody { .. } => String::new(),
    }
}

/// The towns a scope covers, for the audit log; none for the city (a city-wide action).
fn scope_towns(ledger: &Ledger, scope: &ScopeBody) -> Vec<String> {
    if scope.city.is_some() {
        return Vec::new();
    }
    let registry = ledger.registry();
    let Ok(scope) = scope.clone().resolve(registry) else {
        return Vec::new();
    };
    registry
        .town_indices()
        .filter(|&t| scope.covers(registry, t))
        .map(|t| registry.town(t).id.to_string())
        .collect()
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct WarningLevelQuery {
    /// A town's id: the level in force for it and where it comes from.
    town: Option<String>,
}

/// The levels in force and the history.
#[derive(Debug, Serialize, ToSchema)]
pub struct WarningLevels {
    /// In force now, newest first.
    pub in_force: Vec<WarningLevelView>,
    /// Every level set, newest first (at most 1000).
    pub history: Vec<WarningLevelView>,
}

/// The level in force for one town.
#[derive(Debug, Serialize, ToSchema)]
pub struct TownWarningLevel {
    pub town: String,
    /// `null` when no level is in force for it.
    pub warning_level: Option<TownWarningView>,
}

/// The warning levels in force and their history; with `?town=`, the level in force
/// for that town and the scope it comes from. Without a token (public reads), who set
/// and ended a level is left out.
#[utoipa::path(get, path = "/api/v1/warning-level", tag = "alerts",
    params(WarningLevelQuery),
    responses(
        (status = 200, description = "In force and history; with `town`, a `TownWarningLevel`", body = WarningLevels),
        (status = 400, description = "Unknown query parameter", body = ErrorBody),
        (status = 401, description = "A token is needed", body = ErrorBody),
        (status = 404, description = "Unknown town (`unknown_town`)", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state))]
pub(super) async fn warning_levels(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<WarningLevelQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let now = Utc::now();
    if let Some(id) = query.town {
        let ledger = state.ledger();
        let t = ledger
            .registry()
            .town_idx(&id)
            .ok_or_else(|| ApiError::not_found(Entity::Town, &id))?;
        let answer = TownWarningLevel {
            town: id,
            warning_level: ledger.warning_at(t, now).as_ref().map(TownWarningView::of),
        };
        return Ok(Json(serde_json::to_value(answer).unwrap_or_default()));
    }
    let rows = state
        .with_store(|store| store.list_warning_levels(None))
        .await?;
    let public = matches!(caller, Caller::Public);
    let views: Vec<WarningLevelView> = rows
        .iter()
        .filter_map(|row| WarningLevelView::of(row, now))
        .map(|v| if public { v.without_people() } else { v })
        .collect();
    let in_force = views.iter().filter(|v| v.in_force).cloned().collect();
    let answer = WarningLevels {
        in_force,
        history: views,
    };
    Ok(Json(serde_json::to_value(answer).unwrap_or_default()))
}

/// Warning levels change targets and paging across a scope: only admins set them.
fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    match caller {
        Caller::Public => Err(ApiError::MissingToken),
        Caller::Token {
            role: Role::Admin, ..
        } => Ok(()),
        Caller::Token { name, role, .. } => Err(ApiError::Forbidden(format!(
            "{name:?} has role {}; warning levels need admin",
            role.as_str()
        ))),
    }
}
