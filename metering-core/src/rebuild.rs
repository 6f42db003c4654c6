//! Rebuilds of a tenant's hot counters from the ledger: one at a time per tenant (when
//! many calls find the counters absent together, the first rebuilds them and the others
//! wait, then find them loaded), and the tenants whose counters must be rebuilt before
//! their next decision (calls were admitted while the hot store could not answer).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use crate::tenant::TenantId;

/// Per-tenant gates, held only while a rebuild runs.
#[derive(Default)]
pub(crate) struct RebuildGates {
    gates: Mutex<HashMap<TenantId, Arc<tokio::sync::Mutex<()>>>>,
}

/// A tenant's gate, held; dropped, it lets the next waiter in and, when nobody waits,
/// takes the gate out of the map.
pub(crate) struct Held<'a> {
    gates: &'a RebuildGates,
    tenant: TenantId,
    gate: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl RebuildGates {
    /// Waits for the tenant's gate.
    pub(crate) async fn enter(&self, tenant: &TenantId) -> Held<'_> {
        let gate = Arc::clone(self.gates.lock().entry(tenant.clone()).or_default());
        let guard = Arc::clone(&gate).lock_owned().await;
        Held { gates: self, tenant: tenant.clone(), gate, guard: Some(guard) }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut gates = self.gates.gates.lock();
        // The map's reference and this one: nobody else waits.
        if Arc::strong_count(&self.gate) == 2 {
            gates.remove(&self.tenant);
        }
    }
}

/// Tenants whose counters must be rebuilt before their next decision. Empty almost
/// always, so the check on every decision is one relaxed load.
#[derive(Default)]
pub(crate) struct StaleTenants {
    any: AtomicBool,
    tenants: Mutex<HashSet<TenantId>>,
}

impl StaleTenants {
    /// Marks a tenant.
    pub(crate) fn insert(&self, tenant: &TenantId) {
        let mut tenants = self.tenants.lock();
        tenants.insert(tenant.clone());
        self.any.store(true, Ordering::Release);
    }

    /// Whether a tenant is marked.
    pub(crate) fn contains(&self, tenant: &TenantId) -> bool {
        self.any.load(Ordering::Acquire) && self.tenants.lock().contains(tenant)
    }

    /// Unmarks a tenant.
    pub(crate) fn remove(&self, tenant: &TenantId) {
        let mut tenants = self.tenants.lock();
        tenants.remove(tenant);
        self.any.store(!tenants.is_empty(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_caller_waits_and_the_map_empties() {
        let gates = RebuildGates::default();
        let acme = TenantId::new("acme").unwrap();
        let first = gates.enter(&acme).await;
        let second = gates.enter(&acme);
        tokio::pin!(second);
        assert!(futures_poll_once(second.as_mut()).await.is_none(), "the second waits");
        drop(first);
        drop(second.await);
        assert!(gates.gates.lock().is_empty());
    }

    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        tokio::select! { biased; out = f => Some(out), () = tokio::task::yield_now() => None }
    }
}
