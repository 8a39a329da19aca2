//! A part of the city named in text: `city`, `district:<id>`, `cluster:<id>`,
//! `towns:<id>,<id>` (or `town:<id>`). Drills and the resource list read the same
//! grammar, so an operator writes a scope one way everywhere.

use std::fmt;

use super::{ClusterIdx, DistrictIdx, Registry, TownIdx};

/// Which towns something covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    City,
    District(DistrictIdx),
    Cluster(ClusterIdx),
    /// In the order named, each once.
    Towns(Vec<TownIdx>),
}

/// Why a scope does not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeError {
    /// Not of the grammar.
    Malformed(String),
    /// Of the grammar, naming a district, cluster or town the registry does not have.
    Unknown { kind: &'static str, id: String },
}

impl fmt::Display for ScopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeError::Malformed(s) => write!(
                f,
                "expected city, district:<id>, cluster:<id> or towns:<id>,<id>, got {s:?}"
            ),
            ScopeError::Unknown { kind, id } => write!(f, "unknown {kind} {id:?}"),
        }
    }
}

impl std::error::Error for ScopeError {}

impl Scope {
    pub fn parse(registry: &Registry, s: &str) -> Result<Scope, ScopeError> {
        let s = s.trim();
        if s == "city" {
            return Ok(Scope::City);
        }
        let unknown = |kind, id: &str| ScopeError::Unknown {
            kind,
            id: id.to_owned(),
        };
        match s.split_once(':') {
            Some(("district", id)) => registry
                .district_idx(id)
                .map(Scope::District)
                .ok_or_else(|| unknown("district", id)),
            Some(("cluster", id)) => registry
                .cluster_idx(id)
                .map(Scope::Cluster)
                .ok_or_else(|| unknown("cluster", id)),
            Some(("towns" | "town", ids)) => {
                let mut towns = Vec::new();
                for id in ids.split(',').map(str::trim) {
                    let town = registry.town_idx(id).ok_or_else(|| unknown("town", id))?;
                    if !towns.contains(&town) {
                        towns.push(town);
                    }
                }
                Ok(Scope::Towns(towns))
            }
            _ => Err(ScopeError::Malformed(s.to_owned())),
        }
    }

    /// The scope as [`Scope::parse`] reads it.
    pub fn to_text(&self, registry: &Registry) -> String {
        match self {
            Scope::City => "city".to_owned(),
            Scope::District(d) => format!("district:{}", registry.districts[d.index()].id),
            Scope::Cluster(c) => format!("cluster:{}", registry.clusters[c.index()].id),
            Scope::Towns(towns) => {
                let ids: Vec<&str> = towns
                    .iter()
                    .map(|&t| registry.town(t).id.as_str())
                    .collect();
                format!("towns:{}", ids.join(","))
            }
        }
    }

    pub fn covers(&self, registry: &Registry, town: TownIdx) -> bool {
        let t = registry.town(town);
        match self {
            Scope::City => true,
            Scope::District(d) => t.district == *d,
            Scope::Cluster(c) => t.cluster == *c,
            Scope::Towns(towns) => towns.contains(&town),
        }
    }

    /// The towns covered, in registry order (named towns in the order named).
    pub fn towns(&self, registry: &Registry) -> Vec<TownIdx> {
        match self {
            Scope::Towns(towns) => towns.clone(),
            _ => registry
                .town_indices()
                .filter(|&t| self.covers(registry, t))
                .collect(),
        }
    }
}
