//! A real InfluxDB 1.x (Debian's `influxd`) on a free port.

use std::fs;
use std::path::{Path, PathBuf};

use crate::http::{self, HttpResponse};
use crate::process::{self, Binary, ServiceProcess};

const INFLUXD: Binary = Binary {
    name: "influxd",
    package: "influxdb",
};

/// How to configure an [`Influx1`] before starting it. Get one from [`Influx1::builder`].
#[derive(Debug, Clone, Default)]
pub struct Influx1Builder {
    admin: Option<(String, String)>,
}

impl Influx1Builder {
    /// Turn on authentication and create this admin user at the first start. The
    /// helper methods ([`Influx1::query`], [`Influx1::write`], ...) then send its
    /// credentials; anything else must authenticate itself.
    pub fn auth(mut self, admin_user: &str, password: &str) -> Self {
        self.admin = Some((admin_user.to_owned(), password.to_owned()));
        self
    }

    /// Start InfluxDB and wait until `/ping` answers.
    pub fn start(self) -> Influx1 {
        let program = INFLUXD.locate();
        for attempt in 1..=process::START_ATTEMPTS {
            let port = crate::free_port();
            let rpc_port = crate::free_port();
            let mut server = ServiceProcess::new("influxd", program.clone());
            let config = write_config(server.dir(), port, rpc_port, self.admin.is_some());
            server.set_args(["run".into(), "-config".into(), config.into_os_string()]);
            server.spawn();
            match server.wait_ready(|| pings(port)) {
                Ok(()) => {
                    let influx = Influx1 {
                        port,
                        admin: self.admin,
                        process: server,
                    };
                    influx.create_admin();
                    return influx;
                }
                Err(why)
                    if attempt < process::START_ATTEMPTS
                        && process::lost_port_race(&server, &why) => {}
                Err(why) => server.fail(&why, &format!("while starting on port {port}")),
            }
        }
        unreachable!("the last start attempt either returns or panics")
    }
}

fn write_config(temp_dir: &Path, port: u16, rpc_port: u16, auth: bool) -> PathBuf {
    let dir = temp_dir.display();
    // Everything not named keeps influxd's default. The Debian build names the
    // usage-reporting switch `reporting-enabled` (upstream: `reporting-disabled`).
    let config = format!(
        r#"# Written by testkit for one test.
reporting-enabled = false
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{dir}/meta"

[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  query-log-enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  auth-enabled = {auth}
  log-enabled = true
  suppress-write-log = true
  pprof-enabled = false
  unix-socket-enabled = false
"#
    );
    let path = temp_dir.join("influxdb.conf");
    fs::write(&path, config).unwrap_or_else(|err| panic!("cannot write {}: {err}", path.display()));
    path
}

fn pings(port: u16) -> bool {
    http::try_get(&format!("http://127.0.0.1:{port}/ping"), &[])
        .is_ok_and(|response| response.status == 204)
}

/// A running InfluxDB 1.x (HTTP API on 127.0.0.1:PORT, RPC on another free port), with
/// meta, data, WAL and log in its own temp dir. No auth unless the builder asked for it.
/// Dropping it kills the server and deletes the dir.
#[derive(Debug)]
pub struct Influx1 {
    port: u16,
    admin: Option<(String, String)>,
    process: ServiceProcess,
}

impl Influx1 {
    /// InfluxDB without authentication.
    pub fn start() -> Self {
        Self::builder().start()
    }

    pub fn builder() -> Influx1Builder {
        Influx1Builder::default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The admin user and password when started with [`Influx1Builder::auth`].
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.admin
            .as_ref()
            .map(|(user, password)| (user.as_str(), password.as_str()))
    }

    /// `CREATE DATABASE name`.
    pub fn create_database(&self, name: &str) {
        let statement = format!("CREATE DATABASE {}", quote_identifier(name));
        self.post_query(None, &statement);
    }

    /// Run InfluxQL against `db` through `GET /query` and return the JSON answer
    /// (`{"results":[{"statement_id":0,"series":[...]}]}`). Panics on an HTTP error or
    /// an error in any statement's result, quoting it.
    pub fn query(&self, db: &str, influxql: &str) -> serde_json::Value {
        let mut params = vec![("db", db), ("q", influxql), ("epoch", "ms")];
        params.extend(self.auth_params());
        let response = http::get(&format!("{}/query", self.url()), &params);
        checked_results(&response, influxql)
    }

    /// The values of the first series of a query, row by row, as `query` returns them
    /// (the first column is `time` in epoch milliseconds). Empty when nothing matched.
    pub fn query_rows(&self, db: &str, influxql: &str) -> Vec<Vec<serde_json::Value>> {
        let answer = self.query(db, influxql);
        answer["results"][0]["series"][0]["values"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|row| row.as_array().cloned().unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Write line protocol (nanosecond timestamps) to `db` through `POST /write`.
    /// Panics unless InfluxDB answers 204.
    pub fn write(&self, db: &str, lines: &str) {
        let mut params = vec![("db", db)];
        params.extend(self.auth_params());
        let response = http::post(
            &format!("{}/write", self.url()),
            &params,
            "text/plain; charset=utf-8",
            lines.as_bytes(),
        );
        assert_eq!(
            response.status, 204,
            "InfluxDB refused the write to {db}: {}",
            response.body
        );
    }

    /// Stop InfluxDB gracefully (SIGTERM).
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Kill InfluxDB at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Freeze InfluxDB (SIGSTOP): connections are still accepted by the kernel, but
    /// nothing answers, as with a server hung on its disk. [`Influx1::resume`] thaws
    /// it; [`Influx1::kill`] ends it even while frozen.
    pub fn pause(&mut self) {
        self.process.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    /// Thaw InfluxDB after [`Influx1::pause`] (SIGCONT).
    pub fn resume(&mut self) {
        self.process.signal(nix::sys::signal::Signal::SIGCONT);
    }

    /// Start InfluxDB again on the same port with the same data (stopping it first if
    /// it still runs), and wait until `/ping` answers.
    pub fn start_again(&mut self) {
        self.process.stop();
        self.process.spawn();
        let port = self.port;
        if let Err(why) = self.process.wait_ready(|| pings(port)) {
            self.process
                .fail(&why, &format!("while starting again on port {port}"));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// InfluxDB's log (all runs).
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The temp dir holding influxdb.conf, meta/, data/, wal/ and influxd.log.
    pub fn dir(&self) -> &Path {
        self.process.dir()
    }

    fn auth_params(&self) -> Vec<(&str, &str)> {
        match &self.admin {
            Some((user, password)) => vec![("u", user.as_str()), ("p", password.as_str())],
            None => Vec::new(),
        }
    }

    fn post_query(&self, db: Option<&str>, statement: &str) -> serde_json::Value {
        let mut params = vec![("q", statement)];
        if let Some(db) = db {
            params.push(("db", db));
        }
        params.extend(self.auth_params());
        let response = http::post(
            &format!("{}/query", self.url()),
            &params,
            "application/x-www-form-urlencoded",
            b"",
        );
        checked_results(&response, statement)
    }

    /// InfluxDB lets the first admin be created without credentials.
    fn create_admin(&self) {
        let Some((user, password)) = &self.admin else {
            return;
        };
        let statement = format!(
            "CREATE USER {} WITH PASSWORD '{}' WITH ALL PRIVILEGES",
            quote_identifier(user),
            password.replace('\\', "\\\\").replace('\'', "\\'")
        );
        let response = http::post(
            &format!("{}/query", self.url()),
            &[("q", statement.as_str())],
            "application/x-www-form-urlencoded",
            b"",
        );
        checked_results(&response, "CREATE USER ...");
    }
}

fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

fn checked_results(response: &HttpResponse, statement: &str) -> serde_json::Value {
    assert_eq!(
        response.status, 200,
        "InfluxDB refused {statement:?} (status {}): {}",
        response.status, response.body
    );
    let answer = response.json();
    if let Some(error) = answer.get("error") {
        panic!("InfluxDB refused {statement:?}: {error}");
    }
    let results = answer["results"].as_array().cloned().unwrap_or_default();
    for result in &results {
        if let Some(error) = result.get("error") {
            panic!("InfluxDB refused {statement:?}: {error}");
        }
    }
    answer
}
