//! `stockpile check-config`, run as a user runs it: the built binary on fixture files,
//! asserting what it prints and its exit code.

use std::path::{Path, PathBuf};
use std::process::Command;

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
    assert_eq!(out.stderr, "");
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
             stockpile.toml:2: unknown key \"town\" (expected one of registry, mqtt, store, influx, api, smtp, sms, alerts, webhook, log)\n\
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
            "env STOCKPILE__MQTT__URLL: mqtt: unknown field `urll`, expected one of `url`, `client_id`, `username`, `password`, `password_file`, `ca_file`, `embedded_broker`, `shard`\n1 error\n",
        ),
        (
            &[("STOCKPILE__TOWN", "x"), ("STOCKPILE__ALERTS", "x")],
            "env STOCKPILE__ALERTS: expected STOCKPILE__ALERTS__KEY\n\
             env STOCKPILE__TOWN: not a config field: the environment can set registry and the fields of mqtt, store, influx, api, smtp, sms, alerts, webhook, log\n\
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
    assert_eq!(mqtt_password.expose(), "s3cret-mqtt");
    let ops = config.api.tokens[0]
        .token
        .as_ref()
        .expect("read from token_file");
    assert_eq!(ops.expose(), "s3cret-ops");
    assert_eq!(ops.to_string(), "***");
    let printed = format!("{config:?}");
    assert!(!printed.contains("s3cret"), "{printed}");
    assert!(printed.contains("\"***\""), "{printed}");
    assert_eq!(config.store.path, fixtures().join("ok/stockpile.db"));
}

#[test]
fn demo_config_loads_the_demo_registry() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo");
    let out = check_config_in(&demo, "stockpile.toml", &[]);
    assert_eq!(out.stderr, "");
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
