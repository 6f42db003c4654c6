//! Durable records, the source of truth: plans, tenants, users, API keys, grants, refresh
//! tokens (ids only), the audit log and the usage ledger. Backends: [`memory::MemoryRecords`]
//! and, with the `sqlite` feature, [`sqlite::SqliteRecords`].

#[cfg(feature = "memory")]
pub mod memory;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use async_trait::async_trait;

use crate::account::{ApiKey, RefreshToken, User};
use crate::audit::AuditEntry;
use crate::clock::Timestamp;
use crate::error::Error;
use crate::event::EventId;
use crate::ledger::{Appended, Grant, GroupBy, LedgerQuery, LedgerRecord, TimeBasis, UsageGroup, UsageTotals};
use crate::plan::{Plan, PlanId};
use crate::tenant::{Tenant, TenantId};

/// Durable records: the source of truth.
#[async_trait]
pub trait RecordStore: Send + Sync + 'static {
    /// Creates or replaces a plan.
    async fn put_plan(&self, plan: &Plan) -> Result<(), Error>;
    /// Creates a plan; [`Error::AlreadyExists`] if its id is taken (atomically, so of
    /// two concurrent inserts of one id exactly one succeeds).
    async fn insert_plan(&self, plan: &Plan) -> Result<(), Error>;
    /// A plan by id.
    async fn plan(&self, id: &PlanId) -> Result<Option<Plan>, Error>;
    /// Every plan, by id.
    async fn plans(&self) -> Result<Vec<Plan>, Error>;

    /// Creates a tenant; [`Error::AlreadyExists`] if the id is taken.
    async fn insert_tenant(&self, tenant: &Tenant) -> Result<(), Error>;
    /// Creates a tenant and its first user together, both or neither (a sign-up);
    /// [`Error::AlreadyExists`] if the tenant's id or the user's id or e-mail is taken.
    async fn insert_account(&self, tenant: &Tenant, user: &User) -> Result<(), Error>;
    /// Replaces a tenant; [`Error::UnknownTenant`] if it does not exist.
    async fn update_tenant(&self, tenant: &Tenant) -> Result<(), Error>;
    /// A tenant by id.
    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, Error>;
    /// Up to `limit` tenants with ids after `after`, by id.
    async fn tenants(&self, after: Option<&TenantId>, limit: usize) -> Result<Vec<Tenant>, Error>;

    /// Creates a user; [`Error::AlreadyExists`] if the e-mail or id is taken.
    async fn insert_user(&self, user: &User) -> Result<(), Error>;
    /// Replaces a user (matched by id); [`Error::NotFound`] if there is none.
    async fn update_user(&self, user: &User) -> Result<(), Error>;
    /// A user by lower-case e-mail.
    async fn user_by_email(&self, email: &str) -> Result<Option<User>, Error>;
    /// A user by id.
    async fn user(&self, id: &str) -> Result<Option<User>, Error>;
    /// The users of a tenant, by e-mail.
    async fn users_of_tenant(&self, tenant: &TenantId) -> Result<Vec<User>, Error>;

    /// Stores a refresh token's record (only its id, never the token itself);
    /// [`Error::AlreadyExists`] if the id is taken.
    async fn insert_refresh_token(&self, token: &RefreshToken) -> Result<(), Error>;
    /// Uses a refresh token up, atomically: returns it and marks it used if it exists, is
    /// unused and has not expired at `now`; `None` otherwise (so a token works once, even
    /// under concurrent use).
    async fn consume_refresh_token(&self, id: &str, now: Timestamp) -> Result<Option<RefreshToken>, Error>;
    /// Revokes every unused refresh token of a user (expired or not); returns how many.
    async fn revoke_refresh_tokens(&self, user_id: &str) -> Result<u64, Error>;
    /// Deletes the refresh tokens that can no longer be used: expired at `now`, used or
    /// revoked. A deleted token answers [`consume_refresh_token`](Self::consume_refresh_token)
    /// as it did before: `None`. Returns how many were deleted.
    async fn prune_refresh_tokens(&self, now: Timestamp) -> Result<u64, Error>;

    /// Appends an audit entry; [`Error::AlreadyExists`] if its id is taken.
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), Error>;
    /// Audit entries, newest first (by `(at, id)`), after the cursor `before` (the id of the
    /// last entry seen; an unknown id gives an empty page), at most `limit` (capped at 1,000).
    async fn audit(&self, before: Option<&str>, limit: usize) -> Result<Vec<AuditEntry>, Error>;

    /// Stores a new API key.
    async fn insert_api_key(&self, key: &ApiKey) -> Result<(), Error>;
    /// An API key by the hash of its secret.
    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, Error>;
    /// The keys of a tenant (`None`: service keys).
    async fn api_keys(&self, tenant: Option<&TenantId>) -> Result<Vec<ApiKey>, Error>;
    /// Marks a key revoked; `false` if no such key.
    async fn revoke_api_key(&self, id: &str, at: Timestamp) -> Result<bool, Error>;
    /// An API key by its id, revoked or not.
    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>, Error>;
    /// The keys not revoked, of every tenant and the service keys, by id: those after the
    /// id `after`, at most `limit` (capped at [`LedgerQuery::MAX_LIMIT`]).
    async fn active_api_keys(&self, after: Option<&str>, limit: usize) -> Result<Vec<ApiKey>, Error>;

    /// Appends records in one transaction; a record whose `(tenant, event_id)` is already
    /// stored is not written again and its stored twin is returned instead. The records
    /// are durable when it returns.
    async fn append(&self, records: Vec<LedgerRecord>) -> Result<Vec<Appended>, Error>;
    /// [`append`](Self::append) for records no caller waits on (the Tower layer's, recorded
    /// after the response): a backend may return before they would survive a power loss
    /// or an operating-system crash. By default, the same as `append`.
    async fn append_buffered(&self, records: Vec<LedgerRecord>) -> Result<Vec<Appended>, Error> {
        self.append(records).await
    }
    /// One record by key.
    async fn record(&self, tenant: &TenantId, event_id: &EventId) -> Result<Option<LedgerRecord>, Error>;
    /// Records matching a query, newest first.
    async fn records(&self, query: &LedgerQuery) -> Result<Vec<LedgerRecord>, Error>;
    /// Admitted calls and charged credits of a tenant in `[from, to)`.
    async fn usage_totals(
        &self,
        tenant: &TenantId,
        basis: TimeBasis,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<UsageTotals, Error>;
    /// Usage grouped by `group_by`, over the records `query`'s filters select (tenant,
    /// service, endpoint, method, from, to; its `before` and `limit` are ignored). Day
    /// groups come in date order; the others by calls, most first, then key. At most
    /// `limit` groups (capped at [`UsageGroup::MAX_GROUPS`]).
    async fn usage_summary(
        &self,
        query: &LedgerQuery,
        group_by: GroupBy,
        limit: usize,
    ) -> Result<Vec<UsageGroup>, Error>;
    /// Deletes records whose event timestamp is before `before`; returns how many.
    async fn prune(&self, before: Timestamp) -> Result<u64, Error>;
    /// Brings every appended record into the store's indexed form, so that every reader
    /// of the same storage (another process included) sees it. A backend that indexes
    /// appends at once has nothing to do.
    async fn flush(&self) -> Result<(), Error> {
        Ok(())
    }

    /// Stores a credit grant.
    async fn add_grant(&self, grant: &Grant) -> Result<(), Error>;
    /// The sum of a tenant's grants for the period starting at `period_start`.
    async fn granted(&self, tenant: &TenantId, period_start: Timestamp) -> Result<i64, Error>;

    /// Whether the store answers.
    async fn ping(&self) -> Result<(), Error>;

    /// Damage found in the store's files that no operator has acknowledged yet, each a
    /// sentence naming what was damaged and where the evidence is kept; empty when there
    /// is none. Records that could still be read were kept.
    async fn damage(&self) -> Result<Vec<String>, Error> {
        Ok(Vec::new())
    }
    /// Acknowledges every damage [`damage`](Self::damage) reports (its evidence is kept);
    /// returns how many.
    async fn acknowledge_damage(&self) -> Result<usize, Error> {
        Ok(0)
    }
}

#[cfg(all(test, any(feature = "memory", feature = "sqlite")))]
pub(crate) mod checks {
    use super::RecordStore;
    use crate::account::ApiKey;
    use crate::clock::Timestamp;
    use crate::tenant::TenantId;

    fn key(id: &str, tenant: Option<&str>) -> ApiKey {
        ApiKey {
            id: id.into(),
            tenant_id: tenant.map(|t| TenantId::new(t).unwrap()),
            name: id.into(),
            service_name: None,
            key_hash: format!("hash-{id}"),
            created_by: "u-1".into(),
            created_at: Timestamp::EPOCH,
            revoked_at: None,
        }
    }

    /// A key is found by its id whatever its tenant, and the active keys of every tenant
    /// are listed by id in pages, without the revoked ones.
    pub(crate) async fn api_keys_by_id_and_across_tenants(store: &dyn RecordStore) {
        for k in
            [key("key_c", Some("acme")), key("key_a", Some("globex")), key("key_b", None), key("key_d", Some("acme"))]
        {
            store.insert_api_key(&k).await.unwrap();
        }
        assert_eq!(store.api_key("key_a").await.unwrap(), Some(key("key_a", Some("globex"))));
        assert_eq!(store.api_key("key_b").await.unwrap(), Some(key("key_b", None)));
        assert_eq!(store.api_key("key_z").await.unwrap(), None);
        assert!(store.revoke_api_key("key_c", Timestamp::from_secs(1)).await.unwrap());
        assert_eq!(store.api_key("key_c").await.unwrap().and_then(|k| k.revoked_at), Some(Timestamp::from_secs(1)));

        let ids = |keys: Vec<ApiKey>| keys.into_iter().map(|k| k.id).collect::<Vec<_>>();
        assert_eq!(ids(store.active_api_keys(None, 10).await.unwrap()), ["key_a", "key_b", "key_d"]);
        assert_eq!(ids(store.active_api_keys(None, 2).await.unwrap()), ["key_a", "key_b"]);
        assert_eq!(ids(store.active_api_keys(Some("key_b"), 2).await.unwrap()), ["key_d"]);
        assert_eq!(ids(store.active_api_keys(Some("key_d"), 2).await.unwrap()), Vec::<String>::new());
    }
}
