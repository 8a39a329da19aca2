//! Drills through the API (docs/design.md#drills): only an admin starts or ends one;
//! while it runs, alerts raised in its scope show `"drill": true`; the wall board
//! shows a banner; ending it resolves them, and what still holds is raised as real.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{ADMIN, AppOptions, OFFICER, TestApp, VIEWER, installed, spawn_app_with};

/// The below-target water alerts of jingshan: (drill, state) of each, newest first.
fn water_alerts(list: &Value) -> Vec<(bool, String)> {
    list.as_array()
        .unwrap()
        .iter()
        .filter(|a| a["rule"] == "reserve_below_target" && a["subject"] == "water")
        .map(|a| {
            (
                a["drill"].as_bool().unwrap(),
                a["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn only_an_admin_starts_a_drill_and_bad_ones_are_named() {
    let app = spawn_app_with(AppOptions::full()).await;
    let good = json!({"scope": "cluster:c01", "duration": "2h", "note": "断水演练"});
    for (who, token, body, status, code, field) in [
        ("nobody", None, good.clone(), 401, "unauthorized", None),
        (
            "a viewer",
            Some(VIEWER),
            good.clone(),
            403,
            "forbidden",
            None,
        ),
        (
            "an officer",
            Some(OFFICER),
            good.clone(),
            403,
            "forbidden",
            None,
        ),
        (
            "unknown cluster",
            Some(ADMIN),
            json!({"scope": "cluster:c99", "duration": "2h"}),
            422,
            "invalid_body",
            Some("scope"),
        ),
        (
            "no such scope kind",
            Some(ADMIN),
            json!({"scope": "province:hebei", "duration": "2h"}),
            422,
            "invalid_body",
            Some("scope"),
        ),
        (
            "over a day",
            Some(ADMIN),
            json!({"scope": "city", "duration": "25h"}),
            422,
            "invalid_body",
            Some("duration"),
        ),
        (
            "not a duration",
            Some(ADMIN),
            json!({"scope": "city", "duration": "soon"}),
            422,
            "invalid_body",
            Some("duration"),
        ),
        (
            "scope missing",
            Some(ADMIN),
            json!({"duration": "2h"}),
            422,
            "invalid_body",
            None,
        ),
    ] {
        let answer = app.post_json("/api/v1/drill", token, &body).await;
        assert_eq!(
            answer.error(),
            (status, code.to_owned()),
            "{who}: {}",
            answer.text
        );
        if let Some(field) = field {
            assert_eq!(answer.json()["error"]["field"], field, "{who}");
        }
    }
    assert_eq!(app.get_ok("/api/v1/drill").await, json!([]));
    for token in [Some(OFFICER), None] {
        let answer = app.delete("/api/v1/drill/1", token).await;
        assert!(matches!(answer.status, 401 | 403), "{}", answer.text);
    }
    let answer = app.delete("/api/v1/drill/1", Some(ADMIN)).await;
    assert_eq!(answer.error(), (404, "unknown_drill".into()));
    app.stop().await;
}

/// A sample's value in `/metrics`, 0 when absent.
fn gauge(metrics: &str, sample: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0)
}

/// `stockpile_alerts{state="firing"}` and `stockpile_drill_alerts{state="firing"}` once
/// they agree with the firing alerts `GET /api/v1/alerts` lists, real and drill.
async fn firing_gauges_matching_the_list(app: &TestApp) -> (u64, u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = app.get("/metrics", Some(ADMIN)).await.text;
        let gauges = (
            gauge(&metrics, "stockpile_alerts{state=\"firing\"}"),
            gauge(&metrics, "stockpile_drill_alerts{state=\"firing\"}"),
        );
        let list = app.get_ok_as(ADMIN, "/api/v1/alerts?state=firing").await;
        let drills = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["drill"] == true);
        let drills = drills.count() as u64;
        let listed = (list.as_array().unwrap().len() as u64 - drills, drills);
        if gauges == listed {
            return gauges;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gauges {gauges:?}, listed {listed:?}: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_drill_flags_its_alerts_shows_on_the_board_and_ends_early() {
    let app = spawn_app_with(AppOptions::full()).await;
    let body = json!({"scope": "towns:jingshan,donghua", "duration": "90m", "note": "断水演练"});
    let answer = app.post_json("/api/v1/drill", Some(ADMIN), &body).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let drill = answer.json();
    let id = drill["id"].as_i64().unwrap();
    assert_eq!(drill["scope"], "towns:jingshan,donghua");
    assert_eq!(drill["scope_name"], "景山街道、东华门街道");
    assert_eq!(drill["started_by"], "ops");
    assert_eq!(drill["active"], true);

    // A wall display without a token sees what and until when, not who or why.
    let public = app.get("/api/v1/drill", None).await.json();
    assert_eq!(public[0]["id"], id);
    assert_eq!(public[0]["until"], drill["until"]);
    assert!(public[0].get("started_by").is_none() && public[0].get("note").is_none());
    let with_token = app.get_ok_as(VIEWER, "/api/v1/drill").await;
    assert_eq!(with_token[0]["note"], "断水演练");

    // The board asks for drills and has its banner.
    let board = app.get("/", None).await.text;
    assert!(
        board.contains("/api/v1/drill") && board.contains("演练中"),
        "no banner"
    );

    app.seed();
    app.publish("jingshan");
    let alerts = app
        .eventually("/api/v1/alerts?town=jingshan", |b| {
            !water_alerts(b).is_empty()
        })
        .await;
    assert_eq!(water_alerts(&alerts), vec![(true, "firing".to_owned())]);
    // An operator's graph of real alerts does not count the exercise's.
    let (_, drill) = firing_gauges_matching_the_list(&app).await;
    assert!(drill >= 1, "the drill's water alert: {drill}");

    let audit = app.get_ok_as(ADMIN, "/api/v1/audit").await.to_string();
    assert!(audit.contains("drill_start"), "{audit}");

    let answer = app
        .delete(&format!("/api/v1/drill/{id}"), Some(ADMIN))
        .await;
    assert_eq!(answer.status, 204, "{}", answer.text);
    let answer = app
        .delete(&format!("/api/v1/drill/{id}"), Some(ADMIN))
        .await;
    assert_eq!(answer.error(), (404, "unknown_drill".into()));
    assert_eq!(app.get_ok("/api/v1/drill").await, json!([]));
    let ended = app.get_ok("/api/v1/drill?include_ended=true").await;
    assert_eq!(
        (ended[0]["active"].clone(), ended[0]["id"].clone()),
        (json!(false), json!(id))
    );

    // Jingshan is still short: the drill's alert resolved, a real one fires.
    let alerts = app
        .eventually("/api/v1/alerts?town=jingshan", |b| {
            water_alerts(b).len() == 2
        })
        .await;
    assert_eq!(
        water_alerts(&alerts),
        vec![(false, "firing".to_owned()), (true, "resolved".to_owned())]
    );
    let (real, _) = firing_gauges_matching_the_list(&app).await;
    assert!(real >= 1, "the real water alert: {real}");
    let metrics = app.get("/metrics", Some(ADMIN)).await.text;
    let resolved = gauge(&metrics, "stockpile_drill_alerts{state=\"resolved\"}");
    assert!(resolved >= 1, "{metrics}");

    // Both entries say where the request came from, as every API change's does.
    let audit = app.get_ok_as(ADMIN, "/api/v1/audit").await;
    for action in ["drill_start", "drill_end"] {
        let entry = audit
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == action)
            .unwrap_or_else(|| panic!("no {action} in {audit}"));
        assert_eq!(entry["actor"], "ops", "{entry}");
        let remote = entry["remote"].as_str().unwrap_or_default();
        assert!(remote.starts_with("127.0.0.1:"), "{action}: {entry}");
    }
    app.stop().await;
}

/// The board's page in headless Chromium once its scripts have run (virtual time lets
/// its first polls finish before the DOM is dumped): what a wall display shows.
fn board_dom(url: &str) -> String {
    let chromium = installed("chromium", "chromium");
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--no-first-run",
            "--virtual-time-budget=8000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The drill banner's element as the DOM holds it (up to the alert list that follows
/// it on the page).
fn drill_banner(dom: &str) -> &str {
    let start = dom
        .find("<div id=\"drill-banner\"")
        .expect("the board has a drill banner");
    let end = dom[start..].find("<main").map_or(dom.len(), |i| start + i);
    &dom[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_in_chromium_shows_the_drill_banner_while_a_drill_runs() {
    let app = spawn_app_with(AppOptions::full()).await;
    let url = format!("{}/", app.address);
    let quiet = tokio::task::spawn_blocking({
        let url = url.clone();
        move || board_dom(&url)
    })
    .await
    .unwrap();
    assert!(
        !drill_banner(&quiet).contains("演练中"),
        "{}",
        drill_banner(&quiet)
    );

    let body = json!({"scope": "cluster:c01", "duration": "2h", "note": "断水演练"});
    let answer = app.post_json("/api/v1/drill", Some(ADMIN), &body).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let id = answer.json()["id"].as_i64().unwrap();
    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || board_dom(&url)
    })
    .await
    .unwrap();
    let banner = drill_banner(&dom);
    assert!(banner.contains("class=\"show\""), "{banner}");
    assert!(
        banner.contains("演练中 DRILL IN PROGRESS · 东城北组团 (cluster:c01) · 至 until "),
        "{banner}"
    );
    // The wall display reads without a token: who started it and why stay private.
    assert!(!banner.contains("断水演练"), "{banner}");

    let answer = app
        .delete(&format!("/api/v1/drill/{id}"), Some(ADMIN))
        .await;
    assert_eq!(answer.status, 204, "{}", answer.text);
    let after = tokio::task::spawn_blocking(move || board_dom(&url))
        .await
        .unwrap();
    assert!(
        !drill_banner(&after).contains("演练中"),
        "{}",
        drill_banner(&after)
    );
    app.stop().await;
}
