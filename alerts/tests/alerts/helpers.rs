//! A town, its officers, and the alerting service running on a real ledger.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use alerts::{
    Alerts, AlertsConfig, AlertsHandle, Channels, RetryPolicy, SmsConfig, SmtpConfig,
    WebhookConfig, WebhookFormat,
};
use chrono::Utc;
use live::{SharedLedger, TownChanges};
use reserve::registry::{Registry, Source, load_registry};
use reserve::{Ledger, Observation, Reading};
use store::StoreOptions;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Two towns of 1000 people needing 3 L of water a day each: the three-day target is
/// 9000 L, the warning line (3.5 days) 10,500 L.
pub const REGISTRY: &str = r#"
[target]
days = 3.0
warn_days = 3.5

[[category]]
id = "water"
name = "饮用水"
unit = "L"
daily_need = 3.0

[[town]]
id = "jingshan"
name = "景山街道"
district = "dongcheng"
cluster = "c01"
population = 1000

[[town]]
id = "donghua"
name = "东华门街道"
district = "dongcheng"
cluster = "c01"
population = 1000

[[facility]]
id = "js-wh1"
town = "jingshan"
kind = "warehouse"
report_every = "1h"

[[facility]]
id = "dh-wh1"
town = "donghua"
kind = "warehouse"
report_every = "1h"

[[contact]]
name = "Li Wei"
email = "li.wei@example.org"
phone = "+8613800000001"
lang = "zh"
towns = ["jingshan"]

[[contact]]
name = "Wang Fang"
email = "wang.fang@example.org"
lang = "en"
clusters = ["c01"]

[[contact]]
name = "Donghua officer"
email = "dh.officer@example.org"
lang = "zh"
towns = ["donghua"]
"#;

pub const OFFICER: &str = "li.wei@example.org";
pub const OFFICER_PHONE: &str = "+8613800000001";
pub const CLUSTER: &str = "wang.fang@example.org";

/// Liters of water for `days` days in a town of the registry above.
pub fn liters(days: f64) -> f64 {
    days * 3000.0
}

pub fn registry() -> Arc<Registry> {
    parse_registry(REGISTRY)
}

fn parse_registry(text: &str) -> Arc<Registry> {
    let source = Source {
        name: "registry.toml".into(),
        text: text.into(),
    };
    Arc::new(
        load_registry(&source, &[], &mut |name| Err(format!("no file {name}")))
            .expect("test registry loads"),
    )
}

/// Settings fit for tests: everything at once, timers in hundreds of milliseconds.
pub fn quick_config() -> AlertsConfig {
    AlertsConfig {
        group_wait: Duration::ZERO,
        repeat_every: Duration::from_secs(3600),
        escalate_after: Duration::from_secs(3600),
        tick: Duration::from_millis(200),
        // Test readings milliseconds apart are a consumption rate no town has: every
        // stock would be forecast to cross the target at once. The forecast rule is
        // tested on its own in `rules`.
        depleting_horizon: Duration::ZERO,
        public_url: Some("https://stockpile.example.org".into()),
        retry: RetryPolicy {
            first: Duration::from_millis(100),
            max: Duration::from_millis(400),
            give_up_after: Duration::from_secs(3600),
        },
        ..AlertsConfig::default()
    }
}

/// The ledger and change feed ingest would own, driven by the test.
pub struct World {
    pub registry: Arc<Registry>,
    pub ledger: SharedLedger,
    pub changes: Arc<TownChanges>,
    pub _dir: tempfile::TempDir,
    pub db: PathBuf,
}

impl World {
    pub fn new() -> World {
        World::with_registry(REGISTRY)
    }

    pub fn with_registry(text: &str) -> World {
        let registry = parse_registry(text);
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("stockpile.db");
        World {
            ledger: Arc::new(RwLock::new(Ledger::new(Arc::clone(&registry)))),
            registry,
            changes: Arc::new(TownChanges::default()),
            _dir: dir,
            db,
        }
    }

    /// What ingest does with a warehouse reading: apply, refresh the town, publish.
    pub fn stock(&self, facility: &str, liters: f64) {
        let now = Utc::now();
        let town = {
            let mut ledger = self.ledger.write().unwrap();
            let f = self.registry.facility_idx(facility).expect("facility");
            let water = self.registry.category_idx("water").expect("water");
            let reading = Reading {
                facility: f,
                ts: now,
                seq: None,
                observation: Observation::Stock(vec![(water, liters)]),
            };
            ledger.apply(&reading, now);
            let town = self.registry.facility(f).town;
            ledger.refresh(town, now);
            town
        };
        self.changes.publish([town]);
    }
}

/// The alerting service running in this test process.
pub struct Service {
    pub handle: AlertsHandle,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), alerts::AlertsError>>,
}

impl Service {
    pub async fn start(
        world: &World,
        config: AlertsConfig,
        smtp: Option<&str>,
        sms: Option<SmsConfig>,
    ) -> Service {
        let smtp = smtp.map(|url| SmtpConfig::new(url, "Stockpile <alerts@example.org>"));
        let channels =
            Channels::from_config(smtp.as_ref(), sms.as_ref(), &WebhookConfig::default())
                .expect("channels build");
        Service::start_with(world, config, channels).await
    }

    pub async fn start_with_webhook(
        world: &World,
        config: AlertsConfig,
        format: WebhookFormat,
    ) -> Service {
        let webhook = WebhookConfig {
            format,
            ..WebhookConfig::default()
        };
        let channels = Channels::from_config(None, None, &webhook).expect("channels build");
        Service::start_with(world, config, channels).await
    }

    pub async fn start_with(world: &World, config: AlertsConfig, channels: Channels) -> Service {
        let alerts = Alerts::open(
            config,
            Arc::clone(&world.registry),
            &world.db,
            StoreOptions::default(),
            channels,
        )
        .expect("alerts open");
        let handle = alerts.handle();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(alerts.run(
            Arc::clone(&world.ledger),
            world.changes.subscribe(),
            shutdown.clone(),
        ));
        Service {
            handle,
            shutdown,
            task,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("alerts stop within 10 s")
            .expect("alerts task joins")
            .expect("alerts end without error");
    }
}

/// Lets the service run for `d` (to show that nothing more arrives).
pub async fn settle(d: Duration) {
    tokio::time::sleep(d).await;
}

pub async fn wait_until(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SMS gateway settings for an HTTP receiver: JSON body from a template.
pub fn sms_gateway(url: &str) -> SmsConfig {
    let mut sms = SmsConfig::new(format!("{url}/send"));
    sms.headers
        .insert("Content-Type".into(), "application/json".into());
    sms.headers.insert("X-Api-Key".into(), "gateway-key".into());
    sms.body = Some(r#"{"mobile":"{to}","content":"{text}"}"#.into());
    sms
}
