//! Engines sharing Redis keep every promise: exact quotas and balances across engines,
//! no `event_id` charged twice, counters rebuilt exactly after Redis forgets them, and
//! answers within the timeout while Redis cannot answer.
//!
//! `cargo test --features redis --test redis_shared` (needs Redis on 127.0.0.1:6379 and
//! `redis-server` installed for the private servers)

#![cfg(feature = "redis")]

mod common;
#[path = "support/redis_servers.rs"]
mod redis_servers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{START, engine_over, plan, tenant_on};
use metering::core::ledger::{LedgerQuery, TimeBasis};
use metering::core::store::{HotStore, MemoryRecords, RecordStore, RedisHot, RedisOptions};
use metering::core::{Error, Limit, ManualClock, Per};
use metering::core::{FailurePolicy, GroupCommit};
use metering::{Engine, UsageEvent};
use redis_servers::{RedisServer, shared_store, store_at};

/// Sends `calls` tracks for `tenant` spread over `engines`, `copies` times each id (one
/// copy per engine in turn); returns how many distinct ids were admitted.
async fn hammer(engines: &[Engine], tenant: &str, round: &str, calls: usize, copies: usize) -> usize {
    let mut handles = Vec::new();
    for i in 0..calls {
        for copy in 0..copies {
            let engine = engines[(i + copy) % engines.len()].clone();
            let event = UsageEvent::new(tenant, "svc", "/shared", "POST").with_event_id(format!("{round}-{i}"));
            handles.push(tokio::spawn(async move { (i, engine.track(event).await) }));
        }
    }
    let mut admitted = std::collections::BTreeSet::new();
    for h in handles {
        let (i, answer) = h.await.unwrap();
        if answer.unwrap().allowed {
            admitted.insert(i);
        }
    }
    admitted.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_with_their_own_clients_admit_exactly_the_quota_between_them() {
    let clock = ManualClock::at(START);
    let records: Arc<dyn RecordStore> = Arc::new(MemoryRecords::new());
    let mut engines = Vec::new();
    for _ in 0..2 {
        let hot: Arc<dyn HotStore> = Arc::new(shared_store("two-engines").await);
        engines.push(engine_over(Arc::clone(&records), hot, &clock).await);
    }
    let quota = plan("forty-a-day", 30).with_limit(Limit::new(40, Per::Day).unwrap().max, Per::Day);
    let tenant = tenant_on(&engines[0], "shared-quota", quota).await;

    // 300 ids, each sent twice (once to each engine): 30 credits admit exactly 30 ids.
    assert_eq!(hammer(&engines, "shared-quota", "call", 300, 2).await, 30);
    for engine in &engines {
        let balance = engine.balance(&tenant).await.unwrap();
        assert_eq!((balance.used, balance.remaining), (30, 0), "both engines see the one balance");
    }
    engines[0].flush().await.unwrap();
    let (start, end) = Per::Day.window_containing(engines[0].now());
    let ledger = records.usage_totals(&tenant, TimeBasis::Event, start, end).await.unwrap();
    assert_eq!((ledger.calls, ledger.credits), (30, 30), "each admitted id recorded and charged once");
    shared_store("two-engines").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_flushed_away_mid_run_are_rebuilt_exactly() {
    let server = RedisServer::start();
    let clock = ManualClock::at(START);
    let records: Arc<dyn RecordStore> = Arc::new(MemoryRecords::new());
    let hot: Arc<dyn HotStore> = Arc::new(store_at(&server.url(), "flush").await);
    let engine = engine_over(Arc::clone(&records), hot, &clock).await;
    let quota = plan("fifty-a-day", 1_000).with_limit(Limit::new(50, Per::Day).unwrap().max, Per::Day);
    let tenant = tenant_on(&engine, "flushed", quota).await;

    let first = hammer(std::slice::from_ref(&engine), "flushed", "first", 30, 1).await;
    assert_eq!(first, 30);
    let engines = [engine.clone()];
    let rest = tokio::spawn(async move { hammer(&engines, "flushed", "second", 100, 1).await });
    assert_eq!(server.cli(&["flushall"]).trim(), "OK");
    let second = rest.await.unwrap();
    assert_eq!(first + second, 50, "not one call more than the quota, FLUSHALL or not");
    let balance = engine.balance(&tenant).await.unwrap();
    assert_eq!(balance.used, 50, "the balance is rebuilt exactly");
}

/// An engine on a private server with a short timeout, failing closed.
async fn engine_on(server: &RedisServer, clock: &ManualClock) -> (Engine, Arc<dyn RecordStore>) {
    engine_failing(server, clock, FailurePolicy::Closed).await
}

async fn engine_failing(
    server: &RedisServer,
    clock: &ManualClock,
    policy: FailurePolicy,
) -> (Engine, Arc<dyn RecordStore>) {
    let records: Arc<dyn RecordStore> = Arc::new(MemoryRecords::new());
    let options =
        RedisOptions { prefix: "outage".into(), timeout: Duration::from_millis(50), ..RedisOptions::new(server.url()) };
    let hot: Arc<dyn HotStore> = Arc::new(RedisHot::connect(options).await.unwrap());
    let engine = Engine::builder(Arc::clone(&records), hot)
        .clock(clock.clone())
        .group_commit(GroupCommit::default())
        .hot_failure(policy)
        .build()
        .unwrap();
    engine.seed_plans().await.unwrap();
    (engine, records)
}

/// Tracks one call, and how long the answer took.
async fn timed(engine: &Engine, id: &str) -> (Result<bool, Error>, Duration) {
    let started = Instant::now();
    let answer = engine.track(UsageEvent::new("outage", "svc", "/o", "GET").with_event_id(id)).await;
    (answer.map(|d| d.allowed), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_is_answered_unavailable_in_time_and_service_resumes() {
    let server = RedisServer::start();
    let clock = ManualClock::at(START);
    let (engine, _records) = engine_on(&server, &clock).await;
    let tenant = tenant_on(&engine, "outage", plan("ten", 10)).await;
    assert!(timed(&engine, "before").await.0.unwrap());

    server.pause(1_500);
    let (answer, took) = timed(&engine, "paused").await;
    assert!(matches!(answer, Err(Error::Unavailable(_))), "{answer:?}");
    println!("answered {took:?} into a paused Redis (timeout 50 ms)");
    assert!(took < Duration::from_millis(1_000), "the timeout bounds the wait, not the pause ({took:?})");

    let mut resumed = None;
    for attempt in 0..200 {
        match timed(&engine, &format!("after-{attempt}")).await {
            (Ok(true), _) => {
                resumed = Some(attempt);
                break;
            }
            other => println!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(resumed.is_some(), "service resumes by itself once Redis answers");
    engine.flush().await.unwrap();
    // Whatever the paused Redis ran late is forgotten: the balance is the ledger's.
    let balance = engine.balance(&tenant).await.unwrap();
    assert_eq!(balance.used, 2, "only the two admitted calls are charged: {balance:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_redis_is_answered_unavailable_and_a_restarted_one_is_rebuilt_from_the_ledger() {
    let mut server = RedisServer::start();
    let clock = ManualClock::at(START);
    let (engine, _records) = engine_on(&server, &clock).await;
    let tenant = tenant_on(&engine, "outage", plan("ten", 10)).await;
    for i in 0..4 {
        assert!(timed(&engine, &format!("before-{i}")).await.0.unwrap());
    }

    server.kill();
    let (answer, took) = timed(&engine, "down").await;
    assert!(matches!(answer, Err(Error::Unavailable(_))), "{answer:?}");
    println!("answered {took:?} with Redis down (timeout 50 ms)");
    assert!(took < Duration::from_millis(1_000), "{took:?}");

    server.restart();
    let mut admitted = 0;
    for attempt in 0..400 {
        match timed(&engine, &format!("after-{attempt}")).await.0 {
            Ok(true) => admitted += 1,
            Ok(false) => break,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert_eq!(admitted, 6, "the empty Redis was rebuilt from the ledger: 4 used, 6 left");
    assert_eq!(engine.balance(&tenant).await.unwrap().used, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_open_admits_marks_the_records_and_the_rebuild_counts_them() {
    let mut server = RedisServer::start();
    let clock = ManualClock::at(START);
    let (engine, records) = engine_failing(&server, &clock, FailurePolicy::Open).await;
    let tenant = tenant_on(&engine, "outage", plan("ten", 10)).await;
    for i in 0..3 {
        assert!(timed(&engine, &format!("before-{i}")).await.0.unwrap());
    }

    server.kill();
    for i in 0..2 {
        let (answer, took) = timed(&engine, &format!("down-{i}")).await;
        assert!(answer.unwrap(), "admitted while Redis is down");
        assert!(took < Duration::from_millis(1_000), "{took:?}");
    }
    assert_eq!(engine.fail_open_admissions(), 2);
    engine.flush().await.unwrap();
    let marked = records
        .records(&LedgerQuery { tenant: Some(tenant.clone()), limit: 100, ..LedgerQuery::default() })
        .await
        .unwrap();
    assert_eq!(marked.iter().filter(|r| r.fail_open).count(), 2, "both recorded with the mark");

    // Back, but empty, and the engine rebuilds before deciding: 3 + 2 used, 5 left.
    server.restart();
    let mut admitted = 0;
    for attempt in 0..400 {
        match timed(&engine, &format!("after-{attempt}")).await.0 {
            Ok(true) => admitted += 1,
            Ok(false) => break,
            Err(e) => panic!("failing open never answers an error: {e}"),
        }
    }
    assert_eq!(admitted, 5, "the fail-open calls were counted by the rebuild");
    assert_eq!(engine.balance(&tenant).await.unwrap().used, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_calls_finding_a_tenant_absent_rebuild_it_once() {
    let clock = ManualClock::at(START);
    let records: Arc<dyn RecordStore> = Arc::new(MemoryRecords::new());
    let hot: Arc<dyn HotStore> = Arc::new(shared_store("rebuild-once").await);
    let engine = engine_over(Arc::clone(&records), Arc::clone(&hot), &clock).await;
    let tenant = tenant_on(&engine, "rebuilt-once", plan("plenty", 1_000)).await;
    assert_eq!(hammer(std::slice::from_ref(&engine), "rebuilt-once", "first", 20, 1).await, 20);
    assert_eq!(engine.rebuilds(), 1, "the tenant's first use");

    hot.clear().await.unwrap();
    assert_eq!(hammer(std::slice::from_ref(&engine), "rebuilt-once", "second", 200, 1).await, 200);
    assert_eq!(engine.rebuilds(), 2, "200 calls found it absent together; one rebuilt it");
    assert_eq!(engine.balance(&tenant).await.unwrap().used, 220);
    hot.clear().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_flushed_from_redis_are_loaded_again() {
    let server = RedisServer::start();
    let clock = ManualClock::at(START);
    let (engine, _records) = engine_on(&server, &clock).await;
    let tenant = tenant_on(&engine, "outage", plan("ten", 10)).await;
    assert!(timed(&engine, "before").await.0.unwrap());
    assert_eq!(server.cli(&["script", "flush"]).trim(), "OK");
    assert!(timed(&engine, "after").await.0.unwrap(), "NOSCRIPT answered by loading the script again");
    assert_eq!(engine.balance(&tenant).await.unwrap().used, 2);
}
