//! How to reach InfluxDB and how the sink batches. Built by the server from the
//! `[influx]` section of the configuration (the only place that reads files).

use std::fmt;
use std::time::Duration;

/// Lines per write request at most (docs/design.md#influxdb-series: ≤ 5000 lines or 1 s).
pub const DEFAULT_BATCH_LINES: usize = 5_000;
/// A batch smaller than [`DEFAULT_BATCH_LINES`] is sent once its oldest line waited this
/// long.
pub const DEFAULT_FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Longest a write or query may take before it counts as failed (the `influxdb2`
/// crate sets none of its own).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound of the disk-backed queue. At ~150 bytes a line, about 750 MB of SQLite file:
/// over an hour of 1,000 readings/s. Beyond it the oldest lines are dropped (and
/// counted), because a full disk would stop ingest, which matters more than history.
pub const DEFAULT_QUEUE_MAX_ROWS: u64 = 5_000_000;
/// `coverage` and `town_status` of every town are written at least this often, so a
/// wall display always has a fresh point (docs/design.md#influxdb-series).
pub const DEFAULT_DERIVED_EVERY: Duration = Duration::from_secs(60);
/// The `ops` series' interval.
pub const DEFAULT_OPS_EVERY: Duration = Duration::from_secs(10);

/// Which write API InfluxDB speaks.
#[derive(Clone, PartialEq, Eq)]
pub enum InfluxApi {
    /// InfluxDB 1.x: `POST /write?db=…`, optional basic auth. InfluxQL reads use the
    /// same credentials.
    V1 {
        database: String,
        username: Option<String>,
        password: Option<String>,
    },
    /// InfluxDB 2.x, 3.x, Cloud, 1.8+: `POST /api/v2/write` through the `influxdb2`
    /// crate. InfluxQL reads go to `/query?db={bucket}` with `Authorization: Token`,
    /// which needs a DBRP mapping of the bucket's name to the bucket on 2.x.
    V2 {
        org: String,
        bucket: String,
        token: String,
    },
}

// Hand-written so that a password or token never reaches a log.
impl fmt::Debug for InfluxApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InfluxApi::V1 {
                database,
                username,
                password,
            } => f
                .debug_struct("V1")
                .field("database", database)
                .field("username", username)
                .field("password", &password.as_ref().map(|_| "***"))
                .finish(),
            InfluxApi::V2 { org, bucket, .. } => f
                .debug_struct("V2")
                .field("org", org)
                .field("bucket", bucket)
                .field("token", &"***")
                .finish(),
        }
    }
}

/// Where InfluxDB is: what writes and history reads share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfluxEndpoint {
    /// `http://host:8086` or `https://…`; no path.
    pub url: String,
    pub api: InfluxApi,
    /// Per request.
    pub timeout: Duration,
}

impl InfluxEndpoint {
    pub fn new(url: impl Into<String>, api: InfluxApi) -> InfluxEndpoint {
        InfluxEndpoint {
            url: url.into(),
            api,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The InfluxQL database: v1's database, v2's bucket (through its DBRP mapping).
    pub(crate) fn database(&self) -> &str {
        match &self.api {
            InfluxApi::V1 { database, .. } => database,
            InfluxApi::V2 { bucket, .. } => bucket,
        }
    }
}

/// The sink: the endpoint plus batching, the queue's bound and the intervals of the
/// series written from the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfluxSinkConfig {
    pub endpoint: InfluxEndpoint,
    /// Most lines per write request.
    pub batch_lines: usize,
    /// A partial batch waits at most this long for more lines.
    pub flush_every: Duration,
    /// Most lines the disk-backed queue holds; the oldest beyond it are dropped.
    pub queue_max_rows: u64,
    /// `coverage` and `town_status` of all towns at least this often.
    pub derived_every: Duration,
    /// `ops` this often.
    pub ops_every: Duration,
    /// The `instance` tag of the `ops` series (e.g. the host name).
    pub instance: String,
}

impl InfluxSinkConfig {
    /// The defaults (docs/design.md#influxdb-series) for `endpoint`.
    pub fn new(endpoint: InfluxEndpoint, instance: impl Into<String>) -> InfluxSinkConfig {
        InfluxSinkConfig {
            endpoint,
            batch_lines: DEFAULT_BATCH_LINES,
            flush_every: DEFAULT_FLUSH_EVERY,
            queue_max_rows: DEFAULT_QUEUE_MAX_ROWS,
            derived_every: DEFAULT_DERIVED_EVERY,
            ops_every: DEFAULT_OPS_EVERY,
            instance: instance.into(),
        }
    }
}
