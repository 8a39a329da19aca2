//! A reading's body as stored: the observation in the shape of a payload
//! (docs/design.md#payloads) without `ts` and `seq` (those are columns), categories named
//! by their registry ids.
//!
//! ```json
//! {"stock":{"water":12000.0,"food":5400.0}}
//! {"water":{"level_l":52000.0,"pump":"ok","potable":true}}
//! {"power":{"fuel_l":380.0,"battery_pct":96.0,"state":"standby"}}
//! {"shelter":{"occupancy":412,"mode":"open"}}
//! ```
//!
//! Written here rather than with `reserve::wire`'s encoder so that what history holds
//! does not change when the wire format grows a field or a version.

use reserve::Observation;
use reserve::reading::{PowerState, PumpState, ShelterMode};
use reserve::registry::{CategoryIdx, Registry};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

/// Encodes `observation`, whose category indices resolve in `registry`.
pub(super) fn encode(
    registry: &Registry,
    observation: &Observation,
) -> Result<String, serde_json::Error> {
    serde_json::to_string(&Body {
        registry,
        observation,
    })
}

struct Body<'a> {
    registry: &'a Registry,
    observation: &'a Observation,
}

impl Serialize for Body<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        match self.observation {
            Observation::Stock(quantities) => map.serialize_entry(
                "stock",
                &Stock {
                    registry: self.registry,
                    quantities,
                },
            )?,
            Observation::Water(w) => map.serialize_entry(
                "water",
                &Water {
                    level_l: w.level_l,
                    pump: w.pump,
                    potable: w.potable,
                },
            )?,
            Observation::Power(p) => map.serialize_entry(
                "power",
                &Power {
                    fuel_l: p.fuel_l,
                    battery_pct: p.battery_pct,
                    state: p.state,
                    burn_l_per_h: p.burn_l_per_h,
                },
            )?,
            Observation::Shelter(o) => map.serialize_entry(
                "shelter",
                &Shelter {
                    occupancy: o.occupancy,
                    mode: o.mode,
                },
            )?,
        }
        map.end()
    }
}

struct Stock<'a> {
    registry: &'a Registry,
    quantities: &'a [(CategoryIdx, f64)],
}

impl Serialize for Stock<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.quantities.len()))?;
        for &(category, quantity) in self.quantities {
            map.serialize_entry(self.registry.category(category).id.as_str(), &quantity)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct Water {
    level_l: f64,
    pump: PumpState,
    potable: bool,
}

#[derive(Serialize)]
struct Power {
    fuel_l: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    battery_pct: Option<f64>,
    state: PowerState,
    #[serde(skip_serializing_if = "Option::is_none")]
    burn_l_per_h: Option<f64>,
}

#[derive(Serialize)]
struct Shelter {
    occupancy: u64,
    mode: ShelterMode,
}
