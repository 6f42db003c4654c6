//! [`Sessions`] for [`MongoRecords`]: refresh tokens used up by one `findAndModify`, and
//! the audit log paged over its `(at, _id)` index.

use async_trait::async_trait;
use mongodb::bson::{Document, doc};
use mongodb::options::ReturnDocument;

use super::documents::{AuditDoc, RefreshTokenDoc, TokenState, decode, encode};
use super::{MongoRecords, limit_of, names};
use crate::account::RefreshToken;
use crate::audit::AuditEntry;
use crate::clock::Timestamp;
use crate::error::Error;
use crate::store::records::Sessions;

/// The most audit entries one page holds.
const MAX_AUDIT_PAGE: usize = 1_000;

#[async_trait]
impl Sessions for MongoRecords {
    async fn insert_refresh_token(&self, token: &RefreshToken) -> Result<(), Error> {
        let doc = encode(&RefreshTokenDoc::unused(token), names::REFRESH_TOKENS)?;
        let coll = self.collection::<Document>(names::REFRESH_TOKENS);
        self.write_unique(coll.insert_one(doc), || format!("refresh token {}", token.id)).await.map(|_| ())
    }

    async fn consume_refresh_token(&self, id: &str, now: Timestamp) -> Result<Option<RefreshToken>, Error> {
        let coll = self.collection::<Document>(names::REFRESH_TOKENS);
        let filter = doc! { "_id": id, "state": TokenState::Unused.as_str(), "expires_at": { "$gt": now.as_micros() } };
        let update = doc! { "$set": { "state": TokenState::Used.as_str() } };
        let before = self
            .run(
                "using a refresh token",
                coll.find_one_and_update(filter, update).return_document(ReturnDocument::Before),
            )
            .await?;
        Ok(before.map(|doc| decode::<RefreshTokenDoc>(doc, names::REFRESH_TOKENS)).transpose()?.map(RefreshToken::from))
    }

    // A user's unused tokens can be several documents, so they are revoked in one
    // transaction: all of them or none.
    async fn revoke_refresh_tokens(&self, user_id: &str) -> Result<u64, Error> {
        let coll = self.collection::<Document>(names::REFRESH_TOKENS);
        let filter = doc! { "user_id": user_id, "state": TokenState::Unused.as_str() };
        let update = doc! { "$set": { "state": TokenState::Revoked.as_str() } };
        self.within("revoking refresh tokens", async {
            let mut session = self.session().await.map_err(|e| super::driver_error("starting a session", e))?;
            loop {
                session.start_transaction().await.map_err(|e| super::driver_error("starting a transaction", e))?;
                let body = coll
                    .update_many(filter.clone(), update.clone())
                    .session(&mut session)
                    .await
                    .map(|r| Ok(r.modified_count));
                if let Some(revoked) = Self::finish(&mut session, body).await? {
                    return Ok(revoked);
                }
            }
        })
        .await
    }

    async fn prune_refresh_tokens(&self, now: Timestamp) -> Result<u64, Error> {
        let coll = self.collection::<Document>(names::REFRESH_TOKENS);
        let filter = doc! { "$or": [
            { "expires_at": { "$lte": now.as_micros() } },
            { "state": { "$ne": TokenState::Unused.as_str() } },
        ] };
        let result = self.run("pruning refresh tokens", coll.delete_many(filter)).await?;
        Ok(result.deleted_count)
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), Error> {
        let doc = encode(&AuditDoc::from(entry), names::AUDIT)?;
        let coll = self.collection::<Document>(names::AUDIT);
        self.write_unique(coll.insert_one(doc), || format!("audit entry {}", entry.id)).await.map(|_| ())
    }

    async fn audit(&self, before: Option<&str>, limit: usize) -> Result<Vec<AuditEntry>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let filter = match before {
            None => doc! {},
            Some(id) => {
                let Some(last) = self.find_one::<AuditDoc>(names::AUDIT, doc! { "_id": id }).await? else {
                    return Ok(Vec::new());
                };
                let at = last.into_entry()?.at.as_micros();
                doc! { "$or": [ { "at": { "$lt": at } }, { "at": at, "_id": { "$lt": id } } ] }
            }
        };
        let limit = Some(limit_of(limit, MAX_AUDIT_PAGE));
        let found: Vec<AuditDoc> = self.find_many(names::AUDIT, filter, doc! { "at": -1, "_id": -1 }, limit).await?;
        found.into_iter().map(AuditDoc::into_entry).collect()
    }
}
