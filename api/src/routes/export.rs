//! `GET /api/v1/export/resources`: the resource list (一单) as CSV or XLSX.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use reserve::registry::{Scope, ScopeError};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::AppState;
use crate::error::{ApiError, Entity, ErrorBody};
use crate::export::{self, OpenAlerts};
use crate::extract::ApiQuery;

const CSV: &str = "text/csv; charset=utf-8";
const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    #[default]
    Csv,
    Xlsx,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ExportQuery {
    /// `csv` (default; UTF-8 with a byte order mark, the tables one after another) or
    /// `xlsx` (one sheet per table).
    #[serde(default)]
    #[param(inline)]
    format: ExportFormat,
    /// `city` (default), `district:<id>`, `cluster:<id>`, `town:<id>` or
    /// `towns:<id>,<id>` (the drills' grammar, `reserve::registry::Scope`).
    scope: Option<String>,
}

/// The resource list (一单): every town of the scope with its days of supply, and every
/// facility with its place, coordinates, capacity, latest figures and their age,
/// readiness and open alerts — one table per kind (towns, warehouses, water points,
/// power units). Column names in Chinese with English beneath.
#[utoipa::path(get, path = "/api/v1/export/resources", tag = "facilities",
    params(ExportQuery),
    responses(
        (status = 200, description = "The list as a file (`Content-Disposition: attachment`)",
            content((String = "text/csv"), (Vec<u8> = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"))),
        (status = 400, description = "Bad `format` or `scope` (`invalid_query`)", body = ErrorBody),
        (status = 401, description = "A token is needed", body = ErrorBody),
        (status = 404, description = "The scope names no district, cluster or town of the registry (`unknown_scope`)", body = ErrorBody),
        (status = 503, description = "Too many expensive requests at once (`overloaded`)", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state))]
pub(super) async fn export_resources(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    let scope_text = query.scope.as_deref().unwrap_or("city");
    let alerts = open_alerts(&state).await?;
    let now = Utc::now();
    let tables = {
        let ledger = state.ledger();
        let scope = match Scope::parse(ledger.registry(), scope_text) {
            Ok(scope) => scope,
            Err(ScopeError::Unknown { .. }) => {
                return Err(ApiError::not_found(Entity::Scope, scope_text));
            }
            Err(malformed) => {
                return Err(ApiError::BadRequest {
                    code: "invalid_query",
                    message: format!("scope: {malformed}"),
                    field: Some("scope".to_owned()),
                });
            }
        };
        let towns = scope.towns(ledger.registry());
        export::resource_list(&ledger, &towns, &alerts, now)
    };
    let format = query.format;
    // Compressing a city's workbook is CPU work: off the async workers.
    let body = tokio::task::spawn_blocking(move || match format {
        ExportFormat::Csv => export::to_csv(&tables).map_err(|e| e.to_string()),
        ExportFormat::Xlsx => export::to_xlsx(&tables).map_err(|e| e.to_string()),
    })
    .await
    .map_err(|e| ApiError::Internal(format!("export task: {e}")))?
    .map_err(|e| ApiError::Internal(format!("export: {e}")))?;
    let (content_type, extension) = match format {
        ExportFormat::Csv => (CSV, "csv"),
        ExportFormat::Xlsx => (XLSX, "xlsx"),
    };
    let file = format!(
        "stockpile-resources-{}-{}.{extension}",
        scope_text.replace(':', "-"),
        now.format("%Y%m%d-%H%M")
    );
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// Firing and pending alerts by town, paged through the alert service (empty without
/// one).
async fn open_alerts(state: &AppState) -> Result<OpenAlerts, ApiError> {
    let mut out = OpenAlerts::new();
    let Some(handle) = state.alerts() else {
        return Ok(out);
    };
    let mut filter = alerts::AlertFilter {
        open: true,
        limit: alerts::MAX_LIMIT,
        ..Default::default()
    };
    loop {
        let page = handle.list_alerts(&filter).await?;
        let full = page.len() == alerts::MAX_LIMIT;
        filter.before_id = page.last().map(|a| a.id);
        for alert in page {
            out.entry(alert.town)
                .or_default()
                .push((alert.rule.as_str().to_owned(), alert.subject));
        }
        if !full || filter.before_id.is_none() {
            return Ok(out);
        }
    }
}
