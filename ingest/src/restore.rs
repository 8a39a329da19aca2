//! Rebuilding the ledger at start-up: facility snapshots, sheltered counts, then the
//! readings stored after the last snapshot save (the writer saves snapshots about once
//! a second; see [`crate::IngestConfig::snapshot_every`]), then the transfers whose
//! window is still open, for the forecast to tell them from use.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reserve::Ledger;
use reserve::ledger::{Applied, transfer_window_s};
use reserve::registry::{FacilityIdx, Report};
use reserve::wire::{self, DecodeContext, Topic, TopicKind};
use store::{Store, StoredReading};

use crate::IngestError;

/// What a start-up restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Restored {
    /// Facilities whose snapshot was restored.
    pub facilities: usize,
    /// Stored readings applied again because the process stopped before their
    /// facilities' snapshots were saved (0 after a clean shutdown).
    pub replayed: u64,
    /// Transfer ends at gateway facilities expected again by the forecast: recorded
    /// inside their window and not held by a snapshot already.
    pub transfers: usize,
}

/// A replayed reading was accepted once; judging its age again against a retention
/// that may since have shrunk would only lose it. Pruning deletes what is too old.
const REPLAY_RETENTION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Rebuilds the ledger from the store: facility snapshots and sheltered counts, then
/// the readings stored since the last snapshot save (whose facilities' snapshots are
/// then saved, so the next start need not replay them again), then refreshes every
/// town.
pub fn restore_ledger(store: &mut Store, ledger: &mut Ledger) -> Result<Restored, IngestError> {
    let mut restored = Restored::default();
    // One line for all of them: after a registry edit or a change of shards there may
    // be thousands.
    let mut not_restored = Vec::new();
    for snapshot in store.load_snapshots()? {
        if ledger.restore(&snapshot) {
            restored.facilities += 1;
        } else {
            not_restored.push(snapshot.facility);
        }
    }
    if !not_restored.is_empty() {
        let first: Vec<&str> = not_restored.iter().take(10).map(|f| f.as_str()).collect();
        tracing::warn!(
            message = "Stored facility state not restored: facilities gone from the registry (or this shard's towns) or of another kind now.",
            facilities = not_restored.len(),
            first = ?first
        );
    }
    for (town, sheltered) in store.load_sheltered()? {
        if let Some(t) = ledger.registry().town_idx(town.as_str()) {
            ledger.set_sheltered(t, sheltered);
        }
    }
    // The warning levels in force raise towns' targets (docs/design.md#warning-levels).
    let now = Utc::now();
    let warnings = store.list_warning_levels(Some(now))?;
    ledger.set_warnings(warnings.iter().filter_map(|w| w.to_set()).collect(), now);
    if let Some(from) = store.replay_from()? {
        let mut skipped = 0u64;
        let mut replayed = BTreeSet::new();
        restored.replayed =
            store.for_each_reading_since(from, |stored| match replay(ledger, &stored) {
                Some(facility) => {
                    replayed.insert(facility);
                }
                None => skipped += 1,
            })?;
        let mut batch = store.batch()?;
        for &f in &replayed {
            batch.save_snapshot(&ledger.snapshot(f))?;
        }
        batch.mark_snapshots_saved()?;
        batch.commit()?;
        tracing::info!(
            message = "Replayed readings stored after the last snapshot save.",
            from = %from,
            readings = restored.replayed,
            skipped
        );
    }
    restored.transfers = expect_open_transfers(store, ledger, Utc::now())?;
    ledger.refresh_all(Utc::now());
    Ok(restored)
}

/// More transfers than are ever recorded inside one window.
const OPEN_TRANSFERS_MAX: usize = 10_000;

/// Tells the consumption estimates of gateway facilities about the transfers recorded
/// within their window of `now` (docs/design.md#transfers), which the ingest writer
/// told them of before the restart. One a snapshot held already is not expected twice
/// (by id). Returns how many were new to the ledger.
fn expect_open_transfers(
    store: &Store,
    ledger: &mut Ledger,
    now: DateTime<Utc>,
) -> Result<usize, IngestError> {
    let registry = std::sync::Arc::clone(ledger.registry());
    let widest = registry
        .facilities
        .iter()
        .map(|f| transfer_window_s(f.report_every))
        .max()
        .unwrap_or(0);
    let since = now - chrono::Duration::seconds(i64::from(widest));
    let mut expected = 0;
    for row in store.transfers(None, Some(since), OPEN_TRANSFERS_MAX)? {
        let t = &row.transfer;
        let Some(category) = registry.category_idx(&t.category) else {
            continue;
        };
        for (id, sent) in [
            (&t.from_facility, t.quantity),
            (&t.to_facility, -t.quantity),
        ] {
            let Some(f) = registry.facility_idx(id) else {
                continue;
            };
            if registry.facility(f).report == Report::Gateway
                && ledger.expect_transfer(f, category, row.id, t.at, sent)
            {
                expected += 1;
            }
        }
    }
    if expected > 0 {
        tracing::info!(
            message = "Transfers still inside their window expected again by the forecast.",
            transfers = expected
        );
    }
    Ok(expected)
}

/// Applies one stored reading to the ledger. A reading at or before what a snapshot
/// already holds changes nothing ([`Ledger::apply`] keeps the latest), so replaying
/// from a mark that is too early is harmless. Returns the facility, or `None` when
/// the reading no longer fits the registry (a facility or category removed since): it
/// stays in history only.
fn replay(ledger: &mut Ledger, stored: &StoredReading) -> Option<FacilityIdx> {
    let registry = std::sync::Arc::clone(ledger.registry());
    let facility = registry.facility_idx(stored.facility.as_str())?;
    // The stored body is a payload (docs/design.md#payloads) without `ts` and `seq`
    // (store's `body` module): put them back and decode it as the wire would.
    let serde_json::Value::Object(mut payload) = stored.body.clone() else {
        return None;
    };
    payload.insert("ts".into(), stored.ts.timestamp_millis().into());
    if let Some(seq) = stored.seq {
        payload.insert("seq".into(), seq.into());
    }
    let bytes = serde_json::to_vec(&payload).ok()?;
    let topic = Topic {
        town: registry.town(registry.facility(facility).town).id.as_str(),
        facility: stored.facility.as_str(),
        kind: TopicKind::Reading,
    };
    let context = DecodeContext {
        retention: REPLAY_RETENTION,
        max_payload_bytes: usize::MAX,
        ..DecodeContext::new(&registry, Utc::now())
    };
    let decoded = wire::decode_readings(&topic, &bytes, &context).ok()?;
    let by_hand = stored.source != store::ReadingSource::Gateway;
    for reading in &decoded.readings {
        if ledger.apply(reading, stored.received_at) == Applied::Updated {
            ledger.set_counted_by_hand(facility, reading.ts, by_hand);
        }
    }
    (!decoded.readings.is_empty()).then_some(facility)
}
