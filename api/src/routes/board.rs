//! The built-in wall board, who the board is signed in as, and the OpenAPI document.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Json};
use html_escape::encode_text as esc;
use serde::Serialize;
use utoipa::ToSchema;

use super::OpenApiJson;
use crate::AppState;
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

/// What the board and the town page share (options, API calls, sign-in, alert rows):
/// one script, embedded like the pages, so neither page fetches anything from elsewhere.
const CONSOLE_JS: &str = include_str!("../../assets/console.js");

/// The script the board and the town page share (docs/design.md#wall-board).
#[utoipa::path(get, path = "/assets/console.js", tag = "ops",
    responses((status = 200, description = "The pages' shared script", body = String, content_type = "text/javascript")))]
#[tracing::instrument]
pub(super) async fn console_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            // Asked again on every load, so a page served by a new version never runs
            // an old version's script from the cache.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        CONSOLE_JS,
    )
}

/// A town's page: self-contained like the board, for the town's officer on a phone or
/// at a desk. It reads the town, its facilities, alerts and the cluster's aid plan from
/// the API, and enters counts and transfers through it.
const TOWN_HTML: &str = include_str!("../../assets/town.html");

/// A town's console (docs/design.md#town-page): its categories with days and why they
/// are short, its facilities with their last reading and its source, its open alerts,
/// and forms to enter a count and record a transfer.
#[utoipa::path(get, path = "/towns/{id}", tag = "ops",
    params(("id" = String, Path, description = "Town id, e.g. `jingshan`")),
    responses(
        (status = 200, description = "The town page", body = String, content_type = "text/html"),
        (status = 404, description = "No such town in the registry: a page saying so, linking to the board", body = String, content_type = "text/html"),
    ))]
#[tracing::instrument(skip(state))]
pub(super) async fn town_page(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    // Asked on every request, not baked into the page: a registry reload adds and
    // removes towns while the service runs.
    if state.ledger().registry().town_idx(&id).is_some() {
        return Html(TOWN_HTML).into_response();
    }
    (StatusCode::NOT_FOUND, Html(unknown_town_page(&id))).into_response()
}

/// The page of a town id the registry does not hold, in both languages: a mistyped
/// address or a town since removed.
fn unknown_town_page(id: &str) -> String {
    let id = esc(id);
    format!(
        "<!doctype html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>未找到街镇 Unknown town</title>\
         <style>body{{margin:0;padding:1.5rem;background:#0d1117;color:#e6edf3;\
         font-family:system-ui,sans-serif}}a{{color:#58a6ff}}</style></head>\
         <body><h1>未找到街镇 Unknown town</h1>\
         <p>登记册中没有街镇 “{id}”。The registry has no town “{id}”.</p>\
         <p><a href=\"/\">返回看板 Back to the board</a></p></body></html>\n"
    )
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

// 一图, the map and what it places: its own file, beside the board's.
pub(super) mod map;
