//! [`MemoryHot`]: hot counters, seen ids, logins and revoked tokens in process memory.
//!
//! Sharded by tenant; login counters and revoked tokens, rarely written, have one lock
//! each (the tokens a read-write one), and no lock is ever held across an `.await`.
//! Nothing survives the process.

use std::collections::VecDeque;
use std::collections::hash_map::Entry;
use std::hash::BuildHasher;
use std::time::Duration;

use foldhash::fast::RandomState;

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};

use crate::Padded;
use crate::admit::{Standing, Verdict, WindowState, admit, reverted};
use crate::clock::Timestamp;
use crate::decision::Decision;
use crate::error::Error;
use crate::event::EventId;
use crate::plan::{Limit, Per};
use crate::store::{Admission, Admitted, HotSnapshot, HotStore, KeyCount, LockoutPolicy, LoginGuard, PeriodCredits};
use crate::tenant::{Period, TenantId};

use crate::store::sharded::{Map, Sharded};

/// The calendar windows and billing periods kept per tenant (older ones are dropped).
const KEPT_WINDOWS: usize = 4;

/// The most login keys [`MemoryHot`] keeps (expired ones go first when full, then the oldest).
const MAX_LOGINS: usize = 100_000;

/// The most revoked tokens [`MemoryHot`] keeps (expired ones go first when full, then those
/// closest to expiring).
const MAX_REVOKED_TOKENS: usize = 1_000_000;

/// The most keys [`HotStore::count_key`] windows [`MemoryHot`] keeps (ended ones go first
/// when full, then the oldest).
const MAX_KEY_WINDOWS: usize = 100_000;

/// Hot counters in process memory.
pub struct MemoryHot {
    tenants: Sharded<Counters>,
    ids: RandomState,
    max_remembered: usize,
    logins: Mutex<Logins>,
    max_logins: usize,
    /// Read on every call with an access token, written only by a logout.
    revoked: RwLock<RevokedTokens>,
    key_windows: Mutex<Map<String, KeyWindow>>,
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
            key_windows: Mutex::new(Map::default()),
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

    /// Where `limit` stands for an event at `at`.
    fn window(&self, limit: Limit, at: Timestamp) -> WindowState {
        if limit.per.is_calendar() {
            WindowState::Calls(self.quota(limit.per, limit.per.window_containing(at).0))
        } else {
            WindowState::Tat(self.tat(limit.per))
        }
    }

    /// Stores where `limit` stands for an event at `at`.
    fn set_window(&mut self, limit: Limit, at: Timestamp, state: WindowState) {
        match state {
            WindowState::Calls(calls) => *self.quotas(limit.per).get_mut(limit.per.window_containing(at).0) = calls,
            WindowState::Tat(Some(tat)) => self.set_tat(limit.per, tat),
            WindowState::Tat(None) => self.smooth[smooth_slot(limit.per)] = None,
        }
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
        let standing = Standing::read(a, self.credits.get(a.period.start), |limit| self.window(limit, a.at));
        let Verdict { decision, commit } = admit(a, &standing);
        if let Some(commit) = commit {
            for (&limit, &state) in a.limits.iter().zip(commit.windows()) {
                self.set_window(limit, a.at, state);
            }
            self.credits.get_mut(a.period.start).used += commit.cost;
        }
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
            let state = reverted(limit, self.window(limit, a.at));
            self.set_window(limit, a.at, state);
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

/// One key's fixed window for [`HotStore::count_key`].
#[derive(Clone, Copy)]
struct KeyWindow {
    start: Timestamp,
    end: Timestamp,
    count: u32,
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

    async fn discard(&self, tenant: &TenantId) -> Result<(), Error> {
        self.tenants.shard(tenant).lock().remove(tenant);
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
        self.key_windows.lock().clear();
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

    async fn clear_logins_from(&self, key: &str) -> Result<(), Error> {
        let prefix = format!("{key} from ");
        self.logins.lock().keys.retain(|k, _| !k.starts_with(&prefix));
        Ok(())
    }

    async fn revoke_token(&self, jti: &str, now: Timestamp, until: Timestamp) -> Result<(), Error> {
        self.revoked.write().revoke(jti, until, now);
        Ok(())
    }

    async fn token_revoked(&self, jti: &str, now: Timestamp) -> Result<bool, Error> {
        Ok(self.revoked.read().is_revoked(jti, now))
    }

    async fn count_key(&self, key: &str, now: Timestamp, window: Duration, max: u32) -> Result<KeyCount, Error> {
        let mut windows = self.key_windows.lock();
        let fresh = KeyWindow { start: now, end: now.plus(window), count: 0 };
        let w = match windows.get_mut(key) {
            Some(w) => {
                if w.end <= now {
                    *w = fresh;
                }
                w
            }
            None => {
                if windows.len() >= MAX_KEY_WINDOWS {
                    make_room(&mut windows, MAX_KEY_WINDOWS, |w| w.end > now, |w| w.start);
                }
                windows.entry(key.to_owned()).or_insert(fresh)
            }
        };
        if w.count >= max {
            return Ok(KeyCount::Over { retry_after: w.end.since(now) });
        }
        w.count += 1;
        Ok(KeyCount::Counted)
    }
}

#[cfg(test)]
mod tests;
