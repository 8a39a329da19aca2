//! Manual facilities (issue #15): no gateway is expected, so instead of silence the
//! town officer is asked to count, by email and SMS, through the real service.

use std::time::Duration;

use alerts::{AlertFilter, AlertStatus, Rule};
use chrono::Utc;
use reserve::{Observation, Reading};
use testkit::{HttpReceiver, SmtpServer};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(15);

/// The helpers' towns, each with a community store counted by hand. Their grace is
/// 2 × 1 s from the start; their count is due a day after it was taken.
fn registry_with_manual_stores() -> String {
    format!(
        "{REGISTRY}
[[facility]]
id = \"js-wh2\"
name = \"景山社区库\"
town = \"jingshan\"
kind = \"warehouse\"
report = \"manual\"
report_every = \"1s\"

[[facility]]
id = \"dh-wh2\"
name = \"东华门社区库\"
town = \"donghua\"
kind = \"warehouse\"
report = \"manual\"
report_every = \"1s\"
"
    )
}

/// A count taken `hours_ago` and entered then, as the API's writer applies it.
fn count_taken(world: &World, facility: &str, liters: f64, hours_ago: i64) {
    let at = Utc::now() - chrono::Duration::hours(hours_ago);
    let f = world.registry.facility_idx(facility).unwrap();
    let water = world.registry.category_idx("water").unwrap();
    let town = world.registry.facility(f).town;
    {
        let mut ledger = world.ledger.write().unwrap();
        let reading = Reading {
            facility: f,
            ts: at,
            seq: None,
            observation: Observation::Stock(vec![(water, liters)]),
        };
        ledger.apply(&reading, at);
        ledger.refresh(town, Utc::now());
    }
    world.changes.publish([town]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_officer_is_asked_to_count_a_stale_or_never_counted_store_and_told_when_it_is() {
    let smtp = SmtpServer::start();
    let gateway = HttpReceiver::start();
    let world = World::with_registry(&registry_with_manual_stores());
    world.stock("js-wh1", liters(5.0));
    world.stock("dh-wh1", liters(5.0));
    // Jingshan's store was counted yesterday morning; Donghua's never was.
    count_taken(&world, "js-wh2", 500.0, 25);
    let service = Service::start(
        &world,
        quick_config(),
        Some(&smtp.url()),
        Some(sms_gateway(&gateway.url())),
    )
    .await;

    let mails = smtp.wait_for(2, WAIT);
    let to = |who: &str| {
        mails
            .iter()
            .find(|m| m.to == vec![who.to_owned()])
            .unwrap_or_else(|| panic!("no mail to {who}: {mails:?}"))
    };
    let stale = to(OFFICER);
    assert!(
        stale
            .subject
            .starts_with("[Stockpile] 警告：景山街道 景山社区库请盘点（上次盘点 "),
        "{}",
        stale.subject
    );
    assert_eq!(
        to("dh.officer@example.org").subject,
        "[Stockpile] 警告：东华门街道 东华门社区库请盘点（从未盘点）"
    );
    let sms = gateway.wait_for(1, WAIT);
    let text = sms[0].json()["content"].as_str().unwrap().to_owned();
    assert!(
        text.starts_with("【Stockpile】警告：景山街道 景山社区库请盘点（上次盘点"),
        "{text}"
    );
    assert!(alerts::fits_one_sms(&text), "{text}");

    // A manual store is never silent or offline, however long it goes uncounted.
    let rules: Vec<Rule> = service
        .handle
        .list_alerts(&AlertFilter::default())
        .await
        .unwrap()
        .iter()
        .map(|a| a.rule)
        .collect();
    assert_eq!(rules, vec![Rule::CountDue, Rule::CountDue]);

    // The officer counts: the reminder resolves and says so.
    count_taken(&world, "js-wh2", 480.0, 0);
    let mails = smtp.wait_for(3, WAIT);
    assert_eq!(mails[2].to, vec![OFFICER]);
    assert_eq!(
        mails[2].subject,
        "[Stockpile] 已恢复：景山街道 景山社区库已盘点"
    );

    // A restart starts Donghua's never-counted store on a new grace: its reminder,
    // already firing, stays so and is not told as counted.
    let donghua = AlertFilter {
        town: Some("donghua".into()),
        ..AlertFilter::default()
    };
    let before = service.handle.list_alerts(&donghua).await.unwrap();
    service.stop().await;
    let service = Service::start(&world, quick_config(), Some(&smtp.url()), None).await;
    settle(Duration::from_millis(2600)).await; // past the new 2 s grace
    assert_eq!(smtp.messages().len(), 3, "{:?}", smtp.messages());
    let after = service.handle.list_alerts(&donghua).await.unwrap();
    assert_eq!(
        after.iter().map(|a| (a.id, a.state)).collect::<Vec<_>>(),
        [(before[0].id, AlertStatus::Firing)]
    );
    service.stop().await;
}
