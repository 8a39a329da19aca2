//! Loading the registry: what an operator sees for a good registry and for each kind of
//! mistake, as `file:line: message`.

use std::time::Duration;

use reserve::registry::{
    Channel, ContactScope, FacilityKind, FacilityKindName, Group, Lang, LoadErrors, Registry,
    Report, Source, load_registry,
};

/// Loads `main` (named `registry.toml`); `others` are the files its `[csv]` may name.
fn load_files(
    main: &str,
    ignore_keys: &[&str],
    others: &[(&str, &str)],
) -> Result<Registry, LoadErrors> {
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
    load_registry(&main, ignore_keys, &mut read)
}

fn load(main: &str) -> Result<Registry, LoadErrors> {
    load_files(main, &[], &[])
}

fn rendered(errors: &LoadErrors) -> Vec<String> {
    errors.0.iter().map(|e| e.to_string()).collect()
}

const FIXTURE: &str = include_str!("../fixtures/registry/registry.toml");
const FIXTURE_CSV: &[(&str, &str)] = &[
    ("towns.csv", include_str!("../fixtures/registry/towns.csv")),
    (
        "facilities.csv",
        include_str!("../fixtures/registry/facilities.csv"),
    ),
    (
        "contacts.csv",
        include_str!("../fixtures/registry/contacts.csv"),
    ),
];

#[test]
fn fixture_loads_with_csv_rows_after_toml_entries() {
    let r = load_files(FIXTURE, &[], FIXTURE_CSV).unwrap_or_else(|e| panic!("{e}"));

    let ids = |v: Vec<&str>| v.join(",");
    assert_eq!(
        ids(r.districts.iter().map(|d| d.id.as_str()).collect()),
        "dongcheng,xicheng"
    );
    assert_eq!(
        ids(r.clusters.iter().map(|c| c.id.as_str()).collect()),
        "c01,c02"
    );
    assert_eq!(
        ids(r.towns.iter().map(|t| t.id.as_str()).collect()),
        "jingshan,xinjiekou,jinrong"
    );
    assert_eq!(
        ids(r.facilities.iter().map(|f| f.id.as_str()).collect()),
        "jingshan-wh1,jingshan-gen1,xinjiekou-wh1,xinjiekou-wp1,jinrong-gen1"
    );
    assert_eq!(r.contacts.len(), 4);
    assert_eq!(r.count_facilities(FacilityKindName::PowerUnit), 2);

    let xinjiekou = r.town(r.town_idx("xinjiekou").unwrap());
    assert_eq!(xinjiekou.name, "新街口街道");
    assert_eq!(r.districts[xinjiekou.district.index()].name, "西城区");
    assert_eq!(xinjiekou.population, 95_000);
    assert_eq!(xinjiekou.groups.get("infants"), Some(&820));
    assert_eq!(xinjiekou.lat, Some(39.94));
    let facility_ids: Vec<&str> = xinjiekou
        .facilities
        .iter()
        .map(|&f| r.facility(f).id.as_str())
        .collect();
    assert_eq!(facility_ids, ["xinjiekou-wh1", "xinjiekou-wp1"]);
    let jinrong = r.town(r.town_idx("jinrong").unwrap());
    assert_eq!((jinrong.lat, jinrong.groups.len()), (None, 0));

    let formula = r.category(r.category_idx("infant-formula").unwrap());
    assert_eq!(formula.group, Group::Named("infants".into()));
    assert_eq!(r.water_category, r.category_idx("water"));

    // Defaults and names: a facility without a name is called by its id.
    let wh = r.facility(r.facility_idx("xinjiekou-wh1").unwrap());
    assert_eq!(wh.name, "xinjiekou-wh1");
    assert_eq!(wh.report_every, Duration::from_secs(60));
    assert_eq!(wh.stale_after, Duration::from_secs(180));
    let wp = r.facility(r.facility_idx("xinjiekou-wp1").unwrap());
    assert_eq!(
        wp.kind,
        FacilityKind::WaterPoint {
            capacity_l: Some(50_000.0)
        }
    );
    assert_eq!(wp.stale_after, Duration::from_secs(360));
    let gen1 = r.facility(r.facility_idx("jingshan-gen1").unwrap());
    assert_eq!(gen1.name, "景山 generator");
    assert_eq!(
        gen1.kind,
        FacilityKind::PowerUnit {
            fuel_capacity_l: 500.0,
            burn_l_per_h: 5.0,
            min_battery_pct: 50.0
        }
    );
    let jinrong_gen = r.facility(r.facility_idx("jinrong-gen1").unwrap());
    assert!(
        matches!(jinrong_gen.kind, FacilityKind::PowerUnit { min_battery_pct, .. } if min_battery_pct == 40.0)
    );

    // Contacts: scope, language and the channels they can be reached on.
    let li = &r.contacts[0];
    assert_eq!(li.lang, Lang::Zh);
    assert_eq!(li.channels, [Channel::Email, Channel::Sms]);
    assert_eq!(
        li.scope,
        ContactScope::Towns(vec![r.town_idx("jingshan").unwrap()])
    );
    let wang = &r.contacts[1];
    assert_eq!(
        (wang.lang, wang.channels.as_slice()),
        (Lang::En, &[Channel::Email][..])
    );
    assert_eq!(
        wang.scope,
        ContactScope::Towns(vec![
            r.town_idx("xinjiekou").unwrap(),
            r.town_idx("jinrong").unwrap()
        ])
    );
    let xicheng = &r.contacts[2];
    assert_eq!(
        xicheng.scope,
        ContactScope::Districts(vec![r.district_idx("xicheng").unwrap()])
    );
    assert_eq!(xicheng.channels, [Channel::Sms]);
    assert_eq!(r.contacts[3].scope, ContactScope::City);
    assert_eq!(r.contacts[3].channels, [Channel::Email]);
}

#[test]
fn fixture_targets_resolve_overrides() {
    let r = load_files(FIXTURE, &[], FIXTURE_CSV).unwrap_or_else(|e| panic!("{e}"));
    let town = |id| r.town_idx(id).unwrap();
    let category = |id| r.category_idx(id).unwrap();
    let days = |t, c| {
        let target = r.target_for(town(t), category(c));
        (
            target.days,
            target.warn_days,
            target.hysteresis_days,
            target.stale_after,
        )
    };
    // Setting only `days` keeps the 0.5-day margin to the warning.
    assert_eq!(days("jingshan", "water"), (4.0, 4.5, 0.2, None));
    assert_eq!(days("xinjiekou", "water"), (3.0, 3.5, 0.2, None));
    let ten_minutes = Some(Duration::from_secs(600));
    assert_eq!(
        days("jingshan", "infant-formula"),
        (3.0, 5.0, 0.2, ten_minutes)
    );
    assert_eq!(
        days("jinrong", "infant-formula"),
        (3.0, 5.0, 0.2, ten_minutes)
    );
}

/// A minimal valid registry the error cases append to: 9 lines.
const SKELETON: &str = r#"[[category]]
id = "water"
name = "Drinking water"
unit = "L"
daily_need = 3.0
[[town]]
id = "jingshan"
name = "景山街道"
district = "dongcheng"
cluster = "c01"
population = 30000
"#;

/// Appends `case` to the skeleton and checks the errors. Each line of `case` that ends
/// in `#!` (one `!` per error on that line) is where the next expected error points, so
/// the table shows the line an operator would be sent to.
fn assert_errors(case: &str, expected: &[&str]) {
    let text = format!("{SKELETON}{case}");
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(marks) = line
            .rsplit_once("#!")
            .map(|(_, rest)| 1 + rest.matches('!').count())
        {
            lines.extend(std::iter::repeat_n(i + 1, marks));
        }
    }
    assert_eq!(
        lines.len(),
        expected.len(),
        "markers vs expected errors in:\n{case}"
    );
    let want: Vec<String> = lines
        .iter()
        .zip(expected)
        .map(|(line, message)| format!("registry.toml:{line}: {message}"))
        .collect();
    match load(&text) {
        Ok(_) => panic!("loaded, expected errors:\n{}", want.join("\n")),
        Err(errors) => assert_eq!(rendered(&errors), want, "case:\n{case}"),
    }
}

#[test]
fn skeleton_loads() {
    let r = load(SKELETON).unwrap_or_else(|e| panic!("{e}"));
    // No [[district]] or [[cluster]]: the towns imply them, named by id.
    assert_eq!(r.districts.len(), 1);
    assert_eq!(r.districts[0].name, "dongcheng");
    assert_eq!(r.clusters[0].id.as_str(), "c01");
    assert_eq!(r.water_category, r.category_idx("water"));
}

#[test]
fn syntax_and_unknown_fields_are_located() {
    let cases: &[(&str, &[&str])] = &[
        (
            "[[town] #!",
            &["syntax: unclosed array table, expected `]`"],
        ),
        (
            "[[facility]]\nid = \"wh\"\nid = \"wh2\" #!",
            &["duplicate key \"id\""],
        ),
        (
            "[[town]]\nid = \"x\"\npopulaton = 5 #!",
            &[
                "town \"x\": unknown field `populaton`, expected one of `id`, `name`, `district`, `cluster`, `population`, `lat`, `lon`, `groups`",
            ],
        ),
        (
            "[[facility]]\nid = \"wh-1\"\ntown = \"jingshan\"\nkind = \"warehouse\"\nreport_every = 60 #!",
            &["facility \"wh-1\": report_every: invalid type: integer `60`, expected a string"],
        ),
        (
            "[[town]]\nid = \"x\"\npopulation = \"many\" #!",
            &["town \"x\": population: invalid type: string \"many\", expected an integer"],
        ),
        (
            "[facility] #!\nid = \"x\"",
            &["facility: expected an array of tables ([[facility]])"],
        ),
        (
            "[target]\nday = 3 #!",
            &[
                "target: unknown field `day`, expected one of `days`, `warn_days`, `hysteresis`, `stale_after`",
            ],
        ),
        (
            "[csv]\ntown = \"towns.csv\" #!",
            &[
                "csv: unknown field `town`, expected one of `towns`, `facilities`, `contacts`, `communities`",
            ],
        ),
    ];
    for (case, expected) in cases {
        assert_errors(case, expected);
    }
}

#[test]
fn one_broken_entry_does_not_hide_others_or_cascade() {
    // The broken town still exists as far as references go: its facility is not also
    // reported as pointing at an unknown town.
    assert_errors(
        r#"
[[town]]
id = "beixinqiao"
population = -3.5 #!
[[facility]]
id = "bxq-wh1"
town = "beixinqiao"
kind = "depot" #!
"#,
        &[
            "town \"beixinqiao\": population: invalid type: floating point `-3.5`, expected an integer",
            "facility \"bxq-wh1\": kind: unknown kind \"depot\" (expected warehouse, water_point, power_unit or shelter)",
        ],
    );
}

#[test]
fn top_level_keys_are_checked() {
    let text = format!("water_category = \"wter\"\ntowns = 3\n{SKELETON}");
    let errors = rendered(&load(&text).unwrap_err());
    assert_eq!(
        errors,
        [
            "registry.toml:1: water_category: unknown category \"wter\"",
            "registry.toml:2: unknown key \"towns\" (expected one of water_category, target, csv, district, cluster, category, town, facility, contact, community, activation_plan, warning_levels)",
        ]
    );
    // Without one and without a `water` category, water points count toward nothing.
    let r = load(&SKELETON.replace("\"water\"", "\"food\"")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.water_category, None);
}

#[test]
fn duplicates_say_where_the_first_was() {
    let cases: &[(&str, &[&str])] = &[
        (
            "[[town]]\nid = \"jingshan\" #!\nname = \"again\"\ndistrict = \"dongcheng\"\ncluster = \"c01\"\npopulation = 1",
            &["duplicate town \"jingshan\" (first defined at registry.toml:7)"],
        ),
        (
            "[[category]]\nid = \"water\" #!\nname = \"W\"\nunit = \"L\"\ndaily_need = 1",
            &["duplicate category \"water\" (first defined at registry.toml:2)"],
        ),
        (
            "[[facility]]\nid = \"f\"\ntown = \"jingshan\"\nkind = \"warehouse\"\n[[facility]]\nid = \"f\" #!\ntown = \"jingshan\"\nkind = \"warehouse\"",
            &["duplicate facility \"f\" (first defined at registry.toml:13)"],
        ),
        (
            "[[district]]\nid = \"dongcheng\"\nname = \"东城区\"\n[[district]]\nid = \"dongcheng\" #!\nname = \"东城\"",
            &["duplicate district \"dongcheng\" (first defined at registry.toml:13)"],
        ),
        (
            "[[cluster]]\nid = \"c01\"\nname = \"一\"\n[[cluster]]\nid = \"c01\" #!\nname = \"二\"",
            &["duplicate cluster \"c01\" (first defined at registry.toml:13)"],
        ),
    ];
    for (case, expected) in cases {
        assert_errors(case, expected);
    }
}

#[test]
fn references_must_resolve() {
    let cases: &[(&str, &[&str])] = &[
        (
            "[[facility]]\nid = \"wh-9\"\ntown = \"jingshn\" #!\nkind = \"warehouse\"",
            &["facility \"wh-9\": town: unknown town \"jingshn\""],
        ),
        // Declared districts and clusters are the only ones a town may name.
        (
            "[[district]]\nid = \"xicheng\"\nname = \"西城区\"\n[[cluster]]\nid = \"c02\"\nname = \"二\"",
            &[],
        ),
        (
            "[[contact]]\nname = \"Li\"\nemail = \"li@example.org\"\ntowns = [\"jingshan\", \"nowhere\"] #!",
            &["contact \"Li\": towns: unknown town \"nowhere\""],
        ),
        (
            "[[contact]]\nname = \"Li\"\nemail = \"li@example.org\"\nclusters = [\"c9\"] #!",
            &["contact \"Li\": clusters: unknown cluster \"c9\""],
        ),
        (
            "[[contact]]\nname = \"Li\"\nemail = \"li@example.org\"\ndistricts = [\"haidian\"] #!",
            &["contact \"Li\": districts: unknown district \"haidian\""],
        ),
        (
            "[[target.override]]\ntown = \"nowhere\" #!\ncategory = \"fuel\" #!\ndays = 4",
            &[
                "target.override: town: unknown town \"nowhere\"",
                "target.override: category: unknown category \"fuel\"",
            ],
        ),
        (
            "[[category]]\nid = \"formula\"\nname = \"Formula\"\nunit = \"kg\"\ndaily_need = 0.15\ngroup = \"babies\" #!",
            &[
                "category \"formula\": group: no town has a group \"babies\" (no town has groups); use \"all\" or a town group",
            ],
        ),
    ];
    for (case, expected) in cases {
        if expected.is_empty() {
            // The town's district and cluster are now undeclared.
            let text = format!("{SKELETON}{case}");
            let errors = rendered(&load(&text).unwrap_err());
            assert_eq!(
                errors,
                [
                    "registry.toml:9: town \"jingshan\": district: unknown district \"dongcheng\"",
                    "registry.toml:10: town \"jingshan\": cluster: unknown cluster \"c01\"",
                ]
            );
        } else {
            assert_errors(case, expected);
        }
    }
}

#[test]
fn ids_are_slugs() {
    let cases: &[(&str, &[&str])] = &[
        (
            "[[town]]\nid = \"Jingshan-2\" #!\nname = \"x\"\ndistrict = \"dongcheng\"\ncluster = \"c01\"\npopulation = 1",
            &["town \"Jingshan-2\": id: id \"Jingshan-2\" may contain only a-z, 0-9 and '-'"],
        ),
        (
            "[[facility]]\nid = \"\" #!\ntown = \"jingshan\"\nkind = \"warehouse\"",
            &["facility \"\": id: id is empty"],
        ),
        (
            "[[town]]\nid = \"t2\"\nname = \"x\"\ndistrict = \"Dong Cheng\" #!\ncluster = \"c01\"\npopulation = 1",
            &["town \"t2\": district: id \"Dong Cheng\" may contain only a-z, 0-9 and '-'"],
        ),
        (
            "[[facility]] #!\ntown = \"jingshan\"\nkind = \"warehouse\"",
            &["facility: id: missing"],
        ),
    ];
    for (case, expected) in cases {
        assert_errors(case, expected);
    }
}

#[test]
fn numbers_must_be_in_range() {
    let town = |fields: &str| {
        format!(
            "[[town]]\nid = \"t2\"\nname = \"x\"\ndistrict = \"dongcheng\"\ncluster = \"c01\"\n{fields}"
        )
    };
    let power = |fields: &str| {
        format!("[[facility]]\nid = \"gen\"\ntown = \"jingshan\"\nkind = \"power_unit\"\n{fields}")
    };
    let cases: Vec<(String, &[&str])> = vec![
        (town("population = -1 #!"), &["town \"t2\": population: must be >= 0, got -1"]),
        (
            town("population = 100\ngroups = { infants = 101, elderly = -2 } #!!"),
            &[
                "town \"t2\": groups.infants: 101 is more than the population 100",
                "town \"t2\": groups.elderly: must be >= 0, got -2",
            ],
        ),
        (
            town("population = 1\nlat = 91 #!\nlon = -180.5 #!"),
            &[
                "town \"t2\": lat: must be between -90 and 90, got 91",
                "town \"t2\": lon: must be between -180 and 180, got -180.5",
            ],
        ),
        (
            "[[town]] #!\nid = \"t2\"\nname = \"x\"\ndistrict = \"dongcheng\"\ncluster = \"c01\"".into(),
            &["town \"t2\": population: missing"],
        ),
        (
            "[[category]]\nid = \"food\"\nname = \"Food\"\nunit = \"\" #!\ndaily_need = 0 #!".into(),
            &[
                "category \"food\": unit: must not be empty",
                "category \"food\": daily_need: must be > 0, got 0",
            ],
        ),
        (
            "[[category]]\nid = \"food\"\nname = \"Food\"\nunit = \"ration\"\ndaily_need = inf #!".into(),
            &["category \"food\": daily_need: must be a finite number, got inf"],
        ),
        (
            "[target]\ndays = 0 #!\nhysteresis = -0.1 #!\nstale_after = \"0s\" #!".into(),
            &[
                "target: days: must be > 0, got 0",
                "target: hysteresis: must be >= 0, got -0.1",
                "target: stale_after: must be > 0, got \"0s\"",
            ],
        ),
        (
            "[target]\ndays = 3\nwarn_days = 2.5 #!".into(),
            &["target: warn_days: must be >= days (3), got 2.5"],
        ),
        (
            "[[target.override]]\ncategory = \"water\"\nwarn_days = 2 #!".into(),
            &["target.override: warn_days: must be >= days (3), got 2"],
        ),
        (
            // Each override is fine on its own; together jingshan's water warns below target.
            "[[target.override]] #!\ncategory = \"water\"\ndays = 5\n[[target.override]] #!\ntown = \"jingshan\"\nwarn_days = 4\n"
                .into(),
            &[],
        ),
        (
            power("fuel_capacity_l = 0 #!\nburn_l_per_h = -1 #!\nmin_battery_pct = 101 #!"),
            &[
                "facility \"gen\": fuel_capacity_l: must be > 0, got 0",
                "facility \"gen\": burn_l_per_h: must be > 0, got -1",
                "facility \"gen\": min_battery_pct: must be between 0 and 100, got 101",
            ],
        ),
        (
            power("report_every = \"60\" #!\nfuel_capacity_l = 1\nburn_l_per_h = 1"),
            &["facility \"gen\": report_every: duration \"60\" lacks a unit (ms, s, m, h, d)"],
        ),
        (
            "[[facility]]\nid = \"wp\"\ntown = \"jingshan\"\nkind = \"water_point\"\ncapacity_l = -5 #!\nreport_every = \"0s\" #!"
                .into(),
            &[
                "facility \"wp\": capacity_l: must be > 0, got -5",
                "facility \"wp\": report_every: must be > 0, got \"0s\"",
            ],
        ),
    ];
    for (case, expected) in &cases {
        if expected.is_empty() {
            let text = format!("{SKELETON}{case}");
            let errors = rendered(&load(&text).unwrap_err());
            assert_eq!(
                errors,
                [
                    "registry.toml:15: target.override: for town \"jingshan\", category \"water\" the overrides combine to warn_days 4 below days 5"
                ]
            );
        } else {
            assert_errors(case, expected);
        }
    }
}

#[test]
fn facilities_take_only_their_kind_settings() {
    let cases: &[(&str, &[&str])] = &[
        (
            "[[facility]]\nid = \"wh\"\ntown = \"jingshan\"\nkind = \"warehouse\"\nfuel_capacity_l = 500 #!\ncapacity_l = 1 #!",
            &[
                "facility \"wh\": fuel_capacity_l: not allowed on a warehouse (only on power_unit)",
                "facility \"wh\": capacity_l: not allowed on a warehouse (only on water_point)",
            ],
        ),
        (
            "[[facility]]\nid = \"wp\"\ntown = \"jingshan\"\nkind = \"water_point\"\nburn_l_per_h = 5 #!",
            &["facility \"wp\": burn_l_per_h: not allowed on a water_point (only on power_unit)"],
        ),
        (
            "[[facility]] #!!\nid = \"gen\"\ntown = \"jingshan\"\nkind = \"power_unit\"\ncapacity_l = 9 #!",
            &[
                "facility \"gen\": fuel_capacity_l: missing",
                "facility \"gen\": burn_l_per_h: missing",
                "facility \"gen\": capacity_l: not allowed on a power_unit (only on water_point)",
            ],
        ),
    ];
    for (case, expected) in cases {
        assert_errors(case, expected);
    }
}

#[test]
fn contacts_need_an_address_a_scope_and_usable_channels() {
    let cases: &[(&str, &[&str])] = &[
        (
            "[[contact]] #!!\nname = \"Li\"",
            &[
                "contact \"Li\": has no address: give email, phone or webhook",
                "contact \"Li\": has no scope: give towns, clusters, districts or city = true",
            ],
        ),
        (
            "[[contact]] #!\nname = \"Li\"\nemail = \"li@example.org\"\ntowns = [\"jingshan\"]\ncity = true",
            &["contact \"Li\": has more than one scope (towns, city); give exactly one"],
        ),
        (
            "[[contact]]\nname = \"Li\"\nemail = \"li@@example.org\" #!\nphone = \"13800000000\" #!\nwebhook = \"ftp://x\" #!\ncity = true",
            &[
                "contact \"Li\": email: \"li@@example.org\" is not an email address",
                "contact \"Li\": phone: \"13800000000\" is not an E.164 number (+ then 7 to 15 digits, the first not 0)",
                "contact \"Li\": webhook: \"ftp://x\" is not an http:// or https:// URL",
            ],
        ),
        (
            "[[contact]]\nname = \"Li\"\nphone = \"+0860000000\" #!\ncity = true",
            &[
                "contact \"Li\": phone: \"+0860000000\" is not an E.164 number (+ then 7 to 15 digits, the first not 0)",
            ],
        ),
        (
            "[[contact]]\nname = \"Li\"\nemail = \"li@example.org\"\nlang = \"fr\" #!\ncity = true\nchannels = [\"sms\", \"fax\"] #!!",
            &[
                "contact \"Li\": lang: unknown language \"fr\" (expected zh or en)",
                "contact \"Li\": channels: sms needs a phone number",
                "contact \"Li\": channels: unknown channel \"fax\" (expected email, sms or webhook)",
            ],
        ),
        (
            "[[contact]]\nname = \"Li\"\nemail = \"li@example.org\"\ntowns = [] #!",
            &["contact \"Li\": towns: empty list"],
        ),
        (
            "[[contact]] #!\nemail = \"li@example.org\"\ncity = true",
            &["contact: name: missing"],
        ),
    ];
    for (case, expected) in cases {
        assert_errors(case, expected);
    }
}

#[test]
fn overrides_need_a_town_or_category() {
    assert_errors(
        "[[target.override]] #!\ndays = 4",
        &["target.override: needs town or category (or both)"],
    );
}

#[test]
fn empty_registry_says_what_is_missing() {
    let errors = rendered(&load("# nothing yet\n").unwrap_err());
    assert_eq!(
        errors,
        [
            "registry.toml:1: registry has no towns: add [[town]] entries or a towns.csv",
            "registry.toml:1: registry has no categories: add [[category]] entries",
        ]
    );
}

#[test]
fn csv_rows_are_located_by_line() {
    let main = format!(
        "{SKELETON}[csv]\ntowns = \"towns.csv\"\nfacilities = \"facilities.csv\"\ncontacts = \"contacts.csv\"\n"
    );
    let towns = "id,name,district,cluster,population,groups,notes\n\
                 t2,Two,dongcheng,c01,100,infants=10;elderly,\n\
                 t3,Three,dongcheng,c01,lots,,\n\
                 t4,Four,dongcheng,c01\n";
    let facilities = "id,town,kind,fuel_capacity_l,burn_l_per_h\n\
                      f1,t4,warehouse,,\n\
                      \"f2\",\"t9\",power_unit,10,\n\
                      f3,\"t3\",power_unit,\"x\",1\n\
                      f4,t3,warehouse,,\n";
    let contacts = "name,email,city,towns\n\
                    Li,li@example.org,yes,\n\
                    Wang,wang@example.org,,t2;t9\n\
                    Zhao,zhao@example.org,,\n";
    let errors = load_files(
        &main,
        &[],
        &[
            ("towns.csv", towns),
            ("facilities.csv", facilities),
            ("contacts.csv", contacts),
        ],
    )
    .unwrap_err();
    // Rows with a cell that does not parse, or the wrong number of fields, are reported
    // once: their ids still count (f1 and f4 find their towns, Wang finds t2).
    assert_eq!(
        rendered(&errors),
        [
            "towns.csv:1: unknown column \"notes\" (expected one of id, name, district, cluster, population, lat, lon, groups)",
            "towns.csv:2: town \"t2\": groups: expected name=count, e.g. \"infants=420\", got \"elderly\"",
            "towns.csv:3: town \"t3\": population: expected an integer, got \"lots\"",
            "towns.csv:4: row has 4 fields, the header has 7",
            "facilities.csv:3: facility \"f2\": town: unknown town \"t9\"",
            "facilities.csv:3: facility \"f2\": burn_l_per_h: missing",
            "facilities.csv:4: facility \"f3\": fuel_capacity_l: expected a number, got \"x\"",
            "contacts.csv:2: contact \"Li\": city: expected true, false or empty, got \"yes\"",
            "contacts.csv:3: contact \"Wang\": towns: unknown town \"t9\"",
            "contacts.csv:4: contact \"Zhao\": has no scope: give towns, clusters, districts or city = true",
        ]
    );
}

#[test]
fn csv_header_problems_are_reported_once() {
    // Without an id column the rows cannot be checked; that is one error, not one per row,
    // and facilities naming those towns are not blamed for it.
    let main = format!("{SKELETON}[csv]\ntowns = \"towns.csv\"\nfacilities = \"f.csv\"\n");
    let towns =
        "town,name,district,cluster,population\nt2,Two,dongcheng,c01,1\nt3,Three,dongcheng,c01,1\n";
    let facilities = "id,town,kind\nf1,t2,warehouse\n";
    let errors =
        load_files(&main, &[], &[("towns.csv", towns), ("f.csv", facilities)]).unwrap_err();
    assert_eq!(
        rendered(&errors),
        [
            "towns.csv:1: unknown column \"town\" (expected one of id, name, district, cluster, population, lat, lon, groups)",
            "towns.csv:1: missing column \"id\"",
            "facilities.csv:2: facility \"f1\": town: unknown town \"t2\"",
        ]
        .map(|s| s.replace("facilities.csv", "f.csv"))
    );
}

#[test]
fn missing_csv_file_points_at_csv_section() {
    let main = format!("{SKELETON}[csv]\ntowns = \"townz.csv\"\n");
    let errors = load_files(&main, &[], &[]).unwrap_err();
    assert_eq!(
        rendered(&errors),
        ["registry.toml:13: csv: towns: cannot read \"townz.csv\": no such file"]
    );
}

#[test]
fn csv_with_byte_order_mark_and_crlf_is_located_right() {
    let main = format!("{SKELETON}[csv]\ntowns = \"towns.csv\"\n");
    let towns = "\u{feff}id,name,district,cluster,population\r\nt2,Two,dongcheng,c01,1\r\n\r\nt3,Three,dongcheng,c01,bad\r\n";
    let errors = load_files(&main, &[], &[("towns.csv", towns)]).unwrap_err();
    assert_eq!(
        rendered(&errors),
        ["towns.csv:4: town \"t3\": population: expected an integer, got \"bad\""]
    );
}

#[test]
fn registry_inline_in_a_config_file() {
    let config = format!(
        "[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n[store]\npath = \"stockpile.db\"\n{SKELETON}"
    );
    let sections = [
        "registry", "mqtt", "store", "influx", "api", "smtp", "sms", "alerts", "webhook", "log",
    ];
    let r = load_files(&config, &sections, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.towns.len(), 1);

    // Without being told, the loader does not know those sections.
    let errors = rendered(&load(&config).unwrap_err());
    assert_eq!(errors.len(), 2);
    assert!(
        errors[0].starts_with("registry.toml:1: unknown key \"mqtt\""),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with("registry.toml:3: unknown key \"store\""),
        "{errors:?}"
    );
}

#[test]
fn a_warehouse_declares_its_most_per_category_in_toml_or_csv() {
    let main = format!(
        "{SKELETON}[[category]]\nid = \"food\"\nname = \"Food\"\nunit = \"ration\"\ndaily_need = 3\n\
         [[facility]]\nid = \"wh1\"\ntown = \"jingshan\"\nkind = \"warehouse\"\nmax = {{ water = 50000, food = 20000.5 }}\n\
         [csv]\nfacilities = \"facilities.csv\"\n"
    );
    let facilities = "id,town,kind,max\n\
                      wh2,jingshan,warehouse, water=7000 ; \n\
                      wh3,jingshan,warehouse,\n";
    let r =
        load_files(&main, &[], &[("facilities.csv", facilities)]).unwrap_or_else(|e| panic!("{e}"));
    let (water, food) = (
        r.category_idx("water").unwrap(),
        r.category_idx("food").unwrap(),
    );
    let max = |f: &str, c| r.warehouse_max(r.facility_idx(f).unwrap(), c);
    // (facility, category, declared max)
    let rows = [
        ("wh1", water, Some(50_000.0)),
        ("wh1", food, Some(20_000.5)),
        ("wh2", water, Some(7_000.0)),
        ("wh2", food, None),
        ("wh3", water, None),
    ];
    for (facility, category, want) in rows {
        assert_eq!(max(facility, category), want, "{facility} {category:?}");
    }
}

#[test]
fn a_warehouse_max_names_known_categories_with_positive_numbers() {
    let facility = |kind: &str, fields: &str| {
        format!("[[facility]]\nid = \"f\"\ntown = \"jingshan\"\nkind = \"{kind}\"\n{fields}")
    };
    let cases: Vec<(String, &[&str])> = vec![
        (
            facility("warehouse", "max = { watr = 1, water = 0 } #!!"),
            &[
                "facility \"f\": max.watr: unknown category \"watr\"",
                "facility \"f\": max.water: must be > 0, got 0",
            ],
        ),
        (
            facility("warehouse", "max = { water = nan } #!"),
            &["facility \"f\": max.water: must be a finite number, got NaN"],
        ),
        (
            facility("warehouse", "max = { water = -inf } #!"),
            &["facility \"f\": max.water: must be a finite number, got -inf"],
        ),
        (
            facility("warehouse", "max = { water = \"lots\" } #!"),
            &["facility \"f\": max: invalid type: string \"lots\", expected a number"],
        ),
        (
            facility("warehouse", "max = 50000 #!"),
            &["facility \"f\": max: invalid type: integer `50000`, expected a map"],
        ),
        (
            facility("water_point", "capacity_l = 100\nmax = { water = 1 } #!"),
            &["facility \"f\": max: not allowed on a water_point (only on warehouse)"],
        ),
        (
            facility(
                "power_unit",
                "fuel_capacity_l = 1\nburn_l_per_h = 1\nmax = { water = 1 } #!",
            ),
            &["facility \"f\": max: not allowed on a power_unit (only on warehouse)"],
        ),
        (
            facility("warehouse", "report_every = \"400d\" #!"),
            &["facility \"f\": report_every: must be at most 365d, got \"400d\""],
        ),
        (
            "[target]\nstale_after = \"99999999999999999d\" #!".into(),
            &["target: stale_after: duration \"99999999999999999d\" is too long"],
        ),
    ];
    for (case, expected) in &cases {
        assert_errors(case, expected);
    }

    // The CSV spelling: `category=number` pairs separated by `;`.
    let main = format!("{SKELETON}[csv]\nfacilities = \"facilities.csv\"\n");
    let facilities = "id,town,kind,max,capacity_l\n\
                      w1,jingshan,warehouse,water=1;water=2,\n\
                      w2,jingshan,warehouse,water,\n\
                      w3,jingshan,warehouse,water=lots,\n\
                      w4,jingshan,warehouse,food=5;water=-1,\n\
                      w5,jingshan,water_point,water=5,100\n\
                      w6,jingshan,warehouse,water=NaN,\n";
    let errors = load_files(&main, &[], &[("facilities.csv", facilities)]).unwrap_err();
    assert_eq!(
        rendered(&errors),
        [
            "facilities.csv:2: facility \"w1\": max: \"water\" appears twice",
            "facilities.csv:3: facility \"w2\": max: expected category=number, e.g. \"water=50000\", got \"water\"",
            "facilities.csv:4: facility \"w3\": max: expected category=number, e.g. \"water=50000\", got \"water=lots\"",
            "facilities.csv:5: facility \"w4\": max.food: unknown category \"food\"",
            "facilities.csv:5: facility \"w4\": max.water: must be > 0, got -1",
            "facilities.csv:6: facility \"w5\": max: not allowed on a water_point (only on warehouse)",
            "facilities.csv:7: facility \"w6\": max.water: must be a finite number, got NaN",
        ]
    );
}

#[test]
fn a_facility_counted_by_hand_is_declared_manual_in_toml_or_csv() {
    let main = format!(
        "{SKELETON}[[facility]]\nid = \"wh1\"\ntown = \"jingshan\"\nkind = \"warehouse\"\nreport = \"manual\"\n\
         [[facility]]\nid = \"wh2\"\ntown = \"jingshan\"\nkind = \"warehouse\"\nreport_every = \"5m\"\n\
         [csv]\nfacilities = \"facilities.csv\"\n"
    );
    let facilities = "id,town,kind,report\n\
                      wh3,jingshan,warehouse,manual\n\
                      wh4,jingshan,warehouse,gateway\n\
                      wh5,jingshan,warehouse,\n";
    let r =
        load_files(&main, &[], &[("facilities.csv", facilities)]).unwrap_or_else(|e| panic!("{e}"));
    let f = |id: &str| r.facility(r.facility_idx(id).unwrap());
    let day = Duration::from_secs(24 * 3600);
    // (facility, how it reports, silent after): a manual facility waits a day for its
    // count; a gateway's stays 3 × report_every.
    let rows = [
        ("wh1", Report::Manual, day),
        ("wh2", Report::Gateway, Duration::from_secs(900)),
        ("wh3", Report::Manual, day),
        ("wh4", Report::Gateway, Duration::from_secs(180)),
        ("wh5", Report::Gateway, Duration::from_secs(180)),
    ];
    for (id, report, stale_after) in rows {
        assert_eq!(
            (f(id).report, f(id).stale_after),
            (report, stale_after),
            "{id}"
        );
    }
}

#[test]
fn a_town_target_stale_after_still_wins_for_manual_facilities() {
    let main = format!(
        "{SKELETON}[target]\nstale_after = \"2h\"\n\
         [[facility]]\nid = \"wh1\"\ntown = \"jingshan\"\nkind = \"warehouse\"\nreport = \"manual\"\n"
    );
    let r = load(&main).unwrap_or_else(|e| panic!("{e}"));
    let wh1 = r.facility(r.facility_idx("wh1").unwrap());
    assert_eq!(wh1.stale_after, Duration::from_secs(7200));
}

#[test]
fn a_facilitys_own_stale_after_wins_over_its_towns_target() {
    // A warehouse counted weekly, a water point whose gateway wakes every 2 h: each
    // says when it is overdue, over the town's 2 h target and the defaults.
    let main = format!(
        "{SKELETON}[target]\nstale_after = \"2h\"\n\
         [[facility]]\nid = \"wh1\"\ntown = \"jingshan\"\nkind = \"warehouse\"\nreport = \"manual\"\n\
         stale_after = \"8d\"\n\
         [[facility]]\nid = \"wh2\"\ntown = \"jingshan\"\nkind = \"warehouse\"\n\
         [csv]\nfacilities = \"facilities.csv\"\n"
    );
    let facilities = "id,town,kind,report,stale_after\n\
                      wh3,jingshan,warehouse,manual,36h\n\
                      wh4,jingshan,warehouse,gateway,\n";
    let r =
        load_files(&main, &[], &[("facilities.csv", facilities)]).unwrap_or_else(|e| panic!("{e}"));
    let hours = |h: u64| Duration::from_secs(h * 3600);
    for (id, stale_after) in [
        ("wh1", hours(192)),
        ("wh2", hours(2)),
        ("wh3", hours(36)),
        ("wh4", hours(2)),
    ] {
        assert_eq!(
            r.facility(r.facility_idx(id).unwrap()).stale_after,
            stale_after,
            "{id}"
        );
    }
}

#[test]
fn a_facilitys_bad_stale_after_is_located() {
    assert_errors(
        "[[facility]]\nid = \"f\"\ntown = \"jingshan\"\nkind = \"warehouse\"\nstale_after = \"0s\" #!",
        &["facility \"f\": stale_after: must be > 0, got \"0s\""],
    );
}

#[test]
fn an_unknown_report_mode_is_located_in_toml_and_csv() {
    assert_errors(
        "[[facility]]\nid = \"f\"\ntown = \"jingshan\"\nkind = \"warehouse\"\nreport = \"by hand\" #!",
        &["facility \"f\": report: unknown \"by hand\" (expected gateway or manual)"],
    );
    let main = format!("{SKELETON}[csv]\nfacilities = \"facilities.csv\"\n");
    let facilities = "id,town,kind,report\n\
                      w1,jingshan,warehouse,manual\n\
                      w2,jingshan,warehouse,Manual\n";
    let errors = load_files(&main, &[], &[("facilities.csv", facilities)]).unwrap_err();
    assert_eq!(
        rendered(&errors),
        [
            "facilities.csv:3: facility \"w2\": report: unknown \"Manual\" (expected gateway or manual)"
        ]
    );
}

#[test]
fn category_names_per_language_fall_back_to_name() {
    let r = load(&format!(
        "{SKELETON}[[category]]\nid = \"blanket\"\nname = \"Blankets\"\nname_zh = \"棉被\"\nunit = \"pcs\"\ndaily_need = 0.34\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let blanket = r.category(r.category_idx("blanket").expect("blanket"));
    assert_eq!(blanket.name_in(Lang::Zh), "棉被");
    // No name_en: English readers get the category's name.
    assert_eq!(blanket.name_in(Lang::En), "Blankets");

    let cases: &[(&str, &[&str])] = &[
        (
            "[[category]]\nid = \"food\"\nname = \"Food\"\nname_zh = \" \" #!\nname_en = \"\" #!\nunit = \"ration\"\ndaily_need = 3",
            &[
                "category \"food\": name_zh: must not be empty",
                "category \"food\": name_en: must not be empty",
            ],
        ),
        (
            "[[category]]\nid = \"food\"\nname = \"Food\"\nname_fr = \"Nourriture\" #!\nunit = \"ration\"\ndaily_need = 3",
            &[
                "category \"food\": unknown field `name_fr`, expected one of `id`, `name`, `name_zh`, `name_en`, `unit`, `daily_need`, `group`",
            ],
        ),
    ];
    for (case, expected) in cases {
        assert_errors(case, expected);
    }
}
