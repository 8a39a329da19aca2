//! The audit log (docs/design.md#acknowledging-from-a-phone): who did what to which
//! alerts, how and when. Rows are only ever added: an entry, once written, is the
//! record. The API writes them (one insert per action, on its own connection) and lists
//! them to admins.

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::{Columns, FromRow, Limit, Millis, RowError, sqlite_error};
use crate::{Store, StoreError};

/// One action to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAudit {
    pub at: DateTime<Utc>,
    /// Who: a contact's name (links, SMS) or a token's name.
    pub actor: String,
    /// How: `link`, `sms` or `token`.
    pub via: String,
    /// What: `ack`, `drill_start`, `drill_end`, `transfer`.
    pub action: String,
    /// The alerts it changed.
    pub alert_ids: Vec<i64>,
    /// Anything else worth keeping (the SMS's text, a note), for people.
    pub detail: String,
}

/// A recorded action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub via: String,
    pub action: String,
    pub alert_ids: Vec<i64>,
    pub detail: String,
}

impl Store {
    /// Records `entry` and returns its id.
    pub fn record_audit(&mut self, entry: &NewAudit) -> Result<i64, StoreError> {
        let ids = serde_json::to_string(&entry.alert_ids).unwrap_or_else(|_| "[]".into());
        let path = self.path().to_owned();
        self.conn()
            .prepare_cached(
                "INSERT INTO audit (at, actor, via, action, alert_ids, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    Millis(entry.at),
                    entry.actor,
                    entry.via,
                    entry.action,
                    ids,
                    entry.detail
                ])
            })
            .map_err(sqlite_error(&path, "record an audit entry"))?;
        Ok(self.conn().last_insert_rowid())
    }

    /// Audit entries, newest first: at most `limit`, with an id below `before_id`.
    pub fn audit(&self, before_id: Option<i64>, limit: usize) -> Result<Vec<AuditRow>, StoreError> {
        self.rows(
            "SELECT id, at, actor, via, action, alert_ids, detail FROM audit
             WHERE (?1 IS NULL OR id < ?1) ORDER BY id DESC LIMIT ?2",
            params![before_id, Limit(limit)],
            "list the audit log",
        )
    }

    /// The newest notification of `channel` to `recipient`: what "the last message"
    /// means to someone who replies to it.
    pub fn last_notification_to(
        &self,
        channel: &str,
        recipient: &str,
    ) -> Result<Option<super::OutboxRow>, StoreError> {
        self.first_row(
            &format!(
                "SELECT {} FROM outbox WHERE channel = ?1 AND recipient = ?2
                 ORDER BY id DESC LIMIT 1",
                super::alerts::OUTBOX_COLUMNS
            ),
            params![channel, recipient],
            "find the last notification to a recipient",
        )
    }
}

impl FromRow for AuditRow {
    const TABLE: &'static str = "audit";
    const KEY: &'static [&'static str] = &["id"];

    fn from_row(row: &Columns<'_, '_>) -> Result<Self, RowError> {
        let alert_ids: String = row.get("alert_ids")?;
        Ok(AuditRow {
            id: row.get("id")?,
            at: row.get::<Millis>("at")?.0,
            actor: row.get("actor")?,
            via: row.get("via")?,
            action: row.get("action")?,
            alert_ids: serde_json::from_str(&alert_ids).map_err(|e| {
                RowError::Corrupt(format!("alert_ids is not a JSON list of ids: {e}"))
            })?,
            detail: row.get("detail")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::StoreOptions;

    #[test]
    fn audit_entries_are_kept_and_listed_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let at = Utc.with_ymd_and_hms(2026, 11, 24, 6, 0, 0).unwrap();
        let mut store = Store::open(&path, StoreOptions::default()).unwrap();
        for (actor, via, ids) in [("李伟", "link", vec![3, 4]), ("Li Wei", "sms", vec![5])] {
            store
                .record_audit(&NewAudit {
                    at,
                    actor: actor.into(),
                    via: via.into(),
                    action: "ack".into(),
                    alert_ids: ids,
                    detail: String::new(),
                })
                .unwrap();
        }
        drop(store);
        let store = Store::open(&path, StoreOptions::default()).unwrap();
        let rows = store.audit(None, 10).unwrap();
        let got: Vec<(&str, &str, &[i64])> = rows
            .iter()
            .map(|r| (r.actor.as_str(), r.via.as_str(), &r.alert_ids[..]))
            .collect();
        assert_eq!(
            got,
            [("Li Wei", "sms", &[5][..]), ("李伟", "link", &[3, 4][..])]
        );
        assert_eq!(rows[0].at, at);
        assert_eq!(store.audit(Some(rows[0].id), 10).unwrap().len(), 1);
    }
}
