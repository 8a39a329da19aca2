//! Persistence: the embedded SQLite store (ledger state, readings history, rejects; later
//! alerts, acks, silences and the notification outbox) and the InfluxDB sink
//! (docs/design.md#storage).
//!
//! The ingest writer thread owns one [`Store`]. Per batch of MQTT messages it opens a
//! [`WriteBatch`], inserts readings (learning which are duplicates), saves the snapshots
//! of the facilities that changed, records rejects, commits, and only then acknowledges
//! the messages: whatever was acknowledged is in the file, and a killed process loses
//! nothing it acknowledged.
//!
//! With [`StoreOptions::influx_queue`] on, the same batch enqueues each new reading's
//! InfluxDB lines in the `influx_queue` table; the [`influx::Sink`] sends that queue to
//! InfluxDB on its own connection, and [`history`] answers the API's history requests
//! from InfluxDB or from the readings here.
//!
//! [`maintenance`] keeps the file bounded on a connection of its own: it prunes every
//! table that grows to its retention, in short chunks between the writer's batches, and
//! manages WAL checkpoints.

mod config;
mod error;
pub mod influx;
pub mod maintenance;
mod sqlite;

pub use config::StoreConfig;
pub use error::StoreError;
pub use influx::history;
pub use maintenance::{Maintenance, MaintenanceConfig, MaintenanceCounts, MaintenanceStats};
pub use sqlite::DrillRow;
pub use sqlite::{
    AckRow, Alert, AlertBatch, AlertCounts, AlertKinds, AlertQuery, AlertRow, AlertState,
    ConvertKinds, DeliveryState, DrillAlertCounts, NewNotification, NotificationQuery,
    OutboxCounts, OutboxRow, SilenceRow, Text,
};
pub use sqlite::{
    ActivationRow, ActivationShelter, ActivationState, ActivationStep, NewActivation, Origin,
    StartRefused, StepDone, StepOutcome,
};
pub use sqlite::{
    AsyncStore, AuditFilter, AuditRow, Checkpoint, CheckpointMode, NewAudit, PruneTable, wal_bytes,
};
pub use sqlite::{
    DEFAULT_BUSY_TIMEOUT, DEFAULT_MAX_REJECTS, DEFAULT_RETENTION, MAX_REJECT_DETAIL,
    MAX_REJECT_PAYLOAD, MAX_REJECT_TOPIC, ManualEntry, ReadingSource, RejectRecord, Store,
    StoreOptions, StoredReading, WriteBatch,
};
pub use sqlite::{
    MAX_SCENARIO_RUNS, NewScenarioRun, STRESS_TEST_REQUESTER, ScenarioRunRow, ScenarioRunSummary,
    StressTestRow,
};
pub use sqlite::{NewTransfer, TransferRow};
pub use sqlite::{WARNING_LEVEL_HISTORY_MAX, WarningLevelRow};
