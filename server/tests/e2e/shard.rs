//! Scale-out by town (docs/design.md#scale-out-by-town): two
//! `stockpile serve --shard i/2` processes, one config file, one real Mosquitto. Each
//! instance must show only its towns and store only their readings, and between them
//! every reading must be stored exactly once.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Service;
use chrono::Utc;
use reserve::FacilityId;
use reserve::shard::town_shard;
use rumqttc::{Client, Event, Incoming, MqttOptions, QoS};
use store::{Store, StoreOptions};

/// Towns with one warehouse each, and the shard of two each belongs to (pinned here as
/// an operator would read it off `check-config --shard`).
const TOWNS: [(&str, &str, u32); 6] = [
    ("jingshan", "c01", 0),
    ("jianwai", "c01", 1),
    ("donghua", "c02", 0),
    ("beixinqiao", "c02", 1),
    ("jinrong", "c03", 0),
    ("jiaodaokou", "c04", 1),
];

/// Towns without facilities, so that each instance subscribes to more filters than fit
/// in one SUBSCRIBE packet (256) and must wait for every SUBACK before it counts as
/// subscribed. Listed first: the towns that get readings are in the last packet.
const FILLER_TOWNS: usize = 300;

fn filler(i: usize) -> String {
    format!("filler-{i:03}")
}

fn write_deployment(dir: &Path, broker_url: &str) {
    let mut registry = String::from(
        "[[category]]\nid = \"water\"\nname = \"Drinking water\"\nunit = \"L\"\ndaily_need = 3.0\n",
    );
    let town = |id: &str, cluster: &str| {
        format!(
            "\n[[town]]\nid = \"{id}\"\nname = \"{id}\"\ndistrict = \"dongcheng\"\ncluster = \"{cluster}\"\npopulation = 10000\n"
        )
    };
    for i in 0..FILLER_TOWNS {
        registry.push_str(&town(&filler(i), "c09"));
    }
    for (id, cluster, _) in TOWNS {
        registry.push_str(&town(id, cluster));
        registry.push_str(&format!(
            "\n[[facility]]\nid = \"{id}-wh\"\ntown = \"{id}\"\nkind = \"warehouse\"\n"
        ));
        registry.push_str(&format!(
            "\n[[contact]]\nname = \"{id} officer\"\nemail = \"{id}@example.org\"\ntowns = [\"{id}\"]\n"
        ));
    }
    std::fs::write(dir.join("registry.toml"), registry).unwrap();
    // One config for every instance: what differs per instance comes from the command
    // line and the environment, as in the systemd template of deploy/README.md.
    std::fs::write(
        dir.join("stockpile.toml"),
        format!(
            "registry = \"registry.toml\"\n[mqtt]\nurl = \"{broker_url}\"\nclient_id = \"stockpile-test\"\n\
             [api]\nlisten = \"127.0.0.1:0\"\npublic_read = true\n[log]\nlevel = \"info\"\n"
        ),
    )
    .unwrap();
}

fn start_shard(dir: &Path, shard: &str, db: &str) -> Service {
    let child = Command::new(env!("CARGO_BIN_EXE_stockpile"))
        .args(["serve", "--config"])
        .arg(dir.join("stockpile.toml"))
        .args(["--shard", shard])
        .env("STOCKPILE__STORE__PATH", db)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start stockpile serve --shard");
    let service = Service::from_child(child);
    service.wait_for_log("Subscribed", Duration::from_secs(30));
    service
}

/// Publishes `(town, ts offset in ms)` readings with QoS 1, in order on one connection,
/// and waits for the broker's PUBACKs.
fn publish(port: u16, readings: &[(&str, i64)]) {
    let (client, mut connection) =
        Client::new(MqttOptions::new("gw-shard-test", "127.0.0.1", port), 64);
    let start = Utc::now() - chrono::Duration::minutes(1);
    for &(town, offset_ms) in readings {
        let ts = start + chrono::Duration::milliseconds(offset_ms);
        let payload = serde_json::json!({"ts": ts.timestamp_millis(), "stock": {"water": 90_000}});
        client
            .publish(
                format!("stockpile/v1/{town}/{town}-wh/reading"),
                QoS::AtLeastOnce,
                false,
                serde_json::to_vec(&payload).unwrap(),
            )
            .unwrap();
    }
    let mut acked = 0;
    while acked < readings.len() {
        match connection.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(Event::Incoming(Incoming::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("publisher lost the broker: {e}"),
            Err(_) => panic!("only {acked} of {} readings acknowledged", readings.len()),
        }
    }
    let _ = client.disconnect();
}

fn open(db: &Path) -> Store {
    Store::open(db, StoreOptions::default()).expect("open the shard's SQLite file")
}

/// The towns whose warehouse has readings in `db`, with how many.
fn stored_towns(db: &Path) -> Vec<(String, usize)> {
    let store = open(db);
    let (from, to) = (
        Utc::now() - chrono::Duration::hours(1),
        Utc::now() + chrono::Duration::hours(1),
    );
    TOWNS
        .iter()
        .filter_map(|(town, _, _)| {
            let facility = FacilityId::parse(&format!("{town}-wh")).unwrap();
            let n = store.readings(&facility, from, to, 100).unwrap().len();
            (n > 0).then(|| (town.to_string(), n))
        })
        .collect()
}

fn ids(json: &serde_json::Value, list: &str) -> BTreeSet<String> {
    json[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {json}"))
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Log lines without the terminal colours of the text format.
fn plain(output: &str) -> String {
    let mut out = String::with_capacity(output.len());
    let mut chars = output.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn two_shards_split_the_towns_and_store_every_reading_once() {
    let broker = testkit::Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    write_deployment(dir.path(), &broker.url());
    let dbs = [dir.path().join("shard-0.db"), dir.path().join("shard-1.db")];
    let shards = [
        start_shard(dir.path(), "0/2", "shard-0.db"),
        start_shard(dir.path(), "1/2", "shard-1.db"),
    ];

    // Every town once, then one more reading for a town of each shard: the broker
    // delivers in order, so once an instance has stored its last reading it has seen
    // everything published before it, including whatever it should not have received.
    let mut readings: Vec<(&str, i64)> = TOWNS.iter().map(|(t, _, _)| (*t, 0)).collect();
    readings.extend([("jinrong", 1000), ("jiaodaokou", 1000)]);
    publish(broker.port(), &readings);

    let want = [
        vec![
            ("jingshan".to_owned(), 1),
            ("donghua".to_owned(), 1),
            ("jinrong".to_owned(), 2),
        ],
        vec![
            ("jianwai".to_owned(), 1),
            ("beixinqiao".to_owned(), 1),
            ("jiaodaokou".to_owned(), 2),
        ],
    ];
    for (i, db) in dbs.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !db.exists() || stored_towns(db).iter().map(|(_, n)| n).sum::<usize>() < 4 {
            assert!(
                Instant::now() < deadline,
                "shard {i}/2 stored {:?}, expected {:?}:\n{}",
                db.exists().then(|| stored_towns(db)),
                want[i],
                shards[i].output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for (i, db) in dbs.iter().enumerate() {
        let mut got = stored_towns(db);
        got.sort_by_key(|(town, _)| TOWNS.iter().position(|(t, _, _)| t == town));
        assert_eq!(got, want[i], "readings stored by shard {i}/2");
        let store = open(db);
        assert_eq!(store.count_readings().unwrap(), 4, "shard {i}/2");
        // Not even rejected as an unknown town: the other shard's readings never came.
        assert_eq!(
            store.reject_counts().unwrap(),
            Vec::<(String, u64)>::new(),
            "shard {i}/2"
        );
    }

    let all_towns: BTreeSet<String> = (0..FILLER_TOWNS)
        .map(filler)
        .chain(TOWNS.iter().map(|(t, _, _)| t.to_string()))
        .collect();
    let mut listed = Vec::new();
    for (i, shard) in shards.iter().enumerate() {
        let api = shard.api_url();
        let towns = ids(
            &testkit::http::get(&format!("{api}/api/v1/towns"), &[]).json(),
            "towns",
        );
        for (town, _, owner) in TOWNS {
            assert_eq!(
                towns.contains(town),
                owner == i as u32,
                "{town} on shard {i}/2"
            );
        }
        let expected: BTreeSet<String> = all_towns
            .iter()
            .filter(|t| town_shard(t, 2) == i as u32)
            .cloned()
            .collect();
        assert_eq!(towns, expected, "towns of shard {i}/2");
        listed.push(towns);

        // Clusters without a town here are left out; a split cluster shows its part.
        let clusters = ids(
            &testkit::http::get(&format!("{api}/api/v1/clusters"), &[]).json(),
            "clusters",
        );
        let want_clusters: &[&str] = if i == 0 {
            &["c01", "c02", "c03", "c09"]
        } else {
            &["c01", "c02", "c04", "c09"]
        };
        assert_eq!(
            clusters,
            want_clusters.iter().map(|c| c.to_string()).collect(),
            "clusters of shard {i}/2"
        );

        // More filters than one SUBSCRIBE packet holds: subscribed means all granted.
        let log = plain(&shard.output());
        assert!(
            log.contains(&format!("filters={}", 2 * expected.len())) && log.contains("packets=2"),
            "shard {i}/2 subscribed town by town in two packets:\n{log}"
        );
    }
    assert!(listed[0].is_disjoint(&listed[1]));
    assert_eq!(
        &listed[0] | &listed[1],
        all_towns,
        "every town on exactly one shard"
    );

    // Each instance has its own broker session, so neither kicks the other off.
    let broker_log = broker.log();
    for client_id in ["stockpile-test-shard-0-of-2", "stockpile-test-shard-1-of-2"] {
        assert!(
            broker_log.contains(&format!(" as {client_id} ")),
            "{client_id} connected:\n{broker_log}"
        );
    }
    assert!(
        !broker_log.contains("already connected"),
        "an instance was kicked off:\n{broker_log}"
    );
}

#[test]
fn a_shard_out_of_range_is_refused_naming_the_value() {
    let output = Command::new(env!("CARGO_BIN_EXE_stockpile"))
        .args([
            "serve",
            "--config",
            "/nonexistent/stockpile.toml",
            "--shard",
            "3/2",
        ])
        .env_remove("RUST_LOG")
        .output()
        .expect("run stockpile");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "invalid value '3/2' for '--shard <i/N>': shard \"3/2\": index 3 is out of range for 2 shards (numbered 0 to 1)"
        ),
        "{stderr}"
    );
}

#[test]
fn a_bad_shard_in_the_config_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    write_deployment(dir.path(), "mqtt://127.0.0.1:1883");
    let config = dir.path().join("stockpile.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[mqtt]\n", "[mqtt]\nshard = \"2/2\"\n");
    std::fs::write(&config, text).unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let output = Command::new(env!("CARGO_BIN_EXE_stockpile"))
            .args(args)
            .arg(&config)
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .expect("run stockpile");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, _, stderr) = run(&["check-config"], &[]);
    assert_eq!(code, Some(1));
    assert_eq!(
        stderr,
        format!(
            "{}:3: mqtt.shard: shard \"2/2\": index 2 is out of range for 2 shards (numbered 0 to 1)\n1 error\n",
            config.display()
        )
    );

    // The environment overrides the file, as for every key; check-config then shows the
    // shard's share and the client id it connects with.
    let (code, stdout, stderr) = run(&["check-config"], &[("STOCKPILE__MQTT__SHARD", "1/2")]);
    assert_eq!(code, Some(0), "{stderr}");
    let ones = TOWNS.iter().filter(|(_, _, s)| *s == 1).count()
        + (0..FILLER_TOWNS)
            .filter(|&i| town_shard(&filler(i), 2) == 1)
            .count();
    let row = stdout
        .lines()
        .find(|l| l.starts_with("  shard "))
        .unwrap_or_else(|| panic!("no shard row:\n{stdout}"));
    assert!(
        row.starts_with(&format!("  shard       1/2: towns {ones} (population "))
            && row.ends_with("), facilities 3, client id stockpile-test-shard-1-of-2"),
        "{row}"
    );
}
