//! The InfluxDB sink (docs/design.md#influxdb-series) and history reads.
//!
//! - [`line`](mod@line): line protocol, the only place it is written, and the seven series.
//! - `queue`: the disk-backed queue, the `influx_queue` table of the SQLite file.
//! - [`Sink`]: sends the queue to InfluxDB (v1 `/write` or v2 through `influxdb2`) and
//!   enqueues the series derived from the ledger.
//! - [`history`]: a town's stock over time, from InfluxDB (InfluxQL) or SQLite.

mod client;
mod config;
pub mod history;
pub mod line;
pub(crate) mod queue;
mod sink;

pub use client::InfluxError;
pub use config::{
    DEFAULT_BATCH_LINES, DEFAULT_DERIVED_EVERY, DEFAULT_FLUSH_EVERY, DEFAULT_OPS_EVERY,
    DEFAULT_QUEUE_MAX_ROWS, DEFAULT_TIMEOUT, InfluxApi, InfluxApiVersion, InfluxConfig,
    InfluxEndpoint, InfluxSinkConfig, MissingInfluxSetting,
};
pub use line::{OpsCounts, alert_line};
pub use sink::{ChangeSource, NoChanges, Sink, SinkError, SinkMetrics, SinkStats};
