//! The metering reference server: any API, in any language, reports its calls over HTTP.
//!
//! This crate is a library ([`app`], [`run`], [`Settings`]) with a thin `main.rs`. It runs
//! on the embedded default with no external service: durable records in one SQLite file
//! under the data directory, hot counters in process memory.
//!
//! ```no_run
//! # async fn start() -> Result<(), Box<dyn std::error::Error>> {
//! let settings = metering_server::Settings::from_env()?;
//! let state = metering_server::AppState::open(&settings).await?;
//! let listener = tokio::net::TcpListener::bind(settings.listen).await?;
//! metering_server::run(listener, state, std::future::pending()).await?;
//! # Ok(()) }
//! ```

mod settings;

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metering_core::store::memory::MemoryHot;
use metering_core::store::sqlite::SqliteRecords;
use metering_core::{Engine, GroupCommit};
use serde_json::json;

pub use settings::{Settings, SettingsError};

/// What the handlers share: the engine (and, through it, the stores).
#[derive(Clone)]
pub struct AppState {
    engine: Engine,
}

impl AppState {
    /// Opens the embedded default: `<data_dir>/metering.db` and in-memory counters, with
    /// the seeded plans.
    pub async fn open(settings: &Settings) -> Result<Self, metering_core::Error> {
        std::fs::create_dir_all(&settings.data_dir)
            .map_err(|e| metering_core::Error::Unavailable(format!("data dir {}: {e}", settings.data_dir.display())))?;
        let records = SqliteRecords::open(settings.data_dir.join("metering.db"))?;
        let engine = Engine::builder(Arc::new(records), Arc::new(MemoryHot::new()))
            .group_commit(GroupCommit::default())
            .build()?;
        engine.seed_plans().await?;
        Ok(AppState { engine })
    }

    /// State over an existing engine.
    pub fn from_engine(engine: Engine) -> Self {
        AppState { engine }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// The server's routes.
pub fn app(state: AppState) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).fallback(not_found).with_state(state)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.engine.records().ping().await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "storage not ready");
            error(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", "storage is not reachable")
        }
    }
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such route")
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "error": { "code": code, "message": message } }))).into_response()
}

/// Serves `app(state)` on `listener` until `shutdown` completes, then finishes in-flight
/// requests and flushes the ledger.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let engine = state.engine.clone();
    axum::serve(listener, app(state)).with_graceful_shutdown(shutdown).await?;
    if let Err(e) = engine.flush().await {
        tracing::error!(error = %e, "flushing the ledger at shutdown failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use metering_core::store::memory::MemoryRecords;
    use tower::ServiceExt;

    fn state() -> AppState {
        let engine = Engine::builder(Arc::new(MemoryRecords::new()), Arc::new(MemoryHot::new())).build().unwrap();
        AppState::from_engine(engine)
    }

    #[tokio::test]
    async fn health_and_unknown_routes_answer_json() {
        let ok = app(state()).oneshot(Request::get("/healthz").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        let missing = app(state()).oneshot(Request::get("/nope").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        let body = missing.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["code"], "not_found");
    }
}
