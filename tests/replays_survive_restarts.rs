//! Promises 2 and 6 together: an `event_id` is charged once whatever made it, however
//! late its event, across restarts (graceful or not); and what the hot store remembers of
//! a seen id never contradicts the ledger.

mod common;

use std::time::Duration;

use common::{Backend, Instance, START, Stop, tenant_on};
use metering::core::{EngineBuilder, LedgerQuery, ManualClock, Timestamp};
use metering::{Decision, Engine, Error, Plan, TenantId, UsageEvent};

fn call(credits: i64) -> UsageEvent {
    UsageEvent::new("acme", "notes", "/notes", "POST").with_credits(credits)
}

fn as_built(builder: EngineBuilder) -> EngineBuilder {
    builder
}

/// The ledger's records of `acme`.
async fn records(engine: &Engine) -> Vec<metering::core::LedgerRecord> {
    let acme = TenantId::new("acme").unwrap();
    let q = LedgerQuery { tenant: Some(acme), limit: LedgerQuery::MAX_LIMIT, ..Default::default() };
    engine.ledger_records(&q).await.unwrap()
}

async fn used(engine: &Engine) -> u64 {
    engine.balance(&TenantId::new("acme").unwrap()).await.unwrap().used
}

fn clock() -> ManualClock {
    ManualClock::at(START)
}

fn ago(clock: &ManualClock, secs: u64) -> Timestamp {
    use metering::core::Clock;
    clock.now().minus(Duration::from_secs(secs))
}

#[tokio::test]
async fn a_generated_id_sent_back_is_a_replay_however_late_its_event() {
    for backend in Backend::all() {
        let clock = clock();
        let node = Instance::start(&backend, &clock, as_built).await;
        tenant_on(&node.engine, "acme", Plan::basic()).await;
        let late = UsageEvent { timestamp: Some(ago(&clock, 3_600)), ..call(5) };
        let first = node.engine.track(late.clone()).await.unwrap();
        // The record leaves the journal for the indexed ledger.
        node.engine.flush().await.unwrap();
        clock.advance(Duration::from_secs(2));
        let sent_back = late.clone().with_event_id(first.event_id.as_str());
        assert_eq!(node.engine.track(sent_back.clone()).await.unwrap(), first, "{backend:?}");
        assert_eq!(used(&node.engine).await, 5, "{backend:?}");

        let node = node.restart(Stop::Graceful).await;
        assert_eq!(node.engine.track(sent_back).await.unwrap(), first, "{backend:?} after a restart");
        assert_eq!(used(&node.engine).await, 5, "{backend:?}");
        assert_eq!(records(&node.engine).await.len(), 1, "{backend:?}");
    }
}

#[tokio::test]
async fn a_restart_stores_no_record_twice() {
    for stop in [Stop::Graceful, Stop::Crash] {
        for backend in Backend::all() {
            let clock = clock();
            let node = Instance::start(&backend, &clock, as_built).await;
            tenant_on(&node.engine, "acme", Plan::basic()).await;
            for _ in 0..3 {
                let late = UsageEvent { timestamp: Some(ago(&clock, 600)), ..call(7) };
                assert!(node.engine.track(late).await.unwrap().allowed);
            }
            // A read indexes the open journal segment, whose frames stay in its file.
            assert_eq!(records(&node.engine).await.len(), 3);
            let node = node.restart(stop).await;
            assert_eq!(used(&node.engine).await, 21, "{backend:?} {stop:?}");
            assert_eq!(records(&node.engine).await.len(), 3, "{backend:?} {stop:?}");
            let node = node.restart(stop).await;
            assert_eq!(records(&node.engine).await.len(), 3, "{backend:?} {stop:?}, twice");
        }
    }
}

/// A free-plan day used up by `ev-1` to `ev-10`, then a restart.
async fn day_used_up_then_restart(
    backend: &Backend,
    configure: fn(EngineBuilder) -> EngineBuilder,
) -> (Instance, Vec<Decision>) {
    let clock = clock();
    let node = Instance::start(backend, &clock, configure).await;
    tenant_on(&node.engine, "acme", Plan::free()).await;
    let mut first = Vec::new();
    for i in 1..=10 {
        let d = node.engine.track(call(1).with_event_id(format!("ev-{i}"))).await.unwrap();
        assert!(d.allowed);
        first.push(d);
    }
    assert!(!node.engine.track(call(1).with_event_id("ev-11")).await.unwrap().allowed, "the day is used up");
    (node.restart(Stop::Graceful).await, first)
}

#[tokio::test]
async fn a_retry_after_a_restart_stays_a_replay() {
    for backend in Backend::all() {
        let (node, first) = day_used_up_then_restart(&backend, as_built).await;
        for attempt in 0..3 {
            let again = node.engine.track(call(1).with_event_id("ev-1")).await.unwrap();
            assert_eq!(again, first[0], "{backend:?}, attempt {attempt}");
        }
        assert_eq!(used(&node.engine).await, 10, "{backend:?}");
    }
}

#[tokio::test]
async fn a_conflicting_reuse_after_a_restart_leaves_the_original_answered() {
    for backend in Backend::all() {
        let (node, first) = day_used_up_then_restart(&backend, as_built).await;
        let other = node.engine.track(call(2).with_event_id("ev-2")).await.unwrap_err();
        assert!(matches!(other, Error::IdempotencyConflict(_)), "{backend:?}: {other:?}");
        for attempt in 0..2 {
            let again = node.engine.track(call(1).with_event_id("ev-2")).await.unwrap();
            assert_eq!(again, first[1], "{backend:?}, attempt {attempt}");
        }
        assert_eq!(used(&node.engine).await, 10, "{backend:?}");
    }
}

#[tokio::test]
async fn a_retry_over_the_denial_record_budget_is_still_checked_against_the_ledger() {
    fn three_denials_a_minute(builder: EngineBuilder) -> EngineBuilder {
        builder.denial_records_per_minute(3)
    }
    for backend in Backend::all() {
        let (node, first) = day_used_up_then_restart(&backend, three_denials_a_minute).await;
        for i in 0..5 {
            let denied = node.engine.track(call(1).with_event_id(format!("spent-{i}"))).await.unwrap();
            assert!(!denied.allowed);
        }
        assert!(node.engine.unrecorded_denials() > 0, "the budget is spent");
        for attempt in 0..2 {
            let again = node.engine.track(call(1).with_event_id("ev-4")).await.unwrap();
            assert_eq!(again, first[3], "{backend:?}, attempt {attempt}");
        }
        let conflict = node.engine.track(call(3).with_event_id("ev-5")).await.unwrap_err();
        assert!(matches!(conflict, Error::IdempotencyConflict(_)), "{backend:?}: {conflict:?}");
        assert_eq!(used(&node.engine).await, 10, "{backend:?}");
    }
}
