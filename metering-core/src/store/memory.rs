//! In-process backends: [`MemoryHot`] (hot counters) and [`MemoryRecords`] (records).
//!
//! Both are sharded by tenant so that threads deciding for different tenants rarely meet
//! on a lock, and no lock is ever held across an `.await`. Nothing survives the process.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasher;

use foldhash::fast::RandomState;

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::Padded;
use crate::account::{ApiKey, User};
use crate::clock::Timestamp;
use crate::decision::{Decision, DenyReason, WindowStatus};
use crate::error::Error;
use crate::event::EventId;
use crate::ledger::{Appended, Grant, LedgerQuery, LedgerRecord, TimeBasis, UsageTotals};
use crate::limit::{Check, check_quota, check_smooth, next_tat, previous_tat};
use crate::plan::{Per, Plan, PlanId};
use crate::store::{Admission, Admitted, HotSnapshot, HotStore, PeriodCredits, RecordStore};
use crate::tenant::{Period, Tenant, TenantId};

const SHARDS: usize = 64;

/// The calendar windows and billing periods kept per tenant (older ones are dropped).
const KEPT_WINDOWS: usize = 4;

type Map<K, V> = HashMap<K, V, RandomState>;

type Shard<T> = Padded<Mutex<Map<TenantId, T>>>;

struct Sharded<T> {
    shards: Box<[Shard<T>]>,
    hasher: RandomState,
}

impl<T> Sharded<T> {
    fn new() -> Self {
        Sharded {
            shards: (0..SHARDS).map(|_| Padded(Mutex::new(Map::default()))).collect(),
            hasher: RandomState::default(),
        }
    }

    fn shard(&self, tenant: &TenantId) -> &Mutex<Map<TenantId, T>> {
        &self.shards[self.hasher.hash_one(tenant) as usize % SHARDS].0
    }
}

/// Hot counters in process memory.
pub struct MemoryHot {
    tenants: Sharded<Counters>,
    ids: RandomState,
    max_remembered: usize,
}

impl MemoryHot {
    /// An empty store remembering at most 100,000 `event_id`s per tenant.
    pub fn new() -> Self {
        Self::with_max_remembered(100_000)
    }

    /// An empty store remembering at most `max` `event_id`s per tenant (oldest forgotten
    /// first; the ledger still refuses duplicates of forgotten ones).
    pub fn with_max_remembered(max: usize) -> Self {
        MemoryHot { tenants: Sharded::new(), ids: RandomState::default(), max_remembered: max.max(1) }
    }
}

impl Default for MemoryHot {
    fn default() -> Self {
        Self::new()
    }
}

/// A few keyed values kept inline; when full, the entry with the smallest key goes.
#[derive(Clone, Copy)]
struct Slots<K, V, const N: usize>([Option<(K, V)>; N]);

impl<K: Copy + Ord, V: Copy + Default, const N: usize> Default for Slots<K, V, N> {
    fn default() -> Self {
        Slots([None; N])
    }
}

impl<K: Copy + Ord, V: Copy + Default, const N: usize> Slots<K, V, N> {
    fn get(&self, key: K) -> V {
        self.0.iter().flatten().find(|(k, _)| *k == key).map_or_else(V::default, |(_, v)| *v)
    }

    fn get_mut(&mut self, key: K) -> &mut V {
        let i = self.0.iter().position(|e| e.is_some_and(|(k, _)| k == key)).unwrap_or_else(|| {
            let i = self.0.iter().position(Option::is_none);
            let i = i.unwrap_or_else(|| (0..N).min_by_key(|&i| self.0[i].map(|(k, _)| k)).unwrap_or(0));
            self.0[i] = None;
            i
        });
        &mut self.0[i].get_or_insert((key, V::default())).1
    }
}

/// One tenant's counters, kept inline so a decision touches few cache lines.
#[derive(Default)]
struct Counters {
    /// Calendar windows by start, for `day` and `month`.
    days: Slots<Timestamp, u32, KEPT_WINDOWS>,
    months: Slots<Timestamp, u32, KEPT_WINDOWS>,
    /// GCRA state for `second`, `minute` and `hour`.
    smooth: [Option<Timestamp>; 3],
    /// Credits by billing period start.
    credits: Slots<Timestamp, PeriodCredits, KEPT_WINDOWS>,
    /// Remembered event ids, keyed by a hash of the id (the id is checked on a hit).
    seen: Map<u64, Seen>,
    seen_order: VecDeque<(Timestamp, u64)>,
}

struct Seen {
    event_id: EventId,
    fingerprint: u64,
    decision: Decision,
}

fn smooth_slot(per: Per) -> usize {
    match per {
        Per::Second => 0,
        Per::Minute => 1,
        _ => 2,
    }
}

impl Counters {
    fn quotas(&mut self, per: Per) -> &mut Slots<Timestamp, u32, KEPT_WINDOWS> {
        if per == Per::Day { &mut self.days } else { &mut self.months }
    }

    fn quota(&self, per: Per, start: Timestamp) -> u32 {
        if per == Per::Day { self.days.get(start) } else { self.months.get(start) }
    }

    fn tat(&self, per: Per) -> Option<Timestamp> {
        self.smooth[smooth_slot(per)]
    }

    fn set_tat(&mut self, per: Per, tat: Timestamp) {
        self.smooth[smooth_slot(per)] = Some(tat);
    }

    fn forget_expired(&mut self, now: Timestamp, max: usize) {
        while let Some((until, key)) = self.seen_order.front() {
            if *until > now && self.seen_order.len() < max {
                break;
            }
            self.seen.remove(key);
            self.seen_order.pop_front();
        }
    }

    /// The whole decision, under the tenant's lock.
    fn admit(&mut self, a: &Admission, key: u64, max_remembered: usize) -> Admitted {
        self.forget_expired(a.now, max_remembered);
        if a.remember
            && let Some(seen) = self.seen.get(&key).filter(|s| s.event_id == a.event_id)
        {
            return if seen.fingerprint == a.fingerprint {
                Admitted::Replayed(seen.decision.clone())
            } else {
                Admitted::Conflict
            };
        }
        let mut limits = Vec::with_capacity(a.limits.len());
        let mut retry_after = None::<u64>;
        for &limit in a.limits.iter() {
            let check = if limit.per.is_calendar() {
                let (start, end) = limit.per.window_containing(a.at);
                check_quota(limit, self.quota(limit.per, start), end, a.now)
            } else {
                check_smooth(limit, self.tat(limit.per), a.now)
            };
            if let Check::Full { retry_after: r, .. } = check {
                retry_after = Some(retry_after.map_or(r, |x| x.max(r)));
            }
            limits.push(check);
        }
        let credits = self.credits.get(a.period.start);
        let remaining = a.allowance as i64 + credits.granted - credits.used as i64;
        let reason = a.denial.or_else(|| {
            if retry_after.is_some() {
                Some(DenyReason::RateLimited)
            } else if remaining - (a.cost as i64) < -(a.overdraft as i64) {
                Some(DenyReason::InsufficientCredits)
            } else {
                None
            }
        });
        let decision = match reason {
            None => {
                for &limit in a.limits.iter() {
                    if limit.per.is_calendar() {
                        *self.quotas(limit.per).get_mut(limit.per.window_containing(a.at).0) += 1;
                    } else {
                        let tat = next_tat(limit, self.tat(limit.per), a.now);
                        self.set_tat(limit.per, tat);
                    }
                }
                self.credits.get_mut(a.period.start).used += a.cost;
                Decision {
                    event_id: a.event_id.clone(),
                    allowed: true,
                    reason: None,
                    credits_charged: a.cost,
                    credits_remaining: remaining - a.cost as i64,
                    limits: limits.iter().map(Check::status).collect(),
                    retry_after: None,
                }
            }
            Some(reason) => Decision {
                event_id: a.event_id.clone(),
                allowed: false,
                reason: Some(reason),
                credits_charged: 0,
                credits_remaining: remaining,
                limits: limits.iter().map(as_it_stands).collect(),
                retry_after: (reason == DenyReason::RateLimited).then_some(retry_after).flatten(),
            },
        };
        if a.remember {
            let seen = Seen { event_id: a.event_id.clone(), fingerprint: a.fingerprint, decision: decision.clone() };
            if self.seen.insert(key, seen).is_none() {
                self.seen_order.push_back((a.remember_until, key));
            }
        }
        Admitted::Decided(decision)
    }

    fn revert(&mut self, a: &Admission, key: u64) {
        for &limit in a.limits.iter() {
            if limit.per.is_calendar() {
                let count = self.quotas(limit.per).get_mut(limit.per.window_containing(a.at).0);
                *count = count.saturating_sub(1);
            } else if let Some(tat) = self.tat(limit.per) {
                self.set_tat(limit.per, previous_tat(limit, tat));
            }
        }
        let c = self.credits.get_mut(a.period.start);
        c.used = c.used.saturating_sub(a.cost);
        if self.seen.get(&key).is_some_and(|s| s.event_id == a.event_id) {
            self.seen.remove(&key);
        }
    }
}

/// A window a denied call did not use: what it allows now, not after the call.
fn as_it_stands(check: &Check) -> WindowStatus {
    match *check {
        Check::Fits { status } => WindowStatus { remaining: (status.remaining + 1).min(status.limit), ..status },
        Check::Full { status, .. } => status,
    }
}

#[async_trait]
impl HotStore for MemoryHot {
    async fn admit(&self, a: &Admission) -> Result<Admitted, Error> {
        let key = if a.remember { self.ids.hash_one(&a.event_id) } else { 0 };
        let mut shard = self.tenants.shard(&a.tenant).lock();
        Ok(match shard.get_mut(&a.tenant) {
            Some(counters) => counters.admit(a, key, self.max_remembered),
            None => Admitted::Unloaded,
        })
    }

    async fn revert(&self, a: &Admission) -> Result<(), Error> {
        let key = self.ids.hash_one(&a.event_id);
        if let Some(c) = self.tenants.shard(&a.tenant).lock().get_mut(&a.tenant) {
            c.revert(a, key);
        }
        Ok(())
    }

    async fn load(&self, tenant: &TenantId, s: HotSnapshot) -> Result<(), Error> {
        if let Entry::Vacant(v) = self.tenants.shard(tenant).lock().entry(tenant.clone()) {
            let mut counters = Counters::default();
            for (per, start, count) in s.quotas {
                *counters.quotas(per).get_mut(start) = count;
            }
            for (per, tat) in s.smooth {
                counters.set_tat(per, tat);
            }
            for (start, used, granted) in s.credits {
                *counters.credits.get_mut(start) = PeriodCredits { used, granted };
            }
            v.insert(counters);
        }
        Ok(())
    }

    async fn grant(
        &self,
        tenant: &TenantId,
        period: Period,
        allowance: u64,
        overdraft: u64,
        amount: i64,
    ) -> Result<Option<i64>, Error> {
        let mut shard = self.tenants.shard(tenant).lock();
        let Some(counters) = shard.get_mut(tenant) else { return Ok(None) };
        let c = counters.credits.get_mut(period.start);
        let remaining =
            (allowance as i64).saturating_add(c.granted).saturating_add(amount).saturating_sub(c.used as i64);
        if remaining < -(overdraft.min(i64::MAX as u64) as i64) {
            return Err(Error::BelowFloor);
        }
        c.granted += amount;
        Ok(Some(remaining))
    }

    async fn credits(&self, tenant: &TenantId, period_start: Timestamp) -> Result<Option<PeriodCredits>, Error> {
        Ok(self.tenants.shard(tenant).lock().get(tenant).map(|c| c.credits.get(period_start)))
    }

    async fn clear(&self) -> Result<(), Error> {
        for Padded(shard) in self.tenants.shards.iter() {
            shard.lock().clear();
        }
        Ok(())
    }
}

/// Durable records in process memory (for tests and library use).
pub struct MemoryRecords {
    catalog: Mutex<Catalog>,
    ledger: Sharded<TenantLedger>,
}

#[derive(Default)]
struct Catalog {
    plans: BTreeMap<PlanId, Plan>,
    tenants: BTreeMap<TenantId, Tenant>,
    users: HashMap<String, User>,
    keys: BTreeMap<String, ApiKey>,
    grants: Vec<Grant>,
}

#[derive(Default)]
struct TenantLedger {
    records: Vec<LedgerRecord>,
    by_id: Map<EventId, usize>,
}

impl MemoryRecords {
    /// An empty store.
    pub fn new() -> Self {
        MemoryRecords { catalog: Mutex::new(Catalog::default()), ledger: Sharded::new() }
    }
}

impl Default for MemoryRecords {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl RecordStore for MemoryRecords {
    async fn put_plan(&self, plan: &Plan) -> Result<(), Error> {
        self.catalog.lock().plans.insert(plan.id.clone(), plan.clone());
        Ok(())
    }

    async fn plan(&self, id: &PlanId) -> Result<Option<Plan>, Error> {
        Ok(self.catalog.lock().plans.get(id).cloned())
    }

    async fn plans(&self) -> Result<Vec<Plan>, Error> {
        Ok(self.catalog.lock().plans.values().cloned().collect())
    }

    async fn insert_tenant(&self, tenant: &Tenant) -> Result<(), Error> {
        match self.catalog.lock().tenants.entry(tenant.id.clone()) {
            std::collections::btree_map::Entry::Occupied(_) => {
                Err(Error::AlreadyExists(format!("tenant {}", tenant.id)))
            }
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(tenant.clone());
                Ok(())
            }
        }
    }

    async fn update_tenant(&self, tenant: &Tenant) -> Result<(), Error> {
        match self.catalog.lock().tenants.get_mut(&tenant.id) {
            Some(t) => {
                *t = tenant.clone();
                Ok(())
            }
            None => Err(Error::UnknownTenant(tenant.id.clone())),
        }
    }

    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, Error> {
        Ok(self.catalog.lock().tenants.get(id).cloned())
    }

    async fn tenants(&self, after: Option<&TenantId>, limit: usize) -> Result<Vec<Tenant>, Error> {
        let catalog = self.catalog.lock();
        let iter: Box<dyn Iterator<Item = &Tenant>> = match after {
            Some(a) => Box::new(
                catalog
                    .tenants
                    .range::<TenantId, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
                    .map(|(_, t)| t),
            ),
            None => Box::new(catalog.tenants.values()),
        };
        Ok(iter.take(limit).cloned().collect())
    }

    async fn insert_user(&self, user: &User) -> Result<(), Error> {
        let mut catalog = self.catalog.lock();
        if catalog.users.contains_key(&user.id) || catalog.users.values().any(|u| u.email == user.email) {
            return Err(Error::AlreadyExists(format!("user {}", user.email)));
        }
        catalog.users.insert(user.id.clone(), user.clone());
        Ok(())
    }

    async fn update_user(&self, user: &User) -> Result<(), Error> {
        let mut catalog = self.catalog.lock();
        if catalog.users.values().any(|u| u.email == user.email && u.id != user.id) {
            return Err(Error::AlreadyExists(format!("user {}", user.email)));
        }
        match catalog.users.get_mut(&user.id) {
            Some(u) => {
                *u = user.clone();
                Ok(())
            }
            None => Err(Error::AlreadyExists(format!("no user {}", user.id))),
        }
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, Error> {
        Ok(self.catalog.lock().users.values().find(|u| u.email == email).cloned())
    }

    async fn user(&self, id: &str) -> Result<Option<User>, Error> {
        Ok(self.catalog.lock().users.get(id).cloned())
    }

    async fn insert_api_key(&self, key: &ApiKey) -> Result<(), Error> {
        let mut catalog = self.catalog.lock();
        if catalog.keys.contains_key(&key.id) || catalog.keys.values().any(|k| k.key_hash == key.key_hash) {
            return Err(Error::AlreadyExists(format!("api key {}", key.id)));
        }
        catalog.keys.insert(key.id.clone(), key.clone());
        Ok(())
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, Error> {
        Ok(self.catalog.lock().keys.values().find(|k| k.key_hash == key_hash).cloned())
    }

    async fn api_keys(&self, tenant: Option<&TenantId>) -> Result<Vec<ApiKey>, Error> {
        Ok(self.catalog.lock().keys.values().filter(|k| k.tenant_id.as_ref() == tenant).cloned().collect())
    }

    async fn revoke_api_key(&self, id: &str, at: Timestamp) -> Result<bool, Error> {
        Ok(match self.catalog.lock().keys.get_mut(id) {
            Some(k) => {
                k.revoked_at.get_or_insert(at);
                true
            }
            None => false,
        })
    }

    async fn append(&self, records: Vec<LedgerRecord>) -> Result<Vec<Appended>, Error> {
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            let mut shard = self.ledger.shard(&r.event.tenant_id).lock();
            let ledger = shard.entry(r.event.tenant_id.clone()).or_default();
            match ledger.by_id.get(&r.event.event_id) {
                Some(&i) => out.push(Appended::Duplicate(Box::new(ledger.records[i].clone()))),
                None => {
                    ledger.by_id.insert(r.event.event_id.clone(), ledger.records.len());
                    ledger.records.push(r);
                    out.push(Appended::Inserted);
                }
            }
        }
        Ok(out)
    }

    async fn record(&self, tenant: &TenantId, event_id: &EventId) -> Result<Option<LedgerRecord>, Error> {
        let shard = self.ledger.shard(tenant).lock();
        Ok(shard.get(tenant).and_then(|l| l.by_id.get(event_id).map(|&i| l.records[i].clone())))
    }

    async fn records(&self, query: &LedgerQuery) -> Result<Vec<LedgerRecord>, Error> {
        let mut found = Vec::new();
        for Padded(shard) in self.ledger.shards.iter() {
            let shard = shard.lock();
            for ledger in shard.values() {
                found.extend(ledger.records.iter().filter(|r| query.matches(r)).cloned());
            }
        }
        found.sort_by(|a, b| (b.event.timestamp, &b.event.event_id).cmp(&(a.event.timestamp, &a.event.event_id)));
        found.truncate(query.limit.min(LedgerQuery::MAX_LIMIT));
        Ok(found)
    }

    async fn usage_totals(
        &self,
        tenant: &TenantId,
        basis: TimeBasis,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<UsageTotals, Error> {
        let shard = self.ledger.shard(tenant).lock();
        let mut totals = UsageTotals::default();
        for r in shard.get(tenant).map(|l| l.records.as_slice()).unwrap_or_default() {
            let t = match basis {
                TimeBasis::Event => r.event.timestamp,
                TimeBasis::Decided => r.decided_at,
            };
            if r.counted && t >= from && t < to {
                totals.calls += 1;
                totals.credits += r.decision.credits_charged;
            }
        }
        Ok(totals)
    }

    async fn prune(&self, before: Timestamp) -> Result<u64, Error> {
        let mut removed = 0;
        for Padded(shard) in self.ledger.shards.iter() {
            for ledger in shard.lock().values_mut() {
                let len = ledger.records.len();
                ledger.records.retain(|r| r.event.timestamp >= before);
                if ledger.records.len() != len {
                    removed += (len - ledger.records.len()) as u64;
                    ledger.by_id =
                        ledger.records.iter().enumerate().map(|(i, r)| (r.event.event_id.clone(), i)).collect();
                }
            }
        }
        Ok(removed)
    }

    async fn add_grant(&self, grant: &Grant) -> Result<(), Error> {
        self.catalog.lock().grants.push(grant.clone());
        Ok(())
    }

    async fn granted(&self, tenant: &TenantId, period_start: Timestamp) -> Result<i64, Error> {
        Ok(self
            .catalog
            .lock()
            .grants
            .iter()
            .filter(|g| g.tenant_id == *tenant && g.period.start == period_start)
            .map(|g| g.amount)
            .sum())
    }

    async fn ping(&self) -> Result<(), Error> {
        Ok(())
    }
}
