//! Persistence: the embedded SQLite store of DESIGN.md §6 (ledger state, readings
//! history, rejects; later alerts, acks, silences and the notification outbox) and the
//! InfluxDB sink.
//!
//! The ingest writer thread owns one [`Store`]. Per batch of MQTT messages it opens a
//! [`WriteBatch`], inserts readings (learning which are duplicates), saves the snapshots
//! of the facilities that changed, records rejects, commits, and only then acknowledges
//! the messages: whatever was acknowledged is in the file, and a killed process loses
//! nothing it acknowledged.

mod error;
mod sqlite;

pub use error::StoreError;
pub use sqlite::{
    DEFAULT_BUSY_TIMEOUT, DEFAULT_MAX_REJECTS, DEFAULT_PRUNE_CHUNK, DEFAULT_RETENTION,
    MAX_REJECT_DETAIL, MAX_REJECT_PAYLOAD, MAX_REJECT_TOPIC, PruneOutcome, RejectRecord, Store,
    StoreOptions, StoredReading, WriteBatch,
};
