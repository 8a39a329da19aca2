//! The built-in wall board.

use serde_json::json;

use crate::helpers::{ADMIN, OFFICER, VIEWER, spawn_app};

#[tokio::test]
async fn board_is_one_self_contained_page_that_polls_the_towns() {
    let app = spawn_app().await;
    let page = app.get("/", None).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.content_type, "text/html; charset=utf-8");
    let html = page.text.to_lowercase();
    // Nothing fetched from anywhere else: no absolute URLs, no external scripts,
    // stylesheets, images or fonts; the one script it loads is this service's own.
    let html = html.replacen(CONSOLE_SCRIPT, "", 1);
    for forbidden in [
        "http://", "https://", "//cdn", "<link", " src=", "@import", "url(",
    ] {
        assert!(!html.contains(forbidden), "board contains {forbidden:?}");
    }
    assert!(html.contains("<style>") && html.contains("<script>"));
    assert!(html.contains("/api/v1/towns"));
    // Served as UTF-8: Chinese text arrives intact.
    assert!(page.text.contains("储备看板"));
    for status in ["critical", "warning", "ok", "unknown"] {
        assert!(
            html.contains(&format!(".tile.{status}")),
            "no colour for {status}"
        );
    }
}

/// How the board and the town page load the script they share.
const CONSOLE_SCRIPT: &str = "<script src=\"/assets/console.js\"></script>";

/// The board's and the town page's shared script is served whole, as JavaScript, asked
/// again on every load; it too fetches nothing but this service's API.
#[tokio::test]
async fn the_pages_shared_script_is_served_and_self_contained() {
    let app = spawn_app().await;
    for page in ["/", "/towns/jingshan"] {
        let html = app.get(page, None).await.text;
        assert_eq!(
            html.matches(CONSOLE_SCRIPT).count(),
            1,
            "{page} loads it once"
        );
    }
    let script = app.get("/assets/console.js", None).await;
    assert_eq!(script.status, 200);
    assert_eq!(script.content_type, "text/javascript; charset=utf-8");
    let js = script.text.to_lowercase();
    for forbidden in [
        "http://",
        "https://",
        "//cdn",
        "@import",
        "url(",
        // The token is kept in the tab's sessionStorage only.
        "localstorage.",
        "document.cookie",
    ] {
        assert!(!js.contains(forbidden), "console.js contains {forbidden:?}");
    }
    for shared in ["fetch(", "/api/v1/me", "/ack\"", "sessionstorage"] {
        assert!(js.contains(shared), "console.js lacks {shared:?}");
    }
}

/// What the board's sign-in asks: who a token belongs to. The token itself is never in
/// the answer, and without one there is nobody to describe, public reads or not.
#[tokio::test]
async fn me_names_the_token_holder_its_role_and_towns() {
    let app = spawn_app().await; // public reads on
    let cases = [
        (
            OFFICER,
            json!({"name": "li-wei", "role": "officer", "towns": ["jingshan"]}),
        ),
        (ADMIN, json!({"name": "ops", "role": "admin", "towns": []})),
        (
            VIEWER,
            json!({"name": "wall", "role": "viewer", "towns": []}),
        ),
    ];
    for (token, want) in cases {
        let answer = app.get("/api/v1/me", Some(token)).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(answer.json(), want);
        assert!(!answer.text.contains(token), "the answer shows the token");
    }
    assert_eq!(
        app.get("/api/v1/me", None).await.error(),
        (401, "unauthorized".to_owned())
    );
    assert_eq!(
        app.get("/api/v1/me", Some("not-a-token")).await.error(),
        (401, "invalid_token".to_owned())
    );
}

/// 一图 works offline as the board does: one page, nothing fetched from elsewhere (no
/// tile server), drawn from the API's towns and facilities.
#[tokio::test]
async fn map_is_one_self_contained_page_drawn_from_the_api() {
    let app = spawn_app().await;
    let page = app.get("/map", None).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.content_type, "text/html; charset=utf-8");
    let html = page.text.to_lowercase();
    for forbidden in [
        "http://", "https://", "//cdn", "<link", " src=", "@import", "url(",
    ] {
        assert!(!html.contains(forbidden), "map contains {forbidden:?}");
    }
    for polled in ["/api/v1/towns", "/api/v1/map", "<svg", "/towns/"] {
        assert!(html.contains(polled), "map lacks {polled:?}");
    }
}

/// What the map places besides towns: every facility, its kind, position and (water
/// points and power units) readiness; a public wall-display read.
#[tokio::test]
async fn map_layout_lists_every_facility_with_kind_position_and_readiness() {
    let app = spawn_app().await;
    app.seed();
    let layout = app.get_ok("/api/v1/map").await;
    let facilities = layout["facilities"].as_array().expect("facilities");
    let ids: Vec<&str> = facilities
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "js-wh1", "js-wp1", "js-pu1", "dh-wh1", "jg-wh1", "tt-wh1", "lt-wh1"
        ]
    );
    let by_id = |id: &str| facilities.iter().find(|f| f["id"] == id).unwrap();
    assert_eq!(by_id("js-wh1")["kind"], "warehouse");
    assert_eq!(by_id("js-wh1")["ready"], json!(null));
    assert_eq!(by_id("js-wp1")["kind"], "water_point");
    assert_eq!(by_id("js-wp1")["ready"], true);
    assert_eq!(by_id("js-pu1")["kind"], "power_unit");
    assert_eq!(by_id("js-wp1")["town"], "jingshan");
    assert!(by_id("js-wp1").get("lat").is_some(), "{layout}");
}
