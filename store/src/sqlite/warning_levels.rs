//! Warning levels (预警等级, docs/design.md#warning-levels): the history of the levels an
//! admin set over a scope. The API writes a level, and ends the ones it replaces, in one
//! transaction on its own connection; at start the ledger takes those still in force.
//! Kept forever, like the audit log: a few rows a season.

use chrono::{DateTime, Utc};
use rusqlite::{TransactionBehavior, params};

use reserve::ledger::{WarningScope, WarningSet};
use reserve::registry::WarningLevel;

use super::{Columns, FromRow, Millis, RowError, sqlite_error};
use crate::{Store, StoreError};

/// A level as stored. `level` and `scope_kind` are the domain's words
/// (`reserve::registry::WarningLevel`, `reserve::ledger::WarningScope`), checked by the
/// table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarningLevelRow {
    /// Assigned by [`Store::set_warning_level`]; ignored there.
    pub id: i64,
    /// `blue`, `yellow`, `orange` or `red`.
    pub level: String,
    /// `city`, `district`, `cluster` or `towns`.
    pub scope_kind: String,
    /// The district's, cluster's or towns' ids, comma-separated; empty for the city.
    pub scope_ids: String,
    pub reason: String,
    pub starts_at: DateTime<Utc>,
    /// When it ends by itself; `None`: until ended.
    pub ends_at: Option<DateTime<Utc>>,
    /// The name of the token that set it.
    pub set_by: String,
    pub set_at: DateTime<Utc>,
    /// When it was ended early (by `none`) or replaced, and by whom.
    pub ended: Option<(DateTime<Utc>, String)>,
    /// The level that took its place, when one did.
    pub replaced_by: Option<i64>,
}

impl WarningLevelRow {
    /// When it stops being in force: the earlier of its end and when it was ended.
    pub fn end(&self) -> Option<DateTime<Utc>> {
        match (self.ends_at, &self.ended) {
            (Some(end), Some((at, _))) => Some(end.min(*at)),
            (end, ended) => end.or(ended.as_ref().map(|(at, _)| *at)),
        }
    }

    pub fn in_force(&self, now: DateTime<Utc>) -> bool {
        self.starts_at <= now && self.end().is_none_or(|end| now < end)
    }

    /// The level as the ledger holds it while it may be in force; `None` for a level
    /// or scope this build does not know (the table's checks make that a newer build's
    /// row).
    pub fn to_set(&self) -> Option<WarningSet> {
        Some(WarningSet {
            id: self.id,
            level: WarningLevel::parse(&self.level)?,
            scope: WarningScope::from_parts(&self.scope_kind, &self.scope_ids)?,
            reason: self.reason.clone(),
            since: self.starts_at,
            until: self.end(),
        })
    }
}

const COLUMNS: &str = "id, level, scope_kind, scope_ids, reason, starts_at, ends_at, set_by, \
                       set_at, ended_at, ended_by, replaced_by";

/// The most rows one history read returns: a few a season are written.
pub const WARNING_LEVEL_HISTORY_MAX: u32 = 1000;

impl Store {
    /// Levels newest first: those not over at `now` (in force, or starting later), or
    /// the newest [`WARNING_LEVEL_HISTORY_MAX`] of all with `None`.
    pub fn list_warning_levels(
        &self,
        now: Option<DateTime<Utc>>,
    ) -> Result<Vec<WarningLevelRow>, StoreError> {
        self.rows(
            &format!(
                "SELECT {COLUMNS} FROM warning_levels
                 WHERE ?1 IS NULL OR (ended_at IS NULL AND (ends_at IS NULL OR ends_at > ?1))
                 ORDER BY id DESC LIMIT ?2"
            ),
            params![now.map(Millis), WARNING_LEVEL_HISTORY_MAX],
            "list warning levels",
        )
    }

    /// Stores `level` (its `id`, `ended` and `replaced_by` are ignored) and ends the
    /// levels `replaces` names that are still open, as replaced by it, at its
    /// `set_at`; both or neither. Returns the new id.
    pub fn set_warning_level(
        &mut self,
        level: &WarningLevelRow,
        replaces: &[i64],
    ) -> Result<i64, StoreError> {
        let path = self.path().to_owned();
        let tx = self
            .conn_mut()
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_error(&path, "start setting a warning level"))?;
        tx.execute(
            "INSERT INTO warning_levels
                 (level, scope_kind, scope_ids, reason, starts_at, ends_at, set_by, set_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                level.level,
                level.scope_kind,
                level.scope_ids,
                level.reason,
                Millis(level.starts_at),
                level.ends_at.map(Millis),
                level.set_by,
                Millis(level.set_at),
            ],
        )
        .map_err(sqlite_error(&path, "insert a warning level"))?;
        let id = tx.last_insert_rowid();
        for &old in replaces {
            tx.execute(
                "UPDATE warning_levels SET ended_at = ?2, ended_by = ?3, replaced_by = ?4
                 WHERE id = ?1 AND ended_at IS NULL",
                params![old, Millis(level.set_at), level.set_by, id],
            )
            .map_err(sqlite_error(&path, "replace a warning level"))?;
        }
        tx.commit()
            .map_err(sqlite_error(&path, "commit a warning level"))?;
        Ok(id)
    }

    /// Ends the levels `ids` names that are still open, at `at`, by `by`; returns the
    /// ids it ended.
    pub fn end_warning_levels(
        &mut self,
        ids: &[i64],
        at: DateTime<Utc>,
        by: &str,
    ) -> Result<Vec<i64>, StoreError> {
        let path = self.path().to_owned();
        let tx = self
            .conn_mut()
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_error(&path, "start ending warning levels"))?;
        let mut ended = Vec::new();
        for &id in ids {
            let changed = tx
                .execute(
                    "UPDATE warning_levels SET ended_at = ?2, ended_by = ?3
                     WHERE id = ?1 AND ended_at IS NULL",
                    params![id, Millis(at), by],
                )
                .map_err(sqlite_error(&path, "end a warning level"))?;
            if changed > 0 {
                ended.push(id);
            }
        }
        tx.commit()
            .map_err(sqlite_error(&path, "commit ending warning levels"))?;
        Ok(ended)
    }
}

impl FromRow for WarningLevelRow {
    const TABLE: &'static str = "warning_levels";
    const KEY: &'static [&'static str] = &["id"];

    fn from_row(row: &Columns<'_, '_>) -> Result<Self, RowError> {
        let ended = match (
            row.get::<Option<Millis>>("ended_at")?,
            row.get::<Option<String>>("ended_by")?,
        ) {
            (Some(at), Some(by)) => Some((at.0, by)),
            (None, None) => None,
            _ => return Err(RowError::Corrupt("ended without who ended it".into())),
        };
        Ok(WarningLevelRow {
            id: row.get("id")?,
            level: row.get("level")?,
            scope_kind: row.get("scope_kind")?,
            scope_ids: row.get("scope_ids")?,
            reason: row.get("reason")?,
            starts_at: row.get::<Millis>("starts_at")?.0,
            ends_at: row.get::<Option<Millis>>("ends_at")?.map(|m| m.0),
            set_by: row.get("set_by")?,
            set_at: row.get::<Millis>("set_at")?.0,
            ended,
            replaced_by: row.get("replaced_by")?,
        })
    }
}
