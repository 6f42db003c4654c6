//! The usage ledger: one append-only record per `(tenant, event_id)`, the source of truth
//! from which balances and windows can always be recomputed.

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::decision::Decision;
use crate::event::{Event, EventId, Method};
use crate::tenant::{Period, TenantId};

/// One decided call, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRecord {
    /// The checked event.
    pub event: Event,
    /// When the engine decided it (smooth windows are rebuilt from this).
    pub decided_at: Timestamp,
    /// The decision, returned again on a replay.
    pub decision: Decision,
    /// The HTTP status the metered service answered, when the layer saw it.
    pub status: Option<u16>,
    /// Whether the call occupies its windows and is charged: admitted, and not given
    /// back afterwards (an upstream error the plan does not charge for).
    pub counted: bool,
    /// Admitted while the hot store could not answer (the fail-open policy): no window
    /// or balance counted it then; the tenant's next rebuild from the ledger does.
    #[serde(default)]
    pub fail_open: bool,
}

/// What appending one record did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// The record is stored.
    Inserted,
    /// A record with the same `(tenant, event_id)` was already stored; here it is.
    Duplicate(Box<LedgerRecord>),
}

/// Which instant of a record a time range selects on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeBasis {
    /// The event's own timestamp (calendar quotas, billing periods).
    Event,
    /// When it was decided (smooth windows), among records whose event timestamp is at or
    /// after `events_from`. A decided event is never older than the engine's time bounds
    /// allow, so the engine passes `from - max_age` and a backend can scan by event time.
    Decided {
        /// The oldest event timestamp looked at.
        events_from: Timestamp,
    },
}

impl TimeBasis {
    /// Whether `record` is a counted call that falls in `[from, to)` on this basis.
    pub fn counts(&self, record: &LedgerRecord, from: Timestamp, to: Timestamp) -> bool {
        let at = match self {
            TimeBasis::Event => record.event.timestamp,
            TimeBasis::Decided { events_from } if record.event.timestamp >= *events_from => record.decided_at,
            TimeBasis::Decided { .. } => return false,
        };
        record.counted && at >= from && at < to
    }
}

/// Counted calls and charged credits of admitted records in a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsageTotals {
    /// Admitted calls.
    pub calls: u64,
    /// Credits charged.
    pub credits: u64,
}

impl UsageTotals {
    /// Adds one counted call.
    pub fn add(&mut self, record: &LedgerRecord) {
        self.calls += 1;
        self.credits += record.decision.credits_charged;
    }
}

impl LedgerRecord {
    /// The record's place in a ledger listing, which runs newest first, that is by this key
    /// descending: event time, then event id, then tenant (an id is unique only within
    /// its tenant).
    pub fn listing_key(&self) -> (Timestamp, &EventId, &TenantId) {
        (self.event.timestamp, &self.event.event_id, &self.event.tenant_id)
    }
}

/// Where a ledger listing resumes: just past the last record seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerCursor {
    /// The event time of the last record seen.
    pub at: Timestamp,
    /// Its event id.
    pub event_id: EventId,
    /// Its tenant.
    pub tenant: TenantId,
}

impl LedgerCursor {
    /// The cursor just past `record`.
    pub fn after(record: &LedgerRecord) -> Self {
        LedgerCursor {
            at: record.event.timestamp,
            event_id: record.event.event_id.clone(),
            tenant: record.event.tenant_id.clone(),
        }
    }

    /// Whether `record` comes after the cursor in a listing (its key is lower).
    pub fn passes(&self, record: &LedgerRecord) -> bool {
        record.listing_key() < (self.at, &self.event_id, &self.tenant)
    }
}

/// Filters for reading the ledger, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerQuery {
    /// The tenant, or every tenant.
    pub tenant: Option<TenantId>,
    /// Only this service.
    pub service: Option<String>,
    /// Only this endpoint.
    pub endpoint: Option<String>,
    /// Only this method.
    pub method: Option<Method>,
    /// Event timestamps at or after this.
    pub from: Option<Timestamp>,
    /// Event timestamps before this.
    pub to: Option<Timestamp>,
    /// Resume just past the last record seen.
    pub before: Option<LedgerCursor>,
    /// The most records to return (capped at 1,000).
    pub limit: usize,
}

impl Default for LedgerQuery {
    fn default() -> Self {
        LedgerQuery {
            tenant: None,
            service: None,
            endpoint: None,
            method: None,
            from: None,
            to: None,
            before: None,
            limit: 100,
        }
    }
}

impl LedgerQuery {
    /// The cap on one page.
    pub const MAX_LIMIT: usize = 1_000;

    /// Whether a record passes the filters (for backends that filter in memory).
    pub fn matches(&self, r: &LedgerRecord) -> bool {
        let e = &r.event;
        self.tenant.as_ref().is_none_or(|t| *t == e.tenant_id)
            && self.service.as_ref().is_none_or(|s| *s == e.service_name)
            && self.endpoint.as_ref().is_none_or(|s| *s == e.endpoint)
            && self.method.is_none_or(|m| m == e.method)
            && self.from.is_none_or(|f| e.timestamp >= f)
            && self.to.is_none_or(|t| e.timestamp < t)
            && self.before.as_ref().is_none_or(|c| c.passes(r))
    }
}

/// How to group usage in a summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// By service name.
    Service,
    /// By endpoint.
    Endpoint,
    /// By HTTP method (`GET`, ...).
    Method,
    /// By UTC day of the event timestamp (`YYYY-MM-DD`).
    Day,
    /// By tenant id.
    Tenant,
    /// By denial reason (`rate_limited`, ...), `allowed` for allowed calls.
    Reason,
}

/// One group of a usage summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageGroup {
    /// The group's key: a service, endpoint, method, day (`YYYY-MM-DD`), tenant or reason.
    pub key: String,
    /// Every recorded call in the group, allowed and denied.
    pub calls: u64,
    /// The denied calls.
    pub denied: u64,
    /// Credits charged by counted records.
    pub credits: u64,
}

impl UsageGroup {
    /// The cap on the groups of one summary.
    pub const MAX_GROUPS: usize = 1_000;
}

/// A usage summary being added up, for backends that group records themselves.
#[cfg(any(feature = "memory", feature = "sqlite"))]
pub(crate) struct UsageSummary {
    by: GroupBy,
    groups: std::collections::HashMap<String, UsageGroup, foldhash::fast::RandomState>,
}

#[cfg(any(feature = "memory", feature = "sqlite"))]
impl UsageSummary {
    /// An empty summary grouped by `by`.
    pub(crate) fn new(by: GroupBy) -> Self {
        UsageSummary { by, groups: Default::default() }
    }

    /// Counts `record` in its group.
    pub(crate) fn add(&mut self, record: &LedgerRecord) {
        let key = group_key(record, self.by);
        let group = self.groups.entry(key).or_insert_with_key(|k| UsageGroup {
            key: k.clone(),
            calls: 0,
            denied: 0,
            credits: 0,
        });
        group.calls += 1;
        group.denied += u64::from(!record.decision.allowed);
        if record.counted {
            group.credits += record.decision.credits_charged;
        }
    }

    /// The groups in the order [`usage_summary`](crate::store::UsageLedger::usage_summary)
    /// gives them, at most `limit` (capped at [`UsageGroup::MAX_GROUPS`]).
    pub(crate) fn finish(self, limit: usize) -> Vec<UsageGroup> {
        let mut groups: Vec<UsageGroup> = self.groups.into_values().collect();
        if self.by == GroupBy::Day {
            groups.sort_by(|a, b| a.key.cmp(&b.key));
        } else {
            groups.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.key.cmp(&b.key)));
        }
        groups.truncate(limit.min(UsageGroup::MAX_GROUPS));
        groups
    }
}

/// The key a record falls under when grouped by `by`.
#[cfg(any(feature = "memory", feature = "sqlite"))]
fn group_key(r: &LedgerRecord, by: GroupBy) -> String {
    let e = &r.event;
    match by {
        GroupBy::Service => e.service_name.clone(),
        GroupBy::Endpoint => e.endpoint.clone(),
        GroupBy::Method => e.method.as_str().to_owned(),
        GroupBy::Day => day_key(e.timestamp),
        GroupBy::Tenant => e.tenant_id.as_str().to_owned(),
        GroupBy::Reason => match (r.decision.allowed, r.decision.reason) {
            (true, _) => "allowed".to_owned(),
            (false, Some(reason)) => reason.as_str().to_owned(),
            (false, None) => "denied".to_owned(),
        },
    }
}

/// The `YYYY-MM-DD` UTC day of an instant (the key of [`GroupBy::Day`]).
#[cfg(any(feature = "memory", feature = "sqlite"))]
fn day_key(at: Timestamp) -> String {
    at.to_datetime().format("%Y-%m-%d").to_string()
}

/// A credit grant (positive) or claw-back (negative) for a tenant's period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The period it applies to.
    pub period: Period,
    /// Credits added (negative: removed).
    pub amount: i64,
    /// Why.
    pub reason: String,
    /// When.
    pub at: Timestamp,
}

/// A ledger record for tests: an admitted call of `tenant` with key `id`, charged `credits`.
#[cfg(all(test, any(feature = "memory", feature = "sqlite")))]
pub(crate) fn sample_record(tenant: &str, id: &str, credits: u64) -> LedgerRecord {
    let now = Timestamp::from_secs(1_800_000_000);
    let event = crate::event::UsageEvent::new(tenant, "svc", "/x", "GET")
        .with_event_id(id)
        .with_credits(i64::try_from(credits).expect("a small credit count"))
        .validate_at(now, &Default::default())
        .expect("a valid event");
    let decision = Decision {
        event_id: event.event_id.clone(),
        allowed: true,
        reason: None,
        credits_charged: credits,
        credits_remaining: 0,
        limits: Vec::new(),
        retry_after: None,
    };
    LedgerRecord { event, decided_at: now, decision, status: Some(200), counted: true, fail_open: false }
}
