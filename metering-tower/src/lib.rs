//! A [`tower`](https://docs.rs/tower) layer that meters every request of an HTTP service
//! inline: each request is decided before the service runs (tenant, plan, premium access,
//! rate-limit windows, credits) and recorded after it answered.
//!
//! ```
//! use std::sync::Arc;
//!
//! use axum::{Router, body::Body, http::Request, routing::get};
//! use metering_core::store::{MemoryHot, MemoryRecords};
//! use metering_core::{Engine, PlanId, Tenant, TenantId};
//! use metering_tower::MeteringLayer;
//! use tower::ServiceExt;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let engine = Engine::builder(Arc::new(MemoryRecords::new()), Arc::new(MemoryHot::new())).build()?;
//! engine.seed_plans().await?;
//! engine.create_tenant(&Tenant::new(TenantId::new("acme")?, PlanId::new("free")?, engine.now())).await?;
//!
//! let metering = MeteringLayer::builder(engine.clone())
//!     .service_name("notes-api")
//!     .route_cost("/notes/{id}/export", 5)
//!     .premium_route("/notes/{id}/summary", Some("ai"))
//!     .build()?;
//!
//! let app = Router::new()
//!     .route("/notes/{id}", get(|| async { "a note" }))
//!     .route("/notes/{id}/summary", get(|| async { "a summary" }))
//!     // `route_layer`: only matched routes are metered, under their template.
//!     .route_layer(metering);
//!
//! let request = Request::get("/notes/42").header("x-tenant-id", "acme").body(Body::empty())?;
//! let response = app.clone().oneshot(request).await?;
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.headers()["ratelimit-policy"], r#""day";q=10;w=86400"#);
//! assert_eq!(response.headers()["ratelimit-remaining"], "9");
//!
//! // The free plan has no premium access: 403, and the handler is not called.
//! let request = Request::get("/notes/42/summary").header("x-tenant-id", "acme").body(Body::empty())?;
//! assert_eq!(app.oneshot(request).await?.status(), 403);
//! # Ok::<_, Box<dyn std::error::Error>>(()) }).unwrap();
//! ```
//!
//! | feature | default | what it switches on |
//! |---|---|---|
//! | `axum` | no | endpoints named by axum's `MatchedPath` (the route template, `/notes/{id}`) |
//! | `jwt` | no | `JwtTenant`: the tenant is a claim of a verified bearer JWT |
//!
//! # What a request goes through
//!
//! 1. **Tenant**: a [`TenantExtractor`] reads it ([`HeaderTenant`], `x-tenant-id`, by
//!    default). None: `401 {"error":{"code":"unauthenticated",..}}`, the service is not called.
//!    A method no call is metered under (`TRACE`, `CONNECT`, extensions) answers `405
//!    method_not_allowed`, and the service is not called.
//! 2. **Endpoint**: the route template, never the raw path. With the `axum` feature,
//!    `MatchedPath` when the router set it; else the configured route template the
//!    normalized path matches; else an [`EndpointNamer`] ([`CollapseIds`] by default:
//!    `/notes/42` is `/notes/{id}`), whose names are bounded
//!    ([`max_endpoint_names`](MeteringLayerBuilder::max_endpoint_names)). Route settings
//!    (premium, cost) are found by matching the path, percent-escapes decoded and dot
//!    segments resolved, against every configured template, so no spelling of a path
//!    (`/notes/%31/summary`, `/notes/+1/summary`) escapes them, wherever the layer sits.
//!    axum sets `MatchedPath` before the routes' own middleware runs, so apply the layer
//!    per route with [`MeteringLayer::on`] (a method the route lacks answers `405` before
//!    metering), with `Router::route_layer` (matched routes; a `405` is decided first,
//!    then not charged) or `Router::layer` (the fallback too). A layer wrapped around the
//!    whole `Router` from outside runs before routing and sees no `MatchedPath`.
//! 3. **Decision**: a [`UsageEvent`](metering_core::UsageEvent) (service name, tenant,
//!    endpoint, method; credits, premium and feature from the route settings) goes to the
//!    [`Meter`] (the local [`Engine`](metering_core::Engine), or later a client of a central
//!    metering server). A denial answers at once, with the serialized
//!    [`Decision`](metering_core::Decision) as a JSON body and the reason's status: `429
//!    rate_limited` (with `Retry-After`), `402 insufficient_credits`, `403
//!    premium_not_in_plan` or `403 tenant_suspended`. A request the engine refuses answers
//!    `400 invalid_input` (with the `field`) or `403 unknown_tenant`; a meter that fails
//!    answers `503 metering_unavailable`, or lets the call through uncharged with
//!    [`fail_open(true)`](MeteringLayerBuilder::fail_open).
//! 4. **Call**: the inner service runs.
//! 5. **Settle**: the meter records the call with its status. A `5xx` answer is not charged
//!    (the engine gives its credits and window slots back) unless
//!    [`charge_server_errors(true)`](MeteringLayerBuilder::charge_server_errors); a `405`
//!    answer never is. A denial is recorded too, charged nothing. An inner service that
//!    panics, in `call` or in its future, is settled as not answered.
//!
//! Every metered answer, allowed or denied, carries the rate-limit fields described in
//! [`headers`].
//!
//! # Recording, and what a crash can lose
//!
//! With an engine built with a group-commit writer
//! ([`EngineBuilder::group_commit`](metering_core::EngineBuilder::group_commit)), settling
//! queues the ledger record in a bounded buffer and the answer does not wait for the disk;
//! call [`Engine::flush`](metering_core::Engine::flush) on shutdown. Records still queued
//! when the process dies hard are lost (the counters they charged are rebuilt from the
//! ledger without them). Batches of such records are written with
//! [`UsageLedger::append_buffered`](metering_core::store::UsageLedger::append_buffered):
//! on the SQLite store, once written they survive a crash of the process, but an
//! operating-system crash or a power loss can also lose those written since the last
//! synced append or indexing pass. Without a writer each record is written before the
//! answer leaves.
//! A request abandoned half-way (client gone, outer timeout) is still settled, from a
//! detached task, as not answered.
//!
//! # When recording fails or falls behind
//!
//! | what happens | what the layer does |
//! |---|---|
//! | the queue of records is full (the disk is slower than the calls) | the settling waits for room: the answer is held up, nothing is lost; each wait is counted ([`WriterStats::queue_full_waits`](metering_core::WriterStats)) |
//! | a batch of records fails | its records are kept (up to [`GroupCommit::retry_capacity`](metering_core::GroupCommit)) and tried again with a growing pause; those that do not fit are dropped and their credits and window slots given back ([`WriterStats::dropped`](metering_core::WriterStats)) |
//! | records wait for a failing store, [`FailurePolicy::Closed`](metering_core::FailurePolicy) (the default) | new calls answer `503 metering_unavailable` (or go through uncharged and unrecorded with [`fail_open(true)`](MeteringLayerBuilder::fail_open)) until the kept records are written |
//! | records wait for a failing store, [`FailurePolicy::Open`](metering_core::FailurePolicy) | calls are decided and served as usual; their records wait with the others |
//! | the engine cannot decide at all (its hot store fails) | `503 metering_unavailable`, or uncharged with `fail_open(true)` |
//!
//! No decision keeps its counts without its record: a record that is never written has
//! its counts given back, and one the ledger already holds (a retry of an id the hot store
//! had forgotten) too.

pub mod headers;

mod body;
mod config;
mod endpoint;
mod error;
mod future;
mod layer;
mod meter;
mod request;
mod response;
mod route;
mod service;
mod tenant;

pub use body::ResponseBody;
pub use config::OTHER_ENDPOINT;
pub use endpoint::{CollapseIds, EndpointNamer};
pub use error::Error;
pub use future::ResponseFuture;
pub use layer::{MeteringLayer, MeteringLayerBuilder};
pub use meter::{Decided, Meter};
pub use request::RequestView;
pub use service::Metering;
#[cfg(feature = "jwt")]
pub use tenant::JwtTenant;
pub use tenant::{HeaderTenant, NoTenant, TenantExtractor};
