//! An in-process HTTP server that records every request and answers with a status the
//! test chooses: the SMS gateway or webhook endpoint that cannot run here.
//!
//! It speaks just enough HTTP/1.1 for clients such as reqwest, ureq and curl
//! (Content-Length and chunked bodies, `Expect: 100-continue`) and closes every
//! connection after one exchange, so [`HttpReceiver::stop`] means "connection refused"
//! at once rather than a hang on a pooled connection.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A client that stalls mid-request is dropped after this long.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the accept loop checks whether it was asked to stop.
const ACCEPT_POLL: Duration = Duration::from_millis(10);

/// Largest request body recorded; a bigger one is answered 413.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// One request as the receiver got it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target as sent: path and query, e.g. `/send?to=%2B86138`.
    pub url: String,
    /// Header names and values in the order sent (names as the client wrote them).
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.url.split_once('?').map_or(&self.url, |(path, _)| path)
    }

    /// The query's parameters, percent-decoded, in order.
    pub fn query(&self) -> Vec<(String, String)> {
        self.url
            .split_once('?')
            .map(|(_, query)| decode_form(query))
            .unwrap_or_default()
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as UTF-8 (invalid sequences replaced).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON. Panics with the body when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "{} {} body is not JSON: {err}; body: {}",
                self.method,
                self.url,
                self.body_text()
            )
        })
    }

    /// The body parsed as `application/x-www-form-urlencoded` (what Twilio-style SMS
    /// gateways take), percent-decoded, in order.
    pub fn form(&self) -> Vec<(String, String)> {
        decode_form(&self.body_text())
    }
}

/// How the receiver answers.
#[derive(Debug)]
struct Answers {
    /// Answered when no one-off answer is queued.
    default: (u16, String),
    /// One-off answers, used first, in order.
    queued: VecDeque<(u16, String)>,
    /// Wait this long before answering, to make a client time out.
    delay: Duration,
}

#[derive(Debug)]
struct Shared {
    answers: Mutex<Answers>,
    requests: Mutex<Vec<RecordedRequest>>,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in a connection thread must not hide what was recorded before it.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running HTTP receiver on 127.0.0.1:PORT (in this process, on its own threads).
/// Answers `200 {"ok":true}` until told otherwise. Dropping it stops it.
#[derive(Debug)]
pub struct HttpReceiver {
    port: u16,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    accept_thread: Option<JoinHandle<()>>,
}

impl HttpReceiver {
    /// Listen on a free port and answer every request `200 {"ok":true}`.
    pub fn start() -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .unwrap_or_else(|err| panic!("cannot bind a port on 127.0.0.1: {err}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|err| panic!("cannot read the bound port: {err}"))
            .port();
        let shared = Arc::new(Shared {
            answers: Mutex::new(Answers {
                default: (200, r#"{"ok":true}"#.to_owned()),
                queued: VecDeque::new(),
                delay: Duration::ZERO,
            }),
            requests: Mutex::new(Vec::new()),
        });
        let mut receiver = Self {
            port,
            shared,
            stop: Arc::new(AtomicBool::new(false)),
            accept_thread: None,
        };
        receiver.serve(listener);
        receiver
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` (any path is accepted and recorded).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Answer every later request with this status and body (JSON bodies are sent as
    /// `application/json`, others as `text/plain`).
    pub fn set_response(&self, status: u16, body: &str) {
        locked(&self.shared.answers).default = (status, body.to_owned());
    }

    /// Answer the next request with this status and body, once; several calls queue
    /// up in order (e.g. 500, 500, then the default 200: a gateway failing twice).
    pub fn push_response(&self, status: u16, body: &str) {
        locked(&self.shared.answers)
            .queued
            .push_back((status, body.to_owned()));
    }

    /// Wait this long before answering each request (to exercise client timeouts).
    pub fn set_delay(&self, delay: Duration) {
        locked(&self.shared.answers).delay = delay;
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        locked(&self.shared.requests).clone()
    }

    /// Wait until at least `count` requests have arrived and return them all; panic
    /// after `timeout` saying how many did arrive.
    pub fn wait_for(&self, count: usize, timeout: Duration) -> Vec<RecordedRequest> {
        let deadline = Instant::now() + timeout;
        loop {
            let requests = self.requests();
            if requests.len() >= count {
                return requests;
            }
            if Instant::now() >= deadline {
                panic!(
                    "expected {count} HTTP request(s) within {timeout:?}, got {}: {:?}",
                    requests.len(),
                    requests
                        .iter()
                        .map(|request| format!("{} {}", request.method, request.url))
                        .collect::<Vec<_>>()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stop listening: connections are refused until [`HttpReceiver::start_again`].
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
    }

    /// Listen again on the same port, keeping the recorded requests and answers.
    pub fn start_again(&mut self) {
        self.stop();
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .unwrap_or_else(|err| panic!("cannot bind 127.0.0.1:{} again: {err}", self.port));
        self.serve(listener);
    }

    fn serve(&mut self, listener: TcpListener) {
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|err| panic!("cannot make the listener non-blocking: {err}"));
        self.stop = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&self.stop);
        let shared = Arc::clone(&self.shared);
        self.accept_thread = Some(std::thread::spawn(move || {
            accept_until_stopped(&listener, &stop, &shared);
        }));
    }
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_until_stopped(listener: &TcpListener, stop: &AtomicBool, shared: &Arc<Shared>) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, peer)) => {
                let shared = Arc::clone(shared);
                std::thread::spawn(move || handle_connection(stream, peer, &shared));
            }
            Err(err) if err.kind() == ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
            Err(_) => std::thread::sleep(ACCEPT_POLL),
        }
    }
}

/// Read one request, record it, answer it, close the connection.
fn handle_connection(stream: TcpStream, _peer: SocketAddr, shared: &Shared) {
    if stream.set_nonblocking(false).is_err()
        || stream.set_read_timeout(Some(READ_TIMEOUT)).is_err()
    {
        return;
    }
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let request = match read_request(&mut reader, &mut writer) {
        Ok(request) => request,
        Err(RequestError::TooLarge) => {
            let _ = write_response(&mut writer, 413, "request body too large");
            return;
        }
        Err(RequestError::Malformed | RequestError::Io) => {
            let _ = write_response(&mut writer, 400, "malformed request");
            return;
        }
    };
    locked(&shared.requests).push(request);
    let (status, body, delay) = {
        let mut answers = locked(&shared.answers);
        let (status, body) = answers
            .queued
            .pop_front()
            .unwrap_or_else(|| answers.default.clone());
        (status, body, answers.delay)
    };
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
    let _ = write_response(&mut writer, status, &body);
}

#[derive(Debug)]
enum RequestError {
    Io,
    Malformed,
    TooLarge,
}

impl From<std::io::Error> for RequestError {
    fn from(_: std::io::Error) -> Self {
        Self::Io
    }
}

fn read_request(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
) -> Result<RecordedRequest, RequestError> {
    let request_line = read_line(reader)?;
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(url)) = (parts.next(), parts.next()) else {
        return Err(RequestError::Malformed);
    };
    let (method, url) = (method.to_owned(), url.to_owned());

    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or(RequestError::Malformed)?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
    };

    if header("Expect").is_some_and(|value| value.eq_ignore_ascii_case("100-continue")) {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let chunked = header("Transfer-Encoding")
        .is_some_and(|value| value.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        read_chunked(reader)?
    } else {
        let length = match header("Content-Length") {
            Some(value) => value.parse().map_err(|_| RequestError::Malformed)?,
            None => 0,
        };
        if length > MAX_BODY_BYTES {
            return Err(RequestError::TooLarge);
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        body
    };
    Ok(RecordedRequest {
        method,
        url,
        headers,
        body,
    })
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> Result<Vec<u8>, RequestError> {
    let mut body = Vec::new();
    loop {
        let size_line = read_line(reader)?;
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| RequestError::Malformed)?;
        if body.len() + size > MAX_BODY_BYTES {
            return Err(RequestError::TooLarge);
        }
        if size == 0 {
            // Trailers, if any, end with an empty line.
            while !read_line(reader)?.is_empty() {}
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        if !read_line(reader)?.is_empty() {
            return Err(RequestError::Malformed);
        }
    }
}

/// One CRLF- (or LF-) terminated line without its terminator.
fn read_line(reader: &mut BufReader<TcpStream>) -> Result<String, RequestError> {
    let mut line = Vec::new();
    let read = reader.read_until(b'\n', &mut line)?;
    if read == 0 {
        return Err(RequestError::Io);
    }
    while line
        .last()
        .is_some_and(|byte| *byte == b'\n' || *byte == b'\r')
    {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| RequestError::Malformed)
}

fn write_response(writer: &mut TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    let content_type = if serde_json::from_str::<serde_json::Value>(body).is_ok() {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason_phrase(status),
        body.len()
    );
    writer.write_all(head.as_bytes())?;
    writer.write_all(body.as_bytes())?;
    writer.flush()
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// `a=1&b=x%20y+z` → `[("a","1"), ("b","x y z")]`.
fn decode_form(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = match bytes.get(index..index + 3) {
            Some([b'%', high, low]) => hex_value(*high).zip(hex_value(*low)),
            _ => None,
        };
        match (bytes[index], escaped) {
            (_, Some((high, low))) => {
                decoded.push(high << 4 | low);
                index += 3;
            }
            (b'+', None) => {
                decoded.push(b' ');
                index += 1;
            }
            (byte, None) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding_handles_plus_percent_and_utf8() {
        let cases = [
            ("a=1&b=x%20y+z", vec![("a", "1"), ("b", "x y z")]),
            (
                "To=%2B8613800000000&Body=%E6%99%AF%E5%B1%B1",
                vec![("To", "+8613800000000"), ("Body", "景山")],
            ),
            ("flag&empty=", vec![("flag", ""), ("empty", "")]),
            ("bad=%zz%4", vec![("bad", "%zz%4")]),
            ("", vec![]),
        ];
        for (input, expected) in cases {
            let expected: Vec<(String, String)> = expected
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect();
            assert_eq!(decode_form(input), expected, "decoding {input:?}");
        }
    }
}
