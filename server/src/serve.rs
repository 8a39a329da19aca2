//! `stockpile serve`: wires the parts together and runs them until a signal or a
//! failure. Two-phase shutdown (mini-redis style): one token tells every task to stop,
//! then we wait for each to finish its work (ingest commits what it holds, acks only
//! that) before the process exits.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use api::districts::DistrictOutlines;
use chrono::Utc;
use ingest::{BrokerUrl, IngestConfig};
use live::{IngestMetrics, SharedLedger, TownChanges};
use reserve::{Ledger, Registry};
use store::{Store, StoreOptions};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Loaded};
use crate::reload::{ReloadSource, Reloader};

/// How often every town is recomputed even without readings: silence and staleness
/// depend on time alone.
const TICK: Duration = Duration::from_secs(5);

/// The running service's shared parts, for the API, the demo's console and tests.
#[derive(Debug, Clone)]
pub struct Shared {
    pub ledger: SharedLedger,
    pub ingest_metrics: Arc<IngestMetrics>,
    pub changes: Arc<TownChanges>,
    /// Alerts, acks, silences and notifications, as the API sees them.
    pub alerts: alerts::AlertsHandle,
    /// What store maintenance pruned and when, and the WAL's size, for metrics.
    pub store_maintenance: Arc<store::MaintenanceStats>,
}

impl Shared {
    /// The registry the ledger is on now: a reload replaces it
    /// (docs/design.md#registry-reload), so it is read where it is swapped.
    pub fn registry(&self) -> Arc<Registry> {
        Arc::clone(
            self.ledger
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .registry(),
        )
    }
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

/// [`run`], reloading the registry and the API tokens from `source` on SIGHUP and on
/// `POST /api/v1/registry/reload` (docs/design.md#registry-reload).
pub async fn run_reloadable(
    loaded: Loaded,
    source: ReloadSource,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    Service::start_with(loaded, Some(source), shutdown)
        .await?
        .wait()
        .await
}

/// Installs rustls' ring crypto provider once per process: rumqttc, lettre and the
/// HTTP clients all build their TLS configs from the process default.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// How often the outbox counts the `ops` series reports are refreshed (the sink asks
/// for them synchronously, so a task keeps a recent copy).
const OPS_COUNTS_EVERY: Duration = Duration::from_secs(5);
/// How long `POST /api/v1/facilities/{id}/readings` waits for its count's commit
/// before answering 503: well inside the API's 30 s request timeout.
const MANUAL_COMMIT_WAIT: Duration = Duration::from_secs(10);

/// Everything a service needs, built and checked, nothing running yet (zero2prod's
/// build-then-run): a part that cannot start (port taken, store unreadable, bad
/// InfluxDB settings) fails here, before any task is spawned.
struct Parts {
    shared: Shared,
    alerts: alerts::Alerts,
    maintenance: store::Maintenance,
    ingest_config: IngestConfig,
    /// The store ingest writes through, with the ledger already rebuilt from it.
    ingest_store: Store,
    /// Counts entered by hand, from the API to the ingest writer.
    manual_queue: live::ManualQueue,
    /// New registries, from a reload to the ingest writer.
    registry_swaps: ingest::RegistrySwaps,
    /// The reload SIGHUP runs, when the service reloads at all.
    reloader: Option<Arc<Reloader>>,
    api_state: api::AppState,
    listener: tokio::net::TcpListener,
    /// The InfluxDB sink's settings, when an `[influx]` section is configured.
    influx: Option<store::influx::InfluxSinkConfig>,
    store_path: std::path::PathBuf,
    stress_test: Option<crate::stress_test::StressTest>,
    /// A cluster instance's alert state, published for the city.
    cluster_state: Option<crate::cluster_state::Publisher>,
}

impl Parts {
    async fn build(loaded: Loaded, reload: Option<ReloadSource>) -> anyhow::Result<Parts> {
        let Loaded {
            mut config,
            registry,
            registry_source,
        } = loaded;
        if config.mqtt.embedded_broker {
            start_embedded_broker(&config)?;
        }
        for warning in crate::cli::warnings(&config, &registry) {
            tracing::warn!(message = "The configuration leaves a gap.", %warning);
        }
        // Officer tokens may name towns of other shards: resolve them against the whole
        // registry, before it is narrowed to this instance's towns.
        let auth = auth_config(&config, &registry)?;
        let registry = Arc::new(shard_registry(&mut config, registry));
        tracing::info!(
            message = "Registry loaded.",
            registry = %registry_source.path.display(),
            towns = registry.towns.len(),
            facilities = registry.facilities.len()
        );

        let (ingest_store, ledger) = rebuild_ledger(&config, &registry)?;
        let channels = alerts::Channels::from_config(
            config.smtp.as_ref(),
            config.sms.as_ref(),
            &config.webhook,
        )
        .context("notification channels")?;
        let alerts = alerts::Alerts::open(
            alerts_config(&config),
            Arc::clone(&registry),
            &config.store.path,
            store_options(&config),
            channels,
        )
        .context("start alerting")?;
        let activations = crate::activations::load(&open_store(&config)?)?;
        let alerts = alerts.with_activations(activations.clone());
        let maintenance = open_maintenance(&config)?;
        let shared = Shared {
            ledger: Arc::new(RwLock::new(ledger)),
            ingest_metrics: Arc::new(IngestMetrics::default()),
            changes: Arc::new(TownChanges::default()),
            alerts: alerts.handle(),
            store_maintenance: maintenance.stats(),
        };
        let (influx, history) = history_source(&config)?;
        let ingest_config = ingest_config(&config, &registry)?;
        let cluster_state = crate::cluster_state::Publisher::from_config(&config, &ingest_config)?;
        let districts = config.board.districts.clone();
        let api_state = api::AppState::new(
            Arc::clone(&shared.ledger),
            open_store(&config)?,
            Arc::clone(&shared.ingest_metrics),
            Arc::clone(&shared.changes),
            auth,
        )
        .with_alerts(shared.alerts.clone())
        .with_history(history)
        .with_districts(districts.unwrap_or_else(DistrictOutlines::none))
        .with_activations(activations);
        let (manual, manual_queue) = live::ManualReadings::channel(
            ingest_config.mqtt.max_readings_per_message,
            ingest_config.retention,
            MANUAL_COMMIT_WAIT,
        );
        let api_state = api_state.with_manual_readings(manual);
        let api_state = with_phone_acks(api_state, &config);
        let (api_state, registry_swaps, reloader) =
            with_reload(api_state, reload, &shared, &config)?;
        let listener = tokio::net::TcpListener::bind(&config.api.listen)
            .await
            .with_context(|| format!("api.listen: cannot listen on {}", config.api.listen))?;
        let stress_test = crate::stress_test::StressTest::build(&config, &shared.ledger)?;
        Ok(Parts {
            shared,
            alerts,
            maintenance,
            ingest_config,
            ingest_store,
            manual_queue,
            registry_swaps,
            reloader,
            api_state,
            listener,
            influx,
            store_path: config.store.path.clone(),
            stress_test,
            cluster_state,
        })
    }
}

/// The registry reload (docs/design.md#registry-reload) when the service reloads: the
/// API's route to it, the ingest writer's input, and the reload SIGHUP runs. Without
/// one, a registry input nobody sends to.
fn with_reload(
    api_state: api::AppState,
    reload: Option<ReloadSource>,
    shared: &Shared,
    config: &Config,
) -> anyhow::Result<(api::AppState, ingest::RegistrySwaps, Option<Arc<Reloader>>)> {
    let (swapper, registry_swaps) = ingest::RegistrySwaps::channel();
    let Some(source) = reload else {
        return Ok((api_state, registry_swaps, None));
    };
    let reloader = Arc::new(Reloader::new(
        source,
        Arc::clone(&shared.ledger),
        swapper,
        shared.alerts.clone(),
        api_state.clone(),
        store::AsyncStore::new(open_store(config)?),
    ));
    let api_state = api_state.with_registry_reload(Arc::clone(&reloader) as _);
    Ok((api_state, registry_swaps, Some(reloader)))
}

/// Opens the store ingest writes through and rebuilds the ledger from it: the latest
/// snapshot, then the readings stored since.
fn rebuild_ledger(config: &Config, registry: &Arc<Registry>) -> anyhow::Result<(Store, Ledger)> {
    let mut ingest_store = open_store(config)?;
    let mut ledger = Ledger::with_forecast(
        Arc::clone(registry),
        config.alerts.forecast_min_span.as_secs_f64() / 3600.0,
    );
    let restored = ingest::restore_ledger(&mut ingest_store, &mut ledger)
        .with_context(|| format!("rebuild the ledger from {}", config.store.path.display()))?;
    tracing::info!(
        message = "Ledger rebuilt from the store.",
        facilities = restored.facilities,
        replayed = restored.replayed,
        store = %config.store.path.display()
    );
    Ok((ingest_store, ledger))
}

/// Retention and WAL checkpoints, on a connection of their own.
fn open_maintenance(config: &Config) -> anyhow::Result<store::Maintenance> {
    store::Maintenance::open(
        &config.store.path,
        store_options(config),
        config.store.maintenance(),
    )
    .with_context(|| {
        format!(
            "open the store {} for maintenance",
            config.store.path.display()
        )
    })
}

/// Where history comes from (InfluxDB when configured, else the SQLite store), and
/// the InfluxDB sink's settings when there is one.
fn history_source(
    config: &Config,
) -> anyhow::Result<(
    Option<store::influx::InfluxSinkConfig>,
    store::history::HistorySource,
)> {
    Ok(match &config.influx {
        Some(influx) => {
            let endpoint = influx.endpoint()?;
            let history =
                store::history::InfluxHistory::new(&endpoint).context("influx history")?;
            let sink =
                store::influx::InfluxSinkConfig::new(endpoint, config.mqtt.client_id.clone());
            (Some(sink), store::history::HistorySource::Influx(history))
        }
        None => (
            None,
            store::history::HistorySource::Sqlite(store::AsyncStore::new(open_store(config)?)),
        ),
    })
}

/// The tasks of a running service, and the one way a part's failure is reported.
struct Running {
    tracker: TaskTracker,
    shutdown: CancellationToken,
    /// The first part that failed, and why; it cancelled everything.
    failure: Arc<std::sync::Mutex<Option<anyhow::Error>>>,
}

impl Running {
    /// Runs `part` as a tracked task; an error from it stops the whole service and
    /// becomes the process's exit status (Stockpile must not die quietly).
    fn spawn_part<E>(
        &self,
        name: &'static str,
        part: impl std::future::Future<Output = Result<(), E>> + Send + 'static,
    ) where
        E: std::error::Error + Send + Sync + 'static,
    {
        let failure = Arc::clone(&self.failure);
        let shutdown = self.shutdown.clone();
        self.tracker.spawn(async move {
            if let Err(error) = part.await {
                let error = anyhow::Error::new(error).context(name);
                tracing::error!(message = "A part of the service failed; stopping.", error = %format!("{error:#}"));
                failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(error);
                shutdown.cancel();
            }
        });
    }
}

impl Service {
    /// Builds every part (embedded broker if configured, store, ledger rebuilt from it,
    /// alerting, maintenance, InfluxDB, the HTTP listener), then runs them all. Fails
    /// before any task runs when a part cannot start (port taken, store unreadable).
    pub async fn start(loaded: Loaded, shutdown: CancellationToken) -> anyhow::Result<Service> {
        Service::start_with(loaded, None, shutdown).await
    }

    /// [`Service::start`], reloading from `reload` on SIGHUP and on
    /// `POST /api/v1/registry/reload` when given.
    pub async fn start_with(
        loaded: Loaded,
        reload: Option<ReloadSource>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Service> {
        install_crypto_provider();
        let parts = Parts::build(loaded, reload).await?;
        let running = Running {
            tracker: TaskTracker::new(),
            shutdown,
            failure: Arc::default(),
        };
        let Parts {
            shared,
            alerts,
            maintenance,
            ingest_config,
            ingest_store,
            manual_queue,
            registry_swaps,
            reloader,
            api_state,
            listener,
            influx,
            store_path,
            stress_test,
            cluster_state,
        } = parts;
        // The sink checks its settings and opens its connection before it spawns
        // anything: the last fallible step, so a failure leaves nothing running.
        if let Some(sink) = influx {
            start_sink(sink, &store_path, &shared, &running)?;
            let options = StoreOptions {
                influx_queue: true,
                ..StoreOptions::default()
            };
            crate::activations::spawn_progress(
                &store_path,
                options,
                &running.tracker,
                running.shutdown.clone(),
            )?;
        }
        // Consumers subscribe before ingest starts, so they miss no change.
        running.spawn_part(
            "alerts",
            alerts.run(
                Arc::clone(&shared.ledger),
                shared.changes.subscribe(),
                running.shutdown.clone(),
            ),
        );
        running.spawn_part(
            "ingest",
            ingest::run_reloadable(
                ingest_config,
                Arc::clone(&shared.ledger),
                ingest_store,
                Arc::clone(&shared.ingest_metrics),
                Arc::clone(&shared.changes),
                manual_queue,
                registry_swaps,
                running.shutdown.clone(),
            ),
        );
        if let Some(reloader) = reloader {
            // Installed now, before the service says it is up: a SIGHUP that came
            // before its handler would stop the process (the default action).
            if let Some(on_sighup) = reload_on_sighup(reloader, running.shutdown.clone()) {
                running.tracker.spawn(on_sighup);
            }
        }
        let api_addr = listener.local_addr()?;
        tracing::info!(message = "HTTP API and wall board listening.", url = %format!("http://{api_addr}/"));
        running.spawn_part(
            "http api",
            api::serve(listener, api_state, running.shutdown.clone()),
        );
        maintenance.spawn(&running.tracker, running.shutdown.clone());
        if let Some(stress_test) = stress_test {
            stress_test.spawn(&running.tracker, running.shutdown.clone());
        }
        if let Some(cluster_state) = cluster_state {
            cluster_state.spawn(
                &running.tracker,
                shared.alerts.clone(),
                running.shutdown.clone(),
            );
        }
        running.tracker.spawn(tick(
            Arc::clone(&shared.ledger),
            Arc::clone(&shared.changes),
            running.shutdown.clone(),
        ));

        running.tracker.close();
        Ok(Service {
            shared,
            api_addr,
            tracker: running.tracker,
            shutdown: running.shutdown,
            failure: running.failure,
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

fn store_options(config: &Config) -> StoreOptions {
    StoreOptions {
        // Per-reading InfluxDB lines are queued in the ingest transaction itself.
        influx_queue: config.influx.is_some(),
        ..StoreOptions::default()
    }
}

fn open_store(config: &Config) -> anyhow::Result<Store> {
    let options = store_options(config);
    Store::open(&config.store.path, options)
        .with_context(|| format!("open the store {}", config.store.path.display()))
}

pub(crate) fn auth_config(config: &Config, registry: &Registry) -> anyhow::Result<api::AuthConfig> {
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
            token: token.clone(),
            towns,
        });
    }
    Ok(api::AuthConfig {
        public_read: config.api.public_read,
        tokens,
    })
}

/// Acknowledging from a phone (docs/design.md#acknowledging-from-a-phone): the pages
/// of signed links when `[api]` has a public URL and a key, the SMS reply webhook when
/// `[sms]` is configured.
fn with_phone_acks(state: api::AppState, config: &Config) -> api::AppState {
    let state = match config.api.ack_links() {
        Some(links) => state.with_ack_links(links, config.alerts.utc_offset),
        None => state,
    };
    let Some(sms) = &config.sms else {
        return state;
    };
    if sms.inbound_auth_token.is_none() {
        tracing::warn!(
            message = "SMS replies are refused: set sms.inbound_auth_token (and api.public_url) so that the provider's signed replies can acknowledge."
        );
    }
    state.with_sms_inbound(api::SmsInbound {
        auth_token: sms.inbound_auth_token.clone(),
        public_url: config.api.public_url.clone(),
    })
}

/// `[alerts]` with what other sections decide: the URL messages quote, and whether the
/// InfluxDB sink drains an `alert` series.
fn alerts_config(config: &Config) -> alerts::AlertsConfig {
    alerts::AlertsConfig {
        public_url: Some(config.api.message_url()),
        ack_links: config.api.ack_links(),
        influx_series: config.influx.is_some(),
        ..config.alerts.clone()
    }
}

/// With a shard (docs/design.md#scale-out-by-town): the registry narrowed to the shard's
/// towns, and the config's client id made the instance's own. Without one, both
/// unchanged.
pub(crate) fn shard_registry(config: &mut Config, registry: Registry) -> Registry {
    let registry = scope_registry(config, registry);
    let Some(shard) = config.mqtt.shard else {
        return registry;
    };
    config.mqtt.client_id = config.mqtt.instance_client_id();
    let part = shard.registry(&registry);
    tracing::info!(
        message = "Running as one shard of the towns.",
        %shard,
        towns = part.towns.len(),
        of_towns = registry.towns.len(),
        client_id = %config.mqtt.client_id
    );
    if part.towns.is_empty() {
        tracing::warn!(
            message = "No town of the registry hashes to this shard; it will receive nothing.",
            %shard
        );
    }
    part
}

/// With a `[scope]` (docs/design.md#cluster-instance): the registry narrowed to the
/// cluster instance's towns; without one, unchanged.
fn scope_registry(config: &Config, registry: Registry) -> Registry {
    let Some(scope) = &config.scope else {
        return registry;
    };
    let part = scope.registry(&registry);
    tracing::info!(
        message = "Running as a cluster instance: only the towns of its scope.",
        cluster = scope.cluster.as_deref().unwrap_or("-"),
        towns = part.towns.len(),
        of_towns = registry.towns.len()
    );
    part
}

/// `[mqtt]` with what ingest needs beside it: the CA file's content (only the server
/// reads files), the store's retention and snapshot interval, a shard's towns.
fn ingest_config(config: &Config, registry: &Registry) -> anyhow::Result<IngestConfig> {
    let mut ingest = IngestConfig::from_section(config.mqtt.clone()).context("mqtt.url")?;
    if let Some(ca) = &config.mqtt.ca_file {
        ingest.ca_pem =
            Some(std::fs::read(ca).with_context(|| format!("mqtt.ca_file {}", ca.display()))?);
    }
    ingest.retention = config.store.retention;
    ingest.snapshot_every = config.store.snapshot_every;
    // A whole shard (`0/1`) keeps the two wildcard filters instead of one per town; a
    // cluster instance's broker may carry other towns' topics (the bridge's both ways).
    if config.mqtt.shard.is_some_and(|s| !s.is_whole()) || config.scope.is_some() {
        ingest.towns = Some(registry.towns.iter().map(|t| t.id.to_string()).collect());
    }
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
                // A warning level running out moves targets and the engine's timings.
                let warning = before.warning.as_ref().map(|w| w.set.id);
                let after = ledger.refresh(town, now);
                if after.status != status
                    || after.silent != silent
                    || after.warning.as_ref().map(|w| w.set.id) != warning
                {
                    moved.push(town);
                }
            }
        }
        if !moved.is_empty() {
            changes.publish(moved);
        }
    }
}

/// Takes SIGHUP from now on and returns the task that reloads the registry on each, as
/// nginx and Mosquitto do, until shutdown; `None` when the signal cannot be taken. The
/// outcome goes to the log and the audit log: a signal has nobody to answer.
#[cfg(unix)]
fn reload_on_sighup(
    reloader: Arc<Reloader>,
    shutdown: CancellationToken,
) -> Option<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(error) => {
            tracing::warn!(message = "Cannot listen for SIGHUP; reload through the API instead.", %error);
            return None;
        }
    };
    Some(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                received = hangups.recv() => if received.is_none() { return },
            }
            tracing::info!(message = "SIGHUP received: reloading the registry.");
            let request = api::ReloadRequest {
                actor: "SIGHUP".to_owned(),
                via: "signal",
                remote: String::new(),
            };
            // Logged and audited by the reload itself.
            let _ = reloader.reload(request).await;
        }
    })
}

#[cfg(not(unix))]
fn reload_on_sighup(
    _reloader: Arc<Reloader>,
    _shutdown: CancellationToken,
) -> Option<std::future::Ready<()>> {
    None
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

fn start_embedded_broker(config: &Config) -> anyhow::Result<()> {
    let broker = BrokerUrl::parse(&config.mqtt.url).context("mqtt.url")?;
    let addr = format!("{}:{}", broker.host, broker.port)
        .parse()
        .context("mqtt.url: the embedded broker needs an IP address, e.g. 127.0.0.1")?;
    crate::broker::start(addr)?;
    tracing::warn!(
        message = "Embedded MQTT broker started: it keeps messages in memory only, for trying Stockpile, not for production.",
        %addr
    );
    Ok(())
}

/// Starts the InfluxDB sink with the `ops` counts it reports: ingest's counters and the
/// outbox's, the latter kept fresh by a small task because the sink asks synchronously.
fn start_sink(
    sink: store::influx::InfluxSinkConfig,
    store_path: &std::path::Path,
    shared: &Shared,
    running: &Running,
) -> anyhow::Result<()> {
    let ops_counts = Arc::new(std::sync::Mutex::new(alerts::Counts::default()));
    let metrics = Arc::clone(&shared.ingest_metrics);
    let sink_changes = shared.changes.subscribe();
    let counts = Arc::clone(&ops_counts);
    store::influx::Sink::start(
        sink,
        store_path,
        Arc::clone(&shared.ledger),
        move || {
            let c = Arc::clone(&sink_changes);
            async move { Some(c.changed().await) }
        },
        move || {
            let i = metrics.counts();
            let a = *counts.lock().unwrap_or_else(|p| p.into_inner());
            store::influx::OpsCounts {
                received: i.received,
                accepted: i.accepted,
                rejected: i.rejected_total(),
                duplicates: i.duplicates,
                outbox_pending: a.notifications_pending,
                outbox_failed: a.notifications_failed,
                store_paused: u64::from(i.store_paused),
            }
        },
        &running.tracker,
        running.shutdown.clone(),
    )
    .context("start the InfluxDB sink")?;
    let handle = shared.alerts.clone();
    let shutdown = running.shutdown.clone();
    running.tracker.spawn(async move {
        loop {
            if let Ok(c) = handle.counts().await {
                *ops_counts.lock().unwrap_or_else(|p| p.into_inner()) = c;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(OPS_COUNTS_EVERY) => {}
            }
        }
    });
    Ok(())
}
