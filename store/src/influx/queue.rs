//! The disk-backed queue of lines for InfluxDB: the `influx_queue` table of the main
//! SQLite file (schema migration 2).
//!
//! Producers append rows (the ingest writer inside its batch, the sink's derived series
//! through [`Store::enqueue_influx_lines`], alerts through
//! [`crate::AlertBatch::enqueue_influx_line`]); the sink reads the oldest rows, sends
//! them and deletes them once InfluxDB accepted them. Only ever a prefix is deleted (a
//! batch sent, or the oldest rows over the bound), and SQLite hands out ids one above
//! the largest, one writer at a time, so the ids in the table stay contiguous: the depth
//! is `max(id) - min(id) + 1`, read from the primary key without counting rows.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, TransactionBehavior, params};

use crate::sqlite::{Columns, FromRow, Limit, Millis, RowError, sqlite_error};
use crate::{Store, StoreError};

/// One queued line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueuedLine {
    pub id: i64,
    pub line: String,
}

/// What the queue holds, for the sink's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct QueueState {
    pub depth: u64,
    /// When the oldest row was enqueued (epoch ms), if any.
    pub oldest_enqueued_ms: Option<i64>,
}

impl FromRow for QueuedLine {
    const TABLE: &'static str = "influx_queue";
    const KEY: &'static [&'static str] = &["id"];

    fn from_row(row: &Columns<'_, '_>) -> Result<Self, RowError> {
        Ok(QueuedLine {
            id: row.get("id")?,
            line: row.get("line")?,
        })
    }
}

/// The queue's first and last ids and when its oldest line was enqueued.
struct QueueBounds {
    first: i64,
    last: i64,
    enqueued: i64,
}

impl FromRow for QueueBounds {
    const TABLE: &'static str = "influx_queue";
    const KEY: &'static [&'static str] = &["first"];

    fn from_row(row: &Columns<'_, '_>) -> Result<Self, RowError> {
        Ok(QueueBounds {
            first: row.get("first")?,
            last: row.get("last")?,
            enqueued: row.get("enqueued")?,
        })
    }
}

pub(crate) fn insert(conn: &Connection, line: &str, enqueued: Millis) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO influx_queue (line, enqueued) VALUES (?1, ?2)")?
        .execute(params![line, enqueued])?;
    Ok(())
}

impl Store {
    /// Appends lines of line protocol to the InfluxDB queue in one transaction.
    pub fn enqueue_influx_lines(
        &mut self,
        lines: &[String],
        enqueued_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let action = "enqueue InfluxDB lines";
        let path = self.path().to_owned();
        let tx = self
            .conn_mut()
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_error(&path, action))?;
        let enqueued = Millis(enqueued_at);
        for line in lines {
            insert(&tx, line, enqueued).map_err(sqlite_error(&path, action))?;
        }
        tx.commit().map_err(sqlite_error(&path, action))
    }

    /// Lines waiting in the InfluxDB queue.
    pub fn influx_queue_depth(&self) -> Result<u64, StoreError> {
        Ok(self.influx_queue_state()?.depth)
    }

    /// The oldest `limit` lines waiting to be sent, oldest first (what an operator
    /// looks at when InfluxDB refuses a batch).
    pub fn influx_queue_lines(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        Ok(self
            .influx_queue_head(limit)?
            .into_iter()
            .map(|q| q.line)
            .collect())
    }

    /// The oldest `limit` lines, oldest first.
    pub(crate) fn influx_queue_head(&self, limit: usize) -> Result<Vec<QueuedLine>, StoreError> {
        self.rows(
            "SELECT id, line FROM influx_queue ORDER BY id LIMIT ?1",
            [Limit(limit)],
            "read the InfluxDB queue",
        )
    }

    pub(crate) fn influx_queue_state(&self) -> Result<QueueState, StoreError> {
        let bounds: Option<QueueBounds> = self.first_row(
            "SELECT q.id AS first, (SELECT max(id) FROM influx_queue) AS last,
                    q.enqueued AS enqueued
             FROM influx_queue q ORDER BY q.id LIMIT 1",
            [],
            "measure the InfluxDB queue",
        )?;
        Ok(match bounds {
            None => QueueState::default(),
            Some(b) => QueueState {
                depth: u64::try_from(b.last - b.first + 1).unwrap_or(0),
                oldest_enqueued_ms: Some(b.enqueued),
            },
        })
    }

    /// Deletes the rows up to and including `last_id`: a batch InfluxDB accepted.
    pub(crate) fn influx_queue_delete_through(&mut self, last_id: i64) -> Result<u64, StoreError> {
        let deleted = self
            .conn()
            .prepare_cached("DELETE FROM influx_queue WHERE id <= ?1")
            .and_then(|mut stmt| stmt.execute([last_id]))
            .map_err(sqlite_error(self.path(), "delete sent InfluxDB lines"))?;
        Ok(deleted as u64)
    }

    /// Deletes the oldest rows beyond `max_rows`, returning how many went.
    pub(crate) fn influx_queue_trim(&mut self, max_rows: u64) -> Result<u64, StoreError> {
        let deleted = self
            .conn()
            .prepare_cached(
                "DELETE FROM influx_queue
                 WHERE id <= (SELECT max(id) FROM influx_queue) - ?1",
            )
            .and_then(|mut stmt| stmt.execute([i64::try_from(max_rows).unwrap_or(i64::MAX)]))
            .map_err(sqlite_error(self.path(), "trim the InfluxDB queue"))?;
        Ok(deleted as u64)
    }
}
