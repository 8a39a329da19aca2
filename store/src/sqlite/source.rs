//! Where a stored reading came from: a facility's gateway over MQTT, or an officer's
//! count entered by hand through the API (docs/design.md#sqlite, issue 15). Kept with
//! each reading so that anyone reading a figure can tell it rests on a hand count, and
//! whose.

use chrono::{DateTime, Utc};
use reserve::FacilityId;
use rusqlite::params;

use super::row::{Columns, FromRow, Millis, RowError, Slug};
use crate::{Store, StoreError};

/// Who produced a reading.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ReadingSource {
    /// The facility's gateway, over MQTT: what every reading stored before sources
    /// were recorded came from.
    #[default]
    Gateway,
    /// Counted by hand and entered through the API.
    Manual {
        /// The name of the API token it was entered with (never the token itself).
        entered_by: String,
    },
}

impl ReadingSource {
    /// The `source` column's value: `gateway` or `manual` (also the InfluxDB tag's).
    pub fn as_str(&self) -> &'static str {
        match self {
            ReadingSource::Gateway => "gateway",
            ReadingSource::Manual { .. } => "manual",
        }
    }

    /// The `entered_by` column's value: the token's name for a manual reading.
    pub fn entered_by(&self) -> Option<&str> {
        match self {
            ReadingSource::Gateway => None,
            ReadingSource::Manual { entered_by } => Some(entered_by),
        }
    }

    /// Reads the `source` and `entered_by` columns of a `readings` row.
    pub(super) fn from_columns(row: &Columns<'_, '_>) -> Result<ReadingSource, RowError> {
        let source: String = row.get("source")?;
        let entered_by: Option<String> = row.get("entered_by")?;
        match (source.as_str(), entered_by) {
            ("gateway", _) => Ok(ReadingSource::Gateway),
            ("manual", Some(entered_by)) => Ok(ReadingSource::Manual { entered_by }),
            ("manual", None) => Err(RowError::Corrupt(
                "a manual reading without entered_by".into(),
            )),
            (other, _) => Err(RowError::Corrupt(format!("unknown source {other:?}"))),
        }
    }
}

/// The latest reading of a facility that was entered by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualEntry {
    pub facility: FacilityId,
    /// Measured (counted) at, as entered.
    pub ts: DateTime<Utc>,
    /// Stored at, by our clock.
    pub received_at: DateTime<Utc>,
    /// The API token's name it was entered with.
    pub entered_by: String,
}

impl FromRow for ManualEntry {
    const TABLE: &'static str = "readings";
    const KEY: &'static [&'static str] = &["facility", "ts"];

    fn from_row(row: &Columns<'_, '_>) -> Result<Self, RowError> {
        Ok(ManualEntry {
            facility: row.get::<Slug<FacilityId>>("facility")?.0,
            ts: row.get::<Millis>("ts")?.0,
            received_at: row.get::<Millis>("received")?.0,
            entered_by: row.get("entered_by")?,
        })
    }
}

impl Store {
    /// The newest reading of `facility` entered by hand, if any. Cheap whatever the
    /// history's size: the `readings_manual` index holds manual readings only, which
    /// are a few a day where gateways send one a minute.
    pub fn latest_manual_entry(
        &self,
        facility: &FacilityId,
    ) -> Result<Option<ManualEntry>, StoreError> {
        self.first_row(
            "SELECT facility, ts, received, entered_by FROM readings
             WHERE facility = ?1 AND source = 'manual'
             ORDER BY ts DESC LIMIT 1",
            params![Slug(facility)],
            "load the latest manual reading",
        )
    }
}
