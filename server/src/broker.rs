//! The embedded MQTT broker (rumqttd) for `stockpile demo` and `mqtt.embedded_broker`.
//!
//! It keeps sessions and queued messages in memory only: a restart forgets what the
//! broker held, so it is for trying Stockpile, not for production, where Mosquitto or
//! EMQX with persistence sit in front (deploy/).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// Largest payload the embedded broker passes on; above Stockpile's own limit so that an
/// oversize reading reaches ingest and is rejected with a reason.
const MAX_PAYLOAD: usize = 1 << 20;

/// Starts the broker on `addr` on its own thread (rumqttd runs its own runtimes).
/// Fails early, with the address, when the port is taken.
pub fn start(addr: SocketAddr) -> anyhow::Result<()> {
    // rumqttd reports a bind failure only inside its thread; check first so the user
    // sees why.
    TcpListener::bind(addr).map_err(|e| {
        anyhow::anyhow!(
            "the embedded MQTT broker cannot listen on {addr}: {e} (choose another port)"
        )
    })?;
    let server = ServerSettings {
        name: "v4".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: MAX_PAYLOAD,
            // Stockpile acknowledges after its SQLite commit; a wide window keeps batches big.
            max_inflight_count: 1000,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            // One connection per simulated gateway: the demo registry has 1,739.
            max_connections: 10_000,
            max_outgoing_packet_count: 1000,
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("v4".to_string(), server)])),
        ..Config::default()
    };
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(error) = broker.start() {
                tracing::error!(message = "The embedded MQTT broker stopped.", %error);
            }
        })?;
    wait_until_listening(addr)
}

fn wait_until_listening(addr: SocketAddr) -> anyhow::Result<()> {
    for _ in 0..200 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    anyhow::bail!("the embedded MQTT broker did not start listening on {addr}")
}
