//! What the conformance suite cannot say of MongoDB alone: the retention's TTL index
//! follows the setting, an unreachable server answers `Unavailable`, and one event sent
//! through two engines at once is stored once, both engines answering its one decision.
//!
//! `cargo test --features mongodb --test mongodb_store` (needs the MongoDB test server:
//! `scripts/mongodb-test-server.sh start 27117`, or `METERING_TEST_MONGODB_URI`)

#![cfg(feature = "mongodb")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{START, engine_over, plan, tenant_on};
use metering::UsageEvent;
use metering::core::ledger::TimeBasis;
use metering::core::store::{MemoryHot, MongoOptions, MongoRecords, RecordStore};
use metering::core::{Error, ManualClock, Timestamp};

fn uri() -> String {
    std::env::var("METERING_TEST_MONGODB_URI")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27117/?directConnection=true".to_owned())
}

fn database(name: &str) -> String {
    format!("store_{name}_{}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_index_follows_the_setting() {
    let db = database("retention");
    let open = |retention: Option<Duration>| {
        let options = MongoOptions { ledger_retention: retention, ..MongoOptions::new(uri(), db.clone()) };
        MongoRecords::connect(options)
    };
    let without = open(None).await.unwrap().storage_stats().await.unwrap().indexes;
    let with = open(Some(Duration::from_secs(400 * 86_400))).await.unwrap();
    assert_eq!(with.storage_stats().await.unwrap().indexes, without + 1, "a TTL index for the retention");
    let changed = open(Some(Duration::from_secs(62 * 86_400))).await.unwrap();
    assert_eq!(changed.storage_stats().await.unwrap().indexes, without + 1, "a changed retention, the same index");
    let none = open(None).await.unwrap();
    assert_eq!(none.storage_stats().await.unwrap().indexes, without, "no retention, no TTL index");
    none.drop_database().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_answers_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let options = MongoOptions {
        timeout: Duration::from_millis(300),
        ..MongoOptions::new(format!("mongodb://127.0.0.1:{port}/?directConnection=true"), "nowhere")
    };
    match MongoRecords::connect(options).await {
        Err(Error::Unavailable(message)) => assert!(message.to_lowercase().contains("mongodb"), "{message}"),
        Err(other) => panic!("expected Unavailable, got {other}"),
        Ok(_) => panic!("connected to a closed port"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_through_two_engines_at_once_is_stored_once() {
    let db = database("twice");
    let records: Arc<dyn RecordStore> =
        Arc::new(MongoRecords::connect(MongoOptions::new(uri(), db.clone())).await.unwrap());
    let other: Arc<dyn RecordStore> =
        Arc::new(MongoRecords::connect(MongoOptions::new(uri(), db.clone())).await.unwrap());
    let clock = ManualClock::at(START);
    let a = engine_over(Arc::clone(&records), Arc::new(MemoryHot::new()), &clock).await;
    let b = engine_over(other, Arc::new(MemoryHot::new()), &clock).await;
    let tenant = tenant_on(&a, "twice", plan("twice-plan", 1_000)).await;
    for i in 0..20 {
        let event = || UsageEvent::new("twice", "svc", "/twice", "POST").with_event_id(format!("same-{i}"));
        let (x, y) = tokio::join!(a.track(event()), b.track(event()));
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!(x, y, "both engines answer the one stored decision");
    }
    let far = Timestamp::from_secs(4_000_000_000);
    let totals = records.usage_totals(&tenant, TimeBasis::Event, Timestamp::EPOCH, far).await.unwrap();
    assert_eq!(totals.calls, 20, "each event stored once");
    MongoRecords::connect(MongoOptions::new(uri(), db)).await.unwrap().drop_database().await.unwrap();
}
