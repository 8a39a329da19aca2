//! The row layer: how a value of the domain becomes a column and back, and how a row
//! becomes a value. Every read goes through [`FromRow`] and [`Store::rows`] (or
//! [`for_each_row`]): columns are read by name, each through its `FromSql`, and a value
//! that does not decode is a [`StoreError::CorruptRow`] naming its table, its key and
//! what is wrong, so an operator knows which row to inspect.
//!
//! Column types of the domain, in one place:
//! - times are epoch milliseconds ([`Millis`]);
//! - a gateway's `seq` is the u64's 64 bits in a signed integer ([`Seq`]);
//! - ids are their slug as text ([`Slug`]);
//! - counts are non-negative integers ([`Count`]);
//! - alert and delivery states are their stable ids as text (`FromSql`/`ToSql` on
//!   [`super::AlertState`] and [`super::DeliveryState`]);
//! - JSON documents are text, read by [`Columns::json`].

use std::path::Path;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use reserve::IdError;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, Params, Row};
use serde::de::DeserializeOwned;

use super::sqlite_error;
use crate::{Store, StoreError};

/// A value read from one row of a query.
pub(crate) trait FromRow: Sized {
    /// The table the rows come from, named in errors.
    const TABLE: &'static str;
    /// The columns whose values name a row in errors: `["id"]`, or `["facility", "ts"]`
    /// (shown as `(js-wh1, 1795496400000)`). The query must select them.
    const KEY: &'static [&'static str];

    fn from_row(row: &Columns<'_, '_>) -> Result<Self, RowError>;
}

/// Why a row did not decode.
#[derive(Debug)]
pub(crate) enum RowError {
    /// A value that this code cannot have written: the row is corrupt.
    Corrupt(String),
    /// SQLite failed, or the query lacks a column (a bug).
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for RowError {
    fn from(e: rusqlite::Error) -> RowError {
        RowError::Sqlite(e)
    }
}

/// One row's columns, read by name.
pub(crate) struct Columns<'r, 's>(&'r Row<'s>);

impl Columns<'_, '_> {
    /// The value of `column`; one that does not decode as a `T` is a corrupt row.
    pub(crate) fn get<T: FromSql>(&self, column: &str) -> Result<T, RowError> {
        self.0.get(column).map_err(|e| match e {
            rusqlite::Error::FromSqlConversionFailure(_, _, cause) => {
                RowError::Corrupt(cause.to_string())
            }
            rusqlite::Error::IntegralValueOutOfRange(_, n) => {
                RowError::Corrupt(format!("bad {column} {n}"))
            }
            rusqlite::Error::InvalidColumnType(_, _, found) => {
                RowError::Corrupt(format!("{column} holds a value of type {found}"))
            }
            other => RowError::Sqlite(other),
        })
    }

    /// The JSON document stored as text in `column`.
    pub(crate) fn json<T: DeserializeOwned>(&self, column: &str) -> Result<T, RowError> {
        let text: String = self.get(column)?;
        serde_json::from_str(&text)
            .map_err(|e| RowError::Corrupt(format!("{column} is not JSON: {e}")))
    }

    /// The row's key as errors show it: the value of each of `columns`, as stored.
    fn key(&self, columns: &[&str]) -> String {
        let value = |column: &&str| match self.0.get_ref(*column) {
            Ok(ValueRef::Integer(n)) => n.to_string(),
            Ok(ValueRef::Real(x)) => x.to_string(),
            Ok(ValueRef::Text(t)) => String::from_utf8_lossy(t).into_owned(),
            Ok(ValueRef::Blob(_)) => "<blob>".to_owned(),
            Ok(ValueRef::Null) => "NULL".to_owned(),
            Err(_) => "?".to_owned(),
        };
        match columns {
            [one] => value(one),
            many => format!(
                "({})",
                many.iter().map(value).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

/// Runs `sql` and calls `each` with every row decoded as a `T`, in the query's order,
/// stopping at the first error (the decoder's or `each`'s). Returns the rows seen.
pub(crate) fn for_each_row<T, E>(
    conn: &Connection,
    path: &Path,
    sql: &str,
    params: impl Params,
    action: &'static str,
    mut each: impl FnMut(T) -> Result<(), E>,
) -> Result<u64, E>
where
    T: FromRow,
    E: From<StoreError>,
{
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(sqlite_error(path, action))?;
    let mut rows = stmt.query(params).map_err(sqlite_error(path, action))?;
    let mut n = 0;
    while let Some(row) = rows.next().map_err(sqlite_error(path, action))? {
        let columns = Columns(row);
        let value = T::from_row(&columns).map_err(|e| match e {
            RowError::Sqlite(cause) => sqlite_error(path, action)(cause),
            RowError::Corrupt(problem) => StoreError::CorruptRow {
                path: path.to_owned(),
                table: T::TABLE,
                key: columns.key(T::KEY),
                problem,
            },
        })?;
        each(value)?;
        n += 1;
    }
    Ok(n)
}

impl Store {
    /// Every row of `sql` as a `T`.
    pub(crate) fn rows<T: FromRow>(
        &self,
        sql: &str,
        params: impl Params,
        action: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        for_each_row(self.conn(), self.path(), sql, params, action, |row| {
            out.push(row);
            Ok::<_, StoreError>(())
        })?;
        Ok(out)
    }

    /// The first row of `sql` as a `T`, if there is one.
    pub(crate) fn first_row<T: FromRow>(
        &self,
        sql: &str,
        params: impl Params,
        action: &'static str,
    ) -> Result<Option<T>, StoreError> {
        Ok(self.rows(sql, params, action)?.into_iter().next())
    }
}

/// A problem a `FromSql` reports, shown as the row's problem.
fn bad(problem: String) -> FromSqlError {
    FromSqlError::Other(problem.into())
}

/// A time as epoch milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Millis(pub DateTime<Utc>);

impl ToSql for Millis {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(self.0.timestamp_millis().into())
    }
}

impl FromSql for Millis {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let ms = i64::column_result(value)?;
        DateTime::from_timestamp_millis(ms)
            .map(Millis)
            .ok_or_else(|| bad(format!("bad time {ms}")))
    }
}

/// A gateway's `seq`. SQLite integers are signed; a `seq` is any u64. Storing the same
/// 64 bits round-trips every value (SQL never compares seqs, so the sign does not
/// matter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seq(pub u64);

impl ToSql for Seq {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(i64::from_ne_bytes(self.0.to_ne_bytes()).into())
    }
}

impl FromSql for Seq {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let bits = i64::column_result(value)?;
        Ok(Seq(u64::from_ne_bytes(bits.to_ne_bytes())))
    }
}

/// An id of `reserve` (`TownId`, `FacilityId`) as its slug; one that does not parse is
/// a corrupt row. A wrapper because those types and rusqlite's traits are both foreign
/// here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slug<T>(pub T);

impl<T: AsRef<str>> ToSql for Slug<T> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(self.0.as_ref().into())
    }
}

impl<T: FromStr<Err = IdError>> FromSql for Slug<T> {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        T::from_str(text).map(Slug).map_err(|e| bad(e.to_string()))
    }
}

/// A number of things: never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Count(pub u64);

impl FromSql for Count {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let n = i64::column_result(value)?;
        u64::try_from(n)
            .map(Count)
            .map_err(|_| bad(format!("negative count {n}")))
    }
}

/// A count for `LIMIT` or arithmetic; anything beyond i64 is as good as unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limit(pub usize);

impl ToSql for Limit {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(i64::try_from(self.0).unwrap_or(i64::MAX).into())
    }
}

/// `ToSql`/`FromSql` for an enum stored as its stable id (`as_str` / `parse`); a text
/// it does not know is a corrupt row (`bad state "x"`).
macro_rules! text_enum_sql {
    ($ty:ty, $what:literal) => {
        impl rusqlite::types::ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }

        impl rusqlite::types::FromSql for $ty {
            fn column_result(
                value: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                let text = value.as_str()?;
                <$ty>::parse(text).ok_or_else(|| {
                    rusqlite::types::FromSqlError::Other(
                        format!(concat!("bad ", $what, " {:?}"), text).into(),
                    )
                })
            }
        }
    };
}
pub(crate) use text_enum_sql;

#[cfg(test)]
mod tests {
    use super::*;

    /// A row of a table made up for the test: `(id, at, seq)`.
    #[derive(Debug, PartialEq)]
    struct Probe {
        at: DateTime<Utc>,
        seq: Option<u64>,
    }

    impl FromRow for Probe {
        const TABLE: &'static str = "probe";
        const KEY: &'static [&'static str] = &["id"];

        fn from_row(row: &Columns<'_, '_>) -> Result<Self, RowError> {
            Ok(Probe {
                at: row.get::<Millis>("at")?.0,
                seq: row.get::<Option<Seq>>("seq")?.map(|s| s.0),
            })
        }
    }

    fn read_back(at: &dyn ToSql, seq: &dyn ToSql) -> Result<Vec<Probe>, StoreError> {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE probe (id INTEGER PRIMARY KEY, at, seq)")
            .unwrap();
        conn.execute("INSERT INTO probe (at, seq) VALUES (?1, ?2)", [at, seq])
            .unwrap();
        let mut out = Vec::new();
        for_each_row(
            &conn,
            Path::new("probe.db"),
            "SELECT id, at, seq FROM probe",
            [],
            "read probes",
            |p| {
                out.push(p);
                Ok::<_, StoreError>(())
            },
        )?;
        Ok(out)
    }

    #[test]
    fn every_seq_and_time_round_trips() {
        let at = DateTime::from_timestamp_millis(1_795_496_400_123).unwrap();
        for seq in [0, 1, i64::MAX as u64 + 1, u64::MAX] {
            let probes = read_back(&Millis(at), &Seq(seq)).unwrap();
            assert_eq!(probes, [Probe { at, seq: Some(seq) }], "seq {seq}");
        }
    }

    #[test]
    fn a_value_that_does_not_decode_names_table_key_and_problem() {
        let cases: [(&dyn ToSql, &str); 3] = [
            (
                &i64::MAX,
                "table probe, row 1: bad time 9223372036854775807",
            ),
            (&"noon", "table probe, row 1: at holds a value of type Text"),
            (&1.5, "table probe, row 1: at holds a value of type Real"),
        ];
        for (at, want) in cases {
            let err = read_back(at, &rusqlite::types::Null).unwrap_err();
            assert!(matches!(err, StoreError::CorruptRow { .. }), "{err:?}");
            assert!(err.to_string().ends_with(want), "{err}");
        }
    }
}
