//! The Redis hot store decides exactly as the in-process one (which runs the reference
//! decision): the same random sequences of calls (several tenants, windows, prices,
//! overdrafts, replays and conflicts, reverts, grants, late events and clock steps) go
//! through both, and every answer and balance must be identical.
//!
//! `cargo test --features redis --test hot_differential` (needs Redis on 127.0.0.1:6379)

#![cfg(feature = "redis")]

#[path = "support/redis_servers.rs"]
mod redis_servers;

use std::sync::Arc;
use std::time::Duration;

use metering::core::store::{Admission, Admitted, HotSnapshot, HotStore, MemoryHot};
use metering::core::{BillingAnchor, DenyReason, EventId, Limit, Per, TenantId, Timestamp};
use proptest::prelude::*;

/// The window shapes a plan may have.
const SHAPES: &[&[(u32, Per)]] = &[
    &[],
    &[(3, Per::Day)],
    &[(2, Per::Minute)],
    &[(5, Per::Second), (4, Per::Day), (20, Per::Month)],
    &[(3, Per::Hour), (10, Per::Month)],
];

const TENANTS: &[&str] = &["alpha", "beta", "gamma"];

#[derive(Debug, Clone)]
enum Step {
    /// Move the clock forward.
    Wait(Duration),
    /// A call; `late` moves its event time back from now.
    Call {
        tenant: usize,
        shape: usize,
        cost: u64,
        overdraft: u64,
        id: Option<u8>,
        fingerprint: u64,
        late: Duration,
        denial: bool,
    },
    /// Give back the last call admitted.
    RevertLast,
    /// Grant (or claw back) credits in the current period.
    Grant { tenant: usize, amount: i64 },
}

fn step() -> impl Strategy<Value = Step> {
    let wait = prop_oneof![
        Just(Duration::ZERO),
        (1u64..2_000).prop_map(Duration::from_millis),
        (1u64..600).prop_map(Duration::from_secs),
        (1u64..30).prop_map(|h| Duration::from_secs(h * 3600)),
        (1u64..40).prop_map(|d| Duration::from_secs(d * 86_400)),
    ];
    let late = prop_oneof![
        3 => Just(Duration::ZERO),
        1 => (0u64..86_400).prop_map(Duration::from_secs),
    ];
    prop_oneof![
        2 => wait.prop_map(Step::Wait),
        8 => (0..TENANTS.len(), 0..SHAPES.len(), 0u64..4, prop_oneof![Just(0u64), Just(3)],
              proptest::option::weighted(0.4, 0u8..6), 1u64..3, late, proptest::bool::weighted(0.1))
            .prop_map(|(tenant, shape, cost, overdraft, id, fingerprint, late, denial)| Step::Call {
                tenant, shape, cost, overdraft, id, fingerprint, late, denial,
            }),
        1 => Just(Step::RevertLast),
        1 => (0..TENANTS.len(), -6i64..6).prop_map(|(tenant, amount)| Step::Grant { tenant, amount }),
    ]
}

fn admission(step: &Step, n: usize, now: Timestamp) -> Option<Admission> {
    let Step::Call { tenant, shape, cost, overdraft, id, fingerprint, late, denial } = *step else { return None };
    let at = now.minus(late);
    let (event_id, remember) = match id {
        Some(id) => (format!("chosen-{id}"), true),
        None => (format!("generated-{n}"), false),
    };
    Some(Admission {
        tenant: TenantId::new(TENANTS[tenant]).unwrap(),
        event_id: EventId::new(event_id).unwrap(),
        fingerprint,
        now,
        at,
        denial: denial.then_some(DenyReason::PremiumNotInPlan),
        limits: SHAPES[shape].iter().map(|&(max, per)| Limit::new(max, per).unwrap()).collect(),
        cost,
        period: BillingAnchor::default().period_containing(at),
        allowance: 8,
        overdraft,
        remember,
        remember_until: now.plus(Duration::from_secs(3 * 3600)),
    })
}

/// Admits on `hot`, loading the tenant empty the first time.
async fn admit(hot: &dyn HotStore, a: &Admission) -> Admitted {
    match hot.admit(a).await.unwrap() {
        Admitted::Unloaded => {
            hot.load(&a.tenant, HotSnapshot::default()).await.unwrap();
            hot.admit(a).await.unwrap()
        }
        answer => answer,
    }
}

async fn run(steps: Vec<Step>, redis: Arc<dyn HotStore>) -> Result<(), TestCaseError> {
    let memory: Arc<dyn HotStore> = Arc::new(MemoryHot::new());
    redis.clear().await.unwrap();
    let mut now = Timestamp::from_secs(1_773_489_600);
    let mut admitted: Vec<Admission> = Vec::new();
    for (n, step) in steps.iter().enumerate() {
        match step {
            Step::Wait(d) => now = now.plus(*d),
            Step::Call { .. } => {
                let a = admission(step, n, now).unwrap();
                let (m, r) = (admit(&*memory, &a).await, admit(&*redis, &a).await);
                prop_assert_eq!(&m, &r, "step {}: {:?}", n, step);
                if matches!(m, Admitted::Decided(ref d) if d.allowed) {
                    admitted.push(a);
                }
            }
            Step::RevertLast => {
                if let Some(a) = admitted.pop() {
                    memory.revert(&a).await.unwrap();
                    redis.revert(&a).await.unwrap();
                }
            }
            Step::Grant { tenant, amount } => {
                let tenant = TenantId::new(TENANTS[*tenant]).unwrap();
                let period = BillingAnchor::default().period_containing(now);
                let m = memory.grant(&tenant, period, 8, 0, *amount).await.map_err(|e| e.to_string());
                let r = redis.grant(&tenant, period, 8, 0, *amount).await.map_err(|e| e.to_string());
                prop_assert_eq!(m, r, "step {}: {:?}", n, step);
            }
        }
        for tenant in TENANTS {
            let tenant = TenantId::new(*tenant).unwrap();
            let start = BillingAnchor::default().period_containing(now).start;
            let (m, r) = (memory.credits(&tenant, start).await.unwrap(), redis.credits(&tenant, start).await.unwrap());
            prop_assert_eq!(m, r, "balances after step {}", n);
        }
    }
    Ok(())
}

#[test]
fn redis_decides_as_the_reference_decision() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let redis: Arc<dyn HotStore> = Arc::new(runtime.block_on(redis_servers::shared_store("differential")));
    let config = ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(steps in proptest::collection::vec(step(), 1..80))| {
        runtime.block_on(run(steps, Arc::clone(&redis)))?;
    });
    runtime.block_on(redis.clear()).unwrap();
}
