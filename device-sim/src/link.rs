//! One MQTT connection: its options, and the task that polls its event loop (rumqttc
//! spawns nothing itself, so every connection needs a task). The task reconnects on its
//! own; whoever publishes watches [`LinkState`] and buffers while the link is down.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::SimError;
use reserve::broker_url::BrokerUrl;

use crate::config::SimConfig;

/// Largest MQTT packet either way: room for a backlog array and for the deliberately
/// oversized message of the malformed fault (the service's limit is 256 KiB).
pub(crate) const MAX_PACKET_BYTES: usize = 1024 * 1024;
/// Wait between reconnection attempts, plus up to as much again at random, so a
/// thousand gateways do not reconnect in lockstep.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// A gateway pings well within a broker's usual limits.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// How long a clean close waits for its DISCONNECT to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the simulator's connections have done, for the report. Shared by one run's
/// connections; not global, so two simulators in one process count apart.
#[derive(Debug)]
pub(crate) struct LinkCounters {
    epoch: Instant,
    /// Publishes written to the socket (any QoS).
    pub(crate) written: AtomicU64,
    /// PUBACKs received for QoS 1 publishes.
    pub(crate) acked: AtomicU64,
    /// Nanoseconds after `epoch` of the last write or ack, to time a load run's end.
    last_event_ns: AtomicU64,
}

impl LinkCounters {
    pub(crate) fn new(epoch: Instant) -> Self {
        LinkCounters {
            epoch,
            written: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            last_event_ns: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ns = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_event_ns.fetch_max(ns, Relaxed);
    }

    /// When the last publish was written or acknowledged, after `epoch`.
    pub(crate) fn last_event(&self) -> Duration {
        Duration::from_nanos(self.last_event_ns.load(Relaxed))
    }
}

/// How to reach the broker; builds every connection's options.
#[derive(Clone)]
pub(crate) struct Broker {
    url: BrokerUrl,
    credentials: Option<(String, String)>,
    tls: Option<TlsConfiguration>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("Broker")
            .field("url", &self.url)
            .field("username", &self.credentials.as_ref().map(|(u, _)| u))
            .finish_non_exhaustive()
    }
}

impl Broker {
    pub(crate) fn new(config: &SimConfig) -> Result<Broker, SimError> {
        let url =
            BrokerUrl::parse(&config.broker_url).map_err(|e| SimError::Config(e.to_string()))?;
        let tls = if url.tls {
            Some(tls_configuration()?)
        } else {
            None
        };
        let credentials = match (&config.username, &config.password) {
            (Some(user), password) => Some((user.clone(), password.clone().unwrap_or_default())),
            (None, Some(_)) => {
                return Err(SimError::Config(
                    "a password was given without a username".into(),
                ));
            }
            (None, None) => None,
        };
        Ok(Broker {
            url,
            credentials,
            tls,
        })
    }

    pub(crate) fn url(&self) -> String {
        let scheme = if self.url.tls { "mqtts" } else { "mqtt" };
        format!("{scheme}://{}:{}", self.url.host, self.url.port)
    }

    /// Options for one connection. A clean session is off for gateways, so a QoS 1
    /// reading in flight when the connection drops is resent after it comes back.
    pub(crate) fn options(
        &self,
        client_id: String,
        will: Option<LastWill>,
        persistent: bool,
        inflight: u16,
    ) -> MqttOptions {
        let mut options = MqttOptions::new(client_id, self.url.host.clone(), self.url.port);
        options
            .set_keep_alive(KEEP_ALIVE)
            .set_clean_session(!persistent)
            .set_inflight(inflight)
            .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
        if let Some(will) = will {
            options.set_last_will(will);
        }
        if let Some((user, password)) = &self.credentials {
            options.set_credentials(user.clone(), password.clone());
        }
        if let Some(tls) = &self.tls {
            options.set_transport(Transport::Tls(tls.clone()));
        }
        options
    }
}

/// TLS with the system's roots and the ring provider named explicitly, so embedding the
/// simulator needs no process-wide crypto provider.
fn tls_configuration() -> Result<TlsConfiguration, SimError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // One broken system certificate must not stop the others from working.
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SimError::Config(format!("tls: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConfiguration::Rustls(Arc::new(tls)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkState {
    /// Not connected (yet, or any more); the task keeps trying.
    Down,
    /// Connected; the number grows with every (re)connection, so whoever watches knows
    /// to announce itself again.
    Up(u64),
}

/// A connection and the task polling it.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) client: AsyncClient,
    pub(crate) state: watch::Receiver<LinkState>,
    kill: CancellationToken,
    task: JoinHandle<()>,
}

impl Link {
    /// Starts connecting; `capacity` bounds the requests queued for the socket.
    pub(crate) fn open(
        options: MqttOptions,
        capacity: usize,
        counters: Arc<LinkCounters>,
        tracker: &TaskTracker,
    ) -> Link {
        let (client, eventloop) = AsyncClient::new(options, capacity);
        let (state_tx, state) = watch::channel(LinkState::Down);
        let kill = CancellationToken::new();
        let task = tracker.spawn(poll_eventloop(eventloop, state_tx, kill.clone(), counters));
        Link {
            client,
            state,
            kill,
            task,
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        matches!(*self.state.borrow(), LinkState::Up(_))
    }

    /// Drops the connection without a DISCONNECT, as a gateway losing power or network
    /// would: the broker publishes the Last Will.
    pub(crate) fn sever(self) {
        self.kill.cancel();
    }

    /// Sends DISCONNECT after everything already queued, so the broker discards the Last
    /// Will, and waits (a little) for it to go out.
    pub(crate) async fn close(self) {
        if !self.is_up() {
            // Nobody to say goodbye to; do not wait for a reconnection.
            self.sever();
            return;
        }
        let Link {
            client, kill, task, ..
        } = self;
        let sent = tokio::time::timeout(CLOSE_TIMEOUT, client.disconnect()).await;
        if matches!(sent, Ok(Ok(()))) {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, task).await;
        }
        kill.cancel();
    }
}

async fn poll_eventloop(
    mut eventloop: rumqttc::EventLoop,
    state: watch::Sender<LinkState>,
    kill: CancellationToken,
    counters: Arc<LinkCounters>,
) {
    let client_id = eventloop.mqtt_options.client_id();
    let mut generation = 0;
    let mut failures = 0u32;
    let mut closing = false;
    loop {
        let event = tokio::select! {
            biased;
            () = kill.cancelled() => return,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                generation += 1;
                failures = 0;
                state.send_replace(LinkState::Up(generation));
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                counters.acked.fetch_add(1, Relaxed);
                counters.touch();
            }
            Ok(Event::Outgoing(Outgoing::Publish(_))) => {
                counters.written.fetch_add(1, Relaxed);
                counters.touch();
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                // Keep reading until the broker closes the connection: dropping a socket
                // with unread acknowledgements in it resets the connection, and the
                // broker then discards publishes it had not read yet.
                state.send_replace(LinkState::Down);
                closing = true;
            }
            Ok(_) => {}
            Err(_) if closing => return,
            Err(error) => {
                state.send_replace(LinkState::Down);
                failures += 1;
                // One warning per outage, not one per attempt per gateway.
                if failures == 1 {
                    warn!(message = "Gateway connection lost; retrying.", client = %client_id, %error);
                } else {
                    debug!(message = "Gateway reconnection failed.", client = %client_id, %error);
                }
                let pause = RECONNECT_DELAY.mul_f64(1.0 + fastrand::f64());
                tokio::select! {
                    () = kill.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

/// The Last Will of a gateway: `offline`, retained, on its status topic.
pub(crate) fn offline_will(status_topic: &str) -> LastWill {
    LastWill::new(
        status_topic,
        reserve::wire::Connectivity::Offline.payload(),
        QoS::AtLeastOnce,
        true,
    )
}
