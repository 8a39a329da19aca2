//! The town page (`/towns/{id}`) as a town officer uses it, in headless Chromium driven
//! over WebDriver (ChromeDriver), against a real `stockpile serve` fed through a real
//! Mosquitto: the officer signs in, types a count for a warehouse counted by hand, and
//! the town's days change on the page and on the wall board's tile, while the API shows
//! the figure as manual with its author; an officer of another town is refused a count
//! there (the API's 403, in words) and records the transfer a mutual-aid suggestion
//! fills in; on a phone-sized window nothing scrolls sideways. The page's screenshot is
//! written to `docs/town.png` for the README.

use std::path::Path;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::common::Service;

/// Officer of jingshan, the town whose page is opened.
const OFFICER: (&str, &str) = ("li.wei", "officer-jingshan-town-41ad9c");
/// Officer of donghua, the cluster's town with water to spare.
const OTHER_OFFICER: (&str, &str) = ("zhao.min", "officer-donghua-town-7e20b5");
const ADMIN: &str = "admin-town-page-93c1e2";

/// Jingshan: 10,000 people need 30,000 L of water a day. Its gateway warehouse holds
/// 30,000 L (1.0 day); its store counted by hand has never been counted (it counts as
/// empty) until the officer types [`COUNTED_L`], which makes 75,000 L: 2.5 days.
const GATEWAY_WATER_L: u64 = 30_000;
const COUNTED_L: u64 = 45_000;
/// Donghua's 300,000 L for 10,000 people (10 days): it can spare what jingshan lacks
/// to its three days after the count and with its sheltered people, 112,500 − 75,000 L.
const DONOR_WATER_L: u64 = 300_000;
const SUGGESTED_L: u64 = 37_500;
/// People the officer counts in jingshan's school once it opens.
const SHELTERED: u64 = 2_500;

/// The page and the board poll every 5 s; a change must show within a few polls on a
/// busy machine.
const PAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Starting services and raising the alert, on 2 cores shared with the rest of the suite.
const SERVICE_TIMEOUT: Duration = Duration::from_secs(60);

/// The screenshot's window: a desk's browser, tall enough for the whole page.
const DESK_WINDOW: (u32, u32) = (1280, 1500);
/// A phone's screen, in CSS pixels.
const PHONE_WINDOW: (u32, u32) = (360, 740);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_officer_enters_a_count_on_the_town_page_and_the_days_change_on_the_wall() {
    let broker = testkit::Mosquitto::start();
    let deployment = deployment(&broker.url());
    let service =
        tokio::task::block_in_place(|| Service::start(&deployment.path().join("stockpile.toml")));
    let api = service.api_url();
    publish_all(
        &broker,
        vec![
            (
                "stockpile/v1/jingshan/js-wh1/reading",
                stock(GATEWAY_WATER_L),
            ),
            ("stockpile/v1/donghua/dh-wh1/reading", stock(DONOR_WATER_L)),
            // A broken pump: the water point is not ready (and its water, not potable,
            // adds nothing), so the community drinking from it stays affected.
            (
                "stockpile/v1/jingshan/js-wp1/reading",
                json!({"ts": now_ms(), "water": {"level_l": 1000, "pump": "fault", "potable": false}})
                    .to_string(),
            ),
            // The school in everyday use, nobody inside.
            (
                "stockpile/v1/jingshan/js-school/reading",
                json!({"ts": now_ms(), "shelter": {"occupancy": 0, "mode": "normal"}}).to_string(),
            ),
        ],
    )
    .await;
    let alert = open_alert_of(&api, "jingshan").await;
    served_pages_are_self_contained_and_an_unknown_town_is_a_404_page(&api).await;

    let driver = tokio::task::block_in_place(testkit::ChromeDriver::start);
    let browser = Browser::open(&driver, &format!("{api}/towns/jingshan")).await;
    public_page_shows_the_town_and_offers_no_forms(&browser, alert).await;
    officer_counts_and_the_days_change(&browser, &api).await;
    the_wall_board_shows_the_new_days(&browser, &api).await;

    browser.resize(DESK_WINDOW).await;
    browser.scroll_to_top().await;
    let png = browser.screenshot().await;
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let picture = docs.canonicalize().expect("docs/ exists").join("town.png");
    std::fs::write(&picture, &png).expect("docs/town.png is writable");

    browser.resize(PHONE_WINDOW).await;
    // Signed in, with the shelter, the communities and the activation's steps and their
    // buttons on the page: still nothing scrolls sideways.
    let page = browser
        .wait_for("the page at phone width, signed in", |p| {
            p.view_width <= PHONE_WINDOW.0 && !p.activations.is_empty()
        })
        .await;
    assert!(
        page.doc_width <= page.view_width,
        "the signed-in page scrolls sideways on a phone: {} px wide in a {} px window",
        page.doc_width,
        page.view_width
    );
    browser.click("#sign-out").await;
    other_officer_is_refused_a_count_and_records_the_suggested_transfer(&browser, &api).await;
    let page = browser.read().await;
    assert!(
        page.view_width <= PHONE_WINDOW.0 && page.view_width > 0,
        "the window is not phone-sized: {page:#?}"
    );
    assert!(
        page.doc_width <= page.view_width,
        "the page scrolls sideways on a phone: {} px wide in a {} px window",
        page.doc_width,
        page.view_width
    );
    a_red_warning_shows_on_the_town_page_and_the_board(&browser, &api).await;
    browser.close().await;
}

/// The city sets a red warning over jingshan (target 5 days): the town page (English)
/// has a red band saying so with the warning's reason; the board's tile has the band
/// and its header the highest level in force, in both languages.
async fn a_red_warning_shows_on_the_town_page_and_the_board(browser: &Browser, api: &str) {
    let body = json!({"level": "red", "scope": {"towns": ["jingshan"]},
                      "reason": "市气象台暴雨红色预警", "for": "6h"});
    let answer = reqwest::Client::new()
        .post(format!("{api}/api/v1/warning-level"))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .expect("the API answers");
    assert_eq!(answer.status(), 201, "setting the warning level");
    let page = browser
        .wait_for("the red band on the town page", |p| {
            p.warning_level.as_deref() == Some("red")
        })
        .await;
    for shown in ["Red warning, target 5 days", "市气象台暴雨红色预警"] {
        assert!(page.warning_band.contains(shown), "{page:#?}");
    }
    let town = get(api, "/api/v1/towns/jingshan", None).await;
    assert_eq!(town["warning_level"]["level"], "red", "{town}");
    assert_eq!(town["categories"][0]["target_days"], 5.0, "{town}");

    browser.click("#board-link").await;
    let board = browser
        .wait_for_board("jingshan's band and the header's level", |b| {
            b["band"] == "Red warning, target 5 days"
        })
        .await;
    assert_eq!(
        (
            &board["tile_level"],
            &board["header_level"],
            &board["header_towns"]
        ),
        (&json!("red"), &json!("red"), &json!("1")),
        "{board}"
    );
    assert!(
        board["header"]
            .as_str()
            .unwrap()
            .starts_with("红色预警 Red warning"),
        "{board}"
    );
    // The English tile's shelter and vulnerable lines, as the API counts them.
    let affected = jingshan_in_the_list(api).await["vulnerable_affected"].clone();
    let vulnerable = format!(
        "{} vulnerable people in {} communit",
        affected["people"], affected["communities"]
    );
    browser
        .wait_for_board("the English tile's shelter and vulnerable lines", |b| {
            let tile = b["tile"].as_str().unwrap_or_default();
            tile.contains("⌂ 2,500 in shelters") && tile.contains(&vulnerable)
        })
        .await;
    browser.click("#lang-toggle").await;
    browser
        .wait_for_board("the band in Chinese", |b| b["band"] == "红色预警 目标 5 天")
        .await;

    // Compact, the shelter and the vulnerable people are small marks on the tile, the
    // latter with the API's count.
    browser.click("#compact-toggle").await;
    let people = jingshan_in_the_list(api).await["vulnerable_affected"]["people"]
        .as_u64()
        .expect("jingshan's vulnerable people affected");
    let marks = browser
        .wait_for_board("the compact tile's marks", |b| {
            b["marks"].as_array().is_some_and(|m| m.len() == 2)
        })
        .await;
    assert_eq!(
        marks["marks"],
        json!(["⌂", format!("弱{people}")]),
        "{marks}"
    );
}

/// Both pages are served whole, with nothing fetched from outside; a town the registry
/// does not hold is a 404 page that names it and links back to the board.
async fn served_pages_are_self_contained_and_an_unknown_town_is_a_404_page(api: &str) {
    let page = reqwest::get(format!("{api}/towns/jingshan"))
        .await
        .expect("the API answers");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("a page").to_lowercase();
    // The one script it loads is this service's own, shared with the board.
    let html = html.replacen("<script src=\"/assets/console.js\"></script>", "", 1);
    for forbidden in [
        "http://", "https://", "//cdn", "<link", " src=", "@import", "url(",
    ] {
        assert!(
            !html.contains(forbidden),
            "town page contains {forbidden:?}"
        );
    }
    // What the page lists a town's facilities from.
    let town = get(api, "/api/v1/towns/jingshan", None).await;
    assert_eq!(
        town["facilities"],
        json!([
            {"id": "js-wh1", "name": "景山仓库 Jingshan depot", "kind": "warehouse", "report": "gateway"},
            {"id": "js-depot", "name": "社区储备点 Community store", "kind": "warehouse", "report": "manual"},
            {"id": "js-gen1", "name": "应急发电机 Generator", "kind": "power_unit", "report": "manual"},
            {"id": "js-wp1", "name": "景山供水点 Water point", "kind": "water_point", "report": "gateway"},
            {"id": "js-school", "name": "景山学校 School shelter", "kind": "shelter", "report": "gateway"},
        ]),
    );
    let missing = reqwest::get(format!("{api}/towns/no-such-town"))
        .await
        .expect("the API answers");
    assert_eq!(missing.status(), 404);
    assert!(
        missing.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "{:?}",
        missing.headers()
    );
    let text = missing.text().await.expect("a page");
    for shown in ["未找到街镇 Unknown town", "no-such-town", "href=\"/\""] {
        assert!(text.contains(shown), "404 page lacks {shown:?}: {text}");
    }
}

/// Without a token the page shows the town's days and why they are short, its
/// facilities with their sources, its alerts; the forms wait for a sign-in.
async fn public_page_shows_the_town_and_offers_no_forms(browser: &Browser, alert: i64) {
    let page = browser
        .wait_for("jingshan's water at 1.0 day, and its alert", |p| {
            p.category("water").is_some_and(|c| c.days == "1.0") && p.alert(alert).is_some()
        })
        .await;
    assert!(page.town_name.contains("景山街道"), "{page:#?}");
    let water = page.category("water").expect("water");
    assert_eq!(water.level, "critical", "{page:#?}");
    // In Chinese unless asked otherwise, as the board.
    for why in [
        "饮用水",
        "距目标 3 天缺 60,000 L",
        "从未上报，按零计：js-depot",
    ] {
        assert!(water.text.contains(why), "water lacks {why:?}: {water:#?}");
    }
    let gateway = page.facility("js-wh1").expect("js-wh1");
    assert_eq!(gateway.source, "gateway", "{gateway:#?}");
    assert!(gateway.text.contains("30,000 L"), "{gateway:#?}");
    let depot = page.facility("js-depot").expect("js-depot");
    assert!(
        depot.text.contains("从未上报") && depot.text.contains("人工盘点设施"),
        "{depot:#?}"
    );
    assert!(!page.forms_shown, "{page:#?}");
    assert!(page.forms_note.contains("登录后可录入"), "{page:#?}");
    assert!(!page.alert(alert).unwrap().button, "{page:#?}");

    // The school in everyday use, empty; nobody sheltered.
    let school = page.shelter("js-school").expect("the school's card");
    assert_eq!(school.mode, "normal", "{school:#?}");
    for shown in [
        "景山学校",
        "学校",
        "安置 0 / 5,000 人",
        "日常使用",
        "转换时限 2 小时",
    ] {
        assert!(
            school.text.contains(shown),
            "the school lacks {shown:?}: {school:#?}"
        );
    }
    assert_eq!(
        page.shelters_note, "无安置人员（无开放的避难场所）",
        "{page:#?}"
    );
}

/// The communities section shows what `GET /api/v1/towns/jingshan/vulnerable` says:
/// every listed community, the affected ones marked with their people and causes.
async fn communities_match_the_api(browser: &Browser, api: &str, affected: u64) -> PageView {
    let page = browser
        .wait_for("the communities as the API has them", |p| {
            p.communities.iter().map(|c| c.affected).sum::<u64>() == affected
        })
        .await;
    let answer = get(api, "/api/v1/towns/jingshan/vulnerable", None).await;
    assert_eq!(answer["affected_people"], affected, "{answer}");
    let listed: Vec<&str> = answer["listed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    let shown: Vec<&str> = page.communities.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(shown, listed, "{page:#?}");
    for community in &page.communities {
        let hit = answer["communities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == community.id.as_str());
        let people = hit.map_or(0, |c| c["people"].as_u64().unwrap());
        assert_eq!(
            community.affected, people,
            "{community:#?} against {answer}"
        );
    }
    page
}

/// Jingshan's officer types a count for the store counted by hand: the page says it was
/// stored, the water's days go from 1.0 to 2.5, and the store shows 人工 (manual) with the
/// officer's name, as `GET /api/v1/facilities/js-depot` does.
async fn officer_counts_and_the_days_change(browser: &Browser, api: &str) {
    browser.sign_in(OFFICER.1).await;
    browser
        .wait_for("the forms for jingshan's officer", |p| {
            p.forms_shown && p.whoami.as_deref().is_some_and(|w| w.contains(OFFICER.0))
        })
        .await;
    // The generator never reported and the pump is broken: both communities are affected.
    let page = communities_match_the_api(browser, api, 64).await;
    assert!(
        page.vulnerable_note.contains("涉及 2 个村社 64 名弱势人员"),
        "{page:#?}"
    );
    let sanyanjing = &page.communities[0];
    for shown in [
        "三眼井社区",
        "独居老人 40 · 婴幼儿 12",
        "受影响 52 人",
        "供水点 景山供水点 Water point 未就绪",
        "电源 应急发电机 Generator 未就绪",
    ] {
        assert!(
            sanyanjing.text.contains(shown),
            "sanyanjing lacks {shown:?}: {sanyanjing:#?}"
        );
    }
    browser.type_count("js-depot", COUNTED_L).await;
    let page = browser
        .wait_for("the count stored and the days changed", |p| {
            p.count_result.starts_with("已保存：")
                && p.category("water").is_some_and(|c| c.days == "2.5")
                && p.facility("js-depot").is_some_and(|f| f.source == "manual")
        })
        .await;
    assert!(page.count_result.contains(OFFICER.0), "{page:#?}");
    let water = page.category("water").unwrap();
    assert!(water.text.contains("含人工盘点数"), "{water:#?}");
    let depot = page.facility("js-depot").unwrap();
    for shown in ["人工", OFFICER.0, "45,000 L"] {
        assert!(
            depot.text.contains(shown),
            "js-depot lacks {shown:?}: {depot:#?}"
        );
    }
    assert!(
        page.stored_token.as_deref() == Some(OFFICER.1) && !page.url.contains(OFFICER.1),
        "{page:#?}"
    );

    let facility = get(api, "/api/v1/facilities/js-depot", Some(ADMIN)).await;
    assert_eq!(facility["latest_source"]["source"], "manual", "{facility}");
    assert_eq!(
        facility["latest_source"]["entered_by"], OFFICER.0,
        "{facility}"
    );
    assert_eq!(
        facility["latest"]["stock"][0],
        json!({"category": "water", "unit": "L", "quantity": COUNTED_L as f64, "consumption_per_h": null}),
        "{facility}"
    );
    officer_counts_a_power_unit(browser, api).await;
    // The generator ready: only the community on the broken water point stays affected.
    let page = communities_match_the_api(browser, api, 52).await;
    assert!(
        page.vulnerable_note.contains("涉及 1 个村社 52 名弱势人员"),
        "{page:#?}"
    );
    officer_marks_an_activation_step_done(browser, api).await;
    officer_counts_people_in_the_school(browser, api).await;
}

/// The city starts the school's activation (一表): its steps show on the page, the first
/// overdue at once (due within a second); the officer marks the second done with a note,
/// and the API has it done by them.
async fn officer_marks_an_activation_step_done(browser: &Browser, api: &str) {
    let body = json!({"scope": {"shelters": ["js-school"]}, "reason": "暴雨 Rainstorm", "scenario": "flood"});
    let answer = reqwest::Client::new()
        .post(format!("{api}/api/v1/activations"))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .expect("the API answers");
    assert_eq!(answer.status(), 201, "starting the activation");
    let id = answer.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    let page = browser
        .wait_for("the activation's steps, the first overdue", |p| {
            p.activation(id)
                .is_some_and(|a| a.steps == ["overdue", "due", "due"])
        })
        .await;
    let activation = page.activation(id).unwrap();
    for shown in [
        "启用 #",
        "暴雨 Rainstorm",
        "通知校方",
        "逾期 1",
        "haiyan.zhao@example.org",
    ] {
        assert!(
            activation.text.contains(shown),
            "the activation lacks {shown:?}: {activation:#?}"
        );
    }
    browser.mark_step_done(id, 2, "教室已清空").await;
    let page = browser
        .wait_for("step 2 done on the page", |p| {
            p.activation(id)
                .is_some_and(|a| a.steps == ["overdue", "done", "due"])
        })
        .await;
    let activation = page.activation(id).unwrap();
    assert!(
        activation.text.contains("教室已清空") && activation.text.contains(OFFICER.0),
        "{activation:#?}"
    );
    let answer = get(api, &format!("/api/v1/activations/{id}"), Some(ADMIN)).await;
    let step = &answer["shelters"][0]["steps"][1];
    assert_eq!(
        (&step["state"], &step["done_by"], &step["note"]),
        (&json!("done"), &json!(OFFICER.0), &json!("教室已清空")),
        "{answer}"
    );
}

/// The officer opens the school: a count over its capacity is refused in words and
/// changes nothing; 2,500 people inside, open, become the town's sheltered people and
/// its water's days go from 2.5 to 2.0 (75,000 L for 12,500 people at 3 L a day).
async fn officer_counts_people_in_the_school(browser: &Browser, api: &str) {
    browser.type_shelter_count("js-school", 6_000, "open").await;
    let page = browser
        .wait_for("the refused shelter count", |p| {
            p.count_result.starts_with("未保存：")
        })
        .await;
    for shown in ["400 rejected_readings", "超过容量 (over_capacity)"] {
        assert!(page.count_result.contains(shown), "{page:#?}");
    }
    assert_eq!(
        get(api, "/api/v1/towns/jingshan", None).await["sheltered"],
        0
    );

    browser
        .type_shelter_count("js-school", SHELTERED, "open")
        .await;
    let page = browser
        .wait_for("the school open with 2,500 people, the days at 2.0", |p| {
            p.count_result.starts_with("已保存：景山学校")
                && p.shelter("js-school")
                    .is_some_and(|s| s.mode == "open" && s.occupancy == "2500")
                && p.category("water").is_some_and(|c| c.days == "2.0")
        })
        .await;
    let school = page.shelter("js-school").unwrap();
    for shown in ["安置 2,500 / 5,000 人", "50 %", "开放"] {
        assert!(
            school.text.contains(shown),
            "the school lacks {shown:?}: {school:#?}"
        );
    }
    assert_eq!(
        page.shelters_note, "安置 2,500 人，按开放的避难场所计",
        "{page:#?}"
    );
    let water = page.category("water").unwrap();
    assert!(water.text.contains("含安置 2,500 人"), "{water:#?}");
    let town = get(api, "/api/v1/towns/jingshan", None).await;
    assert_eq!(
        (&town["sheltered"], &town["sheltered_from"]),
        (&json!(SHELTERED), &json!("shelters")),
        "{town}"
    );
    assert_eq!(town["shelters"][0]["occupancy"], SHELTERED, "{town}");
}

/// A power unit's count has its own fields: fuel, battery, state.
async fn officer_counts_a_power_unit(browser: &Browser, api: &str) {
    browser
        .type_power_count("js-gen1", 400, 90, "running")
        .await;
    let page = browser
        .wait_for("the generator's count stored", |p| {
            p.count_result.contains("应急发电机")
                && p.facility("js-gen1").is_some_and(|f| f.source == "manual")
        })
        .await;
    let generator = page.facility("js-gen1").unwrap();
    for shown in ["燃油 400 L", "电池 90 %", "运行", "可运行 80 小时"] {
        assert!(
            generator.text.contains(shown),
            "js-gen1 lacks {shown:?}: {generator:#?}"
        );
    }
    let facility = get(api, "/api/v1/facilities/js-gen1", Some(ADMIN)).await;
    let power = &facility["latest"]["power"];
    assert_eq!(
        (&power["fuel_l"], &power["battery_pct"], &power["state"]),
        (&json!(400.0), &json!(90.0), &json!("running")),
        "{facility}"
    );
}

/// The wall board, opened in the same tab, shows jingshan's tile at 2.0 days with the
/// people in its shelter and the vulnerable people its broken pump reaches; back on the
/// town page the sign-in is kept.
async fn the_wall_board_shows_the_new_days(browser: &Browser, api: &str) {
    browser.goto(&format!("{api}/")).await;
    browser
        .wait_for_board(
            "jingshan's tile at 2.0 days, its shelter and vulnerable people",
            |b| {
                let shown = |text: &str| b["tile"].as_str().is_some_and(|t| t.contains(text));
                shown("2.0")
                    && shown("⌂ 避难场所安置 2,500")
                    && shown("涉及 1 个村社 52 名弱势人员")
            },
        )
        .await;
    the_activation_panel_matches_the_api(browser, api).await;
    browser.goto(&format!("{api}/towns/jingshan")).await;
    browser
        .wait_for("the town page again, signed in", |p| {
            p.forms_shown && p.category("water").is_some_and(|c| c.days == "2.0")
        })
        .await;
}

/// The board's 一表 panel: a row per open activation with the numbers of
/// `GET /api/v1/activations` (steps done, not yet due, overdue; the capacity its open
/// shelters give against what it asked), the overdue count in red.
async fn the_activation_panel_matches_the_api(browser: &Browser, api: &str) {
    let listed = get(api, "/api/v1/activations", Some(ADMIN)).await;
    let want: Vec<Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            json!({"id": a["id"], "done": a["steps_done"], "total": a["steps_total"],
                   "due": a["steps_due"], "overdue": a["steps_overdue"],
                   "opened": a["capacity_opened"], "asked": a["capacity_asked"], "red": true})
        })
        .collect();
    assert_eq!(want.len(), 1, "{listed}");
    assert_eq!(
        (&want[0]["done"], &want[0]["overdue"], &want[0]["opened"]),
        (&json!(1), &json!(1), &json!(5000)),
        "{listed}"
    );
    browser
        .wait_for_board("the activation panel as the API has it", |b| {
            b["activations"] == Value::Array(want.clone())
        })
        .await;
}

/// Donghua's officer, on jingshan's page on a phone and in English: a count is refused
/// with the API's 403 in words and changes nothing; the suggestion that donghua send
/// jingshan the water it lacks fills the transfer form, and recording it lists it in
/// `GET /api/v1/transfers`.
async fn other_officer_is_refused_a_count_and_records_the_suggested_transfer(
    browser: &Browser,
    api: &str,
) {
    browser.click("#lang-toggle").await;
    browser.sign_in(OTHER_OFFICER.1).await;
    let page = browser
        .wait_for(
            "donghua's officer, in English, told this is not their town",
            |p| {
                p.forms_shown
                    && p.forms_note.contains("not an officer of this town")
                    && p.category("water")
                        .is_some_and(|c| c.text.contains("Held 75,000 L"))
                    // Read with the token: who entered a count is told to token holders.
                    && p.facility("js-depot")
                        .is_some_and(|f| f.text.contains("entered by"))
            },
        )
        .await;
    assert!(page.url.contains("?lang=en"), "{page:#?}");
    assert_eq!(
        page.board_link, "/?lang=en",
        "the board in the same language"
    );
    let water = page.category("water").expect("water");
    assert!(
        water.text.contains("rests on a hand count from"),
        "{water:#?}"
    );
    let school = page.shelter("js-school").expect("the school");
    for shown in ["school", "2,500 / 5,000 people", "50 %", "open"] {
        assert!(
            school.text.contains(shown),
            "the school lacks {shown:?}: {school:#?}"
        );
    }
    assert!(
        page.vulnerable_note
            .contains("52 vulnerable people in 1 community affected")
            && page.communities[0]
                .text
                .contains("elderly living alone 40 · infants 12")
            && page.communities[0]
                .text
                .contains("water point 景山供水点 Water point not ready"),
        "{page:#?}"
    );
    let depot = page.facility("js-depot").expect("js-depot");
    for shown in ["manual", "entered by li.wei", "Drinking water 45,000 L"] {
        assert!(
            depot.text.contains(shown),
            "js-depot lacks {shown:?}: {depot:#?}"
        );
    }
    assert!(
        page.whoami
            .as_deref()
            .unwrap_or_default()
            .contains(OTHER_OFFICER.0),
        "{page:#?}"
    );
    browser.type_count("js-depot", 50_000).await;
    let page = browser
        .wait_for("the refused count", |p| !p.count_result.is_empty())
        .await;
    assert!(
        page.count_result.starts_with("Not stored: 403 forbidden: "),
        "{page:#?}"
    );
    let facility = get(api, "/api/v1/facilities/js-depot", Some(ADMIN)).await;
    assert_eq!(
        facility["latest"]["stock"][0]["quantity"], COUNTED_L as f64,
        "{facility}"
    );

    let aid = "#aid .aid[data-from=\"donghua\"][data-to=\"jingshan\"][data-category=\"water\"]";
    browser.find(aid).await;
    browser.click(&format!("{aid} button.record")).await;
    let form = browser.transfer_form().await;
    assert_eq!(
        form,
        json!({"from": "dh-wh1", "to": "js-wh1", "category": "water",
               "quantity": SUGGESTED_L.to_string()}),
    );
    browser.click("#transfer-form button[type=submit]").await;
    let page = browser
        .wait_for("the transfer recorded", |p| {
            p.transfer_result.starts_with("Recorded #")
        })
        .await;
    assert!(
        page.transfer_result.contains("dh-wh1 → js-wh1")
            && page.transfer_result.contains(OTHER_OFFICER.0),
        "{page:#?}"
    );
    let transfers = get(api, "/api/v1/transfers?town=jingshan", Some(ADMIN)).await;
    let recorded = &transfers[0];
    for (field, want) in [
        ("from", json!("dh-wh1")),
        ("to", json!("js-wh1")),
        ("category", json!("water")),
        ("quantity", json!(SUGGESTED_L as f64)),
        ("recorded_by", json!(OTHER_OFFICER.0)),
    ] {
        assert_eq!(recorded[field], want, "{field}: {transfers}");
    }
}

/// Two towns of one cluster, each with a gateway warehouse; jingshan also has a store
/// counted by hand. Alerts fire at once; three tokens.
fn deployment(broker_url: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let registry = "\
[[category]]\nid = \"water\"\nname = \"Drinking water\"\nname_zh = \"饮用水\"\nunit = \"L\"\n\
daily_need = 3.0\n\
[[category]]\nid = \"food\"\nname = \"Food\"\nname_zh = \"食品\"\nunit = \"kg\"\ndaily_need = 0.5\n\
[[town]]\nid = \"jingshan\"\nname = \"景山街道\"\ndistrict = \"dongcheng\"\ncluster = \"c01\"\n\
population = 10000\nlat = 39.925\nlon = 116.397\n\
[[facility]]\nid = \"js-wh1\"\nname = \"景山仓库 Jingshan depot\"\ntown = \"jingshan\"\nkind = \"warehouse\"\n\
[[facility]]\nid = \"js-depot\"\nname = \"社区储备点 Community store\"\ntown = \"jingshan\"\n\
kind = \"warehouse\"\nreport = \"manual\"\n\
[[facility]]\nid = \"js-gen1\"\nname = \"应急发电机 Generator\"\ntown = \"jingshan\"\nkind = \"power_unit\"\n\
report = \"manual\"\nfuel_capacity_l = 500\nburn_l_per_h = 5.0\nmin_battery_pct = 50\n\
[[facility]]\nid = \"js-wp1\"\nname = \"景山供水点 Water point\"\ntown = \"jingshan\"\nkind = \"water_point\"\n\
capacity_l = 5000\n\
[[facility]]\nid = \"js-school\"\nname = \"景山学校 School shelter\"\ntown = \"jingshan\"\nkind = \"shelter\"\n\
capacity = 5000\ndual_use = \"school\"\nconvert_within = \"2h\"\n\
[[community]]\nid = \"sanyanjing\"\ntown = \"jingshan\"\nname = \"三眼井社区\"\n\
groups = { elderly_alone = 40, infants = 12 }\nwater_point = \"js-wp1\"\npower_unit = \"js-gen1\"\nshelter = \"js-school\"\n\
[[community]]\nid = \"jishikou\"\ntown = \"jingshan\"\nname = \"吉市口社区\"\n\
groups = { elderly_alone = 10, dialysis = 2 }\npower_unit = \"js-gen1\"\n\
[[contact]]\nname = \"赵海燕\"\nemail = \"haiyan.zhao@example.org\"\nlang = \"zh\"\ntowns = [\"jingshan\"]\n\
[[activation_plan]]\ndual_use = \"school\"\n\
[[activation_plan.step]]\nname = \"通知校方 Notify the school\"\ncontact = \"haiyan.zhao@example.org\"\nwithin = \"1s\"\n\
[[activation_plan.step]]\nname = \"清空教室 Clear the classrooms\"\ncontact = \"赵海燕\"\nwithin = \"2h\"\n\
[[activation_plan.step]]\nname = \"开门接收 Open the doors\"\ncontact = \"赵海燕\"\nwithin = \"4h\"\n\
[[town]]\nid = \"donghua\"\nname = \"东华门街道\"\ndistrict = \"dongcheng\"\ncluster = \"c01\"\n\
population = 10000\nlat = 39.915\nlon = 116.404\n\
[[facility]]\nid = \"dh-wh1\"\nname = \"东华门仓库 Donghua depot\"\ntown = \"donghua\"\nkind = \"warehouse\"\n\
[warning_levels.red]\ndays_target = 5.0\n";
    std::fs::write(dir.path().join("registry.toml"), registry).unwrap();
    let token = |name: &str, secret: &str, role: &str, towns: &str| {
        format!(
            "[[api.tokens]]\nname = \"{name}\"\nrole = \"{role}\"\ntoken = \"{secret}\"\n{towns}"
        )
    };
    let config = [
        "registry = \"registry.toml\"\n".to_owned(),
        format!("[mqtt]\nurl = \"{broker_url}\"\nclient_id = \"stockpile-town-e2e\"\n"),
        "[store]\npath = \"stockpile.db\"\n".to_owned(),
        "[api]\nlisten = \"127.0.0.1:0\"\npublic_read = true\n".to_owned(),
        "[log]\nlevel = \"info\"\n[alerts]\ngroup_wait = \"0s\"\n".to_owned(),
        token(OFFICER.0, OFFICER.1, "officer", "towns = [\"jingshan\"]\n"),
        token(
            OTHER_OFFICER.0,
            OTHER_OFFICER.1,
            "officer",
            "towns = [\"donghua\"]\n",
        ),
        token("ops", ADMIN, "admin", ""),
    ]
    .concat();
    std::fs::write(dir.path().join("stockpile.toml"), config).unwrap();
    dir
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A gateway's reading: `water` litres and food for ten days of 10,000 people.
fn stock(water_l: u64) -> String {
    json!({"ts": chrono::Utc::now().timestamp_millis(), "stock": {"water": water_l, "food": 50_000}})
        .to_string()
}

/// A gateway publishing `readings` with QoS 1; returns once the broker has them all.
async fn publish_all(broker: &testkit::Mosquitto, readings: Vec<(&str, String)>) {
    let mut options = MqttOptions::new("gw-town-page", "127.0.0.1", broker.port());
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, readings.len().max(1));
    let total = readings.len();
    for (topic, payload) in readings {
        client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("the publish queue is open");
    }
    let mut acked = 0;
    let deadline = tokio::time::Instant::now() + SERVICE_TIMEOUT;
    while acked < total {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Incoming::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("publisher lost the broker: {e}"),
            Err(_) => panic!("publisher: only {acked} of {total} acknowledged"),
        }
    }
}

/// Jingshan as `GET /api/v1/towns` lists it (what the board's tile is drawn from).
async fn jingshan_in_the_list(api: &str) -> Value {
    let towns = get(api, "/api/v1/towns", None).await;
    towns["towns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "jingshan")
        .cloned()
        .expect("jingshan listed")
}

/// `GET path` with `token`, as JSON, answered 200.
async fn get(api: &str, path: &str, token: Option<&str>) -> Value {
    let mut request = reqwest::Client::new().get(format!("{api}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let answer = request.send().await.expect("the API answers");
    assert_eq!(answer.status(), 200, "GET {path}");
    answer.json().await.expect("an answer as JSON")
}

/// The id of the town's first open alert, once the service has raised one.
async fn open_alert_of(api: &str, town: &str) -> i64 {
    let deadline = Instant::now() + SERVICE_TIMEOUT;
    loop {
        let alerts = get(api, &format!("/api/v1/alerts?open=true&town={town}"), None).await;
        if let Some(id) = alerts.as_array().and_then(|a| a.first()?["id"].as_i64()) {
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "no open alert of {town}: {alerts}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The town page as a person sees it, read from the page.
#[derive(Debug, Deserialize)]
struct PageView {
    url: String,
    town_name: String,
    categories: Vec<CategoryView>,
    facilities: Vec<FacilityView>,
    shelters: Vec<ShelterView>,
    /// Where the town's sheltered people come from.
    shelters_note: String,
    communities: Vec<CommunityView>,
    vulnerable_note: String,
    /// The warning band's level and text; `None` while hidden.
    warning_level: Option<String>,
    warning_band: String,
    activations: Vec<ActivationCard>,
    alerts: Vec<AlertRow>,
    /// The "who am I" line; `None` while hidden (signed out).
    whoami: Option<String>,
    stored_token: Option<String>,
    /// The count and transfer forms are offered.
    forms_shown: bool,
    /// What the page says about who may use them.
    forms_note: String,
    count_result: String,
    transfer_result: String,
    /// Where "back to the board" goes.
    board_link: String,
    /// The document's width and the window's, in CSS pixels.
    doc_width: u32,
    view_width: u32,
}

#[derive(Debug, Deserialize)]
struct CategoryView {
    id: String,
    /// The big figure, as shown: "2.5".
    days: String,
    level: String,
    text: String,
}

#[derive(Debug, Deserialize)]
struct FacilityView {
    id: String,
    /// `manual`, `gateway`, or empty before any reading.
    source: String,
    text: String,
}

#[derive(Debug, Deserialize)]
struct ShelterView {
    id: String,
    mode: String,
    /// People inside, as the card holds it; empty before a reading.
    occupancy: String,
    text: String,
}

#[derive(Debug, Deserialize)]
struct ActivationCard {
    id: i64,
    /// Each step's state as shown: `done`, `due`, `overdue`.
    steps: Vec<String>,
    text: String,
}

#[derive(Debug, Deserialize)]
struct CommunityView {
    id: String,
    /// Its affected vulnerable people, as the card is marked (0: none).
    affected: u64,
    text: String,
}

#[derive(Debug, Deserialize)]
struct AlertRow {
    id: i64,
    /// An "Acknowledge" button is offered.
    button: bool,
}

impl PageView {
    fn category(&self, id: &str) -> Option<&CategoryView> {
        self.categories.iter().find(|c| c.id == id)
    }

    fn facility(&self, id: &str) -> Option<&FacilityView> {
        self.facilities.iter().find(|f| f.id == id)
    }

    fn shelter(&self, id: &str) -> Option<&ShelterView> {
        self.shelters.iter().find(|s| s.id == id)
    }

    fn activation(&self, id: i64) -> Option<&ActivationCard> {
        self.activations.iter().find(|a| a.id == id)
    }

    fn alert(&self, id: i64) -> Option<&AlertRow> {
        self.alerts.iter().find(|a| a.id == id)
    }
}

const READ_PAGE: &str = r##"
const byId = id => document.getElementById(id);
return {
  url: location.href,
  town_name: byId("town-name").textContent,
  categories: Array.from(document.querySelectorAll("#categories .card"), c => ({
    id: c.dataset.category,
    days: c.querySelector(".days").firstChild.textContent,
    level: c.dataset.level,
    text: c.innerText,
  })),
  facilities: Array.from(document.querySelectorAll("#facilities .card"), f => ({
    id: f.dataset.facility, source: f.dataset.source, text: f.innerText,
  })),
  shelters: Array.from(document.querySelectorAll("#shelters .card"), s => ({
    id: s.dataset.shelter, mode: s.dataset.mode, occupancy: s.dataset.occupancy, text: s.innerText,
  })),
  shelters_note: byId("shelters-note").textContent,
  communities: Array.from(document.querySelectorAll("#communities .card"), c => ({
    id: c.dataset.community, affected: Number(c.dataset.affected), text: c.innerText,
  })),
  vulnerable_note: byId("vulnerable-note").textContent,
  warning_level: byId("warning-band").hidden ? null : byId("warning-band").dataset.level,
  warning_band: byId("warning-band").innerText,
  activations: Array.from(document.querySelectorAll("#activations .activation"), a => ({
    id: Number(a.dataset.activation),
    steps: Array.from(a.querySelectorAll(".steps li"), li => li.dataset.state),
    text: a.innerText,
  })),
  alerts: Array.from(document.querySelectorAll("#alert-list .alert"), row => ({
    id: Number(row.dataset.alert),
    button: row.querySelector("button.ack") !== null,
  })),
  whoami: byId("whoami").hidden ? null : byId("whoami").textContent,
  stored_token: sessionStorage.getItem("stockpile-token"),
  forms_shown: !byId("count-form").hidden && !byId("transfer-form").hidden,
  forms_note: byId("forms-note").textContent,
  count_result: byId("count-result").innerText,
  transfer_result: byId("transfer-result").innerText,
  board_link: byId("board-link").getAttribute("href"),
  doc_width: Math.max(document.documentElement.scrollWidth, document.body.scrollWidth),
  view_width: window.innerWidth,
};
"##;

/// The board as the tests read it: jingshan's tile (its text, warning band and marks),
/// the header's highest warning level, and the activation panel's rows.
const READ_BOARD: &str = r##"
const tile = document.querySelector('.tile[data-town="jingshan"]');
const band = tile && tile.querySelector(".band");
const header = document.getElementById("warning-level");
return {
  tile: tile ? tile.textContent : null,
  band: band ? band.textContent : null,
  tile_level: tile ? tile.dataset.warningLevel || null : null,
  header_level: header.hidden ? null : header.dataset.level,
  header_towns: header.hidden ? null : header.dataset.towns,
  header: header.textContent,
  // The marks a compact tile shows (they are hidden on a full tile, which says them).
  marks: tile ? Array.from(tile.querySelectorAll(".mark"))
    .filter(m => getComputedStyle(m.parentElement).display !== "none"
      && getComputedStyle(m).display !== "none")
    .map(m => m.textContent) : [],
  activations: Array.from(document.querySelectorAll("#activation-rows tr"), r => ({
    id: Number(r.dataset.activation), done: Number(r.dataset.done), total: Number(r.dataset.total),
    due: Number(r.dataset.due), overdue: Number(r.dataset.overdue),
    opened: Number(r.dataset.opened), asked: Number(r.dataset.asked),
    // The overdue count in the panel's red.
    red: getComputedStyle(r.querySelector("td.overdue")).color === "rgb(255, 129, 130)",
  })),
};
"##;

/// One Chromium session.
struct Browser {
    client: Client,
}

impl Browser {
    async fn open(driver: &testkit::ChromeDriver, url: &str) -> Browser {
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(driver.capabilities())
            .connect(&driver.url())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "ChromeDriver could not start Chromium: {e}\n--- chromedriver log ---\n{}",
                    driver.log()
                )
            });
        let browser = Browser { client };
        browser.goto(url).await;
        browser
    }

    async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("cannot load {url}: {e}"));
    }

    async fn read(&self) -> PageView {
        let value = self
            .client
            .execute(READ_PAGE, vec![])
            .await
            .unwrap_or_else(|e| panic!("reading the page: {e}"));
        serde_json::from_value(value.clone())
            .unwrap_or_else(|e| panic!("unexpected page shape ({e}): {value}"))
    }

    /// Reads the page until `done` holds, for up to [`PAGE_TIMEOUT`].
    async fn wait_for(&self, what: &str, done: impl Fn(&PageView) -> bool) -> PageView {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        loop {
            let page = self.read().await;
            if done(&page) {
                return page;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {PAGE_TIMEOUT:?} waiting for {what}; the page shows {page:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Reads the board ([`READ_BOARD`]) until `done` holds, for up to [`PAGE_TIMEOUT`].
    async fn wait_for_board(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        loop {
            let board = self
                .client
                .execute(READ_BOARD, vec![])
                .await
                .expect("the board answers");
            if done(&board) {
                return board;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {PAGE_TIMEOUT:?} waiting for {what}; the board shows {board}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn find(&self, selector: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(PAGE_TIMEOUT)
            .for_element(Locator::Css(selector))
            .await
            .unwrap_or_else(|e| panic!("no {selector} on the page: {e}"))
    }

    /// Clicks `selector`, found again if the page redrew it between finding and
    /// clicking (the page redraws its cards on every poll).
    async fn click(&self, selector: &str) {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        loop {
            match self.find(selector).await.click().await {
                Ok(()) => return,
                Err(e) => assert!(Instant::now() < deadline, "clicking {selector}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Opens the sign-in form, types `token` and submits it.
    async fn sign_in(&self, token: &str) {
        self.click("#sign-in").await;
        self.find("#token-input")
            .await
            .send_keys(token)
            .await
            .expect("typing the token");
        self.click("#sign-in-form button[type=submit]").await;
    }

    /// Chooses `facility` in the count form, types `water_l` as its water and saves.
    async fn type_count(&self, facility: &str, water_l: u64) {
        self.find("#count-facility")
            .await
            .select_by_value(facility)
            .await
            .expect("choosing the facility");
        let water = self.find("#count-water").await;
        water.clear().await.expect("clearing the water field");
        water
            .send_keys(&water_l.to_string())
            .await
            .expect("typing the count");
        self.click("#count-form button[type=submit]").await;
    }

    /// Chooses the power unit `facility` in the count form, types its fuel and battery,
    /// chooses its state and saves.
    async fn type_power_count(&self, facility: &str, fuel_l: u64, battery_pct: u64, state: &str) {
        self.find("#count-facility")
            .await
            .select_by_value(facility)
            .await
            .expect("choosing the facility");
        for (field, value) in [("#count-fuel", fuel_l), ("#count-battery", battery_pct)] {
            let input = self.find(field).await;
            input.clear().await.expect("clearing a field");
            input
                .send_keys(&value.to_string())
                .await
                .expect("typing a figure");
        }
        self.find("#count-state")
            .await
            .select_by_value(state)
            .await
            .expect("choosing the state");
        self.click("#count-form button[type=submit]").await;
    }

    /// Sets the count form to the shelter `facility` from its card, types the people
    /// inside, chooses its mode and saves.
    async fn type_shelter_count(&self, facility: &str, occupancy: u64, mode: &str) {
        // The shelter's card sets the count form to it.
        self.click(&format!(
            "#shelters .card[data-shelter=\"{facility}\"] button.count-shelter"
        ))
        .await;
        let input = self.find("#count-occupancy").await;
        input.clear().await.expect("clearing the occupancy");
        input
            .send_keys(&occupancy.to_string())
            .await
            .expect("typing the occupancy");
        self.find("#count-mode")
            .await
            .select_by_value(mode)
            .await
            .expect("choosing the mode");
        self.click("#count-form button[type=submit]").await;
    }

    /// Types `note` on step `n` of activation `id` and marks it done.
    async fn mark_step_done(&self, id: i64, n: u32, note: &str) {
        let row = format!("#activations .activation[data-activation=\"{id}\"] li[data-n=\"{n}\"]");
        self.find(&format!("{row} .step-note"))
            .await
            .send_keys(note)
            .await
            .expect("typing the note");
        self.click(&format!("{row} button.step-done")).await;
    }

    /// The transfer form's fields as filled in.
    async fn transfer_form(&self) -> Value {
        self.client
            .execute(
                "const v = id => document.getElementById(id).value; \
                 return {from: v('transfer-from'), to: v('transfer-to'), \
                         category: v('transfer-category'), quantity: v('transfer-quantity')};",
                vec![],
            )
            .await
            .expect("the page answers")
    }

    async fn resize(&self, (width, height): (u32, u32)) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("the window resizes");
    }

    async fn scroll_to_top(&self) {
        self.client
            .execute("window.scrollTo(0, 0); return null;", vec![])
            .await
            .expect("the page scrolls");
    }

    async fn screenshot(&self) -> Vec<u8> {
        self.client.screenshot().await.expect("a screenshot")
    }

    async fn close(self) {
        self.client.close().await.expect("the browser closes");
    }
}
