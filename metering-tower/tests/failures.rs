//! The layer when things go wrong: a record store that fails or crawls, an inner service
//! that panics in `call`, paths spelled to dodge route settings, and methods a route does
//! not have.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use metering_core::store::MemoryRecords;
use metering_core::{Engine, FailurePolicy, GroupCommit};
use metering_tower::{MeteringLayer, OTHER_ENDPOINT};
use tower::{Layer, ServiceExt, service_fn};

use common::*;

/// The ledger's records for `acme`, read straight from the store (no flush first).
async fn stored(engine: &Engine) -> usize {
    let query = metering_core::LedgerQuery { tenant: Some(acme()), ..Default::default() };
    engine.ledger_records(&query).await.unwrap().len()
}

/// Flushes until the writer has written everything it holds.
async fn flush_until_written(engine: &Engine) {
    while engine.flush().await.is_err() {}
}

fn failing(policy: FailurePolicy, retry_capacity: usize) -> GroupCommit {
    GroupCommit { retry_capacity, failure_policy: policy, ..GroupCommit::default() }
}

#[tokio::test]
async fn closed_a_failing_ledger_keeps_what_it_can_gives_back_the_rest_and_refuses_new_calls() {
    let store = Arc::new(MemoryRecords::new());
    let (engine, _clock) = engine_over(store.clone(), failing(FailurePolicy::Closed, 4), "free").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let metered = layer(&engine).layer(plain(StatusCode::OK, &calls));
    store.faults().fail(true);

    // Decided before the writer has tried: ten allowed, two over the day's quota.
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(metered.clone().oneshot(plain_get("/notes")).await.unwrap().status());
    }
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 10);
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count(), 2);

    // The batch fails: four records wait for the store, eight are dropped with their counts.
    assert!(engine.flush().await.is_err(), "a flush says records are not written");
    let stats = engine.writer_stats();
    assert_eq!((stats.retrying, stats.dropped), (4, 8));
    assert!(stats.failed_batches >= 1);
    assert_eq!(remaining(&engine).await, 96, "only the kept records keep their credits");

    // While records wait, new calls are refused in the JSON error shape, charging nothing.
    let (parts, body) = json(metered.clone().oneshot(plain_get("/notes")).await.unwrap()).await;
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "metering_unavailable");
    assert_eq!(calls.load(Ordering::SeqCst), 10, "the refused call did not reach the service");

    // The store comes back: the kept records are written, the layer serves again.
    store.faults().fail(false);
    flush_until_written(&engine).await;
    assert_eq!(stored(&engine).await, 4);
    assert_eq!(engine.writer_stats().retrying, 0);
    engine.clear_hot().await.unwrap();
    assert_eq!(remaining(&engine).await, 96, "rebuilt from the ledger, the balance is the same");
    assert_eq!(metered.clone().oneshot(plain_get("/notes")).await.unwrap().status(), StatusCode::OK);
    assert_eq!(records(&engine).await.len(), 5);
}

#[tokio::test]
async fn open_a_failing_ledger_keeps_serving_and_counts_what_it_could_not_keep() {
    let store = Arc::new(MemoryRecords::new());
    let (engine, _clock) = engine_over(store.clone(), failing(FailurePolicy::Open, 4), "free").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let metered = layer(&engine).layer(plain(StatusCode::OK, &calls));
    store.faults().fail(true);

    for _ in 0..3 {
        assert_eq!(metered.clone().oneshot(plain_get("/notes")).await.unwrap().status(), StatusCode::OK);
    }
    assert!(engine.flush().await.is_err());
    assert_eq!(engine.writer_stats().retrying, 3);
    for _ in 0..3 {
        assert_eq!(metered.clone().oneshot(plain_get("/notes")).await.unwrap().status(), StatusCode::OK);
    }
    assert!(engine.flush().await.is_err());
    let stats = engine.writer_stats();
    assert_eq!((stats.retrying, stats.dropped), (4, 2), "room for four; two served uncharged");
    assert_eq!(remaining(&engine).await, 96);

    store.faults().fail(false);
    flush_until_written(&engine).await;
    assert_eq!(stored(&engine).await, 4);
    engine.clear_hot().await.unwrap();
    assert_eq!(remaining(&engine).await, 96);
    assert_eq!(calls.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn a_full_queue_makes_the_answer_wait_and_is_counted_but_loses_nothing() {
    let store = Arc::new(MemoryRecords::new());
    let cfg = GroupCommit { queue: 2, max_batch: 1, ..GroupCommit::default() };
    let (engine, _clock) = engine_over(store.clone(), cfg, "free").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let metered = layer(&engine).layer(plain(StatusCode::OK, &calls));
    store.faults().delay(Duration::from_millis(5));
    for _ in 0..6 {
        assert_eq!(metered.clone().oneshot(plain_get("/notes")).await.unwrap().status(), StatusCode::OK);
    }
    assert!(engine.writer_stats().queue_full_waits >= 1, "{:?}", engine.writer_stats());
    assert_eq!(records(&engine).await.len(), 6);
    assert_eq!(engine.writer_stats().dropped, 0);
}

#[tokio::test]
async fn a_service_panicking_in_call_is_settled_uncharged() {
    let (engine, _clock) = engine_on("free").await;
    let panicking = service_fn(
        |_req: Request<Full<Bytes>>| -> std::future::Ready<Result<Response<Full<Bytes>>, std::convert::Infallible>> {
            panic!("the handler fails before it returns a future")
        },
    );
    let metered = layer(&engine).layer(panicking);
    let call = tokio::spawn(metered.oneshot(plain_get("/notes")));
    assert!(call.await.unwrap_err().is_panic());

    let records = records(&engine).await;
    assert_eq!(records.len(), 1, "the call is recorded");
    assert!(!records[0].counted, "and not charged");
    assert_eq!(records[0].status, None);
    assert_eq!(remaining(&engine).await, 100);
}

#[tokio::test]
async fn no_spelling_of_a_premium_path_gets_past_the_layer() {
    let (engine, _clock) = engine_on("free").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let metering = MeteringLayer::builder(engine.clone())
        .service_name("notes-api")
        .premium_route("/notes/{id}/summary", Some("ai"))
        .route_cost("/notes/{id}/export", 5)
        .build()
        .unwrap();
    let handler = {
        let calls = calls.clone();
        move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            "ok"
        }
    };
    let router = Router::new()
        .route("/notes/{id}", get(handler.clone()))
        .route("/notes/{id}/summary", get(handler.clone()))
        .route("/notes/{id}/export", get(handler));
    // Around the whole router: it runs before routing and sees raw paths only.
    let app = metering.layer(router);
    let fetch = |path: &str| get_as(path, Some("acme"));

    for path in [
        "/notes/1/summary",
        "/notes/%31/summary",
        "/notes/+1/summary",
        "/notes/1/%73ummary",
        "/notes//1/summary",
        "/notes/1/./summary",
        "/notes/abc/summary",
    ] {
        let res = app.clone().oneshot(fetch(path)).await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no summary was served");

    // Costs follow every spelling too, under the template's name.
    assert_eq!(app.clone().oneshot(fetch("/notes/%32/export")).await.unwrap().status(), StatusCode::OK);
    let records = records(&engine).await;
    let export = records.iter().find(|r| r.decision.allowed).unwrap();
    assert_eq!((export.event.endpoint.as_str(), export.decision.credits_charged), ("/notes/{id}/export", 5));
    assert!(records.iter().filter(|r| !r.decision.allowed).all(|r| r.event.endpoint == "/notes/{id}/summary"));
}

#[tokio::test]
async fn premium_templates_that_cannot_match_are_refused_at_build() {
    let (engine, _clock) = engine_on("free").await;
    for template in ["/notes/:id/summary", "notes/{id}/summary", "/notes/{id}.txt", "/files/*rest"] {
        let built =
            MeteringLayer::builder(engine.clone()).service_name("notes-api").premium_route(template, None).build();
        assert!(built.is_err(), "{template}");
    }
}

#[tokio::test]
async fn raw_paths_make_a_bounded_number_of_endpoint_names() {
    let (engine, _clock) = engine_on("pro").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let metered = MeteringLayer::builder(engine.clone())
        .service_name("notes-api")
        .max_endpoint_names(3)
        .build()
        .unwrap()
        .layer(plain(StatusCode::OK, &calls));
    for path in ["/a", "/b", "/c", "/d", "/e", "/a"] {
        assert_eq!(metered.clone().oneshot(plain_get(path)).await.unwrap().status(), StatusCode::OK);
    }
    let mut names: Vec<String> = records(&engine).await.into_iter().map(|r| r.event.endpoint).collect();
    names.sort();
    assert_eq!(
        names,
        ["/a", "/a", "/b", "/c", OTHER_ENDPOINT, OTHER_ENDPOINT],
        "the first three names, then the bound"
    );
}

fn request(method: Method, path: &str) -> Request<axum::body::Body> {
    Request::builder().method(method).uri(path).header("x-tenant-id", "acme").body(axum::body::Body::empty()).unwrap()
}

#[tokio::test]
async fn a_method_the_route_lacks_is_405_before_metering_and_charged_nothing() {
    let (engine, _clock) = engine_on("free").await;
    let metering = layer(&engine);
    let app = Router::new().route("/notes", metering.on(get(|| async { "notes" })));

    for method in [Method::DELETE, Method::TRACE, Method::PATCH] {
        assert_eq!(
            app.clone().oneshot(request(method.clone(), "/notes")).await.unwrap().status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method}"
        );
    }
    assert!(records(&engine).await.is_empty(), "nothing decided");
    assert_eq!(remaining(&engine).await, 100);

    // Out of quota, a missing method is still a 405, not a 429.
    for _ in 0..10 {
        assert_eq!(app.clone().oneshot(request(Method::GET, "/notes")).await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(
        app.clone().oneshot(request(Method::PATCH, "/notes")).await.unwrap().status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        app.clone().oneshot(request(Method::GET, "/notes")).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn under_router_route_layer_a_405_is_not_charged_and_trace_is_405_too() {
    let (engine, _clock) = engine_on("free").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(layer(&engine), &calls);
    assert_eq!(
        app.clone().oneshot(request(Method::DELETE, "/notes")).await.unwrap().status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
    let (parts, body) = json(app.clone().oneshot(request(Method::TRACE, "/notes")).await.unwrap()).await;
    assert_eq!(parts.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"]["code"], "method_not_allowed");
    assert_eq!(remaining(&engine).await, 100);
    let records = records(&engine).await;
    assert_eq!(records.len(), 1, "the DELETE was decided, then settled uncharged");
    assert!(!records[0].counted);
    assert_eq!(records[0].status, Some(405));
}
