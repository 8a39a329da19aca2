//! An alert as the engine works with it: the store's row with typed fields.

use chrono::{DateTime, Utc};
use reserve::Registry;
use reserve::registry::TownIdx;
use store::{AckRow, AlertRow, AlertState};

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
    /// Its severity rose.
    Raised,
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
            Event::Resolved => "resolved",
            Event::Remind => "remind",
            Event::Escalate => "escalate",
        }
    }

    pub fn parse(s: &str) -> Option<Event> {
        [
            Event::Fired,
            Event::Raised,
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
            Event::Fired | Event::Raised => 4,
            Event::Escalate => 3,
            Event::Remind => 2,
            Event::Resolved => 1,
        }
    }
}

/// Folds a new event into one still waiting for the town's group flush, so that a
/// group carries one event per alert. `None`: nothing left to say (it fired and
/// resolved before anyone was told).
pub fn merge_event(waiting: Option<Event>, new: Event) -> Option<Event> {
    use Event::*;
    match (waiting, new) {
        (None, e) => Some(e),
        (Some(Fired), Resolved) => None,
        (Some(Fired), _) => Some(Fired),
        (Some(_), Resolved) => Some(Resolved),
        (Some(Raised), _) | (Some(_), Raised) => Some(Raised),
        (Some(Resolved), e) => Some(e),
        (Some(Remind | Escalate), e) => Some(e),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// 0 until inserted.
    pub id: i64,
    pub key: String,
    pub town: TownIdx,
    pub rule: Rule,
    pub subject: String,
    pub severity: Severity,
    pub state: AlertState,
    pub detail: Detail,
    pub since: DateTime<Utc>,
    pub created: DateTime<Utc>,
    pub fired_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub ack: Option<AckRow>,
    pub escalation: u8,
    pub remind_at: Option<DateTime<Utc>>,
    pub escalate_at: Option<DateTime<Utc>>,
    pub notified_at: Option<DateTime<Utc>>,
    pub notify_event: Option<Event>,
    pub escalated_from: Option<u8>,
    pub notify_seq: u32,
    pub updated: DateTime<Utc>,
}

impl Alert {
    /// Decodes a stored alert; an error names what does not fit this build or registry
    /// (a town removed from the registry, a rule this build does not know).
    pub fn from_row(row: AlertRow, registry: &Registry) -> Result<Alert, String> {
        let town = registry
            .town_idx(&row.town)
            .ok_or_else(|| format!("town {} is not in the registry", row.town))?;
        let rule = Rule::parse(&row.rule).ok_or_else(|| format!("unknown rule {}", row.rule))?;
        let severity = Severity::parse(&row.severity)
            .ok_or_else(|| format!("unknown severity {}", row.severity))?;
        let detail: Detail = serde_json::from_value(row.detail)
            .map_err(|e| format!("detail does not decode: {e}"))?;
        let notify_event = row
            .notify_event
            .map(|e| Event::parse(&e).ok_or_else(|| format!("unknown event {e}")))
            .transpose()?;
        Ok(Alert {
            id: row.id,
            key: row.key,
            town,
            rule,
            subject: row.subject,
            severity,
            state: row.state,
            detail,
            since: row.since,
            created: row.created,
            fired_at: row.fired_at,
            resolved_at: row.resolved_at,
            ack: row.ack,
            escalation: row.escalation,
            remind_at: row.remind_at,
            escalate_at: row.escalate_at,
            notified_at: row.notified_at,
            notify_event,
            escalated_from: row.escalated_from,
            notify_seq: row.notify_seq,
            updated: row.updated,
        })
    }

    pub fn to_row(&self, registry: &Registry) -> AlertRow {
        AlertRow {
            id: self.id,
            key: self.key.clone(),
            town: registry.town(self.town).id.to_string(),
            rule: self.rule.as_str().to_owned(),
            subject: self.subject.clone(),
            severity: self.severity.as_str().to_owned(),
            state: self.state,
            // A Detail is plain data (strings, finite numbers, times): it always encodes.
            detail: serde_json::to_value(&self.detail).unwrap_or(serde_json::Value::Null),
            since: self.since,
            created: self.created,
            fired_at: self.fired_at,
            resolved_at: self.resolved_at,
            ack: self.ack.clone(),
            escalation: self.escalation,
            remind_at: self.remind_at,
            escalate_at: self.escalate_at,
            notified_at: self.notified_at,
            notify_event: self.notify_event.map(|e| e.as_str().to_owned()),
            escalated_from: self.escalated_from,
            notify_seq: self.notify_seq,
            updated: self.updated,
        }
    }

    pub fn is_open(&self) -> bool {
        self.state != AlertState::Resolved
    }

    pub fn facility(&self) -> Option<&str> {
        self.detail.facility()
    }

    /// Waiting for the town's group flush.
    pub fn has_notice(&self) -> bool {
        self.notify_event.is_some() || self.escalated_from.is_some()
    }

    /// Whether reminders and escalation apply: firing, told, and nobody took it on.
    pub fn awaits_ack(&self) -> bool {
        self.state == AlertState::Firing && self.ack.is_none() && self.notified_at.is_some()
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
        ];
        for (waiting, new, want) in cases {
            assert_eq!(merge_event(*waiting, *new), *want, "{waiting:?} + {new:?}");
        }
    }
}
