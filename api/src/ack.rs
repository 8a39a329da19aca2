//! Acknowledging as a person, whoever asks: a token's holder (`POST
//! /api/v1/alerts/{id}/ack`), a contact through a signed link (`/ack/{token}`) or an SMS
//! reply (`POST /api/v1/sms/inbound`). Every way goes through the alert engine (the
//! only writer of alert state) and leaves one audit entry and one log line: who, how,
//! when, which alerts (docs/design.md#acknowledging-from-a-phone).

use alerts::{AlertStatus, AlertView};
use reserve::Registry;
use reserve::registry::{Contact, ContactScope};

use crate::AppState;
use crate::error::ApiError;

/// How an acknowledgement was made, as the audit log names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    Token,
    Link,
    Sms,
}

impl Via {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Via::Token => "token",
            Via::Link => "link",
            Via::Sms => "sms",
        }
    }
}

/// What became of each alert asked for.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Acknowledged now, by this request.
    pub acked: Vec<AlertView>,
    /// Acknowledged before (by this person or another): the first acknowledgement stands.
    pub already: Vec<AlertView>,
    /// Resolved: nothing to acknowledge.
    pub resolved: Vec<AlertView>,
    /// No alert has this id.
    pub missing: Vec<i64>,
}

/// Acknowledges every open, unacknowledged alert of `ids` as `actor`, then records
/// what it did. An audit entry that cannot be written is logged as an error and does
/// not undo the acknowledgement, which the engine has already committed: the officer
/// is told what happened, and the log line holds the record.
pub(crate) async fn acknowledge(
    state: &AppState,
    actor: &str,
    via: Via,
    ids: &[i64],
    note: &str,
) -> Result<Outcome, ApiError> {
    let alerts = state
        .alerts()
        .ok_or_else(|| ApiError::Internal("acknowledging without alerts".into()))?;
    let mut outcome = Outcome::default();
    for &id in ids {
        let Some(alert) = alerts.alert(id).await? else {
            outcome.missing.push(id);
            continue;
        };
        if alert.state == AlertStatus::Resolved {
            outcome.resolved.push(alert);
        } else if alert.acknowledged.is_some() {
            outcome.already.push(alert);
        } else {
            outcome.acked.push(alerts.ack(id, actor, note).await?);
        }
    }
    if !outcome.acked.is_empty() {
        record(state, actor, via, &outcome.acked, note).await;
    }
    Ok(outcome)
}

/// One audit entry and one log line for alerts just acknowledged.
pub(crate) async fn record(
    state: &AppState,
    actor: &str,
    via: Via,
    acked: &[AlertView],
    note: &str,
) {
    let ids: Vec<i64> = acked.iter().map(|a| a.id).collect();
    tracing::info!(
        message = "Alerts acknowledged.",
        by = actor,
        via = via.as_str(),
        alerts = ?ids
    );
    let mut towns: Vec<String> = acked
        .iter()
        .filter(|a| !a.town.is_empty())
        .map(|a| a.town.clone())
        .collect();
    towns.sort();
    towns.dedup();
    let action = crate::audit::Action {
        actor: actor.to_owned(),
        via: via.as_str(),
        action: "ack",
        towns,
        alert_ids: ids,
        detail: note.to_owned(),
    };
    crate::audit::record(state, action).await;
}

/// Whether `contact`'s scope covers the town with id `town`.
pub(crate) fn covers(registry: &Registry, contact: &Contact, town: &str) -> bool {
    let Some(t) = registry.town_idx(town) else {
        return false;
    };
    let town = registry.town(t);
    match &contact.scope {
        ContactScope::Towns(towns) => towns.contains(&t),
        ContactScope::Clusters(clusters) => clusters.contains(&town.cluster),
        ContactScope::Districts(districts) => districts.contains(&town.district),
        ContactScope::City => true,
    }
}
