//! `stockpile demo`: everything in one process on embedded defaults, so a newcomer sees
//! Stockpile work within a minute: the embedded broker, the synthetic demo registry
//! (compiled in), the simulator on an accelerated clock with a scenario that drives
//! towns below target, ingest, SQLite in a temp dir, the API and the board. Alerts go
//! out as email into a mailbox directory in the temp dir (or through `--smtp`), and
//! the console shows each message as it is delivered.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alerts::redact::url_origin;
use alerts::{NotificationFilter, NotificationView};
use anyhow::Context as _;
use reserve::coverage::TownStatus;
use reserve::registry::{Registry, Source, load_registry};
use tokio_util::sync::CancellationToken;

mod bureau;

use crate::config::{ApiToken, Config, Loaded, RegistrySource, Role, SmtpConfig};
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

/// The sender of the demo's alert emails.
const DEMO_FROM: &str = "Stockpile demo <alerts@example.org>";
/// How often the console looks for notifications delivered since it last looked.
const NOTICE_POLL: Duration = Duration::from_secs(1);
/// At most this many notification lines per [`NOTICE_WINDOW`]: when hundreds of towns
/// go red at once, the lines must not scroll the URLs away.
const NOTICE_LINES: usize = 10;
const NOTICE_WINDOW: Duration = Duration::from_secs(10);
/// Outbox rows read at once while catching up.
const NOTICE_PAGE: usize = 500;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub scenario: String,
    pub speed: f64,
    pub port: u16,
    pub mqtt_port: u16,
    pub seed: u64,
    /// Send alert emails through this SMTP server (`smtp://…`, `smtps://…`) instead
    /// of writing them into the demo's mailbox directory.
    pub smtp: Option<String>,
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
    // Public reads open the wall display only; notifications and rejects name people
    // and need a token, so the demo makes an admin one and prints it.
    let token = demo_token();
    config.api.tokens = vec![ApiToken {
        name: "demo".into(),
        role: Role::Admin,
        token: Some(token.clone().into()),
        token_file: None,
        towns: Vec::new(),
    }];
    // Signed acknowledgement links in every message, opening this board's /ack page: a
    // newcomer acknowledges from the mail as an officer would from a phone. A fresh key
    // each run, like the token: nothing of the demo outlives it.
    config.api.public_url = Some(format!("http://127.0.0.1:{}", options.port));
    config.api.link_key =
        Some(alerts::link::LinkKey::new(demo_link_key()).context("the demo's link key")?);
    let smtp_url = options
        .smtp
        .clone()
        .unwrap_or_else(|| format!("file://{}", data.path().join("mail").display()));
    config.smtp = Some(SmtpConfig {
        url: smtp_url.clone(),
        from: DEMO_FROM.into(),
        ..SmtpConfig::default()
    });
    // `[alerts] group_wait` keeps its 10 s although a shorter one would show messages
    // sooner: in the first seconds only some of a town's warehouses have reported, and
    // the others count as empty until they do (docs/design.md#coverage-and-readiness).
    // Within 10 s every facility reports and those false alarms clear before anyone is
    // told.
    reason_in_simulated_time(&mut config.alerts, options.speed);
    let store_path = config.store.path.clone();
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
    // ...and all of a town's facilities within the first second, so towns do not show
    // red for the warehouses not heard from yet (they count as empty).
    sim.first_report_within = Some(Duration::from_secs(1));
    sim.client_id_prefix = "demo-sim".into();
    let simulator = device_sim::Simulator::new(shared.registry(), sim)?;
    let influx = bureau::Influx::of(&shared.registry(), &simulator.sheltered_towns()?);
    let sim_started = Instant::now();
    let sim_task = tokio::spawn(simulator.run(shutdown.clone()));

    let url = format!("http://{}", service.api_addr);
    if let Some(influx) = influx {
        let bureau = bureau::Bureau {
            client: reqwest::Client::new(),
            base: url.clone(),
            token: token.clone(),
            speed: options.speed,
            scenario: options.scenario.clone(),
        };
        tokio::spawn(bureau.run(influx, sim_started, shutdown.clone()));
    }
    let hours_per_minute = options.speed / 60.0;
    let email = match smtp_url.strip_prefix("file://") {
        Some(mailbox) => {
            format!("Mailbox      {mailbox}   (alerts go out as mail files, one .eml per message)")
        }
        None => format!("Email        through {}", url_origin(&smtp_url)),
    };
    println!(
        "Stockpile demo: synthetic registry of {} towns and {} facilities (demo/, not real data).\n\
         \n  Wall board   {url}/\n  API          {url}/api/v1/overview   (OpenAPI: {url}/api/openapi.json)\n  \
         API token    {token}   (admin; notifications and rejects need it)\n  \
         MQTT broker  {mqtt_url}   (embedded, in memory: for trying, not for production)\n  \
         SQLite       {}\n  \
         {email}\n\
         \nScenario {:?} at speed {}: {hours_per_minute:.0} simulated hours per minute. Every town starts\n\
         with about {:.1} days of supplies and no restocks come; watch towns turn amber below 3.5\n\
         days and red below the 3-day target. Each alert email to a town officer is shown below\n\
         as it goes out (at most {NOTICE_LINES} every {} s; all of them, with the token:\n\
         curl -H 'Authorization: Bearer {token}' {url}/api/v1/notifications).\n\
         The temp dir goes when the demo stops. Ctrl-C stops.\n",
        shared.registry().towns.len(),
        shared.registry().facilities.len(),
        store_path.display(),
        options.scenario,
        options.speed,
        start_days,
        NOTICE_WINDOW.as_secs(),
    );
    tokio::spawn(notices(
        shared.alerts.clone(),
        url.clone(),
        shutdown.clone(),
    ));
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

/// The simulator stamps readings on the wall clock and puts `speed` times the use of
/// each interval into them, so the alert engine's forecasts, read on the wall clock,
/// would be `speed` times too short: at 720× a normal day's 30 hours to the target is
/// 2.5 minutes, and `reserve_depleting` (12 h) would fire in every town. The engine
/// multiplies forecast hours by the speed instead, and the forecast rests on the same
/// simulated hour of history as in service.
fn reason_in_simulated_time(alerts: &mut alerts::AlertsConfig, speed: f64) {
    // A speed the simulator will refuse (0, negative) changes nothing here.
    if !(speed.is_finite() && speed > 0.0) {
        return;
    }
    alerts.clock_speed = speed;
    alerts.forecast_min_span =
        Duration::try_from_secs_f64(alerts.forecast_min_span.as_secs_f64() / speed)
            .unwrap_or(alerts.forecast_min_span);
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
            let registry = Arc::clone(ledger.registry());
            for t in registry.town_indices() {
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
                    worst = Some((d, registry.town(t).name.clone()));
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

/// Notifications delivered with an id above `after`, oldest first, read page by page
/// (newest first) through the alerts handle, as the API reads them.
async fn sent_after(
    alerts: &alerts::AlertsHandle,
    after: i64,
) -> Result<Vec<NotificationView>, alerts::AlertsError> {
    let mut sent = Vec::new();
    let mut before_id = None;
    loop {
        let page = alerts
            .list_notifications(&NotificationFilter {
                state: Some("sent".into()),
                before_id,
                limit: NOTICE_PAGE,
                ..NotificationFilter::default()
            })
            .await?;
        let full = page.len() == NOTICE_PAGE;
        before_id = page.last().map(|n| n.id);
        let reached_after = page.last().is_some_and(|n| n.id <= after);
        sent.extend(page.into_iter().filter(|n| n.id > after));
        if !full || reached_after {
            break;
        }
    }
    sent.reverse();
    Ok(sent)
}

/// Prints each notification as it is delivered, one line each, at most
/// [`NOTICE_LINES`] per [`NOTICE_WINDOW`]; the rest are counted and pointed to.
async fn notices(alerts: alerts::AlertsHandle, url: String, shutdown: CancellationToken) {
    let mut last_id = 0;
    let mut window = NoticeWindow::default();
    let mut interval = tokio::time::interval(NOTICE_POLL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = interval.tick() => {}
        }
        if let Some(held_back) = window.close_if_over(Instant::now()) {
            print_held_back(held_back, &url);
        }
        let sent = match sent_after(&alerts, last_id).await {
            Ok(sent) => sent,
            Err(error) => {
                tracing::warn!(message = "Cannot read the notifications for the console.", %error);
                continue;
            }
        };
        for n in sent {
            last_id = last_id.max(n.id);
            if window.admit(Instant::now()) {
                println!("{}", notice_line(&n));
            }
        }
    }
    if let Some(held_back) = window.close() {
        print_held_back(held_back, &url);
    }
}

fn print_held_back(count: u64, url: &str) {
    println!(
        "{}  … and {count} more (GET {url}/api/v1/notifications)",
        chrono::Local::now().format("%H:%M:%S")
    );
}

/// The rate limit of the notification lines: a window opens with the first line and
/// lets [`NOTICE_LINES`] through; what comes after is counted until it closes.
#[derive(Debug, Default)]
struct NoticeWindow {
    opened: Option<Instant>,
    printed: usize,
    held_back: u64,
}

impl NoticeWindow {
    /// Whether a notification delivered `now` gets its line.
    fn admit(&mut self, now: Instant) -> bool {
        self.opened.get_or_insert(now);
        if self.printed < NOTICE_LINES {
            self.printed += 1;
            true
        } else {
            self.held_back += 1;
            false
        }
    }

    /// Closes the window once [`NOTICE_WINDOW`] has passed; returns how many lines it
    /// held back, if any.
    fn close_if_over(&mut self, now: Instant) -> Option<u64> {
        match self.opened {
            Some(opened) if now.duration_since(opened) >= NOTICE_WINDOW => self.close(),
            _ => None,
        }
    }

    fn close(&mut self) -> Option<u64> {
        let held_back = std::mem::take(&mut self.held_back);
        *self = NoticeWindow::default();
        (held_back > 0).then_some(held_back)
    }
}

/// `22:41:07  ✉ email to li.wei@example.org (Li Wei): [Stockpile] 严重：景山街道 …`
fn notice_line(n: &NotificationView) -> String {
    let at = n
        .sent_at
        .unwrap_or(n.created)
        .with_timezone(&chrono::Local)
        .format("%H:%M:%S");
    let (mark, recipient, what) = match n.channel.as_str() {
        "email" => ("✉", n.recipient.clone(), n.subject.as_str()),
        "sms" => ("✆", n.recipient.clone(), n.body.as_str()),
        // The alerts handle shows a webhook only as where it goes (its URL may carry a
        // token); said again here, so the console never depends on that.
        _ => ("↗", url_origin(&n.recipient), n.subject.as_str()),
    };
    let what = what.lines().next().unwrap_or_default();
    format!(
        "{at}  {mark} {} to {recipient} ({}): {what}",
        n.channel, n.contact
    )
}

/// A fresh admin token for this run of the demo (its API listens on 127.0.0.1 only):
/// 128 bits from the standard library's randomly keyed hasher, no crate needed.
fn demo_token() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let random = || {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    };
    format!("demo-{:016x}{:016x}", random(), random())
}

/// 32 random bytes for the demo's link key, from the same source as its token.
fn demo_link_key() -> Vec<u8> {
    use std::hash::{BuildHasher as _, Hasher as _};
    (0..4)
        .flat_map(|_| {
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
                .to_le_bytes()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// At 720× an hour of history is five wall-clock seconds, and a forecast of 0.05
    /// wall-clock hours is 36 simulated ones.
    #[test]
    fn the_demos_alerts_reason_in_simulated_time() {
        let mut alerts = alerts::AlertsConfig::default();
        reason_in_simulated_time(&mut alerts, 720.0);
        assert_eq!(alerts.clock_speed, 720.0);
        assert_eq!(alerts.forecast_min_span, Duration::from_secs(5));
        assert_eq!(
            alerts.depleting_horizon,
            Duration::from_secs(12 * 3600),
            "the horizon stays in the simulated world's hours"
        );
        let mut refused = alerts::AlertsConfig::default();
        reason_in_simulated_time(&mut refused, 0.0);
        assert_eq!(
            refused.clock_speed, 1.0,
            "the simulator refuses speed 0 itself"
        );
    }

    #[test]
    fn a_flood_of_notifications_prints_ten_lines_a_window_and_counts_the_rest() {
        let start = Instant::now();
        let mut window = NoticeWindow::default();
        let printed = (0..25).filter(|_| window.admit(start)).count();
        assert_eq!(printed, NOTICE_LINES);
        assert_eq!(window.close_if_over(start + NOTICE_WINDOW / 2), None);
        assert_eq!(window.close_if_over(start + NOTICE_WINDOW), Some(15));
        assert!(
            window.admit(start + NOTICE_WINDOW),
            "a new window prints again"
        );
        assert_eq!(window.close(), None, "nothing held back");
    }
}
