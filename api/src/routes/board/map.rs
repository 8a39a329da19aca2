//! 一图, the map: one wall screen with every town and facility placed by its registry
//! coordinates (docs/design.md#the-map). The page draws itself from the API, so it
//! needs no tile server and works on a control room's offline network.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use reserve::Ledger;
use reserve::registry::FacilityIdx;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::ErrorBody;
use crate::routes::facilities::FacilityKindView;

/// The map: one self-contained page (inline CSS and JS, an SVG drawn from coordinates)
/// that polls `/api/v1/towns` and reads `/api/v1/map` for the facilities.
const MAP_HTML: &str = include_str!("../../../assets/map.html");

/// The map of the city: towns coloured by status and sized by population, facilities
/// marked by kind, the worst towns labelled; no scrolling on a wall screen.
#[utoipa::path(get, path = "/map", tag = "ops",
    responses((status = 200, description = "The map page", body = String, content_type = "text/html")))]
#[tracing::instrument]
pub(in crate::routes) async fn map_page() -> Html<&'static str> {
    Html(MAP_HTML)
}

/// What the map places besides towns (which `GET /api/v1/towns` gives with their
/// coordinates): every facility with its position and readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct MapLayout {
    /// In registry order; those without coordinates are listed too (the page places
    /// them at their town).
    pub facilities: Vec<MapFacility>,
}

/// A facility on the map.
#[derive(Debug, Serialize, ToSchema)]
pub struct MapFacility {
    pub id: String,
    /// Town id.
    pub town: String,
    pub kind: FacilityKindView,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    /// Water points and power units: whether ready now (`null` for warehouses, which
    /// have no readiness).
    pub ready: Option<bool>,
}

/// Every facility with its coordinates, kind and readiness: the map's marks besides
/// towns. A wall-display read, like the towns list: no names of people, no figures
/// beyond readiness.
#[utoipa::path(get, path = "/api/v1/map", tag = "facilities",
    responses(
        (status = 200, body = MapLayout),
        (status = 401, description = "A token is needed", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state))]
pub(in crate::routes) async fn map_layout(State(state): State<AppState>) -> Json<MapLayout> {
    let ledger = state.ledger();
    let registry = ledger.registry();
    let facilities = (0..registry.facilities.len())
        .map(FacilityIdx::from_index)
        .map(|f| {
            let facility = registry.facility(f);
            MapFacility {
                id: facility.id.to_string(),
                town: registry.town(facility.town).id.to_string(),
                kind: facility.kind.name().into(),
                lat: facility.lat,
                lon: facility.lon,
                ready: readiness(&ledger, f),
            }
        })
        .collect();
    Json(MapLayout { facilities })
}

/// A water point's or power unit's readiness now; `None` for a warehouse.
fn readiness(ledger: &Ledger, f: FacilityIdx) -> Option<bool> {
    let figures = ledger.figures(ledger.registry().facility(f).town);
    figures
        .water_points
        .iter()
        .chain(&figures.power_units)
        .find(|u| u.facility == f)
        .map(|u| u.ready)
}

/// The district outlines the map draws under the towns: the GeoJSON FeatureCollection
/// named by `[board] districts_geojson`, checked at start-up; an empty collection when
/// none is configured.
#[utoipa::path(get, path = "/api/v1/map/districts", tag = "facilities",
    responses(
        (status = 200, description = "A GeoJSON FeatureCollection of Polygons and MultiPolygons", body = Object, content_type = "application/geo+json"),
        (status = 401, description = "A token is needed", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state))]
pub(in crate::routes) async fn district_outlines(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/geo+json")],
        Json(state.districts().geojson().clone()),
    )
        .into_response()
}
