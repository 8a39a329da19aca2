//! Counting what ended up where: readings in SQLite (through `store`) and in InfluxDB
//! (InfluxQL on the real server), notifications in the outbox and at the SMTP server.
//!
//! A reading is known everywhere by its facility and timestamp: the store's key, and
//! the identity of its `stock` point in InfluxDB. A notification is matched to the
//! mail that carried it by recipient, subject and text, which the outbox renders once
//! and every attempt sends unchanged; two mails for one outbox row are a duplicate.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use chrono::{DateTime, Utc};
use reserve::FacilityId;
use store::{DeliveryState, NotificationQuery, OutboxRow, Store, StoreOptions};

use crate::plan::{Key, Plan};

/// Every reading SQLite holds, by key.
pub fn stored_keys(db: &Path, plan: &Plan) -> Result<HashSet<Key>, String> {
    let store = Store::open(db, StoreOptions::default()).map_err(|e| e.to_string())?;
    let from = DateTime::<Utc>::UNIX_EPOCH;
    let to = Utc::now() + chrono::Duration::days(1);
    let mut keys = HashSet::new();
    for (index, facility) in plan.facilities.iter().enumerate() {
        let id = FacilityId::parse(&facility.id).map_err(|e| e.to_string())?;
        let rows = store
            .readings(&id, from, to, usize::MAX)
            .map_err(|e| e.to_string())?;
        keys.extend(rows.iter().map(|r| Key {
            facility: index,
            ts_ms: r.ts.timestamp_millis(),
        }));
    }
    Ok(keys)
}

/// Readings SQLite holds: a cheap count.
pub fn stored_count(db: &Path) -> u64 {
    Store::open(db, StoreOptions::default())
        .and_then(|s| s.count_readings())
        .unwrap_or(0)
}

/// `stock` points in InfluxDB database `db` (measured at or before `upto_ms`).
pub fn influx_count(influx: &testkit::Influx1, db: &str, upto_ms: Option<i64>) -> u64 {
    let range = upto_ms.map_or(String::new(), |ms| format!(" WHERE time <= {}ms", ms));
    let rows = influx.query_rows(
        db,
        &format!("SELECT count(\"quantity\") FROM \"stock\"{range}"),
    );
    rows.first()
        .and_then(|row| row.get(1))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

/// Every `stock` point in InfluxDB database `db`, by key.
pub fn influx_keys(influx: &testkit::Influx1, db: &str, plan: &Plan) -> HashSet<Key> {
    let index: HashMap<&str, usize> = plan
        .facilities
        .iter()
        .enumerate()
        .map(|(i, f)| (f.id.as_str(), i))
        .collect();
    let answer = influx.query(
        db,
        "SELECT \"quantity\" FROM \"stock\" GROUP BY \"facility\"",
    );
    let result = &answer["results"][0];
    assert!(
        result.get("partial").is_none(),
        "InfluxDB cut the answer short (max-row-limit): the count would be wrong"
    );
    let mut keys = HashSet::new();
    for series in result["series"].as_array().into_iter().flatten() {
        let Some(&facility) = series["tags"]["facility"]
            .as_str()
            .and_then(|f| index.get(f))
        else {
            continue;
        };
        for row in series["values"].as_array().into_iter().flatten() {
            if let Some(ts_ms) = row[0].as_i64() {
                keys.insert(Key { facility, ts_ms });
            }
        }
    }
    keys
}

/// The email outbox: every notification the alert engine decided to send.
pub fn outbox(db: &Path) -> Result<Vec<OutboxRow>, String> {
    let store = Store::open(db, StoreOptions::default()).map_err(|e| e.to_string())?;
    store
        .list_notifications(&NotificationQuery {
            channel: Some("email".into()),
            limit: usize::MAX,
            ..NotificationQuery::default()
        })
        .map_err(|e| e.to_string())
}

/// Notifications: due (in the outbox), delivered (a mail for it arrived), duplicated
/// (more mails than rows).
#[derive(Debug, Default, Clone)]
pub struct Notifications {
    pub due: usize,
    pub delivered: usize,
    pub duplicated: usize,
    /// Rows still pending, or given up.
    pub pending: usize,
    pub failed: usize,
    /// Mails that match no outbox row at all (should never be).
    pub unmatched: usize,
    /// Subjects of the duplicated mails, for the report.
    pub duplicate_subjects: Vec<String>,
}

fn normalized(text: &str) -> String {
    text.replace("\r\n", "\n")
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned()
}

pub fn notifications(rows: &[OutboxRow], mails: &[testkit::ReceivedMail]) -> Notifications {
    type MailKey = (String, String, String);
    let mut due: HashMap<MailKey, usize> = HashMap::new();
    let mut tally = Notifications {
        due: rows.len(),
        ..Notifications::default()
    };
    for row in rows {
        *due.entry((
            row.recipient.to_lowercase(),
            row.subject.clone(),
            normalized(&row.body),
        ))
        .or_default() += 1;
        match row.state {
            DeliveryState::Pending => tally.pending += 1,
            DeliveryState::Failed => tally.failed += 1,
            DeliveryState::Sent => {}
        }
    }
    let mut received: HashMap<MailKey, usize> = HashMap::new();
    for mail in mails {
        for to in &mail.to {
            *received
                .entry((
                    to.to_lowercase(),
                    mail.subject.clone(),
                    normalized(&mail.body_text),
                ))
                .or_default() += 1;
        }
    }
    for (key, &got) in &received {
        let wanted = due.get(key).copied().unwrap_or(0);
        if wanted == 0 {
            tally.unmatched += got;
            continue;
        }
        tally.delivered += got.min(wanted);
        if got > wanted {
            tally.duplicated += got - wanted;
            tally
                .duplicate_subjects
                .push(format!("{} ×{got}: {}", key.0, key.1));
        }
    }
    tally
}
