//! Delivery: one worker per channel takes due notifications from the outbox, sends
//! them, and records what happened. A transient failure is retried with exponential
//! backoff (an SMTP server down for an hour loses nothing); a permanent one, or one
//! failing longer than the retry policy allows, is marked failed, which the API and
//! metrics show.
//!
//! The engine wakes a worker as soon as it enqueued (a `Notify`), so a notification
//! reaches its server within milliseconds; otherwise the worker sleeps until the next
//! retry is due.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use store::{AsyncStore, OutboxRow, StoreError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::channel::{Channel, DeliveryError, Notification, channel_id};
use crate::config::RetryPolicy;

/// Notifications taken from the outbox at once.
const BATCH: usize = 64;
/// Recipients a channel's worker sends to at the same time.
const CONCURRENT_SENDS: usize = 8;
/// Longest sleep without a wake-up: a safety net should a wake-up be missed.
const IDLE_RECHECK: Duration = Duration::from_secs(60);
/// Pause after the store failed, before trying again.
const STORE_RETRY: Duration = Duration::from_secs(1);
/// How long a send in flight may still take once shutdown is asked for.
const SEND_GRACE_AT_SHUTDOWN: Duration = Duration::from_secs(5);

/// Delivers `channel`'s notifications until `shutdown`.
pub(crate) async fn deliver<C: Channel>(
    channel: Arc<C>,
    store: AsyncStore,
    wake: Arc<Notify>,
    retry: RetryPolicy,
    shutdown: CancellationToken,
) {
    let kind = channel_id(channel.kind());
    loop {
        let now = Utc::now();
        let due = match store
            .run(move |s| s.due_notifications(kind, now, BATCH))
            .await
        {
            Ok(due) => due,
            Err(error) => {
                tracing::error!(message = "Cannot read the outbox.", channel = kind, %error);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(STORE_RETRY) => continue,
                }
            }
        };
        let full = due.len() == BATCH;
        // Several recipients at once: one SMTP send costs ~45 ms (mostly lettre's
        // write pattern meeting the server's delayed ACK, BENCHMARKS.md), so one at a
        // time a city-wide crossing would queue the last officer's mail for minutes.
        // One recipient's messages stay in order, on one task.
        let mut sending = tokio::task::JoinSet::new();
        for rows in by_recipient(due) {
            if sending.len() >= CONCURRENT_SENDS {
                sending.join_next().await;
            }
            let (channel, store, shutdown) =
                (Arc::clone(&channel), store.clone(), shutdown.clone());
            sending.spawn(async move {
                for row in rows {
                    let message = notification(&row);
                    if shutdown.is_cancelled() {
                        return;
                    }
                    // A send in flight at shutdown is given a moment to finish and be
                    // recorded: abandoned after the server took it, it would go out
                    // again after the restart.
                    let send = channel.send(&message);
                    tokio::pin!(send);
                    let outcome = tokio::select! {
                        outcome = &mut send => outcome,
                        _ = shutdown.cancelled() => {
                            match tokio::time::timeout(SEND_GRACE_AT_SHUTDOWN, &mut send).await {
                                Ok(outcome) => outcome,
                                Err(_) => return,
                            }
                        }
                    };
                    if let Err(error) =
                        record(&store, &row, outcome, &retry, kind, &shutdown).await
                    {
                        tracing::error!(message = "Cannot record a delivery.", channel = kind, id = row.id, %error);
                    }
                }
            });
        }
        while sending.join_next().await.is_some() {}
        if shutdown.is_cancelled() {
            return;
        }
        if full {
            continue;
        }
        let next = store
            .run(move |s| s.next_notification_due(kind))
            .await
            .unwrap_or_else(|error| {
                tracing::error!(message = "Cannot read the outbox.", channel = kind, %error);
                None
            });
        let sleep = next
            .map(|at| (at - Utc::now()).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(IDLE_RECHECK)
            .min(IDLE_RECHECK);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Due rows grouped by recipient, each group in the outbox's order, groups in the
/// order of their first row.
fn by_recipient(due: Vec<OutboxRow>) -> Vec<Vec<OutboxRow>> {
    let mut groups: Vec<Vec<OutboxRow>> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for row in due {
        match index.get(&row.recipient) {
            Some(&i) => groups[i].push(row),
            None => {
                index.insert(row.recipient.clone(), groups.len());
                groups.push(vec![row]);
            }
        }
    }
    groups
}

fn notification(row: &OutboxRow) -> Notification {
    Notification {
        id: row.id,
        contact: row.contact.clone(),
        recipient: row.recipient.clone(),
        subject: row.subject.clone(),
        body: row.body.clone(),
        html: row.html.clone(),
    }
}

async fn record(
    store: &AsyncStore,
    row: &OutboxRow,
    outcome: Result<(), DeliveryError>,
    retry: &RetryPolicy,
    kind: &'static str,
    shutdown: &CancellationToken,
) -> Result<(), StoreError> {
    let id = row.id;
    let attempts = row.attempts + 1;
    let now = Utc::now();
    match outcome {
        Ok(()) => {
            tracing::info!(
                message = "Notification delivered.",
                channel = kind,
                id,
                contact = %row.contact,
                attempts
            );
            // Sent: it must be recorded as sent before this recipient's next message,
            // or the next round would send it again. A store that fails for a while
            // (locked by another process, disk full) is waited out, logged once.
            let mut logged = false;
            loop {
                match store.run(move |s| s.mark_sent(id, attempts, now)).await {
                    Ok(()) => return Ok(()),
                    Err(error) if error.is_recoverable() && !shutdown.is_cancelled() => {
                        if !logged {
                            tracing::error!(
                                message = "Cannot record a delivered notification; retrying, so it is not sent twice.",
                                channel = kind,
                                id,
                                %error
                            );
                            logged = true;
                        }
                        tokio::select! {
                            _ = shutdown.cancelled() => return Err(error),
                            _ = tokio::time::sleep(STORE_RETRY) => {}
                        }
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        Err(DeliveryError::Permanent(error)) => {
            tracing::error!(
                message = "Notification refused; giving up.",
                channel = kind,
                id,
                contact = %row.contact,
                %error
            );
            store
                .run(move |s| s.mark_failed(id, attempts, &error))
                .await
        }
        Err(DeliveryError::Transient(error)) => {
            let failing_for = (now - row.created).to_std().unwrap_or(Duration::ZERO);
            if failing_for >= retry.give_up_after {
                let error = format!("gave up after {attempts} attempts: {error}");
                tracing::error!(
                    message = "Notification undeliverable; giving up.",
                    channel = kind,
                    id,
                    contact = %row.contact,
                    %error
                );
                return store
                    .run(move |s| s.mark_failed(id, attempts, &error))
                    .await;
            }
            let wait = retry.backoff(attempts);
            tracing::warn!(
                message = "Notification not delivered; will retry.",
                channel = kind,
                id,
                contact = %row.contact,
                attempts,
                retry_in_ms = wait.as_millis() as u64,
                %error
            );
            let next = now + crate::chrono_duration(wait);
            store
                .run(move |s| s.mark_retry(id, attempts, next, &error))
                .await
        }
    }
}
