//! The API's one error type. Each variant has one HTTP status and one stable `code`; the
//! body is always `{"error": {"code": "…", "message": "…"}}` (DESIGN.md §8), with
//! `field` naming the offending field or query parameter when there is one.

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
}

impl Entity {
    fn code(self) -> &'static str {
        match self {
            Entity::Town => "unknown_town",
            Entity::Cluster => "unknown_cluster",
            Entity::Facility => "unknown_facility",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Entity::Town => "town",
            Entity::Cluster => "cluster",
            Entity::Facility => "facility",
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
    /// `unknown_cluster`, `unknown_facility`, `no_route`, `method_not_allowed`,
    /// `unsupported_media_type`, `invalid_json`, `invalid_query`, `invalid_body`,
    /// `store_error`, `internal`.
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
            ApiError::InvalidBody { .. } => StatusCode::UNPROCESSABLE_ENTITY,
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(message = "Request failed.", code = self.code(), error = %self);
        }
        let mut response = (status, axum::Json(self.body())).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"stockpile\""),
            );
        }
        response
    }
}
