//! An alert as the engine works with it: the store's alert with this crate's kinds.

use reserve::Registry;
use reserve::registry::TownIdx;
use store::{AlertKinds, AlertRow, ConvertKinds, Text};

use crate::rules::{Detail, Rule, Severity};

/// Contacts an alert reaches, by escalation level: town officers, then cluster, district
/// and city duty officers.
pub const LEVEL_TOWN: u8 = 0;
pub const LEVEL_CITY: u8 = 3;

/// Why a message is sent. Stable ids: they are stored and shown through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    /// The alert fired (or fired while silenced and the silence ended).
    Fired,
    /// It got worse: its severity rose, or its rule moved up within its family
    /// (`reserve_depleting` → `reserve_near_target`).
    Raised,
    /// It eased but still fires: its severity fell, or its rule moved down within its
    /// family (critical → warning, `reserve_near_target` → `reserve_depleting`).
    Lowered,
    Resolved,
    /// Still firing and unacknowledged after `repeat_every`.
    Remind,
    /// Unacknowledged after `escalate_after`: the next level of contacts is told.
    Escalate,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Fired => "fired",
            Event::Raised => "raised",
            Event::Lowered => "lowered",
            Event::Resolved => "resolved",
            Event::Remind => "remind",
            Event::Escalate => "escalate",
        }
    }

    pub fn parse(s: &str) -> Option<Event> {
        [
            Event::Fired,
            Event::Raised,
            Event::Lowered,
            Event::Resolved,
            Event::Remind,
            Event::Escalate,
        ]
        .into_iter()
        .find(|e| e.as_str() == s)
    }

    /// How much a reader wants to see this event first in a grouped message.
    pub fn weight(self) -> u8 {
        match self {
            Event::Fired | Event::Raised => 5,
            Event::Escalate => 4,
            Event::Remind => 3,
            Event::Lowered => 2,
            Event::Resolved => 1,
        }
    }
}

/// Folds a new event into one still waiting for the town's group flush, so that a
/// group carries one event per alert and a change of severity within `group_wait`
/// becomes one message, not two. The message quotes the alert as it is at the flush;
/// the event says which way it last moved. `None`: nothing left to say (it fired and
/// resolved before anyone was told).
pub fn merge_event(waiting: Option<Event>, new: Event) -> Option<Event> {
    use Event::*;
    match (waiting, new) {
        (None, e) => Some(e),
        (Some(Fired), Resolved) => None,
        // Not told yet: the message that fires it quotes its severity now.
        (Some(Fired), _) => Some(Fired),
        (Some(_), Resolved) => Some(Resolved),
        // A rise and a fall within one group: the latest move is what is told.
        (Some(Raised | Lowered), e @ (Raised | Lowered)) => Some(e),
        // A change of severity says all a reminder would, and more.
        (Some(e @ (Raised | Lowered)), Remind | Escalate | Fired) => Some(e),
        (Some(Resolved | Remind | Escalate), e) => Some(e),
    }
}

/// An alert as the engine works with it: the store's [`store::Alert`] with this crate's
/// kinds. One type: a new field is added there, in the schema and the store's row
/// reader and writer, and nowhere here.
pub type Alert = store::Alert<Kinds>;

/// This crate's kinds of an alert's typed parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds;

impl AlertKinds for Kinds {
    type Town = TownIdx;
    type Rule = Rule;
    type Severity = Severity;
    type Detail = Detail;
    type Event = Event;
}

/// Decodes a stored alert; an error names what does not fit this build or registry
/// (a town removed from the registry, a rule this build does not know).
pub fn decode(row: AlertRow, registry: &Registry) -> Result<Alert, String> {
    row.convert(&Decode(registry))
}

pub fn encode(alert: &Alert, registry: &Registry) -> AlertRow {
    match alert.clone().convert(&Encode(registry)) {
        Ok(row) => row,
        Err(never) => match never {},
    }
}

/// Stored text to this crate's kinds, against the registry.
struct Decode<'r>(&'r Registry);

impl ConvertKinds<Text, Kinds> for Decode<'_> {
    type Error = String;

    fn town(&self, town: String) -> Result<TownIdx, String> {
        self.0
            .town_idx(&town)
            .ok_or_else(|| format!("town {town} is not in the registry"))
    }

    fn rule(&self, rule: String) -> Result<Rule, String> {
        Rule::parse(&rule).ok_or_else(|| format!("unknown rule {rule}"))
    }

    fn severity(&self, severity: String) -> Result<Severity, String> {
        Severity::parse(&severity).ok_or_else(|| format!("unknown severity {severity}"))
    }

    fn detail(&self, detail: serde_json::Value) -> Result<Detail, String> {
        serde_json::from_value(detail).map_err(|e| format!("detail does not decode: {e}"))
    }

    fn event(&self, event: String) -> Result<Event, String> {
        Event::parse(&event).ok_or_else(|| format!("unknown event {event}"))
    }
}

/// This crate's kinds to stored text; cannot fail.
struct Encode<'r>(&'r Registry);

impl ConvertKinds<Kinds, Text> for Encode<'_> {
    type Error = std::convert::Infallible;

    fn town(&self, town: TownIdx) -> Result<String, Self::Error> {
        Ok(self.0.town(town).id.to_string())
    }

    fn rule(&self, rule: Rule) -> Result<String, Self::Error> {
        Ok(rule.as_str().to_owned())
    }

    fn severity(&self, severity: Severity) -> Result<String, Self::Error> {
        Ok(severity.as_str().to_owned())
    }

    fn detail(&self, detail: Detail) -> Result<serde_json::Value, Self::Error> {
        // A Detail is plain data (strings, finite numbers, times): it always encodes.
        Ok(serde_json::to_value(&detail).unwrap_or(serde_json::Value::Null))
    }

    fn event(&self, event: Event) -> Result<String, Self::Error> {
        Ok(event.as_str().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Event::*;

    #[test]
    fn events_merge_into_what_is_left_to_say() {
        let cases: &[(Option<Event>, Event, Option<Event>)] = &[
            (None, Fired, Some(Fired)),
            (Some(Fired), Raised, Some(Fired)),
            // Fired and resolved within group_wait: nobody needs to hear of it.
            (Some(Fired), Resolved, None),
            (Some(Raised), Resolved, Some(Resolved)),
            (Some(Remind), Raised, Some(Raised)),
            (Some(Raised), Remind, Some(Raised)),
            (Some(Remind), Resolved, Some(Resolved)),
            (Some(Resolved), Fired, Some(Fired)),
            // A fall is told as one update; one within group_wait of a rise is one
            // message saying where it ended up, not two.
            (None, Lowered, Some(Lowered)),
            (Some(Fired), Lowered, Some(Fired)),
            (Some(Raised), Lowered, Some(Lowered)),
            (Some(Lowered), Raised, Some(Raised)),
            (Some(Lowered), Lowered, Some(Lowered)),
            (Some(Lowered), Remind, Some(Lowered)),
            (Some(Remind), Lowered, Some(Lowered)),
            (Some(Lowered), Resolved, Some(Resolved)),
        ];
        for (waiting, new, want) in cases {
            assert_eq!(merge_event(*waiting, *new), *want, "{waiting:?} + {new:?}");
        }
    }
}
