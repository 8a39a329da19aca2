//! What a run did, for the person watching, the tests and scripts/bench. The binary
//! prints it as one JSON line on stdout.

use reserve::wire::RejectReason;
use serde::Serialize;

use crate::config::Qos;

#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    pub scenario: String,
    pub seed: u64,
    pub speed: f64,
    pub broker: String,
    /// Wall-clock seconds the run took.
    pub elapsed_s: f64,
    /// Simulated hours that passed (`elapsed × speed`).
    pub simulated_h: f64,
    pub gateways: usize,
    pub connections: usize,
    /// Readings taken (published or still in a backlog when the run stopped).
    pub readings: u64,
    /// Reading messages handed to MQTT; a backlog array is one.
    pub reading_messages: u64,
    /// Of those, arrays carrying a backlog.
    pub backlog_messages: u64,
    /// Readings dropped from full backlogs.
    pub backlog_dropped: u64,
    /// Publishes (readings and statuses) written to the socket, and acknowledged.
    pub written: u64,
    pub acked: u64,
    /// Towns taking in displaced people. The simulator cannot set sheltered population
    /// (that is `PUT /api/v1/towns/{id}/sheltered` on the service); it consumes as if
    /// they were there and reports them here for whoever sets it.
    pub sheltered: Vec<ShelteredTown>,
    /// Gateways that fell silent for good.
    pub silent: Vec<String>,
    pub comms_cut: Option<CommsCutReport>,
    pub faults: Vec<FaultReport>,
    pub malformed: Vec<MalformedSent>,
    pub load: Option<LoadReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShelteredTown {
    pub town: String,
    pub sheltered: u64,
    /// Simulated hour they arrive.
    pub at_h: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommsCutReport {
    pub clusters: Vec<String>,
    pub facilities: Vec<String>,
    pub at_h: f64,
    pub for_h: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FaultReport {
    pub fault: String,
    pub facilities: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MalformedSent {
    pub reason: RejectReason,
    pub topic: String,
    pub bytes: usize,
}

/// A load run's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub target_rate: u32,
    pub duration_s: f64,
    pub qos: Qos,
    pub connections: usize,
    /// Readings handed to MQTT.
    pub sent: u64,
    /// Readings the broker acknowledged (QoS 1), or wrote to the socket (QoS 0).
    pub confirmed: u64,
    /// From the first send to the last confirmation.
    pub elapsed_s: f64,
    /// `confirmed / elapsed_s`: the rate the broker actually took.
    pub achieved_rate: f64,
}
