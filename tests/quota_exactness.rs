//! Promise 1, quota exactness: N concurrent calls against a remaining quota of L admit
//! exactly min(N, L), on every backend.

mod common;

use std::sync::Arc;

use common::{Backend, engine, plan, tenant_on};
use metering::core::ledger::TimeBasis;
use metering::core::{Limit, Per};
use metering::{Engine, UsageEvent};

async fn race(engine: &Engine, tenant: &str, tasks: usize) -> usize {
    let mut handles = Vec::with_capacity(tasks);
    for i in 0..tasks {
        let engine = engine.clone();
        let event = UsageEvent::new(tenant, "svc", "/race", "POST").with_event_id(format!("race-{i}"));
        handles.push(tokio::spawn(async move { engine.track(event).await.unwrap().allowed }));
    }
    let mut admitted = 0;
    for h in handles {
        admitted += usize::from(h.await.unwrap());
    }
    admitted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_racers_for_a_quota_of_a_hundred_get_exactly_a_hundred() {
    for backend in Backend::all() {
        let (engine, _clock) = engine(&backend).await;
        let limited = plan("hundred-a-day", 1_000_000).with_limit(Limit::new(100, Per::Day).unwrap().max, Per::Day);
        let tenant = tenant_on(&engine, "racer", limited).await;

        assert_eq!(race(&engine, "racer", 1_000).await, 100, "{backend:?}");

        let now = engine.now();
        let (start, end) = Per::Day.window_containing(now);
        let ledger = engine.records().usage_totals(&tenant, TimeBasis::Event, start, end).await.unwrap();
        assert_eq!(ledger.calls, 100, "{backend:?}: the ledger agrees");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_racers_for_a_hundred_credits_get_exactly_a_hundred() {
    for backend in Backend::all() {
        let (engine, _clock) = engine(&backend).await;
        let tenant = tenant_on(&engine, "spender", plan("hundred-credits", 100)).await;

        assert_eq!(race(&engine, "spender", 1_000).await, 100, "{backend:?}");
        let balance = engine.balance(&tenant).await.unwrap();
        assert_eq!((balance.used, balance.remaining), (100, 0), "{backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racers_across_many_tenants_each_get_their_own_quota() {
    let (engine, _clock) = engine(&Backend::Memory).await;
    let limited = plan("ten-a-day", 1_000).with_limit(Limit::new(10, Per::Day).unwrap().max, Per::Day);
    for t in 0..20 {
        tenant_on(&engine, &format!("t{t}"), limited.clone()).await;
    }
    let engine = Arc::new(engine);
    let mut handles = Vec::new();
    for t in 0..20 {
        let engine = Arc::clone(&engine);
        handles.push(tokio::spawn(async move { race(&engine, &format!("t{t}"), 50).await }));
    }
    for h in handles {
        assert_eq!(h.await.unwrap(), 10);
    }
}

#[tokio::test]
async fn a_batch_is_decided_in_its_order_and_one_bad_event_spoils_nothing_else() {
    for backend in Backend::all() {
        let (engine, _clock) = engine(&backend).await;
        let three = plan("three-a-day", 1_000).with_limit(Limit::new(3, Per::Day).unwrap().max, Per::Day);
        let tenant = tenant_on(&engine, "batcher", three).await;
        let event = |id: &str| UsageEvent::new("batcher", "svc", "/batch", "GET").with_event_id(id);
        let batch = vec![
            event("b1"),
            event("b2"),
            UsageEvent::new("batcher", "svc", "/batch", "BREW").with_event_id("bad"),
            event("b1"),
            event("b3"),
            event("b4"),
            event("b5"),
        ];
        let results = engine.track_batch(batch).await;
        let seen: Vec<Result<(bool, &str), String>> = results
            .iter()
            .map(|r| r.as_ref().map(|d| (d.allowed, d.event_id.as_str())).map_err(|e| e.to_string()))
            .collect();
        assert_eq!(seen[..2], [Ok((true, "b1")), Ok((true, "b2"))], "{backend:?}");
        assert!(matches!(results[2], Err(metering::Error::InvalidInput(_))), "{backend:?}: {:?}", results[2]);
        assert_eq!(results[3].as_ref().unwrap(), results[0].as_ref().unwrap(), "{backend:?}: a replay, charged once");
        assert_eq!(seen[4..], [Ok((true, "b3")), Ok((false, "b4")), Ok((false, "b5"))], "{backend:?}");

        let now = engine.now();
        let (start, end) = Per::Day.window_containing(now);
        let ledger = engine.records().usage_totals(&tenant, TimeBasis::Event, start, end).await.unwrap();
        assert_eq!(ledger.calls, 3, "{backend:?}: the ledger agrees");
        let q = metering::core::LedgerQuery { tenant: Some(tenant.clone()), ..Default::default() };
        assert_eq!(engine.ledger_records(&q).await.unwrap().len(), 5, "{backend:?}: denials recorded too");
    }
}
