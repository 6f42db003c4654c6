//! [`Audited`] for [`SqliteRecords`]: the change and its audit entry in one transaction.

use async_trait::async_trait;
use rusqlite::{Connection, TransactionBehavior};

use super::catalog::{PlanRow, TenantRow, insert_key_row, revoke_key_row};
use super::sessions::AuditRow;
use super::usage_ledger::insert_grant_row;
use super::{SqliteRecords, db};
use crate::account::ApiKey;
use crate::audit::AuditEntry;
use crate::clock::Timestamp;
use crate::error::Error;
use crate::ledger::Grant;
use crate::store::{Audited, AuditedChange};

/// An [`AuditedChange`] with its values owned and encoded, ready for the writer thread.
enum Change {
    InsertPlan(PlanRow),
    PutPlan(PlanRow),
    UpdateTenant(TenantRow),
    InsertApiKey(ApiKey),
    RevokeApiKey { id: String, at: Timestamp },
    AddGrant(Grant),
}

impl Change {
    fn of(change: AuditedChange<'_>) -> Result<Self, Error> {
        Ok(match change {
            AuditedChange::InsertPlan(plan) => Change::InsertPlan(PlanRow::of(plan)?),
            AuditedChange::PutPlan(plan) => Change::PutPlan(PlanRow::of(plan)?),
            AuditedChange::UpdateTenant(tenant) => Change::UpdateTenant(TenantRow::of(tenant)?),
            AuditedChange::InsertApiKey(key) => Change::InsertApiKey(key.clone()),
            AuditedChange::RevokeApiKey { id, at } => Change::RevokeApiKey { id: id.to_owned(), at },
            AuditedChange::AddGrant(grant) => Change::AddGrant(grant.clone()),
        })
    }

    /// Writes the change with `c`, as the method its [`AuditedChange`] names does.
    fn apply(&self, c: &Connection) -> Result<(), Error> {
        match self {
            Change::InsertPlan(row) => row.insert(c),
            Change::PutPlan(row) => row.put(c),
            Change::UpdateTenant(row) => row.update(c),
            Change::InsertApiKey(key) => insert_key_row(c, key),
            Change::RevokeApiKey { id, at } => match revoke_key_row(c, id, *at)? {
                true => Ok(()),
                false => Err(Error::NotFound(format!("api key {id}"))),
            },
            Change::AddGrant(grant) => insert_grant_row(c, grant),
        }
    }
}

#[async_trait]
impl Audited for SqliteRecords {
    async fn apply_audited(&self, change: AuditedChange<'_>, entry: &AuditEntry) -> Result<(), Error> {
        let (change, entry) = (Change::of(change)?, AuditRow::of(entry)?);
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            change.apply(&tx)?;
            entry.insert(&tx)?;
            tx.commit().map_err(db)
        })
        .await
    }
}
