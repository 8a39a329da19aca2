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
    // stylesheets, images or fonts.
    for forbidden in [
        "http://", "https://", "//cdn", "<link", " src=", "@import", "url(",
    ] {
        assert!(!html.contains(forbidden), "board contains {forbidden:?}");
    }
    assert!(html.contains("<style>") && html.contains("<script>"));
    assert!(html.contains("fetch(") && html.contains("/api/v1/towns"));
    // Served as UTF-8: Chinese text arrives intact.
    assert!(page.text.contains("储备看板"));
    for status in ["critical", "warning", "ok", "unknown"] {
        assert!(
            html.contains(&format!(".tile.{status}")),
            "no colour for {status}"
        );
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
