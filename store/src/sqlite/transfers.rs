//! Transfers (issue 15): stock moved from one facility to another, typically mutual aid
//! inside a cluster, as an officer recorded it. A transfer is a record, not a reading:
//! for facilities with a gateway the next readings stay the truth of what each holds.
//! The API writes a transfer and its audit entry in one transaction on its own
//! connection, and lists them by town. Kept forever, like the audit log: a few rows a
//! day.

use chrono::{DateTime, Utc};
use std::path::Path;

use rusqlite::{Connection, TransactionBehavior, params};

use super::{Columns, FromRow, Limit, Millis, RowError, WriteBatch, sqlite_error};
use crate::{NewAudit, Store, StoreError};

/// A transfer to record. The towns are the facilities' towns when it was recorded, kept
/// with it so the list by town does not change when the registry does.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTransfer {
    pub at: DateTime<Utc>,
    pub from_facility: String,
    pub from_town: String,
    pub to_facility: String,
    pub to_town: String,
    pub category: String,
    /// In the category's unit; finite and above zero (the table refuses anything else).
    pub quantity: f64,
    pub note: String,
    /// The name of the token it was recorded with.
    pub recorded_by: String,
}

/// A recorded transfer.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferRow {
    pub id: i64,
    pub transfer: NewTransfer,
}

const TRANSFER_COLUMNS: &str = "id, at, from_facility, from_town, to_facility, to_town, \
                                category, quantity, note, recorded_by";

impl Store {
    /// Records `transfer` with its audit entry (action `transfer`, via `token`, from
    /// `remote`, naming both towns), both or neither, and returns it as stored.
    pub fn record_transfer(
        &mut self,
        transfer: &NewTransfer,
        remote: &str,
    ) -> Result<TransferRow, StoreError> {
        let path = self.path().to_owned();
        let tx = self
            .conn_mut()
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_error(&path, "start recording a transfer"))?;
        let id = insert_transfer(&tx, &path, transfer, remote)?;
        tx.commit()
            .map_err(sqlite_error(&path, "commit a transfer"))?;
        Ok(TransferRow {
            id,
            transfer: transfer.clone(),
        })
    }

    /// Transfers newest first (by when they were recorded, then id): those sent or
    /// received by `town` when given, recorded at or after `since` when given, at most
    /// `limit`.
    pub fn transfers(
        &self,
        town: Option<&str>,
        since: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Vec<TransferRow>, StoreError> {
        self.rows(
            &format!(
                "SELECT {TRANSFER_COLUMNS} FROM transfers
                 WHERE (?1 IS NULL OR from_town = ?1 OR to_town = ?1)
                   AND (?2 IS NULL OR at >= ?2)
                 ORDER BY at DESC, id DESC LIMIT ?3"
            ),
            params![town, since.map(Millis), Limit(limit)],
            "list transfers",
        )
    }
}

impl WriteBatch<'_> {
    /// Records `transfer` with its audit entry in the ingest writer's transaction, with
    /// the readings it makes at facilities counted by hand (docs/design.md#transfers),
    /// and returns its id.
    pub fn record_transfer(
        &mut self,
        transfer: &NewTransfer,
        remote: &str,
    ) -> Result<i64, StoreError> {
        insert_transfer(&self.tx, self.path, transfer, remote)
    }
}

/// Inserts a transfer and its audit entry (action `transfer`, via `token`, from
/// `remote`, naming both towns) in the caller's transaction; returns its id.
fn insert_transfer(
    conn: &Connection,
    path: &Path,
    transfer: &NewTransfer,
    remote: &str,
) -> Result<i64, StoreError> {
    let t = transfer;
    conn.prepare_cached(
        "INSERT INTO transfers (at, from_facility, from_town, to_facility, to_town,
                                category, quantity, note, recorded_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            Millis(t.at),
            t.from_facility,
            t.from_town,
            t.to_facility,
            t.to_town,
            t.category,
            t.quantity,
            t.note,
            t.recorded_by,
        ])
    })
    .map_err(sqlite_error(path, "insert a transfer"))?;
    let id = conn.last_insert_rowid();
    let detail = format!(
        "transfer {id}: {} {} from {} to {}: {}",
        t.quantity, t.category, t.from_facility, t.to_facility, t.note
    );
    let entry = NewAudit {
        at: t.at,
        actor: t.recorded_by.clone(),
        via: "token".to_owned(),
        action: "transfer".to_owned(),
        towns: vec![t.from_town.clone(), t.to_town.clone()],
        detail,
        remote: remote.to_owned(),
        ..NewAudit::default()
    };
    super::audit::insert_audit(conn, path, &entry)?;
    Ok(id)
}

impl FromRow for TransferRow {
    const TABLE: &'static str = "transfers";
    const KEY: &'static [&'static str] = &["id"];

    fn from_row(row: &Columns<'_, '_>) -> Result<Self, RowError> {
        Ok(TransferRow {
            id: row.get("id")?,
            transfer: NewTransfer {
                at: row.get::<Millis>("at")?.0,
                from_facility: row.get("from_facility")?,
                from_town: row.get("from_town")?,
                to_facility: row.get("to_facility")?,
                to_town: row.get("to_town")?,
                category: row.get("category")?,
                quantity: row.get("quantity")?,
                note: row.get("note")?,
                recorded_by: row.get("recorded_by")?,
            },
        })
    }
}
