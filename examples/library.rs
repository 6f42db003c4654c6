//! The engine used directly, as a library: plans, a tenant, decisions, a replay, a grant,
//! and a month passing on a manual clock.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example library
//! ```
//!
//! It prints one line per step; nothing listens on a socket.

use std::sync::Arc;
use std::time::Duration;

use metering::core::store::{MemoryHot, MemoryRecords};
use metering::core::{Limit, PricingRule};
use metering::{Engine, ManualClock, Per, Plan, PlanId, Tenant, TenantId, UsageEvent};

#[tokio::main]
async fn main() -> Result<(), metering::Error> {
    let clock = ManualClock::at("2026-05-30T09:00:00Z");
    let engine =
        Engine::builder(Arc::new(MemoryRecords::new()), Arc::new(MemoryHot::new())).clock(clock.clone()).build()?;
    engine.seed_plans().await?;

    // A plan of our own: 20 credits a month, 3 calls a day, the "search" feature costs 5.
    let starter = Plan::new(PlanId::new("starter")?, 20)
        .with_limit(Limit::new(3, Per::Day).expect("non-zero").max, Per::Day)
        .with_rule(PricingRule::fixed(5).for_feature("search"));
    engine.put_plan(&starter).await?;
    let acme = TenantId::new("acme")?;
    engine.create_tenant(&Tenant::new(acme.clone(), starter.id.clone(), engine.now())).await?;

    let call = |id: &str| UsageEvent::new("acme", "notes-api", "/notes/{id}", "GET").with_event_id(id);
    let mut search = call("call-3");
    search.feature = Some("search".into());

    for event in [call("call-1"), call("call-2"), search, call("call-4")] {
        let d = engine.track(event).await?;
        println!(
            "{:<7} allowed={:<5} reason={:<14} charged={} remaining={} day-window-left={}",
            d.event_id,
            d.allowed,
            d.reason.map_or("-", |r| r.as_str()),
            d.credits_charged,
            d.credits_remaining,
            d.limits[0].remaining
        );
    }

    let replay = engine.track(call("call-1")).await?;
    println!("replay of call-1 charged nothing more: remaining={}", replay.credits_remaining);

    engine.grant(&acme, 10, "support goodwill").await?;
    println!("after a grant: {:?}", engine.balance(&acme).await?);

    clock.advance(Duration::from_secs(3 * 86_400));
    let d = engine.track(call("june-1")).await?;
    println!("three days later, a new month: allowed={} remaining={}", d.allowed, d.credits_remaining);
    Ok(())
}
