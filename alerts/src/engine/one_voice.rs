//! Exactly one voice per alert (docs/design.md#cluster-instance): a city instance
//! leaves the notifications of a cluster that runs its own instance to the officers'
//! and cluster contacts' own instance, which reaches them over local channels when the
//! city cannot, and keeps the district and city escalations, which only the city makes.
//! The city still evaluates those towns' alerts: its board, API and escalation clock
//! follow them as before.

use reserve::registry::TownIdx;

use super::Engine;
use crate::alert::LEVEL_TOWN;

/// The escalation level of cluster contacts: town officers are [`LEVEL_TOWN`], below.
const LEVEL_CLUSTER: u8 = LEVEL_TOWN + 1;

impl Engine {
    /// Leaves the town- and cluster-level notifications of these clusters (registry ids,
    /// checked at load) to their own instances.
    pub fn with_clusters_with_own_instance(mut self, clusters: Vec<String>) -> Engine {
        self.clusters_with_own_instance = clusters;
        self
    }

    /// `(level, contact index)` of everyone this instance tells about `town`.
    pub(super) fn audience_of(&self, town: TownIdx) -> Vec<(u8, usize)> {
        let mut audience = self.audience.of(&self.registry, town);
        if self.left_to_cluster_instance(town) {
            audience.retain(|&(level, _)| level > LEVEL_CLUSTER);
        }
        audience
    }

    /// By name, not index: a registry reload renumbers clusters.
    fn left_to_cluster_instance(&self, town: TownIdx) -> bool {
        if self.clusters_with_own_instance.is_empty() {
            return false;
        }
        let cluster = &self.registry.clusters[self.registry.town(town).cluster.index()];
        self.clusters_with_own_instance
            .iter()
            .any(|c| c.as_str() == cluster.id.as_str())
    }
}
