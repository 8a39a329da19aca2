//! The sink: two tasks around the disk-backed queue.
//!
//! ```text
//!  ingest writer ──(stock, water_point, power_unit: in its SQLite batch)──┐
//!  alerts ─────────(alert: in their SQLite batch)────────────────────────┤
//!  derived task ───(coverage, town_status on change and every minute;    ├─► influx_queue ─► writer task ─► InfluxDB
//!                   ops every 10 s: read from the ledger and counters)───┘      (SQLite)      (≤ 5000 lines or 1 s, gzip)
//! ```
//!
//! Nobody upstream waits on InfluxDB: producers only append to SQLite. The writer sends
//! the oldest lines and deletes them once InfluxDB accepted them, so an outage, a
//! restart of InfluxDB or of the service loses nothing and replays in order; a line is
//! sent again only when its batch's answer was lost, which InfluxDB absorbs (same
//! series and time: the point is overwritten, not doubled).
//!
//! Errors: down, slow, 5xx, and also 401/403/404 (a token or database being fixed)
//! keep the lines and back off 1 s → 30 s. 400/413/422 mean the lines can never be
//! written as they are: the batch is sent in halves until the refused lines are alone,
//! and those are logged and dropped, so one bad line never blocks the queue and costs
//! no good line.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use chrono::Utc;
use reserve::Ledger;
use reserve::registry::TownIdx;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::client::{InfluxClient, InfluxError, WriteOutcome};
use super::config::InfluxSinkConfig;
use super::line::{self, OpsCounts};
use super::queue::QueueState;
use crate::{AsyncStore, Store, StoreError, StoreOptions};

/// First wait after a failed write; doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Backoff while the SQLite store fails under the queue: short, since the store
/// usually recovers in seconds (a lock released, space freed).
const STORE_RETRY_MIN: Duration = Duration::from_millis(100);
const STORE_RETRY_MAX: Duration = Duration::from_secs(2);
/// How often an empty queue is looked at again.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// Change notifications are taken at most this often: a busy ingest changes towns
/// every few milliseconds, and one point per town and second is plenty for a display
/// (the changes in between coalesce in the change source).
const CHANGE_COALESCE: Duration = Duration::from_secs(1);
/// Towns read per hold of the ledger's lock, so the ingest writer is not kept waiting
/// while the sink formats a large city.
const TOWNS_PER_LOCK: usize = 1_000;
/// Lines enqueued per SQLite transaction: the ingest writer waits for the write lock
/// meanwhile, so a minute's 240,000 lines of a large city go in short steps.
const LINES_PER_TRANSACTION: usize = 5_000;

/// Where the derived task learns which towns changed. Implemented for closures
/// returning a future (wrap `live::ChangeConsumer::changed`), for an mpsc receiver,
/// and by [`NoChanges`].
pub trait ChangeSource: Send + 'static {
    /// Waits until some towns changed and takes them; `None` when no change will ever
    /// come again. Must be cancel-safe: a future dropped before completion loses no
    /// change.
    fn changed(&mut self) -> impl Future<Output = Option<BTreeSet<TownIdx>>> + Send;
}

impl<F, Fut> ChangeSource for F
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Option<BTreeSet<TownIdx>>> + Send,
{
    fn changed(&mut self) -> impl Future<Output = Option<BTreeSet<TownIdx>>> + Send {
        self()
    }
}

impl ChangeSource for tokio::sync::mpsc::Receiver<BTreeSet<TownIdx>> {
    fn changed(&mut self) -> impl Future<Output = Option<BTreeSet<TownIdx>>> + Send {
        self.recv()
    }
}

/// No change notifications: the derived series are written on the periodic pass only.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoChanges;

impl ChangeSource for NoChanges {
    fn changed(&mut self) -> impl Future<Output = Option<BTreeSet<TownIdx>>> + Send {
        std::future::ready(None)
    }
}

/// Why the sink cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("influx sink: {0}")]
    Config(String),
    #[error(transparent)]
    Influx(#[from] InfluxError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The sink's counters and gauges, shared with `/metrics` and the `ops` series.
#[derive(Debug)]
pub struct SinkMetrics {
    queue_depth: AtomicU64,
    /// Enqueue time of the oldest queued line, epoch ms; [`NO_LINE`] when empty.
    oldest_enqueued_ms: AtomicI64,
    written_lines: AtomicU64,
    write_errors: AtomicU64,
    dropped_malformed: AtomicU64,
    dropped_overflow: AtomicU64,
}

const NO_LINE: i64 = i64::MIN;

impl Default for SinkMetrics {
    fn default() -> Self {
        SinkMetrics {
            queue_depth: AtomicU64::new(0),
            oldest_enqueued_ms: AtomicI64::new(NO_LINE),
            written_lines: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            dropped_malformed: AtomicU64::new(0),
            dropped_overflow: AtomicU64::new(0),
        }
    }
}

/// A point-in-time copy of [`SinkMetrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct SinkStats {
    /// Lines waiting in the disk-backed queue (as of the writer's last look).
    pub queue_depth: u64,
    /// Seconds the oldest queued line has waited; 0 when the queue is empty.
    pub lag_s: f64,
    /// Lines InfluxDB accepted since start.
    pub written_lines: u64,
    /// Write requests that failed and will be retried (down, slow, 5xx, auth).
    pub write_errors: u64,
    /// Lines InfluxDB refused as malformed, logged and dropped.
    pub dropped_malformed: u64,
    /// Oldest lines dropped because the queue was over its bound.
    pub dropped_overflow: u64,
    /// Fields left out of lines because they were NaN or infinite.
    pub non_finite_skipped: u64,
}

impl SinkMetrics {
    pub fn snapshot(&self) -> SinkStats {
        let oldest = self.oldest_enqueued_ms.load(Relaxed);
        let lag_s = if oldest == NO_LINE {
            0.0
        } else {
            (Utc::now().timestamp_millis() - oldest).max(0) as f64 / 1000.0
        };
        SinkStats {
            queue_depth: self.queue_depth.load(Relaxed),
            lag_s,
            written_lines: self.written_lines.load(Relaxed),
            write_errors: self.write_errors.load(Relaxed),
            dropped_malformed: self.dropped_malformed.load(Relaxed),
            dropped_overflow: self.dropped_overflow.load(Relaxed),
            non_finite_skipped: line::non_finite_skipped(),
        }
    }
}

/// A running sink. Its tasks live on the caller's tracker and stop on its token.
#[derive(Debug, Clone)]
pub struct Sink {
    metrics: Arc<SinkMetrics>,
}

impl Sink {
    /// Opens a connection of its own to the store at `store_path` (the ingest writer
    /// keeps its own; WAL lets both work), then spawns on `tracker`:
    /// - the writer, which sends the queue to InfluxDB;
    /// - the derived task, which enqueues `coverage` and `town_status` from `ledger` for
    ///   the towns `changes` reports (at most once a second) and for every town each
    ///   [`InfluxSinkConfig::derived_every`], and `ops` from `ops()` each
    ///   [`InfluxSinkConfig::ops_every`].
    ///
    /// Both stop when `shutdown` is cancelled; a write in flight finishes first (bounded
    /// by the timeout). What is still queued stays in the file for the next start.
    /// Call it within a Tokio runtime; a bad configuration is an error before anything
    /// is spawned.
    pub fn start<C, O>(
        config: InfluxSinkConfig,
        store_path: &Path,
        ledger: Arc<RwLock<Ledger>>,
        changes: C,
        ops: O,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Sink, SinkError>
    where
        C: ChangeSource,
        O: Fn() -> OpsCounts + Send + Sync + 'static,
    {
        check(&config)?;
        let client = InfluxClient::new(&config.endpoint)?;
        let store = AsyncStore::new(Store::open(store_path, StoreOptions::default())?);
        let metrics = Arc::new(SinkMetrics::default());
        let config = Arc::new(config);
        tracing::info!(
            message = "InfluxDB sink started.",
            url = client.url(),
            api = ?config.endpoint.api,
        );
        tracker.spawn(
            Writer {
                client,
                store: store.clone(),
                config: Arc::clone(&config),
                metrics: Arc::clone(&metrics),
            }
            .run(shutdown.clone()),
        );
        tracker.spawn(
            Derived {
                store,
                config,
                ledger,
                ops,
                metrics: Arc::clone(&metrics),
                failing: Default::default(),
            }
            .run(changes, shutdown),
        );
        Ok(Sink { metrics })
    }

    pub fn metrics(&self) -> &Arc<SinkMetrics> {
        &self.metrics
    }

    pub fn stats(&self) -> SinkStats {
        self.metrics.snapshot()
    }
}

fn check(config: &InfluxSinkConfig) -> Result<(), SinkError> {
    let problem = if config.batch_lines == 0 {
        "batch_lines must be at least 1"
    } else if config.flush_every.is_zero() {
        "flush_every must be longer than 0"
    } else if config.derived_every.is_zero() || config.ops_every.is_zero() {
        "derived_every and ops_every must be longer than 0"
    } else if config.endpoint.timeout.is_zero() {
        "timeout must be longer than 0"
    } else if config.instance.trim().is_empty() {
        "instance must not be empty"
    } else {
        return Ok(());
    };
    Err(SinkError::Config(problem.to_owned()))
}

/// What the writer does after a turn.
enum Turn {
    /// Look at the queue again at once (a batch was written; more may be due).
    Again,
    Wait(Duration),
    /// Shutdown came while a written batch waited to be deleted.
    Stop,
}

/// How InfluxDB has been answering: the wait before the next try and the failures
/// since it last accepted a write (for the "accepts writes again" log line).
struct Health {
    backoff: Duration,
    failures: u64,
}

impl Health {
    fn recovered(&mut self, queued: u64) {
        if self.failures > 0 {
            tracing::info!(
                message = "InfluxDB accepts writes again; replaying the queue.",
                failed_attempts = self.failures,
                queued,
            );
        }
        self.failures = 0;
        self.backoff = BACKOFF_MIN;
    }

    /// Counts a failed write; returns the wait before the next, which doubles up to
    /// `BACKOFF_MAX`.
    fn failed(&mut self) -> Duration {
        self.failures += 1;
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        wait
    }
}

/// Sends the queue to InfluxDB, oldest first.
struct Writer {
    client: InfluxClient,
    store: AsyncStore,
    config: Arc<InfluxSinkConfig>,
    metrics: Arc<SinkMetrics>,
}

impl Writer {
    async fn run(self, shutdown: CancellationToken) {
        let mut health = Health {
            backoff: BACKOFF_MIN,
            failures: 0,
        };
        while !shutdown.is_cancelled() {
            match self.turn(&mut health, &shutdown).await {
                Turn::Again => {}
                Turn::Wait(wait) => {
                    if !sleep_or_stop(wait, &shutdown).await {
                        break;
                    }
                }
                Turn::Stop => break,
            }
        }
        tracing::info!(message = "InfluxDB sink writer stopped.");
    }

    /// One look at the queue and, when a batch is due, one write of it.
    async fn turn(&self, health: &mut Health, shutdown: &CancellationToken) -> Turn {
        let state = match self.look().await {
            Ok(state) => state,
            Err(error) => {
                tracing::error!(message = "Cannot read the InfluxDB queue.", %error);
                return Turn::Wait(health.backoff);
            }
        };
        if let Some(wait) = self.until_batch_due(&state) {
            return Turn::Wait(wait);
        }
        let batch_lines = self.config.batch_lines;
        let head = match self
            .store
            .run(move |s| s.influx_queue_head(batch_lines))
            .await
        {
            Ok(head) => head,
            Err(error) => {
                tracing::error!(message = "Cannot read the InfluxDB queue.", %error);
                return Turn::Wait(health.backoff);
            }
        };
        let Some(last_id) = head.last().map(|q| q.id) else {
            return Turn::Again;
        };
        let lines: Vec<String> = head.into_iter().map(|q| q.line).collect();
        match deliver(&self.client, &lines).await {
            Ok(dropped) => {
                health.recovered(state.depth);
                self.metrics.dropped_malformed.fetch_add(dropped, Relaxed);
                if !self.delete_written(last_id, shutdown).await {
                    return Turn::Stop;
                }
                self.metrics
                    .written_lines
                    .fetch_add(lines.len() as u64 - dropped, Relaxed);
                Turn::Again
            }
            Err(error) => {
                self.metrics.write_errors.fetch_add(1, Relaxed);
                tracing::warn!(
                    message = "InfluxDB write failed; the lines stay queued.",
                    %error,
                    queued = state.depth,
                    retry_in_s = health.backoff.as_secs(),
                );
                Turn::Wait(health.failed())
            }
        }
    }

    /// The queue's depth and age, trimming it first when it is over its bound; the
    /// metrics follow. Look first, read lines only when a batch is due: the look is two
    /// index seeks, and trimming (a write) happens only when the bound is passed.
    async fn look(&self) -> Result<QueueState, StoreError> {
        let max_rows = self.config.queue_max_rows;
        let (trimmed, state) = self
            .store
            .run(move |store| {
                let mut state = store.influx_queue_state()?;
                let mut trimmed = 0;
                if state.depth > max_rows {
                    trimmed = store.influx_queue_trim(max_rows)?;
                    state = store.influx_queue_state()?;
                }
                Ok((trimmed, state))
            })
            .await?;
        if trimmed > 0 {
            self.metrics.dropped_overflow.fetch_add(trimmed, Relaxed);
            tracing::error!(
                message = "InfluxDB queue over its bound: oldest lines dropped.",
                dropped = trimmed,
                bound = max_rows,
            );
        }
        self.metrics.queue_depth.store(state.depth, Relaxed);
        self.metrics
            .oldest_enqueued_ms
            .store(state.oldest_enqueued_ms.unwrap_or(NO_LINE), Relaxed);
        Ok(state)
    }

    /// How long until a batch is due: `None` when one is due now. An empty queue is
    /// looked at again after `IDLE_POLL`; a partial batch waits until its oldest line
    /// is `flush_every` old.
    fn until_batch_due(&self, state: &QueueState) -> Option<Duration> {
        if state.depth == 0 {
            return Some(IDLE_POLL);
        }
        if state.depth >= self.config.batch_lines as u64 {
            return None;
        }
        let age_ms = state
            .oldest_enqueued_ms
            .map_or(0, |t| Utc::now().timestamp_millis() - t);
        let flush_ms = i64::try_from(self.config.flush_every.as_millis()).unwrap_or(i64::MAX);
        (age_ms < flush_ms).then(|| {
            let wait = Duration::from_millis(u64::try_from(flush_ms - age_ms).unwrap_or(0));
            wait.min(self.config.flush_every)
        })
    }

    /// Deletes the written batch from the queue, waiting out a store that fails (locked
    /// by another process, disk full): the delete is retried, not the write, so
    /// InfluxDB is not sent the same batch in a tight loop, and the log says it once.
    /// False when shutdown came first (the batch stays queued and is sent again at the
    /// next start; InfluxDB overwrites the same points, nothing is doubled).
    async fn delete_written(&self, last_id: i64, shutdown: &CancellationToken) -> bool {
        let mut backoff = STORE_RETRY_MIN;
        let mut failing = false;
        loop {
            match self
                .store
                .run(move |s| s.influx_queue_delete_through(last_id))
                .await
            {
                Ok(_) => {
                    if failing {
                        tracing::info!(message = "The InfluxDB queue is writable again.");
                    }
                    return true;
                }
                Err(error) => {
                    if !failing {
                        tracing::error!(
                            message = "Cannot delete written lines from the InfluxDB queue; retrying until the store answers.",
                            %error,
                        );
                        failing = true;
                    }
                    if !sleep_or_stop(backoff, shutdown).await {
                        return false;
                    }
                    backoff = (backoff * 2).min(STORE_RETRY_MAX);
                }
            }
        }
    }
}

/// Writes `lines`; a refused batch is split in halves until each refused line is alone,
/// and those are logged and dropped. Returns how many were dropped, or the error that
/// stopped the attempt (then nothing may be deleted: the whole batch is retried).
async fn deliver(client: &InfluxClient, lines: &[String]) -> Result<u64, InfluxError> {
    // Ranges still to send, the next on top.
    let mut pending = Vec::new();
    pending.push(0..lines.len());
    let mut dropped = 0;
    while let Some(range) = pending.pop() {
        let part = &lines[range.clone()];
        match client.write(part).await {
            WriteOutcome::Written => {}
            WriteOutcome::Failed(error) => return Err(error),
            WriteOutcome::Refused { status, body } if part.len() == 1 => {
                dropped += 1;
                tracing::error!(
                    message = "InfluxDB refused a line; it is dropped.",
                    status,
                    answer = %body,
                    line = %part[0],
                );
            }
            WriteOutcome::Refused { status, body } => {
                if part.len() == lines.len() {
                    tracing::warn!(
                        message = "InfluxDB refused a batch; sending it in halves to find the bad lines.",
                        status,
                        answer = %body,
                        lines = part.len(),
                        first_line = %part[0],
                    );
                }
                // Second half pushed first: the first half is sent first, keeping order.
                let mid = range.start + part.len() / 2;
                pending.push(mid..range.end);
                pending.push(range.start..mid);
            }
        }
    }
    Ok(dropped)
}

/// Enqueues the series computed from the ledger and the counters.
struct Derived<O> {
    store: AsyncStore,
    config: Arc<InfluxSinkConfig>,
    ledger: Arc<RwLock<Ledger>>,
    ops: O,
    metrics: Arc<SinkMetrics>,
    /// Enqueueing into the store is failing (locked, disk full): logged when it starts
    /// and when it ends, not at every tick in between.
    failing: std::sync::atomic::AtomicBool,
}

impl<O> Derived<O>
where
    O: Fn() -> OpsCounts + Send + Sync + 'static,
{
    async fn run(self, mut changes: impl ChangeSource, shutdown: CancellationToken) {
        let mut every_town = tokio::time::interval(self.config.derived_every);
        every_town.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut ops_tick = tokio::time::interval(self.config.ops_every);
        ops_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut listening = true;
        let mut next_change = Instant::now();
        loop {
            let coalescing = Instant::now() < next_change;
            let towns = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                _ = every_town.tick() => None,
                _ = ops_tick.tick() => {
                    self.enqueue_ops().await;
                    continue;
                }
                () = tokio::time::sleep_until(next_change), if listening && coalescing => continue,
                changed = changes.changed(), if listening && !coalescing => match changed {
                    Some(towns) => {
                        next_change = Instant::now() + CHANGE_COALESCE;
                        Some(towns)
                    }
                    None => {
                        listening = false;
                        continue;
                    }
                },
            };
            let ledger = Arc::clone(&self.ledger);
            let enqueued = self
                .store
                .run(move |store| enqueue_derived(store, &ledger, towns.as_ref()))
                .await;
            self.note(enqueued.map(drop), "coverage and town status");
        }
        tracing::info!(message = "InfluxDB sink derived series stopped.");
    }

    /// Logs the first failure of a streak and the recovery; the points of the ticks in
    /// between are skipped (the next tick writes fresh ones).
    fn note(&self, enqueued: Result<(), StoreError>, what: &'static str) {
        use std::sync::atomic::Ordering::Relaxed;
        match enqueued {
            Ok(()) => {
                if self.failing.swap(false, Relaxed) {
                    tracing::info!(message = "The InfluxDB queue takes derived series again.");
                }
            }
            Err(error) => {
                if !self.failing.swap(true, Relaxed) {
                    tracing::error!(
                        message = "Cannot enqueue derived series for InfluxDB; skipping them until the store answers.",
                        series = what,
                        %error
                    );
                }
            }
        }
    }

    async fn enqueue_ops(&self) {
        let stats = self.metrics.snapshot();
        let now = Utc::now();
        let line = line::ops_line(
            &self.config.instance,
            &(self.ops)(),
            stats.queue_depth,
            stats.lag_s,
            now,
        );
        let enqueued = self
            .store
            .run(move |s| s.enqueue_influx_lines(&[line], now))
            .await;
        self.note(enqueued.map(drop), "the ops line");
    }
}

/// Enqueues `coverage` and `town_status` of `towns` (all when `None`), timestamped now:
/// the figures are the ledger's at this instant.
fn enqueue_derived(
    store: &mut Store,
    ledger: &RwLock<Ledger>,
    towns: Option<&BTreeSet<TownIdx>>,
) -> Result<(), StoreError> {
    let now = Utc::now();
    let ts = now.timestamp_millis();
    let town_count = ledger
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .registry()
        .towns
        .len();
    let towns: Vec<TownIdx> = match towns {
        Some(set) => set
            .iter()
            .copied()
            .filter(|t| t.index() < town_count)
            .collect(),
        None => (0..town_count).map(TownIdx::from_index).collect(),
    };
    let mut lines = Vec::new();
    for chunk in towns.chunks(TOWNS_PER_LOCK) {
        {
            let ledger = ledger.read().unwrap_or_else(PoisonError::into_inner);
            let registry = ledger.registry();
            // A registry reload between two chunks may have shrunk the town list: the
            // towns past its end are gone (their last figures were written before).
            for &t in chunk.iter().filter(|t| t.index() < registry.towns.len()) {
                let figures = ledger.figures(t);
                lines.extend(line::coverage_lines(registry, figures, ts));
                lines.push(line::town_status_line(registry, figures, ts));
            }
        }
        if lines.len() >= LINES_PER_TRANSACTION {
            store.enqueue_influx_lines(&lines, now)?;
            lines.clear();
        }
    }
    for chunk in lines.chunks(LINES_PER_TRANSACTION) {
        store.enqueue_influx_lines(chunk, now)?;
    }
    Ok(())
}

/// Sleeps for `d`; false when `shutdown` came first.
async fn sleep_or_stop(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}
