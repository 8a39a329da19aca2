//! A shelter counted by hand (issues 15 and 16, docs/design.md#counts-by-hand and
//! #shelters), through the built `stockpile serve`: an officer's
//! `POST /api/v1/facilities/{id}/readings` with `{"shelter": …}` is stored as a manual
//! reading, makes the town's sheltered people come from its shelters and moves its
//! days, reaches InfluxDB tagged `source=manual`; a count over the shelter's capacity
//! is refused with the MQTT reject reason and changes nothing.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};

use crate::common::Service;

const OFFICER: (&str, &str) = ("li-wei", "officer-tiantan-shelter-4e8a90");
const DATABASE: &str = "stockpile";
const WAIT: Duration = Duration::from_secs(60);

/// Tiantan: 1,000 residents, 12,000 L of water (four days), a gym for 1,000 people.
const REGISTRY: &str = r#"
[target]
days = 3.0
warn_days = 3.5

[[category]]
id = "water"
name = "Drinking water"
unit = "L"
daily_need = 3.0

[[town]]
id = "tiantan"
name = "天坛街道"
district = "dongcheng"
cluster = "c01"
population = 1000

[[facility]]
id = "tt-wh1"
town = "tiantan"
kind = "warehouse"

[[facility]]
id = "tt-gym"
town = "tiantan"
kind = "shelter"
name = "天坛体育馆"
capacity = 1000
dual_use = "gym"
"#;

/// The API of the running service, called as the officer.
struct Api {
    url: String,
    client: reqwest::Client,
}

impl Api {
    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request
            .bearer_auth(OFFICER.1)
            .send()
            .await
            .expect("the API answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("status {status}: not JSON ({e}): {text}"));
        (status, body)
    }

    async fn post_count(&self, facility: &str, body: Value) -> (u16, Value) {
        let url = format!("{}/api/v1/facilities/{facility}/readings", self.url);
        self.send(self.client.post(url).json(&body)).await
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self
            .send(self.client.get(format!("{}{path}", self.url)))
            .await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }
}

/// A count made a minute ago (or `ago_s` seconds), as the officer types it.
fn shelter_count(occupancy: u64, mode: &str, ago_s: i64) -> Value {
    let ts = (Utc::now() - chrono::Duration::seconds(ago_s)).to_rfc3339();
    json!({"ts": ts, "shelter": {"occupancy": occupancy, "mode": mode}})
}

fn assert_days(town: &Value, people: f64) {
    let want = 12_000.0 / (people * 3.0);
    let got = town["worst_days"].as_f64().expect("worst_days");
    assert!((got - want).abs() < 0.01, "worst_days {got}, want {want}");
}

#[test]
fn an_officers_shelter_count_is_stored_as_manual_and_moves_the_towns_days() {
    let influx = testkit::Influx1::start();
    influx.create_database(DATABASE);
    let broker = testkit::Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("registry.toml"), REGISTRY).unwrap();
    let config = dir.path().join("stockpile.toml");
    std::fs::write(
        &config,
        format!(
            "registry = \"registry.toml\"\n\
             [mqtt]\nurl = \"{}\"\nclient_id = \"stockpile-manual-shelter\"\n\
             [store]\npath = \"stockpile.db\"\n\
             [influx]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"{DATABASE}\"\n\
             [api]\nlisten = \"127.0.0.1:0\"\npublic_read = true\n\
             [[api.tokens]]\nname = \"{}\"\nrole = \"officer\"\ntoken = \"{}\"\ntowns = [\"tiantan\"]\n\
             [log]\nlevel = \"info\"\n",
            broker.url(),
            influx.url(),
            OFFICER.0,
            OFFICER.1
        ),
    )
    .unwrap();
    let service = Service::start(&config);
    let api = Api {
        url: service.api_url(),
        client: reqwest::Client::new(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // The warehouse counted by hand too, and 100 people the officer typed in.
        let stock = json!({"ts": Utc::now().to_rfc3339(), "stock": {"water": 12_000}});
        let (status, body) = api.post_count("tt-wh1", stock).await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = api
            .send(
                api.client
                    .put(format!("{}/api/v1/towns/tiantan/sheltered", api.url))
                    .json(&json!({"sheltered": 100})),
            )
            .await;
        assert!(status < 300, "typing the sheltered figure: {status} {body}");
        let town = api.get("/api/v1/towns/tiantan").await;
        assert_eq!(
            (&town["sheltered"], &town["sheltered_from"]),
            (&json!(100), &json!("typed"))
        );
        assert_days(&town, 1100.0);

        // The gym opens; the officer counts 300 people at the door.
        let (status, stored) = api
            .post_count("tt-gym", shelter_count(300, "open", 60))
            .await;
        assert_eq!(status, 201, "{stored}");
        assert_eq!(
            (&stored["stored"], &stored["entered_by"]),
            (&json!(1), &json!(OFFICER.0))
        );
        // A 201 means committed and applied: the town has it at once.
        let town = api.get("/api/v1/towns/tiantan").await;
        assert_eq!(town["sheltered"], 300, "{town}");
        assert_eq!(town["sheltered_from"], "shelters");
        assert_eq!(town["sheltered_typed"], 100);
        assert_days(&town, 1300.0);
        let gym = &town["shelters"][0];
        assert_eq!(
            (&gym["facility"], &gym["occupancy"], &gym["mode"]),
            (&json!("tt-gym"), &json!(300), &json!("open"))
        );
        let facility = api.get("/api/v1/facilities/tt-gym").await;
        assert_eq!(facility["latest_source"]["source"], "manual", "{facility}");
        assert_eq!(facility["latest_source"]["entered_by"], OFFICER.0);
        assert_eq!(facility["latest"]["shelter"]["occupancy"], 300);
        let latest_ts = facility["latest"]["ts"].clone();

        // 1,200 at the door of a gym for 1,000: refused as a gateway's reading would
        // be, nothing stored, nothing moved.
        let (status, refused) = api
            .post_count("tt-gym", shelter_count(1200, "open", 0))
            .await;
        assert_eq!(status, 400, "{refused}");
        assert_eq!(refused["error"]["code"], "rejected_readings");
        let rejected = &refused["error"]["rejected"];
        assert_eq!(rejected.as_array().map(Vec::len), Some(1), "{refused}");
        assert_eq!(rejected[0]["reason"], "over_capacity");
        assert!(
            rejected[0]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("1200") && d.contains("1000")),
            "{refused}"
        );
        // A day's counts with one over capacity: the whole count is refused, the good
        // one with it, so the officer corrects and resends it all.
        let day = json!([
            shelter_count(350, "open", 30),
            shelter_count(1001, "open", 0)
        ]);
        let (status, refused) = api.post_count("tt-gym", day).await;
        assert_eq!(status, 400, "{refused}");
        assert_eq!(refused["error"]["rejected"][0]["reason"], "over_capacity");
        assert!(
            refused["error"]["rejected"][0]["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("element [1]")),
            "{refused}"
        );
        let town = api.get("/api/v1/towns/tiantan").await;
        assert_eq!(town["sheltered"], 300);
        assert_days(&town, 1300.0);
        let facility = api.get("/api/v1/facilities/tt-gym").await;
        assert_eq!(facility["latest"]["ts"], latest_ts);
        assert_eq!(facility["latest"]["shelter"]["occupancy"], 300);
    });

    // InfluxDB has the one count, tagged manual, and nothing of the refused one.
    let query = "SELECT \"occupancy\", \"mode\", \"source\" FROM \"shelter\"";
    let deadline = Instant::now() + WAIT;
    let rows = loop {
        let answer = testkit::http::get(
            &format!("{}/query", influx.url()),
            &[("db", DATABASE), ("q", query)],
        )
        .json();
        let rows = answer["results"][0]["series"][0]["values"].clone();
        if rows.is_array() {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "no shelter point in InfluxDB: {answer}; the service said:\n{}",
            service.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let points: Vec<Value> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|row| json!([row[1], row[2], row[3]]))
        .collect();
    assert_eq!(points, [json!([300, "open", "manual"])]);
}
