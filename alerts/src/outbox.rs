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
    let worker = Arc::new(Worker {
        kind: channel_id(channel.kind()),
        channel,
        store,
        retry,
        shutdown,
    });
    loop {
        let Some(full) = worker.round().await else {
            tokio::select! {
                _ = worker.shutdown.cancelled() => return,
                _ = tokio::time::sleep(STORE_RETRY) => continue,
            }
        };
        if worker.shutdown.is_cancelled() {
            return;
        }
        if full {
            continue;
        }
        let sleep = worker.until_next_due().await;
        tokio::select! {
            _ = worker.shutdown.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// One channel's delivery worker.
struct Worker<C> {
    channel: Arc<C>,
    store: AsyncStore,
    retry: RetryPolicy,
    kind: &'static str,
    shutdown: CancellationToken,
}

impl<C: Channel> Worker<C> {
    /// Sends what is due now. `Some(true)` when a whole batch was due (more may wait),
    /// `None` when the outbox could not be read.
    async fn round(self: &Arc<Self>) -> Option<bool> {
        let (now, kind) = (Utc::now(), self.kind);
        let due = match self
            .store
            .run(move |s| s.due_notifications(kind, now, BATCH))
            .await
        {
            Ok(due) => due,
            Err(error) => {
                tracing::error!(message = "Cannot read the outbox.", channel = kind, %error);
                return None;
            }
        };
        let full = due.len() == BATCH;
        // Several recipients at once: one slow server (or SMS gateway) must not queue
        // a city-wide crossing's last officer for minutes. One recipient's messages
        // stay in order, on one task.
        let mut sending = tokio::task::JoinSet::new();
        for rows in by_recipient(due) {
            if sending.len() >= CONCURRENT_SENDS {
                sending.join_next().await;
            }
            let worker = Arc::clone(self);
            sending.spawn(async move { worker.send_in_order(rows).await });
        }
        while sending.join_next().await.is_some() {}
        Some(full)
    }

    /// One recipient's due messages, in order, each recorded before the next.
    async fn send_in_order(&self, rows: Vec<OutboxRow>) {
        for row in rows {
            if self.shutdown.is_cancelled() {
                return;
            }
            let Some(outcome) = self.send(&row).await else {
                return;
            };
            if let Err(error) = self.record(&row, outcome).await {
                tracing::error!(message = "Cannot record a delivery.", channel = self.kind, id = row.id, %error);
            }
        }
    }

    /// Sends one message. A send in flight at shutdown is given a moment to finish and
    /// be recorded: abandoned after the server took it, it would go out again after the
    /// restart. `None`: abandoned.
    async fn send(&self, row: &OutboxRow) -> Option<Result<(), DeliveryError>> {
        let message = notification(row);
        let send = self.channel.send(&message);
        tokio::pin!(send);
        tokio::select! {
            outcome = &mut send => Some(outcome),
            _ = self.shutdown.cancelled() => {
                tokio::time::timeout(SEND_GRACE_AT_SHUTDOWN, &mut send).await.ok()
            }
        }
    }

    /// How long to sleep when nothing is due: until the next retry, at most
    /// `IDLE_RECHECK`.
    async fn until_next_due(&self) -> Duration {
        let kind = self.kind;
        let next = self
            .store
            .run(move |s| s.next_notification_due(kind))
            .await
            .unwrap_or_else(|error| {
                tracing::error!(message = "Cannot read the outbox.", channel = kind, %error);
                None
            });
        next.map(|at| (at - Utc::now()).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(IDLE_RECHECK)
            .min(IDLE_RECHECK)
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

impl<C> Worker<C> {
    async fn record(
        &self,
        row: &OutboxRow,
        outcome: Result<(), DeliveryError>,
    ) -> Result<(), StoreError> {
        let (id, kind) = (row.id, self.kind);
        let attempts = row.attempts + 1;
        match outcome {
            Ok(()) => {
                tracing::info!(
                    message = "Notification delivered.",
                    channel = kind,
                    id,
                    contact = %row.contact,
                    attempts
                );
                self.record_sent(id, attempts).await
            }
            Err(DeliveryError::Permanent(error)) => {
                tracing::error!(
                    message = "Notification refused; giving up.",
                    channel = kind,
                    id,
                    contact = %row.contact,
                    %error
                );
                self.store
                    .run(move |s| s.mark_failed(id, attempts, &error))
                    .await
            }
            Err(DeliveryError::Transient(error)) => {
                self.record_transient(row, attempts, error).await
            }
        }
    }

    /// Sent: it must be recorded as sent before this recipient's next message, or the
    /// next round would send it again. A store that fails for a while (locked by
    /// another process, disk full) is waited out, logged once.
    async fn record_sent(&self, id: i64, attempts: u32) -> Result<(), StoreError> {
        let now = Utc::now();
        let mut logged = false;
        loop {
            match self
                .store
                .run(move |s| s.mark_sent(id, attempts, now))
                .await
            {
                Ok(()) => return Ok(()),
                Err(error) if error.is_recoverable() && !self.shutdown.is_cancelled() => {
                    if !logged {
                        tracing::error!(
                            message = "Cannot record a delivered notification; retrying, so it is not sent twice.",
                            channel = self.kind,
                            id,
                            %error
                        );
                        logged = true;
                    }
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return Err(error),
                        _ = tokio::time::sleep(STORE_RETRY) => {}
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Not delivered this time: retried after a backoff, or failed for good once it
    /// has failed longer than the policy allows.
    async fn record_transient(
        &self,
        row: &OutboxRow,
        attempts: u32,
        error: String,
    ) -> Result<(), StoreError> {
        let (id, kind, now) = (row.id, self.kind, Utc::now());
        let failing_for = (now - row.created).to_std().unwrap_or(Duration::ZERO);
        if failing_for >= self.retry.give_up_after {
            let error = format!("gave up after {attempts} attempts: {error}");
            tracing::error!(
                message = "Notification undeliverable; giving up.",
                channel = kind,
                id,
                contact = %row.contact,
                %error
            );
            return self
                .store
                .run(move |s| s.mark_failed(id, attempts, &error))
                .await;
        }
        let wait = self.retry.backoff(attempts);
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
        self.store
            .run(move |s| s.mark_retry(id, attempts, next, &error))
            .await
    }
}
