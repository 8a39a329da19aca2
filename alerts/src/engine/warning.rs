//! Warning levels in the alert engine (docs/design.md#warning-levels): a town under a
//! level is told sooner. Its `group_wait` and `escalate_after` are the level's
//! (`[warning_levels.<level>]`) when shorter than the engine's, and its messages say
//! the level in force. The level comes from the ledger with each evaluation, so it
//! follows a level set, ended or run out as the town's figures do.

use std::sync::Arc;

use reserve::Ledger;
use reserve::ledger::TownWarning;
use reserve::registry::TownIdx;

use super::{Engine, Policy};

impl Engine {
    /// The level in force for `town` now, for its timings and messages.
    pub fn note_warning(&mut self, town: TownIdx, warning: Option<TownWarning>) {
        match warning {
            Some(warning) => self.warnings.insert(town, warning),
            None => self.warnings.remove(&town),
        };
    }

    /// The level in force for each of `towns` by the ledger's last refresh; nothing
    /// when the ledger is on another registry already (the next step adopts it).
    pub fn note_warnings(&mut self, ledger: &Ledger, towns: &[TownIdx]) {
        if !Arc::ptr_eq(ledger.registry(), &self.registry) {
            return;
        }
        for &t in towns {
            self.note_warning(t, ledger.figures(t).warning.clone());
        }
    }

    /// The timings for `town`: the engine's, each shortened by the plan of the level in
    /// force there, never lengthened.
    pub(super) fn policy_of(&self, town: TownIdx) -> Policy {
        let mut policy = self.policy;
        let plan = self
            .warnings
            .get(&town)
            .and_then(|w| self.registry.warning_plan(w.set.level));
        if let Some(plan) = plan {
            let shorter = |ours: chrono::Duration, theirs: Option<std::time::Duration>| {
                theirs
                    .and_then(|d| chrono::Duration::from_std(d).ok())
                    .map_or(ours, |d| d.min(ours))
            };
            policy.group_wait = shorter(policy.group_wait, plan.group_wait);
            policy.escalate_after = shorter(policy.escalate_after, plan.escalate_after);
        }
        policy
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration, TimeZone, Utc};
    use reserve::ledger::{WarningScope, WarningSet};
    use reserve::registry::{Registry, Source, WarningLevel, load_registry};
    use store::{NotificationQuery, Store, StoreOptions};

    use super::*;
    use crate::channel::ChannelKind;
    use crate::config::WebhookFormat;
    use crate::render::Renderer;
    use crate::rules::{Condition, Detail, ReserveDetail, Rule, TownEvaluation};

    /// Two towns, each with its officer, and one cluster contact above them; red tells
    /// within a second and escalates after ten minutes.
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
id = "dh-wh1"
town = "donghua"
kind = "warehouse"

[[contact]]
name = "Li Wei"
email = "li.wei@example.org"
towns = ["jingshan"]

[[contact]]
name = "Donghua officer"
email = "dh@example.org"
towns = ["donghua"]

[[contact]]
name = "Wang Fang"
email = "wang.fang@example.org"
clusters = ["c01"]

[warning_levels.red]
days_target = 5.0
group_wait = "1s"
escalate_after = "10m"
"#;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 7, 20, 6, 0, 0).unwrap() + Duration::seconds(s)
    }

    fn below_target(town: TownIdx) -> (TownIdx, TownEvaluation) {
        let detail = ReserveDetail {
            category: "water".into(),
            category_name: "饮用水".into(),
            category_names: Default::default(),
            unit: "L".into(),
            stock: 12_600.0,
            days: 4.2,
            target_days: 5.0,
            warn_days: 5.5,
            hours_to_target: None,
            verified: true,
            never_reported: 0,
            facilities: 1,
            held_until: None,
            counted_by_hand: None,
        };
        let condition = Condition {
            town,
            rule: Rule::ReserveBelowTarget,
            subject: "water".into(),
            facility: None,
            since: None,
            detail: Detail::Reserve(detail.clone()),
        };
        let evaluation = TownEvaluation {
            conditions: vec![condition],
            reserves: vec![detail],
        };
        (town, evaluation)
    }

    /// Recipients and events of the outbox, oldest first.
    fn sent(path: &std::path::Path) -> Vec<(String, String)> {
        let store = Store::open(path, StoreOptions::default()).unwrap();
        let query = NotificationQuery {
            limit: 100,
            ..NotificationQuery::default()
        };
        let mut rows = store.list_notifications(&query).unwrap();
        rows.reverse();
        rows.into_iter().map(|r| (r.recipient, r.event)).collect()
    }

    #[test]
    fn a_town_under_red_is_told_and_escalated_on_the_levels_timings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stockpile.db");
        let source = Source {
            name: "registry.toml".into(),
            text: REGISTRY.into(),
        };
        let registry: Arc<Registry> =
            Arc::new(load_registry(&source, &[], &mut |n| Err(format!("no {n}"))).unwrap());
        let policy = Policy {
            pending_for: Duration::zero(),
            group_wait: Duration::minutes(10),
            repeat_every: Duration::hours(4),
            escalate_after: Duration::minutes(30),
        };
        let renderer = Renderer::new(
            None,
            chrono::FixedOffset::east_opt(8 * 3600).unwrap(),
            "[Stockpile]",
            WebhookFormat::Auto,
        );
        let store = Store::open(&path, StoreOptions::default()).unwrap();
        let mut engine = Engine::open(
            Arc::clone(&registry),
            policy,
            store,
            renderer,
            vec![ChannelKind::Email],
            t(0),
        )
        .unwrap();
        let (js, dh) = (
            registry.town_idx("jingshan").unwrap(),
            registry.town_idx("donghua").unwrap(),
        );
        let red = TownWarning {
            set: WarningSet {
                id: 1,
                level: WarningLevel::Red,
                scope: WarningScope::Towns(vec!["jingshan".into()]),
                reason: "暴雨红色预警".into(),
                since: t(0),
                until: None,
            },
            days_target: Some(5.0),
        };
        engine.note_warning(js, Some(red));
        engine.note_warning(dh, None);
        let step = |engine: &mut Engine, now| {
            engine.run_timers(now).unwrap();
            engine.flush_due(now).unwrap();
        };
        engine
            .observe(&[below_target(js), below_target(dh)], t(0))
            .unwrap();

        // Jingshan's officer within the red level's second; Donghua's after the
        // service's ten minutes.
        step(&mut engine, t(1));
        let li = ("li.wei@example.org".to_owned(), "fired".to_owned());
        assert_eq!(sent(&path), std::slice::from_ref(&li));
        step(&mut engine, t(600));
        let dh_fired = ("dh@example.org".to_owned(), "fired".to_owned());
        assert_eq!(sent(&path), [li.clone(), dh_fired.clone()]);

        // Unacknowledged, Jingshan's alert escalates ten minutes after it was told, not
        // thirty, and the cluster hears of it the level's second later; Donghua's has
        // not escalated.
        step(&mut engine, t(601));
        assert_eq!(sent(&path).len(), 2);
        step(&mut engine, t(602));
        let cluster = ("wang.fang@example.org".to_owned(), "escalate".to_owned());
        assert_eq!(sent(&path), [li, dh_fired, cluster]);
    }
}
