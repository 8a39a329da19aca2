//! Each channel against a real receiver: what the SMS gateway, the webhook and the
//! SMTP server get, and what a failure leaves in the outbox.

use std::time::Duration;

use alerts::{
    Channel, DeliveryError, EmailChannel, Notification, NotificationFilter, SmsChannel, SmsConfig,
    SmsPreset, SmtpConfig,
};
use testkit::{HttpReceiver, SmtpServer};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(10);

fn sms(text: &str) -> Notification {
    Notification {
        id: 1,
        contact: "Li Wei".into(),
        recipient: OFFICER_PHONE.into(),
        subject: String::new(),
        body: text.into(),
        html: None,
    }
}

fn mail() -> Notification {
    Notification {
        id: 1,
        contact: "李伟".into(),
        recipient: OFFICER.into(),
        subject: "[Stockpile] 严重：景山街道 饮用水仅剩 2 天（目标 3 天）".into(),
        body: "text body".into(),
        html: Some("<p>html body</p>".into()),
    }
}

fn sms_channel(config: &SmsConfig) -> SmsChannel {
    let channels =
        alerts::Channels::from_config(None, Some(config), &alerts::WebhookConfig::default())
            .expect("sms channel builds");
    std::sync::Arc::try_unwrap(channels.sms.expect("sms channel")).expect("only owner")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sms_gateway_gets_the_request_its_template_describes() {
    let gateway = HttpReceiver::start();
    let text = "严重：景山街道 \"饮用水\" 2 天 & more";

    let mut get = SmsConfig::new(format!(
        "{}/api/sms?to={{to}}&msg={{text}}&from={{from}}",
        gateway.url()
    ));
    get.method = Some("get".into());
    get.from = Some("Stockpile".into());
    sms_channel(&get).send(&sms(text)).await.unwrap();

    let mut form = SmsConfig::new(format!("{}/form", gateway.url()));
    form.headers.insert(
        "Content-Type".into(),
        "application/x-www-form-urlencoded".into(),
    );
    form.body = Some("phone={to}&message={text}".into());
    form.username = Some("gw".into());
    form.password = Some("secret".into());
    sms_channel(&form).send(&sms(text)).await.unwrap();

    sms_channel(&SmsConfig::new(format!("{}/json", gateway.url())))
        .send(&sms(text))
        .await
        .unwrap();

    let requests = gateway.wait_for(3, WAIT);
    assert_eq!(requests[0].method, "GET");
    assert_eq!(
        requests[0].query(),
        vec![
            ("to".to_string(), OFFICER_PHONE.to_string()),
            ("msg".to_string(), text.to_string()),
            ("from".to_string(), "Stockpile".to_string()),
        ]
    );
    assert_eq!(requests[1].method, "POST");
    assert_eq!(
        requests[1].form(),
        vec![
            ("phone".to_string(), OFFICER_PHONE.to_string()),
            ("message".to_string(), text.to_string()),
        ]
    );
    // "gw:secret" in base64.
    assert_eq!(
        requests[1].header("Authorization"),
        Some("Basic Z3c6c2VjcmV0")
    );
    assert_eq!(requests[2].path(), "/json");
    assert_eq!(
        requests[2].json(),
        serde_json::json!({"to": OFFICER_PHONE, "text": text})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_twilio_preset_posts_a_form_with_basic_auth() {
    let gateway = HttpReceiver::start();
    gateway.set_response(201, r#"{"sid":"SM1","status":"queued"}"#);
    let mut twilio = SmsConfig::new(format!(
        "{}/2010-04-01/Accounts/AC123/Messages.json",
        gateway.url()
    ));
    twilio.preset = Some(SmsPreset::Twilio);
    twilio.username = Some("AC123".into());
    twilio.password = Some("token".into());
    twilio.from = Some("+15005550006".into());
    sms_channel(&twilio)
        .send(&sms("严重：景山街道"))
        .await
        .unwrap();

    let request = &gateway.wait_for(1, WAIT)[0];
    assert_eq!(
        (request.method.as_str(), request.path()),
        ("POST", "/2010-04-01/Accounts/AC123/Messages.json")
    );
    assert_eq!(
        request.form(),
        vec![
            ("To".to_string(), OFFICER_PHONE.to_string()),
            ("From".to_string(), "+15005550006".to_string()),
            ("Body".to_string(), "严重：景山街道".to_string()),
        ]
    );
    assert_eq!(
        request.header("Authorization"),
        Some("Basic QUMxMjM6dG9rZW4=")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_answers_decide_between_retry_and_giving_up() {
    let gateway = HttpReceiver::start();
    let channel = sms_channel(&SmsConfig::new(format!("{}/send", gateway.url())));
    let cases = [
        (500, true),
        (503, true),
        (429, true),
        (400, false),
        (401, false),
        (200, false),
    ];
    for (status, transient) in cases {
        gateway.push_response(status, "{}");
        let outcome = channel.send(&sms("x")).await;
        match (status, outcome) {
            (200, Ok(())) => {}
            (_, Err(DeliveryError::Transient(_))) if transient => {}
            (_, Err(DeliveryError::Permanent(e))) if !transient => {
                assert!(e.contains(&status.to_string()), "{e}");
            }
            (status, outcome) => panic!("{status}: {outcome:?}"),
        }
    }
    let mut down = gateway;
    down.stop();
    assert!(matches!(
        channel.send(&sms("x")).await,
        Err(DeliveryError::Transient(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_is_sent_with_authentication_and_both_bodies() {
    let smtp = SmtpServer::builder().auth("stockpile", "s3cret").start();
    let mut config = SmtpConfig::new(smtp.url(), "Stockpile <alerts@example.org>");
    config.username = Some("stockpile".into());
    config.password = Some("s3cret".into());
    EmailChannel::new(&config)
        .unwrap()
        .send(&mail())
        .await
        .unwrap();
    let received = &smtp.wait_for(1, WAIT)[0];
    assert_eq!(received.from, "alerts@example.org");
    assert_eq!(received.to, vec![OFFICER]);
    assert_eq!(received.subject, mail().subject);
    assert_eq!(received.body_text.trim(), "text body");
    assert_eq!(
        received.body_html.as_deref().map(str::trim),
        Some("<p>html body</p>")
    );

    config.password = Some("wrong".into());
    let refused = EmailChannel::new(&config).unwrap().send(&mail()).await;
    assert!(
        matches!(refused, Err(DeliveryError::Permanent(_))),
        "{refused:?}"
    );
    assert_eq!(smtp.messages().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_starttls_is_never_skipped_on_a_server_without_it() {
    let smtp = SmtpServer::start();
    let url = format!("{}?tls=required", smtp.url());
    let outcome = EmailChannel::new(&SmtpConfig::new(url, "alerts@example.org"))
        .unwrap()
        .send(&mail())
        .await;
    assert!(outcome.is_err(), "sent without TLS");
    assert_eq!(smtp.messages().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_refused_for_good_is_a_visible_failure_not_a_retry_loop() {
    let smtp = SmtpServer::builder()
        .reject_data("550 5.1.1 mailbox unavailable")
        .start();
    let world = World::new();
    world.stock("js-wh1", liters(5.0));
    let service = Service::start(&world, quick_config(), Some(&smtp.url()), None).await;
    world.stock("js-wh1", liters(2.0));
    let handle = service.handle.clone();
    wait_until("the notification is marked failed", WAIT, async || {
        handle.counts().await.unwrap().notifications_failed == 1
    })
    .await;
    let failed = &service
        .handle
        .list_notifications(&NotificationFilter {
            state: Some("failed".into()),
            ..NotificationFilter::default()
        })
        .await
        .unwrap()[0];
    assert_eq!((failed.recipient.as_str(), failed.attempts), (OFFICER, 1));
    assert!(
        failed.last_error.as_deref().unwrap().contains("550"),
        "{failed:?}"
    );
    service.stop().await;
}

/// A registry whose town officer has a webhook (and nothing else).
fn webhook_registry(url: &str) -> String {
    REGISTRY.replace(
        "name = \"Li Wei\"\nemail = \"li.wei@example.org\"\nphone = \"+8613800000001\"",
        &format!("name = \"Li Wei\"\nwebhook = \"{url}\""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_failing_for_a_while_is_retried_and_delivered_once() {
    let hook = HttpReceiver::start();
    hook.push_response(500, "busy");
    hook.push_response(502, "busy");
    let world = World::with_registry(&webhook_registry(&format!("{}/hook", hook.url())));
    world.stock("js-wh1", liters(5.0));
    let service =
        Service::start_with_webhook(&world, quick_config(), alerts::WebhookFormat::Robot).await;
    world.stock("js-wh1", liters(2.0));

    let requests = hook.wait_for(3, WAIT);
    settle(Duration::from_millis(600)).await;
    assert_eq!(
        hook.requests().len(),
        3,
        "delivered once, after two failures"
    );
    let body = requests[2].json();
    assert_eq!(body["msgtype"], "text");
    let content = body["text"]["content"].as_str().unwrap();
    assert!(
        content.starts_with("[Stockpile] 严重：景山街道 饮用水仅剩 2 天"),
        "{content}"
    );
    let sent = &service
        .handle
        .list_notifications(&NotificationFilter::default())
        .await
        .unwrap()[0];
    assert_eq!(
        (sent.channel.as_str(), sent.state.as_str(), sent.attempts),
        ("webhook", "sent", 3)
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generic_webhook_gets_structured_json() {
    let hook = HttpReceiver::start();
    let world = World::with_registry(&webhook_registry(&format!("{}/hook", hook.url())));
    world.stock("js-wh1", liters(5.0));
    let service =
        Service::start_with_webhook(&world, quick_config(), alerts::WebhookFormat::Auto).await;
    world.stock("js-wh1", liters(2.0));
    let body = hook.wait_for(1, WAIT)[0].json();
    assert_eq!(body["event"], "fired");
    assert_eq!(body["town"]["name"], "景山街道");
    assert_eq!(body["alerts"][0]["rule"], "reserve_below_target");
    assert_eq!(body["alerts"][0]["severity"], "critical");
    assert_eq!(body["alerts"][0]["detail"]["days"], 2.0);
    assert_eq!(body["alerts"][0]["detail"]["target_days"], 3.0);
    service.stop().await;
}

/// A city-wide crossing: thirty towns fall below target at once. The email worker sends
/// to several officers at a time; each still gets exactly one message, about its town.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_towns_crossing_at_once_reach_thirty_officers_once_each() {
    let mut registry = String::from(
        "[[category]]\nid = \"water\"\nname = \"Drinking water\"\nunit = \"L\"\ndaily_need = 3.0\n",
    );
    for i in 0..30 {
        registry.push_str(&format!(
            "\n[[town]]\nid = \"town-{i}\"\nname = \"Town {i}\"\ndistrict = \"d1\"\ncluster = \"c1\"\npopulation = 1000\n\
             \n[[facility]]\nid = \"wh-{i}\"\ntown = \"town-{i}\"\nkind = \"warehouse\"\n\
             \n[[contact]]\nname = \"Officer {i}\"\nemail = \"officer-{i}@example.org\"\nlang = \"en\"\ntowns = [\"town-{i}\"]\n"
        ));
    }
    let world = World::with_registry(&registry);
    let smtp = SmtpServer::start();
    for i in 0..30 {
        world.stock(&format!("wh-{i}"), liters(5.0));
    }
    let service = Service::start(&world, quick_config(), Some(&smtp.url()), None).await;
    for i in 0..30 {
        world.stock(&format!("wh-{i}"), liters(2.0));
    }
    let mails = tokio::task::block_in_place(|| smtp.wait_for(30, WAIT));
    settle(Duration::from_millis(500)).await;
    assert_eq!(smtp.messages().len(), 30, "no second message to anyone");
    let mut recipients: Vec<String> = mails.iter().map(|m| m.to.join(",")).collect();
    recipients.sort();
    let mut expected: Vec<String> = (0..30)
        .map(|i| format!("officer-{i}@example.org"))
        .collect();
    expected.sort();
    assert_eq!(recipients, expected);
    for mail in &mails {
        let officer: usize = mail.to[0]
            .trim_start_matches("officer-")
            .trim_end_matches("@example.org")
            .parse()
            .unwrap();
        assert!(
            mail.subject.contains(&format!("Town {officer} ")),
            "{} got {:?}",
            mail.to[0],
            mail.subject
        );
    }
    assert_eq!(
        service.handle.counts().await.unwrap().notifications_sent,
        30
    );
    service.stop().await;
}

/// A notification sent while another process holds the store's write lock cannot be
/// recorded as sent at once. It must be recorded once the lock is gone, never sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_the_store_cannot_record_yet_is_not_sent_twice() {
    let hook = HttpReceiver::start();
    // The receiver answers a second late: time to take the lock while the send is out.
    hook.set_delay(Duration::from_secs(1));
    let world = World::with_registry(&webhook_registry(&format!("{}/hook", hook.url())));
    world.stock("js-wh1", liters(5.0));
    let service =
        Service::start_with_webhook(&world, quick_config(), alerts::WebhookFormat::Robot).await;
    world.stock("js-wh1", liters(2.0));
    hook.wait_for(1, WAIT);

    // What a backup or a `sqlite3` shell does: a write transaction held for longer than
    // the store's 5 s busy timeout, so recording the delivery fails at least once.
    let db = world.db.clone();
    let locker = std::thread::spawn(move || {
        let mut store = store::Store::open(&db, store::StoreOptions::default()).unwrap();
        let batch = store.batch().unwrap();
        std::thread::sleep(Duration::from_secs(7));
        drop(batch);
    });
    tokio::task::spawn_blocking(move || locker.join().unwrap())
        .await
        .unwrap();

    wait_until("the delivery recorded as sent", WAIT, async || {
        let rows = service
            .handle
            .list_notifications(&NotificationFilter::default())
            .await
            .unwrap();
        rows.len() == 1 && rows[0].state.as_str() == "sent"
    })
    .await;
    settle(Duration::from_millis(1500)).await;
    assert_eq!(hook.requests().len(), 1, "sent once, recorded late");
    service.stop().await;
}
