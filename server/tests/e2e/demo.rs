//! `stockpile demo` as a newcomer runs it: the built binary, nothing else installed
//! (embedded broker, compiled-in registry). Within a minute all 343 towns report and
//! some fall below target, their officers' alert emails show on the console and land
//! in the mailbox directory it names; SIGINT stops it cleanly. When the flood brings
//! displaced people, the demo plays the bureau and the crews: a red warning, shelters
//! activated, their steps marked done.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Service;
use nix::sys::signal::Signal;

/// What the console prints before a notification's subject.
const EMAIL_LINE: &str = "✉ email to ";

/// The mailbox directory named in the demo's startup text.
fn mailbox(output: &str) -> PathBuf {
    let line = output
        .lines()
        .find(|l| l.trim_start().starts_with("Mailbox"))
        .unwrap_or_else(|| panic!("the startup text names the mailbox:\n{output}"));
    let path = line.trim_start()["Mailbox".len()..]
        .split("   (")
        .next()
        .unwrap()
        .trim();
    PathBuf::from(path)
}

/// Subjects of the `.eml` files in `dir`, decoded (RFC 2047) as a mail client shows them.
fn mail_subjects(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read the mailbox {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .filter_map(|p| {
            let raw = std::fs::read(&p).unwrap();
            let message = mail_parser::MessageParser::default().parse(&raw)?;
            message.subject().map(str::to_owned)
        })
        .collect()
}

/// Plain-text bodies of the `.eml` files in `dir`.
fn mail_texts(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read the mailbox {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .filter_map(|p| {
            let raw = std::fs::read(&p).unwrap();
            let message = mail_parser::MessageParser::default().parse(&raw)?;
            message.body_text(0).map(|t| t.into_owned())
        })
        .collect()
}

/// The first `{base}/ack/…` link in `text`.
fn ack_link(text: &str, base: &str) -> Option<String> {
    let start = text.find(&format!("{base}/ack/"))?;
    let link: String = text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && !matches!(c, ')' | '>' | '"' | '）'))
        .collect();
    Some(link)
}

#[test]
fn the_demo_shows_every_town_and_some_below_target_then_stops_on_sigint() {
    let port = testkit::free_port();
    let mqtt_port = testkit::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_stockpile"))
        .args([
            "demo",
            "--port",
            &port.to_string(),
            "--mqtt-port",
            &mqtt_port.to_string(),
        ])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start stockpile demo");
    let demo = Service::from_child(child);
    demo.wait_for_output("Wall board", Duration::from_secs(30));
    let base = format!("http://127.0.0.1:{port}");
    assert!(
        demo.output().contains(&format!("{base}/")),
        "prints the board URL"
    );
    let mailbox = mailbox(&demo.output());

    // Every town reporting, and the flood scenario driving some below three days.
    let deadline = Instant::now() + Duration::from_secs(60);
    let overview = loop {
        let overview = testkit::http::get(&format!("{base}/api/v1/towns"), &[]).json();
        let towns = overview["towns"].as_array().expect("towns list").clone();
        let reporting = towns.iter().filter(|t| t["status"] != "unknown").count();
        let critical = towns.iter().filter(|t| t["status"] == "critical").count();
        if towns.len() == 343 && reporting == 343 && critical > 0 {
            break towns;
        }
        assert!(
            Instant::now() < deadline,
            "after 60 s: {} towns, {reporting} reporting, {critical} critical\n{}",
            towns.len(),
            demo.output()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    // Each critical town's days and target: 3 days, or 5 once the demo's bureau has set
    // its red rainstorm warning (at the flood's second simulated hour).
    let below: Vec<(f64, f64)> = overview
        .iter()
        .filter(|t| t["status"] == "critical")
        .map(|t| {
            let target = t["warning_level"]["days_target"].as_f64().unwrap_or(3.0);
            (t["worst_days"].as_f64().unwrap(), target.max(3.0))
        })
        .collect();
    // Critical means below the target, or not yet 0.1 day (the hysteresis) above it.
    assert!(
        below.iter().all(|(d, target)| *d < target + 0.1),
        "critical towns (days, target): {below:?}"
    );
    assert!(
        below.iter().any(|(d, target)| d < target),
        "some town below target: {below:?}"
    );

    // Officers' alert emails: a line on the console for each, and the mail itself in
    // the mailbox, its subject naming the town.
    demo.wait_for_output(EMAIL_LINE, Duration::from_secs(60));
    let output = demo.output();
    let printed: Vec<&str> = output
        .lines()
        .filter(|l| l.contains(EMAIL_LINE))
        .map(|l| l.split_once("): ").map_or(l, |(_, subject)| subject))
        .collect();
    let subjects = mail_subjects(&mailbox);
    assert!(
        subjects.iter().any(|s| s == printed[0]),
        "the console's first email {:?} is a mail in {}: {subjects:?}",
        printed[0],
        mailbox.display()
    );
    let towns: Vec<&str> = overview
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        subjects
            .iter()
            .all(|s| s.starts_with("[Stockpile]") && towns.iter().any(|t| s.contains(t))),
        "every subject names a town: {subjects:?}"
    );

    // Each mail carries a signed link to this board's acknowledgement page.
    let link = mail_texts(&mailbox)
        .iter()
        .find_map(|text| ack_link(text, &base))
        .unwrap_or_else(|| panic!("no {base}/ack/ link in the mails in {}", mailbox.display()));
    let page = testkit::http::get(&link, &[]);
    assert_eq!(page.status, 200, "{link}: {}", page.body);
    assert!(
        page.body.contains("<form"),
        "the page has its button: {}",
        page.body
    );

    // The board is served by the binary itself.
    let board = testkit::http::get(&format!("{base}/"), &[]);
    assert_eq!(board.status, 200);
    assert!(board.body.contains("<html"), "the wall board page");

    demo.signal(Signal::SIGINT);
    let printed = demo.output();
    assert_eq!(demo.wait(Duration::from_secs(10)), Some(0), "{printed}");
}

/// `--scenario normal` at the default 720×: a well-kept city's calm day. The simulator
/// stamps readings on the wall clock with 720 times an interval's use in each, and the
/// engine reasons in simulated time, so once every town reports and its forecasts are
/// in (a simulated hour and three readings, about 20 s), no reserve alert has been
/// raised: no "forecast below target in 0.1 h", no warning for a town at 4 days. Only
/// equipment faults (the odd pump, a drifting battery) may be told.
#[test]
fn a_calm_demo_day_raises_no_reserve_alert() {
    let port = testkit::free_port();
    let mqtt_port = testkit::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_stockpile"))
        .args([
            "demo",
            "--scenario",
            "normal",
            "--port",
            &port.to_string(),
            "--mqtt-port",
            &mqtt_port.to_string(),
        ])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start stockpile demo");
    let demo = Service::from_child(child);
    demo.wait_for_output("Wall board", Duration::from_secs(30));
    let base = format!("http://127.0.0.1:{port}");

    // Every town reporting, and the first towns' consumption estimated (forecasts in).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let towns = testkit::http::get(&format!("{base}/api/v1/towns"), &[]).json();
        let towns = towns["towns"].as_array().expect("towns list").clone();
        let reporting = towns.iter().filter(|t| t["status"] != "unknown").count();
        let forecasting = towns.iter().take(5).all(|t| {
            let id = t["id"].as_str().unwrap();
            let town = testkit::http::get(&format!("{base}/api/v1/towns/{id}"), &[]).json();
            town["categories"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["consumption_per_h"].as_f64().is_some()))
        });
        if towns.len() == 343 && reporting == 343 && forecasting {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 120 s: {reporting} of {} towns reporting, forecasts in: {forecasting}\n{}",
            towns.len(),
            demo.output()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let alerts = testkit::http::get(&format!("{base}/api/v1/alerts"), &[("limit", "1000")]).json();
    let reserve: Vec<String> = alerts
        .as_array()
        .expect("alerts list")
        .iter()
        .filter(|a| {
            a["rule"]
                .as_str()
                .is_some_and(|r| r.starts_with("reserve_"))
        })
        .map(|a| format!("{} {} {}", a["town"], a["rule"], a["summary"]["en"]))
        .collect();
    assert!(
        reserve.is_empty(),
        "a calm day raised reserve alerts: {reserve:#?}"
    );

    demo.signal(Signal::SIGINT);
    let printed = demo.output();
    assert_eq!(demo.wait(Duration::from_secs(10)), Some(0), "{printed}");
}

/// The API token printed in the demo's startup text.
fn api_token(output: &str) -> String {
    let line = output
        .lines()
        .find(|l| l.trim_start().starts_with("API token"))
        .unwrap_or_else(|| panic!("the startup text names the token:\n{output}"));
    line.trim_start()["API token".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// GET `url` with the demo's admin token (who set and did what is left out without).
fn get_as_admin(url: &str, token: &str) -> serde_json::Value {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let answer = reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(answer.status(), 200, "GET {url}");
        answer.json().await.unwrap()
    })
}

/// `--scenario flood` at the default 720×: at the second simulated hour (10 s) the
/// displaced arrive, and the demo, as the bureau, sets a red rainstorm warning over
/// the towns taking them in (pre-activating their schools and gyms) and activates
/// their other shelters; crews mark the steps done over the next seconds, so the activations'
/// `steps_done` rises while the shelters open. Everything under the demo's own name.
#[test]
fn the_flood_demo_warns_red_activates_shelters_and_its_crews_mark_steps() {
    let port = testkit::free_port();
    let mqtt_port = testkit::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_stockpile"))
        .args(["demo", "--scenario", "flood", "--port", &port.to_string()])
        .args(["--mqtt-port", &mqtt_port.to_string()])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start stockpile demo");
    let demo = Service::from_child(child);
    demo.wait_for_output("Wall board", Duration::from_secs(30));
    let base = format!("http://127.0.0.1:{port}");
    let token = api_token(&demo.output());

    // The red level, set by the demo.
    let deadline = Instant::now() + Duration::from_secs(60);
    let red = loop {
        let levels = get_as_admin(&format!("{base}/api/v1/warning-level"), &token);
        let in_force = levels["in_force"].as_array().cloned().unwrap_or_default();
        if let Some(red) = in_force.iter().find(|l| l["level"] == "red") {
            break red.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no red level after 60 s: {levels}\n{}",
            demo.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        red["reason"],
        "演示：暴雨红色预警 / demo: red rainstorm warning"
    );
    assert_eq!(red["set_by"], "demo", "{red}");
    assert!(
        red["scope"]["towns"].is_array(),
        "over the towns taking people in: {red}"
    );

    // The activations' steps done rising, and shelters opening.
    let mut done_seen = Vec::new();
    let activations = loop {
        let list = get_as_admin(&format!("{base}/api/v1/activations"), &token);
        let list = list.as_array().cloned().unwrap_or_default();
        let done: u64 = list.iter().map(|a| a["steps_done"].as_u64().unwrap()).sum();
        if done_seen.last() != Some(&done) {
            done_seen.push(done);
        }
        let opened: u64 = list
            .iter()
            .map(|a| a["capacity_opened"].as_u64().unwrap())
            .sum();
        // Two rises seen (from one non-zero count to a higher one) and shelters open.
        if done_seen.iter().filter(|d| **d > 0).count() >= 2 && opened > 0 {
            break list;
        }
        assert!(
            Instant::now() < deadline,
            "after 60 s: steps done seen {done_seen:?}, capacity opened {opened}: {list:?}\n{}",
            demo.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        activations.iter().all(|a| a["state"] == "open"),
        "{activations:?}"
    );
    let started_by: Vec<&str> = activations
        .iter()
        .filter_map(|a| a["started_by"].as_str())
        .collect();
    assert!(
        started_by.contains(&"warning-level"),
        "the red level pre-activated: {started_by:?}"
    );
    let done_by: Vec<&str> = activations
        .iter()
        .flat_map(|a| a["shelters"].as_array().unwrap())
        .flat_map(|s| s["steps"].as_array().unwrap())
        .filter_map(|step| step["done_by"].as_str())
        .collect();
    assert!(
        !done_by.is_empty() && done_by.iter().all(|by| *by == "demo"),
        "{done_by:?}"
    );
    let open = activations
        .iter()
        .flat_map(|a| a["shelters"].as_array().unwrap())
        .filter(|s| s["mode"] == "open")
        .count();
    assert!(open > 0, "shelters open: {activations:?}");
    assert!(
        demo.output().contains("sets a red warning over the"),
        "the console says so:\n{}",
        demo.output()
    );

    demo.signal(Signal::SIGINT);
    let printed = demo.output();
    assert_eq!(demo.wait(Duration::from_secs(10)), Some(0), "{printed}");
}
