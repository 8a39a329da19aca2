//! `stockpile serve`: wires the parts together and runs them until a signal or a
//! failure. Two-phase shutdown (mini-redis style): one token tells every task to stop,
//! then we wait for each to finish its work (ingest commits what it holds, acks only
//! that) before the process exits.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use ingest::{BrokerUrl, IngestConfig, IngestMetrics, SharedLedger, TownChanges};
use reserve::{Ledger, Registry};
use store::{Store, StoreOptions};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Loaded};

/// How often every town is recomputed even without readings: silence and staleness
/// depend on time alone.
const TICK: Duration = Duration::from_secs(5);

/// The running service's shared parts, for the API, the demo's console and tests.
#[derive(Debug, Clone)]
pub struct Shared {
    pub registry: Arc<Registry>,
    pub ledger: SharedLedger,
    pub ingest_metrics: Arc<IngestMetrics>,
    pub changes: Arc<TownChanges>,
}

/// A started service: its tasks run until the shutdown token is cancelled.
#[derive(Debug)]
pub struct Service {
    pub shared: Shared,
    /// Where the HTTP API and board listen (the real port when configured with `:0`).
    pub api_addr: std::net::SocketAddr,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    failure: Arc<std::sync::Mutex<Option<anyhow::Error>>>,
}

/// Runs the service until `shutdown` is cancelled (by a signal) or a part fails.
/// Returns an error when a part failed, so the process exits non-zero and its
/// supervisor restarts it: Stockpile must not die quietly.
pub async fn run(loaded: Loaded, shutdown: CancellationToken) -> anyhow::Result<()> {
    Service::start(loaded, shutdown).await?.wait().await
}

/// Installs rustls' ring crypto provider once per process: rumqttc, lettre and the
/// HTTP clients all build their TLS configs from the process default.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Service {
    /// Starts every part: embedded broker if configured, store, ledger rebuilt from it,
    /// ingest, the HTTP API, the refresh timer. Fails before anything runs when a part
    /// cannot start (port taken, store unreadable).
    pub async fn start(loaded: Loaded, shutdown: CancellationToken) -> anyhow::Result<Service> {
        install_crypto_provider();
        let Loaded {
            config,
            registry,
            registry_source,
        } = loaded;
        if config.mqtt.embedded_broker {
            let broker = BrokerUrl::parse(&config.mqtt.url).context("mqtt.url")?;
            let addr = format!("{}:{}", broker.host, broker.port)
                .parse()
                .context("mqtt.url: the embedded broker needs an IP address, e.g. 127.0.0.1")?;
            crate::broker::start(addr)?;
            tracing::warn!(
                message = "Embedded MQTT broker started: it keeps messages in memory only, for trying Stockpile, not for production.",
                %addr
            );
        }
        let registry = Arc::new(registry);
        tracing::info!(
            message = "Registry loaded.",
            registry = %registry_source.path.display(),
            towns = registry.towns.len(),
            facilities = registry.facilities.len()
        );

        let store = open_store(&config)?;
        let mut ledger = Ledger::new(Arc::clone(&registry));
        let restored = ingest::restore_ledger(&store, &mut ledger)
            .with_context(|| format!("rebuild the ledger from {}", config.store.path.display()))?;
        tracing::info!(
            message = "Ledger rebuilt from the store.",
            facilities = restored,
            store = %config.store.path.display()
        );

        let shared = Shared {
            registry: Arc::clone(&registry),
            ledger: Arc::new(RwLock::new(ledger)),
            ingest_metrics: Arc::new(IngestMetrics::default()),
            changes: Arc::new(TownChanges::default()),
        };
        let tracker = TaskTracker::new();
        // A part that fails cancels everything; `failure` remembers why.
        let failure: Arc<std::sync::Mutex<Option<anyhow::Error>>> = Arc::default();
        let fail = {
            let failure = Arc::clone(&failure);
            let shutdown = shutdown.clone();
            move |error: anyhow::Error| {
                tracing::error!(message = "A part of the service failed; stopping.", error = %format!("{error:#}"));
                failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(error);
                shutdown.cancel();
            }
        };

        let ingest_config = ingest_config(&config)?;
        tracker.spawn({
            let (ledger, metrics, changes) = (
                Arc::clone(&shared.ledger),
                Arc::clone(&shared.ingest_metrics),
                Arc::clone(&shared.changes),
            );
            let shutdown = shutdown.clone();
            let fail = fail.clone();
            async move {
                if let Err(e) =
                    ingest::run(ingest_config, ledger, store, metrics, changes, shutdown).await
                {
                    fail(anyhow::Error::new(e).context("ingest"));
                }
            }
        });
        let api_state = api::AppState::new(
            Arc::clone(&shared.ledger),
            open_store(&config)?,
            Arc::clone(&shared.ingest_metrics),
            Arc::clone(&shared.changes),
            auth_config(&config, &registry)?,
        );
        let listener = tokio::net::TcpListener::bind(&config.api.listen)
            .await
            .with_context(|| format!("api.listen: cannot listen on {}", config.api.listen))?;
        let api_addr = listener.local_addr()?;
        tracing::info!(message = "HTTP API and wall board listening.", url = %format!("http://{api_addr}/"));
        tracker.spawn({
            let shutdown = shutdown.clone();
            let fail = fail.clone();
            async move {
                if let Err(e) = api::serve(listener, api_state, shutdown).await {
                    fail(anyhow::Error::new(e).context("http api"));
                }
            }
        });
        tracker.spawn(tick(
            Arc::clone(&shared.ledger),
            Arc::clone(&shared.changes),
            shutdown.clone(),
        ));

        tracker.close();
        Ok(Service {
            shared,
            api_addr,
            tracker,
            shutdown,
            failure,
        })
    }

    /// Waits for the shutdown token, then for every task to finish its work.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.shutdown.cancelled().await;
        tracing::info!(message = "Shutting down: finishing in-flight work.");
        self.tracker.wait().await;
        let failed = self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match failed {
            Some(error) => Err(error),
            None => {
                tracing::info!(message = "Stopped cleanly.");
                Ok(())
            }
        }
    }
}

fn open_store(config: &Config) -> anyhow::Result<Store> {
    let options = StoreOptions {
        retention: config.store.retention,
        ..StoreOptions::default()
    };
    Store::open(&config.store.path, options)
        .with_context(|| format!("open the store {}", config.store.path.display()))
}

fn auth_config(config: &Config, registry: &Registry) -> anyhow::Result<api::AuthConfig> {
    let mut tokens = Vec::new();
    for t in &config.api.tokens {
        // check-config has already verified the secret and the towns; this only converts.
        let token = t
            .token
            .as_ref()
            .with_context(|| format!("api.tokens: token {:?} has no secret", t.name))?;
        let towns = t
            .towns
            .iter()
            .map(|id| {
                registry
                    .town_idx(id)
                    .map(|i| registry.town(i).id.clone())
                    .with_context(|| format!("api.tokens: {:?}: unknown town {id:?}", t.name))
            })
            .collect::<anyhow::Result<_>>()?;
        tokens.push(api::TokenEntry {
            name: t.name.clone(),
            role: t.role,
            token: token.expose().to_owned(),
            towns,
        });
    }
    Ok(api::AuthConfig {
        public_read: config.api.public_read,
        tokens,
    })
}

fn ingest_config(config: &Config) -> anyhow::Result<IngestConfig> {
    let broker = BrokerUrl::parse(&config.mqtt.url).context("mqtt.url")?;
    let mut ingest = IngestConfig::new(broker, config.mqtt.client_id.clone());
    ingest.username = config.mqtt.username.clone();
    ingest.password = config.mqtt.password.as_ref().map(|s| s.expose().to_owned());
    if let Some(ca) = &config.mqtt.ca_file {
        ingest.ca_pem =
            Some(std::fs::read(ca).with_context(|| format!("mqtt.ca_file {}", ca.display()))?);
    }
    ingest.retention = config.store.retention;
    Ok(ingest)
}

/// Recomputes every town on a timer, because silence is a matter of time passing, and
/// tells downstream consumers about the towns whose figures moved.
async fn tick(ledger: SharedLedger, changes: Arc<TownChanges>, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let now = Utc::now();
        let mut moved = Vec::new();
        {
            let mut ledger = ledger.write().unwrap_or_else(|p| p.into_inner());
            let registry: Arc<Registry> = Arc::clone(ledger.registry());
            for town in registry.town_indices() {
                let before = ledger.figures(town);
                let (status, silent) = (before.status, before.silent.clone());
                let after = ledger.refresh(town, now);
                if after.status != status || after.silent != silent {
                    moved.push(town);
                }
            }
        }
        if !moved.is_empty() {
            changes.publish(moved);
        }
    }
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
pub fn cancel_on_signals(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => tracing::info!(message = "SIGINT received."),
            _ = term => tracing::info!(message = "SIGTERM received."),
        }
        shutdown.cancel();
    });
}
