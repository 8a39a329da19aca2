//! `stockpile check-config`, run as a user runs it: the built binary on fixture files,
//! asserting what it prints and its exit code.

use std::path::{Path, PathBuf};
use std::process::Command;

use secrecy::ExposeSecret as _;
use server::config;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `stockpile check-config FILE` from `dir` with only the given environment, so
/// the paths it prints are relative to `dir` and the caller's STOCKPILE__ variables do
/// not leak in.
fn check_config_in(dir: &Path, file: &str, env: &[(&str, &str)]) -> Outcome {
    let output = Command::new(env!("CARGO_BIN_EXE_stockpile"))
        .args(["check-config", file])
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run stockpile");
    Outcome {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn check_config(file: &str, env: &[(&str, &str)]) -> Outcome {
    check_config_in(&fixtures(), file, env)
}

const OK_SUMMARY: &str = "\
ok/stockpile.toml: ok
  registry    ok/registry.toml (+ towns.csv, facilities.csv)
  districts   2
  clusters    2
  towns       2 (population 1,125,000)
  facilities  3 (warehouse 1, water_point 1, power_unit 1)
  categories  2 (water, food)
  contacts    1
  mqtt        mqtt://127.0.0.1:1883
  store       ok/stockpile.db
  api         127.0.0.1:8080 (public reads, 2 tokens)
  influx      http://127.0.0.1:8086 (v1)
  smtp        smtp://127.0.0.1:2525
  sms         off
";

#[test]
fn good_config_prints_a_summary() {
    let out = check_config("ok/stockpile.toml", &[]);
    assert_eq!(out.stderr, "");
    assert_eq!(out.stdout, OK_SUMMARY);
    assert_eq!(out.code, Some(0));
}

#[test]
fn registry_file_alone_is_accepted() {
    let out = check_config("ok/registry.toml", &[]);
    assert_eq!(out.stderr, "");
    assert_eq!(
        out.stdout,
        "\
ok/registry.toml: ok
  registry    ok/registry.toml (+ towns.csv, facilities.csv)
  districts   2
  clusters    2
  towns       2 (population 1,125,000)
  facilities  3 (warehouse 1, water_point 1, power_unit 1)
  categories  2 (water, food)
  contacts    1
"
    );
    assert_eq!(out.code, Some(0));
}

#[test]
fn config_with_inline_registry_is_accepted() {
    let out = check_config_in(&fixtures().join("inline"), "stockpile.toml", &[]);
    // It loads, but as a deployment it is deaf and mute: said, and still a success.
    assert_eq!(
        out.stderr,
        "\
warning: stockpile.toml: registry has no contacts: alerts notify nobody
warning: stockpile.toml: nobody can read the API or the wall board: api.public_read is false and api.tokens is empty
"
    );
    assert_eq!(
        out.stdout,
        "\
stockpile.toml: ok
  registry    stockpile.toml
  districts   1
  clusters    1
  towns       1 (population 30,000)
  facilities  0 (warehouse 0, water_point 0, power_unit 0)
  categories  1 (water)
  contacts    0
  mqtt        mqtts://broker.example.org:8883
  store       stockpile.db
  api         127.0.0.1:8080 (reads need a token, 0 tokens)
  influx      off
  smtp        off
  sms         off
"
    );
    assert_eq!(out.code, Some(0));
}

#[test]
fn config_file_mistakes_are_located() {
    let cases: &[(&str, &str)] = &[
        (
            "registry = \"registry.toml\"\n[mqtt]\nurl = mqtt://x\n",
            "stockpile.toml:3: syntax: string values must be quoted, expected literal string\n1 error\n",
        ),
        (
            "[mqtt]\nurl = \"mqtt://x:1\"\nurl = \"mqtt://y:1\"\n",
            "stockpile.toml:3: duplicate key \"url\"\n1 error\n",
        ),
        (
            // A config that names its registry cannot also carry registry tables.
            "registry = \"registry.toml\"\n[[town]]\nid = \"a\"\n",
            "stockpile.toml:1: registry: cannot read registry.toml: No such file or directory (os error 2)\n\
             stockpile.toml:2: unknown key \"town\" (expected one of registry, mqtt, store, influx, api, smtp, sms, alerts, webhook, log, stress_test, scope, board)\n\
             2 errors\n",
        ),
        (
            "[influx]\nurl = \"http://127.0.0.1:8086\"\napi = \"v1\"\n[smtp]\nurl = \"smtp://127.0.0.1:25\"\nfrom = \"alerts\"\n",
            "stockpile.toml:1: influx.database: missing (api = \"v1\" writes to a database)\n\
             stockpile.toml:6: smtp.from: expected an address such as \"Stockpile <alerts@example.org>\", got \"alerts\"\n\
             stockpile.toml:1: registry has no towns: add [[town]] entries or a towns.csv\n\
             stockpile.toml:1: registry has no categories: add [[category]] entries\n\
             4 errors\n",
        ),
    ];
    for (config, expected) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("stockpile.toml"), config).expect("write config");
        let out = check_config_in(dir.path(), "stockpile.toml", &[]);
        assert_eq!(out.stderr, *expected, "config:\n{config}");
        assert_eq!(out.code, Some(1));
    }
}

#[test]
fn broken_config_and_registry_list_every_problem() {
    let out = check_config("broken/stockpile.toml", &[]);
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr,
        "\
broken/stockpile.toml:4: mqtt.url: expected mqtt://host:port or mqtts://host:port, got \"tcp://127.0.0.1:1883\"
broken/stockpile.toml:9: api.tokens: unknown variant `boss`, expected one of `viewer`, `officer`, `admin`
broken/stockpile.toml:12: alerts.repeat_every: duration \"4 hours\" has unknown unit \" hours\" (use ms, s, m, h, d)
broken/registry.toml:16: facility \"wh-9\": town: unknown town \"jingshn\"
broken/registry.toml:19: facility \"jingshan-gen1\": burn_l_per_h: missing
5 errors
"
    );
    assert_eq!(out.code, Some(1));
}

#[test]
fn missing_files_are_named() {
    let out = check_config("nowhere.toml", &[]);
    assert_eq!(
        out.stderr,
        "nowhere.toml: cannot read: No such file or directory (os error 2)\n1 error\n"
    );
    assert_eq!(out.code, Some(1));

    // A registry or secret file the config names is reported where the config names it.
    let out = check_config(
        "ok/stockpile.toml",
        &[("STOCKPILE__MQTT__PASSWORD_FILE", "gone.password")],
    );
    assert_eq!(
        out.stderr,
        "env STOCKPILE__MQTT__PASSWORD_FILE: mqtt.password_file: cannot read ok/gone.password: No such file or directory (os error 2)\n1 error\n"
    );
    let out = check_config("ok/stockpile.toml", &[("STOCKPILE__REGISTRY", "gone.toml")]);
    assert_eq!(
        out.stderr,
        "env STOCKPILE__REGISTRY: registry: cannot read ok/gone.toml: No such file or directory (os error 2)\n1 error\n"
    );
}

#[test]
fn environment_overrides_take_effect() {
    let out = check_config(
        "ok/stockpile.toml",
        &[
            ("STOCKPILE__MQTT__URL", "mqtts://broker.example.org:8883"),
            ("STOCKPILE__MQTT__EMBEDDED_BROKER", "true"),
            ("STOCKPILE__API__PUBLIC_READ", "false"),
            ("STOCKPILE__SMS__URL", "https://sms.example.org/send"),
            ("OTHER__MQTT__URL", "ignored: not our prefix"),
        ],
    );
    assert_eq!(out.stderr, "");
    let expected = OK_SUMMARY
        .replace(
            "mqtt://127.0.0.1:1883",
            "mqtts://broker.example.org:8883 (embedded broker)",
        )
        .replace("public reads", "reads need a token")
        .replace(
            "  sms         off",
            "  sms         https://sms.example.org/send",
        );
    assert_eq!(out.stdout, expected);
    assert_eq!(out.code, Some(0));
}

#[test]
fn environment_overrides_are_validated_and_named() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("STOCKPILE__MQTT__URL", "http://broker:1883")],
            "env STOCKPILE__MQTT__URL: mqtt.url: expected mqtt://host:port or mqtts://host:port, got \"http://broker:1883\"\n1 error\n",
        ),
        (
            &[("STOCKPILE__MQTT__CLIENT_ID", "123")],
            "env STOCKPILE__MQTT__CLIENT_ID: mqtt.client_id: invalid type: integer `123`, expected a string; quote the value to pass it as a string, e.g. '\"123\"'\n1 error\n",
        ),
        (&[("STOCKPILE__MQTT__CLIENT_ID", "\"123\"")], ""),
        (
            &[("STOCKPILE__MQTT__URLL", "mqtt://x:1")],
            "env STOCKPILE__MQTT__URLL: mqtt: unknown field `urll`, expected one of `url`, `client_id`, `username`, `password`, `password_file`, `ca_file`, `embedded_broker`, `shard`, `max_readings_per_message`, `max_payload_bytes`\n1 error\n",
        ),
        (
            &[("STOCKPILE__TOWN", "x"), ("STOCKPILE__ALERTS", "x")],
            "env STOCKPILE__ALERTS: expected STOCKPILE__ALERTS__KEY\n\
             env STOCKPILE__TOWN: not a config field: the environment can set registry and the fields of mqtt, store, influx, api, smtp, sms, alerts, webhook, log, stress_test, scope, board\n\
             2 errors\n",
        ),
        (
            &[("STOCKPILE__MQTT__PASSWORD", "inline")],
            "ok/stockpile.toml:8: mqtt.password_file: give password or password_file, not both\n1 error\n",
        ),
    ];
    for (env, expected) in cases {
        let out = check_config("ok/stockpile.toml", env);
        assert_eq!(out.stderr, *expected, "env {env:?}");
        assert_eq!(
            out.code,
            Some(if expected.is_empty() { 0 } else { 1 }),
            "env {env:?}"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_stockpile"))
        .arg("check-config")
        .output()
        .expect("run stockpile");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Usage: stockpile check-config <FILE>"),
        "{stderr}"
    );
}

#[test]
fn secrets_are_read_from_files_and_never_printed() {
    let loaded = config::load(&fixtures().join("ok/stockpile.toml"), &[]).expect("loads");
    let config = &loaded.config;
    let mqtt_password = config
        .mqtt
        .password
        .as_ref()
        .expect("read from password_file");
    assert_eq!(mqtt_password.expose_secret(), "s3cret-mqtt");
    let ops = config.api.tokens[0]
        .token
        .as_ref()
        .expect("read from token_file");
    assert_eq!(ops.expose_secret(), "s3cret-ops");
    let printed = format!("{config:?}");
    assert!(!printed.contains("s3cret"), "{printed}");
    assert!(printed.contains("[REDACTED]"), "{printed}");
    assert_eq!(config.store.path, fixtures().join("ok/stockpile.db"));
}

#[test]
fn demo_config_loads_the_demo_registry() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo");
    let out = check_config_in(&demo, "stockpile.toml", &[]);
    // `stockpile demo` brings its own mailbox; served as it is, this file mails nobody.
    assert_eq!(
        out.stderr,
        "warning: stockpile.toml: no notification channel: no [smtp] or [sms] section and no contact has a webhook, so alerts notify nobody\n"
    );
    for line in [
        "stockpile.toml: ok",
        "  registry    registry.toml (+ towns.csv, facilities.csv, contacts.csv)",
        "  districts   16",
        "  clusters    39",
    ] {
        assert!(
            out.stdout.lines().any(|l| l == line),
            "no {line:?} in\n{}",
            out.stdout
        );
    }
    assert!(
        out.stdout.contains("\n  towns       343 (population "),
        "{}",
        out.stdout
    );
    assert_eq!(out.code, Some(0));
}

/// A config with `sections`, carrying inline a registry of one town and `contacts`.
fn config_with_contacts(sections: &str, contacts: &str) -> String {
    format!(
        "[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n{sections}\
         [[category]]\nid = \"water\"\nname = \"Drinking water\"\nunit = \"L\"\ndaily_need = 3.0\n\
         [[town]]\nid = \"jingshan\"\nname = \"景山街道\"\ndistrict = \"dongcheng\"\ncluster = \"c01\"\npopulation = 30000\n\
         {contacts}"
    )
}

#[test]
fn configs_that_notify_or_serve_nobody_are_warned_about_not_refused() {
    const SMTP: &str = "[smtp]\nurl = \"smtp://127.0.0.1:2525\"\nfrom = \"alerts@example.org\"\n";
    const SMS: &str = "[sms]\nurl = \"https://sms.example.org/send\"\n";
    const PUBLIC: &str = "[api]\npublic_read = true\n";
    const VIEWER: &str =
        "[api]\ntokens = [{ name = \"wall\", role = \"viewer\", token = \"t\" }]\n";
    const LI_EMAIL: &str =
        "[[contact]]\nname = \"Li Wei\"\nemail = \"li.wei@example.org\"\ntowns = [\"jingshan\"]\n";
    const WANG_PHONE: &str =
        "[[contact]]\nname = \"Wang Fang\"\nphone = \"+8613800000001\"\ntowns = [\"jingshan\"]\n";
    const ZHAO_WEBHOOK: &str = "[[contact]]\nname = \"Zhao Lei\"\nwebhook = \"https://hooks.example.org/x\"\ncity = true\n";
    const NO_CHANNEL: &str = "warning: stockpile.toml: no notification channel: no [smtp] or [sms] section and no contact has a webhook, so alerts notify nobody\n";
    const NO_READER: &str = "warning: stockpile.toml: nobody can read the API or the wall board: api.public_read is false and api.tokens is empty\n";
    let both = format!("{NO_CHANNEL}{NO_READER}");
    let li_and_wang = format!("{LI_EMAIL}{WANG_PHONE}");
    let cases: &[(String, &str, &str)] = &[
        // Mail configured and every contact has an address: nothing to say.
        (format!("{PUBLIC}{SMTP}"), LI_EMAIL, ""),
        (format!("{PUBLIC}{SMTP}{SMS}"), &li_and_wang, ""),
        // A webhook needs no section.
        (PUBLIC.to_owned(), ZHAO_WEBHOOK, ""),
        // One viewer token is a reader.
        (format!("{VIEWER}{SMTP}"), LI_EMAIL, ""),
        (PUBLIC.to_owned(), &li_and_wang, NO_CHANNEL),
        (
            format!("{PUBLIC}{SMTP}"),
            &li_and_wang,
            "warning: stockpile.toml: 1 of 2 contacts have no channel this config can deliver, so their alerts reach nobody: Wang Fang (sms needs [sms])\n",
        ),
        (
            format!("{PUBLIC}{SMS}"),
            &li_and_wang,
            "warning: stockpile.toml: 1 of 2 contacts have no channel this config can deliver, so their alerts reach nobody: Li Wei (email needs [smtp])\n",
        ),
        // Reads need a token and there is none.
        (SMTP.to_owned(), LI_EMAIL, NO_READER),
        (String::new(), LI_EMAIL, &both),
    ];
    for (sections, contacts, expected) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = config_with_contacts(sections, contacts);
        std::fs::write(dir.path().join("stockpile.toml"), &config).expect("write config");
        let out = check_config_in(dir.path(), "stockpile.toml", &[]);
        assert_eq!(out.stderr, *expected, "config:\n{config}");
        assert_eq!(out.code, Some(0), "config:\n{config}");
        assert!(
            out.stdout.starts_with("stockpile.toml: ok\n"),
            "{}",
            out.stdout
        );
    }
}

#[test]
fn store_retention_settings_are_read_and_must_be_positive() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("stockpile.toml");
    let store = "[store]\nretention = \"60d\"\noutbox_retention = \"14d\"\nalert_retention = \"180d\"\nsilence_retention = \"7d\"\nprune_every = \"5m\"\n";
    std::fs::write(&path, config_with_contacts(store, "")).expect("write config");
    let loaded = config::load(&path, &[]).expect("loads");
    let s = &loaded.config.store;
    let day = 86_400;
    assert_eq!(
        [
            s.retention,
            s.outbox_retention,
            s.alert_retention,
            s.silence_retention,
            s.prune_every
        ]
        .map(|d| d.as_secs()),
        [60 * day, 14 * day, 180 * day, 7 * day, 300]
    );

    let defaults = config::StoreConfig::default();
    assert_eq!(
        [
            defaults.retention,
            defaults.outbox_retention,
            defaults.alert_retention,
            defaults.silence_retention,
            defaults.prune_every
        ]
        .map(|d| d.as_secs()),
        [90 * day, 30 * day, 90 * day, 30 * day, 600]
    );

    std::fs::write(
        &path,
        config_with_contacts("[store]\noutbox_retention = \"0s\"\n", ""),
    )
    .expect("write config");
    let out = check_config_in(dir.path(), "stockpile.toml", &[]);
    assert_eq!(
        out.stderr,
        "stockpile.toml:4: store.outbox_retention: must be > 0\n1 error\n"
    );
    assert_eq!(out.code, Some(1));
}

#[test]
fn forecast_min_span_is_read_defaults_to_an_hour_and_must_be_positive() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("stockpile.toml");
    std::fs::write(&path, config_with_contacts("", "")).expect("write config");
    let loaded = config::load(&path, &[]).expect("loads");
    assert_eq!(loaded.config.alerts.forecast_min_span.as_secs(), 3600);

    let alerts = "[alerts]\nforecast_min_span = \"90m\"\n";
    std::fs::write(&path, config_with_contacts(alerts, "")).expect("write config");
    let loaded = config::load(&path, &[]).expect("loads");
    assert_eq!(loaded.config.alerts.forecast_min_span.as_secs(), 5400);

    let alerts = "[alerts]\nforecast_min_span = \"0s\"\n";
    std::fs::write(&path, config_with_contacts(alerts, "")).expect("write config");
    let out = check_config_in(dir.path(), "stockpile.toml", &[]);
    assert_eq!(
        out.stderr,
        "stockpile.toml:4: alerts.forecast_min_span: must be > 0\n1 error\n"
    );
    assert_eq!(out.code, Some(1));
}

#[test]
fn credentials_in_urls_are_never_printed() {
    const SECRETS: [&str; 4] = ["mqtt-pass-1", "influx-pass-2", "smtp-pass-3", "sms-key-4"];
    // The secrets of every URL-bearing section, with `smtp` as the SMTP URL.
    let sections = |smtp: &str| {
        format!(
            "[api]\npublic_read = true\n\
             [influx]\nurl = \"http://reader:influx-pass-2@127.0.0.1:8086\"\napi = \"v1\"\ndatabase = \"stockpile\"\n\
             [smtp]\nurl = \"{smtp}\"\nfrom = \"alerts@example.org\"\n\
             [sms]\nurl = \"https://sms.example.org/send?apikey=sms-key-4\"\n"
        )
    };
    let dir = tempfile::tempdir().expect("temp dir");
    // Valid URLs: the summary shows them with the secrets starred out.
    let config = config_with_contacts(
        &sections("smtps://alerts:smtp-pass-3@relay.example.org:465"),
        "",
    )
    .replace(
        "mqtt://127.0.0.1:1883",
        "mqtts://ingest:mqtt-pass-1@broker.example.org:8883",
    );
    std::fs::write(dir.path().join("stockpile.toml"), &config).expect("write config");
    let out = check_config_in(dir.path(), "stockpile.toml", &[]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    for line in [
        "  mqtt        mqtts://ingest:***@broker.example.org:8883\n",
        "  influx      http://reader:***@127.0.0.1:8086 (v1)\n",
        "  smtp        smtps://alerts:***@relay.example.org:465\n",
        "  sms         https://sms.example.org/send?apikey=***\n",
    ] {
        assert!(out.stdout.contains(line), "{line:?} in\n{}", out.stdout);
    }
    // Invalid URLs: the errors quote them without the secrets.
    let config = config_with_contacts(
        &sections("smtpx://alerts:smtp-pass-3@relay.example.org:465"),
        "",
    )
    .replace(
        "mqtt://127.0.0.1:1883",
        "tcp://ingest:mqtt-pass-1@broker.example.org:8883",
    );
    std::fs::write(dir.path().join("stockpile.toml"), &config).expect("write config");
    let refused = check_config_in(dir.path(), "stockpile.toml", &[]);
    assert_eq!(refused.code, Some(1), "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("got \"tcp://ingest:***@broker.example.org:8883\""),
        "{}",
        refused.stderr
    );
    for out in [&out, &refused] {
        for secret in SECRETS {
            assert!(
                !out.stdout.contains(secret) && !out.stderr.contains(secret),
                "{secret} printed:\n{}{}",
                out.stdout,
                out.stderr
            );
        }
    }
}

#[test]
fn link_keys_are_read_from_their_file_never_printed_and_problems_located() {
    const KEY: &str = "link-key-material-that-must-never-print-0123456789";
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("stockpile.toml");
    std::fs::write(dir.path().join("link.key"), KEY).expect("write key");
    std::fs::write(dir.path().join("short.key"), "too short").expect("write key");
    let api = |url: &str, file: &str| {
        format!("[api]\npublic_read = true\n{url}link_key_file = \"{file}\"\n")
    };
    let url = "public_url = \"https://stockpile.example.org/\"\n";

    std::fs::write(&path, config_with_contacts(&api(url, "link.key"), "")).expect("write");
    let loaded = config::load(&path, &[]).expect("loads");
    assert!(loaded.config.api.ack_links().is_some());
    assert_eq!(
        loaded.config.api.message_url(),
        "https://stockpile.example.org"
    );
    assert!(!format!("{:?}", loaded.config).contains(KEY));
    let out = check_config_in(dir.path(), "stockpile.toml", &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(!out.stdout.contains(KEY) && !out.stderr.contains(KEY));

    // (public_url line, key file, what is said, at which line)
    let cases = [
        (url, "missing.key", "api.link_key_file: cannot read", 6),
        (url, "short.key", "api.link_key_file: ", 6),
        ("", "link.key", "api.link_key_file: needs api.public_url", 5),
        (
            "public_url = \"stockpile.example.org\"\n",
            "link.key",
            "api.public_url: expected",
            5,
        ),
    ];
    for (url, file, says, line) in cases {
        std::fs::write(&path, config_with_contacts(&api(url, file), "")).expect("write");
        let out = check_config_in(dir.path(), "stockpile.toml", &[]);
        assert_eq!(out.code, Some(1), "{file}: {}", out.stderr);
        let at = format!("stockpile.toml:{line}: {says}");
        assert!(
            out.stderr.starts_with(&at),
            "{file}: want {at:?} in {}",
            out.stderr
        );
        assert!(!out.stderr.contains(KEY), "{}", out.stderr);
    }
    std::fs::write(&path, config_with_contacts(&api(url, "short.key"), "")).expect("write");
    let out = check_config_in(dir.path(), "stockpile.toml", &[]);
    assert!(
        out.stderr
            .contains("the key is 9 bytes; at least 32 are needed"),
        "{}",
        out.stderr
    );
}
