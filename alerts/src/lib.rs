//! Alert lifecycle, grouping, escalation and notification channels
//! (docs/design.md#alerts).
//!
//! ```text
//!  ingest ─(TownChanges)─► evaluator ────────► SQLite: alerts, outbox ──► delivery workers
//!  ledger ◄─(read lock)──┘  rules → engine        (one transaction per    (email, SMS,
//!  API ─(AlertsHandle)─► commands ─┘               step; Notify wakes)     webhook)
//! ```
//!
//! - The evaluator runs on every ledger change (the change feed), not on a slow
//!   timer; a periodic tick re-evaluates every town for what depends on time alone
//!   (silence, the end of silences). Its steps run on the blocking pool, because all
//!   they do is SQLite, which blocks.
//! - [`rules`] says which problems a town has now (pure); the engine turns them into
//!   alerts with a lifecycle and notifications, every step committed before it counts.
//! - Each channel's worker delivers from the outbox with retries and backoff.
//!
//! Build with [`Alerts::open`], hand [`Alerts::handle`] to the API, then
//! [`Alerts::run`] until the shutdown token is cancelled.

pub mod activation;
mod alert;
pub mod channel;
pub mod cluster_voice;
mod config;
pub mod drill;
mod engine;
mod handle;
pub mod link;
mod outbox;
pub mod redact;
mod render;
pub mod rules;
pub mod stress_report;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use live::{ChangeConsumer, SharedLedger};
use reserve::Registry;
use reserve::registry::TownIdx;
use store::{AsyncStore, Store, StoreError, StoreOptions};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use channel::{
    Channel, ChannelError, ChannelKind, Channels, DeliveryError, EmailChannel, Notification,
    SmsChannel, WebhookChannel,
};
pub use config::{
    AlertsConfig, RetryPolicy, SmsConfig, SmsPreset, SmtpConfig, WebhookConfig, WebhookFormat,
};
pub use handle::{
    AckView, AlertFilter, AlertStatus, AlertView, AlertsHandle, Counts, DEFAULT_LIMIT,
    EscalationLevel, MAX_LIMIT, NewSilence, NotificationFilter, NotificationView, SilenceView,
    Summary,
};
pub use render::{SMS_GSM_LIMIT, SMS_UCS2_LIMIT, fits_one_sms};
pub use rules::{Rule, Severity};

use engine::{Engine, Policy};
use handle::Command;
use render::Renderer;

/// Commands from the API queued for the engine; a full queue makes the API wait.
const COMMAND_QUEUE: usize = 64;
/// Towns evaluated under one read lock of the ledger, so a full pass over a large city
/// never holds the ingest writer up for long.
const EVALUATE_CHUNK: usize = 500;
/// Pause before trying again after the store failed.
const STORE_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("alert {0} not found")]
    NotFound(i64),
    /// A request that cannot be carried out as asked (a bad silence, a bad filter).
    #[error("{0}")]
    Invalid(String),
    #[error("the alert engine is not running")]
    Stopped,
    #[error("alert engine: {0}")]
    Engine(String),
}

/// The wake-ups of the delivery workers, one per channel.
#[derive(Debug, Default)]
struct Wakers {
    email: Arc<Notify>,
    sms: Arc<Notify>,
    webhook: Arc<Notify>,
}

impl Wakers {
    fn wake(&self, channel: &str) {
        match channel {
            "email" => self.email.notify_one(),
            "sms" => self.sms.notify_one(),
            "webhook" => self.webhook.notify_one(),
            _ => {}
        }
    }
}

/// The alerting service, opened and ready to run.
#[derive(Debug)]
pub struct Alerts {
    config: AlertsConfig,
    engine: Engine,
    commands: mpsc::Receiver<Command>,
    handle: AlertsHandle,
    channels: Channels,
    /// One connection per delivery worker.
    worker_stores: Vec<Store>,
    /// The open activations of the activation table, shared with the API.
    activations: activation::SharedActivations,
}

impl Alerts {
    /// Opens the alert state in the SQLite file at `store_path` (the same file as the
    /// rest of the service; WAL lets each part have its own connection) and resumes
    /// where the last run stopped.
    pub fn open(
        config: AlertsConfig,
        registry: Arc<Registry>,
        store_path: &Path,
        store_options: StoreOptions,
        channels: Channels,
    ) -> Result<Alerts, AlertsError> {
        let open = || Store::open(store_path, store_options.clone());
        let renderer = Renderer::new(
            config.public_url.as_deref(),
            config.utc_offset,
            &config.subject_prefix,
            channels
                .webhook
                .as_ref()
                .map_or(WebhookFormat::Auto, |w| w.format()),
        )
        .with_links(config.ack_links.clone());
        let available: Vec<ChannelKind> =
            [ChannelKind::Email, ChannelKind::Sms, ChannelKind::Webhook]
                .into_iter()
                .filter(|k| channels.has(*k))
                .collect();
        warn_unreachable_contacts(&registry, &available);
        let engine = Engine::open(
            Arc::clone(&registry),
            policy(&config),
            open()?,
            renderer.clone(),
            available,
            Utc::now(),
        )?
        .with_influx_series(config.influx_series)
        .with_clusters_with_own_instance(config.clusters_with_own_instance.clone())
        .with_late_after(chrono_duration(config.late_after));
        let voices = cluster_voice::ClusterVoices::new(
            &config.clusters_with_own_instance,
            config.cluster_silent_after,
        );
        let engine = engine.with_cluster_voices(voices.clone());
        let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
        let handle = AlertsHandle::new(commands_tx, AsyncStore::new(open()?), registry, renderer)
            .with_cluster_voices(voices);
        let worker_stores = [
            channels.email.is_some(),
            channels.sms.is_some(),
            channels.webhook.is_some(),
        ]
        .into_iter()
        .filter(|&has| has)
        .map(|_| open())
        .collect::<Result<Vec<_>, _>>()?;
        Ok(Alerts {
            config,
            engine,
            commands,
            handle,
            channels,
            worker_stores,
            activations: activation::OpenActivations::shared(&[]),
        })
    }

    /// Evaluates the open activations of `activations`, the view the API changes
    /// (docs/design.md#activation-table); none by default.
    pub fn with_activations(self, activations: activation::SharedActivations) -> Alerts {
        Alerts {
            activations,
            ..self
        }
    }

    /// For the API: list, acknowledge, silence. Works while [`Alerts::run`] runs.
    pub fn handle(&self) -> AlertsHandle {
        self.handle.clone()
    }

    /// Evaluates on every change of the ledger and delivers notifications until
    /// `shutdown` is cancelled. The evaluator finishes the step it is in (each step is
    /// one transaction); a delivery cut short is not recorded as sent, so the next run
    /// sends it.
    pub async fn run(
        self,
        ledger: SharedLedger,
        changes: Arc<ChangeConsumer>,
        shutdown: CancellationToken,
    ) -> Result<(), AlertsError> {
        let Alerts {
            config,
            engine,
            commands,
            handle: _,
            channels,
            mut worker_stores,
            activations,
        } = self;
        let wakers = Arc::new(Wakers::default());
        let tracker = TaskTracker::new();
        let retry = config.retry;
        if let Some(email) = channels.email {
            let store = AsyncStore::new(worker_stores.remove(0));
            tracker.spawn(outbox::deliver(
                email,
                store,
                Arc::clone(&wakers.email),
                retry,
                shutdown.clone(),
            ));
        }
        if let Some(sms) = channels.sms {
            let store = AsyncStore::new(worker_stores.remove(0));
            tracker.spawn(outbox::deliver(
                sms,
                store,
                Arc::clone(&wakers.sms),
                retry,
                shutdown.clone(),
            ));
        }
        if let Some(webhook) = channels.webhook {
            let store = AsyncStore::new(worker_stores.remove(0));
            tracker.spawn(outbox::deliver(
                webhook,
                store,
                Arc::clone(&wakers.webhook),
                retry,
                shutdown.clone(),
            ));
        }
        tracker.close();

        let evaluator = Evaluator {
            settings: rules::RuleSettings {
                depleting_horizon_h: config.depleting_horizon.as_secs_f64() / 3600.0,
                started_at: Utc::now(),
                startup_grace_factor: config.startup_grace_factor,
                clock_speed: config.clock_speed,
                shelter_near_capacity_pct: config.shelter_near_capacity_pct,
            },
            tick: chrono_duration(config.tick),
            engine,
            ledger,
            activations,
            changes,
            commands,
            wakers,
            shutdown: shutdown.clone(),
        };
        let outcome = evaluator.run().await;
        // Whatever ended the evaluator, the workers stop with it.
        shutdown.cancel();
        tracker.wait().await;
        outcome
    }
}

/// Says once, at start, who will not be reached on a channel they asked for: one line
/// per unconfigured channel (a city has hundreds of contacts; a line each would bury
/// the log), naming a few of them.
fn warn_unreachable_contacts(registry: &Registry, available: &[ChannelKind]) {
    let mut missing: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for contact in &registry.contacts {
        for kind in contact.channels.iter().filter(|k| !available.contains(k)) {
            missing
                .entry(channel::channel_id(*kind))
                .or_default()
                .push(contact.name.as_str());
        }
    }
    for (channel, contacts) in missing {
        tracing::warn!(
            message = "Contacts will not be notified on a channel that is not configured.",
            channel,
            contacts = contacts.len(),
            first = ?contacts.iter().take(3).collect::<Vec<_>>()
        );
    }
}

fn policy(config: &AlertsConfig) -> Policy {
    Policy {
        pending_for: chrono_duration(config.pending_for),
        group_wait: chrono_duration(config.group_wait),
        repeat_every: chrono_duration(config.repeat_every),
        escalate_after: chrono_duration(config.escalate_after),
    }
}

/// A std duration as chrono's, saturating at a century (beyond anything configured).
pub(crate) fn chrono_duration(d: Duration) -> chrono::Duration {
    const CENTURY_S: u64 = 100 * 365 * 86_400;
    chrono::Duration::from_std(d.min(Duration::from_secs(CENTURY_S)))
        .unwrap_or(chrono::Duration::zero())
}

/// What wakes the evaluator.
enum Wake {
    Stop,
    Changed(BTreeSet<TownIdx>),
    Command(Command),
    Timer,
}

/// The evaluator: waits for changes, commands and timers; each step runs the engine on
/// the blocking pool, because all the engine does is SQLite, which blocks.
struct Evaluator {
    settings: rules::RuleSettings,
    tick: chrono::Duration,
    engine: Engine,
    ledger: SharedLedger,
    activations: activation::SharedActivations,
    changes: Arc<ChangeConsumer>,
    commands: mpsc::Receiver<Command>,
    wakers: Arc<Wakers>,
    shutdown: CancellationToken,
}

impl Evaluator {
    async fn run(self) -> Result<(), AlertsError> {
        let Evaluator {
            settings,
            tick,
            mut engine,
            ledger,
            activations,
            changes,
            commands,
            wakers,
            shutdown,
        } = self;
        let mut turns = Turns {
            settings,
            tick,
            ledger,
            activations,
            changes,
            commands,
            wakers,
            shutdown,
            next_tick: Utc::now(),
            towns: BTreeSet::new(),
            failing: false,
        };
        loop {
            let now = Utc::now();
            let (returned, outcome) = turns.evaluate(engine, now).await?;
            engine = returned;
            let wake_at = turns.settle(outcome, now);
            match turns.wait(wake_at).await {
                Wake::Stop => return Ok(()),
                Wake::Changed(changed) => turns.towns = changed,
                Wake::Timer => {}
                Wake::Command(command) => {
                    let (returned, lifted) =
                        on_engine(engine, move |engine| carry_out(engine, command)).await?;
                    engine = returned;
                    if lifted {
                        // A silence ended early: its alerts may need telling now.
                        turns.next_tick = Utc::now();
                    }
                }
            }
        }
    }
}

/// What an evaluation step gives back: the channels that got notifications and when
/// the engine next has something to do, or the store's error.
type StepOutcome = Result<(engine::Enqueued, Option<DateTime<Utc>>), StoreError>;

/// The evaluator's loop, apart from the engine (which moves to the blocking pool and
/// back each step): what it waits on and what it carries from one turn to the next.
struct Turns {
    settings: rules::RuleSettings,
    tick: chrono::Duration,
    ledger: SharedLedger,
    activations: activation::SharedActivations,
    changes: Arc<ChangeConsumer>,
    commands: mpsc::Receiver<Command>,
    wakers: Arc<Wakers>,
    shutdown: CancellationToken,
    /// When every town is evaluated again (silence and staleness move with time).
    next_tick: DateTime<Utc>,
    /// Towns changed since the last step.
    towns: BTreeSet<TownIdx>,
    /// Whether the last step failed: failures are logged when a streak begins and ends.
    failing: bool,
}

impl Turns {
    /// One step on the blocking pool: the changed towns (every town when the tick is
    /// due, and those with a pending alert whose `for` is over), then timers and
    /// flushes. A failed step reloads the engine's state from the store.
    async fn evaluate(
        &mut self,
        engine: Engine,
        now: DateTime<Utc>,
    ) -> Result<(Engine, StepOutcome), AlertsError> {
        let everything = now >= self.next_tick;
        if everything {
            self.next_tick = now + self.tick;
        }
        let (ledger, settings) = (Arc::clone(&self.ledger), self.settings);
        let activations = Arc::clone(&self.activations);
        let mut towns = std::mem::take(&mut self.towns);
        on_engine(engine, move |engine| {
            if everything {
                engine.expire_silences(now);
                towns.extend(engine.registry().town_indices());
            }
            towns.extend(engine.pending_due(now));
            match step(engine, &ledger, &activations, &settings, &towns, now) {
                Ok(enqueued) => {
                    // While notifications wait for the city's record, nothing before
                    // its end is due.
                    let held = engine.voices().held(now);
                    let next = engine
                        .next_wake(now)
                        .map(|at| held.map_or(at, |h| at.max(h)));
                    // A step falls overdue at its due time, not at the next tick.
                    let due = read_activations(&activations).next_due(now);
                    let next = match (next, due) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    Ok((enqueued, next))
                }
                Err(error) => {
                    if let Err(error) = engine.reload(now) {
                        tracing::error!(message = "Reloading alert state failed.", %error);
                    }
                    Err(error)
                }
            }
        })
        .await
    }

    /// Wakes the channels that got notifications and says when to wake next; after a
    /// failure, every town is evaluated again once the store answers.
    fn settle(&mut self, outcome: StepOutcome, now: DateTime<Utc>) -> DateTime<Utc> {
        match outcome {
            Ok((enqueued, next)) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!(message = "Alert evaluation works again.");
                }
                for channel in enqueued {
                    self.wakers.wake(channel);
                }
                next.map_or(self.next_tick, |at| at.min(self.next_tick))
            }
            Err(error) => {
                // Once per streak: a store locked for minutes would otherwise log
                // every second.
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::error!(
                        message = "Alert evaluation failed; alert state reloaded, retrying every second until the store answers.",
                        %error
                    );
                }
                self.next_tick = now + chrono_duration(STORE_RETRY);
                self.next_tick
            }
        }
    }

    /// Waits for shutdown, a command, a change or `wake_at`, in that order of priority.
    async fn wait(&mut self, wake_at: DateTime<Utc>) -> Wake {
        let sleep = (wake_at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => Wake::Stop,
            // Once every handle is dropped this branch is disabled (`None`).
            Some(command) = self.commands.recv() => Wake::Command(command),
            changed = self.changes.changed() => Wake::Changed(changed),
            _ = tokio::time::sleep(sleep) => Wake::Timer,
        }
    }
}

/// Runs `f` on the engine on the blocking pool and hands the engine back.
async fn on_engine<T, F>(engine: Engine, f: F) -> Result<(Engine, T), AlertsError>
where
    T: Send + 'static,
    F: FnOnce(&mut Engine) -> T + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let mut engine = engine;
        let out = f(&mut engine);
        (engine, out)
    })
    .await
    .map_err(|e| AlertsError::Engine(format!("evaluation step failed: {e}")))
}

/// Evaluates `towns`, then runs due timers and flushes due groups. Returns the
/// channels that got notifications.
/// The open activations, read (microseconds: a clone-free borrow for one chunk).
fn read_activations(
    activations: &activation::SharedActivations,
) -> std::sync::RwLockReadGuard<'_, activation::OpenActivations> {
    activations.read().unwrap_or_else(|p| p.into_inner())
}

fn step(
    engine: &mut Engine,
    ledger: &SharedLedger,
    activations: &activation::SharedActivations,
    settings: &rules::RuleSettings,
    towns: &BTreeSet<TownIdx>,
    now: DateTime<Utc>,
) -> Result<engine::Enqueued, StoreError> {
    let towns = towns_on_ledger_registry(engine, ledger, towns, now)?;
    let taken_over = engine.voices().update_takeovers(now);
    let mut cluster_silent = engine.cluster_silent_conditions(&taken_over, now);
    for chunk in towns.chunks(EVALUATE_CHUNK) {
        let (evaluations, vulnerable): (Vec<_>, Vec<_>) = {
            let ledger = ledger.read().unwrap_or_else(|p| p.into_inner());
            let activations = read_activations(activations);
            // Reloaded again since: the next step adopts that one, every town with it.
            if !Arc::ptr_eq(ledger.registry(), engine.registry()) {
                break;
            }
            chunk
                .iter()
                .map(|&t| {
                    let mut evaluation =
                        rules::evaluate_with_activations(&ledger, &activations, t, settings, now);
                    // A cluster's own instance is silent: raised on its first town.
                    evaluation.conditions.extend(cluster_silent.remove(&t));
                    let people = render::AffectedPeople::of(&ledger, t);
                    let newest = engine::newest_reading(&ledger, t);
                    ((t, evaluation), (t, people, newest))
                })
                .unzip()
        };
        for (t, people, newest) in vulnerable {
            engine.note_vulnerable(t, people);
            engine.note_newest_reading(t, newest);
        }
        engine.note_warnings(&ledger.read().unwrap_or_else(|p| p.into_inner()), chunk);
        engine.observe(&evaluations, now)?;
    }
    engine.follow_cluster_acks()?;
    engine.run_timers(now)?;
    engine.refresh_series(now)?;
    if engine.voices().held(now).is_some() {
        return Ok(engine::Enqueued::new());
    }
    engine.flush_due(now)
}

/// The towns to evaluate, by the registry the ledger is on now: after a reload
/// (docs/design.md#registry-reload) the engine adopts it and every town is evaluated,
/// since indices, populations and targets may all have moved.
fn towns_on_ledger_registry(
    engine: &mut Engine,
    ledger: &SharedLedger,
    towns: &BTreeSet<TownIdx>,
    now: DateTime<Utc>,
) -> Result<Vec<TownIdx>, StoreError> {
    let current = Arc::clone(ledger.read().unwrap_or_else(|p| p.into_inner()).registry());
    if Arc::ptr_eq(&current, engine.registry()) {
        // A change published just before a reload names a town by its old index: one
        // past the new end is dropped (every town was announced after the swap).
        let count = current.towns.len();
        return Ok(towns
            .iter()
            .copied()
            .filter(|t| t.index() < count)
            .collect());
    }
    engine.adopt_registry(current, now)?;
    Ok(engine.registry().town_indices().collect())
}

/// Carries out an API command. Returns true when every town should be evaluated again
/// (a silence was lifted).
fn carry_out(engine: &mut Engine, command: Command) -> bool {
    let now = Utc::now();
    match command {
        Command::Ack {
            id,
            by,
            note,
            reply,
        } => {
            let result = engine.ack(id, &by, &note, now).map_err(AlertsError::from);
            if let Ok(Some(alert)) = &result {
                tracing::info!(message = "Alert acknowledged.", alert = alert.id, by = %by);
            }
            let _ = reply.send(result);
            false
        }
        Command::AddSilence { silence, reply } => {
            let result = engine.add_silence(silence).map_err(AlertsError::from);
            if let Ok(s) = &result {
                tracing::info!(
                    message = "Silence added.",
                    silence = s.id,
                    by = %s.created_by,
                    until = %s.until
                );
            }
            let _ = reply.send(result);
            false
        }
        Command::DeleteSilence { id, reply } => {
            let result = engine.delete_silence(id).map_err(AlertsError::from);
            let lifted = matches!(result, Ok(true));
            if lifted {
                tracing::info!(message = "Silence deleted.", silence = id);
            }
            let _ = reply.send(result);
            lifted
        }
        command @ (Command::StartDrill { .. } | Command::EndDrill { .. }) => {
            drill::carry_out(engine, command, now)
        }
    }
}
