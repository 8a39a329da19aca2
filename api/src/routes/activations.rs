//! The activation table (一表, docs/design.md#activation-table): start an activation of
//! shelters over a scope, mark its steps done, close it; list each activation's
//! progress. Each change is one store transaction with its audit row (and its
//! `activation` InfluxDB lines), then applied to the shared view the alert engine
//! evaluates, whose shelters' towns are announced changed.

use std::collections::BTreeSet;

use alerts::activation::SharedActivations;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use reserve::Ledger;
use reserve::registry::{FacilityKind, Registry, TownIdx};
use serde::{Deserialize, Serialize};
use store::{
    ActivationRow, ActivationShelter, ActivationState, ActivationStep, NewActivation, Origin,
    StartRefused, StepDone, StepOutcome,
};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorBody, ErrorDetail};
use crate::extract::{ApiJson, ApiPath, ApiQuery};

/// The longest reason, scenario or note kept.
const MAX_TEXT_CHARS: usize = 500;
/// Most shelters one activation covers: a whole cluster's, with room.
const MAX_SHELTERS: usize = 1000;
/// Most activations one list answers.
const LIST_LIMIT: usize = 500;

/// What to activate: exactly one of `shelters`, `towns`, `cluster`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivationScope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shelters: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub towns: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// An activation to start.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartActivation {
    pub scope: ActivationScope,
    /// Why, for the board and the audit log.
    #[schema(example = "暴雨红色预警 Red rainstorm warning")]
    pub reason: String,
    /// The scenario it answers (`flood`, `earthquake`, …), if any.
    #[serde(default)]
    pub scenario: Option<String>,
}

/// A step marked done.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepDoneRequest {
    #[serde(default)]
    pub note: Option<String>,
    /// The shelter whose step it is; required when the activation covers several.
    #[serde(default)]
    pub shelter: Option<String>,
}

/// An activation and its progress.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActivationView {
    pub id: i64,
    /// `open` or `closed`.
    pub state: &'static str,
    #[schema(value_type = Object)]
    pub scope: serde_json::Value,
    pub reason: String,
    pub scenario: Option<String>,
    /// Left out without a token.
    pub started_by: Option<String>,
    pub started_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    pub closed_by: Option<String>,
    pub towns: Vec<String>,
    /// People its shelters take.
    pub capacity_asked: u64,
    /// People its shelters now `open` take.
    pub capacity_opened: u64,
    pub steps_total: usize,
    pub steps_done: usize,
    /// Not done and not yet due.
    pub steps_due: usize,
    /// Not done and past due.
    pub steps_overdue: usize,
    pub shelters: Vec<ShelterProgress>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ShelterProgress {
    pub id: String,
    pub name: Option<String>,
    pub town: String,
    pub capacity: u64,
    /// Its latest mode (`normal`, `activating`, `open`, `closed`); null before any reading.
    pub mode: Option<&'static str>,
    pub steps: Vec<StepView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StepView {
    pub n: u32,
    pub name: String,
    /// Who does it: the contact's email, or its name when it has none. Left out
    /// without a token: it names a person.
    pub contact: Option<String>,
    /// The contact's name, when the registry still has it; left out without a token.
    pub contact_name: Option<String>,
    pub due_at: DateTime<Utc>,
    /// `done`, `due` (not yet due) or `overdue`.
    pub state: &'static str,
    pub done_at: Option<DateTime<Utc>>,
    /// Left out without a token.
    pub done_by: Option<String>,
    pub note: Option<String>,
}

/// Why an activation request was refused: an [`ApiError`], or a 404/409 of this
/// resource with its own code.
#[derive(Debug)]
pub enum ActivationError {
    Api(ApiError),
    /// 404 `unknown_activation`, `unknown_step`.
    NotFound {
        code: &'static str,
        message: String,
    },
    /// 409 `shelter_already_activating`, `activation_closed`, `step_already_done`.
    Conflict {
        code: &'static str,
        message: String,
        field: Option<String>,
    },
}

impl From<ApiError> for ActivationError {
    fn from(e: ApiError) -> Self {
        ActivationError::Api(e)
    }
}

impl IntoResponse for ActivationError {
    fn into_response(self) -> Response {
        let (status, code, message, field) = match self {
            ActivationError::Api(e) => return e.into_response(),
            ActivationError::NotFound { code, message } => {
                (StatusCode::NOT_FOUND, code, message, None)
            }
            ActivationError::Conflict {
                code,
                message,
                field,
            } => (StatusCode::CONFLICT, code, message, field),
        };
        let error = ErrorDetail {
            code: code.to_owned(),
            message,
            field,
        };
        (status, Json(ErrorBody { error })).into_response()
    }
}

fn unknown_activation(id: &str) -> ActivationError {
    ActivationError::NotFound {
        code: "unknown_activation",
        message: format!("unknown activation {id:?}"),
    }
}

/// Starts an activation: what `POST /api/v1/activations` does after its permission
/// check, and what warning levels call to pre-activate shelters (`started_by` names
/// who or what: a token's name, `warning-level`; `via` is `token` or how else). The
/// scope is checked against the registry the ledger is on now; nothing is stored when
/// any part is wrong.
pub async fn start(
    state: &AppState,
    request: StartActivation,
    started_by: &str,
    via: &str,
) -> Result<ActivationView, ActivationError> {
    let now = Utc::now();
    let (new, towns) = {
        let ledger = state.ledger();
        let shelters = scope_shelters(ledger.registry(), &request.scope)?;
        let reason = text(&request.reason, "reason", true)?;
        let scenario = match &request.scenario {
            Some(s) => Some(text(s, "scenario", true)?),
            None => None,
        };
        let new = NewActivation {
            scope: serde_json::to_string(&request.scope).unwrap_or_default(),
            reason,
            scenario,
            started_by: started_by.to_owned(),
            started_at: now,
            shelters: shelters
                .iter()
                .map(|&f| shelter_of(ledger.registry(), f, now))
                .collect(),
        };
        let towns = town_indices(ledger.registry(), &new.shelters);
        (new, towns)
    };
    let (by, via, remote) = (
        started_by.to_owned(),
        via.to_owned(),
        crate::audit::origin(),
    );
    let outcome = state
        .with_store(move |s| {
            let origin = Origin {
                by: &by,
                via: &via,
                remote: &remote,
            };
            s.start_activation(&new, origin)
        })
        .await?;
    let row = outcome.map_err(
        |StartRefused::AlreadyActivating {
             shelter,
             activation,
         }| {
            ActivationError::Conflict {
                code: "shelter_already_activating",
                message: format!("shelter {shelter:?} is already in open activation {activation}"),
                field: Some("scope".into()),
            }
        },
    )?;
    tracing::info!(
        message = "Activation started.",
        activation = row.id,
        shelters = row.activation.shelters.len(),
        by = %started_by
    );
    applied(state, &row, towns);
    Ok(view(&state.ledger(), &row, now, true))
}

/// Registry shelters of `scope`, in registry order, each once; a 422 naming the field
/// for a scope that names nothing known or holds no shelter.
fn scope_shelters(
    registry: &Registry,
    scope: &ActivationScope,
) -> Result<Vec<reserve::registry::FacilityIdx>, ApiError> {
    let is_shelter = |f: &reserve::registry::FacilityIdx| {
        matches!(registry.facility(*f).kind, FacilityKind::Shelter(_))
    };
    let found: Vec<_> = match (&scope.shelters, &scope.towns, &scope.cluster) {
        (Some(ids), None, None) => ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let field = format!("scope.shelters[{i}]");
                match registry.facility_idx(id) {
                    Some(f) if is_shelter(&f) => Ok(f),
                    Some(_) => Err(ApiError::invalid_field(
                        &field,
                        format!("{id:?} is not a shelter"),
                    )),
                    None => Err(ApiError::invalid_field(
                        &field,
                        format!("unknown shelter {id:?}"),
                    )),
                }
            })
            .collect::<Result<_, _>>()?,
        (None, Some(ids), None) => {
            let mut found = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                let town = registry.town_idx(id).ok_or_else(|| {
                    ApiError::invalid_field(
                        &format!("scope.towns[{i}]"),
                        format!("unknown town {id:?}"),
                    )
                })?;
                found.extend(
                    registry
                        .town(town)
                        .facilities
                        .iter()
                        .copied()
                        .filter(is_shelter),
                );
            }
            found
        }
        (None, None, Some(id)) => {
            let cluster = registry.cluster_idx(id).ok_or_else(|| {
                ApiError::invalid_field("scope.cluster", format!("unknown cluster {id:?}"))
            })?;
            registry
                .town_indices()
                .filter(|&t| registry.town(t).cluster == cluster)
                .flat_map(|t| registry.town(t).facilities.iter().copied())
                .filter(is_shelter)
                .collect()
        }
        _ => {
            return Err(ApiError::invalid_field(
                "scope",
                "give exactly one of shelters, towns, cluster",
            ));
        }
    };
    let mut unique: Vec<_> = found
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    unique.truncate(MAX_SHELTERS + 1);
    if unique.is_empty() {
        return Err(ApiError::invalid_field("scope", "holds no shelter"));
    }
    if unique.len() > MAX_SHELTERS {
        return Err(ApiError::invalid_field(
            "scope",
            format!("holds more than {MAX_SHELTERS} shelters"),
        ));
    }
    Ok(unique)
}

/// A shelter of a new activation: its plan's steps due from `start`.
fn shelter_of(
    registry: &Registry,
    f: reserve::registry::FacilityIdx,
    start: DateTime<Utc>,
) -> ActivationShelter {
    let facility = registry.facility(f);
    let capacity = match &facility.kind {
        FacilityKind::Shelter(spec) => spec.capacity,
        _ => 0,
    };
    let steps = registry
        .activation_plan(f)
        .map(|plan| {
            plan.steps
                .iter()
                .enumerate()
                .map(|(i, step)| ActivationStep {
                    n: i as u32 + 1,
                    name: step.name.clone(),
                    contact: step.contact.clone(),
                    due_at: start + alerts_duration(step.within),
                    done: None,
                })
                .collect()
        })
        .unwrap_or_default();
    ActivationShelter {
        shelter: facility.id.to_string(),
        town: registry.town(facility.town).id.to_string(),
        capacity,
        steps,
    }
}

/// The name of the contact a step names by `key`, if the registry still has it.
fn contact_name(registry: &Registry, key: &str) -> Option<String> {
    registry
        .contacts
        .iter()
        .find(|c| c.email.as_deref() == Some(key) || (c.email.is_none() && c.name == key))
        .map(|c| c.name.clone())
}

fn alerts_duration(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// A free text of the request, trimmed and at most [`MAX_TEXT_CHARS`].
fn text(value: &str, field: &str, required: bool) -> Result<String, ApiError> {
    let value = value.trim();
    if required && value.is_empty() {
        return Err(ApiError::invalid_field(field, "must not be empty"));
    }
    if value.chars().count() > MAX_TEXT_CHARS {
        return Err(ApiError::invalid_field(
            field,
            format!("at most {MAX_TEXT_CHARS} characters"),
        ));
    }
    Ok(value.to_owned())
}

fn town_indices(registry: &Registry, shelters: &[ActivationShelter]) -> Vec<TownIdx> {
    shelters
        .iter()
        .filter_map(|s| registry.town_idx(&s.town))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// After a commit: the engine's view takes the change, and the towns are announced so
/// it evaluates them now.
fn applied(state: &AppState, row: &ActivationRow, towns: Vec<TownIdx>) {
    {
        let mut view = state
            .activations()
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        view.apply(row);
    }
    state.changes().publish(towns);
}

/// `row` as the API shows it, with each step's state at `now` and its shelters' modes
/// from the ledger; `people` false leaves out who did what (public reads).
fn view(ledger: &Ledger, row: &ActivationRow, now: DateTime<Utc>, people: bool) -> ActivationView {
    let registry = ledger.registry();
    let a = &row.activation;
    let shelters: Vec<ShelterProgress> = a
        .shelters
        .iter()
        .map(|s| {
            let f = registry.facility_idx(&s.shelter);
            let mode = f
                .and_then(|f| ledger.shelter(f))
                .map(|(_, latest)| latest.obs.mode.as_str());
            ShelterProgress {
                id: s.shelter.clone(),
                name: f.map(|f| registry.facility(f).name.clone()),
                town: s.town.clone(),
                capacity: s.capacity,
                mode,
                steps: s
                    .steps
                    .iter()
                    .map(|st| step_view(registry, st, now, people))
                    .collect(),
            }
        })
        .collect();
    let steps = || shelters.iter().flat_map(|s| s.steps.iter());
    let count = |state: &str| steps().filter(|s| s.state == state).count();
    ActivationView {
        id: row.id,
        state: if row.is_open() { "open" } else { "closed" },
        scope: serde_json::from_str(&a.scope).unwrap_or(serde_json::Value::Null),
        reason: a.reason.clone(),
        scenario: a.scenario.clone(),
        started_by: people.then(|| a.started_by.clone()),
        started_at: a.started_at,
        closed_at: row.closed.as_ref().map(|(at, _)| *at),
        closed_by: row
            .closed
            .as_ref()
            .filter(|_| people)
            .map(|(_, by)| by.clone()),
        towns: row.towns(),
        capacity_asked: shelters.iter().map(|s| s.capacity).sum(),
        capacity_opened: shelters
            .iter()
            .filter(|s| s.mode == Some("open"))
            .map(|s| s.capacity)
            .sum(),
        steps_total: steps().count(),
        steps_done: count("done"),
        steps_due: count("due"),
        steps_overdue: count("overdue"),
        shelters,
    }
}

fn step_view(
    registry: &Registry,
    step: &ActivationStep,
    now: DateTime<Utc>,
    people: bool,
) -> StepView {
    let state = match &step.done {
        Some(_) => "done",
        None if step.due_at <= now => "overdue",
        None => "due",
    };
    StepView {
        n: step.n,
        name: step.name.clone(),
        contact: people.then(|| step.contact.clone()),
        contact_name: people
            .then(|| contact_name(registry, &step.contact))
            .flatten(),
        due_at: step.due_at,
        state,
        done_at: step.done.as_ref().map(|d| d.at),
        done_by: step.done.as_ref().filter(|_| people).map(|d| d.by.clone()),
        note: step
            .done
            .as_ref()
            .filter(|_| people)
            .map(|d| d.note.clone()),
    }
}

/// Who may change an activation over `towns` (never empty): an admin, or an officer
/// responsible for every one of them.
fn require_towns(caller: &Caller, towns: &[String]) -> Result<(), ApiError> {
    for town in towns {
        let id = town
            .parse()
            .map_err(|_| ApiError::Internal(format!("stored town {town:?} is not an id")))?;
        caller.require_town(&id)?;
    }
    Ok(())
}

/// Starts an activation of the shelters of a scope (officers for their towns, admins
/// any): each shelter's plan becomes steps due from now. Recorded in the audit log.
#[utoipa::path(post, path = "/api/v1/activations", tag = "facilities",
    request_body = StartActivation,
    responses(
        (status = 201, description = "The activation, its shelters and steps with due times, the capacity it asks", body = ActivationView),
        (status = 400, description = "Body is not JSON", body = ErrorBody),
        (status = 401, description = "A token is needed", body = ErrorBody),
        (status = 403, description = "Not an officer of every town of the scope, nor an admin", body = ErrorBody),
        (status = 409, description = "A shelter is already in an open activation (`shelter_already_activating`)", body = ErrorBody),
        (status = 422, description = "A scope naming an unknown shelter, town or cluster, or holding no shelter; an empty reason; `field` names it", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state, body), fields(caller = caller.name()))]
pub(super) async fn start_activation(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<ApiJson<StartActivation>, ApiError>,
) -> Result<(StatusCode, Json<ActivationView>), ActivationError> {
    if matches!(caller, Caller::Public) {
        return Err(ApiError::MissingToken.into());
    }
    let ApiJson(request) = body?;
    let towns: Vec<String> = {
        let ledger = state.ledger();
        let registry = ledger.registry();
        scope_shelters(registry, &request.scope)?
            .into_iter()
            .map(|f| registry.town(registry.facility(f).town).id.to_string())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    require_towns(&caller, &towns)?;
    let activation = start(&state, request, caller.name(), "token").await?;
    Ok((StatusCode::CREATED, Json(activation)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ActivationsQuery {
    /// `open` (default), `closed` or `all`.
    state: Option<String>,
}

/// Activations newest first with their progress (officers: those touching their
/// towns). Without a token, who started them and who did each step are left out.
#[utoipa::path(get, path = "/api/v1/activations", tag = "facilities",
    params(ActivationsQuery),
    responses(
        (status = 200, body = Vec<ActivationView>),
        (status = 400, description = "Unknown query parameter or value (`invalid_query`)", body = ErrorBody),
        (status = 401, description = "A token is needed", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state))]
pub(super) async fn list_activations(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ActivationsQuery>,
) -> Result<Json<Vec<ActivationView>>, ApiError> {
    let which = match query.state.as_deref() {
        None | Some("open") => ActivationState::Open,
        Some("closed") => ActivationState::Closed,
        Some("all") => ActivationState::All,
        Some(other) => {
            return Err(ApiError::invalid_query(
                "state",
                format!("{other:?} is not open, closed or all"),
            ));
        }
    };
    let rows = state
        .with_store(move |s| s.activations(which, LIST_LIMIT))
        .await?;
    let now = Utc::now();
    let ledger = state.ledger();
    let people = !matches!(caller, Caller::Public);
    Ok(Json(
        rows.iter()
            .filter(|row| visible(&caller, row))
            .map(|row| view(&ledger, row, now, people))
            .collect(),
    ))
}

/// Officers see the activations touching their towns; everyone else every one.
fn visible(caller: &Caller, row: &ActivationRow) -> bool {
    match caller {
        Caller::Token {
            role: Role::Officer,
            towns,
            ..
        } => row
            .towns()
            .iter()
            .any(|t| towns.iter().any(|mine| mine.as_str() == t)),
        _ => true,
    }
}

/// One activation with its progress.
#[utoipa::path(get, path = "/api/v1/activations/{id}", tag = "facilities",
    params(("id" = i64, Path, description = "Activation id")),
    responses(
        (status = 200, body = ActivationView),
        (status = 401, description = "A token is needed", body = ErrorBody),
        (status = 403, description = "An officer, and none of its towns", body = ErrorBody),
        (status = 404, description = "No such activation (`unknown_activation`)", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state))]
pub(super) async fn get_activation(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ActivationView>, ActivationError> {
    let row = load(&state, &id).await?;
    if !visible(&caller, &row) {
        let message = format!("activation {id} is not in {:?}'s towns", caller.name());
        return Err(ApiError::Forbidden(message).into());
    }
    let people = !matches!(caller, Caller::Public);
    Ok(Json(view(&state.ledger(), &row, Utc::now(), people)))
}

async fn load(state: &AppState, id: &str) -> Result<ActivationRow, ActivationError> {
    let number: i64 = id.parse().map_err(|_| unknown_activation(id))?;
    state
        .with_store(move |s| s.activation(number))
        .await?
        .ok_or_else(|| unknown_activation(id))
}

/// Marks step `n` of a shelter done (officers of the shelter's town, admins), with an
/// optional note; `shelter` is needed when the activation covers several. Its
/// `activation_step_overdue` alert, if any, resolves. Recorded in the audit log.
#[utoipa::path(post, path = "/api/v1/activations/{id}/steps/{n}", tag = "facilities",
    params(("id" = i64, Path, description = "Activation id"), ("n" = u32, Path, description = "Step number, from 1")),
    request_body = StepDoneRequest,
    responses(
        (status = 200, description = "The activation with the step done", body = ActivationView),
        (status = 401, description = "A token is needed", body = ErrorBody),
        (status = 403, description = "Not an officer of the shelter's town, nor an admin", body = ErrorBody),
        (status = 404, description = "No such activation (`unknown_activation`), shelter in it or step (`unknown_step`)", body = ErrorBody),
        (status = 409, description = "The activation is closed (`activation_closed`) or the step done already (`step_already_done`)", body = ErrorBody),
        (status = 422, description = "`shelter` missing for an activation of several shelters, a note too long; `field` names it", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state, body), fields(caller = caller.name()))]
pub(super) async fn mark_step(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, n)): ApiPath<(String, String)>,
    body: Result<ApiJson<StepDoneRequest>, ApiError>,
) -> Result<Json<ActivationView>, ActivationError> {
    if matches!(caller, Caller::Public) {
        return Err(ApiError::MissingToken.into());
    }
    let ApiJson(request) = body?;
    let row = load(&state, &id).await?;
    let unknown_step = |message: String| ActivationError::NotFound {
        code: "unknown_step",
        message,
    };
    let step: u32 = n
        .parse()
        .map_err(|_| unknown_step(format!("unknown step {n:?}")))?;
    let shelter = match (request.shelter, &row.activation.shelters[..]) {
        (Some(s), shelters) => shelters
            .iter()
            .find(|x| x.shelter == s)
            .ok_or_else(|| unknown_step(format!("activation {id} does not cover shelter {s:?}")))?,
        (None, [only]) => only,
        (None, _) => {
            let message = "the activation covers several shelters: say which";
            return Err(ApiError::invalid_field("shelter", message).into());
        }
    };
    require_towns(&caller, std::slice::from_ref(&shelter.town))?;
    let note = text(request.note.as_deref().unwrap_or(""), "note", false)?;
    let done = StepDone {
        at: Utc::now(),
        by: caller.name().to_owned(),
        note,
    };
    let (number, shelter_id) = (row.id, shelter.shelter.clone());
    let (by, remote) = (caller.name().to_owned(), crate::audit::origin());
    let outcome = state
        .with_store(move |s| {
            let origin = Origin {
                by: &by,
                via: "token",
                remote: &remote,
            };
            s.mark_activation_step(number, &shelter_id, step, &done, origin)
        })
        .await?;
    let row = match outcome {
        StepOutcome::Done(row) => *row,
        StepOutcome::UnknownActivation => return Err(unknown_activation(&id)),
        StepOutcome::Closed => return Err(closed(&id)),
        StepOutcome::UnknownStep => {
            return Err(unknown_step(format!(
                "shelter {:?} has no step {step} in activation {id}",
                shelter.shelter
            )));
        }
        StepOutcome::AlreadyDone(before) => {
            return Err(ActivationError::Conflict {
                code: "step_already_done",
                message: format!("step {step} was done at {} by {}", before.at, before.by),
                field: None,
            });
        }
    };
    tracing::info!(message = "Activation step done.", activation = row.id, step, by = %caller.name());
    let towns = town_indices(state.ledger().registry(), &row.activation.shelters);
    applied(&state, &row, towns);
    Ok(Json(view(&state.ledger(), &row, Utc::now(), true)))
}

fn closed(id: &str) -> ActivationError {
    ActivationError::Conflict {
        code: "activation_closed",
        message: format!("activation {id} is closed"),
        field: None,
    }
}

/// Closes an activation (officers of every town it covers, admins): its shelters are
/// no longer asked to convert, its steps no longer fall due and its
/// `activation_step_overdue` alerts resolve. Recorded in the audit log.
#[utoipa::path(post, path = "/api/v1/activations/{id}/close", tag = "facilities",
    params(("id" = i64, Path, description = "Activation id")),
    responses(
        (status = 200, description = "The activation, closed", body = ActivationView),
        (status = 401, description = "A token is needed", body = ErrorBody),
        (status = 403, description = "Not an officer of every town it covers, nor an admin", body = ErrorBody),
        (status = 404, description = "No such activation (`unknown_activation`)", body = ErrorBody),
        (status = 409, description = "Closed already (`activation_closed`)", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state), fields(caller = caller.name()))]
pub(super) async fn close_activation(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ActivationView>, ActivationError> {
    if matches!(caller, Caller::Public) {
        return Err(ApiError::MissingToken.into());
    }
    let row = load(&state, &id).await?;
    require_towns(&caller, &row.towns())?;
    let (number, by, remote) = (row.id, caller.name().to_owned(), crate::audit::origin());
    let outcome = state
        .with_store(move |s| {
            let origin = Origin {
                by: &by,
                via: "token",
                remote: &remote,
            };
            s.close_activation(number, Utc::now(), origin)
        })
        .await?;
    let row = match outcome {
        None => return Err(unknown_activation(&id)),
        Some((_, false)) => return Err(closed(&id)),
        Some((row, true)) => row,
    };
    tracing::info!(message = "Activation closed.", activation = row.id, by = %caller.name());
    let towns = town_indices(state.ledger().registry(), &row.activation.shelters);
    applied(&state, &row, towns);
    Ok(Json(view(&state.ledger(), &row, Utc::now(), true)))
}

/// The shared view of open activations, for a caller building an [`AppState`].
pub fn empty_view() -> SharedActivations {
    alerts::activation::OpenActivations::shared(&[])
}
