//! Coverage and readiness maths (docs/design.md#coverage-and-readiness) as pure functions
//! of numbers, so each rule is tested by a table. The [`crate::Ledger`] feeds them its
//! live state.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::reading::{PowerObservation, PowerState, PumpState, WaterObservation};
use crate::registry::{Group, Target};

/// How a single figure stands against its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Critical,
}

/// A town's overall status, as the board colours it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TownStatus {
    Ok,
    Warning,
    Critical,
    /// None of the town's facilities has ever reported: we know nothing.
    Unknown,
}

impl TownStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TownStatus::Ok => "ok",
            TownStatus::Warning => "warning",
            TownStatus::Critical => "critical",
            TownStatus::Unknown => "unknown",
        }
    }

    /// The integer written as `town_status.status` (docs/design.md#influxdb-series);
    /// Grafana maps it to colours, so these numbers are part of the contract.
    pub fn code(self) -> i64 {
        match self {
            TownStatus::Ok => 0,
            TownStatus::Warning => 1,
            TownStatus::Critical => 2,
            TownStatus::Unknown => 3,
        }
    }
}

/// People a category's need applies to in a town.
///
/// Sheltered influx adds to `all` one for one; a named group grows in proportion (a
/// shelter takes in infants and elderly at the town's own mix), because arrivals are
/// reported as one head count.
pub fn people_in_group(
    group: &Group,
    population: u64,
    groups: &BTreeMap<String, u64>,
    sheltered: u64,
) -> f64 {
    match group {
        // Saturating: both come from outside (the registry, an officer's report).
        Group::All => population.saturating_add(sheltered) as f64,
        Group::Named(name) => {
            let members = groups.get(name).copied().unwrap_or(0) as f64;
            if population == 0 {
                return members;
            }
            members * (1.0 + sheltered as f64 / population as f64)
        }
    }
}

/// Days a stock lasts at a daily need; `None` when nobody needs it (an infant-formula
/// stock in a town without infants is not "infinite days", it simply does not apply).
pub fn days_of_supply(stock: f64, need_per_day: f64) -> Option<f64> {
    if need_per_day > 0.0 {
        Some((stock / need_per_day).max(0.0))
    } else {
        None
    }
}

/// Classifies days against a target, with hysteresis: a level, once entered, is left
/// only when the figure climbs `hysteresis_days` above the threshold that caused it.
pub fn classify(days: f64, target: &Target, previous: Level) -> Level {
    let hold = |threshold: f64, level: Level| {
        if previous >= level {
            days < threshold + target.hysteresis_days
        } else {
            days < threshold
        }
    };
    if hold(target.days, Level::Critical) {
        Level::Critical
    } else if hold(target.warn_days, Level::Warning) {
        Level::Warning
    } else {
        Level::Ok
    }
}

// One type from the ledger to the officer and the API: the ids (serde's names) are
// stable, since the API serves them, alert details keep them in SQLite and messages
// translate them (`alerts::render`). The API documents this type itself, under the
// schema name `Problem` it has always had; a derive behind the optional `openapi`
// feature costs `reserve` nothing otherwise, where a mirror enum in `api` had to be
// kept in step by hand. The doc line below is the schema's description.
/// Why a water point or power unit is not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Problem))]
#[serde(rename_all = "snake_case")]
pub enum NotReady {
    NeverReported,
    Silent,
    PumpFault,
    PumpOff,
    NotPotable,
    PowerFault,
    Maintenance,
    LowFuel,
    LowBattery,
}

/// Water point readiness: pump `ok`, water potable, not silent.
pub fn water_point_problems(obs: &WaterObservation, silent: bool) -> Vec<NotReady> {
    let mut problems = Vec::new();
    match obs.pump {
        PumpState::Ok => {}
        PumpState::Fault => problems.push(NotReady::PumpFault),
        PumpState::Off => problems.push(NotReady::PumpOff),
    }
    if !obs.potable {
        problems.push(NotReady::NotPotable);
    }
    if silent {
        problems.push(NotReady::Silent);
    }
    problems
}

/// Hours a power unit runs on its fuel at its burn rate.
pub fn runtime_h(fuel_l: f64, burn_l_per_h: f64) -> f64 {
    if burn_l_per_h > 0.0 {
        fuel_l / burn_l_per_h
    } else {
        0.0
    }
}

/// Power unit readiness: `standby` or `running`, runtime ≥ target days × 24 h, battery
/// ≥ its minimum, not silent.
pub fn power_unit_problems(
    obs: &PowerObservation,
    rated_burn_l_per_h: f64,
    min_battery_pct: f64,
    target_days: f64,
    silent: bool,
) -> Vec<NotReady> {
    let mut problems = Vec::new();
    match obs.state {
        PowerState::Standby | PowerState::Running => {}
        PowerState::Fault => problems.push(NotReady::PowerFault),
        PowerState::Maintenance => problems.push(NotReady::Maintenance),
    }
    let burn = obs.burn_l_per_h.unwrap_or(rated_burn_l_per_h);
    if runtime_h(obs.fuel_l, burn) < target_days * 24.0 {
        problems.push(NotReady::LowFuel);
    }
    if obs.battery_pct.is_some_and(|b| b < min_battery_pct) {
        problems.push(NotReady::LowBattery);
    }
    if silent {
        problems.push(NotReady::Silent);
    }
    problems
}

/// How much history a forecast needs by default (`[alerts] forecast_min_span`).
pub const DEFAULT_FORECAST_MIN_SPAN_H: f64 = 1.0;

/// A drop is a one-off withdrawal (a truck out, a distribution) when its pace exceeds
/// this many times both the recent pace and the pace of the interval after it.
pub const WITHDRAWAL_FACTOR: f64 = 10.0;

/// A drop is a glitch when the next reading gives back at least this share of it.
pub const GLITCH_RECOVERY: f64 = 0.8;

/// Most buckets a [`Drawdown`] keeps. Each closes once it covers half the min span, so
/// the window needs three and the one filling; the cap bounds memory (a warehouse has a
/// `Drawdown` per category, within 1 KiB a facility) whatever the readings do.
const MAX_BUCKETS: usize = 4;

/// Most recorded transfers a [`Drawdown`] waits to see at once; a stock sends or
/// receives a few a day, and the oldest is forgotten first.
const MAX_TRANSFERS: usize = 4;

/// Consumption evidence of a stretch of time: what was consumed over how long, and in
/// how many intervals between readings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
struct Bucket {
    /// Seconds, not hours: exact.
    span_s: u32,
    consumed: f64,
    intervals: u32,
    /// When its last interval ended (epoch seconds; 0 in snapshots from before
    /// transfers): a transfer recorded after its drop was judged finds it by time.
    #[serde(default, skip_serializing_if = "is_zero")]
    end_s: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// A recorded transfer of this stock (docs/design.md#transfers): the readings inside
/// its window show it as a drop at the sender and a rise at the receiver, which is
/// neither consumption nor a restock. Matched against the intervals as they come, or,
/// when recorded after the readings, against what they were judged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct TransferLeg {
    /// The transfer's id in the store: the same transfer is expected once, even when a
    /// start-up reads it again from the store after a snapshot already held it.
    pub id: i64,
    /// When it was recorded.
    pub at: DateTime<Utc>,
    /// How far from `at` a reading may show it, each way, in seconds (the truck leaves
    /// before or after the officer types).
    pub window_s: u32,
    /// Still to be seen: above 0 for stock sent (a drop), below 0 for stock received
    /// (a rise). Kept at 0 until the window is over, so the id stays known.
    pub left: f64,
}

impl TransferLeg {
    /// Whether the interval between readings at `start` and `end` may show it.
    fn overlaps(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
        let window = chrono::Duration::seconds(i64::from(self.window_s));
        end >= self.at - window && start <= self.at + window
    }

    fn is_over(&self, now: DateTime<Utc>) -> bool {
        now > self.at + chrono::Duration::seconds(i64::from(self.window_s))
    }

    /// Takes from a `drop` (negative: a rise) the part this transfer explains, and
    /// returns what is left of the drop. Only what departs from the `usual` drop (the
    /// stock's recent pace over the interval) is the transfer's: the hours of ordinary
    /// use around a truck keep counting as use.
    fn explain(&mut self, drop: f64, usual: f64) -> f64 {
        let unusual = drop - usual;
        let taken = if self.left > 0.0 && unusual > 0.0 {
            unusual.min(self.left)
        } else if self.left < 0.0 && unusual < 0.0 {
            unusual.max(self.left)
        } else {
            0.0
        };
        self.left -= taken;
        drop - taken
    }
}

/// The last interval between readings, not judged until the reading after it says
/// whether its drop was a glitch, a withdrawal or consumption.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
struct Pending {
    span_s: u32,
    /// Quantity before the interval minus after it: negative for a restock.
    drop: f64,
}

/// Consumption-rate estimate of one stock (one category at one facility)
/// (docs/design.md#forecast).
///
/// Each interval between two readings is judged when the reading after it arrives:
/// - a rise is a restock: it moves the baseline, and is no evidence of consumption;
/// - a drop the next reading gives back (≥ [`GLITCH_RECOVERY`] of it) is a glitch: both
///   intervals are dropped;
/// - a drop whose pace exceeds [`WITHDRAWAL_FACTOR`] times both the recent pace and the
///   next interval's pace is a withdrawal: the baseline moves down, the rate does not;
/// - anything else is consumption.
///
/// The rate is consumption over time across a sliding window of judged intervals that
/// covers at least the min span (and half more at most), so a change of pace is
/// followed within about the min span, and an interval of hours counts as the average
/// over its hours. No rate until the window covers the min span with at least two
/// intervals (three readings).
///
/// Serialized in facility snapshots: a snapshot of the old version (`last` and an
/// exponential `rate_per_h`) loads with an empty window; its rate is ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Drawdown {
    last: Option<(DateTime<Utc>, f64)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending: Option<Pending>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    window: Vec<Bucket>,
    /// What transfers need, boxed: most stocks never withdraw nor transfer, and a
    /// pointer keeps them small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    moves: Option<Box<Moves>>,
}

/// The part of a [`Drawdown`] that tells transfers from consumption.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
struct Moves {
    /// The last drop judged a withdrawal (when it ended, how much): a transfer out
    /// recorded after it explains it, not the consumption around it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    withdrawn: Option<(DateTime<Utc>, f64)>,
    /// Recorded transfers whose window is not over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    transfers: Vec<TransferLeg>,
}

impl Drawdown {
    /// Units consumed per hour, once the judged evidence covers `min_span_h` hours and
    /// at least two intervals.
    pub fn rate_per_h(&self, min_span_h: f64) -> Option<f64> {
        let (span_h, consumed, intervals) = self.totals();
        (span_h >= min_span_h && span_h > 0.0 && intervals >= 2).then(|| consumed / span_h)
    }

    /// Consumption per hour over the judged evidence, however short: the pace a drop
    /// is compared with.
    fn recent_pace(&self) -> f64 {
        let (span_h, consumed, _) = self.totals();
        if span_h > 0.0 { consumed / span_h } else { 0.0 }
    }

    fn totals(&self) -> (f64, f64, u32) {
        self.window.iter().fold((0.0, 0.0, 0), |(s, c, n), b| {
            (s + hours(b.span_s), c + b.consumed, n + b.intervals)
        })
    }

    /// Feeds the quantity measured at `ts`. Readings not newer than the last are ignored.
    pub fn observe(&mut self, ts: DateTime<Utc>, quantity: f64, min_span_h: f64) {
        let Some((last_ts, last_qty)) = self.last else {
            self.last = Some((ts, quantity));
            return;
        };
        // Sub-second intervals are no evidence of a pace; a span beyond u32 seconds (136
        // years) saturates.
        let span_s = u32::try_from((ts - last_ts).num_seconds()).unwrap_or(u32::MAX);
        if ts <= last_ts {
            return;
        }
        self.last = Some((ts, quantity));
        if span_s == 0 {
            return;
        }
        let next = Pending {
            span_s,
            drop: self.explain_by_transfers(last_ts, ts, last_qty - quantity),
        };
        let Some(pending) = self.pending.take() else {
            self.pending = Some(next);
            return;
        };
        if pending.drop > 0.0 && -next.drop >= GLITCH_RECOVERY * pending.drop {
            return; // a glitch and its undoing: neither is consumption
        }
        self.pending = Some(next);
        if pending.drop < 0.0 {
            return; // a restock
        }
        let recent = self.recent_pace();
        let pace = pending.drop / hours(pending.span_s);
        let next_pace = next.drop.max(0.0) / hours(next.span_s);
        if pending.drop > 0.0 && pace > WITHDRAWAL_FACTOR * recent.max(next_pace) {
            self.moves.get_or_insert_default().withdrawn = Some((last_ts, pending.drop));
            return; // a withdrawal
        }
        self.record(pending.span_s, pending.drop, last_ts, min_span_h);
    }

    /// What is left of the `drop` between readings at `start` and `end` once the
    /// recorded transfers it may show are taken out; transfers whose window is over by
    /// `end` are forgotten.
    fn explain_by_transfers(&mut self, start: DateTime<Utc>, end: DateTime<Utc>, drop: f64) -> f64 {
        let usual = self.recent_pace() * hours(seconds_between(start, end));
        let Some(moves) = &mut self.moves else {
            return drop;
        };
        let mut drop = drop;
        for leg in &mut moves.transfers {
            if leg.overlaps(start, end) {
                drop = leg.explain(drop, usual);
            }
        }
        moves.transfers.retain(|leg| !leg.is_over(end));
        drop
    }

    /// Expects a recorded transfer (`leg.left` the quantity: above 0 sent, below 0
    /// received). What the readings judged already is explained first, newest first
    /// (the interval not judged yet, the last withdrawal, the consumption evidence),
    /// then the readings to come. False when the transfer was expected already.
    pub fn expect_transfer(&mut self, mut leg: TransferLeg) -> bool {
        let recent = self.recent_pace();
        // The calmest stretch of the window is the usual pace a bucket holding a truck
        // departs from (the window's average holds the truck itself).
        let calm = self
            .window
            .iter()
            .filter(|b| b.span_s > 0)
            .map(|b| b.consumed / hours(b.span_s))
            .fold(f64::INFINITY, f64::min);
        let moves = self.moves.get_or_insert_default();
        if moves.transfers.iter().any(|t| t.id == leg.id) {
            return false;
        }
        if let (Some(p), Some((end, _))) = (&mut self.pending, self.last) {
            let start = end - chrono::Duration::seconds(i64::from(p.span_s));
            if leg.overlaps(start, end) {
                p.drop = leg.explain(p.drop, recent * hours(p.span_s));
            }
        }
        if let Some((end, withdrawn)) = &mut moves.withdrawn
            && leg.overlaps(*end, *end)
        {
            *withdrawn = leg.explain(*withdrawn, 0.0);
        }
        for b in self.window.iter_mut().rev() {
            let end = DateTime::<Utc>::from_timestamp(b.end_s, 0).unwrap_or_default();
            let start = end - chrono::Duration::seconds(i64::from(b.span_s));
            if b.end_s != 0 && leg.left > 0.0 && leg.overlaps(start, end) {
                b.consumed = leg.explain(b.consumed, calm * hours(b.span_s));
            }
        }
        if moves.transfers.len() == MAX_TRANSFERS {
            moves.transfers.remove(0);
        }
        moves.transfers.push(leg);
        true
    }

    fn record(&mut self, span_s: u32, consumed: f64, end: DateTime<Utc>, min_span_h: f64) {
        let end_s = end.timestamp();
        match self.window.last_mut() {
            Some(b) if hours(b.span_s) < min_span_h / 2.0 => {
                b.span_s = b.span_s.saturating_add(span_s);
                b.consumed += consumed;
                b.intervals += 1;
                b.end_s = end_s;
                self.forget(min_span_h, 0.0, 0);
            }
            _ => {
                // Forget first, so the vector never grows past its cap.
                self.forget(min_span_h, hours(span_s), 1);
                if self.window.len() == MAX_BUCKETS {
                    self.window.remove(0);
                }
                self.window.push(Bucket {
                    span_s,
                    consumed,
                    intervals: 1,
                    end_s,
                });
            }
        }
    }

    /// Forgets the oldest buckets while the rest, with `extra` evidence to come, still
    /// make a forecast on their own.
    fn forget(&mut self, min_span_h: f64, extra_h: f64, extra_intervals: u32) {
        while let Some(oldest) = self.window.first().copied() {
            let (span_h, _, intervals) = self.totals();
            let rest_h = span_h + extra_h - hours(oldest.span_s);
            let rest_intervals = intervals + extra_intervals - oldest.intervals;
            let keep_one = extra_intervals == 0 && self.window.len() == 1;
            if keep_one || rest_h < min_span_h || rest_intervals < 2 {
                break;
            }
            self.window.remove(0);
        }
    }
}

fn seconds_between(start: DateTime<Utc>, end: DateTime<Utc>) -> u32 {
    u32::try_from((end - start).num_seconds()).unwrap_or(0)
}

fn hours(seconds: u32) -> f64 {
    f64::from(seconds) / 3600.0
}

/// Hours until a stock consumed at `rate_per_h` falls to `target_stock`: 0 when already
/// below, `None` when it is not being consumed.
pub fn hours_to_target(stock: f64, target_stock: f64, rate_per_h: f64) -> Option<f64> {
    if stock <= target_stock {
        return Some(0.0);
    }
    // Below a thousandth of a unit an hour the forecast is noise, not consumption.
    if rate_per_h <= 1e-3 {
        return None;
    }
    Some((stock - target_stock) / rate_per_h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn target() -> Target {
        Target {
            days: 3.0,
            warn_days: 3.5,
            hysteresis_days: 0.1,
            stale_after: None,
        }
    }

    #[test]
    fn people_in_group_counts_sheltered_influx() {
        let groups: BTreeMap<String, u64> = [("infants".to_string(), 300)].into();
        let infants = Group::Named("infants".into());
        let cases: &[(&Group, u64, u64, f64)] = &[
            (&Group::All, 30_000, 0, 30_000.0),
            (&Group::All, 30_000, 5_000, 35_000.0),
            (&infants, 30_000, 0, 300.0),
            // 15,000 sheltered on 30,000 residents: half as many again of each group.
            (&infants, 30_000, 15_000, 450.0),
            (&Group::Named("dialysis".into()), 30_000, 5_000, 0.0),
            (&Group::All, 0, 200, 200.0),
        ];
        for (group, population, sheltered, want) in cases {
            let got = people_in_group(group, *population, &groups, *sheltered);
            assert_eq!(
                got, *want,
                "{group:?} pop {population} sheltered {sheltered}"
            );
        }
    }

    #[test]
    fn days_of_supply_divides_stock_by_need() {
        let cases: &[(f64, f64, Option<f64>)] = &[
            (270_000.0, 90_000.0, Some(3.0)),
            (0.0, 90_000.0, Some(0.0)),
            (100.0, 0.0, None),
        ];
        for (stock, need, want) in cases {
            assert_eq!(days_of_supply(*stock, *need), *want, "{stock}/{need}");
        }
    }

    #[test]
    fn classify_uses_hysteresis_at_both_thresholds() {
        use Level::*;
        // (days, previous, expected)
        let cases: &[(f64, Level, Level)] = &[
            (2.99, Ok, Critical),
            (3.0, Ok, Warning),         // exactly the target is not below it
            (3.05, Critical, Critical), // inside the hysteresis band: stays critical
            (3.0999, Critical, Critical),
            (3.1, Critical, Warning), // climbed out of the band
            (3.49, Ok, Warning),
            (3.5, Ok, Ok),
            (3.55, Warning, Warning),
            (3.6, Warning, Ok),
            (3.55, Critical, Warning),
            (3.6, Critical, Ok),
            (10.0, Critical, Ok),
            (0.0, Ok, Critical),
        ];
        for (days, previous, want) in cases {
            assert_eq!(
                classify(*days, &target(), *previous),
                *want,
                "{days} days after {previous:?}"
            );
        }
    }

    #[test]
    fn power_unit_readiness_table() {
        use NotReady::*;
        let obs = |fuel_l: f64, state: PowerState, battery: Option<f64>, burn: Option<f64>| {
            PowerObservation {
                fuel_l,
                battery_pct: battery,
                state,
                burn_l_per_h: burn,
            }
        };
        // Rated burn 5 L/h, target 3 days → 360 L needed.
        let cases: &[(PowerObservation, bool, &[NotReady])] = &[
            (
                obs(380.0, PowerState::Standby, Some(96.0), None),
                false,
                &[],
            ),
            (
                obs(360.0, PowerState::Running, Some(96.0), None),
                false,
                &[],
            ),
            (
                obs(359.0, PowerState::Standby, Some(96.0), None),
                false,
                &[LowFuel],
            ),
            // Measured burn of 6 L/h overrides the rated 5: 380 L last 63 h.
            (
                obs(380.0, PowerState::Running, None, Some(6.0)),
                false,
                &[LowFuel],
            ),
            (
                obs(380.0, PowerState::Standby, Some(40.0), None),
                false,
                &[LowBattery],
            ),
            (
                obs(380.0, PowerState::Fault, Some(96.0), None),
                false,
                &[PowerFault],
            ),
            (
                obs(380.0, PowerState::Maintenance, Some(96.0), None),
                true,
                &[Maintenance, Silent],
            ),
            (obs(380.0, PowerState::Standby, None, None), false, &[]),
        ];
        for (o, silent, want) in cases {
            assert_eq!(
                power_unit_problems(o, 5.0, 50.0, 3.0, *silent),
                *want,
                "{o:?} silent={silent}"
            );
        }
    }

    #[test]
    fn water_point_readiness_table() {
        use NotReady::*;
        let obs = |pump, potable| WaterObservation {
            level_l: 1000.0,
            pump,
            potable,
        };
        let cases: &[(WaterObservation, bool, &[NotReady])] = &[
            (obs(PumpState::Ok, true), false, &[]),
            (obs(PumpState::Fault, true), false, &[PumpFault]),
            (obs(PumpState::Off, true), false, &[PumpOff]),
            (obs(PumpState::Ok, false), false, &[NotPotable]),
            (obs(PumpState::Ok, true), true, &[Silent]),
        ];
        for (o, silent, want) in cases {
            assert_eq!(
                water_point_problems(o, *silent),
                *want,
                "{o:?} silent={silent}"
            );
        }
    }

    fn at(h: f64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 0, 0, 0).unwrap()
            + chrono::Duration::milliseconds((h * 3_600_000.0) as i64)
    }

    #[test]
    fn drawdown_ignores_out_of_order_readings() {
        let mut d = Drawdown::default();
        for (h, qty) in [
            (1.0, 900.0),
            (0.5, 2000.0),
            (2.0, 800.0),
            (3.0, 700.0),
            (4.0, 600.0),
        ] {
            d.observe(at(h), qty, 1.0);
        }
        assert_eq!(d.rate_per_h(1.0), Some(100.0));
    }

    #[test]
    fn drawdown_stays_small_whatever_the_readings() {
        // A warehouse has one per category and a facility gets 1 KiB in all
        // (docs/design.md#performance-targets).
        let mut d = Drawdown::default();
        for minute in 0..(48 * 60) {
            let h = f64::from(minute) / 60.0;
            // Irregular use, glitches and a restock now and then.
            let qty = 1e6 - 500.0 * h + if minute % 7 == 0 { -3e4 } else { 0.0 };
            let qty = if minute % 600 == 0 { qty + 1e5 } else { qty };
            d.observe(at(h), qty, 1.0);
            assert!(d.window.capacity() <= MAX_BUCKETS, "at minute {minute}");
        }
        let bytes = std::mem::size_of::<Drawdown>() + MAX_BUCKETS * std::mem::size_of::<Bucket>();
        assert!(bytes <= 176, "{bytes} bytes");
    }

    #[test]
    fn drawdown_of_the_old_snapshot_format_loads_without_its_rate() {
        // Written before the window: `last` and an exponential rate (here the one a
        // glitch left behind). The rate is ignored; the baseline is kept.
        let old = r#"{"last":["2026-11-24T01:00:00Z",900.0],"rate_per_h":48000000.0}"#;
        let mut d: Drawdown = serde_json::from_str(old).unwrap();
        assert_eq!(d.rate_per_h(1.0), None);
        for (h, qty) in [(2.0, 800.0), (3.0, 700.0), (4.0, 600.0)] {
            d.observe(at(h), qty, 1.0);
        }
        assert_eq!(d.rate_per_h(1.0), Some(100.0));
        let back: Drawdown = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
    }

    /// Two hours at 600 L/h read every 5 minutes, then a tanker loads 12,000 L over
    /// three readings (or, `sign` -1, unloads them), then another hour at the pace. A
    /// transfer recorded at `leg_h` is made known once `known_after` readings are in
    /// (37: after them all), or never. Returns the rate the forecast would use.
    fn rate_with_tanker(sign: f64, leg_h: f64, known_after: Option<u32>) -> Option<f64> {
        let leg = TransferLeg {
            id: 7,
            at: at(leg_h),
            window_s: 1800,
            left: sign * 12_000.0,
        };
        let mut d = Drawdown::default();
        let mut qty = 150_000.0;
        for i in 0..=36 {
            if known_after == Some(i) {
                assert!(d.expect_transfer(leg));
                assert!(!d.expect_transfer(leg), "one transfer is expected once");
            }
            qty -= 50.0;
            if (25..=27).contains(&i) {
                qty -= sign * 4_000.0;
            }
            d.observe(at(f64::from(i) * 5.0 / 60.0), qty, 1.0);
        }
        if known_after == Some(37) {
            assert!(d.expect_transfer(leg));
        }
        d.rate_per_h(1.0)
    }

    #[test]
    fn a_recorded_transfer_is_neither_consumption_nor_a_restock() {
        // (what, sign, known after readings)
        let cases: &[(&str, f64, u32)] = &[
            ("sent, recorded before the truck left", 1.0, 18),
            ("sent, recorded as it loads", 1.0, 26),
            ("sent, recorded just after", 1.0, 29),
            ("sent, recorded an hour later", 1.0, 37),
            ("received, recorded before it arrived", -1.0, 18),
            ("received, recorded as it unloads", -1.0, 26),
        ];
        for (what, sign, known_after) in cases {
            let rate = rate_with_tanker(*sign, 2.1, Some(*known_after));
            assert!(
                rate.is_some_and(|r| (r - 600.0).abs() < 1.0),
                "{what}: rate {rate:?}"
            );
        }
        // Not recorded, the same drop at the same pace is consumption: the rate the
        // recorded transfer keeps out.
        let unrecorded = rate_with_tanker(1.0, 2.1, None).unwrap();
        assert!(unrecorded > 2_000.0, "unrecorded drop: rate {unrecorded}");
        // A transfer recorded hours from the readings explains none of them.
        let far = rate_with_tanker(1.0, 0.5, Some(5));
        assert_eq!(far, Some(unrecorded), "a transfer recorded 1.5 h before");
    }

    #[test]
    fn hours_to_target_table() {
        let cases: &[(f64, f64, f64, Option<f64>)] = &[
            (1000.0, 400.0, 100.0, Some(6.0)),
            (400.0, 400.0, 100.0, Some(0.0)),
            (300.0, 400.0, 0.0, Some(0.0)),
            (1000.0, 400.0, 0.0, None),
        ];
        for (stock, target, rate, want) in cases {
            assert_eq!(hours_to_target(*stock, *target, *rate), *want);
        }
    }

    #[test]
    fn not_ready_ids_are_the_ones_the_api_and_stored_alerts_use() {
        // The API serves these ids and alert details keep them in SQLite: a rename
        // would break clients and the alerts stored before it.
        let cases = [
            (NotReady::NeverReported, "never_reported"),
            (NotReady::Silent, "silent"),
            (NotReady::PumpFault, "pump_fault"),
            (NotReady::PumpOff, "pump_off"),
            (NotReady::NotPotable, "not_potable"),
            (NotReady::PowerFault, "power_fault"),
            (NotReady::Maintenance, "maintenance"),
            (NotReady::LowFuel, "low_fuel"),
            (NotReady::LowBattery, "low_battery"),
        ];
        for (problem, id) in cases {
            assert_eq!(serde_json::to_value(problem).unwrap(), id, "{problem:?}");
            let back: NotReady = serde_json::from_value(id.into()).unwrap();
            assert_eq!(back, problem, "{id}");
        }
    }
}
