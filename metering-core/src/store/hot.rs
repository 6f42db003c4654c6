//! Derived, rebuildable counters (windows, period balances, recently seen `event_id`s),
//! and short-lived login-failure counters and revoked access tokens. Backend:
//! [`memory::MemoryHot`].
//!
//! A hot store answers one [`Admission`] with one atomic step: replay check, every window,
//! credits, and the commit of all of them, or of none, deciding as the reference decision
//! ([`crate::admit`]) does.

#[cfg(feature = "memory")]
pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::changes::Change;
use crate::clock::Timestamp;
use crate::decision::{Decision, DenyReason};
use crate::error::Error;
use crate::event::EventId;
use crate::plan::{Limit, Per};
use crate::tenant::{Period, TenantId};

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
///
/// **A tenant's counters are present or absent together.** A store may lose them (an
/// eviction, an expiry, a restart without persistence, a wipe), but only all at once: a
/// piece gone while the rest stays would read as zero and hand out a fresh quota or
/// balance. An absent tenant answers [`Admitted::Unloaded`] (and `None` from
/// [`credits`](Self::credits) and [`grant`](Self::grant)) until [`load`](Self::load) puts
/// back a snapshot computed from the ledger. Remembered `event_id`s may go on their own:
/// a forgotten one meets the ledger's unique key.
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
    /// Drops a tenant's counters (its remembered ids may go with them), so the next
    /// decision finds it [`Admitted::Unloaded`] and rebuilds it from the ledger.
    async fn discard(&self, tenant: &TenantId) -> Result<(), Error>;
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
    /// Clears failures and locks of `key` counted per client address, every key
    /// `{key} from {address}` (an admin's unlock of an account locked from some addresses).
    async fn clear_logins_from(&self, key: &str) -> Result<(), Error>;

    /// Refuses the access token with id `jti` from `now` on; remembered until `until`,
    /// when the token expires anyway.
    async fn revoke_token(&self, jti: &str, now: Timestamp, until: Timestamp) -> Result<(), Error>;
    /// Whether the access token with id `jti` is revoked at `now`.
    async fn token_revoked(&self, jti: &str, now: Timestamp) -> Result<bool, Error>;

    /// Counts one call for `key` (a sign-up's client address, say) in the key's fixed
    /// window, which opens at its first call and lasts `window`: at most `max` calls count
    /// in it, and a call over that is answered [`KeyCount::Over`] and not counted.
    async fn count_key(&self, key: &str, now: Timestamp, window: Duration, max: u32) -> Result<KeyCount, Error>;

    /// Whether the store answers now (an in-process store always does).
    async fn ping(&self) -> Result<(), Error> {
        Ok(())
    }

    /// Tells every instance sharing this store that `change` was made, so it drops what
    /// it cached. A store no other instance shares has no one to tell (the default).
    async fn announce(&self, _change: &Change) -> Result<(), Error> {
        Ok(())
    }

    /// What instances sharing this store announce from now on (this one's announcements
    /// included); `None` for a store no other instance shares (the default). After a lost
    /// connection it yields [`Change::Everything`]: announcements may have been missed.
    fn changes(&self) -> Option<broadcast::Receiver<Change>> {
        None
    }
}

/// What [`HotStore::count_key`] did with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCount {
    /// Counted: the window had room.
    Counted,
    /// Not counted: the window is full until `retry_after` from now.
    Over {
        /// How long until the window ends.
        retry_after: Duration,
    },
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
