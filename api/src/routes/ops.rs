//! Probes and metrics: `/healthz` (the process answers), `/readyz` (it can do its job),
//! `/metrics` (Prometheus text).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::ErrorBody;

/// How long readiness waits for the store. Ingest commits in milliseconds; a store that
/// holds its write lock this long is not serving.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`: answering at all is the signal.
    pub status: String,
}

/// Liveness: the process is up and serving HTTP.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "The process is up", body = Health)))]
#[tracing::instrument]
pub(super) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// True when every check passed.
    pub ready: bool,
    pub checks: Vec<ReadinessCheck>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadinessCheck {
    /// `broker` (ingest's MQTT connection) or `store` (SQLite takes a write lock).
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// Readiness: ingest is connected to the broker and the SQLite store is writable.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "A check failed", body = Readiness),
    ))]
#[tracing::instrument(skip(state))]
pub(super) async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let broker = state.ingest().connected();
    let broker = ReadinessCheck {
        name: "broker".into(),
        ok: broker,
        detail: if broker {
            "ingest is connected to the MQTT broker".into()
        } else {
            "ingest is not connected to the MQTT broker".into()
        },
    };
    // Ingest's own word first: while it is paused on a store fault, that is the reason,
    // and probing the lock again would only wait for the same fault.
    if let Some(fault) = state.ingest().store_fault() {
        let store = ReadinessCheck {
            name: "store".into(),
            ok: false,
            detail: format!(
                "ingest is paused since {}: the store fails ({}); readings stay with the broker and nothing is acknowledged until it recovers",
                fault
                    .since
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                fault.error
            ),
        };
        let checks = vec![broker, store];
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Readiness {
                ready: false,
                checks,
            }),
        );
    }
    // `batch()` begins an IMMEDIATE transaction, i.e. takes the write lock, and dropping
    // it rolls back: a cheap proof that the file is writable and not locked for long.
    let check = state.with_store(|store| store.batch().map(drop));
    let store = match tokio::time::timeout(STORE_CHECK_TIMEOUT, check).await {
        Ok(Ok(())) => ReadinessCheck {
            name: "store".into(),
            ok: true,
            detail: "the SQLite store is writable".into(),
        },
        Ok(Err(error)) => {
            tracing::warn!(message = "Store is not writable.", %error);
            ReadinessCheck {
                name: "store".into(),
                ok: false,
                detail: "the SQLite store is not writable; see the service log".into(),
            }
        }
        Err(_) => ReadinessCheck {
            name: "store".into(),
            ok: false,
            detail: format!(
                "the SQLite store did not answer within {} s",
                STORE_CHECK_TIMEOUT.as_secs()
            ),
        },
    };
    let checks = vec![broker, store];
    let ready = checks.iter().all(|c| c.ok);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(Readiness { ready, checks }))
}

/// Prometheus metrics: ingest counters, towns by status, broker connection; with
/// alerting, alerts and notifications by state.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain"),
        (status = 401, description = "A token is needed", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state))]
pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let alerts = match state.alerts() {
        Some(alerts) => match alerts.counts().await {
            Ok(counts) => Some(counts),
            Err(e) => {
                // The other metrics still answer; a gap in the alert series shows it.
                tracing::warn!(message = "Alert counts unavailable for /metrics.", error = %e);
                None
            }
        },
        None => None,
    };
    let text = crate::metrics::render(&state, alerts.as_ref());
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text)
}
