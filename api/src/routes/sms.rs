//! The SMS provider's inbound webhook (docs/design.md#acknowledging-from-a-phone): an
//! officer replies to an alert SMS and the provider posts the reply here, with Twilio's
//! form fields (`From`, `Body`, …). `ACK 123`, `确认 123` or just `1` (the alerts of the
//! last message sent to that phone) acknowledges as the contact whose phone sent it;
//! the answer is TwiML, which the provider sends back as an SMS.
//!
//! A request must carry Twilio's `X-Twilio-Signature`, made with `[sms]
//! inbound_auth_token`: base64 of HMAC-SHA1(auth token, the URL called ‖ each
//! parameter's name and value, sorted by name). The URL is `[api] public_url` plus the
//! path and query, since the provider called the public address, not the listen one.
//! Without a token every reply is refused (403): nothing could tell the provider's
//! POST from a forged one.

use std::sync::atomic::Ordering::Relaxed;

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use reserve::registry::{Contact, Lang};
use secrecy::ExposeSecret as _;
use sha1::Sha1;
use subtle::ConstantTimeEq as _;

use crate::AppState;
use crate::ack::{Outcome, Via, acknowledge, covers};
use crate::error::{ApiError, ErrorBody};

/// The header Twilio signs its requests with.
const SIGNATURE_HEADER: &str = "x-twilio-signature";
/// Alert ids one reply may name: a reply is typed on a phone.
const MAX_REPLY_IDS: usize = 20;

/// What a reply asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `1`, `ACK`, `确认`: the alerts of the last message sent to this phone.
    LastMessage,
    /// `ACK 123`, `确认 123 124`, `#123`.
    Alerts(Vec<i64>),
    /// Anything else.
    Unknown,
}

/// Receives an SMS reply and acknowledges what it names, as the contact whose phone
/// sent it. Answers TwiML in the contact's language saying what was acknowledged, or
/// why not (unknown number, no such alert, not their town).
#[utoipa::path(post, path = "/api/v1/sms/inbound", tag = "alerts",
    request_body(content = String, content_type = "application/x-www-form-urlencoded",
        description = "Twilio's inbound message fields: `From` (the sender's number), `Body` (the text), and others, which are ignored"),
    responses(
        (status = 200, description = "TwiML: `<Response><Message>…</Message></Response>`, the SMS answered to the sender", content_type = "text/xml", body = String),
        (status = 403, description = "`X-Twilio-Signature` missing or wrong, or no `[sms] inbound_auth_token` configured to check it with (`forbidden`); nothing acknowledged", body = ErrorBody),
        (status = 413, description = "Body over 16 KiB (`body_too_large`)", body = ErrorBody),
    ))]
pub(super) async fn sms_inbound(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    check_signature(&state, &uri, &headers, &params)?;
    let field = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    };
    let (from, text) = (field("From"), field("Body"));
    let Some(contact) = contact_with_phone(&state, from) else {
        tracing::info!(message = "SMS reply from a number no contact has.");
        return Ok(twiml(
            "此号码不在联络名册中，无法确认告警。This number is not a registered contact; nothing was acknowledged.",
        ));
    };
    let answer = answer(&state, &contact, text).await?;
    Ok(twiml(&answer))
}

/// Refuses a request without a good signature, and every request when no auth token
/// is configured: an unsigned POST could come from anyone who reaches the API, and
/// would acknowledge alerts as whichever contact's number it names.
fn check_signature(
    state: &AppState,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Result<(), ApiError> {
    let webhook = state
        .sms_inbound()
        .ok_or_else(|| ApiError::Internal("SMS inbound routed without its settings".into()))?;
    let inbound = &webhook.settings;
    let Some(token) = &inbound.auth_token else {
        webhook.refused_no_token.fetch_add(1, Relaxed);
        tracing::warn!(
            message = "SMS reply refused: sms.inbound_auth_token is not set, so no reply can be verified."
        );
        return Err(ApiError::Forbidden(
            "SMS replies are off: the service has no [sms] inbound_auth_token to verify \
             the provider's X-Twilio-Signature with"
                .into(),
        ));
    };
    let base = inbound
        .public_url
        .as_deref()
        .unwrap_or("")
        .trim_end_matches('/');
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let expected = twilio_signature(token.expose_secret(), &format!("{base}{path}"), params);
    let presented = headers
        .get(SIGNATURE_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if bool::from(expected.as_bytes().ct_eq(presented)) {
        Ok(())
    } else {
        webhook.refused_bad_signature.fetch_add(1, Relaxed);
        tracing::warn!(message = "SMS reply refused: X-Twilio-Signature missing or wrong.");
        Err(ApiError::Forbidden(
            "X-Twilio-Signature is missing or does not match this request".into(),
        ))
    }
}

/// Twilio's request signature: base64(HMAC-SHA1(token, url ‖ name₁ value₁ ‖ …)), the
/// parameters sorted by name.
pub(crate) fn twilio_signature(token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(token.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

/// The contact whose phone is `from` (the first, if two share it).
fn contact_with_phone(state: &AppState, from: &str) -> Option<Contact> {
    let from = normalise_phone(from)?;
    let ledger = state.ledger();
    ledger
        .registry()
        .contacts
        .iter()
        .find(|c| c.phone.as_deref().and_then(normalise_phone).as_deref() == Some(&from))
        .cloned()
}

/// A phone number as E.164: spaces, dashes, dots and brackets dropped, `00` read as
/// `+`, and a Chinese mobile number without its country code (`138 0000 0000`) given
/// `+86`. `None` for something that is no number.
pub(crate) fn normalise_phone(raw: &str) -> Option<String> {
    let kept: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '\u{a0}'))
        .collect();
    let (plus, digits) = match kept.strip_prefix('+') {
        Some(rest) => (true, rest.to_owned()),
        None => match kept.strip_prefix("00") {
            Some(rest) => (true, rest.to_owned()),
            None => (false, kept),
        },
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(if plus {
        format!("+{digits}")
    } else if digits.len() == 11 && digits.starts_with('1') {
        format!("+86{digits}")
    } else if digits.len() == 13 && digits.starts_with("86") {
        format!("+{digits}")
    } else {
        digits
    })
}

/// What a reply's text asks for.
pub(crate) fn parse_reply(text: &str) -> Reply {
    let text = text.trim();
    let lower = text.to_lowercase();
    let (keyword, rest) = ["ack", "确认", "ok"]
        .iter()
        .find_map(|k| lower.strip_prefix(k).map(|rest| (true, rest)))
        .unwrap_or((false, lower.as_str()));
    let words: Vec<&str> = rest
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '，' | '、' | '#' | ':' | '：'))
        .filter(|w| !w.is_empty())
        .collect();
    let ids: Option<Vec<i64>> = words.iter().map(|w| w.parse::<i64>().ok()).collect();
    match ids {
        Some(ids) if ids.is_empty() && keyword => Reply::LastMessage,
        Some(ids) if ids == [1] && !keyword && !text.contains('#') => Reply::LastMessage,
        Some(ids) if !ids.is_empty() && ids.len() <= MAX_REPLY_IDS => Reply::Alerts(ids),
        _ => Reply::Unknown,
    }
}

/// Acknowledges what the reply names and says what happened, in the contact's language.
async fn answer(state: &AppState, contact: &Contact, text: &str) -> Result<String, ApiError> {
    let zh = contact.lang == Lang::Zh;
    let ids = match parse_reply(text) {
        Reply::Unknown => {
            return Ok(if zh {
                "未能识别。回复 1 确认最近一条告警短信中的告警，或回复“确认 告警编号”，如：确认 123"
                    .into()
            } else {
                "Not understood. Reply 1 to acknowledge the alerts of the latest alert SMS, or ACK and the alert number, e.g. ACK 123".into()
            });
        }
        Reply::LastMessage => match last_message_alerts(state, contact).await? {
            Some(ids) => ids,
            None => {
                return Ok(if zh {
                    "没有发给您的告警短信可确认。".into()
                } else {
                    "No alert SMS was sent to you to acknowledge.".into()
                });
            }
        },
        Reply::Alerts(ids) => {
            let (theirs, refused) = split_by_scope(state, contact, &ids).await?;
            if theirs.is_empty() {
                return Ok(refused_text(zh, &refused));
            }
            let outcome = acknowledge(state, &contact.name, Via::Sms, &theirs, text).await?;
            return Ok(format!(
                "{}{}",
                outcome_text(zh, &outcome),
                refused_text(zh, &refused)
            ));
        }
    };
    let outcome = acknowledge(state, &contact.name, Via::Sms, &ids, text).await?;
    Ok(outcome_text(zh, &outcome))
}

/// The alerts of the last SMS sent to the contact's phone.
async fn last_message_alerts(
    state: &AppState,
    contact: &Contact,
) -> Result<Option<Vec<i64>>, ApiError> {
    let Some(phone) = contact.phone.clone() else {
        return Ok(None);
    };
    let last = state
        .with_store(move |s| s.last_notification_to("sms", &phone))
        .await?;
    Ok(last.map(|n| n.alert_ids))
}

/// Which alerts named by id the contact may acknowledge (their scope covers the town),
/// and the others with why not.
async fn split_by_scope(
    state: &AppState,
    contact: &Contact,
    ids: &[i64],
) -> Result<(Vec<i64>, Vec<(i64, bool)>), ApiError> {
    let alerts = state
        .alerts()
        .ok_or_else(|| ApiError::Internal("SMS inbound without alerts".into()))?;
    let (mut theirs, mut refused) = (Vec::new(), Vec::new());
    for &id in ids {
        match alerts.alert(id).await? {
            None => refused.push((id, false)),
            Some(alert) if !covers(state.ledger().registry(), contact, &alert.town) => {
                refused.push((id, true));
            }
            Some(_) => theirs.push(id),
        }
    }
    Ok((theirs, refused))
}

fn numbers(alerts: &[alerts::AlertView]) -> String {
    alerts
        .iter()
        .map(|a| format!("#{}", a.id))
        .collect::<Vec<_>>()
        .join(" ")
}

fn outcome_text(zh: bool, outcome: &Outcome) -> String {
    let mut parts = Vec::new();
    if let Some(first) = outcome.acked.first() {
        parts.push(if zh {
            format!(
                "已确认 {}（{}）。",
                numbers(&outcome.acked),
                first.town_name
            )
        } else {
            format!(
                "Acknowledged {} ({}).",
                numbers(&outcome.acked),
                first.town_name
            )
        });
    }
    if !outcome.already.is_empty() {
        parts.push(if zh {
            format!("{} 此前已确认。", numbers(&outcome.already))
        } else {
            format!("{} already acknowledged.", numbers(&outcome.already))
        });
    }
    if !outcome.resolved.is_empty() {
        parts.push(if zh {
            format!("{} 已恢复。", numbers(&outcome.resolved))
        } else {
            format!("{} already resolved.", numbers(&outcome.resolved))
        });
    }
    if !outcome.missing.is_empty() {
        parts.push(missing_text(zh, &outcome.missing));
    }
    if parts.is_empty() {
        parts.push(
            if zh {
                "没有可确认的告警。"
            } else {
                "Nothing to acknowledge."
            }
            .into(),
        );
    }
    parts.join(" ")
}

fn missing_text(zh: bool, ids: &[i64]) -> String {
    let ids = ids
        .iter()
        .map(|i| format!("#{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    if zh {
        format!("没有告警 {ids}。")
    } else {
        format!("No alert {ids}.")
    }
}

/// Why named alerts were not acknowledged: (id, exists but not the contact's town).
fn refused_text(zh: bool, refused: &[(i64, bool)]) -> String {
    let missing: Vec<i64> = refused
        .iter()
        .filter(|(_, e)| !e)
        .map(|(i, _)| *i)
        .collect();
    let foreign: Vec<String> = refused
        .iter()
        .filter(|(_, e)| *e)
        .map(|(i, _)| format!("#{i}"))
        .collect();
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(missing_text(zh, &missing));
    }
    if !foreign.is_empty() {
        parts.push(if zh {
            format!("{} 不属于您负责的街镇，未确认。", foreign.join(" "))
        } else {
            format!(
                "{} is not in your towns; not acknowledged.",
                foreign.join(" ")
            )
        });
    }
    parts.join(" ")
}

/// The answer as TwiML, escaped.
fn twiml(text: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>{}</Message></Response>",
        html_escape::encode_text(text)
    );
    ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_read_as_officers_type_them() {
        let cases: &[(&str, Reply)] = &[
            ("1", Reply::LastMessage),
            (" 1 ", Reply::LastMessage),
            ("ACK", Reply::LastMessage),
            ("确认", Reply::LastMessage),
            ("ACK 123", Reply::Alerts(vec![123])),
            ("ack #123", Reply::Alerts(vec![123])),
            ("确认 123", Reply::Alerts(vec![123])),
            ("确认123、124", Reply::Alerts(vec![123, 124])),
            ("ACK 1", Reply::Alerts(vec![1])),
            ("#1", Reply::Alerts(vec![1])),
            ("42", Reply::Alerts(vec![42])),
            ("hello", Reply::Unknown),
            ("ACK twelve", Reply::Unknown),
            ("", Reply::Unknown),
        ];
        for (text, want) in cases {
            assert_eq!(&parse_reply(text), want, "{text:?}");
        }
    }

    #[test]
    fn phone_numbers_compare_as_e164() {
        let cases = [
            ("+8613800000000", Some("+8613800000000")),
            ("+86 138 0000 0000", Some("+8613800000000")),
            ("008613800000000", Some("+8613800000000")),
            ("13800000000", Some("+8613800000000")),
            ("138-0000-0000", Some("+8613800000000")),
            ("8613800000000", Some("+8613800000000")),
            ("+1 (415) 555-0100", Some("+14155550100")),
            ("", None),
            ("not a number", None),
        ];
        for (raw, want) in cases {
            assert_eq!(normalise_phone(raw).as_deref(), want, "{raw:?}");
        }
    }

    /// The example of Twilio's security documentation.
    #[test]
    fn signatures_match_twilios_example() {
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675310"),
            ("Digits", "1234"),
            ("From", "+14158675310"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            twilio_signature(
                "12345",
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                &params
            ),
            "GvWf1cFY/Q7PnoempGyD5oXAezc="
        );
    }
}
