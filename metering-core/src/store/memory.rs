//! In-process backends: [`MemoryHot`] (hot counters) and [`MemoryRecords`] (records).
//!
//! Both are sharded by tenant so that threads deciding for different tenants rarely meet on
//! a lock (login counters and revoked tokens, rarely written, have one lock each, the
//! tokens a read-write one), and no lock is ever held across an `.await`. Nothing survives
//! the process.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasher;

use foldhash::fast::RandomState;

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};

use crate::Padded;
use crate::account::{ApiKey, RefreshToken, User};
use crate::audit::AuditEntry;
use crate::clock::Timestamp;
use crate::decision::{Decision, DenyReason, WindowStatus};
use crate::error::Error;
use crate::event::EventId;
use crate::ledger::{
    Appended, Grant, GroupBy, LedgerQuery, LedgerRecord, TimeBasis, UsageGroup, UsageSummary, UsageTotals,
};
use crate::limit::{Check, check_quota, check_smooth, next_tat, previous_tat};
use crate::plan::{Per, Plan, PlanId};
use crate::store::{Admission, Admitted, HotSnapshot, HotStore, LockoutPolicy, LoginGuard, PeriodCredits, RecordStore};
use crate::tenant::{Period, Tenant, TenantId};

const SHARDS: usize = 64;

/// The calendar windows and billing periods kept per tenant (older ones are dropped).
const KEPT_WINDOWS: usize = 4;

/// The most login keys [`MemoryHot`] keeps (expired ones go first when full, then the oldest).
const MAX_LOGINS: usize = 100_000;

/// The most revoked tokens [`MemoryHot`] keeps (expired ones go first when full, then those
/// closest to expiring).
const MAX_REVOKED_TOKENS: usize = 1_000_000;

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
    logins: Mutex<Logins>,
    max_logins: usize,
    /// Read on every call with an access token, written only by a logout.
    revoked: RwLock<RevokedTokens>,
}

impl MemoryHot {
    /// An empty store remembering at most 100,000 `event_id`s per tenant.
    pub fn new() -> Self {
        Self::with_max_remembered(100_000)
    }

    /// An empty store remembering at most `max` `event_id`s per tenant (oldest forgotten
    /// first; the ledger still refuses duplicates of forgotten ones).
    pub fn with_max_remembered(max: usize) -> Self {
        MemoryHot {
            tenants: Sharded::new(),
            ids: RandomState::default(),
            max_remembered: max.max(1),
            logins: Mutex::new(Logins::default()),
            max_logins: MAX_LOGINS,
            revoked: RwLock::new(RevokedTokens { until: Map::default(), max: MAX_REVOKED_TOKENS }),
        }
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
                // Down to the floor: a move to a plan with a smaller allowance can leave
                // more used than the new plan allows, which the balance shows as overage.
                credits_remaining: remaining.max(-(a.overdraft.min(i64::MAX as u64) as i64)),
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
        self.forget(a, key);
    }

    fn forget(&mut self, a: &Admission, key: u64) {
        if self.seen.get(&key).is_some_and(|s| s.event_id == a.event_id) {
            self.seen.remove(&key);
        }
    }
}

/// Login failures and locks by key.
#[derive(Default)]
struct Logins {
    keys: Map<String, Login>,
    /// Counts writes, to tell the oldest entries.
    writes: u64,
}

#[derive(Clone, Copy)]
struct Login {
    failures: u32,
    locked_until: Option<Timestamp>,
    /// When the entry stops mattering: the end of its lock, or else of its window.
    expires_at: Timestamp,
    /// The write that last changed it.
    written: u64,
}

impl Login {
    fn guard(&self, now: Timestamp) -> LoginGuard {
        if self.expires_at <= now {
            LoginGuard::default()
        } else {
            LoginGuard { failures: self.failures, locked_until: self.locked_until }
        }
    }
}

impl Logins {
    fn failed(&mut self, key: &str, now: Timestamp, policy: LockoutPolicy, max: usize) -> LoginGuard {
        self.writes += 1;
        let written = self.writes;
        let previous = self.keys.get(key).copied().filter(|l| l.expires_at > now);
        let mut login =
            previous.unwrap_or(Login { failures: 0, locked_until: None, expires_at: now.plus(policy.window), written });
        login.failures = login.failures.saturating_add(1);
        login.written = written;
        if login.locked_until.is_none() && login.failures >= policy.max_failures.max(1) {
            let until = now.plus(policy.lock_for);
            (login.locked_until, login.expires_at) = (Some(until), until);
        }
        match self.keys.get_mut(key) {
            Some(l) => *l = login,
            None => {
                if self.keys.len() >= max {
                    make_room(&mut self.keys, max, |l| l.expires_at > now, |l| l.written);
                }
                self.keys.insert(key.to_owned(), login);
            }
        }
        login.guard(now)
    }
}

/// Revoked access tokens by id, each with the instant it expires anyway.
struct RevokedTokens {
    until: Map<String, Timestamp>,
    max: usize,
}

impl RevokedTokens {
    fn revoke(&mut self, jti: &str, until: Timestamp, now: Timestamp) {
        if !self.until.contains_key(jti) && self.until.len() >= self.max {
            // Those closest to expiring go first: they come back for what is left of their
            // lifetime, the least harm a bound allows.
            make_room(&mut self.until, self.max, |until| *until > now, |until| *until);
        }
        let kept = self.until.entry(jti.to_owned()).or_insert(until);
        *kept = (*kept).max(until);
    }

    fn is_revoked(&self, jti: &str, now: Timestamp) -> bool {
        self.until.get(jti).is_some_and(|&until| until > now)
    }
}

/// Makes room in a map holding `max` entries or more: drops those `live` refuses, then, if
/// it is still full, the tenth with the lowest `rank` (and any ranked the same).
fn make_room<V, R: Ord + Copy>(
    map: &mut Map<String, V>,
    max: usize,
    live: impl Fn(&V) -> bool,
    rank: impl Fn(&V) -> R,
) {
    map.retain(|_, v| live(v));
    if map.len() >= max {
        let excess = map.len() + 1 - max * 9 / 10;
        let mut ranks: Vec<R> = map.values().map(&rank).collect();
        let (_, &mut highest_dropped, _) = ranks.select_nth_unstable(excess - 1);
        map.retain(|_, v| rank(v) > highest_dropped);
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

    async fn forget(&self, a: &Admission) -> Result<(), Error> {
        let key = self.ids.hash_one(&a.event_id);
        if let Some(c) = self.tenants.shard(&a.tenant).lock().get_mut(&a.tenant) {
            c.forget(a, key);
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
        if amount < 0 && remaining < -(overdraft.min(i64::MAX as u64) as i64) {
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
        self.logins.lock().keys.clear();
        self.revoked.write().until.clear();
        Ok(())
    }

    async fn login_failed(&self, key: &str, now: Timestamp, policy: LockoutPolicy) -> Result<LoginGuard, Error> {
        Ok(self.logins.lock().failed(key, now, policy, self.max_logins))
    }

    async fn login_guard(&self, key: &str, now: Timestamp, _policy: LockoutPolicy) -> Result<LoginGuard, Error> {
        let mut logins = self.logins.lock();
        let guard = logins.keys.get(key).map_or_else(LoginGuard::default, |l| l.guard(now));
        if guard == LoginGuard::default() {
            logins.keys.remove(key);
        }
        Ok(guard)
    }

    async fn clear_login(&self, key: &str) -> Result<(), Error> {
        self.logins.lock().keys.remove(key);
        Ok(())
    }

    async fn revoke_token(&self, jti: &str, now: Timestamp, until: Timestamp) -> Result<(), Error> {
        self.revoked.write().revoke(jti, until, now);
        Ok(())
    }

    async fn token_revoked(&self, jti: &str, now: Timestamp) -> Result<bool, Error> {
        Ok(self.revoked.read().is_revoked(jti, now))
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
    /// Refresh tokens by id, with whether they are spent (used or revoked).
    refresh_tokens: HashMap<String, (RefreshToken, bool)>,
    /// The audit log by `(at, id)`, and each entry's `at` by id (for the cursor).
    audit: BTreeMap<(Timestamp, String), AuditEntry>,
    audit_at: HashMap<String, Timestamp>,
}

impl Catalog {
    /// Refuses a new tenant whose id is taken.
    fn check_new_tenant(&self, tenant: &Tenant) -> Result<(), Error> {
        if self.tenants.contains_key(&tenant.id) {
            return Err(Error::AlreadyExists(format!("tenant {}", tenant.id)));
        }
        Ok(())
    }

    /// Refuses a new user whose id or e-mail is taken.
    fn check_new_user(&self, user: &User) -> Result<(), Error> {
        if self.users.contains_key(&user.id) || self.users.values().any(|u| u.email == user.email) {
            return Err(Error::AlreadyExists(format!("user {}", user.email)));
        }
        Ok(())
    }
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

    async fn insert_plan(&self, plan: &Plan) -> Result<(), Error> {
        match self.catalog.lock().plans.entry(plan.id.clone()) {
            std::collections::btree_map::Entry::Occupied(_) => Err(Error::AlreadyExists(format!("plan {}", plan.id))),
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(plan.clone());
                Ok(())
            }
        }
    }

    async fn plan(&self, id: &PlanId) -> Result<Option<Plan>, Error> {
        Ok(self.catalog.lock().plans.get(id).cloned())
    }

    async fn plans(&self) -> Result<Vec<Plan>, Error> {
        Ok(self.catalog.lock().plans.values().cloned().collect())
    }

    async fn insert_tenant(&self, tenant: &Tenant) -> Result<(), Error> {
        let mut catalog = self.catalog.lock();
        catalog.check_new_tenant(tenant)?;
        catalog.tenants.insert(tenant.id.clone(), tenant.clone());
        Ok(())
    }

    async fn insert_account(&self, tenant: &Tenant, user: &User) -> Result<(), Error> {
        let mut catalog = self.catalog.lock();
        catalog.check_new_tenant(tenant)?;
        catalog.check_new_user(user)?;
        catalog.tenants.insert(tenant.id.clone(), tenant.clone());
        catalog.users.insert(user.id.clone(), user.clone());
        Ok(())
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
        catalog.check_new_user(user)?;
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

    async fn users_of_tenant(&self, tenant: &TenantId) -> Result<Vec<User>, Error> {
        let mut users: Vec<User> =
            self.catalog.lock().users.values().filter(|u| u.tenant_id == *tenant).cloned().collect();
        users.sort_by(|a, b| a.email.cmp(&b.email));
        Ok(users)
    }

    async fn insert_refresh_token(&self, token: &RefreshToken) -> Result<(), Error> {
        match self.catalog.lock().refresh_tokens.entry(token.id.clone()) {
            Entry::Occupied(_) => Err(Error::AlreadyExists(format!("refresh token {}", token.id))),
            Entry::Vacant(v) => {
                v.insert((token.clone(), false));
                Ok(())
            }
        }
    }

    async fn consume_refresh_token(&self, id: &str, now: Timestamp) -> Result<Option<RefreshToken>, Error> {
        let mut catalog = self.catalog.lock();
        Ok(match catalog.refresh_tokens.get_mut(id) {
            Some((token, spent)) if !*spent && token.expires_at > now => {
                *spent = true;
                Some(token.clone())
            }
            _ => None,
        })
    }

    async fn revoke_refresh_tokens(&self, user_id: &str) -> Result<u64, Error> {
        let mut catalog = self.catalog.lock();
        let mut revoked = 0;
        for (token, spent) in catalog.refresh_tokens.values_mut() {
            if token.user_id == user_id && !*spent {
                *spent = true;
                revoked += 1;
            }
        }
        Ok(revoked)
    }

    async fn prune_refresh_tokens(&self, now: Timestamp) -> Result<u64, Error> {
        let mut catalog = self.catalog.lock();
        let before = catalog.refresh_tokens.len();
        catalog.refresh_tokens.retain(|_, (token, spent)| !*spent && token.expires_at > now);
        Ok((before - catalog.refresh_tokens.len()) as u64)
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), Error> {
        let mut catalog = self.catalog.lock();
        if catalog.audit_at.contains_key(&entry.id) {
            return Err(Error::AlreadyExists(format!("audit entry {}", entry.id)));
        }
        catalog.audit_at.insert(entry.id.clone(), entry.at);
        catalog.audit.insert((entry.at, entry.id.clone()), entry.clone());
        Ok(())
    }

    async fn audit(&self, before: Option<&str>, limit: usize) -> Result<Vec<AuditEntry>, Error> {
        let catalog = self.catalog.lock();
        let end = match before {
            Some(id) => match catalog.audit_at.get(id) {
                Some(&at) => std::ops::Bound::Excluded((at, id.to_owned())),
                None => return Ok(Vec::new()),
            },
            None => std::ops::Bound::Unbounded,
        };
        let page = catalog.audit.range((std::ops::Bound::Unbounded, end)).rev();
        Ok(page.take(limit.min(LedgerQuery::MAX_LIMIT)).map(|(_, e)| e.clone()).collect())
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

    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>, Error> {
        Ok(self.catalog.lock().keys.get(id).cloned())
    }

    async fn active_api_keys(&self, after: Option<&str>, limit: usize) -> Result<Vec<ApiKey>, Error> {
        let catalog = self.catalog.lock();
        let start = match after {
            Some(a) => std::ops::Bound::Excluded(a),
            None => std::ops::Bound::Unbounded,
        };
        let page = catalog.keys.range::<str, _>((start, std::ops::Bound::Unbounded)).map(|(_, k)| k);
        Ok(page.filter(|k| k.revoked_at.is_none()).take(limit.min(LedgerQuery::MAX_LIMIT)).cloned().collect())
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
        found.sort_by(|a, b| b.listing_key().cmp(&a.listing_key()));
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
            if basis.counts(r, from, to) {
                totals.add(r);
            }
        }
        Ok(totals)
    }

    async fn usage_summary(
        &self,
        query: &LedgerQuery,
        group_by: GroupBy,
        limit: usize,
    ) -> Result<Vec<UsageGroup>, Error> {
        let query = LedgerQuery { before: None, ..query.clone() };
        let mut summary = UsageSummary::new(group_by);
        let mut add =
            |ledger: &TenantLedger| ledger.records.iter().filter(|r| query.matches(r)).for_each(|r| summary.add(r));
        match &query.tenant {
            Some(tenant) => {
                if let Some(ledger) = self.ledger.shard(tenant).lock().get(tenant) {
                    add(ledger);
                }
            }
            None => {
                for Padded(shard) in self.ledger.shards.iter() {
                    shard.lock().values().for_each(&mut add);
                }
            }
        }
        Ok(summary.finish(limit))
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn at(minutes: i64) -> Timestamp {
        Timestamp::from_secs(1_773_489_600 + minutes * 60)
    }

    fn guard(failures: u32, locked_until: Option<Timestamp>) -> LoginGuard {
        LoginGuard { failures, locked_until }
    }

    #[tokio::test]
    async fn the_fifth_failure_locks_until_the_lock_passes() {
        let hot = MemoryHot::new();
        let policy = LockoutPolicy::default();
        assert_eq!(hot.login_guard("ann@example.com", at(0), policy).await.unwrap(), LoginGuard::default());
        for n in 1..=4 {
            let g = hot.login_failed("ann@example.com", at(n), policy).await.unwrap();
            assert_eq!(g, guard(n as u32, None), "failure {n} does not lock");
        }
        let locked = guard(5, Some(at(5).plus(15 * MINUTE)));
        assert_eq!(hot.login_failed("ann@example.com", at(5), policy).await.unwrap(), locked);
        assert_eq!(hot.login_guard("ann@example.com", at(19), policy).await.unwrap(), locked);
        assert_eq!(hot.login_guard("bob@example.com", at(19), policy).await.unwrap(), LoginGuard::default());
        assert_eq!(hot.login_failed("ann@example.com", at(6), policy).await.unwrap(), guard(6, locked.locked_until));
        assert_eq!(hot.login_guard("ann@example.com", at(20), policy).await.unwrap(), LoginGuard::default());
        assert_eq!(hot.login_failed("ann@example.com", at(21), policy).await.unwrap(), guard(1, None));
    }

    #[tokio::test]
    async fn failures_older_than_the_window_do_not_count() {
        let hot = MemoryHot::new();
        let policy = LockoutPolicy { max_failures: 3, window: 10 * MINUTE, lock_for: MINUTE };
        hot.login_failed("ann@example.com", at(0), policy).await.unwrap();
        hot.login_failed("ann@example.com", at(9), policy).await.unwrap();
        assert_eq!(hot.login_guard("ann@example.com", at(9), policy).await.unwrap(), guard(2, None));
        assert_eq!(hot.login_guard("ann@example.com", at(10), policy).await.unwrap(), LoginGuard::default());
        assert_eq!(hot.login_failed("ann@example.com", at(10), policy).await.unwrap(), guard(1, None));
        assert_eq!(hot.login_failed("ann@example.com", at(11), policy).await.unwrap(), guard(2, None));
        assert_eq!(hot.login_failed("ann@example.com", at(12), policy).await.unwrap(), guard(3, Some(at(13))));
    }

    #[tokio::test]
    async fn a_revoked_token_is_refused_until_it_expires() {
        let hot = MemoryHot::new();
        hot.revoke_token("jti-1", at(0), at(15)).await.unwrap();
        assert!(hot.token_revoked("jti-1", at(0)).await.unwrap());
        assert!(hot.token_revoked("jti-1", at(14)).await.unwrap());
        assert!(!hot.token_revoked("jti-1", at(15)).await.unwrap(), "expired: nothing left to refuse");
        assert!(!hot.token_revoked("jti-2", at(0)).await.unwrap());
        // Revoking again never shortens what is remembered.
        hot.revoke_token("jti-1", at(1), at(5)).await.unwrap();
        assert!(hot.token_revoked("jti-1", at(10)).await.unwrap());
        hot.clear().await.unwrap();
        assert!(!hot.token_revoked("jti-1", at(10)).await.unwrap());
    }

    #[tokio::test]
    async fn when_full_revocations_go_expired_first_then_closest_to_expiring() {
        let hot = MemoryHot::new();
        hot.revoked.write().max = 10;
        hot.revoke_token("expired", at(0), at(1)).await.unwrap();
        for n in 0..9 {
            hot.revoke_token(&format!("jti-{n}"), at(0), at(10 + n)).await.unwrap();
        }
        // Full: the expired entry goes and nothing else.
        hot.revoke_token("jti-9", at(2), at(19)).await.unwrap();
        assert_eq!(hot.revoked.read().until.len(), 10);
        for n in 0..10 {
            assert!(hot.token_revoked(&format!("jti-{n}"), at(2)).await.unwrap(), "jti-{n}");
        }
        // Full of live entries: the two closest to expiring go, to make room for a tenth.
        hot.revoke_token("jti-10", at(2), at(20)).await.unwrap();
        let kept: Vec<bool> = revoked_of(&hot, 11).await;
        assert_eq!(kept, [false, false, true, true, true, true, true, true, true, true, true]);
    }

    async fn revoked_of(hot: &MemoryHot, n: usize) -> Vec<bool> {
        let mut kept = Vec::new();
        for i in 0..n {
            kept.push(hot.token_revoked(&format!("jti-{i}"), at(2)).await.unwrap());
        }
        kept
    }

    #[tokio::test]
    async fn clear_login_and_clear_unlock() {
        let hot = MemoryHot::new();
        let policy = LockoutPolicy { max_failures: 1, ..LockoutPolicy::default() };
        for key in ["ann@example.com", "bob@example.com"] {
            assert!(hot.login_failed(key, at(0), policy).await.unwrap().locked_until.is_some());
        }
        hot.clear_login("ann@example.com").await.unwrap();
        assert_eq!(hot.login_guard("ann@example.com", at(1), policy).await.unwrap(), LoginGuard::default());
        assert_eq!(hot.login_guard("bob@example.com", at(1), policy).await.unwrap().failures, 1);
        hot.clear().await.unwrap();
        assert_eq!(hot.login_guard("bob@example.com", at(1), policy).await.unwrap(), LoginGuard::default());
    }

    #[tokio::test]
    async fn login_keys_stay_bounded_dropping_expired_then_oldest() {
        let hot = MemoryHot { max_logins: 100, ..MemoryHot::new() };
        let policy = LockoutPolicy::default();
        let len = || hot.logins.lock().keys.len();
        for i in 0..100 {
            hot.login_failed(&format!("old-{i}@example.com"), at(0), policy).await.unwrap();
        }
        for i in 0..50 {
            hot.login_failed(&format!("new-{i}@example.com"), at(10), policy).await.unwrap();
        }
        assert!(len() <= 100);
        assert_eq!(hot.login_guard("old-0@example.com", at(10), policy).await.unwrap(), LoginGuard::default());
        assert_eq!(hot.login_guard("old-99@example.com", at(10), policy).await.unwrap().failures, 1);

        // At 21 minutes the old ones have expired: when the map fills they go, every new one stays.
        for i in 0..10 {
            hot.login_failed(&format!("flood-{i}@example.com"), at(21), policy).await.unwrap();
            assert!(len() <= 100);
        }
        for i in 0..50 {
            let g = hot.login_guard(&format!("new-{i}@example.com"), at(21), policy).await.unwrap();
            assert_eq!(g.failures, 1, "new-{i} kept");
        }
        for i in 10..1_000 {
            hot.login_failed(&format!("flood-{i}@example.com"), at(21), policy).await.unwrap();
            assert!(len() <= 100);
        }
        assert_eq!(hot.login_guard("flood-999@example.com", at(21), policy).await.unwrap().failures, 1);
        assert_eq!(hot.login_guard("new-0@example.com", at(21), policy).await.unwrap(), LoginGuard::default());
    }

    #[tokio::test]
    async fn api_keys_are_found_by_id_and_listed_across_tenants() {
        crate::store::checks::api_keys_by_id_and_across_tenants(&MemoryRecords::new()).await;
    }
}
