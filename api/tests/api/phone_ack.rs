//! Acknowledging from a phone (docs/design.md#acknowledging-from-a-phone): the signed
//! link in a real email (through the real SMTP server of testkit) opens a page and its
//! button acknowledges; tampered and expired links are refused; an SMS reply through
//! the inbound webhook acknowledges as the contact whose phone sent it, when Twilio's
//! signature is good. Every acknowledgement is in the audit log.

use std::time::Duration;

use alerts::link::{AckGrant, AckLinks, LinkKey, contact_key, contact_tag};
use base64::Engine as _;
use chrono::Utc;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;

use crate::helpers::{
    ADMIN, AppOptions, DONGHUA_OFFICER, LINK_KEY, OFFICER, TestApp, spawn_app_with,
};

const FIRING_IN_JINGSHAN: &str = "/api/v1/alerts?state=firing&town=jingshan";
/// Twilio's auth token of the test app.
const TWILIO_TOKEN: &str = "twilio-auth-token-3c9e";

/// Jingshan's officer (Chinese) and Donghua's (English), with email and phone.
const CONTACTS: &str = r#"
[[contact]]
name = "李伟"
email = "li.wei@example.org"
phone = "+8613800000000"
lang = "zh"
towns = ["jingshan"]

[[contact]]
name = "Zhao Min"
email = "zhao.min@example.org"
phone = "+8613900000000"
lang = "en"
towns = ["donghua"]
"#;

fn options() -> AppOptions {
    AppOptions {
        links: true,
        sms_inbound: Some(Some(TWILIO_TOKEN.into())),
        extra_registry: CONTACTS,
        ..AppOptions::full()
    }
}

/// The app with jingshan short of water; returns the water alert's id.
async fn firing(app: &TestApp) -> i64 {
    app.seed();
    app.publish("jingshan");
    let alerts = app
        .eventually(FIRING_IN_JINGSHAN, |body| water_alert(body).is_some())
        .await;
    water_alert(&alerts).unwrap()["id"].as_i64().unwrap()
}

fn water_alert(list: &Value) -> Option<&Value> {
    list.as_array()?
        .iter()
        .find(|a| a["rule"] == "reserve_below_target" && a["subject"] == "water")
}

async fn water_ack(app: &TestApp) -> Value {
    let list = app.get_ok_as(ADMIN, FIRING_IN_JINGSHAN).await;
    water_alert(&list).unwrap()["acknowledged"].clone()
}

async fn audit(app: &TestApp) -> Vec<Value> {
    let answer = app.get("/api/v1/audit", Some(ADMIN)).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    answer.json().as_array().unwrap().clone()
}

/// A page at `url` (absolute), by GET or POST as a phone's browser would.
async fn page(app: &TestApp, method: reqwest::Method, url: &str) -> (u16, String) {
    let mut request = app.client.request(method.clone(), url);
    if method == reqwest::Method::POST {
        request = request
            .header("content-type", "application/x-www-form-urlencoded")
            .body("");
    }
    let response = request.send().await.expect("the page answers");
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn the_link_in_a_received_email_opens_the_page_and_its_button_acknowledges() {
    let smtp = testkit::SmtpServer::start();
    let app = spawn_app_with(AppOptions {
        smtp_url: Some(smtp.url()),
        ..options()
    })
    .await;
    let id = firing(&app).await;
    let mails = tokio::task::spawn_blocking(move || {
        let mails = smtp.wait_for(1, Duration::from_secs(30));
        (smtp, mails)
    })
    .await
    .unwrap()
    .1;
    let mail = mails
        .iter()
        .find(|m| m.to == ["li.wei@example.org"] && m.body_text.contains("饮用水"))
        .unwrap_or_else(|| panic!("no mail to 李伟 about water: {mails:?}"));
    // The water item's line, then its link.
    let lines: Vec<&str> = mail.body_text.lines().map(str::trim).collect();
    let at = lines.iter().position(|l| l.contains("饮用水仅剩")).unwrap();
    let link = lines[at + 1]
        .strip_prefix("确认告警：")
        .unwrap_or_else(|| panic!("no link under the water item:\n{}", mail.body_text));
    assert!(link.starts_with(&format!("{}/ack/", app.address)), "{link}");
    assert!(mail.body_html.as_deref().unwrap().contains(link));

    let (status, html) = page(&app, reqwest::Method::GET, link).await;
    assert_eq!(status, 200, "{html}");
    for want in [
        "<html lang=\"zh-CN\">",
        "李伟",
        "景山街道",
        "饮用水仅剩",
        "未确认",
        "确认这 1 条告警",
    ] {
        assert!(html.contains(want), "{want:?} not in\n{html}");
    }
    assert_eq!(
        water_ack(&app).await,
        Value::Null,
        "opening the page acknowledges nothing"
    );

    let (status, html) = page(&app, reqwest::Method::POST, link).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("已确认 1 条告警"), "{html}");
    let ack = water_ack(&app).await;
    assert_eq!(ack["by"], "李伟", "{ack}");

    // Opened again: the state, no button.
    let (_, html) = page(&app, reqwest::Method::GET, link).await;
    assert!(
        html.contains("已由 李伟") && html.contains("没有需要确认的告警"),
        "{html}"
    );

    let entries = audit(&app).await;
    let entry = entries
        .iter()
        .find(|e| e["via"] == "link")
        .unwrap_or_else(|| panic!("no link entry in {entries:?}"));
    assert_eq!(entry["actor"], "李伟");
    assert_eq!(entry["action"], "ack");
    assert_eq!(entry["alert_ids"], serde_json::json!([id]));
    // It names people: a token is needed; the town's officer reads its towns' entries,
    // another town's officer is refused them.
    let officers = app.get("/api/v1/audit", Some(OFFICER)).await;
    assert_eq!(officers.status, 200, "{}", officers.text);
    assert!(officers.text.contains("李伟"), "{}", officers.text);
    let other = app
        .get("/api/v1/audit?town=jingshan", Some(DONGHUA_OFFICER))
        .await;
    assert_eq!(other.status, 403, "{}", other.text);
    assert_eq!(app.get("/api/v1/audit", None).await.status, 401);
    app.stop().await;
}

#[tokio::test]
async fn tampered_expired_and_foreign_links_are_refused_and_acknowledge_nothing() {
    let app = spawn_app_with(options()).await;
    let id = firing(&app).await;
    let links = AckLinks::new(
        LinkKey::new(LINK_KEY.to_vec()).unwrap(),
        &app.address,
        Duration::from_secs(3600),
    );
    // Links name a contact by name and addresses (namesakes are told apart).
    let li_wei = {
        let ledger = app.ledger.read().unwrap();
        let contact = ledger.registry().contacts.iter().find(|c| c.name == "李伟");
        contact_key(contact.expect("李伟 in the registry"))
    };
    let good = links.url(&li_wei, &[id], Utc::now());
    let token = good.rsplit('/').next().unwrap();
    let mut flipped = token.as_bytes().to_vec();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let expired = links.token(&AckGrant {
        contact_tag: contact_tag(&li_wei),
        alert_ids: vec![id],
        expires: Utc::now() - chrono::Duration::minutes(1),
    });
    let other_key = AckLinks::new(
        LinkKey::new(vec![1; 32]).unwrap(),
        &app.address,
        Duration::from_secs(3600),
    )
    .url(&li_wei, &[id], Utc::now());
    let nobody = links.url("Nobody In The Registry", &[id], Utc::now());
    let cases = [
        (
            "tampered",
            String::from_utf8(flipped).unwrap(),
            403,
            "链接无效",
        ),
        (
            "truncated",
            token[..token.len() - 4].to_owned(),
            403,
            "链接无效",
        ),
        (
            "signed with another key",
            other_key.rsplit('/').next().unwrap().to_owned(),
            403,
            "链接无效",
        ),
        ("expired", expired, 410, "链接已过期"),
        (
            "for nobody we know",
            nobody.rsplit('/').next().unwrap().to_owned(),
            403,
            "不在名册中",
        ),
    ];
    for (what, token, status, says) in cases {
        let url = format!("{}/ack/{token}", app.address);
        for method in [reqwest::Method::GET, reqwest::Method::POST] {
            let (got, html) = page(&app, method.clone(), &url).await;
            assert_eq!(got, status, "{what} {method}: {html}");
            assert!(html.contains(says), "{what} {method}: {html}");
        }
    }
    assert_eq!(water_ack(&app).await, Value::Null);
    assert!(audit(&app).await.is_empty());
    app.stop().await;
}

/// Twilio's signature of a POST of `params` to `url`.
fn twilio_signature(url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(TWILIO_TOKEN.as_bytes()).unwrap();
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Posts an SMS reply as the provider would; `signature` `None` signs it right.
async fn reply(app: &TestApp, from: &str, body: &str, signature: Option<&str>) -> (u16, String) {
    let url = format!("{}/api/v1/sms/inbound", app.address);
    let params = [
        ("MessageSid", "SM0123456789abcdef"),
        ("From", from),
        ("To", "+15005550006"),
        ("Body", body),
    ];
    let signed = twilio_signature(&url, &params);
    let form = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let response = app
        .client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature.unwrap_or(&signed))
        .body(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn an_sms_reply_acknowledges_as_the_contact_whose_phone_sent_it() {
    let gateway = testkit::HttpReceiver::start();
    let app = spawn_app_with(AppOptions {
        sms_url: Some(gateway.url()),
        ..options()
    })
    .await;
    let id = firing(&app).await;

    // A forged or unsigned reply is refused and acknowledges nothing.
    for signature in ["bm90IGEgc2lnbmF0dXJl", ""] {
        let (status, body) = reply(&app, "+8613800000000", "1", Some(signature)).await;
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("forbidden"), "{body}");
    }
    assert_eq!(water_ack(&app).await, Value::Null);
    let metrics = app.get("/metrics", Some(ADMIN)).await.text;
    assert!(
        metrics
            .lines()
            .any(|l| l == "stockpile_sms_replies_refused_total{reason=\"bad_signature\"} 2"),
        "{metrics}"
    );

    let (status, body) = reply(&app, "+8613700000000", "1", None).await;
    assert_eq!(status, 200);
    assert!(body.contains("不在联络名册中"), "{body}");
    // Donghua's officer may not acknowledge Jingshan's alert.
    let (_, body) = reply(&app, "+86 139 0000 0000", &format!("ACK {id}"), None).await;
    assert!(
        body.contains(&format!("#{id} is not in your towns")),
        "{body}"
    );
    let (_, body) = reply(&app, "+8613900000000", "ACK 999999", None).await;
    assert!(body.contains("No alert #999999"), "{body}");
    assert_eq!(water_ack(&app).await, Value::Null);

    // "1": the alerts of the last SMS sent to that phone, once it is in the outbox.
    app.eventually_as(
        ADMIN,
        "/api/v1/notifications?channel=sms&town=jingshan",
        |list| list.as_array().is_some_and(|l| !l.is_empty()),
    )
    .await;
    let (status, body) = reply(&app, "138 0000 0000", "1", None).await;
    assert_eq!(status, 200);
    assert!(
        body.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>已确认"),
        "{body}"
    );
    assert!(
        body.contains(&format!("#{id}")) && body.contains("景山街道"),
        "{body}"
    );
    assert_eq!(water_ack(&app).await["by"], "李伟");
    let (_, body) = reply(&app, "+8613800000000", &format!("确认 {id}"), None).await;
    assert!(body.contains(&format!("#{id} 此前已确认")), "{body}");

    let entries = audit(&app).await;
    let sms: Vec<&Value> = entries.iter().filter(|e| e["via"] == "sms").collect();
    assert_eq!(sms.len(), 1, "{entries:?}");
    assert_eq!(sms[0]["actor"], "李伟");
    assert!(
        sms[0]["alert_ids"]
            .as_array()
            .unwrap()
            .contains(&Value::from(id))
    );
    assert_eq!(sms[0]["detail"], "1");
    drop(gateway);
    app.stop().await;
}

/// Without `[sms] inbound_auth_token` nothing can tell the provider's POST from a
/// forged one, so every reply is refused, acknowledges nothing and is counted.
#[tokio::test]
async fn without_an_auth_token_every_sms_reply_is_refused_and_counted() {
    let app = spawn_app_with(AppOptions {
        sms_inbound: Some(None),
        ..options()
    })
    .await;
    let id = firing(&app).await;

    for body in ["1".to_owned(), format!("确认 {id}")] {
        let (status, answer) = reply(&app, "+8613800000000", &body, Some("")).await;
        assert_eq!(status, 403, "{answer}");
        let error: Value = serde_json::from_str(&answer).expect("a JSON error");
        assert_eq!(error["error"]["code"], "forbidden", "{answer}");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("inbound_auth_token"),
            "{answer}"
        );
    }
    assert_eq!(water_ack(&app).await, Value::Null);
    assert!(audit(&app).await.is_empty());
    let metrics = app.get("/metrics", Some(ADMIN)).await.text;
    for line in [
        "stockpile_sms_replies_refused_total{reason=\"no_token\"} 2",
        "stockpile_sms_replies_refused_total{reason=\"bad_signature\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_sms_carries_the_link_whole() {
    let gateway = testkit::HttpReceiver::start();
    let app = spawn_app_with(AppOptions {
        sms_url: Some(gateway.url()),
        ..options()
    })
    .await;
    let id = firing(&app).await;
    let requests = tokio::task::spawn_blocking(move || {
        let requests = gateway.wait_for(1, Duration::from_secs(30));
        (gateway, requests)
    })
    .await
    .unwrap()
    .1;
    let text = requests
        .iter()
        .map(|r| r.json())
        .find(|j| j["to"] == "+8613800000000")
        .unwrap_or_else(|| panic!("no SMS to 李伟: {requests:?}"))["text"]
        .as_str()
        .unwrap()
        .to_owned();
    let link = text
        .split("确认：")
        .nth(1)
        .unwrap_or_else(|| panic!("no link in {text}"));
    let (status, html) = page(&app, reqwest::Method::GET, link).await;
    assert_eq!(status, 200, "{text}: {html}");
    assert!(html.contains(&format!("#{id}")), "{html}");
    app.stop().await;
}
