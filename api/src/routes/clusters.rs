//! Clusters (组团): towns grouped to aid each other, and the aid plan.

use axum::Json;
use axum::extract::State;
use reserve::Ledger;
use reserve::registry::{ClusterIdx, TownIdx};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::aid::{AidNeed, mutual_aid};
use crate::error::{ApiError, Entity, ErrorBody};
use crate::extract::ApiPath;
use crate::model::{Status, StatusCounts, TownSummary, people, towns_by_cluster, towns_of_cluster};

#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterSummary {
    pub id: String,
    pub name: String,
    pub towns: StatusCounts,
    /// Residents plus sheltered, over the cluster's towns.
    pub population: u64,
    /// Fewest days of supply of any of its towns.
    pub worst_days: Option<f64>,
    /// The town with the fewest days.
    pub worst_town: Option<String>,
    /// The cluster's own instance as this one hears it, when the cluster has one
    /// (`[alerts] clusters_with_own_instance`; docs/design.md#cluster-instance).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<alerts::cluster_voice::InstanceView>,
}

impl ClusterSummary {
    fn of(ledger: &Ledger, cluster: ClusterIdx, towns: &[TownIdx]) -> ClusterSummary {
        let registry = ledger.registry();
        let mut counts = StatusCounts::default();
        let mut population = 0;
        let mut worst: Option<(f64, TownIdx)> = None;
        for &t in towns {
            let figures = ledger.figures(t);
            counts.add(Status::from(figures.status));
            population = people(ledger, t).saturating_add(population);
            if let Some(d) = figures.worst_days
                && worst.is_none_or(|(w, _)| d < w)
            {
                worst = Some((d, t));
            }
        }
        let cluster = &registry.clusters[cluster.index()];
        ClusterSummary {
            id: cluster.id.to_string(),
            name: cluster.name.clone(),
            towns: counts,
            population,
            worst_days: worst.map(|(d, _)| d),
            worst_town: worst.map(|(_, t)| registry.town(t).id.to_string()),
            instance: None,
        }
    }

    /// With its own instance's status, when this instance follows it.
    fn with_instance(mut self, state: &AppState) -> ClusterSummary {
        self.instance = state.alerts().and_then(|alerts| {
            alerts
                .cluster_voices()
                .instance(&self.id, chrono::Utc::now())
        });
        self
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterList {
    /// In registry order.
    pub clusters: Vec<ClusterSummary>,
}

/// Clusters with their towns' status counts.
#[utoipa::path(get, path = "/api/v1/clusters", tag = "clusters",
    responses(
        (status = 200, body = ClusterList),
        (status = 401, description = "A token is needed", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state))]
pub(super) async fn list_clusters(State(state): State<AppState>) -> Json<ClusterList> {
    let ledger = state.ledger();
    let clusters = towns_by_cluster(&ledger)
        .iter()
        .enumerate()
        .map(|(c, towns)| {
            ClusterSummary::of(&ledger, ClusterIdx::from_index(c), towns).with_instance(&state)
        })
        .collect();
    Json(ClusterList { clusters })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterDetail {
    pub cluster: ClusterSummary,
    /// The cluster's towns, in registry order.
    pub towns: Vec<TownSummary>,
    /// For each town below target in a category, what the other towns can send while
    /// keeping their own `warn_days`: nearest donors first, spare stock promised once,
    /// most urgent need first. Amounts are in the category's unit.
    pub mutual_aid: Vec<AidNeed>,
}

/// A cluster's towns and its mutual-aid plan.
#[utoipa::path(get, path = "/api/v1/clusters/{id}", tag = "clusters",
    params(("id" = String, Path, description = "Cluster id, e.g. `c01`")),
    responses(
        (status = 200, body = ClusterDetail),
        (status = 401, description = "A token is needed", body = ErrorBody),
        (status = 404, description = "Unknown cluster (`unknown_cluster`)", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state))]
pub(super) async fn cluster(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ClusterDetail>, ApiError> {
    let ledger = state.ledger();
    let c = ledger
        .registry()
        .cluster_idx(&id)
        .ok_or_else(|| ApiError::not_found(Entity::Cluster, &id))?;
    let towns = towns_of_cluster(&ledger, c);
    Ok(Json(ClusterDetail {
        cluster: ClusterSummary::of(&ledger, c, &towns).with_instance(&state),
        towns: towns.iter().map(|&t| TownSummary::of(&ledger, t)).collect(),
        mutual_aid: mutual_aid(&ledger, &towns),
    }))
}
