//! Drills (docs/design.md#drills): exercises over a scope for a while. The alert engine
//! writes them in its own transactions (a drill starts and ends with the alert changes
//! it causes, and with its audit entry); the API reads them on its own connection.

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::alerts::AlertBatch;
use super::{Columns, FromRow, Millis, RowError, sqlite_error};
use crate::{NewAudit, Store, StoreError};

/// A drill as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillRow {
    /// Assigned by [`AlertBatch::insert_drill`]; ignored there.
    pub id: i64,
    /// `city`, `district:<id>`, `cluster:<id>` or `towns:<id>,<id>`.
    pub scope: String,
    pub started: DateTime<Utc>,
    /// When it ends by itself.
    pub until: DateTime<Utc>,
    /// When an admin ended it early, and who.
    pub ended: Option<(DateTime<Utc>, String)>,
    pub started_by: String,
    pub note: String,
}

impl DrillRow {
    /// When it is over: `until`, or earlier when ended early.
    pub fn end(&self) -> DateTime<Utc> {
        self.ended
            .as_ref()
            .map_or(self.until, |(at, _)| *at.min(&self.until))
    }

    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.started <= now && now < self.end()
    }
}

const DRILL_COLUMNS: &str = "id, scope, started, until, ended, ended_by, started_by, note";

impl Store {
    /// Drills newest first: those not over at `now`, or every drill with `None`.
    pub fn list_drills(&self, now: Option<DateTime<Utc>>) -> Result<Vec<DrillRow>, StoreError> {
        self.rows(
            &format!(
                "SELECT {DRILL_COLUMNS} FROM drills
                 WHERE ?1 IS NULL OR (until > ?1 AND (ended IS NULL OR ended > ?1))
                 ORDER BY id DESC"
            ),
            [now.map(Millis)],
            "list drills",
        )
    }
}

/// Who did what to a drill, for its audit entry.
struct DrillAudit<'a> {
    at: DateTime<Utc>,
    actor: &'a str,
    action: &'a str,
    towns: &'a [String],
    /// Where the request came from, as every API change's audit entry says.
    remote: &'a str,
}

impl AlertBatch<'_> {
    /// Inserts `drill` (its `id` is ignored) with its audit entry naming `towns` (the
    /// towns of its scope; none for the whole city) and `remote` (where the request
    /// came from); returns the new id.
    pub fn insert_drill(
        &mut self,
        drill: &DrillRow,
        towns: &[String],
        remote: &str,
    ) -> Result<i64, StoreError> {
        self.tx
            .prepare_cached(
                "INSERT INTO drills (scope, started, until, started_by, note)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    drill.scope,
                    Millis(drill.started),
                    Millis(drill.until),
                    drill.started_by,
                    drill.note,
                ])
            })
            .map_err(sqlite_error(self.path, "insert a drill"))?;
        let id = self.tx.last_insert_rowid();
        let detail = format!(
            "drill {id}: {} until {}: {}",
            drill.scope, drill.until, drill.note
        );
        let entry = DrillAudit {
            at: drill.started,
            actor: &drill.started_by,
            action: "drill_start",
            towns,
            remote,
        };
        self.audit_drill(entry, detail)?;
        Ok(id)
    }

    /// Ends drill `id` at `at` (before its `until`), with its audit entry (`remote`:
    /// where the request came from). False when there is no such drill or it is over
    /// already.
    pub fn end_drill(
        &mut self,
        id: i64,
        at: DateTime<Utc>,
        by: &str,
        remote: &str,
        towns: &[String],
    ) -> Result<bool, StoreError> {
        let changed = self
            .tx
            .prepare_cached(
                "UPDATE drills SET ended = ?2, ended_by = ?3
                 WHERE id = ?1 AND ended IS NULL AND until > ?2",
            )
            .and_then(|mut stmt| stmt.execute(params![id, Millis(at), by]))
            .map_err(sqlite_error(self.path, "end a drill"))?;
        if changed > 0 {
            let detail = format!("drill {id} ended early");
            let entry = DrillAudit {
                at,
                actor: by,
                action: "drill_end",
                towns,
                remote,
            };
            self.audit_drill(entry, detail)?;
        }
        Ok(changed > 0)
    }

    /// An entry in the audit log (via `token`: drills are started and ended through
    /// the API).
    fn audit_drill(&mut self, what: DrillAudit<'_>, detail: String) -> Result<(), StoreError> {
        let entry = NewAudit {
            at: what.at,
            actor: what.actor.to_owned(),
            via: "token".to_owned(),
            action: what.action.to_owned(),
            towns: what.towns.to_vec(),
            detail,
            remote: what.remote.to_owned(),
            ..NewAudit::default()
        };
        super::audit::insert_audit(&self.tx, self.path, &entry)?;
        Ok(())
    }
}

impl FromRow for DrillRow {
    const TABLE: &'static str = "drills";
    const KEY: &'static [&'static str] = &["id"];

    fn from_row(row: &Columns<'_, '_>) -> Result<Self, RowError> {
        let ended = match (
            row.get::<Option<Millis>>("ended")?,
            row.get::<Option<String>>("ended_by")?,
        ) {
            (Some(at), Some(by)) => Some((at.0, by)),
            (None, None) => None,
            _ => return Err(RowError::Corrupt("ended without who ended it".into())),
        };
        Ok(DrillRow {
            id: row.get("id")?,
            scope: row.get("scope")?,
            started: row.get::<Millis>("started")?.0,
            until: row.get::<Millis>("until")?.0,
            ended,
            started_by: row.get("started_by")?,
            note: row.get("note")?,
        })
    }
}
