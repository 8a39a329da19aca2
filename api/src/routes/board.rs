//! The built-in wall board and the OpenAPI document.

use axum::Extension;
use axum::http::header;
use axum::response::{Html, IntoResponse};

use super::OpenApiJson;

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
