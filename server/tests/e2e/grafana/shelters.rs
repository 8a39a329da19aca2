//! The shelter panels (issue 16) read as a viewer reads them: a real `stockpile serve`
//! writes the `shelter` and `town_status` lines of door counters' readings and of an
//! officer's typed figure into a real InfluxDB 1.6, and each panel's query, rendered
//! as Grafana renders it, must answer the numbers the wall and the Town dashboard show.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};

use super::dashboard::{Dashboard, Macros, panel_title, targets};
use super::{DATABASE, FILL_TIMEOUT, publish_readings};
use crate::common::Service;

const ADMIN_TOKEN: &str = "admin-grafana-shelters-7d41b2";

/// Two districts: north (d1) has a gym and a school, both open; south (d2) has a
/// hotel still converting, so the 30 people its officer typed in are its sheltered.
/// Every shelter's activation plan has three steps, the first due a second after the
/// start so that the test sees it overdue.
const REGISTRY: &str = r#"
[[district]]
id = "d1"
name = "District one"

[[district]]
id = "d2"
name = "District two"

[[cluster]]
id = "c01"
name = "Cluster one"

[[category]]
id = "water"
name = "Drinking water"
unit = "L"
daily_need = 3.0

[[town]]
id = "north"
name = "North"
district = "d1"
cluster = "c01"
population = 10000

[[town]]
id = "south"
name = "South"
district = "d2"
cluster = "c01"
population = 5000

[[facility]]
id = "n-gym"
town = "north"
kind = "shelter"
capacity = 1000
dual_use = "gym"

[[facility]]
id = "n-school"
town = "north"
kind = "shelter"
capacity = 500
dual_use = "school"

[[facility]]
id = "s-hotel"
town = "south"
kind = "shelter"
capacity = 400
dual_use = "hotel"
convert_within = "2h"

[[contact]]
name = "Shelter operator"
email = "operator@example.org"
lang = "en"
towns = ["north", "south"]

[[activation_plan]]
shelters = ["n-gym", "n-school", "s-hotel"]

[[activation_plan.step]]
name = "Notify the operator"
contact = "operator@example.org"
within = "1s"

[[activation_plan.step]]
name = "Clear the hall"
contact = "operator@example.org"
within = "1h"

[[activation_plan.step]]
name = "Open the doors"
contact = "operator@example.org"
within = "2h"
"#;

fn write_deployment(dir: &Path, broker_url: &str, influx_url: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("registry.toml"), REGISTRY).unwrap();
    let config = dir.join("stockpile.toml");
    std::fs::write(
        &config,
        format!(
            "registry = \"registry.toml\"\n\
             [mqtt]\nurl = \"{broker_url}\"\nclient_id = \"stockpile-grafana-shelters\"\n\
             [store]\npath = \"stockpile.db\"\n\
             [influx]\nurl = \"{influx_url}\"\napi = \"v1\"\ndatabase = \"{DATABASE}\"\n\
             [api]\nlisten = \"127.0.0.1:0\"\npublic_read = true\n\
             [[api.tokens]]\nname = \"ops\"\nrole = \"admin\"\ntoken = \"{ADMIN_TOKEN}\"\n\
             [log]\nlevel = \"info\"\n"
        ),
    )
    .unwrap();
    config
}

#[test]
fn shelter_panels_show_what_the_shelters_report() {
    let started_ms = Utc::now().timestamp_millis();
    let influx = testkit::Influx1::start();
    influx.create_database(DATABASE);
    let broker = testkit::Mosquitto::start();
    let deployment = tempfile::tempdir().unwrap();
    let config = write_deployment(deployment.path(), &broker.url(), &influx.url());
    let service = Service::start(&config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // The gym 95 % full; the school was 96 % full a minute ago and has 100 left now (the
    // wall shows the latest, not the worst); the hotel converting, nobody inside yet.
    let now = Utc::now().timestamp_millis();
    let open = |occupancy: u64, ts: i64| json!({"ts": ts, "shelter": {"occupancy": occupancy, "mode": "open"}});
    let readings = [
        ("north", "n-gym", open(950, now)),
        ("north", "n-school", open(480, now - 60_000)),
        ("north", "n-school", open(100, now)),
        (
            "south",
            "s-hotel",
            json!({"ts": now, "shelter": {"occupancy": 0, "mode": "activating"}}),
        ),
    ];
    let api = Api(service.api_url());
    let (gym_and_hotel, school) = runtime.block_on(async {
        publish_readings(&broker.url(), "grafana-shelter-gateways", &readings).await;
        let typed = json!({"sheltered": 30});
        let put = reqwest::Method::PUT;
        api.call(put, "/api/v1/towns/south/sheltered", typed).await;
        run_activations(&api).await
    });

    wait_until_written(&influx, &service);
    let (a, b) = (gym_and_hotel.to_string(), school.to_string());
    let view = Macros {
        from_ms: started_ms - 120_000,
        to_ms: Utc::now().timestamp_millis(),
        variables: BTreeMap::from([("town".to_owned(), "north".to_owned())]),
    };
    let panel = |file: &str, title: &str| PanelAnswer::run(&influx, &view, file, title);

    // The City wall.
    assert_eq!(panel("city-wall.json", "Sheltered people").single(), 1080);
    assert_eq!(panel("city-wall.json", "Shelters open").single(), 2);
    assert_eq!(
        panel("city-wall.json", "Shelters near capacity").single(),
        1
    );
    assert_eq!(
        panel("city-wall.json", "Sheltered people per district").last_by_tag("district"),
        [("d1", json!(1050)), ("d2", json!(30))]
            .map(|(k, v)| (k.to_owned(), v))
            .into(),
    );
    assert_eq!(
        panel("city-wall.json", "The 20 fullest shelters").table(
            "fill_pct",
            &[
                "facility",
                "town",
                "fill_pct",
                "occupancy",
                "capacity",
                "mode"
            ]
        ),
        [
            json!(["n-gym", "north", 95, 950, 1000, "open"]),
            json!(["n-school", "north", 20, 100, 500, "open"]),
            json!(["s-hotel", "south", 0, 0, 400, "activating"]),
        ]
    );

    // The City wall's activations: A alone is open.
    assert_eq!(
        panel("city-wall.json", "Activation steps done").columns(),
        json!({"done": 1, "steps": 6})
    );
    assert_eq!(
        panel("city-wall.json", "Activation steps overdue").single(),
        2
    );
    assert_eq!(
        panel("city-wall.json", "Shelter capacity: asked, open").columns(),
        json!({"asked": 1400, "open": 1500})
    );
    assert_eq!(
        panel("city-wall.json", "Open activations").table(
            "overdue",
            &[
                "activation",
                "shelters",
                "done",
                "overdue",
                "steps",
                "capacity"
            ]
        ),
        [json!([a, 2, 1, 2, 6, 1400])]
    );

    // The Town dashboard on north.
    assert_eq!(panel("town.json", "Sheltered people").single(), 1050);
    assert_eq!(
        panel("town.json", "Shelter occupancy and capacity").last_by_tag("facility"),
        [
            ("n-gym capacity", json!(1000)),
            ("n-gym people", json!(950)),
            ("n-school capacity", json!(500)),
            ("n-school people", json!(100)),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .into(),
    );
    assert_eq!(
        panel("town.json", "Shelter mode").last_by_tag("facility"),
        [("n-gym", json!("open")), ("n-school", json!("open"))]
            .map(|(k, v)| (k.to_owned(), v))
            .into(),
    );
    assert_eq!(
        panel("town.json", "Activation steps over time").last_by_tag("shelter"),
        [
            ("n-gym done", json!(1)),
            ("n-gym overdue", json!(1)),
            ("n-school done", json!(0)),
            ("n-school overdue", json!(1)),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .into(),
    );
    let mut rows = panel("town.json", "Activations of this town's shelters").table(
        "overdue",
        &[
            "activation",
            "shelter",
            "open",
            "done",
            "overdue",
            "steps",
            "capacity",
        ],
    );
    rows.sort_by_key(|row| row[0].as_str().map(str::to_owned));
    assert_eq!(
        rows,
        [
            json!([a, "n-gym", 1, 1, 1, 3, 1000]),
            json!([b, "n-school", 0, 0, 1, 3, 500]),
        ]
    );
}

/// The service's API, called with the admin token.
struct Api(String);

impl Api {
    /// The answer to a call that must succeed.
    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let mut request = reqwest::Client::new()
            .request(method.clone(), format!("{}{path}", self.0))
            .bearer_auth(ADMIN_TOKEN);
        if method != reqwest::Method::GET {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the API answers");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Polls an activation until `shelters` first steps are overdue.
    async fn first_steps_overdue(&self, id: i64, shelters: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let path = format!("/api/v1/activations/{id}");
        loop {
            let view = self.call(reqwest::Method::GET, &path, Value::Null).await;
            if view["steps_overdue"].as_u64() >= Some(shelters) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never overdue: {view}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Activation A over the gym and the hotel, B over the school. Once their first steps
/// are overdue, the gym's second step is done (A's points: gym 1 done, 1 overdue; hotel
/// 0 done, 1 overdue) and B is closed (its point says open 0). Returns their ids.
async fn run_activations(api: &Api) -> (i64, i64) {
    let post = reqwest::Method::POST;
    let start = async |shelters: &[&str]| {
        let body = json!({"scope": {"shelters": shelters}, "reason": "暴雨红色预警 Red rainstorm warning"});
        let view = api
            .call(reqwest::Method::POST, "/api/v1/activations", body)
            .await;
        view["id"].as_i64().expect("an activation id")
    };
    let a = start(&["n-gym", "s-hotel"]).await;
    let b = start(&["n-school"]).await;
    api.first_steps_overdue(a, 2).await;
    api.first_steps_overdue(b, 1).await;
    let step = json!({"shelter": "n-gym", "note": "hall cleared"});
    api.call(
        post.clone(),
        &format!("/api/v1/activations/{a}/steps/2"),
        step,
    )
    .await;
    api.call(post, &format!("/api/v1/activations/{b}/close"), json!({}))
        .await;
    (a, b)
}

/// Waits until InfluxDB has each town's sheltered people and the school's latest count.
fn wait_until_written(influx: &testkit::Influx1, service: &Service) {
    let checks = [
        (
            "north sheltering 1050",
            "SELECT last(\"sheltered\") FROM \"town_status\" WHERE \"town\" = 'north'",
            json!(1050),
        ),
        (
            "south sheltering 30",
            "SELECT last(\"sheltered\") FROM \"town_status\" WHERE \"town\" = 'south'",
            json!(30),
        ),
        (
            "the school's two readings",
            "SELECT count(\"occupancy\") FROM \"shelter\" WHERE \"facility\" = 'n-school'",
            json!(2),
        ),
        (
            "the hotel's reading",
            "SELECT count(\"occupancy\") FROM \"shelter\" WHERE \"facility\" = 's-hotel'",
            json!(1),
        ),
        (
            "the gym's step done",
            "SELECT last(\"steps_done\") FROM \"activation\" WHERE \"shelter\" = 'n-gym'",
            json!(1),
        ),
        (
            "the school's activation closed",
            "SELECT last(\"open\") FROM \"activation\" WHERE \"shelter\" = 'n-school'",
            json!(0),
        ),
    ];
    let deadline = Instant::now() + FILL_TIMEOUT;
    loop {
        let missing: Vec<String> = checks
            .iter()
            .filter_map(|(what, query, want)| {
                let have = series(influx, query)
                    .ok()
                    .and_then(|s| s.first().and_then(|s| s.rows.last().cloned()))
                    .and_then(|row| row.values().find(|v| !v.is_string()).cloned());
                (have.as_ref() != Some(want)).then(|| format!("{what} ({have:?})"))
            })
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "InfluxDB still lacks {missing:?} after {FILL_TIMEOUT:?}; the service said:\n{}",
            service.output()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// One series of an InfluxDB answer: its tags, and its rows with each column by name
/// (`time` left out).
#[derive(Debug)]
struct Series {
    tags: BTreeMap<String, String>,
    rows: Vec<BTreeMap<String, Value>>,
}

fn series(influx: &testkit::Influx1, query: &str) -> Result<Vec<Series>, String> {
    let response = testkit::http::try_get(
        &format!("{}/query", influx.url()),
        &[("db", DATABASE), ("q", query), ("epoch", "ms")],
    )?;
    let body: Value = serde_json::from_str(&response.body).map_err(|e| e.to_string())?;
    let result = &body["results"][0];
    if response.status != 200 || result.get("error").is_some() {
        return Err(format!(
            "InfluxDB answered {}: {}",
            response.status, response.body
        ));
    }
    let mut out = Vec::new();
    for s in result["series"].as_array().into_iter().flatten() {
        let columns: Vec<&str> = s["columns"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c.as_str().unwrap_or(""))
            .collect();
        let rows = s["values"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|row| {
                columns
                    .iter()
                    .zip(row.as_array().into_iter().flatten())
                    .filter(|(c, _)| **c != "time")
                    .map(|(c, v)| (c.to_string(), v.clone()))
                    .collect()
            })
            .collect();
        let tags = s["tags"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
            .collect();
        out.push(Series { tags, rows });
    }
    Ok(out)
}

/// What a panel's queries answered, with the legend names Grafana gives the series.
struct PanelAnswer {
    label: String,
    /// `(legend name, series)`: the target's alias with `$tag_…` filled in, else the
    /// tag values joined.
    series: Vec<(String, Series)>,
}

impl PanelAnswer {
    /// Runs every query of the panel titled `title` in dashboard `file` for `view`.
    fn run(influx: &testkit::Influx1, view: &Macros, file: &str, title: &str) -> PanelAnswer {
        let dashboard = Dashboard::load_all()
            .into_iter()
            .find(|d| d.file == file)
            .unwrap_or_else(|| panic!("no dashboard {file}"));
        let panel = dashboard
            .panels()
            .into_iter()
            .find(|p| panel_title(p) == title)
            .unwrap_or_else(|| panic!("{file} has no panel {title:?}"))
            .clone();
        let label = format!("{} / {title:?}", dashboard.label());
        let mut answered = Vec::new();
        for target in targets(&panel) {
            let query = view
                .render(target["query"].as_str().unwrap_or(""))
                .unwrap_or_else(|why| panic!("{label}: {why}"));
            let alias = target["alias"].as_str().unwrap_or("");
            for s in series(influx, &query).unwrap_or_else(|why| panic!("{label}: {why}\n{query}"))
            {
                let mut name = alias.to_owned();
                for (key, value) in &s.tags {
                    name = name.replace(&format!("$tag_{key}"), value);
                }
                if name.is_empty() {
                    name = s.tags.values().cloned().collect::<Vec<_>>().join(" ");
                }
                answered.push((name, s));
            }
        }
        PanelAnswer {
            label,
            series: answered,
        }
    }

    /// A stat panel's one number (its only series' last value).
    fn single(&self) -> i64 {
        let [(_, s)] = &self.series[..] else {
            panic!(
                "{}: one series expected, got {:?}",
                self.label,
                self.series.len()
            );
        };
        let row = s
            .rows
            .last()
            .unwrap_or_else(|| panic!("{}: no row", self.label));
        let value = row.values().next().and_then(Value::as_f64);
        value.unwrap_or_else(|| panic!("{}: no number in {row:?}", self.label)) as i64
    }

    /// A stat panel's fields by name, over all its queries (each one's last row).
    fn columns(&self) -> Value {
        let mut fields = serde_json::Map::new();
        for (_, s) in &self.series {
            let row = s
                .rows
                .last()
                .unwrap_or_else(|| panic!("{}: no row", self.label));
            for (name, value) in row {
                let whole = value.as_f64().filter(|f| f.fract() == 0.0);
                fields.insert(
                    name.clone(),
                    whole.map_or(value.clone(), |f| json!(f as i64)),
                );
            }
        }
        Value::Object(fields)
    }

    /// Each series' last non-null value (a legend's or bar gauge's "last"), by name.
    fn last_by_tag(&self, tag: &str) -> BTreeMap<String, Value> {
        self.series
            .iter()
            .map(|(name, s)| {
                assert!(
                    s.tags.contains_key(tag),
                    "{}: {name} lacks {tag}",
                    self.label
                );
                let last = s
                    .rows
                    .iter()
                    .rev()
                    .filter_map(|row| row.values().find(|v| !v.is_null()))
                    .next()
                    .cloned()
                    .unwrap_or(Value::Null);
                (name.clone(), last)
            })
            .collect()
    }

    /// A table panel's rows as it sorts them (by `sort_by`, highest first, as the
    /// panel's `sortBy`), with `columns` in that order; whole-number floats compared
    /// as integers.
    fn table(&self, sort_by: &str, columns: &[&str]) -> Vec<Value> {
        // A table shows a series' tags as columns of each of its rows.
        let mut rows: Vec<BTreeMap<String, Value>> = self
            .series
            .iter()
            .flat_map(|(_, s)| {
                s.rows.iter().map(|row| {
                    let tags = s.tags.iter().map(|(k, v)| (k.clone(), json!(v)));
                    row.clone().into_iter().chain(tags).collect()
                })
            })
            .collect();
        let key = |row: &BTreeMap<String, Value>| row.get(sort_by).and_then(Value::as_f64);
        rows.sort_by(|a, b| key(b).partial_cmp(&key(a)).expect("numbers to sort by"));
        rows.into_iter()
            .map(|row| {
                Value::Array(
                    columns
                        .iter()
                        .map(|c| match row.get(*c) {
                            Some(Value::Number(n))
                                if n.as_f64().is_some_and(|f| f.fract() == 0.0) =>
                            {
                                json!(n.as_f64().unwrap() as i64)
                            }
                            Some(v) => v.clone(),
                            None => panic!("{}: no column {c} in {row:?}", self.label),
                        })
                        .collect(),
                )
            })
            .collect()
    }
}
