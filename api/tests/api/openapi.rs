//! The OpenAPI document and the router agree: every documented operation is routed,
//! and every routed operation is documented.
//!
//! A router cannot list its routes, so the test asks it: each candidate path (the
//! document's, plus every path docs/design.md#http-api lists) is called with every
//! method. The answer tells routed from not: `no_route` (no such path), 405 (path, but
//! not this method), anything else (a handler answered, if only to refuse).

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{ADMIN, AppOptions, spawn_app_with};

/// Every path docs/design.md#http-api lists (the app runs with every optional part, so
/// all are routed).
const DESIGN_PATHS: &[&str] = &[
    "/api/v1/overview",
    "/api/v1/towns",
    "/api/v1/towns/{id}",
    "/api/v1/towns/{id}/history",
    "/api/v1/towns/{id}/sheltered",
    "/api/v1/towns/{id}/vulnerable",
    "/api/v1/clusters",
    "/api/v1/clusters/{id}",
    "/api/v1/facilities/{id}",
    "/api/v1/facilities/{id}/readings",
    "/api/v1/alerts",
    "/api/v1/alerts/{id}/ack",
    "/api/v1/audit",
    "/api/v1/sms/inbound",
    "/ack/{token}",
    "/api/v1/me",
    "/api/v1/silences",
    "/api/v1/silences/{id}",
    "/api/v1/drill",
    "/api/v1/drill/{id}",
    "/api/v1/notifications",
    "/api/v1/registry/reload",
    "/api/v1/rejects",
    "/api/v1/scenarios",
    "/api/v1/transfers",
    "/api/v1/warning-level",
    "/api/openapi.json",
    "/healthz",
    "/readyz",
    "/metrics",
    "/",
    "/towns/{id}",
];

const METHODS: [Method; 5] = [
    Method::GET,
    Method::PUT,
    Method::POST,
    Method::DELETE,
    Method::PATCH,
];

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in [
            "get", "put", "post", "delete", "patch", "head", "options", "trace",
        ] {
            if item.get(method).is_some() {
                operations.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    operations
}

#[tokio::test]
async fn every_routed_operation_is_documented_and_every_documented_one_routed() {
    let app = spawn_app_with(AppOptions::full()).await;
    let answer = app.get("/api/openapi.json", None).await;
    assert_eq!(answer.status, 200);
    let doc = answer.json();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc, serde_json::to_value(api::openapi()).unwrap());
    let documented = documented(&doc);

    let mut candidates: BTreeSet<String> = DESIGN_PATHS.iter().map(|p| p.to_string()).collect();
    candidates.extend(documented.iter().map(|(_, p)| p.clone()));
    let mut routed = BTreeSet::new();
    for path in &candidates {
        let concrete = path.replace("{id}", "no-such-id");
        for method in METHODS {
            let answer = app
                .request(method.clone(), &concrete, Some(ADMIN), None)
                .await;
            let code = serde_json::from_str::<Value>(&answer.text)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
            // A page (the board's town page for an unknown town) is a handler's answer.
            let page = answer.content_type.starts_with("text/html");
            match (answer.status, code.as_deref()) {
                (404, Some("no_route")) | (405, Some("method_not_allowed")) => {}
                (404 | 405, None) if !page => panic!("{method} {concrete}: bare {}", answer.status),
                _ => {
                    routed.insert((method.to_string(), path.clone()));
                }
            }
        }
    }
    let documented_here: BTreeSet<_> = documented
        .iter()
        .filter(|(m, _)| METHODS.iter().any(|x| x.as_str() == m))
        .cloned()
        .collect();
    assert_eq!(
        routed, documented_here,
        "routed (left) vs documented (right)"
    );
    // What the router holds today; a new endpoint is added here on purpose.
    let paths: BTreeSet<&str> = documented.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(
        paths,
        BTreeSet::from([
            "/",
            "/ack/{token}",
            "/api/openapi.json",
            "/assets/console.js",
            "/api/v1/activations",
            "/api/v1/activations/{id}",
            "/api/v1/activations/{id}/close",
            "/api/v1/activations/{id}/steps/{n}",
            "/api/v1/alerts",
            "/api/v1/alerts/{id}/ack",
            "/api/v1/audit",
            "/api/v1/clusters",
            "/api/v1/clusters/{id}",
            "/api/v1/drill",
            "/api/v1/drill/{id}",
            "/api/v1/export/resources",
            "/api/v1/facilities/{id}",
            "/api/v1/facilities/{id}/readings",
            "/api/v1/map",
            "/api/v1/map/districts",
            "/api/v1/me",
            "/api/v1/notifications",
            "/api/v1/overview",
            "/api/v1/registry/reload",
            "/api/v1/rejects",
            "/api/v1/scenarios",
            "/api/v1/scenarios/{id}",
            "/api/v1/silences",
            "/api/v1/silences/{id}",
            "/api/v1/sms/inbound",
            "/api/v1/stress-test/latest",
            "/api/v1/towns",
            "/api/v1/towns/{id}",
            "/api/v1/towns/{id}/history",
            "/api/v1/towns/{id}/sheltered",
            "/api/v1/towns/{id}/vulnerable",
            "/api/v1/transfers",
            "/api/v1/warning-level",
            "/healthz",
            "/map",
            "/metrics",
            "/readyz",
            "/towns/{id}",
        ])
    );
}

#[tokio::test]
async fn protected_operations_declare_the_bearer_scheme() {
    let doc = serde_json::to_value(api::openapi()).unwrap();
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let put = &doc["paths"]["/api/v1/towns/{id}/sheltered"]["put"];
    assert_eq!(put["security"], serde_json::json!([{"bearer": []}]));
    let delete = &doc["paths"]["/api/v1/silences/{id}"]["delete"];
    assert_eq!(delete["security"], serde_json::json!([{"bearer": []}]));
    let get = &doc["paths"]["/api/v1/towns"]["get"];
    assert_eq!(get["security"], serde_json::json!([{}, {"bearer": []}]));
    assert!(doc["paths"]["/healthz"]["get"].get("security").is_none());
    // Schemas the handlers name are all in the document.
    for schema in [
        "TownDetail",
        "TownList",
        "ScenarioRequest",
        "ScenarioOutcome",
        "ErrorBody",
        "AidNeed",
        "AlertView",
        "AckRequest",
        "SilenceView",
        "SilenceRequest",
        "NotificationView",
        "HistoryBody",
    ] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "no schema {schema}"
        );
    }
}

/// Every `$ref` in `value`.
fn refs<'a>(value: &'a Value, found: &mut BTreeSet<&'a str>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                found.insert(r);
            }
            map.values().for_each(|v| refs(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
        _ => {}
    }
}

#[tokio::test]
async fn the_served_document_passes_openapi_spec_validator() {
    let app = spawn_app_with(AppOptions::full()).await;
    let answer = app.get("/api/openapi.json", None).await;
    assert_eq!(answer.status, 200);
    let doc = answer.json();
    // First our own check, whose message names what is missing.
    let mut found = BTreeSet::new();
    refs(&doc, &mut found);
    let dangling: Vec<&str> = found
        .into_iter()
        .filter(|r| {
            let name = r.trim_start_matches("#/components/schemas/");
            doc["components"]["schemas"].get(name).is_none()
        })
        .collect();
    assert!(
        dangling.is_empty(),
        "references to undefined schemas: {dangling:?}"
    );

    // Then a validator clients' generators trust.
    let python = crate::helpers::python_with("openapi_spec_validator", "openapi-spec-validator");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &answer.text).unwrap();
    let output = std::process::Command::new(&python)
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .expect("openapi-spec-validator runs");
    assert!(
        output.status.success(),
        "openapi-spec-validator rejects /api/openapi.json:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    app.stop().await;
}
