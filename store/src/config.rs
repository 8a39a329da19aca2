//! `[store]`: the embedded SQLite store's file, retention and intervals, as the
//! configuration writes them (docs/design.md#cli-and-configuration). The server
//! deserialises the section straight into [`StoreConfig`] and resolves `path` against
//! the config file's directory.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::maintenance::{self, MaintenanceConfig};

/// `[store]`: the embedded SQLite store.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The SQLite file. Relative paths are relative to the config file's directory.
    pub path: PathBuf,
    /// How long readings history is kept; older readings are rejected (`ts_too_old`) and
    /// pruned (docs/design.md#retention).
    #[serde(deserialize_with = "reserve::duration::deserialize")]
    pub retention: Duration,
    /// How long sent and failed notifications are kept after their last attempt.
    /// Pending ones are kept until delivered or given up.
    #[serde(deserialize_with = "reserve::duration::deserialize")]
    pub outbox_retention: Duration,
    /// How long resolved alerts, with their acknowledgements, are kept after they
    /// resolved. Open alerts are always kept.
    #[serde(deserialize_with = "reserve::duration::deserialize")]
    pub alert_retention: Duration,
    /// How long silences are kept after they ended.
    #[serde(deserialize_with = "reserve::duration::deserialize")]
    pub silence_retention: Duration,
    /// How long audit entries (who acknowledged, counted, moved, reloaded what) are
    /// kept.
    #[serde(deserialize_with = "reserve::duration::deserialize")]
    pub audit_retention: Duration,
    /// Time between two pruning passes (the first runs shortly after start).
    #[serde(deserialize_with = "reserve::duration::deserialize")]
    pub prune_every: Duration,
    /// How often live facility state is saved beside the readings. Readings are
    /// durable before their ack either way; after a crash the readings since the last
    /// save are replayed at start-up, so a longer interval costs start-up time, not data.
    #[serde(deserialize_with = "reserve::duration::deserialize")]
    pub snapshot_every: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        let defaults = MaintenanceConfig::default();
        StoreConfig {
            path: "stockpile.db".into(),
            retention: defaults.retention,
            outbox_retention: defaults.outbox_retention,
            alert_retention: defaults.alert_retention,
            silence_retention: defaults.silence_retention,
            audit_retention: defaults.audit_retention,
            prune_every: defaults.every,
            snapshot_every: Duration::from_secs(1),
        }
    }
}

impl StoreConfig {
    /// What the store's maintenance keeps and how often it runs. The first pass comes
    /// soon after start, or after `prune_every` when that is sooner.
    pub fn maintenance(&self) -> MaintenanceConfig {
        MaintenanceConfig {
            first_after: maintenance::DEFAULT_FIRST_PASS_AFTER.min(self.prune_every),
            retention: self.retention,
            outbox_retention: self.outbox_retention,
            alert_retention: self.alert_retention,
            silence_retention: self.silence_retention,
            audit_retention: self.audit_retention,
            every: self.prune_every,
            ..MaintenanceConfig::default()
        }
    }
}
