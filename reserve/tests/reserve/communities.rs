//! Communities (村社) with their vulnerable people: loading (valid, every bad field
//! located, the town roll-up) and who a shortfall affects.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use reserve::Ledger;
use reserve::reading::{
    Observation, PowerObservation, PowerState, PumpState, Reading, WaterObservation,
};
use reserve::registry::{Group, LoadErrors, Registry, Source, load_registry};
use reserve::vulnerable::{Cause, affected};

/// Two towns; jingshan has a water point, a power unit and a warehouse. 30 lines.
const BASE: &str = r#"[[category]]
id = "water"
name = "Drinking water"
unit = "L"
daily_need = 3.0
[[category]]
id = "formula"
name = "Infant formula"
unit = "kg"
daily_need = 0.2
group = "infants"
[[town]]
id = "jingshan"
name = "景山街道"
district = "dongcheng"
cluster = "c01"
population = 1000
[[town]]
id = "donghua"
name = "东华门街道"
district = "dongcheng"
cluster = "c01"
population = 500
[[facility]]
id = "js-wp1"
town = "jingshan"
kind = "water_point"
[[facility]]
id = "js-pu1"
town = "jingshan"
kind = "power_unit"
fuel_capacity_l = 500
"#;

/// The rest of jingshan's facilities and three communities.
const COMMUNITIES: &str = r#"burn_l_per_h = 5
min_battery_pct = 20
[[facility]]
id = "js-wh1"
town = "jingshan"
kind = "warehouse"
[[community]]
id = "sanyanjing"
town = "jingshan"
name = "三眼井社区"
groups = { elderly_alone = 40, infants = 12, dialysis = 2 }
water_point = "js-wp1"
power_unit = "js-pu1"
[[community]]
id = "jishou"
town = "jingshan"
name = "吉市口社区"
groups = { elderly_alone = 10, oxygen = 1 }
water_point = "js-wp1"
[[community]]
id = "huangchenggen"
town = "jingshan"
name = "皇城根社区"
groups = { infants = 5 }
power_unit = "js-pu1"
"#;

fn load_files(main: &str, others: &[(&str, &str)]) -> Result<Registry, LoadErrors> {
    let main = Source {
        name: "registry.toml".into(),
        text: main.into(),
    };
    let mut read = |path: &str| {
        others
            .iter()
            .find(|(name, _)| *name == path)
            .map(|(name, text)| Source {
                name: (*name).into(),
                text: (*text).into(),
            })
            .ok_or_else(|| "no such file".to_owned())
    };
    load_registry(&main, &[], &mut read)
}

fn valid() -> Registry {
    load_files(&format!("{BASE}{COMMUNITIES}"), &[]).unwrap_or_else(|e| panic!("{e}"))
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(g, n)| (g.to_string(), *n)).collect()
}

#[test]
fn communities_load_and_roll_up_into_their_town() {
    let r = valid();
    let ids: Vec<&str> = r.communities().iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["sanyanjing", "jishou", "huangchenggen"]);
    let first = &r.communities()[0];
    assert_eq!(first.name, "三眼井社区");
    assert_eq!(first.water_point, r.facility_idx("js-wp1"));
    assert_eq!(first.power_unit, r.facility_idx("js-pu1"));
    assert_eq!(first.people(), 54);

    let jingshan = r.town(r.town_idx("jingshan").unwrap());
    let want = [
        ("dialysis", 2),
        ("elderly_alone", 50),
        ("infants", 17),
        ("oxygen", 1),
    ];
    assert_eq!(jingshan.groups, counts(&want));
    // A town without communities keeps what it says (here: nothing).
    let donghua = r.town(r.town_idx("donghua").unwrap());
    assert!(donghua.groups.is_empty());
    // A category may depend on a group only communities name.
    let formula = r.category(r.category_idx("formula").unwrap());
    assert_eq!(formula.group, Group::Named("infants".into()));
}

#[test]
fn communities_load_from_csv_located_by_row() {
    let csv = "id,town,name,groups,water_point,power_unit,shelter\n\
               sanyanjing,jingshan,三眼井社区,elderly_alone=40;infants=12,js-wp1,js-pu1,\n\
               jishou,jingshan,吉市口社区,dialysis=2,,,\n";
    let main = format!(
        "[csv]\ncommunities = \"communities.csv\"\n{BASE}burn_l_per_h = 5\nmin_battery_pct = 20\n"
    );
    let r = load_files(&main, &[("communities.csv", csv)]).unwrap_or_else(|e| panic!("{e}"));
    let jingshan = r.town(r.town_idx("jingshan").unwrap());
    let want = [("dialysis", 2), ("elderly_alone", 40), ("infants", 12)];
    assert_eq!(jingshan.groups, counts(&want));

    let bad = "id,town,name,groups,water_point\n\
               ok-one,jingshan,A,infants=1,\n\
               bad-one,jingshan,B,infants=many,js-pu1\n";
    let errors = load_files(&main, &[("communities.csv", bad)]).unwrap_err();
    let got: Vec<String> = errors.0.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        got,
        [
            "communities.csv:3: community \"bad-one\": groups: expected name=count, e.g. \
             \"infants=420\", got \"infants=many\""
        ]
    );
}

/// A good community naming the group the formula category depends on: 5 lines.
const GOOD: &str =
    "[[community]]\nid = \"ok\"\ntown = \"donghua\"\nname = \"OK\"\ngroups = { infants = 1 }\n";

/// `case` is appended to [`BASE`], the facilities' rest and [`GOOD`] (line 36 on); each
/// line ending in `#!` is where the next expected error points.
fn assert_errors(case: &str, expected: &[&str]) {
    let text = format!("{BASE}burn_l_per_h = 5\nmin_battery_pct = 20\n{GOOD}{case}");
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.ends_with("#!"))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(lines.len(), expected.len(), "markers in:\n{case}");
    let want: Vec<String> = lines
        .iter()
        .zip(expected)
        .map(|(line, m)| format!("registry.toml:{line}: {m}"))
        .collect();
    match load_files(&text, &[]) {
        Ok(_) => panic!("loaded, expected:\n{}", want.join("\n")),
        Err(e) => {
            let got: Vec<String> = e.0.iter().map(|e| e.to_string()).collect();
            assert_eq!(got, want, "case:\n{case}");
        }
    }
}

#[test]
fn every_bad_field_is_located() {
    let cases: &[(&str, &[&str])] = &[
        (
            "[[community]] #!\ntown = \"jingshan\"\nname = \"A\"\n",
            &["community: id: missing"],
        ),
        (
            "[[community]]\nid = \"San Yan\" #!\ntown = \"jingshan\"\nname = \"A\"\n",
            &["community \"San Yan\": id: id \"San Yan\" may contain only a-z, 0-9 and '-'"],
        ),
        (
            "[[community]] #!\nid = \"a\"\nname = \"A\"\n",
            &["community \"a\": town: missing"],
        ),
        (
            "[[community]]\nid = \"a\"\ntown = \"jingshn\" #!\nname = \"A\"\n",
            &["community \"a\": town: unknown town \"jingshn\""],
        ),
        (
            "[[community]] #!\nid = \"a\"\ntown = \"jingshan\"\n",
            &["community \"a\": name: missing"],
        ),
        (
            "[[community]]\nid = \"a\"\ntown = \"jingshan\"\nname = \" \" #!\n",
            &["community \"a\": name: must not be empty"],
        ),
        (
            "[[community]]\nid = \"a\"\ntown = \"jingshan\"\nname = \"A\"\n\
             groups = { infants = -3 } #!\n",
            &["community \"a\": groups.infants: must be >= 0, got -3"],
        ),
        (
            "[[community]]\nid = \"a\"\ntown = \"jingshan\"\nname = \"A\"\n\
             groups = { infants = \"many\" } #!\n",
            &["community \"a\": groups: invalid type: string \"many\", expected an integer"],
        ),
        (
            "[[community]]\nid = \"a\"\ntown = \"jingshan\"\nname = \"A\"\n\
             water_point = \"js-pu1\" #!\n",
            &[
                "community \"a\": water_point: facility \"js-pu1\" is a power_unit, not a water_point",
            ],
        ),
        (
            "[[community]]\nid = \"a\"\ntown = \"jingshan\"\nname = \"A\"\n\
             power_unit = \"nowhere\" #!\n",
            &["community \"a\": power_unit: unknown facility \"nowhere\""],
        ),
        (
            "[[community]]\nid = \"a\"\ntown = \"jingshan\"\nname = \"A\"\n\
             shelter = \"js-wp1\" #!\n",
            &["community \"a\": shelter: facility \"js-wp1\" is a water_point, not a shelter"],
        ),
        (
            "[[community]]\nid = \"a\"\ntown = \"jingshan\"\nname = \"A\"\n\
             hospital = \"x\" #!\n",
            &[
                "community \"a\": unknown field `hospital`, expected one of `id`, `town`, \
               `name`, `groups`, `water_point`, `power_unit`, `shelter`",
            ],
        ),
        (
            "[[community]]\nid = \"a\"\ntown = \"jingshan\"\nname = \"A\"\n\
             [[community]]\nid = \"a\" #!\ntown = \"jingshan\"\nname = \"B\"\n",
            &["duplicate community \"a\" (first defined at registry.toml:41)"],
        ),
    ];
    for (case, expected) in cases {
        assert_errors(case, expected);
    }
}

#[test]
fn a_town_counts_its_people_once() {
    // The town's own groups are control totals: agreeing ones load (and groups only
    // communities give are added), a disagreeing one names both places.
    let with_town_groups = |groups: &str| {
        format!(
            "{}groups = {{ {groups} }}\n{}burn_l_per_h = 5\nmin_battery_pct = 20\n\
             [[community]]\nid = \"a\"\ntown = \"donghua\"\nname = \"A\"\n\
             groups = {{ infants = 2, oxygen = 1 }}\n\
             [[community]]\nid = \"b\"\ntown = \"donghua\"\nname = \"B\"\n\
             groups = {{ infants = 1 }}\n",
            &BASE[..BASE.find("[[facility]]").unwrap()],
            &BASE[BASE.find("[[facility]]").unwrap()..],
        )
    };
    let r = load_files(&with_town_groups("infants = 3"), &[]).unwrap_or_else(|e| panic!("{e}"));
    let donghua = r.town(r.town_idx("donghua").unwrap());
    assert_eq!(donghua.groups, counts(&[("infants", 3), ("oxygen", 1)]));
    let errors = load_files(&with_town_groups("infants = 4, dialysis = 1"), &[]).unwrap_err();
    let got: Vec<String> = errors.0.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        got,
        [
            "registry.toml:24: town \"donghua\": groups.infants: 4 here, but its communities \
             (\"a\" at registry.toml:36, …) count 3: a town's groups are the sums of its \
             communities'",
            "registry.toml:24: town \"donghua\": groups.dialysis: 1 here, but its communities \
             (\"a\" at registry.toml:36, …) count 0: a town's groups are the sums of its \
             communities'",
        ]
    );

    // Communities that together count more of a group than the town has people.
    let text = format!(
        "{BASE}burn_l_per_h = 5\nmin_battery_pct = 20\n\
         [[community]]\nid = \"a\"\ntown = \"donghua\"\nname = \"A\"\ngroups = {{ elderly_alone = 300 }}\n\
         [[community]]\nid = \"b\"\ntown = \"donghua\"\nname = \"B\"\ngroups = {{ elderly_alone = 201, infants = 1 }}\n"
    );
    let errors = load_files(&text, &[]).unwrap_err();
    assert_eq!(
        errors.to_string(),
        "registry.toml:35: community \"a\": groups.elderly_alone: the communities of town \
         \"donghua\" count 501, more than its population 500"
    );
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 5, 0, 0).unwrap()
}

fn reading(r: &Registry, id: &str, observation: Observation) -> Reading {
    Reading {
        facility: r.facility_idx(id).unwrap(),
        ts: t0(),
        seq: None,
        observation,
    }
}

/// Jingshan's facilities report; `pump`, `power` and the formula held vary per case.
fn ledger(pump: PumpState, power: PowerState, formula_kg: f64) -> Ledger {
    let r = Arc::new(valid());
    let mut ledger = Ledger::new(r.clone());
    let water = r.category_idx("water").unwrap();
    let formula = r.category_idx("formula").unwrap();
    let readings = [
        reading(
            &r,
            "js-wh1",
            Observation::Stock(vec![(water, 100_000.0), (formula, formula_kg)]),
        ),
        reading(
            &r,
            "js-wp1",
            Observation::Water(WaterObservation {
                level_l: 20_000.0,
                pump,
                potable: true,
            }),
        ),
        reading(
            &r,
            "js-pu1",
            Observation::Power(PowerObservation {
                fuel_l: 480.0,
                battery_pct: Some(90.0),
                state: power,
                burn_l_per_h: None,
            }),
        ),
    ];
    for reading in &readings {
        ledger.apply(reading, t0());
    }
    ledger.refresh_all(t0());
    ledger
}

#[test]
fn who_a_shortfall_affects() {
    // Formula for 17 infants × 0.2 kg × 10 days is plenty; 1 kg is under a day.
    let plenty = 34.0;
    struct Case {
        name: &'static str,
        pump: PumpState,
        power: PowerState,
        formula_kg: f64,
        /// (community, affected people, causes)
        want: &'static [(&'static str, u64, &'static [&'static str])],
    }
    let cases = [
        Case {
            name: "all ready",
            pump: PumpState::Ok,
            power: PowerState::Standby,
            formula_kg: plenty,
            want: &[],
        },
        Case {
            name: "water point down: everyone it serves",
            pump: PumpState::Fault,
            power: PowerState::Standby,
            formula_kg: plenty,
            want: &[("sanyanjing", 54, &["water"]), ("jishou", 11, &["water"])],
        },
        Case {
            name: "power unit down: everyone it serves",
            pump: PumpState::Ok,
            power: PowerState::Fault,
            formula_kg: plenty,
            want: &[
                ("sanyanjing", 54, &["power"]),
                ("huangchenggen", 5, &["power"]),
            ],
        },
        Case {
            name: "formula below target: infants only",
            pump: PumpState::Ok,
            power: PowerState::Standby,
            formula_kg: 1.0,
            want: &[
                ("sanyanjing", 12, &["formula"]),
                ("huangchenggen", 5, &["formula"]),
            ],
        },
        Case {
            name: "water down and formula short: each person once",
            pump: PumpState::Fault,
            power: PowerState::Standby,
            formula_kg: 1.0,
            want: &[
                ("sanyanjing", 54, &["water", "formula"]),
                ("jishou", 11, &["water"]),
                ("huangchenggen", 5, &["formula"]),
            ],
        },
    ];
    for case in cases {
        let ledger = ledger(case.pump, case.power, case.formula_kg);
        let r = ledger.registry().clone();
        let jingshan = r.town_idx("jingshan").unwrap();
        let got = affected(&ledger, jingshan);
        let described: Vec<(&str, u64, Vec<String>)> = got
            .communities
            .iter()
            .map(|a| {
                let causes = a.causes.iter().map(|c| match c {
                    Cause::WaterPointNotReady(_) => "water".to_owned(),
                    Cause::PowerUnitNotReady(_) => "power".to_owned(),
                    Cause::BelowTarget { category, .. } => r.category(*category).id.to_string(),
                });
                (
                    r.communities()[a.community].id.as_str(),
                    a.people,
                    causes.collect(),
                )
            })
            .collect();
        let want: Vec<(&str, u64, Vec<String>)> = case
            .want
            .iter()
            .map(|(c, n, causes)| (*c, *n, causes.iter().map(|s| s.to_string()).collect()))
            .collect();
        assert_eq!(described, want, "{}", case.name);
        let total: u64 = case.want.iter().map(|(_, n, _)| n).sum();
        assert_eq!(got.people, total, "{}", case.name);
        // Donghua has no communities: nobody is named there.
        assert!(affected(&ledger, r.town_idx("donghua").unwrap()).is_empty());
    }
}

#[test]
fn the_demo_registry_lists_communities_that_add_up_to_its_towns() {
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo");
    let read = |name: &str| std::fs::read_to_string(demo.join(name)).expect("demo file");
    let main = read("registry.toml");
    let tables: Vec<(&str, String)> = ["towns.csv", "facilities.csv", "contacts.csv"]
        .into_iter()
        .map(|n| (n, read(n)))
        .collect();
    let tables: Vec<(&str, &str)> = tables.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let r = load_files(&main, &tables).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.communities().len(), 63);
    // towns.csv's groups are kept as control totals; the communities add two groups.
    let town = r.town(r.communities()[0].town);
    let towns_csv = read("towns.csv");
    let row = towns_csv
        .lines()
        .find(|l| l.starts_with(&format!("{},", town.id)))
        .unwrap();
    for (group, n) in &town.groups {
        if group == "disabled" || group == "oxygen" {
            assert!(*n > 0, "{group}");
        } else {
            assert!(
                row.contains(&format!("{group}={n}")),
                "{group}={n} in {row}"
            );
        }
    }
}

#[test]
fn a_community_may_name_the_shelter_its_people_go_to() {
    let text = format!(
        "{BASE}burn_l_per_h = 5\nmin_battery_pct = 20\n\
         [[facility]]\nid = \"js-school\"\ntown = \"jingshan\"\nkind = \"shelter\"\ncapacity = 300\n\
         [[community]]\nid = \"a\"\ntown = \"jingshan\"\nname = \"A\"\ngroups = {{ infants = 1 }}\n\
         shelter = \"js-school\"\n"
    );
    let r = load_files(&text, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.communities()[0].shelter, r.facility_idx("js-school"));
}

#[test]
fn communities_listed_town_by_town_whatever_the_order_written() {
    let text = format!(
        "{BASE}burn_l_per_h = 5\nmin_battery_pct = 20\n\
         [[community]]\nid = \"d1\"\ntown = \"donghua\"\nname = \"D1\"\ngroups = {{ infants = 1 }}\n\
         [[community]]\nid = \"j1\"\ntown = \"jingshan\"\nname = \"J1\"\n\
         [[community]]\nid = \"d2\"\ntown = \"donghua\"\nname = \"D2\"\n\
         [[community]]\nid = \"j2\"\ntown = \"jingshan\"\nname = \"J2\"\n"
    );
    let r = load_files(&text, &[]).unwrap_or_else(|e| panic!("{e}"));
    let ids = |town: &str| -> Vec<String> {
        r.communities_of(r.town_idx(town).unwrap())
            .iter()
            .map(|c| c.id.clone())
            .collect()
    };
    assert_eq!(ids("jingshan"), ["j1", "j2"]);
    assert_eq!(ids("donghua"), ["d1", "d2"]);
    let all: Vec<&str> = r.communities().iter().map(|c| c.id.as_str()).collect();
    assert_eq!(all, ["j1", "j2", "d1", "d2"]);
}
