//! The writer thread: turns each batch of deliveries into one SQLite transaction, then a
//! ledger update, then acks. Counts entered by hand (`live::ManualReadings`) join the
//! same batches and are answered where deliveries are acknowledged, after the commit.
//! One call per layer:
//!
//! ```text
//!  gather ─► decode ─► persist ─────────► apply ─────────► publish
//!  (batch)   (no lock) (SQLite, no lock;   (ledger write    (town changes, counters,
//!                       retried while the   lock, µs)        acks, reject log lines)
//!                       store is down)
//! ```
//!
//! The ledger's write lock is never held across SQLite I/O: a slow or locked store
//! delays ingest, never the API, the board or the alert engine, which read the ledger.
//! Readings are committed before they are applied, so the ledger never shows a reading
//! that a crash could lose.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use live::{
    IngestMetrics, ManualOutcome, ManualQueue, ManualSubmission, SharedLedger, Submission,
    TownChanges, TransferSubmission,
};
use reserve::Reading;
use reserve::ledger::{Applied, FacilitySnapshot, Link};
use reserve::registry::{FacilityIdx, Registry, TownIdx};
use reserve::wire::{self, Connectivity, DecodeContext, RejectReason, Rejected, TopicKind};
use store::{ReadingSource, RejectRecord, Store, StoreError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{Delivery, IngestConfig, IngestError, RegistrySwap};

mod transfer;
use transfer::PlannedTransfer;

/// A gateway that keeps sending garbage is logged once a minute, not once a message.
const REJECT_LOG_EVERY: Duration = Duration::from_secs(60);
/// How long a batch of QoS 0 readings waits for more before it is committed. Nothing
/// waits for their acks, and a transaction's fixed cost (locks, WAL frames) shared by a
/// few dozen readings was a large part of the writer's time at high QoS 0 rates. A
/// batch holding a QoS 1 delivery never waits: the broker's window of unacknowledged
/// messages moves only as fast as we commit.
const QOS0_LINGER: Duration = Duration::from_millis(2);
/// How many rejected elements of one array are spelled out in its reject record; the
/// rest are counted.
const REJECTS_SPELLED_OUT: usize = 3;
/// Backoff between attempts to commit a batch while the store fails (locked by another
/// process, disk full, I/O errors). Short at first, since most locks are brief; capped
/// so ingest resumes within a couple of seconds of the cause going away.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

pub(crate) struct Writer {
    config: IngestConfig,
    ledger: SharedLedger,
    store: Store,
    metrics: Arc<IngestMetrics>,
    changes: Arc<TownChanges>,
    shutdown: CancellationToken,
    /// The ledger's registry, fixed for its life: taken once, not from the lock at
    /// every batch.
    registry: Arc<Registry>,
    /// When each gateway's rejects were last logged. Keyed by registry facility, with
    /// one shared key (`None`) for topics that name no facility of ours, so its size is
    /// bounded by the registry whatever ids a sender invents, and each message costs
    /// one hash lookup.
    last_reject_log: HashMap<Option<FacilityIdx>, Instant>,
    /// Facilities the ledger changed since their snapshots were last saved.
    unsaved: BTreeSet<FacilityIdx>,
    last_snapshot_save: Instant,
    /// A shard's subscriber, told the towns of each new registry (it subscribes to
    /// the ones it lacks); `None` when ingest subscribes to every town's topics.
    shard_towns: Option<mpsc::Sender<Vec<String>>>,
}

/// What the writer takes in: the broker's deliveries and the counts entered by hand.
struct Inputs {
    deliveries: mpsc::Receiver<Delivery>,
    manual: ManualQueue,
    /// False once the API is gone (or was never there): the writer stops polling it.
    manual_open: bool,
    /// New registries to adopt between two batches (docs/design.md#registry-reload).
    swaps: mpsc::Receiver<RegistrySwap>,
    swaps_open: bool,
    /// A transfer that came while a batch was filling: it starts the next one.
    held: Option<Input>,
}

enum Input {
    Delivery(Delivery),
    Manual(ManualSubmission),
    Registry(RegistrySwap),
    Transfer(TransferSubmission),
}

impl Input {
    fn from_manual(submission: Submission) -> Input {
        match submission {
            Submission::Count(m) => Input::Manual(m),
            Submission::Transfer(t) => Input::Transfer(t),
        }
    }
}

impl Inputs {
    /// The next input, waiting for one; `None` once the deliveries closed (shutdown).
    async fn recv(&mut self) -> Option<Input> {
        if let Some(input) = self.held.take() {
            return Some(input);
        }
        loop {
            tokio::select! {
                // Counts by hand first: they are few, and a person waits on each.
                biased;
                s = self.swaps.recv(), if self.swaps_open => match s {
                    Some(s) => return Some(Input::Registry(s)),
                    None => self.swaps_open = false,
                },
                m = self.manual.recv(), if self.manual_open => match m {
                    Some(m) => return Some(Input::from_manual(m)),
                    None => self.manual_open = false,
                },
                d = self.deliveries.recv() => return d.map(Input::Delivery),
            }
        }
    }

    /// The next input already queued.
    fn try_recv(&mut self) -> Option<Input> {
        if let Some(input) = self.held.take() {
            return Some(input);
        }
        if self.swaps_open
            && let Ok(s) = self.swaps.try_recv()
        {
            return Some(Input::Registry(s));
        }
        if self.manual_open
            && let Ok(m) = self.manual.try_recv()
        {
            return Some(Input::from_manual(m));
        }
        self.deliveries.try_recv().ok().map(Input::Delivery)
    }
}

/// One transaction's worth of inputs: deliveries are acknowledged after its commit,
/// manual submissions answered.
#[derive(Default)]
struct Batch {
    deliveries: Vec<Delivery>,
    manual: Vec<ManualSubmission>,
    /// A registry adopted once this batch is applied: the batch is the last one on
    /// the old registry, so none is half on each.
    swap: Option<RegistrySwap>,
    /// A transfer, only ever the batch's first input ([`Batch::takes`]).
    transfer: Option<TransferSubmission>,
}

impl Batch {
    fn len(&self) -> usize {
        self.deliveries.len() + self.manual.len() + usize::from(self.transfer.is_some())
    }

    /// Whether `input` may join: a transfer only starts a batch, so the figures it is
    /// planned from (the ledger's) hold every commit before it.
    fn takes(&self, input: &Input) -> bool {
        !matches!(input, Input::Transfer(_)) || self.len() == 0
    }

    /// Adds `input`; true when someone waits on its commit (a QoS 1 delivery's ack, a
    /// person's answer), so the batch should not linger for more.
    fn push(&mut self, input: Input) -> bool {
        match input {
            Input::Delivery(d) => {
                let awaits_ack = d.publish.qos != rumqttc::QoS::AtMostOnce;
                self.deliveries.push(d);
                awaits_ack
            }
            Input::Manual(m) => {
                self.manual.push(m);
                true
            }
            // Ends the batch: what comes after is decoded against the new registry.
            Input::Registry(s) => {
                self.swap = Some(s);
                true
            }
            Input::Transfer(t) => {
                self.transfer = Some(t);
                true
            }
        }
    }
}

/// One MQTT message or one manual submission, decoded and validated against the
/// registry: what persisting and applying need, nothing borrowed from the delivery.
#[derive(Debug, Default)]
struct Message {
    /// Who produced the readings: the gateway, or the officer who entered them.
    source: ReadingSource,
    readings: Vec<Reading>,
    /// A gateway's `online`/`offline` status.
    link: Option<(FacilityIdx, Link)>,
    /// The message's rejects as one record, however many elements failed.
    rejects: Option<MessageRejects>,
    /// A transfer's row, stored in the same commit as its readings.
    transfer: Option<PlannedTransfer>,
}

/// What a message's rejections amount to: one record for the reject log, and a count
/// per reason for the counters (an array may fail for several reasons).
#[derive(Debug)]
struct MessageRejects {
    record: RejectRecord,
    /// The facility the topic names, when it is one of ours (the log throttle's key).
    gateway: Option<FacilityIdx>,
    counts: Vec<(RejectReason, u64)>,
}

/// The facility snapshots one batch saves.
#[derive(Debug, Default)]
struct SnapshotSave {
    /// Every facility changed since the last save is among `snapshots`: the commit
    /// clears the replay mark.
    all_unsaved: bool,
    snapshots: Vec<FacilitySnapshot>,
}

/// What persisting a batch found, reading by reading, for the apply step.
struct Persisted {
    /// Per message, per reading: stored now (false: already stored, a duplicate).
    inserted: Vec<Vec<bool>>,
    /// Whether this commit saved the snapshots of every facility in `unsaved`.
    saved_snapshots: bool,
    /// The id the batch's transfer was stored under.
    transfer_id: Option<i64>,
    /// The batch's transfer was left out: its requester had stopped waiting. The
    /// caller drops its message, so messages and `inserted` match again.
    transfer_dropped: bool,
}

/// What one batch did, for the counters.
#[derive(Default)]
struct BatchTally {
    accepted: u64,
    duplicates: u64,
    older: u64,
}

impl Writer {
    pub(crate) fn new(
        config: IngestConfig,
        ledger: SharedLedger,
        store: Store,
        metrics: Arc<IngestMetrics>,
        changes: Arc<TownChanges>,
        shutdown: CancellationToken,
    ) -> Writer {
        let registry = Arc::clone(ledger.read().unwrap_or_else(|p| p.into_inner()).registry());
        Writer {
            registry,
            config,
            ledger,
            store,
            metrics,
            changes,
            shutdown,
            last_reject_log: HashMap::new(),
            unsaved: BTreeSet::new(),
            last_snapshot_save: Instant::now(),
            shard_towns: None,
        }
    }

    /// Tells `subscriber` the towns of every registry adopted from now on.
    pub(crate) fn with_shard_towns(self, subscriber: mpsc::Sender<Vec<String>>) -> Writer {
        Writer {
            shard_towns: Some(subscriber),
            ..self
        }
    }

    /// Runs until the delivery channel closes (shutdown) or the store fails for good.
    pub(crate) fn run(
        mut self,
        runtime: tokio::runtime::Handle,
        deliveries: mpsc::Receiver<Delivery>,
        manual: ManualQueue,
        swaps: mpsc::Receiver<RegistrySwap>,
        acks: mpsc::UnboundedSender<Delivery>,
    ) -> Result<(), IngestError> {
        let mut inputs = Inputs {
            deliveries,
            manual,
            manual_open: true,
            swaps,
            swaps_open: true,
            held: None,
        };
        let mut batch = Batch::default();
        while self.gather(&runtime, &mut inputs, &mut batch) {
            if batch.len() == 0 {
                // A reload alone: no transaction to make first.
                if let Some(swap) = batch.swap.take() {
                    self.adopt(swap);
                }
                continue;
            }
            let now = Utc::now();
            let mut messages: Vec<Message> = batch
                .deliveries
                .iter()
                .map(|d| decode(d, &self.registry, &self.config, now))
                .collect();
            messages.extend(batch.manual.iter_mut().map(Message::manual));
            let manual_end = messages.len();
            if let Some(message) = self.plan_transfer(&mut batch) {
                messages.push(message);
            }
            let committing =
                self.persist_until_committed(&runtime, &mut messages, &mut batch.transfer, now)?;
            let Some(persisted) = committing else {
                // Shutting down while the store is unavailable: nothing of this batch
                // was committed or acknowledged, so the broker redelivers it; the
                // manual submissions are dropped unanswered, and their requests say so.
                return Ok(());
            };
            let changed = self.apply(&messages, &persisted, now);
            let transfer_answer = messages.get(manual_end).and_then(|m| {
                let planned = m.transfer.as_ref()?;
                Some(planned.outcome(persisted.transfer_id?))
            });
            let from = batch.deliveries.len();
            let outcomes: Vec<ManualOutcome> = messages[from..manual_end]
                .iter()
                .zip(&persisted.inserted[from..])
                .map(|(message, inserted)| manual_outcome(message, inserted))
                .collect();
            self.publish(messages, &changed);
            for d in batch.deliveries.drain(..) {
                if d.publish.qos != rumqttc::QoS::AtMostOnce {
                    let _ = acks.send(d);
                }
            }
            // After the ledger update: a read after the answer shows the new figure. A
            // requester that gave up meanwhile is told nothing; its count is stored.
            for (submission, outcome) in batch.manual.drain(..).zip(outcomes) {
                self.metrics.manual_readings(outcome.stored as u64);
                let _ = submission.reply.send(outcome);
            }
            if let (Some(submission), Some(answer)) = (batch.transfer.take(), transfer_answer) {
                self.metrics.transfer(true);
                if submission.reply.send(Ok(answer)).is_err() {
                    // Its request gave up in the milliseconds between the check under
                    // the write lock and the commit: it was told 503, yet is stored.
                    tracing::warn!(
                        message = "Transfer stored after its request was answered 503; it is listed in GET /api/v1/transfers.",
                        id = answer.id
                    );
                }
            }
            if let Some(swap) = batch.swap.take() {
                self.adopt(swap);
            }
        }
        self.save_all_snapshots()
    }

    /// Waits for the next batch: whatever is queued, up to `batch_max`, lingering a
    /// little for more only when nothing in it awaits an ack or an answer. False when
    /// the deliveries closed and nothing is left (shutdown).
    fn gather(
        &self,
        runtime: &tokio::runtime::Handle,
        inputs: &mut Inputs,
        batch: &mut Batch,
    ) -> bool {
        let Some(first) = runtime.block_on(inputs.recv()) else {
            return false;
        };
        let linger_until = Instant::now() + QOS0_LINGER;
        let mut awaited = batch.push(first);
        loop {
            while batch.len() < self.config.batch_max && batch.swap.is_none() {
                match inputs.try_recv() {
                    Some(input) if !batch.takes(&input) => {
                        inputs.held = Some(input);
                        return true;
                    }
                    Some(input) => awaited |= batch.push(input),
                    None => break,
                }
            }
            let left = linger_until.saturating_duration_since(Instant::now());
            if batch.len() >= self.config.batch_max || awaited || left.is_zero() {
                return true;
            }
            // The timeout is made inside the runtime: its timer needs the context.
            let next = runtime.block_on(async { tokio::time::timeout(left, inputs.recv()).await });
            match next {
                Ok(Some(input)) if !batch.takes(&input) => {
                    inputs.held = Some(input);
                    return true;
                }
                Ok(Some(input)) => awaited |= batch.push(input),
                // Closed (shutdown: commit what we hold) or the linger is over.
                Ok(None) | Err(_) => return true,
            }
        }
    }

    /// Commits the batch, waiting out store faults: a locked file, a full disk, an I/O
    /// error pause ingest (nothing is acknowledged, the queue fills, the broker holds
    /// the rest) and the same batch is tried again with backoff until it commits.
    /// `Ok(None)` when shutdown came first; `Err` only for a store that cannot recover
    /// by waiting (a corrupt file, a schema from a newer version).
    ///
    /// The batch's transfer is left out of the commit if its requester stopped waiting
    /// meanwhile (answered 503: [`Writer::persist`]).
    fn persist_until_committed(
        &mut self,
        runtime: &tokio::runtime::Handle,
        messages: &mut Vec<Message>,
        transfer: &mut Option<TransferSubmission>,
        now: DateTime<Utc>,
    ) -> Result<Option<Persisted>, IngestError> {
        let save = self.snapshots_to_save(messages, now);
        let mut backoff = RETRY_MIN;
        let mut paused_since: Option<Instant> = None;
        let mut attempts = 0u64;
        loop {
            match self.persist(messages, &save, now, transfer.as_ref()) {
                Ok(persisted) => {
                    if persisted.transfer_dropped {
                        self.drop_abandoned_transfer(messages, transfer);
                    }
                    if let Some(since) = paused_since {
                        self.metrics.store_recovered();
                        tracing::info!(
                            message = "Store available again; ingest resumed.",
                            paused_s = since.elapsed().as_secs_f64(),
                            attempts
                        );
                    }
                    return Ok(Some(persisted));
                }
                Err(error) if !error.is_recoverable() => {
                    tracing::error!(
                        message = "Store unusable; ingest stops. Restore the file from a backup or run the stockpile version that wrote it.",
                        %error
                    );
                    return Err(error.into());
                }
                Err(error) => {
                    attempts += 1;
                    self.metrics.store_failed(&error);
                    // On a full disk the WAL can only be reused, not grown: a checkpoint
                    // that copies it into the database lets the next write start it
                    // over. PASSIVE never waits, so on a lock it costs nothing.
                    if let Err(checkpoint) = self.store.checkpoint(store::CheckpointMode::Passive) {
                        tracing::debug!(message = "Checkpoint during a store fault failed.", error = %checkpoint);
                    }
                    if paused_since.is_none() {
                        paused_since = Some(Instant::now());
                        // Once per pause, not per retry.
                        tracing::error!(
                            message = "Store unavailable; ingest paused, nothing acknowledged until it commits. Retrying.",
                            %error
                        );
                    }
                }
            }
            let cancelled = runtime.block_on(async {
                tokio::select! {
                    _ = self.shutdown.cancelled() => true,
                    _ = tokio::time::sleep(backoff) => false,
                }
            });
            if cancelled {
                return Ok(None);
            }
            backoff = (backoff * 2).min(RETRY_MAX);
        }
    }

    /// The snapshots this batch's transaction saves: every facility changed since the
    /// last save when one is due, and those whose link this batch changes (status is
    /// not in `readings`, so a replay could not restore it). Copied under a brief read
    /// lock, before any I/O; decided once, so every retry of the batch saves the same.
    fn snapshots_to_save(&self, messages: &[Message], now: DateTime<Utc>) -> SnapshotSave {
        let all_unsaved = !self.unsaved.is_empty()
            && self.last_snapshot_save.elapsed() >= self.config.snapshot_every;
        let links: Vec<(FacilityIdx, Link)> = messages.iter().filter_map(|m| m.link).collect();
        if !all_unsaved && links.is_empty() {
            return SnapshotSave::default();
        }
        let ledger = self.read_ledger();
        let mut snapshots: HashMap<FacilityIdx, FacilitySnapshot> = HashMap::new();
        if all_unsaved {
            for &f in &self.unsaved {
                snapshots.insert(f, ledger.snapshot(f));
            }
        }
        for (f, link) in links {
            snapshots
                .entry(f)
                .or_insert_with(|| ledger.snapshot(f))
                .link = Some((link, now));
        }
        SnapshotSave {
            all_unsaved,
            snapshots: snapshots.into_values().collect(),
        }
    }

    /// One attempt at the batch's transaction: readings, rejects, snapshots, and where a
    /// start-up must replay from. Rolled back on any error.
    ///
    /// A transfer (the last message) whose requester stopped waiting is left out,
    /// checked once the write lock is held: from there to the commit is milliseconds,
    /// while waiting for the lock can outlast the request ([`Persisted::transfer_dropped`]).
    fn persist(
        &mut self,
        messages: &[Message],
        save: &SnapshotSave,
        now: DateTime<Utc>,
        transfer: Option<&TransferSubmission>,
    ) -> Result<Persisted, StoreError> {
        let mut tx = self.store.batch()?;
        let transfer_dropped = transfer.is_some_and(|t| t.reply.is_closed())
            && messages.last().is_some_and(|m| m.transfer.is_some());
        let messages = if transfer_dropped {
            &messages[..messages.len() - 1]
        } else {
            messages
        };
        let mut inserted = Vec::with_capacity(messages.len());
        let mut earliest_inserted: Option<DateTime<Utc>> = None;
        let mut transfer_id = None;
        for message in messages {
            let mut flags = Vec::with_capacity(message.readings.len());
            for reading in &message.readings {
                let new = tx.insert_reading_from(&self.registry, reading, now, &message.source)?;
                if new {
                    earliest_inserted =
                        Some(earliest_inserted.map_or(reading.ts, |t| t.min(reading.ts)));
                }
                flags.push(new);
            }
            inserted.push(flags);
            if let Some(rejects) = &message.rejects {
                tx.insert_reject(&rejects.record)?;
            }
            if let Some(planned) = &message.transfer {
                transfer_id = Some(tx.record_transfer(&planned.row, &planned.remote)?);
            }
        }
        for snapshot in &save.snapshots {
            tx.save_snapshot(snapshot)?;
        }
        if save.all_unsaved {
            tx.mark_snapshots_saved()?;
        }
        // This batch's readings are applied only after the commit, so no snapshot holds
        // them yet: a start-up after a crash replays them.
        if let Some(ts) = earliest_inserted {
            tx.mark_unsaved_since(ts)?;
        }
        tx.commit()?;
        Ok(Persisted {
            inserted,
            saved_snapshots: save.all_unsaved,
            transfer_id,
            transfer_dropped,
        })
    }

    /// Applies what was committed to the ledger under its write lock (microseconds: no
    /// I/O), and returns the towns that changed.
    fn apply(
        &mut self,
        messages: &[Message],
        persisted: &Persisted,
        now: DateTime<Utc>,
    ) -> BTreeSet<TownIdx> {
        if persisted.saved_snapshots {
            self.unsaved.clear();
            self.last_snapshot_save = Instant::now();
        }
        let mut tally = BatchTally::default();
        let mut changed = BTreeSet::new();
        let mut ledger = self.ledger.write().unwrap_or_else(|p| p.into_inner());
        let registry = &self.registry;
        for (message, inserted) in messages.iter().zip(&persisted.inserted) {
            if let Some((facility, link)) = message.link {
                ledger.set_link(facility, link, now);
                changed.insert(registry.facility(facility).town);
            }
            for (reading, &new) in message.readings.iter().zip(inserted) {
                if !new {
                    tally.duplicates += 1;
                    continue;
                }
                tally.accepted += 1;
                match ledger.apply(reading, now) {
                    Applied::Updated => {
                        let by_hand = message.source != ReadingSource::Gateway;
                        ledger.set_counted_by_hand(reading.facility, reading.ts, by_hand);
                        self.unsaved.insert(reading.facility);
                        changed.insert(registry.facility(reading.facility).town);
                    }
                    Applied::Older => tally.older += 1,
                    // Stored now but the ledger already had this instant: a redelivery
                    // after a crash between commit and snapshot save.
                    Applied::Duplicate => {}
                }
            }
            if let (Some(planned), Some(id)) = (&message.transfer, persisted.transfer_id) {
                for &(f, sent) in &planned.expected {
                    if ledger.expect_transfer(f, planned.category, id, planned.at(), sent) {
                        self.unsaved.insert(f);
                        changed.insert(registry.facility(f).town);
                    }
                }
            }
        }
        for &t in &changed {
            ledger.refresh(t, now);
        }
        drop(ledger);
        self.metrics.accepted(tally.accepted);
        self.metrics.duplicates(tally.duplicates);
        self.metrics.older(tally.older);
        changed
    }

    /// Tells everyone downstream: changed towns, counters, the reject log lines.
    fn publish(&mut self, messages: Vec<Message>, changed: &BTreeSet<TownIdx>) {
        if !changed.is_empty() {
            self.changes.publish(changed.iter().copied());
        }
        self.metrics.batch();
        for rejects in messages.into_iter().filter_map(|m| m.rejects) {
            for &(reason, n) in &rejects.counts {
                self.metrics.rejected(reason.as_str(), n);
            }
            self.log_reject(&rejects);
        }
    }

    fn log_reject(&mut self, rejects: &MessageRejects) {
        let due = self
            .last_reject_log
            .get(&rejects.gateway)
            .is_none_or(|t| t.elapsed() >= REJECT_LOG_EVERY);
        if due {
            let record = &rejects.record;
            tracing::warn!(
                message = "Reading rejected.",
                reason = %record.reason,
                detail = %record.detail,
                topic = %record.topic,
                note = if rejects.gateway.is_some() {
                    "further rejects from this gateway are counted, logged once a minute"
                } else {
                    "further rejects for topics naming no known facility are counted, logged once a minute"
                }
            );
            self.last_reject_log.insert(rejects.gateway, Instant::now());
        }
    }

    /// Adopts a new registry between two batches (docs/design.md#registry-reload): the
    /// ledger is carried over to it by id and swapped in under one write lock, every
    /// town is announced changed (indices moved, figures too), and the caller is
    /// answered once readers see the new registry.
    fn adopt(&mut self, swap: RegistrySwap) {
        let now = Utc::now();
        // Built under a read lock: this thread is the only writer of facility state,
        // so nothing moves meanwhile but sheltered counts, taken again below.
        let mut next = self
            .read_ledger()
            .carried_over(Arc::clone(&swap.registry), now);
        {
            let mut ledger = self.ledger.write().unwrap_or_else(|p| p.into_inner());
            next.take_sheltered_from(&ledger, now);
            *ledger = next;
        }
        let old = std::mem::replace(&mut self.registry, swap.registry);
        let registry = Arc::clone(&self.registry);
        // Unsaved state moves with its facility; a removed one's is dropped with it.
        self.unsaved = std::mem::take(&mut self.unsaved)
            .into_iter()
            .filter_map(|f| registry.facility_idx(old.facility(f).id.as_str()))
            .collect();
        // Keyed by index: a key could now name another gateway.
        self.last_reject_log.clear();
        let towns: Vec<TownIdx> = registry.town_indices().collect();
        self.changes.publish(towns);
        if let Some(subscriber) = &self.shard_towns {
            let ids = registry.towns.iter().map(|t| t.id.to_string()).collect();
            if subscriber.try_send(ids).is_err() {
                tracing::warn!(
                    message = "The shard's subscriber did not take the new registry's towns; new towns are subscribed at the next restart."
                );
            }
        }
        tracing::info!(
            message = "Ingest adopted the new registry.",
            towns = registry.towns.len(),
            facilities = registry.facilities.len()
        );
        let _ = swap.adopted.send(());
    }

    fn read_ledger(&self) -> std::sync::RwLockReadGuard<'_, reserve::Ledger> {
        self.ledger.read().unwrap_or_else(|p| p.into_inner())
    }

    /// A clean stop leaves nothing to replay. Best effort when the store is down: a
    /// start-up replays the readings instead.
    fn save_all_snapshots(mut self) -> Result<(), IngestError> {
        if self.unsaved.is_empty() {
            return Ok(());
        }
        let snapshots: Vec<FacilitySnapshot> = {
            let ledger = self.read_ledger();
            self.unsaved.iter().map(|&f| ledger.snapshot(f)).collect()
        };
        let saved = (|| {
            let mut tx = self.store.batch()?;
            for snapshot in &snapshots {
                tx.save_snapshot(snapshot)?;
            }
            tx.mark_snapshots_saved()?;
            tx.commit()
        })();
        if let Err(error) = saved {
            tracing::warn!(
                message = "Could not save the ledger's state at shutdown; the next start replays stored readings instead.",
                %error
            );
        }
        Ok(())
    }
}

impl Message {
    /// A manual submission's readings, validated by the API already; taken, since the
    /// submission is kept only for its reply.
    fn manual(submission: &mut ManualSubmission) -> Message {
        Message {
            source: ReadingSource::Manual {
                entered_by: submission.entered_by.clone(),
            },
            readings: std::mem::take(&mut submission.readings),
            ..Message::default()
        }
    }
}

/// What a manual submission's requester is told: how many of its readings were stored
/// now and how many were there already.
fn manual_outcome(message: &Message, inserted: &[bool]) -> ManualOutcome {
    let stored = inserted.iter().filter(|&&new| new).count();
    ManualOutcome {
        stored,
        duplicates: inserted.len() - stored,
        latest_ts: message.readings.iter().map(|r| r.ts).max(),
    }
}

/// Decodes one delivery into a [`Message`]. Never fails: what does not decode becomes
/// the message's reject record.
fn decode(
    delivery: &Delivery,
    registry: &Registry,
    config: &IngestConfig,
    now: DateTime<Utc>,
) -> Message {
    let topic_name = delivery.publish.topic.as_str();
    let payload = &delivery.publish.payload[..];
    let reject = |gateway: Option<FacilityIdx>, rejected: Rejected| Message {
        rejects: Some(message_rejects(
            now,
            topic_name,
            payload,
            delivery.oversize,
            gateway,
            &[rejected],
            1,
        )),
        ..Message::default()
    };
    let (topic, facility) = match route(delivery, registry, config) {
        Ok(routed) => routed,
        Err((gateway, rejected)) => return reject(gateway, rejected),
    };
    match topic.kind {
        TopicKind::Status => match wire::decode_status(payload) {
            Ok(connectivity) => Message {
                link: Some((
                    facility,
                    match connectivity {
                        Connectivity::Online => Link::Online,
                        Connectivity::Offline => Link::Offline,
                    },
                )),
                ..Message::default()
            },
            Err(rejected) => reject(Some(facility), rejected),
        },
        TopicKind::Reading => {
            let context = DecodeContext {
                registry,
                now,
                max_payload_bytes: config.mqtt.max_payload_bytes,
                max_readings: config.mqtt.max_readings_per_message,
                max_future: wire::MAX_FUTURE,
                retention: config.retention,
            };
            match wire::decode_readings(&topic, payload, &context) {
                Err(rejected) => reject(Some(facility), rejected),
                Ok(decoded) => readings_message(decoded, topic_name, payload, now),
            }
        }
    }
}

/// A reading message that decoded: its accepted readings, and one reject record for
/// the elements of an array that did not.
fn readings_message(
    decoded: wire::DecodedReadings,
    topic: &str,
    payload: &[u8],
    now: DateTime<Utc>,
) -> Message {
    let total = decoded.rejected.len() + decoded.readings.len();
    let facility = decoded.facility;
    let rejects = (!decoded.rejected.is_empty()).then(|| {
        message_rejects(
            now,
            topic,
            payload,
            None,
            Some(facility),
            &decoded.rejected,
            total,
        )
    });
    Message {
        readings: decoded.readings,
        rejects,
        ..Message::default()
    }
}

/// The topic and the registry facility it names, or why the message goes no further
/// (with the facility, when the topic named one of ours). An oversize payload stops
/// here: it was cut to its head before it was queued.
fn route<'d>(
    delivery: &'d Delivery,
    registry: &Registry,
    config: &IngestConfig,
) -> Result<(wire::Topic<'d>, FacilityIdx), (Option<FacilityIdx>, Rejected)> {
    let topic = wire::parse_topic(delivery.publish.topic.as_str()).map_err(|r| (None, r))?;
    let facility = wire::resolve_topic(&topic, registry).map_err(|r| (None, r))?;
    if let Some(len) = delivery.oversize {
        let limit = match topic.kind {
            TopicKind::Reading => config.mqtt.max_payload_bytes,
            TopicKind::Status => wire::MAX_STATUS_BYTES,
        };
        let rejected = Rejected::new(
            RejectReason::TooLarge,
            format!(
                "payload is {len} bytes, the limit is {limit}; send a long backlog in several messages"
            ),
        );
        return Err((Some(facility), rejected));
    }
    Ok((topic, facility))
}

/// One reject record for a message, whatever number of its elements failed: the first
/// reason is the record's, the first few details are spelled out, the rest counted.
fn message_rejects(
    now: DateTime<Utc>,
    topic: &str,
    payload: &[u8],
    oversize: Option<usize>,
    gateway: Option<FacilityIdx>,
    rejected: &[Rejected],
    elements: usize,
) -> MessageRejects {
    let mut counts: Vec<(RejectReason, u64)> = Vec::new();
    for r in rejected {
        match counts.iter_mut().find(|(reason, _)| *reason == r.reason) {
            Some((_, n)) => *n += 1,
            None => counts.push((r.reason, 1)),
        }
    }
    let detail = match rejected {
        [one] if elements <= 1 => one.detail.clone(),
        many => {
            let mut detail = format!("{} of {elements} readings rejected", many.len());
            for r in many.iter().take(REJECTS_SPELLED_OUT) {
                detail.push_str(&format!("; {}: {}", r.reason, r.detail));
            }
            if many.len() > REJECTS_SPELLED_OUT {
                let by_reason: Vec<String> =
                    counts.iter().map(|(r, n)| format!("{r} ×{n}")).collect();
                detail.push_str(&format!("; in all: {}", by_reason.join(", ")));
            }
            detail
        }
    };
    let reason = rejected
        .first()
        .map_or(RejectReason::BadPayload, |r| r.reason);
    let mut record = RejectRecord::new(now, topic, reason.as_str(), &detail, payload);
    if let Some(len) = oversize {
        record.payload_len = len;
    }
    MessageRejects {
        record,
        gateway,
        counts,
    }
}
