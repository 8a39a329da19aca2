//! The overview: counts, population coverage, worst towns, ingest counters.

use serde_json::json;

use crate::helpers::{ADMIN, assert_close, spawn_app};

#[tokio::test]
async fn overview_counts_towns_people_and_lists_the_worst_first() {
    let app = spawn_app().await;
    app.seed();
    let answer = app
        .put_json(
            "/api/v1/towns/tiantan/sheltered",
            Some(ADMIN),
            &json!({"sheltered": 200}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);

    let o = app.get_ok("/api/v1/overview").await;
    assert_eq!(
        o["towns"],
        // Tiantan's 200 sheltered take it to 3.33 days of water: a warning.
        json!({"total": 5, "ok": 1, "warning": 2, "critical": 1, "unknown": 1})
    );
    assert_eq!(o["unverified_towns"], 1); // longtan
    assert_eq!(
        o["population"],
        json!({
            "total": 5700, "sheltered": 200,
            // donghua 2000 + jianguo 1000 + tiantan 1200
            "covered": 4200, "below_target": 1000, "unknown": 500
        })
    );
    let worst: Vec<(&str, f64)> = o["worst_towns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_str().unwrap(), t["worst_days"].as_f64().unwrap()))
        .collect();
    // tiantan: 12000 L for 1200 people is 3.33 days.
    let want = [
        ("jingshan", 2.0),
        ("jianguo", 3.2),
        ("tiantan", 12_000.0 / 3600.0),
        ("donghua", 3.75),
    ];
    assert_eq!(worst.len(), want.len(), "{worst:?}");
    for ((id, days), (want_id, want_days)) in worst.iter().zip(want) {
        assert_eq!(*id, want_id);
        assert!((days - want_days).abs() < 1e-9, "{id}: {days}");
    }
    assert_eq!(o["ingest"]["connected"], false);
    assert_eq!(o["ingest"]["received"], 0);
    assert_eq!(o["ingest"]["rejected_by_reason"], json!({}));
    assert_close(&o["worst_towns"][0]["lat"], 39.925);
}
