//! The metering reference server: any API, in any language, reports its calls over HTTP.
//!
//! This crate is a library ([`app`], [`run`], [`AppState`], [`Settings`]) with a thin
//! `main.rs`. It runs on the embedded default with no external service: durable records
//! in one SQLite file under the data directory, hot counters in process memory.
//!
//! Every route is decided by Casbin ([`rbac`]): the caller authenticates with a JWT access
//! token (`Authorization: Bearer`) or an API key (`X-API-Key`), see [`auth`].
//!
//! ```no_run
//! # async fn start() -> Result<(), Box<dyn std::error::Error>> {
//! let settings = metering_server::Settings::from_env()?;
//! let listener = tokio::net::TcpListener::bind(settings.listen).await?;
//! let state = metering_server::AppState::open(settings).await?;
//! metering_server::run(listener, state, std::future::pending()).await?;
//! # Ok(()) }
//! ```

mod audit;
pub mod auth;
pub mod cli;
mod cursor;
pub mod error;
#[cfg(test)]
mod fuzz;
mod hot;
mod metrics;
mod openapi;
pub mod rbac;
mod records;
mod routes;
mod settings;
mod state;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use error::{ApiError, ApiJson, ApiPath};
pub use settings::{
    AdminSeed, CONFIG_VAR, MIN_JWT_SECRET_BYTES, MongoSettings, RateSpec, RedisSettings, Secret, Settings,
    SettingsError,
};
pub use state::{AppState, JWT_SECRET_FILE, StartError};

/// The largest request body accepted (a batch of 1,000 events fits).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long one request may take before it answers 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(OpenApi)]
#[openapi(
    info(title = "metering", description = "API usage metering, rate limiting and credit billing."),
    modifiers(&SecuritySchemes)
)]
struct ApiDoc;

/// Declares the two ways to authenticate: `bearer` (a JWT access token) and `api_key`.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
        components
            .add_security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))));
    }
}

/// The server's routes, with the OpenAPI document they are described by.
///
/// Every matched route passes [`rbac`]'s authorization first (401/403 before any handler
/// runs); an unknown path answers the JSON 404.
pub fn app(state: AppState) -> Router {
    let (router, mut api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::accounts::router())
        .merge(routes::keys::router())
        .merge(routes::track::router())
        .merge(routes::tenant::router())
        .merge(routes::admin::router())
        .merge(routes::ops::router())
        .split_for_parts();
    openapi::declare_shared_answers(&mut api);
    router
        .merge(routes::ops::docs(api))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), rbac::authorize))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
        })
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(time_limit))
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(ApiError::internal("a handler panicked"))
        }))
        .layer(axum::middleware::from_fn(metrics::track_requests))
        .layer(TraceLayer::new_for_http())
}

/// Answers 408 `request_timeout` in the standard error shape for a request that takes
/// longer than [`REQUEST_TIMEOUT`].
async fn time_limit(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => axum::response::IntoResponse::into_response(ApiError::request_timeout("the request took too long")),
    }
}

/// How often ledger records past their retention are deleted.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Prunes the ledger and the refresh tokens now and then every [`PRUNE_EVERY`], for as
/// long as the server runs.
async fn prune_periodically(state: AppState) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    loop {
        every.tick().await;
        if let Err(e) = state.prune_ledger().await {
            tracing::warn!(error = %e, "pruning the ledger failed; retried at the next round");
        }
        if let Err(e) = state.prune_refresh_tokens().await {
            tracing::warn!(error = %e, "pruning refresh tokens failed; retried at the next round");
        }
    }
}

/// Serves `app(state)` on `listener` until `shutdown` completes, then finishes in-flight
/// requests and flushes the ledger.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let engine = state.engine.clone();
    let pruner = tokio::spawn(prune_periodically(state.clone()));
    axum::serve(listener, app(state).into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await?;
    pruner.abort();
    if let Err(e) = engine.flush().await {
        tracing::error!(error = %e, "flushing the ledger at shutdown failed");
    }
    Ok(())
}
