//! The Grafana wall displays (`grafana/`) proven without Grafana: the provisioning files
//! and dashboard models are checked for what Grafana needs to load them, and every
//! panel's InfluxQL, with the macros substituted as Grafana substitutes them, is run
//! against a real InfluxDB 1.6 that a real `stockpile serve` fills from a simulated
//! flood. A panel whose query errors, returns nothing, or lacks a field the panel maps
//! fails the test, named by dashboard, panel and query.

mod dashboard;
mod shelters;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::Service;
use chrono::Utc;
use dashboard::{
    DATASOURCE_UID, Dashboard, Macros, SCHEMA_VERSION, grafana_dir, is_row, panel_title, read,
    referenced_fields, targets,
};
use device_sim::{Fault, Scenario, SimConfig, SimError, SimReport, Simulator};
use reserve::registry::{Registry, Source, load_registry};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const DATABASE: &str = "stockpile";

/// The 3-day target as every days panel shows it: red below 3, orange below 3.5.
fn days_thresholds() -> Value {
    json!([
        {"color": "red", "value": null},
        {"color": "orange", "value": 3},
        {"color": "green", "value": 3.5}
    ])
}

/// What every registry below shares: one district, two clusters, water and food.
const REGISTRY_HEAD: &str = r#"
water_category = "water"

[target]
days = 3.0
warn_days = 3.5

[[district]]
id = "d1"
name = "District one"

[[cluster]]
id = "c01"
name = "Cluster one"

[[cluster]]
id = "c02"
name = "Cluster two"

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
"#;

/// Flooded towns, driven by the simulator: each has a warehouse, a water point and a
/// power unit, starts near 4 days and is pushed below the 3-day target within seconds.
const FLOODED_TOWNS: &str = r#"
[[town]]
id = "alpha"
name = "Alpha 街道"
district = "d1"
cluster = "c01"
population = 10000
lat = 39.93
lon = 116.40

[[town]]
id = "beta"
name = "Beta"
district = "d1"
cluster = "c01"
population = 20000
lat = 39.95
lon = 116.45

[[facility]]
id = "alpha-wh1"
town = "alpha"
kind = "warehouse"

[[facility]]
id = "alpha-wp1"
town = "alpha"
kind = "water_point"
capacity_l = 20000

[[facility]]
id = "alpha-pu1"
town = "alpha"
kind = "power_unit"
fuel_capacity_l = 500
burn_l_per_h = 5.0
min_battery_pct = 50

[[facility]]
id = "alpha-sh1"
town = "alpha"
kind = "shelter"
capacity = 2000
dual_use = "gym"
convert_within = "2h"

[[facility]]
id = "beta-wh1"
town = "beta"
kind = "warehouse"

[[facility]]
id = "beta-wp1"
town = "beta"
kind = "water_point"
capacity_l = 30000

[[facility]]
id = "beta-pu1"
town = "beta"
kind = "power_unit"
fuel_capacity_l = 800
burn_l_per_h = 12.0
min_battery_pct = 50
"#;

/// Towns whose gateways the test plays itself, one reading each, so the city wall's
/// counts have a town in every state: gamma ok, delta near target, epsilon unknown
/// (its warehouse never reports). Gamma's school is open and 95 % full, so the wall
/// has an open shelter and one near capacity.
const STEADY_TOWNS: &str = r#"
[[town]]
id = "gamma"
name = "Gamma"
district = "d1"
cluster = "c02"
population = 8000
lat = 39.90
lon = 116.30

[[town]]
id = "delta"
name = "Delta"
district = "d1"
cluster = "c02"
population = 10000
lat = 39.88
lon = 116.35

[[town]]
id = "epsilon"
name = "Epsilon"
district = "d1"
cluster = "c02"
population = 5000
lat = 39.86
lon = 116.38

[[facility]]
id = "gamma-wh1"
town = "gamma"
kind = "warehouse"

[[facility]]
id = "gamma-wp1"
town = "gamma"
kind = "water_point"
capacity_l = 30000

[[facility]]
id = "gamma-pu1"
town = "gamma"
kind = "power_unit"
fuel_capacity_l = 500
burn_l_per_h = 5.0
min_battery_pct = 50

[[facility]]
id = "gamma-sh1"
town = "gamma"
kind = "shelter"
capacity = 1000
dual_use = "school"

[[facility]]
id = "delta-wh1"
town = "delta"
kind = "warehouse"

[[facility]]
id = "epsilon-wh1"
town = "epsilon"
kind = "warehouse"

[[contact]]
name = "City duty officer"
email = "duty@example.org"
lang = "en"
city = true

[[activation_plan]]
shelters = ["alpha-sh1", "gamma-sh1"]

[[activation_plan.step]]
name = "Notify the operator"
contact = "duty@example.org"
within = "30m"

[[activation_plan.step]]
name = "Open the doors"
contact = "duty@example.org"
within = "2h"
"#;

/// The admin's token, to start the activation the activation panels show.
const ADMIN_TOKEN: &str = "admin-grafana-wall-52c9d1";

/// The town the Town dashboard's `$town` is set to: flooded, so every panel has data.
const VIEWED_TOWN: &str = "alpha";

/// The service's config and registry (all five towns) in `dir`; returns the config.
/// `group_wait` 0: alerts fire, and reach InfluxDB, as soon as a town crosses.
fn write_deployment(dir: &Path, broker_url: &str, influx_url: &str) -> PathBuf {
    std::fs::write(
        dir.join("registry.toml"),
        [REGISTRY_HEAD, FLOODED_TOWNS, STEADY_TOWNS].concat(),
    )
    .unwrap();
    let config = dir.join("stockpile.toml");
    std::fs::write(
        &config,
        format!(
            "registry = \"registry.toml\"\n\
             [mqtt]\nurl = \"{broker_url}\"\nclient_id = \"stockpile-grafana\"\n\
             [store]\npath = \"stockpile.db\"\n\
             [influx]\nurl = \"{influx_url}\"\napi = \"v1\"\ndatabase = \"{DATABASE}\"\n\
             [api]\nlisten = \"127.0.0.1:0\"\npublic_read = true\n\
             [[api.tokens]]\nname = \"ops\"\nrole = \"admin\"\ntoken = \"{ADMIN_TOKEN}\"\n\
             [alerts]\ngroup_wait = \"0s\"\n\
             [log]\nlevel = \"info\"\n"
        ),
    )
    .unwrap();
    config
}

#[test]
fn provisioning_and_dashboards_load_as_grafana_expects() {
    let mut problems = Vec::new();
    check_provisioning(&mut problems);
    let dashboards = Dashboard::load_all();
    let files: Vec<&str> = dashboards.iter().map(|d| d.file.as_str()).collect();
    assert_eq!(files, ["city-wall.json", "operations.json", "town.json"]);
    let mut uids = BTreeSet::new();
    for d in &dashboards {
        let uid = d.model["uid"].as_str().unwrap_or("");
        if !uid.starts_with("stockpile-") || !uids.insert(uid) {
            problems.push(format!(
                "{}: uid {uid:?} must be unique and start with stockpile-",
                d.file
            ));
        }
        check_model(d, &mut problems);
    }
    assert!(
        problems.is_empty(),
        "the Grafana files have problems:\n  {}",
        problems.join("\n  ")
    );
}

/// The datasource and dashboard provider files: what the dashboards rely on, and no
/// secret in the repository.
fn check_provisioning(problems: &mut Vec<String>) {
    let datasources = read(&grafana_dir().join("provisioning/datasources/stockpile.yaml"));
    for needed in [
        "apiVersion: 1",
        "type: influxdb",
        &format!("uid: {DATASOURCE_UID}"),
        "version: InfluxQL",
        &format!("timeInterval: {}", dashboard::MIN_INTERVAL),
        "httpHeaderName1: Authorization",
    ] {
        if !datasources.contains(needed) {
            problems.push(format!("datasources/stockpile.yaml lacks {needed:?}"));
        }
    }
    // Every password or token line, commented or not, names a variable of Grafana's
    // environment instead of holding a value.
    for line in datasources.lines() {
        let setting = line.trim_start_matches([' ', '#']);
        if ["password:", "httpHeaderValue1:", "token:"]
            .iter()
            .any(|key| setting.starts_with(key))
            && !setting.contains("${")
        {
            problems.push(format!(
                "datasources/stockpile.yaml holds a secret instead of a ${{VARIABLE}}: {line:?}"
            ));
        }
    }
    let providers = read(&grafana_dir().join("provisioning/dashboards/stockpile.yaml"));
    for needed in ["apiVersion: 1", "type: file", "folder: Stockpile", "path: "] {
        if !providers.contains(needed) {
            problems.push(format!("dashboards/stockpile.yaml lacks {needed:?}"));
        }
    }
}

/// One dashboard's model: the settings a wall display needs, and every panel, target
/// and variable on the provisioned datasource with a raw InfluxQL query.
fn check_model(d: &Dashboard, problems: &mut Vec<String>) {
    let (m, file) = (&d.model, &d.file);
    if d.title().is_empty() {
        problems.push(format!("{file}: no title"));
    }
    if m["schemaVersion"].as_u64() != Some(SCHEMA_VERSION) {
        problems.push(format!(
            "{file}: schemaVersion {} (all dashboards use {SCHEMA_VERSION})",
            m["schemaVersion"]
        ));
    }
    if m["style"] != "dark" {
        problems.push(format!("{file}: style must be dark"));
    }
    if m["refresh"].as_str().is_none_or(str::is_empty) {
        problems.push(format!("{file}: no refresh"));
    }
    if !m["time"]["from"].is_string() || !m["time"]["to"].is_string() {
        problems.push(format!("{file}: no default time range"));
    }
    if !m["tags"]
        .as_array()
        .is_some_and(|tags| tags.contains(&json!("stockpile")))
    {
        problems.push(format!("{file}: not tagged stockpile"));
    }
    let panels = d.panels();
    if panels.iter().all(|p| is_row(p)) {
        problems.push(format!("{file}: no panels"));
    }
    let mut ids = BTreeSet::new();
    for panel in panels {
        let title = panel_title(panel);
        if !panel["id"].as_u64().is_some_and(|id| ids.insert(id)) {
            problems.push(format!(
                "{file}: panel {title:?} has a missing or repeated id"
            ));
        }
        if !is_row(panel) {
            check_panel_model(file, panel, problems);
        }
    }
    for variable in m["templating"]["list"].as_array().into_iter().flatten() {
        if variable["type"] == "query" {
            let name = variable["name"].as_str().unwrap_or("");
            check_datasource(&variable["datasource"], file, name, "variable", problems);
        }
    }
}

fn check_panel_model(file: &str, panel: &Value, problems: &mut Vec<String>) {
    let title = panel_title(panel);
    check_datasource(&panel["datasource"], file, title, "panel", problems);
    let panel_targets = targets(panel);
    if panel_targets.is_empty() {
        problems.push(format!("{file}: panel {title:?} has no query"));
    }
    let mut ref_ids = BTreeSet::new();
    for target in panel_targets {
        let ref_id = target["refId"].as_str().unwrap_or("");
        if !ref_ids.insert(ref_id) {
            problems.push(format!(
                "{file}: panel {title:?}: refId {ref_id:?} missing or repeated"
            ));
        }
        if !target["datasource"].is_null() {
            check_datasource(&target["datasource"], file, title, "target", problems);
        }
        if target["rawQuery"] != true || target["query"].as_str().is_none_or(str::is_empty) {
            problems.push(format!(
                "{file}: panel {title:?} target {ref_id}: needs rawQuery true and a query"
            ));
        }
        let format = target["resultFormat"].as_str().unwrap_or("");
        if !["time_series", "table"].contains(&format) {
            problems.push(format!(
                "{file}: panel {title:?} target {ref_id}: resultFormat {format:?}"
            ));
        }
    }
    check_days_thresholds(panel, file, problems);
}

fn check_datasource(ds: &Value, file: &str, title: &str, what: &str, problems: &mut Vec<String>) {
    if ds["type"] != "influxdb" || ds["uid"] != DATASOURCE_UID {
        problems.push(format!(
            "{file}: {what} {title:?} uses datasource {ds}, not {{\"type\": \"influxdb\", \"uid\": \"{DATASOURCE_UID}\"}}"
        ));
    }
}

/// Wherever a panel shows days (`suffix: d`), the target (`[target] days`,
/// docs/design.md#registry) is its threshold.
fn check_days_thresholds(panel: &Value, file: &str, problems: &mut Vec<String>) {
    let title = panel_title(panel);
    let defaults = &panel["fieldConfig"]["defaults"];
    if defaults["unit"] == "suffix: d" && defaults["thresholds"]["steps"] != days_thresholds() {
        problems.push(format!(
            "{file}: panel {title:?} shows days without the 3-day target thresholds"
        ));
    }
    for over in panel["fieldConfig"]["overrides"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let properties = over["properties"].as_array().cloned().unwrap_or_default();
        let property = |id: &str| {
            properties
                .iter()
                .find(|p| p["id"] == id)
                .map(|p| &p["value"])
        };
        if property("unit").is_some_and(|u| u == "suffix: d")
            && property("thresholds").is_none_or(|t| t["steps"] != days_thresholds())
        {
            problems.push(format!(
                "{file}: panel {title:?} shows days for {} without the 3-day target thresholds",
                over["matcher"]["options"]
            ));
        }
    }
}

#[test]
fn every_panel_query_answers_from_a_live_service() {
    let started_ms = Utc::now().timestamp_millis();
    let influx = testkit::Influx1::start();
    influx.create_database(DATABASE);
    let broker = testkit::Mosquitto::start();

    let deployment = tempfile::tempdir().unwrap();
    let config = write_deployment(deployment.path(), &broker.url(), &influx.url());
    let service = Service::start(&config);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(report_steady_towns(&broker.url()));
    runtime.block_on(activate_shelters(&service.api_url()));
    let flood = simulate_flood(&runtime, &broker.url());

    // Everything the panels read is in InfluxDB: each town in the state the city wall
    // counts, an alert fired, and ops points in two 10-second buckets for rates.
    let ready = [
        ("alpha below target", town_status_is("alpha", 2), 1),
        ("delta near target", town_status_is("delta", 1), 1),
        ("epsilon unknown", town_status_is("epsilon", 3), 1),
        ("gamma ok", town_status_is("gamma", 0), 1),
        (
            "alpha's critical alert firing",
            format!(
                "SELECT count(\"firing\") FROM \"alert\" WHERE \"town\" = '{VIEWED_TOWN}' \
                 AND \"severity\" = 'critical' AND \"firing\" > 0"
            ),
            1,
        ),
        (
            "ops points",
            "SELECT count(\"received\") FROM \"ops\"".into(),
            2,
        ),
        (
            "alpha's water point readings",
            count("water_point", "ready"),
            2,
        ),
        (
            "alpha's power unit readings",
            count("power_unit", "ready"),
            2,
        ),
        ("alpha's coverage points", count("coverage", "days"), 2),
        ("alpha's shelter readings", count("shelter", "occupancy"), 1),
        (
            "alpha's shelter in an activation",
            count("activation", "steps_total"),
            1,
        ),
        (
            "gamma's shelter open",
            "SELECT count(\"open\") FROM \"shelter\" WHERE \"town\" = 'gamma' AND \"open\" = 1"
                .into(),
            1,
        ),
        (
            "gamma sheltering its school's people",
            "SELECT count(\"sheltered\") FROM \"town_status\" WHERE \"town\" = 'gamma' \
             AND \"sheltered\" = 950"
                .into(),
            1,
        ),
    ];
    wait_for_series(&influx, &ready, &service, &flood);

    let mut failures = Vec::new();
    let mut checked = 0;
    for d in Dashboard::load_all() {
        // The view Grafana would render: from a minute before the test to now.
        let mut view = Macros {
            from_ms: started_ms - 60_000,
            to_ms: 0,
            variables: BTreeMap::new(),
        };
        check_variables(&influx, &d, &mut view, &mut failures);
        for panel in d.panels().into_iter().filter(|p| !is_row(p)) {
            checked += check_panel(&influx, &d, panel, &mut view, &mut failures);
        }
    }

    flood.stop.cancel();
    let report = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), flood.run).await })
        .expect("the simulator stops when told")
        .expect("the simulator task")
        .expect("the simulator run");
    assert!(report.acked > 0, "{report:?}");
    assert!(
        checked >= 40,
        "only {checked} queries found in the dashboards"
    );
    assert!(
        failures.is_empty(),
        "{} problems with the {checked} dashboard queries run against InfluxDB:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

/// Runs each template variable's query, checks that it offers the value the test
/// views the dashboard with, and sets that value in `view`.
fn check_variables(
    influx: &testkit::Influx1,
    d: &Dashboard,
    view: &mut Macros,
    failures: &mut Vec<String>,
) {
    for (name, query) in d.query_variables() {
        if name != "town" {
            failures.push(format!(
                "{}: variable ${name}: the test has no value for it",
                d.label()
            ));
            continue;
        }
        view.to_ms = Utc::now().timestamp_millis();
        match view
            .render(&query)
            .and_then(|q| run_query(influx, &q).map(|a| (q, a)))
        {
            Ok((_, answer)) if answer.values.contains(VIEWED_TOWN) => {}
            Ok((rendered, answer)) => failures.push(format!(
                "{}: variable ${name} offers {:?}, not {VIEWED_TOWN:?}\n    query: {rendered}",
                d.label(),
                answer.values
            )),
            Err(why) => failures.push(format!(
                "{}: variable ${name}: {why}\n    query: {query}",
                d.label()
            )),
        }
        view.variables.insert(name, VIEWED_TOWN.to_owned());
    }
}

/// Runs a panel's queries as Grafana renders them for `view`; each must answer data
/// with no all-null column, and together they must return every field the panel maps.
/// Returns how many queries ran.
fn check_panel(
    influx: &testkit::Influx1,
    d: &Dashboard,
    panel: &Value,
    view: &mut Macros,
    failures: &mut Vec<String>,
) -> usize {
    let title = panel_title(panel);
    let mut fail = |why: String| failures.push(format!("{} / {title:?}: {why}", d.label()));
    let mut returned: BTreeSet<String> = BTreeSet::new();
    let mut answered = true;
    let panel_targets = targets(panel);
    for target in &panel_targets {
        let query = target["query"].as_str().unwrap_or("");
        view.to_ms = Utc::now().timestamp_millis();
        let rendered = match view.render(query) {
            Ok(rendered) => rendered,
            Err(why) => {
                answered = false;
                fail(format!("{why}\n    query: {query}"));
                continue;
            }
        };
        let answer = match run_query(influx, &rendered) {
            Ok(answer) => answer,
            Err(why) => {
                answered = false;
                fail(format!("{why}\n    query: {rendered}"));
                continue;
            }
        };
        if !answer.has_value {
            answered = false;
            fail(format!("no data\n    query: {rendered}"));
        } else if !answer.empty_columns.is_empty() {
            answered = false;
            fail(format!(
                "{:?} null in every row\n    query: {rendered}",
                answer.empty_columns
            ));
        } else {
            // A plain alias names a time series in Grafana instead of its columns; one
            // with `$tag_…`/`$col` patterns is built from them.
            match target["alias"]
                .as_str()
                .filter(|a| target["resultFormat"] == "time_series" && !a.contains('$'))
            {
                Some(alias) => {
                    returned.insert(alias.to_owned());
                }
                None => returned.extend(answer.columns),
            }
        }
    }
    let missing: Vec<String> = referenced_fields(panel)
        .into_iter()
        .filter(|name| !returned.contains(name))
        .collect();
    if answered && !missing.is_empty() {
        fail(format!(
            "maps {missing:?}, which its queries do not return (they return {returned:?})"
        ));
    }
    panel_targets.len()
}

/// Counts 1 when the last status of `town` is `status` (0 ok, 1 warning, 2 critical,
/// 3 unknown).
fn town_status_is(town: &str, status: i64) -> String {
    format!(
        "SELECT count(\"status\") FROM (SELECT last(\"status\") AS \"status\" \
         FROM \"town_status\" WHERE \"town\" = '{town}') WHERE \"status\" = {status}"
    )
}

/// Counts the viewed town's points of `measurement`.
fn count(measurement: &str, field: &str) -> String {
    format!("SELECT count(\"{field}\") FROM \"{measurement}\" WHERE \"town\" = '{VIEWED_TOWN}'")
}

/// How long the service and the simulator get to fill InfluxDB: generous, for a
/// 2-core machine running other suites alongside (it takes about 10 s when quiet).
const FILL_TIMEOUT: Duration = Duration::from_secs(120);

/// Polls until each count of `ready` reaches its minimum, or fails naming those that
/// did not, with the service's log.
fn wait_for_series(
    influx: &testkit::Influx1,
    ready: &[(&str, String, u64)],
    service: &Service,
    flood: &Flood,
) {
    let deadline = Instant::now() + FILL_TIMEOUT;
    loop {
        let missing: Vec<String> = ready
            .iter()
            .filter_map(|(what, query, min)| {
                let have = run_query(influx, query).map_or(0, |a| a.first_count);
                (have < *min).then(|| format!("{what} ({have} of {min})"))
            })
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            !flood.run.is_finished(),
            "the simulator stopped before InfluxDB had {missing:?}"
        );
        assert!(
            Instant::now() < deadline,
            "InfluxDB still lacks {missing:?} after {FILL_TIMEOUT:?}; the service said:\n{}",
            service.output()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// What a query returned.
#[derive(Debug, Default)]
struct Answer {
    /// Column names and tag keys of every series.
    columns: BTreeSet<String>,
    /// Some row has a non-null value besides its time.
    has_value: bool,
    /// Columns (besides time) null in every row of every series: a field misspelt in
    /// a query that selects others, or one the writer does not write.
    empty_columns: BTreeSet<String>,
    /// Every value of every row, as text (for `SHOW TAG VALUES`).
    values: BTreeSet<String>,
    /// The first value of the first row, when it is a count.
    first_count: u64,
}

/// Runs `query` on `/query` as Grafana's InfluxQL datasource does (GET, db, epoch ms).
fn run_query(influx: &testkit::Influx1, query: &str) -> Result<Answer, String> {
    let response = testkit::http::try_get(
        &format!("{}/query", influx.url()),
        &[("db", DATABASE), ("q", query), ("epoch", "ms")],
    )?;
    if response.status != 200 {
        return Err(format!(
            "InfluxDB answered {}: {}",
            response.status, response.body
        ));
    }
    let body: Value = serde_json::from_str(&response.body)
        .map_err(|e| format!("InfluxDB answered non-JSON ({e}): {}", response.body))?;
    if let Some(error) = body.get("error") {
        return Err(format!("InfluxDB error: {error}"));
    }
    let mut answer = Answer::default();
    // Row columns seen, and those with a value in some row of some series (a town
    // without days has a null worst_days; others have one).
    let (mut seen, mut filled) = (BTreeSet::new(), BTreeSet::new());
    for result in body["results"].as_array().into_iter().flatten() {
        if let Some(error) = result.get("error") {
            return Err(format!("InfluxDB error: {error}"));
        }
        for series in result["series"].as_array().into_iter().flatten() {
            let columns: Vec<&str> = series["columns"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let rows: Vec<&Vec<Value>> = series["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_array)
                .collect();
            if answer.columns.is_empty() {
                answer.first_count = rows
                    .first()
                    .and_then(|row| row.get(1))
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
            }
            answer.columns.extend(columns.iter().map(|c| c.to_string()));
            answer.columns.extend(
                series["tags"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, _)| k.clone()),
            );
            for (i, column) in columns.iter().enumerate() {
                seen.insert(column.to_string());
                if rows
                    .iter()
                    .any(|row| row.get(i).is_some_and(|v| !v.is_null()))
                {
                    filled.insert(column.to_string());
                }
            }
            for value in rows.iter().flat_map(|row| row.iter()) {
                answer.values.insert(match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
            }
        }
    }
    seen.remove("time");
    filled.remove("time");
    answer.has_value = !filled.is_empty();
    answer.empty_columns = seen.difference(&filled).cloned().collect();
    Ok(answer)
}

/// The test's own gateways for gamma (ok: ten days, everything ready, its school
/// sheltering 950) and delta (3.3 days: near target). Epsilon's stays silent. Returns once the broker has them.
async fn report_steady_towns(broker_url: &str) {
    let ts = Utc::now().timestamp_millis();
    let readings = [
        (
            "gamma",
            "gamma-wh1",
            json!({"ts": ts, "stock": {"water": 240_000, "food": 240_000}}),
        ),
        (
            "gamma",
            "gamma-wp1",
            json!({"ts": ts, "water": {"level_l": 25_000, "pump": "ok", "potable": true}}),
        ),
        (
            "gamma",
            "gamma-pu1",
            json!({"ts": ts, "power": {"fuel_l": 480, "battery_pct": 95, "state": "standby"}}),
        ),
        (
            "gamma",
            "gamma-sh1",
            json!({"ts": ts, "shelter": {"occupancy": 950, "mode": "open"}}),
        ),
        (
            "delta",
            "delta-wh1",
            json!({"ts": ts, "stock": {"water": 99_000, "food": 99_000}}),
        ),
    ];
    publish_readings(broker_url, "grafana-test-gateways", &readings).await;
}

/// Publishes each `(town, facility, payload)` on its facility's topic at QoS 1, as its
/// gateway would, and returns once the broker acknowledged them all.
async fn publish_readings(broker_url: &str, client_id: &str, readings: &[(&str, &str, Value)]) {
    let port: u16 = broker_url.rsplit(':').next().unwrap().parse().unwrap();
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    for (town, facility, payload) in readings {
        client
            .publish(
                reserve::wire::reading_topic(town, facility),
                QoS::AtLeastOnce,
                false,
                serde_json::to_vec(payload).unwrap(),
            )
            .await
            .unwrap();
    }
    let mut acked = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while acked < readings.len() {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Err(_) => panic!(
                "the broker acknowledged {acked} of {} readings",
                readings.len()
            ),
            Ok(Ok(Event::Incoming(Incoming::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("test gateways lost the broker: {e}"),
        }
    }
    let _ = client.disconnect().await;
}

/// Starts an activation of alpha's and gamma's shelters, as an admin would.
async fn activate_shelters(api: &str) {
    let response = reqwest::Client::new()
        .post(format!("{api}/api/v1/activations"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"scope": {"shelters": ["alpha-sh1", "gamma-sh1"]}, "reason": "flood"}))
        .send()
        .await
        .expect("the API answers");
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert!(
        status.is_success(),
        "starting the activation: {status} {body}"
    );
}

/// The simulator's run: stopped by `stop`, its outcome in `run`.
struct Flood {
    stop: CancellationToken,
    run: tokio::task::JoinHandle<Result<SimReport, SimError>>,
}

/// Starts the simulator on the flooded towns (their registry only) at 20,000 times real
/// speed, so alpha and beta cross the 3-day target within seconds; plus one malformed
/// message per reject reason for the Operations dashboard. Runs until stopped.
fn simulate_flood(runtime: &tokio::runtime::Runtime, broker_url: &str) -> Flood {
    let source = Source {
        name: "flooded.toml".into(),
        text: [REGISTRY_HEAD, FLOODED_TOWNS].concat(),
    };
    let flooded: Registry = load_registry(&source, &[], &mut |name| Err(format!("no csv {name}")))
        .unwrap_or_else(|e| panic!("flooded towns' registry: {e}"));
    let mut config = SimConfig::new(broker_url, Scenario::builtin("flood").unwrap());
    config.speed = 20_000.0;
    config.seed = 7;
    config.report_every = Some(Duration::from_millis(500));
    config.faults = vec![Fault::Malformed];
    config.client_id_prefix = "grafana-sim".into();
    let simulator = Simulator::new(Arc::new(flooded), config).expect("simulator config");
    let stop = CancellationToken::new();
    let run = runtime.spawn(simulator.run(stop.clone()));
    Flood { stop, run }
}
