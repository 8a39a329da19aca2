//! Reloading the registry while running (docs/design.md#registry-reload), against the
//! real binary: real Mosquitto, a real SMTP server, the SQLite file. The registry file
//! is edited as an operator would edit it, then `POST /api/v1/registry/reload` or
//! `kill -HUP` makes the running service take it, or refuse it with located errors.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::common::{Api, Service, publish_reading};

const ADMIN: &str = "admin-token-0123456789";
const OFFICER: &str = "officer-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";
const NIGHT_ADMIN: &str = "night-admin-token-0123456789";

/// A town with facilities (`id`, `name`), as the registry file lists them.
struct Town<'a> {
    id: &'a str,
    population: u64,
    facilities: &'a [(&'a str, &'a str)],
}

/// The registry file's text: drinking water only, every facility a warehouse
/// reporting every second (silent after 3 s), Li Wei the officer of every town.
fn registry(towns: &[Town<'_>]) -> String {
    let mut text = String::from(
        "[[category]]\nid = \"water\"\nname = \"Drinking water\"\nunit = \"L\"\ndaily_need = 3.0\n",
    );
    for town in towns {
        text.push_str(&format!(
            "\n[[town]]\nid = \"{}\"\nname = \"{}\"\ndistrict = \"dongcheng\"\ncluster = \"c01\"\npopulation = {}\n",
            town.id, town.id, town.population
        ));
        for (id, name) in town.facilities {
            text.push_str(&format!(
                "\n[[facility]]\nid = \"{id}\"\nname = \"{name}\"\ntown = \"{}\"\nkind = \"warehouse\"\nreport_every = \"1s\"\n",
                town.id
            ));
        }
    }
    let ids: Vec<String> = towns.iter().map(|t| format!("\"{}\"", t.id)).collect();
    text.push_str(&format!(
        "\n[[contact]]\nname = \"Li Wei\"\nemail = \"li.wei@example.org\"\nlang = \"en\"\ntowns = [{}]\n",
        ids.join(", ")
    ));
    text
}

/// `[api]` tokens: `(name, role, token)`; officers are Jingshan's.
fn tokens(tokens: &[(&str, &str, &str)]) -> String {
    let entries: Vec<String> = tokens
        .iter()
        .map(|(name, role, token)| {
            let towns = if *role == "officer" {
                ", towns = [\"jingshan\"]"
            } else {
                ""
            };
            format!("{{ name = \"{name}\", role = \"{role}\", token = \"{token}\"{towns} }}")
        })
        .collect();
    format!("tokens = [{}]\n", entries.join(", "))
}

/// A deployment whose registry and tokens the test rewrites.
struct Deployment {
    dir: tempfile::TempDir,
    broker: String,
    smtp: String,
}

impl Deployment {
    fn new(broker: &testkit::Mosquitto, smtp: &testkit::SmtpServer, towns: &[Town<'_>]) -> Self {
        let deployment = Deployment {
            dir: tempfile::tempdir().unwrap(),
            broker: broker.url(),
            smtp: smtp.url(),
        };
        deployment.write_registry(towns);
        deployment.write_config(&[
            ("ops", "admin", ADMIN),
            ("li", "officer", OFFICER),
            ("wall", "viewer", VIEWER),
        ]);
        deployment
    }

    fn write_registry(&self, towns: &[Town<'_>]) {
        std::fs::write(self.dir.path().join("registry.toml"), registry(towns)).unwrap();
    }

    fn write_registry_text(&self, text: &str) {
        std::fs::write(self.dir.path().join("registry.toml"), text).unwrap();
    }

    /// No start-up grace and no group wait: every alert is told at once.
    fn write_config(&self, api_tokens: &[(&str, &str, &str)]) {
        let config = format!(
            "registry = \"registry.toml\"\n[mqtt]\nurl = \"{}\"\nclient_id = \"stockpile-reload\"\n\
             [store]\npath = \"stockpile.db\"\n\
             [api]\nlisten = \"127.0.0.1:0\"\npublic_read = true\n{}\
             [alerts]\ngroup_wait = \"0s\"\nstartup_grace_factor = 0\n\
             [smtp]\nurl = \"{}\"\nfrom = \"Stockpile <alerts@example.org>\"\n",
            self.broker,
            tokens(api_tokens),
            self.smtp
        );
        std::fs::write(self.config(), config).unwrap();
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("stockpile.toml")
    }

    fn registry_path(&self) -> PathBuf {
        self.dir.path().join("registry.toml")
    }
}

/// Publishes one water reading with QoS 1 and waits for the broker's PUBACK.
async fn publish_water(broker: &testkit::Mosquitto, town: &str, facility: &str, litres: u64) {
    let water = format!(r#""stock": {{"water": {litres}}}"#);
    publish_reading(broker, town, facility, &water).await;
}

impl Api {
    async fn reload(&self, token: Option<&str>) -> (u16, Value) {
        self.post("/api/v1/registry/reload", token, None).await
    }

    /// The town's water stock, once it is `litres`.
    async fn wait_for_stock(&self, town: &str, litres: f64) -> Value {
        self.wait_for(&format!("/api/v1/towns/{town}"), "stock", |t| {
            t["categories"][0]["stock"].as_f64() == Some(litres)
        })
        .await
    }

    /// The alerts of `town` in `state` with `rule`.
    async fn alerts(&self, town: &str, state: &str, rule: &str) -> Vec<Value> {
        let (_, alerts) = self
            .get(
                &format!("/api/v1/alerts?town={town}&state={state}"),
                Some(ADMIN),
            )
            .await;
        alerts
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["rule"] == rule)
            .collect()
    }
}

/// Waits for a mail whose text contains `needle`.
fn wait_for_mail(smtp: &testkit::SmtpServer, needle: &str) -> testkit::ReceivedMail {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(mail) = smtp
            .messages()
            .into_iter()
            .find(|m| m.body_text.contains(needle))
        {
            return mail;
        }
        assert!(
            Instant::now() < deadline,
            "no mail saying {needle:?} within 30 s; mails: {:?}",
            smtp.messages()
                .iter()
                .map(|m| &m.body_text)
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start(deployment: &Deployment) -> Service {
    tokio::task::block_in_place(|| Service::start(&deployment.config()))
}

fn jingshan<'a>(population: u64, facilities: &'a [(&'a str, &'a str)]) -> Town<'a> {
    Town {
        id: "jingshan",
        population,
        facilities,
    }
}

fn audit_of_reloads(audit: &Value) -> Vec<Value> {
    audit
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["action"] == "registry_reload")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_over_http_adds_and_removes_facilities_and_tokens() {
    let broker = testkit::Mosquitto::start();
    let smtp = testkit::SmtpServer::start();
    let before = [("js-wh1", "North depot"), ("js-wh2", "Old depot")];
    let deployment = Deployment::new(&broker, &smtp, &[jingshan(1000, &before)]);
    let service = start(&deployment);
    let api = Api::of(&service, ADMIN);

    // 15,000 L for 1,000 people is 5 days. The old depot reports once, then falls
    // silent: its alert fires and Li Wei is told.
    publish_water(&broker, "jingshan", "js-wh1", 15_000).await;
    publish_water(&broker, "jingshan", "js-wh2", 0).await;
    api.wait_for_stock("jingshan", 15_000.0).await;
    api.wait_for(
        "/api/v1/alerts?town=jingshan&state=firing",
        "silent alert",
        |a| {
            a.as_array()
                .is_some_and(|a| a.iter().any(|a| a["rule"] == "facility_silent"))
        },
    )
    .await;
    tokio::task::block_in_place(|| wait_for_mail(&smtp, "Old depot"));

    // Only an admin reloads.
    assert_eq!(api.reload(None).await.0, 401);
    assert_eq!(api.reload(Some(OFFICER)).await.0, 403);
    assert_eq!(api.reload(Some(VIEWER)).await.0, 403);

    // The operator replaces the old depot with a new one, and the wall's token with a
    // night shift admin's.
    let after = [("js-wh3", "New depot"), ("js-wh1", "North depot")];
    deployment.write_registry(&[jingshan(1000, &after)]);
    deployment.write_config(&[
        ("ops", "admin", ADMIN),
        ("li", "officer", OFFICER),
        ("night", "admin", NIGHT_ADMIN),
    ]);
    let (status, summary) = api.reload(Some(ADMIN)).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["facilities_added"], serde_json::json!(["js-wh3"]));
    assert_eq!(summary["facilities_removed"], serde_json::json!(["js-wh2"]));
    assert_eq!(summary["facilities"], 2);
    assert_eq!(summary["tokens"], 3);

    // At once: the new depot has never reported, the old one is gone, North depot
    // keeps its stock.
    let (status, new_depot) = api.get("/api/v1/facilities/js-wh3", None).await;
    assert_eq!(status, 200, "{new_depot}");
    assert_eq!(new_depot["never_reported"], true);
    assert_eq!(api.get("/api/v1/facilities/js-wh2", None).await.0, 404);
    let town = api.wait_for_stock("jingshan", 15_000.0).await;
    assert_eq!(town["never_reported"], serde_json::json!(["js-wh3"]));

    // The old depot's alert resolved, saying why, and Li Wei is told so.
    let resolved = api
        .wait_for(
            "/api/v1/alerts?town=jingshan&state=resolved",
            "the removed depot's alert resolved",
            |a| {
                a.as_array()
                    .is_some_and(|a| a.iter().any(|a| a["rule"] == "facility_silent"))
            },
        )
        .await;
    let silent = resolved
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["rule"] == "facility_silent")
        .unwrap();
    assert_eq!(silent["detail"]["kind"], "removed", "{silent}");
    assert_eq!(
        silent["summary"]["en"], "Old depot removed from the registry",
        "{silent}"
    );
    assert_eq!(
        silent["summary"]["zh"], "Old depot已从登记册中移除",
        "{silent}"
    );
    let mail =
        tokio::task::block_in_place(|| wait_for_mail(&smtp, "Old depot removed from the registry"));
    assert!(mail.to.contains(&"li.wei@example.org".to_owned()));

    // The new depot's reading counts like any other.
    publish_water(&broker, "jingshan", "js-wh3", 6_000).await;
    api.wait_for_stock("jingshan", 21_000.0).await;

    // The tokens follow the config: the night shift's works, the wall's is gone.
    assert_eq!(api.get("/api/v1/me", Some(NIGHT_ADMIN)).await.0, 200);
    assert_eq!(api.get("/api/v1/me", Some(VIEWER)).await.0, 401);

    // The audit log says who reloaded, from where, and what changed.
    let (_, audit) = api.get("/api/v1/audit", Some(ADMIN)).await;
    let reloads = audit_of_reloads(&audit);
    assert_eq!(reloads.len(), 1, "{audit}");
    assert_eq!(reloads[0]["actor"], "ops");
    assert_eq!(reloads[0]["via"], "token");
    assert!(
        reloads[0]["remote"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    let detail = reloads[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("facilities added: js-wh3")
            && detail.contains("facilities removed: js-wh2"),
        "{detail}"
    );
    assert_eq!(reloads[0]["towns"], serde_json::json!(["jingshan"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_registry_is_refused_with_located_errors_and_the_old_one_keeps_working() {
    let broker = testkit::Mosquitto::start();
    let smtp = testkit::SmtpServer::start();
    let depots = [("js-wh1", "North depot")];
    let deployment = Deployment::new(&broker, &smtp, &[jingshan(1000, &depots)]);
    let service = start(&deployment);
    let api = Api::of(&service, ADMIN);
    publish_water(&broker, "jingshan", "js-wh1", 15_000).await;
    api.wait_for_stock("jingshan", 15_000.0).await;

    // A typo'd field and a facility listed twice.
    let good = registry(&[jingshan(1000, &depots)]);
    let broken = good.replace("population = 1000", "populaton = 2000")
        + "\n[[facility]]\nid = \"js-wh1\"\ntown = \"jingshan\"\nkind = \"warehouse\"\n";
    deployment.write_registry_text(&broken);
    let (status, body) = api.reload(Some(ADMIN)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_registry");
    let problems = body["error"]["problems"].as_array().unwrap();
    let registry_file = deployment.registry_path().display().to_string();
    let line_of = |needle: &str| broken.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let typo = problems
        .iter()
        .find(|p| p["message"].as_str().unwrap().contains("populaton"))
        .unwrap_or_else(|| panic!("no problem names the typo: {body}"));
    assert_eq!(typo["file"], registry_file.as_str());
    assert_eq!(typo["line"], line_of("populaton"));
    assert_eq!(typo["field"], "town \"jingshan\": populaton");
    let duplicate = problems
        .iter()
        .find(|p| {
            p["message"]
                .as_str()
                .unwrap()
                .contains("duplicate facility")
        })
        .unwrap_or_else(|| panic!("no problem names the duplicate: {body}"));
    assert_eq!(duplicate["file"], registry_file.as_str());
    let lines: Vec<&str> = broken.lines().collect();
    let second_id = lines.iter().rposition(|l| *l == "id = \"js-wh1\"").unwrap();
    assert_eq!(duplicate["line"], second_id + 1);
    // The log says so too.
    tokio::task::block_in_place(|| {
        service.wait_for_log("Registry reload refused", Duration::from_secs(10))
    });
    assert!(service.output().contains("unknown field `populaton`"));

    // The old registry keeps working: population unchanged, readings still apply.
    let (_, town) = api.get("/api/v1/towns/jingshan", None).await;
    assert_eq!(town["population"], 1000);
    publish_water(&broker, "jingshan", "js-wh1", 12_000).await;
    api.wait_for_stock("jingshan", 12_000.0).await;

    // The refusal is in the audit log.
    let (_, audit) = api.get("/api/v1/audit", Some(ADMIN)).await;
    let reloads = audit_of_reloads(&audit);
    assert_eq!(reloads.len(), 1, "{audit}");
    assert!(
        reloads[0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("refused: "),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_a_population_change_moves_the_days_and_the_alert() {
    let broker = testkit::Mosquitto::start();
    let smtp = testkit::SmtpServer::start();
    let depots = [("js-wh1", "North depot")];
    let deployment = Deployment::new(&broker, &smtp, &[jingshan(1000, &depots)]);
    let service = start(&deployment);
    let api = Api::of(&service, ADMIN);
    // 15,000 L: 5 days for 1,000 people.
    publish_water(&broker, "jingshan", "js-wh1", 15_000).await;
    let town = api.wait_for_stock("jingshan", 15_000.0).await;
    assert_eq!(town["worst_days"], 5.0);
    assert!(
        api.alerts("jingshan", "firing", "reserve_below_target")
            .await
            .is_empty()
    );

    // The town takes in a neighbourhood: 2,000 people now, 2.5 days.
    deployment.write_registry(&[jingshan(2000, &depots)]);
    service.signal(Signal::SIGHUP);
    let town = api
        .wait_for("/api/v1/towns/jingshan", "the new population", |t| {
            t["population"] == 2000
        })
        .await;
    assert_eq!(town["worst_days"], 2.5, "{town}");
    assert_eq!(town["status"], "critical", "{town}");
    api.wait_for(
        "/api/v1/alerts?town=jingshan&state=firing",
        "the shortfall alert",
        |a| {
            a.as_array()
                .is_some_and(|a| a.iter().any(|a| a["rule"] == "reserve_below_target"))
        },
    )
    .await;
    tokio::task::block_in_place(|| wait_for_mail(&smtp, "2.5"));

    // Back to 1,000: the alert resolves.
    deployment.write_registry(&[jingshan(1000, &depots)]);
    service.signal(Signal::SIGHUP);
    api.wait_for(
        "/api/v1/alerts?town=jingshan&state=resolved",
        "the shortfall resolved",
        |a| {
            a.as_array()
                .is_some_and(|a| a.iter().any(|a| a["rule"] == "reserve_below_target"))
        },
    )
    .await;

    // The signal is the actor in the audit log (written after the swap: a signal has
    // nobody to answer, so the test waits for it).
    let audit = api
        .wait_for("/api/v1/audit", "two audited reloads", |a| {
            audit_of_reloads(a).len() == 2
        })
        .await;
    let reloads = audit_of_reloads(&audit);
    assert!(
        reloads
            .iter()
            .all(|r| r["actor"] == "SIGHUP" && r["via"] == "signal"),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_takes_only_its_new_towns_and_subscribes_to_them() {
    use reserve::shard::town_shard;
    let broker = testkit::Mosquitto::start();
    let smtp = testkit::SmtpServer::start();
    // Pinned as shard.rs reads them off: jingshan and donghua are shard 0 of 2,
    // jianwai shard 1.
    assert_eq!(
        [
            town_shard("jingshan", 2),
            town_shard("donghua", 2),
            town_shard("jianwai", 2)
        ],
        [0, 0, 1]
    );
    let depots = [("js-wh1", "North depot")];
    let deployment = Deployment::new(&broker, &smtp, &[jingshan(1000, &depots)]);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_stockpile"))
        .args(["serve", "--config"])
        .arg(deployment.config())
        .args(["--shard", "0/2"])
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start stockpile serve --shard 0/2");
    let service = Service::from_child(child);
    tokio::task::block_in_place(|| service.wait_for_log("Subscribed", Duration::from_secs(20)));
    let api = Api::of(&service, ADMIN);

    let donghua = [("dh-wh1", "Donghua depot")];
    let jianwai = [("jw-wh1", "Jianwai depot")];
    deployment.write_registry(&[
        jingshan(1000, &depots),
        Town {
            id: "donghua",
            population: 1000,
            facilities: &donghua,
        },
        Town {
            id: "jianwai",
            population: 1000,
            facilities: &jianwai,
        },
    ]);
    let (status, summary) = api.reload(Some(ADMIN)).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["towns"], 2, "{summary}");
    assert_eq!(summary["towns_added"], serde_json::json!(["donghua"]));
    assert_eq!(api.get("/api/v1/towns/jianwai", None).await.0, 404);

    // The new town's readings reach this instance: it subscribes to its topics (a
    // reading published before the broker granted them would not be kept for us).
    let deadline = Instant::now() + Duration::from_secs(20);
    while service.output().matches("Subscribed.").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "no second subscription:\n{}",
            service.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        service
            .output()
            .contains("Subscribing to the towns a reload added.")
    );
    publish_water(&broker, "donghua", "dh-wh1", 9_000).await;
    api.wait_for_stock("donghua", 9_000.0).await;
}
