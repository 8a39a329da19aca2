//! Transfers in the ledger (docs/design.md#transfers): what a recorded transfer does to
//! the two facilities it moved stock between. At a facility counted by hand the
//! transfer is the figure's only news, so it becomes a reading: the latest count moved
//! by the quantity. At a gateway facility the next readings are the truth, and the
//! consumption estimate is told to expect the drop or the rise, so that it is taken
//! for neither use nor a restock.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Latest, Ledger};
use crate::coverage::{Drawdown, TransferLeg};
use crate::reading::{Observation, Reading, WaterObservation};
use crate::registry::{CategoryIdx, FacilityIdx, FacilityKind};

/// The least time each way from a transfer's recording in which a facility's readings
/// may show it: an officer types it when the truck is back, often half an hour after
/// it left, whatever the gateway's rhythm.
pub const MIN_TRANSFER_WINDOW: Duration = Duration::from_secs(30 * 60);

/// How far from its recording a transfer may show in a facility's readings, in seconds
/// each way: a report interval (the reading before or after the truck), and at least
/// [`MIN_TRANSFER_WINDOW`].
pub fn transfer_window_s(report_every: Duration) -> u32 {
    let window = report_every.max(MIN_TRANSFER_WINDOW);
    u32::try_from(window.as_secs()).unwrap_or(u32::MAX)
}

/// Why a transfer cannot move a hand-counted figure: the sender's latest count holds
/// less than was sent, or there is no count of the category yet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shortfall {
    /// What the latest count holds; `None` without a count.
    pub held: Option<f64>,
}

impl Ledger {
    /// The facility's latest figure for `category`: a warehouse's stock line, a water
    /// point's level for the water category.
    pub fn held(&self, facility: FacilityIdx, category: CategoryIdx) -> Option<f64> {
        match self.facilities[facility.index()].latest.as_ref()? {
            Latest::Stock(lines) => lines
                .iter()
                .find(|l| l.category == category)
                .map(|l| l.quantity),
            Latest::Water { obs, .. } if self.registry.water_category == Some(category) => {
                Some(obs.level_l)
            }
            _ => None,
        }
    }

    /// The reading a transfer makes at a facility counted by hand: its latest figure
    /// for `category` less what it `sent` (below 0: received), at `at` or just after
    /// its latest reading, so it is the newest. A sender must hold what it sent. A
    /// receiver never counted starts from nothing; a water point never counted has no
    /// pump or potability to carry over, so it gets no reading (`Ok(None)`).
    pub fn transfer_reading(
        &self,
        facility: FacilityIdx,
        category: CategoryIdx,
        sent: f64,
        at: DateTime<Utc>,
    ) -> Result<Option<Reading>, Shortfall> {
        let state = &self.facilities[facility.index()];
        let held = self.held(facility, category);
        if sent > 0.0 && held.is_none_or(|h| h < sent) {
            return Err(Shortfall { held });
        }
        let quantity = held.unwrap_or(0.0) - sent;
        let observation = match &state.latest {
            Some(Latest::Water { obs, .. }) => Observation::Water(WaterObservation {
                level_l: quantity,
                ..*obs
            }),
            None if matches!(
                self.registry.facility(facility).kind,
                FacilityKind::WaterPoint { .. }
            ) =>
            {
                return Ok(None);
            }
            _ => Observation::Stock(vec![(category, quantity)]),
        };
        let just_after = state.last_ts.map(|t| t + chrono::Duration::milliseconds(1));
        Ok(Some(Reading {
            facility,
            ts: just_after.map_or(at, |t| t.max(at)),
            seq: None,
            observation,
        }))
    }

    /// Tells the consumption estimate of the facility's stock of `category` to expect
    /// transfer `id`, recorded `at`: a drop of `sent` (below 0: a rise) within the
    /// facility's window. False when the stock has no estimate yet (never reported)
    /// or expected it already.
    pub fn expect_transfer(
        &mut self,
        facility: FacilityIdx,
        category: CategoryIdx,
        id: i64,
        at: DateTime<Utc>,
        sent: f64,
    ) -> bool {
        let window_s = transfer_window_s(self.registry.facility(facility).report_every);
        let water = self.registry.water_category == Some(category);
        let drawdown: Option<&mut Drawdown> =
            match self.facilities[facility.index()].latest.as_mut() {
                Some(Latest::Stock(lines)) => lines
                    .iter_mut()
                    .find(|l| l.category == category)
                    .map(|l| &mut l.drawdown),
                Some(Latest::Water { drawdown, .. }) if water => Some(drawdown),
                _ => None,
            };
        drawdown.is_some_and(|d| {
            d.expect_transfer(TransferLeg {
                id,
                at,
                window_s,
                left: sent,
            })
        })
    }
}

// Hand counts: which figures rest on an officer's word, and since when.
impl Ledger {
    /// Records whether the facility's latest reading, measured at `ts`, was entered by
    /// hand; the caller applied it. A reading that is not the latest (an older one,
    /// history only) changes nothing.
    pub fn set_counted_by_hand(&mut self, facility: FacilityIdx, ts: DateTime<Utc>, by_hand: bool) {
        let state = &mut self.facilities[facility.index()];
        if state.last_ts == Some(ts) {
            state.counted_by_hand = by_hand.then_some(ts);
        }
    }

    /// The oldest hand count among the town's facilities whose figure for `category`
    /// counts in its stock (warehouses holding it; water points for the water
    /// category).
    pub(super) fn oldest_hand_count(
        &self,
        town: crate::registry::TownIdx,
        category: CategoryIdx,
    ) -> Option<DateTime<Utc>> {
        self.registry
            .town(town)
            .facilities
            .iter()
            .filter(|&&f| self.held(f, category).is_some())
            .filter_map(|&f| self.facilities[f.index()].counted_by_hand)
            .min()
    }
}
