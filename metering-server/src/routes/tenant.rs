//! Routes: tenant self-service (`/api/me`, `/api/credits`, `/api/usage`,
//! `/api/usage/summary`). Every route reads the caller's own tenant only.
//!
//! Also the pieces the admin routes share: [`ApiQuery`], the usage filters and pages.

use std::str::FromStr;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use chrono::DateTime;
use metering_core::{
    Balance, GroupBy, LedgerCursor, LedgerQuery, LedgerRecord, Method, Tenant, TenantId, TenantStatus, Timestamp,
    UsageGroup,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::cursor::CursorKey;
use crate::routes::track::ErrorBody;
use crate::{ApiError, AppState};

/// Items per usage page when `limit` is not given.
const DEFAULT_LIMIT: usize = 50;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(credits))
        .routes(routes!(usage))
        .routes(routes!(usage_summary))
}

/// A query-string extractor whose rejections use the [`ApiError`] shape (422 naming the
/// parameter where serde says which).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> ApiError {
    let text = rejection.body_text();
    let detail = text.split_once(": ").map(|(_, d)| d).unwrap_or(&text).to_owned();
    // serde names the parameter in backticks (`duplicate field `limit``, `unknown field ...`).
    let field = detail.split('`').nth(1).map(str::to_owned);
    let err = ApiError::invalid("query", detail.clone());
    match field {
        Some(f) if !f.is_empty() && f.len() <= 64 => ApiError { field: Some(f), ..err },
        _ => err,
    }
}

/// A tenant, as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct TenantBody {
    /// The tenant's id.
    #[schema(example = "acme")]
    pub(crate) id: String,
    /// A display name.
    pub(crate) name: String,
    /// The plan it is on.
    #[schema(example = "free")]
    pub(crate) plan: String,
    /// `active` or `suspended`.
    #[schema(example = "active")]
    pub(crate) status: &'static str,
    /// Its home region, if it has one.
    pub(crate) region: Option<String>,
    /// The day of the month (1-28) its billing periods start.
    pub(crate) billing_anchor: u8,
    /// When it was created.
    #[schema(value_type = String, format = DateTime)]
    pub(crate) created_at: Timestamp,
}

impl From<&Tenant> for TenantBody {
    fn from(t: &Tenant) -> Self {
        TenantBody {
            id: t.id.as_str().to_owned(),
            name: t.name.clone(),
            plan: t.plan.as_str().to_owned(),
            status: match t.status {
                TenantStatus::Active => "active",
                TenantStatus::Suspended => "suspended",
            },
            region: t.region.clone(),
            billing_anchor: u8::from(t.billing_anchor),
            created_at: t.created_at,
        }
    }
}

/// The caller and its tenant.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MeBody {
    /// The user's id (for an API key, its creator's).
    user_id: String,
    /// The user's login e-mail, when the user exists.
    email: Option<String>,
    /// `admin` or `user`.
    #[schema(example = "user")]
    role: &'static str,
    /// The caller's tenant.
    tenant: TenantBody,
}

/// Who am I: the authenticated user and its tenant.
#[utoipa::path(
    get,
    path = "/api/me",
    tag = "tenant",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "the caller and its tenant", body = MeBody),
        (status = 401, description = "not authenticated", body = ErrorBody),
    )
)]
async fn me(State(state): State<AppState>, caller: Caller) -> Result<Json<MeBody>, ApiError> {
    let tenant = state
        .engine
        .tenant(&caller.tenant)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("unknown tenant `{}`", caller.tenant)))?;
    let user = state.engine.user(&caller.user_id).await?;
    Ok(Json(MeBody {
        user_id: caller.user_id.clone(),
        email: user.map(|u| u.email),
        role: caller.role.as_str(),
        tenant: TenantBody::from(&tenant),
    }))
}

/// A tenant's credits in the current billing period.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct CreditsBody {
    /// The plan's id.
    #[schema(example = "free")]
    plan: String,
    /// The period's first instant.
    #[schema(value_type = String, format = DateTime)]
    period_start: Timestamp,
    /// The next period's first instant.
    #[schema(value_type = String, format = DateTime)]
    period_end: Timestamp,
    /// The plan's allowance for the period.
    allowance: u64,
    /// Credits granted by admins (negative: clawed back).
    granted: i64,
    /// Credits charged in the period.
    used: u64,
    /// `allowance + granted - used`.
    remaining: i64,
    /// How far below zero the plan lets `remaining` go.
    overdraft: u64,
    /// Credits used beyond that floor (after a move to a plan with a smaller allowance
    /// mid-period); calls are refused until grants or the next period cover it.
    overage: u64,
}

impl From<Balance> for CreditsBody {
    fn from(b: Balance) -> Self {
        CreditsBody {
            plan: b.plan.as_str().to_owned(),
            period_start: b.period.start,
            period_end: b.period.end,
            allowance: b.allowance,
            granted: b.granted,
            used: b.used,
            remaining: b.remaining,
            overdraft: b.overdraft,
            overage: b.overage,
        }
    }
}

/// My credits: allowance, grants, use and balance of the current billing period.
#[utoipa::path(
    get,
    path = "/api/credits",
    tag = "tenant",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "the balance of the current period", body = CreditsBody),
        (status = 401, description = "not authenticated", body = ErrorBody),
    )
)]
async fn credits(State(state): State<AppState>, caller: Caller) -> Result<Json<CreditsBody>, ApiError> {
    Ok(Json(state.engine.balance(&caller.tenant).await?.into()))
}

/// Filters of a usage listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UsageParams {
    /// Only this service: 1 to 128 characters.
    #[param(min_length = 1, max_length = 128)]
    pub(crate) service: Option<String>,
    /// Only this endpoint (route template): 1 to 512 characters.
    #[param(min_length = 1, max_length = 512)]
    pub(crate) endpoint: Option<String>,
    /// Only this method: `GET`, `POST`, `PUT`, `PATCH`, `DELETE`, `HEAD` or `OPTIONS`, in any case.
    #[param(
        pattern = r"^([Gg][Ee][Tt]|[Pp][Oo][Ss][Tt]|[Pp][Uu][Tt]|[Pp][Aa][Tt][Cc][Hh]|[Dd][Ee][Ll][Ee][Tt][Ee]|[Hh][Ee][Aa][Dd]|[Oo][Pp][Tt][Ii][Oo][Nn][Ss])$"
    )]
    pub(crate) method: Option<String>,
    /// Event timestamps at or after this (RFC 3339).
    #[param(format = DateTime)]
    pub(crate) from: Option<String>,
    /// Event timestamps before this (RFC 3339), after `from`.
    #[param(format = DateTime)]
    pub(crate) to: Option<String>,
    /// Items per page: 1 to 1,000, default 50.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    pub(crate) limit: Option<String>,
    /// The `next_cursor` of the previous page: `v1` and lower-case hex, at most 1,024 characters.
    #[param(min_length = 36, max_length = 1024, pattern = r"^v1([0-9a-f]{2})+$")]
    pub(crate) cursor: Option<String>,
}

impl UsageParams {
    /// The ledger query of these filters for `tenant` (every tenant when `None`), listed
    /// by `scope`: the cursor must be one `scope` was given.
    pub(crate) fn query(
        &self,
        tenant: Option<TenantId>,
        cursors: &CursorKey,
        scope: &TenantId,
    ) -> Result<LedgerQuery, ApiError> {
        let limit = match self.limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=LedgerQuery::MAX_LIMIT).contains(&n) => n,
                _ => return Err(ApiError::invalid("limit", "must be a whole number from 1 to 1000")),
            },
        };
        let (from, to) = time_range(self.from.as_deref(), self.to.as_deref())?;
        Ok(LedgerQuery {
            tenant,
            service: text_filter(self.service.as_deref(), "service", 128)?,
            endpoint: text_filter(self.endpoint.as_deref(), "endpoint", 512)?,
            method: self
                .method
                .as_deref()
                .map(|m| Method::from_str(m).map_err(|e| ApiError::invalid("method", e.problem.to_string())))
                .transpose()?,
            from,
            to,
            before: self.cursor.as_deref().map(|c| cursors.open(scope, c)).transpose()?,
            limit,
        })
    }
}

/// A text filter: 1 to `max` characters.
fn text_filter(value: Option<&str>, field: &'static str, max: usize) -> Result<Option<String>, ApiError> {
    match value {
        None => Ok(None),
        Some("") => Err(ApiError::invalid(field, "must not be empty")),
        Some(v) if v.chars().count() > max => Err(ApiError::invalid(field, format!("at most {max} characters"))),
        Some(v) => Ok(Some(v.to_owned())),
    }
}

/// Parses an RFC 3339 instant, naming `field` when it does not parse.
pub(crate) fn parse_time(value: &str, field: &'static str) -> Result<Timestamp, ApiError> {
    DateTime::parse_from_rfc3339(value)
        .map(|dt| Timestamp::from_datetime(dt.to_utc()))
        .map_err(|_| ApiError::invalid(field, "must be an RFC 3339 instant, e.g. 2026-03-01T00:00:00Z"))
}

/// Parses `from` and `to`, checking `from < to`.
pub(crate) fn time_range(
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(Option<Timestamp>, Option<Timestamp>), ApiError> {
    let from = from.map(|v| parse_time(v, "from")).transpose()?;
    let to = to.map(|v| parse_time(v, "to")).transpose()?;
    if let (Some(f), Some(t)) = (from, to)
        && f >= t
    {
        return Err(ApiError::invalid("to", "must be after `from`"));
    }
    Ok((from, to))
}

/// One recorded call.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UsageItem {
    /// The tenant charged.
    tenant_id: String,
    /// The event's idempotency key.
    event_id: String,
    /// The service called.
    service_name: String,
    /// The endpoint's route template.
    endpoint: String,
    /// The method.
    #[schema(example = "GET")]
    method: &'static str,
    /// When the call happened.
    #[schema(value_type = String, format = DateTime)]
    timestamp: Timestamp,
    /// Whether it was allowed.
    allowed: bool,
    /// Why it was denied.
    #[schema(value_type = Option<String>, example = "rate_limited")]
    reason: Option<&'static str>,
    /// Credits charged.
    credits_charged: u64,
    /// The HTTP status the metered service answered, when known (the Tower layer records it).
    status: Option<u16>,
    /// The feature type, if given.
    feature: Option<String>,
    /// The region, if given or the tenant's.
    region: Option<String>,
}

impl From<LedgerRecord> for UsageItem {
    fn from(r: LedgerRecord) -> Self {
        let credits_charged = if r.counted { r.decision.credits_charged } else { 0 };
        UsageItem {
            tenant_id: r.event.tenant_id.as_str().to_owned(),
            event_id: r.event.event_id.as_str().to_owned(),
            service_name: r.event.service_name,
            endpoint: r.event.endpoint,
            method: r.event.method.as_str(),
            timestamp: r.event.timestamp,
            allowed: r.decision.allowed,
            reason: r.decision.reason.map(|x| x.as_str()),
            credits_charged,
            status: r.status,
            feature: r.event.feature,
            region: r.event.region,
        }
    }
}

/// A page of recorded calls, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UsagePage {
    /// The calls.
    items: Vec<UsageItem>,
    /// Pass as `cursor` for the next page (an opaque token, good for this caller's tenant
    /// only); `null` on the last page.
    next_cursor: Option<String>,
}

/// Reads one page of the ledger for a listing by `scope`, whose next cursor only `scope`
/// can use.
pub(crate) async fn usage_page(state: &AppState, query: LedgerQuery, scope: &TenantId) -> Result<UsagePage, ApiError> {
    let limit = query.limit;
    let records = state.engine.ledger_records(&query).await?;
    let next_cursor = match records.last() {
        Some(last) if records.len() >= limit => Some(state.cursors.seal(scope, &LedgerCursor::after(last))),
        _ => None,
    };
    Ok(UsagePage { items: records.into_iter().map(UsageItem::from).collect(), next_cursor })
}

/// My recorded calls, newest first, filtered and paged.
#[utoipa::path(
    get,
    path = "/api/usage",
    tag = "tenant",
    params(UsageParams),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "one page of calls", body = UsagePage),
        (status = 401, description = "not authenticated", body = ErrorBody),
        (status = 422, description = "a bad filter, limit or cursor (named in `field`)", body = ErrorBody),
    )
)]
async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<UsageParams>,
) -> Result<Json<UsagePage>, ApiError> {
    let query = params.query(Some(caller.tenant.clone()), &state.cursors, &caller.tenant)?;
    Ok(Json(usage_page(&state, query, &caller.tenant).await?))
}

/// Grouping and range of a usage summary.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SummaryParams {
    /// `service` (default), `endpoint`, `method` or `day`.
    #[param(value_type = Option<GroupByParam>)]
    group_by: Option<String>,
    /// Event timestamps at or after this (RFC 3339).
    #[param(format = DateTime)]
    from: Option<String>,
    /// Event timestamps before this (RFC 3339), after `from`.
    #[param(format = DateTime)]
    to: Option<String>,
}

/// What a usage summary groups by.
#[derive(Debug, Clone, Copy, ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code, reason = "describes `group_by` in the OpenAPI document")]
pub(crate) enum GroupByParam {
    /// By service.
    Service,
    /// By endpoint.
    Endpoint,
    /// By method.
    Method,
    /// By UTC day.
    Day,
}

/// One group of a usage summary.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct GroupBody {
    /// The group: a service, endpoint, method, day (`YYYY-MM-DD`), tenant or reason.
    pub(crate) key: String,
    /// Every recorded call, allowed or denied.
    pub(crate) calls: u64,
    /// The denied calls.
    pub(crate) denied: u64,
    /// Credits charged.
    pub(crate) credits: u64,
}

impl From<UsageGroup> for GroupBody {
    fn from(g: UsageGroup) -> Self {
        GroupBody { key: g.key, calls: g.calls, denied: g.denied, credits: g.credits }
    }
}

/// A usage summary.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SummaryBody {
    /// The groups: by date for `day`, else most calls first (at most 1,000).
    groups: Vec<GroupBody>,
}

/// Reads a summary of `query`'s records grouped by `group_by`.
pub(crate) async fn summary(
    state: &AppState,
    query: &LedgerQuery,
    group_by: GroupBy,
    limit: usize,
) -> Result<Vec<GroupBody>, ApiError> {
    let groups = state.engine.usage_summary(query, group_by, limit).await?;
    Ok(groups.into_iter().map(GroupBody::from).collect())
}

/// My usage summed by service, endpoint, method or day.
#[utoipa::path(
    get,
    path = "/api/usage/summary",
    tag = "tenant",
    params(SummaryParams),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "the groups", body = SummaryBody),
        (status = 401, description = "not authenticated", body = ErrorBody),
        (status = 422, description = "a bad group_by, from or to (named in `field`)", body = ErrorBody),
    )
)]
async fn usage_summary(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<SummaryParams>,
) -> Result<Json<SummaryBody>, ApiError> {
    let group_by = match params.group_by.as_deref().unwrap_or("service") {
        "service" => GroupBy::Service,
        "endpoint" => GroupBy::Endpoint,
        "method" => GroupBy::Method,
        "day" => GroupBy::Day,
        _ => return Err(ApiError::invalid("group_by", "must be service, endpoint, method or day")),
    };
    let (from, to) = time_range(params.from.as_deref(), params.to.as_deref())?;
    let query = LedgerQuery { tenant: Some(caller.tenant.clone()), from, to, ..LedgerQuery::default() };
    let groups = summary(&state, &query, group_by, UsageGroup::MAX_GROUPS).await?;
    Ok(Json(SummaryBody { groups }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_filters_are_checked() {
        let ok = UsageParams { limit: Some("10".into()), method: Some("get".into()), ..Default::default() };
        let (key, scope) = (CursorKey::derive(b"a secret"), TenantId::new("acme").unwrap());
        let q = ok.query(None, &key, &scope).unwrap();
        assert_eq!((q.limit, q.method), (10, Some(Method::Get)));
        for (params, field) in [
            (UsageParams { limit: Some("0".into()), ..Default::default() }, "limit"),
            (UsageParams { limit: Some("1001".into()), ..Default::default() }, "limit"),
            (UsageParams { method: Some("FETCH".into()), ..Default::default() }, "method"),
            (UsageParams { from: Some("yesterday".into()), ..Default::default() }, "from"),
            (UsageParams { service: Some(String::new()), ..Default::default() }, "service"),
            (UsageParams { cursor: Some("v1".into()), ..Default::default() }, "cursor"),
            (
                UsageParams {
                    from: Some("2026-03-02T00:00:00Z".into()),
                    to: Some("2026-03-01T00:00:00Z".into()),
                    ..Default::default()
                },
                "to",
            ),
        ] {
            assert_eq!(params.query(None, &key, &scope).unwrap_err().field.as_deref(), Some(field));
        }
    }
}
