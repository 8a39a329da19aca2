//! 体检 on the wall board (issue 17): `stockpile serve` with a `[stress_test]` due soon
//! after start, readings through a real Mosquitto, and the board in headless Chromium.
//! Before the first run the board shows no stress-test panel; after it, the report's
//! weakest towns as `GET /api/v1/stress-test/latest` has them, each category by its name
//! in the board's language; compact, the panel is one line and nothing scrolls. An
//! English board's tile opens the town's page in English.

use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Deserialize;
use serde_json::Value;

use crate::board::publish_all;
use crate::common::{Deployment, Service};

/// The first run this long after start: time to open the board and see it without one.
const FIRST_AFTER_S: u64 = 20;
/// The board polls every 5 s; a change must show within a few polls on a busy machine.
const PAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Starting the service and its first stress test, on 2 cores shared with the suite.
const SERVICE_TIMEOUT: Duration = Duration::from_secs(90);
/// The water category's Chinese name; its English one is the registry's `name`.
const WATER_ZH: &str = "饮用水";
const WATER_EN: &str = "Drinking water";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_shows_the_last_stress_tests_weakest_towns_in_its_language() {
    let broker = testkit::Mosquitto::start();
    let deployment = deployment(&broker.url());
    let service = tokio::task::block_in_place(|| Service::start(&deployment.config()));
    let api = tokio::task::block_in_place(|| service.api_url());
    // Jingshan: 400,000 L for 30,000 people at 3 L, 4.4 days; at 15 L under the cut
    // 0.9 days. Donghua: 300,000 L for 20,000 people, 5 days; under the cut 1 day.
    let reading = |litres: u64| {
        let ts = chrono::Utc::now().timestamp_millis();
        format!(r#"{{"ts": {ts}, "stock": {{"water": {litres}}}}}"#)
    };
    publish_all(
        &broker,
        vec![
            (
                "stockpile/v1/jingshan/js-wh0/reading".into(),
                reading(400_000),
            ),
            (
                "stockpile/v1/donghua/dh-wh1/reading".into(),
                reading(300_000),
            ),
        ],
    )
    .await;

    let driver = tokio::task::block_in_place(testkit::ChromeDriver::start);
    let browser = Browser::open(&driver).await;
    no_panel_before_the_first_run(&browser, &api).await;
    let latest = first_report(&api).await;
    assert_eq!(latest["weakest"][0]["town"], "jingshan", "{latest:#}");
    for lang in ["zh", "en"] {
        board_lists_the_weakest_towns(&browser, &api, &latest, lang).await;
    }
    compact_board_says_it_in_one_line(&browser, &api, &latest).await;
    english_tile_opens_the_english_town_page(&browser, &api).await;
    browser.client.close().await.expect("the browser closes");
}

/// The test registry, its water named in Chinese too, and a stress test of two
/// scenarios due [`FIRST_AFTER_S`] after start.
fn deployment(broker_url: &str) -> Deployment {
    let deployment = Deployment::with_sections(
        &format!("url = \"{broker_url}\"\nclient_id = \"stockpile-stress-board\"\n"),
        &format!(
            "[stress_test]\nevery = \"1h\"\nfirst_after = \"{FIRST_AFTER_S}s\"\n\
             scenarios = [{{ name = \"water_cut\", water_cut = {{ water_need_l_per_person = 15 }} }},\n\
                          {{ name = \"surge\", population_surge = {{ factor = 2 }} }}]\n"
        ),
    );
    let registry = deployment.dir.path().join("registry.toml");
    let text = std::fs::read_to_string(&registry).expect("the registry");
    let named = format!("name = \"{WATER_EN}\"\n");
    assert!(text.contains(&named), "the test registry changed: {text}");
    let text = text.replacen(&named, &format!("{named}name_zh = \"{WATER_ZH}\"\n"), 1);
    std::fs::write(&registry, text).expect("write the registry");
    deployment
}

/// Before the first run (the API answers 404) the board shows its tiles and no panel.
async fn no_panel_before_the_first_run(browser: &Browser, api: &str) {
    browser.goto(&format!("{api}/")).await;
    let page = browser
        .wait_for("both towns' tiles", |p| p.tiles.len() == 2)
        .await;
    // Read after the page: no report now means none the page could have shown.
    let answer = reqwest::get(format!("{api}/api/v1/stress-test/latest"))
        .await
        .expect("the API answers");
    assert_eq!(
        answer.status(),
        404,
        "the stress test ran within {FIRST_AFTER_S} s of start, before the board was read"
    );
    let body: Value = answer.json().await.expect("a JSON error");
    assert_eq!(body["error"]["code"], "unknown_stress_test", "{body}");
    assert!(!page.stress.shown, "a panel without a report: {page:#?}");
}

/// The scheduled run's report, once the API has it.
async fn first_report(api: &str) -> Value {
    let deadline = Instant::now() + SERVICE_TIMEOUT;
    loop {
        let answer = reqwest::get(format!("{api}/api/v1/stress-test/latest"))
            .await
            .expect("the API answers");
        if answer.status() == 200 {
            return answer.json().await.expect("JSON");
        }
        assert!(
            Instant::now() < deadline,
            "no stress test within {SERVICE_TIMEOUT:?}: {}",
            answer.status()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The panel in `lang`: a row per weak town of the report, in its order, as a user reads
/// it; each town links to its page in the board's language.
async fn board_lists_the_weakest_towns(browser: &Browser, api: &str, latest: &Value, lang: &str) {
    let query = if lang == "en" { "?lang=en" } else { "" };
    browser.goto(&format!("{api}/{query}")).await;
    let weakest = latest["weakest"].as_array().expect("weakest");
    let expected: Vec<Vec<String>> = weakest.iter().map(|w| row_text(w, lang)).collect();
    let page = browser
        .wait_for("the stress-test panel", |p| {
            p.stress.shown && p.stress.rows.len() == weakest.len()
        })
        .await;
    let shown: Vec<Vec<String>> = page.stress.rows.iter().map(|r| r.cells.clone()).collect();
    assert_eq!(shown, expected, "{lang}: {page:#?}");
    for (row, weak) in page.stress.rows.iter().zip(weakest) {
        assert_eq!(row.town, weak["town"].as_str().unwrap());
        assert_eq!(row.href, format!("{api}/towns/{}{query}", row.town));
    }
    let title = if lang == "en" {
        "Stress test"
    } else {
        "体检"
    };
    assert!(page.stress.title.contains(title), "{:?}", page.stress.title);
    let ran = if lang == "en" { "ran " } else { "运行于 " };
    assert!(page.stress.when.starts_with(ran), "{:?}", page.stress.when);
}

/// A weak town's row as the board writes it: town, scenario, category, days against the
/// target, shortfall, and what the cluster's aid covers (all of it: said so).
fn row_text(weak: &Value, lang: &str) -> Vec<String> {
    let number = |key: &str| weak[key].as_f64();
    let unit = weak["unit"].as_str().unwrap();
    let category = match (weak["category"].as_str().unwrap(), lang) {
        ("water", "en") => WATER_EN,
        ("water", _) => WATER_ZH,
        (other, _) => panic!("a category the test registry lacks: {other}"),
    };
    let days_unit = if lang == "en" { "d" } else { "天" };
    let days = format!(
        "{} / {} {days_unit}",
        one_decimal(number("days").unwrap()),
        one_decimal(number("target_days").unwrap())
    );
    let covers_all = matches!((number("aid_covers"), number("shortfall")),
        (Some(covers), Some(short)) if short > 0.0 && covers >= short);
    let all = match (covers_all, lang) {
        (false, _) => "",
        (true, "en") => " (all)",
        (true, _) => "（全部）",
    };
    vec![
        weak["town_name"].as_str().unwrap().to_owned(),
        weak["scenario"].as_str().unwrap().to_owned(),
        category.to_owned(),
        days,
        amount(number("shortfall"), unit),
        amount(number("aid_covers"), unit) + all,
    ]
}

/// As the board rounds: to one decimal, no trailing `.0`.
fn one_decimal(n: f64) -> String {
    format!("{}", (n * 10.0).round() / 10.0)
}

/// A whole amount with thousands separated by commas, and its unit; `—` when none.
fn amount(n: Option<f64>, unit: &str) -> String {
    let Some(n) = n else {
        return "—".to_owned();
    };
    let digits = format!("{}", n.round().abs() as u64);
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if n.round() < 0.0 { "-" } else { "" };
    format!("{sign}{grouped} {unit}")
}

/// Compact: the panel is one line naming the weakest town, and the page does not scroll.
async fn compact_board_says_it_in_one_line(browser: &Browser, api: &str, latest: &Value) {
    browser.goto(&format!("{api}/?compact&lang=en")).await;
    let worst = latest["weakest"][0]["town_name"].as_str().unwrap();
    let page = browser
        .wait_for("the compact board's stress line", |p| {
            p.tiles.len() == 2 && p.stress.line.text.contains(worst)
        })
        .await;
    let line = &page.stress.line;
    assert!(line.text.starts_with("Stress test: "), "{line:?}");
    assert!(line.text.contains(WATER_EN), "{line:?}");
    assert!(
        line.height > 0.0 && line.height < 1.5 * line.line_height,
        "more than one line: {line:?}"
    );
    assert_eq!(page.stress.table_height, 0.0, "the table shows: {page:#?}");
    assert!(
        page.screen.scroll_height <= page.screen.inner_height,
        "the compact board scrolls: {:?}",
        page.screen
    );
}

/// An English board's tile links to `/towns/{id}?lang=en`, and the page it opens is in
/// English, its category named as the registry names it in English.
async fn english_tile_opens_the_english_town_page(browser: &Browser, api: &str) {
    browser.goto(&format!("{api}/?lang=en")).await;
    let page = browser
        .wait_for("the English board's tiles", |p| p.tiles.len() == 2)
        .await;
    for tile in &page.tiles {
        assert_eq!(tile.href, format!("{api}/towns/{}?lang=en", tile.town));
    }
    browser
        .client
        .find(Locator::Css(".tile[data-town=\"jingshan\"]"))
        .await
        .expect("jingshan's tile")
        .click()
        .await
        .expect("click the tile");
    let deadline = Instant::now() + PAGE_TIMEOUT;
    loop {
        let town: Value = browser.run(READ_TOWN_PAGE).await;
        if town["water"] == WATER_EN {
            assert_eq!(town["path"], "/towns/jingshan", "{town}");
            assert_eq!(town["lang"], "en", "{town}");
            assert_eq!(town["board"], format!("{api}/?lang=en"), "{town}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the town page in English did not show: {town}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const READ_TOWN_PAGE: &str = r##"
const title = document.querySelector("[data-category='water'] .title");
const board = document.getElementById("board-link");
return { path: location.pathname, lang: document.documentElement.lang,
  water: title && title.firstChild ? title.firstChild.textContent : null,
  board: board ? board.href : null };
"##;

#[derive(Debug, Deserialize)]
struct BoardView {
    screen: ScreenView,
    tiles: Vec<TileView>,
    stress: StressView,
}

#[derive(Debug, Deserialize)]
struct ScreenView {
    inner_height: f64,
    scroll_height: f64,
}

#[derive(Debug, Deserialize)]
struct TileView {
    town: String,
    href: String,
}

#[derive(Debug, Deserialize)]
struct StressView {
    /// The panel takes room on the page.
    shown: bool,
    title: String,
    when: String,
    rows: Vec<StressRow>,
    table_height: f64,
    line: LineView,
}

#[derive(Debug, Deserialize)]
struct StressRow {
    town: String,
    href: String,
    cells: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct LineView {
    text: String,
    height: f64,
    line_height: f64,
}

const READ_BOARD: &str = r##"
const byId = id => document.getElementById(id);
const line = byId("stress-line");
return {
  screen: { inner_height: innerHeight, scroll_height: document.documentElement.scrollHeight },
  tiles: Array.from(document.querySelectorAll(".tile"), t => ({ town: t.dataset.town, href: t.href })),
  stress: {
    shown: byId("stress").offsetHeight > 0,
    title: byId("stress-title").textContent,
    when: byId("stress-when").textContent,
    rows: Array.from(document.querySelectorAll("#stress-rows tr"), r => ({
      town: r.dataset.town, href: r.querySelector("a").href,
      cells: Array.from(r.cells, c => c.textContent) })),
    table_height: byId("stress-table").offsetHeight,
    line: { text: line.offsetHeight > 0 ? line.textContent : "", height: line.offsetHeight,
      line_height: parseFloat(getComputedStyle(line).lineHeight) || 0 },
  },
};
"##;

/// One Chromium window on the board.
struct Browser {
    client: Client,
}

impl Browser {
    async fn open(driver: &testkit::ChromeDriver) -> Browser {
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(driver.capabilities())
            .connect(&driver.url())
            .await
            .unwrap_or_else(|e| panic!("ChromeDriver could not start Chromium: {e}"));
        client
            .set_window_size(1600, 900)
            .await
            .expect("resize the window");
        Browser { client }
    }

    async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("cannot load {url}: {e}"));
    }

    async fn run<V: for<'de> Deserialize<'de>>(&self, script: &str) -> V {
        let value = self
            .client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("reading the page: {e}"));
        serde_json::from_value(value.clone())
            .unwrap_or_else(|e| panic!("unexpected page shape ({e}): {value}"))
    }

    /// Reads the board until `done` holds, for up to [`PAGE_TIMEOUT`].
    async fn wait_for(&self, what: &str, done: impl Fn(&BoardView) -> bool) -> BoardView {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        loop {
            let page: BoardView = self.run(READ_BOARD).await;
            if done(&page) {
                return page;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {PAGE_TIMEOUT:?} waiting for {what}; the page shows {page:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
