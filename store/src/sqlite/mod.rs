//! The embedded store: one SQLite file in WAL mode (docs/design.md#sqlite).
//!
//! Durability: a [`WriteBatch`] is one `BEGIN IMMEDIATE` transaction; once
//! [`WriteBatch::commit`] returns, its rows are in the WAL file, so a killed process
//! (SIGKILL) loses none of them. With `synchronous = NORMAL` a power cut may lose the
//! last commits; [`StoreOptions::synchronous_full`] syncs every commit to disk, at the
//! cost it documents.
//!
//! Each component opens its own `Store` on the same file (the ingest writer, the alert
//! engine, maintenance, the InfluxDB sink, the API). SQLite lets one of them write at a
//! time: a batch starts with `BEGIN IMMEDIATE` and waits up to the busy timeout for
//! another's lock; WAL readers neither block writers nor see half a batch.

mod activations;
mod alerts;
mod async_store;
mod audit;
mod body;
mod drill;
mod prune;
mod reject;
mod row;
mod scenarios;
mod schema;
mod source;
mod transfers;
mod warning_levels;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reserve::ledger::FacilitySnapshot;
use reserve::registry::Registry;
use reserve::{FacilityId, Reading, TownId};
use rusqlite::{Connection, ErrorCode, TransactionBehavior, params};

pub use activations::{
    ActivationRow, ActivationShelter, ActivationState, ActivationStep, NewActivation, Origin,
    StartRefused, StepDone, StepOutcome,
};
pub use alerts::{
    AckRow, Alert, AlertBatch, AlertCounts, AlertKinds, AlertQuery, AlertRow, AlertState,
    ConvertKinds, DeliveryState, DrillAlertCounts, NewNotification, NotificationQuery,
    OutboxCounts, OutboxRow, SilenceRow, Text,
};
pub use async_store::AsyncStore;
pub use audit::{AuditFilter, AuditRow, NewAudit};
pub use drill::DrillRow;
pub use prune::{Checkpoint, CheckpointMode, PruneTable, wal_bytes};
pub use reject::{MAX_REJECT_DETAIL, MAX_REJECT_PAYLOAD, MAX_REJECT_TOPIC, RejectRecord};
pub use scenarios::{
    MAX_SCENARIO_RUNS, NewScenarioRun, STRESS_TEST_REQUESTER, ScenarioRunRow, ScenarioRunSummary,
    StressTestRow,
};
pub use source::{ManualEntry, ReadingSource};
pub use transfers::{NewTransfer, TransferRow};
pub use warning_levels::{WARNING_LEVEL_HISTORY_MAX, WarningLevelRow};

use crate::StoreError;
pub(crate) use row::{Columns, FromRow, Limit, Millis, RowError, for_each_row};
use row::{Count, Seq, Slug};

/// History kept by default: the same 90 days beyond which a reading is rejected as too
/// old (`ts_too_old`, docs/design.md#retention).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// Rejected messages kept by default in the reject log.
pub const DEFAULT_MAX_REJECTS: usize = 10_000;
/// How long a statement waits for another connection's lock before failing.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Page cache per connection: enough for the facility state of a large city, which every
/// batch updates here and there.
const CACHE_KIB: i64 = 32 * 1024;
/// WAL pages between automatic checkpoints (SQLite's default is 1000). Fewer
/// checkpoints mean fewer syncs and each hot page copied once per checkpoint rather
/// than many times: 15–30 % more readings/s in the measurement noted in `schema`.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 10_000;
/// WAL file size kept after a checkpoint, so one huge batch does not leave a huge file.
const JOURNAL_SIZE_LIMIT_BYTES: i64 = 64 * 1024 * 1024;
/// Distinct statements this module prepares, with room to spare.
const STATEMENT_CACHE: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Rows kept in the reject log; older ones are deleted, their counts kept.
    pub max_rejects: usize,
    /// `synchronous = FULL` (a power cut loses no commit) instead of `NORMAL` (a killed
    /// process loses no commit; a power cut may lose the last ones). FULL syncs every
    /// commit: on the dev machine, with snapshots, ~22,000 instead of ~140,000
    /// readings/s in batches of 20, ~106,000 instead of ~169,000 in batches of 100.
    pub synchronous_full: bool,
    /// How long to wait for a lock held by another connection to the same file.
    pub busy_timeout: Duration,
    /// Also enqueue each stored reading's InfluxDB lines (`stock`, `water_point`,
    /// `power_unit`) in the same transaction, for the sink (`crate::influx`) to send.
    /// On when an `[influx]` section is configured.
    pub influx_queue: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_rejects: DEFAULT_MAX_REJECTS,
            synchronous_full: false,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            influx_queue: false,
        }
    }
}

/// A reading as history holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReading {
    pub facility: FacilityId,
    /// Measured at, by the gateway's clock.
    pub ts: DateTime<Utc>,
    pub seq: Option<u64>,
    /// Received at, by our clock.
    pub received_at: DateTime<Utc>,
    /// The observation, e.g. `{"stock":{"water":12000.0}}` (see the `body` module).
    pub body: serde_json::Value,
    /// Its gateway, or an officer's hand count.
    pub source: ReadingSource,
}

/// The embedded SQLite store.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
    options: StoreOptions,
}

impl Store {
    /// Opens the store at `path`, creating the file and bringing its schema up to date.
    /// The directory must exist: a typo in the configured path should fail loudly, not
    /// scatter databases.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
            && !dir.is_dir()
        {
            return Err(StoreError::MissingDirectory {
                path: path.to_owned(),
                dir: dir.to_owned(),
            });
        }
        let mut conn = Connection::open(path).map_err(open_error(path, "open the file"))?;
        conn.busy_timeout(options.busy_timeout)
            .map_err(open_error(path, "set the busy timeout"))?;
        // The first statement that reads the file: where "not a database" shows.
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(open_error(path, "enable the WAL journal"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NoWal {
                path: path.to_owned(),
                mode,
            });
        }
        let synchronous = if options.synchronous_full {
            "FULL"
        } else {
            "NORMAL"
        };
        conn.pragma_update(None, "synchronous", synchronous)
            .map_err(open_error(path, "set synchronous"))?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(open_error(path, "enable foreign keys"))?;
        conn.pragma_update(None, "cache_size", -CACHE_KIB)
            .map_err(open_error(path, "set the cache size"))?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
            .map_err(open_error(path, "set the checkpoint interval"))?;
        conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT_BYTES)
            .map_err(open_error(path, "set the journal size limit"))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        schema::migrate(&mut conn, path)?;
        Ok(Store {
            conn,
            path: path.to_owned(),
            options,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// The connection, for the other modules of this crate (the InfluxDB queue, history).
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Starts a write batch: one transaction, committed by [`WriteBatch::commit`] and
    /// rolled back if dropped. `IMMEDIATE` takes the write lock now, so a batch never
    /// fails halfway because another connection wrote first.
    pub fn batch(&mut self) -> Result<WriteBatch<'_>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_error(&self.path, "start a write batch"))?;
        Ok(WriteBatch {
            tx,
            path: &self.path,
            max_rejects: self.options.max_rejects,
            rejects_added: false,
            influx_queue: self.options.influx_queue,
        })
    }

    /// Every facility's saved state, to rebuild the ledger at start-up.
    pub fn load_snapshots(&self) -> Result<Vec<FacilitySnapshot>, StoreError> {
        self.rows(
            "SELECT facility, snapshot FROM facility_state ORDER BY facility",
            [],
            "load facility state",
        )
    }

    /// Where a start-up must replay stored readings from to bring the snapshots up to
    /// date (see [`WriteBatch::mark_unsaved_since`]); `None` when they are current.
    pub fn replay_from(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let mark: Option<ReplayMark> = self.first_row(
            "SELECT key, value FROM ledger_meta WHERE key = 'replay_from'",
            [],
            "read the replay mark",
        )?;
        Ok(mark.map(|m| m.0))
    }

    /// Calls `each` with every stored reading measured at or after `from`, all
    /// facilities, in `ts` order (the primary key's), for the start-up replay.
    pub fn for_each_reading_since(
        &self,
        from: DateTime<Utc>,
        mut each: impl FnMut(StoredReading),
    ) -> Result<u64, StoreError> {
        row::for_each_row(
            &self.conn,
            &self.path,
            "SELECT facility, ts, seq, received, body, source, entered_by FROM readings
             WHERE ts >= ?1 ORDER BY ts, facility",
            [Millis(from)],
            "replay readings",
            |reading| {
                each(reading);
                Ok::<_, StoreError>(())
            },
        )
    }

    /// The sheltered population last reported for each town.
    pub fn load_sheltered(&self) -> Result<Vec<(TownId, u64)>, StoreError> {
        let rows: Vec<Sheltered> = self.rows(
            "SELECT town, sheltered FROM sheltered ORDER BY town",
            [],
            "load sheltered counts",
        )?;
        Ok(rows.into_iter().map(|s| (s.town, s.count)).collect())
    }

    /// Records the people sheltered in `town` now (reported by its officer).
    pub fn set_sheltered(
        &mut self,
        town: &TownId,
        sheltered: u64,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let count = i64::try_from(sheltered).map_err(|_| StoreError::OutOfRange {
            path: self.path.clone(),
            what: "sheltered count",
            value: sheltered,
        })?;
        self.conn
            .prepare_cached(
                "INSERT INTO sheltered (town, sheltered, updated) VALUES (?1, ?2, ?3)
                 ON CONFLICT (town) DO UPDATE
                 SET sheltered = excluded.sheltered, updated = excluded.updated",
            )
            .and_then(|mut stmt| stmt.execute(params![Slug(town), count, Millis(at)]))
            .map_err(self.sqlite("save the sheltered count"))?;
        Ok(())
    }

    /// The newest `limit` rejects, newest first.
    pub fn recent_rejects(&self, limit: usize) -> Result<Vec<RejectRecord>, StoreError> {
        self.rows(
            "SELECT id, at, topic, reason, detail, payload, payload_len
             FROM rejects ORDER BY id DESC LIMIT ?1",
            [Limit(limit)],
            "load rejects",
        )
    }

    /// Rejects per reason since the file was created, including those the bounded
    /// reject log no longer holds; sorted by reason.
    pub fn reject_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows: Vec<ReasonCount> = self.rows(
            "SELECT reason, n FROM reject_counts ORDER BY reason",
            [],
            "load reject counts",
        )?;
        Ok(rows.into_iter().map(|r| (r.reason, r.n)).collect())
    }

    /// A facility's readings measured in `from..to`, oldest first, at most `limit`.
    /// Scans every reading in the range (history is keyed by time first): meant for
    /// hours, not months.
    pub fn readings(
        &self,
        facility: &FacilityId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<StoredReading>, StoreError> {
        self.rows(
            "SELECT facility, ts, seq, received, body, source, entered_by FROM readings
             WHERE ts >= ?2 AND ts < ?3 AND facility = ?1
             ORDER BY ts LIMIT ?4",
            params![Slug(facility), Millis(from), Millis(to), Limit(limit)],
            "load readings",
        )
    }

    /// Readings held, all facilities together. Counts every row: for tests and tools,
    /// not for a hot path.
    pub fn count_readings(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM readings")
            .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
            .map_err(self.sqlite("count readings"))?;
        // count(*) is never negative.
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn sqlite(&self, action: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        sqlite_error(&self.path, action)
    }
}

impl FromRow for FacilitySnapshot {
    const TABLE: &'static str = "facility_state";
    const KEY: &'static [&'static str] = &["facility"];

    fn from_row(row: &Columns<'_, '_>) -> Result<Self, RowError> {
        let facility: String = row.get("facility")?;
        let json: String = row.get("snapshot")?;
        let snapshot: FacilitySnapshot = serde_json::from_str(&json)
            .map_err(|e| RowError::Corrupt(format!("snapshot is not valid: {e}")))?;
        if snapshot.facility.as_str() != facility {
            return Err(RowError::Corrupt(format!(
                "snapshot is of facility {}",
                snapshot.facility
            )));
        }
        Ok(snapshot)
    }
}

impl FromRow for StoredReading {
    const TABLE: &'static str = "readings";
    const KEY: &'static [&'static str] = &["facility", "ts"];

    fn from_row(row: &Columns<'_, '_>) -> Result<Self, RowError> {
        Ok(StoredReading {
            facility: row.get::<Slug<FacilityId>>("facility")?.0,
            ts: row.get::<Millis>("ts")?.0,
            seq: row.get::<Option<Seq>>("seq")?.map(|s| s.0),
            received_at: row.get::<Millis>("received")?.0,
            body: row.json("body")?,
            source: ReadingSource::from_columns(row)?,
        })
    }
}

/// The `replay_from` row of `ledger_meta`.
struct ReplayMark(DateTime<Utc>);

impl FromRow for ReplayMark {
    const TABLE: &'static str = "ledger_meta";
    const KEY: &'static [&'static str] = &["key"];

    fn from_row(row: &Columns<'_, '_>) -> Result<Self, RowError> {
        Ok(ReplayMark(row.get::<Millis>("value")?.0))
    }
}

/// A `sheltered` row.
struct Sheltered {
    town: TownId,
    count: u64,
}

impl FromRow for Sheltered {
    const TABLE: &'static str = "sheltered";
    const KEY: &'static [&'static str] = &["town"];

    fn from_row(row: &Columns<'_, '_>) -> Result<Self, RowError> {
        Ok(Sheltered {
            town: row.get::<Slug<TownId>>("town")?.0,
            count: row.get::<Count>("sheltered")?.0,
        })
    }
}

/// A `reject_counts` row.
struct ReasonCount {
    reason: String,
    n: u64,
}

impl FromRow for ReasonCount {
    const TABLE: &'static str = "reject_counts";
    const KEY: &'static [&'static str] = &["reason"];

    fn from_row(row: &Columns<'_, '_>) -> Result<Self, RowError> {
        Ok(ReasonCount {
            reason: row.get("reason")?,
            n: row.get::<Count>("n")?.0,
        })
    }
}

/// One transaction of the ingest writer: readings, snapshots and rejects of a batch of
/// MQTT messages, all or nothing. Dropping it without [`WriteBatch::commit`] rolls back.
#[derive(Debug)]
pub struct WriteBatch<'s> {
    tx: rusqlite::Transaction<'s>,
    path: &'s Path,
    max_rejects: usize,
    /// Whether to trim the reject log at commit.
    rejects_added: bool,
    /// [`StoreOptions::influx_queue`].
    influx_queue: bool,
}

impl WriteBatch<'_> {
    /// Adds a gateway's `reading` (validated against `registry`) to history. Returns
    /// false when a reading of the same facility with the same `ts` is already stored: a
    /// QoS 1 redelivery or a gateway resending, which is acknowledged and not stored
    /// again.
    pub fn insert_reading(
        &mut self,
        registry: &Registry,
        reading: &Reading,
        received_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.insert_reading_from(registry, reading, received_at, &ReadingSource::Gateway)
    }

    /// Adds `reading` to history with where it came from: a gateway's, or a count
    /// entered by hand. A duplicate (same facility and `ts`) is not stored again,
    /// whatever its source: the first one stored stays, as for a gateway resending.
    pub fn insert_reading_from(
        &mut self,
        registry: &Registry,
        reading: &Reading,
        received_at: DateTime<Utc>,
        source: &ReadingSource,
    ) -> Result<bool, StoreError> {
        let facility = registry.facility(reading.facility).id.as_str();
        let body =
            body::encode(registry, &reading.observation).map_err(|cause| StoreError::Encode {
                path: self.path.to_owned(),
                what: "reading body",
                cause,
            })?;
        let inserted = self
            .tx
            .prepare_cached(
                "INSERT INTO readings (facility, ts, seq, received, body, source, entered_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (ts, facility) DO NOTHING",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    facility,
                    Millis(reading.ts),
                    reading.seq.map(Seq),
                    Millis(received_at),
                    body,
                    source.as_str(),
                    source.entered_by(),
                ])
            })
            .map_err(sqlite_error(self.path, "insert reading"))?;
        if inserted == 1 && self.influx_queue {
            // Only a reading stored for the first time: a duplicate's lines are queued
            // already, so InfluxDB gets each reading once.
            let enqueued = Millis(received_at);
            for line in crate::influx::line::reading_lines(registry, reading, source) {
                crate::influx::queue::insert(&self.tx, &line, enqueued)
                    .map_err(sqlite_error(self.path, "enqueue an InfluxDB line"))?;
            }
        }
        Ok(inserted == 1)
    }

    /// Records that readings from `ts` on were applied to the ledger but their
    /// facilities' snapshots are not saved yet: a start-up replays stored readings
    /// from the earliest such `ts` ([`Store::replay_from`]).
    pub fn mark_unsaved_since(&mut self, ts: DateTime<Utc>) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "INSERT INTO ledger_meta (key, value) VALUES ('replay_from', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = min(value, excluded.value)",
            )
            .and_then(|mut stmt| stmt.execute([Millis(ts)]))
            .map_err(sqlite_error(self.path, "mark unsaved ledger state"))?;
        Ok(())
    }

    /// Records that every facility the ledger changed has its snapshot saved (in this
    /// batch or before): nothing to replay.
    pub fn mark_snapshots_saved(&mut self) -> Result<(), StoreError> {
        self.tx
            .prepare_cached("DELETE FROM ledger_meta WHERE key = 'replay_from'")
            .and_then(|mut stmt| stmt.execute([]))
            .map_err(sqlite_error(self.path, "mark ledger state saved"))?;
        Ok(())
    }

    /// Saves a facility's live state, replacing what was saved before.
    pub fn save_snapshot(&mut self, snapshot: &FacilitySnapshot) -> Result<(), StoreError> {
        let json = serde_json::to_string(snapshot).map_err(|cause| StoreError::Encode {
            path: self.path.to_owned(),
            what: "facility snapshot",
            cause,
        })?;
        self.tx
            .prepare_cached(
                "INSERT INTO facility_state (facility, snapshot, updated) VALUES (?1, ?2, ?3)
                 ON CONFLICT (facility) DO UPDATE
                 SET snapshot = excluded.snapshot, updated = excluded.updated",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![Slug(&snapshot.facility), json, Millis(Utc::now())])
            })
            .map_err(sqlite_error(self.path, "save facility state"))?;
        Ok(())
    }

    /// Adds a reject to the log and counts it under its reason. Topic, detail and
    /// payload are cut to their `MAX_REJECT_*` sizes whatever the caller built.
    pub fn insert_reject(&mut self, reject: &RejectRecord) -> Result<(), StoreError> {
        let action = "insert reject";
        let payload_len = i64::try_from(reject.payload_len).unwrap_or(i64::MAX);
        self.tx
            .prepare_cached(
                "INSERT INTO rejects (at, topic, reason, detail, payload, payload_len)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    Millis(reject.at),
                    cut(&reject.topic, MAX_REJECT_TOPIC),
                    reject.reason,
                    cut(&reject.detail, MAX_REJECT_DETAIL),
                    cut(&reject.payload, MAX_REJECT_PAYLOAD),
                    payload_len,
                ])
            })
            .map_err(sqlite_error(self.path, action))?;
        self.tx
            .prepare_cached(
                "INSERT INTO reject_counts (reason, n) VALUES (?1, 1)
                 ON CONFLICT (reason) DO UPDATE SET n = n + 1",
            )
            .and_then(|mut stmt| stmt.execute([&reject.reason]))
            .map_err(sqlite_error(self.path, "count reject"))?;
        self.rejects_added = true;
        Ok(())
    }

    /// Commits the batch. When this returns, the batch survives a killed process.
    pub fn commit(self) -> Result<(), StoreError> {
        if self.rejects_added {
            trim_rejects(&self.tx, self.max_rejects)
                .map_err(sqlite_error(self.path, "trim the reject log"))?;
        }
        self.tx
            .commit()
            .map_err(sqlite_error(self.path, "commit a write batch"))
    }
}

/// Deletes the oldest rejects beyond `max_rejects`. Ids grow by one per insert and only
/// a prefix is ever deleted, so "id ≤ newest − max" is exactly the excess, found through
/// the primary key without counting rows.
fn trim_rejects(conn: &Connection, max_rejects: usize) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM rejects WHERE id <= (SELECT max(id) FROM rejects) - ?1")?
        .execute([Limit(max_rejects)])
}

/// `s` cut to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

pub(crate) fn sqlite_error(
    path: &Path,
    action: &'static str,
) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |cause| StoreError::Sqlite {
        path: path.to_owned(),
        action,
        cause,
    }
}

/// Like [`sqlite_error`], but names the usual cause of failing to open: a file that is
/// not a database (a wrong path in the config, or a damaged header).
pub(crate) fn open_error(
    path: &Path,
    action: &'static str,
) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |cause| {
        if cause.sqlite_error_code() == Some(ErrorCode::NotADatabase) {
            StoreError::NotADatabase {
                path: path.to_owned(),
            }
        } else {
            StoreError::Sqlite {
                path: path.to_owned(),
                action,
                cause,
            }
        }
    }
}
