//! The built-in wall board.

use crate::helpers::spawn_app;

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
