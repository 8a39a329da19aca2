//! `GET /api/v1/overview`: the city at a glance.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::ErrorBody;
use crate::model::{Status, StatusCounts, TownSummary, people};

/// Towns listed as the worst in the overview.
const WORST_TOWNS: usize = 10;

#[derive(Debug, Serialize, ToSchema)]
pub struct Overview {
    pub towns: StatusCounts,
    /// Towns whose figures are a floor (a facility silent or never reported).
    pub unverified_towns: u64,
    pub population: PopulationCoverage,
    /// Up to ten towns with the fewest days of supply, fewest first.
    pub worst_towns: Vec<TownSummary>,
    pub ingest: IngestView,
    pub computed_at: DateTime<Utc>,
}

/// People (residents plus sheltered) by how their town stands against the target.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct PopulationCoverage {
    pub total: u64,
    pub sheltered: u64,
    /// In towns holding at least the target in every category (status ok or warning).
    pub covered: u64,
    /// In towns below target in some category (status critical).
    pub below_target: u64,
    /// In towns none of whose facilities has reported.
    pub unknown: u64,
}

/// Ingest counters since the service started.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestView {
    pub connected: bool,
    pub received: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub older: u64,
    pub rejected: u64,
    /// Rejects by reason id.
    pub rejected_by_reason: BTreeMap<String, u64>,
}

/// Counts of towns by status, population covered, the worst towns, ingest counters.
#[utoipa::path(get, path = "/api/v1/overview", tag = "towns",
    responses(
        (status = 200, body = Overview),
        (status = 401, description = "A token is needed", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state))]
pub(super) async fn overview(State(state): State<AppState>) -> Json<Overview> {
    let (towns, unverified_towns, population, worst_towns) = {
        let ledger = state.ledger();
        let mut towns = StatusCounts::default();
        let mut unverified = 0;
        let mut population = PopulationCoverage::default();
        let mut known = Vec::new();
        for t in ledger.registry().town_indices() {
            let figures = ledger.figures(t);
            let status = Status::from(figures.status);
            towns.add(status);
            unverified += u64::from(!figures.verified);
            let people = people(&ledger, t);
            population.total += people;
            population.sheltered += figures.sheltered;
            match status {
                Status::Ok | Status::Warning => population.covered += people,
                Status::Critical => population.below_target += people,
                Status::Unknown => population.unknown += people,
            }
            if let Some(days) = figures.worst_days {
                known.push((days, t));
            }
        }
        known.sort_by(|a, b| a.0.total_cmp(&b.0));
        let worst: Vec<TownSummary> = known
            .iter()
            .take(WORST_TOWNS)
            .map(|&(_, t)| TownSummary::of(&ledger, t))
            .collect();
        (towns, unverified, population, worst)
    };
    let counts = state.ingest().counts();
    Json(Overview {
        towns,
        unverified_towns,
        population,
        worst_towns,
        ingest: IngestView {
            connected: counts.connected,
            received: counts.received,
            accepted: counts.accepted,
            duplicates: counts.duplicates,
            older: counts.older,
            rejected: counts.rejected_total(),
            rejected_by_reason: counts
                .rejected
                .iter()
                .map(|(reason, n)| ((*reason).to_owned(), *n))
                .collect(),
        },
        computed_at: Utc::now(),
    })
}
