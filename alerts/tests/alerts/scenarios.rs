//! The scenarios of issue #4 with a real SMTP server and a real SQLite file, the
//! ledger driven as ingest drives it.

use std::time::Duration;

use alerts::{AlertFilter, AlertStatus, NotificationFilter};
use testkit::{HttpReceiver, SmtpServer};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_below_three_days_sends_one_critical_email_and_sms_and_recovery_one_resolved() {
    let smtp = SmtpServer::start();
    let gateway = HttpReceiver::start();
    let world = World::new();
    world.stock("js-wh1", liters(5.0));
    world.stock("dh-wh1", liters(5.0));
    let service = Service::start(
        &world,
        quick_config(),
        Some(&smtp.url()),
        Some(sms_gateway(&gateway.url())),
    )
    .await;

    world.stock("js-wh1", liters(2.1));
    let mails = smtp.wait_for(1, WAIT);
    assert_eq!(mails[0].to, vec![OFFICER]);
    assert_eq!(
        mails[0].subject,
        "[Stockpile] 严重：景山街道 饮用水仅剩 2.1 天（目标 3 天）"
    );
    let alert = &service
        .handle
        .list_alerts(&AlertFilter::default())
        .await
        .unwrap()[0];
    let ack = format!(
        "https://stockpile.example.org/api/v1/alerts/{}/ack",
        alert.id
    );
    assert!(mails[0].body_text.contains(&ack), "{}", mails[0].body_text);
    assert!(mails[0].body_html.as_deref().unwrap().contains(&ack));
    let sms = gateway.wait_for(1, WAIT);
    assert_eq!(sms[0].header("X-Api-Key"), Some("gateway-key"));
    let body = sms[0].json();
    assert_eq!(body["mobile"], OFFICER_PHONE);
    let text = body["content"].as_str().unwrap();
    assert!(
        text.starts_with("【Stockpile】严重：景山街道 饮用水仅剩 2.1 天（目标 3 天）"),
        "{text}"
    );
    assert!(alerts::fits_one_sms(text), "{text}");

    // Readings keep coming while it is below: nothing more.
    world.stock("js-wh1", liters(2.0));
    world.stock("js-wh1", liters(1.9));
    settle(Duration::from_millis(600)).await;
    assert_eq!(smtp.messages().len(), 1);
    assert_eq!(gateway.requests().len(), 1);

    world.stock("js-wh1", liters(4.0));
    let mails = smtp.wait_for(2, WAIT);
    assert_eq!(mails[1].to, vec![OFFICER]);
    assert_eq!(
        mails[1].subject,
        "[Stockpile] 已恢复：景山街道 饮用水已恢复至 4 天（目标 3 天）"
    );
    gateway.wait_for(2, WAIT);
    settle(Duration::from_millis(600)).await;
    assert_eq!(smtp.messages().len(), 2, "one resolved message, not more");
    assert_eq!(gateway.requests().len(), 2);
    assert!(
        smtp.messages().iter().all(|m| m.to == vec![OFFICER]),
        "the cluster contact and the other town's officer hear nothing"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_flapping_around_the_line_sends_no_storm() {
    let smtp = SmtpServer::start();
    let world = World::new();
    world.stock("js-wh1", liters(5.0));
    let service = Service::start(&world, quick_config(), Some(&smtp.url()), None).await;

    world.stock("js-wh1", liters(2.95));
    smtp.wait_for(1, WAIT);
    // Readings on both sides of the line, inside the hysteresis band.
    for i in 0..30 {
        let days = if i % 2 == 0 { 3.05 } else { 2.95 };
        world.stock("js-wh1", liters(days));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    settle(Duration::from_millis(800)).await;
    let mails = smtp.messages();
    assert_eq!(
        mails.len(),
        1,
        "{:?}",
        mails.iter().map(|m| &m.subject).collect::<Vec<_>>()
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_stops_reminders_and_escalation() {
    let smtp = SmtpServer::start();
    let world = World::new();
    world.stock("js-wh1", liters(5.0));
    let config = alerts::AlertsConfig {
        repeat_every: Duration::from_millis(800),
        escalate_after: Duration::from_millis(800),
        ..quick_config()
    };
    let service = Service::start(&world, config, Some(&smtp.url()), None).await;

    world.stock("js-wh1", liters(2.0));
    smtp.wait_for(1, WAIT);
    let id = service
        .handle
        .list_alerts(&AlertFilter::default())
        .await
        .unwrap()[0]
        .id;
    let acked = service
        .handle
        .ack(id, "Li Wei", "water truck ordered")
        .await
        .unwrap();
    let ack = acked.acknowledged.expect("acknowledged");
    assert_eq!(
        (ack.by.as_deref(), ack.note.as_deref()),
        (Some("Li Wei"), Some("water truck ordered"))
    );

    settle(Duration::from_millis(2500)).await;
    let mails = smtp.messages();
    assert_eq!(
        mails
            .iter()
            .map(|m| (m.to[0].as_str(), m.subject.as_str()))
            .collect::<Vec<_>>(),
        vec![(
            OFFICER,
            "[Stockpile] 严重：景山街道 饮用水仅剩 2 天（目标 3 天）"
        )],
        "no reminder, no escalation after the acknowledgement"
    );
    let view = service.handle.alert(id).await.unwrap().unwrap();
    assert_eq!(view.acknowledged.unwrap().by.as_deref(), Some("Li Wei"));
    assert!(matches!(
        service.handle.ack(999_999, "Li Wei", "").await,
        Err(alerts::AlertsError::NotFound(999_999))
    ));
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_acknowledgement_escalation_reaches_the_cluster_contact() {
    let smtp = SmtpServer::start();
    let world = World::new();
    world.stock("js-wh1", liters(5.0));
    let config = alerts::AlertsConfig {
        escalate_after: Duration::from_millis(500),
        ..quick_config()
    };
    let service = Service::start(&world, config, Some(&smtp.url()), None).await;

    world.stock("js-wh1", liters(2.0));
    let mails = smtp.wait_for(2, WAIT);
    assert_eq!(mails[0].to, vec![OFFICER]);
    assert_eq!(mails[1].to, vec![CLUSTER]);
    assert_eq!(
        mails[1].subject,
        "[Stockpile] ESCALATED, CRITICAL: 景山街道 饮用水 2 days left (target 3)"
    );
    assert!(
        mails[1].body_text.contains("have not been acknowledged"),
        "{}",
        mails[1].body_text
    );
    let alert = &service
        .handle
        .list_alerts(&AlertFilter::default())
        .await
        .unwrap()[0];
    assert_eq!(alert.escalation, alerts::EscalationLevel::Cluster);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_outage_delays_the_mail_which_then_arrives_once() {
    let mut smtp = SmtpServer::start();
    let world = World::new();
    world.stock("js-wh1", liters(5.0));
    let service = Service::start(&world, quick_config(), Some(&smtp.url()), None).await;
    smtp.stop();

    world.stock("js-wh1", liters(2.0));
    let handle = service.handle.clone();
    wait_until("a failed attempt is recorded", WAIT, async || {
        let list = handle
            .list_notifications(&NotificationFilter::default())
            .await
            .unwrap();
        list.first()
            .is_some_and(|n| n.attempts >= 2 && n.state == "pending")
    })
    .await;
    let pending = &service
        .handle
        .list_notifications(&NotificationFilter::default())
        .await
        .unwrap()[0];
    assert!(
        pending.last_error.as_deref().unwrap().contains("smtp"),
        "{pending:?}"
    );
    assert_eq!(
        service.handle.counts().await.unwrap().notifications_pending,
        1
    );

    smtp.start_again();
    smtp.wait_for(1, WAIT);
    settle(Duration::from_millis(800)).await;
    assert_eq!(smtp.messages().len(), 1, "delivered once");
    let sent = &service
        .handle
        .list_notifications(&NotificationFilter::default())
        .await
        .unwrap()[0];
    assert_eq!(sent.state, "sent");
    assert!(sent.attempts >= 3, "{sent:?}");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_while_firing_sends_no_duplicate_and_remembers_the_alert() {
    let smtp = SmtpServer::start();
    let world = World::new();
    world.stock("js-wh1", liters(5.0));
    let service = Service::start(&world, quick_config(), Some(&smtp.url()), None).await;
    world.stock("js-wh1", liters(2.0));
    smtp.wait_for(1, WAIT);
    let before = service
        .handle
        .list_alerts(&AlertFilter::default())
        .await
        .unwrap();
    service.stop().await;

    let service = Service::start(&world, quick_config(), Some(&smtp.url()), None).await;
    world.stock("js-wh1", liters(1.9));
    settle(Duration::from_millis(800)).await;
    assert_eq!(smtp.messages().len(), 1, "no duplicate after the restart");
    let after = service
        .handle
        .list_alerts(&AlertFilter::default())
        .await
        .unwrap();
    assert_eq!(
        (after.len(), after[0].id, after[0].state),
        (1, before[0].id, AlertStatus::Firing)
    );

    world.stock("js-wh1", liters(4.0));
    let mails = smtp.wait_for(2, WAIT);
    assert!(
        mails[1].subject.starts_with("[Stockpile] 已恢复"),
        "{}",
        mails[1].subject
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_keeps_a_town_quiet_until_it_is_lifted() {
    let smtp = SmtpServer::start();
    let world = World::new();
    world.stock("js-wh1", liters(5.0));
    let service = Service::start(&world, quick_config(), Some(&smtp.url()), None).await;
    let silence = service
        .handle
        .add_silence(alerts::NewSilence {
            town: Some("jingshan".into()),
            facility: None,
            rule: None,
            until: chrono::Utc::now() + chrono::Duration::hours(1),
            created_by: "ops".into(),
            comment: "warehouse inventory".into(),
        })
        .await
        .unwrap();
    world.stock("js-wh1", liters(2.0));
    settle(Duration::from_millis(600)).await;
    assert_eq!(smtp.messages().len(), 0);
    let listed = service.handle.silences(false).await.unwrap();
    assert_eq!((listed.len(), listed[0].active), (1, true));

    assert!(service.handle.delete_silence(silence.id).await.unwrap());
    let mails = smtp.wait_for(1, WAIT);
    assert_eq!(mails[0].to, vec![OFFICER]);

    let bad = service
        .handle
        .add_silence(alerts::NewSilence {
            town: Some("atlantis".into()),
            facility: None,
            rule: None,
            until: chrono::Utc::now() + chrono::Duration::hours(1),
            created_by: "ops".into(),
            comment: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.to_string(), "town: unknown town \"atlantis\"");
    service.stop().await;
}
