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

/// The running service's shared parts, for the API and tests.
#[derive(Debug, Clone)]
pub struct Shared {
    pub ledger: SharedLedger,
    pub ingest_metrics: Arc<IngestMetrics>,
    pub changes: Arc<TownChanges>,
}

/// Installs rustls' ring crypto provider once per process: rumqttc, lettre and the
/// HTTP clients all build their TLS configs from the process default.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Runs the service until `shutdown` is cancelled (by a signal) or a part fails.
/// Returns an error when a part failed, so the process exits non-zero and its
/// supervisor restarts it: Stockpile must not die quietly.
pub async fn run(loaded: Loaded, shutdown: CancellationToken) -> anyhow::Result<()> {
    install_crypto_provider();
    let Loaded {
        config,
        registry,
        registry_source,
    } = loaded;
    if config.mqtt.embedded_broker {
        anyhow::bail!(
            "mqtt.embedded_broker = true is not supported by `serve` yet; connect to a broker \
             (Mosquitto, EMQX) with mqtt.url"
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
    tracker.spawn(tick(
        Arc::clone(&shared.ledger),
        Arc::clone(&shared.changes),
        shutdown.clone(),
    ));

    tracker.close();
    shutdown.cancelled().await;
    tracing::info!(message = "Shutting down: finishing in-flight work.");
    tracker.wait().await;
    let failed = failure.lock().unwrap_or_else(|p| p.into_inner()).take();
    match failed {
        Some(error) => Err(error),
        None => {
            tracing::info!(message = "Stopped cleanly.");
            Ok(())
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
