//! Bytes on disk per ledger record: RECORDS records (default 1,000,000) of a realistic mix
//! (50 tenants, 3 services, 7 endpoints, one `event_id` in ten chosen by the caller, one
//! call in twenty denied) appended to a fresh SQLite file in batches of 1,000, then every
//! file of its directory measured after the store is flushed and closed.
//!
//! `cargo bench --bench ledger_size` (`RECORDS=200000` for a shorter run, `KEEP=1` to keep
//! the files)

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
    let dir = std::env::temp_dir().join(format!("metering-ledger-size-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let start = Timestamp::from_datetime("2026-03-14T12:00:00Z".parse().unwrap());
    let began = Instant::now();
    runtime.block_on(async {
        let store = SqliteRecords::open(dir.join("metering.db")).unwrap();
        let mut i = 0;
        while i < records {
            let batch: Vec<_> = (i..(i + 1_000).min(records)).map(|n| record(n, start)).collect();
            i += batch.len() as u64;
            store.append(batch).await.unwrap();
        }
        store.flush().await.unwrap();
    });
    let took = began.elapsed();
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
