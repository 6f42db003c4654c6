//! Storage seams, split by role.
//!
//! - [`records`]: the [`RecordStore`], durable records, the source of truth, by role:
//!   [`Catalog`], [`UsageLedger`], [`Sessions`], [`Audited`] and [`Health`].
//! - [`hot`]: the [`HotStore`], derived and rebuildable counters.
//!
//! Each backend lives in the tree of its role, behind a cargo feature named after it
//! (`memory`, `sqlite`, `redis`, `mongodb`); each is re-exported here.

pub mod hot;
pub mod records;
#[cfg(feature = "memory")]
mod sharded;

#[cfg(feature = "memory")]
pub use hot::memory::MemoryHot;
#[cfg(feature = "redis")]
pub use hot::redis::{RedisHot, RedisOptions};
pub use hot::{Admission, Admitted, HotSnapshot, HotStore, KeyCount, LockoutPolicy, LoginGuard, PeriodCredits};
#[cfg(feature = "memory")]
pub use records::memory::{AppendFaults, MemoryRecords};
#[cfg(feature = "mongodb")]
pub use records::mongodb::{InvalidWriteConcern, MongoOptions, MongoRecords, MongoWriteConcern, StorageStats};
#[cfg(feature = "sqlite")]
pub use records::sqlite::SqliteRecords;
pub use records::{Audited, AuditedChange, Catalog, Health, RecordStore, Sessions, UsageLedger};

#[cfg(all(test, any(feature = "memory", feature = "sqlite")))]
pub(crate) use records::checks;
