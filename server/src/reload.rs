//! Reloading the registry and the API tokens while running
//! (docs/design.md#registry-reload): `POST /api/v1/registry/reload` and SIGHUP.
//!
//! The files are read again exactly as at start-up (the same loader, file, shard and
//! environment), so a reload accepts what a restart would and refuses, with the same
//! located errors, what a restart would refuse. Nothing changes until everything
//! loaded. Then the ingest writer, the ledger's only writer of facility state, swaps
//! the ledger between two batches; the alert engine adopts the registry the ledger is
//! on at its next step (resolving the alerts of removed facilities); the alert views
//! and the API's tokens follow. Other sections of the config take a restart.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use api::{ConfigProblem, ReloadRefused, ReloadRequest, ReloadSummary};
use chrono::Utc;
use live::SharedLedger;
use reserve::Registry;
use reserve::ledger::RegistryChanges;
use reserve::shard::Shard;
use store::{AsyncStore, NewAudit};

use crate::config::{ConfigError, Loaded};

/// What the service was started from: a reload reads the same.
#[derive(Debug, Clone)]
pub struct ReloadSource {
    /// The config file (or registry alone) given to `serve`.
    pub file: PathBuf,
    /// `--shard`, which wins over the file's `[mqtt] shard`.
    pub shard: Option<Shard>,
    /// The `STOCKPILE__*` environment at start: a reload must not pick up a change a
    /// restart would see differently (the process's environment does not change).
    pub env: Vec<(String, String)>,
}

/// The running service's reload. A reload once begun runs to its end even when its
/// caller gives up (an HTTP request timing out while ingest waits out a store fault):
/// a reload cut short after the ledger's swap would leave the tokens and the alert
/// views on the old registry.
#[derive(Debug)]
pub struct Reloader {
    switches: Arc<Switches>,
}

/// What a reload switches, and how.
#[derive(Debug)]
struct Switches {
    source: ReloadSource,
    ledger: SharedLedger,
    ingest: ingest::RegistrySwapper,
    alerts: alerts::AlertsHandle,
    /// The API's state, for its token list (shared with every clone the router holds).
    api: api::AppState,
    /// For the audit log: a connection of its own.
    audit: AsyncStore,
    /// One reload at a time: two at once would race to swap.
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub(crate) fn new(
        source: ReloadSource,
        ledger: SharedLedger,
        ingest: ingest::RegistrySwapper,
        alerts: alerts::AlertsHandle,
        api: api::AppState,
        audit: AsyncStore,
    ) -> Reloader {
        let switches = Switches {
            source,
            ledger,
            ingest,
            alerts,
            api,
            audit,
            one_at_a_time: tokio::sync::Mutex::new(()),
        };
        Reloader {
            switches: Arc::new(switches),
        }
    }

    /// Loads the files again and, when they are valid, switches every part to them.
    /// Logged and recorded in the audit log either way.
    pub async fn reload(&self, request: ReloadRequest) -> Result<ReloadSummary, ReloadRefused> {
        let switches = Arc::clone(&self.switches);
        tokio::spawn(async move { switches.reload(request).await })
            .await
            .unwrap_or_else(|e| Err(ReloadRefused::Failed(format!("the reload failed: {e}"))))
    }
}

impl Switches {
    async fn reload(&self, request: ReloadRequest) -> Result<ReloadSummary, ReloadRefused> {
        let _one = self.one_at_a_time.lock().await;
        let outcome = self.load_and_swap().await;
        match &outcome {
            Ok((summary, _)) => tracing::info!(
                message = "Registry reloaded.",
                by = %request.actor,
                via = request.via,
                towns = summary.towns,
                facilities = summary.facilities,
                towns_added = ?summary.towns_added,
                towns_removed = ?summary.towns_removed,
                towns_changed = ?summary.towns_changed,
                facilities_added = ?summary.facilities_added,
                facilities_removed = ?summary.facilities_removed,
                facilities_changed = ?summary.facilities_changed
            ),
            Err(ReloadRefused::Invalid(problems)) => {
                for problem in problems {
                    tracing::error!(
                        message = "Registry reload refused; the running registry stays.",
                        problem = %problem.message
                    );
                }
            }
            Err(ReloadRefused::Failed(why)) => tracing::error!(
                message = "Registry reload failed; the running registry stays.",
                error = %why
            ),
        }
        self.record(&request, &outcome).await;
        outcome.map(|(summary, _)| summary)
    }

    /// The new registry and tokens, swapped in; with the towns the edit touched.
    async fn load_and_swap(&self) -> Result<(ReloadSummary, Vec<String>), ReloadRefused> {
        let source = self.source.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            crate::cli::load(&source.file, source.shard, &source.env)
        })
        .await
        .map_err(|e| ReloadRefused::Failed(format!("loading the files failed: {e}")))?
        .map_err(|errors| ReloadRefused::Invalid(errors.0.iter().map(problem).collect()))?;
        let Loaded {
            mut config,
            registry,
            ..
        } = loaded;
        // Officer tokens may name towns of other shards: resolved against the whole
        // registry, as at start-up.
        let auth = crate::serve::auth_config(&config, &registry)
            .map_err(|e| ReloadRefused::Failed(format!("{e:#}")))?;
        let registry = Arc::new(crate::serve::shard_registry(&mut config, registry));
        let old: Arc<Registry> = Arc::clone(
            self.ledger
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .registry(),
        );
        let changes = RegistryChanges::between(&old, &registry);
        let tokens = auth.tokens.len();
        self.ingest
            .swap(Arc::clone(&registry))
            .await
            .map_err(|e| ReloadRefused::Failed(e.to_string()))?;
        self.alerts.set_registry(Arc::clone(&registry));
        self.api.replace_auth(auth);
        let towns = changes.towns(&old, &registry).into_iter().collect();
        Ok((summary(&registry, tokens, changes), towns))
    }

    /// One audit row per attempt: what changed, or why nothing did.
    async fn record(
        &self,
        request: &ReloadRequest,
        outcome: &Result<(ReloadSummary, Vec<String>), ReloadRefused>,
    ) {
        let (towns, detail) = match outcome {
            Ok((summary, towns)) => (towns.clone(), describe(summary)),
            Err(ReloadRefused::Invalid(problems)) => (
                Vec::new(),
                format!(
                    "refused: {}",
                    problems
                        .iter()
                        .map(|p| p.message.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            ),
            Err(ReloadRefused::Failed(why)) => (Vec::new(), format!("failed: {why}")),
        };
        let entry = NewAudit {
            at: Utc::now(),
            actor: request.actor.clone(),
            via: request.via.to_owned(),
            action: "registry_reload".to_owned(),
            towns,
            alert_ids: Vec::new(),
            detail,
            remote: request.remote.clone(),
        };
        if let Err(error) = self.audit.run(move |s| s.record_audit(&entry)).await {
            tracing::error!(
                message = "Cannot record a registry reload in the audit log; this line is the record.",
                by = %request.actor,
                %error
            );
        }
    }
}

impl api::RegistryReload for Reloader {
    fn reload(
        &self,
        request: ReloadRequest,
    ) -> Pin<Box<dyn Future<Output = Result<ReloadSummary, ReloadRefused>> + Send + '_>> {
        Box::pin(Reloader::reload(self, request))
    }
}

fn summary(registry: &Registry, tokens: usize, changes: RegistryChanges) -> ReloadSummary {
    ReloadSummary {
        towns: registry.towns.len(),
        facilities: registry.facilities.len(),
        tokens,
        towns_added: changes.towns_added,
        towns_removed: changes.towns_removed,
        towns_changed: changes.towns_changed,
        facilities_added: changes.facilities_added,
        facilities_removed: changes.facilities_removed,
        facilities_changed: changes.facilities_changed,
        categories_changed: changes.categories_changed,
        contacts_changed: changes.contacts_changed,
    }
}

/// The audit row's detail: the ids, as the operator's summary gives them.
fn describe(summary: &ReloadSummary) -> String {
    let mut parts = vec![format!(
        "{} towns, {} facilities, {} tokens",
        summary.towns, summary.facilities, summary.tokens
    )];
    for (what, ids) in [
        ("towns added", &summary.towns_added),
        ("towns removed", &summary.towns_removed),
        ("towns changed", &summary.towns_changed),
        ("facilities added", &summary.facilities_added),
        ("facilities removed", &summary.facilities_removed),
        ("facilities changed", &summary.facilities_changed),
    ] {
        if !ids.is_empty() {
            parts.push(format!("{what}: {}", ids.join(", ")));
        }
    }
    parts.join("; ")
}

/// A config error as the API locates it: `registry.toml:41: facility "wh-9": town:
/// unknown town "jingshn"` is file `registry.toml`, line 41, field `facility "wh-9":
/// town`.
fn problem(error: &ConfigError) -> ConfigProblem {
    let (file, line) = match error.origin.rsplit_once(':') {
        Some((file, line)) if line.parse::<u32>().is_ok() => (file.to_owned(), line.parse().ok()),
        _ => (error.origin.clone(), None),
    };
    ConfigProblem {
        file,
        line,
        field: field_of(&error.message),
        message: error.to_string(),
    }
}

/// The leading segments of a message that name where the problem is (`facility
/// "wh-9": town`, `mqtt.url`), with the field an "unknown field" names; `None` when
/// the message names no field (a duplicate id says where its twin is instead).
fn field_of(message: &str) -> Option<String> {
    let mut segments = message.split(": ").peekable();
    let mut field: Vec<String> = Vec::new();
    while let Some(segment) = segments.next() {
        if segments.peek().is_none() {
            if let Some(name) = segment
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split_once('`'))
            {
                field.push(name.0.to_owned());
            }
            break;
        }
        if !names_a_place(segment) {
            break;
        }
        field.push(segment.to_owned());
    }
    (!field.is_empty()).then(|| field.join(": "))
}

/// `town`, `api.tokens[0].towns`, `facility "wh-9"`: a key, optionally with an id.
fn names_a_place(segment: &str) -> bool {
    let (key, id) = match segment.split_once(' ') {
        Some((key, id)) => (key, Some(id)),
        None => (segment, None),
    };
    let key_ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.[]".contains(c));
    let id_ok = id.is_none_or(|id| id.len() >= 2 && id.starts_with('"') && id.ends_with('"'));
    key_ok && id_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_located_by_file_line_and_field() {
        let cases = [
            (
                "deploy/registry.toml:41",
                "facility \"wh-9\": town: unknown town \"jingshn\"",
                (
                    "deploy/registry.toml",
                    Some(41),
                    Some("facility \"wh-9\": town"),
                ),
            ),
            (
                "env STOCKPILE__MQTT__URL",
                "mqtt.url: expected mqtt://host:port",
                ("env STOCKPILE__MQTT__URL", None, Some("mqtt.url")),
            ),
            (
                "registry.toml",
                "cannot read: gone",
                ("registry.toml", None, None),
            ),
            (
                "registry.toml:12",
                "town \"jingshan\": unknown field `populaton`, expected one of `id`, `population`",
                (
                    "registry.toml",
                    Some(12),
                    Some("town \"jingshan\": populaton"),
                ),
            ),
            (
                "registry.toml:20",
                "duplicate facility \"js-wh1\" (first defined at registry.toml:15)",
                ("registry.toml", Some(20), None),
            ),
            (
                "stockpile.toml:3",
                "mqtt.url: expected mqtt://host:port, got \"a: b\"",
                ("stockpile.toml", Some(3), Some("mqtt.url")),
            ),
        ];
        for (origin, message, (file, line, field)) in cases {
            let located = problem(&ConfigError {
                origin: origin.into(),
                message: message.into(),
            });
            assert_eq!(located.file, file);
            assert_eq!(located.line, line);
            assert_eq!(located.field.as_deref(), field);
            assert_eq!(located.message, format!("{origin}: {message}"));
        }
    }
}
