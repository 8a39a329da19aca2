//! A real ChromeDriver (Debian's `chromium-driver`) on a free port, driving headless
//! Chromium (Debian's `chromium`): for tests that use a page as a person would, through
//! a WebDriver client such as `fantoccini`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Map, Value, json};

use crate::http;
use crate::process::{self, Binary, ServiceProcess};

const CHROMEDRIVER: Binary = Binary {
    name: "chromedriver",
    package: "chromium-driver",
};

const CHROMIUM: Binary = Binary {
    name: "chromium",
    package: "chromium",
};

/// The browser runs without a display, a GPU, a sandbox (root in CI containers) or any
/// traffic of its own (updates, sync, safe-browsing lists), so a test depends on nothing
/// outside this machine.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    // /dev/shm is small in containers; Chromium crashes when it runs out.
    "--disable-dev-shm-usage",
    // A phone held sideways or a small laptop: the board must work there too.
    "--window-size=1280,900",
];

/// A running ChromeDriver on 127.0.0.1:PORT with its log and the browsers' profiles in
/// its own temp dir. Dropping it ends every browser it started (`/shutdown`), kills it
/// and deletes the dir.
#[derive(Debug)]
pub struct ChromeDriver {
    port: u16,
    chromium: PathBuf,
    /// Profiles handed out, so each browser session gets a fresh one.
    profiles: AtomicUsize,
    process: ServiceProcess,
}

impl ChromeDriver {
    /// Start ChromeDriver and wait until `/status` says it is ready. Panics naming the
    /// Debian package when `chromium` or `chromedriver` is missing: a browser test never
    /// skips silently.
    pub fn start() -> Self {
        let chromium = CHROMIUM.locate();
        let program = CHROMEDRIVER.locate();
        for attempt in 1..=process::START_ATTEMPTS {
            let port = crate::free_port();
            let mut driver = ServiceProcess::new("chromedriver", program.clone());
            driver.set_args([format!("--port={port}"), "--log-level=INFO".to_owned()]);
            driver.spawn();
            match driver.wait_ready(|| ready(port)) {
                Ok(()) => {
                    return Self {
                        port,
                        chromium,
                        profiles: AtomicUsize::new(0),
                        process: driver,
                    };
                }
                Err(why)
                    if attempt < process::START_ATTEMPTS
                        && process::lost_port_race(&driver, &why) => {}
                Err(why) => driver.fail(&why, &format!("while starting on port {port}")),
            }
        }
        unreachable!("the last start attempt either returns or panics")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`, the WebDriver endpoint a client connects to.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The capabilities of a new session: headless Chromium with a fresh profile in this
    /// driver's temp dir (no state shared with another session or an earlier run).
    pub fn capabilities(&self) -> Map<String, Value> {
        let n = self.profiles.fetch_add(1, Ordering::Relaxed);
        let profile = self.process.dir().join(format!("profile-{n}"));
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.chromium.display().to_string(),
                "args": args,
            },
        });
        match capabilities {
            Value::Object(map) => map,
            _ => unreachable!("a JSON object literal"),
        }
    }

    /// Everything ChromeDriver logged, browser start-up failures included.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // ChromeDriver quits its browsers on /shutdown; killed outright, it would leave
        // them running. The process guard then kills whatever is left.
        let _ = http::try_get(&format!("{}/shutdown", self.url()), &[]);
    }
}

fn ready(port: u16) -> bool {
    http::try_get(&format!("http://127.0.0.1:{port}/status"), &[])
        .ok()
        .filter(|answer| answer.status == 200)
        .and_then(|answer| serde_json::from_str::<Value>(&answer.body).ok())
        .is_some_and(|status| status["value"]["ready"] == true)
}
