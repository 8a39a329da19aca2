//! HTTP to InfluxDB: writes through `/write` (v1, reqwest) or `/api/v2/write` (v2, the
//! `influxdb2` crate), InfluxQL reads through `/query` (both).
//!
//! The `influxdb2` crate has known gaps this module closes: it does not escape `\` or
//! newlines and writes NaN as-is (we hand it finished lines built by
//! [`super::line`] instead of its data points), sets no timeout (every call is wrapped
//! in [`tokio::time::timeout`]), and panics on an invalid URL (checked here first). Its
//! gzip (`Content-Encoding: gzip`, at its best-compression level) applies only to its
//! stream-writing call, which is the one used.

use std::io::Write as _;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use influxdb2::api::write::TimestampPrecision;
use influxdb2::models::WriteDataPoint;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use secrecy::ExposeSecret as _;

use super::config::{InfluxApi, InfluxEndpoint};

/// Most bytes of an error answer kept for logs and errors.
const MAX_ERROR_BODY: usize = 1024;

/// What went wrong talking to InfluxDB.
#[derive(Debug, thiserror::Error)]
pub enum InfluxError {
    #[error("influx url {url:?} is not valid: {reason}")]
    BadUrl { url: String, reason: String },

    #[error("cannot build the HTTP client for {url}: {cause}")]
    Client { url: String, cause: String },

    #[error("cannot reach InfluxDB at {url}: {cause}")]
    Unreachable { url: String, cause: String },

    #[error("InfluxDB at {url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },

    #[error("InfluxDB at {url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },

    #[error("InfluxDB at {url} refused the query: {message}")]
    Query { url: String, message: String },

    #[error("InfluxDB at {url} sent an answer that is not InfluxQL JSON: {problem}")]
    BadAnswer { url: String, problem: String },
}

/// The result of one write request.
#[derive(Debug)]
pub(crate) enum WriteOutcome {
    Written,
    /// InfluxDB will never take these lines as they are (400 unparsable or a type
    /// conflict, 413 too large, 422 outside retention): resending is pointless.
    Refused {
        status: u16,
        body: String,
    },
    /// Down, slow, or refusing for a reason that may pass (5xx, 401/403 before the
    /// token is fixed, 404 before the database is created): keep the lines, retry.
    Failed(InfluxError),
}

/// A client for one InfluxDB endpoint.
#[derive(Debug)]
pub(crate) struct InfluxClient {
    endpoint: InfluxEndpoint,
    /// `endpoint.url` without a trailing slash.
    base: String,
    /// v1 writes and every `/query`.
    http: reqwest::Client,
    /// v2 writes.
    v2: Option<influxdb2::Client>,
}

impl InfluxClient {
    pub(crate) fn new(endpoint: &InfluxEndpoint) -> Result<InfluxClient, InfluxError> {
        let base = endpoint.url.trim_end_matches('/').to_owned();
        let bad_url = |reason: String| InfluxError::BadUrl {
            url: without_userinfo(&endpoint.url),
            reason,
        };
        let parsed = reqwest::Url::parse(&base).map_err(|e| bad_url(e.to_string()))?;
        // Every error names the URL, and so would the HTTP client's own: credentials in
        // it would reach the log. They have fields (and files) of their own.
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad_url(
                "credentials do not belong in the URL (they would show in logs); use influx.username with password_file, or token_file".into(),
            ));
        }
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad_url("the scheme must be http or https".into()));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(bad_url("no host".into()));
        }
        let client_error = |cause: String| InfluxError::Client {
            url: base.clone(),
            cause,
        };
        let http = reqwest::Client::builder()
            .timeout(endpoint.timeout)
            .build()
            .map_err(|e| client_error(e.to_string()))?;
        let v2 = match &endpoint.api {
            InfluxApi::V1 { .. } => None,
            InfluxApi::V2 { org, token, .. } => Some(
                influxdb2::ClientBuilder::new(base.as_str(), org.as_str(), token.expose_secret())
                    .gzip(true)
                    .build()
                    .map_err(|e| client_error(e.to_string()))?,
            ),
        };
        Ok(InfluxClient {
            endpoint: endpoint.clone(),
            base,
            http,
            v2,
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.base
    }

    /// Writes `lines` (millisecond timestamps) in one gzipped request.
    pub(crate) async fn write(&self, lines: &[String]) -> WriteOutcome {
        match (&self.endpoint.api, &self.v2) {
            (InfluxApi::V2 { bucket, .. }, Some(client)) => {
                self.write_v2(client, bucket, lines).await
            }
            _ => self.write_v1(lines).await,
        }
    }

    async fn write_v1(&self, lines: &[String]) -> WriteOutcome {
        let InfluxApi::V1 {
            database,
            username,
            password,
        } = &self.endpoint.api
        else {
            return WriteOutcome::Failed(self.unreachable("no v1 database configured".into()));
        };
        let body = match gzip_lines(lines) {
            Ok(body) => body,
            Err(e) => return WriteOutcome::Failed(self.unreachable(format!("gzip: {e}"))),
        };
        let mut request = self
            .http
            .post(format!("{}/write", self.base))
            .query(&[("db", database.as_str()), ("precision", "ms")])
            .header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .header(CONTENT_ENCODING, "gzip")
            .body(body);
        if let Some(user) = username {
            request = request.basic_auth(user, password.as_ref().map(|p| p.expose_secret()));
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                if response.status().is_success() {
                    return WriteOutcome::Written;
                }
                let body = response.text().await.unwrap_or_default();
                self.classify(status, body)
            }
            Err(e) => WriteOutcome::Failed(self.request_error(&e)),
        }
    }

    async fn write_v2(
        &self,
        client: &influxdb2::Client,
        bucket: &str,
        lines: &[String],
    ) -> WriteOutcome {
        let points: Vec<QueuedPoint> = lines.iter().cloned().map(QueuedPoint).collect();
        let write = client.write_with_precision(
            bucket,
            futures_util::stream::iter(points),
            TimestampPrecision::Milliseconds,
        );
        match tokio::time::timeout(self.endpoint.timeout, write).await {
            Err(_) => WriteOutcome::Failed(self.timeout()),
            Ok(Ok(())) => WriteOutcome::Written,
            Ok(Err(influxdb2::RequestError::Http { status, text })) => {
                self.classify(status.as_u16(), text)
            }
            Ok(Err(e)) => WriteOutcome::Failed(self.unreachable(e.to_string())),
        }
    }

    fn classify(&self, status: u16, body: String) -> WriteOutcome {
        let body = cut(body);
        match status {
            400 | 413 | 422 => WriteOutcome::Refused { status, body },
            _ => WriteOutcome::Failed(InfluxError::Status {
                url: self.base.clone(),
                status,
                body,
            }),
        }
    }

    /// Runs InfluxQL against the endpoint's database and returns the JSON answer
    /// (`{"results":[{"statement_id":0,"series":[…]}]}`, times in epoch ms), an error
    /// when any statement failed.
    pub(crate) async fn query(&self, influxql: &str) -> Result<serde_json::Value, InfluxError> {
        let mut request = self.http.get(format!("{}/query", self.base)).query(&[
            ("db", self.endpoint.database()),
            ("q", influxql),
            ("epoch", "ms"),
        ]);
        match &self.endpoint.api {
            InfluxApi::V1 {
                username: Some(user),
                password,
                ..
            } => request = request.basic_auth(user, password.as_ref().map(|p| p.expose_secret())),
            InfluxApi::V2 { token, .. } if !token.expose_secret().is_empty() => {
                let token = token.expose_secret();
                request = request.header(AUTHORIZATION, format!("Token {token}"));
            }
            _ => {}
        }
        let response = request.send().await.map_err(|e| self.request_error(&e))?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|e| self.request_error(&e))?;
        let answer: Option<serde_json::Value> = serde_json::from_str(&body).ok();
        let error_of =
            |v: &serde_json::Value| v.get("error").and_then(|e| e.as_str()).map(str::to_owned);
        if let Some(message) = answer.as_ref().and_then(error_of) {
            return Err(InfluxError::Query {
                url: self.base.clone(),
                message,
            });
        }
        if status != 200 {
            return Err(InfluxError::Status {
                url: self.base.clone(),
                status,
                body: cut(body),
            });
        }
        let answer = answer.ok_or_else(|| InfluxError::BadAnswer {
            url: self.base.clone(),
            problem: format!("not JSON: {}", cut(body)),
        })?;
        let results = answer["results"].as_array().into_iter().flatten();
        if let Some(message) = results.filter_map(error_of).next() {
            return Err(InfluxError::Query {
                url: self.base.clone(),
                message,
            });
        }
        Ok(answer)
    }

    fn request_error(&self, e: &reqwest::Error) -> InfluxError {
        if e.is_timeout() {
            self.timeout()
        } else {
            // The chain names the cause ("connection refused"), the top only the URL.
            let mut cause = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                cause = format!("{cause}: {s}");
                source = s.source();
            }
            self.unreachable(cause)
        }
    }

    fn unreachable(&self, cause: String) -> InfluxError {
        InfluxError::Unreachable {
            url: self.base.clone(),
            cause,
        }
    }

    fn timeout(&self) -> InfluxError {
        InfluxError::Timeout {
            url: self.base.clone(),
            timeout: self.endpoint.timeout,
        }
    }
}

/// A queued line handed to the `influxdb2` crate as its "data point": already
/// line protocol, written as it is.
struct QueuedPoint(String);

impl WriteDataPoint for QueuedPoint {
    fn write_data_point_to<W: std::io::Write>(&self, mut w: W) -> std::io::Result<()> {
        w.write_all(self.0.as_bytes())?;
        w.write_all(b"\n")
    }
}

/// The lines, newline-terminated, gzipped at the fastest level: on two cores the CPU
/// matters more than the last bytes (line protocol still shrinks ~10×).
fn gzip_lines(lines: &[String]) -> std::io::Result<Vec<u8>> {
    let size: usize = lines.iter().map(|l| l.len() + 1).sum();
    let mut gz = GzEncoder::new(Vec::with_capacity(size / 8), Compression::fast());
    for line in lines {
        gz.write_all(line.as_bytes())?;
        gz.write_all(b"\n")?;
    }
    gz.finish()
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_ERROR_BODY {
        let mut end = MAX_ERROR_BODY;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s.trim_end().to_owned()
}

/// `url` with any `user:password@` cut to `***@`, for error messages about a URL that
/// may not even parse.
fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod url_tests {
    use super::without_userinfo;

    #[test]
    fn credentials_in_a_url_are_cut_for_messages() {
        let cases = [
            (
                "http://user:secret@influx:8086/x",
                "http://***@influx:8086/x",
            ),
            ("http://user@influx:8086", "http://***@influx:8086"),
            ("http://influx:8086/a@b", "http://influx:8086/a@b"),
            ("not a url", "not a url"),
            ("http://:p@ss@host", "http://***@host"),
        ];
        for (url, want) in cases {
            assert_eq!(without_userinfo(url), want, "{url}");
        }
    }
}
