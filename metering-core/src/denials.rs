//! How many denied calls of one tenant reach the ledger.
//!
//! Denials charge nothing, and a client that ignores `Retry-After` can send them as fast as
//! the network allows; recording each one would let it fill the disk. So each tenant gets
//! a budget of denial records per minute: the decisions are all answered as usual, but
//! past the budget they are counted instead of written. Charged records are never dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::Padded;
use crate::clock::Timestamp;
use crate::tenant::TenantId;

const SHARDS: usize = 16;
const MICROS_PER_MINUTE: i64 = 60_000_000;
/// Tenants tracked per shard before old minutes are swept out.
const PER_SHARD: usize = 4_096;

type Minutes = HashMap<TenantId, (i64, u32), foldhash::fast::RandomState>;

/// Per-tenant denial records written in the current minute.
pub(crate) struct DenialBudget {
    per_minute: u32,
    shards: Box<[Padded<Mutex<Minutes>>]>,
    hasher: foldhash::fast::RandomState,
    unrecorded: AtomicU64,
}

impl DenialBudget {
    pub(crate) fn new(per_minute: u32) -> Self {
        DenialBudget {
            per_minute,
            shards: (0..SHARDS).map(|_| Padded(Mutex::new(Minutes::default()))).collect(),
            hasher: Default::default(),
            unrecorded: AtomicU64::new(0),
        }
    }

    /// Whether a denial of `tenant` at `now` may be written (and counts it if so).
    pub(crate) fn take(&self, tenant: &TenantId, now: Timestamp) -> bool {
        let minute = now.as_micros().div_euclid(MICROS_PER_MINUTE);
        let shard = &self.shards[std::hash::BuildHasher::hash_one(&self.hasher, tenant) as usize % SHARDS].0;
        let mut counts = shard.lock();
        if counts.len() >= PER_SHARD && !counts.contains_key(tenant) {
            counts.retain(|_, (m, _)| *m == minute);
            if counts.len() >= PER_SHARD {
                counts.clear();
            }
        }
        let (m, n) = counts.entry(tenant.clone()).or_insert((minute, 0));
        if *m != minute {
            (*m, *n) = (minute, 0);
        }
        if *n < self.per_minute {
            *n += 1;
            true
        } else {
            self.unrecorded.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Denials answered but not written since the engine started.
    pub(crate) fn unrecorded(&self) -> u64 {
        self.unrecorded.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tenant_gets_its_budget_every_minute() {
        let budget = DenialBudget::new(3);
        let (a, b) = (TenantId::new("a").unwrap(), TenantId::new("b").unwrap());
        let t = Timestamp::from_secs(600);
        assert_eq!((0..5).filter(|_| budget.take(&a, t)).count(), 3);
        assert_eq!((0..5).filter(|_| budget.take(&b, t)).count(), 3);
        assert_eq!(budget.unrecorded(), 4);
        assert!(budget.take(&a, Timestamp::from_secs(660)), "a new minute, a new budget");
    }
}
