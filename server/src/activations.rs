//! The activation table's part in the service (docs/design.md#activation-table): the
//! open activations loaded from the store at start, shared by the API (which changes
//! them) and the alert engine (which evaluates them); and, with InfluxDB, the
//! `activation` series written every minute so a step falling overdue shows.

use std::path::Path;
use std::time::Duration;

use alerts::activation::{OpenActivations, SharedActivations};
use anyhow::Context as _;
use chrono::Utc;
use store::{ActivationState, Store, StoreOptions};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often open activations' progress is written to the `activation` series.
const PROGRESS_EVERY: Duration = Duration::from_secs(60);

/// Open activations are a few per event; a bound keeps a runaway table from filling
/// memory at start.
const MAX_OPEN_LOADED: usize = 10_000;

/// The open activations the store holds, shared.
pub(crate) fn load(store: &Store) -> anyhow::Result<SharedActivations> {
    let open = store
        .activations(ActivationState::Open, MAX_OPEN_LOADED)
        .context("load the open activations")?;
    if !open.is_empty() {
        tracing::info!(
            message = "Open activations loaded.",
            activations = open.len()
        );
    }
    Ok(OpenActivations::shared(&open))
}

/// Writes each open activation's `activation` lines every [`PROGRESS_EVERY`], on a
/// connection of its own, until `shutdown`.
pub(crate) fn spawn_progress(
    store_path: &Path,
    options: StoreOptions,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let store = Store::open(store_path, options).with_context(|| {
        format!(
            "open the store {} for activation progress",
            store_path.display()
        )
    })?;
    let store = store::AsyncStore::new(store);
    tracker.spawn(async move {
        let mut every = tokio::time::interval(PROGRESS_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let written = store
                .run(|s| s.enqueue_open_activation_progress(Utc::now()))
                .await;
            if let Err(error) = written {
                tracing::warn!(message = "Writing activation progress failed; trying again in a minute.", %error);
            }
        }
    });
    Ok(())
}
