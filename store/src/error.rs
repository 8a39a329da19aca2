//! The store's error: every message names the database file, and a row that cannot be
//! decoded names its table and key, so an operator knows what to inspect or restore.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open store {}: directory {} does not exist", path.display(), dir.display())]
    MissingDirectory { path: PathBuf, dir: PathBuf },

    #[error("cannot open store {}: the file is not a SQLite database", path.display())]
    NotADatabase { path: PathBuf },

    #[error(
        "store {} has schema version {found}, this build knows versions up to {known}: was it written by a newer stockpile?",
        path.display()
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },

    #[error("store {}: journal mode is {mode:?}, expected \"wal\"", path.display())]
    NoWal { path: PathBuf, mode: String },

    /// SQLite failed at `action` (`"insert reading"`, `"commit"`, …).
    #[error("store {}: cannot {action}: {cause}", path.display())]
    Sqlite {
        path: PathBuf,
        action: &'static str,
        cause: rusqlite::Error,
    },

    /// A value could not be turned into the JSON stored for it.
    #[error("store {}: cannot encode {what}: {cause}", path.display())]
    Encode {
        path: PathBuf,
        what: &'static str,
        cause: serde_json::Error,
    },

    /// A stored row does not decode: the file was edited or damaged.
    #[error("store {}: table {table}, row {key}: {problem}", path.display())]
    CorruptRow {
        path: PathBuf,
        table: &'static str,
        key: String,
        problem: String,
    },

    /// A count too large for SQLite's signed 64-bit integers.
    #[error("store {}: {what} {value} is too large to store", path.display())]
    OutOfRange {
        path: PathBuf,
        what: &'static str,
        value: u64,
    },
}
