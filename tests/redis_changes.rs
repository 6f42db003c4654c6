//! Engines sharing Redis hear of each other's changes at once: a tenant suspended or a
//! plan changed through one engine applies to the next decision of every other, though
//! their caches would trust what they hold for far longer; and an announcement lost while
//! a subscriber reconnects is made up for by dropping everything cached.
//!
//! The engines' clock never moves here, so no cached policy ever expires: only an
//! announcement can make an engine read the records again.
//!
//! `cargo test --features redis --test redis_changes` (needs Redis on 127.0.0.1:6379 and
//! `redis-server` installed for the private server)

#![cfg(feature = "redis")]

mod common;
#[path = "support/redis_servers.rs"]
mod redis_servers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{START, engine_over, plan, tenant_on};
use metering::core::store::{HotStore, MemoryRecords, RecordStore};
use metering::core::tenant::TenantStatus;
use metering::core::{Change, DenyReason, ManualClock, TenantId};
use metering::{Engine, UsageEvent};
use redis_servers::{RedisServer, shared_store, store_at};

/// How long an announcement may take to arrive before the test gives up (it takes
/// milliseconds; the bound only keeps a broken build from hanging).
const PATIENCE: Duration = Duration::from_secs(10);

/// Tracks calls on `engine` until one is denied for `reason`; panics after [`PATIENCE`].
async fn until_denied(engine: &Engine, tenant: &TenantId, reason: DenyReason) {
    let deadline = Instant::now() + PATIENCE;
    let mut n = 0;
    loop {
        n += 1;
        let event = UsageEvent::new(tenant.as_str(), "svc", "/changes", "GET").with_event_id(format!("wait-{n}"));
        if engine.track(event).await.unwrap().reason == Some(reason) {
            return;
        }
        assert!(Instant::now() < deadline, "the change never reached the other engine");
        tokio::task::yield_now().await;
    }
}

async fn pair(hot: [Arc<dyn HotStore>; 2]) -> (Engine, Engine, Arc<dyn RecordStore>, ManualClock) {
    let clock = ManualClock::at(START);
    let records: Arc<dyn RecordStore> = Arc::new(MemoryRecords::new());
    let [a, b] = hot;
    let a = engine_over(Arc::clone(&records), a, &clock).await;
    let b = engine_over(Arc::clone(&records), b, &clock).await;
    (a, b, records, clock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspension_and_a_plan_change_through_one_engine_apply_at_once_on_the_other() {
    let (a, b, _records, _clock) =
        pair([Arc::new(shared_store("changes").await), Arc::new(shared_store("changes").await)]).await;
    let tenant = tenant_on(&a, "announced", plan("announced-plan", 100)).await;
    let first = UsageEvent::new("announced", "svc", "/changes", "GET").with_event_id("first");
    assert!(b.track(first).await.unwrap().allowed, "b caches the tenant's policy");

    a.set_status(&tenant, TenantStatus::Suspended).await.unwrap();
    until_denied(&b, &tenant, DenyReason::TenantSuspended).await;

    a.set_status(&tenant, TenantStatus::Active).await.unwrap();
    a.put_plan(&plan("announced-plan", 1)).await.unwrap();
    until_denied(&b, &tenant, DenyReason::InsufficientCredits).await;
    assert_eq!(b.balance(&tenant).await.unwrap().allowance, 1, "b reads the plan as changed");
    assert_eq!((a.unannounced_changes(), b.unannounced_changes()), (0, 0));
    shared_store("changes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_announced_while_a_subscriber_was_away_is_made_up_for_when_it_returns() {
    let server = RedisServer::start();
    let (a, b, records, _clock) =
        pair([Arc::new(store_at(&server.url(), "away").await), Arc::new(store_at(&server.url(), "away").await)]).await;
    let mut heard = b.changes();
    let tenant = tenant_on(&a, "missed", plan("missed-plan", 100)).await;
    // The plan's announcement reaches b before b caches anything.
    while heard.recv().await.unwrap() != Change::Plans {}
    let first = UsageEvent::new("missed", "svc", "/changes", "GET").with_event_id("first");
    assert!(b.track(first).await.unwrap().allowed, "b caches the tenant's policy");

    // A change whose announcement never reaches b: written to the records directly.
    let mut suspended = records.tenant(&tenant).await.unwrap().unwrap();
    suspended.status = TenantStatus::Suspended;
    records.update_tenant(&suspended).await.unwrap();
    let cached = UsageEvent::new("missed", "svc", "/changes", "GET").with_event_id("cached");
    assert!(b.track(cached).await.unwrap().allowed, "b still trusts what it cached");

    // Every subscriber loses its connection, reconnects and drops what it cached.
    server.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    until_denied(&b, &tenant, DenyReason::TenantSuspended).await;
    until_denied(&a, &tenant, DenyReason::TenantSuspended).await;
}
