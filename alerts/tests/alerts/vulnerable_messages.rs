//! Vulnerable people in SMS and digests (issue 16, docs/design.md#communities and
//! #digests), through the SMTP server process and an HTTP receiver standing in for the
//! SMS gateway: a town short of infant formula reaches its communities' infants; its
//! officer's SMS says how many in how many communities, and the district contact's
//! digest gives each town's count by mail and their total by SMS.

use std::time::Duration;

use alerts::{Channels, SmtpConfig, WebhookConfig, fits_one_sms};
use chrono::Utc;
use reserve::{Observation, Reading};
use testkit::{HttpReceiver, ReceivedMail, SmtpServer};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(30);
const DISTRICT: &str = "district.duty@example.org";
const DISTRICT_PHONE: &str = "+8613800000099";

/// Three towns short of formula: town-00's infants live in two communities (60), town-01's
/// in one (7), town-02 lists no communities (its 10 infants are a town total only).
/// Officers read English (00, 02) and Chinese (01); the district contact English.
const REGISTRY: &str = r#"
[target]
days = 3.0
warn_days = 3.5

[[category]]
id = "formula"
name = "Infant formula"
unit = "kg"
daily_need = 0.15
group = "infants"

[[town]]
id = "town-00"
name = "Town 00"
district = "dongcheng"
cluster = "c00"
population = 1000

[[town]]
id = "town-01"
name = "Town 01"
district = "dongcheng"
cluster = "c00"
population = 1000

[[town]]
id = "town-02"
name = "Town 02"
district = "dongcheng"
cluster = "c00"
population = 1000
groups = { infants = 10 }

[[community]]
id = "sanyanjing"
town = "town-00"
name = "Sanyanjing"
groups = { infants = 40, elderly = 5 }

[[community]]
id = "jishikou"
town = "town-00"
name = "Jishikou"
groups = { infants = 20 }

[[community]]
id = "huangchenggen"
town = "town-01"
name = "Huangchenggen"
groups = { infants = 7 }

[[facility]]
id = "wh-00"
town = "town-00"
kind = "warehouse"
report_every = "1h"

[[facility]]
id = "wh-01"
town = "town-01"
kind = "warehouse"
report_every = "1h"

[[facility]]
id = "wh-02"
town = "town-02"
kind = "warehouse"
report_every = "1h"

[[contact]]
name = "Officer 00"
email = "officer-00@example.org"
phone = "+8613800000000"
lang = "en"
towns = ["town-00"]

[[contact]]
name = "Officer 01"
email = "officer-01@example.org"
phone = "+8613800000001"
lang = "zh"
towns = ["town-01"]

[[contact]]
name = "Officer 02"
email = "officer-02@example.org"
phone = "+8613800000002"
lang = "en"
towns = ["town-02"]

[[contact]]
name = "District duty"
email = "district.duty@example.org"
phone = "+8613800000099"
lang = "en"
districts = ["dongcheng"]
"#;

/// What ingest does with a warehouse's formula count: one day's worth for `infants`.
fn one_day_of_formula(world: &World, facility: &str, infants: f64) {
    let now = Utc::now();
    let town = {
        let mut ledger = world.ledger.write().unwrap();
        let f = world.registry.facility_idx(facility).expect("facility");
        let formula = world.registry.category_idx("formula").expect("formula");
        let reading = Reading {
            facility: f,
            ts: now,
            seq: None,
            observation: Observation::Stock(vec![(formula, infants * 0.15)]),
        };
        ledger.apply(&reading, now);
        let town = world.registry.facility(f).town;
        ledger.refresh(town, now);
        town
    };
    world.changes.publish([town]);
}

/// The SMS sent to `phone`, by the gateway's JSON body.
fn sms_to(gateway: &HttpReceiver, phone: &str) -> Vec<String> {
    gateway
        .requests()
        .iter()
        .map(|r| r.json())
        .filter(|body| body["mobile"] == phone)
        .map(|body| body["content"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// The paragraph of a digest's text that starts with the town's title (mail lines
/// end in CRLF).
fn town_block(mail: &ReceivedMail, town: &str) -> String {
    mail.body_text
        .replace("\r\n", "\n")
        .split("\n\n")
        .find(|block| block.trim_start().starts_with(&format!("{town} (")))
        .unwrap_or_else(|| panic!("no block for {town} in:\n{}", mail.body_text))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_and_digests_say_how_many_vulnerable_people_a_town_has_affected() {
    let smtp = SmtpServer::start();
    let gateway = HttpReceiver::start();
    let world = World::with_registry(REGISTRY);
    // Told at once, escalated to the district (nobody at the cluster) within seconds;
    // two seconds is the district's digest window.
    let config = alerts::AlertsConfig {
        group_wait: Duration::from_secs(2),
        escalate_after: Duration::from_secs(1),
        ..quick_config()
    };
    let channels = Channels::from_config(
        Some(&SmtpConfig::new(
            smtp.url(),
            "Stockpile <alerts@example.org>",
        )),
        Some(&sms_gateway(&gateway.url())),
        &WebhookConfig::default(),
    )
    .expect("channels build");
    let service = Service::start_with(&world, config, channels).await;

    for (facility, infants) in [("wh-00", 60.0), ("wh-01", 7.0), ("wh-02", 10.0)] {
        one_day_of_formula(&world, facility, infants);
    }
    // Three officers by mail and SMS, then the district's digest by both.
    tokio::task::block_in_place(|| {
        smtp.wait_for(4, WAIT);
        gateway.wait_for(4, WAIT);
    });

    let officer_00 = sms_to(&gateway, "+8613800000000");
    assert_eq!(officer_00.len(), 1, "{officer_00:?}");
    assert!(
        officer_00[0]
            .contains("Town 00 Infant formula 1d left (target 3d); 2 communities, 60 vulnerable"),
        "{officer_00:?}"
    );
    let officer_01 = sms_to(&gateway, "+8613800000001");
    assert!(
        officer_01[0].contains("，涉及 1 村社 弱势 7 人"),
        "{officer_01:?}"
    );
    let officer_02 = sms_to(&gateway, "+8613800000002");
    assert!(!officer_02[0].contains("vulnerable"), "{officer_02:?}");
    let district = sms_to(&gateway, DISTRICT_PHONE);
    assert_eq!(district.len(), 1, "{district:?}");
    assert!(
        district[0].contains("3 towns, 3 critical; 3 communities, 67 vulnerable"),
        "{district:?}"
    );
    for text in [&officer_00[0], &officer_01[0], &officer_02[0], &district[0]] {
        assert!(fits_one_sms(text), "more than one segment: {text}");
    }

    let mails = smtp.messages();
    let digest: Vec<&ReceivedMail> = mails.iter().filter(|m| m.to == [DISTRICT]).collect();
    assert_eq!(digest.len(), 1, "{mails:#?}");
    let digest = digest[0];
    assert!(
        town_block(digest, "Town 00").contains("Affects 60 vulnerable people in 2 communities"),
        "{}",
        digest.body_text
    );
    assert!(
        town_block(digest, "Town 01").contains("Affects 7 vulnerable people in 1 community"),
        "{}",
        digest.body_text
    );
    assert!(
        !town_block(digest, "Town 02").contains("vulnerable"),
        "{}",
        digest.body_text
    );
    let html = digest.body_html.as_deref().unwrap_or("");
    assert!(
        html.contains("Affects 60 vulnerable people in 2 communities")
            && html.contains("Affects 7 vulnerable people in 1 community"),
        "{html}"
    );

    service.stop().await;
}
