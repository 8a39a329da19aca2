//! The audit log (docs/design.md#audit): who changed what, when, how and from where —
//! acknowledgements, silences, sheltered counts, counts by hand, transfers, drills,
//! registry reloads. Rows are only ever added (and pruned after `[store]
//! audit_retention`): an entry, once written, is the record. Each entry names the towns
//! it touched in `audit_towns`, so an officer can read their towns' entries; a
//! city-wide action names none and is for admins.

use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, TransactionBehavior, params};

use super::{Columns, FromRow, Limit, Millis, RowError, sqlite_error};
use crate::{Store, StoreError};

/// One action to record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewAudit {
    pub at: DateTime<Utc>,
    /// Who: a contact's name (links, SMS) or a token's name.
    pub actor: String,
    /// How: `link`, `sms`, `token` or `signal` (SIGHUP).
    pub via: String,
    /// What: `ack`, `silence`, `silence_end`, `sheltered`, `manual_reading`,
    /// `transfer`, `drill_start`, `drill_end`, `registry_reload`, …
    pub action: String,
    /// The towns (ids) it touched; none for a city-wide action.
    pub towns: Vec<String>,
    /// The alerts it changed.
    pub alert_ids: Vec<i64>,
    /// Anything else worth keeping (the SMS's text, a note, the figures), for people.
    pub detail: String,
    /// Where the request came from: the peer's address, and the address a proxy says
    /// it forwarded for (client-supplied, so kept as said, not trusted). Empty when
    /// not from the network.
    pub remote: String,
}

/// A recorded action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    pub entry: NewAudit,
}

/// Which entries [`Store::audit`] lists, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only entries that touched one of these towns; `None`: every entry.
    pub towns: Option<Vec<String>>,
    /// Only entries recorded at or after this.
    pub since: Option<DateTime<Utc>>,
    /// Page: only entries with an id below this.
    pub before_id: Option<i64>,
    pub limit: usize,
}

/// Inserts `entry` with its town rows on `conn` (inside the caller's transaction when
/// the entry belongs with another change, as a transfer's does); returns its id.
pub(super) fn insert_audit(
    conn: &Connection,
    path: &Path,
    entry: &NewAudit,
) -> Result<i64, StoreError> {
    let ids = serde_json::to_string(&entry.alert_ids).unwrap_or_else(|_| "[]".into());
    conn.prepare_cached(
        "INSERT INTO audit (at, actor, via, action, alert_ids, detail, remote)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            Millis(entry.at),
            entry.actor,
            entry.via,
            entry.action,
            ids,
            entry.detail,
            entry.remote
        ])
    })
    .map_err(sqlite_error(path, "record an audit entry"))?;
    let id = conn.last_insert_rowid();
    let mut towns = conn
        .prepare_cached("INSERT OR IGNORE INTO audit_towns (town, audit) VALUES (?1, ?2)")
        .map_err(sqlite_error(path, "record an audit entry's towns"))?;
    for town in &entry.towns {
        towns
            .execute(params![town, id])
            .map_err(sqlite_error(path, "record an audit entry's towns"))?;
    }
    Ok(id)
}

impl Store {
    /// Records `entry` and returns its id.
    pub fn record_audit(&mut self, entry: &NewAudit) -> Result<i64, StoreError> {
        let path = self.path().to_owned();
        let tx = self
            .conn_mut()
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_error(&path, "start an audit entry"))?;
        let id = insert_audit(&tx, &path, entry)?;
        tx.commit()
            .map_err(sqlite_error(&path, "commit an audit entry"))?;
        Ok(id)
    }

    /// Audit entries newest first, as `filter` says.
    pub fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
        let towns = filter
            .towns
            .as_ref()
            .map(|t| serde_json::to_string(t).unwrap_or_else(|_| "[]".into()));
        self.rows(
            "SELECT id, at, actor, via, action, alert_ids, detail, remote,
                    (SELECT json_group_array(town) FROM audit_towns WHERE audit = a.id)
                        AS towns
             FROM audit AS a
             WHERE (?1 IS NULL OR id < ?1)
               AND (?2 IS NULL OR at >= ?2)
               AND (?3 IS NULL OR id IN (SELECT audit FROM audit_towns
                                         WHERE town IN (SELECT value FROM json_each(?3))))
             ORDER BY id DESC LIMIT ?4",
            params![
                filter.before_id,
                filter.since.map(Millis),
                towns,
                Limit(filter.limit)
            ],
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
        let towns: String = row.get("towns")?;
        let mut towns: Vec<String> = serde_json::from_str(&towns)
            .map_err(|e| RowError::Corrupt(format!("towns is not a JSON list of ids: {e}")))?;
        towns.sort();
        Ok(AuditRow {
            id: row.get("id")?,
            entry: NewAudit {
                at: row.get::<Millis>("at")?.0,
                actor: row.get("actor")?,
                via: row.get("via")?,
                action: row.get("action")?,
                towns,
                alert_ids: serde_json::from_str(&alert_ids).map_err(|e| {
                    RowError::Corrupt(format!("alert_ids is not a JSON list of ids: {e}"))
                })?,
                detail: row.get("detail")?,
                remote: row.get("remote")?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::StoreOptions;

    fn page(before_id: Option<i64>) -> AuditFilter {
        AuditFilter {
            before_id,
            limit: 10,
            ..AuditFilter::default()
        }
    }

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
                    remote: "192.0.2.7:51234".into(),
                    ..NewAudit::default()
                })
                .unwrap();
        }
        drop(store);
        let store = Store::open(&path, StoreOptions::default()).unwrap();
        let rows = store.audit(&page(None)).unwrap();
        let got: Vec<(&str, &str, &[i64])> = rows
            .iter()
            .map(|r| {
                (
                    r.entry.actor.as_str(),
                    r.entry.via.as_str(),
                    &r.entry.alert_ids[..],
                )
            })
            .collect();
        assert_eq!(
            got,
            [("Li Wei", "sms", &[5][..]), ("李伟", "link", &[3, 4][..])]
        );
        assert_eq!(rows[0].entry.at, at);
        assert_eq!(rows[0].entry.remote, "192.0.2.7:51234");
        assert_eq!(store.audit(&page(Some(rows[0].id))).unwrap().len(), 1);
    }

    #[test]
    fn an_officer_lists_the_entries_of_their_towns_since_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db"), StoreOptions::default()).unwrap();
        let at = |h| Utc.with_ymd_and_hms(2026, 11, 24, h, 0, 0).unwrap();
        let entries = [
            (1, "transfer", vec!["dh", "js"]),
            (2, "sheltered", vec!["js"]),
            (3, "registry_reload", vec![]),
            (4, "manual_reading", vec!["dh"]),
        ];
        for (h, action, towns) in &entries {
            store
                .record_audit(&NewAudit {
                    at: at(*h),
                    actor: "li.wei".into(),
                    via: "token".into(),
                    action: (*action).into(),
                    towns: towns.iter().map(|t| (*t).to_owned()).collect(),
                    ..NewAudit::default()
                })
                .unwrap();
        }
        let actions = |towns: Option<&[&str]>, since: Option<u32>| -> Vec<String> {
            let filter = AuditFilter {
                towns: towns.map(|t| t.iter().map(|t| (*t).to_owned()).collect()),
                since: since.map(at),
                limit: 10,
                ..AuditFilter::default()
            };
            let rows = store.audit(&filter).unwrap();
            rows.into_iter().map(|r| r.entry.action).collect()
        };
        assert_eq!(actions(Some(&["js"]), None), ["sheltered", "transfer"]);
        assert_eq!(
            actions(Some(&["js", "dh"]), Some(2)),
            ["manual_reading", "sheltered"]
        );
        assert_eq!(
            actions(None, None),
            ["manual_reading", "registry_reload", "sheltered", "transfer"]
        );
        assert!(actions(Some(&[]), None).is_empty());
        let rows = store.audit(&page(None)).unwrap();
        assert_eq!(rows[3].entry.towns, ["dh", "js"]);
    }
}

#[cfg(test)]
mod retention {
    use chrono::TimeZone;

    use super::*;
    use crate::{PruneTable, StoreOptions};

    #[test]
    fn entries_older_than_the_retention_go_with_their_towns() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db"), StoreOptions::default()).unwrap();
        let day = |d| Utc.with_ymd_and_hms(2026, 11, d, 6, 0, 0).unwrap();
        for d in [1, 2, 20] {
            let entry = NewAudit {
                at: day(d),
                actor: "li.wei".into(),
                action: "sheltered".into(),
                towns: vec!["js".into()],
                ..NewAudit::default()
            };
            store.record_audit(&entry).unwrap();
        }
        assert_eq!(
            store.prune_chunk(PruneTable::Audit, day(10), 100).unwrap(),
            2
        );
        let filter = AuditFilter {
            towns: Some(vec!["js".into()]),
            limit: 10,
            ..AuditFilter::default()
        };
        let left: Vec<_> = store
            .audit(&filter)
            .unwrap()
            .into_iter()
            .map(|r| r.entry.at)
            .collect();
        assert_eq!(left, [day(20)]);
        let town_rows: i64 = store
            .conn()
            .query_row("SELECT count(*) FROM audit_towns", [], |r| r.get(0))
            .unwrap();
        assert_eq!(town_rows, 1, "the pruned entries' town rows went with them");
    }
}
