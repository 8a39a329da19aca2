//! The API's one error type. Each variant has one HTTP status and one stable `code`; the
//! body is always `{"error": {"code": "…", "message": "…"}}`, with `field` naming the
//! offending field or query parameter when there is one (docs/design.md#errors).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// What a 404 for a bad id was looking for; its code is `unknown_<kind>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Town,
    Cluster,
    Facility,
    Category,
    Alert,
    Silence,
    Drill,
    /// A district, cluster or town named by an export's `scope`.
    Scope,
    /// A stored what-if run.
    Scenario,
    /// The scheduled stress test's report, before the first has run.
    StressTest,
}

impl Entity {
    fn code(self) -> &'static str {
        match self {
            Entity::Town => "unknown_town",
            Entity::Cluster => "unknown_cluster",
            Entity::Facility => "unknown_facility",
            Entity::Category => "unknown_category",
            Entity::Alert => "unknown_alert",
            Entity::Silence => "unknown_silence",
            Entity::Drill => "unknown_drill",
            Entity::Scope => "unknown_scope",
            Entity::Scenario => "unknown_scenario",
            Entity::StressTest => "unknown_stress_test",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Entity::Town => "town",
            Entity::Cluster => "cluster",
            Entity::Facility => "facility",
            Entity::Category => "category",
            Entity::Alert => "alert",
            Entity::Silence => "silence",
            Entity::Drill => "drill",
            Entity::Scope => "scope",
            Entity::Scenario => "scenario",
            Entity::StressTest => "stress test",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("a bearer token is required (Authorization: Bearer …)")]
    MissingToken,
    #[error("the bearer token is not valid")]
    InvalidToken,
    #[error("{0}")]
    Forbidden(String),
    #[error("unknown {} {id:?}", kind.noun())]
    NotFound { kind: Entity, id: String },
    /// No route matches the path: kept apart from [`ApiError::NotFound`] so a client
    /// (and the route test) can tell a typo in the URL from an unknown id.
    #[error("no such endpoint: {0}")]
    NoRoute(String),
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// Malformed input: not JSON at all, an unreadable body, a bad query string.
    #[error("{message}")]
    BadRequest {
        code: &'static str,
        message: String,
        field: Option<String>,
    },
    /// Well-formed JSON whose content is wrong: a missing field, a wrong type, a value
    /// out of range.
    #[error("{message}")]
    InvalidBody {
        message: String,
        field: Option<String>,
    },
    /// A well-formed request the service will not carry out as asked (a history range
    /// holding too many readings).
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    /// A part the request needs is not running (the alert engine) or not reachable
    /// (InfluxDB); the message is for clients and names no address.
    #[error("{0}")]
    Unavailable(String),
    /// Every permit of the expensive endpoints (history, scenarios) is taken: the
    /// request was refused at once, not queued.
    #[error("too many history and scenario requests at once; retry in a moment")]
    Overloaded,
    /// The request was not answered within the request timeout.
    #[error("the request took too long and was stopped")]
    Timeout,
    /// The body is larger than the route accepts.
    #[error("the request body is larger than the {limit} bytes this endpoint accepts")]
    BodyTooLarge { limit: usize },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("{0}")]
    Internal(String),
}

/// The JSON error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, snake_case: `unauthorized`, `invalid_token`, `forbidden`, `unknown_town`,
    /// `unknown_cluster`, `unknown_facility`, `unknown_category`, `unknown_alert`,
    /// `unknown_silence`, `no_route`, `method_not_allowed`, `unsupported_media_type`,
    /// `invalid_json`, `invalid_query`, `invalid_path`, `invalid_body`, `invalid_request`,
    /// `body_too_large`, `empty_range`, `too_many_readings`, `too_many_points`,
    /// `unavailable`, `overloaded`, `timeout`, `store_error`, `internal`.
    pub code: String,
    /// For people; may change between versions.
    pub message: String,
    /// The field or query parameter at fault (a dotted path), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    /// A 422 for a value that parsed but is out of range.
    pub(crate) fn invalid_field(field: &str, message: impl std::fmt::Display) -> ApiError {
        ApiError::InvalidBody {
            message: format!("{field}: {message}"),
            field: Some(field.to_owned()),
        }
    }

    /// A 400 `invalid_query` naming the query parameter and why.
    pub(crate) fn invalid_query(field: &str, why: impl std::fmt::Display) -> ApiError {
        ApiError::BadRequest {
            code: "invalid_query",
            message: format!("query parameter {field}: {why}"),
            field: Some(field.to_owned()),
        }
    }

    /// A time in query parameter `field` (RFC 3339, any offset), or the 400 naming it.
    pub(crate) fn query_time(
        field: &str,
        value: &str,
    ) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
        chrono::DateTime::parse_from_rfc3339(value)
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|e| {
                ApiError::invalid_query(
                    field,
                    format!(
                        "{value:?} is not an RFC 3339 time ({e}); e.g. 2026-11-24T08:00:00+08:00"
                    ),
                )
            })
    }

    pub(crate) fn not_found(kind: Entity, id: &str) -> ApiError {
        ApiError::NotFound {
            kind,
            id: id.to_owned(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingToken | ApiError::InvalidToken => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } | ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::InvalidBody { .. } | ApiError::Unprocessable { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Unavailable(_) | ApiError::Overloaded | ApiError::Timeout => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Store(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MissingToken => "unauthorized",
            ApiError::InvalidToken => "invalid_token",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound { kind, .. } => kind.code(),
            ApiError::NoRoute(_) => "no_route",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::BadRequest { code, .. } => code,
            ApiError::InvalidBody { .. } => "invalid_body",
            ApiError::Unprocessable { code, .. } => code,
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Overloaded => "overloaded",
            ApiError::Timeout => "timeout",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::Store(_) => "store_error",
            ApiError::Internal(_) => "internal",
        }
    }

    pub(crate) fn body(&self) -> ErrorBody {
        let (message, field) = match self {
            // The store's message names the database file: for the log, not for clients.
            ApiError::Store(_) => ("the store failed; see the service log".to_owned(), None),
            ApiError::Internal(_) => ("internal error; see the service log".to_owned(), None),
            ApiError::BadRequest { field, .. } | ApiError::InvalidBody { field, .. } => {
                (self.to_string(), field.clone())
            }
            _ => (self.to_string(), None),
        };
        ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message,
                field,
            },
        }
    }
}

impl From<alerts::AlertsError> for ApiError {
    fn from(e: alerts::AlertsError) -> Self {
        use alerts::AlertsError;
        match e {
            AlertsError::Store(e) => ApiError::Store(e),
            AlertsError::NotFound(id) => ApiError::not_found(Entity::Alert, &id.to_string()),
            // The alerts crate starts a message about one field with `field: `.
            AlertsError::Invalid(message) => match field_named(&message) {
                Some(field) => ApiError::InvalidBody {
                    field: Some(field.to_owned()),
                    message,
                },
                None => ApiError::BadRequest {
                    code: "invalid_request",
                    message,
                    field: None,
                },
            },
            AlertsError::Stopped => ApiError::Unavailable(e.to_string()),
            AlertsError::Engine(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<store::history::HistoryError> for ApiError {
    fn from(e: store::history::HistoryError) -> Self {
        use store::history::HistoryError;
        match e {
            HistoryError::EmptyRange { .. } => ApiError::BadRequest {
                code: "empty_range",
                message: e.to_string(),
                field: None,
            },
            HistoryError::TooManyReadings => ApiError::Unprocessable {
                code: "too_many_readings",
                message: e.to_string(),
            },
            HistoryError::Store(e) => ApiError::Store(e),
            HistoryError::Influx(e) => {
                // Logged here: the error names the InfluxDB address, the answer does not.
                tracing::error!(message = "History query failed.", error = %e);
                ApiError::Unavailable(
                    "history is unavailable: InfluxDB did not answer; see the service log".into(),
                )
            }
        }
    }
}

/// The field a message of the form `field: why` is about.
fn field_named(message: &str) -> Option<&str> {
    let (field, _) = message.split_once(": ")?;
    let is_name = !field.is_empty()
        && field
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
    is_name.then_some(field)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            // Refusals by a limit: the client is told, the log is not flooded.
            ApiError::Overloaded | ApiError::Timeout => {
                tracing::warn!(message = "Request refused by a limit.", code = self.code());
            }
            _ if status.is_server_error() => {
                tracing::error!(message = "Request failed.", code = self.code(), error = %self);
            }
            _ => {}
        }
        let mut response = (status, axum::Json(self.body())).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"stockpile\""),
            );
        }
        if matches!(self, ApiError::Overloaded) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
