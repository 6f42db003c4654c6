//! [`UsageLedger`] for [`SqliteRecords`]: appends through the journal, reads and prunes on
//! the ledger blocks, grants in their own table.

use async_trait::async_trait;
use rusqlite::{Connection, TransactionBehavior, params};

use super::{SqliteRecords, blocks, db};
use crate::clock::Timestamp;
use crate::error::Error;
use crate::event::EventId;
use crate::ledger::{Appended, Grant, GroupBy, LedgerQuery, LedgerRecord, TimeBasis, UsageGroup, UsageTotals};
use crate::store::UsageLedger;
use crate::tenant::TenantId;

/// Ledger blocks pruned per transaction by [`UsageLedger::prune`].
const PRUNE_BLOCKS: usize = 256;

#[async_trait]
impl UsageLedger for SqliteRecords {
    async fn append(&self, records: Vec<LedgerRecord>) -> Result<Vec<Appended>, Error> {
        self.append_records(records, true).await
    }

    /// Writes to the journal without syncing it: the records survive a crash of the
    /// process, and reach the disk with the next synced append or their indexing.
    async fn append_buffered(&self, records: Vec<LedgerRecord>) -> Result<Vec<Appended>, Error> {
        self.append_records(records, false).await
    }

    async fn record(&self, tenant: &TenantId, event_id: &EventId) -> Result<Option<LedgerRecord>, Error> {
        let key = (tenant.clone(), event_id.clone());
        // The records waiting in the journal first, then the blocks, without indexing
        // what waits: a retry checked here must not cut the open segment into small blocks.
        if let Some(found) = self.journal.as_ref().and_then(|share| share.journal.lock().waiting_record(&key)) {
            return Ok(Some(found));
        }
        self.read(move |c| blocks::Lookup::new(c).find(&key.0, &key.1)).await
    }

    async fn records(&self, query: &LedgerQuery) -> Result<Vec<LedgerRecord>, Error> {
        let query = query.clone();
        self.index_journal(true).await?;
        self.read(move |c| blocks::list(c, &query)).await
    }

    async fn usage_totals(
        &self,
        tenant: &TenantId,
        basis: TimeBasis,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<UsageTotals, Error> {
        let tenant = tenant.clone();
        self.index_journal(true).await?;
        self.read(move |c| blocks::totals(c, &tenant, basis, from, to)).await
    }

    async fn usage_summary(
        &self,
        query: &LedgerQuery,
        group_by: GroupBy,
        limit_to: usize,
    ) -> Result<Vec<UsageGroup>, Error> {
        let query = query.clone();
        self.index_journal(true).await?;
        self.read(move |c| blocks::summary(c, &query, group_by, limit_to)).await
    }

    async fn prune(&self, before: Timestamp) -> Result<u64, Error> {
        self.index_journal(true).await?;
        let mut removed = 0;
        loop {
            let (n, more) = self
                .write(move |c| {
                    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
                    let pruned = blocks::prune(&tx, before, PRUNE_BLOCKS)?;
                    tx.commit().map_err(db)?;
                    Ok(pruned)
                })
                .await?;
            removed += n;
            if !more {
                return Ok(removed);
            }
        }
    }

    async fn flush(&self) -> Result<(), Error> {
        self.index_journal(true).await
    }

    async fn add_grant(&self, grant: &Grant) -> Result<(), Error> {
        let g = grant.clone();
        self.write(move |c| insert_grant_row(c, &g)).await
    }

    async fn granted(&self, tenant: &TenantId, period_start: Timestamp) -> Result<i64, Error> {
        let tenant = tenant.as_str().to_owned();
        self.read(move |c| {
            c.prepare_cached("SELECT COALESCE(SUM(amount), 0) FROM grants WHERE tenant_id = ?1 AND period_start = ?2")
                .and_then(|mut s| s.query_row(params![tenant, period_start.as_micros()], |row| row.get(0)))
                .map_err(db)
        })
        .await
    }
}

/// Inserts a grant row.
pub(super) fn insert_grant_row(c: &Connection, g: &Grant) -> Result<(), Error> {
    c.prepare_cached(
        "INSERT INTO grants (tenant_id, period_start, period_end, amount, reason, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![
            g.tenant_id.as_str(),
            g.period.start.as_micros(),
            g.period.end.as_micros(),
            g.amount,
            g.reason,
            g.at.as_micros(),
        ])
    })
    .map_err(db)
    .map(drop)
}
