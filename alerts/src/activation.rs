//! What the rules know of activations (docs/design.md#activation-table): the open
//! activations' shelters with their start and steps, shared between the API, which
//! changes them, and the alert engine, which evaluates them.
//!
//! A std `RwLock`: held for microseconds (a map lookup, or swapping one activation's
//! entries), never across an `.await`. The server loads it from SQLite at start
//! ([`OpenActivations::from_rows`]); the API applies each change after its commit
//! ([`OpenActivations::apply`]) and announces the shelters' towns changed, so the
//! engine evaluates them at once. Keyed by shelter id, not index, so a registry reload
//! leaves it valid.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use store::ActivationRow;

/// The open activations, shared.
pub type SharedActivations = Arc<RwLock<OpenActivations>>;

/// Per shelter, the open activation it is in.
#[derive(Debug, Clone, Default)]
pub struct OpenActivations {
    by_shelter: HashMap<String, ShelterActivation>,
}

/// A shelter's part of an open activation.
#[derive(Debug, Clone, PartialEq)]
pub struct ShelterActivation {
    pub activation: i64,
    pub started_at: DateTime<Utc>,
    pub steps: Vec<OpenStep>,
}

/// A step as the rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenStep {
    pub n: u32,
    pub name: String,
    /// The registry contact's name (who is told when it is overdue).
    pub contact: String,
    pub due_at: DateTime<Utc>,
    pub done: bool,
}

impl OpenActivations {
    /// From the activations the store holds (the open ones count; others are ignored).
    pub fn from_rows(rows: &[ActivationRow]) -> OpenActivations {
        let mut view = OpenActivations::default();
        for row in rows {
            view.apply(row);
        }
        view
    }

    /// A shared view of `rows`.
    pub fn shared(rows: &[ActivationRow]) -> SharedActivations {
        Arc::new(RwLock::new(OpenActivations::from_rows(rows)))
    }

    /// Takes in `row` as it now stands: its shelters' entries are replaced while it is
    /// open, dropped once it is closed.
    pub fn apply(&mut self, row: &ActivationRow) {
        for s in &row.activation.shelters {
            if !row.is_open() {
                if self
                    .by_shelter
                    .get(&s.shelter)
                    .is_some_and(|a| a.activation == row.id)
                {
                    self.by_shelter.remove(&s.shelter);
                }
                continue;
            }
            let steps = s
                .steps
                .iter()
                .map(|st| OpenStep {
                    n: st.n,
                    name: st.name.clone(),
                    contact: st.contact.clone(),
                    due_at: st.due_at,
                    done: st.done.is_some(),
                })
                .collect();
            let entry = ShelterActivation {
                activation: row.id,
                started_at: row.activation.started_at,
                steps,
            };
            self.by_shelter.insert(s.shelter.clone(), entry);
        }
    }

    /// The open activation shelter `id` is in, if any.
    pub fn of(&self, shelter: &str) -> Option<&ShelterActivation> {
        self.by_shelter.get(shelter)
    }

    /// The earliest due time after `now` of a step not done: when a step next falls
    /// overdue, so the engine wakes then.
    pub fn next_due(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.by_shelter
            .values()
            .flat_map(|a| a.steps.iter())
            .filter(|s| !s.done && s.due_at > now)
            .map(|s| s.due_at)
            .min()
    }

    pub fn is_empty(&self) -> bool {
        self.by_shelter.is_empty()
    }
}
