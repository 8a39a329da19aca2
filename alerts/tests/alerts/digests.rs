//! Digests through the real path: readings published to Mosquitto, ingest, the alert
//! engine, the SMTP server process. Town officers hear of their town; the district
//! contact, escalated to, hears of all its towns in one message.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use alerts::NotificationFilter;
use chrono::Utc;
use ingest::{BrokerUrl, IngestConfig};
use live::IngestMetrics;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use store::{Store, StoreOptions};
use testkit::{Mosquitto, SmtpServer};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(30);
const TOWNS: usize = 20;
const DISTRICT: &str = "district.duty@example.org";

/// `TOWNS` towns of one district, each with one warehouse and its officer, and one
/// district contact; no cluster or city contact.
fn district_registry() -> String {
    let mut text = String::from(
        "[target]\ndays = 3.0\nwarn_days = 3.5\n\n[[category]]\nid = \"water\"\n\
         name = \"饮用水\"\nunit = \"L\"\ndaily_need = 3.0\n",
    );
    for i in 0..TOWNS {
        write!(
            text,
            "\n[[town]]\nid = \"town-{i:02}\"\nname = \"Town {i:02}\"\ndistrict = \"dongcheng\"\n\
             cluster = \"c{c:02}\"\npopulation = 1000\n\n[[facility]]\nid = \"wh-{i:02}\"\n\
             town = \"town-{i:02}\"\nkind = \"warehouse\"\nreport_every = \"1h\"\n\n\
             [[contact]]\nname = \"Officer {i:02}\"\nemail = \"officer-{i:02}@example.org\"\n\
             lang = \"en\"\ntowns = [\"town-{i:02}\"]\n",
            c = i % 4
        )
        .unwrap();
    }
    write!(
        text,
        "\n[[contact]]\nname = \"District duty\"\nemail = \"{DISTRICT}\"\nlang = \"en\"\n\
         districts = [\"dongcheng\"]\n"
    )
    .unwrap();
    text
}

/// A gateway publishing every town's warehouse reading at `days` days (QoS 1); returns
/// once the broker has them all.
async fn publish_all(broker: &str, days: f64) {
    let url = BrokerUrl::parse(broker).unwrap();
    let mut options = MqttOptions::new("gw-district", url.host, url.port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, TOWNS);
    let ts = Utc::now() - chrono::Duration::seconds(5);
    for i in 0..TOWNS {
        let payload = serde_json::json!({"ts": ts.to_rfc3339(), "stock": {"water": liters(days)}});
        client
            .publish(
                format!("stockpile/v1/town-{i:02}/wh-{i:02}/reading"),
                QoS::AtLeastOnce,
                false,
                serde_json::to_vec(&payload).unwrap(),
            )
            .await
            .unwrap();
    }
    let acked = tokio::time::timeout(WAIT, async {
        let mut acks = 0;
        while acks < TOWNS {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::PubAck(_))) => acks += 1,
                Ok(_) => {}
                Err(e) => panic!("publisher: {e}"),
            }
        }
    })
    .await;
    assert!(
        acked.is_ok(),
        "the broker did not acknowledge every reading"
    );
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_district_contact_over_twenty_failing_towns_gets_one_message_listing_them() {
    let broker = Mosquitto::start();
    let smtp = SmtpServer::start();
    let world = World::with_registry(&district_registry());
    let store = Store::open(&world.db, StoreOptions::default()).unwrap();
    let (ledger, changes) = (Arc::clone(&world.ledger), Arc::clone(&world.changes));
    let metrics = Arc::new(IngestMetrics::default());
    let shutdown = CancellationToken::new();

    // Escalation within seconds: cluster (nobody there) one second after the officers
    // were told, the district a second after that. A two-second group_wait is the
    // digest window.
    let config = alerts::AlertsConfig {
        group_wait: Duration::from_secs(2),
        escalate_after: Duration::from_secs(1),
        ..quick_config()
    };
    let channels = alerts::Channels::from_config(
        Some(&alerts::SmtpConfig::new(
            smtp.url(),
            "Stockpile <alerts@example.org>",
        )),
        None,
        &alerts::WebhookConfig::default(),
    )
    .unwrap();
    let service = alerts::Alerts::open(
        config,
        Arc::clone(&world.registry),
        &world.db,
        StoreOptions::default(),
        channels,
    )
    .unwrap();
    let handle = service.handle();
    let alerting =
        tokio::spawn(service.run(Arc::clone(&ledger), changes.subscribe(), shutdown.clone()));
    let ingest = tokio::spawn(ingest::run(
        IngestConfig::new(
            BrokerUrl::parse(&broker.url()).unwrap(),
            "stockpile-digest-test",
        ),
        Arc::clone(&ledger),
        store,
        Arc::clone(&metrics),
        changes,
        shutdown.clone(),
    ));
    wait_until("ingest connects", WAIT, async || metrics.connected()).await;

    publish_all(&broker.url(), 2.0).await;

    // Twenty officers' alerts, then the district's one digest.
    tokio::task::block_in_place(|| smtp.wait_for(TOWNS + 1, WAIT));
    // Were anything more on its way to the district, the next window (two seconds)
    // would bring it.
    settle(Duration::from_secs(5)).await;
    let mails = smtp.messages();
    let to_district: Vec<_> = mails.iter().filter(|m| m.to == vec![DISTRICT]).collect();
    assert_eq!(
        to_district.len(),
        1,
        "{:#?}",
        to_district.iter().map(|m| &m.subject).collect::<Vec<_>>()
    );
    let digest = to_district[0];
    assert_eq!(
        digest.subject,
        "[Stockpile] ESCALATED, CRITICAL: 20 towns, worst: Town 00 饮用水 2 days left (target 3)"
    );
    for i in 0..10 {
        assert!(
            digest
                .body_text
                .contains(&format!("Town {i:02} (town-{i:02}")),
            "{}",
            digest.body_text
        );
    }
    assert!(
        digest
            .body_text
            .contains("And 10 more towns with 10 problems (10 critical)"),
        "{}",
        digest.body_text
    );
    // Each officer heard of their own town once.
    for i in 0..TOWNS {
        let officer = format!("officer-{i:02}@example.org");
        let theirs: Vec<_> = mails
            .iter()
            .filter(|m| m.to == vec![officer.clone()])
            .collect();
        assert_eq!(theirs.len(), 1, "{officer}");
        assert!(
            theirs[0].subject.contains(&format!("Town {i:02}")),
            "{}",
            theirs[0].subject
        );
    }
    assert_eq!(mails.len(), TOWNS + 1);

    // The digest is listed under every town it covers, says which, and an officer of
    // two of them sees it once, beside their own towns' messages.
    let listed = |town: Option<&str>, towns: Option<&[&str]>| {
        let filter = NotificationFilter {
            town: town.map(Into::into),
            towns: towns.map(|t| t.iter().map(|t| t.to_string()).collect()),
            ..NotificationFilter::default()
        };
        let handle = handle.clone();
        async move { handle.list_notifications(&filter).await.unwrap() }
    };
    let all_towns: Vec<String> = (0..TOWNS).map(|i| format!("town-{i:02}")).collect();
    for (town, towns) in [
        (Some("town-07"), None),
        (None, Some(&["town-03", "town-04"][..])),
    ] {
        let list = listed(town, towns).await;
        let digests: Vec<_> = list.iter().filter(|n| n.recipient == DISTRICT).collect();
        assert_eq!(digests.len(), 1, "{town:?} {towns:?}: {list:#?}");
        assert_eq!(digests[0].town, None);
        assert_eq!(digests[0].towns, all_towns);
        let officers = list.len() - 1;
        assert_eq!(officers, towns.map_or(1, <[&str]>::len), "{list:#?}");
    }
    let officer = listed(Some("town-07"), None).await;
    let officer = officer.iter().find(|n| n.recipient != DISTRICT).unwrap();
    assert_eq!(officer.town.as_deref(), Some("town-07"));
    assert_eq!(officer.towns, ["town-07"]);

    shutdown.cancel();
    alerting.await.unwrap().unwrap();
    ingest.await.unwrap().unwrap();
}
