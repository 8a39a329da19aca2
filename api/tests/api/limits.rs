//! What one client may cost the service: slow headers, slow bodies, big bodies and too
//! many expensive requests at once are refused with the API's JSON errors, and the
//! service goes on answering everyone else.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{ADMIN, AppOptions, TestApp, VIEWER, spawn_app_with};

/// Limits short enough for a test to see them act. The request timeout stays long:
/// tests that hold a request open must not race it on a loaded machine.
fn quick_limits() -> AppOptions {
    AppOptions {
        limits: api::HttpLimits {
            header_read_timeout: Duration::from_millis(500),
            expensive_concurrency: 1,
            ..api::HttpLimits::default()
        },
        ..AppOptions::default()
    }
}

/// A raw connection to the app, for clients no HTTP library would imitate.
async fn connect(app: &TestApp) -> TcpStream {
    let address = app.address.trim_start_matches("http://");
    TcpStream::connect(address).await.expect("connects")
}

/// Reads until the server closes the connection (or `within` passes: a failure); what
/// it sent.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> String {
    let mut received = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server still holds the connection after {within:?}; it sent {:?}",
        String::from_utf8_lossy(&received)
    );
    String::from_utf8_lossy(&received).into_owned()
}

/// The headers of a scenario request whose body is `len` bytes, not yet sent.
fn scenario_head(len: usize) -> String {
    format!(
        "POST /api/v1/scenarios HTTP/1.1\r\nHost: stockpile\r\nAuthorization: Bearer {VIEWER}\r\n\
         Content-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )
}

/// Status line and JSON body of a raw HTTP/1.1 answer.
fn parse_answer(raw: &str) -> (u16, Value) {
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {raw:?}"));
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {raw:?}"));
    (status, body)
}

#[tokio::test]
async fn a_client_that_sends_its_headers_slowly_is_disconnected() {
    let app = spawn_app_with(quick_limits()).await;
    let mut slow = connect(&app).await;
    slow.write_all(b"GET /api/v1/towns HTTP/1.1\r\nHost: stockpile\r\nX-Slow: ")
        .await
        .unwrap();
    // Closed by the header-read timeout (500 ms here), without an answer.
    let answered = read_to_close(&mut slow, Duration::from_secs(10)).await;
    assert!(!answered.contains("200 OK"), "{answered}");
    // Everyone else is served meanwhile and after.
    assert_eq!(app.get("/healthz", None).await.status, 200);

    // An idle connection after a request is closed too: it cannot be held for ever.
    let mut idle = connect(&app).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: stockpile\r\n\r\n")
        .await
        .unwrap();
    let answered = read_to_close(&mut idle, Duration::from_secs(10)).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    app.stop().await;
}

#[tokio::test]
async fn a_request_not_answered_in_time_gets_503_timeout() {
    let mut options = quick_limits();
    options.limits.request_timeout = Duration::from_secs(1);
    let app = spawn_app_with(options).await;
    let mut slow = connect(&app).await;
    let body = br#"{"power_cut": true}"#;
    slow.write_all(scenario_head(body.len()).as_bytes())
        .await
        .unwrap();
    slow.write_all(&body[..5]).await.unwrap();
    // The rest never comes: the request timeout (1 s here) answers.
    let raw = read_to_close(&mut slow, Duration::from_secs(15)).await;
    let (status, answer) = parse_answer(&raw);
    assert_eq!((status, &answer["error"]["code"]), (503, &json!("timeout")));
    app.stop().await;
}

#[tokio::test]
async fn expensive_requests_beyond_the_limit_get_503_overloaded_at_once() {
    let app = spawn_app_with(quick_limits()).await;
    app.seed();
    // One scenario holds the only permit while its body trickles in.
    let body = br#"{"road_cut_days": 3}"#;
    let mut holder = connect(&app).await;
    holder
        .write_all(scenario_head(body.len()).as_bytes())
        .await
        .unwrap();
    holder.write_all(&body[..3]).await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let answer = app
            .post_json("/api/v1/scenarios", Some(VIEWER), &json!({}))
            .await;
        if answer.status == 503 {
            break answer;
        }
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert!(
            tokio::time::Instant::now() < deadline,
            "a second scenario is never refused while the first holds the permit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(refused.error(), (503, "overloaded".into()));
    // Cheap reads are not limited.
    assert_eq!(app.get("/api/v1/towns", None).await.status, 200);

    // The holder finishes; the next scenario runs.
    holder.write_all(&body[3..]).await.unwrap();
    let raw = read_to_close(&mut holder, Duration::from_secs(10)).await;
    assert_eq!(parse_answer(&raw).0, 200, "{raw}");
    let answer = app
        .post_json("/api/v1/scenarios", Some(VIEWER), &json!({}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    app.stop().await;
}

#[tokio::test]
async fn bodies_over_a_routes_limit_get_413() {
    let app = spawn_app_with(AppOptions::default()).await;
    // 16 KiB for a sheltered count: valid JSON, padded.
    let padded = |n: usize, json: &str| {
        let mut body = json.trim_end_matches('}').to_owned();
        body.push_str(&" ".repeat(n));
        body.push('}');
        body.into_bytes()
    };
    let big_count = padded(17 * 1024, r#"{"sheltered": 5}"#);
    let answer = app
        .request(
            reqwest::Method::PUT,
            "/api/v1/towns/jingshan/sheltered",
            Some(ADMIN),
            Some(("application/json", big_count)),
        )
        .await;
    assert_eq!(answer.error(), (413, "body_too_large".into()));
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("16384")
    );

    // 2 MiB for a scenario: a surge naming many towns fits, 3 MiB does not.
    let fits = padded(100 * 1024, r#"{"power_cut": true}"#);
    let answer = app
        .request(
            reqwest::Method::POST,
            "/api/v1/scenarios",
            Some(VIEWER),
            Some(("application/json", fits)),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let too_big = padded(3 * 1024 * 1024, r#"{"power_cut": true}"#);
    let answer = app
        .request(
            reqwest::Method::POST,
            "/api/v1/scenarios",
            Some(VIEWER),
            Some(("application/json", too_big)),
        )
        .await;
    assert_eq!(answer.error(), (413, "body_too_large".into()));
    app.stop().await;
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish_and_takes_no_new_ones() {
    let app = spawn_app_with(quick_limits()).await;
    app.seed();
    let body = br#"{"power_cut": true}"#;
    let mut in_flight = connect(&app).await;
    in_flight
        .write_all(scenario_head(body.len()).as_bytes())
        .await
        .unwrap();
    in_flight.write_all(&body[..4]).await.unwrap();
    // The request is being served once a second one is refused for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app
        .post_json("/api/v1/scenarios", Some(VIEWER), &json!({}))
        .await
        .status
        != 503
    {
        assert!(tokio::time::Instant::now() < deadline, "never in flight");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    app.begin_shutdown();
    // No new connections once the listener is gone.
    let address = app.address.trim_start_matches("http://").to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&address).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepting connections after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The one in flight is answered in full.
    in_flight.write_all(&body[4..]).await.unwrap();
    let raw = read_to_close(&mut in_flight, Duration::from_secs(10)).await;
    let (status, outcome) = parse_answer(&raw);
    assert_eq!(status, 200, "{raw}");
    assert!(outcome["towns"].is_array(), "{outcome}");
    app.stop().await;
}
