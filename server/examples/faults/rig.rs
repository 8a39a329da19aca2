//! What a fault runs against: a deployment in a temp dir, the `stockpile serve` process
//! with its log, and the two pieces of isolation only root can make (a small disk for
//! the store, a network namespace for the broker), each undone when dropped, also
//! when a fault panics.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::plan::Plan;

/// How long a start may take until ingest is subscribed (a restart after kill -9
/// replays readings first).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful stop (SIGTERM) may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A deployment in a temp dir: registry, config, and `data/` for the SQLite file (a
/// directory of its own, so a small disk can be mounted there).
#[derive(Debug)]
pub struct Deployment {
    pub dir: tempfile::TempDir,
}

impl Deployment {
    pub fn new(
        plan: &Plan,
        broker_url: &str,
        smtp_url: &str,
        influx_url: &str,
        influx_db: &str,
    ) -> Deployment {
        let sections = format!(
            "[mqtt]\nurl = \"{broker_url}\"\nclient_id = \"stockpile-faults\"\n\
             [store]\npath = \"data/stockpile.db\"\n\
             [api]\nlisten = \"127.0.0.1:0\"\npublic_read = true\n\
             [log]\nlevel = \"info\"\n\
             [alerts]\ngroup_wait = \"0s\"\n\
             [smtp]\nurl = \"{smtp_url}\"\nfrom = \"Stockpile <alerts@example.org>\"\n\
             [influx]\nurl = \"{influx_url}\"\napi = \"v1\"\ndatabase = \"{influx_db}\"\n"
        );
        Deployment::with_sections(plan, &sections)
    }

    /// A deployment whose config is the registry line and `sections` (the SQLite file
    /// must be `data/stockpile.db`).
    pub fn with_sections(plan: &Plan, sections: &str) -> Deployment {
        let dir = tempfile::Builder::new()
            .prefix("stockpile-faults-")
            .tempdir()
            .expect("create a temp dir for the deployment");
        std::fs::create_dir(dir.path().join("data")).expect("create data/");
        std::fs::write(dir.path().join("registry.toml"), plan.registry_toml())
            .expect("write registry.toml");
        let config = format!("registry = \"registry.toml\"\n{sections}");
        std::fs::write(dir.path().join("stockpile.toml"), config).expect("write stockpile.toml");
        Deployment { dir }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("stockpile.toml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn db(&self) -> PathBuf {
        self.data_dir().join("stockpile.db")
    }
}

/// Every line the service printed, across restarts, ANSI colours removed.
pub type Log = Arc<Mutex<Vec<String>>>;

/// The running `stockpile serve`.
#[derive(Debug)]
pub struct Stockpile {
    child: Child,
    log: Log,
}

impl Stockpile {
    /// Starts the service and waits until ingest is subscribed; its lines go to `log`.
    pub fn start(bin: &Path, deployment: &Deployment, log: &Log) -> Stockpile {
        let mut child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(deployment.config())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stderr = child.stderr.take().expect("piped stderr");
        let first_line = lock(log).len();
        {
            let log = Arc::clone(log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    lock(&log).push(strip_ansi(&line));
                }
            });
        }
        let mut service = Stockpile {
            child,
            log: Arc::clone(log),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let (api, subscribed) = {
                let lines = lock(log);
                let fresh = &lines[first_line.min(lines.len())..];
                let api = fresh
                    .iter()
                    .find(|l| l.contains("HTTP API and wall board listening"))
                    .and_then(|l| l.find("http://").map(|at| &l[at..]))
                    .map(|url| {
                        url.split_whitespace()
                            .next()
                            .unwrap_or("")
                            .trim_end_matches('/')
                            .to_owned()
                    });
                (api, fresh.iter().any(|l| l.contains("Subscribed.")))
            };
            // Both: the API is up, and ingest has its subscriptions from the broker.
            if api.is_some() && subscribed {
                return service;
            }
            if let Ok(Some(status)) = service.child.try_wait() {
                panic!(
                    "stockpile serve exited at start ({status}):\n{}",
                    tail(log, 40)
                );
            }
            assert!(
                Instant::now() < deadline,
                "stockpile serve was not subscribed within {START_TIMEOUT:?}:\n{}",
                tail(log, 40)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, as a crash or the OOM killer would.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait: `Some(code)` for an exit, `None` when it had to be killed.
    pub fn terminate(mut self) -> Option<i32> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status.code();
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        lock(&self.log).push(format!(
            "(faults: no exit within {STOP_TIMEOUT:?} of SIGTERM; killed)"
        ));
        None
    }
}

impl Drop for Stockpile {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The last `n` lines of the log.
pub fn tail(log: &Log, n: usize) -> String {
    let lines = lock(log);
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs a command that must succeed, naming it when it does not.
fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {} failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// A network namespace for the broker, reached through two veth pairs: one link for
/// stockpile (the one a fault cuts), one for the gateways (which stays up, so readings
/// keep arriving while stockpile is cut off). Deleted when dropped.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
    /// The host's end of stockpile's link.
    pub service_link: String,
    gateway_link: String,
    /// The broker's address on stockpile's link, and on the gateways' link.
    pub service_side: IpAddr,
    pub gateway_side: IpAddr,
}

impl Netns {
    pub fn create() -> Netns {
        let id = std::process::id();
        // 10.231.N.0/30 and 10.231.N.4/30, N from the pid so two runs do not collide.
        let n = 100 + (id % 150) as u8;
        let netns = Netns {
            name: format!("spf{id}"),
            service_link: format!("spf{id}s"),
            gateway_link: format!("spf{id}g"),
            service_side: IpAddr::V4(Ipv4Addr::new(10, 231, n, 1)),
            gateway_side: IpAddr::V4(Ipv4Addr::new(10, 231, n, 5)),
        };
        // From here on, Drop undoes whatever part was made.
        run("ip", &["netns", "add", &netns.name]);
        run("ip", &["-n", &netns.name, "link", "set", "lo", "up"]);
        for (link, host, broker) in [
            (
                &netns.service_link,
                format!("10.231.{n}.2/30"),
                format!("10.231.{n}.1/30"),
            ),
            (
                &netns.gateway_link,
                format!("10.231.{n}.6/30"),
                format!("10.231.{n}.5/30"),
            ),
        ] {
            let peer = format!("{link}p");
            run(
                "ip",
                &["link", "add", link, "type", "veth", "peer", "name", &peer],
            );
            run("ip", &["link", "set", &peer, "netns", &netns.name]);
            run("ip", &["addr", "add", &host, "dev", link]);
            run("ip", &["link", "set", link, "up"]);
            run(
                "ip",
                &["-n", &netns.name, "addr", "add", &broker, "dev", &peer],
            );
            run("ip", &["-n", &netns.name, "link", "set", &peer, "up"]);
        }
        netns
    }

    /// Sets stockpile's link down (`false`) or up (`true`).
    pub fn set_service_link(&self, up: bool) {
        run(
            "ip",
            &[
                "link",
                "set",
                &self.service_link,
                if up { "up" } else { "down" },
            ],
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end of a veth pair deletes both; deleting the namespace deletes
        // what is left in it. Errors: already gone.
        for link in [&self.service_link, &self.gateway_link] {
            let _ = Command::new("ip")
                .args(["link", "del", link])
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}
