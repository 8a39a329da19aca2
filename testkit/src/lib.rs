//! Dev-only: starts real Mosquitto, InfluxDB, VictoriaMetrics and an SMTP server on free
//! ports for tests, plus an in-process HTTP receiver for SMS-gateway and webhook tests.
//!
//! Every service runs as a real process on 127.0.0.1, on a port of its own, with its
//! config, data and log in a temp dir of its own, so tests run in parallel and leave
//! nothing behind: dropping the handle kills the process and deletes the dir.
//!
//! - A missing binary is a panic that names it and its Debian package
//!   (`mosquitto not found on PATH (apt-get install mosquitto); scripts/test installs it`).
//!   Nothing is skipped silently.
//! - `start()` returns once the service answers (TCP connect or its health endpoint),
//!   or panics after a timeout quoting the tail of the service's log.
//! - When a test fails, each service still alive prints its log's tail to stderr as it
//!   is dropped, so the failing test's output shows what the service saw.
//! - Everything is blocking (std::process, a blocking HTTP client), so the kit works
//!   from `#[test]` and `#[tokio::test]` alike. Starting takes from tens of milliseconds
//!   (Mosquitto) to a second or two (InfluxDB). Careful in async tests: `wait_for`
//!   sleeps on the calling thread, so on a current-thread runtime the code under test
//!   (spawned on the same runtime) cannot make progress meanwhile. Use
//!   `#[tokio::test(flavor = "multi_thread")]`, or `spawn_blocking`, or poll the quick
//!   `messages()`/`requests()` with `tokio::time::sleep` between calls.
//!
//! | Service (Debian package) | Start | Handle |
//! |---|---|---|
//! | Mosquitto 2.0 (`mosquitto`) | [`Mosquitto::start`], [`Mosquitto::builder`] | `url()` = `mqtt://127.0.0.1:PORT` |
//! | InfluxDB 1.6 (`influxdb`) | [`Influx1::start`], [`Influx1::builder`] | `url()` = `http://127.0.0.1:PORT`, `query`, `query_rows`, `write`, `create_database` |
//! | VictoriaMetrics 1.79 (`victoria-metrics`) | [`VictoriaMetrics::start`] | `url()`, `export`, `export_json`, `flush` |
//! | SMTP, aiosmtpd (`python3-aiosmtpd`) | [`SmtpServer::start`], [`SmtpServer::builder`] | `url()` = `smtp://127.0.0.1:PORT`, `messages`, `wait_for`, `set_reject` |
//! | ChromeDriver with headless Chromium (`chromium-driver`, `chromium`) | [`ChromeDriver::start`] | `url()` = the WebDriver endpoint, `capabilities()` for a new session, `log()` (no restart) |
//! | HTTP receiver (in-process) | [`HttpReceiver::start`] | `url()`, `requests`, `wait_for`, `set_response`, `push_response`, `set_delay` |
//!
//! Every handle has `port()`, `url()`, `stop()` and `start_again()` (same port, same
//! config, same data: for "broker restart", "InfluxDB down", "SMTP down then up"
//! tests). The process-backed ones also have `kill()` (SIGKILL, as a crash),
//! `is_running()`, `log()` (stdout and stderr of all runs) and `dir()` (their temp dir).
//! `stop()` is graceful (SIGTERM, then SIGKILL after 15 s), so Mosquitto saves its
//! persistence file. InfluxDB also has `pause()`/`resume()` (SIGSTOP/SIGCONT: a server
//! that hangs), and Mosquitto can run in a network namespace the caller made
//! ([`MosquittoBuilder::netns`], as root: link-loss tests).
//!
//! Network namespaces joined by veth pairs, and a TCP relay into them: [`netns`] (as
//! root: a real link cut between two sites).
//!
//! Also: [`free_port`], [`temp_dir`], [`require_binary`] (for a test that runs another
//! tool, e.g. `mosquitto_pub`), and [`http`], a blocking client that returns every
//! status as an answer.
//!
//! ```no_run
//! let broker = testkit::Mosquitto::builder()
//!     .users(&[("ingest", "pw"), ("gw-jingshan", "pw")])
//!     .acl("user ingest\ntopic read stockpile/#\n\nuser gw-jingshan\ntopic write stockpile/v1/jingshan/#\n")
//!     .start();
//! let mqtt_url = broker.url(); // mqtt://127.0.0.1:PORT
//! # let _ = mqtt_url;
//!
//! let smtp = testkit::SmtpServer::start();
//! // ... point the service under test at smtp.url(), make it send one alert ...
//! let mails = smtp.wait_for(1, std::time::Duration::from_secs(5));
//! assert!(mails[0].subject.contains("jingshan"));
//! ```
//!
//! The SMTP server runs Python with `aiosmtpd`; the interpreter is `$STOCKPILE_TEST_PYTHON`
//! if set, else the first of `/usr/bin/python3` and `python3` on PATH that imports it.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, PoisonError};

mod chromedriver;
mod disk;
pub mod http;
mod http_receiver;
mod influx;
mod mosquitto;
pub mod netns;
mod process;
mod smtp;
mod victoria;

pub use chromedriver::ChromeDriver;
pub use disk::SmallDisk;
pub use http_receiver::{HttpReceiver, RecordedRequest};
pub use influx::{Influx1, Influx1Builder};
pub use mosquitto::{Mosquitto, MosquittoBuilder};
pub use process::require_binary;
pub use smtp::{ReceivedMail, SmtpServer, SmtpServerBuilder};
pub use victoria::VictoriaMetrics;

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it). Never returns
/// the same port twice within one test process, so services started side by side in
/// one process cannot collide; services retry on a new port if another process took it.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .unwrap_or_else(|err| panic!("cannot bind a port on 127.0.0.1: {err}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|err| panic!("cannot read the bound port: {err}"))
            .port();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
        if handed_out.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// A fresh temp dir, deleted when dropped; `what` appears in its name
/// (`/tmp/testkit-mosquitto-XXXXXX`) to tell leftovers apart.
pub fn temp_dir(what: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("testkit-{what}-"))
        .tempdir()
        .unwrap_or_else(|err| panic!("cannot create a temp dir: {err}"))
}
