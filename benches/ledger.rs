//! Appending to the usage ledger: a SQLite file beside the in-memory baseline.
//!
//! `cargo bench --bench ledger -- --warm-up-time 1 --measurement-time 3`
//!
//! Subjects, each beside a baseline in the same run:
//! - `sqlite_file`: [`SqliteRecords`] on a file in the temp dir, the embedded default: an
//!   `append` writes and syncs the ledger journal (one `fdatasync`), and full segments are
//!   moved into ledger blocks in the background (WAL, `synchronous = FULL`). The
//!   time of a sample ends with a `flush`, so it includes indexing every record it appended;
//! - `memory`: [`MemoryRecords`], the floor of what storing a record costs;
//! - `sqlite_file_uniform`: every record of a batch from another tenant (see "Tenants"
//!   below);
//! - `sqlite_file_keyed`: records whose `event_id` the caller chose, each of which the
//!   store also keeps a key entry for (the others have engine-generated UUIDv7 ids).
//!
//! Each appends batches of 1, 100 and 1,000 fresh records per `UsageLedger::append` (the
//! batches group commit hands the store: 1 when idle, up to 1,024 under load). Throughput
//! is in elements, so criterion prints recorded events per second. Only the `append`s
//! and the closing `flush` are timed; building the records (a validated event with a UUIDv7 id and a decision
//! with one window, a clock moving 1 ms per record) is not. The target is 50,000 events/s
//! batched.
//!
//! # Tenants
//!
//! Records come from 1,000 tenants. By default the mix is skewed as real traffic is: the
//! tenant of rank `r` makes a share of calls proportional to about `1 / r` (the busiest
//! makes 14%, the ten busiest 42%). Indexing writes a block per distinct tenant in a
//! transaction, so the uniform mix makes the most, smallest blocks.
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use metering::core::decision::WindowStatus;
use metering::core::event::TimeBounds;
use metering::core::ledger::LedgerRecord;
use metering::core::store::MemoryRecords;
use metering::core::store::RecordStore;
use metering::core::store::SqliteRecords;
use metering::core::{Decision, DenyReason, Per, Timestamp, UsageEvent};
use tokio::runtime::Runtime;

const BATCHES: [usize; 3] = [1, 100, 1_000];
const TENANTS: u64 = 1_000;

/// How the records of a run are spread over the tenants.
#[derive(Clone, Copy)]
enum Mix {
    /// The tenant of rank `r` makes a share of about `1 / r`.
    Skewed,
    /// Round robin: consecutive records, consecutive tenants.
    Uniform,
}
/// The memory baseline starts afresh past this many records, to stay small.
const MEMORY_CAP: u64 = 500_000;

/// Makes realistic, never-repeating ledger records on a clock that moves 1 ms per record.
struct Records {
    start: Timestamp,
    made: u64,
    mix: Mix,
    /// Whether each record carries an `event_id` of the caller's.
    keyed: bool,
}

impl Records {
    fn new(mix: Mix) -> Self {
        let start = Timestamp::from_datetime("2026-03-14T12:00:00Z".parse().expect("instant"));
        Records { start, made: 0, mix, keyed: false }
    }

    fn keyed(mix: Mix) -> Self {
        Records { keyed: true, ..Self::new(mix) }
    }

    /// The tenant of the `i`th record.
    fn tenant(&self, i: u64) -> u64 {
        match self.mix {
            Mix::Uniform => i % TENANTS,
            Mix::Skewed => {
                // A fixed pseudo-random fraction u in [0, 1) (SplitMix64 of i); TENANTS^u
                // is log-uniform, which gives rank r a share of ln((r + 1) / r) ~ 1 / r.
                let mut z = i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                let u = ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64;
                ((TENANTS as f64).powf(u) as u64).clamp(1, TENANTS) - 1
            }
        }
    }

    fn next(&mut self) -> LedgerRecord {
        let i = self.made;
        self.made += 1;
        let now = Timestamp::from_micros(self.start.as_micros() + (i * 1_000) as i64);
        let endpoint = ["/notes", "/notes/{id}", "/search"][(i % 3) as usize];
        let mut raw = UsageEvent::new(format!("tenant-{:04}", self.tenant(i)), "notes-api", endpoint, "GET")
            .with_credits(1 + (i % 3) as i64);
        if self.keyed {
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
            limits: vec![WindowStatus {
                window: Per::Minute,
                limit: 600,
                remaining: 599 - (i % 600) as u32,
                reset: 60,
            }],
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

    fn batch(&mut self, n: usize) -> Vec<LedgerRecord> {
        (0..n).map(|_| self.next()).collect()
    }
}

/// A database file in the temp dir, removed (with its WAL files) on drop.
struct TempDb(PathBuf);

impl TempDb {
    fn new(name: &str) -> Self {
        let db = TempDb(std::env::temp_dir().join(format!("metering-bench-{}-{name}.db", std::process::id())));
        db.remove();
        db
    }

    fn remove(&self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
        // The ledger journal's segments and lock: `<file>-ledger-*`.
        let prefix = format!("{}-ledger-", self.0.file_name().and_then(|n| n.to_str()).expect("a file name"));
        for entry in std::fs::read_dir(std::env::temp_dir()).into_iter().flatten().flatten() {
            if entry.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Times `iters` appends of `n` fresh records each and a closing `flush`; building the
/// records does not count.
fn time_appends(rt: &Runtime, store: &dyn RecordStore, records: &mut Records, n: usize, iters: u64) -> Duration {
    let mut spent = Duration::ZERO;
    for _ in 0..iters {
        let batch = records.batch(n);
        let start = Instant::now();
        let out = rt.block_on(store.append(batch)).expect("append");
        spent += start.elapsed();
        assert_eq!(out.len(), n);
    }
    let start = Instant::now();
    rt.block_on(store.flush()).expect("flush");
    spent + start.elapsed()
}

fn ledger_append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let mut records = Records::new(Mix::Skewed);
    let mut group = c.benchmark_group("ledger_append");
    group.sample_size(20).sampling_mode(SamplingMode::Flat);
    for n in BATCHES {
        group.throughput(Throughput::Elements(n as u64));

        let file = TempDb::new(&format!("batch-{n}"));
        let sqlite = SqliteRecords::open(&file.0).expect("open sqlite");
        group.bench_with_input(BenchmarkId::new("sqlite_file", n), &n, |b, &n| {
            b.iter_custom(|iters| time_appends(&rt, &sqlite, &mut records, n, iters));
        });
        drop(sqlite);
        drop(file);

        let mut memory = MemoryRecords::new();
        let mut held = 0;
        group.bench_with_input(BenchmarkId::new("memory", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                if held + iters * n as u64 > MEMORY_CAP {
                    memory = MemoryRecords::new();
                    held = 0;
                }
                held += iters * n as u64;
                time_appends(&rt, &memory, &mut records, n, iters)
            });
        });
    }

    let n = 1_000;
    group.throughput(Throughput::Elements(n as u64));
    let mut uniform = Records::new(Mix::Uniform);
    let file = TempDb::new("uniform");
    let sqlite = SqliteRecords::open(&file.0).expect("open sqlite");
    group.bench_with_input(BenchmarkId::new("sqlite_file_uniform", n), &n, |b, &n| {
        b.iter_custom(|iters| time_appends(&rt, &sqlite, &mut uniform, n, iters));
    });
    drop(sqlite);
    drop(file);

    let mut keyed = Records::keyed(Mix::Skewed);
    let file = TempDb::new("keyed");
    let sqlite = SqliteRecords::open(&file.0).expect("open sqlite");
    group.bench_with_input(BenchmarkId::new("sqlite_file_keyed", n), &n, |b, &n| {
        b.iter_custom(|iters| time_appends(&rt, &sqlite, &mut keyed, n, iters));
    });
    group.finish();
}

criterion_group!(benches, ledger_append);
criterion_main!(benches);
