//! [`Catalog`]: plans, tenants, accounts, users and API keys.

use async_trait::async_trait;

use crate::account::{ApiKey, User};
use crate::clock::Timestamp;
use crate::error::Error;
use crate::plan::{Plan, PlanId};
use crate::tenant::{Tenant, TenantId};

/// Who may call and on what terms: plans, tenants, accounts (a tenant and its first user),
/// users and API keys.
///
/// Every write here is one atomic step (one lock in memory, one statement or transaction
/// in SQLite), and every read sees the records as of one instant.
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// Creates or replaces a plan.
    ///
    /// Atomic: the whole plan is written, or nothing; readers see the old plan or the new.
    async fn put_plan(&self, plan: &Plan) -> Result<(), Error>;
    /// Creates a plan; [`Error::AlreadyExists`] if its id is taken.
    ///
    /// Atomic: the check and the insert are one step, so of two concurrent inserts of one
    /// id exactly one succeeds.
    async fn insert_plan(&self, plan: &Plan) -> Result<(), Error>;
    /// A plan by id.
    ///
    /// Read: the plan as of one instant.
    async fn plan(&self, id: &PlanId) -> Result<Option<Plan>, Error>;
    /// Every plan, by id.
    ///
    /// Read: a consistent snapshot of every plan.
    async fn plans(&self) -> Result<Vec<Plan>, Error>;

    /// Creates a tenant; [`Error::AlreadyExists`] if the id is taken.
    ///
    /// Atomic: the check and the insert are one step.
    async fn insert_tenant(&self, tenant: &Tenant) -> Result<(), Error>;
    /// Creates a tenant and its first user (a sign-up); [`Error::AlreadyExists`] if the
    /// tenant's id or the user's id or e-mail is taken.
    ///
    /// Atomic: the tenant and the user are written together or neither, so a sign-up
    /// refused for a taken e-mail leaves no tenant behind.
    async fn insert_account(&self, tenant: &Tenant, user: &User) -> Result<(), Error>;
    /// Replaces a tenant; [`Error::UnknownTenant`] if it does not exist.
    ///
    /// Atomic: the whole tenant is replaced, or nothing. It does not compare with what the
    /// caller read before: of two concurrent replacements the last one wins whole.
    async fn update_tenant(&self, tenant: &Tenant) -> Result<(), Error>;
    /// A tenant by id.
    ///
    /// Read: the tenant as of one instant.
    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, Error>;
    /// Up to `limit` tenants with ids after `after`, by id.
    ///
    /// Read: a page is a consistent snapshot; successive pages are not one.
    async fn tenants(&self, after: Option<&TenantId>, limit: usize) -> Result<Vec<Tenant>, Error>;

    /// Creates a user; [`Error::AlreadyExists`] if the e-mail or id is taken.
    ///
    /// Atomic: the checks and the insert are one step, so of two concurrent inserts of one
    /// e-mail exactly one succeeds.
    async fn insert_user(&self, user: &User) -> Result<(), Error>;
    /// Replaces a user (matched by id); [`Error::NotFound`] if there is none,
    /// [`Error::AlreadyExists`] if its new e-mail is another user's.
    ///
    /// Atomic: the whole user is replaced, or nothing; the last of two concurrent
    /// replacements wins whole.
    async fn update_user(&self, user: &User) -> Result<(), Error>;
    /// A user by lower-case e-mail.
    ///
    /// Read: the user as of one instant.
    async fn user_by_email(&self, email: &str) -> Result<Option<User>, Error>;
    /// A user by id.
    ///
    /// Read: the user as of one instant.
    async fn user(&self, id: &str) -> Result<Option<User>, Error>;
    /// The users of a tenant, by e-mail.
    ///
    /// Read: a consistent snapshot of the tenant's users.
    async fn users_of_tenant(&self, tenant: &TenantId) -> Result<Vec<User>, Error>;

    /// Stores a new API key; [`Error::AlreadyExists`] if its id or hash is taken.
    ///
    /// Atomic: the checks and the insert are one step.
    async fn insert_api_key(&self, key: &ApiKey) -> Result<(), Error>;
    /// An API key by the hash of its secret.
    ///
    /// Read: the key as of one instant.
    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, Error>;
    /// The keys of a tenant (`None`: service keys).
    ///
    /// Read: a consistent snapshot of the tenant's keys.
    async fn api_keys(&self, tenant: Option<&TenantId>) -> Result<Vec<ApiKey>, Error>;
    /// Marks a key revoked at `at` (a key revoked already keeps its first time); `false`
    /// if no such key.
    ///
    /// Atomic: one step, so concurrent revocations of a key agree on its time.
    async fn revoke_api_key(&self, id: &str, at: Timestamp) -> Result<bool, Error>;
    /// An API key by its id, revoked or not.
    ///
    /// Read: the key as of one instant.
    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>, Error>;
    /// The keys not revoked, of every tenant and the service keys, by id: those after the
    /// id `after`, at most `limit` (capped at
    /// [`LedgerQuery::MAX_LIMIT`](crate::ledger::LedgerQuery::MAX_LIMIT)).
    ///
    /// Read: a page is a consistent snapshot; successive pages are not one.
    async fn active_api_keys(&self, after: Option<&str>, limit: usize) -> Result<Vec<ApiKey>, Error>;
}
