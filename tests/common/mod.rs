//! Shared setup for the promise tests: engines over every backend, on a manual clock.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use metering::core::store::SqliteRecords;
use metering::core::store::{HotStore, RecordStore};
use metering::core::store::{MemoryHot, MemoryRecords};
use metering::core::{Engine, EngineBuilder, GroupCommit, ManualClock, Plan, PlanId, Tenant, TenantId};

/// The instant every test starts at: mid-month, mid-day, so no window is about to roll.
pub const START: &str = "2026-03-14T12:00:00Z";

/// A durable backend the promise tests run against.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Records and counters in memory.
    Memory,
    /// Records in a SQLite file (group commit), counters in memory.
    Sqlite(PathBuf),
}

impl Backend {
    /// Every backend, each with fresh storage.
    pub fn all() -> Vec<Backend> {
        vec![Backend::Memory, Backend::Sqlite(temp_db())]
    }

    /// The durable store of this backend (a file-backed one reopens the same file).
    pub fn records(&self) -> Arc<dyn RecordStore> {
        match self {
            Backend::Memory => Arc::new(MemoryRecords::new()),
            Backend::Sqlite(path) => Arc::new(SqliteRecords::open(path).expect("open sqlite")),
        }
    }
}

impl Backend {
    /// Deletes the files of a file-backed backend: the database, its WAL, and its journal.
    pub fn remove_files(&self) {
        let Backend::Sqlite(path) = self else { return };
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let Ok(entries) = std::fs::read_dir(path.parent().expect("a parent")) else { return };
        for entry in entries.flatten() {
            if entry.file_name().to_str().is_some_and(|n| n == name || n.starts_with(&format!("{name}-"))) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// A unique SQLite file path under the system temp dir.
pub fn temp_db() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join("metering-tests");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{}-{}.db", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}

/// An engine over `records` and `hot`, seeded plans, on `clock`.
pub async fn engine_over(records: Arc<dyn RecordStore>, hot: Arc<dyn HotStore>, clock: &ManualClock) -> Engine {
    let engine =
        Engine::builder(records, hot).clock(clock.clone()).group_commit(GroupCommit::default()).build().unwrap();
    engine.seed_plans().await.unwrap();
    engine
}

/// A fresh engine on `backend` with the seeded plans.
pub async fn engine(backend: &Backend) -> (Engine, ManualClock) {
    let clock = ManualClock::at(START);
    let engine = engine_over(backend.records(), Arc::new(MemoryHot::new()), &clock).await;
    (engine, clock)
}

/// Stores `plan` and creates tenant `id` on it.
pub async fn tenant_on(engine: &Engine, id: &str, plan: Plan) -> TenantId {
    engine.put_plan(&plan).await.unwrap();
    let id = TenantId::new(id).unwrap();
    engine.create_tenant(&Tenant::new(id.clone(), plan.id.clone(), engine.now())).await.unwrap();
    id
}

/// A plan `id` with `credits` a month and no windows.
pub fn plan(id: &str, credits: u64) -> Plan {
    Plan::new(PlanId::new(id).unwrap(), credits)
}

/// How a running [`Instance`] stops before it starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Flushes the ledger first, as the server does on SIGTERM.
    Graceful,
    /// Stops without flushing: the journal is left as a killed process leaves it.
    Crash,
}

/// An engine over a backend's storage that can be stopped and started again on it: the
/// records survive, the hot counters start empty.
pub struct Instance {
    /// The running engine.
    pub engine: Engine,
    records: Arc<dyn RecordStore>,
    backend: Backend,
    clock: ManualClock,
    configure: fn(EngineBuilder) -> EngineBuilder,
}

impl Instance {
    /// Starts on fresh storage of `backend`, the engine built as `configure` says.
    pub async fn start(backend: &Backend, clock: &ManualClock, configure: fn(EngineBuilder) -> EngineBuilder) -> Self {
        Self::on(backend.records(), backend.clone(), clock.clone(), configure).await
    }

    async fn on(
        records: Arc<dyn RecordStore>,
        backend: Backend,
        clock: ManualClock,
        configure: fn(EngineBuilder) -> EngineBuilder,
    ) -> Self {
        let builder = Engine::builder(Arc::clone(&records), Arc::new(MemoryHot::new()))
            .clock(clock.clone())
            .group_commit(GroupCommit::default());
        let engine = configure(builder).build().unwrap();
        engine.seed_plans().await.unwrap();
        Instance { engine, records, backend, clock, configure }
    }

    /// Stops as `stop` says and starts again on the same storage.
    pub async fn restart(self, stop: Stop) -> Self {
        let Instance { engine, records, backend, clock, configure } = self;
        if stop == Stop::Graceful {
            engine.flush().await.unwrap();
        }
        drop(engine);
        let records = match backend {
            Backend::Memory => records,
            Backend::Sqlite(_) => {
                // The group-commit writer lets go of the store once it sees the engine gone.
                for _ in 0..10_000 {
                    if Arc::strong_count(&records) == 1 {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                assert_eq!(Arc::strong_count(&records), 1, "the stopped engine still holds the store");
                drop(records);
                backend.records()
            }
        };
        Self::on(records, backend, clock, configure).await
    }
}
