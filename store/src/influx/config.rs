//! How to reach InfluxDB and how the sink batches. The `[influx]` section of the
//! configuration is deserialised straight into [`InfluxConfig`] by the server (which
//! alone reads files, the `*_file` secrets included); [`InfluxConfig::endpoint`] makes
//! it the [`InfluxEndpoint`] writes and reads use.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

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

/// `[influx] api`: which write API InfluxDB speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InfluxApiVersion {
    /// InfluxDB 1.x `/write` with a database.
    V1,
    /// `/api/v2/write` with org, bucket and token: InfluxDB 2.x, 3.x, Cloud, 1.8+.
    #[default]
    V2,
}

/// `[influx]`: the optional time-series sink, as the configuration writes it (flat: the
/// keys of both APIs side by side, `api` saying which apply).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InfluxConfig {
    /// `http://host:8086` or `https://…`; no path.
    pub url: String,
    pub api: InfluxApiVersion,
    /// v1: the database to write to.
    pub database: Option<String>,
    /// v1: optional basic-auth credentials, for writes and reads.
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// v1: a file holding the password; the server reads it into `password` at load.
    pub password_file: Option<PathBuf>,
    /// v2: organisation, bucket and token.
    pub org: Option<String>,
    pub bucket: Option<String>,
    pub token: Option<SecretString>,
    /// v2: a file holding the token; the server reads it into `token` at load.
    pub token_file: Option<PathBuf>,
}

/// A setting the chosen `api` needs is missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("influx.{field} is required for api = \"{api}\"")]
pub struct MissingInfluxSetting {
    pub field: &'static str,
    pub api: &'static str,
}

impl InfluxConfig {
    /// The endpoint the section describes, with the settings its `api` needs.
    pub fn endpoint(&self) -> Result<InfluxEndpoint, MissingInfluxSetting> {
        let required = |value: &Option<String>, field, api| {
            value.clone().ok_or(MissingInfluxSetting { field, api })
        };
        let api = match self.api {
            InfluxApiVersion::V1 => InfluxApi::V1 {
                database: required(&self.database, "database", "v1")?,
                username: self.username.clone(),
                password: self.password.clone(),
            },
            InfluxApiVersion::V2 => InfluxApi::V2 {
                org: required(&self.org, "org", "v2")?,
                bucket: required(&self.bucket, "bucket", "v2")?,
                token: self.token.clone().ok_or(MissingInfluxSetting {
                    field: "token",
                    api: "v2",
                })?,
            },
        };
        Ok(InfluxEndpoint::new(self.url.clone(), api))
    }
}

/// Which write API InfluxDB speaks, with what it needs. Secrets are exposed only to the
/// requests (basic auth, the `Token` header, the `influxdb2` client).
#[derive(Debug, Clone)]
pub enum InfluxApi {
    /// InfluxDB 1.x: `POST /write?db=…`, optional basic auth. InfluxQL reads use the
    /// same credentials.
    V1 {
        database: String,
        username: Option<String>,
        password: Option<SecretString>,
    },
    /// InfluxDB 2.x, 3.x, Cloud, 1.8+: `POST /api/v2/write` through the `influxdb2`
    /// crate. InfluxQL reads go to `/query?db={bucket}` with `Authorization: Token`,
    /// which needs a DBRP mapping of the bucket's name to the bucket on 2.x.
    V2 {
        org: String,
        bucket: String,
        token: SecretString,
    },
}

/// Where InfluxDB is: what writes and history reads share.
#[derive(Debug, Clone)]
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
#[derive(Debug, Clone)]
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
