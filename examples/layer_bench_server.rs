//! The server behind `scripts/bench-layer.sh`: one trivial handler (`{"ok":true}`) served
//! bare, behind `MeteringLayer` and behind tower_governor's layer (plus two diagnostic
//! variants) on one single-threaded runtime, so a load generator can compare, over real
//! HTTP, what each layer costs:
//!
//! | route | in front of the handler |
//! |---|---|
//! | `GET /bare/{id}` (and `/bare`) | nothing |
//! | `GET /metered/{id}` | `MeteringLayer` (`route_layer`, tenant from `x-tenant-id`) over an `Engine` on SQLite records (a fresh temporary directory) + `MemoryHot` + group commit |
//! | `GET /governed/{id}` | tower_governor's `GovernorLayer` (keyed by peer IP) |
//! | `GET /metered-memory/{id}` | diagnostic: the same layer and engine over `MemoryRecords` (no disk; the ledger grows in memory with every call) |
//! | `GET /layer-only/{id}` | diagnostic: `MeteringLayer` over a meter that allows every call with a fixed decision (the layer's own cost) |
//!
//! The diagnostic routes split the metered route's cost: `layer-only` minus `bare` is the
//! layer itself, `metered-memory` minus `layer-only` the engine's decide and settle (with
//! an in-memory ledger append), `metered` minus `metered-memory` the SQLite ledger writer.
//!
//! Neither layer refuses anything at benchmark rates: the one tenant, `bench`, is on a
//! plan of 10^12 credits and 10^9 calls a day, and the governor refills a token every
//! nanosecond with a burst of `u32::MAX`. Every metered call is decided, counted and
//! written to the ledger, as in production.
//!
//! Run it with (the address from the first argument, else `BENCH_LISTEN`, else
//! `127.0.0.1:3901`):
//!
//! ```text
//! cargo run --release --example layer_bench_server -- 127.0.0.1:3901
//! ```
//!
//! It prints `listening on http://ADDR` once it accepts connections. Then:
//!
//! ```text
//! $ curl -s localhost:3901/bare/42
//! {"ok":true}
//! $ curl -s -i -H 'x-tenant-id: bench' localhost:3901/metered/42
//! HTTP/1.1 200 OK
//! content-type: application/json
//! ratelimit-limit: 1000000000
//! ratelimit-remaining: 999999999
//! ratelimit-reset: 54301
//! ratelimit-policy: "day";q=1000000000;w=86400
//! ratelimit: "day";r=999999999;t=54301
//! content-length: 11
//! ...
//! {"ok":true}
//! $ curl -s localhost:3901/governed/42
//! {"ok":true}
//! ```
//!
//! Ctrl-C or SIGTERM stops it: it writes the queued ledger records and removes its
//! temporary directory. `scripts/bench-layer.sh` pins it to one core and runs `wrk` on
//! the other.

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use metering::core::GroupCommit;
use metering::core::store::RecordStore;
use metering::core::store::SqliteRecords;
use metering::core::store::{MemoryHot, MemoryRecords};
use metering::core::{EventId, WindowStatus};
use metering::tower::{Decided, Meter, MeteringLayer};
use metering::{Decision, Engine, Error, Outcome, Per, Plan, PlanId, Tenant, TenantId, UsageEvent};
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tracing_subscriber::EnvFilter;

type BoxError = Box<dyn std::error::Error>;

fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .init();
    let listen = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("BENCH_LISTEN").ok())
        .unwrap_or_else(|| "127.0.0.1:3901".to_owned());
    let listen: SocketAddr = listen.parse()?;
    // One thread serves everything (the blocking pool's SQLite writes aside), so pinning
    // the process to one core gives every route the same single core.
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(serve(listen))
}

async fn serve(listen: SocketAddr) -> Result<(), BoxError> {
    let dir = std::env::temp_dir().join(format!("metering-layer-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _cleanup = RemoveOnDrop(dir.clone());

    let engine = bench_engine(Arc::new(SqliteRecords::open(dir.join("bench.db"))?)).await?;
    let metering = MeteringLayer::builder(engine.clone()).service_name("layer-bench").build()?;
    let in_memory = bench_engine(Arc::new(MemoryRecords::new())).await?;
    let metering_in_memory = MeteringLayer::builder(in_memory.clone()).service_name("layer-bench").build()?;
    let layer_only = MeteringLayer::builder(AllowAll::new()?).service_name("layer-bench").build()?;
    let governor = GovernorConfigBuilder::default()
        .per_nanosecond(1)
        .burst_size(u32::MAX)
        .finish()
        .ok_or("the governor configuration is invalid")?;

    let bare = Router::new().route("/bare", get(ok)).route("/bare/{id}", get(ok));
    let metered = Router::new().route("/metered/{id}", get(ok)).route_layer(metering);
    let metered_in_memory = Router::new().route("/metered-memory/{id}", get(ok)).route_layer(metering_in_memory);
    let layer_only = Router::new().route("/layer-only/{id}", get(ok)).route_layer(layer_only);
    let governed = Router::new().route("/governed/{id}", get(ok)).route_layer(GovernorLayer::new(governor));
    let app = bare.merge(metered).merge(governed).merge(metered_in_memory).merge(layer_only);

    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    // `ConnectInfo` for the governor's peer-IP key; every route pays for it alike.
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    engine.flush().await?;
    in_memory.flush().await?;
    Ok(())
}

/// An engine over `records` (and `MemoryHot`, with group commit), with its one tenant.
async fn bench_engine(records: Arc<dyn RecordStore>) -> Result<Engine, BoxError> {
    let engine = Engine::builder(records, Arc::new(MemoryHot::new())).group_commit(GroupCommit::default()).build()?;
    let calls = NonZeroU32::new(1_000_000_000).ok_or("zero limit")?;
    let plan = Plan::new(PlanId::new("bench")?, 1_000_000_000_000).with_limit(calls, Per::Day);
    engine.put_plan(&plan).await?;
    engine.create_tenant(&Tenant::new(TenantId::new("bench")?, plan.id.clone(), engine.now())).await?;
    Ok(engine)
}

/// The handler behind every route.
async fn ok() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], r#"{"ok":true}"#)
}

/// A meter that allows every call with the same decision and records nothing: what is
/// left is the layer's own work (event, endpoint, headers, the response future).
#[derive(Clone)]
struct AllowAll(Arc<Decision>);

impl AllowAll {
    fn new() -> Result<Self, Error> {
        Ok(AllowAll(Arc::new(Decision {
            event_id: EventId::new("layer-only")?,
            allowed: true,
            reason: None,
            credits_charged: 1,
            credits_remaining: 999_999_999_999,
            limits: vec![WindowStatus { window: Per::Day, limit: 1_000_000_000, remaining: 999_999_999, reset: 3_600 }],
            retry_after: None,
        })))
    }
}

/// The decided call of [`AllowAll`].
struct Allowed(Decision);

impl Decided for Allowed {
    fn decision(&self) -> &Decision {
        &self.0
    }
}

impl Meter for AllowAll {
    type Pending = Allowed;

    fn decide(&self, _: UsageEvent) -> impl Future<Output = Result<Allowed, Error>> + Send {
        std::future::ready(Ok(Allowed(Decision::clone(&self.0))))
    }

    async fn settle(&self, _: Allowed, _: Outcome) {}
}

/// Removes the temporary directory when the server ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => drop(signal.recv().await),
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
