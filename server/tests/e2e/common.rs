//! Helpers shared by the binary's end-to-end tests: a deployment in a temp dir and the
//! running `stockpile` process with its log.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use store::{Store, StoreOptions};

pub const WAREHOUSES: usize = 10;

/// A deployment in a temp dir: registry, config, and the SQLite file the service writes.
pub struct Deployment {
    pub dir: tempfile::TempDir,
}

impl Deployment {
    /// Town `jingshan` with [`WAREHOUSES`] warehouses, town `donghua` with one.
    pub fn new(broker_url: &str) -> Deployment {
        Deployment::with_mqtt(&format!(
            "url = \"{broker_url}\"\nclient_id = \"stockpile-serve-test\"\n"
        ))
    }

    /// The same registry, with the given `[mqtt]` section body.
    pub fn with_mqtt(mqtt: &str) -> Deployment {
        Deployment::with_sections(mqtt, "")
    }

    /// The same registry, with the given `[mqtt]` section body and more sections.
    pub fn with_sections(mqtt: &str, extra: &str) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = String::from(
            "[[category]]\nid = \"water\"\nname = \"Drinking water\"\nunit = \"L\"\ndaily_need = 3.0\n\n\
             [[town]]\nid = \"jingshan\"\nname = \"景山街道\"\ndistrict = \"dongcheng\"\ncluster = \"c01\"\npopulation = 30000\n",
        );
        for i in 0..WAREHOUSES {
            registry.push_str(&format!(
                "\n[[facility]]\nid = \"js-wh{i}\"\ntown = \"jingshan\"\nkind = \"warehouse\"\n"
            ));
        }
        registry.push_str(
            "\n[[town]]\nid = \"donghua\"\nname = \"东华门街道\"\ndistrict = \"dongcheng\"\ncluster = \"c01\"\npopulation = 20000\n\
             \n[[facility]]\nid = \"dh-wh1\"\ntown = \"donghua\"\nkind = \"warehouse\"\n\
             \n[[contact]]\nname = \"Li Wei\"\nemail = \"li.wei@example.org\"\nlang = \"en\"\ntowns = [\"jingshan\"]\n",
        );
        std::fs::write(dir.path().join("registry.toml"), registry).unwrap();
        let config = format!(
            "registry = \"registry.toml\"\n[mqtt]\n{mqtt}\
             [store]\npath = \"stockpile.db\"\n[api]\nlisten = \"127.0.0.1:0\"\npublic_read = true\n\
             [log]\nlevel = \"info\"\n{extra}"
        );
        std::fs::write(dir.path().join("stockpile.toml"), config).unwrap();
        Deployment { dir }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("stockpile.toml")
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("stockpile.db")
    }

    pub fn stored(&self) -> u64 {
        if !self.db().exists() {
            return 0;
        }
        Store::open(&self.db(), StoreOptions::default())
            .and_then(|s| s.count_readings())
            .unwrap_or(0)
    }
}

/// The running binary, its stderr collected line by line.
pub struct Service {
    pub child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Service {
    pub fn start(config: &Path) -> Service {
        let child = Command::new(env!("CARGO_BIN_EXE_stockpile"))
            .args(["serve", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start stockpile serve");
        let service = Service::from_child(child);
        service.wait_for_log("Subscribed", Duration::from_secs(20));
        service
    }

    /// Collects the child's stderr (and stdout, if piped) line by line.
    pub fn from_child(mut child: Child) -> Service {
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        if let Some(stdout) = child.stdout.take() {
            let sink = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        Service { child, log }
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn wait_for_output(&self, needle: &str, timeout: Duration) {
        self.wait_for_log(needle, timeout)
    }

    /// The API's base URL, from the service's log line.
    pub fn api_url(&self) -> String {
        self.wait_for_log("HTTP API and wall board listening", Duration::from_secs(20));
        let log = self.log.lock().unwrap();
        let line = log
            .iter()
            .find(|l| l.contains("HTTP API and wall board listening"))
            .unwrap();
        let start = line.find("http://").expect("a URL in the log line");
        let url: String = line[start..]
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '\u{1b}')
            .collect();
        url.trim_end_matches('/').to_string()
    }

    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the service log within {timeout:?}:\n{}",
                self.log.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits for exit and returns the exit code (None when killed by a signal).
    pub fn wait(mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "stockpile did not exit within {timeout:?}:\n{}",
                self.log.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway's reading: `{"ts": now, <observation>}` published at QoS 1 on the facility's
/// topic by a client of its own, returning once the broker has acknowledged it.
pub async fn publish_reading(
    broker: &testkit::Mosquitto,
    town: &str,
    facility: &str,
    observation: &str,
) {
    use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
    let mut options = MqttOptions::new(format!("gw-{facility}"), "127.0.0.1", broker.port());
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let ts = chrono::Utc::now().timestamp_millis();
    client
        .publish(
            format!("stockpile/v1/{town}/{facility}/reading"),
            QoS::AtLeastOnce,
            false,
            format!(r#"{{"ts": {ts}, {observation}}}"#),
        )
        .await
        .unwrap();
    let acked = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Event::Incoming(Incoming::PubAck(_))) = eventloop.poll().await {
                return;
            }
        }
    })
    .await;
    assert!(
        acked.is_ok(),
        "the broker did not acknowledge {facility}'s reading"
    );
}

/// The HTTP side of a test: the API's URL, a client and the admin token its waits use.
pub struct Api {
    pub url: String,
    pub http: reqwest::Client,
    admin: &'static str,
}

impl Api {
    pub fn of(service: &Service, admin: &'static str) -> Api {
        Api {
            url: tokio::task::block_in_place(|| service.api_url()),
            http: reqwest::Client::new(),
            admin,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        self.send(self.http.get(format!("{}{path}", self.url)), token)
            .await
    }

    /// POSTs `body` (none: an empty request) to `path`.
    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = self.http.post(format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request, token).await
    }

    async fn send(
        &self,
        mut request: reqwest::RequestBuilder,
        token: Option<&str>,
    ) -> (u16, serde_json::Value) {
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        (
            status,
            answer.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// Waits (30 s at most) until `path`, read as admin, answers something `done`
    /// accepts; returns it.
    pub async fn wait_for(
        &self,
        path: &str,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self.get(path, Some(self.admin)).await;
            if status == 200 && done(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within 30 s; {path} answers {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
