//! Storage seams, split by role.
//!
//! - [`RecordStore`]: durable records, the source of truth: plans, tenants, users, API
//!   keys, grants and the usage ledger. Backends: [`memory::MemoryRecords`] and, with the
//!   `sqlite` feature, [`sqlite::SqliteRecords`].
//! - [`RecordStore`] also keeps refresh tokens (ids only) and the audit log.
//! - [`HotStore`]: derived, rebuildable counters (windows, period balances, recently seen
//!   `event_id`s), and short-lived login-failure counters and revoked access tokens.
//!   Backend: [`memory::MemoryHot`].
//!
//! A hot store answers one [`Admission`] with one atomic step: replay check, every
//! window, credits, and the commit of all of them, or of none.

#[cfg(feature = "memory")]
pub mod memory;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::account::{ApiKey, RefreshToken, User};
use crate::audit::AuditEntry;
use crate::clock::Timestamp;
use crate::decision::{Decision, DenyReason};
use crate::error::Error;
use crate::event::EventId;
use crate::ledger::{Appended, Grant, GroupBy, LedgerQuery, LedgerRecord, TimeBasis, UsageGroup, UsageTotals};
use crate::plan::{Limit, Per, Plan, PlanId};
use crate::tenant::{Period, Tenant, TenantId};

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
    /// Replaces a user (matched by id).
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

/// One call to decide atomically in the hot store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// The tenant.
    pub tenant: TenantId,
    /// The idempotency key.
    pub event_id: EventId,
    /// The event's content hash.
    pub fingerprint: u64,
    /// The decision time (smooth windows).
    pub now: Timestamp,
    /// The event time (calendar windows, billing period).
    pub at: Timestamp,
    /// A denial decided before the counters (suspended, premium); counters are only read.
    pub denial: Option<DenyReason>,
    /// The windows that must all admit the call.
    pub limits: Arc<[Limit]>,
    /// The call's price.
    pub cost: u64,
    /// The billing period the event falls in.
    pub period: Period,
    /// The period's allowance.
    pub allowance: u64,
    /// How far below zero the balance may go.
    pub overdraft: u64,
    /// Whether the caller chose the `event_id`. Only such an id can come back as a replay,
    /// so only such an id is remembered; a generated one is unique by construction (and the
    /// ledger's unique key still refuses it twice).
    pub remember: bool,
    /// How long the `event_id` is remembered for replays.
    pub remember_until: Timestamp,
}

/// What a hot store did with an [`Admission`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    /// Decided now (and, when allowed, committed).
    Decided(Decision),
    /// Seen before with the same content: the first decision, nothing charged.
    Replayed(Decision),
    /// Seen before with different content.
    Conflict,
    /// The tenant's counters are not loaded; load a [`HotSnapshot`] and retry.
    Unloaded,
}

/// A tenant's counters computed from the ledger, to load into an empty hot store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HotSnapshot {
    /// Admitted calls per calendar window `(per, window start, count)`.
    pub quotas: Vec<(Per, Timestamp, u32)>,
    /// GCRA state per smooth window.
    pub smooth: Vec<(Per, Timestamp)>,
    /// Credits per billing period `(period start, used, granted)`.
    pub credits: Vec<(Timestamp, u64, i64)>,
}

/// A tenant's credits in one period, as the hot store holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeriodCredits {
    /// Credits charged.
    pub used: u64,
    /// Credits granted (negative: clawed back).
    pub granted: i64,
}

/// Derived counters, rebuildable from the ledger.
#[async_trait]
pub trait HotStore: Send + Sync + 'static {
    /// Decides an admission atomically: replay check, windows, credits, commit.
    async fn admit(&self, admission: &Admission) -> Result<Admitted, Error>;
    /// Takes back what an admitted call counted, and forgets its `event_id`.
    async fn revert(&self, admission: &Admission) -> Result<(), Error>;
    /// Forgets the decision remembered for the admission's `event_id`, once the ledger
    /// showed it was not the one to answer with (the ledger held the id already, or the
    /// record could not be written): the next call with the id is decided again and
    /// meets the ledger's answer.
    async fn forget(&self, admission: &Admission) -> Result<(), Error>;
    /// Loads a tenant's counters unless they are loaded already.
    async fn load(&self, tenant: &TenantId, snapshot: HotSnapshot) -> Result<(), Error>;
    /// Adds `amount` granted credits to a period: always when it raises the balance
    /// (positive), and when it lowers it only if the balance stays at or above
    /// `-overdraft`. Returns the new remaining balance, `None` if the tenant is not
    /// loaded, or [`Error::BelowFloor`].
    async fn grant(
        &self,
        tenant: &TenantId,
        period: Period,
        allowance: u64,
        overdraft: u64,
        amount: i64,
    ) -> Result<Option<i64>, Error>;
    /// A tenant's credits in a period, `None` if the tenant is not loaded.
    async fn credits(&self, tenant: &TenantId, period_start: Timestamp) -> Result<Option<PeriodCredits>, Error>;
    /// Forgets every counter (they are rebuilt from the ledger on next use), every
    /// login's failures and lock, and every revoked token.
    async fn clear(&self) -> Result<(), Error>;

    /// Counts a failed login for `key` (a lower-case e-mail) at `now`; returns the state
    /// after it (locked once failures within the window reach the maximum).
    async fn login_failed(&self, key: &str, now: Timestamp, policy: LockoutPolicy) -> Result<LoginGuard, Error>;
    /// The state of `key` at `now`: a lock whose time has passed is no lock, and only
    /// failures within the window count.
    async fn login_guard(&self, key: &str, now: Timestamp, policy: LockoutPolicy) -> Result<LoginGuard, Error>;
    /// Clears failures and lock of `key` (a successful login, or an admin's unlock).
    async fn clear_login(&self, key: &str) -> Result<(), Error>;

    /// Refuses the access token with id `jti` from `now` on; remembered until `until`,
    /// when the token expires anyway.
    async fn revoke_token(&self, jti: &str, now: Timestamp, until: Timestamp) -> Result<(), Error>;
    /// Whether the access token with id `jti` is revoked at `now`.
    async fn token_revoked(&self, jti: &str, now: Timestamp) -> Result<bool, Error>;
}

/// Lockout rules: `max_failures` failures within `window` lock the key for `lock_for`.
///
/// The window is fixed: it opens at the first failure (after the previous window or lock
/// ended) and lasts `window`, like a counter with a time to live. A lock, once over,
/// takes the failures that caused it with it; failures while locked count but do not
/// extend the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures that lock the key (0 counts as 1).
    pub max_failures: u32,
    /// How long failures count.
    pub window: Duration,
    /// How long a lock lasts.
    pub lock_for: Duration,
}

impl Default for LockoutPolicy {
    /// 5 failures within 15 minutes lock for 15 minutes.
    fn default() -> Self {
        LockoutPolicy { max_failures: 5, window: Duration::from_secs(15 * 60), lock_for: Duration::from_secs(15 * 60) }
    }
}

/// A key's login state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoginGuard {
    /// Failures that count now.
    pub failures: u32,
    /// Until when the key is locked, if it is.
    pub locked_until: Option<Timestamp>,
}

/// Checks shared by every record store's own tests.
#[cfg(test)]
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
