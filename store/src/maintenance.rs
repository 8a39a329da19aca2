//! Store maintenance: retention for every table that grows, and WAL checkpoints, on a
//! connection of its own (docs/design.md#retention, issue 13 "Retention keeps up").
//!
//! A pass runs shortly after start and then every [`MaintenanceConfig::every`]. It
//! prunes each table in chunks of [`MaintenanceConfig::chunk`] rows, each chunk one short
//! transaction, and pauses between chunks at least as long as the chunk took, so the
//! ingest writer (whose `BEGIN IMMEDIATE` waits on the busy timeout) gets the lock at
//! least half the time; it loops until a chunk finds less than a full chunk due, so one
//! pass clears any backlog. Then a PASSIVE checkpoint copies what the WAL holds into the
//! database file without waiting for anyone, and when the WAL file is still larger than
//! [`MaintenanceConfig::wal_truncate_above`] (a long reader kept checkpoints from
//! finishing), a TRUNCATE checkpoint with a short busy timeout empties it, or is tried
//! again next pass.
//!
//! Failures (a locked file, a full disk) are logged once, counted, and tried again next
//! pass: maintenance never stops the service. Deleted rows free pages inside the file
//! for new rows; the file itself does not shrink (that takes an offline `VACUUM`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::sqlite::{CheckpointMode, PruneTable};
use crate::{DEFAULT_MAX_REJECTS, DEFAULT_RETENTION, Store, StoreError, StoreOptions};

/// Sent and failed notifications kept by default: a month of "who was told what".
pub const DEFAULT_OUTBOX_RETENTION: Duration = Duration::from_secs(30 * 86_400);
/// Resolved alerts (with their acks) kept by default: as long as readings history.
pub const DEFAULT_ALERT_RETENTION: Duration = DEFAULT_RETENTION;
/// Silences kept by default after they ended.
pub const DEFAULT_SILENCE_RETENTION: Duration = Duration::from_secs(30 * 86_400);
/// Audit entries kept by default: two years of who did what. The log grows by what
/// people do (a few hundred rows a day), not by what gateways send.
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(730 * 86_400);
/// Time between passes by default. At the demo's ~2.5 M readings a day a pass finds
/// ~17,000 readings due: two chunks.
pub const DEFAULT_MAINTENANCE_EVERY: Duration = Duration::from_secs(10 * 60);
/// The first pass after start: soon, so a file that grew while the service was down
/// (or under a version that pruned too little) is brought back within retention, yet
/// not during the start-up replay and the broker's first backlog.
pub const DEFAULT_FIRST_PASS_AFTER: Duration = Duration::from_secs(30);
/// Rows per transaction by default: ~10 ms of deleting readings on the 2-core dev
/// machine (20,000 took ~20 ms), short against the writer's 5 s busy timeout.
pub const DEFAULT_CHUNK: usize = 10_000;
/// A WAL file larger than this after the PASSIVE checkpoint gets a TRUNCATE one. The
/// same as the store's `journal_size_limit`: below it, SQLite keeps the WAL bounded
/// itself whenever a checkpoint completes.
pub const DEFAULT_WAL_TRUNCATE_ABOVE: u64 = 64 * 1024 * 1024;

/// The shortest pause between two chunks: even a quick chunk lets a waiting writer in.
const MIN_PAUSE: Duration = Duration::from_millis(5);
/// How long a TRUNCATE checkpoint waits for readers on old snapshots. It holds the
/// writer off meanwhile, so it waits briefly and tries again next pass.
const TRUNCATE_BUSY_TIMEOUT: Duration = Duration::from_millis(100);

/// What maintenance keeps and how often it runs. Every retention is measured back from
/// the start of a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceConfig {
    /// Readings measured longer ago than this are deleted.
    pub retention: Duration,
    /// Sent and failed notifications last tried longer ago than this are deleted;
    /// pending ones never are.
    pub outbox_retention: Duration,
    /// Resolved alerts (with their acks) resolved longer ago than this are deleted,
    /// unless a notification about them is still pending.
    pub alert_retention: Duration,
    /// Silences that ended longer ago than this are deleted.
    pub silence_retention: Duration,
    /// Audit entries recorded longer ago than this are deleted.
    pub audit_retention: Duration,
    /// Rows kept in the reject log (the ingest writer trims it too, as it adds).
    pub max_rejects: usize,
    /// Time between passes.
    pub every: Duration,
    /// Time from start to the first pass.
    pub first_after: Duration,
    /// Most rows one transaction deletes.
    pub chunk: usize,
    /// WAL bytes above which a pass tries a TRUNCATE checkpoint.
    pub wal_truncate_above: u64,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            retention: DEFAULT_RETENTION,
            outbox_retention: DEFAULT_OUTBOX_RETENTION,
            alert_retention: DEFAULT_ALERT_RETENTION,
            silence_retention: DEFAULT_SILENCE_RETENTION,
            audit_retention: DEFAULT_AUDIT_RETENTION,
            max_rejects: DEFAULT_MAX_REJECTS,
            every: DEFAULT_MAINTENANCE_EVERY,
            first_after: DEFAULT_FIRST_PASS_AFTER,
            chunk: DEFAULT_CHUNK,
            wal_truncate_above: DEFAULT_WAL_TRUNCATE_ABOVE,
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PassOutcome {
    pub readings_deleted: u64,
    pub rejects_deleted: u64,
    pub outbox_deleted: u64,
    pub alerts_deleted: u64,
    pub silences_deleted: u64,
    pub audit_deleted: u64,
    /// Transactions the pass ran (chunks), all tables together.
    pub chunks: u64,
    /// The WAL file's size at the end of the pass.
    pub wal_bytes: u64,
    /// A TRUNCATE checkpoint emptied the WAL file.
    pub wal_truncated: bool,
    /// Shutdown came first: the pass stopped between two chunks.
    pub cancelled: bool,
}

/// Counters since start and the last pass's figures, shared with whoever reports them
/// (metrics, the `ops` series). Atomics: written by the maintenance thread, read
/// anywhere without a lock.
#[derive(Debug, Default)]
pub struct MaintenanceStats {
    passes: AtomicU64,
    failed_passes: AtomicU64,
    readings_deleted: AtomicU64,
    rejects_deleted: AtomicU64,
    outbox_deleted: AtomicU64,
    alerts_deleted: AtomicU64,
    silences_deleted: AtomicU64,
    audit_deleted: AtomicU64,
    /// Epoch ms of the end of the last pass that succeeded; 0 before the first.
    last_pass_at_ms: AtomicU64,
    last_pass_duration_ms: AtomicU64,
    wal_bytes: AtomicU64,
    /// The last pass failed.
    failing: AtomicBool,
}

/// A copy of [`MaintenanceStats`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MaintenanceCounts {
    /// Passes that finished (not cancelled, not failed).
    pub passes: u64,
    pub failed_passes: u64,
    pub readings_deleted: u64,
    pub rejects_deleted: u64,
    pub outbox_deleted: u64,
    pub alerts_deleted: u64,
    pub silences_deleted: u64,
    pub audit_deleted: u64,
    pub last_pass_at: Option<DateTime<Utc>>,
    pub last_pass_duration: Duration,
    /// The WAL file's size after the last pass.
    pub wal_bytes: u64,
    /// The last pass failed (its error was logged when the failures began).
    pub failing: bool,
}

impl MaintenanceStats {
    pub fn counts(&self) -> MaintenanceCounts {
        let at = self.last_pass_at_ms.load(Ordering::Relaxed);
        MaintenanceCounts {
            passes: self.passes.load(Ordering::Relaxed),
            failed_passes: self.failed_passes.load(Ordering::Relaxed),
            readings_deleted: self.readings_deleted.load(Ordering::Relaxed),
            rejects_deleted: self.rejects_deleted.load(Ordering::Relaxed),
            outbox_deleted: self.outbox_deleted.load(Ordering::Relaxed),
            alerts_deleted: self.alerts_deleted.load(Ordering::Relaxed),
            silences_deleted: self.silences_deleted.load(Ordering::Relaxed),
            audit_deleted: self.audit_deleted.load(Ordering::Relaxed),
            last_pass_at: (at > 0)
                .then(|| DateTime::from_timestamp_millis(i64::try_from(at).unwrap_or(i64::MAX)))
                .flatten(),
            last_pass_duration: Duration::from_millis(
                self.last_pass_duration_ms.load(Ordering::Relaxed),
            ),
            wal_bytes: self.wal_bytes.load(Ordering::Relaxed),
            failing: self.failing.load(Ordering::Relaxed),
        }
    }

    fn deleted(&self, table: Option<PruneTable>, n: u64) {
        let counter = match table {
            Some(PruneTable::Readings) => &self.readings_deleted,
            Some(PruneTable::Outbox) => &self.outbox_deleted,
            Some(PruneTable::Alerts) => &self.alerts_deleted,
            Some(PruneTable::Silences) => &self.silences_deleted,
            Some(PruneTable::Audit) => &self.audit_deleted,
            None => &self.rejects_deleted,
        };
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The maintenance component: its own connection to the store's file, its settings and
/// its counters. Build it with [`Maintenance::open`], then [`Maintenance::spawn`] it, or
/// call [`Maintenance::run_pass`] directly (tests, tools).
#[derive(Debug)]
pub struct Maintenance {
    store: Store,
    config: MaintenanceConfig,
    stats: Arc<MaintenanceStats>,
}

impl Maintenance {
    /// Opens a connection of its own to the store at `path` (busy timeout and sync mode
    /// from `options`). Fails when the store cannot be opened, before anything runs.
    pub fn open(
        path: &Path,
        options: StoreOptions,
        config: MaintenanceConfig,
    ) -> Result<Maintenance, StoreError> {
        Ok(Maintenance {
            store: Store::open(path, options)?,
            config,
            stats: Arc::default(),
        })
    }

    pub fn stats(&self) -> Arc<MaintenanceStats> {
        Arc::clone(&self.stats)
    }

    pub fn config(&self) -> &MaintenanceConfig {
        &self.config
    }

    /// One pass, blocking: prunes every table down to its retention as of `now`, then
    /// checkpoints. Stops between chunks when `cancel` is cancelled. What was deleted
    /// before an error stays deleted and counted.
    pub fn run_pass(
        &mut self,
        now: DateTime<Utc>,
        cancel: &CancellationToken,
    ) -> Result<PassOutcome, StoreError> {
        let started = Instant::now();
        let mut outcome = PassOutcome::default();
        let result = self.prune_all(now, cancel, &mut outcome).and_then(|()| {
            if outcome.cancelled {
                Ok(())
            } else {
                self.checkpoint(&mut outcome)
            }
        });
        self.stats
            .wal_bytes
            .store(self.store.wal_bytes(), Ordering::Relaxed);
        result?;
        if !outcome.cancelled {
            self.stats.passes.fetch_add(1, Ordering::Relaxed);
            let at = u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0);
            self.stats.last_pass_at_ms.store(at, Ordering::Relaxed);
            let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.stats
                .last_pass_duration_ms
                .store(took, Ordering::Relaxed);
        }
        Ok(outcome)
    }

    fn prune_all(
        &mut self,
        now: DateTime<Utc>,
        cancel: &CancellationToken,
        outcome: &mut PassOutcome,
    ) -> Result<(), StoreError> {
        let c = &self.config;
        let tables = [
            (PruneTable::Readings, c.retention),
            (PruneTable::Outbox, c.outbox_retention),
            (PruneTable::Alerts, c.alert_retention),
            (PruneTable::Silences, c.silence_retention),
            (PruneTable::Audit, c.audit_retention),
        ];
        let (chunk, max_rejects) = (c.chunk.max(1), c.max_rejects);
        for (table, retention) in tables {
            // A retention too long to subtract keeps everything.
            let Some(cutoff) = chrono::Duration::from_std(retention)
                .ok()
                .and_then(|r| now.checked_sub_signed(r))
            else {
                continue;
            };
            let deleted = self.in_chunks(cancel, outcome, Some(table), |store| {
                store.prune_chunk(table, cutoff, chunk)
            })?;
            *match table {
                PruneTable::Readings => &mut outcome.readings_deleted,
                PruneTable::Outbox => &mut outcome.outbox_deleted,
                PruneTable::Alerts => &mut outcome.alerts_deleted,
                PruneTable::Silences => &mut outcome.silences_deleted,
                PruneTable::Audit => &mut outcome.audit_deleted,
            } += deleted;
        }
        outcome.rejects_deleted = self.in_chunks(cancel, outcome, None, |store| {
            store.prune_rejects_chunk(max_rejects, chunk)
        })?;
        Ok(())
    }

    /// Calls `chunk` until it deletes less than a full chunk, pausing between calls;
    /// returns the rows deleted. `table` `None` is the reject log.
    fn in_chunks(
        &mut self,
        cancel: &CancellationToken,
        outcome: &mut PassOutcome,
        table: Option<PruneTable>,
        mut chunk: impl FnMut(&mut Store) -> Result<usize, StoreError>,
    ) -> Result<u64, StoreError> {
        let limit = self.config.chunk.max(1);
        let mut total = 0;
        loop {
            if cancel.is_cancelled() {
                outcome.cancelled = true;
                return Ok(total);
            }
            let started = Instant::now();
            let deleted = chunk(&mut self.store)?;
            outcome.chunks += 1;
            total += deleted as u64;
            self.stats.deleted(table, deleted as u64);
            if deleted < limit {
                return Ok(total);
            }
            std::thread::sleep(started.elapsed().max(MIN_PAUSE));
        }
    }

    /// A PASSIVE checkpoint, then a TRUNCATE one when the WAL file is still large.
    fn checkpoint(&mut self, outcome: &mut PassOutcome) -> Result<(), StoreError> {
        let passive = self.store.checkpoint(CheckpointMode::Passive)?;
        if self.store.wal_bytes() > self.config.wal_truncate_above {
            let truncate = self.store.with_busy_timeout(TRUNCATE_BUSY_TIMEOUT, |s| {
                s.checkpoint(CheckpointMode::Truncate)
            })?;
            outcome.wal_truncated = truncate.complete();
            if !outcome.wal_truncated {
                tracing::debug!(
                    message =
                        "WAL checkpoint blocked by another connection; trying again next pass.",
                    wal_bytes = self.store.wal_bytes()
                );
            }
        } else if passive.blocked {
            tracing::debug!(message = "Passive WAL checkpoint could not finish.");
        }
        outcome.wal_bytes = self.store.wal_bytes();
        Ok(())
    }

    /// Runs passes on the blocking pool until `shutdown` is cancelled: the first after
    /// [`MaintenanceConfig::first_after`], then every [`MaintenanceConfig::every`].
    pub fn spawn(self, tracker: &TaskTracker, shutdown: CancellationToken) {
        tracker.spawn(self.run(shutdown));
    }

    async fn run(mut self, shutdown: CancellationToken) {
        let path = self.store.path().to_owned();
        let mut wait = self.config.first_after;
        // Whether the last pass failed: failures are logged when they begin and when
        // they end, not once per pass.
        let mut failing = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = self.config.every;
            let cancel = shutdown.clone();
            let pass = tokio::task::spawn_blocking(move || {
                let result = self.run_pass(Utc::now(), &cancel);
                (self, result)
            });
            let result;
            (self, result) = match pass.await {
                Ok(done) => done,
                Err(panic) => {
                    tracing::error!(message = "Store maintenance panicked; it stops, the service goes on.", error = %panic);
                    return;
                }
            };
            match result {
                Ok(outcome) => {
                    if failing {
                        failing = false;
                        self.stats.failing.store(false, Ordering::Relaxed);
                        tracing::info!(message = "Store maintenance works again.", store = %path.display());
                    }
                    log_pass(&outcome);
                }
                Err(error) => {
                    self.stats.failed_passes.fetch_add(1, Ordering::Relaxed);
                    self.stats.failing.store(true, Ordering::Relaxed);
                    if !failing {
                        failing = true;
                        tracing::warn!(
                            message = "Store maintenance failed; it is tried again every pass, and a success is logged.",
                            %error,
                            every = ?self.config.every
                        );
                    }
                }
            }
        }
    }
}

fn log_pass(o: &PassOutcome) {
    let deleted = o.readings_deleted
        + o.rejects_deleted
        + o.outbox_deleted
        + o.alerts_deleted
        + o.silences_deleted
        + o.audit_deleted;
    if deleted > 0 || o.wal_truncated {
        tracing::info!(
            message = "Store pruned.",
            readings = o.readings_deleted,
            rejects = o.rejects_deleted,
            outbox = o.outbox_deleted,
            alerts = o.alerts_deleted,
            silences = o.silences_deleted,
            audit = o.audit_deleted,
            chunks = o.chunks,
            wal_bytes = o.wal_bytes,
            wal_truncated = o.wal_truncated
        );
    } else {
        tracing::debug!(
            message = "Store maintenance: nothing due.",
            wal_bytes = o.wal_bytes
        );
    }
}
