//! Counts entered by hand (issue 15): the queue from the API to the ingest writer.
//!
//! A facility whose gateway is down is counted by hand, and the officer posts the count
//! to the API. It must take the same path as a gateway's reading: stored and committed
//! by the ingest writer (the ledger's only writer of facility state), then applied. So
//! the API decodes and validates the count, puts it on this bounded queue with a
//! oneshot for the outcome, and the writer gathers it into its next batch beside the
//! MQTT deliveries; the reply is sent after the commit and the ledger update, so a read
//! after the answer shows the new figure. Nothing here does I/O.
//!
//! Transfers take the same queue (docs/design.md#transfers): the writer stores each
//! with the readings it makes at facilities counted by hand, in one commit, and tells
//! the consumption estimate of gateway facilities to expect it. One writer reading the
//! latest count and writing the moved one is what keeps two transfers from spending
//! the same water.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reserve::Reading;
use tokio::sync::{mpsc, oneshot};

/// Submissions waiting for the writer. A few dozen officers typing counts never fill
/// it; the bound keeps a runaway client from queueing without limit (the API waits for
/// room, within its answer's bound).
pub const MANUAL_QUEUE: usize = 64;

/// One officer's submission: readings of one facility, decoded and validated against
/// the registry, all accepted (a submission with any rejected element is refused whole
/// by the API and never queued).
#[derive(Debug)]
pub struct ManualSubmission {
    pub readings: Vec<Reading>,
    /// The name of the API token it came with (never the token).
    pub entered_by: String,
    /// Answered after the commit; dropped unanswered if the writer stops first.
    pub reply: oneshot::Sender<ManualOutcome>,
}

/// What the writer stored of a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManualOutcome {
    /// Readings stored now.
    pub stored: usize,
    /// Readings whose facility and `ts` were stored already: ignored, as a gateway's
    /// resent readings are.
    pub duplicates: usize,
    /// The newest `ts` among the submission's readings.
    pub latest_ts: Option<DateTime<Utc>>,
}

/// Stock moved from one facility to another, as an officer recorded it, checked by
/// the API against the registry. Ids, not indices: the writer resolves them against
/// its own registry.
#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    /// When it was recorded: the time of the readings it makes.
    pub at: DateTime<Utc>,
    pub from: String,
    pub to: String,
    pub category: String,
    /// In the category's unit, above 0.
    pub quantity: f64,
    pub note: String,
    /// The name of the token it was recorded with (never the token).
    pub recorded_by: String,
    /// Where the request came from, for the audit log.
    pub remote: String,
}

/// A transfer waiting for the writer.
#[derive(Debug)]
pub struct TransferSubmission {
    pub transfer: Transfer,
    /// Answered after the commit; dropped unanswered if the writer stops first. Once
    /// the requester stopped waiting (closed), the writer drops the transfer unstored.
    pub reply: oneshot::Sender<Result<TransferOutcome, TransferRefused>>,
}

/// What the writer did with a transfer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransferOutcome {
    /// Its id in the store.
    pub id: i64,
    /// The sender's figure for the category after it, when counted by hand.
    pub from_after: Option<f64>,
    /// The receiver's, when counted by hand.
    pub to_after: Option<f64>,
}

/// Why the writer stored nothing of a transfer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransferRefused {
    /// The sender is counted by hand and its latest count holds less than the
    /// quantity (`held`), or has no count of the category (`None`).
    #[error("the sender's latest count holds {held:?}")]
    Shortfall { held: Option<f64> },
    /// The receiver is counted by hand and would hold more than its declared capacity.
    #[error("the receiver holds {held} of a capacity of {capacity}")]
    OverCapacity { held: f64, capacity: f64 },
    /// A facility or category not in the writer's registry (reloaded meanwhile).
    #[error("{0} is not in the registry")]
    NotInRegistry(String),
}

/// What the queue carries to the writer.
#[derive(Debug)]
pub enum Submission {
    Count(ManualSubmission),
    Transfer(TransferSubmission),
}

/// Why a submission has no outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ManualError {
    /// Not committed within the wait: the store is failing (ingest is paused) or the
    /// writer is far behind. A count stays queued and may still be stored; sending it
    /// again is safe, since the same facility and `ts` is a duplicate. A transfer is
    /// dropped by the writer once its requester stopped waiting (it has no such key,
    /// and stored twice it would move the stock twice): the requester sends it again.
    #[error("the count was not stored within {0:?}")]
    NotStoredYet(Duration),
    /// The writer is not running (the service is stopping).
    #[error("ingest is not running")]
    Stopped,
}

/// The API's end of the queue, and what it validates a count against besides the
/// registry: the writer's limits, so a count is refused for the same reasons a
/// gateway's reading would be.
#[derive(Debug, Clone)]
pub struct ManualReadings {
    queue: mpsc::Sender<Submission>,
    /// Most readings in one submission (`[mqtt] max_readings_per_message`).
    pub max_readings: usize,
    /// The history retention: older counts are `ts_too_old`.
    pub retention: Duration,
    /// How long a request waits for its commit before answering 503.
    pub commit_wait: Duration,
}

/// The writer's end of the queue.
pub type ManualQueue = mpsc::Receiver<Submission>;

impl ManualReadings {
    /// The queue's two ends. `commit_wait` should stay well inside the API's request
    /// timeout, so the client gets the 503 that says what happened, not a timeout.
    pub fn channel(
        max_readings: usize,
        retention: Duration,
        commit_wait: Duration,
    ) -> (ManualReadings, ManualQueue) {
        let (queue, receiver) = mpsc::channel(MANUAL_QUEUE);
        let handle = ManualReadings {
            queue,
            max_readings,
            retention,
            commit_wait,
        };
        (handle, receiver)
    }

    /// Queues `readings` for the writer and waits, at most `commit_wait` in all, for
    /// their commit.
    pub async fn submit(
        &self,
        readings: Vec<Reading>,
        entered_by: String,
    ) -> Result<ManualOutcome, ManualError> {
        let (reply, outcome) = oneshot::channel();
        let submission = Submission::Count(ManualSubmission {
            readings,
            entered_by,
            reply,
        });
        self.send_and_wait(submission, outcome).await
    }

    /// Queues a transfer for the writer and waits, at most `commit_wait` in all, for
    /// its commit or its refusal.
    pub async fn submit_transfer(
        &self,
        transfer: Transfer,
    ) -> Result<Result<TransferOutcome, TransferRefused>, ManualError> {
        let (reply, outcome) = oneshot::channel();
        let submission = Submission::Transfer(TransferSubmission { transfer, reply });
        self.send_and_wait(submission, outcome).await
    }

    async fn send_and_wait<T>(
        &self,
        submission: Submission,
        outcome: oneshot::Receiver<T>,
    ) -> Result<T, ManualError> {
        let wait = self.commit_wait;
        let answer = tokio::time::timeout(wait, async {
            self.queue
                .send(submission)
                .await
                .map_err(|_| ManualError::Stopped)?;
            outcome.await.map_err(|_| ManualError::Stopped)
        });
        answer.await.map_err(|_| ManualError::NotStoredYet(wait))?
    }
}
