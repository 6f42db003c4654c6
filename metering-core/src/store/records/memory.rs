//! [`MemoryRecords`]: plans, tenants, accounts, keys and the ledger in process memory.

mod faults;

pub use faults::AppendFaults;

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::Padded;
use crate::account::{ApiKey, RefreshToken, User};
use crate::audit::AuditEntry;
use crate::clock::Timestamp;
use crate::error::Error;
use crate::event::EventId;
use crate::ledger::{
    Appended, Grant, GroupBy, LedgerQuery, LedgerRecord, TimeBasis, UsageGroup, UsageSummary, UsageTotals,
};
use crate::plan::{Plan, PlanId};
use crate::store::{Audited, AuditedChange, Catalog, Health, Sessions, UsageLedger};
use crate::tenant::{Tenant, TenantId};

use crate::store::sharded::{Map, Sharded};

/// Durable records in process memory (for tests and library use).
///
/// Every record but the ledger's sits under one lock, so each catalog, session or audited
/// write is one step; the ledger is sharded by tenant, a tenant's records under its
/// shard's lock, so a read over several tenants takes them one shard at a time.
pub struct MemoryRecords {
    tables: Mutex<Tables>,
    ledger: Sharded<TenantLedger>,
    faults: AppendFaults,
}

/// Every record but the ledger's, under one lock: so an audited change and its entry are
/// written in one step.
#[derive(Default)]
struct Tables {
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

impl Tables {
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

    /// Refuses an audit entry whose id is taken.
    fn check_new_audit(&self, entry: &AuditEntry) -> Result<(), Error> {
        if self.audit_at.contains_key(&entry.id) {
            return Err(Error::AlreadyExists(format!("audit entry {}", entry.id)));
        }
        Ok(())
    }

    fn insert_plan(&mut self, plan: &Plan) -> Result<(), Error> {
        match self.plans.entry(plan.id.clone()) {
            std::collections::btree_map::Entry::Occupied(_) => Err(Error::AlreadyExists(format!("plan {}", plan.id))),
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(plan.clone());
                Ok(())
            }
        }
    }

    fn update_tenant(&mut self, tenant: &Tenant) -> Result<(), Error> {
        match self.tenants.get_mut(&tenant.id) {
            Some(t) => {
                *t = tenant.clone();
                Ok(())
            }
            None => Err(Error::UnknownTenant(tenant.id.clone())),
        }
    }

    fn insert_api_key(&mut self, key: &ApiKey) -> Result<(), Error> {
        if self.keys.contains_key(&key.id) || self.keys.values().any(|k| k.key_hash == key.key_hash) {
            return Err(Error::AlreadyExists(format!("api key {}", key.id)));
        }
        self.keys.insert(key.id.clone(), key.clone());
        Ok(())
    }

    /// Marks a key revoked (keeping an earlier time); `false` if there is no such key.
    fn revoke_api_key(&mut self, id: &str, at: Timestamp) -> bool {
        match self.keys.get_mut(id) {
            Some(k) => {
                k.revoked_at.get_or_insert(at);
                true
            }
            None => false,
        }
    }

    /// Appends an entry [`check_new_audit`](Self::check_new_audit) let through.
    fn append_audit(&mut self, entry: &AuditEntry) {
        self.audit_at.insert(entry.id.clone(), entry.at);
        self.audit.insert((entry.at, entry.id.clone()), entry.clone());
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
        MemoryRecords { tables: Mutex::new(Tables::default()), ledger: Sharded::new(), faults: AppendFaults::default() }
    }

    /// The faults its ledger appends show on demand (none by default).
    pub fn faults(&self) -> &AppendFaults {
        &self.faults
    }
}

impl Default for MemoryRecords {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Catalog for MemoryRecords {
    async fn put_plan(&self, plan: &Plan) -> Result<(), Error> {
        self.tables.lock().plans.insert(plan.id.clone(), plan.clone());
        Ok(())
    }

    async fn insert_plan(&self, plan: &Plan) -> Result<(), Error> {
        self.tables.lock().insert_plan(plan)
    }

    async fn plan(&self, id: &PlanId) -> Result<Option<Plan>, Error> {
        Ok(self.tables.lock().plans.get(id).cloned())
    }

    async fn plans(&self) -> Result<Vec<Plan>, Error> {
        Ok(self.tables.lock().plans.values().cloned().collect())
    }

    async fn insert_tenant(&self, tenant: &Tenant) -> Result<(), Error> {
        let mut tables = self.tables.lock();
        tables.check_new_tenant(tenant)?;
        tables.tenants.insert(tenant.id.clone(), tenant.clone());
        Ok(())
    }

    async fn insert_account(&self, tenant: &Tenant, user: &User) -> Result<(), Error> {
        let mut tables = self.tables.lock();
        tables.check_new_tenant(tenant)?;
        tables.check_new_user(user)?;
        tables.tenants.insert(tenant.id.clone(), tenant.clone());
        tables.users.insert(user.id.clone(), user.clone());
        Ok(())
    }

    async fn update_tenant(&self, tenant: &Tenant) -> Result<(), Error> {
        self.tables.lock().update_tenant(tenant)
    }

    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, Error> {
        Ok(self.tables.lock().tenants.get(id).cloned())
    }

    async fn tenants(&self, after: Option<&TenantId>, limit: usize) -> Result<Vec<Tenant>, Error> {
        let tables = self.tables.lock();
        let iter: Box<dyn Iterator<Item = &Tenant>> = match after {
            Some(a) => Box::new(
                tables
                    .tenants
                    .range::<TenantId, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
                    .map(|(_, t)| t),
            ),
            None => Box::new(tables.tenants.values()),
        };
        Ok(iter.take(limit).cloned().collect())
    }

    async fn insert_user(&self, user: &User) -> Result<(), Error> {
        let mut tables = self.tables.lock();
        tables.check_new_user(user)?;
        tables.users.insert(user.id.clone(), user.clone());
        Ok(())
    }

    async fn update_user(&self, user: &User) -> Result<(), Error> {
        let mut tables = self.tables.lock();
        if tables.users.values().any(|u| u.email == user.email && u.id != user.id) {
            return Err(Error::AlreadyExists(format!("user {}", user.email)));
        }
        match tables.users.get_mut(&user.id) {
            Some(u) => {
                *u = user.clone();
                Ok(())
            }
            None => Err(Error::NotFound(format!("user {}", user.id))),
        }
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, Error> {
        Ok(self.tables.lock().users.values().find(|u| u.email == email).cloned())
    }

    async fn user(&self, id: &str) -> Result<Option<User>, Error> {
        Ok(self.tables.lock().users.get(id).cloned())
    }

    async fn users_of_tenant(&self, tenant: &TenantId) -> Result<Vec<User>, Error> {
        let mut users: Vec<User> =
            self.tables.lock().users.values().filter(|u| u.tenant_id == *tenant).cloned().collect();
        users.sort_by(|a, b| a.email.cmp(&b.email));
        Ok(users)
    }

    async fn insert_api_key(&self, key: &ApiKey) -> Result<(), Error> {
        self.tables.lock().insert_api_key(key)
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, Error> {
        Ok(self.tables.lock().keys.values().find(|k| k.key_hash == key_hash).cloned())
    }

    async fn api_keys(&self, tenant: Option<&TenantId>) -> Result<Vec<ApiKey>, Error> {
        Ok(self.tables.lock().keys.values().filter(|k| k.tenant_id.as_ref() == tenant).cloned().collect())
    }

    async fn revoke_api_key(&self, id: &str, at: Timestamp) -> Result<bool, Error> {
        Ok(self.tables.lock().revoke_api_key(id, at))
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>, Error> {
        Ok(self.tables.lock().keys.get(id).cloned())
    }

    async fn active_api_keys(&self, after: Option<&str>, limit: usize) -> Result<Vec<ApiKey>, Error> {
        let tables = self.tables.lock();
        let start = match after {
            Some(a) => std::ops::Bound::Excluded(a),
            None => std::ops::Bound::Unbounded,
        };
        let page = tables.keys.range::<str, _>((start, std::ops::Bound::Unbounded)).map(|(_, k)| k);
        Ok(page.filter(|k| k.revoked_at.is_none()).take(limit.min(LedgerQuery::MAX_LIMIT)).cloned().collect())
    }
}

#[async_trait]
impl UsageLedger for MemoryRecords {
    async fn append(&self, records: Vec<LedgerRecord>) -> Result<Vec<Appended>, Error> {
        self.faults.before_append().await?;
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
        self.tables.lock().grants.push(grant.clone());
        Ok(())
    }

    async fn granted(&self, tenant: &TenantId, period_start: Timestamp) -> Result<i64, Error> {
        Ok(self
            .tables
            .lock()
            .grants
            .iter()
            .filter(|g| g.tenant_id == *tenant && g.period.start == period_start)
            .map(|g| g.amount)
            .sum())
    }
}

#[async_trait]
impl Sessions for MemoryRecords {
    async fn insert_refresh_token(&self, token: &RefreshToken) -> Result<(), Error> {
        match self.tables.lock().refresh_tokens.entry(token.id.clone()) {
            Entry::Occupied(_) => Err(Error::AlreadyExists(format!("refresh token {}", token.id))),
            Entry::Vacant(v) => {
                v.insert((token.clone(), false));
                Ok(())
            }
        }
    }

    async fn consume_refresh_token(&self, id: &str, now: Timestamp) -> Result<Option<RefreshToken>, Error> {
        let mut tables = self.tables.lock();
        Ok(match tables.refresh_tokens.get_mut(id) {
            Some((token, spent)) if !*spent && token.expires_at > now => {
                *spent = true;
                Some(token.clone())
            }
            _ => None,
        })
    }

    async fn revoke_refresh_tokens(&self, user_id: &str) -> Result<u64, Error> {
        let mut tables = self.tables.lock();
        let mut revoked = 0;
        for (token, spent) in tables.refresh_tokens.values_mut() {
            if token.user_id == user_id && !*spent {
                *spent = true;
                revoked += 1;
            }
        }
        Ok(revoked)
    }

    async fn prune_refresh_tokens(&self, now: Timestamp) -> Result<u64, Error> {
        let mut tables = self.tables.lock();
        let before = tables.refresh_tokens.len();
        tables.refresh_tokens.retain(|_, (token, spent)| !*spent && token.expires_at > now);
        Ok((before - tables.refresh_tokens.len()) as u64)
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), Error> {
        let mut tables = self.tables.lock();
        tables.check_new_audit(entry)?;
        tables.append_audit(entry);
        Ok(())
    }

    async fn audit(&self, before: Option<&str>, limit: usize) -> Result<Vec<AuditEntry>, Error> {
        let tables = self.tables.lock();
        let end = match before {
            Some(id) => match tables.audit_at.get(id) {
                Some(&at) => std::ops::Bound::Excluded((at, id.to_owned())),
                None => return Ok(Vec::new()),
            },
            None => std::ops::Bound::Unbounded,
        };
        let page = tables.audit.range((std::ops::Bound::Unbounded, end)).rev();
        Ok(page.take(limit.min(LedgerQuery::MAX_LIMIT)).map(|(_, e)| e.clone()).collect())
    }
}

#[async_trait]
impl Audited for MemoryRecords {
    async fn apply_audited(&self, change: AuditedChange<'_>, entry: &AuditEntry) -> Result<(), Error> {
        let mut tables = self.tables.lock();
        tables.check_new_audit(entry)?;
        match change {
            AuditedChange::InsertPlan(plan) => tables.insert_plan(plan)?,
            AuditedChange::PutPlan(plan) => {
                tables.plans.insert(plan.id.clone(), plan.clone());
            }
            AuditedChange::UpdateTenant(tenant) => tables.update_tenant(tenant)?,
            AuditedChange::InsertApiKey(key) => tables.insert_api_key(key)?,
            AuditedChange::RevokeApiKey { id, at } => {
                if !tables.revoke_api_key(id, at) {
                    return Err(Error::NotFound(format!("api key {id}")));
                }
            }
            AuditedChange::AddGrant(grant) => tables.grants.push(grant.clone()),
        }
        tables.append_audit(entry);
        Ok(())
    }
}

#[async_trait]
impl Health for MemoryRecords {
    async fn ping(&self) -> Result<(), Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryRecords;

    #[tokio::test]
    async fn api_keys_are_found_by_id_and_listed_across_tenants() {
        crate::store::checks::api_keys_by_id_and_across_tenants(&MemoryRecords::new()).await;
    }

    #[tokio::test]
    async fn appends_fail_while_told_to_and_succeed_after() {
        use crate::ledger::sample_record;
        use crate::store::UsageLedger;
        let store = MemoryRecords::new();
        store.faults().fail(true);
        assert!(store.append(vec![sample_record("acme", "a", 1)]).await.is_err());
        assert_eq!(store.faults().failed(), 1);
        store.faults().fail(false);
        assert_eq!(store.append(vec![sample_record("acme", "a", 1)]).await.unwrap().len(), 1);
    }
}
