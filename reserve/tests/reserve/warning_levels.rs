//! Warning levels (docs/design.md#warning-levels): what the registry says each level
//! changes, each mistake located, and the ledger holding a town under a level to the
//! level's days target while it is in force, and only then.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use reserve::Ledger;
use reserve::coverage::Level;
use reserve::ledger::{WarningScope, WarningSet};
use reserve::reading::Observation;
use reserve::registry::{DualUse, PreActivate, Registry, Source, WarningLevel, load_registry};

const REGISTRY: &str = r#"
[[category]]
id = "water"
name = "Drinking water"
unit = "L"
daily_need = 3.0

[[town]]
id = "jingshan"
name = "景山街道"
district = "dongcheng"
cluster = "c01"
population = 1000

[[town]]
id = "yuetan"
name = "月坛街道"
district = "xicheng"
cluster = "c02"
population = 1000

[[facility]]
id = "js-wh1"
town = "jingshan"
kind = "warehouse"

[[facility]]
id = "yt-wh1"
town = "yuetan"
kind = "warehouse"

[[facility]]
id = "js-gym"
town = "jingshan"
kind = "shelter"
capacity = 300
dual_use = "gym"
"#;

const PLANS: &str = r#"
[warning_levels.orange]
days_target = 4.0
group_wait = "5s"

[warning_levels.red]
days_target = 5.0
group_wait = "1s"
escalate_after = "10m"
pre_activate = ["school", "js-gym"]
"#;

fn load(text: &str) -> Result<Registry, Vec<String>> {
    let source = Source {
        name: "registry.toml".into(),
        text: text.into(),
    };
    load_registry(&source, &[], &mut |_| Err("no csv".into()))
        .map_err(|e| e.0.iter().map(ToString::to_string).collect())
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 7, 20, 6, 0, 0).unwrap()
}

#[test]
fn each_level_says_what_it_changes_and_unlisted_levels_change_nothing() {
    let r = load(&format!("{REGISTRY}{PLANS}")).unwrap_or_else(|e| panic!("{e:?}"));
    let red = r.warning_plan(WarningLevel::Red).unwrap();
    assert_eq!(red.days_target, Some(5.0));
    assert_eq!(red.group_wait, Some(Duration::from_secs(1)));
    assert_eq!(red.escalate_after, Some(Duration::from_secs(600)));
    assert_eq!(
        red.pre_activate,
        [
            PreActivate::DualUse(DualUse::School),
            PreActivate::Shelter("js-gym".parse().unwrap())
        ]
    );
    let orange = r.warning_plan(WarningLevel::Orange).unwrap();
    assert_eq!(
        (orange.days_target, orange.escalate_after),
        (Some(4.0), None)
    );
    assert!(r.warning_plan(WarningLevel::Blue).is_none());
    assert!(r.warning_plan(WarningLevel::Yellow).is_none());
}

#[test]
fn mistakes_in_a_level_are_located() {
    let line_of =
        |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let cases = [
        (
            "[warning_levels.purple]\ndays_target = 5.0\n",
            "purple",
            r#"warning_levels: unknown level "purple" (expected blue, yellow, orange, red)"#,
        ),
        (
            "[warning_levels.red]\ndays_target = 0.0\n",
            "days_target",
            "warning_levels.red: days_target: must be above 0 and at most 365 days, got 0",
        ),
        (
            "[warning_levels.red]\ngroup_wait = \"soon\"\n",
            "group_wait",
            "warning_levels.red: group_wait: duration \"soon\" is not a number followed by a unit",
        ),
        (
            "[warning_levels.red]\nescalate_after = \"0s\"\n",
            "escalate_after",
            "warning_levels.red: escalate_after: must be above 0 and at most 365 days, got \"0s\"",
        ),
        (
            "[warning_levels.red]\npre_activate = [\"js-wh1\"]\n",
            "pre_activate",
            r#"warning_levels.red: pre_activate: facility "js-wh1" is a warehouse, not a shelter"#,
        ),
        (
            "[warning_levels.red]\npre_activate = [\"castle\"]\n",
            "pre_activate",
            r#"warning_levels.red: pre_activate: unknown "castle" (expected a shelter's id or a dual-use type: school, gym, hotel, community_centre, warehouse, other)"#,
        ),
        (
            "[warning_levels.red]\ndays = 5.0\n",
            "days",
            "warning_levels.red: unknown field `days`",
        ),
    ];
    for (plan, at, want) in cases {
        let text = format!("{REGISTRY}{plan}");
        let errors = load(&text).expect_err(plan);
        let line = line_of(&text, at);
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&format!("registry.toml:{line}: {want}"))),
            "{plan}: want line {line}: {want}\ngot {errors:#?}"
        );
    }
}

#[test]
fn a_town_under_a_level_is_held_to_its_days_target_until_it_ends() {
    let r = Arc::new(load(&format!("{REGISTRY}{PLANS}")).unwrap());
    let mut ledger = Ledger::new(Arc::clone(&r));
    let water = r.category_idx("water").unwrap();
    for (facility, litres) in [("js-wh1", 12_600.0), ("yt-wh1", 12_600.0)] {
        let reading = reserve::Reading {
            facility: r.facility_idx(facility).unwrap(),
            ts: now(),
            seq: None,
            observation: Observation::Stock(vec![(water, litres)]),
        };
        ledger.apply(&reading, now());
    }
    ledger.refresh_all(now());
    let (js, yt) = (
        r.town_idx("jingshan").unwrap(),
        r.town_idx("yuetan").unwrap(),
    );
    let water_of = |ledger: &Ledger, t| ledger.figures(t).categories[0].clone();
    assert_eq!(water_of(&ledger, js).level, Level::Ok);

    // Red over the district for an hour: 4.2 days is below its five.
    let red = WarningSet {
        id: 1,
        level: WarningLevel::Red,
        scope: WarningScope::District("dongcheng".into()),
        reason: "暴雨红色预警".into(),
        since: now(),
        until: Some(now() + chrono::Duration::hours(1)),
    };
    let moved = ledger.set_warnings(vec![red], now());
    assert_eq!(moved, [js]);
    let under = water_of(&ledger, js);
    assert_eq!((under.target_days, under.warn_days), (5.0, 5.5));
    assert_eq!(under.level, Level::Critical);
    assert_eq!(
        ledger.figures(js).warning.as_ref().unwrap().days_target,
        Some(5.0)
    );
    assert_eq!(water_of(&ledger, yt).target_days, 3.0);

    // An orange over the city beside it: the higher level is the one in force.
    let orange = WarningSet {
        id: 2,
        level: WarningLevel::Orange,
        scope: WarningScope::City,
        reason: "全市橙色预警".into(),
        since: now(),
        until: None,
    };
    let sets = [ledger.warnings().to_vec(), vec![orange]].concat();
    ledger.set_warnings(sets, now());
    assert_eq!(
        ledger.figures(js).warning.as_ref().unwrap().set.level,
        WarningLevel::Red
    );
    assert_eq!(
        ledger.figures(yt).warning.as_ref().unwrap().set.level,
        WarningLevel::Orange
    );
    assert_eq!(water_of(&ledger, yt).target_days, 4.0);

    // The hour passes: red runs out at the next refresh, orange remains.
    ledger.refresh_all(now() + chrono::Duration::minutes(61));
    assert_eq!(
        ledger.figures(js).warning.as_ref().unwrap().set.level,
        WarningLevel::Orange
    );
    assert_eq!(water_of(&ledger, js).target_days, 4.0);
    assert_eq!(water_of(&ledger, js).level, Level::Warning);

    // A reload carries the levels over by id.
    let carried = ledger.carried_over(Arc::clone(&r), now() + chrono::Duration::minutes(62));
    assert_eq!(water_of(&carried, js).target_days, 4.0);
}
