//! The engine's audited changes: an admin's change written together with its audit entry
//! ([`Audited`](crate::store::Audited)), and the audit log.
//!
//! Each method takes the entry, or a function making it from what the change came to (the
//! tenant before and after, the balance after a grant), and writes the change and the
//! entry in one atomic step of the record store: a change that fails leaves no entry, a
//! change that is made always has one. Changes kept outside the record store (damage
//! acknowledged in the store's files, logins unlocked in the hot store) cannot share that
//! step: their entry is written first, so none goes unaudited.

use super::Engine;
use crate::account::ApiKey;
use crate::audit::AuditEntry;
use crate::changes::Change;
use crate::error::Error;
use crate::plan::Plan;
use crate::store::AuditedChange;
use crate::tenant::{Tenant, TenantId};

impl Engine {
    /// [`update_tenant`](Self::update_tenant), with the entry `audit` makes from the
    /// tenant before and after the change, written together with it.
    pub async fn update_tenant_audited(
        &self,
        id: &TenantId,
        change: impl FnOnce(&mut Tenant) + Send,
        audit: impl FnOnce(&Tenant, &Tenant) -> AuditEntry + Send,
    ) -> Result<Tenant, Error> {
        let before = self.inner.records.tenant(id).await?.ok_or_else(|| Error::UnknownTenant(id.clone()))?;
        let mut tenant = before.clone();
        change(&mut tenant);
        tenant.id = id.clone();
        self.check_new_tenant(&tenant).await?;
        let entry = audit(&before, &tenant);
        self.inner.records.apply_audited(AuditedChange::UpdateTenant(&tenant), &entry).await?;
        self.changed(Change::Tenant(id.clone())).await;
        Ok(tenant)
    }

    /// [`grant`](Self::grant), with the entry `audit` makes from the new remaining balance,
    /// written together with the grant. Should that write fail, the hot store's balance is
    /// put back and the error returned.
    pub async fn grant_audited(
        &self,
        tenant: &TenantId,
        amount: i64,
        reason: &str,
        audit: impl FnOnce(i64) -> AuditEntry + Send,
    ) -> Result<i64, Error> {
        self.grant_recording(tenant, amount, reason, Some(audit)).await
    }

    /// [`create_plan`](Self::create_plan), with `entry` written together with it.
    pub async fn create_plan_audited(&self, plan: &Plan, entry: &AuditEntry) -> Result<(), Error> {
        plan.validate()?;
        self.inner.records.apply_audited(AuditedChange::InsertPlan(plan), entry).await?;
        self.changed(Change::Plans).await;
        Ok(())
    }

    /// Replaces an existing plan ([`Error::UnknownPlan`] if there is none), validated, with
    /// the entry `audit` makes from the plan before, written together with it; its tenants
    /// get it at once.
    pub async fn replace_plan_audited(
        &self,
        plan: &Plan,
        audit: impl FnOnce(&Plan) -> AuditEntry + Send,
    ) -> Result<(), Error> {
        let before = self.inner.records.plan(&plan.id).await?.ok_or_else(|| Error::UnknownPlan(plan.id.clone()))?;
        plan.validate()?;
        self.inner.records.apply_audited(AuditedChange::PutPlan(plan), &audit(&before)).await?;
        self.changed(Change::Plans).await;
        Ok(())
    }

    /// [`create_api_key`](Self::create_api_key), with `entry` written together with it.
    pub async fn create_api_key_audited(&self, key: &ApiKey, entry: &AuditEntry) -> Result<(), Error> {
        self.inner.records.apply_audited(AuditedChange::InsertApiKey(key), entry).await
    }

    /// [`revoke_api_key`](Self::revoke_api_key), with `entry` written together with it;
    /// [`Error::NotFound`] (and no entry) if there is no such key.
    pub async fn revoke_api_key_audited(&self, id: &str, entry: &AuditEntry) -> Result<(), Error> {
        let change = AuditedChange::RevokeApiKey { id, at: self.now() };
        self.inner.records.apply_audited(change, entry).await?;
        self.key_changed(id).await
    }

    /// Acknowledges the damage [`damage`](Self::damage) reports, once an operator has
    /// inspected it; returns how many reports were acknowledged.
    ///
    /// The entry `audit` makes from the damage about to be acknowledged is written first:
    /// the acknowledgement renames files outside any transaction, so should it fail, the
    /// entry stays (with the error returned) and a retry acknowledges the rest.
    pub async fn acknowledge_damage_audited(
        &self,
        audit: impl FnOnce(&[String]) -> AuditEntry + Send,
    ) -> Result<usize, Error> {
        let damage = self.inner.records.damage().await?;
        self.inner.records.append_audit(&audit(&damage)).await?;
        self.inner.records.acknowledge_damage().await
    }

    /// Appends an entry for a change kept outside the record store (in the hot store, say),
    /// written before the change so that none goes unaudited; a change of the records is
    /// written with its entry by the `_audited` methods instead.
    pub async fn append_audit(&self, entry: &AuditEntry) -> Result<(), Error> {
        self.inner.records.append_audit(entry).await
    }

    /// The audit log, newest first: at most `limit` entries (capped at 1,000) after the
    /// entry with id `before`.
    pub async fn audit_log(&self, before: Option<&str>, limit: usize) -> Result<Vec<AuditEntry>, Error> {
        self.inner.records.audit(before, limit).await
    }
}
