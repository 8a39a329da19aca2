//! The command line (docs/design.md#cli-and-configuration):
//! `stockpile check-config FILE`, `stockpile serve`.

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use alerts::redact::redact_url;
use clap::{Parser, Subcommand};
use reserve::Registry;
use reserve::registry::{Channel, Contact, FacilityKindName};
use reserve::shard::Shard;

use crate::config::{self, Config, ConfigErrors, Loaded};

#[derive(Debug, Parser)]
#[command(
    name = "stockpile",
    version,
    about = "Keeps a city's emergency reserves honest"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a config file (or a registry file alone) and print a summary, or every
    /// problem as file:line: message
    CheckConfig {
        /// The config file, or a registry file alone
        file: PathBuf,
        /// Also show which towns instance i of N would run (as `serve --shard i/N`)
        #[arg(long, value_name = "i/N")]
        shard: Option<Shard>,
    },
    /// Try Stockpile: embedded broker, the synthetic demo registry, the simulator,
    /// the API and the wall board in one process, SQLite in a temp dir
    Demo {
        /// Built-in scenario (normal, flood, earthquake, comms-cut, drill) or a file
        #[arg(long, default_value = "flood")]
        scenario: String,
        /// Simulated seconds per second: 720 is 12 simulated hours a minute
        #[arg(long, default_value_t = 720.0)]
        speed: f64,
        /// Port of the API and wall board on 127.0.0.1
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Port of the embedded MQTT broker on 127.0.0.1
        #[arg(long, default_value_t = 1883)]
        mqtt_port: u16,
        /// Seed of the simulator's random choices
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Send the alert emails through this SMTP server (smtp://host:port,
        /// smtp://host:port?tls=required, smtps://host:port) or into this directory
        /// (file:///dir) instead of the mailbox in the demo's temp dir
        #[arg(long, value_name = "URL")]
        smtp: Option<String>,
    },
    /// Run the service: MQTT ingest into the ledger and the SQLite store
    Serve {
        /// The config file (or a registry file alone, with every config default)
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Run as instance i of N (numbered from 0), with only the towns that hash to
        /// it; overrides `[mqtt] shard` of the config
        #[arg(long, value_name = "i/N")]
        shard: Option<Shard>,
    },
}

/// Where `serve` looks when not told: where the deploy/ files install it.
pub const DEFAULT_CONFIG: &str = "/etc/stockpile/stockpile.toml";

/// The `STOCKPILE__*` part of this process's environment. Names or values that are not
/// UTF-8 cannot be config; they are passed on lossily and fail validation visibly.
pub fn stockpile_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .filter(|(k, _)| k.starts_with(config::ENV_PREFIX))
        .collect()
}

/// Loads `file` as `check-config` does (docs/design.md#cli-and-configuration); the
/// summary shows the shard's share of the registry when there is a shard.
pub fn check_config(
    file: &Path,
    shard: Option<Shard>,
    env: &[(String, String)],
) -> Result<Summary, ConfigErrors> {
    let loaded = load(file, shard, env)?;
    // A registry alone is checked as a registry; its config is every default.
    let warnings = if loaded.registry_source.is_config {
        warnings(&loaded.config, &loaded.registry)
    } else {
        Vec::new()
    };
    Ok(Summary {
        file: file.to_owned(),
        loaded,
        warnings,
    })
}

/// Contacts named in a warning before "and N more".
const NAMED_CONTACTS: usize = 5;

/// What a config that loads can still get wrong: alerts that reach nobody, an API
/// nobody may read. `check-config` prints these after its summary and still succeeds;
/// `serve` logs them at start.
pub fn warnings(config: &Config, registry: &Registry) -> Vec<String> {
    let mut warnings = Vec::new();
    let (email, sms) = (config.smtp.is_some(), config.sms.is_some());
    // The webhook channel needs no section: a contact's URL is enough.
    let delivers = |contact: &Contact, channel: Channel| match channel {
        Channel::Email => email && contact.email.is_some(),
        Channel::Sms => sms && contact.phone.is_some(),
        Channel::Webhook => contact.webhook.is_some(),
    };
    let any_webhook = registry
        .contacts
        .iter()
        .any(|c| delivers(c, Channel::Webhook));
    if registry.contacts.is_empty() {
        warnings.push("registry has no contacts: alerts notify nobody".to_owned());
    } else if !email && !sms && !any_webhook {
        warnings.push(
            "no notification channel: no [smtp] or [sms] section and no contact has a webhook, so alerts notify nobody"
                .to_owned(),
        );
    } else {
        let unreachable: Vec<String> = registry
            .contacts
            .iter()
            .filter(|c| !c.channels.iter().any(|&ch| delivers(c, ch)))
            .map(|c| format!("{} ({})", c.name, missing_channels(c, email, sms)))
            .collect();
        if !unreachable.is_empty() {
            let mut named = unreachable[..unreachable.len().min(NAMED_CONTACTS)].join(", ");
            if unreachable.len() > NAMED_CONTACTS {
                write!(named, " and {} more", unreachable.len() - NAMED_CONTACTS)
                    .expect("writing to a String");
            }
            warnings.push(format!(
                "{} of {} contacts have no channel this config can deliver, so their alerts reach nobody: {named}",
                unreachable.len(),
                registry.contacts.len()
            ));
        }
    }
    if !config.api.public_read && config.api.tokens.is_empty() {
        warnings.push(
            "nobody can read the API or the wall board: api.public_read is false and api.tokens is empty"
                .to_owned(),
        );
    }
    warnings
}

/// Why a contact's channels deliver nothing: `email needs [smtp], sms needs [sms]`.
fn missing_channels(contact: &Contact, email: bool, sms: bool) -> String {
    let why: Vec<&str> = contact
        .channels
        .iter()
        .map(|channel| match channel {
            Channel::Email if !email => "email needs [smtp]",
            Channel::Sms if !sms => "sms needs [sms]",
            Channel::Email => "no email address",
            Channel::Sms => "no phone",
            Channel::Webhook => "no webhook URL",
        })
        .collect();
    if why.is_empty() {
        "no channels".to_owned()
    } else {
        why.join(", ")
    }
}

/// Loads `file` for `serve` or `check-config`; a `--shard` from the command line wins
/// over the config's `[mqtt] shard`.
pub fn load(
    file: &Path,
    shard: Option<Shard>,
    env: &[(String, String)],
) -> Result<Loaded, ConfigErrors> {
    let mut loaded = config::load(file, env)?;
    if shard.is_some() {
        loaded.config.mqtt.shard = shard;
    }
    Ok(loaded)
}

/// What `check-config` prints when everything is in order.
#[derive(Debug)]
pub struct Summary {
    pub file: PathBuf,
    pub loaded: Loaded,
    /// What the config loads with but should not ([`warnings`]); printed apart from
    /// the summary, on stderr.
    pub warnings: Vec<String>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Loaded {
            config,
            registry: r,
            registry_source: source,
        } = &self.loaded;
        writeln!(f, "{}: ok", self.file.display())?;
        let mut registry = source.path.display().to_string();
        if !source.tables.is_empty() {
            write!(registry, " (+ {})", source.tables.join(", "))?;
        }
        row(f, "registry", registry)?;
        row(f, "districts", thousands(r.districts.len() as u64))?;
        row(f, "clusters", thousands(r.clusters.len() as u64))?;
        let population: u64 = r.towns.iter().map(|t| t.population).sum();
        row(
            f,
            "towns",
            format!(
                "{} (population {})",
                thousands(r.towns.len() as u64),
                thousands(population)
            ),
        )?;
        let kinds = [
            FacilityKindName::Warehouse,
            FacilityKindName::WaterPoint,
            FacilityKindName::PowerUnit,
        ]
        .map(|kind| format!("{kind} {}", thousands(r.count_facilities(kind) as u64)))
        .join(", ");
        row(
            f,
            "facilities",
            format!("{} ({kinds})", thousands(r.facilities.len() as u64)),
        )?;
        let categories: Vec<&str> = r.categories.iter().map(|c| c.id.as_str()).collect();
        row(
            f,
            "categories",
            format!("{} ({})", categories.len(), categories.join(", ")),
        )?;
        row(f, "contacts", thousands(r.contacts.len() as u64))?;
        if let Some(shard) = config.mqtt.shard {
            let towns: Vec<_> = r.towns.iter().filter(|t| shard.contains(&t.id)).collect();
            let population: u64 = towns.iter().map(|t| t.population).sum();
            let facilities: usize = towns.iter().map(|t| t.facilities.len()).sum();
            row(
                f,
                "shard",
                format!(
                    "{shard}: towns {} (population {}), facilities {}, client id {}",
                    thousands(towns.len() as u64),
                    thousands(population),
                    thousands(facilities as u64),
                    config.mqtt.instance_client_id()
                ),
            )?;
        }
        if !source.is_config {
            return Ok(());
        }
        let mqtt = &config.mqtt;
        let broker = if mqtt.embedded_broker {
            " (embedded broker)"
        } else {
            ""
        };
        // URLs may carry credentials (`smtp://user:password@relay`, an SMS gateway's
        // key in the query): printed redacted, as everywhere.
        row(f, "mqtt", format!("{}{broker}", redact_url(&mqtt.url)))?;
        row(f, "store", config.store.path.display())?;
        let reads = if config.api.public_read {
            "public reads"
        } else {
            "reads need a token"
        };
        let tokens = config.api.tokens.len();
        row(
            f,
            "api",
            format!("{} ({reads}, {tokens} tokens)", config.api.listen),
        )?;
        let off = || "off".to_owned();
        row(
            f,
            "influx",
            config.influx.as_ref().map_or_else(off, |i| {
                format!(
                    "{} ({})",
                    redact_url(&i.url),
                    format!("{:?}", i.api).to_lowercase()
                )
            }),
        )?;
        row(
            f,
            "smtp",
            config
                .smtp
                .as_ref()
                .map_or_else(off, |s| redact_url(&s.url)),
        )?;
        row(
            f,
            "sms",
            config.sms.as_ref().map_or_else(off, |s| redact_url(&s.url)),
        )?;
        Ok(())
    }
}

fn row(f: &mut fmt::Formatter<'_>, label: &str, value: impl fmt::Display) -> fmt::Result {
    writeln!(f, "  {label:<12}{value}")
}

/// `21812345` → `21,812,345`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// `1 error`, `3 errors`: the last line after a failed check.
pub fn error_count(n: usize) -> String {
    if n == 1 {
        "1 error".to_owned()
    } else {
        format!("{n} errors")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        for (n, want) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (21_812_345, "21,812,345"),
        ] {
            assert_eq!(thousands(n), want);
        }
    }
}
