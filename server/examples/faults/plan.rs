//! What the gateways report: the registry the service runs with, and each reading's
//! topic and payload. Town `jingshan` is well stocked and only adds load; each of the
//! alerting towns has one warehouse that swings between half a day of water and
//! sixteen days every `swing_every`, so its officer is told "critical" and then
//! "resolved", over and over, while the fault happens.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// One reading's identity: the facility (an index into [`Plan::facilities`]) and its
/// timestamp, which is the store's key and InfluxDB's point identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub facility: usize,
    pub ts_ms: i64,
}

#[derive(Debug, Clone)]
pub struct Facility {
    pub id: String,
    pub town: &'static str,
    /// Swings below and above the target, so alerts fire and resolve.
    pub alerting: bool,
}

/// Warehouses of the well-stocked town.
const STEADY_WAREHOUSES: usize = 16;
/// Towns whose warehouse swings, each with its own duty officer.
pub const ALERTING_TOWNS: [&str; 3] = ["donghua", "jianguomen", "chaowai"];
/// 20,000 people need 60,000 L a day: 30,000 L is half a day (critical), 1,000,000 L
/// sixteen days (fine, well clear of the hysteresis band).
const LOW_L: u64 = 30_000;
const HIGH_L: u64 = 1_000_000;

#[derive(Debug)]
pub struct Plan {
    pub facilities: Vec<Facility>,
    started: Instant,
    swing_every: Duration,
}

impl Plan {
    pub fn new(swing_every: Duration) -> Plan {
        let mut facilities: Vec<Facility> = (0..STEADY_WAREHOUSES)
            .map(|i| Facility {
                id: format!("js-wh{i}"),
                town: "jingshan",
                alerting: false,
            })
            .collect();
        facilities.extend(ALERTING_TOWNS.iter().map(|town| Facility {
            id: format!("{town}-wh"),
            town,
            alerting: true,
        }));
        Plan {
            facilities,
            started: Instant::now(),
            swing_every,
        }
    }

    pub fn topic(&self, facility: usize) -> String {
        let f = &self.facilities[facility];
        format!("stockpile/v1/{}/{}/reading", f.town, f.id)
    }

    /// The reading `key` as the wire carries it.
    pub fn payload(&self, key: Key, seq: u64) -> String {
        let water = if self.facilities[key.facility].alerting {
            let phase = self.started.elapsed().as_millis() / self.swing_every.as_millis().max(1);
            if phase.is_multiple_of(2) {
                LOW_L
            } else {
                HIGH_L
            }
        } else {
            100_000 - seq % 1000
        };
        format!(
            r#"{{"ts": {}, "seq": {seq}, "stock": {{"water": {water}}}}}"#,
            key.ts_ms
        )
    }

    /// registry.toml: one category, the towns, their facilities, one officer per
    /// alerting town.
    pub fn registry_toml(&self) -> String {
        let mut toml = String::from(
            "[[category]]\nid = \"water\"\nname = \"Drinking water\"\nunit = \"L\"\ndaily_need = 3.0\n\n\
             [[town]]\nid = \"jingshan\"\nname = \"景山街道\"\ndistrict = \"dongcheng\"\ncluster = \"c01\"\npopulation = 30000\n",
        );
        for town in ALERTING_TOWNS {
            let _ = write!(
                toml,
                "\n[[town]]\nid = \"{town}\"\nname = \"{town}\"\ndistrict = \"dongcheng\"\ncluster = \"c01\"\npopulation = 20000\n\
                 \n[[contact]]\nname = \"Duty officer {town}\"\nemail = \"duty.{town}@example.org\"\nlang = \"en\"\ntowns = [\"{town}\"]\n"
            );
        }
        for facility in &self.facilities {
            let _ = write!(
                toml,
                "\n[[facility]]\nid = \"{}\"\ntown = \"{}\"\nkind = \"warehouse\"\n",
                facility.id, facility.town
            );
        }
        toml
    }
}
