//! What the handlers share.

use std::sync::Arc;

use metering_core::store::memory::MemoryHot;
use metering_core::store::sqlite::SqliteRecords;
use metering_core::{Engine, GroupCommit};

use crate::Settings;

/// The server's shared state: the engine (and through it the stores) and the settings.
#[derive(Clone)]
pub struct AppState {
    pub(crate) engine: Engine,
    pub(crate) settings: Arc<Settings>,
}

impl AppState {
    /// Opens the embedded default: `<data_dir>/metering.db` and in-memory counters, with
    /// the seeded plans.
    pub async fn open(settings: Settings) -> Result<Self, metering_core::Error> {
        std::fs::create_dir_all(&settings.data_dir)
            .map_err(|e| metering_core::Error::Unavailable(format!("data dir {}: {e}", settings.data_dir.display())))?;
        let records = SqliteRecords::open(settings.data_dir.join("metering.db"))?;
        let engine = Engine::builder(Arc::new(records), Arc::new(MemoryHot::new()))
            .group_commit(GroupCommit::default())
            .build()?;
        Self::with_engine(engine, settings).await
    }

    /// State over an existing engine (tests use an in-memory one), with the seeded plans.
    pub async fn with_engine(engine: Engine, settings: Settings) -> Result<Self, metering_core::Error> {
        engine.seed_plans().await?;
        Ok(AppState { engine, settings: Arc::new(settings) })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}
