//! Promises 2 and 6 against a model: random sequences of tracks (with and without
//! `event_id`s and timestamps, ids sent back, across day and month edges), restarts
//! (graceful and crash), wipes of the hot store, grants and plan changes, run against
//! every record store. The model charges each `event_id` once; every answer, the ledger
//! and the balance must agree with it.
//!
//! `METERING_MODEL_CASES` sets the number of sequences per store (default 24); the
//! `scripts/charged-once-model.sh` script runs it at scale.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Backend, Instance, START, Stop, tenant_on};
use metering::core::{BillingAnchor, Clock, EngineBuilder, LedgerQuery, Limit, ManualClock, Per, Timestamp};
use metering::{Decision, DenyReason, Engine, Error, Plan, PlanId, TenantId, UsageEvent};
use proptest::prelude::*;

/// The two plans a tenant moves between: `(id, monthly credits, calls a day, overdraft)`.
const PLANS: [(&str, u64, u32, u64); 2] = [("roomy", 40, 6, 0), ("tight", 15, 3, 5)];

/// Caller-chosen ids come from a small pool, so they are often reused.
const POOL: u8 = 6;

#[derive(Debug, Clone)]
enum Id {
    /// None given: the engine generates one.
    Generated,
    /// `p-<n>`.
    Pool(u8),
    /// One generated earlier, sent back with the body it was generated for.
    SentBack(u8),
}

#[derive(Debug, Clone)]
enum Op {
    /// A call costing `credits`, with a timestamp `late` minutes ago or none.
    Track { id: Id, credits: u8, late: Option<u16> },
    /// The clock moves on.
    Advance(Duration),
    /// The instance stops and starts again on the same storage.
    Restart(Stop),
    /// Every hot counter is wiped.
    ClearHot,
    /// Credits granted (positive) or clawed back (negative).
    Grant(i8),
    /// The tenant moves to the other plan.
    SwitchPlan,
    /// The journal is indexed into the ledger.
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    let id = prop_oneof![
        2 => Just(Id::Generated),
        4 => (0..POOL).prop_map(Id::Pool),
        2 => any::<u8>().prop_map(Id::SentBack),
    ];
    let late = prop_oneof![2 => Just(None), 1 => (0u16..180).prop_map(Some)];
    let advance = prop_oneof![
        Just(Duration::from_secs(60)),
        Just(Duration::from_secs(37 * 60)),
        Just(Duration::from_secs(5 * 3600)),
        Just(Duration::from_secs(23 * 3600)),
        (1u64..7).prop_map(|d| Duration::from_secs(d * 86_400)),
    ];
    prop_oneof![
        12 => (id, 0u8..5, late).prop_map(|(id, credits, late)| Op::Track { id, credits, late }),
        3 => advance.prop_map(Op::Advance),
        1 => Just(Op::Restart(Stop::Graceful)),
        1 => Just(Op::Restart(Stop::Crash)),
        1 => Just(Op::ClearHot),
        1 => (-10i8..15).prop_map(Op::Grant),
        1 => Just(Op::SwitchPlan),
        1 => Just(Op::Flush),
    ]
}

/// What a caller sent with an id: its credits and its timestamp, if it gave one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Content {
    credits: u8,
    at: Option<Timestamp>,
}

/// The model: each `event_id` decided once; windows and balances as the plans say.
#[derive(Default)]
struct Model {
    plan: usize,
    /// Admitted calls by day window start.
    calls: HashMap<Timestamp, u32>,
    /// Credits used and granted by billing period start.
    used: HashMap<Timestamp, u64>,
    granted: HashMap<Timestamp, i64>,
    /// The first decision of each id, with the content it was decided for.
    decided: HashMap<String, (Content, Decision)>,
    /// Ids the engine generated, in order.
    generated: Vec<String>,
    /// Records the ledger must hold.
    records: usize,
}

/// What the model expects of a fresh decision.
#[derive(Debug, PartialEq, Eq)]
struct Expected {
    allowed: bool,
    reason: Option<DenyReason>,
    credits_charged: u64,
    credits_remaining: i64,
}

impl Model {
    fn remaining(&self, period: Timestamp) -> i64 {
        let (_, allowance, _, _) = PLANS[self.plan];
        allowance as i64 + self.granted.get(&period).copied().unwrap_or(0)
            - self.used.get(&period).copied().unwrap_or(0) as i64
    }

    /// Decides a fresh call at event time `at`, and counts it.
    fn decide(&mut self, at: Timestamp, cost: u64) -> Expected {
        let (_, _, per_day, overdraft) = PLANS[self.plan];
        let day = Per::Day.window_containing(at).0;
        let period = BillingAnchor::FIRST.period_containing(at).start;
        let remaining = self.remaining(period);
        self.records += 1;
        let reason = if self.calls.get(&day).copied().unwrap_or(0) >= per_day {
            Some(DenyReason::RateLimited)
        } else if remaining - (cost as i64) < -(overdraft as i64) {
            Some(DenyReason::InsufficientCredits)
        } else {
            None
        };
        if reason.is_some() {
            return Expected {
                allowed: false,
                reason,
                credits_charged: 0,
                credits_remaining: remaining.max(-(overdraft as i64)),
            };
        }
        *self.calls.entry(day).or_default() += 1;
        *self.used.entry(period).or_default() += cost;
        Expected { allowed: true, reason: None, credits_charged: cost, credits_remaining: remaining - cost as i64 }
    }
}

fn expected_of(d: &Decision) -> Expected {
    Expected {
        allowed: d.allowed,
        reason: d.reason,
        credits_charged: d.credits_charged,
        credits_remaining: d.credits_remaining,
    }
}

fn as_built(builder: EngineBuilder) -> EngineBuilder {
    builder
}

fn acme() -> TenantId {
    TenantId::new("acme").unwrap()
}

fn plan(i: usize) -> Plan {
    let (id, credits, per_day, overdraft) = PLANS[i];
    Plan::new(PlanId::new(id).unwrap(), credits)
        .with_limit(Limit::new(per_day, Per::Day).unwrap().max, Per::Day)
        .with_overdraft(overdraft)
}

/// Runs `ops` on `backend` beside the model; panics at the first disagreement.
async fn run(backend: &Backend, ops: &[Op]) {
    let clock = ManualClock::at(START);
    let mut node = Instance::start(backend, &clock, as_built).await;
    node.engine.put_plan(&plan(1)).await.unwrap();
    tenant_on(&node.engine, "acme", plan(0)).await;
    let mut model = Model::default();
    for (step, op) in ops.iter().enumerate() {
        let at = format!("{backend:?}, step {step}: {op:?}");
        match op {
            Op::Track { id, credits, late } => track(&node.engine, &clock, &mut model, id, *credits, *late, &at).await,
            Op::Advance(d) => clock.advance(*d),
            Op::Restart(stop) => node = node.restart(*stop).await,
            Op::ClearHot => node.engine.clear_hot().await.unwrap(),
            Op::Grant(amount) => grant(&node.engine, &clock, &mut model, i64::from(*amount), &at).await,
            Op::SwitchPlan => {
                model.plan = 1 - model.plan;
                node.engine.set_plan(&acme(), PlanId::new(PLANS[model.plan].0).unwrap()).await.unwrap();
            }
            Op::Flush => node.engine.flush().await.unwrap(),
        }
        check_balance(&node.engine, &clock, &model, &at).await;
    }
    let node = node.restart(Stop::Crash).await;
    check_ledger(&node.engine, &model, backend).await;
    check_balance(&node.engine, &clock, &model, &format!("{backend:?}, after a last restart")).await;
}

async fn track(
    engine: &Engine,
    clock: &ManualClock,
    model: &mut Model,
    id: &Id,
    credits: u8,
    late: Option<u16>,
    at: &str,
) {
    let now = clock.now();
    let (id, content) = match id {
        Id::SentBack(i) if !model.generated.is_empty() => {
            let id = model.generated[*i as usize % model.generated.len()].clone();
            (Some(id.clone()), model.decided[&id].0)
        }
        Id::Pool(n) => (Some(format!("p-{n}")), Content { credits, at: late.map(|m| now.minus(minutes(m))) }),
        _ => (None, Content { credits, at: late.map(|m| now.minus(minutes(m))) }),
    };
    let mut event = UsageEvent::new("acme", "notes", "/notes", "POST").with_credits(i64::from(content.credits));
    event.timestamp = content.at;
    if let Some(id) = &id {
        event = event.with_event_id(id);
    }
    let answer = engine.track(event).await;

    if content.at.is_some_and(|t| t < now.minus(Duration::from_secs(24 * 3600))) {
        assert!(matches!(answer, Err(Error::InvalidInput(_))), "{at}: too old, {answer:?}");
        return;
    }
    if let Some((first_content, first)) = id.as_ref().and_then(|id| model.decided.get(id)) {
        if *first_content == content {
            assert_eq!(answer.as_ref().ok(), Some(first), "{at}: a replay answers the first decision");
        } else {
            assert!(matches!(answer, Err(Error::IdempotencyConflict(_))), "{at}: other content, {answer:?}");
        }
        return;
    }
    let decision = answer.unwrap_or_else(|e| panic!("{at}: {e:?}"));
    let expected = model.decide(content.at.unwrap_or(now), u64::from(content.credits));
    assert_eq!(expected_of(&decision), expected, "{at}");
    let key = decision.event_id.as_str().to_owned();
    if id.is_none() {
        model.generated.push(key.clone());
    }
    model.decided.insert(key, (content, decision));
}

fn minutes(m: u16) -> Duration {
    Duration::from_secs(u64::from(m) * 60)
}

async fn grant(engine: &Engine, clock: &ManualClock, model: &mut Model, amount: i64, at: &str) {
    let period = BillingAnchor::FIRST.period_containing(clock.now()).start;
    let after = model.remaining(period) + amount;
    let answer = engine.grant(&acme(), amount, "model").await;
    if amount < 0 && after < -(PLANS[model.plan].3 as i64) {
        assert!(matches!(answer, Err(Error::BelowFloor)), "{at}: {answer:?}");
    } else {
        assert_eq!(answer.ok(), Some(after), "{at}");
        *model.granted.entry(period).or_default() += amount;
    }
}

async fn check_balance(engine: &Engine, clock: &ManualClock, model: &Model, at: &str) {
    let period = BillingAnchor::FIRST.period_containing(clock.now()).start;
    let b = engine.balance(&acme()).await.unwrap();
    let used = model.used.get(&period).copied().unwrap_or(0);
    let granted = model.granted.get(&period).copied().unwrap_or(0);
    assert_eq!((b.used, b.granted, b.remaining), (used, granted, model.remaining(period)), "{at}: the balance");
}

async fn check_ledger(engine: &Engine, model: &Model, backend: &Backend) {
    let mut q = LedgerQuery { tenant: Some(acme()), limit: LedgerQuery::MAX_LIMIT, ..Default::default() };
    let mut ids = Vec::new();
    loop {
        let page = engine.ledger_records(&q).await.unwrap();
        let Some(last) = page.last() else { break };
        q.before = Some(metering::core::LedgerCursor::after(last));
        for r in &page {
            let first = &model.decided[r.event.event_id.as_str()].1;
            assert_eq!(&r.decision, first, "{backend:?}: the ledger holds the first decision");
        }
        ids.extend(page.into_iter().map(|r| r.event.event_id.as_str().to_owned()));
    }
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), ids.len(), "{backend:?}: no event_id recorded twice");
    assert_eq!(ids.len(), model.records, "{backend:?}: every decision recorded once");
}

fn cases() -> u32 {
    std::env::var("METERING_MODEL_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(24)
}

fn check_against(backend: impl Fn() -> Backend, ops: &[Op]) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let backend = backend();
    rt.block_on(run(&backend, ops));
    backend.remove_files();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn the_memory_store_charges_each_event_id_once(ops in proptest::collection::vec(op(), 1..60)) {
        check_against(|| Backend::Memory, &ops);
    }

    #[test]
    fn the_sqlite_store_charges_each_event_id_once(ops in proptest::collection::vec(op(), 1..60)) {
        check_against(|| Backend::Sqlite(common::temp_db()), &ops);
    }
}
