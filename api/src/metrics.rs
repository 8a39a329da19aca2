//! `/metrics` in the Prometheus text exposition format (0.0.4), written by hand: a few
//! counters and gauges do not need a metrics library, and the names here are the
//! contract dashboards rely on, so they are spelled out in one place.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use live::IngestCounts;

use crate::AppState;
use crate::model::{Status, StatusCounts};

pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the ledger contributes, counted under its lock.
#[derive(Debug, Default)]
struct LedgerTally {
    towns: StatusCounts,
    unverified_towns: u64,
    silent_facilities: u64,
    never_reported_facilities: u64,
}

/// `alerts`: the alert service's counts, when it is plugged in and answered.
pub(crate) fn render(state: &AppState, alerts: Option<&alerts::Counts>) -> String {
    let tally = {
        let ledger = state.ledger();
        let mut tally = LedgerTally::default();
        for t in ledger.registry().town_indices() {
            let figures = ledger.figures(t);
            tally.towns.add(figures.status.into());
            tally.unverified_towns += u64::from(!figures.verified);
            tally.silent_facilities += figures.silent.len() as u64;
            tally.never_reported_facilities += figures.never_reported.len() as u64;
        }
        tally
    };
    let sms = state.sms_inbound().map(|webhook| SmsRefusals {
        no_token: webhook.refused_no_token.load(Relaxed),
        bad_signature: webhook.refused_bad_signature.load(Relaxed),
    });
    exposition(&state.ingest().counts(), &tally, alerts, sms.as_ref())
}

/// SMS replies the inbound webhook refused, by why.
#[derive(Debug, Default)]
struct SmsRefusals {
    no_token: u64,
    bad_signature: u64,
}

fn exposition(
    ingest: &IngestCounts,
    ledger: &LedgerTally,
    alerts: Option<&alerts::Counts>,
    sms: Option<&SmsRefusals>,
) -> String {
    let mut out = String::with_capacity(2048);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    metric(
        "stockpile_ingest_received_total",
        "counter",
        "MQTT messages received (a backlog array is one message).",
        &[("", ingest.received)],
    );
    metric(
        "stockpile_ingest_accepted_total",
        "counter",
        "Readings stored.",
        &[("", ingest.accepted)],
    );
    metric(
        "stockpile_ingest_duplicates_total",
        "counter",
        "Readings already stored (redeliveries, resends): acknowledged and ignored.",
        &[("", ingest.duplicates)],
    );
    metric(
        "stockpile_ingest_older_total",
        "counter",
        "Readings stored as history but older than their facility's latest.",
        &[("", ingest.older)],
    );
    metric(
        "stockpile_ingest_batches_total",
        "counter",
        "SQLite transactions committed by ingest.",
        &[("", ingest.batches)],
    );
    let rejected: Vec<(String, u64)> = ingest
        .rejected
        .iter()
        .map(|(reason, n)| (format!("{{reason=\"{}\"}}", escape(reason)), *n))
        .collect();
    let rejected: Vec<(&str, u64)> = rejected.iter().map(|(l, n)| (l.as_str(), *n)).collect();
    metric(
        "stockpile_ingest_rejected_total",
        "counter",
        "Messages or readings rejected, by reason.",
        &rejected,
    );
    metric(
        "stockpile_broker_connected",
        "gauge",
        "1 while ingest is connected to the MQTT broker.",
        &[("", u64::from(ingest.connected))],
    );
    metric(
        "stockpile_store_paused",
        "gauge",
        "1 while ingest is paused because the SQLite store fails (locked by another process, disk full, I/O error); the batch is retried.",
        &[("", u64::from(ingest.store_paused))],
    );
    metric(
        "stockpile_store_failures_total",
        "counter",
        "Failed attempts to commit an ingest batch, each one retried.",
        &[("", ingest.store_failures)],
    );
    metric(
        "stockpile_manual_readings_total",
        "counter",
        "Readings of counts entered by hand, stored.",
        &[("", ingest.manual_readings)],
    );
    metric(
        "stockpile_transfers_total",
        "counter",
        "Transfers handed to the ingest writer, by outcome: recorded, refused (a sender counted by hand holding less than it sent), or abandoned (the store failed past the request's wait; answered 503 and dropped unstored).",
        &[
            ("{outcome=\"recorded\"}", ingest.transfers_recorded),
            ("{outcome=\"refused\"}", ingest.transfers_refused),
            ("{outcome=\"abandoned\"}", ingest.transfers_abandoned),
        ],
    );
    let towns: Vec<(String, u64)> = Status::ALL
        .iter()
        .map(|&s| {
            (
                format!("{{status=\"{}\"}}", s.as_str()),
                ledger.towns.get(s),
            )
        })
        .collect();
    let towns: Vec<(&str, u64)> = towns.iter().map(|(l, n)| (l.as_str(), *n)).collect();
    metric("stockpile_towns", "gauge", "Towns by status.", &towns);
    metric(
        "stockpile_towns_unverified",
        "gauge",
        "Towns whose figures are a floor: a facility is silent or never reported.",
        &[("", ledger.unverified_towns)],
    );
    metric(
        "stockpile_facilities",
        "gauge",
        "Facilities that are not reporting, by condition.",
        &[
            ("{state=\"silent\"}", ledger.silent_facilities),
            (
                "{state=\"never_reported\"}",
                ledger.never_reported_facilities,
            ),
        ],
    );
    if let Some(sms) = sms {
        metric(
            "stockpile_sms_replies_refused_total",
            "counter",
            "SMS replies the inbound webhook refused, acknowledging nothing: no sms.inbound_auth_token configured, or X-Twilio-Signature missing or wrong.",
            &[
                ("{reason=\"no_token\"}", sms.no_token),
                ("{reason=\"bad_signature\"}", sms.bad_signature),
            ],
        );
    }
    if let Some(counts) = alerts {
        metric(
            "stockpile_alerts",
            "gauge",
            "Real alerts by state (a drill's are stockpile_drill_alerts).",
            &[
                ("{state=\"pending\"}", counts.alerts_pending),
                ("{state=\"firing\"}", counts.alerts_firing),
                ("{state=\"resolved\"}", counts.alerts_resolved),
            ],
        );
        metric(
            "stockpile_alerts_firing_unacknowledged",
            "gauge",
            "Firing real alerts nobody has acknowledged.",
            &[("", counts.alerts_firing_unacknowledged)],
        );
        metric(
            "stockpile_drill_alerts",
            "gauge",
            "Alerts raised in drills, by state: apart, so an exercise does not raise the graphs of real alerts.",
            &[
                ("{state=\"pending\"}", counts.drill_alerts_pending),
                ("{state=\"firing\"}", counts.drill_alerts_firing),
                ("{state=\"resolved\"}", counts.drill_alerts_resolved),
            ],
        );
        metric(
            "stockpile_notifications",
            "gauge",
            "Notifications in the outbox by delivery state.",
            &[
                ("{state=\"pending\"}", counts.notifications_pending),
                ("{state=\"sent\"}", counts.notifications_sent),
                ("{state=\"failed\"}", counts.notifications_failed),
            ],
        );
    }
    out
}

/// Escapes a label value (backslash, double quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_lists_every_metric_with_its_type() {
        let ingest = IngestCounts {
            received: 7,
            accepted: 5,
            duplicates: 1,
            older: 0,
            batches: 3,
            connected: true,
            rejected: [("unknown_town", 2u64), ("not_json", 1)].into(),
            store_paused: false,
            store_failures: 0,
            manual_readings: 4,
            transfers_recorded: 2,
            transfers_refused: 1,
            transfers_abandoned: 0,
        };
        let mut towns = StatusCounts::default();
        for s in [Status::Ok, Status::Ok, Status::Critical] {
            towns.add(s);
        }
        let tally = LedgerTally {
            towns,
            unverified_towns: 1,
            silent_facilities: 2,
            never_reported_facilities: 0,
        };
        let alerts = alerts::Counts {
            alerts_pending: 1,
            alerts_firing: 3,
            alerts_firing_unacknowledged: 2,
            alerts_resolved: 9,
            drill_alerts_pending: 0,
            drill_alerts_firing: 2,
            drill_alerts_resolved: 5,
            notifications_pending: 0,
            notifications_sent: 4,
            notifications_failed: 1,
        };
        let sms = SmsRefusals {
            no_token: 0,
            bad_signature: 3,
        };
        let text = exposition(&ingest, &tally, Some(&alerts), Some(&sms));
        for line in [
            "# TYPE stockpile_ingest_received_total counter",
            "stockpile_ingest_received_total 7",
            "stockpile_ingest_accepted_total 5",
            "stockpile_ingest_duplicates_total 1",
            "stockpile_ingest_rejected_total{reason=\"not_json\"} 1",
            "stockpile_ingest_rejected_total{reason=\"unknown_town\"} 2",
            "stockpile_broker_connected 1",
            "stockpile_manual_readings_total 4",
            "stockpile_transfers_total{outcome=\"recorded\"} 2",
            "stockpile_transfers_total{outcome=\"refused\"} 1",
            "# TYPE stockpile_towns gauge",
            "stockpile_towns{status=\"ok\"} 2",
            "stockpile_towns{status=\"warning\"} 0",
            "stockpile_towns{status=\"critical\"} 1",
            "stockpile_towns{status=\"unknown\"} 0",
            "stockpile_towns_unverified 1",
            "stockpile_facilities{state=\"silent\"} 2",
            "# TYPE stockpile_alerts gauge",
            "stockpile_alerts{state=\"pending\"} 1",
            "stockpile_alerts{state=\"firing\"} 3",
            "stockpile_alerts{state=\"resolved\"} 9",
            "stockpile_alerts_firing_unacknowledged 2",
            "# TYPE stockpile_drill_alerts gauge",
            "stockpile_drill_alerts{state=\"firing\"} 2",
            "stockpile_drill_alerts{state=\"resolved\"} 5",
            "stockpile_notifications{state=\"sent\"} 4",
            "stockpile_notifications{state=\"failed\"} 1",
            "stockpile_sms_replies_refused_total{reason=\"bad_signature\"} 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every sample line is `name[{labels}] value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<u64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn alert_series_appear_only_with_alerting() {
        let text = exposition(
            &IngestCounts::default(),
            &LedgerTally::default(),
            None,
            None,
        );
        assert!(!text.contains("stockpile_alerts"), "{text}");
        assert!(!text.contains("stockpile_notifications"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("a\nb"), r"a\nb");
    }
}
