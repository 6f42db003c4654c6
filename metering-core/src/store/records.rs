//! Durable records, the source of truth: plans, tenants, users, API keys, grants, refresh
//! tokens (ids only), the audit log and the usage ledger. Backends: [`memory::MemoryRecords`]
//! with the `sqlite` feature, [`sqlite::SqliteRecords`], and with the `mongodb` feature,
//! [`mongodb::MongoRecords`].
//!
//! The store is split by role, one trait each, so that a caller names what it needs and a
//! backend can be read one role at a time:
//!
//! | role | trait | what it keeps |
//! |---|---|---|
//! | catalog | [`Catalog`] | plans, tenants, accounts (a tenant with its first user), users, API keys |
//! | usage ledger | [`UsageLedger`] | the ledger records, their totals and summaries, credit grants |
//! | sessions | [`Sessions`] | refresh tokens (ids only) and the audit log |
//! | audited changes | [`Audited`] | an admin's change written together with its audit entry |
//! | health | [`Health`] | whether the store answers, and damage found in its files |
//!
//! [`RecordStore`] is all of them at once; every type implementing every role is one, so
//! an `Arc<dyn RecordStore>` reaches every role. Each method's documentation says how
//! atomic it is, for every backend: what a write applies together (or not at all), and
//! what a read sees.

mod audited;
mod catalog;
mod health;
#[cfg(feature = "memory")]
pub mod memory;
#[cfg(feature = "mongodb")]
pub mod mongodb;
mod sessions;
#[cfg(feature = "sqlite")]
pub mod sqlite;
mod usage_ledger;

#[cfg(all(test, any(feature = "memory", feature = "sqlite")))]
pub(crate) mod checks;

pub use audited::{Audited, AuditedChange};
pub use catalog::Catalog;
pub use health::Health;
pub use sessions::Sessions;
pub use usage_ledger::UsageLedger;

/// Durable records, the source of truth: every role at once.
///
/// Implemented for every type that implements each role; a backend implements the roles,
/// never this trait itself.
pub trait RecordStore: Catalog + UsageLedger + Sessions + Audited + Health {}

impl<T: Catalog + UsageLedger + Sessions + Audited + Health> RecordStore for T {}
