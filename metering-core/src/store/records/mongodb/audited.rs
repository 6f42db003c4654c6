//! [`Audited`] for [`MongoRecords`]: the change and its audit entry in one transaction.
//!
//! A change and its entry live in different collections, so nothing short of a
//! multi-document transaction writes both or neither; the alternative (an outbox entry
//! on the changed document, copied to the log later) would let the log lag behind its
//! changes, which an audit log must not. The transaction commits with the configured
//! write concern and is run again whole after a transient transaction error (a write
//! conflict with a concurrent one), so of concurrent inserts of one plan exactly one
//! commits and the others see the duplicate key.

use async_trait::async_trait;
use mongodb::ClientSession;
use mongodb::bson::Document;

use super::documents::{ApiKeyDoc, AuditDoc, GrantDoc, PlanDoc, TenantDoc, encode};
use super::{MongoRecords, driver_error, names};
use crate::audit::AuditEntry;
use crate::error::Error;
use crate::store::records::{Audited, AuditedChange};

impl MongoRecords {
    /// Inserts `doc` into `collection` in the transaction of `session`.
    async fn insert_in(
        &self,
        collection: &str,
        doc: Document,
        session: &mut ClientSession,
    ) -> Result<(), mongodb::error::Error> {
        self.collection::<Document>(collection).insert_one(doc).session(session).await.map(|_| ())
    }

    /// Applies `change` in the transaction of `session`; `Ok(Err(_))` when the change is
    /// refused (nothing to update), `Err(_)` when the driver fails (a duplicate key too).
    async fn apply_in(
        &self,
        change: AuditedChange<'_>,
        session: &mut ClientSession,
    ) -> Result<Result<(), Error>, mongodb::error::Error> {
        match change {
            AuditedChange::InsertPlan(plan) => match encode(&PlanDoc::from(plan), names::PLANS) {
                Ok(doc) => self.insert_in(names::PLANS, doc, session).await.map(Ok),
                Err(e) => Ok(Err(e)),
            },
            AuditedChange::PutPlan(plan) => match encode(&PlanDoc::from(plan), names::PLANS) {
                Ok(doc) => self.put_plan_in(&plan.id, doc, Some(session)).await.map(Ok),
                Err(e) => Ok(Err(e)),
            },
            AuditedChange::UpdateTenant(tenant) => match encode(&TenantDoc::from(tenant), names::TENANTS) {
                Ok(doc) => Ok(match self.update_tenant_in(&tenant.id, doc, Some(session)).await? {
                    true => Ok(()),
                    false => Err(Error::UnknownTenant(tenant.id.clone())),
                }),
                Err(e) => Ok(Err(e)),
            },
            AuditedChange::InsertApiKey(key) => match encode(&ApiKeyDoc::from(key), names::API_KEYS) {
                Ok(doc) => self.insert_in(names::API_KEYS, doc, session).await.map(Ok),
                Err(e) => Ok(Err(e)),
            },
            AuditedChange::RevokeApiKey { id, at } => Ok(match self.revoke_api_key_in(id, at, Some(session)).await? {
                true => Ok(()),
                false => Err(Error::NotFound(format!("API key {id}"))),
            }),
            AuditedChange::AddGrant(grant) => match encode(&GrantDoc::from(grant), names::GRANTS) {
                Ok(doc) => self.insert_in(names::GRANTS, doc, session).await.map(Ok),
                Err(e) => Ok(Err(e)),
            },
        }
    }
}

#[async_trait]
impl Audited for MongoRecords {
    async fn apply_audited(&self, change: AuditedChange<'_>, entry: &AuditEntry) -> Result<(), Error> {
        let entry_doc = encode(&AuditDoc::from(entry), names::AUDIT)?;
        let audit = self.collection::<Document>(names::AUDIT);
        self.within("an audited change", async {
            let mut session = self.session().await.map_err(|e| driver_error("starting a session", e))?;
            loop {
                session.start_transaction().await.map_err(|e| driver_error("starting a transaction", e))?;
                let body = match self.apply_in(change, &mut session).await {
                    Ok(Ok(())) => audit.insert_one(entry_doc.clone()).session(&mut session).await.map(|_| Ok(())),
                    other => other,
                };
                if let Some(done) = Self::finish(&mut session, body).await? {
                    return Ok(done);
                }
            }
        })
        .await
    }
}
