//! The scheduled stress test through the whole service (issue 17): `stockpile serve`
//! with a `[stress_test]`, a reading published to real Mosquitto, the report mailed to
//! the district contact at the real SMTP server with its XLSX attached; the workbook's
//! lines are the stored runs' (`GET /api/v1/scenarios/{id}`), and a restart within the
//! interval sends nothing again.

use std::io::Cursor;
use std::time::{Duration, Instant};

use calamine::{Data, DataType, Reader, Xlsx};
use chrono::Utc;
use mail_parser::{MessageParser, MimeHeaders};
use nix::sys::signal::Signal;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde_json::Value;

use crate::common::{Deployment, Service};

/// The first run this long after the first start: time to publish the reading.
const FIRST_AFTER_S: u64 = 8;

async fn get(url: &str) -> Value {
    let answer = reqwest::get(url).await.expect("the API answers");
    assert_eq!(answer.status(), 200, "{url}");
    answer.json().await.expect("JSON")
}

async fn publish_water(port: u16, facility: &str, litres: u32) {
    let mut options = MqttOptions::new("gw-stress", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let ts = Utc::now().timestamp_millis();
    client
        .publish(
            format!("stockpile/v1/jingshan/{facility}/reading"),
            QoS::AtLeastOnce,
            false,
            format!(r#"{{"ts": {ts}, "stock": {{"water": {litres}}}}}"#),
        )
        .await
        .unwrap();
    let acked = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Event::Incoming(Incoming::PubAck(_))) = eventloop.poll().await {
                return;
            }
        }
    })
    .await;
    assert!(acked.is_ok(), "the broker did not acknowledge the reading");
}

/// The workbook's rows under its two header rows, keyed by the English header.
fn workbook_lines(bytes: Vec<u8>) -> Vec<Vec<(String, Data)>> {
    let mut workbook: Xlsx<_> = Xlsx::new(Cursor::new(bytes)).expect("an XLSX calamine reads");
    let range = workbook
        .worksheet_range("体检 Stress test")
        .expect("the sheet");
    let rows: Vec<Vec<Data>> = range.rows().map(<[Data]>::to_vec).collect();
    let header: Vec<String> = rows[1].iter().map(|h| h.to_string()).collect();
    rows[2..]
        .iter()
        .map(|row| header.iter().cloned().zip(row.iter().cloned()).collect())
        .collect()
}

fn cell<'a>(line: &'a [(String, Data)], en: &str) -> &'a Data {
    &line
        .iter()
        .find(|(h, _)| h == en)
        .unwrap_or_else(|| panic!("no {en}"))
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_stress_test_mails_the_district_its_report_once() {
    let broker = testkit::Mosquitto::start();
    let smtp = testkit::SmtpServer::start();
    let deployment = Deployment::with_sections(
        &format!(
            "url = \"{}\"\nclient_id = \"stockpile-stress\"\n",
            broker.url()
        ),
        &format!(
            "[smtp]\nurl = \"{}\"\nfrom = \"Stockpile <alerts@example.org>\"\n\
             [stress_test]\nevery = \"1h\"\nfirst_after = \"{FIRST_AFTER_S}s\"\n\
             scenarios = [{{ name = \"water_cut\", water_cut = {{ water_need_l_per_person = 15 }} }},\n\
                          {{ name = \"surge\", population_surge = {{ factor = 2 }} }}]\n",
            smtp.url()
        ),
    );
    let registry = deployment.dir.path().join("registry.toml");
    let mut text = std::fs::read_to_string(&registry).unwrap();
    text.push_str(
        "\n[[contact]]\nname = \"Zhao Min\"\nemail = \"district@example.org\"\nlang = \"en\"\ndistricts = [\"dongcheng\"]\n",
    );
    std::fs::write(&registry, text).unwrap();

    let service = tokio::task::block_in_place(|| Service::start(&deployment.config()));
    let api = tokio::task::block_in_place(|| service.api_url());
    // 30,000 people at 3 L: 90,000 L a day, so 400,000 L is 4.4 days today; at 15 L
    // under the cut 0.9 days, for twice the people 2.2 days.
    publish_water(broker.port(), "js-wh0", 400_000).await;

    let mails = tokio::task::block_in_place(|| smtp.wait_for(1, Duration::from_secs(60)));
    let mail = &mails[0];
    assert_eq!(mail.to, ["district@example.org"]);
    assert!(mail.subject.contains("Stress test"), "{}", mail.subject);
    let html = mail.body_html.as_deref().expect("an HTML part");
    assert!(
        html.contains("景山街道 (jingshan) water: 0.9 days"),
        "{html}"
    );
    assert!(
        mail.body_text.contains(
            "[water_cut] 景山街道 (jingshan) water: 0.9 days (target 3.0), short 950000 L"
        ),
        "{}",
        mail.body_text
    );
    let parsed = MessageParser::default()
        .parse(&mail.raw)
        .expect("a MIME message");
    let attachment = parsed.attachments().next().expect("an attachment");
    assert!(attachment.attachment_name().unwrap().ends_with(".xlsx"));
    let lines = workbook_lines(attachment.contents().to_vec());

    let latest = get(&format!("{api}/api/v1/stress-test/latest")).await;
    let runs = latest["scenarios"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    let mut expected = 0;
    for run in runs {
        let stored = get(&format!("{api}/api/v1/scenarios/{}", run["run"])).await;
        assert_eq!(stored["request"]["name"], run["name"]);
        for short in stored["below_target"].as_array().unwrap() {
            expected += 1;
            let line = lines
                .iter()
                .find(|l| {
                    *cell(l, "Scenario") == run["name"].as_str().unwrap()
                        && *cell(l, "Town") == short["town"].as_str().unwrap()
                })
                .unwrap_or_else(|| panic!("no line for {short} in {lines:?}"));
            assert_eq!(
                cell(line, "Category").to_string(),
                short["category"].as_str().unwrap()
            );
            assert_eq!(cell(line, "Days after").get_float(), short["days"].as_f64());
            assert_eq!(
                cell(line, "Target days").get_float(),
                short["target_days"].as_f64()
            );
        }
    }
    assert_eq!(lines.len(), expected, "a line per shortfall of each run");
    assert!(
        expected >= 2,
        "jingshan is short under both scenarios: {lines:?}"
    );
    assert_eq!(latest["weakest"][0]["town"], "jingshan");

    // A restart within the hour: the schedule is in the store, so the first run is not
    // made again `first_after` from this start.
    service.signal(Signal::SIGTERM);
    assert_eq!(
        tokio::task::block_in_place(|| service.wait(Duration::from_secs(20))),
        Some(0)
    );
    let again = tokio::task::block_in_place(|| Service::start(&deployment.config()));
    tokio::task::block_in_place(|| {
        again.wait_for_log("Stress test scheduled.", Duration::from_secs(20))
    });
    let api = tokio::task::block_in_place(|| again.api_url());
    let after = get(&format!("{api}/api/v1/stress-test/latest")).await;
    assert_eq!(after["id"], latest["id"], "the same report is the latest");
    // Proving an absence takes waiting: past the moment an unpersisted schedule would
    // have run again, with room for a slow machine.
    let quiet_until = Instant::now() + Duration::from_secs(FIRST_AFTER_S + 5);
    while Instant::now() < quiet_until {
        assert_eq!(
            smtp.messages().len(),
            1,
            "the report was sent again after a restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    again.signal(Signal::SIGTERM);
    tokio::task::block_in_place(|| again.wait(Duration::from_secs(20)));
}

/// `stockpile check-config` on `extra` sections; (exit code, stderr).
fn check_config(extra: &str) -> (Option<i32>, String) {
    let deployment = Deployment::with_sections("url = \"mqtt://127.0.0.1:1883\"\n", extra);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_stockpile"))
        .arg("check-config")
        .arg(deployment.config())
        .env_remove("RUST_LOG")
        .output()
        .expect("run stockpile check-config");
    let text = std::fs::read_to_string(deployment.config()).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    // Problems name the line of the config they are on: `stockpile.toml:12: …`.
    let located = stderr
        .lines()
        .filter(|l| l.contains("stress_test"))
        .all(|l| {
            let line = l
                .split(':')
                .nth(1)
                .and_then(|n| n.trim().parse::<usize>().ok());
            line.is_some_and(|n| n >= 1 && n <= text.lines().count())
        });
    assert!(located, "every problem located: {stderr}");
    (output.status.code(), stderr)
}

#[test]
fn check_config_names_each_bad_scenario_at_its_line() {
    let (code, stderr) = check_config(
        "[stress_test]\nevery = \"0s\"\nscenarios = [\n\
         { name = \"long\", road_cut_days = 400 },\n\
         { water_cut = { water_need_l_per_person = 15 } },\n\
         { name = \"long\", population_surge = { towns = { nowhere = 10 } } },\n]\n",
    );
    assert_ne!(code, Some(0), "{stderr}");
    for want in [
        "stress_test.every: must be > 0",
        "stress_test.scenarios[0].road_cut_days: must be between 0 and 365, got 400",
        "stress_test.scenarios[1].name: every scenario needs a name",
        "stress_test.scenarios[2].name: \"long\" is used by another scenario",
        "stress_test.scenarios[2].population_surge.towns.nowhere: unknown town",
    ] {
        assert!(stderr.contains(want), "no {want:?} in:\n{stderr}");
    }
    let (code, stderr) = check_config("[stress_test]\nat = \"25:00\"\n");
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("stress_test.at: expected a time of day such as \"06:00\", got \"25:00\""),
        "{stderr}"
    );
    let (code, stderr) = check_config("[stress_test]\nevery = \"400d\"\n");
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("stress_test.every: must be at most 365d"),
        "{stderr}"
    );
    let (code, stderr) = check_config("[stress_test]\nevery = \"7d\"\nat = \"06:00\"\n");
    assert_eq!(
        code,
        Some(0),
        "the default scenarios fit the registry: {stderr}"
    );
}
