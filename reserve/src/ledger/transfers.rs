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

/// Why a transfer cannot move a hand-counted figure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shortfall {
    /// The sender's latest count holds less than was sent (`held`), or there is no
    /// count of the category yet (`None`).
    Holds { held: Option<f64> },
    /// The receiver would hold more than its declared capacity (`capacity_l`, or the
    /// warehouse's `max` for the category): a count that high would be refused as
    /// `over_capacity`, so the transfer is too.
    OverCapacity { held: f64, capacity: f64 },
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

    /// The most the facility may hold of `category`, when the registry declares it.
    fn capacity(&self, facility: FacilityIdx, category: CategoryIdx) -> Option<f64> {
        match self.registry.facility(facility).kind {
            FacilityKind::WaterPoint { capacity_l, .. } => capacity_l,
            FacilityKind::Warehouse => self.registry.warehouse_max(facility, category),
            // Power units hold no category, nor any other kind that declares no limit.
            _ => None,
        }
    }

    /// The reading a transfer makes at a facility counted by hand: its latest figure
    /// for `category` less what it `sent` (below 0: received), at `at` or just after
    /// its latest reading, so it is the newest. A sender must hold what it sent, a
    /// receiver must have room for it. A receiver never counted starts from nothing; a
    /// water point never counted has no pump or potability to carry over, so it gets
    /// no reading (`Ok(None)`).
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
            return Err(Shortfall::Holds { held });
        }
        let quantity = held.unwrap_or(0.0) - sent;
        if let Some(capacity) = self.capacity(facility, category)
            && quantity > capacity
        {
            let held = held.unwrap_or(0.0);
            return Err(Shortfall::OverCapacity { held, capacity });
        }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::TimeZone as _;

    use super::*;
    use crate::reading::PumpState;
    use crate::registry::{Registry, Source, load_registry};

    /// A warehouse and a water point counted by hand, and a water point never counted.
    fn registry() -> Arc<Registry> {
        let text = r#"
water_category = "water"
[[category]]
id = "water"
name = "Water"
unit = "L"
daily_need = 3.0
[[category]]
id = "food"
name = "Food"
unit = "ration"
daily_need = 3.0
[[town]]
id = "jingshan"
name = "Jingshan"
district = "d"
cluster = "c"
population = 1000
[[facility]]
id = "wh"
town = "jingshan"
kind = "warehouse"
report = "manual"
[[facility]]
id = "wp"
town = "jingshan"
kind = "water_point"
report = "manual"
capacity_l = 5000
[[facility]]
id = "wp-new"
town = "jingshan"
kind = "water_point"
report = "manual"
"#;
        let source = Source {
            name: "registry.toml".into(),
            text: text.into(),
        };
        Arc::new(load_registry(&source, &[], &mut |_| Err("no tables".into())).unwrap())
    }

    fn at(min: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + 60 * min, 0).unwrap()
    }

    #[test]
    fn a_transfer_moves_a_hand_counted_figure_or_says_what_it_holds() {
        let registry = registry();
        let mut ledger = Ledger::new(Arc::clone(&registry));
        let f = |id: &str| registry.facility_idx(id).unwrap();
        let c = |id: &str| registry.category_idx(id).unwrap();
        let counted = [
            Reading {
                facility: f("wh"),
                ts: at(0),
                seq: None,
                observation: Observation::Stock(vec![(c("water"), 5000.0)]),
            },
            Reading {
                facility: f("wp"),
                ts: at(10),
                seq: None,
                observation: Observation::Water(WaterObservation {
                    level_l: 800.0,
                    pump: PumpState::Off,
                    potable: true,
                }),
            },
        ];
        for reading in &counted {
            ledger.apply(reading, reading.ts);
        }
        let stock = |q: f64| Some(Observation::Stock(vec![(c("water"), q)]));
        let level = |q: f64| {
            Some(Observation::Water(WaterObservation {
                level_l: q,
                pump: PumpState::Off,
                potable: true,
            }))
        };
        // (what, facility, category, sent, reading's ts, observation or what it holds)
        type Case<'a> = (
            &'a str,
            FacilityIdx,
            CategoryIdx,
            f64,
            Result<(DateTime<Utc>, Option<Observation>), Shortfall>,
        );
        let cases: Vec<Case> = vec![
            (
                "sends part of its count",
                f("wh"),
                c("water"),
                2000.0,
                Ok((at(5), stock(3000.0))),
            ),
            (
                "sends all of it",
                f("wh"),
                c("water"),
                5000.0,
                Ok((at(5), stock(0.0))),
            ),
            (
                "sends more than it holds",
                f("wh"),
                c("water"),
                5000.5,
                Err(Shortfall::Holds { held: Some(5000.0) }),
            ),
            (
                "receives more than its capacity",
                f("wp"),
                c("water"),
                -4200.5,
                Err(Shortfall::OverCapacity {
                    held: 800.0,
                    capacity: 5000.0,
                }),
            ),
            (
                "sends a category never counted",
                f("wh"),
                c("food"),
                1.0,
                Err(Shortfall::Holds { held: None }),
            ),
            (
                "receives a category never counted",
                f("wh"),
                c("food"),
                -30.0,
                Ok((at(5), Some(Observation::Stock(vec![(c("food"), 30.0)])))),
            ),
            (
                "a water point keeps its pump and potability",
                f("wp"),
                c("water"),
                -200.0,
                Ok((at(10) + chrono::Duration::milliseconds(1), level(1000.0))),
            ),
            (
                "a water point never counted gets no reading",
                f("wp-new"),
                c("water"),
                -200.0,
                Ok((at(5), None)),
            ),
        ];
        for (what, facility, category, sent, want) in cases {
            let got = ledger
                .transfer_reading(facility, category, sent, at(5))
                .map(|r| match r {
                    Some(r) => (r.ts, Some(r.observation)),
                    None => (at(5), None),
                });
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn a_town_says_which_figures_rest_on_a_hand_count_and_the_oldest() {
        let registry = registry();
        let mut ledger = Ledger::new(Arc::clone(&registry));
        let water = registry.category_idx("water").unwrap();
        let food = registry.category_idx("food").unwrap();
        let town = registry.town_idx("jingshan").unwrap();
        let wh = Reading {
            facility: registry.facility_idx("wh").unwrap(),
            ts: at(0),
            seq: None,
            observation: Observation::Stock(vec![(water, 5000.0)]),
        };
        let wp = Reading {
            facility: registry.facility_idx("wp").unwrap(),
            ts: at(30),
            seq: None,
            observation: Observation::Water(WaterObservation {
                level_l: 800.0,
                pump: PumpState::Ok,
                potable: true,
            }),
        };
        for (reading, by_hand) in [(&wh, true), (&wp, true)] {
            ledger.apply(reading, reading.ts);
            ledger.set_counted_by_hand(reading.facility, reading.ts, by_hand);
        }
        let figures = ledger.refresh(town, at(60)).clone();
        assert_eq!(
            figures.categories[water.index()].counted_by_hand,
            Some(at(0))
        );
        assert_eq!(figures.categories[food.index()].counted_by_hand, None);
        // A gateway's newer reading at the warehouse: only the water point's count is left.
        let gateway = Reading { ts: at(40), ..wh };
        ledger.apply(&gateway, gateway.ts);
        ledger.set_counted_by_hand(gateway.facility, gateway.ts, false);
        let figures = ledger.refresh(town, at(60));
        assert_eq!(
            figures.categories[water.index()].counted_by_hand,
            Some(at(30))
        );
    }
}
