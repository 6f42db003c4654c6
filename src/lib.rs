//! # metering
//!
//! API usage metering, rate limiting and credit billing: every call tracked by tenant,
//! service, endpoint and method; credits deducted by plan, region and feature; rate limits
//! and premium access enforced; one decision per call, atomically.
//!
//! This crate is the facade: the engine lives in [`core`] (`metering-core`) and the
//! Tower layer in [`tower`] (`metering-tower`); the headline types are re-exported here.
//!
//! ```
//! use std::sync::Arc;
//! use metering::{Engine, PlanId, Tenant, TenantId, UsageEvent};
//! use metering::core::store::{MemoryHot, MemoryRecords};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let engine = Engine::builder(Arc::new(MemoryRecords::new()), Arc::new(MemoryHot::new())).build()?;
//! engine.seed_plans().await?;
//! engine.create_tenant(&Tenant::new(TenantId::new("acme")?, PlanId::new("free")?, engine.now())).await?;
//! let decision = engine.track(UsageEvent::new("acme", "notes-api", "/notes/{id}", "GET")).await?;
//! assert!(decision.allowed);
//! # Ok::<_, metering::Error>(()) }).unwrap();
//! ```
//!
//! | feature | default | what it switches on |
//! |---|---|---|
//! | `sqlite` | yes | durable records in one SQLite file (`metering_core::store::records::sqlite`) |

#[doc(inline)]
pub use metering_core as core;
#[doc(inline)]
pub use metering_tower as tower;

#[doc(inline)]
pub use metering_core::{
    Clock, Decision, DenyReason, Engine, Error, ManualClock, Outcome, Per, Plan, PlanId, SystemClock, Tenant, TenantId,
    TenantStatus, Timestamp, UsageEvent,
};
