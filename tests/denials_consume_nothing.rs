//! Denied calls are recorded with their reason and consume nothing: no credit and no
//! place in any window; the windows are checked all-or-nothing.

mod common;

use std::time::Duration;

use common::{Backend, engine, plan, tenant_on};
use metering::core::{LedgerQuery, Limit, Per, PremiumAccess};
use metering::{DenyReason, TenantStatus, UsageEvent};

fn call() -> UsageEvent {
    UsageEvent::new("acme", "svc", "/x", "GET")
}

#[tokio::test]
async fn a_call_refused_for_credits_leaves_its_window_free() {
    let (engine, _clock) = engine(&Backend::Memory).await;
    let p = plan("p", 3).with_limit(Limit::new(5, Per::Day).unwrap().max, Per::Day);
    let acme = tenant_on(&engine, "acme", p).await;
    for _ in 0..3 {
        assert!(engine.track(call()).await.unwrap().allowed);
    }
    let denied = engine.track(call()).await.unwrap();
    assert_eq!(denied.reason, Some(DenyReason::InsufficientCredits));
    assert_eq!((denied.credits_charged, denied.credits_remaining), (0, 0));
    assert_eq!(denied.limits[0].remaining, 2, "the denial took no place in the day window");

    engine.grant(&acme, 10, "top-up").await.unwrap();
    assert!(engine.track(call()).await.unwrap().allowed);
    assert!(engine.track(call()).await.unwrap().allowed);
    assert_eq!(engine.track(call()).await.unwrap().reason, Some(DenyReason::RateLimited));
    assert_eq!(engine.balance(&acme).await.unwrap().used, 5);
}

#[tokio::test]
async fn windows_are_all_or_nothing() {
    let (engine, clock) = engine(&Backend::Memory).await;
    let p = plan("p", 100)
        .with_limit(Limit::new(2, Per::Second).unwrap().max, Per::Second)
        .with_limit(Limit::new(5, Per::Day).unwrap().max, Per::Day);
    tenant_on(&engine, "acme", p).await;
    assert!(engine.track(call()).await.unwrap().allowed);
    assert!(engine.track(call()).await.unwrap().allowed);
    let refused = engine.track(call()).await.unwrap();
    assert_eq!(refused.reason, Some(DenyReason::RateLimited));
    assert_eq!(refused.retry_after, Some(1));
    let day = refused.limits.iter().find(|w| w.window == Per::Day).unwrap();
    assert_eq!(day.remaining, 3, "the second window's refusal did not count in the day");

    let mut admitted = 2;
    for _ in 0..10 {
        clock.advance(Duration::from_secs(1));
        admitted += usize::from(engine.track(call()).await.unwrap().allowed);
    }
    assert_eq!(admitted, 5, "exactly the day's quota, however the seconds go");
}

#[tokio::test]
async fn a_client_that_backs_off_recovers() {
    let (engine, clock) = engine(&Backend::Memory).await;
    let p = plan("p", 1_000).with_limit(Limit::new(5, Per::Second).unwrap().max, Per::Second);
    tenant_on(&engine, "acme", p).await;
    for _ in 0..5 {
        assert!(engine.track(call()).await.unwrap().allowed);
    }
    // Hammering while refused changes nothing...
    for _ in 0..50 {
        assert!(!engine.track(call()).await.unwrap().allowed);
    }
    // ...so after the advertised wait the client is admitted again.
    clock.advance(Duration::from_secs(1));
    for _ in 0..5 {
        assert!(engine.track(call()).await.unwrap().allowed);
    }
}

#[tokio::test]
async fn suspension_and_premium_deny_before_any_counter() {
    for backend in Backend::all() {
        let (engine, clock) = engine(&backend).await;
        let acme = tenant_on(&engine, "acme", metering::Plan::free()).await;
        let premium = engine.track(call().premium(Some("ai"))).await.unwrap();
        assert_eq!(premium.reason, Some(DenyReason::PremiumNotInPlan));
        clock.advance(Duration::from_secs(1));
        engine.set_status(&acme, TenantStatus::Suspended).await.unwrap();
        let suspended = engine.track(call()).await.unwrap();
        assert_eq!(suspended.reason, Some(DenyReason::TenantSuspended));
        engine.set_status(&acme, TenantStatus::Active).await.unwrap();
        clock.advance(Duration::from_secs(1));

        let balance = engine.balance(&acme).await.unwrap();
        assert_eq!(balance.used, 0, "{backend:?}");
        let after = engine.track(call()).await.unwrap();
        assert_eq!(after.limits[0].remaining, 9, "{backend:?}: the denials took no place");

        engine.flush().await.unwrap();
        let records = engine.ledger_records(&LedgerQuery { tenant: Some(acme), ..Default::default() }).await.unwrap();
        let reasons: Vec<_> = records.iter().map(|r| r.decision.reason).collect();
        assert_eq!(
            reasons,
            vec![None, Some(DenyReason::TenantSuspended), Some(DenyReason::PremiumNotInPlan)],
            "{backend:?}: denials are recorded with their reason"
        );
        assert!(records.iter().filter(|r| !r.decision.allowed).all(|r| !r.counted));
    }
}

#[tokio::test]
async fn premium_features_are_checked_one_by_one() {
    let (engine, _clock) = engine(&Backend::Memory).await;
    let p = plan("p", 100).with_premium(PremiumAccess::Features(["search".to_string()].into()));
    tenant_on(&engine, "acme", p).await;
    assert!(engine.track(call().premium(Some("search"))).await.unwrap().allowed);
    assert!(!engine.track(call().premium(Some("ai"))).await.unwrap().allowed);
    assert!(!engine.track(call().premium(None)).await.unwrap().allowed);
}

#[tokio::test]
async fn a_plan_change_applies_at_once_and_keeps_what_was_spent() {
    let (engine, _clock) = engine(&Backend::Memory).await;
    let acme = tenant_on(&engine, "acme", metering::Plan::free()).await;
    for _ in 0..10 {
        assert!(engine.track(call()).await.unwrap().allowed);
    }
    assert!(!engine.track(call()).await.unwrap().allowed);
    engine.set_plan(&acme, metering::PlanId::new("basic").unwrap()).await.unwrap();
    let d = engine.track(call()).await.unwrap();
    assert!(d.allowed);
    let day = d.limits.iter().find(|w| w.window == Per::Day).unwrap();
    assert_eq!(day.remaining, 1_000 - 11, "the day's count carried over");
    assert_eq!(d.credits_remaining, 5_000 - 11);
}
