//! Bytes on disk per ledger record: RECORDS records (default 1,000,000) of a realistic mix
//! (50 tenants, 3 services, 7 endpoints, one `event_id` in ten chosen by the caller, one
//! call in twenty denied) appended to a fresh SQLite file in batches of 1,000, then every
//! file of its directory measured after the store is flushed and closed.
//!
//! `cargo bench --bench ledger_size` (`RECORDS=200000` for a shorter run, `KEEP=1` to keep
//! the files)
//!
//! With `STORE=mongodb` (built with `--features mongodb`) the same records go to a fresh
//! database at `MONGODB_URI` (default the test server, `mongodb://127.0.0.1:27117/`), and the
//! ledger collection's `collStats` gives the bytes per record: the documents' BSON, the
//! collection on disk, and its indexes. The database is dropped at the end unless `KEEP`.

use std::time::Instant;

use metering::core::decision::WindowStatus;
use metering::core::event::TimeBounds;
use metering::core::ledger::LedgerRecord;
use metering::core::store::{SqliteRecords, UsageLedger};
use metering::core::{Decision, DenyReason, Per, Timestamp, UsageEvent};

const SERVICES: [&str; 3] = ["notes-api", "search-api", "billing-api"];
const ENDPOINTS: [&str; 7] = ["/notes", "/notes/{id}", "/search", "/users/{id}", "/files", "/files/{id}", "/health"];

fn record(i: u64, start: Timestamp) -> LedgerRecord {
    let now = Timestamp::from_micros(start.as_micros() + (i * 1_000) as i64);
    let mut raw = UsageEvent::new(
        format!("tenant-{:02}", (i * 7919) % 50),
        SERVICES[(i % 3) as usize],
        ENDPOINTS[((i / 3) % 7) as usize],
        ["GET", "POST"][(i % 2) as usize],
    )
    .with_credits(1 + (i % 3) as i64);
    if i.is_multiple_of(10) {
        raw = raw.with_event_id(format!("order-{i:012}"));
    }
    let event = raw.validate_at(now, &TimeBounds::default()).expect("a valid event");
    let denied = i % 20 == 19;
    let decision = Decision {
        event_id: event.event_id.clone(),
        allowed: !denied,
        reason: denied.then_some(DenyReason::RateLimited),
        credits_charged: if denied { 0 } else { event.credits_used },
        credits_remaining: 50_000 - (i % 50_000) as i64,
        limits: vec![WindowStatus { window: Per::Minute, limit: 600, remaining: 599 - (i % 600) as u32, reset: 60 }],
        retry_after: denied.then_some(1),
    };
    LedgerRecord {
        event,
        decided_at: now,
        decision,
        status: (!denied).then_some(200),
        counted: !denied,
        fail_open: false,
    }
}

fn main() {
    let records: u64 = std::env::var("RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    match std::env::var("STORE").as_deref() {
        Ok("mongodb") => mongodb::measure(&runtime, records),
        Ok("sqlite") | Err(_) => sqlite(&runtime, records),
        Ok(other) => panic!("STORE must be sqlite or mongodb, not {other}"),
    }
}

/// Appends `records` records to `store` in batches of 1,000; answers how long it took.
fn append_all(runtime: &tokio::runtime::Runtime, store: &impl UsageLedger, records: u64) -> std::time::Duration {
    let start = Timestamp::from_datetime("2026-03-14T12:00:00Z".parse().unwrap());
    let began = Instant::now();
    runtime.block_on(async {
        let mut i = 0;
        while i < records {
            let batch: Vec<_> = (i..(i + 1_000).min(records)).map(|n| record(n, start)).collect();
            i += batch.len() as u64;
            store.append(batch).await.unwrap();
        }
        store.flush().await.unwrap();
    });
    began.elapsed()
}

fn sqlite(runtime: &tokio::runtime::Runtime, records: u64) {
    let dir = std::env::temp_dir().join(format!("metering-ledger-size-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let took = {
        let store = SqliteRecords::open(dir.join("metering.db")).unwrap();
        append_all(runtime, &store, records)
    };
    let mut files: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().map(|m| m.len()).unwrap_or(0)))
        .collect();
    files.sort();
    for (name, len) in &files {
        println!("  {name:<28} {len:>12} bytes  {:>6.1} per record", *len as f64 / records as f64);
    }
    let bytes: u64 = files.iter().map(|(_, len)| len).sum();
    println!(
        "{records} records: {bytes} bytes on disk, {:.1} bytes per record; written in {:.1} s ({:.0} records/s)",
        bytes as f64 / records as f64,
        took.as_secs_f64(),
        records as f64 / took.as_secs_f64()
    );
    if std::env::var_os("KEEP").is_some() {
        println!("kept in {}", dir.display());
    } else {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(feature = "mongodb")]
mod mongodb {
    use metering::core::store::{MongoOptions, MongoRecords};

    /// Appends the records to a fresh database and prints `collStats`' figures per record.
    pub(super) fn measure(runtime: &tokio::runtime::Runtime, records: u64) {
        let uri =
            std::env::var("MONGODB_URI").unwrap_or_else(|_| "mongodb://127.0.0.1:27117/?directConnection=true".into());
        let database = format!("metering_ledger_size_{}", std::process::id());
        // The test server scans the collection for its statistics: give it time.
        let options =
            MongoOptions { timeout: std::time::Duration::from_secs(300), ..MongoOptions::new(uri, database.clone()) };
        let store = runtime.block_on(MongoRecords::connect(options)).expect("a MongoDB at MONGODB_URI");
        let took = super::append_all(runtime, &store, records);
        let stats = runtime.block_on(store.storage_stats()).unwrap();
        assert_eq!(stats.records, records, "every record stored once");
        let per = |bytes: u64| bytes as f64 / records as f64;
        println!("  documents (BSON)  {:>12} bytes  {:>6.1} per record", stats.data_bytes, per(stats.data_bytes));
        println!("  collection        {:>12} bytes  {:>6.1} per record", stats.storage_bytes, per(stats.storage_bytes));
        println!(
            "  indexes ({})       {:>12} bytes  {:>6.1} per record",
            stats.indexes,
            stats.index_bytes,
            per(stats.index_bytes)
        );
        println!(
            "{records} records: {:.1} bytes per record on disk (collection and indexes); written in {:.1} s ({:.0} records/s)",
            per(stats.storage_bytes + stats.index_bytes),
            took.as_secs_f64(),
            records as f64 / took.as_secs_f64()
        );
        if std::env::var_os("KEEP").is_some() {
            println!("kept in database {database}");
        } else {
            runtime.block_on(store.drop_database()).unwrap();
        }
    }
}

#[cfg(not(feature = "mongodb"))]
mod mongodb {
    /// Without the feature there is no MongoDB store to measure.
    pub(super) fn measure(_: &tokio::runtime::Runtime, _: u64) {
        panic!("STORE=mongodb needs `--features mongodb`");
    }
}
