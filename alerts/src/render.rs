//! Messages in the contact's language (zh, en): email subject, text and HTML bodies,
//! SMS text, webhook JSON. Every message names the town, the problem, days left
//! against the target, since when, and how to acknowledge
//! (docs/design.md#notifications-and-channels).
//!
//! Messages are rendered when they are enqueued, not when delivered, so a retry sends
//! exactly what the first attempt would have, and the outbox shows what was said.

use std::sync::{Arc, LazyLock};

use chrono::{DateTime, FixedOffset, Utc};
use minijinja::{AutoEscape, Environment, Output, State, Value};
use reserve::coverage::NotReady;
use reserve::registry::Lang;
use reserve::text::cut_bytes;
use serde::Serialize;
use serde_json::json;

use crate::alert::{Alert, Event};
use crate::config::WebhookFormat;
use crate::link::AckLinks;
use crate::rules::{Detail, ReserveDetail, Rule, Severity};

mod digest;
mod vulnerable;
mod warning;
pub use digest::DigestTown;
pub use vulnerable::AffectedPeople;

/// The email templates, compiled once. `.html` is autoescaped (registry names are
/// operator text and may hold `<` or `&`); `.txt` is not.
static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(templates);

/// Longest GSM-7 SMS (one segment), in septets.
pub const SMS_GSM_LIMIT: usize = 160;
/// Longest UCS-2 SMS (one segment, any Chinese character makes it one), in UTF-16 units.
pub const SMS_UCS2_LIMIT: usize = 70;
/// Longest webhook text: WeCom robots take 2048 bytes of content.
const WEBHOOK_TEXT_MAX_BYTES: usize = 2000;

/// One alert in a grouped message and why it is there.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    pub alert: &'a Alert,
    pub event: Event,
}

/// Names of the town a message is about.
#[derive(Debug, Clone)]
pub struct TownNames {
    pub id: String,
    pub name: String,
    pub cluster: String,
    pub district: String,
    /// Vulnerable people its problems reach now, per community (村社); `None` when
    /// nobody is (or the town lists no communities).
    pub vulnerable: Option<AffectedPeople>,
    /// The warning level in force there (docs/design.md#warning-levels), which its
    /// messages name.
    pub warning: Option<reserve::ledger::TownWarning>,
}

/// One message, in every channel's form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub subject: String,
    pub text: String,
    pub html: String,
    pub sms: String,
}

#[derive(Debug, Clone)]
pub struct Renderer {
    /// `public_url` without a trailing slash.
    base_url: Option<String>,
    offset: FixedOffset,
    subject_prefix: String,
    webhook_format: WebhookFormat,
    /// Signed acknowledgement links, when configured: how to acknowledge becomes a link
    /// to tap instead of an API call (docs/design.md#acknowledging-from-a-phone).
    links: Option<Arc<AckLinks>>,
    /// Whom the next message is for ([`Renderer::for_contact`]): links are signed for
    /// them. Without one, messages give the API call, as without links.
    reader: Option<Reader>,
}

/// The contact a message is rendered for, and what its links may acknowledge.
#[derive(Debug, Clone)]
struct Reader {
    contact: String,
    /// Every alert the message is about: the SMS's one link names them all.
    alert_ids: Vec<i64>,
    now: DateTime<Utc>,
}

impl Renderer {
    pub fn new(
        public_url: Option<&str>,
        offset: FixedOffset,
        subject_prefix: &str,
        webhook_format: WebhookFormat,
    ) -> Renderer {
        Renderer {
            base_url: public_url.map(|u| u.trim_end_matches('/').to_owned()),
            offset,
            subject_prefix: subject_prefix.to_owned(),
            webhook_format,
            links: None,
            reader: None,
        }
    }

    /// With signed acknowledgement links (none: messages give the API call).
    pub fn with_links(self, links: Option<AckLinks>) -> Renderer {
        Renderer {
            links: links.map(Arc::new),
            ..self
        }
    }

    /// This renderer for a message to `contact` about `alert_ids`, made at `now`: its
    /// links let that contact acknowledge those alerts until they expire.
    pub fn for_contact(&self, contact: &str, alert_ids: &[i64], now: DateTime<Utc>) -> Renderer {
        Renderer {
            reader: Some(Reader {
                contact: contact.to_owned(),
                alert_ids: alert_ids.to_vec(),
                now,
            }),
            ..self.clone()
        }
    }

    /// A signed link for the reader to acknowledge `ids`, when links are configured.
    fn ack_link(&self, ids: &[i64]) -> Option<String> {
        let (links, reader) = (self.links.as_ref()?, self.reader.as_ref()?);
        Some(links.url(&reader.contact, ids, reader.now))
    }

    /// A message about `items` (at least one) of `town`, listing `others` (the town's
    /// other firing alerts) as the rest of its current problems.
    pub fn message(
        &self,
        lang: Lang,
        town: &TownNames,
        items: &[Item<'_>],
        others: &[&Alert],
    ) -> Message {
        let mut items = sorted(items);
        // A real problem heads a message before any drill's: the subject and the SMS
        // speak of the head, and are marked a drill only when it is one.
        items.sort_by_key(|i| i.alert.drill.is_some());
        let Some(head) = items.first().copied() else {
            return Message {
                subject: self.subject_prefix.clone(),
                text: String::new(),
                html: String::new(),
                sms: String::new(),
            };
        };
        let more = items.len() - 1 + others.len();
        let drill = head.alert.drill.is_some().then(|| drill_tag(lang));
        let subject = format!(
            "{}{}",
            drill.unwrap_or(""),
            self.subject(lang, town, head, more)
        );
        let mut email = self.email(lang, town, &items, others, &subject);
        email.intro = format!("{}{}", drill.unwrap_or(""), email.intro);
        Message {
            text: render("email.txt", &email),
            html: render("email.html", &email),
            sms: self.sms(lang, town, head, more),
            subject,
        }
    }

    /// Who it is about, the worst problem, and how many more there are.
    fn subject(&self, lang: Lang, town: &TownNames, head: Item<'_>, more: usize) -> String {
        let w = Words::of(lang);
        format!(
            "{} {}{}{} {}{}",
            self.subject_prefix,
            w.prefix(head.event, head.alert.severity),
            w.colon,
            town.name,
            self.headline(lang, head.alert, head.event),
            if more > 0 {
                w.more(more)
            } else {
                String::new()
            }
        )
    }

    /// What the email templates say, every phrase already in the reader's language.
    fn email<'a>(
        &self,
        lang: Lang,
        town: &TownNames,
        items: &[Item<'_>],
        others: &[&Alert],
        subject: &'a str,
    ) -> EmailView<'a> {
        let w = Words::of(lang);
        EmailView {
            html_lang: w.html_lang,
            subject,
            intro: w.intro(items[0].event, &town.name),
            warning: town.warning.as_ref().map(|wl| warning::line(wl, lang)),
            items: items
                .iter()
                .map(|item| ItemView {
                    colour: colour(item.event, item.alert.severity),
                    marker: w.marker(item.event),
                    severity: w.severity(item.alert.severity),
                    line: self.line(lang, item.alert, item.event),
                    ack: self.ack_hint(lang, item),
                })
                .collect(),
            others_title: w.others_title,
            others: others
                .iter()
                .map(|alert| OtherView {
                    severity: w.severity(alert.severity),
                    line: self.line(lang, alert, Event::Fired),
                })
                .collect(),
            vulnerable: town.vulnerable.as_ref().map(|v| v.line(lang)),
            town_line: w.town_line(town),
            footer: self.footer(lang),
        }
    }

    /// The JSON posted to a webhook at `url`.
    pub fn webhook_body(
        &self,
        url: &str,
        town: &TownNames,
        items: &[Item<'_>],
        message: &Message,
    ) -> String {
        let robot = match self.webhook_format {
            WebhookFormat::Robot => true,
            WebhookFormat::Generic => false,
            WebhookFormat::Auto => is_robot_url(url),
        };
        let text = format!("{}\n\n{}", message.subject, message.text);
        let body = if robot {
            json!({"msgtype": "text", "text": {"content": cut_bytes(&text, WEBHOOK_TEXT_MAX_BYTES)}})
        } else {
            let items = sorted(items);
            json!({
                "event": items.first().map(|i| i.event.as_str()),
                "town": {"id": town.id, "name": town.name, "cluster": town.cluster, "district": town.district},
                "subject": message.subject,
                "text": message.text,
                "alerts": items.iter().map(|i| self.webhook_alert(i)).collect::<Vec<_>>(),
            })
        };
        body.to_string()
    }

    /// The alert in a sentence, as a message body lists it.
    pub fn summary(&self, lang: Lang, alert: &Alert, event: Event) -> String {
        self.line(lang, alert, event)
    }

    fn time(&self, t: DateTime<Utc>) -> String {
        t.with_timezone(&self.offset)
            .format("%m-%d %H:%M")
            .to_string()
    }

    /// One alert as a generic webhook body lists it (a town's message or a digest).
    fn webhook_alert(&self, i: &Item<'_>) -> serde_json::Value {
        json!({
            "id": i.alert.id,
            "event": i.event.as_str(),
            "rule": i.alert.rule.as_str(),
            "severity": i.alert.severity.as_str(),
            "state": i.alert.state.as_str(),
            "subject": i.alert.subject,
            "since": i.alert.since,
            "detail": i.alert.detail,
            "ack_url": self.ack_url(i.alert.id),
            "drill": i.alert.drill.is_some(),
        })
    }

    fn ack_url(&self, id: i64) -> String {
        format!(
            "{}/api/v1/alerts/{id}/ack",
            self.base_url.as_deref().unwrap_or("")
        )
    }

    /// How to acknowledge an item, or `None` when there is nothing to acknowledge.
    fn ack_hint(&self, lang: Lang, item: &Item<'_>) -> Option<String> {
        if item.event == Event::Resolved {
            return None;
        }
        if let Some(ack) = &item.alert.ack {
            return Some(Words::of(lang).acked(&ack.by, &self.time(ack.at)));
        }
        let w = Words::of(lang);
        if let Some(link) = self.ack_link(&[item.alert.id]) {
            return Some(format!("{}{}{link}", w.ack_label, w.colon));
        }
        Some(format!(
            "{}{}POST {}",
            w.ack_label,
            w.colon,
            self.ack_url(item.alert.id)
        ))
    }

    /// How to acknowledge by SMS: the message's link when there is one (it names every
    /// alert of the message), else the alert's number to acknowledge on the board.
    fn sms_ack(&self, lang: Lang, head: &Alert) -> String {
        let ids = self.reader.as_ref().map_or(&[][..], |r| &r.alert_ids[..]);
        let ids = if ids.is_empty() { &[head.id][..] } else { ids };
        Words::of(lang).sms_ack(head.id, self.ack_link(ids).as_deref())
    }

    /// The lines under every email: what acknowledging does, where the board is, and
    /// which time zone the times are in.
    fn footer(&self, lang: Lang) -> Vec<String> {
        let w = Words::of(lang);
        let mut footer = vec![w.ack_explained.to_owned()];
        if let Some(base) = &self.base_url {
            footer.push(format!("{}{}{base}/", w.board, w.colon));
        }
        footer.push(format!("{} UTC{}.", w.times_in, self.offset));
        footer
    }

    /// The problem in a few words, for subjects and SMS.
    fn headline(&self, lang: Lang, alert: &Alert, event: Event) -> String {
        let w = Words::of(lang);
        let resolved = event == Event::Resolved;
        match &alert.detail {
            Detail::Reserve(r) if resolved => w.reserve_back(r),
            // "0 days" would be a claim: say what is missing instead.
            Detail::Reserve(r) if r.never_reported > 0 && alert.rule != Rule::ReserveDepleting => {
                w.reserve_unreported(r)
            }
            Detail::Reserve(r) => match alert.rule {
                Rule::ReserveBelowTarget => w.reserve_below(r),
                Rule::ReserveNearTarget => w.reserve_near(r),
                _ => w.reserve_depleting(r),
            },
            Detail::Readiness {
                facility_name,
                problems,
                ..
            } => {
                let kind = w.readiness_kind(alert.rule);
                if resolved {
                    w.ready_again(kind, facility_name)
                } else {
                    let problems: Vec<&str> = problems.iter().map(|&p| w.problem(p)).collect();
                    w.not_ready(kind, facility_name, &problems.join(w.list_sep))
                }
            }
            Detail::Silent {
                facility_name,
                last_heard,
                ..
            } => {
                if resolved {
                    w.reporting_again(facility_name)
                } else {
                    w.silent(facility_name, &self.time(*last_heard))
                }
            }
            Detail::Offline {
                facility_name,
                since,
                ..
            } => {
                if resolved {
                    w.online_again(facility_name)
                } else {
                    w.offline(facility_name, &self.time(*since))
                }
            }
            Detail::CountDue {
                facility_name,
                last_counted,
                ..
            } => {
                if resolved {
                    w.counted(facility_name)
                } else {
                    w.count_due(facility_name, last_counted.map(|t| self.time(t)).as_deref())
                }
            }
            Detail::ShelterFull {
                facility_name,
                occupancy,
                capacity,
                ..
            } => {
                if resolved {
                    w.shelter_has_room(facility_name)
                } else {
                    w.shelter_full(facility_name, *occupancy, *capacity)
                }
            }
            Detail::ShelterConverting {
                facility_name,
                activating_since,
                convert_within_s,
                ..
            } => {
                if resolved {
                    w.shelter_converted(facility_name)
                } else {
                    let t = self.time(*activating_since);
                    w.shelter_converting(facility_name, &t, *convert_within_s)
                }
            }
            Detail::ActivationStep {
                facility_name,
                step,
                name,
                due_at,
                ..
            } => {
                if resolved {
                    w.activation_step_done(facility_name, *step, name)
                } else {
                    w.activation_step_overdue(facility_name, *step, name, &self.time(*due_at))
                }
            }
            Detail::Removed { facility_name, .. } => w.removed(facility_name),
            Detail::ClusterSilent {
                cluster_name,
                last_heard,
                ..
            } => {
                if resolved {
                    w.cluster_heard_again(cluster_name)
                } else {
                    // Minutes of silence when it fired: a stable figure, told once.
                    let at = alert.fired_at.unwrap_or(alert.updated);
                    let minutes = last_heard.map(|h| (at - h).num_minutes().max(0));
                    w.cluster_silent(cluster_name, minutes)
                }
            }
        }
    }

    /// The problem in a sentence, for message bodies: the headline, since when, and
    /// what the reader should know about the figures.
    fn line(&self, lang: Lang, alert: &Alert, event: Event) -> String {
        let w = Words::of(lang);
        let mut line = match alert.drill {
            Some(_) => format!("{}{}", drill_tag(lang), self.headline(lang, alert, event)),
            None => self.headline(lang, alert, event),
        };
        let quotes_its_time = matches!(
            alert.detail,
            Detail::Silent { .. }
                | Detail::Offline { .. }
                | Detail::CountDue { .. }
                | Detail::ShelterConverting { .. }
                | Detail::ActivationStep { .. }
                | Detail::ClusterSilent { .. }
        );
        // A removed facility did not recover: "resolved at" would say it did.
        let removed = matches!(alert.detail, Detail::Removed { .. });
        if event == Event::Resolved && !removed {
            if let Some(at) = alert.resolved_at {
                line.push_str(&w.resolved_at(&self.time(at)));
            }
        } else if !quotes_its_time && !removed {
            line.push_str(&w.since(&self.time(alert.since)));
        }
        if let Detail::Reserve(r) = &alert.detail
            && !r.verified
            && event != Event::Resolved
            && (r.never_reported == 0 || alert.rule == Rule::ReserveDepleting)
        {
            line.push_str(w.unverified);
        }
        if let Some(when) = self.hand_count(lang, alert) {
            line.push_str(&w.hand_count(&when));
        }
        line
    }

    /// How old the hand count an alert's figure rests on is ("3 小时前", "3 h ago"),
    /// or when it was made for a text written for nobody in particular.
    fn hand_count(&self, lang: Lang, alert: &Alert) -> Option<String> {
        let Detail::Reserve(ReserveDetail {
            counted_by_hand: Some(at),
            ..
        }) = &alert.detail
        else {
            return None;
        };
        Some(match &self.reader {
            Some(reader) => Words::of(lang).age(reader.now - *at),
            None => self.time(*at),
        })
    }

    /// One SMS segment: who sends, the problem, how many vulnerable people it reaches,
    /// whether it rests on a hand count, since when, how many more, how to acknowledge.
    /// When it does not fit, since when goes first, then the count, then the sender,
    /// then the hand count, then the vulnerable people; the problem is cut last, and
    /// how to acknowledge stays.
    fn sms(&self, lang: Lang, town: &TownNames, head: Item<'_>, more: usize) -> String {
        let w = Words::of(lang);
        // A drill's SMS starts with its tag instead of the sender's name: the core is
        // cut from its end, so the tag stays whatever else must go.
        let drill = head.alert.drill.is_some();
        let core = format!(
            "{}{}{}{} {}",
            if drill { drill_tag(lang) } else { "" },
            w.prefix(head.event, head.alert.severity),
            w.colon,
            town.name,
            self.sms_headline(lang, head.alert, head.event)
        );
        let since = match (&head.alert.detail, head.event) {
            (_, Event::Resolved)
            | (
                Detail::Silent { .. }
                | Detail::Offline { .. }
                | Detail::CountDue { .. }
                | Detail::ShelterConverting { .. }
                | Detail::ActivationStep { .. }
                | Detail::ClusterSilent { .. },
                _,
            ) => None,
            _ => Some(w.sms_since(&self.time(head.alert.since))),
        };
        let more = (more > 0).then(|| w.sms_more(more));
        let hand_count = self
            .hand_count(lang, head.alert)
            .map(|when| w.sms_hand_count(&when));
        let ack = (head.event != Event::Resolved && head.alert.ack.is_none())
            .then(|| self.sms_ack(lang, head.alert));
        // A link is never cut, and a problem cut to a few characters tells nothing: when
        // the two do not fit one segment together, the SMS takes two
        // (docs/design.md#acknowledging-from-a-phone).
        let segments = match (&ack, self.ack_link(&[head.alert.id])) {
            (Some(ack), Some(_)) if !fits_sms(&format!("{core}{ack}"), 1) => 2,
            _ => 1,
        };
        // Only when it fits beside the problem and the ack: were it dropped last, the
        // parts dropped before it would have been dropped for nothing.
        let vulnerable = town.vulnerable.as_ref().map(|v| v.sms(lang)).filter(|v| {
            let ack = ack.as_deref().unwrap_or("");
            fits_sms(&format!("{core}{v}{ack}"), segments)
        });
        let warning = town.warning.as_ref().map(|wl| warning::sms(wl, lang));
        let parts: Vec<(String, u8)> = [
            (Some(w.sms_brand.to_owned()).filter(|_| !drill), 2),
            (Some(core), SMS_CORE),
            // Why the target moved: kept over since when, and the sender's name.
            (warning, 2),
            // How many vulnerable people the town's problems reach is what a duty
            // officer acts on first: it outlasts all but how to acknowledge.
            (vulnerable, 3),
            // Whether the figure rests on a person's count matters more than since
            // when it is short, or who sends it.
            (hand_count, 2),
            (since, 0),
            (more, 1),
            (ack, 3),
        ]
        .into_iter()
        .filter_map(|(part, rank)| part.map(|p| (p, rank)))
        .collect();
        compose_sms_in(&parts, segments)
    }

    /// The headline, shorter where English allows (a Chinese town name leaves an
    /// English SMS 70 characters).
    fn sms_headline(&self, lang: Lang, alert: &Alert, event: Event) -> String {
        // "cluster …'s Stockpile silent for 6 min; the city now sends its
        // notifications" leaves no room in an SMS beside a Chinese name.
        if let (
            Lang::En,
            Detail::ClusterSilent {
                cluster_name,
                last_heard,
                ..
            },
        ) = (lang, &alert.detail)
        {
            if event == Event::Resolved {
                return format!("{cluster_name} back; it notifies again");
            }
            let at = alert.fired_at.unwrap_or(alert.updated);
            let silent = last_heard.map_or_else(String::new, |h| {
                format!(" {} min", (at - h).num_minutes().max(0))
            });
            return format!("{cluster_name} silent{silent}; city notifies");
        }
        let (Lang::En, Detail::Reserve(r)) = (lang, &alert.detail) else {
            return self.headline(lang, alert, event);
        };
        let c = r.category_name_in(lang);
        let (d, t) = (num(r.days), num(r.target_days));
        let (n, of) = (r.never_reported, r.facilities);
        match (event, alert.rule) {
            (Event::Resolved, _) => format!("{c} back to {d}d (target {t}d)"),
            (_, Rule::ReserveBelowTarget | Rule::ReserveNearTarget) if n > 0 && n == of => {
                format!("{c}: no site reported")
            }
            (_, Rule::ReserveBelowTarget | Rule::ReserveNearTarget) if n > 0 => {
                format!("{c} {d}d, {n}/{of} sites unreported")
            }
            (_, Rule::ReserveBelowTarget) => format!("{c} {d}d left (target {t}d)"),
            (_, Rule::ReserveNearTarget) => format!("{c} {d}d left (warn {}d)", num(r.warn_days)),
            _ => format!(
                "{c} below {t}d target in {}h",
                r.hours_to_target.map_or_else(|| "?".to_owned(), num)
            ),
        }
    }
}

/// A cluster as a Chinese sentence names it: its registry name when that says 组团
/// (东城一组团), else "组团 c07".
fn zh_cluster(name: &str) -> String {
    if name.contains("组团") {
        name.to_owned()
    } else {
        format!("组团 {name}")
    }
}

/// What a drill's messages start with, and a drill alert's line
/// (docs/design.md#drills).
pub(crate) fn drill_tag(lang: Lang) -> &'static str {
    match lang {
        Lang::Zh => "【演练】",
        Lang::En => "[DRILL] ",
    }
}

/// What a digest starts with when some, not all, of its alerts are a drill's: its
/// headline may be one.
pub(crate) fn some_drill_tag(lang: Lang) -> &'static str {
    match lang {
        Lang::Zh => "【含演练】",
        Lang::En => "[INCL. DRILL] ",
    }
}

/// Items in the order a reader wants them: new problems first, the worst first.
fn sorted<'a>(items: &[Item<'a>]) -> Vec<Item<'a>> {
    let mut items = items.to_vec();
    items.sort_by(|a, b| {
        b.event
            .weight()
            .cmp(&a.event.weight())
            .then(b.alert.severity.cmp(&a.alert.severity))
            .then(a.alert.id.cmp(&b.alert.id))
    });
    items
}

/// WeCom and DingTalk group robots take `{"msgtype":"text",…}`. The host is read by
/// the URL parser reqwest sends with, so what is matched is where the post goes.
fn is_robot_url(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|url| {
        matches!(
            url.host_str(),
            Some("qyapi.weixin.qq.com" | "oapi.dingtalk.com")
        )
    })
}

// ---------------------------------------------------------------------------------
// Email templates (alerts/templates). The templates lay the message out; every phrase
// they print is computed here in the reader's language, so they hold no logic beyond
// "for each item" and "if there is one".

/// An email as the templates see it.
#[derive(Debug, Serialize)]
struct EmailView<'a> {
    html_lang: &'static str,
    subject: &'a str,
    intro: String,
    /// The warning level in force, when one is.
    warning: Option<String>,
    items: Vec<ItemView>,
    others_title: &'static str,
    /// The town's other firing alerts: listed, not tagged with an event.
    others: Vec<OtherView>,
    /// Whom the problems reach (docs/design.md#communities), when anyone.
    vulnerable: Option<String>,
    town_line: String,
    /// Lines: a line break in the text, `<br>` in HTML.
    footer: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ItemView {
    colour: &'static str,
    marker: &'static str,
    severity: &'static str,
    line: String,
    /// How to acknowledge it, or who did; `None` once resolved.
    ack: Option<String>,
}

#[derive(Debug, Serialize)]
struct OtherView {
    severity: &'static str,
    line: String,
}

fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    // Whole lines of `{% … %}` leave nothing behind, so the templates can be laid out
    // like the message; the trailing newline of a file is part of the message.
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(true);
    env.set_formatter(escape_reserved_only);
    for (name, source) in [
        ("email.txt", include_str!("../templates/email.txt")),
        ("email.html", include_str!("../templates/email.html")),
        ("digest.txt", include_str!("../templates/digest.txt")),
        ("digest.html", include_str!("../templates/digest.html")),
    ] {
        env.add_template(name, source)
            .expect("the email templates parse (every render test loads them)");
    }
    env
}

/// `view` through the template `name`. The templates are ours and every branch of
/// them is rendered by the tests, so an error here is a bug, not an input to handle.
fn render(name: &str, view: &impl Serialize) -> String {
    TEMPLATES
        .get_template(name)
        .and_then(|template| template.render(view))
        .unwrap_or_else(|e| panic!("template {name}: {e:#}"))
}

/// HTML autoescaping of the five reserved characters only. minijinja's own escaper
/// also writes `/` as `&#x2f;`, which would turn every link an officer reads in the
/// source (and every ack URL) into `https:&#x2f;&#x2f;…`.
fn escape_reserved_only(
    out: &mut Output<'_>,
    state: &State<'_, '_>,
    value: &Value,
) -> Result<(), minijinja::Error> {
    match (state.auto_escape(), value.as_str()) {
        (AutoEscape::Html, Some(text)) if !value.is_safe() => out
            .write_str(&html_escape::encode_quoted_attribute(text))
            .map_err(minijinja::Error::from),
        _ => minijinja::escape_formatter(out, state, value),
    }
}

fn colour(event: Event, severity: Severity) -> &'static str {
    match (event, severity) {
        (Event::Resolved, _) => "#1a7f37",
        (_, Severity::Critical) => "#cf222e",
        (_, Severity::Warning) => "#9a6700",
    }
}

/// A number as people read it: one decimal below 100, none above, no trailing `.0`.
fn num(x: f64) -> String {
    let s = if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    };
    match s.strip_suffix(".0") {
        Some(whole) => whole.to_owned(),
        None => s,
    }
}

// ---------------------------------------------------------------------------------
// SMS length: one segment is 160 GSM-7 septets, or 70 UTF-16 units as soon as one
// character is outside the GSM alphabet (every Chinese character is).

const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// Characters of the GSM extension table: each takes two septets.
const GSM_EXTENDED: &str = "^{}\\[~]|€\u{c}";

/// Whether `s` fits in one SMS segment.
pub fn fits_one_sms(s: &str) -> bool {
    fits_sms(s, 1)
}

/// Whether `s` fits in `segments` segments: a concatenated SMS spends 7 septets (3
/// UTF-16 units) of each segment on the header that joins them.
fn fits_sms(s: &str, segments: usize) -> bool {
    let (gsm, ucs2) = if segments <= 1 {
        (SMS_GSM_LIMIT, SMS_UCS2_LIMIT)
    } else {
        (153 * segments, 67 * segments)
    };
    match gsm_septets(s) {
        Some(n) => n <= gsm,
        None => s.encode_utf16().count() <= ucs2,
    }
}

/// Septets `s` takes in GSM-7, or `None` when it needs UCS-2.
fn gsm_septets(s: &str) -> Option<usize> {
    s.chars().try_fold(0, |n, c| {
        if GSM_BASIC.contains(c) {
            Some(n + 1)
        } else if GSM_EXTENDED.contains(c) {
            Some(n + 2)
        } else {
            None
        }
    })
}

/// Rank of the part of an SMS that is never dropped, only cut.
const SMS_CORE: u8 = u8::MAX;

/// `compose_sms_in` within one segment.
#[cfg(test)]
fn compose_sms(parts: &[(String, u8)]) -> String {
    compose_sms_in(parts, 1)
}

/// `parts` (text, rank) joined, dropping the lowest-ranked parts until the text fits in
/// `segments` segments. When only the core and the best other part are left and it
/// still does not fit, the core is cut with an ellipsis ("..." in GSM text, "…"
/// otherwise, so the cut does not change the encoding).
fn compose_sms_in(parts: &[(String, u8)], segments: usize) -> String {
    let fits_one_sms = |s: &str| fits_sms(s, segments);
    let join = |kept: &[&(String, u8)]| kept.iter().map(|(p, _)| p.as_str()).collect::<String>();
    let mut kept: Vec<&(String, u8)> = parts.iter().collect();
    loop {
        let text = join(&kept);
        if fits_one_sms(&text) {
            return text;
        }
        let droppable: Vec<(usize, u8)> = kept
            .iter()
            .enumerate()
            .filter(|(_, (_, rank))| *rank != SMS_CORE)
            .map(|(i, (_, rank))| (i, *rank))
            .collect();
        if droppable.len() <= 1 {
            break;
        }
        if let Some(&(lowest, _)) = droppable.iter().min_by_key(|(_, rank)| *rank) {
            kept.remove(lowest);
        }
    }
    let ellipsis = if gsm_septets(&join(&kept)).is_some() {
        "..."
    } else {
        "…"
    };
    let Some(core_at) = kept.iter().position(|(_, rank)| *rank == SMS_CORE) else {
        return join(&kept);
    };
    let mut core: Vec<char> = kept[core_at].0.chars().collect();
    while !core.is_empty() {
        core.pop();
        let cut = format!("{}{ellipsis}", core.iter().collect::<String>().trim_end());
        let text: String = kept
            .iter()
            .enumerate()
            .map(|(i, (p, _))| {
                if i == core_at {
                    cut.as_str()
                } else {
                    p.as_str()
                }
            })
            .collect();
        if fits_one_sms(&text) {
            return text;
        }
    }
    ellipsis.to_owned()
}

// ---------------------------------------------------------------------------------
// The two languages. Facility names are the registry's, as written; a category is
// named in the reader's language when the registry gives that name.

struct Words {
    lang: Lang,
    html_lang: &'static str,
    colon: &'static str,
    list_sep: &'static str,
    others_title: &'static str,
    ack_label: &'static str,
    ack_explained: &'static str,
    board: &'static str,
    times_in: &'static str,
    unverified: &'static str,
    sms_brand: &'static str,
}

const ZH: Words = Words {
    lang: Lang::Zh,
    html_lang: "zh-CN",
    colon: "：",
    list_sep: "、",
    others_title: "该街镇当前的其他问题：",
    ack_label: "确认告警",
    ack_explained: "确认告警后，将停止提醒和逐级上报。",
    board: "看板",
    times_in: "时间为",
    unverified: "（数据未核实：有设施失联或从未上报）",
    sms_brand: "【Stockpile】",
};

const EN: Words = Words {
    lang: Lang::En,
    html_lang: "en",
    colon: ": ",
    list_sep: ", ",
    others_title: "Other current problems of the town:",
    ack_label: "Acknowledge",
    ack_explained: "Acknowledging an alert stops its reminders and escalation.",
    board: "Board",
    times_in: "Times are",
    unverified: " (figures unverified: a facility is silent or never reported)",
    sms_brand: "Stockpile ",
};

impl Words {
    fn of(lang: Lang) -> &'static Words {
        match lang {
            Lang::Zh => &ZH,
            Lang::En => &EN,
        }
    }

    fn zh(&self) -> bool {
        self.lang == Lang::Zh
    }

    /// That a figure rests on a hand count made `when` (an age or a time).
    fn hand_count(&self, when: &str) -> String {
        if self.zh() {
            format!("（含人工盘点 {when}）")
        } else {
            format!(" (includes a hand count from {when})")
        }
    }

    fn sms_hand_count(&self, when: &str) -> String {
        if self.zh() {
            format!("，含人工盘点 {when}")
        } else {
            format!(", hand count {when}")
        }
    }

    /// An age in the unit an officer thinks in: minutes within the hour, hours
    /// within two days, then days.
    fn age(&self, age: chrono::Duration) -> String {
        let (n, zh, en) = match age.num_minutes().max(1) {
            m if m < 60 => (m, "分钟前", "min ago"),
            m if m < 48 * 60 => (m / 60, "小时前", "h ago"),
            m => (m / (24 * 60), "天前", "d ago"),
        };
        format!("{n} {}", if self.zh() { zh } else { en })
    }

    fn severity(&self, s: Severity) -> &'static str {
        match (self.zh(), s) {
            (true, Severity::Critical) => "严重",
            (true, Severity::Warning) => "警告",
            (false, Severity::Critical) => "CRITICAL",
            (false, Severity::Warning) => "WARNING",
        }
    }

    /// What a subject starts with.
    fn prefix(&self, event: Event, s: Severity) -> String {
        let sev = self.severity(s);
        match (self.zh(), event) {
            (_, Event::Fired | Event::Raised) => sev.to_owned(),
            (true, Event::Lowered) => format!("缓解（{sev}）"),
            (false, Event::Lowered) => format!("EASED, {sev}"),
            (true, Event::Remind) => format!("提醒（{sev}）"),
            (false, Event::Remind) => format!("REMINDER, {sev}"),
            (true, Event::Escalate) => format!("逐级上报（{sev}）"),
            (false, Event::Escalate) => format!("ESCALATED, {sev}"),
            (true, Event::Resolved) => "已恢复".to_owned(),
            (false, Event::Resolved) => "RESOLVED".to_owned(),
        }
    }

    /// What an item of a message is tagged with.
    fn marker(&self, event: Event) -> &'static str {
        match (self.zh(), event) {
            (true, Event::Fired) => "新",
            (true, Event::Raised) => "加重",
            (true, Event::Lowered) => "缓解",
            (true, Event::Remind) => "提醒",
            (true, Event::Escalate) => "上报",
            (true, Event::Resolved) => "已恢复",
            (false, Event::Fired) => "NEW",
            (false, Event::Raised) => "WORSE",
            (false, Event::Lowered) => "EASED",
            (false, Event::Remind) => "REMINDER",
            (false, Event::Escalate) => "ESCALATED",
            (false, Event::Resolved) => "RESOLVED",
        }
    }

    fn intro(&self, event: Event, town: &str) -> String {
        match (self.zh(), event) {
            (true, Event::Fired | Event::Raised) => format!("{town}出现以下需要处理的问题："),
            (true, Event::Remind) => format!("提醒：{town}的以下问题仍未确认："),
            (true, Event::Escalate) => format!("{town}的以下问题一直未确认，现逐级上报给您："),
            (true, Event::Lowered) => format!("{town}的以下问题有所缓解，但尚未解除："),
            (true, Event::Resolved) => format!("{town}的以下问题已恢复："),
            (false, Event::Fired | Event::Raised) => {
                format!("{town} has problems that need attention:")
            }
            (false, Event::Remind) => {
                format!("Reminder: these problems of {town} are still unacknowledged:")
            }
            (false, Event::Escalate) => {
                format!("Escalated to you: these problems of {town} have not been acknowledged:")
            }
            (false, Event::Lowered) => {
                format!("These problems of {town} have eased but are not over:")
            }
            (false, Event::Resolved) => format!("Problems of {town} resolved:"),
        }
    }

    fn more(&self, n: usize) -> String {
        if self.zh() {
            format!("（另有 {n} 项）")
        } else {
            format!(" (+{n} more)")
        }
    }

    fn since(&self, t: &str) -> String {
        if self.zh() {
            format!("，自 {t} 起")
        } else {
            format!(", since {t}")
        }
    }

    fn resolved_at(&self, t: &str) -> String {
        if self.zh() {
            format!("，{t} 恢复")
        } else {
            format!(", resolved {t}")
        }
    }

    fn acked(&self, by: &str, t: &str) -> String {
        if self.zh() {
            format!("已由 {by} 于 {t} 确认")
        } else {
            format!("Acknowledged by {by} at {t}")
        }
    }

    fn town_line(&self, town: &TownNames) -> String {
        if self.zh() {
            format!(
                "街镇：{}（{}），组团 {}，区 {}",
                town.name, town.id, town.cluster, town.district
            )
        } else {
            format!(
                "Town: {} ({}), cluster {}, district {}",
                town.name, town.id, town.cluster, town.district
            )
        }
    }

    fn reserve_below(&self, r: &ReserveDetail) -> String {
        let c = r.category_name_in(self.lang);
        let (d, t) = (num(r.days), num(r.target_days));
        if self.zh() {
            format!("{c}仅剩 {d} 天（目标 {t} 天）")
        } else {
            format!("{c} {d} days left (target {t})")
        }
    }

    fn reserve_near(&self, r: &ReserveDetail) -> String {
        let (c, d, w, t) = (
            r.category_name_in(self.lang),
            num(r.days),
            num(r.warn_days),
            num(r.target_days),
        );
        if self.zh() {
            format!("{c}剩 {d} 天，低于预警线 {w} 天（目标 {t} 天）")
        } else {
            format!("{c} {d} days left, below the {w}-day warning line (target {t})")
        }
    }

    fn reserve_depleting(&self, r: &ReserveDetail) -> String {
        let c = r.category_name_in(self.lang);
        let (d, t) = (num(r.days), num(r.target_days));
        let h = r.hours_to_target.map_or_else(|| "?".to_owned(), num);
        if self.zh() {
            format!("{c}预计 {h} 小时后低于目标 {t} 天（现剩 {d} 天）")
        } else {
            format!("{c} forecast below the {t}-day target in {h} h ({d} days left)")
        }
    }

    /// Below a line while facilities it sums never reported: how many, and what the
    /// others hold.
    fn reserve_unreported(&self, r: &ReserveDetail) -> String {
        let c = r.category_name_in(self.lang);
        let (d, t) = (num(r.days), num(r.target_days));
        let (n, of) = (r.never_reported, r.facilities);
        match (self.zh(), n == of) {
            (true, true) if of == 1 => format!("{c}：唯一的设施从未上报（目标 {t} 天）"),
            (false, true) if of == 1 => {
                format!("{c}: its only facility never reported (target {t})")
            }
            (true, true) => format!("{c}：{of} 个设施均从未上报（目标 {t} 天）"),
            (true, false) => {
                format!("{c}：{of} 个设施中 {n} 个从未上报，其余仅够 {d} 天（目标 {t} 天）")
            }
            (false, true) => format!("{c}: none of its {of} facilities ever reported (target {t})"),
            (false, false) => format!(
                "{c}: {n} of {of} facilities never reported, the others hold {d} days (target {t})"
            ),
        }
    }

    fn reserve_back(&self, r: &ReserveDetail) -> String {
        let c = r.category_name_in(self.lang);
        let (d, t) = (num(r.days), num(r.target_days));
        if self.zh() {
            format!("{c}已恢复至 {d} 天（目标 {t} 天）")
        } else {
            format!("{c} back to {d} days (target {t})")
        }
    }

    fn readiness_kind(&self, rule: Rule) -> &'static str {
        match (self.zh(), rule) {
            (true, Rule::PowerNotReady) => "应急电源",
            (true, _) => "供水点",
            (false, Rule::PowerNotReady) => "power unit",
            (false, _) => "water point",
        }
    }

    fn not_ready(&self, kind: &str, name: &str, problems: &str) -> String {
        if self.zh() {
            format!("{kind}{name}未就绪：{problems}")
        } else {
            format!("{kind} {name} not ready: {problems}")
        }
    }

    fn ready_again(&self, kind: &str, name: &str) -> String {
        if self.zh() {
            format!("{kind}{name}已恢复就绪")
        } else {
            format!("{kind} {name} ready again")
        }
    }

    fn problem(&self, problem: NotReady) -> &'static str {
        let zh = self.zh();
        match problem {
            NotReady::PumpFault if zh => "水泵故障",
            NotReady::PumpOff if zh => "水泵关闭",
            NotReady::NotPotable if zh => "水质不可饮用",
            NotReady::PowerFault if zh => "故障",
            NotReady::Maintenance if zh => "检修中",
            NotReady::LowFuel if zh => "燃油不足目标天数",
            NotReady::LowBattery if zh => "电池电量低",
            NotReady::PumpFault => "pump fault",
            NotReady::PumpOff => "pump off",
            NotReady::NotPotable => "water not potable",
            NotReady::PowerFault => "fault",
            NotReady::Maintenance => "in maintenance",
            NotReady::LowFuel => "fuel short of the target days",
            NotReady::LowBattery => "battery low",
            // The rules leave these to the silent and offline alerts, so no readiness
            // alert carries them; shown by their ids, as any unknown problem was.
            NotReady::Silent => "silent",
            NotReady::NeverReported => "never_reported",
        }
    }

    fn silent(&self, name: &str, t: &str) -> String {
        if self.zh() {
            format!("{name}自 {t} 起无数据")
        } else {
            format!("{name} silent since {t}")
        }
    }

    fn reporting_again(&self, name: &str) -> String {
        if self.zh() {
            format!("{name}已恢复上报")
        } else {
            format!("{name} reporting again")
        }
    }

    fn offline(&self, name: &str, t: &str) -> String {
        if self.zh() {
            format!("{name}网关自 {t} 起离线")
        } else {
            format!("{name} gateway offline since {t}")
        }
    }

    fn online_again(&self, name: &str) -> String {
        if self.zh() {
            format!("{name}网关已恢复在线")
        } else {
            format!("{name} gateway back online")
        }
    }

    /// A manual facility's count is due: when it was last counted, if ever.
    fn count_due(&self, name: &str, last_counted: Option<&str>) -> String {
        match (self.zh(), last_counted) {
            (true, Some(t)) => format!("{name}请盘点（上次盘点 {t}）"),
            (true, None) => format!("{name}请盘点（从未盘点）"),
            (false, Some(t)) => format!("{name} count due (last counted {t})"),
            (false, None) => format!("{name} count due (never counted)"),
        }
    }

    /// An open shelter near its capacity: how full, in people and per cent (rounded
    /// down, so 89.6 % never reads as the 90 % line).
    fn shelter_full(&self, name: &str, occupancy: u64, capacity: u64) -> String {
        let pct = occupancy.saturating_mul(100) / capacity.max(1);
        if self.zh() {
            format!("避难场所{name}已满 {pct}%（{occupancy}/{capacity} 人）")
        } else {
            format!("shelter {name} {pct}% full ({occupancy} of {capacity} people)")
        }
    }

    fn shelter_has_room(&self, name: &str) -> String {
        if self.zh() {
            format!("避难场所{name}已有余位")
        } else {
            format!("shelter {name} has room again")
        }
    }

    /// A shelter converting longer than its registry allows: since when, and the
    /// allowance in hours (or minutes, below an hour).
    fn shelter_converting(&self, name: &str, since: &str, within_s: u64) -> String {
        let (n, zh_unit, en_unit) = if within_s >= 3600 {
            (num(within_s as f64 / 3600.0), "小时", "h")
        } else {
            (num(within_s as f64 / 60.0), "分钟", "min")
        };
        if self.zh() {
            format!("避难场所{name}自 {since} 起转换中，{n} {zh_unit}内未开放")
        } else {
            format!("shelter {name} converting since {since}, not open within {n}{en_unit}")
        }
    }

    /// A step of a shelter's activation past its due time (the time it was due by).
    fn activation_step_overdue(&self, shelter: &str, n: u32, step: &str, due: &str) -> String {
        if self.zh() {
            format!("避难场所{shelter}启用第 {n} 步「{step}」已超时（应于 {due} 前完成）")
        } else {
            format!("shelter {shelter} activation step {n} \"{step}\" overdue (due by {due})")
        }
    }

    fn activation_step_done(&self, shelter: &str, n: u32, step: &str) -> String {
        if self.zh() {
            format!("避难场所{shelter}启用第 {n} 步「{step}」已完成或启用已结束")
        } else {
            format!(
                "shelter {shelter} activation step {n} \"{step}\" done, or the activation ended"
            )
        }
    }

    fn shelter_converted(&self, name: &str) -> String {
        if self.zh() {
            format!("避难场所{name}已结束转换")
        } else {
            format!("shelter {name} no longer converting")
        }
    }

    /// Why an alert about a facility ended without the facility recovering.
    /// A cluster's own instance not heard for `minutes` (`None`: never since this
    /// instance started): the city speaks for it.
    fn cluster_silent(&self, name: &str, minutes: Option<i64>) -> String {
        let zh_name = zh_cluster(name);
        match (self.zh(), minutes) {
            (true, Some(m)) => format!("{zh_name}的 Stockpile 已 {m} 分钟无响应，市级接管通知"),
            (true, None) => format!("{zh_name}的 Stockpile 无响应，市级接管通知"),
            (false, Some(m)) => format!(
                "cluster {name}'s Stockpile silent for {m} min; the city now sends its notifications"
            ),
            (false, None) => format!(
                "cluster {name}'s Stockpile not heard; the city now sends its notifications"
            ),
        }
    }

    fn cluster_heard_again(&self, name: &str) -> String {
        if self.zh() {
            format!("{}的 Stockpile 已恢复，通知交还组团", zh_cluster(name))
        } else {
            format!("cluster {name}'s Stockpile heard again; its notifications are handed back")
        }
    }

    fn removed(&self, name: &str) -> String {
        if self.zh() {
            format!("{name}已从登记册中移除")
        } else {
            format!("{name} removed from the registry")
        }
    }

    fn counted(&self, name: &str) -> String {
        if self.zh() {
            format!("{name}已盘点")
        } else {
            format!("{name} counted")
        }
    }

    fn sms_since(&self, t: &str) -> String {
        if self.zh() {
            format!("，{t}起")
        } else {
            format!(", since {t}")
        }
    }

    fn sms_more(&self, n: usize) -> String {
        if self.zh() {
            format!("；另有{n}项")
        } else {
            format!("; +{n} more")
        }
    }

    fn sms_ack(&self, id: i64, link: Option<&str>) -> String {
        match (self.zh(), link) {
            (true, Some(link)) => format!("。确认：{link}"),
            (false, Some(link)) => format!(". Ack: {link}"),
            (true, None) => format!("。请在看板确认#{id}"),
            (false, None) => format!(". Ack #{id} on board"),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use store::{AckRow, AlertState};

    use super::*;
    use crate::alert::Alert;
    use crate::rules::CategoryNameTexts;
    use reserve::registry::TownIdx;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        // 06:05 UTC is 14:05 in Beijing.
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

    fn town(name: &str) -> TownNames {
        TownNames {
            id: "jingshan".into(),
            name: name.into(),
            cluster: "c01".into(),
            district: "dongcheng".into(),
            vulnerable: None,
            warning: None,
        }
    }

    fn reserve(id: i64, rule: Rule, category_name: &str, days: f64) -> Alert {
        Alert {
            id,
            key: format!("jingshan/reserve/{category_name}"),
            town: TownIdx(0),
            rule,
            subject: "water".into(),
            severity: rule.severity(),
            state: AlertState::Firing,
            detail: Detail::Reserve(ReserveDetail {
                category: "water".into(),
                category_name: category_name.into(),
                category_names: Default::default(),
                unit: "L".into(),
                stock: days * 90_000.0,
                days,
                target_days: 3.0,
                warn_days: 3.5,
                hours_to_target: Some(6.0),
                verified: true,
                never_reported: 0,
                facilities: 2,
                held_until: None,
                counted_by_hand: None,
            }),
            since: t(6, 5),
            created: t(6, 5),
            fired_at: Some(t(6, 5)),
            resolved_at: None,
            ack: None,
            escalation: 0,
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

    fn silent(id: i64) -> Alert {
        Alert {
            rule: Rule::FacilitySilent,
            severity: Severity::Warning,
            key: "jingshan/facility_silent/js-pu1".into(),
            subject: "js-pu1".into(),
            detail: Detail::Silent {
                facility: "js-pu1".into(),
                facility_name: "景山发电机1".into(),
                last_heard: t(5, 58),
            },
            ..reserve(id, Rule::FacilitySilent, "", 0.0)
        }
    }

    #[test]
    fn a_figure_resting_on_a_hand_count_says_so_and_how_old() {
        let counted = |category: &str| {
            let mut water = reserve(12, Rule::ReserveBelowTarget, category, 2.14);
            if let Detail::Reserve(r) = &mut water.detail {
                r.counted_by_hand = Some(t(3, 5));
            }
            water
        };
        let (water, water_en) = (counted("饮用水"), counted("Drinking water"));
        let later = |h: i64| t(3, 5) + chrono::Duration::minutes(h);
        // (read by, town, at, in the text, in the SMS)
        let cases = [
            (
                Lang::Zh,
                "景山街道",
                later(185),
                "（含人工盘点 3 小时前）",
                "，含人工盘点 3 小时前",
            ),
            (
                Lang::En,
                "Jingshan",
                later(185),
                " (includes a hand count from 3 h ago)",
                ", hand count 3 h ago",
            ),
            (
                Lang::Zh,
                "景山街道",
                later(40),
                "（含人工盘点 40 分钟前）",
                "，含人工盘点 40 分钟前",
            ),
            (
                Lang::En,
                "Jingshan",
                later(0),
                " (includes a hand count from 1 min ago)",
                ", hand count 1 min ago",
            ),
            (
                Lang::En,
                "Jingshan",
                later(3 * 24 * 60 + 70),
                " (includes a hand count from 3 d ago)",
                ", hand count 3 d ago",
            ),
        ];
        for (lang, name, now, text, sms) in cases {
            let alert = if lang == Lang::Zh { &water } else { &water_en };
            let items = [Item {
                alert,
                event: Event::Fired,
            }];
            let m = renderer()
                .for_contact("li.wei@example.org", &[12], now)
                .message(lang, &town(name), &items, &[]);
            assert!(m.text.contains(text), "{lang:?} at {now}: {}", m.text);
            assert!(m.html.contains(text), "{lang:?} at {now}: {}", m.html);
            assert!(m.sms.contains(sms), "{lang:?} at {now}: {}", m.sms);
            assert!(fits_one_sms(&m.sms), "{}", m.sms);
        }
        // Written for nobody in particular (the API's alert list): the time it was made.
        let summary = renderer().summary(Lang::En, &water, Event::Fired);
        assert!(
            summary.ends_with(" (includes a hand count from 11-24 11:05)"),
            "{summary}"
        );
        // A gateway's figure says nothing of the kind.
        let gateway = reserve(13, Rule::ReserveBelowTarget, "饮用水", 2.14);
        let plain = renderer().summary(Lang::Zh, &gateway, Event::Fired);
        assert!(!plain.contains("人工盘点"), "{plain}");
    }

    #[test]
    fn subjects_name_town_problem_days_and_target() {
        let water_zh = reserve(12, Rule::ReserveBelowTarget, "饮用水", 2.14);
        let water_en = reserve(12, Rule::ReserveBelowTarget, "Drinking water", 2.14);
        let mut resolved = reserve(12, Rule::ReserveNearTarget, "Drinking water", 3.62);
        resolved.state = AlertState::Resolved;
        resolved.resolved_at = Some(t(7, 0));
        let near = reserve(13, Rule::ReserveNearTarget, "Food", 3.2);
        let quiet = silent(14);
        let cases: Vec<(Lang, &str, Vec<Item<'_>>, &str)> = vec![
            (
                Lang::Zh,
                "景山街道",
                vec![Item {
                    alert: &water_zh,
                    event: Event::Fired,
                }],
                "[Stockpile] 严重：景山街道 饮用水仅剩 2.1 天（目标 3 天）",
            ),
            (
                Lang::En,
                "Jingshan",
                vec![Item {
                    alert: &water_en,
                    event: Event::Fired,
                }],
                "[Stockpile] CRITICAL: Jingshan Drinking water 2.1 days left (target 3)",
            ),
            (
                Lang::En,
                "Jingshan",
                vec![
                    Item {
                        alert: &near,
                        event: Event::Fired,
                    },
                    Item {
                        alert: &water_en,
                        event: Event::Raised,
                    },
                    Item {
                        alert: &quiet,
                        event: Event::Fired,
                    },
                ],
                "[Stockpile] CRITICAL: Jingshan Drinking water 2.1 days left (target 3) (+2 more)",
            ),
            (
                Lang::En,
                "Jingshan",
                vec![Item {
                    alert: &resolved,
                    event: Event::Resolved,
                }],
                "[Stockpile] RESOLVED: Jingshan Drinking water back to 3.6 days (target 3)",
            ),
            (
                Lang::Zh,
                "景山街道",
                vec![Item {
                    alert: &water_zh,
                    event: Event::Escalate,
                }],
                "[Stockpile] 逐级上报（严重）：景山街道 饮用水仅剩 2.1 天（目标 3 天）",
            ),
            (
                Lang::En,
                "Jingshan",
                vec![Item {
                    alert: &quiet,
                    event: Event::Remind,
                }],
                "[Stockpile] REMINDER, WARNING: Jingshan 景山发电机1 silent since 11-24 13:58",
            ),
        ];
        for (lang, name, items, want) in cases {
            let message = renderer().message(lang, &town(name), &items, &[]);
            assert_eq!(message.subject, want);
        }
    }

    #[test]
    fn a_body_lists_every_problem_since_when_and_how_to_acknowledge() {
        let water = reserve(12, Rule::ReserveBelowTarget, "饮用水", 2.14);
        let mut food = reserve(9, Rule::ReserveNearTarget, "食品", 3.3);
        food.ack = Some(AckRow {
            by: "李伟".into(),
            at: t(6, 30),
            note: String::new(),
        });
        let message = renderer().message(
            Lang::Zh,
            &town("景山街道"),
            &[Item {
                alert: &water,
                event: Event::Fired,
            }],
            &[&food],
        );
        for want in [
            "景山街道出现以下需要处理的问题：",
            "[新] [严重] 饮用水仅剩 2.1 天（目标 3 天），自 11-24 14:05 起",
            "确认告警：POST https://stockpile.example.org/api/v1/alerts/12/ack",
            "该街镇当前的其他问题：",
            "[警告] 食品剩 3.3 天，低于预警线 3.5 天（目标 3 天），自 11-24 14:05 起",
            "看板：https://stockpile.example.org/",
            "时间为 UTC+08:00.",
        ] {
            assert!(
                message.text.contains(want),
                "{want:?} not in\n{}",
                message.text
            );
        }
        for want in [
            "<html lang=\"zh-CN\">",
            "饮用水仅剩 2.1 天（目标 3 天），自 11-24 14:05 起",
            "/api/v1/alerts/12/ack",
            "<li>[警告] 食品剩 3.3 天",
        ] {
            assert!(
                message.html.contains(want),
                "{want:?} not in\n{}",
                message.html
            );
        }
        assert!(!message.html.contains("{{"), "{}", message.html);
    }

    #[test]
    fn html_escapes_registry_names() {
        let water = reserve(1, Rule::ReserveBelowTarget, "<b>water</b> & co", 1.0);
        let message = renderer().message(
            Lang::En,
            &town("A <town>"),
            &[Item {
                alert: &water,
                event: Event::Fired,
            }],
            &[],
        );
        assert!(message.html.contains("&lt;b&gt;water&lt;/b&gt; &amp; co"));
        assert!(message.html.contains("A &lt;town&gt;"));
        assert!(!message.html.contains("<b>water"));
    }

    #[test]
    fn sms_says_how_many_vulnerable_people_when_it_fits() {
        let water_zh = reserve(12, Rule::ReserveBelowTarget, "饮用水", 2.14);
        let water_en = reserve(12, Rule::ReserveBelowTarget, "Drinking water", 2.14);
        let three = AffectedPeople {
            people: 126,
            communities: vec![("a".into(), 100), ("b".into(), 25), ("c".into(), 1)],
        };
        let cases: Vec<(Lang, &str, &Alert, &str)> = vec![
            // Since when goes to make room; the count of other problems still fits.
            (
                Lang::Zh,
                "景山街道",
                &water_zh,
                "【Stockpile】严重：景山街道 饮用水仅剩 2.1 天（目标 3 天），涉及 3 村社 弱势 126 人；另有2项。请在看板确认#12",
            ),
            (
                Lang::En,
                "Jingshan",
                &water_en,
                "Stockpile CRITICAL: Jingshan Drinking water 2.1d left (target 3d); 3 communities, 126 vulnerable, since 11-24 14:05; +2 more. Ack #12 on board",
            ),
            // UCS-2 leaves no room beside the problem and the ack: left out, and the
            // rest is as it would be without it.
            (
                Lang::En,
                "景山街道",
                &water_en,
                "CRITICAL: 景山街道 Drinking water 2.1d left (target 3d). Ack #12 on board",
            ),
        ];
        for (lang, name, alert, want) in cases {
            let mut town = town(name);
            town.vulnerable = Some(three.clone());
            let items = [Item {
                alert,
                event: Event::Fired,
            }];
            let message = renderer().message(lang, &town, &items, &[alert, alert]);
            assert_eq!(message.sms, want);
            assert!(fits_one_sms(&message.sms));
        }
    }

    #[test]
    fn sms_fits_one_segment_in_either_alphabet() {
        let water_zh = reserve(12, Rule::ReserveBelowTarget, "饮用水", 2.14);
        let water_en = reserve(12, Rule::ReserveBelowTarget, "Drinking water", 2.14);
        let long_name = "Drinking water ".repeat(10);
        let long_en = reserve(12, Rule::ReserveNearTarget, long_name.trim(), 3.2);
        let cases: Vec<(Lang, &str, &Alert, usize, &str)> = vec![
            (
                Lang::Zh,
                "景山街道",
                &water_zh,
                0,
                "【Stockpile】严重：景山街道 饮用水仅剩 2.1 天（目标 3 天），11-24 14:05起。请在看板确认#12",
            ),
            (
                Lang::En,
                "Jingshan",
                &water_en,
                2,
                "Stockpile CRITICAL: Jingshan Drinking water 2.1d left (target 3d), since 11-24 14:05; +2 more. Ack #12 on board",
            ),
            // A Chinese town name makes an English SMS UCS-2, 70 units: since when, the
            // count of other problems and the sender go; the problem and the ack stay.
            (
                Lang::En,
                "景山街道",
                &water_en,
                2,
                "CRITICAL: 景山街道 Drinking water 2.1d left (target 3d). Ack #12 on board",
            ),
        ];
        for (lang, name, alert, more, want) in cases {
            let message = renderer().message(
                lang,
                &town(name),
                &[Item {
                    alert,
                    event: Event::Fired,
                }],
                &vec![alert; more],
            );
            assert_eq!(message.sms, want);
            assert!(fits_one_sms(&message.sms));
        }
        // Too long even alone: the problem is cut, in GSM-7 with "...", the ack kept.
        let message = renderer().message(
            Lang::En,
            &town("Jingshan"),
            &[Item {
                alert: &long_en,
                event: Event::Fired,
            }],
            &[],
        );
        assert!(fits_one_sms(&message.sms), "{}", message.sms);
        assert!(
            message
                .sms
                .starts_with("WARNING: Jingshan Drinking water Drinking water")
                && message.sms.ends_with("... Ack #12 on board")
                && message.sms.chars().count() >= 150,
            "{}",
            message.sms
        );
    }

    /// With links, the email's ack line and the SMS carry a link signed for the reader;
    /// a Chinese SMS that cannot hold the problem and the link in one segment takes two,
    /// the link whole.
    #[test]
    fn messages_carry_a_signed_link_for_their_reader() {
        use crate::link::{AckLinks, DEFAULT_LINK_TTL, LinkKey};
        let links = AckLinks::new(
            LinkKey::new(vec![9; 32]).unwrap(),
            "https://stockpile.example.org",
            DEFAULT_LINK_TTL,
        );
        let linked = renderer().with_links(Some(links.clone()));
        let water = reserve(12, Rule::ReserveBelowTarget, "饮用水", 2.14);
        let items = [Item {
            alert: &water,
            event: Event::Fired,
        }];
        let zh = linked.for_contact("李伟", &[12, 13], t(6, 0)).message(
            Lang::Zh,
            &town("景山街道"),
            &items,
            &[],
        );
        let link = zh
            .text
            .lines()
            .find_map(|l| l.trim().strip_prefix("确认告警："))
            .unwrap_or_else(|| panic!("no link in\n{}", zh.text));
        let token = link
            .strip_prefix("https://stockpile.example.org/ack/")
            .unwrap();
        let grant = links.verify(token, t(6, 0)).unwrap();
        assert_eq!(grant.alert_ids, [12]);
        assert!(grant.is_for("李伟"));
        assert!(zh.html.contains(link), "{}", zh.html);
        // The SMS's link names every alert of the message.
        let sms_link = zh.sms.split("确认：").nth(1).unwrap();
        let sms_token = sms_link
            .strip_prefix("https://stockpile.example.org/ack/")
            .unwrap();
        assert_eq!(
            links.verify(sms_token, t(6, 0)).unwrap().alert_ids,
            [12, 13]
        );
        assert!(
            zh.sms.contains("饮用水仅剩 2.1 天（目标 3 天）"),
            "{}",
            zh.sms
        );
        assert!(!fits_one_sms(&zh.sms) && fits_sms(&zh.sms, 2), "{}", zh.sms);
        // GSM-7 has room for both in one segment.
        let water_en = reserve(12, Rule::ReserveBelowTarget, "Drinking water", 2.14);
        let en = linked.for_contact("Li Wei", &[12], t(6, 0)).message(
            Lang::En,
            &town("Jingshan"),
            &[Item {
                alert: &water_en,
                event: Event::Fired,
            }],
            &[],
        );
        assert!(
            en.sms.contains(". Ack: https://stockpile.example.org/ack/"),
            "{}",
            en.sms
        );
        assert!(fits_one_sms(&en.sms), "{}", en.sms);
        // Without a reader (or without links) the message gives the API call, as before.
        let plain = linked.message(Lang::Zh, &town("景山街道"), &items, &[]);
        assert!(
            plain
                .text
                .contains("POST https://stockpile.example.org/api/v1/alerts/12/ack")
        );
        assert!(plain.sms.ends_with("请在看板确认#12"), "{}", plain.sms);
    }

    #[test]
    fn sms_length_counts_gsm_septets_and_ucs2_units() {
        let cases: &[(String, bool)] = &[
            ("a".repeat(160), true),
            ("a".repeat(161), false),
            // € is an extension character: two septets.
            (format!("{}€", "a".repeat(158)), true),
            (format!("{}€", "a".repeat(159)), false),
            ("景".repeat(70), true),
            ("景".repeat(71), false),
            // One Chinese character turns the whole text UCS-2.
            (format!("景{}", "a".repeat(69)), true),
            (format!("景{}", "a".repeat(70)), false),
        ];
        for (text, fits) in cases {
            assert_eq!(fits_one_sms(text), *fits, "{} chars", text.chars().count());
        }
        assert_eq!(
            compose_sms(&[("景".repeat(80), SMS_CORE)]),
            format!("{}…", "景".repeat(69))
        );
        assert_eq!(
            compose_sms(&[("a".repeat(200), SMS_CORE), (" ack".into(), 3)]),
            format!("{}... ack", "a".repeat(153))
        );
    }

    #[test]
    fn webhook_bodies_fit_robots_and_generic_receivers() {
        let water = reserve(12, Rule::ReserveBelowTarget, "饮用水", 2.14);
        let r = renderer();
        let items = [Item {
            alert: &water,
            event: Event::Fired,
        }];
        let message = r.message(Lang::Zh, &town("景山街道"), &items, &[]);
        let robot: serde_json::Value = serde_json::from_str(&r.webhook_body(
            "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=abc",
            &town("景山街道"),
            &items,
            &message,
        ))
        .unwrap();
        assert_eq!(robot["msgtype"], "text");
        let content = robot["text"]["content"].as_str().unwrap();
        assert!(
            content.starts_with("[Stockpile] 严重：景山街道 饮用水仅剩 2.1 天"),
            "{content}"
        );

        let generic: serde_json::Value = serde_json::from_str(&r.webhook_body(
            "https://hooks.example.org/stockpile",
            &town("景山街道"),
            &items,
            &message,
        ))
        .unwrap();
        assert_eq!(generic["event"], "fired");
        assert_eq!(generic["town"]["id"], "jingshan");
        assert_eq!(generic["alerts"][0]["rule"], "reserve_below_target");
        assert_eq!(generic["alerts"][0]["detail"]["days"], 2.14);
        assert_eq!(
            generic["alerts"][0]["ack_url"],
            "https://stockpile.example.org/api/v1/alerts/12/ack"
        );
    }

    #[test]
    fn robots_are_known_by_the_host_the_post_goes_to() {
        let cases = [
            (
                "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=abc",
                true,
            ),
            ("https://oapi.dingtalk.com/robot/send?access_token=x", true),
            ("https://oapi.dingtalk.com:443/robot/send", true),
            ("https://hooks.example.org/stockpile", false),
            ("https://hooks.example.org/?to=qyapi.weixin.qq.com", false),
            ("https://qyapi.weixin.qq.com.example.org/send", false),
            ("not a url", false),
        ];
        for (url, robot) in cases {
            assert_eq!(is_robot_url(url), robot, "{url}");
        }
    }

    #[test]
    fn numbers_read_like_people_write_them() {
        let cases = [
            (2.14, "2.1"),
            (3.0, "3"),
            (0.04, "0"),
            (12.96, "13"),
            (123.4, "123"),
        ];
        for (x, want) in cases {
            assert_eq!(num(x), want, "{x}");
        }
    }

    /// Every kind of message in both languages, as it read before the templates:
    /// subject, text, HTML, SMS and a robot webhook, byte for byte.
    #[test]
    fn messages_read_exactly_as_pinned() {
        let got = golden_messages();
        if std::env::var_os("STOCKPILE_BLESS").is_some() {
            std::fs::write(GOLDEN_PATH, &got).unwrap();
        }
        let want = std::fs::read_to_string(GOLDEN_PATH).unwrap();
        if got != want {
            let at = got
                .lines()
                .zip(want.lines())
                .position(|(g, w)| g != w)
                .unwrap_or(0);
            panic!(
                "line {}: got {:?}, want {:?}",
                at + 1,
                got.lines().nth(at),
                want.lines().nth(at)
            );
        }
    }

    const GOLDEN_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/messages.txt");

    /// One alert of each rule and detail kind, with names that need escaping.
    fn golden_alerts() -> Vec<Alert> {
        let water = reserve(1, Rule::ReserveBelowTarget, "饮用水 <\"A&B's\">", 2.14);
        let mut near = reserve(2, Rule::ReserveNearTarget, "Food", 3.2);
        near.ack = Some(AckRow {
            by: "O'Brien <ops>".into(),
            at: t(6, 30),
            note: String::new(),
        });
        let mut depleting = reserve(3, Rule::ReserveDepleting, "Fuel", 3.9);
        if let Detail::Reserve(r) = &mut depleting.detail {
            r.verified = false;
            r.hours_to_target = None;
        }
        let mut resolved = reserve(4, Rule::ReserveBelowTarget, "Water", 123.4);
        resolved.resolved_at = Some(t(7, 0));
        let readiness = |id, rule, problems: Vec<NotReady>| Alert {
            detail: Detail::Readiness {
                facility: "js-wp1".into(),
                facility_name: "景山水站1".into(),
                problems,
                runtime_h: Some(5.0),
            },
            ..reserve(id, rule, "", 0.0)
        };
        let offline = Alert {
            rule: Rule::GatewayOffline,
            detail: Detail::Offline {
                facility: "js-wh1".into(),
                facility_name: "Warehouse & co".into(),
                since: t(4, 0),
            },
            ..reserve(8, Rule::GatewayOffline, "", 0.0)
        };
        let mut counted = reserve(9, Rule::ReserveNearTarget, "Water", 3.3);
        if let Detail::Reserve(r) = &mut counted.detail {
            r.counted_by_hand = Some(t(3, 5));
        }
        vec![
            water,
            near,
            depleting,
            resolved,
            readiness(
                5,
                Rule::WaterPointNotReady,
                vec![NotReady::PumpFault, NotReady::NotPotable],
            ),
            readiness(
                6,
                Rule::PowerNotReady,
                vec![
                    NotReady::PumpOff,
                    NotReady::PowerFault,
                    NotReady::Maintenance,
                    NotReady::LowFuel,
                    NotReady::LowBattery,
                    NotReady::Silent,
                    NotReady::NeverReported,
                ],
            ),
            silent(7),
            offline,
            counted,
        ]
    }

    fn golden_messages() -> String {
        let alerts = golden_alerts();
        let plain = Renderer::new(
            None,
            FixedOffset::east_opt(0).unwrap(),
            "[S&P]",
            WebhookFormat::Robot,
        );
        let events = [
            Event::Fired,
            Event::Raised,
            Event::Remind,
            Event::Escalate,
            Event::Resolved,
        ];
        let mut out = String::new();
        let renderers = [renderer(), plain];
        for (r, renderer) in renderers.iter().enumerate() {
            for lang in [Lang::Zh, Lang::En] {
                for name in ["景山街道", "Jing <shan> & \"Co's\""] {
                    for (i, alert) in alerts.iter().enumerate() {
                        let event = events[(i + r) % events.len()];
                        let items = [Item { alert, event }];
                        let others: Vec<&Alert> = alerts.iter().skip(i + 1).take(i % 3).collect();
                        let message = renderer.message(lang, &town(name), &items, &others);
                        let hook = renderer.webhook_body(
                            "https://oapi.dingtalk.com/x",
                            &town(name),
                            &items,
                            &message,
                        );
                        out.push_str(&format!(
                            "==== {r} {lang:?} {name} {i} {event:?}\n{}\n---- text\n{}---- html\n{}\n---- sms\n{}\n---- hook\n{hook}\n",
                            message.subject, message.text, message.html, message.sms
                        ));
                    }
                }
            }
            let items: Vec<Item<'_>> = alerts
                .iter()
                .zip(events.iter().cycle())
                .map(|(alert, &event)| Item { alert, event })
                .collect();
            let message = renderer.message(Lang::En, &town("Jingshan"), &items, &[]);
            out.push_str(&format!(
                "==== {r} grouped\n{}\n---- text\n{}---- html\n{}\n---- sms\n{}\n",
                message.subject, message.text, message.html, message.sms
            ));
            // A fall in severity (to a warning line, to a forecast), after the rest so
            // that adding it left the lines above as they were.
            for lang in [Lang::Zh, Lang::En] {
                for alert in &alerts[1..3] {
                    let items = [Item {
                        alert,
                        event: Event::Lowered,
                    }];
                    let message = renderer.message(lang, &town("景山街道"), &items, &[]);
                    out.push_str(&format!(
                        "==== {r} {lang:?} lowered {}\n{}\n---- text\n{}---- html\n{}\n---- sms\n{}\n",
                        alert.id, message.subject, message.text, message.html, message.sms
                    ));
                }
            }
            // A shortfall resting on facilities that never reported says how many; the
            // category is named in the reader's language (棉被, not "Blankets").
            for lang in [Lang::Zh, Lang::En] {
                for (never, of, days) in [(3, 5, 1.2), (2, 2, 0.0)] {
                    let mut alert = reserve(9, Rule::ReserveBelowTarget, "Blankets", days);
                    if let Detail::Reserve(r) = &mut alert.detail {
                        (r.never_reported, r.facilities, r.verified) = (never, of, false);
                        r.category_names = CategoryNameTexts {
                            zh: Some("棉被".into()),
                            en: Some("Blankets".into()),
                        };
                    }
                    let items = [Item {
                        alert: &alert,
                        event: Event::Fired,
                    }];
                    let message = renderer.message(lang, &town("景山街道"), &items, &[]);
                    out.push_str(&format!(
                        "==== {r} {lang:?} unreported {never}/{of}\n{}\n---- text\n{}---- sms\n{}\n",
                        message.subject, message.text, message.sms
                    ));
                }
            }
        }
        out.push_str(&golden_count_due(&renderers));
        out.push_str(&golden_vulnerable(&renderers));
        out.push_str(&golden_shelters(&renderers));
        out.push_str(&golden_activation_steps(&renderers));
        out.push_str(&golden_cluster_silent(&renderers));
        out
    }

    /// `cluster_instance_silent` (docs/design.md#cluster-instance), fired and resolved,
    /// in both languages: what a cluster's and a district's contacts read when the city
    /// speaks for a silent cluster instance, and when it hands back.
    fn golden_cluster_silent(renderers: &[Renderer]) -> String {
        let rule = Rule::ClusterInstanceSilent;
        let alert = Alert {
            rule,
            key: "qianmen/cluster_instance_silent/c07".into(),
            subject: "c07".into(),
            detail: Detail::ClusterSilent {
                cluster: "c07".into(),
                cluster_name: "前门组团".into(),
                last_heard: Some(t(6, 0)),
            },
            fired_at: Some(t(6, 6)),
            ..reserve(14, rule, "", 0.0)
        };
        let mut out = String::new();
        for (r, renderer) in renderers.iter().enumerate() {
            for lang in [Lang::Zh, Lang::En] {
                for event in [Event::Fired, Event::Resolved] {
                    let items = [Item {
                        alert: &alert,
                        event,
                    }];
                    let message = renderer.message(lang, &town("前门街道"), &items, &[]);
                    out.push_str(&format!(
                        "==== {r} {lang:?} {rule} {event:?}\n{}\n---- text\n{}---- sms\n{}\n",
                        message.subject, message.text, message.sms
                    ));
                }
            }
        }
        out
    }

    /// A step of a shelter's activation overdue (the activation table, issue 16), fired
    /// and resolved, in both languages: what its contact reads.
    fn golden_activation_steps(renderers: &[Renderer]) -> String {
        let rule = Rule::ActivationStepOverdue;
        let alert = Alert {
            rule,
            key: format!("tiantan/{rule}/tt-sh1/7/2"),
            subject: "tt-sh1/7/2".into(),
            detail: Detail::ActivationStep {
                activation: 7,
                facility: "tt-sh1".into(),
                facility_name: "天坛体育馆 <1>".into(),
                step: 2,
                name: "清场并铺设地垫 Clear the floor, lay mats".into(),
                contact: "desk@example.org".into(),
                due_at: t(4, 15),
            },
            ..reserve(14, rule, "", 0.0)
        };
        let mut out = String::new();
        for (r, renderer) in renderers.iter().enumerate() {
            for lang in [Lang::Zh, Lang::En] {
                for event in [Event::Fired, Event::Resolved] {
                    let items = [Item {
                        alert: &alert,
                        event,
                    }];
                    let message = renderer.message(lang, &town("天坛街道"), &items, &[]);
                    out.push_str(&format!(
                        "==== {r} {lang:?} {} {event:?}\n{}\n---- text\n{}---- sms\n{}\n",
                        alert.rule, message.subject, message.text, message.sms
                    ));
                }
            }
        }
        out
    }

    /// A message naming the communities whose vulnerable people the town's problems
    /// reach, in every channel's form: after everything else, so that adding it left
    /// the lines above as they were.
    fn golden_vulnerable(renderers: &[Renderer]) -> String {
        let alert = reserve(12, Rule::ReserveBelowTarget, "饮用水", 1.5);
        let mut town = town("景山街道");
        town.vulnerable = Some(AffectedPeople {
            people: 52,
            communities: vec![
                ("三眼井社区".into(), 40),
                ("吉市口 <A&B>".into(), 11),
                ("皇城根社区".into(), 1),
            ],
        });
        let mut out = String::new();
        for (r, renderer) in renderers.iter().enumerate() {
            for lang in [Lang::Zh, Lang::En] {
                let items = [Item {
                    alert: &alert,
                    event: Event::Fired,
                }];
                let message = renderer.message(lang, &town, &items, &[]);
                out.push_str(&format!(
                    "==== {r} {lang:?} vulnerable\n{}\n---- text\n{}---- html\n{}\n---- sms\n{}\n",
                    message.subject, message.text, message.html, message.sms
                ));
            }
        }
        out
    }

    /// A manual facility's count due, counted once or never, in every channel's form:
    /// after everything else, so that adding it left the lines above as they were.
    fn golden_count_due(renderers: &[Renderer]) -> String {
        let due = |id, last_counted| Alert {
            rule: Rule::CountDue,
            key: "jingshan/count_due/js-wh9".into(),
            subject: "js-wh9".into(),
            detail: Detail::CountDue {
                facility: "js-wh9".into(),
                facility_name: "景山社区库 <9>".into(),
                last_counted,
                held_until: None,
            },
            ..reserve(id, Rule::CountDue, "", 0.0)
        };
        let alerts = [due(10, Some(t(5, 30))), due(11, None)];
        let mut out = String::new();
        for (r, renderer) in renderers.iter().enumerate() {
            for lang in [Lang::Zh, Lang::En] {
                for alert in &alerts {
                    for event in [Event::Fired, Event::Remind, Event::Resolved] {
                        let items = [Item { alert, event }];
                        let message = renderer.message(lang, &town("景山街道"), &items, &[]);
                        out.push_str(&format!(
                            "==== {r} {lang:?} count_due {} {event:?}\n{}\n---- text\n{}---- html\n{}\n---- sms\n{}\n",
                            alert.id, message.subject, message.text, message.html, message.sms
                        ));
                    }
                }
            }
        }
        out
    }

    /// A shelter filling up and one not open within its conversion time (issue 16),
    /// fired and resolved, in both languages.
    fn golden_shelters(renderers: &[Renderer]) -> String {
        let shelter = |id, rule, detail| Alert {
            rule,
            key: format!("tiantan/{rule}/tt-sh1"),
            subject: "tt-sh1".into(),
            detail,
            ..reserve(id, rule, "", 0.0)
        };
        let alerts = [
            shelter(
                12,
                Rule::ShelterNearCapacity,
                Detail::ShelterFull {
                    facility: "tt-sh1".into(),
                    facility_name: "天坛体育馆 <1>".into(),
                    occupancy: 956,
                    capacity: 1000,
                },
            ),
            shelter(
                13,
                Rule::ShelterNotReady,
                Detail::ShelterConverting {
                    facility: "tt-sh1".into(),
                    facility_name: "天坛体育馆 <1>".into(),
                    activating_since: t(3, 15),
                    convert_within_s: 2 * 3600,
                },
            ),
        ];
        let mut out = String::new();
        for (r, renderer) in renderers.iter().enumerate() {
            for lang in [Lang::Zh, Lang::En] {
                for alert in &alerts {
                    for event in [Event::Fired, Event::Resolved] {
                        let items = [Item { alert, event }];
                        let message = renderer.message(lang, &town("天坛街道"), &items, &[]);
                        out.push_str(&format!(
                            "==== {r} {lang:?} {} {event:?}\n{}\n---- text\n{}---- sms\n{}\n",
                            alert.rule, message.subject, message.text, message.sms
                        ));
                    }
                }
            }
        }
        out
    }

    /// A registry name that looks like template syntax is printed, never evaluated
    /// (what the hand-rolled `fill` pinned as "substitutes once").
    #[test]
    fn names_that_look_like_templates_are_printed_as_written() {
        let water = reserve(1, Rule::ReserveBelowTarget, "{{ subject }}", 1.0);
        let message = renderer().message(
            Lang::En,
            &town("{% if true %}X{% endif %}"),
            &[Item {
                alert: &water,
                event: Event::Fired,
            }],
            &[],
        );
        for body in [&message.text, &message.html] {
            assert!(body.contains("{{ subject }} 1 days left"), "{body}");
            assert!(
                body.contains("{% if true %}X{% endif %} has problems"),
                "{body}"
            );
        }
    }
}
