//! Alerts, acknowledgements, silences and the notification outbox
//! (docs/design.md#alerts), as rows. The lifecycle itself (when an alert fires, whom to
//! tell) lives in the `alerts` crate; this module only keeps what it decides, so that a
//! restart resumes exactly where it stopped: no ack forgotten, no notification lost or
//! sent twice.
//!
//! One connection writes alert state (the alert engine); the outbox worker updates
//! delivery state of single rows and readers (the API) list, each on its own
//! [`Store`] of the same file.

use std::fmt;

use chrono::{DateTime, Utc};
use rusqlite::types::{ToSql, ToSqlOutput, Value, ValueRef};
use rusqlite::{TransactionBehavior, params};

use super::row::{Columns, FromRow, Limit, Millis, RowError, text_enum_sql};
use super::sqlite_error;
use crate::{Store, StoreError};

/// Where an alert is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertState {
    /// The condition holds but not yet for the configured `for` duration.
    Pending,
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<AlertState> {
        match s {
            "pending" => Some(AlertState::Pending),
            "firing" => Some(AlertState::Firing),
            "resolved" => Some(AlertState::Resolved),
            _ => None,
        }
    }
}

/// Where a notification is in its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeliveryState {
    /// Not delivered yet; tried again at `next_attempt`.
    Pending,
    Sent,
    /// Given up: refused for good, or failing for longer than the retry policy allows.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Sent => "sent",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        match s {
            "pending" => Some(DeliveryState::Pending),
            "sent" => Some(DeliveryState::Sent),
            "failed" => Some(DeliveryState::Failed),
            _ => None,
        }
    }
}

/// Who acknowledged an alert, when, and what they said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckRow {
    pub by: String,
    pub at: DateTime<Utc>,
    pub note: String,
}

/// The parts of an alert whose types belong to the `alerts` crate (its town index,
/// rule, severity, detail and event), named once so that one [`Alert`] type serves the
/// store and the engine: the store reads and writes `Alert<Text>` ([`AlertRow`]), the
/// engine works with `Alert` of its own kinds, and [`Alert::convert`] moves every other
/// field across untouched.
pub trait AlertKinds {
    type Town: Clone + fmt::Debug + PartialEq;
    type Rule: Clone + fmt::Debug + PartialEq;
    type Severity: Clone + fmt::Debug + PartialEq;
    type Detail: Clone + fmt::Debug + PartialEq;
    type Event: Clone + fmt::Debug + PartialEq;
}

/// The kinds as stored: the `alerts` crate's stable ids as text, the detail as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Text;

impl AlertKinds for Text {
    /// The town's id.
    type Town = String;
    type Rule = String;
    type Severity = String;
    /// The figures messages quote, as the `alerts` crate wrote them.
    type Detail = serde_json::Value;
    type Event = String;
}

/// How one alert's kinds become another's: decoding a stored row (which may fail: a
/// town no longer in the registry) or encoding an alert for the store.
pub trait ConvertKinds<From: AlertKinds, To: AlertKinds> {
    type Error;
    fn town(&self, town: From::Town) -> Result<To::Town, Self::Error>;
    fn rule(&self, rule: From::Rule) -> Result<To::Rule, Self::Error>;
    fn severity(&self, severity: From::Severity) -> Result<To::Severity, Self::Error>;
    fn detail(&self, detail: From::Detail) -> Result<To::Detail, Self::Error>;
    fn event(&self, event: From::Event) -> Result<To::Event, Self::Error>;
}

/// One occurrence of a problem: as stored ([`AlertRow`]) and, with the `alerts`
/// crate's kinds, as the engine works with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert<K: AlertKinds> {
    /// Assigned by [`AlertBatch::insert_alert`]; ignored there. 0 until inserted.
    pub id: i64,
    /// `town/family/subject`: unique among open alerts.
    pub key: String,
    pub town: K::Town,
    pub rule: K::Rule,
    /// Category or facility id; empty when the rule has none.
    pub subject: String,
    pub severity: K::Severity,
    pub state: AlertState,
    pub detail: K::Detail,
    /// When the problem began (a silent facility: when it was last heard).
    pub since: DateTime<Utc>,
    /// When the condition was first seen: the start of the `for` duration.
    pub created: DateTime<Utc>,
    pub fired_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub ack: Option<AckRow>,
    /// Contacts told so far: 0 town, 1 cluster, 2 district, 3 city.
    pub escalation: u8,
    pub remind_at: Option<DateTime<Utc>>,
    pub escalate_at: Option<DateTime<Utc>>,
    pub notified_at: Option<DateTime<Utc>>,
    /// An event waiting for its town's group flush.
    pub notify_event: Option<K::Event>,
    /// Escalation level before an escalation still waiting for its flush.
    pub escalated_from: Option<u8>,
    /// Notifications flushed for this alert so far; part of outbox dedup keys.
    pub notify_seq: u32,
    pub updated: DateTime<Utc>,
    /// The drill it was raised in ([`crate::DrillRow`]); `None` for a real alert. Set
    /// when inserted, never changed.
    pub drill: Option<i64>,
    /// It fired while its town was catching up on a backlog of late readings
    /// (docs/design.md#lifecycle): `fired_at` and `resolved_at` are the readings' times,
    /// and it was told only if it still held once the backlog was in.
    pub late: bool,
}

/// An alert as the store reads and writes it.
pub type AlertRow = Alert<Text>;

impl<K: AlertKinds> Alert<K> {
    /// The same alert with its kinds converted by `to`; every other field as it is.
    pub fn convert<L: AlertKinds, C: ConvertKinds<K, L>>(
        self,
        to: &C,
    ) -> Result<Alert<L>, C::Error> {
        Ok(Alert {
            id: self.id,
            key: self.key,
            town: to.town(self.town)?,
            rule: to.rule(self.rule)?,
            subject: self.subject,
            severity: to.severity(self.severity)?,
            state: self.state,
            detail: to.detail(self.detail)?,
            since: self.since,
            created: self.created,
            fired_at: self.fired_at,
            resolved_at: self.resolved_at,
            ack: self.ack,
            escalation: self.escalation,
            remind_at: self.remind_at,
            escalate_at: self.escalate_at,
            notified_at: self.notified_at,
            notify_event: self.notify_event.map(|e| to.event(e)).transpose()?,
            escalated_from: self.escalated_from,
            notify_seq: self.notify_seq,
            updated: self.updated,
            drill: self.drill,
            late: self.late,
        })
    }

    pub fn is_open(&self) -> bool {
        self.state != AlertState::Resolved
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

/// A maintenance window: alerts it matches notify nobody until `until`. A `None`
/// matcher matches anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SilenceRow {
    /// Assigned by [`AlertBatch::insert_silence`]; ignored there.
    pub id: i64,
    pub town: Option<String>,
    pub facility: Option<String>,
    pub rule: Option<String>,
    pub until: DateTime<Utc>,
    pub created_by: String,
    pub comment: String,
    pub created: DateTime<Utc>,
}

/// A message to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    /// Enqueuing a second message with the same key does nothing.
    pub dedup_key: String,
    pub town: String,
    pub alert_ids: Vec<i64>,
    pub event: String,
    /// The contact's name, for people reading the outbox.
    pub contact: String,
    pub channel: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub html: Option<String>,
    pub created: DateTime<Utc>,
}

/// A message in the outbox with its delivery state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub dedup_key: String,
    pub town: String,
    pub alert_ids: Vec<i64>,
    pub event: String,
    pub contact: String,
    pub channel: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub html: Option<String>,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// Which alerts to list. Every `None` matches anything; newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertQuery {
    pub state: Option<AlertState>,
    /// Pending and firing alone (ignored when `state` is set).
    pub open: bool,
    pub town: Option<String>,
    pub severity: Option<String>,
    pub rule: Option<String>,
    /// Only alerts with an id below this: the next page after the last id seen.
    pub before_id: Option<i64>,
    pub limit: usize,
}

/// Which notifications to list. Every `None` matches anything; newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotificationQuery {
    pub state: Option<DeliveryState>,
    /// The town's own notifications and the digests (stored with no town) with an
    /// alert of it: a digest is listed under each town it covers.
    pub town: Option<String>,
    pub channel: Option<String>,
    /// Notifications covering this alert.
    pub alert_id: Option<i64>,
    pub before_id: Option<i64>,
    pub limit: usize,
}

/// Alerts per state, for metrics: real alerts, and a drill's apart, so an exercise
/// does not raise an operator's graphs of real ones (docs/design.md#drills).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlertCounts {
    pub pending: u64,
    pub firing: u64,
    /// Firing and not acknowledged: what somebody should be looking at.
    pub firing_unacknowledged: u64,
    pub resolved: u64,
    /// Alerts raised in drills, none of them counted above.
    pub drill: DrillAlertCounts,
}

/// Alerts raised in drills, per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrillAlertCounts {
    pub pending: u64,
    pub firing: u64,
    pub resolved: u64,
}

/// Notifications per delivery state, for metrics (the `ops` series' `outbox_pending`,
/// `outbox_failed`: docs/design.md#influxdb-series).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    pub pending: u64,
    pub sent: u64,
    pub failed: u64,
}

const ALERT_COLUMNS: &str = "id, key, town, rule, subject, severity, state, detail, since, \
     created, fired_at, resolved_at, acked_by, acked_at, ack_note, escalation, remind_at, \
     escalate_at, notified_at, notify_event, escalated_from, notify_seq, updated, drill, late";

pub(super) const OUTBOX_COLUMNS: &str = "id, dedup_key, town, alert_ids, event, contact, channel, \
     recipient, subject, body, html, state, attempts, next_attempt, last_error, created, sent_at";

/// Columns an update leaves as inserted: they make the alert's identity.
const IMMUTABLE_ALERT_COLUMNS: [&str; 4] = ["key", "town", "subject", "drill"];

/// A value to bind, owned so that insert and update can share one list of them.
fn value(v: impl ToSql) -> rusqlite::Result<Value> {
    Ok(match v.to_sql()? {
        ToSqlOutput::Borrowed(v) => match v {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(n) => Value::Integer(n),
            ValueRef::Real(x) => Value::Real(x),
            // Text bound from a Rust string: UTF-8.
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        },
        ToSqlOutput::Owned(v) => v,
        _ => unreachable!("no blob or array features are enabled"),
    })
}

/// SQL condition on an `outbox` row: no older notification to the same recipient on
/// the same channel is still pending (see [`Store::due_notifications`]).
const FIRST_FOR_RECIPIENT: &str = "NOT EXISTS (
    SELECT 1 FROM outbox AS older
    WHERE older.state = 'pending' AND older.channel = outbox.channel
      AND older.recipient = outbox.recipient AND older.id < outbox.id)";

impl Store {
    /// What the alert engine resumes from, oldest first: pending and firing alerts, and
    /// resolved ones whose resolution was not told yet.
    pub fn load_live_alerts(&self) -> Result<Vec<AlertRow>, StoreError> {
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts
             WHERE state <> 'resolved' OR notify_event IS NOT NULL OR escalated_from IS NOT NULL
             ORDER BY id"
        );
        self.rows(&sql, [], "load live alerts")
    }

    pub fn alert(&self, id: i64) -> Result<Option<AlertRow>, StoreError> {
        let sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?1");
        self.first_row(&sql, [id], "load an alert")
    }

    /// Alerts matching `query`, newest first.
    pub fn list_alerts(&self, query: &AlertQuery) -> Result<Vec<AlertRow>, StoreError> {
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts
             WHERE (?1 IS NULL OR state = ?1)
               AND (?1 IS NOT NULL OR ?2 = 0 OR state <> 'resolved')
               AND (?3 IS NULL OR town = ?3)
               AND (?4 IS NULL OR severity = ?4)
               AND (?5 IS NULL OR rule = ?5)
               AND (?6 IS NULL OR id < ?6)
             ORDER BY id DESC LIMIT ?7"
        );
        self.rows(
            &sql,
            params![
                query.state,
                query.open,
                query.town,
                query.severity,
                query.rule,
                query.before_id,
                Limit(query.limit),
            ],
            "list alerts",
        )
    }

    /// Silences in force at `now` (or every silence, `now = None`), by id.
    pub fn list_silences(&self, now: Option<DateTime<Utc>>) -> Result<Vec<SilenceRow>, StoreError> {
        self.rows(
            "SELECT id, town, facility, rule, until, created_by, comment, created
             FROM silences WHERE (?1 IS NULL OR until > ?1) ORDER BY id",
            [now.map(Millis)],
            "list silences",
        )
    }

    /// Pending notifications of `channel` due at `now`, oldest due first. A message
    /// waits while an older one to the same recipient is still pending: after an
    /// outage the "resolved" must not arrive before the "critical" it answers, or the
    /// officer's last word would be the wrong one.
    pub fn due_notifications(
        &self,
        channel: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox
             WHERE state = 'pending' AND channel = ?1 AND next_attempt <= ?2
               AND {FIRST_FOR_RECIPIENT}
             ORDER BY next_attempt, id LIMIT ?3"
        );
        self.rows(
            &sql,
            params![channel, Millis(now), Limit(limit)],
            "load due notifications",
        )
    }

    /// When the next pending notification of `channel` is due, if any is pending.
    pub fn next_notification_due(
        &self,
        channel: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let next: Option<NextDue> = self.first_row(
            &format!(
                "SELECT min(next_attempt) AS next_attempt FROM outbox
                 WHERE state = 'pending' AND channel = ?1 AND {FIRST_FOR_RECIPIENT}"
            ),
            [channel],
            "find the next due notification",
        )?;
        Ok(next.and_then(|n| n.0))
    }

    pub fn notification(&self, id: i64) -> Result<Option<OutboxRow>, StoreError> {
        let sql = format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = ?1");
        self.first_row(&sql, [id], "load a notification")
    }

    /// Notifications matching `query`, newest first.
    pub fn list_notifications(
        &self,
        query: &NotificationQuery,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox
             WHERE (?1 IS NULL OR state = ?1)
               AND (?2 IS NULL OR town = ?2 OR (town = '' AND EXISTS (
                     SELECT 1 FROM json_each(outbox.alert_ids) AS j
                     JOIN alerts ON alerts.id = j.value WHERE alerts.town = ?2)))
               AND (?3 IS NULL OR channel = ?3)
               AND (?4 IS NULL OR EXISTS (SELECT 1 FROM json_each(alert_ids) WHERE value = ?4))
               AND (?5 IS NULL OR id < ?5)
             ORDER BY id DESC LIMIT ?6"
        );
        self.rows(
            &sql,
            params![
                query.state,
                query.town,
                query.channel,
                query.alert_id,
                query.before_id,
                Limit(query.limit),
            ],
            "list notifications",
        )
    }

    /// The towns (ids, sorted, once each) of the alerts `ids`: what a digest covers.
    pub fn towns_of_alerts(&self, ids: &[i64]) -> Result<Vec<String>, StoreError> {
        let ids = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
        self.conn
            .prepare_cached(
                "SELECT DISTINCT town FROM alerts
                 WHERE id IN (SELECT value FROM json_each(?1)) ORDER BY town",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![ids], |row| row.get::<_, String>(0))?
                    .collect::<Result<Vec<String>, _>>()
            })
            .map_err(self.sqlite("list the towns of alerts"))
    }

    /// Records a delivery.
    pub fn mark_sent(&self, id: i64, attempts: u32, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE outbox SET state = 'sent', attempts = ?2, sent_at = ?3, next_attempt = ?3
                 WHERE id = ?1",
            )
            .and_then(|mut stmt| stmt.execute(params![id, attempts, Millis(at)]))
            .map_err(self.sqlite("mark a notification sent"))?;
        Ok(())
    }

    /// Records a failed attempt to be retried at `next_attempt`.
    pub fn mark_retry(
        &self,
        id: i64,
        attempts: u32,
        next_attempt: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE outbox SET attempts = ?2, next_attempt = ?3, last_error = ?4 WHERE id = ?1",
            )
            .and_then(|mut stmt| stmt.execute(params![id, attempts, Millis(next_attempt), error]))
            .map_err(self.sqlite("schedule a notification retry"))?;
        Ok(())
    }

    /// Records that a notification will not be delivered.
    pub fn mark_failed(&self, id: i64, attempts: u32, error: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE outbox SET state = 'failed', attempts = ?2, last_error = ?3 WHERE id = ?1",
            )
            .and_then(|mut stmt| stmt.execute(params![id, attempts, error]))
            .map_err(self.sqlite("mark a notification failed"))?;
        Ok(())
    }

    pub fn count_alerts(&self) -> Result<AlertCounts, StoreError> {
        let rows: Vec<AlertStateCount> = self.rows(
            "SELECT state, acked_at IS NULL AS unacked, drill IS NOT NULL AS drill, count(*) AS n
             FROM alerts GROUP BY 1, 2, 3",
            [],
            "count alerts",
        )?;
        let mut counts = AlertCounts::default();
        for AlertStateCount {
            state,
            unacked,
            drill,
            n,
        } in rows
        {
            if drill {
                let counts = &mut counts.drill;
                match AlertState::parse(&state) {
                    Some(AlertState::Pending) => counts.pending += n,
                    Some(AlertState::Firing) => counts.firing += n,
                    Some(AlertState::Resolved) => counts.resolved += n,
                    None => {}
                }
                continue;
            }
            match AlertState::parse(&state) {
                Some(AlertState::Pending) => counts.pending += n,
                Some(AlertState::Firing) => {
                    counts.firing += n;
                    if unacked {
                        counts.firing_unacknowledged += n;
                    }
                }
                Some(AlertState::Resolved) => counts.resolved += n,
                // The CHECK constraint keeps other states out.
                None => {}
            }
        }
        Ok(counts)
    }

    pub fn count_notifications(&self) -> Result<OutboxCounts, StoreError> {
        let rows: Vec<DeliveryStateCount> = self.rows(
            "SELECT state, count(*) AS n FROM outbox GROUP BY 1",
            [],
            "count notifications",
        )?;
        let mut counts = OutboxCounts::default();
        for DeliveryStateCount { state, n } in rows {
            match DeliveryState::parse(&state) {
                Some(DeliveryState::Pending) => counts.pending += n,
                Some(DeliveryState::Sent) => counts.sent += n,
                Some(DeliveryState::Failed) => counts.failed += n,
                None => {}
            }
        }
        Ok(counts)
    }

    /// Starts a transaction of alert changes: the alert engine's state transitions and
    /// the notifications they cause, all or nothing.
    pub fn alert_batch(&mut self) -> Result<AlertBatch<'_>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_error(&self.path, "start an alert batch"))?;
        Ok(AlertBatch {
            tx,
            path: &self.path,
        })
    }
}

/// One transaction of alert changes. Dropping it without [`AlertBatch::commit`] rolls
/// back.
#[derive(Debug)]
pub struct AlertBatch<'s> {
    pub(super) tx: rusqlite::Transaction<'s>,
    pub(super) path: &'s std::path::Path,
}

impl AlertBatch<'_> {
    /// Inserts `alert` (its `id` is ignored) and returns the new id.
    pub fn insert_alert(&mut self, alert: &AlertRow) -> Result<i64, StoreError> {
        let action = "insert an alert";
        let values = self.alert_values(alert, action)?;
        let columns: Vec<&str> = values.iter().map(|(c, _)| *c).collect();
        let sql = format!(
            "INSERT INTO alerts ({}) VALUES (:{})",
            columns.join(", "),
            columns.join(", :")
        );
        self.write_alert(&sql, &values, None, action)?;
        Ok(self.tx.last_insert_rowid())
    }

    /// Writes every field of `alert` (but its key, town and subject, which never change)
    /// over the row with its id.
    pub fn update_alert(&mut self, alert: &AlertRow) -> Result<(), StoreError> {
        let action = "update an alert";
        let mut values = self.alert_values(alert, action)?;
        values.retain(|(c, _)| !IMMUTABLE_ALERT_COLUMNS.contains(c));
        let set: Vec<String> = values.iter().map(|(c, _)| format!("{c} = :{c}")).collect();
        let sql = format!("UPDATE alerts SET {} WHERE id = :id", set.join(", "));
        self.write_alert(&sql, &values, Some(alert.id), action)
    }

    /// Every column of an `alerts` row but `id`, with `alert`'s value: the one list
    /// that insert and update write.
    fn alert_values(
        &self,
        alert: &AlertRow,
        action: &'static str,
    ) -> Result<Vec<(&'static str, Value)>, StoreError> {
        let detail = serde_json::to_string(&alert.detail).map_err(|cause| StoreError::Encode {
            path: self.path.to_owned(),
            what: "alert detail",
            cause,
        })?;
        let ack = alert.ack.as_ref();
        let values = || -> rusqlite::Result<Vec<(&'static str, Value)>> {
            Ok(vec![
                ("key", value(&alert.key)?),
                ("town", value(&alert.town)?),
                ("rule", value(&alert.rule)?),
                ("subject", value(&alert.subject)?),
                ("severity", value(&alert.severity)?),
                ("state", value(alert.state)?),
                ("detail", value(detail)?),
                ("since", value(Millis(alert.since))?),
                ("created", value(Millis(alert.created))?),
                ("fired_at", value(alert.fired_at.map(Millis))?),
                ("resolved_at", value(alert.resolved_at.map(Millis))?),
                ("acked_by", value(ack.map(|a| &a.by))?),
                ("acked_at", value(ack.map(|a| Millis(a.at)))?),
                ("ack_note", value(ack.map(|a| &a.note))?),
                ("escalation", value(alert.escalation)?),
                ("remind_at", value(alert.remind_at.map(Millis))?),
                ("escalate_at", value(alert.escalate_at.map(Millis))?),
                ("notified_at", value(alert.notified_at.map(Millis))?),
                ("notify_event", value(&alert.notify_event)?),
                ("escalated_from", value(alert.escalated_from)?),
                ("notify_seq", value(alert.notify_seq)?),
                ("updated", value(Millis(alert.updated))?),
                ("drill", value(alert.drill)?),
                ("late", value(alert.late)?),
            ])
        };
        values().map_err(sqlite_error(self.path, action))
    }

    fn write_alert(
        &mut self,
        sql: &str,
        values: &[(&'static str, Value)],
        id: Option<i64>,
        action: &'static str,
    ) -> Result<(), StoreError> {
        let names: Vec<String> = values.iter().map(|(c, _)| format!(":{c}")).collect();
        let mut params: Vec<(&str, &dyn ToSql)> = names
            .iter()
            .zip(values)
            .map(|(name, (_, v))| (name.as_str(), v as &dyn ToSql))
            .collect();
        if let Some(id) = &id {
            params.push((":id", id));
        }
        self.tx
            .prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute(params.as_slice()))
            .map_err(sqlite_error(self.path, action))?;
        Ok(())
    }

    /// Forgets an alert that never fired (its condition cleared while pending).
    pub fn delete_alert(&mut self, id: i64) -> Result<(), StoreError> {
        self.tx
            .prepare_cached("DELETE FROM alerts WHERE id = ?1")
            .and_then(|mut stmt| stmt.execute([id]))
            .map_err(sqlite_error(self.path, "delete an alert"))?;
        Ok(())
    }

    /// Inserts `silence` (its `id` is ignored) and returns the new id.
    pub fn insert_silence(&mut self, silence: &SilenceRow) -> Result<i64, StoreError> {
        self.tx
            .prepare_cached(
                "INSERT INTO silences (town, facility, rule, until, created_by, comment, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    silence.town,
                    silence.facility,
                    silence.rule,
                    Millis(silence.until),
                    silence.created_by,
                    silence.comment,
                    Millis(silence.created),
                ])
            })
            .map_err(sqlite_error(self.path, "insert a silence"))?;
        Ok(self.tx.last_insert_rowid())
    }

    /// Deletes a silence; false when there was none with this id.
    pub fn delete_silence(&mut self, id: i64) -> Result<bool, StoreError> {
        let n = self
            .tx
            .prepare_cached("DELETE FROM silences WHERE id = ?1")
            .and_then(|mut stmt| stmt.execute([id]))
            .map_err(sqlite_error(self.path, "delete a silence"))?;
        Ok(n == 1)
    }

    /// Enqueues a notification, due at once. Returns false (changing nothing) when a
    /// notification with the same dedup key was enqueued before.
    pub fn enqueue(&mut self, n: &NewNotification) -> Result<bool, StoreError> {
        let alert_ids =
            serde_json::to_string(&n.alert_ids).map_err(|cause| StoreError::Encode {
                path: self.path.to_owned(),
                what: "notification alert ids",
                cause,
            })?;
        let inserted = self
            .tx
            .prepare_cached(
                "INSERT INTO outbox (dedup_key, town, alert_ids, event, contact, channel,
                    recipient, subject, body, html, state, attempts, next_attempt, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'pending', 0, ?11, ?11)
                 ON CONFLICT (dedup_key) DO NOTHING",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    n.dedup_key,
                    n.town,
                    alert_ids,
                    n.event,
                    n.contact,
                    n.channel,
                    n.recipient,
                    n.subject,
                    n.body,
                    n.html,
                    Millis(n.created),
                ])
            })
            .map_err(sqlite_error(self.path, "enqueue a notification"))?;
        Ok(inserted == 1)
    }

    /// Enqueues one line for the InfluxDB sink in this transaction (the `alert` series,
    /// built with [`crate::influx::alert_line`]), so the series records a transition
    /// if and only if the transition is stored.
    pub fn enqueue_influx_line(
        &mut self,
        line: &str,
        enqueued_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        crate::influx::queue::insert(&self.tx, line, Millis(enqueued_at))
            .map_err(sqlite_error(self.path, "enqueue an InfluxDB line"))
    }

    pub fn commit(self) -> Result<(), StoreError> {
        self.tx
            .commit()
            .map_err(sqlite_error(self.path, "commit an alert batch"))
    }
}

text_enum_sql!(AlertState, "state");
text_enum_sql!(DeliveryState, "state");

/// The earliest `next_attempt` of a channel's pending notifications, if any.
struct NextDue(Option<DateTime<Utc>>);

impl FromRow for NextDue {
    const TABLE: &'static str = "outbox";
    const KEY: &'static [&'static str] = &["next_attempt"];

    fn from_row(row: &Columns<'_, '_>) -> Result<Self, RowError> {
        Ok(NextDue(optional_time(row, "next_attempt")?))
    }
}

/// Times of the alert columns that may be unset.
fn optional_time(row: &Columns<'_, '_>, column: &str) -> Result<Option<DateTime<Utc>>, RowError> {
    Ok(row.get::<Option<Millis>>(column)?.map(|t| t.0))
}

impl FromRow for AlertRow {
    const TABLE: &'static str = "alerts";
    const KEY: &'static [&'static str] = &["id"];

    fn from_row(row: &Columns<'_, '_>) -> Result<Self, RowError> {
        let ack = match (
            row.get::<Option<String>>("acked_by")?,
            row.get::<Option<Millis>>("acked_at")?,
        ) {
            (Some(by), Some(at)) => Some(AckRow {
                by,
                at: at.0,
                note: row.get::<Option<String>>("ack_note")?.unwrap_or_default(),
            }),
            (None, None) => None,
            _ => {
                return Err(RowError::Corrupt(
                    "acknowledgement without its author or time".into(),
                ));
            }
        };
        Ok(AlertRow {
            id: row.get("id")?,
            key: row.get("key")?,
            town: row.get("town")?,
            rule: row.get("rule")?,
            subject: row.get("subject")?,
            severity: row.get("severity")?,
            state: row.get("state")?,
            detail: row.json("detail")?,
            since: row.get::<Millis>("since")?.0,
            created: row.get::<Millis>("created")?.0,
            fired_at: optional_time(row, "fired_at")?,
            resolved_at: optional_time(row, "resolved_at")?,
            ack,
            escalation: row.get("escalation")?,
            remind_at: optional_time(row, "remind_at")?,
            escalate_at: optional_time(row, "escalate_at")?,
            notified_at: optional_time(row, "notified_at")?,
            notify_event: row.get("notify_event")?,
            escalated_from: row.get("escalated_from")?,
            notify_seq: row.get("notify_seq")?,
            updated: row.get::<Millis>("updated")?.0,
            drill: row.get("drill")?,
            late: row.get("late")?,
        })
    }
}

impl FromRow for OutboxRow {
    const TABLE: &'static str = "outbox";
    const KEY: &'static [&'static str] = &["id"];

    fn from_row(row: &Columns<'_, '_>) -> Result<Self, RowError> {
        let alert_ids: String = row.get("alert_ids")?;
        Ok(OutboxRow {
            id: row.get("id")?,
            dedup_key: row.get("dedup_key")?,
            town: row.get("town")?,
            alert_ids: serde_json::from_str(&alert_ids).map_err(|e| {
                RowError::Corrupt(format!("alert_ids is not a JSON list of ids: {e}"))
            })?,
            event: row.get("event")?,
            contact: row.get("contact")?,
            channel: row.get("channel")?,
            recipient: row.get("recipient")?,
            subject: row.get("subject")?,
            body: row.get("body")?,
            html: row.get("html")?,
            state: row.get("state")?,
            attempts: row.get("attempts")?,
            next_attempt: row.get::<Millis>("next_attempt")?.0,
            last_error: row.get("last_error")?,
            created: row.get::<Millis>("created")?.0,
            sent_at: optional_time(row, "sent_at")?,
        })
    }
}

impl FromRow for SilenceRow {
    const TABLE: &'static str = "silences";
    const KEY: &'static [&'static str] = &["id"];

    fn from_row(row: &Columns<'_, '_>) -> Result<Self, RowError> {
        Ok(SilenceRow {
            id: row.get("id")?,
            town: row.get("town")?,
            facility: row.get("facility")?,
            rule: row.get("rule")?,
            until: row.get::<Millis>("until")?.0,
            created_by: row.get("created_by")?,
            comment: row.get("comment")?,
            created: row.get::<Millis>("created")?.0,
        })
    }
}

/// Alerts in one state, acknowledged or not (`count_alerts`).
struct AlertStateCount {
    state: String,
    unacked: bool,
    /// Raised in a drill.
    drill: bool,
    n: u64,
}

impl FromRow for AlertStateCount {
    const TABLE: &'static str = "alerts";
    const KEY: &'static [&'static str] = &["state"];

    fn from_row(row: &Columns<'_, '_>) -> Result<Self, RowError> {
        Ok(AlertStateCount {
            state: row.get("state")?,
            unacked: row.get("unacked")?,
            drill: row.get("drill")?,
            // count(*) is never negative.
            n: u64::try_from(row.get::<i64>("n")?).unwrap_or(0),
        })
    }
}

/// Notifications in one delivery state (`count_notifications`).
struct DeliveryStateCount {
    state: String,
    n: u64,
}

impl FromRow for DeliveryStateCount {
    const TABLE: &'static str = "outbox";
    const KEY: &'static [&'static str] = &["state"];

    fn from_row(row: &Columns<'_, '_>) -> Result<Self, RowError> {
        Ok(DeliveryStateCount {
            state: row.get("state")?,
            n: u64::try_from(row.get::<i64>("n")?).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::StoreOptions;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 6, 0, 0).unwrap() + chrono::Duration::seconds(s)
    }

    fn alert(key: &str, town: &str, state: AlertState) -> AlertRow {
        AlertRow {
            id: 0,
            key: key.into(),
            town: town.into(),
            rule: "reserve_below_target".into(),
            subject: "water".into(),
            severity: "critical".into(),
            state,
            detail: serde_json::json!({"kind": "reserve", "days": 2.5}),
            since: t(0),
            created: t(0),
            fired_at: Some(t(1)),
            resolved_at: None,
            ack: None,
            escalation: 0,
            remind_at: Some(t(3600)),
            escalate_at: None,
            notified_at: Some(t(1)),
            notify_event: None,
            escalated_from: None,
            notify_seq: 1,
            updated: t(1),
            drill: None,
            late: false,
        }
    }

    fn notification(key: &str, channel: &str, alert_ids: Vec<i64>) -> NewNotification {
        NewNotification {
            dedup_key: key.into(),
            town: "jingshan".into(),
            alert_ids,
            event: "fired".into(),
            contact: "Li Wei".into(),
            channel: channel.into(),
            recipient: "li.wei@example.org".into(),
            subject: "[Stockpile] 严重".into(),
            body: "body".into(),
            html: None,
            created: t(10),
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), StoreOptions::default()).unwrap();
        (dir, store)
    }

    #[test]
    fn alerts_round_trip_and_list_by_filter() {
        let (_dir, mut store) = store();
        let mut batch = store.alert_batch().unwrap();
        let firing = alert("jingshan/reserve/water", "jingshan", AlertState::Firing);
        let id = batch.insert_alert(&firing).unwrap();
        let mut resolved = alert("donghua/reserve/water", "donghua", AlertState::Resolved);
        resolved.notify_event = None;
        let resolved_id = batch.insert_alert(&resolved).unwrap();
        // A second open alert with the same key is refused: one open alert per key.
        assert!(batch.insert_alert(&firing).is_err());
        batch.commit().unwrap();

        let mut acked = store.alert(id).unwrap().unwrap();
        assert_eq!(
            acked,
            AlertRow {
                id,
                ..firing.clone()
            }
        );
        acked.ack = Some(AckRow {
            by: "Li Wei".into(),
            at: t(20),
            note: String::new(),
        });
        let mut batch = store.alert_batch().unwrap();
        batch.update_alert(&acked).unwrap();
        batch.commit().unwrap();
        assert_eq!(store.alert(id).unwrap().unwrap().ack, acked.ack);

        let ids = |q: AlertQuery| -> Vec<i64> {
            store
                .list_alerts(&AlertQuery { limit: 10, ..q })
                .unwrap()
                .iter()
                .map(|a| a.id)
                .collect()
        };
        assert_eq!(ids(AlertQuery::default()), vec![resolved_id, id]);
        assert_eq!(
            ids(AlertQuery {
                open: true,
                ..AlertQuery::default()
            }),
            vec![id]
        );
        assert_eq!(
            ids(AlertQuery {
                state: Some(AlertState::Resolved),
                ..AlertQuery::default()
            }),
            vec![resolved_id]
        );
        assert_eq!(
            ids(AlertQuery {
                town: Some("jingshan".into()),
                ..AlertQuery::default()
            }),
            vec![id]
        );
        assert_eq!(
            ids(AlertQuery {
                before_id: Some(resolved_id),
                ..AlertQuery::default()
            }),
            vec![id]
        );
        assert_eq!(
            store
                .load_live_alerts()
                .unwrap()
                .iter()
                .map(|a| a.id)
                .collect::<Vec<_>>(),
            vec![id]
        );
        assert_eq!(
            store.count_alerts().unwrap(),
            AlertCounts {
                pending: 0,
                firing: 1,
                firing_unacknowledged: 0,
                resolved: 1,
                drill: DrillAlertCounts::default(),
            }
        );
    }

    #[test]
    fn the_outbox_moves_from_pending_to_sent_or_failed() {
        let (_dir, mut store) = store();
        let mut batch = store.alert_batch().unwrap();
        assert!(
            batch
                .enqueue(&notification("7.1/email/a", "email", vec![7]))
                .unwrap()
        );
        assert!(
            !batch
                .enqueue(&notification("7.1/email/a", "email", vec![7]))
                .unwrap()
        );
        assert!(
            batch
                .enqueue(&notification("7.1/sms/b", "sms", vec![7, 8]))
                .unwrap()
        );
        // To another officer: a message to the same one would wait for the first.
        assert!(
            batch
                .enqueue(&NewNotification {
                    recipient: "wang.fang@example.org".into(),
                    ..notification("9.1/email/a", "email", vec![9])
                })
                .unwrap()
        );
        batch.commit().unwrap();

        let due = store.due_notifications("email", t(10), 10).unwrap();
        assert_eq!(due.len(), 2);
        assert_eq!(store.due_notifications("email", t(9), 10).unwrap(), vec![]);
        store
            .mark_retry(due[0].id, 1, t(70), "smtp: connection refused")
            .unwrap();
        store
            .mark_failed(due[1].id, 1, "smtp: 550 mailbox unavailable")
            .unwrap();
        assert_eq!(store.due_notifications("email", t(69), 10).unwrap(), vec![]);
        assert_eq!(store.next_notification_due("email").unwrap(), Some(t(70)));
        store.mark_sent(due[0].id, 2, t(70)).unwrap();
        assert_eq!(store.next_notification_due("email").unwrap(), None);

        let sent = store.notification(due[0].id).unwrap().unwrap();
        assert_eq!(
            (
                sent.state,
                sent.attempts,
                sent.sent_at,
                sent.last_error.as_deref()
            ),
            (
                DeliveryState::Sent,
                2,
                Some(t(70)),
                Some("smtp: connection refused")
            )
        );
        let listed = |q: NotificationQuery| -> Vec<String> {
            store
                .list_notifications(&NotificationQuery { limit: 10, ..q })
                .unwrap()
                .into_iter()
                .map(|n| n.dedup_key)
                .collect()
        };
        assert_eq!(
            listed(NotificationQuery {
                alert_id: Some(8),
                ..NotificationQuery::default()
            }),
            vec!["7.1/sms/b"]
        );
        assert_eq!(
            listed(NotificationQuery {
                state: Some(DeliveryState::Failed),
                ..NotificationQuery::default()
            }),
            vec!["9.1/email/a"]
        );
        assert_eq!(
            store.count_notifications().unwrap(),
            OutboxCounts {
                pending: 1,
                sent: 1,
                failed: 1
            }
        );
    }

    #[test]
    fn a_message_waits_for_an_older_one_to_the_same_recipient() {
        let (_dir, mut store) = store();
        let mut batch = store.alert_batch().unwrap();
        let fired = notification("k1", "email", vec![1]);
        let resolved = NewNotification {
            dedup_key: "k2".into(),
            event: "resolved".into(),
            created: t(20),
            ..notification("k2", "email", vec![1])
        };
        let other = NewNotification {
            recipient: "wang.fang@example.org".into(),
            created: t(20),
            ..notification("k3", "email", vec![1])
        };
        for n in [&fired, &resolved, &other] {
            assert!(batch.enqueue(n).unwrap());
        }
        batch.commit().unwrap();
        let ids = |rows: Vec<OutboxRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();

        // The "fired" failed (SMTP down) and is retried at t(60); the "resolved" to the
        // same officer is due now but waits for it; another officer's mail does not.
        store.mark_retry(1, 1, t(60), "connection refused").unwrap();
        assert_eq!(
            ids(store.due_notifications("email", t(30), 10).unwrap()),
            [3]
        );
        store.mark_sent(3, 1, t(30)).unwrap();
        assert_eq!(store.next_notification_due("email").unwrap(), Some(t(60)));
        assert_eq!(
            ids(store.due_notifications("email", t(60), 10).unwrap()),
            [1]
        );
        store.mark_sent(1, 2, t(60)).unwrap();
        assert_eq!(
            ids(store.due_notifications("email", t(60), 10).unwrap()),
            [2]
        );
    }

    #[test]
    fn a_damaged_alert_row_is_named_not_skipped() {
        let (_dir, mut store) = store();
        let mut batch = store.alert_batch().unwrap();
        let id = batch
            .insert_alert(&alert(
                "jingshan/reserve/water",
                "jingshan",
                AlertState::Firing,
            ))
            .unwrap();
        batch.commit().unwrap();
        store
            .conn
            .execute("UPDATE alerts SET detail = 'not json' WHERE id = ?1", [id])
            .unwrap();
        let err = store.load_live_alerts().unwrap_err().to_string();
        assert!(
            err.contains(&format!("table alerts, row {id}: detail is not JSON")),
            "{err}"
        );
    }
}
