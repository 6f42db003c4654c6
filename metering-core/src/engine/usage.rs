//! The engine's ledger reads and retention, through the record store's
//! [`UsageLedger`](crate::store::UsageLedger) role.

use super::Engine;
use crate::clock::Timestamp;
use crate::error::Error;
use crate::ledger::{GroupBy, LedgerQuery, LedgerRecord, UsageGroup};

impl Engine {
    /// Ledger records matching `query`, newest first; it sees every record whose call
    /// was answered before it started (records queued by
    /// [`settle_later`](Self::settle_later) once they are written).
    pub async fn ledger_records(&self, query: &LedgerQuery) -> Result<Vec<LedgerRecord>, Error> {
        self.inner.records.records(query).await
    }

    /// Usage of the records `query`'s filters select, grouped by `group_by`, at most
    /// `limit` groups (see [`UsageLedger::usage_summary`](crate::store::UsageLedger::usage_summary)).
    pub async fn usage_summary(
        &self,
        query: &LedgerQuery,
        group_by: GroupBy,
        limit: usize,
    ) -> Result<Vec<UsageGroup>, Error> {
        self.inner.records.usage_summary(query, group_by, limit).await
    }

    /// Deletes ledger records whose event time is before `before`; returns how many.
    pub async fn prune_ledger(&self, before: Timestamp) -> Result<u64, Error> {
        self.inner.records.prune(before).await
    }
}
