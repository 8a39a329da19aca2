//! Scenario runs: each connection's task wakes its gateways at their report times,
//! publishes their readings, and plays out their fates (silence, comms cuts, faults).
//!
//! A connection carries one gateway (per-facility mode: its own client id and Last
//! Will) or many (multiplexed). A gateway whose connection is down — still connecting,
//! cut off, or the broker gone — keeps measuring into its backlog and sends it as JSON
//! arrays once connected again, as a real gateway would after hours offline.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use chrono::Utc;
use reserve::registry::TownIdx;
use reserve::wire::{Connectivity, WireReading, encode};
use rumqttc::QoS;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use crate::gateway::Gateway;
use crate::link::{Broker, Link, LinkCounters, LinkState, offline_will};

/// Readings a gateway keeps while offline; beyond it the oldest are dropped. At one a
/// minute that is a week.
const MAX_BACKLOG: usize = 10_000;
/// Readings per backlog message: about 75 KiB of JSON, well inside the service's
/// 256 KiB payload limit.
const BACKLOG_CHUNK: usize = 500;
/// Unacknowledged QoS 1 publishes per connection: a gateway sends one reading at a
/// time, a shared connection a round of its gateways' readings.
const GATEWAY_INFLIGHT: u16 = 100;
/// Requests queued per connection before a publish counts as not sent (and the reading
/// stays in the backlog): generous for one gateway, scaled for a shared connection.
const QUEUE_PER_GATEWAY: usize = 16;

/// What every connection task of one run shares.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) start: Instant,
    pub(crate) speed: f64,
    /// Per town: from which simulated hour its population is multiplied by how much.
    pub(crate) people: Vec<(f64, f64)>,
    pub(crate) broker: Broker,
    pub(crate) client_id_prefix: String,
    /// See [`crate::SimConfig::first_report_within`].
    pub(crate) first_report_within: Option<std::time::Duration>,
    pub(crate) counters: Arc<LinkCounters>,
    pub(crate) stats: Stats,
    pub(crate) tracker: TaskTracker,
}

/// Counts for the report.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) readings: AtomicU64,
    pub(crate) reading_messages: AtomicU64,
    pub(crate) backlog_messages: AtomicU64,
    pub(crate) backlog_dropped: AtomicU64,
}

impl Run {
    /// Simulated hours since the start.
    pub(crate) fn sim_hours(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.start).as_secs_f64() * self.speed / 3600.0
    }

    pub(crate) fn people_factor(&self, town: TownIdx, t_h: f64) -> f64 {
        let (from_h, factor) = self.people[town.index()];
        if t_h >= from_h { factor } else { 1.0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Live,
    /// Cut off by the scenario: measuring into the backlog.
    Cut,
    /// Silent for good.
    Gone,
}

#[derive(Debug)]
struct Slot {
    gateway: Gateway,
    phase: Phase,
    next_due: Instant,
    backlog: VecDeque<WireReading<'static>>,
    published: bool,
}

/// One connection's task.
#[derive(Debug)]
pub(crate) struct Connection {
    run: Arc<Run>,
    /// Per-facility mode: the connection is the gateway's own, with its Last Will.
    dedicated: bool,
    client_id: String,
    link: Option<Link>,
    /// The link generation whose connection the gateways announced themselves on.
    announced: u64,
    slots: Vec<Slot>,
}

enum Wake {
    Stop,
    Due,
    Link,
}

impl Connection {
    /// A connection for `gateways`; `dedicated` needs exactly one.
    pub(crate) fn new(
        run: Arc<Run>,
        gateways: Vec<Gateway>,
        dedicated: bool,
        index: usize,
    ) -> Connection {
        let client_id = match (dedicated, gateways.first()) {
            (true, Some(g)) => format!("{}-{}", run.client_id_prefix, g.facility_id),
            _ => format!("{}-mux-{index}", run.client_id_prefix),
        };
        let slots = gateways
            .into_iter()
            .map(|mut gateway| {
                // A random phase within the first interval, so a thousand gateways
                // started together do not all report in the same instant.
                let spread = run
                    .first_report_within
                    .map_or(gateway.report_every, |w| w.min(gateway.report_every));
                let phase = spread.mul_f64(gateway.rng.f64());
                Slot {
                    gateway,
                    phase: Phase::Live,
                    next_due: run.start + phase,
                    backlog: VecDeque::new(),
                    published: false,
                }
            })
            .collect();
        Connection {
            run,
            dedicated,
            client_id,
            link: None,
            announced: 0,
            slots,
        }
    }

    fn open_link(&mut self) {
        let will = if self.dedicated {
            self.slots
                .first()
                .map(|s| offline_will(&s.gateway.status_topic))
        } else {
            None
        };
        let options = self
            .run
            .broker
            .options(self.client_id.clone(), will, true, GATEWAY_INFLIGHT);
        let capacity = QUEUE_PER_GATEWAY * self.slots.len().max(1) + BACKLOG_CHUNK;
        self.link = Some(Link::open(
            options,
            capacity,
            self.run.counters.clone(),
            &self.run.tracker,
        ));
        self.announced = 0;
    }

    pub(crate) async fn drive(mut self, stop: CancellationToken) {
        self.open_link();
        while let Some(due) = self.next_due() {
            let wake = tokio::select! {
                () = stop.cancelled() => Wake::Stop,
                () = sleep_until(due) => Wake::Due,
                () = link_changed(&mut self.link) => Wake::Link,
            };
            match wake {
                Wake::Stop => {
                    self.shut_down().await;
                    return;
                }
                Wake::Due => self.tick().await,
                Wake::Link => {}
            }
            self.announce_if_reconnected();
        }
        // Every gateway of this connection is gone.
        if let Some(link) = self.link.take() {
            link.close().await;
        }
    }

    /// When the next gateway is due; `None` once every gateway is gone.
    fn next_due(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter(|s| s.phase != Phase::Gone)
            .map(|s| s.next_due)
            .min()
    }

    /// On each new connection: `online` for every live gateway, then their backlogs.
    fn announce_if_reconnected(&mut self) {
        let generation = match self.link.as_ref().map(|l| *l.state.borrow()) {
            Some(LinkState::Up(generation)) => generation,
            _ => return,
        };
        if generation == self.announced {
            return;
        }
        self.announced = generation;
        for i in 0..self.slots.len() {
            if self.slots[i].phase == Phase::Live {
                self.announce(i, Connectivity::Online);
                self.flush_backlog(i);
            }
        }
    }

    async fn tick(&mut self) {
        let now = Instant::now();
        let t_h = self.run.sim_hours(now);
        let now_ms = Utc::now().timestamp_millis();
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            if slot.phase == Phase::Gone || slot.next_due > now {
                continue;
            }
            self.tick_slot(i, t_h, now_ms).await;
            let slot = &mut self.slots[i];
            slot.next_due = now + slot.gateway.next_interval();
        }
    }

    async fn tick_slot(&mut self, i: usize, t_h: f64, now_ms: i64) {
        let fate = self.slots[i].gateway.fate.clone();
        // A gateway falls silent only once it has been heard: silence is news only
        // about a gateway that was talking.
        if fate.silent_at_h.is_some_and(|at| t_h >= at) && self.slots[i].published {
            info!(message = "Gateway falls silent.", facility = %self.slots[i].gateway.facility_id);
            self.drop_off(i, Phase::Gone);
            return;
        }
        if fate.die_without_will && self.slots[i].published {
            info!(
                message = "Gateway dies without its Last Will.",
                facility = %self.slots[i].gateway.facility_id
            );
            self.slots[i].phase = Phase::Gone;
            if self.dedicated
                && let Some(link) = self.link.take()
            {
                // A clean DISCONNECT: the broker discards the will, the status stays
                // `online`.
                link.close().await;
            }
            return;
        }
        if let Some((from_h, until_h)) = fate.cut {
            let in_cut = t_h >= from_h && until_h.is_none_or(|until| t_h < until);
            match (in_cut, self.slots[i].phase) {
                (true, Phase::Live) => {
                    debug!(message = "Gateway cut off.", facility = %self.slots[i].gateway.facility_id);
                    self.drop_off(i, Phase::Cut);
                }
                (false, Phase::Cut) => {
                    debug!(message = "Gateway reconnects.", facility = %self.slots[i].gateway.facility_id);
                    self.slots[i].phase = Phase::Live;
                    if self.dedicated {
                        // Announced (online, then the backlog) once connected.
                        self.open_link();
                    } else {
                        self.announce(i, Connectivity::Online);
                    }
                }
                _ => {}
            }
        }

        let slot = &mut self.slots[i];
        let factor = self.run.people_factor(slot.gateway.town, t_h);
        let Some(reading) = slot.gateway.sample(t_h, factor, now_ms) else {
            return;
        };
        self.run.stats.readings.fetch_add(1, Relaxed);
        self.push_backlog(i, reading);
        if self.slots[i].phase == Phase::Live {
            self.flush_backlog(i);
        }
    }

    /// The gateway loses its connection: its own is dropped so the broker publishes its
    /// Last Will; on a shared connection the simulator publishes `offline` for it.
    fn drop_off(&mut self, i: usize, phase: Phase) {
        self.slots[i].phase = phase;
        if self.dedicated {
            if let Some(link) = self.link.take() {
                link.sever();
            }
        } else {
            self.announce(i, Connectivity::Offline);
        }
    }

    fn publish(&self, topic: &str, retain: bool, payload: Vec<u8>) -> bool {
        match &self.link {
            Some(link) if link.is_up() => link
                .client
                .try_publish(topic, QoS::AtLeastOnce, retain, payload)
                .is_ok(),
            _ => false,
        }
    }

    fn announce(&self, i: usize, status: Connectivity) {
        let topic = &self.slots[i].gateway.status_topic;
        self.publish(topic, true, status.payload().to_vec());
    }

    fn push_backlog(&mut self, i: usize, reading: WireReading<'static>) {
        let backlog = &mut self.slots[i].backlog;
        if backlog.len() >= MAX_BACKLOG {
            backlog.pop_front();
            self.run.stats.backlog_dropped.fetch_add(1, Relaxed);
        }
        backlog.push_back(reading);
    }

    /// Sends what the gateway holds, oldest first: one reading as an object, several as
    /// arrays of up to [`BACKLOG_CHUNK`]. Stops at the first message the connection does
    /// not take; the rest waits for the next reading or reconnection.
    fn flush_backlog(&mut self, i: usize) {
        while !self.slots[i].backlog.is_empty() {
            let slot = &self.slots[i];
            let n = slot.backlog.len().min(BACKLOG_CHUNK);
            let chunk: Vec<WireReading<'static>> = slot.backlog.iter().take(n).cloned().collect();
            if !self.publish(&slot.gateway.reading_topic, false, encode(&chunk)) {
                return;
            }
            let slot = &mut self.slots[i];
            slot.backlog.drain(..n);
            slot.published = true;
            let stats = &self.run.stats;
            stats.reading_messages.fetch_add(1, Relaxed);
            if n > 1 {
                stats.backlog_messages.fetch_add(1, Relaxed);
            }
        }
    }

    /// A clean stop: every live gateway says `offline` (it is going away), then the
    /// connection disconnects cleanly.
    async fn shut_down(&mut self) {
        for i in 0..self.slots.len() {
            if self.slots[i].phase == Phase::Live {
                self.announce(i, Connectivity::Offline);
            }
        }
        if let Some(link) = self.link.take() {
            link.close().await;
        }
    }
}

/// Resolves when the link's state changes; never while there is no link.
async fn link_changed(link: &mut Option<Link>) {
    match link {
        Some(link) => {
            if link.state.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// Spreads gateways over connections: one each, or round-robin over `n` shared ones.
pub(crate) fn connections(
    run: &Arc<Run>,
    gateways: Vec<Gateway>,
    shared: Option<usize>,
) -> Vec<Connection> {
    match shared {
        None => gateways
            .into_iter()
            .enumerate()
            .map(|(i, g)| Connection::new(run.clone(), vec![g], true, i))
            .collect(),
        Some(n) => {
            let n = n.clamp(1, gateways.len().max(1));
            let mut groups: Vec<Vec<Gateway>> = (0..n).map(|_| Vec::new()).collect();
            for (i, g) in gateways.into_iter().enumerate() {
                groups[i % n].push(g);
            }
            groups
                .into_iter()
                .enumerate()
                .map(|(i, group)| Connection::new(run.clone(), group, false, i))
                .collect()
        }
    }
}
