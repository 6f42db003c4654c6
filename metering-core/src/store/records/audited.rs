//! [`Audited`]: an admin's change of the records, written together with its audit entry.

use async_trait::async_trait;

use crate::account::ApiKey;
use crate::audit::AuditEntry;
use crate::clock::Timestamp;
use crate::error::Error;
use crate::ledger::Grant;
use crate::plan::Plan;
use crate::tenant::Tenant;

/// A change of the records that is audited: each applies as the method it names.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum AuditedChange<'a> {
    /// [`Catalog::insert_plan`](super::Catalog::insert_plan).
    InsertPlan(&'a Plan),
    /// [`Catalog::put_plan`](super::Catalog::put_plan).
    PutPlan(&'a Plan),
    /// [`Catalog::update_tenant`](super::Catalog::update_tenant).
    UpdateTenant(&'a Tenant),
    /// [`Catalog::insert_api_key`](super::Catalog::insert_api_key).
    InsertApiKey(&'a ApiKey),
    /// [`Catalog::revoke_api_key`](super::Catalog::revoke_api_key), except that a key that
    /// does not exist is [`Error::NotFound`].
    RevokeApiKey {
        /// The key's id.
        id: &'a str,
        /// When it is revoked (a key revoked already keeps its first time).
        at: Timestamp,
    },
    /// [`UsageLedger::add_grant`](super::UsageLedger::add_grant).
    AddGrant(&'a Grant),
}

/// Changes written with their audit entries.
///
/// A role of its own because it spans two: what a change touches (the catalog, the
/// grants) and the audit log ([`Sessions`](super::Sessions)). A backend implements it
/// where both are kept under one lock or in one transaction.
#[async_trait]
pub trait Audited: Send + Sync + 'static {
    /// Applies `change` and appends `entry` to the audit log; fails as the change does,
    /// or with [`Error::AlreadyExists`] if the entry's id is taken.
    ///
    /// Atomic: the change and its entry are written together or neither (one lock in
    /// memory, one transaction in SQLite), so a change that fails leaves no entry and a
    /// change that is made always has its entry.
    async fn apply_audited(&self, change: AuditedChange<'_>, entry: &AuditEntry) -> Result<(), Error>;
}
