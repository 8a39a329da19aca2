//! A simulated gateway: one facility's sensors behind its firmware, which stamps each
//! reading with a sequence number and the time it was taken.
//!
//! # Time
//! `ts` is the wall clock at the moment of measurement, and acceleration (`speed`)
//! scales what happens between two readings instead: a reading every 60 s at speed 60
//! carries an hour of consumption and fuel burn. The alternative, a simulated clock
//! running ahead, would hit the service's rule that a `ts` more than five minutes in the
//! future is rejected; starting it in the past instead only works for a run of known
//! length, and its readings would look stale (silent facilities) to a service that
//! judges silence by wall-clock time. With wall-clock stamps the ledger's days of supply
//! fall at `speed` times the real rate, so a town crosses three days within minutes,
//! which is what a demo needs; the simulated hours are in the report.
//!
//! Stamps are whole milliseconds (the store keys readings by facility and millisecond),
//! strictly increasing per gateway, and never ahead of the wall clock unless the
//! clock-skew fault says so: a reading that would repeat or precede its predecessor's
//! stamp (the wall clock stepped back) is not taken.

use chrono::{DateTime, Utc};
use fastrand::Rng;
use reserve::registry::TownIdx;
use reserve::wire::{WireReading, WireTs};
use std::time::Duration;

use crate::model::FacilityModel;

/// What the run has in store for a gateway, in simulated hours since the start.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fate {
    /// Falls silent for good (the broker publishes its Last Will), at this hour or
    /// after its first published reading, whichever is later.
    pub(crate) silent_at_h: Option<f64>,
    /// Cut off from `.0` until `.1` (or for good), buffering meanwhile.
    pub(crate) cut: Option<(f64, Option<f64>)>,
    pub(crate) die_without_will: bool,
    pub(crate) stuck: bool,
    /// Added to every stamp (the clock-skew fault).
    pub(crate) skew_ms: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct Gateway {
    pub(crate) town: TownIdx,
    pub(crate) facility_id: String,
    pub(crate) reading_topic: String,
    pub(crate) status_topic: String,
    /// Wall-clock time between readings.
    pub(crate) report_every: Duration,
    pub(crate) model: FacilityModel,
    pub(crate) rng: Rng,
    pub(crate) fate: Fate,
    seq: u64,
    last_ts_ms: i64,
    /// The stuck fault's frozen reading.
    stuck_reading: Option<WireReading<'static>>,
}

impl Gateway {
    pub(crate) fn new(
        town: TownIdx,
        town_id: &str,
        facility_id: &str,
        report_every: Duration,
        model: FacilityModel,
        rng: Rng,
    ) -> Gateway {
        Gateway {
            town,
            facility_id: facility_id.to_owned(),
            reading_topic: reserve::wire::reading_topic(town_id, facility_id),
            status_topic: reserve::wire::status_topic(town_id, facility_id),
            report_every,
            model,
            rng,
            fate: Fate::default(),
            seq: 0,
            last_ts_ms: i64::MIN,
            stuck_reading: None,
        }
    }

    /// Whether a reading taken at wall-clock `now_ms` would get a fresh stamp.
    pub(crate) fn can_sample_at(&self, now_ms: i64) -> bool {
        now_ms.saturating_add(self.fate.skew_ms) > self.last_ts_ms
    }

    /// Takes a reading at simulated hour `t_h` and wall-clock `now_ms`, or `None` when
    /// the stamp would not be fresh (see the module docs).
    pub(crate) fn sample(
        &mut self,
        t_h: f64,
        people_factor: f64,
        now_ms: i64,
    ) -> Option<WireReading<'static>> {
        if !self.can_sample_at(now_ms) {
            return None;
        }
        let ts_ms = now_ms.saturating_add(self.fate.skew_ms);
        let ts = DateTime::<Utc>::from_timestamp_millis(ts_ms)?;
        self.model.advance(t_h, people_factor, &mut self.rng);
        self.last_ts_ms = ts_ms;
        self.seq += 1;
        let ts = WireTs::from(ts);
        let reading = match &self.stuck_reading {
            Some(frozen) => WireReading {
                ts,
                ..frozen.clone()
            },
            None => self.model.reading(ts),
        }
        .with_seq(self.seq);
        if self.fate.stuck && self.stuck_reading.is_none() {
            self.stuck_reading = Some(reading.clone());
        }
        Some(reading)
    }

    /// The wall-clock wait before the next reading: `report_every` ± 10 %, so gateways
    /// started together drift apart as real ones do.
    pub(crate) fn next_interval(&mut self) -> Duration {
        self.report_every.mul_f64(0.9 + 0.2 * self.rng.f64())
    }
}
