//! A town's stock history from the readings in SQLite.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::Value;

use crate::helpers::{AppOptions, TestApp, VIEWER, assert_close, spawn_app_with};

/// Jingshan's warehouse stored 6000, 4500 and 3000 L of water three, two and one hours
/// ago (its 1000 residents need 3000 L a day). Returns the app and the first time.
async fn app_with_readings() -> (TestApp, DateTime<Utc>) {
    let app = spawn_app_with(AppOptions {
        history: true,
        ..AppOptions::default()
    })
    .await;
    let now = DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    let first = now - Duration::hours(3);
    for (hours, water) in [(3, 6000.0), (2, 4500.0), (1, 3000.0)] {
        app.store_stock(
            "js-wh1",
            &[("water", water), ("food", 15_000.0)],
            now - Duration::hours(hours),
        );
    }
    (app, first)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn points(history: &Value, category: &str) -> Vec<(DateTime<Utc>, f64, f64)> {
    let category = history["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["category"] == category)
        .unwrap_or_else(|| panic!("no {category} in {history}"));
    category["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["ts"].as_str().unwrap().parse().unwrap(),
                p["stock"].as_f64().unwrap(),
                p["days"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_last_day_by_default_one_point_per_reading() {
    let (app, first) = app_with_readings().await;
    let history = app
        .get_ok("/api/v1/towns/jingshan/history?category=water")
        .await;
    assert_eq!(history["town"], "jingshan");
    let categories = history["categories"].as_array().unwrap();
    assert_eq!(categories.len(), 1, "{history}");
    assert_eq!(categories[0]["unit"], "L");
    assert_close(&categories[0]["need_per_day"], 3000.0);
    assert_close(&categories[0]["target_days"], 3.0);
    let want = [
        (first, 6000.0, 2.0),
        (first + Duration::hours(1), 4500.0, 1.5),
        (first + Duration::hours(2), 3000.0, 1.0),
    ];
    assert_eq!(points(&history, "water"), want);
    // Without a category, every category of the registry.
    let all = app.get_ok("/api/v1/towns/jingshan/history").await;
    assert_eq!(all["categories"].as_array().unwrap().len(), 2, "{all}");
    assert_eq!(points(&all, "water"), want);
    assert_eq!(points(&all, "food")[0].1, 15_000.0);
    app.stop().await;
}

#[tokio::test]
async fn a_range_starts_with_the_stock_carried_in() {
    let (app, first) = app_with_readings().await;
    let from = first + Duration::minutes(90);
    let to = first + Duration::minutes(150);
    let history = app
        .get_ok(&format!(
            "/api/v1/towns/jingshan/history?category=water&from={}&to={}",
            rfc3339(from),
            rfc3339(to)
        ))
        .await;
    assert_eq!(
        points(&history, "water"),
        [
            (from, 4500.0, 1.5),
            (first + Duration::hours(2), 3000.0, 1.0)
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_requests_are_named() {
    let (app, first) = app_with_readings().await;
    let later = rfc3339(first + Duration::hours(1));
    let earlier = rfc3339(first);
    for (path, status, code, field) in [
        (
            "/api/v1/towns/jingshan/history?from=yesterday".to_owned(),
            400,
            "invalid_query",
            Some("from"),
        ),
        (
            "/api/v1/towns/jingshan/history?to=2026-13-01T00:00:00Z".to_owned(),
            400,
            "invalid_query",
            Some("to"),
        ),
        (
            "/api/v1/towns/jingshan/history?step=often".to_owned(),
            400,
            "invalid_query",
            Some("step"),
        ),
        (
            "/api/v1/towns/jingshan/history?step=0s".to_owned(),
            400,
            "invalid_query",
            Some("step"),
        ),
        (
            "/api/v1/towns/jingshan/history?days=3".to_owned(),
            400,
            "invalid_query",
            None,
        ),
        (
            format!("/api/v1/towns/jingshan/history?from={later}&to={earlier}"),
            400,
            "empty_range",
            None,
        ),
        (
            "/api/v1/towns/atlantis/history".to_owned(),
            404,
            "unknown_town",
            None,
        ),
        (
            "/api/v1/towns/jingshan/history?category=fuel".to_owned(),
            404,
            "unknown_category",
            None,
        ),
    ] {
        let answer = app.get(&path, Some(VIEWER)).await;
        assert_eq!(answer.error(), (status, code.into()), "{path}");
        if let Some(field) = field {
            assert_eq!(answer.json()["error"]["field"], field, "{path}");
        }
    }
    app.stop().await;
}

/// Steps and ranges that panicked the service (issue 12) or would make an answer of
/// millions of points: each a 400 naming the parameter, and the service still answers.
#[tokio::test]
async fn steps_and_ranges_out_of_bounds_are_refused_by_name() {
    let (app, first) = app_with_readings().await;
    let from = rfc3339(first);
    let eight_days_later = rfc3339(first + Duration::days(8));
    for (query, field) in [
        // Under a millisecond: divided by zero.
        ("step=0.5ms".to_owned(), "step"),
        ("step=999ms".to_owned(), "step"),
        // Past Duration's range: Duration::from_secs_f64 panicked.
        ("step=99999999999999999999d".to_owned(), "step"),
        // A sum past Duration::MAX: adding durations overflowed.
        (
            "step=10000000000000000000s10000000000000000000s".to_owned(),
            "step",
        ),
        ("step=-1s".to_owned(), "step"),
        ("step=NaNs".to_owned(), "step"),
        // A day of 1 s steps is 86,400 steps: more than 10,000.
        ("step=1s".to_owned(), "step"),
        // Without a step, at most 7 days.
        (format!("from={from}&to={eight_days_later}"), "from"),
        (
            "from=0000-01-01T00:00:00Z&to=9999-12-31T23:59:59Z".to_owned(),
            "from",
        ),
        (
            "from=0000-01-01T00:00:00Z&to=9999-12-31T23:59:59Z&step=1d".to_owned(),
            "step",
        ),
        ("to=99999-01-01T00:00:00Z".to_owned(), "to"),
    ] {
        let path = format!("/api/v1/towns/jingshan/history?{query}");
        let answer = app.get(&path, Some(VIEWER)).await;
        assert_eq!(answer.error(), (400, "invalid_query".into()), "{path}");
        assert_eq!(answer.json()["error"]["field"], field, "{path}");
    }
    // The earliest time there is, with the default day before it: no overflow either.
    let answer = app
        .get(
            "/api/v1/towns/jingshan/history?to=0000-01-01T00:00:00Z",
            Some(VIEWER),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);

    // At the bounds, an answer: 10,000 steps of 1 min, 7 days without a step.
    let ok = app
        .get_ok(&format!(
            "/api/v1/towns/jingshan/history?category=water&from={from}&to={}&step=1m",
            rfc3339(first + Duration::minutes(10_000))
        ))
        .await;
    assert_eq!(points(&ok, "water").len(), 3, "{ok}");
    app.get_ok(&format!(
        "/api/v1/towns/jingshan/history?from={from}&to={}",
        rfc3339(first + Duration::days(7))
    ))
    .await;
    app.stop().await;
}
