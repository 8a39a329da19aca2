//! The alert lifecycle: conditions in, alerts and notifications out, all persisted.
//!
//! The engine is the only writer of alert state. It keeps the open alerts in memory
//! (a cache of the store: what it writes is committed before the cache changes) and is
//! driven by its caller with explicit times, so the lifecycle is tested without clocks:
//!
//! - [`Engine::observe`]: a town's conditions now → alerts created, fired, raised,
//!   resolved; each change worth telling becomes a *notice* on the alert.
//! - [`Engine::run_timers`]: reminders and escalations that are due become notices.
//! - [`Engine::flush_due`]: a town whose `group_wait` is over gets one message per
//!   contact listing every notice of the town, enqueued in the outbox in the same
//!   transaction that clears the notices. A restart between two steps finds the
//!   notices still waiting (or already cleared and enqueued), never both or neither.
//!
//! Escalation levels: 0 town officers, 1 cluster, 2 district, 3 city contacts. Fired,
//! raised, reminder and resolved notices go to every level the alert has reached; an
//! escalation notice goes to the newly reached level alone.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use reserve::Registry;
use reserve::registry::{ClusterIdx, Contact, ContactScope, DistrictIdx, TownIdx};
use store::{AckRow, AlertState, NewNotification, SilenceRow, Store, StoreError};

use crate::alert::{self, Alert, Event, LEVEL_CITY, LEVEL_TOWN, merge_event};
use crate::channel::{ChannelKind, channel_id};
use crate::drill::Drill;
use crate::render::{AffectedPeople, DigestTown, Item, Message, Renderer, TownNames};
use crate::rules::{Condition, Detail, ReserveDetail, Rule, TownEvaluation, alert_key};

mod addressed;
mod late;
mod one_voice;
mod reload;

pub use late::newest_reading;
mod warning;

/// The lifecycle timings the engine applies.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub pending_for: chrono::Duration,
    pub group_wait: chrono::Duration,
    pub repeat_every: chrono::Duration,
    pub escalate_after: chrono::Duration,
}

/// A maintenance window, as the engine matches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silence {
    pub id: i64,
    pub town: Option<String>,
    pub facility: Option<String>,
    pub rule: Option<Rule>,
    pub until: DateTime<Utc>,
    pub created_by: String,
    pub comment: String,
    pub created: DateTime<Utc>,
}

impl Silence {
    /// `None` for a silence of a rule this build does not know: it matches nothing.
    pub fn from_row(row: SilenceRow) -> Option<Silence> {
        let rule = match row.rule.as_deref() {
            None => None,
            Some(r) => Some(Rule::parse(r)?),
        };
        Some(Silence {
            id: row.id,
            town: row.town,
            facility: row.facility,
            rule,
            until: row.until,
            created_by: row.created_by,
            comment: row.comment,
            created: row.created,
        })
    }

    pub fn to_row(&self) -> SilenceRow {
        SilenceRow {
            id: self.id,
            town: self.town.clone(),
            facility: self.facility.clone(),
            rule: self.rule.map(|r| r.as_str().to_owned()),
            until: self.until,
            created_by: self.created_by.clone(),
            comment: self.comment.clone(),
            created: self.created,
        }
    }

    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.until > now
    }

    pub fn matches(&self, town: &str, rule: Rule, facility: Option<&str>) -> bool {
        self.town.as_deref().is_none_or(|t| t == town)
            && self.rule.is_none_or(|r| r == rule)
            && self.facility.as_deref().is_none_or(|f| Some(f) == facility)
    }
}

/// Contacts by what they are responsible for, so a flush finds a town's audience
/// without scanning every contact.
#[derive(Debug, Default)]
struct Audience {
    by_town: HashMap<TownIdx, Vec<usize>>,
    by_cluster: HashMap<ClusterIdx, Vec<usize>>,
    by_district: HashMap<DistrictIdx, Vec<usize>>,
    city: Vec<usize>,
}

impl Audience {
    fn new(registry: &Registry) -> Audience {
        let mut audience = Audience::default();
        for (i, contact) in registry.contacts.iter().enumerate() {
            match &contact.scope {
                ContactScope::Towns(towns) => towns
                    .iter()
                    .for_each(|t| audience.by_town.entry(*t).or_default().push(i)),
                ContactScope::Clusters(clusters) => clusters
                    .iter()
                    .for_each(|c| audience.by_cluster.entry(*c).or_default().push(i)),
                ContactScope::Districts(districts) => districts
                    .iter()
                    .for_each(|d| audience.by_district.entry(*d).or_default().push(i)),
                ContactScope::City => audience.city.push(i),
            }
        }
        audience
    }

    /// `(level, contact index)` of everyone who may hear about `town`.
    fn of(&self, registry: &Registry, town: TownIdx) -> Vec<(u8, usize)> {
        let t = registry.town(town);
        let none = Vec::new();
        let levels: [(u8, &Vec<usize>); 4] = [
            (LEVEL_TOWN, self.by_town.get(&town).unwrap_or(&none)),
            (1, self.by_cluster.get(&t.cluster).unwrap_or(&none)),
            (2, self.by_district.get(&t.district).unwrap_or(&none)),
            (LEVEL_CITY, &self.city),
        ];
        levels
            .into_iter()
            .flat_map(|(level, contacts)| contacts.iter().map(move |&c| (level, c)))
            .collect()
    }
}

/// Notifications enqueued by a step, per channel, so the caller wakes those workers.
pub type Enqueued = BTreeSet<&'static str>;

#[derive(Debug)]
pub struct Engine {
    registry: Arc<Registry>,
    policy: Policy,
    store: Store,
    renderer: Renderer,
    audience: Audience,
    /// Channels that can deliver; a contact's other channels are skipped.
    channels: Vec<ChannelKind>,
    /// Open (pending or firing) alerts by town, then key.
    open: HashMap<TownIdx, BTreeMap<String, Alert>>,
    /// Resolved alerts whose resolution still waits for its town's group flush.
    resolved: HashMap<TownIdx, Vec<Alert>>,
    /// Silences in force (expired ones are dropped by [`Engine::expire_silences`]).
    silences: Vec<Silence>,
    /// Drills running (one that ends is dropped by [`Engine::run_timers`] or
    /// [`Engine::end_drill`], with its alerts resolved).
    drills: Vec<Drill>,
    /// Towns with notices waiting, and when their group is flushed.
    flush_at: BTreeMap<TownIdx, DateTime<Utc>>,
    /// When the open digest window closes: every town with news for a contact above
    /// the town is flushed then, together, so that contact gets one digest over them
    /// all. `None` while no such news waits.
    digest_at: Option<DateTime<Utc>>,
    /// Write the `alert` series (docs/design.md#influxdb-series) to the InfluxDB queue
    /// with each change.
    influx_series: bool,
    /// When every firing alert's series point was last written again.
    series_refreshed_at: Option<DateTime<Utc>>,
    /// Clusters whose own instance notifies their towns' officers and cluster contacts
    /// ([`one_voice`]).
    clusters_with_own_instance: Vec<String>,
    /// What this instance hears of those clusters' instances, and whether it has taken
    /// one over ([`one_voice`]).
    voices: crate::cluster_voice::ClusterVoices,
    /// Vulnerable people each town's problems reach, by its last evaluation: its
    /// messages name them (docs/design.md#communities).
    vulnerable: HashMap<TownIdx, AffectedPeople>,
    /// Towns catching up on late readings ([`late`]).
    late: late::Lateness,
    /// The warning level in force per town, by its last evaluation: shorter timings
    /// and a line in its messages ([`warning`]).
    warnings: HashMap<TownIdx, reserve::ledger::TownWarning>,
}

impl Engine {
    /// Resumes from the store: open alerts, resolutions not yet told, silences. Alerts
    /// of towns or rules no longer known are closed without a message.
    pub fn open(
        registry: Arc<Registry>,
        policy: Policy,
        store: Store,
        renderer: Renderer,
        channels: Vec<ChannelKind>,
        now: DateTime<Utc>,
    ) -> Result<Engine, StoreError> {
        let mut engine = Engine {
            audience: Audience::new(&registry),
            registry,
            policy,
            store,
            renderer,
            channels,
            open: HashMap::new(),
            resolved: HashMap::new(),
            silences: Vec::new(),
            drills: Vec::new(),
            flush_at: BTreeMap::new(),
            digest_at: None,
            influx_series: false,
            series_refreshed_at: None,
            clusters_with_own_instance: Vec::new(),
            voices: crate::cluster_voice::ClusterVoices::new(&[], std::time::Duration::ZERO),
            vulnerable: HashMap::new(),
            late: late::Lateness::default(),
            warnings: HashMap::new(),
        };
        engine.reload(now)?;
        Ok(engine)
    }

    /// Reads the state again from the store: after a failed write, the cache may hold
    /// what the store does not.
    pub fn reload(&mut self, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.open.clear();
        self.resolved.clear();
        self.flush_at.clear();
        self.digest_at = None;
        let mut orphans = Vec::new();
        for row in self.store.load_live_alerts()? {
            match alert::decode(row.clone(), &self.registry) {
                Ok(alert) if alert.is_open() => {
                    self.open
                        .entry(alert.town)
                        .or_default()
                        .insert(alert.key.clone(), alert);
                }
                Ok(alert) => self.resolved.entry(alert.town).or_default().push(alert),
                Err(why) => {
                    tracing::warn!(
                        message = "Stored alert no longer fits the registry; closing it without a message.",
                        alert = row.id,
                        key = %row.key,
                        %why
                    );
                    orphans.push(row);
                }
            }
        }
        if !orphans.is_empty() {
            let mut batch = self.store.alert_batch()?;
            for mut row in orphans {
                row.state = AlertState::Resolved;
                row.resolved_at.get_or_insert(now);
                row.notify_event = None;
                row.escalated_from = None;
                row.remind_at = None;
                row.escalate_at = None;
                row.updated = now;
                batch.update_alert(&row)?;
            }
            batch.commit()?;
        }
        // Notices that were waiting when the service stopped are told now.
        let waiting: Vec<TownIdx> = self
            .open
            .iter()
            .filter(|(_, alerts)| alerts.values().any(Alert::has_notice))
            .map(|(t, _)| *t)
            .chain(self.resolved.keys().copied())
            .collect();
        for town in waiting {
            self.flush_at.insert(town, now);
        }
        self.silences = self
            .store
            .list_silences(Some(now))?
            .into_iter()
            .filter_map(Silence::from_row)
            .filter(|s| s.is_active(now))
            .collect();
        self.drills = self
            .store
            .list_drills(Some(now))?
            .into_iter()
            .filter_map(|row| Drill::from_row(&self.registry, row))
            .collect();
        self.close_alerts_of_past_drills(now)
    }

    /// Alerts of drills that ended while the service was stopped resolve as they
    /// would have at the end (a drill no longer running never marks an open alert).
    fn close_alerts_of_past_drills(&mut self, now: DateTime<Utc>) -> Result<(), StoreError> {
        let running: Vec<i64> = self.drills.iter().map(|d| d.row.id).collect();
        let past: BTreeSet<i64> = self
            .open
            .values()
            .flat_map(BTreeMap::values)
            .filter_map(|a| a.drill)
            .filter(|d| !running.contains(d))
            .collect();
        if past.is_empty() {
            return Ok(());
        }
        let past: Vec<i64> = past.into_iter().collect();
        let closing = self.drill_alerts_closed(&past, now);
        let mut batch = self.store.alert_batch()?;
        write_closed(&mut batch, &closing, &self.registry)?;
        batch.commit()?;
        self.forget_closed(&closing);
        Ok(())
    }

    /// Also queue the `alert` series for InfluxDB, in the same transaction as the
    /// alert changes it reports (on when an `[influx]` section is configured).
    pub fn with_influx_series(mut self, on: bool) -> Engine {
        self.influx_series = on;
        self
    }

    /// Writes the `alert` series again for every town's firing alerts, once a minute
    /// (as `town_status` is), so a wall display's "firing now" reads the last minutes
    /// with the dashboard's time range instead of all of history.
    pub fn refresh_series(&mut self, now: DateTime<Utc>) -> Result<(), StoreError> {
        if !self.influx_series
            || self
                .series_refreshed_at
                .is_some_and(|at| now - at < chrono::Duration::minutes(1))
        {
            return Ok(());
        }
        let none = BTreeMap::new();
        let lines: Vec<String> = self
            .open
            .iter()
            .flat_map(|(&town, alerts)| firing_series(&self.registry, town, &none, alerts, now))
            .collect();
        if !lines.is_empty() {
            let mut batch = self.store.alert_batch()?;
            for line in &lines {
                batch.enqueue_influx_line(line, now)?;
            }
            batch.commit()?;
        }
        self.series_refreshed_at = Some(now);
        Ok(())
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Whom `town`'s problems reach now, for its next messages.
    pub fn note_vulnerable(&mut self, town: TownIdx, people: Option<AffectedPeople>) {
        match people {
            Some(people) => self.vulnerable.insert(town, people),
            None => self.vulnerable.remove(&town),
        };
    }

    fn silenced(
        &self,
        town: TownIdx,
        rule: Rule,
        facility: Option<&str>,
        now: DateTime<Utc>,
    ) -> bool {
        silenced(&self.silences, &self.registry, town, rule, facility, now)
    }

    /// Applies towns' conditions at `now`: creates, fires, raises and resolves alerts.
    pub fn observe(
        &mut self,
        evaluations: &[(TownIdx, TownEvaluation)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let empty = BTreeMap::new();
        let mut staged = Vec::new();
        for (town, evaluation) in evaluations {
            let late = self.late.judge(*town, now);
            let current = self.open.get(town).unwrap_or(&empty);
            let mut change = self.observe_town(*town, current, evaluation, late, now);
            if change.dirty {
                if self.influx_series {
                    change.series =
                        firing_series(&self.registry, *town, current, &change.next, now);
                }
                staged.push(change);
            }
        }
        if staged.is_empty() {
            return Ok(());
        }
        let registry = Arc::clone(&self.registry);
        let mut batch = self.store.alert_batch()?;
        for change in &mut staged {
            for alert in change.next.values_mut() {
                if alert.id == 0 {
                    alert.id = batch.insert_alert(&alert::encode(alert, &registry))?;
                } else if change.updated.contains(&alert.key) {
                    batch.update_alert(&alert::encode(alert, &registry))?;
                }
            }
            for alert in &change.resolved {
                batch.update_alert(&alert::encode(alert, &registry))?;
            }
            for id in &change.deleted {
                batch.delete_alert(*id)?;
            }
            for line in &change.series {
                batch.enqueue_influx_line(line, now)?;
            }
        }
        batch.commit()?;
        for change in staged {
            let town = change.town;
            if change.next.is_empty() {
                self.open.remove(&town);
            } else {
                self.open.insert(town, change.next);
            }
            let told: Vec<Alert> = change
                .resolved
                .into_iter()
                .filter(Alert::has_notice)
                .collect();
            if !told.is_empty() {
                self.resolved.entry(town).or_default().extend(told);
            }
            if change.notice {
                self.schedule_flush(town, now);
            }
        }
        Ok(())
    }

    /// `late`: the time of the town's newest reading while it is catching up
    /// ([`late`]): its transitions happen then, and what fires is not told.
    fn observe_town(
        &self,
        town: TownIdx,
        current: &BTreeMap<String, Alert>,
        evaluation: &TownEvaluation,
        late: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> TownChange {
        let at = late.unwrap_or(now);
        let town_id = self.registry.town(town).id.to_string();
        let drill = self.drill_of(town, now).map(|d| d.row.id);
        let mut change = TownChange {
            town,
            next: BTreeMap::new(),
            updated: BTreeSet::new(),
            resolved: Vec::new(),
            deleted: Vec::new(),
            dirty: false,
            notice: false,
            series: Vec::new(),
        };
        for condition in &evaluation.conditions {
            let key = alert_key(&town_id, condition.rule, &condition.subject);
            if change.next.contains_key(&key) {
                continue; // one alert per key; the rules never produce two
            }
            let silenced = self.silenced(town, condition.rule, condition.detail.facility(), now);
            let mut alert = match current.get(&key) {
                Some(alert) => alert.clone(),
                None => new_alert(key.clone(), condition, drill, at),
            };
            let before = alert.clone();
            change.notice |= step(
                &mut alert,
                condition,
                silenced,
                &self.policy_of(town),
                at,
                late.is_some(),
            );
            if alert != before {
                alert.updated = now;
                change.updated.insert(key.clone());
                change.dirty = true;
            }
            if alert.id == 0 {
                change.dirty = true;
            }
            change.next.insert(key, alert);
        }
        for (key, alert) in current {
            if change.next.contains_key(key) {
                continue;
            }
            change.dirty = true;
            match alert.state {
                AlertState::Pending => change.deleted.push(alert.id),
                _ => {
                    let mut alert = alert.clone();
                    let silenced = self.silenced(town, alert.rule, alert.detail.facility(), now);
                    change.notice |= resolve(&mut alert, &evaluation.reserves, silenced, at);
                    change.resolved.push(alert);
                }
            }
        }
        change
    }

    /// A town's group is flushed `group_wait` after its first notice; a town with news
    /// for contacts above the town joins the open digest window instead (opening one
    /// if none is), so those contacts hear of every such town once per window.
    fn schedule_flush(&mut self, town: TownIdx, now: DateTime<Utc>) {
        let group_wait = self.policy_of(town).group_wait;
        self.flush_at.entry(town).or_insert(now + group_wait);
        if self.tells_above_town(town) {
            let window = *self.digest_at.get_or_insert(now + group_wait);
            self.flush_at.insert(town, window);
        }
    }

    /// Whether a notice of `town` waiting for its flush reaches a cluster, district or
    /// city contact.
    fn tells_above_town(&self, town: TownIdx) -> bool {
        let levels: BTreeSet<u8> = self
            .audience_of(town)
            .into_iter()
            .map(|(level, _)| level)
            .filter(|&level| level > LEVEL_TOWN)
            .collect();
        let open = self.open.get(&town).into_iter().flat_map(BTreeMap::values);
        let resolved = self.resolved.get(&town).into_iter().flatten();
        open.chain(resolved).filter(|a| a.has_notice()).any(|a| {
            levels
                .iter()
                .any(|&level| self.hears(a, level) && item_for(a, level).is_some())
        })
    }

    /// Towns with a pending alert whose `for` is over: evaluate them again to fire it.
    pub fn pending_due(&self, now: DateTime<Utc>) -> Vec<TownIdx> {
        self.open
            .iter()
            .filter(|(_, alerts)| {
                alerts.values().any(|a| {
                    a.state == AlertState::Pending
                        && a.created + self.policy.pending_for <= now
                        && !a.detail.held(now)
                })
            })
            .map(|(t, _)| *t)
            // Judged in readings' time while catching up: its next readings say.
            .filter(|t| !self.late.catching_up(*t))
            .collect()
    }

    /// Ends drills that are over, then turns due reminders and escalations into
    /// notices. A drill alert's escalation stops at its drill's scope.
    pub fn run_timers(&mut self, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.end_due_drills(now)?;
        let mut changed: Vec<(Alert, bool)> = Vec::new();
        for alerts in self.open.values() {
            for alert in alerts.values() {
                if !alert.awaits_ack()
                    || self.silenced(alert.town, alert.rule, alert.detail.facility(), now)
                {
                    continue;
                }
                let mut alert = alert.clone();
                let mut due = false;
                if alert.remind_at.is_some_and(|t| t <= now) {
                    alert.notify_event = merge_event(alert.notify_event, Event::Remind);
                    alert.remind_at = None;
                    due = true;
                }
                let reach = self.reach(&alert);
                if alert.escalate_at.is_some_and(|t| t <= now) && alert.escalation < reach {
                    alert.escalated_from.get_or_insert(alert.escalation);
                    alert.escalation += 1;
                    alert.escalate_at = None;
                    due = true;
                } else if alert.escalate_at.is_some_and(|t| t <= now) && alert.escalation >= reach {
                    // A drill's alert at the edge of its scope: nobody further to tell.
                    alert.escalate_at = None;
                    alert.updated = now;
                    changed.push((alert.clone(), false));
                }
                if due {
                    alert.updated = now;
                    changed.push((alert, true));
                }
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        let mut batch = self.store.alert_batch()?;
        for (alert, _) in &changed {
            batch.update_alert(&alert::encode(alert, &self.registry))?;
        }
        batch.commit()?;
        for (alert, notice) in changed {
            let town = alert.town;
            if let Some(alerts) = self.open.get_mut(&town) {
                alerts.insert(alert.key.clone(), alert);
            }
            if notice {
                self.schedule_flush(town, now);
            }
        }
        Ok(())
    }

    /// Flushes every town whose group is due, in one transaction with the notices it
    /// clears: town officers get one message per town, and each contact above the town
    /// one message over every due town it hears of (a digest; the town's own message
    /// when there is one town). Returns the channels that got notifications.
    pub fn flush_due(&mut self, now: DateTime<Utc>) -> Result<Enqueued, StoreError> {
        if self.digest_at.is_some_and(|at| at <= now) {
            self.digest_at = None;
        }
        let due: Vec<TownIdx> = self
            .flush_at
            .iter()
            .filter(|(t, at)| **at <= now && !self.late.catching_up(**t))
            .map(|(t, _)| *t)
            .collect();
        if due.is_empty() {
            return Ok(Enqueued::new());
        }
        let flushes: Vec<TownFlush> = due.iter().map(|&t| self.clear_notices(t, now)).collect();
        let (notifications, enqueued) = self.compose(&flushes, now);

        let mut batch = self.store.alert_batch()?;
        for (_, after, _) in flushes.iter().flat_map(|f| &f.told) {
            batch.update_alert(&alert::encode(after, &self.registry))?;
        }
        for n in &notifications {
            batch.enqueue(n)?;
        }
        batch.commit()?;
        let speaking: Vec<&Alert> = flushes.iter().flat_map(TownFlush::speaking).collect();
        self.record_told(&speaking, now);

        for flush in flushes {
            let town = flush.town;
            for (_, after, _) in flush.told {
                if after.is_open()
                    && let Some(alerts) = self.open.get_mut(&town)
                {
                    alerts.insert(after.key.clone(), after);
                }
            }
            self.resolved.remove(&town);
            self.flush_at.remove(&town);
        }
        if !notifications.is_empty() {
            tracing::info!(
                message = "Notifications enqueued.",
                towns = due.len(),
                count = notifications.len()
            );
        }
        Ok(enqueued)
    }

    /// Every alert of `town` with a notice, cleared and rescheduled as it will be once
    /// told (or held back, when silenced).
    fn clear_notices(&self, town: TownIdx, now: DateTime<Utc>) -> TownFlush {
        let empty = BTreeMap::new();
        let open = self.open.get(&town).unwrap_or(&empty);
        let resolved = self.resolved.get(&town).map_or(&[][..], Vec::as_slice);
        let mut told = Vec::new();
        for alert in open.values().chain(resolved) {
            if !alert.has_notice() {
                continue;
            }
            let mut after = alert.clone();
            let silenced = self.silenced(town, alert.rule, alert.detail.facility(), now);
            after.notify_event = None;
            after.escalated_from = None;
            after.updated = now;
            if self.told_by_city(alert, now) {
                // Told by the city while this cluster instance was silent: told.
                after.notified_at = Some(now);
                reschedule(&mut after, alert, &self.policy_of(town), now);
                told.push((alert.clone(), after, false));
                continue;
            }
            if silenced {
                // Not told. A new alert is told once the silence ends, if it still
                // fires; a reminder or escalation due now is due again later.
                if alert.notify_event == Some(Event::Fired) {
                    after.notified_at = None;
                }
                if alert.notify_event == Some(Event::Remind) {
                    after.remind_at = Some(now + self.policy.repeat_every);
                }
                if let Some(from) = alert.escalated_from {
                    after.escalation = from;
                    after.escalate_at = Some(now + self.policy_of(town).escalate_after);
                }
            } else {
                after.notify_seq += 1;
                after.notified_at = Some(now);
                reschedule(&mut after, alert, &self.policy_of(town), now);
            }
            told.push((alert.clone(), after, !silenced));
        }
        TownFlush { town, told }
    }

    /// The messages of one flush: per town for its officers, per contact above the
    /// town over all of `flushes`.
    fn compose(
        &self,
        flushes: &[TownFlush],
        now: DateTime<Utc>,
    ) -> (Vec<NewNotification>, Enqueued) {
        let mut out = Outgoing::default();
        let mut digests: BTreeMap<usize, Vec<(Group, DigestTown<'_>)>> = BTreeMap::new();
        for flush in flushes {
            let Some(group) = flush.group() else {
                continue;
            };
            let town = flush.town;
            let mut names = town_names(&self.registry, town);
            names.vulnerable = self.vulnerable.get(&town).cloned();
            names.warning = self.warnings.get(&town).cloned();
            let others: Vec<&Alert> = self.open.get(&town).map_or_else(Vec::new, |open| {
                open.values()
                    .filter(|a| {
                        a.state == AlertState::Firing
                            && !a.has_notice()
                            && !self.silenced(town, a.rule, a.detail.facility(), now)
                    })
                    .collect()
            });
            let audience = self.audience_of(town);
            for (level, c, officer) in
                addressed::listeners(&self.registry, audience, flush.speaking())
            {
                let contact = &self.registry.contacts[c];
                let items: Vec<Item<'_>> = flush
                    .speaking()
                    .filter(|alert| self.hears(alert, level))
                    .filter(|alert| addressed::hears(alert, level, contact, officer))
                    .filter_map(|alert| item_for(alert, level))
                    .collect();
                if items.is_empty() {
                    continue;
                }
                let town_news = DigestTown {
                    names: names.clone(),
                    items,
                    others: others
                        .iter()
                        .copied()
                        .filter(|a| self.hears(a, level))
                        .collect(),
                };
                if level == LEVEL_TOWN {
                    self.tell_town(c, group, &town_news, now, &mut out);
                } else {
                    digests.entry(c).or_default().push((group, town_news));
                }
            }
        }
        for (c, towns) in digests {
            match &towns[..] {
                [(group, town_news)] => self.tell_town(c, *group, town_news, now, &mut out),
                _ => self.tell_digest(c, &towns, now, &mut out),
            }
        }
        (out.notifications, out.enqueued)
    }

    /// Contact `c`'s message about one town.
    fn tell_town(
        &self,
        c: usize,
        (first, seq): Group,
        news: &DigestTown<'_>,
        now: DateTime<Utc>,
        out: &mut Outgoing,
    ) {
        let contact = &self.registry.contacts[c];
        let alert_ids: Vec<i64> = news.items.iter().map(|i| i.alert.id).collect();
        let message = self
            .renderer
            .for_contact(&crate::link::contact_key(contact), &alert_ids, now)
            .message(contact.lang, &news.names, &news.items, &news.others);
        let webhook = |url: &str| {
            self.renderer
                .webhook_body(url, &news.names, &news.items, &message)
        };
        let what = Told {
            group: format!("{first}.{seq}"),
            town: news.names.id.clone(),
            items: &news.items,
            message: &message,
        };
        self.address(contact, &what, &webhook, now, out);
    }

    /// Contact `c`'s one message about several towns. Its dedup key names the first
    /// telling it carries, which no other flush can carry again.
    fn tell_digest(
        &self,
        c: usize,
        towns: &[(Group, DigestTown<'_>)],
        now: DateTime<Utc>,
        out: &mut Outgoing,
    ) {
        let contact = &self.registry.contacts[c];
        let Some((first, seq)) = towns.iter().map(|(group, _)| *group).min() else {
            return;
        };
        let news: Vec<&DigestTown<'_>> = towns.iter().map(|(_, news)| news).collect();
        let items: Vec<Item<'_>> = news.iter().flat_map(|n| n.items.iter().copied()).collect();
        let alert_ids: Vec<i64> = items.iter().map(|i| i.alert.id).collect();
        let renderer =
            self.renderer
                .for_contact(&crate::link::contact_key(contact), &alert_ids, now);
        let message = renderer.digest(contact.lang, &news);
        let webhook = |url: &str| renderer.digest_webhook_body(url, &news, &message);
        let what = Told {
            group: format!("digest.{first}.{seq}"),
            // A digest is about no one town: listing a town's notifications leaves it
            // out, and its alert ids name every town's alerts.
            town: String::new(),
            items: &items,
            message: &message,
        };
        self.address(contact, &what, &webhook, now, out);
    }

    /// `what` to every channel of `contact` that can deliver.
    fn address(
        &self,
        contact: &Contact,
        what: &Told<'_>,
        webhook: &dyn Fn(&str) -> String,
        now: DateTime<Utc>,
        out: &mut Outgoing,
    ) {
        let event = what
            .items
            .iter()
            .max_by_key(|i| i.event.weight())
            .map_or(Event::Fired, |i| i.event);
        let alert_ids: Vec<i64> = what.items.iter().map(|i| i.alert.id).collect();
        for &kind in &contact.channels {
            if !self.channels.contains(&kind) {
                continue;
            }
            let Some(recipient) = address(contact, kind) else {
                continue;
            };
            let (body, html) = match kind {
                ChannelKind::Email => (what.message.text.clone(), Some(what.message.html.clone())),
                ChannelKind::Sms => (what.message.sms.clone(), None),
                ChannelKind::Webhook => (webhook(recipient), None),
            };
            let channel = channel_id(kind);
            out.notifications.push(NewNotification {
                dedup_key: format!("{}/{channel}/{recipient}", what.group),
                town: what.town.clone(),
                alert_ids: alert_ids.clone(),
                event: event.as_str().to_owned(),
                contact: contact.name.clone(),
                channel: channel.to_owned(),
                recipient: recipient.to_owned(),
                subject: what.message.subject.clone(),
                body,
                html,
                created: now,
            });
            out.enqueued.insert(channel);
        }
    }

    /// When the engine next has something to do by itself (a group to flush, a
    /// pending alert to fire, a reminder, an escalation).
    pub fn next_wake(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // A town catching up waits for its readings (or the tick that ends its
        // catch-up), not for its clock.
        let flushes = self
            .flush_at
            .iter()
            .filter(|(t, _)| !self.late.catching_up(**t))
            .map(|(_, at)| *at);
        let timers = self
            .open
            .values()
            .flat_map(|alerts| alerts.values())
            .filter_map(|a| {
                if a.state == AlertState::Pending {
                    if self.late.catching_up(a.town) {
                        return None;
                    }
                    let due = a.created + self.policy.pending_for;
                    return Some(a.detail.held_until().map_or(due, |held| due.max(held)));
                }
                if !a.awaits_ack() || self.silenced(a.town, a.rule, a.detail.facility(), now) {
                    return None;
                }
                let escalate = a.escalate_at.filter(|_| a.escalation < LEVEL_CITY);
                match (a.remind_at, escalate) {
                    (Some(r), Some(e)) => Some(r.min(e)),
                    (r, e) => r.or(e),
                }
            });
        let drill_ends = self.drills.iter().map(|d| d.row.end());
        flushes.chain(timers).chain(drill_ends).min()
    }

    /// Records an acknowledgement: reminders and escalation stop. An alert already
    /// acknowledged keeps its first acknowledgement. `None` when there is no such alert.
    pub fn ack(
        &mut self,
        id: i64,
        by: &str,
        note: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Alert>, StoreError> {
        let found = self
            .open
            .values()
            .flat_map(|alerts| alerts.values())
            .find(|a| a.id == id)
            .cloned();
        let mut alert = match found {
            Some(alert) => alert,
            None => match self.store.alert(id)? {
                None => return Ok(None),
                Some(row) => match alert::decode(row, &self.registry) {
                    Ok(alert) => alert,
                    Err(why) => {
                        tracing::warn!(message = "Acknowledged alert does not decode.", alert = id, %why);
                        return Ok(None);
                    }
                },
            },
        };
        if alert.ack.is_some() {
            return Ok(Some(alert));
        }
        alert.ack = Some(AckRow {
            by: by.to_owned(),
            at: now,
            note: note.to_owned(),
        });
        alert.remind_at = None;
        alert.escalate_at = None;
        if alert.notify_event == Some(Event::Remind) {
            alert.notify_event = None;
        }
        if let Some(from) = alert.escalated_from.take() {
            alert.escalation = from;
        }
        alert.updated = now;
        let mut batch = self.store.alert_batch()?;
        batch.update_alert(&alert::encode(&alert, &self.registry))?;
        batch.commit()?;
        if alert.is_open()
            && let Some(alerts) = self.open.get_mut(&alert.town)
        {
            alerts.insert(alert.key.clone(), alert.clone());
        }
        Ok(Some(alert))
    }

    pub fn add_silence(&mut self, mut silence: Silence) -> Result<Silence, StoreError> {
        let mut batch = self.store.alert_batch()?;
        silence.id = batch.insert_silence(&silence.to_row())?;
        batch.commit()?;
        self.silences.push(silence.clone());
        Ok(silence)
    }

    pub fn delete_silence(&mut self, id: i64) -> Result<bool, StoreError> {
        let mut batch = self.store.alert_batch()?;
        let deleted = batch.delete_silence(id)?;
        batch.commit()?;
        self.silences.retain(|s| s.id != id);
        Ok(deleted)
    }

    /// Forgets silences that ended. Returns whether any did (their alerts may now
    /// need telling: evaluate every town again).
    pub fn expire_silences(&mut self, now: DateTime<Utc>) -> bool {
        let before = self.silences.len();
        self.silences.retain(|s| s.is_active(now));
        self.silences.len() != before
    }

    /// The drill running at `town` at `now`; of several, the narrowest.
    fn drill_of(&self, town: TownIdx, now: DateTime<Utc>) -> Option<&Drill> {
        self.drills
            .iter()
            .filter(|d| d.row.is_active(now) && d.scope.covers(&self.registry, town))
            .min_by_key(|d| crate::drill::reach(&d.scope))
    }

    /// How far `alert` may escalate: a drill alert no further than its drill's scope
    /// (a drill whose record is gone: its town officers).
    fn reach(&self, alert: &Alert) -> u8 {
        match alert.drill {
            None => LEVEL_CITY,
            Some(id) => self
                .drills
                .iter()
                .find(|d| d.row.id == id)
                .map_or(LEVEL_TOWN, |d| crate::drill::reach(&d.scope)),
        }
    }

    /// Starts `drill` (validated): alerts raised in its scope from now on are its.
    pub fn start_drill(&mut self, mut drill: Drill) -> Result<Drill, StoreError> {
        let mut batch = self.store.alert_batch()?;
        let towns = scope_town_ids(&self.registry, &drill.scope);
        drill.row.id = batch.insert_drill(&drill.row, &towns, &drill.remote)?;
        batch.commit()?;
        self.drills.push(drill.clone());
        Ok(drill)
    }

    /// Ends drill `id` now, resolving its alerts; `remote` is where the request came
    /// from, for the audit entry. False when no such drill runs.
    pub fn end_drill(
        &mut self,
        id: i64,
        by: &str,
        remote: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        if !self.drills.iter().any(|d| d.row.id == id) {
            return Ok(false);
        }
        let closing = self.drill_alerts_closed(&[id], now);
        let towns = self
            .drills
            .iter()
            .find(|d| d.row.id == id)
            .map(|d| scope_town_ids(&self.registry, &d.scope))
            .unwrap_or_default();
        let mut batch = self.store.alert_batch()?;
        let ended = batch.end_drill(id, now, by, remote, &towns)?;
        write_closed(&mut batch, &closing, &self.registry)?;
        batch.commit()?;
        self.forget_closed(&closing);
        self.drills.retain(|d| d.row.id != id);
        Ok(ended)
    }

    /// Ends the drills whose time is up, resolving their alerts.
    fn end_due_drills(&mut self, now: DateTime<Utc>) -> Result<(), StoreError> {
        let over: Vec<i64> = self
            .drills
            .iter()
            .filter(|d| !d.row.is_active(now))
            .map(|d| d.row.id)
            .collect();
        if over.is_empty() {
            return Ok(());
        }
        let closing = self.drill_alerts_closed(&over, now);
        if !closing.is_empty() {
            let mut batch = self.store.alert_batch()?;
            write_closed(&mut batch, &closing, &self.registry)?;
            batch.commit()?;
            self.forget_closed(&closing);
        }
        self.drills.retain(|d| !over.contains(&d.row.id));
        tracing::info!(message = "Drills ended.", drills = ?over, alerts = closing.len());
        Ok(())
    }

    /// The open alerts of `drills`, as they are once the drill is over: resolved
    /// without a message (an exercise's figures are no news once it ends; a condition
    /// that still holds is raised again as a real alert), or forgotten when pending.
    fn drill_alerts_closed(&self, drills: &[i64], now: DateTime<Utc>) -> Vec<Alert> {
        self.open
            .values()
            .flat_map(BTreeMap::values)
            .filter(|a| a.drill.is_some_and(|d| drills.contains(&d)))
            .map(|a| {
                let mut a = a.clone();
                if a.state == AlertState::Firing {
                    a.state = AlertState::Resolved;
                    a.resolved_at = Some(now);
                }
                a.remind_at = None;
                a.escalate_at = None;
                a.notify_event = None;
                if let Some(from) = a.escalated_from.take() {
                    a.escalation = from;
                }
                a.updated = now;
                a
            })
            .collect()
    }

    fn forget_closed(&mut self, closed: &[Alert]) {
        for alert in closed {
            if let Some(alerts) = self.open.get_mut(&alert.town) {
                alerts.remove(&alert.key);
                if alerts.is_empty() {
                    self.open.remove(&alert.town);
                }
            }
        }
    }

    /// Drills running, for tests and diagnostics.
    #[cfg(test)]
    pub fn drills(&self) -> &[Drill] {
        &self.drills
    }

    /// Open alerts, for tests and diagnostics.
    #[cfg(test)]
    pub fn open_alerts(&self) -> impl Iterator<Item = &Alert> {
        self.open.values().flat_map(|alerts| alerts.values())
    }
}

/// The first alert a flush tells of a town and the number of its notification: what
/// names that telling in dedup keys.
type Group = (i64, u32);

/// One town's notices as a flush tells them.
#[derive(Debug)]
struct TownFlush {
    town: TownIdx,
    /// Every alert with a notice: (as it was, as it will be, whether it is told now).
    told: Vec<(Alert, Alert, bool)>,
}

impl TownFlush {
    /// The alerts told now, as they were (their notices say what to tell).
    fn speaking(&self) -> impl Iterator<Item = &Alert> {
        self.told
            .iter()
            .filter(|(_, _, speaks)| *speaks)
            .map(|(before, _, _)| before)
    }

    /// What names this telling in dedup keys: the first alert told and the number of
    /// its notification. No later flush has the pair, and a flush after a restart that
    /// lost this one has the same.
    fn group(&self) -> Option<Group> {
        self.told
            .iter()
            .filter(|(_, _, speaks)| *speaks)
            .min_by_key(|(before, _, _)| before.id)
            .map(|(before, after, _)| (before.id, after.notify_seq))
    }
}

/// One message before it is addressed: its key, what it is about and its text.
struct Told<'a> {
    /// The dedup key without channel and recipient.
    group: String,
    /// The town's id; empty for a digest.
    town: String,
    items: &'a [Item<'a>],
    message: &'a Message,
}

/// Notifications a flush enqueues, and their channels.
#[derive(Default)]
struct Outgoing {
    notifications: Vec<NewNotification>,
    enqueued: Enqueued,
}

/// What observing one town changes, staged until the store has it.
#[derive(Debug)]
struct TownChange {
    town: TownIdx,
    /// The town's open alerts after the observation, by key.
    next: BTreeMap<String, Alert>,
    /// Keys in `next` whose row changed (new rows have id 0).
    updated: BTreeSet<String>,
    resolved: Vec<Alert>,
    /// Pending alerts whose condition cleared: never fired, forgotten.
    deleted: Vec<i64>,
    /// Something must be stored.
    dirty: bool,
    /// A notice was added: the town's group flush must be scheduled.
    notice: bool,
    /// `alert` lines for InfluxDB, stored with the change.
    series: Vec<String>,
}

/// The `alert` lines of a town's change: for each (rule, severity) whose number of
/// firing alerts changed, that number. The series has no subject tag
/// (docs/design.md#influxdb-series), and a town can have two alerts of one rule (water
/// and food below target), so `firing` counts them: the first resolving leaves `1i`, not
/// a false `0i`. A rise in severity moves an alert from one series to the other: the old
/// one drops.
fn firing_series(
    registry: &Registry,
    town: TownIdx,
    before: &BTreeMap<String, Alert>,
    after: &BTreeMap<String, Alert>,
    now: DateTime<Utc>,
) -> Vec<String> {
    let count = |alerts: &BTreeMap<String, Alert>| {
        let mut counts: BTreeMap<(&'static str, &'static str), u64> = BTreeMap::new();
        // A drill's alerts are not the city's state: the wall display counts real ones.
        let firing = alerts
            .values()
            .filter(|a| a.state == AlertState::Firing && a.drill.is_none());
        for a in firing {
            *counts
                .entry((a.rule.as_str(), a.severity.as_str()))
                .or_default() += 1;
        }
        counts
    };
    let (before, after) = (count(before), count(after));
    let keys: BTreeSet<_> = before.keys().chain(after.keys()).copied().collect();
    let town = &registry.town(town).id;
    keys.into_iter()
        .filter(|k| before.get(k) != after.get(k))
        .map(|(rule, severity)| {
            let firing = after.get(&(rule, severity)).copied().unwrap_or(0);
            store::influx::alert_line(town, rule, severity, firing, now)
        })
        .collect()
}

/// Drill alerts closed at the drill's end: pending ones deleted, the others updated.
fn write_closed(
    batch: &mut store::AlertBatch<'_>,
    closed: &[Alert],
    registry: &Registry,
) -> Result<(), StoreError> {
    for alert in closed {
        if alert.state == AlertState::Pending {
            batch.delete_alert(alert.id)?;
        } else {
            batch.update_alert(&alert::encode(alert, registry))?;
        }
    }
    Ok(())
}

fn silenced(
    silences: &[Silence],
    registry: &Registry,
    town: TownIdx,
    rule: Rule,
    facility: Option<&str>,
    now: DateTime<Utc>,
) -> bool {
    if silences.is_empty() {
        return false;
    }
    let town_id = registry.town(town).id.as_str();
    silences
        .iter()
        .any(|s| s.is_active(now) && s.matches(town_id, rule, facility))
}

/// A new alert of `c`, raised in `drill` when one covers its town.
fn new_alert(key: String, c: &Condition, drill: Option<i64>, now: DateTime<Utc>) -> Alert {
    Alert {
        id: 0,
        key,
        town: c.town,
        rule: c.rule,
        subject: c.subject.clone(),
        severity: c.severity(),
        state: AlertState::Pending,
        detail: c.detail.clone(),
        since: c.since.unwrap_or(now),
        created: now,
        fired_at: None,
        resolved_at: None,
        ack: None,
        escalation: if c.rule == Rule::ClusterInstanceSilent {
            one_voice::LEVEL_DISTRICT
        } else {
            LEVEL_TOWN
        },
        remind_at: None,
        escalate_at: None,
        notified_at: None,
        notify_event: None,
        escalated_from: None,
        notify_seq: 0,
        updated: now,
        drill,
        late: false,
    }
}

/// One observation of a condition that holds. Returns whether a notice was added.
/// `late`: its town is catching up ([`late`]) and `now` is its newest reading's time;
/// an alert that fires then is marked late and left untold.
fn step(
    alert: &mut Alert,
    c: &Condition,
    silenced: bool,
    policy: &Policy,
    now: DateTime<Utc>,
    late: bool,
) -> bool {
    let was = alert.rule;
    alert.rule = c.rule;
    alert.detail = c.detail.clone();
    let severity = c.severity();
    let mut notice = false;
    match alert.state {
        AlertState::Pending => {
            alert.severity = severity;
            // A shortfall resting on facilities still in their start-up grace waits.
            if alert.created + policy.pending_for <= now && !c.detail.held(now) {
                alert.state = AlertState::Firing;
                alert.fired_at = Some(now);
                alert.late = late;
            }
        }
        AlertState::Firing => {
            // An acknowledgement covers the severity it was given at: a worse problem
            // needs somebody to take it on again, so reminders and escalation resume.
            if severity > alert.severity && alert.ack.take().is_some() {
                alert.remind_at = Some(now + policy.repeat_every);
                alert.escalate_at =
                    (alert.escalation < LEVEL_CITY).then_some(now + policy.escalate_after);
            }
            alert.severity = severity;
            // Every move of the rule within its family is told, up or down (the
            // ledger's hysteresis keeps the level from flapping across a line).
            let moved = match c.rule.gravity().cmp(&was.gravity()) {
                std::cmp::Ordering::Greater => Some(Event::Raised),
                std::cmp::Ordering::Less => Some(Event::Lowered),
                std::cmp::Ordering::Equal => None,
            };
            if let Some(event) = moved
                && !silenced
                && (alert.notified_at.is_some() || alert.notify_event.is_some())
            {
                alert.notify_event = merge_event(alert.notify_event, event);
                notice = true;
            }
        }
        AlertState::Resolved => {}
    }
    // Firing and never told (it fired now, or while silenced, or during a catch-up that
    // is over): tell it.
    if alert.state == AlertState::Firing
        && !silenced
        && !late
        && alert.notified_at.is_none()
        && alert.notify_event.is_none()
    {
        alert.notify_event = Some(Event::Fired);
        notice = true;
    }
    notice
}

/// A firing alert whose condition no longer holds. Returns whether a notice was added.
fn resolve(
    alert: &mut Alert,
    reserves: &[ReserveDetail],
    silenced: bool,
    now: DateTime<Utc>,
) -> bool {
    alert.state = AlertState::Resolved;
    alert.resolved_at = Some(now);
    alert.remind_at = None;
    alert.escalate_at = None;
    alert.updated = now;
    // A reserve resolves quoting the days it is back to.
    if let Detail::Reserve(last) = &alert.detail
        && let Some(current) = reserves.iter().find(|r| r.category == last.category)
    {
        alert.detail = Detail::Reserve(current.clone());
    }
    // Contacts an escalation waiting for its flush would have reached never heard of
    // the alert: they need no resolution either.
    if let Some(from) = alert.escalated_from.take() {
        alert.escalation = from;
    }
    if silenced {
        alert.notify_event = None;
        return false;
    }
    if alert.notified_at.is_some() || alert.notify_event.is_some() {
        alert.notify_event = merge_event(alert.notify_event, Event::Resolved);
    }
    alert.notify_event.is_some()
}

/// Timers after telling `before`'s notice.
fn reschedule(after: &mut Alert, before: &Alert, policy: &Policy, now: DateTime<Utc>) {
    if !after.is_open() || after.ack.is_some() {
        return;
    }
    let escalate = (after.escalation < LEVEL_CITY).then_some(now + policy.escalate_after);
    match before.notify_event {
        Some(Event::Fired | Event::Raised) => {
            after.remind_at = Some(now + policy.repeat_every);
            after.escalate_at = escalate;
        }
        Some(Event::Remind) => after.remind_at = Some(now + policy.repeat_every),
        // A reminder merged into the update is due again a period on.
        Some(Event::Lowered) if after.remind_at.is_none() => {
            after.remind_at = Some(now + policy.repeat_every);
        }
        _ => {}
    }
    if before.escalated_from.is_some() {
        after.escalate_at = escalate;
    }
}

/// What a contact at `level` hears about `alert`, if anything.
fn item_for(alert: &Alert, level: u8) -> Option<Item<'_>> {
    match (alert.escalated_from, alert.notify_event) {
        (Some(from), event) if level > from && level <= alert.escalation => {
            (event != Some(Event::Resolved)).then_some(Item {
                alert,
                event: Event::Escalate,
            })
        }
        (from, Some(event)) if level <= from.unwrap_or(alert.escalation) => {
            Some(Item { alert, event })
        }
        _ => None,
    }
}

fn address(contact: &Contact, kind: ChannelKind) -> Option<&str> {
    match kind {
        ChannelKind::Email => contact.email.as_deref(),
        ChannelKind::Sms => contact.phone.as_deref(),
        ChannelKind::Webhook => contact.webhook.as_deref(),
    }
}

pub(crate) fn town_names(registry: &Registry, town: TownIdx) -> TownNames {
    let t = registry.town(town);
    TownNames {
        id: t.id.to_string(),
        name: t.name.clone(),
        cluster: registry.clusters[t.cluster.index()].name.clone(),
        district: registry.districts[t.district.index()].name.clone(),
        vulnerable: None,
        warning: None,
    }
}

/// The towns (ids) a drill's audit entries name: those of its scope, none for the
/// whole city (an entry every officer could read would be noise to each).
fn scope_town_ids(registry: &Registry, scope: &crate::drill::DrillScope) -> Vec<String> {
    if matches!(scope, reserve::registry::Scope::City) {
        return Vec::new();
    }
    scope
        .towns(registry)
        .into_iter()
        .map(|t| registry.town(t).id.to_string())
        .collect()
}

#[cfg(test)]
mod tests;
