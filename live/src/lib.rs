//! The live state every component shares: the ledger in memory, the feed of towns it
//! changed, ingest's counters, and the queue of counts entered by hand.
//!
//! It is a crate of its own because its users sit on both sides of the data flow: the
//! ingest writer (and the tick, and the API's sheltered counts) write the ledger and
//! publish changes; alerts, the API, the board and the InfluxDB sink read them. Kept in
//! `ingest`, these few types made every reader depend on the MQTT client. Nothing here
//! does I/O: a lock, a change set with a wake-up, and atomics.

mod changes;
mod manual;
mod metrics;

use std::sync::{Arc, RwLock};

use reserve::Ledger;

pub use changes::{ChangeConsumer, TownChanges};
pub use manual::{
    MANUAL_QUEUE, ManualError, ManualOutcome, ManualQueue, ManualReadings, ManualSubmission,
    Submission, Transfer, TransferOutcome, TransferRefused, TransferSubmission,
};
pub use metrics::{IngestCounts, IngestMetrics, StoreFault};

/// The ledger shared between its writers (the ingest writer, the tick, the sheltered
/// count) and readers (API, alerts, the sink). A std `RwLock`: it is held for
/// microseconds, never across an `.await` and never across SQLite I/O, so a tokio
/// worker that takes it never waits on the disk.
pub type SharedLedger = Arc<RwLock<Ledger>>;
