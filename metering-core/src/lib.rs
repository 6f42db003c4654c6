//! The metering engine: plans, credits, rate limits and the usage ledger, behind
//! storage traits.
//!
//! ```
//! use std::sync::Arc;
//! use metering_core::{Engine, Tenant, TenantId, PlanId, UsageEvent};
//! use metering_core::store::{MemoryHot, MemoryRecords};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let engine = Engine::builder(Arc::new(MemoryRecords::new()), Arc::new(MemoryHot::new())).build()?;
//! engine.seed_plans().await?;
//! let acme = TenantId::new("acme")?;
//! engine.create_tenant(&Tenant::new(acme.clone(), PlanId::new("free")?, engine.now())).await?;
//!
//! let decision = engine.track(UsageEvent::new("acme", "notes-api", "/notes", "POST")).await?;
//! assert!(decision.allowed);
//! assert_eq!(decision.credits_remaining, 99);
//! # Ok::<_, metering_core::Error>(()) }).unwrap();
//! ```
//!
//! | feature | default | what it switches on |
//! |---|---|---|
//! | `memory` | yes | [`store::hot::memory`] and [`store::records::memory`]: in-process hot counters and records |
//! | `sqlite` | no | [`store::records::sqlite`]: durable records in one SQLite file (WAL) |
//! | `mongodb` | no | [`store::records::mongodb`]: durable records in MongoDB (replica set or sharded) |

pub mod account;
pub mod admit;
pub mod audit;
pub mod changes;
pub mod clock;
pub mod decision;
mod denials;
mod detach;
pub mod engine;
pub mod error;
pub mod event;
pub mod ledger;
pub mod limit;
pub mod plan;
pub mod policy;
pub mod pricing;
mod rebuild;
pub mod store;
pub mod tenant;
mod writer;

/// Keeps a shard on cache lines of its own, so threads on different shards never contend.
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

pub use account::{ApiKey, RefreshToken, Role, User};
pub use audit::AuditEntry;
pub use changes::Change;
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use decision::{Decision, DenyReason, WindowStatus};
pub use engine::{Balance, Engine, EngineBuilder, Outcome, Ticket};
pub use error::{Error, FieldError, FieldProblem, PlanError};
pub use event::{Event, EventId, Method, TimeBounds, UsageEvent};
pub use ledger::{GroupBy, LedgerCursor, LedgerQuery, LedgerRecord, UsageGroup};
pub use plan::{Limit, Per, Plan, PlanId, PremiumAccess};
pub use policy::Policy;
pub use pricing::PricingRule;
pub use store::{LockoutPolicy, LoginGuard};
pub use tenant::{BillingAnchor, Period, Tenant, TenantId, TenantOverrides, TenantStatus};
pub use writer::{FailurePolicy, GroupCommit, RETRY_FIRST, RETRY_MAX, WriterStats};
