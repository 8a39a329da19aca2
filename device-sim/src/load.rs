//! Load runs (scripts/bench): a fixed rate of readings spread over every facility, each
//! with its gateway's sequence number and its send time, over a few shared connections
//! with a large in-flight window. Readings come from the same models as a scenario run,
//! so the service does its full work on each.
//!
//! Pacing: each connection's task keeps a running total of what it owes
//! (`elapsed × rate`) and sends the difference every millisecond, so a slow moment is
//! caught up and the achieved rate is what the broker took, not what was attempted.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use chrono::Utc;
use reserve::wire::encode;
use rumqttc::AsyncClient;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::SimError;
use crate::config::LoadConfig;
use crate::gateway::Gateway;
use crate::link::{Broker, Link, LinkCounters};
use crate::report::LoadReport;

/// How long connecting may take before a load run gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait after the last send for the broker's acknowledgements.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The pacing tick.
const PACE_TICK: Duration = Duration::from_millis(1);
/// A gateway stamps at most one reading per millisecond (stamps are whole ms).
const MAX_RATE_PER_FACILITY: u64 = 1000;

pub(crate) struct LoadRun<'a> {
    pub(crate) config: LoadConfig,
    pub(crate) broker: &'a Broker,
    pub(crate) client_id_prefix: &'a str,
    pub(crate) speed: f64,
    pub(crate) tracker: &'a TaskTracker,
}

impl LoadRun<'_> {
    pub(crate) async fn run(
        &self,
        gateways: Vec<Gateway>,
        stop: &CancellationToken,
    ) -> Result<LoadReport, SimError> {
        let load = self.config;
        if load.rate == 0 || load.duration.is_zero() {
            return Err(SimError::Config(
                "a load run needs a rate and a duration above zero".into(),
            ));
        }
        let needed = u64::from(load.rate).div_ceil(MAX_RATE_PER_FACILITY);
        if (gateways.len() as u64) < needed {
            return Err(SimError::Config(format!(
                "{} readings/s need at least {needed} facilities (each stamps at most one reading per millisecond); the registry has {}",
                load.rate,
                gateways.len()
            )));
        }
        let n = load.connections.clamp(1, gateways.len());
        let mut shares: Vec<Vec<Gateway>> = (0..n).map(|_| Vec::new()).collect();
        for (i, g) in gateways.into_iter().enumerate() {
            shares[i % n].push(g);
        }

        let epoch = Instant::now();
        let counters = Arc::new(LinkCounters::new(epoch));
        let links: Vec<Link> = (0..n)
            .map(|i| {
                let client_id = format!("{}-load-{i}", self.client_id_prefix);
                // A clean session: a benchmark leaves nothing behind on the broker.
                let options = self.broker.options(client_id, None, false, load.inflight);
                Link::open(
                    options,
                    usize::from(load.inflight),
                    counters.clone(),
                    self.tracker,
                )
            })
            .collect();
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
            for link in &links {
                let mut state = link.state.clone();
                while !matches!(*state.borrow_and_update(), crate::link::LinkState::Up(_)) {
                    if state.changed().await.is_err() {
                        return false;
                    }
                }
            }
            true
        });
        let connected = tokio::select! {
            connected = connected => connected.unwrap_or(false),
            () = stop.cancelled() => false,
        };
        if !connected {
            for link in links {
                link.sever();
            }
            return Err(SimError::Connect {
                url: self.broker.url(),
                timeout: CONNECT_TIMEOUT,
            });
        }

        let start = Instant::now();
        let deadline = start + load.duration;
        let rate_per_connection = f64::from(load.rate) / n as f64;
        info!(
            message = "Load run started.",
            rate = load.rate,
            duration_s = load.duration.as_secs_f64(),
            connections = n
        );
        let senders: Vec<_> = links
            .iter()
            .zip(shares)
            .map(|(link, share)| {
                let pace = Pace {
                    start,
                    deadline,
                    rate: rate_per_connection,
                    speed: self.speed,
                };
                let client = link.client.clone();
                let qos = load.qos.mqtt();
                let stop = stop.clone();
                self.tracker
                    .spawn(async move { send_share(client, share, pace, qos, stop).await })
            })
            .collect();
        let mut sent = 0;
        for sender in senders {
            sent += sender.await.unwrap_or(0);
        }

        let confirmed = |c: &LinkCounters| match load.qos {
            crate::config::Qos::AtLeastOnce => c.acked.load(Relaxed),
            crate::config::Qos::AtMostOnce => c.written.load(Relaxed),
        };
        let drain_until = Instant::now() + DRAIN_TIMEOUT;
        while confirmed(&counters) < sent && Instant::now() < drain_until && !stop.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let confirmed = confirmed(&counters);
        let last = counters.last_event();
        let elapsed = last
            .saturating_sub(start.duration_since(epoch))
            .max(Duration::from_millis(1));
        for link in links {
            link.close().await;
        }
        let report = LoadReport {
            target_rate: load.rate,
            duration_s: load.duration.as_secs_f64(),
            qos: load.qos,
            connections: n,
            sent,
            confirmed,
            elapsed_s: elapsed.as_secs_f64(),
            achieved_rate: confirmed as f64 / elapsed.as_secs_f64(),
        };
        info!(
            message = "Load run finished.",
            sent,
            confirmed,
            achieved_rate = report.achieved_rate
        );
        Ok(report)
    }
}

#[derive(Debug, Clone, Copy)]
struct Pace {
    start: Instant,
    deadline: Instant,
    /// Readings per second for this connection.
    rate: f64,
    speed: f64,
}

/// Sends one connection's share; returns how many readings it handed to MQTT.
async fn send_share(
    client: AsyncClient,
    mut gateways: Vec<Gateway>,
    pace: Pace,
    qos: rumqttc::QoS,
    stop: CancellationToken,
) -> u64 {
    let mut sent = 0u64;
    let mut cursor = 0;
    let n = gateways.len();
    loop {
        let now = Instant::now();
        if now >= pace.deadline || stop.is_cancelled() {
            return sent;
        }
        let elapsed = now.duration_since(pace.start).as_secs_f64();
        let owed = (elapsed * pace.rate).ceil() as u64;
        let t_h = elapsed * pace.speed / 3600.0;
        while sent < owed {
            let now_ms = Utc::now().timestamp_millis();
            // The next gateway, round-robin, whose stamp would be fresh this millisecond.
            let Some(k) = (0..n)
                .map(|j| (cursor + j) % n)
                .find(|&k| gateways[k].can_sample_at(now_ms))
            else {
                break;
            };
            cursor = (k + 1) % n;
            let gateway = &mut gateways[k];
            let Some(reading) = gateway.sample(t_h, 1.0, now_ms) else {
                break;
            };
            let payload = encode(&[reading]);
            if client
                .publish(gateway.reading_topic.clone(), qos, false, payload)
                .await
                .is_err()
            {
                return sent;
            }
            sent += 1;
        }
        tokio::time::sleep(PACE_TICK).await;
    }
}
