//! A dual-use shelter's door counter (docs/design.md#shelters): in everyday use it
//! reports `normal` and nobody inside; when its town takes in displaced people it
//! converts (`activating`), opens, and fills over a few hours toward its share of them,
//! never beyond its capacity.

use reserve::reading::ShelterMode;
use reserve::wire::{WireReading, WireShelter, WireTs};

/// How long a shelter takes to convert once its town's influx begins: well within the
/// demo registry's `convert_within`, so a healthy run raises no `shelter_not_ready`.
pub(crate) const ACTIVATING_H: f64 = 0.5;
/// Hours from opening until its share of the displaced have arrived.
pub(crate) const FILL_H: f64 = 6.0;

#[derive(Debug, Clone)]
pub(crate) struct Shelter {
    capacity: u64,
    /// When the town's influx begins and how many people this shelter is to take;
    /// `None` for a town that takes in nobody.
    opens: Option<(f64, u64)>,
    mode: ShelterMode,
    occupancy: u64,
}

impl Shelter {
    /// `opens`: the influx's start and this shelter's share of it (capped at capacity).
    pub(crate) fn new(capacity: u64, opens: Option<(f64, u64)>) -> Shelter {
        Shelter {
            capacity,
            opens: opens.map(|(at_h, people)| (at_h, people.min(capacity))),
            mode: ShelterMode::Normal,
            occupancy: 0,
        }
    }

    pub(crate) fn advance(&mut self, to_h: f64) {
        let Some((at_h, people)) = self.opens else {
            return;
        };
        let open_h = at_h + ACTIVATING_H;
        (self.mode, self.occupancy) = if to_h < at_h {
            (ShelterMode::Normal, 0)
        } else if to_h < open_h {
            (ShelterMode::Activating, 0)
        } else {
            let arrived = ((to_h - open_h) / FILL_H).min(1.0);
            (ShelterMode::Open, (people as f64 * arrived).round() as u64)
        };
        debug_assert!(self.occupancy <= self.capacity);
    }

    pub(crate) fn reading(&self, ts: WireTs) -> WireReading<'static> {
        WireReading::shelter(
            ts,
            WireShelter {
                occupancy: self.occupancy as f64,
                mode: self.mode,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shelter_converts_then_fills_to_its_share_within_capacity() {
        let mut s = Shelter::new(500, Some((2.0, 800)));
        s.advance(1.0);
        assert_eq!((s.mode, s.occupancy), (ShelterMode::Normal, 0));
        s.advance(2.2);
        assert_eq!((s.mode, s.occupancy), (ShelterMode::Activating, 0));
        s.advance(2.5 + FILL_H / 2.0);
        assert_eq!((s.mode, s.occupancy), (ShelterMode::Open, 250));
        s.advance(2.5 + FILL_H * 3.0);
        assert_eq!((s.mode, s.occupancy), (ShelterMode::Open, 500));
    }

    #[test]
    fn a_shelter_of_a_town_taking_in_nobody_stays_in_everyday_use() {
        let mut s = Shelter::new(500, None);
        s.advance(48.0);
        assert_eq!((s.mode, s.occupancy), (ShelterMode::Normal, 0));
    }
}
