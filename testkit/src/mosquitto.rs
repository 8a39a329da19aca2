//! A real Mosquitto broker on a free port.

use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{self, Binary, ServiceProcess};

const MOSQUITTO: Binary = Binary {
    name: "mosquitto",
    package: "mosquitto",
};
const MOSQUITTO_PASSWD: Binary = Binary {
    name: "mosquitto_passwd",
    package: "mosquitto",
};
const IP: Binary = Binary {
    name: "ip",
    package: "iproute2",
};

/// A network namespace the broker runs in, and the address clients reach it at.
#[derive(Debug, Clone)]
struct Netns {
    name: String,
    address: IpAddr,
}

/// How to configure a [`Mosquitto`] before starting it. Get one from [`Mosquitto::builder`].
#[derive(Debug, Clone, Default)]
pub struct MosquittoBuilder {
    users: Vec<(String, String)>,
    acl: Option<String>,
    max_inflight: Option<u32>,
    max_queued: Option<u32>,
    persistence: bool,
    netns: Option<Netns>,
    extra: Vec<String>,
}

impl MosquittoBuilder {
    /// Require these `(username, password)` pairs; anonymous clients are refused.
    /// Without users the broker allows anonymous clients.
    pub fn users(mut self, users: &[(&str, &str)]) -> Self {
        self.users = users
            .iter()
            .map(|(user, password)| ((*user).to_owned(), (*password).to_owned()))
            .collect();
        self
    }

    /// An ACL file's text (Mosquitto syntax: `user NAME` then `topic read|write|readwrite
    /// FILTER` lines; `pattern` lines may use `%u`/`%c`). Without it, every authenticated
    /// user may publish and subscribe anywhere.
    pub fn acl(mut self, text: &str) -> Self {
        self.acl = Some(text.to_owned());
        self
    }

    /// `max_inflight_messages`: QoS 1/2 messages in flight per client (Mosquitto's default 20).
    pub fn max_inflight(mut self, messages: u32) -> Self {
        self.max_inflight = Some(messages);
        self
    }

    /// `max_queued_messages`: messages queued per client beyond those in flight, e.g. for
    /// a persistent session while its subscriber is away (Mosquitto's default 1000).
    pub fn max_queued(mut self, messages: u32) -> Self {
        self.max_queued = Some(messages);
        self
    }

    /// Keep retained messages and persistent sessions across [`Mosquitto::stop`] and
    /// [`Mosquitto::start_again`] (written on a graceful stop, lost on [`Mosquitto::kill`]
    /// unless autosaved before).
    pub fn persistence(mut self, enabled: bool) -> Self {
        self.persistence = enabled;
        self
    }

    /// Run the broker inside network namespace `name` (through `ip netns exec`, so as
    /// root), listening on every address of the namespace, and reach it at `address`
    /// (e.g. the namespace's end of a veth pair): [`Mosquitto::url`] and the readiness
    /// probe use it. For link-loss tests, where the caller owns the namespace and the
    /// links into it and sets them down and up.
    pub fn netns(mut self, name: &str, address: IpAddr) -> Self {
        self.netns = Some(Netns {
            name: name.to_owned(),
            address,
        });
        self
    }

    /// A raw line appended to mosquitto.conf, for options this builder does not name.
    pub fn config_line(mut self, line: &str) -> Self {
        self.extra.push(line.to_owned());
        self
    }

    /// Start the broker and wait until it accepts connections.
    pub fn start(self) -> Mosquitto {
        let mosquitto = MOSQUITTO.locate();
        let (program, prefix) = match &self.netns {
            // `ip netns exec` execs the broker: its pid is the broker's, for signals.
            Some(netns) => (
                IP.locate(),
                vec![
                    "netns".into(),
                    "exec".into(),
                    netns.name.clone().into(),
                    mosquitto.into_os_string(),
                ],
            ),
            None => (mosquitto, Vec::new()),
        };
        let host = self
            .netns
            .as_ref()
            .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |netns| netns.address);
        for attempt in 1..=process::START_ATTEMPTS {
            let port = crate::free_port();
            let mut broker = ServiceProcess::new("mosquitto", program.clone());
            let conf_path = self.write_config(broker.dir(), port);
            let mut args = prefix.clone();
            args.extend(["-c".into(), conf_path.into_os_string()]);
            broker.set_args(args);
            broker.spawn();
            match broker.wait_ready(|| accepts_connections(host, port)) {
                Ok(()) => {
                    return Mosquitto {
                        host,
                        port,
                        process: broker,
                    };
                }
                Err(why)
                    if attempt < process::START_ATTEMPTS
                        && process::lost_port_race(&broker, &why) => {}
                Err(why) => broker.fail(&why, &format!("while starting on port {port}")),
            }
        }
        unreachable!("the last start attempt either returns or panics")
    }

    fn write_config(&self, dir: &Path, port: u16) -> PathBuf {
        let mut conf = String::from("# Written by testkit for one test.\n");
        // Mosquitto run as root drops to user `mosquitto`, which could not write to this
        // root-owned temp dir; `user root` keeps it as is. Ignored when not run as root.
        conf.push_str("user root\n");
        if self.netns.is_some() {
            // Every address of the namespace: its own loopback and its links.
            let _ = writeln!(conf, "listener {port}");
        } else {
            let _ = writeln!(conf, "listener {port} 127.0.0.1");
        }
        conf.push_str("log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n");
        conf.push_str("connection_messages true\n");
        if self.users.is_empty() {
            conf.push_str("allow_anonymous true\n");
        } else {
            conf.push_str("allow_anonymous false\n");
            let password_file = dir.join("passwd");
            write_password_file(&password_file, &self.users);
            let _ = writeln!(conf, "password_file {}", password_file.display());
        }
        if let Some(acl) = &self.acl {
            let acl_file = dir.join("acl");
            write_file(&acl_file, acl);
            let _ = writeln!(conf, "acl_file {}", acl_file.display());
        }
        if let Some(messages) = self.max_inflight {
            let _ = writeln!(conf, "max_inflight_messages {messages}");
        }
        if let Some(messages) = self.max_queued {
            let _ = writeln!(conf, "max_queued_messages {messages}");
        }
        if self.persistence {
            let data_dir = dir.join("data");
            fs::create_dir_all(&data_dir)
                .unwrap_or_else(|err| panic!("cannot create {}: {err}", data_dir.display()));
            // The trailing slash matters: Mosquitto appends the file name to it.
            let _ = writeln!(
                conf,
                "persistence true\npersistence_location {}/",
                data_dir.display()
            );
        } else {
            conf.push_str("persistence false\n");
        }
        for line in &self.extra {
            conf.push_str(line);
            conf.push('\n');
        }
        let conf_path = dir.join("mosquitto.conf");
        write_file(&conf_path, &conf);
        conf_path
    }
}

fn write_file(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|err| panic!("cannot write {}: {err}", path.display()));
}

/// Hash the passwords with Mosquitto's own tool, so the file is exactly what it expects.
fn write_password_file(path: &Path, users: &[(String, String)]) {
    let program = MOSQUITTO_PASSWD.locate();
    for (index, (user, password)) in users.iter().enumerate() {
        let mut command = Command::new(&program);
        command.arg("-b");
        if index == 0 {
            command.arg("-c");
        }
        let output = command
            .arg(path)
            .arg(user)
            .arg(password)
            .output()
            .unwrap_or_else(|err| panic!("cannot run {}: {err}", program.display()));
        assert!(
            output.status.success(),
            "mosquitto_passwd failed for user {user:?} ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// A running Mosquitto broker, listening on 127.0.0.1 on a port of its own, with its
/// config, password file, ACL, persistence and log in its own temp dir. Dropping it
/// kills the broker and deletes the dir.
#[derive(Debug)]
pub struct Mosquitto {
    /// Where clients reach it: 127.0.0.1, or the address given with a namespace.
    host: IpAddr,
    port: u16,
    process: ServiceProcess,
}

impl Mosquitto {
    /// A broker that allows anonymous clients, with Mosquitto's defaults otherwise.
    pub fn start() -> Self {
        Self::builder().start()
    }

    pub fn builder() -> MosquittoBuilder {
        MosquittoBuilder::default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:PORT` (the namespace's address instead, when it runs in one).
    pub fn url(&self) -> String {
        format!("mqtt://{}", SocketAddr::new(self.host, self.port))
    }

    /// The address clients reach the broker at: 127.0.0.1 unless it runs in a namespace.
    pub fn host(&self) -> IpAddr {
        self.host
    }

    /// Stop the broker gracefully (SIGTERM), as an operator's restart would; with
    /// persistence on, it saves its state first.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Kill the broker at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Start the broker again on the same port with the same config and persistence
    /// dir (stopping it first if it still runs), and wait until it accepts connections.
    pub fn start_again(&mut self) {
        self.process.stop();
        self.process.spawn();
        let (host, port) = (self.host, self.port);
        if let Err(why) = self.process.wait_ready(|| accepts_connections(host, port)) {
            self.process
                .fail(&why, &format!("while starting again on port {port}"));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// The broker's log (all runs).
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The temp dir holding mosquitto.conf, passwd, acl, data/ and mosquitto.log.
    pub fn dir(&self) -> &Path {
        self.process.dir()
    }
}

/// True when something accepts TCP connections on `host:port`.
fn accepts_connections(host: IpAddr, port: u16) -> bool {
    let addr = SocketAddr::new(host, port);
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}
