//! The policy cache: a tenant with its effective plan (plan + overrides), resolved once
//! and reused until it changes here or its time to live runs out (for changes made by
//! another instance).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;

use crate::Padded;
use crate::clock::Timestamp;
use crate::plan::{Limit, Plan};
use crate::tenant::{Period, Tenant, TenantId};

/// A tenant and the plan that applies to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The tenant record.
    pub tenant: Tenant,
    /// Its plan with its overrides applied.
    pub plan: Plan,
    /// The plan's windows, shared with every admission.
    pub(crate) limits: Arc<[Limit]>,
    /// The billing period current when the policy was resolved.
    period: Period,
}

impl Policy {
    pub(crate) fn new(tenant: Tenant, plan: Plan, now: Timestamp) -> Self {
        let period = tenant.billing_anchor.period_containing(now);
        Policy { limits: plan.limits.as_slice().into(), tenant, plan, period }
    }

    /// The tenant's billing period that contains `t`.
    pub fn period_containing(&self, t: Timestamp) -> Period {
        if self.period.start <= t && t < self.period.end {
            self.period
        } else {
            self.tenant.billing_anchor.period_containing(t)
        }
    }
}

const SHARDS: usize = 32;

type Entries = HashMap<TenantId, (Arc<Policy>, Timestamp), foldhash::fast::RandomState>;

/// A bounded, sharded map from tenant to policy.
pub(crate) struct PolicyCache {
    shards: Box<[Padded<RwLock<Entries>>]>,
    /// Counts invalidations, so a policy read from the records before one is not cached
    /// after it.
    epoch: AtomicU64,
    per_shard: usize,
    ttl: Duration,
    hasher: foldhash::fast::RandomState,
}

impl PolicyCache {
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        PolicyCache {
            shards: (0..SHARDS).map(|_| Padded(RwLock::new(Entries::default()))).collect(),
            epoch: AtomicU64::new(0),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            ttl,
            hasher: Default::default(),
        }
    }

    fn shard(&self, id: &TenantId) -> &RwLock<Entries> {
        &self.shards[self.hasher.hash_one(id) as usize % SHARDS].0
    }

    /// The cached policy, if present and fresh at `now`.
    pub(crate) fn get(&self, id: &TenantId, now: Timestamp) -> Option<Arc<Policy>> {
        let shard = self.shard(id).read();
        let (policy, loaded) = shard.get(id)?;
        (now.since(*loaded) < self.ttl && *loaded <= now).then(|| Arc::clone(policy))
    }

    /// The invalidations so far: taken before reading a policy's records, handed to
    /// [`insert`](Self::insert) after.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Caches a policy loaded at `now` from records read after [`epoch`](Self::epoch)
    /// answered `read_at`, unless an invalidation came since (the records may be older
    /// than it); a full shard is emptied first (simple and bounded).
    pub(crate) fn insert(&self, policy: Arc<Policy>, now: Timestamp, read_at: u64) {
        let mut shard = self.shard(&policy.tenant.id).write();
        if self.epoch() != read_at {
            return;
        }
        if shard.len() >= self.per_shard && !shard.contains_key(&policy.tenant.id) {
            shard.clear();
        }
        shard.insert(policy.tenant.id.clone(), (policy, now));
    }

    /// Forgets one tenant.
    pub(crate) fn invalidate(&self, id: &TenantId) {
        let mut shard = self.shard(id).write();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        shard.remove(id);
    }

    /// Forgets every tenant (after a plan changed).
    pub(crate) fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for Padded(s) in self.shards.iter() {
            s.write().clear();
        }
    }
}
