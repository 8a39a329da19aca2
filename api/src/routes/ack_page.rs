//! The page a signed acknowledgement link opens (docs/design.md#acknowledging-from-a-phone):
//! `GET /ack/{token}` lists the link's alerts in the contact's language with one
//! button; `POST /ack/{token}` (the button) acknowledges every one still open, as that
//! contact. Routed when links are configured.
//!
//! The token is the credential, so it appears in no log line and no error message; the
//! page tells browsers to send no `Referer` (which would carry it to another site) and
//! caches nothing. A refused link gets a page saying why, with a 4xx status, and never
//! acknowledges anything. The POST carries the same token, which is what makes it
//! safe against cross-site requests: a forger would need the token.

use alerts::link::{AckGrant, LinkError};
use alerts::{AlertStatus, AlertView};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, FixedOffset, Utc};
use html_escape::encode_text as esc;
use reserve::registry::{Contact, Lang};

use crate::AppState;
use crate::ack::{Outcome, Via, acknowledge};

/// The note an acknowledgement through a link carries.
const LINK_NOTE: &str = "acknowledged through a signed link";

/// The page of a link: its alerts and one button to acknowledge those still open.
#[utoipa::path(get, path = "/ack/{token}", tag = "alerts",
    params(("token" = String, Path, description = "The signed link's token, as a message quoted it")),
    responses(
        (status = 200, description = "A page, in the contact's language, listing the link's alerts (town, problem, since, state) with one button", content_type = "text/html", body = String),
        (status = 403, description = "Not a link of ours (tampered, truncated) or its contact left the registry: a page saying so", content_type = "text/html", body = String),
        (status = 410, description = "The link expired: a page saying so", content_type = "text/html", body = String),
    ))]
pub(super) async fn ack_page(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let (contact, grant, offset) = match verify(&state, &token) {
        Ok(verified) => verified,
        Err(refused) => return refusal(refused),
    };
    match alerts_of(&state, &grant).await {
        Ok(alerts) => page(
            StatusCode::OK,
            contact.lang,
            &listing_page(&contact, &alerts, offset),
        ),
        Err(e) => failure(e),
    }
}

/// The button: acknowledges every alert of the link still open, as its contact, and
/// shows what became of each.
#[utoipa::path(post, path = "/ack/{token}", tag = "alerts",
    params(("token" = String, Path, description = "The signed link's token")),
    responses(
        (status = 200, description = "A page saying what was acknowledged (and what was already, or resolved)", content_type = "text/html", body = String),
        (status = 403, description = "Not a link of ours, or its contact left the registry: nothing acknowledged", content_type = "text/html", body = String),
        (status = 410, description = "The link expired: nothing acknowledged", content_type = "text/html", body = String),
    ))]
pub(super) async fn ack_by_link(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Response {
    let (contact, grant, offset) = match verify(&state, &token) {
        Ok(verified) => verified,
        Err(refused) => return refusal(refused),
    };
    match acknowledge(
        &state,
        &contact.name,
        Via::Link,
        &grant.alert_ids,
        LINK_NOTE,
    )
    .await
    {
        Ok(outcome) => page(
            StatusCode::OK,
            contact.lang,
            &outcome_page(&contact, &outcome, offset),
        ),
        Err(e) => failure(e),
    }
}

/// The contact and grant of a good link, or why it is refused.
fn verify(state: &AppState, token: &str) -> Result<(Contact, AckGrant, FixedOffset), Refusal> {
    let Some(pages) = state.ack_pages() else {
        return Err(Refusal::NotOurs);
    };
    let grant = match pages.links.verify(token, Utc::now()) {
        Ok(grant) => grant,
        Err(LinkError::Expired(grant)) => {
            let lang = contact_of(state, &grant).map_or(Lang::Zh, |c| c.lang);
            tracing::info!(message = "Expired acknowledgement link refused.", expired = %grant.expires);
            return Err(Refusal::Expired(lang, grant.expires, pages.utc_offset));
        }
        Err(e) => {
            tracing::warn!(message = "Acknowledgement link refused.", reason = %e);
            return Err(Refusal::NotOurs);
        }
    };
    match contact_of(state, &grant) {
        Some(contact) => Ok((contact, grant, pages.utc_offset)),
        None => {
            tracing::warn!(
                message = "Acknowledgement link refused: its contact is not in the registry."
            );
            Err(Refusal::ContactGone)
        }
    }
}

/// The one contact of the registry the grant was made for (none when two share a tag:
/// the link cannot say whom it is for). The tag covers the name and addresses
/// ([`alerts::link::contact_key`]): namesakes are told apart.
fn contact_of(state: &AppState, grant: &AckGrant) -> Option<Contact> {
    let ledger = state.ledger();
    let mut matching = ledger
        .registry()
        .contacts
        .iter()
        .filter(|c| grant.is_for(&alerts::link::contact_key(c)));
    match (matching.next(), matching.next()) {
        (Some(contact), None) => Some(contact.clone()),
        _ => None,
    }
}

async fn alerts_of(state: &AppState, grant: &AckGrant) -> Result<Vec<AlertView>, crate::ApiError> {
    let alerts = state
        .alerts()
        .ok_or_else(|| crate::ApiError::Internal("link pages without alerts".into()))?;
    let mut found = Vec::new();
    for &id in &grant.alert_ids {
        if let Some(alert) = alerts.alert(id).await? {
            found.push(alert);
        }
    }
    Ok(found)
}

enum Refusal {
    NotOurs,
    ContactGone,
    Expired(Lang, DateTime<Utc>, FixedOffset),
}

fn refusal(refusal: Refusal) -> Response {
    match refusal {
        Refusal::NotOurs => page(
            StatusCode::FORBIDDEN,
            Lang::Zh,
            "<h1>链接无效 · This link is not valid</h1>\
             <p>这不是本系统发出的确认链接，或链接不完整。请使用告警消息中的完整链接。</p>\
             <p>This is not an acknowledgement link we sent, or it is incomplete. Use the whole link from your alert message.</p>",
        ),
        Refusal::ContactGone => page(
            StatusCode::FORBIDDEN,
            Lang::Zh,
            "<h1>链接已失效 · This link no longer works</h1>\
             <p>该链接的联系人已不在名册中。</p>\
             <p>The contact this link was sent to is no longer in the registry.</p>",
        ),
        Refusal::Expired(lang, at, offset) => {
            let at = time(at, offset);
            let body = match lang {
                Lang::Zh => format!(
                    "<h1>链接已过期</h1><p>该链接已于 {at} 过期，未确认任何告警。请使用最近一条告警消息中的链接，或回复短信确认。</p>"
                ),
                Lang::En => format!(
                    "<h1>This link has expired</h1><p>It expired at {at}; nothing was acknowledged. Use the link in your latest alert message, or reply to the SMS.</p>"
                ),
            };
            page(StatusCode::GONE, lang, &body)
        }
    }
}

/// The alerts of a link and, when any is still open, the button.
fn listing_page(contact: &Contact, alerts: &[AlertView], offset: FixedOffset) -> String {
    let open = alerts.iter().filter(|a| can_ack(a)).count();
    let name = esc(&contact.name);
    let zh = contact.lang == Lang::Zh;
    let mut body = if zh {
        format!("<h1>确认告警</h1><p>{name}，以下告警发给了您：</p>")
    } else {
        format!("<h1>Acknowledge alerts</h1><p>{name}, these alerts were sent to you:</p>")
    };
    body.push_str(&list(alerts, contact.lang, offset));
    body.push_str(&match (zh, open) {
        (true, 0) => "<p>没有需要确认的告警。</p>".to_owned(),
        (false, 0) => "<p>Nothing left to acknowledge.</p>".to_owned(),
        (true, n) => format!(
            "<form method=\"post\"><button type=\"submit\">确认这 {n} 条告警</button></form>\
             <p class=\"note\">确认后将停止提醒和逐级上报。确认人：{name}。</p>"
        ),
        (false, n) => format!(
            "<form method=\"post\"><button type=\"submit\">Acknowledge {n} alert{}</button></form>\
             <p class=\"note\">Acknowledging stops reminders and escalation. You acknowledge as {name}.</p>",
            if n == 1 { "" } else { "s" }
        ),
    });
    body.push_str(&zone_note(contact.lang, offset));
    body
}

/// What the button did.
fn outcome_page(contact: &Contact, outcome: &Outcome, offset: FixedOffset) -> String {
    let name = esc(&contact.name);
    let n = outcome.acked.len();
    let mut body = match (contact.lang, n) {
        (Lang::Zh, 0) => "<h1>没有新的确认</h1><p>这些告警已被确认或已恢复。</p>".to_owned(),
        (Lang::En, 0) => "<h1>Nothing acknowledged</h1><p>These alerts were already acknowledged or resolved.</p>".to_owned(),
        (Lang::Zh, n) => format!("<h1>已确认 {n} 条告警</h1><p>确认人：{name}。提醒和逐级上报已停止。</p>"),
        (Lang::En, n) => format!(
            "<h1>Acknowledged {n} alert{}</h1><p>As {name}. Their reminders and escalation stop.</p>",
            if n == 1 { "" } else { "s" }
        ),
    };
    let all: Vec<AlertView> = outcome
        .acked
        .iter()
        .chain(&outcome.already)
        .chain(&outcome.resolved)
        .cloned()
        .collect();
    body.push_str(&list(&all, contact.lang, offset));
    body.push_str(&zone_note(contact.lang, offset));
    body
}

fn can_ack(alert: &AlertView) -> bool {
    alert.state != AlertStatus::Resolved && alert.acknowledged.is_none()
}

/// Alerts as a list: town, problem, since, state.
fn list(alerts: &[AlertView], lang: Lang, offset: FixedOffset) -> String {
    let mut out = String::from("<ul>");
    for alert in alerts {
        let (summary, since) = match lang {
            Lang::Zh => (&alert.summary.zh, "开始于"),
            Lang::En => (&alert.summary.en, "since"),
        };
        out.push_str(&format!(
            "<li><b>{}</b> #{} {}<br><small>{since} {} · {}</small></li>",
            esc(&alert.town_name),
            alert.id,
            esc(summary),
            time(alert.since, offset),
            state_text(alert, lang, offset),
        ));
    }
    out.push_str("</ul>");
    out
}

fn state_text(alert: &AlertView, lang: Lang, offset: FixedOffset) -> String {
    let zh = lang == Lang::Zh;
    if alert.state == AlertStatus::Resolved {
        return if zh { "已恢复" } else { "resolved" }.to_owned();
    }
    match &alert.acknowledged {
        Some(ack) => {
            let by = esc(ack.by.as_deref().unwrap_or("?")).into_owned();
            let at = time(ack.at, offset);
            if zh {
                format!("已由 {by} 于 {at} 确认")
            } else {
                format!("acknowledged by {by} at {at}")
            }
        }
        None if zh => "<strong>未确认</strong>".to_owned(),
        None => "<strong>not acknowledged</strong>".to_owned(),
    }
}

fn zone_note(lang: Lang, offset: FixedOffset) -> String {
    match lang {
        Lang::Zh => format!("<p class=\"note\">时间为 UTC{offset}。</p>"),
        Lang::En => format!("<p class=\"note\">Times are UTC{offset}.</p>"),
    }
}

fn time(t: DateTime<Utc>, offset: FixedOffset) -> String {
    t.with_timezone(&offset).format("%m-%d %H:%M").to_string()
}

/// An error of the store or the engine, as a page: the officer should try again.
fn failure(e: crate::ApiError) -> Response {
    tracing::error!(message = "Acknowledgement page failed.", error = %e);
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        Lang::Zh,
        "<h1>暂时无法处理 · Temporarily unavailable</h1>\
         <p>请稍后重试。</p><p>Please try again in a moment.</p>",
    )
}

/// A whole page around `body` (already escaped where it holds text from outside).
fn page(status: StatusCode, lang: Lang, body: &str) -> Response {
    let html_lang = match lang {
        Lang::Zh => "zh-CN",
        Lang::En => "en",
    };
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"{html_lang}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\"><title>Stockpile</title><style>\
         body{{font-family:-apple-system,'PingFang SC','Microsoft YaHei',sans-serif;margin:1em;max-width:40em;color:#1f2328}}\
         h1{{font-size:1.3em}}li{{margin:.6em 0}}small,.note{{color:#57606a}}\
         button{{font-size:1.2em;padding:.7em 1.2em;width:100%;background:#1f6feb;color:#fff;border:0;border-radius:6px}}\
         </style></head><body>{body}</body></html>\n"
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        html,
    )
        .into_response()
}
