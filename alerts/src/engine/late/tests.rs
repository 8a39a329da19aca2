//! A backlog of timestamped readings through a real ledger, the rules and the engine on
//! a real SQLite file, as the evaluator drives them: what the officer is told, and what
//! the alert history keeps.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use reserve::reading::Observation;
use reserve::registry::{Source, TownIdx, load_registry};
use reserve::{Ledger, Reading, Registry};
use store::{AlertQuery, AlertRow, AlertState, NotificationQuery, Store, StoreOptions};

use crate::channel::ChannelKind;
use crate::config::WebhookFormat;
use crate::engine::{Engine, Policy};
use crate::render::Renderer;
use crate::rules::{self, RuleSettings};

/// One town of 1,000 needing 3 L a day each (a three-day target of 9,000 L), one
/// warehouse reporting every ten minutes, one officer.
const REGISTRY: &str = r#"
[[category]]
id = "water"
name = "Drinking water"
unit = "L"
daily_need = 3.0

[[town]]
id = "jingshan"
name = "Jingshan"
district = "dongcheng"
cluster = "c01"
population = 1000

[[facility]]
id = "js-wh1"
town = "jingshan"
kind = "warehouse"
report_every = "10m"

[[contact]]
name = "Li Wei"
email = "li.wei@example.org"
lang = "en"
towns = ["jingshan"]
"#;

/// Five days: above target. One day: below it.
const FULL_L: f64 = 15_000.0;
const LOW_L: f64 = 3_000.0;

/// The minute the link was cut (readings' time); 14:00 in the messages' UTC+8.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 6, 0, 0).unwrap()
}

fn minute(m: i64) -> DateTime<Utc> {
    t0() + Duration::minutes(m)
}

/// The wall clock when the link came back: an hour after the cut.
fn back() -> DateTime<Utc> {
    minute(60)
}

fn policy(pending_for: Duration) -> Policy {
    Policy {
        pending_for,
        group_wait: Duration::zero(),
        repeat_every: Duration::hours(4),
        escalate_after: Duration::minutes(30),
    }
}

/// A city instance's evaluator over one town: its ledger and engine on one file.
struct City {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    registry: Arc<Registry>,
    ledger: Ledger,
    engine: Engine,
    town: TownIdx,
    policy: Policy,
}

impl City {
    fn start(policy: Policy) -> City {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stockpile.db");
        let source = Source {
            name: "registry.toml".into(),
            text: REGISTRY.into(),
        };
        let registry =
            Arc::new(load_registry(&source, &[], &mut |n| Err(format!("no {n}"))).unwrap());
        let engine = open_engine(&registry, &path, policy, minute(-10));
        City {
            _dir: dir,
            path,
            town: registry.town_idx("jingshan").unwrap(),
            ledger: Ledger::new(Arc::clone(&registry)),
            registry,
            engine,
            policy,
        }
    }

    fn restart(&mut self, now: DateTime<Utc>) {
        self.engine = open_engine(&self.registry, &self.path, self.policy, now);
    }

    /// One batch of the warehouse's readings `(ts, litres)` landing at wall time `now`,
    /// then the evaluator's step at `now`.
    fn land(&mut self, readings: &[(DateTime<Utc>, f64)], now: DateTime<Utc>) {
        let facility = self.registry.facility_idx("js-wh1").unwrap();
        let water = self.registry.category_idx("water").unwrap();
        for &(ts, litres) in readings {
            let reading = Reading {
                facility,
                ts,
                seq: None,
                observation: Observation::Stock(vec![(water, litres)]),
            };
            self.ledger.apply(&reading, now);
        }
        self.ledger.refresh(self.town, now);
        self.evaluate(now);
    }

    /// The evaluator's step at `now` without new readings (its periodic tick).
    fn evaluate(&mut self, now: DateTime<Utc>) {
        let settings = RuleSettings {
            depleting_horizon_h: 12.0,
            started_at: minute(-10),
            startup_grace_factor: 0.0,
            clock_speed: 1.0,
            shelter_near_capacity_pct: 90.0,
        };
        let evaluation = rules::evaluate(&self.ledger, self.town, &settings, now);
        let newest = super::newest_reading(&self.ledger, self.town);
        self.engine.note_newest_reading(self.town, newest);
        self.engine
            .observe(&[(self.town, evaluation)], now)
            .unwrap();
        self.engine.run_timers(now).unwrap();
        self.engine.flush_due(now).unwrap();
    }

    /// Every email enqueued so far: (recipient, event, body).
    fn sent(&self) -> Vec<(String, String, String)> {
        let store = Store::open(&self.path, StoreOptions::default()).unwrap();
        let query = NotificationQuery {
            limit: 100,
            ..NotificationQuery::default()
        };
        let mut rows = store.list_notifications(&query).unwrap();
        rows.reverse();
        rows.into_iter()
            .filter(|r| r.channel == "email")
            .map(|r| (r.recipient, r.event, r.body))
            .collect()
    }

    /// The alert history, oldest first.
    fn history(&self) -> Vec<AlertRow> {
        let store = Store::open(&self.path, StoreOptions::default()).unwrap();
        let query = AlertQuery {
            limit: 100,
            ..AlertQuery::default()
        };
        let mut rows = store.list_alerts(&query).unwrap();
        rows.reverse();
        rows
    }
}

fn open_engine(
    registry: &Arc<Registry>,
    path: &std::path::Path,
    policy: Policy,
    now: DateTime<Utc>,
) -> Engine {
    let store = Store::open(path, StoreOptions::default()).unwrap();
    let renderer = Renderer::new(
        None,
        chrono::FixedOffset::east_opt(8 * 3600).unwrap(),
        "[Stockpile]",
        WebhookFormat::Auto,
    );
    Engine::open(
        Arc::clone(registry),
        policy,
        store,
        renderer,
        vec![ChannelKind::Email],
        now,
    )
    .unwrap()
    .with_late_after(Duration::minutes(5))
}

fn secs(s: i64) -> Duration {
    Duration::seconds(s)
}

/// `(state, fired_at, resolved_at, late)` of an alert.
type Episode = (
    AlertState,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    bool,
);

/// Each alert of the history as an [`Episode`].
fn episodes(history: &[AlertRow]) -> Vec<Episode> {
    history
        .iter()
        .map(|a| (a.state, a.fired_at, a.resolved_at, a.late))
        .collect()
}

/// Live before the cut: the town full, nothing to tell.
fn before_the_cut(city: &mut City) {
    city.land(&[(minute(-1), FULL_L)], minute(-1) + secs(1));
    assert!(city.sent().is_empty());
}

#[test]
fn a_fall_and_recovery_inside_the_backlog_is_history_not_news() {
    let mut city = City::start(policy(Duration::zero()));
    before_the_cut(&mut city);
    // The backlog lands in batches a second apart, an hour late.
    city.land(&[(minute(10), FULL_L), (minute(20), LOW_L)], back());
    city.land(&[(minute(30), LOW_L)], back() + secs(1));
    city.land(&[(minute(40), FULL_L)], back() + secs(2));
    city.land(&[(minute(50), FULL_L)], back() + secs(2));
    // Then the gateway's current reading, and ticks long after.
    city.land(&[(back() + secs(3), FULL_L)], back() + secs(4));
    city.evaluate(back() + secs(60));
    assert_eq!(city.sent(), vec![], "nothing told for a state that passed");
    assert_eq!(
        episodes(&city.history()),
        vec![(
            AlertState::Resolved,
            Some(minute(20)),
            Some(minute(40)),
            true
        )],
        "the episode is kept, at the readings' times, marked late"
    );
}

#[test]
fn a_town_still_below_target_after_the_backlog_is_told_once_since_its_fall() {
    let mut city = City::start(policy(Duration::zero()));
    before_the_cut(&mut city);
    city.land(&[(minute(10), FULL_L), (minute(20), LOW_L)], back());
    city.land(
        &[(minute(30), LOW_L), (minute(50), LOW_L)],
        back() + secs(1),
    );
    // Between two batches of the replay: still catching up, nothing told yet.
    city.evaluate(back() + secs(10));
    assert_eq!(city.sent(), vec![]);
    // The gateway's current reading: the backlog is in, the town still below target.
    city.land(&[(back() + secs(12), LOW_L)], back() + secs(13));
    city.evaluate(back() + secs(30));
    city.evaluate(back() + secs(90));
    let sent = city.sent();
    assert_eq!(sent.len(), 1, "one notification: {sent:?}");
    let (to, event, body) = &sent[0];
    assert_eq!(
        (to.as_str(), event.as_str()),
        ("li.wei@example.org", "fired")
    );
    assert!(
        body.contains("since 11-24 14:20"),
        "below target since the reading that showed it (14:20 in UTC+8): {body}"
    );
    let history = city.history();
    assert_eq!(
        episodes(&history),
        vec![(AlertState::Firing, Some(minute(20)), None, true)]
    );
}

#[test]
fn a_backlog_that_ends_without_a_current_reading_is_told_after_a_quiet_spell() {
    let mut city = City::start(policy(Duration::zero()));
    before_the_cut(&mut city);
    city.land(&[(minute(20), LOW_L), (minute(50), LOW_L)], back());
    // The gateway fell silent at minute 50: no current reading will come. Ticks.
    city.evaluate(back() + secs(10));
    city.evaluate(back() + secs(20));
    assert_eq!(city.sent(), vec![], "still within the quiet spell");
    city.evaluate(back() + super::QUIET + secs(1));
    let events: Vec<String> = city.sent().into_iter().map(|(_, e, _)| e).collect();
    assert_eq!(events, ["fired"]);
}

#[test]
fn the_for_of_a_condition_is_judged_in_the_readings_time_during_catch_up() {
    let mut city = City::start(policy(Duration::minutes(5)));
    before_the_cut(&mut city);
    // Below target from minute 20 to 28: more than five minutes of the readings' time,
    // though the batches land a second apart.
    city.land(&[(minute(20), LOW_L)], back());
    city.land(&[(minute(22), LOW_L)], back() + secs(1));
    assert_eq!(city.history()[0].state, AlertState::Pending);
    city.land(&[(minute(28), LOW_L)], back() + secs(2));
    city.land(&[(minute(30), FULL_L)], back() + secs(3));
    // A short dip is not an alert in the readings' time either.
    city.land(&[(minute(40), LOW_L)], back() + secs(4));
    city.land(&[(minute(42), FULL_L)], back() + secs(5));
    city.land(&[(back() + secs(6), FULL_L)], back() + secs(7));
    assert_eq!(city.sent(), vec![]);
    assert_eq!(
        episodes(&city.history()),
        vec![(
            AlertState::Resolved,
            Some(minute(28)),
            Some(minute(30)),
            true
        )]
    );
}

#[test]
fn a_restart_in_the_middle_of_a_backlog_tells_nothing_either() {
    let mut city = City::start(policy(Duration::zero()));
    before_the_cut(&mut city);
    city.land(&[(minute(20), LOW_L)], back());
    city.restart(back() + secs(5));
    city.land(&[(minute(30), FULL_L)], back() + secs(6));
    city.land(&[(back() + secs(7), FULL_L)], back() + secs(8));
    city.evaluate(back() + secs(60));
    assert_eq!(city.sent(), vec![]);
    assert_eq!(
        episodes(&city.history()),
        vec![(
            AlertState::Resolved,
            Some(minute(20)),
            Some(minute(30)),
            true
        )]
    );
}

#[test]
fn a_fall_told_live_and_recovered_during_the_cut_is_told_resolved_once_caught_up() {
    let mut city = City::start(policy(Duration::zero()));
    city.land(&[(minute(-1), LOW_L)], minute(-1) + secs(1));
    let fired: Vec<String> = city.sent().into_iter().map(|(_, e, _)| e).collect();
    assert_eq!(fired, ["fired"], "told live, before the cut");
    city.land(&[(minute(20), FULL_L)], back());
    assert_eq!(city.sent().len(), 1, "nothing more while catching up");
    city.land(&[(back() + secs(2), FULL_L)], back() + secs(3));
    let events: Vec<String> = city.sent().into_iter().map(|(_, e, _)| e).collect();
    assert_eq!(
        events,
        ["fired", "resolved"],
        "the recovery still holds: told"
    );
    assert_eq!(
        episodes(&city.history()),
        vec![(
            AlertState::Resolved,
            Some(minute(-1) + secs(1)),
            Some(minute(20)),
            false
        )]
    );
}

#[test]
fn a_gateway_whose_clock_is_behind_is_judged_live_after_the_longest_catch_up() {
    let mut city = City::start(policy(Duration::zero()));
    // Every reading ten minutes old when it lands, one a minute: no backlog replays
    // that slowly.
    for m in 0..=9 {
        let litres = if m == 0 { FULL_L } else { LOW_L };
        city.land(&[(minute(m), litres)], minute(m + 10));
    }
    assert_eq!(
        city.sent(),
        vec![],
        "within the longest catch-up: still late"
    );
    for m in 10..=11 {
        city.land(&[(minute(m), LOW_L)], minute(m + 10));
    }
    let events: Vec<String> = city.sent().into_iter().map(|(_, e, _)| e).collect();
    assert_eq!(events, ["fired"], "told once the catch-up bound is over");
}
