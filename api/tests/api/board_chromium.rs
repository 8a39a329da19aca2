//! The wall board in a real browser: headless Chromium (Debian's `chromium`) shows the
//! demo city as ingest, fed over a real Mosquitto, sees it; a reading published for one
//! town turns that town's tile critical on the open page; and the board's screenshot is
//! written to `docs/board.png` for the README.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use api::{AppState, AuthConfig};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use ingest::{BrokerUrl, IngestConfig};
use live::{IngestMetrics, SharedLedger, TownChanges};
use reserve::Ledger;
use reserve::coverage::people_in_group;
use reserve::reading::{PowerState, PumpState, ShelterMode};
use reserve::registry::{FacilityKind, Registry, Source, TownIdx, load_registry};
use reserve::wire::{WirePower, WireReading, WireShelter, WireWater, reading_topic};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde::Deserialize;
use serde_json::{Value, json};
use store::{Store, StoreOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tungstenite::{Message, WebSocket};

/// The screenshot's size: a wall display's landscape, small enough for a README.
const VIEWPORT: (u32, u32) = (1600, 1000);

/// The board polls every 5 s; a change must show within three polls.
const BOARD_TIMEOUT: Duration = Duration::from_secs(15);

/// Generous for a 2-core machine running the rest of the suite at the same time.
const SERVICE_TIMEOUT: Duration = Duration::from_secs(30);

/// Days of every supply the subject town holds before the reading that drops its food,
/// and days of food after it.
const SUBJECT_DAYS: f64 = 5.0;
const DROPPED_FOOD_DAYS: f64 = 1.5;

/// The browser runs without a display, a GPU, a sandbox (root in CI containers) or any
/// traffic of its own (updates, sync, safe-browsing lists), so the test depends on
/// nothing outside this machine.
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
    "--hide-scrollbars",
];

/// The fonts in the board's stylesheet that have Chinese glyphs; one of them must draw
/// the heading, or the screenshot shows boxes.
const CJK_FONTS: &[&str] = &[
    "Noto Sans CJK SC",
    "Source Han Sans SC",
    "PingFang SC",
    "Microsoft YaHei",
    "WenQuanYi Micro Hei",
];

#[test]
fn board_shows_a_town_turning_critical_when_a_reading_drops_it_below_target() {
    let started = Instant::now();
    // The whole city reports at once: more than Mosquitto queues for a subscriber by
    // default (1000), and a dropped reading would leave a town unknown.
    let broker = testkit::Mosquitto::builder().max_queued(10_000).start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let registry = demo_registry();
    let city = runtime.block_on(City::start(&broker.url(), Arc::clone(&registry)));

    // Every town reports as its plan says; the subject is the first town with a single
    // warehouse, so one reading from that warehouse decides its food.
    let subject = registry
        .town_indices()
        .find(|&t| warehouses(&registry, t).len() == 1)
        .expect("the demo has a town with one warehouse");
    let subject_id = registry.town(subject).id.to_string();
    let plans: Vec<Plan> = registry
        .town_indices()
        .map(|t| {
            if t == subject {
                Plan::Reports { days: SUBJECT_DAYS }
            } else {
                Plan::for_town(t.index())
            }
        })
        .collect();
    let now = Utc::now();
    let readings: Vec<_> = registry
        .town_indices()
        .flat_map(|t| town_readings(&registry, t, plans[t.index()], now))
        .collect();
    let published = readings.len() as u64;
    runtime.block_on(publish_all(&broker.url(), "gw-city", readings));
    city.wait_accepted(published);

    let mut browser = Chromium::launch();
    browser.open(&format!("{}/", city.address));
    let board = browser.wait_for_board("the board to show every town", |board| {
        board.tiles.len() == registry.towns.len()
    });
    assert_eq!(board.banner, "", "the board reports a problem");
    assert_eq!(board.status_of(&subject_id), "ok", "{board:#?}");
    // The screenshot shows every colour, and the header agrees with the tiles.
    for status in ["critical", "warning", "ok", "unknown"] {
        let tiles = board.tiles.iter().filter(|t| t.status == status).count();
        assert!(tiles > 0, "no {status} tile on the board");
        assert_eq!(
            board.counts[status],
            tiles.to_string(),
            "header count of {status} tiles"
        );
    }
    assert!(
        board.tiles.iter().any(|t| t.unverified),
        "no unverified tile on the board"
    );

    // The subject's warehouse reports the same stock, but food for 1.5 days.
    let warehouse = warehouses(&registry, subject)[0];
    let mut stock = warehouse_stock(&registry, subject, SUBJECT_DAYS);
    let food = stock
        .iter_mut()
        .find(|(category, _)| category == "food")
        .expect("the demo has a food category");
    food.1 = DROPPED_FOOD_DAYS * daily_need(&registry, subject, "food");
    let drop_reading = (
        reading_topic(&subject_id, warehouse),
        serde_json::to_vec(&WireReading::stock(Utc::now(), stock)).expect("reading encodes"),
    );
    let dropped_at = Instant::now();
    runtime.block_on(publish_all(&broker.url(), "gw-subject", vec![drop_reading]));
    let board = browser.wait_for_board("the subject's tile to turn critical", |board| {
        board.status_of(&subject_id) == "critical"
    });
    eprintln!(
        "{subject_id} turned critical on the board {:.1} s after the reading",
        dropped_at.elapsed().as_secs_f64()
    );
    let tile = board.tile(&subject_id);
    // Why it is red, naming the category as the registry does in Chinese (not "food").
    for shown in [&format!("{DROPPED_FOOD_DAYS:.1}"), "食品 低于 3 天"] {
        assert!(
            tile.text.contains(shown),
            "the subject's tile does not show {shown:?}: {:?}",
            tile.text
        );
    }

    let fonts = browser.heading_fonts();
    assert!(
        fonts.iter().any(|f| CJK_FONTS.contains(&f.as_str())),
        "the heading is drawn with {fonts:?}, none of which has Chinese glyphs \
         (apt-get install fonts-wqy-microhei)"
    );
    // The clock is the only thing that differs between runs: fixed, the committed
    // picture changes only when the board does.
    browser.evaluate(r#"document.getElementById("clock").textContent = "08:00:00""#);
    let png = browser.screenshot();
    assert_eq!(png_size(&png), VIEWPORT, "screenshot size");
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    std::fs::create_dir_all(&docs).expect("docs/ is writable");
    let picture = docs.canonicalize().expect("docs/ exists").join("board.png");
    std::fs::write(&picture, &png).expect("docs/board.png is writable");

    drop(browser);
    runtime.block_on(city.stop());
    eprintln!(
        "board test took {:.1} s; screenshot in {}",
        started.elapsed().as_secs_f64(),
        picture.display()
    );
}

/// The synthetic demo registry (`demo/`): 343 towns in 39 clusters.
fn demo_registry() -> Arc<Registry> {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo");
    let read = |name: &str| -> Result<Source, String> {
        let path = demo.join(name);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Ok(Source {
            name: name.to_owned(),
            text,
        })
    };
    let main = read("registry.toml").unwrap_or_else(|e| panic!("{e}"));
    let registry = load_registry(&main, &[], &mut |name| read(name))
        .unwrap_or_else(|e| panic!("the demo registry loads:\n{e}"));
    Arc::new(registry)
}

/// What a town's facilities report.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Plan {
    /// Every facility reports: stock for `days` in every category, water points and
    /// power units ready.
    Reports { days: f64 },
    /// As `Reports`, but the first power unit never reports: figures unverified.
    PowerUnitQuiet { days: f64 },
    /// Nothing reports: status unknown.
    Quiet,
}

impl Plan {
    /// A varied but fixed city: mostly towns above target, some near it, a few below,
    /// some unverified, a few never heard from, scattered over the clusters.
    fn for_town(index: usize) -> Plan {
        // 37 is coprime to 100: consecutive towns land far apart in 0..100.
        let spread = (index * 37 + 11) % 100;
        let step = |from: usize| (spread - from) as f64;
        match spread {
            0..6 => Plan::Reports {
                days: 1.2 + 0.3 * step(0),
            },
            6..16 => Plan::Reports {
                days: 3.05 + 0.04 * step(6),
            },
            16..19 => Plan::Quiet,
            19..24 => Plan::PowerUnitQuiet { days: 5.0 },
            _ => Plan::Reports {
                days: 3.8 + 0.08 * step(24),
            },
        }
    }
}

fn warehouses(registry: &Registry, t: TownIdx) -> Vec<&str> {
    registry
        .town(t)
        .facilities
        .iter()
        .map(|&f| registry.facility(f))
        .filter(|f| f.kind == FacilityKind::Warehouse)
        .map(|f| f.id.as_str())
        .collect()
}

/// The town's need of `category` per day, with nobody sheltered.
fn daily_need(registry: &Registry, t: TownIdx, category: &str) -> f64 {
    let town = registry.town(t);
    let c = registry.category_idx(category).expect("known category");
    let category = registry.category(c);
    people_in_group(&category.group, town.population, &town.groups, 0) * category.daily_need
}

/// What each water point of the town holds: half its tank, at most half the town's
/// water for `days` over all its water points.
fn water_point_level_l(registry: &Registry, t: TownIdx, capacity_l: Option<f64>, days: f64) -> f64 {
    let water_points = registry
        .town(t)
        .facilities
        .iter()
        .filter(|&&f| matches!(registry.facility(f).kind, FacilityKind::WaterPoint { .. }))
        .count();
    let share = 0.5 * days * daily_need(registry, t, "water") / water_points.max(1) as f64;
    capacity_l.map_or(0.0, |capacity| (0.5 * capacity).min(share))
}

/// What each warehouse of the town holds so that the town has `days` of every category,
/// water points' water included.
fn warehouse_stock(registry: &Registry, t: TownIdx, days: f64) -> Vec<(String, f64)> {
    let town = registry.town(t);
    let warehouse_count = warehouses(registry, t).len().max(1) as f64;
    let water_points_l: f64 = town
        .facilities
        .iter()
        .filter_map(|&f| match registry.facility(f).kind {
            FacilityKind::WaterPoint { capacity_l } => {
                Some(water_point_level_l(registry, t, capacity_l, days))
            }
            _ => None,
        })
        .sum();
    registry
        .categories
        .iter()
        .map(|category| {
            let id = category.id.as_str();
            let mut total = days * daily_need(registry, t, id);
            if Some(id)
                == registry
                    .water_category
                    .map(|c| registry.category(c).id.as_str())
            {
                total -= water_points_l;
            }
            (id.to_owned(), (total / warehouse_count).max(0.0))
        })
        .collect()
}

/// The town's readings at `ts` as (topic, payload), per its plan.
fn town_readings(
    registry: &Registry,
    t: TownIdx,
    plan: Plan,
    ts: DateTime<Utc>,
) -> Vec<(String, Vec<u8>)> {
    let (days, quiet_power_units) = match plan {
        Plan::Reports { days } => (days, 0),
        Plan::PowerUnitQuiet { days } => (days, 1),
        Plan::Quiet => return Vec::new(),
    };
    let town = registry.town(t);
    let mut power_units_skipped = 0;
    let mut readings = Vec::new();
    for &f in &town.facilities {
        let facility = registry.facility(f);
        let reading = match facility.kind {
            FacilityKind::Warehouse => WireReading::stock(ts, warehouse_stock(registry, t, days)),
            FacilityKind::WaterPoint { capacity_l } => WireReading::water(
                ts,
                WireWater {
                    level_l: water_point_level_l(registry, t, capacity_l, days),
                    pump: PumpState::Ok,
                    potable: true,
                },
            ),
            FacilityKind::PowerUnit {
                fuel_capacity_l, ..
            } => {
                if power_units_skipped < quiet_power_units {
                    power_units_skipped += 1;
                    continue;
                }
                WireReading::power(
                    ts,
                    WirePower {
                        fuel_l: fuel_capacity_l,
                        battery_pct: Some(95.0),
                        state: PowerState::Standby,
                        burn_l_per_h: None,
                    },
                )
            }
            // In everyday use: nobody sheltered, so the town's typed figure stands.
            FacilityKind::Shelter(_) => WireReading::shelter(
                ts,
                WireShelter {
                    occupancy: 0.0,
                    mode: ShelterMode::Normal,
                },
            ),
        };
        readings.push((
            reading_topic(town.id.as_str(), facility.id.as_str()),
            serde_json::to_vec(&reading).expect("reading encodes"),
        ));
    }
    readings
}

/// Ingest and the API over one ledger, as the server wires them, with public reads (a
/// wall display has no token).
struct City {
    /// `http://127.0.0.1:PORT`
    address: String,
    metrics: Arc<IngestMetrics>,
    shutdown: CancellationToken,
    /// Taken by `stop`, which waits for them.
    ingest: Option<JoinHandle<Result<(), ingest::IngestError>>>,
    api: Option<JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl City {
    async fn start(broker: &str, registry: Arc<Registry>) -> City {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("stockpile.db");
        let mut ledger = Ledger::new(registry);
        ledger.refresh_all(Utc::now());
        let ledger: SharedLedger = Arc::new(RwLock::new(ledger));
        let metrics = Arc::new(IngestMetrics::default());
        let changes = Arc::new(TownChanges::default());
        let shutdown = CancellationToken::new();
        let broker = BrokerUrl::parse(broker).expect("broker url");
        let ingest = tokio::spawn(ingest::run(
            IngestConfig::new(broker, "stockpile-board-test"),
            Arc::clone(&ledger),
            Store::open(&db, StoreOptions::default()).expect("store opens"),
            Arc::clone(&metrics),
            Arc::clone(&changes),
            shutdown.clone(),
        ));
        let state = AppState::new(
            Arc::clone(&ledger),
            Store::open(&db, StoreOptions::default()).expect("store opens"),
            Arc::clone(&metrics),
            changes,
            AuthConfig {
                public_read: true,
                tokens: Vec::new(),
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let address = format!("http://{}", listener.local_addr().expect("bound address"));
        let api = tokio::spawn(api::serve(listener, state, shutdown.clone()));
        let city = City {
            address,
            metrics,
            shutdown,
            ingest: Some(ingest),
            api: Some(api),
            _dir: dir,
        };
        wait_until("ingest to connect", || city.metrics.connected());
        city
    }

    /// Waits until ingest has stored `count` readings and rejected none. Ingest counts a
    /// batch only after the ledger has its figures, so the board's next poll shows them.
    fn wait_accepted(&self, count: u64) {
        wait_until(&format!("ingest to accept {count} readings"), || {
            let counts = self.metrics.counts();
            assert_eq!(counts.rejected, BTreeMap::new(), "ingest rejected readings");
            counts.accepted >= count
        });
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        let (Some(ingest), Some(api)) = (self.ingest.take(), self.api.take()) else {
            unreachable!("only stop takes the tasks, and it consumes the city");
        };
        tokio::time::timeout(SERVICE_TIMEOUT, ingest)
            .await
            .expect("ingest stops")
            .expect("ingest joins")
            .expect("ingest ends cleanly");
        tokio::time::timeout(SERVICE_TIMEOUT, api)
            .await
            .expect("the API stops")
            .expect("the API joins")
            .expect("the API ends cleanly");
    }
}

impl Drop for City {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Polls `check` every 20 ms for up to [`SERVICE_TIMEOUT`].
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + SERVICE_TIMEOUT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A gateway: publishes every message with QoS 1 and returns once the broker has
/// acknowledged them all.
async fn publish_all(broker: &str, client_id: &str, messages: Vec<(String, Vec<u8>)>) {
    let url = BrokerUrl::parse(broker).expect("broker url");
    let mut options = MqttOptions::new(client_id, url.host, url.port);
    options.set_max_packet_size(1 << 20, 1 << 20);
    options.set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let total = messages.len();
    let sender = tokio::spawn(async move {
        for (topic, payload) in messages {
            client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .expect("the publish queue is open");
        }
        client
    });
    let deadline = tokio::time::Instant::now() + SERVICE_TIMEOUT;
    let mut acked = 0;
    while acked < total {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Incoming::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("publisher: {e}"),
            Err(_) => panic!("publisher: only {acked} of {total} acknowledged"),
        }
    }
    let client = sender.await.expect("publisher joins");
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
}

/// The board as a person sees it, read from the page's DOM.
#[derive(Debug, Deserialize)]
struct BoardView {
    tiles: Vec<TileView>,
    /// The header's counts by status, as displayed.
    counts: BTreeMap<String, String>,
    /// The red "not updating" line; empty when the board is fresh.
    banner: String,
}

#[derive(Debug, Deserialize)]
struct TileView {
    town: String,
    status: String,
    unverified: bool,
    /// What the tile says: name, days, worst category.
    text: String,
}

impl BoardView {
    fn tile(&self, town: &str) -> &TileView {
        self.tiles
            .iter()
            .find(|t| t.town == town)
            .unwrap_or_else(|| panic!("no tile for {town}"))
    }

    fn status_of(&self, town: &str) -> &str {
        self.tiles
            .iter()
            .find(|t| t.town == town)
            .map_or("(no tile)", |t| t.status.as_str())
    }
}

const READ_BOARD: &str = r#"(() => ({
  tiles: Array.from(document.querySelectorAll(".tile"), tile => ({
    town: tile.dataset.town,
    status: tile.dataset.status,
    unverified: tile.classList.contains("unverified"),
    text: tile.innerText,
  })),
  counts: Object.fromEntries(["critical", "warning", "ok", "unknown"]
    .map(status => [status, document.getElementById("n-" + status).textContent])),
  banner: document.getElementById("banner").textContent,
}))()"#;

/// Headless Chromium with one page, driven over the DevTools protocol on one WebSocket
/// (flat sessions). Dropping it closes the browser and deletes its profile.
struct Chromium {
    socket: WebSocket<TcpStream>,
    /// The page's session on the browser connection.
    session: String,
    next_id: u64,
    /// Events that arrived while a command waited for its reply, by method name.
    events: Vec<String>,
    process: ChromiumProcess,
}

impl Chromium {
    fn launch() -> Chromium {
        let process = ChromiumProcess::start();
        let url = process.devtools_url();
        let stream = TcpStream::connect(devtools_address(&url))
            .unwrap_or_else(|e| process.fail(&format!("cannot connect to {url}: {e}")));
        // A browser that hangs fails the test instead of stalling it.
        stream
            .set_read_timeout(Some(SERVICE_TIMEOUT))
            .expect("socket timeout");
        let (socket, _) = tungstenite::client(url.as_str(), stream)
            .unwrap_or_else(|e| process.fail(&format!("DevTools handshake: {e}")));
        let mut browser = Chromium {
            socket,
            session: String::new(),
            next_id: 0,
            events: Vec::new(),
            process,
        };
        let target = browser.call_browser("Target.createTarget", json!({"url": "about:blank"}));
        let attached = browser.call_browser(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        browser.call("Page.enable", json!({}));
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": VIEWPORT.0, "height": VIEWPORT.1,
                   "deviceScaleFactor": 1, "mobile": false}),
        );
        browser
    }

    /// Loads `url` and waits for its load event.
    fn open(&mut self, url: &str) {
        self.events.clear();
        let navigated = self.call("Page.navigate", json!({"url": url}));
        if let Some(error) = navigated.get("errorText") {
            self.process.fail(&format!("cannot load {url}: {error}"));
        }
        self.wait_event("Page.loadEventFired");
    }

    /// Reads the board until `done` holds, for up to [`BOARD_TIMEOUT`].
    fn wait_for_board(&mut self, what: &str, done: impl Fn(&BoardView) -> bool) -> BoardView {
        let deadline = Instant::now() + BOARD_TIMEOUT;
        loop {
            let board: BoardView = serde_json::from_value(self.evaluate(READ_BOARD))
                .unwrap_or_else(|e| panic!("unexpected board shape: {e}"));
            if done(&board) {
                return board;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {BOARD_TIMEOUT:?} waiting for {what}; the board shows {board:#?}"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The platform fonts that draw the page's heading (Chinese and Latin text).
    fn heading_fonts(&mut self) -> Vec<String> {
        self.call("DOM.enable", json!({}));
        self.call("CSS.enable", json!({}));
        let document = self.call("DOM.getDocument", json!({}));
        let heading = self.call(
            "DOM.querySelector",
            json!({"nodeId": document["root"]["nodeId"], "selector": "h1"}),
        );
        let fonts = self.call(
            "CSS.getPlatformFontsForNode",
            json!({"nodeId": heading["nodeId"]}),
        );
        fonts["fonts"]
            .as_array()
            .expect("a list of fonts")
            .iter()
            .filter_map(|f| f["familyName"].as_str().map(str::to_owned))
            .collect()
    }

    /// The viewport as PNG.
    fn screenshot(&mut self) -> Vec<u8> {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let data = shot["data"].as_str().expect("screenshot data");
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("screenshot is base64")
    }

    /// Runs `expression` in the page; its value as JSON.
    fn evaluate(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("page script failed: {exception}\n{expression}");
        }
        result["result"]["value"].clone()
    }

    /// A command to the page.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(&session))
    }

    /// A command to the browser itself.
    fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None)
    }

    fn send(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            command["sessionId"] = session.into();
        }
        if let Err(e) = self.socket.send(Message::text(command.to_string())) {
            self.process.fail(&format!("{method}: {e}"));
        }
        loop {
            let message = self.next_message(method);
            if message["id"] == id {
                if let Some(error) = message.get("error") {
                    self.process.fail(&format!("{method}: {error}"));
                }
                return message["result"].clone();
            }
            if let Some(event) = message["method"].as_str() {
                self.events.push(event.to_owned());
            }
        }
    }

    fn wait_event(&mut self, event: &str) {
        if self.events.iter().any(|e| e == event) {
            return;
        }
        loop {
            let message = self.next_message(event);
            if message["method"] == event {
                return;
            }
        }
    }

    /// The next JSON message on the socket; fails the test on a timeout or a closed socket.
    fn next_message(&mut self, waiting_for: &str) -> Value {
        loop {
            match self.socket.read() {
                Ok(Message::Text(text)) => {
                    return serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("DevTools sent bad JSON ({e}): {text}"));
                }
                Ok(_) => {}
                Err(e) => self
                    .process
                    .fail(&format!("waiting for {waiting_for}: {e}")),
            }
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // Asked to close, the browser ends its renderers itself; the process guard
        // kills whatever is left.
        let close = json!({"id": 0, "method": "Browser.close"}).to_string();
        if self.socket.send(Message::text(close)).is_ok() {
            self.process.closing = true;
        }
    }
}

/// `host:port` of a `ws://host:port/devtools/browser/ID` URL.
fn devtools_address(url: &str) -> String {
    url.trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The browser process, its stderr and its fresh profile directory. Dropping it ends
/// the process (after a grace period when it was asked to close) and then deletes the
/// profile.
struct ChromiumProcess {
    child: Child,
    /// Everything Chromium wrote to stderr, quoted when something fails.
    log: Arc<Mutex<String>>,
    /// Where it says "DevTools listening on ws://…".
    devtools: mpsc::Receiver<String>,
    /// Set once `Browser.close` was sent: worth waiting for a clean exit.
    closing: bool,
    /// Declared last: deleted after the process is gone.
    profile: tempfile::TempDir,
}

impl ChromiumProcess {
    fn start() -> ChromiumProcess {
        let program: PathBuf = testkit::require_binary("chromium", "chromium");
        let profile = testkit::temp_dir("chromium");
        let mut child = Command::new(&program)
            .args(CHROMIUM_FLAGS)
            .arg(format!("--window-size={},{}", VIEWPORT.0, VIEWPORT.1))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--remote-debugging-port=0")
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (devtools_tx, devtools) = mpsc::channel();
        // Drains stderr for the browser's whole life: a full pipe would stall it.
        std::thread::spawn({
            let log = Arc::clone(&log);
            move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(url) = line.strip_prefix("DevTools listening on ") {
                        let _ = devtools_tx.send(url.trim().to_owned());
                    }
                    let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        ChromiumProcess {
            child,
            log,
            devtools,
            closing: false,
            profile,
        }
    }

    fn devtools_url(&self) -> String {
        match self.devtools.recv_timeout(SERVICE_TIMEOUT) {
            Ok(url) => url,
            Err(_) => self.fail("no DevTools URL on stderr"),
        }
    }

    fn fail(&self, what: &str) -> ! {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        panic!(
            "chromium (profile {}): {what}\n--- chromium stderr ---\n{log}",
            self.profile.path().display()
        );
    }
}

impl Drop for ChromiumProcess {
    fn drop(&mut self) {
        if self.closing {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(
        png.len() > 24 && png.starts_with(b"\x89PNG\r\n\x1a\n") && &png[12..16] == b"IHDR",
        "not a PNG"
    );
    let be = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
    (be(16), be(20))
}
