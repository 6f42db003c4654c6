//! What the layer's tests share: an engine over memory stores on a manual clock, an axum
//! app and a plain service to meter, and readers for answers and records.
#![allow(dead_code)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use metering_core::store::{MemoryHot, MemoryRecords};
use metering_core::{Engine, GroupCommit, LedgerQuery, LedgerRecord, ManualClock, Plan, PlanId, Tenant, TenantId};
use metering_tower::MeteringLayer;
use serde_json::Value;
use tower::service_fn;
use tower_service::Service;

/// Mid-month, mid-day: the day window has 43,200 seconds left.
pub(crate) const START: &str = "2026-03-14T12:00:00Z";

pub(crate) async fn engine_on(plan: &str) -> (Engine, ManualClock) {
    engine_over(Arc::new(MemoryRecords::new()), GroupCommit::default(), plan).await
}

/// An engine over `records` with the writer `cfg`, and the tenant `acme` on `plan`.
pub(crate) async fn engine_over(records: Arc<MemoryRecords>, cfg: GroupCommit, plan: &str) -> (Engine, ManualClock) {
    let clock = ManualClock::at(START);
    let engine =
        Engine::builder(records, Arc::new(MemoryHot::new())).clock(clock.clone()).group_commit(cfg).build().unwrap();
    engine.seed_plans().await.unwrap();
    if engine.plan(&PlanId::new(plan).unwrap()).await.unwrap().is_none() {
        engine.put_plan(&Plan::new(PlanId::new(plan).unwrap(), 1_000)).await.unwrap();
    }
    engine.create_tenant(&Tenant::new(acme(), PlanId::new(plan).unwrap(), engine.now())).await.unwrap();
    (engine, clock)
}

pub(crate) fn acme() -> TenantId {
    TenantId::new("acme").unwrap()
}

pub(crate) async fn records(engine: &Engine) -> Vec<LedgerRecord> {
    engine.flush().await.unwrap();
    engine.ledger_records(&LedgerQuery { tenant: Some(acme()), ..LedgerQuery::default() }).await.unwrap()
}

pub(crate) async fn remaining(engine: &Engine) -> i64 {
    engine.balance(&acme()).await.unwrap().remaining
}

/// An axum app whose handlers count their calls; metered with `route_layer`.
pub(crate) fn app(layer: MeteringLayer<Engine>, calls: &Arc<AtomicUsize>) -> Router {
    let handler = |calls: Arc<AtomicUsize>| {
        move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            "ok"
        }
    };
    Router::new()
        .route("/notes", get(handler(calls.clone())))
        .route("/notes/{id}", get(handler(calls.clone())))
        .route("/notes/{id}/summary", get(handler(calls.clone())))
        .route("/users/{name}", get(handler(calls.clone())))
        .route_layer(layer)
}

pub(crate) fn get_as(path: &str, tenant: Option<&str>) -> Request<axum::body::Body> {
    let mut b = Request::get(path);
    if let Some(t) = tenant {
        b = b.header("x-tenant-id", t);
    }
    b.body(axum::body::Body::empty()).unwrap()
}

/// A plain tower service answering `status`, counting its calls.
pub(crate) fn plain(
    status: StatusCode,
    calls: &Arc<AtomicUsize>,
) -> impl Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send> + Clone + Send
{
    let calls = calls.clone();
    service_fn(move |_req: Request<Full<Bytes>>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut res = Response::new(Full::new(Bytes::from_static(b"plain")));
            *res.status_mut() = status;
            Ok::<_, Infallible>(res)
        }
    })
}

pub(crate) fn plain_get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path).header("x-tenant-id", "acme").body(Full::default()).unwrap()
}

pub(crate) async fn json<B: http_body::Body>(res: Response<B>) -> (http::response::Parts, Value)
where
    B::Error: std::fmt::Debug,
{
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts, serde_json::from_slice(&bytes).unwrap())
}

pub(crate) fn header<'a>(parts: &'a http::response::Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).map(|v| v.to_str().unwrap())
}

pub(crate) fn layer(engine: &Engine) -> MeteringLayer<Engine> {
    MeteringLayer::builder(engine.clone()).service_name("notes-api").build().unwrap()
}
