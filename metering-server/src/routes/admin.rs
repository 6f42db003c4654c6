//! Routes: administration (`/admin/...`): tenants, credits, plans, usage, stats, audit,
//! and acknowledging storage damage.
//!
//! The authorization middleware lets only admins in; every handler checks
//! [`Caller::is_admin`] again. Every change (tenant update, credits, unlock, plan create and
//! update, storage acknowledgement) is written to the audit log with the values before and
//! after, in the same atomic step as the change where the change is to the records; so are
//! an admin's mints and revocations of API keys outside its own tenant (`routes/keys.rs`).
//!
//! The platform tenant, the admins' own, cannot be suspended: that would lock every admin
//! out of tracking and is never what is meant.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use metering_core::{
    Error as CoreError, GroupBy, LedgerQuery, Limit, Plan, PlanId, PremiumAccess, PricingRule, Tenant, TenantId,
    TenantStatus, Timestamp, UsageGroup,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use metering_core::plan::{MAX_LIMITS, MAX_PREMIUM_FEATURES};

use crate::auth::{Caller, PLATFORM_TENANT};
use crate::routes::tenant::{
    ApiQuery, CreditsBody, GroupBody, TenantBody, UsagePage, UsageParams, summary, time_range, usage_page,
};
use crate::routes::track::ErrorBody;
use crate::{ApiError, ApiJson, ApiPath, AppState};

use crate::audit;

/// The most calls a smooth window (second, minute, hour) may allow.
const MAX_SMOOTH_CALLS: u64 = 1_000_000;
/// The most credits one grant or claw-back may move.
const MAX_GRANT: i64 = 1_000_000_000;
/// Tenants per page when `limit` is not given.
const DEFAULT_TENANTS: usize = 50;
/// The most tenants per page.
const MAX_TENANTS: usize = 1_000;
/// Groups in each top list of the stats.
const TOP: usize = 10;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tenants))
        .routes(routes!(get_tenant, update_tenant))
        .routes(routes!(grant_credits))
        .routes(routes!(unlock_tenant))
        .routes(routes!(list_plans, create_plan))
        .routes(routes!(replace_plan))
        .routes(routes!(admin_usage))
        .routes(routes!(stats))
        .routes(routes!(audit_log))
        .routes(routes!(acknowledge_damage))
}

/// Defence in depth behind the authorization middleware.
fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.is_admin() { Ok(()) } else { Err(ApiError::forbidden("admins only")) }
}

/// A tenant id from the path.
fn tenant_id(id: String) -> Result<TenantId, ApiError> {
    TenantId::new(id).map_err(|e| ApiError::invalid("id", format!("invalid tenant id: {}", e.problem)))
}

/// A limit from the query string: 1 to `max`, `default` when absent.
fn page_limit(value: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match value {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid("limit", format!("must be a whole number from 1 to {max}"))),
        },
    }
}

fn to_json<T: Serialize>(value: &T) -> Option<Value> {
    serde_json::to_value(value).ok()
}

/// Paging of the tenant list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TenantsParams {
    /// The `next_after` of the previous page (a tenant id: 1 to 64 of `[A-Za-z0-9_.:-]`).
    #[param(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.:-]+$")]
    after: Option<String>,
    /// Tenants per page: 1 to 1,000, default 50.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// A page of tenants, by id.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TenantsPage {
    /// The tenants.
    items: Vec<TenantBody>,
    /// Pass as `after` for the next page; `null` on the last page.
    next_after: Option<String>,
}

/// List tenants, by id, paged.
#[utoipa::path(
    get,
    path = "/admin/tenants",
    tag = "admin",
    params(TenantsParams),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "one page of tenants", body = TenantsPage),
        (status = 403, description = "not an admin", body = ErrorBody),
        (status = 422, description = "a bad `after` or `limit`", body = ErrorBody),
    )
)]
async fn list_tenants(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<TenantsParams>,
) -> Result<Json<TenantsPage>, ApiError> {
    require_admin(&caller)?;
    let limit = page_limit(params.limit.as_deref(), DEFAULT_TENANTS, MAX_TENANTS)?;
    let after = params
        .after
        .map(|a| TenantId::new(a).map_err(|e| ApiError::invalid("after", e.problem.to_string())))
        .transpose()?;
    let tenants = state.engine.tenants(after.as_ref(), limit).await?;
    let next_after = match tenants.last() {
        Some(t) if tenants.len() >= limit => Some(t.id.as_str().to_owned()),
        _ => None,
    };
    Ok(Json(TenantsPage { items: tenants.iter().map(TenantBody::from).collect(), next_after }))
}

/// A tenant with its current balance.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TenantDetail {
    /// The tenant.
    tenant: TenantBody,
    /// Its credits in the current period.
    balance: CreditsBody,
}

/// One tenant and its balance.
#[utoipa::path(
    get,
    path = "/admin/tenants/{id}",
    tag = "admin",
    params(("id" = String, Path, description = "the tenant's id: 1 to 64 of `[A-Za-z0-9_.:-]`", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.:-]+$")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "the tenant and its balance", body = TenantDetail),
        (status = 403, description = "not an admin", body = ErrorBody),
        (status = 404, description = "no such tenant", body = ErrorBody),
        (status = 422, description = "not a tenant id (`field` is `id`)", body = ErrorBody),
    )
)]
async fn get_tenant(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TenantDetail>, ApiError> {
    require_admin(&caller)?;
    let id = tenant_id(id)?;
    let tenant = state.engine.tenant(&id).await?.ok_or_else(|| unknown_tenant(&id))?;
    let balance = state.engine.balance(&id).await?;
    Ok(Json(TenantDetail { tenant: TenantBody::from(&tenant), balance: balance.into() }))
}

fn unknown_tenant(id: &TenantId) -> ApiError {
    ApiError::not_found(format!("unknown tenant `{id}`"))
}

/// A tenant status as the API writes it.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum StatusBody {
    /// Calls are decided normally.
    Active,
    /// Every call is denied with `tenant_suspended`.
    Suspended,
}

/// A change to a tenant: its plan, its status, or both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantPatch {
    /// Move to this (existing) plan: 1 to 64 of `[a-z0-9_-]`.
    #[schema(example = "pro", min_length = 1, max_length = 64, pattern = r"^[a-z0-9_-]+$")]
    plan: Option<String>,
    /// Suspend or reactivate.
    status: Option<StatusBody>,
}

/// Change a tenant's plan or status. Applies to its next call; no counter is reset.
///
/// The platform tenant (the admins' own) cannot be suspended: 409 `platform_tenant`, and
/// nothing of the change is applied.
#[utoipa::path(
    patch,
    path = "/admin/tenants/{id}",
    tag = "admin",
    params(("id" = String, Path, description = "the tenant's id: 1 to 64 of `[A-Za-z0-9_.:-]`", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.:-]+$")),
    request_body = TenantPatch,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "the changed tenant", body = TenantBody),
        (status = 403, description = "not an admin", body = ErrorBody),
        (status = 404, description = "no such tenant", body = ErrorBody),
        (status = 409, description = "`platform_tenant`: the platform tenant cannot be suspended", body = ErrorBody),
        (status = 422, description = "not a tenant id, an unknown plan, a bad status, or nothing to change", body = ErrorBody),
    )
)]
async fn update_tenant(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<TenantPatch>,
) -> Result<Json<TenantBody>, ApiError> {
    require_admin(&caller)?;
    let id = tenant_id(id)?;
    if patch.plan.is_none() && patch.status.is_none() {
        return Err(ApiError::invalid("plan", "give `plan`, `status` or both"));
    }
    let plan =
        patch.plan.map(|p| PlanId::new(p).map_err(|_| ApiError::invalid("plan", "not a plan id"))).transpose()?;
    let status = patch.status.map(|s| match s {
        StatusBody::Active => TenantStatus::Active,
        StatusBody::Suspended => TenantStatus::Suspended,
    });
    if status == Some(TenantStatus::Suspended) && id.as_str() == PLATFORM_TENANT {
        return Err(ApiError::conflict(
            "platform_tenant",
            "the platform tenant is the admins' own and cannot be suspended",
        )
        .with_field("status"));
    }
    let change = |t: &mut Tenant| {
        if let Some(plan) = plan {
            t.plan = plan;
        }
        if let Some(status) = status {
            t.status = status;
        }
    };
    let audit = |before: &Tenant, after: &Tenant| {
        let change = audit::Change {
            actor: &caller.user_id,
            action: "tenant.update",
            target: id.as_str(),
            before: to_json(&TenantBody::from(before)),
            after: to_json(&TenantBody::from(after)),
        };
        audit::entry(&state.engine, change)
    };
    let after = state.engine.update_tenant_audited(&id, change, audit).await.map_err(|e| match e {
        CoreError::UnknownTenant(t) => unknown_tenant(&t),
        other => ApiError::from(other),
    })?;
    Ok(Json(TenantBody::from(&after)))
}

/// A grant (positive) or claw-back (negative) of credits.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreditsChange {
    /// Credits to add (negative: to remove); not zero, at most 1,000,000,000 either way.
    #[schema(example = 500, schema_with = amount_schema)]
    amount: i64,
    /// Why: 1 to 256 characters, not only white space, no control characters.
    #[schema(
        example = "goodwill after the outage",
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    reason: String,
}

/// `amount` as written: -1,000,000,000 to -1, or 1 to 1,000,000,000.
fn amount_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
    let range = |min: i64, max: i64| {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(min))
            .maximum(Some(max))
    };
    OneOfBuilder::new().item(range(-MAX_GRANT, -1)).item(range(1, MAX_GRANT)).build().into()
}

/// The balance after a grant.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct GrantResult {
    /// The tenant.
    tenant_id: String,
    /// The credits added (negative: removed).
    amount: i64,
    /// The balance of the current period afterwards.
    remaining: i64,
}

/// Grant or claw back credits in the tenant's current period; never below its floor
/// (zero, or minus the plan's overdraft).
#[utoipa::path(
    post,
    path = "/admin/tenants/{id}/credits",
    tag = "admin",
    params(("id" = String, Path, description = "the tenant's id: 1 to 64 of `[A-Za-z0-9_.:-]`", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.:-]+$")),
    request_body = CreditsChange,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "the new balance", body = GrantResult),
        (status = 403, description = "not an admin", body = ErrorBody),
        (status = 404, description = "no such tenant", body = ErrorBody),
        (status = 422, description = "not a tenant id, a bad or missing amount or reason, or a claw-back below the floor (`field` names it)", body = ErrorBody),
    )
)]
async fn grant_credits(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(change): ApiJson<CreditsChange>,
) -> Result<Json<GrantResult>, ApiError> {
    require_admin(&caller)?;
    let id = tenant_id(id)?;
    if change.amount == 0 {
        return Err(ApiError::invalid("amount", "must not be zero"));
    }
    if change.amount.unsigned_abs() > MAX_GRANT as u64 {
        return Err(ApiError::invalid("amount", format!("must be at most {MAX_GRANT} either way")));
    }
    let reason = change.reason.trim();
    if reason.is_empty() {
        return Err(ApiError::invalid("reason", "must not be empty"));
    }
    if change.reason.chars().count() > 256 {
        return Err(ApiError::invalid("reason", "must be at most 256 characters"));
    }
    if change.reason.chars().any(char::is_control) {
        return Err(ApiError::invalid("reason", "must not contain control characters"));
    }
    let before = state.engine.balance(&id).await.map_err(|e| match e {
        CoreError::UnknownTenant(t) => unknown_tenant(&t),
        other => ApiError::from(other),
    })?;
    let audit = |remaining: i64| {
        let change = audit::Change {
            actor: &caller.user_id,
            action: "tenant.credits",
            target: id.as_str(),
            before: Some(serde_json::json!({ "remaining": before.remaining })),
            after: Some(serde_json::json!({ "amount": change.amount, "reason": reason, "remaining": remaining })),
        };
        audit::entry(&state.engine, change)
    };
    let remaining = state.engine.grant_audited(&id, change.amount, reason, audit).await?;
    Ok(Json(GrantResult { tenant_id: id.as_str().to_owned(), amount: change.amount, remaining }))
}

/// The outcome of an unlock.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UnlockResult {
    /// The tenant.
    tenant_id: String,
    /// How many of its users' logins were cleared of failures and locks.
    unlocked: usize,
}

/// Clear the login failures and locks of every user of a tenant.
#[utoipa::path(
    post,
    path = "/admin/tenants/{id}/unlock",
    tag = "admin",
    params(("id" = String, Path, description = "the tenant's id: 1 to 64 of `[A-Za-z0-9_.:-]`", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.:-]+$")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "the users were unlocked", body = UnlockResult),
        (status = 403, description = "not an admin", body = ErrorBody),
        (status = 404, description = "no such tenant", body = ErrorBody),
        (status = 422, description = "not a tenant id (`field` is `id`)", body = ErrorBody),
    )
)]
async fn unlock_tenant(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<UnlockResult>, ApiError> {
    require_admin(&caller)?;
    let id = tenant_id(id)?;
    state.engine.tenant(&id).await?.ok_or_else(|| unknown_tenant(&id))?;
    let unlocked = state.auth.unlock_tenant_users(&id, &caller.user_id).await?;
    Ok(Json(UnlockResult { tenant_id: id.as_str().to_owned(), unlocked }))
}

/// The outcome of acknowledging storage damage.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DamageAcknowledged {
    /// How many damage reports were acknowledged (their evidence is kept).
    acknowledged: usize,
}

/// Acknowledge the storage damage `/readyz` reports, once inspected: `/readyz` answers
/// `ready` again. The damaged files are kept, renamed.
#[utoipa::path(
    post,
    path = "/admin/storage/acknowledge",
    tag = "admin",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "the damage was acknowledged", body = DamageAcknowledged),
        (status = 403, description = "not an admin", body = ErrorBody),
    )
)]
async fn acknowledge_damage(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<DamageAcknowledged>, ApiError> {
    require_admin(&caller)?;
    let audit = |damage: &[String]| {
        let change = audit::Change {
            actor: &caller.user_id,
            action: "storage.acknowledge",
            target: "storage",
            before: Some(serde_json::json!({ "damage": damage })),
            after: Some(serde_json::json!({ "acknowledged": damage.len() })),
        };
        audit::entry(&state.engine, change)
    };
    let acknowledged = state.engine.acknowledge_damage_audited(audit).await?;
    Ok(Json(DamageAcknowledged { acknowledged }))
}

/// One pricing rule of a plan; a field left out matches every call.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "describes `metering_core::PricingRule`'s JSON form in the OpenAPI document")]
pub(crate) struct PricingSchema {
    /// Only calls to this endpoint: 1 to 512 characters, not only white space, no control
    /// characters.
    #[schema(
        min_length = 1,
        max_length = 512,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    endpoint: Option<String>,
    /// Only calls with this method (upper case).
    #[schema(pattern = r"^(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS)$")]
    method: Option<String>,
    /// Only calls of this feature: 1 to 64 of `[A-Za-z0-9_.:-]`.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.:-]+$")]
    feature: Option<String>,
    /// Only calls in this region: 1 to 64 of `[A-Za-z0-9_.:-]`.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.:-]+$")]
    region: Option<String>,
    /// Credits per call: 0 to 1,000,000, default 0.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_000_000)]
    per_call: u64,
    /// Credits per reported unit (`credits_used`): 0 to 1,000,000, default 0.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_000_000)]
    per_unit: u64,
}

/// A plan, as read and written (`id` may be left out of a `PUT`, where the path names it).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanBody {
    /// The plan's id: 1 to 64 of `[a-z0-9_-]`.
    #[schema(value_type = String, example = "starter", nullable = false, min_length = 1, max_length = 64, pattern = r"^[a-z0-9_-]+$")]
    #[serde(default)]
    id: Option<PlanId>,
    /// A human-readable name: 1 to 128 characters, not only white space, no control
    /// characters.
    #[schema(
        example = "Starter",
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    name: String,
    /// Credits granted at the start of every billing period: 0 to 10^12.
    #[schema(example = 1000, minimum = 0, maximum = 1_000_000_000_000_u64)]
    monthly_credits: u64,
    /// Rate-limit windows, at most one per `per` (so at most 5); every one must admit a
    /// call. A smooth window (`second`, `minute`, `hour`) allows 1 to 1,000,000 calls, a
    /// calendar quota (`day`, `month`) 1 to 4,294,967,295.
    #[serde(default)]
    #[schema(schema_with = limits_schema)]
    limits: Vec<Limit>,
    /// Premium access: `true`, `false`, or a list of allowed premium features.
    #[serde(default)]
    #[schema(schema_with = premium_schema, example = false)]
    premium: PremiumAccess,
    /// How far below zero the balance may go: 0 to 10^12 (0: calls are refused at zero
    /// credits).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_u64)]
    overdraft: u64,
    /// Prices, at most 64 rules; a call no rule matches costs its own `credits_used`.
    #[serde(default)]
    #[schema(value_type = Vec<PricingSchema>, max_items = 64)]
    pricing: Vec<PricingRule>,
}

/// `premium` as written: a boolean, or a list of at most 64 premium features (1 to 64 of
/// `[A-Za-z0-9_.:-]` each).
fn premium_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
    let feature = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(64))
        .pattern(Some(r"^[A-Za-z0-9_.:-]+$"));
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Boolean))
        .item(ArrayBuilder::new().items(feature).unique_items(true).max_items(Some(MAX_PREMIUM_FEATURES)))
        .build()
        .into()
}

/// `limits` as written: at most one window per `per`; a smooth one (`second`, `minute`,
/// `hour`) of 1 to 1,000,000 calls, a calendar one (`day`, `month`) of 1 to `u32::MAX`.
fn limits_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{
        AdditionalProperties, ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type,
    };
    let window = |pers: &[&str], max: u64, description: &str| {
        let per = ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(pers.iter().copied()))
            .description(Some(description));
        let calls = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(1))
            .maximum(Some(max))
            .description(Some("the most calls in the window"));
        ObjectBuilder::new()
            .property("max", calls)
            .required("max")
            .property("per", per)
            .required("per")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
    };
    let smooth = window(&["second", "minute", "hour"], MAX_SMOOTH_CALLS, "a smooth limit (GCRA)");
    let calendar = window(&["day", "month"], u64::from(u32::MAX), "an exact quota over a UTC calendar window");
    let one = OneOfBuilder::new().item(smooth).item(calendar);
    ArrayBuilder::new().items(one).max_items(Some(MAX_LIMITS)).build().into()
}

impl PlanBody {
    fn into_plan(self, id: PlanId) -> Plan {
        Plan {
            id,
            name: self.name,
            monthly_credits: self.monthly_credits,
            limits: self.limits,
            premium: self.premium,
            overdraft: self.overdraft,
            pricing: self.pricing,
        }
    }
}

impl From<Plan> for PlanBody {
    fn from(p: Plan) -> Self {
        PlanBody {
            id: Some(p.id),
            name: p.name,
            monthly_credits: p.monthly_credits,
            limits: p.limits,
            premium: p.premium,
            overdraft: p.overdraft,
            pricing: p.pricing,
        }
    }
}

/// Every plan.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PlansBody {
    /// The plans, by id.
    plans: Vec<PlanBody>,
}

/// List every plan.
#[utoipa::path(
    get,
    path = "/admin/plans",
    tag = "admin",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "every plan", body = PlansBody),
        (status = 403, description = "not an admin", body = ErrorBody),
    )
)]
async fn list_plans(State(state): State<AppState>, caller: Caller) -> Result<Json<PlansBody>, ApiError> {
    require_admin(&caller)?;
    let plans = state.engine.plans().await?;
    Ok(Json(PlansBody { plans: plans.into_iter().map(PlanBody::from).collect() }))
}

/// Create a plan (every field validated).
#[utoipa::path(
    post,
    path = "/admin/plans",
    tag = "admin",
    request_body = PlanBody,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "the plan was created", body = PlanBody),
        (status = 403, description = "not an admin", body = ErrorBody),
        (status = 409, description = "a plan with this id exists", body = ErrorBody),
        (status = 422, description = "an invalid field (named in `field`)", body = ErrorBody),
    )
)]
async fn create_plan(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<PlanBody>,
) -> Result<(StatusCode, Json<PlanBody>), ApiError> {
    require_admin(&caller)?;
    let id = body.id.clone().ok_or_else(|| ApiError::invalid("id", "missing field `id`"))?;
    let plan = body.into_plan(id.clone());
    let change = audit::Change {
        actor: &caller.user_id,
        action: "plan.create",
        target: id.as_str(),
        before: None,
        after: to_json(&plan),
    };
    match state.engine.create_plan_audited(&plan, &audit::entry(&state.engine, change)).await {
        Err(metering_core::Error::AlreadyExists(_)) => {
            return Err(ApiError::conflict("already_exists", format!("plan `{id}` exists already")).with_field("id"));
        }
        created => created?,
    }
    Ok((StatusCode::CREATED, Json(plan.into())))
}

/// Replace a plan (every field validated); its tenants get it at their next call.
#[utoipa::path(
    put,
    path = "/admin/plans/{id}",
    tag = "admin",
    params(("id" = String, Path, description = "the plan's id: 1 to 64 of `[a-z0-9_-]`", min_length = 1, max_length = 64, pattern = r"^[a-z0-9_-]+$")),
    request_body = PlanBody,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "the plan was replaced", body = PlanBody),
        (status = 403, description = "not an admin", body = ErrorBody),
        (status = 404, description = "no such plan", body = ErrorBody),
        (status = 422, description = "not a plan id, an invalid field, or a body id other than the path's", body = ErrorBody),
    )
)]
async fn replace_plan(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PlanBody>,
) -> Result<Json<PlanBody>, ApiError> {
    require_admin(&caller)?;
    let id = PlanId::new(id).map_err(|_| ApiError::invalid("id", "not a plan id"))?;
    if body.id.as_ref().is_some_and(|b| *b != id) {
        return Err(ApiError::invalid("id", "the body's id differs from the path's"));
    }
    let plan = body.into_plan(id.clone());
    let audit = |before: &Plan| {
        let change = audit::Change {
            actor: &caller.user_id,
            action: "plan.update",
            target: id.as_str(),
            before: to_json(before),
            after: to_json(&plan),
        };
        audit::entry(&state.engine, change)
    };
    state.engine.replace_plan_audited(&plan, audit).await.map_err(|e| match e {
        CoreError::UnknownPlan(p) => ApiError::not_found(format!("unknown plan `{p}`")),
        other => ApiError::from(other),
    })?;
    Ok(Json(plan.into()))
}

/// Filters of the admin usage listing: those of `/api/usage` plus the tenant.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AdminUsageParams {
    /// Only this tenant: 1 to 64 of `[A-Za-z0-9_.:-]`.
    #[param(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.:-]+$")]
    tenant_id: Option<String>,
    /// Only this service: 1 to 128 characters.
    #[param(min_length = 1, max_length = 128)]
    service: Option<String>,
    /// Only this endpoint (route template): 1 to 512 characters.
    #[param(min_length = 1, max_length = 512)]
    endpoint: Option<String>,
    /// Only this method: `GET`, `POST`, `PUT`, `PATCH`, `DELETE`, `HEAD` or `OPTIONS`, in any case.
    #[param(
        pattern = r"^([Gg][Ee][Tt]|[Pp][Oo][Ss][Tt]|[Pp][Uu][Tt]|[Pp][Aa][Tt][Cc][Hh]|[Dd][Ee][Ll][Ee][Tt][Ee]|[Hh][Ee][Aa][Dd]|[Oo][Pp][Tt][Ii][Oo][Nn][Ss])$"
    )]
    method: Option<String>,
    /// Event timestamps at or after this (RFC 3339).
    #[param(format = DateTime)]
    from: Option<String>,
    /// Event timestamps before this (RFC 3339), after `from`.
    #[param(format = DateTime)]
    to: Option<String>,
    /// Items per page: 1 to 1,000, default 50.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page: `v1` and lower-case hex, at most 1,024 characters.
    #[param(min_length = 36, max_length = 1024, pattern = r"^v1([0-9a-f]{2})+$")]
    cursor: Option<String>,
}

/// Every tenant's recorded calls, newest first, filtered and paged.
#[utoipa::path(
    get,
    path = "/admin/usage",
    tag = "admin",
    params(AdminUsageParams),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "one page of calls", body = UsagePage),
        (status = 403, description = "not an admin", body = ErrorBody),
        (status = 422, description = "a bad filter, limit or cursor (named in `field`)", body = ErrorBody),
    )
)]
async fn admin_usage(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<AdminUsageParams>,
) -> Result<Json<UsagePage>, ApiError> {
    require_admin(&caller)?;
    let tenant = params
        .tenant_id
        .map(|t| TenantId::new(t).map_err(|e| ApiError::invalid("tenant_id", e.problem.to_string())))
        .transpose()?;
    let filters = UsageParams {
        service: params.service,
        endpoint: params.endpoint,
        method: params.method,
        from: params.from,
        to: params.to,
        limit: params.limit,
        cursor: params.cursor,
    };
    let query = filters.query(tenant, &state.cursors, &caller.tenant)?;
    Ok(Json(usage_page(&state, query, &caller.tenant).await?))
}

/// The range of the stats.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StatsParams {
    /// Event timestamps at or after this (RFC 3339).
    #[param(format = DateTime)]
    from: Option<String>,
    /// Event timestamps before this (RFC 3339), after `from`.
    #[param(format = DateTime)]
    to: Option<String>,
}

/// Totals over every tenant.
#[derive(Debug, Default, Serialize, ToSchema)]
pub(crate) struct Totals {
    /// Every recorded call.
    calls: u64,
    /// The denied calls.
    denied: u64,
    /// Credits charged.
    credits: u64,
}

/// Platform statistics.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StatsBody {
    /// Totals.
    totals: Totals,
    /// The tenants with the most calls.
    top_tenants: Vec<GroupBody>,
    /// The endpoints with the most calls.
    top_endpoints: Vec<GroupBody>,
    /// Denied calls by reason.
    denials_by_reason: Vec<GroupBody>,
}

/// Platform statistics over a range: totals, top tenants and endpoints, denials by reason.
#[utoipa::path(
    get,
    path = "/admin/stats",
    tag = "admin",
    params(StatsParams),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "the statistics", body = StatsBody),
        (status = 403, description = "not an admin", body = ErrorBody),
        (status = 422, description = "a bad `from` or `to`", body = ErrorBody),
    )
)]
async fn stats(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<StatsParams>,
) -> Result<Json<StatsBody>, ApiError> {
    require_admin(&caller)?;
    let (from, to) = time_range(params.from.as_deref(), params.to.as_deref())?;
    let query = LedgerQuery { from, to, ..LedgerQuery::default() };
    let by_reason = summary(&state, &query, GroupBy::Reason, UsageGroup::MAX_GROUPS).await?;
    let top_tenants = summary(&state, &query, GroupBy::Tenant, TOP).await?;
    let top_endpoints = summary(&state, &query, GroupBy::Endpoint, TOP).await?;
    let mut totals = Totals::default();
    let mut denials_by_reason = Vec::new();
    for group in by_reason {
        totals.calls += group.calls;
        totals.denied += group.denied;
        totals.credits += group.credits;
        if group.key != "allowed" {
            denials_by_reason.push(group);
        }
    }
    Ok(Json(StatsBody { totals, top_tenants, top_endpoints, denials_by_reason }))
}

/// Paging of the audit log.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditParams {
    /// The `next_before` of the previous page (an entry id: 1 to 64 of hex digits and `-`).
    #[param(min_length = 1, max_length = 64, pattern = r"^[0-9A-Fa-f-]+$")]
    before: Option<String>,
    /// Entries per page: 1 to 1,000, default 50.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// One audited admin change.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditItem {
    /// The entry's id (UUIDv7).
    id: String,
    /// When.
    #[schema(value_type = String, format = DateTime)]
    at: Timestamp,
    /// The admin's user id.
    actor: String,
    /// `tenant.update`, `tenant.credits`, `tenant.unlock`, `plan.create`, `plan.update`,
    /// `storage.acknowledge`, `key.create` or `key.revoke`.
    action: String,
    /// The tenant, plan or API key id (`storage` for storage).
    target: String,
    /// The value before.
    #[schema(value_type = Option<Object>)]
    before: Option<Value>,
    /// The value after.
    #[schema(value_type = Option<Object>)]
    after: Option<Value>,
}

/// A page of the audit log, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditPage {
    /// The entries.
    items: Vec<AuditItem>,
    /// Pass as `before` for the next page; `null` on the last page.
    next_before: Option<String>,
}

/// The audit log of admin changes, newest first.
#[utoipa::path(
    get,
    path = "/admin/audit",
    tag = "admin",
    params(AuditParams),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "one page of entries", body = AuditPage),
        (status = 403, description = "not an admin", body = ErrorBody),
        (status = 422, description = "a bad `before` or `limit`", body = ErrorBody),
    )
)]
async fn audit_log(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Json<AuditPage>, ApiError> {
    require_admin(&caller)?;
    let limit = page_limit(params.limit.as_deref(), DEFAULT_TENANTS, MAX_TENANTS)?;
    if let Some(b) = &params.before
        && (b.is_empty() || b.len() > 64 || !b.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-'))
    {
        return Err(ApiError::invalid("before", "not an audit entry id"));
    }
    let entries = state.engine.audit_log(params.before.as_deref(), limit).await?;
    let next_before = match entries.last() {
        Some(e) if entries.len() >= limit => Some(e.id.clone()),
        _ => None,
    };
    let items = entries
        .into_iter()
        .map(|e| AuditItem {
            id: e.id,
            at: e.at,
            actor: e.actor,
            action: e.action,
            target: e.target,
            before: e.before,
            after: e.after,
        })
        .collect();
    Ok(Json(AuditPage { items, next_before }))
}
