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

impl StoreError {
    /// Whether waiting can cure it: another process holding the lock (`SQLITE_BUSY`,
    /// `SQLITE_LOCKED`), a full disk, an I/O error, a file that cannot be opened right
    /// now. Ingest pauses and retries these. Not recoverable: a file that is not a
    /// database or is corrupt, a schema from a newer version, a missing directory —
    /// retrying would only hide them, so the service stops and says what to do.
    pub fn is_recoverable(&self) -> bool {
        use rusqlite::ErrorCode;
        match self {
            StoreError::MissingDirectory { .. }
            | StoreError::NotADatabase { .. }
            | StoreError::SchemaTooNew { .. }
            | StoreError::NoWal { .. }
            | StoreError::CorruptRow { .. } => false,
            StoreError::Sqlite { cause, .. } => !matches!(
                cause.sqlite_error_code(),
                Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
            ),
            // A value that does not encode or fit will not fit next time either, but it
            // is one batch of one message: retrying keeps the fault visible (readyz,
            // metrics) instead of stopping the whole service over it.
            StoreError::Encode { .. } | StoreError::OutOfRange { .. } => true,
        }
    }
}
