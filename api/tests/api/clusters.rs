//! Clusters and the mutual-aid plan.

use serde_json::json;

use crate::helpers::{assert_close, spawn_app};

#[tokio::test]
async fn clusters_list_counts_their_towns() {
    let app = spawn_app().await;
    app.seed();
    let list = app.get_ok("/api/v1/clusters").await;
    let c01 = &list["clusters"][0];
    assert_eq!(c01["id"], "c01");
    assert_eq!(c01["name"], "东城北组团");
    assert_eq!(
        c01["towns"],
        json!({"total": 3, "ok": 1, "warning": 1, "critical": 1, "unknown": 0})
    );
    assert_eq!(c01["population"], 4000);
    assert_close(&c01["worst_days"], 2.0);
    assert_eq!(c01["worst_town"], "jingshan");
    let c02 = &list["clusters"][1];
    assert_eq!(c02["id"], "c02");
    assert_eq!(
        c02["towns"],
        json!({"total": 2, "ok": 1, "warning": 0, "critical": 0, "unknown": 1})
    );
    assert_eq!(c02["worst_town"], "tiantan");
}

#[tokio::test]
async fn mutual_aid_takes_from_the_nearer_donor_first_and_keeps_donors_above_target() {
    let app = spawn_app().await;
    app.seed();
    let before = app.get_ok("/api/v1/towns").await;
    let cluster = app.get_ok("/api/v1/clusters/c01").await;
    assert_eq!(cluster["cluster"]["id"], "c01");
    let towns: Vec<&str> = cluster["towns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(towns, ["jingshan", "donghua", "jianguo"]);

    // Jingshan holds 2 days of water: 3000 L short of 3 days. Donghua (1.3 km) can spare
    // 1500 L and keep 3.5 days; jianguo (3.9 km) has far more but comes second.
    let aid = cluster["mutual_aid"].as_array().unwrap();
    assert_eq!(aid.len(), 1, "{aid:?}");
    let need = &aid[0];
    assert_eq!(need["town"], "jingshan");
    assert_eq!(need["town_name"], "景山街道");
    assert_eq!(need["category"], "water");
    assert_eq!(need["unit"], "L");
    assert_close(&need["days"], 2.0);
    assert_close(&need["shortfall"], 3000.0);
    assert_close(&need["unmet"], 0.0);
    let transfers = need["transfers"].as_array().unwrap();
    let plan: Vec<(&str, f64)> = transfers
        .iter()
        .map(|t| (t["from"].as_str().unwrap(), t["amount"].as_f64().unwrap()))
        .collect();
    assert_eq!(plan, [("donghua", 1500.0), ("jianguo", 1500.0)]);
    let d0 = transfers[0]["distance_km"].as_f64().unwrap();
    let d1 = transfers[1]["distance_km"].as_f64().unwrap();
    assert!(
        (1.0..1.6).contains(&d0) && (3.5..4.3).contains(&d1),
        "{d0} {d1}"
    );
    assert_close(&transfers[0]["donor_days_after"], 3.5);
    assert_close(&transfers[1]["donor_days_after"], 9.5);
    for t in transfers {
        assert!(t["donor_days_after"].as_f64().unwrap() >= 3.0, "{t}");
        assert_eq!(t["donor_verified"], true);
    }

    // A plan, not a transfer: the ledger is as it was.
    assert_eq!(app.get_ok("/api/v1/towns").await["towns"], before["towns"]);
}

#[tokio::test]
async fn mutual_aid_reports_what_the_cluster_cannot_cover() {
    let app = spawn_app().await;
    app.seed();
    // Donghua down to 3.6 days (600 L spare), jianguo to 3.55 days (150 L spare).
    app.stock("dh-wh1", &[("water", 21_600.0)]);
    app.stock("jg-wh1", &[("water", 10_650.0)]);
    let cluster = app.get_ok("/api/v1/clusters/c01").await;
    let need = &cluster["mutual_aid"][0];
    assert_eq!(need["town"], "jingshan");
    let amounts: Vec<f64> = need["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["amount"].as_f64().unwrap())
        .collect();
    assert_eq!(amounts.len(), 2);
    assert!(
        (amounts[0] - 600.0).abs() < 1e-6 && (amounts[1] - 150.0).abs() < 1e-6,
        "{amounts:?}"
    );
    assert_close(&need["unmet"], 2250.0);
}
