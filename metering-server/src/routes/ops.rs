//! Routes: operations (`/healthz`, `/readyz`) and the API description.

use axum::Json;
use axum::Router;
use axum::extract::State;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz))
}

/// `GET /openapi.json` and the human-readable docs page.
pub(crate) fn docs(api: utoipa::openapi::OpenApi) -> Router<AppState> {
    Router::new().route("/openapi.json", axum::routing::get(move || async move { Json(api) }))
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "alive")))]
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The storage answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "storage reachable"),
    (status = 503, description = "storage unreachable")
))]
async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.engine.records().ping().await.map_err(ApiError::unavailable)?;
    Ok(Json(json!({ "status": "ready" })))
}
