//! The lifecycle on a real SQLite file with explicit times: what each contact is told,
//! and when. Delivery is not involved: these tests read the outbox.

use std::sync::Arc;

use chrono::{Duration, TimeZone};
use reserve::coverage::NotReady;
use reserve::registry::{Source, load_registry};
use store::{NotificationQuery, OutboxRow, StoreOptions};

use super::*;
use crate::config::WebhookFormat;
use crate::rules::{ReserveDetail, Severity, TownEvaluation};

const REGISTRY: &str = r#"
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

[[facility]]
id = "js-pu1"
town = "jingshan"
kind = "power_unit"
fuel_capacity_l = 500
burn_l_per_h = 5.0

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
name = "Zhao Min"
email = "zhao.min@example.org"
lang = "zh"
districts = ["dongcheng"]

[[contact]]
name = "City duty officer"
email = "duty@example.org"
lang = "en"
city = true

[[contact]]
name = "Donghua officer"
email = "dh@example.org"
lang = "zh"
towns = ["donghua"]
"#;

const OFFICER: &str = "li.wei@example.org";
const OFFICER_PHONE: &str = "+8613800000001";
const CLUSTER: &str = "wang.fang@example.org";
const DISTRICT: &str = "zhao.min@example.org";
const CITY: &str = "duty@example.org";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 6, 0, 0).unwrap()
}

fn secs(s: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(s)
}

fn mins(m: i64) -> DateTime<Utc> {
    t0() + Duration::minutes(m)
}

fn policy() -> Policy {
    Policy {
        pending_for: Duration::zero(),
        group_wait: Duration::zero(),
        repeat_every: Duration::hours(4),
        escalate_after: Duration::minutes(30),
    }
}

/// One message as the outbox holds it: (recipient, event, subject).
type Sent = (String, String, String);

struct Fixture {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    registry: Arc<Registry>,
    policy: Policy,
    engine: Engine,
    jingshan: TownIdx,
    /// Outbox ids already looked at by [`Fixture::sent`].
    seen: i64,
}

impl Fixture {
    fn new(policy: Policy) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stockpile.db");
        let source = Source {
            name: "registry.toml".into(),
            text: REGISTRY.into(),
        };
        let registry =
            Arc::new(load_registry(&source, &[], &mut |n| Err(format!("no {n}"))).unwrap());
        let engine = open_engine(&registry, &path, policy, t0());
        Fixture {
            _dir: dir,
            path,
            jingshan: registry.town_idx("jingshan").unwrap(),
            registry,
            policy,
            engine,
            seen: 0,
        }
    }

    /// A restart: a new engine on the same file.
    fn restart(&mut self, now: DateTime<Utc>) {
        self.engine = open_engine(&self.registry, &self.path, self.policy, now);
    }

    /// What the evaluator does on a wake-up: observe, timers, flush.
    fn step(&mut self, conditions: Vec<Condition>, now: DateTime<Utc>) {
        let evaluation = TownEvaluation {
            conditions,
            reserves: vec![water_detail(4.0)],
        };
        self.engine
            .observe(&[(self.jingshan, evaluation)], now)
            .unwrap();
        self.tick(now);
    }

    fn tick(&mut self, now: DateTime<Utc>) {
        self.engine.run_timers(now).unwrap();
        self.engine.flush_due(now).unwrap();
    }

    /// Email notifications enqueued since the last call, oldest first.
    fn sent(&mut self) -> Vec<Sent> {
        self.sent_on("email")
    }

    fn sent_on(&mut self, channel: &str) -> Vec<Sent> {
        let rows = self.new_rows();
        rows.into_iter()
            .filter(|r| r.channel == channel)
            .map(|r| (r.recipient, r.event, r.subject))
            .collect()
    }

    fn new_rows(&mut self) -> Vec<OutboxRow> {
        let store = Store::open(&self.path, StoreOptions::default()).unwrap();
        let mut rows = store
            .list_notifications(&NotificationQuery {
                limit: 10_000,
                ..NotificationQuery::default()
            })
            .unwrap();
        rows.reverse();
        rows.retain(|r| r.id > self.seen);
        if let Some(last) = rows.last() {
            self.seen = last.id;
        }
        rows
    }

    fn only_alert(&self) -> Alert {
        let alerts: Vec<&Alert> = self.engine.open_alerts().collect();
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        alerts[0].clone()
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
        Some("https://stockpile.example.org"),
        chrono::FixedOffset::east_opt(8 * 3600).unwrap(),
        "[Stockpile]",
        WebhookFormat::Auto,
    );
    Engine::open(
        Arc::clone(registry),
        policy,
        store,
        renderer,
        vec![ChannelKind::Email, ChannelKind::Sms],
        now,
    )
    .unwrap()
}

fn water_detail(days: f64) -> ReserveDetail {
    ReserveDetail {
        category: "water".into(),
        category_name: "饮用水".into(),
        category_names: Default::default(),
        unit: "L".into(),
        stock: days * 3000.0,
        days,
        target_days: 3.0,
        warn_days: 3.5,
        hours_to_target: None,
        verified: true,
        never_reported: 0,
        facilities: 1,
        held_until: None,
        counted_by_hand: None,
    }
}

fn water(rule: Rule, days: f64) -> Condition {
    Condition {
        town: TownIdx(0),
        rule,
        subject: "water".into(),
        facility: None,
        since: None,
        detail: Detail::Reserve(water_detail(days)),
    }
}

fn power_not_ready() -> Condition {
    Condition {
        town: TownIdx(0),
        rule: Rule::PowerNotReady,
        subject: "js-pu1".into(),
        facility: Some(reserve::registry::FacilityIdx(1)),
        since: None,
        detail: Detail::Readiness {
            facility: "js-pu1".into(),
            facility_name: "景山发电机".into(),
            problems: vec![NotReady::LowFuel],
            runtime_h: Some(40.0),
        },
    }
}

fn to(recipient: &str, event: &str, subject: &str) -> Sent {
    (recipient.into(), event.into(), subject.into())
}

/// The `alert` series queued for InfluxDB, without timestamps.
fn alert_series(fx: &Fixture) -> Vec<String> {
    let store = Store::open(&fx.path, StoreOptions::default()).unwrap();
    store
        .influx_queue_lines(100)
        .unwrap()
        .into_iter()
        .map(|l| l.rsplit_once(' ').unwrap().0.to_owned())
        .collect()
}

fn food(rule: Rule, days: f64) -> Condition {
    Condition {
        subject: "food".into(),
        detail: Detail::Reserve(ReserveDetail {
            category: "food".into(),
            ..water_detail(days)
        }),
        ..water(rule, days)
    }
}

const BELOW: &str = "[Stockpile] 严重：景山街道 饮用水仅剩 2.5 天（目标 3 天）";

#[test]
fn a_problem_is_told_once_when_it_fires_and_once_when_it_resolves() {
    let mut fx = Fixture::new(policy());
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], secs(0));
    assert_eq!(fx.sent(), vec![to(OFFICER, "fired", BELOW)]);

    // The condition holds reading after reading: nothing more to say.
    for s in 1..10 {
        fx.step(
            vec![water(Rule::ReserveBelowTarget, 2.5 - s as f64 * 0.01)],
            secs(s),
        );
    }
    assert_eq!(fx.sent(), vec![]);

    fx.step(vec![], secs(20));
    assert_eq!(
        fx.sent(),
        vec![to(
            OFFICER,
            "resolved",
            "[Stockpile] 已恢复：景山街道 饮用水已恢复至 4 天（目标 3 天）"
        )]
    );
    assert_eq!(fx.engine.open_alerts().count(), 0);
}

#[test]
fn an_officer_gets_email_and_sms_and_other_towns_officers_nothing() {
    let mut fx = Fixture::new(policy());
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], secs(0));
    let rows = fx.new_rows();
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.channel.as_str(), r.recipient.as_str()))
        .collect();
    assert_eq!(got, vec![("email", OFFICER), ("sms", OFFICER_PHONE)]);
    assert!(
        rows[1]
            .body
            .starts_with("【Stockpile】严重：景山街道 饮用水仅剩 2.5 天"),
        "{}",
        rows[1].body
    );
    assert!(rows[0].html.as_deref().unwrap().contains("/api/v1/alerts/"));
}

#[test]
fn one_message_per_town_lists_every_problem_that_arrived_within_group_wait() {
    let mut fx = Fixture::new(Policy {
        group_wait: Duration::seconds(10),
        ..policy()
    });
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], secs(0));
    fx.step(
        vec![water(Rule::ReserveBelowTarget, 2.5), power_not_ready()],
        secs(4),
    );
    assert_eq!(fx.sent(), vec![], "group_wait has not passed");
    fx.step(
        vec![water(Rule::ReserveBelowTarget, 2.5), power_not_ready()],
        secs(10),
    );
    let rows = fx.new_rows();
    let email: Vec<&OutboxRow> = rows.iter().filter(|r| r.channel == "email").collect();
    assert_eq!(email.len(), 1, "{rows:?}");
    assert_eq!(email[0].subject, format!("{BELOW}（另有 1 项）"));
    assert_eq!(email[0].alert_ids.len(), 2);
    assert!(
        email[0]
            .body
            .contains("应急电源景山发电机未就绪：燃油不足目标天数"),
        "{}",
        email[0].body
    );
}

#[test]
fn a_problem_gone_within_group_wait_is_not_told_at_all() {
    let mut fx = Fixture::new(Policy {
        group_wait: Duration::seconds(10),
        ..policy()
    });
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], secs(0));
    fx.step(vec![], secs(3));
    fx.tick(secs(30));
    assert_eq!(fx.sent(), vec![]);
}

#[test]
fn an_alert_fires_only_after_its_condition_held_for_the_for_duration() {
    let mut fx = Fixture::new(Policy {
        pending_for: Duration::seconds(60),
        ..policy()
    });
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], secs(0));
    assert_eq!(fx.only_alert().state, AlertState::Pending);
    assert_eq!(fx.engine.next_wake(secs(0)), Some(secs(60)));
    // Cleared while pending: forgotten, nobody told.
    fx.step(vec![], secs(30));
    assert_eq!(fx.engine.open_alerts().count(), 0);
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], secs(40));
    assert!(fx.engine.pending_due(secs(99)).is_empty());
    assert_eq!(fx.engine.pending_due(secs(100)), vec![fx.jingshan]);
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], secs(100));
    assert_eq!(fx.only_alert().state, AlertState::Firing);
    assert_eq!(fx.sent(), vec![to(OFFICER, "fired", BELOW)]);
}

#[test]
fn unacknowledged_alerts_are_reminded_and_escalated_level_by_level() {
    let mut fx = Fixture::new(Policy {
        repeat_every: Duration::minutes(50),
        escalate_after: Duration::minutes(30),
        ..policy()
    });
    let recipients = |sent: Vec<Sent>| sent.into_iter().map(|s| (s.0, s.1)).collect::<Vec<_>>();
    let each = |who: &[&str], event: &str| {
        who.iter()
            .map(|r| (r.to_string(), event.to_string()))
            .collect::<Vec<_>>()
    };
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], mins(0));
    assert_eq!(fx.sent(), vec![to(OFFICER, "fired", BELOW)]);
    assert_eq!(fx.engine.next_wake(mins(0)), Some(mins(30)));

    fx.tick(mins(29));
    assert_eq!(fx.sent(), vec![]);
    fx.tick(mins(30));
    assert_eq!(
        fx.sent(),
        vec![to(
            CLUSTER,
            "escalate",
            "[Stockpile] ESCALATED, CRITICAL: 景山街道 饮用水 2.5 days left (target 3)"
        )]
    );
    // A reminder goes to everyone the alert has reached so far.
    fx.tick(mins(50));
    assert_eq!(recipients(fx.sent()), each(&[OFFICER, CLUSTER], "remind"));
    fx.tick(mins(60));
    assert_eq!(recipients(fx.sent()), each(&[DISTRICT], "escalate"));
    fx.tick(mins(90));
    assert_eq!(recipients(fx.sent()), each(&[CITY], "escalate"));
    assert_eq!(fx.only_alert().escalation, LEVEL_CITY);
    // Nobody above the city: reminders go on, escalation stops.
    fx.tick(mins(100));
    assert_eq!(
        recipients(fx.sent()),
        each(&[OFFICER, CLUSTER, DISTRICT, CITY], "remind")
    );
    assert_eq!(fx.engine.next_wake(mins(100)), Some(mins(150)));
}

#[test]
fn an_acknowledgement_stops_reminders_and_escalation_and_survives_a_restart() {
    let mut fx = Fixture::new(policy());
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], mins(0));
    fx.sent();
    let id = fx.only_alert().id;
    let acked = fx
        .engine
        .ack(id, "Li Wei", "truck on its way", mins(5))
        .unwrap()
        .unwrap();
    assert_eq!(acked.ack.as_ref().unwrap().by, "Li Wei");
    // A second acknowledgement keeps the first.
    let again = fx
        .engine
        .ack(id, "Someone else", "", mins(6))
        .unwrap()
        .unwrap();
    assert_eq!(again.ack.as_ref().unwrap().by, "Li Wei");

    fx.restart(mins(10));
    assert_eq!(
        fx.only_alert().ack.as_ref().unwrap().note,
        "truck on its way"
    );
    for m in [30, 60, 240, 600] {
        fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], mins(m));
    }
    assert_eq!(fx.sent(), vec![]);
    assert_eq!(fx.engine.next_wake(mins(600)), None);
    // It still resolves, and says so.
    fx.step(vec![], mins(700));
    assert_eq!(
        fx.sent().into_iter().map(|s| s.1).collect::<Vec<_>>(),
        vec!["resolved"]
    );
    assert!(fx.engine.ack(9999, "x", "", mins(701)).unwrap().is_none());
}

#[test]
fn a_severity_rise_is_told_and_needs_a_new_acknowledgement() {
    let mut fx = Fixture::new(policy());
    fx.step(vec![water(Rule::ReserveNearTarget, 3.3)], mins(0));
    assert_eq!(
        fx.sent(),
        vec![to(
            OFFICER,
            "fired",
            "[Stockpile] 警告：景山街道 饮用水剩 3.3 天，低于预警线 3.5 天（目标 3 天）"
        )]
    );
    let id = fx.only_alert().id;
    fx.engine.ack(id, "Li Wei", "", mins(1)).unwrap();
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], mins(2));
    assert_eq!(fx.sent(), vec![to(OFFICER, "raised", BELOW)]);
    let alert = fx.only_alert();
    assert_eq!(
        (alert.id, alert.severity, alert.ack),
        (id, Severity::Critical, None)
    );
    // Falling back to a warning is told; escalation still runs from the rise.
    fx.step(vec![water(Rule::ReserveNearTarget, 3.2)], mins(3));
    assert_eq!(fx.sent(), vec![to(OFFICER, "lowered", NEAR_EASED)]);
    fx.tick(mins(32));
    assert_eq!(
        fx.sent().into_iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![CLUSTER]
    );
}

const NEAR_EASED: &str =
    "[Stockpile] 缓解（警告）：景山街道 饮用水剩 3.2 天，低于预警线 3.5 天（目标 3 天）";

fn depleting(hours: f64) -> Condition {
    let mut c = water(Rule::ReserveDepleting, 3.8);
    if let Detail::Reserve(r) = &mut c.detail {
        r.hours_to_target = Some(hours);
    }
    c
}

/// DESIGN §7: notify on every change of severity, rise or fall; within the reserve
/// family a move between the forecast and the warning line is one too.
#[test]
fn every_change_of_severity_is_told_once_up_or_down() {
    let mut fx = Fixture::new(policy());
    let events = |sent: Vec<Sent>| sent.into_iter().map(|s| (s.0, s.1)).collect::<Vec<_>>();
    let officer = |event: &str| vec![(OFFICER.to_owned(), event.to_owned())];
    fx.step(vec![depleting(5.0)], mins(0));
    assert_eq!(events(fx.sent()), officer("fired"));
    fx.step(vec![depleting(4.0)], mins(1));
    assert_eq!(
        fx.sent(),
        vec![],
        "a new forecast is not a change of severity"
    );
    fx.step(vec![water(Rule::ReserveNearTarget, 3.4)], mins(2));
    assert_eq!(events(fx.sent()), officer("raised"));
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], mins(3));
    assert_eq!(fx.sent(), vec![to(OFFICER, "raised", BELOW)]);
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.4)], mins(4));
    assert_eq!(fx.sent(), vec![]);
    fx.step(vec![water(Rule::ReserveNearTarget, 3.2)], mins(5));
    assert_eq!(fx.sent(), vec![to(OFFICER, "lowered", NEAR_EASED)]);
    fx.step(vec![depleting(7.5)], mins(6));
    assert_eq!(
        fx.sent(),
        vec![to(
            OFFICER,
            "lowered",
            "[Stockpile] 缓解（警告）：景山街道 饮用水预计 7.5 小时后低于目标 3 天（现剩 3.8 天）"
        )]
    );
    fx.step(vec![], mins(7));
    assert_eq!(events(fx.sent()), officer("resolved"));
    let alert = fx.engine.store.alert(1).unwrap().unwrap();
    assert_eq!(
        alert.notify_seq, 6,
        "one message per change, all about one alert"
    );
}

#[test]
fn a_rise_and_fall_within_group_wait_is_one_message() {
    let mut fx = Fixture::new(Policy {
        group_wait: Duration::seconds(10),
        ..policy()
    });
    fx.step(vec![water(Rule::ReserveNearTarget, 3.3)], secs(0));
    fx.tick(secs(10));
    assert_eq!(fx.sent().len(), 1, "fired");
    // Below target for three seconds (a delivery lands), then back on the warning line.
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.9)], secs(20));
    fx.step(vec![water(Rule::ReserveNearTarget, 3.2)], secs(23));
    fx.tick(secs(29));
    assert_eq!(fx.sent(), vec![], "group_wait has not passed");
    fx.tick(secs(30));
    assert_eq!(fx.sent(), vec![to(OFFICER, "lowered", NEAR_EASED)]);
    // And a fall then a rise is one message saying it is worse.
    fx.step(vec![depleting(5.0)], secs(40));
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], secs(45));
    fx.tick(secs(50));
    assert_eq!(fx.sent(), vec![to(OFFICER, "raised", BELOW)]);
}

#[test]
fn a_fall_while_silenced_is_not_told_and_reminders_survive_a_fall() {
    let mut fx = Fixture::new(Policy {
        repeat_every: Duration::minutes(60),
        escalate_after: Duration::hours(100),
        ..policy()
    });
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], mins(0));
    assert_eq!(fx.sent().len(), 1);
    // The reminder falls due in the same step as the fall: one message, the update.
    fx.step(vec![water(Rule::ReserveNearTarget, 3.2)], mins(60));
    assert_eq!(fx.sent(), vec![to(OFFICER, "lowered", NEAR_EASED)]);
    assert_eq!(
        fx.only_alert().remind_at,
        Some(mins(120)),
        "reminders go on"
    );
    fx.tick(mins(120));
    assert_eq!(
        fx.sent().into_iter().map(|s| s.1).collect::<Vec<_>>(),
        vec!["remind"]
    );

    fx.engine
        .add_silence(Silence {
            id: 0,
            town: Some("jingshan".into()),
            facility: None,
            rule: None,
            until: mins(600),
            created_by: "ops".into(),
            comment: "maintenance".into(),
            created: mins(121),
        })
        .unwrap();
    fx.step(vec![depleting(5.0)], mins(130));
    assert_eq!(fx.sent(), vec![], "silenced");
}

#[test]
fn a_silence_holds_messages_back_until_it_ends() {
    let mut fx = Fixture::new(policy());
    fx.engine
        .add_silence(Silence {
            id: 0,
            town: Some("jingshan".into()),
            facility: None,
            rule: None,
            until: mins(60),
            created_by: "ops".into(),
            comment: "maintenance".into(),
            created: mins(0),
        })
        .unwrap();
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], mins(1));
    assert_eq!(fx.only_alert().state, AlertState::Firing);
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], mins(45));
    assert_eq!(fx.sent(), vec![], "silenced: no message, no escalation");

    assert!(fx.engine.expire_silences(mins(61)));
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], mins(61));
    assert_eq!(fx.sent(), vec![to(OFFICER, "fired", BELOW)]);
}

#[test]
fn a_silence_matches_by_town_facility_and_rule() {
    let silence = |town: Option<&str>, facility: Option<&str>, rule: Option<Rule>| Silence {
        id: 1,
        town: town.map(Into::into),
        facility: facility.map(Into::into),
        rule,
        until: mins(60),
        created_by: "ops".into(),
        comment: String::new(),
        created: mins(0),
    };
    let cases = [
        (
            silence(Some("jingshan"), None, None),
            "jingshan",
            Rule::PowerNotReady,
            Some("js-pu1"),
            true,
        ),
        (
            silence(Some("donghua"), None, None),
            "jingshan",
            Rule::PowerNotReady,
            Some("js-pu1"),
            false,
        ),
        (
            silence(None, Some("js-pu1"), None),
            "jingshan",
            Rule::PowerNotReady,
            Some("js-pu1"),
            true,
        ),
        (
            silence(None, Some("js-pu1"), None),
            "jingshan",
            Rule::ReserveBelowTarget,
            None,
            false,
        ),
        (
            silence(None, None, Some(Rule::FacilitySilent)),
            "jingshan",
            Rule::FacilitySilent,
            Some("js-wh1"),
            true,
        ),
        (
            silence(Some("jingshan"), None, Some(Rule::FacilitySilent)),
            "jingshan",
            Rule::PowerNotReady,
            Some("js-pu1"),
            false,
        ),
    ];
    for (s, town, rule, facility, want) in cases {
        assert_eq!(
            s.matches(town, rule, facility),
            want,
            "{s:?} vs {town} {rule} {facility:?}"
        );
    }
}

#[test]
fn a_restart_while_firing_sends_nothing_twice_and_resumes_timers() {
    let mut fx = Fixture::new(policy());
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], mins(0));
    assert_eq!(fx.sent().len(), 1);
    fx.restart(mins(5));
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.4)], mins(5));
    assert_eq!(fx.sent(), vec![]);
    // The escalation timer set before the restart still fires.
    fx.tick(mins(30));
    assert_eq!(
        fx.sent().into_iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![CLUSTER]
    );
}

#[test]
fn a_notice_waiting_for_its_group_when_the_service_stopped_is_told_after_the_restart() {
    let mut fx = Fixture::new(Policy {
        group_wait: Duration::seconds(10),
        ..policy()
    });
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], secs(0));
    assert_eq!(fx.sent(), vec![]);
    fx.restart(secs(60));
    fx.tick(secs(60));
    assert_eq!(fx.sent(), vec![to(OFFICER, "fired", BELOW)]);
    fx.restart(secs(70));
    fx.tick(secs(70));
    assert_eq!(fx.sent(), vec![]);
}

#[test]
fn dedup_keys_make_enqueuing_a_message_twice_a_no_op() {
    let mut fx = Fixture::new(policy());
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], secs(0));
    let rows = fx.new_rows();
    let mut store = Store::open(&fx.path, StoreOptions::default()).unwrap();
    let mut batch = store.alert_batch().unwrap();
    let again = NewNotification {
        dedup_key: rows[0].dedup_key.clone(),
        town: rows[0].town.clone(),
        alert_ids: rows[0].alert_ids.clone(),
        event: rows[0].event.clone(),
        contact: rows[0].contact.clone(),
        channel: rows[0].channel.clone(),
        recipient: rows[0].recipient.clone(),
        subject: rows[0].subject.clone(),
        body: rows[0].body.clone(),
        html: None,
        created: secs(1),
    };
    assert!(!batch.enqueue(&again).unwrap());
    batch.commit().unwrap();
    assert_eq!(fx.new_rows(), vec![]);
}

#[test]
fn the_alert_series_counts_a_towns_firing_alerts_of_each_rule() {
    let mut fx = Fixture::new(policy());
    fx.engine = open_engine(&fx.registry, &fx.path, fx.policy, t0()).with_influx_series(true);
    let below = "alert,town=jingshan,rule=reserve_below_target,severity=critical firing=";
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], secs(0));
    fx.step(
        vec![
            water(Rule::ReserveBelowTarget, 2.4),
            food(Rule::ReserveBelowTarget, 2.0),
        ],
        secs(1),
    );
    // Water recovers while food is still short: one alert of the rule still fires.
    fx.step(vec![food(Rule::ReserveBelowTarget, 2.0)], secs(2));
    fx.step(vec![], secs(3));
    assert_eq!(
        alert_series(&fx),
        ["1i", "2i", "1i", "0i"].map(|n| format!("{below}{n}"))
    );
}

#[test]
fn without_influxdb_no_alert_series_is_queued() {
    let mut fx = Fixture::new(policy());
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], secs(0));
    fx.step(vec![], secs(1));
    assert_eq!(alert_series(&fx), Vec::<String>::new());
}

#[test]
fn firing_alerts_are_written_again_once_a_minute() {
    let mut fx = Fixture::new(policy());
    fx.engine = open_engine(&fx.registry, &fx.path, fx.policy, t0()).with_influx_series(true);
    let below = "alert,town=jingshan,rule=reserve_below_target,severity=critical firing=1i";
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], secs(0));
    fx.engine.refresh_series(secs(1)).unwrap(); // the first refresh writes at once
    fx.engine.refresh_series(secs(30)).unwrap(); // not yet a minute since
    fx.engine.refresh_series(secs(61)).unwrap();
    assert_eq!(alert_series(&fx), [below, below, below]);
    // Resolved: nothing left to write again.
    fx.step(vec![], secs(62));
    fx.engine.refresh_series(secs(130)).unwrap();
    assert_eq!(
        alert_series(&fx).last().map(String::as_str),
        Some("alert,town=jingshan,rule=reserve_below_target,severity=critical firing=0i")
    );
    assert_eq!(alert_series(&fx).len(), 4);
}

/// Below target only because a warehouse has not sent its first reading yet.
fn held_water(until: DateTime<Utc>) -> Condition {
    let mut c = water(Rule::ReserveBelowTarget, 0.0);
    if let Detail::Reserve(r) = &mut c.detail {
        (r.never_reported, r.facilities, r.verified) = (1, 1, false);
        r.held_until = Some(until);
    }
    c
}

#[test]
fn a_shortfall_held_for_the_start_up_grace_stays_pending_and_unannounced() {
    let mut fx = Fixture::new(policy());
    fx.step(vec![held_water(mins(2))], secs(0));
    assert_eq!(fx.only_alert().state, AlertState::Pending);
    assert_eq!(fx.engine.next_wake(secs(0)), Some(mins(2)));
    assert!(fx.engine.pending_due(secs(119)).is_empty());
    fx.step(vec![held_water(mins(2))], secs(60));
    assert_eq!(fx.sent(), vec![], "within the grace");
    // The warehouse reports within its grace: the pending alert goes, unseen.
    fx.step(vec![], secs(90));
    assert_eq!(fx.engine.open_alerts().count(), 0);
    fx.tick(mins(10));
    assert_eq!(fx.sent(), vec![]);

    // It never reports: once the grace is over the alert fires and says why.
    fx.step(vec![held_water(mins(12))], mins(11));
    assert_eq!(fx.engine.pending_due(mins(12)), vec![fx.jingshan]);
    let after_grace = Condition {
        detail: match held_water(mins(12)).detail {
            Detail::Reserve(r) => Detail::Reserve(ReserveDetail {
                held_until: None,
                ..r
            }),
            other => other,
        },
        ..held_water(mins(12))
    };
    fx.step(vec![after_grace], mins(12));
    assert_eq!(
        fx.sent(),
        vec![to(
            OFFICER,
            "fired",
            "[Stockpile] 严重：景山街道 饮用水：唯一的设施从未上报（目标 3 天）"
        )]
    );
    // A firing alert is not taken back by a grace (a restart starts one again).
    fx.restart(mins(13));
    fx.step(vec![held_water(mins(20))], mins(13));
    assert_eq!(fx.only_alert().state, AlertState::Firing);
    assert_eq!(fx.sent(), vec![]);
}

// ---------------------------------------------------------------------------------
// Digests: contacts above the town get one message per flush window over all the
// towns they hear of; town officers keep one message per town.

const DIGEST_DISTRICT: &str = "district@example.org";

/// `towns` towns of one cluster and district, each with its officer, and one district
/// contact (no cluster contact: escalation passes level 1 unheard).
fn digest_registry(towns: usize) -> Arc<Registry> {
    let mut text = String::from(
        "[[category]]\nid = \"water\"\nname = \"饮用水\"\nunit = \"L\"\ndaily_need = 3.0\n",
    );
    for i in 0..towns {
        text.push_str(&format!(
            "\n[[town]]\nid = \"town-{i:02}\"\nname = \"Town {i:02}\"\ndistrict = \"dongcheng\"\n\
             cluster = \"c01\"\npopulation = 1000\n\n[[facility]]\nid = \"wh-{i:02}\"\n\
             town = \"town-{i:02}\"\nkind = \"warehouse\"\n\n[[contact]]\nname = \"Officer {i:02}\"\n\
             email = \"officer-{i:02}@example.org\"\nlang = \"en\"\ntowns = [\"town-{i:02}\"]\n"
        ));
    }
    text.push_str(&format!(
        "\n[[contact]]\nname = \"District duty\"\nemail = \"{DIGEST_DISTRICT}\"\nlang = \"en\"\n\
         districts = [\"dongcheng\"]\n"
    ));
    let source = Source {
        name: "registry.toml".into(),
        text,
    };
    Arc::new(load_registry(&source, &[], &mut |n| Err(format!("no {n}"))).unwrap())
}

/// Every town of `towns` below target (2.5 days).
fn below_target(towns: &[TownIdx]) -> Vec<(TownIdx, TownEvaluation)> {
    towns
        .iter()
        .map(|&town| {
            let evaluation = TownEvaluation {
                conditions: vec![Condition {
                    town,
                    ..water(Rule::ReserveBelowTarget, 2.5)
                }],
                reserves: vec![water_detail(2.5)],
            };
            (town, evaluation)
        })
        .collect()
}

fn outbox(path: &std::path::Path) -> Vec<OutboxRow> {
    let store = Store::open(path, StoreOptions::default()).unwrap();
    let mut rows = store
        .list_notifications(&NotificationQuery {
            limit: 10_000,
            ..NotificationQuery::default()
        })
        .unwrap();
    rows.reverse();
    rows
}

/// Twenty towns fire within ten seconds and go unacknowledged for an hour: their
/// alerts reach the cluster level (no one there) after 30 minutes and the district
/// after 60, one after the other over ten seconds. The engine wakes every second.
fn twenty_towns_escalating(
    path: &std::path::Path,
    policy: Policy,
    registry: &Arc<Registry>,
) -> Engine {
    let mut engine = open_engine(registry, path, policy, t0());
    let towns: Vec<TownIdx> = (0..20).map(TownIdx).collect();
    for s in 0..=3700 {
        if s < 10 {
            let firing = &towns[2 * s as usize..2 * s as usize + 2];
            engine.observe(&below_target(firing), secs(s)).unwrap();
        }
        engine.run_timers(secs(s)).unwrap();
        engine.flush_due(secs(s)).unwrap();
    }
    engine
}

#[test]
fn a_district_contact_over_twenty_failing_towns_gets_one_digest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stockpile.db");
    let registry = digest_registry(20);
    let policy = Policy {
        group_wait: Duration::seconds(10),
        ..policy()
    };
    let engine = twenty_towns_escalating(&path, policy, &registry);
    let rows = outbox(&path);
    let officers: Vec<&OutboxRow> = rows
        .iter()
        .filter(|n| n.recipient != DIGEST_DISTRICT)
        .collect();
    assert_eq!(officers.len(), 20, "one message per officer");
    assert!(officers.iter().all(|n| n.event == "fired"));

    let digests: Vec<&OutboxRow> = rows
        .iter()
        .filter(|n| n.recipient == DIGEST_DISTRICT)
        .collect();
    assert_eq!(digests.len(), 1, "{digests:#?}");
    let digest = digests[0];
    assert_eq!(digest.event, "escalate");
    assert_eq!(digest.alert_ids.len(), 20);
    assert!(
        digest.dedup_key.starts_with("digest."),
        "{}",
        digest.dedup_key
    );
    assert_eq!(
        digest.subject,
        "[Stockpile] ESCALATED, CRITICAL: 20 towns, worst: Town 00 饮用水 2.5 days left (target 3)"
    );
    // The worst ten spelled out (all alike: by id), the rest counted.
    for i in 0..10 {
        assert!(
            digest.body.contains(&format!("Town {i:02} (town-{i:02}")),
            "{}",
            digest.body
        );
    }
    assert!(!digest.body.contains("Town 10 ("), "{}", digest.body);
    assert!(
        digest
            .body
            .contains("And 10 more towns with 10 problems (10 critical)"),
        "{}",
        digest.body
    );
    // Officers heard nothing of the escalation (it is not theirs), and a restart sends
    // nothing again.
    assert_eq!(rows.len(), 21);
    drop(engine);
    let mut engine = open_engine(&registry, &path, policy, secs(3701));
    engine.flush_due(secs(3701)).unwrap();
    assert_eq!(outbox(&path).len(), 21);
}

#[test]
fn above_town_contacts_hear_at_most_once_per_group_wait_and_of_every_town() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stockpile.db");
    let registry = digest_registry(20);
    let policy = Policy {
        group_wait: Duration::seconds(4),
        ..policy()
    };
    // Firings spread over ten seconds, windows of four: several digests.
    twenty_towns_escalating(&path, policy, &registry);
    let rows = outbox(&path);
    let digests: Vec<&OutboxRow> = rows
        .iter()
        .filter(|n| n.recipient == DIGEST_DISTRICT)
        .collect();
    assert!(digests.len() > 1, "{digests:#?}");
    for pair in digests.windows(2) {
        assert!(
            pair[1].created - pair[0].created >= policy.group_wait,
            "{pair:#?}"
        );
    }
    let mut told: Vec<i64> = digests.iter().flat_map(|d| d.alert_ids.clone()).collect();
    told.sort_unstable();
    told.dedup();
    assert_eq!(
        told.len(),
        20,
        "every town's alert reached the district once"
    );
    assert_eq!(digests.iter().map(|d| d.alert_ids.len()).sum::<usize>(), 20);
}

#[test]
fn a_digest_of_one_town_reads_as_the_towns_own_message() {
    let mut fx = Fixture::new(policy());
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], mins(0));
    fx.sent();
    fx.tick(mins(30));
    let rows = fx.new_rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].recipient, CLUSTER);
    assert_eq!(rows[0].town, "jingshan");
    assert!(!rows[0].dedup_key.starts_with("digest."));
}

#[test]
fn officers_keep_one_message_per_town_while_their_cluster_gets_one_for_both() {
    let mut fx = Fixture::new(Policy {
        repeat_every: Duration::minutes(50),
        ..policy()
    });
    let donghua = fx.registry.town_idx("donghua").unwrap();
    let both = vec![
        (
            fx.jingshan,
            TownEvaluation {
                conditions: vec![water(Rule::ReserveBelowTarget, 2.5)],
                reserves: vec![water_detail(2.5)],
            },
        ),
        (
            donghua,
            TownEvaluation {
                conditions: vec![Condition {
                    town: donghua,
                    ..water(Rule::ReserveBelowTarget, 2.0)
                }],
                reserves: vec![water_detail(2.0)],
            },
        ),
    ];
    fx.engine.observe(&both, mins(0)).unwrap();
    fx.tick(mins(0));
    assert_eq!(fx.sent().len(), 2, "one per town officer");
    fx.tick(mins(30));
    let escalated = fx.sent();
    assert_eq!(escalated.len(), 1, "{escalated:?}");
    assert_eq!(escalated[0].0, CLUSTER);
    assert_eq!(
        escalated[0].2,
        "[Stockpile] ESCALATED, CRITICAL: 2 towns, worst: 东华门街道 饮用水 2 days left (target 3)"
    );
    // A reminder: each officer about their town, the cluster once about both.
    fx.tick(mins(50));
    let mut reminded: Vec<String> = fx.sent().into_iter().map(|s| s.0).collect();
    reminded.sort();
    assert_eq!(reminded, vec!["dh@example.org", OFFICER, CLUSTER]);
}

// --- Drills (docs/design.md#drills) ---

fn drill(fx: &mut Fixture, scope: &str, duration: &str, at: DateTime<Utc>) -> i64 {
    let new = crate::drill::NewDrill {
        scope: scope.into(),
        duration: duration.into(),
        started_by: "admin".into(),
        note: "季度演练".into(),
        remote: "192.0.2.7:51234".into(),
    };
    let drill = new.validate(&fx.registry, at).unwrap();
    fx.engine.start_drill(drill).unwrap().row.id
}

#[test]
fn a_cluster_drills_alerts_say_so_and_escalate_no_further_than_the_cluster() {
    let mut fx = Fixture::new(policy());
    let id = drill(&mut fx, "cluster:c01", "2h", mins(0));
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], mins(1));
    let rows = fx.new_rows();
    let email = rows.iter().find(|r| r.channel == "email").unwrap();
    assert_eq!(email.subject, format!("【演练】{BELOW}"));
    assert!(email.body.starts_with("【演练】"), "{}", email.body);
    let html = email.html.as_deref().unwrap();
    assert!(
        html.contains("<p style=\"font-size: 16px;\">【演练】"),
        "{html}"
    );
    let sms = rows.iter().find(|r| r.channel == "sms").unwrap();
    assert!(sms.body.starts_with("【演练】"), "{}", sms.body);
    assert!(crate::fits_one_sms(&sms.body), "{}", sms.body);
    assert_eq!(fx.only_alert().drill, Some(id));

    fx.tick(mins(31));
    assert_eq!(
        fx.sent(),
        vec![to(
            CLUSTER,
            "escalate",
            "[DRILL] [Stockpile] ESCALATED, CRITICAL: 景山街道 饮用水 2.5 days left (target 3)"
        )]
    );
    // The cluster is the drill's edge: the district is never told.
    fx.tick(mins(61));
    fx.tick(mins(91));
    assert_eq!(fx.sent(), vec![]);
    assert_eq!(fx.only_alert().escalation, 1);
    // Nothing left to wake for but the drill's end (the reminder is 4 h on).
    assert_eq!(fx.engine.next_wake(mins(91)), Some(mins(120)));

    // The drill ends: its alert resolves without a message, and the shortfall, still
    // there, is raised again as a real alert.
    fx.tick(mins(120));
    assert_eq!(fx.sent(), vec![]);
    assert_eq!(fx.engine.open_alerts().count(), 0);
    assert!(fx.engine.drills().is_empty());
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], mins(121));
    assert_eq!(fx.sent(), vec![to(OFFICER, "fired", BELOW)]);
    assert_eq!(fx.only_alert().drill, None);
}

#[test]
fn a_town_drill_stays_with_town_officers_across_a_restart_and_ends_early() {
    let mut fx = Fixture::new(policy());
    let id = drill(&mut fx, "towns:jingshan", "1h", mins(0));
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], mins(1));
    assert_eq!(
        fx.sent(),
        vec![to(OFFICER, "fired", &format!("【演练】{BELOW}"))]
    );

    fx.restart(mins(2));
    assert_eq!(fx.engine.drills().len(), 1);
    assert_eq!(fx.only_alert().drill, Some(id));
    fx.tick(mins(31));
    fx.tick(mins(45));
    assert_eq!(fx.sent(), vec![], "a town drill never leaves the town");

    assert!(fx.engine.end_drill(id, "admin", "", mins(50)).unwrap());
    assert!(!fx.engine.end_drill(id, "admin", "", mins(50)).unwrap());
    assert_eq!(fx.engine.open_alerts().count(), 0);
    fx.restart(mins(51));
    assert!(fx.engine.drills().is_empty(), "an ended drill stays ended");
    let store = Store::open(&fx.path, StoreOptions::default()).unwrap();
    let row = store.alert(1).unwrap().unwrap();
    assert_eq!((row.state, row.drill), (AlertState::Resolved, Some(id)));
}

#[test]
fn alerts_outside_a_drills_scope_and_alerts_open_before_it_stay_real() {
    let mut fx = Fixture::new(policy());
    // Jingshan's power unit fails before the drill; the drill covers donghua only.
    fx.step(vec![power_not_ready()], mins(0));
    drill(&mut fx, "city", "1h", mins(1));
    drill(&mut fx, "towns:donghua", "1h", mins(1));
    fx.step(
        vec![power_not_ready(), water(Rule::ReserveBelowTarget, 2.5)],
        mins(2),
    );
    let by_rule = |rule: Rule| {
        fx.engine
            .open_alerts()
            .find(|a| a.rule == rule)
            .map(|a| a.drill)
            .unwrap()
    };
    assert_eq!(by_rule(Rule::PowerNotReady), None, "open before the drill");
    // Jingshan is in the city drill (donghua's narrower one does not cover it).
    assert!(by_rule(Rule::ReserveBelowTarget).is_some());
}

#[test]
fn a_message_about_a_real_and_a_drill_alert_is_headed_by_the_real_one() {
    let mut fx = Fixture::new(Policy {
        group_wait: Duration::seconds(10),
        ..policy()
    });
    // Food runs short just before the drill starts (real); water, critical, during it
    // (a drill's). Both are told in one message: the real warning heads it, though
    // the drill's problem is worse, so the subject and SMS speak of the real one.
    fx.step(vec![food(Rule::ReserveNearTarget, 3.2)], secs(0));
    drill(&mut fx, "towns:jingshan", "1h", secs(1));
    fx.step(
        vec![
            food(Rule::ReserveNearTarget, 3.2),
            water(Rule::ReserveBelowTarget, 2.5),
        ],
        secs(2),
    );
    fx.tick(secs(12));
    let rows = fx.new_rows();
    let email = rows.iter().find(|r| r.channel == "email").unwrap();
    assert!(
        email.subject.starts_with("[Stockpile] 警告"),
        "{}",
        email.subject
    );
    assert!(email.body.contains("【演练】饮用水"), "{}", email.body);
    let sms = rows.iter().find(|r| r.channel == "sms").unwrap();
    assert!(!sms.body.contains("演练"), "{}", sms.body);
}

#[test]
fn a_drill_that_ended_while_the_service_was_stopped_leaves_no_open_alert() {
    let mut fx = Fixture::new(policy());
    let id = drill(&mut fx, "towns:jingshan", "1h", mins(0));
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], mins(1));
    assert_eq!(fx.only_alert().drill, Some(id));
    assert_eq!(
        fx.sent(),
        vec![to(OFFICER, "fired", &format!("【演练】{BELOW}"))]
    );
    // Stopped at 00:02, started again after the drill's end.
    fx.restart(mins(90));
    assert!(fx.engine.drills().is_empty());
    assert_eq!(fx.engine.open_alerts().count(), 0);
    let store = Store::open(&fx.path, StoreOptions::default()).unwrap();
    assert_eq!(store.alert(1).unwrap().unwrap().state, AlertState::Resolved);
    // Still short: a real alert now.
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], mins(91));
    assert_eq!(fx.sent(), vec![to(OFFICER, "fired", BELOW)]);
}

#[test]
fn a_drills_alerts_stay_out_of_the_wall_displays_alert_series() {
    let mut fx = Fixture::new(policy());
    fx.engine = open_engine(&fx.registry, &fx.path, fx.policy, t0()).with_influx_series(true);
    drill(&mut fx, "cluster:c01", "2h", mins(0));
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], mins(1));
    fx.engine.refresh_series(mins(2)).unwrap();
    assert_eq!(fx.only_alert().state, AlertState::Firing);
    assert_eq!(alert_series(&fx), Vec::<String>::new());
    // Once the drill is over, the same shortfall is real and counted.
    fx.tick(mins(120));
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], mins(121));
    assert_eq!(
        alert_series(&fx),
        ["alert,town=jingshan,rule=reserve_below_target,severity=critical firing=1i"]
    );
}

/// docs/design.md#cluster-instance: a city instance leaves the officers and cluster
/// contacts of a cluster with its own instance to that instance, and still escalates to
/// the district and the city on its own clock.
#[test]
fn a_cluster_with_its_own_instance_hears_nothing_from_the_city_but_escalation_goes_on() {
    let mut fx = Fixture::new(Policy {
        repeat_every: Duration::minutes(50),
        escalate_after: Duration::minutes(30),
        ..policy()
    });
    fx.engine = open_engine(&fx.registry, &fx.path, fx.policy, t0())
        .with_clusters_with_own_instance(vec!["c01".into()]);
    let recipients = |sent: Vec<Sent>| sent.into_iter().map(|s| (s.0, s.1)).collect::<Vec<_>>();
    let each = |who: &[&str], event: &str| {
        who.iter()
            .map(|r| (r.to_string(), event.to_string()))
            .collect::<Vec<_>>()
    };
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], mins(0));
    assert_eq!(fx.sent(), vec![], "the officer hears it from the cluster");
    assert_eq!(
        fx.only_alert().state,
        AlertState::Firing,
        "the city's board shows it"
    );
    fx.tick(mins(30));
    fx.tick(mins(50));
    assert_eq!(
        fx.sent(),
        vec![],
        "cluster level and reminders: the cluster's"
    );
    fx.tick(mins(60));
    assert_eq!(recipients(fx.sent()), each(&[DISTRICT], "escalate"));
    fx.tick(mins(90));
    assert_eq!(recipients(fx.sent()), each(&[CITY], "escalate"));
    fx.step(vec![], mins(95));
    assert_eq!(recipients(fx.sent()), each(&[DISTRICT, CITY], "resolved"));
}

/// A cluster with its own instance (docs/design.md#cluster-instance): the city follows
/// an acknowledgement made there (no escalation), and while the instance is silent with
/// its link up speaks for it: `cluster_instance_silent` to the cluster and district
/// contacts, the cluster's news to its officer, until the instance is heard again.
#[test]
fn the_city_follows_a_cluster_instance_and_speaks_for_it_while_it_is_silent() {
    use crate::cluster_voice::{ClusterMessage, ClusterVoices, PublishedAlert};
    let mut fx = Fixture::new(Policy {
        escalate_after: Duration::minutes(30),
        ..policy()
    });
    let voices =
        ClusterVoices::new(&["c01".into()], std::time::Duration::from_secs(300)).started_at(t0());
    fx.engine = open_engine(&fx.registry, &fx.path, fx.policy, t0())
        .with_clusters_with_own_instance(vec!["c01".into()])
        .with_cluster_voices(voices.clone());
    let state = |at: DateTime<Utc>, acked: Option<DateTime<Utc>>| ClusterMessage {
        cluster: "c01".into(),
        ts: at,
        alerts: vec![PublishedAlert {
            town: "jingshan".into(),
            rule: Rule::ReserveBelowTarget,
            subject: "water".into(),
            severity: Severity::Critical,
            state: crate::handle::AlertStatus::Firing,
            fired_at: Some(mins(0)),
            acknowledged_at: acked,
            resolved_at: None,
        }],
    };
    voices.link("c01", true, t0());
    fx.step(vec![water(Rule::ReserveBelowTarget, 2.5)], mins(0));
    assert_eq!(fx.sent(), vec![], "the officer hears it from the cluster");
    voices.heard("c01", state(mins(2), Some(mins(1))), mins(2));
    fx.engine.follow_cluster_acks().unwrap();
    let ack = fx.only_alert().ack.expect("acknowledged at the city");
    assert_eq!((ack.by.as_str(), ack.at), ("cluster instance c01", mins(1)));
    fx.tick(mins(40));
    assert_eq!(
        fx.sent(),
        vec![],
        "acknowledged at the cluster: not escalated"
    );

    // Silent for 5 minutes with the link up: taken over.
    let taken = voices.update_takeovers(mins(8));
    assert_eq!(taken, vec![("c01".to_owned(), Some(mins(2)))]);
    let silent = fx.engine.cluster_silent_conditions(&taken, mins(8));
    let condition = silent
        .get(&fx.jingshan)
        .cloned()
        .expect("on the first town");
    fx.step(
        vec![water(Rule::ReserveBelowTarget, 2.5), condition.clone()],
        mins(8),
    );
    let sent = fx.sent();
    let who: Vec<&str> = sent.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(who, [CLUSTER, DISTRICT], "not the officer: {sent:?}");
    assert!(sent[0].2.contains("silent for 6 min"), "{sent:?}");
    // While it speaks for the cluster, the officer hears the cluster's news from it.
    fx.step(
        vec![
            power_not_ready(),
            water(Rule::ReserveBelowTarget, 2.5),
            condition,
        ],
        mins(9),
    );
    let sent = fx.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, OFFICER);
    let (record, _) = voices.record("c01").expect("a record");
    assert!(record.speaking && record.told.contains_key("jingshan/power_not_ready/js-pu1"));

    // Heard again: handed back, the alert resolves to the same contacts.
    voices.heard("c01", state(mins(10), Some(mins(1))), mins(10));
    assert_eq!(voices.update_takeovers(mins(10)), vec![]);
    fx.step(
        vec![power_not_ready(), water(Rule::ReserveBelowTarget, 2.5)],
        mins(10),
    );
    let sent = fx.sent();
    let who: Vec<(&str, &str)> = sent.iter().map(|s| (s.0.as_str(), s.1.as_str())).collect();
    assert_eq!(
        who,
        [(CLUSTER, "resolved"), (DISTRICT, "resolved")],
        "{sent:?}"
    );
}
