//! Ingest counters, read by the API's `/metrics` and the `ops` series. Telemetry as
//! types: every event has one method here, so metric names stay stable.
//!
//! The recording methods are public because ingest lives in another crate, but only
//! ingest calls them: every other component reads ([`IngestMetrics::counts`] and the
//! getters).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct IngestMetrics {
    received: AtomicU64,
    accepted: AtomicU64,
    duplicates: AtomicU64,
    older: AtomicU64,
    batches: AtomicU64,
    connected: AtomicBool,
    /// Rejects by reason id. A mutex: rejects are the exception, and the reasons are
    /// few; counting them must not cost the happy path anything.
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    /// Failed attempts to commit a batch (each one retried).
    store_failures: AtomicU64,
    /// Set while ingest is paused on a store fault; cleared when a batch commits.
    store_fault: Mutex<Option<StoreFault>>,
    /// Readings of counts entered by hand, stored (issue 15).
    manual_readings: AtomicU64,
    /// Transfers the writer stored, and those it refused (a sender counted by hand
    /// holding less than it sent).
    transfers_recorded: AtomicU64,
    transfers_refused: AtomicU64,
    /// Transfers dropped unstored because their request was answered 503 first.
    transfers_abandoned: AtomicU64,
}

/// Why ingest is paused: the store failed and the batch is being retried.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoreFault {
    /// When the first attempt of this pause failed.
    pub since: chrono::DateTime<chrono::Utc>,
    /// The latest error, which names the file and what failed (never a secret).
    pub error: String,
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct IngestCounts {
    /// MQTT messages received (a backlog array is one message).
    pub received: u64,
    /// Readings stored.
    pub accepted: u64,
    /// Readings already stored (redeliveries, resends): acknowledged and ignored.
    pub duplicates: u64,
    /// Readings stored as history but older than the facility's latest.
    pub older: u64,
    pub batches: u64,
    pub connected: bool,
    pub rejected: BTreeMap<&'static str, u64>,
    /// Ingest is paused: the store fails and the writer retries ([`StoreFault`]).
    pub store_paused: bool,
    /// Failed attempts to commit a batch since start (each retried).
    pub store_failures: u64,
    /// Readings of counts entered by hand, stored.
    pub manual_readings: u64,
    /// Transfers stored by the writer.
    pub transfers_recorded: u64,
    /// Transfers refused by the writer: nothing stored.
    pub transfers_refused: u64,
    /// Transfers dropped unstored: the store failed past the request's commit wait,
    /// the requester was answered 503 and will send it again.
    pub transfers_abandoned: u64,
}

impl IngestCounts {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// Recording, one method per event. Only the ingest subscriber and writer call these:
/// they are public because ingest is a crate of its own, not for anyone else to count.
impl IngestMetrics {
    /// An MQTT message arrived (only ingest calls this).
    pub fn received(&self) {
        self.received.fetch_add(1, Relaxed);
    }
    /// Readings stored by a batch (only ingest calls this).
    pub fn accepted(&self, n: u64) {
        self.accepted.fetch_add(n, Relaxed);
    }
    /// Readings already stored, acknowledged and ignored (only ingest calls this).
    pub fn duplicates(&self, n: u64) {
        self.duplicates.fetch_add(n, Relaxed);
    }
    /// Readings stored as history, older than the facility's latest (only ingest calls
    /// this).
    pub fn older(&self, n: u64) {
        self.older.fetch_add(n, Relaxed);
    }
    /// A batch committed (only ingest calls this).
    pub fn batch(&self) {
        self.batches.fetch_add(1, Relaxed);
    }
    /// The subscriber connected (subscriptions granted) or lost the broker (only ingest
    /// calls this).
    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Relaxed);
    }
    /// Readings rejected for `reason`, a reject reason id (only ingest calls this).
    pub fn rejected(&self, reason: &'static str, n: u64) {
        let mut map = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(reason).or_default() += n;
    }
    /// A batch failed to commit and will be retried; ingest is paused until
    /// [`IngestMetrics::store_recovered`] (only ingest calls this).
    pub fn store_failed(&self, error: &impl std::fmt::Display) {
        self.store_failures.fetch_add(1, Relaxed);
        let mut fault = self.store_fault.lock().unwrap_or_else(|p| p.into_inner());
        let since = fault.as_ref().map_or_else(chrono::Utc::now, |f| f.since);
        *fault = Some(StoreFault {
            since,
            error: error.to_string(),
        });
    }
    /// A batch committed after a store fault: the pause is over (only ingest calls this).
    pub fn store_recovered(&self) {
        *self.store_fault.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Reading, for `/readyz`, `/metrics` and the `ops` series.
impl IngestMetrics {
    /// Why ingest is paused, when it is: the store is failing and the writer retries
    /// (for `/readyz`, `/metrics` and the `ops` series).
    pub fn store_fault(&self) -> Option<StoreFault> {
        self.store_fault
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Failed commit attempts since start (each retried).
    pub fn store_failures(&self) -> u64 {
        self.store_failures.load(Relaxed)
    }

    /// Readings of a count entered by hand, stored now.
    pub fn manual_readings(&self, n: u64) {
        self.manual_readings.fetch_add(n, Relaxed);
    }

    /// A transfer stored (`true`) or refused (`false`).
    pub fn transfer(&self, recorded: bool) {
        let counter = if recorded {
            &self.transfers_recorded
        } else {
            &self.transfers_refused
        };
        counter.fetch_add(1, Relaxed);
    }

    /// A transfer dropped unstored: its requester was answered 503 before it could
    /// commit.
    pub fn transfer_abandoned(&self) {
        self.transfers_abandoned.fetch_add(1, Relaxed);
    }

    /// Whether the subscriber is connected to the broker and its subscriptions are
    /// granted now (for `/readyz`).
    pub fn connected(&self) -> bool {
        self.connected.load(Relaxed)
    }

    pub fn counts(&self) -> IngestCounts {
        IngestCounts {
            received: self.received.load(Relaxed),
            accepted: self.accepted.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            older: self.older.load(Relaxed),
            batches: self.batches.load(Relaxed),
            connected: self.connected.load(Relaxed),
            rejected: self
                .rejected
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            store_paused: self.store_fault().is_some(),
            store_failures: self.store_failures(),
            manual_readings: self.manual_readings.load(Relaxed),
            transfers_recorded: self.transfers_recorded.load(Relaxed),
            transfers_refused: self.transfers_refused.load(Relaxed),
            transfers_abandoned: self.transfers_abandoned.load(Relaxed),
        }
    }
}
