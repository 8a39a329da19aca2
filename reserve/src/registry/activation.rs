//! The activation table (一表, 启用流程表): the ordered steps that turn a shelter from
//! everyday use into a shelter, each with who does it and by when
//! (docs/design.md#activation-table).
//!
//! A plan applies to a dual-use type (every school) or to named shelters; a shelter's
//! plan is the one naming it, else its type's, else none.

use std::collections::HashMap;
use std::time::Duration;

use super::{DualUse, FacilityIdx, FacilityKind, Registry};

/// One plan, as the registry lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationPlan {
    pub applies_to: PlanFor,
    /// In the order they are to be done; never empty.
    pub steps: Vec<PlanStep>,
}

/// What a plan applies to.
#[derive(Debug, Clone, PartialEq)]
pub enum PlanFor {
    /// Every shelter of this everyday use that no plan names.
    DualUse(DualUse),
    /// These shelters, whatever their use.
    Shelters(Vec<FacilityIdx>),
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanStep {
    /// What to do, as people say it (often both languages: "通知运营方 Notify the operator").
    pub name: String,
    /// Who does it: the contact's email, or its name when it has none (names repeat
    /// in a city). A key, not an index, so that a registry narrowed to a shard's towns
    /// keeps the plan, and the alert engine finds the contact by it.
    pub contact: String,
    /// Due this long after the activation starts; > 0.
    pub within: Duration,
}

/// The plans with each shelter's and each type's found without a scan.
#[derive(Debug, Clone, Default)]
pub(super) struct ActivationPlans {
    all: Vec<ActivationPlan>,
    by_shelter: HashMap<FacilityIdx, usize>,
    by_use: HashMap<DualUse, usize>,
}

impl Registry {
    /// The registry with these plans (replacing any it had). The caller (the loader, a
    /// test) guarantees each index is a shelter in range, and that no
    /// shelter or type has two plans (the last would win).
    pub fn with_activation_plans(mut self, plans: Vec<ActivationPlan>) -> Registry {
        let mut by_shelter = HashMap::new();
        let mut by_use = HashMap::new();
        for (i, plan) in plans.iter().enumerate() {
            match &plan.applies_to {
                PlanFor::DualUse(use_) => {
                    by_use.insert(*use_, i);
                }
                PlanFor::Shelters(shelters) => {
                    by_shelter.extend(shelters.iter().map(|&f| (f, i)));
                }
            }
        }
        self.activation_plans = ActivationPlans {
            all: plans,
            by_shelter,
            by_use,
        };
        self
    }

    /// The plans for a registry keeping only the facilities `kept` maps (old index to
    /// new, docs/design.md#scale-out-by-town): a plan naming shelters keeps those that
    /// remain, and is dropped when none does.
    pub fn activation_plans_kept(&self, kept: &[Option<usize>]) -> Vec<ActivationPlan> {
        let remap = |f: &FacilityIdx| kept.get(f.index()).copied().flatten();
        self.activation_plans
            .all
            .iter()
            .filter_map(|plan| {
                let applies_to = match &plan.applies_to {
                    PlanFor::DualUse(u) => PlanFor::DualUse(*u),
                    PlanFor::Shelters(shelters) => {
                        let left: Vec<FacilityIdx> = shelters
                            .iter()
                            .filter_map(remap)
                            .map(FacilityIdx::from_index)
                            .collect();
                        if left.is_empty() {
                            return None;
                        }
                        PlanFor::Shelters(left)
                    }
                };
                Some(ActivationPlan {
                    applies_to,
                    steps: plan.steps.clone(),
                })
            })
            .collect()
    }

    /// Every plan, in registry order.
    pub fn activation_plans(&self) -> &[ActivationPlan] {
        &self.activation_plans.all
    }

    /// Shelter `f`'s plan: the one naming it, else its type's; `None` for a shelter
    /// without one and for any other facility.
    pub fn activation_plan(&self, f: FacilityIdx) -> Option<&ActivationPlan> {
        let plans = &self.activation_plans;
        let FacilityKind::Shelter(spec) = &self.facility(f).kind else {
            return None;
        };
        let i = plans
            .by_shelter
            .get(&f)
            .or_else(|| plans.by_use.get(&spec.dual_use))?;
        plans.all.get(*i)
    }
}
