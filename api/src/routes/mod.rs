//! The route table: every route is a handler with `#[utoipa::path]`, registered with
//! `routes!`, so the router and the OpenAPI document come from the same declarations.

mod ack_page;
pub(crate) mod activations;
mod alerts;
mod audit;
mod board;
mod clusters;
mod drill;
mod export;
mod facilities;
mod facility_readings;
mod history;
mod ops;
mod overview;
pub(crate) mod registry;
mod rejects;
mod scenarios;
mod sms;
mod towns;
mod transfers;
pub(crate) mod vulnerable;
pub(crate) mod warning_level;

use std::sync::Arc;

use axum::error_handling::HandleErrorLayer;
use axum::http::{Method, Uri};
use axum::{Extension, middleware};
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::timeout::TimeoutLayer;
use utoipa::OpenApi as _;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{HttpMethod, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::extract::BodyLimit;
use crate::{AppState, auth, limits};

/// Name of the bearer security scheme in the document.
const BEARER: &str = "bearer";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Stockpile",
        description = "Live ledger of a city's emergency reserves against the target of three days of supplies per town. \
                       Errors are `{\"error\": {\"code\", \"message\", \"field\"?}}`. \
                       Reads of the wall display's figures may be public (`public_read`); writes, and the reads that name \
                       people or carry raw gateway input (notifications, rejects), need `Authorization: Bearer <token>`. \
                       Limits: request headers within 10 s (else the connection is closed); an answer within 30 s \
                       (else 503 `timeout`); request bodies at most 16 KiB, `POST /api/v1/scenarios` 2 MiB \
                       (else 413 `body_too_large`); at most 4 history and scenario requests at once (else 503 `overloaded` \
                       with `Retry-After`)."
    ),
    tags(
        (name = "towns", description = "Towns (街镇), their coverage and sheltered population"),
        (name = "clusters", description = "Resilient-city clusters (组团) and mutual aid"),
        (name = "facilities", description = "Warehouses, water points and power units"),
        (name = "alerts", description = "Alerts, acknowledgements, silences and notifications (when alerting is configured)"),
        (name = "ingest", description = "What ingest rejected"),
        (name = "scenarios", description = "What-if stress tests on a copy of the ledger"),
        (name = "ops", description = "Health, readiness, metrics, this document and the wall board"),
    ),
    // Types only query parameters name: utoipa-axum collects the schemas of bodies and
    // responses, not of `IntoParams`, and a `$ref` to nothing breaks client generators.
    components(schemas(alerts::ChannelName, alerts::DeliveryStatus))
)]
struct ApiDoc;

/// Routes anyone may call: probes, the board's pages, this document.
fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(board::board))
        .routes(routes!(board::town_page))
        .routes(routes!(board::openapi_json))
        .routes(routes!(board::map::map_page))
        .routes(routes!(board::console_js))
}

/// Routes behind [`auth::authenticate`].
fn protected_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(overview::overview))
        .routes(routes!(board::me))
        .routes(routes!(towns::list_towns))
        .routes(routes!(towns::town))
        .routes(routes!(towns::set_sheltered))
        .routes(routes!(vulnerable::town_vulnerable))
        .routes(routes!(board::map::map_layout))
        .routes(routes!(board::map::district_outlines))
        .routes(routes!(clusters::list_clusters))
        .routes(routes!(clusters::cluster))
        .routes(routes!(facilities::facility))
        .routes(routes!(facility_readings::post_readings))
        .routes(routes!(
            transfers::list_transfers,
            transfers::record_transfer
        ))
        .routes(routes!(ops::metrics))
        .routes(routes!(registry::reload_registry))
        .routes(routes!(scenarios::stored_scenario))
        .routes(routes!(scenarios::latest_stress_test))
        .routes(routes!(
            activations::list_activations,
            activations::start_activation
        ))
        .routes(routes!(activations::get_activation))
        .routes(routes!(activations::mark_step))
        .routes(routes!(activations::close_activation))
        .routes(routes!(
            warning_level::warning_levels,
            warning_level::set_warning_level
        ))
}

/// Reads that name people (email addresses, phone numbers, notes) or carry raw input
/// from outside (gateway payloads): a token is needed even when `public_read` is on,
/// and an officer's or an admin's ([`auth::require_personal_reader`]). The rejects
/// always; the notification outbox with alerting.
fn personal_routes(alerts: bool) -> OpenApiRouter<AppState> {
    let routes = OpenApiRouter::new()
        .routes(routes!(rejects::rejects))
        .routes(routes!(audit::audit));
    let routes = if alerts {
        routes.routes(routes!(alerts::list_notifications))
    } else {
        routes
    };
    routes.route_layer(middleware::from_fn(auth::require_personal_reader))
}

/// Protected routes whose requests may each take much memory or CPU: what-if scenarios
/// and the resource list always, stock history when it is plugged in. They share one concurrency limit.
fn expensive_routes(history: bool) -> OpenApiRouter<AppState> {
    let scenarios = OpenApiRouter::new()
        .routes(routes!(scenarios::run_scenario, scenarios::list_scenarios))
        .layer(limits::body_limit(limits::SCENARIO_BODY_LIMIT))
        .layer(Extension(BodyLimit(limits::SCENARIO_BODY_LIMIT)));
    // The resource list copies the scope's figures and compresses a workbook.
    let routes = scenarios.merge(OpenApiRouter::new().routes(routes!(export::export_resources)));
    if history {
        routes.merge(history_routes())
    } else {
        routes
    }
}

/// Protected routes of the alert service, when it is plugged in.
fn alert_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(alerts::list_alerts))
        .routes(routes!(alerts::ack_alert))
        .routes(routes!(alerts::list_silences, alerts::add_silence))
        .routes(routes!(alerts::delete_silence))
        .routes(routes!(drill::list_drills, drill::start_drill))
        .routes(routes!(drill::end_drill))
}

/// Routes that authenticate by other means than a bearer token: the pages of signed
/// acknowledgement links (the link is the credential) and the SMS provider's webhook
/// (its signature), when those are plugged in with alerting.
fn credential_routes(parts: Parts) -> OpenApiRouter<AppState> {
    let mut routes = OpenApiRouter::new();
    if parts.alerts && parts.links {
        routes = routes.routes(routes!(ack_page::ack_page, ack_page::ack_by_link));
    }
    if parts.alerts && parts.sms_inbound {
        routes = routes.routes(routes!(sms::sms_inbound));
    }
    routes
}

/// Protected routes of stock history, when a source is plugged in.
fn history_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(history::town_history))
}

/// Which optional parts are routed.
#[derive(Debug, Clone, Copy)]
struct Parts {
    alerts: bool,
    history: bool,
    links: bool,
    sms_inbound: bool,
}

impl Parts {
    const ALL: Parts = Parts {
        alerts: true,
        history: true,
        links: true,
        sms_inbound: true,
    };

    fn of(state: &AppState) -> Parts {
        Parts {
            alerts: state.alerts().is_some(),
            history: state.history().is_some(),
            links: state.ack_pages().is_some(),
            sms_inbound: state.sms_inbound().is_some(),
        }
    }

    /// The protected routes with these parts; the expensive ones behind `limit`, a
    /// concurrency limit all of them share.
    fn protected(self, limit: &GlobalConcurrencyLimitLayer) -> OpenApiRouter<AppState> {
        let mut routes = protected_routes();
        if self.alerts {
            routes = routes.merge(alert_routes());
        }
        let expensive = expensive_routes(self.history).layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(limits::refused))
                .layer(LoadShedLayer::new())
                .layer(limit.clone()),
        );
        routes.merge(expensive).merge(personal_routes(self.alerts))
    }
}

/// Every endpoint, optional parts included.
pub(crate) fn openapi() -> OpenApi {
    openapi_of(Parts::ALL)
}

/// The document of what a router with `parts` serves.
fn openapi_of(parts: Parts) -> OpenApi {
    // The limit is part of the router only; the document is built from the same routes.
    let limit = GlobalConcurrencyLimitLayer::new(1);
    let protected = parts.protected(&limit).into_openapi();
    let personal = personal_routes(parts.alerts).into_openapi();
    let mut doc = OpenApiRouter::<AppState>::with_openapi(ApiDoc::openapi())
        .merge(public_routes())
        .merge(credential_routes(parts))
        .merge(parts.protected(&limit))
        .into_openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    document_security(&mut doc, &protected, &personal);
    doc
}

/// Declares the bearer scheme and, on every protected operation, what it needs: reads
/// take a token or none (public reads are a deployment choice), writes and the reads of
/// `personal` (they name people) a token.
fn document_security(doc: &mut OpenApi, protected: &OpenApi, personal: &OpenApi) {
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            BEARER,
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    for (path, item) in doc.paths.paths.iter_mut() {
        if !protected.paths.paths.contains_key(path) {
            continue;
        }
        let operations = [
            (HttpMethod::Get, &mut item.get),
            (HttpMethod::Put, &mut item.put),
            (HttpMethod::Post, &mut item.post),
            (HttpMethod::Delete, &mut item.delete),
            (HttpMethod::Patch, &mut item.patch),
        ];
        for (method, operation) in operations {
            let Some(operation) = operation else { continue };
            let bearer = SecurityRequirement::new(BEARER, Vec::<String>::new());
            let token_only = personal.paths.paths.contains_key(path);
            operation.security = Some(if method == HttpMethod::Get && !token_only {
                vec![SecurityRequirement::default(), bearer]
            } else {
                vec![bearer]
            });
        }
    }
}

/// The document as served, serialised once.
#[derive(Debug, Clone)]
pub(crate) struct OpenApiJson(pub Arc<str>);

pub(crate) fn router(state: AppState) -> axum::Router {
    let parts = Parts::of(&state);
    let limits = *state.limits();
    let expensive = GlobalConcurrencyLimitLayer::new(limits.expensive_concurrency.max(1));
    let protected = parts
        .protected(&expensive)
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    let (router, _) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(public_routes())
        .merge(credential_routes(parts))
        .merge(protected)
        .split_for_parts();
    // Serialising a document built from our own types cannot fail; if it ever did, the
    // endpoint says so instead of the service refusing to start.
    let json = serde_json::to_string(&openapi_of(parts))
        .unwrap_or_else(|e| format!(r#"{{"error":"cannot serialise the document: {e}"}}"#));
    router
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(OpenApiJson(Arc::from(json))))
        .layer(middleware::from_fn(crate::audit::remember_origin))
        // Outermost: every route's default body limit (a route may set a larger one
        // inside) and the request timeout.
        .layer(limits::body_limit(limits::BODY_LIMIT))
        .layer(Extension(BodyLimit(limits::BODY_LIMIT)))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(limits::refused))
                .layer(TimeoutLayer::new(limits.request_timeout)),
        )
        .with_state(state)
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::NoRoute(uri.path().to_owned())
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}
