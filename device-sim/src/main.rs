//! `device-sim`: simulated gateways for a registry, publishing to an MQTT broker.
//!
//! ```text
//! device-sim --config demo/stockpile.toml --scenario flood --speed 60
//! device-sim --config demo/registry.toml --broker mqtt://127.0.0.1:1883 --rate 20000 --duration 10s
//! ```
//!
//! Logs go to stderr (`RUST_LOG` filters them); the run's report is one JSON line on
//! stdout when it stops (Ctrl-C, SIGTERM, or `--duration`), for scripts/bench.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use device_sim::{ClientMode, Fault, LoadConfig, Qos, Scenario, SimConfig, Simulator, Targets};
use reserve::Registry;
use reserve::registry::load::REGISTRY_KEYS;
use reserve::registry::{Source, load_registry};
use tokio_util::sync::CancellationToken;

/// Simulated Stockpile gateways: scenarios, faults and load.
#[derive(Debug, Parser)]
#[command(name = "device-sim", version)]
struct Cli {
    /// A Stockpile config file (which names its registry) or a registry file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Broker URL; default: the config's [mqtt] url, else mqtt://127.0.0.1:1883.
    #[arg(long, value_name = "URL")]
    broker: Option<String>,
    /// A built-in scenario (normal, flood, earthquake, comms-cut, drill) or a .toml file.
    #[arg(long, default_value = "normal")]
    scenario: String,
    /// Simulated seconds per wall-clock second (60: an hour a minute).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Seed for every random choice of the run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Time between a gateway's readings, overriding the registry's report_every.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    report_every: Option<Duration>,
    /// Stop after this long (e.g. 90s, 10m); a load run's length (default 10s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// `per-facility` (one connection and Last Will per gateway) or a number of shared
    /// connections.
    #[arg(long, default_value = "per-facility")]
    clients: ClientMode,
    /// A fault to inject: stuck, die-without-will, clock-skew, malformed. Repeatable.
    #[arg(long, value_name = "KIND")]
    fault: Vec<Fault>,
    /// The clock-skew fault's offset, e.g. 10m (ahead) or -2h (behind).
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    skew: Option<String>,
    /// Cluster hit by a comms cut and by faults. Repeatable.
    #[arg(long, value_name = "ID")]
    cluster: Vec<String>,
    /// Towns hit by a comms cut and by faults, comma-separated.
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    towns: Vec<String>,
    /// Load run: this many readings per second for --duration.
    #[arg(long, value_name = "N")]
    rate: Option<u32>,
    /// Load run QoS.
    #[arg(long, default_value = "1")]
    qos: Qos,
    /// Load run: shared connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Load run: unacknowledged publishes allowed per connection.
    #[arg(long, default_value_t = 1000)]
    inflight: u16,
    /// Broker username for every gateway.
    #[arg(long, env = "DEVICE_SIM_USERNAME")]
    username: Option<String>,
    /// A file holding the broker password (or DEVICE_SIM_PASSWORD).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Client ids are PREFIX-{facility}; two simulators on one broker need different ones.
    #[arg(long, default_value = "sim")]
    client_id_prefix: String,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    reserve::parse_duration(s)
}

/// Load runs last this long without --duration.
const DEFAULT_LOAD_DURATION: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (registry, config_broker) = read_registry(&cli.config)?;
    let broker = cli
        .broker
        .clone()
        .or(config_broker)
        .unwrap_or_else(|| "mqtt://127.0.0.1:1883".into());
    let config = sim_config(&cli, broker)?;
    let simulator = Simulator::new(Arc::new(registry), config)?;

    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let report = simulator.run(shutdown).await?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn sim_config(cli: &Cli, broker: String) -> anyhow::Result<SimConfig> {
    let scenario = read_scenario(&cli.scenario)?;
    let mut config = SimConfig::new(broker, scenario);
    config.speed = cli.speed;
    config.seed = cli.seed;
    config.clients = cli.clients;
    config.report_every = cli.report_every;
    config.duration = cli.duration;
    config.targets = Targets {
        clusters: cli.cluster.clone(),
        towns: cli.towns.clone(),
    };
    config.client_id_prefix = cli.client_id_prefix.clone();
    config.username = cli.username.clone();
    config.password = match &cli.password_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading password file {}", path.display()))?
                .trim_end()
                .to_owned(),
        ),
        None => std::env::var("DEVICE_SIM_PASSWORD").ok(),
    };
    config.faults = cli.fault.clone();
    if let Some(skew) = &cli.skew {
        let Some(fault) = config
            .faults
            .iter_mut()
            .find(|f| matches!(f, Fault::ClockSkew { .. }))
        else {
            bail!("--skew needs --fault clock-skew");
        };
        let (ahead, text) = match skew.strip_prefix('-') {
            Some(rest) => (false, rest),
            None => (true, skew.strip_prefix('+').unwrap_or(skew)),
        };
        let by = reserve::parse_duration(text).map_err(|e| anyhow::anyhow!("--skew: {e}"))?;
        *fault = Fault::ClockSkew { ahead, by };
    }
    if let Some(rate) = cli.rate {
        let mut load = LoadConfig::new(rate, cli.duration.unwrap_or(DEFAULT_LOAD_DURATION));
        load.qos = cli.qos;
        load.connections = cli.connections;
        load.inflight = cli.inflight;
        config.load = Some(load);
    }
    Ok(config)
}

/// A built-in by name, else a scenario file (named after its stem).
fn read_scenario(arg: &str) -> anyhow::Result<Scenario> {
    if device_sim::builtin_names().contains(&arg) {
        return Ok(Scenario::builtin(arg)?);
    }
    let path = Path::new(arg);
    if !path.is_file() {
        // Says which names are built in.
        return Ok(Scenario::builtin(arg)?);
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading scenario {}", path.display()))?;
    let name = path
        .file_stem()
        .map_or_else(|| arg.to_owned(), |s| s.to_string_lossy().into_owned());
    Ok(Scenario::parse(&name, &text)?)
}

/// Loads the registry from a config file that names one (`registry = "…"`, relative to
/// the config) or from a registry file; also returns the config's `[mqtt] url`.
fn read_registry(path: &Path) -> anyhow::Result<(Registry, Option<String>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    // A file that is not even TOML goes straight to the registry loader, whose errors
    // name the line.
    let table: toml::Table = toml::from_str(&text).unwrap_or_default();
    let mqtt_url = table
        .get("mqtt")
        .and_then(|m| m.get("url"))
        .and_then(|u| u.as_str())
        .map(str::to_owned);
    let dir = path.parent().unwrap_or(Path::new("."));
    let (registry_path, registry_text) = match table.get("registry") {
        Some(toml::Value::String(name)) => {
            let registry_path = dir.join(name);
            let text = std::fs::read_to_string(&registry_path)
                .with_context(|| format!("reading registry {}", registry_path.display()))?;
            (registry_path, text)
        }
        _ => (path.to_owned(), text),
    };
    // Sections of a config file (mqtt, store, …) are the server's business.
    let ignored: Vec<String> = toml::from_str::<toml::Table>(&registry_text)
        .unwrap_or_default()
        .keys()
        .filter(|k| !REGISTRY_KEYS.contains(&k.as_str()))
        .cloned()
        .collect();
    let ignored: Vec<&str> = ignored.iter().map(String::as_str).collect();
    let registry_dir = registry_path.parent().unwrap_or(Path::new(".")).to_owned();
    let source = Source {
        name: registry_path.display().to_string(),
        text: registry_text,
    };
    let mut read_csv = |name: &str| -> Result<Source, String> {
        let csv_path = registry_dir.join(name);
        std::fs::read_to_string(&csv_path)
            .map(|text| Source {
                name: csv_path.display().to_string(),
                text,
            })
            .map_err(|e| format!("cannot read {}: {e}", csv_path.display()))
    };
    let registry = load_registry(&source, &ignored, &mut read_csv)
        .map_err(|errors| anyhow::anyhow!("{errors}"))
        .context("loading the registry")?;
    Ok((registry, mqtt_url))
}

async fn stop_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            shutdown.cancel();
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_or_a_registry_file_loads_the_same_registry() {
        let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo");
        let (from_config, url) = read_registry(&demo.join("stockpile.toml")).unwrap();
        assert_eq!(url.as_deref(), Some("mqtt://127.0.0.1:1883"));
        let (from_registry, no_url) = read_registry(&demo.join("registry.toml")).unwrap();
        assert_eq!(no_url, None);
        assert_eq!(from_config.facilities.len(), from_registry.facilities.len());
        assert!(from_config.facilities.len() > 1000);
    }

    #[test]
    fn a_scenario_is_a_builtin_name_or_a_file() {
        let dir = testkit::temp_dir("device-sim");
        let path = dir.path().join("heatwave.toml");
        std::fs::write(
            &path,
            "description = \"Hot.\"\n[warehouse]\nconsumption_by_category = { water = 2.0 }\n",
        )
        .unwrap();
        let own = read_scenario(path.to_str().unwrap()).unwrap();
        assert_eq!(
            (own.name.as_str(), own.consumption_of("water")),
            ("heatwave", 2.0)
        );
        assert_eq!(read_scenario("flood").unwrap().name, "flood");
        let err = read_scenario("tsunami").unwrap_err().to_string();
        assert!(err.contains("built-in: normal, flood"), "{err}");
    }

    #[test]
    fn flags_become_the_simulator_config() {
        let cli = Cli::parse_from([
            "device-sim",
            "--config",
            "x.toml",
            "--scenario",
            "comms-cut",
            "--speed",
            "60",
            "--fault",
            "clock-skew",
            "--skew",
            "-2h",
            "--cluster",
            "c02",
            "--towns",
            "a,b",
            "--rate",
            "5000",
            "--qos",
            "0",
            "--clients",
            "8",
        ]);
        let config = sim_config(&cli, "mqtt://127.0.0.1:1883".into()).unwrap();
        assert_eq!(config.scenario.name, "comms-cut");
        assert_eq!(config.speed, 60.0);
        assert_eq!(config.clients, ClientMode::Multiplexed(8));
        assert_eq!(
            config.faults,
            [Fault::ClockSkew {
                ahead: false,
                by: Duration::from_secs(7200)
            }]
        );
        assert_eq!(config.targets.clusters, ["c02"]);
        assert_eq!(config.targets.towns, ["a", "b"]);
        let load = config.load.unwrap();
        assert_eq!(
            (load.rate, load.duration, load.qos),
            (5000, DEFAULT_LOAD_DURATION, Qos::AtMostOnce)
        );

        let skew_alone = Cli::parse_from(["device-sim", "--config", "x.toml", "--skew", "5m"]);
        let err = sim_config(&skew_alone, String::new())
            .unwrap_err()
            .to_string();
        assert_eq!(err, "--skew needs --fault clock-skew");
    }
}
