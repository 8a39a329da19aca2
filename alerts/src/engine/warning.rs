//! Warning levels in the alert engine (docs/design.md#warning-levels): a town under a
//! level is told sooner. Its `group_wait` and `escalate_after` are the level's
//! (`[warning_levels.<level>]`) when shorter than the engine's, and its messages say
//! the level in force. The level comes from the ledger with each evaluation, so it
//! follows a level set, ended or run out as the town's figures do.

use std::sync::Arc;

use reserve::Ledger;
use reserve::ledger::TownWarning;
use reserve::registry::TownIdx;

use super::{Engine, Policy};

impl Engine {
    /// The level in force for `town` now, for its timings and messages.
    pub fn note_warning(&mut self, town: TownIdx, warning: Option<TownWarning>) {
        match warning {
            Some(warning) => self.warnings.insert(town, warning),
            None => self.warnings.remove(&town),
        };
    }

    /// The level in force for each of `towns` by the ledger's last refresh; nothing
    /// when the ledger is on another registry already (the next step adopts it).
    pub fn note_warnings(&mut self, ledger: &Ledger, towns: &[TownIdx]) {
        if !Arc::ptr_eq(ledger.registry(), &self.registry) {
            return;
        }
        for &t in towns {
            self.note_warning(t, ledger.figures(t).warning.clone());
        }
    }

    /// The timings for `town`: the engine's, each shortened by the plan of the level in
    /// force there, never lengthened.
    pub(super) fn policy_of(&self, town: TownIdx) -> Policy {
        let mut policy = self.policy;
        let plan = self
            .warnings
            .get(&town)
            .and_then(|w| self.registry.warning_plan(w.set.level));
        if let Some(plan) = plan {
            let shorter = |ours: chrono::Duration, theirs: Option<std::time::Duration>| {
                theirs
                    .and_then(|d| chrono::Duration::from_std(d).ok())
                    .map_or(ours, |d| d.min(ours))
            };
            policy.group_wait = shorter(policy.group_wait, plan.group_wait);
            policy.escalate_after = shorter(policy.escalate_after, plan.escalate_after);
        }
        policy
    }
}
