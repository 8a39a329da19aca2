//! The service's configuration (docs/design.md#cli-and-configuration): one TOML file
//! whose sections are the components' own config types (`[mqtt]` is
//! [`ingest::MqttConfig`], `[smtp]` is [`alerts::SmtpConfig`], …), deserialised straight
//! into them, every field overridable by a `STOCKPILE__SECTION__KEY` environment
//! variable, secrets from the file or from files they name (read here: only the server
//! reads files), and the registry the file names (or carries inline).
//!
//! Environment overrides patch the parsed document before it is deserialised, so a value
//! from the environment goes through exactly the checks a value from the file does, and a
//! problem with it names the variable instead of a line.

mod env;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use alerts::redact::redact_url;
use reserve::Registry;
use reserve::registry::{Source, load_registry};
use secrecy::SecretString;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

pub use alerts::{AlertsConfig, SmsConfig, SmtpConfig, WebhookConfig};
pub use env::ENV_PREFIX;
pub use ingest::MqttConfig;
pub use store::StoreConfig;
pub use store::influx::{InfluxApiVersion, InfluxConfig};

/// The sections of a config file. A file without `registry = "…"` carries the registry
/// inline, so the registry loader is told to leave these alone.
pub const CONFIG_SECTIONS: &[&str] = &[
    "mqtt",
    "store",
    "influx",
    "api",
    "smtp",
    "sms",
    "alerts",
    "webhook",
    "log",
    "stress_test",
    "scope",
    "board",
];

/// The typed configuration, checked and with secrets read from their files. Each
/// section is its component's own type; `[log]` is the server's.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// No section, all towns of the registry; with one, a cluster instance's towns
    /// (docs/design.md#cluster-instance).
    pub scope: Option<ScopeConfig>,
    pub mqtt: MqttConfig,
    pub store: StoreConfig,
    /// No section, no InfluxDB: history stays in SQLite only.
    pub influx: Option<InfluxConfig>,
    pub api: ApiConfig,
    /// No section, no email notifications.
    pub smtp: Option<SmtpConfig>,
    /// No section, no SMS notifications.
    pub sms: Option<SmsConfig>,
    pub alerts: AlertsConfig,
    pub webhook: WebhookConfig,
    pub log: LogConfig,
    /// No section, no scheduled stress test.
    pub stress_test: Option<StressTestConfig>,
    /// The board's and the map's extras (district outlines).
    pub board: BoardConfig,
}

/// API roles, as the API defines them (one definition for config and checks).
pub use api::Role;

/// `[api]` is the API's own config type, as every other section is its component's.
pub use api::{ApiConfig, ApiToken, BoardConfig};

/// `[stress_test]` is the API's type: its scenarios are the API's what-if requests.
pub use api::stress_test::StressTestConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter: `info`, `stockpile=debug,rumqttc=warn`, …
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// `[scope]`: the towns a cluster instance watches (docs/design.md#cluster-instance),
/// a cluster's or a list: the registry is narrowed to them as a shard's is, so the
/// instance subscribes to, stores, alerts on and shows only those.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScopeConfig {
    /// Every town of this cluster (`c07`).
    pub cluster: Option<String>,
    /// These towns, by id.
    pub towns: Vec<String>,
}

impl ScopeConfig {
    /// Whether town `town` of `registry` is in scope; names are checked at load.
    pub fn contains(&self, registry: &Registry, town: &reserve::registry::Town) -> bool {
        let in_cluster = self
            .cluster
            .as_deref()
            .is_some_and(|c| registry.cluster_idx(c) == Some(town.cluster));
        in_cluster || self.towns.iter().any(|t| t.as_str() == town.id.as_str())
    }

    /// `registry` narrowed to the scope's towns, with their clusters, districts,
    /// facilities and contacts.
    pub fn registry(&self, registry: &Registry) -> Registry {
        let kept: HashSet<&str> = registry
            .towns
            .iter()
            .filter(|t| self.contains(registry, t))
            .map(|t| t.id.as_str())
            .collect();
        registry.only_towns(|id| kept.contains(id.as_str()))
    }
}

/// One problem: `demo/stockpile.toml:4: mqtt.url: …`, or `env STOCKPILE__MQTT__URL: …`
/// when the value came from the environment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct ConfigError {
    /// `file:line`, `file` alone, or `env NAME`.
    pub origin: String,
    pub message: String,
}

/// Every problem of the config and its registry, so one run shows them all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// A loaded deployment: the config and the registry it names.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub registry: Registry,
    pub registry_source: RegistrySource,
}

/// Where the registry came from, for the summary and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySource {
    /// The TOML file holding the registry (the config file itself when inline).
    pub path: PathBuf,
    /// CSV tables read, as the registry names them (`towns.csv`, …).
    pub tables: Vec<String>,
    /// The file passed was a config file (with a registry inline or named), not a
    /// registry alone.
    pub is_config: bool,
}

/// Loads `path`: a config file naming its registry (`registry = "…"`), a config file
/// carrying the registry inline, or a registry file alone (then every config section
/// takes its defaults). `env` holds the process environment; only `STOCKPILE__*`
/// variables are used.
pub fn load(path: &Path, env: &[(String, String)]) -> Result<Loaded, ConfigErrors> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            origin: name.clone(),
            message: format!("cannot read: {e}"),
        }])
    })?;
    let dir = path.parent().unwrap_or(Path::new(""));
    let overrides = env::Overrides::from_env(env);
    let origins = env::Origins::new(&name, &text, &overrides);

    let mut root = match DeTable::parse(&text) {
        Ok(root) => root.into_inner(),
        Err(e) => {
            let at = e.span().map_or(0, |s| s.start);
            return Err(ConfigErrors(vec![
                origins.error(at, syntax_message(&e, &text)),
            ]));
        }
    };
    let mut problems = Vec::new();
    overrides.apply(&mut root, text.len(), &mut problems);

    let named_registry = root.get("registry").cloned();
    let is_config =
        named_registry.is_some() || CONFIG_SECTIONS.iter().any(|s| root.contains_key(*s));
    let mut config = read_sections(&root, named_registry.is_some(), &mut problems);
    check(&mut config, &root, dir, &mut problems);

    let registry = match &named_registry {
        Some(value) => match value.get_ref().as_str() {
            Some(file) => read_registry_file(&dir.join(file), value.span().start, &mut problems),
            None => {
                let message = "registry: expected the path of the registry file".to_owned();
                problems.push((value.span().start, message));
                Err(Vec::new())
            }
        },
        None => {
            let source = Source {
                name,
                text: text.clone(),
            };
            load_registry_source(&source, path, CONFIG_SECTIONS_AND_REGISTRY)
        }
    };
    if let Ok((registry, _)) = &registry {
        check_scope(&config, registry, &root, &mut problems);
        check_cluster_instances(&config, registry, &root, &mut problems);
        check_token_towns(&config, registry, &root, &mut problems);
        check_stress_test(&config, registry, &root, &mut problems);
    }

    // In file order; overrides (spanned past the end of the file) last.
    problems.sort_by_key(|(at, _)| *at);
    let mut errors: Vec<ConfigError> = problems
        .into_iter()
        .map(|(at, message)| origins.error(at, message))
        .collect();
    match registry {
        Ok((registry, tables)) if errors.is_empty() => {
            let registry_path = match named_registry.as_ref().and_then(|v| v.get_ref().as_str()) {
                Some(file) => dir.join(file),
                None => path.to_owned(),
            };
            Ok(Loaded {
                config,
                registry,
                registry_source: RegistrySource {
                    path: registry_path,
                    tables,
                    is_config,
                },
            })
        }
        Ok(_) => Err(ConfigErrors(errors)),
        Err(registry_errors) => {
            errors.extend(registry_errors);
            Err(ConfigErrors(errors))
        }
    }
}

fn syntax_message(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().trim_end();
    // The parser says "duplicate key" without the key; the span holds it.
    match e.span().and_then(|s| text.get(s)) {
        Some(key) if message == "duplicate key" && !key.is_empty() => {
            format!("duplicate key {:?}", key.trim_matches(['"', '\'']))
        }
        _ => format!("syntax: {message}"),
    }
}

/// A problem at an offset of the config text (or of an environment override).
type Problem = (usize, String);

/// The registry and the CSV tables it was read from, or its problems.
type RegistryResult = Result<(Registry, Vec<String>), Vec<ConfigError>>;

/// What a config file has beside the registry's own keys.
const CONFIG_SECTIONS_AND_REGISTRY: &[&str] = &[
    "registry",
    "mqtt",
    "store",
    "influx",
    "api",
    "smtp",
    "sms",
    "alerts",
    "webhook",
    "log",
    "stress_test",
    "scope",
    "board",
];

/// Reads the registry file a config names; `named_at` is where the config names it.
fn read_registry_file(path: &Path, named_at: usize, problems: &mut Vec<Problem>) -> RegistryResult {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let source = Source {
                name: path.display().to_string(),
                text,
            };
            load_registry_source(&source, path, &[])
        }
        Err(e) => {
            problems.push((
                named_at,
                format!("registry: cannot read {}: {e}", path.display()),
            ));
            Err(Vec::new())
        }
    }
}

/// Loads a registry whose CSV tables live next to `path`.
fn load_registry_source(source: &Source, path: &Path, ignore_keys: &[&str]) -> RegistryResult {
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut tables = Vec::new();
    let mut read = |table: &str| {
        let path = dir.join(table);
        let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
        tables.push(table.to_owned());
        Ok(Source {
            name: path.display().to_string(),
            text,
        })
    };
    let result = load_registry(source, ignore_keys, &mut read);
    match result {
        Ok(registry) => Ok((registry, tables)),
        Err(errors) => Err(errors
            .0
            .into_iter()
            .map(|e| ConfigError {
                origin: format!("{}:{}", e.file, e.line),
                message: e.message,
            })
            .collect()),
    }
}

/// Deserialises each section on its own, so a problem in one does not hide the others.
fn read_sections(root: &DeTable<'_>, names_registry: bool, problems: &mut Vec<Problem>) -> Config {
    let mut config = Config::default();
    for (key, value) in root {
        let section = key.get_ref().as_ref();
        match section {
            "scope" => read_optional_section(section, value, &mut config.scope, problems),
            "mqtt" => read_section(section, value, &mut config.mqtt, problems),
            "store" => read_section(section, value, &mut config.store, problems),
            "influx" => read_optional_section(section, value, &mut config.influx, problems),
            "api" => read_section(section, value, &mut config.api, problems),
            "smtp" => read_optional_section(section, value, &mut config.smtp, problems),
            "sms" => read_optional_section(section, value, &mut config.sms, problems),
            "alerts" => read_section(section, value, &mut config.alerts, problems),
            "webhook" => read_section(section, value, &mut config.webhook, problems),
            "log" => read_section(section, value, &mut config.log, problems),
            "board" => read_section(section, value, &mut config.board, problems),
            "stress_test" => {
                read_optional_section(section, value, &mut config.stress_test, problems)
            }
            "registry" => {}
            // With the registry inline, its keys are checked by the registry loader.
            _ if !names_registry => {}
            other => {
                let expected = CONFIG_SECTIONS_AND_REGISTRY.join(", ");
                problems.push((
                    key.span().start,
                    format!("unknown key {other:?} (expected one of {expected})"),
                ));
            }
        }
    }
    config
}

fn read_section<T: DeserializeOwned>(
    section: &str,
    value: &Spanned<DeValue<'_>>,
    out: &mut T,
    problems: &mut Vec<Problem>,
) {
    if let Some(parsed) = deserialize_section(section, value, problems) {
        *out = parsed;
    }
}

fn read_optional_section<T: DeserializeOwned>(
    section: &str,
    value: &Spanned<DeValue<'_>>,
    out: &mut Option<T>,
    problems: &mut Vec<Problem>,
) {
    *out = deserialize_section(section, value, problems);
}

fn deserialize_section<T: DeserializeOwned>(
    section: &str,
    value: &Spanned<DeValue<'_>>,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let Some(table) = value.get_ref().as_table() else {
        let message = format!("{section}: expected a table ([{section}])");
        problems.push((value.span().start, message));
        return None;
    };
    let fields: Vec<(String, std::ops::Range<usize>)> = table
        .iter()
        .map(|(k, v)| (k.get_ref().to_string(), k.span().start..v.span().end))
        .collect();
    match T::deserialize(ValueDeserializer::from(value.clone())) {
        Ok(parsed) => Some(parsed),
        Err(e) => {
            let at = e.span().map_or(value.span().start, |s| s.start);
            let message = e.message().trim_end();
            let field = fields.iter().find(|(_, span)| span.contains(&at));
            let message = match field {
                Some((name, _)) if !message.starts_with("unknown field") => {
                    format!("{section}.{name}: {message}")
                }
                _ => format!("{section}: {message}"),
            };
            problems.push((at, message));
            None
        }
    }
}

/// Checks what types cannot say, reads secret files and resolves relative paths.
fn check(config: &mut Config, root: &DeTable<'_>, dir: &Path, problems: &mut Vec<Problem>) {
    let mut c = Checks {
        root,
        dir,
        problems,
    };
    let mqtt = &mut config.mqtt;
    if !(has_scheme(&mqtt.url, "mqtt://") || has_scheme(&mqtt.url, "mqtts://")) {
        c.field(
            "mqtt.url",
            format!(
                "expected mqtt://host:port or mqtts://host:port, got {:?}",
                redact_url(&mqtt.url)
            ),
        );
    }
    if mqtt.client_id.trim().is_empty() {
        c.field("mqtt.client_id", "must not be empty".into());
    }
    c.secret("mqtt.password", &mut mqtt.password, &mqtt.password_file);
    if mqtt.password.is_some() && mqtt.username.is_none() {
        c.field("mqtt.password", "needs mqtt.username".into());
    }
    if let Some(ca) = &mut mqtt.ca_file {
        *ca = dir.join(&*ca);
        if !ca.is_file() {
            c.field("mqtt.ca_file", format!("cannot read {}", ca.display()));
        }
    }

    // Ingest queues at most 64 MiB of payloads; a limit beyond 16 MiB is beyond what
    // the MQTT client accepts at all.
    const MAX_PAYLOAD_LIMIT: usize = 16 * 1024 * 1024;
    if mqtt.max_readings_per_message == 0 {
        c.field("mqtt.max_readings_per_message", "must be > 0".into());
    }
    if mqtt.max_payload_bytes == 0 || mqtt.max_payload_bytes > MAX_PAYLOAD_LIMIT {
        c.field(
            "mqtt.max_payload_bytes",
            format!("must be between 1 and {MAX_PAYLOAD_LIMIT}"),
        );
    }

    if config.store.path.as_os_str().is_empty() {
        c.field("store.path", "must not be empty".into());
    }
    config.store.path = dir.join(&config.store.path);
    let store = &config.store;
    for (field, value) in [
        ("store.retention", store.retention),
        ("store.outbox_retention", store.outbox_retention),
        ("store.alert_retention", store.alert_retention),
        ("store.silence_retention", store.silence_retention),
        ("store.audit_retention", store.audit_retention),
        ("store.prune_every", store.prune_every),
    ] {
        if value.is_zero() {
            c.field(field, "must be > 0".into());
        }
    }

    if let Some(influx) = &mut config.influx {
        if !(has_scheme(&influx.url, "http://") || has_scheme(&influx.url, "https://")) {
            c.field(
                "influx.url",
                format!(
                    "expected http://host:port or https://host:port, got {:?}",
                    redact_url(&influx.url)
                ),
            );
        }
        c.secret(
            "influx.password",
            &mut influx.password,
            &influx.password_file,
        );
        c.secret("influx.token", &mut influx.token, &influx.token_file);
        match influx.api {
            InfluxApiVersion::V1 => {
                if influx.database.is_none() {
                    c.field(
                        "influx.database",
                        "missing (api = \"v1\" writes to a database)".into(),
                    );
                }
            }
            InfluxApiVersion::V2 => {
                let needs = [
                    ("influx.org", influx.org.is_none()),
                    ("influx.bucket", influx.bucket.is_none()),
                    (
                        "influx.token",
                        influx.token.is_none() && influx.token_file.is_none(),
                    ),
                ];
                for (field, missing) in needs {
                    if missing {
                        c.field(
                            field,
                            "missing (api = \"v2\" needs org, bucket and token or token_file)"
                                .into(),
                        );
                    }
                }
            }
        }
    }

    let api = &mut config.api;
    let port_ok = api
        .listen
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_ok {
        c.field(
            "api.listen",
            format!(
                "expected host:port such as \"127.0.0.1:8080\", got {:?}",
                api.listen
            ),
        );
    }
    let mut names = HashSet::new();
    for (i, token) in api.tokens.iter_mut().enumerate() {
        let field = format!("api.tokens[{i}]");
        if token.name.trim().is_empty() {
            c.field(&field, "name: must not be empty".into());
        } else if !names.insert(token.name.clone()) {
            c.field(
                &field,
                format!("name: {:?} is used by another token", token.name),
            );
        }
        c.secret(
            &format!("{field}.token"),
            &mut token.token,
            &token.token_file,
        );
        if token.token.is_none() && token.token_file.is_none() {
            c.field(&field, "needs token or token_file".into());
        }
        if token.role != Role::Officer && !token.towns.is_empty() {
            c.field(&field, "towns: only officer tokens have towns".into());
        }
    }
    check_links(&mut config.api, &mut c);
    check_board(&mut config.board, &mut c);

    if let Some(smtp) = &mut config.smtp {
        if !(has_scheme(&smtp.url, "smtp://")
            || has_scheme(&smtp.url, "smtps://")
            || has_scheme(&smtp.url, "file://"))
        {
            c.field(
                "smtp.url",
                format!(
                    "expected smtp://host:port, smtps://host:port or file:///dir, got {:?}",
                    redact_url(&smtp.url)
                ),
            );
        }
        if !smtp.from.contains('@') {
            c.field(
                "smtp.from",
                format!(
                    "expected an address such as \"Stockpile <alerts@example.org>\", got {:?}",
                    smtp.from
                ),
            );
        }
        c.secret("smtp.password", &mut smtp.password, &smtp.password_file);
    }

    if let Some(sms) = &mut config.sms {
        if !(has_scheme(&sms.url, "http://") || has_scheme(&sms.url, "https://")) {
            c.field(
                "sms.url",
                format!(
                    "expected an http:// or https:// URL, got {:?}",
                    redact_url(&sms.url)
                ),
            );
        }
        if let Some(method) = &sms.method
            && !["GET", "POST", "PUT"].contains(&method.as_str())
        {
            c.field(
                "sms.method",
                format!("expected GET, POST or PUT, got {method:?}"),
            );
        }
        c.secret("sms.password", &mut sms.password, &sms.password_file);
        c.secret(
            "sms.inbound_auth_token",
            &mut sms.inbound_auth_token,
            &sms.inbound_auth_token_file,
        );
        if sms.inbound_auth_token.is_some() && config.api.public_url.is_none() {
            c.field(
                "sms.inbound_auth_token",
                "needs api.public_url: the provider signs the URL it calls".into(),
            );
        }
    }

    let alerts = &config.alerts;
    for (field, value) in [
        ("alerts.repeat_every", alerts.repeat_every),
        ("alerts.escalate_after", alerts.escalate_after),
        ("alerts.depleting_horizon", alerts.depleting_horizon),
        ("alerts.forecast_min_span", alerts.forecast_min_span),
    ] {
        if value.is_zero() {
            c.field(field, "must be > 0".into());
        }
    }
    if config.webhook.timeout.is_zero() {
        c.field("webhook.timeout", "must be > 0".into());
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&config.log.level) {
        c.field("log.level", format!("not a tracing filter: {e}"));
    }
}

/// `[api] public_url`, `link_key_file` (read here; the key never printed) and `link_ttl`.
fn check_links(api: &mut ApiConfig, c: &mut Checks<'_, '_>) {
    if let Some(url) = &api.public_url
        && !(has_scheme(url, "http://") || has_scheme(url, "https://"))
    {
        c.field(
            "api.public_url",
            format!(
                "expected the address officers reach, such as \"https://stockpile.example.org\", got {:?}",
                redact_url(url)
            ),
        );
    }
    if api.link_ttl.is_zero() {
        c.field("api.link_ttl", "must be > 0".into());
    }
    let Some(file) = &api.link_key_file else {
        return;
    };
    if api.public_url.is_none() {
        c.field(
            "api.link_key_file",
            "needs api.public_url: links point there".into(),
        );
    }
    let path = c.dir.join(file);
    match std::fs::read(&path) {
        Ok(bytes) => match alerts::link::LinkKey::new(bytes) {
            Ok(key) => api.link_key = Some(key),
            Err(e) => c.field(
                "api.link_key_file",
                format!(
                    "{}: {e} (make one with: head -c 32 /dev/urandom > {})",
                    path.display(),
                    path.display()
                ),
            ),
        },
        Err(e) => c.field(
            "api.link_key_file",
            format!("cannot read {}: {e}", path.display()),
        ),
    }
}

/// `[board] districts_geojson`: read and checked here, so a wrong file stops the
/// start with its place named rather than leaving the map without outlines.
fn check_board(board: &mut BoardConfig, c: &mut Checks<'_, '_>) {
    let Some(file) = &board.districts_geojson else {
        return;
    };
    let path = c.dir.join(file);
    let checked = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
        .and_then(|text| {
            api::districts::DistrictOutlines::parse(&text)
                .map_err(|e| format!("{}: {e}", path.display()))
        });
    match checked {
        Ok(outlines) => board.districts = Some(outlines),
        Err(message) => c.field("board.districts_geojson", message),
    }
}

/// `url` starts with `scheme` and has something after it.
fn has_scheme(url: &str, scheme: &str) -> bool {
    url.strip_prefix(scheme)
        .is_some_and(|rest| !rest.is_empty())
}

/// Checks after deserialising: problems are located by looking the field up again.
struct Checks<'a, 'i> {
    root: &'a DeTable<'i>,
    dir: &'a Path,
    problems: &'a mut Vec<Problem>,
}

impl Checks<'_, '_> {
    /// A problem with `field` (`mqtt.url`, `api.tokens[0].token`), located where it was
    /// written, or at its section when it was left out.
    fn field(&mut self, field: &str, message: String) {
        let at = locate(self.root, field);
        self.problems.push((at, format!("{field}: {message}")));
    }

    /// A secret given inline or as `…_file` (read here, trailing newline dropped).
    fn secret(&mut self, field: &str, secret: &mut Option<SecretString>, file: &Option<PathBuf>) {
        let Some(file) = file else {
            return;
        };
        let file_field = format!("{field}_file");
        if secret.is_some() {
            let message = format!(
                "give {} or {}, not both",
                last_key(field),
                last_key(&file_field)
            );
            self.field(&file_field, message);
            return;
        }
        let path = self.dir.join(file);
        match std::fs::read_to_string(&path) {
            Ok(text) => *secret = Some(text.trim_end_matches(['\r', '\n']).into()),
            Err(e) => self.field(&file_field, format!("cannot read {}: {e}", path.display())),
        }
    }
}

fn last_key(field: &str) -> &str {
    field.rsplit('.').next().unwrap_or(field)
}

/// The offset of `field` (`api.tokens[0].token`) in the document: its value if written,
/// else the closest enclosing table that is.
fn locate(root: &DeTable<'_>, field: &str) -> usize {
    let mut at = 0;
    let mut current: Option<&DeValue<'_>> = None;
    for part in field.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((key, rest)) => (key, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let table = match current {
            None => Some(root),
            Some(value) => value.as_table(),
        };
        let Some(value) = table.and_then(|t| t.get(key)) else {
            break;
        };
        at = value.span().start;
        current = Some(value.get_ref());
        if let Some(i) = index {
            let Some(item) = value.get_ref().as_array().and_then(|a| a.get(i)) else {
                break;
            };
            at = item.span().start;
            current = Some(item.get_ref());
        }
    }
    at
}

/// `[scope]` names one cluster or some towns, all of the registry; checked once both
/// are loaded.
fn check_scope(
    config: &Config,
    registry: &Registry,
    root: &DeTable<'_>,
    problems: &mut Vec<Problem>,
) {
    let Some(scope) = &config.scope else {
        return;
    };
    let mut problem = |field: String, message: String| {
        problems.push((locate(root, &field), format!("{field}: {message}")));
    };
    match (&scope.cluster, scope.towns.is_empty()) {
        (None, true) => problem(
            "scope".into(),
            "expected cluster = \"<id>\" or towns = [\"<id>\", …]".into(),
        ),
        (Some(_), false) => problem(
            "scope.towns".into(),
            "give cluster or towns, not both".into(),
        ),
        _ => {}
    }
    if let Some(cluster) = &scope.cluster
        && registry.cluster_idx(cluster).is_none()
    {
        problem(
            "scope.cluster".into(),
            format!("unknown cluster {cluster:?}"),
        );
    }
    for (i, town) in scope.towns.iter().enumerate() {
        if registry.town_idx(town).is_none() {
            problem(
                format!("scope.towns[{i}]"),
                format!("unknown town {town:?}"),
            );
        }
    }
}

/// `[alerts] clusters_with_own_instance` names clusters of the registry.
fn check_cluster_instances(
    config: &Config,
    registry: &Registry,
    root: &DeTable<'_>,
    problems: &mut Vec<Problem>,
) {
    let clusters = &config.alerts.clusters_with_own_instance;
    for (i, cluster) in clusters.iter().enumerate() {
        if registry.cluster_idx(cluster).is_none() {
            let field = format!("alerts.clusters_with_own_instance[{i}]");
            let message = format!("{field}: unknown cluster {cluster:?}");
            problems.push((locate(root, &field), message));
        }
    }
    // A heartbeat or two may be lost on the way without a takeover.
    let (every, silent) = (
        config.alerts.cluster_state_every,
        config.alerts.cluster_silent_after,
    );
    if every.is_zero() {
        let field = "alerts.cluster_state_every";
        problems.push((locate(root, field), format!("{field}: must be above 0")));
    } else if silent < every * 3 {
        let field = "alerts.cluster_silent_after";
        let message = format!(
            "{field}: {silent:?} is less than three heartbeats (cluster_state_every = {every:?})"
        );
        problems.push((locate(root, field), message));
    }
}

/// Officer tokens name towns of the registry; checked once both are loaded.
fn check_token_towns(
    config: &Config,
    registry: &Registry,
    root: &DeTable<'_>,
    problems: &mut Vec<Problem>,
) {
    for (i, token) in config.api.tokens.iter().enumerate() {
        for town in token
            .towns
            .iter()
            .filter(|t| registry.town_idx(t).is_none())
        {
            let field = format!("api.tokens[{i}].towns");
            problems.push((
                locate(root, &field),
                format!("{field}: unknown town {town:?}"),
            ));
        }
    }
}

/// The stress test's scenarios are checked as `POST /api/v1/scenarios` checks a request,
/// against the registry, each problem at its scenario's field.
fn check_stress_test(
    config: &Config,
    registry: &Registry,
    root: &DeTable<'_>,
    problems: &mut Vec<Problem>,
) {
    let Some(stress_test) = &config.stress_test else {
        return;
    };
    for (field, message) in stress_test.problems(registry) {
        let field = format!("stress_test.{field}");
        problems.push((locate(root, &field), format!("{field}: {message}")));
    }
}
