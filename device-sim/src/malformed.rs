//! The malformed fault: one message per reject reason (docs/design.md#reject-reasons),
//! each on a topic the service subscribes to, so a test can check that every reason is
//! counted.
//!
//! Payloads are built with `reserve::wire` and then broken the way a vendor would break
//! them (a truncated message, a negative stock); only the broken parts are written here.

use chrono::{DateTime, TimeDelta, Utc};
use reserve::reading::{PowerState, PumpState, ShelterMode};
use reserve::registry::{FacilityIdx, FacilityKind, FacilityKindName, Registry};
use reserve::wire::{
    MAX_PAYLOAD_BYTES, MAX_QUANTITY, MAX_READINGS_PER_MESSAGE, RejectReason, TOPIC_PREFIX,
    WirePower, WireReading, WireShelter, WireTs, WireWater, encode, reading_topic, status_topic,
};

/// A message meant to be rejected for `reason`.
#[derive(Debug, Clone)]
pub(crate) struct Malformed {
    pub(crate) reason: RejectReason,
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
}

/// A well-formed reading for a facility of `kind`, with `quantity` in its number field.
fn reading_of(
    kind: FacilityKindName,
    registry: &Registry,
    ts: DateTime<Utc>,
    quantity: f64,
) -> WireReading<'static> {
    match kind {
        FacilityKindName::Warehouse => {
            let category = registry
                .categories
                .first()
                .map_or("water", |c| c.id.as_str());
            WireReading::stock(ts, [(category.to_owned(), quantity)])
        }
        FacilityKindName::WaterPoint => WireReading::water(
            ts,
            WireWater {
                level_l: quantity,
                pump: PumpState::Ok,
                potable: true,
            },
        ),
        FacilityKindName::PowerUnit => WireReading::power(
            ts,
            WirePower {
                fuel_l: quantity,
                battery_pct: Some(95.0),
                state: PowerState::Standby,
                burn_l_per_h: None,
            },
        ),
        // One person fits any shelter (capacity ≥ 1), so a "valid" reading stays valid;
        // a negative quantity stays negative for `bad_number`.
        FacilityKindName::Shelter => WireReading::shelter(
            ts,
            WireShelter {
                occupancy: quantity.min(1.0),
                mode: ShelterMode::Open,
            },
        ),
    }
}

/// An id that is a valid slug but not in the registry.
fn absent_id(base: &str, exists: impl Fn(&str) -> bool) -> String {
    let mut id = base.to_owned();
    while exists(&id) {
        id.push_str("-x");
    }
    id
}

/// The messages, one per reason the registry makes reachable, in the order of
/// [`RejectReason::ALL`]: `unknown_category` needs a warehouse, `facility_not_in_town` a
/// second town, `over_capacity` a facility that declares a capacity. Empty for an empty
/// registry.
pub(crate) fn malformed_messages(registry: &Registry, now: DateTime<Utc>) -> Vec<Malformed> {
    let home = registry
        .facilities
        .iter()
        .position(|f| f.kind.name() == FacilityKindName::Warehouse)
        .or(if registry.facilities.is_empty() {
            None
        } else {
            Some(0)
        });
    let Some(home) = home.map(FacilityIdx::from_index) else {
        return Vec::new();
    };
    let facility = registry.facility(home);
    let kind = facility.kind.name();
    let town = registry.town(facility.town).id.as_str();
    let id = facility.id.as_str();
    let topic = reading_topic(town, id);
    let valid = |ts: DateTime<Utc>| encode(&[reading_of(kind, registry, ts, 100.0)]);

    let mut out = Vec::new();
    let mut add = |reason, topic: String, payload: Vec<u8>| {
        out.push(Malformed {
            reason,
            topic,
            payload,
        });
    };

    // A backlog too long for one message: distinct readings until past the limit.
    let one = valid(now).len();
    let too_many = (MAX_PAYLOAD_BYTES / one + 100).max(MAX_READINGS_PER_MESSAGE + 1);
    let backlog: Vec<WireReading<'static>> = (0..too_many)
        .map(|i| {
            let ts = now - TimeDelta::seconds(i64::try_from(i).unwrap_or(i64::MAX));
            reading_of(kind, registry, ts, 100.0)
        })
        .collect();
    add(RejectReason::TooLarge, topic.clone(), encode(&backlog));

    let mut truncated = valid(now);
    truncated.truncate(truncated.len() / 2);
    add(RejectReason::NotJson, topic.clone(), truncated);

    add(
        RejectReason::BadTopic,
        format!("{TOPIC_PREFIX}Not_A_Slug/{id}/reading"),
        valid(now),
    );
    let no_town = absent_id("no-such-town", |t| registry.town_idx(t).is_some());
    add(
        RejectReason::UnknownTown,
        reading_topic(&no_town, id),
        valid(now),
    );
    let no_facility = absent_id("no-such-facility", |f| registry.facility_idx(f).is_some());
    add(
        RejectReason::UnknownFacility,
        reading_topic(town, &no_facility),
        valid(now),
    );
    if let Some(other) = registry.towns.iter().find(|t| t.id.as_str() != town) {
        add(
            RejectReason::FacilityNotInTown,
            reading_topic(other.id.as_str(), id),
            valid(now),
        );
    }
    let other_kind = match kind {
        FacilityKindName::Warehouse | FacilityKindName::PowerUnit | FacilityKindName::Shelter => {
            FacilityKindName::WaterPoint
        }
        FacilityKindName::WaterPoint => FacilityKindName::PowerUnit,
    };
    add(
        RejectReason::WrongKind,
        topic.clone(),
        encode(&[reading_of(other_kind, registry, now, 100.0)]),
    );
    if kind == FacilityKindName::Warehouse {
        let category = absent_id("no-such-category", |c| registry.category_idx(c).is_some());
        add(
            RejectReason::UnknownCategory,
            topic.clone(),
            encode(&[WireReading::stock(now, [(category, 100.0)])]),
        );
    }
    add(
        RejectReason::BadNumber,
        topic.clone(),
        encode(&[reading_of(kind, registry, now, -5.0)]),
    );
    add(
        RejectReason::TsInFuture,
        topic.clone(),
        valid(now + TimeDelta::hours(1)),
    );
    // Ten years back: beyond any plausible history retention.
    add(
        RejectReason::TsTooOld,
        topic.clone(),
        valid(now - TimeDelta::days(3650)),
    );
    let no_section = WireReading {
        ts: WireTs::from(now),
        seq: None,
        stock: None,
        water: None,
        power: None,
        shelter: None,
    };
    add(
        RejectReason::BadPayload,
        topic.clone(),
        encode(&[no_section]),
    );
    add(
        RejectReason::BadStatus,
        status_topic(town, id),
        b"maybe".to_vec(),
    );
    // Under the size limit, over the count limit: one reading too many.
    let long = &backlog[..MAX_READINGS_PER_MESSAGE + 1];
    add(RejectReason::TooManyReadings, topic, encode(long));
    if let Some((f, reading)) = over_capacity(registry, home, now) {
        let facility = registry.facility(f);
        let town = registry.town(facility.town).id.as_str();
        add(
            RejectReason::OverCapacity,
            reading_topic(town, facility.id.as_str()),
            encode(&[reading]),
        );
    }
    out
}

/// A reading a thousand times what a facility declares it can hold (a sensor reporting
/// millilitres), for `home` if it declares a capacity, else for the first facility that
/// does: a water point's `capacity_l`, a power unit's `fuel_capacity_l`, a warehouse's
/// `max` for a category. `None` when no facility declares one.
fn over_capacity(
    registry: &Registry,
    home: FacilityIdx,
    now: DateTime<Utc>,
) -> Option<(FacilityIdx, WireReading<'static>)> {
    let others = (0..registry.facilities.len()).map(FacilityIdx::from_index);
    std::iter::once(home).chain(others).find_map(|f| {
        let facility = registry.facility(f);
        let (category, capacity) = match facility.kind {
            FacilityKind::WaterPoint {
                capacity_l: Some(capacity),
            }
            | FacilityKind::PowerUnit {
                fuel_capacity_l: capacity,
                ..
            } => (None, capacity),
            FacilityKind::Warehouse => {
                let (category, max) = registry.warehouse_max_of(f).next()?;
                (Some(category), max)
            }
            FacilityKind::WaterPoint { capacity_l: None } => return None,
            // A thousand times a shelter's capacity may pass MAX_OCCUPANCY (bad_number);
            // the other kinds give the case.
            FacilityKind::Shelter(_) => return None,
        };
        // Above the capacity but within MAX_QUANTITY, or it would be bad_number.
        let value = (capacity * 1000.0).min(MAX_QUANTITY);
        if value <= capacity {
            return None;
        }
        let reading = match category {
            Some(c) => {
                let category = registry.category(c).id.as_str().to_owned();
                WireReading::stock(now, [(category, value)])
            }
            None => reading_of(facility.kind.name(), registry, now, value),
        };
        Some((f, reading))
    })
}

#[cfg(test)]
mod tests {
    use reserve::registry::{Source, load_registry};
    use reserve::wire::{
        DecodeContext, TopicKind, decode_readings, decode_status, parse_topic, resolve_topic,
    };

    use super::*;

    fn registry(text: &str) -> Registry {
        let source = Source {
            name: "test.toml".into(),
            text: text.into(),
        };
        load_registry(&source, &[], &mut |_| Err("no csv".into())).unwrap()
    }

    const TWO_TOWNS: &str = r#"
[[district]]
id = "d1"
name = "D1"
[[cluster]]
id = "c01"
name = "C1"
[[category]]
id = "water"
name = "Water"
unit = "L"
daily_need = 3.0
[[town]]
id = "alpha"
name = "Alpha"
district = "d1"
cluster = "c01"
population = 1000
[[town]]
id = "beta"
name = "Beta"
district = "d1"
cluster = "c01"
population = 1000
[[facility]]
id = "alpha-wh1"
town = "alpha"
kind = "warehouse"
max = { water = 50000 }
"#;

    /// What the service would say about a message.
    fn verdict(registry: &Registry, m: &Malformed, now: DateTime<Utc>) -> Option<RejectReason> {
        let topic = match parse_topic(&m.topic) {
            Ok(topic) => topic,
            Err(r) => return Some(r.reason),
        };
        match topic.kind {
            TopicKind::Status => resolve_topic(&topic, registry)
                .and_then(|_| decode_status(&m.payload))
                .err()
                .map(|r| r.reason),
            TopicKind::Reading => {
                let ctx = DecodeContext::new(registry, now);
                match decode_readings(&topic, &m.payload, &ctx) {
                    Err(r) => Some(r.reason),
                    Ok(decoded) => decoded.rejected.first().map(|r| r.reason),
                }
            }
        }
    }

    #[test]
    fn each_message_is_rejected_for_its_reason_and_every_reason_is_covered() {
        let registry = registry(TWO_TOWNS);
        let now = Utc::now();
        let messages = malformed_messages(&registry, now);
        for m in &messages {
            assert_eq!(verdict(&registry, m, now), Some(m.reason), "{}", m.topic);
        }
        let reasons: Vec<RejectReason> = messages.iter().map(|m| m.reason).collect();
        assert_eq!(reasons, RejectReason::ALL.to_vec());
    }

    #[test]
    fn over_capacity_goes_to_the_first_facility_that_declares_a_capacity() {
        let wh = "[[facility]]\nid = \"alpha-wh2\"\ntown = \"alpha\"\nkind = \"warehouse\"\n";
        let wp = "[[facility]]\nid = \"alpha-wp1\"\ntown = \"alpha\"\nkind = \"water_point\"\n";
        let pu = "[[facility]]\nid = \"alpha-pu1\"\ntown = \"alpha\"\nkind = \"power_unit\"\nfuel_capacity_l = 500\nburn_l_per_h = 5\n";
        // (facilities after TWO_TOWNS' alpha-wh1, then whether it keeps its max; the
        // facility the over_capacity message is for)
        let rows: &[(String, bool, &str)] = &[
            (String::new(), true, "alpha-wh1"),
            (format!("{wh}max = {{ water = 10 }}\n"), false, "alpha-wh2"),
            (format!("{wp}capacity_l = 20000\n{pu}"), false, "alpha-wp1"),
            (format!("{wp}{pu}"), false, "alpha-pu1"),
            (format!("{wh}{pu}"), true, "alpha-wh1"),
        ];
        for (facilities, keep_max, want) in rows {
            let mut text = format!("{TWO_TOWNS}{facilities}");
            if !keep_max {
                text = text.replace("max = { water = 50000 }\n", "");
            }
            let registry = registry(&text);
            let now = Utc::now();
            let messages = malformed_messages(&registry, now);
            let over: Vec<&Malformed> = messages
                .iter()
                .filter(|m| m.reason == RejectReason::OverCapacity)
                .collect();
            assert_eq!(over.len(), 1, "{facilities}");
            assert_eq!(over[0].topic, reading_topic("alpha", want), "{facilities}");
            assert_eq!(
                verdict(&registry, over[0], now),
                Some(RejectReason::OverCapacity)
            );
        }
    }

    #[test]
    fn reasons_the_registry_cannot_reach_are_left_out() {
        // One town, a water point only: no warehouse for unknown_category, no second
        // town for facility_not_in_town, no declared capacity for over_capacity.
        let text = TWO_TOWNS
            .split("[[town]]\nid = \"beta\"")
            .next()
            .unwrap()
            .to_owned()
            + "[[facility]]\nid = \"alpha-wp1\"\ntown = \"alpha\"\nkind = \"water_point\"\n";
        let registry = registry(&text);
        let now = Utc::now();
        let messages = malformed_messages(&registry, now);
        let reasons: Vec<RejectReason> = messages.iter().map(|m| m.reason).collect();
        assert!(!reasons.contains(&RejectReason::UnknownCategory));
        assert!(!reasons.contains(&RejectReason::FacilityNotInTown));
        assert!(!reasons.contains(&RejectReason::OverCapacity));
        assert_eq!(reasons.len(), RejectReason::ALL.len() - 3);
        for m in &messages {
            assert_eq!(verdict(&registry, m, now), Some(m.reason), "{}", m.topic);
        }
    }
}
