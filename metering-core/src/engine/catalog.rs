//! The engine's catalog: plans, tenants, users and API keys, read and written through the
//! record store's [`Catalog`](crate::store::Catalog) role.
//!
//! Plans and tenants that decisions depend on are changed through the engine's own
//! methods (`put_plan`, `create_tenant`, `update_tenant`, ...), which keep its policy cache
//! in step; users and keys do not touch a decision.

use super::Engine;
use crate::account::{ApiKey, User};
use crate::changes::Change;
use crate::error::Error;
use crate::plan::{Plan, PlanId};
use crate::tenant::{Tenant, TenantId};

impl Engine {
    /// A plan by id, as stored (not the cached policy).
    pub async fn plan(&self, id: &PlanId) -> Result<Option<Plan>, Error> {
        self.inner.records.plan(id).await
    }

    /// Every plan, by id.
    pub async fn plans(&self) -> Result<Vec<Plan>, Error> {
        self.inner.records.plans().await
    }

    /// A tenant by id, as stored (not the cached policy).
    pub async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, Error> {
        self.inner.records.tenant(id).await
    }

    /// Up to `limit` tenants with ids after `after`, by id.
    pub async fn tenants(&self, after: Option<&TenantId>, limit: usize) -> Result<Vec<Tenant>, Error> {
        self.inner.records.tenants(after, limit).await
    }

    /// A user by id.
    pub async fn user(&self, id: &str) -> Result<Option<User>, Error> {
        self.inner.records.user(id).await
    }

    /// A user by lower-case e-mail.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>, Error> {
        self.inner.records.user_by_email(email).await
    }

    /// The users of a tenant, by e-mail.
    pub async fn users_of_tenant(&self, tenant: &TenantId) -> Result<Vec<User>, Error> {
        self.inner.records.users_of_tenant(tenant).await
    }

    /// Creates a user; [`Error::AlreadyExists`] if its id or e-mail is taken.
    pub async fn create_user(&self, user: &User) -> Result<(), Error> {
        self.inner.records.insert_user(user).await
    }

    /// Replaces a user (matched by id); [`Error::NotFound`] if there is none.
    pub async fn update_user(&self, user: &User) -> Result<(), Error> {
        self.inner.records.update_user(user).await?;
        self.changed(Change::User(user.id.clone())).await;
        Ok(())
    }

    /// Stores a new API key; [`Error::AlreadyExists`] if its id or hash is taken.
    pub async fn create_api_key(&self, key: &ApiKey) -> Result<(), Error> {
        self.inner.records.insert_api_key(key).await
    }

    /// An API key by id, revoked or not.
    pub async fn api_key(&self, id: &str) -> Result<Option<ApiKey>, Error> {
        self.inner.records.api_key(id).await
    }

    /// An API key by the hash of its secret.
    pub async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, Error> {
        self.inner.records.api_key_by_hash(key_hash).await
    }

    /// The keys of a tenant, revoked or not (`None`: the service keys).
    pub async fn api_keys(&self, tenant: Option<&TenantId>) -> Result<Vec<ApiKey>, Error> {
        self.inner.records.api_keys(tenant).await
    }

    /// The keys not revoked, of every tenant and the service keys, by id: at most `limit`
    /// after the id `after`.
    pub async fn active_api_keys(&self, after: Option<&str>, limit: usize) -> Result<Vec<ApiKey>, Error> {
        self.inner.records.active_api_keys(after, limit).await
    }

    /// Revokes a key now (a key revoked already keeps its first time); `false` if there is
    /// no such key.
    pub async fn revoke_api_key(&self, id: &str) -> Result<bool, Error> {
        let revoked = self.inner.records.revoke_api_key(id, self.now()).await?;
        if revoked {
            self.key_changed(id).await?;
        }
        Ok(revoked)
    }

    /// Announces that the key `id` changed, by the hash its cached copies are found by.
    pub(super) async fn key_changed(&self, id: &str) -> Result<(), Error> {
        if let Some(key) = self.inner.records.api_key(id).await? {
            self.changed(Change::ApiKey(key.key_hash)).await;
        }
        Ok(())
    }
}
