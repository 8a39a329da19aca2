//! Digests: one message to a cluster, district or city contact about every town it
//! hears of in one flush window, instead of one message per town
//! (docs/design.md#digests). The towns come worst first; the first
//! [`DIGEST_TOWNS`] are spelled out with their worst [`DIGEST_ITEMS`] problems, the
//! rest are counted.

use reserve::registry::Lang;
use serde::Serialize;
use serde_json::json;

use super::{
    AffectedPeople, Item, Message, Renderer, SMS_CORE, TownNames, WEBHOOK_TEXT_MAX_BYTES, Words,
    colour, compose_sms_in, cut_bytes, drill_tag, fits_sms, is_robot_url, render, some_drill_tag,
    sorted,
};
use crate::alert::{Alert, Event};
use crate::config::WebhookFormat;
use crate::rules::Severity;

/// Towns a digest spells out; the rest are counted.
pub const DIGEST_TOWNS: usize = 10;
/// Problems listed under each town spelled out; the rest are counted.
pub const DIGEST_ITEMS: usize = 3;
/// Towns an SMS digest names (it has one segment, or two with a link).
const SMS_TOWNS: usize = 3;

/// What one town has to tell a contact in a flush.
#[derive(Debug, Clone)]
pub struct DigestTown<'a> {
    pub names: TownNames,
    /// Its notices for this contact (at least one).
    pub items: Vec<Item<'a>>,
    /// The town's other firing alerts: counted in a digest, not listed.
    pub others: Vec<&'a Alert>,
}

impl DigestTown<'_> {
    /// How bad the town's news is: the worst severity, then the weightiest event,
    /// then the number of critical problems. Digests list the worst town first.
    fn gravity(&self) -> (Severity, u8, usize) {
        let worst = self.items.iter().map(|i| i.alert.severity).max();
        let weight = self.items.iter().map(|i| i.event.weight()).max();
        (
            worst.unwrap_or(Severity::Warning),
            weight.unwrap_or(0),
            self.critical(),
        )
    }

    fn critical(&self) -> usize {
        self.items
            .iter()
            .filter(|i| i.event != Event::Resolved && i.alert.severity == Severity::Critical)
            .count()
    }
}

/// The towns worst first; ties by town id, so a digest reads the same every time.
fn worst_first<'t, 'a>(towns: &[&'t DigestTown<'a>]) -> Vec<&'t DigestTown<'a>> {
    let mut towns = towns.to_vec();
    towns.sort_by(|a, b| {
        b.gravity()
            .cmp(&a.gravity())
            .then_with(|| a.names.id.cmp(&b.names.id))
    });
    towns
}

impl Renderer {
    /// One message about several towns' news (at least one town).
    pub fn digest(&self, lang: Lang, towns: &[&DigestTown<'_>]) -> Message {
        let towns = worst_first(towns);
        let Some((first, head)) = towns
            .first()
            .and_then(|t| sorted(&t.items).first().map(|&head| (*t, head)))
        else {
            return self.message(lang, &TownNames::empty(), &[], &[]);
        };
        let w = Words::of(lang);
        let d = DigestWords::of(lang);
        let subject = format!(
            "{} {}{}{}{}{} {}",
            self.subject_prefix,
            w.prefix(head.event, head.alert.severity),
            w.colon,
            d.towns(towns.len()),
            if head.event == Event::Resolved {
                d.first
            } else {
                d.worst
            },
            first.names.name,
            self.headline(lang, head.alert, head.event),
        );
        // A drill's digest starts with its tag (docs/design.md#drills).
        let drills = towns
            .iter()
            .flat_map(|t| &t.items)
            .map(|i| i.alert.drill.is_some());
        let tag = match (drills.clone().all(|d| d), drills.into_iter().any(|d| d)) {
            (true, _) => drill_tag(lang),
            (false, true) => some_drill_tag(lang),
            (false, false) => "",
        };
        let subject = format!("{tag}{subject}");
        let mut view = self.digest_view(lang, &towns, head, &subject);
        view.intro = format!("{tag}{}", view.intro);
        Message {
            text: render("digest.txt", &view),
            html: render("digest.html", &view),
            sms: self.digest_sms(lang, &towns, head, tag),
            subject,
        }
    }

    /// What the digest templates say, every phrase in the reader's language.
    fn digest_view<'s>(
        &self,
        lang: Lang,
        towns: &[&DigestTown<'_>],
        head: Item<'_>,
        subject: &'s str,
    ) -> DigestView<'s> {
        let w = Words::of(lang);
        let d = DigestWords::of(lang);
        let spelled = towns.len().min(DIGEST_TOWNS);
        let rest = &towns[spelled..];
        let rest_problems: usize = rest.iter().map(|t| t.items.len()).sum();
        let rest_critical: usize = rest.iter().map(|t| t.critical()).sum();
        let ids: Vec<i64> = towns
            .iter()
            .flat_map(|t| t.items.iter().map(|i| i.alert.id))
            .collect();
        DigestView {
            html_lang: w.html_lang,
            subject,
            intro: d.intro(head.event, towns.len()),
            towns: towns[..spelled]
                .iter()
                .map(|town| self.digest_town(lang, town))
                .collect(),
            rest: (!rest.is_empty()).then(|| d.rest(rest.len(), rest_problems, rest_critical)),
            ack: (head.event != Event::Resolved).then(|| self.digest_ack(lang, &ids)),
            footer: self.footer(lang),
        }
    }

    fn digest_town(&self, lang: Lang, town: &DigestTown<'_>) -> DigestTownView {
        let w = Words::of(lang);
        let d = DigestWords::of(lang);
        let items = sorted(&town.items);
        let shown = items.len().min(DIGEST_ITEMS);
        let more = items.len() - shown + town.others.len();
        DigestTownView {
            title: d.town_title(&town.names),
            items: items[..shown]
                .iter()
                .map(|item| DigestItemView {
                    colour: colour(item.event, item.alert.severity),
                    marker: w.marker(item.event),
                    severity: w.severity(item.alert.severity),
                    id: item.alert.id,
                    line: self.line(lang, item.alert, item.event),
                })
                .collect(),
            more: (more > 0).then(|| d.more(more)),
            vulnerable: town.names.vulnerable.as_ref().map(|v| v.count(lang)),
        }
    }

    /// How to acknowledge what a digest lists: one link for all of it when links are
    /// configured, else each alert by its number.
    fn digest_ack(&self, lang: Lang, ids: &[i64]) -> String {
        let w = Words::of(lang);
        match self.ack_link(ids) {
            Some(link) => format!("{}{}{link}", w.ack_label, w.colon),
            None => {
                let base = self.base_url.as_deref().unwrap_or("");
                DigestWords::of(lang).ack_each(&format!("{base}/api/v1/alerts/{{id}}/ack"))
            }
        }
    }

    /// One SMS: how many towns and how many critical, how many vulnerable people they
    /// reach, the worst towns as far as they fit, and how to acknowledge.
    fn digest_sms(
        &self,
        lang: Lang,
        towns: &[&DigestTown<'_>],
        head: Item<'_>,
        drill_tag: &str,
    ) -> String {
        let w = Words::of(lang);
        let d = DigestWords::of(lang);
        let critical: usize = towns.iter().map(|t| t.critical()).sum();
        // A drill's tag starts the core, which is cut from its end only.
        let core = format!(
            "{drill_tag}{}{}{}",
            w.prefix(head.event, head.alert.severity),
            w.colon,
            d.sms_count(towns.len(), critical)
        );
        let worst = towns
            .iter()
            .take(SMS_TOWNS)
            .enumerate()
            .filter_map(|(i, town)| {
                let item = *sorted(&town.items).first()?;
                let rank = (SMS_TOWNS - i) as u8 * 2;
                let text = format!(
                    "{}{} {}",
                    d.sms_sep,
                    town.names.name,
                    self.sms_headline(lang, item.alert, item.event)
                );
                Some((text, rank))
            });
        // Sorted, the head is resolved only when everything is: nothing to acknowledge.
        let ack = (head.event != Event::Resolved).then(|| self.sms_ack(lang, head.alert));
        let segments = match (&ack, self.ack_link(&[head.alert.id])) {
            (Some(ack), Some(_)) if !fits_sms(&format!("{core}{ack}"), 1) => 2,
            _ => 1,
        };
        // The vulnerable people of all the towns, kept longer than any town but the
        // worst (which says what is wrong); only when it fits beside the count and the
        // ack, as in a town's SMS.
        let vulnerable =
            AffectedPeople::total(towns.iter().filter_map(|t| t.names.vulnerable.as_ref()))
                .map(|v| v.sms(lang))
                .filter(|v| {
                    let ack = ack.as_deref().unwrap_or("");
                    fits_sms(&format!("{core}{v}{ack}"), segments)
                });
        let mut parts = vec![(core, SMS_CORE)];
        if drill_tag.is_empty() {
            parts.insert(0, (w.sms_brand.to_owned(), 3));
        }
        parts.extend(vulnerable.map(|v| (v, 5)));
        parts.extend(worst);
        parts.extend(ack.map(|ack| (ack, SMS_CORE - 1)));
        compose_sms_in(&parts, segments)
    }

    /// The JSON posted to a webhook at `url` for a digest.
    pub fn digest_webhook_body(
        &self,
        url: &str,
        towns: &[&DigestTown<'_>],
        message: &Message,
    ) -> String {
        let robot = match self.webhook_format {
            WebhookFormat::Robot => true,
            WebhookFormat::Generic => false,
            WebhookFormat::Auto => is_robot_url(url),
        };
        let text = format!("{}\n\n{}", message.subject, message.text);
        if robot {
            let content = cut_bytes(&text, WEBHOOK_TEXT_MAX_BYTES);
            return json!({"msgtype": "text", "text": {"content": content}}).to_string();
        }
        let towns = worst_first(towns);
        let head = towns
            .first()
            .and_then(|t| sorted(&t.items).first().copied());
        json!({
            "event": head.map(|i| i.event.as_str()),
            "digest": true,
            "subject": message.subject,
            "text": message.text,
            "towns": towns.iter().map(|t| json!({
                "id": t.names.id,
                "name": t.names.name,
                "cluster": t.names.cluster,
                "district": t.names.district,
                "alerts": sorted(&t.items).iter().map(|i| self.webhook_alert(i)).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
        .to_string()
    }
}

impl TownNames {
    fn empty() -> TownNames {
        TownNames {
            id: String::new(),
            name: String::new(),
            cluster: String::new(),
            district: String::new(),
            vulnerable: None,
            warning: None,
        }
    }
}

/// A digest as the templates see it.
#[derive(Debug, Serialize)]
struct DigestView<'a> {
    html_lang: &'static str,
    subject: &'a str,
    intro: String,
    towns: Vec<DigestTownView>,
    /// The towns beyond [`DIGEST_TOWNS`], counted.
    rest: Option<String>,
    /// How to acknowledge; `None` when everything listed is resolved.
    ack: Option<String>,
    footer: Vec<String>,
}

#[derive(Debug, Serialize)]
struct DigestTownView {
    title: String,
    items: Vec<DigestItemView>,
    /// Problems beyond [`DIGEST_ITEMS`] and the town's other firing alerts, counted.
    more: Option<String>,
    /// How many vulnerable people its problems reach, in how many communities (村社),
    /// when any (docs/design.md#communities).
    vulnerable: Option<String>,
}

#[derive(Debug, Serialize)]
struct DigestItemView {
    colour: &'static str,
    marker: &'static str,
    severity: &'static str,
    /// The alert's number: what an SMS reply or the board acknowledges by.
    id: i64,
    line: String,
}

/// A digest's own phrases in the two languages.
struct DigestWords {
    zh: bool,
    /// Before the worst town's problem in a subject.
    worst: &'static str,
    /// The same when everything is resolved (nothing is worst).
    first: &'static str,
    sms_sep: &'static str,
}

const DIGEST_ZH: DigestWords = DigestWords {
    zh: true,
    worst: "，最严重：",
    first: "：",
    sms_sep: "；",
};

const DIGEST_EN: DigestWords = DigestWords {
    zh: false,
    worst: ", worst: ",
    first: ": ",
    sms_sep: "; ",
};

impl DigestWords {
    fn of(lang: Lang) -> &'static DigestWords {
        match lang {
            Lang::Zh => &DIGEST_ZH,
            Lang::En => &DIGEST_EN,
        }
    }

    fn towns(&self, n: usize) -> String {
        if self.zh {
            format!("{n} 个街镇")
        } else {
            format!("{n} towns")
        }
    }

    fn intro(&self, event: Event, n: usize) -> String {
        match (self.zh, event) {
            (true, Event::Escalate) => format!("以下 {n} 个街镇的问题一直未确认，现逐级上报给您："),
            (true, Event::Remind) => format!("提醒：以下 {n} 个街镇的问题仍未确认："),
            (true, Event::Resolved) => format!("以下 {n} 个街镇的问题已恢复："),
            (true, _) => format!("您负责范围内 {n} 个街镇有以下变化："),
            (false, Event::Escalate) => {
                format!("Escalated to you: problems of {n} towns have not been acknowledged:")
            }
            (false, Event::Remind) => {
                format!("Reminder: problems of {n} towns are still unacknowledged:")
            }
            (false, Event::Resolved) => format!("Problems of {n} towns resolved:"),
            (false, _) => format!("News of {n} towns in your area:"),
        }
    }

    fn town_title(&self, town: &TownNames) -> String {
        if self.zh {
            format!(
                "{}（{}，组团 {}，区 {}）",
                town.name, town.id, town.cluster, town.district
            )
        } else {
            format!(
                "{} ({}, cluster {}, district {})",
                town.name, town.id, town.cluster, town.district
            )
        }
    }

    fn more(&self, n: usize) -> String {
        if self.zh {
            format!("另有 {n} 项")
        } else {
            format!("+{n} more")
        }
    }

    fn rest(&self, towns: usize, problems: usize, critical: usize) -> String {
        if self.zh {
            format!("另有 {towns} 个街镇，共 {problems} 项（其中严重 {critical} 项），详见看板。")
        } else {
            format!(
                "And {towns} more towns with {problems} problems ({critical} critical): see the board."
            )
        }
    }

    fn ack_each(&self, url: &str) -> String {
        if self.zh {
            format!("确认告警：在看板上按编号确认，或 POST {url}")
        } else {
            format!("Acknowledge: each alert by its number on the board, or POST {url}")
        }
    }

    fn sms_count(&self, towns: usize, critical: usize) -> String {
        match (self.zh, critical) {
            (true, 0) => format!("{towns}个街镇"),
            (true, c) => format!("{towns}个街镇，{c}项严重"),
            (false, 0) => format!("{towns} towns"),
            (false, c) => format!("{towns} towns, {c} critical"),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, FixedOffset, TimeZone, Utc};
    use reserve::registry::TownIdx;
    use store::AlertState;

    use super::*;
    use crate::render::fits_one_sms;
    use crate::rules::{Detail, ReserveDetail, Rule};

    const GOLDEN_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/digests.txt");

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, h, m, 0).unwrap()
    }

    fn renderer() -> Renderer {
        Renderer::new(
            Some("https://stockpile.example.org/"),
            FixedOffset::east_opt(8 * 3600).unwrap(),
            "[Stockpile]",
            WebhookFormat::Auto,
        )
    }

    fn names(i: usize) -> TownNames {
        TownNames {
            id: format!("town-{i:02}"),
            name: format!(
                "{}街道",
                ["景山", "东华门", "交道口", "安定门", "北新桥"][i % 5]
            ),
            cluster: "c01".into(),
            district: "dongcheng".into(),
            vulnerable: None,
            warning: None,
        }
    }

    fn water(id: i64, rule: Rule, days: f64) -> Alert {
        Alert {
            id,
            key: format!("town/reserve/water/{id}"),
            town: TownIdx(0),
            rule,
            subject: "water".into(),
            severity: rule.severity(),
            state: AlertState::Firing,
            detail: Detail::Reserve(water_detail(days)),
            since: t(6, 5),
            created: t(6, 5),
            fired_at: Some(t(6, 5)),
            resolved_at: None,
            ack: None,
            escalation: 2,
            remind_at: None,
            escalate_at: None,
            notified_at: None,
            notify_event: None,
            escalated_from: None,
            notify_seq: 0,
            updated: t(6, 5),
            drill: None,
            late: false,
        }
    }

    /// Read the way the store reads it, so fields added later take their defaults.
    fn water_detail(days: f64) -> ReserveDetail {
        serde_json::from_value(serde_json::json!({
            "category": "water",
            "category_name": "饮用水",
            "unit": "L",
            "stock": days * 3000.0,
            "days": days,
            "target_days": 3.0,
            "warn_days": 3.5,
            "hours_to_target": 6.0,
            "verified": true,
        }))
        .unwrap()
    }

    /// `n` towns, town `i` with `i % 5 + 1` escalated problems (critical below 2 days).
    fn alerts(n: usize) -> Vec<Vec<Alert>> {
        (0..n)
            .map(|i| {
                (0..i % 5 + 1)
                    .map(|k| {
                        let days = 1.0 + ((i + k) % 4) as f64 * 0.8;
                        let rule = if days < 3.0 {
                            Rule::ReserveBelowTarget
                        } else {
                            Rule::ReserveNearTarget
                        };
                        water((i * 10 + k) as i64 + 1, rule, days)
                    })
                    .collect()
            })
            .collect()
    }

    fn towns<'a>(alerts: &'a [Vec<Alert>], event: Event) -> Vec<DigestTown<'a>> {
        alerts
            .iter()
            .enumerate()
            .map(|(i, alerts)| DigestTown {
                names: names(i),
                items: alerts.iter().map(|alert| Item { alert, event }).collect(),
                others: Vec::new(),
            })
            .collect()
    }

    fn golden() -> String {
        let mut out = String::new();
        for (n, event, lang) in [
            (3, Event::Escalate, Lang::En),
            (14, Event::Escalate, Lang::Zh),
            (14, Event::Remind, Lang::En),
            (2, Event::Resolved, Lang::Zh),
        ] {
            let alerts = alerts(n);
            let towns = towns(&alerts, event);
            let refs: Vec<&DigestTown<'_>> = towns.iter().collect();
            let m = renderer().digest(lang, &refs);
            out.push_str(&format!(
                "==== {n} towns, {}, {lang:?}\n{}\n---- text\n{}---- sms\n{}\n\n",
                event.as_str(),
                m.subject,
                m.text,
                m.sms
            ));
        }
        out.push_str(&golden_vulnerable());
        out
    }

    /// Three towns, two of whose problems reach vulnerable people: after everything
    /// else, so that adding it left the lines above as they were.
    fn golden_vulnerable() -> String {
        let alerts = alerts(3);
        let mut towns = towns(&alerts, Event::Escalate);
        towns[0].names.vulnerable = Some(AffectedPeople {
            people: 60,
            communities: vec![("三眼井社区".into(), 40), ("吉市口社区".into(), 20)],
        });
        towns[2].names.vulnerable = Some(AffectedPeople {
            people: 7,
            communities: vec![("皇城根社区".into(), 7)],
        });
        let refs: Vec<&DigestTown<'_>> = towns.iter().collect();
        let mut out = String::new();
        for lang in [Lang::En, Lang::Zh] {
            let m = renderer().digest(lang, &refs);
            out.push_str(&format!(
                "==== 3 towns, vulnerable, {lang:?}\n{}\n---- text\n{}---- sms\n{}\n\n",
                m.subject, m.text, m.sms
            ));
        }
        out
    }

    #[test]
    fn digests_read_exactly_as_pinned() {
        let got = golden();
        if std::env::var_os("STOCKPILE_BLESS").is_some() {
            std::fs::write(GOLDEN_PATH, &got).unwrap();
        }
        let want = std::fs::read_to_string(GOLDEN_PATH).unwrap();
        let at = got.lines().zip(want.lines()).position(|(g, w)| g != w);
        assert!(
            got == want,
            "line {}: got {:?}, want {:?}",
            at.unwrap_or(0) + 1,
            at.and_then(|a| got.lines().nth(a)),
            at.and_then(|a| want.lines().nth(a))
        );
    }

    #[test]
    fn a_digest_lists_the_worst_towns_first_and_counts_the_rest() {
        let alerts = alerts(14);
        let towns = towns(&alerts, Event::Escalate);
        let refs: Vec<&DigestTown<'_>> = towns.iter().collect();
        let m = renderer().digest(Lang::En, &refs);
        let listed = m.text.lines().filter(|l| l.contains("(town-")).count();
        assert_eq!(listed, DIGEST_TOWNS);
        assert!(m.text.contains("And 4 more towns"), "{}", m.text);
        // No town lists more than three problems; the rest are counted.
        assert!(m.text.contains("+2 more"), "{}", m.text);
        for lang in [Lang::En, Lang::Zh] {
            let sms = renderer().digest(lang, &refs).sms;
            assert!(fits_one_sms(&sms), "{sms}");
            assert!(sms.contains("14"), "{sms}");
        }
    }

    #[test]
    fn a_digest_webhook_names_every_town_and_alert() {
        let alerts = alerts(12);
        let towns = towns(&alerts, Event::Escalate);
        let refs: Vec<&DigestTown<'_>> = towns.iter().collect();
        let r = renderer();
        let m = r.digest(Lang::En, &refs);
        let body: serde_json::Value =
            serde_json::from_str(&r.digest_webhook_body("https://hooks.example.org/x", &refs, &m))
                .unwrap();
        assert_eq!(body["digest"], true);
        assert_eq!(body["towns"].as_array().unwrap().len(), 12);
        let ids: usize = body["towns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["alerts"].as_array().unwrap().len())
            .sum();
        assert_eq!(ids, alerts.iter().map(Vec::len).sum::<usize>());
        let robot = r.digest_webhook_body(
            "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k",
            &refs,
            &m,
        );
        let robot: serde_json::Value = serde_json::from_str(&robot).unwrap();
        assert_eq!(robot["msgtype"], "text");
    }
}
