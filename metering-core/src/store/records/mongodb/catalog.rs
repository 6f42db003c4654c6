//! [`Catalog`] for [`MongoRecords`]: one document per plan, tenant, user and key, each
//! write a single-document operation (atomic in MongoDB), except a sign-up, which is a
//! transaction.

use async_trait::async_trait;
use mongodb::ClientSession;
use mongodb::bson::{Document, doc};

use super::documents::{ApiKeyDoc, PlanDoc, TenantDoc, UserDoc, encode};
use super::{MongoRecords, limit_of, names};
use crate::account::{ApiKey, User};
use crate::clock::Timestamp;
use crate::error::Error;
use crate::ledger::LedgerQuery;
use crate::plan::{Plan, PlanId};
use crate::store::records::Catalog;
use crate::tenant::{Tenant, TenantId};

impl MongoRecords {
    /// Writes a plan's document (see [`PlanDoc`]), replacing one of the same id (in a
    /// transaction when `session` is given).
    pub(super) async fn put_plan_in(
        &self,
        id: &PlanId,
        doc: Document,
        session: Option<&mut ClientSession>,
    ) -> Result<(), mongodb::error::Error> {
        let coll = self.collection::<Document>(names::PLANS);
        let replace = coll.replace_one(doc! { "_id": id.as_str() }, doc).upsert(true);
        match session {
            Some(session) => replace.session(session).await.map(|_| ()),
            None => replace.await.map(|_| ()),
        }
    }

    /// Replaces a tenant with its document (see [`TenantDoc`]); `Ok(false)` if there is
    /// none (in a transaction when `session` is given).
    pub(super) async fn update_tenant_in(
        &self,
        id: &TenantId,
        doc: Document,
        session: Option<&mut ClientSession>,
    ) -> Result<bool, mongodb::error::Error> {
        let coll = self.collection::<Document>(names::TENANTS);
        let replace = coll.replace_one(doc! { "_id": id.as_str() }, doc);
        let result = match session {
            Some(session) => replace.session(session).await?,
            None => replace.await?,
        };
        Ok(result.matched_count == 1)
    }

    /// Marks a key revoked at `at` unless it is already; `Ok(false)` if there is no such
    /// key (in a transaction when `session` is given). The conditional update is one
    /// atomic step, so concurrent revocations agree on the first time.
    pub(super) async fn revoke_api_key_in(
        &self,
        id: &str,
        at: Timestamp,
        mut session: Option<&mut ClientSession>,
    ) -> Result<bool, mongodb::error::Error> {
        let coll = self.collection::<Document>(names::API_KEYS);
        let update =
            coll.update_one(doc! { "_id": id, "revoked_at": null }, doc! { "$set": { "revoked_at": at.as_micros() } });
        let result = match session.as_deref_mut() {
            Some(session) => update.session(session).await?,
            None => update.await?,
        };
        if result.matched_count == 1 {
            return Ok(true);
        }
        let find = coll.find_one(doc! { "_id": id }).projection(doc! { "_id": 1 });
        let existing = match session {
            Some(session) => find.session(session).await?,
            None => find.await?,
        };
        Ok(existing.is_some())
    }
}

#[async_trait]
impl Catalog for MongoRecords {
    async fn put_plan(&self, plan: &Plan) -> Result<(), Error> {
        let doc = encode(&PlanDoc::from(plan), names::PLANS)?;
        self.run("writing a plan", self.put_plan_in(&plan.id, doc, None)).await
    }

    async fn insert_plan(&self, plan: &Plan) -> Result<(), Error> {
        let doc = encode(&PlanDoc::from(plan), names::PLANS)?;
        let coll = self.collection::<Document>(names::PLANS);
        self.write_unique(coll.insert_one(doc), || format!("plan {}", plan.id)).await.map(|_| ())
    }

    async fn plan(&self, id: &PlanId) -> Result<Option<Plan>, Error> {
        let found: Option<PlanDoc> = self.find_one(names::PLANS, doc! { "_id": id.as_str() }).await?;
        Ok(found.map(Plan::from))
    }

    async fn plans(&self) -> Result<Vec<Plan>, Error> {
        let found: Vec<PlanDoc> = self.find_many(names::PLANS, doc! {}, doc! { "_id": 1 }, None).await?;
        Ok(found.into_iter().map(Plan::from).collect())
    }

    async fn insert_tenant(&self, tenant: &Tenant) -> Result<(), Error> {
        let doc = encode(&TenantDoc::from(tenant), names::TENANTS)?;
        let coll = self.collection::<Document>(names::TENANTS);
        self.write_unique(coll.insert_one(doc), || format!("tenant {}", tenant.id)).await.map(|_| ())
    }

    // A sign-up writes two documents, so it is a multi-document transaction: the tenant and
    // the user commit together or not at all. The alternative, inserting the tenant and
    // deleting it again when the user is refused, would let a reader see a tenant without
    // its user, and a crash between the two would leave it behind.
    async fn insert_account(&self, tenant: &Tenant, user: &User) -> Result<(), Error> {
        let tenant_doc = encode(&TenantDoc::from(tenant), names::TENANTS)?;
        let user_doc = encode(&UserDoc::from(user), names::USERS)?;
        let tenants = self.collection::<Document>(names::TENANTS);
        let users = self.collection::<Document>(names::USERS);
        self.within("creating an account", async {
            let mut session = self.session().await.map_err(|e| super::driver_error("starting a session", e))?;
            loop {
                session.start_transaction().await.map_err(|e| super::driver_error("starting a transaction", e))?;
                let body = async {
                    tenants.insert_one(tenant_doc.clone()).session(&mut session).await?;
                    users.insert_one(user_doc.clone()).session(&mut session).await?;
                    Ok(Ok(()))
                }
                .await;
                if let Some(done) = Self::finish(&mut session, body).await? {
                    return Ok(done);
                }
            }
        })
        .await
        .map_err(|e| match e {
            Error::AlreadyExists(_) => {
                Error::AlreadyExists(format!("tenant {} or user {} ({})", tenant.id, user.id, user.email))
            }
            other => other,
        })
    }

    async fn update_tenant(&self, tenant: &Tenant) -> Result<(), Error> {
        let doc = encode(&TenantDoc::from(tenant), names::TENANTS)?;
        match self.run("replacing a tenant", self.update_tenant_in(&tenant.id, doc, None)).await? {
            true => Ok(()),
            false => Err(Error::UnknownTenant(tenant.id.clone())),
        }
    }

    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, Error> {
        let found: Option<TenantDoc> = self.find_one(names::TENANTS, doc! { "_id": id.as_str() }).await?;
        Ok(found.map(Tenant::from))
    }

    async fn tenants(&self, after: Option<&TenantId>, limit: usize) -> Result<Vec<Tenant>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let filter = match after {
            Some(after) => doc! { "_id": { "$gt": after.as_str() } },
            None => doc! {},
        };
        let found: Vec<TenantDoc> =
            self.find_many(names::TENANTS, filter, doc! { "_id": 1 }, Some(limit_of(limit, usize::MAX))).await?;
        Ok(found.into_iter().map(Tenant::from).collect())
    }

    async fn insert_user(&self, user: &User) -> Result<(), Error> {
        let doc = encode(&UserDoc::from(user), names::USERS)?;
        let coll = self.collection::<Document>(names::USERS);
        self.write_unique(coll.insert_one(doc), || format!("user {} ({})", user.id, user.email)).await.map(|_| ())
    }

    async fn update_user(&self, user: &User) -> Result<(), Error> {
        let doc = encode(&UserDoc::from(user), names::USERS)?;
        let coll = self.collection::<Document>(names::USERS);
        let result = self
            .write_unique(coll.replace_one(doc! { "_id": &user.id }, doc), || format!("user e-mail {}", user.email))
            .await?;
        match result.matched_count {
            0 => Err(Error::NotFound(format!("user {}", user.id))),
            _ => Ok(()),
        }
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, Error> {
        let found: Option<UserDoc> = self.find_one(names::USERS, doc! { "email": email }).await?;
        Ok(found.map(User::from))
    }

    async fn user(&self, id: &str) -> Result<Option<User>, Error> {
        let found: Option<UserDoc> = self.find_one(names::USERS, doc! { "_id": id }).await?;
        Ok(found.map(User::from))
    }

    async fn users_of_tenant(&self, tenant: &TenantId) -> Result<Vec<User>, Error> {
        let filter = doc! { "tenant_id": tenant.as_str() };
        let found: Vec<UserDoc> = self.find_many(names::USERS, filter, doc! { "email": 1 }, None).await?;
        Ok(found.into_iter().map(User::from).collect())
    }

    async fn insert_api_key(&self, key: &ApiKey) -> Result<(), Error> {
        let doc = encode(&ApiKeyDoc::from(key), names::API_KEYS)?;
        let coll = self.collection::<Document>(names::API_KEYS);
        self.write_unique(coll.insert_one(doc), || format!("API key {} (or its hash)", key.id)).await.map(|_| ())
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, Error> {
        let found: Option<ApiKeyDoc> = self.find_one(names::API_KEYS, doc! { "key_hash": key_hash }).await?;
        Ok(found.map(ApiKey::from))
    }

    async fn api_keys(&self, tenant: Option<&TenantId>) -> Result<Vec<ApiKey>, Error> {
        let filter = match tenant {
            Some(tenant) => doc! { "tenant_id": tenant.as_str() },
            None => doc! { "tenant_id": null },
        };
        let found: Vec<ApiKeyDoc> = self.find_many(names::API_KEYS, filter, doc! { "_id": 1 }, None).await?;
        Ok(found.into_iter().map(ApiKey::from).collect())
    }

    async fn revoke_api_key(&self, id: &str, at: Timestamp) -> Result<bool, Error> {
        self.run("revoking an API key", self.revoke_api_key_in(id, at, None)).await
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>, Error> {
        let found: Option<ApiKeyDoc> = self.find_one(names::API_KEYS, doc! { "_id": id }).await?;
        Ok(found.map(ApiKey::from))
    }

    async fn active_api_keys(&self, after: Option<&str>, limit: usize) -> Result<Vec<ApiKey>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut filter = doc! { "revoked_at": null };
        if let Some(after) = after {
            filter.insert("_id", doc! { "$gt": after });
        }
        let limit = Some(limit_of(limit, LedgerQuery::MAX_LIMIT));
        let found: Vec<ApiKeyDoc> = self.find_many(names::API_KEYS, filter, doc! { "_id": 1 }, limit).await?;
        Ok(found.into_iter().map(ApiKey::from).collect())
    }
}
