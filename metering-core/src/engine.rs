//! The engine: decides each call in the order of the design and records it.
//!
//! authenticate (caller's job) -> tenant and plan (cached) -> tenant status ->
//! entitlement -> every window -> credits -> one atomic commit in the hot store ->
//! the ledger record.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::account::User;
use crate::admit::{Standing, WindowState, admit};
use crate::audit::AuditEntry;
use crate::changes::Change;
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::decision::{Decision, DenyReason};
use crate::denials::DenialBudget;
use crate::detach::FinishOnDrop;
use crate::error::Error;
use crate::event::{Event, TimeBounds, UsageEvent};
use crate::ledger::{Appended, Grant, LedgerRecord, TimeBasis};
use crate::limit::rebuilt_tat;
use crate::plan::{Per, Plan, PlanId};
use crate::policy::{Policy, PolicyCache};
use crate::pricing::price;
use crate::rebuild::{RebuildGates, StaleTenants};
use crate::store::{
    Admission, Admitted, AuditedChange, HotSnapshot, HotStore, KeyCount, LockoutPolicy, LoginGuard, PeriodCredits,
    RecordStore,
};
use crate::tenant::{Period, Tenant, TenantId, TenantOverrides, TenantStatus};
use crate::writer::{Appending, FailurePolicy, GroupCommit, LedgerWriter, WriterStats};

mod audited;
mod catalog;
mod changes;
mod health;
mod sessions;
mod usage;

/// Where settling a ticket stands between handing its record on and answering.
enum Settling {
    /// Nothing to write (a replay, or a denial over the ledger's budget): the answer.
    Answered(Decision),
    /// The record is being written.
    Recording { decision: Decision, counted: bool, admission: Admission, write: RecordWrite },
}

/// A ledger record's write: queued with the group-commit writer, or over already.
enum RecordWrite {
    Queued(Appending),
    Done(Result<Appended, Error>),
}

/// A decided call whose ledger record is not written yet.
///
/// Returned by [`Engine::decide`]; give it back to [`Engine::settle`] (the server, which
/// answers only once the record is durable) or [`Engine::settle_later`] (the layer).
#[derive(Debug, Clone)]
pub struct Ticket {
    event: Event,
    admission: Admission,
    decision: Decision,
    replayed: bool,
    /// Admitted while the hot store could not answer: nothing in it to give back.
    fail_open: bool,
    handing_on: HandingOn,
}

/// Held by a decision from the hot store's commit until its ledger record is handed on
/// (queued with the writer or written): [`Engine::clear_hot`] waits for none to be held,
/// so no count it wipes is missing from the ledger it rebuilds from.
#[derive(Clone)]
struct HandingOn {
    _guard: Arc<tokio::sync::OwnedRwLockReadGuard<()>>,
}

impl std::fmt::Debug for HandingOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandingOn")
    }
}

impl Ticket {
    /// The decision.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// The checked event.
    pub fn event(&self) -> &Event {
        &self.event
    }

    /// Whether this is a replay of an earlier decision (nothing was charged now).
    pub fn is_replay(&self) -> bool {
        self.replayed
    }
}

/// How a call ended, for [`Engine::settle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// The HTTP status the metered service answered, if known.
    pub status: Option<u16>,
    /// Whether an admitted call stays charged (`false` gives back its windows and credits).
    pub charge: bool,
}

impl Outcome {
    /// The call is charged as decided.
    pub const CHARGED: Outcome = Outcome { status: None, charge: true };
}

/// A tenant's credits in the current period.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Balance {
    /// The plan's id.
    pub plan: PlanId,
    /// The current billing period.
    pub period: Period,
    /// The period's allowance.
    pub allowance: u64,
    /// Credits granted (negative: clawed back).
    pub granted: i64,
    /// Credits charged.
    pub used: u64,
    /// `allowance + granted - used`.
    pub remaining: i64,
    /// How far below zero the plan lets the balance go.
    pub overdraft: u64,
    /// Credits used beyond that floor: more than the plan allows, which only a move to a
    /// plan with a smaller allowance mid-period can leave (no call is admitted past the
    /// floor). Decisions then answer `credits_remaining` as the floor.
    pub overage: u64,
}

/// Builds an [`Engine`].
pub struct EngineBuilder {
    records: Arc<dyn RecordStore>,
    hot: Arc<dyn HotStore>,
    clock: Arc<dyn Clock>,
    bounds: TimeBounds,
    remember_for: Duration,
    policy_ttl: Duration,
    policy_capacity: usize,
    group_commit: Option<GroupCommit>,
    denial_records_per_minute: u32,
    hot_failure: FailurePolicy,
}

impl EngineBuilder {
    /// How many denied calls per tenant and minute are written to the ledger (default
    /// 100); past that they are answered as usual but only counted, so a flood of refused
    /// calls cannot fill the disk. Charged calls are always written.
    pub fn denial_records_per_minute(mut self, n: u32) -> Self {
        self.denial_records_per_minute = n;
        self
    }

    /// Uses this clock instead of the system's.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// How far event timestamps may be from now.
    pub fn time_bounds(mut self, bounds: TimeBounds) -> Self {
        self.bounds = bounds;
        self
    }

    /// How long the hot store remembers an `event_id` (default 24 hours); after that the
    /// ledger's unique key still refuses a duplicate.
    pub fn remember_event_ids_for(mut self, d: Duration) -> Self {
        self.remember_for = d;
        self
    }

    /// How long a cached tenant policy is trusted when another instance may change it
    /// (default 5 seconds; changes made through this engine apply at once).
    pub fn policy_ttl(mut self, ttl: Duration) -> Self {
        self.policy_ttl = ttl;
        self
    }

    /// What a decision does when the hot store cannot answer: [`FailurePolicy::Closed`]
    /// (the default) fails it with [`Error::Unavailable`], nothing charged;
    /// [`FailurePolicy::Open`] admits it as an empty hot store would (suspension and
    /// premium access still apply), records it marked
    /// [`fail_open`](LedgerRecord::fail_open), and rebuilds the tenant's counters from the
    /// ledger once the store answers again, so the call is counted then.
    pub fn hot_failure(mut self, policy: FailurePolicy) -> Self {
        self.hot_failure = policy;
        self
    }

    /// Writes the ledger through a group-commit writer (needs a tokio runtime).
    pub fn group_commit(mut self, cfg: GroupCommit) -> Self {
        self.group_commit = Some(cfg);
        self
    }

    /// Builds the engine; fails only when group commit is asked for outside a runtime.
    pub fn build(self) -> Result<Engine, Error> {
        let writer = self
            .group_commit
            .map(|cfg| LedgerWriter::spawn(Arc::clone(&self.records), Arc::clone(&self.hot), cfg))
            .transpose()?;
        let inner = Arc::new(Inner {
            records: self.records,
            hot: self.hot,
            clock: self.clock,
            bounds: self.bounds,
            remember_for: self.remember_for,
            policies: PolicyCache::new(self.policy_capacity, self.policy_ttl),
            denials: DenialBudget::new(self.denial_records_per_minute),
            handing_on: Arc::new(tokio::sync::RwLock::new(())),
            writer,
            rebuilds: RebuildGates::default(),
            hot_errors: AtomicU64::new(0),
            hot_failure: self.hot_failure,
            stale: StaleTenants::default(),
            fail_open_admissions: AtomicU64::new(0),
            rebuilt: AtomicU64::new(0),
            changes: tokio::sync::broadcast::channel(changes::CHANGES_BUFFER).0,
            unannounced: AtomicU64::new(0),
        });
        changes::listen(&inner)?;
        Ok(Engine { inner })
    }
}

/// The metering engine. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    records: Arc<dyn RecordStore>,
    hot: Arc<dyn HotStore>,
    clock: Arc<dyn Clock>,
    bounds: TimeBounds,
    remember_for: Duration,
    policies: PolicyCache,
    denials: DenialBudget,
    /// Read-held by decisions handing their records on, write-held by a wipe of the hot store.
    handing_on: Arc<tokio::sync::RwLock<()>>,
    writer: Option<LedgerWriter>,
    rebuilds: RebuildGates,
    hot_errors: AtomicU64,
    hot_failure: FailurePolicy,
    /// Tenants admitted fail-open, whose counters are rebuilt before their next decision.
    stale: StaleTenants,
    fail_open_admissions: AtomicU64,
    rebuilt: AtomicU64,
    /// Changes of cached records, for this process's listeners.
    changes: tokio::sync::broadcast::Sender<crate::changes::Change>,
    /// Changes the hot store could not announce.
    unannounced: AtomicU64,
}

/// The answer to a call whose `event_id` the ledger already holds in `first`: its
/// decision when the content is the same, a conflict otherwise.
fn first_decision(first: LedgerRecord, admission: &Admission) -> Result<Decision, Error> {
    if first.event.fingerprint == admission.fingerprint {
        Ok(first.decision)
    } else {
        Err(Error::IdempotencyConflict(admission.event_id.clone()))
    }
}

/// How many times a decision retries after loading a tenant's counters.
const LOAD_ATTEMPTS: usize = 3;

impl Engine {
    /// Starts building an engine over these stores.
    pub fn builder(records: Arc<dyn RecordStore>, hot: Arc<dyn HotStore>) -> EngineBuilder {
        EngineBuilder {
            records,
            hot,
            clock: Arc::new(SystemClock),
            bounds: TimeBounds::default(),
            remember_for: Duration::from_secs(24 * 3600),
            policy_ttl: Duration::from_secs(5),
            policy_capacity: 100_000,
            group_commit: None,
            denial_records_per_minute: 100,
            hot_failure: FailurePolicy::Closed,
        }
    }

    /// The current time on the engine's clock.
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// The durable store.
    pub fn records(&self) -> &Arc<dyn RecordStore> {
        &self.inner.records
    }

    /// Decides and records a call; returns once the ledger record is durable.
    ///
    /// Safe to abandon: dropped before it answers (the client went away, a timeout fired),
    /// the call is still decided and recorded, on a task of its own, so no decision takes
    /// counts without its ledger record.
    pub fn track(&self, event: UsageEvent) -> impl Future<Output = Result<Decision, Error>> + Send + 'static {
        let engine = self.clone();
        FinishOnDrop::new(async move {
            let ticket = engine.decide(event).await?;
            engine.settle(ticket, Outcome::CHARGED).await
        })
    }

    /// Decides a call and commits its counters; the ledger record is written by
    /// [`settle`](Self::settle) or [`settle_later`](Self::settle_later).
    ///
    /// Drive the returned future to completion: dropped after the hot store committed but
    /// before the ticket came back, the counts stay taken with no ledger record (until the
    /// counters are next rebuilt from the ledger). The Tower layer finishes abandoned
    /// decisions on a spawned task for this reason, and [`track`](Self::track) does so
    /// itself.
    pub async fn decide(&self, input: UsageEvent) -> Result<Ticket, Error> {
        self.decide_holding(input, None).await
    }

    /// [`decide`](Self::decide), sharing `held` when the caller already holds an unsettled
    /// ticket: a wipe waiting for that ticket would otherwise keep this decision waiting too.
    async fn decide_holding(&self, input: UsageEvent, held: Option<HandingOn>) -> Result<Ticket, Error> {
        let now = self.now();
        let remember = input.event_id.is_some();
        let mut event = input.validate_at(now, &self.inner.bounds)?;
        let policy = self.policy_at(&event.tenant_id, now).await?;
        if event.region.is_none() {
            event.region.clone_from(&policy.tenant.region);
        }
        let admission = self.admission(&event, &policy, now, remember);
        let handing_on = match held {
            Some(held) => held,
            None => HandingOn { _guard: Arc::new(Arc::clone(&self.inner.handing_on).read_owned().await) },
        };
        if let Some(writer) = &self.inner.writer {
            writer.check_taking()?;
        }
        for _ in 0..LOAD_ATTEMPTS {
            let admitted = match self.admit_hot(&admission, &policy).await {
                Ok(admitted) => admitted,
                Err(e) => {
                    self.inner.hot_errors.fetch_add(1, Ordering::Relaxed);
                    if self.inner.hot_failure == FailurePolicy::Closed || !matches!(e, Error::Unavailable(_)) {
                        return Err(e);
                    }
                    return Ok(self.admit_fail_open(event, admission, handing_on));
                }
            };
            let (decision, replayed) = match admitted {
                Admitted::Decided(decision) => (decision, false),
                Admitted::Replayed(decision) => (decision, true),
                Admitted::Conflict => return Err(Error::IdempotencyConflict(event.event_id)),
                Admitted::Unloaded => {
                    self.rebuild(&policy, now).await?;
                    continue;
                }
            };
            return Ok(Ticket { event, admission, decision, replayed, fail_open: false, handing_on });
        }
        Err(Error::Unavailable("hot store does not keep loaded counters".into()))
    }

    fn admission(&self, event: &Event, policy: &Policy, now: Timestamp, remember: bool) -> Admission {
        let plan = &policy.plan;
        let denial = if policy.tenant.status == TenantStatus::Suspended {
            Some(DenyReason::TenantSuspended)
        } else if event.premium && !plan.premium.allows(event.feature.as_deref()) {
            Some(DenyReason::PremiumNotInPlan)
        } else {
            None
        };
        Admission {
            tenant: policy.tenant.id.clone(),
            event_id: event.event_id.clone(),
            fingerprint: event.fingerprint,
            now,
            at: event.timestamp,
            denial,
            limits: Arc::clone(&policy.limits),
            cost: price(&plan.pricing, event),
            period: policy.period_containing(event.timestamp),
            allowance: plan.monthly_credits,
            overdraft: plan.overdraft,
            remember,
            remember_until: now.plus(self.inner.remember_for),
        }
    }

    /// Writes the ticket's ledger record and waits until it is durable.
    ///
    /// With `outcome.charge == false` an admitted call gives back its windows and credits
    /// and is recorded as not counted. A replayed ticket writes nothing.
    pub async fn settle(&self, ticket: Ticket, outcome: Outcome) -> Result<Decision, Error> {
        let settling = self.start_settling(ticket, outcome).await?;
        self.finish_settling(settling).await
    }

    /// Decides calls in the given order (so one tenant's decisions follow it) and records
    /// them together, their records sharing group commits; answers one result per call,
    /// in order, once every record is durable. Safe to abandon, like [`track`](Self::track).
    pub fn track_batch(
        &self,
        events: Vec<UsageEvent>,
    ) -> impl Future<Output = Vec<Result<Decision, Error>>> + Send + 'static {
        let engine = self.clone();
        FinishOnDrop::new(async move {
            let mut tickets = Vec::with_capacity(events.len());
            let mut held = None;
            for event in events {
                let ticket = engine.decide_holding(event, held.clone()).await;
                if let (None, Ok(t)) = (&held, &ticket) {
                    held = Some(t.handing_on.clone());
                }
                tickets.push(ticket);
            }
            let mut settling = Vec::with_capacity(tickets.len());
            for ticket in tickets {
                settling.push(match ticket {
                    Ok(ticket) => engine.start_settling(ticket, Outcome::CHARGED).await,
                    Err(e) => Err(e),
                });
            }
            let mut decisions = Vec::with_capacity(settling.len());
            for s in settling {
                decisions.push(match s {
                    Ok(s) => engine.finish_settling(s).await,
                    Err(e) => Err(e),
                });
            }
            decisions
        })
    }

    /// Hands the ticket's ledger record to the writer (or writes it, without one).
    async fn start_settling(&self, ticket: Ticket, outcome: Outcome) -> Result<Settling, Error> {
        if ticket.replayed {
            return Ok(Settling::Answered(ticket.decision));
        }
        if !self.worth_recording(&ticket) {
            return self.answer_unrecorded(ticket).await.map(Settling::Answered);
        }
        // Held until the record is handed on, past the ticket's end.
        let _handing_on = ticket.handing_on.clone();
        let (record, admission) = self.record_of(ticket, outcome).await?;
        let (decision, counted) = (record.decision.clone(), record.counted);
        let write = match &self.inner.writer {
            Some(w) => w.enqueue(record).await.map_or_else(|e| RecordWrite::Done(Err(e)), RecordWrite::Queued),
            None => {
                let appended = self.inner.records.append(vec![record]).await;
                RecordWrite::Done(appended.map(|mut v| v.pop().unwrap_or(Appended::Inserted)))
            }
        };
        Ok(Settling::Recording { decision, counted, admission, write })
    }

    /// Waits for a record [`start_settling`](Self::start_settling) handed on; undoes the
    /// decision's counts if the record could not be written or the ledger already held
    /// its `event_id`.
    async fn finish_settling(&self, settling: Settling) -> Result<Decision, Error> {
        let (decision, counted, admission, write) = match settling {
            Settling::Answered(decision) => return Ok(decision),
            Settling::Recording { decision, counted, admission, write } => (decision, counted, admission, write),
        };
        let appended = match write {
            RecordWrite::Queued(queued) => queued.written().await,
            RecordWrite::Done(done) => done,
        };
        if let Ok(Appended::Inserted) = appended {
            return Ok(decision);
        }
        // Either the ledger holds the event_id already (the hot store had forgotten it:
        // a restart, a wipe or an expiry) or the record is not written: this decision
        // is undone, counts and remembered answer alike.
        if counted {
            self.inner.hot.revert(&admission).await?;
        } else {
            self.inner.hot.forget(&admission).await?;
        }
        match appended? {
            Appended::Duplicate(first) => first_decision(*first, &admission),
            Appended::Inserted => Ok(decision),
        }
    }

    /// The answer to a denial that is not written to the ledger (over the tenant's
    /// budget): the denial, unless the ledger holds the caller's `event_id` already (a
    /// retry the hot store had forgotten), which gets the first decision.
    async fn answer_unrecorded(&self, ticket: Ticket) -> Result<Decision, Error> {
        let admission = &ticket.admission;
        if !admission.remember {
            return Ok(ticket.decision);
        }
        match self.inner.records.record(&admission.tenant, &admission.event_id).await? {
            None => Ok(ticket.decision),
            Some(first) => {
                self.inner.hot.forget(admission).await?;
                first_decision(first, admission)
            }
        }
    }

    /// Queues the ticket's ledger record without waiting for it to be durable (the layer's
    /// path: the response is not held up). Records still queued when the process dies
    /// hard are lost; [`flush`](Self::flush) on shutdown writes them. The writer stores
    /// batches of such records with [`append_buffered`](crate::store::UsageLedger::append_buffered); when the store
    /// fails, it keeps them and tries again, and one it cannot keep has its counts given
    /// back (see [`FailurePolicy`](crate::FailurePolicy)). A full queue makes this wait
    /// for room, so nothing is lost to a slow disk (counted in
    /// [`WriterStats::queue_full_waits`]).
    pub async fn settle_later(&self, ticket: Ticket, outcome: Outcome) -> Result<(), Error> {
        match &self.inner.writer {
            Some(w) if !ticket.replayed => {
                if !self.worth_recording(&ticket) {
                    return Ok(());
                }
                let _handing_on = ticket.handing_on.clone();
                let (record, admission) = self.record_of(ticket, outcome).await?;
                w.submit(record, admission).await
            }
            _ => self.settle(ticket, outcome).await.map(drop),
        }
    }

    /// Whether the ticket's record is written: always for an admitted call, within the
    /// tenant's budget for a denial.
    fn worth_recording(&self, ticket: &Ticket) -> bool {
        ticket.decision.allowed || self.inner.denials.take(&ticket.admission.tenant, ticket.admission.now)
    }

    /// Denied calls answered but not written to the ledger (over the per-minute budget)
    /// since the engine started.
    pub fn unrecorded_denials(&self) -> u64 {
        self.inner.denials.unrecorded()
    }

    /// The ticket's ledger record; an admitted call that is not charged gives back its
    /// counts first.
    async fn record_of(&self, ticket: Ticket, outcome: Outcome) -> Result<(LedgerRecord, Admission), Error> {
        let counted = ticket.decision.allowed && outcome.charge;
        if ticket.decision.allowed && !counted {
            self.inner.hot.revert(&ticket.admission).await?;
        }
        let record = LedgerRecord {
            event: ticket.event,
            decided_at: ticket.admission.now,
            decision: ticket.decision,
            status: outcome.status,
            counted,
            fail_open: ticket.fail_open,
        };
        Ok((record, ticket.admission))
    }

    /// Ledger records waiting for the group-commit writer now (0 without one).
    pub fn ledger_queue_depth(&self) -> usize {
        self.writer_stats().queued
    }

    /// What the group-commit writer has done so far (all zero without one).
    pub fn writer_stats(&self) -> WriterStats {
        self.inner.writer.as_ref().map(LedgerWriter::stats).unwrap_or_default()
    }

    /// Waits until every queued ledger record is written and indexed by the record store
    /// (see [`UsageLedger::flush`](crate::store::UsageLedger::flush)).
    pub async fn flush(&self) -> Result<(), Error> {
        if let Some(w) = &self.inner.writer {
            w.flush().await?;
        }
        self.inner.records.flush().await
    }

    /// The tenant with its effective plan, from the cache or the records.
    pub async fn policy(&self, tenant: &TenantId) -> Result<Arc<Policy>, Error> {
        self.policy_at(tenant, self.now()).await
    }

    async fn policy_at(&self, tenant: &TenantId, now: Timestamp) -> Result<Arc<Policy>, Error> {
        if let Some(p) = self.inner.policies.get(tenant, now) {
            return Ok(p);
        }
        let read_at = self.inner.policies.epoch();
        let t = self.inner.records.tenant(tenant).await?.ok_or_else(|| Error::UnknownTenant(tenant.clone()))?;
        let plan = self.inner.records.plan(&t.plan).await?.ok_or_else(|| Error::UnknownPlan(t.plan.clone()))?;
        let plan = t.overrides.apply(&plan)?;
        let policy = Arc::new(Policy::new(t, plan, now));
        self.inner.policies.insert(Arc::clone(&policy), now, read_at);
        Ok(policy)
    }

    /// Asks the hot store, first dropping the tenant's counters if calls were admitted
    /// fail-open since they were built (the rebuild that follows counts those calls).
    async fn admit_hot(&self, admission: &Admission, policy: &Policy) -> Result<Admitted, Error> {
        if self.inner.stale.contains(&admission.tenant) {
            let _gate = self.inner.rebuilds.enter(&admission.tenant).await;
            if self.inner.stale.contains(&admission.tenant) {
                if let Some(w) = &self.inner.writer {
                    w.flush().await?;
                }
                self.inner.hot.discard(&admission.tenant).await?;
                self.load_counters(policy, admission.now).await?;
                self.inner.stale.remove(&admission.tenant);
            }
        }
        self.inner.hot.admit(admission).await
    }

    /// A call admitted without the hot store (fail-open): decided on empty counters, and
    /// holding nothing in the hot store to give back.
    fn admit_fail_open(&self, event: Event, admission: Admission, handing_on: HandingOn) -> Ticket {
        let empty = Standing::read(&admission, PeriodCredits::default(), WindowState::empty);
        let decision = admit(&admission, &empty).decision;
        if decision.allowed {
            self.inner.fail_open_admissions.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.stale.insert(&admission.tenant);
        tracing::warn!(tenant = %admission.tenant, "hot store unavailable; call decided fail-open");
        let admission = Admission { limits: Arc::from([]), cost: 0, remember: false, ..admission };
        Ticket { event, admission, decision, replayed: false, fail_open: true, handing_on }
    }

    /// Calls admitted fail-open since the engine started.
    pub fn fail_open_admissions(&self) -> u64 {
        self.inner.fail_open_admissions.load(Ordering::Relaxed)
    }

    /// Rebuilds a tenant's absent counters once however many calls found them absent:
    /// the first caller rebuilds, the others wait and find them loaded. Records still
    /// queued for the ledger are written first, so the rebuild counts them.
    async fn rebuild(&self, policy: &Policy, now: Timestamp) -> Result<(), Error> {
        let tenant = &policy.tenant.id;
        let _gate = self.inner.rebuilds.enter(tenant).await;
        let period = policy.period_containing(now);
        if self.inner.hot.credits(tenant, period.start).await?.is_some() {
            return Ok(());
        }
        if let Some(w) = &self.inner.writer {
            w.flush().await?;
        }
        self.inner.rebuilt.fetch_add(1, Ordering::Relaxed);
        self.load_counters(policy, now).await
    }

    /// Tenants' counters rebuilt from the ledger since the engine started (a tenant's
    /// first use, and after the hot store lost them).
    pub fn rebuilds(&self) -> u64 {
        self.inner.rebuilt.load(Ordering::Relaxed)
    }

    /// Hot-store errors met by decisions since the engine started (each answered
    /// [`Error::Unavailable`] or as the store said).
    pub fn hot_errors(&self) -> u64 {
        self.inner.hot_errors.load(Ordering::Relaxed)
    }

    /// Whether the hot store answers now.
    pub async fn ping_hot(&self) -> Result<(), Error> {
        self.inner.hot.ping().await
    }

    /// Computes a tenant's counters from the ledger and loads them into the hot store.
    ///
    /// It covers every window and period an acceptable event can fall in, so once loaded
    /// a missing counter in the hot store truly means zero.
    async fn load_counters(&self, policy: &Policy, now: Timestamp) -> Result<(), Error> {
        let tenant = &policy.tenant.id;
        let records = &self.inner.records;
        let (oldest, newest) = (now.minus(self.inner.bounds.max_age), now.plus(self.inner.bounds.max_ahead));
        let mut snapshot = HotSnapshot::default();
        for per in [Per::Day, Per::Month] {
            let mut windows = vec![per.window_containing(oldest)];
            let mut end = windows[0].1;
            while end <= newest {
                windows.push(per.window_containing(end));
                end = per.window_containing(end).1;
            }
            for (start, end) in windows {
                let calls = records.usage_totals(tenant, TimeBasis::Event, start, end).await?.calls;
                snapshot.quotas.push((per, start, u32::try_from(calls).unwrap_or(u32::MAX)));
            }
        }
        for limit in policy.plan.limits.iter().filter(|l| !l.per.is_calendar()) {
            let window = limit.per.nominal();
            let calls = records
                .usage_totals(
                    tenant,
                    TimeBasis::Decided { events_from: now.minus(window).minus(self.inner.bounds.max_age) },
                    now.minus(window),
                    now.plus(Duration::from_micros(1)),
                )
                .await?
                .calls;
            if let Some(tat) = rebuilt_tat(*limit, calls, now) {
                snapshot.smooth.push((limit.per, tat));
            }
        }
        let anchor = policy.tenant.billing_anchor;
        let mut periods = vec![anchor.period_containing(oldest)];
        if periods[0].end <= newest {
            periods.push(anchor.period_containing(newest));
        }
        for p in periods {
            let used = records.usage_totals(tenant, TimeBasis::Event, p.start, p.end).await?.credits;
            let granted = records.granted(tenant, p.start).await?;
            snapshot.credits.push((p.start, used, granted));
        }
        self.inner.hot.load(tenant, snapshot).await
    }

    /// A tenant's credits in the current period.
    pub async fn balance(&self, tenant: &TenantId) -> Result<Balance, Error> {
        let now = self.now();
        let policy = self.policy(tenant).await?;
        let period = policy.tenant.billing_anchor.period_containing(now);
        for _ in 0..LOAD_ATTEMPTS {
            if let Some(c) = self.inner.hot.credits(tenant, period.start).await? {
                let (allowance, overdraft) = (policy.plan.monthly_credits, policy.plan.overdraft);
                let remaining = allowance as i64 + c.granted - c.used as i64;
                return Ok(Balance {
                    plan: policy.tenant.plan.clone(),
                    period,
                    allowance,
                    granted: c.granted,
                    used: c.used,
                    remaining,
                    overdraft,
                    overage: remaining.saturating_add(overdraft.min(i64::MAX as u64) as i64).min(0).unsigned_abs(),
                });
            }
            self.rebuild(&policy, now).await?;
        }
        Err(Error::Unavailable("hot store does not keep loaded counters".into()))
    }

    /// Grants (positive) or claws back (negative) credits in the current period. A grant
    /// is always taken; a claw-back never takes the balance below the plan's floor
    /// ([`Error::BelowFloor`]). Returns the new remaining balance.
    pub async fn grant(&self, tenant: &TenantId, amount: i64, reason: &str) -> Result<i64, Error> {
        self.grant_recording(tenant, amount, reason, None::<fn(i64) -> AuditEntry>).await
    }

    /// Takes a grant in the hot store, then records it (with the entry `audit` makes from
    /// the new remaining balance, written together, when given); should recording fail,
    /// the hot store's balance is put back and the error returned.
    pub(crate) async fn grant_recording(
        &self,
        tenant: &TenantId,
        amount: i64,
        reason: &str,
        audit: Option<impl FnOnce(i64) -> AuditEntry + Send>,
    ) -> Result<i64, Error> {
        let now = self.now();
        let policy = self.policy(tenant).await?;
        let period = policy.tenant.billing_anchor.period_containing(now);
        let (allowance, overdraft) = (policy.plan.monthly_credits, policy.plan.overdraft);
        for _ in 0..LOAD_ATTEMPTS {
            if let Some(remaining) = self.inner.hot.grant(tenant, period, allowance, overdraft, amount).await? {
                let grant = Grant { tenant_id: tenant.clone(), period, amount, reason: reason.to_owned(), at: now };
                let recorded = match audit {
                    Some(audit) => {
                        self.inner.records.apply_audited(AuditedChange::AddGrant(&grant), &audit(remaining)).await
                    }
                    None => self.inner.records.add_grant(&grant).await,
                };
                if let Err(e) = recorded {
                    self.inner.hot.grant(tenant, period, allowance, u64::MAX / 4, -amount).await?;
                    return Err(e);
                }
                return Ok(remaining);
            }
            self.rebuild(&policy, now).await?;
        }
        Err(Error::Unavailable("hot store does not keep loaded counters".into()))
    }

    /// Stores the seeded plans (`free`, `basic`, `pro`) that do not exist yet.
    pub async fn seed_plans(&self) -> Result<(), Error> {
        for plan in Plan::presets() {
            if self.inner.records.plan(&plan.id).await?.is_none() {
                self.inner.records.put_plan(&plan).await?;
            }
        }
        Ok(())
    }

    /// Creates or replaces a plan, validated; its tenants get it at once.
    pub async fn put_plan(&self, plan: &Plan) -> Result<(), Error> {
        plan.validate()?;
        self.inner.records.put_plan(plan).await?;
        self.changed(Change::Plans).await;
        Ok(())
    }

    /// Creates a plan, validated; [`Error::AlreadyExists`] if its id is taken.
    pub async fn create_plan(&self, plan: &Plan) -> Result<(), Error> {
        plan.validate()?;
        self.inner.records.insert_plan(plan).await?;
        self.changed(Change::Plans).await;
        Ok(())
    }

    /// Creates a tenant on an existing plan.
    pub async fn create_tenant(&self, tenant: &Tenant) -> Result<(), Error> {
        self.check_new_tenant(tenant).await?;
        self.inner.records.insert_tenant(tenant).await
    }

    /// Creates a tenant on an existing plan together with its first user (a sign-up):
    /// both or neither, so a sign-up refused for a taken e-mail leaves no tenant behind.
    pub async fn create_account(&self, tenant: &Tenant, user: &User) -> Result<(), Error> {
        self.check_new_tenant(tenant).await?;
        self.inner.records.insert_account(tenant, user).await
    }

    /// Checks that a new tenant's plan exists and its overrides fit it.
    async fn check_new_tenant(&self, tenant: &Tenant) -> Result<(), Error> {
        let plan =
            self.inner.records.plan(&tenant.plan).await?.ok_or_else(|| Error::UnknownPlan(tenant.plan.clone()))?;
        tenant.overrides.apply(&plan)?;
        Ok(())
    }

    /// Changes a tenant; the change applies to its next call, and no counter is reset.
    pub async fn update_tenant(&self, id: &TenantId, change: impl FnOnce(&mut Tenant)) -> Result<Tenant, Error> {
        let mut tenant = self.inner.records.tenant(id).await?.ok_or_else(|| Error::UnknownTenant(id.clone()))?;
        change(&mut tenant);
        tenant.id = id.clone();
        let plan =
            self.inner.records.plan(&tenant.plan).await?.ok_or_else(|| Error::UnknownPlan(tenant.plan.clone()))?;
        tenant.overrides.apply(&plan)?;
        self.inner.records.update_tenant(&tenant).await?;
        self.changed(Change::Tenant(id.clone())).await;
        Ok(tenant)
    }

    /// Moves a tenant to another plan.
    pub async fn set_plan(&self, id: &TenantId, plan: PlanId) -> Result<Tenant, Error> {
        self.update_tenant(id, |t| t.plan = plan).await
    }

    /// Suspends or reactivates a tenant.
    pub async fn set_status(&self, id: &TenantId, status: TenantStatus) -> Result<Tenant, Error> {
        self.update_tenant(id, |t| t.status = status).await
    }

    /// Replaces a tenant's overrides.
    pub async fn set_overrides(&self, id: &TenantId, overrides: TenantOverrides) -> Result<Tenant, Error> {
        self.update_tenant(id, |t| t.overrides = overrides).await
    }

    /// Counts a failed login for `key` (a lower-case e-mail) now; the state after it.
    pub async fn login_failed(&self, key: &str, policy: LockoutPolicy) -> Result<LoginGuard, Error> {
        self.inner.hot.login_failed(key, self.now(), policy).await
    }

    /// The login state of `key` now.
    pub async fn login_guard(&self, key: &str, policy: LockoutPolicy) -> Result<LoginGuard, Error> {
        self.inner.hot.login_guard(key, self.now(), policy).await
    }

    /// Clears the failures and lock of `key` (a successful login, or an admin's unlock).
    pub async fn clear_login(&self, key: &str) -> Result<(), Error> {
        self.inner.hot.clear_login(key).await
    }

    /// Clears the failures and locks of `key` counted per client address (see
    /// [`HotStore::clear_logins_from`]).
    pub async fn clear_logins_from(&self, key: &str) -> Result<(), Error> {
        self.inner.hot.clear_logins_from(key).await
    }

    /// Refuses the access token with id `jti` from now until `until`, when it expires.
    pub async fn revoke_token(&self, jti: &str, until: Timestamp) -> Result<(), Error> {
        self.inner.hot.revoke_token(jti, self.now(), until).await
    }

    /// Whether the access token with id `jti` is revoked now.
    pub async fn token_revoked(&self, jti: &str) -> Result<bool, Error> {
        self.inner.hot.token_revoked(jti, self.now()).await
    }

    /// Counts one call for `key` now in the key's fixed window (see
    /// [`HotStore::count_key`]); shared by every engine over the same hot store.
    pub async fn count_key(&self, key: &str, window: Duration, max: u32) -> Result<KeyCount, Error> {
        self.inner.hot.count_key(key, self.now(), window, max).await
    }

    /// Forgets every hot counter; they are rebuilt from the ledger on next use.
    ///
    /// It first waits for every decided call to hand its ledger record on (new decisions
    /// wait meanwhile), then writes what is queued, so no count it wipes is missing from
    /// the ledger. A caller holding a [`Ticket`] must settle it first, or this waits for it.
    pub async fn clear_hot(&self) -> Result<(), Error> {
        let _quiet = self.inner.handing_on.write().await;
        self.flush().await?;
        self.inner.hot.clear().await
    }
}
