//! `stockpile demo`: everything in one process on embedded defaults, so a newcomer sees
//! Stockpile work within a minute: the embedded broker, the synthetic demo registry
//! (compiled in), the simulator on an accelerated clock with a scenario that drives
//! towns below target, ingest, SQLite in a temp dir, the API and the board.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use reserve::coverage::TownStatus;
use reserve::registry::{Registry, Source, load_registry};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Loaded, RegistrySource};
use crate::serve::{Service, Shared};

/// The demo registry, compiled in so the binary runs from any directory.
const DEMO_FILES: &[(&str, &str)] = &[
    ("registry.toml", include_str!("../../demo/registry.toml")),
    ("towns.csv", include_str!("../../demo/towns.csv")),
    ("facilities.csv", include_str!("../../demo/facilities.csv")),
    ("contacts.csv", include_str!("../../demo/contacts.csv")),
];

/// How often the console prints the city's state.
const CONSOLE_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub scenario: String,
    pub speed: f64,
    pub port: u16,
    pub mqtt_port: u16,
    pub seed: u64,
}

/// The synthetic demo registry (demo/), as compiled into the binary.
pub fn demo_registry() -> anyhow::Result<Registry> {
    let source = |name: &str| -> Result<Source, String> {
        DEMO_FILES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(n, text)| Source {
                name: format!("demo/{n}"),
                text: (*text).to_owned(),
            })
            .ok_or_else(|| format!("no embedded demo file {name}"))
    };
    let main = source("registry.toml").map_err(anyhow::Error::msg)?;
    load_registry(&main, &[], &mut |name| source(name))
        .map_err(|e| anyhow::anyhow!("the embedded demo registry does not load:\n{e}"))
}

/// Runs the demo until `shutdown`. Prints what to open and what to watch on stdout.
pub async fn run(options: DemoOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let scenario = match device_sim::Scenario::builtin(&options.scenario) {
        Ok(s) => s,
        Err(_) => {
            let path = PathBuf::from(&options.scenario);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "--scenario {:?}: not a built-in scenario ({}) nor a readable file",
                    options.scenario,
                    device_sim::builtin_names().join(", ")
                )
            })?;
            device_sim::Scenario::parse(&options.scenario, &text)?
        }
    };
    let registry = demo_registry()?;
    let data = tempfile::Builder::new()
        .prefix("stockpile-demo-")
        .tempdir()
        .context("create the demo's temp dir")?;
    let mqtt_url = format!("mqtt://127.0.0.1:{}", options.mqtt_port);
    let mut config = Config::default();
    config.mqtt.url = mqtt_url.clone();
    config.mqtt.client_id = "stockpile-demo".into();
    config.mqtt.embedded_broker = true;
    config.store.path = data.path().join("stockpile-demo.db");
    config.api.listen = format!("127.0.0.1:{}", options.port);
    config.api.public_read = true;
    let loaded = Loaded {
        config,
        registry,
        registry_source: RegistrySource {
            path: "demo/registry.toml (built in)".into(),
            tables: vec![
                "towns.csv".into(),
                "facilities.csv".into(),
                "contacts.csv".into(),
            ],
            is_config: false,
        },
    };
    let service = Service::start(loaded, shutdown.clone()).await?;
    let shared = service.shared.clone();
    while !shared.ingest_metrics.connected() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let start_days = scenario.start_days;
    let mut sim = device_sim::SimConfig::new(mqtt_url.clone(), scenario);
    sim.speed = options.speed;
    sim.seed = options.seed;
    // Shared connections: a default open-files limit of 1,024 would not hold one
    // connection per gateway (1,739); the simulator publishes each gateway's `offline`.
    sim.clients = device_sim::ClientMode::Multiplexed(16);
    // Every facility reports within seconds, so the board fills at once.
    sim.report_every = Some(Duration::from_secs(10));
    sim.client_id_prefix = "demo-sim".into();
    let simulator = device_sim::Simulator::new(Arc::clone(&shared.registry), sim)?;
    let sim_task = tokio::spawn(simulator.run(shutdown.clone()));

    let url = format!("http://{}", service.api_addr);
    let hours_per_minute = options.speed / 60.0;
    println!(
        "Stockpile demo: synthetic registry of {} towns and {} facilities (demo/, not real data).\n\
         \n  Wall board   {url}/\n  API          {url}/api/v1/overview   (OpenAPI: {url}/api/openapi.json)\n  \
         MQTT broker  {mqtt_url}   (embedded, in memory: for trying, not for production)\n  \
         SQLite       {}\n\
         \nScenario {:?} at speed {}: {hours_per_minute:.0} simulated hours per minute. Every town starts\n\
         with about {:.1} days of supplies and no restocks come; watch towns turn amber below 3.5\n\
         days and red below the 3-day target. Ctrl-C stops.\n",
        shared.registry.towns.len(),
        shared.registry.facilities.len(),
        data.path().join("stockpile-demo.db").display(),
        options.scenario,
        options.speed,
        start_days,
    );
    tokio::spawn(console(shared, shutdown.clone()));

    let outcome = service.wait().await;
    match sim_task.await {
        Ok(Ok(report)) => {
            tracing::info!(message = "Simulator stopped.", readings = report.readings)
        }
        Ok(Err(error)) => tracing::warn!(message = "Simulator failed.", %error),
        Err(error) => tracing::warn!(message = "Simulator task failed.", %error),
    }
    drop(data); // the temp dir goes with the demo
    outcome
}

/// Prints one line about the city every few seconds.
async fn console(shared: Shared, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(CONSOLE_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let (mut ok, mut warning, mut critical, mut unknown) = (0, 0, 0, 0);
        let mut worst: Option<(f64, String)> = None;
        {
            let ledger = shared.ledger.read().unwrap_or_else(|p| p.into_inner());
            for t in shared.registry.town_indices() {
                let f = ledger.figures(t);
                match f.status {
                    TownStatus::Ok => ok += 1,
                    TownStatus::Warning => warning += 1,
                    TownStatus::Critical => critical += 1,
                    TownStatus::Unknown => unknown += 1,
                }
                if let Some(d) = f.worst_days
                    && worst.as_ref().is_none_or(|(w, _)| d < *w)
                {
                    worst = Some((d, shared.registry.town(t).name.clone()));
                }
            }
        }
        let counts = shared.ingest_metrics.counts();
        let worst = worst
            .map(|(d, name)| format!("  worst: {name} {d:.2} days"))
            .unwrap_or_default();
        println!(
            "{}  towns: {ok} ok, {warning} warning, {critical} critical, {unknown} not yet reporting  readings: {}  rejected: {}{worst}",
            chrono::Local::now().format("%H:%M:%S"),
            counts.accepted,
            counts.rejected_total(),
        );
    }
}
