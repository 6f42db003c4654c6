//! Promise 4, no negative balance: without an overdraft the balance never goes below
//! zero; with one, never below its floor; a claw-back respects the same floor, a grant is
//! always taken.

mod common;

use common::{Backend, engine, plan, tenant_on};
use metering::core::PricingRule;
use metering::{Error, UsageEvent};

fn call(credits: i64) -> UsageEvent {
    UsageEvent::new("acme", "svc", "/x", "POST").with_credits(credits)
}

#[tokio::test]
async fn without_overdraft_a_call_that_would_go_negative_is_refused() {
    let (engine, _clock) = engine(&Backend::Memory).await;
    let acme = tenant_on(&engine, "acme", plan("p", 10)).await;
    let mut remaining = Vec::new();
    for _ in 0..5 {
        remaining.push(engine.track(call(3)).await.unwrap().credits_remaining);
    }
    assert_eq!(remaining, vec![7, 4, 1, 1, 1]);
    assert_eq!(engine.balance(&acme).await.unwrap().remaining, 1);
    assert!(engine.track(call(1)).await.unwrap().allowed, "a cheaper call still fits");
}

#[tokio::test]
async fn an_overdraft_goes_no_deeper_than_its_floor() {
    let (engine, _clock) = engine(&Backend::Memory).await;
    let acme = tenant_on(&engine, "acme", plan("p", 10).with_overdraft(5)).await;
    let allowed = {
        let mut n = 0;
        for _ in 0..10 {
            n += usize::from(engine.track(call(3)).await.unwrap().allowed);
        }
        n
    };
    assert_eq!(allowed, 5, "10 -> 7 -> 4 -> 1 -> -2 -> -5");
    assert_eq!(engine.balance(&acme).await.unwrap().remaining, -5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_spenders_never_break_the_floor() {
    for backend in Backend::all() {
        let (engine, _clock) = engine(&backend).await;
        let acme = tenant_on(&engine, "acme", plan("p", 100).with_overdraft(20)).await;
        let handles: Vec<_> = (0..300)
            .map(|i| {
                let engine = engine.clone();
                tokio::spawn(async move { engine.track(call(1 + i % 7)).await.unwrap() })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        let remaining = engine.balance(&acme).await.unwrap().remaining;
        assert!((-20..=-14).contains(&remaining), "{backend:?}: {remaining}");
    }
}

#[tokio::test]
async fn a_claw_back_cannot_pass_the_floor() {
    let (engine, _clock) = engine(&Backend::Memory).await;
    let acme = tenant_on(&engine, "acme", plan("p", 10).with_overdraft(2)).await;
    assert_eq!(engine.grant(&acme, -12, "refund").await.unwrap(), -2);
    assert!(matches!(engine.grant(&acme, -1, "more").await, Err(Error::BelowFloor)));
    assert_eq!(engine.grant(&acme, 5, "gift").await.unwrap(), 3);
    let b = engine.balance(&acme).await.unwrap();
    assert_eq!((b.granted, b.remaining), (-7, 3));
}

#[tokio::test]
async fn the_plan_sets_the_price_not_the_caller() {
    let (engine, _clock) = engine(&Backend::Memory).await;
    let p = plan("p", 100)
        .with_rule(PricingRule::fixed(4).for_feature("ai"))
        .with_rule(PricingRule::fixed(2).for_region("eu"));
    tenant_on(&engine, "acme", p).await;
    let mut ai = call(0);
    ai.feature = Some("ai".into());
    assert_eq!(engine.track(ai).await.unwrap().credits_charged, 4, "a caller's own 0 does not make it cheaper");
    let mut eu = call(1);
    eu.region = Some("eu".into());
    assert_eq!(engine.track(eu).await.unwrap().credits_charged, 2);
    assert_eq!(engine.track(call(3)).await.unwrap().credits_charged, 3, "no rule: the call's own credits");
}

#[tokio::test]
async fn a_move_to_a_smaller_allowance_shows_the_overage_and_still_takes_grants() {
    for backend in Backend::all() {
        let (engine, _clock) = engine(&backend).await;
        let acme = tenant_on(&engine, "acme", plan("big", 5_000)).await;
        for _ in 0..5 {
            assert!(engine.track(UsageEvent::new("acme", "svc", "/x", "GET").with_credits(100)).await.unwrap().allowed);
        }
        engine.put_plan(&plan("small", 100)).await.unwrap();
        engine.set_plan(&acme, metering::PlanId::new("small").unwrap()).await.unwrap();

        let balance = engine.balance(&acme).await.unwrap();
        assert_eq!((balance.remaining, balance.overage), (-400, 400), "{backend:?}");
        let denied = engine.track(UsageEvent::new("acme", "svc", "/x", "GET")).await.unwrap();
        assert_eq!((denied.allowed, denied.credits_remaining), (false, 0), "{backend:?}: down to the floor");

        assert_eq!(engine.grant(&acme, 10, "goodwill").await.unwrap(), -390, "{backend:?}: a grant is taken");
        let balance = engine.balance(&acme).await.unwrap();
        assert_eq!((balance.remaining, balance.overage, balance.granted), (-390, 390, 10), "{backend:?}");
        assert!(matches!(engine.grant(&acme, -1, "claw back").await, Err(Error::BelowFloor)), "{backend:?}");
        assert_eq!(engine.balance(&acme).await.unwrap().remaining, -390, "{backend:?}");
    }
}
