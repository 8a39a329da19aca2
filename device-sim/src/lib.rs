//! Gateway simulator: scenarios, faults and load generation. It speaks only the wire
//! contract ([`reserve::wire`], docs/design.md#mqtt-contract), so what it publishes is
//! exactly what a real gateway would.
//!
//! - **Scenario runs** ([`SimConfig::scenario`]): one simulated gateway per facility of
//!   the registry, publishing at its `report_every` (± 10 % jitter) with QoS 1, with a
//!   retained `online` status on connect and `offline` as its Last Will, buffering while
//!   disconnected and sending the backlog as an array. What the readings say follows the
//!   [`Scenario`]: consumption on a daily curve scaled by population, restocks, leaks,
//!   pump faults, generator self-tests and fuel burn, battery drift, silent gateways,
//!   comms cuts, sheltered influx.
//! - **Faults** on demand ([`Fault`]): a stuck sensor, a gateway dying without its Last
//!   Will, clock skew, and one malformed message per reject reason.
//! - **Load runs** ([`SimConfig::load`]): a fixed rate of readings for a fixed time,
//!   reporting the rate the broker took.
//! - **Acceleration** ([`SimConfig::speed`]): stamps stay on the wall clock and each
//!   reading carries `speed` times the consumption of its interval (why: see the
//!   `gateway` module); the report gives the simulated hours.
//!
//! The library is what `stockpile demo` embeds: no process-global state, the registry
//! and broker URL come in, and [`Simulator::run`] stops on a `CancellationToken`.
//!
//! ```no_run
//! # async fn demo(registry: std::sync::Arc<reserve::Registry>) -> Result<(), device_sim::SimError> {
//! use device_sim::{Scenario, SimConfig, Simulator};
//! let mut config = SimConfig::new("mqtt://127.0.0.1:1883", Scenario::builtin("flood")?);
//! config.speed = 60.0; // an hour a minute
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let report = Simulator::new(registry, config)?.run(shutdown).await?;
//! println!("{} readings", report.readings);
//! # Ok(()) }
//! ```

mod config;
mod driver;
mod gateway;
mod link;
mod load;
mod malformed;
mod model;
mod plan;
mod report;
mod scenario;
mod shelter;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use chrono::{TimeDelta, Timelike, Utc};
use reserve::Registry;
use rumqttc::QoS;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::{ClientMode, Fault, LoadConfig, Qos, SimConfig, Targets};
pub use report::{
    CommsCutReport, FaultReport, LoadReport, MalformedSent, ShelteredTown, SimReport,
};
pub use scenario::{
    CommsCut, GatewayBehaviour, PowerMode, PowerUnitBehaviour, Scenario, ScenarioError,
    ShelteredInflux, WarehouseBehaviour, WaterPointBehaviour, builtin_names,
};

use crate::driver::{Run, Stats};
use crate::link::{Broker, Link, LinkCounters, LinkState};
use crate::load::LoadRun;
use crate::plan::{Plan, ResolvedTargets, plan};

/// Fastest acceleration accepted: a simulated year in under a minute is already
/// meaningless for readings a second apart.
pub const MAX_SPEED: f64 = 1_000_000.0;
/// Shortest interval between two readings of one gateway.
pub const MIN_REPORT_EVERY: Duration = Duration::from_millis(10);
/// How long the malformed fault waits for its connection.
const FAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error("could not connect to the broker at {url} within {}s", timeout.as_secs())]
    Connect { url: String, timeout: Duration },
}

/// A configured simulator; [`Simulator::run`] runs it.
#[derive(Debug)]
pub struct Simulator {
    registry: Arc<Registry>,
    config: SimConfig,
    broker: Broker,
    targets: ResolvedTargets,
}

impl Simulator {
    /// Checks the configuration against the registry: speed, intervals, the broker URL,
    /// the clusters and towns targeted.
    pub fn new(registry: Arc<Registry>, config: SimConfig) -> Result<Simulator, SimError> {
        if !(config.speed.is_finite() && config.speed > 0.0 && config.speed <= MAX_SPEED) {
            return Err(SimError::Config(format!(
                "speed {} must be above 0 and at most {MAX_SPEED}",
                config.speed
            )));
        }
        if config.report_every.is_some_and(|d| d < MIN_REPORT_EVERY) {
            return Err(SimError::Config(format!(
                "report_every must be at least {}ms",
                MIN_REPORT_EVERY.as_millis()
            )));
        }
        if config.clients == ClientMode::Multiplexed(0) {
            return Err(SimError::Config(
                "multiplexed clients need at least one connection".into(),
            ));
        }
        if !(-14.0..=14.0).contains(&config.utc_offset_h) {
            return Err(SimError::Config(format!(
                "utc_offset_h {} is not a time zone offset",
                config.utc_offset_h
            )));
        }
        for category in config.scenario.warehouse.consumption_by_category.keys() {
            if registry.category_idx(category).is_none() {
                warn!(
                    message = "Scenario names a category the registry does not have; ignored.",
                    scenario = %config.scenario.name,
                    %category
                );
            }
        }
        let broker = Broker::new(&config)?;
        let targets =
            ResolvedTargets::resolve(&registry, &config.targets.clusters, &config.targets.towns)?;
        Ok(Simulator {
            registry,
            config,
            broker,
            targets,
        })
    }

    /// Runs until `shutdown` fires or the configured duration has passed (a load run:
    /// its own duration), then stops every gateway cleanly and reports.
    pub async fn run(self, shutdown: CancellationToken) -> Result<SimReport, SimError> {
        let config = &self.config;
        let registry = &self.registry;
        let local_now =
            Utc::now() + TimeDelta::seconds((config.utc_offset_h * 3600.0).round() as i64);
        let day_offset_h = f64::from(local_now.num_seconds_from_midnight()) / 3600.0;
        let plan = plan(registry, config, &self.targets, day_offset_h)?;
        let start = Instant::now();
        let tracker = TaskTracker::new();
        let stop = shutdown.child_token();
        let gateways = plan.gateways.len();
        info!(
            message = "Simulator started.",
            scenario = %config.scenario.name,
            broker = %self.broker.url(),
            gateways,
            speed = config.speed,
            seed = config.seed
        );
        for &(town, people) in &plan.sheltered {
            info!(
                message = "Town takes in displaced people; set it with PUT /api/v1/towns/{id}/sheltered.",
                town = %registry.town(town).id,
                sheltered = people,
                at_h = config.scenario.sheltered.at_h
            );
        }

        let mut report = self.empty_report(&plan);
        if let Some(load) = config.load {
            let outcome = LoadRun {
                config: load,
                broker: &self.broker,
                client_id_prefix: &config.client_id_prefix,
                speed: config.speed,
                tracker: &tracker,
            }
            .run(plan.gateways, &stop)
            .await;
            stop.cancel();
            tracker.close();
            tracker.wait().await;
            let load = outcome?;
            report.connections = load.connections;
            report.readings = load.sent;
            report.reading_messages = load.sent;
            report.written = load.sent;
            report.acked = if load.qos == Qos::AtLeastOnce {
                load.confirmed
            } else {
                0
            };
            report.load = Some(load);
        } else {
            if let Some(duration) = config.duration {
                let stop = stop.clone();
                tracker.spawn(async move {
                    tokio::select! {
                        () = tokio::time::sleep(duration) => stop.cancel(),
                        () = stop.cancelled() => {}
                    }
                });
            }
            let counters = Arc::new(LinkCounters::new(start));
            let malformed = config.faults.contains(&Fault::Malformed).then(|| {
                tracker.spawn(send_malformed(
                    registry.clone(),
                    self.broker.clone(),
                    format!("{}-faults", config.client_id_prefix),
                    counters.clone(),
                    tracker.clone(),
                    stop.clone(),
                ))
            });
            let run = Arc::new(Run {
                start,
                speed: config.speed,
                people: plan.people.clone(),
                broker: self.broker.clone(),
                client_id_prefix: config.client_id_prefix.clone(),
                first_report_within: config.first_report_within,
                counters: counters.clone(),
                stats: Stats::default(),
                tracker: tracker.clone(),
            });
            let shared = match config.clients {
                ClientMode::PerFacility => None,
                ClientMode::Multiplexed(n) => Some(n),
            };
            let connections = driver::connections(&run, plan.gateways, shared);
            report.connections = connections.len();
            for connection in connections {
                tracker.spawn(connection.drive(stop.clone()));
            }
            stop.cancelled().await;
            if let Some(malformed) = malformed {
                report.malformed = malformed.await.unwrap_or_default();
            }
            tracker.close();
            tracker.wait().await;
            let stats = &run.stats;
            report.readings = stats.readings.load(Relaxed);
            report.reading_messages = stats.reading_messages.load(Relaxed);
            report.backlog_messages = stats.backlog_messages.load(Relaxed);
            report.backlog_dropped = stats.backlog_dropped.load(Relaxed);
            report.written = counters.written.load(Relaxed);
            report.acked = counters.acked.load(Relaxed);
        }
        let elapsed = start.elapsed();
        report.elapsed_s = elapsed.as_secs_f64();
        report.simulated_h = elapsed.as_secs_f64() * config.speed / 3600.0;
        info!(
            message = "Simulator stopped.",
            readings = report.readings,
            acked = report.acked,
            simulated_h = report.simulated_h
        );
        Ok(report)
    }

    /// The report's parts known before the run: who is hit by what.
    /// The towns this run's scenario brings displaced people to, how many and when, as
    /// [`Simulator::run`]'s report will list them: known before the run, so whoever
    /// plays the bureau (the demo) can act when they arrive. The same seed, the same
    /// towns.
    pub fn sheltered_towns(&self) -> Result<Vec<ShelteredTown>, SimError> {
        // The choice of towns does not depend on the time of day.
        let plan = plan(&self.registry, &self.config, &self.targets, 0.0)?;
        Ok(self.sheltered_of(&plan))
    }

    fn sheltered_of(&self, plan: &Plan) -> Vec<ShelteredTown> {
        plan.sheltered
            .iter()
            .map(|&(t, people)| ShelteredTown {
                town: self.registry.town(t).id.to_string(),
                sheltered: people,
                at_h: self.config.scenario.sheltered.at_h,
            })
            .collect()
    }

    fn empty_report(&self, plan: &Plan) -> SimReport {
        let registry = &self.registry;
        let facility_ids = |list: &[reserve::registry::FacilityIdx]| -> Vec<String> {
            list.iter()
                .map(|&f| registry.facility(f).id.to_string())
                .collect()
        };
        SimReport {
            scenario: self.config.scenario.name.clone(),
            seed: self.config.seed,
            speed: self.config.speed,
            broker: self.broker.url(),
            elapsed_s: 0.0,
            simulated_h: 0.0,
            gateways: plan.gateways.len(),
            connections: 0,
            readings: 0,
            reading_messages: 0,
            backlog_messages: 0,
            backlog_dropped: 0,
            written: 0,
            acked: 0,
            sheltered: self.sheltered_of(plan),
            silent: facility_ids(&plan.silent),
            comms_cut: plan.comms_cut.as_ref().map(|cut| CommsCutReport {
                clusters: cut
                    .clusters
                    .iter()
                    .map(|&c| registry.clusters[c.index()].id.to_string())
                    .collect(),
                facilities: facility_ids(&cut.facilities),
                at_h: cut.at_h,
                for_h: cut.for_h,
            }),
            faults: plan
                .faults
                .iter()
                .map(|(fault, hit)| FaultReport {
                    fault: fault.to_string(),
                    facilities: facility_ids(hit),
                })
                .collect(),
            malformed: Vec::new(),
            load: None,
        }
    }
}

/// The malformed fault: connects, sends one message per reject reason, disconnects.
async fn send_malformed(
    registry: Arc<Registry>,
    broker: Broker,
    client_id: String,
    counters: Arc<LinkCounters>,
    tracker: TaskTracker,
    stop: CancellationToken,
) -> Vec<MalformedSent> {
    let messages = malformed::malformed_messages(&registry, Utc::now());
    let link = Link::open(
        broker.options(client_id, None, false, 100),
        messages.len() + 1,
        counters,
        &tracker,
    );
    let mut state = link.state.clone();
    let up = tokio::time::timeout(FAULT_CONNECT_TIMEOUT, async {
        while !matches!(*state.borrow_and_update(), LinkState::Up(_)) {
            if state.changed().await.is_err() {
                return false;
            }
        }
        true
    });
    let up = tokio::select! {
        up = up => up.unwrap_or(false),
        () = stop.cancelled() => false,
    };
    if !up {
        warn!(message = "Malformed messages not sent: no connection to the broker.", broker = %broker.url());
        link.sever();
        return Vec::new();
    }
    let mut sent = Vec::with_capacity(messages.len());
    for m in messages {
        let bytes = m.payload.len();
        if link
            .client
            .publish(m.topic.clone(), QoS::AtLeastOnce, false, m.payload)
            .await
            .is_ok()
        {
            info!(message = "Malformed message sent.", reason = %m.reason, topic = %m.topic, bytes);
            sent.push(MalformedSent {
                reason: m.reason,
                topic: m.topic,
                bytes,
            });
        }
    }
    link.close().await;
    sent
}
