//! The metering reference server: any API, in any language, reports its calls over HTTP.
//!
//! This crate is a library ([`app`], [`run`], [`AppState`], [`Settings`]) with a thin
//! `main.rs`. It runs on the embedded default with no external service: durable records
//! in one SQLite file under the data directory, hot counters in process memory.
//!
//! ```no_run
//! # async fn start() -> Result<(), Box<dyn std::error::Error>> {
//! let settings = metering_server::Settings::from_env()?;
//! let listener = tokio::net::TcpListener::bind(settings.listen).await?;
//! let state = metering_server::AppState::open(settings).await?;
//! metering_server::run(listener, state, std::future::pending()).await?;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod error;
mod metrics;
mod routes;
mod settings;
mod state;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use error::{ApiError, ApiJson};
pub use settings::{Settings, SettingsError};
pub use state::AppState;

/// The largest request body accepted (a batch of 1,000 events fits).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long one request may take before it answers 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(OpenApi)]
#[openapi(info(title = "metering", description = "API usage metering, rate limiting and credit billing."))]
struct ApiDoc;

/// The server's routes, with the OpenAPI document they are described by.
pub fn app(state: AppState) -> Router {
    let (router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::accounts::router())
        .merge(routes::keys::router())
        .merge(routes::track::router())
        .merge(routes::tenant::router())
        .merge(routes::admin::router())
        .merge(routes::ops::router())
        .split_for_parts();
    router
        .merge(routes::ops::docs(api))
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(state)
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(ApiError::internal("a handler panicked"))
        }))
        .layer(axum::middleware::from_fn(metrics::track_requests))
        .layer(TraceLayer::new_for_http())
}

/// Serves `app(state)` on `listener` until `shutdown` completes, then finishes in-flight
/// requests and flushes the ledger.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let engine = state.engine.clone();
    axum::serve(listener, app(state).into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await?;
    if let Err(e) = engine.flush().await {
        tracing::error!(error = %e, "flushing the ledger at shutdown failed");
    }
    Ok(())
}
