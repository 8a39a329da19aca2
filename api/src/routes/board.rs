//! The built-in wall board, who the board is signed in as, and the OpenAPI document.

use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;

use super::OpenApiJson;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorBody};

/// The board: one self-contained page (inline CSS and JS, nothing fetched from outside,
/// so it works on a control-room network without internet) that polls `/api/v1/towns`.
const BOARD_HTML: &str = include_str!("../../assets/board.html");

/// The wall board: towns as tiles by cluster, coloured by days of supply.
#[utoipa::path(get, path = "/", tag = "ops",
    responses((status = 200, description = "The board page", body = String, content_type = "text/html")))]
#[tracing::instrument]
pub(super) async fn board() -> Html<&'static str> {
    Html(BOARD_HTML)
}

/// Who a token belongs to: what the board shows once an officer signs in, and what it
/// asks to know which alerts to offer for acknowledgement.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    /// The token's name: who acknowledgements and logs name.
    #[schema(example = "li.wei")]
    pub name: String,
    pub role: Role,
    /// The towns (ids) an officer acts on: acknowledges their alerts, reports their
    /// sheltered people. Empty for a viewer (acts on none) and an admin (acts on every
    /// town).
    #[schema(example = json!(["jingshan"]))]
    pub towns: Vec<String>,
}

/// Who the presented token belongs to: its name, role and towns. Needs a token even
/// when reads are public (there is nobody to describe without one); never shows the
/// token itself.
#[utoipa::path(get, path = "/api/v1/me", tag = "ops",
    responses(
        (status = 200, description = "The token's holder", body = Me),
        (status = 401, description = "No token, or not a valid one", body = ErrorBody),
    ))]
#[tracing::instrument(fields(caller = caller.name()))]
pub(super) async fn me(caller: Caller) -> Result<Json<Me>, ApiError> {
    match caller {
        Caller::Public => Err(ApiError::MissingToken),
        Caller::Token { name, role, towns } => Ok(Json(Me {
            name,
            role,
            towns: match role {
                Role::Officer => towns.iter().map(ToString::to_string).collect(),
                Role::Viewer | Role::Admin => Vec::new(),
            },
        })),
    }
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "ops",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
#[tracing::instrument(skip(doc))]
pub(super) async fn openapi_json(Extension(doc): Extension<OpenApiJson>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.0.to_string(),
    )
}
