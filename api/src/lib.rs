//! HTTP API, OpenAPI, auth, metrics and the built-in wall board
//! (docs/design.md#http-api).
//!
//! The API reads the live [`reserve::Ledger`] that ingest keeps (through the shared
//! lock, held for microseconds and never across an `.await`) and its own connection to
//! the SQLite store (rejects, sheltered counts). It changes live state in one place
//! only: `PUT /api/v1/towns/{id}/sheltered`, persisted before it is applied.
//!
//! Every route is declared once, by its handler's `#[utoipa::path]`, and registered
//! through `utoipa_axum::routes!`, so the OpenAPI document at `/api/openapi.json` and the
//! router cannot disagree. Endpoints that depend on parts not built yet (alerts, silences,
//! notifications, history) are not routed, and so not documented, until those parts
//! plug into [`AppState`].
//!
//! ```no_run
//! # async fn run(ledger: live::SharedLedger, store: store::Store,
//! #              metrics: std::sync::Arc<live::IngestMetrics>,
//! #              changes: std::sync::Arc<live::TownChanges>) -> std::io::Result<()> {
//! let state = api::AppState::new(ledger, store, metrics, changes, api::AuthConfig::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! api::serve(listener, state, shutdown).await
//! # }
//! ```

mod ack;
mod aid;
mod audit;
mod auth;
mod config;
pub mod activations {
    //! The activation table's operations for other parts of the API (warning levels
    //! pre-activate shelters with [`start`]); docs/design.md#activation-table.
    pub use crate::routes::activations::{
        ActivationError, ActivationScope, ActivationView, StartActivation, start,
    };
}
pub mod districts;
mod error;
mod export;
mod extract;
mod limits;
mod metrics;
mod model;
mod routes;
pub mod scenario;
pub mod stress_test;

use std::sync::{Arc, PoisonError, RwLockReadGuard, RwLockWriteGuard};

use alerts::AlertsHandle;
use alerts::link::AckLinks;
use chrono::FixedOffset;
use districts::DistrictOutlines;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use live::{IngestMetrics, ManualReadings, SharedLedger, TownChanges};
use reserve::Ledger;
use secrecy::SecretString;
use store::history::HistorySource;
use store::{AsyncStore, Store, StoreError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use auth::{AuthConfig, Caller, Role, TokenEntry};
pub use config::{ApiConfig, ApiToken, BoardConfig};
pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use limits::HttpLimits;
pub use routes::registry::{
    ConfigProblem, RegistryReload, ReloadRefused, ReloadRequest, ReloadSummary,
};

/// What every handler shares. Cheap to clone (a few `Arc`s).
///
/// Optional parts plug in through `with_…` methods (alerts, silences and
/// notifications; stock history), and their routes are added only when they are present.
#[derive(Clone)]
pub struct AppState {
    shared: Arc<Shared>,
    alerts: Option<AlertsHandle>,
    history: Option<Arc<HistorySource>>,
    /// Signed acknowledgement links: the `/ack/{token}` pages, when configured.
    links: Option<Arc<AckPages>>,
    /// The SMS provider's inbound webhook, when SMS is configured, with its refusals.
    sms_inbound: Option<Arc<SmsWebhook>>,
    /// The ingest writer's queue of counts entered by hand, when ingest runs here.
    manual_readings: Option<ManualReadings>,
    /// The service's registry reload (`POST /api/v1/registry/reload`), under `serve`.
    registry_reload: Option<Arc<dyn RegistryReload>>,
    /// District outlines the map draws (`[board] districts_geojson`); none by default.
    districts: DistrictOutlines,
    /// The open activations the alert engine evaluates (docs/design.md#activation-table):
    /// the API applies its changes here after each commit. Empty until the server hands
    /// over the one it loaded from the store.
    activations: alerts::activation::SharedActivations,
    limits: HttpLimits,
}

/// What the acknowledgement pages need: the key that verifies links, and the zone
/// their times are shown in (the messages').
#[derive(Debug)]
pub(crate) struct AckPages {
    pub links: AckLinks,
    pub utc_offset: FixedOffset,
}

/// The SMS provider's inbound webhook (`POST /api/v1/sms/inbound`).
#[derive(Debug, Clone, Default)]
pub struct SmsInbound {
    /// Twilio's auth token: every request must carry a good `X-Twilio-Signature`.
    /// Without it every reply is refused: an unsigned POST could come from anyone who
    /// reaches the API. Exposed only to that check.
    pub auth_token: Option<SecretString>,
    /// `[api] public_url`: the signature is over the URL the provider called, which is
    /// this plus the path, not the listen address.
    pub public_url: Option<String>,
}

/// The webhook as it runs: its settings, and the replies it refused, for `/metrics`
/// (a forger probing the webhook shows as a count an operator can alert on).
#[derive(Debug, Default)]
pub(crate) struct SmsWebhook {
    pub settings: SmsInbound,
    /// Refused because no auth token is configured, so nothing can be verified.
    pub refused_no_token: std::sync::atomic::AtomicU64,
    /// Refused because `X-Twilio-Signature` was missing or wrong.
    pub refused_bad_signature: std::sync::atomic::AtomicU64,
}

impl SmsWebhook {
    fn new(settings: SmsInbound) -> SmsWebhook {
        SmsWebhook {
            settings,
            ..SmsWebhook::default()
        }
    }
}

struct Shared {
    ledger: SharedLedger,
    /// The API's own connection: the ingest writer owns another one, and WAL lets this
    /// one read while ingest writes. Its calls run on the blocking pool: they block up
    /// to the busy timeout when ingest holds the write lock.
    store: AsyncStore,
    ingest: Arc<IngestMetrics>,
    /// Where a change the API makes (a sheltered count) is announced, so alert
    /// evaluation and the history sink see it as they see ingest's.
    changes: Arc<TownChanges>,
    /// Replaced whole by a reload (docs/design.md#registry-reload). A std `RwLock`
    /// held only to clone the `Arc`: microseconds on the request path.
    auth: std::sync::RwLock<Arc<AuthConfig>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("auth", &self.shared.auth)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// `store` should be a connection of the API's own (`Store::open` on the same file
    /// as ingest's); `ingest` and `changes` are the ones given to `ingest::run`.
    pub fn new(
        ledger: SharedLedger,
        store: Store,
        ingest: Arc<IngestMetrics>,
        changes: Arc<TownChanges>,
        auth: AuthConfig,
    ) -> AppState {
        AppState {
            shared: Arc::new(Shared {
                ledger,
                store: AsyncStore::new(store),
                ingest,
                changes,
                auth: std::sync::RwLock::new(Arc::new(auth)),
            }),
            alerts: None,
            history: None,
            links: None,
            sms_inbound: None,
            manual_readings: None,
            registry_reload: None,
            districts: DistrictOutlines::none(),
            activations: routes::activations::empty_view(),
            limits: HttpLimits::default(),
        }
    }

    /// Other HTTP limits than the defaults (tests shorten the timeouts).
    pub fn with_limits(self, limits: HttpLimits) -> AppState {
        AppState { limits, ..self }
    }

    /// Plugs in alerting: routes `/api/v1/alerts`, `/api/v1/alerts/{id}/ack`,
    /// `/api/v1/silences` and `/api/v1/notifications`, and adds alert and notification
    /// counts to `/metrics`. `handle` is [`alerts::Alerts::handle`] of the running service.
    pub fn with_alerts(self, handle: AlertsHandle) -> AppState {
        AppState {
            alerts: Some(handle),
            ..self
        }
    }

    /// Plugs in stock history: routes `/api/v1/towns/{id}/history`.
    pub fn with_history(self, source: HistorySource) -> AppState {
        AppState {
            history: Some(Arc::new(source)),
            ..self
        }
    }

    /// Plugs in counts entered by hand: routes `POST /api/v1/facilities/{id}/readings`.
    /// `manual` is the API's end of the queue given to
    /// `ingest::run_with_manual_readings`.
    pub fn with_manual_readings(self, manual: ManualReadings) -> AppState {
        AppState {
            manual_readings: Some(manual),
            ..self
        }
    }

    /// Plugs in the service's registry reload: `POST /api/v1/registry/reload` works.
    pub fn with_registry_reload(self, reload: Arc<dyn RegistryReload>) -> AppState {
        AppState {
            registry_reload: Some(reload),
            ..self
        }
    }

    /// District outlines for the map (`GET /api/v1/map/districts`).
    pub fn with_districts(self, districts: DistrictOutlines) -> AppState {
        AppState { districts, ..self }
    }

    /// The open activations shared with the alert engine (the server loads them from
    /// the store at start).
    pub fn with_activations(self, activations: alerts::activation::SharedActivations) -> AppState {
        AppState {
            activations,
            ..self
        }
    }

    pub(crate) fn activations(&self) -> &alerts::activation::SharedActivations {
        &self.activations
    }

    pub(crate) fn districts(&self) -> &DistrictOutlines {
        &self.districts
    }

    pub(crate) fn registry_reload(&self) -> Option<&dyn RegistryReload> {
        self.registry_reload.as_deref()
    }

    /// Who may use the API from now on: a reload's new token list. Requests already
    /// authenticated finish as they began.
    pub fn replace_auth(&self, auth: AuthConfig) {
        *self
            .shared
            .auth
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(auth);
    }

    pub(crate) fn manual_readings(&self) -> Option<&ManualReadings> {
        self.manual_readings.as_ref()
    }

    /// Plugs in signed acknowledgement links: routes `GET|POST /ack/{token}` (with
    /// alerting). `utc_offset` is the zone times are shown in.
    pub fn with_ack_links(self, links: AckLinks, utc_offset: FixedOffset) -> AppState {
        AppState {
            links: Some(Arc::new(AckPages { links, utc_offset })),
            ..self
        }
    }

    /// Plugs in the SMS provider's inbound webhook: routes `POST /api/v1/sms/inbound`
    /// (with alerting), and counts its refusals in `/metrics`.
    pub fn with_sms_inbound(self, inbound: SmsInbound) -> AppState {
        AppState {
            sms_inbound: Some(Arc::new(SmsWebhook::new(inbound))),
            ..self
        }
    }

    pub(crate) fn ack_pages(&self) -> Option<&AckPages> {
        self.links.as_deref()
    }

    pub(crate) fn sms_inbound(&self) -> Option<&SmsWebhook> {
        self.sms_inbound.as_deref()
    }

    pub(crate) fn alerts(&self) -> Option<&AlertsHandle> {
        self.alerts.as_ref()
    }

    pub(crate) fn history(&self) -> Option<&HistorySource> {
        self.history.as_deref()
    }

    pub(crate) fn limits(&self) -> &HttpLimits {
        &self.limits
    }

    /// The ledger for reading. A poisoned lock is still read: the writer's panic is
    /// reported where it happened, and stale figures beat no figures on a wall display.
    pub(crate) fn ledger(&self) -> RwLockReadGuard<'_, Ledger> {
        self.shared
            .ledger
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn ledger_mut(&self) -> RwLockWriteGuard<'_, Ledger> {
        self.shared
            .ledger
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn ingest(&self) -> &IngestMetrics {
        &self.shared.ingest
    }

    pub(crate) fn changes(&self) -> &TownChanges {
        &self.shared.changes
    }

    pub(crate) fn auth(&self) -> Arc<AuthConfig> {
        let auth = self.shared.auth.read();
        Arc::clone(&auth.unwrap_or_else(PoisonError::into_inner))
    }

    /// Runs `f` on the store off the async workers.
    pub(crate) async fn with_store<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    {
        Ok(self.shared.store.run(f).await?)
    }
}

/// The whole HTTP surface: `/api/v1/…`, `/api/openapi.json`, `/healthz`, `/readyz`,
/// `/metrics` and the wall board at `/`.
pub fn router(state: AppState) -> axum::Router {
    routes::router(state)
}

/// The OpenAPI document of every endpoint, optional parts included. The router serves
/// at `/api/openapi.json` the part of it that it routes.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes::openapi()
}

/// Serves the API on `listener` until `shutdown` is cancelled, then lets requests in
/// flight finish.
///
/// Connections are served by hyper-util rather than `axum::serve`, which has no
/// header-read timeout: a client that opens connections and sends its headers a byte
/// at a time would hold them (and file descriptors) for ever. Each connection gets
/// [`HttpLimits::header_read_timeout`] per request header; the request timeout and the
/// other limits are layers of the router.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let limits = *state.limits();
    let app = router(state);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.header_read_timeout);
    let connections = GracefulShutdown::new();
    tracing::info!(message = "API listening.", address = %local);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        // Answers are small and often one write: no Nagle delay.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(message = "Cannot set TCP_NODELAY.", %peer, error = %e);
        }
        // The peer goes with each request, for the audit log's "from where".
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            app.clone(),
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(audit::Peer(peer));
                request
            },
        ));
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // A client that went away or was too slow: its business, not an error.
                tracing::debug!(message = "Connection ended with an error.", %peer, error = %e);
            }
        });
    }
    drop(listener);
    // Requests in flight finish; idle connections close at once.
    connections.shutdown().await;
    tracing::info!(message = "API stopped.", address = %local);
    Ok(())
}

/// An accept error: a connection that failed before we saw it is nothing; anything
/// else (out of file descriptors) is logged and waited out, as hyper and axum do.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(message = "Cannot accept a connection; retrying in a second.", error = %e);
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
}
