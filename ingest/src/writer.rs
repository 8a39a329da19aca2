//! The writer thread: turns batches of deliveries into one SQLite transaction and a
//! ledger update, then hands the deliveries to the acker.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use reserve::ledger::{Applied, Link};
use reserve::registry::{FacilityIdx, TownIdx};
use reserve::wire::{self, Connectivity, DecodeContext, Rejected, TopicKind};
use store::{RejectRecord, Store, StoreError};
use tokio::sync::mpsc;

use crate::{Delivery, IngestConfig, IngestError, IngestMetrics, SharedLedger, TownChanges};

/// A gateway that keeps sending garbage is logged once a minute, not once a message.
const REJECT_LOG_EVERY: Duration = Duration::from_secs(60);
/// How long a batch of QoS 0 readings waits for more before it is committed. Nothing
/// waits for their acks, and a transaction's fixed cost (locks, WAL frames) shared by a
/// few dozen readings was a large part of the writer's time at high QoS 0 rates. A
/// batch holding a QoS 1 delivery never waits: the broker's window of unacknowledged
/// messages moves only as fast as we commit.
const QOS0_LINGER: Duration = Duration::from_millis(2);
/// Bound on the per-gateway log throttle table (a flood of random topics must not
/// grow it without limit).
const REJECT_LOG_KEYS: usize = 10_000;

pub(crate) struct Writer {
    config: IngestConfig,
    ledger: SharedLedger,
    store: Store,
    metrics: Arc<IngestMetrics>,
    changes: Arc<TownChanges>,
    last_reject_log: HashMap<String, Instant>,
    /// Facilities the ledger changed since their snapshots were last saved.
    unsaved: BTreeSet<FacilityIdx>,
    last_snapshot_save: Instant,
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
    ) -> Writer {
        Writer {
            config,
            ledger,
            store,
            metrics,
            changes,
            last_reject_log: HashMap::new(),
            unsaved: BTreeSet::new(),
            last_snapshot_save: Instant::now(),
        }
    }

    /// Runs until the delivery channel closes (shutdown) or the store fails.
    pub(crate) fn run(
        mut self,
        runtime: tokio::runtime::Handle,
        mut deliveries: mpsc::Receiver<Delivery>,
        acks: mpsc::UnboundedSender<Delivery>,
    ) -> Result<(), IngestError> {
        let mut batch = Vec::with_capacity(self.config.batch_max);
        let mut last_prune = Instant::now();
        while let Some(first) = runtime.block_on(deliveries.recv()) {
            let linger_until = Instant::now() + QOS0_LINGER;
            let mut awaits_ack = first.publish.qos != rumqttc::QoS::AtMostOnce;
            batch.push(first);
            loop {
                while batch.len() < self.config.batch_max {
                    match deliveries.try_recv() {
                        Ok(d) => {
                            awaits_ack |= d.publish.qos != rumqttc::QoS::AtMostOnce;
                            batch.push(d);
                        }
                        Err(_) => break,
                    }
                }
                let left = linger_until.saturating_duration_since(Instant::now());
                if batch.len() >= self.config.batch_max || awaits_ack || left.is_zero() {
                    break;
                }
                // The timeout is made inside the runtime: its timer needs the context.
                let next =
                    runtime.block_on(async { tokio::time::timeout(left, deliveries.recv()).await });
                match next {
                    Ok(Some(d)) => {
                        awaits_ack |= d.publish.qos != rumqttc::QoS::AtMostOnce;
                        batch.push(d);
                    }
                    // Closed (shutdown: commit what we hold) or the linger is over.
                    Ok(None) | Err(_) => break,
                }
            }
            if let Err(error) = self.commit_batch(&batch) {
                // Nothing of this batch is acknowledged: the broker redelivers it to
                // the next run. Stop loudly rather than drop readings quietly.
                tracing::error!(message = "Store commit failed; ingest stops.", %error);
                return Err(error.into());
            }
            self.metrics.batch();
            for d in batch.drain(..) {
                if d.publish.qos != rumqttc::QoS::AtMostOnce {
                    let _ = acks.send(d);
                }
            }
            if last_prune.elapsed() > Duration::from_secs(3600) {
                last_prune = Instant::now();
                match self.store.prune(Utc::now()) {
                    Ok(outcome) => tracing::info!(message = "Pruned history.", ?outcome),
                    Err(error) => tracing::warn!(message = "Pruning history failed.", %error),
                }
            }
        }
        // A clean stop leaves nothing to replay.
        if !self.unsaved.is_empty() {
            let ledger = self.ledger.read().unwrap_or_else(|p| p.into_inner());
            let mut tx = self.store.batch()?;
            for &f in &self.unsaved {
                tx.save_snapshot(&ledger.snapshot(f))?;
            }
            tx.mark_snapshots_saved()?;
            tx.commit()?;
        }
        Ok(())
    }

    fn commit_batch(&mut self, batch: &[Delivery]) -> Result<(), StoreError> {
        let now = Utc::now();
        let mut tally = BatchTally::default();
        // Status changes (online/offline) are not in `readings`, so a replay cannot
        // restore them: their snapshots are saved with the batch.
        let mut linked_facilities = BTreeSet::<FacilityIdx>::new();
        // The earliest `ts` this batch applied to the ledger.
        let mut earliest_applied = None;
        let mut changed_towns = BTreeSet::<TownIdx>::new();
        let mut rejects: Vec<(RejectRecord, &'static str, Option<String>)> = Vec::new();

        // The write lock is held for the batch: readers see a batch whole or not at all.
        let mut ledger = self.ledger.write().unwrap_or_else(|p| p.into_inner());
        let registry = Arc::clone(ledger.registry());
        let context = DecodeContext {
            registry: &registry,
            now,
            max_payload_bytes: self.config.max_payload_bytes,
            max_future: wire::MAX_FUTURE,
            retention: self.config.retention,
        };
        let mut tx = self.store.batch()?;
        for d in batch {
            let topic_name = d.publish.topic.as_str();
            let payload = &d.publish.payload[..];
            let mut reject = |rejected: Rejected, gateway: Option<String>| {
                let reason = rejected.reason.as_str();
                rejects.push((
                    RejectRecord::new(now, topic_name, reason, &rejected.detail, payload),
                    reason,
                    gateway,
                ));
            };
            let topic = match wire::parse_topic(topic_name) {
                Ok(topic) => topic,
                Err(rejected) => {
                    reject(rejected, None);
                    continue;
                }
            };
            let gateway = Some(format!("{}/{}", topic.town, topic.facility));
            match topic.kind {
                TopicKind::Status => match wire::resolve_topic(&topic, &registry)
                    .and_then(|f| Ok((f, wire::decode_status(payload)?)))
                {
                    Ok((facility, connectivity)) => {
                        let link = match connectivity {
                            Connectivity::Online => Link::Online,
                            Connectivity::Offline => Link::Offline,
                        };
                        ledger.set_link(facility, link, now);
                        linked_facilities.insert(facility);
                        changed_towns.insert(registry.facility(facility).town);
                    }
                    Err(rejected) => reject(rejected, gateway),
                },
                TopicKind::Reading => match wire::decode_readings(&topic, payload, &context) {
                    Err(rejected) => reject(rejected, gateway),
                    Ok(decoded) => {
                        for rejected in decoded.rejected {
                            reject(rejected, gateway.clone());
                        }
                        for reading in decoded.readings {
                            if !tx.insert_reading(&registry, &reading, now)? {
                                tally.duplicates += 1;
                                continue;
                            }
                            tally.accepted += 1;
                            match ledger.apply(&reading, now) {
                                Applied::Updated => {
                                    self.unsaved.insert(reading.facility);
                                    earliest_applied = Some(
                                        earliest_applied.map_or(reading.ts, |t| reading.ts.min(t)),
                                    );
                                    changed_towns.insert(registry.facility(reading.facility).town);
                                }
                                Applied::Older => tally.older += 1,
                                // Stored now but the ledger already had this instant:
                                // a redelivery after a crash between apply and commit.
                                Applied::Duplicate => {}
                            }
                        }
                    }
                },
            }
        }
        for &f in &linked_facilities {
            tx.save_snapshot(&ledger.snapshot(f))?;
        }
        let saving = !self.unsaved.is_empty()
            && self.last_snapshot_save.elapsed() >= self.config.snapshot_every;
        if saving {
            for &f in &self.unsaved {
                tx.save_snapshot(&ledger.snapshot(f))?;
            }
            tx.mark_snapshots_saved()?;
        } else if let Some(ts) = earliest_applied {
            tx.mark_unsaved_since(ts)?;
        }
        for (record, _, _) in &rejects {
            tx.insert_reject(record)?;
        }
        tx.commit()?;
        if saving {
            self.unsaved.clear();
            self.last_snapshot_save = Instant::now();
        }
        for &t in &changed_towns {
            ledger.refresh(t, now);
        }
        drop(ledger);
        if !changed_towns.is_empty() {
            self.changes.publish(changed_towns.iter().copied());
        }

        self.metrics.accepted(tally.accepted);
        self.metrics.duplicates(tally.duplicates);
        self.metrics.older(tally.older);
        for (record, reason, gateway) in rejects {
            self.metrics.rejected(reason);
            self.log_reject(&record, gateway);
        }
        Ok(())
    }

    fn log_reject(&mut self, record: &RejectRecord, gateway: Option<String>) {
        let key = gateway.unwrap_or_else(|| record.topic.clone());
        let due = self
            .last_reject_log
            .get(&key)
            .is_none_or(|t| t.elapsed() >= REJECT_LOG_EVERY);
        if due {
            if self.last_reject_log.len() >= REJECT_LOG_KEYS {
                self.last_reject_log
                    .retain(|_, t| t.elapsed() < REJECT_LOG_EVERY);
            }
            tracing::warn!(
                message = "Reading rejected.",
                reason = %record.reason,
                detail = %record.detail,
                topic = %record.topic,
                gateway = %key,
                note = "further rejects from this gateway are counted, logged once a minute"
            );
            self.last_reject_log.insert(key, Instant::now());
        }
    }
}
