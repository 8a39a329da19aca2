//! A small blocking HTTP client for tests, built on `ureq`: every status is an answer
//! (a 500 is something a test may want to see), only transport failures are errors.

use std::time::Duration;

/// Per-request limit: a test that hangs on a dead service should fail, not stall.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A response: status and body as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

impl HttpResponse {
    /// The body parsed as JSON. Panics with the body when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|err| {
            panic!(
                "response (status {}) is not JSON: {err}; body: {}",
                self.status, self.body
            )
        })
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .build()
        .into()
}

fn finish(
    url: &str,
    result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<HttpResponse, String> {
    let mut response = result.map_err(|err| format!("request to {url} failed: {err}"))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_string()
        .map_err(|err| format!("reading the response from {url} failed: {err}"))?;
    Ok(HttpResponse { status, body })
}

/// GET `url` with the given query parameters (encoded here).
pub fn try_get(url: &str, query: &[(&str, &str)]) -> Result<HttpResponse, String> {
    let request = agent().get(url).query_pairs(query.iter().copied());
    finish(url, request.call())
}

/// POST `body` to `url` with the given query parameters and content type.
pub fn try_post(
    url: &str,
    query: &[(&str, &str)],
    content_type: &str,
    body: &[u8],
) -> Result<HttpResponse, String> {
    let request = agent()
        .post(url)
        .query_pairs(query.iter().copied())
        .header("Content-Type", content_type);
    finish(url, request.send(body))
}

/// [`try_get`] that panics on a transport failure (connection refused, timeout).
pub fn get(url: &str, query: &[(&str, &str)]) -> HttpResponse {
    try_get(url, query).unwrap_or_else(|err| panic!("{err}"))
}

/// [`try_post`] that panics on a transport failure (connection refused, timeout).
pub fn post(url: &str, query: &[(&str, &str)], content_type: &str, body: &[u8]) -> HttpResponse {
    try_post(url, query, content_type, body).unwrap_or_else(|err| panic!("{err}"))
}
