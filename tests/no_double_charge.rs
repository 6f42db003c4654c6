//! Promise 2, no double charge: an `event_id` is charged once; a replay gets the first
//! decision back; a reuse with other content is refused.

mod common;

use std::sync::Arc;

use common::{Backend, engine, engine_over, plan, tenant_on};
use metering::core::store::MemoryHot;
use metering::core::{LedgerQuery, Limit, Per};
use metering::{Error, UsageEvent};

fn event(id: &str) -> UsageEvent {
    UsageEvent::new("acme", "notes", "/notes", "POST").with_event_id(id).with_credits(5)
}

#[tokio::test]
async fn a_replay_is_answered_with_the_first_decision_and_charged_once() {
    for backend in Backend::all() {
        let (engine, clock) = engine(&backend).await;
        let acme = tenant_on(&engine, "acme", plan("p", 100)).await;
        let first = engine.track(event("e-1")).await.unwrap();
        clock.advance(std::time::Duration::from_secs(30));
        let again = engine.track(event("e-1")).await.unwrap();
        assert_eq!(first, again, "{backend:?}");
        assert_eq!(engine.balance(&acme).await.unwrap().used, 5, "{backend:?}");
        let q = LedgerQuery { tenant: Some(acme), ..Default::default() };
        assert_eq!(engine.ledger_records(&q).await.unwrap().len(), 1, "{backend:?}");
    }
}

#[tokio::test]
async fn a_reused_id_with_other_content_is_an_idempotency_conflict() {
    for backend in Backend::all() {
        let (engine, _clock) = engine(&backend).await;
        let acme = tenant_on(&engine, "acme", plan("p", 100)).await;
        engine.track(event("e-1")).await.unwrap();
        let err = engine.track(event("e-1").with_credits(6)).await.unwrap_err();
        assert!(matches!(err, Error::IdempotencyConflict(_)), "{backend:?}: {err:?}");
        assert_eq!(engine.balance(&acme).await.unwrap().used, 5, "{backend:?}");
    }
}

#[tokio::test]
async fn a_denial_is_replayed_as_a_denial() {
    let (engine, _clock) = engine(&Backend::Memory).await;
    let tight = plan("one-a-day", 100).with_limit(Limit::new(1, Per::Day).unwrap().max, Per::Day);
    let acme = tenant_on(&engine, "acme", tight).await;
    assert!(engine.track(event("a")).await.unwrap().allowed);
    let denied = engine.track(event("b")).await.unwrap();
    assert!(!denied.allowed);
    engine.set_plan(&acme, metering::PlanId::new("pro").unwrap()).await.unwrap();
    assert_eq!(engine.track(event("b")).await.unwrap(), denied);
}

#[tokio::test]
async fn the_ledger_still_refuses_a_double_charge_after_the_hot_store_forgot() {
    for backend in Backend::all() {
        let (engine, clock) = engine(&backend).await;
        let acme = tenant_on(&engine, "acme", plan("p", 100)).await;
        let first = engine.track(event("e-1")).await.unwrap();
        engine.flush().await.unwrap();

        // A restart: the same durable records, empty hot counters.
        let records = match &backend {
            Backend::Memory => Arc::clone(engine.records()),
            Backend::Sqlite(_) => backend.records(),
        };
        let restarted = engine_over(records, Arc::new(MemoryHot::new()), &clock).await;
        assert_eq!(restarted.track(event("e-1")).await.unwrap(), first, "{backend:?}");
        assert_eq!(restarted.balance(&acme).await.unwrap().used, 5, "{backend:?}");
        let conflict = restarted.track(event("e-1").with_credits(1)).await.unwrap_err();
        assert!(matches!(conflict, Error::IdempotencyConflict(_)), "{backend:?}");
        assert_eq!(restarted.balance(&acme).await.unwrap().used, 5, "{backend:?}");
    }
}

#[tokio::test]
async fn a_record_queued_after_its_answer_that_the_ledger_holds_gives_its_counts_back() {
    for backend in Backend::all() {
        let (engine, clock) = engine(&backend).await;
        let acme = tenant_on(&engine, "acme", plan("p", 100)).await;
        engine.track(event("e-1")).await.unwrap();
        engine.flush().await.unwrap();

        // A restart forgets the id; the layer's path decides it again and queues its record.
        let records = match &backend {
            Backend::Memory => Arc::clone(engine.records()),
            Backend::Sqlite(_) => backend.records(),
        };
        let restarted = engine_over(records, Arc::new(MemoryHot::new()), &clock).await;
        let ticket = restarted.decide(event("e-1")).await.unwrap();
        assert!(!ticket.is_replay(), "{backend:?}: the hot store had forgotten the id");
        restarted.settle_later(ticket, metering::core::Outcome::CHARGED).await.unwrap();
        restarted.flush().await.unwrap();
        assert_eq!(restarted.balance(&acme).await.unwrap().used, 5, "{backend:?}: charged once");
        let q = LedgerQuery { tenant: Some(acme), ..Default::default() };
        assert_eq!(restarted.ledger_records(&q).await.unwrap().len(), 1, "{backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_replays_are_charged_once() {
    let (engine, _clock) = engine(&Backend::Memory).await;
    let acme = tenant_on(&engine, "acme", plan("p", 1_000)).await;
    let handles: Vec<_> = (0..100)
        .map(|_| {
            let engine = engine.clone();
            tokio::spawn(async move { engine.track(event("same")).await.unwrap() })
        })
        .collect();
    let mut decisions = Vec::new();
    for h in handles {
        decisions.push(h.await.unwrap());
    }
    assert!(decisions.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(engine.balance(&acme).await.unwrap().used, 5);
}

#[tokio::test]
async fn resending_a_generated_id_is_a_replay_too() {
    for backend in Backend::all() {
        let (engine, _clock) = engine(&backend).await;
        let acme = tenant_on(&engine, "acme", plan("p", 100)).await;
        let call = || UsageEvent::new("acme", "notes", "/notes", "POST").with_credits(5);
        let first = engine.track(call()).await.unwrap();
        let again = engine.track(call().with_event_id(first.event_id.as_str())).await.unwrap();
        assert_eq!(again, first, "{backend:?}");
        assert_eq!(engine.balance(&acme).await.unwrap().used, 5, "{backend:?}");
    }
}
