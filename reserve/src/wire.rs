//! The MQTT wire format, v1 (docs/design.md#mqtt-contract): topics, the JSON payloads
//! gateways publish, and their validation into [`Reading`]s. `ingest` decodes with it and
//! `device-sim` encodes with it, so the format is written down in exactly one place.
//!
//! Topics are `stockpile/v1/{town}/{facility}/reading` (QoS 1) and
//! `stockpile/v1/{town}/{facility}/status` (retained: `online` on connect, `offline` as
//! the Last Will). A reading payload is a JSON object, or a JSON array of them (the
//! backlog of a gateway that was offline):
//!
//! ```json
//! {"ts": "2026-11-24T05:00:00+08:00", "seq": 1042, "stock": {"water": 12000, "food": 5400}}
//! ```
//!
//! Choices made here where the bureau's brief was silent (the outcome is in
//! docs/design.md#payloads and docs/design.md#reject-reasons):
//! - **Unknown fields are ignored**, at the top level and inside `water` / `power`, so a
//!   gateway can add fields (a signal strength, a firmware version) before the server
//!   knows them and nothing breaks. Unknown *values* are rejected, because they change
//!   meaning: a `pump` of `"broken"`, an unknown category in `stock`.
//! - **Exactly one section.** A reading with none of `stock` / `water` / `power` /
//!   `shelter`, or with
//!   several, is `bad_payload` (its shape is wrong whatever the facility); a reading with
//!   one section that does not match the facility's kind is `wrong_kind`.
//! - **Numbers.** JSON has no NaN or Infinity, but gateways emit them anyway (Python's
//!   `json.dumps` does by default), so those literals, and numbers beyond `f64` such as
//!   `1e999`, are `bad_number` rather than `not_json`: the vendor learns which value is
//!   wrong. So are negative quantities, quantities above [`MAX_QUANTITY`] and a battery
//!   above 100 %. Any other syntax error is `not_json`.
//! - **Capacity.** A value above what the facility's registry entry declares it can hold
//!   is `over_capacity`, not counted: a water point's `level_l` above its `capacity_l`, a
//!   power unit's `fuel_l` above its `fuel_capacity_l`, a warehouse's stock of a category
//!   above its `max` for that category. Equal is fine; with nothing declared there is no
//!   check beyond [`MAX_QUANTITY`]. It is checked after the number itself (a negative
//!   level is `bad_number` whatever the capacity).
//! - **A `burn_l_per_h` of 0** (a unit in standby measuring no flow) is read as "no
//!   measured burn": runtime is then judged at the rated burn, not as infinite.
//! - **A single object** that fails validation rejects the message; **an array** is
//!   validated element by element, so one bad reading in a backlog does not lose the
//!   good ones, and the accepted readings come out sorted by `ts` (stable), the order in
//!   which the ledger must apply them. Broken JSON syntax anywhere (a NaN included)
//!   still rejects the whole array: there is no telling where its elements end.
//! - **`ts` in epoch milliseconds** must be an integer; a fraction (`1763960400.5`, float
//!   seconds from `time.time()`) is `bad_payload`; a ts rejected as too old or in the
//!   future says so when it would fit as epoch seconds or microseconds.
//!
//! The happy path deserializes straight into typed structs borrowing from the payload
//! (category keys are `Cow::Borrowed`); the slow work of explaining an error (field paths,
//! re-checking syntax) happens only when there is an error.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, SecondsFormat, TimeDelta, Utc};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::id::check_slug;
use crate::reading::{
    Observation, PowerObservation, PowerState, PumpState, Reading, ShelterMode, ShelterObservation,
    WaterObservation,
};
use crate::registry::{Facility, FacilityIdx, FacilityKind, FacilityKindName, Registry};

/// Every v1 topic starts with this.
pub const TOPIC_PREFIX: &str = "stockpile/v1/";
/// Subscription filter for every facility's readings.
pub const READING_FILTER: &str = "stockpile/v1/+/+/reading";
/// Subscription filter for every facility's connectivity status.
pub const STATUS_FILTER: &str = "stockpile/v1/+/+/status";

/// Largest reading payload accepted. A day's backlog at one reading a minute is about
/// 100 KiB; anything much larger is a misbehaving gateway, not data.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// Most readings one message may carry (`[mqtt] max_readings_per_message`): a day's
/// backlog at one reading a minute is 1,440, so a gateway sends a long backlog in several
/// messages. More is rejected whole as `too_many_readings`, before any element is
/// examined: the work and memory one message can cost stay bounded whatever it holds.
pub const MAX_READINGS_PER_MESSAGE: usize = 1000;
/// Largest status payload accepted; a status is one word.
pub const MAX_STATUS_BYTES: usize = 1024;
/// How far ahead of the server's clock a `ts` may be (gateway clocks drift).
pub const MAX_FUTURE: Duration = Duration::from_secs(5 * 60);
/// Default history retention; a `ts` older than this could not be stored anyway.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 86_400);
/// Largest quantity, level or fuel accepted: a trillion litres or units is beyond any
/// facility, and keeps town sums far from overflow.
pub const MAX_QUANTITY: f64 = 1e12;
/// Largest battery percentage accepted.
pub const MAX_BATTERY_PCT: f64 = 100.0;
/// Largest shelter occupancy accepted whatever the registry says: more people than a
/// stadium holds is a counter gone wrong. Above the shelter's `capacity` is
/// `over_capacity`; above this, `bad_number`.
pub const MAX_OCCUPANCY: f64 = 1_000_000.0;

/// How many known ids an "unknown …" detail lists before "and N more".
const MAX_LISTED_IDS: usize = 10;
/// Longest excerpt of gateway-supplied text quoted in a detail.
const MAX_EXCERPT_CHARS: usize = 80;
/// Longest detail kept (plus a closing `…`): details go to a bounded reject log and to
/// logs.
pub const MAX_DETAIL_BYTES: usize = 512;

// ---------------------------------------------------------------------------------------
// Rejections
// ---------------------------------------------------------------------------------------

/// Why a message or reading was rejected. The ids ([`RejectReason::as_str`]) are stable:
/// metrics are labelled with them and the API reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The payload is over the size limit.
    TooLarge,
    /// The payload is not JSON (or is empty).
    NotJson,
    /// The topic is not a v1 reading or status topic.
    BadTopic,
    UnknownTown,
    UnknownFacility,
    /// Both exist, but the facility belongs to another town.
    FacilityNotInTown,
    /// The reading's section does not match the facility's kind.
    WrongKind,
    /// A `stock` key is not a category id of the registry.
    UnknownCategory,
    /// A number is negative, not finite, or implausibly large.
    BadNumber,
    TsInFuture,
    /// Older than the history retention.
    TsTooOld,
    /// Valid JSON of the wrong shape: missing or mistyped field, unknown enum value,
    /// empty array or stock, no section or several.
    BadPayload,
    /// A status payload that is neither online nor offline.
    BadStatus,
    /// An array with more readings than `max_readings_per_message`.
    TooManyReadings,
    /// A value above the facility's declared capacity (`capacity_l`, `fuel_capacity_l`,
    /// a warehouse's `max` for the category): a sensor misreading or wrong units, not
    /// stock to count on.
    OverCapacity,
}

impl RejectReason {
    /// Every reason, so metrics can be registered at zero and dashboards stay stable.
    pub const ALL: [RejectReason; 15] = [
        RejectReason::TooLarge,
        RejectReason::NotJson,
        RejectReason::BadTopic,
        RejectReason::UnknownTown,
        RejectReason::UnknownFacility,
        RejectReason::FacilityNotInTown,
        RejectReason::WrongKind,
        RejectReason::UnknownCategory,
        RejectReason::BadNumber,
        RejectReason::TsInFuture,
        RejectReason::TsTooOld,
        RejectReason::BadPayload,
        RejectReason::BadStatus,
        RejectReason::TooManyReadings,
        RejectReason::OverCapacity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::TooLarge => "too_large",
            RejectReason::NotJson => "not_json",
            RejectReason::BadTopic => "bad_topic",
            RejectReason::UnknownTown => "unknown_town",
            RejectReason::UnknownFacility => "unknown_facility",
            RejectReason::FacilityNotInTown => "facility_not_in_town",
            RejectReason::WrongKind => "wrong_kind",
            RejectReason::UnknownCategory => "unknown_category",
            RejectReason::BadNumber => "bad_number",
            RejectReason::TsInFuture => "ts_in_future",
            RejectReason::TsTooOld => "ts_too_old",
            RejectReason::BadPayload => "bad_payload",
            RejectReason::BadStatus => "bad_status",
            RejectReason::TooManyReadings => "too_many_readings",
            RejectReason::OverCapacity => "over_capacity",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RejectReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        RejectReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown reject reason {s:?}"))
    }
}

/// A rejection: a stable reason and a detail written for the gateway's vendor (what is
/// wrong and what would be right), at most [`MAX_DETAIL_BYTES`] long.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{reason}: {detail}")]
pub struct Rejected {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejected {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        let mut detail = detail.into();
        if detail.len() > MAX_DETAIL_BYTES {
            let cut = crate::text::cut_bytes(&detail, MAX_DETAIL_BYTES).len();
            detail.truncate(cut);
            detail.push('…');
        }
        Rejected { reason, detail }
    }
}

/// Gateway-supplied text quoted for a detail, cut to [`MAX_EXCERPT_CHARS`].
fn excerpt(s: &str) -> String {
    match s.char_indices().nth(MAX_EXCERPT_CHARS) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
    }
}

/// `a, b, c` or `a, b, … and 7 more`.
fn id_list<'a>(ids: impl ExactSizeIterator<Item = &'a str>) -> String {
    let total = ids.len();
    let mut out = ids.take(MAX_LISTED_IDS).collect::<Vec<_>>().join(", ");
    if total > MAX_LISTED_IDS {
        out.push_str(&format!(", … and {} more", total - MAX_LISTED_IDS));
    }
    out
}

// ---------------------------------------------------------------------------------------
// Topics
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    Reading,
    Status,
}

impl TopicKind {
    /// The topic's last level.
    pub fn as_str(self) -> &'static str {
        match self {
            TopicKind::Reading => "reading",
            TopicKind::Status => "status",
        }
    }
}

/// A parsed v1 topic. It borrows from the topic string: parsing allocates nothing. The
/// ids are valid slugs but not yet checked against a registry ([`resolve_topic`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topic<'a> {
    pub town: &'a str,
    pub facility: &'a str,
    pub kind: TopicKind,
}

impl fmt::Display for Topic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TOPIC_PREFIX}{}/{}/{}",
            self.town,
            self.facility,
            self.kind.as_str()
        )
    }
}

/// `stockpile/v1/{town}/{facility}/reading`.
pub fn reading_topic(town: &str, facility: &str) -> String {
    format!("{TOPIC_PREFIX}{town}/{facility}/reading")
}

/// `stockpile/v1/{town}/{facility}/status`.
pub fn status_topic(town: &str, facility: &str) -> String {
    format!("{TOPIC_PREFIX}{town}/{facility}/status")
}

/// The filter for one town's facilities, for a shard that subscribes town by town.
pub fn town_filter(town: &str, kind: TopicKind) -> String {
    format!("{TOPIC_PREFIX}{town}/+/{}", kind.as_str())
}

/// Parses `stockpile/v1/{town}/{facility}/{reading|status}`; rejections are `bad_topic`.
pub fn parse_topic(topic: &str) -> Result<Topic<'_>, Rejected> {
    let bad = |why: String| Rejected::new(RejectReason::BadTopic, why);
    let shape = "expected stockpile/v1/{town}/{facility}/reading or …/status";
    let Some(rest) = topic.strip_prefix(TOPIC_PREFIX) else {
        if let Some(version) = topic
            .strip_prefix("stockpile/")
            .and_then(|r| r.split('/').next())
        {
            return Err(bad(format!(
                "topic {} has version {}; this server speaks v1 ({shape})",
                excerpt(topic),
                excerpt(version)
            )));
        }
        return Err(bad(format!("topic {} ({shape})", excerpt(topic))));
    };
    let mut levels = rest.split('/');
    let (Some(town), Some(facility), Some(kind), None) =
        (levels.next(), levels.next(), levels.next(), levels.next())
    else {
        return Err(bad(format!(
            "topic {} has the wrong number of levels ({shape})",
            excerpt(topic)
        )));
    };
    check_slug(town).map_err(|e| bad(format!("topic {}: town {e}", excerpt(topic))))?;
    check_slug(facility).map_err(|e| bad(format!("topic {}: facility {e}", excerpt(topic))))?;
    let kind = match kind {
        "reading" => TopicKind::Reading,
        "status" => TopicKind::Status,
        other => {
            return Err(bad(format!(
                "topic {} ends in {}, expected \"reading\" or \"status\"",
                excerpt(topic),
                excerpt(other)
            )));
        }
    };
    Ok(Topic {
        town,
        facility,
        kind,
    })
}

/// Checks the topic's town and facility against the registry: `unknown_town`,
/// `unknown_facility`, `facility_not_in_town`. Status messages need this too.
pub fn resolve_topic(topic: &Topic<'_>, registry: &Registry) -> Result<FacilityIdx, Rejected> {
    let Some(town) = registry.town_idx(topic.town) else {
        return Err(Rejected::new(
            RejectReason::UnknownTown,
            format!("unknown town {:?}", topic.town),
        ));
    };
    let Some(facility) = registry.facility_idx(topic.facility) else {
        let known = registry.town(town).facilities.iter();
        return Err(Rejected::new(
            RejectReason::UnknownFacility,
            format!(
                "unknown facility {:?} (town {:?} has: {})",
                topic.facility,
                topic.town,
                id_list(known.map(|&f| registry.facility(f).id.as_str()))
            ),
        ));
    };
    let home = registry.facility(facility).town;
    if home != town {
        return Err(Rejected::new(
            RejectReason::FacilityNotInTown,
            format!(
                "facility {:?} belongs to town {:?}, not {:?}",
                topic.facility,
                registry.town(home).id.as_str(),
                topic.town
            ),
        ));
    }
    Ok(facility)
}

// ---------------------------------------------------------------------------------------
// Payload types
// ---------------------------------------------------------------------------------------

/// A reading's timestamp as the gateway wrote it: RFC 3339 with any offset, or epoch
/// milliseconds. The form is kept so that a re-encoded reading looks like the original.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireTs {
    Rfc3339(DateTime<FixedOffset>),
    EpochMs(i64),
}

impl WireTs {
    /// The instant, or `None` for epoch milliseconds beyond what chrono represents
    /// (±262,000 years).
    pub fn to_utc(self) -> Option<DateTime<Utc>> {
        match self {
            WireTs::Rfc3339(t) => Some(t.to_utc()),
            WireTs::EpochMs(ms) => DateTime::from_timestamp_millis(ms),
        }
    }
}

/// As it appears on the wire (without quotes).
impl fmt::Display for WireTs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireTs::Rfc3339(t) => f.write_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            WireTs::EpochMs(ms) => write!(f, "{ms}"),
        }
    }
}

impl From<DateTime<Utc>> for WireTs {
    fn from(t: DateTime<Utc>) -> Self {
        WireTs::Rfc3339(t.fixed_offset())
    }
}

impl From<DateTime<FixedOffset>> for WireTs {
    fn from(t: DateTime<FixedOffset>) -> Self {
        WireTs::Rfc3339(t)
    }
}

impl Serialize for WireTs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            WireTs::Rfc3339(t) => s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            WireTs::EpochMs(ms) => s.serialize_i64(*ms),
        }
    }
}

impl<'de> Deserialize<'de> for WireTs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TsVisitor;
        impl Visitor<'_> for TsVisitor {
            type Value = WireTs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 string or integer epoch milliseconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WireTs, E> {
                DateTime::parse_from_rfc3339(v)
                    .map(WireTs::Rfc3339)
                    .map_err(|e| {
                        E::custom(format!(
                            "{} is not RFC 3339 ({e}), e.g. \"2026-11-24T05:00:00+08:00\"",
                            excerpt(v)
                        ))
                    })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<WireTs, E> {
                Ok(WireTs::EpochMs(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<WireTs, E> {
                i64::try_from(v)
                    .map(WireTs::EpochMs)
                    .map_err(|_| E::custom(format!("{v} is out of range for epoch milliseconds")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<WireTs, E> {
                // serde_json hands over integers beyond u64 as floats.
                if v.fract() == 0.0 && v.abs() >= 9.3e18 {
                    return Err(E::custom(format!(
                        "{} is out of range for epoch milliseconds",
                        fmt_number(v)
                    )));
                }
                let what = if v.fract() == 0.0 {
                    "is written with a fraction or exponent"
                } else {
                    "is not an integer"
                };
                Err(E::custom(format!(
                    "{} {what}; send integer epoch milliseconds or an RFC 3339 string",
                    fmt_number(v)
                )))
            }
        }
        d.deserialize_any(TsVisitor)
    }
}

/// Warehouse stock: category id → quantity in the category's unit, in the gateway's
/// order. Keys borrow from the payload when they can (no escapes), so decoding a
/// warehouse reading does not allocate one string per category.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WireStock<'a>(pub Vec<(Cow<'a, str>, f64)>);

impl<'a, K: Into<Cow<'a, str>>> FromIterator<(K, f64)> for WireStock<'a> {
    fn from_iter<I: IntoIterator<Item = (K, f64)>>(items: I) -> Self {
        WireStock(items.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

impl Serialize for WireStock<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (category, quantity) in &self.0 {
            map.serialize_entry(category.as_ref(), quantity)?;
        }
        map.end()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for WireStock<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct StockVisitor;
        impl<'de> Visitor<'de> for StockVisitor {
            type Value = WireStock<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of category id to quantity")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::with_capacity(map.size_hint().unwrap_or(8).min(64));
                while let Some(CowStr(category)) = map.next_key()? {
                    let quantity: f64 = map.next_value()?;
                    items.push((category, quantity));
                }
                Ok(WireStock(items))
            }
        }
        d.deserialize_map(StockVisitor)
    }
}

/// A string that borrows from the input when it can.
struct CowStr<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CowStrVisitor;
        impl<'de> Visitor<'de> for CowStrVisitor {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(CowStrVisitor)
    }
}

/// A water point's section. Unknown fields are ignored (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WireWater {
    pub level_l: f64,
    pub pump: PumpState,
    pub potable: bool,
}

/// A power unit's section. Unknown fields are ignored (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WirePower {
    pub fuel_l: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_pct: Option<f64>,
    pub state: PowerState,
    /// Measured burn, overriding the rated one; 0 means "use the rated burn".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burn_l_per_h: Option<f64>,
}

/// A shelter's section (docs/design.md#shelters): people inside and the mode. Occupancy
/// is read as a number so a negative or fractional count gets a `bad_number` that says
/// so rather than a type error. Unknown fields are ignored (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WireShelter {
    pub occupancy: f64,
    pub mode: ShelterMode,
}

/// One reading as it travels. Exactly one of `stock` / `water` / `power` / `shelter` must be set for
/// it to validate; the type allows others so the simulator can send faulty payloads.
/// Unknown fields are ignored (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireReading<'a> {
    pub ts: WireTs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub stock: Option<WireStock<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub water: Option<WireWater>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<WirePower>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shelter: Option<WireShelter>,
}

impl<'a> WireReading<'a> {
    /// A warehouse reading.
    pub fn stock<K: Into<Cow<'a, str>>>(
        ts: impl Into<WireTs>,
        items: impl IntoIterator<Item = (K, f64)>,
    ) -> Self {
        WireReading {
            stock: Some(items.into_iter().collect()),
            ..WireReading::bare(ts.into())
        }
    }

    /// A water point reading.
    pub fn water(ts: impl Into<WireTs>, water: WireWater) -> Self {
        WireReading {
            water: Some(water),
            ..WireReading::bare(ts.into())
        }
    }

    /// A power unit reading.
    pub fn power(ts: impl Into<WireTs>, power: WirePower) -> Self {
        WireReading {
            power: Some(power),
            ..WireReading::bare(ts.into())
        }
    }

    /// A shelter reading.
    pub fn shelter(ts: impl Into<WireTs>, shelter: WireShelter) -> Self {
        WireReading {
            shelter: Some(shelter),
            ..WireReading::bare(ts.into())
        }
    }

    pub fn with_seq(self, seq: u64) -> Self {
        WireReading {
            seq: Some(seq),
            ..self
        }
    }

    fn bare(ts: WireTs) -> Self {
        WireReading {
            ts,
            seq: None,
            stock: None,
            water: None,
            power: None,
            shelter: None,
        }
    }

    /// The wire form of a validated reading; category keys borrow from the registry.
    /// `ts` is written as RFC 3339 in UTC with as many fraction digits as it has.
    pub fn from_reading(reading: &Reading, registry: &'a Registry) -> Self {
        let ts = WireTs::from(reading.ts);
        let wire = match &reading.observation {
            Observation::Stock(items) => WireReading::stock(
                ts,
                items
                    .iter()
                    .map(|&(c, quantity)| (registry.category(c).id.as_str(), quantity)),
            ),
            Observation::Water(w) => WireReading::water(
                ts,
                WireWater {
                    level_l: w.level_l,
                    pump: w.pump,
                    potable: w.potable,
                },
            ),
            Observation::Power(p) => WireReading::power(
                ts,
                WirePower {
                    fuel_l: p.fuel_l,
                    battery_pct: p.battery_pct,
                    state: p.state,
                    burn_l_per_h: p.burn_l_per_h,
                },
            ),
            Observation::Shelter(o) => WireReading::shelter(
                ts,
                WireShelter {
                    occupancy: o.occupancy as f64,
                    mode: o.mode,
                },
            ),
        };
        WireReading {
            seq: reading.seq,
            ..wire
        }
    }
}

/// The payload for `readings`: one object when there is one reading, an array otherwise
/// (an empty slice gives `[]`, which [`decode_readings`] rejects).
pub fn encode(readings: &[WireReading<'_>]) -> Vec<u8> {
    let json = match readings {
        [one] => serde_json::to_vec(one),
        many => serde_json::to_vec(many),
    };
    // Keys are strings and every Serialize impl here is infallible.
    json.expect("wire readings always serialize to JSON")
}

// ---------------------------------------------------------------------------------------
// Decoding readings
// ---------------------------------------------------------------------------------------

/// What decoding needs besides the message: the registry to resolve ids and the limits.
/// Time is an argument so decoding stays deterministic.
#[derive(Debug, Clone, Copy)]
pub struct DecodeContext<'r> {
    pub registry: &'r Registry,
    /// The server's clock when the message arrived.
    pub now: DateTime<Utc>,
    pub max_payload_bytes: usize,
    /// Most readings in one array ([`MAX_READINGS_PER_MESSAGE`] by default).
    pub max_readings: usize,
    pub max_future: Duration,
    /// The history retention; older readings are `ts_too_old`.
    pub retention: Duration,
}

impl<'r> DecodeContext<'r> {
    /// A context with the default limits.
    pub fn new(registry: &'r Registry, now: DateTime<Utc>) -> Self {
        DecodeContext {
            registry,
            now,
            max_payload_bytes: MAX_PAYLOAD_BYTES,
            max_readings: MAX_READINGS_PER_MESSAGE,
            max_future: MAX_FUTURE,
            retention: DEFAULT_RETENTION,
        }
    }
}

/// A reading message that could be routed and parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedReadings {
    /// The facility of the topic; every reading is for it.
    pub facility: FacilityIdx,
    /// Accepted readings sorted by `ts` (stable for equal `ts`).
    pub readings: Vec<Reading>,
    /// Rejected elements of an array, in array order; each detail starts with the
    /// element's index, `element [3]: …`. Always empty for a single-object payload.
    pub rejected: Vec<Rejected>,
}

/// Decodes and validates a reading message.
///
/// `Err` rejects the whole message: wrong topic, too large, not JSON, unknown or
/// misplaced facility, an empty array, or a single-object payload that fails any check.
/// For an array, each element is checked on its own and the failures are listed in
/// [`DecodedReadings::rejected`].
pub fn decode_readings(
    topic: &Topic<'_>,
    payload: &[u8],
    ctx: &DecodeContext<'_>,
) -> Result<DecodedReadings, Rejected> {
    let facility = check_envelope(topic, payload, ctx)?;
    let checker = ReadingChecker::new(facility, ctx);
    if first_byte(payload) != Some(b'[') {
        let wire = parse_reading(payload)?;
        let reading = checker.check(&wire)?;
        return Ok(DecodedReadings {
            facility,
            readings: vec![reading],
            rejected: Vec::new(),
        });
    }
    let (mut readings, rejected) = decode_array(payload, &checker, ctx.max_readings)?;
    // A backlog may arrive in any order (a gateway flushing several buffers); the
    // ledger's drawdown estimate needs time order.
    readings.sort_by_key(|r| r.ts);
    Ok(DecodedReadings {
        facility,
        readings,
        rejected,
    })
}

/// What rejects a message before its JSON is read: a topic that is not a reading
/// topic or names no facility of ours, a payload over the size limit, a byte order
/// mark. Returns the topic's facility.
fn check_envelope(
    topic: &Topic<'_>,
    payload: &[u8],
    ctx: &DecodeContext<'_>,
) -> Result<FacilityIdx, Rejected> {
    if topic.kind != TopicKind::Reading {
        return Err(Rejected::new(
            RejectReason::BadTopic,
            format!(
                "{topic} is a {} topic, not a reading topic",
                topic.kind.as_str()
            ),
        ));
    }
    if payload.len() > ctx.max_payload_bytes {
        return Err(Rejected::new(
            RejectReason::TooLarge,
            format!(
                "payload is {} bytes, the limit is {}; send a long backlog in several messages",
                payload.len(),
                ctx.max_payload_bytes
            ),
        ));
    }
    let facility = resolve_topic(topic, ctx.registry)?;
    if payload.starts_with(UTF8_BOM) {
        // RFC 8259 forbids it; say what it is rather than "expected value at column 1".
        return Err(Rejected::new(
            RejectReason::NotJson,
            "payload starts with a UTF-8 byte order mark (EF BB BF); send JSON without one",
        ));
    }
    Ok(facility)
}

/// An array payload: each element checked on its own. `Err` only for the array as a
/// whole (not JSON, too many elements, empty).
fn decode_array(
    payload: &[u8],
    checker: &ReadingChecker<'_>,
    max_readings: usize,
) -> Result<(Vec<Reading>, Vec<Rejected>), Rejected> {
    let elements = match bounded_array(payload, max_readings) {
        Ok(BoundedArray::Within(elements)) => elements,
        Ok(BoundedArray::Over) => {
            return Err(Rejected::new(
                RejectReason::TooManyReadings,
                format!(
                    "the array holds more than {max_readings} readings; send a long backlog in several messages"
                ),
            ));
        }
        Err(e) => return Err(explain_json_error(payload, &e, None)),
    };
    if elements.is_empty() {
        return Err(Rejected::new(
            RejectReason::BadPayload,
            "empty array; send at least one reading",
        ));
    }
    let mut readings = Vec::with_capacity(elements.len());
    let mut rejected = Vec::new();
    for (i, element) in elements.iter().enumerate() {
        match parse_reading(element.get().as_bytes()).and_then(|wire| checker.check(&wire)) {
            Ok(reading) => readings.push(reading),
            Err(r) => rejected.push(Rejected::new(
                r.reason,
                format!("element [{i}]: {}", r.detail),
            )),
        }
    }
    Ok((readings, rejected))
}

/// A JSON array of raw elements, collected only up to a cap: past it the rest is
/// skipped (its syntax still checked) without being kept, so a message of 130,000 tiny
/// elements costs one scan, not 130,000 of anything.
enum BoundedArray<'a> {
    Within(Vec<&'a RawValue>),
    Over,
}

/// Parses `payload` as a [`BoundedArray`] of at most `cap` elements.
fn bounded_array(payload: &[u8], cap: usize) -> Result<BoundedArray<'_>, serde_json::Error> {
    struct ArrayVisitor(usize);
    impl<'de> Visitor<'de> for ArrayVisitor {
        type Value = BoundedArray<'de>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of readings")
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let cap = self.0;
            let mut elements = Vec::with_capacity(cap.min(64));
            while let Some(element) = seq.next_element::<&'de RawValue>()? {
                if elements.len() == cap {
                    while seq.next_element::<IgnoredAny>()?.is_some() {}
                    return Ok(BoundedArray::Over);
                }
                elements.push(element);
            }
            Ok(BoundedArray::Within(elements))
        }
    }
    let mut de = serde_json::Deserializer::from_slice(payload);
    let array = de.deserialize_seq(ArrayVisitor(cap))?;
    de.end()?;
    Ok(array)
}

/// What some Windows tools put before UTF-8 text.
const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

fn first_byte(json: &[u8]) -> Option<u8> {
    json.iter().copied().find(|b| !b.is_ascii_whitespace())
}

/// Parses one reading object into its wire form, explaining any failure.
fn parse_reading(json: &[u8]) -> Result<WireReading<'_>, Rejected> {
    match first_byte(json) {
        Some(b'{') => serde_json::from_slice(json).map_err(|e| explain_reading_error(json, &e)),
        None => Err(Rejected::new(RejectReason::NotJson, "payload is empty")),
        Some(b) => match serde_json::from_slice::<IgnoredAny>(json) {
            Ok(_) => Err(Rejected::new(
                RejectReason::BadPayload,
                format!("a reading is a JSON object, not {}", json_kind(b)),
            )),
            Err(e) => Err(explain_json_error(json, &e, None)),
        },
    }
}

fn json_kind(first: u8) -> &'static str {
    match first {
        b'"' => "a string",
        b't' | b'f' => "a boolean",
        b'n' => "null",
        b'[' => "an array",
        _ => "a number",
    }
}

/// Turns serde's error for a reading object into a rejection that names the field.
fn explain_reading_error(json: &[u8], error: &serde_json::Error) -> Rejected {
    // Only now pay for tracking the path: parse again with serde_path_to_error.
    let mut de = serde_json::Deserializer::from_slice(json);
    let path = match serde_path_to_error::deserialize::<_, WireReading<'_>>(&mut de) {
        Err(e) if e.path().iter().next().is_some() => Some(e.path().to_string()),
        _ => None,
    };
    if error.classify() == serde_json::error::Category::Data {
        // serde stops at the first type error; if the rest is not even JSON, that is
        // the more useful thing to say.
        if let Err(syntax) = serde_json::from_slice::<IgnoredAny>(json) {
            return explain_json_error(json, &syntax, None);
        }
        let detail = match path {
            Some(path) => format!("{path}: {error}"),
            None => error.to_string(),
        };
        return Rejected::new(RejectReason::BadPayload, detail);
    }
    explain_json_error(json, error, path.as_deref())
}

/// Classifies a syntax error: NaN/Infinity literals and out-of-range numbers are
/// `bad_number`, anything else `not_json`.
fn explain_json_error(json: &[u8], error: &serde_json::Error, path: Option<&str>) -> Rejected {
    if error.classify() == serde_json::error::Category::Eof {
        return Rejected::new(
            RejectReason::NotJson,
            format!("not JSON (truncated): {error}"),
        );
    }
    // The field path helps with a bad number; for broken syntax the position does.
    let prefix = path.map(|p| format!("{p}: ")).unwrap_or_default();
    let token = token_at(json, error.line(), error.column());
    let bare = token.trim_start_matches(['-', '+']);
    if ["nan", "infinity", "inf"]
        .iter()
        .any(|word| bare.eq_ignore_ascii_case(word))
    {
        return Rejected::new(
            RejectReason::BadNumber,
            format!(
                "{prefix}{} is not a JSON number; send only finite numbers",
                excerpt(token)
            ),
        );
    }
    if error.to_string().starts_with("number out of range") {
        return Rejected::new(
            RejectReason::BadNumber,
            format!("{prefix}number {} is out of range", excerpt(token)),
        );
    }
    Rejected::new(RejectReason::NotJson, format!("not JSON: {error}"))
}

/// The word-like token (letters, digits, sign, dot) around serde_json's error position
/// (1-based line, column counted in bytes).
fn token_at(json: &[u8], line: usize, column: usize) -> &str {
    let line_start = if line <= 1 {
        0
    } else {
        json.iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'\n')
            .nth(line - 2)
            .map_or(json.len(), |(i, _)| i + 1)
    };
    let at = (line_start + column.saturating_sub(1)).min(json.len());
    let is_word = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.');
    let start = json[..at]
        .iter()
        .rposition(|b| !is_word(b))
        .map_or(0, |i| i + 1);
    let end = json[at..]
        .iter()
        .position(|b| !is_word(b))
        .map_or(json.len(), |i| at + i);
    // Word bytes are ASCII, so the slice is always UTF-8.
    std::str::from_utf8(&json[start..end]).unwrap_or("")
}

/// Validates wire readings for one facility against the registry and the clock.
struct ReadingChecker<'r> {
    registry: &'r Registry,
    facility: FacilityIdx,
    now: DateTime<Utc>,
    max_future: TimeDelta,
    retention: TimeDelta,
}

impl<'r> ReadingChecker<'r> {
    fn new(facility: FacilityIdx, ctx: &DecodeContext<'r>) -> Self {
        ReadingChecker {
            registry: ctx.registry,
            facility,
            now: ctx.now,
            max_future: TimeDelta::from_std(ctx.max_future).unwrap_or(TimeDelta::MAX),
            retention: TimeDelta::from_std(ctx.retention).unwrap_or(TimeDelta::MAX),
        }
    }

    fn check(&self, wire: &WireReading<'_>) -> Result<Reading, Rejected> {
        let observation = self.check_observation(wire)?;
        let ts = self.check_ts(wire.ts)?;
        Ok(Reading {
            facility: self.facility,
            ts,
            seq: wire.seq,
            observation,
        })
    }

    fn check_ts(&self, wire: WireTs) -> Result<DateTime<Utc>, Rejected> {
        let Some(ts) = wire.to_utc() else {
            let (reason, side) = match wire {
                WireTs::EpochMs(ms) if ms < 0 => (RejectReason::TsTooOld, "past"),
                _ => (RejectReason::TsInFuture, "future"),
            };
            return Err(Rejected::new(
                reason,
                format!("ts {wire} is too far in the {side} to represent"),
            ));
        };
        let ahead = ts.signed_duration_since(self.now);
        if ahead > self.max_future {
            let mut detail = format!(
                "ts {} is {} ahead of server time {} (limit {}); check the gateway's clock",
                utc(ts),
                fmt_span(ahead),
                utc(self.now),
                fmt_span(self.max_future)
            );
            if let WireTs::EpochMs(ms) = wire
                && self.is_plausible(DateTime::from_timestamp_micros(ms))
            {
                detail.push_str("; it looks like epoch microseconds, ts must be milliseconds");
            }
            return Err(Rejected::new(RejectReason::TsInFuture, detail));
        }
        let age = -ahead;
        if age > self.retention {
            let mut detail = format!(
                "ts {} is {} old, beyond the {} history retention",
                utc(ts),
                fmt_span(age),
                fmt_span(self.retention)
            );
            if let WireTs::EpochMs(ms) = wire
                && self.is_plausible(DateTime::from_timestamp(ms, 0))
            {
                detail.push_str("; it looks like epoch seconds, ts must be milliseconds");
            }
            return Err(Rejected::new(RejectReason::TsTooOld, detail));
        }
        Ok(ts)
    }

    /// Whether a reinterpretation of the ts would have been accepted.
    fn is_plausible(&self, ts: Option<DateTime<Utc>>) -> bool {
        ts.is_some_and(|ts| {
            let ahead = ts.signed_duration_since(self.now);
            ahead <= self.max_future && -ahead <= self.retention
        })
    }

    fn check_observation(&self, wire: &WireReading<'_>) -> Result<Observation, Rejected> {
        let facility = self.registry.facility(self.facility);
        match section_of(wire, facility)? {
            Section::Stock => self.check_stock(wire.stock.as_ref()),
            Section::Water(w) => check_water(w, &facility.kind),
            Section::Power(p) => check_power(p, &facility.kind),
            Section::Shelter(o) => check_shelter(o, &facility.kind),
        }
    }

    fn check_stock(&self, stock: Option<&WireStock<'_>>) -> Result<Observation, Rejected> {
        let items = stock.map_or(&[][..], |s| &s.0[..]);
        if items.is_empty() {
            return Err(Rejected::new(
                RejectReason::BadPayload,
                "stock is empty; send at least one category",
            ));
        }
        let mut out = Vec::with_capacity(items.len());
        for (key, value) in items {
            let Some(category) = self.registry.category_idx(key) else {
                return Err(Rejected::new(
                    RejectReason::UnknownCategory,
                    format!(
                        "unknown category {} in stock (known: {})",
                        excerpt(key),
                        id_list(self.registry.categories.iter().map(|c| c.id.as_str()))
                    ),
                ));
            };
            let value = check_number(*value, MAX_QUANTITY)
                .map_err(|why| bad_number(format_args!("stock.{key}"), *value, why))?;
            let max = self.registry.warehouse_max(self.facility, category);
            let value = within_capacity(
                format_args!("stock.{key}"),
                value,
                max,
                format_args!("max.{key}"),
            )?;
            out.push((category, value));
        }
        out.sort_unstable_by_key(|&(c, _)| c);
        if let Some(pair) = out.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(Rejected::new(
                RejectReason::BadPayload,
                format!(
                    "category {:?} appears twice in stock",
                    self.registry.category(pair[0].0).id.as_str()
                ),
            ));
        }
        Ok(Observation::Stock(out))
    }
}

/// The one section a reading carries, checked against what its facility sends.
fn section_of(wire: &WireReading<'_>, facility: &Facility) -> Result<Section, Rejected> {
    let kind = facility.kind.name();
    let expected = section_for(kind);
    let sections = (&wire.stock, &wire.water, &wire.power, &wire.shelter);
    let (section, observation) = match sections {
        (Some(_), None, None, None) => ("stock", Section::Stock),
        (None, Some(w), None, None) => ("water", Section::Water(*w)),
        (None, None, Some(p), None) => ("power", Section::Power(*p)),
        (None, None, None, Some(o)) => ("shelter", Section::Shelter(*o)),
        (None, None, None, None) => {
            return Err(Rejected::new(
                RejectReason::BadPayload,
                format!(
                    "reading has none of \"stock\", \"water\", \"power\", \"shelter\"; facility {:?} is a {kind} and sends {expected:?}",
                    facility.id.as_str()
                ),
            ));
        }
        (stock, water, power, shelter) => {
            let present: Vec<&str> = [
                stock.as_ref().map(|_| "\"stock\""),
                water.as_ref().map(|_| "\"water\""),
                power.as_ref().map(|_| "\"power\""),
                shelter.as_ref().map(|_| "\"shelter\""),
            ]
            .into_iter()
            .flatten()
            .collect();
            return Err(Rejected::new(
                RejectReason::BadPayload,
                format!(
                    "reading has {}; send only {expected:?} (facility {:?} is a {kind})",
                    present.join(" and "),
                    facility.id.as_str()
                ),
            ));
        }
    };
    if section != expected {
        return Err(Rejected::new(
            RejectReason::WrongKind,
            format!(
                "facility {:?} is a {kind}: it sends {expected:?}, not {section:?}",
                facility.id.as_str()
            ),
        ));
    }
    Ok(observation)
}

fn check_water(w: WireWater, kind: &FacilityKind) -> Result<Observation, Rejected> {
    let capacity = match *kind {
        FacilityKind::WaterPoint { capacity_l } => capacity_l,
        _ => None,
    };
    let level = quantity("water.level_l", w.level_l, MAX_QUANTITY)?;
    Ok(Observation::Water(WaterObservation {
        level_l: within_capacity("water.level_l", level, capacity, "capacity_l")?,
        pump: w.pump,
        potable: w.potable,
    }))
}

fn check_power(p: WirePower, kind: &FacilityKind) -> Result<Observation, Rejected> {
    let capacity = match *kind {
        FacilityKind::PowerUnit {
            fuel_capacity_l, ..
        } => Some(fuel_capacity_l),
        _ => None,
    };
    let fuel = quantity("power.fuel_l", p.fuel_l, MAX_QUANTITY)?;
    Ok(Observation::Power(PowerObservation {
        fuel_l: within_capacity("power.fuel_l", fuel, capacity, "fuel_capacity_l")?,
        battery_pct: p
            .battery_pct
            .map(|v| quantity("power.battery_pct", v, MAX_BATTERY_PCT))
            .transpose()?,
        state: p.state,
        burn_l_per_h: match p.burn_l_per_h {
            Some(v) => {
                Some(quantity("power.burn_l_per_h", v, MAX_QUANTITY)?).filter(|&burn| burn > 0.0)
            }
            None => None,
        },
    }))
}

/// A shelter's occupancy: a whole, non-negative count no larger than
/// [`MAX_OCCUPANCY`] (`bad_number`) nor than the shelter's `capacity` (`over_capacity`).
fn check_shelter(o: WireShelter, kind: &FacilityKind) -> Result<Observation, Rejected> {
    let capacity = match kind {
        FacilityKind::Shelter(spec) => Some(spec.capacity as f64),
        _ => None,
    };
    let occupancy = quantity("shelter.occupancy", o.occupancy, MAX_OCCUPANCY)?;
    if occupancy.fract() != 0.0 {
        return Err(Rejected::new(
            RejectReason::BadNumber,
            format!(
                "shelter.occupancy is {}; it counts people, send a whole number",
                fmt_number(occupancy)
            ),
        ));
    }
    let occupancy = within_capacity("shelter.occupancy", occupancy, capacity, "capacity")?;
    Ok(Observation::Shelter(ShelterObservation {
        // Whole and at most MAX_OCCUPANCY: the conversion is exact.
        occupancy: occupancy as u64,
        mode: o.mode,
    }))
}

/// Which section a reading has; a copy of it for the water, power and shelter cases.
enum Section {
    Stock,
    Water(WireWater),
    Power(WirePower),
    Shelter(WireShelter),
}

fn section_for(kind: FacilityKindName) -> &'static str {
    match kind {
        FacilityKindName::Warehouse => "stock",
        FacilityKindName::WaterPoint => "water",
        FacilityKindName::PowerUnit => "power",
        FacilityKindName::Shelter => "shelter",
    }
}

/// Why a number is not acceptable.
enum NumberProblem {
    NotFinite,
    Negative,
    AboveLimit(f64),
}

/// A quantity is finite, ≥ 0 and ≤ `max`; `-0` comes back as `0`.
fn check_number(value: f64, max: f64) -> Result<f64, NumberProblem> {
    if !value.is_finite() {
        Err(NumberProblem::NotFinite)
    } else if value < 0.0 {
        Err(NumberProblem::Negative)
    } else if value > max {
        Err(NumberProblem::AboveLimit(max))
    } else {
        Ok(value + 0.0)
    }
}

fn quantity(field: &str, value: f64, max: f64) -> Result<f64, Rejected> {
    check_number(value, max).map_err(|why| bad_number(field, value, why))
}

/// A value no more than the facility's declared capacity (`declared` names the registry
/// key: `capacity_l`, `fuel_capacity_l`, `max.water`), if it declares one: more is a
/// sensor in the wrong units or misreading, not stock to count on (`over_capacity`).
fn within_capacity(
    field: impl fmt::Display,
    value: f64,
    capacity: Option<f64>,
    declared: impl fmt::Display,
) -> Result<f64, Rejected> {
    match capacity {
        Some(capacity) if value > capacity => Err(Rejected::new(
            RejectReason::OverCapacity,
            format!(
                "{field} is {}, above the facility's {declared} {} (sensor units?)",
                fmt_number(value),
                fmt_number(capacity)
            ),
        )),
        _ => Ok(value),
    }
}

fn bad_number(field: impl fmt::Display, value: f64, why: NumberProblem) -> Rejected {
    let value = fmt_number(value);
    let detail = match why {
        NumberProblem::NotFinite => format!("{field} is {value}; send only finite numbers"),
        NumberProblem::Negative => format!("{field} is {value}; it must be ≥ 0"),
        NumberProblem::AboveLimit(max) => {
            format!("{field} is {value}, above the limit of {}", fmt_number(max))
        }
    };
    Rejected::new(RejectReason::BadNumber, detail)
}

/// Plain digits for everyday numbers, exponent notation for huge and tiny ones (a `1e300`
/// or a `1e-300` would otherwise print as some 300 digits).
fn fmt_number(v: f64) -> String {
    if v.is_finite() && v != 0.0 && !(1e-6..1e15).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        v.to_string()
    }
}

fn utc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A span in the grammar of config durations: `10m`, `1h5m`, `91d`, `250ms`.
fn fmt_span(span: TimeDelta) -> String {
    let ms = span.num_milliseconds().unsigned_abs();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = ms / 1000;
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    // Two most significant units are enough for a human; skip zero parts.
    let parts = [(d, "d"), (h, "h"), (m, "m"), (s, "s")];
    let first = parts.iter().position(|&(n, _)| n > 0).unwrap_or(3);
    parts[first..(first + 2).min(parts.len())]
        .iter()
        .filter(|&&(n, _)| n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Status
// ---------------------------------------------------------------------------------------

/// A gateway's connectivity, as published on its retained status topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Connectivity {
    Online,
    Offline,
}

impl Connectivity {
    pub fn as_str(self) -> &'static str {
        match self {
            Connectivity::Online => "online",
            Connectivity::Offline => "offline",
        }
    }

    /// The payload a gateway publishes (and sets as its Last Will for `Offline`).
    pub fn payload(self) -> &'static [u8] {
        self.as_str().as_bytes()
    }
}

/// Decodes a status payload: `online` / `offline` as plain text (trimmed, any case), as a
/// JSON string, or as `{"state": "online"}` (other fields ignored). An empty payload
/// (a cleared retained message) is `bad_status`.
pub fn decode_status(payload: &[u8]) -> Result<Connectivity, Rejected> {
    if payload.len() > MAX_STATUS_BYTES {
        return Err(Rejected::new(
            RejectReason::TooLarge,
            format!(
                "status payload is {} bytes, the limit is {MAX_STATUS_BYTES}",
                payload.len()
            ),
        ));
    }
    let bad = |detail: String| Rejected::new(RejectReason::BadStatus, detail);
    let text = std::str::from_utf8(payload)
        .map_err(|_| bad("status payload is not UTF-8".into()))?
        .trim();
    let state: Cow<'_, str> = match text.as_bytes().first() {
        None => {
            return Err(bad(
                "status payload is empty (a cleared retained message); send \"online\" or \"offline\""
                    .into(),
            ));
        }
        Some(b'{') => {
            #[derive(Deserialize)]
            struct StatusObject<'a> {
                #[serde(borrow)]
                state: Cow<'a, str>,
            }
            serde_json::from_str::<StatusObject<'_>>(text)
                .map_err(|e| {
                    bad(format!(
                        "status object: {e}; send {{\"state\": \"online\"}}"
                    ))
                })?
                .state
        }
        Some(b'"') => Cow::Owned(
            serde_json::from_str::<String>(text).map_err(|e| bad(format!("status string: {e}")))?,
        ),
        Some(_) => Cow::Borrowed(text),
    };
    let state = state.trim();
    if state.eq_ignore_ascii_case("online") {
        Ok(Connectivity::Online)
    } else if state.eq_ignore_ascii_case("offline") {
        Ok(Connectivity::Offline)
    } else {
        Err(bad(format!(
            "status {} is neither \"online\" nor \"offline\"",
            excerpt(state)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_like_config_durations() {
        let cases: &[(i64, &str)] = &[
            (250, "250ms"),
            (45_000, "45s"),
            (600_000, "10m"),
            (605_000, "10m5s"),
            (3_900_000, "1h5m"),
            (3_600_000, "1h"),
            (91 * 86_400_000 + 3_600_000 + 60_000, "91d1h"),
            (90 * 86_400_000, "90d"),
        ];
        for &(ms, want) in cases {
            assert_eq!(fmt_span(TimeDelta::milliseconds(ms)), want, "{ms} ms");
        }
    }

    #[test]
    fn token_at_finds_the_word_at_serde_positions() {
        let json = b"{\"a\": 1,\n \"b\": -Infinity}";
        let err = serde_json::from_slice::<serde_json::Value>(json).unwrap_err();
        assert_eq!(token_at(json, err.line(), err.column()), "-Infinity");
    }

    #[test]
    fn long_details_are_cut_at_a_char_boundary() {
        let r = Rejected::new(RejectReason::BadPayload, "景".repeat(400));
        assert!(r.detail.len() <= MAX_DETAIL_BYTES + '…'.len_utf8());
        assert!(r.detail.ends_with('…'));
    }
}
