//! Reloading the registry while running (docs/design.md#registry-reload): an admin asks
//! the service to read its registry and token list again. The service (the `server`
//! crate, which alone reads files) does the work behind [`RegistryReload`]; this route
//! checks the role, says who asked and from where, and answers what changed or what is
//! wrong, located.

use std::future::Future;
use std::pin::Pin;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorBody};

/// Who asked for a reload, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadRequest {
    /// A token's name, or `SIGHUP`.
    pub actor: String,
    /// `token` or `signal`.
    pub via: &'static str,
    /// The peer's address (and whom a proxy forwarded for); empty for a signal.
    pub remote: String,
}

/// What a reload changed: the registry now, and the ids added, removed and changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct ReloadSummary {
    /// Towns and facilities of this instance now (a shard's own).
    pub towns: usize,
    pub facilities: usize,
    /// API tokens configured now.
    pub tokens: usize,
    pub towns_added: Vec<String>,
    pub towns_removed: Vec<String>,
    /// Towns whose name, place, population, groups, cluster, district or targets
    /// changed: their days are recomputed at once and their alerts follow.
    pub towns_changed: Vec<String>,
    pub facilities_added: Vec<String>,
    /// Their open alerts resolve, saying so.
    pub facilities_removed: Vec<String>,
    pub facilities_changed: Vec<String>,
    pub categories_changed: bool,
    pub contacts_changed: bool,
}

/// One problem of the new configuration or registry, where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ConfigProblem {
    /// The file (the config, the registry or one of its CSV tables), or `env NAME`
    /// for an environment override.
    #[schema(example = "registry.toml")]
    pub file: String,
    #[schema(example = 41)]
    pub line: Option<u32>,
    /// The entity and field when the problem names one (`facility "wh-9": town`).
    #[schema(example = "facility \"wh-9\": town")]
    pub field: Option<String>,
    #[schema(example = "registry.toml:41: facility \"wh-9\": town: unknown town \"jingshn\"")]
    pub message: String,
}

/// Why a reload changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadRefused {
    /// The files do not load: every problem, located. The old registry stays.
    Invalid(Vec<ConfigProblem>),
    /// Loaded, but the service could not take it (ingest stopped, say).
    Failed(String),
}

/// The service's reload, as the API calls it: `server` implements it.
pub trait RegistryReload: Send + Sync + std::fmt::Debug {
    fn reload(
        &self,
        request: ReloadRequest,
    ) -> Pin<Box<dyn Future<Output = Result<ReloadSummary, ReloadRefused>> + Send + '_>>;
}

/// The 422 body: the usual error, and every problem located.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvalidRegistryBody {
    error: InvalidRegistry,
}

#[derive(Debug, Serialize, ToSchema)]
struct InvalidRegistry {
    /// `invalid_registry`.
    code: &'static str,
    message: String,
    problems: Vec<ConfigProblem>,
}

/// Reloads the registry and the API tokens from the files the service was started
/// with (admins; `kill -HUP` does the same). The new files are checked completely
/// first, as `stockpile check-config` does; with any problem nothing changes and the
/// problems come back located. Otherwise every part switches at once: facilities that
/// remain keep their state, new ones start never reported, removed ones' alerts
/// resolve saying so, and changed populations move the days at once. Recorded in the
/// audit log either way.
#[utoipa::path(post, path = "/api/v1/registry/reload", tag = "ops",
    responses(
        (status = 200, description = "Reloaded: what changed", body = ReloadSummary),
        (status = 401, description = "A token is needed", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 422, description = "The new files do not load (`invalid_registry`); nothing changed. `problems` locates each", body = InvalidRegistryBody),
        (status = 503, description = "The service could not switch (ingest stopped), or does not reload; nothing changed", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state), fields(caller = caller.name()))]
pub(super) async fn reload_registry(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let reloader = state
        .registry_reload()
        .ok_or_else(|| ApiError::Unavailable("this service does not reload its registry".into()))?;
    let request = ReloadRequest {
        actor: caller.name().to_owned(),
        via: "token",
        remote: crate::audit::origin(),
    };
    match reloader.reload(request).await {
        Ok(summary) => Ok(Json(summary).into_response()),
        Err(ReloadRefused::Invalid(problems)) => {
            let body = InvalidRegistryBody {
                error: InvalidRegistry {
                    code: "invalid_registry",
                    message: format!(
                        "the new registry or configuration has {} problem(s); the running registry is unchanged",
                        problems.len()
                    ),
                    problems,
                },
            };
            Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response())
        }
        Err(ReloadRefused::Failed(why)) => Err(ApiError::Unavailable(why)),
    }
}

fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    match caller {
        Caller::Public => Err(ApiError::MissingToken),
        Caller::Token {
            role: Role::Admin, ..
        } => Ok(()),
        Caller::Token { name, role, .. } => Err(ApiError::Forbidden(format!(
            "{name:?} has role {}; reloading the registry needs admin",
            role.as_str()
        ))),
    }
}
