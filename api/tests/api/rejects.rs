//! The reject log, read from the store.

use chrono::{Duration, Utc};
use serde_json::json;
use store::{RejectRecord, Store, StoreOptions};

use crate::helpers::{ADMIN, spawn_app};

#[tokio::test]
async fn rejects_lists_the_newest_first_with_counts_by_reason() {
    let app = spawn_app().await;
    // What the ingest writer would have recorded, through a connection of its own.
    let mut store = Store::open(&app.db, StoreOptions::default()).unwrap();
    let now = Utc::now();
    let mut batch = store.batch().unwrap();
    for (i, (topic, reason, payload)) in [
        ("stockpile/v1/nowhere/x/reading", "unknown_town", "{}"),
        (
            "stockpile/v1/jingshan/js-wh1/reading",
            "not_json",
            "水位 12000",
        ),
        ("stockpile/v1/atlantis/y/reading", "unknown_town", "{}"),
    ]
    .into_iter()
    .enumerate()
    {
        let at = now - Duration::seconds(10 - i as i64);
        batch
            .insert_reject(&RejectRecord::new(
                at,
                topic,
                reason,
                "detail",
                payload.as_bytes(),
            ))
            .unwrap();
    }
    batch.commit().unwrap();

    let log = app.get_ok_as(ADMIN, "/api/v1/rejects?limit=2").await;
    assert_eq!(log["counts"], json!({"not_json": 1, "unknown_town": 2}));
    let rejects = log["rejects"].as_array().unwrap();
    let seen: Vec<(&str, &str)> = rejects
        .iter()
        .map(|r| (r["topic"].as_str().unwrap(), r["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            ("stockpile/v1/atlantis/y/reading", "unknown_town"),
            ("stockpile/v1/jingshan/js-wh1/reading", "not_json"),
        ]
    );
    assert_eq!(rejects[1]["payload"], "水位 12000");
    assert_eq!(rejects[1]["payload_len"], "水位 12000".len());

    let all = app.get_ok_as(ADMIN, "/api/v1/rejects").await;
    assert_eq!(all["rejects"].as_array().unwrap().len(), 3);
}
