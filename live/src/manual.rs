//! Counts entered by hand (issue 15): the queue from the API to the ingest writer.
//!
//! A facility whose gateway is down is counted by hand, and the officer posts the count
//! to the API. It must take the same path as a gateway's reading: stored and committed
//! by the ingest writer (the ledger's only writer of facility state), then applied. So
//! the API decodes and validates the count, puts it on this bounded queue with a
//! oneshot for the outcome, and the writer gathers it into its next batch beside the
//! MQTT deliveries; the reply is sent after the commit and the ledger update, so a read
//! after the answer shows the new figure. Nothing here does I/O.

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

/// Why a submission has no outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ManualError {
    /// Not committed within the wait: the store is failing (ingest is paused) or the
    /// writer is far behind. The submission stays queued and may still be stored;
    /// sending it again is safe, since the same facility and `ts` is a duplicate.
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
    queue: mpsc::Sender<ManualSubmission>,
    /// Most readings in one submission (`[mqtt] max_readings_per_message`).
    pub max_readings: usize,
    /// The history retention: older counts are `ts_too_old`.
    pub retention: Duration,
    /// How long a request waits for its commit before answering 503.
    pub commit_wait: Duration,
}

/// The writer's end of the queue.
pub type ManualQueue = mpsc::Receiver<ManualSubmission>;

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
        let submission = ManualSubmission {
            readings,
            entered_by,
            reply,
        };
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
