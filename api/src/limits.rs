//! What one client may cost the service (issue 12): how long it may take to send its
//! headers and to be answered, how big a body it may send, and how many expensive
//! requests run at once. Every limit is a tower layer or a hyper setting, not code of
//! ours, and every refusal is the API's JSON error.

use std::time::Duration;

use axum::BoxError;
use tower::load_shed::error::Overloaded;
use tower::timeout::error::Elapsed;

use crate::error::ApiError;

/// Largest body of a request that sends one, unless its route says otherwise: a
/// sheltered count, an acknowledgement note (1000 characters), a silence.
pub(crate) const BODY_LIMIT: usize = 16 * 1024;
/// Largest body of `POST /api/v1/scenarios`: a population surge may name every town of
/// a large city (40,000 towns × ~30 bytes).
pub(crate) const SCENARIO_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The HTTP limits of one API server. `Default` is what production runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// A connection that has not sent a request's whole header within this is closed
    /// (a slow client must not hold a connection, nor a file descriptor, for long).
    pub header_read_timeout: Duration,
    /// A request not answered within this gets 503 `timeout` (reading its body
    /// included).
    pub request_timeout: Duration,
    /// How many history and scenario requests run at once; more get 503 `overloaded`
    /// at once rather than queue (each may read up to a million readings or copy the
    /// whole ledger, and the machine has two cores).
    pub expensive_concurrency: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            expensive_concurrency: 4,
        }
    }
}

/// What a limit layer's error means for the client: the handler of the routes'
/// `HandleErrorLayer`.
pub(crate) async fn refused(error: BoxError) -> ApiError {
    if error.is::<Overloaded>() {
        ApiError::Overloaded
    } else if error.is::<Elapsed>() {
        ApiError::Timeout
    } else {
        ApiError::Internal(format!("request failed in a limit layer: {error}"))
    }
}

/// The body limit of a route, enforced by the body extractors (a body over it is 413
/// `body_too_large`).
pub(crate) fn body_limit(bytes: usize) -> axum::extract::DefaultBodyLimit {
    axum::extract::DefaultBodyLimit::max(bytes)
}
