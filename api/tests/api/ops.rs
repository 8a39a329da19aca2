//! Probes and metrics.

use std::io::Write as _;

use serde_json::json;

use crate::helpers::{AppOptions, spawn_app, spawn_app_with};

#[tokio::test]
async fn healthz_answers_and_readyz_reports_each_check() {
    let app = spawn_app().await;
    let health = app.get("/healthz", None).await;
    assert_eq!(
        (health.status, health.json()),
        (200, json!({"status": "ok"}))
    );

    // No ingest is running here: the broker check fails, the store check passes.
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    let body = ready.json();
    assert_eq!(body["ready"], false);
    let checks: Vec<(&str, bool)> = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["ok"].as_bool().unwrap()))
        .collect();
    assert_eq!(checks, [("broker", false), ("store", true)]);
}

#[tokio::test]
async fn metrics_expose_ingest_counters_and_towns_by_status() {
    let app = spawn_app().await;
    app.seed();
    let answer = app.get("/metrics", None).await;
    assert_eq!(answer.status, 200);
    assert!(
        answer.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        answer.content_type
    );
    for line in [
        "# TYPE stockpile_ingest_received_total counter",
        "stockpile_ingest_received_total 0",
        "stockpile_ingest_accepted_total 0",
        "stockpile_ingest_duplicates_total 0",
        "# TYPE stockpile_ingest_rejected_total counter",
        "stockpile_broker_connected 0",
        "stockpile_towns{status=\"ok\"} 2",
        "stockpile_towns{status=\"warning\"} 1",
        "stockpile_towns{status=\"critical\"} 1",
        "stockpile_towns{status=\"unknown\"} 1",
        "stockpile_towns_unverified 1",
        "stockpile_facilities{state=\"never_reported\"} 1",
    ] {
        assert!(
            answer.text.lines().any(|l| l == line),
            "missing {line:?} in\n{}",
            answer.text
        );
    }
}

#[tokio::test]
async fn metrics_pass_promtool_check_metrics() {
    let promtool = crate::helpers::installed("promtool", "prometheus");
    // Alerts plugged in, so their families are in the text too.
    let app = spawn_app_with(AppOptions::full()).await;
    app.seed();
    let answer = app.get("/metrics", None).await;
    assert_eq!(answer.status, 200);
    let mut check = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool starts");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(answer.text.as_bytes())
        .unwrap();
    let output = check.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics rejects /metrics:\n{}{}\n--- the text:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        answer.text
    );
    app.stop().await;
}
