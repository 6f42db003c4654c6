//! Routes: operations (`/healthz`, `/readyz`, `/metrics`) and the API description
//! (`/openapi.json`, and the human-readable page at `/docs`).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    // Install the metrics recorder before the first request, so the first one is counted.
    crate::metrics::handle();
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz)).routes(routes!(metrics))
}

/// `GET /openapi.json` (the OpenAPI 3.1 document generated from the handlers) and the
/// human-readable docs page at `/docs` (Swagger UI, served from the binary: no CDN).
pub(crate) fn docs(api: utoipa::openapi::OpenApi) -> Router<AppState> {
    Router::from(SwaggerUi::new("/docs").url("/openapi.json", api))
}

/// The answer of the health probes.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    /// `ok` (alive) or `ready` (storage reachable).
    #[schema(example = "ok")]
    status: &'static str,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "alive", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The storage answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "storage reachable", body = Health),
    (status = 503, description = "storage unreachable", body = crate::routes::track::ErrorBody)
))]
async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    state.engine.records().ping().await.map_err(ApiError::unavailable)?;
    Ok(Json(Health { status: "ready" }))
}

/// Prometheus metrics in the text exposition format: requests by route template, method
/// and status, request latency histograms, decisions by outcome and reason.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String)
))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ::metrics::gauge!("metering_denials_unrecorded").set(state.engine.unrecorded_denials() as f64);
    ::metrics::gauge!("metering_ledger_queue_depth").set(state.engine.ledger_queue_depth() as f64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], crate::metrics::render())
}
