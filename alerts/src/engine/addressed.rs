//! Alerts addressed to one contact instead of the town's officers: an activation
//! step's (`activation_step_overdue`, docs/design.md#activation-table) goes to the
//! contact the plan names for the step, whatever towns that contact covers, and
//! escalates from there like any alert. Every other alert reaches the town level's
//! officers as before.

use reserve::registry::{Contact, Registry};

use crate::alert::Alert;
use crate::alert::LEVEL_TOWN;

/// `(level, contact index, officer of the town)` of everyone who may hear of these
/// alerts of one town: its audience, plus at the town level the contacts the alerts
/// are addressed to.
pub(super) fn listeners<'a>(
    registry: &Registry,
    audience: Vec<(u8, usize)>,
    alerts: impl Iterator<Item = &'a Alert>,
) -> Vec<(u8, usize, bool)> {
    let mut out: Vec<(u8, usize, bool)> = audience.into_iter().map(|(l, c)| (l, c, true)).collect();
    for key in alerts.filter_map(|a| a.detail.addressed_to()) {
        for (c, contact) in registry.contacts.iter().enumerate() {
            let known = out.iter().any(|&(l, x, _)| l == LEVEL_TOWN && x == c);
            if is(contact, key) && !known {
                out.push((LEVEL_TOWN, c, false));
            }
        }
    }
    out
}

/// Whether `contact`, at `level`, hears of `alert`: at the town level an addressed
/// alert reaches its addressee only, any other alert the town's officers only.
pub(super) fn hears(alert: &Alert, level: u8, contact: &Contact, officer: bool) -> bool {
    if level != LEVEL_TOWN {
        return true;
    }
    match alert.detail.addressed_to() {
        Some(key) => is(contact, key),
        None => officer,
    }
}

/// A step names its contact by email, or by name when the contact has no email.
fn is(contact: &Contact, key: &str) -> bool {
    contact.email.as_deref() == Some(key) || (contact.email.is_none() && contact.name == key)
}
