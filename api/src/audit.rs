//! The audit log's writer for the API (docs/design.md#audit): every mutation an API
//! request makes — an acknowledgement, a silence, a sheltered count, a count by hand, a
//! transfer, a drill, a registry reload — leaves one entry naming who, when, what,
//! which towns and from where.
//!
//! "From where" is the connection's peer, which [`crate::serve`] puts in each request's
//! extensions, plus the address a proxy says it forwarded for. A middleware
//! ([`remember_origin`]) makes it readable for the request's handler through a
//! task-local, so a handler records an entry without threading the address through
//! its signature.

use std::net::SocketAddr;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use chrono::Utc;
use store::NewAudit;

use crate::AppState;

/// The peer of the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub SocketAddr);

/// What a request says of where it came from, kept as received: formatting it is left
/// to [`origin`], so the many requests that change nothing cost two cheap clones.
#[derive(Debug, Clone, Default)]
struct Origin {
    peer: Option<SocketAddr>,
    forwarded_for: Option<HeaderValue>,
}

tokio::task_local! {
    /// Where the current request came from.
    static ORIGIN: Origin;
}

/// The longest `X-Forwarded-For` value kept: the header is the client's to write.
const MAX_FORWARDED_CHARS: usize = 200;

/// Runs the rest of the request with its origin readable by [`origin`].
pub(crate) async fn remember_origin(request: Request, next: Next) -> Response {
    let origin = Origin {
        peer: request.extensions().get::<Peer>().map(|p| p.0),
        forwarded_for: request.headers().get("x-forwarded-for").cloned(),
    };
    ORIGIN.scope(origin, next.run(request)).await
}

/// `192.0.2.7:51234`, or `192.0.2.7:51234 for 203.0.113.9` behind a proxy that says
/// whom it forwarded for.
fn describe_origin(peer: Option<SocketAddr>, forwarded_for: Option<&HeaderValue>) -> String {
    let peer = peer.map(|p| p.to_string()).unwrap_or_default();
    let forwarded = forwarded_for
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim()
                .chars()
                .take(MAX_FORWARDED_CHARS)
                .collect::<String>()
        })
        .filter(|v| !v.is_empty());
    match forwarded {
        Some(client) if peer.is_empty() => format!("for {client}"),
        Some(client) => format!("{peer} for {client}"),
        None => peer,
    }
}

/// Where the current request came from, as [`NewAudit::remote`] writes it; empty
/// outside a request.
pub(crate) fn origin() -> String {
    ORIGIN
        .try_with(|o| describe_origin(o.peer, o.forwarded_for.as_ref()))
        .unwrap_or_default()
}

/// What one mutation did, for the audit log.
#[derive(Debug, Clone, Default)]
pub(crate) struct Action {
    /// Who: a token's or a contact's name.
    pub actor: String,
    /// How: `token`, `link`, `sms`.
    pub via: &'static str,
    /// What: `ack`, `silence`, `sheltered`, `manual_reading`, …
    pub action: &'static str,
    /// The towns (ids) it touched; none for a city-wide action.
    pub towns: Vec<String>,
    pub alert_ids: Vec<i64>,
    pub detail: String,
}

/// Records `action`, from the current request's origin. The mutation has happened
/// already: an entry that cannot be written is logged as an error (that line is then
/// the record) and does not undo it.
pub(crate) async fn record(state: &AppState, action: Action) {
    let entry = NewAudit {
        at: Utc::now(),
        actor: action.actor,
        via: action.via.to_owned(),
        action: action.action.to_owned(),
        towns: action.towns,
        alert_ids: action.alert_ids,
        detail: action.detail,
        remote: origin(),
    };
    let (actor, what) = (entry.actor.clone(), entry.action.clone());
    if let Err(e) = state.with_store(move |s| s.record_audit(&entry)).await {
        tracing::error!(
            message = "Cannot record an action in the audit log; this line is the record.",
            by = %actor,
            action = %what,
            error = %e
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_names_the_peer_and_whom_a_proxy_forwarded_for() {
        let peer: SocketAddr = "192.0.2.7:51234".parse().unwrap();
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(
            describe_origin(Some(peer), headers.get("x-forwarded-for")),
            "192.0.2.7:51234"
        );
        assert_eq!(describe_origin(None, headers.get("x-forwarded-for")), "");
        headers.insert("x-forwarded-for", "203.0.113.9, 10.0.0.1".parse().unwrap());
        assert_eq!(
            describe_origin(Some(peer), headers.get("x-forwarded-for")),
            "192.0.2.7:51234 for 203.0.113.9, 10.0.0.1"
        );
        headers.insert("x-forwarded-for", "x".repeat(500).parse().unwrap());
        assert_eq!(
            describe_origin(None, headers.get("x-forwarded-for")).len(),
            4 + MAX_FORWARDED_CHARS
        );
    }
}
