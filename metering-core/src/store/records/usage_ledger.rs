//! [`UsageLedger`]: the usage ledger and the credit grants. Its record types live in
//! [`crate::ledger`].

use async_trait::async_trait;

use crate::clock::Timestamp;
use crate::error::Error;
use crate::event::EventId;
use crate::ledger::{Appended, Grant, GroupBy, LedgerQuery, LedgerRecord, TimeBasis, UsageGroup, UsageTotals};
use crate::tenant::TenantId;

/// The usage ledger, append-only, one record per `(tenant, event_id)`, and the credit
/// grants a balance adds to the plan's allowance.
#[async_trait]
pub trait UsageLedger: Send + Sync + 'static {
    /// Appends records; a record whose `(tenant, event_id)` is already stored (or comes
    /// earlier in the batch) is not written again and its stored twin is returned instead.
    /// The records are durable when it returns.
    ///
    /// Atomic per key: of concurrent appends of one key through one store, exactly one
    /// inserts it. A batch is written whole or, when it returns an error, not at all; it
    /// is not isolated: a concurrent read may see part of a batch being appended. A crash
    /// before it returns, or a failed write the store could not undo, may keep part of an
    /// unacknowledged batch, each kept record whole.
    async fn append(&self, records: Vec<LedgerRecord>) -> Result<Vec<Appended>, Error>;
    /// [`append`](Self::append) for records no caller waits on (the Tower layer's, recorded
    /// after the response): a backend may return before they would survive a power loss
    /// or an operating-system crash. By default, the same as `append`.
    ///
    /// Atomic as [`append`](Self::append).
    async fn append_buffered(&self, records: Vec<LedgerRecord>) -> Result<Vec<Appended>, Error> {
        self.append(records).await
    }
    /// One record by key.
    ///
    /// Read: the record as of one instant, among every append acknowledged before the call.
    async fn record(&self, tenant: &TenantId, event_id: &EventId) -> Result<Option<LedgerRecord>, Error>;
    /// Records matching a query, newest first.
    ///
    /// Read: it sees every append acknowledged before the call; one tenant's records are
    /// read as of one instant, a query over several tenants is not one snapshot.
    async fn records(&self, query: &LedgerQuery) -> Result<Vec<LedgerRecord>, Error>;
    /// Admitted calls and charged credits of a tenant in `[from, to)`.
    ///
    /// Read: a consistent snapshot of the tenant's records, with every append acknowledged
    /// before the call.
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
    ///
    /// Read: as [`records`](Self::records).
    async fn usage_summary(
        &self,
        query: &LedgerQuery,
        group_by: GroupBy,
        limit: usize,
    ) -> Result<Vec<UsageGroup>, Error>;
    /// Deletes records whose event timestamp is before `before`; returns how many.
    ///
    /// Not atomic: records go in chunks (some tenants, or some blocks, at a time), each chunk
    /// whole; after a failure the records deleted so far stay deleted, and calling it
    /// again finishes the job.
    async fn prune(&self, before: Timestamp) -> Result<u64, Error>;
    /// Brings every appended record into the store's indexed form, so that every reader
    /// of the same storage (another process included) sees it. A backend that indexes
    /// appends at once has nothing to do.
    ///
    /// Changes no record: what it indexes, it indexes in one transaction.
    async fn flush(&self) -> Result<(), Error> {
        Ok(())
    }

    /// Stores a credit grant.
    ///
    /// Atomic: one grant, written whole or not at all.
    async fn add_grant(&self, grant: &Grant) -> Result<(), Error>;
    /// The sum of a tenant's grants for the period starting at `period_start`.
    ///
    /// Read: a consistent snapshot of the tenant's grants.
    async fn granted(&self, tenant: &TenantId, period_start: Timestamp) -> Result<i64, Error>;
}
