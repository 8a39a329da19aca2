//! What ingest is told: the `[mqtt]` section of the configuration
//! (docs/design.md#cli-and-configuration), deserialised straight into [`MqttConfig`] by
//! the `server` crate, and the [`IngestConfig`] the server builds from it with what the
//! section does not hold (the CA's PEM, the store's retention, a shard's towns).

use std::path::PathBuf;
use std::time::Duration;

use reserve::broker_url::{BrokerUrl, BrokerUrlError};
use reserve::shard::Shard;
use secrecy::SecretString;
use serde::Deserialize;

/// `[mqtt]`: where readings come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host:port`, or `mqtts://host:port` for TLS.
    pub url: String,
    /// Also names the broker's persistent session, so it must be stable across restarts.
    pub client_id: String,
    /// Broker credentials, with `password`.
    pub username: Option<String>,
    /// Exposed only to the MQTT client's options.
    pub password: Option<SecretString>,
    /// A file holding the password; the server reads it into `password` at load (only
    /// the server reads files).
    pub password_file: Option<PathBuf>,
    /// PEM file of a CA to trust for `mqtts://` besides the system's roots (a private
    /// broker CA). Relative to the config file; the server reads it into
    /// [`IngestConfig::ca_pem`].
    pub ca_file: Option<PathBuf>,
    /// Run the embedded broker on `url`'s port instead of connecting to one (the server
    /// starts it).
    pub embedded_broker: bool,
    /// `"i/N"`: run as instance `i` of `N`, with only the towns that hash to it
    /// (docs/design.md#scale-out-by-town). `stockpile serve --shard` overrides it.
    /// `-shard-i-of-N` is appended to `client_id`, so the instances' broker sessions stay
    /// apart.
    pub shard: Option<Shard>,
    /// Most readings one message's array may carry; more is rejected whole as
    /// `too_many_readings` (docs/design.md#limits). Bounds the work one message can cost.
    pub max_readings_per_message: usize,
    /// Largest reading payload in bytes; larger is rejected as `too_large` and cut to its
    /// head before it is queued.
    pub max_payload_bytes: usize,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: "mqtt://127.0.0.1:1883".into(),
            client_id: "stockpile".into(),
            username: None,
            password: None,
            password_file: None,
            ca_file: None,
            embedded_broker: false,
            shard: None,
            max_readings_per_message: reserve::wire::MAX_READINGS_PER_MESSAGE,
            max_payload_bytes: reserve::wire::MAX_PAYLOAD_BYTES,
        }
    }
}

impl MqttConfig {
    /// The client id this instance connects with: `client_id`, and `-shard-i-of-N` when
    /// sharded. Two instances with one client id would take turns kicking each other off
    /// the broker, and the suffix naming `N` gives every layout its own sessions, so a
    /// session never holds the subscriptions of another layout's towns.
    pub fn instance_client_id(&self) -> String {
        match self.shard {
            Some(shard) => format!(
                "{}-shard-{}-of-{}",
                self.client_id,
                shard.index(),
                shard.count()
            ),
            None => self.client_id.clone(),
        }
    }
}

/// How to reach the broker and how to batch: the `[mqtt]` section and what ingest needs
/// beside it.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// The section as configured; `client_id` is the one connected with.
    pub mqtt: MqttConfig,
    /// `mqtt.url`, parsed.
    pub broker: BrokerUrl,
    /// PEM of a CA to trust for `mqtts://` besides the system roots (`mqtt.ca_file`'s
    /// content).
    pub ca_pem: Option<Vec<u8>>,
    pub keep_alive: Duration,
    /// Most readings in one SQLite transaction.
    pub batch_max: usize,
    /// Readings older than this are rejected (and pruned from history).
    pub retention: Duration,
    /// How often the writer saves the snapshots of facilities the ledger changed.
    /// Readings are durable with every batch regardless; a start-up after a crash
    /// replays the ones stored since the last save. Saving with every batch cost
    /// half the writer's time at high rates (BENCHMARKS.md).
    pub snapshot_every: Duration,
    /// Subscribe town by town to these towns only (a shard,
    /// docs/design.md#scale-out-by-town); `None` subscribes to every town with wildcards.
    pub towns: Option<Vec<String>>,
}

impl IngestConfig {
    /// The defaults for a broker and a client id, as tests and tools connect.
    pub fn new(broker: BrokerUrl, client_id: impl Into<String>) -> IngestConfig {
        let mqtt = MqttConfig {
            url: broker.to_string(),
            client_id: client_id.into(),
            ..MqttConfig::default()
        };
        IngestConfig::with_broker(mqtt, broker)
    }

    /// The defaults for a `[mqtt]` section: its URL parsed, nothing read from files.
    pub fn from_section(mqtt: MqttConfig) -> Result<IngestConfig, BrokerUrlError> {
        let broker = BrokerUrl::parse(&mqtt.url)?;
        Ok(IngestConfig::with_broker(mqtt, broker))
    }

    fn with_broker(mqtt: MqttConfig, broker: BrokerUrl) -> IngestConfig {
        IngestConfig {
            mqtt,
            broker,
            ca_pem: None,
            keep_alive: Duration::from_secs(30),
            batch_max: 1000,
            retention: Duration::from_secs(90 * 24 * 3600),
            snapshot_every: Duration::from_secs(1),
            towns: None,
        }
    }
}
