//! What the HTTP API and metrics use: listing alerts and notifications, acknowledging,
//! silences. Reads go to a store connection of their own (WAL readers never wait for
//! the engine); changes go through the engine, the only writer of alert state, which
//! answers once they are committed.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use reserve::Registry;
use reserve::registry::Lang;
use serde::{Deserialize, Serialize};
use store::{AlertQuery, AlertState, AsyncStore, DeliveryState, NotificationQuery, OutboxRow};
use tokio::sync::{mpsc, oneshot};

use crate::AlertsError;
use crate::alert::{Alert, Event};
use crate::channel::{ChannelKind, channel_id};
use crate::drill::{Drill, DrillView, NewDrill};
use crate::engine::Silence;
use crate::redact::url_origin;
use crate::render::Renderer;
use crate::rules::{Rule, Severity};

/// Rows a list returns when the caller does not say.
pub const DEFAULT_LIMIT: usize = 100;
/// Rows a list returns at most.
pub const MAX_LIMIT: usize = 1000;
/// Longest acknowledgement note and silence comment kept, in characters.
pub const MAX_NOTE_CHARS: usize = 1000;

/// An alert's lifecycle state, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Pending,
    Firing,
    Resolved,
}

impl From<AlertState> for AlertStatus {
    fn from(s: AlertState) -> Self {
        match s {
            AlertState::Pending => AlertStatus::Pending,
            AlertState::Firing => AlertStatus::Firing,
            AlertState::Resolved => AlertStatus::Resolved,
        }
    }
}

impl From<AlertStatus> for AlertState {
    fn from(s: AlertStatus) -> Self {
        match s {
            AlertStatus::Pending => AlertState::Pending,
            AlertStatus::Firing => AlertState::Firing,
            AlertStatus::Resolved => AlertState::Resolved,
        }
    }
}

/// Who an alert has reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EscalationLevel {
    Town,
    Cluster,
    District,
    City,
}

impl EscalationLevel {
    fn of(level: u8) -> EscalationLevel {
        match level {
            0 => EscalationLevel::Town,
            1 => EscalationLevel::Cluster,
            2 => EscalationLevel::District,
            _ => EscalationLevel::City,
        }
    }
}

/// Who acknowledged and why names people: a public read (a wall display without a
/// token) sees only that and when ([`AlertView::without_people`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AckView {
    /// Who acknowledged (a token's name); absent for public reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    pub at: DateTime<Utc>,
    /// What is being done about it; absent for public reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The problem in a sentence, in both languages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Summary {
    pub zh: String,
    pub en: String,
}

/// An alert as `GET /api/v1/alerts` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AlertView {
    pub id: i64,
    pub town: String,
    pub town_name: String,
    pub rule: Rule,
    /// Category id for reserve rules, facility id for the others.
    pub subject: String,
    pub severity: Severity,
    pub state: AlertStatus,
    /// When the problem began.
    pub since: DateTime<Utc>,
    pub fired_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub acknowledged: Option<AckView>,
    pub escalation: EscalationLevel,
    pub last_notified_at: Option<DateTime<Utc>>,
    pub summary: Summary,
    /// The figures behind the alert (days, target, facility, problems, …).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    /// Where to acknowledge it: `POST` with `{"note": "…"}`.
    pub ack_path: String,
    /// Raised in a drill (docs/design.md#drills): an exercise, not a real shortfall.
    pub drill: bool,
    /// The drill's id, when it is one.
    pub drill_id: Option<i64>,
    /// What the town's cluster instance says of this alert, when the cluster runs its
    /// own (`[alerts] clusters_with_own_instance`; docs/design.md#cluster-instance).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_state: Option<crate::cluster_voice::ClusterStateView>,
    /// Recorded during catch-up (docs/design.md#lifecycle): it fired while its town's
    /// readings came in late, after a cut; its times are the readings', and it was told
    /// only if it still held once they were in.
    pub late: bool,
}

impl AlertView {
    /// The alert as a caller without a token may see it: no names of people, no notes.
    pub fn without_people(mut self) -> AlertView {
        if let Some(ack) = &mut self.acknowledged {
            ack.by = None;
            ack.note = None;
        }
        self
    }
}

/// Which alerts to list; every `None` matches anything. Newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct AlertFilter {
    pub state: Option<AlertStatus>,
    /// Pending and firing only (ignored when `state` is set).
    #[serde(default)]
    pub open: bool,
    pub town: Option<String>,
    pub severity: Option<Severity>,
    pub rule: Option<Rule>,
    /// Page: alerts with an id below this.
    pub before_id: Option<i64>,
    /// 0 means [`DEFAULT_LIMIT`]; at most [`MAX_LIMIT`].
    #[serde(default)]
    pub limit: usize,
}

/// A notification as `GET /api/v1/notifications` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct NotificationView {
    pub id: i64,
    /// The town it is about; null for a digest, which is about several.
    pub town: Option<String>,
    /// Every town it covers (ids, sorted): its town, or a digest's towns. A town's
    /// list, and an officer's, holds the digests that cover it.
    pub towns: Vec<String>,
    pub alert_ids: Vec<i64>,
    /// `fired`, `raised`, `lowered`, `resolved`, `remind` or `escalate`.
    pub event: String,
    pub contact: String,
    /// `email`, `sms` or `webhook`.
    pub channel: String,
    /// The email address or phone number; for a webhook only `scheme://host[:port]`:
    /// its URL may carry a robot's access token, and is shown to nobody.
    pub recipient: String,
    pub subject: String,
    pub body: String,
    /// `pending`, `sent` or `failed`.
    pub state: String,
    pub attempts: u32,
    pub next_attempt: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

impl From<OutboxRow> for NotificationView {
    fn from(row: OutboxRow) -> Self {
        // A webhook's URL is its secret: only where it points is shown, and an error
        // that quotes the URL quotes only that.
        let (recipient, last_error) = if row.channel == channel_id(ChannelKind::Webhook) {
            let origin = url_origin(&row.recipient);
            let error = row.last_error.map(|e| e.replace(&row.recipient, &origin));
            (origin, error)
        } else {
            (row.recipient, row.last_error)
        };
        // A digest's row has no town: its towns are its alerts' (`with_towns_covered`).
        let town = (!row.town.is_empty()).then_some(row.town);
        NotificationView {
            id: row.id,
            towns: town.iter().cloned().collect(),
            town,
            alert_ids: row.alert_ids,
            event: row.event,
            contact: row.contact,
            channel: row.channel,
            recipient,
            subject: row.subject,
            body: row.body,
            state: row.state.as_str().to_owned(),
            attempts: row.attempts,
            next_attempt: row.next_attempt,
            last_error,
            created: row.created,
            sent_at: row.sent_at,
        }
    }
}

/// Which notifications to list; every `None` matches anything. Newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct NotificationFilter {
    /// `pending`, `sent` or `failed`.
    pub state: Option<String>,
    pub town: Option<String>,
    /// Only notifications of these towns (an officer's): with `town` too, both must
    /// match. An empty list matches nothing.
    #[serde(default)]
    pub towns: Option<Vec<String>>,
    pub channel: Option<String>,
    pub alert_id: Option<i64>,
    pub before_id: Option<i64>,
    #[serde(default)]
    pub limit: usize,
}

/// A silence as `GET /api/v1/silences` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SilenceView {
    pub id: i64,
    pub town: Option<String>,
    pub facility: Option<String>,
    pub rule: Option<Rule>,
    pub until: DateTime<Utc>,
    /// Who made it (a token's name); absent for public reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Why; absent for public reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub created: DateTime<Utc>,
    pub active: bool,
}

impl SilenceView {
    fn new(s: &Silence, now: DateTime<Utc>) -> SilenceView {
        SilenceView {
            id: s.id,
            town: s.town.clone(),
            facility: s.facility.clone(),
            rule: s.rule,
            until: s.until,
            created_by: Some(s.created_by.clone()),
            comment: Some(s.comment.clone()),
            created: s.created,
            active: s.is_active(now),
        }
    }

    /// The silence as a caller without a token may see it: what is silenced and until
    /// when, not who asked or why.
    pub fn without_people(self) -> SilenceView {
        SilenceView {
            created_by: None,
            comment: None,
            ..self
        }
    }
}

/// A silence to create: alerts matching every matcher given notify nobody until
/// `until`. At least one of town, facility and rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct NewSilence {
    pub town: Option<String>,
    pub facility: Option<String>,
    pub rule: Option<Rule>,
    pub until: DateTime<Utc>,
    /// Who asked (the API's token name).
    pub created_by: String,
    #[serde(default)]
    pub comment: String,
}

/// For `/metrics` and the `ops` series.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Counts {
    /// Real alerts: a drill's are counted apart (`drill_alerts_…`), so an exercise
    /// does not raise the graphs of real ones.
    pub alerts_pending: u64,
    pub alerts_firing: u64,
    pub alerts_firing_unacknowledged: u64,
    pub alerts_resolved: u64,
    pub drill_alerts_pending: u64,
    pub drill_alerts_firing: u64,
    pub drill_alerts_resolved: u64,
    pub notifications_pending: u64,
    pub notifications_sent: u64,
    pub notifications_failed: u64,
}

/// A change for the engine, with where to send its answer.
#[derive(Debug)]
pub(crate) enum Command {
    Ack {
        id: i64,
        by: String,
        note: String,
        reply: oneshot::Sender<Result<Option<Alert>, AlertsError>>,
    },
    AddSilence {
        silence: Silence,
        reply: oneshot::Sender<Result<Silence, AlertsError>>,
    },
    DeleteSilence {
        id: i64,
        reply: oneshot::Sender<Result<bool, AlertsError>>,
    },
    StartDrill {
        drill: Drill,
        reply: oneshot::Sender<Result<Drill, AlertsError>>,
    },
    EndDrill {
        id: i64,
        by: String,
        /// Where the request came from, for the audit entry.
        remote: String,
        reply: oneshot::Sender<Result<bool, AlertsError>>,
    },
}

/// Shared by the API's handlers: cheap to clone.
#[derive(Debug, Clone)]
pub struct AlertsHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    commands: mpsc::Sender<Command>,
    reader: AsyncStore,
    /// Replaced by a reload (docs/design.md#registry-reload). A std `RwLock`: held
    /// only to clone the `Arc`, never across an `.await`.
    registry: std::sync::RwLock<Arc<Registry>>,
    renderer: Renderer,
    /// The clusters' own instances as heard here (docs/design.md#cluster-instance).
    voices: crate::cluster_voice::ClusterVoices,
}

impl AlertsHandle {
    pub(crate) fn new(
        commands: mpsc::Sender<Command>,
        reader: AsyncStore,
        registry: Arc<Registry>,
        renderer: Renderer,
    ) -> AlertsHandle {
        AlertsHandle {
            inner: Arc::new(Inner {
                commands,
                reader,
                registry: std::sync::RwLock::new(registry),
                renderer,
                voices: crate::cluster_voice::ClusterVoices::new(&[], std::time::Duration::ZERO),
            }),
        }
    }

    /// Shares `voices` with the engine (before the handle is cloned).
    pub(crate) fn with_cluster_voices(
        mut self,
        voices: crate::cluster_voice::ClusterVoices,
    ) -> AlertsHandle {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.voices = voices;
        }
        self
    }

    /// What this instance hears of the clusters' own instances, and, on a cluster
    /// instance, of what the city told for it.
    pub fn cluster_voices(&self) -> &crate::cluster_voice::ClusterVoices {
        &self.inner.voices
    }

    /// The registry alerts are shown and checked against now (for the clients that
    /// check the clusters' payloads).
    pub fn current_registry(&self) -> Arc<Registry> {
        self.registry()
    }

    /// The registry alerts are shown and checked against now.
    fn registry(&self) -> Arc<Registry> {
        let registry = self.inner.registry.read();
        Arc::clone(&registry.unwrap_or_else(|p| p.into_inner()))
    }

    /// Shows and checks alerts against `registry` from now on: the one a reload put
    /// the ledger on (the engine adopts it from the ledger by itself).
    pub fn set_registry(&self, registry: Arc<Registry>) {
        *self
            .inner
            .registry
            .write()
            .unwrap_or_else(|p| p.into_inner()) = registry;
    }

    /// Alerts matching `filter`, newest first.
    pub async fn list_alerts(&self, filter: &AlertFilter) -> Result<Vec<AlertView>, AlertsError> {
        let query = AlertQuery {
            state: filter.state.map(AlertState::from),
            open: filter.open,
            town: filter.town.clone(),
            severity: filter.severity.map(|s| s.as_str().to_owned()),
            rule: filter.rule.map(|r| r.as_str().to_owned()),
            before_id: filter.before_id,
            limit: limit(filter.limit),
        };
        let rows = self
            .inner
            .reader
            .run(move |s| s.list_alerts(&query))
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| self.view_row(row))
            .collect())
    }

    pub async fn alert(&self, id: i64) -> Result<Option<AlertView>, AlertsError> {
        let row = self.inner.reader.run(move |s| s.alert(id)).await?;
        Ok(row.and_then(|row| self.view_row(row)))
    }

    /// Acknowledges alert `id`: its reminders and escalation stop. Acknowledging again
    /// keeps the first acknowledgement and returns the alert as it is. The caller
    /// checks who may acknowledge what (an officer's own towns: see `AlertView::town`).
    pub async fn ack(&self, id: i64, by: &str, note: &str) -> Result<AlertView, AlertsError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Ack {
            id,
            by: by.to_owned(),
            note: note.chars().take(MAX_NOTE_CHARS).collect(),
            reply,
        };
        self.ask(command, answer)
            .await?
            .ok_or(AlertsError::NotFound(id))?;
        // Shown from the committed row, by ids: the engine's answer is by its registry's
        // indices, which a reload may have just replaced.
        self.alert(id).await?.ok_or(AlertsError::NotFound(id))
    }

    /// Silences in force, or every silence ever made with `include_expired`.
    pub async fn silences(&self, include_expired: bool) -> Result<Vec<SilenceView>, AlertsError> {
        let now = Utc::now();
        let since = (!include_expired).then_some(now);
        let rows = self
            .inner
            .reader
            .run(move |s| s.list_silences(since))
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(Silence::from_row)
            .map(|s| SilenceView::new(&s, now))
            .collect())
    }

    pub async fn add_silence(&self, new: NewSilence) -> Result<SilenceView, AlertsError> {
        let now = Utc::now();
        let silence = validate_silence(&self.registry(), new, now)?;
        let (reply, answer) = oneshot::channel();
        let silence = self
            .ask(Command::AddSilence { silence, reply }, answer)
            .await?;
        Ok(SilenceView::new(&silence, now))
    }

    /// Ends a silence now (deletes it). False when there was none with this id.
    pub async fn delete_silence(&self, id: i64) -> Result<bool, AlertsError> {
        let (reply, answer) = oneshot::channel();
        self.ask(Command::DeleteSilence { id, reply }, answer).await
    }

    /// Drills running now, or every drill ever started with `include_ended`, newest
    /// first.
    pub async fn drills(&self, include_ended: bool) -> Result<Vec<DrillView>, AlertsError> {
        let now = Utc::now();
        let since = (!include_ended).then_some(now);
        let rows = self.inner.reader.run(move |s| s.list_drills(since)).await?;
        let registry = self.registry();
        Ok(rows
            .iter()
            .map(|row| DrillView::new(&registry, row, now))
            .collect())
    }

    /// Starts a drill: alerts raised in its scope until it ends are drill alerts.
    pub async fn start_drill(&self, new: NewDrill) -> Result<DrillView, AlertsError> {
        let now = Utc::now();
        let registry = self.registry();
        let drill = new.validate(&registry, now)?;
        let (reply, answer) = oneshot::channel();
        let drill = self
            .ask(Command::StartDrill { drill, reply }, answer)
            .await?;
        Ok(DrillView::new(&registry, &drill.row, now))
    }

    /// Ends a running drill now, resolving its alerts; `remote` is where the request
    /// came from, for the audit log. False when none with this id runs.
    pub async fn end_drill(&self, id: i64, by: &str, remote: &str) -> Result<bool, AlertsError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::EndDrill {
            id,
            by: by.to_owned(),
            remote: remote.to_owned(),
            reply,
        };
        self.ask(command, answer).await
    }

    /// Notifications matching `filter`, newest first.
    pub async fn list_notifications(
        &self,
        filter: &NotificationFilter,
    ) -> Result<Vec<NotificationView>, AlertsError> {
        let state = match filter.state.as_deref() {
            None => None,
            Some(s) => Some(DeliveryState::parse(s).ok_or_else(|| {
                AlertsError::Invalid(format!(
                    "state: expected pending, sent or failed, got {s:?}"
                ))
            })?),
        };
        let query = NotificationQuery {
            state,
            town: filter.town.clone(),
            channel: filter.channel.clone(),
            alert_id: filter.alert_id,
            before_id: filter.before_id,
            limit: limit(filter.limit),
        };
        // Several towns: the newest `limit` of each town, merged, are the newest
        // `limit` of them all (an officer has a few towns; the store filters by one).
        let towns: Vec<String> = match &filter.towns {
            None => Vec::new(),
            Some(towns) => towns
                .iter()
                .filter(|t| filter.town.as_ref().is_none_or(|only| only == *t))
                .cloned()
                .collect(),
        };
        if filter.towns.is_some() && towns.is_empty() {
            return Ok(Vec::new());
        }
        let views = self
            .inner
            .reader
            .run(move |s| {
                if towns.is_empty() {
                    let rows = s.list_notifications(&query)?;
                    return with_towns_covered(s, rows);
                }
                let mut rows = Vec::new();
                for town in towns {
                    rows.extend(s.list_notifications(&NotificationQuery {
                        town: Some(town),
                        ..query.clone()
                    })?);
                }
                rows.sort_by_key(|row| std::cmp::Reverse(row.id));
                // A digest over two of the officer's towns came back for each.
                rows.dedup_by_key(|row| row.id);
                rows.truncate(query.limit);
                with_towns_covered(s, rows)
            })
            .await?;
        Ok(views)
    }

    pub async fn counts(&self) -> Result<Counts, AlertsError> {
        let (alerts, outbox) = self
            .inner
            .reader
            .run(|s| Ok((s.count_alerts()?, s.count_notifications()?)))
            .await?;
        Ok(Counts {
            alerts_pending: alerts.pending,
            alerts_firing: alerts.firing,
            alerts_firing_unacknowledged: alerts.firing_unacknowledged,
            alerts_resolved: alerts.resolved,
            drill_alerts_pending: alerts.drill.pending,
            drill_alerts_firing: alerts.drill.firing,
            drill_alerts_resolved: alerts.drill.resolved,
            notifications_pending: outbox.pending,
            notifications_sent: outbox.sent,
            notifications_failed: outbox.failed,
        })
    }

    async fn ask<T>(
        &self,
        command: Command,
        answer: oneshot::Receiver<Result<T, AlertsError>>,
    ) -> Result<T, AlertsError> {
        self.inner
            .commands
            .send(command)
            .await
            .map_err(|_| AlertsError::Stopped)?;
        answer.await.map_err(|_| AlertsError::Stopped)?
    }

    fn view_row(&self, row: store::AlertRow) -> Option<AlertView> {
        let id = row.id;
        let registry = self.registry();
        match crate::alert::decode(row, &registry) {
            Ok(alert) => Some(self.view(&registry, &alert)),
            Err(why) => {
                tracing::debug!(message = "Alert not shown: it no longer fits the registry.", alert = id, %why);
                None
            }
        }
    }

    fn view(&self, registry: &Registry, alert: &Alert) -> AlertView {
        let town = registry.town(alert.town);
        let event = if alert.is_open() {
            Event::Fired
        } else {
            Event::Resolved
        };
        let renderer = &self.inner.renderer;
        AlertView {
            id: alert.id,
            town: town.id.to_string(),
            town_name: town.name.clone(),
            rule: alert.rule,
            subject: alert.subject.clone(),
            severity: alert.severity,
            state: alert.state.into(),
            since: alert.since,
            fired_at: alert.fired_at,
            resolved_at: alert.resolved_at,
            acknowledged: alert.ack.as_ref().map(|a| AckView {
                by: Some(a.by.clone()),
                at: a.at,
                note: Some(a.note.clone()),
            }),
            escalation: EscalationLevel::of(alert.escalation),
            last_notified_at: alert.notified_at,
            summary: Summary {
                zh: renderer.summary(Lang::Zh, alert, event),
                en: renderer.summary(Lang::En, alert, event),
            },
            detail: serde_json::to_value(&alert.detail).unwrap_or(serde_json::Value::Null),
            ack_path: format!("/api/v1/alerts/{}/ack", alert.id),
            drill: alert.drill.is_some(),
            drill_id: alert.drill,
            cluster_state: self.inner.voices.state_of(
                registry.clusters[town.cluster.index()].id.as_str(),
                &alert.key,
            ),
            late: alert.late,
        }
    }
}

fn limit(requested: usize) -> usize {
    match requested {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    }
}

fn validate_silence(
    registry: &Registry,
    new: NewSilence,
    now: DateTime<Utc>,
) -> Result<Silence, AlertsError> {
    let invalid = |m: String| Err(AlertsError::Invalid(m));
    if new.town.is_none() && new.facility.is_none() && new.rule.is_none() {
        return invalid("a silence needs a town, a facility or a rule to match".into());
    }
    if let Some(town) = &new.town
        && registry.town_idx(town).is_none()
    {
        return invalid(format!("town: unknown town {town:?}"));
    }
    if let Some(facility) = &new.facility {
        let Some(f) = registry.facility_idx(facility) else {
            return invalid(format!("facility: unknown facility {facility:?}"));
        };
        if let Some(town) = &new.town
            && registry.town(registry.facility(f).town).id.as_str() != town
        {
            return invalid(format!("facility: {facility:?} is not in town {town:?}"));
        }
    }
    if new.until <= now {
        return invalid(format!("until: {} is not in the future", new.until));
    }
    if new.created_by.trim().is_empty() {
        return invalid("created_by: must not be empty".into());
    }
    Ok(Silence {
        id: 0,
        town: new.town,
        facility: new.facility,
        rule: new.rule,
        until: new.until,
        created_by: new.created_by,
        comment: new.comment.chars().take(MAX_NOTE_CHARS).collect(),
        created: now,
    })
}

/// The views of `rows`, a digest's with the towns of its alerts: it is about no one
/// town, so its `town` is null and `towns` says which it covers. Read in the same
/// reader job as the rows.
fn with_towns_covered(
    s: &store::Store,
    rows: Vec<OutboxRow>,
) -> Result<Vec<NotificationView>, store::StoreError> {
    rows.into_iter()
        .map(|row| {
            let covered = match row.town.is_empty() {
                true => Some(s.towns_of_alerts(&row.alert_ids)?),
                false => None,
            };
            let mut view = NotificationView::from(row);
            if let Some(towns) = covered {
                view.towns = towns;
            }
            Ok(view)
        })
        .collect()
}
