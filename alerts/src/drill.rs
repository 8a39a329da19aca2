//! Drills (docs/design.md#drills): the seed asks for regular exercises, and without
//! this one raises real alerts. While a drill runs, an alert raised in its scope is a
//! drill alert: its messages start with 【演练】 / [DRILL], its escalation stops at the
//! drill's scope, and when the drill ends it resolves without a message.
//!
//! A scope is written as a string, like the resource list's (`GET
//! /api/v1/export/resources?scope=`): `city`, `district:<id>`, `cluster:<id>`, or
//! `towns:<id>,<id>` (`town:<id>` for one).

use chrono::{DateTime, SubsecRound, Utc};
use reserve::Registry;
use reserve::registry::Scope;
use serde::{Deserialize, Serialize};
use store::DrillRow;

use crate::AlertsError;
use crate::alert::{LEVEL_CITY, LEVEL_TOWN};
use crate::engine::Engine;
use crate::handle::Command;

/// The longest drill: a drill forgotten by its organiser must not mark a district's
/// real alerts as exercises for days.
pub const MAX_DRILL: chrono::Duration = chrono::Duration::hours(24);
/// The shortest drill worth starting.
pub const MIN_DRILL: chrono::Duration = chrono::Duration::minutes(1);
/// Longest note kept, in characters.
const MAX_NOTE_CHARS: usize = 1000;
/// Most towns a `towns:` scope names (a bigger exercise is a cluster's or a district's).
const MAX_TOWNS: usize = 100;

/// What a drill covers: a [`Scope`], read as the resource list reads it.
pub type DrillScope = Scope;

/// Reads a drill's scope (see [`Scope::parse`]); the error says what is wrong, starting
/// with `scope: `. A `towns:` scope names at most [`MAX_TOWNS`].
pub fn parse_scope(registry: &Registry, s: &str) -> Result<DrillScope, String> {
    let scope = Scope::parse(registry, s).map_err(|e| format!("scope: {e}"))?;
    if let Scope::Towns(towns) = &scope
        && towns.len() > MAX_TOWNS
    {
        return Err(format!(
            "scope: at most {MAX_TOWNS} towns; drill their cluster or district"
        ));
    }
    Ok(scope)
}

/// The highest escalation level a drill alert may reach: the contacts of the drill's
/// own scope (a town drill stays with town officers).
pub fn reach(scope: &DrillScope) -> u8 {
    match scope {
        Scope::Towns(_) => LEVEL_TOWN,
        Scope::Cluster(_) => 1,
        Scope::District(_) => 2,
        Scope::City => LEVEL_CITY,
    }
}

/// A drill as the engine works with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drill {
    pub scope: DrillScope,
    pub row: DrillRow,
    /// Where the request that started it came from, for its audit entry; empty for a
    /// drill read back from the store.
    pub remote: String,
}

impl Drill {
    /// `None` for a stored drill whose scope no longer fits the registry: it covers
    /// nothing.
    pub fn from_row(registry: &Registry, row: DrillRow) -> Option<Drill> {
        match parse_scope(registry, &row.scope) {
            Ok(scope) => Some(Drill {
                scope,
                row,
                remote: String::new(),
            }),
            Err(why) => {
                tracing::warn!(message = "Stored drill no longer fits the registry; it covers nothing.", drill = row.id, %why);
                None
            }
        }
    }
}

/// A drill to start.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct NewDrill {
    /// `city`, `district:<id>`, `cluster:<id>` or `towns:<id>,<id>`.
    pub scope: String,
    /// How long it runs: `90m`, `2h`, `1h30m` (1 minute to 24 hours).
    pub duration: String,
    /// Who starts it (the API's token name).
    pub started_by: String,
    #[serde(default)]
    pub note: String,
    /// Where the request came from (the API's peer), for the audit log.
    #[serde(skip)]
    pub remote: String,
}

impl NewDrill {
    /// The drill to start at `now`; an error names the field at fault.
    pub(crate) fn validate(
        self,
        registry: &Registry,
        now: DateTime<Utc>,
    ) -> Result<Drill, AlertsError> {
        // The store keeps milliseconds: what the API answers now reads back the same.
        let now = now.trunc_subsecs(3);
        let scope = parse_scope(registry, &self.scope).map_err(AlertsError::Invalid)?;
        let duration = parse_duration(&self.duration).map_err(AlertsError::Invalid)?;
        if self.started_by.trim().is_empty() {
            return Err(AlertsError::Invalid("started_by: must not be empty".into()));
        }
        Ok(Drill {
            row: DrillRow {
                id: 0,
                scope: scope.to_text(registry),
                started: now,
                until: now + duration,
                ended: None,
                started_by: self.started_by,
                note: self.note.chars().take(MAX_NOTE_CHARS).collect(),
            },
            scope,
            remote: self.remote,
        })
    }
}

/// `2h`, `90m`, `1h30m`, `45s`: whole numbers with units h, m, s, within
/// [`MIN_DRILL`]..=[`MAX_DRILL`].
pub fn parse_duration(s: &str) -> Result<chrono::Duration, String> {
    let bad = || format!("duration: expected e.g. \"2h\", \"90m\" or \"1h30m\", got {s:?}");
    let mut total = chrono::Duration::zero();
    let mut digits = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: i64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        // Bounded before multiplying: 10^18 hours would overflow.
        if n > MAX_DRILL.num_seconds() {
            return Err(format!("duration: at most {} hours", MAX_DRILL.num_hours()));
        }
        total += match c {
            'h' => chrono::Duration::hours(n),
            'm' => chrono::Duration::minutes(n),
            's' => chrono::Duration::seconds(n),
            _ => return Err(bad()),
        };
    }
    if !digits.is_empty() || total.is_zero() {
        return Err(bad());
    }
    if total > MAX_DRILL {
        return Err(format!("duration: at most {} hours", MAX_DRILL.num_hours()));
    }
    if total < MIN_DRILL {
        return Err("duration: at least 1 minute".into());
    }
    Ok(total)
}

/// A drill as `GET /api/v1/drill` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DrillView {
    pub id: i64,
    /// `city`, `district:<id>`, `cluster:<id>` or `towns:<id>,<id>`.
    pub scope: String,
    /// The scope in words: `city`, or the district's, cluster's or towns' names.
    pub scope_name: String,
    /// Who started it (a token's name); absent for public reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    pub started: DateTime<Utc>,
    /// When it ends (or ended).
    pub until: DateTime<Utc>,
    /// When it was ended early, if it was.
    pub ended_at: Option<DateTime<Utc>>,
    /// What it exercises; absent for public reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub active: bool,
}

impl DrillView {
    pub(crate) fn new(registry: &Registry, row: &DrillRow, now: DateTime<Utc>) -> DrillView {
        let scope_name = match parse_scope(registry, &row.scope) {
            Ok(DrillScope::City) => "city".to_owned(),
            Ok(DrillScope::District(d)) => registry.districts[d.index()].name.clone(),
            Ok(DrillScope::Cluster(c)) => registry.clusters[c.index()].name.clone(),
            Ok(DrillScope::Towns(towns)) => towns
                .iter()
                .map(|&t| registry.town(t).name.as_str())
                .collect::<Vec<_>>()
                .join("、"),
            Err(_) => row.scope.clone(),
        };
        DrillView {
            id: row.id,
            scope: row.scope.clone(),
            scope_name,
            started_by: Some(row.started_by.clone()),
            started: row.started,
            until: row.end(),
            ended_at: row.ended.as_ref().map(|(at, _)| *at),
            note: Some(row.note.clone()),
            active: row.is_active(now),
        }
    }

    /// The drill as a caller without a token may see it: what and until when, not
    /// who or why.
    pub fn without_people(self) -> DrillView {
        DrillView {
            started_by: None,
            note: None,
            ..self
        }
    }
}

/// Carries out a drill command from the API. Returns true when every town should be
/// evaluated again: a drill ended early, and a condition its alerts rested on that
/// still holds is raised again as a real alert.
pub(crate) fn carry_out(engine: &mut Engine, command: Command, now: DateTime<Utc>) -> bool {
    match command {
        Command::StartDrill { drill, reply } => {
            let result = engine.start_drill(drill).map_err(AlertsError::from);
            if let Ok(d) = &result {
                tracing::info!(
                    message = "Drill started.",
                    drill = d.row.id,
                    scope = %d.row.scope,
                    by = %d.row.started_by,
                    until = %d.row.until
                );
            }
            let _ = reply.send(result);
            false
        }
        Command::EndDrill {
            id,
            by,
            remote,
            reply,
        } => {
            let result = engine
                .end_drill(id, &by, &remote, now)
                .map_err(AlertsError::from);
            let ended = matches!(result, Ok(true));
            if ended {
                tracing::info!(message = "Drill ended early.", drill = id, by = %by);
            }
            let _ = reply.send(result);
            ended
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use reserve::registry::{Lang, TownIdx};
    use store::AlertState;

    use super::*;
    use crate::alert::{Alert, Event};
    use crate::config::WebhookFormat;
    use crate::render::{Item, Renderer, TownNames};
    use crate::rules::{Detail, ReserveDetail, Rule};

    fn drill_alert(id: i64, drill: Option<i64>) -> Alert {
        let t = Utc.with_ymd_and_hms(2026, 11, 24, 6, 5, 0).unwrap();
        Alert {
            id,
            key: "jingshan/reserve/water".into(),
            town: TownIdx(0),
            rule: Rule::ReserveBelowTarget,
            subject: "water".into(),
            severity: Rule::ReserveBelowTarget.severity(),
            state: AlertState::Firing,
            detail: Detail::Reserve(ReserveDetail {
                category: "water".into(),
                category_name: "Drinking water".into(),
                category_names: Default::default(),
                unit: "L".into(),
                stock: 7500.0,
                days: 2.5,
                target_days: 3.0,
                warn_days: 3.5,
                hours_to_target: None,
                verified: true,
                never_reported: 0,
                facilities: 1,
                held_until: None,
                counted_by_hand: None,
            }),
            since: t,
            created: t,
            fired_at: Some(t),
            resolved_at: None,
            ack: None,
            escalation: LEVEL_TOWN,
            remind_at: None,
            escalate_at: None,
            notified_at: None,
            notify_event: Some(Event::Fired),
            escalated_from: None,
            notify_seq: 0,
            updated: t,
            drill,
            late: false,
        }
    }

    #[test]
    fn every_form_of_a_drill_message_starts_with_its_tag() {
        let renderer = Renderer::new(
            Some("https://stockpile.example.org"),
            chrono::FixedOffset::east_opt(8 * 3600).unwrap(),
            "[Stockpile]",
            WebhookFormat::Auto,
        );
        let town = TownNames {
            id: "jingshan".into(),
            name: "景山街道".into(),
            cluster: "c01".into(),
            district: "dongcheng".into(),
            vulnerable: None,
            warning: None,
        };
        let alert = drill_alert(7, Some(1));
        let items = [Item {
            alert: &alert,
            event: Event::Fired,
        }];
        for (lang, tag) in [(Lang::En, "[DRILL] "), (Lang::Zh, "【演练】")] {
            let m = renderer.message(lang, &town, &items, &[]);
            assert!(
                m.subject.starts_with(&format!("{tag}[Stockpile] ")),
                "{}",
                m.subject
            );
            assert!(m.text.starts_with(tag), "{}", m.text);
            assert!(
                m.html
                    .contains(&format!("<p style=\"font-size: 16px;\">{tag}")),
                "{}",
                m.html
            );
            assert!(m.sms.starts_with(tag), "{}", m.sms);
            assert!(crate::fits_one_sms(&m.sms), "{} ({lang:?})", m.sms);
            let robot = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k";
            let robot: serde_json::Value =
                serde_json::from_str(&renderer.webhook_body(robot, &town, &items, &m)).unwrap();
            let content = robot["text"]["content"].as_str().unwrap();
            assert!(content.starts_with(tag), "{content}");
            let generic = "https://hooks.example.org/stockpile";
            let generic: serde_json::Value =
                serde_json::from_str(&renderer.webhook_body(generic, &town, &items, &m)).unwrap();
            assert_eq!(generic["alerts"][0]["drill"], true);
            assert!(generic["subject"].as_str().unwrap().starts_with(tag));
        }
        // A real alert's message carries no tag.
        let real = drill_alert(8, None);
        let items = [Item {
            alert: &real,
            event: Event::Fired,
        }];
        let m = renderer.message(Lang::En, &town, &items, &[]);
        assert!(
            m.subject.starts_with("[Stockpile] ") && !m.sms.contains("DRILL"),
            "{m:?}"
        );
    }

    #[test]
    fn scopes_read_and_reach_their_own_level() {
        let source = reserve::registry::Source {
            name: "registry.toml".into(),
            text: r#"
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
id = "tiantan"
name = "天坛街道"
district = "dongcheng"
cluster = "c02"
population = 1000
"#
            .into(),
        };
        let registry =
            reserve::registry::load_registry(&source, &[], &mut |n| Err(format!("no {n}")))
                .unwrap();
        let (js, tt) = (
            registry.town_idx("jingshan").unwrap(),
            registry.town_idx("tiantan").unwrap(),
        );
        let cases: &[(&str, &str, u8, bool, bool)] = &[
            ("city", "city", LEVEL_CITY, true, true),
            ("district:dongcheng", "district:dongcheng", 2, true, true),
            ("cluster:c01", "cluster:c01", 1, true, false),
            ("town:tiantan", "towns:tiantan", LEVEL_TOWN, false, true),
            (
                "towns:jingshan, tiantan,jingshan",
                "towns:jingshan,tiantan",
                LEVEL_TOWN,
                true,
                true,
            ),
        ];
        for (text, canonical, reach, covers_js, covers_tt) in cases {
            let scope = parse_scope(&registry, text).unwrap();
            assert_eq!(scope.to_text(&registry), *canonical);
            assert_eq!(super::reach(&scope), *reach, "{text}");
            assert_eq!(
                (scope.covers(&registry, js), scope.covers(&registry, tt)),
                (*covers_js, *covers_tt),
                "{text}"
            );
        }
        for bad in [
            "",
            "cluster:",
            "cluster:c99",
            "towns:jingshan,atlantis",
            "province:hebei",
            "City",
        ] {
            let err = parse_scope(&registry, bad).expect_err(bad);
            assert!(err.starts_with("scope: "), "{bad}: {err}");
        }
    }

    #[test]
    fn durations_read_as_people_write_them_within_a_day() {
        let ok: &[(&str, i64)] = &[
            ("2h", 7200),
            ("90m", 5400),
            ("1h30m", 5400),
            ("24h", 86_400),
            ("60s", 60),
            (" 45m ", 2700),
        ];
        for (s, secs) in ok {
            assert_eq!(parse_duration(s).map(|d| d.num_seconds()), Ok(*secs), "{s}");
        }
        for bad in [
            "",
            "2",
            "h",
            "2d",
            "25h",
            "1441m",
            "30s",
            "0h",
            "-1h",
            "2 h",
            "99999999999999999999h",
        ] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.starts_with("duration: "), "{bad}: {err}");
        }
    }
}
