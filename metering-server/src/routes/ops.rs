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
    /// `ok` (alive), `ready` (storage reachable), or `degraded` (storage reachable, with
    /// damage an operator has not acknowledged: see `problems`).
    #[schema(example = "ok")]
    status: &'static str,
    /// What is wrong when `degraded`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    problems: Vec<String>,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "alive", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok", problems: Vec::new() })
}

/// The storage answers. Damage found in its files (a ledger journal segment that failed
/// its checks with valid records after it) keeps the answer `degraded`, still 200 as the
/// instance serves, until an admin acknowledges it (`POST /admin/storage/acknowledge`);
/// so do ledger records that wait for a failing store, until they are written. A shared
/// hot store (Redis) that does not answer makes it 503 when decisions fail closed, and
/// `degraded` when they fail open.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "storage reachable (`ready`, or `degraded` with its problems)", body = Health),
    (status = 503, description = "storage unreachable", body = crate::routes::track::ErrorBody)
))]
async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    state.engine.ping().await.map_err(ApiError::unavailable)?;
    let mut problems = state.engine.damage().await.map_err(ApiError::unavailable)?;
    if let Err(e) = state.engine.ping_hot().await {
        match state.settings.redis.as_ref().map(|r| r.failure) {
            Some(metering_core::FailurePolicy::Open) => problems.push(format!("hot store: {e}; admitting fail-open")),
            _ => return Err(ApiError::unavailable(e)),
        }
    }
    let retrying = state.engine.writer_stats().retrying;
    if retrying > 0 {
        problems.push(format!("{retrying} ledger records wait for the store to take them"));
    }
    Ok(Json(Health { status: if problems.is_empty() { "ready" } else { "degraded" }, problems }))
}

/// Prometheus metrics in the text exposition format: requests by route template, method
/// and status, request latency histograms, decisions by outcome and reason, and storage
/// damage no operator has acknowledged.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String)
))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ::metrics::gauge!("metering_denials_unrecorded").set(state.engine.unrecorded_denials() as f64);
    let writer = state.engine.writer_stats();
    ::metrics::gauge!("metering_ledger_queue_depth").set(writer.queued as f64);
    ::metrics::gauge!("metering_ledger_records_retrying").set(writer.retrying as f64);
    ::metrics::counter!("metering_ledger_records_dropped_total").absolute(writer.dropped);
    ::metrics::counter!("metering_ledger_failed_batches_total").absolute(writer.failed_batches);
    ::metrics::counter!("metering_ledger_queue_full_waits_total").absolute(writer.queue_full_waits);
    ::metrics::counter!("metering_hot_store_errors_total").absolute(state.engine.hot_errors());
    ::metrics::counter!("metering_fail_open_admissions_total").absolute(state.engine.fail_open_admissions());
    ::metrics::counter!("metering_hot_rebuilds_total").absolute(state.engine.rebuilds());
    if let Ok(damage) = state.engine.damage().await {
        ::metrics::gauge!("metering_storage_damage_unacknowledged").set(damage.len() as f64);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], crate::metrics::render())
}
