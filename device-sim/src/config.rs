//! What a simulator run is told: the broker, the scenario, how fast, which faults, and
//! whether it is a load run instead.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::scenario::Scenario;

/// How a run is configured. [`SimConfig::new`] gives the defaults of a demo: the normal
/// scenario in real time, one MQTT connection per gateway.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// `mqtt://host[:1883]` or `mqtts://host[:8883]`.
    pub broker_url: String,
    /// Credentials for every connection, if the broker wants them.
    pub username: Option<String>,
    pub password: Option<String>,
    pub scenario: Scenario,
    /// Simulated seconds per wall-clock second (60: an hour a minute).
    pub speed: f64,
    /// Seeds every random choice: which gateways fail, start levels, phases.
    pub seed: u64,
    pub clients: ClientMode,
    /// Overrides every facility's `report_every` (wall-clock time between readings).
    pub report_every: Option<Duration>,
    /// Every gateway's first reading comes at a random moment within this long of the
    /// start (default: within its first `report_every`). Short, so a town's
    /// facilities all report at once and the town is not shown short of the ones not
    /// heard yet, which count as empty (docs/design.md#coverage-and-readiness).
    pub first_report_within: Option<Duration>,
    /// Stop after this long (wall clock); `None`: run until the shutdown token fires.
    /// A load run has its own [`LoadConfig::duration`].
    pub duration: Option<Duration>,
    pub faults: Vec<Fault>,
    /// Whom comms cuts and faults hit; see [`Targets`].
    pub targets: Targets,
    /// A load run instead of a scenario run.
    pub load: Option<LoadConfig>,
    /// MQTT client ids are `{prefix}-{facility}` (or `{prefix}-mux-{n}`, `{prefix}-load-{n}`).
    /// Two simulators on one broker need different prefixes.
    pub client_id_prefix: String,
    /// Offset of the local time zone from UTC in hours, for the daily consumption curve
    /// (8: Beijing).
    pub utc_offset_h: f64,
}

impl SimConfig {
    pub fn new(broker_url: impl Into<String>, scenario: Scenario) -> SimConfig {
        SimConfig {
            broker_url: broker_url.into(),
            username: None,
            password: None,
            scenario,
            speed: 1.0,
            seed: 1,
            clients: ClientMode::PerFacility,
            report_every: None,
            first_report_within: None,
            duration: None,
            faults: Vec::new(),
            targets: Targets::default(),
            load: None,
            client_id_prefix: "sim".into(),
            utc_offset_h: 8.0,
        }
    }
}

/// How gateways map to MQTT connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMode {
    /// One connection per gateway, each with its own Last Will: what a real deployment
    /// looks like (1739 connections for the demo registry).
    PerFacility,
    /// Gateways share this many connections. A shared connection cannot carry one Last
    /// Will per gateway, so the simulator publishes `offline` on behalf of a gateway it
    /// cuts off; a gateway that dies without a will just falls silent.
    Multiplexed(usize),
}

impl FromStr for ClientMode {
    type Err = String;
    /// `per-facility` or a number of shared connections.
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "per-facility" {
            return Ok(ClientMode::PerFacility);
        }
        match s.parse::<usize>() {
            Ok(n) if n > 0 => Ok(ClientMode::Multiplexed(n)),
            _ => Err(format!(
                "clients {s:?}: expected \"per-facility\" or a number of connections ≥ 1"
            )),
        }
    }
}

/// A misbehaving gateway, on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The targeted gateways repeat their first measurement forever (ts and seq still
    /// advance): a sensor stuck at one value.
    Stuck,
    /// The targeted gateways disconnect cleanly after their first reading, so the broker
    /// discards their Last Will: the retained status stays `online` and only silence
    /// tells.
    DieWithoutWill,
    /// The targeted gateways' clocks are off by this much (ahead when positive).
    ClockSkew { ahead: bool, by: Duration },
    /// One message per reject reason (docs/design.md#reject-reasons,
    /// `reserve::wire::RejectReason::ALL`), sent once at the start, for testing rejects.
    Malformed,
}

impl Fault {
    /// The skew `--fault clock-skew` uses without `--skew`: ahead by more than the
    /// service's five-minute tolerance, so every reading is rejected as `ts_in_future`.
    pub const DEFAULT_SKEW: Duration = Duration::from_secs(10 * 60);

    pub fn name(&self) -> &'static str {
        match self {
            Fault::Stuck => "stuck",
            Fault::DieWithoutWill => "die-without-will",
            Fault::ClockSkew { .. } => "clock-skew",
            Fault::Malformed => "malformed",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::ClockSkew { ahead, by } => {
                let sign = if *ahead { "+" } else { "-" };
                write!(f, "clock-skew {sign}{}s", by.as_secs_f64())
            }
            other => f.write_str(other.name()),
        }
    }
}

impl FromStr for Fault {
    type Err = String;
    /// `stuck`, `die-without-will`, `clock-skew` (with [`Fault::DEFAULT_SKEW`]),
    /// `malformed`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stuck" => Ok(Fault::Stuck),
            "die-without-will" => Ok(Fault::DieWithoutWill),
            "clock-skew" => Ok(Fault::ClockSkew {
                ahead: true,
                by: Fault::DEFAULT_SKEW,
            }),
            "malformed" => Ok(Fault::Malformed),
            other => Err(format!(
                "unknown fault {other:?}; expected stuck, die-without-will, clock-skew or malformed"
            )),
        }
    }
}

/// Whom a comms cut and the faults hit: the facilities of these clusters and towns. A
/// comms cut with no clusters here uses the scenario's; a fault with no targets hits one
/// facility picked by the seed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    pub clusters: Vec<String>,
    pub towns: Vec<String>,
}

/// A load run: `rate` readings per second spread over every facility for `duration`,
/// each with a sequence number and its send time, over a few shared connections.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadConfig {
    pub rate: u32,
    pub duration: Duration,
    pub qos: Qos,
    /// Shared connections the load is spread over.
    pub connections: usize,
    /// Unacknowledged QoS 1 publishes allowed per connection.
    pub inflight: u16,
}

impl LoadConfig {
    pub fn new(rate: u32, duration: Duration) -> LoadConfig {
        LoadConfig {
            rate,
            duration,
            qos: Qos::AtLeastOnce,
            connections: 4,
            inflight: 1000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    AtMostOnce,
    AtLeastOnce,
}

/// As MQTT numbers it: `0` or `1`.
impl serde::Serialize for Qos {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(match self {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
        })
    }
}

impl Qos {
    pub(crate) fn mqtt(self) -> rumqttc::QoS {
        match self {
            Qos::AtMostOnce => rumqttc::QoS::AtMostOnce,
            Qos::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        }
    }
}

impl FromStr for Qos {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "0" => Ok(Qos::AtMostOnce),
            "1" => Ok(Qos::AtLeastOnce),
            other => Err(format!("qos {other:?}: expected 0 or 1")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_words_parse() {
        assert_eq!("per-facility".parse(), Ok(ClientMode::PerFacility));
        assert_eq!("8".parse(), Ok(ClientMode::Multiplexed(8)));
        assert!("0".parse::<ClientMode>().is_err());
        assert_eq!("die-without-will".parse(), Ok(Fault::DieWithoutWill));
        assert!(
            "flaky"
                .parse::<Fault>()
                .unwrap_err()
                .contains("expected stuck, die-without-will, clock-skew or malformed")
        );
        assert_eq!("0".parse(), Ok(Qos::AtMostOnce));
    }
}
