//! [`Catalog`] for [`SqliteRecords`]: one table each for plans, tenants, users and API keys.

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{Connection, Row, TransactionBehavior, params, params_from_iter};

use super::{SqliteRecords, all, col, corrupt, db, first, from_json, is_unique_violation, limit, to_json};
use crate::account::{ApiKey, Role, User};
use crate::clock::Timestamp;
use crate::error::Error;
use crate::ledger::LedgerQuery;
use crate::plan::{Plan, PlanId};
use crate::store::Catalog;
use crate::tenant::{BillingAnchor, Tenant, TenantId, TenantStatus};

const TENANT_COLUMNS: &str = "id, name, plan_id, region, status, billing_anchor, overrides, created_at";
pub(super) const USER_COLUMNS: &str = "id, tenant_id, email, password_hash, role, created_at";
const KEY_COLUMNS: &str = "id, tenant_id, name, service_name, key_hash, created_at, revoked_at, created_by";

#[async_trait]
impl Catalog for SqliteRecords {
    async fn put_plan(&self, plan: &Plan) -> Result<(), Error> {
        let row = PlanRow::of(plan)?;
        self.write(move |c| row.put(c)).await
    }

    async fn insert_plan(&self, plan: &Plan) -> Result<(), Error> {
        let row = PlanRow::of(plan)?;
        self.write(move |c| row.insert(c)).await
    }

    async fn plan(&self, id: &PlanId) -> Result<Option<Plan>, Error> {
        let id = id.as_str().to_owned();
        self.read(move |c| first(c, "SELECT body FROM plans WHERE id = ?1", [id], decode_plan)).await
    }

    async fn plans(&self) -> Result<Vec<Plan>, Error> {
        self.read(|c| all(c, "SELECT body FROM plans ORDER BY id", [], decode_plan)).await
    }

    async fn insert_tenant(&self, tenant: &Tenant) -> Result<(), Error> {
        let row = TenantRow::of(tenant)?;
        self.write(move |c| row.insert(c)).await
    }

    async fn insert_account(&self, tenant: &Tenant, user: &User) -> Result<(), Error> {
        let (row, u) = (TenantRow::of(tenant)?, user.clone());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            row.insert(&tx)?;
            insert_user_row(&tx, &u)?;
            tx.commit().map_err(db)
        })
        .await
    }

    async fn update_tenant(&self, tenant: &Tenant) -> Result<(), Error> {
        let row = TenantRow::of(tenant)?;
        self.write(move |c| row.update(c)).await
    }

    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, Error> {
        let id = id.as_str().to_owned();
        self.read(move |c| {
            first(c, &format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = ?1"), [id], decode_tenant)
        })
        .await
    }

    async fn tenants(&self, after: Option<&TenantId>, limit_to: usize) -> Result<Vec<Tenant>, Error> {
        let after = after.map(|a| a.as_str().to_owned());
        self.read(move |c| match after {
            Some(after) => {
                let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id > ?1 ORDER BY id LIMIT ?2");
                all(c, &sql, params![after, limit(limit_to)], decode_tenant)
            }
            None => {
                let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY id LIMIT ?1");
                all(c, &sql, [limit(limit_to)], decode_tenant)
            }
        })
        .await
    }

    async fn insert_user(&self, user: &User) -> Result<(), Error> {
        let u = user.clone();
        self.write(move |c| insert_user_row(c, &u)).await
    }

    async fn update_user(&self, user: &User) -> Result<(), Error> {
        let u = user.clone();
        self.write(move |c| {
            let updated = c
                .prepare_cached(
                    "UPDATE users SET tenant_id = ?2, email = ?3, password_hash = ?4, role = ?5, created_at = ?6 \
                     WHERE id = ?1",
                )
                .and_then(|mut s| s.execute(params_from_iter(user_values(&u))));
            match updated {
                Ok(0) => Err(Error::NotFound(format!("user {}", u.id))),
                Ok(_) => Ok(()),
                Err(e) if is_unique_violation(&e) => Err(Error::AlreadyExists(format!("user {}", u.email))),
                Err(e) => Err(db(e)),
            }
        })
        .await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, Error> {
        let email = email.to_owned();
        self.read(move |c| {
            first(c, &format!("SELECT {USER_COLUMNS} FROM users WHERE email = ?1"), [email], decode_user)
        })
        .await
    }

    async fn user(&self, id: &str) -> Result<Option<User>, Error> {
        let id = id.to_owned();
        self.read(move |c| first(c, &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"), [id], decode_user))
            .await
    }

    async fn users_of_tenant(&self, tenant: &TenantId) -> Result<Vec<User>, Error> {
        let tenant = tenant.as_str().to_owned();
        self.read(move |c| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE tenant_id = ?1 ORDER BY email");
            all(c, &sql, [tenant], decode_user)
        })
        .await
    }

    async fn insert_api_key(&self, key: &ApiKey) -> Result<(), Error> {
        let k = key.clone();
        self.write(move |c| insert_key_row(c, &k)).await
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, Error> {
        let hash = key_hash.to_owned();
        self.read(move |c| {
            first(c, &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = ?1"), [hash], decode_key)
        })
        .await
    }

    async fn api_keys(&self, tenant: Option<&TenantId>) -> Result<Vec<ApiKey>, Error> {
        let tenant = tenant.map(|t| t.as_str().to_owned());
        self.read(move |c| {
            all(
                c,
                &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id IS ?1 ORDER BY id"),
                [tenant],
                decode_key,
            )
        })
        .await
    }

    async fn revoke_api_key(&self, id: &str, at: Timestamp) -> Result<bool, Error> {
        let id = id.to_owned();
        self.write(move |c| revoke_key_row(c, &id, at)).await
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>, Error> {
        let id = id.to_owned();
        self.read(move |c| first(c, &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"), [id], decode_key))
            .await
    }

    async fn active_api_keys(&self, after: Option<&str>, limit_to: usize) -> Result<Vec<ApiKey>, Error> {
        // Every id sorts after the empty text.
        let after = after.unwrap_or_default().to_owned();
        let limit_to = limit(limit_to.min(LedgerQuery::MAX_LIMIT));
        self.read(move |c| {
            let sql =
                format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id > ?1 AND revoked_at IS NULL ORDER BY id LIMIT ?2");
            all(c, &sql, params![after, limit_to], decode_key)
        })
        .await
    }
}

/// A plan as its row holds it.
pub(super) struct PlanRow {
    id: String,
    body: String,
}

impl PlanRow {
    pub(super) fn of(plan: &Plan) -> Result<Self, Error> {
        Ok(PlanRow { id: plan.id.as_str().to_owned(), body: to_json(plan, "plan")? })
    }

    /// Inserts the row; [`Error::AlreadyExists`] if its id is taken.
    pub(super) fn insert(&self, c: &Connection) -> Result<(), Error> {
        let inserted = c
            .prepare_cached("INSERT INTO plans (id, body) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING")
            .and_then(|mut s| s.execute(params![self.id, self.body]))
            .map_err(db)?;
        if inserted == 0 {
            return Err(Error::AlreadyExists(format!("plan {}", self.id)));
        }
        Ok(())
    }

    /// Inserts or replaces the row.
    pub(super) fn put(&self, c: &Connection) -> Result<(), Error> {
        c.prepare_cached(
            "INSERT INTO plans (id, body) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET body = excluded.body",
        )
        .and_then(|mut s| s.execute(params![self.id, self.body]))
        .map_err(db)
        .map(drop)
    }
}

/// A tenant with its overrides encoded, as its row holds it.
pub(super) struct TenantRow {
    tenant: Tenant,
    overrides: String,
}

impl TenantRow {
    pub(super) fn of(tenant: &Tenant) -> Result<Self, Error> {
        Ok(TenantRow { tenant: tenant.clone(), overrides: to_json(&tenant.overrides, "tenant overrides")? })
    }

    /// Inserts the row; [`Error::AlreadyExists`] if its id is taken.
    fn insert(&self, c: &Connection) -> Result<(), Error> {
        let inserted = c
            .prepare_cached(&format!(
                "INSERT INTO tenants ({TENANT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING"
            ))
            .and_then(|mut s| s.execute(params_from_iter(tenant_values(&self.tenant, &self.overrides))))
            .map_err(db)?;
        if inserted == 0 {
            return Err(Error::AlreadyExists(format!("tenant {}", self.tenant.id)));
        }
        Ok(())
    }

    /// Replaces the row; [`Error::UnknownTenant`] if there is none.
    pub(super) fn update(&self, c: &Connection) -> Result<(), Error> {
        let updated = c
            .prepare_cached(
                "UPDATE tenants SET name = ?2, plan_id = ?3, region = ?4, status = ?5, billing_anchor = ?6, \
                 overrides = ?7, created_at = ?8 WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params_from_iter(tenant_values(&self.tenant, &self.overrides))))
            .map_err(db)?;
        if updated == 0 {
            return Err(Error::UnknownTenant(self.tenant.id.clone()));
        }
        Ok(())
    }
}

/// Inserts an API key row; [`Error::AlreadyExists`] if its id or hash is taken.
pub(super) fn insert_key_row(c: &Connection, k: &ApiKey) -> Result<(), Error> {
    let inserted = c
        .prepare_cached(&format!(
            "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING"
        ))
        .and_then(|mut s| {
            s.execute(params![
                k.id,
                k.tenant_id.as_ref().map(TenantId::as_str),
                k.name,
                k.service_name,
                k.key_hash,
                k.created_at.as_micros(),
                k.revoked_at.map(Timestamp::as_micros),
                k.created_by,
            ])
        })
        .map_err(db)?;
    if inserted == 0 {
        return Err(Error::AlreadyExists(format!("api key {}", k.id)));
    }
    Ok(())
}

/// Marks a key revoked at `at` unless it was already; `false` if there is no such key.
pub(super) fn revoke_key_row(c: &Connection, id: &str, at: Timestamp) -> Result<bool, Error> {
    c.prepare_cached("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1")
        .and_then(|mut s| s.execute(params![id, at.as_micros()]))
        .map_err(db)
        .map(|n| n > 0)
}

/// A tenant's columns, in the order of [`TENANT_COLUMNS`] (`?1` to `?8` of its insert and
/// update).
fn tenant_values(t: &Tenant, overrides: &str) -> [Value; 8] {
    [
        Value::Text(t.id.as_str().to_owned()),
        Value::Text(t.name.clone()),
        Value::Text(t.plan.as_str().to_owned()),
        t.region.clone().map_or(Value::Null, Value::Text),
        Value::Text(status_name(t.status).to_owned()),
        Value::Integer(u8::from(t.billing_anchor).into()),
        Value::Text(overrides.to_owned()),
        Value::Integer(t.created_at.as_micros()),
    ]
}

/// Inserts a user row; [`Error::AlreadyExists`] if its id or e-mail is taken.
fn insert_user_row(c: &Connection, u: &User) -> Result<(), Error> {
    let inserted = c
        .prepare_cached(&format!(
            "INSERT INTO users ({USER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING"
        ))
        .and_then(|mut s| s.execute(params_from_iter(user_values(u))))
        .map_err(db)?;
    if inserted == 0 {
        return Err(Error::AlreadyExists(format!("user {}", u.email)));
    }
    Ok(())
}

/// A user's columns, in the order of [`USER_COLUMNS`] (`?1` to `?6` of its insert and
/// update).
fn user_values(u: &User) -> [Value; 6] {
    [
        Value::Text(u.id.clone()),
        Value::Text(u.tenant_id.as_str().to_owned()),
        Value::Text(u.email.clone()),
        Value::Text(u.password_hash.clone()),
        Value::Text(u.role.as_str().to_owned()),
        Value::Integer(u.created_at.as_micros()),
    ]
}

fn status_name(s: TenantStatus) -> &'static str {
    match s {
        TenantStatus::Active => "active",
        TenantStatus::Suspended => "suspended",
    }
}

fn decode_tenant(row: &Row<'_>) -> Result<Tenant, Error> {
    let status = match col::<String>(row, 4)?.as_str() {
        "active" => TenantStatus::Active,
        "suspended" => TenantStatus::Suspended,
        _ => return Err(corrupt("tenant status")),
    };
    let anchor = u8::try_from(col::<i64>(row, 5)?).ok().and_then(BillingAnchor::new);
    Ok(Tenant {
        id: TenantId::new(col::<String>(row, 0)?).map_err(|_| corrupt("tenant id"))?,
        name: col(row, 1)?,
        plan: PlanId::new(col::<String>(row, 2)?).map_err(|_| corrupt("plan id"))?,
        region: col(row, 3)?,
        status,
        billing_anchor: anchor.ok_or_else(|| corrupt("billing anchor"))?,
        overrides: from_json(&col::<String>(row, 6)?, "tenant overrides")?,
        created_at: Timestamp::from_micros(col(row, 7)?),
    })
}

fn decode_user(row: &Row<'_>) -> Result<User, Error> {
    let role = match col::<String>(row, 4)?.as_str() {
        "admin" => Role::Admin,
        "user" => Role::User,
        _ => return Err(corrupt("user role")),
    };
    Ok(User {
        id: col(row, 0)?,
        tenant_id: TenantId::new(col::<String>(row, 1)?).map_err(|_| corrupt("tenant id"))?,
        email: col(row, 2)?,
        password_hash: col(row, 3)?,
        role,
        created_at: Timestamp::from_micros(col(row, 5)?),
    })
}

fn decode_key(row: &Row<'_>) -> Result<ApiKey, Error> {
    let tenant_id = col::<Option<String>>(row, 1)?.map(TenantId::new).transpose().map_err(|_| corrupt("tenant id"))?;
    Ok(ApiKey {
        id: col(row, 0)?,
        tenant_id,
        name: col(row, 2)?,
        service_name: col(row, 3)?,
        key_hash: col(row, 4)?,
        created_at: Timestamp::from_micros(col(row, 5)?),
        revoked_at: col::<Option<i64>>(row, 6)?.map(Timestamp::from_micros),
        created_by: col(row, 7)?,
    })
}

fn decode_plan(row: &Row<'_>) -> Result<Plan, Error> {
    from_json(&col::<String>(row, 0)?, "plan")
}
