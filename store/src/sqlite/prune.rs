//! Retention, one bounded chunk at a time, for [`crate::maintenance`]: each call is one
//! short `BEGIN IMMEDIATE` transaction that deletes at most `limit` rows of one table
//! and returns how many it deleted, so the caller can let the ingest writer in between
//! calls and loop until a call deletes fewer than `limit`.
//!
//! What may go, table by table:
//! - `readings` measured before the cutoff (a prefix of the `(ts, facility)` key);
//! - `rejects` beyond the newest `max_rejects` (their counts stay in `reject_counts`);
//! - `outbox` rows that are `sent` or `failed` and were last touched before the cutoff;
//!   `pending` rows are never touched, whatever their age;
//! - `alerts` resolved before the cutoff, with their ack (its columns are the alert's),
//!   unless the engine still has something to say about them (`notify_event`,
//!   `escalated_from`: the rows `load_live_alerts` resumes from) or a pending
//!   notification names them;
//! - `silences` that ended before the cutoff;
//! - `audit` entries recorded before the cutoff (`[store] audit_retention`, long by
//!   default: the record of who did what), with their `audit_towns` rows.
//!
//! Ids are `INTEGER PRIMARY KEY` without `AUTOINCREMENT`: SQLite gives a new row
//! `max(id) + 1`, so deleting the newest row would hand its id to the next one. An id
//! names an alert or a silence in the API and in outbox dedup keys (`{alert id}.{seq}`),
//! so the newest row of `alerts`, `silences` and `outbox` is always kept, and no id is
//! ever reused.

use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, ErrorCode, TransactionBehavior, params};

use super::{Limit, Millis, sqlite_error};
use crate::{Store, StoreError};

/// One table's retention: what [`Store::prune_chunk`] deletes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PruneTable {
    /// Readings measured before the cutoff.
    Readings,
    /// Sent or failed notifications last touched before the cutoff.
    Outbox,
    /// Resolved alerts (with their acks) resolved before the cutoff.
    Alerts,
    /// Silences that ended before the cutoff.
    Silences,
    /// Audit entries recorded before the cutoff (their town rows follow by trigger).
    Audit,
}

impl PruneTable {
    pub fn as_str(self) -> &'static str {
        match self {
            PruneTable::Readings => "readings",
            PruneTable::Outbox => "outbox",
            PruneTable::Alerts => "alerts",
            PruneTable::Silences => "silences",
            PruneTable::Audit => "audit",
        }
    }

    /// The `DELETE` of at most `?2` rows older than `?1` (epoch ms).
    fn delete_sql(self) -> &'static str {
        match self {
            // The key is (ts, facility): the subquery walks a prefix of it.
            PruneTable::Readings => {
                "DELETE FROM readings WHERE (ts, facility) IN (
                    SELECT ts, facility FROM readings WHERE ts < ?1 ORDER BY ts LIMIT ?2)"
            }
            // A failed row's last attempt was due at `next_attempt`; a sent row has
            // `sent_at`. `outbox_state (state, id)` finds the candidates.
            PruneTable::Outbox => {
                "DELETE FROM outbox WHERE id IN (
                    SELECT id FROM outbox
                    WHERE state IN ('sent', 'failed')
                      AND max(created, next_attempt, coalesce(sent_at, 0)) < ?1
                      AND id < (SELECT max(id) FROM outbox)
                    ORDER BY id LIMIT ?2)"
            }
            // Pending notifications are few (the `outbox_due` index holds them), so
            // the NOT EXISTS costs a short scan per candidate.
            PruneTable::Alerts => {
                "DELETE FROM alerts WHERE id IN (
                    SELECT id FROM alerts AS a
                    WHERE state = 'resolved' AND resolved_at < ?1
                      AND notify_event IS NULL AND escalated_from IS NULL
                      AND id < (SELECT max(id) FROM alerts)
                      AND NOT EXISTS (
                          SELECT 1 FROM outbox, json_each(outbox.alert_ids) AS named
                          WHERE outbox.state = 'pending' AND named.value = a.id)
                    ORDER BY id LIMIT ?2)"
            }
            PruneTable::Silences => {
                "DELETE FROM silences WHERE id IN (
                    SELECT id FROM silences
                    WHERE until < ?1 AND id < (SELECT max(id) FROM silences)
                    ORDER BY id LIMIT ?2)"
            }
            // Entries are written in time order, so `audit_at` walks the oldest; the
            // newest is kept so no id is reused.
            PruneTable::Audit => {
                "DELETE FROM audit WHERE id IN (
                    SELECT id FROM audit
                    WHERE at < ?1 AND id < (SELECT max(id) FROM audit)
                    ORDER BY at LIMIT ?2)"
            }
        }
    }
}

/// `PRAGMA wal_checkpoint`'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Another connection kept the checkpoint from finishing (a reader on an older
    /// snapshot, a writer, or a checkpoint of its own).
    pub blocked: bool,
    /// Frames in the WAL, and how many of them are now in the database file.
    pub wal_frames: u64,
    pub checkpointed_frames: u64,
}

impl Checkpoint {
    /// Every frame of the WAL is in the database file: the next write starts the WAL
    /// over (and a TRUNCATE checkpoint has left it empty).
    pub fn complete(&self) -> bool {
        !self.blocked && self.checkpointed_frames >= self.wal_frames
    }
}

/// How hard a checkpoint tries (SQLite's modes of `wal_checkpoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointMode {
    /// Copies what it can without waiting for or blocking anyone.
    Passive,
    /// Waits (the busy timeout) for readers on old snapshots, then copies everything
    /// and truncates the WAL file to zero bytes. Blocks writers meanwhile.
    Truncate,
}

impl Store {
    /// Deletes at most `limit` rows of `table` older than `cutoff`, in one short
    /// transaction; returns how many. Fewer than `limit`: nothing more is due.
    pub fn prune_chunk(
        &mut self,
        table: PruneTable,
        cutoff: DateTime<Utc>,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_error(&path, "start pruning"))?;
        let deleted = tx
            .prepare_cached(table.delete_sql())
            .and_then(|mut stmt| stmt.execute(params![Millis(cutoff), Limit(limit)]))
            .map_err(sqlite_error(&path, prune_action(table)))?;
        tx.commit().map_err(sqlite_error(&path, "commit pruning"))?;
        Ok(deleted)
    }

    /// Deletes at most `limit` of the oldest rejects beyond the newest `max_rejects`;
    /// returns how many. Their per-reason counts stay.
    pub fn prune_rejects_chunk(
        &mut self,
        max_rejects: usize,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_error(&path, "start pruning"))?;
        let deleted = tx
            .prepare_cached(
                "DELETE FROM rejects WHERE id IN (
                    SELECT id FROM rejects WHERE id <= (SELECT max(id) FROM rejects) - ?1
                    ORDER BY id LIMIT ?2)",
            )
            .and_then(|mut stmt| stmt.execute(params![Limit(max_rejects), Limit(limit)]))
            .map_err(sqlite_error(&path, "prune rejects"))?;
        tx.commit().map_err(sqlite_error(&path, "commit pruning"))?;
        Ok(deleted)
    }

    /// Runs a WAL checkpoint. A checkpoint kept from finishing by another connection is
    /// an answer (`blocked`), not an error: it is tried again later.
    pub fn checkpoint(&mut self, mode: CheckpointMode) -> Result<Checkpoint, StoreError> {
        let sql = match mode {
            CheckpointMode::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
            CheckpointMode::Truncate => "PRAGMA wal_checkpoint(TRUNCATE)",
        };
        checkpoint(&self.conn, sql).map_err(sqlite_error(&self.path, "checkpoint the WAL"))
    }

    /// Runs `f` with the busy timeout set to `timeout`, then puts the configured one
    /// back: a TRUNCATE checkpoint holds writers off while it waits for readers, so it
    /// should wait briefly and try again later rather than stall ingest.
    pub fn with_busy_timeout<T>(
        &mut self,
        timeout: std::time::Duration,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let configured = self.options.busy_timeout;
        self.conn
            .busy_timeout(timeout)
            .map_err(sqlite_error(&self.path, "set the busy timeout"))?;
        let result = f(self);
        let restored = self
            .conn
            .busy_timeout(configured)
            .map_err(sqlite_error(&self.path, "set the busy timeout"));
        let value = result?;
        restored?;
        Ok(value)
    }

    /// Bytes of the WAL file now (0 when there is none).
    pub fn wal_bytes(&self) -> u64 {
        wal_bytes(&self.path)
    }
}

fn prune_action(table: PruneTable) -> &'static str {
    match table {
        PruneTable::Readings => "prune readings",
        PruneTable::Outbox => "prune the outbox",
        PruneTable::Alerts => "prune resolved alerts",
        PruneTable::Silences => "prune expired silences",
        PruneTable::Audit => "prune old audit entries",
    }
}

fn checkpoint(conn: &Connection, sql: &str) -> rusqlite::Result<Checkpoint> {
    let answer = conn.query_row(sql, [], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, i64>(2)?,
        ))
    });
    match answer {
        // -1 frames: not in WAL mode, which `Store::open` rules out; read as none.
        Ok((busy, log, done)) => Ok(Checkpoint {
            blocked: busy != 0,
            wal_frames: u64::try_from(log).unwrap_or(0),
            checkpointed_frames: u64::try_from(done).unwrap_or(0),
        }),
        // Another connection's checkpoint is running, or the busy timeout ran out.
        Err(e) if matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseBusy)) => {
            Ok(Checkpoint {
                blocked: true,
                ..Checkpoint::default()
            })
        }
        Err(e) => Err(e),
    }
}

/// The size of `db`'s WAL file (`{db}-wal`), 0 when it does not exist.
pub fn wal_bytes(db: &Path) -> u64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(wal).map_or(0, |m| m.len())
}
