//! Promise 6, rebuildable hot state: after a restart or a wipe of the hot counters,
//! windows and balances are what the ledger says; time moves on a manual clock.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Backend, engine, engine_over, plan, tenant_on};
use metering::core::TenantId;
use metering::core::store::MemoryHot;
use metering::core::{Limit, Per};
use metering::{DenyReason, Engine, Plan, UsageEvent};

fn call() -> UsageEvent {
    UsageEvent::new("acme", "svc", "/x", "GET").with_credits(2)
}

async fn restart(engine: &Engine, backend: &Backend, clock: &metering::ManualClock) -> Engine {
    engine.flush().await.unwrap();
    let records = match backend {
        Backend::Memory => Arc::clone(engine.records()),
        Backend::Sqlite(_) => backend.records(),
    };
    engine_over(records, Arc::new(MemoryHot::new()), clock).await
}

#[tokio::test]
async fn a_restart_gives_back_windows_and_balances_from_the_ledger() {
    for backend in Backend::all() {
        let (engine, clock) = engine(&backend).await;
        let acme = tenant_on(&engine, "acme", Plan::free()).await;
        for _ in 0..7 {
            assert!(engine.track(call()).await.unwrap().allowed);
        }
        engine.grant(&acme, 3, "goodwill").await.unwrap();
        let before = engine.balance(&acme).await.unwrap();

        let engine = restart(&engine, &backend, &clock).await;
        assert_eq!(engine.balance(&acme).await.unwrap(), before, "{backend:?}");
        for _ in 0..3 {
            assert!(engine.track(call()).await.unwrap().allowed, "{backend:?}");
        }
        assert_eq!(engine.track(call()).await.unwrap().reason, Some(DenyReason::RateLimited), "{backend:?}");
        assert_eq!(engine.balance(&acme).await.unwrap().remaining, 100 + 3 - 20, "{backend:?}");
    }
}

#[tokio::test]
async fn a_wiped_hot_store_never_hands_out_a_fresh_quota() {
    for backend in Backend::all() {
        let (engine, _clock) = engine(&backend).await;
        let p = plan("p", 100)
            .with_limit(Limit::new(5, Per::Second).unwrap().max, Per::Second)
            .with_limit(Limit::new(8, Per::Day).unwrap().max, Per::Day);
        let acme = tenant_on(&engine, "acme", p).await;
        for _ in 0..5 {
            assert!(engine.track(call()).await.unwrap().allowed);
        }
        engine.clear_hot().await.unwrap();
        let d = engine.track(call()).await.unwrap();
        assert_eq!(d.reason, Some(DenyReason::RateLimited), "{backend:?}: the burst is still spent");
        assert_eq!(engine.balance(&acme).await.unwrap().used, 10, "{backend:?}");
    }
}

#[tokio::test]
async fn days_and_months_roll_over_on_the_clock() {
    let backend = Backend::Memory;
    let (engine, clock) = engine(&backend).await;
    let acme = tenant_on(&engine, "acme", Plan::free()).await;
    let mut allowed = 0;
    // March 14 to 30, twelve calls a day: ten a day pass until the 100 credits run out.
    for _ in 0..17 {
        for _ in 0..12 {
            allowed += usize::from(engine.track(call()).await.unwrap().allowed);
        }
        clock.advance(Duration::from_secs(86_400));
    }
    assert_eq!(allowed, 50, "100 credits at 2 per call");
    assert_eq!(engine.balance(&acme).await.unwrap().remaining, 0);
    assert!(!engine.track(call()).await.unwrap().allowed, "March 31: still no credits");
    clock.advance(Duration::from_secs(86_400));
    assert_eq!(engine.balance(&acme).await.unwrap().period.start.to_string(), "2026-04-01T00:00:00Z");
    assert_eq!(engine.balance(&acme).await.unwrap().remaining, 100, "a new month, a new allowance");

    let engine = restart(&engine, &backend, &clock).await;
    assert_eq!(engine.balance(&acme).await.unwrap().remaining, 100);
}

#[tokio::test]
async fn a_late_event_counts_in_its_own_day() {
    let (engine, clock) = engine(&Backend::Memory).await;
    tenant_on(&engine, "acme", Plan::free()).await;
    let yesterday = engine.now();
    clock.advance(Duration::from_secs(86_400));
    for _ in 0..10 {
        assert!(engine.track(call()).await.unwrap().allowed);
    }
    let mut late = call();
    late.timestamp = Some(yesterday);
    assert!(engine.track(late).await.unwrap().allowed, "yesterday's window still had room");
}

#[tokio::test]
async fn a_wipe_waits_for_a_decided_call_to_hand_its_record_on() {
    for backend in Backend::all() {
        let (engine, _clock) = engine(&backend).await;
        let once_a_day = plan("p", 100).with_limit(Limit::new(1, Per::Day).unwrap().max, Per::Day);
        let acme = tenant_on(&engine, "acme", once_a_day).await;
        let decided = engine.decide(call()).await.unwrap();
        assert!(decided.decision().allowed);

        let wipe = tokio::spawn({
            let engine = engine.clone();
            async move { engine.clear_hot().await }
        });
        settle_down().await;
        // Decided after the wipe began: it must see the first call's count, rebuilt from
        // the ledger or not yet wiped.
        let second = tokio::spawn({
            let engine = engine.clone();
            async move { engine.track(call()).await }
        });
        settle_down().await;
        assert!(!wipe.is_finished(), "{backend:?}: the wipe waits for the decided call");

        engine.settle(decided, metering::Outcome::CHARGED).await.unwrap();
        wipe.await.unwrap().unwrap();
        assert_eq!(second.await.unwrap().unwrap().reason, Some(DenyReason::RateLimited), "{backend:?}");
        assert_eq!(engine.balance(&acme).await.unwrap().used, 2, "{backend:?}");
    }
}

/// Lets spawned tasks run until they wait on something.
async fn settle_down() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_track_abandoned_mid_way_is_still_decided_and_recorded() {
    for backend in Backend::all() {
        let (engine, clock) = engine(&backend).await;
        let acme = tenant_on(&engine, "acme", plan("p", 1_000)).await;
        // Each call is polled once and then dropped, wherever it stands: deciding, or
        // waiting for its ledger record to be durable.
        for _ in 0..20 {
            let _ = tokio::time::timeout(Duration::ZERO, engine.track(call())).await;
        }
        all_recorded(&engine, &backend, &clock, &acme).await;
    }
}

#[tokio::test]
async fn a_batch_abandoned_mid_way_is_still_decided_and_recorded() {
    for backend in Backend::all() {
        let (engine, clock) = engine(&backend).await;
        let acme = tenant_on(&engine, "acme", plan("p", 1_000)).await;
        for _ in 0..4 {
            let batch = engine.track_batch((0..5).map(|_| call()).collect());
            let _ = tokio::time::timeout(Duration::ZERO, batch).await;
        }
        all_recorded(&engine, &backend, &clock, &acme).await;
    }
}

/// Waits until the 20 abandoned calls of 2 credits are all in the ledger, then checks that
/// the live counters and the ones rebuilt after a restart match it.
async fn all_recorded(engine: &Engine, backend: &Backend, clock: &metering::ManualClock, acme: &TenantId) {
    let q = metering::core::LedgerQuery { tenant: Some(acme.clone()), ..Default::default() };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        engine.flush().await.unwrap();
        let recorded = engine.ledger_records(&q).await.unwrap().len();
        if recorded == 20 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{backend:?}: only {recorded} of 20 calls recorded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(engine.balance(acme).await.unwrap().used, 40, "{backend:?}: counters match the ledger");
    let engine = restart(engine, backend, clock).await;
    assert_eq!(engine.balance(acme).await.unwrap().used, 40, "{backend:?}: and so do rebuilt ones");
}

/// A balance or grant that finds the tenant's counters gone rebuilds them as a decision
/// does: after the records still queued for the ledger are written, so none is missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balance_after_the_counters_are_lost_counts_records_still_queued() {
    use metering::core::store::{HotStore, MemoryRecords, RecordStore};
    use metering::core::{ManualClock, Outcome};

    let clock = ManualClock::at(common::START);
    let records = Arc::new(MemoryRecords::new());
    let hot = Arc::new(MemoryHot::new());
    let engine =
        engine_over(Arc::clone(&records) as Arc<dyn RecordStore>, Arc::clone(&hot) as Arc<dyn HotStore>, &clock).await;
    let acme = tenant_on(&engine, "acme", Plan::free()).await;
    records.faults().delay(Duration::from_millis(300));
    for _ in 0..3 {
        let ticket = engine.decide(call()).await.unwrap();
        engine.settle_later(ticket, Outcome::CHARGED).await.unwrap();
    }
    hot.clear().await.unwrap();
    assert_eq!(engine.balance(&acme).await.unwrap().used, 6, "the queued records are counted");
    hot.clear().await.unwrap();
    engine.grant(&acme, 1, "goodwill").await.unwrap();
    assert_eq!(engine.balance(&acme).await.unwrap().used, 6);
}
