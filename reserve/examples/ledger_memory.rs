//! Memory of the live ledger at city and country scale
//! (docs/design.md#performance-targets: live state ≤ 1 KiB per facility; 40,000 towns /
//! 1.5 M facilities must fit in memory).
//!
//! Builds a synthetic registry in the demo's proportions (its five categories; warehouses,
//! water points and power units 548 : 717 : 474), as TOML and CSV text loaded through
//! [`load_registry`] like `check-config` does. Then a [`Ledger`] over it, one reading
//! for every facility (stock of every category at a warehouse, a water point's level, a
//! power unit's fuel), and a refresh of every town. The process's resident set
//! (`VmRSS`) and its peak (`VmHWM`) are read from `/proc/self/status` after each stage.
//!
//! ```text
//! cargo run --release -p reserve --example ledger_memory                 # 40,000 / 1.5 M
//! cargo run --release -p reserve --example ledger_memory -- --towns 343 --facilities 1739
//! cargo run --release -p reserve --example ledger_memory -- --registry demo/registry.toml
//! ```
//!
//! Prints one JSON line per stage and a summary line. The live state per facility is
//! (RSS after the refresh − RSS with the registry alone) / facilities: the ledger's
//! facility states and the towns' cached figures, not the registry, which is
//! configuration. Freed memory of the load can be handed out again to the ledger
//! without growing the RSS, so the summary adds an independent count from `size_of`
//! and the vectors' capacities (`accounted_live_bytes`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::mem::size_of;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use reserve::coverage::{Drawdown, Level, NotReady};
use reserve::ledger::{CategoryCoverage, FacilityState, Latest, Readiness, StockLine, TownFigures};
use reserve::reading::{PowerObservation, PowerState, PumpState, WaterObservation};
use reserve::registry::{FacilityKind, FacilityKindName, Registry, Source, load_registry};
use reserve::{FacilityId, Ledger, Observation, Reading};
use serde_json::json;

/// The demo's facilities by kind (demo/facilities.csv): the synthetic registry keeps
/// these proportions at any size.
const DEMO_WAREHOUSES: u64 = 548;
const DEMO_WATER_POINTS: u64 = 717;
const DEMO_POWER_UNITS: u64 = 474;
const DEMO_FACILITIES: u64 = DEMO_WAREHOUSES + DEMO_WATER_POINTS + DEMO_POWER_UNITS;
/// The demo's districts and clusters for its 343 towns, scaled with the town count.
const DEMO_TOWNS: u64 = 343;
const DEMO_DISTRICTS: u64 = 16;
const DEMO_CLUSTERS: u64 = 39;

/// The demo's categories, verbatim.
const CATEGORIES_TOML: &str = r#"
[[category]]
id = "water"
name = "Drinking water"
unit = "L"
daily_need = 3.0

[[category]]
id = "food"
name = "Food"
unit = "ration"
daily_need = 3.0

[[category]]
id = "infant-formula"
name = "Infant formula"
unit = "kg"
daily_need = 0.15
group = "infants"

[[category]]
id = "medical-kit"
name = "Medical kits"
unit = "kit"
daily_need = 0.02

[[category]]
id = "blanket"
name = "Blankets"
unit = "pcs"
daily_need = 0.34
"#;

#[derive(Debug)]
struct Args {
    towns: u64,
    facilities: u64,
    /// A registry file to load instead of the synthetic one (e.g. the demo's).
    registry: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        towns: 40_000,
        facilities: 1_500_000,
        registry: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().expect("flag needs a value");
        match flag.as_str() {
            "--towns" => a.towns = value().parse().expect("--towns N"),
            "--facilities" => a.facilities = value().parse().expect("--facilities N"),
            "--registry" => a.registry = Some(value()),
            other => panic!("unknown flag {other} (--towns N, --facilities N, --registry PATH)"),
        }
    }
    assert!(a.towns > 0, "--towns must be at least 1");
    a
}

/// Resident set and its peak, in bytes.
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss: u64,
    peak: u64,
}

fn memory() -> Memory {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{key} in /proc/self/status"))
    };
    Memory {
        rss: kib("VmRSS:") * 1024,
        peak: kib("VmHWM:") * 1024,
    }
}

/// Times one stage and prints its line.
fn stage<T>(name: &str, work: impl FnOnce() -> T) -> (T, Memory) {
    let started = Instant::now();
    let out = work();
    let seconds = started.elapsed().as_secs_f64();
    let m = memory();
    println!(
        "{}",
        json!({
            "stage": name,
            "seconds": (seconds * 10_000.0).round() / 10_000.0,
            "rss_bytes": m.rss,
            "peak_rss_bytes": m.peak,
        })
    );
    (out, m)
}

/// splitmix64: a deterministic spread of values without a dependency.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// `lo..hi` picked by `seed`.
fn pick(seed: u64, lo: u64, hi: u64) -> u64 {
    lo + mix(seed) % (hi - lo)
}

/// The kind of the `g`-th facility: a permutation of each block of the demo's 1,739
/// facilities (7,919 is prime, so coprime to 1,739), so kinds interleave and every
/// block holds the demo's exact counts.
fn kind_of(g: u64) -> FacilityKindName {
    let r = (g * 7919) % DEMO_FACILITIES;
    if r < DEMO_WAREHOUSES {
        FacilityKindName::Warehouse
    } else if r < DEMO_WAREHOUSES + DEMO_WATER_POINTS {
        FacilityKindName::WaterPoint
    } else {
        FacilityKindName::PowerUnit
    }
}

/// The synthetic registry's texts: `registry.toml` and its three CSV tables, with ids
/// and names about as long as the demo's (`d0012-town-01234-wh1`, Chinese names).
fn synthetic_texts(towns: u64, facilities: u64) -> (String, HashMap<String, String>) {
    let districts = (towns * DEMO_DISTRICTS).div_ceil(DEMO_TOWNS).max(1);
    let clusters = (towns * DEMO_CLUSTERS).div_ceil(DEMO_TOWNS).max(districts);
    let district_of_cluster = |c: u64| c * districts / clusters;
    let cluster_of_town = |t: u64| t * clusters / towns;
    let town_id = |t: u64| {
        format!(
            "d{:04}-town-{t:05}",
            district_of_cluster(cluster_of_town(t))
        )
    };

    let mut main = String::from(
        "# SYNTHETIC registry of reserve/examples/ledger_memory.rs\n\
         water_category = \"water\"\n\n\
         [target]\ndays = 3.0\nwarn_days = 3.5\nhysteresis = 0.1\n\n\
         [csv]\ntowns = \"towns.csv\"\nfacilities = \"facilities.csv\"\n\
         contacts = \"contacts.csv\"\n",
    );
    for d in 0..districts {
        write!(
            main,
            "\n[[district]]\nid = \"d{d:04}\"\nname = \"第{d}区\"\n"
        )
        .unwrap();
    }
    for c in 0..clusters {
        write!(
            main,
            "\n[[cluster]]\nid = \"c{c:05}\"\nname = \"第{c}组团\"\n"
        )
        .unwrap();
    }
    main.push_str(CATEGORIES_TOML);

    let mut towns_csv = String::from("id,name,district,cluster,population,lat,lon,groups\n");
    for t in 0..towns {
        let cluster = cluster_of_town(t);
        let population = pick(t, 20_000, 110_000);
        let infants = population / 100;
        let elderly = population * pick(t + 1, 10, 25) / 100;
        let dialysis = population / 2500;
        writeln!(
            towns_csv,
            "{},安宁{t:05}街道,d{:04},c{cluster:05},{population},{:.5},{:.5},\
             infants={infants};elderly={elderly};dialysis={dialysis}",
            town_id(t),
            district_of_cluster(cluster),
            39.4 + pick(t, 0, 100_000) as f64 / 100_000.0,
            115.7 + pick(t + 2, 0, 150_000) as f64 / 100_000.0,
        )
        .unwrap();
    }

    let mut facilities_csv = String::from(
        "id,town,kind,name,lat,lon,report_every,capacity_l,fuel_capacity_l,burn_l_per_h,\
         min_battery_pct\n",
    );
    let (per_town, extra) = (facilities / towns, facilities % towns);
    let mut g = 0;
    for t in 0..towns {
        let id = town_id(t);
        let mut numbers = [0u32; 3];
        for _ in 0..per_town + u64::from(t < extra) {
            let kind = kind_of(g);
            let (tag, label, n) = match kind {
                FacilityKindName::Warehouse => ("wh", "应急物资仓库", &mut numbers[0]),
                FacilityKindName::WaterPoint => ("wp", "应急供水点", &mut numbers[1]),
                FacilityKindName::PowerUnit => ("pu", "应急发电机组", &mut numbers[2]),
                FacilityKindName::Shelter => unreachable!("`kind_of` picks no shelters"),
            };
            *n += 1;
            let report_every = if g % 10 == 0 { "300s" } else { "60s" };
            let settings = match kind {
                FacilityKindName::Warehouse => ",,,".to_owned(),
                FacilityKindName::WaterPoint => format!("{},,,", 5000 * pick(g, 4, 41)),
                FacilityKindName::PowerUnit => {
                    let fuel = 50 * pick(g, 4, 41);
                    format!(",{fuel},{:.1},50", (fuel as f64 / 110.0).max(2.0))
                }
                FacilityKindName::Shelter => unreachable!("`kind_of` picks no shelters"),
            };
            writeln!(
                facilities_csv,
                "{id}-{tag}{n},{id},{kind},安宁{t:05}街道{label}{n},{:.5},{:.5},{report_every},\
                 {settings}",
                39.4 + pick(g, 0, 100_000) as f64 / 100_000.0,
                115.7 + pick(g + 1, 0, 150_000) as f64 / 100_000.0,
            )
            .unwrap();
            g += 1;
        }
    }

    // As in the demo: an officer per town, a deputy for every fourth town and the next,
    // one contact per cluster and district, two city duty officers.
    let mut contacts_csv =
        String::from("name,email,phone,lang,towns,clusters,districts,city,channels\n");
    let mut n = 0;
    let mut person = |scope: &str| {
        n += 1;
        writeln!(
            contacts_csv,
            "李海燕{n},haiyan.li{n}@example.org,+86138{n:08},zh,{scope},"
        )
        .unwrap();
    };
    for t in 0..towns {
        person(&format!("{},,,", town_id(t)));
        if t % 4 == 0 && t + 1 < towns {
            person(&format!("{};{},,,", town_id(t), town_id(t + 1)));
        }
    }
    for c in 0..clusters {
        person(&format!(",c{c:05},,"));
    }
    for d in 0..districts {
        person(&format!(",,d{d:04},"));
    }
    for _ in 0..2 {
        person(",,,true");
    }

    let tables = HashMap::from([
        ("towns.csv".to_owned(), towns_csv),
        ("facilities.csv".to_owned(), facilities_csv),
        ("contacts.csv".to_owned(), contacts_csv),
    ]);
    (main, tables)
}

fn synthetic_registry(towns: u64, facilities: u64) -> Registry {
    let (main, mut tables) = synthetic_texts(towns, facilities);
    let text_bytes = main.len() + tables.values().map(String::len).sum::<usize>();
    let main = Source {
        name: "registry.toml".to_owned(),
        text: main,
    };
    // Tables are moved out, not copied: the load's peak is the loader's own.
    let mut read = |name: &str| -> Result<Source, String> {
        let text = tables.remove(name).ok_or("no such table")?;
        Ok(Source {
            name: name.to_owned(),
            text,
        })
    };
    let started = Instant::now();
    let registry = load_registry(&main, &[], &mut read).expect("synthetic registry loads");
    println!(
        "{}",
        json!({"registry_text_bytes": text_bytes, "load_seconds": started.elapsed().as_secs_f64()})
    );
    registry
}

fn file_registry(path: &str) -> Registry {
    let dir = Path::new(path).parent().unwrap_or(Path::new("."));
    let read_path = |p: &Path| -> Result<Source, String> {
        Ok(Source {
            name: p.display().to_string(),
            text: std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?,
        })
    };
    let main = read_path(Path::new(path)).expect("registry file");
    load_registry(&main, &[], &mut |name| read_path(&dir.join(name)))
        .unwrap_or_else(|e| panic!("{path} does not load:\n{e}"))
}

/// A plausible first reading of `facility`: every category's stock at a warehouse, a
/// water point's level, a power unit's fuel.
fn reading(registry: &Registry, facility: usize, ts: DateTime<Utc>) -> Reading {
    let f = &registry.facilities[facility];
    let seed = facility as u64;
    let observation = match &f.kind {
        FacilityKind::Warehouse => Observation::Stock(
            registry
                .category_indices()
                .map(|c| (c, pick(seed + c.0 as u64, 100, 50_000) as f64))
                .collect(),
        ),
        FacilityKind::WaterPoint { capacity_l } => Observation::Water(WaterObservation {
            level_l: capacity_l.unwrap_or(100_000.0) * 0.8,
            pump: PumpState::Ok,
            potable: true,
        }),
        FacilityKind::PowerUnit {
            fuel_capacity_l, ..
        } => Observation::Power(PowerObservation {
            fuel_l: fuel_capacity_l * 0.9,
            battery_pct: Some(95.0),
            state: PowerState::Standby,
            burn_l_per_h: None,
        }),
        FacilityKind::Shelter(_) => unreachable!("`kind_of` picks no shelters"),
    };
    Reading {
        facility: reserve::registry::FacilityIdx::from_index(facility),
        ts,
        seq: Some(1),
        observation,
    }
}

/// Bytes glibc's malloc takes for a request: an 8-byte header, 16-byte steps, 32 at
/// least; nothing for an empty vector, which does not allocate.
fn malloc_chunk(request: usize) -> usize {
    if request == 0 {
        0
    } else {
        (request + 8).next_multiple_of(16).max(32)
    }
}

fn vec_heap<T>(v: &[T], capacity: usize) -> usize {
    debug_assert!(capacity >= v.len());
    malloc_chunk(capacity * size_of::<T>())
}

/// The ledger's live state counted from `size_of` and capacities, split into the
/// facilities' states and the towns' (their cached figures and hysteresis levels).
fn accounted(ledger: &Ledger) -> (usize, usize) {
    let registry = ledger.registry();
    let facilities = registry.facilities.len();
    let mut facility_bytes = malloc_chunk(facilities * size_of::<FacilityState>());
    for f in 0..facilities {
        let state = ledger.facility(reserve::registry::FacilityIdx::from_index(f));
        if let Some(Latest::Stock(lines)) = &state.latest {
            facility_bytes += vec_heap::<StockLine>(lines, lines.capacity());
        }
    }
    // `TownState` is private: its sheltered count, its levels and its figures.
    let town_state = size_of::<u64>() + size_of::<Vec<Level>>() + size_of::<TownFigures>();
    let towns = registry.towns.len();
    let mut town_bytes = malloc_chunk(towns * town_state);
    for t in registry.town_indices() {
        let fig = ledger.figures(t);
        town_bytes += malloc_chunk(registry.categories.len() * size_of::<Level>());
        town_bytes += vec_heap::<CategoryCoverage>(&fig.categories, fig.categories.capacity());
        for r in fig.power_units.iter().chain(&fig.water_points) {
            town_bytes += vec_heap::<NotReady>(&r.problems, r.problems.capacity());
        }
        town_bytes += vec_heap::<Readiness>(&fig.power_units, fig.power_units.capacity());
        town_bytes += vec_heap::<Readiness>(&fig.water_points, fig.water_points.capacity());
        town_bytes += vec_heap(&fig.silent, fig.silent.capacity());
        town_bytes += vec_heap(&fig.never_reported, fig.never_reported.capacity());
    }
    (facility_bytes, town_bytes)
}

fn main() {
    let args = args();
    let start = memory();
    println!(
        "{}",
        json!({"stage": "start", "rss_bytes": start.rss, "peak_rss_bytes": start.peak})
    );
    println!(
        "{}",
        json!({"size_of": {
            "FacilityState": size_of::<FacilityState>(),
            "Latest": size_of::<Latest>(),
            "StockLine": size_of::<StockLine>(),
            "Drawdown": size_of::<Drawdown>(),
            "DateTime<Utc>": size_of::<DateTime<Utc>>(),
            "TownFigures": size_of::<TownFigures>(),
            "CategoryCoverage": size_of::<CategoryCoverage>(),
            "Readiness": size_of::<Readiness>(),
            "Facility (registry)": size_of::<reserve::registry::Facility>(),
            "FacilityId": size_of::<FacilityId>(),
        }})
    );

    let (registry, with_registry) = stage("registry", || {
        Arc::new(match &args.registry {
            Some(path) => file_registry(path),
            None => synthetic_registry(args.towns, args.facilities),
        })
    });
    let (mut ledger, with_ledger) = stage("ledger", || Ledger::new(Arc::clone(&registry)));
    let ts: DateTime<Utc> = "2026-11-30T08:00:00Z".parse().expect("timestamp");
    let ((), with_readings) = stage("readings", || {
        for f in 0..registry.facilities.len() {
            ledger.apply(&reading(&registry, f, ts), ts);
        }
    });
    let ((), refreshed) = stage("refresh", || {
        ledger.refresh_all(ts + Duration::seconds(30));
    });

    let facilities = registry.facilities.len() as f64;
    let per_facility = |bytes: u64| (bytes as f64 / facilities).round();
    let live = refreshed.rss.saturating_sub(with_registry.rss);
    let (facility_bytes, town_bytes) = accounted(&ledger);
    let ready = registry
        .town_indices()
        .filter(|&t| ledger.figures(t).computed_at.is_some())
        .count();
    assert_eq!(ready, registry.towns.len(), "every town refreshed");
    println!(
        "{}",
        json!({
            "towns": registry.towns.len(),
            "facilities": registry.facilities.len(),
            "warehouses": registry.count_facilities(FacilityKindName::Warehouse),
            "water_points": registry.count_facilities(FacilityKindName::WaterPoint),
            "power_units": registry.count_facilities(FacilityKindName::PowerUnit),
            "categories": registry.categories.len(),
            "registry_bytes": with_registry.rss.saturating_sub(start.rss),
            "registry_bytes_per_facility": per_facility(with_registry.rss.saturating_sub(start.rss)),
            "ledger_new_bytes": with_ledger.rss.saturating_sub(with_registry.rss),
            "readings_bytes": with_readings.rss.saturating_sub(with_ledger.rss),
            "refresh_bytes": refreshed.rss.saturating_sub(with_readings.rss),
            "live_bytes": live,
            "live_bytes_per_facility": per_facility(live),
            "accounted_live_bytes": facility_bytes + town_bytes,
            "accounted_live_bytes_per_facility": per_facility((facility_bytes + town_bytes) as u64),
            "accounted_facility_state_bytes_per_facility": per_facility(facility_bytes as u64),
            "accounted_town_bytes_per_facility": per_facility(town_bytes as u64),
            "target_bytes_per_facility": 1024,
            "rss_bytes": refreshed.rss,
            "peak_rss_bytes": refreshed.peak,
        })
    );
}
