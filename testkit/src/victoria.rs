//! A real VictoriaMetrics (Debian's `victoria-metrics`) on a free port: the stand-in for
//! InfluxDB 2.x in tests, since it accepts line protocol on `/api/v2/write`.

use std::path::Path;

use crate::http;
use crate::process::{self, Binary, ServiceProcess};

const VICTORIA_METRICS: Binary = Binary {
    name: "victoria-metrics",
    package: "victoria-metrics",
};

/// A running single-node VictoriaMetrics on 127.0.0.1:PORT with its storage and log in
/// its own temp dir. Retention is 100 years, so tests may write any historical
/// timestamp. Dropping it kills the server and deletes the dir.
#[derive(Debug)]
pub struct VictoriaMetrics {
    port: u16,
    process: ServiceProcess,
}

impl VictoriaMetrics {
    /// Start VictoriaMetrics and wait until `/health` answers.
    pub fn start() -> Self {
        let program = VICTORIA_METRICS.locate();
        for attempt in 1..=process::START_ATTEMPTS {
            let port = crate::free_port();
            let mut server = ServiceProcess::new("victoria-metrics", program.clone());
            let storage = server.dir().join("data");
            server.set_args([
                format!("-httpListenAddr=127.0.0.1:{port}"),
                format!("-storageDataPath={}", storage.display()),
                // The default (1 month) would drop points a test dates in the past.
                "-retentionPeriod=100y".to_owned(),
                // Queries see what was just written, without the usual 30 s offset.
                "-search.latencyOffset=0s".to_owned(),
                "-search.disableCache".to_owned(),
            ]);
            server.spawn();
            match server.wait_ready(|| healthy(port)) {
                Ok(()) => {
                    return Self {
                        port,
                        process: server,
                    };
                }
                Err(why)
                    if attempt < process::START_ATTEMPTS
                        && process::lost_port_race(&server, &why) => {}
                Err(why) => server.fail(&why, &format!("while starting on port {port}")),
            }
        }
        unreachable!("the last start attempt either returns or panics")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`; an InfluxDB v2 client writes to `{url}/api/v2/write`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Make everything written so far visible to queries and exports
    /// (`/internal/force_flush`); VictoriaMetrics otherwise buffers for a few seconds.
    pub fn flush(&self) {
        let response = http::get(&format!("{}/internal/force_flush", self.url()), &[]);
        assert_eq!(
            response.status, 200,
            "VictoriaMetrics refused to flush: {}",
            response.body
        );
    }

    /// Flush, then export the series matching the selector `series_match` (e.g.
    /// `{__name__=~"stock_.*",town="jingshan"}`) through `/api/v1/export`: one JSON
    /// object per line and series, `{"metric":{...},"values":[...],"timestamps":[...]}`.
    /// Line protocol `stock,town=T quantity=5` becomes the metric `stock_quantity`.
    pub fn export(&self, series_match: &str) -> String {
        self.flush();
        let response = http::get(
            &format!("{}/api/v1/export", self.url()),
            &[("match[]", series_match)],
        );
        assert_eq!(
            response.status, 200,
            "VictoriaMetrics refused to export {series_match}: {}",
            response.body
        );
        response.body
    }

    /// [`VictoriaMetrics::export`] parsed: one JSON value per series.
    pub fn export_json(&self, series_match: &str) -> Vec<serde_json::Value> {
        self.export(series_match)
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|err| panic!("export line is not JSON ({err}): {line}"))
            })
            .collect()
    }

    /// Stop VictoriaMetrics gracefully (SIGTERM).
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Kill VictoriaMetrics at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Start VictoriaMetrics again on the same port with the same storage (stopping it
    /// first if it still runs), and wait until `/health` answers.
    pub fn start_again(&mut self) {
        self.process.stop();
        self.process.spawn();
        let port = self.port;
        if let Err(why) = self.process.wait_ready(|| healthy(port)) {
            self.process
                .fail(&why, &format!("while starting again on port {port}"));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// VictoriaMetrics' log (all runs).
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The temp dir holding data/ and victoria-metrics.log.
    pub fn dir(&self) -> &Path {
        self.process.dir()
    }
}

fn healthy(port: u16) -> bool {
    http::try_get(&format!("http://127.0.0.1:{port}/health"), &[])
        .is_ok_and(|response| response.status == 200)
}
