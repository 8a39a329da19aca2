//! Authentication, roles and the JSON error shape of every refusal.

use reqwest::Method;

use crate::helpers::{ADMIN, AppOptions, OFFICER, VIEWER, spawn_app, spawn_app_with};

struct Case {
    method: Method,
    path: &'static str,
    token: Option<&'static str>,
    /// (content type, body)
    body: Option<(&'static str, &'static str)>,
    status: u16,
    code: &'static str,
    /// The field the error must name.
    field: Option<&'static str>,
}

fn case(
    method: Method,
    path: &'static str,
    token: Option<&'static str>,
    body: Option<(&'static str, &'static str)>,
    (status, code, field): (u16, &'static str, Option<&'static str>),
) -> Case {
    Case {
        method,
        path,
        token,
        body,
        status,
        code,
        field,
    }
}

const JSON: &str = "application/json";

#[tokio::test]
async fn refusals_have_the_right_status_code_and_field() {
    let app = spawn_app().await; // public reads on
    app.seed();
    let sheltered = "/api/v1/towns/jingshan/sheltered";
    #[rustfmt::skip]
    let cases = [
        // 401: writes need a token even when reads are public; a wrong token is never
        // taken for "no token".
        case(Method::PUT, sheltered, None, Some((JSON, r#"{"sheltered": 1}"#)), (401, "unauthorized", None)),
        case(Method::POST, "/api/v1/scenarios", None, Some((JSON, "{}")), (401, "unauthorized", None)),
        case(Method::GET, "/api/v1/towns", Some("not-a-token"), None, (401, "invalid_token", None)),
        case(Method::GET, "/api/v1/towns", Some(&ADMIN[1..]), None, (401, "invalid_token", None)),
        // 403
        case(Method::PUT, "/api/v1/towns/donghua/sheltered", Some(OFFICER), Some((JSON, r#"{"sheltered": 1}"#)), (403, "forbidden", None)),
        case(Method::PUT, sheltered, Some(VIEWER), Some((JSON, r#"{"sheltered": 1}"#)), (403, "forbidden", None)),
        // 404: unknown ids, and unknown endpoints told apart
        case(Method::GET, "/api/v1/towns/atlantis", None, None, (404, "unknown_town", None)),
        case(Method::GET, "/api/v1/towns/Jingshan", None, None, (404, "unknown_town", None)),
        case(Method::PUT, "/api/v1/towns/atlantis/sheltered", Some(ADMIN), Some((JSON, r#"{"sheltered": 1}"#)), (404, "unknown_town", None)),
        case(Method::GET, "/api/v1/clusters/c99", None, None, (404, "unknown_cluster", None)),
        case(Method::GET, "/api/v1/facilities/js-wh9", None, None, (404, "unknown_facility", None)),
        case(Method::GET, "/api/v1/townz", None, None, (404, "no_route", None)),
        // 405
        case(Method::DELETE, "/api/v1/towns", Some(ADMIN), None, (405, "method_not_allowed", None)),
        // 400: not JSON, bad query parameters
        case(Method::PUT, sheltered, Some(ADMIN), Some((JSON, "sheltered=5")), (400, "invalid_json", None)),
        case(Method::PUT, sheltered, Some(ADMIN), Some((JSON, r#"{"sheltered": 5"#)), (400, "invalid_json", None)),
        case(Method::GET, "/api/v1/towns?status=purple", None, None, (400, "invalid_query", Some("status"))),
        case(Method::GET, "/api/v1/towns?cluster=c99", None, None, (400, "invalid_query", Some("cluster"))),
        case(Method::GET, "/api/v1/towns?colour=red", None, None, (400, "invalid_query", Some("colour"))),
        case(Method::GET, "/api/v1/rejects?limit=many", Some(ADMIN), None, (400, "invalid_query", Some("limit"))),
        case(Method::GET, "/api/v1/rejects?limit=5000", Some(ADMIN), None, (400, "invalid_query", Some("limit"))),
        // 415
        case(Method::PUT, sheltered, Some(ADMIN), Some(("text/plain", r#"{"sheltered": 5}"#)), (415, "unsupported_media_type", None)),
        // 422: JSON of the wrong shape names the field
        case(Method::PUT, sheltered, Some(ADMIN), Some((JSON, r#"{"sheltered": "many"}"#)), (422, "invalid_body", Some("sheltered"))),
        case(Method::PUT, sheltered, Some(ADMIN), Some((JSON, r#"{"sheltered": -5}"#)), (422, "invalid_body", Some("sheltered"))),
        case(Method::PUT, sheltered, Some(ADMIN), Some((JSON, r#"{"sheltered": 1e12}"#)), (422, "invalid_body", Some("sheltered"))),
        case(Method::PUT, sheltered, Some(ADMIN), Some((JSON, r#"{"sheltered": 200000000}"#)), (422, "invalid_body", Some("sheltered"))),
        case(Method::PUT, sheltered, Some(ADMIN), Some((JSON, r#"{"people": 5}"#)), (422, "invalid_body", Some("people"))),
        case(Method::POST, "/api/v1/scenarios", Some(VIEWER), Some((JSON, r#"{"road_cut_days": -1}"#)), (422, "invalid_body", Some("road_cut_days"))),
        case(Method::POST, "/api/v1/scenarios", Some(VIEWER), Some((JSON, r#"{"water_cut": {"water_need_l_per_person": 0}}"#)), (422, "invalid_body", Some("water_cut.water_need_l_per_person"))),
        case(Method::POST, "/api/v1/scenarios", Some(VIEWER), Some((JSON, r#"{"comms_cut": {"silent_as": "guess"}}"#)), (422, "invalid_body", Some("comms_cut.silent_as"))),
        case(Method::POST, "/api/v1/scenarios", Some(VIEWER), Some((JSON, r#"{"population_surge": {"factor": 0.5}}"#)), (422, "invalid_body", Some("population_surge.factor"))),
        case(Method::POST, "/api/v1/scenarios", Some(VIEWER), Some((JSON, r#"{"population_surge": {"towns": {"atlantis": 10}}}"#)), (422, "invalid_body", Some("population_surge.towns.atlantis"))),
    ];
    for c in &cases {
        let body = c.body.map(|(ct, b)| (ct, b.as_bytes().to_vec()));
        let answer = app.request(c.method.clone(), c.path, c.token, body).await;
        let what = format!("{} {} {:?}", c.method, c.path, c.body);
        assert_eq!(answer.status, c.status, "{what}: {}", answer.text);
        assert!(
            answer.content_type.starts_with("application/json"),
            "{what}: {}",
            answer.content_type
        );
        assert_eq!(answer.error().1, c.code, "{what}: {}", answer.text);
        assert_eq!(
            answer.json()["error"]["field"].as_str(),
            c.field,
            "{what}: {}",
            answer.text
        );
    }
    // None of the refused writes changed anything.
    assert_eq!(app.get_ok("/api/v1/towns/jingshan").await["sheltered"], 0);
}

#[tokio::test]
async fn without_public_read_every_read_needs_a_token() {
    let app = spawn_app_with(AppOptions {
        public_read: false,
        ..AppOptions::default()
    })
    .await;
    for path in [
        "/api/v1/overview",
        "/api/v1/towns",
        "/api/v1/towns/jingshan",
        "/api/v1/clusters",
        "/api/v1/clusters/c01",
        "/api/v1/facilities/js-wh1",
        "/metrics",
    ] {
        let anonymous = app.get(path, None).await;
        assert_eq!(
            anonymous.error(),
            (401, "unauthorized".to_string()),
            "{path}"
        );
        for token in [VIEWER, OFFICER, ADMIN] {
            let answer = app.get(path, Some(token)).await;
            assert_eq!(answer.status, 200, "{path}: {}", answer.text);
        }
    }
    // Probes, the board and the document stay open: they hold no data.
    for path in ["/healthz", "/", "/api/openapi.json"] {
        assert_eq!(app.get(path, None).await.status, 200, "{path}");
    }
    assert_eq!(app.get("/readyz", None).await.status, 503); // answered, not refused
}
