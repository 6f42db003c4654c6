//! The BSON form of every record: one serde struct per collection, with explicit field
//! names, and the conversions from and to the domain types. Times are int64 microseconds
//! since the epoch; a document that does not decode is [`Error::Corrupt`] naming its
//! collection and `_id`.

use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{self, Binary, Bson, DateTime, Document};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::names;
use crate::account::{ApiKey, RefreshToken, Role, User};
use crate::audit::AuditEntry;
use crate::clock::Timestamp;
use crate::decision::{Decision, DenyReason, WindowStatus};
use crate::error::Error;
use crate::event::{Event, EventId, Method};
use crate::ledger::{Grant, LedgerRecord};
use crate::plan::{Limit, Per, Plan, PlanId, PremiumAccess};
use crate::pricing::PricingRule;
use crate::tenant::{BillingAnchor, Tenant, TenantId, TenantOverrides, TenantStatus};

/// A value as a BSON document for `collection`.
pub(super) fn encode<T: Serialize>(value: &T, collection: &str) -> Result<Document, Error> {
    bson::to_document(value)
        .map_err(|e| Error::Unavailable(format!("MongoDB: a `{collection}` document could not be encoded: {e}")))
}

/// A stored document of `collection` as `T`; [`Error::Corrupt`] naming the collection and
/// the document's `_id` if it does not decode.
pub(super) fn decode<T: DeserializeOwned>(doc: Document, collection: &str) -> Result<T, Error> {
    let id = doc.get("_id").map_or_else(|| "(none)".to_owned(), |id| id.to_string());
    bson::from_document(doc).map_err(|e| corrupt(collection, &id, &e.to_string()))
}

/// [`Error::Corrupt`] for the document `id` of `collection`.
pub(super) fn corrupt(collection: &str, id: &str, why: &str) -> Error {
    Error::Corrupt(format!("MongoDB `{collection}` document {id}: {why}"))
}

/// A document's field holding a whole number, whatever BSON number type it came as.
pub(super) fn whole(doc: &Document, field: &str) -> Option<i64> {
    match doc.get(field)? {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        Bson::Double(n) if n.fract() == 0.0 && n.is_finite() => Some(*n as i64),
        _ => None,
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The BSON form of an event id: 16 bytes (binary subtype 4) for a UUID in its canonical
/// lower-case hyphenated text, which reads back as the same text; a string otherwise.
pub(super) fn event_id_bson(id: &EventId) -> Bson {
    match uuid::Uuid::try_parse(id.as_str()) {
        Ok(uuid) if *uuid.hyphenated().encode_lower(&mut [0; 36]) == *id.as_str() => {
            Bson::Binary(Binary { subtype: BinarySubtype::Uuid, bytes: uuid.as_bytes().to_vec() })
        }
        _ => Bson::String(id.as_str().to_owned()),
    }
}

/// The event id of its BSON form; `None` if it is neither form [`event_id_bson`] writes.
fn event_id_of(value: &Bson) -> Option<EventId> {
    match value {
        Bson::String(s) => EventId::new(s.as_str()).ok(),
        Bson::Binary(Binary { subtype: BinarySubtype::Uuid, bytes }) => {
            let uuid = uuid::Uuid::from_slice(bytes).ok()?;
            EventId::new(uuid.hyphenated().encode_lower(&mut [0; 36]).to_owned()).ok()
        }
        _ => None,
    }
}

/// The `_id` of a ledger document: the record's unique key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct LedgerKey {
    /// The tenant.
    pub(super) t: String,
    /// The event id (see [`event_id_bson`]).
    pub(super) e: Bson,
}

impl LedgerKey {
    /// The key of `(tenant, event_id)`.
    pub(super) fn new(tenant: &TenantId, event_id: &EventId) -> Self {
        LedgerKey { t: tenant.as_str().to_owned(), e: event_id_bson(event_id) }
    }

    /// The key as a BSON value, for filters (`t` first, as stored).
    pub(super) fn to_bson(&self) -> Bson {
        Bson::Document(bson::doc! { "t": &self.t, "e": self.e.clone() })
    }
}

/// One rate-limit window of a stored decision.
#[derive(Debug, Serialize, Deserialize)]
struct WindowDoc {
    /// The window's length.
    w: Per,
    /// Its limit.
    n: u32,
    /// Calls remaining.
    r: u32,
    /// Seconds until reset.
    z: u64,
}

/// A ledger record, compact: one- and two-letter field names, absent optional fields
/// left out.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct LedgerDoc {
    /// `(tenant, event id)`.
    #[serde(rename = "_id")]
    pub(super) id: LedgerKey,
    /// The event time, microseconds.
    ts: i64,
    /// The event time as a date, for the TTL index (milliseconds).
    x: DateTime,
    /// When it was decided, microseconds.
    d: i64,
    /// The service.
    s: String,
    /// The endpoint.
    p: String,
    /// The method.
    m: Method,
    /// Credits reported.
    c: u64,
    /// Premium.
    #[serde(default, skip_serializing_if = "is_false")]
    pr: bool,
    /// Feature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    f: Option<String>,
    /// Region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<String>,
    /// The content fingerprint, its 64 bits as a signed integer.
    fp: i64,
    /// The decision's event id, only when it is not the event's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    de: Option<String>,
    /// Allowed.
    a: bool,
    /// Why denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    why: Option<DenyReason>,
    /// Credits charged.
    ch: u64,
    /// Credits remaining.
    rem: i64,
    /// The windows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    l: Vec<WindowDoc>,
    /// Retry after, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ra: Option<u64>,
    /// The HTTP status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    st: Option<u16>,
    /// Counted.
    k: bool,
    /// Admitted fail-open.
    #[serde(default, skip_serializing_if = "is_false")]
    fo: bool,
}

/// Field names of [`LedgerDoc`] that queries use.
pub(super) mod ledger_fields {
    /// The tenant, inside `_id`.
    pub(crate) const TENANT: &str = "_id.t";
    /// The event id, inside `_id`.
    pub(crate) const EVENT_ID: &str = "_id.e";
    /// The event time, microseconds.
    pub(crate) const AT: &str = "ts";
    /// The event time as a date (TTL).
    pub(crate) const EXPIRES: &str = "x";
    /// When it was decided, microseconds.
    pub(crate) const DECIDED: &str = "d";
    /// The service.
    pub(crate) const SERVICE: &str = "s";
    /// The endpoint.
    pub(crate) const ENDPOINT: &str = "p";
    /// The method.
    pub(crate) const METHOD: &str = "m";
    /// Allowed.
    pub(crate) const ALLOWED: &str = "a";
    /// Why denied.
    pub(crate) const REASON: &str = "why";
    /// Credits charged.
    pub(crate) const CHARGED: &str = "ch";
    /// Counted.
    pub(crate) const COUNTED: &str = "k";
}

impl LedgerDoc {
    /// The document of a record.
    pub(super) fn from_record(r: &LedgerRecord) -> Self {
        let e = &r.event;
        let d = &r.decision;
        let at = e.timestamp.as_micros();
        LedgerDoc {
            id: LedgerKey::new(&e.tenant_id, &e.event_id),
            ts: at,
            x: DateTime::from_millis(at.div_euclid(1_000)),
            d: r.decided_at.as_micros(),
            s: e.service_name.clone(),
            p: e.endpoint.clone(),
            m: e.method,
            c: e.credits_used,
            pr: e.premium,
            f: e.feature.clone(),
            r: e.region.clone(),
            fp: e.fingerprint as i64,
            de: (d.event_id != e.event_id).then(|| d.event_id.as_str().to_owned()),
            a: d.allowed,
            why: d.reason,
            ch: d.credits_charged,
            rem: d.credits_remaining,
            l: d.limits.iter().map(|w| WindowDoc { w: w.window, n: w.limit, r: w.remaining, z: w.reset }).collect(),
            ra: d.retry_after,
            st: r.status,
            k: r.counted,
            fo: r.fail_open,
        }
    }

    /// The record of a stored document.
    pub(super) fn into_record(self) -> Result<LedgerRecord, Error> {
        let id = self.id.to_bson().to_string();
        let bad = |why: &str| corrupt(names::LEDGER, &id, why);
        let tenant_id = TenantId::new(self.id.t).map_err(|_| bad("invalid tenant id"))?;
        let event_id = event_id_of(&self.id.e).ok_or_else(|| bad("invalid event id"))?;
        let decision_id = match self.de {
            Some(de) => EventId::new(de).map_err(|_| bad("invalid decision event id"))?,
            None => event_id.clone(),
        };
        let event = Event {
            event_id,
            tenant_id,
            service_name: self.s,
            endpoint: self.p,
            method: self.m,
            credits_used: self.c,
            premium: self.pr,
            feature: self.f,
            region: self.r,
            timestamp: Timestamp::from_micros(self.ts),
            fingerprint: self.fp as u64,
        };
        let decision = Decision {
            event_id: decision_id,
            allowed: self.a,
            reason: self.why,
            credits_charged: self.ch,
            credits_remaining: self.rem,
            limits: self
                .l
                .into_iter()
                .map(|w| WindowStatus { window: w.w, limit: w.n, remaining: w.r, reset: w.z })
                .collect(),
            retry_after: self.ra,
        };
        Ok(LedgerRecord {
            event,
            decided_at: Timestamp::from_micros(self.d),
            decision,
            status: self.st,
            counted: self.k,
            fail_open: self.fo,
        })
    }
}

/// A ledger record of a stored document.
pub(super) fn ledger_record(doc: Document) -> Result<LedgerRecord, Error> {
    decode::<LedgerDoc>(doc, names::LEDGER)?.into_record()
}

/// A plan.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct PlanDoc {
    /// The plan's id.
    #[serde(rename = "_id")]
    id: PlanId,
    name: String,
    monthly_credits: u64,
    limits: Vec<Limit>,
    premium: PremiumAccess,
    overdraft: u64,
    pricing: Vec<PricingRule>,
}

impl From<&Plan> for PlanDoc {
    fn from(p: &Plan) -> Self {
        PlanDoc {
            id: p.id.clone(),
            name: p.name.clone(),
            monthly_credits: p.monthly_credits,
            limits: p.limits.clone(),
            premium: p.premium.clone(),
            overdraft: p.overdraft,
            pricing: p.pricing.clone(),
        }
    }
}

impl From<PlanDoc> for Plan {
    fn from(p: PlanDoc) -> Self {
        Plan {
            id: p.id,
            name: p.name,
            monthly_credits: p.monthly_credits,
            limits: p.limits,
            premium: p.premium,
            overdraft: p.overdraft,
            pricing: p.pricing,
        }
    }
}

/// A tenant.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct TenantDoc {
    /// The tenant's id.
    #[serde(rename = "_id")]
    id: TenantId,
    name: String,
    plan: PlanId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    status: TenantStatus,
    billing_anchor: BillingAnchor,
    overrides: TenantOverrides,
    /// Microseconds.
    created_at: i64,
}

impl From<&Tenant> for TenantDoc {
    fn from(t: &Tenant) -> Self {
        TenantDoc {
            id: t.id.clone(),
            name: t.name.clone(),
            plan: t.plan.clone(),
            region: t.region.clone(),
            status: t.status,
            billing_anchor: t.billing_anchor,
            overrides: t.overrides.clone(),
            created_at: t.created_at.as_micros(),
        }
    }
}

impl From<TenantDoc> for Tenant {
    fn from(t: TenantDoc) -> Self {
        Tenant {
            id: t.id,
            name: t.name,
            plan: t.plan,
            region: t.region,
            status: t.status,
            billing_anchor: t.billing_anchor,
            overrides: t.overrides,
            created_at: Timestamp::from_micros(t.created_at),
        }
    }
}

/// A user.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct UserDoc {
    /// The user's id.
    #[serde(rename = "_id")]
    id: String,
    tenant_id: TenantId,
    email: String,
    password_hash: String,
    role: Role,
    /// Microseconds.
    created_at: i64,
}

impl From<&User> for UserDoc {
    fn from(u: &User) -> Self {
        UserDoc {
            id: u.id.clone(),
            tenant_id: u.tenant_id.clone(),
            email: u.email.clone(),
            password_hash: u.password_hash.clone(),
            role: u.role,
            created_at: u.created_at.as_micros(),
        }
    }
}

impl From<UserDoc> for User {
    fn from(u: UserDoc) -> Self {
        User {
            id: u.id,
            tenant_id: u.tenant_id,
            email: u.email,
            password_hash: u.password_hash,
            role: u.role,
            created_at: Timestamp::from_micros(u.created_at),
        }
    }
}

/// An API key.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ApiKeyDoc {
    /// The key's id.
    #[serde(rename = "_id")]
    id: String,
    /// `null` for a service key.
    tenant_id: Option<TenantId>,
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    service_name: Option<String>,
    key_hash: String,
    created_by: String,
    /// Microseconds.
    created_at: i64,
    /// Microseconds; `null` while the key is active.
    revoked_at: Option<i64>,
}

impl From<&ApiKey> for ApiKeyDoc {
    fn from(k: &ApiKey) -> Self {
        ApiKeyDoc {
            id: k.id.clone(),
            tenant_id: k.tenant_id.clone(),
            name: k.name.clone(),
            service_name: k.service_name.clone(),
            key_hash: k.key_hash.clone(),
            created_by: k.created_by.clone(),
            created_at: k.created_at.as_micros(),
            revoked_at: k.revoked_at.map(Timestamp::as_micros),
        }
    }
}

impl From<ApiKeyDoc> for ApiKey {
    fn from(k: ApiKeyDoc) -> Self {
        ApiKey {
            id: k.id,
            tenant_id: k.tenant_id,
            name: k.name,
            service_name: k.service_name,
            key_hash: k.key_hash,
            created_by: k.created_by,
            created_at: Timestamp::from_micros(k.created_at),
            revoked_at: k.revoked_at.map(Timestamp::from_micros),
        }
    }
}

/// Where a refresh token stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum TokenState {
    /// It can still be used (until it expires).
    Unused,
    /// Used up.
    Used,
    /// Revoked before use.
    Revoked,
}

impl TokenState {
    /// The stored name.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            TokenState::Unused => "unused",
            TokenState::Used => "used",
            TokenState::Revoked => "revoked",
        }
    }
}

/// A refresh token's record.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct RefreshTokenDoc {
    /// The token's id.
    #[serde(rename = "_id")]
    id: String,
    user_id: String,
    /// Microseconds.
    issued_at: i64,
    /// Microseconds.
    expires_at: i64,
    state: TokenState,
}

impl RefreshTokenDoc {
    /// A new, unused token.
    pub(super) fn unused(t: &RefreshToken) -> Self {
        RefreshTokenDoc {
            id: t.id.clone(),
            user_id: t.user_id.clone(),
            issued_at: t.issued_at.as_micros(),
            expires_at: t.expires_at.as_micros(),
            state: TokenState::Unused,
        }
    }
}

impl From<RefreshTokenDoc> for RefreshToken {
    fn from(t: RefreshTokenDoc) -> Self {
        RefreshToken {
            id: t.id,
            user_id: t.user_id,
            issued_at: Timestamp::from_micros(t.issued_at),
            expires_at: Timestamp::from_micros(t.expires_at),
        }
    }
}

/// An audit entry; the values before and after are JSON text, so any JSON (keys with
/// `$` or `.`, integers beyond 64 bits signed) comes back exactly.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct AuditDoc {
    /// The entry's id.
    #[serde(rename = "_id")]
    id: String,
    /// Microseconds.
    at: i64,
    actor: String,
    action: String,
    target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after: Option<String>,
}

impl From<&AuditEntry> for AuditDoc {
    fn from(e: &AuditEntry) -> Self {
        AuditDoc {
            id: e.id.clone(),
            at: e.at.as_micros(),
            actor: e.actor.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            before: e.before.as_ref().map(serde_json::Value::to_string),
            after: e.after.as_ref().map(serde_json::Value::to_string),
        }
    }
}

impl AuditDoc {
    /// The entry of a stored document.
    pub(super) fn into_entry(self) -> Result<AuditEntry, Error> {
        let json = |text: Option<String>| -> Result<Option<serde_json::Value>, Error> {
            text.map(|t| serde_json::from_str(&t))
                .transpose()
                .map_err(|_| corrupt(names::AUDIT, &self.id, "a value is not JSON"))
        };
        let (before, after) = (json(self.before.clone())?, json(self.after.clone())?);
        Ok(AuditEntry {
            id: self.id,
            at: Timestamp::from_micros(self.at),
            actor: self.actor,
            action: self.action,
            target: self.target,
            before,
            after,
        })
    }
}

/// A credit grant.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct GrantDoc {
    tenant_id: TenantId,
    /// The period's start, microseconds.
    period_start: i64,
    /// The period's end, microseconds.
    period_end: i64,
    amount: i64,
    reason: String,
    /// Microseconds.
    at: i64,
}

impl From<&Grant> for GrantDoc {
    fn from(g: &Grant) -> Self {
        GrantDoc {
            tenant_id: g.tenant_id.clone(),
            period_start: g.period.start.as_micros(),
            period_end: g.period.end.as_micros(),
            amount: g.amount,
            reason: g.reason.clone(),
            at: g.at.as_micros(),
        }
    }
}
