//! Helpers for the simulator's tests: a tiny registry, a recorder subscribed to
//! `stockpile/v1/#` on a real Mosquitto, and decoding what it heard with `reserve::wire`
//! exactly as the service would.

#![allow(dead_code)] // Each test module uses a different part.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use device_sim::{SimConfig, SimReport, Simulator};
use reserve::registry::{Source, load_registry};
use reserve::wire::{
    Connectivity, DecodeContext, RejectReason, TopicKind, decode_readings, decode_status,
    parse_topic, resolve_topic,
};
use reserve::{Reading, Registry};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

/// Two clusters, three towns; every town has a warehouse, a water point and a power
/// unit, and alpha a second warehouse. Infant formula applies to infants only.
pub const TINY_REGISTRY: &str = r#"
water_category = "water"

[[district]]
id = "d1"
name = "District one"

[[cluster]]
id = "c01"
name = "Cluster one"

[[cluster]]
id = "c02"
name = "Cluster two"

[[category]]
id = "water"
name = "Drinking water"
unit = "L"
daily_need = 3.0

[[category]]
id = "food"
name = "Food"
unit = "ration"
daily_need = 3.0

[[category]]
id = "infant-formula"
name = "Infant formula"
unit = "kg"
daily_need = 0.15
group = "infants"

[[town]]
id = "alpha"
name = "Alpha"
district = "d1"
cluster = "c01"
population = 10000
groups = { infants = 100 }

[[town]]
id = "beta"
name = "Beta"
district = "d1"
cluster = "c01"
population = 20000

[[town]]
id = "gamma"
name = "Gamma"
district = "d1"
cluster = "c02"
population = 5000
groups = { infants = 40 }

[[facility]]
id = "alpha-wh1"
town = "alpha"
kind = "warehouse"

[[facility]]
id = "alpha-wh2"
town = "alpha"
kind = "warehouse"

[[facility]]
id = "alpha-wp1"
town = "alpha"
kind = "water_point"
capacity_l = 20000

[[facility]]
id = "alpha-pu1"
town = "alpha"
kind = "power_unit"
fuel_capacity_l = 500
burn_l_per_h = 5.0
min_battery_pct = 50

[[facility]]
id = "beta-wh1"
town = "beta"
kind = "warehouse"

[[facility]]
id = "beta-wp1"
town = "beta"
kind = "water_point"

[[facility]]
id = "beta-pu1"
town = "beta"
kind = "power_unit"
fuel_capacity_l = 800
burn_l_per_h = 12.0
min_battery_pct = 50

[[facility]]
id = "gamma-wh1"
town = "gamma"
kind = "warehouse"

[[facility]]
id = "gamma-wp1"
town = "gamma"
kind = "water_point"
capacity_l = 30000

[[facility]]
id = "gamma-pu1"
town = "gamma"
kind = "power_unit"
fuel_capacity_l = 300
burn_l_per_h = 3.0
min_battery_pct = 50
"#;

pub fn tiny_registry() -> Arc<Registry> {
    let source = Source {
        name: "tiny.toml".into(),
        text: TINY_REGISTRY.into(),
    };
    let registry = load_registry(&source, &[], &mut |name| Err(format!("no csv {name}")))
        .unwrap_or_else(|e| panic!("tiny registry: {e}"));
    Arc::new(registry)
}

/// A message as the recorder heard it.
#[derive(Debug, Clone)]
pub struct Heard {
    pub topic: String,
    pub payload: Vec<u8>,
    pub received: DateTime<Utc>,
}

impl Heard {
    pub fn is_array(&self) -> bool {
        self.payload.first() == Some(&b'[')
    }
}

/// Subscribed to everything under `stockpile/v1/` before the simulator starts.
pub struct Recorder {
    heard: Arc<Mutex<Vec<Heard>>>,
    _client: AsyncClient,
}

impl Recorder {
    pub async fn start(broker_url: &str) -> Recorder {
        let port: u16 = broker_url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {broker_url}"));
        let mut options = MqttOptions::new("test-recorder", "127.0.0.1", port);
        // The malformed fault's oversized message is over 256 KiB.
        options.set_max_packet_size(2 << 20, 2 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        client
            .subscribe("stockpile/v1/#", QoS::AtLeastOnce)
            .await
            .expect("subscribe request queued");
        let heard = Arc::new(Mutex::new(Vec::new()));
        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
        let sink = heard.clone();
        tokio::spawn(async move {
            let mut subscribed_tx = Some(subscribed_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        sink.lock().unwrap().push(Heard {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            received: Utc::now(),
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(5), subscribed)
            .await
            .expect("recorder subscribed within 5 s")
            .expect("recorder task alive");
        Recorder {
            heard,
            _client: client,
        }
    }

    pub fn heard(&self) -> Vec<Heard> {
        self.heard.lock().unwrap().clone()
    }
}

/// Runs the simulator for `config.duration` (which must be set) and returns its report
/// and everything the recorder heard, after a moment for the last messages to arrive.
pub async fn run(
    registry: &Arc<Registry>,
    config: SimConfig,
    recorder: &Recorder,
) -> (SimReport, Vec<Heard>) {
    assert!(config.duration.is_some() || config.load.is_some());
    let simulator = Simulator::new(registry.clone(), config).expect("valid config");
    let report = simulator
        .run(CancellationToken::new())
        .await
        .expect("simulator ran");
    tokio::time::sleep(Duration::from_millis(300)).await;
    (report, recorder.heard())
}

/// What the service would make of a message: its readings, or why it was rejected.
#[derive(Debug)]
pub enum Verdict {
    Readings(Vec<Reading>),
    Status(Connectivity),
    Rejected(RejectReason, String),
}

pub fn verdict(registry: &Registry, heard: &Heard) -> Verdict {
    let topic = match parse_topic(&heard.topic) {
        Ok(topic) => topic,
        Err(r) => return Verdict::Rejected(r.reason, r.detail),
    };
    match topic.kind {
        TopicKind::Status => {
            match resolve_topic(&topic, registry).and_then(|_| decode_status(&heard.payload)) {
                Ok(status) => Verdict::Status(status),
                Err(r) => Verdict::Rejected(r.reason, r.detail),
            }
        }
        TopicKind::Reading => {
            let ctx = DecodeContext::new(registry, heard.received);
            match decode_readings(&topic, &heard.payload, &ctx) {
                Ok(decoded) => match decoded.rejected.first() {
                    Some(r) => Verdict::Rejected(r.reason, r.detail.clone()),
                    None => Verdict::Readings(decoded.readings),
                },
                Err(r) => Verdict::Rejected(r.reason, r.detail),
            }
        }
    }
}

/// Facility id (from the topic) of a message.
pub fn facility_of(heard: &Heard) -> String {
    heard.topic.split('/').nth(3).unwrap_or_default().to_owned()
}

/// Every reading heard, per facility id, in arrival order; panics on any rejection.
/// Also checks what every gateway must do: `seq` and `ts` strictly increasing per
/// facility, and `ts` never after the moment the message arrived.
pub fn clean_readings(registry: &Registry, heard: &[Heard]) -> BTreeMap<String, Vec<Reading>> {
    let mut by_facility: BTreeMap<String, Vec<Reading>> = BTreeMap::new();
    for h in heard {
        match verdict(registry, h) {
            Verdict::Readings(readings) => {
                for r in &readings {
                    assert!(r.ts <= h.received, "{}: ts {} after arrival", h.topic, r.ts);
                }
                by_facility
                    .entry(facility_of(h))
                    .or_default()
                    .extend(readings);
            }
            Verdict::Status(_) => {}
            Verdict::Rejected(reason, detail) => {
                panic!("{} rejected: {reason}: {detail}", h.topic)
            }
        }
    }
    for (facility, readings) in &by_facility {
        for pair in readings.windows(2) {
            assert!(pair[0].ts < pair[1].ts, "{facility}: ts not increasing");
            assert!(pair[0].seq < pair[1].seq, "{facility}: seq not increasing");
        }
    }
    by_facility
}

/// Status messages per facility id, in arrival order.
pub fn statuses(registry: &Registry, heard: &[Heard]) -> BTreeMap<String, Vec<Connectivity>> {
    let mut out: BTreeMap<String, Vec<Connectivity>> = BTreeMap::new();
    for h in heard {
        if let Verdict::Status(s) = verdict(registry, h) {
            out.entry(facility_of(h)).or_default().push(s);
        }
    }
    out
}

pub fn facility_ids(registry: &Registry) -> Vec<String> {
    registry
        .facilities
        .iter()
        .map(|f| f.id.to_string())
        .collect()
}
