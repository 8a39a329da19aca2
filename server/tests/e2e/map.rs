//! 一图 and the compact board on a wall screen: `stockpile serve` runs the demo registry
//! (343 towns, 1,739 facilities) fed over a real Mosquitto, and headless Chromium at
//! 1920×1080 shows every town on one screen, in the compact board and on the map, in the
//! API's colours; a tile says why it is amber ("below target in N h", "预计 N 小时后低于
//! 目标"), and the town's Chinese officer is mailed the category's Chinese name, through
//! a real SMTP server. The screenshots are the README's docs/map.png and
//! docs/board-compact.png.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::board::publish_all;
use crate::common::Service;

/// A wall display's screen.
const SCREEN: (u32, u32) = (1920, 1080);

/// The town whose food runs down: the demo's first, whose officers read Chinese.
const FORECAST_TOWN: &str = "dongcheng-fengsheng";
/// Its food, in days, an hour apart: falling 0.02 days an hour, below the 3.5-day
/// warning line at the last, so the forecast says 21 h to the 3-day target.
const FOOD_DAYS: [f64; 4] = [3.48, 3.46, 3.44, 3.42];
const FORECAST_HOURS: &str = "21";
/// The demo's daily needs per person (demo/registry.toml), and whom they apply to.
const NEEDS: [(&str, f64, bool); 5] = [
    ("water", 3.0, false),
    ("food", 3.0, false),
    ("infant-formula", 0.15, true),
    ("medical-kit", 0.02, false),
    ("blanket", 0.34, false),
];

/// Ingesting the city and raising its alerts on 2 cores shared with the suite.
const SERVICE_TIMEOUT: Duration = Duration::from_secs(120);
/// The pages poll every 5 s.
const PAGE_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wall_screen_shows_every_town_on_the_map_and_the_compact_board_in_the_apis_colours() {
    let broker = testkit::Mosquitto::builder().max_queued(10_000).start();
    let smtp = testkit::SmtpServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let city = DemoCity::read();
    std::fs::write(
        dir.path().join("districts.geojson"),
        city.district_boxes().to_string(),
    )
    .expect("write the outlines");
    let config = demo_deployment(dir.path(), &broker.url(), &smtp.url());
    let service = tokio::task::block_in_place(|| Service::start(&config));
    let api = service.api_url();

    publish_all(&broker, city.readings()).await;
    let towns = towns_once(&api, "every town reported and the forecast made", |towns| {
        towns.iter().all(|t| t.status != "unknown")
            && towns
                .iter()
                .any(|t| t.id == FORECAST_TOWN && t.first_reason() == Some("forecast"))
    })
    .await;
    assert_eq!(towns.len(), city.towns.len());
    for status in ["critical", "warning", "ok"] {
        assert!(
            towns.iter().any(|t| t.status == status),
            "no {status} town to show: {towns:#?}"
        );
    }

    let driver = tokio::task::block_in_place(testkit::ChromeDriver::start);
    let browser = Screen::open(&driver).await;
    compact_board_fits_every_town(&browser, &api).await;
    forecast_tile_says_when_in_both_languages(&browser, &api).await;
    map_places_every_town(&browser, &api).await;
    browser.client.close().await.expect("the browser closes");

    // The forecast town's officers read Chinese: their mail names the category 食品.
    let mail = tokio::task::block_in_place(|| mail_about(&smtp, "丰盛街道"));
    assert!(
        mail.body_text.contains("食品") && !mail.body_text.contains("Food"),
        "{}\n{}",
        mail.subject,
        mail.body_text
    );
}

/// `/?compact` at 1920×1080: every town a tile, nothing to scroll, each tile in its
/// town's colour as the API has it.
async fn compact_board_fits_every_town(browser: &Screen, api: &str) {
    browser.goto(&format!("{api}/?compact")).await;
    let towns = towns_now(api).await;
    let page = browser
        .wait_for(
            "every town on the compact board",
            READ_BOARD,
            |p: &BoardView| p.tiles.len() == towns.len(),
        )
        .await;
    assert_fits(&page.screen);
    assert_colours_match(api, browser, READ_BOARD, |p: &BoardView| {
        p.tiles
            .iter()
            .map(|t| (t.town.clone(), t.status.clone()))
            .collect()
    })
    .await;
    // Every tile is on screen, none cut off by the screen's edge.
    let (w, h) = (f64::from(SCREEN.0), f64::from(SCREEN.1));
    let off: Vec<_> = page
        .tiles
        .iter()
        .filter(|t| t.right > w + 0.5 || t.bottom > h + 0.5)
        .collect();
    assert!(off.is_empty(), "tiles off the screen: {off:#?}");
    browser.screenshot("board-compact.png").await;
}

/// The tile of the town whose food runs down says when it crosses the target, in the
/// board's language, naming the category as the registry does in that language, and
/// links to the town's page in that language.
async fn forecast_tile_says_when_in_both_languages(browser: &Screen, api: &str) {
    for (query, expected) in [
        (
            "lang=en",
            format!("Food below target in {FORECAST_HOURS} h"),
        ),
        ("", format!("食品 预计 {FORECAST_HOURS} 小时后低于目标")),
    ] {
        browser.goto(&format!("{api}/?{query}")).await;
        let page = browser
            .wait_for("the forecast town's tile", READ_BOARD, |p: &BoardView| {
                p.tiles.iter().any(|t| t.town == FORECAST_TOWN)
            })
            .await;
        let tile = page
            .tiles
            .iter()
            .find(|t| t.town == FORECAST_TOWN)
            .expect("the tile");
        assert_eq!(tile.status, "warning", "{tile:#?}");
        assert!(tile.reason.starts_with(&expected), "{tile:#?}");
        // The town's page in the board's language.
        let lang = if query.is_empty() { "" } else { "?lang=en" };
        assert_eq!(
            tile.href,
            format!("{api}/towns/{FORECAST_TOWN}{lang}"),
            "{tile:#?}"
        );
    }
}

/// `/map`: one mark per town, nothing to scroll, colours as the API's, facilities
/// marked, the worst towns labelled.
async fn map_places_every_town(browser: &Screen, api: &str) {
    browser.goto(&format!("{api}/map")).await;
    let towns = towns_now(api).await;
    let page = browser
        .wait_for("every town on the map", READ_MAP, |p: &MapView| {
            p.towns.len() == towns.len()
        })
        .await;
    assert_fits(&page.screen);
    assert_colours_match(api, browser, READ_MAP, |p: &MapView| {
        p.towns
            .iter()
            .map(|t| (t.town.clone(), t.status.clone()))
            .collect()
    })
    .await;
    // The colours are the status colours of the legend, one per status.
    let mut fills: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for t in &page.towns {
        fills.entry(&t.status).or_default().push(&t.fill);
    }
    for (status, colours) in &fills {
        assert!(
            colours.iter().all(|c| c == &colours[0]),
            "{status}: {colours:?}"
        );
    }
    assert_eq!(
        fills
            .values()
            .map(|c| c[0])
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        fills.len(),
        "two statuses share a colour: {fills:?}"
    );
    let layout: Value = get_json(&format!("{api}/api/v1/map")).await;
    assert_eq!(
        page.facilities,
        layout["facilities"].as_array().expect("facilities").len(),
        "a mark per facility"
    );
    assert!(
        page.labels > 0 && page.labels <= 12,
        "{} labels",
        page.labels
    );
    // The configured outlines, one per demo district, drawn under the towns.
    let outlines: Value = get_json(&format!("{api}/api/v1/map/districts")).await;
    assert_eq!(outlines["features"].as_array().map(Vec::len), Some(16));
    assert_eq!(page.districts, 16);
    assert!(
        page.links
            .iter()
            .all(|l| l.starts_with(&format!("{api}/towns/"))),
        "{:?}",
        &page.links[..3]
    );
    browser.screenshot("map.png").await;
}

/// The page's tiles or marks in the API's colours: read until they agree (the page
/// polls; the API's figures may move between two reads), for up to [`PAGE_TIMEOUT`].
async fn assert_colours_match<V: for<'de> Deserialize<'de> + std::fmt::Debug>(
    api: &str,
    browser: &Screen,
    script: &str,
    shown: impl Fn(&V) -> BTreeMap<String, String>,
) {
    let deadline = Instant::now() + PAGE_TIMEOUT;
    loop {
        let expected: BTreeMap<String, String> = towns_now(api)
            .await
            .into_iter()
            .map(|t| (t.id, t.status))
            .collect();
        let page: V = browser.read(script).await;
        let shown = shown(&page);
        if shown == expected {
            return;
        }
        let differ: Vec<_> = expected
            .iter()
            .filter(|(id, status)| shown.get(*id) != Some(*status))
            .take(5)
            .collect();
        assert!(
            Instant::now() < deadline,
            "the page's colours differ from the API's, e.g. {differ:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn assert_fits(screen: &ScreenView) {
    assert_eq!(
        (screen.inner_width, screen.inner_height),
        SCREEN,
        "the viewport"
    );
    assert!(
        screen.scroll_width <= screen.inner_width && screen.scroll_height <= screen.inner_height,
        "the page scrolls: {screen:?}"
    );
}

/// A config for the demo registry, alerts mailed at once to a real SMTP server.
fn demo_deployment(dir: &Path, broker_url: &str, smtp_url: &str) -> PathBuf {
    let registry = demo_dir().join("registry.toml");
    let config = format!(
        "registry = \"{}\"\n[mqtt]\nurl = \"{broker_url}\"\nclient_id = \"stockpile-map-e2e\"\n\
         [store]\npath = \"stockpile.db\"\n[api]\nlisten = \"127.0.0.1:0\"\npublic_read = true\n\
         [alerts]\ngroup_wait = \"0s\"\n[smtp]\nurl = \"{smtp_url}\"\nfrom = \"Stockpile <alerts@example.org>\"\n\
         [board]\ndistricts_geojson = \"districts.geojson\"\n[log]\nlevel = \"info\"\n",
        registry.display()
    );
    let path = dir.join("stockpile.toml");
    std::fs::write(&path, config).expect("write the config");
    path
}

fn demo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo")
}

/// The demo's towns and facilities, from its CSV tables.
struct DemoCity {
    /// Id, residents, infants.
    towns: Vec<(String, f64, f64)>,
    /// District, lat, lon of each town.
    places: Vec<(String, f64, f64)>,
    /// Id, town, kind, capacity (water points' litres, power units' fuel).
    facilities: Vec<(String, String, String, f64)>,
}

impl DemoCity {
    fn read() -> DemoCity {
        let rows = |file: &str| -> Vec<BTreeMap<String, String>> {
            let text = std::fs::read_to_string(demo_dir().join(file)).expect("a demo table");
            let mut lines = text.lines();
            let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
            lines
                .map(|l| {
                    header
                        .iter()
                        .zip(l.split(','))
                        .map(|(k, v)| ((*k).to_owned(), v.to_owned()))
                        .collect()
                })
                .collect()
        };
        let number = |s: &str| s.parse::<f64>().unwrap_or(0.0);
        let places = rows("towns.csv")
            .iter()
            .map(|r| (r["district"].clone(), number(&r["lat"]), number(&r["lon"])))
            .collect();
        let towns = rows("towns.csv")
            .into_iter()
            .map(|r| {
                let infants = r["groups"]
                    .split(';')
                    .find_map(|g| g.strip_prefix("infants="))
                    .map_or(0.0, number);
                (r["id"].clone(), number(&r["population"]), infants)
            })
            .collect();
        let facilities = rows("facilities.csv")
            .into_iter()
            .map(|r| {
                let capacity = number(&r["capacity_l"]) + number(&r["fuel_capacity_l"]);
                (
                    r["id"].clone(),
                    r["town"].clone(),
                    r["kind"].clone(),
                    capacity,
                )
            })
            .collect();
        DemoCity {
            towns,
            places,
            facilities,
        }
    }

    /// Outlines for the map: each district as the box around its towns (the demo's
    /// districts have no real borders).
    fn district_boxes(&self) -> Value {
        let mut boxes: BTreeMap<&str, [f64; 4]> = BTreeMap::new();
        for (district, lat, lon) in &self.places {
            let b = boxes.entry(district).or_insert([*lat, *lon, *lat, *lon]);
            *b = [
                b[0].min(*lat),
                b[1].min(*lon),
                b[2].max(*lat),
                b[3].max(*lon),
            ];
        }
        let features: Vec<Value> = boxes
            .iter()
            .map(|(name, [s, w, n, e])| {
                let ring = json!([[w, s], [e, s], [e, n], [w, n], [w, s]]);
                json!({"type": "Feature", "properties": {"name": name},
                       "geometry": {"type": "Polygon", "coordinates": [ring]}})
            })
            .collect();
        json!({"type": "FeatureCollection", "features": features})
    }

    /// One reading per facility: most towns hold 8 days of everything, every 7th town 2
    /// days (critical), the next 3.3 (warning), every 11th has a water point's pump
    /// down; the forecast town's food runs down over three hours.
    fn readings(&self) -> Vec<(String, String)> {
        let now = chrono::Utc::now();
        let mut out = Vec::new();
        for (i, (town, residents, infants)) in self.towns.iter().enumerate() {
            let days = match i % 7 {
                3 => 2.0,
                5 => 3.3,
                _ => 8.0,
            };
            let mine: Vec<_> = self.facilities.iter().filter(|f| &f.1 == town).collect();
            let warehouses = mine.iter().filter(|f| f.2 == "warehouse").count().max(1) as f64;
            let stock = |days: f64| -> Value {
                NEEDS
                    .iter()
                    .map(|(c, need, infant)| {
                        let people = if *infant { *infants } else { *residents };
                        (
                            (*c).to_owned(),
                            json!((days * people * need / warehouses).ceil()),
                        )
                    })
                    .collect::<serde_json::Map<_, _>>()
                    .into()
            };
            for (n, (id, _, kind, capacity)) in mine.iter().enumerate() {
                let topic = format!("stockpile/v1/{town}/{id}/reading");
                let ts = now.timestamp_millis();
                let payload = match kind.as_str() {
                    "warehouse" if town == FORECAST_TOWN => {
                        for (h, food) in FOOD_DAYS.iter().enumerate() {
                            let mut held = stock(days);
                            held["food"] = json!(food * residents * 3.0 / warehouses);
                            let at = now - chrono::Duration::hours(3 - h as i64);
                            let reading = json!({"ts": at.timestamp_millis(), "stock": held});
                            out.push((topic.clone(), reading.to_string()));
                        }
                        continue;
                    }
                    "warehouse" => json!({"ts": ts, "stock": stock(days)}),
                    "water_point" => {
                        let pump = if i % 11 == 4 && n == 1 { "fault" } else { "ok" };
                        json!({"ts": ts, "water": {"level_l": capacity * 0.2, "pump": pump, "potable": true}})
                    }
                    // In everyday use, nobody inside: the demo's shelters (issue 16).
                    "shelter" => json!({"ts": ts, "shelter": {"occupancy": 0, "mode": "normal"}}),
                    _ => {
                        json!({"ts": ts, "power": {"fuel_l": capacity, "battery_pct": 96, "state": "standby"}})
                    }
                };
                out.push((topic, payload.to_string()));
            }
        }
        out
    }
}

#[derive(Debug, Deserialize)]
struct TownView {
    id: String,
    status: String,
    reasons: Vec<Value>,
}

impl TownView {
    fn first_reason(&self) -> Option<&str> {
        self.reasons.first()?["kind"].as_str()
    }
}

async fn get_json<T: for<'de> Deserialize<'de>>(url: &str) -> T {
    reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not the JSON expected: {e}"))
}

async fn towns_now(api: &str) -> Vec<TownView> {
    #[derive(Deserialize)]
    struct List {
        towns: Vec<TownView>,
    }
    get_json::<List>(&format!("{api}/api/v1/towns")).await.towns
}

/// The towns once `done` holds of them, for up to [`SERVICE_TIMEOUT`].
async fn towns_once(api: &str, what: &str, done: impl Fn(&[TownView]) -> bool) -> Vec<TownView> {
    let deadline = Instant::now() + SERVICE_TIMEOUT;
    loop {
        let towns = towns_now(api).await;
        if done(&towns) {
            return towns;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            towns.iter().find(|t| t.id == FORECAST_TOWN)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The first mail to the town's officers (its name in the subject).
fn mail_about(smtp: &testkit::SmtpServer, town_name: &str) -> testkit::ReceivedMail {
    let deadline = Instant::now() + SERVICE_TIMEOUT;
    loop {
        if let Some(mail) = smtp
            .messages()
            .into_iter()
            .find(|m| m.subject.contains(town_name))
        {
            return mail;
        }
        assert!(
            Instant::now() < deadline,
            "no mail about {town_name} among {} mails",
            smtp.messages().len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[derive(Debug, Deserialize)]
struct ScreenView {
    inner_width: u32,
    inner_height: u32,
    scroll_width: u32,
    scroll_height: u32,
}

#[derive(Debug, Deserialize)]
struct BoardView {
    screen: ScreenView,
    tiles: Vec<TileView>,
}

#[derive(Debug, Deserialize)]
struct TileView {
    town: String,
    status: String,
    reason: String,
    href: String,
    right: f64,
    bottom: f64,
}

#[derive(Debug, Deserialize)]
struct MapView {
    screen: ScreenView,
    towns: Vec<MarkView>,
    facilities: usize,
    labels: usize,
    districts: usize,
    links: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct MarkView {
    town: String,
    status: String,
    /// The mark's fill as drawn (computed style).
    fill: String,
}

const READ_SCREEN: &str = r##"
const screen = { inner_width: innerWidth, inner_height: innerHeight,
  scroll_width: document.documentElement.scrollWidth,
  scroll_height: document.documentElement.scrollHeight };
"##;

const READ_BOARD: &str = r##"
return { screen, tiles: Array.from(document.querySelectorAll(".tile"), t => {
  const box = t.getBoundingClientRect();
  return { town: t.dataset.town, status: t.dataset.status, href: t.href,
    reason: t.querySelector(".reason").textContent, right: box.right, bottom: box.bottom };
}) };
"##;

const READ_MAP: &str = r##"
return { screen,
  towns: Array.from(document.querySelectorAll("#map circle.town"), c => ({
    town: c.dataset.town, status: c.dataset.status, fill: getComputedStyle(c).fill })),
  facilities: document.querySelectorAll("#map .facility").length,
  labels: document.querySelectorAll("#map .label").length,
  districts: document.querySelectorAll("#map polygon.district").length,
  links: Array.from(document.querySelectorAll("#map a"), a => a.href.baseVal
    ? new URL(a.href.baseVal, location.href).href : "") };
"##;

/// One Chromium window the size of a wall screen.
struct Screen {
    client: Client,
}

impl Screen {
    async fn open(driver: &testkit::ChromeDriver) -> Screen {
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(driver.capabilities())
            .connect(&driver.url())
            .await
            .unwrap_or_else(|e| panic!("ChromeDriver could not start Chromium: {e}"));
        // The window's frame (if any) on top of the viewport the page gets.
        client
            .set_window_size(SCREEN.0, SCREEN.1)
            .await
            .expect("resize");
        let inner = client
            .execute(
                "return [outerWidth - innerWidth, outerHeight - innerHeight]",
                vec![],
            )
            .await
            .expect("the page answers");
        let frame = |i: usize| inner[i].as_u64().unwrap_or(0) as u32;
        client
            .set_window_size(SCREEN.0 + frame(0), SCREEN.1 + frame(1))
            .await
            .expect("resize");
        Screen { client }
    }

    async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("cannot load {url}: {e}"));
    }

    async fn read<V: for<'de> Deserialize<'de>>(&self, script: &str) -> V {
        let value = self
            .client
            .execute(&format!("{READ_SCREEN}{script}"), vec![])
            .await
            .unwrap_or_else(|e| panic!("reading the page: {e}"));
        serde_json::from_value(value.clone())
            .unwrap_or_else(|e| panic!("unexpected page shape ({e}): {value}"))
    }

    async fn wait_for<V: for<'de> Deserialize<'de> + std::fmt::Debug>(
        &self,
        what: &str,
        script: &str,
        done: impl Fn(&V) -> bool,
    ) -> V {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        loop {
            let page: V = self.read(script).await;
            if done(&page) {
                return page;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {PAGE_TIMEOUT:?} waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Writes the screen to docs/{name}, for the README.
    async fn screenshot(&self, name: &str) {
        // The clock is the only thing that differs between runs: fixed, the committed
        // picture changes only when the page does.
        self.client
            .execute(
                r#"document.getElementById("clock").textContent = "08:00:00""#,
                vec![],
            )
            .await
            .expect("the page answers");
        let png = self.client.screenshot().await.expect("a screenshot");
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../docs")
            .join(name);
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

/// A wrong outline file is found at start-up and named with its place, by
/// `check-config` and by `serve`, which does not start.
#[test]
fn a_missing_or_invalid_districts_file_stops_the_start_with_its_place_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("points.geojson"),
        r#"{"type": "FeatureCollection", "features": [
             {"type": "Feature", "geometry": {"type": "Point", "coordinates": [116.4, 39.9]}}]}"#,
    )
    .expect("write");
    std::fs::write(dir.path().join("broken.geojson"), "{\"type\": \"Feature").expect("write");
    let cases = [
        ("missing.geojson", "cannot read "),
        (
            "points.geojson",
            "points.geojson: features[0].geometry.type: expected \"Polygon\" or \"MultiPolygon\", got \"Point\"",
        ),
        (
            "broken.geojson",
            "broken.geojson: not JSON: EOF while parsing a string at line 1",
        ),
    ];
    for (file, says) in cases {
        let config = format!(
            "registry = \"{}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n[store]\npath = \"x.db\"\n\
             [board]\ndistricts_geojson = \"{file}\"\n",
            demo_dir().join("registry.toml").display()
        );
        std::fs::write(dir.path().join("stockpile.toml"), config).expect("write");
        for command in ["check-config", "serve --config"] {
            let output = std::process::Command::new(env!("CARGO_BIN_EXE_stockpile"))
                .args(command.split(' '))
                .arg("stockpile.toml")
                .current_dir(dir.path())
                .env_clear()
                .output()
                .expect("run stockpile");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_ne!(output.status.code(), Some(0), "{command} {file}: {stderr}");
            let at = "stockpile.toml:7: board.districts_geojson: ";
            assert!(
                stderr.contains(at) && stderr.contains(says),
                "{command} {file}: want {at:?} and {says:?} in {stderr}"
            );
        }
    }
}
